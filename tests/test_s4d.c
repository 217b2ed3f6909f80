/* The S4D layer (ssm/s4d.h): its three ways of computing the forward against
 * a recurrence in double, its backwards (scan, direct, FFT) against finite
 * differences and against each other, and a long sequence through the FFT.
 *
 * Errors are max |a − b| / max |b| over a whole output or gradient.
 * - Forward vs the double recurrence, TOL_FWD = 1e-5. The fp32 recurrence
 *   carries the rounding of each step for ~1/(Δ·|A|) ≤ 1000 steps of
 *   memory, the convolutions an fp32 kernel and FFT or sums of up to L
 *   terms: all measure ≤ 1.1e-6 here. CM_S4D_CONV must be one of the two
 *   convolutions to the bit.
 * - Finite differences in fp32, as tests/test_layers_fd.c: Σ y·g with fixed
 *   random g, each input moved by ±EPS = 1e-2, TOL_FD = 3e-3 (truncation
 *   O(EPS²) and rounding ~1e-7/EPS; a wrong term is off by O(1)).
 * - Convolution backward vs scan backward, TOL_BWD = 1e-4: both are fp32
 *   computations of the same sums in different orders (FFT, reverse scan);
 *   they measure 1e-7 to 1.2e-5, the parameters' gradients (sums over all
 *   t or k) being the loosest. */
#include <omp.h>
#include <stdint.h>

#include "model/params.h"
#include "rng.h"
#include "ssm/s4d.h"
#include "test.h"
#include "train/init.h"

static const float EPS = 1e-2f;
static const double TOL_FWD = 1e-5, TOL_FD = 3e-3, TOL_BWD = 1e-4;

static const char *mode_name(cm_s4d_mode m) {
    static const char *const names[] = {"scan", "conv", "direct", "fft"};
    return names[m];
}

/* ---- a layer: parameters, input, gate -------------------------------------- */

typedef struct {
    cm_s4d_args a;
    float *x, *log_dt, *A_log, *B, *C, *D, *xz; /* z inside an (L, 2·d_inner) buffer */
    float *work;
    int groups;
} layer;

/* train/init.c's values for one S4D layer */
static void s4d_real_init(int di, int N, layer *l) {
    const cmamba_config cfg = {.d_state = N, .d_inner = di};
    const struct { cm_param_kind kind; float *v; size_t n; } p[] = {
        {CM_P_LOG_DT, l->log_dt, (size_t)di}, {CM_P_S4D_B, l->B, (size_t)di * N},
        {CM_P_S4D_C, l->C, (size_t)di * N}, {CM_P_A_LOG, l->A_log, (size_t)di * N},
        {CM_P_D, l->D, (size_t)di}};
    for (int i = 0; i < 5; i++) {
        const cm_param_desc d = {.kind = p[i].kind, .numel = p[i].n};
        cm_init_param(&cfg, &d, &test_rng, p[i].v);
    }
}

/* S4D-Real, then moved off it so that no term hides: B around 1, A not
 * exactly −(1..N), D and the gate random. lo_dt, hi_dt bound Δ. */
static layer make(int L, int di, int N, int gated, double lo_dt, double hi_dt) {
    layer l = {.groups = 3};
    l.x = rnd((size_t)L * di, -1, 1);
    l.log_dt = zeros(di);
    l.A_log = zeros((size_t)di * N);
    l.B = zeros((size_t)di * N);
    l.C = zeros((size_t)di * N);
    l.D = zeros(di);
    s4d_real_init(di, N, &l);
    for (int c = 0; c < di; c++) {
        l.log_dt[c] = (float)(log(lo_dt) + cm_rng_uniform(&test_rng) * (log(hi_dt) - log(lo_dt)));
        l.D[c] = (float)(0.5 + cm_rng_uniform(&test_rng));
    }
    for (int i = 0; i < di * N; i++) {
        l.A_log[i] += (float)(0.3 * (cm_rng_uniform(&test_rng) - 0.5));
        l.B[i] = (float)(0.5 + cm_rng_uniform(&test_rng));
    }
    l.xz = rnd((size_t)L * 2 * di, -2, 2);
    l.a = (cm_s4d_args){.L = L, .d_inner = di, .d_state = N, .x = l.x, .log_dt = l.log_dt,
                        .A_log = l.A_log, .B = l.B, .C = l.C, .D = gated ? l.D : NULL,
                        .z = gated ? l.xz + di : NULL, .z_stride = 2 * di};
    l.work = malloc(sizeof(float) * cm_s4d_work(L, N, l.groups));
    return l;
}

