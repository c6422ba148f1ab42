/*
 * server_admin.c - the node daemon's requests from cairnctl: PING, STATUS
 * and STATS (per-user figures read from each index with a separate
 * read-only SQLite connection, disk free from statvfs), VERIFY (with a
 * digest of the user's state answers, comparable across replicas) and
 * COMPACT. TRANSFER (rebalance) lives in transfer.c.
 */
#include "common.h"
#include "server_int.h"

#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#define MAX_BODY_BYTES (256u * 1024 * 1024)

/* The users a request names (UserRequest in frame 1), or all. */
struct user_list {
    char **names;
    size_t count, cap;
    bool full;
};

static int
add_name(void *ctx, const char *userid, const char *data_path)
{
    struct user_list *list = ctx;

    (void)data_path;
    if (list->count == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 64;
        char **names = realloc(list->names, cap * sizeof(*names));

        if (names == NULL)
            return CAIRN_ENOMEM;
        list->names = names;
        list->cap = cap;
    }
    if ((list->names[list->count] = strdup(userid)) == NULL)
        return CAIRN_ENOMEM;
    list->count++;
    return 0;
}

static void
user_list_release(struct user_list *list)
{
    for (size_t i = 0; i < list->count; i++)
        free(list->names[i]);
    free(list->names);
}

/* all_by_default: an empty list means every user in the catalog. */
static int
read_user_list(struct cairn_node_server *server,
               const struct node_request *request, bool all_by_default,
               struct user_list *list)
{
    Cairn__UserRequest *asked = NULL;
    int rc = 0;

    if (request->dlist != NULL) {
        asked = cairn__user_request__unpack(NULL, request->dlist_len,
                                            (const uint8_t *)request->dlist);
        if (asked == NULL)
            return CAIRN_EPARSE;
        list->full = asked->full;
        for (size_t i = 0; i < asked->n_users && rc == 0; i++)
            rc = add_name(list, asked->users[i], NULL);
    }
    if (rc == 0 && list->count == 0 && all_by_default)
        rc = cairn_catalog_foreach(server->catalog, add_name, list);
    if (asked)
        cairn__user_request__free_unpacked(asked, NULL);
    return rc;
}

/* --- STATUS / STATS ------------------------------------------------------- */

static uint64_t
file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static uint64_t
query_u64(sqlite3 *db, const char *sql, int column)
{
    sqlite3_stmt *stmt = NULL;
    uint64_t value = 0;

    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        value = (uint64_t)sqlite3_column_int64(stmt, column);
    sqlite3_finalize(stmt);
    return value;
}

/*
 * The store has no statistics call yet, so the figures come from the
 * index's Cyrus tables directly (read-only; committed state only).
 */
static int
user_stats(struct cairn_node_server *server, const char *userid,
           Cairn__UserStats *stats)
{
    char *data_path = NULL, *index_path = NULL;
    sqlite3 *db = NULL;
    int rc;

    if ((rc = cairn_catalog_lookup(server->catalog, userid, &data_path)) < 0)
        return rc;
    if (asprintf(&index_path, "%s.index", data_path) < 0) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    stats->bytes_on_disk = file_size(data_path) + file_size(index_path);
    if (sqlite3_open_v2(index_path, &db, SQLITE_OPEN_READONLY, NULL) !=
        SQLITE_OK) {
        rc = CAIRN_EDB;
        goto out;
    }
    stats->chunks = query_u64(db, "SELECT count(*) FROM chunk", 0);
    stats->last_backup_time =
        (int64_t)query_u64(db, "SELECT coalesce(max(ts_end),0) FROM chunk", 0);
    stats->messages = query_u64(db, "SELECT count(*) FROM message", 0);
    stats->raw_bytes =
        query_u64(db, "SELECT coalesce(sum(size),0) FROM message", 0);
    stats->mailboxes = query_u64(
        db, "SELECT count(*) FROM mailbox WHERE coalesce(deleted,0)=0", 0);
out:
    sqlite3_close(db);
    free(index_path);
    free(data_path);
    return rc;
}

static int
pack_frame(const ProtobufCMessage *message, struct cairn_buf *frame)
{
    size_t size = protobuf_c_message_get_packed_size(message);
    int rc;

    cairn_buf_init(frame, MAX_BODY_BYTES);
    if ((rc = cairn_buf_reserve(frame, size + 1)) < 0)
        return rc;
    protobuf_c_message_pack(message, (uint8_t *)frame->data);
    frame->len = size;
    return 0;
}

