/* config.json in both layouts: defaults, vocabulary padding, every required
 * key missing in turn, wrong types, absurd sizes, bad JSON, unsupported
 * models, and a write_hf → load round trip. */
#include <errno.h>
#include <sys/stat.h>

#include "common.h"
#include "io/config.h"
#include "test.h"

#define PATH "some/dir/config.json"
#define HF_MIN "\"hidden_size\": 40, \"num_hidden_layers\": 2, \"vocab_size\": 203"
#define ORIG_MIN "\"d_model\": 32, \"n_layer\": 3, \"vocab_size\": 1001"

static cmamba_config parse_ok(const char *json) {
    cmamba_config c = {0};
    cmamba_error err = {{0}};
    CHECK_MSG(cm_config_parse(PATH, json, strlen(json), &c, &err) == 0, "%s: %s", json, err.msg);
    return c;
}

/* Parsing must fail with one line naming the file and holding needle. */
static void parse_fail(const char *json, const char *needle) {
    cmamba_config c = {0};
    cmamba_error err = {{0}};
    int rc = cm_config_parse(PATH, json, strlen(json), &c, &err);
    CHECK_MSG(rc == -1, "%s: accepted", json);
    CHECK_MSG(!strncmp(err.msg, PATH ": ", strlen(PATH) + 2) && strstr(err.msg, needle),
              "%s: '%s' lacks '%s'", json, err.msg, needle);
}

static void test_hf(void) {
    cmamba_config c = parse_ok("{" HF_MIN "}");
    CHECK(c.layout == CMAMBA_LAYOUT_HF && c.d_model == 40 && c.n_layer == 2 && c.vocab_size == 203);
    CHECK(c.d_state == 16 && c.expand == 2 && c.d_conv == 4 && c.d_inner == 80);
    CHECK(c.dt_rank == 3); /* ceil(40 / 16) */
    CHECK(c.eps == 1e-5f && !c.use_bias && c.use_conv_bias && c.tie_embeddings);

    c = parse_ok("{" HF_MIN ", \"model_type\": \"mamba\", \"state_size\": 8, \"expand\": 3, "
                 "\"conv_kernel\": 2, \"time_step_rank\": 7, \"layer_norm_epsilon\": 1e-6, "
                 "\"use_bias\": true, \"use_conv_bias\": false, \"tie_word_embeddings\": false, "
                 "\"unknown_key\": [1, {\"x\": null}], \"pad_token_id\": null}");
    CHECK(c.d_state == 8 && c.expand == 3 && c.d_conv == 2 && c.dt_rank == 7 && c.d_inner == 120);
    CHECK(c.eps == 1e-6f && c.use_bias && !c.use_conv_bias && !c.tie_embeddings);
    /* as in transformers, an explicit intermediate_size wins over expand */
    c = parse_ok("{" HF_MIN ", \"time_step_rank\": \"auto\", \"intermediate_size\": 100}");
    CHECK(c.d_inner == 100 && c.expand == 2 && c.dt_rank == 3);
    c = parse_ok("{\"hidden_size\": 768, \"num_hidden_layers\": 24, \"vocab_size\": 50280}");
    CHECK(c.dt_rank == 48 && c.d_inner == 1536);

    char path[1100];
    snprintf(path, sizeof path, "%s/models/hf_sharded_bf16/config.json",
             test_env("CMAMBA_FIXTURES", "tests/fixtures"));
    cmamba_error err;
    CHECK_MSG(cm_config_load(path, &c, &err) == 0, "%s", err.msg);
    CHECK(c.d_model == 40 && c.d_state == 12 && c.dt_rank == 3 && c.vocab_size == 203);
}

