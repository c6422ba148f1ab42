/*
 * forward.c - the request handler that sends each resolved request to the
 * storage nodes that hold its user (node_client.h wire contract). APPLYs
 * go to every replica the ring names, each with the next sequence number
 * of its (user, node) stream, and are answered OK once the destination's
 * ack policy is met (all, quorum, one); a replica that misses an update
 * answered OK is reported as needing repair. GETs go to the first replica
 * and on to the next when a node is down or times out. The APPLY MESSAGE
 * bodies staged for an APPLY MAILBOX (session.c, stage.c) go ahead of it
 * in the same user's streams, answered together. Bodies go from the spool
 * files straight to the node client, which streams them in bounded
 * frames; a dlist larger than one frame is cut by the node client
 * (Envelope.dlist_frames).
 *
 * One destination per forward: main.c fans a channel's writes out over
 * its destinations' forwards. Every write is stamped once with its time
 * (Envelope.update_time; forward_int.h), the same for every replica and
 * destination, which the nodes write instead of their own clocks.
 *
 * Repair marks: sync_client sends only what the state it GETs lacks, so a
 * replica that missed a write (timeout, unreachable, error; whether the
 * client got OK or NO) would stay behind once another replica answers its
 * GETs. Every failed write marks (user, node) "behind" in a bounded set
 * (MAX_REPAIR_MARKS); a GET of a user with a marked replica asks that
 * replica first (the next one when it does not answer), so the client
 * resends the delta to every replica; replicas that have it already
 * re-apply it (the node upserts, and stores no body it holds again; only
 * the log's records grow). A GET the marked
 * node answered makes the mark "asked"; any failed write to it makes it
 * "behind" again. The mark is cleared at the next GET USER of the user
 * (sync_client's next pass over it) while still "asked": the node then
 * answered the state the client resent from and took every write since.
 * With a state directory the marks outlive the process: they are kept in
 * <state_dir>/repair-marks.<destination> (forward_marks.c), read back
 * when the forward is made, so a restart forgets no lagging replica.
 */
#include "forward_int.h"
#include "node_client.h"
#include "placement.h"
#include "router_int.h"
#include "router_metrics_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Largest command forwarded: what the node client and node accept. */
#define MAX_COMMAND_BYTES (256u * 1024 * 1024)

struct pending;

/* What one node request carries: the user, the key (static), the tree. */
struct request_part {
    const char *userid;
    const char *key;
    const struct cairn_dlist *value;
    int64_t stamp; /* the write's time (APPLY) */
};

/*
 * One write made of several node requests (a channel with several
 * destinations; an APPLY MAILBOX with its staged bodies): answered OK when
 * every one met its destination's policy; the MISSING of a RESERVE is the
 * union over the destinations.
 */
struct group {
    struct cairn_router_reply *reply;
    size_t outstanding; /* requests not answered yet */
    bool ok;
    char text[320];
    unsigned code;
    struct cairn_dlist *missing;
};

/* One replica of the request's user. */
struct target {
    struct cairn_router_waiter waiter; /* in its node's list while waiting */
    bool waiting;                      /* its answer still counts */
    struct pending *pending;
    size_t node;         /* node client index */
    uint64_t request_id; /* the node client's, to withdraw it */
    char name[64];       /* node name, for the logs */
    int status;          /* 0 acknowledged, < 0 failed, 1 not answered yet */
    char text[128];      /* why it failed */
};

/* A waiter is a target (cairn_router_forward_abandon). */
_Static_assert(offsetof(struct target, waiter) == 0, "waiter first");

