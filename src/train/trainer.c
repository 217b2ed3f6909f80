#include "train/trainer.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "dist/dist.h"
#include "io/config.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/plot.h"
#include "train/train_model.h"

/* Where the validation examples of a task come from: a generator of their
 * own, so the held-out set is the same at every validation and never drawn
 * from the training stream. */
#define VAL_SEED_MIX 0x6a09e667f3bcc909ULL

typedef struct {
    float *v;
    size_t n, cap;
} series;

/* The backward's hook on the GPU in a group: each range of gradients is
 * summed over the group as soon as the backward has finished it, while the
 * layers below are still being differentiated. */
typedef struct {
    const cm_cuda_backend *cuda;
    cm_cuda_group *group;
    void *stream; /* the backward's, which the optimizer must make wait */
    int failed;
    cmamba_error err;
} grad_sums;

static void sum_ready_grads(void *ctx, float *grads, size_t offset, size_t count, void *stream) {
    grad_sums *s = ctx;
    s->stream = stream;
    if (!s->failed &&
        s->cuda->group_allreduce_after(s->group, grads + offset, count, stream, &s->err))
        s->failed = 1;
}

struct cm_trainer {
    cm_trainer_options o;
    cm_train_model *m;
    cm_adamw opt;
    cm_text_data text; /* when !o.use_task */
    uint64_t rng;      /* the training data stream */
    int T;             /* tokens per sequence */
    int32_t *inputs, *targets; /* (world · batch, T): the group's whole batch */
    cm_dist *dist;             /* data-parallel group; NULL: this process alone */
    int world, rank;
    const cm_cuda_backend *cuda; /* the GPU's functions when it trains (NULL: the CPU) */
    cm_cuda_train *gpu;          /* the model there; m, opt then mirror it at checkpoints */
    cm_cuda_group *group;        /* its gradient sums in a data-parallel group */
    grad_sums sums;
    char device[256]; /* cm_trainer_device's text */
    series loss, val_step, val_loss, val_acc;
};

static int series_push(series *s, float v, cmamba_error *err) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        float *p = realloc(s->v, cap * sizeof *p);
        if (!p) return cm_fail(err, "out of memory");
        s->v = p;
        s->cap = cap;
    }
    s->v[s->n++] = v;
    return 0;
}

void cm_trainer_defaults(cm_trainer_options *o) {
    memset(o, 0, sizeof *o);
    o->model = (cmamba_config){.d_model = 64, .n_layer = 2, .d_state = 16, .d_conv = 4,
                               .expand = 2, .eps = 1e-5f, .use_conv_bias = 1,
                               .tie_embeddings = 1, .layout = CMAMBA_LAYOUT_HF};
    o->use_task = 1;
    o->task = (cm_task){.kind = CM_TASK_SELECTIVE_COPYING, .seq_len = 256, .n_tokens = 16,
                        .vocab = 16};
    o->val_fraction = 0.1;
    o->opt = (cm_adamw_params){.lr = 3e-3f, .min_lr = 3e-4f, .beta1 = 0.9f, .beta2 = 0.95f,
                               .eps = 1e-8f, .weight_decay = 0.1f, .clip = 1.0f,
                               .warmup_steps = 50, .total_steps = 1000};
    o->batch = 32;
    o->seq_len = 256;
    o->accum = 1;
    o->steps = 1000;
    o->seed = 1;
    o->eval_every = 200;
    o->save_every = 500;
    o->eval_batches = 8;
    snprintf(o->out_dir, sizeof o->out_dir, "runs/selective-copying");
}

const cm_trainer_options *cm_trainer_opts(const cm_trainer *t) { return &t->o; }
long cm_trainer_step(const cm_trainer *t) { return t->opt.step; }

/* ---- options <-> trainer.json ------------------------------------------------ */

