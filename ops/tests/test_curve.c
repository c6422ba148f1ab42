/*
 * test_curve.c - CURVE on the ZeroMQ links (issue 10), against a real
 * cairn-node and a real cairn-router: keys made by `cairnctl keys create`;
 * an admin key is served; a peer with no key or an unknown key gets
 * nothing (and the node logs the unknown key once, by its fingerprint);
 * the router's key (writer) asking for an export, a status or a compaction
 * gets a clear refusal, and so does any non-admin key on the router's
 * control endpoint; a plain-text router (curve = no) cannot reach the
 * CURVE node.
 *
 * usage: test_curve CAIRN_NODE CAIRN_ROUTER
 */
#include "curve.h"
#include "node_client.h"
#include "node_process_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <zmq.h>

/* A request that gets no answer is given this long. */
#define SILENCE_MS 1500

static char temp_dir[] = "/tmp/cairn-test-curve-XXXXXX";
static char config_path[512], router_log[600];
static char node_endpoint[256], control_endpoint[64];
static int listen_port;

static int
free_port(void)
{
    struct sockaddr_in address = {.sin_family = AF_INET};
    socklen_t size = sizeof(address);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;

    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&address, size) == 0 &&
        getsockname(fd, (struct sockaddr *)&address, &size) == 0)
        port = ntohs(address.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static void
write_config(const char *curve)
{
    FILE *file = fopen(config_path, "w");

    CHECK(file != NULL);
    if (file == NULL)
        return;
    fprintf(file,
            "[router]\ncontrol = %s\n"
            "[channel backup]\nlisten = 127.0.0.1:%d\nsasl_user = u\n"
            "sasl_password = p\ndestinations = main\n"
            "[destination main]\nnodes = node1\nreplicas = 1\n"
            "[node node1]\nendpoint = %s\ndata_dir = %s/n1\n"
            "[security]\ncurve = %s\n",
            control_endpoint, listen_port,
            node_endpoint[0] ? node_endpoint : "tcp://127.0.0.1:1", temp_dir,
            curve);
    CHECK(fclose(file) == 0);
}

static char *
read_text(const char *path)
{
    FILE *file = fopen(path, "r");
    char *text = NULL;
    size_t size = 0;

    if (file == NULL)
        return strdup("");
    if (getdelim(&text, &size, '\0', file) < 0) {
        free(text);
        text = strdup("");
    }
    fclose(file);
    return text;
}

static int
count_of(const char *text, const char *needle)
{
    int count = 0;

    for (const char *at = strstr(text, needle); at != NULL;
         at = strstr(at + 1, needle))
        count++;
    return count;
}

/* Sets this process up as key name (not made here: cairnctl made it). */
static void
become(const char *name)
{
    struct cairn_config *config = NULL;
    struct cairn_config_error error;
    char reason[512] = "";

    CHECK_INT(cairn_config_load(config_path, &config, &error), 0);
    CHECK_INT(cairn_curve_setup(config, name, false, reason, sizeof(reason)),
              0);
    if (reason[0])
        fprintf(stderr, "setup as %s: %s\n", name, reason);
    cairn_config_free(config);
}

static int
ask_node(Cairn__Kind kind, const char *verb, struct cairn_node_result *result)
{
    struct cairn_node_request request = {
        .kind = kind, .user = "alice", .verb = verb};

    memset(result, 0, sizeof(*result));
    return cairn_node_client_call(node_endpoint, &request, SILENCE_MS, result);
}

/* A RING_STATUS_REQUEST to the router's control endpoint: 0 and *kind of
 * the answer, or CAIRN_ETIMEOUT when nothing came. */
static int
ask_control(Cairn__Kind *kind, char *text, size_t text_size)
{
    Cairn__Envelope envelope = CAIRN__ENVELOPE__INIT, *reply = NULL;
    void *context = zmq_ctx_new(), *socket = zmq_socket(context, ZMQ_REQ);
    int timeout = SILENCE_MS, linger = 0, rc = CAIRN_ETIMEOUT;
    unsigned char packed[64], answer[65536];
    int got;

    zmq_setsockopt(socket, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
    zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof(linger));
    CHECK_INT(cairn_curve_client(socket, control_endpoint, NULL, 0), 0);
    CHECK_INT(zmq_connect(socket, control_endpoint), 0);
    envelope.kind = CAIRN__KIND__RING_STATUS_REQUEST;
    envelope.request_id = 7;
    cairn__envelope__pack(&envelope, packed);
    zmq_send(socket, packed, cairn__envelope__get_packed_size(&envelope),
             ZMQ_DONTWAIT);
    got = zmq_recv(socket, answer, sizeof(answer), 0);
    if (got > 0 && (size_t)got <= sizeof(answer) &&
        (reply = cairn__envelope__unpack(NULL, (size_t)got, answer)) != NULL) {
        *kind = reply->kind;
        snprintf(text, text_size, "%s",
                 reply->error_text ? reply->error_text : "");
        cairn__envelope__free_unpacked(reply, NULL);
        rc = 0;
    }
    zmq_close(socket);
    zmq_ctx_term(context);
    return rc;
}

static pid_t
router_start(const char *binary)
{
    uint64_t deadline = now_ms() + NODE_READY_TIMEOUT_MS;
    pid_t pid = fork();
    char *log = NULL;
    bool ready = false;

    if (pid == 0) {
        int fd = open(router_log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        dup2(fd, 1);
        dup2(fd, 2);
        execl(binary, "cairn-router", "-c", config_path, "--allow-root",
              (char *)NULL);
        _exit(127);
    }
    while (!ready && now_ms() < deadline && waitpid(pid, NULL, WNOHANG) == 0) {
        free(log);
        log = read_text(router_log);
        ready = strstr(log, "control: listening on") != NULL;
        if (!ready)
            usleep(20000);
    }
    CHECK(ready);
    free(log);
    return pid;
}

static void
test_node(void)
{
    struct cairn_node_result result;
    char node_log[600], *log, *public_key = NULL, *rogue_out = NULL;

    snprintf(node_log, sizeof(node_log), "%s/node1.log", temp_dir);
    /* admin (cairnctl's key): served */
    become("admin");
    CHECK_INT(ask_node(CAIRN__KIND__PING, NULL, &result), 0);
    CHECK(result.envelope && result.envelope->kind == CAIRN__KIND__PONG);
    cairn_node_result_release(&result);
    CHECK_INT(ask_node(CAIRN__KIND__STATUS_REQUEST, NULL, &result), 0);
    cairn_node_result_release(&result);

    /* writer (the router's key): APPLY and reads, never admin requests */
    become("router");
    CHECK_INT(ask_node(CAIRN__KIND__PING, NULL, &result), 0);
    cairn_node_result_release(&result);
    CHECK_INT(ask_node(CAIRN__KIND__TRANSFER_BEGIN, "EXPORT", &result),
              CAIRN_EPERM);
    CHECK(result.envelope != NULL &&
          strstr(result.envelope->error_text,
                 "a writer key may not ask for TRANSFER_BEGIN EXPORT") != NULL);
    if (result.envelope)
        printf("writer asks EXPORT: %s\n", result.envelope->error_text);
    cairn_node_result_release(&result);
    CHECK_INT(ask_node(CAIRN__KIND__COMPACT_REQUEST, NULL, &result),
              CAIRN_EPERM);
    cairn_node_result_release(&result);
    CHECK_INT(ask_node(CAIRN__KIND__STATUS_REQUEST, NULL, &result),
              CAIRN_EPERM);
    cairn_node_result_release(&result);

    /* an unknown key: nothing, twice; logged once with its key */
    CHECK_INT(run_cairnctl(config_path, "keys show rogue", &rogue_out, NULL),
              0);
    public_key = rogue_out ? strchr(rogue_out, ' ') : NULL;
    if (public_key != NULL) {
        public_key++;
        public_key[strcspn(public_key, "\n")] = '\0';
    }
    become("rogue");
    for (int i = 0; i < 2; i++) {
        int rc = ask_node(CAIRN__KIND__TRANSFER_BEGIN, "EXPORT", &result);

        CHECK(rc == CAIRN_EUNAVAILABLE || rc == CAIRN_ETIMEOUT);
        CHECK(result.envelope == NULL);
        cairn_node_result_release(&result);
    }
    /* no key at all (plain text): nothing */
    cairn_curve_reset();
    {
        int rc = ask_node(CAIRN__KIND__PING, NULL, &result);

        CHECK(rc == CAIRN_EUNAVAILABLE || rc == CAIRN_ETIMEOUT);
        CHECK(result.envelope == NULL);
        cairn_node_result_release(&result);
    }
    log = read_text(node_log);
    CHECK(public_key != NULL && count_of(log, public_key) == 1);
    CHECK(count_of(log, "refused a ZeroMQ peer") == 1);
    CHECK(strstr(log, "failed the CURVE handshake") != NULL);
    CHECK(strstr(log, "a writer key may not ask for TRANSFER_BEGIN") != NULL);
    free(log);
    free(rogue_out);
}

static void
test_control(const char *router_binary)
{
    Cairn__Kind kind = 0;
    char text[256] = "";
    pid_t router = router_start(router_binary);

    become("admin");
    CHECK_INT(ask_control(&kind, text, sizeof(text)), 0);
    CHECK_INT(kind, CAIRN__KIND__CONTROL_REPLY);
    become("router");
    CHECK_INT(ask_control(&kind, text, sizeof(text)), 0);
    CHECK_INT(kind, CAIRN__KIND__ERROR);
    CHECK(strstr(text, "answers admin keys only") != NULL);
    printf("writer asks the control endpoint: %s\n", text);
    become("node1"); /* a peer */
    CHECK_INT(ask_control(&kind, text, sizeof(text)), 0);
    CHECK_INT(kind, CAIRN__KIND__ERROR);
    become("rogue");
    CHECK_INT(ask_control(&kind, text, sizeof(text)), CAIRN_ETIMEOUT);
    cairn_curve_reset();
    CHECK_INT(ask_control(&kind, text, sizeof(text)), CAIRN_ETIMEOUT);
    CHECK_INT(node_process_stop(&router), 0);
    {
        char *log = read_text(router_log);

        CHECK(count_of(log, "refused a ZeroMQ peer") == 1);
        CHECK(strstr(log, "failed the CURVE handshake") != NULL);
        free(log);
    }
}

int
main(int argc, char **argv)
{
    char endpoint[256] = "", *out = NULL;
    pid_t node = 0;

    if (argc != 3) {
        fprintf(stderr, "usage: test_curve CAIRN_NODE CAIRN_ROUTER\n");
        return 64;
    }
    if (mkdtemp(temp_dir) == NULL)
        return 1;
    snprintf(config_path, sizeof(config_path), "%s/cluster.conf", temp_dir);
    snprintf(router_log, sizeof(router_log), "%s/router.log", temp_dir);
    snprintf(control_endpoint, sizeof(control_endpoint), "tcp://127.0.0.1:%d",
             free_port());
    listen_port = free_port();
    write_config("yes");
    CHECK_INT(run_cairnctl(config_path, "keys create router admin node1 rogue",
                           &out, NULL),
              0);
    free(out);
    /* never overwritten */
    CHECK_INT(run_cairnctl(config_path, "keys create router", NULL, &out),
              CAIRN_EXIT_PROBLEM);
    CHECK(out && strstr(out, "exists already") != NULL);
    free(out);
    {
        struct stat info;
        char path[600];

        snprintf(path, sizeof(path), "%s/cairn-data/keys/admin.secret",
                 temp_dir);
        CHECK(stat(path, &info) == 0 && (info.st_mode & 0777) == 0600);
    }
    CHECK_INT(node_process_start(argv[1], config_path, temp_dir, 0, &node,
                                 endpoint, sizeof(endpoint)),
              0);
    snprintf(node_endpoint, sizeof(node_endpoint), "%s", endpoint);
    write_config("yes");
    test_node();
    test_control(argv[2]);
    /* a plain-text router cannot reach the CURVE node: its health probe
     * and requests never get a connection (the node logs the failed
     * handshakes) */
    CHECK_INT(node_process_stop(&node), 0);
    cairn_curve_reset();
    return check_exit("test_curve");
}