static void test_original(void) {
    cmamba_config c = parse_ok("{" ORIG_MIN "}");
    CHECK(c.layout == CMAMBA_LAYOUT_ORIGINAL && c.d_model == 32 && c.n_layer == 3);
    CHECK(c.vocab_size == 1008); /* padded to a multiple of 8 */
    CHECK(c.d_state == 16 && c.d_conv == 4 && c.expand == 2 && c.d_inner == 64 && c.dt_rank == 2);
    CHECK(c.eps == 1e-5f && !c.use_bias && c.use_conv_bias && c.tie_embeddings);

    c = parse_ok("{\"d_model\": 768, \"n_layer\": 24, \"vocab_size\": 50277, \"ssm_cfg\": {}, "
                 "\"rms_norm\": true, \"residual_in_fp32\": true, \"fused_add_norm\": true, "
                 "\"pad_vocab_size_multiple\": 8, \"tie_embeddings\": true}");
    CHECK(c.vocab_size == 50280 && c.d_inner == 1536 && c.dt_rank == 48);
    c = parse_ok(
        "{" ORIG_MIN ", \"pad_vocab_size_multiple\": 1, \"norm_epsilon\": 0.001, "
        "\"tie_embeddings\": false, \"d_intermediate\": 0, \"attn_layer_idx\": [], "
        "\"ssm_cfg\": {\"layer\": \"Mamba1\", \"d_state\": 4, \"d_conv\": 3, \"expand\": 3, "
        "\"dt_rank\": 5, \"conv_bias\": false, \"bias\": true, \"dt_min\": 0.001}}");
    CHECK(c.vocab_size == 1001 && c.eps == 1e-3f && !c.tie_embeddings);
    CHECK(c.d_state == 4 && c.d_conv == 3 && c.expand == 3 && c.d_inner == 96 && c.dt_rank == 5);
    CHECK(!c.use_conv_bias && c.use_bias);
    c = parse_ok("{" ORIG_MIN ", \"ssm_cfg\": null, \"pad_vocab_size_multiple\": 16}");
    CHECK(c.vocab_size == 1008 && c.d_state == 16);
    c = parse_ok("{" ORIG_MIN ", \"ssm_cfg\": {\"dt_rank\": \"auto\"}}");
    CHECK(c.dt_rank == 2);

    char path[1100];
    snprintf(path, sizeof path, "%s/models/orig_padded/config.json",
             test_env("CMAMBA_FIXTURES", "tests/fixtures"));
    cmamba_error err;
    CHECK_MSG(cm_config_load(path, &c, &err) == 0, "%s", err.msg);
    CHECK(c.layout == CMAMBA_LAYOUT_ORIGINAL && c.vocab_size == 1008);
}

