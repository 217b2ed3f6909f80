/* Central finite differences against every backward of train/layers.c and
 * against the whole trainable model.
 *
 * The layers run in fp32, so the check does too: for a layer the scalar is
 * Σ out·g with fixed random g (summed in double), each input moved by
 * ±EPS = 1e-2 on values of order 1. The truncation error is O(EPS²) ≈ 1e-4
 * relative, and fp32 rounding of the outputs (~1e-7 of the sum) costs about
 * 1e-7 / EPS ≈ 1e-5: gradients agree to ~1e-4 or better (max |Δ| / max |ref|),
 * and TOL = 3e-3 leaves room for that while a wrong term (an error of order
 * 1) cannot pass.
 *
 * The whole model's scalar is its loss, one fp32 number through many
 * layers: its rounding (~1e-7) puts a floor of ~1e-5 under every difference
 * quotient, against gradients as small as 1e-3 for dt_proj and A_log. So
 * the model check is looser, TOL_MODEL = 3e-2 (it sees ≤ 1e-2): it is there
 * for the wiring, each backward being held to TOL above and the model to
 * 1e-4 against transformers in float64 by test_grad. */
#include <omp.h>
#include <stdint.h>

#include "model/ops.h"
#include "rng.h"
#include "test.h"
#include "train/layers.h"
#include "train/train_model.h"

static const float EPS = 1e-2f;
static const double TOL = 3e-3, TOL_MODEL = 3e-2;



/* A layer under test: f runs its forward on ctx and returns the scalar. */
typedef double (*scalar_fn)(void *ctx);

/* Moves each of v[0..n) by ±EPS, compares (f+ − f−)/2EPS with grad. */
static void fd_check(const char *layer, const char *var, scalar_fn f, void *ctx, float *v,
                     const float *grad, size_t n, double tol) {
    double *num = malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++) {
        const float keep = v[i];
        v[i] = keep + EPS;
        const double fp = f(ctx);
        v[i] = keep - EPS;
        const double fm = f(ctx);
        v[i] = keep;
        num[i] = (fp - fm) / (2.0 * EPS);
    }
    const double e = rel_err_f32_f64(grad, num, n);
    double ref = 0;
    for (size_t i = 0; i < n; i++) ref = fabs(num[i]) > ref ? fabs(num[i]) : ref;
    printf("  %-10s %-30s n=%-4zu max|grad| %.3e  err %.2e\n", layer, var, n, ref, e);
    CHECK_MSG(e <= tol && ref > 1e-3, "%s d%s: error %.3e (max |grad| %.3e)", layer, var, e, ref);
    free(num);
}

/* ---- embedding ------------------------------------------------------------- */

typedef struct { float *table, *out, *g; int32_t *ids; int n, d; } emb_ctx;

static double emb_f(void *p) {
    emb_ctx *c = p;
    cm_embedding_forward(c->out, c->ids, c->table, c->n, c->d);
    return dot(c->out, c->g, (size_t)c->n * c->d);
}

static void test_embedding(void) {
    int32_t ids[] = {3, 0, 3, 5, 1}; /* a repeated id: its row gathers twice */
    emb_ctx c = {.n = 5, .d = 4, .ids = ids};
    c.table = rnd(6 * 4, -1, 1);
    c.out = zeros(5 * 4);
    c.g = rnd(5 * 4, -1, 1);
    float *dtable = zeros(6 * 4);
    cm_embedding_backward(dtable, c.g, ids, c.n, c.d);
    fd_check("embedding", "table", emb_f, &c, c.table, dtable, 6 * 4, TOL);
    free(c.table); free(c.out); free(c.g); free(dtable);
}

/* ---- rmsnorm ------------------------------------------------------------------ */

typedef struct { float *in, *w, *out, *g; int n, d; } norm_ctx;

static double norm_f(void *p) {
    norm_ctx *c = p;
    cm_rmsnorm(c->out, c->in, c->w, c->n, c->d, 1e-5f);
    return dot(c->out, c->g, (size_t)c->n * c->d);
}

