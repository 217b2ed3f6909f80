/* config.json of either checkpoint layout (SPEC.md "Checkpoint layouts"). */
#ifndef CM_CONFIG_H
#define CM_CONFIG_H

#include <stddef.h>

#include "cmamba.h"

int cm_config_load(const char *path, cmamba_config *cfg, cmamba_error *err);
/* Parses JSON text; path is only used in error messages. */
int cm_config_parse(const char *path, const char *json, size_t len, cmamba_config *cfg,
                    cmamba_error *err);
/* Writes cfg as a Hugging Face config.json (atomic). */
int cm_config_write_hf(const char *path, const cmamba_config *cfg, cmamba_error *err);

#endif
