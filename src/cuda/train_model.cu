/* GPU training (train_cuda.h): the flat parameter, gradient and moment
 * buffers, the activations of a batch, and the forward and backward passes
 * layer by layer, wired as train/train_model.c wires the CPU layers. The
 * kernels and products are in train_kernels.cuh; the scan is cuda_scan.h's. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "cuda/check.cuh"
#include "cuda/train_cuda.h"
#include "cuda/train_kernels.cuh"
extern "C" { /* the library's internal headers are C */
#include "common.h"
#include "model/params.h"
}

using namespace cm;

namespace {

constexpr size_t BLAS_WORKSPACE = (size_t)32 << 20;
constexpr size_t LOGITS_BYTES = (size_t)1 << 30;     /* of one chunk of head logits */
constexpr size_t NONE = (size_t)-1;                  /* offset of an absent tensor */

/* Offsets (floats) of one layer's tensors in the flat buffers; NONE when absent. */
struct LayerOff {
    size_t norm, in_w, in_b, conv_w, conv_b, x_w, dt_w, dt_b, A_log, D, out_w, out_b;
    size_t first, count; /* the layer's contiguous range */
};

/* One layer's activations: token-major rows (n, ·) or channel-major (B, ·, T). */
struct Acts {
    float *res;              /* (n, d) fp32: the stream entering the layer (+ previous out_proj bias) */
    void *normed;            /* (n, d) E */
    void *x, *z, *xs;        /* (B, di, T) E: in_proj halves, silu(conv(x)) */
    void *dlow, *Bm, *Cm;    /* (B, R, T), (B, N, T), (B, N, T) E: x_proj */
    void *dtr, *y;           /* (B, di, T) E: δ·W_dtᵀ (bias and softplus in the scan), scan output */
    float *ckpt;             /* the scan's saved states */
    float *A;                /* (di, N) −exp(A_log) */
};

/* Where a step's time goes (cm_cuda_train_profile): each tick records an
 * event, the time since the previous one going to the tick's phase. */
const char *const PHASE_NAMES[CM_CUDA_PHASES] = {
    "embedding", "norm", "products", "conv", "scan", "head + loss", "norm bwd", "products bwd",
    "conv bwd", "scan bwd", "other bwd"};
enum Phase { EMBED, NORM, PROD, CONV, SCAN, HEAD, NORM_B, PROD_B, CONV_B, SCAN_B, OTHER_B };

} // namespace

struct cm_cuda_train {
    cmamba_config cfg;
    cm_cuda_dtype dt;
    size_t es, n_params, n_tensors;
    std::vector<LayerOff> lay;
    size_t emb, norm_f, head, head_first, head_count; /* head range: norm_f (+ lm_head) */
    float *params, *grads, *adam_m, *adam_v;
    __nv_bfloat16 *w16; /* bf16 copy of params (mixed precision) */
    uint8_t *decay;
    double *norm_part, *norm2, *norm2_host;
    cudaStream_t stream;
    Blas blas;
    cm_cuda_grads_ready hook;
    void *hook_ctx;
    char name[300];
    /* activations for up to cap_n tokens, cap_ck checkpoint rows, cap_ws
     * bytes of scan workspace, cap_cpart floats of conv partial sums */
    size_t cap_n, cap_ck, cap_ws, cap_cpart;
    int ce_rows;
    void *act_mem;
    std::vector<Acts> acts;
    float *res_f, *dxf, *dres, *dnormed, *dxs2, *dBf, *dCf, *dA, *rs, *part, *conv_part, *logits,
        *dxg, *loss;
    void *xf, *dres_e, *dy, *dxs, *ddtr, *dz, *dx, *dxdbc, *xg, *dlogits, *scan_ws;
    int32_t *ids, *idx, *tg, *hit, *uid, *start, *pos;
    /* host staging */
    std::vector<int32_t> h_idx, h_tg, h_hit, h_uid, h_start, h_pos, h_count;
    std::vector<float> h_loss;
    /* profiling: events of this run and the phase each closes; totals */
    bool prof;
    std::vector<cudaEvent_t> ev;
    std::vector<int> ev_phase;
    size_t n_ev;
    double phase_ms[CM_CUDA_PHASES];
};

