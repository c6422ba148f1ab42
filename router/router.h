/*
 * router.h - the csync server side of cairn (library cairn_router): TCP
 * listeners per channel, the session every sync_client connection goes
 * through (banner, SASL via libsasl2, COMPRESS DEFLATE, NOOP/RESTART/EXIT,
 * the IMAP probe), the command table, and the mapping of every request to
 * exactly one user, as Cyrus backupd does it.
 *
 * Requests that need the user's backup go to a request handler the program
 * installs: cairn_router_forward_request (forward.c) sends them to the
 * storage nodes of the user's ring. Without a handler, the router answers
 * every such request with a NO that says it is not forwarded; it never
 * claims to have stored anything.
 *
 * Runs on one cairn_loop; single-threaded. The library never logs: it
 * reports what happens through the optional event callback.
 */
#ifndef CAIRN_ROUTER_H
#define CAIRN_ROUTER_H

#include "common.h"
#include "csync.h"
#include "dlist.h"
#include "loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- user resolution (pure; user_map.c) -------------------------------- */

/* Longest userid (with "@domain"), terminating NUL included. */
#define CAIRN_ROUTER_USERID_MAX 256
/* The one pseudo-user that holds every shared (non-user) mailbox. */
#define CAIRN_ROUTER_SHARED_USER "%SHARED"

/* The sender's namespace settings that change the mapping. */
struct cairn_router_namespace {
    const char *default_domain; /* NULL: none; "x!user.a" -> a@x unless == */
    const char *deleted_prefix; /* NULL: "DELETED" */
};

/* Whose a name is: a user, or the shared pseudo-user. */
struct cairn_router_owner {
    bool shared;                          /* userid is the shared user */
    char userid[CAIRN_ROUTER_USERID_MAX]; /* "anne", "anne@example.com" */
};

/*
 * True if userid may become a storage key: 1..255 bytes, no control bytes
 * or blanks, no '/', '\\', '!', no "..", not starting with '.', '%' or '@',
 * at most one '@' with a non-empty domain after it.
 */
bool cairn_router_userid_safe(const char *userid);

/*
 * The owner of an internal mailbox name as backupd computes it:
 * "user.anne.Sent" -> anne, "example.com!user.anne" -> anne@example.com,
 * "user.anne^smith" -> anne.smith, "DELETED.user.anne.X.5F1E2D3C" -> anne,
 * anything not under "user." -> shared. Returns CAIRN_EBADNAME when the
 * userid it finds is unsafe (owner then says nothing useful).
 */
int cairn_router_mailbox_owner(const char *mboxname,
                               const struct cairn_router_namespace *names,
                               struct cairn_router_owner *owner);
/*
 * The owner of a userid argument (GET USER, GET META, USERID keys): split
 * at the last '@', the default domain dropped. CAIRN_EBADNAME if unsafe.
 */
int cairn_router_userid_owner(const char *userid,
                              const struct cairn_router_namespace *names,
                              struct cairn_router_owner *owner);

/* --- the command table for GET/APPLY (pure; commands.c) ---------------- */

/* What the router does with a GET/APPLY key, backupd's way. */
enum cairn_router_action {
    CAIRN_ROUTER_FORWARD = 0,    /* to the user's backup (request handler) */
    CAIRN_ROUTER_IGNORE,         /* backupd accepts and stores nothing: OK */
    CAIRN_ROUTER_PROTOCOL_ERROR, /* NO IMAP_PROTOCOL_ERROR Protocol error */
    CAIRN_ROUTER_BAD_PARAMETERS, /* NO IMAP_PROTOCOL_BAD_PARAMETERS ... */
};

/* How the user of a request is found. */
enum cairn_router_user_rule {
    CAIRN_ROUTER_USER_NONE = 0,   /* names no user */
    CAIRN_ROUTER_USER_VALUE,      /* the value is a userid (GET USER) */
    CAIRN_ROUTER_USER_MAILBOX,    /* the value is a mailbox name */
    CAIRN_ROUTER_USER_MAILBOXES,  /* a list of names that must agree */
    CAIRN_ROUTER_USER_KEY_MBOX,   /* a kvlist key holds a mailbox name */
    CAIRN_ROUTER_USER_KEY_MBOXES, /* a kvlist key holds a list of names */
    CAIRN_ROUTER_USER_KEY_USERID, /* a kvlist key holds a userid */
    CAIRN_ROUTER_USER_CURRENT,    /* the connection's current user */
};

