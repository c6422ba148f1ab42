/*
 * node.h - the node's store: each user's backup kept in Cyrus 3.x's own
 * format (cyrus-backups.md): an append-only data file of gzip members
 * ("chunks") holding timestamped "APPLY <dlist>" lines, plus an SQLite
 * index with Cyrus's schema, so Cyrus's ctl_backups and cyr_backup read
 * cairn's files and cairn reads Cyrus's.
 *
 * Durability: appends go to an open chunk inside an open index
 * transaction; nothing is acknowledged until cairn_store_commit() (or
 * cairn_store_commit_many() for many users in one round) has ended the
 * member, fsynced the data file, and then committed the index row that
 * records it. A crash leaves at most a torn tail after the last committed
 * chunk, which the next open cuts off.
 *
 * Locking: an exclusive open-file-description fcntl lock on the data file,
 * the same lock Cyrus takes, held from open to close.
 *
 * Thread safety: one store object is used by one thread at a time.
 */
#ifndef CAIRN_NODE_H
#define CAIRN_NODE_H

#include "dlist.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- user names and the catalog ---------------------------------------- */

/*
 * 0 when userid may become part of a path: 1..255 bytes, no "/", no "..",
 * no leading ".", no control bytes or DEL. CAIRN_EBADNAME otherwise.
 */
int cairn_node_check_userid(const char *userid);
/* Cyrus's hash directory letter (dir_hash_c, fulldirhash: no). */
char cairn_node_dir_hash(const char *userid);

/* The node's map of users to data files (Cyrus's backups.db, in SQLite). */
struct cairn_catalog;

/* Opens or creates the catalog at path. Returns the owned catalog. */
int cairn_catalog_open(const char *path, struct cairn_catalog **catalog);
void cairn_catalog_free(struct cairn_catalog *catalog);
/* The data path of userid, owned by the caller (free()); CAIRN_ENOENT. */
int cairn_catalog_lookup(struct cairn_catalog *catalog, const char *userid,
                         char **data_path);
/*
 * Creates an empty data file root/<hash>/<userid>_XXXXXX (as Cyrus names
 * them) and records it. Returns the path, owned by the caller.
 * CAIRN_EEXIST when the user already has one.
 */
int cairn_catalog_create(struct cairn_catalog *catalog, const char *root,
                         const char *userid, char **data_path);
/* Records an existing data file for userid (import, rebalance). */
int cairn_catalog_set(struct cairn_catalog *catalog, const char *userid,
                      const char *data_path);
int cairn_catalog_remove(struct cairn_catalog *catalog, const char *userid);
/* Calls visit for each user in name order; a non-zero return stops. */
int cairn_catalog_foreach(struct cairn_catalog *catalog,
                          int (*visit)(void *ctx, const char *userid,
                                       const char *data_path),
                          void *ctx);

/*
 * A user's figures as `status -u` shows them, and the identity (size,
 * modification time, inode) of the data file and index they were read
 * from. The catalog caches them (table cairn_user_figures, cairn's own)
 * and a cached row counts only while both files still have that identity:
 * whatever writes a user (append and commit, compaction, transfer,
 * repair, import) changes a file, so none of them has to remember the
 * cache, and listing a million users reads no index that did not change
 * (catalog_figures.c).
 */
struct cairn_user_figures {
    uint64_t bytes_on_disk, raw_bytes, chunks, messages, mailboxes;
    int64_t last_backup_time; /* seconds since the epoch, 0 = never */
    uint64_t data_size, data_ino, index_size, index_ino;
    int64_t data_mtime_ns, index_mtime_ns;
};
/* Reads data_path's figures from its index (read-only, committed state). */
int cairn_user_figures_read(const char *data_path,
                            struct cairn_user_figures *figures);
/*
 * At most limit users whose userid sorts after after ("": from the
 * first), in name order (one page of a long listing), each with its cached
 * figures when both files are unchanged since, else NULL (borrowed for
 * the call). A non-zero return from visit stops and is returned.
 */
