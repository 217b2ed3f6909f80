/* libFuzzer target for the tokenizer: arbitrary bytes into cmamba_tokenize,
 * its ids and arbitrary ids into cmamba_detokenize. It checks that nothing
 * crashes, that tokenize accepts exactly the valid UTF-8 inputs, that every
 * id it returns decodes, and that decoding always yields valid UTF-8.
 *
 * The tokenizer is $CMAMBA_TOKENIZER if set (e.g. GPT-NeoX's), else the
 * small one below, whose vocab holds the 256 byte tokens plus a few merges,
 * with NFC, a Split regex before ByteLevel, and added tokens using every
 * flag. With CMAMBA_FUZZ_ROUNDTRIP=1 it also checks decode(encode(s)) ==
 * NFC(s), which holds for GPT-NeoX (no stripping tokens, no prefix space).
 *
 *   make fuzz && build-fuzz/fuzz_tokenizer -max_total_time=60 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

#include "common.h"

/* Everything but the vocab, which is made in code: "VOCAB" is replaced. */
static const char TEMPLATE[] =
    "{\"added_tokens\": ["
    "{\"id\": 263, \"content\": \"<|endoftext|>\", \"special\": true, \"normalized\": false,"
    " \"single_word\": false, \"lstrip\": false, \"rstrip\": false},"
    "{\"id\": 264, \"content\": \"<m>\", \"special\": true, \"normalized\": false,"
    " \"single_word\": false, \"lstrip\": true, \"rstrip\": true},"
    "{\"id\": 260, \"content\": \"cat\", \"special\": false, \"normalized\": true,"
    " \"single_word\": true, \"lstrip\": false, \"rstrip\": false},"
    "{\"id\": 265, \"content\": \"e\\u0301\", \"special\": false, \"normalized\": true,"
    " \"single_word\": false, \"lstrip\": false, \"rstrip\": true},"
    "{\"id\": 266, \"content\": \"  \", \"special\": false, \"normalized\": true,"
    " \"single_word\": false, \"lstrip\": false, \"rstrip\": false},"
    "{\"id\": 267, \"content\": \" \\t\", \"special\": false, \"normalized\": false,"
    " \"single_word\": false, \"lstrip\": true, \"rstrip\": false}],"
    " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}]},"
    " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
    "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\p{N}{1,3}|\\\\s*[\\\\r\\\\n]+\"},"
    " \"behavior\": \"Isolated\", \"invert\": false},"
    "{\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true}]},"
    " \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true,"
    " \"use_regex\": true},"
    " \"model\": {\"type\": \"BPE\", \"vocab\": {VOCAB}, \"merges\": ["
    "\"\\u0120 t\", \"h e\", \"\\u0120t he\", \"a t\", \"c at\", \"\\u0120 \\u0120\", \"\\u00c3 \\u00a9\"]}}";

/* GPT-2's byte -> code point map (the alphabet of the vocab). */
static unsigned byte_cp(unsigned b) {
    if (b <= 0x20) return 0x100 + b;
    if (b >= 0x7f && b <= 0xa0) return 0x121 + (b - 0x7f);
    return b == 0xad ? 0x143 : b;
}

/* Writes the embedded tokenizer to a temporary file; returns its path. */
static const char *write_embedded(void) {
    static char path[] = "/tmp/fuzz_tokenizer_XXXXXX";
    char vocab[256 * 20 + 200], *p = vocab;
    for (unsigned b = 0; b < 256; b++) p += sprintf(p, "\"\\u%04x\": %u, ", byte_cp(b), b);
    sprintf(p, "\"\\u0120t\": 256, \"he\": 257, \"\\u0120the\": 258, \"at\": 259, \"cat\": 260,"
               " \"\\u0120\\u0120\": 261, \"\\u00c3\\u00a9\": 262");
    const char *at = strstr(TEMPLATE, "VOCAB");
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f || fprintf(f, "%.*s%s%s", (int)(at - TEMPLATE), TEMPLATE, vocab, at + 5) < 0 ||
        fclose(f)) {
        fprintf(stderr, "fuzz_tokenizer: cannot write %s\n", path);
        abort();
    }
    return path;
}

static const cmamba_tokenizer *tokenizer(void) {
    static cmamba_tokenizer *tok;
    if (tok) return tok;
    const char *env = getenv("CMAMBA_TOKENIZER");
    const char *path = env && *env ? env : write_embedded();
    cmamba_error err;
    int rc = cmamba_tokenizer_load(path, &tok, &err);
    if (path != env) unlink(path);
    if (rc) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", err.msg);
        abort();
    }
    return tok;
}

static int valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int k = cm_utf8_char(s + i, n - i);
        if (k <= 0) return 0;
        i += (size_t)k;
    }
    return 1;
}

static void check_decode(const cmamba_tokenizer *tok, const int32_t *ids, size_t n, int must_work,
                         const uint8_t *nfc) {
    char *text;
    size_t len;
    cmamba_error err;
    if (cmamba_detokenize(tok, ids, n, &text, &len, &err)) {
        if (must_work) {
            fprintf(stderr, "ids from tokenize do not decode: %s\n", err.msg);
            abort();
        }
        return;
    }
    if (!valid_utf8((const uint8_t *)text, len) || strlen(text) > len) abort();
    if (nfc && (len != strlen((const char *)nfc) || memcmp(text, nfc, len))) {
        fprintf(stderr, "decode(encode(s)) != NFC(s)\n");
        abort();
    }
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const cmamba_tokenizer *tok = tokenizer();
    int32_t *ids;
    size_t n;
    cmamba_error err;
    int valid = valid_utf8(data, size);
    int rc = cmamba_tokenize(tok, (const char *)data, size, &ids, &n, &err);
    if ((rc == 0) != valid) {
        fprintf(stderr, "tokenize %s valid=%d input: %s\n", rc ? "rejected" : "accepted", valid,
                rc ? err.msg : "");
        abort();
    }
    if (rc == 0) {
        const char *rt = getenv("CMAMBA_FUZZ_ROUNDTRIP");
        uint8_t *nfc = NULL;
        /* NUL ends utf8proc's NFC input; compare only NUL-free texts */
        if (rt && *rt == '1' && !memchr(data, 0, size)) {
            char *z = malloc(size + 1);
            memcpy(z, data, size);
            z[size] = 0;
            nfc = utf8proc_NFC((const uint8_t *)z);
            free(z);
        }
        check_decode(tok, ids, n, 1, nfc);
        free(nfc);
        free(ids);
    }
    /* the same bytes as arbitrary ids, known or not */
    size_t k = size / 4;
    int32_t *raw = malloc((k + 1) * sizeof *raw);
    memcpy(raw, data, k * 4);
    for (size_t i = 0; i < k; i++) raw[i] %= 2 * cmamba_tokenizer_vocab_size(tok) + 1;
    check_decode(tok, raw, k, 0, NULL);
    free(raw);
    return 0;
}
