/* The GEMV kernel's primitives on x86 (gemv_kernel.h lists them), for
 * gemv_avx2.c and gemv_avx512.c: 256-bit vectors (vf) in both, but for
 * the f32 and bf16 rows under AVX-512, which run on 512-bit ones (vd,
 * below). They differ in the integer dot product: with CM_GEMV_VNNI,
 * AVX-512 VNNI's vpdpbusd (unsigned × signed bytes, four per 32-bit lane)
 * in one instruction; without, AVX2's vpmaddubsw then vpmaddwd.
 * CM_GEMV_BF16DOT adds AVX-512 BF16's dot product for bf16 weights with
 * inputs rounded to bf16. The including file sets the target instruction
 * set for everything after this header's includes. */
#include <immintrin.h>
#include <stdint.h>

#include "common.h"
#include "cpu/gemv.h"

#ifndef CM_GEMV_BF16DOT
#define CM_GEMV_BF16DOT 0
#endif
#if defined(__clang__)
#if CM_GEMV_BF16DOT
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16"))), apply_to = function)
#elif CM_GEMV_VNNI
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))), apply_to = function)
#else
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#endif
#elif CM_GEMV_BF16DOT
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16")
#elif CM_GEMV_VNNI
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#else
#pragma GCC target("avx2,fma,f16c")
#endif

typedef __m256 vf;

static inline vf vf_zero(void) { return _mm256_setzero_ps(); }
static inline vf vf_load(const float *p) { return _mm256_loadu_ps(p); }
static inline vf vf_bcast(const float *p) { return _mm256_broadcast_ss(p); }
static inline vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf vf_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }

/* ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) */
static inline float vf_sum(vf a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

static inline __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* bf16 is the top half of an fp32: widen and shift */
static inline vf vf_bf16(const uint16_t *p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

#if CM_GEMV_VNNI
/* The f32 and bf16 rows on AVX-512 run on 512-bit vectors (vd): twice the
 * work per instruction on Intel's cores, which have two 512-bit FMA units.
 * With several inputs the products are bound by multiply-adds (Emerald
 * Rapids, one thread, mamba-130m's in_proj at 8 inputs aligned as
 * matrix.c's align_inputs makes them: f32 1.6x, bf16 widened 1.8x the
 * 256-bit loop's rate); with one, fewer instructions per byte brought the
 * stream closer to memory's pace (docs/performance.md). On Zen 4, which
 * splits them in two, they cost what two 256-bit ones do. */
#define CM_GEMV_WIDE 1
enum { VD = 16 };
typedef __m512 vd;
static inline vd vd_zero(void) { return _mm512_setzero_ps(); }
static inline vd vd_load(const float *p) { return _mm512_loadu_ps(p); }
static inline vd vd_bf16(const uint16_t *p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
static inline vd vd_fma(vd a, vd b, vd c) { return _mm512_fmadd_ps(a, b, c); }
static inline vd vd_add(vd a, vd b) { return _mm512_add_ps(a, b); }
static inline float vd_sum(vd a) {
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
    return vf_sum(_mm256_add_ps(_mm512_castps512_ps256(a), hi));
}
#endif

#if CM_GEMV_BF16DOT
/* acc + the products of 32 bf16 weights and 32 bf16 inputs, lane l of
 * the vd summing pair 2l, 2l+1 (AVX-512 BF16's vdpbf16ps: exact products,
 * fp32 sums; twice the multiply-adds of an FMA per instruction, no
 * widening). vbw_load_part loads the first n < 32 values, zeros after, so
 * that a row of any length needs no scalar tail. */
enum { VBW = 32 };
typedef __m512bh vbw;
static inline vbw vbw_load(const uint16_t *p) { return (vbw)_mm512_loadu_si512(p); }
static inline vbw vbw_load_part(const uint16_t *p, int n) {
    return (vbw)_mm512_maskz_loadu_epi16((__mmask32)((1ull << n) - 1), p);
}
static inline vd vd_dot_bf16(vd acc, vbw w, vbw x) { return _mm512_dpbf16_ps(acc, w, x); }
#endif

static inline vf vf_f16(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline float f16_1(uint16_t h) { return _cvtsh_ss(h); }

/* Σ over each 4 bytes of u (unsigned) · s (signed), as fp32 lanes. The
 * pairs of vpmaddubsw saturate past 32767: every caller keeps them below. */
static inline vf dot_u8s8(__m256i u, __m256i s) {
#if CM_GEMV_VNNI
    return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s));
#else
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

#if CM_GEMV_VNNI
/* w + 128 is the unsigned operand: one instruction, removed after */
enum { Q8_BIAS = 128 };
static inline vf dot_q8(const int8_t *w, const int8_t *x) {
    return dot_u8s8(_mm256_xor_si256(load32(w), _mm256_set1_epi8(-128)), load32(x));
}

/* The chunks' lanes line up with the blocks: all 8 accumulate in int32
 * (at most 256·255·127 in a lane) and convert once. Four accumulators
 * keep four vpdpbusd in flight; the first starts from the bias to remove,
 * 128·(−Σx) of each block. */
static inline vf dot_super_q8(const int8_t *w, const int8_t *x, const int32_t *ns) {
    const __m256i flip = _mm256_set1_epi8(-128);
    __m256i d[4] = {_mm256_slli_epi32(load32(ns), 7), _mm256_setzero_si256(),
                    _mm256_setzero_si256(), _mm256_setzero_si256()};
    for (int c = 0; c < 8; c++)
        d[c % 4] = _mm256_dpbusd_epi32(d[c % 4], _mm256_xor_si256(load32(w + 32 * c), flip),
                                       load32(x + 32 * c));
    const __m256i d01 = _mm256_add_epi32(d[0], d[1]), d23 = _mm256_add_epi32(d[2], d[3]);
    return _mm256_cvtepi32_ps(_mm256_add_epi32(d01, d23));
}

/* The high nibbles are used in place, as 16 times their value, and the
 * sum of their products divided by 16 (exactly) at the end; the low ones'
 * sum starts from 8·(−Σx) of each block, for the 8 in q + 8. */
static inline vf dot_super_q4(const uint8_t *w, const int8_t *x, const int32_t *ns) {
    const __m256i m_lo = _mm256_set1_epi8(15), m_hi = _mm256_set1_epi8(-16);
    __m256i lo[2] = {_mm256_slli_epi32(load32(ns), 3), _mm256_setzero_si256()},
            hi[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    for (int c = 0; c < 4; c++) {
        const __m256i y = load32(w + 32 * c);
        lo[c % 2] = _mm256_dpbusd_epi32(lo[c % 2], _mm256_and_si256(y, m_lo), load32(x + 64 * c));
        hi[c % 2] = _mm256_dpbusd_epi32(hi[c % 2], _mm256_and_si256(y, m_hi), load32(x + 64 * c + 32));
    }
    const __m256i l = _mm256_add_epi32(lo[0], lo[1]), h = _mm256_add_epi32(hi[0], hi[1]);
    return _mm256_cvtepi32_ps(_mm256_add_epi32(l, _mm256_srai_epi32(h, 4)));
}
#else
/* |w| is the unsigned operand and x takes w's sign: a pair is at most
 * 2·128·127 < 32768, so vpmaddubsw cannot saturate */
enum { Q8_BIAS = 0 };
static inline vf dot_q8(const int8_t *w, const int8_t *x) {
    const __m256i wv = load32(w);
    return dot_u8s8(_mm256_abs_epi8(wv), _mm256_sign_epi8(load32(x), wv));
}

static inline vf dot_super_q8(const int8_t *w, const int8_t *x, const int32_t *ns) {
    (void)ns; /* no bias */
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i d = _mm256_setzero_si256();
    for (int c = 0; c < CM_QSUPER; c += 32) {
        const __m256i wv = load32(w + c);
        const __m256i p =
            _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(load32(x + c), wv));
        d = _mm256_add_epi32(d, _mm256_madd_epi16(p, ones));
    }
    return _mm256_cvtepi32_ps(d);
}

/* a nibble pair is at most 2·15·127 = 3810: the 8 chunks sum in int16;
 * then less 8·Σx of each block, for the 8 in q + 8 */
static inline vf dot_super_q4(const uint8_t *w, const int8_t *x, const int32_t *ns) {
    const __m256i m = _mm256_set1_epi8(15);
    __m256i p = _mm256_setzero_si256();
    for (int c = 0; c < CM_QSUPER / 2; c += 32) {
        const __m256i y = load32(w + c);
        p = _mm256_add_epi16(p, _mm256_maddubs_epi16(_mm256_and_si256(y, m), load32(x + 2 * c)));
        p = _mm256_add_epi16(p, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(y, 4), m),
                                                     load32(x + 2 * c + 32)));
    }
    const __m256i d = _mm256_madd_epi16(p, _mm256_set1_epi16(1));
    return _mm256_cvtepi32_ps(_mm256_add_epi32(d, _mm256_slli_epi32(load32(ns), 3)));
}
#endif

/* ---- several inputs per weight read (gemv_kernel.h's rows_quant_n) ----
 * QW 32-byte chunks of a superblock at a time are prepared once
 * (prep_chunks), then dotted with every input. With VNNI two chunks in
 * one 512-bit vector (QW = 2): half the instructions per weight, which
 * bound these products rather than memory (on Zen 4, whose 512-bit
 * operations take two 256-bit cycles, 3-5% faster at 8 inputs); their 16
 * lanes fold into 8 at the end of a superblock. */
#if CM_GEMV_VNNI
enum { QW = 2 };
typedef __m512i vq; /* prepared chunks */
typedef __m512i vi; /* int32 lanes: l and l + 8 belong to block l */

static inline vf vi_to_vf(vi a) {
    return _mm256_cvtepi32_ps(_mm256_add_epi32(_mm512_castsi512_si256(a),
                                               _mm512_extracti64x4_epi64(a, 1)));
}

/* chunks c, c + 1 (c even) of a superblock, lined up with inputs 32c …
 * 32c + 63: q8 + 128 (the unsigned operand); q4 the low then the high
 * nibbles of bytes 32·(c/2) …, 0..15 (q + 8) */
static inline vq prep_chunks(const uint8_t *w, int c, int q4) {
    if (q4) {
        const __m256i y = load32(w + 16 * c), m = _mm256_set1_epi8(15);
        return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(y, m)),
                                  _mm256_and_si256(_mm256_srli_epi16(y, 4), m), 1);
    }
    return _mm512_xor_si512(_mm512_loadu_si512(w + 32 * c), _mm512_set1_epi8(-128));
}

