/* cli/engine.h: the CPU engine over cmamba_* and host states, and the GPU
 * engine over the CUDA plug-in (cuda/backend.h), opened on first use. */
#include "engine.h"

#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "common.h"
#include "cuda/backend.h"

struct cli_engine {
    const cmamba_model *model;
    int slots, V;
    cmamba_state **states; /* CPU: one per slot; GPU: one, for snapshots */
    float *logits;         /* CPU: (slots, V) when argmax is asked without logits */
    const cm_cuda_backend *cuda; /* the plug-in's table, when gpu */
    cm_cuda_model *gpu;
    cm_cuda_state *gstate;
};

/* libcmamba-cuda.so from the folder of the running binary (the build
 * folder, or where both were installed); NULL with the reason in err. */
static const cm_cuda_backend *open_backend(cmamba_error *err) {
    static const cm_cuda_backend *table;
    if (table) return table;
    char exe[PATH_MAX], path[PATH_MAX + 32];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        cm_fail(err, "--device cuda: cannot find the cmamba binary's folder");
        return NULL;
    }
    exe[n] = 0;
    snprintf(path, sizeof path, "%s/%s", dirname(exe), CM_CUDA_BACKEND_FILE);
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        cm_fail(err, "--device cuda: %s (a build without nvcc has no CUDA backend)", dlerror());
        return NULL;
    }
    table = dlsym(lib, CM_CUDA_BACKEND_SYMBOL);
    if (!table) cm_fail(err, "--device cuda: %s: no %s", path, CM_CUDA_BACKEND_SYMBOL);
    return table;
}

const cm_cuda_backend *cli_cuda_backend(cmamba_error *err) { return open_backend(err); }

int cli_device_arg(const char *cmd, const char *val) {
    if (!strcmp(val, "cpu")) return 0;
    if (strcmp(val, "cuda")) die_usage(cmd, "--device: expected cpu or cuda, got '%s'", val);
    cmamba_error err;
    if (!open_backend(&err)) {
        fprintf(stderr, "cmamba %s: %s\n", cmd, err.msg);
        exit(2);
    }
    return 1;
}

cmamba_dtype cli_dtype_arg(const char *cmd, const char *val) {
    cmamba_dtype d;
    if (cmamba_dtype_parse(val, &d) || d == CMAMBA_DTYPE_AUTO)
        die_usage(cmd, "--dtype: expected f32, bf16, q8 or q4, got '%s'", val);
    return d;
}

int cli_model_load(const char *dir, int cuda, cmamba_dtype dtype, cmamba_model **out,
                   cmamba_error *err) {
    *out = NULL;
    if (cuda && (dtype == CMAMBA_DTYPE_Q8 || dtype == CMAMBA_DTYPE_Q4))
        return cm_fail(err, "--dtype %s runs on the CPU only (--device cpu)",
                       cmamba_dtype_name(dtype));
    return cmamba_model_load_dtype(dir, cuda ? CMAMBA_DTYPE_F32 : dtype, out, err);
}

int cli_engine_is_cuda(const cli_engine *e) { return e->gpu != NULL; }

void cli_engine_free(cli_engine *e) {
    if (!e) return;
    for (int i = 0; e->states && i < e->slots; i++) cmamba_state_free(e->states[i]);
    free(e->states);
    free(e->logits);
    if (e->gstate) e->cuda->state_free(e->gstate);
    if (e->gpu) e->cuda->model_free(e->gpu);
    free(e);
}

int cli_engine_new(const cmamba_model *m, int cuda, cmamba_dtype dtype, int slots,
                   cli_engine **out, cmamba_error *err) {
    *out = NULL;
    cli_engine *e = cm_calloc(1, sizeof *e, err);
    if (!e) return -1;
    e->model = m, e->slots = slots, e->V = cmamba_model_config(m)->vocab_size;
    const int n_host = cuda ? 1 : slots; /* the GPU's host state only carries snapshots */
    int rc = (e->states = cm_calloc((size_t)slots, sizeof *e->states, err)) ? 0 : -1;
    for (int i = 0; rc == 0 && i < n_host; i++) rc = cmamba_state_new(m, &e->states[i], err);
    if (rc == 0 && cuda)
        rc = !(e->cuda = open_backend(err)) ||
                     e->cuda->model_new(m, dtype == CMAMBA_DTYPE_BF16, &e->gpu, err) ||
                     e->cuda->state_new(e->gpu, slots, &e->gstate, err)
                 ? -1 : 0;
    if (rc == 0 && !cuda && !(e->logits = cm_malloc(sizeof(float) * slots * (size_t)e->V, err)))
        rc = -1;
    if (rc) cli_engine_free(e);
    else *out = e;
    return rc;
}

const char *cli_engine_name(const cli_engine *e) {
    return e->gpu ? e->cuda->model_describe(e->gpu) : "cpu";
}

int cli_engine_forward(cli_engine *e, int slot, const int32_t *ids, size_t n, float *logits,
                       int all_logits, cmamba_error *err) {
    if (e->gpu) return e->cuda->forward(e->gpu, e->gstate, slot, ids, n, logits, all_logits, err);
    return cmamba_forward(e->model, e->states[slot], ids, n, logits, all_logits, err);
}

int cli_engine_step(cli_engine *e, const int32_t *ids, int n, float *logits, int32_t *argmax,
                    cmamba_error *err) {
    if (e->gpu) return e->cuda->step_batch(e->gpu, e->gstate, ids, n, logits, argmax, err);
    float *out = logits ? logits : e->logits;
    if (cmamba_step_batch(e->model, e->states, ids, n, out, err)) return -1;
    for (int i = 0; argmax && i < n; i++) {
        const float *row = out + (size_t)i * e->V;
        int32_t best = 0; /* the first maximum, as the greedy sampler */
        for (int v = 1; v < e->V; v++)
            if (row[v] > row[best]) best = v;
        argmax[i] = best;
    }
    return 0;
}

int cli_engine_copy(cli_engine *e, int dst, int src, cmamba_error *err) {
    if (e->gpu) return e->cuda->state_copy(e->gstate, dst, src, err);
    return cmamba_state_copy(e->states[dst], e->states[src], err);
}

int cli_engine_reset(cli_engine *e, int slot, cmamba_error *err) {
    if (e->gpu) return e->cuda->state_reset(e->gstate, slot, err);
    cmamba_state_reset(e->states[slot]);
    return 0;
}

/* Snapshots go through a host state: slot's own on the CPU, the one
 * transfer state on the GPU. */
int cli_engine_save_state(cli_engine *e, int slot, const char *path, cmamba_error *err) {
    if (e->gpu) {
        if (e->cuda->state_get(e->gstate, slot, e->states[0], err)) return -1;
        slot = 0;
    }
    return cmamba_state_save(e->states[slot], path, err);
}

int cli_engine_load_state(cli_engine *e, int slot, const char *path, cmamba_error *err) {
    if (e->gpu)
        return cmamba_state_load(e->states[0], path, err) ||
                       e->cuda->state_set(e->gstate, slot, e->states[0], err)
                   ? -1 : 0;
    return cmamba_state_load(e->states[slot], path, err);
}

double cli_engine_step_bytes(const cli_engine *e) {
    return e->gpu ? e->cuda->model_step_bytes(e->gpu) : 0;
}

int cli_engine_copy_bandwidth(cli_engine *e, double *bytes_per_s, cmamba_error *err) {
    if (e->gpu) return e->cuda->copy_bandwidth((size_t)1 << 30, bytes_per_s, err);
    return cm_fail(err, "the copy bandwidth is measured on the GPU only");
}
