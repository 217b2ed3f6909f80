/* config.json in either checkpoint layout (SPEC.md "Checkpoint layouts"):
 * Hugging Face's MambaConfig (hidden_size, num_hidden_layers, ...) or the
 * original state-spaces/mamba one (d_model, n_layer, ssm_cfg, ...), told
 * apart by the key d_model. Defaults are those of the two reference
 * implementations; every size is bounded so later arithmetic cannot
 * overflow and a hostile file cannot ask for absurd allocations. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "io/config.h"

#define MAX_CONFIG_BYTES (4u << 20)
#define MAX_D_MODEL 65536
#define MAX_LAYERS 4096
#define MAX_VOCAB 16777216
#define MAX_D_STATE 4096
#define MAX_D_CONV 256
#define MAX_D_INNER 262144
#define MAX_EXPAND 4096 /* MAX_EXPAND * MAX_D_MODEL fits an int; d_inner is checked after */

/* One JSON object being read (NULL reads as empty): its file, and
 * "ssm_cfg." for the nested one. */
typedef struct {
    const char *path, *prefix;
    const cJSON *obj;
    cmamba_error *err;
} reader;

/* A short rendering of a value for error messages. */
static void describe(const cJSON *v, char *buf, size_t cap) {
    char *text = cJSON_PrintUnformatted(v);
    if (!text) {
        snprintf(buf, cap, "?");
        return;
    }
    snprintf(buf, cap, "%.40s%s", text, strlen(text) > 40 ? "..." : "");
    cJSON_free(text);
}

/* The value of key, or NULL when it is absent or null (null means "use the
 * default", as it does for Python's config classes). A key given twice is
 * an error, since JSON readers disagree on which copy wins. */
static int lookup(const reader *r, const char *key, const cJSON **out) {
    *out = NULL;
    const cJSON *found = NULL;
    for (const cJSON *c = r->obj ? r->obj->child : NULL; c; c = c->next) {
        if (strcmp(c->string, key)) continue;
        if (found) return cm_fail(r->err, "%s: key '%s%s' appears twice", r->path, r->prefix, key);
        found = c;
    }
    if (found && !cJSON_IsNull(found)) *out = found;
    return 0;
}

static int bad_value(const reader *r, const char *key, const char *want, const cJSON *v) {
    char found[64];
    describe(v, found, sizeof found);
    return cm_fail(r->err, "%s: key '%s%s' must be %s (found %s)", r->path, r->prefix, key, want,
                   found);
}

/* An integer in [lo, hi]; def when absent, or an error if required. */
static int get_int(const reader *r, const char *key, int required, int def, int lo, int hi,
                   int *out) {
    const cJSON *v;
    if (lookup(r, key, &v)) return -1;
    if (!v) {
        if (required)
            return cm_fail(r->err, "%s: missing required key '%s%s'", r->path, r->prefix, key);
        *out = def;
        return 0;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= lo && d <= hi) || d != (double)(int)d) {
        char want[64];
        if (lo == 1)
            snprintf(want, sizeof want, "a positive integer, at most %d", hi);
        else
            snprintf(want, sizeof want, "an integer from %d to %d", lo, hi);
        return bad_value(r, key, want, v);
    }
    *out = (int)d;
    return 0;
}

static int get_bool(const reader *r, const char *key, int def, int *out) {
    const cJSON *v;
    if (lookup(r, key, &v)) return -1;
    if (!v)
        *out = def;
    else if (cJSON_IsBool(v))
        *out = cJSON_IsTrue(v);
    else
        return bad_value(r, key, "true or false", v);
    return 0;
}

/* The norm epsilon: a number strictly between 0 and 1. */
static int get_eps(const reader *r, const char *key, float *out) {
    const cJSON *v;
    if (lookup(r, key, &v)) return -1;
    double d = v ? (cJSON_IsNumber(v) ? v->valuedouble : NAN) : 1e-5;
    if (!(d > 0 && d < 1) || (float)d <= 0)
        return bad_value(r, key, "a number greater than 0 and less than 1", v);
    *out = (float)d;
    return 0;
}

