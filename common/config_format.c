/*
 * config_format.c - prints the effective configuration: as cluster.conf
 * text (every key, defaults filled in, each with its description) for
 * people, and as one JSON object for scripts.
 */
#include "config_int.h"

#include <string.h>

static int
format_section(const struct config_kind *kind,
               const struct cairn_config_origin *section, struct cairn_buf *out)
{
    int rc;

    if (section->name != NULL)
        rc = cairn_buf_printf(out, "\n[%s %s]\n", kind->name, section->name);
    else
        rc = cairn_buf_printf(out, "\n[%s]\n", kind->name);
    for (size_t i = 0; i < kind->key_count && rc == CAIRN_OK; i++) {
        const struct config_key *key = &kind->keys[i];

        size_t before;

        rc = cairn_buf_printf(out, "# %s%s\n%s = ", key->doc,
                              section->key_lines[i] ? "" : " (default)",
                              key->name);
        before = out->len;
        if (rc == CAIRN_OK)
            rc = config_value_format(key, section, out);
        if (rc == CAIRN_OK && out->len == before) /* unset: no blank at end */
            out->data[--out->len] = '\0';
        if (rc == CAIRN_OK)
            rc = cairn_buf_append_str(out, "\n");
    }
    return rc;
}

int
cairn_config_format(const struct cairn_config *config, struct cairn_buf *out)
{
    int rc = cairn_buf_printf(out, "# effective configuration of %s\n",
                              config->name);

    for (size_t k = 0; k < config_kind_count && rc == CAIRN_OK; k++) {
        const struct config_kind *kind = &config_kinds[k];
        struct cairn_config_origin **sections;
        size_t count;

        if (!kind->named) {
            rc = format_section(
                kind,
                (const void *)((const char *)config + kind->config_offset),
                out);
            continue;
        }
        sections = config_named_sections(config, kind, &count);
        for (size_t i = 0; i < count && rc == CAIRN_OK; i++)
            rc = format_section(kind, sections[i], out);
    }
    return rc;
}

/* --- JSON --- */

static int
json_string(struct cairn_buf *out, const char *text)
{
    int rc = cairn_buf_append_str(out, "\"");

    for (const unsigned char *at = (const unsigned char *)text;
         *at != '\0' && rc == CAIRN_OK; at++) {
        if (*at == '"' || *at == '\\')
            rc = cairn_buf_printf(out, "\\%c", *at);
        else if (*at < 0x20)
            rc = cairn_buf_printf(out, "\\u%04x", *at);
        else
            rc = cairn_buf_append(out, at, 1);
    }
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_str(out, "\"");
    return rc;
}

/* Numbers stay numbers (bytes, milliseconds); unset strings are null. */
static int
json_value(const struct config_key *key, const void *section,
           struct cairn_buf *out)
{
    const void *field = (const char *)section + key->offset;
    const struct cairn_config_list *list = field;
    const char *text;
    int rc;

    switch (key->type) {
    case CONFIG_STRING:
    case CONFIG_PATH:
    case CONFIG_ENDPOINT:
    case CONFIG_ADDRESS:
        text = *(const char *const *)field;
        if (text == NULL)
            return cairn_buf_append_str(out, "null");
        return json_string(out,
                           (key->flags & CONFIG_SECRET) ? "********" : text);
    case CONFIG_INTEGER:
    case CONFIG_SIZE:
    case CONFIG_DURATION:
        return cairn_buf_printf(out, "%llu",
                                (unsigned long long)*(const uint64_t *)field);
    case CONFIG_BOOL:
        return cairn_buf_append_str(out,
                                    *(const bool *)field ? "true" : "false");
    case CONFIG_ENUM:
        return json_string(out, key->choices[*(const int *)field]);
    case CONFIG_MODE:
        return cairn_buf_printf(out, "\"%04llo\"",
                                (unsigned long long)*(const uint64_t *)field);
    case CONFIG_LIST:
        rc = cairn_buf_append_str(out, "[");
        for (size_t i = 0; i < list->count && rc == CAIRN_OK; i++) {
            if (i > 0)
                rc = cairn_buf_append_str(out, ",");
            if (rc == CAIRN_OK)
                rc = json_string(out, list->items[i]);
        }
        if (rc == CAIRN_OK)
            rc = cairn_buf_append_str(out, "]");
        return rc;
    }
    return CAIRN_EINVAL;
}

static int
json_section(const struct config_kind *kind,
             const struct cairn_config_origin *section, struct cairn_buf *out)
{
    int rc = cairn_buf_append_str(out, "{");

    if (rc == CAIRN_OK && section->name != NULL) {
        rc = cairn_buf_append_str(out, "\"name\":");
        if (rc == CAIRN_OK)
            rc = json_string(out, section->name);
        if (rc == CAIRN_OK)
            rc = cairn_buf_append_str(out, ",");
    }
    for (size_t i = 0; i < kind->key_count && rc == CAIRN_OK; i++) {
        const struct config_key *key = &kind->keys[i];

        /* Durations carry their unit in the name: "node_timeout_ms". */
        rc = cairn_buf_printf(out, "%s\"%s%s\":", i == 0 ? "" : ",", key->name,
                              key->type == CONFIG_DURATION ? "_ms" : "");
        if (rc == CAIRN_OK)
            rc = json_value(key, section, out);
    }
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_str(out, "}");
    return rc;
}

int
cairn_config_format_json(const struct cairn_config *config,
                         struct cairn_buf *out)
{
    int rc = cairn_buf_append_str(out, "{\"file\":");

    if (rc == CAIRN_OK)
        rc = json_string(out, config->name);
    for (size_t k = 0; k < config_kind_count && rc == CAIRN_OK; k++) {
        const struct config_kind *kind = &config_kinds[k];
        struct cairn_config_origin **sections;
        size_t count;

        if (!kind->named) {
            rc = cairn_buf_printf(out, ",\"%s\":", kind->name);
            if (rc == CAIRN_OK)
                rc = json_section(
                    kind,
                    (const void *)((const char *)config + kind->config_offset),
                    out);
            continue;
        }
        /* Named kinds are arrays under the plural: "nodes": [...]. */
        rc = cairn_buf_printf(out, ",\"%ss\":[", kind->name);
        sections = config_named_sections(config, kind, &count);
        for (size_t i = 0; i < count && rc == CAIRN_OK; i++) {
            if (i > 0)
                rc = cairn_buf_append_str(out, ",");
            if (rc == CAIRN_OK)
                rc = json_section(kind, sections[i], out);
        }
        if (rc == CAIRN_OK)
            rc = cairn_buf_append_str(out, "]");
    }
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_str(out, "}\n");
    return rc;
}
