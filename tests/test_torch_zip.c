/* The PyTorch zip loader: fixtures written by torch.save
 * (tools/make_torch_zip_fixtures.py) must load with the exact values of
 * expected.json, and archives built here, broken in one way each, must fail
 * with a one-line message that names the file and the problem. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <sys/stat.h>
#include <zip.h>

#include "common.h"
#include "io/pickle.h"
#include "io/tensor_set.h"
#include "test.h"

static char fixtures[1024], tmp[1024];

static char *read_all(const char *path, size_t *len) {
    char *data;
    cmamba_error err;
    if (cm_read_file(path, 1 << 20, &data, len, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    return data;
}

static void write_all(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(data, 1, len, f) == len);
    if (f) fclose(f);
}

/* Opening path must fail, leave *out NULL, and say which file and what. */
static void expect_fail(const char *path, const char *needle) {
    cm_tensor_set *set = NULL;
    cmamba_error err = {{0}};
    int rc = cm_torch_zip_open(path, &set, &err);
    CHECK_MSG(rc == -1 && set == NULL, "%s loaded", path);
    CHECK_MSG(strstr(err.msg, needle) && strstr(err.msg, path), "%s: '%s' lacks '%s'", path,
              err.msg, needle);
    CHECK(!strchr(err.msg, '\n'));
    if (set) cm_tensors_close(set);
}

static double element(const cm_tensor *t, size_t i) {
    const unsigned char *p = (const unsigned char *)t->data + i * cm_dtype_size(t->dtype);
    float f;
    double d;
    uint16_t h;
    int64_t l;
    switch (t->dtype) {
    case CM_DT_F32: memcpy(&f, p, 4); return f;
    case CM_DT_F64: memcpy(&d, p, 8); return d;
    case CM_DT_F16: memcpy(&h, p, 2); return cm_f16_to_f32(h);
    case CM_DT_BF16: memcpy(&h, p, 2); return cm_bf16_to_f32(h);
    case CM_DT_I64: memcpy(&l, p, 8); return (double)l;
    default: return NAN;
    }
}

/* ---- the torch.save fixtures ------------------------------------------- */

