/* The in-memory Mamba language model: config, per-layer weights, state. */
#ifndef CM_MODEL_H
#define CM_MODEL_H

#include "cmamba.h"
#include "cpu/matrix.h"
#include "io/tensors.h"
#include "model/params.h"

/* Weights of one residual block, shapes from SPEC.md: the projections as
 * matrices of the loaded format (src/cpu/matrix.h), the rest fp32.
 * Weights go into the checkpoint's mapping when it stores them as they
 * are used (aligned fp32, or cmamba quantize's formats), else into buffers
 * the model owns. Optional tensors are NULL when absent. */
typedef struct {
    const float *norm;       /* (d_model)                  */
    cm_matrix in_proj_w;     /* (2·d_inner, d_model)       */
    const float *in_proj_b;  /* (2·d_inner)      use_bias  */
    const float *conv_w;     /* (d_inner, 1, d_conv)       */
    const float *conv_b;     /* (d_inner)   use_conv_bias  */
    cm_matrix x_proj_w;      /* (dt_rank + 2·d_state, d_inner) */
    cm_matrix dt_proj_w;     /* (d_inner, dt_rank)         */
    const float *dt_proj_b;  /* (d_inner)                  */
    const float *A_log;      /* (d_inner, d_state)         */
    const float *D;          /* (d_inner)                  */
    cm_matrix out_proj_w;    /* (d_model, d_inner)         */
    const float *out_proj_b; /* (d_model)        use_bias  */
    const float *log_dt;     /* (d_inner)          S4D     */
    const float *s4d_B;      /* (d_inner, d_state) S4D     */
    const float *s4d_C;      /* (d_inner, d_state) S4D     */
    float *A;                /* −exp(A_log), computed once at load */
} cm_layer;

struct cmamba_model {
    cmamba_config cfg;
    cm_matrix embedding;    /* (vocab_size, d_model) */
    const float *norm_f;    /* (d_model) */
    cm_matrix lm_head;      /* (vocab_size, d_model); the embedding when tied */
    cm_layer *layers;       /* n_layer */
    cm_tensor_set *tensors; /* the mapped checkpoint */
    void **owned;           /* converted or realigned copies */
    size_t n_owned;
    unsigned char *pack;    /* the owned chunk that weight matrices are packed into */
    size_t pack_used;
};

/* Per layer l: conv state at conv + l·d_inner·(d_conv−1), holding for each
 * channel its last d_conv−1 conv inputs, oldest first; SSM state at
 * ssm + l·d_inner·d_state. */
struct cmamba_state {
    cmamba_config cfg;
    uint64_t n_tokens; /* consumed since made or reset */
    float *conv;
    float *ssm;
};

/* Do a and b describe models whose states have the same shape? */
int cm_state_shape_equal(const cmamba_config *a, const cmamba_config *b);

static inline float *cm_state_conv(const cmamba_state *s, int layer) {
    return s->conv + (size_t)layer * s->cfg.d_inner * (s->cfg.d_conv - 1);
}
static inline float *cm_state_ssm(const cmamba_state *s, int layer) {
    return s->ssm + (size_t)layer * s->cfg.d_inner * s->cfg.d_state;
}

/* Loads and checks every weight of cfg's shape from an open tensor set,
 * the projections in format `dtype` (CMAMBA_DTYPE_AUTO: q8 and q4 as
 * stored, anything else fp32); dir names the checkpoint in messages. */
int cm_model_bind_weights(cmamba_model *m, const char *dir, cmamba_dtype dtype,
                          cmamba_error *err);

/* The weight p of a loaded model: its matrix (the projections, embedding
 * and LM head; NULL for the others), or its fp32 values (NULL for those). */
const cm_matrix *cm_model_matrix(const cmamba_model *m, const cm_param_desc *p);
const float *cm_model_vector(const cmamba_model *m, const cm_param_desc *p);

/* Activations for up to `cap` tokens of one block. */
typedef struct {
    int cap;
    float *xz;    /* (cap, 2·d_inner)  [x | z] from in_proj        */
    float *xc;    /* (cap, d_inner)    x after conv and silu        */
    float *xdbc;  /* (cap, dt_rank + 2·d_state)  [δ | B | C]        */
    float *delta; /* (cap, d_inner)    Δ                            */
    float *y;     /* (cap, d_inner)    scan output, gated           */
    float *conv_wT; /* (d_conv, d_inner) the conv taps, transposed    */
    float *s4d_work; /* S4D layers: the recurrence's scratch         */
} cm_block_scratch;

int cm_block_scratch_init(cm_block_scratch *s, const cmamba_config *cfg, int cap,
                          cmamba_error *err);
void cm_block_scratch_free(cm_block_scratch *s);

/* out (L, d_model) = mixer(u (L, d_model)), continuing from and updating the
 * layer's conv and SSM states. L ≤ scratch->cap. */
void cm_mixer_forward(const cmamba_config *cfg, const cm_layer *w, const float *u, int L,
                      float *conv_state, float *ssm_state, cm_block_scratch *s, float *out);

/* The same function for one token of each of n ≤ scratch->cap sequences,
 * as a recurrence: u and out are (n, d_model), row i advancing states[i]'s
 * conv window and h of this layer once. */
void cm_mixer_step(const cmamba_config *cfg, const cm_layer *w, const float *u, int n,
                   cmamba_state *const *states, int layer, cm_block_scratch *s, float *out);

#endif
