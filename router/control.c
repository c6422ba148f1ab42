/*
 * control.c - the router's control endpoint ([router] control) that
 * `cairnctl rebalance` drives, and the per-destination state of users in
 * the middle of a move that the forwarder consults for every request.
 *
 * A ZeroMQ ROUTER socket (clients connect REQ): each request is an
 * Envelope (kind, destination, user, ring_epoch) and optional frame 1;
 * each answer is CONTROL_REPLY with a RingStatus in frame 1, or ERROR.
 *
 *   RING_STATUS_REQUEST        the rings (epoch, prepared epoch), the
 *                              users held and switched, and the router's
 *                              view of each node (up, slow, down, why,
 *                              counters; cairnctl status), per destination
 *   RING_PREPARE  frame 1      the next ring's file text; kept beside the
 *                              current one (idempotent for the same ring)
 *   USER_HOLD     user         from now on the user's requests get
 *                              "NO IMAP_MAILBOX_LOCKED user is being moved"
 *                              (sync_client retries); answered only once
 *                              the requests already sent to nodes for the
 *                              user are answered, so the copy that follows
 *                              sees every write that was acknowledged
 *   USER_SWITCH   user, epoch  the user is routed with the prepared ring
 *                              from now on and released (epoch 0: only
 *                              released, it stays on the current ring)
 *   RING_COMMIT   epoch        the prepared ring becomes everybody's ring
 *
 * The router persists nothing: the executor's journal is the source of
 * truth. While a rebalance runs, the executor keeps RING_FILE.rebalance
 * (the destination's ring file + ".rebalance") naming the new ring file;
 * a router that starts meanwhile (cairn_router_control_resume) loads that
 * ring as the prepared one and reads its journal (NEW.journal): users
 * switched stay switched, users held or copied are held until the
 * executor resumes, so no write reaches a replica set that is no longer
 * (or not yet) the user's. The executor removes the file after
 * RING_COMMIT, having installed the new ring as the destination's ring
 * file.
 *
 * Why the router refuses rather than queues held writes: a queue would
 * have to hold message bodies for the length of a copy; sync_client
 * already retries a locked mailbox, so refusing keeps the router's memory
 * bounded and loses nothing (nothing was acknowledged).
 */
#include "cluster.pb-c.h"
#include "curve.h"
#include "placement.h"
#include "router.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define BUCKETS 1024
#define MAX_CONTROL_FRAME CAIRN_RING_MAX_FILE_SIZE
#define MAX_FORWARDS 64

/* A user the router must treat specially: requests in flight, or moving. */
struct tracked_user {
    struct tracked_user *next;
    char *userid;
    size_t in_flight; /* requests sent to nodes, not yet answered */
    bool held;
    bool switched;
};

/* A USER_HOLD waiting for the user's requests in flight. */
struct hold_waiter {
    struct hold_waiter *next;
    zmq_msg_t routing_id;
    uint64_t request_id;
    char *userid;
};

struct cairn_router_moves {
    struct cairn_router_control *control;
    char *destination;
    struct cairn_ring *prepared; /* owned; NULL: none */
    struct tracked_user *buckets[BUCKETS];
    struct cairn_router_forward *forwards[MAX_FORWARDS];
    size_t forward_count;
    struct hold_waiter *waiters;
};

struct cairn_router_control {
    struct cairn_loop *loop;
    void *context;
    void *socket;
    char endpoint[256];
    struct cairn_router_moves **moves;
    size_t moves_count;
    struct cairn_zap *zap; /* CURVE: admits known keys with their role */
    uint64_t refused;      /* requests refused for the sender's role */
};

static size_t
bucket_of(const char *userid)
{
    uint64_t hash = cairn_ring_hash(userid, strlen(userid));

    return (size_t)(hash % BUCKETS);
}

/* The user's entry; with create, a new one when there is none. */
static struct tracked_user *
find_user(struct cairn_router_moves *moves, const char *userid, bool create)
{
    struct tracked_user **at = &moves->buckets[bucket_of(userid)];
    struct tracked_user *user;

    for (user = *at; user != NULL; user = user->next)
        if (strcmp(user->userid, userid) == 0)
            return user;
    if (!create || (user = calloc(1, sizeof(*user))) == NULL)
        return NULL;
    if ((user->userid = strdup(userid)) == NULL) {
        free(user);
        return NULL;
    }
    user->next = *at;
    *at = user;
    return user;
}