static cJSON *options_json(const cm_trainer_options *o) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "d_model", o->model.d_model);
    cJSON_AddNumberToObject(j, "n_layer", o->model.n_layer);
    cJSON_AddNumberToObject(j, "d_state", o->model.d_state);
    cJSON_AddNumberToObject(j, "d_conv", o->model.d_conv);
    cJSON_AddNumberToObject(j, "expand", o->model.expand);
    cJSON_AddNumberToObject(j, "dt_rank", o->model.dt_rank);
    cJSON_AddNumberToObject(j, "tie_embeddings", o->model.tie_embeddings);
    cJSON_AddStringToObject(j, "ssm", o->model.ssm == CMAMBA_SSM_S4D ? "s4d" : "s6");
    cJSON_AddNumberToObject(j, "use_task", o->use_task);
    cJSON_AddStringToObject(j, "task", cm_task_name(o->task.kind));
    cJSON_AddNumberToObject(j, "task_seq_len", o->task.seq_len);
    cJSON_AddNumberToObject(j, "task_tokens", o->task.n_tokens);
    cJSON_AddNumberToObject(j, "task_vocab", o->task.vocab);
    cJSON_AddStringToObject(j, "task_loss", o->task.loss_all ? "all" : "recall");
    cJSON_AddStringToObject(j, "data", o->data_path);
    cJSON_AddStringToObject(j, "tokenizer", o->tokenizer_path);
    cJSON_AddNumberToObject(j, "val_fraction", o->val_fraction);
    cJSON_AddNumberToObject(j, "lr", o->opt.lr);
    cJSON_AddNumberToObject(j, "min_lr", o->opt.min_lr);
    cJSON_AddNumberToObject(j, "weight_decay", o->opt.weight_decay);
    cJSON_AddNumberToObject(j, "clip", o->opt.clip);
    cJSON_AddNumberToObject(j, "warmup", (double)o->opt.warmup_steps);
    cJSON_AddNumberToObject(j, "batch", o->batch);
    cJSON_AddNumberToObject(j, "seq_len", o->seq_len);
    cJSON_AddNumberToObject(j, "accum", o->accum);
    cJSON_AddNumberToObject(j, "steps", (double)o->steps);
    char seed[24];
    snprintf(seed, sizeof seed, "%" PRIu64, o->seed);
    cJSON_AddStringToObject(j, "seed", seed);
    cJSON_AddNumberToObject(j, "eval_every", (double)o->eval_every);
    cJSON_AddNumberToObject(j, "eval_batches", o->eval_batches);
    cJSON_AddNumberToObject(j, "save_every", (double)o->save_every);
    return j;
}

/* Number field `key` of j, or an error naming file and key. */
static int num(const cJSON *j, const char *key, const char *file, double *v, cmamba_error *err) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsNumber(f)) return cm_fail(err, "%s: missing or non-numeric '%s'", file, key);
    *v = f->valuedouble;
    return 0;
}

static int str(const cJSON *j, const char *key, const char *file, char *out, size_t cap,
               cmamba_error *err) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsString(f) || strlen(f->valuestring) >= cap)
        return cm_fail(err, "%s: missing or overlong string '%s'", file, key);
    memcpy(out, f->valuestring, strlen(f->valuestring) + 1);
    return 0;
}

