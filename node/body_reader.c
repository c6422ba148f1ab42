/*
 * body_reader.c - message bodies out of a data file in the order they
 * lie in it, for restore: its uploads from local files and the node's
 * batched BODY answers to a restore reading the cluster. Reading one body means
 * inflating its chunk from the start up to its line (cyrus-backups.md §2.6);
 * doing that per body costs O(bodies x chunk size): 38 s for 1,001 messages (31
 * MB) in one chunk, against 12 s for Cyrus's restore, which parses each line
 * once. This reader sorts a block of GUIDs into file order (chunk, line,
 * message row) and keeps its place between calls, so a block is one pass.
 * Bodies are still streamed: the only bodies held are the pieces of those
 * that follow the wanted one within one parser slice, which a following
 * call then takes first. Each body's SHA-1 is checked against its GUID.
 *
 * The index is read with its own read-only SQLite connection, so a reader
 * works on files no store has open (restore from a data directory) as
 * well as beside the node's own open store (the user's queue keeps
 * appends away while a batch is read).
 */
#include "node_int.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define IO_SIZE (64 * 1024)
#define SLICE (16 * 1024) /* parser feed: bounds the pending bytes */
#define MAX_PENDING 64

enum body_mode { SKIP, STREAM, PENDING };

struct pending {
    char guid[41];
    size_t start, len;
    bool complete;
};

struct location {
    int64_t chunk_offset, line_offset, row;
    char *guid;
};

struct cairn_body_reader {
    int fd;
    sqlite3 *db;
    sqlite3_stmt *find;
    /* the cursor: a chunk inflating, a line parsing */
    bool open, line_done;
    int64_t chunk_offset, line_offset;
    z_stream z;
    bool z_ready;
    unsigned char *in, *out;
    size_t out_pos, out_len;
    uint64_t to_skip;
    int spaces;
    struct cairn_dlist_parser *parser;
    /* the body the parser is in, and the one asked for */
    enum body_mode mode;
    const char *wanted;
    bool wanted_done, match;
    int (*put)(void *ctx, const void *data, size_t len);
    void *put_ctx;
    EVP_MD_CTX *sha;
    /* bodies met after the wanted one in the same slice */
    unsigned char pending_bytes[SLICE];
    size_t pending_len;
    struct pending pending[MAX_PENDING];
    size_t pending_count;
};

static void
sha_hex(EVP_MD_CTX *sha, char hex[41])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;

    EVP_DigestFinal_ex(sha, digest, &len);
    for (unsigned i = 0; i < len && i < 20; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}

/* --- the sink: route each body --------------------------------------------
 */

static int
sink_begin(void *ctx, const char *partition, const char *guid, uint64_t size,
           void **handle)
{
    struct cairn_body_reader *r = ctx;

    (void)partition;
    (void)size;
    *handle = NULL;
    if (!r->wanted_done && strcasecmp(guid, r->wanted) == 0) {
        r->mode = STREAM;
        return EVP_DigestInit_ex(r->sha, EVP_sha1(), NULL) == 1 ? 0
                                                                : CAIRN_ENOMEM;
    }
    r->mode = SKIP;
    if (r->wanted_done && r->pending_count < MAX_PENDING) {
        struct pending *p = &r->pending[r->pending_count++];

        snprintf(p->guid, sizeof(p->guid), "%s", guid);
        p->start = r->pending_len;
        p->len = 0;
        p->complete = false;
        r->mode = PENDING;
    }
    return 0;
}

static int
sink_data(void *ctx, void *handle, const void *bytes, size_t len)
{
    struct cairn_body_reader *r = ctx;

    (void)handle;
    if (r->mode == STREAM) {
        EVP_DigestUpdate(r->sha, bytes, len);
        return r->put(r->put_ctx, bytes, len);
    }
    if (r->mode == PENDING && r->pending_len + len > sizeof(r->pending_bytes)) {
        /* pending bodies left from an earlier slice fill the room: this
         * one is not kept (asked later, its line is read once more) */
        r->pending_len = r->pending[--r->pending_count].start;
        r->mode = SKIP;
    }
    if (r->mode == PENDING) {
        memcpy(r->pending_bytes + r->pending_len, bytes, len);
        r->pending_len += len;
        r->pending[r->pending_count - 1].len += len;
    }
    return 0;
}