static void drop(layer *l) {
    free(l->x); free(l->log_dt); free(l->A_log); free(l->B); free(l->C); free(l->D);
    free(l->xz); free(l->work);
}

/* The reference: the recurrence in double, Ā = exp(ΔA) by exp. */
static void forward_ref(const cm_s4d_args *a, double *y) {
    const int L = a->L, di = a->d_inner, N = a->d_state;
    double *h = malloc(sizeof(double) * N);
    for (int c = 0; c < di; c++) {
        const double dt = exp((double)a->log_dt[c]);
        for (int n = 0; n < N; n++) h[n] = 0.0;
        for (int t = 0; t < L; t++) {
            const double x = a->x[(size_t)t * di + c];
            double s = a->D ? a->D[c] * x : 0.0;
            for (int n = 0; n < N; n++) {
                const size_t i = (size_t)c * N + n;
                h[n] = exp(-dt * exp((double)a->A_log[i])) * h[n] + dt * a->B[i] * x;
                s += a->C[i] * h[n];
            }
            if (a->z) {
                const double z = a->z[(size_t)t * a->z_stride + c];
                s *= z / (1.0 + exp(-z));
            }
            y[(size_t)t * di + c] = s;
        }
    }
    free(h);
}

/* ---- 1. forward: scan, direct and FFT convolution vs double ------------------ */

static void test_forward(int L, int di, int N, int gated) {
    layer l = make(L, di, N, gated, 1e-3, 1e-1);
    const size_t n = (size_t)L * di;
    double *ref = malloc(sizeof(double) * n);
    float *y = zeros(n), *y_scan = zeros(n), *y_direct = zeros(n), *y_fft = zeros(n);
    forward_ref(&l.a, ref);
    const cm_s4d_mode modes[] = {CM_S4D_SCAN, CM_S4D_CONV_DIRECT, CM_S4D_CONV_FFT, CM_S4D_CONV};
    printf("  L=%-5d d=%d N=%-2d %s:", L, di, N, gated ? "z,D " : "bare");
    for (int m = 0; m < 4; m++) {
        if (modes[m] == CM_S4D_CONV_DIRECT && L > 4096) continue; /* O(L²) */
        cm_s4d_forward(&l.a, modes[m], y, l.groups, l.work);
        const double e = rel_err_f32_f64(y, ref, n);
        printf("  %s %.1e", mode_name(modes[m]), e);
        CHECK_MSG(e <= TOL_FWD, "L=%d N=%d %s: forward error %.3e", L, N, mode_name(modes[m]), e);
        if (m == 0) memcpy(y_scan, y, sizeof(float) * n);
        else CHECK_MSG(rel_err(y, y_scan, n) <= TOL_FWD, "L=%d N=%d %s vs scan: %.3e", L, N,
                       mode_name(modes[m]), rel_err(y, y_scan, n));
        if (m == 1) memcpy(y_direct, y, sizeof(float) * n);
        if (m == 2) memcpy(y_fft, y, sizeof(float) * n);
    }
    printf("\n");
    CHECK_MSG(memcmp(y, L < CM_S4D_FFT_MIN_L ? y_direct : y_fft, sizeof(float) * n) == 0,
              "L=%d: CM_S4D_CONV is not the %s convolution", L,
              L < CM_S4D_FFT_MIN_L ? "direct" : "FFT");
    free(ref); free(y); free(y_scan); free(y_direct); free(y_fft);
    drop(&l);
}

