/*
 * client.c - the DEALER side of the node link (node_client.h): requests
 * queued per node, started while the node and user windows allow, bodies
 * streamed one frame per continuation message while the socket takes
 * them, replies matched by request id, deadlines checked by a timer.
 */
#include "common.h"
#include "curve.h"
#include "node_client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_NODE_WINDOW 16
#define DEFAULT_USER_WINDOW 4
#define DEFAULT_MAX_FRAME (1024 * 1024)
#define DEFAULT_MAX_QUEUE 4096
#define DEADLINE_SWEEP_MS 20
/* Few messages queued in ZeroMQ per node: body frames stay on disk. */
#define SEND_HWM 8
#define STREAM_FRAME_MAX (256 * 1024)
#define SOCKET_BUFFER (256 * 1024)
#define MAX_REPLY_FRAMES 4000000u
/* The node's limit on one command's dlist (node/server.c). */
#define MAX_DLIST_BYTES (256u * 1024 * 1024)
/* Bodies up to this total travel in the head message. */
#define INLINE_BODIES_MAX (64 * 1024)

struct pending {
    struct pending *next;
    uint64_t id;
    char *user;
    Cairn__Envelope envelope;        /* strings owned by this struct */
    struct cairn_node_frame *frames; /* owned copies */
    size_t frame_count;
    struct cairn_node_body *bodies; /* array owned, fds/data borrowed */
    size_t body_count;
    size_t body_index;  /* body being streamed */
    uint64_t body_done; /* bytes of it sent */
    uint64_t body_left; /* bytes of all bodies still to send */
    bool started;       /* head message sent */
    int failure;        /* to report at the next sweep */
    uint64_t deadline_ms;
    cairn_node_reply_fn fn;
    void *arg;
};

struct node_link {
    char *name;
    char *endpoint;
    void *socket;
    struct pending *queue, *queue_tail; /* not started, in order */
    size_t queued;
    struct pending *active; /* started, waiting for a reply */
    size_t active_count;
    bool want_write;
};

struct cairn_node_client {
    struct cairn_loop *loop;
    void *zmq_context;
    bool owns_context;
    struct cairn_node_client_settings settings;
    struct node_link *links;
    size_t link_count, link_cap;
    uint64_t next_id;
    uint64_t sweep_timer;
    unsigned char *frame_buffer; /* one body frame read from disk */
};

/* Unset envelope strings point at protobuf-c's static empty string. */
static void
free_string(char *text)
{
    if (text != protobuf_c_empty_string)
        free(text);
}

static void
pending_free(struct pending *request)
{
    if (request == NULL)
        return;
    for (size_t i = 0; i < request->frame_count; i++)
        free((void *)request->frames[i].data);
    free(request->frames);
    free(request->bodies);
    free_string(request->envelope.user);
    free_string(request->envelope.destination);
    free_string(request->envelope.verb);
    free_string(request->envelope.key);
    free_string(request->envelope.page_after);
    free(request->user);
    free(request);
}

/* zmq_msg_send consumes the message only on success; this always does. */
static int
send_frame(void *socket, const void *data, size_t len, int flags)
{
    zmq_msg_t msg;

    if (zmq_msg_init_size(&msg, len) != 0)
        return CAIRN_ENOMEM;
    if (len > 0)
        memcpy(zmq_msg_data(&msg), data, len);
    if (zmq_msg_send(&msg, socket, flags) < 0) {
        int error = errno;

        zmq_msg_close(&msg);
        return error == EAGAIN ? CAIRN_EAGAIN : CAIRN_EIO;
    }
    return 0;
}

static int
send_envelope(void *socket, const Cairn__Envelope *envelope, bool more_frames)
{
    unsigned char stack[512], *packed = stack;
    size_t size = cairn__envelope__get_packed_size(envelope);
    int rc;

    if (size > sizeof(stack) && (packed = malloc(size)) == NULL)
        return CAIRN_ENOMEM;
    cairn__envelope__pack(envelope, packed);
    rc = send_frame(socket, packed, size,
                    ZMQ_DONTWAIT | (more_frames ? ZMQ_SNDMORE : 0));
    if (packed != stack)
        free(packed);
    return rc;
}

