/*
 * cluster_int.h - what cairnctl's cluster commands (status, verify,
 * compact, user) share: asking many cairn-node daemons at once over the
 * node client (node/node_client.h) with one deadline, so a dead node costs
 * one timeout and never a hang; per-user jobs (VERIFY, COMPACT) sent in
 * batches with progress; ring lookups; small formatting helpers.
 *
 * Internal to cairn_ops. Nodes are named by their index in the config.
 */
#ifndef CAIRN_OPS_CLUSTER_INT_H
#define CAIRN_OPS_CLUSTER_INT_H

#include "cluster.pb-c.h"
#include "ops.h"
#include "placement.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Defaults of --timeout: per request, from when it is queued. */
#define CAIRN_OPS_STATUS_TIMEOUT_MS 5000
#define CAIRN_OPS_JOB_TIMEOUT_MS (10 * 60 * 1000)
/* Users per VERIFY/COMPACT request to one node (progress granularity). */
#define CAIRN_OPS_JOB_BATCH 32
/* Most --ring files and USER arguments a command takes. */
#define CAIRN_OPS_MAX_RINGS 16
#define CAIRN_OPS_MAX_USER_ARGS 100000

/* One request to one node, and what came back. */
struct cairn_ops_node_call {
    size_t node;      /* config index */
    Cairn__Kind kind; /* PING, STATUS/STATS/VERIFY/COMPACT_REQUEST */
    const Cairn__UserRequest *ask; /* borrowed; NULL: all users */
    /* STATS_REQUEST in pages: page_limit users after page_after
     * (borrowed); 0: every user at once */
    const char *page_after;
    uint32_t page_limit;
    /* filled by cairn_ops_call_nodes: */
    int status; /* 0, the node's CAIRN_E* error, or a failure here */
    char error_text[256];
    Cairn__StatusReply *status_reply; /* STATUS/STATS, owned */
    Cairn__UserResults *results;      /* VERIFY/COMPACT, owned */
    bool answered;
    bool paged; /* the node answered one page, in userid order */
};

/*
 * Sends every call's request to its node, all at once, and waits until
 * each is answered or timeout_ms has passed (a node that is down or slow
 * gets CAIRN_EUNAVAILABLE or CAIRN_ETIMEOUT in its status). Returns 0, or
 * an error when the requests could not be made at all. Replies are owned
 * by the calls: release each with cairn_ops_node_call_release().
 */
int cairn_ops_call_nodes(const struct cairn_config *config,
                         struct cairn_ops_node_call *calls, size_t count,
                         uint64_t timeout_ms);
void cairn_ops_node_call_release(struct cairn_ops_node_call *call);
/* Releases calls[0..count-1] and frees the array, which it takes
   ownership of (NULL: nothing). */
void cairn_ops_node_calls_free(struct cairn_ops_node_call *calls, size_t count);

/*
 * Every user the config's nodes nodes[0..count-1] hold, in userid order,
 * each with its row from each node (user_walk.c): nodes are read in pages
 * and merged, so memory stays one page per node whatever the number of
 * users. *walk is owned by the caller (cairn_ops_user_walk_free); config
 * is borrowed and must outlive it.
 */
struct cairn_ops_user_walk;
int cairn_ops_user_walk_new(const struct cairn_config *config,
                            const size_t *nodes, size_t count,
                            uint64_t timeout_ms,
                            struct cairn_ops_user_walk **walk);
/*
 * The next user: 1 with *user and (*rows)[i], node i's figures or NULL
 * when it does not hold the user (both borrowed until the next call), 0
 * at the end, or an error. A node that fails is left out from then on.
 */
int cairn_ops_user_walk_next(struct cairn_ops_user_walk *walk,
                             const char **user,
                             const Cairn__UserStats *const **rows);
/* Node i's failure (0: none) with its reason (borrowed), and its index
   in the config. */
int cairn_ops_user_walk_status(const struct cairn_ops_user_walk *walk,
                               size_t index, const char **error);
size_t cairn_ops_user_walk_node(const struct cairn_ops_user_walk *walk,
                                size_t index);
void cairn_ops_user_walk_free(struct cairn_ops_user_walk *walk);

/* A sorted set of user names, owned (strings too). */
struct cairn_ops_names {
    char **names;
    size_t count, cap;
};
/* Adds a copy of name unless present (keeps the set sorted). */
int cairn_ops_names_add(struct cairn_ops_names *set, const char *name);
/* The index of name, or -1. */
long cairn_ops_names_find(const struct cairn_ops_names *set, const char *name);
void cairn_ops_names_release(struct cairn_ops_names *set);

/* One user on one node: the node's answer to VERIFY or COMPACT. */
struct cairn_ops_user_row {
    size_t user;   /* index in the job's users */
    size_t node;   /* config index */
    bool expected; /* placement (or the node's own listing) says it is here */
    int code;      /* 0, CAIRN_E* from the node, or the node's failure */
    char text[256];
    char digest[41];
    uint64_t bytes_before, bytes_after;
};

/* A per-user job over the cluster: VERIFY or COMPACT. */
struct cairn_ops_job {
    Cairn__Kind kind; /* VERIFY_REQUEST or COMPACT_REQUEST */
    bool full;        /* verify message GUIDs too */
    uint64_t timeout_ms;
    FILE *progress;        /* "verify: 32/100 users" lines; NULL: none */
    const char *only_node; /* NULL: every node of the config */
    struct cairn_ring *const *rings; /* borrowed placement; may be none */
    size_t ring_count;
    /* in: the users asked for (empty: every user the nodes hold);
       out: the users the job covered, sorted */
    struct cairn_ops_names users;
    /*
     * Called after each batch with the users first..end-1 of users and
     * their rows (rows[0..row_count-1], by user then node); the rows are
     * dropped afterwards, so memory stays that of one batch whatever the
     * number of users. A negative return stops the job.
     */
    int (*report)(void *ctx, const struct cairn_ops_job *job, size_t first,
                  size_t end);
    void *report_ctx;
    const struct cairn_config *config; /* set by cairn_ops_job_run */
    /* internal: the batch's rows */
    struct cairn_ops_user_row *rows;
    size_t row_count, row_cap;
    /* out, owned: per node its last failure to answer (0: none) */
    int *node_status;
};

