/*
 * node_client.h - the client side of the router/cairnctl <-> cairn-node
 * link (library cairn_node_client, in node/): a ZeroMQ DEALER per node,
 * requests with ids, replies matched to callbacks, a bounded in-flight
 * window per node and per user, timeouts, message bodies streamed in
 * bounded frames, all on a cairn_loop; plus a blocking call for cairnctl.
 *
 * ======================================================================
 * WIRE CONTRACT (what cairn-node speaks; proto/cluster.proto)
 * ======================================================================
 * Sockets: the node binds a ROUTER (ZMQ_ROUTER_MANDATORY) at its [node]
 * endpoint; clients connect DEALERs. Every ZeroMQ message (multipart) is
 * one frame holding a packed cairn.Envelope followed by exactly
 * Envelope.payload_frames raw frames, each at most the node's max_frame
 * bytes ([node] max_frame, else [limits] max_frame, default 1 MiB; the
 * client uses the same figure). A
 * message whose frame count differs, or with a frame too big, is answered
 * ERROR CAIRN_EPROTO / CAIRN_ETOOBIG and dropped.
 *
 * Splitting: ZeroMQ keeps a whole multipart message in memory, so a
 * request bigger than a few frames is split. Its first message has
 * more = true; each following message has continuation = true, the same
 * request_id, any other fields empty, and payload_frames raw frames; the
 * last one has more = false. Messages of other requests (other users) may
 * be interleaved; messages of one request keep their order (one DEALER
 * connection keeps order). The node writes continuation frames to a spool
 * file in the data dir as they arrive, so its memory stays bounded.
 *
 * request_id: chosen by the client, unique per connection while in flight,
 * echoed in the reply. Exactly one reply per request (after all its
 * continuation messages): the kind named below, or ERROR with error_code
 * (negative CAIRN_E*), error_text, and csync_code (enum cairn_csync_code
 * in proto/csync.h, the NO code the router gives sync_client; 0: none).
 *
 * APPLY (router -> node): verb "APPLY", key the sub-command ("MAILBOX",
 *   "MESSAGE", ...), user, sequence (see below), ring_epoch, destination.
 *   Payload frame 1 = the command's dlist exactly as printed by
 *   cairn_dlist_print(value, print_key = true, ...), e.g.
 *   "MAILBOX %(UNIQUEID ... )" (no "APPLY ", no CRLF). FILE nodes (APPLY
 *   MESSAGE and any record with file literals) are printed as their header
 *   "%{partition guid size}\r\n" with NO body bytes after it (a body
 *   writer that writes nothing). The bodies follow as payload frames 2..n
 *   (in the first message and/or continuation messages): the bodies of
 *   the FILE nodes in the order the nodes appear in the dlist, each body's
 *   bytes contiguous, a frame never holding bytes of two bodies, empty
 *   bodies taking no frame. A dlist larger than max_frame (APPLY MAILBOX
 *   of a big folder, up to 256 MiB) is cut into Envelope.dlist_frames
 *   leading frames that the node concatenates (the client does this by
 *   itself); the dlist must be whole in the first message.
 *   payload_bytes, when not 0, is the total of all payload frames.
 *   update_time (Envelope.update_time), when not 0, is the time the node
 *   writes for the update (line timestamp, expunged/deleted times) instead
 *   of its own clock, clamped so that a user's times never go backwards.
 *   Reply: ACK once the update is durable (the node's group commit: log
 *   fsynced and index committed). The ACK of APPLY RESERVE carries the
 *   untagged reply as payload: zero or one frame "MISSING (guid ...)".
 *   Keys backupd accepts without storing (QUOTA, ACTIVATE_SIEVE,
 *   UNACTIVATE_SIEVE) are ACKed and not stored; UNUSER is stored as the
 *   deletions it implies (cairn_store_unuser); unknown keys get
 *   ERROR CAIRN_EPROTO, csync IMAP_PROTOCOL_ERROR; a record the store
 *   refuses gets ERROR with the store's code (CAIRN_EMISMATCH for a body
 *   that fails its GUID).
 *
 * Ordering: sequence numbers per user, 1, 2, 3, ... in the order the
 *   client sends; the node applies each user's requests strictly in this
 *   order and different users independently. sequence 0 = unordered (a
 *   tool's one-off request). The first sequence the node sees for a user
 *   since it started is accepted as is; then sequence == last + 1 is
 *   applied, sequence == last is a replay and is re-ACKed without being
 *   applied again (if last was acked; else ERROR), sequence == 1 or a
 *   request marked stream_start starts a new stream; anything else is
 *   ERROR CAIRN_EPROTO ("sequence gap" / "replay") and is not applied. A
 *   client that lost track (timeout, restart) starts a new stream with a
 *   number it never used for that user and node, marked stream_start (the
 *   router takes wall-clock milliseconds << 20): restarting at 1 would be
 *   taken for a replay by a node whose last number was 1.
 *
 * STATE_REQUEST (router -> node): verb "GET", key "USER", "META",
 *   "MAILBOXES", "FULLMAILBOX" (or "UNIQUEIDS", answered with no items,
 *   as backupd accepts it and answers nothing), user; payload frame 1 = the
 * GET's dlist printed with print_key, e.g. "USER anne" or "MAILBOXES (user.anne
 * user.anne.Sent)". It is answered after the user's earlier APPLYs (ordered
 * like them when sequence > 0). Reply: STATE_REPLY whose payload frames are the
 * untagged items, one printed dlist per frame with its key and without "* " or
 * CRLF, e.g. "MAILBOX %(...)", "LSUB (...)". A user the node does not hold:
 * ERROR CAIRN_ENOENT, csync IMAP_MAILBOX_NONEXISTENT (what backupd answers).
 *
 * STATUS_REQUEST / STATS_REQUEST (cairnctl -> node): optional frame 1 = a
 *   packed UserRequest (users to list; empty: all). Reply STATUS_REPLY /
 *   STATS_REPLY, has_body, frame 1 = packed StatusReply (NodeStats and one
 *   UserStats per user; STATUS lists users only when asked by name; a
 *   named user the node does not hold is left out). raw_bytes is the
 *   uncompressed size of the user's log (sum of chunk.length);
 *   NodeStats.ring_epoch the highest ring_epoch a request carried (the
 *   node loads no ring), 0 if none did.
 * VERIFY_REQUEST: optional frame 1 = UserRequest (users, full = check
 *   message GUIDs too). Reply VERIFY_REPLY, frame 1 = UserResults: per user
 *   code (0 or CAIRN_E*), text, digest = hex SHA-1 over the user's state
 *   answers (GET USER, then GET FULLMAILBOX of each mailbox, printed)
 *   and the index's times (cairn_store_each_time: deleted, expunged,
 *   unsubscribed), equal on replicas that hold the same updates.
 * COMPACT_REQUEST: as VERIFY, with the node's [compaction] policy. Reply
 *   COMPACT_REPLY, frame 1 = UserResults with bytes_before/bytes_after.
 * BODY_REQUEST / SIEVE_REQUEST (cairnctl restore -> node; user set,
 *   sequence 0): frame 1 = "GUID [OFFSET [LENGTH]]" (GUID: 40 lowercase
 *   hex digits; OFFSET default 0; LENGTH 1..16 MiB, default 16 MiB) /
 *   a sieve script's filename ("lab.script"). They are user requests:
 *   queued behind the user's earlier APPLYs, answered from the daemon's
 *   own open store (server_restore.c). Reply BODY_REPLY: frame 1 = the
 *   body's whole size in decimal ASCII, then the bytes [OFFSET,
 *   min(OFFSET + LENGTH, size)) in frames of at most max_frame (none for
 *   an empty range); a range shorter than LENGTH is the body's end. Bodies
 *   of any size are read this way, range after range, from any replica
 *   (a client whose node died continues at its offset on another). A body
 *   inside a gzip chunk cannot be read from an offset cheaply: a body that
 *   fits the range from 0 is read at once; a bigger one is inflated once,
 *   on the first request, into an unlinked spool file beside the node's
 *   data (its SHA-1 checked against the GUID), and ranges are served from
 *   it; the spool goes after its last range, after 10 idle minutes, or
 *   with the process. The first range of a big body thus waits for the
 *   whole inflation (about 1 s per 100 MB). SIEVE_REPLY: frames,
 *   concatenated, are the live script's text (at most 4 MiB). ERROR
 *   CAIRN_ENOENT ("no such user on this node", "no message with GUID ...
 *   in the user's backup", "no such user or live sieve script"),
 *   CAIRN_EINVAL for a frame 1 that is not a GUID or an OFFSET past the
 *   end, CAIRN_EMISMATCH for a stored body that fails its GUID, CAIRN_EIO
 *   when the spool cannot be written (the text names the directory and
 *   errno).
 * PING -> PONG (no payload).
 * TRANSFER_* (cairnctl rebalance relays a user between nodes; see
 *   node/transfer.c for the verbs): EXPORT/READ read a user's data file,
 *   IMPORT/WRITE/IMPORT build it on the target (rebuilt and verified before
 *   the catalog records it), REMOVE drops a user's copy.
 * ring_epoch: kept and echoed; nodes do not refuse stale epochs yet.
 * ======================================================================
 *
 * Flow control on this side: at most node_window requests in flight per
 * node and user_window per user (further requests wait in a bounded queue
 * in the client); body frames are sent from the caller's file descriptors
 * a frame at a time while the socket takes them (SNDHWM small), so memory
 * stays bounded whatever the body sizes. Bodies of 64 KiB or less in all
 * are read at send time and travel in the head message (one message per
 * request; the node keeps them in memory instead of a spool file).
 *
 * Known limit: a STATE_REPLY is one multipart message, so its size (GET
 * FULLMAILBOX of a huge folder) is held whole by node and client.
 *
 * Errors to callbacks: a request not sent before its timeout (node down,
 * ZMQ_IMMEDIATE finds no connection) -> CAIRN_EUNAVAILABLE; sent but not
 * answered in time -> CAIRN_ETIMEOUT (the node may still apply it: restart
 * the user's sequence). A late reply is dropped.
 *
 * Single-threaded, on the loop's thread.
 */
