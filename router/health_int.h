/*
 * health_int.h - the router's view of one storage node (health.c): up,
 * slow or down, as a pure state machine. It does no I/O, keeps no clock
 * and logs nothing: the forwarder (forward_health.c) feeds it events with
 * the time and the node's waiting requests, and does what each step asks
 * (probe, check the request link, give up the waiting requests, log the
 * change). Not installed; tests may include it.
 *
 * The model, with A = the answer deadline ([router] node_answer_timeout,
 * at most node_timeout):
 *
 *   up    requests go to the node. When some are waiting and nothing was
 *         heard from it for A/2, a PING goes out on a path of its own (a
 *         connection that carries no bodies, so a big upload does not
 *         delay it).
 *   slow  up, and the oldest waiting request was sent A or more ago while
 *         the node keeps answering PINGs: its requests are left to
 *         node_timeout, which bounds one request. Back to up once no
 *         request has waited that long.
 *   down  a PING unanswered for A, the probe connection closed, or a
 *         request failed for want of an answer (node_timeout, or never
 *         sent for want of a connection). Every waiting request is given
 *         up at once (ABANDON) and new ones are not sent: a GET asks the
 *         next replica, a write counts the node as failed. The node is
 *         probed on a fresh connection, first after backoff_min, the
 *         delay doubling up to backoff_max; a PING answered is followed
 *         by a PING on the request link itself (CONFIRM: that connection
 *         may still be stalled after a cut), and only its answer makes
 *         the node up again.
 *
 * Every change is reported once by the step (changed, from, to; reason
 * holds why).
 */
#ifndef CAIRN_ROUTER_HEALTH_INT_H
#define CAIRN_ROUTER_HEALTH_INT_H

#include "router.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cairn_router_health_event {
    CAIRN_ROUTER_HEALTH_TICK = 0,       /* time passed: check the deadlines */
    CAIRN_ROUTER_HEALTH_ANSWERED,       /* the node answered a request */
    CAIRN_ROUTER_HEALTH_PONG,           /* the probe's PING was answered */
    CAIRN_ROUTER_HEALTH_PROBE_FAILED,   /* the probe could not be sent */
    CAIRN_ROUTER_HEALTH_REQUEST_FAILED, /* a request: no answer in time */
    CAIRN_ROUTER_HEALTH_DISCONNECTED,   /* the probe's connection closed */
    CAIRN_ROUTER_HEALTH_CONFIRMED,      /* the request link's PING answered */
    CAIRN_ROUTER_HEALTH_CONFIRM_FAILED, /* ... or not */
};

/* What the caller does after a step (bits of actions). */
enum cairn_router_health_action {
    CAIRN_ROUTER_HEALTH_PROBE = 1,   /* PING on the probe path (down: anew) */
    CAIRN_ROUTER_HEALTH_CONFIRM = 2, /* PING on the request link */
    CAIRN_ROUTER_HEALTH_ABANDON = 4, /* fail every waiting request now */
    CAIRN_ROUTER_HEALTH_RESET = 8,   /* close the probe connection */
};

struct cairn_router_health_settings {
    uint64_t answer_ms;      /* A; > 0 */
    uint64_t backoff_min_ms; /* first probe of a down node after this */
    uint64_t backoff_max_ms; /* the delay doubles up to this */
};

struct cairn_router_health_input {
    enum cairn_router_health_event event;
    uint64_t now_ms;
    size_t waiting;     /* requests sent to the node, not answered */
    uint64_t oldest_ms; /* when the oldest of them was sent */
    const char *detail; /* REQUEST_FAILED, PROBE_FAILED: why; may be NULL */
};

struct cairn_router_health_step {
    unsigned actions; /* enum cairn_router_health_action bits */
    bool changed;
    enum cairn_router_node_state from, to;
};

struct cairn_router_health {
    enum cairn_router_node_state state;
    char reason[192];       /* why it is in this state */
    uint64_t since_ms;      /* when it entered it */
    uint64_t last_heard_ms; /* last answer or PONG */
    uint64_t probe_sent_ms; /* the PING in flight; 0: none */
    bool confirming;        /* down: the request link's PING in flight */
    uint64_t next_probe_ms; /* down: when to probe next */
    uint64_t backoff_ms;
    struct cairn_router_node_counters counters;
};

/* An up node, heard from at now_ms. */
void cairn_router_health_init(struct cairn_router_health *health,
                              uint64_t now_ms);
/* Feeds one event; *step says what changed and what to do. */
void cairn_router_health_step(struct cairn_router_health *health,
                              const struct cairn_router_health_settings *s,
                              const struct cairn_router_health_input *input,
                              struct cairn_router_health_step *step);
/* "up", "slow", "down" (static). */
const char *cairn_router_health_state_name(enum cairn_router_node_state state);

#endif /* CAIRN_ROUTER_HEALTH_INT_H */
