/* The GEMV kernel, included once per instruction set after that set's
 * primitives, which work on 8 fp32 lanes (vf) and 32-byte chunks of
 * quants:
 *
 *   vf_zero() vf_load(p) vf_bcast(p) vf_add(a, b) vf_mul(a, b)
 *   vf_fma(a, b, c) = a·b + c   vf_sum(a) (a float)
 *   vf_bf16(p), vf_f16(p)   8 bf16 / fp16 values as fp32; f16_1(h) one
 *   dot_super_q8(w, x, ns)  a q8 superblock (256 bytes) · 256 int8 inputs
 *                           laid out alike: lane l is block l's Σ w·x,
 *                           exactly (ns, −Σx of the 8 blocks, removes a
 *                           bias the instructions need)
 *   dot_super_q4(w, x, ns)  the same for a q4 superblock (128 bytes)
 *   dot_q8(w, x)            32 plain q8 bytes · 32 inputs: lane l holds
 *                           Σ (w + Q8_BIAS)·x over bytes 4l..4l+3
 *   dot_q4(w, x, lo, hi)    a plain q4 group (32 bytes) · 64 inputs: lo
 *                           for the low nibbles (block 0), hi for the high
 *
 * for several inputs at once (rows_quant_n), prepared chunks vq and int32
 * lanes vi: prep_chunks, vi_bias, dot_prep, vi_to_vf, QW chunks a vq;
 *
 * for the f32 and bf16 rows, optionally (CM_GEMV_WIDE) a wider fp32
 * vector vd of VD lanes: vd_zero, vd_load, vd_bf16, vd_fma,
 * vd_add, vd_sum, as vf's (vf itself where the set has none);
 *
 * with CM_GEMV_BF16DOT, for bf16 rows and inputs rounded to bf16 (the
 * caller's xb): vbw (VBW bf16 values), vbw_load(p), vbw_load_part(p, n),
 * vd_dot_bf16(acc, w, x) into a vd;
 *
 * and CM_GEMV_NAME, the function to define. A weight row streams from
 * memory once per product, so the loops keep the work per byte small: a
 * superblock's integer dot products (matrix.h) need one conversion and
 * one FMA with the combined scales of its 8 blocks. For one input the rows
 * go in order, one at a time, a single stream fetched ahead in software
 * (two rows at a time, two streams, measured half as fast); for
 * several, the products are bound by arithmetic instead. */
#include "common.h"
#include "cpu/gemv.h"

#ifndef CM_GEMV_BF16DOT
#define CM_GEMV_BF16DOT 0
#endif

#ifndef CM_GEMV_WIDE
enum { VD = 8 };
typedef vf vd;
static inline vd vd_zero(void) { return vf_zero(); }
static inline vd vd_load(const float *p) { return vf_load(p); }
static inline vd vd_bf16(const uint16_t *p) { return vf_bf16(p); }
static inline vd vd_fma(vd a, vd b, vd c) { return vf_fma(a, b, c); }
static inline vd vd_add(vd a, vd b) { return vf_add(a, b); }
static inline float vd_sum(vd a) { return vf_sum(a); }
#endif

/* Weight rows are fetched this far ahead in software, into every cache
 * level, 64 bytes for every 64 consumed. The weights of a step stream
 * from memory in one pass, and on Intel's Sapphire/Emerald Rapids cores
 * the hardware prefetchers alone kept too few lines in flight: one
 * thread's GEMV read 52-75% of the stream rate, with this 79-100%
 * (bench_gemv, all formats; mamba-130m decoding on one thread: f32 19-23
 * to 22-28 tokens/s, q4 98-110 to 160-220). On AMD's Zen 4 the same had
 * measured no faster for f32 and q8 but 5% faster for q4, whose rows cost
 * the most instructions per byte. */
enum { WEIGHT_PREFETCH = 4096 };

static inline void prefetch_weights(const void *p, int bytes) {
    for (int l = 0; l < bytes; l += 64) __builtin_prefetch((const char *)p + WEIGHT_PREFETCH + l, 0, 3);
}

