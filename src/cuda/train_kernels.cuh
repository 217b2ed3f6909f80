/* The kernels and products of GPU training (train_cuda.h), each forward
 * beside its backward in one file per concept:
 *   train_gemm.cu    cuBLAS products of the projections, in the layouts below
 *   conv_train.cu    causal depthwise conv1d + SiLU over whole sequences
 *   norm_train.cu    RMSNorm backward and the column sums of parameter gradients
 *   xent.cu          cross-entropy over chunks of LM-head logits
 *   adamw.cu         gradient norm and the AdamW update
 *   train_kernels.cu embedding, biases, A = −exp(A_log), packing, bf16 copies
 * Layouts: "token-major" (n = B·T rows, features); "channel-major" (B,
 * features, T), time fastest. E is the activation type (fp32 or bf16).
 * Every launcher is asynchronous on `stream` and returns the launch error;
 * every backward ACCUMULATES into parameter gradients. */
#ifndef CM_TRAIN_KERNELS_CUH
#define CM_TRAIN_KERNELS_CUH

#include <stdint.h>

#include "cuda/gemm.cuh"
#include "cuda/model_kernels.cuh"

namespace cm {

/* ---- products (train_gemm.cu); W row-major (n_out, n_in) in E ---------- */

/* out (B, n_out, T) channel-major E = W · in, in token-major (B·T, n_in) */
cublasStatus_t fwd_rows_to_cols(const Blas &b, void *out, const void *in, const void *W, int B,
                                int T, int n_in, int n_out);
/* out (B, n_out, T) = W · in (B, n_in, T), both channel-major; out row
 * stride per sequence out_stride (≥ n_out · T) */
cublasStatus_t fwd_cols(const Blas &b, void *out, long out_stride, const void *in, long in_stride,
                        const void *W, int B, int T, int n_in, int n_out);
/* h (B·T, n_out) fp32 token-major += (W · in (B, n_in, T))ᵀ */
cublasStatus_t fwd_cols_to_rows_acc(const Blas &b, float *h, const void *in, const void *W, int B,
                                    int T, int n_in, int n_out);
/* Backward of fwd_rows_to_cols: din (B·T, n_in) fp32 token-major (+= when
 * acc) = (Wᵀ · dout)ᵀ; dW (n_out, n_in) fp32 += Σ dout · in. */
cublasStatus_t bwd_rows_to_cols(const Blas &b, float *din, bool acc, float *dW, const void *dout,
                                const void *in, const void *W, int B, int T, int n_in, int n_out);
/* Backward of fwd_cols: din (B, n_in, T) (fp32 when c32, else E; rows at
 * din_stride per sequence) = Wᵀ · dout (rows at dout_stride); dW += Σ
 * dout · inᵀ, in (B, n_in, T) contiguous. */
cublasStatus_t bwd_cols(const Blas &b, void *din, long din_stride, bool c32, float *dW,
                        const void *dout, long dout_stride, const void *in, const void *W, int B,
                        int T, int n_in, int n_out);
/* Backward of fwd_cols_to_rows_acc: din (B, n_in, T) E = (dh · W)ᵀ per
 * sequence, dh (B·T, n_out) token-major E; dW += Σ dhᵀ · inᵀ. */
cublasStatus_t bwd_cols_to_rows(const Blas &b, void *din, float *dW, const void *dh, const void *in,
                                const void *W, int B, int T, int n_in, int n_out);
/* The LM head on rows token-major: logits (rows, V) fp32 = x (rows, d) · Wᵀ;
 * backward dx (rows, d) fp32 = dlogits (rows, V, E) · W and dW += dlogitsᵀ · x. */
cublasStatus_t head_fwd(const Blas &b, float *logits, const void *x, const void *W, int rows,
                        int d, int V);
cublasStatus_t head_bwd(const Blas &b, float *dx, float *dW, const void *dlogits, const void *x,
                        const void *W, int rows, int d, int V);

/* ---- conv1d + SiLU (conv_train.cu), channel-major (B, C, T) ------------
 * forward: out = silu(b + Σ_k w[c,k]·x[t−K+1+k]), zeros before each
 * sequence. backward: with g = (dout + dout32) (either may be NULL: dout E,
 * dout32 fp32) through silu at the recomputed pre-activation, dx (E,
 * written), dw (C, K) and db (C, or NULL) accumulated; part: scratch of
 * conv_bwd_part_floats floats. K ≤ CONV_MAX_K. */
constexpr int CONV_MAX_K = 16;
size_t conv_bwd_part_floats(int B, int C, int T, int K);
cudaError_t conv_silu_fwd(const void *x, const float *w, const float *bias, void *out,
                          cm_cuda_dtype dt, int B, int C, int T, int K, cudaStream_t stream);
cudaError_t conv_silu_bwd(const void *dout, const float *dout32, const void *x, const float *w,
                          const float *bias, void *dx, float *dw, float *db, float *part,
                          cm_cuda_dtype dt, int B, int C, int T, int K, cudaStream_t stream);

/* ---- RMSNorm backward and column sums (norm_train.cu) -------------------
 * forward: add_norm (model_kernels.cuh). backward over rows of x (n, d)
 * fp32: dx (fp32) += r·w·g − r³/d·(Σ g·w·x)·x with r = 1/rms(x), and a copy
 * of the new dx in E into dx_e (when not NULL); dw (d) += Σ_rows g·x·r.
 * part: scratch of colsum_floats(d) floats. */
size_t colsum_floats(int d);
cudaError_t rmsnorm_bwd(float *dx, void *dx_e, float *dw, const float *g, const float *x,
                        const float *w, float eps, cm_cuda_dtype dt, int n, int d, float *rs,
                        float *part, cudaStream_t stream);
/* out (d) += Σ_rows m (n, d) fp32: the bias gradient of a token-major product */
cudaError_t colsum_acc(float *out, const float *m, int n, int d, float *part, cudaStream_t stream);

/* ---- cross-entropy (xent.cu) -------------------------------------------
 * Per row of logits (rows, V) fp32 with target tg: loss = logsumexp − l[tg],
 * hit = (first argmax == tg); with scale > 0 also dlogits (E; may alias
 * logits in fp32) = scale·(softmax − onehot). */
cudaError_t xent(float *logits, void *dlogits, const int32_t *tg, float scale, float *loss,
                 int32_t *hit, cm_cuda_dtype dt, int rows, int V, cudaStream_t stream);
/* dst (rows, d) E = src (·, d) E rows idx[i]; and back: out (·, d) fp32
 * rows idx[i] += dsrc (rows, d) fp32 (idx distinct). */
cudaError_t gather_rows(void *dst, const void *src, const int32_t *idx, cm_cuda_dtype dt,
                        int rows, int d, cudaStream_t stream);
cudaError_t scatter_add_rows(float *out, const float *dsrc, const int32_t *idx, int rows, int d,
                             cudaStream_t stream);

/* ---- AdamW (adamw.cu) ----------------------------------------------------
 * norm2 (device double) = Σ g²; then, with scale = clip / √norm2 when that
 * is below 1, m, v, params updated as cm_adamw_step; w16 (bf16 copy of
 * params) refreshed when not NULL. part: ADAMW_PARTS doubles. */
constexpr int ADAMW_PARTS = 1024;
cudaError_t grad_norm2(const float *g, size_t n, double *part, double *norm2, cudaStream_t stream);
cudaError_t adamw_update(float *params, __nv_bfloat16 *w16, const float *g, float *m, float *v,
                         const uint8_t *decay, size_t n, const double *norm2, float clip, float lr,
                         float beta1, float beta2, float eps, float wd, float bc1, float bc2,
                         cudaStream_t stream);

/* ---- small kernels (train_kernels.cu) ------------------------------------ */

/* dtable (V, d) += rows of dh (n, d) fp32: sequence positions grouped by
 * id (pos[start[u] .. start[u+1]) hold id ids[u]), summed in order. */
cudaError_t embed_bwd(float *dtable, const float *dh, const int32_t *uid, const int32_t *start,
                      const int32_t *pos, int n_unique, int d, cudaStream_t stream);
/* buf (B, C, T) E += bias[c]; and the backward db[c] += Σ_{b,t} g (B, C, T) E */
cudaError_t bias_cols_fwd(void *buf, const float *bias, cm_cuda_dtype dt, int B, int C, int T,
                          cudaStream_t stream);
cudaError_t bias_cols_bwd(float *db, const void *g, cm_cuda_dtype dt, int B, int C, int T,
                          cudaStream_t stream);
/* A = −exp(A_log) (n); and dA_log += dA·A */
cudaError_t a_from_log(float *A, const float *A_log, int n, cudaStream_t stream);
cudaError_t a_log_bwd(float *dA_log, const float *dA, const float *A, int n, cudaStream_t stream);
/* dst (B, rows_dst, T) E rows [r0, r0 + N) = src (B, N, T) fp32 */
cudaError_t pack_rows(void *dst, int rows_dst, int r0, const float *src, cm_cuda_dtype dt, int B,
                      int N, int T, cudaStream_t stream);
/* dst (n) bf16 = src fp32 */
cudaError_t to_bf16(__nv_bfloat16 *dst, const float *src, size_t n, cudaStream_t stream);

} // namespace cm

#endif
