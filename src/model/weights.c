/* Binds checkpoint tensors to the model's weights, checking every name,
 * shape and dtype against the config. Aligned fp32 tensors are used in
 * place (the mapping is the working set); f16/bf16/f64 are converted.
 * Tensors the config does not ask for (a stray bias, a tied model's
 * lm_head) are ignored, as transformers does. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "model/model.h"
#include "model/params.h"

static float *own(cmamba_model *m, size_t n_floats, cmamba_error *err) {
    void **grown = realloc(m->owned, sizeof *grown * (m->n_owned + 1));
    if (!grown) { cm_fail(err, "out of memory"); return NULL; }
    m->owned = grown;
    float *p = cm_malloc(sizeof(float) * n_floats, err);
    if (p) m->owned[m->n_owned++] = p;
    return p;
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* The tensor described by p, as fp32; NULL on error. */
static const float *bind(cmamba_model *m, const char *dir, const cm_param_desc *p,
                         cmamba_error *err) {
    const cm_tensor *t = cm_tensors_find(m->tensors, p->name);
    if (!t) {
        cm_fail(err, "%s: missing tensor '%s'", dir, p->name);
        return NULL;
    }
    int same = t->ndim == p->ndim;
    for (int i = 0; same && i < p->ndim; i++) same = t->shape[i] == p->shape[i];
    if (!same) {
        char want[128], got[128];
        format_shape(want, sizeof want, p->ndim, p->shape);
        format_shape(got, sizeof got, t->ndim, t->shape);
        cm_fail(err, "%s: tensor '%s' has shape %s, expected %s", t->file, p->name, got, want);
        return NULL;
    }
    const size_t n = p->numel;
    if (t->dtype == CM_DT_F32 && (uintptr_t)t->data % sizeof(float) == 0) return t->data;

    const unsigned char *src = t->data;
    float *out;
    switch (t->dtype) {
    case CM_DT_F32:
        if ((out = own(m, n, err))) memcpy(out, src, n * sizeof(float));
        return out;
    case CM_DT_F16:
    case CM_DT_BF16:
        if (!(out = own(m, n, err))) return NULL;
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
            out[i] = t->dtype == CM_DT_F16 ? cm_f16_to_f32(h) : cm_bf16_to_f32(h);
        }
        return out;
    case CM_DT_F64:
        if (!(out = own(m, n, err))) return NULL;
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            out[i] = (float)d;
        }
        return out;
    default:
        cm_fail(err, "%s: tensor '%s' has dtype %s; weights must be F32, F16, BF16 or F64",
                t->file, p->name, cm_dtype_name(t->dtype));
        return NULL;
    }
}

int cm_model_bind_weights(cmamba_model *m, const char *dir, cmamba_error *err) {
    const cmamba_config *c = &m->cfg;
    const size_t n = cm_params_describe(c, NULL);
    cm_param_desc *params = cm_calloc(n, sizeof *params, err);
    m->layers = cm_calloc((size_t)c->n_layer, sizeof *m->layers, err);
    if (!params || !m->layers) { free(params); return -1; }
    cm_params_describe(c, params);

    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const cm_param_desc *p = &params[i];
        const float *v = bind(m, dir, p, err);
        if (!v) { rc = -1; break; }
        cm_layer *w = p->layer >= 0 ? &m->layers[p->layer] : NULL;
        switch (p->kind) {
        case CM_P_EMBEDDING: m->embedding = v; break;
        case CM_P_NORM_F: m->norm_f = v; break;
        case CM_P_LM_HEAD: m->lm_head = v; break;
        case CM_P_NORM: w->norm = v; break;
        case CM_P_IN_PROJ_W: w->in_proj_w = v; break;
        case CM_P_IN_PROJ_B: w->in_proj_b = v; break;
        case CM_P_CONV_W: w->conv_w = v; break;
        case CM_P_CONV_B: w->conv_b = v; break;
        case CM_P_X_PROJ_W: w->x_proj_w = v; break;
        case CM_P_DT_PROJ_W: w->dt_proj_w = v; break;
        case CM_P_DT_PROJ_B: w->dt_proj_b = v; break;
        case CM_P_D: w->D = v; break;
        case CM_P_OUT_PROJ_W: w->out_proj_w = v; break;
        case CM_P_OUT_PROJ_B: w->out_proj_b = v; break;
        case CM_P_LOG_DT: w->log_dt = v; break;
        case CM_P_S4D_B: w->s4d_B = v; break;
        case CM_P_S4D_C: w->s4d_C = v; break;
        case CM_P_A_LOG:
            w->A_log = v;
            if (!(w->A = own(m, p->numel, err))) { rc = -1; break; }
            for (size_t k = 0; k < p->numel; k++) w->A[k] = -expf(v[k]);
            break;
        }
    }
    if (c->tie_embeddings) m->lm_head = m->embedding;
    free(params);
    return rc;
}
