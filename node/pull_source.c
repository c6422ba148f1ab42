/*
 * pull_source.c - the sending side of a node-to-node pull (node/pull.c is
 * the receiving side): another node (CURVE role peer) asks for a range of
 * a user's data file and gets it in frames, several requests in flight.
 *
 *   TRANSFER_BEGIN "SEND", frame 1 = PullOffer -> TRANSFER_BEGIN, frame 1 =
 *       PullReply: the range [start, end) and a session. end is the file's
 *       size after the user's pending appends are committed, and the
 *       digest is the user's state digest at that same moment (both are
 *       taken in one turn of the loop), so a copy of [0, end) must give
 *       that digest even while the user keeps writing. start is the
 *       puller's offset when the last check_bytes before it equal ours
 *       (an append-only file: the puller holds our prefix), else 0.
 *   TRANSFER_CHUNK "SEND", session, key = offset -> one frame of up to
 *       max_frame bytes; offsets must follow each other (one DEALER keeps
 *       the order of its requests); the frame that reaches end is followed
 *       by a second frame, the SHA-1 (hex) of [start, end) as read here.
 *   TRANSFER_END "SEND", session -> ACK; the session is closed.
 *
 * The file is opened once per session, so what is read is the file the
 * range was measured on; the user is not compacted while it is read
 * (node_transfer_hold). A session idle for SESSION_IDLE_MS is dropped.
 */
#include "common.h"
#include "server_int.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SESSION_IDLE_MS (120 * 1000)
#define MAX_SESSIONS 256

struct node_pull_session {
    struct node_pull_session *next;
    uint64_t id;
    char *userid;
    int fd;
    uint64_t start, end, next_offset;
    EVP_MD_CTX *sha;
    uint64_t last_used_ms;
};

static void
session_free(struct node_pull_session *session)
{
    if (session == NULL)
        return;
    if (session->fd >= 0)
        close(session->fd);
    EVP_MD_CTX_free(session->sha);
    free(session->userid);
    free(session);
}

/* Drops idle sessions (all of them with all: shutdown). */
void
node_pull_sessions_trim(struct cairn_node_server *server, bool all)
{
    uint64_t now = cairn_loop_now_ms();

    for (struct node_pull_session **at = &server->pull_sessions; *at;) {
        struct node_pull_session *session = *at;

        if (all || now - session->last_used_ms > SESSION_IDLE_MS) {
            *at = session->next;
            server->pull_session_count--;
            session_free(session);
        } else {
            at = &session->next;
        }
    }
}

static struct node_pull_session *
find_session(struct cairn_node_server *server, uint64_t id, const char *userid)
{
    for (struct node_pull_session *session = server->pull_sessions; session;
         session = session->next)
        if (session->id == id && strcmp(session->userid, userid) == 0)
            return session;
    return NULL;
}

