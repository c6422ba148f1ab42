/*
 * rebalance_int.h - what `cairnctl rebalance` is made of (see the design
 * in user_mover.c): the journal that makes a run resumable, the calls to
 * the nodes (PULL, STATS, VERIFY) and to the router's control
 * endpoint, and the executor itself. Internal to cairn_ops; tests include
 * it.
 */
#ifndef CAIRN_OPS_REBALANCE_INT_H
#define CAIRN_OPS_REBALANCE_INT_H

#include "cluster.pb-c.h"
#include "config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* --- the journal (rebalance_journal.c) ----------------------------------- */

/* A moving user's progress; each state implies all before it. */
enum cairn_rebalance_state {
    CAIRN_REBALANCE_PENDING = 0, /* not started */
    CAIRN_REBALANCE_HELD,        /* writes held at the router */
    CAIRN_REBALANCE_COPIED,      /* every new replica holds a verified copy */
    CAIRN_REBALANCE_SWITCHED,    /* the router routes it with the new ring */
    CAIRN_REBALANCE_RETIRED,     /* old copies removed after the grace */
};

struct cairn_rebalance_entry {
    char *userid;
    enum cairn_rebalance_state state;
    int64_t switched_at; /* seconds since the epoch, when SWITCHED */
};

/*
 * The journal file: an append-only text log next to the new ring file
 * (RING.journal), one line per step, fsynced before the step after it:
 *     cairn-rebalance 1 DESTINATION EPOCH
 *     held USER | copied USER | switched USER TIME | retired USER
 *     committed
 * The last line of a user wins. A torn last line (no newline) is ignored.
 */
struct cairn_rebalance_journal {
    char *path;
    char *destination;
    uint64_t epoch;
    bool committed;
    struct cairn_rebalance_entry *entries; /* sorted by userid */
    size_t count, cap;
    int fd;               /* open for appending, -1 until the first write */
    uint64_t whole_bytes; /* up to the last newline; a torn tail is cut */
};

/*
 * Opens path: reads what is there (CAIRN_EINVAL when it is for another
 * destination or epoch, CAIRN_EPARSE for a malformed line) or starts an
 * empty one. Writes nothing yet. Release with
 * cairn_rebalance_journal_release().
 */
int cairn_rebalance_journal_open(const char *path, const char *destination,
                                 uint64_t epoch,
                                 struct cairn_rebalance_journal *journal);
/* Parses journal text (the file's contents) into journal's entries. */
int cairn_rebalance_journal_parse(struct cairn_rebalance_journal *journal,
                                  const char *text, size_t len);
void cairn_rebalance_journal_release(struct cairn_rebalance_journal *journal);
/* The user's state (PENDING when the journal does not name it). */
enum cairn_rebalance_state
cairn_rebalance_journal_state(const struct cairn_rebalance_journal *journal,
                              const char *userid, int64_t *switched_at);
/*
 * Records userid's new state durably (line appended and fsynced; the
 * header first when the file is new). when: the switch time.
 */
int cairn_rebalance_journal_record(struct cairn_rebalance_journal *journal,
                                   const char *userid,
                                   enum cairn_rebalance_state state,
                                   int64_t when);
/* Records that the new ring is everybody's ring now. */
int cairn_rebalance_journal_commit(struct cairn_rebalance_journal *journal);
const char *cairn_rebalance_state_name(enum cairn_rebalance_state state);

/* --- nodes and router (rebalance_wire.c) --------------------------------- */

#define CAIRN_REBALANCE_CALL_TIMEOUT_MS 60000

/* Connections to every node of the config, for one run. */
struct cairn_rebalance_link;
/* Connects to every [node] of config; *link is owned by the caller. */
int cairn_rebalance_link_new(const struct cairn_config *config,
                             struct cairn_rebalance_link **link);
void cairn_rebalance_link_free(struct cairn_rebalance_link *link);

/* Below, nodes are named as in the config. */

/* Every user node holds, with its bytes (owned reply). */
int cairn_rebalance_node_users(struct cairn_rebalance_link *link,
                               const char *node, Cairn__StatusReply **reply);
/* The node's verify digest of userid (hex, 41 bytes); text on failure. */
int cairn_rebalance_node_digest(struct cairn_rebalance_link *link,
                                const char *node, const char *userid,
                                char digest[41], char *text, size_t text_size);
/*
 * The size and SHA-1 (hex) of userid's data file on node, as an export
 * would send it (the node then starts no compaction of the user for a few
 * minutes). CAIRN_ENOENT when the node does not hold the user.
 */
int cairn_rebalance_node_file(struct cairn_rebalance_link *link,
                              const char *node, const char *userid,
                              uint64_t *size, char sha1[41], char *text,
                              size_t text_size);
