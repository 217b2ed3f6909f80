/* The causal depthwise conv1d + SiLU of training (SPEC.md steps 2-3) over
 * whole sequences, channel-major (B, C, T), zeros before each sequence's
 * start: the forward, and the backward that recomputes the pre-activation
 * from the kept input rather than storing it. Each output adds the bias,
 * then taps k = 0 … K−1 in order, as the CPU code does.
 *
 * A block is one tile of TILE steps of one (sequence, channel) row, PER
 * steps a thread (strided, so that each of a thread's loads coalesces with
 * its neighbours'): the tile's inputs and a halo of K−1 steps on either side
 * go to shared memory once. Tiles of a few steps per thread keep loads in
 * flight; one step a thread left the kernels latency-bound at a third of
 * the bandwidth. The backward's weight and bias gradients are sums over every
 * (sequence, step) of a channel: each block reduces its tile's share, the
 * partial sums land in `part`, and a second kernel adds them up per channel
 * in tile order — no atomics, the same bits on every run. */
#include "cuda/scan_common.cuh"
#include "cuda/train_kernels.cuh"

namespace cm {
namespace {

constexpr int BLOCK = 256, PER = 4, TILE = BLOCK * PER; /* steps per block */
constexpr int HALO = CONV_MAX_K - 1;

/* xs[j] = x[t0 − HALO + j] for j < TILE + 2·HALO, zero outside [0, L) */
template <typename T>
__device__ __forceinline__ void load_tile(float *xs, const T *row, int t0, int L) {
    for (int j = threadIdx.x; j < TILE + 2 * HALO; j += BLOCK) {
        const int t = t0 - HALO + j;
        xs[j] = t >= 0 && t < L ? to_f(row[t]) : 0.f;
    }
}

/* b + Σ_k w[k]·x[t−K+1+k], xs holding x from t0 − HALO; j = t − t0 */
__device__ __forceinline__ float conv_at(const float *xs, const float *w, float b, int K, int j) {
    float acc = b;
    for (int k = 0; k < K; k++) acc = fmaf(w[k], xs[j + HALO - K + 1 + k], acc);
    return acc;
}

template <typename T>
__global__ void __launch_bounds__(BLOCK)
conv_fwd_kernel(const T *x, const float *w, const float *bias, T *out, int C, int L, int K) {
    __shared__ float xs[TILE + 2 * HALO];
    __shared__ float ws[CONV_MAX_K];
    const int c = blockIdx.y, t0 = blockIdx.x * TILE;
    const size_t row = ((size_t)blockIdx.z * C + c) * L;
    if (threadIdx.x < K) ws[threadIdx.x] = w[(size_t)c * K + threadIdx.x];
    load_tile(xs, x + row, t0, L);
    __syncthreads();
    const float b0 = bias ? bias[c] : 0.f;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        const int j = threadIdx.x + i * BLOCK;
        if (t0 + j >= L) break;
        const float acc = conv_at(xs, ws, b0, K, j);
        out[row + t0 + j] = from_f<T>(acc * sigmoid(acc));
    }
}

/* With g = dL/d(pre-activation) = (dout + dout32)·silu'(pre):
 *   dx[t] = Σ_k w[k]·g[t+K−1−k],  dw[k] += Σ_t g[t]·x[t−K+1+k],  db += Σ_t g[t]
 * part (C, K+1, tiles): this tile's dw[0 … K−1] and db. */
template <typename T>
__global__ void __launch_bounds__(BLOCK)
conv_bwd_kernel(const T *dout, const float *dout32, const T *x, const float *w, const float *bias,
                T *dx, float *part, int C, int L, int K) {
    __shared__ float xs[TILE + 2 * HALO], gs[TILE + HALO], ws[CONV_MAX_K];
    __shared__ float red[BLOCK / 32][CONV_MAX_K + 1];
    const int c = blockIdx.y, t0 = blockIdx.x * TILE;
    const size_t row = ((size_t)blockIdx.z * C + c) * L;
    if (threadIdx.x < K) ws[threadIdx.x] = w[(size_t)c * K + threadIdx.x];
    /* the output gradients of steps t0 … t0 + TILE + K − 2 (the last K − 1
     * feed this tile's dx) into registers, their loads issued together with
     * the tile's inputs: one round trip to memory */
    float go[PER + 1];
#pragma unroll
    for (int i = 0; i <= PER; i++) {
        const int j = threadIdx.x + i * BLOCK, t = t0 + j;
        go[i] = 0.f;
        if (t < L && j < TILE + K - 1)
            go[i] = (dout ? to_f(dout[row + t]) : 0.f) + (dout32 ? dout32[row + t] : 0.f);
    }
    load_tile(xs, x + row, t0, L);
    __syncthreads();
    const float b0 = bias ? bias[c] : 0.f;
    /* g at the recomputed pre-activation */
#pragma unroll
    for (int i = 0; i <= PER; i++) {
        const int j = threadIdx.x + i * BLOCK;
        if (j >= TILE + K - 1) break;
        const float pre = conv_at(xs, ws, b0, K, j), sg = sigmoid(pre);
        gs[j] = go[i] * sg * (1.f + pre * (1.f - sg));
    }
    __syncthreads();
    float sums[CONV_MAX_K + 1];
#pragma unroll
    for (int k = 0; k <= CONV_MAX_K; k++) sums[k] = 0.f;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        const int j = threadIdx.x + i * BLOCK;
        if (t0 + j >= L) break;
        float acc = 0.f;
        const float g = gs[j];
#pragma unroll
        for (int k = 0; k < CONV_MAX_K; k++)
            if (k < K) {
                acc = fmaf(ws[k], gs[j + K - 1 - k], acc);
                sums[k] = fmaf(g, xs[j + HALO - K + 1 + k], sums[k]);
            }
        sums[CONV_MAX_K] += g;
        dx[row + t0 + j] = from_f<T>(acc);
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
    for (int k = 0; k <= CONV_MAX_K; k++) {
        if (k < K || k == CONV_MAX_K) {
            float v = sums[k];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == 0) red[warp][k < K ? k : K] = v;
        }
    }
    __syncthreads();
    if (threadIdx.x > K) return;
    float s = 0.f;
    for (int i = 0; i < BLOCK / 32; i++) s += red[i][threadIdx.x];
    const size_t tiles = (size_t)gridDim.x * gridDim.z, tile = (size_t)blockIdx.z * gridDim.x + blockIdx.x;
    part[((size_t)c * (K + 1) + threadIdx.x) * tiles + tile] = s;
}

