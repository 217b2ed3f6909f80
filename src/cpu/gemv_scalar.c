/* The GEMV kernel for any CPU: its primitives as plain loops over 8 lanes,
 * the same lanes and the same integer sums as the SIMD sets. */
#include <string.h>

#include "common.h"
#include "cpu/matrix.h"

typedef struct {
    float v[8];
} vf;

enum { Q8_BIAS = 0 }; /* signed × signed: no bias to remove */

static inline vf vf_zero(void) { return (vf){{0}}; }

static inline vf vf_load(const float *p) {
    vf r;
    memcpy(r.v, p, sizeof r.v);
    return r;
}

static inline vf vf_bcast(const float *p) {
    vf r;
    for (int l = 0; l < 8; l++) r.v[l] = *p;
    return r;
}

static inline vf vf_add(vf a, vf b) {
    for (int l = 0; l < 8; l++) a.v[l] += b.v[l];
    return a;
}

static inline vf vf_mul(vf a, vf b) {
    for (int l = 0; l < 8; l++) a.v[l] *= b.v[l];
    return a;
}

static inline vf vf_fma(vf a, vf b, vf c) {
    for (int l = 0; l < 8; l++) c.v[l] += a.v[l] * b.v[l];
    return c;
}

/* pairwise, in the order of the SIMD sets' reductions */
static inline float vf_sum(vf a) {
    const float s0 = (a.v[0] + a.v[4]) + (a.v[2] + a.v[6]);
    const float s1 = (a.v[1] + a.v[5]) + (a.v[3] + a.v[7]);
    return s0 + s1;
}

/* the top half of an fp32, inline (a call per weight would halve the speed) */
static inline vf vf_bf16(const uint16_t *p) {
    vf r;
    for (int l = 0; l < 8; l++) {
        const uint32_t bits = (uint32_t)p[l] << 16;
        memcpy(&r.v[l], &bits, 4);
    }
    return r;
}

static inline vf vf_f16(const uint16_t *p) {
    vf r;
    for (int l = 0; l < 8; l++) r.v[l] = cm_f16_to_f32(p[l]);
    return r;
}

static inline float f16_1(uint16_t h) { return cm_f16_to_f32(h); }

static inline vf dot_q8(const int8_t *w, const int8_t *x) {
    vf r;
    for (int l = 0; l < 8; l++) {
        int32_t s = 0;
        for (int k = 4 * l; k < 4 * l + 4; k++) s += w[k] * x[k];
        r.v[l] = (float)s;
    }
    return r;
}

/* lane l sums bytes 4l..4l+3 of every 32-byte chunk: the products go
 * into 32 sums, one per byte position (a loop compilers vectorise), which
 * fold into the 8 lanes at the end */
static inline vf fold_lanes(const int32_t *acc) {
    vf r;
    for (int l = 0; l < 8; l++)
        r.v[l] = (float)(acc[4 * l] + acc[4 * l + 1] + acc[4 * l + 2] + acc[4 * l + 3]);
    return r;
}

static inline vf dot_super_q8(const int8_t *w, const int8_t *x, const int32_t *ns) {
    (void)ns; /* no bias */
    int32_t acc[32] = {0};
    for (int c = 0; c < CM_QSUPER; c += 32)
        for (int i = 0; i < 32; i++) acc[i] += w[c + i] * x[c + i];
    return fold_lanes(acc);
}

/* byte 32m + i holds position 64m + i (low nibble) and 64m + 32 + i
 * (high); the nibbles are q + 8, and ns −Σx of each block */
static inline vf dot_super_q4(const uint8_t *w, const int8_t *x, const int32_t *ns) {
    int32_t acc[32] = {0};
    for (int m = 0; m < 4; m++)
        for (int i = 0; i < 32; i++)
            acc[i] += (w[32 * m + i] & 15) * x[64 * m + i] + (w[32 * m + i] >> 4) * x[64 * m + 32 + i];
    vf r = fold_lanes(acc);
    for (int l = 0; l < 8; l++) r.v[l] += (float)(8 * ns[l]);
    return r;
}

static inline void dot_q4(const uint8_t *w, const int8_t *x, vf *lo, vf *hi) {
    for (int l = 0; l < 8; l++) {
        int32_t s_lo = 0, s_hi = 0;
        for (int k = 4 * l; k < 4 * l + 4; k++) {
            s_lo += (w[k] & 15) * x[k];
            s_hi += (w[k] >> 4) * x[32 + k];
        }
        lo->v[l] = (float)s_lo;
        hi->v[l] = (float)s_hi;
    }
}

/* several inputs per weight read: gemv_x86.h's forms, as plain loops,
 * one chunk at a time */
enum { QW = 1 };
typedef struct {
    int16_t v[32];
} vq;
typedef struct {
    int32_t v[8];
} vi;

static inline vf vi_to_vf(vi a) {
    vf r;
    for (int l = 0; l < 8; l++) r.v[l] = (float)a.v[l];
    return r;
}

static inline vq prep_chunks(const uint8_t *w, int c, int q4) {
    vq u;
    for (int i = 0; i < 32; i++)
        u.v[i] = q4 ? (w[32 * (c / 2) + i] >> 4 * (c % 2)) & 15 : (int8_t)w[32 * c + i];
    return u;
}

static inline vi vi_bias(const int32_t *ns, int q4) {
    vi r;
    for (int l = 0; l < 8; l++) r.v[l] = q4 ? 8 * ns[l] : 0;
    return r;
}

static inline vi dot_prep(vi acc, vq u, const int8_t *x, int q4) {
    (void)q4;
    for (int l = 0; l < 8; l++)
        for (int k = 4 * l; k < 4 * l + 4; k++) acc.v[l] += u.v[k] * x[k];
    return acc;
}

#define CM_GEMV_NAME cm_gemv_scalar
#include "cpu/gemv_kernel.h"
