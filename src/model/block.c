/* The Mamba mixer (SPEC.md "One Mamba block"), two ways: over a whole
 * sequence with the selective scan, and one token at a time as a
 * recurrence. Both continue from and update the same per-layer state. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "model/model.h"
#include "model/ops.h"
#include "ssm/s4d.h"
#include "ssm/selective_scan.h"

/* channel groups of the S4D recurrence (any count gives the same bits) */
enum { S4D_GROUPS = 8 };

int cm_block_scratch_init(cm_block_scratch *s, const cmamba_config *cfg, int cap,
                          cmamba_error *err) {
    const size_t di = (size_t)cfg->d_inner, dbc = (size_t)cfg->dt_rank + 2 * cfg->d_state;
    memset(s, 0, sizeof *s);
    s->cap = cap;
    s->xz = cm_malloc(sizeof(float) * cap * 2 * di, err);
    s->xc = cm_malloc(sizeof(float) * cap * di, err);
    s->xdbc = cm_malloc(sizeof(float) * cap * dbc, err);
    s->delta = cm_malloc(sizeof(float) * cap * di, err);
    s->y = cm_malloc(sizeof(float) * cap * di, err);
    s->conv_wT = cm_malloc(sizeof(float) * cfg->d_conv * di, err);
    const int s4d = cfg->ssm == CMAMBA_SSM_S4D;
    if (s4d) s->s4d_work = cm_malloc(sizeof(float) * cm_s4d_work(1, cfg->d_state, S4D_GROUPS), err);
    if (!s->xz || !s->xc || !s->xdbc || !s->delta || !s->y || !s->conv_wT ||
        (s4d && !s->s4d_work)) {
        cm_block_scratch_free(s);
        return -1;
    }
    return 0;
}

void cm_block_scratch_free(cm_block_scratch *s) {
    free(s->xz); free(s->xc); free(s->xdbc); free(s->delta); free(s->y);
    free(s->conv_wT); free(s->s4d_work);
    memset(s, 0, sizeof *s);
}

/* Steps 4-5: [δ | B | C] = x·W_xᵀ, then Δ = softplus(δ·W_dtᵀ + b_dt). */
static void project_delta(const cmamba_config *cfg, const cm_layer *w, int L,
                          cm_block_scratch *s) {
    const int di = cfg->d_inner, dbc = cfg->dt_rank + 2 * cfg->d_state;
    cm_matmul(s->xdbc, s->xc, &w->x_proj_w, NULL, L);
    /* δ is the first R entries of each [δ | B | C] row */
    cm_matmul_strided(s->delta, s->xdbc, dbc, &w->dt_proj_w, w->dt_proj_b, L);
    cm_softplus_forward(s->delta, s->delta, (size_t)L * di);
}

/* Step 6 on rows [r0, r0+L) of the scratch, one sequence continuing from
 * ssm_state: the scan with D skip and z gate into s->y. An S4D layer's Δ,
 * B, C are parameters, not projections. */
static void scan_rows(const cmamba_config *cfg, const cm_layer *w, int r0, int L,
                      float *ssm_state, cm_block_scratch *s, float *s4d_work) {
    const int di = cfg->d_inner, R = cfg->dt_rank, N = cfg->d_state, dbc = R + 2 * N;
    const size_t r = (size_t)r0 * di;
    if (cfg->ssm == CMAMBA_SSM_S4D) {
        const cm_s4d_args a = {
            .L = L, .d_inner = di, .d_state = N, .x = s->xc + r, .log_dt = w->log_dt,
            .A_log = w->A_log, .B = w->s4d_B, .C = w->s4d_C, .D = w->D,
            .z = s->xz + 2 * r + di, .z_stride = 2 * di,
        };
        cm_s4d_scan(&a, ssm_state, s->y + r, S4D_GROUPS, s4d_work);
    } else {
        const float *xdbc = s->xdbc + (size_t)r0 * dbc;
        const cm_scan_args a = {
            .L = L, .d_inner = di, .d_state = N,
            .x = s->xc + r, .delta = s->delta + r, .A = w->A,
            .B = xdbc + R, .C = xdbc + R + N, .bc_stride = dbc,
            .D = w->D, .z = s->xz + 2 * r + di, .z_stride = 2 * di,
        };
        cm_selective_scan(&a, ssm_state, s->y + r);
    }
}

