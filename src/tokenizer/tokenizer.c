/* Loading a Hugging Face tokenizer.json for byte-level BPE, and checking
 * it: every problem is one line naming the file and the JSON field.
 *
 * Supported, as HF tokenizers reads them: model BPE (vocab; merges as
 * "a b" strings or [a, b] pairs; unk_token, fuse_unk, ignore_merges);
 * added_tokens; normalizer null, NFC or a Sequence of those; pre_tokenizer
 * ByteLevel, alone or last in a Sequence after Split steps (a regex or
 * string, behavior Isolated); decoder ByteLevel. The post_processor is not
 * applied: ids are those of HF's encode(text, add_special_tokens=False),
 * which for GPT-NeoX's ByteLevel post-processor is the same as encode(text). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

#define MAX_FILE_BYTES ((size_t)256 << 20)
#define MAX_ID (1 << 22) /* bounds the id -> token table */

/* State of one load: the file name for messages and the table of what each
 * id decodes from (HF's id_to_token), filled by the vocab and added tokens. */
typedef struct {
    const char *path;
    cmamba_error *err;
    size_t n_added;    /* entries of added_tokens */
    const char **text; /* [largest vocab id + 1 + n_added] */
    int32_t max_id;
    size_t n_vocab;
} loader;

static const cJSON *field(const cJSON *obj, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

static const char *type_of(const cJSON *obj) {
    const cJSON *t = field(obj, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

/* A boolean field: absent or null gives dflt. */
static int get_bool(loader *ld, const cJSON *obj, const char *where, const char *key, int dflt,
                    int *out) {
    const cJSON *v = field(obj, key);
    if (!v || cJSON_IsNull(v))
        *out = dflt;
    else if (cJSON_IsBool(v))
        *out = cJSON_IsTrue(v);
    else
        return cm_fail(ld->err, "%s: %s.%s: expected true or false", ld->path, where, key);
    return 0;
}

static int get_id(loader *ld, const cJSON *v, const char *where, const char *name, int32_t *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= MAX_ID ||
        v->valuedouble != (double)(int32_t)v->valuedouble)
        return cm_fail(ld->err, "%s: %s: id of '%.40s' is not an integer in [0, %d)", ld->path,
                       where, name, MAX_ID);
    *out = (int32_t)v->valuedouble;
    return 0;
}

static int valid_utf8(const char *s, size_t len) {
    for (size_t i = 0; i < len;) {
        int n = cm_utf8_char((const unsigned char *)s + i, len - i);
        if (n <= 0) return 0;
        i += (size_t)n;
    }
    return 1;
}

/* Records that id decodes from text; an id may be given only once. */
static int claim_id(loader *ld, int32_t id, const char *text, const char *where) {
    if (ld->text[id])
        return cm_fail(ld->err, "%s: %s: id %d is given to both '%.40s' and '%.40s'", ld->path,
                       where, id, ld->text[id], text);
    ld->text[id] = text;
    if (id > ld->max_id) ld->max_id = id;
    return 0;
}

/* ---- model ---------------------------------------------------------------------- */

static int load_vocab(cmamba_tokenizer *tok, loader *ld, const cJSON *vocab) {
    if (!cJSON_IsObject(vocab))
        return cm_fail(ld->err, "%s: model.vocab: missing or not an object", ld->path);
    size_t n = 0, bytes = 0;
    int32_t id = 0, largest = 0;
    for (const cJSON *e = vocab->child; e; e = e->next, n++) {
        if (get_id(ld, e, "model.vocab", e->string, &id)) return -1;
        if (id > largest) largest = id;
        bytes += strlen(e->string) + 1;
    }
    if (n == 0) return cm_fail(ld->err, "%s: model.vocab: empty", ld->path);
    /* added tokens outside the vocab are numbered from n on */
    size_t cap = (size_t)largest + 1 > n ? (size_t)largest + 1 : n;
    if (!(ld->text = cm_calloc(cap + ld->n_added, sizeof *ld->text, ld->err)) ||
        tk_strmap_init(&tok->bpe.vocab, n, ld->err) || !(tok->strings = cm_malloc(bytes, ld->err)))
        return -1;
    char *p = tok->strings;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        size_t len = strlen(e->string);
        if (len == 0 || !valid_utf8(e->string, len))
            return cm_fail(ld->err, "%s: model.vocab: token '%.40s' is empty or not UTF-8",
                           ld->path, e->string);
        get_id(ld, e, "model.vocab", e->string, &id);
        memcpy(p, e->string, len + 1);
        if (tk_strmap_put(&tok->bpe.vocab, p, len, id) >= 0)
            return cm_fail(ld->err, "%s: model.vocab: token '%.40s' appears twice", ld->path, p);
        if (claim_id(ld, id, p, "model.vocab")) return -1;
        p += len + 1;
    }
    ld->n_vocab = n;
    return 0;
}

/* Merge i as its two halves: "a b" (exactly one space) or ["a", "b"]. */
static int merge_halves(loader *ld, const cJSON *m, size_t i, char *buf, const char **a,
                        const char **b) {
    if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
        cJSON_IsString(m->child->next)) {
        *a = m->child->valuestring;
        *b = m->child->next->valuestring;
        return 0;
    }
    const char *sp = cJSON_IsString(m) ? strchr(m->valuestring, ' ') : NULL;
    if (!sp || strchr(sp + 1, ' '))
        return cm_fail(ld->err, "%s: model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]",
                       ld->path, i);
    size_t la = (size_t)(sp - m->valuestring);
    memcpy(buf, m->valuestring, la);
    buf[la] = 0;
    *a = buf;
    *b = sp + 1;
    return 0;
}

