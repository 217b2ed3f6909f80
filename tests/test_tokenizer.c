/* The tokenizer against Hugging Face tokenizers: every case that
 * tools/make_tokenizer_fixtures.py wrote (GPT-NeoX's tokenizer.json and
 * variants of it) must give identical ids and decodings, and for GPT-NeoX
 * decode(encode(s)) == NFC(s). Then the error paths, on small hand-written
 * tokenizer.json files. */
#include <cjson/cJSON.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "common.h"
#include "test.h"

static const char *tmp_path(const char *name) {
    static char path[4096];
    const char *dir = test_env("CMAMBA_TMP", "/tmp");
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/tokenizer-test-%s", dir, name);
    return path;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f || fputs(text, f) < 0 || fclose(f)) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

/* ---- fixtures ------------------------------------------------------------------ */

/* The base tokenizer.json with a variant's edits (see variants.json). */
static cmamba_tokenizer *load_variant(const char *base_json, const cJSON *spec, const char *name) {
    cJSON *tj = cJSON_Parse(base_json);
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(spec, "top"))
        cJSON_ReplaceItemInObjectCaseSensitive(tj, e->string, cJSON_Duplicate(e, 1));
    cJSON *model = cJSON_GetObjectItem(tj, "model");
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(spec, "model")) {
        cJSON_DeleteItemFromObjectCaseSensitive(model, e->string);
        cJSON_AddItemToObject(model, e->string, cJSON_Duplicate(e, 1));
    }
    cJSON *added = cJSON_GetObjectItem(tj, "added_tokens");
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(spec, "added_tokens"))
        cJSON_AddItemToArray(added, cJSON_Duplicate(e, 1));
    char *text = cJSON_PrintUnformatted(tj);
    const char *path = tmp_path(name);
    write_text(path, text);
    free(text);
    cJSON_Delete(tj);
    cmamba_tokenizer *tok;
    cmamba_error err;
    if (cmamba_tokenizer_load(path, &tok, &err)) {
        fprintf(stderr, "variant %s: %s\n", name, err.msg);
        return NULL;
    }
    return tok;
}

static int ids_equal(const int32_t *a, size_t na, const cJSON *want, const char *what) {
    size_t nb = (size_t)cJSON_GetArraySize(want), i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, want) {
        if (i >= na || a[i] != e->valueint) break;
        i++;
    }
    if (i == na && i == nb) return 1;
    fprintf(stderr, "  ids differ for %.60s: %zu vs %zu ids, first difference at %zu (%d vs %d)\n",
            what, na, nb, i, i < na ? a[i] : -1,
            i < nb ? cJSON_GetArrayItem(want, (int)i)->valueint : -1);
    return 0;
}

/* Checks one case; returns 1 if everything matched. */
static int check_case(const cmamba_tokenizer *tok, const cJSON *c, int is_base) {
    const cJSON *text = cJSON_GetObjectItem(c, "text"), *want = cJSON_GetObjectItem(c, "ids");
    const char *decoded = cJSON_GetObjectItem(c, "decoded")->valuestring;
    cmamba_error err;
    int ok = 1;
    int32_t *ids = NULL;
    size_t n = 0;
    if (text) {
        ok =
            cmamba_tokenize(tok, text->valuestring, strlen(text->valuestring), &ids, &n, &err) == 0;
        CHECK_MSG(ok, "%s", err.msg);
        ok = ok && ids_equal(ids, n, want, text->valuestring);
    } else {
        n = (size_t)cJSON_GetArraySize(want);
        ids = malloc(sizeof *ids * (n + 1));
        const cJSON *e;
        size_t i = 0;
        cJSON_ArrayForEach(e, want) ids[i++] = e->valueint;
    }
    char *out = NULL;
    size_t len = 0;
    if (ok && cmamba_detokenize(tok, ids, n, &out, &len, &err)) {
        fprintf(stderr, "  detokenize: %s\n", err.msg);
        ok = 0;
    }
    if (ok && (len != strlen(decoded) || memcmp(out, decoded, len))) {
        fprintf(stderr, "  decoded differs: '%.60s' vs HF '%.60s'\n", out, decoded);
        ok = 0;
    }
    if (ok && text && is_base) {
        char *nfc = (char *)utf8proc_NFC((const utf8proc_uint8_t *)text->valuestring);
        if (strcmp(nfc, out)) {
            fprintf(stderr, "  decode(encode(s)) != NFC(s) for '%.60s'\n", text->valuestring);
            ok = 0;
        }
        free(nfc);
    }
    free(ids);
    free(out);
    return ok;
}

