/* Weight matrices in f32, bf16, q8 and q4 (matrix.h has the layouts):
 * encoding, decoding, the choice of instruction set, and cm_matmul.
 *
 * One token (L == 1) reads every weight once, so its speed is the rate the
 * weights stream from memory: the GEMV kernels (gemv_kernel.h) read them
 * in their stored form, q8 and q4 as integer dot products with the input
 * quantised to int8 per block. A few rows (a batch of sequences) go
 * through the kernels up to CM_GEMV_MAX_N at a time, sharing each read of
 * a weight. Many rows (prompts) are compute-bound instead: W is decoded a
 * tile at a time to fp32 and OpenBLAS's sgemm does the arithmetic, in
 * fixed tiles that OpenMP's threads share out, as in src/cpu/linear.c
 * (whose reasons apply here). */
#include "cpu/matrix.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cpu/gemv.h"
#include "cpu/vecmath.h"
#include "model/ops.h"

enum {
    GEMV_ROWS = 64,      /* rows of W per GEMV task */
    GEMM_ROWS = 128,     /* rows of W per sgemm tile ... */
    GEMM_COLS = CM_QSUPER, /* ... and columns decoded at a time: 128 KiB of fp32 */
    XQ_STACK_COLS = CM_GEMV_STACK_COLS
};

static const char *const wtype_names[CM_WT_COUNT] = {"f32", "bf16", "q8", "q4"};

const char *cm_wtype_name(cm_wtype t) { return (unsigned)t < CM_WT_COUNT ? wtype_names[t] : "?"; }

static int quantised(cm_wtype t) { return t == CM_WT_Q8 || t == CM_WT_Q4; }

int cm_matrix_stored_cols(cm_wtype t, int cols) {
    return quantised(t) ? (cols + CM_QGROUP - 1) / CM_QGROUP * CM_QGROUP : cols;
}

size_t cm_matrix_row_bytes(cm_wtype t, int cols) {
    const size_t n = (size_t)cm_matrix_stored_cols(t, cols);
    switch (t) {
    case CM_WT_F32: return 4 * n;
    case CM_WT_BF16: return 2 * n;
    case CM_WT_Q8: return n;
    default: return n / 2;
    }
}

int cm_matrix_row_scales(cm_wtype t, int cols) {
    return quantised(t) ? cm_matrix_stored_cols(t, cols) / CM_QBLOCK : 0;
}

size_t cm_matrix_bytes(cm_wtype t, int rows, int cols) {
    return (size_t)rows * (cm_matrix_row_bytes(t, cols) + 2 * (size_t)cm_matrix_row_scales(t, cols));
}

/* ---- encoding ---------------------------------------------------------- */

/* fp32 to fp16, rounded to nearest even; NaN stays NaN, past 65504 inf. */
static uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    const uint32_t a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00;
    if (a >= 0x477ff000u) return sign | 0x7c00; /* 65520 and up round to inf */
    if (a >= 0x38800000u) {                      /* a normal fp16: rebias, round */
        uint32_t h = (a - 0x38000000u) >> 13;
        const uint32_t rest = a & 0x1fff;
        h += rest > 0x1000 || (rest == 0x1000 && (h & 1));
        return sign | (uint16_t)h;
    }
    return sign | (uint16_t)rintf(fabsf(f) * 16777216.0f); /* subnormal: units of 2⁻²⁴ */
}

/* the fp16 of a scale s ≥ 0, at most 65504 so that quants saturate rather
 * than meet an infinite scale; rounded up (s_h ≥ s) when `up` */
static uint16_t scale_f16(float s, int up) {
    uint16_t h = f32_to_f16(fminf(s, 65504.0f));
    if (up && cm_f16_to_f32(h) < s && h < 0x7bff) h++;
    return h;
}

static int clamp_round(float v, int lo, int hi) {
    const float r = rintf(v);
    return r < (float)lo ? lo : r > (float)hi ? hi : (int)r;
}

/* how many of block b's 32 values lie within a row of cols (0 to 32) */
static int block_len(int cols, int b) {
    const int n = cols - b * CM_QBLOCK;
    return n < 0 ? 0 : n < CM_QBLOCK ? n : CM_QBLOCK;
}