static int options_parse(const cJSON *j, const char *file, cm_trainer_options *o,
                         cmamba_error *err) {
    cm_trainer_defaults(o);
    double v[24];
    static const char *const keys[] = {
        "d_model", "n_layer", "d_state", "d_conv", "expand", "dt_rank", "tie_embeddings",
        "use_task", "task_seq_len", "task_tokens", "task_vocab", "val_fraction", "lr", "min_lr",
        "weight_decay", "clip", "warmup", "batch", "seq_len", "accum", "steps", "eval_every",
        "eval_batches", "save_every"};
    for (int i = 0; i < 24; i++)
        if (num(j, keys[i], file, &v[i], err)) return -1;
    char task[64], seed[24], ssm[8], task_loss[8];
    /* absent in checkpoints from before S4D and before --task-loss */
    snprintf(ssm, sizeof ssm, "s6");
    snprintf(task_loss, sizeof task_loss, "recall");
    if (cJSON_GetObjectItemCaseSensitive(j, "ssm") && str(j, "ssm", file, ssm, sizeof ssm, err))
        return -1;
    if (cJSON_GetObjectItemCaseSensitive(j, "task_loss") &&
        str(j, "task_loss", file, task_loss, sizeof task_loss, err))
        return -1;
    if (str(j, "task", file, task, sizeof task, err) ||
        str(j, "data", file, o->data_path, sizeof o->data_path, err) ||
        str(j, "tokenizer", file, o->tokenizer_path, sizeof o->tokenizer_path, err) ||
        str(j, "seed", file, seed, sizeof seed, err))
        return -1;
    if (cm_task_parse(task, &o->task.kind)) return cm_fail(err, "%s: unknown task '%s'", file, task);
    o->model.d_model = (int)v[0];
    o->model.n_layer = (int)v[1];
    o->model.d_state = (int)v[2];
    o->model.d_conv = (int)v[3];
    o->model.expand = (int)v[4];
    o->model.dt_rank = (int)v[5];
    o->model.tie_embeddings = (int)v[6];
    o->model.ssm = strcmp(ssm, "s4d") ? CMAMBA_SSM_S6 : CMAMBA_SSM_S4D;
    o->use_task = (int)v[7];
    o->task.seq_len = (int)v[8];
    o->task.n_tokens = (int)v[9];
    o->task.vocab = (int)v[10];
    o->task.loss_all = !strcmp(task_loss, "all");
    o->val_fraction = v[11];
    o->opt.lr = (float)v[12];
    o->opt.min_lr = (float)v[13];
    o->opt.weight_decay = (float)v[14];
    o->opt.clip = (float)v[15];
    o->opt.warmup_steps = (long)v[16];
    o->batch = (int)v[17];
    o->seq_len = (int)v[18];
    o->accum = (int)v[19];
    o->steps = (long)v[20];
    o->eval_every = (long)v[21];
    o->eval_batches = (int)v[22];
    o->save_every = (long)v[23];
    o->seed = strtoull(seed, NULL, 10);
    o->opt.total_steps = o->steps;
    return 0;
}

static cJSON *series_json(const series *s) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < s->n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(s->v[i]));
    return a;
}

static int series_parse(const cJSON *j, const char *key, const char *file, series *s, size_t n,
                        cmamba_error *err) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, key), *e;
    if (!cJSON_IsArray(a)) return cm_fail(err, "%s: missing array '%s'", file, key);
    cJSON_ArrayForEach(e, a) {
        if (s->n == n) break;
        if (!cJSON_IsNumber(e)) return cm_fail(err, "%s: non-number in '%s'", file, key);
        if (series_push(s, (float)e->valuedouble, err)) return -1;
    }
    return 0;
}