namespace {

/* the model's weight at flat offset off, in the products' dtype */
const void *W(const cm_cuda_train *m, size_t off) {
    return m->dt == CM_CUDA_BF16 ? (const void *)(m->w16 + off) : (const void *)(m->params + off);
}
const float *P(const cm_cuda_train *m, size_t off) { return off == NONE ? nullptr : m->params + off; }
float *G(const cm_cuda_train *m, size_t off) { return off == NONE ? nullptr : m->grads + off; }

void tick(cm_cuda_train *m, Phase ph) {
    if (!m->prof) return;
    if (m->n_ev == m->ev.size()) {
        cudaEvent_t e;
        if (cudaEventCreate(&e) != cudaSuccess) return;
        m->ev.push_back(e);
        m->ev_phase.push_back(0);
    }
    m->ev_phase[m->n_ev] = ph;
    cudaEventRecord(m->ev[m->n_ev++], m->stream);
}

/* after the stream's work is done: the run's events into the totals */
void tally(cm_cuda_train *m) {
    for (size_t i = 1; i < m->n_ev; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, m->ev[i - 1], m->ev[i]) == cudaSuccess)
            m->phase_ms[m->ev_phase[i]] += ms;
    }
    m->n_ev = 0;
}

cm_cuda_scan_params scan_params(const cm_cuda_train *m, const Acts &a, const LayerOff &o, int B,
                                int T) {
    const cmamba_config *c = &m->cfg;
    cm_cuda_scan_params p = {};
    p.batch = B, p.L = T, p.D = c->d_inner, p.N = c->d_state, p.dtype = m->dt;
    p.u = a.xs, p.delta = a.dtr, p.A = a.A, p.B = a.Bm, p.C = a.Cm, p.D_skip = P(m, o.D);
    p.z = a.z, p.delta_bias = P(m, o.dt_b), p.delta_softplus = 1, p.out = a.y, p.x = a.ckpt;
    return p;
}

/* Every activation buffer, for n = B·T tokens, ck checkpoint rows, ws bytes
 * of scan workspace and cpart floats of conv partial sums, from cv. */
void carve(cm_cuda_train *m, Carver &cv, size_t n, size_t ck, size_t ws, size_t cpart) {
    const cmamba_config *c = &m->cfg;
    const size_t d = c->d_model, di = c->d_inner, R = c->dt_rank, N = c->d_state;
    const size_t P = R + 2 * N, es = m->es, V = c->vocab_size, rows = m->ce_rows;
    for (Acts &a : m->acts) {
        cv.take(a.res, n * d * 4);
        cv.take(a.normed, n * d * es);
        cv.take(a.x, n * di * es);
        cv.take(a.z, n * di * es);
        cv.take(a.xs, n * di * es);
        cv.take(a.dlow, n * R * es);
        cv.take(a.Bm, n * N * es);
        cv.take(a.Cm, n * N * es);
        cv.take(a.dtr, n * di * es);
        cv.take(a.y, n * di * es);
        cv.take(a.ckpt, ck * N * di * 4);
        cv.take(a.A, di * N * 4);
    }
    cv.take(m->res_f, n * d * 4);
    cv.take(m->xf, n * d * es);
    cv.take(m->dxf, n * d * 4);
    cv.take(m->dres, n * d * 4);
    cv.take(m->dres_e, m->dt == CM_CUDA_BF16 ? n * d * es : 0);
    cv.take(m->dnormed, n * d * 4);
    cv.take(m->dy, n * di * es);
    cv.take(m->dxs, n * di * es);
    cv.take(m->dxs2, n * di * 4);
    cv.take(m->ddtr, n * di * es);
    cv.take(m->dz, n * di * es);
    cv.take(m->dx, n * di * es);
    cv.take(m->dxdbc, n * P * es);
    cv.take(m->dBf, n * N * 4);
    cv.take(m->dCf, n * N * 4);
    cv.take(m->dA, di * N * 4);
    cv.take(m->scan_ws, ws);
    cv.take(m->rs, n * 4);
    cv.take(m->part, colsum_floats((int)std::max(d, di)) * 4);
    cv.take(m->conv_part, cpart * 4);
    cv.take(m->xg, rows * d * es);
    cv.take(m->logits, rows * V * 4);
    cv.take(m->dlogits, m->dt == CM_CUDA_BF16 ? rows * V * es : 0);
    cv.take(m->dxg, rows * d * 4);
    cv.take(m->loss, n * 4);
    cv.take(m->hit, n * 4);
    cv.take(m->ids, n * 4);
    cv.take(m->idx, n * 4);
    cv.take(m->tg, n * 4);
    cv.take(m->uid, n * 4);
    cv.take(m->start, (n + 1) * 4);
    cv.take(m->pos, n * 4);
}

