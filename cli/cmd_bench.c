/* cmamba bench: prompt and generation speed of a checkpoint, stated against
 * this machine's own limits, which it measures (cpu/roofline.h; on the GPU,
 * its device-to-device copy bandwidth): generation reads every weight once
 * per step, so its bound is memory bandwidth, measured in turns with the
 * steps (docs/performance.md); a prompt is matrix work, so its bound is the
 * FMA rate. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cmamba.h"
#include "commands.h"
#include "cpu/blas.h"
#include "cpu/roofline.h"
#include "engine.h"
#include "rng.h"

/* A long prompt goes to cmamba_forward in pieces of this many tokens, for
 * the progress lines: the state carries over, so the result is the same. */
enum { PIECE = 65536 };

/* The read buffer of the bandwidth passes (8 times this machine's last
 * level cache), and at most this many bursts of decoding steps. */
enum { READ_MIB = 256, MAX_BURSTS = 4096 };

static const char *usage =
    "usage: cmamba bench --model DIR [--prompt P] [--gen G] [--batch N] [--threads T]\n"
    "                    [--device D] [--dtype T] [--json] [--quiet]\n"
    "\n"
    "Runs the model over a prompt of P random tokens (prefill, the selective\n"
    "scan) and generates G tokens for each of N sequences continuing from it\n"
    "(the recurrence; the N sequences step together and share each read of the\n"
    "weights). Reports tokens/s, the prefill's model FLOP rate (2 flops per\n"
    "weight of every projection per token) as a fraction of this machine's\n"
    "fp32 FMA peak, the bytes of weights read per generation step, the rate they\n"
    "stream at as a fraction of the memory read bandwidth, and peak RSS. On the\n"
    "CPU the steps go in bursts, each followed by one read of a 256 MiB buffer:\n"
    "both rates are medians over the bursts, measured in turns. On the GPU the\n"
    "bandwidth is that of a device-to-device copy (bytes read + written), and\n"
    "the weights are counted in the precision they run in.\n"
    "\n"
    "  --model DIR     checkpoint folder ('cmamba init --preset 130m' makes one)\n"
    "  --prompt P      prompt tokens (default 512; 0 skips the prefill)\n"
    "  --gen G         generated tokens per sequence (default 128; 0 skips)\n"
    "  --batch N       sequences generated together (default 1)\n"
    "  --threads T     CPU threads (default: all cores)\n"
    "  --reps R        prefill repetitions, the best counts (default 3)\n"
    "  --device D      cpu (default) or cuda (the first GPU)\n"
    "  --dtype T       " CLI_DTYPE_HELP("                  ")
    "  --json          last line of stdout: one JSON object with every figure\n"
    "  --quiet         no progress on stderr\n";

typedef struct {
    const char *model_dir;
    long prompt, gen, batch, reps;
    int json, quiet, cuda;
    cmamba_dtype dtype;
} options;

static void parse(int argc, char **argv, options *o) {
    *o = (options){.prompt = 512, .gen = 128, .batch = 1, .reps = 3};
    long k;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
#define VALUE() if (!(val = arg_value("bench", argc, argv, &i))) exit(2)
#define INT(name, lo, hi, dst) \
    do { VALUE(); if (arg_int("bench", name, val, lo, hi, &k)) exit(2); dst = k; } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); exit(0); }
        else if (arg_is(a, "--model")) { VALUE(); o->model_dir = val; }
        else if (arg_is(a, "--prompt")) INT("--prompt", 0, 1L << 34, o->prompt);
        else if (arg_is(a, "--gen")) INT("--gen", 0, 1L << 30, o->gen);
        else if (arg_is(a, "--batch")) INT("--batch", 1, 4096, o->batch);
        else if (arg_is(a, "--reps")) INT("--reps", 1, 1000, o->reps);
        else if (arg_is(a, "--threads")) { INT("--threads", 1, 4096, k); cmamba_set_threads((int)k); }
        else if (arg_is(a, "--device")) { VALUE(); o->cuda = cli_device_arg("bench", val); }
        else if (arg_is(a, "--dtype")) { VALUE(); o->dtype = cli_dtype_arg("bench", val); }
        else if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "--quiet")) o->quiet = 1;
        else die_usage("bench", "unknown option '%s'", a);
