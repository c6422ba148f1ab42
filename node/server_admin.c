/*
 * server_admin.c - the node daemon's requests from cairnctl: PING, STATUS
 * and STATS (per-user figures read from each index with a separate
 * read-only SQLite connection, disk free from statvfs), VERIFY (with a
 * digest of the user's state answers, comparable across replicas) and
 * COMPACT. TRANSFER (rebalance) lives in transfer.c.
 */
#include "common.h"
#include "node_metrics.h"
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

/* The user's figures, read from its index (catalog_figures.c). */
int
node_user_stats(struct cairn_node_server *server, const char *userid,
                Cairn__UserStats *stats)
{
    struct cairn_user_figures figures;
    char *data_path = NULL;
    int rc;

    if ((rc = cairn_catalog_lookup(server->catalog, userid, &data_path)) < 0)
        return rc;
    rc = cairn_user_figures_read(data_path, &figures);
    node_fill_user_stats(stats, &figures);
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
    /* from the figures cache: a million users read no unchanged index */
    if ((rc = node_total_bytes(server, &node.bytes)) < 0)
        goto out;
    if (statvfs(server->settings.data_dir, &fs) == 0)
        node.disk_free = (uint64_t)fs.f_bavail * fs.f_frsize;
    node.disk_reserve = server->settings.reserve;
    node.uptime_seconds = (int64_t)time(NULL) - server->started_time;
    node.requests = server->requests;
    node.ring_epoch = server->ring_epoch;
    {
        uint64_t users = 0;

        if (node_scrub_figures(server, &users, &node.scrub_checked,
                               &node.scrub_damaged) == 0)
            node.scrub_interval_seconds = node_scrub_interval_ms(server) / 1000;
    }
    node_heal_figures(server, &node);
    for (size_t i = 0; i < asked.count; i++) {
        cairn__user_stats__init(&stats[reply.n_users]);
        stats[reply.n_users].user = asked.names[i];
        /* A named user not held here is left out of the reply. */
        if (node_user_stats(server, asked.names[i], &stats[reply.n_users]) ==
            0) {
            pointers[reply.n_users] = &stats[reply.n_users];
            reply.n_users++;
        }
    }
    reply.node = &node;
    reply.users = pointers;
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
    node_heal_figures_release(&node);
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

static int
digest_line(void *ctx, const char *line)
{
    struct digest_walk *walk = ctx;

    EVP_DigestUpdate(walk->md, line, strlen(line));
    EVP_DigestUpdate(walk->md, "\n", 1);
    return 0;
}

/*
 * Hex SHA-1 over GET USER and every mailbox's GET FULLMAILBOX, printed,
 * then the index's times (cairn_store_each_time: expunged, deleted).
 */
int
node_state_digest(struct cairn_store *store, char hex[41])
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
    if (rc < 0 || (rc = cairn_store_each_time(store, digest_line, &walk)) < 0)
        goto out;
    EVP_DigestFinal_ex(walk.md, sha1, &len);
    for (unsigned i = 0; i < len && i < 20; i++)
        snprintf(hex + 2 * i, 3, "%02x", sha1[i]);
out:
    EVP_MD_CTX_free(walk.md);
    user_list_release(&walk.mailboxes);
    return rc;
}

struct result_slot {
    Cairn__UserResult result;
    char text[256];
    char digest[41];
};

/* A VERIFY or COMPACT request while its users are done one by one. */
struct admin_job {
    struct admin_job *next;
    struct node_request *reply_to; /* owned: routing id and envelope */
    bool verify;
    bool digest; /* DIGEST_REQUEST: the digest only, no verify */
    struct user_list asked;
    struct result_slot *slots;
    Cairn__UserResult **pointers;
    size_t next_user; /* the next to start */
    size_t current;   /* the one on the worker, while running */
    bool running;
    struct cairn_compact_policy policy;
    struct cairn_compact_result outcome;
};

static void
admin_job_free(struct admin_job *job)
{
    if (job == NULL)
        return;
    node_request_free(job->reply_to);
    user_list_release(&job->asked);
    free(job->slots);
    free(job->pointers);
    free(job);
}

