/* Backward selective scan on the GPU (cuda_scan.h). Per channel c and state
 * n, with a_t = exp(Δ_t·A), ds_t = dout_t·silu(z_t):
 *   dh_t = ds_t·C_t + a_{t+1}·dh_{t+1}         (reverse recurrence, dh_L = 0)
 *   du_t = ds_t·D + Δ_t·Σ_n dh_t·B_t          dΔ_t = Σ_n A·dh_t·a_t·h_{t−1} + u_t·Σ_n dh_t·B_t
 *   dA  += Δ_t·dh_t·a_t·h_{t−1}               dB_t += dh_t·Δ_t·u_t     dC_t += ds_t·h_t
 *   dz_t = dout_t·(Σ_n h_t·C_t + D·u_t)·silu'(z_t)                    dD  += ds_t·u_t
 * then dΔ goes through softplus (× sigmoid) to delta and delta_bias.
 *
 * The thread layout is the forward's (thread = channel × group of G
 * states) and a block of 256 threads (two per SM: 128 registers each, half
 * the shared memory each) walks its time range backwards in tiles of CKPT
 * steps. A tile starts from the state the forward saved (x) and recomputes
 * its CKPT states into registers (CKPT·G of them), then runs the reverse
 * recurrence over them; dh is carried in registers from tile to tile.
 * Nothing per step and state ever reaches memory.
 *
 * Reductions: Σ_n partials (du, dΔ, dz) over the S groups of a channel go
 * through shared memory; dB and dC, sums over channels, are summed over
 * the block's channels in shared memory, then added with one float atomic
 * per (block, step, state) into a (batch, L, N) scratch that a last kernel
 * adds, transposed, to dB and dC; dA, dD, ddelta_bias: one atomic per block
 * and channel. So the last bits of dA, dB, dC, dD and ddelta_bias depend on
 * the order in which blocks finish; du, ddelta and dz are deterministic.
 *
 * Time segments: a long sequence of few channels has too few threads to
 * fill the GPU, so the time axis is cut into segments run by separate
 * blocks. The carry of dh into each segment is found first by a light pass
 * (the same kernel, PRE) that runs the reverse recurrence of every segment
 * but the first with no carry in, giving ℓ_s (its carry out) and
 * Λ_s = Π a_t; carry_s = ℓ_{s+1} + Λ_{s+1}·carry_{s+1} then chains them.
 *
 * What bounds it (ncu, H100, batch 8 × L 2048 × d_inner 1536): shared-memory
 * bandwidth. About 38 instructions per (step, channel, state) issue at 54%
 * of peak while each warp moves ~360 wavefronts of shared memory a tile:
 * Δ, Δu, ds reloaded by every group, the dB, dC terms and the groups'
 * partials written and read back (bench/cuda_scan_notes.md).
 */
#include "cuda/scan_common.cuh"

