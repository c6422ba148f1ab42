/*
 * node_int.h - internals of the node store shared by its source files:
 * the chunk writer and reader, the prepared SQL, and struct cairn_store.
 */
#ifndef CAIRN_NODE_INT_H
#define CAIRN_NODE_INT_H

#define OPENSSL_SUPPRESS_DEPRECATED
#include "common.h"
#include "node.h"

#include <openssl/sha.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <zlib.h>

#define CHUNK_HEADER_LINE "# cyrus backup: chunk start\r\n"
#define CHUNK_HEADER_LEN 29
#define CHUNK_OUT_SIZE (128 * 1024)
#define CHUNK_IN_SIZE (128 * 1024)
/* Longest record line held in memory (message bodies are streamed). */
#define RECORD_LINE_MAX (256u * 1024 * 1024)
#define SHA1_EMPTY "da39a3ee5e6b4b0d3255bfef95601890afd80709"

/* --- chunk.c --- */

/*
 * A member is held uncompressed in `pending` while it fits (at most
 * CHUNK_BUFFER_MAX, within a process-wide budget) and compressed whole by
 * libdeflate when it ends: one pass, and the data is on disk only after
 * the commit's fsync anyway. A member that outgrows the buffer switches,
 * at the start of its current line, to zlib streaming with a full flush
 * after each line (a rewind point), as backupd writes.
 */
#define CHUNK_BUFFER_MAX (4u << 20)
#define CHUNK_BUFFER_BUDGET (64u << 20)

/* Where the writer stood at the end of a line, to undo what follows. */
struct chunk_mark {
    uint64_t file_end;
    uint64_t length;
    uint64_t member_start;
    bool open;     /* taken inside a member */
    bool buffered; /* ... while it was still buffered */
    uint32_t crc;
    SHA_CTX data_sha;
    SHA_CTX file_sha;
};

struct chunk_writer {
    int fd;
    int level;
    z_stream z;
    bool z_ready;
    bool open;          /* a member is in progress */
    unsigned char *out; /* pending compressed bytes */
    size_t out_len;
    uint64_t file_end;     /* file length once out is drained */
    uint64_t member_start; /* offset of the open member */
    uint64_t length;       /* uncompressed bytes of the open member */
    uint32_t crc;          /* while streaming (buffered: computed at the end) */
    SHA_CTX data_sha;   /* of the open member's uncompressed bytes, likewise */
    SHA_CTX file_sha;   /* of every compressed byte of the file */
    char file_sha1[41]; /* SHA-1 of [0, member_start) */
    unsigned char *pending; /* the buffered member's uncompressed bytes */
    size_t pending_len, pending_cap;
    size_t line_start;             /* where the current line began in pending */
    bool streaming;                /* the member goes through zlib */
    struct chunk_mark switch_mark; /* the rewind point made at the switch */
};

struct chunk_reader {
    int fd;
    z_stream z;
    bool z_ready;
    bool done;
    unsigned char *in;
    uint64_t start;
    uint64_t next_read;
    uint64_t end;      /* file offset after the member, once done */
    uint64_t produced; /* uncompressed bytes returned so far */
};

struct chunk_member {
    uint64_t end;
    uint64_t length;
    char data_sha1[41];
    /* log_walk_chunk only: the content ends inside a line (or inside the
     * header line), which is not visited; Cyrus's reader ignores it too.
     * partial_bytes is 0 when the content ends with a whole line. */
    uint64_t partial_offset; /* where that unfinished line starts */
    uint64_t partial_bytes;
};

void chunk_sha1_hex(const unsigned char digest[20], char hex[41]);
void chunk_sha1_state_hex(const SHA_CTX *state, char hex[41]);
/* The writer appends at file_end, which the caller sets after init. */
void chunk_writer_init(struct chunk_writer *writer, int fd, int level);
void chunk_writer_release(struct chunk_writer *writer);
/* Starts a member and writes the header line. */
int chunk_writer_begin(struct chunk_writer *writer);
int chunk_writer_write(struct chunk_writer *writer, const void *data,
                       size_t len);
/* Full-flushes and writes out everything so far (a rewind point). */
int chunk_writer_end_line(struct chunk_writer *writer);
void chunk_writer_mark(const struct chunk_writer *writer,
                       struct chunk_mark *mark);
int chunk_writer_rewind(struct chunk_writer *writer,
                        const struct chunk_mark *mark);
/* Ends the member (final block and trailer), gives its data_sha1. */
int chunk_writer_finish(struct chunk_writer *writer, char data_sha1[41]);