static int
sink_end(void *ctx, void *handle)
{
    struct cairn_body_reader *r = ctx;
    char hex[41] = "";

    (void)handle;
    if (r->mode == STREAM) {
        sha_hex(r->sha, hex);
        r->match = strcasecmp(hex, r->wanted) == 0;
        r->wanted_done = true;
    } else if (r->mode == PENDING) {
        r->pending[r->pending_count - 1].complete = true;
    }
    r->mode = SKIP;
    return 0;
}

/* --- the cursor ------------------------------------------------------------
 */

static void
close_cursor(struct cairn_body_reader *r)
{
    if (r->z_ready)
        inflateEnd(&r->z);
    r->z_ready = false;
    cairn_dlist_parser_free(r->parser);
    r->parser = NULL;
    r->open = false;
    r->pending_count = 0;
    r->pending_len = 0;
    r->mode = SKIP;
}

/* A fresh parser for the line at line_offset, skip bytes ahead. */
static int
start_line(struct cairn_body_reader *r, int64_t line_offset, uint64_t skip)
{
    const struct cairn_dlist_file_sink sink = {sink_begin, sink_data, sink_end,
                                               NULL, r};

    cairn_dlist_parser_free(r->parser);
    r->parser = NULL;
    r->pending_count = 0;
    r->pending_len = 0;
    r->mode = SKIP;
    r->line_done = false;
    r->line_offset = line_offset;
    r->to_skip = skip;
    r->spaces = 0;
    return cairn_dlist_parser_new(
        NULL, &sink, CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL, &r->parser);
}

/*
 * Moves the open cursor on to a later line of its chunk by inflating
 * forward, never from the chunk's start again: bodies asked in file order
 * cost one pass of the chunk, one line per body or a thousand. *moved is
 * false when the line lies elsewhere (another chunk, or passed already).
 */
static int
skip_to_line(struct cairn_body_reader *r, int64_t chunk_offset,
             int64_t line_offset, bool *moved)
{
    uint64_t position;

    *moved = false;
    if (!r->open || r->chunk_offset != chunk_offset || line_offset < 0)
        return 0;
    /* inflated bytes taken so far (parsed or skipped) */
    position = (uint64_t)r->z.total_out - (r->out_len - r->out_pos);
    if ((uint64_t)line_offset < position)
        return 0;
    *moved = true;
    return start_line(r, line_offset, (uint64_t)line_offset - position);
}

static int
open_cursor(struct cairn_body_reader *r, int64_t chunk_offset,
            int64_t line_offset)
{
    int rc;

    close_cursor(r);
    memset(&r->z, 0, sizeof(r->z));
    if (lseek(r->fd, chunk_offset, SEEK_SET) < 0 ||
        inflateInit2(&r->z, 16 + MAX_WBITS) != Z_OK)
        return CAIRN_EIO;
    r->z_ready = true;
    r->out_pos = r->out_len = 0;
    if ((rc = start_line(r, line_offset, (uint64_t)line_offset)) < 0)
        return rc;
    r->open = true;
    r->chunk_offset = chunk_offset;
    return 0;
}

/* Inflates more of the chunk into out. */
static int
inflate_more(struct cairn_body_reader *r)
{
    int zrc;

    if (r->z.avail_in == 0) {
        ssize_t got = read(r->fd, r->in, IO_SIZE);

        if (got <= 0)
            return got < 0 ? CAIRN_EIO : CAIRN_ECORRUPT;
        r->z.next_in = r->in;
        r->z.avail_in = (uInt)got;
    }
    r->z.next_out = r->out;
    r->z.avail_out = IO_SIZE;
    zrc = inflate(&r->z, Z_NO_FLUSH);
    if (zrc != Z_OK && zrc != Z_STREAM_END && zrc != Z_BUF_ERROR)
        return CAIRN_ECORRUPT;
    r->out_pos = 0;
    r->out_len = IO_SIZE - r->z.avail_out;
    if (zrc == Z_STREAM_END && r->out_len == 0)
        return CAIRN_ECORRUPT; /* the line runs past its chunk */
    return 0;
}

