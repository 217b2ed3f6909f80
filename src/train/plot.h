/* Line charts as standalone SVG files (loss curves): no plotting library is
 * needed to look at a training run, only a browser. */
#ifndef CM_PLOT_H
#define CM_PLOT_H

#include <stddef.h>

#include "cmamba.h"

typedef struct {
    const char *label;
    const float *x, *y; /* n points; NaN/inf points are skipped */
    size_t n;
    const char *color;  /* any SVG colour */
} cm_plot_series;

typedef struct {
    const char *title, *x_label, *y_label;
    int log_y; /* logarithmic y axis (losses spanning decades) */
} cm_plot_axes;

/* Writes the chart atomically to path. */
int cm_plot_svg(const char *path, const cm_plot_axes *axes, const cm_plot_series *series,
                size_t n_series, cmamba_error *err);

#endif