/* Grows the activations to hold B sequences of T tokens. */
int reserve(cm_cuda_train *m, int B, int T, cmamba_error *err) {
    const cmamba_config *c = &m->cfg;
    const size_t n = (size_t)B * T, ck = (size_t)B * ((T + CM_CUDA_SCAN_CKPT - 1) / CM_CUDA_SCAN_CKPT);
    cm_cuda_scan_params p = {};
    p.batch = B, p.L = T, p.D = c->d_inner, p.N = c->d_state, p.dtype = m->dt;
    const size_t ws = cm_cuda_scan_bwd_workspace(&p);
    const size_t cpart = conv_bwd_part_floats(B, c->d_inner, T, c->d_conv);
    if (n <= m->cap_n && ck <= m->cap_ck && ws <= m->cap_ws && cpart <= m->cap_cpart) return 0;
    const size_t cn = std::max(n, m->cap_n), cck = std::max(ck, m->cap_ck);
    const size_t cws = std::max(ws, m->cap_ws), ccp = std::max(cpart, m->cap_cpart);
    CU(cudaStreamSynchronize(m->stream));
    cudaFree(m->act_mem);
    m->act_mem = nullptr, m->cap_n = m->cap_ck = m->cap_ws = m->cap_cpart = 0;
    m->ce_rows = (int)std::max<size_t>(64, std::min<size_t>(4096, LOGITS_BYTES / (4 * (size_t)c->vocab_size)));
    m->ce_rows = (int)std::min<size_t>(m->ce_rows, cn);
    Carver cv = {nullptr, 0};
    carve(m, cv, cn, cck, cws, ccp);
    if (cudaMalloc(&m->act_mem, cv.used) != cudaSuccess) {
        cudaGetLastError();
        return cm_fail(err, "CUDA: %.1f GiB of activations for %d sequences of %d tokens do not "
                            "fit on the GPU", cv.used / 1073741824.0, B, T);
    }
    cv = {(char *)m->act_mem, 0};
    carve(m, cv, cn, cck, cws, ccp);
    m->cap_n = cn, m->cap_ck = cck, m->cap_ws = cws, m->cap_cpart = ccp;
    return 0;
}

/* ---- forward --------------------------------------------------------------- */

/* Layer l (SPEC.md steps 1-10), then the stream after it: a copy of its
 * input plus out_proj (the bias is added by the next norm, as in inference). */
int layer_forward(cm_cuda_train *m, int l, int B, int T, cmamba_error *err) {
    const cmamba_config *c = &m->cfg;
    const LayerOff &o = m->lay[l];
    Acts &a = m->acts[l];
    const int n = B * T, d = c->d_model, di = c->d_inner, R = c->dt_rank, N = c->d_state;
    cudaStream_t st = m->stream;
    float *res_next = l + 1 < c->n_layer ? m->acts[l + 1].res : m->res_f;
    CU(add_norm(a.res, l ? P(m, m->lay[l - 1].out_b) : nullptr, P(m, o.norm), c->eps, a.normed,
                m->dt, n, d, st));
    tick(m, NORM);
    /* 1. */
    BLAS(fwd_rows_to_cols(m->blas, a.x, a.normed, W(m, o.in_w), B, T, d, di));
    BLAS(fwd_rows_to_cols(m->blas, a.z, a.normed, W(m, o.in_w + (size_t)di * d), B, T, d, di));
    if (o.in_b != NONE) {
        CU(bias_cols_fwd(a.x, P(m, o.in_b), m->dt, B, di, T, st));
        CU(bias_cols_fwd(a.z, P(m, o.in_b) + di, m->dt, B, di, T, st));
    }
    tick(m, PROD);
    /* 2-3. */
    CU(conv_silu_fwd(a.x, P(m, o.conv_w), P(m, o.conv_b), a.xs, m->dt, B, di, T, c->d_conv, st));
    tick(m, CONV);
    /* 4-6. [δ | B | C] = x·W_xᵀ, one product per part; δ·W_dtᵀ */
    const long sT = T;
    BLAS(fwd_cols(m->blas, a.dlow, R * sT, a.xs, di * sT, W(m, o.x_w), B, T, di, R));
    BLAS(fwd_cols(m->blas, a.Bm, N * sT, a.xs, di * sT, W(m, o.x_w + (size_t)R * di), B, T, di, N));
    BLAS(fwd_cols(m->blas, a.Cm, N * sT, a.xs, di * sT, W(m, o.x_w + (size_t)(R + N) * di), B, T,
                  di, N));
    BLAS(fwd_cols(m->blas, a.dtr, di * sT, a.dlow, R * sT, W(m, o.dt_w), B, T, R, di));
    CU(a_from_log(a.A, P(m, o.A_log), di * N, st));
    tick(m, PROD);
    /* 7-9. */
    const cm_cuda_scan_params p = scan_params(m, a, o, B, T);
    CU((cudaError_t)cm_cuda_scan_fwd(&p, st));
    tick(m, SCAN);
    /* 10. and the residual */
    CU(cudaMemcpyAsync(res_next, a.res, (size_t)n * d * 4, cudaMemcpyDeviceToDevice, st));
    BLAS(fwd_cols_to_rows_acc(m->blas, res_next, a.y, W(m, o.out_w), B, T, di, d));
    tick(m, PROD);
    return 0;
}