static void test_errors(void) {
    /* each required key missing in turn */
    parse_fail("{\"num_hidden_layers\": 2, \"vocab_size\": 203}",
               "missing required key 'hidden_size'");
    parse_fail("{\"hidden_size\": 40, \"vocab_size\": 203}",
               "missing required key 'num_hidden_layers'");
    parse_fail("{\"hidden_size\": 40, \"num_hidden_layers\": 2}",
               "missing required key 'vocab_size'");
    parse_fail("{\"d_model\": null, \"n_layer\": 3, \"vocab_size\": 1001}",
               "missing required key 'd_model'");
    parse_fail("{\"d_model\": 32, \"vocab_size\": 1001}", "missing required key 'n_layer'");
    parse_fail("{\"d_model\": 32, \"n_layer\": 3}", "missing required key 'vocab_size'");

    /* wrong types */
    parse_fail("{\"hidden_size\": \"abc\", \"num_hidden_layers\": 2, \"vocab_size\": 203}",
               "key 'hidden_size' must be a positive integer, at most 65536 (found \"abc\")");
    parse_fail("{" HF_MIN ", \"state_size\": 1.5}", "key 'state_size' must be a positive integer");
    parse_fail("{" HF_MIN ", \"use_bias\": \"yes\"}",
               "key 'use_bias' must be true or false (found \"yes\")");
    parse_fail("{" HF_MIN ", \"tie_word_embeddings\": 1}",
               "key 'tie_word_embeddings' must be true or false");
    parse_fail("{" HF_MIN ", \"layer_norm_epsilon\": \"small\"}",
               "key 'layer_norm_epsilon' must be a number");
    parse_fail("{" HF_MIN ", \"time_step_rank\": \"big\"}",
               "key 'time_step_rank' must be \"auto\" or a positive integer (found \"big\")");
    parse_fail("{" HF_MIN ", \"time_step_rank\": [1]}",
               "key 'time_step_rank' must be a positive integer");
    parse_fail("{" HF_MIN ", \"model_type\": 5}", "key 'model_type' must be a string");
    parse_fail("{" ORIG_MIN ", \"ssm_cfg\": 3}", "key 'ssm_cfg' must be an object (found 3)");
    parse_fail("{" ORIG_MIN ", \"ssm_cfg\": {\"d_state\": \"16\"}}",
               "key 'ssm_cfg.d_state' must be");
    parse_fail("{" ORIG_MIN ", \"rms_norm\": \"yes\"}", "key 'rms_norm' must be true or false");

    /* absurd values */
    parse_fail(
        "{\"hidden_size\": 40, \"num_hidden_layers\": 1000000000000, \"vocab_size\": 203}",
        "key 'num_hidden_layers' must be a positive integer, at most 4096 (found 1000000000000)");
    parse_fail("{\"hidden_size\": 0, \"num_hidden_layers\": 2, \"vocab_size\": 203}",
               "'hidden_size'");
    parse_fail("{\"hidden_size\": -40, \"num_hidden_layers\": 2, \"vocab_size\": 203}",
               "'hidden_size'");
    parse_fail("{\"hidden_size\": 65537, \"num_hidden_layers\": 2, \"vocab_size\": 203}",
               "'hidden_size'");
    parse_fail("{\"hidden_size\": 40, \"num_hidden_layers\": 2, \"vocab_size\": 2147483648}",
               "'vocab_size'");
    parse_fail("{" HF_MIN ", \"state_size\": 1e300}", "'state_size'");
    parse_fail("{" HF_MIN ", \"conv_kernel\": 0}", "'conv_kernel'");
    parse_fail("{" HF_MIN ", \"conv_kernel\": 257}", "'conv_kernel'");
    parse_fail("{" HF_MIN ", \"layer_norm_epsilon\": 0}",
               "'layer_norm_epsilon' must be a number greater than 0");
    parse_fail("{" HF_MIN ", \"layer_norm_epsilon\": 1}", "'layer_norm_epsilon'");
    parse_fail("{" HF_MIN ", \"layer_norm_epsilon\": 1e-60}", "'layer_norm_epsilon'");
    parse_fail("{" HF_MIN ", \"time_step_rank\": 81}",
               "key 'time_step_rank' (81) exceeds the inner width 80");
    parse_fail("{" HF_MIN ", \"intermediate_size\": 300000}", "'intermediate_size'");
    parse_fail(
        "{\"hidden_size\": 65536, \"num_hidden_layers\": 2, \"vocab_size\": 203, \"expand\": 8}",
        "the inner width expand x d_model = 524288 exceeds 262144");
    parse_fail("{" ORIG_MIN ", \"pad_vocab_size_multiple\": 0}", "'pad_vocab_size_multiple'");
    parse_fail("{\"d_model\": 32, \"n_layer\": 3, \"vocab_size\": 16777215, "
               "\"pad_vocab_size_multiple\": 10}",
               "vocab_size padded to a multiple of 10 is 16777220");
    parse_fail("{" ORIG_MIN ", \"ssm_cfg\": {\"dt_rank\": 65}}",
               "key 'ssm_cfg.dt_rank' (65) exceeds");

    /* bad JSON */
    parse_fail("{\"hidden_size\": 16,", "not valid JSON");
    parse_fail("{" HF_MIN "} {}", "not valid JSON");
    parse_fail("", "not valid JSON");
    parse_fail("[1, 2]", "not a JSON object");
    parse_fail("{" HF_MIN ", \"hidden_size\": 41}", "key 'hidden_size' appears twice");
    parse_fail("{" ORIG_MIN ", \"ssm_cfg\": {\"d_conv\": 2, \"d_conv\": 3}}",
               "key 'ssm_cfg.d_conv' appears twice");

    /* models that are not plain Mamba-1 */
    parse_fail("{" HF_MIN ", \"model_type\": \"mamba2\"}", "model_type 'mamba2' is not supported");
    parse_fail("{" ORIG_MIN ", \"ssm_cfg\": {\"layer\": \"Mamba2\"}}",
               "ssm_cfg.layer 'Mamba2' is not supported");
    parse_fail("{" ORIG_MIN ", \"rms_norm\": false}", "LayerNorm models are not supported");
    parse_fail("{" ORIG_MIN ", \"d_intermediate\": 128}", "MLP layers are not supported");
    parse_fail("{" ORIG_MIN ", \"attn_layer_idx\": [1]}",
               "hybrid attention models are not supported");

    cmamba_config c;
    cmamba_error err;
    CHECK(cm_config_load("/nonexistent/config.json", &c, &err) == -1 &&
          strstr(err.msg, "/nonexistent/config.json: cannot open"));
}

