/* The synthetic tasks: every example has the structure the paper describes,
 * and the chunked stream gives exactly the whole-example draw. */
#include <stdint.h>

#include "test.h"
#include "train/tasks.h"

static void check_copying(const cm_task *t, const int32_t *in, const int32_t *tg) {
    const int L = t->seq_len, n = t->n_tokens, marker = t->vocab + 1;
    int data = 0, prev_pos = -1, ok_order = 1;
    for (int i = 0; i < L; i++) {
        if (in[i] == 0) continue;
        CHECK(in[i] >= 1 && in[i] <= t->vocab);
        /* data tokens appear in the order they must be recalled */
        ok_order &= data < n && in[i] == tg[L + data] && i > prev_pos;
        prev_pos = i;
        data++;
        if (t->kind == CM_TASK_COPYING) CHECK(i < n);
    }
    CHECK_MSG(data == n && ok_order, "%d data tokens in the context, expected %d in order", data, n);
    for (int i = 0; i < L; i++) CHECK(tg[i] == -1);
    for (int j = 0; j < n; j++) CHECK(in[L + j] == marker && tg[L + j] >= 1 && tg[L + j] <= t->vocab);
}

static void check_induction(const cm_task *t, const int32_t *in, const int32_t *tg) {
    const int L = t->seq_len, special = t->vocab;
    int specials = 0, key_after = -1;
    for (int i = 0; i < L; i++) {
        CHECK(in[i] >= 0 && in[i] <= special);
        if (in[i] == special) {
            specials++;
            if (i < L - 1) key_after = in[i + 1];
        }
        if (i < L - 1) CHECK(tg[i] == -1);
    }
    CHECK_MSG(specials == 2, "%d special tokens, expected 2", specials);
    CHECK(in[L - 1] == special && tg[L - 1] == key_after && key_after >= 0 && key_after < special);
}

int main(void) {
    const cm_task tasks[] = {
        {CM_TASK_COPYING, 64, 8, 10, 0},
        {CM_TASK_SELECTIVE_COPYING, 256, 16, 16, 0},
        {CM_TASK_SELECTIVE_COPYING, 20, 20, 3, 0}, /* every position is data */
        {CM_TASK_INDUCTION, 256, 0, 16, 0},
        {CM_TASK_INDUCTION, 4, 0, 2, 0},
    };
    for (size_t k = 0; k < sizeof tasks / sizeof *tasks; k++) {
        const cm_task *t = &tasks[k];
        CHECK(cm_task_check(t) == NULL);
        const int n = cm_task_length(t);
        int32_t *in = malloc(sizeof(int32_t) * n * 4), *tg = in + n, *in2 = tg + n, *tg2 = in2 + n;
        for (int e = 0; e < 200; e++) {
            uint64_t r1 = 1000 + e, r2 = 1000 + e;
            cm_task_sample(t, &r1, in, tg);
            if (t->kind == CM_TASK_INDUCTION) check_induction(t, in, tg);
            else check_copying(t, in, tg);
            int scored = 0;
            for (int i = 0; i < n; i++) scored += tg[i] >= 0;
            CHECK(scored == cm_task_scored(t));
            /* chunks of 7 tokens give the same example */
            cm_task_stream s;
            cm_task_stream_init(&s, t, &r2);
            for (int i = 0; i < n; i += 7) cm_task_stream_next(&s, n - i < 7 ? n - i : 7, in2 + i, tg2 + i);
            CHECK(!memcmp(in, in2, sizeof(int32_t) * n) && !memcmp(tg, tg2, sizeof(int32_t) * n));
            CHECK(r1 == r2);
            /* every next token scored: the recall targets stay, the others
             * become the next input */
            memcpy(tg2, tg, sizeof(int32_t) * n);
            cm_task_score_all(t, in, tg2);
            for (int i = 0; i < n; i++)
                CHECK(tg2[i] == (tg[i] >= 0 ? tg[i] : in[i + 1]) && tg2[i] >= 0);
        }
        free(in);
    }
    const cm_task bad[] = {{CM_TASK_COPYING, 8, 9, 4, 0}, {CM_TASK_INDUCTION, 2, 0, 4, 0},
                           {CM_TASK_SELECTIVE_COPYING, 64, 4, 1, 0}};
    for (size_t k = 0; k < 3; k++) CHECK(cm_task_check(&bad[k]) != NULL);
    return test_summary();
}
