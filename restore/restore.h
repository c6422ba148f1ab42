/*
 * restore.h - putting a user's backup back into a real Cyrus server
 * (cairnctl restore), as Cyrus's own `restore` tool does
 * (sync-protocol.md §7), plus the pieces it is made of so tests can drive
 * each one alone:
 *
 *  - a source: where a backup is read from: a user's files in a node's
 *    data directory (cairn_restore_source_open_store), or the running
 *    cluster's nodes through the node client, behind the same operations
 *    (cairn_restore_source_open_remote);
 *  - a plan: what will be sent, built from a source without any network
 *    (mailboxes chosen and renamed, records sorted by UID, the GUIDs to
 *    reserve per partition, seen / subscriptions / sieve scripts);
 *  - a csync client session with a Cyrus sync_server over TCP: banner,
 *    SASL (libsasl2 client), COMPRESS DEFLATE, bounded buffers, timeouts;
 *  - the run: RESERVE -> MISSING -> MESSAGE (bodies streamed from the
 *    source, never whole in memory) -> RESTORE (or APPLY) MAILBOX per
 *    mailbox -> APPLY SUB / SEEN / SIEVE -> EXIT.
 *
 * Library code: no logging, no exit; progress goes through a callback.
 */
#ifndef CAIRN_RESTORE_H
#define CAIRN_RESTORE_H

#include "csync.h"
#include "dlist.h"
#include "node.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- sources ------------------------------------------------------------ */

/*
 * Where a backup is read from. Every operation borrows what it is given
 * and returns 0 or a negative CAIRN_E* code.
 *  - user: emits the user's state as backupd answers GET USER: MAILBOX
 *    items without records, then SEEN, LSUB and SIEVE items;
 *  - mailbox: *mailbox gets the named mailbox with every record in
 *    ascending UID order (GET FULLMAILBOX), owned by the caller;
 *  - message: streams the body of guid to put in pieces;
 *  - sieve: *content gets the text of the live script filename (owned,
 *    free()), *len its length;
 *  - order (may be NULL): sorts a block of GUIDs into the order message()
 *    reads them fastest (for a data file: file order, one pass).
 */
struct cairn_restore_source_ops {
    int (*user)(void *ctx, cairn_store_emit emit, void *emit_ctx);
    int (*mailbox)(void *ctx, const char *mboxname,
                   struct cairn_dlist **mailbox);
    int (*message)(void *ctx, const char *guid,
                   int (*put)(void *put_ctx, const void *data, size_t len),
                   void *put_ctx);
    int (*sieve)(void *ctx, const char *filename, char **content, size_t *len);
    void (*close)(void *ctx);
    /* optional: sorts guids into the order message() reads fastest */
    int (*order)(void *ctx, char **guids, size_t count);
    /* optional: why the last operation failed, in words (borrowed, valid
     * until the next operation), or NULL */
    const char *(*error)(void *ctx);
};

struct cairn_restore_source {
    const struct cairn_restore_source_ops *ops;
    void *ctx;
    char userid[256];
};

/*
 * Opens userid's backup in a node's data directory (catalog at
 * data_dir/catalog.db) and takes the user's lock, which it holds until
 * closed: a node cannot append to the user meanwhile. Does not wait:
 * CAIRN_ELOCKED while a node (which keeps busy users open) or a tool holds
 * it. Returns the owned source (cairn_restore_source_free); CAIRN_ENOENT
 * for an unknown user.
 */
int cairn_restore_source_open_store(const char *data_dir, const char *userid,
                                    struct cairn_restore_source **source);
/* Same for a data file given by path (index: path + ".index"). */
int cairn_restore_source_open_file(const char *data_path, const char *userid,
                                   struct cairn_restore_source **source);
/* Closes and frees (NULL-safe). */
void cairn_restore_source_free(struct cairn_restore_source *source);

struct cairn_config;

struct cairn_restore_remote_options {
    const struct cairn_config *config; /* borrowed: nodes, destinations */
    const char *destination;           /* NULL: the config's only destination */
    const char *node;         /* NULL: the user's replicas in ring order;
                                 else only this node is asked */
    uint64_t ping_timeout_ms; /* is a replica up at all; 0: 5 s */
    uint64_t timeout_ms;      /* each read from the serving node; 0: 60 s */
    /* optional: told when another replica takes over mid-body */
    void (*notice)(void *ctx, const char *text);
    void *notice_ctx;
};