/* One request in flight to one or more nodes. */
struct pending {
    struct pending *prev, *next; /* the forward's requests in flight */
    struct cairn_router_forward *forward;
    struct cairn_router_reply *reply; /* NULL when grouped */
    struct group *group;              /* several requests, or NULL */
    bool is_get, is_reserve;
    bool answered, answered_ok;
    const char *key; /* static (command table or "MESSAGE") */
    char userid[CAIRN_ROUTER_USERID_MAX];
    uint64_t epoch;
    int64_t stamp; /* Envelope.update_time of an APPLY */
    struct target targets[CAIRN_RING_MAX_REPLICAS];
    size_t target_count;
    size_t next_target; /* GET: the replica to try next */
    size_t required;    /* acks the policy needs */
    size_t outstanding; /* node client callbacks still to come */
    size_t waiting;     /* targets whose answer still counts */
    size_t acks, failures;
    bool settled;   /* every target answered or given up: marks done */
    int status;     /* the failure answered, 0 if none */
    char text[256]; /* its text */
    unsigned code;  /* its csync code */
    struct cairn_buf printed;    /* the dlist (frame 1) */
    struct cairn_dlist *missing; /* APPLY RESERVE: union of MISSING GUIDs */
    int *fds;
    size_t fd_count;
    struct cairn_node_body *bodies; /* borrowed by the node client */
    size_t body_count;
    char *user; /* counted in flight by the moves */
};

static void
pending_free(struct pending *pending)
{
    struct cairn_router_forward *forward = pending->forward;

    if (pending->prev != NULL)
        pending->prev->next = pending->next;
    else
        forward->pendings = pending->next;
    if (pending->next != NULL)
        pending->next->prev = pending->prev;
    for (size_t i = 0; i < pending->fd_count; i++)
        close(pending->fds[i]);
    free(pending->fds);
    free(pending->bodies);
    cairn_dlist_free(pending->missing);
    cairn_buf_release(&pending->printed);
    if (pending->user != NULL)
        cairn_router_moves_finished(pending->forward->moves, pending->user);
    pending->forward->in_flight--;
    free(pending->user);
    free(pending);
}

static void report(struct cairn_router_forward *forward, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
report(struct cairn_router_forward *forward, const char *fmt, ...)
{
    struct cairn_router_event event = {.level = CAIRN_ROUTER_EVENT_WARN,
                                       .channel = forward->destination};
    char message[512];
    va_list args;

    if (forward->event_fn == NULL)
        return;
    va_start(args, fmt);
    vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);
    event.message = message;
    forward->event_fn(forward->event_arg, &event);
}

static void report_debug(struct cairn_router_forward *forward, const char *fmt,
                         ...) __attribute__((format(printf, 2, 3)));

/* A DEBUG event: what happens to each request, for the curious. */
static void
report_debug(struct cairn_router_forward *forward, const char *fmt, ...)
{
    struct cairn_router_event event = {.level = CAIRN_ROUTER_EVENT_DEBUG,
                                       .channel = forward->destination};
    char message[512];
    va_list args;

    if (forward->event_fn == NULL)
        return;
    va_start(args, fmt);
    vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);
    event.message = message;
    forward->event_fn(forward->event_arg, &event);
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

static int merge_missing(struct cairn_dlist *into,
                         const struct cairn_dlist *from);

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
            if (!pending->answered && pending->reply != NULL)
                rc = cairn_router_reply_untagged(pending->reply, item);
        } else if (strcmp(cairn_dlist_name(item), "MISSING") == 0) {
            rc = merge_missing(pending->missing, item);
        }
        cairn_dlist_free(item);
    }
    return rc;
}

/* Merges GUIDs of from into the list into. */
static int
merge_missing(struct cairn_dlist *into, const struct cairn_dlist *from)
{
    int rc = 0;

    for (const struct cairn_dlist *guid = cairn_dlist_first(from);
         guid != NULL && rc == 0; guid = cairn_dlist_next(guid)) {
        const char *text = NULL;

        if (cairn_dlist_as_atom(guid, &text) && text != NULL &&
            !list_has(into, text))
            rc = cairn_dlist_add_atom(into, NULL, text);
    }
    return rc;
}

/* Completes reply: OK (with MISSING for a RESERVE) or NO code text. */
static void
complete(struct cairn_router_reply *reply, bool ok,
         const struct cairn_dlist *missing, unsigned code, const char *text)
{
    if (ok && missing != NULL && cairn_dlist_count(missing) > 0)
        cairn_router_reply_untagged(reply, missing);
    if (ok)
        cairn_router_reply_complete(reply, CAIRN_CSYNC_OK,
                                    CAIRN_CSYNC_CODE_NONE, "Success");
    else
        cairn_router_reply_complete(reply, CAIRN_CSYNC_NO,
                                    (enum cairn_csync_code)code, text);
}

