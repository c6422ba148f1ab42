/*
 * test_config.c - unit tests for the cluster.conf reader: the example and
 * the built-in default parse to the values they document, every kind of
 * broken file fails at the right line with the right reason, and the
 * effective configuration prints back to text that parses the same.
 */
#include "check.h"
#include "config.h"

#include <stdlib.h>
#include <string.h>

/* Run from common/tests (ctest's working directory). */
#define EXAMPLE_PATH "../../cluster.example.conf"

/* A small valid file that the broken variants below are made from. */
static const char base_text[] = "[router]\n"                        /* 1 */
                                "control = tcp://127.0.0.1:5700\n"  /* 2 */
                                "\n"                                /* 3 */
                                "[channel backup]\n"                /* 4 */
                                "listen = 127.0.0.1:2005\n"         /* 5 */
                                "sasl_user = cairn\n"               /* 6 */
                                "sasl_password = secret\n"          /* 7 */
                                "destinations = main\n"             /* 8 */
                                "\n"                                /* 9 */
                                "[destination main]\n"              /* 10 */
                                "nodes = node1, node2\n"            /* 11 */
                                "replicas = 2\n"                    /* 12 */
                                "\n"                                /* 13 */
                                "[node node1]\n"                    /* 14 */
                                "endpoint = tcp://127.0.0.1:5701\n" /* 15 */
                                "data_dir = data/node1\n"           /* 16 */
                                "\n"                                /* 17 */
                                "[node node2]\n"                    /* 18 */
                                "endpoint = tcp://127.0.0.1:5702\n" /* 19 */
                                "data_dir = data/node2\n";          /* 20 */

/* base_text with the first occurrence of from replaced by to (owned). */
static char *
edit(const char *from, const char *to)
{
    const char *at = strstr(base_text, from);
    size_t head, size;
    char *text;

    if (at == NULL)
        return NULL;
    head = (size_t)(at - base_text);
    size = sizeof(base_text) + strlen(to);
    if ((text = malloc(size)) == NULL)
        return NULL;
    snprintf(text, size, "%.*s%s%s", (int)head, base_text, to,
             at + strlen(from));
    return text;
}

/*
 * Broken variants of base_text: replace from by to, expect an error at line
 * with a message containing reason.
 */
