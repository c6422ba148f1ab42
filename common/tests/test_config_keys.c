/*
 * test_config_keys.c - no setting is accepted and ignored. Walks every key
 * of every section kind in the key table (config_keys.c):
 *   - a key no daemon implements (CONFIG_UNSUPPORTED) must be refused with
 *     "FILE:LINE: KEY is not supported" when set to another value than its
 *     default;
 *   - every other key must be listed below with a value other than its
 *     default, which must parse and change what the programs read (the
 *     formatted section differs), and with the place in the sources that
 *     reads it (file and text): a key added to the table without a reader
 *     fails here. The behaviour behind each reader is proved by the tests
 *     of its module (named in the row's comment where it is not obvious).
 */
#include "../config_int.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SOURCE_DIR "../.."

struct proof {
    const char *kind, *key, *value;
    const char *file, *reader; /* NULL for a key refused as unsupported */
};

static const struct proof proofs[] = {
    {"router", "control", "tcp://127.0.0.1:6700", "router/main.c",
     "cairn_config_router(config)->control"},
    {"router", "spool_dir", "/tmp/s", "router/main.c", "router->spool_dir"},
    {"router", "spool_max", "2G", "router/main.c", "router->spool_max"},
    {"router", "servername", "other", "router/main.c", "router->servername"},
    {"router", "node_timeout", "5s", "router/main.c",
     "router->node_timeout_ms"},
    {"router", "node_answer_timeout", "1s", "router/main.c",
     "router->node_answer_timeout_ms"},
    {"router", "node_window", "3", "router/main.c", "router->node_window"},
    {"router", "user_window", "2", "router/main.c", "router->user_window"},
    {"router", "max_connections", "9", "router/main.c",
     "router->max_connections"},
    {"router", "log_level", "debug", "router/main.c",
     "cairn_config_router(config)->log_level"},
    {"router", "pid_file", "/tmp/r.pid", "router/main.c",
     "cairn_config_router(config)->pid_file"},
    /* the default of every destination's ring_file */
    {"router", "ring_dir", "/tmp/rings", "common/config.c", "router->ring_dir"},
    {"router", "state_dir", "/tmp/st", "router/main.c", "router->state_dir"},
    {"channel", "listen", "127.0.0.1:3005", "router/main.c", "channel->listen"},
    {"channel", "sasl_user", "other", "router/main.c", "channel->sasl_user"},
    {"channel", "sasl_password", "other", "router/main.c",
     "channel->sasl_password"},
    {"channel", "sasl_db", "/tmp/sasldb", "router/main.c", "channel->sasl_db"},
    /* integration_privileges: read at start, warned about when exposed */
    {"channel", "sasl_password_file", "/tmp/password", "router/main.c",
     "channel->sasl_password_file"},
    {"channel", "sasl_mechanisms", "PLAIN SCRAM-SHA-256", "router/main.c",
     "channel->sasl_mechanisms"},
    /* TLS: integration_tls (a real sync_client, STARTTLS and implicit,
     * client certificates; the values after the first line are what
     * each key needs beside it) */
    {"channel", "require_tls", "yes\ntls_cert = /c.pem\ntls_key = /k.pem",
     "router/main.c", "channel->require_tls"},
    {"channel", "tls_cert", "/c.pem\ntls_key = /k.pem", "router/main.c",
     "channel->tls_cert"},
    {"channel", "tls_key", "/k.pem\ntls_cert = /c.pem", "router/main.c",
     "channel->tls_key"},
    {"channel", "tls_mode", "implicit\ntls_cert = /c.pem\ntls_key = /k.pem",
     "router/main.c", "channel->tls_mode"},
    {"channel", "tls_client_ca",
     "/ca.pem\ntls_cert = /c.pem\ntls_key = /k.pem\nrequire_tls = yes",
     "router/main.c", "channel->tls_client_ca"},
    {"channel", "tls_client_subject",
     "cyrus1\ntls_cert = /c.pem\ntls_key = /k.pem\nrequire_tls = yes\n"
     "tls_client_ca = /ca.pem",
     "router/main.c", "channel->tls_client_subject"},
    /* test_channel_scope.py: out-of-scope users get NO, nothing stored */
    {"channel", "users", "*@a.example", "router/main.c", "route->users"},
    {"channel", "compress", "no", "router/main.c", "channel->compress"},
    {"channel", "destinations", "main main2", "router/main.c",
     "channel->destinations"},
    {"channel", "idle_timeout", "1m", "router/main.c",
     "channel->idle_timeout_ms"},
    {"destination", "nodes", "node1 node2 node3", "router/main.c",
     "destination->nodes"},
    {"destination", "replicas", "1", "ops/cmd_ring.c", "destination->replicas"},
    {"destination", "ring_file", "/tmp/x.ring", "router/main.c",
     "destination->ring_file"},
    {"destination", "ack", "one", "router/main.c", "destination->ack"},
    {"node", "endpoint", "tcp://127.0.0.1:6701", "node/main.c",
     "node->endpoint"},
    {"node", "control", "tcp://127.0.0.1:6799", NULL, NULL},
    {"node", "data_dir", "/tmp/d", "node/main.c", "node->data_dir"},
    {"node", "weight", "7", "ops/cmd_ring.c", "node->weight"},
    {"node", "zone", "z", "ops/cmd_ring.c", "node->zone"},
    {"node", "group_commit", "0", "node/main.c", "node->group_commit_ms"},
    {"node", "max_frame", "64K", "node/main.c", "node->max_frame"},
    {"node", "reserve", "1G", "node/main.c", "node->reserve"},
    {"node", "log_level", "debug", "node/main.c", "->log_level"},
    {"compaction", "enabled", "no", "node/main.c", "compaction->enabled"},
    {"compaction", "interval", "1h", "node/main.c", "compaction->interval_ms"},
    {"compaction", "retention", "1d", "node/main.c",
     "compaction->retention_ms"},
    {"compaction", "min_chunk", "2M", "node/main.c", "compaction->min_chunk"},
    {"compaction", "max_chunk", "128M", "node/main.c", "compaction->max_chunk"},
    {"compaction", "work_threshold", "50", "node/main.c",
     "compaction->work_threshold"},
    /* only 1 is implemented: 2 must be refused */
    {"compaction", "parallel_users", "2", NULL, NULL},
    /* the scrub: test_server_scrub (quarantine, figures) */
    {"scrub", "enabled", "no", "node/main.c",
     "cairn_config_scrub(config)->enabled"},
    {"scrub", "interval", "1d", "node/main.c",
     "cairn_config_scrub(config)->interval_ms"},
    {"scrub", "rate", "1M", "node/main.c", "cairn_config_scrub(config)->rate"},
    {"scrub", "level", "light", "node/main.c",
     "cairn_config_scrub(config)->level"},
    /* self-heal: integration_heal_drills */
    {"scrub", "heal", "no", "node/main.c", "cairn_config_scrub(config)->heal"},
    /* CURVE: test_curve (node and router control, roles, rogue peers) */
    {"security", "curve", "no", "common/curve.c", "security->curve"},
    {"security", "curve_key_dir", "/tmp/keys", "common/curve.c",
     "security->curve_key_dir"},
    {"security", "writer_keys", "r1 r2", "common/curve.c",
     "security->writer_keys"},
    {"security", "admin_keys", "ops", "common/curve.c", "security->admin_keys"},
    {"security", "peer_keys", "n1", "common/curve.c", "security->peer_keys"},
    {"router", "curve_key", "r1", "common/curve.c", "router->curve_key"},
    {"node", "curve_key", "n1", "common/curve.c", "node->curve_key"},
    /* test_metrics_prometheus.py: a real Prometheus scrapes both */
    {"router", "metrics_listen", "127.0.0.1:9100", "router/main.c",
     "router->metrics_listen"},
    {"node", "metrics_listen", "127.0.0.1:9101", "node/main.c",
     "node->metrics_listen"},
    /* integration_privileges: the walk of every file's owner and mode */
    {"security", "data_mode", "0640", "router/main.c", "security->data_mode"},
    {"security", "user", "nobody", "node/main.c", "security->user"},
    {"limits", "max_line", "2M", "router/main.c", "limits->max_line"},
    {"limits", "max_literal", "1M", "router/main.c", "limits->max_literal"},
    {"limits", "max_message", "2G", "router/main.c", "limits->max_message"},
    {"limits", "max_nesting", "10", "router/main.c", "limits->max_nesting"},
    {"limits", "max_frame", "2M", "router/main.c", "->max_frame"},
};