/* Where value i of block b of a q8 or q4 row is stored (matrix.h): its
 * byte in the row and, for q4, the shift of its nibble. The blocks of the
 * row's superblocks are interleaved, the rest in plain order. */
static size_t q_pos(cm_wtype t, int cols, int b, int i, int *shift) {
    const int supers = cm_matrix_stored_cols(t, cols) / CM_QSUPER;
    const int per = CM_QSUPER / CM_QBLOCK;
    const int in_super = b < supers * per;
    /* p: the position within the superblock, or the group */
    const int p = in_super ? 32 * (i / 4) + 4 * (b % per) + i % 4 : CM_QBLOCK * (b % 2) + i;
    const size_t base = in_super ? (size_t)(b / per) * CM_QSUPER : (size_t)(b / 2) * CM_QGROUP;
    if (t == CM_WT_Q8) {
        *shift = 0;
        return base + (size_t)p;
    }
    *shift = 4 * ((p / 32) & 1);
    return base / 2 + (size_t)(32 * (p / 64) + p % 32);
}

/* One block's quants and scale: q8, s = max|v|/127 rounded up (so that
 * no |v|/s passes 127 and needs clamping), q = round(v/s). */
static uint16_t quantize_q8(const float *v, int n, int8_t *q) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++) amax = fabsf(v[i]) > amax || v[i] != v[i] ? fabsf(v[i]) : amax;
    if (!(amax <= FLT_MAX)) return 0x7e00; /* NaN or inf: a NaN block */
    const uint16_t h = scale_f16(amax / 127.0f, 1);
    const float s = cm_f16_to_f32(h);
    for (int i = 0; i < n; i++) q[i] = s > 0 ? (int8_t)clamp_round(v[i] / s, -127, 127) : 0;
    return h;
}

/* Σ (v − q·s)² of a q4 block under scale s */
static float q4_error(const float *v, int n, float s) {
    float e = 0.0f;
    for (int i = 0; i < n; i++) {
        const float d = v[i] - (s != 0 ? (float)clamp_round(v[i] / s, -8, 7) * s : 0.0f);
        e += d * d;
    }
    return e;
}

/* q4: of s = −m/8 (m the value of largest magnitude, which then takes the
 * level −8 that has no positive twin) and s = |m|/7 (a finer step when the
 * other values keep away from m's magnitude), whichever fits the block
 * with the smaller squared error; q = clamp(round(v/s), −8, 7). */
static uint16_t quantize_q4(const float *v, int n, int8_t *q) {
    float m = 0.0f;
    for (int i = 0; i < n; i++) m = fabsf(v[i]) > fabsf(m) || v[i] != v[i] ? v[i] : m;
    if (!(fabsf(m) <= FLT_MAX)) return 0x7e00;
    const uint16_t h8 = (uint16_t)(scale_f16(fabsf(m) / 8.0f, 0) | (m > 0 ? 0x8000 : 0)),
                   h7 = scale_f16(fabsf(m) / 7.0f, 0);
    const float e7 = q4_error(v, n, cm_f16_to_f32(h7)), e8 = q4_error(v, n, cm_f16_to_f32(h8));
    const uint16_t h = e7 <= e8 ? h7 : h8;
    const float s = cm_f16_to_f32(h);
    for (int i = 0; i < n; i++) q[i] = s != 0 ? (int8_t)clamp_round(v[i] / s, -8, 7) : 0;
    return h;
}

