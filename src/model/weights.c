/* Binds checkpoint tensors to the model's weights, checking every name,
 * shape and dtype against the config. Aligned fp32 tensors are used in
 * place (the mapping is the working set); f16/bf16/f64 are converted. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "model/model.h"

typedef struct {
    cmamba_model *m;
    const char *dir;
    cmamba_error *err;
    int failed;
} binder;

static float *own(binder *b, size_t n_floats) {
    cmamba_model *m = b->m;
    void **grown = realloc(m->owned, sizeof *grown * (m->n_owned + 1));
    if (!grown) { cm_fail(b->err, "%s: out of memory", b->dir); return NULL; }
    m->owned = grown;
    float *p = cm_malloc(sizeof(float) * n_floats, b->err);
    if (p) m->owned[m->n_owned++] = p;
    return p;
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* The tensor `name` as fp32 with exactly the given shape; NULL on error
 * (then b->failed is set). Tensors the config does not ask for (a stray
 * bias, a tied model's lm_head) are ignored, as transformers does. */
static const float *tensor(binder *b, const char *name, int ndim, ...) {
    if (b->failed) return NULL;
    int64_t shape[CM_MAX_DIMS];
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim; i++) shape[i] = va_arg(ap, int64_t);
    va_end(ap);

    const cm_tensor *t = cm_tensors_find(b->m->tensors, name);
    if (!t) {
        b->failed = 1;
        cm_fail(b->err, "%s: missing tensor '%s'", b->dir, name);
        return NULL;
    }
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[128], got[128];
        format_shape(want, sizeof want, ndim, shape);
        format_shape(got, sizeof got, t->ndim, t->shape);
        b->failed = 1;
        cm_fail(b->err, "%s: tensor '%s' has shape %s, expected %s", t->file, name, got, want);
        return NULL;
    }
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    if (t->dtype == CM_DT_F32 && (uintptr_t)t->data % sizeof(float) == 0) return t->data;

    float *out = NULL;
    switch (t->dtype) {
    case CM_DT_F32:
        if ((out = own(b, n))) memcpy(out, t->data, n * sizeof(float));
        break;
    case CM_DT_F16:
    case CM_DT_BF16: {
        if (!(out = own(b, n))) break;
        const unsigned char *src = t->data;
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
            out[i] = t->dtype == CM_DT_F16 ? cm_f16_to_f32(h) : cm_bf16_to_f32(h);
        }
        break;
    }
    case CM_DT_F64: {
        if (!(out = own(b, n))) break;
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, (const char *)t->data + 8 * i, 8);
            out[i] = (float)d;
        }
        break;
    }
    default:
        cm_fail(b->err, "%s: tensor '%s' has dtype %s; weights must be F32, F16, BF16 or F64",
                t->file, name, cm_dtype_name(t->dtype));
    }
    if (!out) b->failed = 1;
    return out;
}

int cm_model_bind_weights(cmamba_model *m, const char *dir, cmamba_error *err) {
    const cmamba_config *c = &m->cfg;
    const int64_t D = c->d_model, V = c->vocab_size, Di = c->d_inner, N = c->d_state,
                  K = c->d_conv, R = c->dt_rank;
    binder b = {.m = m, .dir = dir, .err = err};
    char name[256];

    m->layers = cm_calloc((size_t)c->n_layer, sizeof *m->layers, err);
    if (!m->layers) return -1;
    m->embedding = tensor(&b, c->layout == CMAMBA_LAYOUT_ORIGINAL ? "backbone.embedding.weight"
                                                                  : "backbone.embeddings.weight",
                          2, V, D);
    m->norm_f = tensor(&b, "backbone.norm_f.weight", 1, D);
    m->lm_head = c->tie_embeddings ? m->embedding : tensor(&b, "lm_head.weight", 2, V, D);

    for (int l = 0; l < c->n_layer && !b.failed; l++) {
        cm_layer *w = &m->layers[l];
#define LAYER_TENSOR(field, suffix, ...)                                       \
    snprintf(name, sizeof name, "backbone.layers.%d.%s", l, suffix);                  \
    w->field = tensor(&b, name, __VA_ARGS__)
        LAYER_TENSOR(norm, "norm.weight", 1, D);
        LAYER_TENSOR(in_proj_w, "mixer.in_proj.weight", 2, 2 * Di, D);
        if (c->use_bias) { LAYER_TENSOR(in_proj_b, "mixer.in_proj.bias", 1, 2 * Di); }
        LAYER_TENSOR(conv_w, "mixer.conv1d.weight", 3, Di, (int64_t)1, K);
        if (c->use_conv_bias) { LAYER_TENSOR(conv_b, "mixer.conv1d.bias", 1, Di); }
        LAYER_TENSOR(x_proj_w, "mixer.x_proj.weight", 2, R + 2 * N, Di);
        LAYER_TENSOR(dt_proj_w, "mixer.dt_proj.weight", 2, Di, R);
        LAYER_TENSOR(dt_proj_b, "mixer.dt_proj.bias", 1, Di);
        LAYER_TENSOR(A_log, "mixer.A_log", 2, Di, N);
        LAYER_TENSOR(D, "mixer.D", 1, Di);
        LAYER_TENSOR(out_proj_w, "mixer.out_proj.weight", 2, D, Di);
        if (c->use_bias) { LAYER_TENSOR(out_proj_b, "mixer.out_proj.bias", 1, D); }
#undef LAYER_TENSOR
        if (b.failed) break;
        if (!(w->A = own(&b, (size_t)(Di * N)))) return -1;
        for (int64_t i = 0; i < Di * N; i++) w->A[i] = -expf(w->A_log[i]);
    }
    return b.failed ? -1 : 0;
}
