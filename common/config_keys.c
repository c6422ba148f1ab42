/*
 * config_keys.c - the tables of cluster.conf: every section kind and every
 * key (type, field, range, default, one-line description), and the value
 * types that turn the file's text into fields and back. Adding a key is
 * adding a field to config.h, a row here and its documentation in
 * cluster.example.conf.
 */
#include "config_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KIB (UINT64_C(1) << 10)
#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)
#define TIB (UINT64_C(1) << 40)
#define SECOND UINT64_C(1000)
#define MINUTE (60 * SECOND)
#define HOUR (60 * MINUTE)
#define DAY (24 * HOUR)
#define WEEK (7 * DAY)

/* Enum fields are written through an int. */
_Static_assert(sizeof(enum cairn_log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cairn_config_ack) == sizeof(int), "enum size");

static const char *const log_levels[] = {"error", "warn", "info", "debug",
                                         NULL};
static const char *const ack_policies[] = {"all", "quorum", "one", NULL};
static const char *const tls_modes[] = {"starttls", "implicit", NULL};

#define ROUTER(field) offsetof(struct cairn_config_router, field)
static const struct config_key router_keys[] = {
    {"control", CONFIG_ENDPOINT, ROUTER(control), 0, 0, "tcp://127.0.0.1:5700",
     0, NULL, "control endpoint cairnctl talks to"},
    {"spool_dir", CONFIG_PATH, ROUTER(spool_dir), 0, 0, "cairn-data/spool", 0,
     NULL, "where message bodies wait until their user is known"},
    {"spool_max", CONFIG_SIZE, ROUTER(spool_max), MIB, UINT64_MAX, "1G", 0,
     NULL, "most bytes the spool may hold"},
    {"servername", CONFIG_STRING, ROUTER(servername), 0, 0, "cairn", 0, NULL,
     "server name in the csync banner"},
    {"node_timeout", CONFIG_DURATION, ROUTER(node_timeout_ms), 100, HOUR, "30s",
     0, NULL, "a node request unanswered this long fails"},
    {"node_answer_timeout", CONFIG_DURATION, ROUTER(node_answer_timeout_ms),
     100, HOUR, "5s", 0, NULL,
     "a node silent this long (not even a PING) is down"},
    {"node_window", CONFIG_INTEGER, ROUTER(node_window), 1, 1024, "16", 0, NULL,
     "requests in flight to one node"},
    {"user_window", CONFIG_INTEGER, ROUTER(user_window), 1, 256, "4", 0, NULL,
     "requests in flight for one user"},
    {"max_connections", CONFIG_INTEGER, ROUTER(max_connections), 1, 100000,
     "256", 0, NULL, "most csync connections at once"},
    {"log_level", CONFIG_ENUM, ROUTER(log_level), 0, 0, "info", 0, log_levels,
     "error, warn, info or debug"},
    {"pid_file", CONFIG_PATH, ROUTER(pid_file), 0, 0, NULL, 0, NULL,
     "file the router writes its pid into"},
    {"ring_dir", CONFIG_PATH, ROUTER(ring_dir), 0, 0, "cairn-data/rings", 0,
     NULL, "directory of the ring files"},
    {"state_dir", CONFIG_PATH, ROUTER(state_dir), 0, 0, "cairn-data/router", 0,
     NULL, "repair marks kept across restarts"},
    {"curve_key", CONFIG_STRING, ROUTER(curve_key), 0, 0, "router", CONFIG_NAME,
     NULL, "the router's CURVE key (NAME in curve_key_dir)"},
    {"metrics_listen", CONFIG_ADDRESS, ROUTER(metrics_listen), 0, 0, NULL, 0,
     NULL, "HOST:PORT serving Prometheus /metrics (unset: off)"},
};