namespace cm {
namespace {

constexpr int BWD_BLOCK = 256;
constexpr int TB = CKPT;   /* steps per tile: a tile starts at a saved state */
constexpr int HB = TB / 2; /* steps per round of reductions */

/* B and C, shared by every channel, in the layout the scan threads read:
 * fp32, (batch, Lp, S, 2G), per step and group the group's G B's then its
 * G C's, zero past N and past L (Lp: L rounded up to BC_TILE). Made once per
 * call into the workspace, so that no block converts or transposes B and C
 * itself: a tile of it is one contiguous run that cp.async copies as is. */
constexpr int BC_TILE = 32;
inline int bc_len(int L) { return (L + BC_TILE - 1) / BC_TILE * BC_TILE; }
inline size_t bc_floats(int batch, int L, const Geometry &geo) {
    return (size_t)batch * bc_len(L) * 2 * geo.S * geo.G;
}
template <typename T>
__global__ void interleave_bc(float *dst, const T *B, const T *C, int L, int Lp, int N, int S,
                              int G, long count) {
    const long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= count) return;
    const int NP = S * G, t = (int)(i % Lp), n = (int)(i / Lp % NP);
    const long b = i / ((long)Lp * NP);
    const bool ok = n < N && t < L;
    const size_t src = ((size_t)b * N + n) * L + t;
    float *d = dst + ((size_t)b * Lp + t) * 2 * NP + (n / G) * 2 * G + n % G;
    d[0] = ok ? to_f(B[src]) : 0.f;
    d[G] = ok ? to_f(C[src]) : 0.f;
}
inline cudaError_t make_bc(float *dst, const cm_cuda_scan_params *p, const Geometry &geo,
                           cudaStream_t stream) {
    const int Lp = bc_len(p->L);
    const long count = (long)p->batch * geo.S * geo.G * Lp;
    const unsigned blocks = (unsigned)((count + 255) / 256);
    if (p->dtype == CM_CUDA_BF16)
        interleave_bc<<<blocks, 256, 0, stream>>>(dst, (const __nv_bfloat16 *)p->B,
                                                  (const __nv_bfloat16 *)p->C, p->L, Lp, p->N,
                                                  geo.S, geo.G, count);
    else
        interleave_bc<<<blocks, 256, 0, stream>>>(dst, (const float *)p->B, (const float *)p->C,
                                                  p->L, Lp, p->N, geo.S, geo.G, count);
    return cudaGetLastError();
}

struct BwdArgs {
    const void *u, *delta, *z, *dout;
    const float *A, *Dskip, *bias, *x, *bcx;
    void *du, *ddelta, *dz;
    float *dA, *dD, *dbias;
    float *dBt, *dCt; /* (batch, L, N) */
    float *seg;       /* (batch, D, nseg, N, 2): ℓ, Λ */
    const float *carry; /* (batch, D, nseg, N) */
    int L, Lp, D, N, S, CB, n_ck, softplus, vec, nseg, tps;
};

__host__ __device__ constexpr int bwd_cb(int S) { return BWD_BLOCK / S < 32 ? BWD_BLOCK / S : 32; }

/* shared memory: see the carve in the kernel */
template <typename T> size_t bwd_smem(int S, int CB, int G) {
    const size_t floats = 5 * CB * TB + 2 * TB * 2 * S * G + 3 * S * CB * TB +
                          HB * S * (2 * G * CB + 4) + ((4 * CB + 3) & ~3);
    return floats * sizeof(float) + 2 * 4 * (size_t)CB * TB * sizeof(T);
}

/* SC: the number of groups S when known at compile time (N = 16), as in
 * the forward: loops over groups unroll and each thread's share of the
 * copies and of P is fixed. PRE: the light pass for segment carries. */
template <typename T, int G, int SC, bool PRE>
__global__ void __launch_bounds__(BWD_BLOCK, 2) scan_bwd_kernel(const BwdArgs p) {
    constexpr int V = 16 / sizeof(T), CPR = TB / V; /* elements per 16-byte copy, copies per row */
    constexpr int CBc = SC ? bwd_cb(SC) : 1;
    constexpr int NRQ = SC ? (4 * CBc * CPR + BWD_BLOCK - 1) / BWD_BLOCK : 0; /* copies per thread */
    constexpr int NP = SC ? (CBc * TB / 2 + BWD_BLOCK - 1) / BWD_BLOCK : 0;   /* P items per thread */
    const int S = SC ? SC : p.S, CB = SC ? CBc : p.CB, S2G = 2 * S * G, RS = 2 * G * CB + 4;
    const int N = p.N, L = p.L;
    const int tid = threadIdx.x, c = tid % CB, g = tid / CB;
    const bool active = g < S; /* the block is rounded up to whole warps */
    const int nthr = SC ? BWD_BLOCK : blockDim.x; /* BWD_BLOCK when SC */
    const int c0 = blockIdx.x * CB, b = blockIdx.z, nvalid = min(CB, p.D - c0);
    const int seg = blockIdx.y + (PRE ? 1 : 0);
    const int k_first = seg * p.tps, k_last = min((L + TB - 1) / TB, k_first + p.tps) - 1;

    extern __shared__ float4 smem4[];
    /* (channel, step) arrays [CB][TB] are swizzled (swz): float4 accesses by
     * a warp's 32 channels at one step are free of bank conflicts */
    float *sDelta = reinterpret_cast<float *>(smem4); /* [CB][TB] Δ                  */
    float *sDu = sDelta + CB * TB;                    /* [CB][TB] Δ·u                */
    float *sDs = sDu + CB * TB;                       /* [CB][TB] ds = dout·silu(z)  */
    float *sXg = sDs + CB * TB;                       /* [CB][TB] ∂Δ/∂delta = softplus' */
    float *sZg = sXg + CB * TB;                       /* [CB][TB] dout·silu'(z)      */
    float *sBC = sZg + CB * TB;                       /* [2][TB][S2G] B, C of the tile */
    float *sS = sBC + 2 * TB * S2G;                   /* [S][CB][TB] Σ_group h·C     */
    float *sP1 = sS + S * CB * TB;                    /* [S][CB][TB] Σ_group dh·B    */
    float *sP2 = sP1 + S * CB * TB;                   /* [S][CB][TB] Σ_group A·log2e·dh·a·h_{t−1} */
    float *sRed = sP2 + S * CB * TB;                  /* [HB][S][RS] per channel: G dB, G dC terms */
    float *sAcc = sRed + HB * S * RS;                 /* [CB][2] Σ_t ds·u, Σ_t ddelta */
    float *sBias = sAcc + 2 * CB, *sDk = sBias + CB;  /* [CB] each */
    T *raw = reinterpret_cast<T *>(sAcc + ((4 * CB + 3) & ~3)); /* [2][4][CB][TB]: delta, u, z, dout */
    const int RAW = 4 * CB * TB;

    const size_t row0 = ((size_t)b * p.D + c0) * L;
    const T *gD = (const T *)p.delta + row0, *gU = (const T *)p.u + row0;
    const T *gO = (const T *)p.dout + row0, *gZ = p.z ? (const T *)p.z + row0 : nullptr;
    const float *gBC = p.bcx + (size_t)b * p.Lp * S2G;

    /* the tensors a pass reads: delta and dout always, u but in PRE, z if any */
    auto wanted = [&](int ten) { return ten == 0 || ten == 3 || (ten == 1 && !PRE) || (ten == 2 && gZ); };
    int req[NRQ > 0 ? NRQ : 1]; /* this thread's copies of a full tile (-1: none) */
#pragma unroll
    for (int m = 0; m < NRQ; m++) {
        const int i = tid + m * BWD_BLOCK;
        req[m] = i < 4 * CB * CPR && wanted(i / (CB * CPR)) ? i : -1;
    }
    auto copy_raw = [&](int i, int t0, T *r) {
        const int ten = i / (CB * CPR), row = i / CPR % CB, ch = i % CPR;
        const T *src = (ten == 0 ? gD : ten == 1 ? gU : ten == 2 ? gZ : gO) + (size_t)row * L + t0 + ch * V;
        cp_async16(r + (ten * CB + row) * TB + ch * V, row < nvalid ? src : gD, row < nvalid ? 16 : 0);
    };
    auto stage = [&](int k, int buf) {
        const int t0 = k * TB;
        T *r = raw + buf * RAW;
        if (p.vec && t0 + TB <= L) {
            if constexpr (NRQ > 0) {
#pragma unroll
                for (int m = 0; m < NRQ; m++)
                    if (req[m] >= 0) copy_raw(req[m], t0, r);
            } else {
                for (int i = tid; i < 4 * CB * CPR; i += nthr)
                    if (wanted(i / (CB * CPR))) copy_raw(i, t0, r);
            }
        } else { /* the last tile, or rows not 16-byte aligned */
            stage_rows<T, TB>(r, gD, CB, nvalid, t0, L, p.vec);
            if (!PRE) stage_rows<T, TB>(r + CB * TB, gU, CB, nvalid, t0, L, p.vec);
            if (gZ) stage_rows<T, TB>(r + 2 * CB * TB, gZ, CB, nvalid, t0, L, p.vec);
            stage_rows<T, TB>(r + 3 * CB * TB, gO, CB, nvalid, t0, L, p.vec);
        }
        float *bc = sBC + buf * TB * S2G;
        const float *src = gBC + (size_t)t0 * S2G;
        for (int i = tid; i < TB * S2G / 4; i += nthr) cp_async16(bc + 4 * i, src + 4 * i, 16);
        cp_async_commit();
    };

    /* P of item i (two steps of one channel) of the tile at t0 */
    auto prepare = [&](int i, int t0, const T *r) {
        const int row = i / (TB / 2), j = i % (TB / 2) * 2, o = row * TB + j, oq = swz<TB>(row, j);
        const float2 dl = ld2(r + o), dy = ld2(r + 3 * CB * TB + o);
        const float x0 = dl.x + sBias[row], x1 = dl.y + sBias[row];
        float d0 = x0, d1 = x1, g0 = 1.f, g1 = 1.f; /* Δ, ∂Δ/∂x */
        if (p.softplus) {
            float e0, e1;
            d0 = softplus(x0, e0), d1 = softplus(x1, e1);
            if (!PRE) g0 = softplus_grad(x0, e0), g1 = softplus_grad(x1, e1);
        }
        /* a = 1, no input: steps past L (and absent channels) are inert */
        if (row >= nvalid || t0 + j >= L) d0 = 0.f;
        if (row >= nvalid || t0 + j + 1 >= L) d1 = 0.f;
        float s0 = dy.x, s1 = dy.y;
        if (gZ) {
            const float2 z = ld2(r + 2 * CB * TB + o);
            const float z0 = sigmoid(z.x), z1 = sigmoid(z.y);
            s0 *= z.x * z0, s1 *= z.y * z1;
            /* dz = dout·silu'(z)·(y + D·u): all but the last factor */
            if (!PRE)
                st2(sZg + oq, dy.x * z0 * fmaf(z.x, 1.f - z0, 1.f), dy.y * z1 * fmaf(z.y, 1.f - z1, 1.f));
        }
        st2(sDelta + oq, d0, d1);
        st2(sDs + oq, s0, s1);
        if (!PRE) {
            const float2 u = ld2(r + CB * TB + o);
            st2(sDu + oq, d0 * u.x, d1 * u.y);
            st2(sXg + oq, g0, g1);
        }
    };

    float A2[G], carry[G], dA[G], prod[G];
    const size_t chan = (size_t)b * p.D + c0 + c; /* this thread's channel across the batch */
#pragma unroll
    for (int j = 0; j < G; j++) {
        const int n = g * G + j;
        const bool ok = active && c < nvalid && n < N;
        A2[j] = ok ? p.A[(size_t)(c0 + c) * N + n] * LOG2E : 0.f;
        carry[j] = !PRE && ok && seg + 1 < p.nseg ? p.carry[(chan * p.nseg + seg) * N + n] : 0.f;
        dA[j] = 0.f, prod[j] = 1.f;
    }
    for (int i = tid; i < CB; i += nthr) {
        sAcc[2 * i] = sAcc[2 * i + 1] = 0.f;
        sBias[i] = i < nvalid && p.bias ? p.bias[c0 + i] : 0.f;
        sDk[i] = i < nvalid && p.Dskip ? p.Dskip[c0 + i] : 0.f;
    }
    /* the state before tile k, from the forward's checkpoints, loaded a
     * tile ahead so that its latency hides behind a tile's work */
    auto checkpoint = [&](int k, float (&h)[G]) {
#pragma unroll
        for (int j = 0; j < G; j++) {
            const int n = g * G + j;
            h[j] = !PRE && k > 0 && active && c < nvalid && n < N
                       ? p.x[(((size_t)b * p.n_ck + k - 1) * N + n) * p.D + c0 + c]
                       : 0.f;
        }
    };
    float h0[G], h0next[G];
    checkpoint(k_last, h0next);

    stage(k_last, 0);
    int buf = 0;
    for (int k = k_last; k >= k_first; k--, buf ^= 1) {
        const int t0 = k * TB;
        const T *rawD = raw + buf * RAW, *rawU = rawD + CB * TB;
        const float *bcs = sBC + buf * TB * S2G + g * 2 * G;
#pragma unroll
        for (int j = 0; j < G; j++) h0[j] = h0next[j];
        if (k > k_first) checkpoint(k - 1, h0next);
        cp_async_wait<0>();
        __syncthreads();
        if constexpr (NP > 0) {
#pragma unroll
            for (int m = 0; m < NP; m++)
                if (tid + m * BWD_BLOCK < CB * TB / 2) prepare(tid + m * BWD_BLOCK, t0, rawD);
        } else {
            for (int i = tid; i < CB * TB / 2; i += nthr) prepare(i, t0, rawD);
        }
        __syncthreads();
        if (k > k_first) stage(k - 1, buf ^ 1); /* lands during the work below */

        if constexpr (PRE) {
            if (active) {
#pragma unroll
                for (int q = TB / 4 - 1; q >= 0; q--) {
                    const float4 dl = lds4(sDelta + swz<TB>(c, 4 * q)), ds = lds4(sDs + swz<TB>(c, 4 * q));
                    const float dv[4] = {dl.x, dl.y, dl.z, dl.w}, sv[4] = {ds.x, ds.y, ds.z, ds.w};
#pragma unroll
                    for (int e = 3; e >= 0; e--) {
                        float bc[2 * G];
                        lds<2 * G>(bc, bcs + (4 * q + e) * S2G);
#pragma unroll
                        for (int j = 0; j < G; j++) {
                            const float a = ex2(dv[e] * A2[j]);
                            carry[j] = a * fmaf(sv[e], bc[G + j], carry[j]);
                            prod[j] *= a;
                        }
                    }
                }
            }
            continue;
        }

        /* forward over the tile: its states into registers (the decays
         * are recomputed in the reverse pass: keeping them too would
         * spill at two blocks per SM) */
        float h[TB][G];
        if (active) {
#pragma unroll
            for (int q = 0; q < TB / 4; q++) {
                const float4 dl = lds4(sDelta + swz<TB>(c, 4 * q)), du = lds4(sDu + swz<TB>(c, 4 * q));
                const float dv[4] = {dl.x, dl.y, dl.z, dl.w}, wv[4] = {du.x, du.y, du.z, du.w};
                float sp[4], bq[4][2 * G]; /* a group's B, C loaded ahead of its stores */
#pragma unroll
                for (int e = 0; e < 4; e++) lds<2 * G>(bq[e], bcs + (4 * q + e) * S2G);
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int t = 4 * q + e;
                    const float *bc = bq[e];
                    float acc = 0.f;
#pragma unroll
                    for (int j = 0; j < G; j++) {
                        h[t][j] = fmaf(ex2(dv[e] * A2[j]), t ? h[t - 1][j] : h0[j], bc[j] * wv[e]);
                        acc = fmaf(h[t][j], bc[G + j], acc);
                    }
                    sp[e] = acc;
                }
                sts4(sS + g * CB * TB + swz<TB>(c, 4 * q), sp[0], sp[1], sp[2], sp[3]);
            }
        }

#pragma unroll
        for (int half = 1; half >= 0; half--) {
            if (active) {
#pragma unroll
                for (int qq = 1; qq >= 0; qq--) {
                    const int q = 2 * half + qq;
                    const float4 dl = lds4(sDelta + swz<TB>(c, 4 * q)), du = lds4(sDu + swz<TB>(c, 4 * q)),
                                 ds = lds4(sDs + swz<TB>(c, 4 * q));
                    const float dv[4] = {dl.x, dl.y, dl.z, dl.w}, wv[4] = {du.x, du.y, du.z, du.w},
                                sv[4] = {ds.x, ds.y, ds.z, ds.w};
                    float p1v[4], p2v[4], bq[4][2 * G];
#pragma unroll
                    for (int e = 0; e < 4; e++) lds<2 * G>(bq[e], bcs + (4 * q + e) * S2G);
#pragma unroll
                    for (int e = 3; e >= 0; e--) {
                        const int t = 4 * q + e;
                        const float *bc = bq[e];
                        float red[2 * G], p1 = 0.f, p2 = 0.f;
#pragma unroll
                        for (int j = 0; j < G; j++) {
                            const float at = ex2(dv[e] * A2[j]);
                            const float dh = fmaf(sv[e], bc[G + j], carry[j]);
                            const float qv = dh * (at * (t ? h[t - 1][j] : h0[j]));
                            p1 = fmaf(dh, bc[j], p1);
                            p2 = fmaf(A2[j], qv, p2);
                            dA[j] = fmaf(dv[e], qv, dA[j]);
                            red[j] = dh * wv[e];
                            red[G + j] = sv[e] * h[t][j];
                            carry[j] = at * dh;
                        }
                        sts<2 * G>(sRed + ((t - half * HB) * S + g) * RS + c * 2 * G, red);
                        p1v[e] = p1, p2v[e] = p2;
                    }
                    sts4(sP1 + g * CB * TB + swz<TB>(c, 4 * q), p1v[0], p1v[1], p1v[2], p1v[3]);
                    sts4(sP2 + g * CB * TB + swz<TB>(c, 4 * q), p2v[0], p2v[1], p2v[2], p2v[3]);
                }
            }
            __syncthreads();

            /* dB_t, dC_t over the block's channels: four lanes per (step,
             * group), 8 apart, each sum a quarter of the channels, two
             * shuffles join them, one atomic per output. Each 8 consecutive
             * lanes read 8 (step, group) rows at one channel: distinct banks. */
#pragma unroll
            for (int base = 0; base < HB * S * 4; base += nthr) {
                const int i = base + tid, qt = (i >> 3) & 3, row = (i >> 5) * 8 + (i & 7);
                const int gg = row % S, tt = row / S;
                const bool act = i < HB * S * 4;
                float acc[2 * G];
#pragma unroll
                for (int v = 0; v < 2 * G; v++) acc[v] = 0.f;
                if (act) {
                    /* all CB channels: absent ones contribute exact zeros */
                    const float *src = sRed + (tt * S + gg) * RS;
#pragma unroll
                    for (int cc = qt; cc < CB; cc += 4) {
                        float v2[2 * G];
                        lds<2 * G>(v2, src + cc * 2 * G);
#pragma unroll
                        for (int v = 0; v < 2 * G; v++) acc[v] += v2[v];
                    }
                }
#pragma unroll
                for (int v = 0; v < 2 * G; v++) {
                    acc[v] += __shfl_xor_sync(0xffffffffu, acc[v], 8);
                    acc[v] += __shfl_xor_sync(0xffffffffu, acc[v], 16);
                }
                const int t = t0 + half * HB + tt;
                if (act && qt == 0 && t < L) {
                    float *db = p.dBt + ((size_t)b * L + t) * N + gg * G;
                    float *dc = p.dCt + ((size_t)b * L + t) * N + gg * G;
                    if (G == 2 && (N & 1) == 0) {
                        atomicAdd(reinterpret_cast<float2 *>(db), make_float2(acc[0], acc[1]));
                        atomicAdd(reinterpret_cast<float2 *>(dc), make_float2(acc[G], acc[G + 1]));
                    } else {
#pragma unroll
                        for (int j = 0; j < G; j++) {
                            if (gg * G + j < N) {
                                atomicAdd(db + j, acc[j]);
                                atomicAdd(dc + j, acc[G + j]);
                            }
                        }
                    }
                }
            }

            if (half) __syncthreads(); /* the second half rewrites sRed */
        }

        /* per (channel, step), items of two steps: the groups' partials make
         * du, ddelta, dz. The TB/2 items of a channel are consecutive lanes,
         * which sum their dD and ddelta_bias terms by shuffles. */
#pragma unroll
        for (int base = 0; base < CB * TB / 2; base += nthr) {
            const int i = base + tid, r = i / (TB / 2), j = i % (TB / 2) * 2, t = t0 + j;
            const bool ok = i < CB * TB / 2 && r < nvalid;
            float acc_d = 0.f, acc_b = 0.f;
            if (ok && t < L) {
                const int oq = swz<TB>(r, j);
                const float *q1 = sP1 + oq, *q2 = sP2 + oq, *q3 = sS + oq;
                float2 s1 = ld2(q1), s2 = ld2(q2), s = ld2(q3);
#pragma unroll 8
                for (int gg = 1; gg < S; gg++) {
                    const float2 a1 = ld2(q1 + gg * CB * TB), a2 = ld2(q2 + gg * CB * TB),
                                 a3 = ld2(q3 + gg * CB * TB);
                    s1.x += a1.x, s1.y += a1.y, s2.x += a2.x, s2.y += a2.y, s.x += a3.x, s.y += a3.y;
                }
                const int o = r * TB + j;
                const float2 u = ld2(rawU + o), dt = ld2(sDelta + oq), ds = ld2(sDs + oq),
                             xg = ld2(sXg + oq), zg = gZ ? ld2(sZg + oq) : make_float2(0.f, 0.f);
                const float Dv = sDk[r];
                float du[2], dx[2], dz[2];
                const float uv[2] = {u.x, u.y}, dtv[2] = {dt.x, dt.y}, dsv[2] = {ds.x, ds.y},
                            xgv[2] = {xg.x, xg.y}, zgv[2] = {zg.x, zg.y}, s1v[2] = {s1.x, s1.y},
                            s2v[2] = {s2.x, s2.y}, sv[2] = {s.x, s.y};
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    dx[e] = fmaf(s2v[e], LN2, uv[e] * s1v[e]) * xgv[e]; /* ∂/∂Δ through softplus */
                    du[e] = fmaf(dsv[e], Dv, dtv[e] * s1v[e]);
                    dz[e] = zgv[e] * fmaf(Dv, uv[e], sv[e]);
                }
                const size_t og = row0 + (size_t)r * L + t;
                if (p.vec && t + 1 < L) {
                    st2((T *)p.du + og, du[0], du[1]);
                    st2((T *)p.ddelta + og, dx[0], dx[1]);
                    if (gZ) st2((T *)p.dz + og, dz[0], dz[1]);
                } else {
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        if (t + e >= L) break;
                        ((T *)p.du)[og + e] = from_f<T>(du[e]);
                        ((T *)p.ddelta)[og + e] = from_f<T>(dx[e]);
                        if (gZ) ((T *)p.dz)[og + e] = from_f<T>(dz[e]);
                    }
                }
                acc_d = dsv[0] * uv[0] + (t + 1 < L ? dsv[1] * uv[1] : 0.f);
                acc_b = dx[0] + (t + 1 < L ? dx[1] : 0.f);
            }
#pragma unroll
            for (int m = 1; m < TB / 2; m *= 2) {
                acc_d += __shfl_xor_sync(0xffffffffu, acc_d, m);
                acc_b += __shfl_xor_sync(0xffffffffu, acc_b, m);
            }
            if (ok && j == 0) sAcc[2 * r] += acc_d, sAcc[2 * r + 1] += acc_b;
        }
    }

