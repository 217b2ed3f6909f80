/* The weight formats (src/cpu/matrix.h) and cm_matmul, on every
 * instruction set this CPU has.
 *
 * Encoding: f32 is exact; bf16 within half an ulp (|Δ| ≤ 2⁻⁸|v|); q8
 * within half a step, |Δ| ≤ s/2 with s ≤ max|block|/127 rounded up to
 * fp16; q4 |Δ| ≤ max|block|/8 (a step of −m/8, where clamping to 7 may
 * cost a whole step; half a step of |m|/7), and no worse in squared error
 * than plain |m|/7 (but for fp16's rounding of it). The documented byte
 * layout is checked position by position.
 *
 * Products are compared with cm_linear_ref on the decoded weights, for one
 * row and for several (the kernels' forms for up to CM_GEMV_MAX_N inputs
 * sharing each weight read, and groups of them), also a row range on one
 * thread (cm_matmul_rows).
 * Many rows (sgemm on decoded tiles) and the f32/bf16 GEMV kernels work in
 * fp32: max |Δ| / max |ref| ≤ 1e-5. The q8/q4 GEMV kernels (up to
 * cm_matrix_gemv_rows rows) round the input to int8 per block of 32: each output
 * must lie within the bound that rounding allows, Σ_i |W_oi|·xs_i/2
 * (xs = max|x_block|/127), plus 1e-5 of Σ_i |W_oi·x_i| for fp32 sums; the
 * bf16 kernel of avx512bf16 rounds it to bf16: Σ_i |W_oi|·|x_i − bf16(x_i)|
 * plus the same. The worst max|Δ|/max|ref| is printed for each format and
 * instruction set. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <unistd.h>

#include "cmamba.h"
#include "common.h"
#include "cpu/matrix.h"
#include "model/ops.h"
#include "fixtures.h"
#include "test.h"
#include "train/checkpoint.h"
#include "train/train_model.h"

static const double TOL_FP32 = 1e-5;

/* a row of test values: normal with a few outliers, zeros, tiny values,
 * one block of a single nonzero value, by kind */
static void fill_row(float *v, int n, int kind) {
    for (int i = 0; i < n; i++) {
        double g = 0;
        for (int k = 0; k < 4; k++) g += cm_rng_uniform(&test_rng) - 0.5;
        v[i] = (float)g;
        if (kind == 1 && i % 37 == 5) v[i] *= 40.0f;       /* outliers */
        if (kind == 2) v[i] *= 1e-6f;                        /* tiny: subnormal fp16 scales */
        if (kind == 3 && (i / 32) % 3 == 1) v[i] = 0.0f;     /* zero blocks */
        if (kind == 3 && (i / 32) % 3 == 2 && i % 32) v[i] = 0.0f; /* one value a block */
    }
}

static cm_matrix encode(cm_wtype t, int rows, int cols, const float *src, void **q, uint16_t **s) {
    const size_t rb = cm_matrix_row_bytes(t, cols);
    const int ns = cm_matrix_row_scales(t, cols);
    *q = malloc(rows * rb + 1);
    *s = ns ? malloc(sizeof **s * rows * ns) : NULL;
    for (int r = 0; r < rows; r++)
        cm_matrix_encode_row(t, cols, src + (size_t)r * cols, (char *)*q + r * rb,
                             ns ? *s + (size_t)r * ns : NULL);
    return (cm_matrix){.type = t, .rows = rows, .cols = cols, .q = *q, .scale = *s};
}

/* ---- encoding ------------------------------------------------------------ */

static double q4_sse_max7(const float *v, int n) {
    float m = 0;
    for (int i = 0; i < n; i++) m = fmaxf(m, fabsf(v[i]));
    const float s = m / 7;
    double e = 0;
    for (int i = 0; i < n; i++) {
        const float q = s > 0 ? fminf(fmaxf(rintf(v[i] / s), -8), 7) : 0;
        e += ((double)v[i] - q * s) * ((double)v[i] - q * s);
    }
    return e;
}