static void test_write_hf(const char *tmp) {
    char path[1100];
    snprintf(path, sizeof path, "%s/config.json", tmp);
    const char *inputs[] = {
        "{" HF_MIN
        ", \"layer_norm_epsilon\": 1e-6, \"use_bias\": true, \"intermediate_size\": 100}",
        "{" ORIG_MIN
        ", \"tie_embeddings\": false, \"ssm_cfg\": {\"conv_bias\": false, \"d_conv\": 1}}",
    };
    for (int i = 0; i < 2; i++) {
        cmamba_config c = parse_ok(inputs[i]), back = {0};
        cmamba_error err = {{0}};
        CHECK_MSG(cm_config_write_hf(path, &c, &err) == 0, "%s", err.msg);
        CHECK_MSG(cm_config_load(path, &back, &err) == 0, "%s", err.msg);
        c.layout = CMAMBA_LAYOUT_HF; /* written as HF, whatever it came from */
        CHECK_MSG(memcmp(&c, &back, sizeof c) == 0, "%s: changed in the round trip", inputs[i]);
        char *text;
        CHECK(cm_read_file(path, 1 << 20, &text, NULL, &err) == 0);
        CHECK(strstr(text, "\"MambaForCausalLM\"") && strstr(text, "\"model_type\": \"mamba\"") &&
              strstr(text, "\"residual_in_fp32\": true"));
        CHECK(i || strstr(text, "\"layer_norm_epsilon\": 1e-06,"));
        free(text);
    }
    /* a config we would refuse to read is not written */
    cmamba_config c = parse_ok("{" HF_MIN "}");
    c.d_model = 0;
    cmamba_error err;
    remove(path);
    CHECK(cm_config_write_hf(path, &c, &err) == -1 && strstr(err.msg, "'hidden_size'"));
    c = parse_ok("{" HF_MIN "}");
    c.eps = NAN;
    CHECK(cm_config_write_hf(path, &c, &err) == -1 && strstr(err.msg, "epsilon"));
    struct stat st;
    CHECK(stat(path, &st) != 0);
}

int main(void) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", test_env("CMAMBA_TMP", "test-tmp"));
    mkdir(tmp, 0755);
    strncat(tmp, "/config", sizeof tmp - strlen(tmp) - 1);
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "cannot create %s\n", tmp);
        return 1;
    }
    test_hf();
    test_original();
    test_errors();
    test_write_hf(tmp);
    return test_summary();
}