/* Drops the entry once nothing is special about the user any more. */
static void
forget_if_plain(struct cairn_router_moves *moves, const char *userid)
{
    struct tracked_user **at = &moves->buckets[bucket_of(userid)];

    for (; *at != NULL; at = &(*at)->next) {
        struct tracked_user *user = *at;

        if (strcmp(user->userid, userid) != 0)
            continue;
        if (user->in_flight == 0 && !user->held && !user->switched) {
            *at = user->next;
            free(user->userid);
            free(user);
        }
        return;
    }
}

const struct cairn_ring *
cairn_router_moves_route(struct cairn_router_moves *moves, const char *userid,
                         const struct cairn_ring *current)
{
    struct tracked_user *user;

    if (moves == NULL)
        return current;
    user = find_user(moves, userid, false);
    if (user == NULL)
        return current;
    if (user->held)
        return NULL;
    if (user->switched && moves->prepared != NULL)
        return moves->prepared;
    return current;
}

int
cairn_router_moves_started(struct cairn_router_moves *moves, const char *userid)
{
    struct tracked_user *user;

    if (moves == NULL)
        return 0;
    if ((user = find_user(moves, userid, true)) == NULL)
        return CAIRN_ENOMEM;
    user->in_flight++;
    return 0;
}

static int send_reply(struct cairn_router_control *control,
                      zmq_msg_t *routing_id, uint64_t request_id, int code,
                      const char *text, const char *destination);

void
cairn_router_moves_finished(struct cairn_router_moves *moves,
                            const char *userid)
{
    struct tracked_user *user;
    struct hold_waiter **at;

    if (moves == NULL || (user = find_user(moves, userid, false)) == NULL)
        return;
    if (user->in_flight > 0)
        user->in_flight--;
    if (user->in_flight > 0)
        return;
    at = &moves->waiters;
    while (*at != NULL) {
        struct hold_waiter *waiter = *at;

        if (strcmp(waiter->userid, userid) != 0) {
            at = &waiter->next;
            continue;
        }
        *at = waiter->next;
        send_reply(moves->control, &waiter->routing_id, waiter->request_id, 0,
                   NULL, moves->destination);
        zmq_msg_close(&waiter->routing_id);
        free(waiter->userid);
        free(waiter);
    }
    forget_if_plain(moves, userid);
}

/* --- status -------------------------------------------------------------- */

static int
add_string(char ***items, size_t *count, const char *text)
{
    char **grown = realloc(*items, (*count + 1) * sizeof(**items));

    if (grown == NULL)
        return CAIRN_ENOMEM;
    *items = grown;
    grown[(*count)++] = (char *)text; /* borrowed while packing */
    return 0;
}

/* The router's view of the destination's nodes (every forward's). */
static int
fill_nodes(const struct cairn_router_moves *moves, Cairn__DestinationRing *out)
{
    size_t total = 0, used = 0;

    for (size_t f = 0; f < moves->forward_count; f++)
        total += cairn_router_forward_node_count(moves->forwards[f]);
    if (total == 0)
        return 0;
    out->nodes = calloc(total, sizeof(*out->nodes));
    if (out->nodes == NULL)
        return CAIRN_ENOMEM;
    for (size_t f = 0; f < moves->forward_count; f++) {
        const struct cairn_router_forward *forward = moves->forwards[f];

        for (size_t i = 0; i < cairn_router_forward_node_count(forward); i++) {
            struct cairn_router_node_health health;
            Cairn__NodeHealth *node;

            if (cairn_router_forward_node_health(forward, i, &health) < 0)
                continue;
            if ((node = calloc(1, sizeof(*node))) == NULL)
                return CAIRN_ENOMEM;
            cairn__node_health__init(node);
            out->nodes[used++] = node;
            out->n_nodes = used;
            node->name = (char *)health.name; /* borrowed while packing */
            node->state = (char *)cairn_router_node_state_name(health.state);
            node->reason = (char *)health.reason;
            node->age_ms = health.age_ms;
            node->waiting = health.waiting;
            node->downs = health.counters.downs;
            node->slows = health.counters.slows;
            node->recoveries = health.counters.recoveries;
            node->probes = health.counters.probes;
            node->probes_missed = health.counters.probes_missed;
            node->requests_failed = health.counters.requests_failed;
            node->requests_abandoned = health.counters.requests_abandoned;
            node->requests_refused = health.counters.requests_refused;
        }
    }
    return 0;
}