#pragma unroll
    for (int j = 0; j < G; j++) {
        const int n = g * G + j;
        if (!active || c >= nvalid || n >= N) continue;
        if (PRE) {
            float *o = p.seg + ((chan * p.nseg + seg) * N + n) * 2;
            o[0] = carry[j], o[1] = prod[j];
        } else {
            atomicAdd(p.dA + (size_t)(c0 + c) * N + n, dA[j]);
        }
    }
    if (!PRE) {
        __syncthreads();
        for (int r = tid; r < nvalid; r += nthr) {
            if (p.dD) atomicAdd(p.dD + c0 + r, sAcc[2 * r]);
            if (p.dbias) atomicAdd(p.dbias + c0 + r, sAcc[2 * r + 1]);
        }
    }
}

/* carry_s = ℓ_{s+1} + Λ_{s+1}·carry_{s+1}, carry_{nseg−1} = 0; one thread
 * per (sequence, channel, state) */
__global__ void chain_carries(const float *seg, float *carry, long count, int nseg, int N) {
    const long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= count) return;
    const long bc = i / N;
    const int n = (int)(i % N);
    float cy = 0.f;
    carry[(bc * nseg + nseg - 1) * N + n] = 0.f;
    for (int s = nseg - 2; s >= 0; s--) {
        const float *l = seg + ((bc * nseg + s + 1) * N + n) * 2;
        cy = fmaf(l[1], cy, l[0]);
        carry[(bc * nseg + s) * N + n] = cy;
    }
}

