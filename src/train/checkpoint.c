#include "train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "io/config.h"
#include "io/tensors.h"

static int make_dir(const char *dir, cmamba_error *err) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return cm_fail(err, "%s: cannot create folder: %s", dir, strerror(errno));
    return 0;
}

static int fsync_dir(const char *dir, cmamba_error *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0 || fsync(fd) != 0) {
        if (fd >= 0) close(fd);
        return cm_fail(err, "%s: cannot sync folder: %s", dir, strerror(errno));
    }
    close(fd);
    return 0;
}

/* Tensor i of m (from params, or from an optimizer moment buffer laid out
 * like params) under the given name. */
static cm_tensor_out tensor_of(const cm_train_model *m, size_t i, const float *base,
                               const char *name) {
    const cm_param_desc *p = &m->desc[i];
    cm_tensor_out t = {.name = name, .dtype = CM_DT_F32, .ndim = p->ndim,
                       .data = base + m->offset[i]};
    memcpy(t.shape, p->shape, sizeof p->shape);
    return t;
}

int cm_model_save(const char *dir, const cm_train_model *m, cmamba_error *err) {
    if (make_dir(dir, err)) return -1;
    cm_tensor_out *out = cm_calloc(m->n_tensors, sizeof *out, err);
    if (!out) return -1;
    for (size_t i = 0; i < m->n_tensors; i++) out[i] = tensor_of(m, i, m->params, m->desc[i].name);
    char *st = cm_path_join(dir, "model.safetensors"), *cfg = cm_path_join(dir, "config.json");
    static const char *const meta[] = {"format", "pt"};
    int rc = (!st || !cfg) ? cm_fail(err, "out of memory")
             : cm_safetensors_write(st, out, m->n_tensors, meta, 1, err) ? -1
                                                                        : cm_config_write_hf(cfg, &m->cfg, err);
    free(st);
    free(cfg);
    free(out);
    return rc;
}

static int save_optimizer(const char *path, const cm_train_model *m, const cm_adamw *opt,
                          cmamba_error *err) {
    const size_t n = m->n_tensors;
    cm_tensor_out *out = cm_calloc(2 * n, sizeof *out, err);
    char (*names)[128] = cm_calloc(2 * n, sizeof *names, err);
    int rc = -1;
    if (out && names) {
        for (size_t i = 0; i < n; i++) {
            snprintf(names[i], sizeof names[i], "exp_avg.%s", m->desc[i].name);
            snprintf(names[n + i], sizeof names[n + i], "exp_avg_sq.%s", m->desc[i].name);
            out[i] = tensor_of(m, i, opt->m, names[i]);
            out[n + i] = tensor_of(m, i, opt->v, names[n + i]);
        }
        char step[32];
        snprintf(step, sizeof step, "%ld", opt->step);
        const char *const meta[] = {"format", "cmamba-adamw", "step", step};
        rc = cm_safetensors_write(path, out, 2 * n, meta, 2, err);
    }
    free(names);
    free(out);
    return rc;
}

static int write_text(const char *path, const char *text, cmamba_error *err) {
    cm_atomic_file *f;
    if (cm_atomic_open(path, &f, err)) return -1;
    if (cm_atomic_write(f, text, strlen(text), err)) {
        cm_atomic_abort(f);
        return -1;
    }
    return cm_atomic_commit(f, err);
}

/* step-NNNNNNNN: fixed width, so that name order is step order */
static int parse_step_name(const char *name, long *step) {
    char *end;
    if (strncmp(name, "step-", 5) != 0 || strlen(name) != 13) return -1;
    *step = strtol(name + 5, &end, 10);
    return *end == '\0' ? 0 : -1;
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = cm_path_join(dir, e->d_name);
        if (p) unlink(p);
        free(p);
    }
    closedir(d);
    rmdir(dir);
}

