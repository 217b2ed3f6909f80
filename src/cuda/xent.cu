/* The language-model loss on the GPU: mean next-token cross-entropy over
 * the scored rows, which are gathered CE chunk by chunk from the final
 * norm's output, so that only (chunk, vocab) logits exist at once. Per row:
 *   loss = log Σ_v exp(l_v − max) + max − l_target,   hit = (argmax = target)
 *   dlogits = scale·(softmax(l) − onehot(target))
 * the argmax being the first maximum, as the CPU trainer's accuracy. */
#include "cuda/scan_common.cuh"
#include "cuda/train_kernels.cuh"

namespace cm {
namespace {

constexpr int BLOCK = 512, ROW_BLOCK = 256;

/* the larger value, the lower index on ties */
__device__ __forceinline__ void better(float &v, int &i, float v2, int i2) {
    if (v2 > v || (v2 == v && i2 < i)) v = v2, i = i2;
}

/* (max, Σ exp(l − max), first argmax) of two parts of a row, combined */
__device__ __forceinline__ void merge(float &mx, float &s, int &idx, float mx2, float s2, int idx2) {
    const float m = fmaxf(mx, mx2);
    s = (mx == -INFINITY ? 0.f : s * expf(mx - m)) + (mx2 == -INFINITY ? 0.f : s2 * expf(mx2 - m));
    better(mx, idx, mx2, idx2);
    mx = m;
}

/* a block per row: one pass for the maximum, its index and the sum of
 * exponentials (rescaled as the maximum grows), a second for dlogits */
template <typename E>
__global__ void __launch_bounds__(BLOCK)
xent_kernel(float *logits, E *dlogits, const int32_t *tg, float scale, float *loss, int32_t *hit,
            int V) {
    __shared__ float sm[BLOCK / 32], ss[BLOCK / 32];
    __shared__ int si[BLOCK / 32];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const float *row = logits + (size_t)blockIdx.x * V;
    const int target = tg[blockIdx.x];
    const float lt = row[target]; /* read before dlogits may overwrite the row */
    float mx = -INFINITY, s = 0.f;
    int idx = 0x7fffffff;
    for (int v = threadIdx.x; v < V; v += BLOCK) {
        const float l = row[v];
        if (l > mx) s = s * expf(mx - l) + 1.f, mx = l, idx = v;
        else s += expf(l - mx);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        merge(mx, s, idx, __shfl_xor_sync(0xffffffffu, mx, o), __shfl_xor_sync(0xffffffffu, s, o),
              __shfl_xor_sync(0xffffffffu, idx, o));
    if (lane == 0) sm[warp] = mx, ss[warp] = s, si[warp] = idx;
    __syncthreads();
    mx = sm[0], s = ss[0], idx = si[0];
    for (int w = 1; w < BLOCK / 32; w++) merge(mx, s, idx, sm[w], ss[w], si[w]);
    if (threadIdx.x == 0) {
        loss[blockIdx.x] = logf(s) + mx - lt;
        hit[blockIdx.x] = idx == target;
    }
    if (!(scale > 0.f)) return;
    const float inv = 1.f / s;
    E *drow = dlogits + (size_t)blockIdx.x * V;
    for (int v = threadIdx.x; v < V; v += BLOCK)
        drow[v] = from_f<E>(scale * (expf(row[v] - mx) * inv - (v == target ? 1.f : 0.f)));
}

template <typename E>
__global__ void gather_kernel(E *dst, const E *src, const int32_t *idx, int d) {
    const E *s = src + (size_t)idx[blockIdx.x] * d;
    E *o = dst + (size_t)blockIdx.x * d;
    for (int i = threadIdx.x; i < d; i += ROW_BLOCK) o[i] = s[i];
}

__global__ void scatter_add_kernel(float *out, const float *dsrc, const int32_t *idx, int d) {
    float *o = out + (size_t)idx[blockIdx.x] * d;
    const float *s = dsrc + (size_t)blockIdx.x * d;
    for (int i = threadIdx.x; i < d; i += ROW_BLOCK) o[i] += s[i];
}

} // namespace

cudaError_t xent(float *logits, void *dlogits, const int32_t *tg, float scale, float *loss,
                 int32_t *hit, cm_cuda_dtype dt, int rows, int V, cudaStream_t stream) {
    return with_type(dt, [&](auto tag) {
        using E = decltype(tag);
        xent_kernel<E><<<rows, BLOCK, 0, stream>>>(logits, (E *)dlogits, tg, scale, loss, hit, V);
        return cudaGetLastError();
    });
}

cudaError_t gather_rows(void *dst, const void *src, const int32_t *idx, cm_cuda_dtype dt,
                        int rows, int d, cudaStream_t stream) {
    return with_type(dt, [&](auto tag) {
        using E = decltype(tag);
        gather_kernel<E><<<rows, ROW_BLOCK, 0, stream>>>((E *)dst, (const E *)src, idx, d);
        return cudaGetLastError();
    });
}

cudaError_t scatter_add_rows(float *out, const float *dsrc, const int32_t *idx, int rows, int d,
                             cudaStream_t stream) {
    scatter_add_kernel<<<rows, ROW_BLOCK, 0, stream>>>(out, dsrc, idx, d);
    return cudaGetLastError();
}

} // namespace cm
