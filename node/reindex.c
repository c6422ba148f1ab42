/*
 * reindex.c - rebuilding a user's index from the data file alone
 * (Cyrus's backup_reindex, without its weak points): the new index is
 * built beside the old one and renamed over it only when complete; a torn
 * last member is cut off; a timestamp out of order is an error, not an
 * abort that leaves half an index behind; a damaged member in the middle
 * is skipped, not the end of reading.
 */
#include "node_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct reindex {
    struct cairn_store *store;
    uint64_t member_offset;
    int64_t previous_first_ts; /* first ts of the previous chunk */
    int64_t last_ts;
    int64_t until_ts; /* lines after this are left unindexed */
    bool chunk_open;
};

/* Inserts the row of the member being read; its end is set after. */
static int
begin_chunk_row(struct reindex *state, int64_t ts_start)
{
    struct cairn_store *store = state->store;
    sqlite3_stmt *insert = store->stmts[STMT_CHUNK_INSERT];
    int rc;

    if ((rc = sql_bind_int(insert, ":ts_start", ts_start)) < 0 ||
        (rc = sql_bind_int(insert, ":offset", (int64_t)state->member_offset)) <
            0 ||
        (rc = sql_bind_text(insert, ":file_sha1", store->writer.file_sha1)) <
            0) {
        sql_reset(insert);
        return rc;
    }
    if ((rc = sql_run(insert)) < 0)
        return rc;
    store->chunk_id = sqlite3_last_insert_rowid(store->db);
    state->chunk_open = true;
    return 0;
}

static int
reindex_visit(void *ctx, const struct log_line *line)
{
    struct reindex *state = ctx;
    struct cairn_store *store = state->store;
    int rc;

    if (strcmp(line->verb, "APPLY") != 0 || line->ts > state->until_ts)
        return 0;
    if (!state->chunk_open) {
        if (line->ts < state->previous_first_ts)
            return CAIRN_ECORRUPT;
        if ((rc = begin_chunk_row(state, line->ts)) < 0)
            return rc;
        state->previous_first_ts = line->ts;
    } else if (line->ts < state->previous_first_ts) {
        return CAIRN_ECORRUPT;
    }
    if (line->ts > state->last_ts)
        state->last_ts = line->ts;
    if ((rc = store_savepoint(store)) < 0)
        return rc;
    /* Like Cyrus, a line the indexer refuses is skipped, not fatal. */
    if (store_index_record(store, line->record, line->ts, line->offset) < 0)
        store_rollback_to(store);
    else if ((rc = store_release(store)) < 0)
        return rc;
    return 0;
}

static int
end_chunk_row(struct cairn_store *store, const struct chunk_member *member,
              int64_t ts_end)
{
    sqlite3_stmt *end = store->stmts[STMT_CHUNK_END];
    int rc;

    if ((rc = sql_bind_int(end, ":ts_end", ts_end)) < 0 ||
        (rc = sql_bind_int(end, ":length", (int64_t)member->length)) < 0 ||
        (rc = sql_bind_text(end, ":data_sha1", member->data_sha1)) < 0 ||
        (rc = sql_bind_int(end, ":id", store->chunk_id)) < 0) {
        sql_reset(end);
        return rc;
    }
    return sql_run(end);
}

/*
 * Ends the row of a whole member (see struct cairn_reindex_result for
 * what is kept and why). A member with content but no indexed line gets
 * its row here: backupd wrote one for it when the chunk began.
 */
static int
end_member(struct reindex *state, const struct chunk_member *member,
           struct cairn_reindex_result *result)
{
    uint64_t offset = state->member_offset;
    int rc;

    if (member->length == 0 && !state->chunk_open) {
        if (result->empty_members++ == 0)
            result->first_empty = offset;
        return 0;
    }
    if (member->partial_bytes > 0 && result->partial_lines++ == 0) {
        result->first_partial_chunk = offset;
        result->first_partial_line = member->partial_offset;
    }
    if (state->chunk_open)
        result->line_chunks++;
    else if ((rc = begin_chunk_row(state, state->last_ts)) < 0)
        return rc;
    result->chunks++;
    return end_chunk_row(state->store, member, state->last_ts);
}

