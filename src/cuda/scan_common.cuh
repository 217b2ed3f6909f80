/* What the forward and backward scan kernels share: element types, the
 * special functions, and the staging of (rows, time) tiles into shared
 * memory. */
#ifndef CM_SCAN_COMMON_CUH
#define CM_SCAN_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda/cuda_scan.h"

namespace cm {

constexpr int CKPT = CM_CUDA_SCAN_CKPT;
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;

/* exp(Δ·A) = 2^(Δ·A·log2 e) with A pre-scaled: one FMUL and one MUFU.EX2.
 * ex2.approx is within 2 ulp; ftz turns results under 2^-126 into 0, which
 * for a decay factor is what they are. */
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* softplus(x) = max(x, 0) + log1p(e^−|x|): e ∈ (0, 1] and log1p(e) = e·P(e)
 * with P of degree 8 fitted on [0, 1] (relative error 2.3e-7 in fp32), so
 * the small Δ (1e-3) that Mamba's dt initialisation produces keep full
 * relative precision: one MUFU and no branches, where log1pf takes a
 * polynomial, a MUFU and special cases. Past x = 20 the log1p term is under
 * half an ulp of x, so this is x there, as PyTorch's threshold makes it. */
__device__ __forceinline__ float softplus(float x, float &e) {
    e = ex2(-fabsf(x) * LOG2E);
    float q = 0.005383958108723164f;
    q = fmaf(q, e, -0.03011055290699005f);
    q = fmaf(q, e, 0.0792100802063942f);
    q = fmaf(q, e, -0.1374656707048416f);
    q = fmaf(q, e, 0.19145090878009796f);
    q = fmaf(q, e, -0.24852938950061798f);
    q = fmaf(q, e, 0.33320343494415283f);
    q = fmaf(q, e, -0.49999552965164185f);
    q = fmaf(q, e, 1.f);
    return fmaf(e, q, fmaxf(x, 0.f));
}
__device__ __forceinline__ float softplus(float x) {
    float e;
    return softplus(x, e);
}
/* softplus'(x) = sigmoid(x) from the e = e^−|x| that softplus(x, e) gives:
 * one MUFU; 1 past PyTorch's threshold, where softplus is x itself */
__device__ __forceinline__ float softplus_grad(float x, float e) {
    const float r = __fdividef(1.f, 1.f + e);
    return x > 20.f ? 1.f : x >= 0.f ? r : e * r;
}
__device__ __forceinline__ float sigmoid(float x) { return __fdividef(1.f, 1.f + ex2(-x * LOG2E)); }

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int src_bytes) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
                 "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
/* waits until at most `pending` of this thread's most recent groups are in flight */
template <int pending> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(pending) : "memory");
}

/* Copies columns [t0, t0 + W) of rows [0, nrows) of a row-major (·, L)
 * matrix into dst[nrows][W]. Rows from nvalid on and columns from L on read
 * as 0. With vec (rows 16-byte aligned) the copy is asynchronous, 16 bytes a
 * request (cp.async: it lands while the caller computes; cp_async_wait
 * and a barrier before use); otherwise element by element. */
template <typename T, int W>
__device__ __forceinline__ void stage_rows(T *dst, const T *src, int nrows, int nvalid, int t0,
                                           int L, bool vec) {
    constexpr int V = 16 / sizeof(T), CPR = W / V; /* elements per request, requests per row */
    for (int i = threadIdx.x; i < nrows * CPR; i += blockDim.x) {
        const int r = i / CPR, j = (i % CPR) * V, t = t0 + j;
        const int valid = r < nvalid ? min(V, L - t) : 0;
        const T *s = src + (size_t)r * L + t;
        if (vec) {
            cp_async16(dst + r * W + j, valid > 0 ? s : src, valid > 0 ? valid * (int)sizeof(T) : 0);
        } else {
#pragma unroll
            for (int e = 0; e < V; e++) dst[r * W + j + e] = e < valid ? s[e] : from_f<T>(0.f);
        }
    }
}

/* G consecutive floats from shared memory, as wide as alignment allows
 * (G·4 bytes is the alignment the callers keep). */
template <int G> __device__ __forceinline__ void lds(float (&v)[G], const float *p) {
    if constexpr (G == 1) {
        v[0] = p[0];
    } else if constexpr (G == 2) {
        const float2 f = *reinterpret_cast<const float2 *>(p);
        v[0] = f.x, v[1] = f.y;
    } else {
#pragma unroll
        for (int i = 0; i < G; i += 4) {
            const float4 f = *reinterpret_cast<const float4 *>(p + i);
            v[i] = f.x, v[i + 1] = f.y, v[i + 2] = f.z, v[i + 3] = f.w;
        }
    }
}

