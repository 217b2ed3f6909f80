#include "model/params.h"

#include <stdio.h>
#include <string.h>

static void add(cm_param_desc *out, size_t *n, cm_param_kind kind, int layer, const char *name,
                int ndim, int64_t d0, int64_t d1, int64_t d2) {
    if (out) {
        cm_param_desc *p = &out[*n];
        memset(p, 0, sizeof *p);
        if (layer >= 0) snprintf(p->name, sizeof p->name, "backbone.layers.%d.%s", layer, name);
        else snprintf(p->name, sizeof p->name, "%s", name);
        p->kind = kind;
        p->layer = layer;
        p->ndim = ndim;
        int64_t dims[3] = {d0, d1, d2};
        p->numel = 1;
        for (int i = 0; i < ndim; i++) {
            p->shape[i] = dims[i];
            p->numel *= (size_t)dims[i];
        }
    }
    (*n)++;
}

size_t cm_params_describe(const cmamba_config *c, cm_param_desc *out) {
    const int64_t D = c->d_model, V = c->vocab_size, Di = c->d_inner, N = c->d_state,
                  K = c->d_conv, R = c->dt_rank;
    size_t n = 0;
    add(out, &n, CM_P_EMBEDDING, -1,
        c->layout == CMAMBA_LAYOUT_ORIGINAL ? "backbone.embedding.weight"
                                            : "backbone.embeddings.weight",
        2, V, D, 0);
    for (int l = 0; l < c->n_layer; l++) {
        add(out, &n, CM_P_NORM, l, "norm.weight", 1, D, 0, 0);
        add(out, &n, CM_P_IN_PROJ_W, l, "mixer.in_proj.weight", 2, 2 * Di, D, 0);
        if (c->use_bias) add(out, &n, CM_P_IN_PROJ_B, l, "mixer.in_proj.bias", 1, 2 * Di, 0, 0);
        add(out, &n, CM_P_CONV_W, l, "mixer.conv1d.weight", 3, Di, 1, K);
        if (c->use_conv_bias) add(out, &n, CM_P_CONV_B, l, "mixer.conv1d.bias", 1, Di, 0, 0);
        if (c->ssm == CMAMBA_SSM_S4D) {
            add(out, &n, CM_P_LOG_DT, l, "mixer.log_dt", 1, Di, 0, 0);
            add(out, &n, CM_P_S4D_B, l, "mixer.B", 2, Di, N, 0);
            add(out, &n, CM_P_S4D_C, l, "mixer.C", 2, Di, N, 0);
        } else {
            add(out, &n, CM_P_X_PROJ_W, l, "mixer.x_proj.weight", 2, R + 2 * N, Di, 0);
            add(out, &n, CM_P_DT_PROJ_W, l, "mixer.dt_proj.weight", 2, Di, R, 0);
            add(out, &n, CM_P_DT_PROJ_B, l, "mixer.dt_proj.bias", 1, Di, 0, 0);
        }
        add(out, &n, CM_P_A_LOG, l, "mixer.A_log", 2, Di, N, 0);
        add(out, &n, CM_P_D, l, "mixer.D", 1, Di, 0, 0);
        add(out, &n, CM_P_OUT_PROJ_W, l, "mixer.out_proj.weight", 2, D, Di, 0);
        if (c->use_bias) add(out, &n, CM_P_OUT_PROJ_B, l, "mixer.out_proj.bias", 1, D, 0, 0);
    }
    add(out, &n, CM_P_NORM_F, -1, "backbone.norm_f.weight", 1, D, 0, 0);
    if (!c->tie_embeddings) add(out, &n, CM_P_LM_HEAD, -1, "lm_head.weight", 2, V, D, 0);
    return n;
}
