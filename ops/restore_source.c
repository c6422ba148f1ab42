/*
 * restore_source.c - reading a backup for restore from a node's local
 * files: the store (node.h) for state answers and message bodies, and the
 * index's SQLite opened read-only plus the data file for what node.h does
 * not expose yet (the text of a sieve script: backupd's index keeps only
 * where its SIEVE line is). Also the dlist copy helpers restore needs,
 * because state answers lend their trees only for the length of a call.
 */
#include "restore_int.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* Longest sieve line read back (Cyrus caps scripts far below this). */
#define SIEVE_LINE_MAX (4u * 1024 * 1024)
#define READ_SIZE (64 * 1024)

struct store_source {
    struct cairn_store *store;
    char *index_path;
    struct body_reader *reader; /* opened on the first body */
};

/* --- dlist copies ---------------------------------------------------------
 */

int
restore_dlist_copy(struct cairn_dlist *parent, const char *name,
                   const struct cairn_dlist *node)
{
    struct cairn_dlist *child = NULL;
    const char *value;
    size_t len;
    int rc;

    if (name == NULL)
        name = cairn_dlist_name(node);
    switch (cairn_dlist_type(node)) {
    case CAIRN_DLIST_NIL:
        return cairn_dlist_add_nil(parent, name);
    case CAIRN_DLIST_ATOM:
        value = cairn_dlist_value(node, &len);
        return cairn_dlist_add_string(parent, name, value, len);
    case CAIRN_DLIST_FLAG:
        return cairn_dlist_add_flag(parent, name,
                                    cairn_dlist_value(node, NULL));
    case CAIRN_DLIST_BUF:
        value = cairn_dlist_value(node, &len);
        return cairn_dlist_add_buf(parent, name, value, len);
    case CAIRN_DLIST_LIST:
        rc = cairn_dlist_add_list(parent, name, &child);
        break;
    case CAIRN_DLIST_KVLIST:
        rc = cairn_dlist_add_kvlist(parent, name, &child);
        break;
    default:
        return CAIRN_ENOTSUP;
    }
    for (const struct cairn_dlist *c = cairn_dlist_first(node);
         rc == 0 && c != NULL; c = cairn_dlist_next(c))
        rc = restore_dlist_copy(child, NULL, c);
    return rc;
}

int
restore_dlist_clone(const struct cairn_dlist *node, struct cairn_dlist **copy)
{
    struct cairn_dlist *root = NULL;
    int rc = 0;

    *copy = NULL;
    if (cairn_dlist_type(node) == CAIRN_DLIST_KVLIST)
        root = cairn_dlist_new_kvlist(cairn_dlist_name(node));
    else if (cairn_dlist_type(node) == CAIRN_DLIST_LIST)
        root = cairn_dlist_new_list(cairn_dlist_name(node));
    else
        return CAIRN_EINVAL;
    if (root == NULL)
        return CAIRN_ENOMEM;
    for (const struct cairn_dlist *c = cairn_dlist_first(node);
         rc == 0 && c != NULL; c = cairn_dlist_next(c))
        rc = restore_dlist_copy(root, NULL, c);
    if (rc < 0) {
        cairn_dlist_free(root);
        return rc;
    }
    *copy = root;
    return 0;
}

/* --- the store source -----------------------------------------------------
 */

static int
store_user(void *ctx, cairn_store_emit emit, void *emit_ctx)
{
    struct store_source *source = ctx;

    return cairn_store_get_user(source->store, emit, emit_ctx);
}

static int
keep_clone(void *ctx, const struct cairn_dlist *item)
{
    struct cairn_dlist **copy = ctx;

    if (*copy != NULL)
        return 0;
    return restore_dlist_clone(item, copy);
}

static int
store_mailbox(void *ctx, const char *mboxname, struct cairn_dlist **mailbox)
{
    struct store_source *source = ctx;
    int rc;

    *mailbox = NULL;
    rc = cairn_store_get_fullmailbox(source->store, mboxname, keep_clone,
                                     mailbox);
    if (rc < 0) {
        cairn_dlist_free(*mailbox);
        *mailbox = NULL;
    } else if (*mailbox == NULL) {
        rc = CAIRN_ENOENT;
    }
    return rc;
}

static int
open_reader(struct store_source *source)
{
    if (source->reader != NULL)
        return 0;
    return restore_reader_new(cairn_store_data_path(source->store),
                              source->index_path, &source->reader);
}

static int
store_message(void *ctx, const char *guid,
              int (*put)(void *put_ctx, const void *data, size_t len),
              void *put_ctx)
{
    struct store_source *source = ctx;
    int rc;

    if ((rc = open_reader(source)) < 0)
        return rc;
    return restore_reader_read(source->reader, guid, put, put_ctx);
}

