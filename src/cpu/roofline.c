/* The measured roofline (see roofline.h). Both kernels run on every OpenMP
 * thread at once, as the model's kernels do, and each rep's wall time is
 * taken over the whole parallel region; the best rep counts, since other
 * work on the machine only ever slows a rep down. */
#include "cpu/roofline.h"

#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>

#include "common.h"

enum { CHAINS = 12 }; /* independent FMA chains: > latency (4) × FMA ports (2) */
static const long FMA_ITERS = 20000000;

/* Each chain is x ← x·a + b; a just below 1 and b tiny keep x finite and
 * normal forever, so the timing never meets a denormal slow path. The
 * returned sum keeps the compiler from dropping the loop. */
__attribute__((target("avx512f"))) static float fma_chains_avx512(long iters) {
    __m512 acc[CHAINS];
    const __m512 a = _mm512_set1_ps(0.9999999f), b = _mm512_set1_ps(1e-7f);
    for (int j = 0; j < CHAINS; j++) acc[j] = _mm512_set1_ps((float)j);
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < CHAINS; j++) acc[j] = _mm512_fmadd_ps(acc[j], a, b);
    for (int j = 1; j < CHAINS; j++) acc[0] = _mm512_add_ps(acc[0], acc[j]);
    return _mm512_reduce_add_ps(acc[0]);
}

__attribute__((target("avx2,fma"))) static float fma_chains_avx2(long iters) {
    __m256 acc[CHAINS];
    const __m256 a = _mm256_set1_ps(0.9999999f), b = _mm256_set1_ps(1e-7f);
    for (int j = 0; j < CHAINS; j++) acc[j] = _mm256_set1_ps((float)j);
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < CHAINS; j++) acc[j] = _mm256_fmadd_ps(acc[j], a, b);
    float out[8], s = 0;
    for (int j = 1; j < CHAINS; j++) acc[0] = _mm256_add_ps(acc[0], acc[j]);
    _mm256_storeu_ps(out, acc[0]);
    for (int k = 0; k < 8; k++) s += out[k];
    return s;
}

static float fma_chains_scalar(long iters) {
    float acc[CHAINS], s = 0;
    for (int j = 0; j < CHAINS; j++) acc[j] = (float)j;
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < CHAINS; j++) acc[j] = acc[j] * 0.9999999f + 1e-7f;
    for (int j = 0; j < CHAINS; j++) s += acc[j];
    return s;
}

/* Sums floats [0, n) of p with full-width loads, four accumulators. */
__attribute__((target("avx512f"))) static float read_avx512(const float *p, size_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(p + i));
        s1 = _mm512_add_ps(s1, _mm512_loadu_ps(p + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_loadu_ps(p + i + 32));
        s3 = _mm512_add_ps(s3, _mm512_loadu_ps(p + i + 48));
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; i < n; i++) s += p[i];
    return s;
}

__attribute__((target("avx2"))) static float read_avx2(const float *p, size_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(p + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(p + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(p + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(p + i + 24));
    }
    float out[8], s = 0;
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (int k = 0; k < 8; k++) s += out[k];
    for (; i < n; i++) s += p[i];
    return s;
}

static float read_scalar(const float *p, size_t n) {
    float s[4] = {0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++) s[k] += p[i + k];
    for (; i < n; i++) s[0] += p[i];
    return s[0] + s[1] + s[2] + s[3];
}

int cm_read_buffer_new(cm_read_buffer *b, size_t bytes) {
    b->n = bytes / sizeof(float);
    if (!(b->p = cm_alloc_stream(b->n * sizeof(float)))) return -1;
#pragma omp parallel
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const size_t lo = b->n * t / nt, hi = b->n * (t + 1) / nt;
        for (size_t i = lo; i < hi; i++) b->p[i] = 1.0f;
    }
    return 0;
}

void cm_read_buffer_free(cm_read_buffer *b) {
    free(b->p);
    b->p = NULL;
}

double cm_read_buffer_pass(const cm_read_buffer *b) {
    static volatile float sink;
    const int avx512 = __builtin_cpu_supports("avx512f");
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    float sum = 0;
    const double t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : sum)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const size_t lo = b->n * t / nt, hi = b->n * (t + 1) / nt;
        const float *p = b->p + lo;
        sum += avx512 ? read_avx512(p, hi - lo) : avx2 ? read_avx2(p, hi - lo) : read_scalar(p, hi - lo);
    }
    const double dt = omp_get_wtime() - t0;
    sink += sum;
    return (double)b->n * sizeof(float) / dt;
}

int cm_roofline_measure(cm_roofline *r, size_t buffer_bytes, int reps) {
    const int avx512 = __builtin_cpu_supports("avx512f");
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const int lanes = avx512 ? 16 : avx2 ? 8 : 1;
    r->isa = avx512 ? "AVX-512" : avx2 ? "AVX2+FMA" : "scalar";
    r->threads = omp_get_max_threads();
    r->read_bytes_per_s = r->fma_flops_per_s = 0;
    volatile float sink = 0;
    if (buffer_bytes) {
        cm_read_buffer buf;
        if (cm_read_buffer_new(&buf, buffer_bytes)) return -1;
        for (int rep = 0; rep < reps; rep++) {
            const double rate = cm_read_buffer_pass(&buf);
            if (rate > r->read_bytes_per_s) r->read_bytes_per_s = rate;
        }
        cm_read_buffer_free(&buf);
    }

    const long iters = avx512 ? FMA_ITERS : avx2 ? 2 * FMA_ITERS : FMA_ITERS / 4;
    for (int rep = 0; rep < reps; rep++) {
        float sum = 0;
        int nt = 1;
        const double t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : sum)
        {
#pragma omp single
            nt = omp_get_num_threads();
            sum += avx512 ? fma_chains_avx512(iters)
                          : avx2 ? fma_chains_avx2(iters) : fma_chains_scalar(iters);
        }
        const double dt = omp_get_wtime() - t0;
        const double rate = (double)nt * iters * CHAINS * lanes * 2 / dt;
        sink += sum;
        if (rate > r->fma_flops_per_s) r->fma_flops_per_s = rate;
    }
    (void)sink;
    return 0;
}

double cm_projection_flops_per_token(const cmamba_config *c) {
    const double d = c->d_model, di = c->d_inner, R = c->dt_rank, N = c->d_state;
    return 2.0 * c->n_layer * (d * 2 * di + di * (R + 2 * N) + R * di + di * d);
}
