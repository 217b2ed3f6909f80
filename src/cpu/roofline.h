/* This machine's two limits, measured rather than looked up: the rate at
 * which its cores can stream memory (what batch-1 decoding is bound by,
 * every weight read once per token) and their fp32 fused multiply-add rate
 * (what prompts and training are bound by). `cmamba bench` states its
 * results as fractions of these. */
#ifndef CM_ROOFLINE_H
#define CM_ROOFLINE_H

#include <stddef.h>

#include "cmamba.h"

typedef struct {
    double read_bytes_per_s; /* streaming reads of a buffer far larger than the caches */
    double fma_flops_per_s;  /* fp32, 2 flops per lane of an FMA */
    const char *isa;         /* the vector width the FMA peak was measured with */
    int threads;
} cm_roofline;

/* Measures both with the current OpenMP thread count: reads of a
 * buffer_bytes buffer in huge pages (best of `reps`; buffer_bytes 0 skips
 * them), FMA
 * chains for about 0.1 s each rep. Returns -1 if the buffer cannot be
 * allocated. */
int cm_roofline_measure(cm_roofline *r, size_t buffer_bytes, int reps);

/* The read bandwidth a pass at a time, for measurements taken in turns with
 * other work (`cmamba bench` alternates them with decoding steps, so that
 * both see the same state of a shared machine): a buffer in huge pages, as
 * the model's weights are (cm_alloc_stream), whose slices are first
 * touched by the threads that will read them, and one pass reading all of
 * it with every thread, returning bytes per second. */
typedef struct {
    float *p;
    size_t n; /* floats */
} cm_read_buffer;

int cm_read_buffer_new(cm_read_buffer *b, size_t bytes); /* -1: out of memory */
double cm_read_buffer_pass(const cm_read_buffer *b);
void cm_read_buffer_free(cm_read_buffer *b);

/* The model FLOPs of one token through every layer's projections (2 per
 * weight: in_proj, x_proj, dt_proj, out_proj), the figure prefill and
 * training rates are stated in; the LM head adds 2·d_model·vocab for each
 * token it is applied to, and a training step is 3× forward. The scan's
 * elementwise work (≈ 2% at 130m) is not counted. */
double cm_projection_flops_per_token(const cmamba_config *c);

#endif
