/* Binds checkpoint tensors to the model's weights, checking every name,
 * shape and dtype against the config. Every tensor moves out of the
 * checkpoint's mapping (fp32 as stored, f16/bf16/f64 converted; the
 * projections' matrices into huge pages), the mapping's pages dropped as
 * it goes, so that the resident size is about that of the weights.
 * Tensors the config does not ask for (a stray bias, a tied model's
 * lm_head) are ignored, as transformers does.
 *
 * The projections become matrices of the requested format: used as stored
 * when the checkpoint stores them so (f32, bf16, or the q8/q4 quants and
 * scales `cmamba quantize` writes: docs/formats.md), else encoded row by
 * row from their fp32 values; either way in huge pages (own_matrix). */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "model/model.h"
#include "model/params.h"

/* A buffer the model frees with itself, aligned to a cache line (the GEMV
 * kernels' vector loads then never straddle two), large ones in huge pages. */
static void *own(cmamba_model *m, size_t bytes, cmamba_error *err) {
    void **grown = realloc(m->owned, sizeof *grown * (m->n_owned + 1));
    if (!grown) { cm_fail(err, "out of memory"); return NULL; }
    m->owned = grown;
    void *p = cm_alloc_stream(bytes);
    if (!p) { cm_fail(err, "out of memory"); return NULL; }
    m->owned[m->n_owned++] = p;
    return p;
}

/* A weight matrix's buffer: packed with the others into chunks of PACK
 * bytes (huge pages, with no rounding of each matrix to 2 MiB), a matrix
 * of more than PACK/4 in one of its own. */
enum { PACK = 32 << 20 };
static void *own_matrix(cmamba_model *m, size_t bytes, cmamba_error *err) {
    bytes = (bytes + 63) / 64 * 64;
    if (bytes > PACK / 4) return own(m, bytes, err);
    if (!m->pack || m->pack_used + bytes > PACK) {
        if (!(m->pack = own(m, PACK, err))) return NULL;
        m->pack_used = 0;
    }
    void *p = m->pack + m->pack_used;
    m->pack_used += bytes;
    return p;
}

/* A matrix used in place from the checkpoint's mapping (4 KiB pages, over
 * which decoding streamed 15-25% slower) moves into huge pages, and the
 * mapping's pages it covered are dropped, so that the resident size stays
 * about that of the weights. It moves 8 MiB at a time, each piece's pages
 * dropped before the next is read: copied whole, the largest matrix (the
 * 130m shape's fp32 embedding, 154 MB) was resident twice at its copy. */
static int to_huge_pages(cmamba_model *m, cm_matrix *w, cmamba_error *err) {
    enum { PIECE = 8 << 20 };
    const size_t bytes = (size_t)w->rows * cm_matrix_row_bytes(w->type, w->cols);
    char *copy = own_matrix(m, bytes, err);
    if (!copy) return -1;
    for (size_t done = 0; done < bytes; done += PIECE) {
        const size_t n = bytes - done < PIECE ? bytes - done : PIECE;
        memcpy(copy + done, (const char *)w->q + done, n);
        cm_tensors_drop_pages(m->tensors, (const char *)w->q + done, n);
    }
    w->q = copy;
    return 0;
}

/* t has the shape (ndim, shape) or an error naming what it has instead */
static int check_shape(const cm_tensor *t, int ndim, const int64_t *shape, cmamba_error *err) {
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (same) return 0;
    char want[128], got[128];
    cm_shape_format(want, sizeof want, ndim, shape);
    cm_shape_format(got, sizeof got, t->ndim, t->shape);
    return cm_fail(err, "%s: tensor '%s' has shape %s, expected %s", t->file, t->name, got, want);
}

static const cm_tensor *find(const cmamba_model *m, const char *dir, const char *name,
                             cmamba_error *err) {
    const cm_tensor *t = cm_tensors_find(m->tensors, name);
    if (!t) cm_fail(err, "%s: missing tensor '%s'", dir, name);
    return t;
}

static int is_float(cm_dtype dt) {
    return dt == CM_DT_F32 || dt == CM_DT_F16 || dt == CM_DT_BF16 || dt == CM_DT_F64;
}

