/*
 * stage.c - APPLY MESSAGE bodies of one connection waiting for the APPLY
 * MAILBOX whose records name them. sync_client 3.6 uploads a mailbox's new
 * bodies right before that mailbox's APPLY MAILBOX, and a RESERVE may span
 * several users (rolling mode with a replication cache): only the MAILBOX
 * says whose a body is. The session keeps each MESSAGE command here (its
 * tree owns the spooled files) and hands the bodies a MAILBOX refers to
 * to that user's nodes with it, so a body never lands in another user's
 * backup (backupd writes it into every backup open on the connection).
 */
#include "router_int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* One staged body: a FILE node of a kept command. */
struct staged_body {
    const char *guid; /* borrowed from the tree, lowercase */
    const struct cairn_dlist *file;
    size_t command; /* index into commands */
    uint64_t order; /* staging order: the first upload of a GUID wins */
    bool collected; /* sent with the MAILBOX now in flight */
    bool delivered; /* sent with a MAILBOX answered OK */
};

struct cairn_router_stage {
    struct cairn_csync_command *commands;
    size_t command_count, command_capacity;
    struct staged_body *bodies;
    size_t body_count, body_capacity;
    bool sorted; /* bodies ordered by GUID */
    uint64_t next_order;
};

int
cairn_router_stage_new(struct cairn_router_stage **out)
{
    *out = calloc(1, sizeof(**out));
    return *out != NULL ? CAIRN_OK : CAIRN_ENOMEM;
}

void
cairn_router_stage_clear(struct cairn_router_stage *stage)
{
    for (size_t i = 0; i < stage->command_count; i++)
        cairn_csync_command_release(&stage->commands[i]);
    stage->command_count = 0;
    stage->body_count = 0;
    stage->sorted = true;
}

void
cairn_router_stage_free(struct cairn_router_stage *stage)
{
    if (stage == NULL)
        return;
    cairn_router_stage_clear(stage);
    free(stage->commands);
    free(stage->bodies);
    free(stage);
}

size_t
cairn_router_stage_body_count(const struct cairn_router_stage *stage)
{
    return stage->body_count;
}

/* Grows *array to hold one more element of size bytes. */
static int
make_room(void **array, size_t *capacity, size_t count, size_t size)
{
    size_t wanted = *capacity ? *capacity * 2 : 8;
    void *grown;

    if (count < *capacity)
        return CAIRN_OK;
    if ((grown = realloc(*array, wanted * size)) == NULL)
        return CAIRN_ENOMEM;
    *array = grown;
    *capacity = wanted;
    return CAIRN_OK;
}

int
cairn_router_stage_add(struct cairn_router_stage *stage,
                       struct cairn_csync_command *cmd, size_t *added)
{
    size_t files = 0;
    int rc;

    *added = 0;
    for (const struct cairn_dlist *item = cairn_dlist_first(cmd->value);
         item != NULL; item = cairn_dlist_next(item))
        files += cairn_dlist_file_info(item, NULL, NULL, NULL, NULL);
    if ((rc = make_room((void **)&stage->commands, &stage->command_capacity,
                        stage->command_count, sizeof(*stage->commands))) < 0)
        return rc;
    while (stage->body_capacity < stage->body_count + files)
        if ((rc = make_room((void **)&stage->bodies, &stage->body_capacity,
                            stage->body_capacity, sizeof(*stage->bodies))) < 0)
            return rc;
    for (const struct cairn_dlist *item = cairn_dlist_first(cmd->value);
         item != NULL; item = cairn_dlist_next(item)) {
        struct staged_body *body = &stage->bodies[stage->body_count];

        if (!cairn_dlist_file_info(item, NULL, &body->guid, NULL, NULL))
            continue;
        body->file = item;
        body->command = stage->command_count;
        body->order = stage->next_order++;
        body->collected = false;
        body->delivered = false;
        stage->body_count++;
        (*added)++;
    }
    /* The stage owns the command from here on. */
    stage->commands[stage->command_count++] = *cmd;
    memset(cmd, 0, sizeof(*cmd));
    stage->sorted = stage->body_count <= 1;
    return CAIRN_OK;
}