static int
fill_destination(const struct cairn_router_moves *moves,
                 Cairn__DestinationRing *out)
{
    int rc = fill_nodes(moves, out);

    out->destination = moves->destination;
    if (moves->forward_count > 0)
        out->epoch =
            cairn_ring_epoch(cairn_router_forward_ring(moves->forwards[0]));
    out->prepared_epoch =
        moves->prepared != NULL ? cairn_ring_epoch(moves->prepared) : 0;
    for (size_t i = 0; i < BUCKETS && rc == 0; i++)
        for (struct tracked_user *user = moves->buckets[i];
             user != NULL && rc == 0; user = user->next) {
            if (user->held)
                rc = add_string(&out->held, &out->n_held, user->userid);
            if (rc == 0 && user->switched)
                rc = add_string(&out->switched, &out->n_switched, user->userid);
        }
    return rc;
}

/* Packs the RingStatus of destination (NULL: all) into a new message. */
static int
pack_status(const struct cairn_router_control *control, const char *destination,
            zmq_msg_t *frame)
{
    Cairn__RingStatus status = CAIRN__RING_STATUS__INIT;
    Cairn__DestinationRing *rings = NULL, **pointers = NULL;
    size_t count = 0;
    int rc = CAIRN_ENOMEM;

    rings = calloc(control->moves_count + 1, sizeof(*rings));
    pointers = calloc(control->moves_count + 1, sizeof(*pointers));
    if (rings == NULL || pointers == NULL)
        goto out;
    rc = 0;
    for (size_t i = 0; i < control->moves_count && rc == 0; i++) {
        const struct cairn_router_moves *moves = control->moves[i];

        if (destination != NULL && *destination != '\0' &&
            strcmp(destination, moves->destination) != 0)
            continue;
        cairn__destination_ring__init(&rings[count]);
        pointers[count] = &rings[count];
        rc = fill_destination(moves, &rings[count++]);
    }
    status.destinations = pointers;
    status.n_destinations = count;
    if (rc == 0 && zmq_msg_init_size(frame, cairn__ring_status__get_packed_size(
                                                &status)) != 0)
        rc = CAIRN_ENOMEM;
    if (rc == 0)
        cairn__ring_status__pack(&status, zmq_msg_data(frame));
out:
    for (size_t i = 0; i < count; i++) {
        free(rings[i].held);
        free(rings[i].switched);
        for (size_t j = 0; j < rings[i].n_nodes; j++)
            free(rings[i].nodes[j]);
        free(rings[i].nodes);
    }
    free(rings);
    free(pointers);
    return rc;
}

static int
send_frame(void *socket, zmq_msg_t *msg, bool more)
{
    if (zmq_msg_send(msg, socket, more ? ZMQ_SNDMORE : 0) < 0) {
        zmq_msg_close(msg); /* not consumed on failure */
        return CAIRN_EIO;
    }
    return 0;
}

/* Answers one request: CONTROL_REPLY with the status, or ERROR code. */
static int
send_reply(struct cairn_router_control *control, zmq_msg_t *routing_id,
           uint64_t request_id, int code, const char *text,
           const char *destination)
{
    Cairn__Envelope envelope = CAIRN__ENVELOPE__INIT;
    zmq_msg_t id, empty, head, body;
    int rc;

    envelope.request_id = request_id;
    envelope.kind = code < 0 ? CAIRN__KIND__ERROR : CAIRN__KIND__CONTROL_REPLY;
    envelope.error_code = code;
    envelope.error_text =
        (char *)(code < 0 ? (text ? text : cairn_strerror(code)) : "");
    envelope.has_body = code >= 0;
    envelope.payload_frames = code >= 0 ? 1 : 0;
    if (code >= 0 && (rc = pack_status(control, destination, &body)) < 0)
        return rc;
    zmq_msg_init(&id);
    zmq_msg_copy(&id, routing_id);
    zmq_msg_init(&empty);
    zmq_msg_init_size(&head, cairn__envelope__get_packed_size(&envelope));
    cairn__envelope__pack(&envelope, zmq_msg_data(&head));
    rc = send_frame(control->socket, &id, true);
    if (rc == 0)
        rc = send_frame(control->socket, &empty, true);
    else
        zmq_msg_close(&empty);
    if (rc == 0)
        rc = send_frame(control->socket, &head, code >= 0);
    else
        zmq_msg_close(&head);
    if (code >= 0) {
        if (rc == 0)
            rc = send_frame(control->socket, &body, false);
        else
            zmq_msg_close(&body);
    }
    return rc;
}

