/*
 * transfer.c - the node's side of moving a user between nodes (rebalance):
 * export a user's data file in pieces, import one into a new file that is
 * rebuilt and verified before it enters the catalog, and remove a user's
 * copy once it has moved away. cairnctl relays the bytes between the two
 * nodes (the source never connects to the target), which keeps every
 * request a short, stateless one-message exchange: a relay that dies
 * leaves at most a partial file in the spool that the next IMPORT
 * truncates.
 *
 * Requests (envelope verb; the user in envelope.user):
 *   TRANSFER_BEGIN "EXPORT"  -> TRANSFER_BEGIN, body TransferBegin (size and
 *                               SHA-1 of the data file as it is now)
 *   TRANSFER_CHUNK "READ"    key = decimal offset -> TRANSFER_CHUNK with one
 *                               frame of up to max_frame bytes from there
 *   TRANSFER_BEGIN "IMPORT"  -> ACK; starts (truncates) the spool file;
 *                               CAIRN_EEXIST when the user is held already
 *   TRANSFER_CHUNK "WRITE"   key = decimal offset, frame 1 = bytes -> ACK
 *   TRANSFER_END "IMPORT"    frame 1 = TransferBegin (size, SHA-1) -> ACK
 *                               after: size and SHA-1 checked, fsync, renamed
 *                               into data_dir as Cyrus names it, index rebuilt
 *                               (no damaged member accepted), full verify,
 *                               then recorded in the catalog
 *   TRANSFER_END "REMOVE"    -> ACK; drops the user from the catalog and
 *                               deletes its files (CAIRN_ELOCKED if busy)
 * The source is quiet while exported: the router holds the user's writes
 * (rebalance) before the executor asks, and the node starts no compaction
 * of the user while an export reads it (hold_for_export).
 */
#include "common.h"
#include "daemon.h"
#include "server_int.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int
spool_path(struct cairn_node_server *server, const char *userid, char **path)
{
    if (asprintf(path, "%s/transfer-%s", server->spool_dir, userid) < 0) {
        *path = NULL;
        return CAIRN_ENOMEM;
    }
    return 0;
}

static int
parse_offset(const struct node_request *request, uint64_t *offset)
{
    const char *key = request->envelope->key;

    if (key == NULL || *key == '\0')
        return CAIRN_EPARSE;
    return cairn_parse_u64_str(key, 0, UINT64_MAX / 2, offset);
}

/*
 * How long an export keeps compaction off the user after its last read: a
 * relay that dies leaves the user compactable again after this.
 */
#define EXPORT_HOLD_MS (5 * 60 * 1000)

bool
node_transfer_exporting(const struct node_user *user)
{
    return cairn_loop_now_ms() < user->exporting_until_ms;
}

/*
 * An export reads the data file as it is: the user's pending appends are
 * committed first (whole chunks), a compaction running now refuses the
 * export (CAIRN_ELOCKED, cairnctl says so), and none starts until the
 * export has been idle for EXPORT_HOLD_MS.
 */
int
node_transfer_hold(struct cairn_node_server *server, const char *userid)
{
    struct node_user *user = NULL;
    int rc = node_user_get(server, userid, &user);

    if (rc < 0)
        return rc;
    if (user->appending)
        return CAIRN_ELOCKED;
    if (user->in_round)
        node_commit_round(server);
    user->exporting_until_ms = cairn_loop_now_ms() + EXPORT_HOLD_MS;
    return CAIRN_OK;
}

void
node_transfer_hold_touch(struct cairn_node_server *server, const char *userid)
{
    struct node_user *user = NULL;

    if (node_user_get(server, userid, &user) == 0)
        user->exporting_until_ms = cairn_loop_now_ms() + EXPORT_HOLD_MS;
}

