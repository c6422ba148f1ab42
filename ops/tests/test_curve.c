/*
 * test_curve.c - CURVE on the ZeroMQ links (issue 10), against a real
 * cairn-node and a real cairn-router: keys made by `cairnctl keys create`;
 * an admin key is served; a peer with no key or an unknown key gets
 * nothing (and the node logs the unknown key once, by its fingerprint);
 * the router's key (writer) asking for any admin request (export, import,
 * compact, verify, delete, status) gets a clear refusal, and so does any
 * non-admin key on the router's control endpoint (hold, prepare, switch,
 * commit); a plain-text router (curve = no) cannot reach the CURVE node:
 * its GET USER is answered NO. The node's data directory is the same
 * before and after. Each attempt prints a "TABLE |" line (attack | what
 * cairn answered | what was stored) for the closing note.
 *
 * usage: test_curve CAIRN_NODE CAIRN_ROUTER
 */
#include "curve.h"
#include "node_client.h"
#include "node_process_util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <zmq.h>

/* A request that gets no answer is given this long. */
#define SILENCE_MS 1500

static char temp_dir[] = "/tmp/cairn-test-curve-XXXXXX";
static char config_path[512], router_log[600];
static char node_endpoint[256], control_endpoint[64];
static int listen_port;
static const char *router_extra = ""; /* more [router] lines */

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
            "[router]\ncontrol = %s\n%s"
            "[channel backup]\nlisten = 127.0.0.1:%d\nsasl_user = u\n"
            "sasl_password = p\ndestinations = main\n"
            "[destination main]\nnodes = node1\nreplicas = 1\n"
            "[node node1]\nendpoint = %s\ndata_dir = %s/n1\n"
            "[security]\ncurve = %s\n",
            control_endpoint, router_extra, listen_port,
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

/* The admin requests a node refuses to writer, rogue and keyless peers. */
static const struct {
    Cairn__Kind kind;
    const char *verb, *what;
} admin_requests[] = {
    {CAIRN__KIND__TRANSFER_BEGIN, "EXPORT", "export alice"},
    {CAIRN__KIND__TRANSFER_BEGIN, "IMPORT", "transfer (import) alice"},
    {CAIRN__KIND__COMPACT_REQUEST, NULL, "compact alice"},
    {CAIRN__KIND__VERIFY_REQUEST, NULL, "verify alice"},
    {CAIRN__KIND__TRANSFER_END, "REMOVE", "delete alice"},
    {CAIRN__KIND__STATUS_REQUEST, NULL, "status"},
};
#define ADMIN_REQUEST_COUNT (sizeof(admin_requests) / sizeof(admin_requests[0]))

/* The router's control requests, admin only. */
static const struct {
    Cairn__Kind kind;
    const char *what;
} control_requests[] = {
    {CAIRN__KIND__RING_STATUS_REQUEST, "ring status"},
    {CAIRN__KIND__USER_HOLD, "hold alice"},
    {CAIRN__KIND__RING_PREPARE, "prepare a ring"},
    {CAIRN__KIND__USER_SWITCH, "switch alice"},
    {CAIRN__KIND__RING_COMMIT, "commit a ring"},
};

/* Names and sizes of everything under dir, one line each (owned). */
static void
list_tree(const char *dir, struct cairn_buf *out)
{
    DIR *stream = opendir(dir);
    struct dirent *entry;

    while (stream != NULL && (entry = readdir(stream)) != NULL) {
        char path[1024];
        struct stat info;

        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, entry->d_name);
        if (lstat(path, &info) != 0)
            continue;
        cairn_buf_printf(out, "%s %lld\n", path, (long long)info.st_size);
        if (S_ISDIR(info.st_mode))
            list_tree(path, out);
    }
    if (stream != NULL)
        closedir(stream);
}

static char *
node_files(void)
{
    struct cairn_buf text;
    char dir[600], *out = NULL;
    size_t len;

    snprintf(dir, sizeof(dir), "%s/n1", temp_dir);
    cairn_buf_init(&text, 1 << 20);
    list_tree(dir, &text);
    cairn_buf_append(&text, "", 1);
    cairn_buf_detach(&text, &out, &len);
    return out;
}

