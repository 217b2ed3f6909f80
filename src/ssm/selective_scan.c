#include "ssm/selective_scan.h"

#include <math.h>
#include <stddef.h>

#include "model/ops.h"

void cm_selective_scan_ref(const cm_scan_args *a, float *h, float *y) {
    const int L = a->L, d_inner = a->d_inner, N = a->d_state;
    /* Channels are independent: each carries its own N-dimensional state. */
#pragma omp parallel for schedule(static) if ((long)L * d_inner * N > 200000)
    for (int c = 0; c < d_inner; c++) {
        float *hc = h + (size_t)c * N;
        const float *Ac = a->A + (size_t)c * N;
        for (int t = 0; t < L; t++) {
            const float x = a->x[(size_t)t * d_inner + c];
            const float dt = a->delta[(size_t)t * d_inner + c];
            const float *B = a->B + (size_t)t * a->bc_stride;
            const float *C = a->C + (size_t)t * a->bc_stride;
            float acc = 0.0f;
            for (int n = 0; n < N; n++) {
                hc[n] = expf(dt * Ac[n]) * hc[n] + dt * B[n] * x;
                acc += hc[n] * C[n];
            }
            if (a->D) acc += a->D[c] * x;
            if (a->z) acc *= cm_silu(a->z[(size_t)t * a->z_stride + c]);
            y[(size_t)t * d_inner + c] = acc;
        }
    }
}
