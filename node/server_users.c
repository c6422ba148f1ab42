/*
 * server_users.c - the node daemon's users: a hash table of what it keeps
 * per user (ordering state, the queue that makes each user's requests run
 * strictly in order), and the bounded cache of open stores (least recently
 * used closed first, idle ones closed by a timer).
 */
#include "common.h"
#include "server_int.h"

#include <stdlib.h>
#include <string.h>

static size_t
hash_userid(const char *userid)
{
    size_t hash = 5381;

    for (; *userid; userid++)
        hash = hash * 33 + (unsigned char)*userid;
    return hash;
}

static int
grow_table(struct cairn_node_server *server)
{
    size_t count = server->bucket_count * 2;
    struct node_user **buckets = calloc(count, sizeof(*buckets));

    if (buckets == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < server->bucket_count; i++) {
        struct node_user *user = server->buckets[i], *next;

        for (; user != NULL; user = next) {
            size_t at = hash_userid(user->userid) % count;

            next = user->hash_next;
            user->hash_next = buckets[at];
            buckets[at] = user;
        }
    }
    free(server->buckets);
    server->buckets = buckets;
    server->bucket_count = count;
    return 0;
}

int
node_user_get(struct cairn_node_server *server, const char *userid,
              struct node_user **out)
{
    size_t at = hash_userid(userid) % server->bucket_count;
    struct node_user *user;

    for (user = server->buckets[at]; user != NULL; user = user->hash_next)
        if (strcmp(user->userid, userid) == 0) {
            *out = user;
            return 0;
        }
    if (server->user_count >= server->bucket_count * 2 &&
        grow_table(server) == 0)
        at = hash_userid(userid) % server->bucket_count;
    if ((user = calloc(1, sizeof(*user))) == NULL ||
        (user->userid = strdup(userid)) == NULL) {
        free(user);
        return CAIRN_ENOMEM;
    }
    user->hash_next = server->buckets[at];
    server->buckets[at] = user;
    server->user_count++;
    *out = user;
    return 0;
}

void
node_user_close(struct cairn_node_server *server, struct node_user *user)
{
    /* The worker holds this store (a big append, a compaction, a VERIFY):
     * wait for it rather than close it under the thread (a TRANSFER
     * removing the user gets here without looking at that). */
    while (user->appending && server->worker_running)
        node_background_finish(server);
    if (user->store == NULL)
        return;
    cairn_store_close(user->store);
    user->store = NULL;
    server->open_stores--;
}

static bool
user_busy(const struct node_user *user)
{
    return user->in_round || user->applied != NULL || user->appending;
}

/* Closes the least recently used idle store to make room. */
static void
close_oldest(struct cairn_node_server *server)
{
    struct node_user *oldest = NULL;

    for (size_t i = 0; i < server->bucket_count; i++)
        for (struct node_user *user = server->buckets[i]; user != NULL;
             user = user->hash_next)
            if (user->store && !user_busy(user) &&
                (oldest == NULL || user->last_used_ms < oldest->last_used_ms))
                oldest = user;
    if (oldest)
        node_user_close(server, oldest);
}

int
node_user_open(struct cairn_node_server *server, struct node_user *user,
               bool create)
{
    uint64_t sequence = 0;
    int rc;

    user->last_used_ms = cairn_loop_now_ms();
    if (user->store)
        return 0;
    if (user->pulling) /* pull.c replaces its files meanwhile */
        return CAIRN_ELOCKED;
    if (server->open_stores >= server->settings.max_open_stores)
        close_oldest(server);
    rc = cairn_store_open_user(server->catalog, server->settings.data_dir,
                               user->userid, create ? CAIRN_STORE_CREATE : 0,
                               &user->store);
    if (rc < 0) {
        user->store = NULL;
        return rc;
    }
    server->open_stores++;
    if (!user->has_sequence &&
        cairn_store_get_sequence(user->store, &sequence) == 0 && sequence > 0) {
        /* after a restart: updates up to this one are committed */
        user->has_sequence = true;
        user->last_sequence = user->restored_sequence = sequence;
        user->last_outcome = 0;
    }
    return 0;
}

void
node_users_trim(struct cairn_node_server *server, bool all)
{
    uint64_t now = cairn_loop_now_ms();

    for (size_t i = 0; i < server->bucket_count; i++)
        for (struct node_user *user = server->buckets[i]; user != NULL;
             user = user->hash_next)
            if (user->store && !user_busy(user) &&
                (all ||
                 now - user->last_used_ms >= server->settings.idle_close_ms))
                node_user_close(server, user);
    node_restore_trim(server, all);
}

void
node_users_free(struct cairn_node_server *server)
{
    if (server->buckets == NULL)
        return;
    for (size_t i = 0; i < server->bucket_count; i++) {
        struct node_user *user = server->buckets[i], *next;

        for (; user != NULL; user = next) {
            struct node_request *request, *after;

            next = user->hash_next;
            for (request = user->queue; request != NULL; request = after) {
                after = request->next;
                node_request_free(request);
            }
            for (request = user->applied; request != NULL; request = after) {
                after = request->next;
                node_request_free(request);
            }
            if (user->store)
                cairn_store_close(user->store);
            free(user->userid);
            free(user->damage);
            free(user);
        }
        server->buckets[i] = NULL;
    }
    server->user_count = 0;
    server->open_stores = 0;
}

void
node_user_progress(struct cairn_node_server *server, struct node_user *user)
{
    while (user->queue != NULL && user->queue->complete && !user->appending) {
        struct node_request *request = user->queue;

        user->queue = request->next;
        if (user->queue == NULL)
            user->queue_tail = NULL;
        user->queued--;
        request->next = NULL;
        if (request->envelope->kind == CAIRN__KIND__APPLY) {
            node_apply(server, request);
        } else if (request->failure < 0) {
            node_reply_error(server, request, request->failure, 0,
                             request->failure_text);
            node_request_free(request);
        } else if (node_restore_request(request->envelope->kind)) {
            node_restore_read(server, request);
        } else {
            node_state(server, request);
        }
    }
}
