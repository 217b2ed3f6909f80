#include "train/optimizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

int cm_param_decays(cm_param_kind kind) {
    switch (kind) {
    case CM_P_EMBEDDING: case CM_P_LM_HEAD: case CM_P_IN_PROJ_W: case CM_P_CONV_W:
    case CM_P_X_PROJ_W: case CM_P_DT_PROJ_W: case CM_P_OUT_PROJ_W:
        return 1;
    default:
        return 0;
    }
}

int cm_adamw_init(cm_adamw *opt, const cm_adamw_params *p, const cm_param_desc *params,
                  size_t n_params, cmamba_error *err) {
    memset(opt, 0, sizeof *opt);
    opt->p = *p;
    for (size_t i = 0; i < n_params; i++) opt->n += params[i].numel;
    opt->m = cm_calloc(opt->n, sizeof(float), err);
    opt->v = cm_calloc(opt->n, sizeof(float), err);
    opt->decay = cm_malloc(opt->n, err);
    if (!opt->m || !opt->v || !opt->decay) {
        cm_adamw_free(opt);
        return -1;
    }
    size_t off = 0;
    for (size_t i = 0; i < n_params; i++) {
        memset(opt->decay + off, cm_param_decays(params[i].kind), params[i].numel);
        off += params[i].numel;
    }
    return 0;
}

void cm_adamw_free(cm_adamw *opt) {
    free(opt->m);
    free(opt->v);
    free(opt->decay);
    memset(opt, 0, sizeof *opt);
}

float cm_lr_at(const cm_adamw_params *p, long step) {
    if (step < p->warmup_steps) return p->lr * (float)(step + 1) / (float)p->warmup_steps;
    long decay_steps = p->total_steps - p->warmup_steps;
    if (decay_steps <= 0) return p->lr;
    double progress = (double)(step - p->warmup_steps) / (double)decay_steps;
    if (progress > 1.0) progress = 1.0;
    return p->min_lr + (p->lr - p->min_lr) * (float)(0.5 * (1.0 + cos(M_PI * progress)));
}

float cm_adamw_step(cm_adamw *opt, float *params, float *grads) {
    const cm_adamw_params *p = &opt->p;
    const size_t n = opt->n;
    double ss = 0;
    /* a fixed reduction order keeps runs bit-reproducible for any thread count */
    for (size_t i = 0; i < n; i++) ss += (double)grads[i] * grads[i];
    const float norm = (float)sqrt(ss);
    const float scale = p->clip > 0 && norm > p->clip ? p->clip / norm : 1.0f;

    const float lr = cm_lr_at(p, opt->step);
    opt->step++;
    const float bc1 = 1.0f - powf(p->beta1, (float)opt->step);
    const float bc2 = 1.0f - powf(p->beta2, (float)opt->step);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float g = grads[i] * scale;
        opt->m[i] = p->beta1 * opt->m[i] + (1.0f - p->beta1) * g;
        opt->v[i] = p->beta2 * opt->v[i] + (1.0f - p->beta2) * g * g;
        /* decoupled weight decay, applied before the Adam step as PyTorch does */
        if (opt->decay[i]) params[i] *= 1.0f - lr * p->weight_decay;
        params[i] -= lr * (opt->m[i] / bc1) / (sqrtf(opt->v[i] / bc2) + p->eps);
    }
    return norm;
}
