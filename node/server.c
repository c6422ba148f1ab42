/*
 * server.c - the node daemon's socket side: the ROUTER socket, reading
 * multipart messages one frame at a time (bodies go straight to a spool
 * file), dispatch by kind, replies, and the group-commit round that turns
 * appended updates into ACKs.
 */
#include "common.h"
#include "daemon.h"
#include "node_metrics.h"
#include "server_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define DEFAULT_MAX_FRAME (1024 * 1024)
#define DEFAULT_OPEN_STORES 256
#define DEFAULT_IDLE_CLOSE_MS 60000
#define DEFAULT_MAX_STREAMS 1024
#define DEFAULT_MAX_QUEUED 256
#define DEFAULT_STREAM_TIMEOUT_MS 60000
#define IDLE_SWEEP_MS 1000
/* Replies are small except state answers; never drop one on a full pipe. */
#define REPLY_HWM 100000
/* Few messages wait in ZeroMQ per peer: with body frames of up to
 * max_frame each, this is what bounds the node's memory per peer. */
#define RECEIVE_HWM 8
/* A dlist (APPLY MAILBOX of a big folder) is parsed whole: its limit. */
#define MAX_DLIST_BYTES (256u * 1024 * 1024)

void
node_event(struct cairn_node_server *server, enum cairn_log_level level,
           const struct node_request *request, const char *fmt, ...)
{
    struct cairn_node_server_event event = {0};
    char message[512], peer[2 * 16 + 1] = "";
    va_list ap;

    if (server->event_fn == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    event.level = level;
    event.message = message;
    if (request != NULL) {
        for (size_t i = 0; i < request->routing_id_len && i < 16; i++)
            snprintf(peer + 2 * i, 3, "%02x", request->routing_id[i]);
        event.peer = peer;
        if (request->envelope != NULL) {
            event.request_id = request->envelope->request_id;
            if (request->envelope->user && request->envelope->user[0])
                event.user = request->envelope->user;
        }
    }
    server->event_fn(server->event_arg, &event);
}

void
node_request_free(struct node_request *request)
{
    if (request == NULL)
        return;
    if (request->envelope)
        cairn__envelope__free_unpacked(request->envelope, NULL);
    if (request->spool_fd >= 0)
        close(request->spool_fd);
    cairn_buf_release(&request->memory);
    cairn_dlist_free(request->missing);
    free(request->dlist);
    free(request);
}

/* zmq_msg_send consumes the message only on success; this always does. */
static int
send_frame(void *socket, const void *data, size_t len, bool more)
{
    zmq_msg_t msg;

    if (zmq_msg_init_size(&msg, len) != 0)
        return CAIRN_ENOMEM;
    if (len > 0)
        memcpy(zmq_msg_data(&msg), data, len);
    if (zmq_msg_send(&msg, socket, more ? ZMQ_SNDMORE : 0) < 0) {
        zmq_msg_close(&msg);
        return errno == EHOSTUNREACH ? CAIRN_EUNAVAILABLE : CAIRN_EIO;
    }
    return 0;
}

static int
send_reply(struct cairn_node_server *server, const struct node_request *req,
           Cairn__Envelope *envelope, const struct cairn_buf *frames,
           size_t frame_count)
{
    unsigned char stack[512];
    unsigned char *packed = stack;
    size_t size = cairn__envelope__get_packed_size(envelope);
    int rc;

    if (size > sizeof(stack) && (packed = malloc(size)) == NULL)
        return CAIRN_ENOMEM;
    cairn__envelope__pack(envelope, packed);
    if ((rc = send_frame(server->socket, req->routing_id, req->routing_id_len,
                         true)) < 0)
        goto out;
    if ((rc = send_frame(server->socket, packed, size, frame_count > 0)) < 0)
        goto out;
    for (size_t i = 0; i < frame_count; i++)
        if ((rc = send_frame(server->socket, frames[i].data, frames[i].len,
                             i + 1 < frame_count)) < 0)
            goto out;
out:
    if (packed != stack)
        free(packed);
    if (rc < 0)
        node_event(server, CAIRN_LOG_WARN, req, "reply lost: %s",
                   cairn_strerror(rc));
    return rc;
}

int
node_reply(struct cairn_node_server *server, const struct node_request *request,
           Cairn__Kind kind, const struct cairn_buf *frames, size_t frame_count,
           bool has_body)
{
    Cairn__Envelope envelope = CAIRN__ENVELOPE__INIT;
    uint64_t bytes = 0;

    for (size_t i = 0; i < frame_count; i++)
        bytes += frames[i].len;
    envelope.kind = kind;
    envelope.request_id = request->envelope->request_id;
    envelope.user = request->envelope->user;
    envelope.sequence = request->envelope->sequence;
    envelope.ring_epoch = request->envelope->ring_epoch;
    envelope.payload_frames = (uint32_t)frame_count;
    envelope.payload_bytes = bytes;
    envelope.has_body = has_body;
    return send_reply(server, request, &envelope, frames, frame_count);
}

int
node_reply_error(struct cairn_node_server *server,
                 const struct node_request *request, int code,
                 unsigned csync_code, const char *text)
{
    Cairn__Envelope envelope = CAIRN__ENVELOPE__INIT;

    envelope.kind = CAIRN__KIND__ERROR;
    envelope.request_id = request->envelope->request_id;
    envelope.user = request->envelope->user;
    envelope.sequence = request->envelope->sequence;
    envelope.error_code = code;
    envelope.error_text = (char *)(text ? text : cairn_strerror(code));
    envelope.csync_code = csync_code;
    node_event(server, CAIRN_LOG_INFO, request, "%s %s: %s",
               request->envelope->verb ? request->envelope->verb : "",
               request->envelope->key ? request->envelope->key : "",
               envelope.error_text);
    return send_reply(server, request, &envelope, NULL, 0);
}

void
node_answer_applied(struct cairn_node_server *server, struct node_user *user,
                    int outcome)
{
    struct node_request *request = user->applied, *next;

    for (; request != NULL; request = next) {
        next = request->next;
        if (outcome < 0) {
            node_reply_error(server, request, outcome, 0,
                             "commit failed, update not stored");
            if (request->envelope->sequence == user->last_sequence)
                user->last_outcome = outcome;
        } else {
            struct cairn_buf frame;
            size_t count = 0;

            cairn_buf_init(&frame, 64 * 1024 * 1024);
            if (request->missing && cairn_dlist_count(request->missing) > 0 &&
                node_print_item(request->missing, &frame) == 0)
                count = 1;
            node_reply(server, request, CAIRN__KIND__ACK, &frame, count, false);
            cairn_buf_release(&frame);
        }
        node_request_free(request);
    }
    user->applied = user->applied_tail = NULL;
}

void
node_commit_round(struct cairn_node_server *server)
{
    struct cairn_store **stores = NULL;
    int *results = NULL, rc = 0;
    size_t count = server->round_count, with_store = 0, failed = 0;
    uint64_t started_us = cairn_node_metric_clock_us(), elapsed_us = 0;

    if (count == 0)
        return;
    stores = calloc(count, sizeof(*stores));
    results = calloc(count, sizeof(*results));
    if (stores == NULL || results == NULL) {
        rc = CAIRN_ENOMEM;
    } else {
        for (size_t i = 0; i < count; i++)
            if (server->round_users[i]->store)
                stores[with_store++] = server->round_users[i]->store;
        cairn_store_commit_many(stores, with_store, results);
        elapsed_us = cairn_node_metric_clock_us() - started_us;
        /* results follow the order of stores; spread them back. */
        for (size_t i = count, j = with_store; i-- > 0;)
            results[i] = server->round_users[i]->store ? results[--j] : 0;
    }
    for (size_t i = 0; i < count; i++) {
        struct node_user *user = server->round_users[i];
        int outcome = results ? results[i] : rc;

        if (outcome < 0 && user->store) {
            node_event(server, CAIRN_LOG_ERROR, NULL, "commit of %s: %s",
                       user->userid, cairn_strerror(outcome));
            cairn_store_abort(user->store);
        }
        failed += outcome < 0;
        node_answer_applied(server, user, outcome);
        user->in_round = false;
    }
    cairn_node_metric_commit_round(count, failed, elapsed_us);
    server->round_count = 0;
    free(stores);
    free(results);
}

/* --- reading ------------------------------------------------------------ */

static void
drain_message(void *socket)
{
    int more = 0;
    size_t size = sizeof(more);
    zmq_msg_t msg;

    zmq_getsockopt(socket, ZMQ_RCVMORE, &more, &size);
    while (more) {
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, socket, 0) < 0) {
            zmq_msg_close(&msg);
            return;
        }
        more = zmq_msg_more(&msg);
        zmq_msg_close(&msg);
    }
}

