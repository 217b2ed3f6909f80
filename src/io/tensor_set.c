/* A set of named tensors: a growable array plus an open-addressing hash
 * index over the names (a hostile checkpoint may list millions of tensors,
 * so neither lookups nor duplicate checks may be quadratic). The set owns
 * the memory the tensors point into: mappings and malloc'ed buffers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"
#include "io/tensor_set.h"

typedef struct {
    void *addr;
    size_t len;
} mapping;

struct cm_tensor_set {
    cm_tensor *tensors;
    size_t n, cap;
    size_t *slots; /* index into tensors + 1, 0 = empty; n_slots is a power of two */
    size_t n_slots;
    mapping *maps;
    size_t n_maps, cap_maps;
    void **bufs;
    size_t n_bufs, cap_bufs;
    char **files; /* the file names tensors point to, one copy per file */
    size_t n_files, cap_files;
};

static const struct {
    const char *name;
    size_t size;
} dtypes[CM_DT_COUNT] = {
    [CM_DT_F64] = {"F64", 8},   [CM_DT_F32] = {"F32", 4}, [CM_DT_F16] = {"F16", 2},
    [CM_DT_BF16] = {"BF16", 2}, [CM_DT_I64] = {"I64", 8}, [CM_DT_I32] = {"I32", 4},
    [CM_DT_I16] = {"I16", 2},   [CM_DT_I8] = {"I8", 1},   [CM_DT_U8] = {"U8", 1},
    [CM_DT_BOOL] = {"BOOL", 1},
};

size_t cm_dtype_size(cm_dtype dt) { return (unsigned)dt < CM_DT_COUNT ? dtypes[dt].size : 0; }

const char *cm_dtype_name(cm_dtype dt) {
    return (unsigned)dt < CM_DT_COUNT ? dtypes[dt].name : "?";
}

void cm_shape_format(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

cm_tensor_set *cm_tensor_set_new(cmamba_error *err) {
    return cm_calloc(1, sizeof(cm_tensor_set), err);
}

void cm_tensors_drop_pages(cm_tensor_set *set, const void *p, size_t len) {
    enum { BLOCK = 2 << 20 };
    const uintptr_t a = (uintptr_t)p, b = a + len;
    for (size_t i = 0; set && i < set->n_maps; i++) {
        const uintptr_t lo = (uintptr_t)set->maps[i].addr, hi = lo + set->maps[i].len;
        if (a < lo || b > hi) continue;
        const uintptr_t from = a / BLOCK * BLOCK, to = (b + BLOCK - 1) / BLOCK * BLOCK;
        const uintptr_t s = from > lo ? from : lo, e = to < hi ? to : hi;
        madvise((void *)s, e - s, MADV_DONTNEED); /* s is the mapping's start or 2 MiB-aligned */
        return;
    }
}

void cm_tensors_close(cm_tensor_set *set) {
    if (!set) return;
    for (size_t i = 0; i < set->n; i++) free((char *)set->tensors[i].name);
    for (size_t i = 0; i < set->n_maps; i++) munmap(set->maps[i].addr, set->maps[i].len);
    for (size_t i = 0; i < set->n_bufs; i++) free(set->bufs[i]);
    for (size_t i = 0; i < set->n_files; i++) free(set->files[i]);
    free(set->tensors);
    free(set->slots);
    free(set->maps);
    free(set->bufs);
    free(set->files);
    free(set);
}

size_t cm_tensors_count(const cm_tensor_set *set) { return set->n; }

const cm_tensor *cm_tensors_at(const cm_tensor_set *set, size_t i) {
    return i < set->n ? &set->tensors[i] : NULL;
}

static size_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (size_t)h;
}

/* The slot that holds name, or the empty slot where it would go. */
static size_t *find_slot(const cm_tensor_set *set, const char *name) {
    size_t mask = set->n_slots - 1, i = hash_name(name) & mask;
    while (set->slots[i] && strcmp(set->tensors[set->slots[i] - 1].name, name)) i = (i + 1) & mask;
    return &set->slots[i];
}

const cm_tensor *cm_tensors_find(const cm_tensor_set *set, const char *name) {
    if (!set->n_slots) return NULL;
    size_t k = *find_slot(set, name);
    return k ? &set->tensors[k - 1] : NULL;
}

/* Grows a malloc'ed array of `item`-byte entries to hold at least need. */
static int grow(void *arr, size_t *cap, size_t need, size_t item, cmamba_error *err) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 8, bytes;
    while (n < need) n *= 2;
    if (cm_mul_size(n, item, &bytes)) return cm_fail(err, "out of memory (%zu entries)", need);
    void *p = realloc(*(void **)arr, bytes);
    if (!p) return cm_fail(err, "out of memory allocating %zu bytes", bytes);
    *(void **)arr = p;
    *cap = n;
    return 0;
}

/* Room for `more` tensors: array capacity, and an index at most half full. */
static int reserve(cm_tensor_set *set, size_t more, cmamba_error *err) {
    const size_t need = set->n + more;
    if (grow(&set->tensors, &set->cap, need, sizeof(cm_tensor), err)) return -1;
    if (need <= set->n_slots / 2) return 0;
    size_t n_slots = 64;
    while (n_slots / 2 < need) n_slots *= 2;
    size_t *slots = cm_calloc(n_slots, sizeof *slots, err);
    if (!slots) return -1;
    free(set->slots);
    set->slots = slots;
    set->n_slots = n_slots;
    for (size_t i = 0; i < set->n; i++) *find_slot(set, set->tensors[i].name) = i + 1;
    return 0;
}

