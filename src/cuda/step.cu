/* One decoding step of a layer's mixer after in_proj (SPEC.md steps 2-9 as
 * a recurrence) for a batch of sequences, two ways that share their parts:
 *
 * Fused, for small batches that still fill the device, where a step is a chain of dependent memory
 * reads and every launch costs: conv window shift, SiLU, x_proj, Δ, the
 * state update, the output and the gate in one launch. x_proj needs every
 * channel of a sequence and everything after it needs its result, so a
 * sequence is one thread-block cluster (Hopper): its CL blocks each take a
 * slice of the channels, compute their conv outputs and their share of
 * [δ | B | C] = x·W_xᵀ, write that share into every block of the cluster
 * (distributed shared memory: stores need no round trip), and after one
 * cluster barrier each block adds the shares and goes on with its
 * channels' Δ and states. Every block first asks L2 for all it will read.
 * Without clusters (before sm_90) one block takes every channel.
 *
 * Split, for large batches, where the fused kernel's clusters would queue
 * up, and for the smallest, where they would leave most SMs idle: a conv
 * launch, x_proj as a product over the whole batch (the caller's), and an
 * update launch with a block per (channels, up to 8 sequences).
 *
 * Arithmetic as the CPU step's: fp32, expf, log1pf, the conv taps in the
 * same order. */
#include <cooperative_groups.h>

#include "cuda/model_kernels.cuh"
#include "cuda/pdl.cuh"
#include "cuda/scan_common.cuh"

namespace cg = cooperative_groups;

