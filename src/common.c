#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int cm_fail(cmamba_error *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        /* one line, always */
        for (char *p = err->msg; *p; p++)
            if (*p == '\n' || *p == '\r') *p = ' ';
    }
    return -1;
}

void *cm_malloc(size_t n, cmamba_error *err) {
    void *p = malloc(n ? n : 1);
    if (!p) cm_fail(err, "out of memory allocating %zu bytes", n);
    return p;
}

void *cm_calloc(size_t count, size_t size, cmamba_error *err) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) cm_fail(err, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *cm_alloc_stream(size_t bytes) {
    enum { HUGE = 2 << 20, LINE = 64 };
    const size_t align = bytes >= HUGE ? HUGE : LINE, n = (bytes + align) / align * align;
    void *p = aligned_alloc(align, n);
#ifdef MADV_HUGEPAGE
    if (p && align == HUGE) madvise(p, n, MADV_HUGEPAGE); /* advice: failure is harmless */
#endif
    return p;
}

int cm_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

float cm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { mant <<= 1; e++; } while (!(mant & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

int cm_read_file(const char *path, size_t max_bytes, char **data, size_t *len,
                 cmamba_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return cm_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return cm_fail(err, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        fclose(f);
        return cm_fail(err, "%s: file too large (%lld bytes, limit %zu)", path,
                       (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = cm_malloc(n + 1, err);
    if (!buf) { fclose(f); return -1; }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    if (got != n) {
        free(buf);
        return cm_fail(err, "%s: short read (%zu of %zu bytes)", path, got, n);
    }
    buf[n] = 0;
    *data = buf;
    if (len) *len = n;
    return 0;
}

struct cm_atomic_file {
    int fd;
    char *path, *tmp;
};

int cm_atomic_open(const char *path, cm_atomic_file **out, cmamba_error *err) {
    cm_atomic_file *f = cm_calloc(1, sizeof *f, err);
    if (!f) return -1;
    size_t n = strlen(path) + 32;
    f->path = strdup(path);
    f->tmp = malloc(n);
    if (!f->path || !f->tmp) {
        free(f->path); free(f->tmp); free(f);
        return cm_fail(err, "%s: out of memory", path);
    }
    snprintf(f->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (f->fd < 0) {
        int e = errno;
        free(f->path); free(f->tmp); free(f);
        return cm_fail(err, "%s: cannot create: %s", path, strerror(e));
    }
    *out = f;
    return 0;
}

int cm_atomic_write(cm_atomic_file *f, const void *data, size_t n, cmamba_error *err) {
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(f->fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return cm_fail(err, "%s: write failed: %s", f->path, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

void cm_atomic_abort(cm_atomic_file *f) {
    if (!f) return;
    close(f->fd);
    unlink(f->tmp);
    free(f->path); free(f->tmp); free(f);
}

int cm_atomic_commit(cm_atomic_file *f, cmamba_error *err) {
    if (fsync(f->fd) != 0) {
        cm_fail(err, "%s: fsync failed: %s", f->path, strerror(errno));
        cm_atomic_abort(f);
        return -1;
    }
    if (close(f->fd) != 0 || rename(f->tmp, f->path) != 0) {
        cm_fail(err, "%s: cannot rename into place: %s", f->path, strerror(errno));
        f->fd = -1;
        unlink(f->tmp);
        free(f->path); free(f->tmp); free(f);
        return -1;
    }
    /* the rename itself is durable only once the folder is synced */
    char *dir = strdup(f->path);
    if (dir) {
        int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) { fsync(dfd); close(dfd); }
        free(dir);
    }
    free(f->path); free(f->tmp); free(f);
    return 0;
}

char *cm_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a > 0 && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

int cm_utf8_char(const unsigned char *s, size_t n) {
    const unsigned char c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;      /* no overlong forms */
        else if (c == 0xed) hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        else if (c == 0xf4) hi = 0x8f; /* nothing above U+10FFFF */
    } else {
        return -1;
    }
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        unsigned char min = i == 1 ? lo : 0x80, max = i == 1 ? hi : 0xbf;
        if (s[i] < min || s[i] > max) return -i;
    }
    return len;
}