/* Feeds the compressed bytes [from, to) to the running file SHA-1. */
static int
hash_range(struct cairn_store *store, uint64_t from, uint64_t to)
{
    unsigned char buf[65536];

    while (from < to) {
        size_t want =
            to - from > sizeof(buf) ? sizeof(buf) : (size_t)(to - from);
        ssize_t n = pread(store->fd, buf, want, (off_t)from);

        if (n <= 0)
            return n == 0 ? CAIRN_ECORRUPT : CAIRN_EIO;
        SHA1_Update(&store->writer.file_sha, buf, (size_t)n);
        from += (uint64_t)n;
    }
    return 0;
}

/*
 * The offset of the next whole gzip member after a damaged one: each
 * "1f 8b 08" is tried by inflating from it. size when there is none.
 */
static uint64_t
next_member(int fd, uint64_t from, uint64_t size)
{
    unsigned char buf[65536];

    while (from + 3 <= size) {
        ssize_t n = pread(fd, buf, sizeof(buf), (off_t)from);

        if (n < 3)
            break;
        for (ssize_t i = 0; i + 2 < n; i++) {
            struct chunk_member member;

            if (buf[i] != 0x1f || buf[i + 1] != 0x8b || buf[i + 2] != 0x08)
                continue;
            if (chunk_member_scan(fd, from + (uint64_t)i, &member) == 0)
                return from + (uint64_t)i;
        }
        from += (uint64_t)n - 2;
    }
    return size;
}

/*
 * Indexes every member. A damaged member is skipped and reading resumes
 * at the next whole member (Cyrus's reader gives up there and loses every
 * later chunk, §6.3-2); damage at the end is a torn tail, cut by the
 * caller after *good_end.
 */
static int
reindex_members(struct cairn_store *store, uint64_t size, int64_t until_ts,
                uint64_t *good_end, struct cairn_reindex_result *result)
{
    struct reindex state = {.store = store, .until_ts = until_ts};
    struct chunk_member member;
    uint64_t hashed = 0;
    int rc;

    SHA1_Init(&store->writer.file_sha);
    *good_end = 0;
    while (state.member_offset < size) {
        int64_t first_ts = state.previous_first_ts, last_ts = state.last_ts;

        if ((rc = hash_range(store, hashed, state.member_offset)) < 0)
            return rc;
        hashed = state.member_offset;
        chunk_sha1_state_hex(&store->writer.file_sha, store->writer.file_sha1);
        state.chunk_open = false;
        if ((rc = store_savepoint(store)) < 0)
            return rc;
        rc = log_walk_chunk(store->fd, state.member_offset, 0, NULL,
                            reindex_visit, &state, &member);
        if (rc == CAIRN_ECORRUPT || rc == CAIRN_EPARSE) {
            uint64_t damaged = state.member_offset;

            store_rollback_to(store);
            state.previous_first_ts = first_ts;
            state.last_ts = last_ts;
            state.member_offset = next_member(store->fd, damaged + 1, size);
            /* Damage with no whole member after it is a torn tail. */
            if (state.member_offset < size) {
                if (result->damaged_members++ == 0)
                    result->first_damaged = damaged;
                result->skipped_bytes += state.member_offset - damaged;
            }
            continue;
        }
        if (rc < 0)
            return rc;
        if ((rc = end_member(&state, &member, result)) < 0)
            return rc;
        if ((rc = store_release(store)) < 0 ||
            (rc = hash_range(store, hashed, member.end)) < 0)
            return rc;
        hashed = state.member_offset = member.end;
        *good_end = member.end;
    }
    store->last_ts = state.last_ts;
    return 0;
}

int
cairn_store_reindex(struct cairn_store *store)
{
    struct cairn_reindex_result result;

    return cairn_store_rebuild_index(store, &result);
}

int
cairn_store_rebuild_index(struct cairn_store *store,
                          struct cairn_reindex_result *result)
{
    return cairn_store_rebuild_index_until(store, INT64_MAX, result);
}

int
cairn_store_rebuild_index_until(struct cairn_store *store, int64_t until_ts,
                                struct cairn_reindex_result *result)
{
    char *fresh = NULL;
    uint64_t good_end = 0;
    struct stat st;
    int rc;

