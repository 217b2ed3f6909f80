/* OpenBLAS's choice of kernels, for programs that run its sgemm. */
#pragma once

/* OpenBLAS picks its kernels by CPU model, once, as it loads; a model
 * newer than the library gets its generic SSE3 kernels (Debian 12's 0.3.21
 * on Emerald Rapids: "Prescott", a 512-token prompt 3.2 times slower than
 * with its AVX-512 kernels). Its variable OPENBLAS_CORETYPE overrides the
 * choice but is read only at load. So where OpenBLAS fell back to generic
 * kernels on a CPU with AVX-512 (or AVX2 and FMA), this sets the variable
 * to the matching kernels (SkylakeX, Haswell) and executes the program
 * again with the same arguments; otherwise, or where the variable is set
 * already, it returns. */
void cm_blas_use_cpu_kernels(char **argv);

/* the kernels OpenBLAS uses ("SkylakeX", ...), or "none" for another BLAS */
const char *cm_blas_kernels(void);