__device__ __forceinline__ float4 lds4(const float *p) { return *reinterpret_cast<const float4 *>(p); }
__device__ __forceinline__ void sts4(float *p, float a, float b, float c, float d) {
    *reinterpret_cast<float4 *>(p) = make_float4(a, b, c, d);
}

/* K consecutive floats, K = 2 or a multiple of 4 (K·4 bytes aligned, or
 * 16), as one or K/4 vector stores */
template <int K> __device__ __forceinline__ void sts(float *p, const float (&v)[K]) {
    if constexpr (K == 2) {
        *reinterpret_cast<float2 *>(p) = make_float2(v[0], v[1]);
    } else {
#pragma unroll
        for (int i = 0; i < K; i += 4) sts4(p + i, v[i], v[i + 1], v[i + 2], v[i + 3]);
    }
}

/* K = 2 or 4 consecutive elements of a row of u, delta, z or out (the
 * first a multiple of K, rows of a length that is a multiple of K), as one
 * access of 4 to 16 bytes. */
template <int K> __device__ __forceinline__ void ldr(float (&v)[K], const float *p) {
    lds<K>(v, p);
}
template <int K> __device__ __forceinline__ void ldr(float (&v)[K], const __nv_bfloat16 *p) {
#pragma unroll
    for (int i = 0; i < K; i += 2) {
        const float2 f = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162 *>(p)[i / 2]);
        v[i] = f.x, v[i + 1] = f.y;
    }
}
template <int K> __device__ __forceinline__ void str(float *p, const float (&v)[K]) {
    sts<K>(p, v);
}
template <int K> __device__ __forceinline__ void str(__nv_bfloat16 *p, const float (&v)[K]) {
    if constexpr (K == 2) {
        *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(v[0], v[1]);
    } else {
        const __nv_bfloat162 a = __floats2bfloat162_rn(v[0], v[1]), b = __floats2bfloat162_rn(v[2], v[3]);
        uint2 w;
        w.x = *reinterpret_cast<const unsigned *>(&a), w.y = *reinterpret_cast<const unsigned *>(&b);
        *reinterpret_cast<uint2 *>(p) = w;
    }
}

/* Two consecutive elements of a row (t, t+1: t even, rows of even length),
 * as one 4- or 8-byte access. */
__device__ __forceinline__ float2 ld2(const float *p) { return *reinterpret_cast<const float2 *>(p); }
__device__ __forceinline__ float2 ld2(const __nv_bfloat16 *p) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(p));
}
__device__ __forceinline__ void st2(float *p, float a, float b) {
    *reinterpret_cast<float2 *>(p) = make_float2(a, b);
}
__device__ __forceinline__ void st2(__nv_bfloat16 *p, float a, float b) {
    *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(a, b);
}

/* Offset of (row, col) in a [rows][W] float array whose 16-byte chunks are
 * XOR-swizzled by row: float4 (and float2) accesses by 8 consecutive rows
 * at one column land on distinct banks, with no padding. Rows narrower
 * than the 128 bytes of the banks (W = 16: two rows a bank line) swizzle
 * by the line, the row's parity picking the half. */
template <int W> __device__ __forceinline__ int swz(int row, int col) {
    constexpr int K = W >= 32 ? 1 : 32 / W; /* rows per 128 bytes */
    return row * W + ((((col >> 2) ^ (row / K)) & (W / 4 - 1)) << 2) + (col & 3);
}

/* The launch geometry of both directions: S groups of G states, CB
 * channels per block (at most max_cb), S·CB ≤ block threads (more than
 * block when S alone exceeds it: the caller refuses that). */
struct Geometry {
    int G, S, CB, threads;
};
inline Geometry geometry(int N, int G, int block, int max_cb) {
    Geometry g;
    g.G = G;
    g.S = (N + G - 1) / G;
    g.CB = g.S >= block ? 1 : block / g.S;
    if (g.CB > max_cb) g.CB = max_cb;
    g.threads = g.S * g.CB;
    return g;
}

inline int sm_count() {
    int dev = 0, n = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev);
    return n > 0 ? n : 1;
}

inline bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

} // namespace cm

#endif
