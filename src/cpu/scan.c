/* The selective scan on the CPU's fast path, forward and backward.
 *
 * The reference forms (src/ssm/selective_scan.c, src/train/layers.c) walk one
 * channel at a time with its state as a vector over d_state: every step ends
 * in a horizontal sum and depends on the step before, so they run at the
 * latency of that chain. Here the vectors run across CB neighbouring
 * channels instead: in the channels-last layout their x, Δ, z and y are
 * contiguous, B_t and C_t are shared by all of them, the sum over the state
 * is a plain per-lane accumulation, and the d_state exponentials of a step
 * go out CB at a time (cpu/vecmath.h). Each lane computes what the
 * reference computes for its channel, in the same order; only the
 * exponential (cm_fast_expf rather than libm's expf) differs, by an ulp or so, and
 * the backward's sums over channels (dB, dC) run in a tree over the lanes.
 * tests/test_fast_kernels.c holds the two to each other.
 *
 * Every lane loop runs the full CB lanes: a block's inputs are first copied
 * into lane arrays, a short last block padded with zeros (Δ = x = dy = 0
 * keeps a padded lane's state and gradients at zero), so that the loops
 * have a constant trip count and no remainder. The exponentials of a step
 * are taken in a loop of their own: a vector call clobbers every vector
 * register, and the loop that uses them then keeps its values in registers. */
#include <stdlib.h>
#include <string.h>

#include "cpu/vecmath.h"
#include "model/ops.h"
#include "ssm/selective_scan.h"
#include "train/layers.h"

enum { CB = 16 }; /* channels per block: one AVX-512 vector of fp32 */
/* Steps ahead to prefetch a block's rows: consecutive steps of a channel
 * lie d_inner floats apart, beyond the reach of the hardware prefetchers
 * (which stay within a 4 KiB page), and a prompt's activations outgrow L2. */
enum { PREFETCH = 8 };

/* (nc, N) rows of m, transposed into lanes t (N, CB), and back; lanes
 * from nc on are zero */
static void to_lanes(float *t, const float *m, int nc, int N) {
    memset(t, 0, sizeof(float) * (size_t)N * CB);
    for (int c = 0; c < nc; c++)
        for (int n = 0; n < N; n++) t[(size_t)n * CB + c] = m[(size_t)c * N + n];
}

static void from_lanes(float *m, const float *t, int nc, int N) {
    for (int c = 0; c < nc; c++)
        for (int n = 0; n < N; n++) m[(size_t)c * N + n] = t[(size_t)n * CB + c];
}

/* nc values of v into lanes l, zero-padded, and back (added into v). A
 * full block moves as whole vectors: lanes written one by one and then
 * read as a vector would stall on store-to-load forwarding. */
static inline void load_lanes(float *l, const float *v, int nc) {
    if (nc == CB) {
        memcpy(l, v, sizeof(float) * CB);
        return;
    }
    for (int c = 0; c < CB; c++) l[c] = c < nc ? v[c] : 0.0f;
}

static inline void add_lanes(float *restrict v, const float *restrict l, int nc) {
    if (nc == CB)
#pragma omp simd
        for (int c = 0; c < CB; c++) v[c] += l[c];
    else
        for (int c = 0; c < nc; c++) v[c] += l[c];
}

/* acc[c] ·= silu(z[c]) = z / (1 + e^−z), the exponentials in a loop of
 * their own: GCC vectorises neither loop when they are one */
static inline void gate_lanes(float *acc, const float *z) {
    float e[CB];
#pragma omp simd
    for (int c = 0; c < CB; c++) e[c] = cm_fast_expf(-z[c]);
#pragma omp simd
    for (int c = 0; c < CB; c++) acc[c] *= z[c] / (1.0f + e[c]);
}

/* Step t's rows of x, Δ, z and one more tensor (y, written, in the forward;
 * dy, read, in the backward) fetched PREFETCH steps ahead; r = t·d_inner + c0. */
