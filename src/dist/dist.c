/* Process groups over TCP through rank 0 (see dist.h). */
#define _POSIX_C_SOURCE 200809L

#include "dist/dist.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define HELLO_MAGIC 0x434d4449u /* "CMDI" */
#define CHUNK_BYTES (4u << 20)  /* sums travel in pieces: bounded buffers, no deadlock */

struct cm_dist {
    int rank, world, local_rank, local_world;
    int *peer;       /* rank 0: socket of rank r at peer[r] (peer[0] unused) */
    int root;        /* other ranks: socket to rank 0 */
    double timeout_s;
    unsigned char *chunk; /* rank 0: one incoming piece */
};

typedef struct {
    uint32_t magic, rank, world, pad;
} hello;

/* What every collective announces, so that mismatched calls are caught. */
typedef struct {
    uint32_t op, type;
    uint64_t n;
} call;

enum { OP_ALLREDUCE = 1, OP_BROADCAST = 2 };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int env_int(const char *name, int fallback, int lo, int hi, int *out, cmamba_error *err) {
    const char *s = getenv(name);
    if (!s || !*s) {
        *out = fallback;
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return cm_fail(err, "environment: %s=%s is not an integer in [%d, %d]", name, s, lo, hi);
    *out = (int)v;
    return 0;
}

/* ---- byte streams ------------------------------------------------------------ */

static int send_all(const cm_dist *d, int fd, int peer, const void *buf, size_t n,
                    cmamba_error *err) {
    const unsigned char *p = buf;
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0)
            return cm_fail(err, "rank %d: sending to rank %d failed: %s (did it stop?)", d->rank,
                           peer, strerror(errno));
        p += k, n -= (size_t)k;
    }
    return 0;
}

static int recv_all(const cm_dist *d, int fd, int peer, void *buf, size_t n, cmamba_error *err) {
    unsigned char *p = buf;
    while (n) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int r = poll(&pf, 1, (int)(d->timeout_s * 1000));
        if (r < 0 && errno == EINTR) continue;
        if (r == 0)
            return cm_fail(err, "rank %d: rank %d sent nothing for %.0f s (CMAMBA_DIST_TIMEOUT)",
                           d->rank, peer, d->timeout_s);
        ssize_t k = recv(fd, p, n, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k == 0) return cm_fail(err, "rank %d: rank %d closed its connection (did it fail?)",
                                   d->rank, peer);
        if (k < 0)
            return cm_fail(err, "rank %d: receiving from rank %d failed: %s", d->rank, peer,
                           strerror(errno));
        p += k, n -= (size_t)k;
    }
    return 0;
}

/* ---- rendezvous -------------------------------------------------------------- */

static int resolve(const char *host, int port, struct addrinfo **ai, cmamba_error *err) {
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    int rc = getaddrinfo(host, service, &hints, ai);
    if (rc) return cm_fail(err, "MASTER_ADDR=%s: %s", host, gai_strerror(rc));
    return 0;
}

static void no_delay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int listen_for_ranks(cm_dist *d, const struct addrinfo *ai, int port, cmamba_error *err) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0) return cm_fail(err, "rank 0: socket: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in any = *(const struct sockaddr_in *)ai->ai_addr;
    any.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(fd, (struct sockaddr *)&any, sizeof any) || listen(fd, d->world)) {
        cm_fail(err, "rank 0: cannot listen on port %d (MASTER_PORT): %s", port, strerror(errno));
        close(fd);
        return -1;
    }
    const double deadline = now_s() + d->timeout_s;
    for (int joined = 1; joined < d->world;) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int left_ms = (int)((deadline - now_s()) * 1000);
        if (left_ms <= 0 || poll(&pf, 1, left_ms) == 0) {
            cm_fail(err, "rank 0: %d of %d ranks joined within %.0f s (CMAMBA_DIST_TIMEOUT)",
                    joined, d->world, d->timeout_s);
            close(fd);
            return -1;
        }
        int c = accept(fd, NULL, NULL);
        if (c < 0) continue;
        hello h;
        if (recv_all(d, c, -1, &h, sizeof h, err)) {
            close(c);
            close(fd);
            return -1;
        }
        if (h.magic != HELLO_MAGIC || h.world != (uint32_t)d->world || h.rank < 1 ||
            h.rank >= (uint32_t)d->world || d->peer[h.rank] >= 0) {
            cm_fail(err, "rank 0: a process joined as rank %u of %u; expected a new rank of %d",
                    h.rank, h.world, d->world);
            close(c);
            close(fd);
            return -1;
        }
        no_delay(c);
        d->peer[h.rank] = c;
        joined++;
    }
    close(fd);
    return 0;
}

static int connect_to_root(cm_dist *d, const struct addrinfo *ai, cmamba_error *err) {
    const double deadline = now_s() + d->timeout_s;
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) return cm_fail(err, "rank %d: socket: %s", d->rank, strerror(errno));
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            no_delay(fd);
            d->root = fd;
            hello h = {HELLO_MAGIC, (uint32_t)d->rank, (uint32_t)d->world, 0};
            return send_all(d, fd, 0, &h, sizeof h, err);
        }
        close(fd);
        if (now_s() > deadline)
            return cm_fail(err, "rank %d: rank 0 did not answer within %.0f s", d->rank,
                           d->timeout_s);
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL); /* rank 0 may start later */
    }
}