static char *trainer_json(const cm_trainer *t) {
    cJSON *j = cJSON_CreateObject();
    char rng[24];
    snprintf(rng, sizeof rng, "%" PRIu64, t->rng);
    cJSON_AddStringToObject(j, "format", "cmamba-trainer");
    cJSON_AddNumberToObject(j, "step", (double)t->opt.step);
    cJSON_AddStringToObject(j, "rng", rng);
    cJSON_AddItemToObject(j, "options", options_json(&t->o));
    cJSON_AddItemToObject(j, "loss", series_json(&t->loss));
    cJSON_AddItemToObject(j, "val_step", series_json(&t->val_step));
    cJSON_AddItemToObject(j, "val_loss", series_json(&t->val_loss));
    cJSON_AddItemToObject(j, "val_accuracy", series_json(&t->val_acc));
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

/* ---- set-up ------------------------------------------------------------------- */

static const char *options_check(const cm_trainer_options *o) {
    if (o->batch < 1 || o->batch > 1 << 16) return "--batch must be in [1, 65536]";
    if (o->accum < 1 || o->accum > 1 << 16) return "--accum must be in [1, 65536]";
    if (o->steps < 1) return "--steps must be at least 1";
    if (!o->use_task && (o->seq_len < 1 || o->seq_len > 1 << 24))
        return "--seq-len must be in [1, 2^24]";
    if (o->use_task) return cm_task_check(&o->task);
    return NULL;
}

static int batch_buffers(cm_trainer *t, cmamba_error *err) {
    const size_t n = (size_t)t->world * t->o.batch * t->T;
    free(t->inputs);
    free(t->targets);
    t->inputs = cm_malloc(sizeof(int32_t) * n, err);
    t->targets = cm_malloc(sizeof(int32_t) * n, err);
    return t->inputs && t->targets ? 0 : -1;
}

/* Data, buffers, optimizer: everything but the parameters. */
static int setup(cm_trainer *t, cmamba_error *err) {
    const cm_trainer_options *o = &t->o;
    const char *bad = options_check(o);
    if (bad) return cm_fail(err, "train: %s", bad);
    if (o->use_task) {
        t->T = cm_task_length(&o->task);
    } else {
        cmamba_tokenizer *tok = NULL;
        if (o->tokenizer_path[0] && cmamba_tokenizer_load(o->tokenizer_path, &tok, err)) return -1;
        int rc = cm_text_load(o->data_path, tok, o->val_fraction, &t->text, err);
        cmamba_tokenizer_free(tok);
        if (rc) return -1;
        t->T = o->seq_len;
        if (t->text.n_train < (size_t)t->T + 1)
            return cm_fail(err, "%s: %zu training tokens, fewer than one window of %d",
                           o->data_path, t->text.n_train, t->T + 1);
        if (cm_text_val_windows(&t->text, t->T) == 0)
            return cm_fail(err, "%s: the validation part is shorter than one window of %d tokens",
                           o->data_path, t->T + 1);
    }
    t->world = 1;
    if (batch_buffers(t, err)) return -1;
    return cm_adamw_init(&t->opt, &o->opt, t->m->desc, t->m->n_tensors, err);
}

/* The model config of o once the data fixes the vocabulary. */
static int model_config(cm_trainer_options *o, int vocab, cmamba_error *err) {
    cmamba_config *c = &o->model;
    c->vocab_size = vocab;
    if (c->d_model < 1 || c->n_layer < 1 || c->expand < 1 || c->d_state < 1 || c->d_conv < 1)
        return cm_fail(err, "train: model sizes must be at least 1");
    c->d_inner = c->expand * c->d_model;
    if (c->dt_rank <= 0) c->dt_rank = (c->d_model + 15) / 16;
    return 0;
}

int cm_trainer_new(const cm_trainer_options *o, cm_trainer **out, cmamba_error *err) {
    cm_trainer *t = cm_calloc(1, sizeof *t, err);
    if (!(*out = t)) return -1;
    t->o = *o;
    t->o.opt.total_steps = o->steps;
    int vocab = 256;
    if (o->use_task) {
        const char *bad = cm_task_check(&o->task);
        if (bad) return cm_fail(err, "train: %s", bad);
        vocab = cm_task_model_vocab(&o->task);
    } else if (o->tokenizer_path[0]) {
        cmamba_tokenizer *tok;
        if (cmamba_tokenizer_load(o->tokenizer_path, &tok, err)) return -1;
        vocab = cmamba_tokenizer_vocab_size(tok);
        cmamba_tokenizer_free(tok);
    }
    if (model_config(&t->o, vocab, err)) return -1;
    if (cm_train_model_new(&t->o.model, o->seed, &t->m, err)) return -1;
    t->rng = o->seed ^ 0xd1b54a32d192ed03ULL;
    return setup(t, err);
}

int cm_trainer_resume(const char *out_dir, cm_trainer **out, cmamba_error *err) {
    cm_trainer *t = cm_calloc(1, sizeof *t, err);
    char *ckpt = NULL, *path = NULL, *text = NULL;
    cJSON *j = NULL;
    int rc = -1;
    if (!(*out = t)) return -1;
    if (cm_ckpt_latest(out_dir, &ckpt, err)) goto done;
    if (!(path = cm_path_join(ckpt, "trainer.json"))) goto oom;
    if (cm_read_file(path, 1 << 30, &text, NULL, err)) goto done;
    if (!(j = cJSON_Parse(text))) {
        cm_fail(err, "%s: not valid JSON", path);
        goto done;
    }
    double step = 0;
    char rng[24];
    if (num(j, "step", path, &step, err) || str(j, "rng", path, rng, sizeof rng, err) ||
        options_parse(cJSON_GetObjectItemCaseSensitive(j, "options"), path, &t->o, err))
        goto done;
    snprintf(t->o.out_dir, sizeof t->o.out_dir, "%s", out_dir);
    if (cm_train_model_load(ckpt, &t->m, err)) goto done;
    t->o.model = t->m->cfg;
    if (setup(t, err) || cm_ckpt_load_optimizer(ckpt, t->m, &t->opt, err)) goto done;
    t->opt.step = (long)step;
    t->rng = strtoull(rng, NULL, 10);
    if (series_parse(j, "loss", path, &t->loss, (size_t)step, err) ||
        series_parse(j, "val_step", path, &t->val_step, SIZE_MAX, err) ||
        series_parse(j, "val_loss", path, &t->val_loss, SIZE_MAX, err) ||
        series_parse(j, "val_accuracy", path, &t->val_acc, SIZE_MAX, err))
        goto done;
    rc = 0;
    goto done;
oom:
    cm_fail(err, "out of memory");
done:
    cJSON_Delete(j);
    free(text);
    free(path);
    free(ckpt);
    return rc;
}

void cm_trainer_free(cm_trainer *t) {
    if (!t) return;
    if (t->gpu) t->cuda->train_free(t->gpu);
    if (t->group) t->cuda->group_free(t->group);
    cm_train_model_free(t->m);
    cm_adamw_free(&t->opt);
    if (!t->o.use_task) cm_text_free(&t->text);
    free(t->inputs);
    free(t->targets);
    free(t->loss.v);
    free(t->val_step.v);
    free(t->val_loss.v);
    free(t->val_acc.v);
    free(t);
}

/* ---- batches ------------------------------------------------------------------ */

/* ids (B, T+1) split into next-token inputs and targets (B, T). */
static void split_windows(const int32_t *ids, int B, int T, int32_t *in, int32_t *tg) {
    for (int s = 0; s < B; s++) {
        memcpy(in + (size_t)s * T, ids + (size_t)s * (T + 1), sizeof(int32_t) * T);
        memcpy(tg + (size_t)s * T, ids + (size_t)s * (T + 1) + 1, sizeof(int32_t) * T);
    }
}

/* Batch i of the held-out set, or (rng non-NULL) the next training batch;
 * the whole group's, world · batch sequences, which every rank draws alike
 * (cheap) and takes its own rows of, so that a group sees the batches of one
 * process with world times the batch. */
static int fill_batch(cm_trainer *t, uint64_t *rng, size_t val_index, cmamba_error *err) {
    const int B = t->world * t->o.batch, T = t->T;
    if (t->o.use_task) {
        uint64_t vr = t->o.seed ^ VAL_SEED_MIX;
        if (!rng) {
            /* validation batch i: skip the examples of the batches before it */
            for (size_t i = 0; i < val_index * B; i++) cm_task_sample(&t->o.task, &vr, t->inputs, t->targets);
            rng = &vr;
        }
        const int train_all = t->o.task.loss_all && rng != &vr;
        for (int s = 0; s < B; s++) {
            int32_t *in = t->inputs + (size_t)s * T, *tg = t->targets + (size_t)s * T;
            cm_task_sample(&t->o.task, rng, in, tg);
            if (train_all) cm_task_score_all(&t->o.task, in, tg);
        }
        return 0;
    }
    int32_t *ids = cm_malloc(sizeof(int32_t) * (size_t)B * (T + 1), err);
    if (!ids) return -1;
    if (rng) {
        cm_text_train_batch(&t->text, rng, B, T, ids);
    } else {
        /* windows spread evenly over the validation part */
        const size_t n = cm_text_val_windows(&t->text, T), want = (size_t)t->o.eval_batches * B;
        const size_t stride = n > want ? n / want : 1;
        for (int s = 0; s < B; s++)
            cm_text_val_window(&t->text, ((val_index * B + s) * stride) % n, T,
                               ids + (size_t)s * (T + 1));
    }
    split_windows(ids, B, T, t->inputs, t->targets);
    free(ids);
    return 0;
}

/* cm_train_run on the trainer's device, over B sequences of the batch length */
static int run_batch(cm_trainer *t, const int32_t *inputs, const int32_t *targets, int B,
                     float grad_weight, cm_train_stats *st, cmamba_error *err) {
    if (t->gpu) return t->cuda->train_run(t->gpu, inputs, targets, B, t->T, grad_weight, st, err);
    return cm_train_run(t->m, inputs, targets, B, t->T, grad_weight, st, err);
}

/* The host's parameters and moments := the GPU's (before they are saved). */
static int fetch_state(cm_trainer *t, cmamba_error *err) {
    if (!t->gpu) return 0;
    return t->cuda->train_copy(t->gpu, CM_CUDA_PARAMS, 0, t->m->params, err) ||
                   t->cuda->train_copy(t->gpu, CM_CUDA_ADAM_M, 0, t->opt.m, err) ||
                   t->cuda->train_copy(t->gpu, CM_CUDA_ADAM_V, 0, t->opt.v, err)
               ? -1 : 0;
}

int cm_trainer_set_cuda(cm_trainer *t, const cm_cuda_backend *cuda, int bf16, cmamba_error *err) {
    t->cuda = cuda;
    /* the group first: it picks this rank's GPU */
    if (t->dist && cuda->group_new(t->dist, &t->group, err)) return -1;
    t->sums = (grad_sums){.cuda = cuda, .group = t->group};
    if (cuda->train_new(&t->m->cfg, t->m->params, bf16, &t->gpu, err)) return -1;
    /* a resumed run's moments */
    return cuda->train_copy(t->gpu, CM_CUDA_ADAM_M, 1, t->opt.m, err) ||
                   cuda->train_copy(t->gpu, CM_CUDA_ADAM_V, 1, t->opt.v, err)
               ? -1 : 0;
}

const char *cm_trainer_device(cm_trainer *t) {
    if (!t->gpu) return "cpu";
    snprintf(t->device, sizeof t->device, "%s%s%s", t->cuda->train_describe(t->gpu),
             t->group ? ", gradients summed by " : "",
             t->group ? t->cuda->group_describe(t->group) : "");
    return t->device;
}

int cm_trainer_validate(cm_trainer *t, int batches, double *loss, double *accuracy,
                        cmamba_error *err) {
    double sum = 0;
    long scored = 0, correct = 0;
    for (int i = 0; i < batches; i++) {
        cm_train_stats st;
        if (fill_batch(t, NULL, (size_t)i, err) ||
            run_batch(t, t->inputs, t->targets, t->world * t->o.batch, 0.0f, &st, err))
            return -1;
        sum += st.loss_sum;
        scored += st.scored;
        correct += st.correct;
    }
    *loss = scored ? sum / scored : 0;
    *accuracy = t->o.use_task && scored ? (double)correct / scored : -1;
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int save(cm_trainer *t, cmamba_error *err) {
    if (fetch_state(t, err)) return -1;
    char *json = trainer_json(t);
    if (!json) return cm_fail(err, "out of memory");
    int rc = cm_ckpt_save(t->o.out_dir, t->opt.step, t->m, &t->opt, json, err);
    free(json);
    return rc;
}

/* A BPE model's folder gets its tokenizer.json, so that `cmamba generate
 * --model DIR --prompt ...` works on it as on a downloaded checkpoint. */
static int copy_tokenizer(const cm_trainer_options *o, cmamba_error *err) {
    char *text = NULL, *dst = cm_path_join(o->out_dir, "tokenizer.json");
    size_t len = 0;
    cm_atomic_file *f = NULL;
    int rc = -1;
    if (!dst) return cm_fail(err, "out of memory");
    if (cm_read_file(o->tokenizer_path, (size_t)1 << 30, &text, &len, err) ||
        cm_atomic_open(dst, &f, err))
        goto done;
    if (cm_atomic_write(f, text, len, err)) {
        cm_atomic_abort(f);
        goto done;
    }
    rc = cm_atomic_commit(f, err);
done:
    free(text);
    free(dst);
    return rc;
}

int cm_trainer_set_dist(cm_trainer *t, cm_dist *d, cmamba_error *err) {
    t->dist = d;
    t->world = d ? cm_dist_world(d) : 1;
    t->rank = d ? cm_dist_rank(d) : 0;
    return batch_buffers(t, err);
}

static long count_scored(const int32_t *targets, size_t n) {
    long k = 0;
    for (size_t i = 0; i < n; i++) k += targets[i] >= 0;
    return k;
}

/* One micro-batch of this rank. Each rank's gradient is weighted by its
 * share of the group's scored targets, so that the sum over ranks is the
 * gradient of the mean over the whole batch; the loss statistics are summed
 * over the group into stats (loss sum, scored, correct). */
static int micro_step(cm_trainer *t, double stats[3], cmamba_error *err) {
    const cm_trainer_options *o = &t->o;
    const size_t rows = (size_t)o->batch * t->T, mine = (size_t)t->rank * rows;
    if (fill_batch(t, &t->rng, 0, err)) return -1;
    const long all = count_scored(t->targets, rows * t->world);
    const long own = count_scored(t->targets + mine, rows);
    const float weight = all ? (float)((double)own / all / o->accum) : 1.0f / o->accum;
    cm_train_stats st;
    if (run_batch(t, t->inputs + mine, t->targets + mine, o->batch, weight, &st, err))
        return -1;
    stats[0] = st.loss_sum, stats[1] = (double)st.scored, stats[2] = (double)st.correct;
    return t->dist ? cm_dist_allreduce_sum(t->dist, stats, 3, CM_DIST_F64, err) : 0;
}

int cm_trainer_run(cm_trainer *t, cm_trainer_report report, void *ctx, cmamba_error *err) {
    const cm_trainer_options *o = &t->o;
    const double t0 = now_s();
    const long first = t->opt.step;
    for (long step = first; step < o->steps; step++) {
        if (t->gpu ? t->cuda->train_zero_grad(t->gpu, err) : (cm_train_zero_grad(t->m), 0))
            return -1;
        double loss = 0;
        long scored = 0, correct = 0;
        for (int a = 0; a < o->accum; a++) {
            double stats[3];
            /* only the last micro-batch completes the gradients */
            if (t->group && a == o->accum - 1)
                t->cuda->train_set_hook(t->gpu, sum_ready_grads, &t->sums);
            const int rc = micro_step(t, stats, err);
            if (t->group) t->cuda->train_set_hook(t->gpu, NULL, NULL);
            if (rc) return -1;
            loss += (stats[1] > 0 ? stats[0] / stats[1] : 0) / o->accum;
            scored += (long)stats[1];
            correct += (long)stats[2];
        }
        if (t->group) {
            if (t->sums.failed) return cm_fail(err, "%s", t->sums.err.msg);
            if (t->cuda->group_join(t->group, t->sums.stream, err)) return -1;
        } else if (t->world > 1 &&
                   cm_dist_allreduce_sum(t->dist, t->m->grads, t->m->n_params, CM_DIST_F32, err)) {
            return -1;
        }
        cm_trainer_progress p = {.step = step + 1, .steps = o->steps, .loss = (float)loss,
                                 .lr = cm_lr_at(&o->opt, step)};
        if (t->gpu) {
            if (t->cuda->train_adamw(t->gpu, &t->opt.p, t->opt.step, &p.grad_norm, err)) return -1;
            t->opt.step++;
        } else {
            p.grad_norm = cm_adamw_step(&t->opt, t->m->params, t->m->grads);
        }
        if (!isfinite(p.loss)) return cm_fail(err, "train: loss is %g at step %ld", p.loss, step + 1);
        if (series_push(&t->loss, p.loss, err)) return -1;
        p.accuracy = o->use_task && scored ? (double)correct / scored : -1;
        p.elapsed_s = now_s() - t0;
        p.tokens_per_s =
            (double)(step + 1 - first) * o->accum * t->world * o->batch * t->T / p.elapsed_s;
        const int last = step + 1 == o->steps;
        if (t->rank == 0 && ((o->eval_every > 0 && (step + 1) % o->eval_every == 0) || last)) {
            if (cm_trainer_validate(t, o->eval_batches, &p.val_loss, &p.val_accuracy, err)) return -1;
            p.has_val = 1;
            if (series_push(&t->val_step, (float)(step + 1), err) ||
                series_push(&t->val_loss, (float)p.val_loss, err) ||
                series_push(&t->val_acc, (float)p.val_accuracy, err))
                return -1;
        }
        /* every rank holds the same weights: rank 0 writes them */
        if (t->rank == 0 && ((o->save_every > 0 && (step + 1) % o->save_every == 0) || last) &&
            save(t, err))
            return -1;
        if (report && t->rank == 0) report(ctx, &p);
    }
    if (t->rank != 0) return 0;
    if (fetch_state(t, err) || cm_model_save(o->out_dir, t->m, err)) return -1;
    return o->tokenizer_path[0] ? copy_tokenizer(o, err) : 0;
}

int cm_trainer_plot(const cm_trainer *t, const char *path, cmamba_error *err) {
    const size_t n = t->loss.n;
    float *x = cm_malloc(sizeof(float) * (2 * n + 1), err);
    if (!x) return -1;
    float *smooth = x + n;
    /* a trailing mean over 1% of the run (at least 1 step) shows the trend
     * through the noise of single batches */
    const size_t w = n / 100 > 1 ? n / 100 : 1;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(i + 1);
        sum += t->loss.v[i] - (i >= w ? t->loss.v[i - w] : 0.0f);
        smooth[i] = (float)(sum / (i + 1 < w ? i + 1 : w));
    }
    const cm_plot_series s[] = {
        {"train (mean of the last 1% of steps)", x, smooth, n, "#1f77b4"},
        {"validation", t->val_step.v, t->val_loss.v, t->val_step.n, "#d62728"},
    };
    char title[1200];
    if (t->o.use_task)
        snprintf(title, sizeof title, "%s, L = %d: cross-entropy of the scored tokens",
                 cm_task_name(t->o.task.kind), t->o.task.seq_len);
    else
        snprintf(title, sizeof title, "%s: cross-entropy per %s", t->o.data_path,
                 t->o.tokenizer_path[0] ? "token" : "byte");
    const cm_plot_axes axes = {title, "step", "loss (nats)", 1};
    int rc = cm_plot_svg(path, &axes, s, 2, err);
    free(x);
    return rc;
}