/* On failure the caller still owns the mapping / buffer. */
int cm_tensor_set_adopt_mapping(cm_tensor_set *set, void *addr, size_t len, cmamba_error *err) {
    if (grow(&set->maps, &set->cap_maps, set->n_maps + 1, sizeof(mapping), err)) return -1;
    set->maps[set->n_maps++] = (mapping){addr, len};
    return 0;
}

int cm_tensor_set_adopt_buffer(cm_tensor_set *set, void *buf, cmamba_error *err) {
    if (grow(&set->bufs, &set->cap_bufs, set->n_bufs + 1, sizeof(void *), err)) return -1;
    set->bufs[set->n_bufs++] = buf;
    return 0;
}

/* Tensors are added file by file, so comparing with the last copy suffices. */
static const char *intern_file(cm_tensor_set *set, const char *file, cmamba_error *err) {
    if (set->n_files && !strcmp(set->files[set->n_files - 1], file))
        return set->files[set->n_files - 1];
    if (grow(&set->files, &set->cap_files, set->n_files + 1, sizeof(char *), err)) return NULL;
    char *copy = strdup(file);
    if (!copy) {
        cm_fail(err, "%s: out of memory", file);
        return NULL;
    }
    return set->files[set->n_files++] = copy;
}

int cm_tensor_set_add(cm_tensor_set *set, const char *name, cm_dtype dtype, int ndim,
                      const int64_t *shape, const void *data, size_t nbytes, const char *file,
                      cmamba_error *err) {
    if (!file) file = "(memory)";
    if (!*name) return cm_fail(err, "%s: a tensor has an empty name", file);
    if ((unsigned)dtype >= CM_DT_COUNT)
        return cm_fail(err, "%s: tensor '%s' has an unknown dtype", file, name);
    if (ndim < 0 || ndim > CM_MAX_DIMS)
        return cm_fail(err, "%s: tensor '%s' has %d dimensions (at most %d supported)", file, name,
                       ndim, CM_MAX_DIMS);
    size_t expect = cm_dtype_size(dtype);
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0 || (uint64_t)shape[d] > SIZE_MAX ||
            cm_mul_size(expect, (size_t)shape[d], &expect))
            return cm_fail(err, "%s: tensor '%s' has an impossible shape", file, name);
    if (expect != nbytes)
        return cm_fail(err, "%s: tensor '%s' holds %zu bytes, its shape and dtype need %zu", file,
                       name, nbytes, expect);
    if (reserve(set, 1, err)) return -1;
    size_t *slot = find_slot(set, name);
    if (*slot)
        return cm_fail(err, "%s: tensor '%s' appears twice (also in %s)", file, name,
                       set->tensors[*slot - 1].file);
    cm_tensor *t = &set->tensors[set->n];
    *t = (cm_tensor){.dtype = dtype, .ndim = ndim, .data = data, .nbytes = nbytes};
    if (ndim) memcpy(t->shape, shape, sizeof *shape * (size_t)ndim);
    if (!(t->file = intern_file(set, file, err))) return -1;
    if (!(t->name = strdup(name))) return cm_fail(err, "%s: out of memory", file);
    *slot = ++set->n;
    return 0;
}

static void append(void *dst, size_t *n, const void *src, size_t count, size_t item) {
    if (count) memcpy((char *)dst + *n * item, src, count * item);
    *n += count;
}

/* src is consumed whatever happens; on failure dst is left as it was. */
int cm_tensor_set_merge(cm_tensor_set *dst, cm_tensor_set *src, cmamba_error *err) {
    int rc = 0;
    for (size_t i = 0; i < src->n && rc == 0; i++) {
        const cm_tensor *t = &src->tensors[i], *other = cm_tensors_find(dst, t->name);
        if (other)
            rc = cm_fail(err, "tensor '%s' is in both %s and %s", t->name, other->file, t->file);
    }
    if (rc || reserve(dst, src->n, err) ||
        grow(&dst->maps, &dst->cap_maps, dst->n_maps + src->n_maps, sizeof(mapping), err) ||
        grow(&dst->bufs, &dst->cap_bufs, dst->n_bufs + src->n_bufs, sizeof(void *), err) ||
        grow(&dst->files, &dst->cap_files, dst->n_files + src->n_files, sizeof(char *), err)) {
        cm_tensors_close(src);
        return -1;
    }
    for (size_t i = 0; i < src->n; i++) {
        dst->tensors[dst->n] = src->tensors[i];
        *find_slot(dst, src->tensors[i].name) = ++dst->n;
    }
    append(dst->maps, &dst->n_maps, src->maps, src->n_maps, sizeof(mapping));
    append(dst->bufs, &dst->n_bufs, src->bufs, src->n_bufs, sizeof(void *));
    append(dst->files, &dst->n_files, src->files, src->n_files, sizeof(char *));
    /* everything now belongs to dst: free only src's arrays */
    src->n = src->n_maps = src->n_bufs = src->n_files = 0;
    cm_tensors_close(src);
    return 0;
}