/* A destination's outcome; the last one answers sync_client. */
static void
group_result(struct group *group, bool ok, const struct cairn_dlist *missing,
             unsigned code, const char *text)
{
    if (!ok && group->ok) {
        group->ok = false;
        group->code = code;
        snprintf(group->text, sizeof(group->text), "%s", text);
    }
    if (ok && missing != NULL && merge_missing(group->missing, missing) < 0 &&
        group->ok) {
        group->ok = false;
        snprintf(group->text, sizeof(group->text), "%s",
                 cairn_strerror(CAIRN_ENOMEM));
    }
    if (--group->outstanding > 0)
        return;
    complete(group->reply, group->ok, group->missing, group->code, group->text);
    cairn_dlist_free(group->missing);
    free(group);
}

/* Answers sync_client (or the group): OK or the failure. */
static void
answer(struct pending *pending, bool ok)
{
    char text[320];

    /* The node's words after the code sync_client acts on. */
    snprintf(text, sizeof(text), "%s",
             pending->text[0] ? pending->text
                              : cairn_strerror(pending->status));
    if (pending->group != NULL)
        group_result(pending->group, ok, pending->missing, pending->code, text);
    else
        complete(pending->reply, ok, pending->missing, pending->code, text);
    pending->reply = NULL;
    pending->group = NULL;
    pending->answered = true;
    pending->answered_ok = ok;
}

/* Writes answered OK that a replica missed: logged, counted. */
static void
report_repairs(struct pending *pending)
{
    for (size_t i = 0; i < pending->target_count; i++) {
        const struct target *target = &pending->targets[i];

        if (target->status >= 0)
            continue;
        pending->forward->repairs++;
        report(pending->forward,
               "user %s on node %s needs repair: it missed APPLY %s "
               "answered OK (%s); cairnctl verify shows it",
               pending->userid, target->name, pending->key, target->text);
    }
}

/* Marks every replica a write failed on as behind (see the header). */
static void
mark_failed(struct pending *pending)
{
    struct cairn_router_forward *forward = pending->forward;

    for (size_t i = 0; i < pending->target_count; i++) {
        const struct target *target = &pending->targets[i];
        enum cairn_router_mark mark;

        if (target->status >= 0)
            continue;
        if (!cairn_router_marks_get(forward->marks, pending->userid,
                                    target->node, &mark) &&
            cairn_router_marks_count(forward->marks) >=
                CAIRN_ROUTER_MAX_REPAIR_MARKS) {
            report(forward,
                   "user %s on node %s missed APPLY %s; too many repair marks"
                   " to keep, cairnctl verify shows it",
                   pending->userid, target->name, pending->key);
            continue;
        }
        if (cairn_router_marks_set(forward->marks, pending->userid,
                                   target->node, CAIRN_ROUTER_MARK_BEHIND) < 0)
            report(forward,
                   "user %s on node %s missed APPLY %s; no memory "
                   "to mark it for repair",
                   pending->userid, target->name, pending->key);
        else
            cairn_router_metric_repair_mark(
                forward->destination, target->name,
                cairn_router_marks_count(forward->marks));
    }
}

/*
 * Answers once the outcome is known (a write: as soon as the policy is met
 * or cannot be met any more; RESERVE and GET: when every node sent has
 * answered) and frees after the last node answer.
 */
static void
settle(struct pending *pending)
{
    bool early = !pending->is_get && !pending->is_reserve;
    bool hopeless = !pending->is_get &&
                    pending->acks + pending->waiting < pending->required;

    if (!pending->answered) {
        if (early && pending->acks >= pending->required)
            answer(pending, true);
        else if (hopeless)
            answer(pending, false);
        else if (pending->waiting == 0)
            answer(pending, pending->acks >= pending->required);
    }
    if (pending->waiting > 0)
        return;
    /* A target given up (its node went down) still has a callback to come:
     * the marks are set now, the memory freed after it. */
    if (!pending->settled && !pending->is_get)
        mark_failed(pending);
    if (!pending->settled && pending->answered_ok && !pending->is_get)
        report_repairs(pending);
    pending->settled = true;
    if (pending->outstanding == 0)
        pending_free(pending);
}