static void test_roundtrip(cm_wtype t, int cols, int kind) {
    float *v = malloc(sizeof(float) * cols), *back = malloc(sizeof(float) * cols);
    fill_row(v, cols, kind);
    void *q;
    uint16_t *s;
    const cm_matrix W = encode(t, 1, cols, v, &q, &s);
    cm_matrix_row(back, &W, 0);
    int ok = 1;
    for (int b = 0; b * 32 < cols; b++) {
        const int n = cols - b * 32 < 32 ? cols - b * 32 : 32;
        float amax = 0;
        for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(v[b * 32 + i]));
        double sse = 0;
        for (int i = 0; i < n; i++) {
            const double d = fabs((double)back[b * 32 + i] - v[b * 32 + i]);
            double bound = 0;
            switch (t) {
            case CM_WT_F32: bound = 0; break;
            case CM_WT_BF16: bound = ldexp(fabs(v[b * 32 + i]), -8); break;
            case CM_WT_Q8: bound = 0.5 * (amax / 127 * (1 + 1e-3) + ldexp(1, -24)); break;
            default: bound = 1.01 * amax / 8 + 3e-7; break;
            }
            if (!(d <= bound))
                fprintf(stderr, "  value %d: %g decoded as %g (block max %g, bound %g)\n",
                        b * 32 + i, v[b * 32 + i], back[b * 32 + i], amax, bound);
            ok &= d <= bound;
            sse += d * d;
        }
        /* the chosen scale against plain |m|/7, which fp16 rounds (by 2⁻¹¹,
         * or far more where it is subnormal) */
        if (t == CM_WT_Q4 && amax > 1e-3)
            ok &= sse <= q4_sse_max7(v + b * 32, n) * 1.05 + n * (amax * 1e-3) * (amax * 1e-3);
    }
    CHECK_MSG(ok, "%s round trip, cols %d, kind %d", cm_wtype_name(t), cols, kind);
    free(v); free(back); free(q); free(s);
}

/* The layout of matrix.h, position by position: integer values that
 * encode exactly (block maxima 127 for q8, 7 for q4: scale 1), checked at
 * the documented bytes; padding is q = 0 with scale 0 for a padding block. */
static void test_layout(cm_wtype t, int cols) {
    const int P = cm_matrix_stored_cols(t, cols), nblk = P / 32, supers = P / 256;
    const int top = t == CM_WT_Q8 ? 127 : 7;
    float *v = malloc(sizeof(float) * cols);
    for (int i = 0; i < cols; i++)
        v[i] = (float)(i % 32 == 0 ? top : (i * 7 + i / 32) % (2 * top + 1) - top);
    void *qv;
    uint16_t *s;
    encode(t, 1, cols, v, &qv, &s);
    const uint8_t *q = qv;
    int ok = 1;
    for (int b = 0; b < nblk; b++) {
        const int n = cols - b * 32 < 0 ? 0 : cols - b * 32 < 32 ? cols - b * 32 : 32;
        ok &= cm_f16_to_f32(s[b]) == (n ? 1.0f : 0.0f);
        for (int i = 0; i < 32; i++) {
            const int want = i < n ? (int)v[b * 32 + i] : 0;
            int p, got;
            size_t base;
            if (b < 8 * supers) {
                p = 32 * (i / 4) + 4 * (b % 8) + i % 4;
                base = (size_t)(b / 8) * 256;
            } else {
                p = 32 * (b % 2) + i;
                base = (size_t)(b / 2) * 64;
            }
            if (t == CM_WT_Q8) {
                got = (int8_t)q[base + p];
            } else {
                const uint8_t byte = q[base / 2 + 32 * (p / 64) + p % 32];
                got = ((p / 32) % 2 ? byte >> 4 : byte & 15) - 8;
            }
            ok &= got == want;
        }
    }
    CHECK_MSG(ok, "%s layout, cols %d", cm_wtype_name(t), cols);
    free(v); free(qv); free(s);
}

static void test_nonfinite(cm_wtype t) {
    float v[100];
    fill_row(v, 100, 0);
    v[40] = NAN;
    v[70] = INFINITY;
    void *q;
    uint16_t *s;
    const cm_matrix W = encode(t, 1, 100, v, &q, &s);
    float back[100];
    cm_matrix_row(back, &W, 0);
    /* the blocks holding them decode to NaN (or the value, for f32/bf16) */
    CHECK_MSG(isnan(back[40]) && !isfinite(back[70]) && isfinite(back[10]) && isfinite(back[99]),
              "%s non-finite weights", cm_wtype_name(t));
    free(q); free(s);
}

