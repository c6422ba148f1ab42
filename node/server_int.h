/*
 * server_int.h - what the parts of the node daemon share: the server, its
 * users (store cache, ordering state, queue of requests), and requests
 * while their payload arrives and until they are answered.
 */
#ifndef CAIRN_NODE_SERVER_INT_H
#define CAIRN_NODE_SERVER_INT_H

#include "cluster.pb-c.h"
#include "curve.h"
#include "node.h"
#include "node_server.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ROUTING_ID_MAX 256
/* Bodies of a request sent whole in one message are kept in memory up to
 * this (ZeroMQ held them anyway); more, or split requests, use a file. */
#define NODE_MEMORY_BODIES_MAX (1024 * 1024)

/* One request from a peer, from its first message until its reply. */
struct node_request {
    struct node_request *next;        /* in the user's queue or acks */
    struct node_request *stream_next; /* in the open-stream list */
    unsigned char routing_id[ROUTING_ID_MAX];
    size_t routing_id_len;
    enum cairn_curve_role role; /* of the peer that sent it (CURVE) */
    Cairn__Envelope *envelope;  /* owned (unpacked) */
    char *dlist;                /* frame 1, owned, NUL-terminated */
    size_t dlist_len;
    bool complete;             /* every continuation arrived */
    uint64_t last_activity_ms; /* of its latest message (stalled streams) */
    struct cairn_buf memory;   /* small bodies of an unsplit request */
    int spool_fd;              /* bodies, -1 until the first body frame */
    uint64_t spooled;          /* body bytes written to spool_fd */
    int failure; /* set while streaming: reply this error at the end */
    const char *failure_text;
    struct cairn_dlist *missing; /* RESERVE: the MISSING item, owned */
    struct node_user *user;
};

/* What the node keeps per user. */
struct node_user {
    struct node_user *hash_next;
    char *userid;
    struct cairn_store *store; /* NULL while closed */
    uint64_t last_used_ms;
    bool has_sequence;      /* a sequenced APPLY was seen */
    uint64_t last_sequence; /* of the last sequenced APPLY */
    int last_outcome;       /* its outcome so far (0 or CAIRN_E*) */
    /* committed before this process started (from the index): a resend
     * up to it is re-acknowledged, not applied again */
    uint64_t restored_sequence;
    struct node_request *queue; /* waiting, in order */
    struct node_request *queue_tail;
    size_t queued;
    struct node_request *applied; /* appended, waiting for the commit */
    struct node_request *applied_tail;
    bool in_round;  /* in server->round_users */
    bool appending; /* the worker thread holds the store */
    /* a TRANSFER export read the data file: no compaction before this
     * (loop clock), or the bytes cairnctl relays would change under it */
    uint64_t exporting_until_ms;
    bool pulling;   /* pull.c: a copy is being pulled in: not opened */
    int quarantine; /* server_scrub.c: unknown, clean, or quarantined */
    char *damage;   /* what the scrub found, owned */
};

struct cairn_node_server {
    struct cairn_loop *loop;
    void *zmq_context;
    bool owns_context;
    struct cairn_zap *zap; /* CURVE: admits known keys with their role */
    void *socket;
    bool reading; /* socket registered with the loop */
    bool shut_down;
    char *endpoint;
    char *spool_dir;
    struct cairn_node_server_settings settings; /* strings owned */
    struct cairn_catalog *catalog;
    cairn_node_server_event_fn event_fn;
    void *event_arg;
    /* users: chained hash table */
    struct node_user **buckets;
    size_t bucket_count;
    size_t user_count;
    size_t open_stores;
    /* users with uncommitted appends in this round */
    struct node_user **round_users;
    size_t round_count, round_cap;
    /* split requests still receiving */
    struct node_request *streams;
    size_t stream_count;
    uint64_t idle_timer;
    uint64_t started_ms;
    int64_t started_time;
    uint64_t requests; /* handled since start */
    uint64_t refused;  /* refused for the sender's CURVE role */
    /* the node loads no ring: the highest ring_epoch requests carried
     * (0 until one names an epoch) is what STATS reports */
    uint64_t ring_epoch;
    /* the background append (server_worker.c) */
    int wake_fds[2];
    bool worker_running;
    pthread_t worker_thread;
    struct node_background *background;
    uint64_t compact_timer;
    struct admin_job *admin_jobs; /* VERIFY / COMPACT in progress, FIFO */
    uint64_t compactions;         /* scheduled ones done since start */
    uint64_t scrub_timer;
    uint64_t scrub_next_ms; /* loop clock: the read rate's pause */
    bool scrub_running;
    uint64_t scrubbed, scrub_bytes, scrub_damaged; /* since start */
    /* wall ms of cairn_node_server_scrub_now(): users checked before it
     * are due at once (0: none asked) */
    int64_t scrub_now_ms;
    struct node_heal *heal;              /* server_heal.c, owned */
    struct node_body_spool *body_spools; /* server_restore.c */
    /* pull_source.c: the ranges other nodes are pulling from this one */
    struct node_pull_session *pull_sessions;
    size_t pull_session_count;
    uint64_t pull_session_last;
    /* pull.c: this node's pulls, each on its own thread */
    struct node_pulls *pulls;
};