void cm_matrix_encode_row(cm_wtype t, int cols, const float *src, void *q_row,
                          uint16_t *scale_row) {
    switch (t) {
    case CM_WT_F32: memcpy(q_row, src, sizeof(float) * cols); break;
    case CM_WT_BF16:
        for (int i = 0; i < cols; i++) ((uint16_t *)q_row)[i] = cm_f32_to_bf16(src[i]);
        break;
    default: {
        uint8_t *row = q_row;
        memset(row, t == CM_WT_Q8 ? 0 : 0x88, cm_matrix_row_bytes(t, cols)); /* q = 0 */
        for (int b = 0; b < cm_matrix_row_scales(t, cols); b++) {
            int8_t q[CM_QBLOCK];
            const int n = block_len(cols, b);
            scale_row[b] = t == CM_WT_Q8 ? quantize_q8(src + b * CM_QBLOCK, n, q)
                                         : quantize_q4(src + b * CM_QBLOCK, n, q);
            for (int i = 0; i < n; i++) {
                int shift;
                const size_t at = q_pos(t, cols, b, i, &shift);
                if (t == CM_WT_Q8) row[at] = (uint8_t)q[i];
                else row[at] = (uint8_t)((row[at] & ~(15 << shift)) | (q[i] + 8) << shift);
            }
        }
    }
    }
}

/* ---- decoding ---------------------------------------------------------- */

/* out (256) = one superblock of q8 or q4 quants w, its scales sc (8) */
static inline void decode_super(float *out, cm_wtype t, const uint8_t *w, const uint16_t *sc) {
    float s[8];
    for (int l = 0; l < 8; l++) s[l] = cm_f16_to_f32(sc[l]);
    if (t == CM_WT_Q8) {
        /* byte 32k + 4l + j is value 4k + j of block l */
        for (int k = 0; k < 8; k++)
            for (int l = 0; l < 8; l++)
                for (int j = 0; j < 4; j++)
                    out[32 * l + 4 * k + j] = (float)(int8_t)w[32 * k + 4 * l + j] * s[l];
        return;
    }
    /* byte 32m + i holds positions 64m + i (low) and 64m + 32 + i (high):
     * values 8m + i%4 and 8m + 4 + i%4 of block i/4 */
    for (int m = 0; m < 4; m++)
        for (int i = 0; i < 32; i++) {
            const int v = w[32 * m + i];
            float *o = out + 32 * (i / 4) + 8 * m + i % 4;
            o[0] = (float)((v & 15) - 8) * s[i / 4];
            o[4] = (float)((v >> 4) - 8) * s[i / 4];
        }
}

/* out[0..n) = W[row][c0..c0+n) in fp32; c0 a multiple of CM_QSUPER. */
CM_SIMD_CLONES
static void decode_span(float *out, const cm_matrix *W, int row, int c0, int n) {
    const size_t at = (size_t)row * cm_matrix_row_bytes(W->type, W->cols);
    const uint8_t *q = (const uint8_t *)W->q + at;
    if (W->type == CM_WT_F32) {
        memcpy(out, (const float *)q + c0, sizeof(float) * n);
        return;
    }
    if (W->type == CM_WT_BF16) {
        const uint16_t *h = (const uint16_t *)q + c0;
        for (int i = 0; i < n; i++) {
            const uint32_t bits = (uint32_t)h[i] << 16;
            memcpy(out + i, &bits, 4);
        }
        return;
    }
    const int q4 = W->type == CM_WT_Q4;
    const uint16_t *scale = W->scale + (size_t)row * cm_matrix_row_scales(W->type, W->cols);
    const int super_end = cm_matrix_stored_cols(W->type, W->cols) / CM_QSUPER * CM_QSUPER;
    for (int c = c0; c < c0 + n;) {
        const int b = c / CM_QBLOCK, left = c0 + n - c;
        float *o = out + (c - c0);
        if (c < super_end) { /* a whole superblock, through a buffer when cut short */
            float part[CM_QSUPER];
            decode_super(left < CM_QSUPER ? part : o, W->type, q + (size_t)c / (q4 ? 2 : 1),
                         scale + b);
            if (left < CM_QSUPER) memcpy(o, part, sizeof(float) * left);
            c += CM_QSUPER;
            continue;
        }
        const int len = left < CM_QBLOCK ? left : CM_QBLOCK;
        const float s = cm_f16_to_f32(scale[b]);
        if (!q4) {
            const int8_t *v = (const int8_t *)q + (size_t)b * CM_QBLOCK;
            for (int i = 0; i < len; i++) o[i] = (float)v[i] * s;
        } else {
            const uint8_t *g = q + (size_t)(b / 2) * CM_QBLOCK;
            const int shift = 4 * (b & 1);
            for (int i = 0; i < len; i++) o[i] = (float)((g[i] >> shift & 15) - 8) * s;
        }
        c += CM_QBLOCK;
    }
}

