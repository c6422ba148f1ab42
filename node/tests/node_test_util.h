/*
 * node_test_util.h - what the node's tests and benchmark share: feeding
 * recorded "APPLY ..." commands into a store (bodies held in memory, test
 * data only), temp directories, a dump of an index's Cyrus tables for
 * comparing two indexes, and reading or writing a data file's gzip members
 * directly.
 */
#ifndef CAIRN_NODE_TEST_UTIL_H
#define CAIRN_NODE_TEST_UTIL_H

#include "node.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

struct test_body {
    char *data;
    size_t len;
};

static inline int
test_sink_begin(void *ctx, const char *partition, const char *guid,
                uint64_t size, void **handle)
{
    struct test_body *body = calloc(1, sizeof(*body));

    if (body == NULL || (body->data = malloc(size + 1)) == NULL) {
        free(body);
        return CAIRN_ENOMEM;
    }
    *handle = body;
    return 0;
}

static inline int
test_sink_data(void *ctx, void *handle, const void *bytes, size_t len)
{
    struct test_body *body = handle;

    memcpy(body->data + body->len, bytes, len);
    body->len += len;
    return 0;
}

static inline int
test_sink_end(void *ctx, void *handle)
{
    return 0;
}

static inline void
test_sink_release(void *ctx, void *handle)
{
    struct test_body *body = handle;

    if (body) {
        free(body->data);
        free(body);
    }
}

static const struct cairn_dlist_file_sink test_sink = {
    test_sink_begin, test_sink_data, test_sink_end, test_sink_release, NULL};

/* Gives a body captured by test_sink back to the store. */
static inline int
test_read_body(void *ctx, const struct cairn_dlist *file,
               int (*put)(void *put_ctx, const void *data, size_t len),
               void *put_ctx)
{
    const char *partition, *guid;
    uint64_t size;
    void *handle;
    struct test_body *body;

    if (!cairn_dlist_file_info(file, &partition, &guid, &size, &handle) ||
        handle == NULL)
        return CAIRN_EINVAL;
    body = handle;
    return put(put_ctx, body->data, body->len);
}

static const struct cairn_store_bodies test_bodies = {test_read_body, NULL};

/* Reads a whole file. Owned result. */
static inline char *
test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    long size;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0 && (data = malloc((size_t)size + 1))) {
        *len = fread(data, 1, (size_t)size, f);
        data[*len] = '\0';
    }
    fclose(f);
    return data;
}

/*
 * Parses each "APPLY <dlist>\r\n" of data and calls apply(ctx, record) for
 * it. Returns 0 or the first error.
 */
static inline int
test_each_apply(const char *data, size_t len,
                int (*apply)(void *ctx, struct cairn_dlist *record), void *ctx)
{
    struct cairn_dlist_parser *parser = NULL;
    size_t at = 0;
    int rc = 0;

    if ((rc = cairn_dlist_parser_new(
             NULL, &test_sink, CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL,
             &parser)) < 0)
        return rc;
    while (at < len && rc == 0) {
        size_t used = 0;
        struct cairn_dlist *record;

        if (len - at < 6 || memcmp(data + at, "APPLY ", 6) != 0) {
            rc = CAIRN_EPARSE;
            break;
        }
        at += 6;
        rc = cairn_dlist_parser_feed(parser, data + at, len - at, &used);
        at += used;
        if (rc < 0)
            break;
        record = cairn_dlist_parser_take(parser);
        rc = apply(ctx, record);
        cairn_dlist_free(record);
    }
    cairn_dlist_parser_free(parser);
    return rc;
}

struct test_apply {
    struct cairn_store *store;
    int64_t ts;
    int appended;
};

static inline int
test_apply_one(void *ctx, struct cairn_dlist *record)
{
    struct test_apply *apply = ctx;
    int rc;

    if (!cairn_store_logs_record(cairn_dlist_name(record)))
        return 0;
    rc = cairn_store_append(apply->store, apply->ts, record, &test_bodies);
    if (rc == 0)
        apply->appended++;
    return rc;
}

/* Appends every logged APPLY of the file at ts (no commit). */
static inline int
test_apply_file(struct cairn_store *store, const char *path, int64_t ts,
                int *appended)
{
    struct test_apply apply = {store, ts, 0};
    size_t len = 0;
    char *data = test_read_file(path, &len);
    int rc;

    if (data == NULL)
        return CAIRN_ENOENT;
    rc = test_each_apply(data, len, test_apply_one, &apply);
    free(data);
    if (appended)
        *appended = apply.appended;
    return rc;
}

