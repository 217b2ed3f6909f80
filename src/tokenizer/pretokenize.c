/* Everything between raw text and BPE: NFC, the split regexes and GPT-2's
 * byte-to-unicode alphabet, plus the character classes of HF tokenizers
 * (unicode_classes.h) that both use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_classes.h"

/* ---- the byte-level alphabet -------------------------------------------------- */

/* Printable bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) stand for themselves;
 * the other 68, in byte order, become U+0100, U+0101, ... so that every
 * token is printable text (a space is U+0120 'Ġ'). */
uint32_t tk_byte_to_cp(unsigned char b) {
    if (b <= 0x20) return 0x100 + b;
    if (b >= 0x7f && b <= 0xa0) return 0x100 + 0x21 + (b - 0x7f);
    if (b == 0xad) return 0x100 + 0x21 + 0x22;
    return b;
}

int tk_cp_to_byte(uint32_t cp) {
    if ((cp >= 0x21 && cp <= 0x7e) || (cp >= 0xa1 && cp <= 0xac) || (cp >= 0xae && cp <= 0xff))
        return (int)cp;
    if (cp >= 0x100 && cp <= 0x120) return (int)(cp - 0x100);
    if (cp >= 0x121 && cp <= 0x142) return (int)(cp - 0x121 + 0x7f);
    if (cp == 0x143) return 0xad;
    return -1;
}

int tk_byte_to_utf8(unsigned char b, char *out) {
    uint32_t cp = tk_byte_to_cp(b);
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

/* ---- character classes -------------------------------------------------------- */

/* Unicode White_Space: Rust's char::is_whitespace, the regex crate's \s and
 * Oniguruma's \s alike. */
static const tk_range TK_SPACE[] = {
    {0x09, 0x0d},     {0x20, 0x20},     {0x85, 0x85},     {0xa0, 0xa0},     {0x1680, 0x1680},
    {0x2000, 0x200a}, {0x2028, 0x2029}, {0x202f, 0x202f}, {0x205f, 0x205f}, {0x3000, 0x3000}};

#define COUNT(a) (sizeof a / sizeof *a)

static int in_ranges(const tk_range *r, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid].lo)
            hi = mid;
        else if (cp > r[mid].hi)
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

int tk_is_space(uint32_t cp) { return in_ranges(TK_SPACE, COUNT(TK_SPACE), cp); }

int tk_is_word(uint32_t cp) { return in_ranges(TK_WORD, COUNT(TK_WORD), cp); }

uint32_t tk_cp_at(const char *s, size_t len, size_t i, size_t *next) {
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t n =
        utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &cp);
    *next = i + (n > 0 ? (size_t)n : 1);
    return n > 0 ? (uint32_t)cp : 0xfffd;
}

uint32_t tk_cp_before(const char *s, size_t i, size_t *start) {
    size_t j = i - 1;
    while (j > 0 && ((unsigned char)s[j] & 0xc0) == 0x80) j--;
    *start = j;
    size_t next;
    return tk_cp_at(s, i, j, &next);
}

/* ---- regexes ------------------------------------------------------------------ */

/* The escapes that HF's patterns use for these classes, which are rewritten
 * as explicit lists: PCRE2's Unicode tables are older than Oniguruma's (new
 * letters would fall into "other") and its \s also takes U+180E. */
static const struct {
    const char *escape; /* with a capital letter for the complement */
    const tk_range *ranges;
    size_t n;
} CLASSES[] = {
    {"\\s", TK_SPACE, COUNT(TK_SPACE)},
    {"\\p{L}", TK_LETTER, COUNT(TK_LETTER)},
    {"\\p{N}", TK_NUMBER, COUNT(TK_NUMBER)},
};

/* Which class p starts with: its index, or -1; *negated for \S, \P{L}, ... */
static int class_at(const char *p, size_t len, int *negated) {
    for (int k = 0; k < (int)COUNT(CLASSES); k++) {
        const char *e = CLASSES[k].escape;
        size_t n = strlen(e);
        if (len < n || p[0] != '\\' || strncmp(p + 2, e + 2, n - 2)) continue;
        if (p[1] == e[1] || p[1] == (e[1] ^ 0x20)) {
            *negated = p[1] != e[1];
            return k;
        }
    }
    return -1;
}

static size_t write_ranges(char *out, const tk_range *r, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += (size_t)(r[i].lo == r[i].hi ? sprintf(out + k, "\\x{%x}", r[i].lo)
                                         : sprintf(out + k, "\\x{%x}-\\x{%x}", r[i].lo, r[i].hi));
    return k;
}