static bool
node_unreachable(int status)
{
    return status == CAIRN_EUNAVAILABLE || status == CAIRN_ETIMEOUT ||
           status == CAIRN_EAGAIN;
}

/*
 * Records a replica's failure with the node's words (text, csync code);
 * the first (a GET: the last) is answered.
 */
static void
target_failed_text(struct target *target, int status, unsigned code,
                   const char *text)
{
    struct pending *pending = target->pending;

    target->status = status;
    snprintf(target->text, sizeof(target->text), "%s",
             text[0] ? text : cairn_strerror(status));
    pending->failures++;
    /* The stream lost track of what the node has: start over at 1. */
    cairn_router_sequences_reset(pending->forward->sequences, pending->userid,
                                 target->node);
    if (pending->status != 0 && !pending->is_get)
        return;
    pending->status = status;
    pending->code = code;
    snprintf(pending->text, sizeof(pending->text), "%s", text);
    /* A node that cannot be reached: a NO sync_client retries. */
    if (node_unreachable(status))
        pending->code = CAIRN_CSYNC_CODE_MAILBOX_LOCKED;
    /* Out of disk (full, or below its reserve): retryable too, and the
     * client's log says which node lacks space. */
    if (status == CAIRN_ENOSPACE) {
        pending->code = CAIRN_CSYNC_CODE_MAILBOX_LOCKED;
        snprintf(pending->text, sizeof(pending->text),
                 "node %s is out of disk space: %s", target->name,
                 text[0] ? text : cairn_strerror(status));
    }
}

static void
target_failed(struct target *target, int status,
              const Cairn__Envelope *envelope)
{
    const char *text = envelope != NULL && envelope->error_text != NULL
                           ? envelope->error_text
                           : "";

    target_failed_text(target, status,
                       envelope != NULL ? envelope->csync_code : 0, text);
}

/* A node held down gets nothing: the target fails at once. */
static bool
refused_down(struct target *target)
{
    struct pending *pending = target->pending;
    char reason[192], text[320];

    if (!cairn_router_health_refuses(pending->forward, target->node, reason,
                                     sizeof(reason)))
        return false;
    snprintf(text, sizeof(text), "node %s is down (%s)", target->name, reason);
    target_failed_text(target, CAIRN_EUNAVAILABLE,
                       CAIRN_CSYNC_CODE_MAILBOX_LOCKED, text);
    report_debug(pending->forward, "%s %s of %s: node %s is down, not sent",
                 pending->is_get ? "GET" : "APPLY", pending->key,
                 pending->userid, target->name);
    return true;
}

static void on_node_reply(void *arg, const struct cairn_node_reply *reply);

/* Queues the request for one replica (a failure is recorded, not returned). */
static void
send_to(struct target *target)
{
    struct pending *pending = target->pending;
    struct cairn_router_forward *forward = pending->forward;
    struct cairn_node_frame frame = {pending->printed.data,
                                     pending->printed.len};
    struct cairn_node_request request = {
        .kind =
            pending->is_get ? CAIRN__KIND__STATE_REQUEST : CAIRN__KIND__APPLY,
        .user = pending->userid,
        .destination = forward->destination,
        .verb = pending->is_get ? "GET" : "APPLY",
        .key = pending->key,
        .ring_epoch = pending->epoch,
        .frames = &frame,
        .frame_count = 1,
        .bodies = pending->bodies,
        .body_count = pending->body_count,
        .update_time = pending->is_get ? 0 : pending->stamp,
    };
    int rc = 0;

    if (refused_down(target))
        return;
    /* GETs are unordered (0): the node answers them after earlier APPLYs. */
    if (!pending->is_get)
        rc = cairn_router_sequences_next(forward->sequences, pending->userid,
                                         target->node, &request.sequence,
                                         &request.stream_start);
    if (rc == 0)
        rc = cairn_node_client_send(forward->client, target->node, &request,
                                    on_node_reply, target, &target->request_id);
    if (rc < 0) {
        target_failed(target, rc, NULL);
        return;
    }
    target->status = 1;
    pending->outstanding++;
    pending->waiting++;
    target->waiting = true;
    cairn_router_health_sent(forward, target->node, &target->waiter);
}