/* ---- products ------------------------------------------------------------ */

/* An input with an infinity or a NaN (rows 1 and 2 of 3) gives non-finite
 * outputs, as the fp32 product does, and leaves the finite input's alone. */
static void test_nonfinite_input(cm_wtype t, int L) {
    enum { ROWS = 9, COLS = 768 };
    float *Wf = malloc(sizeof(float) * ROWS * COLS), in[3 * COLS], out[3 * ROWS];
    for (int r = 0; r < ROWS; r++) fill_row(Wf + (size_t)r * COLS, COLS, 0);
    for (int i = 0; i < 3; i++) fill_row(in + i * COLS, COLS, 0);
    in[COLS + 300] = INFINITY;
    in[2 * COLS + 700] = NAN;
    void *q;
    uint16_t *s;
    const cm_matrix W = encode(t, ROWS, COLS, Wf, &q, &s);
    /* L = 1: one input at a time, each through the single-input kernel */
    for (int i = 0; i < 3; i += L) cm_matmul(out + i * ROWS, in + i * COLS, &W, NULL, L);
    int ok = 1;
    for (int r = 0; r < ROWS; r++)
        ok &= isfinite(out[r]) && !isfinite(out[ROWS + r]) && !isfinite(out[2 * ROWS + r]);
    CHECK_MSG(ok, "%s %s: non-finite inputs, %d at once", cm_isa_name(cm_isa_active()),
              cm_wtype_name(t), L);
    free(Wf); free(q); free(s);
}

/* [isa][format][GEMV, sgemm, GEMV with an input 30 times the others] */
static double worst[CM_ISA_COUNT][CM_WT_COUNT][3];

static void test_matmul(cm_wtype t, int rows, int cols, int L, int bias, int threads) {
    float *Wf = malloc(sizeof(float) * rows * cols);
    for (int r = 0; r < rows; r++) fill_row(Wf + (size_t)r * cols, cols, r % 5 == 4);
    void *q;
    uint16_t *s;
    const cm_matrix W = encode(t, rows, cols, Wf, &q, &s);
    for (int r = 0; r < rows; r++) cm_matrix_row(Wf + (size_t)r * cols, &W, r); /* decoded */
    float *in = rnd((size_t)L * cols, -1, 1), *b = bias ? rnd(rows, -1, 1) : NULL;
    const int outlier = L == 1 && cols > 40;
    if (outlier) in[7] *= 30; /* a block with an outlier: its other inputs get coarse steps */
    float *out = rnd((size_t)L * rows, 0, 0), *ref = rnd((size_t)L * rows, 0, 0);
    cmamba_set_threads(threads);
    cm_matmul(out, in, &W, b, L);
    cm_linear_ref(ref, in, Wf, b, L, cols, rows);
    double num = 0, den = 0;
    int ok = 1;
    for (int i = 0; i < L * rows; i++) {
        num = fmax(num, fabs((double)out[i] - ref[i]));
        den = fmax(den, fabs((double)ref[i]));
    }
    const double e = den > 0 ? num / den : num;
    const cm_isa isa = cm_isa_active();
    const int gemv = L <= cm_matrix_gemv_rows(t);
    const int int8_inputs = gemv && (t == CM_WT_Q8 || t == CM_WT_Q4);
    const int bf16_inputs = gemv && t == CM_WT_BF16 && isa == CM_ISA_AVX512BF16;
    if (int8_inputs || bf16_inputs) {
        /* the inputs' rounding, weighted by |w|: half a step of the block's
         * int8 scale, or the exact distance to the nearest bf16 */
        for (int j = 0; j < L * rows; j++) {
            const int o = j % rows;
            const float *x = in + (size_t)(j / rows) * cols;
            double bound = 0, mag = b ? fabs(b[o]) : 0;
            for (int i = 0; i < cols; i++) {
                double step;
                if (bf16_inputs) {
                    step = fabs((double)x[i] - cm_bf16_to_f32(cm_f32_to_bf16(x[i])));
                } else {
                    const int b0 = i / 32 * 32, n = cols - b0 < 32 ? cols - b0 : 32;
                    float amax = 0;
                    for (int k = 0; k < n; k++) amax = fmaxf(amax, fabsf(x[b0 + k]));
                    step = amax / 127 / 2;
                }
                bound += fabs(Wf[(size_t)o * cols + i]) * step;
                mag += fabs((double)Wf[(size_t)o * cols + i] * x[i]);
            }
            ok &= fabs((double)out[j] - ref[j]) <= bound * (1 + 1e-4) + 1e-5 * mag;
        }
    } else {
        ok = e <= TOL_FP32;
    }
    CHECK_MSG(ok, "%s %s: %d x %d, L %d, bias %d, %d threads: max|d|/max|ref| %.2e",
              cm_isa_name(isa), cm_wtype_name(t), rows, cols, L, bias, threads, e);
    double *w = &worst[isa][t][L > cm_matrix_gemv_rows(t) ? 1 : outlier ? 2 : 0];
    *w = fmax(*w, e);
    free(Wf); free(q); free(s); free(in); free(b); free(out); free(ref);
}

