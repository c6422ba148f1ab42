/*
 * server_apply.c - the node daemon's per-user work: the sequence check,
 * APPLY (frame 1 parsed with its FILE nodes pointing into the request's
 * spool file, bodies streamed from there into the store), and the state
 * answers to GET.
 */
#include "common.h"
#include "server_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define BODY_PIECE (64 * 1024)
#define MAX_ITEM_BYTES (64u * 1024 * 1024)
#define MAX_STATE_ITEMS 4000000u

/* csync codes (enum cairn_csync_code in proto/csync.h). */
#define CSYNC_MAILBOX_NONEXISTENT 2
#define CSYNC_MAILBOX_LOCKED 3
#define CSYNC_PROTOCOL_ERROR 9

static const unsigned char zeros[BODY_PIECE];

/* --- spool ---------------------------------------------------------------- */

static int
open_spool_file(struct cairn_node_server *server, struct node_request *request)
{
    char *path = NULL;
    int rc = 0;

    if (asprintf(&path, "%s/body-XXXXXX", server->spool_dir) < 0)
        return CAIRN_ENOMEM;
    request->spool_fd = mkstemp(path);
    /* Unlinked at once: a crash leaves no spool file behind. */
    if (request->spool_fd >= 0)
        unlink(path);
    else
        rc = errno == ENOSPC ? CAIRN_ENOSPACE : CAIRN_EIO;
    free(path);
    /* What was kept in memory so far goes first. */
    if (rc == 0 && request->memory.len > 0 &&
        (rc = cairn_write_all(request->spool_fd, request->memory.data,
                              request->memory.len)) == 0)
        cairn_buf_release(&request->memory);
    return rc;
}

int
node_spool_write(struct cairn_node_server *server, struct node_request *request,
                 const void *data, size_t len)
{
    int rc;

    if (request->spool_fd < 0 && !request->envelope->more &&
        !request->envelope->continuation &&
        request->memory.len + len <= request->memory.max) {
        if ((rc = cairn_buf_append(&request->memory, data, len)) < 0)
            return rc;
        request->spooled += len;
        return 0;
    }
    if (request->spool_fd < 0 && (rc = open_spool_file(server, request)) < 0)
        return rc;
    if ((rc = cairn_write_all(request->spool_fd, data, len)) < 0)
        return rc;
    request->spooled += len;
    return 0;
}

/* Where one body sits in the spool file (the FILE node's handle). */
struct spool_body {
    uint64_t offset;
    uint64_t size;
};

struct splice {
    uint64_t next_offset;
    uint64_t pending; /* body bytes the parser expects now */
};

static int
splice_begin(void *ctx, const char *partition, const char *guid, uint64_t size,
             void **handle)
{
    struct splice *splice = ctx;
    struct spool_body *body = malloc(sizeof(*body));

    (void)partition;
    (void)guid;
    if (body == NULL)
        return CAIRN_ENOMEM;
    body->offset = splice->next_offset;
    body->size = size;
    splice->next_offset += size;
    splice->pending = size;
    *handle = body;
    return 0;
}

static int
splice_data(void *ctx, void *handle, const void *bytes, size_t len)
{
    (void)ctx;
    (void)handle;
    (void)bytes;
    (void)len;
    return 0;
}

static void
splice_release(void *ctx, void *handle)
{
    (void)ctx;
    free(handle);
}

/* Feeds the parser the placeholder of a body that is in the spool. */
static int
feed_placeholder(struct cairn_dlist_parser *parser, struct splice *splice)
{
    int rc = CAIRN_EAGAIN;

    while (splice->pending > 0) {
        size_t n = splice->pending < BODY_PIECE ? splice->pending : BODY_PIECE;
        size_t used = 0;

        rc = cairn_dlist_parser_feed(parser, zeros, n, &used);
        if (rc < 0 && rc != CAIRN_EAGAIN)
            return rc;
        splice->pending -= used;
        if (used < n)
            return CAIRN_EPARSE;
    }
    return rc;
}