/* Feeds slices until the wanted body ended or the line did. */
static int
advance(struct cairn_body_reader *r)
{
    int rc;

    while (!r->wanted_done && !r->line_done) {
        const unsigned char *at;
        size_t len, consumed = 0;

        if (r->out_pos == r->out_len && (rc = inflate_more(r)) < 0)
            return rc;
        at = r->out + r->out_pos;
        len = r->out_len - r->out_pos;
        /* "<ts> APPLY " before the dlist, after the bytes before the line */
        while (len > 0 && (r->to_skip > 0 || r->spaces < 2)) {
            if (r->to_skip > 0)
                r->to_skip--;
            else if (*at == ' ')
                r->spaces++;
            at++, len--, r->out_pos++;
        }
        if (len == 0)
            continue;
        if (len > SLICE)
            len = SLICE;
        rc = cairn_dlist_parser_feed(r->parser, at, len, &consumed);
        r->out_pos += consumed;
        if (rc == 0) {
            cairn_dlist_free(cairn_dlist_parser_take(r->parser));
            r->line_done = true;
        } else if (rc != CAIRN_EAGAIN) {
            return rc;
        }
    }
    return 0;
}

/* --- reading ---------------------------------------------------------------
 */

/* Where guid's body is: chunk file offset, line offset, message row. */
static int
locate(struct cairn_body_reader *r, const char *guid, struct location *where)
{
    int rc = CAIRN_EDB, step;

    sqlite3_reset(r->find);
    if (sqlite3_bind_text(r->find, 1, guid, -1, SQLITE_STATIC) != SQLITE_OK)
        return CAIRN_EDB;
    step = sqlite3_step(r->find);
    if (step == SQLITE_ROW) {
        where->chunk_offset = sqlite3_column_int64(r->find, 0);
        where->line_offset = sqlite3_column_int64(r->find, 1);
        where->row = sqlite3_column_int64(r->find, 2);
        rc = 0;
    } else if (step == SQLITE_DONE) {
        rc = CAIRN_ENOENT;
    }
    sqlite3_reset(r->find);
    return rc;
}

/* Drops pending entries [0, count), keeping the rest at the front. */
static void
drop_pending(struct cairn_body_reader *r, size_t count)
{
    size_t bytes =
        count < r->pending_count ? r->pending[count].start : r->pending_len;

    memmove(r->pending_bytes, r->pending_bytes + bytes, r->pending_len - bytes);
    r->pending_len -= bytes;
    for (size_t i = count; i < r->pending_count; i++) {
        r->pending[i - count] = r->pending[i];
        r->pending[i - count].start -= bytes;
    }
    r->pending_count -= count < r->pending_count ? count : r->pending_count;
}

/*
 * Serves guid from the pending bodies if it is there: *served says so,
 * *finished whether the whole body was there (else the parser is inside
 * it and goes on streaming it).
 */
static int
take_pending(struct cairn_body_reader *r, const char *guid, bool *served,
             bool *finished)
{
    char hex[41] = "";
    size_t i = 0;
    int rc;

    *served = *finished = false;
    while (i < r->pending_count && strcasecmp(r->pending[i].guid, guid) != 0)
        i++;
    if (i == r->pending_count) {
        drop_pending(r, r->pending_count); /* passed: they were not asked */
        if (r->mode == PENDING)
            r->mode = SKIP; /* the parser is inside one of them */
        return 0;
    }
    *served = true;
    if (EVP_DigestInit_ex(r->sha, EVP_sha1(), NULL) != 1)
        return CAIRN_ENOMEM;
    EVP_DigestUpdate(r->sha, r->pending_bytes + r->pending[i].start,
                     r->pending[i].len);
    if ((rc = r->put(r->put_ctx, r->pending_bytes + r->pending[i].start,
                     r->pending[i].len)) < 0)
        return rc;
    if (r->pending[i].complete) {
        sha_hex(r->sha, hex);
        r->match = strcasecmp(hex, guid) == 0;
        *finished = true;
        drop_pending(r, i + 1);
        return 0;
    }
    /* the last entry: the parser is in the middle of this body */
    drop_pending(r, r->pending_count);
    r->mode = STREAM;
    return 0;
}

