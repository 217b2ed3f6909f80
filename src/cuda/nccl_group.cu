/* Gradient all-reduce over NCCL or host sums (nccl_group.h). */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "cuda/check.cuh"
#include "cuda/nccl_group.h"
extern "C" {
#include "common.h"
}

#if __has_include(<nccl.h>)
#include <nccl.h>
#define HAVE_NCCL_HEADER 1
#else
#define HAVE_NCCL_HEADER 0
#endif

struct cm_cuda_group {
    cm_dist *dist;
    int device, sharing; /* sharing: ranks of this host outnumber its GPUs */
    float *host;         /* host sums: pinned staging buffer */
    cudaStream_t comm_stream; /* NCCL: the overlapped sums' stream */
    cudaEvent_t ready, done;
    size_t host_n;
    char describe[96];
#if HAVE_NCCL_HEADER
    void *lib;
    ncclComm_t comm;
    ncclResult_t (*GetUniqueId)(ncclUniqueId *);
    ncclResult_t (*CommInitRank)(ncclComm_t *, int, ncclUniqueId, int);
    ncclResult_t (*AllReduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t,
                              ncclComm_t, cudaStream_t);
    ncclResult_t (*CommDestroy)(ncclComm_t);
    const char *(*GetErrorString)(ncclResult_t);
    ncclResult_t (*GetVersion)(int *);
#endif
};