static int load_merges(cmamba_tokenizer *tok, loader *ld, const cJSON *merges) {
    if (!cJSON_IsArray(merges))
        return cm_fail(ld->err, "%s: model.merges: missing or not an array", ld->path);
    size_t n = (size_t)cJSON_GetArraySize(merges), longest = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, merges) { /* buf holds a copy of "a" and then "ab" */
        size_t len = cJSON_IsString(m) ? strlen(m->valuestring) : 0;
        for (const cJSON *h = cJSON_IsArray(m) ? m->child : NULL; h; h = h->next)
            if (cJSON_IsString(h)) len += strlen(h->valuestring);
        if (len > longest) longest = len;
    }
    char *buf = cm_malloc(2 * longest + 2, ld->err);
    if (!buf || tk_pairmap_init(&tok->bpe.merges, n, ld->err)) {
        free(buf);
        return -1;
    }
    uint32_t rank = 0;
    size_t i = 0;
    int rc = 0;
    cJSON_ArrayForEach(m, merges) {
        const char *a = NULL, *b = NULL;
        if (cJSON_IsString(m) && !strncmp(m->valuestring, "#version", 8)) {
            i++;
            continue;
        }
        if ((rc = merge_halves(ld, m, i, buf, &a, &b))) break;
        size_t la = strlen(a), lb = strlen(b);
        char *ab = buf + la + 1;
        memcpy(ab, a, la);
        memcpy(ab + la, b, lb);
        int32_t ia = tk_strmap_get(&tok->bpe.vocab, a, la);
        int32_t ib = tk_strmap_get(&tok->bpe.vocab, b, lb);
        int32_t iab = tk_strmap_get(&tok->bpe.vocab, ab, la + lb);
        if (ia < 0 || ib < 0 || iab < 0) {
            const char *missing = ia < 0 ? a : ib < 0 ? b : "(the merged token)";
            rc = cm_fail(ld->err, "%s: model.merges[%zu]: '%.40s' is not in the vocab", ld->path,
                         i, missing);
            break;
        }
        tk_pairmap_put(&tok->bpe.merges, ia, ib, rank++, iab);
        i++;
    }
    free(buf);
    return rc;
}

