/* libFuzzer target for config.json parsing: arbitrary bytes as the file.
 * It checks that nothing crashes or leaks, that failures leave a message
 * naming the file, and that every accepted config is within the bounds the
 * rest of the library relies on (the limits config.c promises).
 *
 * Seeds: the config.json files of tests/fixtures/models, e.g.
 *   mkdir corpus; for d in tests/fixtures/models/hf_* tests/fixtures/models/orig_padded; do
 *     cp $d/config.json corpus/$(basename $d); done
 *   build-fuzz/fuzz_config -max_total_time=60 corpus */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "io/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cmamba_error err = {{0}};
    cmamba_config c;
    if (cm_config_parse("fuzz", (const char *)data, size, &c, &err) == 0) {
        if (c.d_model < 1 || c.d_model > 65536 || c.n_layer < 1 || c.n_layer > 4096 ||
            c.vocab_size < 1 || c.vocab_size > 16777216 || c.d_state < 1 || c.d_state > 4096 ||
            c.d_conv < 1 || c.d_conv > 256 || c.d_inner < 1 || c.d_inner > 262144 ||
            c.dt_rank < 1 || c.dt_rank > c.d_inner || !(c.eps > 0 && c.eps < 1))
            abort();
    } else if (strncmp(err.msg, "fuzz: ", 6)) {
        abort();
    }
    return 0;
}