/* The next part of the current message; CAIRN_EPROTO when there is none. */
static int
recv_part(void *socket, zmq_msg_t *msg, bool *more)
{
    int more_flag = 0;
    size_t size = sizeof(more_flag);

    zmq_getsockopt(socket, ZMQ_RCVMORE, &more_flag, &size);
    if (!more_flag)
        return CAIRN_EPROTO;
    if (zmq_msg_recv(msg, socket, 0) < 0)
        return CAIRN_EIO;
    *more = zmq_msg_more(msg);
    return 0;
}

static struct node_request *
take_stream(struct cairn_node_server *server, const struct node_request *probe)
{
    struct node_request **at = &server->streams;

    for (; *at != NULL; at = &(*at)->stream_next) {
        struct node_request *request = *at;

        if (request->envelope->request_id == probe->envelope->request_id &&
            request->routing_id_len == probe->routing_id_len &&
            memcmp(request->routing_id, probe->routing_id,
                   probe->routing_id_len) == 0) {
            *at = request->stream_next;
            request->stream_next = NULL;
            server->stream_count--;
            return request;
        }
    }
    return NULL;
}

/* Frame 1 (or the dlist_frames frames) concatenated, NUL-terminated. */
static int
append_dlist(struct node_request *request, const void *data, size_t len)
{
    char *grown;

    if (len > MAX_DLIST_BYTES - request->dlist_len)
        return CAIRN_ETOOBIG;
    if ((grown = realloc(request->dlist, request->dlist_len + len + 1)) == NULL)
        return CAIRN_ENOMEM;
    memcpy(grown + request->dlist_len, data, len);
    request->dlist = grown;
    request->dlist_len += len;
    grown[request->dlist_len] = '\0';
    return 0;
}

