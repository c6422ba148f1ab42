/*
 * user_walk.c - every user a set of nodes holds, in userid order, one user
 * at a time with each node's figures for it (cluster_int.h): the
 * "for each user" under `age`. Each node is asked for its users in pages
 * (Envelope.page_after / page_limit, the node answers in userid order) and
 * the pages are merged as they are read, so memory holds one page per
 * node whatever the number of users. A node that does not answer, or
 * answers without paging, is given up on (its status says why) and the
 * walk goes on with the others.
 */
#include "cluster_int.h"
#include "node.h"

#include <stdlib.h>
#include <string.h>

/* Users per page: a few hundred KB of protobuf per node per round trip. */
#define PAGE_USERS 4096

struct node_cursor {
    size_t node; /* config index */
    struct cairn_ops_node_call call;
    size_t at;       /* next row of the page */
    bool last_page;  /* the page read is the node's last */
    char *last_user; /* owned: where the next page starts */
};

struct cairn_ops_user_walk {
    const struct cairn_config *config;
    uint64_t timeout_ms;
    struct node_cursor *cursors;
    size_t count;
    const Cairn__UserStats **rows; /* per cursor, the current user's */
    char *user;                    /* owned: the current user */
};

static const Cairn__UserStats *
cursor_row(const struct node_cursor *cursor)
{
    if (cursor->call.status != 0 || cursor->call.status_reply == NULL ||
        cursor->at >= cursor->call.status_reply->n_users)
        return NULL;
    return cursor->call.status_reply->users[cursor->at];
}

/* Asks every cursor that has read its page to the end for its next page,
 * all at once. */
static int
refill(struct cairn_ops_user_walk *walk)
{
    struct cairn_ops_node_call *calls = NULL;
    size_t *owners = NULL, asked = 0;
    int rc = 0;

    if ((calls = calloc(walk->count + 1, sizeof(*calls))) == NULL ||
        (owners = calloc(walk->count + 1, sizeof(*owners))) == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < walk->count; i++) {
        struct node_cursor *cursor = &walk->cursors[i];

        if (cursor->last_page || cursor->call.status != 0 ||
            cursor_row(cursor) != NULL)
            continue;
        calls[asked].node = cursor->node;
        calls[asked].kind = CAIRN__KIND__STATS_REQUEST;
        calls[asked].page_after = cursor->last_user ? cursor->last_user : "";
        calls[asked].page_limit = PAGE_USERS;
        owners[asked++] = i;
    }
    if (asked == 0)
        goto out;
    if ((rc = cairn_ops_call_nodes(walk->config, calls, asked,
                                   walk->timeout_ms)) < 0)
        goto out;
    for (size_t c = 0; c < asked; c++) {
        struct node_cursor *cursor = &walk->cursors[owners[c]];
        const Cairn__StatusReply *reply = calls[c].status_reply;

        cairn_ops_node_call_release(&cursor->call);
        cursor->call = calls[c];
        memset(&calls[c], 0, sizeof(calls[c]));
        cursor->at = 0;
        if (cursor->call.status != 0)
            continue;
        if (!cursor->call.paged) {
            /* an older node answers with everyone, unordered: refuse
             * rather than merge it wrongly */
            cursor->call.status = CAIRN_EPROTO;
            snprintf(cursor->call.error_text, sizeof(cursor->call.error_text),
                     "the node does not answer in pages (an older "
                     "cairn-node?)");
            continue;
        }
        cursor->last_page = reply->n_users < PAGE_USERS;
        if (reply->n_users == 0)
            continue;
        free(cursor->last_user);
        if ((cursor->last_user =
                 strdup(reply->users[reply->n_users - 1]->user)) == NULL) {
            rc = CAIRN_ENOMEM;
            goto out;
        }
    }
out:
    if (calls != NULL)
        for (size_t c = 0; c < asked; c++)
            cairn_ops_node_call_release(&calls[c]);
    free(calls);
    free(owners);
    return rc;
}

int
cairn_ops_user_walk_new(const struct cairn_config *config, const size_t *nodes,
                        size_t count, uint64_t timeout_ms,
                        struct cairn_ops_user_walk **out)
{
    struct cairn_ops_user_walk *walk = calloc(1, sizeof(*walk));

    *out = NULL;
    if (walk == NULL)
        return CAIRN_ENOMEM;
    walk->config = config;
    walk->timeout_ms = timeout_ms;
    walk->count = count;
    walk->cursors = calloc(count + 1, sizeof(*walk->cursors));
    walk->rows = calloc(count + 1, sizeof(*walk->rows));
    if (walk->cursors == NULL || walk->rows == NULL) {
        cairn_ops_user_walk_free(walk);
        return CAIRN_ENOMEM;
    }
    for (size_t i = 0; i < count; i++)
        walk->cursors[i].node = nodes[i];
    *out = walk;
    return 0;
}

int
cairn_ops_user_walk_next(struct cairn_ops_user_walk *walk, const char **user,
                         const Cairn__UserStats *const **rows)
{
    const char *least = NULL;
    int rc;

    free(walk->user);
    walk->user = NULL;
    /* the rows handed out last time are consumed now */
    for (size_t i = 0; i < walk->count; i++)
        if (walk->rows[i] != NULL)
            walk->cursors[i].at++;
    if ((rc = refill(walk)) < 0)
        return rc;
    for (size_t i = 0; i < walk->count; i++) {
        const Cairn__UserStats *row = cursor_row(&walk->cursors[i]);

        if (row != NULL && (least == NULL || strcmp(row->user, least) < 0))
            least = row->user;
    }
    if (least == NULL)
        return 0;
    for (size_t i = 0; i < walk->count; i++) {
        const Cairn__UserStats *row = cursor_row(&walk->cursors[i]);

        walk->rows[i] =
            row != NULL && strcmp(row->user, least) == 0 ? row : NULL;
    }
    if ((walk->user = strdup(least)) == NULL)
        return CAIRN_ENOMEM;
    *user = walk->user;
    *rows = walk->rows;
    return 1;
}

int
cairn_ops_user_walk_status(const struct cairn_ops_user_walk *walk, size_t index,
                           const char **error)
{
    const struct node_cursor *cursor = &walk->cursors[index];

    *error = cursor->call.error_text;
    return cursor->call.status;
}

size_t
cairn_ops_user_walk_node(const struct cairn_ops_user_walk *walk, size_t index)
{
    return walk->cursors[index].node;
}

void
cairn_ops_user_walk_free(struct cairn_ops_user_walk *walk)
{
    if (walk == NULL)
        return;
    for (size_t i = 0; walk->cursors != NULL && i < walk->count; i++) {
        cairn_ops_node_call_release(&walk->cursors[i].call);
        free(walk->cursors[i].last_user);
    }
    free(walk->cursors);
    free(walk->rows);
    free(walk->user);
    free(walk);
}