static int float_dtype(const cm_tensor *t, cmamba_error *err) {
    if (is_float(t->dtype)) return 0;
    return cm_fail(err, "%s: tensor '%s' has dtype %s; weights must be F32, F16, BF16 or F64",
                   t->file, t->name, cm_dtype_name(t->dtype));
}

/* out[0..n) = elements [first, first+n) of t (a float dtype) as fp32 */
static void to_f32(float *out, const cm_tensor *t, size_t first, size_t n) {
    const unsigned char *src = (const unsigned char *)t->data + first * cm_dtype_size(t->dtype);
    switch (t->dtype) {
    case CM_DT_F32: memcpy(out, src, n * sizeof(float)); break;
    case CM_DT_F16:
    case CM_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
            out[i] = t->dtype == CM_DT_F16 ? cm_f16_to_f32(h) : cm_bf16_to_f32(h);
        }
        break;
    default:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            out[i] = (float)d;
        }
    }
}

/* The tensor described by p, as fp32; NULL on error. */
static const float *bind(cmamba_model *m, const char *dir, const cm_param_desc *p,
                         cmamba_error *err) {
    const cm_tensor *t = find(m, dir, p->name, err);
    if (!t || check_shape(t, p->ndim, p->shape, err) || float_dtype(t, err)) return NULL;
    /* copied even where usable in place: read from the mapping at every
     * step, each of these small vectors kept a 2 MiB folio of the page
     * cache resident (66 MB of the 130m shape's fp32 checkpoint) */
    float *out = own(m, sizeof(float) * p->numel, err);
    if (out) to_f32(out, t, 0, p->numel);
    cm_tensors_drop_pages(m->tensors, t->data, t->nbytes);
    return out;
}

static cm_wtype wtype_of(cmamba_dtype d) {
    return d == CMAMBA_DTYPE_BF16 ? CM_WT_BF16 : d == CMAMBA_DTYPE_Q8 ? CM_WT_Q8
           : d == CMAMBA_DTYPE_Q4 ? CM_WT_Q4 : CM_WT_F32;
}

/* The stored q8 (I8 quants) or q4 (U8) matrix t of a rows × cols weight,
 * with its '<name>.scale' tensor, checked in full: shapes, dtypes, every
 * scale finite (padding and quant values need no check: any byte is a
 * valid quant). The scales are copied out of the mapping. */
static int bind_stored(cmamba_model *m, const char *dir, const cm_tensor *t, int rows, int cols,
                       cm_matrix *out, cmamba_error *err) {
    const cm_wtype type = t->dtype == CM_DT_I8 ? CM_WT_Q8 : CM_WT_Q4;
    const int nsc = cm_matrix_row_scales(type, cols);
    const int64_t qshape[2] = {rows, (int64_t)cm_matrix_row_bytes(type, cols)},
                  sshape[2] = {rows, nsc};
    char name[160];
    snprintf(name, sizeof name, "%s.scale", t->name);
    if (check_shape(t, 2, qshape, err)) return -1;
    const cm_tensor *s = find(m, dir, name, err);
    if (!s || check_shape(s, 2, sshape, err)) return -1;
    if (s->dtype != CM_DT_F16)
        return cm_fail(err, "%s: tensor '%s' has dtype %s; scales must be F16", s->file, name,
                       cm_dtype_name(s->dtype));
    uint16_t *scale = own(m, s->nbytes, err); /* out of the mapping, as bind()'s vectors */
    if (!scale) return -1;
    memcpy(scale, s->data, s->nbytes);
    cm_tensors_drop_pages(m->tensors, s->data, s->nbytes);
    for (size_t i = 0; i < (size_t)rows * nsc; i++)
        if ((scale[i] & 0x7c00) == 0x7c00)
            return cm_fail(err, "%s: tensor '%s' has a non-finite scale at [%zu, %zu]", s->file,
                           name, i / nsc, i % nsc);
    *out = (cm_matrix){.type = type, .rows = rows, .cols = cols, .q = t->data, .scale = scale};
    return 0;
}