/*
 * Reads the payload frames of one message into request: frame 1 of a head
 * message is kept, the rest are spooled. Errors are recorded in request
 * (answered when the request completes) unless the framing is broken.
 */
static int
read_payload(struct cairn_node_server *server, struct node_request *request,
             uint32_t frames, bool head)
{
    int more_flag = 0, rc = 0;
    size_t flag_size = sizeof(more_flag);
    uint32_t dlist_frames = request->envelope->dlist_frames;
    bool more;

    if (dlist_frames == 0)
        dlist_frames = 1;

    zmq_getsockopt(server->socket, ZMQ_RCVMORE, &more_flag, &flag_size);
    more = more_flag != 0;
    for (uint32_t i = 0; i < frames; i++) {
        zmq_msg_t msg;
        size_t len;

        zmq_msg_init(&msg);
        if ((rc = recv_part(server->socket, &msg, &more)) < 0) {
            zmq_msg_close(&msg);
            return rc;
        }
        len = zmq_msg_size(&msg);
        if (len > server->settings.max_frame) {
            request->failure = CAIRN_ETOOBIG;
            request->failure_text = "payload frame over max_frame";
        } else if (head && i < dlist_frames) {
            if (request->failure == 0 &&
                (rc = append_dlist(request, zmq_msg_data(&msg), len)) < 0) {
                request->failure = rc;
                request->failure_text = "dlist over the node's limit";
            }
        } else if (request->failure == 0 &&
                   (rc = node_spool_write(server, request, zmq_msg_data(&msg),
                                          len)) < 0) {
            request->failure = rc;
            request->failure_text = "cannot spool the message body";
        }
        zmq_msg_close(&msg);
    }
    if (more)
        return CAIRN_EPROTO; /* more frames than payload_frames says */
    return 0;
}

static bool
kind_is_user_request(Cairn__Kind kind)
{
    return kind == CAIRN__KIND__APPLY || kind == CAIRN__KIND__STATE_REQUEST ||
           node_restore_request(kind);
}