/* A GET: the next replica that takes the request, if any. */
static void
send_get_next(struct pending *pending)
{
    while (pending->waiting == 0 &&
           pending->next_target < pending->target_count)
        send_to(&pending->targets[pending->next_target++]);
}

/* Tells the node's watch how its request ended (forward_health.c). */
static void
tell_health(struct target *target, const struct cairn_node_reply *reply)
{
    struct pending *pending = target->pending;
    char detail[400];

    snprintf(detail, sizeof(detail), "%s %s of %s: %s",
             pending->is_get ? "GET" : "APPLY", pending->key, pending->userid,
             reply->status == CAIRN_ETIMEOUT
                 ? "no answer within node_timeout"
                 : "not sent within node_timeout (no connection)");
    cairn_router_health_answered(pending->forward, target->node,
                                 &target->waiter, reply->status,
                                 reply->envelope != NULL, detail);
}

/* A GET whose replica failed: the next one, said once. */
static void
get_next(struct target *target, const char *why)
{
    struct pending *pending = target->pending;

    send_get_next(pending);
    if (pending->waiting > 0)
        report(pending->forward,
               "GET %s of %s: node %s %s, asking the next replica",
               pending->key, pending->userid, target->name, why);
}

static void
on_node_reply(void *arg, const struct cairn_node_reply *reply)
{
    struct target *target = arg;
    struct pending *pending = target->pending;
    int rc = reply->status;

    pending->outstanding--;
    if (!target->waiting) { /* given up when its node went down */
        settle(pending);
        return;
    }
    target->waiting = false;
    pending->waiting--;
    /* may hold the node down, giving up its other waiting requests */
    tell_health(target, reply);
    if (rc == 0)
        rc = take_items(pending, reply);
    cairn_router_metric_node_answer(pending->forward->destination, target->name,
                                    !pending->is_get, rc >= 0);
    if (rc < 0) {
        target_failed(target, rc, reply->envelope);
        if (pending->is_get && node_unreachable(rc))
            get_next(target, cairn_strerror(rc));
    } else {
        enum cairn_router_mark mark;

        target->status = 0;
        pending->acks++;
        /* Failing to save it keeps "behind": asked first once more. */
        if (pending->is_get &&
            cairn_router_marks_get(pending->forward->marks, pending->userid,
                                   target->node, &mark))
            (void)cairn_router_marks_set(pending->forward->marks,
                                         pending->userid, target->node,
                                         CAIRN_ROUTER_MARK_ASKED);
    }
    settle(pending);
}

void
cairn_router_forward_drop_answered(struct cairn_router_forward *forward)
{
    struct pending *pending = forward->pendings, *next;

    for (; pending != NULL; pending = next) {
        next = pending->next;
        if (!pending->answered)
            continue; /* its reply belongs to a session: left as it was */
        for (size_t i = 0; i < pending->target_count; i++)
            cairn_router_health_unlink(forward, pending->targets[i].node,
                                       &pending->targets[i].waiter, false);
        pending_free(pending);
    }
}

void
cairn_router_forward_abandon(struct cairn_router_forward *forward, size_t node,
                             const char *why)
{
    struct cairn_router_waiter *waiter;
    char text[320];

    /* A down node takes no new request, so the list only shrinks. */
    while ((waiter = cairn_router_health_first_waiter(forward, node)) != NULL) {
        struct target *target = (struct target *)waiter;
        struct pending *pending = target->pending;

        cairn_router_health_unlink(forward, node, waiter, true);
        target->waiting = false;
        pending->waiting--;
        /* Still queued (no connection to send it on): withdrawn. Left
         * queued, it went out once the node was back, after the write
         * had been counted failed and the replica marked behind, so what
         * the node held then depended on how fast it came back. */
        if (cairn_node_client_cancel(forward->client, node,
                                     target->request_id) == 0)
            pending->outstanding--;
        snprintf(text, sizeof(text), "node %s is down (%s)", target->name, why);
        target_failed_text(target, CAIRN_EUNAVAILABLE,
                           CAIRN_CSYNC_CODE_MAILBOX_LOCKED, text);
        if (pending->is_get)
            get_next(target, "is down");
        /* Frees only when every target was withdrawn or answered. */
        settle(pending);
    }
}