int cairn_catalog_figures_page(
    struct cairn_catalog *catalog, const char *after, size_t limit,
    int (*visit)(void *ctx, const char *userid, const char *data_path,
                 const struct cairn_user_figures *cached),
    void *ctx);
/* Keeps figures read by cairn_user_figures_read for userid. begin/end
   bracket many puts in one transaction (one sync, not one per user). */
int cairn_catalog_figures_put(struct cairn_catalog *catalog, const char *userid,
                              const struct cairn_user_figures *figures);
int cairn_catalog_figures_begin(struct cairn_catalog *catalog);
int cairn_catalog_figures_end(struct cairn_catalog *catalog);

/* --- opening a store ---------------------------------------------------- */

struct cairn_store;

enum {
    CAIRN_STORE_BLOCK = 1 << 0,  /* wait for the lock (tools) */
    CAIRN_STORE_CREATE = 1 << 1, /* create the user when missing */
};

/*
 * Opens the backup whose data file is data_path (index: data_path +
 * ".index"), takes the lock (CAIRN_ELOCKED if held and not BLOCK), and
 * recovers: a torn tail after the last committed chunk is cut off, a
 * missing index is rebuilt from the data file. Returns the owned store.
 */
int cairn_store_open(const char *data_path, unsigned flags,
                     struct cairn_store **store);
/* Opens userid through the catalog, creating it under root with CREATE. */
int cairn_store_open_user(struct cairn_catalog *catalog, const char *root,
                          const char *userid, unsigned flags,
                          struct cairn_store **store);
/* Rolls back anything uncommitted, releases the lock, frees (NULL-safe). */
void cairn_store_close(struct cairn_store *store);
/* deflate level for chunks written from now on (default 6, as Cyrus). */
void cairn_store_set_level(struct cairn_store *store, int level);
const char *cairn_store_data_path(const struct cairn_store *store);

/* --- appending ---------------------------------------------------------- */

/*
 * Supplies message bodies while a record with FILE nodes is written:
 * read() must call put() with the size bytes of file's body, in pieces
 * (memory stays bounded whatever the size), and return 0 or an error.
 */
struct cairn_store_bodies {
    int (*read)(void *ctx, const struct cairn_dlist *file,
                int (*put)(void *put_ctx, const void *data, size_t len),
                void *put_ctx);
    void *ctx;
};

/*
 * Appends one record, the dlist of an APPLY command whose name is the
 * sub-command (MAILBOX, UNMAILBOX, MESSAGE, RESERVE, RENAME, SEEN, SUB,
 * UNSUB, SIEVE, UNSIEVE, EXPUNGE), as "<ts> APPLY <dlist>\r\n" to the open
 * chunk (opened on the first append), and indexes it as Cyrus does. ts is
 * clamped so that timestamps never go backwards. bodies is needed for
 * MESSAGE. Each body's SHA-1 is checked against its GUID as it streams.
 * A MESSAGE stores each body once per user: FILEs whose GUID the backup
 * already holds (committed, or appended earlier in the open round) or
 * that repeat an earlier FILE of the record, and NIL entries, are left
 * out without being read (so neither checked); when none is left,
 * nothing is written (no line, no chunk) and 0 is returned. bodies->read
 * is called in record order for the written FILEs only.
 * Borrows record. On failure the record is not in the file nor the index
 * and earlier uncommitted appends stay (CAIRN_EPROTO for a record Cyrus's
 * indexer refuses, CAIRN_EMISMATCH for a body that fails its GUID);
 * CAIRN_EIO and worse leave the store needing cairn_store_abort().
 */
int cairn_store_append(struct cairn_store *store, int64_t ts,
                       const struct cairn_dlist *record,
                       const struct cairn_store_bodies *bodies);