static int load_model(cmamba_tokenizer *tok, loader *ld, const cJSON *model) {
    const char *type = type_of(model);
    if (!cJSON_IsObject(model))
        return cm_fail(ld->err, "%s: model: missing or not an object", ld->path);
    if (type && strcmp(type, "BPE"))
        return cm_fail(ld->err, "%s: model.type: '%.40s' is not supported (only BPE)", ld->path,
                       type);
    if (load_vocab(tok, ld, field(model, "vocab")) || load_merges(tok, ld, field(model, "merges")))
        return -1;

    const cJSON *dropout = field(model, "dropout");
    if (dropout && !cJSON_IsNull(dropout) &&
        !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0))
        return cm_fail(ld->err, "%s: model.dropout: BPE dropout is not supported", ld->path);
    static const char *affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const cJSON *v = field(model, affixes[k]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !*v->valuestring))
            return cm_fail(ld->err, "%s: model.%s: not supported with byte-level BPE", ld->path,
                           affixes[k]);
    }
    if (get_bool(ld, model, "model", "fuse_unk", 0, &tok->bpe.fuse_unk) ||
        get_bool(ld, model, "model", "ignore_merges", 0, &tok->bpe.ignore_merges))
        return -1;

    tok->bpe.unk_id = -1;
    const cJSON *unk = field(model, "unk_token");
    if (cJSON_IsString(unk)) {
        tok->bpe.unk_id =
            tk_strmap_get(&tok->bpe.vocab, unk->valuestring, strlen(unk->valuestring));
        if (tok->bpe.unk_id < 0)
            return cm_fail(ld->err, "%s: model.unk_token: '%.40s' is not in the vocab", ld->path,
                           unk->valuestring);
    } else if (unk && !cJSON_IsNull(unk)) {
        return cm_fail(ld->err, "%s: model.unk_token: expected a string or null", ld->path);
    }

    int byte_fallback = 0, missing = 0;
    for (int b = 0; b < 256; b++) {
        char c[2];
        int n = tk_byte_to_utf8((unsigned char)b, c);
        tok->bpe.byte_id[b] = tk_strmap_get(&tok->bpe.vocab, c, (size_t)n);
        missing += tok->bpe.byte_id[b] < 0;
    }
    if (get_bool(ld, model, "model", "byte_fallback", 0, &byte_fallback)) return -1;
    if (byte_fallback && missing)
        return cm_fail(ld->err, "%s: model.byte_fallback: not supported (%d bytes have no token)",
                       ld->path, missing);
    return 0;
}

/* ---- normalizer and added tokens --------------------------------------------------- */

static int load_normalizer(cmamba_tokenizer *tok, loader *ld, const cJSON *n) {
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = type_of(n);
    if (type && !strcmp(type, "NFC")) {
        tok->nfc = 1;
        return 0;
    }
    if (type && !strcmp(type, "Sequence") && cJSON_IsArray(field(n, "normalizers"))) {
        const cJSON *e;
        cJSON_ArrayForEach(e, field(n, "normalizers")) if (load_normalizer(tok, ld, e)) return -1;
        return 0;
    }
    return cm_fail(ld->err,
                   "%s: normalizer: type '%.40s' is not supported (only NFC, or a Sequence of NFC)",
                   ld->path, type ? type : "(missing)");
}