/* server.c */
void node_event(struct cairn_node_server *server, enum cairn_log_level level,
                const struct node_request *request, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/*
 * Sends a reply to request's peer: kind, optional frames (each data/len
 * pair borrowed). Returns 0 or an error (the reply is then lost, logged).
 */
int node_reply(struct cairn_node_server *server,
               const struct node_request *request, Cairn__Kind kind,
               const struct cairn_buf *frames, size_t frame_count,
               bool has_body);
/*
 * Whether a peer of role may make the request (server_roles.c); if not,
 * the reason is written to refusal.
 */
bool node_role_allows(enum cairn_curve_role role,
                      const Cairn__Envelope *envelope, char *refusal,
                      size_t refusal_size);

int node_reply_error(struct cairn_node_server *server,
                     const struct node_request *request, int code,
                     unsigned csync_code, const char *text);
/* Answers (ACK, or ERROR when outcome < 0) and frees user->applied. */
void node_answer_applied(struct cairn_node_server *server,
                         struct node_user *user, int outcome);
/* Commits every store touched in this round and answers its requests. */
void node_commit_round(struct cairn_node_server *server);
void node_request_free(struct node_request *request);

/* server_users.c */
int node_user_get(struct cairn_node_server *server, const char *userid,
                  struct node_user **user);
/* Opens (or finds open) the user's store; CAIRN_ENOENT without create. */
int node_user_open(struct cairn_node_server *server, struct node_user *user,
                   bool create);
void node_user_close(struct cairn_node_server *server, struct node_user *user);
/* Closes stores idle longer than the setting, and over the cache size. */
void node_users_trim(struct cairn_node_server *server, bool all);
void node_users_free(struct cairn_node_server *server);
/* Runs the user's queued requests that are complete, in order. */
void node_user_progress(struct cairn_node_server *server,
                        struct node_user *user);

/* server_apply.c */
/* Appends an APPLY (into user->applied) or answers it with an error. */
void node_apply(struct cairn_node_server *server, struct node_request *request);
/* Answers a STATE_REQUEST (commits the round first if the user has any). */
void node_state(struct cairn_node_server *server, struct node_request *request);
/* Writes body frames of a request to its spool file. */
int node_spool_write(struct cairn_node_server *server,
                     struct node_request *request, const void *data,
                     size_t len);
/* Prints item with its key into a fresh frame of out (max from server). */
int node_print_item(const struct cairn_dlist *item, struct cairn_buf *out);

/* Reads a FILE node's body from the request's spool (store bodies). */
int node_read_spooled_body(void *ctx, const struct cairn_dlist *file,
                           int (*put)(void *put_ctx, const void *data,
                                      size_t len),
                           void *put_ctx);
/*
 * The time to write for request's update: the router's stamp
 * (Envelope.update_time), or this node's clock for a request without one.
 */
int64_t node_update_time(const struct node_request *request);
/* Completes an APPLY whose append ended with rc (background path). */
void node_apply_finished(struct cairn_node_server *server,
                         struct node_request *request, int rc);

/* server_worker.c */
int node_worker_init(struct cairn_node_server *server);
/* Waits for a running append, then closes the wake pipe. */
void node_worker_release(struct cairn_node_server *server);
/* Whether request's append should run on the worker (big, worker idle). */
bool node_background_wanted(const struct cairn_node_server *server,
                            const struct node_request *request);
/* Starts it; takes record on success (0), else the caller keeps it. */
int node_background_start(struct cairn_node_server *server,
                          struct node_request *request,
                          struct cairn_dlist *record);
/*
 * Starts compacting user's store on the worker (policy copied); the
 * user's requests wait meanwhile. CAIRN_EAGAIN if the worker is busy.
 */
int node_compact_start(struct cairn_node_server *server, struct node_user *user,
                       const struct cairn_compact_policy *policy);
/*
 * Runs job(arg, user's store) on the worker, then done(...) on the loop
 * with its result; the user's requests wait meanwhile. CAIRN_EAGAIN if
 * the worker is busy.
 */
typedef int (*node_job_fn)(void *arg, struct cairn_store *store);
typedef void (*node_job_done_fn)(struct cairn_node_server *server,
                                 struct node_user *user, void *arg, int rc);
int node_job_start(struct cairn_node_server *server, struct node_user *user,
                   node_job_fn job, node_job_done_fn done, void *arg);
/* Joins the worker and completes its request or compaction (loop). */
void node_background_finish(struct cairn_node_server *server);

/* server_compact.c: the compaction schedule ([compaction] interval). */
int node_compact_schedule_init(struct cairn_node_server *server);
void node_compact_schedule_release(struct cairn_node_server *server);
/* The policy of the settings, at the current time. */
void node_compact_policy(const struct cairn_node_server *server,
                         struct cairn_compact_policy *policy);
/* Records and logs a scheduled compaction that ended with rc. */
void node_compact_finished(struct cairn_node_server *server,
                           struct node_user *user, int rc,
                           const struct cairn_compact_result *result,
                           uint64_t elapsed_ms);

/* server_scrub.c: the scrub ([scrub]) and its quarantine. */
int node_scrub_schedule_init(struct cairn_node_server *server);
void node_scrub_schedule_release(struct cairn_node_server *server);
/* Whether user is quarantined (read from the catalog on first use). */
bool node_user_quarantined(struct cairn_node_server *server,
                           struct node_user *user);
/* Answers request with the retryable NO of a quarantined user. */
int node_reply_quarantined(struct cairn_node_server *server,
                           struct node_request *request);
/*
 * Whether every mailbox of the store is userid's (CAIRN_ECORRUPT with
 * the first that is not in error: another user's files in its place).
 * Any thread (touches only the store).
 */
int node_check_owner(struct cairn_store *store, const char *userid, char *error,
                     size_t error_size);
/* Quarantines user for damage (copied): logged, kept in the catalog. */
void node_scrub_quarantine(struct cairn_node_server *server,
                           struct node_user *user, const char *damage);
/* A good copy of userid was transferred in and verified: lift it. */
int node_scrub_lift(struct cairn_node_server *server, const char *userid);
/* The scrub's interval in effect (the setting, or its default). */
uint64_t node_scrub_interval_ms(const struct cairn_node_server *server);
/* Users, checked within the interval, damaged (for STATS). */
int node_scrub_figures(struct cairn_node_server *server, uint64_t *users,
                       uint64_t *checked, uint64_t *damaged);

/* server_heal.c: self-heal from a good peer replica ([scrub] heal). */
/* Takes the peers of settings (copied); the timer on the loop. */
int node_heal_init(struct cairn_node_server *server,
                   const struct cairn_node_server_settings *settings);
void node_heal_release(struct cairn_node_server *server);
/*
 * The scrub checked userid: rc its outcome (< 0: damaged, quarantined),
 * digest its state digest when it verified (else NULL). Compares it with
 * the peers' replicas and heals it when it is damaged or older.
 */
void node_heal_after_scrub(struct cairn_node_server *server, const char *userid,
                           int rc, const char *digest);
/* The heal figures and damaged user lines into stats (lines allocated,
 * freed by node_heal_figures_release). */
void node_heal_figures(struct cairn_node_server *server,
                       Cairn__NodeStats *stats);
void node_heal_figures_release(Cairn__NodeStats *stats);
/* The endpoint of peer node name ([node] endpoint), NULL if unknown. */
const char *node_heal_peer_endpoint(const struct cairn_node_server *server,
                                    const char *name);

/* server_admin.c */
/* Hex SHA-1 of the user's state (VERIFY's digest, comparable across
 * replicas): GET USER, each GET FULLMAILBOX, the index's times. */
int node_state_digest(struct cairn_store *store, char hex[41]);
/* The user's figures from its index (UserStats); CAIRN_ENOENT if not
 * held. */
int node_user_stats(struct cairn_node_server *server, const char *userid,
                    Cairn__UserStats *stats);

void node_admin(struct cairn_node_server *server, struct node_request *request);
/* STATS_REQUEST with Envelope.page_limit: one page of users in userid
 * order (server_stats_page.c). */
int node_answer_stats_page(struct cairn_node_server *server,
                           struct node_request *request);
/* Bytes on disk of every user, from the figures cache (read again for
 * users whose files changed). */
int node_total_bytes(struct cairn_node_server *server, uint64_t *bytes);
/* A UserStats's figures from figures (the user name is left alone). */
void node_fill_user_stats(Cairn__UserStats *stats,
                          const struct cairn_user_figures *figures);
/*
 * VERIFY and COMPACT run one user at a time on the worker: starts the
 * next user of the oldest such request when the worker is idle, answers
 * a request when its last user is done.
 */
void node_admin_progress(struct cairn_node_server *server);
/* Drops unanswered VERIFY / COMPACT requests (shutdown). */
void node_admin_release(struct cairn_node_server *server);

/* server_restore.c: BODY_REQUEST / SIEVE_REQUEST (cairnctl restore). */
bool node_restore_request(Cairn__Kind kind);
/* Answers one (a user request, first in its user's queue); takes it. */
void node_restore_read(struct cairn_node_server *server,
                       struct node_request *request);
/* Drops body spools unused for a while (all: every one; shutdown). */
void node_restore_trim(struct cairn_node_server *server, bool all);

/* transfer.c: TRANSFER_BEGIN/CHUNK/END (export, import, remove a user). */
/*
 * Commits the user's pending appends and keeps compaction off it for a
 * few minutes (an export or a pull reads its file); touch renews that.
 * CAIRN_ELOCKED while the worker holds the user's store.
 */
int node_transfer_hold(struct cairn_node_server *server, const char *userid);
void node_transfer_hold_touch(struct cairn_node_server *server,
                              const char *userid);
/* A new empty data file as Cyrus names them; *path owned by the caller. */
int node_transfer_data_path(const struct cairn_node_server *server,
                            const char *userid, char **path);
/*
 * Opens data_path (whose index is missing: rebuilt), refuses any damaged
 * or torn member, verifies at Cyrus's full level and (digest not NULL)
 * computes the state digest. Touches no server state (any thread).
 */
int node_transfer_rebuild_verify(const char *data_path, char digest[41],
                                 char *error, size_t error_size);
/* Whether a TRANSFER export of user is under way (see node_user). */
bool node_transfer_exporting(const struct node_user *user);
void node_transfer(struct cairn_node_server *server,
                   struct node_request *request);

/* pull_source.c: TRANSFER_* verb SEND, the side a pull reads from. */
#define NODE_PULL_CHECK_BYTES (64 * 1024) /* prefix check of a resume */
/* Hex SHA-1 of fd's bytes [from, to) (read with pread). */
int node_pull_range_sha1(int fd, uint64_t from, uint64_t to, char hex[41]);
int node_pull_source(struct cairn_node_server *server,
                     struct node_request *request);
/* Drops sessions idle for two minutes (all: every one, shutdown). */
void node_pull_sessions_trim(struct cairn_node_server *server, bool all);

/* pull.c: node-to-node pull (TRANSFER_BEGIN verb PULL from cairnctl). */
struct node_pull_result {
    uint64_t bytes;
    char digest[64];
    char error[256];
};
/*
 * Pulls USERID's files from PEER_NODE (a node name of the config) into
 * this node, verifies them fully and installs them; the current copy (if
 * any) is set aside as <data file>.replaced-<unix time> and only removed
 * by the caller. Runs on the worker; blocks only the calling thread.
 * Returns 0 or a CAIRN_E* code, with RESULT->error naming the peer and
 * the cause. It touches no loop state: back on the loop, the caller
 * closes the user's cached store (node_user_close) so that the next
 * request opens the installed file, and lifts a quarantine
 * (node_scrub_lift). Always a copy of the whole file: a damaged copy is
 * never extended.
 */
int node_pull_user(struct cairn_node_server *server, const char *userid,
                   const char *peer_node, uint64_t rate_bytes_per_second,
                   struct node_pull_result *result);
/* Answers a TRANSFER_BEGIN "PULL" (admin) once its pull thread is done. */
void node_pull_request(struct cairn_node_server *server,
                       struct node_request *request);
/* Stops the pulls under way (they fail) and joins their threads. */
void node_pulls_release(struct cairn_node_server *server);

#endif /* CAIRN_NODE_SERVER_INT_H */
