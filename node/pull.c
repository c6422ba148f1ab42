/*
 * pull.c - node-to-node pull, the receiving side (pull_source.c is the
 * sending side): this node connects to the node that holds a user (its
 * own CURVE key, role peer there), streams the user's data file in
 * frames with a window of requests in flight, checks the size and the
 * SHA-1 of what came, rebuilds and verifies the index, compares its
 * state digest with the one the source took when the range was fixed,
 * and installs the copy.
 *
 * Two ways to copy:
 *   whole  into spool/pull-USER (a partial one left by an interrupted pull
 *          is resumed when the source still has those bytes), then moved
 *          into data_dir under a new name, rebuilt, verified at Cyrus's
 *          full level, compared; only then is the current copy (if any)
 *          set aside as <data file>.replaced-<unix time> and the catalog
 *          pointed at the new file. A damaged copy is never deleted here.
 *   tail   the user's installed copy is a prefix of the source's file
 *          (files are append-only between compactions; the source checks
 *          the last 64 KiB before our end): only what was appended since
 *          is copied, onto the end of our file under the store's lock,
 *          indexed (cairn_store_index_appended) and compared by digest.
 *          This is what keeps a rebalance's hold short: the bulk is
 *          copied while the user still writes, the tail while it is held.
 *          A tail that does not check is cut off again (the store as it
 *          was), and a digest that differs falls back to a whole copy.
 *
 * The rate limit is a token bucket on the requests this side sends (one
 * frame each), so it bounds what the source sends for this pull.
 *
 * Threads: node_pull_user() runs on any thread and touches no loop
 * state (its own catalog connection, its own socket on the server's
 * ZeroMQ context, which is thread-safe). The admin request (verb PULL)
 * runs it on a thread of its own per pull (pull_request.c) and answers
 * from the loop when it ends.
 */
#include "common.h"
#include "curve.h"
#include "daemon.h"
#include "pull_int.h"
#include "server_int.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define PULL_WINDOW 8              /* frame requests in flight */
#define PULL_ANSWER_MS (15 * 1000) /* the source answers nothing: failed */
#define PULL_BEGIN_RETRIES 20      /* the source's user is busy: retry */
#define MAX_PULLS 8                /* at once on this node */

/* One pull, while it runs: the connection and where the bytes go. */
struct pull {
    const struct cairn_node_server *server;
    const struct pull_options *options;
    struct pull_outcome *outcome;
    void *socket, *monitor;
    uint64_t next_request_id;
    Cairn__PullReply *reply; /* of SEND begin, owned */
    int fd;                  /* where the range is written */
    EVP_MD_CTX *sha;         /* of what came */
    char source_sha1[41];    /* what the source read */
    uint64_t bytes;
};