#ifndef CAIRN_NODE_CLIENT_H
#define CAIRN_NODE_CLIENT_H

#include "cluster.pb-c.h"
#include "common.h"
#include "loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A raw frame: borrowed bytes. */
struct cairn_node_frame {
    const void *data;
    size_t len;
};

/*
 * One message body to stream after the request's frames: size bytes read
 * with pread() from fd at offset, or, when fd < 0, taken from data. The fd
 * or data is borrowed until the request's callback has run.
 */
struct cairn_node_body {
    int fd;
    uint64_t offset;
    const void *data;
    uint64_t size;
};

/* A request; everything is copied except the bodies (see above). */
struct cairn_node_request {
    Cairn__Kind kind;
    const char *user;        /* NULL: none */
    const char *destination; /* NULL: none */
    const char *verb;        /* "APPLY", "GET"; NULL: none */
    const char *key;         /* "MAILBOX", "USER"; NULL: none */
    uint64_t sequence;       /* per user, 0: unordered */
    bool stream_start;       /* sequence starts a new stream (see above) */
    int64_t update_time;     /* APPLY: the router's stamp, 0: the node's */
    /* STATS_REQUEST: one page of page_limit users after page_after */
    const char *page_after; /* NULL: none */
    uint32_t page_limit;    /* 0: every user at once */
    uint64_t ring_epoch;
    /* frame 1..n, each <= max_frame, except that frame 1 of an APPLY or
     * STATE_REQUEST (the dlist) is cut into dlist_frames when larger */
    const struct cairn_node_frame *frames;
    size_t frame_count;
    const struct cairn_node_body *bodies; /* then these, streamed */
    size_t body_count;
};