/* dst (batch, N, L) += src (batch, L, N), for dB and dC at once */
__global__ void add_transposed(float *dB, float *dC, const float *sB, const float *sC, int L,
                               int N, long count) {
    const long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= count) return;
    const long t = i % L, n = (i / L) % N, b = i / ((long)L * N);
    const long j = (b * L + t) * N + n;
    dB[i] += sB[j];
    dC[i] += sC[j];
}

struct Plan {
    Geometry geo;
    int nseg, tps;
    size_t scratch_floats, bc_floats, seg_floats; /* the workspace: dB, dC scratch; B, C; carries */
};

/* G = 2 keeps CKPT·G = 32 registers of states per thread. Segments cost a
 * light extra pass over all but the first, so only when one block per
 * channel tile leaves SMs idle (fewer than two per SM): then at least four
 * rounds of two blocks per SM, and as many more segments (up to twice as
 * many) as it takes to fill the last round to 95%. */
Plan make_plan(const cm_cuda_scan_params *p) {
    Plan pl;
    const int G = p->states_per_thread ? p->states_per_thread : (p->N >= 2 ? 2 : 1);
    pl.geo = geometry(p->N, G, BWD_BLOCK, 32);
    pl.geo.threads = (pl.geo.threads + 31) / 32 * 32;
    const int ntiles = (p->L + TB - 1) / TB;
    const long blocks = (long)p->batch * ((p->D + pl.geo.CB - 1) / pl.geo.CB);
    const long sms = sm_count();
    int nseg = p->n_segments;
    if (!nseg && blocks >= 2 * sms) nseg = 1;
    if (!nseg) {
        const int n0 = (int)((8 * sms + blocks - 1) / blocks);
        double best = 0.;
        for (int n = n0; n <= 2 * n0 && best < 0.95; n++) {
            const double rounds = (double)blocks * n / (2 * sms), fill = rounds / ceil(rounds);
            if (fill > best) best = fill, nseg = n;
        }
    }
    nseg = nseg < 1 ? 1 : nseg > ntiles ? ntiles : nseg;
    pl.tps = (ntiles + nseg - 1) / nseg;
    pl.nseg = (ntiles + pl.tps - 1) / pl.tps; /* no empty segment */
    pl.scratch_floats = 2 * (((size_t)p->batch * p->L * p->N + 3) & ~(size_t)3); /* 16-byte aligned halves */
    pl.bc_floats = bc_floats(p->batch, p->L, pl.geo);
    pl.seg_floats = pl.nseg > 1 ? 3 * (size_t)p->batch * p->D * pl.nseg * p->N : 0;
    return pl;
}

