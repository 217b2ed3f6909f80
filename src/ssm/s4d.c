#include "ssm/s4d.h"

#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "model/ops.h"
#include "rng.h"

enum {
    ALIGN = 16,     /* floats: every slice of the work starts on 64 bytes */
    MAX_PLANS = 32, /* FFT sizes kept for the life of the process */
};

/* Powers Ā^k are products in double, not exp(k·Δ·A) in fp32: k factors are
 * off by at most ~2k·2⁻⁵³ relative (their roundings and Ā's own), below
 * fp32's 2⁻²⁴ for any k < 2²⁸, where expf(k·ΔA) would carry the fp32
 * rounding of its argument (|k·ΔA|·2⁻²⁴, up to 5e-6 before it underflows),
 * and a product costs one multiply instead of an exp. A chain stops once
 * the power is below TINY: its terms are 1e-30 of the state's first, 22
 * orders under fp32 resolution, and going on would reach double's
 * denormals, ~100× slower per multiply. */
static const double TINY = 1e-30;

/* ---- scratch ---------------------------------------------------------------
 * One group's slice. A, p, w, acc: per-state constants and sums in double.
 * The rest is shared by the two modes: the scan keeps (L, N) states h and
 * their gradient dh (N), or in dh the state of a forward from zero; the
 * convolution a double kernel kd (L), v (L), the real FFT buffer re (M)
 * and four half spectra sp (M/2 + 1 complex each). */
typedef struct {
    double *A, *p, *w, *acc; /* (N), (N), (N), (3N) */
    float *ab, *bb;          /* (N) Ā, B̄ rounded to fp32 for the scan */
    float *h, *dh;           /* (L·N), (N) */
    double *kd;              /* (L) */
    float *v, *re;           /* (L), (M) */
    fftwf_complex *sp[4];    /* (M/2 + 1) */
} slices;

