/*
 * forward.c - the request handler that sends each resolved request to the
 * storage nodes that hold its user (node_client.h wire contract): APPLYs
 * to every replica the ring names, answered OK only when all of them have
 * acknowledged (durable); GETs to the first replica, its items relayed as
 * the untagged lines of the answer. Message bodies go from the spool files
 * straight to the node client, which streams them in bounded frames.
 *
 * Deliberately simple for now: one destination, ack from every replica,
 * no per-user sequence numbers (the session sends one command at a time,
 * which keeps each connection's requests in order), and an APPLY whose
 * dlist is larger than one frame is refused.
 */
#include "node_client.h"
#include "placement.h"
#include "router_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct cairn_router_forward {
    struct cairn_node_client *client;
    struct cairn_ring *ring;
    char *destination;
    size_t *client_node; /* ring node index -> node client index */
    size_t max_frame;
    struct cairn_router_moves *moves; /* rebalance (control.c); NULL: none */
};

/* One request in flight to one or more nodes. */
struct pending {
    struct cairn_router_forward *forward;
    struct cairn_router_reply *reply;
    bool is_get;
    size_t outstanding;
    int status;                  /* first failure, 0 if none */
    char text[256];              /* its text */
    unsigned code;               /* its csync code */
    struct cairn_dlist *missing; /* APPLY RESERVE: union of MISSING GUIDs */
    int *fds;
    size_t fd_count;
    struct cairn_node_body *bodies; /* borrowed by the node client */
    const struct cairn_ring *ring;  /* the user's ring (rebalance) */
    char *user;                     /* counted in flight by the moves */
};

static void
pending_free(struct pending *pending)
{
    for (size_t i = 0; i < pending->fd_count; i++)
        close(pending->fds[i]);
    free(pending->fds);
    free(pending->bodies);
    cairn_dlist_free(pending->missing);
    if (pending->user != NULL)
        cairn_router_moves_finished(pending->forward->moves, pending->user);
    free(pending->user);
    free(pending);
}

static bool
list_has(const struct cairn_dlist *list, const char *text)
{
    for (const struct cairn_dlist *item = cairn_dlist_first(list); item != NULL;
         item = cairn_dlist_next(item)) {
        const char *value = NULL;

        if (cairn_dlist_as_atom(item, &value) && value != NULL &&
            strcmp(value, text) == 0)
            return true;
    }
    return false;
}

/* Relays a node's answer frames: items of a GET, MISSING of a RESERVE. */
static int
take_items(struct pending *pending, const struct cairn_node_reply *reply)
{
    int rc = CAIRN_OK;

    for (size_t i = 0; i < reply->frame_count && rc == 0; i++) {
        struct cairn_dlist *item = NULL;

        rc = cairn_dlist_parse(reply->frames[i].data, reply->frames[i].len,
                               CAIRN_DLIST_PARSE_KEY, NULL, NULL, &item, NULL,
                               0);
        if (rc < 0)
            break;
        if (pending->is_get) {
            rc = cairn_router_reply_untagged(pending->reply, item);
        } else if (strcmp(cairn_dlist_name(item), "MISSING") == 0) {
            for (const struct cairn_dlist *guid = cairn_dlist_first(item);
                 guid != NULL && rc == 0; guid = cairn_dlist_next(guid)) {
                const char *text = NULL;

                if (cairn_dlist_as_atom(guid, &text) && text != NULL &&
                    !list_has(pending->missing, text))
                    rc = cairn_dlist_add_atom(pending->missing, NULL, text);
            }
        }
        cairn_dlist_free(item);
    }
    return rc;
}

static void
finish(struct pending *pending)
{
    char text[320];

    if (pending->status == 0 && cairn_dlist_count(pending->missing) > 0)
        cairn_router_reply_untagged(pending->reply, pending->missing);
    if (pending->status == 0) {
        cairn_router_reply_complete(pending->reply, CAIRN_CSYNC_OK,
                                    CAIRN_CSYNC_CODE_NONE, "Success");
    } else {
        /* The node's words after the code sync_client acts on. */
        snprintf(text, sizeof(text), "%s",
                 pending->text[0] ? pending->text
                                  : cairn_strerror(pending->status));
        cairn_router_reply_complete(pending->reply, CAIRN_CSYNC_NO,
                                    (enum cairn_csync_code)pending->code, text);
    }
    pending_free(pending);
}