/* ---- backward -------------------------------------------------------------- */

void notify(cm_cuda_train *m, size_t first, size_t count) {
    if (m->hook && count) m->hook(m->hook_ctx, m->grads, first, count, (void *)m->stream);
}

/* Layer l in reverse. On entry dres holds dL/d(stream after the layer)
 * (dres_e its copy in E), which is also out_proj's output gradient; the
 * norm's backward adds the mixer branch, so on exit it holds dL/d(stream
 * entering the layer). */
int layer_backward(cm_cuda_train *m, int l, int B, int T, cmamba_error *err) {
    const cmamba_config *c = &m->cfg;
    const LayerOff &o = m->lay[l];
    const Acts &a = m->acts[l];
    const int n = B * T, d = c->d_model, di = c->d_inner, R = c->dt_rank, N = c->d_state;
    const int Pn = R + 2 * N;
    const long sT = T;
    cudaStream_t st = m->stream;
    const void *dres_e = m->dt == CM_CUDA_BF16 ? m->dres_e : m->dres;
    /* 10. */
    if (o.out_b != NONE) CU(colsum_acc(G(m, o.out_b), m->dres, n, d, m->part, st));
    BLAS(bwd_cols_to_rows(m->blas, m->dy, G(m, o.out_w), dres_e, a.y, W(m, o.out_w), B, T, di, d));
    tick(m, PROD_B);
    /* 7-9. */
    CU(cudaMemsetAsync(m->dA, 0, (size_t)di * N * 4, st));
    CU(cudaMemsetAsync(m->dBf, 0, (size_t)n * N * 4, st));
    CU(cudaMemsetAsync(m->dCf, 0, (size_t)n * N * 4, st));
    tick(m, OTHER_B);
    const cm_cuda_scan_params p = scan_params(m, a, o, B, T);
    cm_cuda_scan_grads g = {};
    g.dout = m->dy, g.du = m->dxs, g.ddelta = m->ddtr, g.dz = m->dz;
    g.dA = m->dA, g.dB = m->dBf, g.dC = m->dCf, g.dD = G(m, o.D), g.ddelta_bias = G(m, o.dt_b);
    g.work = m->scan_ws;
    CU((cudaError_t)cm_cuda_scan_bwd(&p, &g, st));
    tick(m, SCAN_B);
    CU(a_log_bwd(G(m, o.A_log), m->dA, a.A, di * N, st));
    tick(m, OTHER_B);
    /* 6-4. dδ into rows [0, R) of d[δ | B | C], dB and dC beside it, then one
     * x_proj product back to x */
    BLAS(bwd_cols(m->blas, m->dxdbc, Pn * sT, false, G(m, o.dt_w), m->ddtr, di * sT, a.dlow,
                  W(m, o.dt_w), B, T, R, di));
    tick(m, PROD_B);
    CU(pack_rows(m->dxdbc, Pn, R, m->dBf, m->dt, B, N, T, st));
    CU(pack_rows(m->dxdbc, Pn, R + N, m->dCf, m->dt, B, N, T, st));
    tick(m, OTHER_B);
    BLAS(bwd_cols(m->blas, m->dxs2, di * sT, true, G(m, o.x_w), m->dxdbc, Pn * sT, a.xs,
                  W(m, o.x_w), B, T, di, Pn));
    tick(m, PROD_B);
    /* 3-2. */
    CU(conv_silu_bwd(m->dxs, m->dxs2, a.x, P(m, o.conv_w), P(m, o.conv_b), m->dx, G(m, o.conv_w),
                     G(m, o.conv_b), m->conv_part, m->dt, B, di, T, c->d_conv, st));
    tick(m, CONV_B);
    /* 1. */
    if (o.in_b != NONE) {
        CU(bias_cols_bwd(G(m, o.in_b), m->dx, m->dt, B, di, T, st));
        CU(bias_cols_bwd(G(m, o.in_b) + di, m->dz, m->dt, B, di, T, st));
    }
    BLAS(bwd_rows_to_cols(m->blas, m->dnormed, false, G(m, o.in_w), m->dx, a.normed, W(m, o.in_w),
                          B, T, d, di));
    BLAS(bwd_rows_to_cols(m->blas, m->dnormed, true, G(m, o.in_w + (size_t)di * d), m->dz, a.normed,
                          W(m, o.in_w + (size_t)di * d), B, T, d, di));
    tick(m, PROD_B);
    CU(rmsnorm_bwd(m->dres, m->dt == CM_CUDA_BF16 ? m->dres_e : nullptr, G(m, o.norm), m->dnormed,
                   a.res, P(m, o.norm), c->eps, m->dt, n, d, m->rs, m->part, st));
    tick(m, NORM_B);
    return 0;
}

