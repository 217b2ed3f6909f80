/* Process groups (src/dist): ranks started as torchrun starts them (by
 * environment) find each other, sums span several pieces and reach every
 * rank with the same bits, and a missing rank, a mismatched call or a bad
 * environment fails with a message instead of hanging. */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "dist/dist.h"
#include "group.h"
#include "test.h"

static void set_env(int world, int rank, int port) {
    char v[32];
    snprintf(v, sizeof v, "%d", world), setenv("WORLD_SIZE", v, 1);
    snprintf(v, sizeof v, "%d", rank), setenv("RANK", v, 1);
    snprintf(v, sizeof v, "%d", port), setenv("MASTER_PORT", v, 1);
}

/* 3 ranks: a float sum over 5M elements (several 4 MB pieces), a double
 * sum and a broadcast, all exact. */
static int sums(int rank, int world, const void *arg) {
    (void)arg;
    cm_dist *d;
    cmamba_error err;
    if (cm_dist_init(&d, &err)) return fprintf(stderr, "rank %d: %s\n", rank, err.msg), 1;
    int bad = cm_dist_rank(d) != rank || cm_dist_world(d) != world;
    const size_t n = 5u << 20;
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)((i % 1000) * (rank + 1));
    bad |= cm_dist_allreduce_sum(d, x, n, CM_DIST_F32, &err) != 0;
    const int scale = world * (world + 1) / 2;
    for (size_t i = 0; i < n && !bad; i++) bad |= x[i] != (float)((i % 1000) * scale);
    double v[3] = {rank, 0.5, -1.0 * rank};
    bad |= cm_dist_allreduce_sum(d, v, 3, CM_DIST_F64, &err) != 0;
    bad |= v[0] != 3.0 || v[1] != 1.5 || v[2] != -3.0;
    char id[128];
    memset(id, rank == 0 ? 'x' : 0, sizeof id);
    bad |= cm_dist_broadcast(d, id, sizeof id, &err) != 0;
    for (size_t i = 0; i < sizeof id; i++) bad |= id[i] != 'x';
    if (bad) fprintf(stderr, "rank %d: wrong result (%s)\n", rank, err.msg);
    free(x);
    cm_dist_free(d);
    return bad;
}

/* rank 1 broadcasts while rank 0 sums: rank 0 must say so. */
static int mismatch(int rank, int world, const void *arg) {
    (void)world, (void)arg;
    cm_dist *d;
    cmamba_error err;
    if (cm_dist_init(&d, &err)) return 1;
    float x = 1;
    int rc = rank == 0 ? cm_dist_allreduce_sum(d, &x, 1, CM_DIST_F32, &err)
                       : cm_dist_broadcast(d, &x, sizeof x, &err);
    int ok = rank != 0 || (rc != 0 && strstr(err.msg, "rank 1 called broadcast"));
    if (!ok) fprintf(stderr, "rank 0: expected a mismatch error, got rc %d '%s'\n", rc, err.msg);
    cm_dist_free(d);
    return !ok;
}

/* A group of 2 of which only rank 0 starts. */
static int alone(int rank, int world, const void *arg) {
    (void)rank, (void)world, (void)arg;
    cm_dist *d;
    cmamba_error err;
    setenv("WORLD_SIZE", "2", 1);
    setenv("CMAMBA_DIST_TIMEOUT", "1", 1);
    int rc = cm_dist_init(&d, &err);
    return !(rc != 0 && strstr(err.msg, "1 of 2 ranks joined"));
}

int main(void) {
    const int base_port = 20000 + (int)(getpid() % 20000);
    CHECK_MSG(run_group(3, base_port, sums, NULL) == 0, "3 ranks: sums, broadcast");
    CHECK_MSG(run_group(2, base_port + 1, mismatch, NULL) == 0, "mismatched calls are reported");
    CHECK_MSG(run_group(1, base_port + 2, alone, NULL) == 0, "a missing rank times out with a message");

    cmamba_error err;
    cm_dist *d;
    set_env(1, 0, base_port + 3);
    CHECK(cm_dist_init(&d, &err) == 0 && cm_dist_world(d) == 1);
    float x = 2;
    CHECK(cm_dist_allreduce_sum(d, &x, 1, CM_DIST_F32, &err) == 0 && x == 2);
    cm_dist_free(d);
    setenv("WORLD_SIZE", "two", 1);
    CHECK(cm_dist_init(&d, &err) != 0 && strstr(err.msg, "WORLD_SIZE=two"));
    set_env(2, 2, base_port + 4);
    CHECK(cm_dist_init(&d, &err) != 0 && strstr(err.msg, "RANK=2"));
    return test_summary();
}
