/* Training a Mamba LM on one NVIDIA GPU, callable from C: the GPU twin of
 * cm_train_model (train/train_model.h) and of AdamW (train/optimizer.h).
 *
 * Parameters and gradients are each one flat fp32 buffer on the device, in
 * exactly the CPU layout (cm_params_describe order, tensors back to back),
 * so that checkpoints, the optimizer and a gradient all-reduce all walk one
 * buffer; the AdamW moments live beside them in the same layout. Two
 * precisions: fp32 throughout, or mixed (bf16 = 1): a bf16 copy of the
 * parameters (refreshed by every update) feeds the cuBLAS products and the
 * scan as bf16 operands with fp32 sums, activations between the products
 * are bf16, while the residual stream, the SSM states, the norms, every
 * gradient of a parameter and the master weights stay fp32.
 *
 * The forward keeps each layer's activations channel-major per sequence,
 * (B, features, T), time fastest, as the scan kernel (cuda_scan.h) reads
 * them, and the residual stream token-major (B·T, d_model); the LM head and
 * cross-entropy run over the scored rows in chunks, so no (tokens, vocab)
 * tensor exists. Needs an S6 model (S4D trains on the CPU only), d_state ≤
 * 64 and d_conv ≤ 16. Every function returns 0 on success or -1 with one
 * line in *err, and is synchronous: results are on the host on return. */
#ifndef CM_TRAIN_CUDA_H
#define CM_TRAIN_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "cmamba.h"
#include "train/optimizer.h"
#include "train/train_model.h"

typedef struct cm_cuda_train cm_cuda_train;

/* The flat device buffers a host buffer of n_params floats can be copied
 * to or from: checkpoints save PARAMS, ADAM_M and ADAM_V. */
typedef enum {
    CM_CUDA_PARAMS, CM_CUDA_GRADS, CM_CUDA_ADAM_M, CM_CUDA_ADAM_V
} cm_cuda_buffer;

/* Data-parallel hook. During a backward with a hook set, grads_ready is
 * called (on the host, in the order the backward finishes them) once for
 * each contiguous range [offset, offset + count) of the flat gradient
 * buffer whose gradients of this micro-batch are all enqueued: the head
 * (norm_f, and lm_head when untied), then each layer from the last to the
 * first (its tensors are contiguous), then the embedding. The work is
 * queued on `stream` (a cudaStream_t) and not yet done: a hook enqueues on
 * that stream, or waits on an event recorded there, e.g. an NCCL
 * all-reduce of grads + offset, which then overlaps the backward of the
 * layers below. grads is the device address of the flat gradient buffer.
 * With gradient accumulation only the last micro-batch's ranges are final:
 * set the hook before it and clear it (NULL) after. The ranges cover the
 * buffer exactly once per backward. */
typedef void (*cm_cuda_grads_ready)(void *ctx, float *grads, size_t offset, size_t count,
                                    void *stream);

/* A model of cfg's shape with the host parameters params (n_params floats
 * in the CPU layout), gradients and moments zero. */
int cm_cuda_train_new(const cmamba_config *cfg, const float *params, int bf16,
                      cm_cuda_train **out, cmamba_error *err);
void cm_cuda_train_free(cm_cuda_train *m);
/* "NVIDIA H100 80GB HBM3, mixed bf16" */
const char *cm_cuda_train_describe(const cm_cuda_train *m);
size_t cm_cuda_train_n_params(const cm_cuda_train *m);

/* host (n_params floats) to the device buffer (to_device) or back.
 * Writing PARAMS refreshes the bf16 copy. */
int cm_cuda_train_copy(cm_cuda_train *m, cm_cuda_buffer which, int to_device, float *host,
                       cmamba_error *err);
int cm_cuda_train_zero_grad(cm_cuda_train *m, cmamba_error *err);
void cm_cuda_train_set_hook(cm_cuda_train *m, cm_cuda_grads_ready hook, void *ctx);

/* cm_train_run on the GPU: inputs, targets (B, T) on the host, a target < 0
 * not scored; grad_weight > 0 ADDS the gradient of grad_weight · (mean
 * loss) to the device gradients; 0 only evaluates. */
int cm_cuda_train_run(cm_cuda_train *m, const int32_t *inputs, const int32_t *targets, int B,
                      int T, float grad_weight, cm_train_stats *st, cmamba_error *err);

/* cm_adamw_step on the device: clips the gradients to p->clip by their
 * global norm, then one AdamW update with the learning rate of update
 * number `step` (0-based: the host's opt.step before it increments) and
 * the recipe's weight-decay exclusions. *grad_norm: the norm before
 * clipping. */
int cm_cuda_train_adamw(cm_cuda_train *m, const cm_adamw_params *p, long step, float *grad_norm,
                        cmamba_error *err);

/* Profiling (benchmarks): with on, every later run records an event at
 * each phase boundary on its stream and adds the times up per phase, from
 * zero at this call; cm_cuda_train_phase gives phase i < CM_CUDA_PHASES:
 * its name, and *ms, the total so far. */
#define CM_CUDA_PHASES 11
void cm_cuda_train_profile(cm_cuda_train *m, int on);
const char *cm_cuda_train_phase(const cm_cuda_train *m, int i, double *ms);

#ifdef __cplusplus
}
#endif

#endif
