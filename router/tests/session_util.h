/*
 * session_util.h - what the router's session tests share: a router on a
 * free loopback port driven from the test's own thread, and a client that
 * sends commands (deflated after COMPRESS) and reads whole responses.
 */
#ifndef CAIRN_ROUTER_SESSION_UTIL_H
#define CAIRN_ROUTER_SESSION_UTIL_H

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

static inline int
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

static inline int
fixture_open(struct fixture *fixture, size_t max_output, size_t max_line,
             uint64_t idle_ms)
{
    return fixture_open_spool(fixture, max_output, max_line, idle_ms, NULL, 0);
}

static inline void
fixture_close(struct fixture *fixture)
{
    cairn_router_free(fixture->router);
    cairn_loop_free(fixture->loop);
}

static inline int
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

static inline int
client_connect(uint16_t port)
{
    return client_connect_buffer(port, 0);
}

/* True once text holds a whole response (last line not "* ...") or a whole
 * banner (ends in "* OK ..."). */
static inline bool
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
static inline void
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

static inline void
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

static inline void
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

/* sha1("hello") and a wrong GUID. */
#define HELLO_GUID "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
#define WRONG_GUID "0123456789012345678901234567890123456789"
/* An APPLY MAILBOX of anne's whose one record names guid (a literal). */
#define MAILBOX_NAMING(mailbox, guid)                                          \
    "APPLY MAILBOX %(UNIQUEID u1 MBOXNAME " mailbox                            \
    " RECORD (%(UID 1 GUID " guid ")))\r\n"

/* Drives the loop for ms milliseconds, draining what fd receives. */
static inline bool
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

/* Nothing arrives on fd while the loop runs for ms milliseconds. */
static inline bool
quiet(struct fixture *fixture, int fd, uint64_t ms)
{
    uint64_t deadline = cairn_loop_now_ms() + ms;
    char byte;

    while (cairn_loop_now_ms() < deadline) {
        cairn_loop_run_once(fixture->loop, 5);
        if (recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) >= 0)
            return false;
    }
    return true;
}

/* A port nothing listens on right now (bound, read, released). */
static inline uint16_t
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
static inline int
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

#endif /* CAIRN_ROUTER_SESSION_UTIL_H */