/* Allocates buffers released by chunk_reader_close (also after failure). */
int chunk_reader_open(struct chunk_reader *reader, int fd, uint64_t offset);
void chunk_reader_close(struct chunk_reader *reader);
/* got == 0 means the member ended; a member cut short is CAIRN_ECORRUPT. */
int chunk_reader_read(struct chunk_reader *reader, void *buf, size_t len,
                      size_t *got);
int chunk_reader_skip(struct chunk_reader *reader, uint64_t count);
/* Inflates the whole member at offset: its end, length and SHA-1. */
int chunk_member_scan(int fd, uint64_t offset, struct chunk_member *member);

/* --- sql.c --- */

enum stmt_id {
    STMT_BEGIN,
    STMT_COMMIT,
    STMT_ROLLBACK,
    STMT_SAVEPOINT,
    STMT_RELEASE,
    STMT_ROLLBACK_TO,
    STMT_CHUNK_INSERT,
    STMT_CHUNK_END,
    STMT_CHUNK_LATEST,
    STMT_CHUNK_ALL,
    STMT_CHUNK_BY_ID,
    STMT_TAIL_GET,
    STMT_TAIL_SET,
    STMT_MESSAGE_UPSERT,
    STMT_MESSAGE_ID,
    STMT_MESSAGE_FIND,
    STMT_MESSAGE_BY_CHUNK,
    STMT_MAILBOX_UPSERT,
    STMT_MAILBOX_ID,
    STMT_MAILBOX_BY_NAME,
    STMT_MAILBOX_RENAME,
    STMT_MAILBOX_DELETE,
    STMT_MAILBOX_LIVE,
    STMT_MAILBOX_BY_CHUNK,
    STMT_RECORD_UPSERT,
    STMT_RECORD_EXPUNGE,
    STMT_RECORDS_OF_MAILBOX,
    STMT_RECORDS_BY_CHUNK,
    STMT_SUB_UPSERT,
    STMT_SUB_LIVE,
    STMT_SEEN_UPSERT,
    STMT_SEEN_ALL,
    STMT_SIEVE_DELETE,
    STMT_SIEVE_INSERT,
    STMT_SIEVE_LIVE,
    STMT_TOMBSTONE_ADD,
    STMT_CHUNK_LIVE,
    STMT_MESSAGE_LIVE,
    STMT_RECORD_STATE,
    STMT_MAILBOX_STATE,
    STMT_MAILBOX_KEPT,
    STMT_MAILBOX_DELETION,
    STMT_SUB_STATE,
    STMT_SEEN_STATE,
    STMT_SIEVE_STATE,
    STMT_SIEVE_DELETION,
    STMT_RECORD_EXPUNGED_AT,
    STMT_RECORDS_EXPUNGED,
    STMT_RECORD_SET_EXPUNGED,
    STMT_SEQUENCE_SET,
    STMT_SEQUENCE_GET,
    STMT_COUNT
};

/* One named parameter of a statement (Cyrus's sqldb_bindval). */
enum sql_type { SQL_INT, SQL_TEXT, SQL_NULL };
struct sql_value {
    const char *name;
    enum sql_type type;
    int64_t number;
    const char *text; /* NULL binds NULL */
};
#define SQL_INT_VALUE(name, value)                                             \
    {                                                                          \
        (name), SQL_INT, (int64_t)(value), NULL                                \
    }
#define SQL_TEXT_VALUE(name, value)                                            \
    {                                                                          \
        (name), SQL_TEXT, 0, (value)                                           \
    }
#define SQL_NULL_VALUE(name)                                                   \
    {                                                                          \
        (name), SQL_NULL, 0, NULL                                              \
    }

/* Binds every value, runs a statement that returns no rows, resets it. */
int sql_exec(sqlite3_stmt *stmt, const struct sql_value *values, size_t count);

/* Creates the Cyrus tables (user_version 3) when the file is new. */
int sql_init_schema(sqlite3 *db);

/* The catalog's connection, for the catalog's own files (catalog_figures.c). */
sqlite3 *cairn_catalog_db(struct cairn_catalog *catalog);
/* Creates the figures cache table when missing (catalog_figures.c). */
int cairn_catalog_figures_init(sqlite3 *db);
/* Prepares every statement; on failure the caller finalizes the array. */
int sql_prepare_all(sqlite3 *db, sqlite3_stmt **stmts);
void sql_finalize_all(sqlite3_stmt **stmts);
/* Runs a statement that returns no rows, then resets it. */
int sql_run(sqlite3_stmt *stmt);
/* Resets a statement and clears its bindings. */
void sql_reset(sqlite3_stmt *stmt);
int sql_bind_text(sqlite3_stmt *stmt, const char *name, const char *text);
int sql_bind_int(sqlite3_stmt *stmt, const char *name, int64_t value);
int sql_bind_null(sqlite3_stmt *stmt, const char *name);
int sql_bind_blob(sqlite3_stmt *stmt, const char *name, const void *data,
                  size_t len);

