/*
 * config.c - the cluster.conf parser: splits the text into sections and
 * keys, applies defaults, checks the references between sections and
 * resolves paths. The key tables and value types live in config_keys.c,
 * the printers in config_format.c. Only cairn_config_load() does I/O.
 */
#include "config_int.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char cairn_config_default_name[] = "(built-in cluster.example.conf)";

/* Where the parser is; the current section may be NULL before the first. */
struct parser {
    struct cairn_config *config;
    struct cairn_config_error *error;
    const struct config_kind *kind;
    struct cairn_config_origin *section;
    unsigned line;
    char *line_copy; /* CAIRN_CONFIG_MAX_LINE + 1 bytes, NUL-terminated */
};

static int fail(struct parser *parser, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(struct parser *parser, unsigned line, const char *fmt, ...)
{
    struct cairn_config_error *error = parser->error;
    va_list ap;

    if (error == NULL)
        return CAIRN_ECONFIG;
    snprintf(error->file, sizeof(error->file), "%s", parser->config->name);
    error->line = line;
    va_start(ap, fmt);
    vsnprintf(error->message, sizeof(error->message), fmt, ap);
    va_end(ap);
    return CAIRN_ECONFIG;
}

static struct cairn_config_origin *
find_named(const struct cairn_config *config, const struct config_kind *kind,
           const char *name)
{
    size_t count;
    struct cairn_config_origin **sections =
        config_named_sections(config, kind, &count);

    for (size_t i = 0; i < count; i++) {
        if (strcmp(sections[i]->name, name) == 0)
            return sections[i];
    }
    return NULL;
}

static int
apply_defaults(struct parser *parser, const struct config_kind *kind,
               struct cairn_config_origin *section)
{
    char why[256];
    int rc;

    for (size_t i = 0; i < kind->key_count; i++) {
        const struct config_key *key = &kind->keys[i];

        config_value_clear(key, section);
        if (key->default_value == NULL)
            continue;
        rc = config_value_parse(key, key->default_value, section, why,
                                sizeof(why));
        if (rc == CAIRN_ECONFIG) /* a broken table: a bug, not bad input */
            return fail(parser, 0, "built-in default of '%s': %s", key->name,
                        why);
        if (rc < 0)
            return rc;
    }
    return CAIRN_OK;
}

static void
section_release(const struct config_kind *kind,
                struct cairn_config_origin *section)
{
    for (size_t i = 0; i < kind->key_count; i++)
        config_value_clear(&kind->keys[i], section);
    free(section->name);
    section->name = NULL;
}

/* Adds a new [kind NAME] section with its defaults. */
static int
add_named(struct parser *parser, const struct config_kind *kind,
          const char *name)
{
    struct cairn_config *config = parser->config;
    size_t *count = (size_t *)((char *)config + kind->count_offset);
    struct cairn_config_origin ***array =
        (struct cairn_config_origin ***)((char *)config + kind->array_offset);
    struct cairn_config_origin *section = NULL, **grown;
    int rc;

    if (*count >= kind->max_count)
        return fail(parser, parser->line, "too many [%s] sections (most %zu)",
                    kind->name, kind->max_count);
    grown = realloc(*array, (*count + 1) * sizeof(*grown));
    if (grown == NULL)
        return CAIRN_ENOMEM;
    *array = grown;
    if ((section = calloc(1, kind->struct_size)) == NULL)
        return CAIRN_ENOMEM;
    grown[(*count)++] = section;
    section->line = parser->line;
    if ((section->name = strdup(name)) == NULL)
        return CAIRN_ENOMEM;
    if ((rc = apply_defaults(parser, kind, section)) < 0)
        return rc;
    parser->kind = kind;
    parser->section = section;
    return CAIRN_OK;
}

static char *
trim(char *text)
{
    size_t len;

    text += strspn(text, " \t");
    len = strlen(text);
    while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\t'))
        text[--len] = '\0';
    return text;
}

/* "[kind]" or "[kind NAME]"; text is the trimmed line. */
static int
parse_header(struct parser *parser, char *text)
{
    size_t len = strlen(text);
    const struct config_kind *kind;
    struct cairn_config_origin *seen;
    char *name;

    if (text[len - 1] != ']')
        return fail(parser, parser->line, "section header without ']'");
    text[len - 1] = '\0';
    text = trim(text + 1);
    name = text + strcspn(text, " \t");
    if (*name != '\0')
        *name++ = '\0';
    name = trim(name); /* "[node a b]" keeps its blank: not a valid name */
    if ((kind = config_kind_find(text)) == NULL)
        return fail(parser, parser->line, "unknown section [%s]", text);
    if (!kind->named && *name != '\0')
        return fail(parser, parser->line, "section [%s] takes no name",
                    kind->name);
    if (!kind->named) {
        seen = config_single_section(parser->config, kind);
        if (seen->line != 0)
            return fail(parser, parser->line,
                        "duplicate section [%s] (first on line %u)", kind->name,
                        seen->line);
        seen->line = parser->line;
        parser->kind = kind;
        parser->section = seen;
        return CAIRN_OK;
    }
    if (*name == '\0')
        return fail(parser, parser->line,
                    "section [%s] needs a name: [%s NAME]", kind->name,
                    kind->name);
    if (!config_name_valid(name))
        return fail(parser, parser->line,
                    "'%s' is not a valid name (letters, digits, '.', '_', "
                    "'-', at most %d bytes)",
                    name, CAIRN_CONFIG_MAX_NAME);
    if ((seen = find_named(parser->config, kind, name)) != NULL)
        return fail(parser, parser->line,
                    "duplicate section [%s %s] (first on line %u)", kind->name,
                    name, seen->line);
    return add_named(parser, kind, name);
}

static bool
key_name_valid(const char *name)
{
    size_t len = strlen(name);

    return len > 0 &&
           strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") == len;
}

/* Describes the current section for messages: "[node node1]". */
static const char *
where(const struct parser *parser, char *text, size_t size)
{
    if (parser->section->name != NULL)
        snprintf(text, size, "[%s %s]", parser->kind->name,
                 parser->section->name);
    else
        snprintf(text, size, "[%s]", parser->kind->name);
    return text;
}

/*
 * Parses value into the current section. A key no daemon implements may
 * only be given its default; values above a key's supported maximum are
 * refused as not supported (never accepted and ignored).
 */
static int
parse_supported(struct parser *parser, const struct config_key *key,
                const char *value)
{
    struct cairn_buf before, after;
    uint64_t number;
    char why[256];
    int rc;

    cairn_buf_init(&before, CAIRN_CONFIG_MAX_LINE);
    cairn_buf_init(&after, CAIRN_CONFIG_MAX_LINE);
    if (!config_key_supported(key) &&
        (rc = config_value_format(key, parser->section, &before)) < 0)
        goto out;
    rc = config_value_parse(key, value, parser->section, why, sizeof(why));
    if (rc == CAIRN_ECONFIG && (key->flags & CONFIG_MAX_SUPPORTED) &&
        cairn_parse_u64_str(value, 0, UINT64_MAX, &number) == CAIRN_OK &&
        number > key->max) {
        rc = fail(parser, parser->line,
                  "%s = %s is not supported (at most %llu)", key->name, value,
                  (unsigned long long)key->max);
        goto out;
    }
    if (rc == CAIRN_ECONFIG) {
        rc = fail(parser, parser->line, "bad value for '%s': %s", key->name,
                  why);
        goto out;
    }
    if (rc < 0 || config_key_supported(key))
        goto out;
    if ((rc = config_value_format(key, parser->section, &after)) < 0)
        goto out;
    if (before.len != after.len ||
        memcmp(before.data, after.data, before.len) != 0)
        rc = fail(parser, parser->line, "%s is not supported", key->name);
out:
    cairn_buf_release(&before);
    cairn_buf_release(&after);
    return rc;
}

/* "key = value"; text is the trimmed line. */
static int
parse_assignment(struct parser *parser, char *text)
{
    char *equals = strchr(text, '='), *name, *value, place[96];
    const struct config_key *key;
    size_t index;
    int rc;

    if (equals == NULL) {
        text[strcspn(text, " \t")] = '\0';
        if (key_name_valid(text))
            return fail(parser, parser->line, "missing '=' after '%s'", text);
        return fail(parser, parser->line,
                    "malformed line (expected [section] or key = value)");
    }
    *equals = '\0';
    name = trim(text);
    value = trim(equals + 1);
    if (!key_name_valid(name))
        return fail(parser, parser->line, "malformed key name '%s'", name);
    if (parser->section == NULL)
        return fail(parser, parser->line, "key '%s' outside of any section",
                    name);
    where(parser, place, sizeof(place));
    if ((key = config_key_find(parser->kind, name, &index)) == NULL)
        return fail(parser, parser->line, "unknown key '%s' in %s", name,
                    place);
    if (parser->section->key_lines[index] != 0)
        return fail(parser, parser->line,
                    "duplicate key '%s' in %s (first set on line %u)", name,
                    place, parser->section->key_lines[index]);
    if (*value == '\0' && (key->flags & CONFIG_REQUIRED))
        return fail(parser, parser->line, "key '%s' needs a value", name);
    if (*value == '\0') {
        config_value_clear(key, parser->section);
        if (key->default_value != NULL)
            value = (char *)key->default_value;
    }
    if (*value != '\0') {
        if ((rc = parse_supported(parser, key, value)) < 0)
            return rc;
    }
    parser->section->key_lines[index] = parser->line;
    return CAIRN_OK;
}

static int
parse_line(struct parser *parser, const char *start, size_t len)
{
    char *text;

    if (len > 0 && start[len - 1] == '\r')
        len--;
    if (len > CAIRN_CONFIG_MAX_LINE)
        return fail(parser, parser->line, "line longer than %d bytes",
                    CAIRN_CONFIG_MAX_LINE);
    if (memchr(start, '\0', len) != NULL)
        return fail(parser, parser->line, "NUL byte in line");
    memcpy(parser->line_copy, start, len);
    parser->line_copy[len] = '\0';
    text = trim(parser->line_copy);
    if (*text == '\0' || *text == '#' || *text == ';')
        return CAIRN_OK;
    if (*text == '[')
        return parse_header(parser, text);
    return parse_assignment(parser, text);
}

static int
parse_lines(struct parser *parser, const char *text, size_t len)
{
    const char *end = text + len;
    int rc = CAIRN_OK;

    for (const char *at = text; at < end && rc == CAIRN_OK;) {
        const char *newline = memchr(at, '\n', (size_t)(end - at));
        size_t line_len = newline ? (size_t)(newline - at) : (size_t)(end - at);

        parser->line++;
        rc = parse_line(parser, at, line_len);
        at += line_len + 1;
    }
    parser->config->end_line = parser->line > 0 ? parser->line : 1;
    return rc;
}

/* --- checks across keys and sections, after the whole text is read --- */

/* The line that set key name in section, else the section's header line. */
static unsigned
line_of(const struct parser *parser, const struct config_kind *kind,
        const struct cairn_config_origin *section, const char *name)
{
    size_t index;

    if (config_key_find(kind, name, &index) != NULL &&
        section->key_lines[index] != 0)
        return section->key_lines[index];
    return section->line != 0 ? section->line : parser->config->end_line;
}

static int
check_required(struct parser *parser, const struct config_kind *kind,
               const struct cairn_config_origin *section)
{
    for (size_t i = 0; i < kind->key_count; i++) {
        if ((kind->keys[i].flags & CONFIG_REQUIRED) &&
            section->key_lines[i] == 0) {
            if (section->name != NULL)
                return fail(parser, section->line,
                            "[%s %s] lacks required key '%s'", kind->name,
                            section->name, kind->keys[i].name);
            return fail(parser, section->line, "[%s] lacks required key '%s'",
                        kind->name, kind->keys[i].name);
        }
    }
    return CAIRN_OK;
}

/* Every section present, and every section's required keys. */
static int
check_sections(struct parser *parser)
{
    int rc;

    for (size_t k = 0; k < config_kind_count; k++) {
        const struct config_kind *kind = &config_kinds[k];
        struct cairn_config_origin **sections, *single;
        size_t count;

        if (!kind->named) {
            single = config_single_section(parser->config, kind);
            if (kind == &config_kinds[0] && single->line == 0)
                return fail(parser, parser->config->end_line,
                            "missing section [%s]", kind->name);
            if ((rc = check_required(parser, kind, single)) < 0)
                return rc;
            continue;
        }
        sections = config_named_sections(parser->config, kind, &count);
        if (count == 0)
            return fail(parser, parser->config->end_line,
                        "missing section [%s NAME] (at least one is needed)",
                        kind->name);
        for (size_t i = 0; i < count; i++) {
            if ((rc = check_required(parser, kind, sections[i])) < 0)
                return rc;
        }
    }
    return CAIRN_OK;
}

/* tls_mode and client certificates need a certificate of our own, and
 * client certificates are pointless where a client may skip TLS. */
static int
check_channel_tls(struct parser *parser,
                  const struct cairn_config_channel *channel)
{
    const struct config_kind *kind = config_kind_find("channel");
    const struct cairn_config_origin *origin = &channel->origin;
    const char *name = origin->name;
    bool implicit = channel->tls_mode == CAIRN_CONFIG_TLS_IMPLICIT;

    if (implicit && channel->tls_cert == NULL)
        return fail(parser, line_of(parser, kind, origin, "tls_mode"),
                    "[channel %s] tls_mode = implicit needs tls_cert and "
                    "tls_key",
                    name);
    if (channel->tls_client_ca != NULL && channel->tls_cert == NULL)
        return fail(parser, line_of(parser, kind, origin, "tls_client_ca"),
                    "[channel %s] tls_client_ca needs tls_cert and tls_key",
                    name);
    if (channel->tls_client_ca != NULL && !implicit && !channel->require_tls)
        return fail(parser, line_of(parser, kind, origin, "tls_client_ca"),
                    "[channel %s] tls_client_ca needs require_tls = yes or "
                    "tls_mode = implicit (a client could log in without TLS)",
                    name);
    if (channel->tls_client_subject != NULL && channel->tls_client_ca == NULL)
        return fail(parser, line_of(parser, kind, origin, "tls_client_subject"),
                    "[channel %s] tls_client_subject needs tls_client_ca",
                    name);
    return CAIRN_OK;
}

static int
check_channel(struct parser *parser, struct cairn_config_channel *channel)
{
    const struct config_kind *kind = config_kind_find("channel");
    const struct cairn_config_origin *origin = &channel->origin;
    struct cairn_config *config = parser->config;
    const char *name = origin->name;

    if (channel->sasl_password == NULL && channel->sasl_db == NULL &&
        channel->sasl_password_file == NULL)
        return fail(parser, origin->line,
                    "[channel %s] needs sasl_password, sasl_password_file or "
                    "sasl_db",
                    name);
    if (channel->sasl_password != NULL && channel->sasl_password_file != NULL)
        return fail(parser, line_of(parser, kind, origin, "sasl_password_file"),
                    "[channel %s] sets its password both inline "
                    "(sasl_password) and by file (sasl_password_file): keep "
                    "one",
                    name);
    if ((channel->sasl_password != NULL ||
         channel->sasl_password_file != NULL) &&
        channel->sasl_db != NULL)
        return fail(parser, line_of(parser, kind, origin, "sasl_db"),
                    "[channel %s] sets both %s and sasl_db", name,
                    channel->sasl_password ? "sasl_password"
                                           : "sasl_password_file");
    if ((channel->tls_cert == NULL) != (channel->tls_key == NULL))
        return fail(parser,
                    line_of(parser, kind, origin,
                            channel->tls_cert ? "tls_cert" : "tls_key"),
                    "[channel %s] needs both tls_cert and tls_key", name);
    if (channel->require_tls && channel->tls_cert == NULL)
        return fail(parser, line_of(parser, kind, origin, "require_tls"),
                    "[channel %s] require_tls needs tls_cert and tls_key",
                    name);
    if (check_channel_tls(parser, channel) < 0)
        return CAIRN_ECONFIG;
    channel->destination_refs =
        calloc(channel->destinations.count, sizeof(void *));
    if (channel->destination_refs == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < channel->destinations.count; i++) {
        const char *wanted = channel->destinations.items[i];

        channel->destination_refs[i] =
            cairn_config_find_destination(config, wanted);
        if (channel->destination_refs[i] == NULL)
            return fail(parser, line_of(parser, kind, origin, "destinations"),
                        "[channel %s] names unknown destination '%s'", name,
                        wanted);
    }
    for (size_t i = 0; config->channels[i] != channel; i++) {
        if (strcmp(config->channels[i]->listen, channel->listen) == 0)
            return fail(parser, line_of(parser, kind, origin, "listen"),
                        "listen address %s is also used by [channel %s]",
                        channel->listen, config->channels[i]->origin.name);
    }
    return CAIRN_OK;
}

static int
check_destination(struct parser *parser,
                  struct cairn_config_destination *destination)
{
    const struct config_kind *kind = config_kind_find("destination");
    const struct cairn_config_origin *origin = &destination->origin;
    const struct cairn_config_router *router = &parser->config->router;
    const char *name = origin->name;

    destination->node_refs = calloc(destination->nodes.count, sizeof(void *));
    if (destination->node_refs == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < destination->nodes.count; i++) {
        const char *wanted = destination->nodes.items[i];

        destination->node_refs[i] =
            cairn_config_find_node(parser->config, wanted);
        if (destination->node_refs[i] == NULL)
            return fail(parser, line_of(parser, kind, origin, "nodes"),
                        "[destination %s] names unknown node '%s'", name,
                        wanted);
    }
    if (destination->replicas > destination->nodes.count)
        return fail(parser, line_of(parser, kind, origin, "replicas"),
                    "[destination %s] wants %llu replicas but has %zu nodes",
                    name, (unsigned long long)destination->replicas,
                    destination->nodes.count);
    if (destination->ring_file == NULL) {
        const char *dir = router->ring_dir ? router->ring_dir : ".";

        if (asprintf(&destination->ring_file, "%s/%s.ring", dir, name) < 0) {
            destination->ring_file = NULL;
            return CAIRN_ENOMEM;
        }
    }
    return CAIRN_OK;
}

static int
check_node(struct parser *parser, struct cairn_config_node *node)
{
    const struct config_kind *kind = config_kind_find("node");
    struct cairn_config *config = parser->config;
    const struct cairn_config_origin *origin = &node->origin;

    if (strncmp(node->endpoint, "tcp://*:", 8) == 0)
        return fail(parser, line_of(parser, kind, origin, "endpoint"),
                    "endpoint %s: the router cannot connect to '*', give the "
                    "node's address",
                    node->endpoint);
    if (strcmp(node->endpoint, config->router.control) == 0)
        return fail(parser, line_of(parser, kind, origin, "endpoint"),
                    "endpoint %s is also the router's control endpoint",
                    node->endpoint);
    for (size_t i = 0; config->nodes[i] != node; i++) {
        if (strcmp(config->nodes[i]->endpoint, node->endpoint) == 0)
            return fail(parser, line_of(parser, kind, origin, "endpoint"),
                        "endpoint %s is also used by [node %s]", node->endpoint,
                        config->nodes[i]->origin.name);
    }
    if (node->zone == NULL && (node->zone = strdup(origin->name)) == NULL)
        return CAIRN_ENOMEM;
    if (node->curve_key == NULL &&
        (node->curve_key = strdup(origin->name)) == NULL)
        return CAIRN_ENOMEM;
    if (node->max_frame == 0)
        node->max_frame = config->limits.max_frame;
    return CAIRN_OK;
}

static int
check_references(struct parser *parser)
{
    struct cairn_config *config = parser->config;
    const struct cairn_config_compaction *compaction = &config->compaction;
    int rc = CAIRN_OK;

    if (compaction->max_chunk != 0 &&
        compaction->min_chunk > compaction->max_chunk)
        return fail(parser,
                    line_of(parser, config_kind_find("compaction"),
                            &compaction->origin, "min_chunk"),
                    "min_chunk is larger than max_chunk");
    for (size_t i = 0; i < config->node_count && rc == CAIRN_OK; i++)
        rc = check_node(parser, config->nodes[i]);
    for (size_t i = 0; i < config->destination_count && rc == CAIRN_OK; i++)
        rc = check_destination(parser, config->destinations[i]);
    for (size_t i = 0; i < config->channel_count && rc == CAIRN_OK; i++)
        rc = check_channel(parser, config->channels[i]);
    return rc;
}

/* Makes the section's relative paths relative to base_dir instead. */
static int
resolve_section_paths(const struct config_kind *kind,
                      struct cairn_config_origin *section, const char *base_dir)
{
    for (size_t i = 0; i < kind->key_count; i++) {
        const struct config_key *key = &kind->keys[i];
        char **path = (char **)((char *)section + key->offset), *joined;

        if (key->type != CONFIG_PATH || *path == NULL || (*path)[0] == '/')
            continue;
        if (asprintf(&joined, "%s/%s", base_dir, *path) < 0)
            return CAIRN_ENOMEM;
        free(*path);
        *path = joined;
    }
    return CAIRN_OK;
}

static int
resolve_paths(struct cairn_config *config, const char *base_dir)
{
    int rc = CAIRN_OK;

    if (base_dir == NULL || strcmp(base_dir, ".") == 0)
        return CAIRN_OK;
    for (size_t k = 0; k < config_kind_count && rc == CAIRN_OK; k++) {
        const struct config_kind *kind = &config_kinds[k];
        struct cairn_config_origin **sections;
        size_t count;

        if (!kind->named) {
            rc = resolve_section_paths(
                kind, config_single_section(config, kind), base_dir);
            continue;
        }
        sections = config_named_sections(config, kind, &count);
        for (size_t i = 0; i < count && rc == CAIRN_OK; i++)
            rc = resolve_section_paths(kind, sections[i], base_dir);
    }
    return rc;
}

/* --- the public API --- */

void
cairn_config_free(struct cairn_config *config)
{
    if (config == NULL)
        return;
    for (size_t k = 0; k < config_kind_count; k++) {
        const struct config_kind *kind = &config_kinds[k];
        struct cairn_config_origin **sections;
        size_t count;

        if (!kind->named) {
            section_release(kind, config_single_section(config, kind));
            continue;
        }
        sections = config_named_sections(config, kind, &count);
        for (size_t i = 0; i < count; i++) {
            if (kind->refs_offset != 0) /* resolved references */
                free(*(void **)((char *)sections[i] + kind->refs_offset));
            section_release(kind, sections[i]);
            free(sections[i]);
        }
        free(sections);
    }
    free(config->name);
    free(config);
}

int
cairn_config_parse(const char *text, size_t len, const char *name,
                   const char *base_dir, struct cairn_config **config_out,
                   struct cairn_config_error *error)
{
    struct parser parser = {NULL, error, NULL, NULL, 0, NULL};
    struct cairn_config *config = NULL;
    int rc;

    *config_out = NULL;
    if (error != NULL)
        memset(error, 0, sizeof(*error));
    if ((config = calloc(1, sizeof(*config))) == NULL)
        return CAIRN_ENOMEM;
    parser.config = config;
    if ((config->name = strdup(name)) == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    for (size_t k = 0; k < config_kind_count; k++) {
        const struct config_kind *kind = &config_kinds[k];

        if (!kind->named &&
            (rc = apply_defaults(&parser, kind,
                                 config_single_section(config, kind))) < 0)
            goto out;
    }
    if ((parser.line_copy = malloc(CAIRN_CONFIG_MAX_LINE + 1)) == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    if ((rc = parse_lines(&parser, text, len)) < 0)
        goto out;
    if ((rc = check_sections(&parser)) < 0)
        goto out;
    /* Paths first, so that default ring files land in the resolved dir. */
    if ((rc = resolve_paths(config, base_dir)) < 0)
        goto out;
    if ((rc = check_references(&parser)) < 0)
        goto out;
    *config_out = config;
    config = NULL;
out:
    if (rc == CAIRN_ENOMEM && error != NULL && error->message[0] == '\0') {
        snprintf(error->file, sizeof(error->file), "%s", name);
        snprintf(error->message, sizeof(error->message), "%s",
                 cairn_strerror(rc));
    }
    free(parser.line_copy);
    cairn_config_free(config);
    return rc;
}

static int
file_error(struct cairn_config_error *error, const char *path, int rc,
           const char *reason)
{
    if (error != NULL) {
        snprintf(error->file, sizeof(error->file), "%s", path);
        error->line = 0;
        snprintf(error->message, sizeof(error->message), "%s", reason);
    }
    return rc;
}

/* Reads the whole file into *text (owned by the caller). */
static int
read_file(const char *path, char **text, size_t *len,
          struct cairn_config_error *error)
{
    struct cairn_buf buf;
    char chunk[8192];
    int fd, rc = CAIRN_OK;

    cairn_buf_init(&buf, CAIRN_CONFIG_MAX_FILE);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return file_error(error, path,
                          errno == ENOENT ? CAIRN_ENOENT : CAIRN_EIO,
                          strerror(errno));
    for (;;) {
        ssize_t got = read(fd, chunk, sizeof(chunk));

        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = file_error(error, path, CAIRN_EIO, strerror(errno));
            goto out;
        }
        if (got == 0)
            break;
        if ((rc = cairn_buf_append(&buf, chunk, (size_t)got)) < 0) {
            if (rc == CAIRN_ETOOBIG)
                file_error(error, path, rc, "file larger than 1 MiB");
            goto out;
        }
    }
    rc = cairn_buf_detach(&buf, text, len);
out:
    close(fd);
    cairn_buf_release(&buf);
    return rc;
}

int
cairn_config_load(const char *path, struct cairn_config **config,
                  struct cairn_config_error *error)
{
    char *text = NULL, *copy = NULL;
    size_t len = 0;
    int rc;

    *config = NULL;
    if (error != NULL)
        memset(error, 0, sizeof(*error));
    if ((rc = read_file(path, &text, &len, error)) < 0)
        goto out;
    if ((copy = strdup(path)) == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    rc = cairn_config_parse(text, len, path, dirname(copy), config, error);
out:
    free(copy);
    free(text);
    return rc;
}

const char *
cairn_config_default_text(void)
{
    return config_default_text;
}

int
cairn_config_load_default(struct cairn_config **config,
                          struct cairn_config_error *error)
{
    return cairn_config_parse(config_default_text, strlen(config_default_text),
                              cairn_config_default_name, NULL, config, error);
}

const char *
cairn_config_name(const struct cairn_config *config)
{
    return config->name;
}

const struct cairn_config_router *
cairn_config_router(const struct cairn_config *config)
{
    return &config->router;
}

const struct cairn_config_compaction *
cairn_config_compaction(const struct cairn_config *config)
{
    return &config->compaction;
}

const struct cairn_config_security *
cairn_config_security(const struct cairn_config *config)
{
    return &config->security;
}

const struct cairn_config_scrub *
cairn_config_scrub(const struct cairn_config *config)
{
    return &config->scrub;
}

const struct cairn_config_limits *
cairn_config_limits(const struct cairn_config *config)
{
    return &config->limits;
}

size_t
cairn_config_channel_count(const struct cairn_config *config)
{
    return config->channel_count;
}

const struct cairn_config_channel *
cairn_config_channel_at(const struct cairn_config *config, size_t index)
{
    return index < config->channel_count ? config->channels[index] : NULL;
}

size_t
cairn_config_destination_count(const struct cairn_config *config)
{
    return config->destination_count;
}

const struct cairn_config_destination *
cairn_config_destination_at(const struct cairn_config *config, size_t index)
{
    return index < config->destination_count ? config->destinations[index]
                                             : NULL;
}

size_t
cairn_config_node_count(const struct cairn_config *config)
{
    return config->node_count;
}

const struct cairn_config_node *
cairn_config_node_at(const struct cairn_config *config, size_t index)
{
    return index < config->node_count ? config->nodes[index] : NULL;
}

const struct cairn_config_channel *
cairn_config_find_channel(const struct cairn_config *config, const char *name)
{
    return (const void *)find_named(config, config_kind_find("channel"), name);
}

const struct cairn_config_destination *
cairn_config_find_destination(const struct cairn_config *config,
                              const char *name)
{
    return (const void *)find_named(config, config_kind_find("destination"),
                                    name);
}

const struct cairn_config_node *
cairn_config_find_node(const struct cairn_config *config, const char *name)
{
    return (const void *)find_named(config, config_kind_find("node"), name);
}
