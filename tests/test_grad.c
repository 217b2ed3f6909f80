/* The fp32 training gradients against transformers' float64 autograd, on
 * every fixture made by tools/make_grad_fixtures.py: each parameter's
 * gradient within 1e-4 (max |Δ| / max |ref|) and the loss within 1e-5
 * relative. Also: the forward-only loss and the inference path agree with
 * the training forward, and `cmamba grad` (once registered) writes the same
 * gradients. */
#include <cjson/cJSON.h>
#include <dirent.h>

#include "common.h"
#include "cpu/blas.h"
#include "io/tensors.h"
#include "test.h"
#include "train/train_model.h"

static const double TOL = 1e-4, LOSS_TOL = 1e-5;

/* __metadata__["loss"] of a safetensors file: 8-byte header length, JSON. */
static double metadata_loss(const char *path) {
    char *data;
    size_t len;
    cmamba_error err;
    double loss = NAN;
    if (cm_read_file(path, 1u << 26, &data, &len, &err)) return loss;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0 && len >= 8; i--) hlen = hlen << 8 | (unsigned char)data[i];
    cJSON *h = len >= 8 && hlen <= len - 8 ? cJSON_ParseWithLength(data + 8, hlen) : NULL;
    const cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(h, "__metadata__"), "loss");
    if (cJSON_IsString(v)) loss = strtod(v->valuestring, NULL);
    cJSON_Delete(h);
    free(data);
    return loss;
}

static int32_t *fixture_ids(const char *model_dir, int *n) {
    char *path = cm_path_join(model_dir, "fixture.json"), *json;
    cmamba_error err;
    int32_t *ids = NULL;
    *n = 0;
    if (cm_read_file(path, 1 << 24, &json, NULL, &err) == 0) {
        cJSON *fx = cJSON_Parse(json);
        const cJSON *arr = cJSON_GetObjectItem(fx, "ids"), *e;
        ids = malloc(sizeof *ids * (cJSON_GetArraySize(arr) + 1));
        cJSON_ArrayForEach(e, arr) ids[(*n)++] = (int32_t)e->valueint;
        cJSON_Delete(fx);
        free(json);
    }
    free(path);
    return ids;
}

/* A float64 tensor's values (data has no alignment promise). */
static double *tensor_f64(const cm_tensor *t, size_t numel) {
    double *v = malloc(sizeof(double) * numel);
    memcpy(v, t->data, sizeof(double) * numel);
    return v;
}

/* The mean next-token cross-entropy from the inference path's logits. */
static double inference_loss(const char *model_dir, const int32_t *ids, int n) {
    cmamba_model *im;
    cmamba_error err;
    if (cmamba_model_load(model_dir, &im, &err)) return NAN;
    const int V = cmamba_model_config(im)->vocab_size;
    float *logits = malloc(sizeof(float) * n * V);
    double sum = 0;
    CHECK(cmamba_forward(im, NULL, ids, n, logits, 1, &err) == 0);
    for (int t = 0; t + 1 < n; t++) {
        const float *l = logits + (size_t)t * V;
        double mx = l[0], s = 0;
        for (int v = 1; v < V; v++) mx = l[v] > mx ? l[v] : mx;
        for (int v = 0; v < V; v++) s += exp(l[v] - mx);
        sum += log(s) + mx - l[ids[t + 1]];
    }
    free(logits);
    cmamba_model_free(im);
    return sum / (n - 1);
}