/* One entry of added_tokens into the raw or the normalized set. */
static int load_added_token(cmamba_tokenizer *tok, loader *ld, const cJSON *t, const char *where,
                            tk_strmap *seen, size_t *n_new) {
    const cJSON *content = field(t, "content");
    if (!cJSON_IsString(content) || !*content->valuestring ||
        !valid_utf8(content->valuestring, strlen(content->valuestring)))
        return cm_fail(ld->err, "%s: %s.content: missing, empty or not UTF-8", ld->path, where);
    const char *s = content->valuestring;
    size_t len = strlen(s);
    if (tk_strmap_put(seen, s, len, 0) >= 0)
        return cm_fail(ld->err, "%s: %s: '%.40s' appears twice", ld->path, where, s);
    int special = 0, normalized = 0;
    int32_t id = 0;
    if (get_bool(ld, t, where, "special", 0, &special) ||
        get_bool(ld, t, where, "normalized", !special, &normalized) ||
        get_id(ld, field(t, "id"), where, s, &id))
        return -1;
    /* HF ignores the stored id: a token in the vocab keeps its vocab id, the
     * others are numbered on from the vocab size. Insist that they agree. */
    int32_t vocab_id = tk_strmap_get(&tok->bpe.vocab, s, len);
    int32_t expect = vocab_id >= 0 ? vocab_id : (int32_t)(ld->n_vocab + (*n_new)++);
    if (id != expect)
        return cm_fail(ld->err,
                       "%s: %s: '%.40s' has id %d, but Hugging Face tokenizers would give it %d",
                       ld->path, where, s, id, expect);

    tk_added_set *set = normalized ? &tok->added_norm : &tok->added_raw;
    tk_added *a = &set->tok[set->n];
    a->id = id;
    if (get_bool(ld, t, where, "single_word", 0, &a->single_word) ||
        get_bool(ld, t, where, "lstrip", 0, &a->lstrip) ||
        get_bool(ld, t, where, "rstrip", 0, &a->rstrip))
        return -1;
    /* a normalized token is matched, and decoded, in its normalized form */
    if (normalized && tok->nfc) {
        if (tk_nfc(s, len, &a->content, &a->len, ld->err)) return -1;
    } else {
        if (!(a->content = cm_malloc(len + 1, ld->err))) return -1;
        memcpy(a->content, s, len + 1);
        a->len = len;
    }
    set->n++;
    if (vocab_id >= 0) {
        ld->text[id] = a->content; /* decoded like HF: the added form wins */
        return 0;
    }
    return claim_id(ld, id, a->content, where);
}

static int load_added(cmamba_tokenizer *tok, loader *ld, const cJSON *arr) {
    if (!arr || cJSON_IsNull(arr)) return 0;
    if (!cJSON_IsArray(arr)) return cm_fail(ld->err, "%s: added_tokens: not an array", ld->path);
    size_t n = (size_t)cJSON_GetArraySize(arr), i = 0, n_new = 0;
    tk_strmap seen = {0};
    tok->added_raw.tok = cm_calloc(n, sizeof(tk_added), ld->err);
    tok->added_norm.tok = cm_calloc(n, sizeof(tk_added), ld->err);
    if (!tok->added_raw.tok || !tok->added_norm.tok || tk_strmap_init(&seen, n, ld->err)) return -1;
    const cJSON *t;
    int rc = 0;
    cJSON_ArrayForEach(t, arr) {
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%zu]", i++);
        if ((rc = load_added_token(tok, ld, t, where, &seen, &n_new))) break;
    }
    tk_strmap_free(&seen);
    tk_added_index(&tok->added_raw);
    tk_added_index(&tok->added_norm);
    return rc;
}

/* ---- pre-tokenizer and decoder ------------------------------------------------------ */

static int load_split(cmamba_tokenizer *tok, loader *ld, const cJSON *p) {
    const cJSON *pat = field(p, "pattern"), *behavior = field(p, "behavior");
    const cJSON *regex = field(pat, "Regex"), *string = field(pat, "String");
    const cJSON *src = cJSON_IsString(regex) ? regex : string;
    int invert = 0;
    if (!cJSON_IsString(src))
        return cm_fail(
            ld->err,
            "%s: pre_tokenizer Split: pattern must be {\"Regex\": ...} or {\"String\": ...}",
            ld->path);
    if (!cJSON_IsString(behavior) || strcmp(behavior->valuestring, "Isolated"))
        return cm_fail(ld->err,
                       "%s: pre_tokenizer Split: behavior '%.40s' is not supported (only Isolated)",
                       ld->path, cJSON_IsString(behavior) ? behavior->valuestring : "(missing)");
    if (get_bool(ld, p, "pre_tokenizer Split", "invert", 0, &invert)) return -1;
    if (invert)
        return cm_fail(ld->err, "%s: pre_tokenizer Split: invert is not supported", ld->path);
    if (tok->n_splits == TK_MAX_SPLITS)
        return cm_fail(ld->err, "%s: pre_tokenizer: more than %d Split steps", ld->path,
                       TK_MAX_SPLITS);
    char why[200];
    pcre2_code *re = tk_regex_compile(src->valuestring, strlen(src->valuestring), src == string,
                                      why, sizeof why);
    if (!re)
        return cm_fail(ld->err, "%s: pre_tokenizer Split: pattern '%.60s': %s", ld->path,
                       src->valuestring, why);
    tok->splits[tok->n_splits++] = re;
    return 0;
}

