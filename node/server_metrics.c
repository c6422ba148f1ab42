/*
 * server_metrics.c - cairn-node's Prometheus figures (node_metrics.h):
 * counters bumped where things happen, and a collector that reads the
 * catalog on the scraping thread through a connection of its own (SQLite
 * connections are not shared across threads here), so a scrape never
 * waits on the event loop and the loop never waits on a scrape.
 */
#include "common.h"
#include "metrics.h"
#include "node.h"
#include "node_metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#define MAX_DESTINATIONS 64

struct cairn_node_metrics {
    char *data_dir;
    char *catalog_path;
    uint64_t scrub_interval_ms;
    char *destinations[MAX_DESTINATIONS];
    size_t destination_count;
    /* the scraping thread's own; opened at the first scrape */
    struct cairn_catalog *catalog;
};

static void
set_gauge(struct cairn_metrics *metrics, const char *name, const char *help,
          int64_t value)
{
    cairn_metrics_set(metrics, name, help, value);
}

static void
collect_catalog(struct cairn_node_metrics *node, struct cairn_metrics *metrics)
{
    uint64_t users = 0, checked = 0, damaged = 0;
    int64_t now_ms = (int64_t)time(NULL) * 1000;

    if (node->catalog == NULL &&
        cairn_catalog_open(node->catalog_path, &node->catalog) < 0) {
        node->catalog = NULL;
        cairn_metrics_count(metrics, "cairn_node_metrics_errors_total",
                            "scrapes that could not read the catalog", 1);
        return;
    }
    if (cairn_catalog_scrub_figures(node->catalog,
                                    now_ms - (int64_t)node->scrub_interval_ms,
                                    &users, &checked, &damaged) < 0) {
        cairn_metrics_count(metrics, "cairn_node_metrics_errors_total",
                            "scrapes that could not read the catalog", 1);
        return;
    }
    set_gauge(metrics, "cairn_node_users", "users this node holds a replica of",
              (int64_t)users);
    set_gauge(metrics, "cairn_node_scrub_checked_users",
              "users the scrub checked within its interval", (int64_t)checked);
    set_gauge(metrics, "cairn_node_scrub_damaged_users",
              "users the scrub found damaged (quarantined)", (int64_t)damaged);
}

/* Users per backup age bucket, with their bytes: one pass over the
 * figures cache (re-read for users whose files changed, as status does). */
struct figures_sum {
    struct cairn_catalog *catalog;
    int64_t now;
    uint64_t bytes, raw, buckets[6];
    char last[1024];
    size_t seen;
};

static const int64_t age_bounds[] = {3600, 6 * 3600, 24 * 3600, 7 * 24 * 3600};
static const char *const age_labels[] = {"lt_1h", "lt_6h", "lt_24h",
                                         "lt_7d", "older", "never"};

static int
add_figures(void *ctx, const char *userid, const char *data_path,
            const struct cairn_user_figures *cached)
{
    struct figures_sum *sum = ctx;
    struct cairn_user_figures figures;
    size_t bucket = 0;

    if (cached != NULL)
        figures = *cached;
    else if (cairn_user_figures_read(data_path, &figures) == 0)
        (void)cairn_catalog_figures_put(sum->catalog, userid, &figures);
    sum->bytes += figures.bytes_on_disk;
    sum->raw += figures.raw_bytes;
    if (figures.last_backup_time <= 0)
        bucket = 5;
    else
        while (bucket < 4 &&
               sum->now - figures.last_backup_time >= age_bounds[bucket])
            bucket++;
    sum->buckets[bucket]++;
    snprintf(sum->last, sizeof(sum->last), "%s", userid);
    sum->seen++;
    return 0;
}

static void
collect_figures(struct cairn_node_metrics *node, struct cairn_metrics *metrics)
{
    struct figures_sum sum = {
        node->catalog, (int64_t)time(NULL), 0, 0, {0}, "", 0};
    struct cairn_metric_family *ages = cairn_metrics_gauge(
        metrics, "cairn_node_backup_age_users",
        "users by time since their last backup on this node, per "
        "destination the node is in (sum over nodes: users x replicas)",
        "destination,age");
    int rc;

    do {
        sum.seen = 0;
        if ((rc = cairn_catalog_figures_begin(node->catalog)) < 0)
            break;
        rc = cairn_catalog_figures_page(node->catalog, sum.last, 4096,
                                        add_figures, &sum);
        if (cairn_catalog_figures_end(node->catalog) < 0 && rc == 0)
            rc = CAIRN_EDB;
    } while (rc == 0 && sum.seen == 4096);
    if (rc < 0) {
        cairn_metrics_count(metrics, "cairn_node_metrics_errors_total",
                            "scrapes that could not read the catalog", 1);
        return;
    }
    set_gauge(metrics, "cairn_node_bytes",
              "bytes on disk of every user's data file and index",
              (int64_t)sum.bytes);
    set_gauge(metrics, "cairn_node_raw_bytes", "every user's log uncompressed",
              (int64_t)sum.raw);
    for (size_t d = 0; d < node->destination_count; d++)
        for (size_t b = 0; b < 6; b++)
            cairn_metric_set(
                cairn_metric_get(ages, node->destinations[d], age_labels[b]),
                (int64_t)sum.buckets[b]);
}

