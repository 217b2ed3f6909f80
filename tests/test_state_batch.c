/* Sequences as the CLI runs them: a prompt longer than a chunk equals the
 * same prompt fed in arbitrary pieces and token by token; n sequences
 * stepped together equal each stepped alone; a state saved to a file and
 * loaded back continues with the same bits, and a damaged state file is
 * refused with a message naming it; the same for a model wide enough that
 * its steps run on two threads, in every format. */
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "cmamba.h"
#include "rng.h"
#include "test.h"
#include "train/checkpoint.h"
#include "train/train_model.h"

/* row-wise products run as sgemm for n rows and sgemv for one: the sums
 * are reassociated, so batched and single logits agree to rounding */
static const double TOL_BATCH = 1e-5, TOL_CHUNK = 1e-5;

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

static void check_state_file_errors(cmamba_model *m, const char *good, const char *bad) {
    cmamba_state *s;
    cmamba_error err;
    CHECK(cmamba_state_new(m, &s, &err) == 0);
    FILE *f = fopen(good, "rb");
    unsigned char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    struct { const char *what, *expect; size_t len; size_t flip; } cases[] = {
        {"truncated", "truncated", n - 3, 0},
        {"header only", "truncated", 40, 0},
        {"bad magic", "bad magic", n, 1},
        {"shape", "state of a model with", n, 9},
        {"payload bit", "checksum", n, n - 1},
        {"empty", "bad magic", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        unsigned char copy[1 << 16];
        memcpy(copy, buf, n);
        if (cases[i].flip) copy[cases[i].flip] ^= 0x10;
        write_bytes(bad, copy, cases[i].len);
        const int rc = cmamba_state_load(s, bad, &err);
        CHECK_MSG(rc == -1 && strstr(err.msg, cases[i].expect) && strstr(err.msg, bad),
                  "%s: rc %d, message '%s'", cases[i].what, rc, err.msg);
    }
    CHECK(cmamba_state_load(s, "/nonexistent/state.bin", &err) == -1);
    cmamba_state_free(s);
}

/* A model wide enough that a step shares its work among two threads
 * (src/model/block.c's one region a layer, with barriers), in every
 * format: token by token against one call over the prompt, and 3
 * sequences stepped together against each alone (the GEMV kernels' forms
 * for several inputs). */
static void wide_model(const char *dir) {
    const cmamba_config cfg = {.d_model = 192, .n_layer = 2, .vocab_size = 67, .d_inner = 384,
                               .d_state = 16, .d_conv = 4, .dt_rank = 12, .expand = 2,
                               .eps = 1e-5f, .use_conv_bias = 1, .tie_embeddings = 1};
    enum { V = 67, T = 40, NSEQ = 3 };
    cm_train_model *tm;
    cmamba_error err;
    CHECK(cm_train_model_new(&cfg, 4, &tm, &err) == 0);
    uint64_t rng = 9;
    for (size_t i = 0; i < tm->n_params; i++) tm->params[i] += 0.05f * (float)cm_rng_normal(&rng);
    CHECK_MSG(cm_model_save(dir, tm, &err) == 0, "%s", err.msg);
    cm_train_model_free(tm);
    int32_t ids[T];
    for (int i = 0; i < T; i++) ids[i] = (int32_t)(cm_rng_u64(&rng) % V);
    cmamba_set_threads(2);
    for (int d = CMAMBA_DTYPE_F32; d <= CMAMBA_DTYPE_Q4; d++) {
        cmamba_model *m;
        CHECK_MSG(cmamba_model_load_dtype(dir, (cmamba_dtype)d, &m, &err) == 0, "%s", err.msg);
        cmamba_state *a, *b, *batch[NSEQ], *alone[NSEQ];
        float la[V], lb[V], lbatch[NSEQ * V], lalone[NSEQ * V];
        CHECK(cmamba_state_new(m, &a, &err) == 0 && cmamba_state_new(m, &b, &err) == 0);
        CHECK(cmamba_forward(m, a, ids, T, la, 0, &err) == 0);
        for (int t = 0; t < T; t++) CHECK(cmamba_step(m, b, ids[t], lb, &err) == 0);
        /* (a prompt of T ≤ 64 tokens takes the int8 GEMV kernels, as steps do, in q8/q4) */
        const double e_step = rel_err(lb, la, V);
        CHECK_MSG(e_step <= TOL_CHUNK, "%s: token by token vs one call: %.2e",
                  cmamba_dtype_name(d), e_step);
        int32_t next[NSEQ];
        for (int i = 0; i < NSEQ; i++) {
            CHECK(cmamba_state_new(m, &batch[i], &err) == 0);
            CHECK(cmamba_state_new(m, &alone[i], &err) == 0);
            CHECK(cmamba_forward(m, batch[i], ids + 5 * i, 10 + 7 * i, NULL, 0, &err) == 0);
            CHECK(cmamba_state_copy(alone[i], batch[i], &err) == 0);
            next[i] = ids[i];
        }
        double worst = 0;
        for (int g = 0; g < 4; g++) {
            CHECK(cmamba_step_batch(m, batch, next, NSEQ, lbatch, &err) == 0);
            for (int i = 0; i < NSEQ; i++)
                CHECK(cmamba_step(m, alone[i], next[i], lalone + i * V, &err) == 0);
            worst = fmax(worst, rel_err(lbatch, lalone, NSEQ * V));
            for (int i = 0; i < NSEQ; i++) next[i] = ids[(g * 7 + i * 3) % T];
        }
        CHECK_MSG(worst <= TOL_BATCH, "%s: batch vs alone: %.2e", cmamba_dtype_name(d), worst);
        printf("wide model, 2 threads, %-4s: token by token vs one call %.2e (tol %.0e), "
               "%d sequences together vs alone %.2e (tol %.0e)\n",
               cmamba_dtype_name(d), e_step, TOL_CHUNK, NSEQ, worst, TOL_BATCH);
        for (int i = 0; i < NSEQ; i++) {
            cmamba_state_free(batch[i]);
            cmamba_state_free(alone[i]);
        }
        cmamba_state_free(a);
        cmamba_state_free(b);
        cmamba_model_free(m);
    }
}

int main(void) {
    const cmamba_config cfg = {.d_model = 32, .n_layer = 2, .vocab_size = 41, .d_inner = 64,
                               .d_state = 8, .d_conv = 4, .dt_rank = 3, .expand = 2,
                               .eps = 1e-5f, .use_conv_bias = 1, .tie_embeddings = 1};
    enum { V = 41, T = 2600, NSEQ = 5, GEN = 7 }; /* T spans three 1024-token chunks */
    char dir[] = "/tmp/test_state_batch.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char state_path[128], bad_path[128], path[128];
    snprintf(state_path, sizeof state_path, "%s/state.bin", dir);
    snprintf(bad_path, sizeof bad_path, "%s/bad.bin", dir);

    cm_train_model *tm;
    cmamba_model *m;
    cmamba_error err;
    CHECK(cm_train_model_new(&cfg, 3, &tm, &err) == 0);
    uint64_t rng = 5;
    for (size_t i = 0; i < tm->n_params; i++) tm->params[i] += 0.05f * (float)cm_rng_normal(&rng);
    CHECK_MSG(cm_model_save(dir, tm, &err) == 0, "%s", err.msg);
    CHECK_MSG(cmamba_model_load(dir, &m, &err) == 0, "%s", err.msg);

    int32_t *ids = malloc(sizeof(int32_t) * T);
    for (int i = 0; i < T; i++) ids[i] = (int32_t)(cm_rng_u64(&rng) % V);

    /* one call over T tokens vs pieces of odd sizes vs token by token */
    cmamba_state *a, *b;
    CHECK(cmamba_state_new(m, &a, &err) == 0 && cmamba_state_new(m, &b, &err) == 0);
    float la[V], lb[V];
    CHECK(cmamba_forward(m, a, ids, T, la, 0, &err) == 0);
    const size_t pieces[] = {1, 700, 1023, 2, 874};
    size_t at = 0;
    for (size_t i = 0; i < sizeof pieces / sizeof *pieces; i++) {
        CHECK(cmamba_forward(m, b, ids + at, pieces[i], lb, 0, &err) == 0);
        at += pieces[i];
    }
    CHECK(at == T && cmamba_state_tokens(a) == T && cmamba_state_tokens(b) == T);
    double e = rel_err(lb, la, V);
    CHECK_MSG(e <= TOL_CHUNK, "pieces vs one call: %.2e", e);
    cmamba_state_reset(b);
    for (int t = 0; t < T; t++) CHECK(cmamba_step(m, b, ids[t], lb, &err) == 0);
    const double e_step = rel_err(lb, la, V);
    CHECK_MSG(e_step <= TOL_CHUNK, "token by token vs one call: %.2e", e_step);
    printf("prompt of %d tokens: pieces %.2e, token by token %.2e (tol %.0e)\n", T, e, e_step,
           TOL_CHUNK);

    /* save after the prompt, load into a fresh state, continue both */
    CHECK_MSG(cmamba_state_save(a, state_path, &err) == 0, "%s", err.msg);
    cmamba_state *c;
    CHECK(cmamba_state_new(m, &c, &err) == 0);
    CHECK_MSG(cmamba_state_load(c, state_path, &err) == 0, "%s", err.msg);
    CHECK(cmamba_state_tokens(c) == T);
    for (int g = 0; g < GEN; g++) {
        CHECK(cmamba_step(m, a, ids[g], la, &err) == 0);
        CHECK(cmamba_step(m, c, ids[g], lb, &err) == 0);
    }
    CHECK_MSG(memcmp(la, lb, sizeof la) == 0, "loaded state continues differently");
    check_state_file_errors(m, state_path, bad_path);

    /* NSEQ sequences with different prompts: stepped together vs alone */
    cmamba_state *batch[NSEQ], *alone[NSEQ];
    float lbatch[NSEQ * V], lalone[NSEQ * V];
    int32_t next[NSEQ];
    for (int i = 0; i < NSEQ; i++) {
        CHECK(cmamba_state_new(m, &batch[i], &err) == 0 && cmamba_state_new(m, &alone[i], &err) == 0);
        CHECK(cmamba_forward(m, batch[i], ids + 100 * i, 50 + 13 * i, NULL, 0, &err) == 0);
        CHECK(cmamba_state_copy(alone[i], batch[i], &err) == 0);
        next[i] = ids[i];
    }
    double worst = 0;
    for (int g = 0; g < GEN; g++) {
        CHECK(cmamba_step_batch(m, batch, next, NSEQ, lbatch, &err) == 0);
        for (int i = 0; i < NSEQ; i++) CHECK(cmamba_step(m, alone[i], next[i], lalone + i * V, &err) == 0);
        worst = fmax(worst, rel_err(lbatch, lalone, NSEQ * V));
        for (int i = 0; i < NSEQ; i++) next[i] = ids[(g * 7 + i * 3) % T];
    }
    CHECK_MSG(worst <= TOL_BATCH, "batch vs alone: %.2e", worst);
    printf("%d sequences stepped together vs alone, %d steps: %.2e (tol %.0e)\n", NSEQ, GEN, worst,
           TOL_BATCH);
    int32_t bad_id = V;
    CHECK(cmamba_step_batch(m, batch, &bad_id, 1, lbatch, &err) == -1);

    for (int i = 0; i < NSEQ; i++) {
        cmamba_state_free(batch[i]);
        cmamba_state_free(alone[i]);
    }
    cmamba_state_free(a);
    cmamba_state_free(b);
    cmamba_state_free(c);
    cmamba_model_free(m);
    cm_train_model_free(tm);
    free(ids);
    wide_model(dir);
    const char *files[] = {"config.json", "model.safetensors", "state.bin", "bad.bin"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    return test_summary();
}