#define CHANNEL(field) offsetof(struct cairn_config_channel, field)
static const struct config_key channel_keys[] = {
    {"listen", CONFIG_ADDRESS, CHANNEL(listen), 0, 0, NULL, CONFIG_REQUIRED,
     NULL, "HOST:PORT of the csync listener"},
    {"sasl_user", CONFIG_STRING, CHANNEL(sasl_user), 0, 0, NULL,
     CONFIG_REQUIRED, NULL, "SASL identity sync_client logs in as"},
    {"sasl_password", CONFIG_STRING, CHANNEL(sasl_password), 0, 0, NULL,
     CONFIG_SECRET, NULL, "its password (or sasl_db)"},
    {"sasl_password_file", CONFIG_PATH, CHANNEL(sasl_password_file), 0, 0, NULL,
     0, NULL,
     "file whose first line is its password (read at start "
     "and on SIGHUP)"},
    {"sasl_db", CONFIG_PATH, CHANNEL(sasl_db), 0, 0, NULL, 0, NULL,
     "sasldb holding its password (or sasl_password)"},
    {"sasl_mechanisms", CONFIG_LIST, CHANNEL(sasl_mechanisms), 1, 16, "PLAIN",
     0, NULL, "SASL mechanisms offered, in order"},
    {"require_tls", CONFIG_BOOL, CHANNEL(require_tls), 0, 0, "no", 0, NULL,
     "refuse AUTHENTICATE before STARTTLS"},
    {"tls_cert", CONFIG_PATH, CHANNEL(tls_cert), 0, 0, NULL, 0, NULL,
     "PEM certificate (chain) of the listener"},
    {"tls_key", CONFIG_PATH, CHANNEL(tls_key), 0, 0, NULL, 0, NULL,
     "PEM private key for tls_cert"},
    {"tls_mode", CONFIG_ENUM, CHANNEL(tls_mode), 0, 0, "starttls", 0, tls_modes,
     "starttls, or implicit: TLS from connect (host:port/tls)"},
    {"tls_client_ca", CONFIG_PATH, CHANNEL(tls_client_ca), 0, 0, NULL, 0, NULL,
     "PEM CAs: clients must show a certificate they signed"},
    {"tls_client_subject", CONFIG_STRING, CHANNEL(tls_client_subject), 0, 0,
     NULL, 0, NULL, "client certificate CN (or DN, RFC 2253) allowed"},
    {"compress", CONFIG_BOOL, CHANNEL(compress), 0, 0, "yes", 0, NULL,
     "allow COMPRESS DEFLATE"},
    {"destinations", CONFIG_LIST, CHANNEL(destinations), 1, 64, NULL,
     CONFIG_REQUIRED, NULL, "destinations every update is written to"},
    {"users", CONFIG_STRING, CHANNEL(users), 0, 0, NULL, 0, NULL,
     "users it may write and read: names or globs (unset: all)"},
    {"idle_timeout", CONFIG_DURATION, CHANNEL(idle_timeout_ms), SECOND, DAY,
     "30m", 0, NULL, "idle connections are closed after this"},
};

#define DESTINATION(field) offsetof(struct cairn_config_destination, field)
static const struct config_key destination_keys[] = {
    {"nodes", CONFIG_LIST, DESTINATION(nodes), 1, 4096, NULL, CONFIG_REQUIRED,
     NULL, "nodes of this destination"},
    {"replicas", CONFIG_INTEGER, DESTINATION(replicas), 1, 16, "2", 0, NULL,
     "copies of every user, on distinct nodes"},
    {"ring_file", CONFIG_PATH, DESTINATION(ring_file), 0, 0, NULL, 0, NULL,
     "ring file (unset: ring_dir/NAME.ring)"},
    {"ack", CONFIG_ENUM, DESTINATION(ack), 0, 0, "all", 0, ack_policies,
     "OK after all, quorum or one replica(s) have a write"},
};

