/* libFuzzer target for the safetensors reader: arbitrary bytes as a file
 * image. It checks that nothing crashes or leaks, that failures leave a
 * message naming the file, and that every tensor handed out lies inside
 * the buffer with exactly the bytes its shape and dtype need.
 *
 * Seeds: any small safetensors files, e.g. those test_safetensors writes
 *   (build-io/test-tmp/safetensors) copied into corpus/, then
 *   build-fuzz/fuzz_safetensors -max_total_time=60 corpus */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "io/tensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cmamba_error err = {{0}};
    cm_tensor_set *set = NULL;
    if (cm_safetensors_parse("fuzz", data, size, &set, &err) == 0) {
        for (size_t i = 0; i < cm_tensors_count(set); i++) {
            const cm_tensor *t = cm_tensors_at(set, i);
            const uint8_t *p = t->data;
            size_t numel = 1;
            for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
            if (p < data || p > data + size || t->nbytes > (size_t)(data + size - p) ||
                t->nbytes != numel * cm_dtype_size(t->dtype) || cm_tensors_find(set, t->name) != t)
                abort();
        }
        cm_tensors_close(set);
    } else if (set || strncmp(err.msg, "fuzz: ", 6)) {
        abort();
    }
    return 0;
}
