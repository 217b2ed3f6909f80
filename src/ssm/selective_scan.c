#include "ssm/selective_scan.h"

#include <math.h>
#include <stddef.h>

#include "cpu/vecmath.h"
#include "model/ops.h"

/* One channel: its N-dimensional state through L steps. The loop over the
 * state is one SIMD loop, exponentials included (cpu/vecmath.h). */
CM_SIMD_CLONES
static void scan_channel(const cm_scan_args *a, int c, float *hc, float *y) {
    const int L = a->L, d_inner = a->d_inner, N = a->d_state;
    const float *Ac = a->A + (size_t)c * N;
    for (int t = 0; t < L; t++) {
        const float x = a->x[(size_t)t * d_inner + c];
        const float dt = a->delta[(size_t)t * d_inner + c];
        const float *B = a->B + (size_t)t * a->bc_stride;
        const float *C = a->C + (size_t)t * a->bc_stride;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int n = 0; n < N; n++) {
            const float hn = expf(dt * Ac[n]) * hc[n] + dt * B[n] * x;
            hc[n] = hn;
            acc += hn * C[n];
        }
        if (a->D) acc += a->D[c] * x;
        if (a->z) acc *= cm_silu(a->z[(size_t)t * a->z_stride + c]);
        y[(size_t)t * d_inner + c] = acc;
    }
}

void cm_selective_scan(const cm_scan_args *a, float *h, float *y) {
    /* Channels are independent: each carries its own N-dimensional state. */
#pragma omp parallel for schedule(static) if ((long)a->L * a->d_inner * a->d_state > 200000)
    for (int c = 0; c < a->d_inner; c++) scan_channel(a, c, h + (size_t)c * a->d_state, y);
}