template <typename T, int G, int SC, bool PRE>
cudaError_t launch(const BwdArgs &a, const Plan &pl, int batch, cudaStream_t stream) {
    const size_t smem = bwd_smem<T>(pl.geo.S, pl.geo.CB, G);
    auto kern = scan_bwd_kernel<T, G, SC, PRE>;
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    const dim3 grid((a.D + pl.geo.CB - 1) / pl.geo.CB, PRE ? pl.nseg - 1 : pl.nseg, batch);
    kern<<<grid, pl.geo.threads, smem, stream>>>(a);
    return cudaGetLastError();
}

template <typename T, int G, int SC>
cudaError_t run(const BwdArgs &a, const Plan &pl, int batch, cudaStream_t stream) {
    if (pl.nseg > 1) {
        cudaError_t e = launch<T, G, SC, true>(a, pl, batch, stream);
        if (e != cudaSuccess) return e;
        const long count = (long)batch * a.D * a.N;
        chain_carries<<<(unsigned)((count + 255) / 256), 256, 0, stream>>>(
            a.seg, const_cast<float *>(a.carry), count, pl.nseg, a.N);
        if ((e = cudaGetLastError()) != cudaSuccess) return e;
    }
    return launch<T, G, SC, false>(a, pl, batch, stream);
}

