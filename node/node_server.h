/*
 * node_server.h - the daemon part of cairn-node (library
 * cairn_node_server): a ZeroMQ ROUTER socket on a cairn_loop that speaks
 * the wire contract documented in node_client.h over the store library
 * (node.h): per-user ordered APPLY with bodies spooled to disk, group
 * commit before ACK, state answers, status, verify, compaction.
 *
 * The library never logs: what happens is reported through the optional
 * event callback with its context (peer, user, request), and the program
 * (node/main.c) logs it.
 *
 * Single-threaded, on the loop's thread.
 */
#ifndef CAIRN_NODE_SERVER_H
#define CAIRN_NODE_SERVER_H

#include "common.h"
#include "loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Another node this one may ask for a user's replica (self-heal). */
struct cairn_node_peer {
    const char *name;     /* [node NAME] */
    const char *endpoint; /* its [node] endpoint */
};

struct cairn_node_server_settings {
    const char *name;         /* node name (stats), copied */
    const char *endpoint;     /* bound, e.g. "tcp://127.0.0.1:*", copied */
    const char *data_dir;     /* catalog, data files, spool; copied */
    uint64_t group_commit_ms; /* longest round; 0: commit every update */
    size_t max_frame;         /* largest payload frame; 0: 1 MiB */
    size_t max_open_stores;   /* cached open stores; 0: 256 */
    uint64_t idle_close_ms;   /* close a store idle this long; 0: 60 s */
    uint64_t reserve;         /* refuse APPLY below this free space */
    size_t max_streams;       /* split requests open at once; 0: 1024 */
    size_t max_queued;        /* requests waiting per user; 0: 256 */
    /* a split request stalled this long fails (its peer died mid-body)
     * and the user's next requests run; 0: 60 s */
    uint64_t stream_timeout_ms;
    /* COMPACT_REQUEST policy (now is taken at the time of the request) */
    int64_t retention_seconds;
    uint64_t min_chunk, max_chunk;
    unsigned work_threshold; /* chunks needing work, as Cyrus (>= 1) */
    unsigned work_percent;   /* and this % of the log's bytes (0: any) */
    /* scheduled compaction: each user whose last compaction is older than
     * compaction_interval_ms is compacted on the background thread, one
     * user at a time (cluster.conf refuses parallel_users above 1: there
     * is one worker thread), never while it has requests in flight */
    bool compaction_enabled;
    uint64_t compaction_interval_ms; /* 0: 1 day */
    /* scrub (server_scrub.c): each user verified once per interval,
     * checked longest ago first, on the background thread; a user that
     * fails is quarantined (retryable NO) until a good copy comes in */
    bool scrub_enabled;
    uint64_t scrub_interval_ms; /* 0: 7 days */
    uint64_t scrub_rate;        /* bytes per second on average; 0: any */
    bool scrub_full;            /* Cyrus's full level, not checksums only */
    /* self-heal (server_heal.c): after each scrub the user's replicas on
     * the peers are compared by digest, and a damaged or older replica is
     * rebuilt from a peer whose copy verifies; false: quarantine only */
    bool scrub_heal;
    /* the other nodes of this node's destinations (where a user's other
     * replicas can be); copied */
    const struct cairn_node_peer *peers;
    size_t peer_count;
};

/* Where an event happened; all borrowed for the call, any may be NULL. */
struct cairn_node_server_event {
    enum cairn_log_level level;
    const char *peer; /* the client's ZeroMQ routing id, hex */
    const char *user;
    uint64_t request_id;
    const char *message;
};
typedef void (*cairn_node_server_event_fn)(
    void *arg, const struct cairn_node_server_event *event);

struct cairn_node_server;

/*
 * Opens the catalog under data_dir (creating the directories), binds the
 * ROUTER socket and registers it with loop (borrowed; must outlive the
 * server). zmq_context is borrowed; NULL makes the server own one. On
 * failure returns a code and a reason in error (may be NULL). The caller
 * owns *server and frees it with cairn_node_server_free().
 */
int cairn_node_server_new(struct cairn_loop *loop, void *zmq_context,
                          const struct cairn_node_server_settings *settings,
                          struct cairn_node_server **server, char *error,
                          size_t error_size);
/*
 * Stops reading the socket, commits and acknowledges what was applied,
 * drops requests whose payload never completed (never acknowledged), and
 * closes every store. The server can then only be freed.
 */
int cairn_node_server_shutdown(struct cairn_node_server *server);
/* Shuts down if not yet done, closes the socket, frees (NULL-safe). */
void cairn_node_server_free(struct cairn_node_server *server);

/* The endpoint actually bound (a "*" port resolved). Borrowed. */
const char *cairn_node_server_endpoint(const struct cairn_node_server *server);
/*
 * Takes the reloadable settings (group commit, frame size, cache sizes,
 * reserve, compaction policy) from settings; name, endpoint and data_dir
 * must be unchanged (CAIRN_EINVAL otherwise, nothing changed).
 */
int cairn_node_server_reload(struct cairn_node_server *server,
                             const struct cairn_node_server_settings *settings);
/*
 * Starts a scrub round now: every user not checked since this call is
 * due, never-checked users included (cairn-node's SIGUSR1; drills).
 */
void cairn_node_server_scrub_now(struct cairn_node_server *server);
void cairn_node_server_set_event_handler(struct cairn_node_server *server,
                                         cairn_node_server_event_fn fn,
                                         void *arg);

#endif /* CAIRN_NODE_SERVER_H */