/* the strided form reads rows of a wider buffer, as dt_proj does: the
 * same outputs as the packed rows (bit for bit through the same kernels),
 * and as the reference */
static void test_strided(cm_wtype t, int L) {
    enum { ROWS = 70, COLS = 48, LD = 80 };
    float *Wf = rnd(ROWS * COLS, -1, 1), *in = rnd((size_t)L * LD, -1, 1),
          *packed = malloc(sizeof(float) * L * COLS), *a = malloc(sizeof(float) * L * ROWS),
          *b = malloc(sizeof(float) * L * ROWS);
    double *ref = malloc(sizeof(double) * L * ROWS);
    void *q;
    uint16_t *s;
    const cm_matrix W = encode(t, ROWS, COLS, Wf, &q, &s);
    for (int r = 0; r < ROWS; r++) cm_matrix_row(Wf + r * COLS, &W, r);
    for (int i = 0; i < L; i++) memcpy(packed + i * COLS, in + i * LD, sizeof(float) * COLS);
    cm_matmul_strided(a, in, LD, &W, NULL, L);
    cm_matmul(b, packed, &W, NULL, L);
    for (int i = 0; i < L * ROWS; i++) ref[i] = dot(packed + i / ROWS * COLS, Wf + i % ROWS * COLS, COLS);
    const int gemv = L <= cm_matrix_gemv_rows(t) && t != CM_WT_F32;
    const double e = rel_err_f32_f64(a, ref, L * ROWS);
    CHECK_MSG(gemv ? !memcmp(a, b, sizeof(float) * L * ROWS) : e <= TOL_FP32, "%s strided, L %d: %.2e",
              cm_wtype_name(t), L, e);
    /* the packed rows one float past malloc's alignment, which the AVX-512
     * kernels copy to aligned rows: the same bits */
    float *shifted = malloc(sizeof(float) * (L * COLS + 1));
    memcpy(shifted + 1, packed, sizeof(float) * L * COLS);
    cm_matmul(a, shifted + 1, &W, NULL, L);
    if (L <= cm_matrix_gemv_rows(t))
        CHECK_MSG(!memcmp(a, b, sizeof(float) * L * ROWS), "%s unaligned input, L %d", cm_wtype_name(t), L);
    free(shifted);
    free(Wf); free(in); free(packed); free(a); free(b); free(ref); free(q); free(s);
}

/* cm_matmul_rows: two ranges of rows on the calling thread, the same bits as
 * those rows of the whole product (the same kernels), written into an
 * output of a wider stride, nothing outside them */