static const struct {
    const char *from, *to;
    unsigned line;
    const char *reason;
} broken_cases[] = {
    /* syntax */
    {"replicas = 2\n", "replicas = 2\nbogus = 1\n", 13,
     "unknown key 'bogus' in [destination main]"},
    {"replicas = 2\n", "replicas = 2\n%%% garbage\n", 13, "malformed line"},
    {"listen = 127", "listen 127", 5, "missing '=' after 'listen'"},
    {"[destination main]", "[dest main]", 10, "unknown section [dest]"},
    {"[destination main]", "[destination main", 10, "without ']'"},
    {"[channel backup]", "[channel]", 4, "needs a name"},
    {"[channel backup]", "[channel back/up]", 4, "not a valid name"},
    {"[router]", "[router x]", 1, "takes no name"},
    {"[channel backup]", "[ channel  back up ]", 4,
     "'back up' is not a valid name"},
    {"[router]\n", "servername = x\n[router]\n", 1, "outside of any section"},
    {"sasl_user = cairn\n", "sasl_user = cairn\nsasl_user = other\n", 7,
     "duplicate key 'sasl_user' in [channel backup] (first set on line "
     "6)"},
    {"[node node2]", "[node node1]", 18,
     "duplicate section [node node1] (first on line 14)"},
    {"replicas = 2\n", "replicas = 2\n[router]\n", 13,
     "duplicate section [router] (first on line 1)"},
    {"replicas = 2", "Re-plicas = 2", 12, "malformed key name"},
    /* values */
    {"replicas = 2", "replicas = two", 12, "'two' is not a number"},
    {"replicas = 2", "replicas = 0", 12, "'0' is out of range 1..16"},
    {"replicas = 2", "replicas = 17", 12, "out of range"},
    {"sasl_user = cairn", "sasl_user =", 6, "'sasl_user' needs a value"},
    {"endpoint = tcp://127.0.0.1:5701", "endpoint = 127.0.0.1:5701", 15,
     "not a ZeroMQ endpoint"},
    {"listen = 127.0.0.1:2005", "listen = 127.0.0.1:70000", 5, "not HOST:PORT"},
    {"listen = 127.0.0.1:2005", "listen = 127.0.0.1", 5, "not HOST:PORT"},
    {"[router]\n", "[router]\nnode_timeout = 10x\n", 2,
     "'10x' is not a duration"},
    {"[router]\n", "[router]\nnode_timeout = 2h\n", 2,
     "'2h' is out of range 100ms..1h"},
    {"[router]\n", "[router]\nspool_max = 1Q\n", 2, "not a size"},
    /* state_dir: a path takes any text; misplaced or twice is refused */
    {"[router]\n", "[router]\nstate_dir = a\nstate_dir = b\n", 3,
     "duplicate key 'state_dir' in [router] (first set on line 2)"},
    {"replicas = 2", "replicas = 2\nstate_dir = s", 13,
     "unknown key 'state_dir' in [destination main]"},
    {"[router]\n", "[router]\nlog_level = loud\n", 2,
     "'loud' is not one of: error, warn, info, debug"},
    {"replicas = 2", "replicas = 2\nack = some", 13,
     "not one of: all, quorum, one"},
    {"sasl_user = cairn", "compress = maybe", 6, "not a boolean"},
    {"nodes = node1, node2", "nodes = node1, no/de", 11,
     "'no/de' is not a valid name"},
    {"nodes = node1, node2", "nodes = node1, node1", 11, "listed twice"},
    {"nodes = node1, node2", "nodes = ,", 11, "needs 1 to 4096 names"},
    {"data_dir = data/node2", "data_dir = data/node2\nmax_frame = 1K", 21,
     "'1K' is out of range 4K..64M"},
    {"replicas = 2\n", "replicas = 2\n[compaction]\nretention = 7\n", 14,
     "'7' needs a unit"},
    {"replicas = 2\n", "replicas = 2\n[security]\ndata_mode = 0800\n", 14,
     "not an octal mode"},
    {"replicas = 2\n", "replicas = 2\n[compaction]\nparallel_users = 4\n", 14,
     "parallel_users = 4 is not supported (at most 1)"},
    /* missing things and references */
    {"[router]\ncontrol = tcp://127.0.0.1:5700\n", "", 18,
     "missing section [router]"},
    {"[channel backup]\nlisten = 127.0.0.1:2005\nsasl_user = cairn\n"
     "sasl_password = secret\ndestinations = main\n",
     "", 15, "missing section [channel NAME]"},
    {"[destination main]\nnodes = node1, node2\nreplicas = 2\n", "", 17,
     "missing section [destination NAME]"},
    {"data_dir = data/node2\n", "", 18,
     "[node node2] lacks required key 'data_dir'"},
    {"destinations = main", "destinations = main, offsite", 8,
     "[channel backup] names unknown destination 'offsite'"},
    {"nodes = node1, node2", "nodes = node1, node9", 11,
     "[destination main] names unknown node 'node9'"},
    {"replicas = 2", "replicas = 3", 12, "wants 3 replicas but has 2 nodes"},
    {"sasl_password = secret\n", "", 4,
     "needs sasl_password, sasl_password_file or sasl_db"},
    {"sasl_password = secret", "sasl_password = secret\nsasl_password_file = p",
     8, "sets its password both inline (sasl_password) and by file"},
    {"replicas = 2\n", "replicas = 2\n[security]\ndata_mode = 0400\n", 14,
     "'0400' must have the bits 0600 and none outside 0666"},
    {"replicas = 2\n", "replicas = 2\n[security]\ndata_mode = 0750\n", 14,
     "'0750' must have the bits 0600 and none outside 0666"},
    {"sasl_password = secret", "sasl_password = secret\nsasl_db = sdb", 8,
     "sets both sasl_password and sasl_db"},
    {"sasl_password = secret", "sasl_password = secret\nrequire_tls = on", 8,
     "require_tls needs tls_cert and tls_key"},
    {"sasl_password = secret", "sasl_password = secret\ntls_cert = c.pem", 8,
     "needs both tls_cert and tls_key"},
    {"sasl_password = secret", "sasl_password = secret\ntls_mode = implicit", 8,
     "tls_mode = implicit needs tls_cert and tls_key"},
    {"sasl_password = secret",
     "sasl_password = secret\ntls_cert = c\ntls_key = k\ntls_client_ca = ca",
     10, "tls_client_ca needs require_tls = yes or tls_mode = implicit"},
    {"sasl_password = secret",
     "sasl_password = secret\ntls_cert = c\ntls_key = k\n"
     "tls_client_subject = cyrus1",
     10, "tls_client_subject needs tls_client_ca"},
    {"127.0.0.1:5702", "127.0.0.1:5701", 19,
     "endpoint tcp://127.0.0.1:5701 is also used by [node node1]"},
    {"127.0.0.1:5702", "*:5702", 19, "router cannot connect to '*'"},
    {"127.0.0.1:5702", "127.0.0.1:5700", 19,
     "is also the router's control endpoint"},
    {"replicas = 2\n",
     "replicas = 2\n[compaction]\nmin_chunk = 2M\nmax_chunk = 1M\n", 14,
     "min_chunk is larger than max_chunk"},
};