static void test_rmsnorm(void) {
    norm_ctx c = {.n = 3, .d = 6};
    c.in = rnd(18, -2, 2);
    c.w = rnd(6, 0.5, 1.5);
    c.out = zeros(18);
    c.g = rnd(18, -1, 1);
    float *din = zeros(18), *dw = zeros(6);
    cm_rmsnorm_backward(din, dw, c.g, c.in, c.w, c.n, c.d, 1e-5f);
    fd_check("rmsnorm", "in", norm_f, &c, c.in, din, 18, TOL);
    fd_check("rmsnorm", "weight", norm_f, &c, c.w, dw, 6, TOL);
    free(c.in); free(c.w); free(c.out); free(c.g); free(din); free(dw);
}

/* ---- linear -------------------------------------------------------------------- */

typedef struct { float *in, *W, *b, *out, *g; int n, n_in, n_out; } lin_ctx;

static double lin_f(void *p) {
    lin_ctx *c = p;
    cm_linear(c->out, c->in, c->W, c->b, c->n, c->n_in, c->n_out);
    return dot(c->out, c->g, (size_t)c->n * c->n_out);
}

static void test_linear(void) {
    lin_ctx c = {.n = 4, .n_in = 5, .n_out = 3};
    c.in = rnd(20, -1, 1);
    c.W = rnd(15, -1, 1);
    c.b = rnd(3, -1, 1);
    c.out = zeros(12);
    c.g = rnd(12, -1, 1);
    float *din = zeros(20), *dW = zeros(15), *db = zeros(3);
    cm_linear_backward(din, dW, db, c.g, c.in, c.W, c.n, c.n_in, c.n_out);
    fd_check("linear", "in", lin_f, &c, c.in, din, 20, TOL);
    fd_check("linear", "W", lin_f, &c, c.W, dW, 15, TOL);
    fd_check("linear", "b", lin_f, &c, c.b, db, 3, TOL);
    free(c.in); free(c.W); free(c.b); free(c.out); free(c.g); free(din); free(dW); free(db);
}

/* ---- conv1d -------------------------------------------------------------------- */

typedef struct { float *in, *w, *b, *out, *g; int B, T, C, K; } conv_ctx;

static double conv_f(void *p) {
    conv_ctx *c = p;
    cm_conv1d_forward(c->out, c->in, c->w, c->b, c->B, c->T, c->C, c->K);
    return dot(c->out, c->g, (size_t)c->B * c->T * c->C);
}

/* T < K covers a filter longer than the sequence. */
static void test_conv1d(int T, int K) {
    conv_ctx c = {.B = 2, .T = T, .C = 3, .K = K};
    const size_t n = (size_t)c.B * T * c.C;
    c.in = rnd(n, -1, 1);
    c.w = rnd(3 * (size_t)K, -1, 1);
    c.b = rnd(3, -1, 1);
    c.out = zeros(n);
    c.g = rnd(n, -1, 1);
    float *din = zeros(n), *dw = zeros(3 * (size_t)K), *db = zeros(3);
    cm_conv1d_backward(din, dw, db, c.g, c.in, c.w, c.B, T, c.C, K);
    fd_check("conv1d", "in", conv_f, &c, c.in, din, n, TOL);
    fd_check("conv1d", "w", conv_f, &c, c.w, dw, 3 * (size_t)K, TOL);
    fd_check("conv1d", "b", conv_f, &c, c.b, db, 3, TOL);
    free(c.in); free(c.w); free(c.b); free(c.out); free(c.g); free(din); free(dw); free(db);
}

/* ---- silu, softplus ------------------------------------------------------------- */

typedef struct { float *in, *out, *g; size_t n; int softplus; } act_ctx;

static double act_f(void *p) {
    act_ctx *c = p;
    if (c->softplus) cm_softplus_forward(c->out, c->in, c->n);
    else cm_silu_forward(c->out, c->in, c->n);
    return dot(c->out, c->g, c->n);
}

static void test_activation(int softplus) {
    act_ctx c = {.n = 12, .softplus = softplus};
    c.in = rnd(c.n, -4, 4);
    c.in[0] = 25.0f; /* above softplus's threshold */
    c.in[1] = -25.0f;
    c.out = zeros(c.n);
    c.g = rnd(c.n, -1, 1);
    float *din = zeros(c.n);
    if (softplus) cm_softplus_backward(din, c.g, c.in, c.n);
    else cm_silu_backward(din, c.g, c.in, c.n);
    fd_check(softplus ? "softplus" : "silu", "in", act_f, &c, c.in, din, c.n, TOL);
    free(c.in); free(c.out); free(c.g); free(din);
}

