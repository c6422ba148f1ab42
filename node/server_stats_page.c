/*
 * server_stats_page.c - STATS_REQUEST in pages (Envelope.page_limit > 0):
 * at most page_limit users after page_after, in userid order, each with
 * its figures, and nothing else (no node totals) - so cairnctl can walk a
 * million users one page at a time (ops/user_walk.c) without the node or
 * cairnctl holding them all.
 */
#include "common.h"
#include "server_int.h"

#include <stdio.h>
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
    uint64_t total_bytes; /* node_total_bytes */
    char last[1024];      /* the last user seen: where the next page starts */
    size_t seen;
};

void
node_fill_user_stats(Cairn__UserStats *stats,
                     const struct cairn_user_figures *figures)
{
    stats->bytes_on_disk = figures->bytes_on_disk;
    stats->raw_bytes = figures->raw_bytes;
    stats->chunks = figures->chunks;
    stats->last_backup_time = figures->last_backup_time;
    stats->messages = figures->messages;
    stats->mailboxes = figures->mailboxes;
}

/* The user's figures: the cached ones, or read from the index and kept. */
static void
figures_of(struct cairn_node_server *server, const char *userid,
           const char *data_path, const struct cairn_user_figures *cached,
           struct cairn_user_figures *figures)
{
    if (cached != NULL) {
        *figures = *cached;
        return;
    }
    /* a user whose index cannot be read is still listed (figures 0):
     * a walk must not skip it; nothing is cached for it */
    if (cairn_user_figures_read(data_path, figures) == 0)
        (void)cairn_catalog_figures_put(server->catalog, userid, figures);
}

static int
add_user(void *ctx, const char *userid, const char *data_path,
         const struct cairn_user_figures *cached)
{
    struct page *page = ctx;
    Cairn__UserStats *stats = &page->stats[page->count];
    struct cairn_user_figures figures;

    cairn__user_stats__init(stats);
    if ((page->names[page->count] = strdup(userid)) == NULL)
        return CAIRN_ENOMEM;
    stats->user = page->names[page->count];
    figures_of(page->server, userid, data_path, cached, &figures);
    node_fill_user_stats(stats, &figures);
    page->pointers[page->count] = stats;
    page->count++;
    return 0;
}

static int
add_bytes(void *ctx, const char *userid, const char *data_path,
          const struct cairn_user_figures *cached)
{
    struct page *page = ctx;
    struct cairn_user_figures figures;

    figures_of(page->server, userid, data_path, cached, &figures);
    page->total_bytes += figures.bytes_on_disk;
    snprintf(page->last, sizeof(page->last), "%s", userid);
    page->seen++;
    return 0;
}

int
node_total_bytes(struct cairn_node_server *server, uint64_t *bytes)
{
    struct page page = {server, NULL, NULL, NULL, 0, 0, "", 0};
    int rc = 0;

    /* in pages, each in one transaction for the figures it keeps */
    do {
        page.seen = 0;
        if ((rc = cairn_catalog_figures_begin(server->catalog)) < 0)
            break;
        rc = cairn_catalog_figures_page(server->catalog, page.last,
                                        MAX_PAGE_USERS, add_bytes, &page);
        if (cairn_catalog_figures_end(server->catalog) < 0 && rc == 0)
            rc = CAIRN_EDB;
    } while (rc == 0 && page.seen == MAX_PAGE_USERS);
    *bytes = page.total_bytes;
    return rc;
}

int
node_answer_stats_page(struct cairn_node_server *server,
                       struct node_request *request)
{
    const Cairn__Envelope *envelope = request->envelope;
    Cairn__StatusReply reply = CAIRN__STATUS_REPLY__INIT;
    Cairn__NodeStats node = CAIRN__NODE_STATS__INIT;
    struct page page = {server, NULL, NULL, NULL, 0, 0, "", 0};
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
    if ((rc = cairn_catalog_figures_begin(server->catalog)) < 0)
        goto out;
    rc = cairn_catalog_figures_page(server->catalog, envelope->page_after,
                                    limit, add_user, &page);
    if (cairn_catalog_figures_end(server->catalog) < 0 && rc == 0)
        rc = CAIRN_EDB;
    if (rc < 0)
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