/* Host side of a batch: the ids checked and sent, the scored rows listed,
 * and (for the backward) the positions grouped by id for the embedding. */
int stage_batch(cm_cuda_train *m, const int32_t *inputs, const int32_t *targets, size_t n,
                bool backward, int *n_unique, cmamba_error *err) {
    const int V = m->cfg.vocab_size;
    m->h_idx.clear(), m->h_tg.clear();
    for (size_t i = 0; i < n; i++) {
        if (inputs[i] < 0 || inputs[i] >= V)
            return cm_fail(err, "input id %ld at position %zu is outside the vocabulary [0, %d)",
                           (long)inputs[i], i, V);
        if (targets[i] >= V)
            return cm_fail(err, "target id %ld at position %zu is outside the vocabulary [0, %d)",
                           (long)targets[i], i, V);
        if (targets[i] >= 0) m->h_idx.push_back((int32_t)i), m->h_tg.push_back(targets[i]);
    }
    cudaStream_t st = m->stream;
    CU(cudaMemcpyAsync(m->ids, inputs, n * 4, cudaMemcpyHostToDevice, st));
    if (!m->h_idx.empty()) {
        CU(cudaMemcpyAsync(m->idx, m->h_idx.data(), m->h_idx.size() * 4, cudaMemcpyHostToDevice, st));
        CU(cudaMemcpyAsync(m->tg, m->h_tg.data(), m->h_tg.size() * 4, cudaMemcpyHostToDevice, st));
    }
    *n_unique = 0;
    if (!backward) return 0;
    /* counting sort of the positions by id, each id's in sequence order */
    m->h_count.assign((size_t)V + 1, 0);
    for (size_t i = 0; i < n; i++) m->h_count[inputs[i] + 1]++;
    m->h_uid.clear(), m->h_start.clear();
    for (int v = 0; v < V; v++) {
        if (m->h_count[v + 1]) m->h_uid.push_back(v), m->h_start.push_back(m->h_count[v]);
        m->h_count[v + 1] += m->h_count[v];
    }
    m->h_start.push_back((int32_t)n);
    m->h_pos.resize(n);
    for (size_t i = 0; i < n; i++) m->h_pos[m->h_count[inputs[i]]++] = (int32_t)i;
    *n_unique = (int)m->h_uid.size();
    CU(cudaMemcpyAsync(m->uid, m->h_uid.data(), m->h_uid.size() * 4, cudaMemcpyHostToDevice, st));
    CU(cudaMemcpyAsync(m->start, m->h_start.data(), m->h_start.size() * 4, cudaMemcpyHostToDevice, st));
    CU(cudaMemcpyAsync(m->pos, m->h_pos.data(), n * 4, cudaMemcpyHostToDevice, st));
    /* the host vectors must outlive the asynchronous copies */
    CU(cudaStreamSynchronize(st));
    return 0;
}

/* LM head and cross-entropy over the scored rows, ce_rows at a time; with
 * grad_weight > 0 the gradients go at once into dxf and the head's weights. */
int head_loss(cm_cuda_train *m, float grad_weight, cmamba_error *err) {
    const cmamba_config *c = &m->cfg;
    const int d = c->d_model, V = c->vocab_size;
    const long scored = (long)m->h_idx.size();
    const float scale = grad_weight > 0 ? grad_weight / (float)scored : 0.f;
    void *dl = m->dt == CM_CUDA_BF16 ? m->dlogits : (void *)m->logits;
    cudaStream_t st = m->stream;
    for (long r0 = 0; r0 < scored; r0 += m->ce_rows) {
        const int rows = (int)std::min<long>(m->ce_rows, scored - r0);
        CU(gather_rows(m->xg, m->xf, m->idx + r0, m->dt, rows, d, st));
        BLAS(head_fwd(m->blas, m->logits, m->xg, W(m, m->head), rows, d, V));
        CU(xent(m->logits, dl, m->tg + r0, scale, m->loss + r0, m->hit + r0, m->dt, rows, V, st));
        if (!(scale > 0)) continue;
        BLAS(head_bwd(m->blas, m->dxg, G(m, m->head), dl, m->xg, W(m, m->head), rows, d, V));
        CU(scatter_add_rows(m->dxf, m->dxg, m->idx + r0, rows, d, st));
    }
    return 0;
}

} // namespace

