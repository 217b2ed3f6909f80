#include "train/init.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "io/config.h"
#include "io/tensors.h"
#include "rng.h"

static void fill_uniform(float *v, size_t n, double bound, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) v[i] = (float)((2.0 * cm_rng_uniform(rng) - 1.0) * bound);
}

void cm_init_param(const cmamba_config *c, const cm_param_desc *p, uint64_t *rng, float *v) {
    const size_t n = p->numel;
    switch (p->kind) {
    case CM_P_EMBEDDING:
    case CM_P_LM_HEAD:
        for (size_t i = 0; i < n; i++) v[i] = (float)(0.02 * cm_rng_normal(rng));
        break;
    case CM_P_NORM:
    case CM_P_NORM_F:
    case CM_P_D:
        for (size_t i = 0; i < n; i++) v[i] = 1.0f;
        break;
    case CM_P_IN_PROJ_B:
    case CM_P_OUT_PROJ_B:
        memset(v, 0, n * sizeof *v);
        break;
    case CM_P_IN_PROJ_W:
    case CM_P_X_PROJ_W:
        /* PyTorch's nn.Linear default: U(±1/sqrt(fan_in)) */
        fill_uniform(v, n, 1.0 / sqrt((double)p->shape[1]), rng);
        break;
    case CM_P_OUT_PROJ_W:
        /* the same, rescaled by 1/sqrt(n_layer) for the pre-norm residual */
        fill_uniform(v, n, 1.0 / sqrt((double)p->shape[1]) / sqrt((double)c->n_layer), rng);
        break;
    case CM_P_CONV_W:
    case CM_P_CONV_B:
        /* nn.Conv1d default with groups = channels: fan_in = d_conv */
        fill_uniform(v, n, 1.0 / sqrt((double)c->d_conv), rng);
        break;
    case CM_P_DT_PROJ_W:
        fill_uniform(v, n, 1.0 / sqrt((double)c->dt_rank), rng);
        break;
    case CM_P_DT_PROJ_B:
        /* Δ starts log-uniform in [1e-3, 1e-1]; the bias is its inverse softplus */
        for (size_t i = 0; i < n; i++) {
            double dt = exp(log(1e-3) + cm_rng_uniform(rng) * (log(1e-1) - log(1e-3)));
            if (dt < 1e-4) dt = 1e-4;
            v[i] = (float)(dt + log(-expm1(-dt)));
        }
        break;
    case CM_P_LOG_DT:
        /* S4D: the same log-uniform Δ, stored as its logarithm */
        for (size_t i = 0; i < n; i++)
            v[i] = (float)(log(1e-3) + cm_rng_uniform(rng) * (log(1e-1) - log(1e-3)));
        break;
    case CM_P_S4D_B:
        /* S4D-Real: B = 1, C ~ N(0, 1) */
        for (size_t i = 0; i < n; i++) v[i] = 1.0f;
        break;
    case CM_P_S4D_C:
        for (size_t i = 0; i < n; i++) v[i] = (float)cm_rng_normal(rng);
        break;
    case CM_P_A_LOG:
        /* S4D-Real: A = −(1, 2, …, N) in every channel */
        for (size_t i = 0; i < n; i++) v[i] = (float)log((double)(i % (size_t)c->d_state + 1));
        break;
    }
}

int cm_init_checkpoint(const cmamba_config *c, const char *dir, uint64_t seed, int bf16,
                       cmamba_error *err) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return cm_fail(err, "%s: cannot create folder: %s", dir, strerror(errno));
    const size_t n = cm_params_describe(c, NULL);
    cm_param_desc *params = cm_calloc(n, sizeof *params, err);
    cm_tensor_out *out = cm_calloc(n, sizeof *out, err);
    void **bufs = cm_calloc(n, sizeof *bufs, err);
    int rc = -1;
    if (!params || !out || !bufs) goto done;
    cm_params_describe(c, params);

    uint64_t rng = seed;
    for (size_t i = 0; i < n; i++) {
        const cm_param_desc *p = &params[i];
        float *v = cm_malloc(p->numel * sizeof *v, err);
        if (!v) goto done;
        bufs[i] = v;
        cm_init_param(c, p, &rng, v);
        if (bf16) {
            uint16_t *h = cm_malloc(p->numel * sizeof *h, err);
            if (!h) goto done;
            for (size_t k = 0; k < p->numel; k++) h[k] = cm_f32_to_bf16(v[k]);
            free(v);
            bufs[i] = h;
        }
        out[i] = (cm_tensor_out){.name = p->name, .dtype = bf16 ? CM_DT_BF16 : CM_DT_F32,
                                 .ndim = p->ndim, .data = bufs[i]};
        memcpy(out[i].shape, p->shape, sizeof p->shape);
    }
    char *st_path = cm_path_join(dir, "model.safetensors"), *cfg_path = cm_path_join(dir, "config.json");
    static const char *const meta[] = {"format", "pt"};
    rc = (!st_path || !cfg_path) ? cm_fail(err, "out of memory")
         : cm_safetensors_write(st_path, out, n, meta, 1, err) ? -1
                                                                : cm_config_write_hf(cfg_path, c, err);
    free(st_path);
    free(cfg_path);
done:
    if (bufs) for (size_t i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(out);
    free(params);
    return rc;
}
