/* The small kernels of GPU training (train_kernels.cuh): the embedding's
 * backward, the in_proj bias on channel-major activations, A = −exp(A_log)
 * and its backward, packing the scan's dB, dC beside dδ for one x_proj
 * product, and bf16 copies of fp32 buffers. None uses atomics: every sum
 * runs in one fixed order. */
#include "cuda/scan_common.cuh"
#include "cuda/train_kernels.cuh"

namespace cm {
namespace {

constexpr int BLOCK = 256;

unsigned blocks_for(size_t n) { return (unsigned)((n + BLOCK - 1) / BLOCK); }

/* a block per distinct id: its positions' rows summed in sequence order
 * (as the CPU's serial loop), then added to the table row */
__global__ void embed_bwd_kernel(float *dtable, const float *dh, const int32_t *uid,
                                 const int32_t *start, const int32_t *pos, int d) {
    const int u = blockIdx.x, p0 = start[u], p1 = start[u + 1];
    float *row = dtable + (size_t)uid[u] * d;
    for (int i = threadIdx.x; i < d; i += BLOCK) {
        float s = row[i];
        for (int p = p0; p < p1; p++) s += dh[(size_t)pos[p] * d + i];
        row[i] = s;
    }
}

template <typename E>
__global__ void bias_cols_fwd_kernel(E *buf, const float *bias, int C, int T) {
    const int t = blockIdx.x * BLOCK + threadIdx.x;
    if (t >= T) return;
    const size_t i = ((size_t)blockIdx.z * C + blockIdx.y) * T + t;
    buf[i] = from_f<E>(to_f(buf[i]) + bias[blockIdx.y]);
}

/* a block per channel */
template <typename E>
__global__ void bias_cols_bwd_kernel(float *db, const E *g, int B, int C, int T) {
    __shared__ float red[BLOCK];
    float s = 0.f;
    for (int b = 0; b < B; b++) {
        const E *row = g + ((size_t)b * C + blockIdx.x) * T;
        for (int t = threadIdx.x; t < T; t += BLOCK) s += to_f(row[t]);
    }
    red[threadIdx.x] = s;
    __syncthreads();
    for (int h = BLOCK / 2; h > 0; h >>= 1) {
        if (threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) db[blockIdx.x] += red[0];
}

__global__ void a_from_log_kernel(float *A, const float *A_log, int n) {
    const int i = blockIdx.x * BLOCK + threadIdx.x;
    if (i < n) A[i] = -expf(A_log[i]);
}

/* A = −exp(A_log), so ∂A/∂A_log = A */
__global__ void a_log_bwd_kernel(float *dA_log, const float *dA, const float *A, int n) {
    const int i = blockIdx.x * BLOCK + threadIdx.x;
    if (i < n) dA_log[i] += dA[i] * A[i];
}

template <typename E>
__global__ void pack_rows_kernel(E *dst, int rows_dst, int r0, const float *src, int N, int T,
                                 long count) {
    const long i = blockIdx.x * (long)BLOCK + threadIdx.x;
    if (i >= count) return;
    const long t = i % T, n = i / T % N, b = i / ((long)T * N);
    dst[(b * rows_dst + r0 + n) * T + t] = from_f<E>(src[i]);
}

__global__ void to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
    const size_t i = (size_t)blockIdx.x * BLOCK + threadIdx.x;
    if (i < n) dst[i] = __float2bfloat16_rn(src[i]);
}

} // namespace

cudaError_t embed_bwd(float *dtable, const float *dh, const int32_t *uid, const int32_t *start,
                      const int32_t *pos, int n_unique, int d, cudaStream_t stream) {
    embed_bwd_kernel<<<n_unique, BLOCK, 0, stream>>>(dtable, dh, uid, start, pos, d);
    return cudaGetLastError();
}

cudaError_t bias_cols_fwd(void *buf, const float *bias, cm_cuda_dtype dt, int B, int C, int T,
                          cudaStream_t stream) {
    return with_type(dt, [&](auto tag) {
        using E = decltype(tag);
        bias_cols_fwd_kernel<E><<<dim3(blocks_for(T), C, B), BLOCK, 0, stream>>>((E *)buf, bias, C, T);
        return cudaGetLastError();
    });
}

cudaError_t bias_cols_bwd(float *db, const void *g, cm_cuda_dtype dt, int B, int C, int T,
                          cudaStream_t stream) {
    return with_type(dt, [&](auto tag) {
        using E = decltype(tag);
        bias_cols_bwd_kernel<E><<<C, BLOCK, 0, stream>>>(db, (const E *)g, B, C, T);
        return cudaGetLastError();
    });
}

cudaError_t a_from_log(float *A, const float *A_log, int n, cudaStream_t stream) {
    a_from_log_kernel<<<blocks_for(n), BLOCK, 0, stream>>>(A, A_log, n);
    return cudaGetLastError();
}

cudaError_t a_log_bwd(float *dA_log, const float *dA, const float *A, int n, cudaStream_t stream) {
    a_log_bwd_kernel<<<blocks_for(n), BLOCK, 0, stream>>>(dA_log, dA, A, n);
    return cudaGetLastError();
}

cudaError_t pack_rows(void *dst, int rows_dst, int r0, const float *src, cm_cuda_dtype dt, int B,
                      int N, int T, cudaStream_t stream) {
    const long count = (long)B * N * T;
    return with_type(dt, [&](auto tag) {
        using E = decltype(tag);
        pack_rows_kernel<E><<<blocks_for(count), BLOCK, 0, stream>>>((E *)dst, rows_dst, r0, src, N,
                                                                     T, count);
        return cudaGetLastError();
    });
}

cudaError_t to_bf16(__nv_bfloat16 *dst, const float *src, size_t n, cudaStream_t stream) {
    to_bf16_kernel<<<blocks_for(n), BLOCK, 0, stream>>>(dst, src, n);
    return cudaGetLastError();
}

} // namespace cm