/* Queues a user request; it runs when complete and first in line. */
static void
enqueue(struct cairn_node_server *server, struct node_request *request)
{
    const char *userid = request->envelope->user;
    struct node_user *user = NULL;
    int rc;

    if ((rc = cairn_node_check_userid(userid ? userid : "")) < 0) {
        node_reply_error(server, request, rc, 1 /* INVALID_USER */,
                         "invalid userid");
        goto fail;
    }
    if ((rc = node_user_get(server, userid, &user)) < 0) {
        node_reply_error(server, request, rc, 0, NULL);
        goto fail;
    }
    if (user->queued >= server->settings.max_queued) {
        node_reply_error(server, request, CAIRN_EAGAIN, 0,
                         "too many requests queued for this user");
        goto fail;
    }
    request->user = user;
    if (user->queue_tail)
        user->queue_tail->next = request;
    else
        user->queue = request;
    user->queue_tail = request;
    user->queued++;
    if (!request->complete) {
        request->stream_next = server->streams;
        server->streams = request;
        server->stream_count++;
    }
    node_user_progress(server, user);
    return;
fail:
    node_request_free(request);
}

static void
handle_continuation(struct cairn_node_server *server,
                    struct node_request *probe)
{
    struct node_request *request = take_stream(server, probe);
    int rc;

    if (request == NULL) {
        drain_message(server->socket);
        node_reply_error(server, probe, CAIRN_EPROTO, 9 /* PROTOCOL_ERROR */,
                         "continuation of an unknown request");
        return;
    }
    request->last_activity_ms = cairn_loop_now_ms();
    rc = read_payload(server, request, probe->envelope->payload_frames, false);
    if (rc < 0) {
        drain_message(server->socket);
        request->failure = rc;
        request->failure_text = "malformed continuation";
    }
    if (probe->envelope->more && rc == 0) {
        request->stream_next = server->streams;
        server->streams = request;
        server->stream_count++;
        return;
    }
    request->complete = true;
    node_user_progress(server, request->user);
}

static void
dispatch(struct cairn_node_server *server, struct node_request *request)
{
    Cairn__Envelope *envelope = request->envelope;
    bool user_request = kind_is_user_request(envelope->kind);
    char refusal[160];
    int rc;

    if (!node_role_allows(request->role, envelope, refusal, sizeof(refusal))) {
        drain_message(server->socket);
        server->refused++;
        node_event(server, CAIRN_LOG_WARN, request, "%s", refusal);
        node_reply_error(server, request, CAIRN_EPERM, 0, refusal);
        node_request_free(request);
        return;
    }
    if (envelope->continuation) {
        handle_continuation(server, request);
        node_request_free(request);
        return;
    }
    server->requests++;
    if (envelope->ring_epoch > server->ring_epoch)
        server->ring_epoch = envelope->ring_epoch;
    rc = read_payload(server, request, envelope->payload_frames, true);
    if (rc < 0) {
        drain_message(server->socket);
        node_reply_error(server, request, rc, 9, "malformed message");
        node_request_free(request);
        return;
    }
    request->complete = !envelope->more;
    if (!request->complete &&
        (envelope->kind != CAIRN__KIND__APPLY ||
         server->stream_count >= server->settings.max_streams)) {
        /* A split we cannot follow: refuse now; its continuations will be
         * refused as unknown. */
        node_reply_error(server, request, CAIRN_EAGAIN, 0,
                         "cannot take a split request now");
        node_request_free(request);
        return;
    }
    if (user_request) {
        if (request->dlist == NULL && request->failure == 0) {
            node_reply_error(server, request, CAIRN_EPROTO, 9,
                             "request without its dlist frame");
            node_request_free(request);
            return;
        }
        enqueue(server, request);
        return;
    }
    node_admin(server, request);
    node_request_free(request);
}

