/* Byte-pair encoding of one pre-token: start from one symbol per byte and
 * apply the lowest-ranked merge available anywhere in the word (leftmost on
 * ties) until none applies, the order Hugging Face's BPE model uses. A heap
 * of candidate merges keeps long pieces (runs of newlines, say) O(n log n). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

int tk_ids_push(tk_ids *ids, int32_t id, cmamba_error *err) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = realloc(ids->v, cap * sizeof *v);
        if (!v) return cm_fail(err, "out of memory for %zu token ids", cap);
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return 0;
}

/* ---- hash maps -------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t len) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t hash_u64(uint64_t x) { /* splitmix64 finaliser */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Smallest power of two holding max_keys at a load factor of at most 1/2. */
static size_t table_cap(size_t max_keys) {
    size_t cap = 16;
    while (cap < 2 * max_keys) cap *= 2;
    return cap;
}

int tk_strmap_init(tk_strmap *m, size_t max_keys, cmamba_error *err) {
    m->cap = table_cap(max_keys);
    m->keys = cm_calloc(m->cap, sizeof *m->keys, err);
    m->lens = cm_calloc(m->cap, sizeof *m->lens, err);
    m->vals = cm_calloc(m->cap, sizeof *m->vals, err);
    if (!m->keys || !m->lens || !m->vals) {
        tk_strmap_free(m);
        return -1;
    }
    return 0;
}

void tk_strmap_free(tk_strmap *m) {
    free(m->keys);
    free(m->lens);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static size_t strmap_slot(const tk_strmap *m, const char *key, size_t len) {
    size_t mask = m->cap - 1, i = hash_bytes(key, len) & mask;
    while (m->keys[i] && !(m->lens[i] == len && !memcmp(m->keys[i], key, len))) i = (i + 1) & mask;
    return i;
}

int32_t tk_strmap_put(tk_strmap *m, const char *key, size_t len, int32_t val) {
    size_t i = strmap_slot(m, key, len);
    if (m->keys[i]) return m->vals[i];
    m->keys[i] = key;
    m->lens[i] = (uint32_t)len;
    m->vals[i] = val;
    return -1;
}

int32_t tk_strmap_get(const tk_strmap *m, const char *key, size_t len) {
    if (!m->cap) return -1;
    size_t i = strmap_slot(m, key, len);
    return m->keys[i] ? m->vals[i] : -1;
}

int tk_pairmap_init(tk_pairmap *m, size_t max_keys, cmamba_error *err) {
    m->cap = table_cap(max_keys);
    m->keys = cm_calloc(m->cap, sizeof *m->keys, err);
    m->ranks = cm_calloc(m->cap, sizeof *m->ranks, err);
    m->merged = cm_calloc(m->cap, sizeof *m->merged, err);
    if (!m->keys || !m->ranks || !m->merged) {
        tk_pairmap_free(m);
        return -1;
    }
    return 0;
}

void tk_pairmap_free(tk_pairmap *m) {
    free(m->keys);
    free(m->ranks);
    free(m->merged);
    memset(m, 0, sizeof *m);
}

static size_t pairmap_slot(const tk_pairmap *m, uint64_t key) {
    size_t mask = m->cap - 1, i = hash_u64(key) & mask;
    while (m->keys[i] && m->keys[i] != key) i = (i + 1) & mask;
    return i;
}

static uint64_t pair_key(int32_t left, int32_t right) {
    return ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) + 1;
}

void tk_pairmap_put(tk_pairmap *m, int32_t left, int32_t right, uint32_t rank, int32_t merged) {
    uint64_t key = pair_key(left, right);
    size_t i = pairmap_slot(m, key);
    m->keys[i] = key;
    m->ranks[i] = rank;
    m->merged[i] = merged;
}

/* The merge of (left, right): its slot, or -1 if the pair never merges. */
static long pair_find(const tk_pairmap *m, int32_t left, int32_t right) {
    if (!m->cap) return -1;
    size_t i = pairmap_slot(m, pair_key(left, right));
    return m->keys[i] ? (long)i : -1;
}

/* ---- the merge loop ----------------------------------------------------------- */

/* A doubly linked list over the initial symbols; a merge grows the left
 * symbol and unlinks the right one. */
struct tk_symbol {
    int32_t id;
    int32_t prev, next; /* -1 at the ends */
    int alive;
};

struct tk_merge {
    uint32_t rank;
    uint32_t pos; /* index of the left symbol */
    int32_t merged;
};

void tk_scratch_free(tk_scratch *s) {
    free(s->sym);
    free(s->heap);
    free(s->mapped);
    memset(s, 0, sizeof *s);
}

