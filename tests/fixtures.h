/* The transformers fixtures (tests/fixtures/models/NAME/fixture.json, made by
 * tools/): calls check(dir, name) for each and checks that at least 5 ran. */
#ifndef CM_TEST_FIXTURES_H
#define CM_TEST_FIXTURES_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "test.h"

static inline void for_each_fixture(void (*check)(const char *dir, const char *name)) {
    char *root = cm_path_join(test_env("CMAMBA_FIXTURES", "tests/fixtures"), "models");
    DIR *d = opendir(root);
    CHECK_MSG(d != NULL, "no fixture folder %s", root);
    int cases = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *dir = cm_path_join(root, e->d_name), *fx = cm_path_join(dir, "fixture.json");
        FILE *f = fopen(fx, "rb");
        if (f) {
            fclose(f);
            check(dir, e->d_name);
            cases++;
        }
        free(dir);
        free(fx);
    }
    if (d) closedir(d);
    free(root);
    CHECK_MSG(cases >= 5, "only %d fixtures found", cases);
}

/* Removes a model folder a test wrote (config.json + model.safetensors). */
static inline void remove_model_dir(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    remove(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    remove(path);
    remove(dir);
}

#endif