/*
 * The descriptor of the spool file at path: one per file, however many
 * of the request's bodies it holds (a connection's bodies share files).
 */
static int
spool_fd(struct pending *pending, const char *path, char **paths, int *fd)
{
    for (size_t i = 0; i < pending->fd_count; i++)
        if (strcmp(paths[i], path) == 0) {
            *fd = pending->fds[i];
            return CAIRN_OK;
        }
    if ((*fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        if (errno != EMFILE && errno != ENFILE)
            return CAIRN_EIO;
        report(pending->forward,
               "APPLY %s of %s: too many open files (raise ulimit -n)",
               pending->key, pending->userid);
        return CAIRN_ENOSPACE;
    }
    paths[pending->fd_count] = (char *)path;
    pending->fds[pending->fd_count++] = *fd;
    return CAIRN_OK;
}

/* Opens the spooled body of every FILE node, in tree order. */
static int
open_bodies(struct pending *pending, const struct cairn_dlist *value)
{
    size_t files = 0;
    char **paths = NULL;
    int rc = CAIRN_OK;

    for (const struct cairn_dlist *item = cairn_dlist_first(value);
         item != NULL; item = cairn_dlist_next(item))
        files += cairn_dlist_file_info(item, NULL, NULL, NULL, NULL);
    pending->body_count = 0;
    pending->bodies = calloc(files + 1, sizeof(*pending->bodies));
    pending->fds = calloc(files + 1, sizeof(*pending->fds));
    paths = calloc(files + 1, sizeof(*paths));
    if (pending->bodies == NULL || pending->fds == NULL || paths == NULL) {
        free(paths);
        return CAIRN_ENOMEM;
    }
    for (const struct cairn_dlist *item = cairn_dlist_first(value);
         item != NULL && rc == 0; item = cairn_dlist_next(item)) {
        const char *path;
        void *handle = NULL;
        uint64_t size = 0;
        int fd = -1;

        if (!cairn_dlist_file_info(item, NULL, NULL, &size, &handle))
            continue;
        /* bodies are only forwarded from a spool */
        path = cairn_router_spool_file_path(handle);
        rc = path != NULL ? spool_fd(pending, path, paths, &fd) : CAIRN_EIO;
        if (rc == 0)
            pending->bodies[pending->body_count++] = (struct cairn_node_body){
                .fd = fd,
                .offset = cairn_router_spool_file_offset(handle),
                .size = size};
    }
    free(paths);
    return rc;
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

/* The user's replicas on ring, and how many acks the policy needs. */
static int
find_targets(struct pending *pending, const struct cairn_ring *ring)
{
    uint16_t replicas[CAIRN_RING_MAX_REPLICAS];
    size_t count = cairn_ring_replicas(ring);
    int rc = 0;

    cairn_ring_lookup(ring, pending->userid, strlen(pending->userid), replicas);
    for (size_t i = 0; i < count && rc == 0; i++) {
        struct target *target = &pending->targets[i];
        struct cairn_ring_node_info info;

        target->pending = pending;
        rc = client_node(pending->forward, ring, replicas[i], &target->node);
        if (rc == 0 && cairn_ring_node_info(ring, replicas[i], &info) == 0)
            snprintf(target->name, sizeof(target->name), "%s", info.name);
    }
    pending->target_count = count;
    if (pending->is_get || pending->forward->ack == CAIRN_ROUTER_ACK_ONE)
        pending->required = 1;
    else if (pending->forward->ack == CAIRN_ROUTER_ACK_QUORUM)
        pending->required = count / 2 + 1;
    else
        pending->required = count;
    return rc;
}

/*
 * A GET: clears the marks a GET USER shows repaired, then puts the
 * replicas still marked first, in ring order (see the header comment).
 */
static void
prefer_marked(struct pending *pending)
{
    struct cairn_router_marks *marks = pending->forward->marks;
    struct target ordered[CAIRN_RING_MAX_REPLICAS];
    bool marked[CAIRN_RING_MAX_REPLICAS];
    size_t count = 0;

    for (size_t i = 0; i < pending->target_count; i++) {
        const struct target *target = &pending->targets[i];
        enum cairn_router_mark mark = 0;

        marked[i] =
            cairn_router_marks_get(marks, pending->userid, target->node, &mark);
        if (marked[i] && mark == CAIRN_ROUTER_MARK_ASKED &&
            strcmp(pending->key, "USER") == 0) {
            cairn_router_marks_clear(marks, pending->userid, target->node);
            marked[i] = false;
        }
    }
    for (size_t i = 0; i < pending->target_count; i++)
        if (marked[i])
            ordered[count++] = pending->targets[i];
    for (size_t i = 0; i < pending->target_count; i++)
        if (!marked[i])
            ordered[count++] = pending->targets[i];
    memcpy(pending->targets, ordered, count * sizeof(*ordered));
}

/* The moves' ring for the user, counted in flight; NULL while held. */
static const struct cairn_ring *
route(struct pending *pending, int *rc)
{
    struct cairn_router_forward *forward = pending->forward;
    const struct cairn_ring *ring = cairn_router_moves_route(
        forward->moves, pending->userid, forward->ring);

    *rc = 0;
    if (ring == NULL || forward->moves == NULL)
        return ring;
    *rc = cairn_router_moves_started(forward->moves, pending->userid);
    if (*rc == 0 && (pending->user = strdup(pending->userid)) == NULL) {
        cairn_router_moves_finished(forward->moves, pending->userid);
        *rc = CAIRN_ENOMEM;
    }
    return ring;
}

/*
 * Starts request on forward's nodes: answers reply, or (when group is not
 * NULL) reports to the group. Returns CAIRN_EAGAIN when answered later, 0
 * when answered now, or an error with nothing answered.
 */
static int
start(struct cairn_router_forward *forward, enum cairn_csync_verb verb,
      const struct request_part *part, struct cairn_router_reply *reply,
      struct group *group)
{
    struct cairn_dlist_body_writer writer = {.write_body = no_body};
    struct pending *pending = calloc(1, sizeof(*pending));
    const struct cairn_ring *ring;
    int rc = CAIRN_ENOMEM;

    if (pending == NULL)
        return CAIRN_ENOMEM;
    cairn_buf_init(&pending->printed, MAX_COMMAND_BYTES);
    forward->in_flight++;
    pending->next = forward->pendings;
    if (pending->next != NULL)
        pending->next->prev = pending;
    forward->pendings = pending;
    pending->forward = forward;
    pending->reply = reply;
    pending->group = group;
    pending->is_get = verb == CAIRN_CSYNC_GET;
    pending->key = part->key;
    pending->stamp = part->stamp;
    pending->is_reserve =
        !pending->is_get && strcmp(pending->key, "RESERVE") == 0;
    snprintf(pending->userid, sizeof(pending->userid), "%s", part->userid);
    ring = route(pending, &rc);
    if (ring == NULL) {
        /* Being moved (cairnctl rebalance): a NO sync_client retries. */
        pending->code = CAIRN_CSYNC_CODE_MAILBOX_LOCKED;
        snprintf(pending->text, sizeof(pending->text), "user is being moved");
        goto refuse;
    }
    if (rc < 0)
        goto out;
    pending->epoch = cairn_ring_epoch(ring);
    pending->missing = cairn_dlist_new_list("MISSING");
    if (pending->missing == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    rc = cairn_dlist_print(part->value, true, &pending->printed, &writer);
    if (rc == CAIRN_ETOOBIG) {
        snprintf(pending->text, sizeof(pending->text),
                 "cairn router: command larger than 256 MiB, not stored");
        goto refuse;
    }
    if (rc == 0 && !pending->is_get)
        rc = open_bodies(pending, part->value);
    if (rc == CAIRN_ENOSPACE) {
        pending->code = CAIRN_CSYNC_CODE_MAILBOX_LOCKED;
        snprintf(pending->text, sizeof(pending->text),
                 "cairn router: too many open files, try again later");
        goto refuse;
    }
    if (rc == 0)
        rc = find_targets(pending, ring);
    if (rc < 0)
        goto out;
    if (pending->is_get) {
        prefer_marked(pending);
        send_get_next(pending);
    } else
        for (size_t i = 0; i < pending->target_count; i++)
            send_to(&pending->targets[i]);
    /* Callbacks come from the loop, never from inside send: this may
     * answer at once only when the nodes that took it cannot be enough. */
    settle(pending);
    return CAIRN_EAGAIN;
refuse:
    answer(pending, false);
    rc = 0;
out:
    pending_free(pending);
    return rc;
}

void
cairn_router_forward_set_clock(struct cairn_router_forward *forward,
                               cairn_router_clock_fn fn, void *arg)
{
    forward->clock_fn = fn;
    forward->clock_arg = arg;
}

/* One stamp for a write to every forward (see forward_int.h). */
static int64_t
stamp_write(struct cairn_router_forward *const *forwards, size_t count)
{
    const struct cairn_router_forward *first = forwards[0];
    int64_t stamp = first->clock_fn != NULL ? first->clock_fn(first->clock_arg)
                                            : (int64_t)time(NULL);

    for (size_t i = 0; i < count; i++)
        if (forwards[i]->last_stamp > stamp)
            stamp = forwards[i]->last_stamp;
    for (size_t i = 0; i < count; i++)
        forwards[i]->last_stamp = stamp;
    return stamp;
}

int
cairn_router_forward_request(void *arg,
                             const struct cairn_router_request *request,
                             struct cairn_router_reply *reply)
{
    struct cairn_router_forward *forward = arg;

    return cairn_router_forward_request_all(&forward, 1, request, reply);
}

/* Starts one request on forward for the group; the group hears of it. */
static void
start_grouped(struct cairn_router_forward *forward, enum cairn_csync_verb verb,
              const struct request_part *part, struct group *group)
{
    int rc = start(forward, verb, part, NULL, group);

    if (rc < 0 && rc != CAIRN_EAGAIN)
        group_result(group, false, NULL, CAIRN_CSYNC_CODE_NONE,
                     cairn_strerror(rc));
}

int
cairn_router_forward_request_all(struct cairn_router_forward *const *forwards,
                                 size_t count,
                                 const struct cairn_router_request *request,
                                 struct cairn_router_reply *reply)
{
    const bool write = request->verb != CAIRN_CSYNC_GET;
    const struct request_part part = {
        .userid = request->resolution->owner.userid,
        .key = request->resolution->key,
        .value = request->value,
        .stamp = write ? stamp_write(forwards, count) : 0,
    };
    const struct request_part bodies = {
        .userid = part.userid,
        .key = "MESSAGE",
        .value = request->message,
        .stamp = part.stamp,
    };
    size_t starts = request->message != NULL ? 2 : 1;
    struct group *group;

    /* State comes from the first destination (see router.h). */
    if (request->verb == CAIRN_CSYNC_GET || (count == 1 && starts == 1))
        return start(forwards[0], request->verb, &part, reply, NULL);
    if ((group = calloc(1, sizeof(*group))) == NULL ||
        (group->missing = cairn_dlist_new_list("MISSING")) == NULL) {
        free(group);
        return CAIRN_ENOMEM;
    }
    group->reply = reply;
    group->ok = true;
    /* One result per start, and one more until every start was made. */
    group->outstanding = count * starts + 1;
    for (size_t i = 0; i < count; i++) {
        /* Same user, same replicas: the sequence numbers keep the bodies
         * ahead of the mailbox that names them. */
        if (request->message != NULL)
            start_grouped(forwards[i], request->verb, &bodies, group);
        start_grouped(forwards[i], request->verb, &part, group);
    }
    group_result(group, true, NULL, CAIRN_CSYNC_CODE_NONE, "");
    return CAIRN_EAGAIN;
}