/* time_step_rank / dt_rank: "auto" (0 here, resolved later) or an integer. */
static int get_rank(const reader *r, const char *key, int *out) {
    const cJSON *v;
    if (lookup(r, key, &v)) return -1;
    if (!v || (cJSON_IsString(v) && !strcmp(v->valuestring, "auto"))) {
        *out = 0;
        return 0;
    }
    if (cJSON_IsString(v)) return bad_value(r, key, "\"auto\" or a positive integer", v);
    return get_int(r, key, 1, 0, 1, MAX_D_INNER, out);
}

/* A string key that, when present, must equal want. */
static int get_fixed_string(const reader *r, const char *key, const char *want,
                            const char **found) {
    const cJSON *v;
    *found = NULL;
    if (lookup(r, key, &v)) return -1;
    if (v && !cJSON_IsString(v)) return bad_value(r, key, "a string", v);
    if (v && strcmp(v->valuestring, want)) *found = v->valuestring;
    return 0;
}

/* The sizes both layouts share the rules of: d_inner (given, or
 * expand * d_model) and the "auto" time-step rank, ceil(d_model / 16). */
static int finish(const reader *r, cmamba_config *c, const char *rank_key) {
    /* cmamba's own key: S4D ablation models are written with "ssm_layer": "s4d" */
    const reader top = {r->path, "", r->obj, r->err};
    const char *ssm;
    if (get_fixed_string(&top, "ssm_layer", "s6", &ssm)) return -1;
    if (ssm && strcmp(ssm, "s4d"))
        return cm_fail(r->err, "%s: ssm_layer '%.40s' is not one of s6, s4d", r->path, ssm);
    c->ssm = ssm ? CMAMBA_SSM_S4D : CMAMBA_SSM_S6;
    if (c->d_inner == 0) {
        long d_inner = (long)c->expand * c->d_model;
        if (d_inner > MAX_D_INNER)
            return cm_fail(r->err, "%s: the inner width expand x d_model = %ld exceeds %d", r->path,
                           d_inner, MAX_D_INNER);
        c->d_inner = (int)d_inner;
    }
    if (c->dt_rank == 0) c->dt_rank = (c->d_model + 15) / 16;
    if (c->dt_rank > c->d_inner)
        return cm_fail(r->err, "%s: key '%s' (%d) exceeds the inner width %d", r->path, rank_key,
                       c->dt_rank, c->d_inner);
    return 0;
}

static int parse_hf(const reader *r, cmamba_config *c) {
    const char *other;
    if (get_fixed_string(r, "model_type", "mamba", &other)) return -1;
    if (other)
        return cm_fail(r->err, "%s: model_type '%.40s' is not supported (only Mamba-1, 'mamba')",
                       r->path, other);
    c->layout = CMAMBA_LAYOUT_HF;
    if (get_int(r, "hidden_size", 1, 0, 1, MAX_D_MODEL, &c->d_model) ||
        get_int(r, "num_hidden_layers", 1, 0, 1, MAX_LAYERS, &c->n_layer) ||
        get_int(r, "vocab_size", 1, 0, 1, MAX_VOCAB, &c->vocab_size) ||
        get_int(r, "state_size", 0, 16, 1, MAX_D_STATE, &c->d_state) ||
        get_int(r, "expand", 0, 2, 1, MAX_EXPAND, &c->expand) ||
        get_int(r, "conv_kernel", 0, 4, 1, MAX_D_CONV, &c->d_conv) ||
        get_rank(r, "time_step_rank", &c->dt_rank) ||
        /* transformers lets an explicit intermediate_size override expand */
        get_int(r, "intermediate_size", 0, 0, 1, MAX_D_INNER, &c->d_inner) ||
        get_eps(r, "layer_norm_epsilon", &c->eps) || get_bool(r, "use_bias", 0, &c->use_bias) ||
        get_bool(r, "use_conv_bias", 1, &c->use_conv_bias) ||
        get_bool(r, "tie_word_embeddings", 1, &c->tie_embeddings))
        return -1;
    return finish(r, c, "time_step_rank");
}