/* The head message: envelope and the request's own frames. */
static int
send_head(struct node_link *link, struct pending *request)
{
    int rc;

    request->envelope.payload_frames = (uint32_t)request->frame_count;
    request->envelope.more = request->body_left > 0;
    if ((rc = send_envelope(link->socket, &request->envelope,
                            request->frame_count > 0)) < 0)
        return rc;
    /* After the first part ZeroMQ takes the rest of the message. */
    for (size_t i = 0; i < request->frame_count; i++)
        if ((rc = send_frame(
                 link->socket, request->frames[i].data, request->frames[i].len,
                 i + 1 < request->frame_count ? ZMQ_SNDMORE : 0)) < 0)
            return rc == CAIRN_EAGAIN ? CAIRN_EIO : rc;
    request->started = true;
    return 0;
}

/*
 * Body frames are kept small: every byte queued ahead of a small request
 * (in ZeroMQ, in the kernel, at the node) delays it, so the bytes of big
 * bodies in the pipe are bounded (SEND_HWM frames + socket buffers).
 */
static size_t
stream_frame(const struct cairn_node_client *client)
{
    return client->settings.max_frame < STREAM_FRAME_MAX
               ? client->settings.max_frame
               : STREAM_FRAME_MAX;
}

/* Reads the next body frame of request into the client's buffer. */
static int
read_body_frame(struct cairn_node_client *client, struct pending *request,
                size_t *len)
{
    const struct cairn_node_body *body;
    uint64_t left;
    size_t want;

    while (request->bodies[request->body_index].size == request->body_done) {
        request->body_index++;
        request->body_done = 0;
    }
    body = &request->bodies[request->body_index];
    left = body->size - request->body_done;
    want = left < stream_frame(client) ? (size_t)left : stream_frame(client);
    if (body->fd < 0) {
        memcpy(client->frame_buffer,
               (const unsigned char *)body->data + request->body_done, want);
    } else {
        size_t got = 0;

        while (got < want) {
            ssize_t n = pread(body->fd, client->frame_buffer + got, want - got,
                              (off_t)(body->offset + request->body_done + got));

            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return CAIRN_EIO;
            got += (size_t)n;
        }
    }
    *len = want;
    return 0;
}

/* One continuation message with the next body frame. */
static int
send_body_frame(struct cairn_node_client *client, struct node_link *link,
                struct pending *request)
{
    Cairn__Envelope envelope = CAIRN__ENVELOPE__INIT;
    size_t len = 0;
    int rc;

    if ((rc = read_body_frame(client, request, &len)) < 0)
        return rc;
    envelope.request_id = request->id;
    envelope.continuation = true;
    envelope.payload_frames = 1;
    envelope.more = request->body_left > len;
    if ((rc = send_envelope(link->socket, &envelope, true)) < 0)
        return rc;
    if ((rc = send_frame(link->socket, client->frame_buffer, len, 0)) < 0)
        return rc == CAIRN_EAGAIN ? CAIRN_EIO : rc;
    request->body_done += len;
    request->body_left -= len;
    return 0;
}

static size_t
user_active(const struct node_link *link, const char *user)
{
    size_t count = 0;

    if (user[0] == '\0')
        return 0;
    for (const struct pending *p = link->active; p != NULL; p = p->next)
        if (strcmp(p->user, user) == 0)
            count++;
    return count;
}

