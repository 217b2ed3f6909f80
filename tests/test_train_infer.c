/* The model that training builds is the model that inference runs: a
 * checkpoint written by cm_model_save loads back bit for bit, and the
 * inference path's logits (whole sequence and recurrent steps) give the
 * training loss. For S6 and for the S4D ablation layer. */
#include <math.h>
#include <stdint.h>
#include <unistd.h>

#include "cmamba.h"
#include "rng.h"
#include "fixtures.h"
#include "test.h"
#include "train/checkpoint.h"
#include "train/train_model.h"

static double mean_ce(const float *logits, const int32_t *ids, int T, int V) {
    double sum = 0;
    for (int t = 0; t < T; t++) {
        const float *row = logits + (size_t)t * V;
        double mx = row[0], z = 0;
        for (int v = 1; v < V; v++) mx = fmax(mx, row[v]);
        for (int v = 0; v < V; v++) z += exp(row[v] - mx);
        sum += log(z) + mx - row[ids[t + 1]];
    }
    return sum / T;
}

static void check(cmamba_ssm ssm, const char *dir) {
    const cmamba_config cfg = {.d_model = 24, .n_layer = 2, .vocab_size = 37, .d_inner = 48,
                               .d_state = 6, .d_conv = 4, .dt_rank = 2, .expand = 2,
                               .eps = 1e-5f, .use_conv_bias = 1, .tie_embeddings = 1,
                               .ssm = ssm};
    enum { T = 150 };
    cm_train_model *m, *back;
    cmamba_model *inf;
    cmamba_state *st;
    cmamba_error err;
    CHECK(cm_train_model_new(&cfg, 5, &m, &err) == 0);
    /* a few training steps' worth of drift away from the initialisation */
    uint64_t rng = 11;
    for (size_t i = 0; i < m->n_params; i++) m->params[i] += 0.05f * (float)cm_rng_normal(&rng);
    CHECK_MSG(cm_model_save(dir, m, &err) == 0, "%s", err.msg);
    CHECK_MSG(cm_train_model_load(dir, &back, &err) == 0, "%s", err.msg);
    CHECK(back->n_params == m->n_params &&
          memcmp(back->params, m->params, sizeof(float) * m->n_params) == 0);
    CHECK(back->cfg.ssm == ssm);

    int32_t ids[T + 1];
    for (int i = 0; i <= T; i++) ids[i] = (int32_t)(cm_rng_u64(&rng) % cfg.vocab_size);
    float loss;
    CHECK(cm_train_loss(m, ids, 1, T, &loss, &err) == 0);

    CHECK_MSG(cmamba_model_load(dir, &inf, &err) == 0, "%s", err.msg);
    CHECK(cmamba_state_new(inf, &st, &err) == 0);
    float *seq = malloc(sizeof(float) * T * cfg.vocab_size);
    float *step = malloc(sizeof(float) * T * cfg.vocab_size);
    CHECK(cmamba_forward(inf, st, ids, T, seq, 1, &err) == 0);
    cmamba_state_reset(st);
    for (int t = 0; t < T; t++) CHECK(cmamba_step(inf, st, ids[t], step + t * cfg.vocab_size, &err) == 0);
    const double l_seq = mean_ce(seq, ids, T, cfg.vocab_size),
                 l_step = mean_ce(step, ids, T, cfg.vocab_size);
    printf("%s: training loss %.7f, inference sequence %.7f, steps %.7f\n",
           ssm == CMAMBA_SSM_S4D ? "S4D" : "S6 ", loss, l_seq, l_step);
    CHECK(fabs(l_seq - loss) < 1e-5 * fabs(loss) && fabs(l_step - loss) < 1e-5 * fabs(loss));
    free(seq);
    free(step);
    cmamba_state_free(st);
    cmamba_model_free(inf);
    cm_train_model_free(back);
    cm_train_model_free(m);
}

int main(void) {
    char dir[] = "/tmp/cmamba-train-infer-XXXXXX";
    if (!mkdtemp(dir)) SKIP("no temporary folder");
    check(CMAMBA_SSM_S6, dir);
    check(CMAMBA_SSM_S4D, dir);
    remove_model_dir(dir);
    return test_summary();
}
