/* AdamW over one flat parameter buffer, with the recipe's weight-decay
 * exclusions, global-norm clipping, and linear warm-up + cosine decay. */
#ifndef CM_OPTIMIZER_H
#define CM_OPTIMIZER_H

#include <stddef.h>
#include <stdint.h>

#include "cmamba.h"
#include "model/params.h"

typedef struct {
    float lr, min_lr;        /* peak and final learning rate */
    float beta1, beta2, eps; /* 0.9, 0.95, 1e-8 */
    float weight_decay;      /* 0.1, not applied where decay_mask is 0 */
    float clip;              /* global gradient norm limit (1.0); 0 = off */
    long warmup_steps, total_steps;
} cm_adamw_params;

typedef struct {
    cm_adamw_params p;
    size_t n;
    float *m, *v;             /* first and second moments */
    unsigned char *decay;     /* 1 where weight decay applies */
    long step;                /* updates done */
} cm_adamw;

/* Weight decay applies to embeddings, linear and conv weights; not to
 * A_log, D, biases or norm weights (SPEC.md). */
int cm_param_decays(cm_param_kind kind);

int cm_adamw_init(cm_adamw *opt, const cm_adamw_params *p, const cm_param_desc *params,
                  size_t n_params, cmamba_error *err);
void cm_adamw_free(cm_adamw *opt);

/* Learning rate for update number `step` (0-based). */
float cm_lr_at(const cm_adamw_params *p, long step);

/* Clips grads to the global norm limit, then one AdamW update of params.
 * Returns the gradient norm before clipping. */
float cm_adamw_step(cm_adamw *opt, float *params, float *grads);

#endif
