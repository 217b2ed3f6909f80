/* A set of named tensors read from checkpoint files without copying:
 * safetensors (single or sharded) or a PyTorch zip archive, memory-mapped
 * and validated in full before any tensor is handed out. */
#ifndef CM_TENSORS_H
#define CM_TENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "cmamba.h"

#define CM_MAX_DIMS 8

typedef enum {
    CM_DT_F64, CM_DT_F32, CM_DT_F16, CM_DT_BF16,
    CM_DT_I64, CM_DT_I32, CM_DT_I16, CM_DT_I8, CM_DT_U8, CM_DT_BOOL,
    CM_DT_COUNT
} cm_dtype;

size_t cm_dtype_size(cm_dtype dt);
const char *cm_dtype_name(cm_dtype dt); /* safetensors spelling: "F32", ... */
/* "[d0, d1, ...]" into buf, cut short at cap bytes */
void cm_shape_format(char *buf, size_t cap, int ndim, const int64_t *shape);

typedef struct {
    const char *name;
    cm_dtype dtype;
    int ndim;
    int64_t shape[CM_MAX_DIMS];
    const void *data; /* inside a read-only mapping; no alignment promise */
    size_t nbytes;    /* == product(shape) * dtype size, checked */
    const char *file; /* the file it lives in, for error messages */
} cm_tensor;

typedef struct cm_tensor_set cm_tensor_set;

/* One safetensors file. */
int cm_safetensors_open(const char *path, cm_tensor_set **out, cmamba_error *err);
/* Validates an in-memory safetensors image (used by the fuzzer); the set
 * points into buf, which must outlive it. */
int cm_safetensors_parse(const char *path_for_errors, const void *buf, size_t len,
                         cm_tensor_set **out, cmamba_error *err);
/* A checkpoint folder: model.safetensors, model.safetensors.index.json
 * (every shard opened, every tensor of the index found in its shard) or
 * pytorch_model.bin, in that order of preference. */
int cm_tensors_open_dir(const char *dir, cm_tensor_set **out, cmamba_error *err);
void cm_tensors_close(cm_tensor_set *set);
/* Drops the pages around [p, p + len) of the set's file mapping that holds
 * it from the process's memory (none if no mapping holds it): a tensor that
 * has moved out of its mapping. The range widens to whole 2 MiB blocks
 * within the mapping, since the page cache may map its large folios whole,
 * and a folio covered only in part stays mapped; tensors still used in
 * place there are read again from the file where touched. */
void cm_tensors_drop_pages(cm_tensor_set *set, const void *p, size_t len);

size_t cm_tensors_count(const cm_tensor_set *set);
const cm_tensor *cm_tensors_at(const cm_tensor_set *set, size_t i);
const cm_tensor *cm_tensors_find(const cm_tensor_set *set, const char *name);

/* Writes tensors to a safetensors file atomically (tmp + fsync + rename).
 * metadata: NULL or n_meta key/value string pairs for "__metadata__". */
typedef struct {
    const char *name;
    cm_dtype dtype;
    int ndim;
    int64_t shape[CM_MAX_DIMS];
    const void *data;
} cm_tensor_out;

int cm_safetensors_write(const char *path, const cm_tensor_out *tensors, size_t n,
                         const char *const *metadata, size_t n_meta, cmamba_error *err);

/* The PyTorch zip loader (torch.save since 1.6): src/io/torch_zip.c. */
int cm_torch_zip_open(const char *path, cm_tensor_set **out, cmamba_error *err);

#endif