static inline __attribute__((always_inline)) void
prefetch_rows(const cm_scan_args *a, const float *other, int rw, size_t r, int t, int c0) {
    if (t + PREFETCH >= a->L) return;
    const size_t rp = r + (size_t)PREFETCH * a->d_inner;
    __builtin_prefetch(a->x + rp);
    __builtin_prefetch(a->delta + rp);
    if (rw) __builtin_prefetch(other + rp, 1);
    else __builtin_prefetch(other + rp, 0);
    if (a->z) __builtin_prefetch(a->z + (size_t)(t + PREFETCH) * a->z_stride + c0);
}

/* eT (N, CB) = exp(Δ·A) for one step */
static inline void step_exps(float *eT, const float *dt, const float *AT, int N) {
    for (int n = 0; n < N; n++) {
        const float *An = AT + (size_t)n * CB;
        float *en = eT + (size_t)n * CB;
#pragma omp simd
        for (int c = 0; c < CB; c++) en[c] = cm_fast_expf(dt[c] * An[c]);
    }
}

/* ---- forward ---------------------------------------------------------------- */

/* Channels [c0, c0+nc): hT, AT are their state and A in lanes (N, CB).
 * Each state's exponential is taken where it is used (cm_fast_expf is
 * inline arithmetic, no call to spill registers around), and with N a
 * constant the loop over the state unrolls, the block's state held in
 * registers from step to step. */
static inline __attribute__((always_inline)) void
scan_block_n(const cm_scan_args *a, int c0, int nc, float *hT, const float *AT, float *y,
             const int N) {
    const int L = a->L, di = a->d_inner;
    float D[CB] = {0};
    if (a->D) load_lanes(D, a->D + c0, nc);
    for (int t = 0; t < L; t++) {
        const size_t r = (size_t)t * di + c0;
        const float *B = a->B + (size_t)t * a->bc_stride, *C = a->C + (size_t)t * a->bc_stride;
        float x[CB], dt[CB], acc[CB] = {0};
        prefetch_rows(a, y, 1, r, t, c0);
        load_lanes(x, a->x + r, nc);
        load_lanes(dt, a->delta + r, nc);
        for (int n = 0; n < N; n++) {
            const float Bn = B[n], Cn = C[n], *An = AT + (size_t)n * CB;
            float *hn = hT + (size_t)n * CB;
#pragma omp simd
            for (int c = 0; c < CB; c++) {
                const float h = cm_fast_expf(dt[c] * An[c]) * hn[c] + dt[c] * Bn * x[c];
                hn[c] = h;
                acc[c] += h * Cn;
            }
        }
        if (a->D)
#pragma omp simd
            for (int c = 0; c < CB; c++) acc[c] += D[c] * x[c];
        if (a->z) {
            float z[CB];
            load_lanes(z, a->z + (size_t)t * a->z_stride + c0, nc);
            gate_lanes(acc, z);
        }
        if (nc == CB)
            memcpy(y + r, acc, sizeof acc);
        else
            memcpy(y + r, acc, sizeof(float) * nc);
    }
}

CM_SIMD_CLONES
static void scan_block(const cm_scan_args *a, int c0, int nc, float *hT, const float *AT, float *y) {
    if (a->d_state == CB) scan_block_n(a, c0, nc, hT, AT, y, CB);
    else scan_block_n(a, c0, nc, hT, AT, y, a->d_state);
}

/* y[c] = Σ_l p[c][l] for the CB rows of p, each as a tree of halves
 * (lanes l and l + 8, then l + 4, l + 2, l + 1), taken for all the rows at
 * once: each level adds the two halves of every row's partial sums and
 * packs two rows' results into one vector, so that 15 pairs of permutes and
 * adds leave the CB sums in one vector (GCC's vector extensions), in
 * place of a tree of permutes per row. */
#if defined(__clang__)
/* clang has no two-operand __builtin_shuffle with a mask vector: the same
 * tree of halves per row, so the sums have the same bits */
