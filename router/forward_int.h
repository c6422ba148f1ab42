/*
 * forward_int.h - internals of the forwarder (forward*.c): the forwarder
 * itself, the per (user, node) sequence numbers of the node wire contract,
 * and the repair marks with the file that keeps them across restarts. Not
 * installed; tests may include it.
 */
#ifndef CAIRN_ROUTER_FORWARD_INT_H
#define CAIRN_ROUTER_FORWARD_INT_H

#include "loop.h"
#include "node_client.h"
#include "router.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The last sequence number sent per (user, node): the next request gets
 * last + 1; a stream that lost track (a timeout, a node error) is reset
 * and starts again with a new number marked stream_start.
 */
struct cairn_router_sequences;

/* Creates an empty table; the caller owns *table. */
int cairn_router_sequences_new(struct cairn_router_sequences **table);
void cairn_router_sequences_free(struct cairn_router_sequences *table);
/*
 * The number for the next request of user to node: last + 1, or, for a
 * new or reset stream, a number never issued before (wall-clock ms << 20,
 * above every number this table issued) with *stream_start set, so a node
 * never takes a new stream's first request for a replay of its last.
 */
int cairn_router_sequences_next(struct cairn_router_sequences *table,
                                const char *user, size_t node,
                                uint64_t *sequence, bool *stream_start);
/* The next request of user to node starts a new stream (sequence 1). */
void cairn_router_sequences_reset(struct cairn_router_sequences *table,
                                  const char *user, size_t node);
/*
 * The table's value for (user, node): false when it has none. The
 * forwarder keeps its repair marks in a second table of this kind.
 */
bool cairn_router_sequences_get(const struct cairn_router_sequences *table,
                                const char *user, size_t node, uint64_t *value);
/* Sets the value for (user, node), adding the entry when it is new. */
int cairn_router_sequences_set(struct cairn_router_sequences *table,
                               const char *user, size_t node, uint64_t value);
/* Streams the table knows (one per user and node). */
size_t cairn_router_sequences_count(const struct cairn_router_sequences *table);
/* Calls fn for every entry, in no order, until fn returns non-zero. */
typedef int (*cairn_router_sequences_fn)(void *arg, const char *user,
                                         size_t node, uint64_t value);
int cairn_router_sequences_each(const struct cairn_router_sequences *table,
                                cairn_router_sequences_fn fn, void *arg);

/* --- repair marks (forward_marks.c; semantics in forward.c) ------------ */

/* Repair marks kept at most; past it a failure is only reported. */
#define CAIRN_ROUTER_MAX_REPAIR_MARKS 65536u
/* Marks saved at most once per this many milliseconds while they change. */
#define CAIRN_ROUTER_MARKS_SAVE_MS 1000u

enum cairn_router_mark {
    CAIRN_ROUTER_MARK_BEHIND = 1, /* a write to the replica failed */
    CAIRN_ROUTER_MARK_ASKED = 2,  /* it answered a GET since */
};

/*
 * (user, node) -> mark, node being a node client index. With a file, the
 * marks are saved there as lines "<user> <node name> behind|asked"
 * (written to a temporary file, fsynced, renamed, the directory fsynced),
 * at most once per CAIRN_ROUTER_MARKS_SAVE_MS while they change (a loop
 * timer), and at once by flush and free: a router restarted after a
 * crash has the marks of at most the last second before it.
 */
struct cairn_router_marks;

/* News of the file: warning (a line skipped, a save failed) or not (how
 * many marks the last run left). */
typedef void (*cairn_router_marks_news_fn)(void *arg, bool warning,
                                           const char *message);

/*
 * Creates an empty set; with state_dir (NULL: memory only) the file is
 * <state_dir>/repair-marks.<destination>, the directory made when
 * missing; loop (borrowed) runs the save timer; news (may be NULL) hears
 * about the file. The caller owns *marks.
 */
