/* Building a cm_tensor_set: shared by the safetensors and PyTorch loaders. */
#ifndef CM_TENSOR_SET_H
#define CM_TENSOR_SET_H

#include "io/tensors.h"

cm_tensor_set *cm_tensor_set_new(cmamba_error *err);
/* The set takes ownership of a mapping (munmap'ed on close). */
int cm_tensor_set_adopt_mapping(cm_tensor_set *set, void *addr, size_t len, cmamba_error *err);
/* The set takes ownership of a malloc'ed buffer (freed on close). */
int cm_tensor_set_adopt_buffer(cm_tensor_set *set, void *buf, cmamba_error *err);
/* Copies name and file; data must live in an adopted mapping. Rejects
 * duplicate names and checks nbytes == product(shape) * dtype size. */
int cm_tensor_set_add(cm_tensor_set *set, const char *name, cm_dtype dtype, int ndim,
                      const int64_t *shape, const void *data, size_t nbytes, const char *file,
                      cmamba_error *err);
/* Moves every tensor and mapping of src into dst and frees src. */
int cm_tensor_set_merge(cm_tensor_set *dst, cm_tensor_set *src, cmamba_error *err);

#endif