/* One step of the pre-tokenizer: Split steps, then ByteLevel, last. */
static int load_pre_step(cmamba_tokenizer *tok, loader *ld, const cJSON *p, int *have_bytelevel) {
    const char *type = type_of(p);
    if (!type) return cm_fail(ld->err, "%s: pre_tokenizer: missing or without a type", ld->path);
    if (*have_bytelevel)
        return cm_fail(ld->err, "%s: pre_tokenizer: '%.40s' after ByteLevel is not supported",
                       ld->path, type);
    if (!strcmp(type, "Sequence") && cJSON_IsArray(field(p, "pretokenizers"))) {
        const cJSON *e;
        cJSON_ArrayForEach(
            e, field(p, "pretokenizers")) if (load_pre_step(tok, ld, e, have_bytelevel)) return -1;
        return 0;
    }
    if (!strcmp(type, "Split")) return load_split(tok, ld, p);
    if (strcmp(type, "ByteLevel"))
        return cm_fail(
            ld->err,
            "%s: pre_tokenizer: type '%.40s' is not supported (only ByteLevel, Split, Sequence)",
            ld->path, type);
    int use_regex = 0;
    *have_bytelevel = 1;
    if (get_bool(ld, p, "pre_tokenizer", "add_prefix_space", 1, &tok->add_prefix_space) ||
        get_bool(ld, p, "pre_tokenizer", "use_regex", 1, &use_regex))
        return -1;
    char why[200];
    if (use_regex && !(tok->bytelevel_re = tk_gpt2_regex(why, sizeof why)))
        return cm_fail(ld->err, "%s: pre_tokenizer: GPT-2 regex: %s", ld->path, why);
    return 0;
}

static int load_pre_tokenizer(cmamba_tokenizer *tok, loader *ld, const cJSON *p) {
    int have_bytelevel = 0;
    if (load_pre_step(tok, ld, p, &have_bytelevel)) return -1;
    if (!have_bytelevel)
        return cm_fail(ld->err,
                       "%s: pre_tokenizer: no ByteLevel step (only byte-level BPE is supported)",
                       ld->path);
    return 0;
}

static int check_decoder(loader *ld, const cJSON *d) {
    const char *type = type_of(d);
    if (!type || strcmp(type, "ByteLevel"))
        return cm_fail(ld->err, "%s: decoder: type '%.40s' is not supported (only ByteLevel)",
                       ld->path, type ? type : "(missing)");
    return 0;
}

/* ---- decoding table ------------------------------------------------------------------- */

/* What HF's ByteLevel decoder makes of one token: its characters mapped back
 * to bytes, or, if any character is outside the alphabet (an added token
 * such as a run of spaces), its UTF-8 unchanged. */
static size_t decode_token(const char *text, char *out) {
    size_t len = strlen(text), n = 0;
    for (size_t i = 0; i < len;) {
        int b = tk_cp_to_byte(tk_cp_at(text, len, i, &i));
        if (b < 0) {
            memcpy(out, text, len);
            return len;
        }
        out[n++] = (char)b;
    }
    return n;
}