void cm_mixer_forward(const cmamba_config *cfg, const cm_layer *w, const float *u, int L,
                      float *conv_state, float *ssm_state, cm_block_scratch *s, float *out) {
    const int di = cfg->d_inner, K = cfg->d_conv;

    /* 1. [x | z] = u·W_inᵀ + b_in */
    cm_matmul(s->xz, u, &w->in_proj_w, w->in_proj_b, L);

    /* 2-3. causal depthwise conv over time, then silu on each row while it
     * is in L1. Inputs before this chunk come from the conv state (zeros at
     * the sequence start). Each output adds the bias, then tap k = 0 … K−1,
     * as the step does; the taps are transposed to (K, d_inner) so that the
     * loops run over channels. */
    for (int c = 0; c < di; c++)
        for (int k = 0; k < K; k++) s->conv_wT[(size_t)k * di + c] = w->conv_w[(size_t)c * K + k];
#pragma omp parallel for schedule(static) if ((long)L * di * K > 100000)
    for (int t = 0; t < L; t++) {
        float *acc = s->xc + (size_t)t * di;
        for (int c = 0; c < di; c++) acc[c] = w->conv_b ? w->conv_b[c] : 0.0f;
        for (int k = 0; k < K; k++) {
            const int src = t - K + 1 + k;
            const float *wk = s->conv_wT + (size_t)k * di;
            if (src >= 0) {
                const float *x = s->xz + (size_t)src * 2 * di;
#pragma omp simd
                for (int c = 0; c < di; c++) acc[c] += wk[c] * x[c];
            } else {
                for (int c = 0; c < di; c++) acc[c] += wk[c] * conv_state[(size_t)c * (K - 1) + K - 1 + src];
            }
        }
        cm_silu_forward(acc, acc, (size_t)di); /* while the row is in L1 */
    }
    /* keep the last K−1 conv inputs of (old state ++ this chunk) */
    for (int c = 0; c < di; c++) {
        float *prev = conv_state + (size_t)c * (K - 1);
        for (int j = 0; j < K - 1; j++) {
            int src = L - (K - 1) + j; /* index in this chunk */
            prev[j] = src >= 0 ? s->xz[(size_t)src * 2 * di + c] : prev[j + L];
        }
    }

    if (cfg->ssm == CMAMBA_SSM_S6) project_delta(cfg, w, L, s);
    scan_rows(cfg, w, 0, L, ssm_state, s, s->s4d_work);
    cm_matmul(out, s->y, &w->out_proj_w, w->out_proj_b, L);
}

/* Steps 2-3 for channels [c0, c1) of sequence i, one token: the conv
 * window is (state ++ x): dot it with the filter, slide it; then silu. */
static void conv_step(const cmamba_config *cfg, const cm_layer *w, cm_block_scratch *s, int i,
                      float *conv_state, int c0, int c1) {
    const int di = cfg->d_inner, K = cfg->d_conv;
    const float *xz = s->xz + (size_t)i * 2 * di;
    float *xc = s->xc + (size_t)i * di;
    for (int c = c0; c < c1; c++) {
        const float *wc = w->conv_w + (size_t)c * K;
        float *prev = conv_state + (size_t)c * (K - 1);
        const float x = xz[c];
        float acc = w->conv_b ? w->conv_b[c] : 0.0f;
        for (int k = 0; k < K - 1; k++) acc += wc[k] * prev[k];
        acc += wc[K - 1] * x;
        xc[c] = acc;
        for (int k = 0; k + 1 < K - 1; k++) prev[k] = prev[k + 1];
        if (K > 1) prev[K - 2] = x;
    }
    cm_silu_forward(xc + c0, xc + c0, (size_t)(c1 - c0));
}

/* One token of each of n sequences through an S6 layer in one parallel
 * region, the threads meeting at a barrier only where a step needs all
 * channels of the one before (a region per operation, with its start and
 * end, left them waiting on each other longer). Each thread takes a part
 * of the channels through
 *   in_proj rows c (x) and d_inner + c (z), the conv, silu;
 * then a part of x_proj's rows; then its channels through
 *   dt_proj row c, softplus, the scan;
 * then a part of out_proj's rows. Every product is the GEMV kernels' on
 * the thread's rows (cm_matmul_rows), each thread quantising its input. */
