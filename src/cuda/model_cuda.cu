/* GPU inference (model_cuda.h): the weights on the device, the recurrent
 * states in slots, the prompt path through cuBLAS (gemm.cuh) and the
 * selective-scan kernel, and the decoding step as a CUDA graph per batch
 * size, its products through cuBLASLt algorithms timed for that size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>

#include "cuda/check.cuh"
#include "cuda/gemm.cuh"
#include "cuda/model_cuda.h"
#include "cuda/model_kernels.cuh"
extern "C" { /* the library's internal headers are C */
#include "common.h"
#include "model/model.h"
}

using namespace cm;

namespace {

constexpr int CHUNK = 2048;     /* prompt tokens per pass through the network */
constexpr int HEAD_ROWS = 256;  /* logits rows per head product when all are wanted */
constexpr size_t BLAS_WORKSPACE = (size_t)32 << 20; /* fixed, so graph capture allocates nothing */
constexpr int MODES = 4;        /* step outputs: bit 0 logits, bit 1 argmax */
enum { IN_PROJ, X_PROJ, OUT_PROJ, HEAD, PRODUCTS }; /* the decoding step's products */

/* One layer's weights on the device: the projections in the model's dtype,
 * the rest fp32. Optional tensors are NULL. */
struct Layer {
    const float *norm, *in_b, *conv_w, *conv_b, *dt_b, *A, *D, *out_b;
    const void *in_w, *x_w, *dt_w, *out_w;
};

} // namespace

struct cm_cuda_model {
    cmamba_config cfg;
    cm_cuda_dtype dt;
    size_t es; /* bytes per element of dt */
    Layer *layers;
    const void *embedding, *lm_head;
    const float *norm_f;
    void *weights;
    double step_bytes;
    int cluster; /* blocks per sequence in the decoding step */
    cudaStream_t stream;
    Blas blas;
    char name[300];
    /* prompt scratch for `cap` tokens, and the ids of the current call */
    int cap;
    void *scratch;
    float *h, *logits;
    void *normed, *xz, *xc, *xdbc, *delta, *y;
    int32_t *ids;
    size_t ids_cap;
};

struct cm_cuda_state {
    cm_cuda_model *m;
    int slots;
    float *conv, *ssm; /* (n_layer, slots, d_inner, K−1), (n_layer, slots, d_inner, N) */
    uint64_t *tokens;
    /* decoding scratch for up to `slots` rows; host sides pinned */
    void *scratch;
    float *h, *logits, *dbc;
    void *normed, *xz, *y, *xc;
    int32_t *ids, *next, *ids_host, *next_host;
    float *logits_host;
    cudaGraphExec_t *graphs; /* [(slots + 1) · MODES], made on first use */
    TunedLinear *tuned;      /* [(slots + 1) · PRODUCTS], with the first graph of a size */
};

