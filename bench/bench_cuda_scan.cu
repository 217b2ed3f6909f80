/* Times the CUDA selective scan (src/cuda/cuda_scan.h) forward and backward
 * at the shapes mamba_ssm was measured at on an H100, prints µs (median of
 * the repeats, CUDA events, after warm-up), achieved bandwidth, and the
 * floor of each shape: the largest of bytes / HBM bandwidth, exponentials /
 * MUFU rate and FP32 instructions / FP32 rate, with both the datasheet rates
 * and the ones measured here (a device copy, an ex2 loop, an FFMA loop).
 * Then sweeps the tuning knobs (states per thread, backward segments) so the automatic choice can be checked against the best.
 *
 *   bench_cuda_scan [quick] [A|B|C]    quick: the automatic configuration only;
 *                                      a letter: that shape only
 */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cuda/cuda_scan.h"
#include "cuda_bench.cuh"

/* ---- the device's ceilings, measured ------------------------------------------ */

__global__ void ex2_loop(float *out, int iters) {
    float x[8];
    for (int i = 0; i < 8; i++) x[i] = (threadIdx.x + i) * 1e-3f;
    for (int k = 0; k < iters; k++)
#pragma unroll
        for (int i = 0; i < 8; i++) asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(x[i]) : "f"(-x[i]));
    float s = 0.f;
    for (int i = 0; i < 8; i++) s += x[i];
    if (s == 12345.f) out[0] = s;
}

__global__ void ffma_loop(float *out, int iters) {
    float x[8];
    for (int i = 0; i < 8; i++) x[i] = (threadIdx.x + i) * 1e-3f;
    for (int k = 0; k < iters; k += 8) /* unrolled: the loop's own instructions stay out of the count */
#pragma unroll
        for (int r = 0; r < 8; r++)
#pragma unroll
            for (int i = 0; i < 8; i++) x[i] = fmaf(x[i], 0.999f, 1e-4f);
    float s = 0.f;
    for (int i = 0; i < 8; i++) s += x[i];
    if (s == 12345.f) out[0] = s;
}

struct Rates {
    double hbm, mufu, fp32; /* bytes/s, ex2/s, FP32 instructions/s (per lane) */
};

static Rates measure(int sms) {
    Rates r;
    const size_t bytes = 1ull << 30;
    void *a, *b;
    CUDA_OK(cudaMalloc(&a, bytes));
    CUDA_OK(cudaMalloc(&b, bytes));
    CUDA_OK(cudaMemset(a, 1, bytes));
    r.hbm = 2.0 * bytes / (time_ms([&] { cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice); }, 2, 9) * 1e-3);
    const int blocks = sms * 8, threads = 256, iters = 4096;
    const double ops = (double)blocks * threads * iters * 8;
    r.mufu = ops / (time_ms([&] { ex2_loop<<<blocks, threads>>>((float *)a, iters); }, 2, 9) * 1e-3);
    r.fp32 = ops / (time_ms([&] { ffma_loop<<<blocks, threads>>>((float *)a, iters); }, 2, 9) * 1e-3);
    cudaFree(a), cudaFree(b);
    return r;
}

/* ---- one shape ----------------------------------------------------------------- */

struct Shape {
    const char *name;
    int batch, L, D, N;
    cm_cuda_dtype dtype;
    double mamba_fwd_us, mamba_bwd_us;
};

/* a fixed pseudo-random pattern repeated over the buffer: random data at
 * the cost of a small upload */
static void *random_buffer(size_t n, size_t es, float lo, float hi, unsigned seed) {
    const size_t m = std::min(n, (size_t)1 << 22);
    std::vector<unsigned char> h(m * es);
    unsigned s = seed;
    for (size_t i = 0; i < m; i++) {
        s = s * 1664525u + 1013904223u;
        const float v = lo + (hi - lo) * (float)(s >> 8) * (1.0f / 16777216.0f);
        if (es == 2) {
            const __nv_bfloat16 bv = __float2bfloat16(v);
            memcpy(&h[i * 2], &bv, 2);
        } else {
            memcpy(&h[i * 4], &v, 4);
        }
    }
    void *d;
    CUDA_OK(cudaMalloc(&d, n * es));
    for (size_t off = 0; off < n; off += m)
        CUDA_OK(cudaMemcpy((char *)d + off * es, h.data(), std::min(m, n - off) * es, cudaMemcpyHostToDevice));
    return d;
}

