/* GPU inference (src/cuda/model_cuda.h) against the CPU reference
 * (cmamba_forward, cmamba_step): logits, max |gpu − cpu| / max |cpu|,
 * within 1e-4 in fp32 and 2e-2 in bf16, for
 *   - the prompt path over a whole sequence longer than a chunk (2048), and
 *     split in two calls, so the conv and scan states carry over;
 *   - the decoding step from the start, and after a prompt;
 *   - n sequences stepped together, against each stepped alone on the CPU
 *     and on the GPU, and the device argmax against the logits;
 * on random models of several shapes (odd d_state, d_conv 2-4, biases,
 * untied heads; block clusters of 1, 2, 8 and 16) and on the 130m shape;
 * and on the inference fixtures (tests/fixtures/models): fp32 logits
 * against transformers' float64 ones, and 24 greedy tokens identical to the
 * CPU's (and to transformers' as far as the fixture goes); and the skinny
 * product of decoding (cuda/gemv.h) against a float64 product of the same
 * operands, for 1, 3, 8 and 64 rows, odd shapes and every output mode.
 * Exit 77 without a GPU. */
#include <cjson/cJSON.h>
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <sys/stat.h>

#include "cmamba.h"
#include "common.h"
#include "cuda/gemv.h"
#include "cuda/model_cuda.h"
#include "rng.h"
#include "fixtures.h"
#include "test.h"
#include "train/checkpoint.h"
#include "train/init.h"
#include "train/train_model.h"

static const double TOL[2] = {1e-4, 2e-2}; /* fp32, bf16 */
static double worst[2];

static void expect(const char *model, int bf16, const char *what, const float *gpu,
                   const float *cpu, size_t n) {
    const double e = rel_err(gpu, cpu, n);
    if (e > worst[bf16]) worst[bf16] = e;
    printf("  %-22s %s %-34s %.2e\n", model, bf16 ? "bf16" : "fp32", what, e);
    CHECK_MSG(e <= TOL[bf16], "%s %s %s: error %.3e > %.0e", model, bf16 ? "bf16" : "fp32", what,
              e, TOL[bf16]);
}

#define OK(call) CHECK_MSG((call) == 0, "%s: %s", #call, err.msg)

static int32_t *random_ids(size_t n, int V, uint64_t *rng) {
    int32_t *ids = malloc(sizeof *ids * n);
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(cm_rng_u64(rng) % (uint64_t)V);
    return ids;
}

/* The CPU's logits of ids as one sequence, and of NSEQ sequences (prompts
 * of prompt_len(i) ids from ids + 10·i, then STEPS common ids) stepped one
 * by one. */
typedef struct {
    float *seq;   /* (n, V) */
    float *batch; /* (STEPS, NSEQ, V) */
} cpu_ref;

/* NSEQ sequences: more than the fused step kernel takes (8), so the
 * split path runs too; FEW: a batch it does take */
enum { NSEQ = 10, FEW = 3, STEPS = 4 };
static int prompt_len(int i) { return 2 + i * 7 % 9; }

static cpu_ref reference(const cmamba_model *m, const int32_t *ids, size_t n) {
    const size_t V = (size_t)cmamba_model_config(m)->vocab_size;
    cmamba_error err;
    cpu_ref r = {malloc(sizeof(float) * n * V), malloc(sizeof(float) * STEPS * NSEQ * V)};
    cmamba_state *st;
    OK(cmamba_state_new(m, &st, &err));
    OK(cmamba_forward(m, st, ids, n, r.seq, 1, &err));
    for (int i = 0; i < NSEQ; i++) {
        cmamba_state_reset(st);
        OK(cmamba_forward(m, st, ids + 10 * i, prompt_len(i), NULL, 0, &err));
        for (int k = 0; k < STEPS; k++)
            OK(cmamba_step(m, st, ids[100 + k], r.batch + ((size_t)k * NSEQ + i) * V, &err));
    }
    cmamba_state_free(st);
    return r;
}

