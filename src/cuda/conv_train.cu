/* The causal depthwise conv1d + SiLU of training (SPEC.md steps 2-3) over
 * whole sequences, channel-major (B, C, T), zeros before each sequence's
 * start: the forward, and the backward that recomputes the pre-activation
 * from the kept input rather than storing it. Each output adds the bias,
 * then taps k = 0 … K−1 in order, as the CPU code does. */
#include "cuda/scan_common.cuh"
#include "cuda/train_kernels.cuh"

namespace cm {
namespace {

constexpr int BLOCK = 256, TILE = 256;

/* thread (t, c, b): one output */
template <typename T>
__global__ void conv_fwd_kernel(const T *x, const float *w, const float *bias, T *out, int C,
                                int L, int K) {
    const int c = blockIdx.y, t = blockIdx.x * BLOCK + threadIdx.x;
    if (t >= L) return;
    const size_t row = ((size_t)blockIdx.z * C + c) * L;
    const float *wc = w + (size_t)c * K;
    float acc = bias ? bias[c] : 0.f;
    for (int k = 0; k < K; k++) {
        const int src = t - K + 1 + k;
        if (src >= 0) acc = fmaf(wc[k], to_f(x[row + src]), acc);
    }
    out[row + t] = from_f<T>(acc * sigmoid(acc));
}

__device__ __forceinline__ float block_sum(float v, float *red) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads(); /* red is reused call after call */
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
    __syncthreads();
    float s = 0.f;
    for (int i = 0; i < BLOCK / 32; i++) s += red[i];
    return s;
}

/* A block per channel walks every sequence in tiles of TILE steps: the
 * tile's inputs (and K−1 on either side) and the pre-activation gradients
 * g of steps t0 … t0+TILE+K−2 go to shared memory, then
 *   dx[t] = Σ_k w[k]·g[t+K−1−k],  dw[k] += g[t]·x[t−K+1+k],  db += g[t]
 * with dw and db summed per thread, then over the block: no atomics, the
 * same sums in the same order on every run. */
template <typename T>
__global__ void __launch_bounds__(BLOCK)
conv_bwd_kernel(const T *dout, const float *dout32, const T *x, const float *w, const float *bias,
                T *dx, float *dw, float *db, int B, int C, int L, int K) {
    __shared__ float xs[TILE + 2 * (CONV_MAX_K - 1)], gs[TILE + CONV_MAX_K - 1];
    __shared__ float red[BLOCK / 32];
    const int c = blockIdx.x;
    float wk[CONV_MAX_K], dwk[CONV_MAX_K];
#pragma unroll
    for (int k = 0; k < CONV_MAX_K; k++) {
        wk[k] = k < K ? w[(size_t)c * K + k] : 0.f;
        dwk[k] = 0.f;
    }
    const float b0 = bias ? bias[c] : 0.f;
    float dbs = 0.f;
    for (int s = 0; s < B; s++) {
        const size_t row = ((size_t)s * C + c) * L;
        for (int t0 = 0; t0 < L; t0 += TILE) {
            /* xs[j] = x[t0 − K + 1 + j] */
            for (int j = threadIdx.x; j < TILE + 2 * (K - 1); j += BLOCK) {
                const int t = t0 - K + 1 + j;
                xs[j] = t >= 0 && t < L ? to_f(x[row + t]) : 0.f;
            }
            __syncthreads();
            /* gs[j] = dL/d(pre-activation) at t0 + j */
            for (int j = threadIdx.x; j < TILE + K - 1; j += BLOCK) {
                const int t = t0 + j;
                float g = 0.f;
                if (t < L) {
                    float pre = b0;
#pragma unroll
                    for (int k = 0; k < CONV_MAX_K; k++)
                        if (k < K) pre = fmaf(wk[k], xs[j + k], pre);
                    const float sg = sigmoid(pre);
                    const float go = (dout ? to_f(dout[row + t]) : 0.f) + (dout32 ? dout32[row + t] : 0.f);
                    g = go * sg * (1.f + pre * (1.f - sg));
                }
                gs[j] = g;
            }
            __syncthreads();
            for (int j = threadIdx.x; j < TILE && t0 + j < L; j += BLOCK) {
                float acc = 0.f;
                const float g = gs[j];
#pragma unroll
                for (int k = 0; k < CONV_MAX_K; k++)
                    if (k < K) {
                        acc = fmaf(wk[k], gs[j + K - 1 - k], acc);
                        dwk[k] = fmaf(g, xs[j + k], dwk[k]);
                    }
                dbs += g;
                dx[row + t0 + j] = from_f<T>(acc);
            }
            __syncthreads();
        }
    }
    for (int k = 0; k < K; k++) {
        const float v = block_sum(dwk[k], red);
        if (threadIdx.x == 0) dw[(size_t)c * K + k] += v;
    }
    const float v = block_sum(dbs, red);
    if (threadIdx.x == 0 && db) db[c] += v;
}

} // namespace

cudaError_t conv_silu_fwd(const void *x, const float *w, const float *bias, void *out,
                          cm_cuda_dtype dt, int B, int C, int T, int K, cudaStream_t stream) {
    return with_type(dt, [&](auto tag) {
        using E = decltype(tag);
        const dim3 grid((T + BLOCK - 1) / BLOCK, C, B);
        conv_fwd_kernel<E><<<grid, BLOCK, 0, stream>>>((const E *)x, w, bias, (E *)out, C, T, K);
        return cudaGetLastError();
    });
}

cudaError_t conv_silu_bwd(const void *dout, const float *dout32, const void *x, const float *w,
                          const float *bias, void *dx, float *dw, float *db, cm_cuda_dtype dt,
                          int B, int C, int T, int K, cudaStream_t stream) {
    if (K < 1 || K > CONV_MAX_K) return cudaErrorInvalidValue;
    return with_type(dt, [&](auto tag) {
        using E = decltype(tag);
        conv_bwd_kernel<E><<<C, BLOCK, 0, stream>>>((const E *)dout, dout32, (const E *)x, w, bias,
                                                   (E *)dx, dw, db, B, C, T, K);
        return cudaGetLastError();
    });
}

} // namespace cm
