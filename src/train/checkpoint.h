/* Training checkpoints.
 *
 * A model folder in the Hugging Face layout (config.json + model.safetensors,
 * fp32) is what `cmamba generate` and transformers load. A resumable
 * checkpoint is such a folder plus optimizer.safetensors (the AdamW moments,
 * named exp_avg.NAME and exp_avg_sq.NAME) and trainer.json (options, step,
 * data RNG, loss history), written as OUT/step-NNNNNNNN: the files go into a
 * temporary folder, each fsynced, and the folder is renamed into place, so a
 * kill at any moment leaves either the old checkpoint or the new one whole. */
#ifndef CM_CHECKPOINT_H
#define CM_CHECKPOINT_H

#include "train/optimizer.h"
#include "train/train_model.h"

/* config.json + model.safetensors of m into dir (created if needed); each
 * file atomic. */
int cm_model_save(const char *dir, const cm_train_model *m, cmamba_error *err);

/* The resumable checkpoint of `step` under out_dir; older step-* folders are
 * removed once it is in place. */
int cm_ckpt_save(const char *out_dir, long step, const cm_train_model *m, const cm_adamw *opt,
                 const char *trainer_json, cmamba_error *err);

/* The newest complete checkpoint folder under out_dir (malloc'ed path). */
int cm_ckpt_latest(const char *out_dir, char **ckpt_dir, cmamba_error *err);

/* The AdamW moments of ckpt_dir into opt (sized for m already). */
int cm_ckpt_load_optimizer(const char *ckpt_dir, const cm_train_model *m, cm_adamw *opt,
                           cmamba_error *err);

#endif
