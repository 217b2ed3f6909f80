/* AdamW over the flat parameter buffer on the GPU, as cm_adamw_step
 * (train/optimizer.c): the global gradient norm (squares summed in double,
 * in a fixed split, so every run gives the same bits), clipping by it,
 * then one pass updating moments and parameters, with decoupled weight
 * decay where the recipe applies it, and the bf16 copy of the parameters
 * that mixed precision multiplies with. The norm stays on the device: the
 * update reads it there, so the step needs no round trip to the host. */
#include <algorithm>

#include "cuda/scan_common.cuh"
#include "cuda/train_kernels.cuh"

namespace cm {
namespace {

constexpr int BLOCK = 256;

__global__ void __launch_bounds__(BLOCK) norm_part_kernel(const float *g, size_t n, double *part) {
    __shared__ double red[BLOCK];
    double s = 0;
    for (size_t i = (size_t)blockIdx.x * BLOCK + threadIdx.x; i < n; i += (size_t)ADAMW_PARTS * BLOCK)
        s += (double)g[i] * g[i];
    red[threadIdx.x] = s;
    __syncthreads();
    for (int h = BLOCK / 2; h > 0; h >>= 1) {
        if (threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = red[0];
}

__global__ void __launch_bounds__(BLOCK) norm_final_kernel(const double *part, double *norm2) {
    __shared__ double red[BLOCK];
    double s = 0;
    for (int i = threadIdx.x; i < ADAMW_PARTS; i += BLOCK) s += part[i];
    red[threadIdx.x] = s;
    __syncthreads();
    for (int h = BLOCK / 2; h > 0; h >>= 1) {
        if (threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) *norm2 = red[0];
}

__global__ void adamw_kernel(float *params, __nv_bfloat16 *w16, const float *grads, float *m,
                             float *v, const uint8_t *decay, size_t n, const double *norm2,
                             float clip, float lr, float beta1, float beta2, float eps, float wd,
                             float bc1, float bc2) {
    const float norm = (float)sqrt(*norm2);
    const float scale = clip > 0 && norm > clip ? clip / norm : 1.0f;
    for (size_t i = (size_t)blockIdx.x * BLOCK + threadIdx.x; i < n;
         i += (size_t)gridDim.x * BLOCK) {
        const float g = grads[i] * scale;
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi, v[i] = vi;
        float p = params[i];
        if (decay[i]) p *= 1.0f - lr * wd;
        p -= lr * (mi / bc1) / (sqrtf(vi / bc2) + eps);
        params[i] = p;
        if (w16) w16[i] = __float2bfloat16_rn(p);
    }
}

} // namespace

cudaError_t grad_norm2(const float *g, size_t n, double *part, double *norm2, cudaStream_t stream) {
    norm_part_kernel<<<ADAMW_PARTS, BLOCK, 0, stream>>>(g, n, part);
    norm_final_kernel<<<1, BLOCK, 0, stream>>>(part, norm2);
    return cudaGetLastError();
}

cudaError_t adamw_update(float *params, __nv_bfloat16 *w16, const float *g, float *m, float *v,
                         const uint8_t *decay, size_t n, const double *norm2, float clip, float lr,
                         float beta1, float beta2, float eps, float wd, float bc1, float bc2,
                         cudaStream_t stream) {
    const size_t blocks = std::min<size_t>((n + BLOCK - 1) / BLOCK, (size_t)sm_count() * 16);
    adamw_kernel<<<(unsigned)blocks, BLOCK, 0, stream>>>(params, w16, g, m, v, decay, n, norm2,
                                                         clip, lr, beta1, beta2, eps, wd, bc1, bc2);
    return cudaGetLastError();
}

} // namespace cm