static void
on_node_reply(void *arg, const struct cairn_node_reply *reply)
{
    struct pending *pending = arg;
    int rc = reply->status;

    if (rc == 0)
        rc = take_items(pending, reply);
    if (rc < 0 && pending->status == 0) {
        pending->status = rc;
        pending->code = CAIRN_CSYNC_CODE_NONE;
        if (reply->envelope != NULL) {
            snprintf(pending->text, sizeof(pending->text), "%s",
                     reply->envelope->error_text ? reply->envelope->error_text
                                                 : "");
            pending->code = reply->envelope->csync_code;
        }
        /* A node that cannot be reached: a NO sync_client retries. */
        if (rc == CAIRN_EUNAVAILABLE || rc == CAIRN_ETIMEOUT)
            pending->code = CAIRN_CSYNC_CODE_MAILBOX_LOCKED;
    }
    if (--pending->outstanding == 0)
        finish(pending);
}

/* Opens the spooled body of every FILE node, in tree order. */
static int
open_bodies(struct pending *pending, const struct cairn_dlist *value,
            size_t *count)
{
    size_t files = 0;

    for (const struct cairn_dlist *item = cairn_dlist_first(value);
         item != NULL; item = cairn_dlist_next(item))
        files += cairn_dlist_file_info(item, NULL, NULL, NULL, NULL);
    *count = 0;
    pending->bodies = calloc(files + 1, sizeof(*pending->bodies));
    pending->fds = calloc(files + 1, sizeof(*pending->fds));
    if (pending->bodies == NULL || pending->fds == NULL)
        return CAIRN_ENOMEM;
    for (const struct cairn_dlist *item = cairn_dlist_first(value);
         item != NULL; item = cairn_dlist_next(item)) {
        const char *path;
        void *handle = NULL;
        uint64_t size = 0;
        int fd;

        if (!cairn_dlist_file_info(item, NULL, NULL, &size, &handle))
            continue;
        path = cairn_router_spool_file_path(handle);
        fd = path != NULL ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        if (fd < 0)
            return CAIRN_EIO; /* bodies are only forwarded from a spool */
        pending->fds[pending->fd_count++] = fd;
        pending->bodies[(*count)++] =
            (struct cairn_node_body){.fd = fd, .size = size};
    }
    return CAIRN_OK;
}

/* The FILE nodes print as their header alone; bodies travel as frames. */
static int
no_body(void *ctx, const struct cairn_dlist *file, struct cairn_buf *out)
{
    return CAIRN_OK;
}

/* The node client index of node (an index of ring, maybe the new one). */
static int
client_node(struct cairn_router_forward *forward, const struct cairn_ring *ring,
            uint16_t node, size_t *index)
{
    struct cairn_ring_node_info info;

    if (ring == forward->ring) {
        *index = forward->client_node[node];
        return 0;
    }
    if (cairn_ring_node_info(ring, node, &info) < 0)
        return CAIRN_ENOENT;
    return cairn_node_client_find_node(forward->client, info.name, index);
}

static int
send_to_replicas(struct cairn_router_forward *forward, struct pending *pending,
                 const struct cairn_router_request *request,
                 struct cairn_node_request *node_request)
{
    const char *user = request->resolution->owner.userid;
    uint16_t replicas[CAIRN_RING_MAX_REPLICAS];
    size_t count = pending->is_get ? 1 : cairn_ring_replicas(pending->ring);
    int rc = CAIRN_OK;

    cairn_ring_lookup(pending->ring, user, strlen(user), replicas);
    pending->outstanding = count + 1; /* +1 until every send is queued */
    for (size_t i = 0; i < count; i++) {
        size_t node = 0;

        rc = client_node(forward, pending->ring, replicas[i], &node);
        if (rc == 0)
            rc = cairn_node_client_send(forward->client, node, node_request,
                                        on_node_reply, pending, NULL);
        if (rc < 0) {
            pending->outstanding -= count - i;
            break;
        }
    }
    if (rc < 0 && pending->status == 0) {
        pending->status = rc;
        pending->code = CAIRN_CSYNC_CODE_MAILBOX_LOCKED;
    }
    /* Callbacks come from the loop, never from inside send: finish here
     * only if nothing was queued. */
    if (--pending->outstanding == 0)
        finish(pending);
    return CAIRN_OK;
}