    memset(result, 0, sizeof(*result));
    if (store->in_chunk)
        return CAIRN_ESTATE;
    if (fstat(store->fd, &st) < 0)
        return CAIRN_EIO;
    if (asprintf(&fresh, "%s.new.%ld", store->index_path, (long)getpid()) < 0)
        return CAIRN_ENOMEM;
    store_close_index(store);
    unlink(fresh);
    if ((rc = store_open_index_at(store, fresh)) < 0)
        goto out;
    if ((rc = sql_run(store->stmts[STMT_BEGIN])) < 0)
        goto out;
    rc = reindex_members(store, (uint64_t)st.st_size, until_ts, &good_end,
                         result);
    result->cut_bytes = (uint64_t)st.st_size - good_end;
    store->writer.file_end = good_end;
    if (rc == 0 && (rc = store_save_tail(store, store->chunk_id)) == 0)
        rc = sql_run(store->stmts[STMT_COMMIT]);
    if (rc < 0) {
        sql_run(store->stmts[STMT_ROLLBACK]);
        goto out;
    }
    store_close_index(store);
    /* The data must be whole and durable before the index names it. */
    if ((uint64_t)st.st_size > good_end &&
        ftruncate(store->fd, (off_t)good_end) < 0) {
        rc = CAIRN_EIO;
        goto out;
    }
    if (fsync(store->fd) < 0 || rename(fresh, store->index_path) < 0) {
        rc = CAIRN_EIO;
        goto out;
    }
    rc = cairn_fsync_parent_dir(store->index_path);
out:
    store_close_index(store);
    if (rc < 0)
        unlink(fresh);
    free(fresh);
    store->chunk_id = 0;
    if (rc == 0)
        return store_reopen_index(store, true);
    /* Never recover against an index that failed to build. */
    store_reopen_index(store, false);
    return rc;
}

uint64_t
cairn_store_file_end(const struct cairn_store *store)
{
    return store->writer.file_end;
}

/* The members from store->writer.file_end to size, each whole or fail. */
static int
index_members_after(struct cairn_store *store, uint64_t size,
                    struct cairn_reindex_result *result)
{
    struct reindex state = {.store = store,
                            .member_offset = store->writer.file_end,
                            .last_ts = store->last_ts,
                            .until_ts = INT64_MAX};
    struct chunk_member member;
    int rc;

    while (state.member_offset < size) {
        chunk_sha1_state_hex(&store->writer.file_sha, store->writer.file_sha1);
        state.chunk_open = false;
        if ((rc = log_walk_chunk(store->fd, state.member_offset, 0, NULL,
                                 reindex_visit, &state, &member)) < 0)
            return rc == CAIRN_EPARSE ? CAIRN_ECORRUPT : rc;
        if (member.end > size)
            return CAIRN_ECORRUPT;
        if ((rc = end_member(&state, &member, result)) < 0 ||
            (rc = hash_range(store, state.member_offset, member.end)) < 0)
            return rc;
        state.member_offset = member.end;
    }
    if (result->partial_lines > 0)
        return CAIRN_ECORRUPT;
    store->last_ts = state.last_ts;
    store->writer.file_end = size;
    return 0;
}

int
cairn_store_index_appended(struct cairn_store *store,
                           struct cairn_reindex_result *result)
{
    uint64_t committed = store->writer.file_end;
    SHA_CTX sha = store->writer.file_sha;
    int64_t last_ts = store->last_ts;
    struct stat st;
    int rc;

    memset(result, 0, sizeof(*result));
    if (store->in_chunk)
        return CAIRN_ESTATE;
    if (fstat(store->fd, &st) < 0)
        return CAIRN_EIO;
    if ((uint64_t)st.st_size <= committed)
        return 0;
    if ((rc = sql_run(store->stmts[STMT_BEGIN])) < 0)
        return rc;
    rc = index_members_after(store, (uint64_t)st.st_size, result);
    /* The data must be durable before the index names it. */
    if (rc == 0 && fsync(store->fd) < 0)
        rc = CAIRN_EIO;
    if (rc == 0 && store->chunk_id != 0)
        rc = store_save_tail(store, store->chunk_id);
    if (rc == 0)
        rc = sql_run(store->stmts[STMT_COMMIT]);
    store->chunk_id = 0;
    if (rc == 0)
        return 0;
    sql_run(store->stmts[STMT_ROLLBACK]);
    store->writer.file_end = committed;
    store->writer.file_sha = sha;
    store->last_ts = last_ts;
    if (ftruncate(store->fd, (off_t)committed) < 0 || fsync(store->fd) < 0)
        return CAIRN_EIO;
    return rc;
}
