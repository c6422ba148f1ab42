/*
 * verify.c - Cyrus's verify levels (backup/lcb_verify.c) over cairn's or
 * Cyrus's files: chunk checksums against the index, message lines the
 * index points at (with each body's SHA-1 against its GUID), and mailbox
 * states in the chunks the index names. Also reading one message body
 * out of its chunk.
 */
#include "node_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- streaming one body out ---------------------------------------------- */

struct body_read {
    const char *guid;
    int (*put)(void *ctx, const void *data, size_t len);
    void *ctx;
    bool active, found, match;
    SHA_CTX sha;
};

static int
body_begin(void *ctx, const char *partition, const char *guid, uint64_t size,
           void **handle)
{
    struct body_read *read = ctx;

    *handle = NULL;
    read->active = !read->found && strcasecmp(guid, read->guid) == 0;
    if (read->active)
        SHA1_Init(&read->sha);
    return 0;
}

static int
body_data(void *ctx, void *handle, const void *bytes, size_t len)
{
    struct body_read *read = ctx;

    if (!read->active)
        return 0;
    SHA1_Update(&read->sha, bytes, len);
    return read->put(read->ctx, bytes, len);
}

static int
body_end(void *ctx, void *handle)
{
    struct body_read *read = ctx;
    unsigned char digest[20];
    char hex[41];

    if (!read->active)
        return 0;
    SHA1_Final(digest, &read->sha);
    chunk_sha1_hex(digest, hex);
    read->found = true;
    read->match = strcasecmp(hex, read->guid) == 0;
    read->active = false;
    return 0;
}

static int
stop_after_line(void *ctx, const struct log_line *line)
{
    return 1;
}

int
cairn_store_read_message(struct cairn_store *store, const char *guid,
                         int (*put)(void *ctx, const void *data, size_t len),
                         void *ctx)
{
    sqlite3_stmt *find = store->stmts[STMT_MESSAGE_FIND];
    struct body_read read = {.guid = guid, .put = put, .ctx = ctx};
    struct cairn_dlist_file_sink sink = {body_begin, body_data, body_end, NULL,
                                         &read};
    int64_t line_offset, chunk_offset;
    int rc, step;

    if ((rc = sql_bind_text(find, ":guid", guid)) < 0) {
        sql_reset(find);
        return rc;
    }
    step = sqlite3_step(find);
    line_offset = sqlite3_column_int64(find, 1);
    chunk_offset = sqlite3_column_int64(find, 3);
    sql_reset(find);
    if (step != SQLITE_ROW)
        return step == SQLITE_DONE ? CAIRN_ENOENT : CAIRN_EDB;
    rc =
        log_walk_chunk(store->fd, (uint64_t)chunk_offset, (uint64_t)line_offset,
                       &sink, stop_after_line, NULL, NULL);
    if (rc < 0)
        return rc;
    if (!read.found)
        return CAIRN_ECORRUPT;
    return read.match ? 0 : CAIRN_EMISMATCH;
}

/* --- verify --------------------------------------------------------------- */

struct chunk_row {
    int64_t id, offset, length;
    char file_sha1[41], data_sha1[41];
};

