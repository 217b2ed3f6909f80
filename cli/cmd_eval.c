/* cmamba eval: task accuracy or validation loss of a checkpoint, at any
 * length. The model runs as a recurrence over fixed-size chunks (state
 * carried between them), and task examples are drawn a chunk at a time, so
 * memory does not grow with the length: 2^20 tokens cost what 2^10 do. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cmamba.h"
#include "commands.h"
#include "engine.h"
#include "train/data.h"
#include "train/tasks.h"

static const char *usage =
    "usage: cmamba eval --model DIR (--task NAME [task options] | --data FILE [text options])\n"
    "\n"
    "Task accuracy (the argmax at every scored position) or the mean cross-entropy\n"
    "on the held-out tail of a text file, run through the recurrent inference path\n"
    "in chunks: memory stays constant whatever the length.\n"
    "\n"
    "  --task NAME        selective-copying, copying or induction-heads\n"
    "  --task-len L       context length (default 256; up to 2^24)\n"
    "  --task-tokens N    data tokens to copy (default 16)\n"
    "  --task-vocab V     data symbols (default: from the model's vocabulary)\n"
    "  --examples N       examples to draw (default 100)\n"
    "  --seed S           (default 7: a different stream from training's)\n"
    "  --data FILE        text file, bytes unless --tokenizer FILE\n"
    "  --val-fraction F   held-out tail (default 0.1, as in training)\n"
    "  --seq-len T        tokens per validation window (default 256)\n"
    "  --windows N        windows to score (default: all)\n"
    "  --chunk C          tokens per forward call (default 4096)\n"
    "  --device D         cpu (default) or cuda (GPU inference, its states carried\n"
    "                     from chunk to chunk as on the CPU)\n"
    "  --dtype T          " CLI_DTYPE_HELP("                     ")
    "  --threads N\n";

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* −log softmax(logits)[target] in double */
static double nll(const float *logits, int V, int target) {
    double mx = logits[argmax(logits, V)], sum = 0;
    for (int i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
    return log(sum) + mx - logits[target];
}

typedef struct {
    cli_engine *e; /* one slot: the sequence being scored */
    int chunk, V;
    int32_t *in, *tg;
    float *logits;
} runner;

static int eval_task(runner *r, const cm_task *t, long examples, uint64_t seed, cmamba_error *err) {
    const long L = cm_task_length(t);
    long scored = 0, correct = 0;
    double loss = 0;
    uint64_t rng = seed;
    cm_task_stream *s = malloc(sizeof *s);
    if (!s) return snprintf(err->msg, sizeof err->msg, "out of memory"), -1;
    const double t0 = cli_now_s();
    for (long e = 0; e < examples; e++) {
        cm_task_stream_init(s, t, &rng);
        if (cli_engine_reset(r->e, 0, err)) {
            free(s);
            return -1;
        }
        for (long done = 0; done < L;) {
            const int n = L - done < r->chunk ? (int)(L - done) : r->chunk;
            cm_task_stream_next(s, n, r->in, r->tg);
            if (cli_engine_forward(r->e, 0, r->in, (size_t)n, r->logits, 1, err)) {
                free(s);
                return -1;
            }
            for (int i = 0; i < n; i++) {
                if (r->tg[i] < 0) continue;
                const float *row = r->logits + (size_t)i * r->V;
                scored++;
                correct += argmax(row, r->V) == r->tg[i];
                loss += nll(row, r->V, r->tg[i]);
            }
            done += n;
        }
    }
    const double secs = cli_now_s() - t0;
    free(s);
    printf("%s L=%ld: accuracy %.2f%% (%ld of %ld scored tokens, %ld examples), loss %.4f\n",
           cm_task_name(t->kind), (long)t->seq_len, 100.0 * correct / scored, correct, scored,
           examples, loss / scored);
    fprintf(stderr, "%.0f tokens/s | peak RSS: %.1f MiB\n", (double)L * examples / secs,
            cli_peak_rss_mib());
    return 0;
}

static int eval_text(runner *r, const cm_text_data *d, int T, long windows, cmamba_error *err) {
    const size_t avail = cm_text_val_windows(d, T);
    if (avail == 0)
        return snprintf(err->msg, sizeof err->msg,
                        "the held-out part is shorter than one window of %d tokens", T + 1), -1;
    if (windows <= 0 || (size_t)windows > avail) windows = (long)avail;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(T + 1));
    if (!ids) return snprintf(err->msg, sizeof err->msg, "out of memory"), -1;
    double loss = 0;
    long n = 0;
    for (long w = 0; w < windows; w++) {
        cm_text_val_window(d, (size_t)w, T, ids);
        if (cli_engine_reset(r->e, 0, err)) {
            free(ids);
            return -1;
        }
        for (int done = 0; done < T;) {
            const int k = T - done < r->chunk ? T - done : r->chunk;
            if (cli_engine_forward(r->e, 0, ids + done, (size_t)k, r->logits, 1, err)) {
                free(ids);
                return -1;
            }
            for (int i = 0; i < k; i++) loss += nll(r->logits + (size_t)i * r->V, r->V, ids[done + i + 1]);
            n += k;
            done += k;
        }
    }
    free(ids);
    printf("validation loss %.4f nats per token (%.4f bits) over %ld windows of %d\n", loss / n,
           loss / n / log(2), windows, T);
    return 0;
}

