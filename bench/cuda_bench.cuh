/* What the CUDA benches share: CUDA_OK (cuda/cuda_ok.h) and time_ms, the
 * median time of a piece of GPU work. */
#ifndef CM_CUDA_BENCH_CUH
#define CM_CUDA_BENCH_CUH

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cuda/cuda_ok.h"

/* the median over reps of f()'s time on the default stream, CUDA events
 * around each, after warm calls */
template <typename F> static float time_ms(F f, int warm, int reps) {
    cudaEvent_t a, b;
    CUDA_OK(cudaEventCreate(&a));
    CUDA_OK(cudaEventCreate(&b));
    for (int i = 0; i < warm; i++) f();
    std::vector<float> t;
    for (int i = 0; i < reps; i++) {
        CUDA_OK(cudaEventRecord(a));
        f();
        CUDA_OK(cudaEventRecord(b));
        CUDA_OK(cudaEventSynchronize(b));
        float ms;
        CUDA_OK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms);
    }
    CUDA_OK(cudaGetLastError());
    cudaEventDestroy(a), cudaEventDestroy(b);
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

#endif