/* The products of several inputs spend long enough on each weight that
 * the weight stream's misses, not the arithmetic, bounded them, the
 * hardware prefetcher being busy with the inputs' streams: the weights are
 * fetched this far ahead in software (mamba-130m in f32 at batch 8, one
 * thread on Zen 4: 87 to 115 tokens/s), into every cache level (on
 * Emerald Rapids, 2 threads, than into the nearest only: f32 161-170 to
 * 206-247 tokens/s, q8 365-437 to 487-614). */
enum { MULTI_PREFETCH = 4096 };

/* W[r]·x for f32 (bf16 = 0) or bf16 rows, the bf16 weights widened for
 * FMAs (with CM_GEMV_BF16DOT, bf16 rows go to rows_bf16dot_n instead).
 * Four accumulators: a chain of FMAs waits their latency at every step,
 * and one chain per vector would bound a row at a few weights per cycle,
 * below memory's pace. */
static inline float row_dense(const void *row, const float *x, int n, int bf16) {
    const float *wf = row;
    const uint16_t *wh = row;
    const int esize = bf16 ? 2 : 4;
#define MAC(a, i) vd_fma(bf16 ? vd_bf16(wh + (i)) : vd_load(wf + (i)), vd_load(x + (i)), a)
    vd a0 = vd_zero(), a1 = vd_zero(), a2 = vd_zero(), a3 = vd_zero();
    int i = 0;
    for (; i + 4 * VD <= n; i += 4 * VD) {
        prefetch_weights((const char *)row + (size_t)i * esize, 4 * VD * esize);
        a0 = MAC(a0, i);
        a1 = MAC(a1, i + VD);
        a2 = MAC(a2, i + 2 * VD);
        a3 = MAC(a3, i + 3 * VD);
    }
    for (; i + VD <= n; i += VD) a0 = MAC(a0, i);
#undef MAC
    a0 = vd_add(vd_add(a0, a1), vd_add(a2, a3));
    float s = vd_sum(a0);
    for (; i < n; i++) s += (bf16 ? cm_bf16_to_f32(wh[i]) : wf[i]) * x[i];
    return s;
}

/* The plain group of blocks b, b + 1 of a q8 or q4 row (after its
 * superblocks), dotted with an input into acc; its products carry the bias
 * of the unsigned operand, whose scaled block sums go into *bias_s. */
static inline vf group_dot(const uint8_t *w, const uint16_t *s, const cm_xquant *xq, int b,
                           int q4, vf acc, float *bias_s) {
    const float f0 = f16_1(s[b]) * xq->scale[b], f1 = f16_1(s[b + 1]) * xq->scale[b + 1];
    *bias_s += f0 * (float)xq->nsum[b] + f1 * (float)xq->nsum[b + 1];
    const int8_t *xg = xq->q + (size_t)b * CM_QBLOCK;
    vf lo, hi;
    if (q4) {
        dot_q4(w + (size_t)b * CM_QBLOCK / 2, xg, &lo, &hi);
    } else {
        lo = dot_q8((const int8_t *)w + (size_t)b * CM_QBLOCK, xg);
        hi = dot_q8((const int8_t *)w + (size_t)(b + 1) * CM_QBLOCK, xg + CM_QBLOCK);
    }
    return vf_fma(hi, vf_bcast(&f1), vf_fma(lo, vf_bcast(&f0), acc));
}

/* W[r]·x for a q8 (q4 = 0) or q4 row of nblk blocks (matrix.h's layout):
 * Σ_b f_b·(integer dot of block b), f_b = ws_b·xs_b the product of the
 * weight and input scales. The superblocks, then the 0-3 plain groups,
 * whose products carry the bias of the unsigned operand until the end. */