/* Every GPU path of one model in one precision against the CPU's. */
static void check_gpu(const char *name, const cmamba_model *cpu, const cpu_ref *ref,
                      const int32_t *ids, size_t n, size_t cut, int bf16) {
    const size_t V = (size_t)cmamba_model_config(cpu)->vocab_size;
    cmamba_error err;
    cm_cuda_model *g;
    cm_cuda_state *s;
    if (cm_cuda_model_new(cpu, bf16, &g, &err)) {
        CHECK_MSG(0, "%s: %s", name, err.msg);
        return;
    }
    OK(cm_cuda_state_new(g, NSEQ, &s, &err));
    float *out = malloc(sizeof(float) * n * V);
    float *one = malloc(sizeof(float) * NSEQ * V);
    int32_t arg[NSEQ];

    /* poisoned first, so an unwritten element fails */
    for (size_t i = 0; i < n * V; i++) out[i] = NAN;
    OK(cm_cuda_forward(g, s, 0, ids, n, out, 1, &err));
    expect(name, bf16, "prompt, one call", out, ref->seq, n * V);
    CHECK(cm_cuda_state_tokens(s, 0) == n);

    for (size_t i = 0; i < n * V; i++) out[i] = NAN;
    OK(cm_cuda_state_reset(s, 0, &err));
    OK(cm_cuda_forward(g, s, 0, ids, cut, out, 1, &err));
    OK(cm_cuda_forward(g, s, 0, ids + cut, n - cut, out + cut * V, 1, &err));
    expect(name, bf16, "prompt, two calls", out, ref->seq, n * V);

    /* last position only, then steps continuing from the prompt's state */
    const size_t pre = n < 40 ? n / 2 : 20, steps = n - pre < 24 ? n - pre : 24;
    OK(cm_cuda_state_reset(s, -1, &err));
    OK(cm_cuda_forward(g, s, 0, ids, pre, one, 0, &err));
    expect(name, bf16, "prompt, last logits", one, ref->seq + (pre - 1) * V, V);
    for (size_t t = 0; t < steps; t++)
        OK(cm_cuda_step_batch(g, s, ids + pre + t, 1, out + t * V, NULL, &err));
    expect(name, bf16, "steps after a prompt", out, ref->seq + pre * V, steps * V);

    OK(cm_cuda_state_reset(s, -1, &err));
    for (size_t t = 0; t < steps; t++)
        OK(cm_cuda_step_batch(g, s, ids + t, 1, out + t * V, NULL, &err));
    expect(name, bf16, "steps from the start", out, ref->seq, steps * V);

    /* FEW and NSEQ sequences stepped together (the fused and the split
     * step), against the CPU; NSEQ against each stepped alone on the GPU
     * (slot 0, one at a time) */
    float *batch = malloc(sizeof(float) * STEPS * NSEQ * V);
    for (int nb = FEW; nb <= NSEQ; nb += NSEQ - FEW) {
        OK(cm_cuda_state_reset(s, -1, &err));
        for (int i = 0; i < nb; i++)
            OK(cm_cuda_forward(g, s, i, ids + 10 * i, prompt_len(i), NULL, 0, &err));
        double e = 0;
        for (int k = 0; k < STEPS; k++) {
            int32_t step_ids[NSEQ];
            for (int i = 0; i < nb; i++) step_ids[i] = ids[100 + k];
            float *row = batch + (size_t)k * NSEQ * V;
            OK(cm_cuda_step_batch(g, s, step_ids, nb, row, arg, &err));
            for (int i = 0; i < nb; i++) {
                int32_t best = 0;
                for (size_t v = 1; v < V; v++)
                    if (row[i * V + v] > row[i * V + best]) best = (int32_t)v;
                CHECK_MSG(arg[i] == best, "%s: device argmax %d, host %d", name, arg[i], best);
            }
            e = fmax(e, rel_err(row, ref->batch + (size_t)k * NSEQ * V, nb * V));
        }
        char what[64];
        snprintf(what, sizeof what, "%d sequences stepped together", nb);
        if (e > worst[bf16]) worst[bf16] = e;
        printf("  %-22s %s %-34s %.2e\n", name, bf16 ? "bf16" : "fp32", what, e);
        CHECK_MSG(e <= TOL[bf16], "%s: %s: error %.3e", name, what, e);
    }
    for (int i = 0; i < NSEQ; i++) {
        OK(cm_cuda_state_reset(s, 0, &err));
        OK(cm_cuda_forward(g, s, 0, ids + 10 * i, prompt_len(i), NULL, 0, &err));
        for (int k = 0; k < STEPS; k++) {
            OK(cm_cuda_step_batch(g, s, ids + 100 + k, 1, one, NULL, &err));
            memcpy(out + ((size_t)k * NSEQ + i) * V, one, sizeof(float) * V);
        }
    }
    expect(name, bf16, "batched vs single steps (GPU)", batch, out, STEPS * NSEQ * V);

    /* the state moves between the CPU and the GPU intact */
    cmamba_state *host;
    OK(cmamba_state_new(cpu, &host, &err));
    OK(cm_cuda_state_get(s, 0, host, &err));
    OK(cm_cuda_state_set(s, 1, host, &err));
    OK(cm_cuda_state_copy(s, 2, 0, &err));
    const int32_t same[FEW] = {7 % (int)V, 7 % (int)V, 7 % (int)V};
    OK(cm_cuda_step_batch(g, s, same, FEW, batch, NULL, &err));
    CHECK_MSG(rel_err(batch + V, batch, V) <= 1e-6 && rel_err(batch + 2 * V, batch, V) <= 1e-6,
              "%s: copied states step differently", name);
    CHECK(cm_cuda_state_tokens(s, 1) == cm_cuda_state_tokens(s, 0));

    cmamba_state_free(host);
    free(batch);
    free(out);
    free(one);
    cm_cuda_state_free(s);
    cm_cuda_model_free(g);
}