static void bench(const Shape &s, const Rates &dev, int sms, bool quick) {
    const size_t nx = (size_t)s.batch * s.D * s.L, nbc = (size_t)s.batch * s.N * s.L;
    const size_t es = s.dtype == CM_CUDA_BF16 ? 2 : 4;
    cm_cuda_scan_params p = {};
    p.batch = s.batch, p.L = s.L, p.D = s.D, p.N = s.N, p.dtype = s.dtype;
    p.u = random_buffer(nx, es, -2, 2, 1);
    p.delta = random_buffer(nx, es, -6, 0, 2);
    p.z = random_buffer(nx, es, -3, 3, 3);
    p.B = random_buffer(nbc, es, -1, 1, 4);
    p.C = random_buffer(nbc, es, -1, 1, 5);
    std::vector<float> A((size_t)s.D * s.N), Dk(s.D, 1.f), bias(s.D, -3.f);
    for (int c = 0; c < s.D; c++)
        for (int n = 0; n < s.N; n++) A[(size_t)c * s.N + n] = -(float)(n + 1);
    float *dA, *dDk, *dbias;
    CUDA_OK(cudaMalloc(&dA, A.size() * 4));
    CUDA_OK(cudaMalloc(&dDk, s.D * 4));
    CUDA_OK(cudaMalloc(&dbias, s.D * 4));
    CUDA_OK(cudaMemcpy(dA, A.data(), A.size() * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dDk, Dk.data(), s.D * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dbias, bias.data(), s.D * 4, cudaMemcpyHostToDevice));
    p.A = dA, p.D_skip = dDk, p.delta_bias = dbias, p.delta_softplus = 1;
    const size_t nxs = cm_cuda_scan_x_size(&p);
    CUDA_OK(cudaMalloc(&p.out, nx * es));
    CUDA_OK(cudaMalloc(&p.x, nxs * 4));

    cm_cuda_scan_grads g = {};
    g.dout = random_buffer(nx, es, -1, 1, 6);
    CUDA_OK(cudaMalloc(&g.du, nx * es));
    CUDA_OK(cudaMalloc(&g.ddelta, nx * es));
    CUDA_OK(cudaMalloc(&g.dz, nx * es));
    CUDA_OK(cudaMalloc(&g.dA, A.size() * 4));
    CUDA_OK(cudaMalloc(&g.dB, nbc * 4));
    CUDA_OK(cudaMalloc(&g.dC, nbc * 4));
    CUDA_OK(cudaMalloc(&g.dD, s.D * 4));
    CUDA_OK(cudaMalloc(&g.ddelta_bias, s.D * 4));
    CUDA_OK(cudaMemset(g.dA, 0, A.size() * 4));
    CUDA_OK(cudaMemset(g.dB, 0, nbc * 4));
    CUDA_OK(cudaMemset(g.dC, 0, nbc * 4));
    size_t work_bytes = 0; /* the largest any configuration below needs */
    for (int nseg : {0, 1, 2, 4, 8, 16, 32}) {
        p.n_segments = nseg;
        work_bytes = std::max(work_bytes, cm_cuda_scan_bwd_workspace(&p));
    }
    p.n_segments = 0;
    CUDA_OK(cudaMalloc(&g.work, work_bytes));

    const int reps = s.L > 8192 ? 7 : 15;
    auto fwd = [&] { CUDA_OK(cm_cuda_scan_fwd(&p, 0)); };
    auto bwd = [&] { CUDA_OK(cm_cuda_scan_bwd(&p, &g, 0)); };

    /* The floors. Bytes: each input read once, each output written once
     * (the forward's checkpoints x and their read back in the backward
     * counted too: they are part of this design). Exponentials: one per
     * (step, channel, state), plus per (step, channel) softplus' e^x and
     * silu's e^-z and 1/(1+e^-z) forward, and backward also sigmoid(x)'s
     * two and silu' reusing silu's (4). FP32 instructions per (step,
     * channel, state): forward Δ·A, B·Δu, the state FFMA, the output FFMA;
     * backward those again plus dh, Σ dh·B, q, a·h, Σ A·q, dA, dB, dC terms
     * and the carry (9). */
    const double elems = (double)nx * s.N;
    const double fwd_bytes = (3.0 * nx + 2.0 * nbc) * es + nx * es + nxs * 4.0;
    const double bwd_bytes = (4.0 * nx + 2.0 * nbc) * es + 3.0 * nx * es + 2.0 * nbc * 4 * 2 + nxs * 4.0;
    const double fwd_exp = elems + 3.0 * nx, bwd_exp = elems + 7.0 * nx;
    const double fwd_fp = 4.0 * elems, bwd_fp = 14.0 * elems;
    struct R {
        double hbm, mufu, fp32;
    } sheet = {3.35e12, 16.0 * 132 * 1.83e9, 128.0 * 132 * 1.83e9};
    auto floor_us = [](double bytes, double ex, double fp, double hbm, double mufu, double f32, char *why) {
        const double tb = bytes / hbm, te = ex / mufu, tf = fp / f32;
        const double t = std::max(tb, std::max(te, tf));
        strcpy(why, t == tb ? "bytes" : t == te ? "exp" : "fp32");
        return t * 1e6;
    };
    char why[8], whyd[8];
    printf("\n== %s: batch %d, L %d, D %d, N %d, %s inputs, z, softplus(delta + bias)\n", s.name,
           s.batch, s.L, s.D, s.N, s.dtype == CM_CUDA_BF16 ? "bf16" : "fp32");
    for (int dir = 0; dir < 2; dir++) {
        const double by = dir ? bwd_bytes : fwd_bytes, ex = dir ? bwd_exp : fwd_exp, fp = dir ? bwd_fp : fwd_fp;
        const double fs = floor_us(by, ex, fp, sheet.hbm, sheet.mufu, sheet.fp32, why);
        const double fm = floor_us(by, ex, fp, dev.hbm, dev.mufu, dev.fp32, whyd);
        const double us = 1e3 * (dir ? time_ms(bwd, 2, reps) : time_ms(fwd, 2, reps));
        const double ref = dir ? s.mamba_bwd_us : s.mamba_fwd_us;
        printf("%s  %9.1f us  %6.0f GB/s | mamba_ssm %7.0f us: %4.2fx | floor %7.1f us (%s, datasheet), "
               "%7.1f us (%s, measured): %4.2fx over | MB %.0f, Gexp %.2f, GFP32 %.2f\n",
               dir ? "bwd" : "fwd", us, by / us * 1e-3, ref, ref / us, fs, why, fm, whyd, us / fm,
               by * 1e-6, ex * 1e-9, fp * 1e-9);
    }
    if (!quick) {
        printf("sweep (us):");
        for (int G : {1, 2, 4}) {
            p.states_per_thread = G;
            printf("  fwd G%d %.1f", G, 1e3 * time_ms(fwd, 1, reps));
        }
        p.states_per_thread = 0;
        printf("\n           ");
        for (int G : {1, 2})
            for (int nseg : {1, 2, 4, 8, 16, 32}) {
                p.states_per_thread = G, p.n_segments = nseg;
                printf("  bwd G%d S%d %.1f", G, nseg, 1e3 * time_ms(bwd, 1, reps));
            }
        printf("\n");
        p.states_per_thread = 0, p.n_segments = 0;
    }
    (void)sms;
    void *bufs[] = {(void *)p.u, (void *)p.delta, (void *)p.z, (void *)p.B, (void *)p.C, dA, dDk,
                    dbias, p.out, p.x, (void *)g.dout, g.du, g.ddelta, g.dz, g.dA, g.dB, g.dC,
                    g.dD, g.ddelta_bias, g.work};
    for (void *b : bufs) cudaFree(b);
}

