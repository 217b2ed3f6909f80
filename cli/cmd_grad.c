/* cmamba grad: gradients of the next-token loss over a sequence, written as
 * safetensors under the checkpoint's parameter names. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cmamba.h"
#include "commands.h"
#include "engine.h"
#include "io/tensors.h"
#include "train/train_model.h"

static const char *usage =
    "usage: cmamba grad --model DIR --ids 5,17,3 --out FILE\n"
    "\n"
    "Computes the mean next-token cross-entropy over the ids (each id predicts\n"
    "the next) and its gradient with respect to every parameter, in fp32, and\n"
    "writes the gradients to FILE as float32 safetensors, named as in the\n"
    "checkpoint (the loss goes in its metadata). Prints \"loss L\" on stdout.\n"
    "\n"
    "  --model DIR   checkpoint folder (config.json + model.safetensors, shards,\n"
    "                or pytorch_model.bin)\n"
    "  --ids LIST    comma-separated token ids, at least 2\n"
    "  --out FILE    output file (written atomically)\n"
    "  --device D    cpu (default) or cuda (the GPU trainer's forward and backward)\n"
    "  --dtype T     with --device cuda: f32 (default) or bf16 (mixed precision)\n";

int cmd_grad(int argc, char **argv) {
    const char *model_dir = NULL, *ids_arg = NULL, *out_path = NULL, *val;
    int cuda = 0;
    cmamba_dtype dtype = CMAMBA_DTYPE_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); return 0; }
        else if (arg_is(a, "--model")) { if (!(model_dir = arg_value("grad", argc, argv, &i))) return 2; }
        else if (arg_is(a, "--ids")) { if (!(ids_arg = arg_value("grad", argc, argv, &i))) return 2; }
        else if (arg_is(a, "--out")) { if (!(out_path = arg_value("grad", argc, argv, &i))) return 2; }
        else if (arg_is(a, "--device")) {
            if (!(val = arg_value("grad", argc, argv, &i))) return 2;
            cuda = cli_device_arg("grad", val);
        }
        else if (arg_is(a, "--dtype")) {
            if (!(val = arg_value("grad", argc, argv, &i))) return 2;
            dtype = cli_dtype_arg("grad", val);
            if (dtype != CMAMBA_DTYPE_F32 && dtype != CMAMBA_DTYPE_BF16)
                die_usage("grad", "--dtype: gradients in f32 or bf16 (mixed precision), not %s", val);
        }
        else die_usage("grad", "unknown option '%s'", a);
    }
    if (!model_dir) die_usage("grad", "--model is required");
    if (!ids_arg) die_usage("grad", "--ids is required");
    if (!out_path) die_usage("grad", "--out is required");
    if (dtype == CMAMBA_DTYPE_BF16 && !cuda)
        die_usage("grad", "--dtype bf16 runs on the GPU only (--device cuda)");

    cmamba_error err;
    cm_train_model *m;
    if (cm_train_model_load(model_dir, &m, &err)) {
        fprintf(stderr, "cmamba grad: %s\n", err.msg);
        return 1;
    }
    int32_t *ids;
    size_t n;
    if (arg_ids("grad", "--ids", ids_arg, m->cfg.vocab_size, &ids, &n)) {
        cm_train_model_free(m);
        return 1;
    }
    int rc = 1;
    cm_tensor_out *out = NULL;
    if (n < 2 || n > 1u << 30) {
        fprintf(stderr, "cmamba grad: --ids: need between 2 and 2^30 ids, got %zu\n", n);
        goto done;
    }
    float loss;
    cm_train_zero_grad(m);
    if (cuda) {
        /* the trainer's GPU model: every id but the last in, every one but the first scored */
        const cm_cuda_backend *be = cli_cuda_backend(&err);
        cm_cuda_train *g = NULL;
        cm_train_stats st;
        const int r = !be || be->train_new(&m->cfg, m->params, dtype == CMAMBA_DTYPE_BF16, &g, &err) ||
                      be->train_run(g, ids, ids + 1, 1, (int)n - 1, 1.0f, &st, &err) ||
                      be->train_copy(g, CM_CUDA_GRADS, 0, m->grads, &err);
        if (g) be->train_free(g);
        if (r) goto fail;
        loss = st.loss;
    } else if (cm_train_forward_backward(m, ids, 1, (int)n - 1, &loss, &err)) {
        goto fail;
    }

    if (!(out = calloc(m->n_tensors, sizeof *out))) {
        snprintf(err.msg, sizeof err.msg, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        const cm_param_desc *p = &m->desc[i];
        out[i] = (cm_tensor_out){.name = p->name, .dtype = CM_DT_F32, .ndim = p->ndim,
                                 .data = m->grads + m->offset[i]};
        memcpy(out[i].shape, p->shape, sizeof p->shape);
    }
    char loss_text[32];
    snprintf(loss_text, sizeof loss_text, "%.9g", loss);
    const char *const meta[] = {"loss", loss_text};
    if (cm_safetensors_write(out_path, out, m->n_tensors, meta, 1, &err)) goto fail;
    printf("loss %.6f\n", loss);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "cmamba grad: %s\n", err.msg);
done:
    free(out);
    free(ids);
    cm_train_model_free(m);
    return rc;
}
