/* The CUDA backend as a plug-in: libcmamba-cuda.so, next to the cmamba
 * binary, exports one table of the functions of cuda/model_cuda.h and
 * cuda/train_cuda.h. The CLI
 * opens it (dlopen) only for --device cuda, so that a CUDA build runs on a
 * machine without the CUDA libraries, and a CPU run neither loads cuBLAS
 * nor pays its ~150 MiB of resident memory. */
#ifndef CM_CUDA_BACKEND_H
#define CM_CUDA_BACKEND_H

#include "cuda/model_cuda.h"
#include "cuda/nccl_group.h"
#include "cuda/train_cuda.h"

#define CM_CUDA_BACKEND_FILE "libcmamba-cuda.so"
#define CM_CUDA_BACKEND_SYMBOL "cm_cuda_backend_v1"

typedef struct {
    int (*available)(cmamba_error *err);
    int (*model_new)(const cmamba_model *cpu, int bf16, cm_cuda_model **out, cmamba_error *err);
    void (*model_free)(cm_cuda_model *m);
    double (*model_step_bytes)(const cm_cuda_model *m);
    const char *(*model_describe)(const cm_cuda_model *m);
    int (*state_new)(cm_cuda_model *m, int slots, cm_cuda_state **out, cmamba_error *err);
    void (*state_free)(cm_cuda_state *s);
    int (*state_reset)(cm_cuda_state *s, int slot, cmamba_error *err);
    int (*state_copy)(cm_cuda_state *s, int dst_slot, int src_slot, cmamba_error *err);
    int (*state_get)(const cm_cuda_state *s, int slot, cmamba_state *dst, cmamba_error *err);
    int (*state_set)(cm_cuda_state *s, int slot, const cmamba_state *src, cmamba_error *err);
    int (*forward)(cm_cuda_model *m, cm_cuda_state *s, int slot, const int32_t *ids, size_t n,
                   float *logits, int all_logits, cmamba_error *err);
    int (*step_batch)(cm_cuda_model *m, cm_cuda_state *s, const int32_t *ids, int n,
                      float *logits, int32_t *argmax, cmamba_error *err);
    int (*copy_bandwidth)(size_t bytes, double *bytes_per_s, cmamba_error *err);
    /* training (cuda/train_cuda.h) */
    int (*train_new)(const cmamba_config *cfg, const float *params, int bf16, cm_cuda_train **out,
                     cmamba_error *err);
    void (*train_free)(cm_cuda_train *m);
    const char *(*train_describe)(const cm_cuda_train *m);
    int (*train_copy)(cm_cuda_train *m, cm_cuda_buffer which, int to_device, float *host,
                      cmamba_error *err);
    int (*train_zero_grad)(cm_cuda_train *m, cmamba_error *err);
    void (*train_set_hook)(cm_cuda_train *m, cm_cuda_grads_ready hook, void *ctx);
    int (*train_run)(cm_cuda_train *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                     float grad_weight, cm_train_stats *st, cmamba_error *err);
    int (*train_adamw)(cm_cuda_train *m, const cm_adamw_params *p, long step, float *grad_norm,
                       cmamba_error *err);
    /* data-parallel sums of the gradients (cuda/nccl_group.h) */
    int (*group_new)(cm_dist *d, cm_cuda_group **out, cmamba_error *err);
    void (*group_free)(cm_cuda_group *g);
    const char *(*group_describe)(const cm_cuda_group *g);
    int (*group_allreduce_after)(cm_cuda_group *g, float *data, size_t n, void *stream,
                                 cmamba_error *err);
    int (*group_join)(cm_cuda_group *g, void *stream, cmamba_error *err);
} cm_cuda_backend;

#endif
