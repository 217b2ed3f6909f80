/* The plain fp32 reference operations of the Mamba forward pass. Loops a
 * reader can check against SPEC.md; fast kernels are tested against these. */
#ifndef CM_OPS_H
#define CM_OPS_H

#include <math.h>
#include <stddef.h>

#include "cpu/vecmath.h"

/* out (L, n_out) = in (L, n_in) · W (n_out, n_in)ᵀ + b (n_out, optional).
 * cm_linear_ref is the plain loop; cm_linear (src/cpu/linear.c) the fast
 * one every caller uses, tested against it. */
void cm_linear_ref(float *out, const float *in, const float *W, const float *b, int L, int n_in,
                   int n_out);
void cm_linear(float *out, const float *in, const float *W, const float *b, int L, int n_in,
               int n_out);

/* out (L, d) = in / sqrt(mean(in²) + eps) · weight (d); out may alias in */
void cm_rmsnorm(float *out, const float *in, const float *weight, int L, int d, float eps);

static inline float cm_silu(float v) { return v / (1.0f + expf(-v)); }

/* softplus(v) = log(1 + eᵛ), and v itself above 20 as in PyTorch */
static inline float cm_softplus(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

/* out (n) = silu(in), softplus(in), as SIMD loops; out may alias in */
void cm_silu_forward(float *out, const float *in, size_t n);
void cm_softplus_forward(float *out, const float *in, size_t n);

#endif
