/*
 * status_router.c - the router's view of the nodes for `cairnctl status`:
 * a RING_STATUS_REQUEST to [router] control (router/control.c), sent
 * before the nodes are asked and read after them, so it costs no extra
 * wait; a router that refuses the connection is given up at once (a
 * ZeroMQ monitor hears the refusal), one that does not answer when the
 * nodes' timeout is over.
 */
#include "cluster_int.h"
#include "curve.h"

#include <stdlib.h>
#include <string.h>
#include <zmq.h>

struct cairn_ops_router_view {
    void *context, *socket, *monitor;
    char endpoint[256];
    Cairn__RingStatus *status;
    char error[400];
};

int
cairn_ops_router_view_ask(const char *endpoint,
                          struct cairn_ops_router_view **out)
{
    struct cairn_ops_router_view *view = calloc(1, sizeof(*view));
    Cairn__Envelope envelope = CAIRN__ENVELOPE__INIT;
    unsigned char packed[64];
    int zero = 0, rc = CAIRN_EIO;
    char inproc[64];

    *out = NULL;
    if (view == NULL)
        return CAIRN_ENOMEM;
    snprintf(view->endpoint, sizeof(view->endpoint), "%s", endpoint);
    snprintf(inproc, sizeof(inproc), "inproc://cairnctl-router-%p",
             (void *)view);
    if ((view->context = zmq_ctx_new()) == NULL ||
        (view->socket = zmq_socket(view->context, ZMQ_REQ)) == NULL ||
        (view->monitor = zmq_socket(view->context, ZMQ_PAIR)) == NULL)
        goto out;
    zmq_setsockopt(view->socket, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(view->monitor, ZMQ_LINGER, &zero, sizeof(zero));
    if (zmq_socket_monitor(view->socket, inproc, ZMQ_EVENT_CONNECT_RETRIED) !=
            0 ||
        zmq_connect(view->monitor, inproc) != 0 ||
        cairn_curve_client(view->socket, endpoint, NULL, 0) != 0 ||
        zmq_connect(view->socket, endpoint) != 0)
        goto out;
    envelope.kind = CAIRN__KIND__RING_STATUS_REQUEST;
    envelope.request_id = 1;
    cairn__envelope__pack(&envelope, packed);
    if (zmq_send(view->socket, packed,
                 cairn__envelope__get_packed_size(&envelope), ZMQ_DONTWAIT) < 0)
        goto out;
    rc = 0;
out:
    if (rc < 0)
        snprintf(view->error, sizeof(view->error), "cannot ask %s: %s",
                 endpoint, zmq_strerror(zmq_errno()));
    *out = view;
    return rc;
}

/* Reads the reply (envelope, then the RingStatus frame). */
static void
read_reply(struct cairn_ops_router_view *view)
{
    zmq_msg_t head, body;
    Cairn__Envelope *envelope = NULL;

    zmq_msg_init(&head);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&head, view->socket, ZMQ_DONTWAIT) < 0 ||
        (envelope = cairn__envelope__unpack(NULL, zmq_msg_size(&head),
                                            zmq_msg_data(&head))) == NULL ||
        envelope->kind != CAIRN__KIND__CONTROL_REPLY || !zmq_msg_more(&head) ||
        zmq_msg_recv(&body, view->socket, ZMQ_DONTWAIT) < 0 ||
        (view->status = cairn__ring_status__unpack(
             NULL, zmq_msg_size(&body), zmq_msg_data(&body))) == NULL)
        snprintf(view->error, sizeof(view->error),
                 "router control %s: malformed reply", view->endpoint);
    if (envelope != NULL)
        cairn__envelope__free_unpacked(envelope, NULL);
    zmq_msg_close(&head);
    zmq_msg_close(&body);
}

void
cairn_ops_router_view_wait(struct cairn_ops_router_view *view,
                           uint64_t timeout_ms)
{
    zmq_pollitem_t items[2];
    int ready;

    if (view == NULL || view->error[0] != '\0')
        return;
    items[0] = (zmq_pollitem_t){.socket = view->socket, .events = ZMQ_POLLIN};
    items[1] = (zmq_pollitem_t){.socket = view->monitor, .events = ZMQ_POLLIN};
    ready = zmq_poll(items, 2, (long)timeout_ms);
    if (ready > 0 && (items[0].revents & ZMQ_POLLIN))
        read_reply(view);
    else if (ready > 0)
        snprintf(view->error, sizeof(view->error),
                 "router control %s refuses connections (router not "
                 "running?)",
                 view->endpoint);
    else
        snprintf(view->error, sizeof(view->error),
                 "router control %s did not answer within %llums",
                 view->endpoint, (unsigned long long)timeout_ms);
}

const Cairn__RingStatus *
cairn_ops_router_view_status(const struct cairn_ops_router_view *view,
                             const char **error)
{
    if (error != NULL)
        *error =
            view != NULL && view->error[0] ? view->error : "router not asked";
    return view != NULL && view->error[0] == '\0' ? view->status : NULL;
}