/* Starts queued requests the windows allow; false when the socket is full. */
static bool
start_queued(struct cairn_node_client *client, struct node_link *link)
{
    struct pending **at = &link->queue, *previous = NULL;

    while (*at != NULL && link->active_count < client->settings.node_window) {
        struct pending *request = *at;
        int rc;

        if (user_active(link, request->user) >= client->settings.user_window) {
            /* Later requests of this user must wait too: scan skips them
             * because they hit the same limit. */
            previous = request;
            at = &request->next;
            continue;
        }
        rc = send_head(link, request);
        if (rc == CAIRN_EAGAIN)
            return false;
        *at = request->next;
        if (link->queue_tail == request)
            link->queue_tail = previous;
        link->queued--;
        request->next = link->active;
        link->active = request;
        link->active_count++;
        if (rc < 0)
            request->failure = rc;
    }
    return true;
}

/* Sends one body frame of each streaming request in turn. */
static bool
stream_bodies(struct cairn_node_client *client, struct node_link *link)
{
    bool progress = true;

    while (progress) {
        progress = false;
        for (struct pending *p = link->active; p != NULL; p = p->next) {
            int rc;

            if (p->body_left == 0 || p->failure < 0)
                continue;
            rc = send_body_frame(client, link, p);
            if (rc == CAIRN_EAGAIN)
                return false;
            if (rc < 0)
                p->failure = rc;
            progress = true;
        }
    }
    return true;
}

static void
pump(struct cairn_node_client *client, struct node_link *link)
{
    bool room = start_queued(client, link) && stream_bodies(client, link);
    bool want_write = !room;

    if (want_write != link->want_write && client->loop) {
        cairn_loop_set_socket_events(client->loop, link->socket,
                                     CAIRN_LOOP_READ |
                                         (want_write ? CAIRN_LOOP_WRITE : 0));
        link->want_write = want_write;
    }
}

static struct pending *
take_active(struct node_link *link, uint64_t id)
{
    for (struct pending **at = &link->active; *at; at = &(*at)->next)
        if ((*at)->id == id) {
            struct pending *request = *at;

            *at = request->next;
            link->active_count--;
            return request;
        }
    return NULL;
}

static void
deliver(struct pending *request, int status, const Cairn__Envelope *envelope,
        const struct cairn_node_frame *frames, size_t frame_count)
{
    struct cairn_node_reply reply = {status, request->id, envelope, frames,
                                     frame_count};

    request->fn(request->arg, &reply);
}

/* The kind that answers a request of kind. */
static bool
expected_reply(Cairn__Kind request, Cairn__Kind reply)
{
    switch (request) {
    case CAIRN__KIND__APPLY:
        return reply == CAIRN__KIND__ACK;
    case CAIRN__KIND__STATE_REQUEST:
        return reply == CAIRN__KIND__STATE_REPLY;
    case CAIRN__KIND__STATUS_REQUEST:
        return reply == CAIRN__KIND__STATUS_REPLY;
    case CAIRN__KIND__STATS_REQUEST:
        return reply == CAIRN__KIND__STATS_REPLY;
    case CAIRN__KIND__VERIFY_REQUEST:
        return reply == CAIRN__KIND__VERIFY_REPLY;
    case CAIRN__KIND__COMPACT_REQUEST:
        return reply == CAIRN__KIND__COMPACT_REPLY;
    case CAIRN__KIND__PING:
        return reply == CAIRN__KIND__PONG;
    default:
        return true;
    }
}

/* Reads the payload frames of a reply (the envelope already read). */
static int
read_reply_frames(void *socket, zmq_msg_t **msgs, size_t *count)
{
    size_t cap = 0;
    int more = 1;
    size_t size = sizeof(more);

    *msgs = NULL;
    *count = 0;
    zmq_getsockopt(socket, ZMQ_RCVMORE, &more, &size);
    while (more) {
        if (*count == cap) {
            size_t next = cap ? cap * 2 : 8;
            zmq_msg_t *grown;

            if (next > MAX_REPLY_FRAMES ||
                (grown = realloc(*msgs, next * sizeof(*grown))) == NULL)
                return CAIRN_ETOOBIG;
            *msgs = grown;
            cap = next;
        }
        zmq_msg_init(&(*msgs)[*count]);
        if (zmq_msg_recv(&(*msgs)[*count], socket, 0) < 0) {
            zmq_msg_close(&(*msgs)[*count]);
            return CAIRN_EIO;
        }
        more = zmq_msg_more(&(*msgs)[*count]);
        (*count)++;
    }
    return 0;
}

