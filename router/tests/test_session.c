/*
 * test_session.c - the router over real loopback TCP, driven from the same
 * thread: the banner, what is refused before login, PLAIN login, arity and
 * unknown-command errors, the cross-user refusal bytes, the request
 * handler, COMPRESS DEFLATE in both directions, EXIT, the IMAP probe,
 * oversized lines, the idle timeout, and output backpressure (a client
 * that never reads does not stall another one).
 */

#include "session_util.h"

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
    size_t message_files; /* staged bodies that came with the request */
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
    log->message_files = cairn_dlist_count(request->message);
    if (strcmp(request->resolution->key, "MAILBOX") == 0) {
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
         "OK Success\r\n"},
        {MAILBOX_NAMING("user.anne", WRONG_GUID), "NO Unknown error\r\n"},
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
    CHECK_INT(log.calls, 2); /* GET USER, MAILBOX: MESSAGE is staged */
    CHECK_STR(log.userid, "anne");
    CHECK_STR(log.key, "MAILBOX");
    CHECK_U64(log.message_files, 1); /* the body its record names */
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
    const char *mailbox = NULL;

    log->calls++;
    for (const struct cairn_dlist *item = cairn_dlist_first(request->message);
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
        /* The body's bytes within its connection's spool file. */
        file = fopen(log->path, "rb");
        CHECK(file != NULL);
        if (file != NULL) {
            CHECK_INT(fseeko(file,
                             (off_t)cairn_router_spool_file_offset(handle),
                             SEEK_SET),
                      0);
            got = fread(log->content, 1, 5, file);
            log->content[got] = '\0';
            fclose(file);
        }
    }
    /* The nodes refusing a mailbox: the bodies must stay for the retry. */
    if (cairn_dlist_get_atom(request->value, "MBOXNAME", &mailbox) &&
        strcmp(mailbox, "user.anne.refused") == 0)
        return cairn_router_reply_complete(reply, CAIRN_CSYNC_NO,
                                           CAIRN_CSYNC_CODE_MAILBOX_LOCKED,
                                           "node down");
    return cairn_router_reply_complete(reply, CAIRN_CSYNC_OK,
                                       CAIRN_CSYNC_CODE_NONE, "Success");
}

/*
 * Bodies are spooled, checked against their GUID, staged until the APPLY
 * MAILBOX that names them is answered OK (kept over a NO for the retry,
 * dropped by the next RESERVE), and counted against the spool's budget.
 */
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
        /* 40 bytes do not fit beside the staged 5 in a 32-byte spool:
         * retryable NO, then on. */
        {"APPLY MESSAGE (%{default " HELLO_GUID
         " 40}\r\n0123456789012345678901234567890123456789)\r\n",
         "NO IMAP_MAILBOX_LOCKED message spool full, try again later\r\n"},
        {MAILBOX_NAMING("user.anne.refused", HELLO_GUID),
         "NO IMAP_MAILBOX_LOCKED node down\r\n"},
        {MAILBOX_NAMING("user.anne", HELLO_GUID), "OK Success\r\n"},
        {"NOOP\r\n", "OK Noop completed\r\n"},
    };
    static const struct exchange_case next_batch[] = {
        {"APPLY MESSAGE (%{default " HELLO_GUID " 5}\r\nhello)\r\n",
         "OK Success\r\n"},
        {"APPLY RESERVE %(PARTITION default MBOXNAME (user.anne) GUID ())\r\n",
         "OK Success\r\n"},
        {MAILBOX_NAMING("user.anne", HELLO_GUID), "OK Success\r\n"},
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
    /* GET USER and both MAILBOXes; the body went with each of them. */
    CHECK_INT(log.calls, 3);
    CHECK_INT(log.files, 2);
    CHECK(log.verified);
    CHECK_STR(log.content, "hello");
    CHECK(access(log.path, F_OK) != 0); /* removed after the OK */
    CHECK_U64(cairn_router_spool_used(fixture.router->spool), 0);

    /* A RESERVE starts the next batch: what was staged before it goes. */
    log = (struct spool_log){0};
    run_exchanges(&fixture, fd, NULL, next_batch,
                  sizeof(next_batch) / sizeof(next_batch[0]));
    CHECK_INT(log.calls, 2); /* RESERVE, MAILBOX */
    CHECK_INT(log.files, 0);
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
    timed("garbage", test_garbage);
    return check_exit("test_session");
}
