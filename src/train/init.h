/* The published initialisation of a Mamba LM (SPEC.md "Training from
 * scratch"), and writing a fresh model as a Hugging Face checkpoint. */
#ifndef CM_INIT_H
#define CM_INIT_H

#include <stdint.h>

#include "cmamba.h"
#include "model/params.h"

/* Fills one parameter's numel floats with its initial values. */
void cm_init_param(const cmamba_config *cfg, const cm_param_desc *p, uint64_t *rng, float *v);

/* Writes DIR/config.json and DIR/model.safetensors (f32 or bf16) of a
 * freshly initialised model; creates DIR if needed. */
int cm_init_checkpoint(const cmamba_config *cfg, const char *dir, uint64_t seed, int bf16,
                       cmamba_error *err);

#endif
