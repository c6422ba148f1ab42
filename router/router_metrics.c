/*
 * router_metrics.c - what the router counts for Prometheus (issue 12), in
 * one place so the names, help lines and labels are read together: per
 * channel connections, commands by verb and result, bytes in and refusals
 * by reason; per destination and node acks, NOs and repair marks. Each
 * call counts into the process registry (metrics/metrics.h), nothing when
 * [router] metrics_listen is unset.
 */
#include "metrics.h"
#include "router_metrics_int.h"

#include <stdio.h>

void
cairn_router_metric_connection(const char *channel, int delta)
{
    struct cairn_metrics *metrics = cairn_metrics_process();

    if (metrics == NULL)
        return;
    cairn_metric_add(
        cairn_metric_get(
            cairn_metrics_gauge(metrics, "cairn_router_connections",
                                "csync connections open now", "channel"),
            channel),
        delta);
    if (delta > 0)
        cairn_metric_add(
            cairn_metric_get(
                cairn_metrics_counter(metrics, "cairn_router_connections_total",
                                      "csync connections accepted", "channel"),
                channel),
            delta);
}

void
cairn_router_metric_bytes_in(const char *channel, size_t bytes)
{
    cairn_metric_add(
        cairn_metric_get(cairn_metrics_counter(
                             cairn_metrics_process(),
                             "cairn_router_received_bytes_total",
                             "bytes read from sync_client connections (on the "
                             "wire: compressed, encrypted)",
                             "channel"),
                         channel),
        (int64_t)bytes);
}

void
cairn_router_metric_command(const char *channel, const char *command,
                            enum cairn_csync_status status,
                            enum cairn_csync_code code)
{
    struct cairn_metrics *metrics = cairn_metrics_process();
    const char *result = status == CAIRN_CSYNC_OK   ? "ok"
                         : status == CAIRN_CSYNC_NO ? "no"
                                                    : "bad";

    if (metrics == NULL || status == CAIRN_CSYNC_CONTINUE)
        return;
    cairn_metric_add(
        cairn_metric_get(
            cairn_metrics_counter(
                metrics, "cairn_router_commands_total",
                "csync commands answered, by command (verb and key) and "
                "result (ok, no, bad)",
                "channel,verb,result"),
            channel, command[0] ? command : "UNKNOWN", result),
        1);
    if (status == CAIRN_CSYNC_OK)
        return;
    cairn_metric_add(
        cairn_metric_get(
            cairn_metrics_counter(
                metrics, "cairn_router_refusals_total",
                "commands answered NO or BAD, by the csync code given "
                "(IMAP_MAILBOX_LOCKED: retried; NONE: no code)",
                "channel,reason"),
            channel,
            code == CAIRN_CSYNC_CODE_NONE ? "NONE"
                                          : cairn_csync_code_name(code)),
        1);
}

void
cairn_router_metric_node_answer(const char *destination, const char *node,
                                bool write, bool ok)
{
    struct cairn_metrics *metrics = cairn_metrics_process();

    if (metrics == NULL)
        return;
    cairn_metric_add(
        cairn_metric_get(
            cairn_metrics_counter(metrics, "cairn_router_node_answers_total",
                                  "answers from storage nodes: kind apply or "
                                  "get, result ack or no (an error, a "
                                  "timeout, a node down)",
                                  "destination,node,kind,result"),
            destination, node, write ? "apply" : "get", ok ? "ack" : "no"),
        1);
}

void
cairn_router_metric_repair_mark(const char *destination, const char *node,
                                size_t marks_now)
{
    struct cairn_metrics *metrics = cairn_metrics_process();

    if (metrics == NULL)
        return;
    cairn_metric_add(
        cairn_metric_get(
            cairn_metrics_counter(metrics, "cairn_router_repair_marks_total",
                                  "replicas marked behind (a write they "
                                  "missed was answered OK)",
                                  "destination,node"),
            destination, node),
        1);
    cairn_router_metric_repair_marks(destination, marks_now);
}

void
cairn_router_metric_repair_marks(const char *destination, size_t marks_now)
{
    cairn_metric_set(
        cairn_metric_get(cairn_metrics_gauge(
                             cairn_metrics_process(),
                             "cairn_router_repair_marks",
                             "replicas marked behind now (repair-marks file)",
                             "destination"),
                         destination),
        (int64_t)marks_now);
}
