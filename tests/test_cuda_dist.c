/* The GPU all-reduce of data-parallel training (cuda/nccl_group.h): a group
 * of one over NCCL (when libnccl.so.2 is installed), and two processes
 * sharing this GPU through host sums, each summing a device buffer of
 * several million floats exactly. Exit 77 without a GPU. */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cuda_runtime.h>

#include "cuda/model_cuda.h"
#include "cuda/nccl_group.h"
#include "group.h"
#include "test.h"

/* Sums rank-dependent integers (exact in fp32); 0 when every value is right. */
static int sum_on_gpu(int rank, int world, const void *want) {
    const char *want_transport = want;
    cmamba_error err;
    cm_dist *d;
    cm_cuda_group *g;
    if (cm_dist_init(&d, &err) || cm_cuda_group_new(d, &g, &err))
        return fprintf(stderr, "rank %d: %s\n", rank, err.msg), 1;
    if (rank == 0) fprintf(stderr, "  %d rank(s): %s\n", world, cm_cuda_group_describe(g));
    int bad = !strstr(cm_cuda_group_describe(g), want_transport);
    const size_t n = 3u << 20;
    float *h = malloc(n * sizeof *h), *dev;
    for (size_t i = 0; i < n; i++) h[i] = (float)(i % 4096) * (float)(rank + 1);
    cudaStream_t s;
    bad |= cudaStreamCreate(&s) != cudaSuccess || cudaMalloc((void **)&dev, n * sizeof *dev) != cudaSuccess;
    bad |= cudaMemcpy(dev, h, n * sizeof *h, cudaMemcpyHostToDevice) != cudaSuccess;
    bad |= cm_cuda_group_allreduce(g, dev, n, s, &err) != 0;
    bad |= cudaStreamSynchronize(s) != cudaSuccess;
    bad |= cudaMemcpy(h, dev, n * sizeof *h, cudaMemcpyDeviceToHost) != cudaSuccess;
    const float scale = (float)(world * (world + 1) / 2);
    for (size_t i = 0; i < n && !bad; i++) bad |= h[i] != (float)(i % 4096) * scale;
    if (bad) fprintf(stderr, "rank %d: wrong sum (%s)\n", rank, err.msg);
    cudaFree(dev);
    free(h);
    cm_cuda_group_free(g);
    cm_dist_free(d);
    return bad;
}

int main(void) {
    cmamba_error err;
    pid_t probe = fork(); /* no CUDA in this process: the children fork from it */
    if (probe == 0) _exit(cm_cuda_available(&err) ? 77 : 0);
    int st;
    waitpid(probe, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) == 77) {
        fprintf(stderr, "skipped: no usable CUDA device\n");
        return 77;
    }
    const int port = 20000 + (int)(getpid() % 20000);
    void *nccl = dlopen("libnccl.so.2", RTLD_LAZY | RTLD_LOCAL);
    fprintf(stderr, "libnccl.so.2 %s\n", nccl ? "found" : "not found: host sums only");
    CHECK_MSG(run_group(1, port, sum_on_gpu, nccl ? "NCCL" : "host sums") == 0, "a group of one");
    CHECK_MSG(run_group(2, port + 1, sum_on_gpu, "host sums, 2 ranks sharing GPUs") == 0, "two ranks on one GPU");
    return test_summary();
}
