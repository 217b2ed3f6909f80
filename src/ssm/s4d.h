/* S4D, the time-invariant diagonal state space layer of the paper's ablation
 * "Mamba block with an S4 layer in place of S6" (SPEC.md, "LTI SSM").
 * Per channel c and state n, with parameters rather than functions of x:
 *
 *   Δ = exp(log_dt[c]),  A[n] = −exp(A_log[c,n]),  Ā[n] = exp(Δ·A[n]),  B̄[n] = Δ·B[c,n]
 *   h_t[n] = Ā[n]·h_{t−1}[n] + B̄[n]·x_t,    s_t = Σ_n C[c,n]·h_t[n] + D[c]·x_t
 *   y_t    = s_t · silu(z_t)                (no gate when z is NULL)
 *
 * B̄ = ΔB is the Euler rule of Mamba's kernels, Ā the exact zero-order hold.
 * From h_{−1} = 0 the same s is a causal convolution of x with the kernel
 *
 *   K[k] = Σ_n C[c,n]·B̄[n]·Ā[n]^k,   s_t = Σ_{k≤t} K[k]·x_{t−k} + D[c]·x_t
 *
 * so there are two ways to compute it: the recurrence, O(L·N) per channel,
 * and the convolution, direct below CM_S4D_FFT_MIN_L and by FFT (FFTW,
 * O(L·N + L·log L)) from it on. Both modes have a forward and a backward;
 * they agree to fp32 rounding (tests/test_s4d.c).
 *
 * Conventions as train/layers.h: one sequence per call, rows of d_inner
 * channels; every backward ACCUMULATES (+=) into its gradients. Channels
 * never mix, so each channel's result is computed by one thread in a fixed
 * order: the bits do not depend on the thread count nor on `groups`. */
#ifndef CM_S4D_H
#define CM_S4D_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int L, d_inner, d_state;
    const float *x;      /* (L, d_inner)                                      */
    const float *log_dt; /* (d_inner)             Δ = exp(log_dt)              */
    const float *A_log;  /* (d_inner, d_state)    A = −exp(A_log)              */
    const float *B, *C;  /* (d_inner, d_state)                                */
    const float *D;      /* (d_inner) or NULL (no skip)                       */
    const float *z;      /* (L, ·) row t at z + t·z_stride, or NULL (no gate)  */
    int z_stride;
} cm_s4d_args;

/* Gradients with the layouts of the arguments; dD and dz are used only when
 * a->D, a->z are set. */
typedef struct {
    float *dx, *dlog_dt, *dA_log, *dB, *dC, *dD, *dz;
} cm_s4d_grads;

typedef enum {
    CM_S4D_SCAN,        /* the recurrence                                    */
    CM_S4D_CONV,        /* the convolution: direct or FFT by L, as measured  */
    CM_S4D_CONV_DIRECT, /* the convolution forced to one way (tests, timing) */
    CM_S4D_CONV_FFT,    /* FFT plans are made once per size and kept; past
                         * 32 sizes in one process the recurrence runs instead */
} cm_s4d_mode;

/* CM_S4D_CONV runs the FFT from this L on: on x86-64 (AMD EPYC, one thread)
 * direct and FFT cost the same at L = 64 in the forward and at L ≈ 48-64 in
 * the backward, for d_state 1 and 16 alike. */
enum { CM_S4D_FFT_MIN_L = 64 };

/* Scratch: channels are split into `groups` contiguous ranges shared out
 * among the threads (groups = the thread count is right; any value ≥ 1
 * gives the same bits), each with its own slice of `work`. This many floats
 * of work serve every call below with this d_state, groups and any L' ≤ L. */
size_t cm_s4d_work(int L, int d_state, int groups);

/* y (L, d_inner) from the zero state. */
void cm_s4d_forward(const cm_s4d_args *a, cm_s4d_mode mode, float *y, int groups, float *work);

/* The recurrence from the state h (d_inner, d_state), updated in place to
 * the state after the last step: for chunked evaluation and generation
 * (its work needs no more than cm_s4d_work(1, d_state, groups)). */
void cm_s4d_scan(const cm_s4d_args *a, float *h, float *y, int groups, float *work);

/* Gradients of Σ dy·y for the forward from the zero state. The scan mode
 * keeps one channel's (L, d_state) states at a time per group. */
void cm_s4d_backward(const cm_s4d_args *a, cm_s4d_mode mode, const float *dy,
                     const cm_s4d_grads *g, int groups, float *work);

/* Initial values (S4D-Real): cm_init_param in train/init.h. */

#endif