/* ---- 2. backward vs finite differences ----------------------------------------- */

typedef struct { layer *l; cm_s4d_mode mode; float *y, *g; } fd_ctx;

static double fd_f(fd_ctx *c) {
    cm_s4d_forward(&c->l->a, c->mode, c->y, c->l->groups, c->l->work);
    return dot(c->y, c->g, (size_t)c->l->a.L * c->l->a.d_inner);
}

static void fd_check(fd_ctx *c, const char *var, float *v, const float *grad, size_t n) {
    double *num = malloc(sizeof(double) * n), ref = 0;
    for (size_t i = 0; i < n; i++) {
        const float keep = v[i];
        v[i] = keep + EPS;
        const double fp = fd_f(c);
        v[i] = keep - EPS;
        const double fm = fd_f(c);
        v[i] = keep;
        num[i] = (fp - fm) / (2.0 * EPS);
        ref = fabs(num[i]) > ref ? fabs(num[i]) : ref;
    }
    const double e = rel_err_f32_f64(grad, num, n);
    printf("  %-6s %-4s %-7s n=%-3zu max|grad| %.3e  err %.2e\n", mode_name(c->mode),
           c->l->a.z ? "z,D" : "bare", var, n, ref, e);
    CHECK_MSG(e <= TOL_FD && ref > 1e-3, "%s d%s: error %.3e (max |grad| %.3e)",
              mode_name(c->mode), var, e, ref);
    free(num);
}

typedef struct { float *dx, *dlog_dt, *dA_log, *dB, *dC, *dD, *dxz; cm_s4d_grads g; } grads;

static grads grads_new(const layer *l) {
    const int L = l->a.L, di = l->a.d_inner, N = l->a.d_state;
    grads r = {.dx = zeros((size_t)L * di), .dlog_dt = zeros(di), .dA_log = zeros((size_t)di * N),
               .dB = zeros((size_t)di * N), .dC = zeros((size_t)di * N), .dD = zeros(di),
               .dxz = zeros((size_t)L * 2 * di)};
    r.g = (cm_s4d_grads){r.dx, r.dlog_dt, r.dA_log, r.dB, r.dC, r.dD, r.dxz + di};
    return r;
}

static void grads_free(grads *r) {
    free(r->dx); free(r->dlog_dt); free(r->dA_log); free(r->dB); free(r->dC); free(r->dD);
    free(r->dxz);
}

/* Δ up to 0.8 so that a 9-step kernel changes along its length */
static void test_fd(cm_s4d_mode mode, int gated) {
    enum { L = 9, DI = 3, N = 4 };
    layer l = make(L, DI, N, gated, 0.05, 0.8);
    fd_ctx c = {&l, mode, zeros(L * DI), rnd(L * DI, -1, 1)};
    grads r = grads_new(&l);
    cm_s4d_backward(&l.a, mode, c.g, &r.g, l.groups, l.work);
    fd_check(&c, "x", l.x, r.dx, L * DI);
    fd_check(&c, "log_dt", l.log_dt, r.dlog_dt, DI);
    fd_check(&c, "A_log", l.A_log, r.dA_log, DI * N);
    fd_check(&c, "B", l.B, r.dB, DI * N);
    fd_check(&c, "C", l.C, r.dC, DI * N);
    if (gated) {
        fd_check(&c, "D", l.D, r.dD, DI);
        fd_check(&c, "z", l.xz + DI, r.dxz + DI, (size_t)(2 * L - 1) * DI);
    }
    grads_free(&r);
    free(c.y); free(c.g);
    drop(&l);
}

/* ---- 3. convolution backward vs scan backward --------------------------------- */