/* The pattern with each class escape spelled out. A complemented class
 * inside [...] (rare) cannot be spelled out and is left to PCRE2. */
static char *spell_out_classes(const char *p, size_t len) {
    /* a range is at most 21 characters: \x{10ffff}-\x{10ffff} */
    size_t cap = len + 1, longest = 0;
    for (size_t k = 0; k < COUNT(CLASSES); k++)
        if (CLASSES[k].n * 21 > longest) longest = CLASSES[k].n * 21;
    for (size_t i = 0; i < len; i++) cap += p[i] == '\\' ? longest + 3 : 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    size_t n = 0;
    int in_class = 0, negated;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        int k = class_at(p + i, len - i, &negated);
        if (k >= 0 && !(in_class && negated)) {
            if (!in_class) n += (size_t)sprintf(out + n, negated ? "[^" : "[");
            n += write_ranges(out + n, CLASSES[k].ranges, CLASSES[k].n);
            if (!in_class) out[n++] = ']';
            i += strlen(CLASSES[k].escape) - 1;
            continue;
        }
        if (c == '\\' && i + 1 < len) { /* any other escape, copied whole */
            out[n++] = c;
            out[n++] = p[++i];
            continue;
        }
        out[n++] = c;
        if (!in_class && c == '[') {
            in_class = 1;
            /* "[^]...]" and "[]...]": a ']' right after the opening is literal */
            if (i + 1 < len && p[i + 1] == '^') out[n++] = p[++i];
            if (i + 1 < len && p[i + 1] == ']') out[n++] = p[++i];
        } else if (in_class && c == '[' && i + 1 < len && p[i + 1] == ':') {
            /* a POSIX class like [:alpha:] inside the class: copy it whole */
            size_t end = i + 2;
            while (end + 1 < len && !(p[end] == ':' && p[end + 1] == ']')) end++;
            if (end + 1 < len) {
                memcpy(out + n, p + i + 1, end + 1 - i);
                n += end + 1 - i;
                i = end + 1;
            }
        } else if (in_class && c == ']') {
            in_class = 0;
        }
    }
    out[n] = 0;
    return out;
}

pcre2_code *tk_regex_compile(const char *pattern, size_t len, int literal, char *why,
                             size_t why_len) {
    char *rewritten = literal ? NULL : spell_out_classes(pattern, len);
    if (!literal && !rewritten) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    int code;
    PCRE2_SIZE at;
    uint32_t flags = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code *re = literal ? pcre2_compile((PCRE2_SPTR)pattern, len, flags, &code, &at, NULL)
                             : pcre2_compile((PCRE2_SPTR)rewritten, PCRE2_ZERO_TERMINATED, flags,
                                             &code, &at, NULL);
    free(rewritten);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        snprintf(why, why_len, "%s", (const char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* if JIT is unavailable, the interpreter runs */
    return re;
}

pcre2_code *tk_gpt2_regex(char *why, size_t why_len) {
    static const char gpt2[] =
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
    return tk_regex_compile(gpt2, sizeof gpt2 - 1, 0, why, why_len);
}

int tk_split(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t len, tk_piece_fn fn,
             void *ctx, cmamba_error *err) {
    size_t pos = 0, last = 0; /* search start; end of the last piece given to fn */
    while (pos <= len) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, len, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return cm_fail(err, "pre-tokenizer regex failed at byte %zu: %s", pos, (char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], b = ov[1];
        if (a > last && fn(ctx, s + last, a - last, err)) return -1;
        if (b > a && fn(ctx, s + a, b - a, err)) return -1;
        last = b;
        if (b > a) {
            pos = b;
        } else { /* an empty match still splits, then the search moves one character on */
            if (a == len) break;
            tk_cp_at(s, len, a, &pos);
        }
    }
    return last < len ? fn(ctx, s + last, len - last, err) : 0;
}

/* ---- normalisation -------------------------------------------------------------- */

int tk_nfc(const char *s, size_t len, char **out, size_t *out_len, cmamba_error *err) {
    size_t i = 0;
    while (i < len && (unsigned char)s[i] < 0x80) i++;
    if (i == len) { /* ASCII is its own NFC */
        char *copy = cm_malloc(len + 1, err);
        if (!copy) return -1;
        memcpy(copy, s, len);
        copy[len] = 0;
        *out = copy;
        *out_len = len;
        return 0;
    }
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &nfc,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (n < 0) return cm_fail(err, "NFC normalisation failed: %s", utf8proc_errmsg(n));
    *out = (char *)nfc;
    *out_len = (size_t)n;
    return 0;
}
