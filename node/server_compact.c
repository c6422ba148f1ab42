/*
 * server_compact.c - scheduled compaction in cairn-node: a timer looks
 * for the user waiting longest whose last compaction (kept in a
 * cairn-private catalog table) is older than the interval and who has
 * nothing in flight, and hands it to the background thread; busy users
 * are skipped and found again on a later tick. A user never compacted
 * counts from the daemon's start.
 */
#include "common.h"
#include "node_metrics.h"
#include "server_int.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* How often the schedule is looked at; the interval is per user. */
#define COMPACT_TICK_MS 250
#define DEFAULT_INTERVAL_MS (24u * 3600 * 1000)

static int64_t
wall_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

void
node_compact_policy(const struct cairn_node_server *server,
                    struct cairn_compact_policy *policy)
{
    memset(policy, 0, sizeof(*policy));
    policy->retention_seconds = server->settings.retention_seconds;
    policy->min_chunk = server->settings.min_chunk;
    policy->max_chunk = server->settings.max_chunk;
    policy->work_threshold =
        server->settings.work_threshold ? server->settings.work_threshold : 1;
    policy->work_percent = server->settings.work_percent;
    policy->now = time(NULL);
}

/* Starts the first due user that is idle; 1 stops the walk. */
static int
try_user(void *ctx, const char *userid)
{
    struct cairn_node_server *server = ctx;
    struct cairn_compact_policy policy;
    struct node_user *user = NULL;
    if (node_user_get(server, userid, &user) < 0)
        return 0;
    if (user->in_round || user->applied != NULL || user->queue != NULL ||
        user->appending || node_transfer_exporting(user))
        return 0; /* busy: retried on a later tick */
    if (node_user_open(server, user, false) < 0)
        return 0;
    node_compact_policy(server, &policy);
    return node_compact_start(server, user, &policy) == 0 ? 1 : 0;
}

static void
on_tick(struct cairn_loop *loop, uint64_t timer_id, void *arg)
{
    struct cairn_node_server *server = arg;
    uint64_t interval = server->settings.compaction_interval_ms
                            ? server->settings.compaction_interval_ms
                            : DEFAULT_INTERVAL_MS;

    (void)loop;
    (void)timer_id;
    if (!server->settings.compaction_enabled || server->worker_running ||
        server->shut_down)
        return;
    /* A user never compacted is due once the daemon has run for an
     * interval (nothing is written for it before: a node's files change
     * only through requests and compactions). */
    cairn_catalog_foreach_due(
        server->catalog, wall_ms() - (int64_t)interval,
        cairn_loop_now_ms() - server->started_ms >= interval, try_user, server);
}

int
node_compact_schedule_init(struct cairn_node_server *server)
{
    return cairn_loop_add_timer(server->loop, COMPACT_TICK_MS, COMPACT_TICK_MS,
                                on_tick, server, &server->compact_timer);
}

void
node_compact_schedule_release(struct cairn_node_server *server)
{
    if (server->compact_timer) {
        cairn_loop_cancel_timer(server->loop, server->compact_timer);
        server->compact_timer = 0;
    }
}

void
node_compact_finished(struct cairn_node_server *server, struct node_user *user,
                      int rc, const struct cairn_compact_result *result,
                      uint64_t elapsed_ms)
{
    /* Recorded even after a failure, so a broken user is not retried on
     * every tick; its error is logged. */
    int record_rc =
        cairn_catalog_set_compacted(server->catalog, user->userid, wall_ms());

    server->compactions++;
    cairn_node_metric_compaction(rc, result->compacted, result->bytes_before,
                                 result->bytes_after);
    if (rc < 0)
        node_event(server, CAIRN_LOG_ERROR, NULL,
                   "compaction of %s failed (the old pair is kept): %s%s%s",
                   user->userid, cairn_strerror(rc),
                   result->error[0] ? ": " : "", result->error);
    else
        node_event(server, CAIRN_LOG_INFO, NULL,
                   "compaction of %s: %s, chunks %llu -> %llu, bytes %llu -> "
                   "%llu, %llu ms",
                   user->userid,
                   result->compacted ? "compacted" : "nothing to do",
                   (unsigned long long)result->chunks_before,
                   (unsigned long long)result->chunks_after,
                   (unsigned long long)result->bytes_before,
                   (unsigned long long)result->bytes_after,
                   (unsigned long long)elapsed_ms);
    if (record_rc < 0)
        node_event(server, CAIRN_LOG_WARN, NULL,
                   "cannot record the compaction of %s: %s", user->userid,
                   cairn_strerror(record_rc));
}