/* ---- the C interface ------------------------------------------------------- */

extern "C" void cm_cuda_train_free(cm_cuda_train *m) {
    if (!m) return;
    if (m->stream) cudaStreamSynchronize(m->stream);
    for (cudaEvent_t e : m->ev) cudaEventDestroy(e);
    if (m->blas.lt) cublasLtDestroy(m->blas.lt);
    if (m->blas.h) cublasDestroy(m->blas.h);
    if (m->stream) cudaStreamDestroy(m->stream);
    cudaFree(m->blas.ws);
    cudaFree(m->params);
    cudaFree(m->act_mem);
    cudaFreeHost(m->norm2_host);
    delete m;
}

extern "C" int cm_cuda_train_new(const cmamba_config *cfg, const float *params, int bf16,
                                 cm_cuda_train **out, cmamba_error *err) {
    *out = nullptr;
    if (cfg->ssm != CMAMBA_SSM_S6)
        return cm_fail(err, "--device cuda trains S6 models only (--ssm s4d trains on the CPU)");
    if (cfg->d_state > 64)
        return cm_fail(err, "--device cuda needs d_state <= 64 (the model has %d)", cfg->d_state);
    if (cfg->d_conv > CONV_MAX_K)
        return cm_fail(err, "--device cuda needs d_conv <= %d (the model has %d)", CONV_MAX_K,
                       cfg->d_conv);
    if (cfg->d_inner > 65535)
        return cm_fail(err, "--device cuda needs d_inner <= 65535 (the model has %d)", cfg->d_inner);
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        cudaGetLastError();
        return cm_fail(err, "--device cuda: no CUDA device");
    }
    cm_cuda_train *m = new (std::nothrow) cm_cuda_train();
    if (!m) return cm_fail(err, "out of memory");
    m->cfg = *cfg;
    m->dt = bf16 ? CM_CUDA_BF16 : CM_CUDA_F32;
    m->es = bf16 ? 2 : 4;
    int rc = -1;
    {
        /* offsets of the CPU layout */
        std::vector<cm_param_desc> desc(cm_params_describe(cfg, nullptr));
        cm_params_describe(cfg, desc.data());
        m->n_tensors = desc.size();
        m->lay.assign(cfg->n_layer, LayerOff{NONE, NONE, NONE, NONE, NONE, NONE, NONE, NONE, NONE,
                                             NONE, NONE, NONE, NONE, 0});
        m->head = m->emb = m->norm_f = NONE;
        std::vector<uint8_t> decay;
        size_t off = 0;
        for (const cm_param_desc &p : desc) {
            decay.insert(decay.end(), p.numel, (uint8_t)cm_param_decays(p.kind));
            if (p.layer >= 0) {
                LayerOff &o = m->lay[p.layer];
                if (o.first == NONE) o.first = off;
                o.count = off + p.numel - o.first;
                size_t *f[] = {&o.norm, &o.in_w, &o.in_b, &o.conv_w, &o.conv_b, &o.x_w, &o.dt_w,
                               &o.dt_b, &o.A_log, &o.D, &o.out_w, &o.out_b};
                const cm_param_kind k[] = {CM_P_NORM, CM_P_IN_PROJ_W, CM_P_IN_PROJ_B, CM_P_CONV_W,
                                           CM_P_CONV_B, CM_P_X_PROJ_W, CM_P_DT_PROJ_W,
                                           CM_P_DT_PROJ_B, CM_P_A_LOG, CM_P_D, CM_P_OUT_PROJ_W,
                                           CM_P_OUT_PROJ_B};
                for (int i = 0; i < 12; i++)
                    if (p.kind == k[i]) *f[i] = off;
            } else if (p.kind == CM_P_EMBEDDING) {
                m->emb = off;
            } else if (p.kind == CM_P_NORM_F) {
                m->norm_f = off;
            } else if (p.kind == CM_P_LM_HEAD) {
                m->head = off;
            }
            off += p.numel;
        }
        m->n_params = off;
        if (m->head == NONE) m->head = m->emb; /* tied */
        m->head_first = m->norm_f;
        m->head_count = off - m->norm_f; /* norm_f, and lm_head when untied: the buffer's tail */
        m->acts.resize(cfg->n_layer);

        const size_t np = m->n_params;
        Carver cv = {nullptr, 0};
        for (int pass = 0; pass < 2; pass++) {
            cv.take(m->params, np * 4);
            cv.take(m->grads, np * 4);
            cv.take(m->adam_m, np * 4);
            cv.take(m->adam_v, np * 4);
            cv.take(m->w16, bf16 ? np * 2 : 0);
            cv.take(m->decay, np);
            cv.take(m->norm_part, ADAMW_PARTS * 8);
            cv.take(m->norm2, 8);
            if (pass) break;
            void *mem = nullptr;
            if (cudaMalloc(&mem, cv.used) != cudaSuccess) {
                cudaGetLastError();
                cm_fail(err, "CUDA: %.2f GiB of parameters, gradients and moments do not fit on "
                             "the GPU", cv.used / 1073741824.0);
                goto fail;
            }
            cv = {(char *)mem, 0};
        }
        m->blas.dt = m->dt, m->blas.ws_bytes = BLAS_WORKSPACE;
        cudaDeviceProp prop;
        if (cuda_fail(cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking), "stream", err) ||
            blas_fail(cublasCreate(&m->blas.h), "cublasCreate", err) ||
            blas_fail(cublasLtCreate(&m->blas.lt), "cublasLtCreate", err) ||
            cuda_fail(cudaMalloc(&m->blas.ws, BLAS_WORKSPACE), "cuBLAS workspace", err) ||
            blas_fail(cublasSetStream(m->blas.h, m->stream), "cublasSetStream", err) ||
            blas_fail(cublasSetWorkspace(m->blas.h, m->blas.ws, BLAS_WORKSPACE), "cublasSetWorkspace", err) ||
            cuda_fail(cudaMallocHost(&m->norm2_host, 8), "cudaMallocHost", err) ||
            cuda_fail(cudaMemcpy(m->decay, decay.data(), np, cudaMemcpyHostToDevice), "decay mask", err) ||
            cuda_fail(cudaMemset(m->grads, 0, np * 4), "cudaMemset", err) ||
            cuda_fail(cudaMemset(m->adam_m, 0, np * 4), "cudaMemset", err) ||
            cuda_fail(cudaMemset(m->adam_v, 0, np * 4), "cudaMemset", err) ||
            cuda_fail(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties", err))
            goto fail;
        m->blas.stream = m->stream;
        snprintf(m->name, sizeof m->name, "%s, %s", prop.name, bf16 ? "mixed bf16" : "fp32");
        if (cm_cuda_train_copy(m, CM_CUDA_PARAMS, 1, (float *)params, err)) goto fail;
        rc = 0;
    }
fail:
    if (rc) cm_cuda_train_free(m);
    else *out = m;
    return rc;
}