/* The 2-D weight p as a matrix of format `dtype`. */
static int bind_matrix(cmamba_model *m, const char *dir, const cm_param_desc *p,
                       cmamba_dtype dtype, cm_matrix *out, cmamba_error *err) {
    const cm_tensor *t = find(m, dir, p->name, err);
    if (!t) return -1;
    const int rows = (int)p->shape[0], cols = (int)p->shape[1];
    cm_matrix stored = {0};
    if (t->dtype == CM_DT_I8 || t->dtype == CM_DT_U8) {
        if (bind_stored(m, dir, t, rows, cols, &stored, err)) return -1;
    } else if (check_shape(t, p->ndim, p->shape, err) || float_dtype(t, err)) {
        return -1;
    }
    const cm_wtype type = dtype != CMAMBA_DTYPE_AUTO ? wtype_of(dtype)
                          : stored.q                  ? stored.type
                                                      : CM_WT_F32;
    if (stored.q && stored.type == type) {
        *out = stored;
        return to_huge_pages(m, out, err);
    }
    *out = (cm_matrix){.type = type, .rows = rows, .cols = cols};
    const int aligned = (uintptr_t)t->data % cm_dtype_size(t->dtype) == 0;
    if (aligned && ((t->dtype == CM_DT_F32 && type == CM_WT_F32) ||
                    (t->dtype == CM_DT_BF16 && type == CM_WT_BF16))) {
        out->q = t->data;
        return to_huge_pages(m, out, err);
    }
    /* encoded from fp32 rows, each thread through its own row buffer */
    const size_t row_bytes = cm_matrix_row_bytes(type, cols);
    const int nsc = cm_matrix_row_scales(type, cols), threads = omp_get_max_threads();
    unsigned char *q = own_matrix(m, (size_t)rows * row_bytes, err);
    uint16_t *scale = nsc ? own_matrix(m, sizeof *scale * rows * nsc, err) : NULL;
    float *buf = cm_malloc(sizeof(float) * cols * threads, err);
    if (!q || (nsc && !scale) || !buf) {
        free(buf);
        return -1;
    }
#pragma omp parallel for schedule(static) num_threads(threads) if ((long)rows * cols > 100000)
    for (int r = 0; r < rows; r++) {
        float *row = buf + (size_t)cols * omp_get_thread_num();
        if (stored.q) cm_matrix_row(row, &stored, r);
        else to_f32(row, t, (size_t)r * cols, (size_t)cols);
        cm_matrix_encode_row(type, cols, row, q + (size_t)r * row_bytes,
                             scale ? scale + (size_t)r * nsc : NULL);
    }
    free(buf);
    cm_tensors_drop_pages(m->tensors, t->data, t->nbytes);
    out->q = q;
    out->scale = scale;
    return 0;
}

/* Where the model keeps the weight p: a matrix, or else fp32 values. */
static cm_matrix *matrix_slot(cmamba_model *m, const cm_param_desc *p) {
    cm_layer *w = p->layer >= 0 ? &m->layers[p->layer] : NULL;
    switch (p->kind) {
    case CM_P_EMBEDDING: return &m->embedding;
    case CM_P_LM_HEAD: return &m->lm_head;
    case CM_P_IN_PROJ_W: return &w->in_proj_w;
    case CM_P_X_PROJ_W: return &w->x_proj_w;
    case CM_P_DT_PROJ_W: return &w->dt_proj_w;
    case CM_P_OUT_PROJ_W: return &w->out_proj_w;
    default: return NULL;
    }
}

static const float **vector_slot(cmamba_model *m, const cm_param_desc *p) {
    cm_layer *w = p->layer >= 0 ? &m->layers[p->layer] : NULL;
    switch (p->kind) {
    case CM_P_NORM_F: return &m->norm_f;
    case CM_P_NORM: return &w->norm;
    case CM_P_IN_PROJ_B: return &w->in_proj_b;
    case CM_P_CONV_W: return &w->conv_w;
    case CM_P_CONV_B: return &w->conv_b;
    case CM_P_DT_PROJ_B: return &w->dt_proj_b;
    case CM_P_A_LOG: return &w->A_log;
    case CM_P_D: return &w->D;
    case CM_P_OUT_PROJ_B: return &w->out_proj_b;
    case CM_P_LOG_DT: return &w->log_dt;
    case CM_P_S4D_B: return &w->s4d_B;
    case CM_P_S4D_C: return &w->s4d_C;
    default: return NULL;
    }
}

/* the slots only read: a loaded model is never written through them */
const cm_matrix *cm_model_matrix(const cmamba_model *m, const cm_param_desc *p) {
    return matrix_slot((cmamba_model *)m, p);
}

