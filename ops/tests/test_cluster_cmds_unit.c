/*
 * test_cluster_cmds_unit.c - the pieces of cairnctl's cluster commands
 * that need no node: timeouts, sizes, ages and dates as printed, the
 * sorted name set, usage errors, and a node that is not there answering
 * "unavailable" within the timeout instead of hanging.
 */
#include "check.h"
#include "cluster_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void
test_parse_timeout(void)
{
    static const struct {
        const char *text;
        int rc;
        uint64_t ms;
    } cases[] = {
        {"500ms", 0, 500},           {"5s", 0, 5000},
        {"2m", 0, 120000},           {"7", 0, 7000},
        {"0ms", CAIRN_EOVERFLOW, 0}, {"0", CAIRN_EOVERFLOW, 0},
        {"2d", CAIRN_EOVERFLOW, 0},  {"ms", CAIRN_EPARSE, 0},
        {"-1s", CAIRN_EPARSE, 0},    {"5 s", CAIRN_EPARSE, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t ms = 0;
        int rc = cairn_ops_parse_timeout(cases[i].text, &ms);

        if (cases[i].rc == 0) {
            CHECK_INT(rc, 0);
            CHECK_U64(ms, cases[i].ms);
        } else {
            CHECK(rc < 0);
        }
    }
}

static void
test_formats(void)
{
    static const struct {
        uint64_t bytes;
        const char *text;
    } sizes[] = {
        {0, "0 B"},
        {1023, "1023 B"},
        {1024, "1.0 KiB"},
        {1536, "1.5 KiB"},
        {UINT64_C(5) << 30, "5.0 GiB"},
    };
    static const struct {
        int64_t seconds;
        const char *text;
    } ages[] = {
        {-5, "0s"},        {59, "59s"},
        {119, "119s"},     {120, "2m"},
        {7199, "119m"},    {7200, "2h00m"},
        {90061, "25h01m"}, {3 * 86400 + 3600, "3d01h"},
    };
    char text[64];

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        cairn_ops_format_bytes(sizes[i].bytes, text, sizeof(text));
        CHECK_STR(text, sizes[i].text);
    }
    for (size_t i = 0; i < sizeof(ages) / sizeof(ages[0]); i++) {
        cairn_ops_format_age(ages[i].seconds, text, sizeof(text));
        CHECK_STR(text, ages[i].text);
    }
    cairn_ops_format_time(0, text, sizeof(text));
    CHECK_STR(text, "never");
    cairn_ops_format_time(1795671815, text, sizeof(text));
    CHECK_STR(text, "2026-11-26T05:43:35Z");
}

static void
test_names(void)
{
    static const char *const added[] = {"mallory", "bob", "alice",
                                        "bob",     "eve", "alice@example.org"};
    static const char *const sorted[] = {"alice", "alice@example.org", "bob",
                                         "eve", "mallory"};
    struct cairn_ops_names set = {0};

    for (size_t i = 0; i < sizeof(added) / sizeof(added[0]); i++)
        CHECK_INT(cairn_ops_names_add(&set, added[i]), 0);
    CHECK_U64(set.count, 5);
    for (size_t i = 0; i < set.count && i < 5; i++) {
        CHECK_STR(set.names[i], sorted[i]);
        CHECK_INT(cairn_ops_names_find(&set, sorted[i]), (long)i);
    }
    CHECK_INT(cairn_ops_names_find(&set, "carol"), -1);
    CHECK_INT(cairn_ops_names_find(&set, ""), -1);
    cairn_ops_names_release(&set);
    CHECK_INT(cairn_ops_names_find(&set, "bob"), -1);
}

/* A loopback port nothing listens on: bound, read back, closed. */
static int
free_port(void)
{
    struct sockaddr_in address = {0};
    socklen_t len = sizeof(address);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;

    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 &&
        bind(fd, (struct sockaddr *)&address, sizeof(address)) == 0 &&
        getsockname(fd, (struct sockaddr *)&address, &len) == 0)
        port = ntohs(address.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* A config naming one node on a port nothing listens on. */
static struct cairn_config *
dead_node_config(void)
{
    struct cairn_config *config = NULL;
    char text[512];
    int port = free_port();

    CHECK(port > 0);
    snprintf(text, sizeof(text),
             "[router]\n[channel backup]\nlisten = 127.0.0.1:1\n"
             "sasl_user = u\nsasl_password = p\ndestinations = main\n"
             "[destination main]\nnodes = gone\nreplicas = 1\n[node gone]\n"
             "endpoint = tcp://127.0.0.1:%d\ndata_dir = /nonexistent\n",
             port);
    CHECK_INT(cairn_config_parse(text, strlen(text), "dead.conf", NULL, &config,
                                 NULL),
              0);
    return config;
}

static uint64_t
now_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

static void
test_dead_node(void)
{
    struct cairn_config *config = dead_node_config();
    struct cairn_ops_node_call call = {0};
    uint64_t started = now_ms();

    if (config == NULL)
        return;
    call.node = 0;
    call.kind = CAIRN__KIND__STATUS_REQUEST;
    CHECK_INT(cairn_ops_call_nodes(config, &call, 1, 300), 0);
    CHECK(cairn_ops_unreachable(call.status));
    CHECK(call.status_reply == NULL);
    CHECK(call.error_text[0] != '\0');
    CHECK(now_ms() - started < 2500);
    cairn_ops_node_call_release(&call);
    cairn_config_free(config);
}

/* Runs cairnctl with argv; returns the exit status, output discarded. */
static int
run(char **argv)
{
    FILE *out = fopen("/dev/null", "w"), *err = fopen("/dev/null", "w");
    int argc = 0, status;

    while (argv[argc] != NULL)
        argc++;
    status = cairn_ops_main(argc, argv, out, err);
    fclose(out);
    fclose(err);
    return status;
}

static void
test_usage(void)
{
    static const struct {
        const char *words[8];
        int status;
    } cases[] = {
        {{"status", "-t", "soon"}, 64},
        {{"status", "bob"}, 64}, /* users only with --users */
        {{"verify", "--bogus"}, 64},
        {{"compact", "--full"}, 64}, /* --full is verify's */
        {{"user"}, 64},
        {{"user", "show"}, 64},
        {{"user", "dump", "alice"}, 64}, /* needs -d */
        {{"user", "frobnicate", "x"}, 64},
        {{"help", "verify"}, 0},
        {{"help", "user"}, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[10] = {"cairnctl"};
        size_t argc = 1;

        for (size_t w = 0; w < 8 && cases[i].words[w] != NULL; w++)
            argv[argc++] = (char *)cases[i].words[w];
        argv[argc] = NULL;
        CHECK_INT(run(argv), cases[i].status);
    }
}

int
main(void)
{
    test_parse_timeout();
    test_formats();
    test_names();
    test_dead_node();
    test_usage();
    return check_exit("test_cluster_cmds_unit");
}