/*
 * Opens userid's backup on the running cluster: the user's replicas on
 * the destination's ring (its ring file), or the one node forced, are
 * asked in order; the first that answers a PING and holds the user (GET
 * USER) serves every read of the source (restore_remote.c; the node
 * reads its own open store, under its own lock). Bodies of any size are
 * read as ranges of 4 MiB, two in flight, each passed on as it arrives
 * (memory stays bounded). When the serving node stops answering in the
 * middle (CAIRN_EUNAVAILABLE / CAIRN_ETIMEOUT after timeout_ms), the next
 * replica that answers a PING continues from the first byte not passed on
 * yet and serves from then on (bodies are named by their SHA-1: any copy
 * is the same bytes; options->notice is told). Bodies are checked against
 * their GUIDs (CAIRN_EMISMATCH after the last byte). Every failure leaves
 * its cause, with the node's name and text, in the source's error().
 * Returns the owned source (cairn_restore_source_free), or CAIRN_ENOENT
 * when every replica answered and none holds the user,
 * CAIRN_EUNAVAILABLE when none holds it and some did not answer,
 * CAIRN_ECONFIG for a config or ring that does not fit, CAIRN_EBADNAME.
 * error (may be NULL) gets why, per node ("node1: not answering; ...").
 */
int cairn_restore_source_open_remote(
    const struct cairn_restore_remote_options *options, const char *userid,
    struct cairn_restore_source **source, char *error, size_t error_size);
/*
 * Copies the whole data file (the compressed log) of a remote source's
 * user from its serving node into fd (TRANSFER EXPORT + READ, checked
 * against the node's SHA-1); error gets why.
 */
int cairn_restore_source_fetch_log(struct cairn_restore_source *source, int fd,
                                   char *error, size_t error_size);

/* --- points in time (restore_asof.c) ------------------------------------ */

/*
 * Parses a time: ISO 8601 "2026-12-07T21:00:00Z" (date alone, minutes,
 * seconds, a space for the T, Z or +HH:MM / -HHMM; no zone: UTC), "N
 * unit ago" (seconds, minutes, hours, days, weeks; before now), "now" or
 * "@EPOCH". CAIRN_EINVAL for anything else.
 */
int cairn_restore_parse_time(const char *text, int64_t now, int64_t *when);
/* "2026-12-07T21:00:00Z" (UTC). */
void cairn_restore_format_time(int64_t when, char out[32]);
/*
 * Copies user's data file into dir as dir/USER.log: from the serving node
 * of remote (a remote source), else from data_dir (through its catalog).
 * *data_path is owned by the caller.
 */
int cairn_restore_scratch_copy(struct cairn_restore_source *remote,
                               const char *data_dir, const char *user,
                               const char *dir, char **data_path, char *error,
                               size_t error_size);
/*
 * Indexes the copy at data_path as it stood at as_of: first whole (which
 * gives *oldest and *newest, the first and last line times), then with
 * the lines stamped as_of or earlier only. CAIRN_ENOENT (error naming
 * the oldest restorable time) when as_of is before the first line. Then
 * cairn_restore_source_open_file(data_path, ...) reads that state.
 */
int cairn_restore_scratch_as_of(const char *data_path, int64_t as_of,
                                int64_t *oldest, int64_t *newest, char *error,
                                size_t error_size);

/* The node serving a remote source (borrowed); NULL for a local one. */
const char *
cairn_restore_source_node(const struct cairn_restore_source *source);

/* --- the plan ----------------------------------------------------------- */

enum cairn_restore_mode {
    /* RESTORE MAILBOX, as Cyrus's restore: creates missing mailboxes,
     * appends to existing ones (never fails on a non-empty target). */
    CAIRN_RESTORE_MODE_RESTORE = 0,
    /* APPLY MAILBOX, as sync_client: exact state (MODSEQs, LAST_UID, ...)
     * checked by the server's SYNC_CRC. The run first asks the target
     * (GET MAILBOXES); a name it holds under another uniqueid gets RESTORE
     * MAILBOX (appended, counted as a fallback). A refused APPLY is not
     * retried: sync_server keeps what it applied before a failed CRC
     * check, and a RESTORE on top would duplicate it. */
    CAIRN_RESTORE_MODE_APPLY = 1,
};