extern "C" const char *cm_cuda_train_describe(const cm_cuda_train *m) { return m->name; }
extern "C" size_t cm_cuda_train_n_params(const cm_cuda_train *m) { return m->n_params; }

extern "C" int cm_cuda_train_copy(cm_cuda_train *m, cm_cuda_buffer which, int to_device,
                                  float *host, cmamba_error *err) {
    float *dev = which == CM_CUDA_PARAMS ? m->params : which == CM_CUDA_GRADS ? m->grads
                 : which == CM_CUDA_ADAM_M ? m->adam_m : m->adam_v;
    const size_t bytes = m->n_params * 4;
    CU(cudaStreamSynchronize(m->stream));
    CU(cudaMemcpy(to_device ? (void *)dev : (void *)host, to_device ? (void *)host : (void *)dev,
                  bytes, to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost));
    if (to_device && which == CM_CUDA_PARAMS && m->dt == CM_CUDA_BF16) {
        CU(to_bf16(m->w16, m->params, m->n_params, m->stream));
        CU(cudaStreamSynchronize(m->stream));
    }
    return 0;
}

extern "C" int cm_cuda_train_zero_grad(cm_cuda_train *m, cmamba_error *err) {
    CU(cudaMemsetAsync(m->grads, 0, m->n_params * 4, m->stream));
    CU(cudaStreamSynchronize(m->stream));
    return 0;
}

extern "C" void cm_cuda_train_set_hook(cm_cuda_train *m, cm_cuda_grads_ready hook, void *ctx) {
    m->hook = hook, m->hook_ctx = ctx;
}