static void
collect(void *arg, struct cairn_metrics *metrics)
{
    struct cairn_node_metrics *node = arg;
    struct statvfs fs;

    collect_catalog(node, metrics);
    if (node->catalog != NULL)
        collect_figures(node, metrics);
    if (statvfs(node->data_dir, &fs) == 0) {
        set_gauge(metrics, "cairn_node_disk_free_bytes",
                  "free space for the node in data_dir's file system",
                  (int64_t)((uint64_t)fs.f_bavail * fs.f_frsize));
        set_gauge(metrics, "cairn_node_disk_size_bytes",
                  "size of data_dir's file system",
                  (int64_t)((uint64_t)fs.f_blocks * fs.f_frsize));
    }
}

int
cairn_node_metrics_new(const char *data_dir, uint64_t scrub_interval_ms,
                       const char *const *destinations,
                       size_t destination_count,
                       struct cairn_node_metrics **out)
{
    struct cairn_node_metrics *node = NULL;
    int rc = CAIRN_ENOMEM;

    *out = NULL;
    if (cairn_metrics_process() == NULL)
        return 0;
    if ((node = calloc(1, sizeof(*node))) == NULL ||
        (node->data_dir = strdup(data_dir)) == NULL ||
        asprintf(&node->catalog_path, "%s/catalog.db", data_dir) < 0) {
        if (node != NULL)
            node->catalog_path = NULL;
        goto fail;
    }
    /* 0 is the scrub's default, as server_scrub.c reads it */
    node->scrub_interval_ms =
        scrub_interval_ms ? scrub_interval_ms : UINT64_C(7) * 24 * 3600 * 1000;
    for (size_t i = 0; i < destination_count && i < MAX_DESTINATIONS; i++) {
        if ((node->destinations[i] = strdup(destinations[i])) == NULL)
            goto fail;
        node->destination_count++;
    }
    if ((rc = cairn_metrics_add_collector(cairn_metrics_process(), collect,
                                          node)) < 0)
        goto fail;
    *out = node;
    return 0;
fail:
    cairn_node_metrics_free(node);
    return rc;
}

void
cairn_node_metrics_free(struct cairn_node_metrics *node)
{
    if (node == NULL)
        return;
    cairn_catalog_free(node->catalog);
    for (size_t i = 0; i < node->destination_count; i++)
        free(node->destinations[i]);
    free(node->catalog_path);
    free(node->data_dir);
    free(node);
}

uint64_t
cairn_node_metric_clock_us(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
}

void
cairn_node_metric_commit_round(size_t users, size_t failed, uint64_t elapsed_us)
{
    struct cairn_metrics *metrics = cairn_metrics_process();

    if (metrics == NULL)
        return;
    cairn_metrics_count(metrics, "cairn_node_commits_total",
                        "users' updates made durable (one per user per group "
                        "commit)",
                        users - failed);
    cairn_metrics_count(metrics, "cairn_node_commit_failures_total",
                        "users whose commit failed (their requests got an "
                        "error, nothing acknowledged)",
                        failed);
    cairn_metric_observe(
        cairn_metric_get(cairn_metrics_histogram(
            metrics, "cairn_node_group_commit_users",
            "users committed together by one group commit (one fsync round)",
            NULL, cairn_metrics_count_bounds, cairn_metrics_count_bound_count,
            1)),
        users);
    cairn_metric_observe(
        cairn_metric_get(cairn_metrics_histogram(
            metrics, "cairn_node_group_commit_seconds",
            "time of one group commit: the data files' fsyncs (overlapped) "
            "and the index commits, before the ACKs",
            NULL, cairn_metrics_latency_us_bounds,
            cairn_metrics_latency_us_bound_count, 1e-6)),
        elapsed_us);
}

void
cairn_node_metric_compaction(int rc, int compacted, uint64_t bytes_before,
                             uint64_t bytes_after)
{
    struct cairn_metrics *metrics = cairn_metrics_process();
    const char *result = rc < 0      ? "failed"
                         : compacted ? "compacted"
                                     : "nothing";

    if (metrics == NULL)
        return;
    cairn_metric_add(
        cairn_metric_get(
            cairn_metrics_counter(metrics, "cairn_node_compactions_total",
                                  "users considered for compaction, by "
                                  "result (compacted, nothing to do, failed)",
                                  "result"),
            result),
        1);
    if (rc >= 0 && compacted && bytes_before > bytes_after)
        cairn_metrics_count(
            metrics, "cairn_node_compaction_reclaimed_bytes_total",
            "bytes on disk compaction gave back", bytes_before - bytes_after);
}

void
cairn_node_metric_verify_failed(void)
{
    cairn_metrics_count(cairn_metrics_process(),
                        "cairn_node_verify_failures_total",
                        "users whose verify (cairnctl verify) failed", 1);
}
