/*
 * server_restore.c - the node daemon's answers to `cairnctl restore`
 * reading a user from the cluster instead of a node's local files:
 * BODY_REQUEST (a range of a message body by GUID) and SIEVE_REQUEST (the
 * text of a live sieve script). Both are user requests: they wait in the
 * user's queue behind its updates and run on the daemon's own open store,
 * so the user's lock stays the daemon's and no append or compaction runs
 * under them.
 *
 * A body inside a gzip chunk cannot be read from an offset without
 * inflating everything before it, so answering ranges straight from the
 * log would cost O(n^2) for a big body. A body that fits the range asked
 * for (from offset 0) is read into the reply at once. A bigger one is
 * inflated once, on the first request, into a spool file in the spool
 * directory (unlinked at once: a crash or restart leaves nothing behind),
 * its SHA-1 checked against the GUID; every range is then a pread() of
 * that file, at most BODY_RANGE_MAX bytes per reply, so the node holds no
 * more than one range per reply in memory whatever the body's size. A
 * spool is dropped after its last range is served, when idle for
 * BODY_SPOOL_IDLE_MS (node_restore_trim, on the idle sweep), and beyond
 * BODY_SPOOLS_MAX (least recently used first). Inflating a body of
 * BODY_BACKGROUND_MIN or more runs on the worker thread when it is idle,
 * so other users are not held up meanwhile.
 *
 * A restore of a big folder asks for thousands of small bodies, and one
 * BODY request per body inflates the chunk from its start each time
 * (O(n^2): a 20,000-message folder lies in one chunk). So BODY_REQUEST
 * also takes two verbs over GUID lists (frame 1, one GUID per line):
 * "ORDER" answers the same GUIDs sorted into the order their bodies lie
 * in the file, and "BATCH" answers, in one pass of a body reader, as many
 * of the GUIDs (in file order) as fit BATCH_BYTES: per body a frame
 * "GUID SIZE" followed by its bytes in frames of at most max_frame. A
 * body bigger than BATCH_BYTES is answered "GUID SIZE ranges" with no
 * bytes (the client reads it by ranges), and a batch ends before a body
 * that would overflow it; the client asks again from there.
 */
#include "common.h"
#include "node_int.h"
#include "server_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

/* Most body bytes one BODY reply carries (held while it is sent). */
#define BODY_RANGE_MAX (16u * 1024 * 1024)
/* Spools kept at once, and how long an unused one is kept. */
#define BODY_SPOOLS_MAX 16
#define BODY_SPOOL_IDLE_MS (10u * 60 * 1000)
/* Body bytes one BATCH reply carries at most, and GUIDs one may ask. */
#define BATCH_BYTES (4u * 1024 * 1024)
#define BATCH_GUIDS_MAX 8192
/* Longest sieve script answered (Cyrus caps scripts far below). */
#define SIEVE_REPLY_MAX (4u * 1024 * 1024)
/* Bodies at least this big are read on the worker thread when it is idle. */
#define BODY_BACKGROUND_MIN (4 * 1024 * 1024)

/* A reply's payload while it is read: frames of at most max_frame. */
struct reply_frames {
    struct cairn_buf *frames;
    size_t count, cap;
    size_t sealed; /* frames before this one take no more bytes */
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

