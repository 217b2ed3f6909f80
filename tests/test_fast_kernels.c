/* Every fast CPU kernel against its plain-loop reference, on random inputs
 * over shapes that hit the edges (one row, sizes that are not multiples of
 * the SIMD width, dt_rank 48, a block of channels split across groups).
 * Errors are max |fast − ref| / max |ref|; the tolerances allow fp32
 * reassociation (BLAS) and the fast exponential (an ulp from libm's). */
#include <stdint.h>

#include "model/ops.h"
#include "ssm/selective_scan.h"
#include "test.h"
#include "train/layers.h"

static const double TOL_LINEAR = 1e-5, TOL_SCAN = 1e-5;
static float *copy(const float *v, size_t n) {
    float *c = malloc(sizeof(float) * (n ? n : 1));
    memcpy(c, v, sizeof(float) * n);
    return c;
}

static double err(const float *fast, const float *ref, size_t n) {
    double *r = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) r[i] = ref[i];
    double e = rel_err_f32_f64(fast, r, n);
    free(r);
    return e;
}

static double worst_linear, worst_scan, worst_conv;

/* The fast conv adds the reference's terms in the reference's order: the
 * same bits are expected, so the tolerance is 0. */
static void test_conv(int B, int T, int C, int K, int bias) {
    const size_t n = (size_t)B * T * C;
    float *in = rnd(n, -1, 1), *w = rnd((size_t)C * K, -1, 1), *b = bias ? rnd(C, -1, 1) : NULL,
          *dout = rnd(n, -1, 1);
    float *out = rnd(n, 0, 0), *out_r = rnd(n, 0, 0);
    cm_conv1d_forward(out, in, w, b, B, T, C, K);
    cm_conv1d_forward_ref(out_r, in, w, b, B, T, C, K);
    double e = err(out, out_r, n);
    float *din = rnd(n, -1, 1), *dw = rnd((size_t)C * K, -1, 1), *db = rnd(C, -1, 1);
    float *din_r = copy(din, n), *dw_r = copy(dw, (size_t)C * K), *db_r = copy(db, C);
    cm_conv1d_backward(din, dw, bias ? db : NULL, dout, in, w, B, T, C, K);
    cm_conv1d_backward_ref(din_r, dw_r, bias ? db_r : NULL, dout, in, w, B, T, C, K);
    e = fmax(e, fmax(err(din, din_r, n), fmax(err(dw, dw_r, (size_t)C * K), err(db, db_r, C))));
    CHECK_MSG(e == 0, "conv B=%d T=%d C=%d K=%d bias=%d: %.2e", B, T, C, K, bias, e);
    worst_conv = fmax(worst_conv, e);
    free(in); free(w); free(b); free(dout); free(out); free(out_r);
    free(din); free(dw); free(db); free(din_r); free(dw_r); free(db_r);
}

static void test_linear(int L, int n_in, int n_out, int bias) {
    float *in = rnd((size_t)L * n_in, -1, 1), *W = rnd((size_t)n_out * n_in, -1, 1),
          *b = bias ? rnd(n_out, -1, 1) : NULL, *dout = rnd((size_t)L * n_out, -1, 1);
    float *out = rnd((size_t)L * n_out, 0, 0), *out_ref = rnd((size_t)L * n_out, 0, 0);
    cm_linear(out, in, W, b, L, n_in, n_out);
    cm_linear_ref(out_ref, in, W, b, L, n_in, n_out);
    double e = err(out, out_ref, (size_t)L * n_out);
    /* the backward accumulates: start both from the same nonzero values */
    float *din = rnd((size_t)L * n_in, -1, 1), *dW = rnd((size_t)n_out * n_in, -1, 1),
          *db = rnd(n_out, -1, 1);
    float *din_r = copy(din, (size_t)L * n_in), *dW_r = copy(dW, (size_t)n_out * n_in),
          *db_r = copy(db, n_out);
    cm_linear_backward(din, dW, bias ? db : NULL, dout, in, W, L, n_in, n_out);
    cm_linear_backward_ref(din_r, dW_r, bias ? db_r : NULL, dout, in, W, L, n_in, n_out);
    e = fmax(e, fmax(err(din, din_r, (size_t)L * n_in), err(dW, dW_r, (size_t)n_out * n_in)));
    e = fmax(e, err(db, db_r, n_out));
    CHECK_MSG(e <= TOL_LINEAR, "linear L=%d %dx%d bias=%d: %.2e", L, n_in, n_out, bias, e);
    worst_linear = fmax(worst_linear, e);
    free(in); free(W); free(b); free(dout); free(out); free(out_ref);
    free(din); free(dW); free(db); free(din_r); free(dW_r); free(db_r);
}

