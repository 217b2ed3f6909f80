/* safetensors reading, writing and checkpoint folders: a write → open
 * round trip, files broken in one way each (every one must fail with a
 * one-line message naming the file and the problem), sharded folders, and
 * a sweep of single-byte corruptions that must never crash. */
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "io/tensor_set.h"
#include "test.h"

static char tmp[1024];

static void make_dir(const char *path) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "cannot create %s\n", path);
        exit(1);
    }
}

static const char *tmp_path(const char *name) {
    static char buf[4][1200];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmp, name);
    return buf[k];
}

static void write_all(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(data, 1, len, f) == len);
    if (f) fclose(f);
}

/* A safetensors file: the length of header, header, then data_len bytes
 * counting up from 0 (so misplaced slices show). */
static void write_st(const char *path, const char *header, size_t data_len) {
    size_t n = strlen(header);
    unsigned char *buf = malloc(8 + n + data_len);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, header, n);
    for (size_t i = 0; i < data_len; i++) buf[8 + n + i] = (unsigned char)i;
    write_all(path, buf, 8 + n + data_len);
    free(buf);
}

/* Opening must fail, leave *out NULL, and give one line naming path and
 * containing needle. */
static void expect_open_fail(const char *path, const char *needle) {
    cm_tensor_set *set = NULL;
    cmamba_error err = {{0}};
    int rc = cm_safetensors_open(path, &set, &err);
    CHECK_MSG(rc == -1 && set == NULL, "%s loaded", path);
    CHECK_MSG(strstr(err.msg, needle) && strstr(err.msg, path), "%s: '%s' lacks '%s'", path,
              err.msg, needle);
    if (set) cm_tensors_close(set);
}

/* One malformed file per call: header over data_len bytes. */
static void bad_header(const char *name, const char *header, size_t data_len, const char *needle) {
    const char *path = tmp_path(name);
    write_st(path, header, data_len);
    expect_open_fail(path, needle);
}

/* A file whose one tensor 'a' has the given (JSON) dtype, shape and offsets. */
static void bad_entry(const char *name, const char *dtype, const char *shape, const char *offsets,
                      size_t data_len, const char *needle) {
    char h[512];
    snprintf(h, sizeof h, "{\"a\":{\"dtype\":%s,\"shape\":%s,\"data_offsets\":%s}}", dtype, shape,
             offsets);
    bad_header(name, h, data_len, needle);
}

static void expect_dir_fail(const char *dir, const char *needle) {
    cm_tensor_set *set = NULL;
    cmamba_error err = {{0}};
    int rc = cm_tensors_open_dir(dir, &set, &err);
    CHECK_MSG(rc == -1 && set == NULL, "%s loaded", dir);
    CHECK_MSG(strstr(err.msg, needle) != NULL, "%s: '%s' lacks '%s'", dir, err.msg, needle);
    if (set) cm_tensors_close(set);
}

/* ---- round trip ---------------------------------------------------------- */

static const float f32[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.125f, 1e30f};
static const uint16_t bf16[5] = {0x3f80, 0xbf80, 0x4000, 0x0000, 0x7f80};
static const int64_t i64 = -1234567890123ll;

static void sample_tensors(cm_tensor_out t[4]) {
    t[0] = (cm_tensor_out){"backbone.layers.0.mixer.A_log", CM_DT_F32, 2, {2, 3}, f32};
    t[1] = (cm_tensor_out){"bf", CM_DT_BF16, 1, {5}, bf16};
    t[2] = (cm_tensor_out){"scalar \"quoted\" \\ name", CM_DT_I64, 0, {0}, &i64};
    t[3] = (cm_tensor_out){"empty", CM_DT_U8, 2, {0, 4}, NULL};
}