/*
 * Whether backupd logs the APPLY sub-command name (the eleven above).
 * Others that backupd accepts (QUOTA, ACTIVATE_SIEVE, UNACTIVATE_SIEVE,
 * UNUSER) are answered OK and not stored.
 */
bool cairn_store_logs_record(const char *name);
/*
 * Makes everything appended so far durable: ends the chunk, fsyncs the
 * data file, commits the index. A store with nothing pending succeeds
 * without writing anything (no empty chunks).
 */
int cairn_store_commit(struct cairn_store *store);
/*
 * Group commit of count stores: all members are ended and written, then
 * each store's data fsync and index commit run on up to 16 threads, so
 * the users' fsyncs overlap on the device (32 users: about 12 times
 * faster than one by one here). The stores must not be used elsewhere
 * meanwhile. results (may be NULL) gets each store's outcome; the return
 * is the first failure.
 */
int cairn_store_commit_many(struct cairn_store *const *stores, size_t count,
                            int *results);
/*
 * The node daemon's last sequenced APPLY, in a cairn-private table of the
 * index. set: after an append, in its transaction, so it is durable
 * exactly when the update is; with no append open (the update stored
 * nothing: a resent body, QUOTA), committed at once on its own. get:
 * CAIRN_ENOENT (and 0) when none was recorded.
 */
int cairn_store_set_sequence(struct cairn_store *store, uint64_t sequence);
int cairn_store_get_sequence(struct cairn_store *store, uint64_t *sequence);
/* Drops everything uncommitted (file bytes and index changes). */
void cairn_store_abort(struct cairn_store *store);
/*
 * APPLY UNUSER: appends UNMAILBOX for every live mailbox and UNSUB /
 * UNSIEVE (as userid) for every live subscription and script, so the
 * user's data expires by retention (backupd ignores UNUSER). Commit after.
 */
int cairn_store_unuser(struct cairn_store *store, const char *userid,
                       int64_t ts);

/* --- state answers (what backupd replies to GET) -------------------------- */

/*
 * Each item is passed to emit as a dlist named as its untagged reply
 * ("MAILBOX", "SEEN", "LSUB", "SIEVE"), borrowed for the call; the caller
 * prints "* " + item. A non-zero return from emit stops and is returned.
 */
typedef int (*cairn_store_emit)(void *ctx, const struct cairn_dlist *item);

/* GET USER: live mailboxes (no records), seen, LSUB, sieve. */
int cairn_store_get_user(struct cairn_store *store, cairn_store_emit emit,
                         void *ctx);
/* GET META: the seen, LSUB and sieve parts of GET USER. */
int cairn_store_get_meta(struct cairn_store *store, cairn_store_emit emit,
                         void *ctx);
/* GET MAILBOXES for names of this user: found, live ones; others skipped. */
int cairn_store_get_mailboxes(struct cairn_store *store,
                              const char *const *mboxnames, size_t count,
                              cairn_store_emit emit, void *ctx);
/* GET FULLMAILBOX: with every record; CAIRN_ENOENT when unknown. */
int cairn_store_get_fullmailbox(struct cairn_store *store, const char *mboxname,
                                cairn_store_emit emit, void *ctx);
/* Whether the index holds a body for guid. */
bool cairn_store_has_message(struct cairn_store *store, const char *guid);
/*
 * APPLY RESERVE: appends to missing (a list) each GUID of guids (a list of
 * GUID atoms) the index holds no body for, in order; one read transaction.
 */
int cairn_store_find_missing(struct cairn_store *store,
                             const struct cairn_dlist *guids,
                             struct cairn_dlist *missing);