const float *cm_model_vector(const cmamba_model *m, const cm_param_desc *p) {
    const float **slot = vector_slot((cmamba_model *)m, p);
    return slot ? *slot : NULL;
}

int cm_model_bind_weights(cmamba_model *m, const char *dir, cmamba_dtype dtype,
                          cmamba_error *err) {
    const cmamba_config *c = &m->cfg;
    const size_t n = cm_params_describe(c, NULL);
    cm_param_desc *params = cm_calloc(n, sizeof *params, err);
    m->layers = cm_calloc((size_t)c->n_layer, sizeof *m->layers, err);
    if (!params || !m->layers) { free(params); return -1; }
    cm_params_describe(c, params);

    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const cm_param_desc *p = &params[i];
        cm_matrix *mat = matrix_slot(m, p);
        if (mat) {
            rc = bind_matrix(m, dir, p, dtype, mat, err);
            continue;
        }
        const float *v = bind(m, dir, p, err);
        if (!v) { rc = -1; break; }
        *vector_slot(m, p) = v;
        if (p->kind == CM_P_A_LOG) {
            cm_layer *w = &m->layers[p->layer];
            if (!(w->A = own(m, sizeof(float) * p->numel, err))) { rc = -1; break; }
            for (size_t k = 0; k < p->numel; k++) w->A[k] = -expf(v[k]);
        }
    }
    if (c->tie_embeddings) m->lm_head = m->embedding;
    free(params);
    return rc;
}

/* ---- formats ----------------------------------------------------------- */

static const char *const dtype_names[] = {"auto", "f32", "bf16", "q8", "q4"};

const char *cmamba_dtype_name(cmamba_dtype d) {
    return (unsigned)d < sizeof dtype_names / sizeof *dtype_names ? dtype_names[d] : "?";
}

int cmamba_dtype_parse(const char *name, cmamba_dtype *out) {
    for (size_t i = 0; i < sizeof dtype_names / sizeof *dtype_names; i++)
        if (!strcmp(name, dtype_names[i])) {
            *out = (cmamba_dtype)i;
            return 0;
        }
    return -1;
}

static size_t bytes_of(const cm_matrix *w) { return cm_matrix_bytes(w->type, w->rows, w->cols); }

cmamba_dtype cmamba_model_dtype(const cmamba_model *m) {
    static const cmamba_dtype of[CM_WT_COUNT] = {CMAMBA_DTYPE_F32, CMAMBA_DTYPE_BF16,
                                                 CMAMBA_DTYPE_Q8, CMAMBA_DTYPE_Q4};
    const cm_wtype t = m->lm_head.type;
    int same = m->embedding.type == t;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const cm_layer *w = &m->layers[l];
        same &= w->in_proj_w.type == t && w->out_proj_w.type == t;
        if (m->cfg.ssm == CMAMBA_SSM_S6) same &= w->x_proj_w.type == t && w->dt_proj_w.type == t;
    }
    return same ? of[t] : CMAMBA_DTYPE_AUTO; /* AUTO: a checkpoint that mixes them */
}

/* 0 if out of memory */
size_t cmamba_model_weight_bytes(const cmamba_model *m) {
    const cmamba_config *c = &m->cfg;
    const size_t n = cm_params_describe(c, NULL);
    cm_param_desc *params = calloc(n, sizeof *params);
    if (!params) return 0;
    cm_params_describe(c, params);
    size_t bytes = bytes_of(&m->lm_head);
    if (!c->tie_embeddings) bytes += cm_matrix_bytes(m->embedding.type, 1, c->d_model);
    for (int l = 0; l < c->n_layer; l++) { /* an S4D layer's x_proj and dt_proj are empty */
        const cm_layer *w = &m->layers[l];
        bytes += bytes_of(&w->in_proj_w) + bytes_of(&w->x_proj_w) + bytes_of(&w->dt_proj_w) +
                 bytes_of(&w->out_proj_w);
    }
    for (size_t i = 0; i < n; i++) /* the fp32 rest; A_log counts as A, read in its place */
        if (!cm_model_matrix(m, &params[i])) bytes += sizeof(float) * params[i].numel;
    free(params);
    return bytes;
}