struct cairn_restore_options {
    const char *const *mailboxes; /* chosen ones (internal names, or names
                                     relative to the user: "INBOX", "Work");
                                     none: every live mailbox */
    size_t mailbox_count;
    const char *into;           /* restore the one chosen mailbox as this
                                   name (gets a new identity) */
    const char *partition;      /* target partition; NULL: the backup's */
    bool new_identity;          /* send UNIQUEID NIL, UIDVALIDITY 0,
                                   HIGHESTMODSEQ 0: new UIDs (restore's
                                   default without -U) */
    bool include_deleted;       /* DELETED.* mailboxes too */
    bool keep_deleted_prefix;   /* keep their DELETED. names */
    bool skip_expunged;         /* leave out expunged records */
    bool skip_meta;             /* no subscriptions, seen state, sieve */
    const char *activate_sieve; /* script to make active ("lab"): backupd
                                   does not record which one was */
    /* single messages: only records with this GUID (any chosen mailbox
     * holding it) and/or this UID (needs exactly one mailbox); they come
     * back live (\Expunged dropped) and, with new_identity in RESTORE
     * mode, as new messages of the live mailbox; no meta */
    const char *message_guid;
    uint32_t uid;
    enum cairn_restore_mode mode;
    size_t message_block; /* file literals per APPLY MESSAGE (<=1024) */
    size_t reserve_block; /* GUIDs per APPLY RESERVE (<=8192) */
};

/* Defaults: every live mailbox, identity kept, RESTORE mode, 1024/8192. */
void cairn_restore_options_default(struct cairn_restore_options *options);

/* The GUIDs one partition needs, each with its size. */
struct cairn_restore_partition {
    char *name;
    char **guids; /* distinct, in first-use order */
    uint64_t *sizes;
    size_t guid_count;
    char **mboxnames; /* target names, for RESERVE's MBOXNAME list */
    size_t mboxname_count;
};

struct cairn_restore_plan {
    char *userid;
    /* MAILBOX values to send, named "MAILBOX", records in UID order */
    struct cairn_dlist **mailboxes;
    size_t mailbox_count;
    struct cairn_restore_partition *partitions;
    size_t partition_count;
    /* APPLY values for subscriptions, seen state and sieve scripts */
    struct cairn_dlist **meta;
    size_t meta_count;
    uint64_t record_count;                 /* records in all mailboxes */
    uint64_t message_count, message_bytes; /* distinct bodies */
    struct cairn_restore_options options;  /* strings borrowed */
};

/*
 * Builds the plan for source's user. CAIRN_ENOENT when a chosen mailbox is
 * not in the backup or no chosen message is in the chosen mailboxes,
 * CAIRN_EINVAL for inconsistent options (into with more than one mailbox,
 * uid without exactly one). *plan is owned by the caller
 * (cairn_restore_plan_free); options' strings are borrowed by it.
 */
int cairn_restore_plan_build(struct cairn_restore_source *source,
                             const struct cairn_restore_options *options,
                             struct cairn_restore_plan **plan);
void cairn_restore_plan_free(struct cairn_restore_plan *plan);

/*
 * The value of "APPLY RESERVE" for GUIDs [first, first + count) of
 * partition (owned by the caller).
 */
int cairn_restore_reserve_request(const struct cairn_restore_plan *plan,
                                  size_t partition, size_t first, size_t count,
                                  struct cairn_dlist **request);
/*
 * The value of "APPLY MESSAGE" for the given GUIDs of partition: FILE
 * nodes whose handle is the source (bodies are read while printing, see
 * cairn_restore_body_writer). Owned by the caller.
 */
int cairn_restore_message_request(const struct cairn_restore_plan *plan,
                                  size_t partition, const char *const *guids,
                                  size_t count, struct cairn_dlist **request);

/* --- the csync client session ------------------------------------------- */

struct cairn_restore_session_options {
    const char *host; /* numeric or name */
    const char *port;
    const char *authname;
    const char *password;
    const char *realm;   /* NULL: the server's default */
    const char *mechs;   /* NULL: whatever the server offers */
    bool compress;       /* COMPRESS DEFLATE when offered */
    int timeout_seconds; /* per read or write */
    /* STARTTLS is done whenever the banner offers it; starttls: also
     * refuse a server that does not. ca_file (PEM): verify the server's
     * certificate against it and its name against host; NULL: the link
     * is encrypted but the server is not authenticated. */
    bool starttls;
    const char *ca_file;
};