        if (last == NULL || reply->count == reply->sealed ||
            last->len == reply->max_frame) {
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

/* A body inflated into an unlinked file, served range by range. */
struct node_body_spool {
    struct node_body_spool *next;
    char *userid;
    char guid[41];
    int fd;
    uint64_t size;
    uint64_t last_used_ms;
};

static void
spool_free(struct node_body_spool *spool)
{
    if (spool == NULL)
        return;
    if (spool->fd >= 0)
        close(spool->fd);
    free(spool->userid);
    free(spool);
}

static struct node_body_spool *
spool_find(struct cairn_node_server *server, const char *userid,
           const char *guid)
{
    for (struct node_body_spool *spool = server->body_spools; spool != NULL;
         spool = spool->next)
        if (strcmp(spool->guid, guid) == 0 &&
            strcmp(spool->userid, userid) == 0)
            return spool;
    return NULL;
}

static void
spool_remove(struct cairn_node_server *server, struct node_body_spool *gone)
{
    for (struct node_body_spool **at = &server->body_spools; *at != NULL;
         at = &(*at)->next)
        if (*at == gone) {
            *at = gone->next;
            spool_free(gone);
            return;
        }
}

/* Adds spool, dropping the least recently used beyond BODY_SPOOLS_MAX. */
static void
spool_add(struct cairn_node_server *server, struct node_body_spool *spool)
{
    struct node_body_spool *oldest = NULL;
    size_t count = 0;

    spool->next = server->body_spools;
    server->body_spools = spool;
    for (struct node_body_spool *s = spool; s != NULL; s = s->next) {
        count++;
        if (oldest == NULL || s->last_used_ms < oldest->last_used_ms)
            oldest = s;
    }
    if (count > BODY_SPOOLS_MAX && oldest != spool)
        spool_remove(server, oldest);
}

void
node_restore_trim(struct cairn_node_server *server, bool all)
{
    uint64_t now = cairn_loop_now_ms();
    struct node_body_spool **at = &server->body_spools;

    while (*at != NULL) {
        struct node_body_spool *spool = *at;

        if (all || now - spool->last_used_ms >= BODY_SPOOL_IDLE_MS) {
            *at = spool->next;
            spool_free(spool);
        } else {
            at = &spool->next;
        }
    }
}

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

/* What a BODY_REQUEST's frame 1 asks: "GUID [OFFSET [LENGTH]]". */
struct body_range {
    char guid[41];
    uint64_t offset, length;
};

static int
parse_range(const char *text, size_t len, struct body_range *range)
{
    char copy[128], *words[4], *save = NULL;
    size_t count = 0;

    if (len >= sizeof(copy) || strlen(text) != len)
        return CAIRN_EINVAL;
    memcpy(copy, text, len + 1);
    for (char *w = strtok_r(copy, " ", &save); w != NULL && count < 4;
         w = strtok_r(NULL, " ", &save))
        words[count++] = w;
    if (count < 1 || count > 3 || !is_guid(words[0], strlen(words[0])))
        return CAIRN_EINVAL;
    memcpy(range->guid, words[0], 41);
    range->offset = 0;
    range->length = BODY_RANGE_MAX;
    if (count > 1 &&
        cairn_parse_u64_str(words[1], 0, UINT64_MAX, &range->offset) < 0)
        return CAIRN_EINVAL;
    if (count > 2 &&
        cairn_parse_u64_str(words[2], 1, BODY_RANGE_MAX, &range->length) < 0)
        return CAIRN_EINVAL;
    return 0;
}

/* The body's size from the user's index; CAIRN_ENOENT if not there. */
static int
body_size(struct cairn_store *store, const char *guid, uint64_t *size)
{
    static const char sql[] = "SELECT size FROM message WHERE guid = ?1";
    sqlite3_stmt *stmt = NULL;
    int rc = CAIRN_EDB, step;

    if (sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_bind_text(stmt, 1, guid, -1, SQLITE_STATIC) == SQLITE_OK) {
        step = sqlite3_step(stmt);
        if (step == SQLITE_ROW && sqlite3_column_int64(stmt, 0) >= 0) {
            *size = (uint64_t)sqlite3_column_int64(stmt, 0);
            rc = 0;
        } else if (step == SQLITE_DONE) {
            rc = CAIRN_ENOENT;
        }
    }
    sqlite3_finalize(stmt);
    return rc;
}

/* Frame 1 of a BODY reply: the body's whole size, in decimal. */
static int
add_size_frame(struct reply_frames *reply, uint64_t size, uint64_t body_bytes)
{
    char text[32];
    int len = snprintf(text, sizeof(text), "%" PRIu64, size);
    int rc;

    reply->limit = (uint64_t)len;
    if ((rc = put_reply(reply, text, (size_t)len)) < 0)
        return rc;
    reply->sealed = reply->count;
    reply->limit = reply->total + body_bytes;
    return 0;
}

/* A BODY read (whole, or into a spool), on the loop or the worker. */
struct body_read {
    struct node_request *request; /* owned */
    struct body_range range;
    uint64_t size;
    struct reply_frames reply;
    struct node_body_spool *spool; /* being filled, owned until added */
    int write_errno;
};

static int
put_spool(void *ctx, const void *data, size_t len)
{
    struct body_read *read = ctx;
    const char *at = data;

    while (len > 0) {
        ssize_t n = write(read->spool->fd, at, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            read->write_errno = errno;
            return CAIRN_EIO;
        }
        at += n;
        len -= (size_t)n;
    }
    return 0;
}

static int
read_body(void *arg, struct cairn_store *store)
{
    struct body_read *read = arg;

    if (read->spool != NULL)
        return cairn_store_read_message(store, read->range.guid, put_spool,
                                        read);
    return cairn_store_read_message(store, read->range.guid, put_reply,
                                    &read->reply);
}

static void
body_read_free(struct body_read *read)
{
    reply_frames_release(&read->reply);
    spool_free(read->spool);
    node_request_free(read->request);
    free(read);
}

static void
reply_body_error(struct cairn_node_server *server, struct body_read *read,
                 int rc)
{
    char text[512];

    if (rc == CAIRN_ENOENT)
        snprintf(text, sizeof(text),
                 "no message with GUID %s in the user's backup",
                 read->range.guid);
    else if (rc == CAIRN_EMISMATCH)
        snprintf(text, sizeof(text), "stored body %s fails its GUID (SHA-1)",
                 read->range.guid);
    else if (rc == CAIRN_EIO && read->write_errno != 0)
        snprintf(text, sizeof(text),
                 "cannot spool body %s (%" PRIu64 " bytes) in %s: %s",
                 read->range.guid, read->size, server->spool_dir,
                 strerror(read->write_errno));
    else
        snprintf(text, sizeof(text), "reading body %s: %s", read->range.guid,
                 cairn_strerror(rc));
    node_event(server, CAIRN_LOG_WARN, read->request, "BODY: %s", text);
    node_reply_error(server, read->request, rc, 0, text);
}

/* Answers a range of a spooled body with pread()s of its file. */
static void
serve_range(struct cairn_node_server *server, struct body_read *read,
            struct node_body_spool *spool)
{
    uint64_t offset = read->range.offset, end;
    char piece[64 * 1024];
    int rc = 0;

    spool->last_used_ms = cairn_loop_now_ms();
    end = spool->size - offset < read->range.length
              ? spool->size
              : offset + read->range.length;
    if ((rc = add_size_frame(&read->reply, spool->size, end - offset)) < 0)
        goto out;
    for (uint64_t at = offset; at < end && rc == 0;) {
        size_t want =
            end - at < sizeof(piece) ? (size_t)(end - at) : sizeof(piece);
        ssize_t got = pread(spool->fd, piece, want, (off_t)at);

        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            rc = CAIRN_EIO;
            break;
        }
        rc = put_reply(&read->reply, piece, (size_t)got);
        at += (uint64_t)got;
    }
out:
    if (rc < 0) {
        reply_body_error(server, read, rc);
        spool_remove(server, spool);
        return;
    }
    node_event(server, CAIRN_LOG_INFO, read->request,
               "BODY %s bytes %" PRIu64 "-%" PRIu64 " of %" PRIu64
               " served from its spool",
               read->range.guid, offset, end, spool->size);
    reply_owned(server, read->request, CAIRN__KIND__BODY_REPLY, &read->reply);
    if (end == spool->size) /* the last range: the client is done */
        spool_remove(server, spool);
}

static void
answer_body(struct cairn_node_server *server, struct body_read *read, int rc)
{
    struct node_body_spool *spool = read->spool;

    if (rc < 0)
        reply_body_error(server, read, rc);
    else if (spool == NULL)
        reply_owned(server, read->request, CAIRN__KIND__BODY_REPLY,
                    &read->reply);
    else {
        /* the list owns it now; spool_add never drops the newest */
        read->spool = NULL;
        spool_add(server, spool);
        serve_range(server, read, spool);
    }
    body_read_free(read);
}

static void
body_done(struct cairn_node_server *server, struct node_user *user, void *arg,
          int rc)
{
    (void)user;
    answer_body(server, arg, rc);
}

/* An unlinked file in the spool directory for read's body. */
static int
open_spool(struct cairn_node_server *server, struct body_read *read)
{
    char *path = NULL;
    int rc = CAIRN_ENOMEM;

    if ((read->spool = calloc(1, sizeof(*read->spool))) == NULL)
        return CAIRN_ENOMEM;
    read->spool->fd = -1;
    read->spool->size = read->size;
    read->spool->last_used_ms = cairn_loop_now_ms();
    memcpy(read->spool->guid, read->range.guid, sizeof(read->spool->guid));
    if ((read->spool->userid = strdup(read->request->user->userid)) == NULL ||
        asprintf(&path, "%s/restore-body-XXXXXX", server->spool_dir) < 0) {
        path = NULL;
        goto out;
    }
    rc = 0;
    if ((read->spool->fd = mkstemp(path)) < 0) {
        read->write_errno = errno;
        rc = CAIRN_EIO;
    } else {
        unlink(path); /* nothing outlives the process */
    }
out:
    free(path);
    return rc;
}

/*
 * The reply for a request that needs the store: the whole body at once
 * when it fits the range from 0, else a new spool (then the range).
 */
static void
read_from_store(struct cairn_node_server *server, struct body_read *read)
{
    struct node_user *user = read->request->user;
    int rc;

    if ((rc = body_size(user->store, read->range.guid, &read->size)) < 0)
        goto fail;
    if (read->range.offset > read->size) {
        char text[160];

        snprintf(text, sizeof(text),
                 "offset %" PRIu64 " is past the end of body %s (%" PRIu64
                 " bytes)",
                 read->range.offset, read->range.guid, read->size);
        node_reply_error(server, read->request, CAIRN_EINVAL, 0, text);
        body_read_free(read);
        return;
    }
    if (read->range.offset == 0 && read->size <= read->range.length)
        rc = add_size_frame(&read->reply, read->size, read->size);
    else
        rc = open_spool(server, read);
    if (rc < 0)
        goto fail;
    if (!server->worker_running && read->size >= BODY_BACKGROUND_MIN &&
        node_job_start(server, user, read_body, body_done, read) == 0)
        return; /* answered by body_done, on the loop */
    answer_body(server, read, read_body(read, user->store));
    return;
fail:
    answer_body(server, read, rc);
}

/* Takes request. */
static void
answer_body_request(struct cairn_node_server *server,
                    struct node_request *request)
{
    struct node_user *user = request->user;
    struct node_body_spool *spool;
    struct body_read *read = NULL;
    int rc;