static int
export_begin(struct cairn_node_server *server, struct node_request *request)
{
    Cairn__TransferBegin begin = CAIRN__TRANSFER_BEGIN__INIT;
    char *data_path = NULL, hex[41] = "";
    struct cairn_buf frame;
    int rc;

    cairn_buf_init(&frame, 4096);
    if ((rc = node_transfer_hold(server, request->envelope->user)) < 0 ||
        (rc = cairn_catalog_lookup(server->catalog, request->envelope->user,
                                   &data_path)) < 0 ||
        (rc = cairn_file_sha1(data_path, hex, &begin.total_bytes)) < 0 ||
        (rc = cairn_buf_reserve(
             &frame, cairn__transfer_begin__get_packed_size(&begin) + 64)) < 0)
        goto out;
    begin.data_sha1 = hex;
    frame.len = cairn__transfer_begin__pack(&begin, (uint8_t *)frame.data);
    rc = node_reply(server, request, CAIRN__KIND__TRANSFER_BEGIN, &frame, 1,
                    true);
out:
    cairn_buf_release(&frame);
    free(data_path);
    return rc;
}

static int
export_chunk(struct cairn_node_server *server, struct node_request *request)
{
    char *data_path = NULL;
    struct cairn_buf frame;
    uint64_t offset = 0;
    ssize_t got;
    int fd = -1, rc;

    cairn_buf_init(&frame, server->settings.max_frame);
    if ((rc = parse_offset(request, &offset)) < 0 ||
        (rc = node_transfer_hold(server, request->envelope->user)) < 0 ||
        (rc = cairn_catalog_lookup(server->catalog, request->envelope->user,
                                   &data_path)) < 0 ||
        (rc = cairn_buf_reserve(&frame, server->settings.max_frame)) < 0)
        goto out;
    rc = CAIRN_EIO;
    if ((fd = open(data_path, O_RDONLY | O_CLOEXEC)) < 0)
        goto out;
    got = pread(fd, frame.data, server->settings.max_frame, (off_t)offset);
    if (got < 0)
        goto out;
    frame.len = (size_t)got;
    rc = node_reply(server, request, CAIRN__KIND__TRANSFER_CHUNK, &frame, 1,
                    false);
out:
    if (fd >= 0)
        close(fd);
    cairn_buf_release(&frame);
    free(data_path);
    return rc;
}

static int
import_begin(struct cairn_node_server *server, struct node_request *request)
{
    char *path = NULL, *existing = NULL;
    int fd = -1, rc;

    rc = cairn_catalog_lookup(server->catalog, request->envelope->user,
                              &existing);
    if (rc == 0)
        rc = CAIRN_EEXIST;
    if (rc != CAIRN_ENOENT ||
        (rc = spool_path(server, request->envelope->user, &path)) < 0)
        goto out;
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
              cairn_created_file_mode());
    rc = fd < 0 ? CAIRN_EIO
                : node_reply(server, request, CAIRN__KIND__ACK, NULL, 0, false);
out:
    if (fd >= 0)
        close(fd);
    free(existing);
    free(path);
    return rc;
}

