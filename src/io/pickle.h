/* The strict pickle reader behind the PyTorch zip loader: it runs the
 * data.pkl program that torch.save writes for a state dict and knows only
 * the opcodes and globals such a file uses. Separate from the zip reading
 * so that the fuzzer and the tests can feed it pickles from memory. */
#ifndef CM_PICKLE_H
#define CM_PICKLE_H

#include <stddef.h>

#include "io/tensor_set.h"

/* Resolves a storage's persistent id ('storage', type, key, location, numel)
 * to the nbytes bytes of record data/<key>. The bytes must stay valid for
 * the life of the set (e.g. a buffer adopted by it). Returns 0 or -1 with a
 * message in err. Called once per reference, so a shared storage is asked
 * for more than once. */
typedef int (*cm_torch_storage_fn)(void *ctx, const char *key, size_t nbytes, const void **data,
                                   cmamba_error *err);

/* Runs the pickle pkl[0..len) and adds every tensor of the state dict it
 * builds to set, named by its key. file names the checkpoint in messages.
 * On failure the set may hold some of the tensors; the caller closes it. */
int cm_torch_pickle_load(const char *file, const void *pkl, size_t len,
                         cm_torch_storage_fn get_storage, void *ctx, cm_tensor_set *set,
                         cmamba_error *err);

#endif