static void
test_broken(void)
{
    for (size_t i = 0; i < sizeof(broken_cases) / sizeof(broken_cases[0]);
         i++) {
        struct cairn_config_error error;
        struct cairn_config *config = NULL;
        char *text;
        int rc;

        text = edit(broken_cases[i].from, broken_cases[i].to);
        CHECK(text != NULL);
        if (text == NULL)
            continue;
        rc = cairn_config_parse(text, strlen(text), "broken.conf", NULL,
                                &config, &error);
        CHECK_INT(rc, CAIRN_ECONFIG);
        CHECK(config == NULL);
        CHECK_STR(error.file, "broken.conf");
        CHECK_INT(error.line, broken_cases[i].line);
        if (strstr(error.message, broken_cases[i].reason) == NULL)
            CHECK_STR(error.message, broken_cases[i].reason);
        if (rc != CAIRN_ECONFIG || error.line != broken_cases[i].line ||
            strstr(error.message, broken_cases[i].reason) == NULL)
            fprintf(stderr, "  (case %zu: %s -> %s)\n", i, broken_cases[i].from,
                    broken_cases[i].to);
        cairn_config_free(config);
        free(text);
    }
}

static void
test_other_broken_input(void)
{
    static const char nul[] = "[router]\ncontrol = x\0y\n";
    struct cairn_config_error error;
    struct cairn_config *config = NULL;
    char *long_line = malloc(CAIRN_CONFIG_MAX_LINE + 16);

    CHECK_INT(cairn_config_parse(nul, sizeof(nul) - 1, "nul.conf", NULL,
                                 &config, &error),
              CAIRN_ECONFIG);
    CHECK_INT(error.line, 2);
    CHECK(strstr(error.message, "NUL") != NULL);
    CHECK_INT(cairn_config_parse("", 0, "empty.conf", NULL, &config, &error),
              CAIRN_ECONFIG);
    CHECK_INT(error.line, 1);
    CHECK_STR(error.message, "missing section [router]");
    if (long_line != NULL) {
        memset(long_line, '#', CAIRN_CONFIG_MAX_LINE + 15);
        long_line[CAIRN_CONFIG_MAX_LINE + 15] = '\0';
        CHECK_INT(cairn_config_parse(long_line, strlen(long_line), "long", NULL,
                                     &config, &error),
                  CAIRN_ECONFIG);
        CHECK(strstr(error.message, "longer than") != NULL);
    }
    free(long_line);
    CHECK_INT(cairn_config_load("/dev/zero", &config, &error), CAIRN_ETOOBIG);
    CHECK(strstr(error.message, "larger than") != NULL);
    CHECK_INT(cairn_config_load("no/such/cluster.conf", &config, &error),
              CAIRN_ENOENT);
    CHECK_STR(error.file, "no/such/cluster.conf");
    CHECK_INT(error.line, 0);
    CHECK(config == NULL);
}

