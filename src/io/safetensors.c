/* safetensors files (https://github.com/huggingface/safetensors):
 *     8 bytes   N, little-endian u64
 *     N bytes   JSON header: {"name": {"dtype": "F32", "shape": [2, 3],
 *                             "data_offsets": [begin, end]}, ...,
 *                             "__metadata__": {"key": "value"}}   (optional)
 *     the rest  the data section; offsets are relative to its start
 * Files are memory-mapped and checked as strictly as the reference Rust
 * implementation checks them (tensors tile the data section exactly), so
 * that a file we accept loads everywhere and one we write loads here. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "io/tensor_set.h"

#define MAX_HEADER 100000000u         /* the reference implementation's limit */
#define MAX_INDEX (64u << 20)         /* model.safetensors.index.json */
#define JSON_EXACT 9007199254740992.0 /* 2^53: JSON numbers from here on are not exact */
#define WRITE_LIMIT 1e15              /* cJSON prints integers from 10^15 on as 1e+15 */
#define INDEX_NAME "model.safetensors.index.json"

/* One header entry, validated. */
typedef struct {
    const char *name;
    cm_dtype dtype;
    int ndim;
    int64_t shape[CM_MAX_DIMS];
    uint64_t begin, end;
} entry;

/* ---- JSON helpers ------------------------------------------------------ */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A name that occurs twice in names[0..n) (sorted in place), or NULL. */
static const char *first_duplicate(const char **names, size_t n) {
    if (n > 1) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(names[i - 1], names[i])) return names[i];
    return NULL;
}

/* cJSON keeps every copy of a repeated key where JSON readers elsewhere
 * keep one, so a repeated key is an error: files must mean one thing. */
static int check_unique_keys(const char *path, const char *what, const cJSON *obj,
                             cmamba_error *err) {
    size_t n = (size_t)cJSON_GetArraySize(obj), i = 0;
    const char **names = cm_malloc(n * sizeof *names, err);
    if (!names) return -1;
    for (const cJSON *c = obj->child; c; c = c->next) names[i++] = c->string;
    const char *dup = first_duplicate(names, n);
    int rc = dup ? cm_fail(err, "%s: %s has the key '%s' twice", path, what, dup) : 0;
    free(names);
    return rc;
}

/* JSON text must be UTF-8 with no raw control characters (cJSON would
 * skip them as if they were spaces). */