static void step_fused(const cmamba_config *cfg, const cm_layer *w, const float *u, int n,
                       cmamba_state *const *states, int layer, cm_block_scratch *s, float *out) {
    const int d = cfg->d_model, di = cfg->d_inner, R = cfg->dt_rank, N = cfg->d_state,
              dbc = R + 2 * N;
#pragma omp parallel if ((long)n * di * d > 50000)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int part = ((di + nt - 1) / nt + 15) / 16 * 16; /* whole vectors of the scan */
        const int c0 = t * part < di ? t * part : di, c1 = c0 + part < di ? c0 + part : di;
        const int in_rows[4] = {c0, c1, di + c0, di + c1};
        cm_matmul_rows(s->xz, 2 * di, u, d, &w->in_proj_w, w->in_proj_b, n, in_rows, 2);
        for (int i = 0; i < n; i++) conv_step(cfg, w, s, i, cm_state_conv(states[i], layer), c0, c1);
#pragma omp barrier
        const int x_rows[2] = {dbc * t / nt, dbc * (t + 1) / nt};
        cm_matmul_rows(s->xdbc, dbc, s->xc, di, &w->x_proj_w, NULL, n, x_rows, 1);
#pragma omp barrier
        const int dt_rows[2] = {c0, c1};
        cm_matmul_rows(s->delta, di, s->xdbc, dbc, &w->dt_proj_w, w->dt_proj_b, n, dt_rows, 1);
        for (int i = 0; i < n; i++) {
            const size_t r = (size_t)i * di;
            float *delta = s->delta + r;
            cm_softplus_forward(delta + c0, delta + c0, (size_t)(c1 - c0));
            const float *xdbc = s->xdbc + (size_t)i * dbc;
            const cm_scan_args a = {
                .L = 1, .d_inner = di, .d_state = N, .x = s->xc + r, .delta = delta, .A = w->A,
                .B = xdbc + R, .C = xdbc + R + N, .bc_stride = dbc,
                .D = w->D, .z = s->xz + 2 * r + di, .z_stride = 2 * di,
            };
            cm_selective_scan_step(&a, cm_state_ssm(states[i], layer), s->y + r, c0, c1);
        }
#pragma omp barrier
        const int out_rows[2] = {d * t / nt, d * (t + 1) / nt};
        cm_matmul_rows(out, d, s->y, di, &w->out_proj_w, w->out_proj_b, n, out_rows, 1);
    }
}

/* n rows through every projection by the GEMV kernels (not sgemm), each
 * input quantised on the stack */
static int step_fusable(const cmamba_config *cfg, const cm_layer *w, int n) {
    const cm_matrix *m[4] = {&w->in_proj_w, &w->x_proj_w, &w->dt_proj_w, &w->out_proj_w};
    for (int k = 0; k < 4; k++)
        if (n > cm_matrix_gemv_rows(m[k]->type)) return 0;
    return cfg->ssm == CMAMBA_SSM_S6 && cfg->d_model <= CM_GEMV_STACK_COLS &&
           cfg->d_inner <= CM_GEMV_STACK_COLS && cfg->dt_rank <= CM_GEMV_STACK_COLS;
}

void cm_mixer_step(const cmamba_config *cfg, const cm_layer *w, const float *u, int n,
                   cmamba_state *const *states, int layer, cm_block_scratch *s, float *out) {
    if (step_fusable(cfg, w, n)) {
        step_fused(cfg, w, u, n, states, layer, s, out);
        return;
    }
    /* one row per sequence: the projections read their weights once for all */
    cm_matmul(s->xz, u, &w->in_proj_w, w->in_proj_b, n);
    for (int i = 0; i < n; i++)
        conv_step(cfg, w, s, i, cm_state_conv(states[i], layer), 0, cfg->d_inner);
    if (cfg->ssm == CMAMBA_SSM_S6) project_delta(cfg, w, n, s);
    /* an S4D row needs its own scratch: its sequences go one after another */
    for (int i = 0; i < n; i++)
        scan_rows(cfg, w, i, 1, cm_state_ssm(states[i], layer), s, s->s4d_work);
    cm_matmul(out, s->y, &w->out_proj_w, w->out_proj_b, n);
}
