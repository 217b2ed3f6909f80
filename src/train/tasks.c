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
    if (t->kind != CM_TASK_INDUCTION && (t->n_tokens < 1 || t->n_tokens > t->seq_len))
        return "number of tokens to copy must be in [1, sequence length]";
    return NULL;
}

static int below(uint64_t *rng, int n) { return (int)(cm_rng_uniform(rng) * n); }

/* Copying: n data tokens then noise, recalled after the context: the
 * output at the j-th marker must be data token j. Selective copying: the
 * data tokens sit at random positions among the noise, so the model must
 * choose what to remember by content, not by time. */
static void copying(const cm_task *t, int selective, uint64_t *rng, int32_t *in, int32_t *tgt) {
    const int L = t->seq_len, n = t->n_tokens, marker = t->vocab + 1;
    int32_t *data = tgt + L; /* drawn straight into their target slots */
    for (int i = 0; i < L; i++) {
        in[i] = 0;
        tgt[i] = -1;
    }
    for (int j = 0; j < n; j++) {
        data[j] = 1 + below(rng, t->vocab);
        in[L + j] = marker;
    }
    if (selective) {
        /* n distinct positions in increasing order (selection sampling) */
        int placed = 0;
        for (int i = 0; i < L && placed < n; i++)
            if (below(rng, L - i) < n - placed) in[i] = data[placed++];
    } else {
        for (int j = 0; j < n; j++) in[j] = data[j];
    }
}

/* Induction heads: random tokens with the special token followed by a key
 * somewhere; the sequence ends with the special token, whose next token
 * must be that key. */
static void induction(const cm_task *t, uint64_t *rng, int32_t *in, int32_t *tgt) {
    const int L = t->seq_len, special = t->vocab;
    for (int i = 0; i < L; i++) {
        in[i] = below(rng, t->vocab);
        tgt[i] = -1;
    }
    const int key = below(rng, t->vocab), pos = below(rng, L - 3);
    in[pos] = special;
    in[pos + 1] = key;
    in[L - 1] = special;
    tgt[L - 1] = key;
}

void cm_task_sample(const cm_task *t, uint64_t *rng, int32_t *inputs, int32_t *targets) {
    switch (t->kind) {
    case CM_TASK_COPYING: copying(t, 0, rng, inputs, targets); break;
    case CM_TASK_SELECTIVE_COPYING: copying(t, 1, rng, inputs, targets); break;
    case CM_TASK_INDUCTION: induction(t, rng, inputs, targets); break;
    }
}