static void compare_grads(const char *what, const grads *a, const grads *b, const layer *l,
                          double tol) {
    const int L = l->a.L, di = l->a.d_inner, N = l->a.d_state;
    const struct { const char *name; const float *p, *q; size_t n; } v[] = {
        {"x", a->dx, b->dx, (size_t)L * di},           {"log_dt", a->dlog_dt, b->dlog_dt, di},
        {"A_log", a->dA_log, b->dA_log, (size_t)di * N}, {"B", a->dB, b->dB, (size_t)di * N},
        {"C", a->dC, b->dC, (size_t)di * N},            {"D", a->dD, b->dD, di},
        {"z", a->dxz, b->dxz, (size_t)L * 2 * di}};
    printf("  %s L=%-5d N=%-2d %s:", what, L, N, l->a.z ? "z,D " : "bare");
    for (int i = 0; i < 7; i++) {
        if (i >= 5 && !l->a.z) continue;
        const double e = rel_err(v[i].p, v[i].q, v[i].n);
        printf(" %s %.1e", v[i].name, e);
        CHECK_MSG(e <= tol, "%s L=%d d%s: %.3e", what, L, v[i].name, e);
    }
    printf("\n");
}

static void test_backward_modes(int L, int di, int N, int gated) {
    layer l = make(L, di, N, gated, 1e-3, 1e-1);
    float *dy = rnd((size_t)L * di, -1, 1);
    grads ref = grads_new(&l);
    cm_s4d_backward(&l.a, CM_S4D_SCAN, dy, &ref.g, l.groups, l.work);
    const cm_s4d_mode modes[] = {CM_S4D_CONV_DIRECT, CM_S4D_CONV_FFT};
    for (int m = 0; m < 2; m++) {
        if (modes[m] == CM_S4D_CONV_DIRECT && L > 4096) continue;
        grads r = grads_new(&l);
        cm_s4d_backward(&l.a, modes[m], dy, &r.g, l.groups, l.work);
        compare_grads(modes[m] == CM_S4D_CONV_FFT ? "fft vs scan   " : "direct vs scan",
                      &r, &ref, &l, TOL_BWD);
        grads_free(&r);
    }
    grads_free(&ref);
    free(dy);
    drop(&l);
}

/* ---- 4. a long sequence ------------------------------------------------------- */

static void test_long(void) {
    enum { L = 65536, DI = 2, N = 16 };
    printf("long sequence, L = %d\n", L);
    test_forward(L, DI, N, 1);
    test_backward_modes(L, DI, N, 1);
}

/* ---- the rest: accumulation, threads, chunked scan, init ------------------------ */

/* Gradients add up; the bits depend neither on threads nor on groups. */
static void test_determinism(void) {
    enum { L = 300, DI = 40, N = 16 }; /* big enough for the parallel loops */
    layer l = make(L, DI, N, 1, 1e-3, 1e-1);
    float *dy = rnd(L * DI, -1, 1), *y[2] = {zeros(L * DI), zeros(L * DI)};
    for (int mode = CM_S4D_SCAN; mode <= CM_S4D_CONV_FFT; mode++) {
        grads r[2] = {grads_new(&l), grads_new(&l)};
        for (int k = 0; k < 2; k++) {
            omp_set_num_threads(k ? 3 : 1);
            layer lk = l;
            lk.groups = k ? 7 : 1;
            lk.work = malloc(sizeof(float) * cm_s4d_work(L, N, lk.groups));
            cm_s4d_forward(&lk.a, mode, y[k], lk.groups, lk.work);
            cm_s4d_backward(&lk.a, mode, dy, &r[k].g, lk.groups, lk.work);
            if (k) cm_s4d_backward(&lk.a, mode, dy, &r[k].g, lk.groups, lk.work);
            free(lk.work);
        }
        int same = memcmp(y[0], y[1], sizeof(float) * L * DI) == 0;
        /* the second run added twice: equal to 2× the first, exactly (×2 is exact) */
        const size_t n[] = {L * DI, DI, DI * N, DI * N, DI * N, DI, 2 * L * DI};
        const float *p[] = {r[0].dx, r[0].dlog_dt, r[0].dA_log, r[0].dB, r[0].dC, r[0].dD,
                            r[0].dxz},
                    *q[] = {r[1].dx, r[1].dlog_dt, r[1].dA_log, r[1].dB, r[1].dC, r[1].dD,
                            r[1].dxz};
        for (int i = 0; i < 7; i++)
            for (size_t j = 0; j < n[i]; j++) same &= q[i][j] == 2.0f * p[i][j];
        printf("  %-6s 1 thread, 1 group vs 3 threads, 7 groups (backward twice): %s\n",
               mode_name(mode), same ? "same bits" : "DIFFERENT");
        CHECK_MSG(same, "%s: results depend on threads or groups, or do not accumulate",
                  mode_name(mode));
        grads_free(&r[0]);
        grads_free(&r[1]);
    }
    omp_set_num_threads(omp_get_num_procs());
    free(dy); free(y[0]); free(y[1]);
    drop(&l);
}

