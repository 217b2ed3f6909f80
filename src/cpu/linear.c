/* The linear layers on the CPU's fast path: OpenBLAS's sgemm for a block
 * of rows (prompts, training batches) and sgemv for one row (decoding).
 * The plain loops they replace, cm_linear_ref and cm_linear_backward_ref,
 * are the oracle in tests/test_fast_kernels.c. */
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "cmamba.h"

#include "model/ops.h"
#include "train/layers.h"

void cm_linear(float *out, const float *in, const float *W, const float *b, int L, int n_in,
               int n_out) {
    if (L == 1) {
        if (b) memcpy(out, b, sizeof(float) * n_out);
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n_out, n_in, 1.0f, W, n_in, in, 1,
                    b ? 1.0f : 0.0f, out, 1);
        return;
    }
    if (b)
        for (int t = 0; t < L; t++) memcpy(out + (size_t)t * n_out, b, sizeof(float) * n_out);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, n_out, n_in, 1.0f, in, n_in, W, n_in,
                b ? 1.0f : 0.0f, out, n_out);
}

void cm_linear_backward(float *din, float *dW, float *db, const float *dout, const float *in,
                        const float *W, int n, int n_in, int n_out) {
    /* din (n, n_in) += dout (n, n_out) · W (n_out, n_in) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n_in, n_out, 1.0f, dout, n_out, W,
                n_in, 1.0f, din, n_in);
    /* dW (n_out, n_in) += doutᵀ · in */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, n, 1.0f, dout, n_out, in,
                n_in, 1.0f, dW, n_in);
    if (db)
        for (int t = 0; t < n; t++)
            for (int o = 0; o < n_out; o++) db[o] += dout[(size_t)t * n_out + o];
}

void cmamba_set_threads(int n) {
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}