/* --- store.c --- */

struct cairn_store {
    char *data_path;
    char *index_path;
    int fd;
    sqlite3 *db;
    sqlite3_stmt *stmts[STMT_COUNT];
    struct chunk_writer writer;
    struct chunk_mark chunk_begin; /* writer state before the open chunk */
    bool in_chunk;                 /* transaction and member open */
    bool failed;                   /* must abort before anything else */
    bool defer_sync;               /* compaction output: one fsync at the end */
    int64_t chunk_id;
    int64_t chunk_first_ts;
    int64_t chunk_last_ts;
    int64_t last_ts; /* newest timestamp in the file */
    /* open rebuilt a missing index: what that rebuild found */
    bool opened_rebuilt;
    struct cairn_reindex_result opened_rebuild;
};

/* Opens the chunk (transaction, member, row) if none is open. */
int store_begin_chunk(struct cairn_store *store, int64_t ts);
/* Clamps ts so timestamps never go backwards in the file. */
int64_t store_clamp_ts(struct cairn_store *store, int64_t ts);
int store_savepoint(struct cairn_store *store);
int store_release(struct cairn_store *store);
void store_rollback_to(struct cairn_store *store);
/* Rolls the open chunk back: transaction and bytes. */
void store_abort_chunk(struct cairn_store *store);
/* Finalizes statements and closes the index. */
void store_close_index(struct cairn_store *store);
/* Opens (creating) the index at path into store->db and its statements. */
int store_open_index_at(struct cairn_store *store, const char *path);
/* Opens the index again (after reindex/compaction), recovering if asked. */
int store_reopen_index(struct cairn_store *store, bool recover);
/* After a compaction switch: lock the new data file, reopen the index. */
int store_reopen_data(struct cairn_store *store);
/* Completes or abandons a compaction switch a crash interrupted. */
int store_finish_switch(const char *data_path);
/* Hashes the first length bytes of the data file into the writer. */
int store_hash_prefix(struct cairn_store *store, uint64_t length);
/* Saves the committed end and file SHA-1 state (inside a transaction). */
int store_save_tail(struct cairn_store *store, int64_t chunk_id);
/*
 * Many lookups in one read transaction when no chunk is open (alone, each
 * SELECT locks and checks the index file again: 15 us here, 1 us inside).
 * end returns rc, or the end's failure when rc is 0.
 */
int store_lookups_begin(struct cairn_store *store);
int store_lookups_end(struct cairn_store *store, int rc);

/* --- state.c --- */

/*
 * Whether the index holds a body for guid. It asks the store's own
 * connection, so rows appended earlier in the open transaction count.
 */
int store_message_held(struct cairn_store *store, const char *guid, bool *held);

/* --- record.c --- */

/* Indexes one record as Cyrus's lcb_indexw.c does, for the open chunk. */
int store_index_record(struct cairn_store *store,
                       const struct cairn_dlist *record, int64_t ts,
                       uint64_t offset);

/* --- log.c --- */

struct log_line {
    int64_t ts;
    char verb[16];
    uint64_t offset;      /* of the timestamp's first digit, in the chunk */
    uint64_t length;      /* bytes of the line, CRLF included */
    bool nonsync_literal; /* holds a "{N+}" literal (see dlist.h) */
    struct cairn_dlist *record; /* borrowed for the visit */
};

/* Returns 0 to go on, > 0 to stop the walk (returned), < 0 an error. */
typedef int (*log_visit)(void *ctx, const struct log_line *line);

/*
 * Walks the record lines of the chunk at file offset, from uncompressed
 * offset start_at (0: the whole chunk, header first; otherwise a line
 * start). sink receives file bodies (NULL: skipped). member, when not
 * NULL and start_at is 0, gets the chunk's end, length and SHA-1.
 * Content that ends inside a line is not an error (Cyrus's
 * parse_backup_line stops at EOF there and ignores the unfinished line):
 * the line is not visited and member->partial_* say where it was. A
 * member whose gzip stream is cut short is CAIRN_ECORRUPT.
 */
int log_walk_chunk(int fd, uint64_t offset, uint64_t start_at,
                   const struct cairn_dlist_file_sink *sink, log_visit visit,
                   void *ctx, struct chunk_member *member);

/* --- links.c --- */

/* The verify levels that read the content of one chunk; member gets its
 * end, length and SHA-1 from the same pass. */
int verify_chunk_links(struct cairn_store *store, int64_t chunk_id,
                       uint64_t offset, unsigned levels,
                       struct chunk_member *member, char *error, size_t size);

#endif /* CAIRN_NODE_INT_H */
