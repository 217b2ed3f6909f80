/* Mamba language-model inference on one NVIDIA GPU, callable from C.
 *
 * The model is a copy of a loaded CPU model's weights on the device, in one
 * of two precisions: fp32 throughout, or bf16 weights and activations with
 * the residual stream, the recurrent states and every accumulation in fp32
 * (the projections run through cuBLAS as bf16 products with fp32 sums).
 *
 * Prompts go through the network in chunks: per layer, the projections as
 * cuBLAS products laid out channel-major ((d_inner, L), time fastest) for
 * the selective-scan kernel (cuda_scan.h), which starts from and returns
 * the recurrent state, so chunks and calls continue each other. Decoding
 * runs one token of each of n sequences per step: per layer an RMSNorm
 * with the residual add, the in_proj product, one fused kernel (conv
 * window shift, x_proj, Δ, state update, output and gate; for more than 8
 * sequences, or too few to fill the device, a conv kernel, the x_proj
 * product and an update kernel) and
 * the out_proj product, captured once per batch size in a CUDA graph and
 * replayed, its kernels overlapping their predecessors' tails (pdl.cuh);
 * the products run the candidate timed fastest for that size: a cuBLASLt
 * algorithm, for one sequence cuBLAS's matrix-vector product, for a few
 * our own (gemv.h).
 *
 * States live on the device, in slots of a cm_cuda_state: every call names
 * the slots it advances. Every function returns 0 on success and -1 with a
 * one-line message in *err; every call is synchronous (results are on the
 * host when it returns). Needs an S6 model with d_state ≤ 64.
 */
#ifndef CM_MODEL_CUDA_H
#define CM_MODEL_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "cmamba.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cm_cuda_model cm_cuda_model;
typedef struct cm_cuda_state cm_cuda_state;

/* 0 when a CUDA device is usable; otherwise -1 and why ("no CUDA device"). */
int cm_cuda_available(cmamba_error *err);

/* Uploads the weights of a loaded CPU model (which may be freed after).
 * bf16: weights and activations bf16, otherwise fp32. */
int cm_cuda_model_new(const cmamba_model *cpu, int bf16, cm_cuda_model **out, cmamba_error *err);
void cm_cuda_model_free(cm_cuda_model *m);
const cmamba_config *cm_cuda_model_config(const cm_cuda_model *m);
/* Bytes of weights one decoding step reads: every layer's, the final norm
 * and the LM head (the embedding only when untied, and then one row a
 * sequence, not counted). */
double cm_cuda_model_step_bytes(const cm_cuda_model *m);
/* "NVIDIA H100 80GB HBM3, bf16", for reports. */
const char *cm_cuda_model_describe(const cm_cuda_model *m);

/* Recurrent states (per layer the conv window and h, fp32) for `slots`
 * sequences, all zero. */
int cm_cuda_state_new(cm_cuda_model *m, int slots, cm_cuda_state **out, cmamba_error *err);
void cm_cuda_state_free(cm_cuda_state *s);
/* slot −1: every slot */
int cm_cuda_state_reset(cm_cuda_state *s, int slot, cmamba_error *err);
int cm_cuda_state_copy(cm_cuda_state *s, int dst_slot, int src_slot, cmamba_error *err);
uint64_t cm_cuda_state_tokens(const cm_cuda_state *s, int slot);
/* Between a slot and a CPU state of the same model shape (token count too). */
int cm_cuda_state_get(const cm_cuda_state *s, int slot, cmamba_state *dst, cmamba_error *err);
int cm_cuda_state_set(cm_cuda_state *s, int slot, const cmamba_state *src, cmamba_error *err);

/* cmamba_forward on the GPU: the n ids through the selective scan,
 * continuing from and updating `slot`. logits (host): [n, vocab_size] if
 * all_logits, else [vocab_size] of the last position; may be NULL. */
int cm_cuda_forward(cm_cuda_model *m, cm_cuda_state *s, int slot, const int32_t *ids, size_t n,
                    float *logits, int all_logits, cmamba_error *err);

/* cmamba_step_batch on the GPU: slots 0 … n−1 advance by ids[0 … n−1].
 * logits (host, (n, vocab_size)) and argmax (host, n: the first maximum of
 * each row, computed on the device, so greedy decoding need not fetch the
 * logits) may each be NULL. The first call for a given n (and choice of
 * outputs) captures a CUDA graph that later calls replay. */
int cm_cuda_step_batch(cm_cuda_model *m, cm_cuda_state *s, const int32_t *ids, int n,
                       float *logits, int32_t *argmax, cmamba_error *err);

/* Device-to-device copy bandwidth, bytes read plus bytes written per
 * second: the median of several cudaMemcpy of a `bytes` buffer. */
int cm_cuda_copy_bandwidth(size_t bytes, double *bytes_per_s, cmamba_error *err);

#ifdef __cplusplus
}
#endif

#endif