void cm_matrix_row(float *out, const cm_matrix *W, int row) { decode_span(out, W, row, 0, W->cols); }

/* ---- instruction sets -------------------------------------------------- */

static const char *const isa_names[CM_ISA_COUNT] = {"scalar", "avx2", "avx512", "avx512bf16"};
static cm_isa active_isa;
static pthread_once_t isa_once = PTHREAD_ONCE_INIT;

const char *cm_isa_name(cm_isa isa) { return (unsigned)isa < CM_ISA_COUNT ? isa_names[isa] : "?"; }

int cm_isa_from_name(const char *name) {
    for (int i = 0; i < CM_ISA_COUNT; i++)
        if (!strcmp(name, isa_names[i])) return i;
    return -1;
}

int cm_isa_supported(cm_isa isa) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    switch (isa) {
    case CM_ISA_SCALAR: return 1;
    case CM_ISA_AVX2: return avx2;
    case CM_ISA_AVX512:
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    case CM_ISA_AVX512BF16:
        return cm_isa_supported(CM_ISA_AVX512) && __builtin_cpu_supports("avx512bf16");
    default: return 0;
    }
#else
    return isa == CM_ISA_SCALAR;
#endif
}

/* AVX-512 BF16's dot products run at half the rate of FMAs on Intel's
 * cores (Emerald Rapids: 0.5 vdpbf16ps a cycle, 2 FMAs), where widening
 * the weights for 512-bit FMAs does more multiply-adds a second (8 inputs
 * of mamba-130m's in_proj, one thread: 128 against 101 GFLOP/s); on AMD's
 * Zen 4 they did 1.4 times the multiply-adds of widening (docs/performance.md).
 * So on Intel avx512bf16 is taken only when CMAMBA_ISA names it. */
static int bf16_dots_slow(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_is("intel");
#else
    return 0;
#endif
}

static void isa_init(void) {
    const char *want = getenv("CMAMBA_ISA");
    int cap = CM_ISA_COUNT - 1;
    if (bf16_dots_slow()) cap = CM_ISA_AVX512;
    const int named = want && *want ? cm_isa_from_name(want) : -1;
    if (named >= 0) cap = named;
    else if (want && *want)
        fprintf(stderr, "cmamba: CMAMBA_ISA='%s' is not scalar, avx2, avx512 or avx512bf16; ignored\n",
                want);
    while (cap > 0 && !cm_isa_supported((cm_isa)cap)) cap--;
    active_isa = (cm_isa)cap;
}

cm_isa cm_isa_active(void) {
    pthread_once(&isa_once, isa_init);
    return active_isa;
}

cm_isa cm_isa_force(cm_isa isa) {
    pthread_once(&isa_once, isa_init);
    if (cm_isa_supported(isa)) active_isa = isa;
    return active_isa;
}

static cm_gemv_fn *gemv_kernel(cm_isa isa) {
#if defined(__x86_64__) || defined(__i386__)
    if (isa == CM_ISA_AVX512BF16) return cm_gemv_avx512bf16;
    if (isa == CM_ISA_AVX512) return cm_gemv_avx512;
    if (isa == CM_ISA_AVX2) return cm_gemv_avx2;
#endif
    return cm_gemv_scalar;
}

/* ---- products ---------------------------------------------------------- */

/* Worth a parallel region: ~1 µs to open against a product's work. */
static int parallel_worth(long macs, int tasks) { return tasks > 1 && macs > 100000; }

/* x (cols) into the int8 blocks of a q8/q4 product (gemv.h), laid out
 * as a q8 row of P = 32·nblk values is (matrix.h), so that its bytes meet
 * the weights' in the kernels. A block with a non-finite value gets a NaN
 * scale, so that the output is NaN as the fp32 product's would be. Every
 * block is taken as a full 32 values (zeros past cols), so the loops
 * vectorise. */