#define NODE(field) offsetof(struct cairn_config_node, field)
static const struct config_key node_keys[] = {
    {"endpoint", CONFIG_ENDPOINT, NODE(endpoint), 0, 0, NULL, CONFIG_REQUIRED,
     NULL, "endpoint the node binds and the router connects to"},
    {"control", CONFIG_ENDPOINT, NODE(control), 0, 0, NULL, CONFIG_UNSUPPORTED,
     NULL, "not supported: cairnctl talks to the node's endpoint"},
    {"data_dir", CONFIG_PATH, NODE(data_dir), 0, 0, NULL, CONFIG_REQUIRED, NULL,
     "directory of per-user logs and indexes"},
    {"weight", CONFIG_INTEGER, NODE(weight), 1, 10000, "100", 0, NULL,
     "share of users on the ring"},
    {"zone", CONFIG_STRING, NODE(zone), 0, 0, NULL, 0, NULL,
     "failure domain (unset: the node's name)"},
    {"group_commit", CONFIG_DURATION, NODE(group_commit_ms), 0, SECOND, "5ms",
     0, NULL, "fsync batching window (0: every write alone)"},
    {"max_frame", CONFIG_SIZE, NODE(max_frame), 4 * KIB, 64 * MIB, "0",
     CONFIG_ZERO_OK, NULL, "largest frame accepted (0: [limits] max_frame)"},
    {"reserve", CONFIG_SIZE, NODE(reserve), 0, UINT64_MAX, "100M", 0, NULL,
     "free disk space kept; writes refused below it"},
    {"log_level", CONFIG_ENUM, NODE(log_level), 0, 0, "info", 0, log_levels,
     "error, warn, info or debug"},
    {"curve_key", CONFIG_STRING, NODE(curve_key), 0, 0, NULL, CONFIG_NAME, NULL,
     "the node's CURVE key (unset: the node's name)"},
    {"metrics_listen", CONFIG_ADDRESS, NODE(metrics_listen), 0, 0, NULL, 0,
     NULL, "HOST:PORT serving Prometheus /metrics (unset: off)"},
};

#define COMPACTION(field) offsetof(struct cairn_config_compaction, field)
static const struct config_key compaction_keys[] = {
    {"enabled", CONFIG_BOOL, COMPACTION(enabled), 0, 0, "yes", 0, NULL,
     "compact at all"},
    {"interval", CONFIG_DURATION, COMPACTION(interval_ms), MINUTE, 30 * DAY,
     "1d", 0, NULL, "how often each user is considered"},
    /* Cyrus reads a bare backup_retention as days, we as seconds: refuse
     * the bare number rather than keep 7 seconds of deleted mail. */
    {"retention", CONFIG_DURATION, COMPACTION(retention_ms), 0, UINT64_MAX,
     "7d", CONFIG_UNIT, NULL,
     "keep deleted/expunged data this long (0: forever)"},
    {"min_chunk", CONFIG_SIZE, COMPACTION(min_chunk), 0, 4 * GIB, "1M", 0, NULL,
     "merge smaller chunks (0: off)"},
    {"max_chunk", CONFIG_SIZE, COMPACTION(max_chunk), 0, 4 * GIB, "64M", 0,
     NULL, "split larger chunks, merge no further (0: off)"},
    {"work_threshold", CONFIG_INTEGER, COMPACTION(work_threshold), 0, 100, "10",
     0, NULL, "percent of a log to reclaim before compacting"},
    {"parallel_users", CONFIG_INTEGER, COMPACTION(parallel_users), 1, 1, "1",
     CONFIG_MAX_SUPPORTED, NULL,
     "users one node compacts at once (only 1 is supported)"},
};