static inline float row_quant(const uint8_t *w, const uint16_t *s, const cm_xquant *xq,
                              int nblk, int q4) {
    const int supers = nblk / 8, super_bytes = q4 ? CM_QSUPER / 2 : CM_QSUPER;
    vf acc = vf_zero();
    for (int k = 0; k < supers; k++) {
        const uint8_t *wk = w + (size_t)k * super_bytes;
        const int8_t *xk = xq->q + (size_t)k * CM_QSUPER;
        const int32_t *ns = xq->nsum + 8 * k;
        prefetch_weights(wk, super_bytes);
        const vf f = vf_mul(vf_f16(s + 8 * k), vf_load(xq->scale + 8 * k));
        acc = vf_fma(q4 ? dot_super_q4(wk, xk, ns) : dot_super_q8((const int8_t *)wk, xk, ns), f, acc);
    }
    float bias_s = 0.0f; /* Σ f_b·(−Σq_b) of the groups */
    for (int b = 8 * supers; b < nblk; b += 2) acc = group_dot(w, s, xq, b, q4, acc, &bias_s);
    return vf_sum(acc) + (q4 ? 8.0f : (float)Q8_BIAS) * bias_s;
}

#if CM_GEMV_BF16DOT
/* W[r + j]·x_i for nr bf16 rows and n ≥ 1 inputs rounded to bf16 (input
 * i at xb + i·ldb): VBW columns a step, the last step's loads masked. */
static inline __attribute__((always_inline)) void
rows_bf16dot_n(const char *bytes, size_t row_bytes, int nr, const uint16_t *xb, int ldb, int cols,
               int n, float out[][CM_GEMV_MAX_N]) {
    vd acc[2][CM_GEMV_MAX_N];
    for (int j = 0; j < nr; j++)
        for (int i = 0; i < n; i++) acc[j][i] = vd_zero();
    /* whole steps, then the masked last: one loop body with both kinds of
     * load had GCC store the accumulators to the stack at every step */
    int c = 0;
    for (; c + VBW <= cols; c += VBW) {
        vbw w[2];
        for (int j = 0; j < nr; j++) {
            const uint16_t *p = (const uint16_t *)(bytes + j * row_bytes) + c;
            __builtin_prefetch(p + MULTI_PREFETCH / 2, 0, 3);
            w[j] = vbw_load(p);
        }
        for (int i = 0; i < n; i++) {
            const vbw xi = vbw_load(xb + (size_t)i * ldb + c);
            for (int j = 0; j < nr; j++) acc[j][i] = vd_dot_bf16(acc[j][i], w[j], xi);
        }
    }
    if (c < cols) {
        vbw w[2];
        for (int j = 0; j < nr; j++)
            w[j] = vbw_load_part((const uint16_t *)(bytes + j * row_bytes) + c, cols - c);
        for (int i = 0; i < n; i++) {
            const vbw xi = vbw_load_part(xb + (size_t)i * ldb + c, cols - c);
            for (int j = 0; j < nr; j++) acc[j][i] = vd_dot_bf16(acc[j][i], w[j], xi);
        }
    }
    for (int j = 0; j < nr; j++)
        for (int i = 0; i < n; i++) out[j][i] = vd_sum(acc[j][i]);
}
#endif

/* W[r + j]·x_i for nr (1 or 2) f32 or bf16 rows, row_bytes apart, and
 * n ≥ 2 inputs: each weight vector is loaded (and widened) once for all
 * the inputs, and each input vector once for the nr rows (two rows: half
 * the input loads per multiply-add); the accumulators are nr·n independent
 * chains. With CM_GEMV_BF16DOT, bf16 rows go to rows_bf16dot_n: on Zen 4
 * its dot products of pairs (then 16 columns a step) did at 8 inputs 1.4
 * times the multiply-adds per second of widening the weights for FMAs
 * (one thread, mamba-130m's in_proj); on Emerald Rapids, 0.8 times
 * widening onto 512-bit vectors. */