/* Two chunks through cm_s4d_scan, the state carried, are one forward. */
static void test_chunked_scan(void) {
    enum { L = 50, L1 = 17, DI = 4, N = 8 };
    layer l = make(L, DI, N, 1, 1e-3, 1e-1);
    float *y = zeros(L * DI), *yc = zeros(L * DI), *h = zeros(DI * N);
    cm_s4d_forward(&l.a, CM_S4D_SCAN, y, l.groups, l.work);
    cm_s4d_args a1 = l.a, a2 = l.a;
    a1.L = L1;
    a2.L = L - L1;
    a2.x += L1 * DI;
    a2.z += L1 * a2.z_stride;
    cm_s4d_scan(&a1, h, yc, l.groups, l.work);
    cm_s4d_scan(&a2, h, yc + L1 * DI, l.groups, l.work);
    CHECK_MSG(memcmp(y, yc, sizeof(float) * L * DI) == 0, "chunked scan differs from one pass");
    free(y); free(yc); free(h);
    drop(&l);
}

/* The initialisation is S4D-Real: A = −(1..N), B = 1, D = 1, Δ log-uniform
 * in [1e-3, 1e-1]. */
static void test_init(void) {
    enum { DI = 6, N = 5 };
    layer l = {0};
    float lg[DI], Al[DI * N], B[DI * N], C[DI * N], D[DI];
    l.log_dt = lg; l.A_log = Al; l.B = B; l.C = C; l.D = D;
    s4d_real_init(DI, N, &l);
    int ok = 1;
    for (int c = 0; c < DI; c++) {
        ok &= D[c] == 1.0f && lg[c] >= logf(1e-3f) && lg[c] <= logf(1e-1f);
        for (int n = 0; n < N; n++)
            ok &= B[c * N + n] == 1.0f && Al[c * N + n] == (float)log(n + 1.0);
    }
    CHECK_MSG(ok, "S4D-Real init values");
}

int main(void) {
    test_rng = 7;
    printf("forward vs the recurrence in double, tolerance %.0e (max |Δ| / max |ref|)\n",
           TOL_FWD);
    const int shapes[][3] = {{1, 3, 1}, {1, 3, 16}, {7, 5, 1}, {7, 5, 16}, {63, 4, 16},
                             {64, 4, 16}, {256, 6, 1}, {256, 6, 16}, {1000, 3, 7}, {4096, 3, 16}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int gated = 0; gated < 2; gated++)
            test_forward(shapes[i][0], shapes[i][1], shapes[i][2], gated);

    printf("finite differences, eps %g, tolerance %.0e\n", EPS, TOL_FD);
    for (int gated = 0; gated < 2; gated++) {
        test_fd(CM_S4D_SCAN, gated);
        test_fd(CM_S4D_CONV_DIRECT, gated);
        test_fd(CM_S4D_CONV_FFT, gated);
    }

    printf("convolution backward vs scan backward, tolerance %.0e\n", TOL_BWD);
    test_backward_modes(1, 3, 4, 1);
    test_backward_modes(7, 3, 16, 0);
    test_backward_modes(256, 4, 16, 1);
    test_backward_modes(4096, 2, 16, 1);

    test_long();
    test_determinism();
    test_chunked_scan();
    test_init();
    return test_summary();
}