CM_SIMD_CLONES
static void quantize_input(const float *x, int cols, int nblk, int8_t *q, float *scale,
                           int32_t *nsum) {
    const int super_blocks = nblk / 8 * 8;
    for (int b = 0; b < nblk; b++) {
        const int n = block_len(cols, b);
        float pad[CM_QBLOCK];
        const float *v = x + b * CM_QBLOCK;
        if (n < CM_QBLOCK) { /* the short last block, or padding */
            memset(pad, 0, sizeof pad);
            memcpy(pad, v, sizeof(float) * n);
            v = pad;
        }
        /* probe is NaN iff a value is infinite or NaN (v·0): a sum that
         * vectorises, where a flag and-ed per value had kept the loop scalar */
        float amax = 0.0f, probe = 0.0f;
#pragma omp simd reduction(max : amax) reduction(+ : probe)
        for (int i = 0; i < CM_QBLOCK; i++) {
            const float a = fabsf(v[i]);
            amax = a > amax ? a : amax; /* maxps, where fmaxf is a call */
            probe += v[i] * 0.0f;
        }
        const int finite = probe == 0.0f;
        static const float zeros[CM_QBLOCK];
        if (!finite) v = zeros; /* NaN scale below; no NaN converted to int8 */
        /* |v|·127/amax ≤ 127: no clamping */
        const float inv = finite && amax > 0.0f ? 127.0f / amax : 0.0f;
        int8_t qb[CM_QBLOCK];
        int total = 0;
        for (int i = 0; i < CM_QBLOCK; i++) {
            qb[i] = (int8_t)rintf(v[i] * inv);
            total += qb[i];
        }
        scale[b] = finite ? amax / 127.0f : NAN;
        nsum[b] = -total;
        if (b < super_blocks) { /* value 4k + j at 32k + 4·(b%8) + j of the superblock */
            int8_t *at = q + (size_t)(b / 8) * CM_QSUPER + 4 * (b % 8);
            for (int k = 0; k < 8; k++) memcpy(at + 32 * k, qb + 4 * k, 4);
        } else {
            memcpy(q + (size_t)b * CM_QBLOCK, qb, CM_QBLOCK);
        }
    }
}

/* The inputs of a product by the GEMV kernels: n ≤ CM_GEMV_MAX_N rows of
 * `in`, quantised for q8/q4 or rounded to bf16 for bf16 under avx512bf16
 * (on the stack up to XQ_STACK_COLS columns, else on the heap), or for
 * f32 and widened bf16 rows, copied to rows 64-byte aligned (below). */
typedef struct {
    cm_gemv_args a;
    cm_xquant xq[CM_GEMV_MAX_N];
    union {
        _Alignas(64) int8_t q_stack[CM_GEMV_MAX_N][XQ_STACK_COLS];
        uint16_t b_stack[CM_GEMV_MAX_N][XQ_STACK_COLS];
        float f_stack[CM_GEMV_MAX_N * XQ_STACK_COLS / 2]; /* no larger than b_stack */
    };
    float s_stack[CM_GEMV_MAX_N][XQ_STACK_COLS / CM_QBLOCK];
    int32_t u_stack[CM_GEMV_MAX_N][XQ_STACK_COLS / CM_QBLOCK];
    void *heap;
} gemv_inputs;

static int bf16_inputs(cm_wtype t, cm_isa isa) {
    return t == CM_WT_BF16 && isa == CM_ISA_AVX512BF16;
}

/* Several f32 inputs of dense rows meet them on 512-bit vectors under
 * AVX-512 (gemv_x86.h), and a 512-bit load that straddles two cache lines
 * costs two: inputs not 64-byte aligned, or rows not 64 bytes apart, are
 * copied to rows that are, where they fit in the stack's room for bf16
 * inputs (mamba-130m's in_proj, 512 rows of it in L2, 8 inputs, one
 * thread: 71 → 120 GFLOP/s for f32). */
static void align_inputs(gemv_inputs *g, const float *in, int ld_in, int cols) {
    const int n = g->a.n, ld = (cols + 15) / 16 * 16;
    const size_t room = sizeof g->f_stack / sizeof *g->f_stack;
    if ((size_t)n * ld > room || ((uintptr_t)in % 64 == 0 && ld_in % 16 == 0)) return;
    for (int i = 0; i < n; i++)
        memcpy(g->f_stack + (size_t)i * ld, in + (size_t)i * ld_in, sizeof(float) * cols);
    g->a.x = g->f_stack, g->a.ld_x = ld;
}

