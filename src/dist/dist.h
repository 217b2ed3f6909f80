/* Data-parallel process groups: one process per device, found through the
 * environment variables torchrun sets (so `torchrun --no-python` and
 * `cmamba launch` both start them):
 *
 *   WORLD_SIZE   processes in the group (absent: a group of one)
 *   RANK         this process, 0 .. WORLD_SIZE−1
 *   LOCAL_RANK   this process on its host (picks the GPU; default RANK)
 *   MASTER_ADDR  host of rank 0 (IPv4 or a name; default 127.0.0.1)
 *   MASTER_PORT  TCP port rank 0 listens on (default 29500)
 *
 * Rank 0 listens; every other rank connects to it, and the group's few
 * host-side collectives go through rank 0 over those sockets: handing
 * NCCL's unique id to every rank, summing the loss statistics, and, where
 * NCCL cannot serve (several ranks on one GPU, or the CPU trainer), the
 * gradients themselves. Sums are taken at rank 0 in rank order, so every
 * rank receives the same bits, and a group's result does not depend on
 * timing. Each collective starts with a header naming the call, so ranks
 * that disagree about what comes next fail with a message, not garbage. */
#ifndef CM_DIST_H
#define CM_DIST_H

#include <stddef.h>

#include "cmamba.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cm_dist cm_dist;

/* The group of the environment; a group of one without WORLD_SIZE. Waits
 * up to CMAMBA_DIST_TIMEOUT seconds (default 120) for the others. */
int cm_dist_init(cm_dist **out, cmamba_error *err);
void cm_dist_free(cm_dist *d);

int cm_dist_rank(const cm_dist *d);
int cm_dist_world(const cm_dist *d);
int cm_dist_local_rank(const cm_dist *d);
int cm_dist_local_world(const cm_dist *d); /* LOCAL_WORLD_SIZE, default WORLD_SIZE */

typedef enum { CM_DIST_F32 = 0, CM_DIST_F64 = 1 } cm_dist_type;

/* buf (n elements) := the sum over ranks of every rank's buf, the same bits
 * on every rank. */
int cm_dist_allreduce_sum(cm_dist *d, void *buf, size_t n, cm_dist_type type, cmamba_error *err);
/* buf (n bytes) := rank 0's buf. */
int cm_dist_broadcast(cm_dist *d, void *buf, size_t n, cmamba_error *err);

#ifdef __cplusplus
}
#endif

#endif