/* The small file: defaults fill in whatever it does not say. */
static void
test_defaults(void)
{
    struct cairn_config *config = NULL;
    struct cairn_config_error error;
    const struct cairn_config_node *node;
    const struct cairn_config_destination *destination;
    const struct cairn_config_channel *channel;

    CHECK_INT(cairn_config_parse(base_text, strlen(base_text), "base.conf",
                                 "/srv/cairn", &config, &error),
              CAIRN_OK);
    if (config == NULL) {
        fprintf(stderr, "%s:%u: %s\n", error.file, error.line, error.message);
        return;
    }
    CHECK_STR(cairn_config_name(config), "base.conf");
    CHECK_STR(cairn_config_router(config)->spool_dir,
              "/srv/cairn/cairn-data/spool");
    CHECK_U64(cairn_config_router(config)->node_timeout_ms, 30000);
    CHECK(cairn_config_router(config)->pid_file == NULL);
    CHECK_STR(cairn_config_router(config)->state_dir,
              "/srv/cairn/cairn-data/router");
    CHECK_INT(cairn_config_router(config)->log_level, CAIRN_LOG_INFO);
    node = cairn_config_find_node(config, "node2");
    CHECK(node != NULL);
    CHECK(cairn_config_find_node(config, "node3") == NULL);
    if (node != NULL) {
        CHECK_STR(node->data_dir, "/srv/cairn/data/node2");
        CHECK_STR(node->zone, "node2");
        CHECK_U64(node->weight, 100);
        CHECK_U64(node->group_commit_ms, 5);
        CHECK_U64(node->max_frame, 1024 * 1024);
        CHECK(node->control == NULL);
    }
    destination = cairn_config_find_destination(config, "main");
    CHECK(destination != NULL);
    if (destination != NULL) {
        CHECK_STR(destination->ring_file,
                  "/srv/cairn/cairn-data/rings/main.ring");
        CHECK_INT(destination->ack, CAIRN_CONFIG_ACK_ALL);
        CHECK(destination->node_refs[1] == node);
    }
    channel = cairn_config_channel_at(config, 0);
    CHECK(channel == cairn_config_find_channel(config, "backup"));
    CHECK(cairn_config_channel_at(config, 1) == NULL);
    if (channel != NULL) {
        CHECK(channel->destination_refs[0] == destination);
        CHECK_INT(channel->sasl_mechanisms.count, 1);
        CHECK_STR(channel->sasl_mechanisms.items[0], "PLAIN");
        CHECK(channel->compress);
        CHECK(!channel->require_tls);
        CHECK_U64(channel->idle_timeout_ms, 30 * 60 * 1000);
    }
    CHECK_U64(cairn_config_security(config)->data_mode, 0600);
    CHECK(cairn_config_security(config)->curve); /* secure by default */
    CHECK_U64(cairn_config_compaction(config)->retention_ms,
              7ull * 86400 * 1000);
    CHECK_U64(cairn_config_limits(config)->max_nesting, 64);
    cairn_config_free(config);
}