/*
 * The times the index holds that no state answer carries, as text lines
 * in a fixed order, by natural keys (never row or chunk ids): "mailbox
 * UNIQUEID MBOXNAME DELETED", "record UNIQUEID UID GUID EXPUNGED",
 * "subscription MBOXNAME UNSUBSCRIBED", "sieve FILENAME GUID LAST_UPDATE
 * DELETED", a time being seconds or "-" for none. Replicas that took the
 * same updates give the same lines (the router's stamps). fn gets each
 * line (borrowed for the call); a non-zero return stops the walk and is
 * returned. CAIRN_EDB when the index cannot be read.
 */
typedef int (*cairn_store_line_fn)(void *ctx, const char *line);
int cairn_store_each_time(struct cairn_store *store, cairn_store_line_fn fn,
                          void *ctx);
/*
 * The text of the live sieve script filename (as GET USER's SIEVE items
 * name it): *content is owned (free(); NUL-terminated), *len its length.
 * CAIRN_ENOENT when there is none.
 */
int cairn_store_read_sieve(struct cairn_store *store, const char *filename,
                           char **content, size_t *len);
/*
 * Streams the body of guid out of its chunk to put (bounded memory), and
 * checks its SHA-1. CAIRN_ENOENT when unknown.
 */
int cairn_store_read_message(struct cairn_store *store, const char *guid,
                             int (*put)(void *ctx, const void *data,
                                        size_t len),
                             void *ctx);

/*
 * Many bodies in one pass (cairn_store_read_message inflates a chunk from
 * its start for every body, O(bodies x chunk) for a big folder). open
 * opens data_path and index_path read-only, beside any store that has
 * them open, and returns the owned reader (cairn_body_reader_free, NULL
 * safe). order sorts guids in place into the order their bodies lie in
 * the file (unknown GUIDs last). read streams guid's body to put, going
 * on from where the last read stopped when guid lies further on, checks
 * its SHA-1 (CAIRN_EMISMATCH) and says CAIRN_ENOENT for an unknown GUID.
 */
struct cairn_body_reader;
int cairn_body_reader_open(const char *data_path, const char *index_path,
                           struct cairn_body_reader **reader);
void cairn_body_reader_free(struct cairn_body_reader *reader);
int cairn_body_reader_order(struct cairn_body_reader *reader, char **guids,
                            size_t count);
int cairn_body_reader_read(struct cairn_body_reader *reader, const char *guid,
                           int (*put)(void *ctx, const void *data, size_t len),
                           void *put_ctx);

/* --- maintenance --------------------------------------------------------- */

/*
 * Rebuilds the index from the data file alone: built aside, then renamed
 * over the old one only when complete. A torn member after the last whole
 * one is cut off; a damaged member between whole ones is skipped (its
 * bytes stay, unindexed) and reading resumes at the next whole member.
 */
int cairn_store_reindex(struct cairn_store *store);

/*
 * What a rebuild found, for callers that must not accept damage (import).
 * What is kept and what is dropped, and why (each as backupd's own index
 * has it for the same file, so an imported index answers as backupd's):
 *   - a whole member with no record line (backupd's chunk of a sync pass
 *     that changed nothing: the 29-byte header alone), or with lines
 *     Cyrus's indexer ignores (QUOTA, ACTIVATE_SIEVE, ...): a chunk row,
 *     as backupd wrote one when it began the chunk; ts_start and ts_end
 *     are the last line time before it (the file has no other);
 *   - a whole member whose content ends inside a line: a chunk row over
 *     all its bytes; the unfinished line is not indexed (Cyrus's reader
 *     stops there too) and is counted in partial_lines;
 *   - a whole member with no content at all (what older zlib writes at
 *     gzclose): no chunk row (backupd made none), counted in
 *     empty_members;
 *   - a member that does not inflate, between whole ones: skipped,
 *     counted in damaged_members (its bytes stay, unindexed);
 *   - a member cut short at the end of the file (a crash): cut off.
 */