namespace {

size_t conv_floats(const cmamba_config *c) { return (size_t)c->d_inner * (c->d_conv - 1); }
size_t ssm_floats(const cmamba_config *c) { return (size_t)c->d_inner * c->d_state; }
float *conv_at(const cm_cuda_state *s, int layer, int slot) {
    return s->conv + ((size_t)layer * s->slots + slot) * conv_floats(&s->m->cfg);
}
float *ssm_at(const cm_cuda_state *s, int layer, int slot) {
    return s->ssm + ((size_t)layer * s->slots + slot) * ssm_floats(&s->m->cfg);
}

/* ---- weights --------------------------------------------------------- */

/* Copies n floats of host weights to the carver's next slot, as fp32 or,
 * for the projections (act) of a bf16 model, rounded to bf16. */
template <typename P>
int put(cm_cuda_model *m, Carver *cv, const float *src, size_t n, bool act, P *&dst,
        cmamba_error *err) {
    dst = nullptr;
    if (!src) return 0;
    const bool half = act && m->dt == CM_CUDA_BF16;
    void *d = cv->take(n * (half ? 2 : 4));
    if (!d) return 0;
    dst = (P *)d;
    if (!half) {
        CU(cudaMemcpy(d, src, n * 4, cudaMemcpyHostToDevice));
        return 0;
    }
    uint16_t *tmp = (uint16_t *)cm_malloc(n * 2, err);
    if (!tmp) return -1;
    for (size_t i = 0; i < n; i++) tmp[i] = cm_f32_to_bf16(src[i]);
    const cudaError_t e = cudaMemcpy(d, tmp, n * 2, cudaMemcpyHostToDevice);
    free(tmp);
    return cuda_fail(e, "cudaMemcpy of weights", err);
}

/* Every weight through put(): sizing when cv->base is NULL, else copying. */
int place_weights(cm_cuda_model *m, const cmamba_model *cpu, Carver *cv, cmamba_error *err) {
    const cmamba_config *c = &m->cfg;
    const size_t d = c->d_model, di = c->d_inner, R = c->dt_rank, N = c->d_state, K = c->d_conv;
    const size_t V = c->vocab_size, P = R + 2 * N;
    /* the projections are copied from fp32 rows */
    if (cmamba_model_dtype(cpu) != CMAMBA_DTYPE_F32)
        return cm_fail(err, "the CUDA backend takes f32 weights (load with --dtype f32)");
#define PUT(src, n, act, dst) \
    do { if (put(m, cv, (src), (n), (act), (dst), err)) return -1; } while (0)
    for (int l = 0; l < c->n_layer; l++) {
        const cm_layer *w = &cpu->layers[l];
        Layer *g = &m->layers[l];
        PUT(w->norm, d, false, g->norm);
        PUT((const float *)w->in_proj_w.q, 2 * di * d, true, g->in_w);
        PUT(w->in_proj_b, 2 * di, false, g->in_b);
        PUT(w->conv_w, di * K, false, g->conv_w);
        PUT(w->conv_b, di, false, g->conv_b);
        PUT((const float *)w->x_proj_w.q, P * di, true, g->x_w);
        PUT((const float *)w->dt_proj_w.q, di * R, true, g->dt_w);
        PUT(w->dt_proj_b, di, false, g->dt_b);
        PUT(w->A, di * N, false, g->A);
        PUT(w->D, di, false, g->D);
        PUT((const float *)w->out_proj_w.q, d * di, true, g->out_w);
        PUT(w->out_proj_b, d, false, g->out_b);
    }
    PUT(cpu->norm_f, d, false, m->norm_f);
    PUT((const float *)cpu->embedding.q, V * d, true, m->embedding);
    if (c->tie_embeddings) m->lm_head = m->embedding;
    else PUT((const float *)cpu->lm_head.q, V * d, true, m->lm_head);
#undef PUT
    return 0;
}

/* ---- prompt scratch ----------------------------------------------------- */

/* The prompt path's buffers for cap tokens, carved from one allocation. */
void carve_prompt(cm_cuda_model *m, Carver *cv, int cap) {
    const cmamba_config *c = &m->cfg;
    const size_t d = c->d_model, di = c->d_inner, P = c->dt_rank + 2 * c->d_state, es = m->es;
    m->h = (float *)cv->take(cap * d * 4);
    m->normed = cv->take(cap * d * es);
    m->xz = cv->take(2 * di * cap * es);
    m->xc = cv->take(di * cap * es);
    m->xdbc = cv->take(P * cap * es);
    m->delta = cv->take(di * cap * es);
    m->y = cv->take(di * cap * es);
    m->logits = (float *)cv->take((size_t)std::min(cap, HEAD_ROWS) * c->vocab_size * 4);
}

int ensure_prompt(cm_cuda_model *m, size_t n, cmamba_error *err) {
    const int want = (int)std::min<size_t>(CHUNK, (n + 255) / 256 * 256);
    if (m->cap < want) {
        cudaFree(m->scratch);
        m->scratch = nullptr, m->cap = 0;
        Carver cv = {nullptr, 0};
        carve_prompt(m, &cv, want);
        CU(cudaMalloc(&m->scratch, cv.used));
        cv = {(char *)m->scratch, 0};
        carve_prompt(m, &cv, want);
        m->cap = want;
    }
    if (m->ids_cap < n) {
        cudaFree(m->ids);
        m->ids = nullptr, m->ids_cap = 0;
        CU(cudaMalloc(&m->ids, n * sizeof(int32_t)));
        m->ids_cap = n;
    }
    return 0;
}

/* h (rows of it) → final norm → logits (rows, V) on the device */
int head(cm_cuda_model *m, float *h, int rows, cmamba_error *err) {
    const cmamba_config *c = &m->cfg;
    const Layer *last = &m->layers[c->n_layer - 1];
    CU(add_norm(h, last->out_b, m->norm_f, c->eps, m->normed, m->dt, rows, c->d_model, m->stream));
    BLAS(linear_rows(m->blas, m->logits, true, false, m->normed, m->lm_head, rows, c->d_model,
                     c->vocab_size));
    return 0;
}

/* One chunk of L ≤ cap tokens (ids already on the device) through every
 * layer, continuing slot's states; h holds the final residual stream. */
int chunk_forward(cm_cuda_model *m, cm_cuda_state *s, int slot, const int32_t *ids, int L,
                  cmamba_error *err) {
    const cmamba_config *c = &m->cfg;
    const int d = c->d_model, di = c->d_inner, R = c->dt_rank, N = c->d_state, P = R + 2 * N;
    const size_t es = m->es;
    cudaStream_t st = m->stream;
    CU(embed(ids, m->embedding, m->dt, m->h, L, d, st));
    for (int l = 0; l < c->n_layer; l++) {
        const Layer *w = &m->layers[l];
        CU(add_norm(m->h, l ? m->layers[l - 1].out_b : nullptr, w->norm, c->eps, m->normed, m->dt,
                    L, d, st));
        BLAS(linear_to_cols(m->blas, m->xz, m->normed, w->in_w, L, d, 2 * di));
        if (w->in_b) CU(add_row_bias(m->xz, w->in_b, m->dt, 2 * di, L, st));
        CU(conv_chunk(m->xz, conv_at(s, l, slot), w->conv_w, w->conv_b, m->xc, m->dt, di, L,
                      c->d_conv, st));
        BLAS(linear_cols(m->blas, m->xdbc, m->xc, w->x_w, L, di, P));
        BLAS(linear_cols(m->blas, m->delta, m->xdbc, w->dt_w, L, R, di)); /* δ: rows 0 … R−1 */
        cm_cuda_scan_params p = {};
        p.batch = 1, p.L = L, p.D = di, p.N = N, p.dtype = m->dt;
        p.u = m->xc, p.delta = m->delta, p.A = w->A;
        p.B = (const char *)m->xdbc + (size_t)R * L * es;
        p.C = (const char *)m->xdbc + (size_t)(R + N) * L * es;
        p.D_skip = w->D, p.z = (const char *)m->xz + (size_t)di * L * es;
        p.delta_bias = w->dt_b, p.delta_softplus = 1, p.out = m->y;
        p.h0 = p.h_last = ssm_at(s, l, slot);
        CU((cudaError_t)cm_cuda_scan_fwd(&p, st));
        BLAS(linear_from_cols_acc(m->blas, m->h, m->y, w->out_w, L, di, d));
    }
    return 0;
}

int check_ids(const cmamba_config *c, const int32_t *ids, size_t n, cmamba_error *err) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return cm_fail(err, "token id %ld at position %zu is outside the vocabulary [0, %d)",
                           (long)ids[i], i, c->vocab_size);
    return 0;
}

} // namespace