/* Values of each type, set in the file, as the program sees them. */
static void
test_values(void)
{
    static const char text[] =
        "[router]\r\n"
        "  ; CRLF lines, blanks and both comment styles\r\n"
        "node_timeout=250ms\r\n"
        "\tspool_max =  2G \r\n"
        "log_level = debug\r\n"
        "pid_file = /run/cairn/router.pid\r\n"
        "state_dir = state\r\n"
        "[channel a]\nlisten = [::1]:2005\nsasl_user = u\n"
        "sasl_password = p#;x\nsasl_mechanisms = SCRAM-SHA-256 PLAIN\n"
        "destinations = d1,d2\nidle_timeout = 1d\ncompress = off\n"
        "[destination d1]\nnodes = n1\nreplicas = 1\nack = quorum\n"
        "ring_file = /var/lib/cairn/d1.ring\n"
        "[destination d2]\nnodes = n1 n2\n"
        "[node n1]\nendpoint = tcp://node-1.example:7000\ndata_dir = d/n1\n"
        "weight = 250\nzone = rack1\ngroup_commit = 0\nmax_frame = 64K\n"
        "reserve = 0\n"
        "[node n2]\nendpoint = tcp://node-2.example:7000\ndata_dir = d/n2\n"
        "[compaction]\nretention = 0\nmin_chunk = 64K\nmax_chunk = 64M\n";
    struct cairn_config *config = NULL;
    struct cairn_config_error error;
    const struct cairn_config_channel *channel;
    const struct cairn_config_node *node;

    CHECK_INT(cairn_config_parse(text, strlen(text), "values.conf", NULL,
                                 &config, &error),
              CAIRN_OK);
    if (config == NULL) {
        fprintf(stderr, "%s:%u: %s\n", error.file, error.line, error.message);
        return;
    }
    CHECK_U64(cairn_config_router(config)->node_timeout_ms, 250);
    CHECK_U64(cairn_config_router(config)->spool_max, 2ull << 30);
    CHECK_INT(cairn_config_router(config)->log_level, CAIRN_LOG_DEBUG);
    CHECK_STR(cairn_config_router(config)->pid_file, "/run/cairn/router.pid");
    CHECK_STR(cairn_config_router(config)->state_dir, "state"); /* as is */
    channel = cairn_config_find_channel(config, "a");
    CHECK(channel != NULL);
    if (channel != NULL) {
        CHECK_STR(channel->listen, "[::1]:2005");
        CHECK_STR(channel->sasl_password, "p#;x");
        CHECK_INT(channel->sasl_mechanisms.count, 2);
        CHECK_STR(channel->sasl_mechanisms.items[0], "SCRAM-SHA-256");
        CHECK(!channel->compress);
        CHECK_INT(channel->destinations.count, 2);
        CHECK(channel->destination_refs[1] ==
              cairn_config_destination_at(config, 1));
        CHECK_U64(channel->idle_timeout_ms, 86400ull * 1000);
    }
    CHECK_INT(cairn_config_find_destination(config, "d1")->ack,
              CAIRN_CONFIG_ACK_QUORUM);
    CHECK_STR(cairn_config_find_destination(config, "d2")->ring_file,
              "cairn-data/rings/d2.ring");
    node = cairn_config_node_at(config, 0);
    CHECK_STR(node->zone, "rack1");
    CHECK_U64(node->weight, 250);
    CHECK_U64(node->group_commit_ms, 0);
    CHECK_U64(node->max_frame, 64 * 1024);
    CHECK_U64(node->reserve, 0);
    CHECK_U64(cairn_config_compaction(config)->retention_ms, 0);
    CHECK_U64(cairn_config_compaction(config)->min_chunk, 64 * 1024);
    CHECK_INT(cairn_config_channel_count(config), 1);
    CHECK_INT(cairn_config_destination_count(config), 2);
    CHECK_INT(cairn_config_node_count(config), 2);
    cairn_config_free(config);
}

/* Reads the example file as text (owned), or NULL. */
static char *
read_example(void)
{
    FILE *file = fopen(EXAMPLE_PATH, "r");
    char *text = NULL;
    long size;

    if (file == NULL)
        return NULL;
    if (fseek(file, 0, SEEK_END) == 0 && (size = ftell(file)) > 0 &&
        fseek(file, 0, SEEK_SET) == 0 &&
        (text = calloc(1, (size_t)size + 1)) != NULL &&
        fread(text, 1, (size_t)size, file) != (size_t)size) {
        free(text);
        text = NULL;
    }
    fclose(file);
    return text;
}