static void check_model(const char *name, const cmamba_model *cpu, size_t n, size_t cut) {
    uint64_t rng = 1234;
    int32_t *ids = random_ids(n, cmamba_model_config(cpu)->vocab_size, &rng);
    cpu_ref ref = reference(cpu, ids, n);
    for (int bf16 = 0; bf16 < 2; bf16++) check_gpu(name, cpu, &ref, ids, n, cut, bf16);
    free(ref.seq);
    free(ref.batch);
    free(ids);
}

/* A random model: the published initialisation moved by noise, so that
 * biases and norms matter. */
static cmamba_model *random_model(const cmamba_config *cfg, const char *dir) {
    cmamba_error err;
    cm_train_model *t;
    cmamba_model *m = NULL;
    OK(cm_train_model_new(cfg, 5, &t, &err));
    uint64_t rng = 99;
    for (size_t i = 0; i < t->n_params; i++) t->params[i] += 0.05f * (float)cm_rng_normal(&rng);
    OK(cm_model_save(dir, t, &err));
    OK(cmamba_model_load(dir, &m, &err));
    cm_train_model_free(t);
    return m;
}

/* ---- the fixtures ------------------------------------------------------ */

static int32_t *json_ids(const cJSON *arr, size_t *n) {
    *n = (size_t)cJSON_GetArraySize(arr);
    int32_t *ids = malloc(sizeof *ids * (*n + 1));
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) ids[i++] = (int32_t)e->valueint;
    return ids;
}

enum { GREEDY = 24 };

/* 24 greedy tokens: the prompt through the scan, then steps; the host
 * sampler picks, as `cmamba generate` does. gpu NULL: on the CPU. */