static void
handle_reply(struct node_link *link, const zmq_msg_t *head, zmq_msg_t *msgs,
             size_t count, int read_rc)
{
    Cairn__Envelope *envelope = cairn__envelope__unpack(
        NULL, zmq_msg_size((zmq_msg_t *)head), zmq_msg_data((zmq_msg_t *)head));
    struct cairn_node_frame *frames = NULL;
    struct pending *request = NULL;
    int status = read_rc;

    if (envelope == NULL ||
        (request = take_active(link, envelope->request_id)) == NULL)
        goto out; /* late (timed out) or foreign: dropped */
    if (status == 0 && count > 0 &&
        (frames = calloc(count, sizeof(*frames))) == NULL)
        status = CAIRN_ENOMEM;
    for (size_t i = 0; frames && i < count; i++) {
        frames[i].data = zmq_msg_data(&msgs[i]);
        frames[i].len = zmq_msg_size(&msgs[i]);
    }
    if (status == 0 && envelope->kind == CAIRN__KIND__ERROR)
        status = envelope->error_code < 0 ? envelope->error_code : CAIRN_EIO;
    else if (status == 0 &&
             (!expected_reply(request->envelope.kind, envelope->kind) ||
              envelope->payload_frames != count))
        status = CAIRN_EPROTO;
    deliver(request, status, envelope, frames, frames ? count : 0);
out:
    free(frames);
    pending_free(request);
    if (envelope)
        cairn__envelope__free_unpacked(envelope, NULL);
}

static void
read_replies(struct node_link *link)
{
    for (;;) {
        zmq_msg_t head, *msgs = NULL;
        size_t count = 0;
        int rc;

        zmq_msg_init(&head);
        if (zmq_msg_recv(&head, link->socket, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&head);
            return;
        }
        rc = read_reply_frames(link->socket, &msgs, &count);
        handle_reply(link, &head, msgs, count, rc);
        for (size_t i = 0; i < count; i++)
            zmq_msg_close(&msgs[i]);
        free(msgs);
        zmq_msg_close(&head);
    }
}

static void
on_socket(struct cairn_loop *loop, void *socket, unsigned events, void *arg)
{
    struct cairn_node_client *client = arg;

    (void)loop;
    for (size_t i = 0; i < client->link_count; i++) {
        struct node_link *link = &client->links[i];

        if (link->socket != socket)
            continue;
        if (events & (CAIRN_LOOP_READ | CAIRN_LOOP_ERROR))
            read_replies(link);
        pump(client, link);
        return;
    }
    (void)events;
}

/* Fails what is overdue: not started -> UNAVAILABLE, started -> TIMEOUT. */
static void
sweep_link(struct node_link *link, uint64_t now)
{
    struct pending **at = &link->active, *previous = NULL;

    while (*at != NULL) {
        struct pending *request = *at;

        if (request->failure < 0 || now >= request->deadline_ms) {
            *at = request->next;
            link->active_count--;
            deliver(request,
                    request->failure < 0 ? request->failure : CAIRN_ETIMEOUT,
                    NULL, NULL, 0);
            pending_free(request);
            continue;
        }
        at = &request->next;
    }
    at = &link->queue;
    while (*at != NULL) {
        struct pending *request = *at;

        if (now >= request->deadline_ms) {
            *at = request->next;
            if (link->queue_tail == request)
                link->queue_tail = previous;
            link->queued--;
            deliver(request, CAIRN_EUNAVAILABLE, NULL, NULL, 0);
            pending_free(request);
            continue;
        }
        previous = request;
        at = &request->next;
    }
}

static void
on_sweep(struct cairn_loop *loop, uint64_t timer_id, void *arg)
{
    struct cairn_node_client *client = arg;
    uint64_t now = cairn_loop_now_ms();

    (void)loop;
    (void)timer_id;
    for (size_t i = 0; i < client->link_count; i++) {
        sweep_link(&client->links[i], now);
        pump(client, &client->links[i]);
    }
}