static int
answer_status(struct cairn_node_server *server, struct node_request *request,
              bool all_users)
{
    Cairn__StatusReply reply = CAIRN__STATUS_REPLY__INIT;
    Cairn__NodeStats node = CAIRN__NODE_STATS__INIT;
    Cairn__UserStats *stats = NULL, **pointers = NULL;
    struct user_list everyone = {0}, asked = {0};
    struct cairn_buf frame = {0};
    struct statvfs fs;
    int rc;

    if ((rc = cairn_catalog_foreach(server->catalog, add_name, &everyone)) <
            0 ||
        (rc = read_user_list(server, request, all_users, &asked)) < 0)
        goto out;
    stats = calloc(asked.count + 1, sizeof(*stats));
    pointers = calloc(asked.count + 1, sizeof(*pointers));
    if (stats == NULL || pointers == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    node.node = (char *)server->settings.name;
    node.users = everyone.count;
    for (size_t i = 0; i < everyone.count; i++) {
        Cairn__UserStats one = CAIRN__USER_STATS__INIT;

        if (user_stats(server, everyone.names[i], &one) == 0)
            node.bytes += one.bytes_on_disk;
    }
    if (statvfs(server->settings.data_dir, &fs) == 0)
        node.disk_free = (uint64_t)fs.f_bavail * fs.f_frsize;
    node.uptime_seconds = (int64_t)time(NULL) - server->started_time;
    node.requests = server->requests;
    for (size_t i = 0; i < asked.count; i++) {
        cairn__user_stats__init(&stats[i]);
        stats[i].user = asked.names[i];
        /* A user not held here is listed with zeros. */
        (void)user_stats(server, asked.names[i], &stats[i]);
        pointers[i] = &stats[i];
    }
    reply.node = &node;
    reply.users = pointers;
    reply.n_users = asked.count;
    if ((rc = pack_frame(&reply.base, &frame)) < 0)
        goto out;
    node_reply(server, request,
               request->envelope->kind == CAIRN__KIND__STATS_REQUEST
                   ? CAIRN__KIND__STATS_REPLY
                   : CAIRN__KIND__STATUS_REPLY,
               &frame, 1, true);
out:
    cairn_buf_release(&frame);
    free(stats);
    free(pointers);
    user_list_release(&everyone);
    user_list_release(&asked);
    return rc;
}

/* --- VERIFY / COMPACT
 * --------------------------------------------------------- */

struct digest_walk {
    EVP_MD_CTX *md;
    struct user_list mailboxes;
    int rc;
};

static int
digest_item(void *ctx, const struct cairn_dlist *item)
{
    struct digest_walk *walk = ctx;
    struct cairn_buf out;
    const char *mboxname;
    int rc;

    cairn_buf_init(&out, 64u * 1024 * 1024);
    if ((rc = node_print_item(item, &out)) == 0)
        EVP_DigestUpdate(walk->md, out.data, out.len);
    EVP_DigestUpdate(walk->md, "\n", 1);
    cairn_buf_release(&out);
    if (rc == 0 && strcmp(cairn_dlist_name(item), "MAILBOX") == 0 &&
        cairn_dlist_get_atom(item, "MBOXNAME", &mboxname) && mboxname)
        rc = add_name(&walk->mailboxes, mboxname, NULL);
    return rc;
}

/* Hex SHA-1 over GET USER and every mailbox's GET FULLMAILBOX, printed. */
static int
state_digest(struct cairn_store *store, char hex[41])
{
    struct digest_walk walk = {0};
    unsigned char sha1[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    int rc;

    if ((walk.md = EVP_MD_CTX_new()) == NULL ||
        EVP_DigestInit_ex(walk.md, EVP_sha1(), NULL) != 1) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    if ((rc = cairn_store_get_user(store, digest_item, &walk)) < 0)
        goto out;
    for (size_t i = 0; i < walk.mailboxes.count && rc == 0; i++) {
        struct user_list names = walk.mailboxes;

        walk.mailboxes = (struct user_list){0};
        rc = cairn_store_get_fullmailbox(store, names.names[i], digest_item,
                                         &walk);
        user_list_release(&walk.mailboxes);
        walk.mailboxes = names;
    }
    if (rc < 0)
        goto out;
    EVP_DigestFinal_ex(walk.md, sha1, &len);
    for (unsigned i = 0; i < len && i < 20; i++)
        snprintf(hex + 2 * i, 3, "%02x", sha1[i]);
out:
    EVP_MD_CTX_free(walk.md);
    user_list_release(&walk.mailboxes);
    return rc;
}

static void
verify_user(struct cairn_node_server *server, struct node_user *user, bool full,
            Cairn__UserResult *result, char *text, size_t text_size,
            char digest[41])
{
    unsigned levels = CAIRN_VERIFY_FULL;
    int rc;

    if (!full)
        levels &= ~(unsigned)CAIRN_VERIFY_MESSAGE_GUIDS;
    text[0] = '\0';
    if ((rc = node_user_open(server, user, false)) == 0 &&
        (rc = cairn_store_verify(user->store, levels, text, text_size)) == 0 &&
        (rc = state_digest(user->store, digest)) == 0)
        result->digest = digest;
    result->code = rc;
    if (rc < 0 && text[0] == '\0')
        snprintf(text, text_size, "%s", cairn_strerror(rc));
    result->text = text;
}

static void
compact_user(struct cairn_node_server *server, struct node_user *user,
             Cairn__UserResult *result, char *text, size_t text_size)
{
    struct cairn_compact_policy policy = {0};
    struct cairn_compact_result outcome = {0};
    int rc;

    policy.retention_seconds = server->settings.retention_seconds;
    policy.min_chunk = server->settings.min_chunk;
    policy.max_chunk = server->settings.max_chunk;
    policy.work_threshold =
        server->settings.work_threshold ? server->settings.work_threshold : 1;
    policy.now = time(NULL);
    if ((rc = node_user_open(server, user, false)) == 0)
        rc = cairn_store_compact(user->store, &policy, &outcome);
    result->code = rc;
    result->bytes_before = outcome.bytes_before;
    result->bytes_after = outcome.bytes_after;
    snprintf(text, text_size, "%s",
             rc < 0              ? cairn_strerror(rc)
             : outcome.compacted ? "compacted"
                                 : "nothing to do");
    result->text = text;
}

struct result_slot {
    Cairn__UserResult result;
    char text[256];
    char digest[41];
};

static int
answer_users(struct cairn_node_server *server, struct node_request *request)
{
    bool verify = request->envelope->kind == CAIRN__KIND__VERIFY_REQUEST;
    Cairn__UserResults reply = CAIRN__USER_RESULTS__INIT;
    struct user_list asked = {0};
    struct result_slot *slots = NULL;
    Cairn__UserResult **pointers = NULL;
    struct cairn_buf frame = {0};
    int rc;

    node_commit_round(server);
    if ((rc = read_user_list(server, request, true, &asked)) < 0)
        goto out;
    slots = calloc(asked.count + 1, sizeof(*slots));
    pointers = calloc(asked.count + 1, sizeof(*pointers));
    if (slots == NULL || pointers == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < asked.count; i++) {
        struct node_user *user = NULL;
        struct result_slot *slot = &slots[i];

        cairn__user_result__init(&slot->result);
        slot->result.user = asked.names[i];
        pointers[i] = &slot->result;
        if ((rc = node_user_get(server, asked.names[i], &user)) < 0)
            goto out;
        if (user->in_round || user->queue != NULL || user->appending) {
            slot->result.code = CAIRN_ELOCKED;
            slot->result.text = "updates in progress";
        } else if (verify) {
            verify_user(server, user, asked.full, &slot->result, slot->text,
                        sizeof(slot->text), slot->digest);
        } else {
            compact_user(server, user, &slot->result, slot->text,
                         sizeof(slot->text));
        }
    }
    reply.results = pointers;
    reply.n_results = asked.count;
    if ((rc = pack_frame(&reply.base, &frame)) < 0)
        goto out;
    node_reply(server, request,
               verify ? CAIRN__KIND__VERIFY_REPLY : CAIRN__KIND__COMPACT_REPLY,
               &frame, 1, true);
out:
    cairn_buf_release(&frame);
    free(slots);
    free(pointers);
    user_list_release(&asked);
    return rc;
}

void
node_admin(struct cairn_node_server *server, struct node_request *request)
{
    int rc = 0;

    switch (request->envelope->kind) {
    case CAIRN__KIND__PING:
        node_reply(server, request, CAIRN__KIND__PONG, NULL, 0, false);
        return;
    case CAIRN__KIND__STATUS_REQUEST:
        rc = answer_status(server, request, false);
        break;
    case CAIRN__KIND__STATS_REQUEST:
        rc = answer_status(server, request, true);
        break;
    case CAIRN__KIND__VERIFY_REQUEST:
    case CAIRN__KIND__COMPACT_REQUEST:
        rc = answer_users(server, request);
        break;
    case CAIRN__KIND__TRANSFER_BEGIN:
    case CAIRN__KIND__TRANSFER_CHUNK:
    case CAIRN__KIND__TRANSFER_END:
        node_transfer(server, request); /* transfer.c */
        return;
    default:
        node_reply_error(server, request, CAIRN_EPROTO, 9,
                         "unexpected message kind");
        return;
    }
    if (rc < 0)
        node_reply_error(server, request, rc, 0, NULL);
}