/*
 * What a callback gets. status: 0 for a reply of the expected kind; the
 * node's error_code for an ERROR reply (envelope set, error_text and
 * csync_code there); CAIRN_ETIMEOUT / CAIRN_EUNAVAILABLE / CAIRN_EPROTO
 * (reply of the wrong kind) / CAIRN_ETOOBIG / CAIRN_EIO for failures on
 * this side (envelope then NULL unless a reply was read). Everything is
 * borrowed for the duration of the callback.
 */
struct cairn_node_reply {
    int status;
    uint64_t request_id;
    const Cairn__Envelope *envelope;
    const struct cairn_node_frame *frames;
    size_t frame_count;
};

typedef void (*cairn_node_reply_fn)(void *arg,
                                    const struct cairn_node_reply *reply);

struct cairn_node_client_settings {
    uint64_t timeout_ms; /* per request, from submission; 0: 30 s */
    size_t node_window;  /* in flight per node; 0: 16 */
    size_t user_window;  /* in flight per user and node; 0: 4 */
    size_t max_frame;    /* bytes per body frame sent; 0: 1 MiB */
    size_t max_queue;    /* waiting beyond the window, per node; 0: 4096 */
};

struct cairn_node_client;

/*
 * Creates a client on loop (borrowed, must outlive the client) using
 * zmq_context (borrowed; NULL: the client makes and owns one). settings
 * may be NULL for the defaults. Returns the owned client.
 */