int
cairn_node_client_new(struct cairn_loop *loop, void *zmq_context,
                      const struct cairn_node_client_settings *settings,
                      struct cairn_node_client **out)
{
    struct cairn_node_client *client = calloc(1, sizeof(*client));
    int rc = 0;

    *out = NULL;
    if (client == NULL)
        return CAIRN_ENOMEM;
    client->loop = loop;
    if (settings)
        client->settings = *settings;
    if (!client->settings.timeout_ms)
        client->settings.timeout_ms = DEFAULT_TIMEOUT_MS;
    if (!client->settings.node_window)
        client->settings.node_window = DEFAULT_NODE_WINDOW;
    if (!client->settings.user_window)
        client->settings.user_window = DEFAULT_USER_WINDOW;
    if (!client->settings.max_frame)
        client->settings.max_frame = DEFAULT_MAX_FRAME;
    if (!client->settings.max_queue)
        client->settings.max_queue = DEFAULT_MAX_QUEUE;
    client->next_id = 1;
    client->zmq_context = zmq_context;
    if (zmq_context == NULL) {
        client->owns_context = true;
        if ((client->zmq_context = zmq_ctx_new()) == NULL)
            rc = CAIRN_EIO;
    }
    if (rc == 0 &&
        (client->frame_buffer = malloc(client->settings.max_frame)) == NULL)
        rc = CAIRN_ENOMEM;
    if (rc == 0)
        rc = cairn_loop_add_timer(loop, DEADLINE_SWEEP_MS, DEADLINE_SWEEP_MS,
                                  on_sweep, client, &client->sweep_timer);
    if (rc < 0) {
        cairn_node_client_free(client);
        return rc;
    }
    *out = client;
    return 0;
}

static void
link_release(struct cairn_node_client *client, struct node_link *link)
{
    struct pending *request, *next;

    for (request = link->queue; request; request = next) {
        next = request->next;
        pending_free(request);
    }
    for (request = link->active; request; request = next) {
        next = request->next;
        pending_free(request);
    }
    if (link->socket) {
        if (client->loop)
            cairn_loop_remove_socket(client->loop, link->socket);
        zmq_close(link->socket);
    }
    free(link->name);
    free(link->endpoint);
}

void
cairn_node_client_free(struct cairn_node_client *client)
{
    if (client == NULL)
        return;
    for (size_t i = 0; i < client->link_count; i++)
        link_release(client, &client->links[i]);
    free(client->links);
    if (client->sweep_timer)
        cairn_loop_cancel_timer(client->loop, client->sweep_timer);
    if (client->owns_context && client->zmq_context)
        zmq_ctx_term(client->zmq_context);
    free(client->frame_buffer);
    free(client);
}