/* A small valid file; each section ends where a key line can be added. */
static const char *const base_sections[] = {
    "[router]\n",
    "[channel backup]\nlisten = 127.0.0.1:2005\nsasl_user = cairn\n"
    "sasl_password = secret\ndestinations = main\n",
    "[destination main]\nnodes = node1, node2\nreplicas = 2\n",
    "[node node1]\nendpoint = tcp://127.0.0.1:5701\ndata_dir = d1\n",
    "[compaction]\n",
    "[scrub]\n",
    "[security]\n",
    "[limits]\n",
};
static const char *const base_names[] = {
    "router",     "channel", "destination", "node",
    "compaction", "scrub",   "security",    "limits",
};
static const char tail_sections[] =
    "[destination main2]\nnodes = node3\nreplicas = 1\n"
    "[node node2]\nendpoint = tcp://127.0.0.1:5702\ndata_dir = d2\n"
    "[node node3]\nendpoint = tcp://127.0.0.1:5703\ndata_dir = d3\n";

/* Appends section without its own line for key (and without
 * sasl_password when key is sasl_db or sasl_password_file: only one of
 * them may be set). */
static void
append_section(struct cairn_buf *text, const char *section, const char *key)
{
    for (const char *at = section; *at != '\0';) {
        size_t len = strcspn(at, "\n") + 1;
        size_t name_len = strcspn(at, " =");
        bool skip =
            key != NULL &&
            ((name_len == strlen(key) && memcmp(at, key, name_len) == 0) ||
             ((strcmp(key, "sasl_db") == 0 ||
               strcmp(key, "sasl_password_file") == 0) &&
              strncmp(at, "sasl_password ", 14) == 0));

        if (!skip)
            cairn_buf_append(text, at, len);
        at += len;
    }
}