static int
compare_bodies(const void *a, const void *b)
{
    const struct staged_body *left = a, *right = b;
    int order = strcasecmp(left->guid, right->guid);

    if (order != 0)
        return order;
    return left->order < right->order ? -1 : left->order > right->order;
}

static int
compare_guid(const void *key, const void *element)
{
    return strcasecmp(key, ((const struct staged_body *)element)->guid);
}

/* The first staged body with guid, or NULL. */
static struct staged_body *
find_body(struct cairn_router_stage *stage, const char *guid)
{
    struct staged_body *body;

    if (!stage->sorted) {
        qsort(stage->bodies, stage->body_count, sizeof(*stage->bodies),
              compare_bodies);
        stage->sorted = true;
    }
    body = bsearch(guid, stage->bodies, stage->body_count,
                   sizeof(*stage->bodies), compare_guid);
    while (body != NULL && body > stage->bodies &&
           strcasecmp(body[-1].guid, guid) == 0)
        body--;
    return body;
}

/* Adds the staged body a record's GUID names to message (once). */
static int
collect_record(struct cairn_router_stage *stage,
               const struct cairn_dlist *record, struct cairn_dlist *message,
               size_t *count)
{
    const char *guid = NULL, *partition;
    struct staged_body *body;
    uint64_t size;
    void *handle;

    /* Two records of one mailbox may share a body: send it once. */
    if (!cairn_dlist_get_guid(record, "GUID", &guid) ||
        (body = find_body(stage, guid)) == NULL || body->collected)
        return CAIRN_OK;
    cairn_dlist_file_info(body->file, &partition, NULL, &size, &handle);
    body->collected = true;
    (*count)++;
    /* The handle stays the kept command's (no release function here). */
    return cairn_dlist_add_file(message, NULL, partition, body->guid, size,
                                handle, NULL, NULL);
}

int
cairn_router_stage_collect(struct cairn_router_stage *stage,
                           const struct cairn_dlist *mailbox,
                           struct cairn_dlist **message, size_t *count)
{
    const struct cairn_dlist *records = NULL;
    struct cairn_dlist *list = NULL;
    int rc = CAIRN_OK;

    *message = NULL;
    *count = 0;
    if (stage->body_count == 0 ||
        !cairn_dlist_get_list(mailbox, "RECORD", &records))
        return CAIRN_OK;
    if ((list = cairn_dlist_new_list("MESSAGE")) == NULL)
        return CAIRN_ENOMEM;
    for (const struct cairn_dlist *record = cairn_dlist_first(records);
         record != NULL && rc == 0; record = cairn_dlist_next(record))
        rc = collect_record(stage, record, list, count);
    if (rc < 0 || *count == 0) {
        cairn_dlist_free(list);
        return rc;
    }
    *message = list;
    return CAIRN_OK;
}

/* Drops the commands every body of which was delivered. */
static void
release_delivered(struct cairn_router_stage *stage)
{
    bool *keep = calloc(stage->command_count + 1, sizeof(*keep));
    size_t *moved_to = calloc(stage->command_count + 1, sizeof(*moved_to));
    size_t commands = 0, bodies = 0;

    if (keep == NULL || moved_to == NULL)
        goto out; /* kept until the batch ends: only the spool waits */
    for (size_t i = 0; i < stage->body_count; i++)
        keep[stage->bodies[i].command] |= !stage->bodies[i].delivered;
    for (size_t i = 0; i < stage->command_count; i++) {
        if (!keep[i]) {
            cairn_csync_command_release(&stage->commands[i]);
            continue;
        }
        moved_to[i] = commands;
        stage->commands[commands++] = stage->commands[i];
    }
    /* Filtering in place keeps the GUID order. */
    for (size_t i = 0; i < stage->body_count; i++) {
        struct staged_body body = stage->bodies[i];

        if (!keep[body.command])
            continue;
        body.command = moved_to[body.command];
        stage->bodies[bodies++] = body;
    }
    stage->command_count = commands;
    stage->body_count = bodies;
out:
    free(keep);
    free(moved_to);
}

void
cairn_router_stage_settle(struct cairn_router_stage *stage, bool stored)
{
    for (size_t i = 0; i < stage->body_count; i++) {
        struct staged_body *body = &stage->bodies[i];

        body->delivered |= stored && body->collected;
        body->collected = false;
    }
    if (stored)
        release_delivered(stage);
}