static void test_state_dict(void) {
    char path[1100], json_path[1100];
    snprintf(path, sizeof path, "%s/state_dict.pt", fixtures);
    snprintf(json_path, sizeof json_path, "%s/expected.json", fixtures);
    size_t len;
    char *text = read_all(json_path, &len);
    cJSON *expected = text ? cJSON_Parse(text) : NULL;
    free(text);
    cm_tensor_set *set = NULL;
    cmamba_error err = {{0}};
    int rc = cm_torch_zip_open(path, &set, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK(expected != NULL);
    if (rc || !expected) {
        cJSON_Delete(expected);
        if (set) cm_tensors_close(set);
        return;
    }
    CHECK(cm_tensors_count(set) == (size_t)cJSON_GetArraySize(expected));
    for (cJSON *e = expected->child; e; e = e->next) {
        const cm_tensor *t = cm_tensors_find(set, e->string);
        CHECK_MSG(t != NULL, "no tensor '%s'", e->string);
        if (!t) continue;
        const char *dtype = cJSON_GetStringValue(cJSON_GetObjectItem(e, "dtype"));
        CHECK_MSG(dtype && !strcmp(cm_dtype_name(t->dtype), dtype), "'%s' dtype %s", e->string,
                  cm_dtype_name(t->dtype));
        cJSON *shape = cJSON_GetObjectItem(e, "shape"), *values = cJSON_GetObjectItem(e, "values");
        CHECK_MSG(t->ndim == cJSON_GetArraySize(shape), "'%s' ndim %d", e->string, t->ndim);
        size_t numel = 1;
        for (int d = 0; d < t->ndim && d < cJSON_GetArraySize(shape); d++) {
            CHECK(t->shape[d] == (int64_t)cJSON_GetArrayItem(shape, d)->valuedouble);
            numel *= (size_t)t->shape[d];
        }
        CHECK(t->nbytes == numel * cm_dtype_size(t->dtype));
        CHECK_MSG(numel == (size_t)cJSON_GetArraySize(values), "'%s' numel %zu", e->string, numel);
        size_t i = 0;
        for (cJSON *v = values->child; v && i < numel; v = v->next, i++)
            CHECK_MSG(element(t, i) == v->valuedouble, "'%s'[%zu] = %g, want %g", e->string, i,
                      element(t, i), v->valuedouble);
        CHECK(t->file && !strcmp(t->file, path));
    }
    /* tied weights share one buffer, as they share one storage record */
    const cm_tensor *emb = cm_tensors_find(set, "backbone.embedding.weight");
    const cm_tensor *head = cm_tensors_find(set, "lm_head.weight");
    CHECK(emb && head && emb->data == head->data);
    cJSON_Delete(expected);
    cm_tensors_close(set);
}

static void test_transposed(void) {
    char path[1100];
    snprintf(path, sizeof path, "%s/transposed.pt", fixtures);
    expect_fail(path, "tensor 'wt' is not contiguous");
}

/* ---- archives built here ------------------------------------------------ */

typedef struct {
    unsigned char b[2048];
    size_t n;
} pickle_buf;

static void emit(pickle_buf *p, const void *s, size_t n) {
    if (p->n + n > sizeof p->b) abort();
    memcpy(p->b + p->n, s, n);
    p->n += n;
}

static void op(pickle_buf *p, int c) {
    unsigned char b = (unsigned char)c;
    emit(p, &b, 1);
}

static void str(pickle_buf *p, const char *s) {
    uint32_t n = (uint32_t)strlen(s);
    unsigned char len[4] = {n & 255, n >> 8 & 255, n >> 16 & 255, n >> 24};
    op(p, 'X');
    emit(p, len, 4);
    emit(p, s, n);
}

static void global(pickle_buf *p, const char *module, const char *name) {
    op(p, 'c');
    emit(p, module, strlen(module));
    op(p, '\n');
    emit(p, name, strlen(name));
    op(p, '\n');
}

static void binint(pickle_buf *p, int32_t v) {
    uint32_t u = (uint32_t)v;
    unsigned char b[4] = {u & 255, u >> 8 & 255, u >> 16 & 255, u >> 24};
    op(p, 'J');
    emit(p, b, 4);
}

/* One tensor 't' as torch.save writes it, with every part adjustable. */
typedef struct {
    const char *fn_module, *fn; /* the rebuild function */
    const char *st_module, *st; /* the storage type */
    const char *dtype;          /* _rebuild_tensor_v3's dtype argument, or NULL */
    int numel, offset, ndim, size[3], stride[3];
} tensor_spec;

static tensor_spec base_spec(void) {
    return (tensor_spec){
        "torch._utils", "_rebuild_tensor_v2", "torch", "FloatStorage", NULL, 6, 0, 2, {2, 3},
        {3, 1}};
}

/* {'t': _rebuild_tensor_v2(('storage', torch.FloatStorage, '0', 'cpu', numel),
 *                          offset, size, stride, False, OrderedDict())} */
static pickle_buf tensor_pickle(tensor_spec s) {
    pickle_buf p = {.n = 0};
    emit(&p, "\x80\x02}", 3);
    str(&p, "t");
    global(&p, s.fn_module, s.fn);
    op(&p, '(');
    op(&p, '(');
    str(&p, "storage");
    global(&p, s.st_module, s.st);
    str(&p, "0");
    str(&p, "cpu");
    binint(&p, s.numel);
    op(&p, 't');
    op(&p, 'Q');
    binint(&p, s.offset);
    op(&p, '(');
    for (int d = 0; d < s.ndim; d++) binint(&p, s.size[d]);
    op(&p, 't');
    op(&p, '(');
    for (int d = 0; d < s.ndim; d++) binint(&p, s.stride[d]);
    op(&p, 't');
    op(&p, 0x89);
    global(&p, "collections", "OrderedDict");
    op(&p, ')');
    op(&p, 'R');
    if (s.dtype) global(&p, "torch", s.dtype);
    op(&p, 't');
    op(&p, 'R');
    op(&p, 's');
    op(&p, '.');
    return p;
}

static const float SIX[6] = {1, 2, 3, 4, 5, 6};

typedef struct {
    const char *name;
    const void *data;
    size_t len;
} zip_entry;

/* Writes tmp/<file> as a zip, entries compressed with method (ZIP_CM_STORE
 * as torch does, or ZIP_CM_DEFLATE); returns its path. */
static const char *write_zip_as(const char *file, const zip_entry *e, size_t n, int method) {
    static char path[1100];
    snprintf(path, sizeof path, "%s/%s", tmp, file);
    int code;
    zip_t *z = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &code);
    CHECK(z != NULL);
    if (!z) return path;
    for (size_t i = 0; i < n; i++) {
        zip_source_t *src = zip_source_buffer(z, e[i].data ? e[i].data : "", e[i].len, 0);
        zip_int64_t idx = src ? zip_file_add(z, e[i].name, src, ZIP_FL_OVERWRITE) : -1;
        if (idx < 0 && src) zip_source_free(src);
        CHECK(idx >= 0 && zip_set_file_compression(z, (zip_uint64_t)idx, method, 0) == 0);
    }
    CHECK(zip_close(z) == 0);
    return path;
}