static int parse_original(const reader *r, cmamba_config *c) {
    c->layout = CMAMBA_LAYOUT_ORIGINAL;
    int pad, rms_norm, d_intermediate;
    const cJSON *ssm, *attn;
    if (get_int(r, "d_model", 1, 0, 1, MAX_D_MODEL, &c->d_model) ||
        get_int(r, "n_layer", 1, 0, 1, MAX_LAYERS, &c->n_layer) ||
        get_int(r, "vocab_size", 1, 0, 1, MAX_VOCAB, &c->vocab_size) ||
        get_int(r, "pad_vocab_size_multiple", 0, 8, 1, MAX_VOCAB, &pad) ||
        get_bool(r, "rms_norm", 1, &rms_norm) || get_eps(r, "norm_epsilon", &c->eps) ||
        get_bool(r, "tie_embeddings", 1, &c->tie_embeddings) ||
        get_int(r, "d_intermediate", 0, 0, 0, MAX_D_INNER, &d_intermediate) ||
        lookup(r, "attn_layer_idx", &attn) || lookup(r, "ssm_cfg", &ssm))
        return -1;
    if (!rms_norm)
        return cm_fail(r->err, "%s: rms_norm is false: LayerNorm models are not supported",
                       r->path);
    if (d_intermediate)
        return cm_fail(r->err, "%s: d_intermediate is %d: models with MLP layers are not supported",
                       r->path, d_intermediate);
    if (attn && !(cJSON_IsArray(attn) && cJSON_GetArraySize(attn) == 0))
        return bad_value(r, "attn_layer_idx", "empty (hybrid attention models are not supported)",
                         attn);
    /* mamba_ssm pads the embedding to a multiple of pad_vocab_size_multiple */
    long vocab = ((long)c->vocab_size + pad - 1) / pad * pad;
    if (vocab > MAX_VOCAB)
        return cm_fail(r->err, "%s: vocab_size padded to a multiple of %d is %ld, more than %d",
                       r->path, pad, vocab, MAX_VOCAB);
    c->vocab_size = (int)vocab;

    if (ssm && !cJSON_IsObject(ssm)) return bad_value(r, "ssm_cfg", "an object", ssm);
    const reader s = {r->path, "ssm_cfg.", ssm, r->err};
    const char *layer;
    if (get_fixed_string(&s, "layer", "Mamba1", &layer)) return -1;
    if (layer)
        return cm_fail(r->err, "%s: ssm_cfg.layer '%.40s' is not supported (only Mamba1)", r->path,
                       layer);
    if (get_int(&s, "d_state", 0, 16, 1, MAX_D_STATE, &c->d_state) ||
        get_int(&s, "d_conv", 0, 4, 1, MAX_D_CONV, &c->d_conv) ||
        get_int(&s, "expand", 0, 2, 1, MAX_EXPAND, &c->expand) ||
        get_rank(&s, "dt_rank", &c->dt_rank) || get_bool(&s, "conv_bias", 1, &c->use_conv_bias) ||
        get_bool(&s, "bias", 0, &c->use_bias))
        return -1;
    return finish(r, c, "ssm_cfg.dt_rank");
}

int cm_config_parse(const char *path, const char *json, size_t len, cmamba_config *cfg,
                    cmamba_error *err) {
    const char *end = json;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    size_t at = end >= json && end <= json + len ? (size_t)(end - json) : len;
    while (root && at < len &&
           (json[at] == ' ' || json[at] == '\t' || json[at] == '\r' || json[at] == '\n'))
        at++;
    if (!root || at < len) {
        cJSON_Delete(root);
        return cm_fail(err, "%s: not valid JSON (error at byte %zu)", path, at);
    }
    int rc;
    if (!cJSON_IsObject(root)) {
        rc = cm_fail(err, "%s: not a JSON object", path);
    } else {
        cmamba_config c = {0};
        const reader r = {path, "", root, err};
        rc = cJSON_GetObjectItemCaseSensitive(root, "d_model") ? parse_original(&r, &c)
                                                               : parse_hf(&r, &c);
        if (rc == 0) *cfg = c;
    }
    cJSON_Delete(root);
    return rc;
}

int cm_config_load(const char *path, cmamba_config *cfg, cmamba_error *err) {
    char *text;
    size_t len;
    if (cm_read_file(path, MAX_CONFIG_BYTES, &text, &len, err)) return -1;
    int rc = cm_config_parse(path, text, len, cfg, err);
    free(text);
    return rc;
}

/* The shortest decimal that reads back as f, so 1e-5f is written 1e-05,
 * not 9.99999974737875e-06. */
static void shortest_decimal(float f, char *buf, size_t cap) {
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, cap, "%.*g", digits, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
}

/* A flat object the way Python's json.dump(indent=2) lays it out (and so
 * as a user, or sed, expects to find it): one "key": value per line. */