static void greedy(const cmamba_model *cpu, cm_cuda_model *gpu, const int32_t *prompt, size_t n,
                   int32_t *out) {
    const int V = cmamba_model_config(cpu)->vocab_size;
    cmamba_error err;
    float *logits = malloc(sizeof(float) * V);
    cmamba_sampler *sampler;
    const cmamba_sampling params = {.temperature = 0, .top_p = 1};
    OK(cmamba_sampler_new(&params, V, &sampler, &err));
    cmamba_state *cs = NULL;
    cm_cuda_state *gs = NULL;
    if (gpu) {
        OK(cm_cuda_state_new(gpu, 1, &gs, &err));
        OK(cm_cuda_forward(gpu, gs, 0, prompt, n, logits, 0, &err));
    } else {
        OK(cmamba_state_new(cpu, &cs, &err));
        OK(cmamba_forward(cpu, cs, prompt, n, logits, 0, &err));
    }
    for (int i = 0; i < GREEDY; i++) {
        out[i] = cmamba_sample(sampler, logits);
        if (gpu) OK(cm_cuda_step_batch(gpu, gs, &out[i], 1, logits, NULL, &err));
        else OK(cmamba_step(cpu, cs, out[i], logits, &err));
    }
    cm_cuda_state_free(gs);
    cmamba_state_free(cs);
    cmamba_sampler_free(sampler);
    free(logits);
}

static void check_fixture(const char *dir, const char *name) {
    cmamba_error err;
    char *path = cm_path_join(dir, "fixture.json"), *json;
    OK(cm_read_file(path, 1 << 24, &json, NULL, &err));
    free(path);
    cJSON *fx = cJSON_Parse(json);
    free(json);
    cmamba_model *m;
    if (!fx || cmamba_model_load(dir, &m, &err)) {
        CHECK_MSG(0, "%s: unreadable", name);
        cJSON_Delete(fx);
        return;
    }
    const size_t V = (size_t)cmamba_model_config(m)->vocab_size;
    size_t n, n_prompt, n_want;
    int32_t *ids = json_ids(cJSON_GetObjectItem(fx, "ids"), &n);
    int32_t *prompt = json_ids(cJSON_GetObjectItem(fx, "greedy_prompt"), &n_prompt);
    int32_t *want = json_ids(cJSON_GetObjectItem(fx, "greedy_ids"), &n_want);
    cm_cuda_model *g;
    OK(cm_cuda_model_new(m, 0, &g, &err));
    cm_cuda_state *s;
    OK(cm_cuda_state_new(g, 1, &s, &err));

    /* against transformers' float64 logits */
    path = cm_path_join(dir, "logits.f64");
    char *raw;
    size_t len;
    float *out = malloc(sizeof(float) * n * V), *ref = malloc(sizeof(float) * n * V);
    OK(cm_read_file(path, 1u << 30, &raw, &len, &err));
    free(path);
    CHECK_MSG(len == n * V * sizeof(double), "%s: logits.f64 has %zu bytes", name, len);
    for (size_t i = 0; i < n * V && len == n * V * sizeof(double); i++) {
        double v;
        memcpy(&v, raw + 8 * i, 8);
        ref[i] = (float)v;
    }
    free(raw);
    OK(cm_cuda_forward(g, s, 0, ids, n, out, 1, &err));
    expect(name, 0, "logits vs transformers", out, ref, n * V);

    int32_t got[GREEDY], cpu[GREEDY];
    greedy(m, g, prompt, n_prompt, got);
    greedy(m, NULL, prompt, n_prompt, cpu);
    const size_t k = n_want < GREEDY ? n_want : GREEDY;
    CHECK_MSG(memcmp(got, cpu, sizeof got) == 0, "%s: GPU greedy tokens differ from the CPU's", name);
    CHECK_MSG(memcmp(got, want, sizeof *got * k) == 0, "%s: GPU greedy tokens differ from transformers'",
              name);
    printf("  %-22s fp32 greedy: %d tokens as the CPU's, %zu as transformers'\n", name, GREEDY, k);

    free(out), free(ref), free(ids), free(prompt), free(want);
    cm_cuda_state_free(s);
    cm_cuda_model_free(g);
    cmamba_model_free(m);
    cJSON_Delete(fx);
}

/* n values in [−1, 1), as the device holds them (bf16: rounded) */
static float *random_operand(size_t n, int bf16, uint64_t *rng) {
    float *v = malloc(sizeof *v * n);
    for (size_t i = 0; i < n; i++) {
        v[i] = (float)(cm_rng_u64(rng) % 2000001) / 1e6f - 1.f;
        if (bf16) v[i] = cm_bf16_to_f32(cm_f32_to_bf16(v[i]));
    }
    return v;
}

