/* Whether a prompt's time per token stays the same from 1K to 1M tokens,
 * on a machine whose speed drifts by ±20% from one minute to the next.
 *
 * One state takes the long prompt in windows of W tokens. Before each
 * window, and once after the last, a 1,024-token prompt on a fresh state is
 * timed: the reference of that moment. A window's time per token over the
 * mean of the references on either side of it, all taken within a few
 * minutes, is what the position in the prompt costs; it would grow with the
 * prompt's length if anything did (the state, a cache, an allocation).
 * Peak RSS is read after each window and must stay flat: the ids are made
 * a window at a time, so the prompt's length appears nowhere in memory.
 *
 *   bench_prompt_length MODEL_DIR [total_tokens [window [threads]]]
 *   defaults 1048576 65536, all cores; whole windows only */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "cmamba.h"
#include "common.h"
#include "cpu/blas.h"
#include "rng.h"

enum { REF_TOKENS = 1024 };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static void random_ids(int32_t *ids, size_t n, int vocab, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(cm_rng_u64(rng) % (uint64_t)vocab);
}

/* seconds for n ids through the model from the state as it is */
static double timed_forward(const cmamba_model *m, cmamba_state *s, const int32_t *ids, size_t n) {
    cmamba_error err;
    const double t0 = now_s();
    if (cmamba_forward(m, s, ids, n, NULL, 0, &err)) {
        fprintf(stderr, "bench_prompt_length: %s\n", err.msg);
        exit(1);
    }
    return now_s() - t0;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* argv[i] as a count in [1, max], or def when absent; -1 (said on stderr) if it is not one */
static long count_arg(int argc, char **argv, int i, long def, long max, const char *what) {
    if (argc <= i) return def;
    char *end;
    errno = 0;
    const long v = strtol(argv[i], &end, 10);
    if (errno || end == argv[i] || *end || v < 1 || v > max) {
        fprintf(stderr, "bench_prompt_length: %s '%s' is not a whole number in [1, %ld]\n", what,
                argv[i], max);
        return -1;
    }
    return v;
}

int main(int argc, char **argv) {
    cm_blas_use_cpu_kernels(argv);
    if (argc < 2 || argc > 5) {
        fprintf(stderr, "usage: bench_prompt_length MODEL_DIR [total_tokens [window [threads]]]\n");
        return 2;
    }
    const long total = count_arg(argc, argv, 2, 1L << 20, 1L << 34, "total_tokens");
    const long window = count_arg(argc, argv, 3, 65536, 1L << 24, "window");
    const long threads = count_arg(argc, argv, 4, 0, 4096, "threads");
    if (total < 0 || window < 0 || threads < 0) return 2;
    if (total < window || window < REF_TOKENS) {
        fprintf(stderr, "bench_prompt_length: need total_tokens >= window >= %d\n", REF_TOKENS);
        return 2;
    }
    if (threads) cmamba_set_threads((int)threads);
    cmamba_error err;
    cmamba_model *m;
    cmamba_state *s, *ref;
    if (cmamba_model_load(argv[1], &m, &err) || cmamba_state_new(m, &s, &err) ||
        cmamba_state_new(m, &ref, &err)) {
        fprintf(stderr, "bench_prompt_length: %s\n", err.msg);
        return 1;
    }
    const int vocab = cmamba_model_config(m)->vocab_size;
    int32_t *ids = malloc(sizeof *ids * (size_t)window);
    const int n_win = (int)(total / window);
    double *ref_t = malloc(sizeof *ref_t * (n_win + 1)), *ratio = malloc(sizeof *ratio * n_win);
    double *win_t = malloc(sizeof *win_t * n_win), *rss = malloc(sizeof *rss * n_win);
    if (!ids || !ref_t || !ratio || !win_t || !rss) {
        fprintf(stderr, "bench_prompt_length: out of memory for windows of %ld tokens\n", window);
        return 1;
    }
    uint64_t rng = 1;
    random_ids(ids, REF_TOKENS, vocab, &rng);
    for (int i = 0; i < 2; i++) { /* warm-up: the weights paged in, scratch sized, threads up */
        cmamba_state_reset(ref);
        timed_forward(m, ref, ids, REF_TOKENS);
    }

    const double rss0 = peak_rss_mib();
    for (int w = 0; w <= n_win; w++) {
        cmamba_state_reset(ref);
        random_ids(ids, REF_TOKENS, vocab, &rng);
        ref_t[w] = timed_forward(m, ref, ids, REF_TOKENS) / REF_TOKENS;
        if (w == n_win) break;
        random_ids(ids, (size_t)window, vocab, &rng);
        win_t[w] = timed_forward(m, s, ids, (size_t)window) / (double)window;
        rss[w] = peak_rss_mib();
    }
    printf("window of %ld tokens at position | tokens/s | 1K reference tokens/s (before, after) | "
           "time per token / reference | peak RSS MiB\n", window);
    for (int w = 0; w < n_win; w++) {
        ratio[w] = win_t[w] / (0.5 * (ref_t[w] + ref_t[w + 1]));
        printf("%9ld | %8.1f | %8.1f, %8.1f | %.3f | %.1f\n", (long)w * window, 1.0 / win_t[w],
               1.0 / ref_t[w], 1.0 / ref_t[w + 1], ratio[w], rss[w]);
    }
    double first = ratio[0], last = ratio[n_win - 1];
    qsort(ratio, n_win, sizeof *ratio, cmp_double);
    printf("%ld tokens: time per token over the 1K reference: first window %.3f, last %.3f, "
           "median %.3f (range %.3f-%.3f); peak RSS %.1f MiB after the warm-up, %.1f at the end\n",
           (long)n_win * window, first, last, ratio[n_win / 2], ratio[0], ratio[n_win - 1], rss0,
           rss[n_win - 1]);
    free(ids), free(ref_t), free(ratio), free(win_t), free(rss);
    cmamba_state_free(ref);
    cmamba_state_free(s);
    cmamba_model_free(m);
    return 0;
}