static void test_scan(int L, int di, int N, int gated, int groups) {
    const int bcs = N + 3; /* B and C rows inside a wider [δ | B | C] row, as in the model */
    float *x = rnd((size_t)L * di, -1, 1), *delta = rnd((size_t)L * di, 0.01, 1.5),
          *A = rnd((size_t)di * N, -2, -0.1), *BC = rnd((size_t)L * (bcs + N), -1, 1),
          *D = rnd(di, -1, 1), *z = rnd((size_t)L * 2 * di, -2, 2);
    const cm_scan_args a = {.L = L, .d_inner = di, .d_state = N, .x = x, .delta = delta, .A = A,
                            .B = BC, .C = BC + 3, .bc_stride = bcs + N,
                            .D = gated ? D : NULL, .z = gated ? z + di : NULL, .z_stride = 2 * di};
    float *h = rnd((size_t)di * N, -1, 1), *h_r = copy(h, (size_t)di * N);
    float *y = rnd((size_t)L * di, 0, 0), *y_r = rnd((size_t)L * di, 0, 0);
    cm_selective_scan(&a, h, y);
    cm_selective_scan_ref(&a, h_r, y_r);
    double e = fmax(err(y, y_r, (size_t)L * di), err(h, h_r, (size_t)di * N));

    const size_t nx = (size_t)L * di, nbc = (size_t)L * (bcs + N);
    float *dy = rnd(nx, -1, 1), *work = malloc(sizeof(float) * cm_scan_backward_work(L, N, groups));
    float *g[2][6];
    for (int k = 0; k < 2; k++) {
        g[k][0] = rnd(nx, 0, 0); g[k][1] = rnd(nx, 0, 0); g[k][2] = rnd((size_t)di * N, 0, 0);
        g[k][3] = rnd(nbc, 0, 0); g[k][4] = rnd(di, 0, 0); g[k][5] = rnd((size_t)L * 2 * di, 0, 0);
        const cm_scan_grads sg = {.dx = g[k][0], .ddelta = g[k][1], .dA = g[k][2], .dB = g[k][3],
                                  .dC = g[k][3] + 3, .dD = g[k][4], .dz = g[k][5] + di};
        (k ? cm_selective_scan_backward_ref : cm_selective_scan_backward)(&a, dy, &sg, groups, work);
    }
    const size_t sizes[6] = {nx, nx, (size_t)di * N, nbc, (size_t)di, (size_t)L * 2 * di};
    for (int i = 0; i < 6; i++) e = fmax(e, err(g[0][i], g[1][i], sizes[i]));
    CHECK_MSG(e <= TOL_SCAN, "scan L=%d d_inner=%d N=%d gated=%d groups=%d: %.2e", L, di, N,
              gated, groups, e);
    worst_scan = fmax(worst_scan, e);
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 6; i++) free(g[k][i]);
    free(x); free(delta); free(A); free(BC); free(D); free(z); free(h); free(h_r);
    free(y); free(y_r); free(dy); free(work);
}

int main(void) {
    const int lin[][3] = {{1, 7, 130}, {1, 768, 1536}, {5, 64, 48}, {33, 130, 7},
                          {64, 48, 1536}, {300, 128, 36}};
    for (size_t i = 0; i < sizeof lin / sizeof *lin; i++)
        for (int bias = 0; bias < 2; bias++) test_linear(lin[i][0], lin[i][1], lin[i][2], bias);
    printf("linear (sgemm/sgemv vs loops), forward and backward: worst %.2e (tol %.0e)\n",
           worst_linear, TOL_LINEAR);

    /* L = 1: the decoding step, d_state 16 (one vector a channel) and not */
    const int scan[][4] = {{1, 5, 16, 1},    {1, 130, 16, 1},  {1, 37, 20, 1},   {7, 16, 16, 1},
                           {300, 37, 5, 3},  {64, 128, 16, 8}, {33, 48, 1, 2},   {257, 130, 16, 8},
                           {16, 1, 3, 1}};
    for (size_t i = 0; i < sizeof scan / sizeof *scan; i++)
        for (int gated = 0; gated < 2; gated++)
            test_scan(scan[i][0], scan[i][1], scan[i][2], gated, scan[i][3]);
    printf("selective scan (channel-blocked SIMD vs per-channel loops), forward, state and "
           "backward: worst %.2e (tol %.0e)\n", worst_scan, TOL_SCAN);

    const int conv[][4] = {{1, 1, 5, 4}, {2, 3, 37, 4}, {3, 300, 130, 4}, {8, 64, 256, 2},
                           {1, 40, 33, 20}};
    for (size_t i = 0; i < sizeof conv / sizeof *conv; i++)
        for (int bias = 0; bias < 2; bias++)
            test_conv(conv[i][0], conv[i][1], conv[i][2], conv[i][3], bias);
    printf("causal conv1d (channel-blocked vs per-channel loops), forward and backward: worst "
           "%.2e (tol 0)\n", worst_conv);
    return test_summary();
}
