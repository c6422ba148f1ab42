/*
 * test_session.c - the router over real loopback TCP, driven from the same
 * thread: the banner, what is refused before login, PLAIN login, arity and
 * unknown-command errors, the cross-user refusal bytes, the request
 * handler, COMPRESS DEFLATE in both directions, EXIT, the IMAP probe,
 * oversized lines, the idle timeout, and output backpressure (a client
 * that never reads does not stall another one).
 */
#include "check.h"
#include "router_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SERVERNAME "test.cairn"
#define BANNER                                                                 \
    "* SASL SCRAM-SHA-512 SCRAM-SHA-384 SCRAM-SHA-256 SCRAM-SHA-224 "          \
    "SCRAM-SHA-1 PLAIN\r\n"                                                    \
    "* COMPRESS DEFLATE\r\n"                                                   \
    "* OK " SERVERNAME " Cyrus backup server cairn-0.1.0\r\n"
/* \0repluser\0replpass and \0repluser\0wrong */
#define PLAIN_GOOD "AHJlcGx1c2VyAHJlcGxwYXNz"
#define PLAIN_BAD "AHJlcGx1c2VyAHdyb25n"

struct fixture {
    struct cairn_loop *loop;
    struct cairn_router *router;
    uint16_t port;
};

static int
fixture_open_spool(struct fixture *fixture, size_t max_output, size_t max_line,
                   uint64_t idle_ms, const char *spool_dir, uint64_t spool_max)
{
    struct cairn_router_channel_settings channel = {
        .name = "backup",
        .listen = "127.0.0.1:0",
        .sasl_user = "repluser",
        .sasl_password = "replpass",
        .compress = true,
        .idle_timeout_ms = idle_ms,
    };
    struct cairn_router_settings settings = {
        .servername = SERVERNAME,
        .channels = &channel,
        .channel_count = 1,
        .max_output = max_output,
        .max_line = max_line,
        .spool_dir = spool_dir,
        .spool_max = spool_max,
        .failed_login_pause_ms = 150,
    };
    char error[256] = "";
    int rc;

    memset(fixture, 0, sizeof(*fixture));
    if ((rc = cairn_loop_new(&fixture->loop)) < 0)
        return rc;
    rc = cairn_router_new(fixture->loop, &settings, &fixture->router, error,
                          sizeof(error));
    if (rc < 0) {
        fprintf(stderr, "router: %s\n", error);
        return rc;
    }
    fixture->port = cairn_router_port(fixture->router, 0);
    return fixture->port != 0 ? CAIRN_OK : CAIRN_EIO;
}

static int
fixture_open(struct fixture *fixture, size_t max_output, size_t max_line,
             uint64_t idle_ms)
{
    return fixture_open_spool(fixture, max_output, max_line, idle_ms, NULL, 0);
}

static void
fixture_close(struct fixture *fixture)
{
    cairn_router_free(fixture->router);
    cairn_loop_free(fixture->loop);
}