namespace cm {
namespace {

constexpr int STEP_BLOCK = 512, WARPS = STEP_BLOCK / 32;
constexpr int XR = 8;           /* x_proj rows a warp reads at once */
constexpr int SPT = 4;          /* states per thread in the update */
constexpr int MAX_CLUSTER = 16; /* Hopper's non-portable limit */
constexpr int FUSED_MAX = 8;    /* largest batch stepped by the fused kernel */

__device__ __forceinline__ void prefetch_l2(const void *p, size_t bytes) {
    const char *c = static_cast<const char *>(p);
    for (size_t o = (size_t)threadIdx.x * 128; o < bytes; o += (size_t)STEP_BLOCK * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(c + o));
}

/* sum over the `width` lanes of an aligned group (width a power of 2); every lane gets it */
__device__ __forceinline__ float group_sum(float v, int width) {
    for (int o = width / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float softplus_ref(float v) { return v > 20.f ? v : log1pf(expf(v)); }
__device__ __forceinline__ float silu_ref(float v) { return v / (1.f + expf(-v)); }

/* Steps 2-3 for channel c of sequence b: the window is (state ++ x); dot
 * it with the taps, slide it, return silu of the sum. */
template <typename T> __device__ __forceinline__ float conv_one(const StepArgs &a, int b, int c) {
    const int di = a.d_inner, K = a.K;
    const float x = to_f(((const T *)a.xz)[(size_t)b * 2 * di + c]) + (a.in_b ? a.in_b[c] : 0.f);
    float *prev = a.conv_state + ((size_t)b * di + c) * (K - 1);
    const float *wc = a.conv_w + (size_t)c * K;
    float acc = a.conv_b ? a.conv_b[c] : 0.f;
    for (int k = 0; k < K - 1; k++) acc = fmaf(wc[k], prev[k], acc);
    acc = fmaf(wc[K - 1], x, acc);
    for (int k = 0; k + 2 < K; k++) prev[k] = prev[k + 1];
    if (K > 1) prev[K - 2] = x;
    return silu_ref(acc);
}

/* Steps 5-9 for channels [c0, c0 + nch) of sequence b, x[cc] their conv
 * outputs, dbc the sequence's [δ | B | C]: a group of ts lanes per channel,
 * each lane SPT of its states (n = lane + j·ts, so a group's loads are one
 * run). Whole warps loop together (the sums are shuffles), so a lane past
 * the last channel computes nothing; every load of an iteration is issued
 * before its first use. */
template <typename T, typename X>
__device__ __forceinline__ void update_channels(const StepArgs &a, int b, int c0, int nch, X x_of,
                                                const float *dbc, int ts) {
    const int di = a.d_inner, R = a.R, N = a.N;
    const int groups = STEP_BLOCK / ts, gi = threadIdx.x / ts, gl = threadIdx.x % ts;
    const T *wdt = (const T *)a.dt_proj_w;
    const float *B = dbc + R, *C = B + N;
    for (int base = 0; base < nch; base += groups) {
        const int cc = base + gi, c = c0 + cc;
        const bool live = cc < nch;
        float *hp = a.ssm + ((size_t)b * di + c) * N;
        float h[SPT], A[SPT], d = 0.f, bias = 0.f, Dc = 0.f, z = 0.f, x = 0.f;
#pragma unroll
        for (int j = 0; j < SPT; j++) {
            const bool ok = live && gl + j * ts < N;
            A[j] = ok ? a.A[(size_t)c * N + gl + j * ts] : 0.f;
            h[j] = ok ? hp[gl + j * ts] : 0.f;
        }
        if (live) {
            bias = a.dt_b[c], Dc = a.D[c], x = x_of(cc);
            z = to_f(((const T *)a.xz)[(size_t)b * 2 * di + di + c]) + (a.in_b ? a.in_b[di + c] : 0.f);
            /* 48 / 4 = 12 loads a lane at 130m, all in flight at once */
#pragma unroll 16
            for (int r = gl; r < R; r += ts) d = fmaf(to_f(wdt[(size_t)c * R + r]), dbc[r], d);
        }
        const float delta = softplus_ref(group_sum(d, ts) + bias);
        float yp = 0.f;
#pragma unroll
        for (int j = 0; j < SPT; j++) {
            const int n = gl + j * ts;
            if (live && n < N) {
                h[j] = expf(delta * A[j]) * h[j] + delta * B[n] * x;
                hp[n] = h[j];
                yp = fmaf(h[j], C[n], yp);
            }
        }
        yp = group_sum(yp, ts);
        if (live && gl == 0) ((T *)a.y)[(size_t)b * di + c] = from_f<T>((yp + Dc * x) * silu_ref(z));
    }
}

/* shared memory of the fused kernel: xs [cpb] (conv outputs), shares
 * [cl][P] (each block's part of x_proj), dbc [P] (their sum) */
size_t fused_smem(int cl, int cpb, int P) { return sizeof(float) * ((size_t)cpb + (size_t)(cl + 1) * P); }

/* grid (CL, batch); block rank r takes channels [r·cpb, min(d_inner, (r+1)·cpb)). */
template <typename T, bool CLUSTER>
__global__ void __launch_bounds__(STEP_BLOCK) fused_kernel(const StepArgs a, int cpb, int ts) {
    extern __shared__ float sm[];
    const int di = a.d_inner, R = a.R, N = a.N, P = R + 2 * N;
    const int rank = blockIdx.x, cl = gridDim.x, b = blockIdx.y;
    const int c0 = rank * cpb, nch = max(0, min(cpb, di - c0));
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    float *xs = sm, *shares = xs + cpb, *dbc = shares + cl * P;
    const T *wx = (const T *)a.x_proj_w;

    pdl_launch_dependents();
#if __CUDA_ARCH__ >= 900
    /* the other blocks must have started before their shared memory is written */
    if constexpr (CLUSTER) cg::this_cluster().barrier_arrive();
#endif
    for (int j = warp; j < P; j += WARPS) prefetch_l2(wx + (size_t)j * di + c0, nch * sizeof(T));
    prefetch_l2((const T *)a.dt_proj_w + (size_t)c0 * R, (size_t)nch * R * sizeof(T));
    prefetch_l2(a.A + (size_t)c0 * N, (size_t)nch * N * sizeof(float));
    prefetch_l2(a.ssm + ((size_t)b * di + c0) * N, (size_t)nch * N * sizeof(float));
    pdl_wait(); /* xz is in_proj's, launched just before (pdl.cuh) */

    for (int cc = tid; cc < nch; cc += STEP_BLOCK) xs[cc] = conv_one<T>(a, b, c0 + cc);
    __syncthreads();

    /* this block's share of x_proj, XR rows a warp at once so that their
     * loads are in flight together; lane q stores the sums into block q */
#if __CUDA_ARCH__ >= 900
    if constexpr (CLUSTER) cg::this_cluster().barrier_wait();
#endif
    for (int j0 = warp; j0 < P; j0 += WARPS * XR) {
        float acc[XR] = {};
        for (int cc = lane; cc < nch; cc += 32) {
            const float x = xs[cc];
#pragma unroll
            for (int k = 0; k < XR; k++) {
                const int j = j0 + k * WARPS;
                if (j < P) acc[k] = fmaf(to_f(wx[(size_t)j * di + c0 + cc]), x, acc[k]);
            }
        }
#pragma unroll
        for (int k = 0; k < XR; k++) {
            const int j = j0 + k * WARPS;
            const float v = group_sum(acc[k], 32);
            if constexpr (CLUSTER) {
#if __CUDA_ARCH__ >= 900
                if (lane < cl && j < P) *cg::this_cluster().map_shared_rank(shares + rank * P + j, lane) = v;
#endif
            } else if (lane == 0 && j < P) {
                shares[j] = v;
            }
        }
    }
    if constexpr (CLUSTER) {
#if __CUDA_ARCH__ >= 900
        cg::this_cluster().sync(); /* every share has arrived; none is written after */
#else
        __trap(); /* launched with clusters only on sm_90 and later */
#endif
    } else {
        __syncthreads();
    }
    for (int j = tid; j < P; j += STEP_BLOCK) {
        float v = 0.f;
        for (int q = 0; q < cl; q++) v += shares[q * P + j];
        dbc[j] = v;
    }
    __syncthreads();
    update_channels<T>(a, b, c0, nch, [&](int cc) { return xs[cc]; }, dbc, ts);
}

/* split path, first launch: thread (c, b) writes xc[b, c] = conv output */
template <typename T> __global__ void __launch_bounds__(256) conv_step_kernel(const StepArgs a) {
    const int c = blockIdx.x * 256 + threadIdx.x, b = blockIdx.y;
    pdl_launch_dependents();
    pdl_wait(); /* xz is in_proj's */
    if (c < a.d_inner) ((T *)a.xc)[(size_t)b * a.d_inner + c] = from_f<T>(conv_one<T>(a, b, c));
}

/* split path, last launch: block (i, j) takes ch = UPD_BLOCK / ts channels of UPD_SEQS
 * sequences (j·UPD_SEQS …): the channels' rows of dt_proj are read from
 * memory once into shared memory for all of them (a block per sequence
 * read them batch times, from L2: at 64 sequences of the 2.8b shape 105 MB
 * a layer, 2.5× the states' traffic).
 * A group of ts lanes per channel, each lane SPT consecutive states (one
 * 16-byte access), every state load of the block's sequences in flight
 * before the first update. Four sequences a block rather than eight: half
 * the registers of states a thread, so more blocks an SM to hide the
 * latency that bounds this kernel, for twice the reads of dt_proj's rows
 * (from L2). At 64 sequences: 2.8b 8.9k → 10.3k tokens/s, 1.4b 15.5k →
 * 17.1k, 130m 68k → 78k (H100, docs/performance.md); two gained less. */
constexpr int UPD_BLOCK = 128, UPD_SEQS = 4;
__host__ __device__ constexpr int upd_stride(int R) { return R | 1; } /* odd: no bank conflicts */
size_t update_smem(int ts, int R, int N) {
    const int ch = UPD_BLOCK / ts;
    return sizeof(float) * ((size_t)ch * upd_stride(R) + UPD_SEQS * (R + 2 * N) + UPD_SEQS * ch);
}

template <typename T>
__global__ void __launch_bounds__(UPD_BLOCK) update_kernel(const StepArgs a, int ts, int batch) {
    extern __shared__ float sm[];
    const int di = a.d_inner, R = a.R, N = a.N, P = R + 2 * N, RS = upd_stride(R);
    const int ch = UPD_BLOCK / ts, c0 = blockIdx.x * ch, b0 = blockIdx.y * UPD_SEQS;
    const int nch = min(ch, di - c0), nseq = min(UPD_SEQS, batch - b0);
    float *wdt = sm, *dbc = wdt + ch * RS, *delta = dbc + UPD_SEQS * P;
    const int cl = threadIdx.x / ts, n0 = threadIdx.x % ts * SPT, c = c0 + cl;
    const bool live = cl < nch, vec = N % SPT == 0 && n0 < N;
    pdl_launch_dependents();
    /* weights first: they need nothing of the previous kernels. Element i
     * is row i / R, column i % R; the thread's row and column advance by
     * UPD_BLOCK, where a division per element (R a run-time value) cost
     * 3% of a step at 64 sequences of the 1.4b and 2.8b shapes. */
    {
        const T *w = (const T *)a.dt_proj_w + (size_t)c0 * R;
        const int dr = UPD_BLOCK / R, dk = UPD_BLOCK % R;
        int r = threadIdx.x / R, k = threadIdx.x % R;
#pragma unroll 4
        for (int i = threadIdx.x; i < nch * R; i += UPD_BLOCK) {
            wdt[r * RS + k] = to_f(w[i]);
            r += dr, k += dk;
            if (k >= R) r++, k -= R;
        }
    }
    float A[SPT] = {}, Dc = 0.f;
    if (live) {
#pragma unroll
        for (int j = 0; j < SPT; j++) A[j] = n0 + j < N ? a.A[(size_t)c * N + n0 + j] : 0.f;
        Dc = a.D[c];
    }
    pdl_wait(); /* dbc is x_proj's, xc the conv's before it (pdl.cuh) */
    for (int i = threadIdx.x; i < nseq * P; i += UPD_BLOCK) dbc[i] = a.dbc[(size_t)b0 * P + i];
    __syncthreads();
    for (int i = threadIdx.x; i < nseq * ch; i += UPD_BLOCK) {
        const int s = i / ch, cc = i % ch;
        if (cc >= nch) continue;
        float d = 0.f;
        for (int r = 0; r < R; r++) d = fmaf(wdt[cc * RS + r], dbc[s * P + r], d);
        delta[s * ch + cc] = softplus_ref(d + a.dt_b[c0 + cc]);
    }
    __syncthreads();
    float h[UPD_SEQS][SPT], x[UPD_SEQS], z[UPD_SEQS];
#pragma unroll
    for (int s = 0; s < UPD_SEQS; s++) {
        const bool ok = live && s < nseq;
        const float *hp = a.ssm + ((size_t)(b0 + s) * di + c) * N;
        if (ok && vec) {
            const float4 v = *(const float4 *)(hp + n0);
            h[s][0] = v.x, h[s][1] = v.y, h[s][2] = v.z, h[s][3] = v.w;
        } else {
#pragma unroll
            for (int j = 0; j < SPT; j++) h[s][j] = ok && n0 + j < N ? hp[n0 + j] : 0.f;
        }
        const size_t xi = (size_t)(b0 + s) * 2 * di + c;
        x[s] = ok ? to_f(((const T *)a.xc)[(size_t)(b0 + s) * di + c]) : 0.f;
        z[s] = ok ? to_f(((const T *)a.xz)[xi + di]) + (a.in_b ? a.in_b[di + c] : 0.f) : 0.f;
    }
#pragma unroll
    for (int s = 0; s < UPD_SEQS; s++) {
        if (s >= nseq) break; /* uniform across the block */
        const bool ok = live;
        const float dl = ok ? delta[s * ch + cl] : 0.f, *B = dbc + s * P + R, *C = B + N;
        float yp = 0.f;
#pragma unroll
        for (int j = 0; j < SPT; j++) {
            const int n = n0 + j;
            if (ok && n < N) {
                h[s][j] = expf(dl * A[j]) * h[s][j] + dl * B[n] * x[s];
                yp = fmaf(h[s][j], C[n], yp);
            }
        }
        float *hp = a.ssm + ((size_t)(b0 + s) * di + c) * N;
        if (ok && vec) {
            *(float4 *)(hp + n0) = make_float4(h[s][0], h[s][1], h[s][2], h[s][3]);
        } else if (ok) {
#pragma unroll
            for (int j = 0; j < SPT; j++)
                if (n0 + j < N) hp[n0 + j] = h[s][j];
        }
        yp = group_sum(yp, ts);
        if (ok && n0 == 0)
            ((T *)a.y)[(size_t)(b0 + s) * di + c] = from_f<T>((yp + Dc * x[s]) * silu_ref(z[s]));
    }
}

/* the launch of grid (cl, batch) in clusters of cl blocks, programmatic
 * dependent on the previous kernel (pdl.cuh) */
struct ClusterLaunch {
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr[2] = {};
    ClusterLaunch(int cl, int batch, size_t smem, cudaStream_t stream) {
        cfg.gridDim = dim3(cl, batch);
        cfg.blockDim = dim3(STEP_BLOCK);
        cfg.dynamicSmemBytes = smem;
        cfg.stream = stream;
        attr[0].id = cudaLaunchAttributeClusterDimension;
        attr[0].val.clusterDim.x = cl, attr[0].val.clusterDim.y = 1, attr[0].val.clusterDim.z = 1;
        attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[1].val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = attr, cfg.numAttrs = 2;
    }
    ClusterLaunch(const ClusterLaunch &) = delete; /* cfg points into itself */
};

int lanes_per_channel(int N) {
    int ts = 1;
    while (ts * SPT < N) ts *= 2;
    return ts;
}


} // namespace

int step_setup(int d_inner, int dt_rank, int d_state) {
    int dev = 0, major = 0, smem_max = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
        return -1;
    /* about 64 channels a block: enough loads in flight per SM, few enough
     * blocks that the shares stay short */
    int cl = 1;
    while (major >= 9 && cl * 2 <= MAX_CLUSTER && cl * 2 * 64 <= d_inner) cl *= 2;
    const int P = dt_rank + 2 * d_state;
    const size_t smem = fused_smem(cl, (d_inner + cl - 1) / cl, P);
    if (smem > (size_t)smem_max) return -1;
    bool ok = true;
    auto allow = [&](auto kern, bool cluster) {
        /* the device's limit, not this shape's: the attribute outlives the model */
        ok = ok && cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max) ==
                       cudaSuccess;
        /* 16 is beyond the portable 8: allowed per kernel */
        if (cluster && cl > 8)
            ok = ok && cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) ==
                           cudaSuccess;
    };
    allow(fused_kernel<float, false>, false), allow(fused_kernel<__nv_bfloat16, false>, false);
    allow(fused_kernel<float, true>, true), allow(fused_kernel<__nv_bfloat16, true>, true);
    allow(update_kernel<float>, false), allow(update_kernel<__nv_bfloat16>, false);
    if (update_smem(lanes_per_channel(d_state), dt_rank, d_state) > (size_t)smem_max) return -1;
    if (ok && cl > 8) { /* and only where the device can place it */
        const ClusterLaunch l(cl, 1, smem, 0);
        int n = 0;
        if (cudaOccupancyMaxActiveClusters(&n, fused_kernel<float, true>, &l.cfg) != cudaSuccess || n < 1)
            cl = 8;
    }
    cudaGetLastError(); /* a refusal above is an answer, not an error to report later */
    return ok ? cl : -1;
}

bool step_is_split(int batch, int cluster) {
    /* the fused kernel runs batch · cluster blocks: fewer than about half
     * the SMs leave most of the memory system idle (at one sequence of the
     * 130m shape the split step was 7% faster, of 1.4b and 2.8b ~30%) */
    int dev = 0, sms = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        cudaGetLastError();
    return batch > FUSED_MAX || 2 * batch * cluster < sms;
}

cudaError_t mixer_step(const StepArgs &a, int cluster, int batch, cm_cuda_dtype dt,
                       cudaStream_t stream) {
    const int cpb = (a.d_inner + cluster - 1) / cluster, P = a.R + 2 * a.N;
    const int ts = lanes_per_channel(a.N);
    return with_type(dt, [&](auto t) {
        using T = decltype(t);
        const size_t smem = fused_smem(cluster, cpb, P);
        if (cluster == 1)
            return launch_pdl(fused_kernel<T, false>, dim3(1, batch), STEP_BLOCK, smem, stream, a,
                              cpb, ts);
        const ClusterLaunch l(cluster, batch, smem, stream);
        return cudaLaunchKernelEx(&l.cfg, fused_kernel<T, true>, a, cpb, ts);
    });
}

cudaError_t mixer_step_conv(const StepArgs &a, int batch, cm_cuda_dtype dt, cudaStream_t stream) {
    return with_type(dt, [&](auto t) {
        using T = decltype(t);
        return launch_pdl(conv_step_kernel<T>, dim3((a.d_inner + 255) / 256, batch), 256, 0, stream, a);
    });
}

cudaError_t mixer_step_update(const StepArgs &a, int batch, cm_cuda_dtype dt, cudaStream_t stream) {
    const int ts = lanes_per_channel(a.N), ch = UPD_BLOCK / ts;
    const dim3 grid((a.d_inner + ch - 1) / ch, (batch + UPD_SEQS - 1) / UPD_SEQS);
    return with_type(dt, [&](auto t) {
        using T = decltype(t);
        return launch_pdl(update_kernel<T>, grid, UPD_BLOCK, update_smem(ts, a.R, a.N), stream, a, ts,
                          batch);
    });
}

} // namespace cm