/* Reads one message. CAIRN_EAGAIN when none is waiting. */
static int
read_message(struct cairn_node_server *server)
{
    struct node_request *request = NULL;
    zmq_msg_t msg;
    bool more = false;
    int rc = 0;

    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, server->socket, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        return errno == EAGAIN ? CAIRN_EAGAIN : CAIRN_EIO;
    }
    if ((request = calloc(1, sizeof(*request))) == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    request->spool_fd = -1;
    cairn_buf_init(&request->memory, NODE_MEMORY_BODIES_MAX);
    request->last_activity_ms = cairn_loop_now_ms();
    request->routing_id_len = zmq_msg_size(&msg);
    if (request->routing_id_len > ROUTING_ID_MAX) {
        rc = CAIRN_EPROTO;
        goto out;
    }
    memcpy(request->routing_id, zmq_msg_data(&msg), request->routing_id_len);
    zmq_msg_close(&msg);
    zmq_msg_init(&msg);
    if ((rc = recv_part(server->socket, &msg, &more)) < 0)
        goto out;
    /* The role the ZAP handler gave the sender (a received frame carries
     * it; the routing id, made here, does not). */
    request->role = cairn_curve_msg_role(&msg);
    request->envelope =
        cairn__envelope__unpack(NULL, zmq_msg_size(&msg), zmq_msg_data(&msg));
    if (request->envelope == NULL) {
        node_event(server, CAIRN_LOG_WARN, request, "malformed envelope");
        rc = CAIRN_EPROTO;
        goto out;
    }
    zmq_msg_close(&msg);
    dispatch(server, request);
    return 0;
out:
    zmq_msg_close(&msg);
    drain_message(server->socket);
    node_request_free(request);
    return rc == CAIRN_EAGAIN ? CAIRN_EPROTO : rc;
}

static void
on_socket(struct cairn_loop *loop, void *socket, unsigned events, void *arg)
{
    struct cairn_node_server *server = arg;
    uint64_t round_start = cairn_loop_now_ms();

    (void)loop;
    (void)socket;
    (void)events;
    while (server->reading) {
        int rc = read_message(server);

        if (rc == CAIRN_EAGAIN)
            break;
        if (rc == CAIRN_EIO) {
            node_event(server, CAIRN_LOG_ERROR, NULL, "receive failed: %s",
                       zmq_strerror(errno));
            break;
        }
        if (cairn_loop_now_ms() - round_start >=
            server->settings.group_commit_ms) {
            node_commit_round(server);
            round_start = cairn_loop_now_ms();
        }
    }
    node_commit_round(server);
}

/*
 * A split request whose peer stopped sending (died mid-body) would hold
 * its user's queue forever: fail it, and let the user's next requests run.
 */
static void
expire_streams(struct cairn_node_server *server)
{
    uint64_t now = cairn_loop_now_ms();
    struct node_request **at = &server->streams;
    bool expired = false;

    while (*at != NULL) {
        struct node_request *request = *at;

        if (now - request->last_activity_ms <
            server->settings.stream_timeout_ms) {
            at = &request->stream_next;
            continue;
        }
        *at = request->stream_next;
        request->stream_next = NULL;
        server->stream_count--;
        request->complete = true;
        request->failure = CAIRN_ETIMEOUT;
        request->failure_text = "message body never completed";
        node_event(server, CAIRN_LOG_WARN, request,
                   "split request stalled: dropped");
        node_user_progress(server, request->user);
        expired = true;
    }
    if (expired)
        node_commit_round(server);
}

static void
on_idle_timer(struct cairn_loop *loop, uint64_t timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    expire_streams(arg);
    node_users_trim(arg, false);
}

/* --- lifecycle ---------------------------------------------------------- */

static int
copy_settings(struct cairn_node_server_settings *to,
              const struct cairn_node_server_settings *from)
{
    *to = *from;
    to->name = strdup(from->name ? from->name : "node");
    to->endpoint = strdup(from->endpoint ? from->endpoint : "");
    to->data_dir = strdup(from->data_dir ? from->data_dir : "");
    to->peers = NULL; /* server_heal.c keeps its copy */
    to->peer_count = 0;
    if (!to->name || !to->endpoint || !to->data_dir)
        return CAIRN_ENOMEM;
    if (to->max_frame == 0)
        to->max_frame = DEFAULT_MAX_FRAME;
    if (to->max_open_stores == 0)
        to->max_open_stores = DEFAULT_OPEN_STORES;
    if (to->idle_close_ms == 0)
        to->idle_close_ms = DEFAULT_IDLE_CLOSE_MS;
    if (to->max_streams == 0)
        to->max_streams = DEFAULT_MAX_STREAMS;
    if (to->max_queued == 0)
        to->max_queued = DEFAULT_MAX_QUEUED;
    if (to->stream_timeout_ms == 0)
        to->stream_timeout_ms = DEFAULT_STREAM_TIMEOUT_MS;
    return 0;
}