    if ((read = calloc(1, sizeof(*read))) == NULL) {
        node_reply_error(server, request, CAIRN_ENOMEM, 0, NULL);
        node_request_free(request);
        return;
    }
    read->request = request;
    read->reply.max_frame = server->settings.max_frame;
    if (parse_range(request->dlist, request->dlist_len, &read->range) < 0) {
        node_reply_error(server, request, CAIRN_EINVAL, 0,
                         "BODY needs \"GUID [OFFSET [LENGTH]]\" in frame 1"
                         " (40 hex digits, LENGTH up to 16 MiB)");
        body_read_free(read);
        return;
    }
    if ((spool = spool_find(server, user->userid, read->range.guid)) != NULL) {
        serve_range(server, read, spool);
        body_read_free(read);
        return;
    }
    if ((rc = node_user_open(server, user, false)) < 0) {
        node_reply_error(server, request, rc, 0,
                         rc == CAIRN_ENOENT ? "no such user on this node"
                                            : cairn_strerror(rc));
        body_read_free(read);
        return;
    }
    read_from_store(server, read);
}

/* --- ORDER and BATCH -------------------------------------------------------
 */

/* A GUID list request (ORDER or BATCH) while it is read. */
struct body_batch {
    struct node_request *request; /* owned */
    bool order_only;
    char *text;   /* frame 1, split in place; owned */
    char **guids; /* into text; owned array */
    size_t count;
    struct reply_frames reply;
    const char *failed_guid; /* the body a failure is about */
};

static void
body_batch_free(struct body_batch *batch)
{
    reply_frames_release(&batch->reply);
    node_request_free(batch->request);
    free(batch->guids);
    free(batch->text);
    free(batch);
}

/* Splits frame 1 into GUIDs (one per line); every one must be a GUID. */
static int
split_guids(struct body_batch *batch)
{
    const struct node_request *request = batch->request;
    size_t cap = 0;

    if (request->dlist_len == 0 || strlen(request->dlist) != request->dlist_len)
        return CAIRN_EINVAL;
    if ((batch->text = strdup(request->dlist)) == NULL)
        return CAIRN_ENOMEM;
    for (char *save = NULL, *line = strtok_r(batch->text, "\n", &save);
         line != NULL; line = strtok_r(NULL, "\n", &save)) {
        if (!is_guid(line, strlen(line)) || batch->count == BATCH_GUIDS_MAX)
            return CAIRN_EINVAL;
        if (batch->count == cap) {
            size_t grown_cap = cap ? cap * 2 : 64;
            char **grown =
                realloc(batch->guids, grown_cap * sizeof(*batch->guids));

            if (grown == NULL)
                return CAIRN_ENOMEM;
            batch->guids = grown;
            cap = grown_cap;
        }
        batch->guids[batch->count++] = line;
    }
    return batch->count > 0 ? 0 : CAIRN_EINVAL;
}

/* Opens a frame of its own (sealed) holding text. */
static int
put_sealed_frame(struct reply_frames *reply, const char *text)
{
    int rc;

    reply->sealed = reply->count;
    reply->limit = reply->total + strlen(text);
    if ((rc = put_reply(reply, text, strlen(text))) == 0)
        reply->sealed = reply->count;
    return rc;
}

/* The ORDER answer: the GUIDs in file order, one per line. */
static int
order_reply(struct body_batch *batch)
{
    struct reply_frames *reply = &batch->reply;
    int rc = 0;

    reply->limit = (uint64_t)batch->count * 41;
    for (size_t i = 0; i < batch->count && rc == 0; i++) {
        rc = put_reply(reply, batch->guids[i], 40);
        if (rc == 0)
            rc = put_reply(reply, "\n", 1);
    }
    return rc;
}

/* The BATCH answer: whole bodies in file order while they fit. */
static int
batch_reply(struct body_batch *batch, struct cairn_store *store,
            struct cairn_body_reader *reader)
{
    struct reply_frames *reply = &batch->reply;
    uint64_t used = 0;
    int rc = 0;