static void test_fixtures(const char *base_path) {
    const char *dir = test_env("CMAMBA_FIXTURES", "tests/fixtures");
    char *cases_path = cm_path_join(dir, "tokenizer/cases.jsonl");
    char *variants_path = cm_path_join(dir, "tokenizer/variants.json");
    char *base, *cases, *variants_text;
    cmamba_error err;
    if (cm_read_file(base_path, 256u << 20, &base, NULL, &err) ||
        cm_read_file(cases_path, 16u << 20, &cases, NULL, &err) ||
        cm_read_file(variants_path, 1u << 20, &variants_text, NULL, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    cJSON *variants = cJSON_Parse(variants_text);
    CHECK(variants != NULL);

    struct {
        const char *name;
        cmamba_tokenizer *tok;
    } loaded[16];
    int n_loaded = 0, total = 0, matched = 0;
    for (char *line = strtok(cases, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *c = cJSON_Parse(line);
        CHECK(c != NULL);
        if (!c) continue;
        const char *name = cJSON_GetObjectItem(c, "variant")->valuestring;
        int k = 0;
        while (k < n_loaded && strcmp(loaded[k].name, name)) k++;
        if (k == n_loaded && n_loaded < 16) {
            loaded[k].name = cJSON_GetObjectItem(variants, name)->string;
            loaded[k].tok = load_variant(base, cJSON_GetObjectItem(variants, name), name);
            n_loaded++;
        }
        CHECK_MSG(loaded[k].tok != NULL, "variant %s did not load", name);
        int ok = loaded[k].tok && check_case(loaded[k].tok, c, !strcmp(name, "neox"));
        CHECK_MSG(ok, "case %d (variant %s)", total + 1, name);
        matched += ok;
        total++;
        cJSON_Delete(c);
    }
    fprintf(stderr, "%d/%d fixture cases match Hugging Face tokenizers\n", matched, total);
    CHECK(total >= 100);
    for (int k = 0; k < n_loaded; k++) cmamba_tokenizer_free(loaded[k].tok);
    cJSON_Delete(variants);
    free(base);
    free(cases);
    free(variants_text);
    free(cases_path);
    free(variants_path);
}

/* ---- GPT-NeoX specifics and runtime errors ------------------------------------------- */

static void check_ids(const cmamba_tokenizer *tok, const char *text, size_t len,
                      const int32_t *want, size_t n_want) {
    int32_t *ids;
    size_t n;
    cmamba_error err;
    int rc = cmamba_tokenize(tok, text, len, &ids, &n, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) return;
    CHECK(ids != NULL);
    CHECK_MSG(n == n_want && (n == 0 || !memcmp(ids, want, n * sizeof *ids)),
              "ids of a %zu-byte text", len);
    free(ids);
}

static void check_fails(int rc, const cmamba_error *err, const char *want) {
    CHECK(rc == -1);
    CHECK_MSG(strstr(err->msg, want) != NULL, "message '%s' lacks '%s'", err->msg, want);
    CHECK(strchr(err->msg, '\n') == NULL);
}

static void test_neox(const cmamba_tokenizer *tok) {
    CHECK(cmamba_tokenizer_vocab_size(tok) == 50277);
    CHECK(cmamba_tokenizer_eos(tok) == 0);
    size_t len;
    const char *b = cmamba_token_bytes(tok, 50254, &len);
    CHECK(b && len == 24 && strspn(b, " ") == 24);
    b = cmamba_token_bytes(tok, 209, &len); /* 'Ġ' alone: a space */
    CHECK(b && len == 1 && b[0] == ' ');
    CHECK(cmamba_token_bytes(tok, -1, &len) == NULL);
    CHECK(cmamba_token_bytes(tok, 50277, &len) == NULL);

    /* NUL is a character like any other (ids from HF tokenizers) */
    check_ids(tok, "a\0b", 3, (const int32_t[]){66, 177, 67}, 3);
    check_ids(tok, "a\0\0b c", 6, (const int32_t[]){66, 177, 177, 67, 260}, 5);
    check_ids(tok, "", 0, NULL, 0);

    int32_t *ids = NULL;
    size_t n;
    cmamba_error err;
    check_fails(cmamba_tokenize(tok, "\xff", 1, &ids, &n, &err), &err, "byte offset 0");
    check_fails(cmamba_tokenize(tok, "ab\xc3", 3, &ids, &n, &err), &err, "byte offset 2");
    check_fails(cmamba_tokenize(tok, "a\xed\xa0\x80", 4, &ids, &n, &err), &err, "byte offset 1");
    check_fails(cmamba_tokenize(tok, "\xc0\x80", 2, &ids, &n, &err), &err, "invalid UTF-8");
    CHECK(ids == NULL);

    char *text = NULL;
    check_fails(cmamba_detokenize(tok, (const int32_t[]){12092, 99999}, 2, &text, &len, &err), &err,
                "99999");
    check_fails(cmamba_detokenize(tok, (const int32_t[]){-1}, 1, &text, &len, &err), &err, "-1");
    CHECK(text == NULL);
    CHECK(cmamba_detokenize(tok, NULL, 0, &text, &len, &err) == 0 && text && len == 0 && !*text);
    free(text);

    /* a long run of one character class is one long piece: within the regex
     * engine's limits, and no quadratic BPE */
    size_t big = 1 << 18;
    char *s = malloc(big);
    const char fill[] = {'\n', ' ', 'a', '7', '!'};
    for (size_t k = 0; k < sizeof fill; k++) {
        memset(s, fill[k], big);
        int rc = cmamba_tokenize(tok, s, big, &ids, &n, &err);
        CHECK_MSG(rc == 0, "256 kB of '%c': %s", fill[k], err.msg);
        if (rc == 0) free(ids);
    }
    free(s);
}

/* ---- loading errors, on a tiny tokenizer ---------------------------------------------- */

#define BYTELEVEL "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}"
#define SPLIT_THEN_BYTELEVEL(pattern, behavior)                                                    \
    "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": " pattern     \
    ", \"behavior\": \"" behavior "\", \"invert\": false}, " BYTELEVEL "]}"

static const char TINY[] =
    "{\"added_tokens\": [{\"id\": 4, \"content\": \"<|endoftext|>\", \"special\": true,"
    " \"normalized\": false, \"single_word\": false, \"lstrip\": false, \"rstrip\": false}],"
    " \"normalizer\": {\"type\": \"NFC\"},"
    " \"pre_tokenizer\": " BYTELEVEL ","
    " \"decoder\": {\"type\": \"ByteLevel\"},"
    " \"model\": {\"type\": \"BPE\", \"unk_token\": null,"
    " \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"\xc4\xa0\": 3}, \"merges\": [\"a b\"]}}";

/* Loads TINY with its first `from` replaced by `to`; returns the result. */
static int load_edited(const char *from, const char *to, cmamba_tokenizer **tok, cmamba_error *err,
                       const char **path) {
    const char *at = strstr(TINY, from);
    if (!at) {
        fprintf(stderr, "test bug: '%s' not in TINY\n", from);
        exit(1);
    }
    size_t pre = (size_t)(at - TINY);
    char *text = malloc(sizeof TINY + strlen(to));
    snprintf(text, sizeof TINY + strlen(to), "%.*s%s%s", (int)pre, TINY, to, at + strlen(from));
    *path = tmp_path("tiny.json");
    write_text(*path, text);
    free(text);
    return cmamba_tokenizer_load(*path, tok, err);
}

static void expect_load_error(const char *from, const char *to, const char *want) {
    cmamba_tokenizer *tok = NULL;
    cmamba_error err;
    const char *path;
    int rc = load_edited(from, to, &tok, &err, &path);
    CHECK_MSG(rc == -1, "loading with '%s' -> '%s' should fail", from, to);
    if (rc == 0) {
        cmamba_tokenizer_free(tok);
        return;
    }
    CHECK(tok == NULL);
    CHECK_MSG(strstr(err.msg, path) != NULL, "message '%s' does not name the file", err.msg);
    check_fails(rc, &err, want);
}

static void test_tiny(void) {
    cmamba_tokenizer *tok;
    cmamba_error err;
    const char *path;
    CHECK(load_edited("\"a\": 0", "\"a\": 0", &tok, &err, &path) == 0);
    CHECK(cmamba_tokenizer_vocab_size(tok) == 5);
    CHECK(cmamba_tokenizer_eos(tok) == 4);
    /* "c" has no token and no unk: dropped, as HF does */
    check_ids(tok, "ab a<|endoftext|>c", 18, (const int32_t[]){2, 3, 0, 4}, 4);
    cmamba_tokenizer_free(tok);

    CHECK(cmamba_tokenizer_load(tmp_path("no-such-file.json"), &tok, &err) == -1);
    CHECK(strstr(err.msg, "no-such-file.json") != NULL);
    expect_load_error(TINY, "{\"model\": ", "invalid JSON");
    expect_load_error(TINY, "[1, 2]", "not a JSON object");
    expect_load_error("\"model\": {", "\"modelx\": {", "model");
    expect_load_error("\"type\": \"BPE\"", "\"type\": \"WordPiece\"", "WordPiece");
    expect_load_error("\"vocab\": {", "\"vocabx\": {", "model.vocab");
    expect_load_error("\"merges\": [\"a b\"]", "\"merges\": [\"a c\"]", "'c' is not in the vocab");
    expect_load_error("\"merges\": [\"a b\"]", "\"merges\": [\"b a\"]", "merged token");
    expect_load_error("\"merges\": [\"a b\"]", "\"merges\": [\"ab\"]", "merges[0]");
    expect_load_error("\"merges\": [\"a b\"]", "\"merges\": [[\"a\"]]", "merges[0]");
    expect_load_error("\"merges\": [\"a b\"]", "\"merges\": 7", "model.merges");
    expect_load_error("\"ab\": 2", "\"ab\": 1", "id 1 is given to both");
    expect_load_error("\"ab\": 2", "\"ab\": -2", "not an integer");
    expect_load_error("\"ab\": 2", "\"ab\": 2.5", "not an integer");
    expect_load_error("\"ab\": 2", "\"ab\": \"2\"", "not an integer");
    expect_load_error("\"ab\": 2", "\"ab\": 2, \"a\": 9", "appears twice");
    expect_load_error("\"unk_token\": null", "\"unk_token\": \"<unk>\"", "unk_token");
    expect_load_error("\"unk_token\": null", "\"dropout\": 0.1", "dropout");
    expect_load_error("\"type\": \"NFC\"", "\"type\": \"Lowercase\"", "Lowercase");
    expect_load_error("{\"type\": \"ByteLevel\", \"add", "{\"type\": \"Whitespace\", \"add",
                      "Whitespace");
    expect_load_error("\"add_prefix_space\": false", "\"add_prefix_space\": 3", "add_prefix_space");
    expect_load_error("\"decoder\": {\"type\": \"ByteLevel\"}", "\"decoder\": null", "decoder");
    expect_load_error("\"id\": 4", "\"id\": 7", "would give it 4");
    expect_load_error("\"content\": \"<|endoftext|>\"", "\"content\": \"\"", "content");
    expect_load_error("\"rstrip\": false}",
                      "\"rstrip\": false}, {\"id\": 5, \"content\": \"<|endoftext|>\"}",
                      "appears twice");
    expect_load_error(BYTELEVEL, SPLIT_THEN_BYTELEVEL("{\"Regex\": \"(\"}", "Isolated"),
                      "missing closing parenthesis");
    expect_load_error(BYTELEVEL, SPLIT_THEN_BYTELEVEL("{\"String\": \" \"}", "Removed"), "Removed");
    expect_load_error(BYTELEVEL, SPLIT_THEN_BYTELEVEL("\" \"", "Isolated"), "pattern must be");
    expect_load_error(BYTELEVEL,
                      "{\"type\": \"Sequence\", \"pretokenizers\": [" BYTELEVEL ", " BYTELEVEL "]}",
                      "after ByteLevel");

    /* a Split step with a plain string: "ab" pieces are cut out before ByteLevel */
    int rc = load_edited(BYTELEVEL, SPLIT_THEN_BYTELEVEL("{\"String\": \"b\"}", "Isolated"), &tok,
                         &err, &path);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc == 0) check_ids(tok, "abab", 4, (const int32_t[]){0, 1, 0, 1}, 4);
    if (rc == 0) cmamba_tokenizer_free(tok);
}

int main(void) {
    test_tiny();
    char *path =
        cm_path_join(test_env("CMAMBA_SHARED", "/work/shared"), "data/gpt-neox-20b-tokenizer.json");
    struct stat st;
    if (stat(path, &st) != 0) {
        if (test_failures) return test_summary();
        SKIP("%s not found: the parity tests need GPT-NeoX's tokenizer.json", path);
    }
    cmamba_tokenizer *tok;
    cmamba_error err;
    int rc = cmamba_tokenizer_load(path, &tok, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc == 0) {
        test_neox(tok);
        cmamba_tokenizer_free(tok);
        test_fixtures(path);
    }
    free(path);
    return test_summary();
}