/* ---- selective scan --------------------------------------------------------------
 * B and C interleaved in one (L, 2N+1) buffer and z inside an (L, 2·d_inner)
 * one, as the strides allow. */

enum { SL = 9, SD = 5, SN = 3 };

typedef struct { cm_scan_args a; float *h, *y, *g; } scan_ctx;

static double scan_f(void *p) {
    scan_ctx *c = p;
    memset(c->h, 0, sizeof(float) * SD * SN);
    cm_selective_scan(&c->a, c->h, c->y);
    return dot(c->y, c->g, SL * SD);
}

static void test_scan(int gated, int groups) {
    float *x = rnd(SL * SD, -1, 1), *delta = rnd(SL * SD, 0.05, 0.8), *A = rnd(SD * SN, -2, -0.3),
          *bc = rnd(SL * (2 * SN + 1), -1, 1), *D = rnd(SD, 0.5, 1.5),
          *xz = rnd(SL * 2 * SD, -2, 2);
    scan_ctx c = {.h = zeros(SD * SN), .y = zeros(SL * SD), .g = rnd(SL * SD, -1, 1)};
    c.a = (cm_scan_args){.L = SL, .d_inner = SD, .d_state = SN, .x = x, .delta = delta, .A = A,
                         .B = bc, .C = bc + SN, .bc_stride = 2 * SN + 1,
                         .D = gated ? D : NULL, .z = gated ? xz + SD : NULL, .z_stride = 2 * SD};
    float *dx = zeros(SL * SD), *ddelta = zeros(SL * SD), *dA = zeros(SD * SN),
          *dbc = zeros(SL * (2 * SN + 1)), *dD = zeros(SD), *dxz = zeros(SL * 2 * SD);
    cm_scan_grads g = {.dx = dx, .ddelta = ddelta, .dA = dA, .dB = dbc, .dC = dbc + SN,
                       .dD = dD, .dz = dxz + SD};
    float *work = malloc(sizeof(float) * cm_scan_backward_work(SL, SN, groups));
    cm_selective_scan_backward(&c.a, c.g, &g, groups, work);

    const char *name = gated ? "scan" : "scan(noDz)";
    fd_check(name, "x", scan_f, &c, x, dx, SL * SD, TOL);
    fd_check(name, "delta", scan_f, &c, delta, ddelta, SL * SD, TOL);
    fd_check(name, "A", scan_f, &c, A, dA, SD * SN, TOL);
    fd_check(name, "B,C", scan_f, &c, bc, dbc, SL * (2 * SN + 1), TOL);
    if (gated) {
        fd_check(name, "D", scan_f, &c, D, dD, SD, TOL);
        fd_check(name, "z", scan_f, &c, xz + SD, dxz + SD, (size_t)(SL * 2 - 1) * SD, TOL);
    }
    free(x); free(delta); free(A); free(bc); free(D); free(xz); free(c.h); free(c.y); free(c.g);
    free(dx); free(ddelta); free(dA); free(dbc); free(dD); free(dxz); free(work);
}

/* ---- cross-entropy --------------------------------------------------------------- */

typedef struct { float *logits, *probs, *losses; int32_t *targets; int n, V; } ce_ctx;

static double ce_f(void *p) {
    ce_ctx *c = p;
    cm_crossentropy_forward(c->probs, c->losses, c->logits, c->targets, c->n, c->V);
    double s = 0;
    for (int i = 0; i < c->n; i++) s += c->losses[i];
    return s / c->n;
}

static void test_crossentropy(void) {
    int32_t targets[] = {2, 0, 6, 2};
    ce_ctx c = {.n = 4, .V = 7, .targets = targets};
    c.logits = rnd(28, -3, 3);
    c.probs = zeros(28);
    c.losses = zeros(4);
    float *dlogits = zeros(28);
    ce_f(&c);
    cm_crossentropy_backward(dlogits, c.probs, targets, 1.0f / c.n, c.n, c.V);
    fd_check("xent", "logits", ce_f, &c, c.logits, dlogits, 28, TOL);
    free(c.logits); free(c.probs); free(c.losses); free(dlogits);
}

/* ---- the whole model ---------------------------------------------------------------
 * Every parameter of a tiny model, moved one at a time, against the loss. */

