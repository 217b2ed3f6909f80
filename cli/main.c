/* cmamba: one binary, one subcommand per job. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmamba.h"
#include "commands.h"
#include "cpu/blas.h"
#include "cpu/matrix.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"generate", cmd_generate, "generate text from a prompt"},
    {"forward", cmd_forward, "write the logits of every position of a sequence"},
    {"tokenize", cmd_tokenize, "text to token ids, or ids to text with --decode"},
    {"train", cmd_train, "train a model from scratch on a task or a text file"},
    {"eval", cmd_eval, "task accuracy or validation loss of a checkpoint, at any length"},
    {"init", cmd_init, "write a freshly initialised model of any published size"},
    {"quantize", cmd_quantize, "store a checkpoint's weights as bf16, 8-bit or 4-bit quants"},
    {"bench", cmd_bench, "prompt and generation speed against this machine's measured limits"},
    {"grad", cmd_grad, "gradients of the next-token loss of a sequence, as safetensors"},
    {"launch", cmd_launch, "run a command in N data-parallel processes (as torchrun does)"},
};

static void usage(FILE *out) {
    fprintf(out, "usage: cmamba <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'cmamba <command> --help' describes each; 'cmamba --version' the build.\n");
}

int main(int argc, char **argv) {
    cm_blas_use_cpu_kernels(argv);
    const char *isa = getenv("CMAMBA_ISA");
    if (isa && *isa && cm_isa_from_name(isa) < 0) {
        fprintf(stderr, "cmamba: CMAMBA_ISA='%s': not one of scalar, avx2, avx512, avx512bf16\n", isa);
        return 2;
    }
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("cmamba %s (backends: %s; OpenBLAS kernels: %s; GEMV kernels: %s)\n",
               CMAMBA_VERSION, cmamba_backends(), cm_blas_kernels(), cm_isa_name(cm_isa_active()));
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "cmamba: unknown command '%s' (see cmamba --help)\n", argv[1]);
    return 2;
}