/* thread (c, k): the tiles' partial sums in order */
__global__ void conv_bwd_sum_kernel(const float *part, float *dw, float *db, int C, int K,
                                    size_t tiles) {
    const int i = blockIdx.x * BLOCK + threadIdx.x;
    if (i >= C * (K + 1)) return;
    const float *p = part + (size_t)i * tiles;
    float s = 0.f;
    for (size_t j = 0; j < tiles; j++) s += p[j];
    const int c = i / (K + 1), k = i % (K + 1);
    if (k < K) dw[(size_t)c * K + k] += s;
    else if (db) db[c] += s;
}

} // namespace

size_t conv_bwd_part_floats(int B, int C, int T, int K) {
    return (size_t)C * (K + 1) * B * ((T + TILE - 1) / TILE);
}

cudaError_t conv_silu_fwd(const void *x, const float *w, const float *bias, void *out,
                          cm_cuda_dtype dt, int B, int C, int T, int K, cudaStream_t stream) {
    if (K < 1 || K > CONV_MAX_K) return cudaErrorInvalidValue;
    return with_type(dt, [&](auto tag) {
        using E = decltype(tag);
        const dim3 grid((T + TILE - 1) / TILE, C, B);
        conv_fwd_kernel<E><<<grid, BLOCK, 0, stream>>>((const E *)x, w, bias, (E *)out, C, T, K);
        return cudaGetLastError();
    });
}

cudaError_t conv_silu_bwd(const void *dout, const float *dout32, const void *x, const float *w,
                          const float *bias, void *dx, float *dw, float *db, float *part,
                          cm_cuda_dtype dt, int B, int C, int T, int K, cudaStream_t stream) {
    if (K < 1 || K > CONV_MAX_K) return cudaErrorInvalidValue;
    const dim3 grid((T + TILE - 1) / TILE, C, B);
    const cudaError_t e = with_type(dt, [&](auto tag) {
        using E = decltype(tag);
        conv_bwd_kernel<E><<<grid, BLOCK, 0, stream>>>((const E *)dout, dout32, (const E *)x, w,
                                                      bias, (E *)dx, part, C, T, K);
        return cudaGetLastError();
    });
    if (e != cudaSuccess) return e;
    const int outputs = C * (K + 1);
    conv_bwd_sum_kernel<<<(outputs + BLOCK - 1) / BLOCK, BLOCK, 0, stream>>>(
        part, dw, db, C, K, (size_t)grid.x * grid.z);
    return cudaGetLastError();
}

} // namespace cm
