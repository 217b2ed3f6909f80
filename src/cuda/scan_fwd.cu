/* Forward selective scan on the GPU (cuda_scan.h).
 *
 * A block owns CB channels of one sequence and walks the sequence in tiles
 * of TF = 32 steps. Thread (c, g) carries states g·G .. g·G+G−1 of channel
 * c in registers from the first step to the last, so the block needs no
 * scan across threads: the time dependency stays inside one thread, and
 * the parallelism comes from batch × d_inner × N/G threads. A tile:
 *   P  delta and u (staged in shared memory by cp.async during the previous
 *      tile) become Δ = softplus(delta + bias) and Δ·u, once per (channel,
 *      step) for the S groups of the channel; the tile's B and C (staged
 *      likewise) become fp32 in the order the scan reads them;
 *   S  the recurrence: per state and step one FMUL, one MUFU.EX2, one FMUL
 *      and two FFMA; a group's B and C of a step are one load; each group
 *      writes its partial Σ h·C;
 *   E  the groups' partials, D·u and silu(z) make out.
 * P and E work on items of IS consecutive steps of one channel: 4 at G = 4,
 * 2 below (each the faster at its shapes: batch 8 × 1536 channels 227 µs
 * against 240, batch 1 × 5120 channels 4.18 ms against 4.39). Running E
 * with the next tile's P, one barrier fewer, measured no faster.
 * Three barriers a tile; four to six blocks per SM (35-45 KB of shared
 * memory each) keep some block in its MUFU-bound scan while others are in
 * the ALU-bound P or E. G, the states per thread, is the largest that
 * still gives every SM two blocks: 4 at batch 8 × d_inner 1536, 2 at
 * batch 1 × 5120.
 */
#include "cuda/scan_common.cuh"