/* On the worker thread: touches only the store and the job's slot. */
static int
verify_job(void *arg, struct cairn_store *store)
{
    struct admin_job *job = arg;
    struct result_slot *slot = &job->slots[job->current];
    unsigned levels = CAIRN_VERIFY_FULL;
    int rc;

    if (!job->asked.full)
        levels &= ~(unsigned)CAIRN_VERIFY_MESSAGE_GUIDS;
    slot->text[0] = '\0';
    if ((job->digest || (rc = cairn_store_verify(store, levels, slot->text,
                                                 sizeof(slot->text))) == 0) &&
        (rc = node_state_digest(store, slot->digest)) == 0)
        slot->result.digest = slot->digest;
    if (rc < 0)
        cairn_node_metric_verify_failed();
    return rc;
}

static int
compact_job(void *arg, struct cairn_store *store)
{
    struct admin_job *job = arg;

    memset(&job->outcome, 0, sizeof(job->outcome));
    return cairn_store_compact(store, &job->policy, &job->outcome);
}

static void
job_done(struct cairn_node_server *server, struct node_user *user, void *arg,
         int rc)
{
    struct admin_job *job = arg;
    struct result_slot *slot = &job->slots[job->current];

    (void)server;
    (void)user;
    job->running = false;
    slot->result.code = rc;
    if (!job->verify) {
        slot->result.bytes_before = job->outcome.bytes_before;
        slot->result.bytes_after = job->outcome.bytes_after;
        snprintf(slot->text, sizeof(slot->text), "%s",
                 rc < 0                   ? cairn_strerror(rc)
                 : job->outcome.compacted ? "compacted"
                                          : "nothing to do");
    } else if (rc < 0 && slot->text[0] == '\0') {
        snprintf(slot->text, sizeof(slot->text), "%s", cairn_strerror(rc));
    }
    slot->result.text = slot->text;
}

/*
 * DIGEST_REPLY: the users held, each with its figures (the newest update
 * stamp among them) and its digest or why there is none.
 */
static void
answer_digests(struct cairn_node_server *server, struct admin_job *job)
{
    Cairn__StatusReply reply = CAIRN__STATUS_REPLY__INIT;
    Cairn__UserStats *stats = calloc(job->asked.count + 1, sizeof(*stats));
    Cairn__UserStats **pointers =
        calloc(job->asked.count + 1, sizeof(*pointers));
    struct cairn_buf frame = {0};
    int rc = CAIRN_ENOMEM;

    if (stats == NULL || pointers == NULL)
        goto out;
    for (size_t i = 0; i < job->asked.count; i++) {
        Cairn__UserStats *one = &stats[reply.n_users];
        const struct result_slot *slot = &job->slots[i];

        cairn__user_stats__init(one);
        one->user = job->asked.names[i];
        if (slot->result.code == CAIRN_ENOENT ||
            (node_user_stats(server, one->user, one) == CAIRN_ENOENT &&
             slot->result.code != 0))
            continue; /* not held here */
        one->digest = slot->result.digest ? slot->result.digest : "";
        one->digest_code = slot->result.code;
        one->digest_text = slot->result.text ? slot->result.text : "";
        {
            struct node_user *user = NULL;

            /* a copy this node's scrub found damaged is no source */
            if (node_user_get(server, one->user, &user) == 0 &&
                node_user_quarantined(server, user)) {
                one->digest = "";
                one->digest_code = CAIRN_ECORRUPT;
                one->digest_text = user->damage ? user->damage : "quarantined";
            }
        }
        pointers[reply.n_users++] = one;
    }
    reply.users = pointers;
    rc = pack_frame(&reply.base, &frame);
out:
    if (rc < 0)
        node_reply_error(server, job->reply_to, rc, 0, NULL);
    else
        node_reply(server, job->reply_to, CAIRN__KIND__DIGEST_REPLY, &frame, 1,
                   true);
    cairn_buf_release(&frame);
    free(stats);
    free(pointers);
}

static void
answer_job(struct cairn_node_server *server, struct admin_job *job)
{
    Cairn__UserResults reply = CAIRN__USER_RESULTS__INIT;
    struct cairn_buf frame = {0};
    int rc;

    if (job->digest) {
        answer_digests(server, job);
        return;
    }
    reply.results = job->pointers;
    reply.n_results = job->asked.count;
    if ((rc = pack_frame(&reply.base, &frame)) < 0)
        node_reply_error(server, job->reply_to, rc, 0, NULL);
    else
        node_reply(server, job->reply_to,
                   job->verify ? CAIRN__KIND__VERIFY_REPLY
                               : CAIRN__KIND__COMPACT_REPLY,
                   &frame, 1, true);
    cairn_buf_release(&frame);
}

