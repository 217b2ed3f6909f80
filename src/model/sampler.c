/* Next-token choice: greedy, or temperature, then top-k, then top-p
 * (nucleus), drawn with a seeded generator so runs are reproducible. */
#include <math.h>
#include <stdlib.h>

#include "common.h"
#include "rng.h"

typedef struct {
    float p;
    int32_t id;
} candidate;

struct cmamba_sampler {
    cmamba_sampling params;
    int vocab_size;
    uint64_t rng;
    candidate *cand;
};

int cmamba_sampler_new(const cmamba_sampling *params, int vocab_size, cmamba_sampler **out,
                       cmamba_error *err) {
    if (vocab_size <= 0) return cm_fail(err, "sampler: vocabulary size must be positive");
    if (!(params->temperature >= 0.0f) || !isfinite(params->temperature))
        return cm_fail(err, "sampler: temperature must be a finite number >= 0");
    if (params->top_k < 0) return cm_fail(err, "sampler: top-k must be >= 0");
    if (!(params->top_p > 0.0f && params->top_p <= 1.0f))
        return cm_fail(err, "sampler: top-p must be in (0, 1]");
    cmamba_sampler *s = cm_calloc(1, sizeof *s, err);
    if (!s) return -1;
    s->cand = cm_malloc(sizeof *s->cand * (size_t)vocab_size, err);
    if (!s->cand) { free(s); return -1; }
    s->params = *params;
    s->vocab_size = vocab_size;
    s->rng = params->seed;
    *out = s;
    return 0;
}

void cmamba_sampler_free(cmamba_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s);
}

static int by_prob_desc(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id; /* stable order for equal probabilities */
}

int32_t cmamba_sample(cmamba_sampler *s, float *logits) {
    const int V = s->vocab_size;
    int32_t best = 0; /* the first maximum, as argmax in PyTorch */
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (s->params.temperature == 0.0f) return best;

    const float inv_t = 1.0f / s->params.temperature;
    double sum = 0;
    for (int i = 0; i < V; i++) {
        float p = expf((logits[i] - logits[best]) * inv_t);
        s->cand[i] = (candidate){p, i};
        sum += p;
    }
    int n = V;
    const int filter = (s->params.top_k > 0 && s->params.top_k < V) || s->params.top_p < 1.0f;
    if (filter) {
        qsort(s->cand, (size_t)V, sizeof *s->cand, by_prob_desc);
        if (s->params.top_k > 0 && s->params.top_k < n) n = s->params.top_k;
        sum = 0;
        for (int i = 0; i < n; i++) sum += s->cand[i].p;
        if (s->params.top_p < 1.0f) {
            /* the smallest prefix whose probability reaches top_p */
            double cum = 0;
            for (int i = 0; i < n; i++) {
                cum += s->cand[i].p;
                if (cum >= s->params.top_p * sum) { n = i + 1; break; }
            }
            sum = cum;
        }
    }
    double r = cm_rng_uniform(&s->rng) * sum, cum = 0;
    for (int i = 0; i < n; i++) {
        cum += s->cand[i].p;
        if (r < cum) return s->cand[i].id;
    }
    return s->cand[n - 1].id;
}
