/* The CUDA selective scan (src/cuda/cuda_scan.h) against the CPU reference
 * (cm_selective_scan_ref, cm_selective_scan_backward_ref): the output and
 * every gradient, max |gpu − cpu| / max |cpu|, within 1e-4 for fp32 inputs
 * and 2e-2 for bf16 ones (the CPU then runs on the bf16-rounded inputs).
 * Shapes hit the edges of the tiling: L = 1, L not a multiple of the tile
 * or of 8 (no vector loads), N = 1 and N odd (padded state groups), d_inner
 * not a multiple of a block's channels, several sequences, one and several
 * time segments in the backward, every states-per-thread variant. Outputs
 * are poisoned with NaN first, so an unwritten element fails. */
#include <cuda_runtime_api.h>
#include <stdint.h>

#include "cuda/cuda_ok.h"
#include "cuda/cuda_scan.h"
#include "model/ops.h"
#include "rng.h"
#include "ssm/selective_scan.h"
#include "test.h"
#include "train/layers.h"

static uint64_t rng = 77;

typedef struct {
    int batch, L, D, N, z, bias, softplus;
    cm_cuda_dtype dtype;
    int g_fwd, g_bwd, nseg; /* tuning, 0 = automatic */
} scan_case;

static uint16_t to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    x += 0x7fffu + ((x >> 16) & 1u); /* round to nearest even (inputs here are finite) */
    return (uint16_t)(x >> 16);
}
static float from_bf16(uint16_t h) {
    const uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* n floats onto the device in the case's dtype; rounds v itself to bf16
 * so the CPU reference sees what the GPU does */
static void *upload(float *v, size_t n, cm_cuda_dtype dt) {
    void *d;
    const size_t es = dt == CM_CUDA_BF16 ? 2 : 4;
    CUDA_OK(cudaMalloc(&d, n * es + 16));
    if (dt == CM_CUDA_BF16) {
        uint16_t *h = malloc(n * 2 + 2);
        for (size_t i = 0; i < n; i++) v[i] = from_bf16(h[i] = to_bf16(v[i]));
        CUDA_OK(cudaMemcpy(d, h, n * 2, cudaMemcpyHostToDevice));
        free(h);
    } else {
        CUDA_OK(cudaMemcpy(d, v, n * 4, cudaMemcpyHostToDevice));
    }
    return d;
}
static void *poisoned(size_t n, size_t es) {
    void *d;
    CUDA_OK(cudaMalloc(&d, n * es + 16));
    CUDA_OK(cudaMemset(d, 0xff, n * es)); /* NaN in fp32 and in bf16 */
    return d;
}
static float *zeroed(size_t n) {
    void *d;
    CUDA_OK(cudaMalloc(&d, n * 4 + 16));
    CUDA_OK(cudaMemset(d, 0, n * 4));
    return d;
}
static float *download(const void *d, size_t n, cm_cuda_dtype dt) {
    float *v = malloc(n * 4 + 4);
    if (dt == CM_CUDA_BF16) {
        uint16_t *h = malloc(n * 2 + 2);
        CUDA_OK(cudaMemcpy(h, d, n * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < n; i++) v[i] = from_bf16(h[i]);
        free(h);
    } else {
        CUDA_OK(cudaMemcpy(v, d, n * 4, cudaMemcpyDeviceToHost));
    }
    return v;
}
static float *fill(size_t n, double mean, double sd) {
    float *v = malloc(n * 4 + 4);
    for (size_t i = 0; i < n; i++) v[i] = (float)(mean + sd * cm_rng_normal(&rng));
    return v;
}

static double err(const float *gpu, const float *cpu, size_t n) {
    double *r = malloc(sizeof(double) * (n + 1));
    for (size_t i = 0; i < n; i++) r[i] = cpu[i];
    const double e = rel_err_f32_f64(gpu, r, n);
    free(r);
    return e;
}

static double worst[2]; /* per dtype */

static void check(const char *what, const scan_case *k, const float *gpu, const float *cpu,
                  size_t n) {
    const double tol = k->dtype == CM_CUDA_BF16 ? 2e-2 : 1e-4, e = err(gpu, cpu, n);
    if (e > worst[k->dtype]) worst[k->dtype] = e;
    CHECK_MSG(e <= tol, "%s: batch %d L %d D %d N %d z %d bias %d softplus %d %s g %d/%d "
                        "nseg %d: error %.3g > %.0e",
              what, k->batch, k->L, k->D, k->N, k->z, k->bias, k->softplus,
              k->dtype == CM_CUDA_BF16 ? "bf16" : "fp32", k->g_fwd, k->g_bwd, k->nseg, e, tol);
}

static void run_case(const scan_case *k) {
    const int Bt = k->batch, L = k->L, D = k->D, N = k->N;
    const size_t nx = (size_t)Bt * D * L, nbc = (size_t)Bt * N * L, es = k->dtype == CM_CUDA_BF16 ? 2 : 4;

    /* channel-major inputs, as the GPU takes them */
    float *u = fill(nx, 0, 1), *dl = malloc(nx * 4 + 4), *z = fill(nx, 0, 1.5), *dy = fill(nx, 0, 1);
    float *B = fill(nbc, 0, 1), *C = fill(nbc, 0, 1);
    float *A = malloc((size_t)D * N * 4), *Dk = malloc(D * 4), *bias = malloc(D * 4);
    for (size_t i = 0; i < nx; i++) {
        if (!k->softplus) dl[i] = (float)(0.01 + 0.5 * cm_rng_uniform(&rng));
        else if (cm_rng_uniform(&rng) < 0.01) dl[i] = (float)(20 + 10 * cm_rng_uniform(&rng)); /* past the threshold */
        else dl[i] = (float)(-2 + 4 * cm_rng_uniform(&rng));
    }
    for (int c = 0; c < D; c++) {
        for (int n = 0; n < N; n++) A[c * N + n] = -(float)((n + 1) * (0.5 + cm_rng_uniform(&rng)));
        Dk[c] = (float)(0.5 + cm_rng_uniform(&rng));
        const double dt = exp(log(1e-3) + (log(1e-1) - log(1e-3)) * cm_rng_uniform(&rng));
        bias[c] = k->bias ? (float)(dt + log(-expm1(-dt))) : 0.f; /* inverse softplus, as Mamba's init */
    }

    float *dA_ = upload(A, (size_t)D * N, CM_CUDA_F32), *dD_ = upload(Dk, D, CM_CUDA_F32),
          *dbias_ = upload(bias, D, CM_CUDA_F32);
    cm_cuda_scan_params p = {0};
    p.batch = Bt, p.L = L, p.D = D, p.N = N, p.dtype = k->dtype;
    p.u = upload(u, nx, k->dtype), p.delta = upload(dl, nx, k->dtype);
    p.B = upload(B, nbc, k->dtype), p.C = upload(C, nbc, k->dtype);
    p.A = dA_, p.D_skip = dD_;
    p.z = k->z ? upload(z, nx, k->dtype) : NULL;
    p.delta_bias = k->bias ? dbias_ : NULL;
    p.delta_softplus = k->softplus;
    p.out = poisoned(nx, es);
    p.x = poisoned(cm_cuda_scan_x_size(&p), 4);
    p.states_per_thread = k->g_fwd;
    CUDA_OK(cm_cuda_scan_fwd(&p, 0));
    CUDA_OK(cudaGetLastError());

    cm_cuda_scan_grads g = {0};
    g.dout = upload(dy, nx, k->dtype);
    g.du = poisoned(nx, es), g.ddelta = poisoned(nx, es), g.dz = k->z ? poisoned(nx, es) : NULL;
    g.dA = zeroed((size_t)D * N), g.dB = zeroed(nbc), g.dC = zeroed(nbc), g.dD = zeroed(D);
    g.ddelta_bias = zeroed(D);
    p.states_per_thread = k->g_bwd, p.n_segments = k->nseg;
    CUDA_OK(cudaMalloc(&g.work, cm_cuda_scan_bwd_workspace(&p) + 16));
    CUDA_OK(cm_cuda_scan_bwd(&p, &g, 0));
    CUDA_OK(cudaDeviceSynchronize());

    float *out = download(p.out, nx, k->dtype), *du = download(g.du, nx, k->dtype),
          *ddl = download(g.ddelta, nx, k->dtype), *dz = k->z ? download(g.dz, nx, k->dtype) : NULL;
    float *gA = download(g.dA, (size_t)D * N, CM_CUDA_F32), *gB = download(g.dB, nbc, CM_CUDA_F32),
          *gC = download(g.dC, nbc, CM_CUDA_F32), *gD = download(g.dD, D, CM_CUDA_F32),
          *gb = download(g.ddelta_bias, D, CM_CUDA_F32);

    /* the CPU reference, one sequence at a time, channels last */
    float *r_out = zeros(nx), *r_du = zeros(nx), *r_ddl = zeros(nx), *r_dz = zeros(nx);
    float *r_dA = zeros((size_t)D * N), *r_dB = zeros(nbc), *r_dC = zeros(nbc), *r_dD = zeros(D),
          *r_db = zeros(D);
    const size_t nl = (size_t)L * D;
    float *xs = zeros(nl), *dts = zeros(nl), *zs = zeros(nl), *dys = zeros(nl), *y = zeros(nl);
    float *Bs = zeros((size_t)L * N), *Cs = zeros((size_t)L * N), *h = zeros((size_t)D * N);
    float *gx = zeros(nl), *gdt = zeros(nl), *gz = zeros(nl), *gBs = zeros((size_t)L * N),
          *gCs = zeros((size_t)L * N), *work = zeros(cm_scan_backward_work(L, N, 1));
    for (int b = 0; b < Bt; b++) {
        for (int c = 0; c < D; c++)
            for (int t = 0; t < L; t++) {
                const size_t i = ((size_t)b * D + c) * L + t, j = (size_t)t * D + c;
                xs[j] = u[i], zs[j] = z[i], dys[j] = dy[i];
                dts[j] = k->softplus ? cm_softplus(dl[i] + bias[c]) : dl[i] + bias[c];
            }
        for (int n = 0; n < N; n++)
            for (int t = 0; t < L; t++) {
                Bs[(size_t)t * N + n] = B[((size_t)b * N + n) * L + t];
                Cs[(size_t)t * N + n] = C[((size_t)b * N + n) * L + t];
            }
        cm_scan_args a = {L, D, N, xs, dts, A, Bs, Cs, N, Dk, k->z ? zs : NULL, D};
        memset(h, 0, sizeof(float) * D * N);
        cm_selective_scan_ref(&a, h, y);
        memset(gx, 0, nl * 4), memset(gdt, 0, nl * 4), memset(gz, 0, nl * 4);
        memset(gBs, 0, (size_t)L * N * 4), memset(gCs, 0, (size_t)L * N * 4);
        cm_scan_grads sg = {gx, gdt, r_dA, gBs, gCs, r_dD, gz};
        cm_selective_scan_backward_ref(&a, dys, &sg, 1, work);
        for (int c = 0; c < D; c++)
            for (int t = 0; t < L; t++) {
                const size_t i = ((size_t)b * D + c) * L + t, j = (size_t)t * D + c;
                const float v = dl[i] + bias[c];
                /* through softplus: σ(v), 1 past the threshold */
                const float dv = k->softplus && v <= 20.f ? gdt[j] / (1.f + expf(-v)) : gdt[j];
                r_out[i] = y[j], r_du[i] = gx[j], r_dz[i] = gz[j], r_ddl[i] = dv;
                r_db[c] += dv;
            }
        for (int n = 0; n < N; n++)
            for (int t = 0; t < L; t++) {
                r_dB[((size_t)b * N + n) * L + t] = gBs[(size_t)t * N + n];
                r_dC[((size_t)b * N + n) * L + t] = gCs[(size_t)t * N + n];
            }
    }

    check("out", k, out, r_out, nx);
    check("du", k, du, r_du, nx);
    check("ddelta", k, ddl, r_ddl, nx);
    if (k->z) check("dz", k, dz, r_dz, nx);
    check("dA", k, gA, r_dA, (size_t)D * N);
    check("dB", k, gB, r_dB, nbc);
    check("dC", k, gC, r_dC, nbc);
    check("dD", k, gD, r_dD, D);
    if (k->bias) check("ddelta_bias", k, gb, r_db, D);

    void *dev[] = {(void *)p.u, (void *)p.delta, (void *)p.B, (void *)p.C, (void *)p.z, p.out,
                   p.x, (void *)g.dout, g.du, g.ddelta, g.dz, g.dA, g.dB, g.dC, g.dD,
                   g.ddelta_bias, g.work, dA_, dD_, dbias_};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++) cudaFree(dev[i]);
    float *host[] = {u, dl, z, dy, B, C, A, Dk, bias, out, du, ddl, dz, gA, gB, gC, gD, gb,
                     r_out, r_du, r_ddl, r_dz, r_dA, r_dB, r_dC, r_dD, r_db, xs, dts, zs, dys, y,
                     Bs, Cs, h, gx, gdt, gz, gBs, gCs, work};
    for (size_t i = 0; i < sizeof host / sizeof *host; i++) free(host[i]);
}

int main(void) {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) SKIP("no CUDA device");

    const cm_cuda_dtype F = CM_CUDA_F32, H = CM_CUDA_BF16;
    const scan_case cases[] = {
        /* batch L     D   N  z bias sp dtype  gf gb nseg */
        {1, 1, 3, 1, 1, 1, 1, F, 0, 0, 0},         /* one step, one state */
        {2, 100, 37, 16, 1, 1, 1, F, 0, 0, 0},     /* L % 8 != 0: element-wise staging */
        {2, 200, 70, 16, 0, 0, 0, F, 0, 0, 1},     /* vector staging, a tail tile, no gate */
        {3, 256, 48, 4, 1, 0, 1, F, 0, 0, 0},
        {1, 1000, 20, 16, 1, 1, 1, F, 0, 0, 3},    /* three segments */
        {2, 333, 50, 5, 1, 1, 1, F, 0, 0, 0},      /* N odd: a half-empty state group */
        {2, 160, 33, 16, 1, 1, 1, F, 1, 1, 1},     /* one state per thread both ways */
        {2, 160, 33, 16, 1, 1, 1, F, 4, 2, 2},
        {1, 77, 130, 3, 1, 1, 1, F, 1, 1, 5},
        {2, 100, 37, 16, 1, 1, 1, H, 0, 0, 0},
        {2, 200, 70, 16, 0, 0, 0, H, 0, 0, 1},
        {1, 1000, 20, 16, 1, 1, 1, H, 2, 2, 4},
        {2, 2048, 40, 16, 1, 1, 1, H, 0, 0, 0},
        {1, 1, 3, 1, 1, 1, 1, H, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_case(&cases[i]);
    fprintf(stderr, "worst error: fp32 %.3g (tolerance 1e-4), bf16 %.3g (tolerance 2e-2)\n",
            worst[CM_CUDA_F32], worst[CM_CUDA_BF16]);
    return test_summary();
}