/*
 * Sends the local data file path (size bytes, SHA-1 sha1) to node target
 * as userid's (IMPORT, WRITE pieces of up to piece bytes, IMPORT end): the
 * node rebuilds and verifies it before recording it. CAIRN_EEXIST when
 * target holds the user already (nothing is changed there).
 */
int cairn_rebalance_push_file(struct cairn_rebalance_link *link,
                              const char *target, const char *userid,
                              const char *path, uint64_t size, const char *sha1,
                              size_t piece,
                              void (*progress)(void *arg, uint64_t bytes),
                              void *arg, char *text, size_t text_size);
/*
 * Node-to-node pull (node/pull.c): node target copies userid from node
 * source itself (cairnctl sends one request and gets the outcome):
 * whole, or only what source appended since target's copy when target
 * holds a prefix of source's file (whole = false); target verifies the
 * copy, compares its digest with source's at the moment the range was
 * fixed, and installs it. rate: bytes per second read from the source
 * (0: any).
 */
#define CAIRN_REBALANCE_PULL_TIMEOUT_MS (20 * 60 * 1000)
/* Pulls a node runs at once (node/pull.c MAX_PULLS): no more are asked. */
#define CAIRN_REBALANCE_NODE_PULLS 8
struct cairn_rebalance_pull_outcome {
    int rc;
    uint64_t bytes;      /* copied (the tail only when resumed) */
    uint64_t file_bytes; /* the installed data file */
    uint64_t elapsed_ms; /* at the target */
    bool resumed;
    char digest[41]; /* the installed copy's (equal to the source's) */
    char text[256];  /* on failure: the target's and source's words */
};
typedef void (*cairn_rebalance_pull_fn)(
    void *arg, const struct cairn_rebalance_pull_outcome *outcome);
/* Starts one; fn(arg, outcome) is called from cairn_rebalance_link_run. */
int cairn_rebalance_pull_start(struct cairn_rebalance_link *link,
                               const char *target, const char *source,
                               const char *userid, uint64_t rate, bool whole,
                               cairn_rebalance_pull_fn fn, void *arg);
/* Runs the link's callbacks for up to wait_ms. */
int cairn_rebalance_link_run(struct cairn_rebalance_link *link,
                             uint64_t wait_ms);
/* One pull, waited for. */
int cairn_rebalance_pull(struct cairn_rebalance_link *link, const char *target,
                         const char *source, const char *userid, uint64_t rate,
                         bool whole,
                         struct cairn_rebalance_pull_outcome *outcome);

/* Removes userid's copy from node (ENOENT: none). */
int cairn_rebalance_remove_user(struct cairn_rebalance_link *link,
                                const char *node, const char *userid);

/*
 * One request to the router's control endpoint: kind, destination, user
 * (may be NULL), epoch, optional frame (the ring text for RING_PREPARE).
 * *status (may be NULL) gets the owned RingStatus of the answer.
 */
int cairn_rebalance_router_call(const char *endpoint, Cairn__Kind kind,
                                const char *destination, const char *userid,
                                uint64_t epoch, const void *frame,
                                size_t frame_len, Cairn__RingStatus **status,
                                char *text, size_t text_size);

/* Closes the connection the router calls keep (cairn_rebalance_link_free
 * does it too). */
void cairn_rebalance_router_close(void);

/* --- the executor (user_mover.c) ------------------------------------------ */

struct cairn_rebalance_options {
    const char *destination;
    const char *new_ring_path;
    const char *old_ring_path; /* NULL: the destination's ring_file */
    uint64_t grace_seconds;    /* keep old copies this long after switch */
    bool dry_run;              /* print the plan, change nothing */
    size_t parallel;           /* users moving at once (>= 1) */
    uint64_t rate;             /* bytes per second read from a source node
                                * for bulk copies, one at a time; 0: any */
    FILE *out;                 /* the plan and the summary */
    FILE *progress;            /* progress lines; NULL: none */
};

struct cairn_rebalance_report {
    uint64_t users_moving;   /* users whose replica set changes */
    uint64_t users_switched; /* switched by this run */
    uint64_t users_retired;  /* old copies removed by this run */
    uint64_t users_failed;
    uint64_t copies;        /* user copies made */
    uint64_t bytes_copied;  /* their bytes */
    uint64_t users_waiting; /* switched, old copies kept for the grace */
    bool committed;         /* the new ring is everybody's ring */
    double seconds;
    uint64_t longest_hold_ms; /* a user's writes held at the router */
    char longest_hold_user[256];
};

/*
 * Runs (or resumes) a rebalance of options->destination onto the new
 * ring. Returns 0 when every moving user is switched (failures are counted
 * in the report and give CAIRN_ESTATE), or an error that stopped the run;
 * err gets the reasons.
 */
int cairn_rebalance_run(const struct cairn_config *config,
                        const struct cairn_rebalance_options *options,
                        struct cairn_rebalance_report *report, FILE *err);

#endif /* CAIRN_OPS_REBALANCE_INT_H */
