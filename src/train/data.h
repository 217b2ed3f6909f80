/* Training text: a file as bytes (vocabulary 256) or as BPE tokens, split
 * into a training part and a held-out validation tail. */
#ifndef CM_DATA_H
#define CM_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "cmamba.h"

typedef struct {
    int32_t *tokens;
    size_t n;          /* tokens in all */
    size_t n_train;    /* tokens[0, n_train) train; [n_train, n) validation */
    int vocab_size;
} cm_text_data;

/* tok NULL: bytes. val_fraction of the tokens (at the end) is held out. */
int cm_text_load(const char *path, const cmamba_tokenizer *tok, double val_fraction,
                 cm_text_data *out, cmamba_error *err);
void cm_text_free(cm_text_data *d);

/* B windows of T+1 tokens at random offsets in the training part. */
void cm_text_train_batch(const cm_text_data *d, uint64_t *rng, int B, int T, int32_t *ids);
/* Number of non-overlapping validation windows of T+1 tokens, and one. */
size_t cm_text_val_windows(const cm_text_data *d, int T);
void cm_text_val_window(const cm_text_data *d, size_t i, int T, int32_t *ids);

#endif