static void test_row_range(cm_wtype t, int L) {
    enum { ROWS = 300, COLS = 300, LD_OUT = 310, R0 = 37, R1 = 211, R2 = 250, R3 = 251 };
    float *Wf = rnd(ROWS * COLS, -1, 1), *in = rnd((size_t)L * COLS, -1, 1),
          *b = rnd(ROWS, -1, 1), *full = malloc(sizeof(float) * L * ROWS),
          *part = rnd((size_t)L * LD_OUT, 0, 0);
    void *q;
    uint16_t *s;
    const cm_matrix W = encode(t, ROWS, COLS, Wf, &q, &s);
    cm_matmul(full, in, &W, b, L);
    static const int ranges[] = {R0, R1, R2, R3};
    CHECK(cm_matmul_rows(part, LD_OUT, in, COLS, &W, b, L, ranges, 2) == 0);
    int same = 1;
    for (int i = 0; i < L; i++)
        for (int r = 0; r < LD_OUT; r++) {
            const float v = part[(size_t)i * LD_OUT + r];
            same &= (r >= R0 && r < R1) || (r >= R2 && r < R3) ? v == full[(size_t)i * ROWS + r]
                                                               : v == 0.0f;
        }
    CHECK_MSG(same, "%s rows [%d, %d) and [%d, %d) of %d inputs differ from the whole product",
              cm_wtype_name(t), R0, R1, R2, R3, L);
    free(Wf); free(in); free(b); free(full); free(part); free(q); free(s);
}

/* ---- whole models -------------------------------------------------------- */

/* A small random model (d_model 64, dt_rank 4: every matrix has a short
 * block and padding; a superblock and a tail in x_proj's rows) run with
 * each format: the logits of a sequence, through the selective scan and
 * through recurrent steps, against the f32 model's; and the step path
 * against the sequence path of the same format. */

static double rms_rel(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / den);
}

static void test_model(const char *dir, int tied) {
    const cmamba_config cfg = {.d_model = 64, .n_layer = 2, .vocab_size = 300, .d_inner = 128,
                               .d_state = 8, .d_conv = 4, .dt_rank = 4, .expand = 2,
                               .eps = 1e-5f, .use_conv_bias = 1, .tie_embeddings = tied};
    enum { T = 40 };
    cm_train_model *tm;
    cmamba_error err;
    CHECK(cm_train_model_new(&cfg, 3, &tm, &err) == 0);
    uint64_t rng = 5;
    for (size_t i = 0; i < tm->n_params; i++) tm->params[i] += 0.05f * (float)cm_rng_normal(&rng);
    CHECK_MSG(cm_model_save(dir, tm, &err) == 0, "%s", err.msg);
    cm_train_model_free(tm);
    int32_t ids[T];
    for (int i = 0; i < T; i++) ids[i] = (int32_t)(cm_rng_u64(&rng) % cfg.vocab_size);
    const size_t n = (size_t)T * cfg.vocab_size;
    float *ref = malloc(sizeof(float) * n), *seq = malloc(sizeof(float) * n),
          *step = malloc(sizeof(float) * n);
    size_t bytes[5] = {0};
    for (int d = CMAMBA_DTYPE_F32; d <= CMAMBA_DTYPE_Q4; d++) {
        cmamba_model *m;
        cmamba_state *st;
        if (cmamba_model_load_dtype(dir, (cmamba_dtype)d, &m, &err)) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        CHECK(cmamba_model_dtype(m) == (cmamba_dtype)d);
        bytes[d] = cmamba_model_weight_bytes(m);
        CHECK(cmamba_state_new(m, &st, &err) == 0);
        CHECK(cmamba_forward(m, st, ids, T, seq, 1, &err) == 0);
        cmamba_state_reset(st);
        for (int t = 0; t < T; t++)
            CHECK(cmamba_step(m, st, ids[t], step + (size_t)t * cfg.vocab_size, &err) == 0);
        if (d == CMAMBA_DTYPE_F32) memcpy(ref, seq, sizeof(float) * n);
        const double e_seq = rel_err(seq, ref, n), e_step = rel_err(step, ref, n),
                     e_path = rel_err(step, seq, n), rms = rms_rel(seq, ref, n);
        /* fp32 reassociation for f32; then each format's rounding of the
         * weights (2⁻⁸ relative for bf16, half a step of 1/127 or 1/7 of a
         * block's largest weight), and for steps q8's and q4's int8 inputs */
        static const double tol[] = {0, 1e-5, 1e-2, 3e-2, 4e-1};
        printf("model (%s): %-4s logits vs f32: max|d|/max|ref| sequence %.2e, steps %.2e "
               "(tol %.0e), rms %.2e; steps vs sequence %.2e; %zu weight bytes a token\n",
               tied ? "tied" : "untied", cmamba_dtype_name((cmamba_dtype)d), e_seq, e_step, tol[d],
               rms, e_path, bytes[d]);
        CHECK(e_seq <= tol[d] && e_step <= tol[d] && e_path <= fmax(tol[d], 1e-5));
        cmamba_state_free(st);
        cmamba_model_free(m);
    }
    for (int d = CMAMBA_DTYPE_BF16; d <= CMAMBA_DTYPE_Q4; d++) CHECK(bytes[d] < bytes[d - 1]);
    free(ref); free(seq); free(step);
}