int cairn_router_marks_new(struct cairn_loop *loop, const char *state_dir,
                           const char *destination,
                           cairn_router_marks_news_fn news, void *news_arg,
                           struct cairn_router_marks **marks);
/* Saves unsaved changes (see flush), then frees (NULL-safe). */
void cairn_router_marks_free(struct cairn_router_marks *marks);
/* Names node (a node client index) in the file; name is copied. */
int cairn_router_marks_name_node(struct cairn_router_marks *marks, size_t node,
                                 const char *name);
/*
 * Reads the file (after every node is named) and tells news how many
 * marks it held: a missing file is an empty set; a malformed line, a
 * mark for a node not named, or marks past CAIRN_ROUTER_MAX_REPAIR_MARKS
 * are skipped with a warning, never an error. CAIRN_EIO (also told) when
 * the file exists and cannot be read.
 */
int cairn_router_marks_load(struct cairn_router_marks *marks);
/* The file's path, NULL when memory only (borrowed). */
const char *cairn_router_marks_path(const struct cairn_router_marks *marks);
/* The mark of (user, node): false when it has none. */
bool cairn_router_marks_get(const struct cairn_router_marks *marks,
                            const char *user, size_t node,
                            enum cairn_router_mark *mark);
int cairn_router_marks_set(struct cairn_router_marks *marks, const char *user,
                           size_t node, enum cairn_router_mark mark);
void cairn_router_marks_clear(struct cairn_router_marks *marks,
                              const char *user, size_t node);
size_t cairn_router_marks_count(const struct cairn_router_marks *marks);
/* Writes the file now if the marks changed since the last save. */
int cairn_router_marks_flush(struct cairn_router_marks *marks);
/* Files written since the start (what the save timer spares). */
uint64_t cairn_router_marks_saves(const struct cairn_router_marks *marks);

/*
 * Sends a PING to node_name through the forward's own node connection:
 * fn hears PONG (status 0) once that connection works, which is what a
 * test that restarted a node waits for. fn is called from the loop.
 */
struct cairn_router_forward;
int cairn_router_forward_ping(struct cairn_router_forward *forward,
                              const char *node_name, cairn_node_reply_fn fn,
                              void *arg);
/*
 * Update stamps (DESIGN.md "One time per update"): every write the
 * forward starts is stamped once, before it goes to any replica, with
 * the clock's seconds, never below the last stamp a forward of the write
 * gave (so a user's stamps never go backwards while the router runs; a
 * restarted router whose clock went back is clamped by the nodes, which
 * never write a time below their user's last). Every replica, and every
 * destination of a channel, gets the same stamp (Envelope.update_time).
 * The clock is time(NULL) unless a test sets its own (fn(arg); NULL
 * restores the wall clock).
 */
typedef int64_t (*cairn_router_clock_fn)(void *arg);
void cairn_router_forward_set_clock(struct cairn_router_forward *forward,
                                    cairn_router_clock_fn fn, void *arg);

/*
 * Requests started and not finished: a write answered OK under ack quorum
 * or one is still waiting for its other replicas. Freeing the forward
 * drops them, so a test that frees it (a restart) waits for 0 first.
 */
size_t
cairn_router_forward_in_flight(const struct cairn_router_forward *forward);

/* --- node health (forward_health.c; the model in health_int.h) -------- */

/* A request waiting for a node's answer, in its node's list (oldest
 * first). Embedded in forward.c's targets. */
struct cairn_router_waiter {
    struct cairn_router_waiter *prev, *next;
    uint64_t sent_ms;
    bool linked;
};

/* One node's watch: its health, waiting requests and probe connection. */
struct cairn_router_node_watch;

/* Default answer deadline, and the probe's backoff while a node is down. */
#define CAIRN_ROUTER_ANSWER_TIMEOUT_MS 5000u
#define CAIRN_ROUTER_PROBE_BACKOFF_MIN_MS 200u
#define CAIRN_ROUTER_PROBE_BACKOFF_MAX_MS 5000u
/* How often the deadlines are checked. */
#define CAIRN_ROUTER_HEALTH_TICK_MS 50u

