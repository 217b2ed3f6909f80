/* The skinny products of decoding, callable from C: out (rows, n_out) =
 * in (rows, n_in) · W (n_out, n_in)ᵀ, every tensor row-major on the device,
 * for the few rows (sequences) of a small batch. Such a product is bound by
 * streaming W once from memory: a warp per output feature reads its row of
 * W with 16-byte loads (when n_in and the pointers allow; else one element
 * at a time), several in flight per lane, and applies it to up to
 * CM_CUDA_GEMV_ROWS input rows at once (more rows read W again, from L2),
 * with fp32 sums. in and W are in dt; out is fp32 (out_f32) or dt, and
 * gets the product added to it when accumulate. Asynchronous on stream, a
 * programmatic dependent launch (pdl.cuh); returns a cudaError_t. */
#ifndef CM_CUDA_GEMV_H
#define CM_CUDA_GEMV_H

#include "cuda/cuda_scan.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CM_CUDA_GEMV_ROWS 4 /* rows a pass; the decoding step uses it up to this batch */

int cm_cuda_gemv(void *out, int out_f32, int accumulate, const void *in, const void *W, int rows,
                 int n_in, int n_out, cm_cuda_dtype dt, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