const Cairn__NodeHealth *
cairn_ops_router_view_node(const struct cairn_ops_router_view *view,
                           const char *name)
{
    const Cairn__RingStatus *status = cairn_ops_router_view_status(view, NULL);
    const Cairn__NodeHealth *found = NULL;

    /* A node in several destinations: the worst view of it. */
    for (size_t d = 0; status != NULL && d < status->n_destinations; d++)
        for (size_t n = 0; n < status->destinations[d]->n_nodes; n++) {
            const Cairn__NodeHealth *node = status->destinations[d]->nodes[n];

            if (strcmp(node->name, name) != 0)
                continue;
            if (found == NULL || strcmp(found->state, "up") == 0 ||
                strcmp(node->state, "down") == 0)
                found = node;
        }
    return found;
}

void
cairn_ops_router_view_free(struct cairn_ops_router_view *view)
{
    if (view == NULL)
        return;
    if (view->status != NULL)
        cairn__ring_status__free_unpacked(view->status, NULL);
    if (view->socket != NULL) {
        zmq_socket_monitor(view->socket, NULL, 0);
        zmq_close(view->socket);
    }
    if (view->monitor != NULL)
        zmq_close(view->monitor);
    if (view->context != NULL)
        zmq_ctx_term(view->context);
    free(view);
}

/* One node as the router sees it, a line of the router section. */
static void
print_node_text(FILE *out, const Cairn__NodeHealth *node)
{
    char age[32];

    cairn_ops_format_age((int64_t)(node->age_ms / 1000), age, sizeof(age));
    fprintf(out,
            "  %-12s %-5s %8s %7llu %5llu %5llu %5llu %8llu %9llu %7llu  %s\n",
            node->name, node->state, age, (unsigned long long)node->waiting,
            (unsigned long long)node->downs, (unsigned long long)node->slows,
            (unsigned long long)node->recoveries,
            (unsigned long long)node->requests_refused,
            (unsigned long long)node->requests_abandoned,
            (unsigned long long)node->requests_failed,
            node->reason[0] ? node->reason : "-");
}

static void
print_node_json(FILE *out, const Cairn__NodeHealth *node, bool first)
{
    fputs(first ? "{\"name\":" : ",{\"name\":", out);
    cairn_ops_json_string(out, node->name);
    fputs(",\"state\":", out);
    cairn_ops_json_string(out, node->state);
    fputs(",\"reason\":", out);
    cairn_ops_json_string(out, node->reason);
    fprintf(out,
            ",\"age_ms\":%llu,\"waiting\":%llu,\"downs\":%llu,\"slows\":%llu,"
            "\"recoveries\":%llu,\"probes\":%llu,\"probes_missed\":%llu,"
            "\"requests_failed\":%llu,\"requests_abandoned\":%llu,"
            "\"requests_refused\":%llu}",
            (unsigned long long)node->age_ms, (unsigned long long)node->waiting,
            (unsigned long long)node->downs, (unsigned long long)node->slows,
            (unsigned long long)node->recoveries,
            (unsigned long long)node->probes,
            (unsigned long long)node->probes_missed,
            (unsigned long long)node->requests_failed,
            (unsigned long long)node->requests_abandoned,
            (unsigned long long)node->requests_refused);
}

void
cairn_ops_router_view_print(FILE *out, bool json,
                            const struct cairn_ops_router_view *view)
{
    const char *error = NULL;
    const Cairn__RingStatus *status =
        cairn_ops_router_view_status(view, &error);

    if (json) {
        fputs(",\"router\":{\"endpoint\":", out);
        cairn_ops_json_string(out, view != NULL ? view->endpoint : "");
        if (status == NULL) {
            fputs(",\"error\":", out);
            cairn_ops_json_string(out, error);
            fputs("}", out);
            return;
        }
        fputs(",\"destinations\":[", out);
        for (size_t d = 0; d < status->n_destinations; d++) {
            const Cairn__DestinationRing *ring = status->destinations[d];

            fputs(d ? ",{\"destination\":" : "{\"destination\":", out);
            cairn_ops_json_string(out, ring->destination);
            fputs(",\"nodes\":[", out);
            for (size_t n = 0; n < ring->n_nodes; n++)
                print_node_json(out, ring->nodes[n], n == 0);
            fputs("]}", out);
        }
        fputs("]}", out);
        return;
    }
    if (status == NULL) {
        fprintf(out, "\nrouter: %s\n", error);
        return;
    }
    for (size_t d = 0; d < status->n_destinations; d++) {
        const Cairn__DestinationRing *ring = status->destinations[d];

        fprintf(out,
                "\nrouter %s, destination %s, its view of the nodes:\n"
                "  %-12s %-5s %8s %7s %5s %5s %5s %8s %9s %7s  %s\n",
                view->endpoint, ring->destination, "NODE", "STATE", "FOR",
                "WAITING", "DOWNS", "SLOWS", "UPS", "REFUSED", "ABANDONED",
                "FAILED", "REASON");
        for (size_t n = 0; n < ring->n_nodes; n++)
            print_node_text(out, ring->nodes[n]);
    }
}