static int check_text(const char *path, const char *what, const unsigned char *s, size_t n,
                      cmamba_error *err) {
    for (size_t i = 0; i < n;) {
        if (s[i] < 0x20 && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return cm_fail(err, "%s: %s holds the control byte 0x%02x at offset %zu", path, what,
                           s[i], i);
        int k = cm_utf8_char(s + i, n - i);
        if (k <= 0) return cm_fail(err, "%s: %s is not valid UTF-8 (offset %zu)", path, what, i);
        i += (size_t)k;
    }
    return 0;
}

/* Parses a JSON object that must fill text[0..n) up to trailing spaces. */
static int parse_object(const char *path, const char *what, const char *text, size_t n, cJSON **out,
                        cmamba_error *err) {
    *out = NULL;
    if (check_text(path, what, (const unsigned char *)text, n, err)) return -1;
    const char *end = text;
    cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    size_t at = end >= text && end <= text + n ? (size_t)(end - text) : n;
    if (root)
        while (at < n &&
               (text[at] == ' ' || text[at] == '\t' || text[at] == '\n' || text[at] == '\r'))
            at++;
    if (!root || at < n) {
        cJSON_Delete(root);
        return cm_fail(err, "%s: %s is not valid JSON (error at byte %zu)", path, what, at);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return cm_fail(err, "%s: %s is not a JSON object", path, what);
    }
    if (check_unique_keys(path, what, root, err)) {
        cJSON_Delete(root);
        return -1;
    }
    *out = root;
    return 0;
}

/* A JSON number that is a non-negative integer JSON can state exactly. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d < JSON_EXACT) || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

/* ---- reading ----------------------------------------------------------- */

static int parse_dtype(const char *s, cm_dtype *out) {
    for (int d = 0; d < CM_DT_COUNT; d++)
        if (!strcmp(s, cm_dtype_name((cm_dtype)d))) {
            *out = (cm_dtype)d;
            return 0;
        }
    return -1;
}

static int parse_entry(const char *path, const cJSON *item, size_t data_len, entry *e,
                       cmamba_error *err) {
    const char *name = e->name = item->string;
    if (!*name) return cm_fail(err, "%s: a tensor has an empty name", path);
    char what[160];
    snprintf(what, sizeof what, "tensor '%.140s'", name);
    if (!cJSON_IsObject(item))
        return cm_fail(err, "%s: %s: its entry is not a JSON object", path, what);
    if (check_unique_keys(path, what, item, err)) return -1;

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    if (!cJSON_IsString(dtype))
        return cm_fail(err, "%s: %s: missing or non-string dtype", path, what);
    if (parse_dtype(dtype->valuestring, &e->dtype))
        return cm_fail(err,
                       "%s: %s: unknown dtype '%.32s' (known: F64 F32 F16 BF16 I64 I32 I16 I8 U8 "
                       "BOOL)",
                       path, what, dtype->valuestring);

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!cJSON_IsArray(shape))
        return cm_fail(err, "%s: %s: missing or non-array shape", path, what);
    e->ndim = cJSON_GetArraySize(shape);
    if (e->ndim > CM_MAX_DIMS)
        return cm_fail(err, "%s: %s: shape has %d dimensions, more than the %d supported", path,
                       what, e->ndim, CM_MAX_DIMS);
    size_t nbytes = cm_dtype_size(e->dtype);
    int d = 0, overflow = 0;
    for (const cJSON *v = shape->child; v; v = v->next, d++) {
        uint64_t dim;
        if (json_uint(v, &dim))
            return cm_fail(err,
                           "%s: %s: shape dimension %d is not a non-negative integer below 2^53",
                           path, what, d);
        e->shape[d] = (int64_t)dim;
        overflow |= cm_mul_size(nbytes, (size_t)dim, &nbytes);
    }
    char shp[CM_MAX_DIMS * 20 + 8];
    cm_shape_format(shp, sizeof shp, e->ndim, e->shape);
    if (overflow) return cm_fail(err, "%s: %s: the size of shape %s overflows", path, what, shp);

    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        json_uint(offs->child, &e->begin) || json_uint(offs->child->next, &e->end))
        return cm_fail(err, "%s: %s: data_offsets must be two non-negative integers [begin, end]",
                       path, what);
    if (e->begin > e->end)
        return cm_fail(err, "%s: %s: data_offsets [%llu, %llu) begin after they end", path, what,
                       (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > data_len)
        return cm_fail(err,
                       "%s: %s: data offsets [%llu, %llu) exceed the data section (%zu bytes; "
                       "truncated file?)",
                       path, what, (unsigned long long)e->begin, (unsigned long long)e->end,
                       data_len);
    if (e->end - e->begin != nbytes)
        return cm_fail(
            err, "%s: %s: data offsets [%llu, %llu) hold %llu bytes, shape %s of %s needs %zu",
            path, what, (unsigned long long)e->begin, (unsigned long long)e->end,
            (unsigned long long)(e->end - e->begin), shp, cm_dtype_name(e->dtype), nbytes);
    return 0;
}

