/* The products of GPU training (train_kernels.cuh): each projection's
 * forward and its two backward products (the input's gradient, then the
 * weight's, summed over the sequences of the batch), as cuBLAS products in
 * the model's dtype with fp32 sums (CUBLAS_COMPUTE_32F: no TF32 in fp32).
 * Weight gradients are fp32 and accumulate (β = 1) into the flat buffer.
 *
 * cuBLAS is column-major: a row-major (r, c) matrix is the column-major
 * (c, r) one. Channel-major activations of a sequence, (features, T) row-
 * major, are column-major (T, features) with leading dimension T; token-
 * major rows (T, features) are column-major (features, T). Each call below
 * names the column-major product it computes. */
#include "cuda/train_kernels.cuh"

namespace cm {
namespace {

const float ONE = 1.f, ZERO = 0.f;

cudaDataType ab_type(const Blas &b) { return b.dt == CM_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

/* C_i (M×N) = op(A_i)·op(B_i) (+ C_i when acc) for i < batch, X_i = X + i·sX
 * elements; C fp32 when c32, else in the dtype */
cublasStatus_t gemm(const Blas &b, bool ta, bool tb, int M, int N, int K, const void *A, int lda,
                    long long sA, const void *B, int ldb, long long sB, void *C, int ldc,
                    long long sC, bool c32, bool acc, int batch) {
    const cudaDataType t = ab_type(b);
    return cublasGemmStridedBatchedEx(b.h, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                      tb ? CUBLAS_OP_T : CUBLAS_OP_N, M, N, K, &ONE, A, t, lda, sA,
                                      B, t, ldb, sB, acc ? &ONE : &ZERO, C, c32 ? CUDA_R_32F : t,
                                      ldc, sC, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

size_t es(const Blas &b) { return b.dt == CM_CUDA_BF16 ? 2 : 4; }
const void *at(const Blas &b, const void *p, size_t i) { return (const char *)p + i * es(b); }

/* dW (col-major M×N, ld ldc) += Σ_s op(A_s)·op(B_s): one product per
 * sequence, accumulated in order */
cublasStatus_t gemm_sum(const Blas &b, bool ta, bool tb, int M, int N, int K, const void *A,
                        int lda, long long sA, const void *B, int ldb, long long sB, float *dW,
                        int ldc, int batch) {
    cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
    for (int i = 0; i < batch && s == CUBLAS_STATUS_SUCCESS; i++)
        s = gemm(b, ta, tb, M, N, K, at(b, A, (size_t)i * sA), lda, 0, at(b, B, (size_t)i * sB),
                 ldb, 0, dW, ldc, 0, true, true, 1);
    return s;
}

} // namespace

/* out_s (T × n_out) = in_sᵀ (in_s: n_in × T) · W (n_in × n_out) */
cublasStatus_t fwd_rows_to_cols(const Blas &b, void *out, const void *in, const void *W, int B,
                                int T, int n_in, int n_out) {
    return gemm(b, true, false, T, n_out, n_in, in, n_in, (long long)T * n_in, W, n_in, 0, out, T,
                (long long)n_out * T, false, false, B);
}

/* out_s (T × n_out) = in_s (T × n_in) · W (n_in × n_out) */
cublasStatus_t fwd_cols(const Blas &b, void *out, long out_stride, const void *in, long in_stride,
                        const void *W, int B, int T, int n_in, int n_out) {
    return gemm(b, false, false, T, n_out, n_in, in, T, in_stride, W, n_in, 0, out, T, out_stride,
                false, false, B);
}

/* h_s (n_out × T) += Wᵀ (W: n_in × n_out) · in_sᵀ (in_s: T × n_in) */
cublasStatus_t fwd_cols_to_rows_acc(const Blas &b, float *h, const void *in, const void *W, int B,
                                    int T, int n_in, int n_out) {
    return gemm(b, true, true, n_out, T, n_in, W, n_in, 0, in, T, (long long)n_in * T, h, n_out,
                (long long)T * n_out, true, true, B);
}

/* din_s (n_in × T) = W (n_in × n_out) · dout_sᵀ (dout_s: T × n_out);
 * dW (n_in × n_out) += in_s (n_in × T) · dout_s (T × n_out) */
cublasStatus_t bwd_rows_to_cols(const Blas &b, float *din, bool acc, float *dW, const void *dout,
                                const void *in, const void *W, int B, int T, int n_in, int n_out) {
    cublasStatus_t s = gemm(b, false, true, n_in, T, n_out, W, n_in, 0, dout, T,
                            (long long)n_out * T, din, n_in, (long long)T * n_in, true, acc, B);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    return gemm_sum(b, false, false, n_in, n_out, T, in, n_in, (long long)T * n_in, dout, T,
                    (long long)n_out * T, dW, n_in, B);
}

/* din_s (T × n_in) = dout_s (T × n_out) · Wᵀ (W: n_in × n_out);
 * dW (n_in × n_out) += in_sᵀ (in_s: T × n_in) · dout_s */
cublasStatus_t bwd_cols(const Blas &b, void *din, long din_stride, bool c32, float *dW,
                        const void *dout, long dout_stride, const void *in, const void *W, int B,
                        int T, int n_in, int n_out) {
    cublasStatus_t s = gemm(b, false, true, T, n_in, n_out, dout, T, dout_stride, W, n_in, 0, din,
                            T, din_stride, c32, false, B);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    return gemm_sum(b, true, false, n_in, n_out, T, in, T, (long long)n_in * T, dout, T,
                    dout_stride, dW, n_in, B);
}

/* din_s (T × n_in) = dh_sᵀ (dh_s: n_out × T) · Wᵀ (W: n_in × n_out);
 * dW (n_in × n_out) += in_sᵀ (in_s: T × n_in) · dh_sᵀ */
cublasStatus_t bwd_cols_to_rows(const Blas &b, void *din, float *dW, const void *dh, const void *in,
                                const void *W, int B, int T, int n_in, int n_out) {
    cublasStatus_t s = gemm(b, true, true, T, n_in, n_out, dh, n_out, (long long)T * n_out, W, n_in,
                            0, din, T, (long long)n_in * T, false, false, B);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    return gemm_sum(b, true, true, n_in, n_out, T, in, T, (long long)n_in * T, dh, n_out,
                    (long long)T * n_out, dW, n_in, B);
}

/* logits (V × rows) = Wᵀ (W: d × V) · x (d × rows) */
cublasStatus_t head_fwd(const Blas &b, float *logits, const void *x, const void *W, int rows,
                        int d, int V) {
    return gemm(b, true, false, V, rows, d, W, d, 0, x, d, 0, logits, V, 0, true, false, 1);
}

/* dx (d × rows) = W (d × V) · dlogits (V × rows); dW (d × V) += x · dlogitsᵀ */
cublasStatus_t head_bwd(const Blas &b, float *dx, float *dW, const void *dlogits, const void *x,
                        const void *W, int rows, int d, int V) {
    cublasStatus_t s = gemm(b, false, false, d, rows, V, W, d, 0, dlogits, V, 0, dx, d, 0, true,
                            false, 1);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    return gemm(b, false, true, d, V, rows, x, d, 0, dlogits, V, 0, dW, d, 0, true, true, 1);
}

} // namespace cm