namespace cm {
namespace {

constexpr int FWD_BLOCK = 128, TF = 32;

struct FwdArgs {
    const void *u, *delta, *z, *B, *C;
    const float *A, *Dskip, *bias, *h0;
    void *out;
    float *x, *h_last;
    int L, D, N, S, CB, n_ck, softplus, vec;
};

__host__ __device__ constexpr int fwd_cb(int S) { return FWD_BLOCK / S < 32 ? FWD_BLOCK / S : 32; }

/* shared memory: see the carve in the kernel */
template <typename T> size_t fwd_smem(int S, int CB, int G, int N) {
    const size_t floats = (2 + S) * CB * TF + TF * (2 * S * G + 4) + ((2 * CB + 3) & ~3);
    return floats * sizeof(float) + 2 * (3 * (size_t)CB + 2 * N) * TF * sizeof(T);
}

/* The recurrence over one tile for thread (c, g): G states in h, partial
 * outputs Σ h·C into y. The shared-memory loads of a group of 4 steps are
 * issued before the previous group computes (the stores to y between them
 * would otherwise keep the compiler from hoisting them), so their latency
 * overlaps the exponentials. */
template <int G>
__device__ __forceinline__ void scan_tile(const float *__restrict__ dl, const float *__restrict__ du,
                                          const float *__restrict__ bcs, float *__restrict__ y,
                                          float (&h)[G], const float (&A2)[G], int c, int S2G,
                                          float *__restrict__ xrow, int ck0, int n_ck, int N, int D,
                                          int g) {
    float4 d4 = lds4(dl + swz<TF>(c, 0)), w4 = lds4(du + swz<TF>(c, 0));
    float bcn[4][2 * G];
#pragma unroll
    for (int e = 0; e < 4; e++) lds<2 * G>(bcn[e], bcs + e * S2G);
#pragma unroll
    for (int q = 0; q < TF / 4; q++) {
        const float dv[4] = {d4.x, d4.y, d4.z, d4.w}, wv[4] = {w4.x, w4.y, w4.z, w4.w};
        float bq[4][2 * G];
#pragma unroll
        for (int e = 0; e < 4; e++)
#pragma unroll
            for (int v = 0; v < 2 * G; v++) bq[e][v] = bcn[e][v];
        if (q + 1 < TF / 4) {
            d4 = lds4(dl + swz<TF>(c, 4 * q + 4)), w4 = lds4(du + swz<TF>(c, 4 * q + 4));
#pragma unroll
            for (int e = 0; e < 4; e++) lds<2 * G>(bcn[e], bcs + (4 * q + 4 + e) * S2G);
        }
        float yv[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float *bc = bq[e];
            float acc = 0.f;
#pragma unroll
            for (int j = 0; j < G; j++) {
                const float a = ex2(dv[e] * A2[j]);
                h[j] = fmaf(a, h[j], bc[j] * wv[e]);
                acc = fmaf(h[j], bc[G + j], acc);
            }
            yv[e] = acc;
        }
        sts4(y + swz<TF>(c, 4 * q), yv[0], yv[1], yv[2], yv[3]);
        if ((q & 3) == 3 && xrow && ck0 + q / 4 < n_ck) {
#pragma unroll
            for (int j = 0; j < G; j++)
                if (g * G + j < N) xrow[((size_t)(ck0 + q / 4) * N + g * G + j) * D] = h[j];
        }
    }
}

/* SC: the number of groups S when known at compile time (N = 16): loops
 * over groups unroll, and each thread's share of the copies, of P and of E
 * is fixed, so its addresses are worked out once, before the first tile.
 * 0 for any other N: the same work in plain loops. */
template <typename T, int G, int SC>
__global__ void __launch_bounds__(FWD_BLOCK) scan_fwd_kernel(const FwdArgs p) {
    constexpr int V = 16 / sizeof(T), CPR = TF / V; /* elements per 16-byte copy, copies per row */
    constexpr int CBc = SC ? fwd_cb(SC) : 1;
    constexpr int IS = G >= 4 ? 4 : 2;                           /* steps per P or E item */
    constexpr int NIT = SC ? CBc * TF / IS : 0;                  /* P and E items a tile */
    constexpr int NI = (NIT + FWD_BLOCK - 1) / FWD_BLOCK;        /* ... per thread */
    constexpr int NR = SC ? (3 * CBc * CPR + FWD_BLOCK - 1) / FWD_BLOCK : 0; /* raw copies per thread */
    constexpr int NB = SC ? TF * SC / FWD_BLOCK : 0;             /* B, C conversions per thread */
    const int S = SC ? SC : p.S, CB = SC ? CBc : p.CB, S2G = 2 * S * G, BCP = S2G + 4;
    const int N = p.N, L = p.L;
    const int tid = threadIdx.x, c = tid % CB, g = tid / CB;
    const int nthr = SC ? FWD_BLOCK : blockDim.x; /* S·CB: FWD_BLOCK when SC */
    const int c0 = blockIdx.x * CB, b = blockIdx.y, nvalid = min(CB, p.D - c0);

    extern __shared__ float4 smem4[];
    float *sDelta = reinterpret_cast<float *>(smem4); /* [CB][TF] swizzled: Δ             */
    float *sDu = sDelta + CB * TF;                    /* [CB][TF] swizzled: Δ·u           */
    float *sY = sDu + CB * TF;                        /* [S][CB][TF] swizzled: Σ_group h·C */
    float *sBC = sY + S * CB * TF;                    /* [TF][BCP]: B, C of the tile      */
    float *sBias = sBC + TF * BCP, *sDk = sBias + CB;
    /* [2][3·CB + 2·N][TF]: delta, u, z, then B and C of the tile, as they are */
    T *raw = reinterpret_cast<T *>(sBias + ((2 * CB + 3) & ~3));
    const int RAWB = (3 * CB + 2 * N) * TF;

    const size_t row0 = ((size_t)b * p.D + c0) * L;
    const T *gD = (const T *)p.delta + row0, *gU = (const T *)p.u + row0;
    const T *gZ = p.z ? (const T *)p.z + row0 : nullptr;
    const T *gB = (const T *)p.B + (size_t)b * N * L, *gC = (const T *)p.C + (size_t)b * N * L;
    T *gOut = (T *)p.out + row0;
    const int ntiles = (L + TF - 1) / TF, nt = gZ ? 3 : 2;

    /* copies of a full, aligned tile: request i is tensor i / (CB·CPR),
     * row i / CPR % CB, 16-byte chunk i % CPR; a thread's are fixed */
    int req[NR > 0 ? NR : 1];
#pragma unroll
    for (int m = 0; m < NR; m++) {
        const int i = tid + m * FWD_BLOCK;
        req[m] = i / (CB * CPR) < nt ? i : -1;
    }
    auto copy_raw = [&](int i, int t0, T *r) {
        const int ten = i / (CB * CPR), row = i / CPR % CB, ch = i % CPR;
        const T *src = (ten == 0 ? gD : ten == 1 ? gU : gZ) + (size_t)row * L + t0 + ch * V;
        cp_async16(r + (ten * CB + row) * TF + ch * V, row < nvalid ? src : gD, row < nvalid ? 16 : 0);
    };
    auto stage = [&](int k) {
        const int t0 = k * TF;
        T *r = raw + (k & 1) * RAWB, *rb = r + 3 * CB * TF;
        if (p.vec && t0 + TF <= L) {
            if constexpr (NR > 0) {
#pragma unroll
                for (int m = 0; m < NR; m++)
                    if (req[m] >= 0) copy_raw(req[m], t0, r);
            } else {
                for (int i = tid; i < nt * CB * CPR; i += nthr) copy_raw(i, t0, r);
            }
            /* B's N rows then C's */
            for (int i = tid; i < 2 * N * CPR; i += nthr) {
                const int row = i / CPR, ch = i % CPR;
                const T *src = (row < N ? gB + (size_t)row * L : gC + (size_t)(row - N) * L) + t0 + ch * V;
                cp_async16(rb + row * TF + ch * V, src, 16);
            }
        } else { /* the last tile, or rows not 16-byte aligned */
            stage_rows<T, TF>(r, gD, CB, nvalid, t0, L, p.vec);
            stage_rows<T, TF>(r + CB * TF, gU, CB, nvalid, t0, L, p.vec);
            if (gZ) stage_rows<T, TF>(r + 2 * CB * TF, gZ, CB, nvalid, t0, L, p.vec);
            stage_rows<T, TF>(rb, gB, N, N, t0, L, p.vec);
            stage_rows<T, TF>(rb + N * TF, gC, N, N, t0, L, p.vec);
        }
        cp_async_commit();
    };

    float A2[G], h[G];
    /* this thread's states in h0 and h_last: + n */
    const size_t hrow = ((size_t)b * p.D + c0 + c) * N;
#pragma unroll
    for (int j = 0; j < G; j++) {
        const int n = g * G + j;
        const bool live = c < nvalid && n < N;
        A2[j] = live ? p.A[(size_t)(c0 + c) * N + n] * LOG2E : 0.f;
        h[j] = live && p.h0 ? p.h0[hrow + n] : 0.f;
    }
    /* this thread's states in x: + (ck·N + n)·D */
    float *xrow = p.x && c < nvalid ? p.x + (size_t)b * p.n_ck * N * p.D + c0 + c : nullptr;
    for (int i = tid; i < CB; i += nthr) {
        sBias[i] = i < nvalid && p.bias ? p.bias[c0 + i] : 0.f;
        sDk[i] = i < nvalid && p.Dskip ? p.Dskip[c0 + i] : 0.f;
    }

    /* P of item i (IS steps of one channel) of tile k */
    auto prepare = [&](int i, int k) {
        const int row = i / (TF / IS), j = i % (TF / IS) * IS, o = row * TF + j, t = k * TF + j;
        const T *rD = raw + (k & 1) * RAWB, *rU = rD + CB * TF;
        float d[IS], u[IS];
        ldr<IS>(d, rD + o), ldr<IS>(u, rU + o);
#pragma unroll
        for (int e = 0; e < IS; e++) {
            d[e] += sBias[row];
            if (p.softplus) d[e] = softplus(d[e]);
            /* past L (and in absent channels) Δ = 0: exp(0) = 1 and no
             * input, so the state passes through unchanged */
            if (row >= nvalid || t + e >= L) d[e] = 0.f;
            u[e] *= d[e];
        }
        sts<IS>(sDelta + swz<TF>(row, j), d);
        sts<IS>(sDu + swz<TF>(row, j), u);
    };
    /* B, C of step t and group gg (item i) of tile k into sBC as fp32, in
     * the order the scan reads them: the group's G B's, then its G C's,
     * zero past N. Consecutive lanes take consecutive steps: their reads of
     * a row are contiguous, and BCP = S2G + 4 keeps their writes on
     * distinct banks. */
    auto convert_bc = [&](int i, int k) {
        const int t = i % TF, gg = i / TF;
        const T *rb = raw + (k & 1) * RAWB + 3 * CB * TF + t;
        float v[2 * G];
#pragma unroll
        for (int j = 0; j < G; j++) {
            const int n = gg * G + j;
            v[j] = n < N ? to_f(rb[n * TF]) : 0.f;
            v[G + j] = n < N ? to_f(rb[(N + n) * TF]) : 0.f;
        }
        sts<2 * G>(sBC + t * BCP + gg * 2 * G, v);
    };
    /* E of item i of tile k */
    auto finish = [&](int i, int k) {
        const int row = i / (TF / IS), j = i % (TF / IS) * IS, o = row * TF + j, t = k * TF + j;
        if (row >= nvalid || t >= L) return;
        const T *rU = raw + (k & 1) * RAWB + CB * TF, *rZ = rU + CB * TF;
        float y[IS], u[IS];
        lds<IS>(y, sY + swz<TF>(row, j));
#pragma unroll
        for (int s2 = 1; s2 < S; s2++) {
            float v[IS];
            lds<IS>(v, sY + s2 * CB * TF + swz<TF>(row, j));
#pragma unroll
            for (int e = 0; e < IS; e++) y[e] += v[e];
        }
        ldr<IS>(u, rU + o);
#pragma unroll
        for (int e = 0; e < IS; e++) y[e] = fmaf(sDk[row], u[e], y[e]);
        if (gZ) {
            float z[IS];
            ldr<IS>(z, rZ + o);
#pragma unroll
            for (int e = 0; e < IS; e++) y[e] *= z[e] * sigmoid(z[e]);
        }
        T *dst = gOut + (size_t)row * L + t;
        if (p.vec && t + IS <= L) {
            str<IS>(dst, y);
        } else {
#pragma unroll
            for (int e = 0; e < IS; e++)
                if (t + e < L) dst[e] = from_f<T>(y[e]);
        }
    };
    stage(0);
    for (int k = 0; k < ntiles; k++) {
        const int t0 = k * TF;
        cp_async_wait<0>();
        __syncthreads();
        if constexpr (NIT > 0) {
#pragma unroll
            for (int m = 0; m < NI; m++)
                if (NI * FWD_BLOCK == NIT || tid + m * FWD_BLOCK < NIT) prepare(tid + m * FWD_BLOCK, k);
#pragma unroll
            for (int m = 0; m < NB; m++) convert_bc(tid + m * FWD_BLOCK, k);
        } else {
            for (int i = tid; i < CB * TF / IS; i += nthr) prepare(i, k);
            for (int i = tid; i < TF * S; i += nthr) convert_bc(i, k);
        }
        __syncthreads();
        if (k + 1 < ntiles) stage(k + 1); /* lands during S and E */

        scan_tile<G>(sDelta, sDu, sBC + g * 2 * G, sY + g * CB * TF, h, A2, c, BCP, xrow,
                     t0 / CKPT, p.n_ck, N, p.D, g);
        __syncthreads();

        if constexpr (NIT > 0) {
#pragma unroll
            for (int m = 0; m < NI; m++)
                if (NI * FWD_BLOCK == NIT || tid + m * FWD_BLOCK < NIT) finish(tid + m * FWD_BLOCK, k);
        } else {
            for (int i = tid; i < CB * TF / IS; i += nthr) finish(i, k);
        }
    }
    /* past L, Δ = 0 left the states unchanged: h is the state after step L − 1 */
    if (p.h_last && c < nvalid) {
#pragma unroll
        for (int j = 0; j < G; j++)
            if (g * G + j < N) p.h_last[hrow + g * G + j] = h[j];
    }
}

template <typename T, int G, int SC>
cudaError_t launch(const FwdArgs &a, const Geometry &geo, int batch, cudaStream_t stream) {
    const size_t smem = fwd_smem<T>(geo.S, geo.CB, G, a.N);
    auto kern = scan_fwd_kernel<T, G, SC>;
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    const dim3 grid((a.D + geo.CB - 1) / geo.CB, batch);
    kern<<<grid, geo.threads, smem, stream>>>(a);
    return cudaGetLastError();
}

template <typename T>
cudaError_t dispatch_g(const FwdArgs &a, const Geometry &geo, int batch, cudaStream_t s) {
    const bool n16 = geo.S * geo.G == 16;
    switch (geo.G) {
    case 1: return n16 ? launch<T, 1, 16>(a, geo, batch, s) : launch<T, 1, 0>(a, geo, batch, s);
    case 2: return n16 ? launch<T, 2, 8>(a, geo, batch, s) : launch<T, 2, 0>(a, geo, batch, s);
    default: return n16 ? launch<T, 4, 4>(a, geo, batch, s) : launch<T, 4, 0>(a, geo, batch, s);
    }
}

/* More states per thread cost fewer per-step loads and partial sums and
 * give each thread more independent work, fewer give more threads: take
 * the largest G that still gives every SM two blocks. */
int choose_g(const cm_cuda_scan_params *p) {
    if (p->states_per_thread) return p->states_per_thread;
    const long want = 2L * sm_count();
    for (int G = 4; G > 1; G /= 2) {
        if (G > p->N) continue;
        const Geometry geo = geometry(p->N, G, FWD_BLOCK, 32);
        if ((long)p->batch * ((p->D + geo.CB - 1) / geo.CB) >= want) return G;
    }
    return 1;
}

} // namespace
} // namespace cm