/* Starts the job's next user on the worker; false when none could be. */
static bool
start_next_user(struct cairn_node_server *server, struct admin_job *job)
{
    struct result_slot *slot = &job->slots[job->next_user];
    struct node_user *user = NULL;
    int rc;

    job->current = job->next_user++;
    if ((rc = node_user_get(server, job->asked.names[job->current], &user)) ==
            0 &&
        (user->in_round || user->queue != NULL || user->appending)) {
        slot->result.code = CAIRN_ELOCKED;
        slot->result.text = "updates in progress";
        return false;
    }
    if (rc == 0 && !job->verify && node_transfer_exporting(user)) {
        slot->result.code = CAIRN_ELOCKED;
        slot->result.text = "being exported (rebalance)";
        return false;
    }
    if (rc == 0 && (rc = node_user_open(server, user, false)) == 0) {
        node_compact_policy(server, &job->policy);
        rc =
            node_job_start(server, user, job->verify ? verify_job : compact_job,
                           job_done, job);
    }
    if (rc < 0) {
        slot->result.code = rc;
        snprintf(slot->text, sizeof(slot->text), "%s", cairn_strerror(rc));
        slot->result.text = slot->text;
        return false;
    }
    job->running = true;
    return true;
}

void
node_admin_progress(struct cairn_node_server *server)
{
    struct admin_job *job;

    while ((job = server->admin_jobs) != NULL) {
        if (job->running || server->worker_running || server->shut_down)
            return;
        if (job->next_user < job->asked.count) {
            if (start_next_user(server, job))
                return;
            continue;
        }
        server->admin_jobs = job->next;
        answer_job(server, job);
        admin_job_free(job);
    }
}

void
node_admin_release(struct cairn_node_server *server)
{
    while (server->admin_jobs != NULL) {
        struct admin_job *job = server->admin_jobs;

        server->admin_jobs = job->next;
        admin_job_free(job);
    }
}

/*
 * Queues a VERIFY or COMPACT: its users run one at a time on the worker
 * (server_worker.c) so the loop keeps serving everyone else; the reply
 * goes out when the last is done. The request's envelope and routing id
 * move into the job.
 */
static int
queue_users(struct cairn_node_server *server, struct node_request *request)
{
    struct admin_job *job = calloc(1, sizeof(*job)), **tail;
    size_t count;
    int rc;

    if (job == NULL)
        return CAIRN_ENOMEM;
    job->digest = request->envelope->kind == CAIRN__KIND__DIGEST_REQUEST;
    job->verify =
        job->digest || request->envelope->kind == CAIRN__KIND__VERIFY_REQUEST;
    node_commit_round(server);
    if ((rc = read_user_list(server, request, true, &job->asked)) < 0)
        goto out;
    count = job->asked.count;
    job->slots = calloc(count + 1, sizeof(*job->slots));
    job->pointers = calloc(count + 1, sizeof(*job->pointers));
    job->reply_to = calloc(1, sizeof(*job->reply_to));
    if (job->slots == NULL || job->pointers == NULL || job->reply_to == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        cairn__user_result__init(&job->slots[i].result);
        job->slots[i].result.user = job->asked.names[i];
        job->pointers[i] = &job->slots[i].result;
    }
    job->reply_to->spool_fd = -1;
    memcpy(job->reply_to->routing_id, request->routing_id,
           request->routing_id_len);
    job->reply_to->routing_id_len = request->routing_id_len;
    job->reply_to->envelope = request->envelope;
    request->envelope = NULL;
    for (tail = &server->admin_jobs; *tail != NULL; tail = &(*tail)->next)
        ;
    *tail = job;
    job = NULL;
    node_admin_progress(server);
out:
    admin_job_free(job);
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
        rc = request->envelope->page_limit > 0
                 ? node_answer_stats_page(server, request)
                 : answer_status(server, request, true);
        break;
    case CAIRN__KIND__VERIFY_REQUEST:
    case CAIRN__KIND__DIGEST_REQUEST:
    case CAIRN__KIND__COMPACT_REQUEST:
        rc = queue_users(server, request);
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