static int
open_link(struct cairn_node_client *client, struct node_link *link)
{
    int one = 1, zero = 0, hwm = SEND_HWM, reconnect = 100;
    int buffer = SOCKET_BUFFER;

    if ((link->socket = zmq_socket(client->zmq_context, ZMQ_DEALER)) == NULL)
        return CAIRN_EIO;
    zmq_setsockopt(link->socket, ZMQ_IMMEDIATE, &one, sizeof(one));
    zmq_setsockopt(link->socket, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(link->socket, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(link->socket, ZMQ_SNDBUF, &buffer, sizeof(buffer));
    zmq_setsockopt(link->socket, ZMQ_RECONNECT_IVL, &reconnect,
                   sizeof(reconnect));
    /* CURVE (curve.h): this process's key, the node's public key. */
    if (cairn_curve_client(link->socket, link->endpoint, NULL, 0) < 0)
        return CAIRN_EPERM;
    if (zmq_connect(link->socket, link->endpoint) != 0)
        return CAIRN_EINVAL;
    return cairn_loop_add_socket(client->loop, link->socket, CAIRN_LOOP_READ,
                                 on_socket, client);
}

int
cairn_node_client_add_node(struct cairn_node_client *client, const char *name,
                           const char *endpoint, size_t *node)
{
    struct node_link *link;
    size_t unused;
    int rc;

    if (cairn_node_client_find_node(client, name, &unused) == 0)
        return CAIRN_EEXIST;
    if (client->link_count == client->link_cap) {
        size_t cap = client->link_cap ? client->link_cap * 2 : 8;
        struct node_link *links = realloc(client->links, cap * sizeof(*links));

        if (links == NULL)
            return CAIRN_ENOMEM;
        client->links = links;
        client->link_cap = cap;
    }
    link = &client->links[client->link_count];
    memset(link, 0, sizeof(*link));
    if ((link->name = strdup(name)) == NULL ||
        (link->endpoint = strdup(endpoint)) == NULL) {
        rc = CAIRN_ENOMEM;
        goto fail;
    }
    if ((rc = open_link(client, link)) < 0)
        goto fail;
    if (node)
        *node = client->link_count;
    client->link_count++;
    return 0;
fail:
    link_release(client, link);
    return rc;
}

int
cairn_node_client_find_node(const struct cairn_node_client *client,
                            const char *name, size_t *node)
{
    for (size_t i = 0; i < client->link_count; i++)
        if (strcmp(client->links[i].name, name) == 0) {
            *node = i;
            return 0;
        }
    return CAIRN_ENOENT;
}

static char *
copy_or_null(const char *text)
{
    return text ? strdup(text) : NULL;
}

static int
add_frame_copy(struct pending *p, const void *data, size_t len)
{
    void *copy = malloc(len + 1);

    if (copy == NULL)
        return CAIRN_ENOMEM;
    if (len)
        memcpy(copy, data, len);
    p->frames[p->frame_count].data = copy;
    p->frames[p->frame_count].len = len;
    p->frame_count++;
    return 0;
}

/*
 * Copies the frames; the dlist of an APPLY or STATE_REQUEST (frame 1) may
 * be larger than max_frame and is then cut into dlist_frames frames.
 */
static int
copy_frames(const struct cairn_node_client *client,
            const struct cairn_node_request *in, struct pending *p)
{
    size_t max = client->settings.max_frame, dlist_frames = 1, total;
    bool cuttable = in->kind == CAIRN__KIND__APPLY ||
                    in->kind == CAIRN__KIND__STATE_REQUEST;
    int rc;

    if (in->frame_count + in->body_count == 0)
        return 0;
    if (in->frame_count == 0)
        return (p->frames = calloc(in->body_count, sizeof(*p->frames)))
                   ? 0
                   : CAIRN_ENOMEM;
    if (cuttable && in->frames[0].len > max) {
        if (in->frames[0].len > MAX_DLIST_BYTES)
            return CAIRN_ETOOBIG;
        dlist_frames = (in->frames[0].len + max - 1) / max;
    }
    /* room for bodies that travel inline (inline_bodies) */
    total = in->frame_count - 1 + dlist_frames + in->body_count;
    if ((p->frames = calloc(total, sizeof(*p->frames))) == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < in->frame_count; i++) {
        const char *data = in->frames[i].data;
        size_t len = in->frames[i].len;

        if (len > max && !(i == 0 && cuttable))
            return CAIRN_ETOOBIG;
        do {
            size_t piece = len < max ? len : max;

            if ((rc = add_frame_copy(p, data, piece)) < 0)
                return rc;
            data += piece;
            len -= piece;
        } while (len > 0);
    }
    if (dlist_frames > 1)
        p->envelope.dlist_frames = (uint32_t)dlist_frames;
    return 0;
}

/*
 * Small bodies go in the head message itself, read now: one message per
 * request instead of two, and the node keeps them in memory instead of a
 * spool file.
 */
static int
inline_bodies(const struct cairn_node_client *client, struct pending *p)
{
    size_t limit = client->settings.max_frame < INLINE_BODIES_MAX
                       ? client->settings.max_frame
                       : INLINE_BODIES_MAX;

    if (p->body_left == 0 || p->body_left > limit)
        return 0;
    for (size_t i = 0; i < p->body_count; i++) {
        const struct cairn_node_body *body = &p->bodies[i];
        char *copy;
        size_t got = 0;

        if (body->size == 0)
            continue;
        if ((copy = malloc(body->size)) == NULL)
            return CAIRN_ENOMEM;
        if (body->fd < 0)
            memcpy(copy, body->data, body->size);
        while (body->fd >= 0 && got < body->size) {
            ssize_t n = pread(body->fd, copy + got, body->size - got,
                              (off_t)(body->offset + got));

            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                free(copy);
                return CAIRN_EIO;
            }
            got += (size_t)n;
        }
        p->frames[p->frame_count].data = copy;
        p->frames[p->frame_count].len = body->size;
        p->frame_count++;
    }
    p->body_left = 0;
    p->body_count = 0;
    return 0;
}

/* Copies what the request needs after the call returns. */
static int
pending_from_request(const struct cairn_node_client *client,
                     const struct cairn_node_request *in, struct pending *p)
{
    int rc;

    cairn__envelope__init(&p->envelope);
    p->envelope.kind = in->kind;
    p->envelope.sequence = in->sequence;
    p->envelope.stream_start = in->stream_start;
    p->envelope.update_time = in->update_time;
    p->envelope.ring_epoch = in->ring_epoch;
    p->envelope.page_limit = in->page_limit;
    if ((in->page_after &&
         !(p->envelope.page_after = copy_or_null(in->page_after))) ||
        (in->user && !(p->envelope.user = strdup(in->user))) ||
        (in->destination &&
         !(p->envelope.destination = strdup(in->destination))) ||
        (in->verb && !(p->envelope.verb = copy_or_null(in->verb))) ||
        (in->key && !(p->envelope.key = copy_or_null(in->key))) ||
        !(p->user = strdup(in->user ? in->user : "")))
        return CAIRN_ENOMEM;
    if ((rc = copy_frames(client, in, p)) < 0)
        return rc;
    if (in->body_count &&
        !(p->bodies = calloc(in->body_count, sizeof(*p->bodies))))
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < in->body_count; i++) {
        p->bodies[i] = in->bodies[i];
        p->body_left += in->bodies[i].size;
    }
    p->body_count = in->body_count;
    return inline_bodies(client, p);
}

