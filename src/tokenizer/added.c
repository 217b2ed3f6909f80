/* Added tokens (special tokens such as <|endoftext|>, and GPT-NeoX's runs
 * of spaces) are cut out of the text before anything else sees it. The
 * rules are those of HF tokenizers' AddedVocabulary::find_matches:
 * leftmost-longest matches, scanned without overlap; a single_word token
 * that touches a word character is skipped (and its text stays plain
 * text); lstrip/rstrip widen a match over the whitespace beside it. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

static int by_first_byte_longest_first(const void *pa, const void *pb) {
    const tk_added *a = pa, *b = pb;
    unsigned char ca = (unsigned char)a->content[0], cb = (unsigned char)b->content[0];
    if (ca != cb) return ca < cb ? -1 : 1;
    return a->len != b->len ? (a->len > b->len ? -1 : 1) : 0;
}

void tk_added_index(tk_added_set *set) {
    if (set->n) qsort(set->tok, set->n, sizeof *set->tok, by_first_byte_longest_first);
    size_t k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < set->n && (unsigned char)set->tok[k].content[0] < b) k++;
        set->first[b] = k;
    }
}

void tk_added_free(tk_added_set *set) {
    for (size_t i = 0; i < set->n; i++) free(set->tok[i].content);
    free(set->tok);
    memset(set, 0, sizeof *set);
}

/* The longest token matching at s[j], or NULL. */
static const tk_added *match_at(const tk_added_set *set, const char *s, size_t len, size_t j) {
    unsigned char b = (unsigned char)s[j];
    for (size_t k = set->first[b]; k < set->first[b + 1]; k++) {
        const tk_added *t = &set->tok[k];
        if (t->len <= len - j && !memcmp(t->content, s + j, t->len)) return t;
    }
    return NULL;
}

static size_t space_run_before(const char *s, size_t i) {
    size_t start;
    while (i > 0 && tk_is_space(tk_cp_before(s, i, &start))) i = start;
    return i;
}

static size_t space_run_after(const char *s, size_t len, size_t i) {
    size_t next;
    while (i < len && tk_is_space(tk_cp_at(s, len, i, &next))) i = next;
    return i;
}

static int is_single_word(const char *s, size_t len, size_t start, size_t stop) {
    size_t at;
    if (start > 0 && tk_is_word(tk_cp_before(s, start, &at))) return 0;
    if (stop < len && tk_is_word(tk_cp_at(s, len, stop, &at))) return 0;
    return 1;
}

int tk_added_split(const tk_added_set *set, const char *s, size_t len, tk_piece_fn text, void *ctx,
                   tk_ids *out, cmamba_error *err) {
    size_t done = 0; /* end of what has been emitted (HF's start_offset) */
    size_t j = 0;    /* where the scan for the next match resumes */
    while (set->n && j < len) {
        const tk_added *t = NULL;
        while (j < len && !(t = match_at(set, s, len, j))) j++;
        if (!t) break;
        size_t start = j, stop = j + t->len;
        j = stop;
        if (t->single_word && !is_single_word(s, len, start, stop)) continue;
        if (t->lstrip) {
            size_t ws = space_run_before(s, start);
            start = ws > done ? ws : done;
        }
        if (t->rstrip) stop = space_run_after(s, len, stop);
        /* A match inside whitespace that the previous token's rstrip took:
         * with lstrip it shrinks to nothing and HF drops it (or panics);
         * without, HF emits it and goes on from its end, even if that is
         * before the end of the previous token. */
        if (stop <= start) continue;
        if (start > done && text(ctx, s + done, start - done, err)) return -1;
        if (tk_ids_push(out, t->id, err)) return -1;
        done = stop;
    }
    return done < len ? text(ctx, s + done, len - done, err) : 0;
}