/* The base file with "key = value" at the end of kind's section. */
static char *
file_with(const char *kind, const char *key, const char *value, unsigned *line)
{
    struct cairn_buf text;
    char *out = NULL;
    size_t len;

    cairn_buf_init(&text, 1 << 16);
    *line = 0;
    for (size_t i = 0; i < sizeof(base_names) / sizeof(base_names[0]); i++) {
        bool here = key != NULL && strcmp(base_names[i], kind) == 0;

        append_section(&text, base_sections[i], here ? key : NULL);
        if (here) {
            for (size_t j = 0; j < text.len; j++)
                *line += text.data[j] == '\n';
            (*line)++;
            cairn_buf_printf(&text, "%s = %s\n", key, value);
        }
    }
    cairn_buf_append_str(&text, tail_sections);
    cairn_buf_detach(&text, &out, &len);
    return out;
}

/* The effective configuration as text, owned. */
static char *
formatted(const struct cairn_config *config)
{
    struct cairn_buf text;
    char *out = NULL;
    size_t len;

    cairn_buf_init(&text, 1 << 20);
    if (cairn_config_format(config, &text) < 0 ||
        cairn_buf_append(&text, "", 1) < 0) {
        cairn_buf_release(&text);
        return NULL;
    }
    cairn_buf_detach(&text, &out, &len);
    return out;
}

static bool
source_mentions(const char *file, const char *text)
{
    char path[512], *content = NULL;
    FILE *stream;
    long size;
    bool found = false;

    snprintf(path, sizeof(path), "%s/%s", SOURCE_DIR, file);
    if ((stream = fopen(path, "r")) == NULL)
        return false;
    if (fseek(stream, 0, SEEK_END) == 0 && (size = ftell(stream)) > 0 &&
        fseek(stream, 0, SEEK_SET) == 0 &&
        (content = calloc(1, (size_t)size + 1)) != NULL &&
        fread(content, 1, (size_t)size, stream) == (size_t)size)
        found = strstr(content, text) != NULL;
    free(content);
    fclose(stream);
    return found;
}

