/*
 * append.c - cairn_store_append(): one APPLY record into the open chunk.
 *
 * The record is indexed first (so a record Cyrus's indexer would refuse
 * never reaches the file), then printed with proto's Cyrus-exact
 * serialiser straight into the chunk; message bodies are streamed from
 * the caller and hashed on the way, so memory stays bounded whatever the
 * message size.
 *
 * A MESSAGE record first loses the bodies the user's backup already
 * holds, so a resend (a body two mailboxes share, a lagging replica's
 * catch-up, a retry after a NO) never grows the log.
 */
#include "node_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
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
    if ((rc = cairn_dlist_print_stored(record, true, &text, &writer)) < 0)
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

struct file_ref {
    const char *guid;
    size_t position; /* among the record's children */
};

static int
compare_file_refs(const void *a, const void *b)
{
    const struct file_ref *left = a, *right = b;
    int order = strcmp(left->guid, right->guid);

    if (order != 0)
        return order;
    return left->position < right->position ? -1
                                            : left->position > right->position;
}

/*
 * Marks repeated[i] for each child i whose GUID an earlier FILE of the
 * record has. Sorting keeps this O(n log n): sync_client puts a whole
 * batch of messages in one record. Allocates *repeated (count entries),
 * owned by the caller (free()).
 */
static int
find_repeated(const struct cairn_dlist *record, size_t count, bool **repeated)
{
    struct file_ref *refs = NULL;
    size_t used = 0, position = 0;
    int rc = CAIRN_ENOMEM;

    *repeated = NULL;
    if ((refs = calloc(count ? count : 1, sizeof(*refs))) == NULL ||
        (*repeated = calloc(count ? count : 1, sizeof(**repeated))) == NULL)
        goto out;
    for (const struct cairn_dlist *child = cairn_dlist_first(record); child;
         child = cairn_dlist_next(child), position++) {
        const char *partition, *guid;
        uint64_t size;

        if (cairn_dlist_file_info(child, &partition, &guid, &size, NULL))
            refs[used++] = (struct file_ref){guid, position};
    }
    qsort(refs, used, sizeof(*refs), compare_file_refs);
    for (size_t i = 1; i < used; i++) {
        if (strcmp(refs[i].guid, refs[i - 1].guid) == 0)
            (*repeated)[refs[i].position] = true;
    }
    rc = 0;
out:
    free(refs);
    return rc;
}

/*
 * The MESSAGE record reduced to the FILEs this store must write, in their
 * order: a FILE whose GUID the index holds, or an earlier FILE of the
 * record has, is dropped, and so is a NIL (sync_client's unreadable
 * file). A dropped body is never read, so its SHA-1 is not checked: what
 * the log holds under that GUID was checked when it was written. *kept
 * gets an owned list whose FILE nodes borrow record's handles (no
 * release), or NULL when nothing is left to write.
 */
static int
keep_new_bodies(struct cairn_store *store, const struct cairn_dlist *record,
                struct cairn_dlist **kept)
{
    size_t count = cairn_dlist_count(record), position = 0;
    struct cairn_dlist *list = NULL;
    bool *repeated = NULL;
    int rc;

    *kept = NULL;
    if ((rc = find_repeated(record, count, &repeated)) < 0)
        goto out;
    rc = CAIRN_ENOMEM;
    if ((list = cairn_dlist_new_list("MESSAGE")) == NULL)
        goto out;
    if ((rc = store_lookups_begin(store)) < 0)
        goto out;
    for (const struct cairn_dlist *child = cairn_dlist_first(record);
         child && rc == 0; child = cairn_dlist_next(child), position++) {
        const char *partition, *guid;
        uint64_t size;
        void *handle;
        bool held = false;

        if (!cairn_dlist_file_info(child, &partition, &guid, &size, &handle) ||
            repeated[position])
            continue;
        if ((rc = store_message_held(store, guid, &held)) < 0 || held)
            continue;
        rc = cairn_dlist_add_file(list, NULL, partition, guid, size, handle,
                                  NULL, NULL);
    }
    rc = store_lookups_end(store, rc);
    if (rc == 0 && cairn_dlist_count(list) > 0) {
        *kept = list;
        list = NULL;
    }
out:
    cairn_dlist_free(list);
    free(repeated);
    return rc;
}

/* Indexes and writes one record (the body of cairn_store_append). */
static int
append_record(struct cairn_store *store, int64_t ts,
              const struct cairn_dlist *record,
              const struct cairn_store_bodies *bodies)
{
    struct chunk_mark mark;
    bool fresh_chunk;
    uint64_t offset;
    int rc;

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

int
cairn_store_append(struct cairn_store *store, int64_t ts,
                   const struct cairn_dlist *record,
                   const struct cairn_store_bodies *bodies)
{
    struct cairn_dlist *kept = NULL;
    int rc;

    if (store->failed)
        return CAIRN_ESTATE;
    if (!cairn_store_logs_record(cairn_dlist_name(record)))
        return CAIRN_EPROTO;
    if (strcmp(cairn_dlist_name(record), "MESSAGE") == 0) {
        if ((rc = keep_new_bodies(store, record, &kept)) < 0)
            return rc;
        if (kept == NULL)
            return 0; /* every body is held: no line, no chunk */
        record = kept;
    }
    rc = append_record(store, ts, record, bodies);
    cairn_dlist_free(kept);
    return rc;
}