static int
client_connect_buffer(uint16_t port, int receive_buffer)
{
    struct sockaddr_in address = {.sin_family = AF_INET,
                                  .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    /* A small window makes the kernel stop taking replies early. */
    if (receive_buffer > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer,
                   sizeof(receive_buffer));
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (connect(fd, (struct sockaddr *)&address, sizeof(address)) < 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

static int
client_connect(uint16_t port)
{
    return client_connect_buffer(port, 0);
}

/* True once text holds a whole response (last line not "* ...") or a whole
 * banner (ends in "* OK ..."). */
static bool
response_complete(const struct cairn_buf *text)
{
    const char *last;

    if (text->len < 2 || memcmp(text->data + text->len - 2, "\r\n", 2) != 0)
        return false;
    last = text->data + text->len - 2;
    while (last > text->data && last[-1] != '\n')
        last--;
    return strncmp(last, "* ", 2) != 0 || strncmp(last, "* OK ", 5) == 0;
}

/*
 * Runs the loop and reads from fd (inflating when compress is set) until a
 * whole response is in text, the peer closes (*closed), or 3 s pass.
 */
static void
receive(struct fixture *fixture, int fd, struct cairn_compress *compress,
        struct cairn_buf *text, bool *closed)
{
    uint64_t deadline = cairn_loop_now_ms() + 3000;
    char wire[65536];

    cairn_buf_reset(text);
    *closed = false;
    while (cairn_loop_now_ms() < deadline && !response_complete(text)) {
        ssize_t got;

        cairn_loop_run_once(fixture->loop, 10);
        got = read(fd, wire, sizeof(wire));
        if (got == 0) {
            *closed = true;
            return;
        }
        if (got < 0)
            continue;
        if (compress != NULL) {
            size_t consumed = 0;

            CHECK_INT(cairn_compress_inflate(compress, wire, (size_t)got,
                                             &consumed, 1 << 20, text),
                      0);
            CHECK_INT(consumed, got);
        } else {
            CHECK_INT(cairn_buf_append(text, wire, (size_t)got), 0);
        }
    }
}

static void
send_text(int fd, struct cairn_compress *compress, const char *text)
{
    struct cairn_buf wire;

    cairn_buf_init(&wire, 1 << 20);
    if (compress != NULL)
        CHECK_INT(
            cairn_compress_deflate(compress, text, strlen(text), true, &wire),
            0);
    else
        CHECK_INT(cairn_buf_append_str(&wire, text), 0);
    CHECK_INT(write(fd, wire.data, wire.len), wire.len);
    cairn_buf_release(&wire);
}

struct exchange_case {
    const char *send;
    const char *expect;
};

static void
run_exchanges(struct fixture *fixture, int fd, struct cairn_compress *compress,
              const struct exchange_case *cases, size_t count)
{
    struct cairn_buf text;
    bool closed = false;

    cairn_buf_init(&text, 1 << 20);
    for (size_t i = 0; i < count; i++) {
        send_text(fd, compress, cases[i].send);
        receive(fixture, fd, compress, &text, &closed);
        CHECK(!closed);
        CHECK_STR(text.data ? text.data : "", cases[i].expect);
    }
    cairn_buf_release(&text);
}

static const struct exchange_case before_login[] = {
    {"GET USER anne\r\n", "NO Please authenticate first\r\n"},
    {"APPLY UNUSER anne\r\n", "NO Please authenticate first\r\n"},
    {"NOOP\r\n", "OK Noop completed\r\n"},
    {"noop\r\n", "OK Noop completed\r\n"},
    {"NOOP now\r\n", "BAD Unexpected extra arguments to Noop\r\n"},
    {"\r\n", "BAD Null command\r\n"},
    {"FROB\r\n", "BAD IMAP_PROTOCOL_ERROR Unrecognized command\r\n"},
    {"GETALL x\r\n", "NO Please authenticate first\r\n"},
    {"append x\r\n", "NO Please authenticate first\r\n"},
    {"STARTTLS\r\n", "BAD IMAP_PROTOCOL_ERROR Unrecognized command\r\n"},
    {"RESTORE MAILBOX user.anne\r\n",
     "BAD IMAP_PROTOCOL_ERROR Unrecognized command\r\n"},
    {"RESTART\r\n", "OK Restarting\r\n"},
    {"AUTHENTICATE\r\n", "BAD Missing required argument to Authenticate\r\n"},
    {"AUTHENTICATE PLAIN " PLAIN_BAD "\r\n", "NO authentication failure\r\n"},
    {"AUTHENTICATE GSSAPI\r\n", "NO no mechanism available\r\n"},
    {"AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n", "OK Success (no protection)\r\n"},
    {"AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n", "BAD Already authenticated\r\n"},
};

static const struct exchange_case after_login[] = {
    {"GET MAILBOXES (user.anne user.bob)\r\n",
     "NO IMAP_PROTOCOL_BAD_PARAMETERS Bad parameters\r\n"},
    {"GET USER ../etc\r\n",
     "NO IMAP_PROTOCOL_BAD_PARAMETERS Bad parameters\r\n"},
    {"GET USER anne\r\n", "NO cairn router: not yet forwarded to storage, "
                          "nothing stored\r\n"},
    {"APPLY UNUSER anne\r\n", "OK Success\r\n"},
    {"APPLY FORCE %()\r\n", "NO IMAP_PROTOCOL_ERROR Protocol error\r\n"},
    {"GET ANNOTATION user.anne\r\n",
     "NO IMAP_PROTOCOL_ERROR Protocol error\r\n"},
    {"GET\r\n", "BAD Missing required argument to Get\r\n"},
    {"GETALL x\r\n", "BAD IMAP_PROTOCOL_ERROR Unrecognized command\r\n"},
};

static void
test_login_and_refusals(void)
{
    struct fixture fixture;
    struct cairn_buf text;
    bool closed = false;
    int fd;

    CHECK_INT(fixture_open(&fixture, 0, 0, 0), 0);
    fd = client_connect(fixture.port);
    CHECK(fd >= 0);
    cairn_buf_init(&text, 1 << 16);
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK_STR(text.data, BANNER);
    run_exchanges(&fixture, fd, NULL, before_login,
                  sizeof(before_login) / sizeof(before_login[0]));
    run_exchanges(&fixture, fd, NULL, after_login,
                  sizeof(after_login) / sizeof(after_login[0]));
    CHECK_INT(cairn_router_connection_count(fixture.router), 1);
    send_text(fd, NULL, "EXIT\r\n");
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK_STR(text.data, "OK Finished\r\n");
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK(closed);
    CHECK_INT(cairn_router_connection_count(fixture.router), 0);
    cairn_buf_release(&text);
    close(fd);
    fixture_close(&fixture);
}

/* A request handler that answers GET USER with one item and records. */
struct handler_log {
    int calls;
    char userid[CAIRN_ROUTER_USERID_MAX];
    char key[32];
};

static int
on_request(void *arg, const struct cairn_router_request *request,
           struct cairn_router_reply *reply)
{
    struct handler_log *log = arg;
    struct cairn_dlist *lsub = cairn_dlist_new_list("LSUB");
    int rc;

    log->calls++;
    snprintf(log->userid, sizeof(log->userid), "%s",
             request->resolution->owner.userid);
    snprintf(log->key, sizeof(log->key), "%s", request->resolution->key);
    if (strcmp(request->resolution->key, "MESSAGE") == 0) {
        cairn_dlist_free(lsub);
        return CAIRN_EIO; /* no completion: the router says Unknown error */
    }
    cairn_dlist_add_atom(lsub, NULL, "user.anne.Sent");
    rc = cairn_router_reply_untagged(reply, lsub);
    cairn_dlist_free(lsub);
    if (rc == 0)
        rc = cairn_router_reply_complete(reply, CAIRN_CSYNC_OK,
                                         CAIRN_CSYNC_CODE_NONE, "Success");
    return rc;
}

static void
test_compress_and_handler(void)
{
    static const struct exchange_case compressed[] = {
        {"NOOP\r\n", "OK Noop completed\r\n"},
        {"GET USER anne\r\n", "* LSUB (user.anne.Sent)\r\nOK Success\r\n"},
        {"APPLY MESSAGE (%{default 0123456789012345678901234567890123456789 "
         "5}\r\nhello)\r\n",
         "NO Unknown error\r\n"},
        {"COMPRESS DEFLATE\r\n", "NO Compression already active: DEFLATE\r\n"},
    };
    struct fixture fixture;
    struct handler_log log = {0};
    struct cairn_compress *compress = NULL;
    struct cairn_buf text;
    bool closed = false;
    int fd;

    CHECK_INT(fixture_open(&fixture, 0, 0, 0), 0);
    cairn_router_set_request_handler(fixture.router, on_request, &log);
    fd = client_connect(fixture.port);
    cairn_buf_init(&text, 1 << 16);
    receive(&fixture, fd, NULL, &text, &closed);
    send_text(fd, NULL, "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n");
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK_STR(text.data, "OK Success (no protection)\r\n");
    send_text(fd, NULL, "COMPRESS DEFLATE\r\n");
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK_STR(text.data, "OK DEFLATE active\r\n");
    CHECK_INT(cairn_compress_new(&compress), 0);
    run_exchanges(&fixture, fd, compress, compressed,
                  sizeof(compressed) / sizeof(compressed[0]));
    CHECK_INT(log.calls, 2);
    CHECK_STR(log.userid, "anne"); /* MESSAGE went to the current user */
    CHECK_STR(log.key, "MESSAGE");
    cairn_compress_free(compress);
    cairn_buf_release(&text);
    close(fd);
    fixture_close(&fixture);
}

static void
test_probe_and_limits(void)
{
    struct fixture fixture;
    struct cairn_buf text;
    char line[3000];
    bool closed = false;
    int fd;

    CHECK_INT(fixture_open(&fixture, 0, 1024, 0), 0);
    cairn_buf_init(&text, 1 << 16);
    /* The IMAP probe gets the banner, then an immediate close. */
    fd = client_connect(fixture.port);
    receive(&fixture, fd, NULL, &text, &closed);
    send_text(fd, NULL, "C01 CAPABILITY\r\n");
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK(closed);
    CHECK_INT(text.len, 0);
    close(fd);
    /* A line over max_line: BAD, then the connection is closed. */
    fd = client_connect(fixture.port);
    receive(&fixture, fd, NULL, &text, &closed);
    memset(line, 'A', sizeof(line) - 3);
    memcpy(line + sizeof(line) - 3, "\r\n", 3);
    send_text(fd, NULL, line);
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK(strncmp(text.data ? text.data : "", "BAD ", 4) == 0);
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK(closed);
    close(fd);
    cairn_buf_release(&text);
    fixture_close(&fixture);
}

static void
test_idle_timeout(void)
{
    struct fixture fixture;
    struct cairn_buf text;
    bool closed = false;
    uint64_t started;
    int fd;

    CHECK_INT(fixture_open(&fixture, 0, 0, 100), 0);
    cairn_buf_init(&text, 1 << 16);
    fd = client_connect(fixture.port);
    receive(&fixture, fd, NULL, &text, &closed);
    started = cairn_loop_now_ms();
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK(closed);
    CHECK(cairn_loop_now_ms() - started < 2500);
    CHECK_INT(cairn_router_connection_count(fixture.router), 0);
    close(fd);
    cairn_buf_release(&text);
    fixture_close(&fixture);
}

/*
 * One client pipelines thousands of NOOPs and never reads: the router
 * stops reading it once its output passes the limit, and still answers a
 * second client at once. When the first one reads, every reply arrives.
 */
static void
test_backpressure(void)
{
    enum { NOOPS = 50000 };
    static const char reply[] = "OK Noop completed\r\n";
    struct fixture fixture;
    struct cairn_buf text, pipeline;
    size_t received = 0, expected = NOOPS * (sizeof(reply) - 1);
    bool closed = false, saw_full = false;
    uint64_t deadline;
    int slow, fast;

    CHECK_INT(fixture_open(&fixture, 4096, 0, 0), 0);
    cairn_buf_init(&text, 1 << 16);
    cairn_buf_init(&pipeline, 8 << 20);
    slow = client_connect_buffer(fixture.port, 4096);
    fast = client_connect(fixture.port);
    receive(&fixture, slow, NULL, &text, &closed);
    receive(&fixture, fast, NULL, &text, &closed);
    /* Small kernel buffers on the router's side too, so that its own
     * output buffer is what fills up. */
    for (struct cairn_router_conn *conn = fixture.router->conns; conn;
         conn = conn->next) {
        int size = 4096;

        setsockopt(conn->fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    }
    for (int i = 0; i < NOOPS; i++)
        cairn_buf_append_str(&pipeline, "NOOP\r\n");
    /* Write what the socket takes while the loop runs. */
    while (pipeline.len > 0) {
        ssize_t n = send(slow, pipeline.data, pipeline.len, MSG_DONTWAIT);
        if (n > 0)
            cairn_buf_consume(&pipeline, (size_t)n);
        cairn_loop_run_once(fixture.loop, 1);
        for (struct cairn_router_conn *conn = fixture.router->conns; conn;
             conn = conn->next)
            saw_full = saw_full || cairn_router_conn_output_full(conn);
        if (n < 0 && saw_full)
            break; /* the router stopped reading: that is the point */
    }
    CHECK(saw_full);
    for (struct cairn_router_conn *conn = fixture.router->conns; conn;
         conn = conn->next)
        CHECK(conn->output.len <= 2 * 4096 + 4096 / 16 + 4096);
    send_text(fast, NULL, "NOOP\r\n");
    receive(&fixture, fast, NULL, &text, &closed);
    CHECK_STR(text.data, reply);
    /* Now drain the slow client (and finish sending to it). */
    deadline = cairn_loop_now_ms() + 10000;
    while (received < expected && cairn_loop_now_ms() < deadline) {
        char buffer[65536];
        ssize_t n;

        cairn_loop_run_once(fixture.loop, 1);
        n = read(slow, buffer, sizeof(buffer));
        if (n > 0)
            received += (size_t)n;
        if (pipeline.len > 0) {
            n = send(slow, pipeline.data, pipeline.len, MSG_DONTWAIT);
            if (n > 0)
                cairn_buf_consume(&pipeline, (size_t)n);
        }
    }
    CHECK_U64(received, expected);
    close(slow);
    close(fast);
    cairn_buf_release(&text);
    cairn_buf_release(&pipeline);
    fixture_close(&fixture);
}

/*
 * A failed login is answered only after the pause, and commands pipelined
 * behind it wait too; another connection is served meanwhile.
 */
static void
test_failed_login_pause(void)
{
    struct fixture fixture;
    struct cairn_buf text;
    bool closed = false;
    uint64_t started;
    char both[256];
    int failing, other;

    CHECK_INT(fixture_open(&fixture, 0, 0, 0), 0);
    cairn_buf_init(&text, 1 << 16);
    failing = client_connect(fixture.port);
    other = client_connect(fixture.port);
    receive(&fixture, failing, NULL, &text, &closed);
    receive(&fixture, other, NULL, &text, &closed);
    started = cairn_loop_now_ms();
    send_text(failing, NULL, "AUTHENTICATE PLAIN " PLAIN_BAD "\r\nNOOP\r\n");
    send_text(other, NULL, "NOOP\r\n");
    receive(&fixture, other, NULL, &text, &closed);
    CHECK_STR(text.data, "OK Noop completed\r\n");
    CHECK(cairn_loop_now_ms() - started < 150);
    /* Both replies, in order, after the pause (in one read or two). */
    receive(&fixture, failing, NULL, &text, &closed);
    snprintf(both, sizeof(both), "%s", text.data ? text.data : "");
    if (strstr(both, "OK Noop") == NULL) {
        receive(&fixture, failing, NULL, &text, &closed);
        strncat(both, text.data ? text.data : "",
                sizeof(both) - strlen(both) - 1);
    }
    CHECK_STR(both, "NO authentication failure\r\nOK Noop completed\r\n");
    CHECK(cairn_loop_now_ms() - started >= 150);
    close(failing);
    close(other);
    cairn_buf_release(&text);
    fixture_close(&fixture);
}

/*
 * Two channels with their own credentials in one router: each accepts only
 * its own identity (the in-process password store is per connection).
 */
static void
test_two_channels(void)
{
    static const char *const plain[] = {"PLAIN"};
    struct cairn_router_channel_settings channels[2] = {
        {.name = "backup",
         .listen = "127.0.0.1:0",
         .sasl_user = "repluser",
         .sasl_password = "replpass",
         .mechanisms = plain,
         .mechanism_count = 1},
        {.name = "offsite",
         .listen = "127.0.0.1:0",
         .sasl_user = "offsite",
         .sasl_password = "offpass",
         .mechanisms = plain,
         .mechanism_count = 1},
    };
    struct cairn_router_settings settings = {.servername = SERVERNAME,
                                             .channels = channels,
                                             .channel_count = 2,
                                             .failed_login_pause_ms = 1};
    /* \0offsite\0offpass */
    static const char offsite_login[] =
        "AUTHENTICATE PLAIN AG9mZnNpdGUAb2ZmcGFzcw==\r\n";
    struct fixture fixture = {0};
    struct cairn_buf text;
    bool closed = false;
    char error[256] = "";
    int backup, offsite;

    CHECK_INT(cairn_loop_new(&fixture.loop), 0);
    CHECK_INT(cairn_router_new(fixture.loop, &settings, &fixture.router, error,
                               sizeof(error)),
              0);
    CHECK(cairn_router_port(fixture.router, 0) !=
          cairn_router_port(fixture.router, 1));
    CHECK_INT(cairn_router_port(fixture.router, 2), 0);
    cairn_buf_init(&text, 1 << 16);
    backup = client_connect(cairn_router_port(fixture.router, 0));
    offsite = client_connect(cairn_router_port(fixture.router, 1));
    receive(&fixture, backup, NULL, &text, &closed);
    CHECK(strncmp(text.data, "* SASL PLAIN\r\n", 14) == 0);
    receive(&fixture, offsite, NULL, &text, &closed);
    /* libsasl2's words, as backupd sends them: "NO user not found". */
    send_text(backup, NULL, offsite_login);
    receive(&fixture, backup, NULL, &text, &closed);
    CHECK_STR(text.data, "NO user not found\r\n");
    send_text(offsite, NULL, "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n");
    receive(&fixture, offsite, NULL, &text, &closed);
    CHECK_STR(text.data, "NO user not found\r\n");
    send_text(offsite, NULL, offsite_login);
    receive(&fixture, offsite, NULL, &text, &closed);
    CHECK_STR(text.data, "OK Success (no protection)\r\n");
    send_text(backup, NULL, "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n");
    receive(&fixture, backup, NULL, &text, &closed);
    CHECK_STR(text.data, "OK Success (no protection)\r\n");
    close(backup);
    close(offsite);
    cairn_buf_release(&text);
    fixture_close(&fixture);
}

/* Drives the loop for ms milliseconds, draining what fd receives. */
static bool
drain(struct fixture *fixture, int fd, uint64_t ms)
{
    uint64_t deadline = cairn_loop_now_ms() + ms;
    char sink[65536];

    while (cairn_loop_now_ms() < deadline) {
        cairn_loop_run_once(fixture->loop, 5);
        if (read(fd, sink, sizeof(sink)) == 0)
            return true; /* closed by the router */
    }
    return false;
}

/*
 * Random bytes, plain and after COMPRESS, before and after login: the
 * router answers or closes, never crashes (ASan build), and still serves
 * a fresh connection.
 */
static void
test_garbage(void)
{
    static const char protocolish[] = "()%{}+ \r\nAPLYGETUSR.0123\"*\\";
    struct fixture fixture;
    struct cairn_buf text;
    bool closed = false;
    unsigned seed = 12345;

    CHECK_INT(fixture_open(&fixture, 0, 4096, 0), 0);
    cairn_buf_init(&text, 1 << 16);
    for (int round = 0; round < 12; round++) {
        int fd = client_connect(fixture.port);
        char noise[8192];

        receive(&fixture, fd, NULL, &text, &closed);
        if (round % 3 >= 1) {
            send_text(fd, NULL, "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n");
            receive(&fixture, fd, NULL, &text, &closed);
        }
        if (round % 3 == 2) {
            send_text(fd, NULL, "COMPRESS DEFLATE\r\n");
            receive(&fixture, fd, NULL, &text, &closed);
        }
        for (int chunk = 0; chunk < 16; chunk++) {
            size_t len = (size_t)(rand_r(&seed) % sizeof(noise));

            for (size_t i = 0; i < len; i++) {
                int r = rand_r(&seed);
                /* Mostly protocol-ish bytes, so the parser gets deep. */
                noise[i] =
                    (round & 1)
                        ? (char)r
                        : protocolish[(size_t)r % (sizeof(protocolish) - 1)];
            }
            if (send(fd, noise, len, MSG_NOSIGNAL) < 0)
                break;
            if (drain(&fixture, fd, 5))
                break;
        }
        drain(&fixture, fd, 20);
        close(fd);
    }
    drain(&fixture, -1, 20);
    /* Still serving. */
    {
        int fd = client_connect(fixture.port);

        receive(&fixture, fd, NULL, &text, &closed);
        CHECK_STR(text.data, BANNER);
        send_text(fd, NULL, "NOOP\r\n");
        receive(&fixture, fd, NULL, &text, &closed);
        CHECK_STR(text.data, "OK Noop completed\r\n");
        close(fd);
    }
    cairn_buf_release(&text);
    fixture_close(&fixture);
}

/* A port nothing listens on right now (bound, read, released). */
static uint16_t
free_port(void)
{
    struct sockaddr_in address = {.sin_family = AF_INET};
    socklen_t length = sizeof(address);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    uint16_t port = 0;

    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (bind(fd, (struct sockaddr *)&address, sizeof(address)) == 0 &&
        getsockname(fd, (struct sockaddr *)&address, &length) == 0)
        port = ntohs(address.sin_port);
    close(fd);
    return port;
}

/* Logs in on a new connection to port; the reply line in text. */
static int
login(struct fixture *fixture, uint16_t port, const char *command,
      struct cairn_buf *text)
{
    bool closed = false;
    int fd = client_connect(port);

    if (fd < 0)
        return -1;
    receive(fixture, fd, NULL, text, &closed);
    send_text(fd, NULL, command);
    receive(fixture, fd, NULL, text, &closed);
    return fd;
}

/*
 * Reload: credentials change for new connections, an open session goes on,
 * a new channel starts listening, a bad reload changes nothing, and a
 * dropped channel stops accepting while its session stays up.
 */
static void
test_reload(void)
{
    static const char *const plain[] = {"PLAIN"};
    static const char *const bogus[] = {"NO-SUCH-MECH"};
    /* \0newuser\0newpass */
    static const char new_login[] =
        "AUTHENTICATE PLAIN AG5ld3VzZXIAbmV3cGFzcw==\r\n";
    static const char old_login[] = "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n";
    char listen[32], error[256] = "";
    struct cairn_router_channel_settings channels[2] = {
        {.name = "backup",
         .listen = listen,
         .sasl_user = "repluser",
         .sasl_password = "replpass",
         .mechanisms = plain,
         .mechanism_count = 1},
        {.name = "offsite",
         .listen = "127.0.0.1:0",
         .sasl_user = "newuser",
         .sasl_password = "newpass",
         .mechanisms = plain,
         .mechanism_count = 1},
    };
    struct cairn_router_settings settings = {.servername = SERVERNAME,
                                             .channels = channels,
                                             .channel_count = 1,
                                             .failed_login_pause_ms = 1};
    struct fixture fixture = {0};
    struct cairn_buf text;
    bool closed = false;
    uint16_t port;
    int first, fd;

    snprintf(listen, sizeof(listen), "127.0.0.1:%u", (unsigned)free_port());
    cairn_buf_init(&text, 1 << 16);
    CHECK_INT(cairn_loop_new(&fixture.loop), 0);
    CHECK_INT(cairn_router_new(fixture.loop, &settings, &fixture.router, error,
                               sizeof(error)),
              0);
    port = cairn_router_port(fixture.router, 0);
    first = login(&fixture, port, old_login, &text);
    CHECK_STR(text.data, "OK Success (no protection)\r\n");

    /* New credentials on the same address, and a second channel. */
    channels[0].sasl_user = "newuser";
    channels[0].sasl_password = "newpass";
    settings.channel_count = 2;
    CHECK_INT(
        cairn_router_reload(fixture.router, &settings, error, sizeof(error)),
        0);
    CHECK_INT(cairn_router_port(fixture.router, 0), port);
    CHECK(cairn_router_port(fixture.router, 1) != 0);
    send_text(first, NULL, "NOOP\r\n");
    receive(&fixture, first, NULL, &text, &closed);
    CHECK_STR(text.data, "OK Noop completed\r\n");
    fd = login(&fixture, port, old_login, &text);
    CHECK_STR(text.data, "NO user not found\r\n");
    close(fd);
    fd = login(&fixture, port, new_login, &text);
    CHECK_STR(text.data, "OK Success (no protection)\r\n");
    close(fd);
    fd =
        login(&fixture, cairn_router_port(fixture.router, 1), new_login, &text);
    CHECK_STR(text.data, "OK Success (no protection)\r\n");
    close(fd);

    /* A reload that cannot work changes nothing. */
    channels[0].mechanisms = bogus;
    CHECK_INT(
        cairn_router_reload(fixture.router, &settings, error, sizeof(error)),
        CAIRN_ECONFIG);
    CHECK(error[0] != '\0');
    fd = login(&fixture, port, new_login, &text);
    CHECK_STR(text.data, "OK Success (no protection)\r\n");
    close(fd);

    /* Dropping the channel closes its listener, not its sessions. */
    channels[0] = channels[1];
    settings.channel_count = 1;
    CHECK_INT(
        cairn_router_reload(fixture.router, &settings, error, sizeof(error)),
        0);
    cairn_loop_run_once(fixture.loop, 10);
    CHECK_INT(client_connect(port), -1);
    send_text(first, NULL, "NOOP\r\n");
    receive(&fixture, first, NULL, &text, &closed);
    CHECK_STR(text.data, "OK Noop completed\r\n");
    CHECK_INT(cairn_router_connection_count(fixture.router), 1);
    close(first);
    cairn_buf_release(&text);
    fixture_close(&fixture);
}

/* Records what a spooled APPLY MESSAGE looked like to the handler. */
struct spool_log {
    int calls;
    int files;
    bool verified;
    char content[64];
    char path[512];
};

static int
on_spooled_request(void *arg, const struct cairn_router_request *request,
                   struct cairn_router_reply *reply)
{
    struct spool_log *log = arg;

    log->calls++;
    for (const struct cairn_dlist *item = cairn_dlist_first(request->value);
         item != NULL; item = cairn_dlist_next(item)) {
        void *handle = NULL;
        FILE *file;
        size_t got;

        if (!cairn_dlist_file_info(item, NULL, NULL, NULL, &handle))
            continue;
        log->files++;
        log->verified = cairn_router_spool_file_verified(handle);
        snprintf(log->path, sizeof(log->path), "%s",
                 cairn_router_spool_file_path(handle));
        file = fopen(log->path, "rb");
        CHECK(file != NULL);
        if (file != NULL) {
            got = fread(log->content, 1, sizeof(log->content) - 1, file);
            log->content[got] = '\0';
            fclose(file);
        }
    }
    return cairn_router_reply_complete(reply, CAIRN_CSYNC_OK,
                                       CAIRN_CSYNC_CODE_NONE, "Success");
}

/* sha1("hello") and a wrong GUID. */
#define HELLO_GUID "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
#define WRONG_GUID "0123456789012345678901234567890123456789"

static void
test_spool(void)
{
    static const struct exchange_case exchanges[] = {
        {"AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n",
         "OK Success (no protection)\r\n"},
        {"GET USER anne\r\n", "OK Success\r\n"},
        {"APPLY MESSAGE (%{default " HELLO_GUID " 5}\r\nhello)\r\n",
         "OK Success\r\n"},
        {"APPLY MESSAGE (%{default " WRONG_GUID " 5}\r\nhello)\r\n",
         "NO IMAP_PROTOCOL_ERROR Protocol error\r\n"},
        {"APPLY MESSAGE (NIL)\r\n",
         "NO IMAP_PROTOCOL_ERROR Protocol error\r\n"},
        /* 40 bytes do not fit a 32-byte spool: retryable NO, then on. */
        {"APPLY MESSAGE (%{default " HELLO_GUID
         " 40}\r\n0123456789012345678901234567890123456789)\r\n",
         "NO IMAP_MAILBOX_LOCKED message spool full, try again later\r\n"},
        {"NOOP\r\n", "OK Noop completed\r\n"},
    };
    char dir[] = "/tmp/cairn-test-spool-XXXXXX";
    struct spool_log log = {0};
    struct fixture fixture;
    struct cairn_buf text;
    bool closed = false;
    int fd;

    CHECK(mkdtemp(dir) != NULL);
    CHECK_INT(fixture_open_spool(&fixture, 0, 0, 0, dir, 32), 0);
    cairn_router_set_request_handler(fixture.router, on_spooled_request, &log);
    fd = client_connect(fixture.port);
    cairn_buf_init(&text, 1 << 16);
    receive(&fixture, fd, NULL, &text, &closed);
    run_exchanges(&fixture, fd, NULL, exchanges,
                  sizeof(exchanges) / sizeof(exchanges[0]));
    CHECK_INT(log.calls, 2); /* GET USER, the good MESSAGE */
    CHECK_INT(log.files, 1);
    CHECK(log.verified);
    CHECK_STR(log.content, "hello");
    CHECK(access(log.path, F_OK) != 0); /* removed after the reply */
    CHECK_U64(cairn_router_spool_used(fixture.router->spool), 0);
    close(fd);
    cairn_buf_release(&text);
    fixture_close(&fixture);
    CHECK_INT(rmdir(dir), 0); /* nothing left behind */
}

static void
timed(const char *name, void (*test)(void))
{
    uint64_t started = cairn_loop_now_ms();

    test();
    printf("%s: %llu ms\n", name,
           (unsigned long long)(cairn_loop_now_ms() - started));
}

int
main(void)
{
    timed("login_and_refusals", test_login_and_refusals);
    timed("compress_and_handler", test_compress_and_handler);
    timed("probe_and_limits", test_probe_and_limits);
    timed("idle_timeout", test_idle_timeout);
    timed("backpressure", test_backpressure);
    timed("spool", test_spool);
    timed("failed_login_pause", test_failed_login_pause);
    timed("two_channels", test_two_channels);
    timed("garbage", test_garbage);
    timed("reload", test_reload);
    return check_exit("test_session");
}