#undef INT
#undef VALUE
    }
    if (!o->model_dir) die_usage("bench", "--model is required");
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* sorts v */
static double median(double *v, long n) {
    if (n < 1) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

int cmd_bench(int argc, char **argv) {
    options o;
    parse(argc, argv, &o);
    cmamba_error err;
    const double t_load = cli_now_s();
    cmamba_model *m;
    if (cli_model_load(o.model_dir, o.cuda, o.dtype, &m, &err)) {
        fprintf(stderr, "cmamba bench: %s\n", err.msg);
        return 1;
    }
    const cmamba_config *c = cmamba_model_config(m);
    const double load_s = cli_now_s() - t_load;
    const int V = c->vocab_size, B = (int)o.batch;
    const size_t n_prompt = o.prompt ? (size_t)o.prompt : 1;
    int32_t *ids = malloc(sizeof(int32_t) * n_prompt);
    float *logits = malloc(sizeof(float) * (size_t)V * B);
    int32_t *next = malloc(sizeof(int32_t) * B);
    if (!ids || !logits || !next) {
        fprintf(stderr, "cmamba bench: out of memory\n");
        return 1;
    }
    uint64_t rng = 42;
    for (size_t i = 0; i < n_prompt; i++) ids[i] = (int32_t)(cm_rng_u64(&rng) % (uint64_t)V);
    /* slots 0 … B−1 generate, slot B takes the prompt */
    cli_engine *eng;
    if (cli_engine_new(m, o.cuda, o.dtype, B + 1, &eng, &err)) {
        fprintf(stderr, "cmamba bench: %s\n", err.msg);
        return 1;
    }
    printf("model: %s, d_model %d, %d layers, vocabulary %d; loaded in %.2f s; on %s\n",
           o.model_dir, c->d_model, c->n_layer, V, load_s, cli_engine_name(eng));

    /* warm-up: every weight paged in and every buffer allocated once */
    if (cli_engine_forward(eng, B, ids, n_prompt < 64 ? n_prompt : 64, logits, 0, &err)) {
        fprintf(stderr, "cmamba bench: %s\n", err.msg);
        return 1;
    }
    double prefill_s = 0, prefill_tps = 0, prefill_frac = 0;
    const double fl_token = cm_projection_flops_per_token(c), fl_head = 2.0 * c->d_model * V;
    if (o.prompt) {
        prefill_s = INFINITY;
        for (long r = 0; r < o.reps; r++) {
            cli_engine_reset(eng, B, &err);
            if (!o.quiet) fprintf(stderr, "bench: prefill %zu tokens (%ld/%ld)\n", n_prompt, r + 1, o.reps);
            const double t0 = cli_now_s();
            for (size_t at = 0; at < n_prompt; at += PIECE) {
                const size_t n = n_prompt - at < PIECE ? n_prompt - at : PIECE;
                if (cli_engine_forward(eng, B, ids + at, n, logits, 0, &err)) {
                    fprintf(stderr, "cmamba bench: %s\n", err.msg);
                    return 1;
                }
                if (!o.quiet && n_prompt > PIECE)
                    fprintf(stderr, "bench: prefill %zu / %zu tokens, %.1f tokens/s\n", at + n,
                            n_prompt, (double)(at + n) / (cli_now_s() - t0));
            }
            const double dt = cli_now_s() - t0;
            if (dt < prefill_s) prefill_s = dt;
        }
        prefill_tps = (double)n_prompt / prefill_s;
    }

    /* on the CPU: the weights in their format, and each layer's state h */
    const double wbytes = o.cuda ? cli_engine_step_bytes(eng)
                                 : (double)cmamba_model_weight_bytes(m) +
                                       4.0 * c->n_layer * c->d_inner * c->d_state;
    double decode_tps = 0, decode_frac = 0, decode_s = 0, decode_rate = 0;
    /* steps timed: all but the first (with --gen 1, one more step is run) */
    const long timed = o.gen > 1 ? o.gen - 1 : o.gen;
    cm_roofline roof = {0};
    double rss = 0, bw_lo = 0, bw_hi = 0;
    long bursts = 0;
    if (o.gen) {
        int first = argmax(logits, V);
        for (int i = 0; i < B; i++) {
            cli_engine_copy(eng, i, B, &err);
            next[i] = first;
        }
        if (!o.quiet) fprintf(stderr, "bench: generating %ld tokens x %d sequences\n", o.gen, B);
        /* greedy; the first step is not timed (on the GPU it captures the step's graph) */
        if (cli_engine_step(eng, next, B, NULL, next, &err)) {
            fprintf(stderr, "cmamba bench: %s\n", err.msg);
            return 1;
        }
        /* every buffer of a step is allocated by now; before the read buffer counts */
        rss = cli_peak_rss_mib() * 1048576.0;
        /* On the CPU the steps go in bursts that read about as many bytes as
         * one pass over the read buffer, each followed by such a pass: the
         * bandwidth is measured in turns with the decoding, under the same
         * load from the machine's other tenants, and both rates are the
         * median over the bursts. */
        const size_t read_bytes = (size_t)READ_MIB << 20;
        cm_read_buffer rb = {0};
        long burst = timed;
        if (!o.cuda) {
            if (cm_read_buffer_new(&rb, read_bytes)) {
                fprintf(stderr, "cmamba bench: out of memory for the bandwidth buffer\n");
                return 1;
            }
            burst = lround((double)read_bytes / wbytes);
            if (burst < 1) burst = 1;
            if (timed / burst > MAX_BURSTS) burst = (timed + MAX_BURSTS - 1) / MAX_BURSTS;
        }
        const long n_bursts = timed > 0 ? (timed + burst - 1) / burst : 0;
        double *rate = malloc(sizeof(double) * 2 * (size_t)(n_bursts + 1)), *bw = rate + n_bursts + 1;
        if (!rate) {
            fprintf(stderr, "cmamba bench: out of memory\n");
            return 1;
        }
        for (long g = 0; g < timed; g += burst) {
            const long steps = timed - g < burst ? timed - g : burst;
            const double t0 = cli_now_s();
            for (long k = 0; k < steps; k++)
                if (cli_engine_step(eng, next, B, NULL, next, &err)) {
                    fprintf(stderr, "cmamba bench: %s\n", err.msg);
                    return 1;
                }
            const double dt = cli_now_s() - t0;
            decode_s += dt;
            rate[bursts] = (double)steps * wbytes / dt;
            if (!o.cuda) bw[bursts] = cm_read_buffer_pass(&rb);
            bursts++;
        }
        cm_read_buffer_free(&rb);
        decode_tps = decode_s > 0 ? (double)timed * B / decode_s : 0;
        decode_rate = median(rate, bursts);
        if (!o.cuda && bursts) {
            roof.read_bytes_per_s = median(bw, bursts);
            bw_lo = bw[0];
            bw_hi = bw[bursts - 1]; /* sorted by median() */
        }
        free(rate);
    } else {
        rss = cli_peak_rss_mib() * 1048576.0;
    }

    if (!o.quiet) fprintf(stderr, "bench: measuring %s...\n", o.cuda ? "copy bandwidth" : "FMA peak");
    if (o.cuda) {
        /* decoding reads the weights only; a copy's figure counts reads and writes */
        if (cli_engine_copy_bandwidth(eng, &roof.read_bytes_per_s, &err)) {
            fprintf(stderr, "cmamba bench: %s\n", err.msg);
            return 1;
        }
        printf("device: %s, copy bandwidth %.1f GB/s (read + write)\n", cli_engine_name(eng),
               roof.read_bytes_per_s / 1e9);
    } else {
        /* without decoding to interleave with, the best of five passes */
        const double bw_interleaved = roof.read_bytes_per_s;
        if (cm_roofline_measure(&roof, bursts ? 0 : (size_t)READ_MIB << 20, 5)) {
            fprintf(stderr, "cmamba bench: out of memory for the bandwidth buffer\n");
            return 1;
        }
        if (bursts) roof.read_bytes_per_s = bw_interleaved;
        printf("machine: %d threads, fp32 FMA peak %.1f GFLOP/s (%s; OpenBLAS kernels %s), read "
               "bandwidth %.1f GB/s ",
               roof.threads, roof.fma_flops_per_s / 1e9, roof.isa, cm_blas_kernels(),
               roof.read_bytes_per_s / 1e9);
        if (bursts)
            printf("(median of %ld passes taken in turns with the decoding, range %.1f-%.1f)\n",
                   bursts, bw_lo / 1e9, bw_hi / 1e9);
        else
            printf("(best of 5 passes)\n");
    }
    if (o.prompt && o.cuda) {
        printf("prefill: %zu tokens in %.3f s: %.1f tokens/s, %.1f TFLOP/s\n", n_prompt, prefill_s,
               prefill_tps, ((double)n_prompt * fl_token + fl_head) / prefill_s / 1e12);
    } else if (o.prompt) {
        prefill_frac = ((double)n_prompt * fl_token + fl_head) / prefill_s / roof.fma_flops_per_s;
        printf("prefill: %zu tokens in %.3f s: %.1f tokens/s, %.1f GFLOP/s = %.1f%% of the FMA peak\n",
               n_prompt, prefill_s, prefill_tps, prefill_frac * roof.fma_flops_per_s / 1e9,
               100 * prefill_frac);
    }
    if (o.gen) {
        const double steps_per_s = (double)timed / decode_s;
        decode_frac = decode_rate / roof.read_bytes_per_s;
        printf("generate: %ld tokens x %d sequences in %.3f s: %.1f tokens/s (%.1f steps/s); "
               "%.1f MB of weights per step stream at %.1f GB/s (median of %ld bursts) = %.1f%% of "
               "the %s bandwidth\n",
               timed, B, decode_s, decode_tps, steps_per_s, wbytes / 1e6, decode_rate / 1e9, bursts,
               100 * decode_frac, o.cuda ? "copy" : "read");
    }
    printf("peak RSS: %.1f MiB (before the bandwidth measurement)\n", rss / 1048576.0);

    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", o.model_dir);
        cJSON_AddStringToObject(j, "device", cli_engine_name(eng));
        cJSON_AddNumberToObject(j, "threads", roof.threads);
        if (!o.cuda) cJSON_AddStringToObject(j, "blas_kernels", cm_blas_kernels());
        cJSON_AddNumberToObject(j, "batch", B);
        cJSON_AddNumberToObject(j, "prompt_tokens", (double)o.prompt);
        cJSON_AddNumberToObject(j, "gen_tokens", (double)o.gen);
        cJSON_AddNumberToObject(j, "prefill_tokens_per_s", prefill_tps);
        cJSON_AddNumberToObject(j, "prefill_fma_peak_fraction", prefill_frac);
        cJSON_AddNumberToObject(j, "decode_tokens_per_s", decode_tps);
        cJSON_AddNumberToObject(j, "decode_bandwidth_fraction", decode_frac);
        cJSON_AddNumberToObject(j, "weight_bytes", wbytes);
        cJSON_AddNumberToObject(j, "peak_rss_bytes", rss);
        cJSON_AddNumberToObject(j, "memory_read_bytes_per_s", roof.read_bytes_per_s);
        cJSON_AddNumberToObject(j, "decode_weight_bytes_per_s", decode_rate);
        cJSON_AddNumberToObject(j, "decode_bursts", (double)bursts);
        cJSON_AddNumberToObject(j, "fma_flops_per_s", roof.fma_flops_per_s);
        cJSON_AddNumberToObject(j, "load_s", load_s);
        char *s = cJSON_PrintUnformatted(j);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
    }
    cli_engine_free(eng);
    free(ids);
    free(logits);
    free(next);
    cmamba_model_free(m);
    return 0;
}