static const char *write_zip(const char *file, const zip_entry *e, size_t n) {
    return write_zip_as(file, e, n, ZIP_CM_STORE);
}

/* archive/data.pkl = p, archive/byteorder = "little", archive/data/0 = record */
static const char *write_checkpoint(const char *file, const pickle_buf *p, const void *record,
                                    size_t record_len) {
    zip_entry e[3] = {{"archive/data.pkl", p->b, p->n},
                      {"archive/byteorder", "little", 6},
                      {"archive/data/0", record, record_len}};
    return write_zip(file, e, record ? 3 : 2);
}

static void test_built(void) {
    tensor_spec s = base_spec();
    pickle_buf p = tensor_pickle(s);
    const char *path = write_checkpoint("good.pt", &p, SIX, sizeof SIX);
    cm_tensor_set *set = NULL;
    cmamba_error err = {{0}};
    CHECK_MSG(cm_torch_zip_open(path, &set, &err) == 0, "%s", err.msg);
    const cm_tensor *t = set ? cm_tensors_find(set, "t") : NULL;
    CHECK(t && t->dtype == CM_DT_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 &&
          element(t, 5) == 6);
    if (set) cm_tensors_close(set);

    /* the dtype-based format: an untyped byte storage plus a torch.<dtype> global,
     * here a (2,2) view 2 floats into the record */
    s = base_spec();
    s.fn = "_rebuild_tensor_v3";
    s.st_module = "torch.storage";
    s.st = "UntypedStorage";
    s.dtype = "float32";
    s.numel = (int)sizeof SIX;
    s.offset = 2;
    s.size[1] = 2;
    s.stride[0] = 2;
    p = tensor_pickle(s);
    path = write_checkpoint("v3.pt", &p, SIX, sizeof SIX);
    set = NULL;
    CHECK_MSG(cm_torch_zip_open(path, &set, &err) == 0, "%s", err.msg);
    t = set ? cm_tensors_find(set, "t") : NULL;
    CHECK(t && t->dtype == CM_DT_F32 && t->nbytes == 16 && element(t, 0) == 3 &&
          element(t, 3) == 6);
    if (set) cm_tensors_close(set);

    /* compressed records work, but may not expand beyond 16x the archive */
    p = tensor_pickle(base_spec());
    zip_entry deflated[] = {{"archive/data.pkl", p.b, p.n}, {"archive/data/0", SIX, sizeof SIX}};
    path = write_zip_as("deflated.pt", deflated, 2, ZIP_CM_DEFLATE);
    set = NULL;
    CHECK_MSG(cm_torch_zip_open(path, &set, &err) == 0, "%s", err.msg);
    t = set ? cm_tensors_find(set, "t") : NULL;
    CHECK(t && element(t, 0) == 1 && element(t, 5) == 6);
    if (set) cm_tensors_close(set);
    static const float bomb[1 << 18]; /* 1 MiB of zeros deflates to about 1 kB */
    s = base_spec();
    s.numel = 1 << 18;
    s.size[1] = s.stride[0] = 1 << 17;
    p = tensor_pickle(s);
    zip_entry bombed[] = {{"archive/data.pkl", p.b, p.n}, {"archive/data/0", bomb, sizeof bomb}};
    expect_fail(write_zip_as("bomb.pt", bombed, 2, ZIP_CM_DEFLATE), "more than 16x");

    s = base_spec();
    s.fn_module = "posix";
    s.fn = "system";
    p = tensor_pickle(s);
    expect_fail(write_checkpoint("global.pt", &p, SIX, sizeof SIX),
                "unsupported pickle global 'posix.system'");

    s = base_spec();
    s.st = "ComplexFloatStorage";
    p = tensor_pickle(s);
    expect_fail(write_checkpoint("complex.pt", &p, SIX, sizeof SIX),
                "unsupported pickle global 'torch.ComplexFloatStorage'");

    p = tensor_pickle(base_spec());
    expect_fail(write_checkpoint("missing.pt", &p, NULL, 0),
                "storage record 'archive/data/0' is missing");
    expect_fail(write_checkpoint("short.pt", &p, SIX, 16), "holds 16 bytes, the pickle expects 24");

    s = base_spec();
    s.size[1] = 4;
    s.stride[0] = 4;
    p = tensor_pickle(s);
    expect_fail(write_checkpoint("big.pt", &p, SIX, sizeof SIX),
                "tensor 't' (offset 0, 8 elements");

    s = base_spec();
    s.offset = 1;
    p = tensor_pickle(s);
    expect_fail(write_checkpoint("offset.pt", &p, SIX, sizeof SIX), "does not fit in its storage");

    s = base_spec();
    s.size[0] = -2;
    p = tensor_pickle(s);
    expect_fail(write_checkpoint("negative.pt", &p, SIX, sizeof SIX), "impossible shape");

    s = base_spec();
    s.stride[0] = 1;
    s.stride[1] = 2;
    p = tensor_pickle(s);
    expect_fail(write_checkpoint("strided.pt", &p, SIX, sizeof SIX),
                "tensor 't' is not contiguous");

    /* every prefix of a good pickle is a truncated one */
    p = tensor_pickle(base_spec());
    for (size_t n = 0; n < p.n; n++) {
        pickle_buf cut = p;
        cut.n = n;
        expect_fail(write_checkpoint("cut.pt", &cut, SIX, sizeof SIX), "data.pkl");
    }

    pickle_buf other = {.n = 0};
    emit(&other, "\x80\x02]K\x01\x61.", 7); /* [1] */
    expect_fail(write_checkpoint("list.pt", &other, SIX, sizeof SIX),
                "holds type list, not a state dict");
    other.n = 0;
    emit(&other, "\x80\x02}X\x01\0\0\0aK\x01s.", 13); /* {'a': 1} */
    expect_fail(write_checkpoint("int.pt", &other, SIX, sizeof SIX),
                "entry 'a' is not a tensor but of type int");
    other.n = 0;
    emit(&other, "\x80\x02(i__builtin__\nobject\n.", 24); /* INST */
    expect_fail(write_checkpoint("inst.pt", &other, SIX, sizeof SIX),
                "unsupported pickle opcode 0x69");

    zip_entry no_pkl[] = {{"archive/byteorder", "little", 6}, {"archive/data/0", SIX, sizeof SIX}};
    expect_fail(write_zip("nopkl.pt", no_pkl, 2), "no 'archive/data.pkl' in the archive");
    zip_entry no_dir[] = {{"data.pkl", p.b, p.n}};
    expect_fail(write_zip("nodir.pt", no_dir, 1), "not inside one folder");
    zip_entry big_endian[] = {{"archive/data.pkl", p.b, p.n},
                              {"archive/byteorder", "big", 3},
                              {"archive/data/0", SIX, sizeof SIX}};
    expect_fail(write_zip("bigendian.pt", big_endian, 3), "byteorder 'big'");
}