static void
describe(char *error, size_t size, const char *fmt, ...)
{
    va_list ap;

    if (error == NULL || size == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(error, size, fmt, ap);
    va_end(ap);
}

static void
copy_hex(char out[41], const unsigned char *text)
{
    snprintf(out, 41, "%s", text ? (const char *)text : "");
}

/* Loads every chunk row in id order. Owned array. */
static int
load_chunks(struct cairn_store *store, struct chunk_row **rows, size_t *count)
{
    sqlite3_stmt *stmt = store->stmts[STMT_CHUNK_ALL];
    struct chunk_row *list = NULL;
    size_t used = 0, cap = 0;
    int rc = 0, step;

    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (used == cap) {
            struct chunk_row *grown;

            cap = cap ? cap * 2 : 16;
            if ((grown = realloc(list, cap * sizeof(*list))) == NULL) {
                rc = CAIRN_ENOMEM;
                break;
            }
            list = grown;
        }
        list[used].id = sqlite3_column_int64(stmt, 0);
        list[used].offset = sqlite3_column_int64(stmt, 3);
        list[used].length = sqlite3_column_int64(stmt, 4);
        copy_hex(list[used].file_sha1, sqlite3_column_text(stmt, 5));
        copy_hex(list[used].data_sha1, sqlite3_column_text(stmt, 6));
        used++;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = CAIRN_EDB;
    sql_reset(stmt);
    if (rc < 0) {
        free(list);
        return rc;
    }
    *rows = list;
    *count = used;
    return 0;
}

static int
hash_file_range(int fd, SHA_CTX *sha, uint64_t from, uint64_t to)
{
    unsigned char buf[65536];

    while (from < to) {
        size_t want =
            to - from > sizeof(buf) ? sizeof(buf) : (size_t)(to - from);
        ssize_t n = pread(fd, buf, want, (off_t)from);

        if (n <= 0)
            return CAIRN_ECORRUPT;
        SHA1_Update(sha, buf, (size_t)n);
        from += (uint64_t)n;
    }
    return 0;
}

/* Checks chunk i's file_sha1, advancing the running hash of the file. */
static int
check_file_sha1(struct cairn_store *store, const struct chunk_row *row,
                SHA_CTX *sha, uint64_t *hashed, char *error, size_t size)
{
    char hex[41];

    if (hash_file_range(store->fd, sha, *hashed, (uint64_t)row->offset) < 0) {
        describe(error, size,
                 "chunk %lld at offset %lld: file shorter than its offset",
                 (long long)row->id, (long long)row->offset);
        return CAIRN_ECORRUPT;
    }
    *hashed = (uint64_t)row->offset;
    chunk_sha1_state_hex(sha, hex);
    if (strcmp(hex, row->file_sha1) != 0) {
        describe(error, size, "chunk %lld at offset %lld: file_sha1 mismatch",
                 (long long)row->id, (long long)row->offset);
        return CAIRN_EMISMATCH;
    }
    return 0;
}

/*
 * One pass per chunk: the content checks (when asked) inflate the chunk
 * once and give its length and SHA-1 for the checksum checks too.
 */
static int
verify_chunk(struct cairn_store *store, const struct chunk_row *row,
             unsigned levels, bool checksums, char *error, size_t size)
{
    struct chunk_member member;
    int rc;

    if (levels & (CAIRN_VERIFY_MESSAGE_LINKS | CAIRN_VERIFY_MESSAGE_GUIDS |
                  CAIRN_VERIFY_MAILBOX_LINKS))
        rc = verify_chunk_links(store, row->id, (uint64_t)row->offset, levels,
                                &member, error, size);
    else if (checksums)
        rc = chunk_member_scan(store->fd, (uint64_t)row->offset, &member);
    else
        return 0;
    if (rc < 0) {
        if (error && error[0] == '\0')
            describe(error, size, "chunk %lld at offset %lld: unreadable (%s)",
                     (long long)row->id, (long long)row->offset,
                     cairn_strerror(rc));
        return rc;
    }
    if (checksums && ((int64_t)member.length != row->length ||
                      strcmp(member.data_sha1, row->data_sha1) != 0)) {
        describe(error, size,
                 "chunk %lld at offset %lld: length or data_sha1 mismatch",
                 (long long)row->id, (long long)row->offset);
        return CAIRN_EMISMATCH;
    }
    return 0;
}

int
cairn_store_verify(struct cairn_store *store, unsigned levels, char *error,
                   size_t error_size)
{
    struct chunk_row *rows = NULL;
    size_t count = 0;
    uint64_t hashed = 0;
    SHA_CTX sha;
    int rc;

    describe(error, error_size, "%s", "");
    if (store->in_chunk)
        return CAIRN_ESTATE;
    if ((rc = load_chunks(store, &rows, &count)) < 0)
        return rc;
    SHA1_Init(&sha);
    for (size_t i = 0; i < count && rc == 0; i++) {
        bool checksums =
            (levels & CAIRN_VERIFY_ALL_CHECKSUMS) ||
            ((levels & CAIRN_VERIFY_LAST_CHECKSUM) && i + 1 == count);

        if (checksums && (rc = check_file_sha1(store, &rows[i], &sha, &hashed,
                                               error, error_size)) < 0)
            break;
        rc =
            verify_chunk(store, &rows[i], levels, checksums, error, error_size);
    }
    free(rows);
    return rc;
}
