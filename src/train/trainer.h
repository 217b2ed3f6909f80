/* The training loop: data (a synthetic task or a text file), AdamW with the
 * recipe's schedule, gradient accumulation, periodic validation, resumable
 * checkpoints. Deterministic: the same options give the same losses bit for
 * bit, and a resumed run continues exactly as one never interrupted. */
#ifndef CM_TRAINER_H
#define CM_TRAINER_H

#include <stdint.h>

#include "cuda/backend.h"
#include "train/optimizer.h"
#include "dist/dist.h"
#include "train/tasks.h"

typedef struct {
    /* model; vocab_size comes from the data */
    cmamba_config model;
    /* data: a task, or a text file (bytes, or BPE tokens with a tokenizer) */
    int use_task;
    cm_task task;
    char data_path[1024], tokenizer_path[1024];
    double val_fraction;
    /* optimisation */
    cm_adamw_params opt;
    int batch, seq_len, accum; /* seq_len: text windows (tasks: task.seq_len) */
    long steps;
    uint64_t seed;
    /* bookkeeping */
    long eval_every, save_every;
    int eval_batches;
    char out_dir[1024];
} cm_trainer_options;

/* Sensible defaults: the README's selective-copying run. */
void cm_trainer_defaults(cm_trainer_options *o);

typedef struct {
    long step, steps;
    float loss, lr, grad_norm;
    double accuracy;        /* of the step's batch (tasks); −1 for text */
    double tokens_per_s, elapsed_s;
    int has_val;            /* validation ran at this step */
    double val_loss, val_accuracy;
} cm_trainer_progress;

typedef void (*cm_trainer_report)(void *ctx, const cm_trainer_progress *p);

typedef struct cm_trainer cm_trainer;

/* A fresh run from o. */
int cm_trainer_new(const cm_trainer_options *o, cm_trainer **out, cmamba_error *err);
/* The newest checkpoint under out_dir, with the options it was started with. */
int cm_trainer_resume(const char *out_dir, cm_trainer **out, cmamba_error *err);
void cm_trainer_free(cm_trainer *t);

const cm_trainer_options *cm_trainer_opts(const cm_trainer *t);
long cm_trainer_step(const cm_trainer *t);

/* Makes t one rank of a data-parallel group (NULL: alone): every rank
 * draws the group's batch of world · batch sequences and trains on its own
 * batch rows; gradients and loss statistics are summed over the group
 * before each optimizer step, so that all ranks keep the same weights and a
 * group of N gives the losses of one process with N times the batch (to
 * fp32 summation order). Rank 0 alone reports, validates and saves. */
int cm_trainer_set_dist(cm_trainer *t, cm_dist *d, cmamba_error *err);

/* Moves training to the GPU through the CUDA plug-in's table (cli/engine.h
 * opens it), in fp32 or mixed bf16 (cuda/train_cuda.h): parameters and
 * AdamW moments go to the device, which runs every step and validation
 * from then on; checkpoints and the final model copy them back, so they
 * are the files a CPU run writes, and either device resumes them. In a
 * data-parallel group (cm_trainer_set_dist first) each rank takes GPU
 * LOCAL_RANK and the gradients are summed by NCCL, range by range as the
 * backward finishes them (cuda/nccl_group.h). */
int cm_trainer_set_cuda(cm_trainer *t, const cm_cuda_backend *cuda, int bf16, cmamba_error *err);
/* "cpu", or the GPU and precision */
const char *cm_trainer_device(cm_trainer *t);

/* Trains up to the options' step count, reporting every step; saves
 * checkpoints every save_every steps and at the end, and writes the final
 * model to out_dir. */
int cm_trainer_run(cm_trainer *t, cm_trainer_report report, void *ctx, cmamba_error *err);

/* Validation: mean loss per scored token and accuracy (tasks; −1 for text)
 * over the fixed held-out set. */
int cm_trainer_validate(cm_trainer *t, int batches, double *loss, double *accuracy,
                        cmamba_error *err);

/* Writes the loss curves (train loss per step, validation loss) as SVG. */
int cm_trainer_plot(const cm_trainer *t, const char *path, cmamba_error *err);

#endif
