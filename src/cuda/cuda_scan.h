/* The selective scan (SPEC.md steps 7-9) on NVIDIA GPUs, forward and
 * backward, callable from C.
 *
 *   Δ_t[c]   = softplus(delta_t[c] + delta_bias[c])   (or without softplus/bias)
 *   h_t[c,n] = exp(Δ_t[c]·A[c,n])·h_{t−1}[c,n] + Δ_t[c]·B_t[n]·u_t[c]      h_{−1} = 0
 *   out_t[c] = (Σ_n h_t[c,n]·C_t[n] + D[c]·u_t[c]) · silu(z_t[c])
 *
 * Layouts follow mamba_ssm's selective_scan_fn, channel-major: u, delta, z,
 * out and their gradients are (batch, D, L), contiguous, time fastest; B and
 * C are (batch, N, L); A is (D, N). The kernels stage tiles of 8-32
 * channels × 16 or 32 time steps in shared memory; with time contiguous a
 * tile row is one run of 32-128 bytes whatever the number of channels in the
 * tile, so the tile can be as narrow as the parallelism of a shape needs
 * and every load stays coalesced. The CPU code is channels-last (L,
 * d_inner); its callers transpose.
 *
 * u, delta, B, C, z (and dout, du, ddelta, dz) share one element type, fp32
 * or bf16; A, D, delta_bias, the states and every accumulation are fp32.
 * One thread carries G states of one channel through time in registers; the
 * (L, D, N) states never reach memory. The forward may save the state every
 * CM_CUDA_SCAN_CKPT steps (x, 4 bytes per (step, channel) at N = 16); the
 * backward needs x and recomputes the states between checkpoints. The
 * forward reads B and C as they are; the backward makes an fp32 copy of
 * them (batch·L·2N floats) in its workspace.
 */
#ifndef CM_CUDA_SCAN_H
#define CM_CUDA_SCAN_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CM_CUDA_SCAN_CKPT 16 /* steps between saved states */

typedef enum { CM_CUDA_F32 = 0, CM_CUDA_BF16 = 1 } cm_cuda_dtype;

typedef struct {
    int batch, L, D, N; /* D = d_inner, N = d_state (1..64) */
    cm_cuda_dtype dtype; /* of u, delta, B, C, z, out */
    const void *u;       /* (batch, D, L) */
    const void *delta;   /* (batch, D, L) raw; Δ = softplus(delta + delta_bias) */
    const float *A;      /* (D, N) */
    const void *B, *C;   /* (batch, N, L) */
    const float *D_skip; /* (D) or NULL */
    const void *z;       /* (batch, D, L) or NULL: no gate */
    const float *delta_bias; /* (D) or NULL */
    int delta_softplus;      /* PyTorch's softplus, v itself above 20 */
    void *out;               /* (batch, D, L), forward only */
    /* (batch, ceil(L/CKPT), N, D): x[b, k, n, c] is state n of channel c
     * after step min(CKPT·k + CKPT − 1, L − 1), channels contiguous so that
     * a warp's accesses coalesce. The forward writes it when non-NULL, the
     * backward reads it. */
    float *x;
    /* Forward only, both optional, (batch, D, N) fp32 with N fastest (the
     * CPU state's layout): the state before the first step (NULL: zeros)
     * and, written, the state after the last, so that a sequence can go
     * through in chunks. They may be the same buffer. The backward assumes
     * a zero initial state. */
    const float *h0;
    float *h_last;
    /* Tuning, 0 = automatic: states per thread (1, 2 or 4 forward; 1 or 2
     * backward) and, backward only, the number of time segments run in
     * parallel (more blocks for long sequences of few channels). */
    int states_per_thread, n_segments;
} cm_cuda_scan_params;

typedef struct {
    const void *dout;        /* (batch, D, L), dtype */
    void *du, *ddelta, *dz;  /* (batch, D, L), dtype, written; dz only when z */
    /* fp32, ACCUMULATED (+=) as every backward of the project does: the
     * caller zeroes them once. ddelta is the gradient of the raw delta, so
     * through softplus and bias; ddelta_bias only when delta_bias is set,
     * dD only when D_skip is. dB, dC are (batch, N, L). */
    float *dA, *dB, *dC, *dD, *ddelta_bias;
    void *work; /* device scratch of cm_cuda_scan_bwd_workspace bytes */
} cm_cuda_scan_grads;

/* 0 on success, else a cudaError_t (cudaErrorInvalidValue for bad shapes
 * or a missing x). Both run asynchronously on `stream`. */
int cm_cuda_scan_fwd(const cm_cuda_scan_params *p, cudaStream_t stream);
int cm_cuda_scan_bwd(const cm_cuda_scan_params *p, const cm_cuda_scan_grads *g,
                     cudaStream_t stream);

/* bytes of g->work the backward needs for these parameters */
size_t cm_cuda_scan_bwd_workspace(const cm_cuda_scan_params *p);

/* floats in x for these parameters */
size_t cm_cuda_scan_x_size(const cm_cuda_scan_params *p);

#ifdef __cplusplus
}
#endif

#endif