/* -1 when a long input finds no memory to be quantised into */
static int gemv_prepare(gemv_inputs *g, float *out, const float *in, int ld_in, const cm_matrix *W,
                        const float *b, int n) {
    g->a = (cm_gemv_args){.W = W, .n = n, .x = in, .ld_x = ld_in, .xq = g->xq, .b = b,
                          .out = out, .ld_out = W->rows};
    g->heap = NULL;
    if (bf16_inputs(W->type, cm_isa_active())) {
        const int cols = W->cols;
        uint16_t *xb = g->b_stack[0];
        if (cols > XQ_STACK_COLS && !(xb = g->heap = malloc(sizeof(uint16_t) * cols * n))) return -1;
        for (int i = 0; i < n; i++) {
            const float *x = in + (size_t)i * ld_in;
            uint16_t *r = xb + (size_t)i * cols;
#pragma omp simd
            for (int c = 0; c < cols; c++) r[c] = cm_f32_to_bf16(x[c]);
        }
        g->a.xb = xb, g->a.ld_xb = cols;
        return 0;
    }
    if (!quantised(W->type)) {
        if (n > 1 && cm_isa_active() >= CM_ISA_AVX512) align_inputs(g, in, ld_in, W->cols);
        return 0;
    }
    const int P = cm_matrix_stored_cols(W->type, W->cols), nblk = P / CM_QBLOCK;
    for (int i = 0; i < n; i++) {
        int8_t *q = g->q_stack[i];
        float *s = g->s_stack[i];
        int32_t *u = g->u_stack[i];
        if (P > XQ_STACK_COLS) {
            if (!g->heap && !(g->heap = malloc(((size_t)P + (sizeof *s + sizeof *u) * nblk) * n)))
                return -1;
            s = (float *)g->heap + (size_t)i * nblk;
            u = (int32_t *)((float *)g->heap + (size_t)n * nblk) + (size_t)i * nblk;
            q = (int8_t *)((float *)g->heap + (size_t)2 * n * nblk) + (size_t)i * P;
        }
        quantize_input(in + (size_t)i * ld_in, W->cols, nblk, q, s, u);
        g->xq[i] = (cm_xquant){.q = q, .scale = s, .nsum = u};
    }
    return 0;
}

/* Rows of W per GEMV task: 64, or fewer for a matrix of few rows, so that
 * every thread gets about as many (x_proj's 80 rows: 8 tasks of 10). */
static int gemv_task_rows(int rows) {
    const int tasks_min = 4 * omp_get_max_threads();
    return rows >= GEMV_ROWS * tasks_min ? GEMV_ROWS : (rows + tasks_min - 1) / tasks_min;
}

/* n ≤ CM_GEMV_MAX_N rows through the active GEMV kernel, the threads
 * sharing W's rows; -1 (nothing done) as gemv_prepare. */
static int gemv(float *out, const float *in, int ld_in, const cm_matrix *W, const float *b, int n) {
    cm_gemv_fn *kernel = gemv_kernel(cm_isa_active());
    gemv_inputs g;
    if (gemv_prepare(&g, out, in, ld_in, W, b, n)) return -1;
    const int per = gemv_task_rows(W->rows), tasks = (W->rows + per - 1) / per;
#pragma omp parallel for schedule(static) if (parallel_worth((long)n * W->rows * W->cols, tasks))
    for (int j = 0; j < tasks; j++) {
        const int r0 = j * per;
        kernel(&g.a, r0, W->rows - r0 < per ? W->rows : r0 + per);
    }
    free(g.heap);
    return 0;
}