/* `cmamba grad` on the same input: same loss on stdout, same tensors. */
static void check_cli(const char *model_dir, const char *name, const int32_t *ids, int n,
                      const cm_train_model *m, float loss) {
    const char *bin = getenv("CMAMBA_BIN"), *tmp = test_env("CMAMBA_TMP", "/tmp");
    if (!bin) return;
    char out[1024], cmd[8192], line[256] = "";
    snprintf(out, sizeof out, "%s/grad_%s.safetensors", tmp, name);
    int k = snprintf(cmd, sizeof cmd, "mkdir -p '%s' && '%s' grad --model '%s' --out '%s' --ids ",
                     tmp, bin, model_dir, out);
    for (int i = 0; i < n && k < (int)sizeof cmd - 16; i++)
        k += snprintf(cmd + k, sizeof cmd - k, "%s%d", i ? "," : "", ids[i]);
    snprintf(cmd + k, sizeof cmd - k, " 2>&1");
    FILE *p = popen(cmd, "r");
    char buf[256];
    while (p && fgets(buf, sizeof buf, p)) snprintf(line, sizeof line, "%s", buf);
    const int status = p ? pclose(p) : -1;
    if (strstr(line, "unknown command")) {
        printf("  (cmamba grad is not registered in this binary: CLI check left out)\n");
        return;
    }
    const char *word = strrchr(line, ' ');
    CHECK_MSG(status == 0 && word && fabs(strtod(word, NULL) - loss) <= 1e-5 * loss,
              "%s: cmamba grad said '%s' (status %d)", name, line, status);
    cm_tensor_set *set;
    cmamba_error err;
    if (cm_safetensors_open(out, &set, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    CHECK(cm_tensors_count(set) == m->n_tensors);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const cm_tensor *t = cm_tensors_find(set, m->desc[i].name);
        CHECK_MSG(t && t->dtype == CM_DT_F32 && t->nbytes == 4 * m->desc[i].numel &&
                      memcmp(t->data, m->grads + m->offset[i], t->nbytes) == 0,
                  "%s: cmamba grad's %s differs", name, m->desc[i].name);
    }
    cm_tensors_close(set);
    remove(out);
}

static void check_fixture(const char *grads_path, const char *model_dir, const char *name) {
    cmamba_error err;
    cm_train_model *m;
    cm_tensor_set *ref;
    int n;
    int32_t *ids = fixture_ids(model_dir, &n);
    CHECK_MSG(ids && n >= 2, "%s: no ids in fixture.json", name);
    if (!ids || n < 2) { free(ids); return; }
    if (cm_train_model_load(model_dir, &m, &err) || cm_safetensors_open(grads_path, &ref, &err)) {
        CHECK_MSG(0, "%s: %s", name, err.msg);
        free(ids);
        return;
    }
    float loss, loss_eval;
    cm_train_zero_grad(m);
    CHECK(cm_train_forward_backward(m, ids, 1, n - 1, &loss, &err) == 0);
    CHECK(cm_train_loss(m, ids, 1, n - 1, &loss_eval, &err) == 0);
    const double ref_loss = metadata_loss(grads_path), e_loss = fabs(loss - ref_loss) / ref_loss;
    const double e_infer = fabs(inference_loss(model_dir, ids, n) - loss) / loss;
    printf("%s: L=%d  loss %.7f (ref %.7f, rel %.1e)  inference path %.1e\n", name, n, loss,
           ref_loss, e_loss, e_infer);
    CHECK_MSG(e_loss <= LOSS_TOL, "%s: loss %.9g vs %.9g", name, loss, ref_loss);
    CHECK_MSG(loss_eval == loss, "%s: forward-only loss %.9g vs %.9g", name, loss_eval, loss);
    CHECK_MSG(e_infer <= 1e-6, "%s: inference path's loss differs by %.2e", name, e_infer);
    CHECK_MSG(cm_tensors_count(ref) == m->n_tensors, "%s: %zu reference tensors for %zu parameters",
              name, cm_tensors_count(ref), m->n_tensors);

    double worst = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const cm_param_desc *p = &m->desc[i];
        const cm_tensor *t = cm_tensors_find(ref, p->name);
        CHECK_MSG(t && t->dtype == CM_DT_F64 && t->nbytes == 8 * p->numel,
                  "%s: reference lacks a float64 '%s' of %zu values", name, p->name, p->numel);
        if (!t || t->dtype != CM_DT_F64 || t->nbytes != 8 * p->numel) continue;
        double *g = tensor_f64(t, p->numel), mx = 0;
        for (size_t k = 0; k < p->numel; k++) mx = fabs(g[k]) > mx ? fabs(g[k]) : mx;
        const double e = rel_err_f32_f64(m->grads + m->offset[i], g, p->numel);
        worst = e > worst ? e : worst;
        printf("  %-40s %7zu  max|ref| %.3e  err %.2e\n", p->name, p->numel, mx, e);
        CHECK_MSG(e <= TOL, "%s: gradient of %s off by %.3e", name, p->name, e);
        free(g);
    }
    printf("  worst %.2e (tol %.0e)\n", worst, TOL);
    check_cli(model_dir, name, ids, n, m, loss);
    cm_tensors_close(ref);
    cm_train_model_free(m);
    free(ids);
}

int main(int argc, char **argv) {
    (void)argc;
    /* the same sgemm kernels as the cmamba it compares with, bit for bit */
    cm_blas_use_cpu_kernels(argv);
    const char *fixtures = test_env("CMAMBA_FIXTURES", "tests/fixtures");
    char *root = cm_path_join(fixtures, "grads"), *models = cm_path_join(fixtures, "models");
    DIR *d = opendir(root);
    CHECK_MSG(d != NULL, "no fixture folder %s", root);
    int cases = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        const size_t len = strlen(e->d_name), ext = strlen(".safetensors");
        if (len <= ext || strcmp(e->d_name + len - ext, ".safetensors")) continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(len - ext), e->d_name);
        char *path = cm_path_join(root, e->d_name), *model_dir = cm_path_join(models, name);
        check_fixture(path, model_dir, name);
        cases++;
        free(path);
        free(model_dir);
    }
    if (d) closedir(d);
    free(root);
    free(models);
    CHECK_MSG(cases >= 3, "only %d gradient fixtures found", cases);
    return test_summary();
}
