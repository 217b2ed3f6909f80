/* libFuzzer target for the pickle reader of the PyTorch zip loader: arbitrary
 * bytes as data.pkl, storages served from one zeroed buffer, so no zip is
 * needed. It checks that nothing crashes or leaks, that failures leave a
 * message naming the file, and that every tensor handed out lies inside
 * the storage it came from.
 *
 * Seeds: the data.pkl of any torch.save file, e.g.
 *   unzip -p tests/fixtures/torch_zip/state_dict.pt state_dict/data.pkl > corpus/sd
 *   build-fuzz/fuzz_torch_zip -max_total_time=60 corpus */
#include <stdlib.h>
#include <string.h>

#include "common.h"
/* The library is built without coverage instrumentation; compiling the
 * reader into this target lets libFuzzer see its branches. */
#include "io/pickle.c"

static unsigned char storage[1 << 16];

static int zero_storage(void *ctx, const char *key, size_t nbytes, const void **data,
                        cmamba_error *err) {
    if (nbytes > sizeof storage) return cm_fail(err, "fuzz: storage '%s' too large", key);
    *data = storage;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cmamba_error err = {{0}};
    cm_tensor_set *set = cm_tensor_set_new(&err);
    if (!set) abort();
    if (cm_torch_pickle_load("fuzz", data, size, zero_storage, NULL, set, &err) == 0) {
        for (size_t i = 0; i < cm_tensors_count(set); i++) {
            const cm_tensor *t = cm_tensors_at(set, i);
            const unsigned char *p = t->data;
            if (p < storage || p > storage + sizeof storage ||
                t->nbytes > (size_t)(storage + sizeof storage - p))
                abort();
        }
    } else if (strncmp(err.msg, "fuzz", 4)) {
        abort();
    }
    cm_tensors_close(set);
    return 0;
}
