/* The fp32 reference path against Hugging Face transformers (float64), on
 * every fixture made by tools/make_model_fixtures.py: logits of the
 * sequence path and of the step path within 1e-4 (max |Δ| / max |ref|), and
 * greedy continuations identical. */
#include <cjson/cJSON.h>

#include "common.h"
#include "fixtures.h"
#include "test.h"

static const double TOL = 1e-4;

static int read_ids(const cJSON *arr, int32_t **ids, size_t *n) {
    if (!cJSON_IsArray(arr)) return -1;
    *n = (size_t)cJSON_GetArraySize(arr);
    *ids = malloc(sizeof **ids * (*n + 1));
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)(*ids)[i++] = (int32_t)e->valueint;
    return 0;
}

static double *read_f64(const char *path, size_t count) {
    char *data;
    size_t len;
    cmamba_error err;
    if (cm_read_file(path, 1u << 30, &data, &len, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    if (len != count * sizeof(double)) {
        fprintf(stderr, "%s: %zu bytes, expected %zu\n", path, len, count * sizeof(double));
        free(data);
        return NULL;
    }
    double *v = malloc(len);
    memcpy(v, data, len);
    free(data);
    return v;
}

/* Greedy continuation through the prompt scan then recurrent steps. */
static void greedy(const cmamba_model *m, const int32_t *prompt, size_t n_prompt, size_t n_gen,
                   int32_t *out) {
    const int V = cmamba_model_config(m)->vocab_size;
    cmamba_error err;
    cmamba_state *st;
    cmamba_sampler *sampler;
    cmamba_sampling greedy_params = {.temperature = 0, .top_p = 1};
    float *logits = malloc(sizeof(float) * V);
    CHECK(cmamba_state_new(m, &st, &err) == 0);
    CHECK(cmamba_sampler_new(&greedy_params, V, &sampler, &err) == 0);
    CHECK(cmamba_forward(m, st, prompt, n_prompt, logits, 0, &err) == 0);
    for (size_t i = 0; i < n_gen; i++) {
        out[i] = cmamba_sample(sampler, logits);
        CHECK(cmamba_step(m, st, out[i], logits, &err) == 0);
    }
    cmamba_sampler_free(sampler);
    cmamba_state_free(st);
    free(logits);
}

static void check_fixture(const char *dir, const char *name) {
    cmamba_error err;
    char *path = cm_path_join(dir, "fixture.json"), *json;
    if (cm_read_file(path, 1 << 24, &json, NULL, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        free(path);
        return;
    }
    free(path);
    cJSON *fx = cJSON_Parse(json);
    free(json);
    CHECK_MSG(fx != NULL, "%s/fixture.json is not JSON", name);
    if (!fx) return;

    cmamba_model *m;
    if (cmamba_model_load(dir, &m, &err)) {
        CHECK_MSG(0, "%s: %s", name, err.msg);
        cJSON_Delete(fx);
        return;
    }
    const int V = cmamba_model_config(m)->vocab_size;
    CHECK_MSG(V == cJSON_GetObjectItem(fx, "rows")->valueint, "%s: vocab rows %d", name, V);

    int32_t *ids = NULL, *prompt = NULL, *want = NULL;
    size_t n = 0, n_prompt = 0, n_want = 0;
    read_ids(cJSON_GetObjectItem(fx, "ids"), &ids, &n);
    read_ids(cJSON_GetObjectItem(fx, "greedy_prompt"), &prompt, &n_prompt);
    read_ids(cJSON_GetObjectItem(fx, "greedy_ids"), &want, &n_want);
    path = cm_path_join(dir, "logits.f64");
    double *ref = read_f64(path, n * (size_t)V);
    free(path);
    CHECK_MSG(ref != NULL, "%s: logits.f64 unreadable", name);

    float *seq = malloc(sizeof(float) * n * V), *step = malloc(sizeof(float) * n * V);
    cmamba_state *st;
    CHECK(cmamba_state_new(m, &st, &err) == 0);
    CHECK(cmamba_forward(m, st, ids, n, seq, 1, &err) == 0);
    cmamba_state_reset(st);
    for (size_t t = 0; t < n; t++) CHECK(cmamba_step(m, st, ids[t], step + t * V, &err) == 0);
    /* a sequence split in two calls continues from the carried state */
    float *split = malloc(sizeof(float) * n * V);
    size_t cut = n / 3;
    cmamba_state_reset(st);
    CHECK(cmamba_forward(m, st, ids, cut, split, 1, &err) == 0);
    CHECK(cmamba_forward(m, st, ids + cut, n - cut, split + cut * V, 1, &err) == 0);

    if (ref) {
        double e_seq = rel_err_f32_f64(seq, ref, n * V), e_step = rel_err_f32_f64(step, ref, n * V),
               e_split = rel_err_f32_f64(split, ref, n * V);
        printf("%-24s L=%-4zu V=%-5d  sequence %.2e  step %.2e  split %.2e  (tol %.0e)\n", name,
               n, V, e_seq, e_step, e_split, TOL);
        CHECK_MSG(e_seq <= TOL, "%s: sequence path error %.3e", name, e_seq);
        CHECK_MSG(e_step <= TOL, "%s: step path error %.3e", name, e_step);
        CHECK_MSG(e_split <= TOL, "%s: split sequence error %.3e", name, e_split);
    }
    int32_t *got = malloc(sizeof *got * (n_want + 1));
    greedy(m, prompt, n_prompt, n_want, got);
    CHECK_MSG(n_want >= 16 && memcmp(got, want, sizeof *got * n_want) == 0,
              "%s: greedy continuation differs from transformers", name);

    free(got); free(split); free(seq); free(step); free(ref);
    free(ids); free(prompt); free(want);
    cmamba_state_free(st);
    cmamba_model_free(m);
    cJSON_Delete(fx);
}

int main(void) {
    for_each_fixture(check_fixture);
    return test_summary();
}