/* One request after resolution. */
struct cairn_router_resolution {
    enum cairn_router_action action;
    enum cairn_router_user_rule rule;
    const char *key;                 /* canonical key, "MAILBOX" (static) */
    struct cairn_router_owner owner; /* valid when has_owner */
    bool has_owner;
};

/*
 * Looks the command (verb GET or APPLY; value is the command's tree, whose
 * name is the key) up in the table and finds its user. current_user (may
 * be NULL) is the user of the last user-naming request on the connection:
 * an APPLY MESSAGE before any is a protocol error, as in backupd (its
 * bodies then wait for the APPLY MAILBOX that names them). Unknown keys
 * resolve to PROTOCOL_ERROR; a GET MAILBOXES or APPLY RESERVE spanning
 * several users, a NIL or unsafe userid, or a missing key resolve to
 * BAD_PARAMETERS. Returns 0 (the outcome is in *resolution)
 * or CAIRN_EINVAL for another verb.
 */
int cairn_router_resolve(enum cairn_csync_verb verb,
                         const struct cairn_dlist *value,
                         const struct cairn_router_namespace *names,
                         const char *current_user,
                         struct cairn_router_resolution *resolution);

/* --- the router: listeners and sessions -------------------------------- */

/* One channel: a listener with its own credentials. Strings are borrowed
 * for the call only (the router copies them). */
struct cairn_router_channel_settings {
    const char *name;
    const char *listen;            /* "127.0.0.1:14873"; port 0 picks one */
    const char *sasl_user;         /* the identity sync_client must log in as */
    const char *sasl_password;     /* its password, or NULL and ... */
    const char *sasl_db;           /* ... a sasldb file that holds it */
    const char *const *mechanisms; /* advertised, in order; NULL = default */
    size_t mechanism_count;
    bool compress;            /* offer COMPRESS DEFLATE */
    uint64_t idle_timeout_ms; /* 0: 30 minutes, like sync_server */
    /* TLS (PEM files, read at start and at every reload); NULL: none. */
    const char *tls_cert, *tls_key;
    bool require_tls;               /* STARTTLS before any login */
    bool implicit_tls;              /* TLS from connect on */
    const char *tls_client_ca;      /* client certificates required */
    const char *tls_client_subject; /* CN or RFC 2253 DN allowed */
};

struct cairn_router_settings {
    const char *servername; /* banner and SASL realm; NULL: "localhost" */
    const struct cairn_router_channel_settings *channels;
    size_t channel_count;
    struct cairn_router_namespace names;
    size_t max_connections; /* all channels; 0: 1024 */
    size_t max_line;        /* simple command line; 0: 65536 */
    size_t max_output;      /* queued reply bytes per connection; 0: 4 MiB */
    const char *spool_dir;  /* message bodies; NULL: bodies are skipped */
    uint64_t spool_max;     /* bytes all spooled bodies may take; 0: 1 GiB */
    uint64_t failed_login_pause_ms; /* before a failed login's NO; 0: 3 s */
    const struct cairn_dlist_limits *limits; /* NULL: defaults */
};

/* Severity of an event the router reports. */
enum cairn_router_event_level {
    CAIRN_ROUTER_EVENT_ERROR = 0,
    CAIRN_ROUTER_EVENT_WARN,
    CAIRN_ROUTER_EVENT_INFO,
    CAIRN_ROUTER_EVENT_DEBUG,
};

/*
 * Where an event happened: channel, peer ("127.0.0.1:5555"), authenticated
 * user (NULL before login). All borrowed for the call.
 */
struct cairn_router_event {
    enum cairn_router_event_level level;
    const char *channel;
    const char *peer;
    const char *login;
    const char *message;
};
typedef void (*cairn_router_event_fn)(void *arg,
                                      const struct cairn_router_event *event);

/*
 * APPLY MESSAGE bodies: with a spool, each FILE node's handle (see
 * cairn_dlist_file_info) is a spooled body, kept by the session until the
 * APPLY MAILBOX naming it was answered OK or the next APPLY RESERVE starts
 * a batch. Its bytes are size bytes at offset of the file at path (a
 * connection's bodies share files; borrowed), and whether its SHA-1
 * matched the GUID (the router refuses the request as backupd does when
 * not).
 */
const char *cairn_router_spool_file_path(const void *handle);
uint64_t cairn_router_spool_file_offset(const void *handle);
bool cairn_router_spool_file_verified(const void *handle);

