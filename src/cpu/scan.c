/* The selective scan on the CPU's fast path, forward and backward.
 *
 * The reference forms (src/ssm/selective_scan.c, src/train/layers.c) walk one
 * channel at a time with its state as a vector over d_state: every step ends
 * in a horizontal sum and depends on the step before, so they run at the
 * latency of that chain. Here the vectors run across CB neighbouring
 * channels instead: in the channels-last layout their x, Δ, z and y are
 * contiguous, B_t and C_t are shared by all of them, the sum over the state
 * is a plain per-lane accumulation, and the d_state exponentials of a step
 * go out CB at a time (cpu/vecmath.h). Each lane computes what the
 * reference computes for its channel, in the same order; only the
 * exponential (libmvec's rather than libm's) differs, by an ulp or so.
 * tests/test_fast_kernels.c holds the two to each other. */
#include <stdlib.h>
#include <string.h>

#include "cpu/vecmath.h"
#include "model/ops.h"
#include "ssm/selective_scan.h"
#include "train/layers.h"

enum { CB = 16 }; /* channels per block: one AVX-512 vector of fp32 */

/* (nc, N) rows of m, transposed into lanes t (N, CB), and back */
static void to_lanes(float *t, const float *m, int nc, int N) {
    for (int c = 0; c < nc; c++)
        for (int n = 0; n < N; n++) t[(size_t)n * CB + c] = m[(size_t)c * N + n];
}

static void from_lanes(float *m, const float *t, int nc, int N) {
    for (int c = 0; c < nc; c++)
        for (int n = 0; n < N; n++) m[(size_t)c * N + n] = t[(size_t)n * CB + c];
}

/* ---- forward ---------------------------------------------------------------- */

/* Channels [c0, c0+nc): hT, AT are their state and A in lanes (N, CB). */
CM_SIMD_CLONES
static void scan_block(const cm_scan_args *a, int c0, int nc, float *hT, const float *AT,
                       float *y) {
    const int L = a->L, di = a->d_inner, N = a->d_state;
    for (int t = 0; t < L; t++) {
        const size_t r = (size_t)t * di + c0;
        const float *x = a->x + r, *dt = a->delta + r;
        const float *B = a->B + (size_t)t * a->bc_stride, *C = a->C + (size_t)t * a->bc_stride;
        float acc[CB] = {0};
        for (int n = 0; n < N; n++) {
            const float Bn = B[n], Cn = C[n], *An = AT + (size_t)n * CB;
            float *hn = hT + (size_t)n * CB;
#pragma omp simd
            for (int c = 0; c < nc; c++) {
                const float h = expf(dt[c] * An[c]) * hn[c] + dt[c] * Bn * x[c];
                hn[c] = h;
                acc[c] += h * Cn;
            }
        }
#pragma omp simd
        for (int c = 0; c < nc; c++) {
            float out = acc[c];
            if (a->D) out += a->D[c0 + c] * x[c];
            if (a->z) out *= cm_silu(a->z[(size_t)t * a->z_stride + c0 + c]);
            y[r + c] = out;
        }
    }
}

void cm_selective_scan(const cm_scan_args *a, float *h, float *y) {
    const int di = a->d_inner, N = a->d_state, blocks = (di + CB - 1) / CB;
#pragma omp parallel if ((long)a->L * di * N > 100000)
    {
        float *hT = malloc(sizeof(float) * 2 * CB * (size_t)N), *AT = hT + (size_t)CB * N;
#pragma omp for schedule(static)
        for (int k = 0; k < blocks; k++) {
            const int c0 = k * CB, nc = di - c0 < CB ? di - c0 : CB;
            to_lanes(hT, h + (size_t)c0 * N, nc, N);
            to_lanes(AT, a->A + (size_t)c0 * N, nc, N);
            scan_block(a, c0, nc, hT, AT, y);
            from_lanes(h + (size_t)c0 * N, hT, nc, N);
        }
        free(hT);
    }
}

/* ---- backward ----------------------------------------------------------------
 * The reference's recurrences (train/layers.c), a block of channels at a
 * time. A group's work: the block's states hs (L, N, CB) recomputed, dh, A
 * and dA in lanes (N, CB) each, and the group's dB, dC partials (L, N) each,
 * summed over its channels; groups are then added in order, so the result
 * depends on `groups`, never on the number of threads. */

static size_t group_floats(int L, int N) {
    return (size_t)L * N * CB + 3 * (size_t)N * CB + 2 * (size_t)L * N;
}

size_t cm_scan_backward_work(int L, int d_state, int groups) {
    /* enough for the reference form's layout too */
    const size_t fast = group_floats(L, d_state), ref = (3 * (size_t)L + 1) * d_state;
    return (size_t)groups * (fast > ref ? fast : ref);
}