extern "C" int cm_cuda_train_run(cm_cuda_train *m, const int32_t *inputs, const int32_t *targets,
                                 int B, int T, float grad_weight, cm_train_stats *st,
                                 cmamba_error *err) {
    const cmamba_config *c = &m->cfg;
    if (B < 1 || T < 1 || (long)B * T > 1L << 30)
        return cm_fail(err, "batch of %d sequences of %d tokens: sizes out of range", B, T);
    const size_t n = (size_t)B * T, d = c->d_model;
    const bool backward = grad_weight > 0;
    int n_unique = 0;
    if (reserve(m, B, T, err) || stage_batch(m, inputs, targets, n, backward, &n_unique, err))
        return -1;
    cudaStream_t s = m->stream;
    tick(m, EMBED);
    CU(embed(m->ids, m->params + m->emb, CM_CUDA_F32, m->acts[0].res, (int)n, (int)d, s));
    tick(m, EMBED);
    for (int l = 0; l < c->n_layer; l++)
        if (layer_forward(m, l, B, T, err)) return -1;
    CU(add_norm(m->res_f, P(m, m->lay[c->n_layer - 1].out_b), P(m, m->norm_f), c->eps, m->xf,
                m->dt, (int)n, (int)d, s));
    const long scored = (long)m->h_idx.size();
    if (backward) CU(cudaMemsetAsync(m->dxf, 0, n * d * 4, s));
    if (head_loss(m, grad_weight, err)) return -1;
    tick(m, HEAD);
    if (backward && scored > 0) {
        CU(cudaMemsetAsync(m->dres, 0, n * d * 4, s));
        CU(rmsnorm_bwd(m->dres, m->dt == CM_CUDA_BF16 ? m->dres_e : nullptr, G(m, m->norm_f),
                       m->dxf, m->res_f, P(m, m->norm_f), c->eps, m->dt, (int)n, (int)d, m->rs,
                       m->part, s));
        tick(m, NORM_B);
        notify(m, m->head_first, m->head_count);
        for (int l = c->n_layer - 1; l >= 0; l--) {
            if (layer_backward(m, l, B, T, err)) return -1;
            notify(m, m->lay[l].first, m->lay[l].count);
        }
        CU(embed_bwd(G(m, m->emb), m->dres, m->uid, m->start, m->pos, n_unique, (int)d, s));
        tick(m, EMBED);
        notify(m, m->emb, (size_t)c->vocab_size * d);
    }
    m->h_loss.resize(scored);
    m->h_hit.resize(scored);
    if (scored) {
        CU(cudaMemcpyAsync(m->h_loss.data(), m->loss, scored * 4, cudaMemcpyDeviceToHost, s));
        CU(cudaMemcpyAsync(m->h_hit.data(), m->hit, scored * 4, cudaMemcpyDeviceToHost, s));
    }
    CU(cudaStreamSynchronize(s));
    tally(m);
    double sum = 0;
    long correct = 0;
    for (long i = 0; i < scored; i++) sum += m->h_loss[i], correct += m->h_hit[i];
    st->loss = scored ? (float)(sum / scored) : 0.0f;
    st->loss_sum = sum;
    st->scored = scored;
    st->correct = correct;
    return 0;
}

extern "C" void cm_cuda_train_profile(cm_cuda_train *m, int on) {
    m->prof = on != 0;
    m->n_ev = 0;
    memset(m->phase_ms, 0, sizeof m->phase_ms);
}

extern "C" const char *cm_cuda_train_phase(const cm_cuda_train *m, int i, double *ms) {
    *ms = m->phase_ms[i];
    return PHASE_NAMES[i];
}

extern "C" int cm_cuda_train_adamw(cm_cuda_train *m, const cm_adamw_params *p, long step,
                                   float *grad_norm, cmamba_error *err) {
    const float lr = cm_lr_at(p, step);
    const float bc1 = 1.0f - powf(p->beta1, (float)(step + 1));
    const float bc2 = 1.0f - powf(p->beta2, (float)(step + 1));
    cudaStream_t s = m->stream;
    CU(grad_norm2(m->grads, m->n_params, m->norm_part, m->norm2, s));
    CU(adamw_update(m->params, m->dt == CM_CUDA_BF16 ? m->w16 : nullptr, m->grads, m->adam_m,
                    m->adam_v, m->decay, m->n_params, m->norm2, p->clip, lr, p->beta1, p->beta2,
                    p->eps, p->weight_decay, bc1, bc2, s));
    CU(cudaMemcpyAsync(m->norm2_host, m->norm2, 8, cudaMemcpyDeviceToHost, s));
    CU(cudaStreamSynchronize(s));
    *grad_norm = (float)sqrt(*m->norm2_host);
    return 0;
}