/* --- requests ------------------------------------------------------------ */

static struct cairn_router_moves *
find_moves(struct cairn_router_control *control, const char *destination)
{
    for (size_t i = 0; i < control->moves_count; i++)
        if (destination != NULL &&
            strcmp(control->moves[i]->destination, destination) == 0)
            return control->moves[i];
    return NULL;
}

static int
prepare_ring(struct cairn_router_moves *moves, const zmq_msg_t *text)
{
    const struct cairn_ring *current =
        cairn_router_forward_ring(moves->forwards[0]);
    struct cairn_ring *ring = NULL;
    int rc;

    if ((rc = cairn_ring_parse(zmq_msg_data((zmq_msg_t *)text),
                               zmq_msg_size((zmq_msg_t *)text), &ring)) < 0)
        return rc;
    if (strcmp(cairn_ring_destination(ring), moves->destination) == 0 &&
        cairn_ring_epoch(ring) == cairn_ring_epoch(current) &&
        cairn_ring_equal(ring, current)) {
        rc = 0; /* committed already (or loaded at a restart): nothing to do */
    } else if (strcmp(cairn_ring_destination(ring), moves->destination) != 0 ||
               cairn_ring_epoch(ring) <= cairn_ring_epoch(current)) {
        rc = CAIRN_EINVAL;
    } else if (moves->prepared != NULL &&
               cairn_ring_epoch(moves->prepared) == cairn_ring_epoch(ring) &&
               cairn_ring_equal(moves->prepared, ring)) {
        rc = 0; /* the same ring again: a resumed run */
    } else {
        for (size_t i = 0; i < BUCKETS && rc == 0; i++)
            for (struct tracked_user *u = moves->buckets[i]; u; u = u->next)
                if (u->switched)
                    rc = CAIRN_ESTATE; /* users already on another ring */
        if (rc == 0) {
            cairn_ring_free(moves->prepared);
            moves->prepared = ring;
            ring = NULL;
        }
    }
    cairn_ring_free(ring);
    return rc;
}

static int
commit_ring(struct cairn_router_moves *moves, uint64_t epoch)
{
    const struct cairn_ring *current =
        cairn_router_forward_ring(moves->forwards[0]);
    int rc = 0;

    if (moves->prepared == NULL || cairn_ring_epoch(moves->prepared) != epoch)
        return cairn_ring_epoch(current) == epoch ? 0 : CAIRN_ESTATE;
    for (size_t i = 0; i < moves->forward_count && rc == 0; i++) {
        struct cairn_ring *copy = NULL;

        if ((rc = cairn_ring_clone(moves->prepared, &copy)) == 0)
            rc = cairn_router_forward_replace_ring(moves->forwards[i], copy);
    }
    if (rc < 0)
        return rc;
    cairn_ring_free(moves->prepared);
    moves->prepared = NULL;
    for (size_t i = 0; i < BUCKETS; i++)
        for (struct tracked_user *u = moves->buckets[i]; u; u = u->next)
            u->switched = u->held = false;
    return 0;
}

/* Holds the user; *wait when its requests in flight must finish first. */
static int
hold_user(struct cairn_router_moves *moves, const char *userid, bool *wait)
{
    struct tracked_user *user;

    *wait = false;
    if (!cairn_router_userid_safe(userid))
        return CAIRN_EBADNAME;
    if ((user = find_user(moves, userid, true)) == NULL)
        return CAIRN_ENOMEM;
    if (!user->switched)
        user->held = true;
    *wait = user->in_flight > 0;
    return 0;
}

static int
switch_user(struct cairn_router_moves *moves, const char *userid,
            uint64_t epoch)
{
    struct tracked_user *user;

    if (epoch == 0) {
        /* Released without a switch: the executor gave up on the user. */
        if ((user = find_user(moves, userid, false)) != NULL) {
            user->held = false;
            forget_if_plain(moves, userid);
        }
        return 0;
    }
    if (moves->prepared == NULL && cairn_ring_epoch(cairn_router_forward_ring(
                                       moves->forwards[0])) == epoch)
        return 0; /* everybody is on that ring already */
    if (moves->prepared == NULL || cairn_ring_epoch(moves->prepared) != epoch)
        return CAIRN_ESTATE;
    if ((user = find_user(moves, userid, true)) == NULL)
        return CAIRN_ENOMEM;
    user->switched = true;
    user->held = false;
    return 0;
}

