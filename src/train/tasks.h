/* The synthetic tasks of the paper (section 4.1, appendix E.1), as
 * generators of (inputs, targets) pairs; a target of −1 is not scored. */
#ifndef CM_TASKS_H
#define CM_TASKS_H

#include <stdint.h>

typedef enum { CM_TASK_COPYING, CM_TASK_SELECTIVE_COPYING, CM_TASK_INDUCTION } cm_task_kind;

typedef struct {
    cm_task_kind kind;
    int seq_len;  /* length of the context before the recall part */
    int n_tokens; /* data tokens to copy (copying tasks) */
    int vocab;    /* data symbols */
    int loss_all; /* training scores every next token (as the H3 and Hyena synthetics
                     did), not only the recall; evaluation scores the recall */
} cm_task;

/* Token ids: copying tasks use 0 = noise, 1..vocab = data, vocab+1 = the
 * recall marker; induction uses 0..vocab−1 = data, vocab = the special
 * token. */
int cm_task_model_vocab(const cm_task *t);
/* Length of one example (inputs and targets). */
int cm_task_length(const cm_task *t);
/* Number of scored positions per example. */
int cm_task_scored(const cm_task *t);
/* Checks sizes; returns NULL or a message. */
const char *cm_task_check(const cm_task *t);

/* Draws one example: inputs and targets both of cm_task_length(t). */
void cm_task_sample(const cm_task *t, uint64_t *rng, int32_t *inputs, int32_t *targets);

/* Training targets of an example drawn by cm_task_sample when t->loss_all:
 * every unscored position gets the next input token as its target. */
void cm_task_score_all(const cm_task *t, const int32_t *inputs, int32_t *targets);

/* The same example a chunk at a time, in constant memory: init, then
 * cm_task_stream_next until cm_task_length(t) tokens are out. The stream
 * draws from *rng as it goes. */
enum { CM_TASK_MAX_COPY = 4096 };
typedef struct {
    cm_task task;
    uint64_t *rng;
    long pos;                        /* tokens produced */
    int placed;                      /* data tokens placed (selective copying) */
    int32_t data[CM_TASK_MAX_COPY];  /* tokens to copy */
    int32_t key;                     /* induction: the key ... */
    long key_pos;                    /* ... and where the special token before it sits */
} cm_task_stream;

void cm_task_stream_init(cm_task_stream *s, const cm_task *t, uint64_t *rng);
void cm_task_stream_next(cm_task_stream *s, int n, int32_t *inputs, int32_t *targets);

int cm_task_parse(const char *name, cm_task_kind *kind);
const char *cm_task_name(cm_task_kind kind);

#endif
