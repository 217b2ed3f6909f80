/* Training throughput on the GPU (cuda/train_cuda.h): whole steps (forward,
 * backward, AdamW) on random tokens, timed on the host around the
 * synchronous calls, after a warm-up step; the median of the repeats.
 *   bench_cuda_train [d_model n_layer vocab B T reps dtype]
 * defaults: the mamba-130m shape (768 24 50280), 8 x 2048 tokens, 5 repeats,
 * bf16 (mixed precision; f32 for fp32). d_inner 2·d_model, d_state 16,
 * d_conv 4, dt_rank ⌈d_model/16⌉, tied embeddings.
 * Model FLOPs per step: 6 · parameters · tokens (every parameter a
 * multiply-add forward, two backward; the tied embedding counted once, as
 * the LM head's product) + the selective scan's 3 · 9 · tokens · d_inner ·
 * d_state (9 per state and step forward: the exp's product, the decay and
 * input products and sum, C·h; twice that backward); model FLOP
 * utilisation (MFU) against the H100 SXM's dense bf16 peak, 989 TFLOP/s.
 * Then one more step with phase timing (cm_cuda_train_profile): where the
 * forward and backward's time goes, per kind of work. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <algorithm>

extern "C" {
#include "rng.h"
}
#include "cuda/train_cuda.h"

static double now_s() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const int dm = argc > 1 ? atoi(argv[1]) : 768, nl = argc > 2 ? atoi(argv[2]) : 24,
              V = argc > 3 ? atoi(argv[3]) : 50280, B = argc > 4 ? atoi(argv[4]) : 8,
              T = argc > 5 ? atoi(argv[5]) : 2048, reps = argc > 6 ? atoi(argv[6]) : 5;
    const int bf16 = argc > 7 ? strcmp(argv[7], "f32") != 0 : 1;
    cmamba_config cfg = {};
    cfg.d_model = dm, cfg.n_layer = nl, cfg.vocab_size = V, cfg.d_inner = 2 * dm;
    cfg.d_state = 16, cfg.d_conv = 4, cfg.dt_rank = (dm + 15) / 16, cfg.expand = 2;
    cfg.eps = 1e-5f, cfg.use_conv_bias = 1, cfg.tie_embeddings = 1;
    cmamba_error err;
    cm_train_model *m;
    cm_cuda_train *g;
    if (cm_train_model_new(&cfg, 1, &m, &err) || cm_cuda_train_new(&cfg, m->params, bf16, &g, &err)) {
        fprintf(stderr, "bench_cuda_train: %s\n", err.msg);
        return 1;
    }
    const size_t n = (size_t)B * T;
    int32_t *in = (int32_t *)malloc(sizeof(int32_t) * n * 2), *tg = in + n;
    uint64_t rng = 7;
    for (size_t i = 0; i < 2 * n; i++) in[i] = (int32_t)(cm_rng_u64(&rng) % (uint64_t)V);
    const cm_adamw_params ap = {3e-4f, 3e-5f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f, 10, 1000};
    double *fb = (double *)malloc(sizeof(double) * (reps + 1) * 2), *opt = fb + reps + 1;
    cm_train_stats st = {};
    float norm = 0;
    for (int r = 0; r <= reps; r++) { /* r = 0 warms up: buffers, cuBLAS's choices */
        const double t0 = now_s();
        if (cm_cuda_train_zero_grad(g, &err) ||
            cm_cuda_train_run(g, in, tg, B, T, 1.0f, &st, &err)) {
            fprintf(stderr, "bench_cuda_train: %s\n", err.msg);
            return 1;
        }
        const double t1 = now_s();
        if (cm_cuda_train_adamw(g, &ap, r, &norm, &err)) {
            fprintf(stderr, "bench_cuda_train: %s\n", err.msg);
            return 1;
        }
        fb[r] = t1 - t0, opt[r] = now_s() - t1;
    }
    std::sort(fb + 1, fb + reps + 1);
    std::sort(opt + 1, opt + reps + 1);
    const double t_fb = fb[1 + reps / 2], t_opt = opt[1 + reps / 2], step = t_fb + t_opt;
    const double flops = 6.0 * m->n_params * n + 27.0 * n * cfg.d_inner * cfg.d_state;
    printf("%s | d_model %d n_layer %d vocab %d (%.1fM parameters), %d x %d tokens\n",
           cm_cuda_train_describe(g), dm, nl, V, m->n_params / 1e6, B, T);
    printf("step %.1f ms (forward+backward %.1f, AdamW %.2f): %.0f tokens/s; loss %.4f, |g| %.3f\n",
           step * 1e3, t_fb * 1e3, t_opt * 1e3, n / step, st.loss, norm);
    printf("model FLOPs %.3g per step: %.1f TFLOP/s = MFU %.1f%% of 989 TFLOP/s (H100 dense bf16)\n",
           flops, flops / step / 1e12, 100 * flops / step / 989e12);
    cm_cuda_train_profile(g, 1);
    if (cm_cuda_train_run(g, in, tg, B, T, 1.0f, &st, &err)) {
        fprintf(stderr, "bench_cuda_train: %s\n", err.msg);
        return 1;
    }
    printf("phases of one forward+backward (ms):");
    for (int i = 0; i < CM_CUDA_PHASES; i++) {
        double ms;
        const char *name = cm_cuda_train_phase(g, i, &ms);
        printf("%s %s %.2f", i ? "," : "", name, ms);
    }
    printf("\n");
    free(in);
    free(fb);
    cm_cuda_train_free(g);
    cm_train_model_free(m);
    return 0;
}
