/* What the host code of the CUDA backend shares: a failed CUDA or cuBLAS
 * call turned into one line in *err and -1 (CU, BLAS inside functions with
 * a cmamba_error *err), and the carving of many buffers out of one device
 * allocation. */
#ifndef CM_CUDA_CHECK_CUH
#define CM_CUDA_CHECK_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "common.h"
}

namespace cm {

inline int cuda_fail(cudaError_t e, const char *what, cmamba_error *err) {
    if (e == cudaSuccess) return 0;
    cudaGetLastError(); /* clear a sticky launch error so later calls report their own */
    return cm_fail(err, "CUDA: %s: %s", what, cudaGetErrorString(e));
}

inline int blas_fail(cublasStatus_t s, const char *what, cmamba_error *err) {
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    return cm_fail(err, "cuBLAS: %s: %s", what, cublasGetStatusString(s));
}

constexpr size_t CARVE_ALIGN = 256; /* of every carved buffer */

/* Carves buffers out of one device allocation: a first pass with base
 * NULL only adds up the sizes. */
struct Carver {
    char *base;
    size_t used;
    void *take(size_t bytes) {
        void *p = base ? base + used : nullptr;
        used += (bytes + CARVE_ALIGN - 1) / CARVE_ALIGN * CARVE_ALIGN;
        return p;
    }
    template <typename P> void take(P *&p, size_t bytes) { p = (P *)take(bytes); }
};

} // namespace cm

#define CU(call) \
    do { if (cm::cuda_fail((call), #call, err)) return -1; } while (0)
#define BLAS(call) \
    do { if (cm::blas_fail((call), #call, err)) return -1; } while (0)

#endif
