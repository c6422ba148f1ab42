/*
 * listener.c - the router's connection layer: one non-blocking TCP
 * listener per channel, and per connection bounded input and output
 * buffers, TLS (tls.c) under COMPRESS DEFLATE on the wire, output
 * backpressure (a connection
 * whose peer does not read stops being read from, and never holds up the
 * others), an idle timeout, and a clean close. What the bytes mean is
 * session.c's business.
 */
#include "router_int.h"
#include "router_metrics_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes read per read(2), and the most plain input held at once. */
#define READ_CHUNK 65536
#define INPUT_MAX (4 * READ_CHUNK)
/* How often idle connections are looked for. */
#define SWEEP_INTERVAL_MS 1000

void
cairn_router_event(struct cairn_router *router,
                   const struct cairn_router_conn *conn,
                   enum cairn_router_event_level level, const char *fmt, ...)
{
    struct cairn_router_event event = {.level = level};
    char message[512];
    va_list ap;

    if (router->event_fn == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    event.message = message;
    if (conn != NULL) {
        event.channel = conn->channel->name;
        event.peer = conn->peer;
        event.login = conn->auth.authenticated ? conn->auth.login : NULL;
    }
    router->event_fn(router->event_arg, &event);
}

static bool
output_drained(const struct cairn_router_conn *conn)
{
    return conn->output.len == 0;
}

bool
cairn_router_conn_output_full(const struct cairn_router_conn *conn)
{
    return conn->output.len >= conn->router->max_output;
}

static void
conn_free(struct cairn_router_conn *conn)
{
    struct cairn_router *router = conn->router;

    cairn_loop_remove_fd(router->loop, conn->fd);
    if (conn->hold_timer != 0)
        cairn_loop_cancel_timer(router->loop, conn->hold_timer);
    if (conn->pending_reply != NULL)
        cairn_router_reply_detach(conn->pending_reply);
    close(conn->fd);
    if (conn->prev != NULL)
        conn->prev->next = conn->next;
    else
        router->conns = conn->next;
    if (conn->next != NULL)
        conn->next->prev = conn->prev;
    router->conn_count--;
    cairn_router_metric_connection(conn->channel->name, -1);
    cairn_csync_reader_free(conn->reader);
    cairn_router_stage_free(conn->stage); /* NULL when a reply took it */
    /* Bodies still held (a pending reply's stage) keep their file. */
    cairn_router_spool_writer_free(conn->spool_writer);
    cairn_compress_free(conn->compress);
    cairn_router_tls_free(conn);
    cairn_buf_release(&conn->tls_in);
    cairn_router_auth_session_release(&conn->auth);
    cairn_buf_release(&conn->input);
    cairn_buf_release(&conn->wire_in);
    cairn_buf_release(&conn->reply);
    cairn_buf_release(&conn->output);
    cairn_router_channel_unref(conn->channel);
    free(conn);
}

static void
conn_close(struct cairn_router_conn *conn, const char *why)
{
    cairn_router_event(conn->router, conn, CAIRN_ROUTER_EVENT_INFO,
                       "connection closed: %s", why);
    conn_free(conn);
}

/* Writes what the socket takes now; the rest waits for POLLOUT. */
static int
write_output(struct cairn_router_conn *conn)
{
    while (conn->output.len > 0) {
        /* MSG_NOSIGNAL: a vanished peer is EPIPE, not a process-killing
         * SIGPIPE, whether or not the program ignores the signal. */
        ssize_t written =
            send(conn->fd, conn->output.data, conn->output.len, MSG_NOSIGNAL);

        if (written < 0 && errno == EINTR)
            continue;
        if (written < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return CAIRN_OK;
        if (written <= 0)
            return CAIRN_EIO;
        cairn_buf_consume(&conn->output, (size_t)written);
    }
    return CAIRN_OK;
}

/* The reply, deflated when COMPRESS is on, into TLS records. */
static int
encrypt_reply(struct cairn_router_conn *conn)
{
    struct cairn_buf deflated;
    int rc;

    if (conn->compress == NULL)
        return cairn_router_tls_output(conn, conn->reply.data, conn->reply.len);
    cairn_buf_init(&deflated, conn->output.max);
    rc = cairn_compress_deflate(conn->compress, conn->reply.data,
                                conn->reply.len, true, &deflated);
    if (rc == 0)
        rc = cairn_router_tls_output(conn, deflated.data, deflated.len);
    cairn_buf_release(&deflated);
    return rc;
}

int
cairn_router_conn_flush_reply(struct cairn_router_conn *conn)
{
    int rc;

    if (conn->reply.len == 0)
        return CAIRN_OK;
    if (conn->tls != NULL)
        rc = encrypt_reply(conn);
    else if (conn->compress != NULL)
        rc = cairn_compress_deflate(conn->compress, conn->reply.data,
                                    conn->reply.len, true, &conn->output);
    else
        rc = cairn_buf_append(&conn->output, conn->reply.data, conn->reply.len);
    cairn_buf_reset(&conn->reply);
    if (rc < 0)
        return rc;
    return write_output(conn);
}

int
cairn_router_conn_start_tls(struct cairn_router_conn *conn)
{
    /* Plain bytes sent after STARTTLS, before the handshake, would be
     * taken as protected: they are dropped, as Cyrus's sync_server does. */
    if (conn->input.len > 0)
        cairn_router_event(conn->router, conn, CAIRN_ROUTER_EVENT_WARN,
                           "%zu plain bytes after STARTTLS dropped",
                           conn->input.len);
    cairn_buf_reset(&conn->input);
    return cairn_router_tls_start(conn);
}

/* Decrypts what TLS holds while the next stage has room; the banner goes
 * out when the handshake ends. */
static int
decrypt_input(struct cairn_router_conn *conn)
{
    struct cairn_buf *target = conn->compress ? &conn->wire_in : &conn->input;
    bool finished = false;
    int rc;

    if (conn->tls == NULL || target->len >= READ_CHUNK)
        return CAIRN_OK;
    rc = cairn_router_tls_input(conn, target, target->len + READ_CHUNK,
                                &finished);
    if (rc == 0 && finished)
        rc = cairn_router_session_tls_ready(conn);
    return rc;
}

/* Bytes read and not yet given to the command reader. */
static size_t
unread_input(const struct cairn_router_conn *conn)
{
    return conn->input.len + conn->wire_in.len + cairn_router_tls_pending(conn);
}

int
cairn_router_conn_start_compress(struct cairn_router_conn *conn)
{
    int rc;

    if ((rc = cairn_compress_new(&conn->compress)) < 0)
        return rc;
    /* Whatever followed the COMPRESS line is already compressed. */
    rc = cairn_buf_append(&conn->wire_in, conn->input.data, conn->input.len);
    cairn_buf_reset(&conn->input);
    return rc;
}

/* Inflates as much pending wire input as the plain input buffer takes. */
static int
inflate_input(struct cairn_router_conn *conn)
{
    size_t consumed = 0, room;
    int rc;

    if (conn->compress == NULL || conn->wire_in.len == 0 ||
        conn->input.len >= READ_CHUNK)
        return CAIRN_OK;
    room = INPUT_MAX - conn->input.len;
    rc = cairn_compress_inflate(conn->compress, conn->wire_in.data,
                                conn->wire_in.len, &consumed, room,
                                &conn->input);
    cairn_buf_consume(&conn->wire_in, consumed);
    return rc;
}

/* Runs commands while there is input and room for their replies. */
static int
pump(struct cairn_router_conn *conn)
{
    int rc = CAIRN_OK;

    while (!conn->closing && conn->hold_timer == 0 &&
           conn->pending_reply == NULL &&
           !cairn_router_conn_output_full(conn)) {
        size_t before = unread_input(conn);

        if ((rc = decrypt_input(conn)) < 0)
            break;
        if ((rc = inflate_input(conn)) < 0)
            break;
        if (conn->input.len == 0)
            break;
        if ((rc = cairn_router_session_process(conn)) < 0)
            break;
        if (unread_input(conn) == before)
            break; /* nothing consumed: wait for output room */
    }
    return rc;
}

/*
 * Reads on while less than a chunk waits unprocessed (also while a reply
 * is held or pending, so that a peer that goes away is noticed), and never
 * while the output is over its mark: that is the backpressure.
 */
static void
update_interest(struct cairn_router_conn *conn)
{
    unsigned events = 0;

    if (!conn->closing && !conn->read_closed &&
        unread_input(conn) < READ_CHUNK && !cairn_router_conn_output_full(conn))
        events |= CAIRN_LOOP_READ;
    if (!output_drained(conn))
        events |= CAIRN_LOOP_WRITE;
    cairn_loop_set_fd_events(conn->router->loop, conn->fd, events);
}

static void on_conn_ready(struct cairn_loop *loop, int fd, unsigned events,
                          void *arg);

static void
on_hold_over(struct cairn_loop *loop, uint64_t timer_id, void *arg)
{
    struct cairn_router_conn *conn = arg;
    int rc;

    conn->hold_timer = 0;
    rc = cairn_router_conn_flush_reply(conn);
    if (rc < 0) {
        conn_close(conn, cairn_strerror(rc));
        return;
    }
    /* Go on with whatever arrived meanwhile, as if the socket were ready. */
    on_conn_ready(loop, conn->fd, 0, conn);
}

int
cairn_router_conn_hold_reply(struct cairn_router_conn *conn, uint64_t delay_ms)
{
    if (conn->hold_timer != 0)
        return CAIRN_OK; /* already scheduled: one timer per connection */
    return cairn_loop_add_timer(conn->router->loop, delay_ms, 0, on_hold_over,
                                conn, &conn->hold_timer);
}

static int
read_input(struct cairn_router_conn *conn)
{
    struct cairn_buf *target = conn->tls        ? &conn->tls_in
                               : conn->compress ? &conn->wire_in
                                                : &conn->input;
    ssize_t got;
    int rc;

    if ((rc = cairn_buf_reserve(target, READ_CHUNK)) < 0)
        return rc;
    got = read(conn->fd, target->data + target->len, READ_CHUNK);
    if (got < 0 && (errno == EAGAIN || errno == EINTR))
        return CAIRN_OK;
    if (got < 0)
        return CAIRN_EIO;
    if (got == 0) {
        conn->read_closed = true;
        return CAIRN_OK;
    }
    cairn_router_metric_bytes_in(conn->channel->name, (size_t)got);
    target->len += (size_t)got;
    target->data[target->len] = '\0';
    conn->last_activity_ms = cairn_loop_now_ms();
    if (conn->tls == NULL)
        return CAIRN_OK;
    rc = cairn_router_tls_receive(conn, target->data, target->len);
    cairn_buf_reset(target);
    return rc;
}

static void
on_conn_ready(struct cairn_loop *loop, int fd, unsigned events, void *arg)
{
    struct cairn_router_conn *conn = arg;
    const char *why = NULL;
    int rc = CAIRN_OK;

    if (events & CAIRN_LOOP_WRITE)
        rc = write_output(conn);
    if (rc == 0 && (events & (CAIRN_LOOP_READ | CAIRN_LOOP_ERROR)))
        rc = read_input(conn);
    if (rc == 0)
        rc = pump(conn);
    if (rc == 0)
        rc = write_output(conn);
    if (rc == CAIRN_EPROTO && conn->tls != NULL)
        write_output(conn); /* the TLS alert, if the socket takes it */
    /* A session that ends (EXIT, a violation) ends TLS cleanly too. */
    if (rc == 0 && conn->closing && output_drained(conn) &&
        cairn_router_tls_close_notify(conn) == 0)
        rc = write_output(conn);
    if (rc < 0)
        why = cairn_strerror(rc);
    else if (conn->closing && output_drained(conn))
        why = "session ended";
    else if (conn->read_closed &&
             (conn->hold_timer != 0 || conn->pending_reply != NULL ||
              unread_input(conn) == 0))
        why = "peer closed the connection";
    if (why != NULL) {
        conn_close(conn, why);
        return;
    }
    update_interest(conn);
}

/* "host:port" of either end of fd, and SASL's "host;port" form. */
static void
peer_name(int fd, char *peer, size_t size, char *sasl_ip, size_t sasl_size,
          bool local)
{
    struct sockaddr_storage address;
    socklen_t length = sizeof(address);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    int rc = local ? getsockname(fd, (struct sockaddr *)&address, &length)
                   : getpeername(fd, (struct sockaddr *)&address, &length);

    if (rc == 0 && address.ss_family == AF_INET6) {
        const struct sockaddr_in6 *ipv6 = (const struct sockaddr_in6 *)&address;

        inet_ntop(AF_INET6, &ipv6->sin6_addr, host, sizeof(host));
        port = ntohs(ipv6->sin6_port);
    } else if (rc == 0) {
        const struct sockaddr_in *ipv4 = (const struct sockaddr_in *)&address;

        inet_ntop(AF_INET, &ipv4->sin_addr, host, sizeof(host));
        port = ntohs(ipv4->sin_port);
    }
    if (peer != NULL)
        snprintf(peer, size, "%s:%u", host, port);
    snprintf(sasl_ip, sasl_size, "%s;%u", host, port);
}

static int
conn_new(struct cairn_router_channel *channel, int fd,
         struct cairn_router_conn **out)
{
    struct cairn_router *router = channel->router;
    struct cairn_router_conn *conn = calloc(1, sizeof(*conn));
    struct cairn_dlist_file_sink sink = {0};
    char local[64], remote[64];
    int rc = 0;

    *out = NULL;
    if (conn == NULL) {
        close(fd);
        return CAIRN_ENOMEM;
    }
    conn->router = router;
    conn->channel = channel;
    channel->refs++; /* a reload may drop the channel; we keep it */
    conn->fd = fd;
    conn->last_activity_ms = cairn_loop_now_ms();
    peer_name(fd, conn->peer, sizeof(conn->peer), remote, sizeof(remote),
              false);
    peer_name(fd, NULL, 0, local, sizeof(local), true);
    cairn_buf_init(&conn->input, INPUT_MAX);
    cairn_buf_init(&conn->wire_in, INPUT_MAX);
    cairn_buf_init(&conn->tls_in, READ_CHUNK);
    cairn_buf_init(&conn->reply, router->max_output);
    /* Output may pass the high-water mark by one reply, plus what deflate
     * adds to incompressible data (a few bytes per 16 KiB block), and
     * what TLS adds: a handshake, under 64 bytes per 16 KiB record. */
    cairn_buf_init(&conn->output,
                   2 * router->max_output + router->max_output / 8 + 65536);
    cairn_router_auth_session_init(&conn->auth, &channel->auth, local, remote);
    conn->next = router->conns;
    if (router->conns != NULL)
        router->conns->prev = conn;
    router->conns = conn;
    router->conn_count++;
    cairn_router_metric_connection(channel->name, 1);
    if (router->spool != NULL && (rc = cairn_router_spool_writer_new(
                                      router->spool, &conn->spool_writer)) == 0)
        cairn_router_spool_writer_sink(conn->spool_writer, &sink);
    if (rc == 0)
        rc =
            cairn_csync_reader_new(router->max_line, &router->limits,
                                   router->spool ? &sink : NULL, &conn->reader);
    if (rc == 0)
        rc = cairn_router_stage_new(&conn->stage);
    if (rc == 0)
        rc = cairn_loop_add_fd(router->loop, fd, CAIRN_LOOP_READ, on_conn_ready,
                               conn);
    if (rc < 0) {
        conn_free(conn);
        return rc;
    }
    *out = conn;
    return CAIRN_OK;
}

void
cairn_router_accept(struct cairn_loop *loop, int fd, unsigned events, void *arg)
{
    struct cairn_router_channel *channel = arg;
    struct cairn_router *router = channel->router;
    struct cairn_router_conn *conn = NULL;
    int client, rc;

    while ((client = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >=
           0) {
        if (router->conn_count >= router->max_connections) {
            cairn_router_event(router, NULL, CAIRN_ROUTER_EVENT_WARN,
                               "channel %s: connection refused, %zu open",
                               channel->name, router->conn_count);
            close(client);
            continue;
        }
        if ((rc = conn_new(channel, client, &conn)) < 0) {
            cairn_router_event(router, NULL, CAIRN_ROUTER_EVENT_ERROR,
                               "channel %s: cannot set up a connection: %s",
                               channel->name, cairn_strerror(rc));
            continue;
        }
        cairn_router_event(router, conn, CAIRN_ROUTER_EVENT_INFO,
                           "connection accepted");
        /* Implicit TLS: the banner waits for the handshake. */
        if (channel->implicit_tls)
            rc = cairn_router_tls_start(conn);
        else
            rc = cairn_router_session_start(conn);
        if (rc < 0) {
            conn_close(conn, cairn_strerror(rc));
            continue;
        }
        update_interest(conn);
    }
}

static void
on_sweep(struct cairn_loop *loop, uint64_t timer_id, void *arg)
{
    struct cairn_router *router = arg;
    uint64_t now = cairn_loop_now_ms();
    struct cairn_router_conn *conn = router->conns, *next;

    for (; conn != NULL; conn = next) {
        next = conn->next;
        if (now - conn->last_activity_ms > conn->channel->idle_timeout_ms)
            conn_close(conn, "idle timeout");
    }
}

static char *
copy_or_null(const char *text)
{
    return text != NULL ? strdup(text) : NULL;
}

int
cairn_router_copy_settings(struct cairn_router *router,
                           const struct cairn_router_settings *settings)
{
    free(router->servername);
    free(router->default_domain);
    free(router->deleted_prefix);
    router->servername =
        strdup(settings->servername ? settings->servername : "localhost");
    router->default_domain = copy_or_null(settings->names.default_domain);
    router->deleted_prefix = copy_or_null(settings->names.deleted_prefix);
    if (router->servername == NULL ||
        (settings->names.default_domain && !router->default_domain) ||
        (settings->names.deleted_prefix && !router->deleted_prefix))
        return CAIRN_ENOMEM;
    router->names.default_domain = router->default_domain;
    router->names.deleted_prefix = router->deleted_prefix;
    router->max_connections =
        settings->max_connections ? settings->max_connections : 1024;
    router->max_line = settings->max_line ? settings->max_line : 65536;
    router->max_output =
        settings->max_output ? settings->max_output : 4 * 1024 * 1024;
    router->failed_login_pause_ms = settings->failed_login_pause_ms
                                        ? settings->failed_login_pause_ms
                                        : 3000;
    if (settings->limits != NULL)
        router->limits = *settings->limits;
    else
        cairn_dlist_limits_default(&router->limits);
    return CAIRN_OK;
}

int
cairn_router_new(struct cairn_loop *loop,
                 const struct cairn_router_settings *settings,
                 struct cairn_router **out, char *error, size_t error_size)
{
    struct cairn_router *router = calloc(1, sizeof(*router));
    char ignored[8];
    int rc = CAIRN_ENOMEM;

    *out = NULL;
    if (error == NULL) {
        error = ignored;
        error_size = sizeof(ignored);
    }
    error[0] = '\0';
    if (router == NULL)
        return CAIRN_ENOMEM;
    router->loop = loop;
    if ((rc = cairn_router_copy_settings(router, settings)) < 0)
        goto out;
    if (settings->spool_dir != NULL) {
        rc = cairn_router_spool_new(settings->spool_dir,
                                    settings->spool_max ? settings->spool_max
                                                        : 1ull << 30,
                                    &router->spool);
        if (rc < 0) {
            snprintf(error, error_size, "cannot use spool directory %s",
                     settings->spool_dir);
            goto out;
        }
    }
    if ((rc = cairn_router_auth_global_init()) < 0) {
        snprintf(error, error_size, "libsasl2 server init failed");
        goto out;
    }
    router->sasl_initialised = true;
    if ((rc = cairn_router_reload(router, settings, error, error_size)) < 0)
        goto out;
    rc = cairn_loop_add_timer(loop, SWEEP_INTERVAL_MS, SWEEP_INTERVAL_MS,
                              on_sweep, router, &router->sweep_timer);
out:
    if (rc < 0) {
        cairn_router_free(router);
        return rc;
    }
    *out = router;
    return CAIRN_OK;
}

void
cairn_router_free(struct cairn_router *router)
{
    if (router == NULL)
        return;
    while (router->conns != NULL)
        conn_free(router->conns);
    for (size_t i = 0; i < router->channel_count; i++) {
        cairn_router_channel_close_listener(router->channels[i]);
        cairn_router_channel_unref(router->channels[i]);
    }
    if (router->sweep_timer != 0)
        cairn_loop_cancel_timer(router->loop, router->sweep_timer);
    if (router->sasl_initialised)
        cairn_router_auth_global_done();
    cairn_router_spool_free(router->spool);
    free(router->channels);
    free(router->servername);
    free(router->default_domain);
    free(router->deleted_prefix);
    free(router);
}

void
cairn_router_set_event_handler(struct cairn_router *router,
                               cairn_router_event_fn fn, void *arg)
{
    router->event_fn = fn;
    router->event_arg = arg;
}

void
cairn_router_set_request_handler(struct cairn_router *router,
                                 cairn_router_request_fn fn, void *arg)
{
    router->request_fn = fn;
    router->request_arg = arg;
}

uint16_t
cairn_router_port(const struct cairn_router *router, size_t channel)
{
    return channel < router->channel_count ? router->channels[channel]->port
                                           : 0;
}

size_t
cairn_router_connection_count(const struct cairn_router *router)
{
    return router->conn_count;
}