int
cairn_router_forward_request(void *arg,
                             const struct cairn_router_request *request,
                             struct cairn_router_reply *reply)
{
    struct cairn_router_forward *forward = arg;
    struct cairn_node_request node_request;
    struct cairn_dlist_body_writer writer = {.write_body = no_body};
    struct cairn_node_frame frame;
    size_t body_count = 0;
    struct pending *pending = calloc(1, sizeof(*pending));
    struct cairn_buf printed;
    int rc = CAIRN_ENOMEM;

    cairn_buf_init(&printed, forward->max_frame);
    if (pending == NULL)
        goto out;
    pending->forward = forward;
    pending->reply = reply;
    pending->is_get = request->verb == CAIRN_CSYNC_GET;
    pending->ring = cairn_router_moves_route(
        forward->moves, request->resolution->owner.userid, forward->ring);
    if (pending->ring == NULL) {
        /* Being moved (cairnctl rebalance): a NO sync_client retries. */
        free(pending);
        cairn_buf_release(&printed);
        return cairn_router_reply_complete(reply, CAIRN_CSYNC_NO,
                                           CAIRN_CSYNC_CODE_MAILBOX_LOCKED,
                                           "user is being moved");
    }
    if (forward->moves != NULL) {
        rc = cairn_router_moves_started(forward->moves,
                                        request->resolution->owner.userid);
        if (rc == 0 && (pending->user = strdup(
                            request->resolution->owner.userid)) == NULL) {
            cairn_router_moves_finished(forward->moves,
                                        request->resolution->owner.userid);
            rc = CAIRN_ENOMEM;
        }
        if (rc < 0)
            goto out;
    }
    pending->missing = cairn_dlist_new_list("MISSING");
    if (pending->missing == NULL)
        goto out;
    rc = cairn_dlist_print(request->value, true, &printed, &writer);
    if (rc == CAIRN_ETOOBIG) {
        /* The node contract wants the dlist in one frame. */
        rc = cairn_router_reply_complete(
            reply, CAIRN_CSYNC_NO, CAIRN_CSYNC_CODE_NONE,
            "cairn router: command larger than one frame ([limits] "
            "max_frame), not stored");
        goto out;
    }
    if (rc == 0 && !pending->is_get)
        rc = open_bodies(pending, request->value, &body_count);
    if (rc < 0)
        goto out;
    frame = (struct cairn_node_frame){printed.data, printed.len};
    node_request = (struct cairn_node_request){
        .kind =
            pending->is_get ? CAIRN__KIND__STATE_REQUEST : CAIRN__KIND__APPLY,
        .user = request->resolution->owner.userid,
        .destination = forward->destination,
        .verb = pending->is_get ? "GET" : "APPLY",
        .key = request->resolution->key,
        .ring_epoch = cairn_ring_epoch(pending->ring),
        .frames = &frame,
        .frame_count = 1,
        .bodies = pending->bodies,
        .body_count = body_count,
    };
    rc = send_to_replicas(forward, pending, request, &node_request);
    pending = NULL; /* finish() or a callback frees it */
    if (rc == 0)
        rc = CAIRN_EAGAIN; /* answered from on_node_reply */
out:
    if (pending != NULL)
        pending_free(pending);
    cairn_buf_release(&printed);
    return rc;
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
    forward->destination = strdup(settings->destination);
    if (forward->destination == NULL)
        goto out;
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
        rc = cairn_node_client_add_node(forward->client, info.name, endpoint,
                                        &forward->client_node[i]);
    }
    /* Nodes a future ring may use (rebalance switches users to them). */
    for (size_t j = 0, known; j < settings->node_count && rc == 0; j++)
        if (cairn_node_client_find_node(forward->client,
                                        settings->nodes[j].name,
                                        &known) == CAIRN_ENOENT)
            rc = cairn_node_client_add_node(forward->client,
                                            settings->nodes[j].name,
                                            settings->nodes[j].endpoint, NULL);
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
    cairn_node_client_free(forward->client);
    cairn_ring_free(forward->ring);
    free(forward->client_node);
    free(forward->destination);
    free(forward);
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