#define SECURITY(field) offsetof(struct cairn_config_security, field)
static const struct config_key security_keys[] = {
    {"curve", CONFIG_BOOL, SECURITY(curve), 0, 0, "yes", 0, NULL,
     "CURVE on every ZeroMQ link"},
    {"curve_key_dir", CONFIG_PATH, SECURITY(curve_key_dir), 0, 0,
     "cairn-data/keys", 0, NULL, "directory of NAME.public/NAME.secret"},
    {"data_mode", CONFIG_MODE, SECURITY(data_mode), 0600, 0666, "0600", 0, NULL,
     "permission bits of what cairn creates (0600 or 0640; octal)"},
    {"user", CONFIG_STRING, SECURITY(user), 0, 0, NULL, 0, NULL,
     "user daemons started as root switch to"},
    {"writer_keys", CONFIG_LIST, SECURITY(writer_keys), 0, 64, "router", 0,
     NULL, "keys with role writer on the nodes (apply, state, bodies)"},
    {"admin_keys", CONFIG_LIST, SECURITY(admin_keys), 0, 64, "admin", 0, NULL,
     "keys with role admin (cairnctl); the first is cairnctl's"},
    {"peer_keys", CONFIG_LIST, SECURITY(peer_keys), 0, 4096, NULL, 0, NULL,
     "keys with role peer (node to node; unset: every node's key)"},
};

static const char *const scrub_levels[] = {"light", "full", NULL};

#define SCRUB(field) offsetof(struct cairn_config_scrub, field)
static const struct config_key scrub_keys[] = {
    {"enabled", CONFIG_BOOL, SCRUB(enabled), 0, 0, "yes", 0, NULL,
     "nodes verify their users on their own"},
    {"interval", CONFIG_DURATION, SCRUB(interval_ms), MINUTE, 365 * DAY, "7d",
     0, NULL, "every user is checked once per interval"},
    {"rate", CONFIG_SIZE, SCRUB(rate), 0, 64 * GIB, "20M", 0, NULL,
     "bytes read per second on average (0: no limit)"},
    {"level", CONFIG_ENUM, SCRUB(level), 0, 0, "full", 0, scrub_levels,
     "light: checksums; full: Cyrus's full verify"},
    {"heal", CONFIG_BOOL, SCRUB(heal), 0, 0, "yes", 0, NULL,
     "rebuild a damaged or lagging replica from a peer that verifies"},
};

#define LIMITS(field) offsetof(struct cairn_config_limits, field)
static const struct config_key limits_keys[] = {
    {"max_line", CONFIG_SIZE, LIMITS(max_line), KIB, 256 * MIB, "64M", 0, NULL,
     "a csync command line, literals excluded"},
    {"max_literal", CONFIG_SIZE, LIMITS(max_literal), KIB, 2 * GIB, "64M", 0,
     NULL, "one in-line {N} literal"},
    {"max_message", CONFIG_SIZE, LIMITS(max_message), KIB, 4 * GIB, "1G", 0,
     NULL, "one message body (file literal)"},
    {"max_nesting", CONFIG_INTEGER, LIMITS(max_nesting), 2, 1000, "64", 0, NULL,
     "depth of nested dlists"},
    {"max_frame", CONFIG_SIZE, LIMITS(max_frame), 4 * KIB, 64 * MIB, "1M", 0,
     NULL, "one ZeroMQ payload frame"},
};

#define COUNT(table) (sizeof(table) / sizeof((table)[0]))
#define SINGLE(kind_name, table, field)                                        \
    {                                                                          \
        kind_name, false, table, COUNT(table), 0,                              \
            offsetof(struct cairn_config, field), 0, 0, 1, 0                   \
    }
#define NAMED(kind_name, table, type, array, count, most, refs)                \
    {                                                                          \
        kind_name, true, table, COUNT(table), sizeof(type), 0,                 \
            offsetof(struct cairn_config, array),                              \
            offsetof(struct cairn_config, count), most, refs                   \
    }

