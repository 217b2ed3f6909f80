#include "cpu/blas.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* weak: a BLAS other than OpenBLAS has no such function */
extern char *openblas_get_corename(void) __attribute__((weak));

static const char *cpu_kernels(void) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

void cm_blas_use_cpu_kernels(char **argv) {
    if (!openblas_get_corename || getenv("OPENBLAS_CORETYPE")) return;
    const char *have = openblas_get_corename(), *want = cpu_kernels();
    if (!want || !have || (strcmp(have, "Prescott") && strcmp(have, "Core2"))) return;
    if (setenv("OPENBLAS_CORETYPE", want, 1)) return;
    fflush(NULL);
    execv("/proc/self/exe", argv);
    /* no re-execution (no /proc): carry on with the generic kernels */
}

const char *cm_blas_kernels(void) {
    const char *name = openblas_get_corename ? openblas_get_corename() : NULL;
    return name ? name : "none";
}
