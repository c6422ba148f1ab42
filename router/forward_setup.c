/*
 * forward_setup.c - a forwarder's life around its requests (forward.c):
 * made from a destination's ring and nodes, its marks file read back,
 * its nodes watched (forward_health.c), reloaded on SIGHUP (a newer
 * ring, new node endpoints), its ring swapped
 * by a rebalance (control.c), and freed with its marks saved.
 */
#include "forward_int.h"
#include "node_client.h"
#include "placement.h"
#include "router_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Connects a node; the marks file names it (NULL index: not needed). */
static int
add_node(struct cairn_router_forward *forward, const char *name,
         const char *endpoint, size_t *index)
{
    size_t added = 0;
    int rc =
        cairn_node_client_add_node(forward->client, name, endpoint, &added);

    if (rc == 0)
        rc = cairn_router_marks_name_node(forward->marks, added, name);
    if (rc == 0)
        rc = cairn_router_health_add_node(forward, added, name, endpoint);
    if (rc == 0 && index != NULL)
        *index = added;
    return rc;
}

/* Connects the nodes of settings the client does not know yet. */
static int
add_new_nodes(struct cairn_router_forward *forward,
              const struct cairn_router_forward_settings *settings)
{
    int rc = 0;

    for (size_t j = 0, known; j < settings->node_count && rc == 0; j++)
        if (cairn_node_client_find_node(forward->client,
                                        settings->nodes[j].name,
                                        &known) == CAIRN_ENOENT)
            rc = add_node(forward, settings->nodes[j].name,
                          settings->nodes[j].endpoint, NULL);
    return rc;
}

/* The marks file's news: its summary at start (INFO), its problems. */
static void
marks_news(void *arg, bool warning, const char *message)
{
    struct cairn_router_forward *forward = arg;
    struct cairn_router_event event = {
        .level = warning ? CAIRN_ROUTER_EVENT_WARN : CAIRN_ROUTER_EVENT_INFO,
        .channel = forward->destination,
        .message = message,
    };

    if (forward->event_fn != NULL)
        forward->event_fn(forward->event_arg, &event);
}

int
cairn_router_forward_new(struct cairn_loop *loop,
                         const struct cairn_router_forward_settings *settings,
                         struct cairn_router_forward **out, char *error,
                         size_t error_size)
{
    struct cairn_node_client_settings client_settings = {
        .timeout_ms = settings->timeout_ms,
        .node_window = settings->node_window,
        .user_window = settings->user_window,
        .max_frame = settings->max_frame,
    };
    struct cairn_router_forward *forward = calloc(1, sizeof(*forward));
    size_t count;
    int rc = CAIRN_ENOMEM;

    *out = NULL;
    if (forward == NULL)
        return CAIRN_ENOMEM;
    forward->max_frame = settings->max_frame ? settings->max_frame : 1 << 20;
    forward->ack = settings->ack;
    forward->event_fn = settings->event_fn;
    forward->event_arg = settings->event_arg;
    if ((rc = cairn_router_sequences_new(&forward->sequences)) < 0)
        goto out;
    if ((rc = cairn_router_health_start(forward, loop,
                                        settings->answer_timeout_ms,
                                        client_settings.timeout_ms)) < 0)
        goto out;
    rc = CAIRN_ENOMEM;
    forward->destination = strdup(settings->destination);
    if (forward->destination == NULL)
        goto out;
    rc = cairn_router_marks_new(loop, settings->state_dir, forward->destination,
                                marks_news, forward, &forward->marks);
    if (rc < 0) {
        snprintf(error, error_size, "cannot use state directory %s: %s",
                 settings->state_dir, cairn_strerror(rc));
        goto out;
    }
    if ((rc = cairn_ring_load(settings->ring_file, &forward->ring)) < 0) {
        snprintf(error, error_size, "cannot load ring %s: %s",
                 settings->ring_file, cairn_strerror(rc));
        goto out;
    }
    count = cairn_ring_node_count(forward->ring);
    forward->client_node = calloc(count + 1, sizeof(*forward->client_node));
    rc = forward->client_node == NULL
             ? CAIRN_ENOMEM
             : cairn_node_client_new(loop, NULL, &client_settings,
                                     &forward->client);
    for (size_t i = 0; i < count && rc == 0; i++) {
        struct cairn_ring_node_info info;
        const char *endpoint = NULL;

        cairn_ring_node_info(forward->ring, i, &info);
        for (size_t j = 0; j < settings->node_count; j++)
            if (strcmp(settings->nodes[j].name, info.name) == 0)
                endpoint = settings->nodes[j].endpoint;
        if (endpoint == NULL) {
            snprintf(error, error_size, "ring node %s has no endpoint",
                     info.name);
            rc = CAIRN_ECONFIG;
            break;
        }
        rc = add_node(forward, info.name, endpoint, &forward->client_node[i]);
    }
    /* Nodes a future ring may use (rebalance switches users to them). */
    if (rc == 0)
        rc = add_new_nodes(forward, settings);
    /* An unreadable file loses the marks, not the destination. */
    if (rc == 0)
        (void)cairn_router_marks_load(forward->marks);
out:
    if (rc < 0) {
        cairn_router_forward_free(forward);
        return rc;
    }
    *out = forward;
    return CAIRN_OK;
}

