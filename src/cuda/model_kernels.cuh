/* The kernels of GPU inference (model_cuda.h), one launcher per concept,
 * each taking the element type of weights and activations at run time:
 *   norm.cu    the residual add fused with RMSNorm
 *   tokens.cu  embedding rows in, the argmax of logits rows out
 *   conv.cu    the causal depthwise conv1d + SiLU over a chunk (channel-major)
 *   step.cu    one decoding step of the mixer, fused, for a batch of sequences
 * Every launcher is asynchronous on `stream` and returns the launch error. */
#ifndef CM_MODEL_KERNELS_CUH
#define CM_MODEL_KERNELS_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda/cuda_scan.h"

namespace cm {

/* Calls f(T{}) with T the C++ type of dt: the one place where a run-time
 * dtype becomes a template argument. */
template <typename F> cudaError_t with_type(cm_cuda_dtype dt, F &&f) {
    if (dt == CM_CUDA_BF16) return f(__nv_bfloat16{});
    return f(float{});
}

/* h (rows, d) fp32 += bias (d, optional: the previous out_proj's); then
 * out (rows, d) = h / sqrt(mean(h²) + eps) · w, in dt. */
cudaError_t add_norm(float *h, const float *bias, const float *w, float eps, void *out,
                     cm_cuda_dtype dt, int rows, int d, cudaStream_t stream);

/* h (rows, d) fp32 = table[ids[i]] (table (vocab, d) in dt). */
cudaError_t embed(const int32_t *ids, const void *table, cm_cuda_dtype dt, float *h, int rows,
                  int d, cudaStream_t stream);
/* out[i] = the first index of the maximum of logits row i (rows, V). */
cudaError_t argmax_rows(const float *logits, int rows, int V, int32_t *out, cudaStream_t stream);

/* buf (rows, L) in dt += bias[row] (the in_proj bias on a channel-major chunk). */
cudaError_t add_row_bias(void *buf, const float *bias, cm_cuda_dtype dt, int rows, int L,
                         cudaStream_t stream);
/* One chunk of the conv (SPEC.md steps 2-3), channel-major: x (d_inner, L)
 * rows of stride L; out (d_inner, L) = silu(conv_b + Σ_k w[c,k]·x_{t−K+1+k}),
 * inputs before the chunk from state (d_inner, K−1, oldest first), which
 * then holds the last K−1 inputs. */
cudaError_t conv_chunk(const void *x, float *state, const float *w, const float *b, void *out,
                       cm_cuda_dtype dt, int d_inner, int L, int K, cudaStream_t stream);

/* One step of a layer's mixer after in_proj, for sequences 0 … batch−1 (SPEC.md
 * steps 2-9 as a recurrence): conv window shift, silu, [δ | B | C] = x·W_xᵀ,
 * Δ = softplus(δ·W_dtᵀ + b_dt), h = exp(Δ·A)·h + Δ·B·x, y = (C·h + D·x)·silu(z).
 * Small batches: mixer_step, one fused launch. Others (step_is_split):
 * mixer_step_conv writes xc, the caller's product xc·W_xᵀ writes dbc, and
 * mixer_step_update does the rest. */
struct StepArgs {
    const void *xz;        /* (batch, 2·d_inner) in dt: x | z       */
    const float *in_b;     /* (2·d_inner) in_proj bias or NULL      */
    float *conv_state;     /* (batch, d_inner, K−1)                 */
    const float *conv_w;   /* (d_inner, K)                          */
    const float *conv_b;   /* (d_inner) or NULL                     */
    const void *x_proj_w;  /* (R + 2N, d_inner) in dt               */
    const void *dt_proj_w; /* (d_inner, R) in dt                    */
    const float *dt_b, *A, *D; /* (d_inner), (d_inner, N), (d_inner) */
    float *ssm;            /* (batch, d_inner, N)                   */
    void *y;               /* (batch, d_inner) in dt, written       */
    void *xc;              /* (batch, d_inner) in dt: split path    */
    float *dbc;            /* (batch, R + 2N): split path           */
    int d_inner, K, R, N;
};
/* Blocks per sequence for this shape on the current device: a thread-block
 * cluster of that many blocks, or 1 without clusters (before sm_90); −1 if
 * the step does not fit the device. Called once per model, before any
 * capture (it sets kernel attributes). */
int step_setup(int d_inner, int dt_rank, int d_state);
cudaError_t mixer_step(const StepArgs &a, int cluster, int batch, cm_cuda_dtype dt,
                       cudaStream_t stream);
bool step_is_split(int batch, int cluster);
cudaError_t mixer_step_conv(const StepArgs &a, int batch, cm_cuda_dtype dt, cudaStream_t stream);
cudaError_t mixer_step_update(const StepArgs &a, int batch, cm_cuda_dtype dt, cudaStream_t stream);

} // namespace cm

#endif