/* inputs/targets non-NULL: the loss over the scored targets (the tasks'
 * masks); otherwise next-token over ids */
typedef struct {
    cm_train_model *m;
    const int32_t *ids, *inputs, *targets;
    int B, T;
} model_ctx;

static double model_f(void *p) {
    model_ctx *c = p;
    float loss;
    cmamba_error err;
    cm_train_stats st;
    if (c->targets) {
        CHECK(cm_train_run(c->m, c->inputs, c->targets, c->B, c->T, 0.0f, &st, &err) == 0);
        return st.loss;
    }
    CHECK(cm_train_loss(c->m, c->ids, c->B, c->T, &loss, &err) == 0);
    return loss;
}

static void test_model(int tied, cmamba_ssm ssm, int masked) {
    cmamba_config cfg = {.d_model = 6, .n_layer = 2, .vocab_size = 11, .d_inner = 12,
                         .d_state = 3, .d_conv = 3, .dt_rank = 2, .expand = 2, .eps = 1e-5f,
                         .use_bias = !tied, .use_conv_bias = 1, .tie_embeddings = tied,
                         .ssm = ssm};
    cm_train_model *m;
    cmamba_error err;
    CHECK(cm_train_model_new(&cfg, 7, &m, &err) == 0);
    /* away from the initialisation, so that every term matters: the init
     * keeps Δ near 0.01 and δ faint, which would hide dt_proj and A_log */
    for (size_t i = 0; i < m->n_tensors; i++) {
        float *v = m->params + m->offset[i];
        const cm_param_kind kind = m->desc[i].kind;
        const float scale = kind == CM_P_X_PROJ_W || kind == CM_P_EMBEDDING || kind == CM_P_LM_HEAD
                                ? 3.0f : kind == CM_P_DT_PROJ_W ? 2.0f : 1.0f;
        for (size_t k = 0; k < m->desc[i].numel; k++) {
            const float u = (float)(2 * cm_rng_uniform(&test_rng) - 1);
            v[k] = kind == CM_P_DT_PROJ_B ? u                       /* Δ ∈ (0.3, 1.3) */
                 : kind == CM_P_LOG_DT ? u - 1.0f                   /* Δ ∈ (0.13, 1) */
                 : kind == CM_P_A_LOG ? u - 1.0f                    /* A ∈ (−1, −0.13) */
                 : scale * (v[k] + 0.3f * u);
        }
    }
    const int B = 2, T = 6;
    int32_t ids[2 * 7] = {1, 4, 10, 0, 4, 7, 2, 9, 9, 3, 0, 5, 8, 1};
    float loss;
    model_ctx c = {m, ids, NULL, NULL, B, T};
    if (masked) {
        /* next-token pairs with only 6 of the 12 targets scored */
        static int32_t in[12], tg[12];
        for (int s = 0; s < B; s++)
            for (int t = 0; t < T; t++) {
                in[s * T + t] = ids[s * (T + 1) + t];
                tg[s * T + t] = (s * T + t) % 5 < 2 ? ids[s * (T + 1) + t + 1] : -1;
            }
        c.inputs = in;
        c.targets = tg;
        cm_train_stats st;
        cm_train_zero_grad(m);
        CHECK(cm_train_run(m, in, tg, B, T, 1.0f, &st, &err) == 0);
        CHECK(st.scored == 6);
        loss = st.loss;
    } else {
        cm_train_zero_grad(m);
        CHECK(cm_train_forward_backward(m, ids, B, T, &loss, &err) == 0);
    }
    CHECK_MSG(fabs(model_f(&c) - loss) < 1e-6, "forward-only loss %.9g vs %.9g", model_f(&c), loss);
    printf("  tiny model (%s, %s%s), loss %.6f\n", tied ? "tied" : "untied, biases",
           ssm == CMAMBA_SSM_S4D ? "S4D" : "S6", masked ? ", 6 of 12 targets scored" : "", loss);
    for (size_t i = 0; i < m->n_tensors; i++)
        fd_check("model", m->desc[i].name, model_f, &c,
                 m->params + m->offset[i], m->grads + m->offset[i], m->desc[i].numel, TOL_MODEL);
    c.targets = NULL;

    /* batching: the batch's gradient is the mean of its sequences' */
    float *sum = zeros(m->n_params), l1;
    for (int s = 0; s < B; s++) {
        cm_train_zero_grad(m);
        CHECK(cm_train_forward_backward(m, ids + s * (T + 1), 1, T, &l1, &err) == 0);
        for (size_t k = 0; k < m->n_params; k++) sum[k] += m->grads[k] / B;
    }
    cm_train_zero_grad(m);
    CHECK(cm_train_forward_backward(m, ids, B, T, &loss, &err) == 0);
    double *ref = malloc(sizeof(double) * m->n_params);
    for (size_t k = 0; k < m->n_params; k++) ref[k] = sum[k];
    double e = rel_err_f32_f64(m->grads, ref, m->n_params);
    printf("  batch of %d vs mean of single sequences: %.2e\n", B, e);
    CHECK_MSG(e < 1e-5, "batched gradient differs from the per-sequence mean: %.3e", e);

    /* determinism, and accumulation: a second call adds the same gradient */
    float *once = malloc(sizeof(float) * m->n_params);
    memcpy(once, m->grads, sizeof(float) * m->n_params);
    cm_train_zero_grad(m);
    CHECK(cm_train_forward_backward(m, ids, B, T, &loss, &err) == 0);
    CHECK_MSG(memcmp(once, m->grads, sizeof(float) * m->n_params) == 0,
              "gradients not reproducible");
    CHECK(cm_train_forward_backward(m, ids, B, T, &loss, &err) == 0);
    for (size_t k = 0; k < m->n_params; k++) ref[k] = 2.0 * once[k];
    e = rel_err_f32_f64(m->grads, ref, m->n_params);
    CHECK_MSG(e < 1e-6, "accumulated gradient is not twice one pass: %.3e", e);

    int32_t bad[] = {1, 11};
    CHECK(cm_train_forward_backward(m, bad, 1, 1, &loss, &err) == -1);
    CHECK(strstr(err.msg, "outside the vocabulary") != NULL);
    free(sum); free(ref); free(once);
    cm_train_model_free(m);
}

