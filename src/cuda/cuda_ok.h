/* For programs (tests and benches), not the library: CUDA_OK(call) prints
 * the failing call with its error and exits. C and C++. */
#ifndef CM_CUDA_OK_H
#define CM_CUDA_OK_H

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CUDA_OK(call)                                                                             \
    do {                                                                                          \
        cudaError_t e_ = (cudaError_t)(call);                                                     \
        if (e_ != cudaSuccess) {                                                                  \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

#endif
