/* The selective scan (S6), SPEC.md steps 7-9, in its sequential form.
 *
 *   h_t[c,n] = exp(Δ_t[c]·A[c,n])·h_{t−1}[c,n] + Δ_t[c]·B_t[n]·x_t[c]
 *   y_t[c]   = (Σ_n h_t[c,n]·C_t[n] + D[c]·x_t[c]) · silu(z_t[c])
 *
 * Ā = exp(ΔA) is the exact zero-order hold; B̄ = ΔB is the Euler
 * approximation the reference kernels use.
 */
#ifndef CM_SELECTIVE_SCAN_H
#define CM_SELECTIVE_SCAN_H

typedef struct {
    int L, d_inner, d_state;
    const float *x;     /* (L, d_inner)                       u in the kernels */
    const float *delta; /* (L, d_inner)  Δ, already softplus'ed               */
    const float *A;     /* (d_inner, d_state)  −exp(A_log)                    */
    const float *B;     /* (L, ·) row t at B + t·bc_stride, d_state values     */
    const float *C;     /* (L, ·) row t at C + t·bc_stride                     */
    int bc_stride;
    const float *D;     /* (d_inner) or NULL                                  */
    const float *z;     /* (L, ·) row t at z + t·z_stride, or NULL (no gate)   */
    int z_stride;
} cm_scan_args;

/* h: (d_inner, d_state), the state before the first step, updated in place.
 * y: (L, d_inner). cm_selective_scan_ref is the plain loop, one channel at
 * a time; cm_selective_scan (src/cpu/scan.c) the fast form every caller
 * uses, tested against it. */
void cm_selective_scan_ref(const cm_scan_args *a, float *h, float *y);
void cm_selective_scan(const cm_scan_args *a, float *h, float *y);

/* One step (a->L == 1) of channels [c0, c1) only, on the calling thread:
 * for a caller that shares a step's channels among its threads itself. */
void cm_selective_scan_step(const cm_scan_args *a, float *h, float *y, int c0, int c1);

#endif