static size_t up(size_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

/* Smallest M ≥ 2L − 1 (no wrap-around in a linear convolution of two
 * L-long signals) whose factors are 2, 3, 5, 7: the sizes FFTW is fastest at. */
static int fft_size(int L) {
    for (int m = L > 1 ? 2 * L - 1 : 1;; m++) {
        int r = m;
        for (int f = 2; f <= 7; f++)
            while (r % f == 0) r /= f;
        if (r == 1) return m;
    }
}

/* Cuts a group's slice from base (64-byte aligned) and returns its floats;
 * base NULL only measures. */
static size_t carve(int L, int N, float *base, slices *s) {
    const int M = fft_size(L);
    size_t off = 0;
#define TAKE(ptr, type, count)                                     \
    do {                                                           \
        if (base) (ptr) = (type *)(base + off);                    \
        off += up((size_t)(count) * sizeof(type) / sizeof(float)); \
    } while (0)
    TAKE(s->A, double, N);
    TAKE(s->p, double, N);
    TAKE(s->w, double, N);
    TAKE(s->acc, double, 3 * N);
    TAKE(s->ab, float, N);
    TAKE(s->bb, float, N);
    const size_t shared = off;
    TAKE(s->h, float, (size_t)L * N);
    TAKE(s->dh, float, N);
    const size_t scan_end = off;
    off = shared;
    TAKE(s->kd, double, L);
    TAKE(s->v, float, L);
    TAKE(s->re, float, M);
    for (int i = 0; i < 4; i++) TAKE(s->sp[i], fftwf_complex, M / 2 + 1);
#undef TAKE
    return off > scan_end ? off : scan_end;
}

size_t cm_s4d_work(int L, int d_state, int groups) {
    slices s;
    return ALIGN + (size_t)groups * carve(L, d_state, NULL, &s);
}

/* Group k's slices of work carved for length L (the recurrence's forward
 * needs no per-step storage: it carves for L = 1). */
static slices group_slices(int L, int N, float *work, int k) {
    slices s;
    const size_t per = carve(L, N, NULL, &s);
    float *base = (float *)(((uintptr_t)work + 63) & ~(uintptr_t)63);
    carve(L, N, base + (size_t)k * per, &s);
    return s;
}

/* ---- FFT plans ---------------------------------------------------------------
 * One r2c and one c2r plan per size, made once and kept: FFTW's planner is
 * not thread-safe, executing a plan on new arrays is. FFTW_ESTIMATE picks
 * the algorithm by rule rather than by timing, so every run computes the
 * same bits, and it leaves the arrays untouched; they only tell the
 * alignment, 64 bytes for every slice. */
static struct {
    int M;
    fftwf_plan r2c, c2r;
} plans[MAX_PLANS];
static int n_plans;
static pthread_mutex_t plan_lock = PTHREAD_MUTEX_INITIALIZER;

/* 0 when the table is full: the caller falls back to the recurrence. */
static int get_plans(int M, const slices *s, fftwf_plan *r2c, fftwf_plan *c2r) {
    int ok = 0;
    pthread_mutex_lock(&plan_lock);
    int i = 0;
    while (i < n_plans && plans[i].M != M) i++;
    if (i == n_plans && n_plans < MAX_PLANS) {
        plans[i].M = M;
        plans[i].r2c = fftwf_plan_dft_r2c_1d(M, s->re, s->sp[0], FFTW_ESTIMATE);
        plans[i].c2r = fftwf_plan_dft_c2r_1d(M, s->sp[0], s->re, FFTW_ESTIMATE);
        n_plans++;
    }
    if (i < n_plans) {
        *r2c = plans[i].r2c;
        *c2r = plans[i].c2r;
        ok = *r2c && *c2r;
    }
    pthread_mutex_unlock(&plan_lock);
    return ok;
}

/* out = a·b, or conj(a)·b, over the half spectrum */
static void spec_mul(fftwf_complex *out, fftwf_complex *a, fftwf_complex *b, int n, int conj) {
    const float sgn = conj ? -1.0f : 1.0f;
    for (int i = 0; i < n; i++) {
        const float ar = a[i][0], ai = sgn * a[i][1], br = b[i][0], bi = b[i][1];
        out[i][0] = ar * br - ai * bi;
        out[i][1] = ar * bi + ai * br;
    }
}

/* ---- per-channel pieces ------------------------------------------------------- */

/* Returns Δ; fills A = −exp(A_log), p = Ā = exp(ΔA), w = C·B̄, in double. */
static double discretise(const cm_s4d_args *a, int c, const slices *s) {
    const int N = a->d_state;
    const double dt = exp((double)a->log_dt[c]);
    for (int n = 0; n < N; n++) {
        const size_t i = (size_t)c * N + n;
        s->A[n] = -exp((double)a->A_log[i]);
        s->p[n] = exp(dt * s->A[n]);
        s->w[n] = (double)a->C[i] * dt * a->B[i];
    }
    return dt;
}

/* kd[k] = K[k] = Σ_n w[n]·Ā[n]^k, n outer so that each chain stops at TINY;
 * every K[k] still sums over n in ascending order. */
static void kernel(int L, int N, const slices *s) {
    for (int k = 0; k < L; k++) s->kd[k] = 0.0;
    for (int n = 0; n < N; n++) {
        double pk = 1.0;
        for (int k = 0; k < L && pk > TINY; k++, pk *= s->p[n]) s->kd[k] += s->w[n] * pk;
    }
}

/* The parameter gradients of channel c from, per state, gC = ∂/∂C, gb = ∂/∂B̄
 * and gl = ∂/∂(ΔA), through B̄ = ΔB, A = −exp(A_log), Δ = exp(log_dt). */
static void param_grads(const cm_s4d_args *a, const cm_s4d_grads *g, int c, double dt,
                        const slices *s, const double *gC, const double *gb, const double *gl) {
    const int N = a->d_state;
    double ddt = 0.0;
    for (int n = 0; n < N; n++) {
        const size_t i = (size_t)c * N + n;
        g->dC[i] += (float)gC[n];
        g->dB[i] += (float)(gb[n] * dt);
        g->dA_log[i] += (float)(gl[n] * dt * s->A[n]);
        ddt += gb[n] * a->B[i] + gl[n] * s->A[n];
    }
    g->dlog_dt[c] += (float)(ddt * dt);
}

/* silu(z) and, when sd is given, silu'(z) = σ(z)·(1 + z·(1 − σ(z))) */
static float gate(const cm_s4d_args *a, int t, int c, float *sd) {
    const float z = a->z[(size_t)t * a->z_stride + c], sg = 1.0f / (1.0f + expf(-z));
    if (sd) *sd = sg * (1.0f + z * (1.0f - sg));
    return z * sg;
}

/* ---- the recurrence --------------------------------------------------------------
 * In fp32, Ā and B̄ rounded once from double. */

static float readout(const float *C, const float *h, int N, float Dx) {
    float acc = 0.0f;
    for (int n = 0; n < N; n++) acc += C[n] * h[n];
    return acc + Dx;
}

/* discretise, and ab, bb = Ā, B̄ in fp32; returns Δ */
static double scan_consts(const cm_s4d_args *a, int c, const slices *s) {
    const double dt = discretise(a, c, s);
    for (int n = 0; n < a->d_state; n++) {
        s->ab[n] = (float)s->p[n];
        s->bb[n] = (float)(dt * a->B[(size_t)c * a->d_state + n]);
    }
    return dt;
}

static void scan_channel(const cm_s4d_args *a, int c, float *h, float *y, const slices *s) {
    const int L = a->L, di = a->d_inner, N = a->d_state;
    scan_consts(a, c, s);
    const float *C = a->C + (size_t)c * N, D = a->D ? a->D[c] : 0.0f;
    for (int t = 0; t < L; t++) {
        const float x = a->x[(size_t)t * di + c];
        for (int n = 0; n < N; n++) h[n] = s->ab[n] * h[n] + s->bb[n] * x;
        float out = readout(C, h, N, D * x);
        if (a->z) out *= gate(a, t, c, NULL);
        y[(size_t)t * di + c] = out;
    }
}

/* Backward, t from L−1 down to 0, with ds_t = dy_t·silu(z_t) and states h_t
 * recomputed as the forward does:
 *   dh_t = ds_t·C + Ā·dh_{t+1}       dz_t = dy_t·s_t·silu'(z_t)   dD += ds_t·x_t
 *   dx_t = ds_t·D + Σ_n dh_t·B̄        ∂/∂C += ds_t·h_t             ∂/∂B̄ += dh_t·x_t
 *   ∂/∂Ā += dh_t·h_{t−1}, and ∂/∂(ΔA) = Ā·∂/∂Ā; the sums over t in double. */
static void scan_backward_channel(const cm_s4d_args *a, const float *dy, const cm_s4d_grads *g,
                                  int c, const slices *s) {
    const int L = a->L, di = a->d_inner, N = a->d_state;
    const double dt = scan_consts(a, c, s);
    for (int t = 0; t < L; t++) {
        const float x = a->x[(size_t)t * di + c];
        float *ht = s->h + (size_t)t * N;
        for (int n = 0; n < N; n++) ht[n] = s->ab[n] * (t ? ht[n - N] : 0.0f) + s->bb[n] * x;
    }

    const float *C = a->C + (size_t)c * N, D = a->D ? a->D[c] : 0.0f;
    double *gC = s->acc, *gb = gC + N, *ga = gb + N, dD = 0.0;
    memset(s->acc, 0, sizeof(double) * 3 * N);
    memset(s->dh, 0, sizeof(float) * N);
    for (int t = L - 1; t >= 0; t--) {
        const size_t i = (size_t)t * di + c;
        const float x = a->x[i], *ht = s->h + (size_t)t * N, *hp = t ? ht - N : NULL;
        float ds = dy[i];
        if (a->z) {
            float sd;
            const float sz = gate(a, t, c, &sd);
            g->dz[(size_t)t * a->z_stride + c] += ds * readout(C, ht, N, D * x) * sd;
            ds *= sz;
        }
        dD += (double)ds * x;
        float dx = ds * D;
        for (int n = 0; n < N; n++) {
            s->dh[n] += ds * C[n];
            gC[n] += (double)ds * ht[n];
            gb[n] += (double)s->dh[n] * x;
            if (hp) ga[n] += (double)s->dh[n] * hp[n];
            dx += s->dh[n] * s->bb[n];
            s->dh[n] *= s->ab[n]; /* carry to step t−1 */
        }
        g->dx[i] += dx;
    }
    for (int n = 0; n < N; n++) ga[n] *= s->p[n]; /* now ∂/∂(ΔA) */
    param_grads(a, g, c, dt, s, gC, gb, ga);
    if (a->D) g->dD[c] += (float)dD;
}

/* ---- the convolution ---------------------------------------------------------------
 * s = K∗x + D·x. By FFT, with zero padding to M ≥ 2L − 1 so that nothing
 * wraps around (FFTW's transforms are unnormalised: results carry a factor M):
 *   s   = IFFT(FFT(K)·FFT(x))[0, L)
 *   dx  = IFFT(conj(FFT(K))·FFT(ds))[0, L)     dx_t = Σ_{u≥t} K[u−t]·ds_u
 *   dK  = IFFT(conj(FFT(x))·FFT(ds))[0, L)     dK[k] = Σ_t ds_t·x_{t−k}
 * Directly, the same sums in a fixed order.
 * Then from dK, with G = Σ_k dK[k]·Ā^k and H = Σ_k k·dK[k]·Ā^k per state:
 *   ∂/∂C = B̄·G,   ∂/∂B̄ = C·G,   ∂/∂(ΔA) = C·B̄·H. */

/* re[0, L) = K in fp32, then the kernel's half spectrum into sp[0] */
static void kernel_spectrum(const cm_s4d_args *a, const slices *s, int M, fftwf_plan r2c) {
    const int L = a->L;
    for (int k = 0; k < L; k++) s->re[k] = (float)s->kd[k];
    if (!r2c) return;
    memset(s->re + L, 0, sizeof(float) * (M - L));
    fftwf_execute_dft_r2c(r2c, s->re, s->sp[0]);
}

/* v[0, L) = x of channel c, and its half spectrum into sp[1] */
static void input_spectrum(const cm_s4d_args *a, int c, const slices *s, int M, fftwf_plan r2c) {
    const int L = a->L;
    for (int t = 0; t < L; t++) s->v[t] = a->x[(size_t)t * a->d_inner + c];
    if (!r2c) return;
    memcpy(s->re, s->v, sizeof(float) * L);
    memset(s->re + L, 0, sizeof(float) * (M - L));
    fftwf_execute_dft_r2c(r2c, s->re, s->sp[1]);
}

/* out[0, L) = (K∗x)[0, L), K in re and x in v (direct) or from sp[0], sp[1] */
static void convolve(const slices *s, int L, int M, fftwf_plan c2r, float *out) {
    if (c2r) {
        spec_mul(s->sp[3], s->sp[0], s->sp[1], M / 2 + 1, 0);
        fftwf_execute_dft_c2r(c2r, s->sp[3], s->re);
        const float inv = 1.0f / (float)M;
        for (int t = 0; t < L; t++) out[t] = s->re[t] * inv;
        return;
    }
    for (int t = 0; t < L; t++) out[t] = 0.0f;
    for (int k = 0; k < L; k++)
        for (int t = k; t < L; t++) out[t] += s->re[k] * s->v[t - k];
}

static void conv_channel(const cm_s4d_args *a, int c, float *y, const slices *s, int M,
                         fftwf_plan r2c, fftwf_plan c2r) {
    const int L = a->L, di = a->d_inner;
    discretise(a, c, s);
    kernel(L, a->d_state, s);
    kernel_spectrum(a, s, M, r2c);
    input_spectrum(a, c, s, M, r2c);
    float *ks = (float *)s->kd; /* K∗x, over the kernel no longer needed */
    convolve(s, L, M, c2r, ks);
    const float D = a->D ? a->D[c] : 0.0f;
    for (int t = 0; t < L; t++) {
        float out = ks[t] + D * s->v[t];
        if (a->z) out *= gate(a, t, c, NULL);
        y[(size_t)t * di + c] = out;
    }
}

static void conv_backward_channel(const cm_s4d_args *a, const float *dy, const cm_s4d_grads *g,
                                  int c, const slices *s, int M, fftwf_plan r2c, fftwf_plan c2r) {
    const int L = a->L, di = a->d_inner, N = a->d_state;
    const double dt = discretise(a, c, s);
    kernel(L, N, s);
    kernel_spectrum(a, s, M, r2c);
    input_spectrum(a, c, s, M, r2c);
    const float D = a->D ? a->D[c] : 0.0f, inv = 1.0f / (float)M;

    /* ds (L) over the double kernel, now in re and sp[0]; s_t for the gate */
    float *ds = (float *)s->kd, *tmp = ds + L;
    if (a->z) convolve(s, L, M, c2r, tmp);
    double dD = 0.0;
    for (int t = 0; t < L; t++) {
        const size_t i = (size_t)t * di + c;
        ds[t] = dy[i];
        if (a->z) {
            float sd;
            const float sz = gate(a, t, c, &sd);
            g->dz[(size_t)t * a->z_stride + c] += ds[t] * (tmp[t] + D * s->v[t]) * sd;
            ds[t] *= sz;
        }
        dD += (double)ds[t] * s->v[t];
    }
    if (a->D) g->dD[c] += (float)dD;

    /* dx; then dK into tmp */
    if (c2r) {
        memcpy(s->re, ds, sizeof(float) * L);
        memset(s->re + L, 0, sizeof(float) * (M - L));
        fftwf_execute_dft_r2c(r2c, s->re, s->sp[2]);
        spec_mul(s->sp[3], s->sp[0], s->sp[2], M / 2 + 1, 1);
        fftwf_execute_dft_c2r(c2r, s->sp[3], s->re);
        for (int t = 0; t < L; t++) g->dx[(size_t)t * di + c] += s->re[t] * inv + D * ds[t];
        spec_mul(s->sp[3], s->sp[1], s->sp[2], M / 2 + 1, 1);
        fftwf_execute_dft_c2r(c2r, s->sp[3], s->re);
        for (int k = 0; k < L; k++) tmp[k] = s->re[k] * inv;
    } else {
        for (int t = 0; t < L; t++) tmp[t] = 0.0f;
        for (int k = 0; k < L; k++)
            for (int t = 0; t + k < L; t++) tmp[t] += s->re[k] * ds[t + k];
        for (int t = 0; t < L; t++) g->dx[(size_t)t * di + c] += tmp[t] + D * ds[t];
        for (int k = 0; k < L; k++) {
            float acc = 0.0f;
            for (int t = k; t < L; t++) acc += ds[t] * s->v[t - k];
            tmp[k] = acc;
        }
    }

    double *gC = s->acc, *gb = gC + N, *gl = gb + N;
    for (int n = 0; n < N; n++) {
        double pk = 1.0, G = 0.0, H = 0.0;
        for (int k = 0; k < L && pk > TINY; k++, pk *= s->p[n]) {
            G += tmp[k] * pk;
            H += (double)k * tmp[k] * pk;
        }
        gC[n] = dt * a->B[(size_t)c * N + n] * G;
        gb[n] = a->C[(size_t)c * N + n] * G;
        gl[n] = s->w[n] * H;
    }
    param_grads(a, g, c, dt, s, gC, gb, gl);
}

/* ---- drivers ---------------------------------------------------------------------- */

typedef struct {
    int M;
    fftwf_plan r2c, c2r; /* NULL: direct */
} conv_plan;

/* Settles the mode: CM_S4D_CONV by L, and the FFT falls back to the
 * recurrence should the plan table be full. */
static cm_s4d_mode settle(const cm_s4d_args *a, cm_s4d_mode mode, float *work, conv_plan *cp) {
    cp->M = fft_size(a->L);
    cp->r2c = cp->c2r = NULL;
    if (mode == CM_S4D_CONV) mode = a->L >= CM_S4D_FFT_MIN_L ? CM_S4D_CONV_FFT : CM_S4D_CONV_DIRECT;
    if (mode == CM_S4D_CONV_FFT) {
        const slices s = group_slices(a->L, a->d_state, work, 0);
        if (!get_plans(cp->M, &s, &cp->r2c, &cp->c2r)) mode = CM_S4D_SCAN;
    }
    return mode;
}

static int busy(const cm_s4d_args *a) { return (long)a->L * a->d_inner * a->d_state > 100000; }

static void run_scan(const cm_s4d_args *a, float *h, float *y, int groups, float *work) {
    const int di = a->d_inner, N = a->d_state;
#pragma omp parallel for schedule(static, 1) if (busy(a))
    for (int k = 0; k < groups; k++) {
        const slices s = group_slices(1, N, work, k);
        for (int c = (int)((long)k * di / groups); c < (int)((long)(k + 1) * di / groups); c++) {
            float *hc = h ? h + (size_t)c * N : s.dh;
            if (!h) memset(hc, 0, sizeof(float) * N);
            scan_channel(a, c, hc, y, &s);
        }
    }
}

void cm_s4d_scan(const cm_s4d_args *a, float *h, float *y, int groups, float *work) {
    run_scan(a, h, y, groups, work);
}

void cm_s4d_forward(const cm_s4d_args *a, cm_s4d_mode mode, float *y, int groups, float *work) {
    conv_plan cp;
    mode = settle(a, mode, work, &cp);
    if (mode == CM_S4D_SCAN) {
        run_scan(a, NULL, y, groups, work);
        return;
    }
    const int di = a->d_inner;
#pragma omp parallel for schedule(static, 1) if (busy(a))
    for (int k = 0; k < groups; k++) {
        const slices s = group_slices(a->L, a->d_state, work, k);
        for (int c = (int)((long)k * di / groups); c < (int)((long)(k + 1) * di / groups); c++)
            conv_channel(a, c, y, &s, cp.M, cp.r2c, cp.c2r);
    }
}

void cm_s4d_backward(const cm_s4d_args *a, cm_s4d_mode mode, const float *dy,
                     const cm_s4d_grads *g, int groups, float *work) {
    conv_plan cp;
    mode = settle(a, mode, work, &cp);
    const int di = a->d_inner;
#pragma omp parallel for schedule(static, 1) if (busy(a))
    for (int k = 0; k < groups; k++) {
        const slices s = group_slices(a->L, a->d_state, work, k);
        for (int c = (int)((long)k * di / groups); c < (int)((long)(k + 1) * di / groups); c++) {
            if (mode == CM_S4D_SCAN) scan_backward_channel(a, dy, g, c, &s);
            else conv_backward_channel(a, dy, g, c, &s, cp.M, cp.r2c, cp.c2r);
        }
    }
}
