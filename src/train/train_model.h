/* A trainable Mamba LM in fp32: forward, backward and loss over batches of
 * token sequences, with every parameter in one flat buffer.
 *
 * Layout: params holds the tensors of cm_params_describe back to back, in
 * that order (offset[i] floats in for tensor i); grads has the same layout,
 * so an optimiser can walk both in one pass. A tied model has no lm_head
 * tensor: the head reads the embedding and adds its gradient there.
 *
 * Memory of the activations kept for a batch of n = B·T tokens, in floats:
 *   (n_layer + 1) · n · (2·d_model + 7·d_inner + dt_rank + 2·d_state)
 *     (every layer's activations, plus one layer's worth of their gradients,
 *      reused from layer to layer)
 *   + 3 · n · d_model                    final norm, its input and gradient
 *   + 2 · 64 · vocab                     logits and their gradient, 64 rows at
 *                                        a time: never a (n, vocab) tensor
 *   + 32 · (3·T + 1) · d_state           scan backward: states recomputed per
 *                                        channel, never (T, d_inner, d_state)
 * i.e. linear in B·T and in n_layer; for mamba-130m about 1.2 MB per token.
 *
 * Gradients are bit-identical from run to run and for any thread count:
 * every sum runs in an order fixed by the shapes alone. */
#ifndef CM_TRAIN_MODEL_H
#define CM_TRAIN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "cmamba.h"
#include "model/params.h"

/* One layer's tensors inside a flat buffer (NULL when the config has none). */
typedef struct {
    float *norm, *in_proj_w, *in_proj_b, *conv_w, *conv_b, *x_proj_w, *dt_proj_w, *dt_proj_b,
        *A_log, *D, *out_proj_w, *out_proj_b;
    float *log_dt, *s4d_B, *s4d_C; /* S4D layers (see model/params.h) */
} cm_train_layer;

typedef struct {
    float *embedding, *norm_f;
    float *lm_head; /* == embedding when tied */
    cm_train_layer *layers;
} cm_train_tensors;

typedef struct cm_train_buffers cm_train_buffers;

typedef struct {
    cmamba_config cfg;
    size_t n_tensors;
    cm_param_desc *desc; /* n_tensors, in checkpoint order */
    size_t *offset;      /* n_tensors: first float of each tensor in params and grads */
    size_t n_params;     /* floats in params (and in grads) */
    float *params, *grads;
    cm_train_tensors w, dw; /* named views into params and grads */
    cm_train_buffers *buf;  /* activations, grown to the largest batch seen */
} cm_train_model;

/* A model with the published initialisation (cm_init_param, one generator
 * seeded with seed walked in checkpoint order: the values `cmamba init`
 * writes for the same seed). */
int cm_train_model_new(const cmamba_config *cfg, uint64_t seed, cm_train_model **out,
                       cmamba_error *err);
/* A model with every parameter of the checkpoint folder dir. */
int cm_train_model_load(const char *dir, cm_train_model **out, cmamba_error *err);
void cm_train_model_free(cm_train_model *m);

void cm_train_zero_grad(cm_train_model *m);

typedef struct {
    float loss;      /* mean cross-entropy over the scored targets (0 if none) */
    double loss_sum; /* their sum */
    long scored;     /* targets scored */
    long correct;    /* of which the argmax of the logits is the target */
} cm_train_stats;

/* inputs, targets: (B, T); a target < 0 is not scored (the tasks' prompt
 * positions). Forward over the batch and the loss statistics; with
 * grad_weight > 0 also the backward, ADDING the gradient of
 * grad_weight · (mean loss) to m->grads (1/k for k accumulated micro-
 * batches); grad_weight 0 leaves grads untouched (evaluation). */
int cm_train_run(cm_train_model *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                 float grad_weight, cm_train_stats *st, cmamba_error *err);

/* ids: (B, T+1), B sequences each giving T next-token predictions. *loss is
 * the mean cross-entropy over all B·T of them; its gradient is ADDED to
 * m->grads (zero them first; calling again accumulates). */
int cm_train_forward_backward(cm_train_model *m, const int32_t *ids, int B, int T, float *loss,
                              cmamba_error *err);
/* The same loss without the backward pass (evaluation); grads untouched. */
int cm_train_loss(cm_train_model *m, const int32_t *ids, int B, int T, float *loss,
                  cmamba_error *err);

#endif