/* a host fp32 array on the device in dt (offset by `skew` elements, so
 * that rows are not 16-byte aligned) */
static void *to_device(const float *v, size_t n, int bf16, size_t skew) {
    const size_t es = bf16 ? 2 : 4;
    char *d = NULL;
    CHECK(cudaMalloc((void **)&d, (n + skew) * es) == cudaSuccess);
    void *h = malloc(n * es);
    for (size_t i = 0; i < n; i++) {
        if (bf16) ((uint16_t *)h)[i] = cm_f32_to_bf16(v[i]);
        else ((float *)h)[i] = v[i];
    }
    CHECK(cudaMemcpy(d + skew * es, h, n * es, cudaMemcpyHostToDevice) == cudaSuccess);
    free(h);
    return d + skew * es;
}

static void check_gemv_case(int bf16, int rows, int n_in, int n_out, int out_f32, int acc,
                            size_t skew, uint64_t *rng) {
    const size_t no = (size_t)rows * n_out, es = bf16 ? 2 : 4, oes = out_f32 ? 4 : es;
    float *x = random_operand((size_t)rows * n_in, bf16, rng);
    float *w = random_operand((size_t)n_out * n_in, bf16, rng);
    float *o0 = random_operand(no, bf16 && !out_f32, rng), *ref = malloc(sizeof *ref * no);
    float *got = malloc(sizeof *got * no);
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < n_out; j++) {
            double sum = acc ? o0[(size_t)r * n_out + j] : 0;
            for (int k = 0; k < n_in; k++) sum += (double)x[(size_t)r * n_in + k] * w[(size_t)j * n_in + k];
            ref[(size_t)r * n_out + j] = (float)sum;
        }
    char *dx = to_device(x, (size_t)rows * n_in, bf16, skew);
    char *dw = to_device(w, (size_t)n_out * n_in, bf16, skew);
    char *dout = to_device(o0, no, bf16 && !out_f32, 0);
    CHECK(cm_cuda_gemv(dout, out_f32, acc, dx, dw, rows, n_in, n_out,
                       bf16 ? CM_CUDA_BF16 : CM_CUDA_F32, 0) == cudaSuccess);
    void *h = malloc(no * oes);
    CHECK(cudaMemcpy(h, dout, no * oes, cudaMemcpyDeviceToHost) == cudaSuccess);
    for (size_t i = 0; i < no; i++)
        got[i] = oes == 2 ? cm_bf16_to_f32(((uint16_t *)h)[i]) : ((float *)h)[i];
    /* fp32 sums of exact products: 1e-5 of the largest; a bf16 output: its rounding */
    const double e = rel_err(got, ref, no), tol = oes == 2 ? 1e-2 : 1e-5;
    printf("  gemv %s rows %2d %4d → %-5d %s%s%s %.2e\n", bf16 ? "bf16" : "fp32", rows, n_in,
           n_out, out_f32 ? "f32 out" : "dt out", acc ? " +=" : "", skew ? " unaligned" : "", e);
    CHECK_MSG(e <= tol, "gemv %s rows %d %d → %d: error %.3e > %.0e", bf16 ? "bf16" : "fp32",
              rows, n_in, n_out, e, tol);
    cudaFree(dx - skew * es);
    cudaFree(dw - skew * es);
    cudaFree(dout);
    free(h), free(x), free(w), free(o0), free(ref), free(got);
}