int
cairn_node_client_send(struct cairn_node_client *client, size_t node,
                       const struct cairn_node_request *request,
                       cairn_node_reply_fn fn, void *arg, uint64_t *request_id)
{
    struct node_link *link;
    struct pending *p = NULL;
    int rc;

    if (node >= client->link_count || request == NULL || fn == NULL)
        return CAIRN_EINVAL;
    link = &client->links[node];
    if (link->queued >= client->settings.max_queue)
        return CAIRN_EAGAIN;
    if ((p = calloc(1, sizeof(*p))) == NULL)
        return CAIRN_ENOMEM;
    if ((rc = pending_from_request(client, request, p)) < 0) {
        pending_free(p);
        return rc;
    }
    p->id = client->next_id++;
    p->envelope.request_id = p->id;
    p->fn = fn;
    p->arg = arg;
    p->deadline_ms = cairn_loop_now_ms() + client->settings.timeout_ms;
    if (link->queue_tail)
        link->queue_tail->next = p;
    else
        link->queue = p;
    link->queue_tail = p;
    link->queued++;
    if (request_id)
        *request_id = p->id;
    pump(client, link);
    return 0;
}

int
cairn_node_client_cancel(struct cairn_node_client *client, size_t node,
                         uint64_t request_id)
{
    struct node_link *link;
    struct pending **at, *previous = NULL;

    if (node >= client->link_count)
        return CAIRN_ENOENT;
    link = &client->links[node];
    for (at = &link->queue; *at != NULL; previous = *at, at = &(*at)->next) {
        struct pending *request = *at;

        if (request->id != request_id)
            continue;
        *at = request->next;
        if (link->queue_tail == request)
            link->queue_tail = previous;
        link->queued--;
        pending_free(request);
        return 0;
    }
    return CAIRN_ENOENT;
}

