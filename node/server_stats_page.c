/*
 * server_stats_page.c - STATS_REQUEST in pages (Envelope.page_limit > 0):
 * at most page_limit users after page_after, in userid order, each with
 * its figures, and nothing else (no node totals) - so cairnctl can walk a
 * million users one page at a time (ops/user_walk.c) without the node or
 * cairnctl holding them all.
 */
#include "common.h"
#include "server_int.h"

#include <stdlib.h>
#include <string.h>

/* Largest page a node answers, whatever it is asked. */
#define MAX_PAGE_USERS 16384
#define MAX_PAGE_BYTES (64u * 1024 * 1024)

struct page {
    struct cairn_node_server *server;
    Cairn__UserStats *stats;
    Cairn__UserStats **pointers;
    char **names;
    size_t count;
};

static int
add_user(void *ctx, const char *userid, const char *data_path)
{
    struct page *page = ctx;
    Cairn__UserStats *stats = &page->stats[page->count];

    (void)data_path;
    cairn__user_stats__init(stats);
    if ((page->names[page->count] = strdup(userid)) == NULL)
        return CAIRN_ENOMEM;
    stats->user = page->names[page->count];
    /* a user whose index cannot be read is still listed (figures 0):
     * the walk must not skip it */
    (void)node_user_stats(page->server, userid, stats);
    page->pointers[page->count] = stats;
    page->count++;
    return 0;
}

int
node_answer_stats_page(struct cairn_node_server *server,
                       struct node_request *request)
{
    const Cairn__Envelope *envelope = request->envelope;
    Cairn__StatusReply reply = CAIRN__STATUS_REPLY__INIT;
    Cairn__NodeStats node = CAIRN__NODE_STATS__INIT;
    struct page page = {server, NULL, NULL, NULL, 0};
    size_t limit = envelope->page_limit < MAX_PAGE_USERS ? envelope->page_limit
                                                         : MAX_PAGE_USERS;
    struct cairn_buf frame;
    size_t size;
    int rc;

    cairn_buf_init(&frame, MAX_PAGE_BYTES);
    page.stats = calloc(limit + 1, sizeof(*page.stats));
    page.pointers = calloc(limit + 1, sizeof(*page.pointers));
    page.names = calloc(limit + 1, sizeof(*page.names));
    if (page.stats == NULL || page.pointers == NULL || page.names == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    if ((rc = cairn_catalog_foreach_page(server->catalog, envelope->page_after,
                                         limit, add_user, &page)) < 0)
        goto out;
    node.node = (char *)server->settings.name;
    node.paged = true;
    reply.node = &node;
    reply.users = page.pointers;
    reply.n_users = page.count;
    size = cairn__status_reply__get_packed_size(&reply);
    if ((rc = cairn_buf_reserve(&frame, size + 1)) < 0)
        goto out;
    cairn__status_reply__pack(&reply, (uint8_t *)frame.data);
    frame.len = size;
    rc = node_reply(server, request, CAIRN__KIND__STATS_REPLY, &frame, 1, true);
out:
    for (size_t i = 0; i < page.count; i++)
        free(page.names[i]);
    free(page.names);
    free(page.pointers);
    free(page.stats);
    cairn_buf_release(&frame);
    return rc;
}