static int grow(void **buf, size_t *cap, size_t need, size_t elem, cmamba_error *err) {
    if (need <= *cap) return 0;
    size_t cap2 = *cap ? *cap : 64;
    while (cap2 < need) cap2 *= 2;
    void *p = realloc(*buf, cap2 * elem);
    if (!p) return cm_fail(err, "out of memory for a %zu-byte pre-token", need);
    *buf = p;
    *cap = cap2;
    return 0;
}

static int merge_before(const struct tk_merge *a, const struct tk_merge *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(struct tk_merge *h, size_t *n, struct tk_merge m) {
    size_t i = (*n)++;
    while (i > 0 && merge_before(&m, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = m;
}

static struct tk_merge heap_pop(struct tk_merge *h, size_t *n) {
    struct tk_merge top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && merge_before(&h[c + 1], &h[c])) c++;
        if (!merge_before(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

/* Pushes the merge of symbol pos with its successor, if there is one. */
static void push_pair(const tk_bpe *bpe, const struct tk_symbol *sym, struct tk_merge *heap,
                      size_t *n_heap, int32_t pos) {
    if (pos < 0 || sym[pos].next < 0) return;
    long slot = pair_find(&bpe->merges, sym[pos].id, sym[sym[pos].next].id);
    if (slot >= 0)
        heap_push(
            heap, n_heap,
            (struct tk_merge){bpe->merges.ranks[slot], (uint32_t)pos, bpe->merges.merged[slot]});
}

/* ignore_merges: a piece that is a whole vocab token is that token. */
static int32_t whole_piece_id(const tk_bpe *bpe, const unsigned char *piece, size_t len,
                              tk_scratch *s, cmamba_error *err) {
    if (grow((void **)&s->mapped, &s->mapped_cap, 2 * len, 1, err)) return -2;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) k += (size_t)tk_byte_to_utf8(piece[i], s->mapped + k);
    return tk_strmap_get(&bpe->vocab, s->mapped, k);
}

int tk_bpe_encode(const tk_bpe *bpe, const unsigned char *piece, size_t len, tk_scratch *s,
                  tk_ids *out, cmamba_error *err) {
    if (len == 0) return 0;
    if (len > INT32_MAX) return cm_fail(err, "pre-token of %zu bytes is too long", len);
    if (bpe->ignore_merges) {
        int32_t id = whole_piece_id(bpe, piece, len, s, err);
        if (id == -2) return -1;
        if (id >= 0) return tk_ids_push(out, id, err);
    }
    if (grow((void **)&s->sym, &s->sym_cap, len, sizeof *s->sym, err) ||
        grow((void **)&s->heap, &s->heap_cap, 2 * len, sizeof *s->heap, err))
        return -1;
    struct tk_symbol *sym = s->sym;
    struct tk_merge *heap = s->heap;

    /* One symbol per byte; bytes without a token become unk (fused into one
     * per run if fuse_unk) or are dropped, as HF does. */
    int32_t n = 0;
    int prev_unknown = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t id = bpe->byte_id[piece[i]];
        int unknown = id < 0;
        if (unknown) id = bpe->unk_id;
        if (id >= 0 && !(unknown && prev_unknown && bpe->fuse_unk))
            sym[n] = (struct tk_symbol){id, n - 1, -1, 1}, n++;
        prev_unknown = unknown;
    }
    for (int32_t i = 0; i + 1 < n; i++) sym[i].next = i + 1;

    /* n-1 initial entries, and each merge pops one and pushes at most two:
     * the heap never holds more than 2n. */
    size_t n_heap = 0;
    for (int32_t i = 0; i + 1 < n; i++) push_pair(bpe, sym, heap, &n_heap, i);
    while (n_heap > 0) {
        struct tk_merge top = heap_pop(heap, &n_heap);
        struct tk_symbol *left = &sym[top.pos];
        if (!left->alive || left->next < 0) continue;
        long slot = pair_find(&bpe->merges, left->id, sym[left->next].id);
        if (slot < 0 || bpe->merges.merged[slot] != top.merged) continue; /* stale entry */
        struct tk_symbol *right = &sym[left->next];
        left->id = top.merged;
        right->alive = 0;
        left->next = right->next;
        if (right->next >= 0) sym[right->next].prev = (int32_t)top.pos;
        push_pair(bpe, sym, heap, &n_heap, left->prev);
        push_pair(bpe, sym, heap, &n_heap, (int32_t)top.pos);
    }
    for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = sym[i].next)
        if (tk_ids_push(out, sym[i].id, err)) return -1;
    return 0;
}
