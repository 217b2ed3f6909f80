/* cuBLAS products of GPU inference (gemm.cuh). */
#include <algorithm>

#include "cuda/gemm.cuh"
#include "cuda/gemv.h"

namespace cm {
namespace {

const float ONE = 1.f, ZERO = 0.f;

cudaDataType ab_type(const Blas &b) { return b.dt == CM_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

/* C (M×N column-major, ldc) = op(A)·op(B) (+ C when accumulate) */
cublasStatus_t gemm(const Blas &b, bool ta, bool tb, int M, int N, int K, const void *A, int lda,
                    const void *B, int ldb, void *C, int ldc, bool c32, bool accumulate) {
    const cudaDataType t = ab_type(b);
    return cublasGemmEx(b.h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, M, N,
                        K, &ONE, A, t, lda, B, t, ldb, accumulate ? &ONE : &ZERO, C,
                        c32 ? CUDA_R_32F : t, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

} // namespace

cublasStatus_t linear_rows(const Blas &b, void *out, bool c32, bool accumulate, const void *in,
                           const void *W, int rows, int n_in, int n_out) {
    return gemm(b, true, false, n_out, rows, n_in, W, n_in, in, n_in, out, n_out, c32, accumulate);
}
cublasStatus_t linear_to_cols(const Blas &b, void *out, const void *in, const void *W, int L,
                              int n_in, int n_out) {
    return gemm(b, true, false, L, n_out, n_in, in, n_in, W, n_in, out, L, false, false);
}
cublasStatus_t linear_cols(const Blas &b, void *out, const void *in, const void *W, int L,
                           int n_in, int n_out) {
    return gemm(b, false, false, L, n_out, n_in, in, L, W, n_in, out, L, false, false);
}
cublasStatus_t linear_from_cols_acc(const Blas &b, float *h, const void *in, const void *W, int L,
                                    int n_in, int n_out) {
    return gemm(b, true, true, n_out, L, n_in, W, n_in, in, L, h, n_out, true, true);
}

void tuned_linear_free(TunedLinear &t) {
    if (t.op) cublasLtMatmulDescDestroy(t.op);
    if (t.a) cublasLtMatrixLayoutDestroy(t.a);
    if (t.b) cublasLtMatrixLayoutDestroy(t.b);
    if (t.c) cublasLtMatrixLayoutDestroy(t.c);
    t = TunedLinear{};
}

cublasStatus_t tuned_linear(const TunedLinear &t, const Blas &b, void *out, const void *in,
                            const void *W) {
    const float *beta = t.accumulate ? &ONE : &ZERO;
    if (t.path == TunedLinear::GEMV)
        return cm_cuda_gemv(out, t.c32, t.accumulate, in, W, t.rows, t.n_in, t.n_out, b.dt,
                            b.stream) == cudaSuccess
                   ? CUBLAS_STATUS_SUCCESS
                   : CUBLAS_STATUS_EXECUTION_FAILED;
    if (t.path == TunedLinear::LT)
        return cublasLtMatmul(b.lt, t.op, &ONE, W, t.a, in, t.b, beta, out, t.c, out, t.c, &t.algo,
                              b.ws, b.ws_bytes, b.stream);
    /* out (n_out) = Wᵀ·in with W seen as the column-major (n_in × n_out) */
    const cublasOperation_t T = CUBLAS_OP_T;
    if (b.dt == CM_CUDA_F32)
        return cublasSgemv(b.h, T, t.n_in, t.n_out, &ONE, (const float *)W, t.n_in, (const float *)in,
                           1, beta, (float *)out, 1);
    const __nv_bfloat16 *w16 = (const __nv_bfloat16 *)W, *x16 = (const __nv_bfloat16 *)in;
    /* a batch of one; the strides are those of a batch of several */
    const long long sw = (long long)t.n_in * t.n_out;
    if (t.c32)
        return cublasTSSgemvStridedBatched(b.h, T, t.n_in, t.n_out, &ONE, w16, t.n_in, sw, x16, 1,
                                           t.n_in, beta, (float *)out, 1, t.n_out, 1);
    return cublasTSTgemvStridedBatched(b.h, T, t.n_in, t.n_out, &ONE, w16, t.n_in, sw, x16, 1, t.n_in,
                                       beta, (__nv_bfloat16 *)out, 1, t.n_out, 1);
}

cublasStatus_t tuned_linear_init(TunedLinear &t, const Blas &b, void *out, bool c32, bool accumulate,
                                 const void *in, const void *W, int rows, int n_in, int n_out) {
    enum { CANDIDATES = 32, REPS = 10 };
    tuned_linear_free(t);
    t.accumulate = accumulate, t.c32 = c32, t.rows = rows, t.n_in = n_in, t.n_out = n_out;
    /* as linear_rows: out (n_out × rows) = Wᵀ (W stored n_in × n_out) · in (n_in × rows) */
    const cudaDataType ab = ab_type(b);
    const cublasOperation_t T = CUBLAS_OP_T;
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatmulHeuristicResult_t cand[CANDIDATES];
    int found = 0;
    cublasStatus_t s = cublasLtMatmulDescCreate(&t.op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(t.op, CUBLASLT_MATMUL_DESC_TRANSA, &T, sizeof T);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&t.a, ab, n_in, n_out, n_in);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&t.b, ab, n_in, rows, n_in);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutCreate(&t.c, c32 ? CUDA_R_32F : ab, n_out, rows, n_out);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatmulPreferenceCreate(&pref);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                 &b.ws_bytes, sizeof b.ws_bytes);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulAlgoGetHeuristic(b.lt, t.op, t.a, t.b, t.c, t.c, pref, CANDIDATES, cand,
                                           &found);
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (s == CUBLAS_STATUS_SUCCESS && found == 0) s = CUBLAS_STATUS_NOT_SUPPORTED;
    if (s != CUBLAS_STATUS_SUCCESS) {
        tuned_linear_free(t);
        return s;
    }
    /* each candidate: a warm-up, then REPS back to back between two events */
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float best = INFINITY;
    /* −2: cm_cuda_gemv, −1: cuBLAS's matrix-vector product, then cuBLASLt's */
    int pick = -3;
    for (int i = rows <= CM_CUDA_GEMV_ROWS ? -2 : 0; i < found; i++) {
        if (i == -1 && rows != 1) continue;
        t.path = i == -2 ? TunedLinear::GEMV : i == -1 ? TunedLinear::BLAS_GEMV : TunedLinear::LT;
        if (i >= 0) {
            if (cand[i].state != CUBLAS_STATUS_SUCCESS) continue;
            t.algo = cand[i].algo;
        }
        if (tuned_linear(t, b, out, in, W) != CUBLAS_STATUS_SUCCESS) continue;
        cudaEventRecord(e0, b.stream);
        for (int r = 0; r < REPS; r++) tuned_linear(t, b, out, in, W);
        cudaEventRecord(e1, b.stream);
        float ms = INFINITY;
        if (cudaEventSynchronize(e1) == cudaSuccess) cudaEventElapsedTime(&ms, e0, e1);
        if (ms < best) best = ms, pick = i;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaGetLastError();
    if (pick < -2) {
        tuned_linear_free(t);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    t.path = pick == -2 ? TunedLinear::GEMV : pick == -1 ? TunedLinear::BLAS_GEMV : TunedLinear::LT;
    if (pick >= 0) t.algo = cand[pick].algo;
    t.ready = true;
    return CUBLAS_STATUS_SUCCESS;
}

} // namespace cm