int main(void) {
    /* the published sizes' dt_rank 48, 64, 96, 128, 160 and d_model 768 ... 2560 among them */
    static const int cols_rt[] = {1,   5,   31,  32,  33,  48,  64,  96,   100, 128,
                                  160, 255, 256, 257, 300, 768, 1003, 1536, 2560};
    for (int t = 0; t < CM_WT_COUNT; t++) {
        for (size_t i = 0; i < sizeof cols_rt / sizeof *cols_rt; i++)
            for (int kind = 0; kind < 4; kind++) test_roundtrip((cm_wtype)t, cols_rt[i], kind);
        test_nonfinite((cm_wtype)t);
    }
    for (int t = CM_WT_Q8; t <= CM_WT_Q4; t++)
        for (size_t i = 0; i < sizeof cols_rt / sizeof *cols_rt; i++)
            test_layout((cm_wtype)t, cols_rt[i]);
    printf("round trips, layout, non-finite weights: %d checks\n", test_checks);

    /* (rows, cols): dt_proj and x_proj of mamba-130m (dt_rank 48: blocks of
     * 32 + 16; 48 + 2·16 rows), odd sizes, superblocks with and without a
     * tail, a head-like tall matrix, a dt_proj of dt_rank 160 (2.8b) */
    static const int shapes[][2] = {{1536, 48}, {80, 1536}, {1003, 768}, {64, 1003}, {7, 33},
                                    {130, 7},   {37, 300},  {200, 320},  {3, 1},     {5000, 64},
                                    {640, 160}};
    /* 3, 8: one product of several inputs; 11: 8 + 3; 65: past every
     * format's GEMV rows */
    static const int Ls[] = {1, 3, 8, 11, 65};
    for (int isa = 0; isa < CM_ISA_COUNT; isa++) {
        if (!cm_isa_supported((cm_isa)isa)) {
            printf("%s: not supported by this CPU, skipped\n", cm_isa_name((cm_isa)isa));
            continue;
        }
        cm_isa_force((cm_isa)isa);
        for (int t = 0; t < CM_WT_COUNT; t++) {
            for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
                for (size_t l = 0; l < sizeof Ls / sizeof *Ls; l++)
                    test_matmul((cm_wtype)t, shapes[i][0], shapes[i][1], Ls[l], (int)(i + l) % 2,
                                1 + (int)(i % 2));
            test_strided((cm_wtype)t, 5);
            for (int L = 1; L <= 11; L += 5) test_row_range((cm_wtype)t, L);
            test_strided((cm_wtype)t, 65);
            test_nonfinite_input((cm_wtype)t, 1);
            test_nonfinite_input((cm_wtype)t, 3);
            printf("%-6s %-4s  max|d|/max|ref|: GEMV %.2e, with an outlier input %.2e (%s); "
                   "sgemm %.2e (tol %.0e)\n", cm_isa_name((cm_isa)isa), cm_wtype_name((cm_wtype)t),
                   worst[isa][t][0], worst[isa][t][2],
                   t >= CM_WT_Q8 ? "within the int8 input bound"
                   : t == CM_WT_BF16 && isa == CM_ISA_AVX512BF16 ? "within the bf16 input bound"
                                                                  : "tol 1e-05",
                   worst[isa][t][1],
                   TOL_FP32);
        }
    }
    char dir[] = "/tmp/cmamba-quant-XXXXXX";
    if (!mkdtemp(dir)) SKIP("no temporary folder");
    for (int isa = CM_ISA_COUNT - 1; isa >= 0; isa--) /* the best this CPU has */
        if (cm_isa_supported((cm_isa)isa)) {
            cm_isa_force((cm_isa)isa);
            break;
        }
    test_model(dir, 1);
    test_model(dir, 0);
    remove_model_dir(dir);
    return test_summary();
}