/* A request that needs the user's backup, handed to the request handler. */
struct cairn_router_request {
    const char *channel;
    const char *peer;
    enum cairn_csync_verb verb; /* GET or APPLY */
    const struct cairn_router_resolution *resolution;
    const struct cairn_dlist *value; /* the command's tree (borrowed) */
    /*
     * APPLY MAILBOX: the staged APPLY MESSAGE bodies its records name, as
     * a "MESSAGE" list to store on the same replicas first; else NULL.
     */
    const struct cairn_dlist *message;
};

struct cairn_router_reply;

/*
 * Answers a request: zero or more untagged items, then exactly one
 * completion. Items are printed at once (borrowed for the call).
 */
int cairn_router_reply_untagged(struct cairn_router_reply *reply,
                                const struct cairn_dlist *item);
int cairn_router_reply_complete(struct cairn_router_reply *reply,
                                enum cairn_csync_status status,
                                enum cairn_csync_code code, const char *text);

/*
 * Handles one request. Either completes reply before returning (and
 * returns 0), or returns CAIRN_EAGAIN and completes it later from the loop
 * (e.g. when a node answers): the reply pointer stays valid until
 * completed, the request's tree and spooled bodies (request->value) stay
 * alive until then too, and the connection reads no further command in
 * the meantime. If the connection closes first, completing still frees
 * everything (the untagged call then fails with CAIRN_EIO). Any other
 * return without a completion makes the router answer "NO Unknown error".
 */
typedef int (*cairn_router_request_fn)(void *arg,
                                       const struct cairn_router_request *req,
                                       struct cairn_router_reply *reply);

struct cairn_router;

/*
 * Creates a router on loop (borrowed; it must outlive the router): binds
 * every channel's listener and starts accepting. On failure returns a
 * negative code and, when error is not NULL, a reason in error. The caller
 * owns *router and frees it with cairn_router_free(), which closes every
 * connection and listener.
 */
int cairn_router_new(struct cairn_loop *loop,
                     const struct cairn_router_settings *settings,
                     struct cairn_router **router, char *error,
                     size_t error_size);
void cairn_router_free(struct cairn_router *router);

/*
 * Applies new settings without dropping a connection: channels are matched
 * to the running ones by listen address, whose listeners are kept; new
 * addresses are bound, dropped ones closed; credentials, mechanisms and the
 * other channel settings apply to connections accepted from now on, while
 * sessions already open keep the settings they started with. Router-wide
 * limits and the namespace apply at once; the spool directory does not
 * change (restart for that). Everything is checked and bound first: on
 * failure nothing changes and error says why.
 */
int cairn_router_reload(struct cairn_router *router,
                        const struct cairn_router_settings *settings,
                        char *error, size_t error_size);

/* Installs the event callback (NULL to drop events). */
void cairn_router_set_event_handler(struct cairn_router *router,
                                    cairn_router_event_fn fn, void *arg);
/* Installs the request handler (NULL: "not yet forwarded" answers). */
void cairn_router_set_request_handler(struct cairn_router *router,
                                      cairn_router_request_fn fn, void *arg);

/* The TCP port channel index listens on (after binding port 0), or 0. */
uint16_t cairn_router_port(const struct cairn_router *router, size_t channel);
/* Open csync connections, all channels. */
size_t cairn_router_connection_count(const struct cairn_router *router);

/* --- forwarding to storage nodes (forward.c) --------------------------- */

/* A node of the destination's ring and the ZeroMQ endpoint it binds. */
struct cairn_router_forward_node {
    const char *name;
    const char *endpoint;
};

/* When a write is answered OK: every replica, a majority, or one has it
 * durably. A replica that missed an update answered OK is reported as
 * needing repair (event + cairn_router_forward_repairs). */
enum cairn_router_ack {
    CAIRN_ROUTER_ACK_ALL = 0,
    CAIRN_ROUTER_ACK_QUORUM,
    CAIRN_ROUTER_ACK_ONE,
};

/*
 * The router's view of a node (forward_health.c, health_int.h): up, slow
 * (answers PINGs, a request has waited longer than the answer deadline)
 * or down (missed a deadline or lost its connection; requests that need
 * it are answered at once without it until a probe finds it back).
 */
enum cairn_router_node_state {
    CAIRN_ROUTER_NODE_UP = 0,
    CAIRN_ROUTER_NODE_SLOW,
    CAIRN_ROUTER_NODE_DOWN,
};