static int
add_waiter(struct cairn_router_moves *moves, zmq_msg_t *routing_id,
           uint64_t request_id, const char *userid)
{
    struct hold_waiter *waiter = calloc(1, sizeof(*waiter));

    if (waiter == NULL || (waiter->userid = strdup(userid)) == NULL) {
        free(waiter);
        return CAIRN_ENOMEM;
    }
    zmq_msg_init(&waiter->routing_id);
    zmq_msg_copy(&waiter->routing_id, routing_id);
    waiter->request_id = request_id;
    waiter->next = moves->waiters;
    moves->waiters = waiter;
    return 0;
}

/* Runs one request; *deferred when the answer comes later (HOLD). */
static int
handle(struct cairn_router_control *control, const Cairn__Envelope *envelope,
       zmq_msg_t *routing_id, const zmq_msg_t *frame, bool *deferred)
{
    struct cairn_router_moves *moves =
        find_moves(control, envelope->destination);
    bool wait = false;
    int rc;

    *deferred = false;
    if (envelope->kind == CAIRN__KIND__RING_STATUS_REQUEST)
        return 0;
    if (moves == NULL)
        return CAIRN_ENOENT;
    switch (envelope->kind) {
    case CAIRN__KIND__RING_PREPARE:
        return frame == NULL ? CAIRN_EINVAL : prepare_ring(moves, frame);
    case CAIRN__KIND__USER_HOLD:
        rc = hold_user(moves, envelope->user, &wait);
        if (rc == 0 && wait) {
            rc = add_waiter(moves, routing_id, envelope->request_id,
                            envelope->user);
            *deferred = rc == 0;
        }
        return rc;
    case CAIRN__KIND__USER_SWITCH:
        return switch_user(moves, envelope->user, envelope->ring_epoch);
    case CAIRN__KIND__RING_COMMIT:
        return commit_ring(moves, envelope->ring_epoch);
    default:
        return CAIRN_EPROTO;
    }
}

/* Only admin keys (cairnctl) may use the control endpoint (CURVE on);
 * frame is a received frame of the request (it carries the role). */
static bool
control_role_allows(struct cairn_router_control *control, zmq_msg_t *frame)
{
    enum cairn_curve_role role = cairn_curve_msg_role(frame);

    if (role == CAIRN_CURVE_ROLE_NONE || role == CAIRN_CURVE_ROLE_ADMIN)
        return true;
    control->refused++;
    return false;
}