static int cmp_offsets(const void *a, const void *b) {
    const entry *x = *(const entry *const *)a, *y = *(const entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* Tensors must tile the data section: no overlaps, no holes, no tail. */
static int check_tiling(const char *path, entry *es, size_t n, size_t data_len, cmamba_error *err) {
    entry **order = cm_malloc(n * sizeof *order, err);
    if (!order) return -1;
    for (size_t i = 0; i < n; i++) order[i] = &es[i];
    if (n > 1) qsort(order, n, sizeof *order, cmp_offsets);
    uint64_t pos = 0;
    const entry *prev = NULL;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const entry *e = order[i];
        if (e->begin < pos)
            rc = cm_fail(err, "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap", path,
                         prev->name, (unsigned long long)prev->begin, (unsigned long long)prev->end,
                         e->name, (unsigned long long)e->begin, (unsigned long long)e->end);
        else if (e->begin > pos)
            rc = cm_fail(err,
                         "%s: the data section has a hole: bytes [%llu, %llu) before tensor '%s' "
                         "belong to no tensor",
                         path, (unsigned long long)pos, (unsigned long long)e->begin, e->name);
        pos = e->end;
        prev = e;
    }
    if (rc == 0 && pos < data_len) {
        if (prev)
            rc = cm_fail(err,
                         "%s: the data section has %llu bytes after its last tensor '%s' that "
                         "belong to no tensor",
                         path, (unsigned long long)(data_len - pos), prev->name);
        else
            rc =
                cm_fail(err, "%s: the data section holds %zu bytes but the header lists no tensors",
                        path, data_len);
    }
    free(order);
    return rc;
}

static int check_metadata(const char *path, const cJSON *meta, cmamba_error *err) {
    if (!cJSON_IsObject(meta)) return cm_fail(err, "%s: __metadata__ is not a JSON object", path);
    if (check_unique_keys(path, "__metadata__", meta, err)) return -1;
    for (const cJSON *c = meta->child; c; c = c->next)
        if (!cJSON_IsString(c))
            return cm_fail(err, "%s: __metadata__ value of '%.64s' is not a string", path,
                           c->string);
    return 0;
}

/* Validates the parsed header against data[0..data_len), then builds the set. */
static int load_header(const char *path, const cJSON *root, const unsigned char *data,
                       size_t data_len, cm_tensor_set **out, cmamba_error *err) {
    size_t n = (size_t)cJSON_GetArraySize(root), k = 0;
    entry *es = cm_calloc(n, sizeof *es, err);
    if (!es) return -1;
    int rc = 0;
    for (const cJSON *c = root->child; c && rc == 0; c = c->next)
        rc = !strcmp(c->string, "__metadata__") ? check_metadata(path, c, err)
                                                : parse_entry(path, c, data_len, &es[k++], err);
    if (rc == 0) rc = check_tiling(path, es, k, data_len, err);
    cm_tensor_set *set = rc == 0 ? cm_tensor_set_new(err) : NULL;
    if (rc == 0 && !set) rc = -1;
    for (size_t i = 0; i < k && rc == 0; i++) {
        const entry *e = &es[i];
        rc = cm_tensor_set_add(set, e->name, e->dtype, e->ndim, e->shape, data + e->begin,
                               (size_t)(e->end - e->begin), path, err);
    }
    free(es);
    if (rc) {
        cm_tensors_close(set);
        return -1;
    }
    *out = set;
    return 0;
}

int cm_safetensors_parse(const char *path, const void *buf, size_t len, cm_tensor_set **out,
                         cmamba_error *err) {
    *out = NULL;
    const unsigned char *p = buf;
    if (len < 8)
        return cm_fail(err, "%s: file is %zu bytes, too short for a safetensors header length (8)",
                       path, len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | p[i];
    if (n > MAX_HEADER)
        return cm_fail(err, "%s: header length %llu exceeds the limit of %u bytes", path,
                       (unsigned long long)n, MAX_HEADER);
    if (n > len - 8)
        return cm_fail(err, "%s: header length %llu runs past the end of the file (%zu bytes)",
                       path, (unsigned long long)n, len);
    cJSON *root;
    if (parse_object(path, "header", (const char *)p + 8, (size_t)n, &root, err)) return -1;
    int rc = load_header(path, root, p + 8 + n, len - 8 - (size_t)n, out, err);
    cJSON_Delete(root);
    return rc;
}

int cm_safetensors_open(const char *path, cm_tensor_set **out, cmamba_error *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return cm_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return cm_fail(err, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return cm_fail(err, "%s: file too large to map", path);
    }
    size_t len = (size_t)st.st_size;
    if (len == 0) { /* mmap refuses empty files; parse words the error */
        close(fd);
        return cm_safetensors_parse(path, "", 0, out, err);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return cm_fail(err, "%s: cannot map: %s", path, strerror(e));
    if (cm_safetensors_parse(path, map, len, out, err)) {
        munmap(map, len);
        return -1;
    }
    if (cm_tensor_set_adopt_mapping(*out, map, len, err)) {
        cm_tensors_close(*out);
        *out = NULL;
        munmap(map, len);
        return -1;
    }
    return 0;
}

/* ---- checkpoint folders ------------------------------------------------- */

/* Shards must be plain names inside the folder: an index must not reach out. */
static int plain_file_name(const char *s) {
    return *s && strcmp(s, ".") && strcmp(s, "..") && !strchr(s, '/') && !strchr(s, '\\');
}

static size_t find_shard(const char **shards, size_t n, const char *name) {
    const char **hit = bsearch(&name, shards, n, sizeof *shards, cmp_str);
    return (size_t)(hit - shards);
}

/* Opens every shard once, checks each tensor of the weight map is in the
 * shard it names, and merges the shards (a tensor in two is an error). */
static int load_shards(const char *dir, const char *index, const cJSON *map, const char **shards,
                       size_t n_shards, cm_tensor_set **out, cmamba_error *err) {
    cm_tensor_set **sets = cm_calloc(n_shards, sizeof *sets, err);
    char **paths = cm_calloc(n_shards, sizeof *paths, err);
    int rc = sets && paths ? 0 : -1;
    for (size_t i = 0; i < n_shards && rc == 0; i++) {
        paths[i] = cm_path_join(dir, shards[i]);
        rc = paths[i] ? cm_safetensors_open(paths[i], &sets[i], err)
                      : cm_fail(err, "%s: out of memory", index);
    }
    for (const cJSON *c = map->child; c && rc == 0; c = c->next) {
        size_t i = find_shard(shards, n_shards, c->valuestring);
        if (!cm_tensors_find(sets[i], c->string))
            rc = cm_fail(err, "%s: tensor '%s' is not in this shard, as %s says it is", paths[i],
                         c->string, index);
    }
    cm_tensor_set *set = rc == 0 ? cm_tensor_set_new(err) : NULL;
    if (rc == 0 && !set) rc = -1;
    for (size_t i = 0; i < n_shards && rc == 0; i++) {
        rc = cm_tensor_set_merge(set, sets[i], err);
        sets[i] = NULL;
    }
    for (size_t i = 0; i < n_shards; i++) {
        if (sets) cm_tensors_close(sets[i]);
        if (paths) free(paths[i]);
    }
    free(sets);
    free(paths);
    if (rc) {
        cm_tensors_close(set);
        return -1;
    }
    *out = set;
    return 0;
}

static int open_index(const char *dir, const char *index, cm_tensor_set **out, cmamba_error *err) {
    char *text;
    size_t len;
    if (cm_read_file(index, MAX_INDEX, &text, &len, err)) return -1;
    cJSON *root;
    int rc = parse_object(index, "the index", text, len, &root, err);
    free(text);
    if (rc) return -1;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    size_t n = (size_t)cJSON_GetArraySize(map), n_shards = 0;
    const char **shards = NULL;
    if (!cJSON_IsObject(map) || n == 0)
        rc = cm_fail(err, "%s: no weight_map object naming the shard of each tensor", index);
    else if (check_unique_keys(index, "weight_map", map, err) ||
             !(shards = cm_malloc(n * sizeof *shards, err)))
        rc = -1;
    for (const cJSON *c = map ? map->child : NULL; c && rc == 0; c = c->next) {
        if (!cJSON_IsString(c))
            rc = cm_fail(err, "%s: the shard of tensor '%s' is not a string", index, c->string);
        else if (!plain_file_name(c->valuestring))
            rc =
                cm_fail(err, "%s: shard '%s' of tensor '%s' is not a plain file name in the folder",
                        index, c->valuestring, c->string);
        else
            shards[n_shards++] = c->valuestring;
    }
    if (rc == 0) { /* sorted and deduplicated: each shard opens once */
        qsort(shards, n_shards, sizeof *shards, cmp_str);
        size_t k = 0;
        for (size_t i = 0; i < n_shards; i++)
            if (k == 0 || strcmp(shards[k - 1], shards[i])) shards[k++] = shards[i];
        rc = load_shards(dir, index, map, shards, k, out, err);
    }
    free(shards);
    cJSON_Delete(root);
    return rc;
}

int cm_tensors_open_dir(const char *dir, cm_tensor_set **out, cmamba_error *err) {
    *out = NULL;
    char *single = cm_path_join(dir, "model.safetensors"), *index = cm_path_join(dir, INDEX_NAME),
         *torch = cm_path_join(dir, "pytorch_model.bin");
    struct stat st;
    int rc;
    if (!single || !index || !torch)
        rc = cm_fail(err, "%s: out of memory", dir);
    else if (stat(single, &st) == 0)
        rc = cm_safetensors_open(single, out, err);
    else if (stat(index, &st) == 0)
        rc = open_index(dir, index, out, err);
    else if (stat(torch, &st) == 0)
        rc = cm_torch_zip_open(torch, out, err);
    else
        rc = cm_fail(err, "%s: no model.safetensors, %s or pytorch_model.bin in this folder", dir,
                     INDEX_NAME);
    free(single);
    free(index);
    free(torch);
    return rc;
}

/* ---- writing ----------------------------------------------------------- */

/* Checks tensor t for writing and adds its header entry at *offset. */
static int add_out_entry(const char *path, cJSON *root, const cm_tensor_out *t, uint64_t *offset,
                         size_t *nbytes, cmamba_error *err) {
    if (!*t->name) return cm_fail(err, "%s: a tensor has an empty name", path);
    if (check_text(path, "a tensor name", (const unsigned char *)t->name, strlen(t->name), err))
        return -1;
    if ((unsigned)t->dtype >= CM_DT_COUNT || t->ndim < 0 || t->ndim > CM_MAX_DIMS)
        return cm_fail(err, "%s: tensor '%s' has a bad dtype or rank", path, t->name);
    size_t size = cm_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] < 0 || t->shape[d] >= WRITE_LIMIT ||
            cm_mul_size(size, (size_t)t->shape[d], &size))
            return cm_fail(err, "%s: tensor '%s' has an impossible shape", path, t->name);
    if (size >= WRITE_LIMIT || *offset + size >= WRITE_LIMIT)
        return cm_fail(err, "%s: tensor '%s' ends beyond 10^15 bytes, too large to write", path,
                       t->name);
    if (size && !t->data) return cm_fail(err, "%s: tensor '%s' has no data", path, t->name);
    cJSON *e = cJSON_AddObjectToObject(root, t->name);
    double dims[CM_MAX_DIMS], offs[2] = {(double)*offset, (double)(*offset + size)};
    for (int d = 0; d < t->ndim; d++) dims[d] = (double)t->shape[d];
    if (!e || !cJSON_AddStringToObject(e, "dtype", cm_dtype_name(t->dtype)) ||
        !cJSON_AddItemToObject(e, "shape", cJSON_CreateDoubleArray(dims, t->ndim)) ||
        !cJSON_AddItemToObject(e, "data_offsets", cJSON_CreateDoubleArray(offs, 2)))
        return cm_fail(err, "%s: out of memory", path);
    *offset += size;
    *nbytes = size;
    return 0;
}

/* The header JSON for tensors[0..n), with sizes[i] set to each one's bytes. */
static char *build_header(const char *path, const cm_tensor_out *tensors, size_t n,
                          const char *const *metadata, size_t n_meta, size_t *sizes,
                          cmamba_error *err) {
    const char **names = cm_malloc((n + 1) * sizeof *names, err);
    cJSON *root = cJSON_CreateObject();
    int rc = names && root ? 0 : cm_fail(err, "%s: out of memory", path);
    if (rc == 0) { /* "__metadata__" is reserved */
        for (size_t i = 0; i < n; i++) names[i] = tensors[i].name;
        names[n] = "__metadata__";
        const char *dup = first_duplicate(names, n + 1);
        if (dup) rc = cm_fail(err, "%s: tensor name '%s' is used twice or reserved", path, dup);
    }
    if (rc == 0 && n_meta) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        for (size_t i = 0; i < n_meta && rc == 0; i++)
            if (!meta || !cJSON_AddStringToObject(meta, metadata[2 * i], metadata[2 * i + 1]))
                rc = cm_fail(err, "%s: out of memory", path);
        if (rc == 0) rc = check_unique_keys(path, "__metadata__", meta, err);
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = add_out_entry(path, root, &tensors[i], &offset, &sizes[i], err);
    char *text = rc == 0 ? cJSON_PrintUnformatted(root) : NULL;
    if (rc == 0 && !text) cm_fail(err, "%s: out of memory", path);
    free(names);
    cJSON_Delete(root);
    return text;
}

int cm_safetensors_write(const char *path, const cm_tensor_out *tensors, size_t n,
                         const char *const *metadata, size_t n_meta, cmamba_error *err) {
    size_t *sizes = cm_calloc(n, sizeof *sizes, err);
    char *text = sizes ? build_header(path, tensors, n, metadata, n_meta, sizes, err) : NULL;
    if (!text) {
        free(sizes);
        return -1;
    }
    /* spaces pad the header so that the data section starts 64-byte
     * aligned: a cache line, so that vector loads of tensors used in place
     * from a mapping need not straddle two */
    size_t len = strlen(text), padded = (8 + len + 63) / 64 * 64 - 8;
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    static const char spaces[64] = "                                                               ";
    cm_atomic_file *f;
    int rc = cm_atomic_open(path, &f, err);
    if (rc == 0) {
        rc = cm_atomic_write(f, le, 8, err) || cm_atomic_write(f, text, len, err) ||
             cm_atomic_write(f, spaces, padded - len, err);
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = cm_atomic_write(f, tensors[i].data, sizes[i], err);
        if (rc)
            cm_atomic_abort(f);
        else
            rc = cm_atomic_commit(f, err);
    }
    cJSON_free(text);
    free(sizes);
    return rc ? -1 : 0;
}
