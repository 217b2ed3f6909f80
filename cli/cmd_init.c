/* cmamba init: a freshly initialised model (the published recipe) written
 * as a Hugging Face checkpoint; any published size or a custom shape. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cmamba.h"
#include "commands.h"
#include "train/init.h"

static const char *usage =
    "usage: cmamba init --out DIR [--preset NAME] [shape options] [--dtype f32|bf16] [--seed S]\n"
    "\n"
    "Writes DIR/config.json and DIR/model.safetensors with the published Mamba\n"
    "initialisation (random weights of the exact shapes of a real checkpoint).\n"
    "\n"
    "  --preset NAME   130m, 370m, 790m, 1.4b or 2.8b (vocabulary 50280)\n"
    "  --d-model N  --n-layer N  --vocab N  --d-state N  --d-conv N  --expand N\n"
    "  --dt-rank N     (default ceil(d_model/16))\n"
    "  --untied        separate lm_head instead of the tied embedding\n"
    "  --bias          in_proj/out_proj biases\n"
    "  --dtype T       f32 (default) or bf16\n"
    "  --seed S        (default 0)\n";

static const struct { const char *name; int d_model, n_layer; } presets[] = {
    {"130m", 768, 24}, {"370m", 1024, 48}, {"790m", 1536, 48}, {"1.4b", 2048, 48}, {"2.8b", 2560, 64},
};

int cmd_init(int argc, char **argv) {
    cmamba_config c = {.d_model = 768, .n_layer = 24, .vocab_size = 50280, .d_state = 16,
                       .d_conv = 4, .expand = 2, .eps = 1e-5f, .use_conv_bias = 1,
                       .tie_embeddings = 1, .layout = CMAMBA_LAYOUT_HF};
    const char *out = NULL;
    long v, dt_rank = 0;
    uint64_t seed = 0;
    int bf16 = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
#define VALUE() if (!(val = arg_value("init", argc, argv, &i))) return 2
#define INT_OPT(opt, lo, hi, field) \
    else if (arg_is(a, opt)) { VALUE(); if (arg_int("init", opt, val, lo, hi, &v)) return 2; field = (int)v; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); return 0; }
        else if (arg_is(a, "--out")) { VALUE(); out = val; }
        else if (arg_is(a, "--preset")) {
            VALUE();
            size_t k = 0;
            while (k < sizeof presets / sizeof *presets && strcmp(presets[k].name, val)) k++;
            if (k == sizeof presets / sizeof *presets) die_usage("init", "--preset: unknown size '%s'", val);
            c.d_model = presets[k].d_model;
            c.n_layer = presets[k].n_layer;
        }
        INT_OPT("--d-model", 1, 65536, c.d_model)
        INT_OPT("--n-layer", 1, 4096, c.n_layer)
        INT_OPT("--vocab", 1, 16777216, c.vocab_size)
        INT_OPT("--d-state", 1, 4096, c.d_state)
        INT_OPT("--d-conv", 1, 256, c.d_conv)
        INT_OPT("--expand", 1, 64, c.expand)
        INT_OPT("--dt-rank", 1, 262144, dt_rank)
        else if (arg_is(a, "--seed")) { VALUE(); if (arg_u64("init", "--seed", val, &seed)) return 2; }
        else if (arg_is(a, "--dtype")) {
            VALUE();
            if (!strcmp(val, "bf16")) bf16 = 1;
            else if (strcmp(val, "f32")) die_usage("init", "--dtype: expected f32 or bf16, got '%s'", val);
        }
        else if (!strcmp(a, "--untied")) c.tie_embeddings = 0;
        else if (!strcmp(a, "--bias")) c.use_bias = 1;
        else die_usage("init", "unknown option '%s'", a);
#undef INT_OPT
#undef VALUE
    }
    if (!out) die_usage("init", "--out is required");
    c.d_inner = c.expand * c.d_model;
    c.dt_rank = dt_rank ? (int)dt_rank : (c.d_model + 15) / 16;
    cmamba_error err;
    if (cm_init_checkpoint(&c, out, seed, bf16, &err)) {
        fprintf(stderr, "cmamba init: %s\n", err.msg);
        return 1;
    }
    return 0;
}