static inline __attribute__((always_inline)) void
rows_dense_n(const void *row, size_t row_bytes, int nr, const float *x, int ld,
             const uint16_t *xb, int ldb, int cols, int bf16, int n, float out[][CM_GEMV_MAX_N]) {
    const char *bytes = row;
#if CM_GEMV_BF16DOT
    if (bf16) {
        rows_bf16dot_n(bytes, row_bytes, nr, xb, ldb, cols, n, out);
        return;
    }
#else
    (void)xb, (void)ldb;
#endif
    const int esize = bf16 ? 2 : 4, step = VD;
    vd acc[2][CM_GEMV_MAX_N];
    for (int j = 0; j < nr; j++)
        for (int i = 0; i < n; i++) acc[j][i] = vd_zero();
    int c = 0;
    for (; c + step <= cols; c += step) {
        const char *p[2];
        for (int j = 0; j < nr; j++) {
            p[j] = bytes + j * row_bytes + (size_t)c * esize;
            if (c * esize % 64 == 0) __builtin_prefetch(p[j] + MULTI_PREFETCH, 0, 3);
        }
        vd w[2];
        for (int j = 0; j < nr; j++)
            w[j] = bf16 ? vd_bf16((const uint16_t *)p[j]) : vd_load((const float *)p[j]);
        for (int i = 0; i < n; i++) {
            const vd xi = vd_load(x + (size_t)i * ld + c);
            for (int j = 0; j < nr; j++) acc[j][i] = vd_fma(w[j], xi, acc[j][i]);
        }
    }
    for (int j = 0; j < nr; j++) {
        const float *wf = (const float *)(bytes + j * row_bytes);
        const uint16_t *wh = (const uint16_t *)(bytes + j * row_bytes);
        for (int i = 0; i < n; i++) {
            float s = vd_sum(acc[j][i]);
            for (int k = c; k < cols; k++)
                s += (bf16 ? cm_bf16_to_f32(wh[k]) : wf[k]) * x[(size_t)i * ld + k];
            out[j][i] = s;
        }
    }
}

/* W[r]·x_i for a q8 or q4 row and n ≥ 2 inputs: each chunk of a
 * superblock is prepared once (prep_chunks: the q8 bias, the q4 nibbles
 * unpacked) and dotted with every input, the n integer sums n independent
 * chains. The plain groups after the superblocks as in row_quant. */
static inline __attribute__((always_inline)) void
rows_quant_n(const uint8_t *w, const uint16_t *s, const cm_xquant *xq, int nblk, int q4, int n,
             float *out) {
    const int supers = nblk / 8, super_bytes = q4 ? CM_QSUPER / 2 : CM_QSUPER;
    vf acc[CM_GEMV_MAX_N];
    for (int i = 0; i < n; i++) acc[i] = vf_zero();
    for (int k = 0; k < supers; k++) {
        const uint8_t *wk = w + (size_t)k * super_bytes;
        for (int l = 0; l < super_bytes; l += 64) __builtin_prefetch(wk + l + MULTI_PREFETCH, 0, 3);
        vi d[CM_GEMV_MAX_N];
        for (int i = 0; i < n; i++) d[i] = vi_bias(xq[i].nsum + 8 * k, q4);
        for (int c = 0; c < 8; c += QW) {
            const vq u = prep_chunks(wk, c, q4);
            for (int i = 0; i < n; i++)
                d[i] = dot_prep(d[i], u, xq[i].q + (size_t)k * CM_QSUPER + 32 * c, q4);
        }
        const vf ws = vf_f16(s + 8 * k);
        for (int i = 0; i < n; i++)
            acc[i] = vf_fma(vi_to_vf(d[i]), vf_mul(ws, vf_load(xq[i].scale + 8 * k)), acc[i]);
    }
    for (int i = 0; i < n; i++) {
        float bias_s = 0.0f;
        for (int b = 8 * supers; b < nblk; b += 2)
            acc[i] = group_dot(w, s, &xq[i], b, q4, acc[i], &bias_s);
        out[i] = vf_sum(acc[i]) + (q4 ? 8.0f : (float)Q8_BIAS) * bias_s;
    }
}

/* nr rows (2 only for f32 and bf16) for each n: the loops over the
 * inputs unrolled, their accumulators in registers */
