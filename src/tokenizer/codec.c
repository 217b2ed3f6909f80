/* Text to ids and back, in the order of HF tokenizers' encode:
 *   1. added tokens with normalized=false are cut out of the raw text;
 *   2. each run of text between them is NFC-normalised (if the normalizer
 *      says so) and the normalized=true added tokens are cut out of it;
 *   3. each remaining run goes through the pre-tokenizer: the Split regexes,
 *      then ByteLevel (a space prefix if configured, the GPT-2 regex);
 *   4. each piece is BPE-encoded in the byte-level alphabet.
 * Decoding joins the bytes of the tokens and replaces invalid UTF-8 with
 * U+FFFD like Rust's String::from_utf8_lossy. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

typedef struct {
    const cmamba_tokenizer *tok;
    pcre2_match_data *md;
    tk_scratch scratch;
    tk_ids ids;
    char *prefixed; /* " " + run, for add_prefix_space */
    size_t prefixed_cap;
} encoder;

/* Where a run of text is in the pre-tokenizer: before Split step `step`,
 * or before ByteLevel once step == n_splits. */
typedef struct {
    encoder *e;
    int step;
} stage;

static int encode_piece(void *ctx, const char *s, size_t len, cmamba_error *err) {
    encoder *e = ctx;
    return tk_bpe_encode(&e->tok->bpe, (const unsigned char *)s, len, &e->scratch, &e->ids, err);
}

static int byte_level(encoder *e, const char *s, size_t len, cmamba_error *err) {
    const cmamba_tokenizer *tok = e->tok;
    if (tok->add_prefix_space && s[0] != ' ') {
        if (len + 1 > e->prefixed_cap) {
            char *p = realloc(e->prefixed, len + 1);
            if (!p) return cm_fail(err, "out of memory for a %zu-byte run of text", len);
            e->prefixed = p;
            e->prefixed_cap = len + 1;
        }
        e->prefixed[0] = ' ';
        memcpy(e->prefixed + 1, s, len);
        s = e->prefixed;
        len++;
    }
    if (!tok->bytelevel_re) return encode_piece(e, s, len, err);
    return tk_split(tok->bytelevel_re, e->md, s, len, encode_piece, e, err);
}

static int pre_tokenize(void *ctx, const char *s, size_t len, cmamba_error *err) {
    const stage *st = ctx;
    if (st->step == st->e->tok->n_splits) return byte_level(st->e, s, len, err);
    stage next = {st->e, st->step + 1};
    return tk_split(st->e->tok->splits[st->step], st->e->md, s, len, pre_tokenize, &next, err);
}

/* A run of raw text between normalized=false added tokens. */
static int normalize_run(void *ctx, const char *s, size_t len, cmamba_error *err) {
    encoder *e = ctx;
    stage first = {e, 0};
    if (!e->tok->nfc)
        return tk_added_split(&e->tok->added_norm, s, len, pre_tokenize, &first, &e->ids, err);
    char *nfc;
    size_t n;
    if (tk_nfc(s, len, &nfc, &n, err)) return -1;
    int rc = tk_added_split(&e->tok->added_norm, nfc, n, pre_tokenize, &first, &e->ids, err);
    free(nfc);
    return rc;
}

int cmamba_tokenize(const cmamba_tokenizer *tok, const char *text, size_t len, int32_t **ids,
                    size_t *n_ids, cmamba_error *err) {
    *ids = NULL;
    *n_ids = 0;
    for (size_t i = 0; i < len;) {
        int n = cm_utf8_char((const unsigned char *)text + i, len - i);
        if (n <= 0) return cm_fail(err, "invalid UTF-8 at byte offset %zu", i);
        i += (size_t)n;
    }
    encoder e = {.tok = tok, .md = pcre2_match_data_create(1, NULL)};
    if (!e.md) return cm_fail(err, "out of memory");
    int rc = tk_added_split(&tok->added_raw, text, len, normalize_run, &e, &e.ids, err);
    if (rc == 0 && !e.ids.v && !(e.ids.v = cm_malloc(sizeof *e.ids.v, err))) /* never NULL */
        rc = -1;
    pcre2_match_data_free(e.md);
    tk_scratch_free(&e.scratch);
    free(e.prefixed);
    if (rc) {
        free(e.ids.v);
        return -1;
    }
    *ids = e.ids.v;
    *n_ids = e.ids.n;
    return 0;
}

int cmamba_detokenize(const cmamba_tokenizer *tok, const int32_t *ids, size_t n_ids, char **text,
                      size_t *len, cmamba_error *err) {
    *text = NULL;
    if (len) *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        size_t n;
        if (!cmamba_token_bytes(tok, ids[i], &n))
            return cm_fail(err, "unknown token id %d (vocabulary size %d)", (int)ids[i],
                           tok->vocab_size);
        total += n;
    }
    /* every invalid byte may become the three bytes of U+FFFD */
    size_t cap;
    if (cm_mul_size(total, 3, &cap) || cap == SIZE_MAX)
        return cm_fail(err, "decoded text too long");
    char *raw = cm_malloc(total + 1, err), *out = cm_malloc(cap + 1, err);
    if (!raw || !out) {
        free(raw);
        free(out);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < n_ids; i++) {
        size_t n;
        const char *b = cmamba_token_bytes(tok, ids[i], &n);
        memcpy(raw + k, b, n);
        k += n;
    }
    size_t o = 0;
    for (size_t i = 0; i < total;) {
        int n = cm_utf8_char((const unsigned char *)raw + i, total - i);
        if (n > 0) {
            memcpy(out + o, raw + i, (size_t)n);
            o += (size_t)n;
            i += (size_t)n;
        } else { /* one U+FFFD per maximal invalid subpart; a cut-off tail is one */
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i += n < 0 ? (size_t)-n : total - i;
        }
    }
    out[o] = 0;
    free(raw);
    *text = out;
    if (len) *len = o;
    return 0;
}
