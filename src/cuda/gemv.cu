/* Skinny products for decoding (gemv.h): ws warps per output feature j
 * (1, 2 or 4: enough that each lane's share of W's row j is one round of
 * loads), each lane a strided share of the row. At one sequence cuBLAS runs these
 * shapes with 12-48 thread blocks, far from filling the memory system;
 * here every output feature is a warp, UNROLL 16-byte weight loads a lane
 * are in flight before the first multiply (the first UNROLL issued while
 * the previous kernel still runs, pdl.cuh), and the inputs (a few rows,
 * read by every warp) come from L1. */
#include <type_traits>

#include "cuda/gemv.h"
#include "cuda/model_kernels.cuh"
#include "cuda/pdl.cuh"
#include "cuda/scan_common.cuh"

namespace cm {
namespace {

constexpr int GEMV_BLOCK = 128, GEMV_WARPS = GEMV_BLOCK / 32;
constexpr int UNROLL = 8; /* weight loads in flight per lane */

/* E elements of T in one load: 16 bytes (VEC) or one element */
template <typename T, bool VEC> struct Chunk {
    static constexpr int E = VEC ? 16 / (int)sizeof(T) : 1;
    using Raw = std::conditional_t<VEC, uint4, T>;
};

/* weights are read once per step: keep them out of L1 */
__device__ __forceinline__ uint4 load_stream(const uint4 *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}
template <typename T> __device__ __forceinline__ T load_stream(const T *p) { return __ldg(p); }

/* the 32-bit words of a 16-byte chunk as 4 floats, or as 8 bf16 (the high
 * half of a bf16's float) */
__device__ __forceinline__ void unpack(uint4 v, float (&f)[4]) {
    f[0] = __uint_as_float(v.x), f[1] = __uint_as_float(v.y);
    f[2] = __uint_as_float(v.z), f[3] = __uint_as_float(v.w);
}
__device__ __forceinline__ void unpack(uint4 v, float (&f)[8]) {
    const unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) f[2 * i] = __uint_as_float(w[i] << 16), f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
}
template <typename T> __device__ __forceinline__ void unpack(T v, float (&f)[1]) { f[0] = to_f(v); }

struct GemvArgs {
    void *out;
    const void *in, *W;
    int rows, n_in, n_out, ws; /* ws: warps per output feature */
    bool out_f32, accumulate;
};

/* the UNROLL chunks v0, v0 + step, … of a weight row that lie before nv */
template <typename Raw>
__device__ __forceinline__ void load_round(const Raw *w, int v0, int step, int nv, Raw (&wr)[UNROLL]) {
#pragma unroll
    for (int u = 0; u < UNROLL; u++)
        if (v0 + u * step < nv) wr[u] = load_stream(w + v0 + u * step);
}

/* rows [r0, r0 + MAXR) ∩ [0, rows) of output feature j, in lane r − r0:
 * the share of the chunks part, part + ws, … of W's row. wr holds the
 * share's first round of chunks on entry (loaded by the caller, before it
 * waited on its predecessor), and is overwritten. */
template <typename T, int MAXR, bool VEC>
__device__ __forceinline__ float gemv_pass(const GemvArgs &g, int j, int r0, int part, int lane,
                                           typename Chunk<T, VEC>::Raw (&wr)[UNROLL]) {
    using C = Chunk<T, VEC>;
    constexpr int E = C::E;
    const int nv = g.n_in / E, live = min(MAXR, g.rows - r0);
    const typename C::Raw *w = (const typename C::Raw *)((const T *)g.W + (size_t)j * g.n_in);
    const typename C::Raw *x = (const typename C::Raw *)((const T *)g.in + (size_t)r0 * g.n_in);
    float acc[MAXR] = {};
    const int step = 32 * g.ws;
    for (int v0 = part * 32 + lane; v0 < nv; v0 += step * UNROLL) {
        if (v0 != part * 32 + lane) load_round(w, v0, step, nv, wr);
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const int v = v0 + u * step;
            if (v >= nv) break;
            float wf[E];
            unpack(wr[u], wf);
#pragma unroll
            for (int r = 0; r < MAXR; r++) {
                if (r >= live) break;
                float xf[E];
                unpack(__ldg(x + (size_t)r * nv + v), xf);
#pragma unroll
                for (int e = 0; e < E; e++) acc[r] = fmaf(wf[e], xf[e], acc[r]);
            }
        }
    }
    float mine = 0.f;
#pragma unroll
    for (int r = 0; r < MAXR; r++) {
        float v = acc[r];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == r) mine = v;
    }
    return mine;
}