/* The example file: it parses, and it is what the programs embed. */
static void
test_example(void)
{
    struct cairn_config *config = NULL, *builtin = NULL;
    struct cairn_config_error error;
    const struct cairn_config_destination *destination;
    char *text = read_example();

    CHECK(text != NULL);
    if (text != NULL)
        CHECK_STR(cairn_config_default_text(), text);
    free(text);
    CHECK_INT(cairn_config_load(EXAMPLE_PATH, &config, &error), CAIRN_OK);
    if (config == NULL) {
        fprintf(stderr, "%s:%u: %s\n", error.file, error.line, error.message);
        return;
    }
    CHECK_INT(cairn_config_channel_count(config), 1);
    CHECK_INT(cairn_config_destination_count(config), 1);
    CHECK_INT(cairn_config_node_count(config), 3);
    CHECK_STR(cairn_config_find_channel(config, "backup")->listen,
              "127.0.0.1:2005");
    destination = cairn_config_find_destination(config, "main");
    CHECK(destination != NULL);
    if (destination != NULL) {
        CHECK_U64(destination->replicas, 2);
        CHECK_INT(destination->nodes.count, 3);
        CHECK_STR(destination->ring_file, "../../cairn-data/rings/main.ring");
    }
    CHECK_STR(cairn_config_find_node(config, "node3")->data_dir,
              "../../cairn-data/node3");
    CHECK_STR(cairn_config_find_node(config, "node3")->endpoint,
              "tcp://127.0.0.1:5703");
    CHECK_INT(cairn_config_load_default(&builtin, &error), CAIRN_OK);
    if (builtin != NULL) {
        CHECK_STR(cairn_config_name(builtin), cairn_config_default_name);
        CHECK_STR(cairn_config_find_node(builtin, "node1")->data_dir,
                  "cairn-data/node1");
    }
    cairn_config_free(builtin);
    cairn_config_free(config);
}

/* Removes every " (default)" marker from text, in place. */
static void
strip_default_markers(char *text)
{
    static const char marker[] = " (default)";
    char *at;

    while ((at = strstr(text, marker)) != NULL)
        memmove(at, at + sizeof(marker) - 1,
                strlen(at + sizeof(marker) - 1) + 1);
}

/* The printed effective configuration parses back to the same thing. */
static void
test_format_round_trip(void)
{
    struct cairn_config *first = NULL, *second = NULL;
    struct cairn_config_error error;
    struct cairn_buf once, twice, tiny;

    cairn_buf_init(&once, 1 << 20);
    cairn_buf_init(&twice, 1 << 20);
    cairn_buf_init(&tiny, 100);
    CHECK_INT(cairn_config_load_default(&first, &error), CAIRN_OK);
    if (first == NULL)
        goto out;
    CHECK_INT(cairn_config_format(first, &once), CAIRN_OK);
    CHECK(strstr(once.data, "\n[node node2]\n") != NULL);
    CHECK(strstr(once.data, "\nsasl_password = ********\n") != NULL);
    CHECK(strstr(once.data, "\nzone = node2\n") != NULL);
    CHECK(strstr(once.data, "\nidle_timeout = 30m\n") != NULL);
    CHECK(strstr(once.data, "\ndata_mode = 0600\n") != NULL);
    CHECK(strstr(once.data, "\nnodes = node1, node2, node3\n") != NULL);
    CHECK(strstr(once.data, "\ngroup_commit = 5ms\n") != NULL);
    CHECK(strstr(once.data, "# share of users on the ring (default)\n") !=
          NULL);
    CHECK_INT(
        cairn_config_parse(once.data, once.len, "shown", NULL, &second, &error),
        CAIRN_OK);
    if (second == NULL) {
        fprintf(stderr, "shown:%u: %s\n", error.line, error.message);
        goto out;
    }
    CHECK_INT(cairn_config_format(second, &twice), CAIRN_OK);
    /* The second file sets every key, so only the markers and the first
     * line (the name) differ. */
    CHECK(strstr(twice.data, " (default)") == NULL);
    strip_default_markers(once.data);
    CHECK_STR(strchr(once.data, '\n'), strchr(twice.data, '\n'));
    CHECK_INT(cairn_config_format(second, &tiny), CAIRN_ETOOBIG);
out:
    cairn_buf_release(&once);
    cairn_buf_release(&twice);
    cairn_buf_release(&tiny);
    cairn_config_free(first);
    cairn_config_free(second);
}

