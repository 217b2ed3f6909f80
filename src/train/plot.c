#include "train/plot.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

enum { W = 800, H = 480, LEFT = 70, RIGHT = 20, TOP = 40, BOTTOM = 50 };

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} text;

static void put(text *t, const char *fmt, ...) CM_PRINTF(2, 3);
static void put(text *t, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(t->s ? t->s + t->n : NULL, t->s ? t->cap - t->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { t->oom = 1; return; }
        if (t->s && t->n + (size_t)k < t->cap) { t->n += (size_t)k; return; }
        size_t cap = (t->cap + (size_t)k + 1) * 2;
        char *p = realloc(t->s, cap);
        if (!p) { t->oom = 1; return; }
        t->s = p;
        t->cap = cap;
    }
}

static int usable(const cm_plot_axes *a, float x, float y) {
    return isfinite(x) && isfinite(y) && (!a->log_y || y > 0);
}

/* 1, 2 or 5 times a power of ten, about range/6 */
static double nice_step(double range) {
    double p = pow(10, floor(log10(range / 6))), f = range / 6 / p;
    return p * (f < 1.5 ? 1 : f < 3.5 ? 2 : 5);
}

int cm_plot_svg(const char *path, const cm_plot_axes *a, const cm_plot_series *series,
                size_t n_series, cmamba_error *err) {
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (size_t s = 0; s < n_series; s++)
        for (size_t i = 0; i < series[s].n; i++) {
            float x = series[s].x[i], y = series[s].y[i];
            if (!usable(a, x, y)) continue;
            double v = a->log_y ? log10(y) : y;
            x0 = fmin(x0, x); x1 = fmax(x1, x);
            y0 = fmin(y0, v); y1 = fmax(y1, v);
        }
    if (!(x0 <= x1)) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
    if (x1 == x0) x1 = x0 + 1;
    if (y1 == y0) { y0 -= 0.5; y1 += 0.5; }
    const double pw = W - LEFT - RIGHT, ph = H - TOP - BOTTOM;
#define PX(x) (LEFT + ((x) - x0) / (x1 - x0) * pw)
#define PY(v) (TOP + (1 - ((v) - y0) / (y1 - y0)) * ph)
    text t = {0};
    put(&t, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
            "fill=\"white\"/>\n", W, H);
    put(&t, "<text x=\"%d\" y=\"24\" font-size=\"15\">%s</text>\n", LEFT, a->title);
    put(&t, "<text x=\"%g\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", LEFT + pw / 2, H - 12,
        a->x_label);
    put(&t, "<text transform=\"translate(16 %g) rotate(-90)\" text-anchor=\"middle\">%s%s</text>\n",
        TOP + ph / 2, a->y_label, a->log_y ? " (log scale)" : "");
    /* grid and tick labels */
    const double xs = nice_step(x1 - x0);
    for (double x = ceil(x0 / xs) * xs; x <= x1 + 1e-9 * xs; x += xs)
        put(&t, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
            PX(x), TOP, PX(x), TOP + ph, PX(x), TOP + ph + 16, x);
    /* y ticks: decades on a log axis spanning more than one, else round
     * values (placed logarithmically on a log axis) */
    const int decades = a->log_y && y1 - y0 >= 1;
    const double lo = a->log_y && !decades ? pow(10, y0) : y0,
                 hi = a->log_y && !decades ? pow(10, y1) : y1,
                 ys = decades ? fmax(1.0, nice_step(y1 - y0)) : nice_step(hi - lo);
    for (double v = ceil(lo / ys) * ys; v <= hi + 1e-9 * ys; v += ys) {
        const double pos = a->log_y && !decades ? log10(v) : v;
        put(&t, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n",
            LEFT, PY(pos), LEFT + pw, PY(pos), LEFT - 6, PY(pos) + 4, decades ? pow(10, v) : v);
    }
    put(&t, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
            "stroke=\"#444\"/>\n", LEFT, TOP, pw, ph);
    for (size_t s = 0; s < n_series; s++) {
        const cm_plot_series *sr = &series[s];
        put(&t, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", sr->color);
        /* one pixel column's lowest and highest point: the same picture as every
         * point (spikes kept), in a file that does not grow with the steps */
        long column = LONG_MIN;
        double lo_y = 0, hi_y = 0;
        for (size_t i = 0; i <= sr->n; i++) {
            const int last = i == sr->n;
            if (!last && !usable(a, sr->x[i], sr->y[i])) continue;
            const double px = last ? 0 : PX(sr->x[i]);
            const double py = last ? 0 : PY(a->log_y ? log10(sr->y[i]) : sr->y[i]);
            if (last || lround(px) != column) {
                if (column != LONG_MIN) {
                    put(&t, "%ld,%.1f ", column, lo_y);
                    if (hi_y != lo_y) put(&t, "%ld,%.1f ", column, hi_y);
                }
                if (last) break;
                column = lround(px);
                lo_y = hi_y = py;
            }
            lo_y = fmin(lo_y, py);
            hi_y = fmax(hi_y, py);
        }
        put(&t, "\"/>\n<text x=\"%.0f\" y=\"%zu\" fill=\"%s\" text-anchor=\"end\">%s</text>\n",
            LEFT + pw - 8, TOP + 18 + 16 * s, sr->color, sr->label);
    }
    put(&t, "</svg>\n");
#undef PX
#undef PY
    int rc = -1;
    cm_atomic_file *f;
    if (t.oom) cm_fail(err, "out of memory");
    else if (!cm_atomic_open(path, &f, err)) {
        if (cm_atomic_write(f, t.s, t.n, err)) cm_atomic_abort(f);
        else rc = cm_atomic_commit(f, err);
    }
    free(t.s);
    return rc;
}