int cmd_eval(int argc, char **argv) {
    const char *model_dir = NULL, *data = NULL, *tok_path = NULL;
    cm_task task = {.kind = CM_TASK_SELECTIVE_COPYING, .seq_len = 256, .n_tokens = 16};
    int have_task = 0, cuda = 0;
    cmamba_dtype dtype = CMAMBA_DTYPE_AUTO;
    long v, examples = 100, seq_len = 256, windows = 0, chunk = 4096, threads = 0;
    double val_fraction = 0.1;
    uint64_t seed = 7;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
#define VALUE() if (!(val = arg_value("eval", argc, argv, &i))) return 2
#define INT_OPT(opt, lo, hi, field) \
    else if (arg_is(a, opt)) { VALUE(); if (arg_int("eval", opt, val, lo, hi, &v)) return 2; field = v; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); return 0; }
        else if (arg_is(a, "--model")) { VALUE(); model_dir = val; }
        else if (arg_is(a, "--data")) { VALUE(); data = val; }
        else if (arg_is(a, "--tokenizer")) { VALUE(); tok_path = val; }
        else if (arg_is(a, "--task")) {
            VALUE();
            if (cm_task_parse(val, &task.kind)) die_usage("eval", "--task: unknown task '%s'", val);
            have_task = 1;
        }
        else if (arg_is(a, "--seed")) { VALUE(); if (arg_u64("eval", "--seed", val, &seed)) return 2; }
        else if (arg_is(a, "--device")) { VALUE(); cuda = cli_device_arg("eval", val); }
        else if (arg_is(a, "--dtype")) { VALUE(); dtype = cli_dtype_arg("eval", val); }
        else if (arg_is(a, "--val-fraction")) {
            VALUE();
            if (arg_float("eval", "--val-fraction", val, 1e-6, 0.9, &val_fraction)) return 2;
        }
        INT_OPT("--task-len", 4, 1 << 24, task.seq_len)
        INT_OPT("--task-tokens", 1, 4096, task.n_tokens)
        INT_OPT("--task-vocab", 2, 1 << 20, task.vocab)
        INT_OPT("--examples", 1, 1L << 30, examples)
        INT_OPT("--seq-len", 1, 1 << 24, seq_len)
        INT_OPT("--windows", 1, 1L << 40, windows)
        INT_OPT("--chunk", 1, 1 << 20, chunk)
        INT_OPT("--threads", 1, 4096, threads)
        else die_usage("eval", "unknown option '%s'", a);
#undef INT_OPT
#undef VALUE
    }
    if (!model_dir) die_usage("eval", "--model is required");
    if (have_task == !!data) die_usage("eval", "give exactly one of --task and --data");
    if (threads) cmamba_set_threads((int)threads);

    cmamba_error err;
    cmamba_model *m = NULL;
    cmamba_tokenizer *tok = NULL;
    cm_text_data text = {0};
    runner r = {0};
    int rc = 1;
    if (cli_model_load(model_dir, cuda, dtype, &m, &err)) goto fail;
    r.V = cmamba_model_config(m)->vocab_size;
    r.chunk = (int)chunk;
    if (have_task) {
        if (!task.vocab) task.vocab = r.V - (task.kind == CM_TASK_INDUCTION ? 1 : 2);
        const char *bad = cm_task_check(&task);
        if (bad) die_usage("eval", "task: %s", bad);
        if (cm_task_model_vocab(&task) != r.V)
            die_usage("eval", "--task-vocab %d needs a model vocabulary of %d, %s has %d",
                      task.vocab, cm_task_model_vocab(&task), model_dir, r.V);
    } else {
        if (tok_path && cmamba_tokenizer_load(tok_path, &tok, &err)) goto fail;
        if (cm_text_load(data, tok, val_fraction, &text, &err)) goto fail;
        if (text.vocab_size > r.V) {
            fprintf(stderr, "cmamba eval: %s has a vocabulary of %d, the data needs %d\n",
                    model_dir, r.V, text.vocab_size);
            goto done;
        }
    }
    r.in = malloc(sizeof(int32_t) * 2 * (size_t)chunk);
    r.tg = r.in ? r.in + chunk : NULL;
    r.logits = malloc(sizeof(float) * (size_t)chunk * r.V);
    if (!r.in || !r.logits) {
        fprintf(stderr, "cmamba eval: out of memory\n");
        goto done;
    }
    if (cli_engine_new(m, cuda, dtype, 1, &r.e, &err)) goto fail;
    if (have_task ? eval_task(&r, &task, examples, seed, &err)
                  : eval_text(&r, &text, (int)seq_len, windows, &err))
        goto fail;
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "cmamba eval: %s\n", err.msg);
done:
    cli_engine_free(r.e);
    free(r.in);
    free(r.logits);
    cm_text_free(&text);
    cmamba_tokenizer_free(tok);
    cmamba_model_free(m);
    return rc;
}