/* ---- model ------------------------------------------------------------ */

extern "C" int cm_cuda_available(cmamba_error *err) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        return cm_fail(err, "no CUDA device (%s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    }
    return 0;
}

extern "C" void cm_cuda_model_free(cm_cuda_model *m) {
    if (!m) return;
    if (m->blas.lt) cublasLtDestroy(m->blas.lt);
    if (m->blas.h) cublasDestroy(m->blas.h);
    if (m->stream) cudaStreamDestroy(m->stream);
    cudaFree(m->blas.ws);
    cudaFree(m->weights);
    cudaFree(m->scratch);
    cudaFree(m->ids);
    free(m->layers);
    free(m);
}

extern "C" int cm_cuda_model_new(const cmamba_model *cpu, int bf16, cm_cuda_model **out,
                                 cmamba_error *err) {
    *out = nullptr;
    const cmamba_config *c = &cpu->cfg;
    if (c->ssm != CMAMBA_SSM_S6)
        return cm_fail(err, "the CUDA backend runs S6 models only, not S4D");
    if (c->d_state > 64)
        return cm_fail(err, "the CUDA backend needs d_state <= 64 (the model has %d)", c->d_state);
    if (2 * c->d_inner > 65535)
        return cm_fail(err, "the CUDA backend needs d_inner <= 32767 (the model has %d)", c->d_inner);
    if (cm_cuda_available(err)) return -1;
    cm_cuda_model *m = (cm_cuda_model *)cm_calloc(1, sizeof *m, err);
    if (!m) return -1;
    m->cfg = *c;
    m->dt = bf16 ? CM_CUDA_BF16 : CM_CUDA_F32;
    m->es = bf16 ? 2 : 4;
    int rc = -1;
    Carver cv = {nullptr, 0};
    cudaDeviceProp prop;
    if (!(m->layers = (Layer *)cm_calloc((size_t)c->n_layer, sizeof *m->layers, err))) goto fail;
    m->blas.dt = m->dt, m->blas.ws_bytes = BLAS_WORKSPACE;
    if (cuda_fail(cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking), "stream", err) ||
        blas_fail(cublasCreate(&m->blas.h), "cublasCreate", err) ||
        blas_fail(cublasLtCreate(&m->blas.lt), "cublasLtCreate", err) ||
        cuda_fail(cudaMalloc(&m->blas.ws, BLAS_WORKSPACE), "cuBLAS workspace", err) ||
        blas_fail(cublasSetStream(m->blas.h, m->stream), "cublasSetStream", err) ||
        blas_fail(cublasSetWorkspace(m->blas.h, m->blas.ws, BLAS_WORKSPACE), "cublasSetWorkspace", err))
        goto fail;
    m->blas.stream = m->stream;
    if (place_weights(m, cpu, &cv, err)) goto fail;
    if (cuda_fail(cudaMalloc(&m->weights, cv.used), "cudaMalloc of the weights", err)) goto fail;
    cv = {(char *)m->weights, 0};
    if (place_weights(m, cpu, &cv, err)) goto fail;
    if ((m->cluster = step_setup(c->d_inner, c->dt_rank, c->d_state)) < 1) {
        cm_fail(err, "the CUDA decoding step does not fit this device for d_inner %d", c->d_inner);
        goto fail;
    }
    {
        const double d = c->d_model, di = c->d_inner, P = c->dt_rank + 2 * c->d_state;
        const double proj = d * 2 * di + P * di + di * c->dt_rank + di * d;
        const double f32 = d /* norm */ + di * c->d_conv + di * 3 /* dt_b, D, conv_b */ +
                           di * c->d_state + (c->use_bias ? 2 * di + d : 0);
        m->step_bytes = c->n_layer * (proj * m->es + f32 * 4) + d * 4 +
                        (double)c->vocab_size * d * m->es;
    }
    if (cuda_fail(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties", err)) goto fail;
    snprintf(m->name, sizeof m->name, "%s, %s", prop.name, bf16 ? "bf16" : "fp32");
    rc = 0;
fail:
    if (rc) cm_cuda_model_free(m);
    else *out = m;
    return rc;
}

extern "C" const cmamba_config *cm_cuda_model_config(const cm_cuda_model *m) { return &m->cfg; }
extern "C" double cm_cuda_model_step_bytes(const cm_cuda_model *m) { return m->step_bytes; }
extern "C" const char *cm_cuda_model_describe(const cm_cuda_model *m) { return m->name; }

/* ---- states ----------------------------------------------------------- */

namespace {

void carve_state(cm_cuda_state *s, Carver *cv) {
    const cmamba_config *c = &s->m->cfg;
    const size_t n = s->slots, d = c->d_model, di = c->d_inner, es = s->m->es;
    s->conv = (float *)cv->take(c->n_layer * n * conv_floats(c) * 4 + 4);
    s->ssm = (float *)cv->take(c->n_layer * n * ssm_floats(c) * 4);
    s->h = (float *)cv->take(n * d * 4);
    s->normed = cv->take(n * d * es);
    s->xz = cv->take(n * 2 * di * es);
    s->y = cv->take(n * di * es);
    s->xc = cv->take(n * di * es);
    s->dbc = (float *)cv->take(n * (c->dt_rank + 2 * c->d_state) * 4);
    s->logits = (float *)cv->take(n * c->vocab_size * 4);
    s->ids = (int32_t *)cv->take(n * 4);
    s->next = (int32_t *)cv->take(n * 4);
}

} // namespace

extern "C" void cm_cuda_state_free(cm_cuda_state *s) {
    if (!s) return;
    for (int i = 0; s->graphs && i < (s->slots + 1) * MODES; i++)
        if (s->graphs[i]) cudaGraphExecDestroy(s->graphs[i]);
    for (int i = 0; s->tuned && i < (s->slots + 1) * PRODUCTS; i++) tuned_linear_free(s->tuned[i]);
    free(s->tuned);
    cudaFree(s->scratch);
    cudaFreeHost(s->ids_host);
    cudaFreeHost(s->next_host);
    cudaFreeHost(s->logits_host);
    free(s->graphs);
    free(s->tokens);
    free(s);
}

extern "C" int cm_cuda_state_new(cm_cuda_model *m, int slots, cm_cuda_state **out,
                                 cmamba_error *err) {
    *out = nullptr;
    if (slots < 1) return cm_fail(err, "CUDA state: needs at least one slot");
    cm_cuda_state *s = (cm_cuda_state *)cm_calloc(1, sizeof *s, err);
    if (!s) return -1;
    s->m = m, s->slots = slots;
    Carver cv = {nullptr, 0};
    carve_state(s, &cv);
    const size_t V = m->cfg.vocab_size;
    int rc = -1;
    if (!(s->tokens = (uint64_t *)cm_calloc(slots, sizeof *s->tokens, err)) ||
        !(s->graphs = (cudaGraphExec_t *)cm_calloc((size_t)(slots + 1) * MODES, sizeof *s->graphs, err)) ||
        !(s->tuned = (TunedLinear *)cm_calloc((size_t)(slots + 1) * PRODUCTS, sizeof *s->tuned, err)))
        goto fail;
    if (cuda_fail(cudaMalloc(&s->scratch, cv.used), "cudaMalloc of the states", err) ||
        cuda_fail(cudaMallocHost(&s->ids_host, slots * 4), "cudaMallocHost", err) ||
        cuda_fail(cudaMallocHost(&s->next_host, slots * 4), "cudaMallocHost", err) ||
        cuda_fail(cudaMallocHost(&s->logits_host, slots * V * 4), "cudaMallocHost", err))
        goto fail;
    cv = {(char *)s->scratch, 0};
    carve_state(s, &cv);
    rc = cm_cuda_state_reset(s, -1, err);
fail:
    if (rc) cm_cuda_state_free(s);
    else *out = s;
    return rc;
}

extern "C" int cm_cuda_state_reset(cm_cuda_state *s, int slot, cmamba_error *err) {
    const cmamba_config *c = &s->m->cfg;
    if (slot < -1 || slot >= s->slots) return cm_fail(err, "CUDA state: no slot %d", slot);
    for (int l = 0; l < c->n_layer; l++)
        for (int i = slot < 0 ? 0 : slot; i < (slot < 0 ? s->slots : slot + 1); i++) {
            CU(cudaMemsetAsync(conv_at(s, l, i), 0, conv_floats(c) * 4, s->m->stream));
            CU(cudaMemsetAsync(ssm_at(s, l, i), 0, ssm_floats(c) * 4, s->m->stream));
            s->tokens[i] = 0;
        }
    CU(cudaStreamSynchronize(s->m->stream));
    return 0;
}

extern "C" int cm_cuda_state_copy(cm_cuda_state *s, int dst, int src, cmamba_error *err) {
    const cmamba_config *c = &s->m->cfg;
    if (dst < 0 || dst >= s->slots || src < 0 || src >= s->slots)
        return cm_fail(err, "CUDA state: copy from slot %d to %d of %d", src, dst, s->slots);
    for (int l = 0; l < c->n_layer; l++) {
        CU(cudaMemcpyAsync(conv_at(s, l, dst), conv_at(s, l, src), conv_floats(c) * 4,
                           cudaMemcpyDeviceToDevice, s->m->stream));
        CU(cudaMemcpyAsync(ssm_at(s, l, dst), ssm_at(s, l, src), ssm_floats(c) * 4,
                           cudaMemcpyDeviceToDevice, s->m->stream));
    }
    s->tokens[dst] = s->tokens[src];
    CU(cudaStreamSynchronize(s->m->stream));
    return 0;
}

extern "C" uint64_t cm_cuda_state_tokens(const cm_cuda_state *s, int slot) {
    return s->tokens[slot];
}

/* Moves one slot to (to_host) or from a CPU state of the same shape. */
static int transfer(cm_cuda_state *s, int slot, cmamba_state *cpu, bool to_host,
                    cmamba_error *err) {
    const cmamba_config *c = &s->m->cfg;
    if (slot < 0 || slot >= s->slots) return cm_fail(err, "CUDA state: no slot %d", slot);
    if (!cm_state_shape_equal(&cpu->cfg, c))
        return cm_fail(err, "CUDA state: the CPU state belongs to a model of another shape");
    const cudaMemcpyKind k = to_host ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice;
    for (int l = 0; l < c->n_layer; l++) {
        float *gc = conv_at(s, l, slot), *gs = ssm_at(s, l, slot);
        float *hc = cm_state_conv(cpu, l), *hs = cm_state_ssm(cpu, l);
        CU(cudaMemcpy(to_host ? hc : gc, to_host ? gc : hc, conv_floats(c) * 4, k));
        CU(cudaMemcpy(to_host ? hs : gs, to_host ? gs : hs, ssm_floats(c) * 4, k));
    }
    if (to_host) cpu->n_tokens = s->tokens[slot];
    else s->tokens[slot] = cpu->n_tokens;
    return 0;
}

extern "C" int cm_cuda_state_get(const cm_cuda_state *s, int slot, cmamba_state *dst,
                                 cmamba_error *err) {
    return transfer((cm_cuda_state *)s, slot, dst, true, err);
}

extern "C" int cm_cuda_state_set(cm_cuda_state *s, int slot, const cmamba_state *src,
                                 cmamba_error *err) {
    return transfer(s, slot, (cmamba_state *)src, false, err);
}

/* ---- the prompt path ---------------------------------------------------- */

extern "C" int cm_cuda_forward(cm_cuda_model *m, cm_cuda_state *s, int slot, const int32_t *ids,
                               size_t n, float *logits, int all_logits, cmamba_error *err) {
    const cmamba_config *c = &m->cfg;
    const size_t V = c->vocab_size;
    if (n == 0) return cm_fail(err, "forward: empty sequence");
    if (s->m != m) return cm_fail(err, "forward: the state belongs to another model");
    if (slot < 0 || slot >= s->slots) return cm_fail(err, "forward: no slot %d", slot);
    if (check_ids(c, ids, n, err) || ensure_prompt(m, n, err)) return -1;
    CU(cudaMemcpyAsync(m->ids, ids, n * sizeof *ids, cudaMemcpyHostToDevice, m->stream));
    for (size_t t0 = 0; t0 < n; t0 += (size_t)m->cap) {
        const int L = (int)std::min<size_t>(m->cap, n - t0);
        if (chunk_forward(m, s, slot, m->ids + t0, L, err)) return -1;
        if (!logits) continue;
        if (all_logits) {
            for (int r0 = 0; r0 < L; r0 += HEAD_ROWS) {
                const int rows = std::min(HEAD_ROWS, L - r0);
                if (head(m, m->h + (size_t)r0 * c->d_model, rows, err)) return -1;
                CU(cudaMemcpyAsync(logits + (t0 + r0) * V, m->logits, rows * V * 4,
                                   cudaMemcpyDeviceToHost, m->stream));
                CU(cudaStreamSynchronize(m->stream)); /* before the next rows overwrite them */
            }
        } else if (t0 + L == n) {
            if (head(m, m->h + (size_t)(L - 1) * c->d_model, 1, err)) return -1;
            CU(cudaMemcpyAsync(logits, m->logits, V * 4, cudaMemcpyDeviceToHost, m->stream));
        }
    }
    CU(cudaStreamSynchronize(m->stream));
    s->tokens[slot] += n;
    return 0;
}

/* ---- the decoding step ---------------------------------------------------- */

namespace {

/* The work of one step of n sequences on the model's stream: ids from the
 * pinned host buffer in, the requested outputs to the pinned buffers. */
int enqueue_step(cm_cuda_model *m, cm_cuda_state *s, int n, int mode, cmamba_error *err) {
    const cmamba_config *c = &m->cfg;
    const int d = c->d_model, di = c->d_inner;
    cudaStream_t st = m->stream;
    const TunedLinear *tl = &s->tuned[n * PRODUCTS];
    CU(cudaMemcpyAsync(s->ids, s->ids_host, n * 4, cudaMemcpyHostToDevice, st));
    CU(embed(s->ids, m->embedding, m->dt, s->h, n, d, st));
    for (int l = 0; l < c->n_layer; l++) {
        const Layer *w = &m->layers[l];
        CU(add_norm(s->h, l ? m->layers[l - 1].out_b : nullptr, w->norm, c->eps, s->normed, m->dt,
                    n, d, st));
        BLAS(tuned_linear(tl[IN_PROJ], m->blas, s->xz, s->normed, w->in_w));
        StepArgs a;
        a.xz = s->xz, a.in_b = w->in_b, a.conv_state = conv_at(s, l, 0);
        a.conv_w = w->conv_w, a.conv_b = w->conv_b, a.x_proj_w = w->x_w, a.dt_proj_w = w->dt_w;
        a.dt_b = w->dt_b, a.A = w->A, a.D = w->D, a.ssm = ssm_at(s, l, 0), a.y = s->y;
        a.xc = s->xc, a.dbc = s->dbc;
        a.d_inner = di, a.K = c->d_conv, a.R = c->dt_rank, a.N = c->d_state;
        if (step_is_split(n, m->cluster)) {
            CU(mixer_step_conv(a, n, m->dt, st));
            BLAS(tuned_linear(tl[X_PROJ], m->blas, s->dbc, s->xc, w->x_w));
            CU(mixer_step_update(a, n, m->dt, st));
        } else {
            CU(mixer_step(a, m->cluster, n, m->dt, st));
        }
        BLAS(tuned_linear(tl[OUT_PROJ], m->blas, s->h, s->y, w->out_w));
    }
    const Layer *last = &m->layers[c->n_layer - 1];
    CU(add_norm(s->h, last->out_b, m->norm_f, c->eps, s->normed, m->dt, n, d, st));
    BLAS(tuned_linear(tl[HEAD], m->blas, s->logits, s->normed, m->lm_head));
    if (mode & 2) {
        CU(argmax_rows(s->logits, n, c->vocab_size, s->next, st));
        CU(cudaMemcpyAsync(s->next_host, s->next, n * 4, cudaMemcpyDeviceToHost, st));
    }
    if (mode & 1)
        CU(cudaMemcpyAsync(s->logits_host, s->logits, (size_t)n * c->vocab_size * 4,
                           cudaMemcpyDeviceToHost, st));
    return 0;
}

/* The products of a step of n sequences, tuned on the state's scratch. */
int tune_step(cm_cuda_model *m, cm_cuda_state *s, int n, cmamba_error *err) {
    const cmamba_config *c = &m->cfg;
    const int d = c->d_model, di = c->d_inner;
    TunedLinear *tl = &s->tuned[n * PRODUCTS];
    const Layer *w = &m->layers[0];
    BLAS(tuned_linear_init(tl[IN_PROJ], m->blas, s->xz, false, false, s->normed, w->in_w, n, d, 2 * di));
    if (step_is_split(n, m->cluster))
        BLAS(tuned_linear_init(tl[X_PROJ], m->blas, s->dbc, true, false, s->xc, w->x_w, n, di,
                               c->dt_rank + 2 * c->d_state));
    BLAS(tuned_linear_init(tl[OUT_PROJ], m->blas, s->h, true, true, s->y, w->out_w, n, di, d));
    BLAS(tuned_linear_init(tl[HEAD], m->blas, s->logits, true, false, s->normed, m->lm_head, n, d,
                           c->vocab_size));
    return 0;
}

/* The step for n sequences and these outputs as an instantiated graph. */
int capture_step(cm_cuda_model *m, cm_cuda_state *s, int n, int mode, cudaGraphExec_t *exec,
                 cmamba_error *err) {
    if (!s->tuned[n * PRODUCTS].ready && tune_step(m, s, n, err)) return -1;
    CU(cudaStreamBeginCapture(m->stream, cudaStreamCaptureModeThreadLocal));
    const int rc = enqueue_step(m, s, n, mode, err);
    cudaGraph_t g = nullptr;
    const cudaError_t e = cudaStreamEndCapture(m->stream, &g);
    if (rc || cuda_fail(e, "graph capture of the decoding step", err)) {
        if (g) cudaGraphDestroy(g);
        return -1;
    }
    const cudaError_t ei = cudaGraphInstantiate(exec, g, 0);
    cudaGraphDestroy(g);
    return cuda_fail(ei, "cudaGraphInstantiate of the decoding step", err);
}

} // namespace

extern "C" int cm_cuda_step_batch(cm_cuda_model *m, cm_cuda_state *s, const int32_t *ids, int n,
                                  float *logits, int32_t *argmax, cmamba_error *err) {
    const cmamba_config *c = &m->cfg;
    if (s->m != m) return cm_fail(err, "step: the state belongs to another model");
    if (n < 1 || n > s->slots)
        return cm_fail(err, "step: %d sequences, the state has %d slots", n, s->slots);
    if (check_ids(c, ids, (size_t)n, err)) return -1;
    const int mode = (logits ? 1 : 0) | (argmax ? 2 : 0);
    cudaGraphExec_t *g = &s->graphs[n * MODES + mode];
    if (!*g && capture_step(m, s, n, mode, g, err)) return -1;
    memcpy(s->ids_host, ids, n * sizeof *ids);
    CU(cudaGraphLaunch(*g, m->stream));
    CU(cudaStreamSynchronize(m->stream));
    if (logits) memcpy(logits, s->logits_host, (size_t)n * c->vocab_size * 4);
    if (argmax) memcpy(argmax, s->next_host, n * sizeof *argmax);
    for (int i = 0; i < n; i++) s->tokens[i]++;
    return 0;
}

/* ---- the bandwidth roofline -------------------------------------------- */

extern "C" int cm_cuda_copy_bandwidth(size_t bytes, double *bytes_per_s, cmamba_error *err) {
    enum { REPS = 9 };
    void *a = nullptr, *b = nullptr;
    cudaEvent_t ev[REPS + 1] = {};
    float ms[REPS];
    int rc = -1;
    if (cuda_fail(cudaMalloc(&a, bytes), "cudaMalloc of the bandwidth buffer", err) ||
        cuda_fail(cudaMalloc(&b, bytes), "cudaMalloc of the bandwidth buffer", err) ||
        cuda_fail(cudaMemset(a, 1, bytes), "cudaMemset", err) ||
        cuda_fail(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy", err))
        goto out;
    for (int i = 0; i <= REPS; i++)
        if (cuda_fail(cudaEventCreate(&ev[i]), "cudaEventCreate", err)) goto out;
    cudaEventRecord(ev[0]);
    for (int i = 0; i < REPS; i++) {
        cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice);
        cudaEventRecord(ev[i + 1]);
    }
    if (cuda_fail(cudaEventSynchronize(ev[REPS]), "timing the copies", err)) goto out;
    for (int i = 0; i < REPS; i++) cudaEventElapsedTime(&ms[i], ev[i], ev[i + 1]);
    std::sort(ms, ms + REPS);
    *bytes_per_s = 2.0 * bytes / (ms[REPS / 2] * 1e-3);
    rc = 0;
out:
    for (int i = 0; i <= REPS; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    cudaFree(a);
    cudaFree(b);
    return rc;
}