CM_SIMD_CLONES
static void scan_backward_block(const cm_scan_args *a, const float *dy, const cm_scan_grads *g,
                                int c0, int nc, float *hs, float *dhT, const float *AT,
                                float *dAT, float *pB, float *pC) {
    const int L = a->L, di = a->d_inner, N = a->d_state;
    const float zeros[CB] = {0};

    /* recompute the states, exactly as the forward does */
    for (int t = 0; t < L; t++) {
        const size_t r = (size_t)t * di + c0;
        const float *x = a->x + r, *dt = a->delta + r, *B = a->B + (size_t)t * a->bc_stride;
        for (int n = 0; n < N; n++) {
            const float Bn = B[n], *An = AT + (size_t)n * CB;
            const float *hp = t ? hs + ((size_t)(t - 1) * N + n) * CB : zeros;
            float *ht = hs + ((size_t)t * N + n) * CB;
#pragma omp simd
            for (int c = 0; c < nc; c++) ht[c] = expf(dt[c] * An[c]) * hp[c] + dt[c] * Bn * x[c];
        }
    }

    memset(dhT, 0, sizeof(float) * (size_t)N * CB);
    float dD[CB] = {0};
    for (int t = L - 1; t >= 0; t--) {
        const size_t r = (size_t)t * di + c0;
        const float *x = a->x + r, *dt = a->delta + r;
        const float *B = a->B + (size_t)t * a->bc_stride, *C = a->C + (size_t)t * a->bc_stride;
        float ds[CB], dx[CB], ddelta[CB], D[CB];
#pragma omp simd
        for (int c = 0; c < nc; c++) {
            ds[c] = dy[r + c];
            D[c] = a->D ? a->D[c0 + c] : 0.0f;
        }
        if (a->z) {
            float s[CB];
#pragma omp simd
            for (int c = 0; c < nc; c++) s[c] = D[c] * x[c];
            for (int n = 0; n < N; n++) {
                const float Cn = C[n], *ht = hs + ((size_t)t * N + n) * CB;
#pragma omp simd
                for (int c = 0; c < nc; c++) s[c] += ht[c] * Cn;
            }
            float *dz = g->dz + (size_t)t * a->z_stride + c0;
            const float *zt = a->z + (size_t)t * a->z_stride + c0;
#pragma omp simd
            for (int c = 0; c < nc; c++) {
                const float z = zt[c], sz = 1.0f / (1.0f + expf(-z));
                dz[c] += ds[c] * s[c] * sz * (1.0f + z * (1.0f - sz));
                ds[c] *= z * sz;
            }
        }
#pragma omp simd
        for (int c = 0; c < nc; c++) {
            dD[c] += ds[c] * x[c];
            dx[c] = ds[c] * D[c];
            ddelta[c] = 0.0f;
        }
        for (int n = 0; n < N; n++) {
            const float Bn = B[n], Cn = C[n], *An = AT + (size_t)n * CB;
            const float *ht = hs + ((size_t)t * N + n) * CB;
            const float *hp = t ? ht - (size_t)N * CB : zeros;
            float *dh = dhT + (size_t)n * CB, *dA = dAT + (size_t)n * CB;
            float sumB = 0.0f, sumC = 0.0f;
#pragma omp simd reduction(+ : sumB, sumC)
            for (int c = 0; c < nc; c++) {
                const float at = expf(dt[c] * An[c]);
                sumC += ds[c] * ht[c];
                dh[c] += ds[c] * Cn;
                sumB += dh[c] * dt[c] * x[c];
                dx[c] += dh[c] * dt[c] * Bn;
                ddelta[c] += dh[c] * (An[c] * at * hp[c] + Bn * x[c]);
                dA[c] += dh[c] * dt[c] * at * hp[c];
                dh[c] *= at; /* carry to step t−1 */
            }
            pB[(size_t)t * N + n] += sumB;
            pC[(size_t)t * N + n] += sumC;
        }
        for (int c = 0; c < nc; c++) {
            g->dx[r + c] += dx[c];
            g->ddelta[r + c] += ddelta[c];
        }
    }
    if (a->D)
        for (int c = 0; c < nc; c++) g->dD[c0 + c] += dD[c];
}

void cm_selective_scan_backward(const cm_scan_args *a, const float *dy, const cm_scan_grads *g,
                                int groups, float *work) {
    const int L = a->L, di = a->d_inner, N = a->d_state;
    const size_t per_group = group_floats(L, N);
#pragma omp parallel for schedule(static, 1)
    for (int k = 0; k < groups; k++) {
        float *hs = work + k * per_group, *dhT = hs + (size_t)L * N * CB, *AT = dhT + (size_t)N * CB,
              *dAT = AT + (size_t)N * CB, *pB = dAT + (size_t)N * CB, *pC = pB + (size_t)L * N;
        memset(pB, 0, sizeof(float) * 2 * (size_t)L * N);
        const int lo = (int)((long)k * di / groups), hi = (int)((long)(k + 1) * di / groups);
        for (int c0 = lo; c0 < hi; c0 += CB) {
            const int nc = hi - c0 < CB ? hi - c0 : CB;
            to_lanes(AT, a->A + (size_t)c0 * N, nc, N);
            memset(dAT, 0, sizeof(float) * (size_t)N * CB);
            scan_backward_block(a, dy, g, c0, nc, hs, dhT, AT, dAT, pB, pC);
            for (int c = 0; c < nc; c++)
                for (int n = 0; n < N; n++)
                    g->dA[(size_t)(c0 + c) * N + n] += dAT[(size_t)n * CB + c];
        }
    }
#pragma omp parallel for schedule(static)
    for (int t = 0; t < L; t++) {
        for (int k = 0; k < groups; k++) {
            const float *pB = work + k * per_group + (size_t)L * N * CB + 3 * (size_t)N * CB +
                              (size_t)t * N,
                        *pC = pB + (size_t)L * N;
            for (int n = 0; n < N; n++) {
                g->dB[(size_t)t * a->bc_stride + n] += pB[n];
                g->dC[(size_t)t * a->bc_stride + n] += pC[n];
            }
        }
    }
}
