/*
 * test_cluster_cmds_unit.c - the pieces of cairnctl's cluster commands
 * that need no node: timeouts, sizes, ages and dates as printed, the
 * sorted name set, usage errors, and a node that is not there answering
 * "unavailable" within the timeout instead of hanging, and a stand-in
 * node answering ENOTSUP or a malformed body.
 */
#include "check.h"
#include "cluster_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

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
             "[security]\ncurve = no\n" /* a fake node in plain text */
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

/*
 * A stand-in node on a thread: a ROUTER socket answering every request
 * with what the test sets - an ERROR with a code, or a reply of the right
 * kind whose body is not a protobuf - to see cairnctl handle both.
 */
struct fake_node {
    void *context, *socket;
    char endpoint[128];
    int error_code; /* answer ERROR with this; 0: a garbage body */
    volatile int stop;
    pthread_t thread;
};

static void
fake_answer(struct fake_node *fake, zmq_msg_t *identity,
            const Cairn__Envelope *request)
{
    Cairn__Envelope reply = CAIRN__ENVELOPE__INIT;
    uint8_t packed[512];
    size_t len;

    reply.request_id = request->request_id;
    if (fake->error_code != 0) {
        reply.kind = CAIRN__KIND__ERROR;
        reply.error_code = fake->error_code;
        reply.error_text = "compaction is off on this node";
    } else {
        reply.kind = request->kind + 1; /* STATUS_REQUEST -> STATUS_REPLY */
        reply.has_body = true;
        reply.payload_frames = 1;
    }
    len = cairn__envelope__pack(&reply, packed);
    zmq_msg_send(identity, fake->socket, ZMQ_SNDMORE);
    zmq_send(fake->socket, packed, len, fake->error_code ? 0 : ZMQ_SNDMORE);
    if (fake->error_code == 0)
        zmq_send(fake->socket, "\xff\xff\xff", 3, 0);
}

static void *
fake_run(void *arg)
{
    struct fake_node *fake = arg;

    while (!fake->stop) {
        zmq_pollitem_t item = {fake->socket, 0, ZMQ_POLLIN, 0};
        zmq_msg_t identity, head;
        Cairn__Envelope *request;
        int more = 1;
        size_t size = sizeof(more);

        if (zmq_poll(&item, 1, 50) <= 0)
            continue;
        zmq_msg_init(&identity);
        zmq_msg_init(&head);
        zmq_msg_recv(&identity, fake->socket, 0);
        zmq_msg_recv(&head, fake->socket, 0);
        request = cairn__envelope__unpack(NULL, zmq_msg_size(&head),
                                          zmq_msg_data(&head));
        zmq_getsockopt(fake->socket, ZMQ_RCVMORE, &more, &size);
        while (more) { /* the request's own frames: not needed */
            zmq_msg_t frame;

            zmq_msg_init(&frame);
            zmq_msg_recv(&frame, fake->socket, 0);
            zmq_msg_close(&frame);
            zmq_getsockopt(fake->socket, ZMQ_RCVMORE, &more, &size);
        }
        if (request != NULL)
            fake_answer(fake, &identity, request);
        cairn__envelope__free_unpacked(request, NULL);
        zmq_msg_close(&identity);
        zmq_msg_close(&head);
    }
    return NULL;
}

static int
fake_start(struct fake_node *fake, int error_code)
{
    size_t len = sizeof(fake->endpoint);

    memset(fake, 0, sizeof(*fake));
    fake->error_code = error_code;
    fake->context = zmq_ctx_new();
    fake->socket = zmq_socket(fake->context, ZMQ_ROUTER);
    if (zmq_bind(fake->socket, "tcp://127.0.0.1:*") != 0 ||
        zmq_getsockopt(fake->socket, ZMQ_LAST_ENDPOINT, fake->endpoint, &len) !=
            0)
        return CAIRN_EIO;
    return pthread_create(&fake->thread, NULL, fake_run, fake) == 0
               ? 0
               : CAIRN_ENOMEM;
}

static void
fake_stop(struct fake_node *fake)
{
    fake->stop = 1;
    pthread_join(fake->thread, NULL);
    zmq_close(fake->socket);
    zmq_ctx_term(fake->context);
}

/* Runs cairnctl -c a config whose one node is at endpoint. */
static int
run_against(const char *endpoint, const char *command, const char *user,
            char *output, size_t size)
{
    char path[] = "/tmp/cairn-test-unit-conf-XXXXXX";
    char *argv[] = {"cairnctl",      "-c",         path,
                    (char *)command, (char *)user, NULL};
    FILE *file, *out = fmemopen(output, size, "w");
    FILE *err = fopen("/dev/null", "w");
    int fd = mkstemp(path), status;

    CHECK(fd >= 0);
    file = fdopen(fd, "w");
    fprintf(file,
            "[security]\ncurve = no\n" /* a fake node in plain text */
            "[router]\n[channel backup]\nlisten = 127.0.0.1:1\n"
            "sasl_user = u\nsasl_password = p\ndestinations = main\n"
            "[destination main]\nnodes = fake\nreplicas = 1\n"
            "[node fake]\nendpoint = %s\ndata_dir = /nonexistent\n",
            endpoint);
    fclose(file);
    memset(output, 0, size);
    status = cairn_ops_main(user ? 5 : 4, argv, out, err);
    fclose(out);
    fclose(err);
    unlink(path);
    return status;
}

static void
test_fake_nodes(void)
{
    struct fake_node fake;
    char output[4096];

    /* A node that does not compact on request says so; exit 1. */
    CHECK_INT(fake_start(&fake, CAIRN_ENOTSUP), 0);
    CHECK_INT(
        run_against(fake.endpoint, "compact", "alice", output, sizeof(output)),
        1);
    CHECK(strstr(output, "alice") != NULL);
    CHECK(strstr(output, "does not compact on request (ENOTSUP)") != NULL);
    CHECK_INT(
        run_against(fake.endpoint, "verify", "alice", output, sizeof(output)),
        1);
    CHECK(strstr(output, "FAILED") != NULL);
    fake_stop(&fake);
    /* A reply whose body is not a StatusReply: an error, not a crash. */
    CHECK_INT(fake_start(&fake, 0), 0);
    CHECK_INT(
        run_against(fake.endpoint, "status", NULL, output, sizeof(output)), 1);
    CHECK(strstr(output, "error: malformed reply body") != NULL);
    fake_stop(&fake);
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
    test_fake_nodes();
    return check_exit("test_cluster_cmds_unit");
}