static int fail(struct pull *pull, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets the outcome's error (the first one wins) and returns rc. */
static int
fail(struct pull *pull, int rc, const char *fmt, ...)
{
    char cause[200];
    va_list ap;

    if (pull->outcome->error[0] != '\0')
        return rc;
    va_start(ap, fmt);
    vsnprintf(cause, sizeof(cause), fmt, ap);
    va_end(ap);
    snprintf(pull->outcome->error, sizeof(pull->outcome->error),
             "pull of %s from node %s: %s", pull->options->userid,
             pull->options->peer, cause);
    return rc;
}

static uint64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* --- the connection --------------------------------------------------------
 */

static int
connect_source(struct pull *pull)
{
    char error[256] = "", monitor_endpoint[64];
    int linger = 0, rc;
    static atomic_uint monitors;

    pull->socket = zmq_socket(pull->server->zmq_context, ZMQ_DEALER);
    if (pull->socket == NULL)
        return fail(pull, CAIRN_EIO, "no socket: %s", zmq_strerror(errno));
    zmq_setsockopt(pull->socket, ZMQ_LINGER, &linger, sizeof(linger));
    if ((rc = cairn_curve_client(pull->socket, pull->options->endpoint, error,
                                 sizeof(error))) < 0)
        return fail(pull, rc, "%s", error);
    /* A closed or refused connection (the source stopped) fails the pull
     * at once instead of after PULL_ANSWER_MS: a rebalance may hold the
     * user's writes meanwhile. */
    snprintf(monitor_endpoint, sizeof(monitor_endpoint),
             "inproc://cairn-pull-monitor-%u", atomic_fetch_add(&monitors, 1));
    if (zmq_socket_monitor(pull->socket, monitor_endpoint,
                           ZMQ_EVENT_DISCONNECTED |
                               ZMQ_EVENT_CONNECT_RETRIED) == 0 &&
        (pull->monitor = zmq_socket(pull->server->zmq_context, ZMQ_PAIR)) !=
            NULL) {
        zmq_setsockopt(pull->monitor, ZMQ_LINGER, &linger, sizeof(linger));
        if (zmq_connect(pull->monitor, monitor_endpoint) != 0) {
            zmq_close(pull->monitor);
            pull->monitor = NULL;
        }
    }
    if (zmq_connect(pull->socket, pull->options->endpoint) != 0)
        return fail(pull, CAIRN_EIO, "cannot connect to %s: %s",
                    pull->options->endpoint, zmq_strerror(errno));
    return 0;
}

static void
disconnect_source(struct pull *pull)
{
    if (pull->socket != NULL) {
        zmq_socket_monitor(pull->socket, NULL, 0);
        zmq_close(pull->socket);
    }
    if (pull->monitor != NULL)
        zmq_close(pull->monitor);
    pull->socket = pull->monitor = NULL;
}

/* Sends one request: envelope and at most one frame. */
static int
send_request(struct pull *pull, Cairn__Kind kind, const char *key,
             const void *frame, size_t frame_len)
{
    Cairn__Envelope envelope = CAIRN__ENVELOPE__INIT;
    uint8_t packed[1024];
    size_t size;

    envelope.request_id = ++pull->next_request_id;
    envelope.user = (char *)pull->options->userid;
    envelope.kind = kind;
    envelope.verb = "SEND";
    envelope.key = (char *)(key ? key : "");
    envelope.transfer_session = pull->reply ? pull->reply->session : 0;
    envelope.payload_frames = frame ? 1 : 0;
    envelope.payload_bytes = frame ? frame_len : 0;
    if ((size = cairn__envelope__get_packed_size(&envelope)) > sizeof(packed))
        return CAIRN_ETOOBIG;
    cairn__envelope__pack(&envelope, packed);
    if (zmq_send(pull->socket, packed, size, frame ? ZMQ_SNDMORE : 0) < 0 ||
        (frame && zmq_send(pull->socket, frame, frame_len, 0) < 0))
        return fail(pull, CAIRN_EIO, "send: %s", zmq_strerror(errno));
    return 0;
}

/* A reply: its envelope (owned) and up to two frames. */
struct pull_reply {
    Cairn__Envelope *envelope;
    zmq_msg_t frames[2];
    size_t count;
    bool ready; /* frames initialised */
};

static void
reply_release(struct pull_reply *reply)
{
    if (reply->envelope)
        cairn__envelope__free_unpacked(reply->envelope, NULL);
    for (size_t i = 0; reply->ready && i < 2; i++)
        zmq_msg_close(&reply->frames[i]);
    reply->envelope = NULL;
    reply->ready = false;
    reply->count = 0;
}

/*
 * Waits up to wait_ms for a reply (0: none came, *got false). An ERROR
 * reply, a closed connection or a stop fails with the cause.
 */
static int
receive_reply(struct pull *pull, uint64_t wait_ms, struct pull_reply *reply,
              bool *got)
{
    zmq_pollitem_t items[2] = {{pull->socket, 0, ZMQ_POLLIN, 0},
                               {pull->monitor, 0, ZMQ_POLLIN, 0}};
    zmq_msg_t head;
    bool more;
    int rc = 0;

    *got = false;
    if (atomic_load(pull->options->stop))
        return fail(pull, CAIRN_EUNAVAILABLE, "this node is stopping");
    if (zmq_poll(items, pull->monitor ? 2 : 1, (long)wait_ms) < 0)
        return errno == EINTR
                   ? 0
                   : fail(pull, CAIRN_EIO, "poll: %s", zmq_strerror(errno));
    if (items[1].revents & ZMQ_POLLIN)
        return fail(pull, CAIRN_EUNAVAILABLE,
                    "the connection to %s closed or was refused (node "
                    "stopped?)",
                    pull->options->endpoint);
    if (!(items[0].revents & ZMQ_POLLIN))
        return 0;
    zmq_msg_init(&head);
    for (size_t i = 0; i < 2; i++)
        zmq_msg_init(&reply->frames[i]);
    reply->ready = true;
    reply->count = 0;
    if (zmq_msg_recv(&head, pull->socket, 0) < 0) {
        zmq_msg_close(&head);
        return fail(pull, CAIRN_EIO, "receive: %s", zmq_strerror(errno));
    }
    reply->envelope =
        cairn__envelope__unpack(NULL, zmq_msg_size(&head), zmq_msg_data(&head));
    more = zmq_msg_more(&head);
    zmq_msg_close(&head);
    while (more) { /* the frames; a third one or more would be dropped */
        zmq_msg_t part;

        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, pull->socket, 0) < 0) {
            zmq_msg_close(&part);
            break;
        }
        more = zmq_msg_more(&part);
        if (reply->count < 2)
            zmq_msg_move(&reply->frames[reply->count++], &part);
        zmq_msg_close(&part);
    }
    *got = true;
    if (reply->envelope == NULL)
        rc = fail(pull, CAIRN_EPROTO, "unreadable reply");
    else if (reply->envelope->kind == CAIRN__KIND__ERROR)
        rc = fail(pull,
                  reply->envelope->error_code < 0 ? reply->envelope->error_code
                                                  : CAIRN_EPROTO,
                  "%s",
                  reply->envelope->error_text ? reply->envelope->error_text
                                              : "refused");
    return rc;
}

