/*
 * router_metrics_int.h - the router's Prometheus counters
 * (router_metrics.c), called where things happen: the listener, the
 * session's replies, the forward's node answers and repair marks. Each is
 * a no-op when metrics are off. Internal to cairn_router.
 */
#ifndef CAIRN_ROUTER_METRICS_INT_H
#define CAIRN_ROUTER_METRICS_INT_H

#include "csync.h"

#include <stdbool.h>
#include <stddef.h>

/* A connection accepted (+1) or closed (-1) on channel. */
void cairn_router_metric_connection(const char *channel, int delta);
/* bytes read from a connection of channel, as they came off the socket. */
void cairn_router_metric_bytes_in(const char *channel, size_t bytes);
/* A tagged answer to command ("APPLY MESSAGE", "GET USER", "NOOP"). */
void cairn_router_metric_command(const char *channel, const char *command,
                                 enum cairn_csync_status status,
                                 enum cairn_csync_code code);
/* A node's answer to a write (or a state request), ack or not. */
void cairn_router_metric_node_answer(const char *destination, const char *node,
                                     bool write, bool ok);
/* A replica marked behind, with the destination's marks now. */
void cairn_router_metric_repair_mark(const char *destination, const char *node,
                                     size_t marks_now);
void cairn_router_metric_repair_marks(const char *destination,
                                      size_t marks_now);

#endif /* CAIRN_ROUTER_METRICS_INT_H */
