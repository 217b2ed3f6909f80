/* The AVX-512 kernel, with bf16 weights multiplied by inputs rounded to
 * bf16 through AVX-512 BF16's dot products (Zen 4, Sapphire Rapids and
 * later); every other format as in gemv_avx512.c. */
#if defined(__x86_64__) || defined(__i386__)
#define CM_GEMV_VNNI 1
#define CM_GEMV_BF16DOT 1
#include "cpu/gemv_x86.h"

#define CM_GEMV_NAME cm_gemv_avx512bf16
#include "cpu/gemv_kernel.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
