#include "train/tasks.h"

#include <string.h>

#include "rng.h"

static const char *names[] = {"copying", "selective-copying", "induction-heads"};

int cm_task_parse(const char *name, cm_task_kind *kind) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, names[i])) { *kind = (cm_task_kind)i; return 0; }
    return -1;
}

const char *cm_task_name(cm_task_kind kind) { return names[kind]; }

int cm_task_model_vocab(const cm_task *t) {
    return t->kind == CM_TASK_INDUCTION ? t->vocab + 1 : t->vocab + 2;
}

int cm_task_length(const cm_task *t) {
    return t->kind == CM_TASK_INDUCTION ? t->seq_len : t->seq_len + t->n_tokens;
}

int cm_task_scored(const cm_task *t) { return t->kind == CM_TASK_INDUCTION ? 1 : t->n_tokens; }

const char *cm_task_check(const cm_task *t) {
    if (t->vocab < 2 || t->vocab > 1 << 20) return "vocabulary must be in [2, 2^20]";
    if (t->seq_len < 4 || t->seq_len > 1 << 24) return "sequence length must be in [4, 2^24]";
    if (t->kind != CM_TASK_INDUCTION &&
        (t->n_tokens < 1 || t->n_tokens > t->seq_len || t->n_tokens > CM_TASK_MAX_COPY))
        return "number of tokens to copy must be in [1, min(sequence length, 4096)]";
    return NULL;
}

static int below(uint64_t *rng, int n) { return (int)(cm_rng_uniform(rng) * n); }

/* Every task is drawn left to right, so that an example of any length can
 * be produced a chunk at a time in constant memory (evaluation at 2^20
 * tokens). What must be known in advance is drawn at the start: the data
 * tokens of the copying tasks, the position and key of induction heads. */
void cm_task_stream_init(cm_task_stream *s, const cm_task *t, uint64_t *rng) {
    s->task = *t;
    s->rng = rng;
    s->pos = 0;
    s->placed = 0;
    if (t->kind == CM_TASK_INDUCTION) {
        s->key = below(rng, t->vocab);
        s->key_pos = below(rng, t->seq_len - 3);
    } else {
        for (int j = 0; j < t->n_tokens && j < CM_TASK_MAX_COPY; j++) s->data[j] = 1 + below(rng, t->vocab);
    }
}

/* Copying: n data tokens then noise, recalled after the context: the
 * output at the j-th marker must be data token j. Selective copying: the
 * data tokens sit at random positions among the noise (chosen one position
 * at a time by selection sampling: each of the remaining positions with the
 * probability still needed), so the model must choose what to remember by
 * content, not by time. */
static void copying_token(cm_task_stream *s, int selective, int32_t *in, int32_t *tgt) {
    const cm_task *t = &s->task;
    const long i = s->pos, L = t->seq_len, n = t->n_tokens;
    *tgt = -1;
    if (i >= L) {
        *in = t->vocab + 1;
        *tgt = s->data[i - L];
    } else if (selective) {
        int take = s->placed < n && below(s->rng, (int)(L - i)) < n - s->placed;
        *in = take ? s->data[s->placed++] : 0;
    } else {
        *in = i < n ? s->data[i] : 0;
    }
}

/* Induction heads: random tokens with the special token followed by the key
 * once; the sequence ends with the special token, whose next token must be
 * that key. */
static void induction_token(cm_task_stream *s, int32_t *in, int32_t *tgt) {
    const cm_task *t = &s->task;
    const long i = s->pos, L = t->seq_len;
    const int32_t drawn = below(s->rng, t->vocab);
    *tgt = -1;
    if (i == s->key_pos || i == L - 1) *in = t->vocab;
    else if (i == s->key_pos + 1) *in = s->key;
    else *in = drawn;
    if (i == L - 1) *tgt = s->key;
}

void cm_task_stream_next(cm_task_stream *s, int n, int32_t *inputs, int32_t *targets) {
    for (int k = 0; k < n; k++, s->pos++) {
        if (s->task.kind == CM_TASK_INDUCTION) induction_token(s, &inputs[k], &targets[k]);
        else copying_token(s, s->task.kind == CM_TASK_SELECTIVE_COPYING, &inputs[k], &targets[k]);
    }
}

void cm_task_score_all(const cm_task *t, const int32_t *inputs, int32_t *targets) {
    const int n = cm_task_length(t);
    for (int i = 0; i + 1 < n; i++)
        if (targets[i] < 0) targets[i] = inputs[i + 1];
}

void cm_task_sample(const cm_task *t, uint64_t *rng, int32_t *inputs, int32_t *targets) {
    cm_task_stream s;
    cm_task_stream_init(&s, t, rng);
    cm_task_stream_next(&s, cm_task_length(t), inputs, targets);
}