    for (size_t i = 0; i < batch->count && rc == 0; i++) {
        const char *guid = batch->guids[i];
        uint64_t size = 0;
        char header[96];

        batch->failed_guid = guid;
        if ((rc = body_size(store, guid, &size)) < 0)
            break;
        if (size > BATCH_BYTES) {
            snprintf(header, sizeof(header), "%s %" PRIu64 " ranges", guid,
                     size);
            rc = put_sealed_frame(reply, header);
            continue;
        }
        if (used + size > BATCH_BYTES)
            break; /* the client asks again from here */
        snprintf(header, sizeof(header), "%s %" PRIu64, guid, size);
        if ((rc = put_sealed_frame(reply, header)) < 0)
            break;
        reply->limit = reply->total + size;
        rc = cairn_body_reader_read(reader, guid, put_reply, reply);
        if (rc == 0 && reply->total != reply->limit)
            rc = CAIRN_ECORRUPT; /* index and log disagree on its size */
        used += size;
        reply->sealed = reply->count;
    }
    if (rc == 0)
        batch->failed_guid = NULL;
    return rc;
}

static int
read_batch(void *arg, struct cairn_store *store)
{
    struct body_batch *batch = arg;
    struct cairn_body_reader *reader = NULL;
    int rc;

    /* BATCH answers in the order asked (the client's plan, from ORDER in
     * blocks): sorting a batch that spans two ORDER blocks once more would
     * answer bodies in an order the client does not ask them in */
    if ((rc = cairn_body_reader_open(store->data_path, store->index_path,
                                     &reader)) == 0 &&
        batch->order_only &&
        (rc = cairn_body_reader_order(reader, batch->guids, batch->count)) == 0)
        rc = order_reply(batch);
    else if (rc == 0)
        rc = batch_reply(batch, store, reader);
    cairn_body_reader_free(reader);
    return rc;
}

static void
answer_batch(struct cairn_node_server *server, struct body_batch *batch, int rc)
{
    if (rc == 0) {
        node_event(server, CAIRN_LOG_INFO, batch->request,
                   "BODY %s: %zu GUIDs asked, %" PRIu64 " bytes answered",
                   batch->order_only ? "ORDER" : "BATCH", batch->count,
                   batch->reply.total);
        reply_owned(server, batch->request, CAIRN__KIND__BODY_REPLY,
                    &batch->reply);
    } else {
        char text[512];

        if (rc == CAIRN_ENOENT && batch->failed_guid != NULL)
            snprintf(text, sizeof(text),
                     "no message with GUID %s in the user's backup",
                     batch->failed_guid);
        else if (batch->failed_guid != NULL)
            snprintf(text, sizeof(text), "reading body %s: %s",
                     batch->failed_guid,
                     rc == CAIRN_EMISMATCH ? "fails its GUID (SHA-1)"
                                           : cairn_strerror(rc));
        else
            snprintf(text, sizeof(text), "BODY %s: %s",
                     batch->order_only ? "ORDER" : "BATCH", cairn_strerror(rc));
        node_event(server, CAIRN_LOG_WARN, batch->request, "%s", text);
        node_reply_error(server, batch->request, rc, 0, text);
    }
    body_batch_free(batch);
}

static void
batch_done(struct cairn_node_server *server, struct node_user *user, void *arg,
           int rc)
{
    (void)user;
    answer_batch(server, arg, rc);
}

/* Takes request. */
static void
answer_body_batch(struct cairn_node_server *server,
                  struct node_request *request, bool order_only)
{
    struct node_user *user = request->user;
    struct body_batch *batch = calloc(1, sizeof(*batch));
    int rc;