int cairn_node_client_new(struct cairn_loop *loop, void *zmq_context,
                          const struct cairn_node_client_settings *settings,
                          struct cairn_node_client **client);
/*
 * Closes every socket and frees the client (NULL-safe). Callbacks of
 * requests still pending are NOT called.
 */
void cairn_node_client_free(struct cairn_node_client *client);

/*
 * Connects a DEALER to endpoint (copied) for the node called name
 * (copied). *node (may be NULL) gets the index used by send.
 * CAIRN_EEXIST if name is already added.
 */
int cairn_node_client_add_node(struct cairn_node_client *client,
                               const char *name, const char *endpoint,
                               size_t *node);
/* The index of node name; CAIRN_ENOENT if unknown. */
int cairn_node_client_find_node(const struct cairn_node_client *client,
                                const char *name, size_t *node);

/*
 * Queues request for node; fn(arg, reply) is called exactly once, from the
 * loop (never from inside this call), unless the client is freed first.
 * *request_id (may be NULL) gets the id. CAIRN_EAGAIN when the node's
 * queue is full, CAIRN_EINVAL for a bad request, CAIRN_ETOOBIG for a frame
 * over max_frame.
 */
int cairn_node_client_send(struct cairn_node_client *client, size_t node,
                           const struct cairn_node_request *request,
                           cairn_node_reply_fn fn, void *arg,
                           uint64_t *request_id);
/*
 * Withdraws request_id of node while it is still queued (not one byte of
 * it sent): it is freed and its fn is never called; 0. CAIRN_ENOENT when
 * it was sent already (fn still comes) or is unknown. A caller that gave
 * a request up (its node went down) withdraws it so that a node coming
 * back never gets a write its caller already counted as failed.
 */
int cairn_node_client_cancel(struct cairn_node_client *client, size_t node,
                             uint64_t request_id);
/* Requests sent and not yet answered, and waiting, for node. */
size_t cairn_node_client_in_flight(const struct cairn_node_client *client,
                                   size_t node);
size_t cairn_node_client_queued(const struct cairn_node_client *client,
                                size_t node);

/* --- blocking, for cairnctl and tests ------------------------------------ */

/* A reply owned by the caller: free with cairn_node_result_release(). */
struct cairn_node_result {
    Cairn__Envelope *envelope;
    struct cairn_node_frame *frames; /* data owned, one allocation each */
    size_t frame_count;
};

/*
 * Sends request to endpoint and waits up to timeout_ms for its reply,
 * running a private loop and socket. Returns 0 with the reply in *result
 * (also an ERROR reply: the return is then its error_code and *result is
 * still filled), or CAIRN_ETIMEOUT / CAIRN_EUNAVAILABLE / ... with *result
 * empty.
 */
int cairn_node_client_call(const char *endpoint,
                           const struct cairn_node_request *request,
                           uint64_t timeout_ms,
                           struct cairn_node_result *result);
void cairn_node_result_release(struct cairn_node_result *result);

#endif /* CAIRN_NODE_CLIENT_H */