static int
import_chunk(struct cairn_node_server *server, struct node_request *request)
{
    char *path = NULL;
    uint64_t offset = 0;
    int fd = -1, rc;

    if ((rc = parse_offset(request, &offset)) < 0 ||
        (rc = spool_path(server, request->envelope->user, &path)) < 0)
        goto out;
    rc = CAIRN_EIO;
    if ((fd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
        goto out;
    if (request->dlist_len > 0 &&
        pwrite(fd, request->dlist, request->dlist_len, (off_t)offset) !=
            (ssize_t)request->dlist_len)
        goto out;
    rc = node_reply(server, request, CAIRN__KIND__ACK, NULL, 0, false);
out:
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

int
node_transfer_rebuild_verify(const char *data_path, char digest[41],
                             char *error, size_t error_size)
{
    struct cairn_reindex_result result = {0};
    struct cairn_store *store = NULL;
    int rc;

    /* The transferred file has no index: open rebuilds it, once. */
    if ((rc = cairn_store_open(data_path, 0, &store)) < 0 ||
        (!cairn_store_opened_rebuilt(store, &result) &&
         (rc = cairn_store_rebuild_index(store, &result)) < 0))
        goto out;
    if (result.damaged_members > 0 || result.cut_bytes > 0) {
        snprintf(error, error_size, "transferred file is damaged");
        rc = CAIRN_ECORRUPT;
        goto out;
    }
    rc = cairn_store_verify(store, CAIRN_VERIFY_FULL, error, error_size);
    if (rc == 0 && digest != NULL)
        rc = node_state_digest(store, digest);
out:
    cairn_store_close(store);
    return rc;
}

/* A new data file name as Cyrus makes them: data_dir/<hash>/<user>_XXXXXX. */
int
node_transfer_data_path(const struct cairn_node_server *server,
                        const char *userid, char **path)
{
    char *dir = NULL;
    int fd, rc = CAIRN_ENOMEM;

    *path = NULL;
    if (asprintf(&dir, "%s/%c", server->settings.data_dir,
                 cairn_node_dir_hash(userid)) < 0) {
        dir = NULL;
        goto out;
    }
    if (asprintf(path, "%s/%s_XXXXXX", dir, userid) < 0) {
        *path = NULL;
        goto out;
    }
    rc = CAIRN_EIO;
    if (mkdir(dir, cairn_created_dir_mode()) < 0 && errno != EEXIST)
        goto out;
    if ((fd = mkstemp(*path)) < 0)
        goto out;
    /* mkstemp() makes 0600: the data file gets data_mode like the rest. */
    if (fchmod(fd, cairn_created_file_mode()) < 0) {
        close(fd);
        unlink(*path);
        goto out;
    }
    close(fd);
    rc = 0;
out:
    if (rc < 0) {
        free(*path);
        *path = NULL;
    }
    free(dir);
    return rc;
}

static int
import_end(struct cairn_node_server *server, struct node_request *request)
{
    const char *userid = request->envelope->user;
    Cairn__TransferBegin *expected = NULL;
    char *spool = NULL, *data_path = NULL, *index_path = NULL, hex[41] = "";
    char error[256] = "";
    uint64_t size = 0;
    int fd = -1, rc = CAIRN_EPARSE;

    if (request->dlist == NULL ||
        (expected = cairn__transfer_begin__unpack(
             NULL, request->dlist_len, (const uint8_t *)request->dlist)) ==
            NULL)
        goto out;
    if ((rc = spool_path(server, userid, &spool)) < 0 ||
        (rc = cairn_file_sha1(spool, hex, &size)) < 0)
        goto out;
    if (size != expected->total_bytes ||
        strcmp(hex, expected->data_sha1 ? expected->data_sha1 : "") != 0) {
        snprintf(error, sizeof(error), "transferred %llu bytes, SHA-1 %s",
                 (unsigned long long)size, hex);
        rc = CAIRN_EMISMATCH;
        goto out;
    }
    /* Created meanwhile (a write that was not held): never overwritten. */
    if ((rc = cairn_catalog_lookup(server->catalog, userid, &data_path)) !=
        CAIRN_ENOENT) {
        free(data_path);
        data_path = NULL;
        rc = rc == 0 ? CAIRN_EEXIST : rc;
        goto out;
    }
    rc = CAIRN_EIO;
    if ((fd = open(spool, O_RDONLY | O_CLOEXEC)) < 0 || fsync(fd) < 0)
        goto out;
    if ((rc = node_transfer_data_path(server, userid, &data_path)) < 0)
        goto out;
    if (rename(spool, data_path) < 0) {
        rc = CAIRN_EIO;
        goto out;
    }
    if ((rc = cairn_fsync_parent_dir(data_path)) < 0 ||
        (rc = node_transfer_rebuild_verify(data_path, NULL, error,
                                           sizeof(error))) < 0 ||
        (rc = cairn_catalog_set(server->catalog, userid, data_path)) < 0)
        goto out;
    node_scrub_lift(server, userid); /* a verified copy: not damaged */
    free(data_path);
    data_path = NULL; /* recorded: kept whatever happens to the reply */
    rc = node_reply(server, request, CAIRN__KIND__ACK, NULL, 0, false);
out:
    if (rc < 0 && data_path != NULL) {
        unlink(data_path);
        if (asprintf(&index_path, "%s.index", data_path) >= 0)
            unlink(index_path);
    }
    if (rc < 0 && error[0] != '\0') {
        node_reply_error(server, request, rc, 0, error);
        rc = 0;
    }
    if (fd >= 0)
        close(fd);
    if (expected)
        cairn__transfer_begin__free_unpacked(expected, NULL);
    free(index_path);
    free(data_path);
    free(spool);
    return rc;
}

static int
remove_user(struct cairn_node_server *server, struct node_request *request)
{
    const char *userid = request->envelope->user;
    struct node_user *user = NULL;
    char *data_path = NULL, *index_path = NULL;
    int rc;

    if ((rc = node_user_get(server, userid, &user)) < 0)
        goto out;
    if (user->queue != NULL || user->applied != NULL || user->in_round ||
        user->appending) {
        rc = CAIRN_ELOCKED;
        goto out;
    }
    node_user_close(server, user);
    user->exporting_until_ms = 0; /* moved away: nothing left to hold */
    if ((rc = cairn_catalog_lookup(server->catalog, userid, &data_path)) < 0 ||
        (rc = cairn_catalog_remove(server->catalog, userid)) < 0)
        goto out;
    if (asprintf(&index_path, "%s.index", data_path) < 0) {
        index_path = NULL;
        rc = CAIRN_ENOMEM;
        goto out;
    }
    unlink(index_path);
    unlink(data_path);
    rc = node_reply(server, request, CAIRN__KIND__ACK, NULL, 0, false);
out:
    free(index_path);
    free(data_path);
    return rc;
}

void
node_transfer(struct cairn_node_server *server, struct node_request *request)
{
    const Cairn__Envelope *envelope = request->envelope;
    const char *verb = envelope->verb ? envelope->verb : "";
    int rc = CAIRN_EPROTO;

    if (envelope->user == NULL || cairn_node_check_userid(envelope->user) < 0) {
        node_reply_error(server, request, CAIRN_EBADNAME, 0, NULL);
        return;
    }
    if (strcmp(verb, "PULL") == 0 &&
        envelope->kind == CAIRN__KIND__TRANSFER_BEGIN) {
        node_pull_request(server, request); /* pull.c */
        return;
    }
    if (strcmp(verb, "SEND") == 0)
        rc = node_pull_source(server, request); /* pull_source.c */
    else if (envelope->kind == CAIRN__KIND__TRANSFER_BEGIN &&
             strcmp(verb, "EXPORT") == 0)
        rc = export_begin(server, request);
    else if (envelope->kind == CAIRN__KIND__TRANSFER_CHUNK &&
             strcmp(verb, "READ") == 0)
        rc = export_chunk(server, request);
    else if (envelope->kind == CAIRN__KIND__TRANSFER_BEGIN &&
             strcmp(verb, "IMPORT") == 0)
        rc = import_begin(server, request);
    else if (envelope->kind == CAIRN__KIND__TRANSFER_CHUNK &&
             strcmp(verb, "WRITE") == 0)
        rc = import_chunk(server, request);
    else if (envelope->kind == CAIRN__KIND__TRANSFER_END &&
             strcmp(verb, "IMPORT") == 0)
        rc = import_end(server, request);
    else if (envelope->kind == CAIRN__KIND__TRANSFER_END &&
             strcmp(verb, "REMOVE") == 0)
        rc = remove_user(server, request);
    if (rc == CAIRN_ELOCKED)
        node_reply_error(server, request, rc, 0,
                         "the user is busy (compaction or updates running): "
                         "try again shortly");
    else if (rc < 0)
        node_reply_error(server, request, rc, 0, NULL);
}