static int
store_order(void *ctx, char **guids, size_t count)
{
    struct store_source *source = ctx;
    int rc;

    if ((rc = open_reader(source)) < 0)
        return rc;
    return restore_reader_order(source->reader, guids, count);
}

/* Where the live SIEVE line for filename is: chunk file offset, line
 * offset inside the inflated chunk. Read-only, on the index directly. */
static int
find_sieve_line(const char *index_path, const char *filename,
                int64_t *chunk_offset, int64_t *line_offset)
{
    static const char sql[] = "SELECT c.offset, s.offset FROM sieve AS s"
                              " JOIN chunk AS c ON c.id = s.chunk_id"
                              " WHERE s.filename = ?1 AND s.deleted IS NULL"
                              " ORDER BY s.id DESC LIMIT 1";
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int rc = CAIRN_EDB, step;

    if (sqlite3_open_v2(index_path, &db, SQLITE_OPEN_READONLY, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(db, 20000) != SQLITE_OK ||
        sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 1, filename, -1, SQLITE_STATIC) != SQLITE_OK)
        goto out;
    step = sqlite3_step(stmt);
    if (step == SQLITE_DONE) {
        rc = CAIRN_ENOENT;
    } else if (step == SQLITE_ROW) {
        *chunk_offset = sqlite3_column_int64(stmt, 0);
        *line_offset = sqlite3_column_int64(stmt, 1);
        rc = *chunk_offset >= 0 && *line_offset >= 0 ? 0 : CAIRN_ECORRUPT;
    }
out:
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return rc;
}

/*
 * Feeds the inflated bytes of a record line, from after "<ts> APPLY ",
 * to parser until the dlist is complete. Literals may hold line ends, so
 * only the parser knows where the line ends.
 */
struct line_reader {
    struct cairn_dlist_parser *parser;
    uint64_t to_skip; /* bytes of the chunk before the line */
    int spaces;       /* of the two that end "<ts> APPLY " */
    bool complete;
};

static int
feed_line(struct line_reader *reader, const unsigned char *data, size_t len)
{
    size_t consumed = 0;
    int rc;

    while (len > 0 && (reader->to_skip > 0 || reader->spaces < 2)) {
        if (reader->to_skip > 0)
            reader->to_skip--;
        else if (*data == ' ')
            reader->spaces++;
        else if (*data == '\n')
            return CAIRN_ECORRUPT;
        data++;
        len--;
    }
    if (len == 0)
        return 0;
    rc = cairn_dlist_parser_feed(reader->parser, data, len, &consumed);
    if (rc == 0)
        reader->complete = true;
    return rc == CAIRN_EAGAIN ? 0 : rc;
}

/*
 * Inflates the gzip member at chunk_offset of fd and parses the record
 * line that starts line_offset bytes into it. *record is owned.
 */
static int
read_chunk_record(int fd, int64_t chunk_offset, int64_t line_offset,
                  struct cairn_dlist **record)
{
    struct cairn_dlist_limits limits;
    struct line_reader reader = {NULL, (uint64_t)line_offset, 0, false};
    unsigned char *in = NULL, *out = NULL;
    z_stream z;
    bool z_ready = false;
    int rc = CAIRN_ENOMEM;