static void
table_row(const char *attack, const char *answer)
{
    printf("TABLE | %s | %s | nothing (node data dir unchanged)\n", attack,
           answer);
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
ask_control(Cairn__Kind asked, Cairn__Kind *kind, char *text, size_t text_size)
{
    Cairn__Envelope envelope = CAIRN__ENVELOPE__INIT, *reply = NULL;
    void *context = zmq_ctx_new(), *socket = zmq_socket(context, ZMQ_REQ);
    int timeout = SILENCE_MS, linger = 0, rc = CAIRN_ETIMEOUT;
    unsigned char packed[256], answer[65536];
    int got;

    zmq_setsockopt(socket, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
    zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof(linger));
    CHECK_INT(cairn_curve_client(socket, control_endpoint, NULL, 0), 0);
    CHECK_INT(zmq_connect(socket, control_endpoint), 0);
    envelope.kind = asked;
    envelope.user = "alice";
    envelope.destination = "main";
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
    cairn_node_result_release(&result);
    for (size_t i = 0; i < ADMIN_REQUEST_COUNT; i++) {
        char attack[128];

        CHECK_INT(
            ask_node(admin_requests[i].kind, admin_requests[i].verb, &result),
            CAIRN_EPERM);
        CHECK(result.envelope != NULL && result.envelope->error_text &&
              strstr(result.envelope->error_text,
                     "a writer key may not ask for") != NULL);
        snprintf(attack, sizeof(attack), "node, router's key (writer): %s",
                 admin_requests[i].what);
        table_row(attack, result.envelope && result.envelope->error_text
                              ? result.envelope->error_text
                              : "(no answer)");
        cairn_node_result_release(&result);
    }

    /* an unknown key: nothing, twice; logged once with its key */
    CHECK_INT(run_cairnctl(config_path, "keys show rogue", &rogue_out, NULL),
              0);
    public_key = rogue_out ? strchr(rogue_out, ' ') : NULL;
    if (public_key != NULL) {
        public_key++;
        public_key[strcspn(public_key, "\n")] = '\0';
    }
    become("rogue");
    for (size_t i = 0; i < ADMIN_REQUEST_COUNT; i++) {
        char attack[128];
        int rc =
            ask_node(admin_requests[i].kind, admin_requests[i].verb, &result);

        CHECK(rc == CAIRN_EUNAVAILABLE || rc == CAIRN_ETIMEOUT);
        CHECK(result.envelope == NULL);
        cairn_node_result_release(&result);
        snprintf(attack, sizeof(attack), "node, unknown key: %s",
                 admin_requests[i].what);
        table_row(attack, "nothing (handshake refused by ZAP; no reply in "
                          "1.5 s)");
    }
    /* no key at all (plain text): nothing */
    cairn_curve_reset();
    {
        int rc = ask_node(CAIRN__KIND__PING, NULL, &result);

        CHECK(rc == CAIRN_EUNAVAILABLE || rc == CAIRN_ETIMEOUT);
        CHECK(result.envelope == NULL);
        cairn_node_result_release(&result);
        rc = ask_node(CAIRN__KIND__TRANSFER_BEGIN, "EXPORT", &result);
        CHECK(rc == CAIRN_EUNAVAILABLE || rc == CAIRN_ETIMEOUT);
        CHECK(result.envelope == NULL);
        cairn_node_result_release(&result);
        table_row("node, no key (plain text): ping, export alice",
                  "nothing (CURVE handshake fails; no reply in 1.5 s)");
    }
    log = read_text(node_log);
    CHECK(public_key != NULL && count_of(log, public_key) == 1);
    if (public_key != NULL && strstr(log, public_key) != NULL) {
        const char *line = strstr(log, public_key), *start = line;

        while (start > log && start[-1] != '\n')
            start--;
        printf("node log, once for %zu attempts: %.*s\n", ADMIN_REQUEST_COUNT,
               (int)strcspn(start, "\n"), start);
    }
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
    CHECK_INT(ask_control(CAIRN__KIND__RING_STATUS_REQUEST, &kind, text,
                          sizeof(text)),
              0);
    CHECK_INT(kind, CAIRN__KIND__CONTROL_REPLY);
    become("router");
    for (size_t i = 0;
         i < sizeof(control_requests) / sizeof(control_requests[0]); i++) {
        char attack[128];

        CHECK_INT(
            ask_control(control_requests[i].kind, &kind, text, sizeof(text)),
            0);
        CHECK_INT(kind, CAIRN__KIND__ERROR);
        CHECK(strstr(text, "answers admin keys only") != NULL);
        snprintf(attack, sizeof(attack),
                 "router control, router's key (writer): %s",
                 control_requests[i].what);
        table_row(attack, text);
    }
    become("node1"); /* a peer */
    CHECK_INT(ask_control(CAIRN__KIND__USER_HOLD, &kind, text, sizeof(text)),
              0);
    CHECK_INT(kind, CAIRN__KIND__ERROR);
    table_row("router control, a node's key (peer): hold alice", text);
    become("rogue");
    CHECK_INT(ask_control(CAIRN__KIND__USER_HOLD, &kind, text, sizeof(text)),
              CAIRN_ETIMEOUT);
    table_row("router control, unknown key: hold alice",
              "nothing (handshake refused by ZAP; no reply in 1.5 s)");
    cairn_curve_reset();
    CHECK_INT(ask_control(CAIRN__KIND__USER_HOLD, &kind, text, sizeof(text)),
              CAIRN_ETIMEOUT);
    table_row("router control, no key (plain text): hold alice",
              "nothing (CURVE handshake fails; no reply in 1.5 s)");
    CHECK_INT(node_process_stop(&router), 0);
    {
        char *log = read_text(router_log);

        CHECK(count_of(log, "refused a ZeroMQ peer") == 1);
        CHECK(strstr(log, "failed the CURVE handshake") != NULL);
        free(log);
    }
}

/* One csync line from fd (CRLF cut), or "" at the end. */
static void
read_line(int fd, char *line, size_t size)
{
    size_t len = 0;
    char c;

    while (len + 1 < size && read(fd, &c, 1) == 1 && c != '\n')
        if (c != '\r')
            line[len++] = c;
    line[len] = '\0';
}

/* Reads lines until a tagged answer (OK, NO, BAD); it is left in line. */
static void
read_answer(int fd, char *line, size_t size)
{
    do
        read_line(fd, line, size);
    while (line[0] == '*');
}

/*
 * A plain-text router (curve = no) in front of the CURVE node: the node
 * never completes a handshake with it, so sync_client's GET USER is
 * answered NO and nothing reaches the node.
 */
static void
test_plain_router(const char *router_binary)
{
    struct sockaddr_in address = {.sin_family = AF_INET};
    char line[1024] = "", *log = NULL, *out = NULL;
    char command[1200];
    int fd;
    struct timeval wait = {.tv_sec = 30};
    pid_t router;

    router_extra = "node_timeout = 2s\nnode_answer_timeout = 1s\n";
    write_config("no");
    snprintf(command, sizeof(command), "%s/cairn-data/rings", temp_dir);
    mkdir(command, 0755);
    snprintf(command, sizeof(command),
             "ring create %s/cairn-data/rings/main.ring --from-config main",
             temp_dir);
    CHECK_INT(run_cairnctl(config_path, command, &out, NULL), 0);
    free(out);
    /* router_start() waits for its line in a fresh log */
    unlink(router_log);
    router = router_start(router_binary);
    address.sin_port = htons((uint16_t)listen_port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    /* a hang guard only: the answers are waited for */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait));
    CHECK(fd >= 0 &&
          connect(fd, (struct sockaddr *)&address, sizeof(address)) == 0);
    read_answer(fd, line, sizeof(line)); /* the banner's * OK */
    /* AUTHENTICATE PLAIN with "\0u\0p" */
    CHECK(write(fd, "AUTHENTICATE PLAIN AHUAcA==\r\n", 29) == 29);
    read_answer(fd, line, sizeof(line));
    CHECK(strncmp(line, "OK", 2) == 0);
    CHECK(write(fd, "GET USER alice\r\n", 16) == 16);
    read_answer(fd, line, sizeof(line));
    CHECK(strncmp(line, "NO", 2) == 0);
    printf("plain-text router, GET USER alice: %s\n", line);
    table_row("plain-text router (curve = no) -> CURVE node: GET USER alice "
              "(sync_client's first request)",
              line);
    close(fd);
    CHECK_INT(node_process_stop(&router), 0);
    /* the router could not reach the node at all */
    log = read_text(router_log);
    CHECK(strstr(log, "node node1 is down") != NULL);
    free(log);
    router_extra = "";
}

int
main(int argc, char **argv)
{
    char endpoint[256] = "", *out = NULL, *before = NULL, *after = NULL;
    pid_t node = 0;

    if (argc != 3) {
        fprintf(stderr, "usage: test_curve CAIRN_NODE CAIRN_ROUTER\n");
        return 64;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN); /* a closed csync connection: EPIPE */
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
    before = node_files();
    test_node();
    test_control(argv[2]);
    test_plain_router(argv[2]);
    after = node_files();
    /* nothing any of them asked for changed the node's files */
    CHECK(before != NULL && after != NULL && strcmp(before, after) == 0);
    free(before);
    free(after);
    CHECK_INT(node_process_stop(&node), 0);
    cairn_curve_reset();
    return check_exit("test_curve");
}
