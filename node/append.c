/*
 * append.c - cairn_store_append(): one APPLY record into the open chunk.
 *
 * The record is indexed first (so a record Cyrus's indexer would refuse
 * never reaches the file), then printed with proto's Cyrus-exact
 * serialiser straight into the chunk; message bodies are streamed from
 * the caller and hashed on the way, so memory stays bounded whatever the
 * message size.
 */
#include "node_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

struct body_stream {
    struct cairn_store *store;
    const struct cairn_store_bodies *bodies;
    SHA_CTX sha;
    uint64_t written;
};

static int
put_body(void *ctx, const void *data, size_t len)
{
    struct body_stream *stream = ctx;

    SHA1_Update(&stream->sha, data, len);
    stream->written += len;
    return chunk_writer_write(&stream->store->writer, data, len);
}

/* The serialiser's hook for FILE nodes: flush the text, stream the body. */
static int
write_body(void *ctx, const struct cairn_dlist *file, struct cairn_buf *out)
{
    struct body_stream *stream = ctx;
    const char *partition, *guid;
    unsigned char digest[20];
    char hex[41];
    uint64_t size;
    void *handle;
    int rc;

    if (!cairn_dlist_file_info(file, &partition, &guid, &size, &handle))
        return CAIRN_EINVAL;
    if (stream->bodies == NULL || stream->bodies->read == NULL)
        return CAIRN_EINVAL;
    if ((rc = chunk_writer_write(&stream->store->writer, out->data, out->len)) <
        0)
        return rc;
    cairn_buf_reset(out);
    SHA1_Init(&stream->sha);
    stream->written = 0;
    if ((rc = stream->bodies->read(stream->bodies->ctx, file, put_body,
                                   stream)) < 0)
        return rc;
    if (stream->written != size)
        return CAIRN_EMISMATCH;
    SHA1_Final(digest, &stream->sha);
    chunk_sha1_hex(digest, hex);
    if (strcasecmp(hex, guid) != 0)
        return CAIRN_EMISMATCH;
    return 0;
}

bool
cairn_store_logs_record(const char *name)
{
    static const char *const names[] = {
        "MAILBOX", "UNMAILBOX", "MESSAGE", "RESERVE", "RENAME",  "SEEN",
        "SUB",     "UNSUB",     "SIEVE",   "UNSIEVE", "EXPUNGE",
    };

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(name, names[i]) == 0)
            return true;
    }
    return false;
}

/* Writes "<ts> APPLY <record>\r\n" and full-flushes. */
static int
write_line(struct cairn_store *store, int64_t ts,
           const struct cairn_dlist *record,
           const struct cairn_store_bodies *bodies)
{
    struct body_stream stream = {.store = store, .bodies = bodies};
    struct cairn_dlist_body_writer writer = {write_body, &stream};
    struct cairn_buf text;
    int rc;

    cairn_buf_init(&text, RECORD_LINE_MAX);
    if ((rc = cairn_buf_printf(&text, "%" PRId64 " APPLY ", ts)) < 0)
        goto out;
    if ((rc = cairn_dlist_print(record, true, &text, &writer)) < 0)
        goto out;
    if ((rc = cairn_buf_append(&text, "\r\n", 2)) < 0)
        goto out;
    if ((rc = chunk_writer_write(&store->writer, text.data, text.len)) < 0)
        goto out;
    rc = chunk_writer_end_line(&store->writer);
out:
    cairn_buf_release(&text);
    return rc;
}

int
cairn_store_append(struct cairn_store *store, int64_t ts,
                   const struct cairn_dlist *record,
                   const struct cairn_store_bodies *bodies)
{
    struct chunk_mark mark;
    bool fresh_chunk;
    uint64_t offset;
    int rc;

    if (store->failed)
        return CAIRN_ESTATE;
    if (!cairn_store_logs_record(cairn_dlist_name(record)))
        return CAIRN_EPROTO;
    ts = store_clamp_ts(store, ts);
    fresh_chunk = !store->in_chunk;
    if ((rc = store_begin_chunk(store, ts)) < 0)
        return rc;
    chunk_writer_mark(&store->writer, &mark);
    offset = store->writer.length;
    if ((rc = store_savepoint(store)) < 0)
        goto undo_chunk;
    if ((rc = store_index_record(store, record, ts, offset)) < 0) {
        store_rollback_to(store);
        goto undo_chunk;
    }
    if ((rc = write_line(store, ts, record, bodies)) < 0) {
        store_rollback_to(store);
        if (chunk_writer_rewind(&store->writer, &mark) < 0) {
            store->failed = true;
            return rc;
        }
        goto undo_chunk;
    }
    if ((rc = store_release(store)) < 0) {
        store->failed = true;
        return rc;
    }
    store->chunk_last_ts = ts;
    return 0;
undo_chunk:
    /* A chunk holding no record must not be left behind. */
    if (fresh_chunk)
        store_abort_chunk(store);
    return rc;
}