struct cairn_restore_session;

/*
 * Connects, reads the banner, authenticates, switches on compression.
 * On failure error (may be NULL) says why. Returns the owned session
 * (cairn_restore_session_close): CAIRN_EUNAVAILABLE (cannot connect),
 * CAIRN_EAUTH, CAIRN_ETIMEOUT, CAIRN_EPROTO; CAIRN_ENOTSUP when starttls
 * is asked and not offered; CAIRN_EAUTH also when the server's
 * certificate fails the ca_file check (error says why).
 */
int cairn_restore_session_open(const struct cairn_restore_session_options *o,
                               struct cairn_restore_session **session,
                               char *error, size_t error_size);
/* Sends EXIT (best effort), closes and frees (NULL-safe). */
void cairn_restore_session_close(struct cairn_restore_session *session);
/* The mechanism chosen; whether compression is on; banner capabilities. */
const char *
cairn_restore_session_mechanism(const struct cairn_restore_session *s);
bool cairn_restore_session_compressed(const struct cairn_restore_session *s);
/* "TLSv1.3" when TLS is on, else NULL; whether the certificate was
 * verified against ca_file. */
const char *cairn_restore_session_tls(const struct cairn_restore_session *s,
                                      bool *verified);
bool cairn_restore_session_offers(const struct cairn_restore_session *s,
                                  const char *capability);
/*
 * Sends "VERB value" (FILE bodies through body, which may write to the
 * session with cairn_restore_session_write) and reads the response into
 * *response (owned by the caller: cairn_csync_response_release).
 */
int cairn_restore_session_command(struct cairn_restore_session *session,
                                  const char *verb,
                                  const struct cairn_dlist *value,
                                  const struct cairn_dlist_body_writer *body,
                                  struct cairn_csync_response *response);
/* Writes raw command bytes (through compression when on). */
int cairn_restore_session_write(struct cairn_restore_session *session,
                                const void *data, size_t len);

/* --- the run ------------------------------------------------------------ */

struct cairn_restore_progress {
    const char *step;     /* "reserve", "upload", "mailbox", "meta" */
    const char *name;     /* mailbox or partition */
    uint64_t done, total; /* items of this step */
    uint64_t bytes;       /* bodies uploaded so far */
};

struct cairn_restore_result {
    uint64_t mailboxes_restored;
    uint64_t mailboxes_fallback; /* APPLY mode: restored by RESTORE */
    uint64_t records_sent;
    uint64_t messages_uploaded, bytes_uploaded;
    uint64_t messages_present; /* reserved on the target, not uploaded */
    uint64_t meta_sent, meta_refused;
    char failed_mailbox[512]; /* the mailbox that stopped the run */
    char server_text[512];    /* the server's text for it */
    char error[1536];         /* why the run failed, in words ("" if not) */
};

/*
 * Sends plan over session. progress (may be NULL) is called as work is
 * done. Stops at the first mailbox the server refuses (CAIRN_EPROTO, the
 * mailbox and the server's text in result); refused subscriptions, seen
 * entries and sieve scripts are counted, as sync_client ignores them. On
 * any failure result->error says why: the step, the body (GUID, size) or
 * mailbox, and the source's or server's own words.
 */
int cairn_restore_run(struct cairn_restore_session *session,
                      struct cairn_restore_source *source,
                      const struct cairn_restore_plan *plan,
                      void (*progress)(void *ctx,
                                       const struct cairn_restore_progress *),
                      void *progress_ctx, struct cairn_restore_result *result);

/*
 * A dlist body writer that streams FILE bodies from source into session
 * (or, with session NULL, appends them to the print buffer: tests).
 */
struct cairn_restore_body_context {
    struct cairn_restore_session *session;
    struct cairn_restore_source *source;
    uint64_t bytes;
    char failed_guid[41]; /* the body that failed, and its size */
    uint64_t failed_size;
};
int cairn_restore_write_body(void *ctx, const struct cairn_dlist *file,
                             struct cairn_buf *out);

#endif /* CAIRN_RESTORE_H */