static const struct proof *
find_proof(const char *kind, const char *key)
{
    for (size_t i = 0; i < sizeof(proofs) / sizeof(proofs[0]); i++)
        if (strcmp(proofs[i].kind, kind) == 0 &&
            strcmp(proofs[i].key, key) == 0)
            return &proofs[i];
    return NULL;
}

static void
check_refused(const struct proof *proof)
{
    struct cairn_config *config = NULL;
    struct cairn_config_error error;
    char expected[256];
    unsigned line;
    char *text = file_with(proof->kind, proof->key, proof->value, &line);

    CHECK_INT(cairn_config_parse(text, strlen(text), "keys.conf", NULL, &config,
                                 &error),
              CAIRN_ECONFIG);
    CHECK_INT(error.line, line);
    snprintf(expected, sizeof(expected), "%s", proof->key);
    if (strstr(error.message, "is not supported") == NULL ||
        strncmp(error.message, expected, strlen(expected)) != 0) {
        check_failures++;
        fprintf(stderr,
                "[%s] %s = %s: '%s', expected '%s ... is not "
                "supported'\n",
                proof->kind, proof->key, proof->value, error.message,
                proof->key);
    }
    cairn_config_free(config);
    free(text);
}

static void
check_implemented(const struct config_kind *kind, const struct config_key *key,
                  const struct proof *proof, const char *default_text)
{
    struct cairn_config *config = NULL;
    struct cairn_config_error error;
    unsigned line;
    char *text = file_with(proof->kind, proof->key, proof->value, &line);
    char *effective = NULL;

    if (cairn_config_parse(text, strlen(text), "keys.conf", NULL, &config,
                           &error) < 0) {
        check_failures++;
        fprintf(stderr, "[%s] %s = %s refused: %s:%u: %s\n", proof->kind,
                proof->key, proof->value, error.file, error.line,
                error.message);
        goto out;
    }
    effective = formatted(config);
    if (effective != NULL && (key->flags & CONFIG_SECRET)) {
        /* printed as ********: look at the field itself */
        size_t count;
        const char *field =
            *(char **)((char *)config_named_sections(config, kind, &count)[0] +
                       key->offset);

        CHECK(field != NULL && strcmp(field, proof->value) == 0);
    } else if (effective == NULL || strcmp(effective, default_text) == 0) {
        check_failures++;
        fprintf(stderr, "[%s] %s = %s changes nothing the programs read\n",
                proof->kind, proof->key, proof->value);
    }
    if (!source_mentions(proof->file, proof->reader)) {
        check_failures++;
        fprintf(stderr, "[%s] %s: %s does not read it (no '%s')\n", proof->kind,
                proof->key, proof->file, proof->reader);
    }
out:
    free(effective);
    cairn_config_free(config);
    free(text);
}

int
main(void)
{
    struct cairn_config *config = NULL;
    struct cairn_config_error error;
    unsigned line;
    char *text = file_with("", NULL, NULL, &line), *default_text = NULL;

    CHECK_INT(cairn_config_parse(text, strlen(text), "keys.conf", NULL, &config,
                                 &error),
              CAIRN_OK);
    if (config == NULL) {
        fprintf(stderr, "%s:%u: %s\n", error.file, error.line, error.message);
        free(text);
        return check_exit("test_config_keys");
    }
    default_text = formatted(config);
    for (size_t k = 0; k < config_kind_count; k++) {
        const struct config_kind *kind = &config_kinds[k];

        for (size_t i = 0; i < kind->key_count; i++) {
            const struct config_key *key = &kind->keys[i];
            const struct proof *proof = find_proof(kind->name, key->name);

            check_count++;
            if (proof == NULL) {
                check_failures++;
                fprintf(stderr,
                        "[%s] %s: no proof that a program reads it "
                        "and no refusal; add a row to this test\n",
                        kind->name, key->name);
                continue;
            }
            if (!config_key_supported(key) ||
                (key->flags & CONFIG_MAX_SUPPORTED)) {
                CHECK(proof->file == NULL);
                check_refused(proof);
            } else {
                CHECK(proof->file != NULL);
                if (proof->file != NULL)
                    check_implemented(kind, key, proof, default_text);
            }
        }
    }
    free(default_text);
    cairn_config_free(config);
    free(text);
    return check_exit("test_config_keys");
}
