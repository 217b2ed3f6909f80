/* cmamba tokenize: text to token ids, or ids back to text with --decode. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cmamba.h"
#include "commands.h"
#include "common.h"

static const char *usage =
    "usage: cmamba tokenize --tokenizer FILE [--text TEXT] [--decode]\n"
    "\n"
    "Prints the token ids of TEXT, or of all of stdin byte for byte, space-separated\n"
    "on one line: the ids Hugging Face tokenizers gives for the same tokenizer.json.\n"
    "\n"
    "  --tokenizer FILE  a Hugging Face byte-level BPE tokenizer.json\n"
    "  --text TEXT       the input (default: stdin)\n"
    "  --decode          the input is ids (separated by spaces, commas or newlines);\n"
    "                    writes the decoded text, with no newline added\n";

#define MAX_STDIN ((size_t)1 << 30)

static int read_stdin(char **data, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, stdin);
        if (n < cap) break;
        char *grown = cap < MAX_STDIN ? realloc(buf, cap *= 2) : NULL;
        if (!grown) {
            free(buf);
            fprintf(stderr, "cmamba tokenize: stdin: %s\n",
                    cap >= MAX_STDIN ? "input larger than 1 GiB" : "out of memory");
            return -1;
        }
        buf = grown;
    }
    if (!buf || ferror(stdin)) {
        fprintf(stderr, "cmamba tokenize: stdin: %s\n", buf ? strerror(errno) : "out of memory");
        free(buf);
        return -1;
    }
    *data = buf;
    *len = n;
    return 0;
}

static int is_sep(char c) { return c == ' ' || c == ',' || c == '\n' || c == '\r' || c == '\t'; }

/* Ids separated by spaces, commas or newlines; src names the input in errors. */
static int parse_ids(const char *s, size_t len, const char *src, int32_t **ids, size_t *n) {
    size_t cap = 64, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    for (size_t i = 0; v && i < len;) {
        if (is_sep(s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        long long id = 0;
        while (j < len && !is_sep(s[j]) && s[j] >= '0' && s[j] <= '9' && id <= INT32_MAX)
            id = id * 10 + (s[j++] - '0');
        if (j == i || (j < len && !is_sep(s[j])) || id > INT32_MAX) {
            size_t end = i;
            while (end < len && end - i < 20 && !is_sep(s[end]) && s[end]) end++;
            fprintf(stderr, "cmamba tokenize: %s: not a token id: '%.*s'\n", src, (int)(end - i),
                    s + i);
            free(v);
            return -1;
        }
        if (k == cap) {
            int32_t *grown = realloc(v, (cap *= 2) * sizeof *v);
            if (!grown) free(v);
            v = grown;
            if (!v) break;
        }
        v[k++] = (int32_t)id;
        i = j;
    }
    if (!v) {
        fprintf(stderr, "cmamba tokenize: %s: out of memory\n", src);
        return -1;
    }
    *ids = v;
    *n = k;
    return 0;
}

static int encode(const cmamba_tokenizer *tok, const char *text, size_t len, const char *src) {
    cmamba_error err;
    int32_t *ids;
    size_t n;
    if (cmamba_tokenize(tok, text, len, &ids, &n, &err)) {
        fprintf(stderr, "cmamba tokenize: %s: %s\n", src, err.msg);
        return 1;
    }
    for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)ids[i]);
    putchar('\n');
    free(ids);
    return 0;
}

static int decode(const cmamba_tokenizer *tok, const char *input, size_t len, const char *src) {
    int32_t *ids;
    size_t n, out_len;
    char *text;
    cmamba_error err;
    if (parse_ids(input, len, src, &ids, &n)) return 1;
    int rc = cmamba_detokenize(tok, ids, n, &text, &out_len, &err);
    free(ids);
    if (rc) {
        fprintf(stderr, "cmamba tokenize: %s: %s\n", src, err.msg);
        return 1;
    }
    fwrite(text, 1, out_len, stdout);
    free(text);
    return 0;
}

int cmd_tokenize(int argc, char **argv) {
    const char *path = NULL, *text = NULL;
    int decoding = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 0;
        } else if (arg_is(a, "--tokenizer")) {
            if (!(path = arg_value("tokenize", argc, argv, &i))) return 2;
        } else if (arg_is(a, "--text")) {
            if (!(text = arg_value("tokenize", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--decode")) {
            decoding = 1;
        } else {
            die_usage("tokenize", "unknown option '%s'", a);
        }
    }
    if (!path) die_usage("tokenize", "--tokenizer is required");

    cmamba_error err;
    cmamba_tokenizer *tok;
    if (cmamba_tokenizer_load(path, &tok, &err)) {
        fprintf(stderr, "cmamba tokenize: %s\n", err.msg);
        return 1;
    }
    char *input = NULL;
    size_t len = text ? strlen(text) : 0;
    const char *src = text ? "--text" : "stdin";
    int rc = 1;
    if (text || read_stdin(&input, &len) == 0)
        rc = (decoding ? decode : encode)(tok, text ? text : input, len, src);
    free(input);
    cmamba_tokenizer_free(tok);
    if (rc == 0 && (fflush(stdout) || ferror(stdout))) {
        fprintf(stderr, "cmamba tokenize: stdout: write error: %s\n", strerror(errno));
        rc = 1;
    }
    return rc;
}
