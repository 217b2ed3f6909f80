/* Every parameter of a Mamba LM, by name, shape and role: the one list that
 * weight loading, initialisation, checkpoints and gradients all walk. */
#ifndef CM_PARAMS_H
#define CM_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "cmamba.h"

typedef enum {
    CM_P_EMBEDDING, CM_P_NORM, CM_P_IN_PROJ_W, CM_P_IN_PROJ_B, CM_P_CONV_W, CM_P_CONV_B,
    CM_P_X_PROJ_W, CM_P_DT_PROJ_W, CM_P_DT_PROJ_B, CM_P_A_LOG, CM_P_D, CM_P_OUT_PROJ_W,
    CM_P_OUT_PROJ_B, CM_P_NORM_F, CM_P_LM_HEAD,
    CM_P_LOG_DT, CM_P_S4D_B, CM_P_S4D_C /* S4D layers: Δ, B, C per channel */
} cm_param_kind;

typedef struct {
    char name[96];
    cm_param_kind kind;
    int layer; /* −1 outside the layers */
    int ndim;
    int64_t shape[3];
    size_t numel;
} cm_param_desc;

/* Fills out[0..n) (when out is non-NULL) and returns n, in checkpoint order.
 * Names follow cfg->layout; lm_head is listed only when untied. An S4D
 * layer has mixer.log_dt (d_inner), mixer.B and mixer.C (d_inner, d_state)
 * in place of x_proj and dt_proj; A_log and D as S6. */
size_t cm_params_describe(const cmamba_config *cfg, cm_param_desc *out);

#endif