static void
test_format_json(void)
{
    static const char *const expected[] = {
        "{\"file\":\"(built-in cluster.example.conf)\",\"router\":{",
        "\"node_timeout_ms\":30000,",
        "\"pid_file\":null,",
        "\"state_dir\":\"cairn-data/router\"",
        "\"channels\":[{\"name\":\"backup\",\"listen\":\"127.0.0.1:2005\"",
        "\"sasl_password\":\"********\"",
        "\"destinations\":[\"main\"]",
        "\"nodes\":[{\"name\":\"node1\",\"endpoint\":",
        "\"require_tls\":false,",
        "\"ack\":\"all\"",
        "\"data_mode\":\"0600\"",
        "\"max_frame\":1048576}}\n",
    };
    struct cairn_config *config = NULL;
    struct cairn_config_error error;
    struct cairn_buf out, tiny;

    cairn_buf_init(&out, 1 << 20);
    cairn_buf_init(&tiny, 64);
    CHECK_INT(cairn_config_load_default(&config, &error), CAIRN_OK);
    if (config == NULL)
        return;
    CHECK_INT(cairn_config_format_json(config, &out), CAIRN_OK);
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
        if (strstr(out.data, expected[i]) == NULL)
            CHECK_STR(out.data, expected[i]);
    }
    CHECK_INT(cairn_config_format_json(config, &tiny), CAIRN_ETOOBIG);
    cairn_buf_release(&out);
    cairn_buf_release(&tiny);
    cairn_config_free(config);
}

/* A destination of many nodes: one long "nodes =" line. */
static void
test_many_nodes(void)
{
    enum { NODES = 1000 };
    struct cairn_config *config = NULL;
    struct cairn_config_error error;
    const struct cairn_config_destination *destination;
    struct cairn_buf text;

    cairn_buf_init(&text, CAIRN_CONFIG_MAX_FILE);
    cairn_buf_append_str(&text, "[router]\n[channel c]\nlisten = *:2005\n"
                                "sasl_user = u\nsasl_db = /etc/sasldb2\n"
                                "destinations = d\n[destination d]\nnodes =");
    for (int i = 0; i < NODES; i++)
        cairn_buf_printf(&text, " node%d", i);
    for (int i = 0; i < NODES; i++)
        cairn_buf_printf(&text,
                         "\n[node node%d]\nendpoint = tcp://10.1.%d.%d:7000\n"
                         "data_dir = /srv/%d",
                         i, i / 256, i % 256, i);
    CHECK(text.len > 4 * 4096);
    CHECK_INT(
        cairn_config_parse(text.data, text.len, "many", NULL, &config, &error),
        CAIRN_OK);
    destination = config ? cairn_config_find_destination(config, "d") : NULL;
    CHECK(destination != NULL);
    if (destination != NULL) {
        CHECK_INT(destination->nodes.count, NODES);
        CHECK(destination->node_refs[NODES - 1] ==
              cairn_config_node_at(config, NODES - 1));
        CHECK_STR(destination->node_refs[NODES - 1]->data_dir, "/srv/999");
    }
    cairn_config_free(config);
    cairn_buf_release(&text);
}

int
main(void)
{
    test_broken();
    test_other_broken_input();
    test_defaults();
    test_values();
    test_example();
    test_format_round_trip();
    test_format_json();
    test_many_nodes();
    return check_exit("test_config");
}