/* Reads one request: routing id, empty delimiter, envelope, frames. */
static void
read_request(struct cairn_router_control *control)
{
    zmq_msg_t parts[4];
    Cairn__Envelope *envelope = NULL;
    size_t count = 0;
    bool deferred = false, more = true;
    int rc = CAIRN_EPROTO;

    while (more) {
        zmq_msg_t *part = &parts[count < 4 ? count : 3];

        if (count >= 4)
            zmq_msg_close(part); /* extra frames: only counted */
        zmq_msg_init(part);
        if (zmq_msg_recv(part, control->socket, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(part);
            break;
        }
        count++;
        more = zmq_msg_more(part);
    }
    if (count == 0)
        return;
    if (count >= 3 && count <= 4)
        envelope = cairn__envelope__unpack(NULL, zmq_msg_size(&parts[2]),
                                           zmq_msg_data(&parts[2]));
    if (envelope != NULL && !control_role_allows(control, &parts[2]))
        rc = CAIRN_EPERM; /* a writer or peer key: admin requests only */
    else if (envelope != NULL)
        rc = handle(control, envelope, &parts[0], count == 4 ? &parts[3] : NULL,
                    &deferred);
    if (!deferred)
        send_reply(control, &parts[0], envelope ? envelope->request_id : 0, rc,
                   rc == CAIRN_EPERM ? "refused: the router's control "
                                       "endpoint answers admin keys only"
                                     : NULL,
                   envelope ? envelope->destination : NULL);
    if (envelope != NULL)
        cairn__envelope__free_unpacked(envelope, NULL);
    for (size_t i = 0; i < count && i < 4; i++)
        zmq_msg_close(&parts[i]);
}

static void
on_readable(struct cairn_loop *loop, void *socket, unsigned events, void *arg)
{
    struct cairn_router_control *control = arg;
    int pending = 0;
    size_t size = sizeof(pending);

    (void)loop;
    (void)socket;
    (void)events;
    /* Edge-triggered ZMQ_FD readiness: drain everything waiting. */
    while (zmq_getsockopt(control->socket, ZMQ_EVENTS, &pending, &size) == 0 &&
           (pending & ZMQ_POLLIN))
        read_request(control);
}

/* --- life cycle ---------------------------------------------------------- */

int
cairn_router_control_new(struct cairn_loop *loop, const char *endpoint,
                         struct cairn_router_control **out, char *error,
                         size_t error_size)
{
    struct cairn_router_control *control = calloc(1, sizeof(*control));
    size_t size;
    int64_t max_size = MAX_CONTROL_FRAME;
    int rc = CAIRN_ENOMEM;

    *out = NULL;
    if (control == NULL)
        return CAIRN_ENOMEM;
    control->loop = loop;
    if ((control->context = zmq_ctx_new()) == NULL ||
        (control->socket = zmq_socket(control->context, ZMQ_ROUTER)) == NULL)
        goto out;
    zmq_setsockopt(control->socket, ZMQ_MAXMSGSIZE, &max_size,
                   sizeof(max_size));
    /* CURVE (curve.h): only admin keys (cairnctl) are answered. */
    if ((rc = cairn_zap_new(loop, control->context, &control->zap)) < 0)
        goto out;
    rc = CAIRN_EIO;
    if (cairn_curve_server(control->socket) < 0)
        goto out;
    if (zmq_bind(control->socket, endpoint) != 0) {
        snprintf(error, error_size, "cannot bind control %s: %s", endpoint,
                 zmq_strerror(zmq_errno()));
        goto out;
    }
    size = sizeof(control->endpoint);
    zmq_getsockopt(control->socket, ZMQ_LAST_ENDPOINT, control->endpoint,
                   &size);
    rc = cairn_zap_watch(control->zap, control->socket, control->endpoint);
    if (rc == 0)
        rc = cairn_loop_add_socket(loop, control->socket, CAIRN_LOOP_READ,
                                   on_readable, control);
out:
    if (rc < 0) {
        cairn_router_control_free(control);
        return rc;
    }
    *out = control;
    return 0;
}

static void
moves_free(struct cairn_router_moves *moves)
{
    for (size_t i = 0; i < BUCKETS; i++) {
        struct tracked_user *user = moves->buckets[i], *next;

        for (; user != NULL; user = next) {
            next = user->next;
            free(user->userid);
            free(user);
        }
    }
    while (moves->waiters != NULL) {
        struct hold_waiter *waiter = moves->waiters;

        moves->waiters = waiter->next;
        zmq_msg_close(&waiter->routing_id);
        free(waiter->userid);
        free(waiter);
    }
    for (size_t i = 0; i < moves->forward_count; i++)
        cairn_router_forward_set_moves(moves->forwards[i], NULL);
    cairn_ring_free(moves->prepared);
    free(moves->destination);
    free(moves);
}

void
cairn_router_control_free(struct cairn_router_control *control)
{
    if (control == NULL)
        return;
    for (size_t i = 0; i < control->moves_count; i++)
        moves_free(control->moves[i]);
    free(control->moves);
    if (control->socket != NULL) {
        int linger = 0;

        cairn_loop_remove_socket(control->loop, control->socket);
        zmq_setsockopt(control->socket, ZMQ_LINGER, &linger, sizeof(linger));
        zmq_close(control->socket);
    }
    cairn_zap_free(control->zap);
    if (control->context != NULL)
        zmq_ctx_term(control->context);
    free(control);
}

const char *
cairn_router_control_endpoint(const struct cairn_router_control *control)
{
    return control->endpoint;
}

int
cairn_router_control_add_forward(struct cairn_router_control *control,
                                 struct cairn_router_forward *forward)
{
    const char *destination = cairn_router_forward_destination(forward);
    struct cairn_router_moves *moves = find_moves(control, destination);
    struct cairn_router_moves **grown;

    if (moves == NULL) {
        grown = realloc(control->moves,
                        (control->moves_count + 1) * sizeof(*grown));
        if (grown == NULL)
            return CAIRN_ENOMEM;
        control->moves = grown;
        if ((moves = calloc(1, sizeof(*moves))) == NULL ||
            (moves->destination = strdup(destination)) == NULL) {
            free(moves);
            return CAIRN_ENOMEM;
        }
        moves->control = control;
        control->moves[control->moves_count++] = moves;
    }
    if (moves->forward_count == MAX_FORWARDS)
        return CAIRN_ETOOBIG;
    moves->forwards[moves->forward_count++] = forward;
    cairn_router_forward_set_moves(forward, moves);
    return 0;
}

/* --- resuming after a restart --------------------------------------------- */

/* Reads a whole small file into a new NUL-terminated buffer. */
static int
read_small_file(const char *path, size_t max, char **text, size_t *len)
{
    FILE *file = fopen(path, "re");
    struct cairn_buf buf;
    char block[4096];
    size_t got;
    int rc = 0;

    *text = NULL;
    if (file == NULL)
        return errno == ENOENT ? CAIRN_ENOENT : CAIRN_EIO;
    cairn_buf_init(&buf, max);
    while (rc == 0 && (got = fread(block, 1, sizeof(block), file)) > 0)
        rc = cairn_buf_append(&buf, block, got);
    if (rc == 0 && ferror(file))
        rc = CAIRN_EIO;
    fclose(file);
    if (rc == 0)
        rc = cairn_buf_detach(&buf, text, len);
    cairn_buf_release(&buf);
    return rc;
}

/* One whole journal line: "held U", "copied U", "switched U T", ... */
static int
replay_line(struct cairn_router_moves *moves, char *line)
{
    char *save = NULL, *step = strtok_r(line, " ", &save);
    char *userid = step ? strtok_r(NULL, " ", &save) : NULL;
    struct tracked_user *user;
    bool switched, held;

    if (step == NULL || userid == NULL)
        return 0; /* the header, "committed" */
    switched = strcmp(step, "switched") == 0;
    held = strcmp(step, "held") == 0 || strcmp(step, "copied") == 0;
    if (!cairn_router_userid_safe(userid))
        return CAIRN_EBADNAME;
    if ((user = find_user(moves, userid, switched || held)) == NULL)
        return 0;
    user->switched = switched;
    user->held = held;
    if (!switched && !held)
        forget_if_plain(moves, userid);
    return 0;
}

int
cairn_router_control_resume(struct cairn_router_control *control,
                            const char *destination, const char *ring_file,
                            char *error, size_t error_size)
{
    struct cairn_router_moves *moves = find_moves(control, destination);
    char *marker = NULL, *new_path = NULL, *journal_path = NULL;
    char *journal = NULL, *line, *save = NULL;
    size_t len = 0;
    int rc;

    if (moves == NULL)
        return CAIRN_ENOENT;
    if (asprintf(&marker, "%s.rebalance", ring_file) < 0)
        return CAIRN_ENOMEM;
    rc = read_small_file(marker, 4096, &new_path, &len);
    if (rc == CAIRN_ENOENT) {
        rc = 0; /* no rebalance under way */
        goto out;
    }
    if (rc < 0)
        goto out;
    new_path[strcspn(new_path, "\r\n")] = '\0';
    cairn_ring_free(moves->prepared);
    moves->prepared = NULL;
    if ((rc = cairn_ring_load(new_path, &moves->prepared)) < 0 ||
        asprintf(&journal_path, "%s.journal", new_path) < 0) {
        snprintf(error, error_size, "rebalance under way (%s): cannot load %s",
                 marker, new_path);
        rc = rc < 0 ? rc : CAIRN_ENOMEM;
        journal_path = NULL;
        goto out;
    }
    rc = read_small_file(journal_path, 1024u << 20, &journal, &len);
    if (rc == CAIRN_ENOENT)
        rc = 0;
    for (line = journal ? strtok_r(journal, "\n", &save) : NULL;
         line != NULL && rc == 0; line = strtok_r(NULL, "\n", &save))
        if (line + strlen(line) < journal + len) /* a torn last line: skip */
            rc = replay_line(moves, line);
    if (rc < 0)
        snprintf(error, error_size, "cannot read the journal %s", journal_path);
out:
    free(journal);
    free(journal_path);
    free(new_path);
    free(marker);
    return rc;
}
