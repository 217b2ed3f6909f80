/* The backward of the residual add + RMSNorm (the forward is add_norm,
 * norm.cu), and the column sums that turn token-major rows into the
 * gradient of a per-feature parameter (the norm weight, a bias).
 *   r = 1/sqrt(mean(x²) + eps),  out_i = x_i·r·w_i
 *   dx_i += r·w_i·g_i − r³/d · x_i · Σ_j g_j·w_j·x_j,   dw_i += Σ_rows g_i·x_i·r
 * Column sums run in a fixed split of the rows (COL_PARTS parts, then the
 * parts in order), so every run gives the same bits. */
#include "cuda/scan_common.cuh"
#include "cuda/train_kernels.cuh"

namespace cm {
namespace {

constexpr int BLOCK = 256, COL_PARTS = 64, COL_W = 32, COL_H = 8;

__device__ __forceinline__ float block_sum(float v, float *red) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
    __syncthreads();
    float s = 0.f;
    for (int i = 0; i < BLOCK / 32; i++) s += red[i];
    return s;
}

/* a block per row */
template <typename E>
__global__ void __launch_bounds__(BLOCK)
rmsnorm_bwd_kernel(float *dx, E *dx_e, const float *g, const float *x, const float *w, float eps,
                   int d, float *rs) {
    __shared__ float red[BLOCK / 32];
    const size_t off = (size_t)blockIdx.x * d;
    float ss = 0.f, gwx = 0.f;
    for (int i = threadIdx.x; i < d; i += BLOCK) {
        const float xi = x[off + i];
        ss = fmaf(xi, xi, ss);
        gwx = fmaf(g[off + i] * w[i], xi, gwx);
    }
    ss = block_sum(ss, red);
    gwx = block_sum(gwx, red);
    const float r = rsqrtf(ss / d + eps), k = r * r * r * gwx / d;
    for (int i = threadIdx.x; i < d; i += BLOCK) {
        const float v = dx[off + i] + r * w[i] * g[off + i] - k * x[off + i];
        dx[off + i] = v;
        if (dx_e) dx_e[off + i] = from_f<E>(v);
    }
    if (threadIdx.x == 0 && rs) rs[blockIdx.x] = r;
}

/* part[p][col] = Σ over rows of part p of g·(x)·(r): block (COL_W columns,
 * part p), COL_H rows at a time */
__global__ void colsum_part_kernel(const float *g, const float *x, const float *r, int n, int d,
                                   float *part) {
    __shared__ float acc[COL_H][COL_W];
    const int col = blockIdx.x * COL_W + threadIdx.x, p = blockIdx.y;
    const int r0 = (int)((long)n * p / COL_PARTS), r1 = (int)((long)n * (p + 1) / COL_PARTS);
    float s = 0.f;
    if (col < d)
        for (int row = r0 + threadIdx.y; row < r1; row += COL_H) {
            const size_t i = (size_t)row * d + col;
            float v = g[i];
            if (x) v *= x[i] * r[row];
            s += v;
        }
    acc[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y || col >= d) return;
    for (int y = 1; y < COL_H; y++) s += acc[y][threadIdx.x];
    part[(size_t)p * d + col] = s;
}

__global__ void colsum_final_kernel(float *out, const float *part, int d) {
    const int col = blockIdx.x * BLOCK + threadIdx.x;
    if (col >= d) return;
    float s = 0.f;
    for (int p = 0; p < COL_PARTS; p++) s += part[(size_t)p * d + col];
    out[col] += s;
}

cudaError_t colsum(float *out, const float *g, const float *x, const float *r, int n, int d,
                   float *part, cudaStream_t stream) {
    colsum_part_kernel<<<dim3((d + COL_W - 1) / COL_W, COL_PARTS), dim3(COL_W, COL_H), 0, stream>>>(
        g, x, r, n, d, part);
    colsum_final_kernel<<<(d + BLOCK - 1) / BLOCK, BLOCK, 0, stream>>>(out, part, d);
    return cudaGetLastError();
}

} // namespace

size_t colsum_floats(int d) { return (size_t)COL_PARTS * d; }

cudaError_t rmsnorm_bwd(float *dx, void *dx_e, float *dw, const float *g, const float *x,
                        const float *w, float eps, cm_cuda_dtype dt, int n, int d, float *rs,
                        float *part, cudaStream_t stream) {
    const cudaError_t e = with_type(dt, [&](auto tag) {
        using E = decltype(tag);
        rmsnorm_bwd_kernel<E><<<n, BLOCK, 0, stream>>>(dx, (E *)dx_e, g, x, w, eps, d, rs);
        return cudaGetLastError();
    });
    return e != cudaSuccess ? e : colsum(dw, g, x, rs, n, d, part, stream);
}

cudaError_t colsum_acc(float *out, const float *m, int n, int d, float *part, cudaStream_t stream) {
    return colsum(out, m, nullptr, nullptr, n, d, part, stream);
}

} // namespace cm