int
cairn_body_reader_read(struct cairn_body_reader *r, const char *guid,
                       int (*put)(void *ctx, const void *data, size_t len),
                       void *put_ctx)
{
    struct location where;
    bool served = false, finished = false, same_line, moved = false;
    int rc;

    r->wanted = guid;
    r->put = put;
    r->put_ctx = put_ctx;
    r->wanted_done = false;
    r->match = false;
    if (r->open && (rc = take_pending(r, guid, &served, &finished)) < 0)
        goto out;
    if (finished)
        return r->match ? 0 : CAIRN_EMISMATCH;
    if (served) {
        rc = advance(r); /* the parser is inside this body: go on */
    } else {
        if ((rc = locate(r, guid, &where)) < 0)
            goto out;
        same_line = r->open && !r->line_done &&
                    r->chunk_offset == where.chunk_offset &&
                    r->line_offset == where.line_offset;
        if (!same_line && (rc = skip_to_line(r, where.chunk_offset,
                                             where.line_offset, &moved)) < 0)
            goto out;
        if (!same_line && !moved &&
            (rc = open_cursor(r, where.chunk_offset, where.line_offset)) < 0)
            goto out;
        rc = advance(r);
        /* passed it already (asked out of order): the line once more */
        if (rc == 0 && !r->wanted_done && same_line &&
            (rc = open_cursor(r, where.chunk_offset, where.line_offset)) == 0)
            rc = advance(r);
    }
    if (rc == 0)
        rc = !r->wanted_done ? CAIRN_ECORRUPT : r->match ? 0 : CAIRN_EMISMATCH;
out:
    if (rc < 0 && rc != CAIRN_ENOENT)
        close_cursor(r); /* its state is unknown now */
    return rc;
}

static int
compare_locations(const void *a, const void *b)
{
    const struct location *left = a, *right = b;

    if (left->chunk_offset != right->chunk_offset)
        return left->chunk_offset < right->chunk_offset ? -1 : 1;
    if (left->line_offset != right->line_offset)
        return left->line_offset < right->line_offset ? -1 : 1;
    return left->row < right->row ? -1 : left->row > right->row;
}

int
cairn_body_reader_order(struct cairn_body_reader *r, char **guids, size_t count)
{
    struct location *where = calloc(count + 1, sizeof(*where));
    int rc = 0;

    if (where == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < count && rc == 0; i++) {
        where[i].guid = guids[i];
        rc = locate(r, guids[i], &where[i]);
        if (rc == CAIRN_ENOENT) { /* last: reading it will say so */
            where[i].chunk_offset = INT64_MAX;
            rc = 0;
        }
    }
    if (rc == 0) {
        qsort(where, count, sizeof(*where), compare_locations);
        for (size_t i = 0; i < count; i++)
            guids[i] = where[i].guid;
    }
    free(where);
    return rc;
}

int
cairn_body_reader_open(const char *data_path, const char *index_path,
                       struct cairn_body_reader **reader)
{
    static const char sql[] =
        "SELECT c.offset, m.offset, m.id FROM message AS m"
        " JOIN chunk AS c ON c.id = m.chunk_id WHERE m.guid = ?1";
    struct cairn_body_reader *r = calloc(1, sizeof(*r));
    int rc = CAIRN_ENOMEM;

    *reader = NULL;
    if (r == NULL)
        return CAIRN_ENOMEM;
    r->fd = -1;
    if ((r->in = malloc(IO_SIZE)) == NULL ||
        (r->out = malloc(IO_SIZE)) == NULL ||
        (r->sha = EVP_MD_CTX_new()) == NULL)
        goto out;
    rc = CAIRN_EIO;
    if ((r->fd = open(data_path, O_RDONLY | O_CLOEXEC)) < 0)
        goto out;
    rc = CAIRN_EDB;
    if (sqlite3_open_v2(index_path, &r->db, SQLITE_OPEN_READONLY, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(r->db, 20000) != SQLITE_OK ||
        sqlite3_prepare_v2(r->db, sql, -1, &r->find, NULL) != SQLITE_OK)
        goto out;
    *reader = r;
    r = NULL;
    rc = 0;
out:
    cairn_body_reader_free(r);
    return rc;
}

void
cairn_body_reader_free(struct cairn_body_reader *reader)
{
    if (reader == NULL)
        return;
    close_cursor(reader);
    sqlite3_finalize(reader->find);
    sqlite3_close(reader->db);
    if (reader->fd >= 0)
        close(reader->fd);
    EVP_MD_CTX_free(reader->sha);
    free(reader->in);
    free(reader->out);
    free(reader);
}
