#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

int arg_is(const char *arg, const char *name) {
    size_t n = strlen(name);
    return strncmp(arg, name, n) == 0 && (arg[n] == 0 || arg[n] == '=');
}

const char *arg_value(const char *cmd, int argc, char **argv, int *i) {
    const char *eq = strchr(argv[*i], '=');
    if (eq && argv[*i][0] == '-' && argv[*i][1] == '-') return eq + 1;
    if (*i + 1 >= argc) {
        fprintf(stderr, "cmamba %s: %s: missing value\n", cmd, argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int arg_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0 || errno) {
        fprintf(stderr, "cmamba %s: %s: not an integer: '%s'\n", cmd, opt, s);
        return -1;
    }
    if (v < lo || v > hi) {
        fprintf(stderr, "cmamba %s: %s: %ld is out of range [%ld, %ld]\n", cmd, opt, v, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int arg_float(const char *cmd, const char *opt, const char *s, double lo, double hi,
              double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*s == 0 || *end != 0 || errno || !isfinite(v)) {
        fprintf(stderr, "cmamba %s: %s: not a number: '%s'\n", cmd, opt, s);
        return -1;
    }
    if (v < lo || v > hi) {
        fprintf(stderr, "cmamba %s: %s: %g is out of range [%g, %g]\n", cmd, opt, v, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int arg_u64(const char *cmd, const char *opt, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s == '-' || *s == 0) goto bad;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != 0 || errno) goto bad;
    *out = v;
    return 0;
bad:
    fprintf(stderr, "cmamba %s: %s: not a non-negative integer: '%s'\n", cmd, opt, s);
    return -1;
}

int arg_ids(const char *cmd, const char *opt, const char *s, long limit, int32_t **ids,
            size_t *n) {
    size_t cap = 16, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) { fprintf(stderr, "cmamba %s: out of memory\n", cmd); return -1; }
    const char *p = s;
    for (;;) {
        while (*p == ' ') p++;
        if (*p < '0' || *p > '9') {
            fprintf(stderr, "cmamba %s: %s: expected a non-negative integer at '%.20s'\n",
                    cmd, opt, p);
            free(v);
            return -1;
        }
        char *end;
        errno = 0;
        long id = strtol(p, &end, 10);
        if (errno || id >= limit) {
            fprintf(stderr, "cmamba %s: %s: id %.20s is out of range (vocabulary size %ld)\n",
                    cmd, opt, p, limit);
            free(v);
            return -1;
        }
        if (k == cap) {
            int32_t *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) { free(v); fprintf(stderr, "cmamba %s: out of memory\n", cmd); return -1; }
            v = nv;
        }
        v[k++] = (int32_t)id;
        p = end;
        while (*p == ' ') p++;
        if (*p == 0) break;
        if (*p != ',') {
            fprintf(stderr, "cmamba %s: %s: expected ',' at '%.20s'\n", cmd, opt, p);
            free(v);
            return -1;
        }
        p++;
    }
    *ids = v;
    *n = k;
    return 0;
}

void die_usage(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cmamba %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see cmamba %s --help)\n", cmd);
    va_end(ap);
    exit(2);
}

double cli_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double cli_peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}
