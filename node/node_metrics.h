/*
 * node_metrics.h - what cairn-node shows at /metrics (issue 12): counters
 * the event loop and the worker update as things happen (commits, group
 * commit sizes and times, compactions, verify failures), and figures read
 * at each scrape on the scraping thread from the node's own catalog over
 * a connection of its own (users, bytes, backup ages, scrub) and the file
 * system (free space). All count into the process registry
 * (metrics/metrics.h) and do nothing when [node] metrics_listen is unset.
 */
#ifndef CAIRN_NODE_METRICS_H
#define CAIRN_NODE_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct cairn_node_metrics;

/*
 * Registers the scrape-time figures of the node whose data is in data_dir
 * (copied) with the process registry; scrub_interval_ms is the scrub's
 * interval (users checked within it count as checked); destinations
 * (copied, may be 0) label the backup-age gauge, one series per
 * destination the node belongs to. *out is owned by the caller and must
 * outlive the metrics server (free it after cairn_metrics_stop). With no
 * process registry *out is NULL and nothing is registered.
 */
int cairn_node_metrics_new(const char *data_dir, uint64_t scrub_interval_ms,
                           const char *const *destinations,
                           size_t destination_count,
                           struct cairn_node_metrics **out);
void cairn_node_metrics_free(struct cairn_node_metrics *metrics);

/* The monotonic clock in microseconds, to time what is measured. */
uint64_t cairn_node_metric_clock_us(void);
/* A group commit: users committed, how many failed, how long it took
   (the data fsyncs, overlapped, and the index commits). */
void cairn_node_metric_commit_round(size_t users, size_t failed,
                                    uint64_t elapsed_us);
/* A compaction finished (rc < 0: failed), bytes before and after. */
void cairn_node_metric_compaction(int rc, int compacted, uint64_t bytes_before,
                                  uint64_t bytes_after);
/* A user's verify (cairnctl verify) failed. Any thread. */
void cairn_node_metric_verify_failed(void);

#endif /* CAIRN_NODE_METRICS_H */
