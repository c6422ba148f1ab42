/*
 * forward_health.c - the forwarder's watch over its nodes (the model is in
 * health_int.h): the requests each node has not answered yet, oldest
 * first; a PING path of its own per node (a DEALER that carries no bodies,
 * so a big upload on the request link does not delay it, with a ZeroMQ
 * monitor that tells when its connection closes); a tick that checks the
 * deadlines; and what a change of state does: logged once (WARN for down
 * and slow, INFO for up, with the reason), counted, and, for down, every
 * waiting request given up at once (forward.c).
 *
 * A down node is probed on a new connection each time (the old one may be
 * stalled in TCP's retransmission backoff after a cut), and is up again
 * only once a PING on the request link itself comes back too.
 */
#include "cluster.pb-c.h"
#include "curve.h"
#include "forward_int.h"
#include "health_int.h"
#include "node_client.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

struct cairn_router_node_watch {
    struct cairn_router_forward *forward;
    size_t node; /* node client index */
    char *name, *endpoint;
    struct cairn_router_health health;
    struct cairn_router_waiter *first, *last; /* waiting, oldest first */
    size_t waiting;
    void *probe;      /* DEALER to the node; NULL: none open */
    void *monitor;    /* PAIR hearing the probe's connection events */
    uint64_t ping_id; /* the probe's PING in flight; 0: none */
    uint64_t next_id;
    unsigned generation; /* names each monitor's inproc endpoint */
};