/* ---- broken files ------------------------------------------------------- */

static void test_broken_files(void) {
    char src[1100], path[1100];
    snprintf(src, sizeof src, "%s/state_dict.pt", fixtures);
    size_t len;
    char *data = read_all(src, &len);
    CHECK(data != NULL);
    if (!data) return;
    snprintf(path, sizeof path, "%s/broken.pt", tmp);
    write_all(path, "not a zip file\n", 15);
    expect_fail(path, "zip archive");
    expect_fail("/nonexistent/pytorch_model.bin", "No such file");

    /* cut anywhere, the central directory at the end goes missing */
    for (size_t n = 0; n < len; n += 61) {
        write_all(path, data, n);
        expect_fail(path, "zip archive");
    }
    /* one flipped byte anywhere must be caught or harmless, never a crash */
    for (size_t i = 0; i < len; i += 7) {
        data[i] ^= 0x5a;
        write_all(path, data, len);
        cm_tensor_set *set = NULL;
        cmamba_error err = {{0}};
        if (cm_torch_zip_open(path, &set, &err) == 0)
            cm_tensors_close(set);
        else
            CHECK_MSG(err.msg[0] && strstr(err.msg, path), "byte %zu: '%s'", i, err.msg);
        data[i] ^= 0x5a;
    }
    free(data);
}

