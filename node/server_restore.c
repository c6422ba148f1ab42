/*
 * server_restore.c - the node daemon's answers to `cairnctl restore`
 * reading a user from the cluster instead of a node's local files:
 * BODY_REQUEST (a message body by GUID) and SIEVE_REQUEST (the text of a
 * live sieve script). Both are user requests: they wait in the user's
 * queue behind its updates and run on the daemon's own open store, so the
 * user's lock stays the daemon's and no append or compaction runs under
 * them.
 *
 * A body inside a gzip chunk cannot be read from an offset without
 * inflating everything before it, so a stateless READ at an offset (as
 * TRANSFER does for whole files) would cost O(n^2) for a big body. The
 * node instead reads the whole body once, checks its SHA-1 against the
 * GUID, and answers with it cut into max_frame frames of one reply. That
 * holds the body in memory while it is sent, so bodies over BODY_REPLY_MAX
 * (64 MiB; Cyrus's default maxmessagesize is far below) are refused with
 * CAIRN_ETOOBIG. Bodies of BODY_BACKGROUND_MIN or more are read on the
 * worker thread when it is idle, so other users are not held up while
 * megabytes inflate.
 */
#include "common.h"
#include "node_int.h"
#include "server_int.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* Largest body a BODY_REQUEST is answered with (held while sent). */
#define BODY_REPLY_MAX (64u * 1024 * 1024)
/* Longest sieve script answered (Cyrus caps scripts far below). */
#define SIEVE_REPLY_MAX (4u * 1024 * 1024)
/* Bodies at least this big are read on the worker thread when it is idle. */
#define BODY_BACKGROUND_MIN (4 * 1024 * 1024)

/* A reply's payload while it is read: frames of at most max_frame. */
struct reply_frames {
    struct cairn_buf *frames;
    size_t count, cap;
    size_t max_frame;
    uint64_t total, limit;
};

static void
reply_frames_release(struct reply_frames *reply)
{
    for (size_t i = 0; i < reply->count; i++)
        cairn_buf_release(&reply->frames[i]);
    free(reply->frames);
    memset(reply, 0, sizeof(*reply));
}

/* Appends bytes to the reply, opening a new frame when the last is full. */
static int
put_reply(void *ctx, const void *data, size_t len)
{
    struct reply_frames *reply = ctx;
    const char *bytes = data;
    int rc;

    if (len > reply->limit - reply->total)
        return CAIRN_ETOOBIG;
    reply->total += len;
    while (len > 0) {
        struct cairn_buf *last =
            reply->count ? &reply->frames[reply->count - 1] : NULL;
        size_t room, take;

        if (last == NULL || last->len == reply->max_frame) {
            if (reply->count == reply->cap) {
                size_t cap = reply->cap ? reply->cap * 2 : 8;
                struct cairn_buf *grown =
                    realloc(reply->frames, cap * sizeof(*grown));

                if (grown == NULL)
                    return CAIRN_ENOMEM;
                reply->frames = grown;
                reply->cap = cap;
            }
            last = &reply->frames[reply->count++];
            cairn_buf_init(last, reply->max_frame);
        }
        room = reply->max_frame - last->len;
        take = len < room ? len : room;
        if ((rc = cairn_buf_append(last, bytes, take)) < 0)
            return rc;
        bytes += take;
        len -= take;
    }
    return 0;
}

static void
free_frame(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* One frame; data is handed to ZeroMQ (freed by it, also on failure). */
static int
send_owned(void *socket, void *data, size_t len, bool more)
{
    zmq_msg_t msg;

    if (data == NULL)
        return CAIRN_ENOMEM;
    if (zmq_msg_init_data(&msg, data, len, free_frame, NULL) != 0) {
        free(data);
        return CAIRN_ENOMEM;
    }
    if (zmq_msg_send(&msg, socket, more ? ZMQ_SNDMORE : 0) < 0) {
        zmq_msg_close(&msg);
        return errno == EHOSTUNREACH ? CAIRN_EUNAVAILABLE : CAIRN_EIO;
    }
    return 0;
}

static void *
copy_bytes(const void *data, size_t len)
{
    void *copy = malloc(len ? len : 1);

    if (copy != NULL && len > 0)
        memcpy(copy, data, len);
    return copy;
}

/*
 * Sends the reply of kind with reply's frames handed to ZeroMQ instead of
 * copied (node_reply copies), so a body is held once while it goes out.
 * Empties reply. A failure is logged: the reply is then lost.
 */
static void
reply_owned(struct cairn_node_server *server,
            const struct node_request *request, Cairn__Kind kind,
            struct reply_frames *reply)
{
    Cairn__Envelope envelope = CAIRN__ENVELOPE__INIT;
    void *packed = NULL;
    size_t size;
    int rc = CAIRN_ENOMEM;

    envelope.kind = kind;
    envelope.request_id = request->envelope->request_id;
    envelope.user = request->envelope->user;
    envelope.sequence = request->envelope->sequence;
    envelope.ring_epoch = request->envelope->ring_epoch;
    envelope.payload_frames = (uint32_t)reply->count;
    envelope.payload_bytes = reply->total;
    size = cairn__envelope__get_packed_size(&envelope);
    if ((packed = malloc(size ? size : 1)) == NULL)
        goto out;
    cairn__envelope__pack(&envelope, packed);
    if ((rc = send_owned(
             server->socket,
             copy_bytes(request->routing_id, request->routing_id_len),
             request->routing_id_len, true)) < 0)
        goto out;
    rc = send_owned(server->socket, packed, size, reply->count > 0);
    packed = NULL;
    for (size_t i = 0; rc == 0 && i < reply->count; i++) {
        char *data = NULL;
        size_t len = 0;

        /* after a failure the rest are still freed below */
        if ((rc = cairn_buf_detach(&reply->frames[i], &data, &len)) == 0)
            rc = send_owned(server->socket, data, len, i + 1 < reply->count);
    }
out:
    free(packed);
    if (rc < 0)
        node_event(server, CAIRN_LOG_WARN, request, "reply lost: %s",
                   cairn_strerror(rc));
    reply_frames_release(reply);
}

/* --- BODY ------------------------------------------------------------------
 */

static bool
is_guid(const char *text, size_t len)
{
    if (len != 40)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((text[i] >= '0' && text[i] <= '9') ||
              (text[i] >= 'a' && text[i] <= 'f')))
            return false;
    return true;
}