static void check_gemv(void) {
    uint64_t rng = 99;
    static const int ROWS[] = {1, 3, 8, 64};
    /* in_proj and out_proj of the 130m shape, cols = dt_rank (48), an odd
     * row length (scalar loads), rows of more than UNROLL·32 chunks, for
     * 2 and 4 warps a feature */
    static const int SHAPES[][2] = {{768, 3072}, {1536, 771}, {48, 37}, {37, 29}, {2600, 45},
                                     {5120, 19}};
    for (int bf16 = 0; bf16 < 2; bf16++)
        for (size_t r = 0; r < sizeof ROWS / sizeof *ROWS; r++)
            for (size_t s = 0; s < sizeof SHAPES / sizeof *SHAPES; s++) {
                const int in = SHAPES[s][0], out = SHAPES[s][1], mode = (int)(r + s) % 3;
                /* in turn: dt out, f32 out, f32 out accumulated */
                check_gemv_case(bf16, ROWS[r], in, out, mode > 0, mode == 2, 0, &rng);
            }
    check_gemv_case(1, 3, 768, 100, 1, 0, 1, &rng); /* 16-byte loads would be misaligned */
    check_gemv_case(0, 2, 64, 33, 0, 1, 2, &rng);
    /* more blocks than the device holds at once */
    check_gemv_case(1, 1, 2560, 10240, 0, 0, 0, &rng);
    check_gemv_case(0, 5, 256, 30011, 1, 1, 0, &rng);
}

int main(void) {
    cmamba_error err;
    if (cm_cuda_available(&err)) SKIP("%s", err.msg);
    const char *tmp = test_env("CMAMBA_TMP", "/tmp");
    mkdir(tmp, 0755);
    check_gemv();

    struct {
        const char *name;
        cmamba_config cfg;
        size_t n, cut;
    } cases[] = {
        /* longer than a chunk, cut so that the second call crosses the chunk boundary */
        {"d64 N16 K4", {.d_model = 64, .n_layer = 2, .vocab_size = 300, .d_state = 16,
                        .d_conv = 4, .expand = 2, .dt_rank = 4, .use_conv_bias = 1,
                        .tie_embeddings = 1}, 2100, 1000},
        {"d40 N5 K3 expand3 bias", {.d_model = 40, .n_layer = 3, .vocab_size = 257, .d_state = 5,
                                   .d_conv = 3, .expand = 3, .dt_rank = 7, .use_bias = 1,
                                   .use_conv_bias = 1}, 300, 1},
        {"d96 N64 K2 cluster2", {.d_model = 96, .n_layer = 2, .vocab_size = 1000, .d_state = 64,
                                 .d_conv = 2, .expand = 2, .dt_rank = 6}, 130, 64},
        {"d256 N16 cluster8", {.d_model = 256, .n_layer = 2, .vocab_size = 512, .d_state = 16,
                               .d_conv = 4, .expand = 2, .dt_rank = 16, .use_conv_bias = 1,
                               .tie_embeddings = 1}, 2049, 2048},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cmamba_config *c = &cases[i].cfg;
        c->d_inner = c->expand * c->d_model, c->eps = 1e-5f, c->layout = CMAMBA_LAYOUT_HF;
        char sub[64], *dir;
        snprintf(sub, sizeof sub, "cuda_model_%zu", i);
        dir = cm_path_join(tmp, sub);
        cmamba_model *m = random_model(c, dir);
        if (m) check_model(cases[i].name, m, cases[i].n, cases[i].cut);
        cmamba_model_free(m);
        free(dir);
    }

    /* the 130m shape, published initialisation */
    const cmamba_config c130 = {.d_model = 768, .n_layer = 24, .vocab_size = 50280,
                                .d_inner = 1536, .d_state = 16, .d_conv = 4, .dt_rank = 48,
                                .expand = 2, .eps = 1e-5f, .use_conv_bias = 1,
                                .tie_embeddings = 1, .layout = CMAMBA_LAYOUT_HF};
    char *dir = cm_path_join(tmp, "cuda_model_130m");
    cmamba_model *m = NULL;
    OK(cm_init_checkpoint(&c130, dir, 3, 0, &err));
    OK(cmamba_model_load(dir, &m, &err));
    if (m) check_model("130m shape", m, 120, 50);
    cmamba_model_free(m);
    free(dir);

    for_each_fixture(check_fixture);
    printf("worst error: fp32 %.3g (tolerance 1e-4), bf16 %.3g (tolerance 2e-2)\n", worst[0],
           worst[1]);
    return test_summary();
}