/* what the biased weights add to each block's sum, removed up front:
 * k·(−Σx) for weights stored as w + k */
static inline vi vi_bias(const int32_t *ns, int q4) {
    return _mm512_zextsi256_si512(_mm256_slli_epi32(load32(ns), q4 ? 3 : 7));
}

/* acc + each lane's Σ of the products of its 4 bytes of the prepared
 * chunks and 64 inputs */
static inline vi dot_prep(vi acc, vq u, const int8_t *x, int q4) {
    (void)q4;
    return _mm512_dpbusd_epi32(acc, u, _mm512_loadu_si512(x));
}
#else
enum { QW = 1 };
typedef __m256i vq; /* a prepared chunk */
typedef __m256i vi; /* 8 int32 lanes */

static inline vf vi_to_vf(vi a) { return _mm256_cvtepi32_ps(a); }

/* chunk c of a superblock, lined up with inputs 32c … 32c + 31: q8 as
 * stored; q4 the low (c even) or the high (c odd) nibbles of bytes
 * 32·(c/2) …, 0..15 (q + 8) */
static inline vq prep_chunks(const uint8_t *w, int c, int q4) {
    if (q4) {
        const __m256i y = load32(w + 32 * (c / 2)), m = _mm256_set1_epi8(15);
        return _mm256_and_si256(c % 2 ? _mm256_srli_epi16(y, 4) : y, m);
    }
    return load32(w + 32 * c);
}

/* q4's 8·(−Σx) of each block; none for q8, taken as signed */
static inline vi vi_bias(const int32_t *ns, int q4) {
    return q4 ? _mm256_slli_epi32(load32(ns), 3) : _mm256_setzero_si256();
}

/* acc + lane l's Σ of the products of bytes 4l..4l+3 of a prepared chunk
 * and 32 inputs */
static inline vi dot_prep(vi acc, vq u, const int8_t *x, int q4) {
    const __m256i p = q4 ? _mm256_maddubs_epi16(u, load32(x))
                         : _mm256_maddubs_epi16(_mm256_abs_epi8(u), _mm256_sign_epi8(load32(x), u));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}
#endif

/* nibbles (0..15) · x: a pair is at most 2·15·128 */
static inline void dot_q4(const uint8_t *w, const int8_t *x, vf *lo, vf *hi) {
    const __m256i y = load32(w), m = _mm256_set1_epi8(15);
    *lo = dot_u8s8(_mm256_and_si256(y, m), load32(x));
    *hi = dot_u8s8(_mm256_and_si256(_mm256_srli_epi16(y, 4), m), load32(x + 32));
}
