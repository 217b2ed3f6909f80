/* Argument parsing shared by the subcommands. Every failure prints one line
 * "cmamba CMD: ARG: problem" on stderr and returns -1. */
#ifndef CM_ARGS_H
#define CM_ARGS_H

#include <stddef.h>
#include <stdint.h>

/* Value of option argv[*i] (either "--opt VALUE" or "--opt=VALUE"); advances *i. */
const char *arg_value(const char *cmd, int argc, char **argv, int *i);
/* Is argv[i] the option `name` (exactly, or as "name=...")? */
int arg_is(const char *arg, const char *name);

int arg_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
int arg_float(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out);
int arg_u64(const char *cmd, const char *opt, const char *s, uint64_t *out);
/* "5,17,3" (spaces allowed) into a malloc'ed array; each id in [0, limit). */
int arg_ids(const char *cmd, const char *opt, const char *s, long limit, int32_t **ids, size_t *n);

void die_usage(const char *cmd, const char *fmt, ...);

/* Seconds on a monotonic clock, and the process's peak resident memory. */
double cli_now_s(void);
double cli_peak_rss_mib(void);

#endif