int main(int argc, char **argv) {
    bool quick = false;
    char only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "quick")) quick = true;
        else only = argv[i][0];
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        fprintf(stderr, "SKIP: no CUDA device\n");
        return 77;
    }
    cudaDeviceProp prop;
    CUDA_OK(cudaGetDeviceProperties(&prop, 0));
    const Rates dev = measure(prop.multiProcessorCount);
    printf("%s, %d SMs, L2 %d MB | measured: copy %.2f TB/s, ex2 %.2f T/s, FP32 %.2f T inst/s "
           "(%.2f GHz at 128 lanes/SM) | datasheet: 3.35 TB/s, 16 ex2 and 128 FP32 lanes/SM/clk\n",
           prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20, dev.hbm * 1e-12,
           dev.mufu * 1e-12, dev.fp32 * 1e-12, dev.fp32 / (128.0 * prop.multiProcessorCount) * 1e-9);
    const Shape shapes[] = {
        {"A", 8, 2048, 1536, 16, CM_CUDA_BF16, 460, 1939},
        {"B", 1, 65536, 5120, 16, CM_CUDA_BF16, 7560, 25400},
        {"C (A in fp32)", 8, 2048, 1536, 16, CM_CUDA_F32, 898, 2123},
    };
    for (const Shape &s : shapes)
        if (!only || s.name[0] == only) bench(s, dev, prop.multiProcessorCount, quick);
    return 0;
}