static inline void sum_rows(const float p[CB][CB], float *y) {
    for (int c = 0; c < CB; c++) {
        float t[CB];
        memcpy(t, p[c], sizeof t);
        for (int w = CB / 2; w >= 1; w /= 2)
            for (int l = 0; l < w; l++) t[l] += t[l + w];
        y[c] = t[0];
    }
}
#else
typedef float lanes_v __attribute__((vector_size(CB * sizeof(float))));
typedef int lanes_i __attribute__((vector_size(CB * sizeof(int))));
static inline void sum_rows(const float p[CB][CB], float *y) {
    lanes_v v[CB];
    for (int c = 0; c < CB; c++) memcpy(&v[c], p[c], sizeof v[c]);
    static const lanes_i lo[4] = {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
                                  {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27},
                                  {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29},
                                  {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}};
    static const lanes_i hi[4] = {{8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
                                  {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31},
                                  {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31},
                                  {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31}};
    for (int level = 0, n = CB; level < 4; level++, n /= 2)
        for (int k = 0; k < n / 2; k++)
            v[k] = __builtin_shuffle(v[2 * k], v[2 * k + 1], lo[level]) +
                   __builtin_shuffle(v[2 * k], v[2 * k + 1], hi[level]);
    memcpy(y, &v[0], sizeof v[0]);
}
#endif

/* One step (L = 1: decoding) of channels [c0, c1). The state stays in its
 * (d_inner, d_state) layout, a channel's states CB at a time in one vector
 * (zero-padded): moving the whole state into lanes and back, as a prompt's
 * blocks do, would cost more than the step. The sums over the state are
 * then taken CB channels at a time (sum_rows), and the D skip and the gate
 * as vectors over those channels. */
static inline __attribute__((always_inline)) void
scan_step_n(const cm_scan_args *a, int c0, int c1, float *h, float *y, const int N) {
    for (int cb = c0; cb < c1; cb += CB) {
        const int nc = c1 - cb < CB ? c1 - cb : CB;
        float part[CB][CB] = {{0}}; /* row j: channel cb + j's products h·C, by lane */
        for (int j = 0; j < nc; j++) {
            const int c = cb + j;
            const float dt = a->delta[c], x = a->x[c];
            for (int n0 = 0; n0 < N; n0 += CB) {
                const int m = N - n0 < CB ? N - n0 : CB;
                float hv[CB], Av[CB], Bv[CB], Cv[CB];
                load_lanes(hv, h + (size_t)c * N + n0, m);
                load_lanes(Av, a->A + (size_t)c * N + n0, m);
                load_lanes(Bv, a->B + n0, m);
                load_lanes(Cv, a->C + n0, m);
#pragma omp simd
                for (int l = 0; l < CB; l++) {
                    hv[l] = cm_fast_expf(dt * Av[l]) * hv[l] + dt * Bv[l] * x;
                    part[j][l] += hv[l] * Cv[l];
                }
                memcpy(h + (size_t)c * N + n0, hv, sizeof(float) * m);
            }
        }
        float acc[CB], x[CB], D[CB] = {0}, z[CB] = {0};
        sum_rows(part, acc);
        load_lanes(x, a->x + cb, nc);
        if (a->D) load_lanes(D, a->D + cb, nc);
        if (a->z) load_lanes(z, a->z + cb, nc);
#pragma omp simd
        for (int l = 0; l < CB; l++) acc[l] += D[l] * x[l];
        if (a->z) gate_lanes(acc, z);
        memcpy(y + cb, acc, sizeof(float) * nc);
    }
}

/* d_state = CB (16, every published Mamba) a constant: a channel's state
 * is then one vector, its loads and stores whole, no loop over blocks */
CM_SIMD_CLONES
static void scan_step(const cm_scan_args *a, int c0, int c1, float *h, float *y) {
    if (a->d_state == CB) scan_step_n(a, c0, c1, h, y, CB);
    else scan_step_n(a, c0, c1, h, y, a->d_state);
}

void cm_selective_scan_step(const cm_scan_args *a, float *h, float *y, int c0, int c1) {
    scan_step(a, c0, c1, h, y);
}

void cm_selective_scan(const cm_scan_args *a, float *h, float *y) {
    const int di = a->d_inner, N = a->d_state, blocks = (di + CB - 1) / CB;
    if (a->L == 1) {
        /* the threads share the channels when the step is worth a region */
        enum { STEP_CHANNELS = 256 };
        const int parts = (di + STEP_CHANNELS - 1) / STEP_CHANNELS;
#pragma omp parallel for schedule(static) if ((long)di * N >= 16384)
        for (int k = 0; k < parts; k++) {
            const int c0 = k * STEP_CHANNELS, c1 = c0 + STEP_CHANNELS < di ? c0 + STEP_CHANNELS : di;
            scan_step(a, c0, c1, h, y);
        }
        return;
    }
#pragma omp parallel if ((long)a->L * di * N > 100000)
    {
        float *hT = malloc(sizeof(float) * 2 * CB * (size_t)N), *AT = hT + (size_t)CB * N;
#pragma omp for schedule(static)
        for (int k = 0; k < blocks; k++) {
            const int c0 = k * CB, nc = di - c0 < CB ? di - c0 : CB;
            to_lanes(hT, h + (size_t)c0 * N, nc, N);
            to_lanes(AT, a->A + (size_t)c0 * N, nc, N);
            scan_block(a, c0, nc, hT, AT, y);
            from_lanes(h + (size_t)c0 * N, hT, nc, N);
        }
        free(hT);
    }
}

/* ---- backward ----------------------------------------------------------------
 * The reference's recurrences (train/layers.c), a block of channels at a
 * time, in two passes: forward in time, the block's inputs are copied into
 * lanes and its states recomputed (with the exponentials, kept for the
 * second pass); backward in time, the gradients go into lanes, which a last
 * pass adds into g. Every pass over the (L, d_inner) tensors then walks
 * them forward; walking them backward, 64 bytes from each of seven rows
 * 4·d_inner bytes apart per step, missed the caches at every step.
 *
 * A group's work, carved by carve_group: the block's states and
 * exponentials, its inputs and gradients in lanes, (N, CB) tiles, and the
 * group's dB, dC partials, summed over its channels. Groups are then added
 * in order, so the result depends on `groups`, never on the number of
 * threads. */

typedef struct {
    float *hs, *es;                  /* (L, N, CB) h_t and exp(Δ_t·A)          */
    float *x, *dt, *dy, *z;          /* (L, CB) the block's inputs            */
    float *dx, *ddelta, *dz;         /* (L, CB) its gradients, then added to g */
    float *dh, *A, *dA, *wB, *wC;    /* (N, CB) the lane products of a step: wB, wC */
    float *zero;                     /* (N, CB) zeros: the state before step 0 */
    float *pB, *pC;                  /* (L, N) the group's partial dB, dC      */
} group_work;

static float *take(float *base, size_t *used, size_t count) {
    float *p = base ? base + *used : NULL;
    *used += count;
    return p;
}

/* Carves group k's work out of work (or, with work NULL, counts its floats). */
static size_t carve_group(group_work *w, float *work, int k, int L, int N) {
    const size_t states = (size_t)L * N * CB, lanes = (size_t)L * CB, tile = (size_t)N * CB;
    size_t used = 0;
    float *base = NULL;
    for (int pass = 0; pass < 2; pass++) {
        if (pass) {
            if (!work) break;
            base = work + (size_t)k * used;
            used = 0;
        }
        w->hs = take(base, &used, states);
        w->es = take(base, &used, states);
        float **lane[] = {&w->x, &w->dt, &w->dy, &w->z, &w->dx, &w->ddelta, &w->dz};
        for (size_t i = 0; i < sizeof lane / sizeof *lane; i++) *lane[i] = take(base, &used, lanes);
        float **tiles[] = {&w->dh, &w->A, &w->dA, &w->wB, &w->wC, &w->zero};
        for (size_t i = 0; i < sizeof tiles / sizeof *tiles; i++) *tiles[i] = take(base, &used, tile);
        w->pB = take(base, &used, (size_t)L * N);
        w->pC = take(base, &used, (size_t)L * N);
    }
    return used;
}

size_t cm_scan_backward_work(int L, int d_state, int groups) {
    group_work w;
    /* enough for the reference form's layout too */
    const size_t fast = carve_group(&w, NULL, 0, L, d_state), ref = (3 * (size_t)L + 1) * d_state;
    return (size_t)groups * (fast > ref ? fast : ref);
}

/* Σ over the lanes of each of the N rows of wT (N, CB), added to p (N):
 * a tree of halves, the same for every row, as vector adds (GCC reduces an
 * `omp simd reduction` of floats one lane at a time); wT is overwritten.
 * With N = CB (every published Mamba), sum_rows takes the same tree for
 * all the rows at once, in permutes of whole vectors. */
static inline void add_lane_sums(float *p, float *wT, int N) {
    if (N == CB) {
        float y[CB];
        sum_rows((const float(*)[CB])wT, y);
#pragma omp simd
        for (int n = 0; n < CB; n++) p[n] += y[n];
        return;
    }
    for (int half = CB / 2; half > 0; half /= 2)
        for (int n = 0; n < N; n++) {
            float *v = wT + (size_t)n * CB;
            for (int c = 0; c < half; c++) v[c] += v[c + half];
        }
    for (int n = 0; n < N; n++) p[n] += wT[(size_t)n * CB];
}

/* Channels [c0, c0+nc) of group work w; w->A holds their A in lanes, w->dA
 * zeros (and then their dA). */
CM_SIMD_CLONES
static void scan_backward_block(const cm_scan_args *a, const float *dy, const cm_scan_grads *g,
                                int c0, int nc, const group_work *w) {
    const int L = a->L, di = a->d_inner, N = a->d_state;
    const size_t tile = (size_t)N * CB;
    float D[CB] = {0}, dD[CB] = {0};
    if (a->D) load_lanes(D, a->D + c0, nc);

    /* the inputs into lanes, and the states recomputed exactly as the
     * forward computes them */
    for (int t = 0; t < L; t++) {
        const size_t r = (size_t)t * di + c0;
        const float *B = a->B + (size_t)t * a->bc_stride;
        float *x = w->x + (size_t)t * CB, *dt = w->dt + (size_t)t * CB;
        prefetch_rows(a, dy, 0, r, t, c0);
        load_lanes(x, a->x + r, nc);
        load_lanes(dt, a->delta + r, nc);
        load_lanes(w->dy + (size_t)t * CB, dy + r, nc);
        if (a->z) load_lanes(w->z + (size_t)t * CB, a->z + (size_t)t * a->z_stride + c0, nc);
        step_exps(w->es + (size_t)t * tile, dt, w->A, N);
        for (int n = 0; n < N; n++) {
            const float Bn = B[n], *en = w->es + ((size_t)t * N + n) * CB;
            float *ht = w->hs + ((size_t)t * N + n) * CB;
            const float *hp = t ? ht - tile : w->zero + (size_t)n * CB;
#pragma omp simd
            for (int c = 0; c < CB; c++) ht[c] = en[c] * hp[c] + dt[c] * Bn * x[c];
        }
    }

    memset(w->dh, 0, sizeof(float) * tile);
    for (int t = L - 1; t >= 0; t--) {
        const float *B = a->B + (size_t)t * a->bc_stride, *C = a->C + (size_t)t * a->bc_stride;
        const float *hT = w->hs + (size_t)t * tile;
        const float *x = w->x + (size_t)t * CB, *dt = w->dt + (size_t)t * CB;
        float *dx = w->dx + (size_t)t * CB, *ddelta = w->ddelta + (size_t)t * CB, ds[CB];
        memcpy(ds, w->dy + (size_t)t * CB, sizeof ds);
        if (a->z) {
            const float *z = w->z + (size_t)t * CB;
            float *dz = w->dz + (size_t)t * CB, s[CB];
#pragma omp simd
            for (int c = 0; c < CB; c++) s[c] = D[c] * x[c];
            for (int n = 0; n < N; n++) {
                const float Cn = C[n], *hn = hT + (size_t)n * CB;
#pragma omp simd
                for (int c = 0; c < CB; c++) s[c] += hn[c] * Cn;
            }
#pragma omp simd
            for (int c = 0; c < CB; c++) {
                const float sz = 1.0f / (1.0f + expf(-z[c]));
                dz[c] = ds[c] * s[c] * sz * (1.0f + z[c] * (1.0f - sz));
                ds[c] *= z[c] * sz;
            }
        }
        float gx[CB], gdelta[CB];
#pragma omp simd
        for (int c = 0; c < CB; c++) {
            dD[c] += ds[c] * x[c];
            gx[c] = ds[c] * D[c];
            gdelta[c] = 0.0f;
        }
        for (int n = 0; n < N; n++) {
            const float Bn = B[n], Cn = C[n], *An = w->A + (size_t)n * CB;
            const float *en = w->es + ((size_t)t * N + n) * CB;
            const float *ht = hT + (size_t)n * CB, *hp = t ? ht - tile : w->zero + (size_t)n * CB;
            float *dh = w->dh + (size_t)n * CB, *dA = w->dA + (size_t)n * CB;
            float *wb = w->wB + (size_t)n * CB, *wc = w->wC + (size_t)n * CB;
            /* d in a local: stored through a pointer, it would be reloaded
             * after every store the compiler cannot prove apart from it */
#pragma omp simd
            for (int c = 0; c < CB; c++) {
                const float at = en[c], h0 = hp[c], d = dh[c] + ds[c] * Cn;
                wc[c] = ds[c] * ht[c];
                wb[c] = d * dt[c] * x[c];
                gx[c] += d * dt[c] * Bn;
                gdelta[c] += d * (An[c] * at * h0 + Bn * x[c]);
                dA[c] += d * dt[c] * at * h0;
                dh[c] = d * at; /* carry to step t−1 */
            }
        }
        add_lane_sums(w->pB + (size_t)t * N, w->wB, N);
        add_lane_sums(w->pC + (size_t)t * N, w->wC, N);
        memcpy(dx, gx, sizeof gx);
        memcpy(ddelta, gdelta, sizeof gdelta);
    }

    for (int t = 0; t < L; t++) {
        const size_t r = (size_t)t * di + c0;
        add_lanes(g->dx + r, w->dx + (size_t)t * CB, nc);
        add_lanes(g->ddelta + r, w->ddelta + (size_t)t * CB, nc);
        if (a->z) add_lanes(g->dz + (size_t)t * a->z_stride + c0, w->dz + (size_t)t * CB, nc);
    }
    if (a->D)
        for (int c = 0; c < nc; c++) g->dD[c0 + c] += dD[c];
}

void cm_selective_scan_backward(const cm_scan_args *a, const float *dy, const cm_scan_grads *g,
                                int groups, float *work) {
    const int L = a->L, di = a->d_inner, N = a->d_state;
#pragma omp parallel for schedule(static, 1)
    for (int k = 0; k < groups; k++) {
        group_work w;
        carve_group(&w, work, k, L, N);
        memset(w.zero, 0, sizeof(float) * N * CB);
        memset(w.pB, 0, sizeof(float) * L * N);
        memset(w.pC, 0, sizeof(float) * L * N);
        const int lo = (int)((long)k * di / groups), hi = (int)((long)(k + 1) * di / groups);
        for (int c0 = lo; c0 < hi; c0 += CB) {
            const int nc = hi - c0 < CB ? hi - c0 : CB;
            to_lanes(w.A, a->A + (size_t)c0 * N, nc, N);
            memset(w.dA, 0, sizeof(float) * N * CB);
            scan_backward_block(a, dy, g, c0, nc, &w);
            for (int c = 0; c < nc; c++)
                for (int n = 0; n < N; n++)
                    g->dA[(size_t)(c0 + c) * N + n] += w.dA[(size_t)n * CB + c];
        }
    }
#pragma omp parallel for schedule(static)
    for (int t = 0; t < L; t++) {
        for (int k = 0; k < groups; k++) {
            group_work w;
            carve_group(&w, work, k, L, N);
            for (int n = 0; n < N; n++) {
                g->dB[(size_t)t * a->bc_stride + n] += w.pB[(size_t)t * N + n];
                g->dC[(size_t)t * a->bc_stride + n] += w.pC[(size_t)t * N + n];
            }
        }
    }
}
