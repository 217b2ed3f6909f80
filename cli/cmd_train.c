/* cmamba train: train a Mamba LM from scratch on a synthetic task or a text
 * file, with resumable checkpoints, validation and a loss-curve plot. With
 * no arguments: the README's selective-copying run. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "cmamba.h"
#include "commands.h"
#include "common.h"
#include "dist/dist.h"
#include "engine.h"
#include "train/trainer.h"

static const char *usage =
    "usage: cmamba train [--task NAME | --data FILE [--tokenizer FILE]] [options]\n"
    "       cmamba train --resume DIR\n"
    "\n"
    "Trains a Mamba language model from scratch (the published initialisation,\n"
    "AdamW, warm-up + cosine schedule, gradient clipping). Checkpoints go to\n"
    "DIR/step-N (resumable: weights, optimizer state, data position); the final\n"
    "model, in the Hugging Face layout, to DIR itself; the loss curves to\n"
    "DIR/loss.svg. With no arguments: selective copying at L = 256.\n"
    "\n"
    "data\n"
    "  --task NAME        selective-copying (default), copying or induction-heads\n"
    "  --task-len L       context length of a task example (default 256)\n"
    "  --task-tokens N    data tokens to copy (default 16)\n"
    "  --task-vocab V     data symbols (default 16)\n"
    "  --task-loss W      recall (default): train on the recalled tokens only;\n"
    "                     all: on every next token, as the H3/Hyena synthetics did\n"
    "                     (validation and accuracy score the recall either way)\n"
    "  --data FILE        text file; bytes (vocabulary 256) unless --tokenizer\n"
    "  --tokenizer FILE   a tokenizer.json: train on its BPE tokens\n"
    "  --val-fraction F   held-out tail of the text (default 0.1)\n"
    "model\n"
    "  --d-model N (64)  --n-layer N (2)  --d-state N (16)  --d-conv N (4)  --expand N (2)\n"
    "  --dt-rank N (ceil(d_model/16))  --untied\n"
    "  --ssm s6|s4d       the selective scan (default), or the time-invariant S4D\n"
    "                     layer of the paper's ablation\n"
    "optimisation\n"
    "  --steps N (1000)  --batch B (32)  --seq-len T (256, text)  --accum K (1)\n"
    "  --lr X (3e-3)  --min-lr X (lr/10)  --warmup N (5% of steps)  --weight-decay X (0.1)\n"
    "  --clip X (1.0)  --seed S (1)\n"
    "run\n"
    "  --out DIR          (default runs/<task or data file name>)\n"
    "  --resume DIR       continue the newest checkpoint in DIR exactly\n"
    "  --plot-only        with --resume: write DIR/loss.svg from the checkpoint, no training\n"
    "  --eval-every N     validation every N steps (default steps/10)\n"
    "  --eval-batches N   batches of held-out data per validation (default 8)\n"
    "  --save-every N     checkpoint every N steps (default steps/4)\n"
    "  --device D         cpu (default) or cuda: every step and validation on the GPU\n"
    "                     (S6 models; checkpoints as on the CPU, resumable on either)\n"
    "  --dtype T          with --device cuda: f32 (default) or bf16, mixed precision:\n"
    "                     bf16 products and activations, fp32 master weights, states,\n"
    "                     sums and gradients\n"
    "  --threads N        OpenMP threads (default: all cores)\n"
    "  --log-every N      progress line every N steps when stderr is not a terminal\n"
    "  --quiet            no progress on stderr\n"
    "\n"
    "Data-parallel: `cmamba launch --nproc N train ...` (or torchrun --no-python)\n"
    "runs N processes with --batch each, as one run with N x --batch.\n";

typedef struct {
    int quiet, tty;
    long log_every;
} progress_ctx;

static void format_eta(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e7) snprintf(buf, n, "?");
    else if (s >= 3600) snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
}

static void report(void *vctx, const cm_trainer_progress *p) {
    const progress_ctx *ctx = vctx;
    if (ctx->quiet) return;
    char eta[32], acc[32] = "";
    format_eta(p->elapsed_s / (double)p->step * (double)(p->steps - p->step), eta, sizeof eta);
    if (p->accuracy >= 0) snprintf(acc, sizeof acc, " | acc %5.1f%%", 100 * p->accuracy);
    const int line = p->has_val || p->step == p->steps || (!ctx->tty && p->step % ctx->log_every == 0);
    if (ctx->tty || line)
        fprintf(stderr, "%sstep %ld/%ld | loss %.4f%s | lr %.2e | |g| %.2f | %.0f tok/s | ETA %s%s",
                ctx->tty ? "\r\033[K" : "", p->step, p->steps, p->loss, acc, p->lr, p->grad_norm,
                p->tokens_per_s, eta, ctx->tty && !line ? "" : "\n");
    if (p->has_val) {
        fprintf(stderr, "  validation at step %ld: loss %.4f", p->step, p->val_loss);
        if (p->val_accuracy >= 0) fprintf(stderr, " | accuracy %.2f%%", 100 * p->val_accuracy);
        fputc('\n', stderr);
    }
}

int cmd_train(int argc, char **argv) {
    cm_trainer_options o;
    cm_trainer_defaults(&o);
    const char *resume = NULL, *out = NULL;
    long v, threads = 0, log_every = 0, warmup = -1, eval_every = -1, save_every = -1;
    double f, min_lr = -1;
    int quiet = 0, plot_only = 0, cuda = 0;
    cmamba_dtype dtype = CMAMBA_DTYPE_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
#define VALUE() if (!(val = arg_value("train", argc, argv, &i))) return 2
#define INT_OPT(opt, lo, hi, field) \
    else if (arg_is(a, opt)) { VALUE(); if (arg_int("train", opt, val, lo, hi, &v)) return 2; field = v; }
#define FLOAT_OPT(opt, lo, hi, field) \
    else if (arg_is(a, opt)) { VALUE(); if (arg_float("train", opt, val, lo, hi, &f)) return 2; field = f; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); return 0; }
        else if (arg_is(a, "--task")) {
            VALUE();
            if (cm_task_parse(val, &o.task.kind)) die_usage("train", "--task: unknown task '%s'", val);
            o.use_task = 1;
        }
        else if (arg_is(a, "--data")) {
            VALUE();
            snprintf(o.data_path, sizeof o.data_path, "%s", val);
            o.use_task = 0;
        }
        else if (arg_is(a, "--tokenizer")) { VALUE(); snprintf(o.tokenizer_path, sizeof o.tokenizer_path, "%s", val); }
        else if (arg_is(a, "--out")) { VALUE(); out = val; }
        else if (arg_is(a, "--resume")) { VALUE(); resume = val; }
        else if (arg_is(a, "--seed")) { VALUE(); if (arg_u64("train", "--seed", val, &o.seed)) return 2; }
        else if (!strcmp(a, "--untied")) o.model.tie_embeddings = 0;
        else if (arg_is(a, "--ssm")) {
            VALUE();
            if (!strcmp(val, "s4d")) o.model.ssm = CMAMBA_SSM_S4D;
            else if (strcmp(val, "s6")) die_usage("train", "--ssm: expected s6 or s4d, got '%s'", val);
        }
        else if (arg_is(a, "--task-loss")) {
            VALUE();
            if (!strcmp(val, "all")) o.task.loss_all = 1;
            else if (strcmp(val, "recall")) die_usage("train", "--task-loss: expected recall or all, got '%s'", val);
        }
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else if (arg_is(a, "--device")) { VALUE(); cuda = cli_device_arg("train", val); }
        else if (arg_is(a, "--dtype")) {
            VALUE();
            dtype = cli_dtype_arg("train", val);
            if (dtype != CMAMBA_DTYPE_F32 && dtype != CMAMBA_DTYPE_BF16)
                die_usage("train", "--dtype: trains in f32 or bf16 (mixed precision), not %s", val);
        }
        else if (!strcmp(a, "--plot-only")) plot_only = 1;
        INT_OPT("--task-len", 4, 1 << 24, o.task.seq_len)
        INT_OPT("--task-tokens", 1, 1 << 20, o.task.n_tokens)
        INT_OPT("--task-vocab", 2, 1 << 20, o.task.vocab)
        INT_OPT("--d-model", 1, 65536, o.model.d_model)
        INT_OPT("--n-layer", 1, 4096, o.model.n_layer)
        INT_OPT("--d-state", 1, 4096, o.model.d_state)
        INT_OPT("--d-conv", 1, 256, o.model.d_conv)
        INT_OPT("--expand", 1, 64, o.model.expand)
        INT_OPT("--dt-rank", 1, 262144, o.model.dt_rank)
        INT_OPT("--steps", 1, 1L << 40, o.steps)
        INT_OPT("--batch", 1, 65536, o.batch)
        INT_OPT("--seq-len", 1, 1 << 24, o.seq_len)
        INT_OPT("--accum", 1, 65536, o.accum)
        INT_OPT("--warmup", 0, 1L << 40, warmup)
        INT_OPT("--eval-every", 0, 1L << 40, eval_every)
        INT_OPT("--eval-batches", 1, 1 << 20, o.eval_batches)
        INT_OPT("--save-every", 0, 1L << 40, save_every)
        INT_OPT("--threads", 1, 4096, threads)
        INT_OPT("--log-every", 1, 1L << 40, log_every)
        FLOAT_OPT("--lr", 0, 10, o.opt.lr)
        FLOAT_OPT("--min-lr", 0, 10, min_lr)
        FLOAT_OPT("--weight-decay", 0, 10, o.opt.weight_decay)
        FLOAT_OPT("--clip", 0, 1e9, o.opt.clip)
        FLOAT_OPT("--val-fraction", 1e-6, 0.9, o.val_fraction)
        else die_usage("train", "unknown option '%s'", a);
#undef FLOAT_OPT
#undef INT_OPT
#undef VALUE
    }
    if (threads) cmamba_set_threads((int)threads);
    if (!o.use_task && !o.data_path[0]) die_usage("train", "--tokenizer needs --data");
    if (dtype == CMAMBA_DTYPE_BF16 && !cuda)
        die_usage("train", "--dtype bf16 trains on the GPU only (--device cuda)");
    o.opt.min_lr = min_lr >= 0 ? (float)min_lr : o.opt.lr / 10;
    o.opt.warmup_steps = warmup >= 0 ? warmup : o.steps / 20;
    o.eval_every = eval_every >= 0 ? eval_every : (o.steps >= 10 ? o.steps / 10 : 1);
    o.save_every = save_every >= 0 ? save_every : (o.steps >= 4 ? o.steps / 4 : 1);
    if (out) snprintf(o.out_dir, sizeof o.out_dir, "%s", out);
    else if (!o.use_task) {
        const char *base = strrchr(o.data_path, '/');
        snprintf(o.out_dir, sizeof o.out_dir, "runs/%.1000s", base ? base + 1 : o.data_path);
    } else snprintf(o.out_dir, sizeof o.out_dir, "runs/%s", cm_task_name(o.task.kind));

    cmamba_error err;
    cm_dist *dist; /* several processes (cmamba launch, torchrun), or this one alone */
    if (cm_dist_init(&dist, &err)) {
        fprintf(stderr, "cmamba train: %s\n", err.msg);
        return 1;
    }
    const int world = cm_dist_world(dist), rank = cm_dist_rank(dist);
    if (rank > 0) quiet = 1; /* rank 0 speaks for the group */
    cm_trainer *t;
    if ((resume ? cm_trainer_resume(resume, &t, &err) : cm_trainer_new(&o, &t, &err)) ||
        /* launched (even as a group of one): NCCL sums on the GPU */
        ((world > 1 || getenv("WORLD_SIZE")) && cm_trainer_set_dist(t, dist, &err)) ||
        (cuda && cm_trainer_set_cuda(t, cli_cuda_backend(&err), dtype == CMAMBA_DTYPE_BF16, &err))) {
        fprintf(stderr, "cmamba train: rank %d: %s\n", rank, err.msg);
        cm_trainer_free(t);
        cm_dist_free(dist);
        return 1;
    }
    const cm_trainer_options *to = cm_trainer_opts(t);
    progress_ctx ctx = {quiet, isatty(2),
                        log_every ? log_every : (to->steps >= 50 ? to->steps / 50 : 1)};
    if (!quiet) {
        const cmamba_config *c = &to->model;
        fprintf(stderr, "model: %s, d_model %d, %d layers, d_state %d, vocabulary %d | data: ",
                c->ssm == CMAMBA_SSM_S4D ? "S4D" : "Mamba (S6)", c->d_model, c->n_layer,
                c->d_state, c->vocab_size);
        if (to->use_task)
            fprintf(stderr, "%s, L = %d | ", cm_task_name(to->task.kind), to->task.seq_len);
        else
            fprintf(stderr, "%s | ", to->data_path);
        if (world > 1) fprintf(stderr, "%d processes x ", world);
        fprintf(stderr, "batch %d x %d, %ld steps%s | ", to->batch, to->accum, to->steps,
                resume ? " (resumed)" : "");
        if (cuda) fprintf(stderr, "%s", cm_trainer_device(t));
        else fprintf(stderr, "%d threads", omp_get_max_threads());
        fprintf(stderr, " | out: %s\n",
                to->out_dir);
        if (resume) fprintf(stderr, "resuming after step %ld\n", cm_trainer_step(t));
    }
    if (plot_only && !resume) die_usage("train", "--plot-only needs --resume DIR");
    int rc = plot_only ? 0 : cm_trainer_run(t, report, &ctx, &err);
    if (rank > 0 || (rc && world > 1)) {
        if (rc) fprintf(stderr, "cmamba train: rank %d: %s\n", rank, err.msg);
        cm_trainer_free(t);
        cm_dist_free(dist);
        return rc ? 1 : 0;
    }
    char *plot = rc ? NULL : cm_path_join(to->out_dir, "loss.svg");
    double loss, acc;
    if (!rc) rc = cm_trainer_plot(t, plot, &err);
    if (!rc && plot_only) {
        printf("loss curves: %s\n", plot);
        free(plot);
        cm_trainer_free(t);
        cm_dist_free(dist);
        return 0;
    }
    if (!rc) rc = cm_trainer_validate(t, 4 * to->eval_batches, &loss, &acc, &err);
    if (rc) {
        fprintf(stderr, "cmamba train: %s\n", err.msg);
    } else {
        const int held_out = 4 * to->eval_batches * world * to->batch;
        if (acc >= 0)
            printf("%s accuracy: %.2f%% of the recalled tokens of %d held-out examples "
                   "(loss %.4f)\n", cm_task_name(to->task.kind), 100 * acc, held_out, loss);
        else
            printf("validation loss: %.4f nats per %s over %d held-out windows\n", loss,
                   to->tokenizer_path[0] ? "token" : "byte", held_out);
        printf("model: %s  |  loss curves: %s\n", to->out_dir, plot);
    }
    free(plot);
    cm_trainer_free(t);
    cm_dist_free(dist);
    return rc ? 1 : 0;
}
