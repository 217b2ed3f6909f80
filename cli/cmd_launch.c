/* cmamba launch: starts one process per device with the environment torchrun
 * would give them (src/dist/dist.h reads it), so that data-parallel training
 * needs no Python; stops them all when one fails. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "args.h"
#include "commands.h"

static const char *usage =
    "usage: cmamba launch --nproc N [--port P] [--] COMMAND [OPTIONS...]\n"
    "\n"
    "Runs `cmamba COMMAND OPTIONS...` in N processes on this host, as torchrun\n"
    "does: each gets WORLD_SIZE=N, RANK and LOCAL_RANK (0..N-1, the GPU it uses),\n"
    "LOCAL_WORLD_SIZE=N, MASTER_ADDR (127.0.0.1 unless set) and MASTER_PORT. The\n"
    "processes form one data-parallel group: `cmamba launch --nproc 2 train ...`\n"
    "trains with the global batch N x --batch, rank 0 printing and saving.\n"
    "If one process fails, the others are stopped; the exit code is the first\n"
    "failure's. `torchrun --nproc-per-node N --no-python cmamba train ...` is\n"
    "equivalent.\n"
    "\n"
    "  --nproc N   processes (1..64), usually the number of GPUs\n"
    "  --port P    rank 0's TCP port (default: $MASTER_PORT, else 29500)\n";

static pid_t children[64];
static int n_children;

static void forward_signal(int sig) {
    for (int r = 0; r < n_children; r++)
        if (children[r] > 0) kill(children[r], sig);
}

static void set_int_env(const char *name, long v) {
    char s[24];
    snprintf(s, sizeof s, "%ld", v);
    setenv(name, s, 1);
}

int cmd_launch(int argc, char **argv) {
    long nproc = 0, port = -1;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); return 0; }
        else if (arg_is(a, "--nproc")) {
            const char *v = arg_value("launch", argc, argv, &i);
            if (!v || arg_int("launch", "--nproc", v, 1, 64, &nproc)) return 2;
        } else if (arg_is(a, "--port")) {
            const char *v = arg_value("launch", argc, argv, &i);
            if (!v || arg_int("launch", "--port", v, 1, 65535, &port)) return 2;
        } else if (!strcmp(a, "--")) { i++; break; }
        else if (a[0] == '-') die_usage("launch", "unknown option '%s'", a);
        else break;
    }
    if (!nproc) die_usage("launch", "--nproc is required");
    if (i >= argc) die_usage("launch", "a command to run is required (e.g. train ...)");
    if (!strcmp(argv[i], "launch")) die_usage("launch", "cannot launch 'launch'");

    set_int_env("WORLD_SIZE", nproc);
    set_int_env("LOCAL_WORLD_SIZE", nproc);
    if (port > 0) set_int_env("MASTER_PORT", port);
    else if (!getenv("MASTER_PORT")) setenv("MASTER_PORT", "29500", 1);
    if (!getenv("MASTER_ADDR")) setenv("MASTER_ADDR", "127.0.0.1", 1);

    /* argv for the children: this binary, then the command and its options */
    char **child_argv = calloc((size_t)(argc - i + 2), sizeof *child_argv);
    if (!child_argv) return fprintf(stderr, "cmamba launch: out of memory\n"), 1;
    child_argv[0] = argv[-1];
    memcpy(child_argv + 1, argv + i, sizeof *child_argv * (size_t)(argc - i));

    struct sigaction sa = {.sa_handler = forward_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    for (long r = 0; r < nproc; r++) {
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "cmamba launch: fork: %s\n", strerror(errno));
            forward_signal(SIGTERM);
            break;
        }
        if (pid == 0) {
            set_int_env("RANK", r);
            set_int_env("LOCAL_RANK", r);
            execv("/proc/self/exe", child_argv);
            fprintf(stderr, "cmamba launch: cannot run %s: %s\n", argv[-1], strerror(errno));
            _exit(127);
        }
        children[n_children++] = pid;
    }

    int rc = n_children == nproc ? 0 : 1, alive = n_children;
    while (alive) {
        int st;
        pid_t pid = waitpid(-1, &st, 0);
        if (pid < 0) {
            if (errno == EINTR) continue;
            break;
        }
        int rank = -1;
        for (int r = 0; r < n_children; r++)
            if (children[r] == pid) rank = r, children[r] = 0;
        if (rank < 0) continue;
        alive--;
        int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (code && !rc) {
            fprintf(stderr, "cmamba launch: rank %d %s %d; stopping the others\n", rank,
                    WIFEXITED(st) ? "exited with status" : "was killed by signal",
                    WIFEXITED(st) ? code : WTERMSIG(st));
            rc = code;
            forward_signal(SIGTERM);
        }
    }
    free(child_argv);
    return rc;
}