struct cairn_reindex_result {
    uint64_t chunks;          /* chunk rows written */
    uint64_t line_chunks;     /* of which hold at least one indexed line */
    uint64_t empty_members;   /* members with no content: no row */
    uint64_t partial_lines;   /* chunks ending in an unfinished line */
    uint64_t damaged_members; /* members that did not inflate or parse */
    uint64_t skipped_bytes;   /* damaged bytes left between whole members */
    uint64_t cut_bytes;       /* torn tail cut off the end of the file */
    /* file offsets of the first of each kind (valid when counted) */
    uint64_t first_partial_chunk, first_partial_line; /* member, in chunk */
    uint64_t first_damaged, first_empty;
};

/* cairn_store_reindex, reporting what it skipped and cut. */
int cairn_store_rebuild_index(struct cairn_store *store,
                              struct cairn_reindex_result *result);
/*
 * The same, indexing only the lines stamped until_ts or earlier: the
 * index then answers as the backup stood at that time (restore --as-of).
 * Meant for a scratch copy of a user's files: later lines stay in the
 * data file, unindexed, and the next append would break the log order.
 */
int cairn_store_rebuild_index_until(struct cairn_store *store, int64_t until_ts,
                                    struct cairn_reindex_result *result);
/*
 * Indexes the whole members a caller wrote after the committed end of the
 * data file (a pull's tail, node/pull.c), in one transaction, as the
 * rebuild would: the index then covers the whole file again. Any member
 * that does not inflate or parse, or a torn one at the end, fails the
 * call (CAIRN_ECORRUPT): the index is rolled back and the file cut back
 * to its committed end, so the store is as it was. result gets the
 * counts of the new members.
 */
int cairn_store_index_appended(struct cairn_store *store,
                               struct cairn_reindex_result *result);
/* The committed end of the data file (where the next chunk will start). */
uint64_t cairn_store_file_end(const struct cairn_store *store);
/*
 * Whether cairn_store_open found no index and rebuilt it; result (when
 * true) gets what that rebuild found, so a caller that must judge it
 * (import, transfer) need not rebuild a second time.
 */
bool cairn_store_opened_rebuilt(const struct cairn_store *store,
                                struct cairn_reindex_result *result);

enum {
    CAIRN_VERIFY_LAST_CHECKSUM = 1 << 0,
    CAIRN_VERIFY_ALL_CHECKSUMS = 1 << 1,
    CAIRN_VERIFY_MESSAGE_LINKS = 1 << 2,
    CAIRN_VERIFY_MESSAGE_GUIDS = 1 << 3,
    CAIRN_VERIFY_MAILBOX_LINKS = 1 << 4,
    CAIRN_VERIFY_FULL = 0x1f,
};

/*
 * Cyrus's verify levels. 0 when everything checks; CAIRN_ECORRUPT or
 * CAIRN_EMISMATCH otherwise, with a description in error (may be NULL).
 */
int cairn_store_verify(struct cairn_store *store, unsigned levels, char *error,
                       size_t error_size);

struct cairn_compact_policy {
    int64_t retention_seconds; /* keep deleted data this long; <= 0: ever */
    uint64_t min_chunk;        /* coalesce chunks smaller (0: never) */
    uint64_t max_chunk;        /* split chunks larger (0: never) */
    unsigned work_threshold;   /* chunks needing work before acting (>=1) */
    int64_t now;               /* the clock (seconds) */
    /* and at least this percentage of the log's bytes would be reclaimed
     * or rewritten (cluster.conf work_threshold; 0: no such bound) */
    unsigned work_percent;
};

struct cairn_compact_result {
    bool compacted; /* false when there was nothing to do */
    uint64_t chunks_before, chunks_after;
    uint64_t bytes_before, bytes_after; /* data file sizes */
    char error[256]; /* on failure, what did not verify (may be empty) */
};

/*
 * Writes a new data file and index with what the policy keeps, verifies
 * them, and renames them over the old pair (fsynced first); the old pair
 * is removed only after the switch. Nothing to do is success.
 */
