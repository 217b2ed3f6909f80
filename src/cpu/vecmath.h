/* Vector maths on the CPU fast path.
 *
 * glibc's libmvec has vector forms of expf and log1pf for SSE, AVX2 and
 * AVX-512; these declarations (the one glibc's own header makes only under -ffast-math) let
 * a `#pragma omp simd` loop call them, so the scan's loop over d_state runs
 * 8 or 16 exponentials at once. CM_SIMD_CLONES compiles a function for
 * AVX-512, AVX2 and baseline x86-64 and picks one at load time from the CPU
 * it runs on. */
#ifndef CM_VECMATH_H
#define CM_VECMATH_H

#include <math.h>

#pragma omp declare simd notinbranch
float expf(float);
#pragma omp declare simd notinbranch
float log1pf(float);

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define CM_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CM_SIMD_CLONES
#endif

#endif
