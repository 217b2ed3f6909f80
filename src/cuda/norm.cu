/* The residual add fused with RMSNorm (SPEC.md "The language model"):
 * h += bias (the previous layer's out_proj bias; the product itself was
 * accumulated into h by cuBLAS), then out = h / sqrt(mean(h²) + eps) · w.
 * Two passes over each row (the second from cache); the residual stays
 * fp32 and only `out` takes the activation type. A programmatic dependent
 * launch (pdl.cuh): in the decoding step it follows out_proj. */
#include "cuda/model_kernels.cuh"
#include "cuda/pdl.cuh"
#include "cuda/scan_common.cuh"

namespace cm {
namespace {

constexpr int NORM_BLOCK = 256;

__device__ __forceinline__ float block_sum(float v, float *red) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < NORM_BLOCK / 32 ? red[lane] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* a block per row: at batch 1 each thread's few loads go out together, one round trip */
template <typename T>
__global__ void __launch_bounds__(NORM_BLOCK)
add_norm_kernel(float *h, const float *bias, const float *w, float eps, T *out, int d) {
    __shared__ float red[NORM_BLOCK / 32];
    pdl_launch_dependents();
    pdl_wait(); /* h is the previous kernel's */
    float *row = h + (size_t)blockIdx.x * d;
    float ss = 0.f;
#pragma unroll 4
    for (int i = threadIdx.x; i < d; i += NORM_BLOCK) {
        float v = row[i];
        if (bias) row[i] = v += bias[i];
        ss = fmaf(v, v, ss);
    }
    const float r = rsqrtf(block_sum(ss, red) / d + eps);
    /* the second pass reads what this thread wrote or read, from L1 */
    T *o = out + (size_t)blockIdx.x * d;
#pragma unroll 4
    for (int i = threadIdx.x; i < d; i += NORM_BLOCK) o[i] = from_f<T>(row[i] * r * w[i]);
}

} // namespace

cudaError_t add_norm(float *h, const float *bias, const float *w, float eps, void *out,
                     cm_cuda_dtype dt, int rows, int d, cudaStream_t stream) {
    return with_type(dt, [&](auto t) {
        using T = decltype(t);
        return launch_pdl(add_norm_kernel<T>, rows, NORM_BLOCK, 0, stream, h, bias, w, eps, (T *)out, d);
    });
}

} // namespace cm