static void tell(struct cairn_router_forward *forward,
                 enum cairn_router_event_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
tell(struct cairn_router_forward *forward, enum cairn_router_event_level level,
     const char *fmt, ...)
{
    struct cairn_router_event event = {.level = level,
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

static struct cairn_router_node_watch *
watch_of(struct cairn_router_forward *forward, size_t node)
{
    return node < forward->watch_count ? forward->watches[node] : NULL;
}

static struct cairn_router_health_settings
settings_of(const struct cairn_router_forward *forward)
{
    return (struct cairn_router_health_settings){
        .answer_ms = forward->answer_ms,
        .backoff_min_ms = CAIRN_ROUTER_PROBE_BACKOFF_MIN_MS,
        .backoff_max_ms = CAIRN_ROUTER_PROBE_BACKOFF_MAX_MS,
    };
}

/* --- the probe connection ------------------------------------------------ */

static void on_probe(struct cairn_loop *loop, void *socket, unsigned events,
                     void *arg);
static void on_monitor(struct cairn_loop *loop, void *socket, unsigned events,
                       void *arg);

static void
probe_close(struct cairn_router_node_watch *watch)
{
    struct cairn_loop *loop = watch->forward->loop;

    if (watch->probe != NULL) {
        cairn_loop_remove_socket(loop, watch->probe);
        zmq_socket_monitor(watch->probe, NULL, 0);
        zmq_close(watch->probe);
    }
    if (watch->monitor != NULL) {
        cairn_loop_remove_socket(loop, watch->monitor);
        zmq_close(watch->monitor);
    }
    watch->probe = watch->monitor = NULL;
    watch->ping_id = 0;
}

/* A DEALER of its own to the node, and a monitor of its connection. */
static int
probe_open(struct cairn_router_node_watch *watch)
{
    struct cairn_router_forward *forward = watch->forward;
    int zero = 0, reconnect = 100, rc = CAIRN_EIO;
    char inproc[96];

    if (forward->probe_context == NULL &&
        (forward->probe_context = zmq_ctx_new()) == NULL)
        return CAIRN_EIO;
    snprintf(inproc, sizeof(inproc), "inproc://cairn-probe-%p-%u",
             (void *)watch, ++watch->generation);
    watch->probe = zmq_socket(forward->probe_context, ZMQ_DEALER);
    watch->monitor = zmq_socket(forward->probe_context, ZMQ_PAIR);
    if (watch->probe == NULL || watch->monitor == NULL)
        goto out;
    zmq_setsockopt(watch->probe, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(watch->monitor, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(watch->probe, ZMQ_RECONNECT_IVL, &reconnect,
                   sizeof(reconnect));
    if (zmq_socket_monitor(watch->probe, inproc, ZMQ_EVENT_DISCONNECTED) != 0 ||
        zmq_connect(watch->monitor, inproc) != 0 ||
        cairn_curve_client(watch->probe, watch->endpoint, NULL, 0) != 0 ||
        zmq_connect(watch->probe, watch->endpoint) != 0)
        goto out;
    rc = cairn_loop_add_socket(forward->loop, watch->probe, CAIRN_LOOP_READ,
                               on_probe, watch);
    if (rc == 0)
        rc = cairn_loop_add_socket(forward->loop, watch->monitor,
                                   CAIRN_LOOP_READ, on_monitor, watch);
out:
    if (rc < 0)
        probe_close(watch);
    return rc;
}

/* Sends a PING on the probe path; the reason on failure. */
static int
probe_send(struct cairn_router_node_watch *watch, char *why, size_t size)
{
    Cairn__Envelope envelope = CAIRN__ENVELOPE__INIT;
    unsigned char packed[64];
    size_t length;
    int rc = 0;

    if (watch->probe == NULL && (rc = probe_open(watch)) < 0) {
        snprintf(why, size, "cannot open a probe connection: %s",
                 cairn_strerror(rc));
        return rc;
    }
    envelope.kind = CAIRN__KIND__PING;
    envelope.request_id = ++watch->next_id;
    length = cairn__envelope__get_packed_size(&envelope);
    cairn__envelope__pack(&envelope, packed);
    if (zmq_send(watch->probe, packed, length, ZMQ_DONTWAIT) < 0) {
        snprintf(why, size, "%s", zmq_strerror(zmq_errno()));
        return CAIRN_EIO;
    }
    watch->ping_id = envelope.request_id;
    return 0;
}

/* --- steps -----------------------------------------------------------------
 */

static void on_confirm(void *arg, const struct cairn_node_reply *reply);
static void feed(struct cairn_router_node_watch *watch,
                 enum cairn_router_health_event event, const char *detail);

/* Logs a change once, with its reason. */
static void
report_change(struct cairn_router_node_watch *watch,
              const struct cairn_router_health_step *step)
{
    const struct cairn_router_health *health = &watch->health;
    enum cairn_router_event_level level = step->to == CAIRN_ROUTER_NODE_UP
                                              ? CAIRN_ROUTER_EVENT_INFO
                                              : CAIRN_ROUTER_EVENT_WARN;

    tell(watch->forward, level, "node %s is %s (was %s): %s%s", watch->name,
         cairn_router_health_state_name(step->to),
         cairn_router_health_state_name(step->from), health->reason,
         step->to == CAIRN_ROUTER_NODE_DOWN
             ? "; its requests are answered without it until it is back"
             : "");
}

/* Does what a step asks. */
static void
act(struct cairn_router_node_watch *watch,
    const struct cairn_router_health_step *step)
{
    struct cairn_router_forward *forward = watch->forward;
    char why[192] = "";

    if (step->changed)
        report_change(watch, step);
    if (step->actions & CAIRN_ROUTER_HEALTH_RESET)
        probe_close(watch);
    if (step->actions & CAIRN_ROUTER_HEALTH_ABANDON)
        cairn_router_forward_abandon(forward, watch->node,
                                     watch->health.reason);
    if ((step->actions & CAIRN_ROUTER_HEALTH_PROBE) &&
        probe_send(watch, why, sizeof(why)) < 0)
        feed(watch, CAIRN_ROUTER_HEALTH_PROBE_FAILED, why);
    if (step->actions & CAIRN_ROUTER_HEALTH_CONFIRM) {
        struct cairn_node_request ping = {.kind = CAIRN__KIND__PING};
        int rc = cairn_node_client_send(forward->client, watch->node, &ping,
                                        on_confirm, watch, NULL);

        if (rc < 0)
            feed(watch, CAIRN_ROUTER_HEALTH_CONFIRM_FAILED, NULL);
    }
}

static void
feed(struct cairn_router_node_watch *watch,
     enum cairn_router_health_event event, const char *detail)
{
    struct cairn_router_health_settings settings = settings_of(watch->forward);
    struct cairn_router_health_input input = {
        .event = event,
        .now_ms = cairn_loop_now_ms(),
        .waiting = watch->waiting,
        .oldest_ms = watch->first != NULL ? watch->first->sent_ms : 0,
        .detail = detail,
    };
    struct cairn_router_health_step step;

    cairn_router_health_step(&watch->health, &settings, &input, &step);
    act(watch, &step);
}

static void
on_confirm(void *arg, const struct cairn_node_reply *reply)
{
    struct cairn_router_node_watch *watch = arg;

    feed(watch,
         reply->status == 0 ? CAIRN_ROUTER_HEALTH_CONFIRMED
                            : CAIRN_ROUTER_HEALTH_CONFIRM_FAILED,
         NULL);
}

/* Reads one message (all its frames); the envelope frame, if any. */
static Cairn__Envelope *
read_envelope(void *socket, bool *got)
{
    Cairn__Envelope *envelope = NULL;
    zmq_msg_t part;
    bool first = true;
    int more = 1;

    *got = false;
    while (more) {
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, socket, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            break;
        }
        *got = true;
        if (first)
            envelope = cairn__envelope__unpack(NULL, zmq_msg_size(&part),
                                               zmq_msg_data(&part));
        first = false;
        more = zmq_msg_more(&part);
        zmq_msg_close(&part);
    }
    return envelope;
}

static void
on_probe(struct cairn_loop *loop, void *socket, unsigned events, void *arg)
{
    struct cairn_router_node_watch *watch = arg;
    bool got = true;

    (void)loop;
    (void)events;
    while (got && watch->probe == socket) {
        Cairn__Envelope *envelope = read_envelope(socket, &got);
        bool pong = envelope != NULL && watch->ping_id != 0 &&
                    envelope->kind == CAIRN__KIND__PONG &&
                    envelope->request_id == watch->ping_id;

        if (envelope != NULL)
            cairn__envelope__free_unpacked(envelope, NULL);
        if (pong) {
            watch->ping_id = 0;
            feed(watch, CAIRN_ROUTER_HEALTH_PONG, NULL);
        }
    }
}

/* Reads one monitor event (two frames): whether it is a disconnection. */
static bool
read_event(void *socket, bool *closed)
{
    zmq_msg_t part;
    bool first = true;
    int more = 1;

    while (more) {
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, socket, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            return !first;
        }
        /* frame 1: a 16-bit event and a 32-bit value; frame 2: address */
        if (first && zmq_msg_size(&part) >= 2) {
            uint16_t event;

            memcpy(&event, zmq_msg_data(&part), sizeof(event));
            *closed |= event == ZMQ_EVENT_DISCONNECTED;
        }
        first = false;
        more = zmq_msg_more(&part);
        zmq_msg_close(&part);
    }
    return true;
}

static void
on_monitor(struct cairn_loop *loop, void *socket, unsigned events, void *arg)
{
    struct cairn_router_node_watch *watch = arg;
    bool closed = false;

    (void)loop;
    (void)events;
    while (read_event(socket, &closed))
        ;
    if (closed && watch->monitor == socket)
        feed(watch, CAIRN_ROUTER_HEALTH_DISCONNECTED, NULL);
}

static void
on_tick(struct cairn_loop *loop, uint64_t timer_id, void *arg)
{
    struct cairn_router_forward *forward = arg;

    (void)loop;
    (void)timer_id;
    for (size_t i = 0; i < forward->watch_count; i++)
        if (forward->watches[i] != NULL)
            feed(forward->watches[i], CAIRN_ROUTER_HEALTH_TICK, NULL);
}

/* --- the forwarder's side --------------------------------------------------
 */

int
cairn_router_health_start(struct cairn_router_forward *forward,
                          struct cairn_loop *loop, uint64_t answer_ms,
                          uint64_t timeout_ms)
{
    forward->loop = loop;
    forward->answer_ms = answer_ms ? answer_ms : CAIRN_ROUTER_ANSWER_TIMEOUT_MS;
    if (timeout_ms == 0)
        timeout_ms = 30000; /* the node client's default */
    if (forward->answer_ms > timeout_ms)
        forward->answer_ms = timeout_ms;
    return cairn_loop_add_timer(loop, CAIRN_ROUTER_HEALTH_TICK_MS,
                                CAIRN_ROUTER_HEALTH_TICK_MS, on_tick, forward,
                                &forward->health_timer);
}

int
cairn_router_health_add_node(struct cairn_router_forward *forward, size_t node,
                             const char *name, const char *endpoint)
{
    struct cairn_router_node_watch *watch = NULL, **grown;
    size_t count =
        node + 1 > forward->watch_count ? node + 1 : forward->watch_count;
    char why[192] = "";
    int rc = CAIRN_ENOMEM;

    if ((grown = realloc(forward->watches, count * sizeof(*grown))) == NULL)
        goto out;
    for (size_t i = forward->watch_count; i < count; i++)
        grown[i] = NULL;
    forward->watches = grown;
    forward->watch_count = count;
    rc = CAIRN_EEXIST;
    if (grown[node] != NULL)
        goto out;
    rc = CAIRN_ENOMEM;
    if ((watch = calloc(1, sizeof(*watch))) == NULL ||
        (watch->name = strdup(name)) == NULL ||
        (watch->endpoint = strdup(endpoint)) == NULL)
        goto out;
    watch->forward = forward;
    watch->node = node;
    cairn_router_health_init(&watch->health, cairn_loop_now_ms());
    /* A first PING: a node that does not answer is down from the start. */
    watch->health.probe_sent_ms = cairn_loop_now_ms();
    watch->health.counters.probes++;
    grown[node] = watch;
    if (probe_send(watch, why, sizeof(why)) < 0)
        feed(watch, CAIRN_ROUTER_HEALTH_PROBE_FAILED, why);
    watch = NULL; /* the forward owns it now */
    rc = 0;
out:
    if (watch != NULL) {
        free(watch->name);
        free(watch->endpoint);
        free(watch);
    }
    return rc;
}

void
cairn_router_health_stop(struct cairn_router_forward *forward)
{
    if (forward->health_timer != 0)
        cairn_loop_cancel_timer(forward->loop, forward->health_timer);
    forward->health_timer = 0;
    for (size_t i = 0; i < forward->watch_count; i++) {
        struct cairn_router_node_watch *watch = forward->watches[i];

        if (watch == NULL)
            continue;
        probe_close(watch);
        free(watch->name);
        free(watch->endpoint);
        free(watch);
    }
    free(forward->watches);
    forward->watches = NULL;
    forward->watch_count = 0;
    if (forward->probe_context != NULL)
        zmq_ctx_term(forward->probe_context);
    forward->probe_context = NULL;
}

bool
cairn_router_health_refuses(struct cairn_router_forward *forward, size_t node,
                            char *reason, size_t size)
{
    struct cairn_router_node_watch *watch = watch_of(forward, node);

    if (watch == NULL || watch->health.state != CAIRN_ROUTER_NODE_DOWN)
        return false;
    watch->health.counters.requests_refused++;
    if (reason != NULL)
        snprintf(reason, size, "%s", watch->health.reason);
    return true;
}

void
cairn_router_health_sent(struct cairn_router_forward *forward, size_t node,
                         struct cairn_router_waiter *waiter)
{
    struct cairn_router_node_watch *watch = watch_of(forward, node);

    waiter->sent_ms = cairn_loop_now_ms();
    waiter->next = NULL;
    waiter->linked = watch != NULL;
    if (watch == NULL)
        return;
    waiter->prev = watch->last;
    if (watch->last != NULL)
        watch->last->next = waiter;
    else
        watch->first = waiter;
    watch->last = waiter;
    watch->waiting++;
}

void
cairn_router_health_unlink(struct cairn_router_forward *forward, size_t node,
                           struct cairn_router_waiter *waiter, bool abandoned)
{
    struct cairn_router_node_watch *watch = watch_of(forward, node);

    if (!waiter->linked || watch == NULL)
        return;
    if (waiter->prev != NULL)
        waiter->prev->next = waiter->next;
    else
        watch->first = waiter->next;
    if (waiter->next != NULL)
        waiter->next->prev = waiter->prev;
    else
        watch->last = waiter->prev;
    waiter->prev = waiter->next = NULL;
    waiter->linked = false;
    watch->waiting--;
    if (abandoned)
        watch->health.counters.requests_abandoned++;
}

struct cairn_router_waiter *
cairn_router_health_first_waiter(struct cairn_router_forward *forward,
                                 size_t node)
{
    struct cairn_router_node_watch *watch = watch_of(forward, node);

    return watch != NULL ? watch->first : NULL;
}

void
cairn_router_health_answered(struct cairn_router_forward *forward, size_t node,
                             struct cairn_router_waiter *waiter, int status,
                             bool heard, const char *detail)
{
    struct cairn_router_node_watch *watch = watch_of(forward, node);

    cairn_router_health_unlink(forward, node, waiter, false);
    if (watch == NULL)
        return;
    if (heard)
        feed(watch, CAIRN_ROUTER_HEALTH_ANSWERED, NULL);
    else if (status == CAIRN_ETIMEOUT || status == CAIRN_EUNAVAILABLE)
        feed(watch, CAIRN_ROUTER_HEALTH_REQUEST_FAILED, detail);
}

/* --- the public view -------------------------------------------------------
 */

size_t
cairn_router_forward_node_count(const struct cairn_router_forward *forward)
{
    return forward->watch_count;
}

int
cairn_router_forward_node_health(const struct cairn_router_forward *forward,
                                 size_t i, struct cairn_router_node_health *out)
{
    const struct cairn_router_node_watch *watch =
        i < forward->watch_count ? forward->watches[i] : NULL;

    if (watch == NULL)
        return CAIRN_ENOENT;
    *out = (struct cairn_router_node_health){
        .name = watch->name,
        .state = watch->health.state,
        .reason = watch->health.reason,
        .age_ms = cairn_loop_now_ms() - watch->health.since_ms,
        .waiting = watch->waiting,
        .counters = watch->health.counters,
    };
    return 0;
}

const char *
cairn_router_node_state_name(enum cairn_router_node_state state)
{
    return cairn_router_health_state_name(state);
}