const struct config_kind config_kinds[] = {
    SINGLE("router", router_keys, router),
    NAMED("channel", channel_keys, struct cairn_config_channel, channels,
          channel_count, 64, CHANNEL(destination_refs)),
    NAMED("destination", destination_keys, struct cairn_config_destination,
          destinations, destination_count, 64, DESTINATION(node_refs)),
    NAMED("node", node_keys, struct cairn_config_node, nodes, node_count, 4096,
          0),
    SINGLE("compaction", compaction_keys, compaction),
    SINGLE("scrub", scrub_keys, scrub),
    SINGLE("security", security_keys, security),
    SINGLE("limits", limits_keys, limits),
};
const size_t config_kind_count = COUNT(config_kinds);

_Static_assert(COUNT(router_keys) <= CAIRN_CONFIG_MAX_KEYS, "key_lines");
_Static_assert(COUNT(channel_keys) <= CAIRN_CONFIG_MAX_KEYS, "key_lines");
_Static_assert(COUNT(destination_keys) <= CAIRN_CONFIG_MAX_KEYS, "key_lines");
_Static_assert(COUNT(node_keys) <= CAIRN_CONFIG_MAX_KEYS, "key_lines");
_Static_assert(COUNT(compaction_keys) <= CAIRN_CONFIG_MAX_KEYS, "key_lines");
_Static_assert(COUNT(scrub_keys) <= CAIRN_CONFIG_MAX_KEYS, "key_lines");
_Static_assert(COUNT(security_keys) <= CAIRN_CONFIG_MAX_KEYS, "key_lines");
_Static_assert(COUNT(limits_keys) <= CAIRN_CONFIG_MAX_KEYS, "key_lines");

bool
config_key_supported(const struct config_key *key)
{
    return (key->flags & CONFIG_UNSUPPORTED) == 0;
}

const struct config_kind *
config_kind_find(const char *name)
{
    for (size_t i = 0; i < config_kind_count; i++) {
        if (strcmp(config_kinds[i].name, name) == 0)
            return &config_kinds[i];
    }
    return NULL;
}

const struct config_key *
config_key_find(const struct config_kind *kind, const char *name, size_t *index)
{
    for (size_t i = 0; i < kind->key_count; i++) {
        if (strcmp(kind->keys[i].name, name) == 0) {
            *index = i;
            return &kind->keys[i];
        }
    }
    return NULL;
}

/* The struct of a single section kind, e.g. &config->router. */
struct cairn_config_origin *
config_single_section(struct cairn_config *config,
                      const struct config_kind *kind)
{
    return (struct cairn_config_origin *)((char *)config + kind->config_offset);
}

/* The sections of a named kind, e.g. config->nodes, and their count. */
struct cairn_config_origin **
config_named_sections(const struct cairn_config *config,
                      const struct config_kind *kind, size_t *count)
{
    *count = *(const size_t *)((const char *)config + kind->count_offset);
    return *(struct cairn_config_origin ***)((const char *)config +
                                             kind->array_offset);
}

bool
config_name_valid(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len > CAIRN_CONFIG_MAX_NAME)
        return false;
    return strspn(name, "abcdefghijklmnopqrstuvwxyz"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == len;
}

/* --- the value types: text to field --- */

static int
bad(char *why, size_t why_size, const char *fmt, const char *text)
{
    snprintf(why, why_size, fmt, text);
    return CAIRN_ECONFIG;
}

/* Writes value the way the file would, with the largest exact unit. */
static void
format_scaled(uint64_t value, bool duration, char *text, size_t size)
{
    static const struct {
        uint64_t factor;
        const char *suffix;
    } sizes[] = {{TIB, "T"}, {GIB, "G"}, {MIB, "M"}, {KIB, "K"}, {1, ""}},
      durations[] = {{WEEK, "w"},   {DAY, "d"},    {HOUR, "h"},
                     {MINUTE, "m"}, {SECOND, "s"}, {1, "ms"}};
    size_t count = duration ? COUNT(durations) : COUNT(sizes);

    for (size_t i = 0; i < count; i++) {
        uint64_t factor = duration ? durations[i].factor : sizes[i].factor;
        const char *suffix = duration ? durations[i].suffix : sizes[i].suffix;

        if (value == 0 || value % factor == 0) {
            snprintf(text, size, "%llu%s", (unsigned long long)(value / factor),
                     value == 0 ? "" : suffix);
            return;
        }
    }
}