int cm_dist_init(cm_dist **out, cmamba_error *err) {
    *out = NULL;
    cm_dist *d = cm_calloc(1, sizeof *d, err);
    if (!d) return -1;
    d->root = -1;
    int port = 0, timeout = 0;
    if (env_int("WORLD_SIZE", 1, 1, 65536, &d->world, err) ||
        env_int("RANK", 0, 0, d->world - 1, &d->rank, err) ||
        env_int("LOCAL_RANK", d->rank, 0, d->world - 1, &d->local_rank, err) ||
        env_int("LOCAL_WORLD_SIZE", d->world, 1, d->world, &d->local_world, err) ||
        env_int("MASTER_PORT", 29500, 1, 65535, &port, err) ||
        env_int("CMAMBA_DIST_TIMEOUT", 120, 1, 86400, &timeout, err)) {
        free(d);
        return -1;
    }
    d->timeout_s = timeout;
    if (d->world > 1) {
        const char *host = getenv("MASTER_ADDR");
        struct addrinfo *ai;
        if (resolve(host && *host ? host : "127.0.0.1", port, &ai, err)) {
            free(d);
            return -1;
        }
        int rc;
        if (d->rank == 0) {
            d->peer = cm_malloc(sizeof(int) * (size_t)d->world, err);
            d->chunk = cm_malloc(CHUNK_BYTES, err);
            for (int r = 0; d->peer && r < d->world; r++) d->peer[r] = -1;
            rc = d->peer && d->chunk ? listen_for_ranks(d, ai, port, err) : -1;
        } else {
            rc = connect_to_root(d, ai, err);
        }
        freeaddrinfo(ai);
        if (rc) {
            cm_dist_free(d);
            return -1;
        }
    }
    *out = d;
    return 0;
}

void cm_dist_free(cm_dist *d) {
    if (!d) return;
    for (int r = 1; d->peer && r < d->world; r++)
        if (d->peer[r] >= 0) close(d->peer[r]);
    if (d->root >= 0) close(d->root);
    free(d->peer);
    free(d->chunk);
    free(d);
}

int cm_dist_rank(const cm_dist *d) { return d->rank; }
int cm_dist_world(const cm_dist *d) { return d->world; }
int cm_dist_local_rank(const cm_dist *d) { return d->local_rank; }
int cm_dist_local_world(const cm_dist *d) { return d->local_world; }

/* ---- collectives ------------------------------------------------------------- */

static const char *op_name(uint32_t op) {
    return op == OP_ALLREDUCE ? "all-reduce" : op == OP_BROADCAST ? "broadcast" : "?";
}

/* Every rank announces its call to rank 0, which checks that all agree. */
static int agree(cm_dist *d, call c, cmamba_error *err) {
    if (d->rank != 0) return send_all(d, d->root, 0, &c, sizeof c, err);
    for (int r = 1; r < d->world; r++) {
        call o;
        if (recv_all(d, d->peer[r], r, &o, sizeof o, err)) return -1;
        if (o.op != c.op || o.type != c.type || o.n != c.n)
            return cm_fail(err, "rank %d called %s of %llu elements while rank 0 called %s of %llu",
                           r, op_name(o.op), (unsigned long long)o.n, op_name(c.op),
                           (unsigned long long)c.n);
    }
    return 0;
}

static void add_into(void *acc, const void *x, size_t n, cm_dist_type type) {
    if (type == CM_DIST_F32) {
        float *a = acc;
        const float *b = x;
        for (size_t i = 0; i < n; i++) a[i] += b[i];
    } else {
        double *a = acc;
        const double *b = x;
        for (size_t i = 0; i < n; i++) a[i] += b[i];
    }
}

int cm_dist_allreduce_sum(cm_dist *d, void *buf, size_t n, cm_dist_type type, cmamba_error *err) {
    if (d->world == 1) return 0;
    const size_t size = type == CM_DIST_F32 ? sizeof(float) : sizeof(double);
    if (agree(d, (call){OP_ALLREDUCE, (uint32_t)type, n}, err)) return -1;
    const size_t per_chunk = CHUNK_BYTES / size;
    for (size_t at = 0; at < n; at += per_chunk) {
        const size_t k = n - at < per_chunk ? n - at : per_chunk;
        unsigned char *piece = (unsigned char *)buf + at * size;
        if (d->rank != 0) {
            if (send_all(d, d->root, 0, piece, k * size, err) ||
                recv_all(d, d->root, 0, piece, k * size, err))
                return -1;
            continue;
        }
        for (int r = 1; r < d->world; r++) { /* rank order: the same bits on every run */
            if (recv_all(d, d->peer[r], r, d->chunk, k * size, err)) return -1;
            add_into(piece, d->chunk, k, type);
        }
        for (int r = 1; r < d->world; r++)
            if (send_all(d, d->peer[r], r, piece, k * size, err)) return -1;
    }
    return 0;
}

int cm_dist_broadcast(cm_dist *d, void *buf, size_t n, cmamba_error *err) {
    if (d->world == 1) return 0;
    if (agree(d, (call){OP_BROADCAST, 0, n}, err)) return -1;
    if (d->rank != 0) return recv_all(d, d->root, 0, buf, n, err);
    for (int r = 1; r < d->world; r++)
        if (send_all(d, d->peer[r], r, buf, n, err)) return -1;
    return 0;
}