/* Every sum runs in an order fixed by the shapes: gradients are the same
 * bits with 1 thread and with 3, on sizes where the loops do go parallel. */
static void test_threads(void) {
    cmamba_config cfg = {.d_model = 64, .n_layer = 1, .vocab_size = 300, .d_inner = 128,
                         .d_state = 8, .d_conv = 4, .dt_rank = 4, .expand = 2, .eps = 1e-5f,
                         .use_conv_bias = 1, .tie_embeddings = 1};
    const int B = 2, T = 70;
    int32_t ids[2 * 71];
    for (int i = 0; i < B * (T + 1); i++) ids[i] = (int32_t)(cm_rng_u64(&test_rng) % 300);
    cm_train_model *m;
    cmamba_error err;
    float loss[2], *grads[2];
    CHECK(cm_train_model_new(&cfg, 3, &m, &err) == 0);
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k ? 3 : 1);
        cm_train_zero_grad(m);
        CHECK(cm_train_forward_backward(m, ids, B, T, &loss[k], &err) == 0);
        grads[k] = malloc(sizeof(float) * m->n_params);
        memcpy(grads[k], m->grads, sizeof(float) * m->n_params);
    }
    printf("  1 vs 3 threads: loss %.7f %.7f\n", loss[0], loss[1]);
    CHECK_MSG(loss[0] == loss[1] && memcmp(grads[0], grads[1], sizeof(float) * m->n_params) == 0,
              "gradients differ between 1 and 3 threads");
    free(grads[0]);
    free(grads[1]);
    cm_train_model_free(m);
}

int main(void) {
    printf("finite differences, eps %g, tolerance %.0e (max |Δ| / max |ref|)\n", EPS, TOL);
    test_embedding();
    test_rmsnorm();
    test_linear();
    test_conv1d(7, 4);
    test_conv1d(2, 4);
    test_activation(0);
    test_activation(1);
    test_scan(1, 2);
    test_scan(0, 5);
    test_crossentropy();
    test_model(0, CMAMBA_SSM_S6, 0);
    test_model(1, CMAMBA_SSM_S6, 1);
    test_model(1, CMAMBA_SSM_S4D, 0);
    test_model(0, CMAMBA_SSM_S4D, 1);
    test_threads();
    return test_summary();
}