#if HAVE_NCCL_HEADER
/* Opens NCCL; 0 with g->lib NULL when it is not installed. */
static int nccl_open(cm_cuda_group *g, cmamba_error *err) {
    const char *path = getenv("CMAMBA_NCCL");
    g->lib = dlopen(path && *path ? path : "libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!g->lib) {
        if (path && *path) return cm_fail(err, "CMAMBA_NCCL=%s: %s", path, dlerror());
        return 0;
    }
#define SYM(name)                                                                   \
    if (!(*(void **)&g->name = dlsym(g->lib, "nccl" #name)))                         \
        return cm_fail(err, "NCCL library lacks nccl%s: %s", #name, dlerror());
    SYM(GetUniqueId) SYM(CommInitRank) SYM(AllReduce) SYM(CommDestroy) SYM(GetErrorString)
    SYM(GetVersion)
#undef SYM
    return 0;
}

static int nccl_fail(const cm_cuda_group *g, ncclResult_t r, const char *what,
                     cmamba_error *err) {
    if (r == ncclSuccess) return 0;
    return cm_fail(err, "NCCL: %s: %s (rank %d)", what, g->GetErrorString(r),
                   cm_dist_rank(g->dist));
}

static int nccl_connect(cm_cuda_group *g, cmamba_error *err) {
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (cm_dist_rank(g->dist) == 0 && nccl_fail(g, g->GetUniqueId(&id), "ncclGetUniqueId", err))
        return -1;
    if (cm_dist_broadcast(g->dist, &id, sizeof id, err)) return -1;
    if (nccl_fail(g, g->CommInitRank(&g->comm, cm_dist_world(g->dist), id, cm_dist_rank(g->dist)),
                  "ncclCommInitRank", err))
        return -1;
    int v = 0;
    g->GetVersion(&v);
    snprintf(g->describe, sizeof g->describe, "NCCL %d.%d.%d, %d rank%s", v / 10000,
             v / 100 % 100, v % 100, cm_dist_world(g->dist), cm_dist_world(g->dist) > 1 ? "s" : "");
    return 0;
}
#endif

int cm_cuda_group_new(cm_dist *d, cm_cuda_group **out, cmamba_error *err) {
    *out = NULL;
    cm_cuda_group *g = (cm_cuda_group *)cm_calloc(1, sizeof *g, err);
    if (!g) return -1;
    g->dist = d;
    int gpus = 0;
    if (cm::cuda_fail(cudaGetDeviceCount(&gpus), "cudaGetDeviceCount", err)) goto fail;
    if (gpus < 1) {
        cm_fail(err, "no CUDA device");
        goto fail;
    }
    g->device = cm_dist_local_rank(d) % gpus;
    g->sharing = cm_dist_local_world(d) > gpus;
    if (cm::cuda_fail(cudaSetDevice(g->device), "cudaSetDevice", err)) goto fail;
#if HAVE_NCCL_HEADER
    if (!g->sharing) {
        if (nccl_open(g, err)) goto fail;
        if (g->lib) {
            if (nccl_connect(g, err) ||
                cm::cuda_fail(cudaStreamCreateWithFlags(&g->comm_stream, cudaStreamNonBlocking),
                          "cudaStreamCreate", err) ||
                cm::cuda_fail(cudaEventCreateWithFlags(&g->ready, cudaEventDisableTiming),
                          "cudaEventCreate", err) ||
                cm::cuda_fail(cudaEventCreateWithFlags(&g->done, cudaEventDisableTiming),
                          "cudaEventCreate", err))
                goto fail;
            *out = g;
            return 0;
        }
    }
#endif
    snprintf(g->describe, sizeof g->describe, "host sums, %d ranks%s", cm_dist_world(d),
             g->sharing ? " sharing GPUs" : " (NCCL not found)");
    *out = g;
    return 0;
fail:
    cm_cuda_group_free(g);
    return -1;
}

void cm_cuda_group_free(cm_cuda_group *g) {
    if (!g) return;
#if HAVE_NCCL_HEADER
    if (g->comm) g->CommDestroy(g->comm);
    if (g->comm_stream) cudaStreamDestroy(g->comm_stream);
    if (g->ready) cudaEventDestroy(g->ready);
    if (g->done) cudaEventDestroy(g->done);
    if (g->lib) dlclose(g->lib);
#endif
    cudaFreeHost(g->host);
    free(g);
}

const char *cm_cuda_group_describe(const cm_cuda_group *g) { return g->describe; }

int cm_cuda_group_allreduce(cm_cuda_group *g, float *data, size_t n, void *stream_,
                            cmamba_error *err) {
    cudaStream_t stream = (cudaStream_t)stream_;
#if HAVE_NCCL_HEADER
    if (g->comm)
        return nccl_fail(g, g->AllReduce(data, data, n, ncclFloat32, ncclSum, g->comm, stream),
                         "ncclAllReduce", err);
#endif
    if (cm_dist_world(g->dist) == 1) return 0;
    if (n > g->host_n) {
        cudaFreeHost(g->host);
        g->host = NULL, g->host_n = 0;
        if (cm::cuda_fail(cudaMallocHost((void **)&g->host, n * sizeof(float)), "cudaMallocHost", err))
            return -1;
        g->host_n = n;
    }
    if (cm::cuda_fail(cudaMemcpyAsync(g->host, data, n * sizeof(float), cudaMemcpyDeviceToHost, stream),
                  "copy to host", err) ||
        cm::cuda_fail(cudaStreamSynchronize(stream), "cudaStreamSynchronize", err) ||
        cm_dist_allreduce_sum(g->dist, g->host, n, CM_DIST_F32, err) ||
        cm::cuda_fail(cudaMemcpyAsync(data, g->host, n * sizeof(float), cudaMemcpyHostToDevice, stream),
                  "copy to device", err))
        return -1;
    return 0;
}

int cm_cuda_group_allreduce_after(cm_cuda_group *g, float *data, size_t n, void *stream_,
                                  cmamba_error *err) {
    cudaStream_t stream = (cudaStream_t)stream_;
#if HAVE_NCCL_HEADER
    if (g->comm) {
        /* an event may be recorded again once waited on: the wait keeps
         * the work it stood for */
        if (cm::cuda_fail(cudaEventRecord(g->ready, stream), "cudaEventRecord", err) ||
            cm::cuda_fail(cudaStreamWaitEvent(g->comm_stream, g->ready, 0), "cudaStreamWaitEvent", err))
            return -1;
        return cm_cuda_group_allreduce(g, data, n, g->comm_stream, err);
    }
#endif
    return cm_cuda_group_allreduce(g, data, n, stream, err);
}

int cm_cuda_group_join(cm_cuda_group *g, void *stream_, cmamba_error *err) {
    cudaStream_t stream = (cudaStream_t)stream_;
    if (!g->comm_stream) return 0;
    if (cm::cuda_fail(cudaEventRecord(g->done, g->comm_stream), "cudaEventRecord", err) ||
        cm::cuda_fail(cudaStreamWaitEvent(stream, g->done, 0), "cudaStreamWaitEvent", err))
        return -1;
    return 0;
}