size_t
cairn_node_client_in_flight(const struct cairn_node_client *client, size_t node)
{
    return node < client->link_count ? client->links[node].active_count : 0;
}

size_t
cairn_node_client_queued(const struct cairn_node_client *client, size_t node)
{
    return node < client->link_count ? client->links[node].queued : 0;
}

/* --- blocking ----------------------------------------------------------------
 */

struct call_state {
    bool done;
    int status;
    struct cairn_node_result *result;
};

static void
on_call_reply(void *arg, const struct cairn_node_reply *reply)
{
    struct call_state *state = arg;
    struct cairn_node_result *result = state->result;

    state->done = true;
    state->status = reply->status;
    if (reply->envelope == NULL)
        return;
    {
        size_t size = cairn__envelope__get_packed_size(reply->envelope);
        unsigned char *packed = malloc(size + 1);

        if (packed == NULL) {
            state->status = CAIRN_ENOMEM;
            return;
        }
        cairn__envelope__pack(reply->envelope, packed);
        result->envelope = cairn__envelope__unpack(NULL, size, packed);
        free(packed);
    }
    if (reply->frame_count &&
        !(result->frames = calloc(reply->frame_count, sizeof(*result->frames))))
        state->status = CAIRN_ENOMEM;
    for (size_t i = 0; result->frames && i < reply->frame_count; i++) {
        void *copy = malloc(reply->frames[i].len + 1);

        if (copy == NULL) {
            state->status = CAIRN_ENOMEM;
            break;
        }
        memcpy(copy, reply->frames[i].data, reply->frames[i].len);
        ((char *)copy)[reply->frames[i].len] = '\0';
        result->frames[i].data = copy;
        result->frames[i].len = reply->frames[i].len;
        result->frame_count++;
    }
}

int
cairn_node_client_call(const char *endpoint,
                       const struct cairn_node_request *request,
                       uint64_t timeout_ms, struct cairn_node_result *result)
{
    struct cairn_node_client_settings settings = {0};
    struct cairn_node_client *client = NULL;
    struct cairn_loop *loop = NULL;
    struct call_state state = {false, 0, result};
    uint64_t deadline;
    int rc;

    memset(result, 0, sizeof(*result));
    settings.timeout_ms = timeout_ms ? timeout_ms : DEFAULT_TIMEOUT_MS;
    deadline = cairn_loop_now_ms() + settings.timeout_ms + 1000;
    if ((rc = cairn_loop_new(&loop)) < 0 ||
        (rc = cairn_node_client_new(loop, NULL, &settings, &client)) < 0 ||
        (rc = cairn_node_client_add_node(client, "node", endpoint, NULL)) < 0 ||
        (rc = cairn_node_client_send(client, 0, request, on_call_reply, &state,
                                     NULL)) < 0)
        goto out;
    while (!state.done && cairn_loop_now_ms() < deadline)
        if ((rc = cairn_loop_run_once(loop, DEADLINE_SWEEP_MS)) < 0)
            goto out;
    rc = state.done ? state.status : CAIRN_ETIMEOUT;
out:
    cairn_node_client_free(client);
    cairn_loop_free(loop);
    if (rc < 0 && result->envelope == NULL)
        cairn_node_result_release(result);
    return rc;
}

void
cairn_node_result_release(struct cairn_node_result *result)
{
    if (result == NULL)
        return;
    if (result->envelope)
        cairn__envelope__free_unpacked(result->envelope, NULL);
    for (size_t i = 0; i < result->frame_count; i++)
        free((void *)result->frames[i].data);
    free(result->frames);
    memset(result, 0, sizeof(*result));
}
