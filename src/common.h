/* Internal helpers shared by every module: errors, checked allocation,
 * half-precision conversion, atomic file writes. */
#ifndef CM_COMMON_H
#define CM_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cmamba.h"

#if defined(__GNUC__)
#define CM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CM_PRINTF(a, b)
#endif

/* Formats a one-line message into err (if non-NULL); returns -1 so callers
 * can write `return cm_fail(err, ...)`. */
int cm_fail(cmamba_error *err, const char *fmt, ...) CM_PRINTF(2, 3);

/* malloc/calloc that report failure through err instead of crashing. */
void *cm_malloc(size_t n, cmamba_error *err);
void *cm_calloc(size_t count, size_t size, cmamba_error *err);

/* A buffer to be streamed (weights, the bandwidth probe): from 2 MiB up
 * aligned to 2 MiB and offered transparent huge pages (a streaming read
 * over 4 KiB pages stops for a page walk every 64 cache lines: measured
 * 15-20% slower here), else aligned to a cache line. Freed with free(). */
void *cm_alloc_stream(size_t bytes);

/* a*b with overflow detection; returns 0 and sets *out, or -1 on overflow. */
int cm_mul_size(size_t a, size_t b, size_t *out);

float cm_f16_to_f32(uint16_t h);
/* inline, so that loops over rows of them vectorise */
static inline float cm_bf16_to_f32(uint16_t b) {
    const uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* round to nearest even; a NaN stays a (quiet) NaN */
static inline uint16_t cm_f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    const uint16_t nan = (uint16_t)((bits >> 16) | 0x40);
    bits += 0x7fffu + ((bits >> 16) & 1);
    return (f != f) ? nan : (uint16_t)(bits >> 16);
}

/* Reads a whole file (at most max_bytes) into a NUL-terminated buffer. */
int cm_read_file(const char *path, size_t max_bytes, char **data, size_t *len,
                 cmamba_error *err);

/* Atomic write: path.tmp.<pid>, fsync, rename over path, fsync the folder. */
typedef struct cm_atomic_file cm_atomic_file;
int cm_atomic_open(const char *path, cm_atomic_file **out, cmamba_error *err);
int cm_atomic_write(cm_atomic_file *f, const void *data, size_t n, cmamba_error *err);
int cm_atomic_commit(cm_atomic_file *f, cmamba_error *err); /* frees f */
void cm_atomic_abort(cm_atomic_file *f);                      /* frees f, removes tmp */

/* path_join(dir, name) into a malloc'ed string (NULL on OOM). */
char *cm_path_join(const char *dir, const char *name);

#endif

/* The UTF-8 character at s[0..n): its length (1-4) if valid and complete;
 * 0 if s is a valid prefix cut short by n; −k if invalid, k being the
 * maximal subpart that one U+FFFD replaces (as Rust's from_utf8_lossy and
 * so HF tokenizers' decode do). n must be > 0. */
int cm_utf8_char(const unsigned char *s, size_t n);
