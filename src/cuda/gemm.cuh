/* The projections of GPU inference: cuBLAS products in the model's dtype
 * (fp32, or bf16 operands), fp32 sums (CUBLAS_COMPUTE_32F: no TF32 in the
 * fp32 mode).
 *
 * cuBLAS is column-major; every tensor here is row-major, which cuBLAS
 * sees transposed. Each product is written as the column-major product
 * that leaves its result in the layout the next kernel reads: token-major
 * (rows, features) for the norms, the decoding step and the head,
 * channel-major (features, L) for the prompt's conv and scan, which is
 * what makes the prompt path free of transposes. */
#ifndef CM_GEMM_CUH
#define CM_GEMM_CUH

#include <cublasLt.h>
#include <cublas_v2.h>

#include "cuda/cuda_scan.h"

namespace cm {

struct Blas {
    cublasHandle_t h;
    cublasLtHandle_t lt;
    cm_cuda_dtype dt; /* of the weights and of the activations they multiply */
    void *ws;         /* workspace, fixed so that graph capture allocates nothing */
    size_t ws_bytes;
    cudaStream_t stream;
};

/* out (rows, n_out) = in (rows, n_in) · W (n_out, n_in)ᵀ (+ out when
 * accumulate), token-major; out fp32 (c32) or in the dtype */
cublasStatus_t linear_rows(const Blas &b, void *out, bool c32, bool accumulate, const void *in,
                           const void *W, int rows, int n_in, int n_out);
/* out (n_out, L) channel-major = (in (L, n_in) token-major · Wᵀ)ᵀ */
cublasStatus_t linear_to_cols(const Blas &b, void *out, const void *in, const void *W, int L,
                              int n_in, int n_out);
/* out (n_out, L) = W · in (n_in, L), both channel-major */
cublasStatus_t linear_cols(const Blas &b, void *out, const void *in, const void *W, int L,
                           int n_in, int n_out);
/* h (L, n_out) fp32 token-major += (W · in (n_in, L) channel-major)ᵀ */
cublasStatus_t linear_from_cols_acc(const Blas &b, float *h, const void *in, const void *W, int L,
                                    int n_in, int n_out);

/* linear_rows for one shape, through the fastest of its candidates, chosen
 * by timing them once: cuBLASLt's algorithms for it, cuBLAS's
 * matrix-vector product for one row, and up to CM_CUDA_GEMV_ROWS rows
 * cm_cuda_gemv (gemv.h). The skinny products of decoding are bound by
 * streaming the weights, which the library's first guess can do with a
 * handful of thread blocks. */
struct TunedLinear {
    enum Path { LT, BLAS_GEMV, GEMV };
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo;
    Path path = LT;
    bool accumulate = false, c32 = false, ready = false;
    int rows = 0, n_in = 0, n_out = 0;
};
/* Times the candidates on these operands (out is overwritten: scratch). */
cublasStatus_t tuned_linear_init(TunedLinear &t, const Blas &b, void *out, bool c32, bool accumulate,
                                 const void *in, const void *W, int rows, int n_in, int n_out);
cublasStatus_t tuned_linear(const TunedLinear &t, const Blas &b, void *out, const void *in,
                            const void *W);
void tuned_linear_free(TunedLinear &t);

} // namespace cm

#endif