static void test_round_trip(void) {
    cm_tensor_out t[4];
    sample_tensors(t);
    static const char *const meta[] = {"format", "pt", "note", "héllo"};
    const char *path = tmp_path("round_trip.safetensors");
    cmamba_error err = {{0}};
    CHECK_MSG(cm_safetensors_write(path, t, 4, meta, 2, &err) == 0, "%s", err.msg);

    char *raw;
    size_t len;
    CHECK(cm_read_file(path, 1 << 20, &raw, &len, &err) == 0);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | (unsigned char)raw[i];
    CHECK(n % 8 == 0 && 8 + n + sizeof f32 + sizeof bf16 + sizeof i64 == len);
    CHECK(raw[8] == '{' && strstr(raw + 8, "\"__metadata__\":{\"format\":\"pt\""));
    free(raw);

    cm_tensor_set *set;
    CHECK_MSG(cm_safetensors_open(path, &set, &err) == 0, "%s", err.msg);
    if (!set) return;
    CHECK(cm_tensors_count(set) == 4 && cm_tensors_at(set, 4) == NULL);
    for (int i = 0; i < 4; i++) {
        const cm_tensor *got = cm_tensors_find(set, t[i].name);
        CHECK_MSG(got && got == cm_tensors_at(set, (size_t)i), "%s missing", t[i].name);
        if (!got) continue;
        CHECK(got->dtype == t[i].dtype && got->ndim == t[i].ndim && !strcmp(got->file, path));
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            CHECK(got->shape[d] == t[i].shape[d]);
            numel *= (size_t)t[i].shape[d];
        }
        CHECK(got->nbytes == numel * cm_dtype_size(t[i].dtype));
        CHECK(got->nbytes == 0 || memcmp(got->data, t[i].data, got->nbytes) == 0);
    }
    CHECK(cm_tensors_find(set, "nope") == NULL);
    cm_tensors_close(set);

    /* the writer refuses what the reader would */
    cm_tensor_out dup[2] = {t[0], t[0]};
    CHECK(cm_safetensors_write(tmp_path("dup.safetensors"), dup, 2, NULL, 0, &err) == -1 &&
          strstr(err.msg, "twice"));
    dup[1].name = "__metadata__";
    CHECK(cm_safetensors_write(tmp_path("dup.safetensors"), dup, 2, NULL, 0, &err) == -1 &&
          strstr(err.msg, "reserved"));
    dup[1].name = "";
    CHECK(cm_safetensors_write(tmp_path("dup.safetensors"), dup, 2, NULL, 0, &err) == -1 &&
          strstr(err.msg, "empty name"));
    dup[1] = (cm_tensor_out){"neg", CM_DT_F32, 1, {-1}, f32};
    CHECK(cm_safetensors_write(tmp_path("dup.safetensors"), dup, 2, NULL, 0, &err) == -1 &&
          strstr(err.msg, "'neg'"));
    struct stat st;
    CHECK(stat(tmp_path("dup.safetensors"), &st) != 0); /* nothing left behind */

    /* an empty set is a valid file too */
    CHECK(cm_safetensors_write(tmp_path("none.safetensors"), NULL, 0, NULL, 0, &err) == 0);
    CHECK(cm_safetensors_open(tmp_path("none.safetensors"), &set, &err) == 0 &&
          cm_tensors_count(set) == 0);
    if (set) cm_tensors_close(set);
}

/* ---- malformed files ------------------------------------------------------ */