using namespace cm;

extern "C" size_t cm_cuda_scan_x_size(const cm_cuda_scan_params *p) {
    return (size_t)p->batch * p->D * ((p->L + CKPT - 1) / CKPT) * p->N;
}

extern "C" int cm_cuda_scan_fwd(const cm_cuda_scan_params *p, cudaStream_t stream) {
    if (p->batch < 1 || p->L < 1 || p->D < 1 || p->N < 1 || p->N > 64 || !p->u || !p->delta ||
        !p->A || !p->B || !p->C || !p->out)
        return cudaErrorInvalidValue;
    const int G = choose_g(p);
    if (G != 1 && G != 2 && G != 4) return cudaErrorInvalidValue;
    const Geometry geo = geometry(p->N, G, FWD_BLOCK, 32);
    if (geo.threads > FWD_BLOCK) return cudaErrorInvalidValue;

    FwdArgs a;
    a.u = p->u, a.delta = p->delta, a.z = p->z, a.B = p->B, a.C = p->C;
    a.A = p->A, a.Dskip = p->D_skip, a.bias = p->delta_bias, a.out = p->out, a.x = p->x;
    a.h0 = p->h0, a.h_last = p->h_last;
    a.L = p->L, a.D = p->D, a.N = p->N, a.S = geo.S, a.CB = geo.CB;
    a.n_ck = (p->L + CKPT - 1) / CKPT;
    a.softplus = p->delta_softplus;
    a.vec = p->L % 8 == 0 && aligned16(p->u) && aligned16(p->delta) && aligned16(p->z) &&
            aligned16(p->B) && aligned16(p->C) && aligned16(p->out);
    return p->dtype == CM_CUDA_BF16 ? dispatch_g<__nv_bfloat16>(a, geo, p->batch, stream)
                                    : dispatch_g<float>(a, geo, p->batch, stream);
}