/* Counts since the start, for metrics. */
struct cairn_router_node_counters {
    uint64_t downs;              /* changes to down */
    uint64_t slows;              /* changes to slow */
    uint64_t recoveries;         /* down -> up */
    uint64_t probes;             /* PINGs sent on the probe path */
    uint64_t probes_missed;      /* ... not answered in time */
    uint64_t requests_failed;    /* requests that got no answer in time */
    uint64_t requests_abandoned; /* waiting when the node went down */
    uint64_t requests_refused;   /* not sent: the node was down */
};

/* One node as the forwarder sees it; strings borrowed until the next
 * call into the forward. */
struct cairn_router_node_health {
    const char *name;
    enum cairn_router_node_state state;
    const char *reason; /* why it is in that state ("" when up from start) */
    uint64_t age_ms;    /* time in that state */
    size_t waiting;     /* requests sent, not answered */
    struct cairn_router_node_counters counters;
};

/* Strings are borrowed for the call only. */
struct cairn_router_forward_settings {
    const char *destination;
    const char *ring_file; /* the destination's ring (cairnctl ring) */
    const struct cairn_router_forward_node *nodes; /* every ring node */
    size_t node_count;
    uint64_t timeout_ms; /* one node request, bodies included; 0: 30 s */
    /* A node that answers nothing (not even a PING on a path of its own)
     * this long while it has requests is down; 0: 5 s; at most timeout_ms
     * (health_int.h). */
    uint64_t answer_timeout_ms;
    size_t node_window;        /* 0: 16 */
    size_t user_window;        /* 0: 4 */
    size_t max_frame;          /* 0: 1 MiB; larger commands travel cut */
    enum cairn_router_ack ack; /* when a write may be answered OK */
    /* Repair marks are kept in <state_dir>/repair-marks.<destination> and
     * read back at start (made when missing); NULL: in memory only. */
    const char *state_dir;
    /* Events from the start on (the marks of the last run); may be NULL.
     * cairn_router_forward_set_event_handler replaces it. */
    cairn_router_event_fn event_fn;
    void *event_arg;
};

struct cairn_router_forward;

/*
 * Loads the ring and connects to its nodes on loop (borrowed). The caller
 * owns *forward; install it with cairn_router_set_request_handler(router,
 * cairn_router_forward_request, forward) and free it after the router.
 */
int cairn_router_forward_new(struct cairn_loop *loop,
                             const struct cairn_router_forward_settings *s,
                             struct cairn_router_forward **forward, char *error,
                             size_t error_size);
/* Frees (NULL-safe); answers still pending are dropped. */
void cairn_router_forward_free(struct cairn_router_forward *forward);
/*
 * The request handler (arg: the forward): APPLY to every replica with the
 * (user, node) sequence numbers of the wire contract, OK once the ack
 * policy is met (RESERVE waits for every replica: MISSING is their union);
 * GET to the first replica that answers (the next one when a node is down
 * or times out), its items relayed; when the policy cannot be met, "NO
 * IMAP_MAILBOX_LOCKED" for a node that is down or slow, which sync_client
 * retries. A node the forward holds down gets no request: a GET asks the
 * next replica at once, a write counts it failed at once ("NO
 * IMAP_MAILBOX_LOCKED node2 is down (...)" under ack all; marked for
 * repair when quorum or one is met without it). A command larger than one frame
 * travels cut in several (up to 256 MiB). A request's MESSAGE bodies go to the
 * same replicas first (the sequence numbers keep the order); OK needs both to
 * meet the policy. Needs the router's spool for APPLY MESSAGE bodies.
 */
int cairn_router_forward_request(void *forward,
                                 const struct cairn_router_request *request,
                                 struct cairn_router_reply *reply);
/*
 * A channel with several destinations: every write goes to each
 * destination's replicas and is answered OK when every destination met
 * its ack policy (RESERVE: MISSING is the union); a GET is answered from
 * the first destination alone. count == 1 is cairn_router_forward_request.
 */
int
cairn_router_forward_request_all(struct cairn_router_forward *const *forwards,
                                 size_t count,
                                 const struct cairn_router_request *request,
                                 struct cairn_router_reply *reply);
/*
 * Reports replicas that missed an update the router answered OK (level
 * WARN, channel = the destination, peer NULL): "needs repair" lines.
 */
void
cairn_router_forward_set_event_handler(struct cairn_router_forward *forward,
                                       cairn_router_event_fn fn, void *arg);