/*
 * Parses frame 1. The bodies are not in it: after each file literal header
 * (which ends a line) the parser is fed the body's length of placeholder
 * bytes, and the FILE node's handle says where the body sits in the spool.
 * Returns the owned tree and the total body bytes the tree names.
 */
static int
parse_frame(const char *text, size_t len, struct cairn_dlist **tree,
            uint64_t *body_bytes)
{
    struct splice splice = {0};
    const struct cairn_dlist_file_sink sink = {splice_begin, splice_data, NULL,
                                               splice_release, &splice};
    struct cairn_dlist_parser *parser = NULL;
    size_t at = 0;
    int rc;

    *tree = NULL;
    if ((rc = cairn_dlist_parser_new(NULL, &sink, CAIRN_DLIST_PARSE_KEY,
                                     &parser)) < 0)
        return rc;
    rc = CAIRN_EAGAIN;
    while (at < len) {
        const char *newline = memchr(text + at, '\n', len - at);
        size_t piece = newline ? (size_t)(newline - (text + at)) + 1 : len - at;
        size_t used = 0;

        if (rc == 0) { /* a complete value followed by more bytes */
            rc = CAIRN_EPARSE;
            goto out;
        }
        rc = cairn_dlist_parser_feed(parser, text + at, piece, &used);
        if ((rc < 0 && rc != CAIRN_EAGAIN) || used < piece) {
            rc = rc < 0 && rc != CAIRN_EAGAIN ? rc : CAIRN_EPARSE;
            goto out;
        }
        at += piece;
        if (splice.pending > 0 &&
            (rc = feed_placeholder(parser, &splice)) < 0 && rc != CAIRN_EAGAIN)
            goto out;
    }
    if (rc == CAIRN_EAGAIN && (rc = cairn_dlist_parser_finish(parser)) < 0)
        goto out;
    *tree = cairn_dlist_parser_take(parser);
    *body_bytes = splice.next_offset;
    rc = *tree ? 0 : CAIRN_EPARSE;
out:
    cairn_dlist_parser_free(parser);
    return rc;
}

int
node_read_spooled_body(void *ctx, const struct cairn_dlist *file,
                       int (*put)(void *put_ctx, const void *data, size_t len),
                       void *put_ctx)
{
    const struct node_request *request = ctx;
    const char *partition, *guid;
    struct spool_body *body;
    uint64_t size, done = 0;
    void *handle;
    char *piece = NULL;
    int rc = 0;

    if (!cairn_dlist_file_info(file, &partition, &guid, &size, &handle) ||
        handle == NULL)
        return CAIRN_EINVAL;
    body = handle;
    if (request->spool_fd < 0) {
        if (body->offset + body->size > request->memory.len)
            return CAIRN_EIO;
        for (done = 0; done < body->size && rc == 0; done += BODY_PIECE)
            rc =
                put(put_ctx, request->memory.data + body->offset + done,
                    body->size - done < BODY_PIECE ? (size_t)(body->size - done)
                                                   : BODY_PIECE);
        return rc;
    }
    if (body->size > 0 && (piece = malloc(BODY_PIECE)) == NULL)
        return CAIRN_ENOMEM;
    while (done < body->size && rc == 0) {
        uint64_t left = body->size - done;
        size_t want = left < BODY_PIECE ? (size_t)left : BODY_PIECE;
        ssize_t got =
            pread(request->spool_fd, piece, want, (off_t)(body->offset + done));

        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            rc = CAIRN_EIO;
            break;
        }
        done += (uint64_t)got;
        rc = put(put_ctx, piece, (size_t)got);
    }
    free(piece);
    return rc;
}

/* --- APPLY ------------------------------------------------------------------
 */