/*
 * Waits for the reply to the request sent last (up to PULL_ANSWER_MS);
 * answers to earlier requests (a session's end) are skipped.
 */
static int
await_reply(struct pull *pull, struct pull_reply *reply)
{
    uint64_t deadline = now_ms() + PULL_ANSWER_MS;
    bool got = false;
    int rc;

    while (!got) {
        uint64_t now = now_ms();

        if (now >= deadline)
            return fail(pull, CAIRN_ETIMEOUT, "no answer within %d s",
                        PULL_ANSWER_MS / 1000);
        rc = receive_reply(pull, deadline - now < 200 ? deadline - now : 200,
                           reply, &got);
        if (got && reply->envelope != NULL &&
            reply->envelope->request_id != pull->next_request_id) {
            reply_release(reply);
            pull->outcome->error[0] = '\0';
            got = false;
            continue;
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* --- the range -------------------------------------------------------------
 */

/* SEND begin: offers the offset we hold; *reply owned by pull. */
static int
begin_range(struct pull *pull, uint64_t offset)
{
    Cairn__PullOffer offer = CAIRN__PULL_OFFER__INIT;
    struct pull_reply reply = {0};
    uint8_t packed[256];
    char hex[41] = "";
    int rc = 0;

    offer.offset = offset;
    offer.check_bytes =
        offset < NODE_PULL_CHECK_BYTES ? offset : NODE_PULL_CHECK_BYTES;
    if (offset > 0 &&
        (rc = node_pull_range_sha1(pull->fd, offset - offer.check_bytes, offset,
                                   hex)) < 0)
        return fail(pull, rc, "cannot read our copy's last bytes");
    offer.check_sha1 = hex;
    for (int attempt = 0; attempt < PULL_BEGIN_RETRIES; attempt++) {
        reply_release(&reply);
        pull->outcome->error[0] = '\0';
        if ((rc = send_request(pull, CAIRN__KIND__TRANSFER_BEGIN, NULL, packed,
                               cairn__pull_offer__pack(&offer, packed))) < 0)
            return rc;
        rc = await_reply(pull, &reply);
        /* The source's worker holds the user (a big append, its scrub):
         * that ends within moments. */
        if (rc != CAIRN_ELOCKED)
            break;
        usleep(100 * 1000);
    }
    if (rc == 0 &&
        (reply.count < 1 || (pull->reply = cairn__pull_reply__unpack(
                                 NULL, zmq_msg_size(&reply.frames[0]),
                                 zmq_msg_data(&reply.frames[0]))) == NULL))
        rc = fail(pull, CAIRN_EPROTO, "unreadable PullReply");
    if (rc == 0 && (pull->reply->start > pull->reply->end ||
                    (pull->reply->start != 0 && pull->reply->start != offset)))
        rc = fail(pull, CAIRN_EPROTO, "range [%llu, %llu) for offset %llu",
                  (unsigned long long)pull->reply->start,
                  (unsigned long long)pull->reply->end,
                  (unsigned long long)offset);
    reply_release(&reply);
    return rc;
}

/* Writes a frame of the range at its offset (they come in order). */
static int
take_frame(struct pull *pull, uint64_t offset, struct pull_reply *reply)
{
    size_t len = reply->count > 0 ? zmq_msg_size(&reply->frames[0]) : 0;
    const char *data = reply->count > 0 ? zmq_msg_data(&reply->frames[0]) : "";

    if (reply->envelope->kind != CAIRN__KIND__TRANSFER_CHUNK || len == 0 ||
        offset + len > pull->reply->end)
        return fail(pull, CAIRN_EPROTO, "bad frame at offset %llu",
                    (unsigned long long)offset);
    if (pwrite(pull->fd, data, len, (off_t)offset) != (ssize_t)len)
        return fail(pull, errno == ENOSPC ? CAIRN_ENOSPACE : CAIRN_EIO,
                    "cannot write our copy: %s", strerror(errno));
    EVP_DigestUpdate(pull->sha, data, len);
    pull->bytes += len;
    if (reply->count == 2 && zmq_msg_size(&reply->frames[1]) == 40)
        snprintf(pull->source_sha1, sizeof(pull->source_sha1), "%.40s",
                 (const char *)zmq_msg_data(&reply->frames[1]));
    return 0;
}

/*
 * Streams [start, end) into pull->fd: up to PULL_WINDOW frame requests in
 * flight, sent no faster than the rate allows, then compares SHA-1s.
 */
static int
stream_range(struct pull *pull, size_t frame_size)
{
    uint64_t requested = pull->reply->start, received = pull->reply->start;
    uint64_t end = pull->reply->end, offsets[PULL_WINDOW];
    uint64_t started = now_ms(), last_answer = now_ms();
    uint64_t first_id = pull->next_request_id + 1;
    size_t head = 0, in_flight = 0;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    char key[32], hex[41] = "";
    int rc = 0;

    if ((pull->sha = EVP_MD_CTX_new()) == NULL ||
        EVP_DigestInit_ex(pull->sha, EVP_sha1(), NULL) != 1)
        return fail(pull, CAIRN_ENOMEM, "out of memory");
    while (received < end && rc == 0) {
        uint64_t now = now_ms(), due = now, wait;
        struct pull_reply reply = {0};
        bool got = false;

        /* token bucket: the bytes requested so far at rate, from start */
        if (pull->options->rate > 0)
            due = started +
                  (requested - pull->reply->start) * 1000 / pull->options->rate;
        while (in_flight < PULL_WINDOW && requested < end && due <= now &&
               rc == 0) {
            snprintf(key, sizeof(key), "%llu", (unsigned long long)requested);
            if ((rc = send_request(pull, CAIRN__KIND__TRANSFER_CHUNK, key, NULL,
                                   0)) < 0)
                break;
            offsets[(head + in_flight++) % PULL_WINDOW] = requested;
            requested +=
                end - requested < frame_size ? end - requested : frame_size;
            if (pull->options->rate > 0)
                due = started + (requested - pull->reply->start) * 1000 /
                                    pull->options->rate;
        }
        if (rc == 0 && now - last_answer > PULL_ANSWER_MS && in_flight > 0)
            rc = fail(pull, CAIRN_ETIMEOUT, "no frame within %d s",
                      PULL_ANSWER_MS / 1000);
        if (rc < 0)
            break;
        wait = in_flight > 0 ? 200 : (due > now ? due - now : 0);
        rc = receive_reply(pull, wait > 200 ? 200 : wait, &reply, &got);
        if (got && reply.envelope != NULL &&
            reply.envelope->request_id < first_id) {
            rc = 0; /* an earlier request's (a session's end) */
            pull->outcome->error[0] = '\0';
            got = false;
        }
        if (rc < 0 || !got) {
            reply_release(&reply);
            continue;
        }
        last_answer = now_ms();
        if (in_flight == 0)
            rc = fail(pull, CAIRN_EPROTO, "an answer nobody asked for");
        else if ((rc = take_frame(pull, offsets[head], &reply)) == 0)
            received += zmq_msg_size(&reply.frames[0]);
        head = (head + 1) % PULL_WINDOW;
        in_flight--;
        reply_release(&reply);
    }
    if (rc == 0)
        EVP_DigestFinal_ex(pull->sha, digest, &digest_len);
    EVP_MD_CTX_free(pull->sha);
    pull->sha = NULL;
    if (rc < 0)
        return rc;
    for (unsigned i = 0; i < digest_len && i < 20; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    if (end > pull->reply->start && strcmp(hex, pull->source_sha1) != 0)
        return fail(pull, CAIRN_EMISMATCH,
                    "SHA-1 of bytes %llu..%llu is %s here, %s at the source",
                    (unsigned long long)pull->reply->start,
                    (unsigned long long)end, hex,
                    pull->source_sha1[0] ? pull->source_sha1 : "(none sent)");
    return fsync(pull->fd) == 0
               ? 0
               : fail(pull, CAIRN_EIO, "fsync: %s", strerror(errno));
}

/*
 * Closes the session at the source without waiting (best effort: the
 * source drops idle sessions anyway; the answer is skipped later).
 */
static void
end_range(struct pull *pull)
{
    if (pull->reply == NULL)
        return;
    if (pull->socket != NULL)
        send_request(pull, CAIRN__KIND__TRANSFER_END, NULL, NULL, 0);
    cairn__pull_reply__free_unpacked(pull->reply, NULL);
    pull->reply = NULL;
}

/* --- installing ------------------------------------------------------------
 */

static int
digests_agree(struct pull *pull, const char *ours)
{
    const char *theirs = pull->reply->digest ? pull->reply->digest : "";

    snprintf(pull->outcome->digest, sizeof(pull->outcome->digest), "%s", ours);
    if (strcmp(ours, theirs) == 0)
        return 0;
    return fail(pull, CAIRN_EMISMATCH,
                "our copy's digest %s differs from the source's %s", ours,
                theirs);
}

/*
 * Sets path (and its index) aside as path.replaced-TIME (.index); drop:
 * then deletes them (once the new copy is recorded).
 */
static int
set_aside(const char *path, long now, bool drop)
{
    char *aside = NULL, *index = NULL, *index_aside = NULL;
    int rc = CAIRN_ENOMEM;

    if (asprintf(&aside, "%s.replaced-%ld", path, now) < 0 ||
        asprintf(&index, "%s.index", path) < 0 ||
        asprintf(&index_aside, "%s.replaced-%ld.index", path, now) < 0)
        goto out;
    rc = CAIRN_EIO;
    if (drop) {
        unlink(aside);
        unlink(index_aside);
        rc = 0;
        goto out;
    }
    if (rename(path, aside) < 0 && errno != ENOENT)
        goto out;
    if (rename(index, index_aside) < 0 && errno != ENOENT)
        goto out;
    rc = cairn_fsync_parent_dir(path);
out:
    free(aside);
    free(index);
    free(index_aside);
    return rc;
}

/*
 * The spool file is whole: it becomes a data file, rebuilt, verified,
 * compared, and only then replaces the user's current copy.
 */
static int
install_whole(struct pull *pull, struct cairn_catalog *catalog,
              const char *spool, const char *current)
{
    char *data_path = NULL, *index_path = NULL, digest[41] = "";
    char error[200] = "";
    long now = (long)time(NULL);
    int rc;

    if ((rc = node_transfer_data_path(pull->server, pull->options->userid,
                                      &data_path)) < 0)
        return fail(pull, rc, "cannot make a data file");
    if (rename(spool, data_path) < 0) {
        rc = fail(pull, CAIRN_EIO, "cannot move the copy into place: %s",
                  strerror(errno));
        goto out;
    }
    if ((rc = cairn_fsync_parent_dir(data_path)) < 0 ||
        (rc = node_transfer_rebuild_verify(data_path, digest, error,
                                           sizeof(error))) < 0) {
        rc = fail(pull, rc, "our copy does not verify: %s",
                  error[0] ? error : cairn_strerror(rc));
        goto out;
    }
    if ((rc = digests_agree(pull, digest)) < 0)
        goto out;
    if (current != NULL && (rc = set_aside(current, now, false)) < 0) {
        rc = fail(pull, rc, "cannot set %s aside", current);
        goto out;
    }
    if ((rc = cairn_catalog_set(catalog, pull->options->userid, data_path)) <
        0) {
        rc = fail(pull, rc, "cannot record the copy in the catalog");
        goto out;
    }
    if (current != NULL && pull->options->drop_replaced)
        set_aside(current, now, true);
    free(data_path);
    data_path = NULL; /* installed */
out:
    if (data_path != NULL) {
        unlink(data_path);
        if (asprintf(&index_path, "%s.index", data_path) >= 0)
            unlink(index_path);
    }
    free(index_path);
    free(data_path);
    return rc;
}

/*
 * Copies what the source has beyond our installed copy onto its end.
 * CAIRN_EAGAIN (nothing changed) when the source's file is not ours
 * grown: a whole copy is needed.
 */
static int
pull_tail(struct pull *pull, const char *current, size_t frame_size)
{
    struct cairn_reindex_result result;
    struct cairn_store *store = NULL;
    char digest[41] = "", error[200] = "";
    uint64_t end;
    int rc;

    if ((rc = cairn_store_open(current, 0, &store)) < 0)
        return fail(pull, rc, "cannot open our copy %s", current);
    end = cairn_store_file_end(store);
    if ((pull->fd = open(current, O_RDWR | O_CLOEXEC)) < 0) {
        rc = fail(pull, CAIRN_EIO, "cannot open %s: %s", current,
                  strerror(errno));
        goto out;
    }
    if ((rc = begin_range(pull, end)) < 0)
        goto out;
    if (pull->reply->start != end || end == 0) {
        rc = CAIRN_EAGAIN; /* compacted there, or ours differs */
        goto out;
    }
    pull->outcome->resumed = true;
    if ((rc = stream_range(pull, frame_size)) < 0)
        goto out;
    if ((rc = cairn_store_index_appended(store, &result)) < 0) {
        rc = fail(pull, rc, "the appended bytes do not index");
        goto out;
    }
    /* the new chunks were inflated and checked as they were indexed; the
     * last one's checksum against its row is Cyrus's cheap check */
    if ((pull->bytes > 0 &&
         (rc = cairn_store_verify(store, CAIRN_VERIFY_LAST_CHECKSUM, error,
                                  sizeof(error))) < 0) ||
        (rc = node_state_digest(store, digest)) < 0) {
        rc = fail(pull, rc, "our copy does not verify: %s",
                  error[0] ? error : cairn_strerror(rc));
        goto out;
    }
    if ((rc = digests_agree(pull, digest)) < 0)
        rc = CAIRN_EAGAIN; /* ours held something else: copy it whole */
out:
    if (pull->fd >= 0)
        close(pull->fd);
    pull->fd = -1;
    cairn_store_close(store);
    return rc;
}

/* A whole copy into the spool, resumed from a partial one if it fits. */
static int
pull_whole(struct pull *pull, struct cairn_catalog *catalog,
           const char *current, size_t frame_size)
{
    char *spool = NULL;
    struct stat st;
    int rc;

    if (asprintf(&spool, "%s/pull-%s", pull->server->spool_dir,
                 pull->options->userid) < 0)
        return fail(pull, CAIRN_ENOMEM, "out of memory");
    if (pull->options->whole)
        unlink(spool);
    if ((pull->fd = open(spool, O_RDWR | O_CREAT | O_CLOEXEC,
                         cairn_created_file_mode())) < 0 ||
        fstat(pull->fd, &st) < 0) {
        rc =
            fail(pull, CAIRN_EIO, "cannot open %s: %s", spool, strerror(errno));
        goto out;
    }
    if ((rc = begin_range(pull, (uint64_t)st.st_size)) < 0)
        goto out;
    pull->outcome->resumed = pull->reply->start > 0;
    if (ftruncate(pull->fd, (off_t)pull->reply->start) < 0) {
        rc = fail(pull, CAIRN_EIO, "cannot cut %s: %s", spool, strerror(errno));
        goto out;
    }
    if ((rc = stream_range(pull, frame_size)) < 0)
        goto out;
    close(pull->fd);
    pull->fd = -1;
    rc = install_whole(pull, catalog, spool, current);
out:
    if (pull->fd >= 0)
        close(pull->fd);
    pull->fd = -1;
    free(spool);
    return rc;
}

/* Whether the scrub found userid damaged here (never extended then). */
static bool
damaged(struct cairn_catalog *catalog, const char *userid)
{
    char *damage = NULL;
    int64_t checked = 0;
    bool is_damaged =
        cairn_catalog_get_scrubbed(catalog, userid, &checked, &damage) == 0 &&
        damage != NULL;

    free(damage);
    return is_damaged;
}

int
node_pull_run(const struct cairn_node_server *server,
              const struct pull_options *options, struct pull_outcome *outcome)
{
    struct pull pull = {
        .server = server, .options = options, .outcome = outcome, .fd = -1};
    struct cairn_catalog *catalog = NULL;
    char *catalog_path = NULL, *current = NULL, *installed = NULL;
    size_t frame_size = server->settings.max_frame;
    uint64_t started = now_ms();
    struct stat st;
    int rc;

    memset(outcome, 0, sizeof(*outcome));
    if (asprintf(&catalog_path, "%s/catalog.db", server->settings.data_dir) <
        0) {
        catalog_path = NULL;
        rc = fail(&pull, CAIRN_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = cairn_catalog_open(catalog_path, &catalog)) < 0) {
        rc = fail(&pull, rc, "cannot open the catalog");
        goto out;
    }
    rc = cairn_catalog_lookup(catalog, options->userid, &current);
    if (rc < 0 && rc != CAIRN_ENOENT) {
        rc = fail(&pull, rc, "cannot read the catalog");
        goto out;
    }
    if ((rc = connect_source(&pull)) < 0)
        goto out;
    rc = CAIRN_EAGAIN;
    if (current != NULL && !options->whole &&
        !damaged(catalog, options->userid)) {
        rc = pull_tail(&pull, current, frame_size);
        end_range(&pull);
    }
    if (rc == CAIRN_EAGAIN) {
        outcome->error[0] = '\0';
        outcome->resumed = false;
        rc = pull_whole(&pull, catalog, current, frame_size);
        end_range(&pull);
    }
    outcome->bytes = pull.bytes;
    if (rc == 0 &&
        cairn_catalog_lookup(catalog, options->userid, &installed) == 0 &&
        stat(installed, &st) == 0)
        outcome->file_bytes = (uint64_t)st.st_size;
out:
    outcome->elapsed_ms = now_ms() - started;
    if (rc < 0 && outcome->error[0] == '\0')
        fail(&pull, rc, "%s", cairn_strerror(rc));
    end_range(&pull);
    disconnect_source(&pull);
    cairn_catalog_free(catalog);
    free(catalog_path);
    free(installed);
    free(current);
    return rc;
}

/* --- the entry points ------------------------------------------------------
 */

int
node_pull_user(struct cairn_node_server *server, const char *userid,
               const char *peer_node, uint64_t rate_bytes_per_second,
               struct node_pull_result *result)
{
    static const atomic_bool running = false;
    struct pull_options options = {.userid = userid,
                                   .peer = peer_node,
                                   .rate = rate_bytes_per_second,
                                   .whole = true,
                                   .stop = &running};
    struct pull_outcome outcome;
    int rc;

    memset(result, 0, sizeof(*result));
    options.endpoint = node_heal_peer_endpoint(server, peer_node);
    if (options.endpoint == NULL) {
        snprintf(result->error, sizeof(result->error),
                 "pull of %s: node %s is not a peer of this node in the "
                 "config",
                 userid, peer_node);
        return CAIRN_ENOENT;
    }
    rc = node_pull_run(server, &options, &outcome);
    result->bytes = outcome.bytes;
    snprintf(result->digest, sizeof(result->digest), "%s", outcome.digest);
    snprintf(result->error, sizeof(result->error), "%s", outcome.error);
    return rc;
}
