/* Tests of process groups: runs body in `world` forked processes, each with
 * the environment torchrun would give rank r (src/dist/dist.h). */
#ifndef CM_TEST_GROUP_H
#define CM_TEST_GROUP_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

typedef int (*group_body)(int rank, int world, const void *arg);

/* How many of the processes failed (exited non-zero or by a signal). */
static int run_group(int world, int port, group_body body, const void *arg) {
    pid_t pid[16];
    for (int r = 0; r < world && r < 16; r++) {
        if ((pid[r] = fork()) == 0) {
            char v[16];
            snprintf(v, sizeof v, "%d", world);
            setenv("WORLD_SIZE", v, 1), setenv("LOCAL_WORLD_SIZE", v, 1);
            snprintf(v, sizeof v, "%d", r);
            setenv("RANK", v, 1), setenv("LOCAL_RANK", v, 1);
            snprintf(v, sizeof v, "%d", port);
            setenv("MASTER_PORT", v, 1), setenv("MASTER_ADDR", "127.0.0.1", 1);
            _exit(body(r, world, arg));
        }
    }
    int failed = 0;
    for (int r = 0; r < world && r < 16; r++) {
        int st;
        waitpid(pid[r], &st, 0);
        failed += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    return failed;
}

#endif
