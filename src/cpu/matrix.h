/* Weight matrices in four formats, and the products inference takes with
 * them.
 *
 *   f32   float   [rows][cols]
 *   bf16  uint16  [rows][cols], the top half of an fp32
 *   q8    int8    [rows][P] quants q in [−127, 127], P = cols rounded up to
 *         64; per block of 32 values of a row one fp16 scale s, value = q·s
 *         (scales [rows][P/32], apart from the quants)
 *   q4    uint8   [rows][P/2] quants q in [−8, 7] stored as q+8, two a byte;
 *         scales as q8
 *
 * A row is cut into blocks of 32 from its start; when cols is not a
 * multiple of 32 the last block is short (its scale comes from its own
 * values). The stored row is padded with q = 0 to P; a block of padding
 * alone has scale 0.
 *
 * Quants are laid out for the integer dot products of the kernels, whose
 * 32-bit lanes each sum the products of 4 bytes: a row's first ⌊P/256⌋
 * superblocks of 8 blocks are interleaved so that lane l of every 32-byte
 * chunk belongs to block l. Value i of block l of a superblock sits at
 * position p = 32·(i/4) + 4·l + i%4 of the superblock (q8: its byte p;
 * q4: byte 32·(p/64) + p%32, the low nibble when (p/32) is even, else the
 * high one). A superblock's dot product then needs one conversion and one
 * multiply by its 8 scales, not 8 of each. The rest of the row, 0 to 3
 * groups of 64 values (2 blocks), is in plain order: q8 byte i of block b
 * holds its value i; q4 byte i of a group holds value i of the group's
 * first block in its low nibble and value i of its second in the high one.
 * docs/formats.md describes the files and the quantisation rules. */
#ifndef CM_MATRIX_H
#define CM_MATRIX_H

#include <stddef.h>
#include <stdint.h>

enum {
    CM_QBLOCK = 32, /* values per scale */
    CM_QGROUP = 64, /* the padding unit of a row: two blocks */
    CM_QSUPER = 256 /* an interleaved superblock: eight blocks */
};

typedef enum { CM_WT_F32, CM_WT_BF16, CM_WT_Q8, CM_WT_Q4, CM_WT_COUNT } cm_wtype;

/* rows = outputs, cols = inputs; q and scale as above (scale NULL for f32
 * and bf16). The storage belongs to whoever bound the matrix. */
typedef struct {
    cm_wtype type;
    int rows, cols;
    const void *q;
    const uint16_t *scale;
} cm_matrix;

const char *cm_wtype_name(cm_wtype t); /* "f32", "bf16", "q8", "q4" */

/* Storage geometry: values per stored row (P for q8/q4, else cols), bytes
 * of one stored row, scales per row (0 for f32/bf16), and the bytes of the
 * whole matrix, values and scales. */
int cm_matrix_stored_cols(cm_wtype t, int cols);
size_t cm_matrix_row_bytes(cm_wtype t, int cols);
int cm_matrix_row_scales(cm_wtype t, int cols);
size_t cm_matrix_bytes(cm_wtype t, int rows, int cols);

/* Encodes src (cols floats) as one row of type t: q_row gets
 * cm_matrix_row_bytes bytes, scale_row cm_matrix_row_scales scales. q8:
 * s = max|v|/127 rounded up to fp16, q = round(v/s). q4: of s = −m/8 (m
 * the value of largest magnitude, which then maps to −8) and s = |m|/7,
 * the one with the smaller squared error; q = clamp(round(v/s), −8, 7).
 * Non-finite inputs give a NaN scale. */
void cm_matrix_encode_row(cm_wtype t, int cols, const float *src, void *q_row,
                          uint16_t *scale_row);

/* out (cols) = row `row` of W in fp32: the embedding lookup. */
void cm_matrix_row(float *out, const cm_matrix *W, int row);

/* out (L, rows) = in (L, cols) · Wᵀ + b (rows, optional). Up to
 * cm_matrix_gemv_rows(W->type) rows (one for f32): the GEMV kernels of the
 * active instruction set, W streamed once per row; q8 and q4 quantise the
 * row to int8 per block of 32 first (integer dot products). More rows: W
 * decoded a tile at a time to fp32 (f32 used in place) and multiplied by
 * sgemm, the input kept in fp32. The _strided form reads row t of `in` at
 * in + t·ld_in. bf16 products by the GEMV kernels round their inputs to
 * bf16 under avx512bf16 (below). */
int cm_matrix_gemv_rows(cm_wtype t);
void cm_matmul(float *out, const float *in, const cm_matrix *W, const float *b, int L);
void cm_matmul_strided(float *out, const float *in, int ld_in, const cm_matrix *W,
                       const float *b, int L);

/* Row ranges [r0, r1) of the product above (n_ranges pairs r0, r1 in
 * `ranges`; out row t at out + t·ld_out), by the GEMV kernels on the
 * calling thread alone, for a caller that shares out a step's work among
 * its threads itself: any L, and for q8/q4 (and bf16 under avx512bf16) up
 * to CM_GEMV_STACK_COLS columns (the input is quantised or rounded once,
 * on the stack); -1 (nothing done) past that. */
enum { CM_GEMV_STACK_COLS = 8192 };
int cm_matmul_rows(float *out, int ld_out, const float *in, int ld_in, const cm_matrix *W,
                   const float *b, int L, const int *ranges, int n_ranges);

/* The kernels' instruction sets. The best one the CPU has is chosen once,
 * at the first product, but for avx512bf16 on Intel's CPUs, whose bf16 dot
 * products are slower than widening (matrix.c); the environment variable
 * CMAMBA_ISA (scalar, avx2, avx512 or avx512bf16; empty means unset) names
 * the set, the best available below it if the CPU lacks it. An unknown
 * name is reported on stderr and the default kept; the CLI refuses it.
 * avx2 needs AVX2 and FMA (and F16C, which every CPU with both has);
 * avx512 additionally AVX-512 F/BW/VL and VNNI; avx512bf16 also AVX-512
 * BF16, whose dot products it uses for bf16 weights, rounding the inputs
 * of those products to bf16 (as llama.cpp does):
 * |Δ| ≤ Σ|w|·|x − bf16(x)| ≤ 2⁻⁹·Σ|w·x| beyond the fp32 product. */
typedef enum { CM_ISA_SCALAR, CM_ISA_AVX2, CM_ISA_AVX512, CM_ISA_AVX512BF16, CM_ISA_COUNT } cm_isa;

const char *cm_isa_name(cm_isa isa);
/* The set a name (as CMAMBA_ISA takes it) names, or -1 if none. */
int cm_isa_from_name(const char *name);
int cm_isa_supported(cm_isa isa);
cm_isa cm_isa_active(void);
/* Tests: makes isa (if supported) the active set; returns the active set. */
cm_isa cm_isa_force(cm_isa isa);

#endif