static int
parse_number(const struct config_key *key, const char *text, uint64_t *out,
             char *why, size_t why_size)
{
    const char *example;
    uint64_t value;
    size_t len = strlen(text);
    int rc;

    switch (key->type) {
    case CONFIG_SIZE:
        example = "'%s' is not a size (e.g. 4096, 64K, 1G)";
        rc = cairn_parse_size(text, &value);
        break;
    case CONFIG_DURATION:
        example = "'%s' is not a duration (e.g. 250ms, 30s, 7d)";
        if (len > 2 && strcmp(text + len - 2, "ms") == 0) {
            rc = cairn_parse_u64(text, len - 2, 0, UINT64_MAX, &value);
            break;
        }
        if ((rc = cairn_parse_duration(text, &value)) == CAIRN_OK) {
            rc = value > UINT64_MAX / SECOND ? CAIRN_EOVERFLOW : CAIRN_OK;
            value *= SECOND;
        }
        break;
    default:
        example = "'%s' is not a number";
        rc = cairn_parse_u64_str(text, 0, UINT64_MAX, &value);
        break;
    }
    if (rc == CAIRN_EPARSE)
        return bad(why, why_size, example, text);
    if (rc == CAIRN_OK && value != 0 && (key->flags & CONFIG_UNIT) &&
        strspn(text, "0123456789") == len)
        return bad(why, why_size,
                   "'%s' needs a unit (e.g. 7d; Cyrus would "
                   "read days, cairn seconds)",
                   text);
    if (rc == CAIRN_OK && value == 0 && (key->flags & CONFIG_ZERO_OK)) {
        *out = 0;
        return CAIRN_OK;
    }
    if (rc < 0 || value < key->min || value > key->max) {
        char low[32], high[32];
        bool duration = key->type == CONFIG_DURATION;

        if (key->type == CONFIG_INTEGER) {
            snprintf(low, sizeof(low), "%llu", (unsigned long long)key->min);
            snprintf(high, sizeof(high), "%llu", (unsigned long long)key->max);
        } else {
            format_scaled(key->min, duration, low, sizeof(low));
            format_scaled(key->max, duration, high, sizeof(high));
        }
        snprintf(why, why_size, "'%s' is out of range %s..%s", text, low, high);
        return CAIRN_ECONFIG;
    }
    *out = value;
    return CAIRN_OK;
}

static int
parse_mode(const char *text, uint64_t required, uint64_t allowed, uint64_t *out,
           char *why, size_t why_size)
{
    uint64_t value = 0;
    size_t len = strlen(text);

    if (len == 0 || len > 4 || strspn(text, "01234567") != len)
        return bad(why, why_size, "'%s' is not an octal mode (e.g. 0600)",
                   text);
    for (size_t i = 0; i < len; i++)
        value = value * 8 + (uint64_t)(text[i] - '0');
    /* The key's min holds the bits a mode needs, its max those it may
     * have (data_mode: the owner reads and writes; files get no execute
     * bit, directories get theirs from the read bits). */
    if ((value & required) != required || (value & ~allowed) != 0) {
        snprintf(why, why_size,
                 "'%s' must have the bits %04llo and none outside %04llo", text,
                 (unsigned long long)required, (unsigned long long)allowed);
        return CAIRN_ECONFIG;
    }
    *out = value;
    return CAIRN_OK;
}