static bool
accepted_not_stored(const char *name)
{
    static const char *const names[] = {"QUOTA", "ACTIVATE_SIEVE",
                                        "UNACTIVATE_SIEVE"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

static int
join_round(struct cairn_node_server *server, struct node_user *user)
{
    if (user->in_round)
        return 0;
    if (server->round_count == server->round_cap) {
        size_t cap = server->round_cap ? server->round_cap * 2 : 64;
        struct node_user **users =
            realloc(server->round_users, cap * sizeof(*users));

        if (users == NULL)
            return CAIRN_ENOMEM;
        server->round_users = users;
        server->round_cap = cap;
    }
    server->round_users[server->round_count++] = user;
    user->in_round = true;
    return 0;
}

/* Puts request among the user's updates that the next commit ACKs. */
static int
await_commit(struct cairn_node_server *server, struct node_request *request)
{
    struct node_user *user = request->user;
    int rc;

    if ((rc = join_round(server, user)) < 0)
        return rc;
    request->next = NULL;
    if (user->applied_tail)
        user->applied_tail->next = request;
    else
        user->applied = request;
    user->applied_tail = request;
    return 0;
}

/* RESERVE: the GUIDs the store lacks, as backupd's "MISSING (...)". */
static int
find_missing(struct node_request *request, const struct cairn_dlist *record)
{
    const struct cairn_dlist *guids = NULL;

    if (!cairn_dlist_get_list(record, "GUID", &guids))
        return 0;
    if ((request->missing = cairn_dlist_new_list("MISSING")) == NULL)
        return CAIRN_ENOMEM;
    return cairn_store_find_missing(request->user->store, guids,
                                    request->missing);
}

int64_t
node_update_time(const struct node_request *request)
{
    int64_t stamp = request->envelope->update_time;

    return stamp > 0 ? stamp : (int64_t)time(NULL);
}

/* The refusal's words: the reply is sent before the next write. */
static char disk_text[160];

/*
 * Whether the data directory has [node] reserve free: below it a write
 * is refused before anything of it is written (*text says how far
 * below), so the disk never fills under the store's feet in normal use.
 */
static bool
disk_has_room(struct cairn_node_server *server, const char **text)
{
    struct statvfs fs;
    uint64_t free_bytes;

    if (server->settings.reserve == 0 ||
        statvfs(server->settings.data_dir, &fs) != 0)
        return true;
    free_bytes = (uint64_t)fs.f_bavail * fs.f_frsize;
    if (free_bytes >= server->settings.reserve)
        return true;
    snprintf(disk_text, sizeof(disk_text),
             "disk below reserve: %llu bytes free, reserve %llu; nothing "
             "stored",
             (unsigned long long)free_bytes,
             (unsigned long long)server->settings.reserve);
    *text = disk_text;
    return false;
}

/*
 * APPLY UNUSER: the store records the deletions it implies (every live
 * mailbox, subscription and script), so the data expires by retention.
 * A user the node does not hold has nothing to delete.
 */
static int
apply_unuser(struct cairn_node_server *server, struct node_user *user,
             const struct cairn_dlist *record, int64_t ts, const char **text)
{
    const char *userid = NULL;
    int rc;

    if (!cairn_dlist_as_atom(record, &userid) || userid == NULL) {
        *text = "malformed UNUSER";
        return CAIRN_EPROTO;
    }
    if ((rc = node_user_open(server, user, false)) == CAIRN_ENOENT)
        return 0;
    if (rc < 0) {
        *text = "cannot open the user's backup";
        return rc;
    }
    if ((rc = cairn_store_unuser(user->store, userid, ts)) < 0) {
        *text = "the store refused UNUSER";
        cairn_store_abort(user->store);
        node_answer_applied(server, user, rc);
    }
    return rc;
}

/* Appends the record; on failure returns the code and a reply text. */
static int
append_record(struct cairn_node_server *server, struct node_request *request,
              const char **text, unsigned *csync_code, bool *background)
{
    const struct cairn_store_bodies bodies = {node_read_spooled_body, request};
    struct node_user *user = request->user;
    struct cairn_dlist *record = NULL;
    uint64_t body_bytes = 0;
    const char *name;
    int rc;

    if (!disk_has_room(server, text))
        return CAIRN_ENOSPACE;
    if ((rc = parse_frame(request->dlist, request->dlist_len, &record,
                          &body_bytes)) < 0) {
        *text = "malformed dlist";
        *csync_code = CSYNC_PROTOCOL_ERROR;
        goto out;
    }
    name = cairn_dlist_name(record);
    if (body_bytes != request->spooled) {
        *text = "message bodies do not match the FILE sizes";
        rc = CAIRN_EPROTO;
        goto out;
    }
    if (request->envelope->key && request->envelope->key[0] &&
        strcmp(request->envelope->key, name) != 0) {
        *text = "envelope key differs from the dlist";
        rc = CAIRN_EPROTO;
        goto out;
    }
    if (strcmp(name, "UNUSER") == 0) {
        rc =
            apply_unuser(server, user, record, node_update_time(request), text);
        goto out;
    }
    if (!cairn_store_logs_record(name)) {
        if (accepted_not_stored(name))
            goto out; /* ACKed in order, nothing stored (as backupd) */
        *text = "unknown APPLY key";
        *csync_code = CSYNC_PROTOCOL_ERROR;
        rc = CAIRN_EPROTO;
        goto out;
    }
    if ((rc = node_user_open(server, user, true)) < 0) {
        *text = "cannot open the user's backup";
        goto out;
    }
    if (strcmp(name, "RESERVE") == 0 &&
        (rc = find_missing(request, record)) < 0)
        goto out;
    if (node_background_wanted(server, request)) {
        /* The thread gets the store alone: nothing of it in a round. */
        if (user->in_round)
            node_commit_round(server);
        if (node_background_start(server, request, record) == 0) {
            *background = true;
            return 0; /* the record is the worker's now */
        }
    }
    rc = cairn_store_append(user->store, node_update_time(request), record,
                            &bodies);
    if (rc < 0) {
        *text = rc == CAIRN_EMISMATCH ? "message body does not match its GUID"
                                      : "the store refused the update";
        if (rc != CAIRN_EPROTO && rc != CAIRN_EMISMATCH && rc != CAIRN_EINVAL) {
            /* The store's uncommitted work is gone: fail it too. */
            cairn_store_abort(user->store);
            node_answer_applied(server, user, rc);
        }
    }
out:
    cairn_dlist_free(record);
    return rc;
}

/*
 * Notes a sequenced update in the index, in the transaction that commits
 * it, so that after a restart its resend is re-acknowledged. A failure
 * only costs that protection (logged).
 */
static void
record_sequence(struct cairn_node_server *server,
                const struct node_request *request)
{
    uint64_t sequence = request->envelope->sequence;
    int rc;

    if (sequence == 0)
        return;
    if ((rc = cairn_store_set_sequence(request->user->store, sequence)) < 0)
        node_event(server, CAIRN_LOG_WARN, request,
                   "cannot record sequence %llu: %s",
                   (unsigned long long)sequence, cairn_strerror(rc));
}

void
node_apply(struct cairn_node_server *server, struct node_request *request)
{
    struct node_user *user = request->user;
    uint64_t sequence = request->envelope->sequence;
    const char *text = NULL;
    unsigned csync_code = 0;
    bool background = false;
    int rc;

    if (node_user_quarantined(server, user)) {
        /* nothing is appended to a damaged file (server_scrub.c) */
        node_reply_quarantined(server, request);
        node_request_free(request);
        return;
    }
    if (sequence > 0 && !user->has_sequence && user->store == NULL)
        node_user_open(server, user, false); /* its recorded sequence */
    if (sequence > 1 && sequence < user->last_sequence &&
        sequence <= user->restored_sequence) {
        /* Committed before a restart (its ACK may have been lost): answer
         * again, never apply twice. */
        if (request->failure == 0 && await_commit(server, request) == 0)
            return;
        node_reply_error(server, request, CAIRN_ENOMEM, 0, NULL);
        node_request_free(request);
        return;
    }
    if (sequence > 0 && user->has_sequence && sequence == user->last_sequence) {
        /* A replay: answer as the original was, never apply twice. */
        if (user->last_outcome < 0) {
            node_reply_error(server, request, CAIRN_EPROTO, 0,
                             "replay of a failed update");
        } else if (request->failure == 0 &&
                   await_commit(server, request) == 0) {
            return;
        } else {
            node_reply_error(server, request, CAIRN_ENOMEM, 0, NULL);
        }
        node_request_free(request);
        return;
    }
    if (sequence > 0 && user->has_sequence && sequence != 1 &&
        !request->envelope->stream_start &&
        sequence != user->last_sequence + 1) {
        char message[96];

        snprintf(message, sizeof(message), "sequence gap: expected %llu",
                 (unsigned long long)user->last_sequence + 1);
        node_reply_error(server, request, CAIRN_EPROTO, 0, message);
        node_request_free(request);
        return;
    }
    if (sequence > 0 && user->has_sequence && sequence != 1 &&
        !request->envelope->stream_start &&
        sequence == user->last_sequence + 1 && user->last_outcome < 0) {
        /*
         * The update before it in this stream failed: this one may need
         * it (an APPLY MAILBOX naming the bodies of a failed APPLY
         * MESSAGE, which left the node without them while its GETs
         * showed the mailbox current). The router starts a new stream
         * after a failure; what it had sent already is refused, in
         * order, until then.
         */
        char message[160];

        snprintf(message, sizeof(message),
                 "an earlier update of this user failed here (%s); "
                 "nothing stored",
                 cairn_strerror(user->last_outcome));
        user->last_sequence = sequence;
        node_reply_error(server, request, CAIRN_ESTATE, CSYNC_MAILBOX_LOCKED,
                         message);
        node_request_free(request);
        return;
    }
    if (sequence > 0) {
        user->has_sequence = true;
        user->last_sequence = sequence;
    }
    rc = request->failure;
    text = request->failure_text;
    if (rc == 0 && (rc = append_record(server, request, &text, &csync_code,
                                       &background)) == 0) {
        if (background)
            return; /* node_apply_finished() completes it */
        record_sequence(server, request);
        rc = await_commit(server, request);
    }
    if (sequence > 0)
        user->last_outcome = rc;
    if (rc == CAIRN_ENOSPACE) {
        /* Retryable: sync_client tries the user again later. */
        csync_code = CSYNC_MAILBOX_LOCKED;
        if (text == NULL || text[0] == '\0')
            text = "disk full (ENOSPC); nothing stored";
    }
    if (rc < 0) {
        node_reply_error(server, request, rc, csync_code, text);
        node_request_free(request);
        return;
    }
    if (server->settings.group_commit_ms == 0)
        node_commit_round(server);
}

void
node_apply_finished(struct cairn_node_server *server,
                    struct node_request *request, int rc)
{
    struct node_user *user = request->user;
    uint64_t sequence = request->envelope->sequence;

    if (rc < 0 && rc != CAIRN_EPROTO && rc != CAIRN_EMISMATCH &&
        rc != CAIRN_EINVAL) {
        cairn_store_abort(user->store);
        node_answer_applied(server, user, rc);
    }
    if (rc == 0) {
        record_sequence(server, request);
        rc = await_commit(server, request);
    }
    if (sequence > 0 && sequence == user->last_sequence)
        user->last_outcome = rc;
    if (rc < 0) {
        node_reply_error(server, request, rc, 0,
                         rc == CAIRN_EMISMATCH
                             ? "message body does not match its GUID"
                             : "the store refused the update");
        node_request_free(request);
    }
}

/* --- GET
 * ---------------------------------------------------------------------- */

struct frame_list {
    struct cairn_buf *frames;
    size_t count, cap;
};

int
node_print_item(const struct cairn_dlist *item, struct cairn_buf *out)
{
    return cairn_dlist_print(item, true, out, NULL);
}

static int
collect_item(void *ctx, const struct cairn_dlist *item)
{
    struct frame_list *list = ctx;

    if (list->count == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 16;
        struct cairn_buf *frames;

        if (cap > MAX_STATE_ITEMS)
            return CAIRN_ETOOBIG;
        if ((frames = realloc(list->frames, cap * sizeof(*frames))) == NULL)
            return CAIRN_ENOMEM;
        list->frames = frames;
        list->cap = cap;
    }
    cairn_buf_init(&list->frames[list->count], MAX_ITEM_BYTES);
    list->count++;
    return node_print_item(item, &list->frames[list->count - 1]);
}

static void
frame_list_release(struct frame_list *list)
{
    for (size_t i = 0; i < list->count; i++)
        cairn_buf_release(&list->frames[i]);
    free(list->frames);
}

static int
answer_get(struct cairn_store *store, const struct cairn_dlist *value,
           struct frame_list *list)
{
    const char *name = cairn_dlist_name(value), *mboxname;

    if (strcmp(name, "USER") == 0)
        return cairn_store_get_user(store, collect_item, list);
    if (strcmp(name, "META") == 0)
        return cairn_store_get_meta(store, collect_item, list);
    if (strcmp(name, "FULLMAILBOX") == 0) {
        if (!cairn_dlist_as_atom(value, &mboxname) || mboxname == NULL)
            return CAIRN_EPROTO;
        return cairn_store_get_fullmailbox(store, mboxname, collect_item, list);
    }
    if (strcmp(name, "MAILBOXES") == 0) {
        const struct cairn_dlist *item;
        const char **names = NULL;
        size_t count = 0;
        int rc;

        names = calloc(cairn_dlist_count(value) + 1, sizeof(*names));
        if (names == NULL)
            return CAIRN_ENOMEM;
        for (item = cairn_dlist_first(value); item;
             item = cairn_dlist_next(item))
            if (cairn_dlist_as_atom(item, &names[count]) && names[count])
                count++;
        rc = cairn_store_get_mailboxes(store, names, count, collect_item, list);
        free(names);
        return rc;
    }
    if (strcmp(name, "UNIQUEIDS") == 0)
        return 0; /* backupd accepts it and answers nothing */
    return CAIRN_ENOTSUP;
}

void
node_state(struct cairn_node_server *server, struct node_request *request)
{
    struct frame_list list = {0};
    struct cairn_dlist *value = NULL;
    uint64_t body_bytes = 0;
    int rc;

    if (request->user->in_round)
        node_commit_round(server);
    if (node_user_quarantined(server, request->user)) {
        node_reply_quarantined(server, request);
        goto out;
    }
    if ((rc = parse_frame(request->dlist, request->dlist_len, &value,
                          &body_bytes)) < 0) {
        node_reply_error(server, request, rc, CSYNC_PROTOCOL_ERROR,
                         "malformed GET");
        goto out;
    }
    if ((rc = node_user_open(server, request->user, false)) < 0) {
        if (rc == CAIRN_ENOENT)
            node_reply_error(server, request, rc, CSYNC_MAILBOX_NONEXISTENT,
                             "Mailbox does not exist");
        else
            node_reply_error(server, request, rc, 0, NULL);
        goto out;
    }
    rc = answer_get(request->user->store, value, &list);
    if (rc == CAIRN_ENOENT)
        node_reply_error(server, request, rc, CSYNC_MAILBOX_NONEXISTENT,
                         "Mailbox does not exist");
    else if (rc == CAIRN_ENOTSUP || rc == CAIRN_EPROTO)
        node_reply_error(server, request, rc, CSYNC_PROTOCOL_ERROR,
                         "unknown or malformed GET");
    else if (rc < 0)
        node_reply_error(server, request, rc, 0, NULL);
    else
        node_reply(server, request, CAIRN__KIND__STATE_REPLY, list.frames,
                   list.count, false);
out:
    frame_list_release(&list);
    cairn_dlist_free(value);
    node_request_free(request);
}
