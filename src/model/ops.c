#include "model/ops.h"

#include <stddef.h>

void cm_linear_ref(float *out, const float *in, const float *W, const float *b, int L, int n_in,
               int n_out) {
#pragma omp parallel for collapse(2) schedule(static) if ((long)L * n_out * n_in > 100000)
    for (int t = 0; t < L; t++) {
        for (int o = 0; o < n_out; o++) {
            const float *x = in + (size_t)t * n_in, *w = W + (size_t)o * n_in;
            float acc = b ? b[o] : 0.0f;
            for (int i = 0; i < n_in; i++) acc += x[i] * w[i];
            out[(size_t)t * n_out + o] = acc;
        }
    }
}

void cm_rmsnorm(float *out, const float *in, const float *weight, int L, int d, float eps) {
    for (int t = 0; t < L; t++) {
        const float *x = in + (size_t)t * d;
        float ss = 0.0f;
        for (int i = 0; i < d; i++) ss += x[i] * x[i];
        float inv = 1.0f / sqrtf(ss / (float)d + eps);
        for (int i = 0; i < d; i++) out[(size_t)t * d + i] = x[i] * inv * weight[i];
    }
}

CM_SIMD_CLONES
void cm_silu_forward(float *out, const float *in, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) out[i] = cm_silu(in[i]);
}

CM_SIMD_CLONES
void cm_softplus_forward(float *out, const float *in, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) out[i] = cm_softplus(in[i]);
}