static char *print_flat(const cJSON *o) {
    size_t cap = 0, len = 0;
    char *out = NULL;
    for (const cJSON *c = o->child; c; c = c->next) {
        char *v = cJSON_PrintUnformatted(c);
        size_t need = len + strlen(c->string) + (v ? strlen(v) : 0) + 16; /* room for "\n}\n" too */
        char *grown = v && need > cap ? realloc(out, 2 * need) : out;
        if (!v || !grown) {
            cJSON_free(v);
            free(out);
            return NULL;
        }
        if (need > cap) cap = 2 * need;
        out = grown;
        len += (size_t)sprintf(out + len, "%s\n  \"%s\": %s", len ? "," : "{", c->string, v);
        cJSON_free(v);
    }
    if (out) strcpy(out + len, "\n}\n");
    return out;
}

int cm_config_write_hf(const char *path, const cmamba_config *c, cmamba_error *err) {
    /* JSON has no NaN: cJSON would write null, which reads back as the default */
    if (!(c->eps > 0 && c->eps < 1))
        return cm_fail(err, "%s: epsilon %g is not between 0 and 1", path, (double)c->eps);
    cJSON *o = cJSON_CreateObject(), *arch = cJSON_AddArrayToObject(o, "architectures");
    if (!arch) {
        cJSON_Delete(o);
        return cm_fail(err, "%s: out of memory", path);
    }
    cJSON_AddItemToArray(arch, cJSON_CreateString("MambaForCausalLM"));
    cJSON_AddStringToObject(o, "model_type", "mamba");
    if (c->ssm == CMAMBA_SSM_S4D) cJSON_AddStringToObject(o, "ssm_layer", "s4d");
    cJSON_AddNumberToObject(o, "hidden_size", c->d_model);
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layer);
    cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(o, "state_size", c->d_state);
    cJSON_AddNumberToObject(o, "expand", c->expand);
    cJSON_AddNumberToObject(o, "conv_kernel", c->d_conv);
    cJSON_AddNumberToObject(o, "time_step_rank", c->dt_rank);
    cJSON_AddNumberToObject(o, "intermediate_size", c->d_inner);
    /* raw numbers: transformers checks float fields are floats, and cJSON writes 1.0 as 1 */
    char eps[32];
    shortest_decimal(c->eps, eps, sizeof eps);
    cJSON_AddRawToObject(o, "layer_norm_epsilon", eps);
    cJSON_AddBoolToObject(o, "use_bias", c->use_bias != 0);
    cJSON_AddBoolToObject(o, "use_conv_bias", c->use_conv_bias != 0);
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_embeddings != 0);
    /* the rest of transformers' MambaConfig, at its defaults */
    cJSON_AddBoolToObject(o, "residual_in_fp32", 1);
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    cJSON_AddNumberToObject(o, "initializer_range", 0.1);
    cJSON_AddBoolToObject(o, "rescale_prenorm_residual", 0);
    cJSON_AddRawToObject(o, "time_step_scale", "1.0");
    cJSON_AddNumberToObject(o, "time_step_min", 0.001);
    cJSON_AddNumberToObject(o, "time_step_max", 0.1);
    cJSON_AddStringToObject(o, "time_step_init_scheme", "random");
    cJSON_AddNumberToObject(o, "time_step_floor", 1e-4);
    cJSON_AddBoolToObject(o, "use_cache", 1);
    cJSON_AddNumberToObject(o, "pad_token_id", 0);
    cJSON_AddNumberToObject(o, "bos_token_id", 0);
    cJSON_AddNumberToObject(o, "eos_token_id", 0);
    char *text = print_flat(o);
    cJSON_Delete(o);
    if (!text) return cm_fail(err, "%s: out of memory", path);
    /* what we write must load: the same checks as on reading */
    cmamba_config back;
    size_t len = strlen(text);
    int rc = cm_config_parse(path, text, len, &back, err);
    cm_atomic_file *f;
    if (rc == 0) rc = cm_atomic_open(path, &f, err);
    if (rc == 0) {
        if (cm_atomic_write(f, text, len, err)) {
            cm_atomic_abort(f);
            rc = -1;
        } else {
            rc = cm_atomic_commit(f, err);
        }
    }
    free(text);
    return rc;
}
