#include "train/data.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rng.h"

int cm_text_load(const char *path, const cmamba_tokenizer *tok, double val_fraction,
                 cm_text_data *out, cmamba_error *err) {
    memset(out, 0, sizeof *out);
    if (!(val_fraction >= 0 && val_fraction < 1))
        return cm_fail(err, "%s: validation fraction must be in [0, 1)", path);
    char *text;
    size_t len;
    if (cm_read_file(path, (size_t)1 << 32, &text, &len, err)) return -1;
    if (tok) {
        size_t n;
        int rc = cmamba_tokenize(tok, text, len, &out->tokens, &n, err);
        free(text);
        if (rc) return cm_fail(err, "%s: %s", path, err->msg);
        out->n = n;
        out->vocab_size = cmamba_tokenizer_vocab_size(tok);
    } else {
        out->tokens = cm_malloc(sizeof(int32_t) * (len ? len : 1), err);
        if (!out->tokens) { free(text); return -1; }
        for (size_t i = 0; i < len; i++) out->tokens[i] = (unsigned char)text[i];
        free(text);
        out->n = len;
        out->vocab_size = 256;
    }
    out->n_train = out->n - (size_t)((double)out->n * val_fraction);
    if (out->n_train < 2) {
        cm_text_free(out);
        return cm_fail(err, "%s: too little text to train on", path);
    }
    return 0;
}

void cm_text_free(cm_text_data *d) {
    free(d->tokens);
    memset(d, 0, sizeof *d);
}

void cm_text_train_batch(const cm_text_data *d, uint64_t *rng, int B, int T, int32_t *ids) {
    const size_t window = (size_t)T + 1;
    const size_t span = d->n_train > window ? d->n_train - window + 1 : 1;
    for (int b = 0; b < B; b++) {
        size_t start = (size_t)(cm_rng_uniform(rng) * (double)span);
        for (size_t i = 0; i < window; i++)
            ids[(size_t)b * window + i] = d->tokens[(start + i) % d->n_train];
    }
}

size_t cm_text_val_windows(const cm_text_data *d, int T) {
    return (d->n - d->n_train) / ((size_t)T + 1);
}

void cm_text_val_window(const cm_text_data *d, size_t i, int T, int32_t *ids) {
    memcpy(ids, d->tokens + d->n_train + i * ((size_t)T + 1), sizeof(int32_t) * ((size_t)T + 1));
}
