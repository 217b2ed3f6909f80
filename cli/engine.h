/* Where generate, forward and bench run the model: on the CPU (cmamba_*
 * with host states), or with --device cuda on the GPU (src/cuda/model_cuda.h,
 * states in device slots). Each command has one code path for both; the
 * engine holds the recurrent states of `slots` sequences. */
#ifndef CM_ENGINE_H
#define CM_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "cmamba.h"
#include "cuda/backend.h"

typedef struct cli_engine cli_engine;

/* --device VALUE: 0 for cpu, 1 for cuda; exits 2 with one line for any
 * other value, and for cuda in a build without the CUDA backend. */
int cli_device_arg(const char *cmd, const char *val);
/* The CUDA plug-in's table (opened on first use; train and grad call its
 * training functions directly); NULL with the reason in err. */
const cm_cuda_backend *cli_cuda_backend(cmamba_error *err);
/* --dtype VALUE: f32, bf16, q8 or q4 (docs/formats.md); exits 2 for any
 * other value. */
cmamba_dtype cli_dtype_arg(const char *cmd, const char *val);
/* The text of --dtype in the commands' --help. */
#define CLI_DTYPE_HELP(indent)                                                   \
    "weights: f32, bf16, q8 or q4 (8- or 4-bit blocks of 32 with\n" indent      \
    "an fp16 scale: docs/formats.md); default: as stored, f16 and\n" indent     \
    "bf16 as f32. With --device cuda: f32 or bf16 (activations too)\n"

/* Loads dir for the device: on the CPU with its projections in dtype; for
 * the GPU in f32, which the engine copies there (q8 and q4 run on the CPU
 * only). */
int cli_model_load(const char *dir, int cuda, cmamba_dtype dtype, cmamba_model **out,
                   cmamba_error *err);

/* cuda: run on the GPU, in bf16 when dtype is bf16 (on the CPU the model
 * was loaded in its dtype). The model must outlive the engine. */
int cli_engine_new(const cmamba_model *m, int cuda, cmamba_dtype dtype, int slots,
                   cli_engine **out, cmamba_error *err);
void cli_engine_free(cli_engine *e);
/* "cpu", or the GPU and precision: "NVIDIA H100 80GB HBM3, bf16" */
const char *cli_engine_name(const cli_engine *e);
int cli_engine_is_cuda(const cli_engine *e);

/* cmamba_forward on slot's state */
int cli_engine_forward(cli_engine *e, int slot, const int32_t *ids, size_t n, float *logits,
                       int all_logits, cmamba_error *err);
/* cmamba_step_batch on slots 0 … n−1; logits (n, V) and argmax (n) may
 * each be NULL */
int cli_engine_step(cli_engine *e, const int32_t *ids, int n, float *logits, int32_t *argmax,
                    cmamba_error *err);
int cli_engine_copy(cli_engine *e, int dst_slot, int src_slot, cmamba_error *err);
int cli_engine_reset(cli_engine *e, int slot, cmamba_error *err);
/* state snapshots (cmamba_state_save / _load) of one slot */
int cli_engine_save_state(cli_engine *e, int slot, const char *path, cmamba_error *err);
int cli_engine_load_state(cli_engine *e, int slot, const char *path, cmamba_error *err);

/* GPU only: bytes of weights a decoding step reads, in the engine's
 * precision, and the device's copy bandwidth (read + write bytes/s). */
double cli_engine_step_bytes(const cli_engine *e);
int cli_engine_copy_bandwidth(cli_engine *e, double *bytes_per_s, cmamba_error *err);

#endif