int cairn_store_compact(struct cairn_store *store,
                        const struct cairn_compact_policy *policy,
                        struct cairn_compact_result *result);

/*
 * Compacts every user of the catalog in turn, each under its own lock,
 * skipping (report gets CAIRN_ELOCKED) users locked by someone else, so
 * no other user is ever blocked. report may be NULL; a non-zero return
 * from it stops.
 */
int cairn_node_compact_all(struct cairn_catalog *catalog,
                           const struct cairn_compact_policy *policy,
                           int (*report)(void *ctx, const char *userid, int rc,
                                         const struct cairn_compact_result *r),
                           void *ctx);

/*
 * When userid was last compacted (Unix ms), in a cairn-private table of
 * the catalog. get: CAIRN_ENOENT (and 0) if never.
 */
int cairn_catalog_set_compacted(struct cairn_catalog *catalog,
                                const char *userid, int64_t compacted_ms);
int cairn_catalog_get_compacted(struct cairn_catalog *catalog,
                                const char *userid, int64_t *compacted_ms);
/*
 * Calls visit for each user last compacted at or before before_ms (and,
 * with include_never, each never compacted), longest waiting first; a
 * non-zero return from visit stops and is returned.
 */
int cairn_catalog_foreach_due(struct cairn_catalog *catalog, int64_t before_ms,
                              bool include_never,
                              int (*visit)(void *ctx, const char *userid),
                              void *ctx);

/*
 * The scrub's record of userid (cairn-private catalog table): when it was
 * last checked (Unix ms) and the damage found (NULL: none; a damaged user
 * stays quarantined until a heal records it clean). set copies damage;
 * get returns it owned (free()), CAIRN_ENOENT when never checked.
 */
int cairn_catalog_set_scrubbed(struct cairn_catalog *catalog,
                               const char *userid, int64_t checked_ms,
                               const char *damage);
int cairn_catalog_get_scrubbed(struct cairn_catalog *catalog,
                               const char *userid, int64_t *checked_ms,
                               char **damage);
/*
 * Calls visit for each undamaged user last checked at or before before_ms
 * (and, with include_never, each never checked: those first), longest
 * waiting first; a non-zero return from visit stops and is returned.
 */
int cairn_catalog_foreach_scrub_due(struct cairn_catalog *catalog,
                                    int64_t before_ms, bool include_never,
                                    int (*visit)(void *ctx, const char *userid),
                                    void *ctx);
/* Each user the scrub marked damaged; non-zero from visit stops. */
int cairn_catalog_foreach_damaged(struct cairn_catalog *catalog,
                                  int (*visit)(void *ctx, const char *userid),
                                  void *ctx);
/* Users, those checked after since_ms, and those marked damaged. */
int cairn_catalog_scrub_figures(struct cairn_catalog *catalog, int64_t since_ms,
                                uint64_t *users, uint64_t *checked,
                                uint64_t *damaged);

/* --- checksums ------------------------------------------------------------ */

/*
 * One mailbox record as SYNC_CRC sees it (sync-protocol.md §6). flags are
 * the names as sent ("\\Seen", "$Label1"); annotations are per-message
 * (entry, userid, value) triples, without the virtual ones.
 */
struct cairn_crc_record {
    uint32_t uid;
    uint64_t modseq;
    int64_t last_updated;
    int64_t internaldate;
    const char *guid;
    const char *const *flags;
    size_t flag_count;
    bool expunged;
    int64_t savedate;       /* 0: none */
    uint64_t createdmodseq; /* 0: none */
    uint64_t thrid;         /* 0: none */
    const char *const (*annotations)[3];
    size_t annotation_count;
};

/* SYNC_CRC and SYNC_CRC_ANNOT of a mailbox holding these records. */
void cairn_node_sync_crcs(const struct cairn_crc_record *records, size_t count,
                          uint32_t *crc, uint32_t *crc_annot);

#endif /* CAIRN_NODE_H */
