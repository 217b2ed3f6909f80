/* How fast the GEMV kernels (cm_matmul with one row) stream weights, per
 * format and instruction set, for the matrices of mamba-130m: in_proj
 * (768 → 3072), out_proj (1536 → 768) and the LM head (768 → 50280). Each
 * shape is copied until the copies fill `mb` MB, several times the last
 * level cache, and one pass multiplies every copy once, as a token goes
 * through the layers; GB/s is weight bytes (quants and scales) over the
 * best pass's time. The formats take turns pass by pass, so that other
 * work on the machine weighs on them alike. The measured read bandwidth of
 * the machine (src/cpu/roofline.c) is the bound.
 *   bench_gemv [mb reps]   defaults 256 5; threads 1, then 2 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmamba.h"
#include "common.h"
#include "cpu/matrix.h"
#include "cpu/roofline.h"
#include "rng.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    const char *name;
    int rows, cols;
} shape;

/* copies of one random matrix of a shape and format */
typedef struct {
    cm_wtype type;
    size_t copies, qb, sb, bytes;
    unsigned char *q;
    uint16_t *s;
} bench_set;

static void set_init(bench_set *b, const shape *sh, cm_wtype t, size_t total) {
    b->type = t;
    b->qb = (size_t)sh->rows * cm_matrix_row_bytes(t, sh->cols);
    b->sb = (size_t)sh->rows * cm_matrix_row_scales(t, sh->cols);
    b->bytes = cm_matrix_bytes(t, sh->rows, sh->cols);
    b->copies = total / b->bytes > 0 ? total / b->bytes : 1;
    /* allocated as the model's weights are (src/model/weights.c) */
    b->q = cm_alloc_stream(b->qb * b->copies);
    b->s = malloc(sizeof *b->s * (b->sb ? b->sb * b->copies : 1));
    float *row = malloc(sizeof(float) * sh->cols);
    if (!b->q || !b->s || !row) {
        fprintf(stderr, "bench_gemv: out of memory\n");
        exit(1);
    }
    uint64_t rng = 1;
    for (int r = 0; r < sh->rows; r++) {
        for (int c = 0; c < sh->cols; c++) row[c] = (float)cm_rng_normal(&rng) * 0.02f;
        cm_matrix_encode_row(t, sh->cols, row, b->q + (size_t)r * (b->qb / sh->rows),
                             b->s + (size_t)r * (b->sb / sh->rows));
    }
    for (size_t k = 1; k < b->copies; k++) {
        memcpy(b->q + k * b->qb, b->q, b->qb);
        memcpy(b->s + k * b->sb, b->s, sizeof *b->s * b->sb);
    }
    free(row);
}

/* seconds of one pass over every copy */
static double pass(const bench_set *b, const shape *sh, const float *x, float *out) {
    const double t0 = now_s();
    for (size_t k = 0; k < b->copies; k++) {
        const cm_matrix W = {.type = b->type, .rows = sh->rows, .cols = sh->cols,
                             .q = b->q + k * b->qb, .scale = b->sb ? b->s + k * b->sb : NULL};
        cm_matmul(out, x, &W, NULL, 1);
    }
    return now_s() - t0;
}

int main(int argc, char **argv) {
    const size_t total = (size_t)(argc > 1 ? atoi(argv[1]) : 256) << 20;
    const int reps = argc > 2 ? atoi(argv[2]) : 5;
    static const shape shapes[] = {
        {"in_proj 768->3072", 3072, 768},
        {"out_proj 1536->768", 768, 1536},
        {"lm_head 768->50280", 50280, 768},
    };
    enum { N_SHAPES = sizeof shapes / sizeof *shapes };
    double bw[2], rate[CM_ISA_COUNT][CM_WT_COUNT][N_SHAPES][2] = {{{{0}}}};
    for (int th = 1; th <= 2; th++) {
        cmamba_set_threads(th);
        cm_roofline roof;
        if (cm_roofline_measure(&roof, total, reps)) {
            fprintf(stderr, "bench_gemv: out of memory\n");
            return 1;
        }
        bw[th - 1] = roof.read_bytes_per_s / 1e9;
    }
    float *x = malloc(sizeof(float) * 1536), *out = malloc(sizeof(float) * 50280);
    uint64_t rng = 2;
    for (int c = 0; c < 1536; c++) x[c] = (float)cm_rng_normal(&rng);
    for (int i = 0; i < N_SHAPES; i++) {
        bench_set sets[CM_WT_COUNT];
        for (int t = 0; t < CM_WT_COUNT; t++) set_init(&sets[t], &shapes[i], (cm_wtype)t, total);
        for (int isa = 0; isa < CM_ISA_COUNT; isa++) {
            if (!cm_isa_supported((cm_isa)isa)) continue;
            cm_isa_force((cm_isa)isa);
            for (int th = 1; th <= 2; th++) {
                cmamba_set_threads(th);
                double best[CM_WT_COUNT];
                for (int t = 0; t < CM_WT_COUNT; t++) /* warm-up */
                    best[t] = pass(&sets[t], &shapes[i], x, out);
                for (int rep = 0; rep < reps; rep++)
                    for (int t = 0; t < CM_WT_COUNT; t++) {
                        const double dt = pass(&sets[t], &shapes[i], x, out);
                        best[t] = dt < best[t] ? dt : best[t];
                    }
                for (int t = 0; t < CM_WT_COUNT; t++)
                    rate[isa][t][i][th - 1] = (double)(sets[t].bytes * sets[t].copies) / best[t] / 1e9;
            }
        }
        for (int t = 0; t < CM_WT_COUNT; t++) {
            free(sets[t].q);
            free(sets[t].s);
        }
    }
    printf("memory read bandwidth: %.1f GB/s (1 thread), %.1f GB/s (2 threads)\n", bw[0], bw[1]);
    printf("%-7s %-5s %-20s %8s %8s   (GB/s of weights; %% of read bandwidth)\n", "isa",
           "dtype", "matrix", "1 thr", "2 thr");
    for (int isa = CM_ISA_COUNT - 1; isa >= 0; isa--) {
        if (!cm_isa_supported((cm_isa)isa)) continue;
        for (int t = 0; t < CM_WT_COUNT; t++)
            for (int i = 0; i < N_SHAPES; i++) {
                const double *r = rate[isa][t][i];
                printf("%-7s %-5s %-20s %8.1f %8.1f   (%3.0f%% %3.0f%%)\n", cm_isa_name((cm_isa)isa),
                       cm_wtype_name((cm_wtype)t), shapes[i].name, r[0], r[1], 100 * r[0] / bw[0],
                       100 * r[1] / bw[1]);
            }
    }
    free(x);
    free(out);
    return 0;
}
