/* Internals of the byte-level BPE tokenizer, shared by its files:
 *   tokenizer.c   loading and checking tokenizer.json
 *   codec.c       cmamba_tokenize / cmamba_detokenize: the encode pipeline
 *   added.c       finding added tokens (<|endoftext|>, runs of spaces, ...)
 *   pretokenize.c NFC, the split regexes, GPT-2's byte-to-unicode alphabet
 *   bpe.c         hash maps and the merge loop
 * Encoding follows Hugging Face tokenizers step by step (see codec.c). */
#ifndef CM_TOKENIZER_H
#define CM_TOKENIZER_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>

#include "common.h"

/* ---- growable id list (encode output) --------------------------------- */

typedef struct {
    int32_t *v;
    size_t n, cap;
} tk_ids;

int tk_ids_push(tk_ids *ids, int32_t id, cmamba_error *err);

/* ---- bpe.c ---------------------------------------------------------------- */

/* String -> id, open addressing. Keys are borrowed, not copied. */
typedef struct {
    const char **keys;
    uint32_t *lens;
    int32_t *vals;
    size_t cap; /* a power of two, at least twice the number of keys */
} tk_strmap;

int tk_strmap_init(tk_strmap *m, size_t max_keys, cmamba_error *err);
void tk_strmap_free(tk_strmap *m);
/* Inserts key -> val; if the key is present already, returns its old value
 * and leaves the map unchanged; else returns -1. */
int32_t tk_strmap_put(tk_strmap *m, const char *key, size_t len, int32_t val);
int32_t tk_strmap_get(const tk_strmap *m, const char *key, size_t len); /* -1 if absent */

/* (left id, right id) -> (rank, merged id). */
typedef struct {
    uint64_t *keys; /* (left << 32 | right) + 1; 0 marks an empty slot */
    uint32_t *ranks;
    int32_t *merged;
    size_t cap;
} tk_pairmap;

int tk_pairmap_init(tk_pairmap *m, size_t max_keys, cmamba_error *err);
void tk_pairmap_free(tk_pairmap *m);
/* A later merge of the same pair replaces the earlier one, as in HF. */
void tk_pairmap_put(tk_pairmap *m, int32_t left, int32_t right, uint32_t rank, int32_t merged);

typedef struct {
    tk_strmap vocab;      /* token string (byte-level alphabet) -> id */
    tk_pairmap merges;
    int32_t byte_id[256]; /* id of the one-character token of each byte, or -1 */
    int32_t unk_id;       /* -1: characters missing from the vocab are dropped */
    int fuse_unk, ignore_merges;
} tk_bpe;

/* Reusable buffers of one tokenize call. */
typedef struct {
    struct tk_symbol *sym;
    struct tk_merge *heap;
    size_t sym_cap, heap_cap;
    char *mapped; /* the piece in the byte-level alphabet, for ignore_merges */
    size_t mapped_cap;
} tk_scratch;

void tk_scratch_free(tk_scratch *s);
/* Appends the ids of one pre-token (raw bytes; mapping to the byte-level
 * alphabet is implied by byte_id). */
int tk_bpe_encode(const tk_bpe *bpe, const unsigned char *piece, size_t len, tk_scratch *s,
                  tk_ids *out, cmamba_error *err);

/* ---- pretokenize.c ---------------------------------------------------------- */

/* GPT-2's reversible map of the 256 bytes to printable code points. */
uint32_t tk_byte_to_cp(unsigned char b);
int tk_cp_to_byte(uint32_t cp); /* -1 if cp is not in the alphabet */
/* Encodes byte b as its alphabet character in UTF-8 into out[2]; returns 1 or 2. */
int tk_byte_to_utf8(unsigned char b, char *out);

/* Compiles a pattern written for HF's Oniguruma with PCRE2 (UTF, UCP, JIT if
 * available), \s \p{L} \p{N} spelled out to match HF exactly; literal: a
 * plain string. On failure, NULL with the reason in why. */
pcre2_code *tk_regex_compile(const char *pattern, size_t len, int literal, char *why,
                             size_t why_len);
pcre2_code *tk_gpt2_regex(char *why, size_t why_len);

/* NFC of s[0..len) into a malloc'ed buffer (a copy when s is ASCII). */
int tk_nfc(const char *s, size_t len, char **out, size_t *out_len, cmamba_error *err);

/* Calls fn on each piece of an "Isolated" split of s by re: every match and
 * every gap between matches, empty ones skipped. */
typedef int (*tk_piece_fn)(void *ctx, const char *s, size_t len, cmamba_error *err);
int tk_split(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t len, tk_piece_fn fn,
             void *ctx, cmamba_error *err);

/* Unicode White_Space and the regex crate's \w, for the added-token rules. */
int tk_is_space(uint32_t cp);
int tk_is_word(uint32_t cp);
/* The code point starting at s[i] / ending just before s[i] in valid UTF-8. */
uint32_t tk_cp_at(const char *s, size_t len, size_t i, size_t *next);
uint32_t tk_cp_before(const char *s, size_t i, size_t *start);

/* ---- added.c ---------------------------------------------------------------- */

typedef struct {
    char *content; /* what is matched: the content, NFC'd if normalized */
    size_t len;
    int32_t id;
    int single_word, lstrip, rstrip;
} tk_added;

/* The added tokens matched on one side (raw or normalized text), sorted by
 * first byte and then longest first, for leftmost-longest matching. */
typedef struct {
    tk_added *tok;
    size_t n;
    size_t first[257]; /* tok[first[b] .. first[b+1]) start with byte b */
} tk_added_set;

void tk_added_index(tk_added_set *set);
void tk_added_free(tk_added_set *set);

/* Splits s into runs of text and added tokens, as HF's find_matches does:
 * calls text(ctx, ...) for each non-empty run between tokens and
 * tk_ids_push for each token. */
int tk_added_split(const tk_added_set *set, const char *s, size_t len, tk_piece_fn text, void *ctx,
                   tk_ids *out, cmamba_error *err);

/* ---- the tokenizer ------------------------------------------------------------ */

#define TK_MAX_SPLITS 8

struct cmamba_tokenizer {
    int32_t vocab_size;                /* largest id + 1 */
    const char **token_bytes;          /* [vocab_size]: what each id decodes to; NULL: none */
    uint32_t *token_len;               /* [vocab_size] */
    char *decoded;                     /* owns the token_bytes */
    tk_bpe bpe;
    char *strings;                     /* owns the vocab keys */
    tk_added_set added_raw, added_norm;
    int nfc;                           /* normalizer: NFC or none */
    pcre2_code *splits[TK_MAX_SPLITS]; /* pre_tokenizer Split steps, in order */
    int n_splits;
    pcre2_code *bytelevel_re; /* NULL when ByteLevel has use_regex false */
    int add_prefix_space;
    int32_t eos;
};

#endif