/* Every row of Cyrus's seven tables, as text. Owned result. */
static inline char *
test_dump_index(const char *index_path)
{
    static const char *const tables[] = {
        "chunk",        "message", "mailbox", "mailbox_message",
        "subscription", "seen",    "sieve"};
    struct cairn_buf out;
    sqlite3 *db = NULL;
    char *text = NULL;
    size_t len;

    cairn_buf_init(&out, 64u << 20);
    if (sqlite3_open_v2(index_path, &db, SQLITE_OPEN_READONLY, NULL) !=
        SQLITE_OK)
        goto out;
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
        char sql[128];
        sqlite3_stmt *stmt = NULL;

        snprintf(sql, sizeof(sql), "SELECT * FROM %s ORDER BY id", tables[t]);
        if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
            goto out;
        cairn_buf_printf(&out, "[%s]\n", tables[t]);
        while (sqlite3_step(stmt) == SQLITE_ROW) {
            for (int c = 0; c < sqlite3_column_count(stmt); c++) {
                int type = sqlite3_column_type(stmt, c);
                const unsigned char *value = sqlite3_column_text(stmt, c);

                cairn_buf_printf(&out, "%d:%s|", type,
                                 value ? (const char *)value : "NULL");
            }
            cairn_buf_append_str(&out, "\n");
        }
        sqlite3_finalize(stmt);
    }
    cairn_buf_detach(&out, &text, &len);
out:
    sqlite3_close(db);
    cairn_buf_release(&out);
    return text;
}

/* userid's data file as dir's catalog.db records it; owned, or NULL. */
static inline char *
test_catalog_data_path(const char *dir, const char *userid)
{
    struct cairn_catalog *catalog = NULL;
    char *path = NULL, *data_path = NULL;

    if (asprintf(&path, "%s/catalog.db", dir) < 0)
        return NULL;
    if (cairn_catalog_open(path, &catalog) == 0)
        cairn_catalog_lookup(catalog, userid, &data_path);
    cairn_catalog_free(catalog);
    free(path);
    return data_path;
}

/*
 * A fresh directory, in /dev/shm when there is one (the tests fsync a lot
 * and check logic, not the disk). Owned result.
 */
static inline char *
test_temp_dir(const char *name)
{
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    char *dir = NULL;

    if (asprintf(&dir, "%s/cairn-%s-XXXXXX", base, name) < 0)
        return NULL;
    if (mkdtemp(dir) == NULL) {
        free(dir);
        return NULL;
    }
    return dir;
}

static inline void
test_remove_dir(const char *dir)
{
    char *cmd = NULL;

    if (dir && asprintf(&cmd, "rm -rf '%s'", dir) >= 0 && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    free(cmd);
}

/* What a data file holds, all its chunks inflated. */
struct test_log_figures {
    uint64_t length;   /* uncompressed bytes */
    uint64_t literals; /* FILE literals of APPLY MESSAGE lines */
    uint64_t file_size;
};

/* Inflates the data file at path (gzread goes on from member to member). */
static inline int
test_read_log(const char *path, struct test_log_figures *figures)
{
    static const char mark[] = "%{default ";
    struct cairn_buf text;
    struct stat st;
    char piece[65536];
    gzFile in = NULL;
    int got = 0, rc = 0;

    memset(figures, 0, sizeof(*figures));
    cairn_buf_init(&text, 16u << 20);
    if (stat(path, &st) < 0 || (in = gzopen(path, "rb")) == NULL) {
        rc = CAIRN_EIO;
        goto out;
    }
    figures->file_size = (uint64_t)st.st_size;
    while (rc == 0 && (got = gzread(in, piece, sizeof(piece))) > 0)
        rc = cairn_buf_append(&text, piece, (size_t)got);
    if (rc == 0 && got < 0)
        rc = CAIRN_ECORRUPT;
    figures->length = text.len;
    for (size_t at = 0; rc == 0 && text.data && at < text.len; at++) {
        const char *found =
            memmem(text.data + at, text.len - at, mark, sizeof(mark) - 1);

        if (found == NULL)
            break;
        figures->literals++;
        at = (size_t)(found - text.data);
    }
out:
    if (in)
        gzclose(in);
    cairn_buf_release(&text);
    return rc;
}

/* Appends text to the file at path as one gzip member: one chunk. */
static inline int
test_write_member(const char *path, const char *text, size_t len)
{
    z_stream z = {0};
    unsigned char *out = NULL;
    FILE *file = NULL;
    int rc = CAIRN_EIO;

    if (deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return CAIRN_EIO;
    if ((out = malloc(deflateBound(&z, len))) == NULL)
        goto out;
    z.next_in = (unsigned char *)text;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)deflateBound(&z, len);
    if (deflate(&z, Z_FINISH) == Z_STREAM_END &&
        (file = fopen(path, "ab")) != NULL &&
        fwrite(out, 1, z.total_out, file) == z.total_out)
        rc = 0;
out:
    if (file && fclose(file) != 0)
        rc = CAIRN_EIO;
    deflateEnd(&z);
    free(out);
    return rc;
}

#endif /* CAIRN_NODE_TEST_UTIL_H */