static void test_malformed(void) {
    const char *path = tmp_path("tiny.safetensors");
    write_all(path, "abc", 3);
    expect_open_fail(path, "too short");
    write_all(path, "", 0);
    expect_open_fail(path, "too short");

    path = tmp_path("longhdr.safetensors");
    write_all(path, "\xff\xff\xff\x00\x00\x00\x00\x00{}", 10);
    expect_open_fail(path, "runs past the end of the file");
    path = tmp_path("hugehdr.safetensors");
    write_all(path, "\x00\x00\x00\x00\x00\x00\x00\x80{}", 10);
    expect_open_fail(path, "header length 9223372036854775808 exceeds the limit");

    /* truncated: a good file missing its last bytes */
    cm_tensor_out t[4];
    sample_tensors(t);
    cmamba_error err;
    path = tmp_path("trunc.safetensors");
    CHECK(cm_safetensors_write(path, t, 4, NULL, 0, &err) == 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && truncate(path, st.st_size - 4) == 0);
    expect_open_fail(path, "exceed the data section");

    const char *A = "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    char h[512];
    bad_header("notjson.safetensors", "{\"a\": {\"dtype\": ", 0, "header is not valid JSON");
    bad_header("trailing.safetensors", "{} x", 0, "header is not valid JSON");
    bad_header("array.safetensors", "[1, 2]", 0, "header is not a JSON object");
    bad_header("ctrl.safetensors", "{\"a\x01\": 1}", 0, "control byte 0x01");
    bad_header("utf8.safetensors", "{\"\xc3\x28\": 1}", 0, "not valid UTF-8");
    snprintf(h, sizeof h, "{%s, %s}", A, A);
    bad_header("dupkey.safetensors", h, 8, "header has the key 'a' twice");
    bad_header("dupfield.safetensors",
               "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
               8, "tensor 'a' has the key 'dtype' twice");
    bad_header("entry.safetensors", "{\"a\": [1]}", 0,
               "tensor 'a': its entry is not a JSON object");
    bad_header("emptyname.safetensors", "{\"\": {}}", 0, "empty name");
    bad_entry("dtype", "\"Q99\"", "[2]", "[0,8]", 8, "tensor 'a': unknown dtype 'Q99'");
    bad_entry("f8", "\"F8_E4M3\"", "[2]", "[0,2]", 2, "unknown dtype 'F8_E4M3'");
    bad_entry("nodtype", "null", "[2]", "[0,8]", 8, "tensor 'a': missing or non-string dtype");
    bad_entry("noshape", "\"F32\"", "{}", "[0,8]", 8, "tensor 'a': missing or non-array shape");
    bad_entry("negdim", "\"F32\"", "[-2]", "[0,8]", 8,
              "tensor 'a': shape dimension 0 is not a non-negative integer");
    bad_entry("fracdim", "\"F32\"", "[2, 1.5]", "[0,8]", 8,
              "shape dimension 1 is not a non-negative integer");
    bad_entry("strdim", "\"F32\"", "[\"2\"]", "[0,8]", 8,
              "shape dimension 0 is not a non-negative integer");
    bad_entry("hugedim", "\"U8\"", "[1e300]", "[0,8]", 8,
              "shape dimension 0 is not a non-negative integer below 2^53");
    bad_entry("rank9", "\"F32\"", "[1,1,1,1,1,1,1,1,1]", "[0,4]", 4, "shape has 9 dimensions");
    bad_entry("overflow", "\"F32\"", "[4294967296,4294967296,16]", "[0,8]", 8,
              "tensor 'a': the size of shape [4294967296, 4294967296, 16] overflows");
    bad_entry("offs1", "\"F32\"", "[2]", "[0]", 8,
              "tensor 'a': data_offsets must be two non-negative integers");
    bad_entry("offsneg", "\"F32\"", "[2]", "[-8,0]", 8,
              "data_offsets must be two non-negative integers");
    bad_entry("range", "\"F32\"", "[2]", "[10,20]", 12,
              "tensor 'a': data offsets [10, 20) exceed the data section (12 bytes");
    bad_entry("order", "\"F32\"", "[0]", "[8,0]", 8,
              "tensor 'a': data_offsets [8, 0) begin after they end");
    bad_entry("size", "\"F32\"", "[3]", "[0,8]", 8,
              "tensor 'a': data offsets [0, 8) hold 8 bytes, shape [3] of F32 needs 12");
    snprintf(h, sizeof h, "{%s, \"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
             A);
    bad_header("overlap.safetensors", h, 12, "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
    snprintf(h, sizeof h, "{%s, \"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}",
             A);
    bad_header("hole.safetensors", h, 16, "hole: bytes [8, 12) before tensor 'b'");
    snprintf(h, sizeof h, "{%s}", A);
    bad_header("tail.safetensors", h, 12, "4 bytes after its last tensor 'a'");
    bad_header("notensors.safetensors", "{}", 4, "holds 4 bytes but the header lists no tensors");
    snprintf(h, sizeof h, "{\"__metadata__\": {\"k\": 1}, %s}", A);
    bad_header("meta.safetensors", h, 8, "__metadata__ value of 'k' is not a string");
    expect_open_fail(tmp_path("absent.safetensors"), "cannot open");
    expect_open_fail(tmp, "not a regular file");

    /* accepted: zero-sized tensors anywhere in the tiling, metadata, padding */
    snprintf(h, sizeof h,
             "{\"z\":{\"dtype\":\"F64\",\"shape\":[0,3],\"data_offsets\":[8,8]}, %s, "
             "\"__metadata__\":{}}   ",
             A);
    write_st(tmp_path("ok.safetensors"), h, 8);
    cm_tensor_set *set;
    CHECK_MSG(cm_safetensors_open(tmp_path("ok.safetensors"), &set, &err) == 0, "%s", err.msg);
    if (set) {
        const cm_tensor *a = cm_tensors_find(set, "a");
        CHECK(cm_tensors_count(set) == 2 && a && ((const unsigned char *)a->data)[7] == 7);
        cm_tensors_close(set);
    }
}

/* ---- checkpoint folders ------------------------------------------------ */

static void write_index(const char *dir, const char *weight_map) {
    char path[1300], text[1024];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    snprintf(text, sizeof text, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": %s}",
             weight_map);
    write_all(path, text, strlen(text));
}

/* A folder holding shards s1 = {x, y} and s2 = {z} (and s3 = {y}). */
static const char *shard_dir(const char *name) {
    const char *dir = tmp_path(name);
    make_dir(dir);
    char path[1300];
    cmamba_error err;
    cm_tensor_out t[2] = {{"x", CM_DT_F32, 1, {2}, f32}, {"y", CM_DT_BF16, 1, {3}, bf16}};
    snprintf(path, sizeof path, "%s/s1.safetensors", dir);
    CHECK(cm_safetensors_write(path, t, 2, NULL, 0, &err) == 0);
    t[0].name = "z";
    snprintf(path, sizeof path, "%s/s2.safetensors", dir);
    CHECK(cm_safetensors_write(path, t, 1, NULL, 0, &err) == 0);
    snprintf(path, sizeof path, "%s/s3.safetensors", dir);
    CHECK(cm_safetensors_write(path, t + 1, 1, NULL, 0, &err) == 0);
    return dir;
}

static void test_dirs(void) {
    cmamba_error err;
    cm_tensor_set *set;
    const char *dir = shard_dir("sharded");
    write_index(
        dir, "{\"x\": \"s1.safetensors\", \"z\": \"s2.safetensors\", \"y\": \"s1.safetensors\"}");
    CHECK_MSG(cm_tensors_open_dir(dir, &set, &err) == 0, "%s", err.msg);
    if (set) {
        const cm_tensor *x = cm_tensors_find(set, "x"), *z = cm_tensors_find(set, "z");
        CHECK(cm_tensors_count(set) == 3 && cm_tensors_find(set, "y"));
        CHECK(x && z && strstr(x->file, "s1.safetensors") && strstr(z->file, "s2.safetensors"));
        CHECK(z && memcmp(z->data, f32, 8) == 0);
        cm_tensors_close(set);
    }

    dir = shard_dir("shard_missing");
    write_index(dir, "{\"x\": \"s1.safetensors\", \"w\": \"model-00009-of-00009.safetensors\"}");
    expect_dir_fail(dir, "model-00009-of-00009.safetensors: cannot open");
    dir = shard_dir("shard_escape");
    write_index(dir, "{\"x\": \"../sharded/s1.safetensors\"}");
    expect_dir_fail(dir,
                    "shard '../sharded/s1.safetensors' of tensor 'x' is not a plain file name");
    write_index(dir, "{\"x\": \"..\"}");
    expect_dir_fail(dir, "shard '..' of tensor 'x' is not a plain file name");
    write_index(dir, "{\"x\": 7}");
    expect_dir_fail(dir, "the shard of tensor 'x' is not a string");
    dir = shard_dir("shard_wrong");
    write_index(dir, "{\"x\": \"s1.safetensors\", \"z\": \"s1.safetensors\"}");
    expect_dir_fail(dir, "s1.safetensors: tensor 'z' is not in this shard");
    dir = shard_dir("shard_dup");
    write_index(dir, "{\"x\": \"s1.safetensors\", \"y\": \"s3.safetensors\"}");
    expect_dir_fail(dir, "tensor 'y' is in both");
    dir = shard_dir("shard_twice");
    write_index(dir, "{\"x\": \"s1.safetensors\", \"x\": \"s1.safetensors\"}");
    expect_dir_fail(dir, "weight_map has the key 'x' twice");
    write_index(dir, "[]");
    expect_dir_fail(dir, "no weight_map object");
    dir = shard_dir("shard_badjson");
    write_all(tmp_path("shard_badjson/model.safetensors.index.json"), "{\"weight_map\": {", 16);
    expect_dir_fail(dir, "model.safetensors.index.json: the index is not valid JSON");

    dir = tmp_path("empty_dir");
    make_dir(dir);
    expect_dir_fail(dir, "no model.safetensors, model.safetensors.index.json or pytorch_model.bin");

    /* model.safetensors wins over an index */
    dir = tmp_path("single");
    make_dir(dir);
    cm_tensor_out t[4];
    sample_tensors(t);
    CHECK(cm_safetensors_write(tmp_path("single/model.safetensors"), t, 4, NULL, 0, &err) == 0);
    write_index(dir, "{\"x\": \"missing.safetensors\"}");
    CHECK_MSG(cm_tensors_open_dir(dir, &set, &err) == 0, "%s", err.msg);
    if (set) {
        CHECK(cm_tensors_count(set) == 4);
        cm_tensors_close(set);
    }

    /* the checked-in fixtures: shards and a pytorch_model.bin */
    char fx[1100];
    const char *fixtures = test_env("CMAMBA_FIXTURES", "tests/fixtures");
    snprintf(fx, sizeof fx, "%s/models/hf_sharded_bf16", fixtures);
    CHECK_MSG(cm_tensors_open_dir(fx, &set, &err) == 0, "%s", err.msg);
    if (set) {
        CHECK(cm_tensors_count(set) == 22 && cm_tensors_find(set, "backbone.norm_f.weight"));
        cm_tensors_close(set);
    }
    snprintf(fx, sizeof fx, "%s/models/orig_padded", fixtures);
    CHECK_MSG(cm_tensors_open_dir(fx, &set, &err) == 0, "%s", err.msg);
    if (set) {
        CHECK(cm_tensors_find(set, "backbone.embedding.weight") != NULL);
        cm_tensors_close(set);
    }
}

/* ---- corruption sweep ----------------------------------------------------- */

/* Every byte of a small good file, replaced by a few values: each result
 * loads or fails cleanly with a message naming the buffer. */
static void test_corruption(void) {
    cm_tensor_out t[4];
    sample_tensors(t);
    cmamba_error err;
    const char *path = tmp_path("sweep.safetensors");
    CHECK(cm_safetensors_write(path, t, 3, NULL, 0, &err) == 0);
    char *buf;
    size_t len, loaded = 0, tried = 0;
    if (cm_read_file(path, 1 << 20, &buf, &len, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    static const unsigned char subst[] = {0x00, 0x01, 0xff, '"', '{', ']', ',', '-', '9', 'e'};
    for (size_t i = 0; i < len; i++) {
        for (size_t k = 0; k < sizeof subst; k++) {
            char saved = buf[i];
            buf[i] = (char)subst[k];
            cm_tensor_set *set = NULL;
            err.msg[0] = 0;
            if (cm_safetensors_parse("mem", buf, len, &set, &err) == 0) {
                loaded++;
                cm_tensors_close(set);
            } else {
                CHECK_MSG(!strncmp(err.msg, "mem: ", 5) && !set, "byte %zu: '%s'", i, err.msg);
            }
            tried++;
            buf[i] = saved;
        }
    }
    fprintf(stderr, "corrupted files: %zu of %zu still load\n", loaded, tried);
    free(buf);
}

int main(void) {
    snprintf(tmp, sizeof tmp, "%s", test_env("CMAMBA_TMP", "test-tmp"));
    make_dir(tmp);
    strncat(tmp, "/safetensors", sizeof tmp - strlen(tmp) - 1);
    make_dir(tmp);
    test_round_trip();
    test_malformed();
    test_dirs();
    test_corruption();
    return test_summary();
}
