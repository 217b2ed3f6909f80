/* Times the skinny products of decoding (src/cuda/gemv.h) at the published
 * Mamba shapes, against cuBLASLt on the same operands, as the fraction of
 * the device's measured copy bandwidth that each reaches.
 *
 * Every product reads its weights cold, as in a decoding step, where the
 * layers' weights pass through L2 once per token: the weights are copied
 * into enough buffers to fill four times L2, and the timed launches take
 * them in turn. Launches go back to back (CUDA events around 8 rounds of
 * the buffers, median of 5), so a launch may overlap its predecessor's
 * tail as in the step; µs are per product.
 *
 *   bench_cuda_gemv [bf16|f32] [ROWS]     defaults: bf16, 1 row
 */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cuda/gemv.h"
#include "cuda_bench.cuh"

#define LT_OK(call)                                                                    \
    do {                                                                               \
        cublasStatus_t s_ = (call);                                                    \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                             \
            fprintf(stderr, "%s:%d: %s: status %d\n", __FILE__, __LINE__, #call, (int)s_); \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

struct Product {
    const char *model, *name;
    int n_in, n_out;
    bool out_f32, accumulate; /* as the decoding step calls it */
};

/* the step's products at mamba-130m, 1.4b and 2.8b (d_model 768, 2048,
 * 2560; d_inner twice that; dt_rank d_model / 16; d_state 16; vocab 50280) */
static const Product PRODUCTS[] = {
    {"130m", "in_proj", 768, 3072, false, false},   {"130m", "x_proj", 1536, 80, true, false},
    {"130m", "out_proj", 1536, 768, true, true},    {"130m", "lm_head", 768, 50280, true, false},
    {"1.4b", "in_proj", 2048, 8192, false, false},  {"1.4b", "x_proj", 4096, 160, true, false},
    {"1.4b", "out_proj", 4096, 2048, true, true},   {"1.4b", "lm_head", 2048, 50280, true, false},
    {"2.8b", "in_proj", 2560, 10240, false, false}, {"2.8b", "x_proj", 5120, 192, true, false},
    {"2.8b", "out_proj", 5120, 2560, true, true},   {"2.8b", "lm_head", 2560, 50280, true, false},
};

int main(int argc, char **argv) {
    const bool bf16 = argc < 2 || strcmp(argv[1], "f32") != 0;
    if (argc > 1 && strcmp(argv[1], "f32") != 0 && strcmp(argv[1], "bf16") != 0) {
        fprintf(stderr, "bench_cuda_gemv: the dtype is bf16 or f32, not '%s'\n", argv[1]);
        return 2;
    }
    char *end = nullptr;
    const long arg = argc > 2 ? strtol(argv[2], &end, 10) : 1;
    if (argc > 3 || (argc > 2 && (end == argv[2] || *end)) || arg < 1 || arg > CM_CUDA_GEMV_ROWS) {
        fprintf(stderr,
                "bench_cuda_gemv: usage: bench_cuda_gemv [bf16|f32] [ROWS], ROWS a whole number 1 to %d\n",
                CM_CUDA_GEMV_ROWS);
        return 2;
    }
    const int rows = (int)arg;
    const cm_cuda_dtype dt = bf16 ? CM_CUDA_BF16 : CM_CUDA_F32;
    const size_t es = bf16 ? 2 : 4;
    int dev = 0, l2 = 0;
    cudaDeviceProp prop;
    CUDA_OK(cudaGetDevice(&dev));
    CUDA_OK(cudaGetDeviceProperties(&prop, dev));
    CUDA_OK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));

    /* the roofline: a device-to-device copy of 1 GiB, read + write */
    const size_t cbytes = 1ull << 30;
    void *ca, *cb;
    CUDA_OK(cudaMalloc(&ca, cbytes));
    CUDA_OK(cudaMalloc(&cb, cbytes));
    CUDA_OK(cudaMemset(ca, 1, cbytes));
    auto copy = [&] { CUDA_OK(cudaMemcpyAsync(cb, ca, cbytes, cudaMemcpyDeviceToDevice)); };
    const double copy_bw = 2.0 * cbytes / (time_ms(copy, 1, 9) * 1e-3);
    cudaFree(ca), cudaFree(cb);
    printf("%s, %d SMs, L2 %d MiB; copy bandwidth %.2f TB/s; %s, %d row%s; weights cold\n", prop.name,
           prop.multiProcessorCount, l2 >> 20, copy_bw / 1e12, bf16 ? "bf16" : "f32", rows,
           rows > 1 ? "s" : "");
    printf("%-5s %-9s %6s %6s | %9s %7s %5s | %9s %7s %5s\n", "model", "product", "n_in", "n_out",
           "gemv µs", "TB/s", "copy", "cuBLASLt", "TB/s", "copy");

    cublasLtHandle_t lt;
    LT_OK(cublasLtCreate(&lt));
    const size_t ws_bytes = 32 << 20;
    void *ws, *in, *out;
    CUDA_OK(cudaMalloc(&ws, ws_bytes));
    CUDA_OK(cudaMalloc(&in, (size_t)rows * 5120 * es));
    CUDA_OK(cudaMalloc(&out, (size_t)rows * 50280 * 4));
    CUDA_OK(cudaMemset(in, 0x3f, (size_t)rows * 5120 * es));
    CUDA_OK(cudaMemset(out, 0, (size_t)rows * 50280 * 4));
    const float one = 1.f, zero = 0.f;
    const cudaDataType ab = bf16 ? CUDA_R_16BF : CUDA_R_32F;

    for (const Product &p : PRODUCTS) {
        const size_t wbytes = (size_t)p.n_in * p.n_out * es;
        const int copies = (int)std::max<size_t>(2, (4 * (size_t)l2 + wbytes - 1) / wbytes);
        std::vector<void *> W(copies);
        for (void *&w : W) {
            CUDA_OK(cudaMalloc(&w, wbytes));
            CUDA_OK(cudaMemset(w, 0x3f, wbytes)); /* bf16 0.75, f32 0.75: not all zero bits */
        }
        const int rounds = std::max(1, 64 / copies);
        auto each = [&](auto launch) {
            return time_ms([&] {
                       for (int r = 0; r < rounds; r++)
                           for (void *w : W) launch(w);
                   }, 1, 5) * 1e3 / (rounds * copies);
        };
        const double us_gemv = each([&](void *w) {
            CUDA_OK(cm_cuda_gemv(out, p.out_f32, p.accumulate, in, w, rows, p.n_in, p.n_out, dt, 0));
        });

        /* cuBLASLt's first choice, as linear_rows calls it: out (n_out × rows) = Wᵀ · in */
        cublasLtMatmulDesc_t op;
        cublasLtMatrixLayout_t la, lb, lc;
        const cublasOperation_t T = CUBLAS_OP_T;
        LT_OK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        LT_OK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &T, sizeof T));
        LT_OK(cublasLtMatrixLayoutCreate(&la, ab, p.n_in, p.n_out, p.n_in));
        LT_OK(cublasLtMatrixLayoutCreate(&lb, ab, p.n_in, rows, p.n_in));
        LT_OK(cublasLtMatrixLayoutCreate(&lc, p.out_f32 ? CUDA_R_32F : ab, p.n_out, rows, p.n_out));
        cublasLtMatmulPreference_t pref;
        LT_OK(cublasLtMatmulPreferenceCreate(&pref));
        LT_OK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                   &ws_bytes, sizeof ws_bytes));
        cublasLtMatmulHeuristicResult_t h;
        int found = 0;
        LT_OK(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &h, &found));
        const float *beta = p.accumulate ? &one : &zero;
        const double us_lt = found ? each([&](void *w) {
            LT_OK(cublasLtMatmul(lt, op, &one, w, la, in, lb, beta, out, lc, out, lc, &h.algo, ws,
                                 ws_bytes, 0));
        }) : 0.0;
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb);
        cublasLtMatrixLayoutDestroy(lc);
        cublasLtMatmulDescDestroy(op);

        const double bytes = (double)wbytes + (double)rows * p.n_in * es +
                             (double)rows * p.n_out * (p.out_f32 ? 4 : es);
        const double bw_gemv = bytes / (us_gemv * 1e-6), bw_lt = bytes / (us_lt * 1e-6);
        printf("%-5s %-9s %6d %6d | %9.2f %7.2f %4.0f%% | %9.2f %7.2f %4.0f%%\n", p.model, p.name, p.n_in,
               p.n_out, us_gemv, bw_gemv / 1e12, 100 * bw_gemv / copy_bw, us_lt, bw_lt / 1e12,
               100 * bw_lt / copy_bw);
        for (void *w : W) cudaFree(w);
    }
    cublasLtDestroy(lt);
    cudaFree(ws), cudaFree(in), cudaFree(out);
    return 0;
}
