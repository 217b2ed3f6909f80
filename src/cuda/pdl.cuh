/* Programmatic dependent launch (Hopper): the kernels of a decoding step
 * are a chain of small dependent launches, each waiting on the last. A
 * kernel launched with launch_pdl may start while its predecessor still
 * runs: it does what needs no result of the predecessor (asks L2 for its
 * weights) and then pdl_wait()s until the predecessor has finished and its
 * writes are visible. Every such kernel lets its own successor start at
 * once (pdl_launch_dependents): safe, since the successor waits for this
 * grid's completion in turn, which comes after this grid's own wait, so
 * results two launches back are visible too. Before sm_90 both are no-ops
 * and the launch is an ordinary one. */
#ifndef CM_PDL_CUH
#define CM_PDL_CUH

#include <cuda_runtime.h>

#include <utility>

namespace cm {

__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}

/* kernel<<<grid, block, smem, stream>>>(args...) that may overlap its
 * predecessor on the stream (it must pdl_wait() before reading its results) */
template <typename... K, typename... A>
cudaError_t launch_pdl(void (*kernel)(K...), dim3 grid, dim3 block, size_t smem,
                       cudaStream_t stream, A &&...args) {
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = stream;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = &attr, cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...);
}

} // namespace cm

#endif