int
node_pull_range_sha1(int fd, uint64_t from, uint64_t to, char hex[41])
{
    unsigned char buf[65536], digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    int rc = CAIRN_ENOMEM;

    if (sha == NULL || EVP_DigestInit_ex(sha, EVP_sha1(), NULL) != 1)
        goto out;
    rc = CAIRN_EIO;
    while (from < to) {
        size_t want = to - from > sizeof(buf) ? sizeof(buf) : to - from;
        ssize_t got = pread(fd, buf, want, (off_t)from);

        if (got <= 0)
            goto out;
        EVP_DigestUpdate(sha, buf, (size_t)got);
        from += (uint64_t)got;
    }
    EVP_DigestFinal_ex(sha, digest, &len);
    for (unsigned i = 0; i < len && i < 20; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    rc = 0;
out:
    EVP_MD_CTX_free(sha);
    return rc;
}

/* Whether our bytes [offset - check_bytes, offset) have SHA-1 check. */
static bool
prefix_matches(int fd, uint64_t size, const Cairn__PullOffer *offer)
{
    char hex[41] = "";

    if (offer->offset == 0 || offer->offset > size ||
        offer->check_bytes > offer->offset ||
        offer->check_bytes > NODE_PULL_CHECK_BYTES || offer->check_sha1 == NULL)
        return false;
    return node_pull_range_sha1(fd, offer->offset - offer->check_bytes,
                                offer->offset, hex) == 0 &&
           strcmp(hex, offer->check_sha1) == 0;
}

/* The user's state digest now (its store opened on the loop). */
static int
digest_now(struct cairn_node_server *server, const char *userid,
           char digest[41])
{
    struct node_user *user = NULL;
    int rc;

    if ((rc = node_user_get(server, userid, &user)) < 0 ||
        (rc = node_user_open(server, user, false)) < 0)
        return rc;
    return node_state_digest(user->store, digest);
}

static int
send_begin(struct cairn_node_server *server, struct node_request *request)
{
    const char *userid = request->envelope->user;
    Cairn__PullOffer *offer = NULL;
    Cairn__PullReply reply = CAIRN__PULL_REPLY__INIT;
    struct node_pull_session *session = NULL;
    char *data_path = NULL, digest[41] = "";
    struct cairn_buf frame;
    off_t size;
    int rc = CAIRN_EPARSE;

    cairn_buf_init(&frame, 4096);
    if (request->dlist == NULL ||
        (offer = cairn__pull_offer__unpack(NULL, request->dlist_len,
                                           (const uint8_t *)request->dlist)) ==
            NULL)
        goto out;
    node_pull_sessions_trim(server, false);
    rc = CAIRN_ETOOBIG;
    if (server->pull_session_count >= MAX_SESSIONS)
        goto out;
    rc = CAIRN_ENOMEM;
    if ((session = calloc(1, sizeof(*session))) == NULL)
        goto out;
    session->fd = -1;
    if ((session->userid = strdup(userid)) == NULL)
        goto out;
    /* Pending appends committed, no compaction from now on: the file and
     * the index agree, and stay as they are but for appends. */
    if ((rc = node_transfer_hold(server, userid)) < 0 ||
        (rc = cairn_catalog_lookup(server->catalog, userid, &data_path)) < 0 ||
        (rc = digest_now(server, userid, digest)) < 0)
        goto out;
    rc = CAIRN_EIO;
    if ((session->fd = open(data_path, O_RDONLY | O_CLOEXEC)) < 0 ||
        (size = lseek(session->fd, 0, SEEK_END)) < 0)
        goto out;
    session->end = (uint64_t)size;
    if (prefix_matches(session->fd, session->end, offer))
        session->start = offer->offset;
    session->next_offset = session->start;
    if ((session->sha = EVP_MD_CTX_new()) == NULL ||
        EVP_DigestInit_ex(session->sha, EVP_sha1(), NULL) != 1) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    session->id = ++server->pull_session_last;
    session->last_used_ms = cairn_loop_now_ms();
    reply.session = session->id;
    reply.start = session->start;
    reply.end = session->end;
    reply.digest = digest;
    if ((rc = cairn_buf_reserve(
             &frame, cairn__pull_reply__get_packed_size(&reply) + 1)) < 0)
        goto out;
    frame.len = cairn__pull_reply__pack(&reply, (uint8_t *)frame.data);
    session->next = server->pull_sessions;
    server->pull_sessions = session;
    server->pull_session_count++;
    session = NULL;
    rc = node_reply(server, request, CAIRN__KIND__TRANSFER_BEGIN, &frame, 1,
                    true);
out:
    session_free(session);
    if (offer)
        cairn__pull_offer__free_unpacked(offer, NULL);
    cairn_buf_release(&frame);
    free(data_path);
    return rc;
}

static int
send_chunk(struct cairn_node_server *server, struct node_request *request)
{
    struct node_pull_session *session = find_session(
        server, request->envelope->transfer_session, request->envelope->user);
    struct cairn_buf frames[2];
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    uint64_t offset = 0, want;
    size_t count = 1;
    ssize_t got;
    int rc;

    cairn_buf_init(&frames[0], server->settings.max_frame);
    cairn_buf_init(&frames[1], 64);
    if (session == NULL) {
        rc = CAIRN_ENOENT;
        goto out;
    }
    if ((rc = cairn_parse_u64_str(
             request->envelope->key ? request->envelope->key : "", 0,
             UINT64_MAX / 2, &offset)) < 0)
        goto out;
    rc = CAIRN_EPROTO;
    if (offset != session->next_offset || offset >= session->end)
        goto out;
    want = session->end - offset;
    if (want > server->settings.max_frame)
        want = server->settings.max_frame;
    if ((rc = cairn_buf_reserve(&frames[0], (size_t)want)) < 0 ||
        (rc = cairn_buf_reserve(&frames[1], 41)) < 0)
        goto out;
    got = pread(session->fd, frames[0].data, (size_t)want, (off_t)offset);
    rc = CAIRN_EIO;
    if (got != (ssize_t)want)
        goto out;
    frames[0].len = (size_t)got;
    EVP_DigestUpdate(session->sha, frames[0].data, frames[0].len);
    session->next_offset += (uint64_t)got;
    session->last_used_ms = cairn_loop_now_ms();
    node_transfer_hold_touch(server, session->userid);
    if (session->next_offset == session->end) {
        EVP_DigestFinal_ex(session->sha, digest, &digest_len);
        for (int i = 0; i < 20; i++)
            snprintf(frames[1].data + 2 * i, 3, "%02x", digest[i]);
        frames[1].len = 40;
        count = 2;
    }
    rc = node_reply(server, request, CAIRN__KIND__TRANSFER_CHUNK, frames, count,
                    false);
out:
    cairn_buf_release(&frames[0]);
    cairn_buf_release(&frames[1]);
    return rc;
}

static int
send_end(struct cairn_node_server *server, struct node_request *request)
{
    for (struct node_pull_session **at = &server->pull_sessions; *at;
         at = &(*at)->next) {
        struct node_pull_session *session = *at;

        if (session->id == request->envelope->transfer_session &&
            strcmp(session->userid, request->envelope->user) == 0) {
            *at = session->next;
            server->pull_session_count--;
            session_free(session);
            break;
        }
    }
    return node_reply(server, request, CAIRN__KIND__ACK, NULL, 0, false);
}

int
node_pull_source(struct cairn_node_server *server, struct node_request *request)
{
    switch (request->envelope->kind) {
    case CAIRN__KIND__TRANSFER_BEGIN:
        return send_begin(server, request);
    case CAIRN__KIND__TRANSFER_CHUNK:
        return send_chunk(server, request);
    case CAIRN__KIND__TRANSFER_END:
        return send_end(server, request);
    default:
        return CAIRN_EPROTO;
    }
}