static int
make_dir(const char *path)
{
    if (mkdir(path, cairn_created_dir_mode()) == 0 || errno == EEXIST)
        return 0;
    return CAIRN_EIO;
}

static int
open_socket(struct cairn_node_server *server, char *error, size_t error_size)
{
    int one = 1, hwm = REPLY_HWM, receive_hwm = RECEIVE_HWM, linger = 2000;
    int receive_buffer = 256 * 1024;
    int64_t max_message = (int64_t)server->settings.max_frame + 65536;
    char endpoint[512];
    size_t size = sizeof(endpoint);

    server->socket = zmq_socket(server->zmq_context, ZMQ_ROUTER);
    if (server->socket == NULL)
        return CAIRN_EIO;
    zmq_setsockopt(server->socket, ZMQ_ROUTER_MANDATORY, &one, sizeof(one));
    zmq_setsockopt(server->socket, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(server->socket, ZMQ_RCVHWM, &receive_hwm,
                   sizeof(receive_hwm));
    /* Small kernel buffers: bytes of big bodies queued there delay the
     * small requests behind them. */
    zmq_setsockopt(server->socket, ZMQ_RCVBUF, &receive_buffer,
                   sizeof(receive_buffer));
    zmq_setsockopt(server->socket, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(server->socket, ZMQ_MAXMSGSIZE, &max_message,
                   sizeof(max_message));
    if (cairn_curve_server(server->socket) < 0) {
        snprintf(error, error_size, "CURVE options: %s", zmq_strerror(errno));
        return CAIRN_EIO;
    }
    if (zmq_bind(server->socket, server->settings.endpoint) != 0) {
        snprintf(error, error_size, "cannot bind %s: %s",
                 server->settings.endpoint, zmq_strerror(errno));
        return CAIRN_EIO;
    }
    if (zmq_getsockopt(server->socket, ZMQ_LAST_ENDPOINT, endpoint, &size) !=
            0 ||
        (server->endpoint = strdup(endpoint)) == NULL)
        return CAIRN_ENOMEM;
    return cairn_zap_watch(server->zap, server->socket, server->endpoint);
}

int
cairn_node_server_new(struct cairn_loop *loop, void *zmq_context,
                      const struct cairn_node_server_settings *settings,
                      struct cairn_node_server **out, char *error,
                      size_t error_size)
{
    struct cairn_node_server *server = NULL;
    char scratch[8], *path = NULL;
    int rc;

    if (error == NULL) {
        error = scratch;
        error_size = sizeof(scratch);
    }
    error[0] = '\0';
    *out = NULL;
    if ((server = calloc(1, sizeof(*server))) == NULL)
        return CAIRN_ENOMEM;
    server->loop = loop;
    server->wake_fds[0] = server->wake_fds[1] = -1;
    if ((rc = copy_settings(&server->settings, settings)) < 0)
        goto out;
    server->zmq_context = zmq_context;
    if (zmq_context == NULL) {
        server->zmq_context = zmq_ctx_new();
        server->owns_context = true;
        if (server->zmq_context == NULL) {
            rc = CAIRN_EIO;
            goto out;
        }
    }
    if (asprintf(&server->spool_dir, "%s/spool", settings->data_dir) < 0 ||
        asprintf(&path, "%s/catalog.db", settings->data_dir) < 0) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    if ((rc = make_dir(settings->data_dir)) < 0 ||
        (rc = make_dir(server->spool_dir)) < 0) {
        snprintf(error, error_size, "cannot create %s: %s", server->spool_dir,
                 strerror(errno));
        goto out;
    }
    if ((rc = cairn_catalog_open(path, &server->catalog)) < 0) {
        snprintf(error, error_size, "cannot open the catalog %s: %s", path,
                 cairn_strerror(rc));
        goto out;
    }
    server->bucket_count = 1024;
    if ((server->buckets =
             calloc(server->bucket_count, sizeof(*server->buckets))) == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    /* The ZAP handler is bound before the CURVE socket (curve.h). */
    if ((rc = cairn_zap_new(loop, server->zmq_context, &server->zap)) < 0) {
        snprintf(error, error_size, "cannot start the ZAP handler");
        goto out;
    }
    if ((rc = open_socket(server, error, error_size)) < 0)
        goto out;
    if ((rc = cairn_loop_add_socket(loop, server->socket, CAIRN_LOOP_READ,
                                    on_socket, server)) < 0)
        goto out;
    server->reading = true;
    if ((rc = node_worker_init(server)) < 0)
        goto out;
    if ((rc = node_heal_init(server, settings)) < 0 ||
        (rc = node_scrub_schedule_init(server)) < 0 ||
        (rc = node_compact_schedule_init(server)) < 0)
        goto out;
    if ((rc = cairn_loop_add_timer(loop, IDLE_SWEEP_MS, IDLE_SWEEP_MS,
                                   on_idle_timer, server,
                                   &server->idle_timer)) < 0)
        goto out;
    server->started_ms = cairn_loop_now_ms();
    server->started_time = time(NULL);
    *out = server;
    server = NULL;
out:
    free(path);
    cairn_node_server_free(server);
    return rc;
}

int
cairn_node_server_shutdown(struct cairn_node_server *server)
{
    struct node_request *request, *next;

    if (server == NULL || server->shut_down)
        return 0;
    server->shut_down = true;
    if (server->reading) {
        cairn_loop_remove_socket(server->loop, server->socket);
        server->reading = false;
    }
    if (server->idle_timer) {
        cairn_loop_cancel_timer(server->loop, server->idle_timer);
        server->idle_timer = 0;
    }
    node_compact_schedule_release(server);
    node_scrub_schedule_release(server);
    node_worker_release(server); /* a running append finishes first */
    node_heal_release(server);
    node_pulls_release(server); /* pulls under way fail, unanswered */
    node_pull_sessions_trim(server, true);
    node_admin_release(server); /* VERIFY / COMPACT not answered */
    node_commit_round(server);
    /* Split requests that never completed were never acknowledged. */
    for (request = server->streams; request != NULL; request = next) {
        next = request->stream_next;
        request->stream_next = NULL;
    }
    server->streams = NULL;
    server->stream_count = 0;
    node_users_trim(server, true);
    return 0;
}

void
cairn_node_server_free(struct cairn_node_server *server)
{
    if (server == NULL)
        return;
    if (server->socket)
        cairn_node_server_shutdown(server);
    node_worker_release(server);
    node_heal_release(server);
    node_pulls_release(server);
    node_pull_sessions_trim(server, true);
    node_users_free(server);
    cairn_zap_free(server->zap);
    if (server->socket)
        zmq_close(server->socket);
    if (server->owns_context && server->zmq_context)
        zmq_ctx_term(server->zmq_context);
    cairn_catalog_free(server->catalog);
    free(server->buckets);
    free(server->round_users);
    free(server->endpoint);
    free(server->spool_dir);
    free((char *)server->settings.name);
    free((char *)server->settings.endpoint);
    free((char *)server->settings.data_dir);
    free(server);
}

const char *
cairn_node_server_endpoint(const struct cairn_node_server *server)
{
    return server->endpoint;
}

int
cairn_node_server_reload(struct cairn_node_server *server,
                         const struct cairn_node_server_settings *settings)
{
    struct cairn_node_server_settings next;

    if (strcmp(settings->data_dir ? settings->data_dir : "",
               server->settings.data_dir) != 0)
        return CAIRN_EINVAL;
    next = *settings;
    next.name = server->settings.name;
    next.endpoint = server->settings.endpoint;
    next.data_dir = server->settings.data_dir;
    next.peers = NULL; /* the peers are taken at the start */
    next.peer_count = 0;
    if (next.max_frame == 0)
        next.max_frame = DEFAULT_MAX_FRAME;
    if (next.max_open_stores == 0)
        next.max_open_stores = DEFAULT_OPEN_STORES;
    if (next.idle_close_ms == 0)
        next.idle_close_ms = DEFAULT_IDLE_CLOSE_MS;
    if (next.max_streams == 0)
        next.max_streams = DEFAULT_MAX_STREAMS;
    if (next.max_queued == 0)
        next.max_queued = DEFAULT_MAX_QUEUED;
    if (next.stream_timeout_ms == 0)
        next.stream_timeout_ms = DEFAULT_STREAM_TIMEOUT_MS;
    server->settings = next;
    return 0;
}

void
cairn_node_server_set_event_handler(struct cairn_node_server *server,
                                    cairn_node_server_event_fn fn, void *arg)
{
    server->event_fn = fn;
    server->event_arg = arg;
}