    if (batch == NULL) {
        node_reply_error(server, request, CAIRN_ENOMEM, 0, NULL);
        node_request_free(request);
        return;
    }
    batch->request = request;
    batch->order_only = order_only;
    batch->reply.max_frame = server->settings.max_frame;
    if ((rc = split_guids(batch)) < 0) {
        node_reply_error(server, request, rc, 0,
                         rc == CAIRN_ENOMEM
                             ? NULL
                             : "BODY ORDER and BATCH need GUIDs (40 hex "
                               "digits), one per line, in frame 1 (at most "
                               "8192)");
        batch->request = NULL;
        node_request_free(request);
        body_batch_free(batch);
        return;
    }
    if ((rc = node_user_open(server, user, false)) < 0) {
        node_reply_error(server, request, rc, 0,
                         rc == CAIRN_ENOENT ? "no such user on this node"
                                            : cairn_strerror(rc));
        body_batch_free(batch);
        return;
    }
    if (!order_only && !server->worker_running &&
        node_job_start(server, user, read_batch, batch_done, batch) == 0)
        return; /* answered by batch_done, on the loop */
    answer_batch(server, batch, read_batch(batch, user->store));
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
    const char *verb = request->envelope->verb;

    /* what this user appended in the open round is readable once
     * committed, as for a state answer */
    if (request->user->in_round)
        node_commit_round(server);

    if (request->envelope->kind == CAIRN__KIND__BODY_REQUEST && verb != NULL &&
        (strcmp(verb, "ORDER") == 0 || strcmp(verb, "BATCH") == 0))
        answer_body_batch(server, request, strcmp(verb, "ORDER") == 0);
    else if (request->envelope->kind == CAIRN__KIND__BODY_REQUEST)
        answer_body_request(server, request);
    else
        answer_sieve_request(server, request);
}