/*
 * Starts watching: the forward's answer deadline (answer_ms, capped at
 * timeout_ms) and a tick timer on loop (borrowed).
 */
int cairn_router_health_start(struct cairn_router_forward *forward,
                              struct cairn_loop *loop, uint64_t answer_ms,
                              uint64_t timeout_ms);
/* Watches node (a node client index) at endpoint (copied) and probes it
 * once: a node that does not answer is down from the start. */
int cairn_router_health_add_node(struct cairn_router_forward *forward,
                                 size_t node, const char *name,
                                 const char *endpoint);
/* Stops the timer, closes the probes, frees the watches (NULL-safe
 * members). Call before the node client is freed. */
void cairn_router_health_stop(struct cairn_router_forward *forward);
/*
 * Whether node is down now; reason (may be NULL) then gets why. A
 * request not sent for that is counted (refused).
 */
bool cairn_router_health_refuses(struct cairn_router_forward *forward,
                                 size_t node, char *reason, size_t size);
/* A request was sent to node: waiter joins its list. */
void cairn_router_health_sent(struct cairn_router_forward *forward, size_t node,
                              struct cairn_router_waiter *waiter);
/*
 * The node client answered waiter's request with status (envelope: the
 * node's own answer, or NULL). Leaves the list; a failure for want of an
 * answer marks the node down, which gives up its other waiting requests
 * (cairn_router_forward_abandon) before this returns.
 */
void cairn_router_health_answered(struct cairn_router_forward *forward,
                                  size_t node,
                                  struct cairn_router_waiter *waiter,
                                  int status, bool heard, const char *detail);
/* forward.c: fails every request waiting on node (it went down). */
void cairn_router_forward_abandon(struct cairn_router_forward *forward,
                                  size_t node, const char *why);
/* The first waiter of node, NULL when none (forward.c pops them). */
struct cairn_router_waiter *
cairn_router_health_first_waiter(struct cairn_router_forward *forward,
                                 size_t node);
/* Takes waiter off its list (abandoned: counted). */
void cairn_router_health_unlink(struct cairn_router_forward *forward,
                                size_t node, struct cairn_router_waiter *waiter,
                                bool abandoned);

/*
 * One destination's forwarder, shared by forward.c (requests) and
 * forward_setup.c (making, reloading, freeing it).
 */
struct cairn_router_forward {
    struct cairn_node_client *client;
    struct cairn_ring *ring;
    char *destination;
    size_t *client_node; /* ring node index -> node client index */
    size_t max_frame;
    enum cairn_router_ack ack;
    struct cairn_router_sequences *sequences;
    struct cairn_router_marks *marks; /* (user, node) -> repair mark */
    uint64_t repairs;
    size_t in_flight; /* requests started and not freed */
    cairn_router_event_fn event_fn;
    void *event_arg;
    struct cairn_router_moves *moves; /* rebalance (control.c); NULL: none */
    /* node health (forward_health.c), indexed by node client index */
    struct cairn_loop *loop;
    struct cairn_router_node_watch **watches;
    size_t watch_count;
    uint64_t answer_ms;
    uint64_t health_timer;
    void *probe_context;      /* ZeroMQ context of the probe connections */
    struct pending *pendings; /* requests in flight (forward.c) */
    /* update stamps (forward.c): the clock (NULL: time()), the last */
    cairn_router_clock_fn clock_fn;
    void *clock_arg;
    int64_t last_stamp;
};

/*
 * At free: frees the requests already answered whose node client
 * callbacks never came (given up when their node went down, or a write
 * answered before its slower replicas); the node client will not call
 * them back. Requests not answered yet are left as they were.
 */
void cairn_router_forward_drop_answered(struct cairn_router_forward *forward);

#endif /* CAIRN_ROUTER_FORWARD_INT_H */