int cm_matmul_rows(float *out, int ld_out, const float *in, int ld_in, const cm_matrix *W,
                   const float *b, int L, const int *ranges, int n_ranges) {
    if ((quantised(W->type) && cm_matrix_stored_cols(W->type, W->cols) > XQ_STACK_COLS) ||
        (bf16_inputs(W->type, cm_isa_active()) && W->cols > XQ_STACK_COLS))
        return -1;
    cm_gemv_fn *kernel = gemv_kernel(cm_isa_active());
    for (int t = 0; t < L; t += CM_GEMV_MAX_N) {
        const int n = L - t < CM_GEMV_MAX_N ? L - t : CM_GEMV_MAX_N;
        gemv_inputs g;
        gemv_prepare(&g, out + (size_t)t * ld_out, in + (size_t)t * ld_in, ld_in, W, b, n);
        g.a.ld_out = ld_out;
        for (int k = 0; k < n_ranges; k++) kernel(&g.a, ranges[2 * k], ranges[2 * k + 1]);
    }
    return 0;
}

/* L rows through sgemm, one tile of GEMM_ROWS rows of W per task: its
 * columns decoded GEMM_COLS at a time into fp32 on the task's stack, or an
 * f32 W used in place. out starts as the bias and accumulates. */
static void gemm(float *out, const float *in, int ld_in, const cm_matrix *W, const float *b, int L) {
    const int rows = W->rows, cols = W->cols, tiles = (rows + GEMM_ROWS - 1) / GEMM_ROWS;
#pragma omp parallel for schedule(static) if (parallel_worth((long)L * rows * cols, tiles))
    for (int t = 0; t < tiles; t++) {
        const int r0 = t * GEMM_ROWS, nr = rows - r0 < GEMM_ROWS ? rows - r0 : GEMM_ROWS;
        float *c = out + r0;
        for (int i = 0; i < L; i++) {
            if (b) memcpy(c + (size_t)i * rows, b + r0, sizeof(float) * nr);
            else memset(c + (size_t)i * rows, 0, sizeof(float) * nr);
        }
        if (W->type == CM_WT_F32) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, nr, cols, 1.0f, in, ld_in,
                        (const float *)W->q + (size_t)r0 * cols, cols, 1.0f, c, rows);
            continue;
        }
        float tile[GEMM_ROWS * GEMM_COLS];
        for (int k0 = 0; k0 < cols; k0 += GEMM_COLS) {
            const int nk = cols - k0 < GEMM_COLS ? cols - k0 : GEMM_COLS;
            for (int r = 0; r < nr; r++) decode_span(tile + (size_t)r * nk, W, r0 + r, k0, nk);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, nr, nk, 1.0f, in + k0, ld_in,
                        tile, nk, 1.0f, c, rows);
        }
    }
}

void cm_matmul_strided(float *out, const float *in, int ld_in, const cm_matrix *W,
                       const float *b, int L) {
    if (L < 1) return;
    if (L <= cm_matrix_gemv_rows(W->type)) {
        int t = 0;
        for (int n; t < L; t += n) {
            n = L - t < CM_GEMV_MAX_N ? L - t : CM_GEMV_MAX_N;
            if (gemv(out + (size_t)t * W->rows, in + (size_t)t * ld_in, ld_in, W, b, n)) break;
        }
        if (t >= L) return;
    }
    /* a contiguous f32 input: src/cpu/linear.c's tiles, as before formats */
    if (W->type == CM_WT_F32 && ld_in == W->cols)
        cm_linear(out, in, W->q, b, L, W->cols, W->rows);
    else
        gemm(out, in, ld_in, W, b, L);
}

/* A few rows (a batch of sequences decoding together) go through the GEMV
 * kernels CM_GEMV_MAX_N at a time, sharing each read of W, when that costs
 * less than sgemm (on W decoded to fp32 but for f32): up to 16 rows for
 * f32 and bf16, 64 for q8, q4, and bf16 with AVX-512 BF16's dot products.
 * Measured with mamba-130m. */
int cm_matrix_gemv_rows(cm_wtype t) {
    if (t == CM_WT_BF16) return bf16_inputs(t, cm_isa_active()) ? 64 : 16;
    return t == CM_WT_F32 ? 16 : 64;
}

void cm_matmul(float *out, const float *in, const cm_matrix *W, const float *b, int L) {
    cm_matmul_strided(out, in, W->cols, W, b, L);
}