template <typename T, int MAXR, bool VEC>
__global__ void __launch_bounds__(GEMV_BLOCK) gemv_kernel(const GemvArgs g) {
    using C = Chunk<T, VEC>;
    __shared__ float parts[GEMV_WARPS][MAXR]; /* the ws partial sums of a feature */
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, part = warp % g.ws;
    const int j = blockIdx.x * (GEMV_WARPS / g.ws) + warp / g.ws;
    const bool live = j < g.n_out;
    pdl_launch_dependents();
    /* the weight row does not depend on the previous kernel: load this
     * warp's first round of it while that kernel finishes, and ask L2 for
     * the rest */
    const T *row = (const T *)g.W + (size_t)j * g.n_in;
    typename C::Raw wr[UNROLL];
    if (live) {
        load_round((const typename C::Raw *)row, part * 32 + lane, 32 * g.ws, g.n_in / C::E, wr);
        const char *w = (const char *)row;
        const size_t bytes = (size_t)g.n_in * sizeof(T);
        for (size_t o = (size_t)g.ws * 32 * UNROLL * 16 + (size_t)(part * 32 + lane) * 128; o < bytes;
             o += (size_t)g.ws * 32 * 128)
            asm volatile("prefetch.global.L2 [%0];" ::"l"(w + o));
    }
    pdl_wait();
    for (int r0 = 0; r0 < g.rows; r0 += MAXR) {
        if (live && r0) /* a further pass over the inputs reads the row again */
            load_round((const typename C::Raw *)row, part * 32 + lane, 32 * g.ws, g.n_in / C::E, wr);
        float v = live ? gemv_pass<T, MAXR, VEC>(g, j, r0, part, lane, wr) : 0.f;
        if (g.ws > 1) { /* uniform across the block: every thread reaches both barriers */
            if (lane < MAXR) parts[warp][lane] = v;
            __syncthreads();
            v = 0.f;
            for (int q = 0; q < g.ws && lane < MAXR; q++) v += parts[warp - part + q][lane];
            __syncthreads();
        }
        if (!live || part != 0 || lane >= min(MAXR, g.rows - r0)) continue;
        const size_t i = (size_t)(r0 + lane) * g.n_out + j;
        if (g.out_f32) {
            float *o = (float *)g.out;
            o[i] = g.accumulate ? o[i] + v : v;
        } else {
            T *o = (T *)g.out;
            o[i] = from_f<T>(g.accumulate ? to_f(o[i]) + v : v);
        }
    }
}

template <typename T, int MAXR>
cudaError_t launch(GemvArgs g, cudaStream_t stream) {
    /* 16-byte loads need every row of W and of in to start on 16 bytes */
    const bool vec = (g.n_in * sizeof(T)) % 16 == 0 && (uintptr_t)g.W % 16 == 0 &&
                     (uintptr_t)g.in % 16 == 0;
    /* a warp's loads of a row in one round (UNROLL a lane): long rows get
     * more warps, which also fills the device when the outputs are few */
    const int per_warp = 32 * UNROLL * (vec ? 16 / (int)sizeof(T) : 1);
    g.ws = 1;
    while (g.ws < GEMV_WARPS && g.ws * per_warp < g.n_in) g.ws *= 2;
    const dim3 grid((g.n_out + GEMV_WARPS / g.ws - 1) / (GEMV_WARPS / g.ws));
    if (vec) return launch_pdl(gemv_kernel<T, MAXR, true>, grid, GEMV_BLOCK, 0, stream, g);
    return launch_pdl(gemv_kernel<T, MAXR, false>, grid, GEMV_BLOCK, 0, stream, g);
}

} // namespace
} // namespace cm

extern "C" int cm_cuda_gemv(void *out, int out_f32, int accumulate, const void *in, const void *W,
                            int rows, int n_in, int n_out, cm_cuda_dtype dt, cudaStream_t stream) {
    using namespace cm;
    if (rows < 1 || n_in < 1 || n_out < 1) return (int)cudaErrorInvalidValue;
    const GemvArgs g = {out, in, W, rows, n_in, n_out, 1, out_f32 != 0, accumulate != 0};
    /* the fewest registers that hold the sums of one pass */
    return (int)with_type(dt, [&](auto t) {
        using T = decltype(t);
        if (rows == 1) return launch<T, 1>(g, stream);
        if (rows == 2) return launch<T, 2>(g, stream);
        if (rows <= 4) return launch<T, 4>(g, stream);
        return launch<T, CM_CUDA_GEMV_ROWS>(g, stream);
    });
}