void
cairn_router_forward_free(struct cairn_router_forward *forward)
{
    if (forward == NULL)
        return;
    /* Saves what changed since the last save (a clean shutdown). */
    cairn_router_forward_drop_answered(forward);
    cairn_router_marks_free(forward->marks);
    cairn_router_health_stop(forward);
    cairn_node_client_free(forward->client);
    cairn_ring_free(forward->ring);
    cairn_router_sequences_free(forward->sequences);
    free(forward->client_node);
    free(forward->destination);
    free(forward);
}

int
cairn_router_forward_flush_marks(struct cairn_router_forward *forward)
{
    return cairn_router_marks_flush(forward->marks);
}

void
cairn_router_forward_set_event_handler(struct cairn_router_forward *forward,
                                       cairn_router_event_fn fn, void *arg)
{
    forward->event_fn = fn;
    forward->event_arg = arg;
}

uint64_t
cairn_router_forward_repairs(const struct cairn_router_forward *forward)
{
    return forward->repairs;
}

size_t
cairn_router_forward_repair_marks(const struct cairn_router_forward *forward)
{
    return cairn_router_marks_count(forward->marks);
}

size_t
cairn_router_forward_in_flight(const struct cairn_router_forward *forward)
{
    return forward->in_flight;
}

int
cairn_router_forward_ping(struct cairn_router_forward *forward,
                          const char *node_name, cairn_node_reply_fn fn,
                          void *arg)
{
    struct cairn_node_request ping = {.kind = CAIRN__KIND__PING};
    size_t node;
    int rc = cairn_node_client_find_node(forward->client, node_name, &node);

    if (rc == 0)
        rc =
            cairn_node_client_send(forward->client, node, &ping, fn, arg, NULL);
    return rc;
}

int
cairn_router_forward_reload(
    struct cairn_router_forward *forward,
    const struct cairn_router_forward_settings *settings, bool *replaced,
    char *error, size_t error_size)
{
    struct cairn_ring *ring = NULL;
    int rc;

    *replaced = false;
    if ((rc = cairn_ring_load(settings->ring_file, &ring)) < 0) {
        snprintf(error, error_size, "cannot load ring %s: %s",
                 settings->ring_file, cairn_strerror(rc));
        return rc;
    }
    for (size_t i = 0; i < cairn_ring_node_count(ring) && rc == 0; i++) {
        struct cairn_ring_node_info info;
        bool configured = false;

        cairn_ring_node_info(ring, i, &info);
        for (size_t j = 0; j < settings->node_count; j++)
            configured |= strcmp(settings->nodes[j].name, info.name) == 0;
        if (!configured) {
            snprintf(error, error_size, "ring node %s has no endpoint",
                     info.name);
            rc = CAIRN_ECONFIG;
        }
    }
    if (rc == 0 && cairn_ring_epoch(ring) <= cairn_ring_epoch(forward->ring)) {
        cairn_ring_free(ring); /* same or older: keep the one in use */
        return add_new_nodes(forward, settings);
    }
    if (rc == 0)
        rc = add_new_nodes(forward, settings);
    if (rc < 0) {
        if (error[0] == '\0')
            snprintf(error, error_size, "cannot connect the new nodes");
        cairn_ring_free(ring);
        return rc;
    }
    /* Requests in flight hold node indexes, not the ring: they finish. */
    rc = cairn_router_forward_replace_ring(forward, ring);
    *replaced = rc == 0;
    return rc;
}

/* --- rebalance hooks (control.c) ----------------------------------------- */

const char *
cairn_router_forward_destination(const struct cairn_router_forward *forward)
{
    return forward->destination;
}

const struct cairn_ring *
cairn_router_forward_ring(const struct cairn_router_forward *forward)
{
    return forward->ring;
}

void
cairn_router_forward_set_moves(struct cairn_router_forward *forward,
                               struct cairn_router_moves *moves)
{
    forward->moves = moves;
}

int
cairn_router_forward_replace_ring(struct cairn_router_forward *forward,
                                  struct cairn_ring *ring)
{
    size_t count = cairn_ring_node_count(ring);
    size_t *map = calloc(count + 1, sizeof(*map));
    int rc = map == NULL ? CAIRN_ENOMEM : 0;

    for (size_t i = 0; i < count && rc == 0; i++) {
        struct cairn_ring_node_info info;

        cairn_ring_node_info(ring, i, &info);
        rc = cairn_node_client_find_node(forward->client, info.name, &map[i]);
    }
    if (rc < 0) {
        free(map);
        cairn_ring_free(ring);
        return rc;
    }
    cairn_ring_free(forward->ring);
    free(forward->client_node);
    forward->ring = ring;
    forward->client_node = map;
    return 0;
}