/* The nodes the forward knows (its ring's and any a reload added). */
size_t
cairn_router_forward_node_count(const struct cairn_router_forward *forward);
/* Node i's health (i < node_count); CAIRN_ENOENT past the end. */
int cairn_router_forward_node_health(const struct cairn_router_forward *forward,
                                     size_t i,
                                     struct cairn_router_node_health *health);
/* "up", "slow", "down" (static). */
const char *cairn_router_node_state_name(enum cairn_router_node_state state);

/* Updates answered OK that some replica missed, since the start. */
uint64_t
cairn_router_forward_repairs(const struct cairn_router_forward *forward);
/*
 * (user, node) pairs marked now (behind, or asked and not yet cleared): a
 * write to them failed; GETs of the user ask them first so sync_client
 * resends (forward.c). Includes the marks read back from state_dir.
 */
size_t
cairn_router_forward_repair_marks(const struct cairn_router_forward *forward);
/*
 * Saves the repair marks now if they changed since the last save (they
 * are saved at most once a second while they change, and by
 * cairn_router_forward_free). 0 without a state directory.
 */
int cairn_router_forward_flush_marks(struct cairn_router_forward *forward);
/*
 * SIGHUP: reads settings->ring_file again and, when its epoch is higher
 * than the ring in use, routes new requests with it (requests in flight
 * finish where they were sent); nodes in settings that the client does
 * not know yet are connected. Timeouts and windows are not changed. On
 * failure nothing changes and error says why. *replaced tells whether the
 * ring changed.
 */
int cairn_router_forward_reload(struct cairn_router_forward *forward,
                                const struct cairn_router_forward_settings *s,
                                bool *replaced, char *error, size_t error_size);

/* --- rebalance: the control endpoint (control.c) ------------------------
 * [router] control, driven by `cairnctl rebalance`: RING_STATUS, RING_PREPARE
 * (the next ring), USER_HOLD (writes answered with a retryable NO, replied
 * once the user's requests in flight are answered), USER_SWITCH (the user
 * routed with the next ring), RING_COMMIT (the next ring for everybody).
 * Nothing is persisted; see control.c.
 */

struct cairn_router_control;
/* Per-destination state of users in flight or moving (control.c). */
struct cairn_router_moves;

/*
 * Binds a ROUTER socket at endpoint and serves it on loop (borrowed). The
 * caller owns *control; free it after the forwards' router is freed and
 * before the forwards.
 */
int cairn_router_control_new(struct cairn_loop *loop, const char *endpoint,
                             struct cairn_router_control **control, char *error,
                             size_t error_size);
void cairn_router_control_free(struct cairn_router_control *control);
/* The endpoint actually bound ("tcp://127.0.0.1:5555"). Borrowed. */
const char *
cairn_router_control_endpoint(const struct cairn_router_control *control);
/*
 * Puts forward (borrowed; must outlive the control or be freed after it)
 * under control: its destination's holds and switches apply to it.
 */
int cairn_router_control_add_forward(struct cairn_router_control *control,
                                     struct cairn_router_forward *forward);

/*
 * After a restart: when RING_FILE.rebalance names a new ring (a
 * rebalance is under way), loads it as the prepared ring of destination
 * and replays the rebalance journal (its file + ".journal"): users
 * switched stay switched, users held or copied are held. Call after
 * adding the destination's forwards. 0 when there is nothing to resume.
 */
int cairn_router_control_resume(struct cairn_router_control *control,
                                const char *destination, const char *ring_file,
                                char *error, size_t error_size);

/*
 * For the forwarder: the ring to route userid with (current, or the next
 * ring once switched), NULL while the user is held. moves may be NULL.
 */
const struct cairn_ring *
cairn_router_moves_route(struct cairn_router_moves *moves, const char *userid,
                         const struct cairn_ring *current);
/* A request for userid was sent to nodes / was answered. */
int cairn_router_moves_started(struct cairn_router_moves *moves,
                               const char *userid);
void cairn_router_moves_finished(struct cairn_router_moves *moves,
                                 const char *userid);

/* Forward accessors the control uses (forward.c). */
struct cairn_ring;
const char *
cairn_router_forward_destination(const struct cairn_router_forward *forward);
const struct cairn_ring *
cairn_router_forward_ring(const struct cairn_router_forward *forward);
void cairn_router_forward_set_moves(struct cairn_router_forward *forward,
                                    struct cairn_router_moves *moves);
/* Routes everybody with ring from now on (consumed, also on failure). */
int cairn_router_forward_replace_ring(struct cairn_router_forward *forward,
                                      struct cairn_ring *ring);

#endif /* CAIRN_ROUTER_H */
