/* The residual add fused with RMSNorm (SPEC.md "The language model"):
 * h += bias (the previous layer's out_proj bias; the product itself was
 * accumulated into h by cuBLAS), then out = h / sqrt(mean(h²) + eps) · w.
 * One pass over each row, kept in registers; the residual stays
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

/* a block per row. The weights (w, bias) need nothing of the previous
 * kernel: the first PER of each thread are in registers before it waits;
 * then its PER loads of the row go out together, one round trip (rows of
 * up to PER · NORM_BLOCK; the rest, if any, in a loop). */
template <typename T>
__global__ void __launch_bounds__(NORM_BLOCK)
add_norm_kernel(float *h, const float *bias, const float *w, float eps, T *out, int d) {
    constexpr int PER = 16;
    __shared__ float red[NORM_BLOCK / 32];
    pdl_launch_dependents();
    float wv[PER], bv[PER], v[PER];
#pragma unroll
    for (int k = 0; k < PER; k++) {
        const int i = threadIdx.x + k * NORM_BLOCK;
        wv[k] = i < d ? w[i] : 0.f;
        bv[k] = i < d && bias ? bias[i] : 0.f;
    }
    pdl_wait(); /* h is the previous kernel's */
    float *row = h + (size_t)blockIdx.x * d;
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < PER; k++) {
        const int i = threadIdx.x + k * NORM_BLOCK;
        v[k] = i < d ? row[i] : 0.f;
    }
#pragma unroll
    for (int k = 0; k < PER; k++) {
        const int i = threadIdx.x + k * NORM_BLOCK;
        if (bias && i < d) row[i] = v[k] += bv[k];
        ss = fmaf(v[k], v[k], ss);
    }
    for (int i = threadIdx.x + PER * NORM_BLOCK; i < d; i += NORM_BLOCK) {
        float x = row[i];
        if (bias) row[i] = x += bias[i];
        ss = fmaf(x, x, ss);
    }
    const float r = rsqrtf(block_sum(ss, red) / d + eps);
    T *o = out + (size_t)blockIdx.x * d;
#pragma unroll
    for (int k = 0; k < PER; k++) {
        const int i = threadIdx.x + k * NORM_BLOCK;
        if (i < d) o[i] = from_f<T>(v[k] * r * wv[k]);
    }
    /* the rest reads what this thread wrote or read, from L1 */
    for (int i = threadIdx.x + PER * NORM_BLOCK; i < d; i += NORM_BLOCK) o[i] = from_f<T>(row[i] * r * w[i]);
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