/* ---- the pickle reader on its own, mutated ------------------------------- */

static unsigned char zero_bytes[4096];

static int zero_storage(void *ctx, const char *key, size_t nbytes, const void **data,
                        cmamba_error *err) {
    if (nbytes > sizeof zero_bytes) return cm_fail(err, "storage '%s' too large", key);
    *data = zero_bytes;
    return 0;
}

static void test_mutated_pickle(void) {
    char path[1100];
    snprintf(path, sizeof path, "%s/state_dict.pt", fixtures);
    zip_t *z = zip_open(path, ZIP_RDONLY, NULL);
    zip_int64_t idx = z ? zip_name_locate(z, "state_dict/data.pkl", 0) : -1;
    zip_stat_t st;
    CHECK(idx >= 0 && zip_stat_index(z, (zip_uint64_t)idx, 0, &st) == 0);
    unsigned char *pkl = idx >= 0 ? malloc(st.size) : NULL;
    zip_file_t *f = pkl ? zip_fopen_index(z, (zip_uint64_t)idx, 0) : NULL;
    CHECK(f && zip_fread(f, pkl, st.size) == (zip_int64_t)st.size);
    if (f) zip_fclose(f);
    if (z) zip_discard(z);
    if (!f) {
        free(pkl);
        return;
    }
    size_t n = (size_t)st.size, loaded = 0;
    cmamba_error err;
    cm_tensor_set *set = cm_tensor_set_new(&err);
    CHECK(set && cm_torch_pickle_load("mem", pkl, n, zero_storage, NULL, set, &err) == 0);
    CHECK(set && cm_tensors_count(set) == 11);
    if (set) cm_tensors_close(set);

    static const unsigned char subst[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 'h', 't', 'R', '.'};
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < sizeof subst; k++) {
            unsigned char saved = pkl[i];
            pkl[i] = subst[k];
            set = cm_tensor_set_new(&err);
            err.msg[0] = 0;
            int rc = cm_torch_pickle_load("mem", pkl, n, zero_storage, NULL, set, &err);
            if (rc == 0)
                loaded++;
            else
                CHECK_MSG(!strncmp(err.msg, "mem: ", 5), "byte %zu: '%s'", i, err.msg);
            cm_tensors_close(set);
            pkl[i] = saved;
        }
    }
    fprintf(stderr, "mutated pickles: %zu of %zu still load\n", loaded, n * sizeof subst);
    free(pkl);
}

int main(void) {
    snprintf(fixtures, sizeof fixtures, "%s/torch_zip",
             test_env("CMAMBA_FIXTURES", "tests/fixtures"));
    snprintf(tmp, sizeof tmp, "%s", test_env("CMAMBA_TMP", "/tmp"));
    if (mkdir(tmp, 0755) && errno != EEXIST) SKIP("cannot create %s", tmp);
    strncat(tmp, "/torch_zip", sizeof tmp - strlen(tmp) - 1);
    if (mkdir(tmp, 0755) && errno != EEXIST) SKIP("cannot create %s", tmp);
    test_state_dict();
    test_transposed();
    test_built();
    test_broken_files();
    test_mutated_pickle();
    return test_summary();
}