/* A BODY read, on the loop or the worker, until it is answered. */
struct body_read {
    struct node_request *request; /* owned */
    struct reply_frames reply;
    int rc;
};

static int
read_body(void *arg, struct cairn_store *store)
{
    struct body_read *read = arg;

    read->rc = cairn_store_read_message(store, read->request->dlist, put_reply,
                                        &read->reply);
    return read->rc;
}

static void
answer_body(struct cairn_node_server *server, struct body_read *read, int rc)
{
    if (rc == 0)
        reply_owned(server, read->request, CAIRN__KIND__BODY_REPLY,
                    &read->reply);
    else if (rc == CAIRN_ENOENT)
        node_reply_error(server, read->request, rc, 0,
                         "no message with this GUID in the user's backup");
    else if (rc == CAIRN_ETOOBIG)
        node_reply_error(server, read->request, rc, 0,
                         "message body over the node's 64 MiB BODY limit");
    else if (rc == CAIRN_EMISMATCH)
        node_reply_error(server, read->request, rc, 0,
                         "stored body fails its GUID (SHA-1)");
    else
        node_reply_error(server, read->request, rc, 0, NULL);
    reply_frames_release(&read->reply);
    node_request_free(read->request);
    free(read);
}

static void
body_done(struct cairn_node_server *server, struct node_user *user, void *arg,
          int rc)
{
    (void)user;
    answer_body(server, arg, rc);
}

/* Whether the body is big enough to be worth the worker thread. */
static bool
body_is_big(struct cairn_store *store, const char *guid)
{
    static const char sql[] = "SELECT length FROM message WHERE guid = ?1";
    sqlite3_stmt *stmt = NULL;
    bool big = false;

    if (sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_bind_text(stmt, 1, guid, -1, SQLITE_STATIC) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        big = sqlite3_column_int64(stmt, 0) >= BODY_BACKGROUND_MIN;
    sqlite3_finalize(stmt);
    return big;
}

/* Takes request. */
static void
answer_body_request(struct cairn_node_server *server,
                    struct node_request *request)
{
    struct node_user *user = request->user;
    struct body_read *read = NULL;
    int rc;

    if (!is_guid(request->dlist, request->dlist_len)) {
        node_reply_error(server, request, CAIRN_EINVAL, 0,
                         "BODY needs a GUID (40 hex digits) in frame 1");
        goto fail;
    }
    if ((rc = node_user_open(server, user, false)) < 0) {
        node_reply_error(server, request, rc, 0,
                         rc == CAIRN_ENOENT ? "no such user on this node"
                                            : cairn_strerror(rc));
        goto fail;
    }
    if ((read = calloc(1, sizeof(*read))) == NULL) {
        node_reply_error(server, request, CAIRN_ENOMEM, 0, NULL);
        goto fail;
    }
    read->request = request;
    read->reply.max_frame = server->settings.max_frame;
    read->reply.limit = BODY_REPLY_MAX;
    if (!server->worker_running && body_is_big(user->store, request->dlist) &&
        node_job_start(server, user, read_body, body_done, read) == 0)
        return; /* answered by body_done, on the loop */
    answer_body(server, read, read_body(read, user->store));
    return;
fail:
    node_request_free(request);
}

/* --- SIEVE -----------------------------------------------------------------
 */

static int
read_sieve(struct cairn_store *store, const char *filename,
           struct reply_frames *reply)
{
    char *content = NULL;
    size_t len = 0;
    int rc = cairn_store_read_sieve(store, filename, &content, &len);

    if (rc == 0)
        rc = put_reply(reply, content, len);
    free(content);
    return rc;
}

/* Takes request. */
static void
answer_sieve_request(struct cairn_node_server *server,
                     struct node_request *request)
{
    struct reply_frames reply = {0};
    int rc;

    reply.max_frame = server->settings.max_frame;
    reply.limit = SIEVE_REPLY_MAX;
    if (request->dlist_len == 0 || strlen(request->dlist) != request->dlist_len)
        rc = CAIRN_EINVAL;
    else if ((rc = node_user_open(server, request->user, false)) == 0)
        rc = read_sieve(request->user->store, request->dlist, &reply);
    if (rc == 0)
        node_reply(server, request, CAIRN__KIND__SIEVE_REPLY, reply.frames,
                   reply.count, false);
    else
        node_reply_error(server, request, rc, 0,
                         rc == CAIRN_ENOENT
                             ? "no such user or live sieve script"
                             : cairn_strerror(rc));
    reply_frames_release(&reply);
    node_request_free(request);
}

bool
node_restore_request(Cairn__Kind kind)
{
    return kind == CAIRN__KIND__BODY_REQUEST ||
           kind == CAIRN__KIND__SIEVE_REQUEST;
}

void
node_restore_read(struct cairn_node_server *server,
                  struct node_request *request)
{
    /* what this user appended in the open round is readable once
     * committed, as for a state answer */
    if (request->user->in_round)
        node_commit_round(server);
    if (request->envelope->kind == CAIRN__KIND__BODY_REQUEST)
        answer_body_request(server, request);
    else
        answer_sieve_request(server, request);
}