template <typename T> cudaError_t dispatch(const BwdArgs &a, const Plan &pl, int batch, cudaStream_t s) {
    const bool n16 = pl.geo.S * pl.geo.G == 16;
    if (pl.geo.G == 1) return n16 ? run<T, 1, 16>(a, pl, batch, s) : run<T, 1, 0>(a, pl, batch, s);
    return n16 ? run<T, 2, 8>(a, pl, batch, s) : run<T, 2, 0>(a, pl, batch, s);
}

} // namespace
} // namespace cm

using namespace cm;

extern "C" size_t cm_cuda_scan_bwd_workspace(const cm_cuda_scan_params *p) {
    const Plan pl = make_plan(p);
    return (pl.scratch_floats + pl.bc_floats + pl.seg_floats) * sizeof(float);
}

extern "C" int cm_cuda_scan_bwd(const cm_cuda_scan_params *p, const cm_cuda_scan_grads *g,
                                cudaStream_t stream) {
    if (p->batch < 1 || p->L < 1 || p->D < 1 || p->N < 1 || p->N > 64 || !p->u || !p->delta ||
        !p->A || !p->B || !p->C || !p->x || !g->dout || !g->du || !g->ddelta || !g->dA ||
        !g->dB || !g->dC || !g->work || (p->z && !g->dz))
        return cudaErrorInvalidValue;
    const Plan pl = make_plan(p);
    if (pl.geo.G != 1 && pl.geo.G != 2) return cudaErrorInvalidValue;

    BwdArgs a;
    a.u = p->u, a.delta = p->delta, a.z = p->z, a.dout = g->dout;
    a.A = p->A, a.Dskip = p->D_skip, a.bias = p->delta_bias, a.x = p->x;
    a.du = g->du, a.ddelta = g->ddelta, a.dz = g->dz;
    a.dA = g->dA, a.dD = p->D_skip ? g->dD : nullptr, a.dbias = p->delta_bias ? g->ddelta_bias : nullptr;
    a.dBt = (float *)g->work, a.dCt = a.dBt + pl.scratch_floats / 2;
    float *bcx = a.dBt + pl.scratch_floats;
    a.bcx = bcx;
    a.seg = bcx + pl.bc_floats;
    a.carry = a.seg + (pl.nseg > 1 ? 2 * (size_t)p->batch * p->D * pl.nseg * p->N : 0);
    a.L = p->L, a.Lp = bc_len(p->L), a.D = p->D, a.N = p->N, a.S = pl.geo.S, a.CB = pl.geo.CB;
    a.n_ck = (p->L + CKPT - 1) / CKPT;
    a.softplus = p->delta_softplus;
    a.vec = p->L % 8 == 0 && aligned16(p->u) && aligned16(p->delta) && aligned16(p->z) &&
            aligned16(g->dout);
    a.nseg = pl.nseg, a.tps = pl.tps;

    cudaError_t e = cudaMemsetAsync(g->work, 0, pl.scratch_floats * sizeof(float), stream);
    if (e == cudaSuccess) e = make_bc(bcx, p, pl.geo, stream);
    if (e == cudaSuccess)
        e = p->dtype == CM_CUDA_BF16 ? dispatch<__nv_bfloat16>(a, pl, p->batch, stream)
                                     : dispatch<float>(a, pl, p->batch, stream);
    if (e != cudaSuccess) return e;
    const long count = (long)p->batch * p->N * p->L;
    add_transposed<<<(unsigned)((count + 255) / 256), 256, 0, stream>>>(g->dB, g->dC, a.dBt, a.dCt,
                                                                          p->L, p->N, count);
    return cudaGetLastError();
}
