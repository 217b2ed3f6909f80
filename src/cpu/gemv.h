/* The GEMV kernels behind cm_matmul (L == 1): one kernel, gemv_kernel.h,
 * compiled once per instruction set over that set's primitives
 * (gemv_scalar.c; gemv_x86.h for gemv_avx2.c, gemv_avx512.c and
 * gemv_avx512bf16.c). */
#ifndef CM_GEMV_H
#define CM_GEMV_H

#include "cpu/matrix.h"

/* The input vector of a q8/q4 product, quantised once per product: per
 * block of 32, scale = max|x|/127 and q = round(x/scale), so that a block's
 * dot product with a weight row is an integer one. q has the matrix's
 * stored column count, laid out as a q8 row (zeros past cols); nsum is
 * −Σq of each block, for kernels whose weight operand is biased to be
 * unsigned (Σ (w + k)·q − k·Σq = Σ w·q). */
typedef struct {
    const int8_t *q;
    const float *scale;
    const int32_t *nsum;
} cm_xquant;

/* A product of W with n ≤ CM_GEMV_MAX_N inputs, which share each read of
 * a weight row. */
enum { CM_GEMV_MAX_N = 8 };

typedef struct {
    const cm_matrix *W;
    int n;
    const float *x;       /* f32 and bf16: input i at x + i·ld_x */
    int ld_x;
    const uint16_t *xb;   /* bf16 by cm_gemv_avx512bf16: input i rounded to */
    int ld_xb;            /* bf16 at xb + i·ld_xb */
    const cm_xquant *xq;  /* q8 and q4: n quantised inputs */
    const float *b;       /* NULL: no bias */
    float *out;           /* output i at out + i·ld_out */
    int ld_out;
} cm_gemv_args;

/* out_i[r] = W[r]·x_i + b[r] for r in [r0, r1), i < n. */
typedef void cm_gemv_fn(const cm_gemv_args *a, int r0, int r1);
cm_gemv_fn cm_gemv_scalar, cm_gemv_avx2, cm_gemv_avx512, cm_gemv_avx512bf16;

#endif
