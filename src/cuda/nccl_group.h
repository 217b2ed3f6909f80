/* The gradient all-reduce of data-parallel GPU training, over a process
 * group of src/dist (one process per GPU, started by `cmamba launch` or
 * torchrun).
 *
 * Transport: NCCL when every rank has a GPU of its own. NCCL is opened at
 * run time (libnccl.so.2, or $CMAMBA_NCCL), so the plug-in loads on machines
 * without it; the unique id of the communicator travels through the group's
 * rendezvous. When ranks share a GPU (NCCL refuses that) or NCCL is absent,
 * the sums go through host memory and the group's sockets instead: correct,
 * slower, meant for tests and single-GPU machines. A group of one may still
 * use NCCL (one rank), which is how the NCCL path is exercised on one GPU.
 *
 * Each rank runs on GPU LOCAL_RANK mod (visible GPUs); cm_cuda_group_new
 * makes it the current device, so call it before allocating. Streams are
 * cudaStream_t, passed as void * so that C code without the CUDA headers
 * (the trainer) can hold them. */
#ifndef CM_CUDA_NCCL_GROUP_H
#define CM_CUDA_NCCL_GROUP_H

#include <stddef.h>

#include "cmamba.h"
#include "dist/dist.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cm_cuda_group cm_cuda_group;

int cm_cuda_group_new(cm_dist *d, cm_cuda_group **out, cmamba_error *err);
void cm_cuda_group_free(cm_cuda_group *g);

/* "NCCL 2.28.9, 2 ranks" or "host sums, 2 ranks sharing 1 GPU" */
const char *cm_cuda_group_describe(const cm_cuda_group *g);

/* data (n floats on the device) := its sum over the group. NCCL: enqueued on
 * stream (returns at once); host sums: synchronous. */
int cm_cuda_group_allreduce(cm_cuda_group *g, float *data, size_t n, void *stream,
                            cmamba_error *err);

/* The overlapped form, for the hook of a backward pass (train_cuda.h):
 * the sum of data starts on the group's own stream once the work queued so
 * far on stream is done, so that it runs while stream goes on with the
 * layers below; cm_cuda_group_join makes stream wait for every sum started
 * so. Host sums: synchronous, as cm_cuda_group_allreduce. */
int cm_cuda_group_allreduce_after(cm_cuda_group *g, float *data, size_t n, void *stream,
                                  cmamba_error *err);
int cm_cuda_group_join(cm_cuda_group *g, void *stream, cmamba_error *err);

#ifdef __cplusplus
}
#endif

#endif