/*
 * Runs job: pings the nodes (with at most the status timeout, so a dead
 * node is known in seconds and skipped), finds the users and the nodes to ask
 * (placement from the rings; without rings, every node for named users, or the
 * nodes that list each user), sends the requests in batches and hands each
 * batch's rows to job->report. A node that fails to answer is not asked again.
 * Returns 0, or an error when the job could not run (memory, a ring naming a
 * node the config lacks: CAIRN_ECONFIG with a message on err).
 */
int cairn_ops_job_run(const struct cairn_config *config, FILE *err,
                      struct cairn_ops_job *job);
void cairn_ops_job_release(struct cairn_ops_job *job);

/*
 * The whole of `verify` and `compact`: parses
 *     [--json] [-f] [-q] [-n node] [-r ring]... [-t timeout] [user ...]
 * (-f, --full only when job->kind is VERIFY_REQUEST), loads the config
 * and the rings, runs job, then has finish(job) print the summary and
 * choose the exit code. The caller sets job->kind, report and report_ctx;
 * job is released and the config and rings freed here. Returns the exit
 * code.
 */
int cairn_ops_job_main(struct cairn_ops_context *context,
                       const struct cairn_ops_command *command, int argc,
                       char **argv, struct cairn_ops_job *job,
                       int (*finish)(const struct cairn_ops_job *job));

/*
 * Prints "cairnctl NAME: node N: reason" on err for each node that failed
 * to answer during job. Returns status, or CAIRN_EXIT_UNAVAILABLE in place
 * of CAIRN_EXIT_OK when a node failed.
 */
int cairn_ops_job_node_failures(FILE *err, const char *command_name,
                                const struct cairn_ops_job *job, int status);

/* The name of the config's node at index node (borrowed from config). */
const char *cairn_ops_node_name(const struct cairn_config *config, size_t node);

/*
 * Loads every ring file in paths into rings (owned by the caller:
 * cairn_ring_free each). Prints the failure on err.
 */
int cairn_ops_load_rings(FILE *err, const char *const *paths, size_t count,
                         struct cairn_ring **rings);

/* Parses "500ms", "5s", "2m" (a bare number is seconds) into ms. */
int cairn_ops_parse_timeout(const char *text, uint64_t *ms);

/* "1.5 GiB" style sizes and "3d4h" style ages, written to text. */
void cairn_ops_format_bytes(uint64_t bytes, char *text, size_t size);
void cairn_ops_format_age(int64_t seconds, char *text, size_t size);
/* ISO 8601 UTC ("2026-11-26T06:15:00Z"), "never" for 0. */
void cairn_ops_format_time(int64_t when, char *text, size_t size);

/* A user's STATS figures as JSON members: ,"bytes_on_disk":N ... up to
   ,"last_backup_time":N (the same in `status -u` and `user show`). */
void cairn_ops_json_user_stats(FILE *out, const Cairn__UserStats *stats);

/* Whether status means the node did not answer at all. */
bool cairn_ops_unreachable(int status);

/* --- the router's view of the nodes (status_router.c) ------------------ */

/*
 * A RING_STATUS_REQUEST sent to the router's control endpoint without
 * waiting. *view is always set (owned; free it), carrying the error when
 * the request could not be sent.
 */
struct cairn_ops_router_view;
int cairn_ops_router_view_ask(const char *endpoint,
                              struct cairn_ops_router_view **view);
/* Waits up to timeout_ms for the answer (not at all once refused). */
void cairn_ops_router_view_wait(struct cairn_ops_router_view *view,
                                uint64_t timeout_ms);
/* The answer (borrowed), or NULL with *error (borrowed) saying why. */
const Cairn__RingStatus *
cairn_ops_router_view_status(const struct cairn_ops_router_view *view,
                             const char **error);
/* The router's view of node name (the worst over destinations), or NULL. */
const Cairn__NodeHealth *
cairn_ops_router_view_node(const struct cairn_ops_router_view *view,
                           const char *name);
/* Its section of `status`: a table per destination, or JSON members. */
void cairn_ops_router_view_print(FILE *out, bool json,
                                 const struct cairn_ops_router_view *view);
void cairn_ops_router_view_free(struct cairn_ops_router_view *view);

/* --- a user's backup, message by message (cmd_user_message.c) --------- */

struct cairn_restore_source;
/*
 * Opens user's backup in data_dir, or (data_dir NULL) on the running
 * cluster: the destination's replicas in ring order or the one node
 * named, each read timing out after timeout_s (at most 60 s). On failure
 * cause gets why (node by node). *source is owned by the caller.
 */
int cairn_ops_open_backup(struct cairn_ops_context *context,
                          const char *data_dir, const char *destination,
                          const char *node, const char *user,
                          uint64_t timeout_s,
                          struct cairn_restore_source **source, char *cause,
                          size_t cause_size);
/* `cairnctl user dump message ...`: argv[0] is "message". */
int cairn_ops_user_dump_message(struct cairn_ops_context *context, int argc,
                                char **argv);
/* `cairnctl user history ...`: argv[0] is "history" (cmd_user_history.c). */
int cairn_ops_user_history(struct cairn_ops_context *context, int argc,
                           char **argv);

#endif /* CAIRN_OPS_CLUSTER_INT_H */