/* HOST:PORT where HOST is a name, an IPv4 address, "*" or [IPv6]. */
static bool
address_valid(const char *text)
{
    const char *colon = strrchr(text, ':');
    size_t host_len;
    uint64_t port;

    if (colon == NULL || colon == text)
        return false;
    if (cairn_parse_u64_str(colon + 1, 1, 65535, &port) < 0)
        return false;
    host_len = (size_t)(colon - text);
    if (text[0] == '[')
        return host_len > 2 && text[host_len - 1] == ']' &&
               strspn(text + 1, "0123456789abcdefABCDEF:.") == host_len - 2;
    if (host_len == 1 && text[0] == '*')
        return true;
    return strspn(text, "abcdefghijklmnopqrstuvwxyz"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == host_len;
}

static int
parse_text(const struct config_key *key, const char *text, char **field,
           char *why, size_t why_size)
{
    char *copy;

    if (key->type == CONFIG_ADDRESS && !address_valid(text))
        return bad(why, why_size, "'%s' is not HOST:PORT (e.g. 127.0.0.1:2005)",
                   text);
    if (key->type == CONFIG_ENDPOINT &&
        (strncmp(text, "tcp://", 6) != 0 || !address_valid(text + 6)))
        return bad(why, why_size,
                   "'%s' is not a ZeroMQ endpoint tcp://HOST:PORT", text);
    if ((copy = strdup(text)) == NULL)
        return CAIRN_ENOMEM;
    free(*field);
    *field = copy;
    return CAIRN_OK;
}

static void
list_clear(struct cairn_config_list *list)
{
    for (size_t i = 0; i < list->count; i++)
        free(list->items[i]);
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

static int
list_add(struct cairn_config_list *list, const char *item, size_t len)
{
    char **items = realloc(list->items, (list->count + 1) * sizeof(*items));

    if (items == NULL)
        return CAIRN_ENOMEM;
    list->items = items;
    if ((items[list->count] = strndup(item, len)) == NULL)
        return CAIRN_ENOMEM;
    list->count++;
    return CAIRN_OK;
}

static bool
list_contains(const struct cairn_config_list *list, const char *item)
{
    for (size_t i = 0; i < list->count; i++) {
        if (strcmp(list->items[i], item) == 0)
            return true;
    }
    return false;
}

static int
parse_list(const struct config_key *key, const char *text,
           struct cairn_config_list *field, char *why, size_t why_size)
{
    static const char separators[] = ", \t";
    struct cairn_config_list list = {0, NULL};
    int rc = CAIRN_OK;

    for (const char *at = text + strspn(text, separators); *at != '\0';
         at += strspn(at, separators)) {
        size_t len = strcspn(at, separators);
        const char *item;

        if ((rc = list_add(&list, at, len)) < 0)
            goto out;
        at += len;
        item = list.items[list.count - 1];
        if (!config_name_valid(item)) {
            rc = bad(why, why_size, "'%s' is not a valid name", item);
            goto out;
        }
        list.count--; /* look only at the items before this one */
        if (list_contains(&list, item)) {
            list.count++;
            rc = bad(why, why_size, "'%s' is listed twice", item);
            goto out;
        }
        list.count++;
    }
    if (list.count < key->min || list.count > key->max) {
        snprintf(why, why_size, "needs %llu to %llu names, not %zu",
                 (unsigned long long)key->min, (unsigned long long)key->max,
                 list.count);
        rc = CAIRN_ECONFIG;
        goto out;
    }
    list_clear(field);
    *field = list;
    list = (struct cairn_config_list){0, NULL};
out:
    list_clear(&list);
    return rc;
}

static int
parse_enum(const struct config_key *key, const char *text, int *field,
           char *why, size_t why_size)
{
    size_t used;

    for (int i = 0; key->choices[i] != NULL; i++) {
        if (strcmp(key->choices[i], text) == 0) {
            *field = i;
            return CAIRN_OK;
        }
    }
    used = (size_t)snprintf(why, why_size, "'%s' is not one of:", text);
    for (int i = 0; key->choices[i] != NULL && used < why_size; i++)
        used += (size_t)snprintf(why + used, why_size - used, "%s %s",
                                 i == 0 ? "" : ",", key->choices[i]);
    return CAIRN_ECONFIG;
}

int
config_value_parse(const struct config_key *key, const char *text,
                   void *section, char *why, size_t why_size)
{
    void *field = (char *)section + key->offset;

    switch (key->type) {
    case CONFIG_STRING:
        if ((key->flags & CONFIG_NAME) && !config_name_valid(text))
            return bad(why, why_size, "'%s' is not a valid name", text);
        return parse_text(key, text, field, why, why_size);
    case CONFIG_PATH:
    case CONFIG_ENDPOINT:
    case CONFIG_ADDRESS:
        return parse_text(key, text, field, why, why_size);
    case CONFIG_INTEGER:
    case CONFIG_SIZE:
    case CONFIG_DURATION:
        return parse_number(key, text, field, why, why_size);
    case CONFIG_BOOL:
        if (cairn_parse_bool(text, field) < 0)
            return bad(why, why_size, "'%s' is not a boolean (yes or no)",
                       text);
        return CAIRN_OK;
    case CONFIG_ENUM:
        return parse_enum(key, text, field, why, why_size);
    case CONFIG_MODE:
        return parse_mode(text, key->min, key->max, field, why, why_size);
    case CONFIG_LIST:
        return parse_list(key, text, field, why, why_size);
    }
    return CAIRN_EINVAL;
}

void
config_value_clear(const struct config_key *key, void *section)
{
    void *field = (char *)section + key->offset;

    switch (key->type) {
    case CONFIG_STRING:
    case CONFIG_PATH:
    case CONFIG_ENDPOINT:
    case CONFIG_ADDRESS:
        free(*(char **)field);
        *(char **)field = NULL;
        break;
    case CONFIG_LIST:
        list_clear(field);
        break;
    case CONFIG_BOOL:
        *(bool *)field = false;
        break;
    case CONFIG_ENUM:
        *(int *)field = 0;
        break;
    case CONFIG_INTEGER:
    case CONFIG_SIZE:
    case CONFIG_DURATION:
    case CONFIG_MODE:
        *(uint64_t *)field = 0;
        break;
    }
}

/* --- field to text --- */

int
config_value_format(const struct config_key *key, const void *section,
                    struct cairn_buf *out)
{
    const void *field = (const char *)section + key->offset;
    const struct cairn_config_list *list = field;
    char number[32];
    int rc = CAIRN_OK;

    switch (key->type) {
    case CONFIG_STRING:
    case CONFIG_PATH:
    case CONFIG_ENDPOINT:
    case CONFIG_ADDRESS:
        if (*(char *const *)field == NULL)
            return CAIRN_OK;
        if (key->flags & CONFIG_SECRET)
            return cairn_buf_append_str(out, "********");
        return cairn_buf_append_str(out, *(char *const *)field);
    case CONFIG_INTEGER:
        return cairn_buf_printf(out, "%llu",
                                (unsigned long long)*(const uint64_t *)field);
    case CONFIG_SIZE:
    case CONFIG_DURATION:
        format_scaled(*(const uint64_t *)field, key->type == CONFIG_DURATION,
                      number, sizeof(number));
        return cairn_buf_append_str(out, number);
    case CONFIG_BOOL:
        return cairn_buf_append_str(out, *(const bool *)field ? "yes" : "no");
    case CONFIG_ENUM:
        return cairn_buf_append_str(out, key->choices[*(const int *)field]);
    case CONFIG_MODE:
        return cairn_buf_printf(out, "%04llo",
                                (unsigned long long)*(const uint64_t *)field);
    case CONFIG_LIST:
        for (size_t i = 0; i < list->count && rc == CAIRN_OK; i++)
            rc = cairn_buf_printf(out, "%s%s", i == 0 ? "" : ", ",
                                  list->items[i]);
        return rc;
    }
    return CAIRN_EINVAL;
}