static int build_decoding(cmamba_tokenizer *tok, loader *ld) {
    size_t V = (size_t)ld->max_id + 1, bytes = 0;
    tok->vocab_size = (int32_t)V;
    tok->token_bytes = cm_calloc(V, sizeof *tok->token_bytes, ld->err);
    tok->token_len = cm_calloc(V, sizeof *tok->token_len, ld->err);
    if (!tok->token_bytes || !tok->token_len) return -1;
    for (size_t id = 0; id < V; id++) bytes += ld->text[id] ? strlen(ld->text[id]) + 1 : 0;
    if (!(tok->decoded = cm_malloc(bytes, ld->err))) return -1;
    char *p = tok->decoded;
    for (size_t id = 0; id < V; id++) {
        if (!ld->text[id]) continue;
        size_t n = decode_token(ld->text[id], p);
        p[n] = 0;
        tok->token_bytes[id] = p;
        tok->token_len[id] = (uint32_t)n;
        p += n + 1;
    }
    return 0;
}

/* The end-of-text token under the names byte-level BPE tokenizers use. */
static int32_t find_eos(const loader *ld) {
    static const char *names[] = {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++)
        for (int32_t id = 0; id <= ld->max_id; id++)
            if (ld->text[id] && !strcmp(ld->text[id], names[k])) return id;
    return -1;
}

/* ---- public API ----------------------------------------------------------------------- */

static int load_json(cmamba_tokenizer *tok, loader *ld, const cJSON *root) {
    if (!cJSON_IsObject(root)) return cm_fail(ld->err, "%s: not a JSON object", ld->path);
    const cJSON *added = field(root, "added_tokens");
    ld->n_added = cJSON_IsArray(added) ? (size_t)cJSON_GetArraySize(added) : 0;
    if (load_model(tok, ld, field(root, "model")) ||
        load_normalizer(tok, ld, field(root, "normalizer")) || load_added(tok, ld, added) ||
        load_pre_tokenizer(tok, ld, field(root, "pre_tokenizer")) ||
        check_decoder(ld, field(root, "decoder")) || build_decoding(tok, ld))
        return -1;
    tok->eos = find_eos(ld);
    return 0;
}

int cmamba_tokenizer_load(const char *path, cmamba_tokenizer **out, cmamba_error *err) {
    *out = NULL;
    char *data;
    size_t len;
    if (cm_read_file(path, MAX_FILE_BYTES, &data, &len, err)) return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    if (!root) {
        size_t at = end && end >= data ? (size_t)(end - data) : 0;
        free(data);
        return cm_fail(err, "%s: invalid JSON near byte %zu", path, at);
    }
    free(data);
    loader ld = {path, err, 0, NULL, -1, 0};
    cmamba_tokenizer *tok = cm_calloc(1, sizeof *tok, err);
    int rc = tok ? load_json(tok, &ld, root) : -1;
    free(ld.text);
    cJSON_Delete(root);
    if (rc) {
        cmamba_tokenizer_free(tok);
        return -1;
    }
    *out = tok;
    return 0;
}

void cmamba_tokenizer_free(cmamba_tokenizer *tok) {
    if (!tok) return;
    tk_strmap_free(&tok->bpe.vocab);
    tk_pairmap_free(&tok->bpe.merges);
    tk_added_free(&tok->added_raw);
    tk_added_free(&tok->added_norm);
    for (int i = 0; i < tok->n_splits; i++) pcre2_code_free(tok->splits[i]);
    pcre2_code_free(tok->bytelevel_re);
    free(tok->token_bytes);
    free(tok->token_len);
    free(tok->decoded);
    free(tok->strings);
    free(tok);
}

const char *cmamba_token_bytes(const cmamba_tokenizer *tok, int32_t id, size_t *len) {
    if (!tok || id < 0 || id >= tok->vocab_size || !tok->token_bytes[id]) return NULL;
    if (len) *len = tok->token_len[id];
    return tok->token_bytes[id];
}

int cmamba_tokenizer_vocab_size(const cmamba_tokenizer *tok) { return tok->vocab_size; }

int32_t cmamba_tokenizer_eos(const cmamba_tokenizer *tok) { return tok->eos; }