/* Removes step-* folders other than keep, and unfinished temporary ones. */
static void prune(const char *out_dir, long keep) {
    DIR *d = opendir(out_dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        long s;
        int stale_tmp = !strncmp(e->d_name, ".tmp-step-", 10);
        if (!stale_tmp && (parse_step_name(e->d_name, &s) || s == keep)) continue;
        char *p = cm_path_join(out_dir, e->d_name);
        if (p) remove_tree(p);
        free(p);
    }
    closedir(d);
}

int cm_ckpt_save(const char *out_dir, long step, const cm_train_model *m, const cm_adamw *opt,
                 const char *trainer_json, cmamba_error *err) {
    char name[32], tmp_name[48];
    snprintf(name, sizeof name, "step-%08ld", step);
    snprintf(tmp_name, sizeof tmp_name, ".tmp-%s", name);
    if (make_dir(out_dir, err)) return -1;
    char *tmp = cm_path_join(out_dir, tmp_name), *final = cm_path_join(out_dir, name);
    char *opt_path = tmp ? cm_path_join(tmp, "optimizer.safetensors") : NULL;
    char *json_path = tmp ? cm_path_join(tmp, "trainer.json") : NULL;
    int rc = -1;
    if (!tmp || !final || !opt_path || !json_path) {
        cm_fail(err, "out of memory");
        goto done;
    }
    remove_tree(tmp);
    if (cm_model_save(tmp, m, err) || save_optimizer(opt_path, m, opt, err) ||
        write_text(json_path, trainer_json, err))
        goto done;
    remove_tree(final);
    if (rename(tmp, final) != 0) {
        cm_fail(err, "%s: cannot rename checkpoint into place: %s", final, strerror(errno));
        goto done;
    }
    if (fsync_dir(out_dir, err)) goto done;
    prune(out_dir, step);
    rc = 0;
done:
    free(tmp);
    free(final);
    free(opt_path);
    free(json_path);
    return rc;
}

int cm_ckpt_latest(const char *out_dir, char **ckpt_dir, cmamba_error *err) {
    *ckpt_dir = NULL;
    DIR *d = opendir(out_dir);
    if (!d) return cm_fail(err, "%s: cannot open folder: %s", out_dir, strerror(errno));
    long best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        long s;
        if (!parse_step_name(e->d_name, &s) && s > best) best = s;
    }
    closedir(d);
    if (best < 0) return cm_fail(err, "%s: no checkpoint (step-* folder) to resume from", out_dir);
    char name[32];
    snprintf(name, sizeof name, "step-%08ld", best);
    *ckpt_dir = cm_path_join(out_dir, name);
    return *ckpt_dir ? 0 : cm_fail(err, "out of memory");
}

int cm_ckpt_load_optimizer(const char *ckpt_dir, const cm_train_model *m, cm_adamw *opt,
                           cmamba_error *err) {
    char *path = cm_path_join(ckpt_dir, "optimizer.safetensors");
    cm_tensor_set *set = NULL;
    int rc = -1;
    if (!path) return cm_fail(err, "out of memory");
    if (cm_safetensors_open(path, &set, err)) goto done;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const cm_param_desc *p = &m->desc[i];
        for (int which = 0; which < 2; which++) {
            char name[128];
            snprintf(name, sizeof name, "%s.%s", which ? "exp_avg_sq" : "exp_avg", p->name);
            const cm_tensor *t = cm_tensors_find(set, name);
            if (!t) {
                cm_fail(err, "%s: missing tensor '%s'", path, name);
                goto done;
            }
            if (t->dtype != CM_DT_F32 || t->nbytes != p->numel * sizeof(float)) {
                cm_fail(err, "%s: tensor '%s' is not F32 of %zu values", path, name, p->numel);
                goto done;
            }
            memcpy((which ? opt->v : opt->m) + m->offset[i], t->data, t->nbytes);
        }
    }
    rc = 0;
done:
    cm_tensors_close(set);
    free(path);
    return rc;
}
