/* Times one training step (cm_train_forward_backward), the training
 * forward alone (cm_train_loss) and prompt processing (cmamba_forward of
 * the inference model, saved and loaded back, over the batch's tokens as
 * one sequence), on random tokens: the minimum over repeats, as other work
 * on the machine only ever adds time. The step's model FLOP rate (3× the
 * forward's projections and head, cpu/roofline.h) is stated as a fraction
 * of the fp32 FMA peak measured with the same threads.
 *   bench_train [d_model n_layer vocab B T reps threads]
 * defaults 64 2 20 32 256 5 and every core; threads goes through
 * cmamba_set_threads, as the CLI's --threads does. d_inner is 2·d_model,
 * d_state 16, dt_rank ⌈d_model/16⌉, as in the Mamba checkpoints. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cpu/blas.h"
#include "cpu/roofline.h"
#include "rng.h"
#include "train/checkpoint.h"
#include "train/train_model.h"

int main(int argc, char **argv) {
    cm_blas_use_cpu_kernels(argv);
    const int dm = argc > 1 ? atoi(argv[1]) : 64, nl = argc > 2 ? atoi(argv[2]) : 2,
              V = argc > 3 ? atoi(argv[3]) : 20, B = argc > 4 ? atoi(argv[4]) : 32,
              T = argc > 5 ? atoi(argv[5]) : 256, reps = argc > 6 ? atoi(argv[6]) : 5;
    if (argc > 7) cmamba_set_threads(atoi(argv[7]));
    const cmamba_config cfg = {.d_model = dm, .n_layer = nl, .vocab_size = V,
                               .d_inner = 2 * dm, .d_state = 16, .d_conv = 4,
                               .dt_rank = (dm + 15) / 16, .expand = 2, .eps = 1e-5f,
                               .use_conv_bias = 1, .tie_embeddings = 1};
    cm_train_model *m;
    cmamba_model *im = NULL;
    cmamba_error err;
    char dir[] = "/tmp/bench_train.XXXXXX";
    if (cm_train_model_new(&cfg, 1, &m, &err) || !mkdtemp(dir) || cm_model_save(dir, m, &err) ||
        cmamba_model_load(dir, &im, &err)) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        return 1;
    }
    uint64_t rng = 7;
    int32_t *ids = malloc(sizeof(int32_t) * B * (T + 1));
    float *logits = malloc(sizeof(float) * V);
    for (int i = 0; i < B * (T + 1); i++) ids[i] = (int32_t)(cm_rng_u64(&rng) % V);
    double best[3] = {1e30, 1e30, 1e30};
    float loss = 0;
    for (int r = 0; r <= reps; r++) { /* r = 0 warms up (buffers, page faults) */
        double t[4];
        cm_train_zero_grad(m);
        t[0] = omp_get_wtime();
        if (cm_train_forward_backward(m, ids, B, T, &loss, &err)) break;
        t[1] = omp_get_wtime();
        if (cm_train_loss(m, ids, B, T, &loss, &err)) break;
        t[2] = omp_get_wtime();
        if (cmamba_forward(im, NULL, ids, (size_t)B * T, logits, 0, &err)) break;
        t[3] = omp_get_wtime();
        for (int k = 0; r && k < 3; k++)
            if (t[k + 1] - t[k] < best[k]) best[k] = t[k + 1] - t[k];
    }
    cm_roofline roof;
    if (cm_roofline_measure(&roof, (size_t)64 << 20, 3)) return 1;
    const double step_flops = 3.0 * B * T * (cm_projection_flops_per_token(&cfg) + 2.0 * dm * V);
    double gsum = 0;
    for (size_t i = 0; i < m->n_params; i++) gsum += m->grads[i];
    printf("d_model %d n_layer %d vocab %d, %d x %d tokens, %d threads: step %.1f ms "
           "(%.0f tok/s), forward %.1f ms, prompt %.1f ms (%.0f tok/s); loss %.6f, grad sum "
           "%.9g\n"
           "step: %.1f GFLOP/s = %.1f%% of the fp32 FMA peak (%.1f GFLOP/s, %s)\n",
           dm, nl, V, B, T, omp_get_max_threads(), best[0] * 1e3, B * T / best[0],
           best[1] * 1e3, best[2] * 1e3, B * T / best[2], loss, gsum, step_flops / best[0] / 1e9,
           100 * step_flops / best[0] / roof.fma_flops_per_s, roof.fma_flops_per_s / 1e9, roof.isa);
    free(ids);
    free(logits);
    cmamba_model_free(im);
    cm_train_model_free(m);
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char path[64];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    return 0;
}