    *record = NULL;
    memset(&z, 0, sizeof(z));
    cairn_dlist_limits_default(&limits);
    limits.max_bytes = SIEVE_LINE_MAX;
    limits.max_literal = SIEVE_LINE_MAX;
    if ((in = malloc(READ_SIZE)) == NULL || (out = malloc(READ_SIZE)) == NULL)
        goto out;
    if ((rc = cairn_dlist_parser_new(
             &limits, NULL, CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL,
             &reader.parser)) < 0)
        goto out;
    rc = CAIRN_EIO;
    if (lseek(fd, chunk_offset, SEEK_SET) < 0 ||
        inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
        goto out;
    z_ready = true;
    while (!reader.complete) {
        int zrc;

        if (z.avail_in == 0) {
            ssize_t got = read(fd, in, READ_SIZE);

            rc = got < 0 ? CAIRN_EIO : CAIRN_ECORRUPT;
            if (got <= 0)
                goto out;
            z.next_in = in;
            z.avail_in = (uInt)got;
        }
        z.next_out = out;
        z.avail_out = READ_SIZE;
        zrc = inflate(&z, Z_NO_FLUSH);
        rc = CAIRN_ECORRUPT;
        if (zrc != Z_OK && zrc != Z_STREAM_END)
            goto out;
        if ((rc = feed_line(&reader, out, READ_SIZE - z.avail_out)) < 0)
            goto out;
        rc = CAIRN_ECORRUPT;
        if (zrc == Z_STREAM_END && !reader.complete)
            goto out; /* the line runs past its member */
    }
    *record = cairn_dlist_parser_take(reader.parser);
    rc = *record != NULL ? 0 : CAIRN_ECORRUPT;
out:
    if (z_ready)
        inflateEnd(&z);
    cairn_dlist_parser_free(reader.parser);
    free(in);
    free(out);
    return rc;
}

/* The CONTENT of a SIEVE record, owned by the caller. */
static int
sieve_content(const struct cairn_dlist *record, char **content, size_t *len)
{
    const char *data;
    size_t data_len;

    if (strcmp(cairn_dlist_name(record), "SIEVE") != 0 ||
        !cairn_dlist_get_map(record, "CONTENT", &data, &data_len))
        return CAIRN_ECORRUPT;
    if ((*content = malloc(data_len + 1)) == NULL)
        return CAIRN_ENOMEM;
    memcpy(*content, data, data_len);
    (*content)[data_len] = '\0';
    *len = data_len;
    return 0;
}

static int
store_sieve(void *ctx, const char *filename, char **content, size_t *len)
{
    struct store_source *source = ctx;
    struct cairn_dlist *record = NULL;
    int64_t chunk_offset = 0, line_offset = 0;
    int fd = -1, rc;

    *content = NULL;
    *len = 0;
    if ((rc = find_sieve_line(source->index_path, filename, &chunk_offset,
                              &line_offset)) < 0)
        goto out;
    rc = CAIRN_EIO;
    if ((fd = open(cairn_store_data_path(source->store),
                   O_RDONLY | O_CLOEXEC)) < 0)
        goto out;
    if ((rc = read_chunk_record(fd, chunk_offset, line_offset, &record)) < 0)
        goto out;
    rc = sieve_content(record, content, len);
out:
    if (fd >= 0)
        close(fd);
    cairn_dlist_free(record);
    return rc;
}

static void
store_close(void *ctx)
{
    struct store_source *source = ctx;

    if (source == NULL)
        return;
    restore_reader_free(source->reader);
    cairn_store_close(source->store);
    free(source->index_path);
    free(source);
}

static const struct cairn_restore_source_ops store_ops = {
    store_user,  store_mailbox, store_message,
    store_sieve, store_close,   store_order,
};

int
cairn_restore_source_open_file(const char *data_path, const char *userid,
                               struct cairn_restore_source **source)
{
    struct cairn_restore_source *result = NULL;
    struct store_source *store = NULL;
    int rc = CAIRN_ENOMEM;

    *source = NULL;
    if (strlen(userid) >= sizeof(result->userid))
        return CAIRN_EBADNAME;
    if ((result = calloc(1, sizeof(*result))) == NULL ||
        (store = calloc(1, sizeof(*store))) == NULL ||
        asprintf(&store->index_path, "%s.index", data_path) < 0) {
        if (store != NULL)
            store->index_path = NULL;
        goto out;
    }
    /* never wait here: a running node keeps a busy user's lock; the
     * caller decides how long to retry */
    if ((rc = cairn_store_open(data_path, 0, &store->store)) < 0)
        goto out;
    snprintf(result->userid, sizeof(result->userid), "%s", userid);
    result->ops = &store_ops;
    result->ctx = store;
    store = NULL;
    *source = result;
    result = NULL;
out:
    store_close(store);
    free(result);
    return rc;
}

int
cairn_restore_source_open_store(const char *data_dir, const char *userid,
                                struct cairn_restore_source **source)
{
    struct cairn_catalog *catalog = NULL;
    char *catalog_path = NULL, *data_path = NULL;
    int rc;

    *source = NULL;
    if ((rc = cairn_node_check_userid(userid)) < 0)
        return rc;
    if (asprintf(&catalog_path, "%s/catalog.db", data_dir) < 0)
        return CAIRN_ENOMEM;
    if (access(catalog_path, F_OK) != 0) {
        rc = CAIRN_ENOENT; /* never create a catalog while reading */
        goto out;
    }
    if ((rc = cairn_catalog_open(catalog_path, &catalog)) < 0 ||
        (rc = cairn_catalog_lookup(catalog, userid, &data_path)) < 0)
        goto out;
    rc = cairn_restore_source_open_file(data_path, userid, source);
out:
    cairn_catalog_free(catalog);
    free(catalog_path);
    free(data_path);
    return rc;
}

void
cairn_restore_source_free(struct cairn_restore_source *source)
{
    if (source == NULL)
        return;
    if (source->ops != NULL && source->ops->close != NULL)
        source->ops->close(source->ctx);
    free(source);
}