static void rows_n(const cm_gemv_args *a, const uint8_t *row, size_t row_bytes, int nr,
                   const uint16_t *s, int nblk, float out[][CM_GEMV_MAX_N]) {
    const cm_matrix *W = a->W;
    switch (W->type) {
    case CM_WT_F32:
    case CM_WT_BF16: {
        const int bf16 = W->type == CM_WT_BF16;
#define DENSE_NR(nr, k) \
    rows_dense_n(row, row_bytes, nr, a->x, a->ld_x, a->xb, a->ld_xb, W->cols, bf16, k, out)
#define DENSE(k)                                 \
    case k:                                      \
        if (nr == 2) DENSE_NR(2, k);             \
        else DENSE_NR(1, k);                     \
        break
        switch (a->n) { DENSE(2); DENSE(3); DENSE(4); DENSE(5); DENSE(6); DENSE(7); default: DENSE(8); }
#undef DENSE
#undef DENSE_NR
        break;
    }
    default: {
        const int q4 = W->type == CM_WT_Q4;
#define QUANT(k) case k: rows_quant_n(row, s, a->xq, nblk, q4, k, out[0]); break
        switch (a->n) { QUANT(2); QUANT(3); QUANT(4); QUANT(5); QUANT(6); QUANT(7); default: QUANT(8); }
#undef QUANT
    }
    }
}

/* Rows [r0, r1) for one input, the format a constant in each caller: the
 * loop then holds nothing but the row's product (a switch on the format
 * per row cost short rows, dt_proj's 48 weights, a third of their time). */
static inline __attribute__((always_inline)) void rows_1(const cm_gemv_args *a, int r0, int r1,
                                                         cm_wtype type) {
    const cm_matrix *W = a->W;
    const size_t row_bytes = cm_matrix_row_bytes(type, W->cols);
    const int nblk = cm_matrix_row_scales(type, W->cols), cols = W->cols;
    const uint8_t *q = W->q;
    const float *x = a->x, *b = a->b;
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = q + (size_t)r * row_bytes;
        float v;
        switch (type) {
        case CM_WT_F32: v = row_dense(row, x, cols, 0); break;
#if CM_GEMV_BF16DOT
        case CM_WT_BF16: { /* one chain of 512-bit dot products keeps pace with memory */
            float o[2][CM_GEMV_MAX_N];
            rows_bf16dot_n((const char *)row, row_bytes, 1, a->xb, 0, cols, 1, o);
            v = o[0][0];
            break;
        }
#else
        case CM_WT_BF16: v = row_dense(row, x, cols, 1); break;
#endif
        default: v = row_quant(row, W->scale + (size_t)r * nblk, a->xq, nblk, type == CM_WT_Q4); break;
        }
        a->out[r] = b ? v + b[r] : v;
    }
}

void CM_GEMV_NAME(const cm_gemv_args *a, int r0, int r1) {
    const cm_matrix *W = a->W;
    if (a->n == 1) {
        switch (W->type) {
        case CM_WT_F32: rows_1(a, r0, r1, CM_WT_F32); break;
        case CM_WT_BF16: rows_1(a, r0, r1, CM_WT_BF16); break;
        case CM_WT_Q8: rows_1(a, r0, r1, CM_WT_Q8); break;
        default: rows_1(a, r0, r1, CM_WT_Q4); break;
        }
        return;
    }
    const size_t row_bytes = cm_matrix_row_bytes(W->type, W->cols);
    const int nblk = cm_matrix_row_scales(W->type, W->cols);
    const int pairs = W->type == CM_WT_F32 || W->type == CM_WT_BF16;
    const uint8_t *q = W->q;
    for (int r = r0, nr; r < r1; r += nr) {
        nr = pairs && r + 1 < r1 ? 2 : 1;
        float v[2][CM_GEMV_MAX_N];
        rows_n(a, q + (size_t)r * row_bytes, row_bytes, nr, W->scale + (size_t)r * nblk, nblk, v);
        for (int j = 0; j < nr; j++)
            for (int i = 0; i < a->n; i++)
                a->out[(size_t)i * a->ld_out + r + j] = a->b ? v[j][i] + a->b[r + j] : v[j][i];
    }
}
