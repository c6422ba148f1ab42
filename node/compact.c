/*
 * compact.c - rewriting a user's backup with only what the policy keeps
 * (Cyrus's lcb_compact.c, with its defects fixed): live chunks plus the
 * chunks holding deletions, message bodies still referenced, mailbox
 * records whose latest state is in the chunk; coalescing small chunks and
 * splitting big ones. The new pair is written beside the old one, fsynced
 * and verified, then switched in under a marker file, so a crash at any
 * point leaves either the old pair or a new pair that open() completes.
 * Bodies are staged in a scratch file, never held in memory.
 */
#include "daemon.h"
#include "node_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct staged_body {
    uint64_t offset; /* in the scratch file */
    uint64_t size;
};

struct compact {
    struct cairn_store *old;
    struct cairn_store *fresh;
    const struct cairn_compact_policy *policy;
    int64_t since;
    int64_t line_ts;  /* of the input line being copied */
    int64_t chunk_id; /* input chunk being copied */
    uint64_t chunk_length;
    int scratch_fd;
    uint64_t scratch_end;
    struct staged_body *current; /* body being staged */
    bool keep_current;
};

struct plan_chunk {
    int64_t id;
    uint64_t offset, length;
};

/* --- deciding --------------------------------------------------------- */

static bool
want_combine(const struct cairn_compact_policy *policy, uint64_t length,
             const struct plan_chunk *next)
{
    if (next == NULL)
        return false;
    if (length >= policy->min_chunk && next->length >= policy->min_chunk)
        return false;
    if (policy->max_chunk == 0)
        return true;
    return length + next->length <= policy->max_chunk;
}

static bool
want_split(const struct cairn_compact_policy *policy, uint64_t length,
           uint64_t written)
{
    if (policy->max_chunk == 0 || written < policy->max_chunk)
        return false;
    if (length < policy->max_chunk + policy->min_chunk)
        return false;
    return length - written > policy->min_chunk;
}

/* Loads the chunks STMT_CHUNK_ALL (since < -1... ) or STMT_CHUNK_LIVE. */
static int
load_plan(struct cairn_store *store, bool live, int64_t since,
          struct plan_chunk **out, size_t *count)
{
    sqlite3_stmt *stmt = store->stmts[live ? STMT_CHUNK_LIVE : STMT_CHUNK_ALL];
    struct plan_chunk *list = NULL;
    size_t used = 0, cap = 0;
    int rc = 0, step;

    if (live && (rc = sql_bind_int(stmt, ":since", since)) < 0)
        goto out;
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (used == cap) {
            struct plan_chunk *grown;

            cap = cap ? cap * 2 : 16;
            if ((grown = realloc(list, cap * sizeof(*list))) == NULL) {
                rc = CAIRN_ENOMEM;
                goto out;
            }
            list = grown;
        }
        list[used].id = sqlite3_column_int64(stmt, 0);
        list[used].offset = (uint64_t)sqlite3_column_int64(stmt, 3);
        list[used].length = (uint64_t)sqlite3_column_int64(stmt, 4);
        used++;
    }
    if (step != SQLITE_DONE)
        rc = CAIRN_EDB;
out:
    sql_reset(stmt);
    if (rc < 0) {
        free(list);
        return rc;
    }
    *out = list;
    *count = used;
    return 0;
}

static uint64_t
bytes_of(const struct plan_chunk *chunks, size_t count)
{
    uint64_t total = 0;

    for (size_t i = 0; i < count; i++)
        total += chunks[i].length;
    return total;
}

/*
 * Past this many chunks smaller than min_chunk, merging them is worth a
 * rewrite whatever work_percent says: a user synced every few seconds
 * gains a small chunk per pass, and a big log would otherwise collect
 * them for months before they make up its work_percent.
 */
#define SMALL_CHUNKS_ENOUGH 256

/*
 * Cyrus's rule (backup_compact_work_threshold): enough chunks plainly need
 * work, dead or to be combined or split. cairn's work_percent adds: and
 * they hold that share of the log's bytes, so a big log is not rewritten
 * for one small dead chunk. A chunk big enough already counts no bytes
 * when small ones are merged into it (only theirs are the work).
 */
static bool
compaction_needed(const struct cairn_compact_policy *policy,
                  const struct plan_chunk *all, size_t all_count,
                  const struct plan_chunk *keep, size_t keep_count)
{
    unsigned threshold = policy->work_threshold ? policy->work_threshold : 1;
    unsigned work = (unsigned)(all_count - keep_count), small = 0;
    uint64_t total = bytes_of(all, all_count);
    uint64_t work_bytes = total - bytes_of(keep, keep_count);
    bool sizes_apply = !(policy->min_chunk && policy->max_chunk &&
                         policy->min_chunk >= policy->max_chunk);

    /* contradictory sizes: only dead chunks count */
    for (size_t i = 0; sizes_apply && i < keep_count; i++) {
        const struct plan_chunk *next =
            i + 1 < keep_count ? &keep[i + 1] : NULL;
        const struct plan_chunk *prev = i > 0 ? &keep[i - 1] : NULL;
        bool combine = want_combine(policy, keep[i].length, next) ||
                       (prev && want_combine(policy, prev->length, &keep[i]));

        if (combine && keep[i].length < policy->min_chunk) {
            work++;
            small++;
            work_bytes += keep[i].length;
        } else if (want_combine(policy, keep[i].length, next)) {
            work++;
        } else if (want_split(policy, keep[i].length, policy->max_chunk)) {
            work++;
            work_bytes += keep[i].length;
        }
    }
    if (work < threshold)
        return false;
    if (small > SMALL_CHUNKS_ENOUGH)
        return true;
    return policy->work_percent == 0 ||
           work_bytes * 100 >= (uint64_t)policy->work_percent * total;
}

/* --- what to keep ------------------------------------------------------- */

/*
 * Whether the old index has a row for key (bound to key_name) in the
 * statement id; :chunk_id, :since and :offset are bound to the chunk
 * being copied, the retention bound and offset where the statement names
 * them. Leaves the row stepped for the caller to read when out is given.
 */
static bool
state_row(struct compact *c, enum stmt_id id, const char *key_name,
          const char *key, int64_t offset, sqlite3_stmt **out)
{
    sqlite3_stmt *stmt = c->old->stmts[id];
    bool found = false;

    if (key == NULL || sql_bind_text(stmt, key_name, key) < 0)
        goto out;
    if (sqlite3_bind_parameter_index(stmt, ":chunk_id") > 0 &&
        sql_bind_int(stmt, ":chunk_id", c->chunk_id) < 0)
        goto out;
    if (sqlite3_bind_parameter_index(stmt, ":since") > 0 &&
        sql_bind_int(stmt, ":since", c->since) < 0)
        goto out;
    if (sqlite3_bind_parameter_index(stmt, ":offset") > 0 &&
        sql_bind_int(stmt, ":offset", offset) < 0)
        goto out;
    if (sqlite3_bind_parameter_index(stmt, ":ts") > 0 &&
        sql_bind_int(stmt, ":ts", c->line_ts) < 0)
        goto out;
    found = sqlite3_step(stmt) == SQLITE_ROW;
out:
    if (out != NULL && found)
        *out = stmt;
    else
        sql_reset(stmt);
    return found;
}

static bool
message_kept(struct compact *c, const char *guid)
{
    return state_row(c, STMT_MESSAGE_LIVE, ":guid", guid, 0, NULL);
}

/*
 * Whether record is the one the live row of (uniqueid, its GUID) was last
 * written from, in this chunk: the same UID and values. An older state of
 * the row, or another UID holding the same GUID (the index keeps one per
 * mailbox), would give the compacted chunk a RECORD that its row does not
 * match, or two rows one UID: Cyrus's verify fails both.
 * Also kept: the RECORD that first flagged a live row \Expunged (the row
 * keeps that time), so that the compacted file, indexed again from its
 * lines alone (a transfer, a rebuild), gives the row the same time.
 */
static bool
flagged_expunged(const struct cairn_dlist *record)
{
    const struct cairn_dlist *flags = cairn_dlist_get(record, "FLAGS");

    for (const struct cairn_dlist *flag = cairn_dlist_first(flags); flag;
         flag = cairn_dlist_next(flag)) {
        const char *name = cairn_dlist_value(flag, NULL);

        if (name && strcmp(name, "\\Expunged") == 0)
            return true;
    }
    return false;
}

static bool
record_kept(struct compact *c, const char *uniqueid,
            const struct cairn_dlist *record)
{
    sqlite3_stmt *stmt = c->old->stmts[STMT_RECORD_STATE];
    uint64_t uid, modseq, last_updated, internaldate;
    const char *guid = NULL;
    bool kept;

    if (!cairn_dlist_get_atom(record, "GUID", &guid) || guid == NULL ||
        !cairn_dlist_get_num64(record, "UID", &uid) ||
        !cairn_dlist_get_num64(record, "MODSEQ", &modseq) ||
        !cairn_dlist_get_num64(record, "LAST_UPDATED", &last_updated) ||
        !cairn_dlist_get_num64(record, "INTERNALDATE", &internaldate))
        return false;
    if (sql_bind_text(stmt, ":guid", guid) < 0)
        return false;
    kept = state_row(c, STMT_RECORD_STATE, ":uniqueid", uniqueid, 0, &stmt) &&
           (uint64_t)sqlite3_column_int64(stmt, 0) == uid &&
           (uint64_t)sqlite3_column_int64(stmt, 1) == modseq &&
           (uint64_t)sqlite3_column_int64(stmt, 2) == last_updated &&
           (uint64_t)sqlite3_column_int64(stmt, 3) == internaldate;
    sql_reset(stmt);
    if (kept || !flagged_expunged(record))
        return kept;
    stmt = c->old->stmts[STMT_RECORD_EXPUNGED_AT];
    return sql_bind_text(stmt, ":guid", guid) == 0 &&
           state_row(c, STMT_RECORD_EXPUNGED_AT, ":uniqueid", uniqueid, 0,
                     NULL);
}

static bool
mailbox_kept(struct compact *c, const char *uniqueid)
{
    return state_row(c, STMT_MAILBOX_STATE, ":uniqueid", uniqueid, 0, NULL);
}

/*
 * The lines other than MESSAGE and MAILBOX: kept while what they say is
 * the latest live state (SEEN, SUB, SIEVE) or a deletion still inside
 * retention (UNSUB, UNSIEVE, UNMAILBOX, EXPUNGE); RENAME always, since it
 * carries a kept mailbox's name across lines that may both be kept.
 */
static bool
other_line_kept(struct compact *c, const struct log_line *line)
{
    const struct cairn_dlist *record = line->record;
    const char *name = cairn_dlist_name(record), *key = NULL;

    if (strcmp(name, "SUB") == 0 || strcmp(name, "UNSUB") == 0) {
        cairn_dlist_get_atom(record, "MBOXNAME", &key);
        return state_row(c, STMT_SUB_STATE, ":mboxname", key, 0, NULL);
    }
    if (strcmp(name, "SEEN") == 0) {
        cairn_dlist_get_atom(record, "UNIQUEID", &key);
        return state_row(c, STMT_SEEN_STATE, ":uniqueid", key, 0, NULL);
    }
    if (strcmp(name, "SIEVE") == 0) {
        cairn_dlist_get_atom(record, "FILENAME", &key);
        return state_row(c, STMT_SIEVE_STATE, ":filename", key,
                         (int64_t)line->offset, NULL);
    }
    if (strcmp(name, "UNSIEVE") == 0) {
        cairn_dlist_get_atom(record, "FILENAME", &key);
        return state_row(c, STMT_SIEVE_DELETION, ":filename", key, 0, NULL);
    }
    if (strcmp(name, "UNMAILBOX") == 0) {
        cairn_dlist_as_atom(record, &key);
        return state_row(c, STMT_MAILBOX_DELETION, ":mboxname", key, 0, NULL);
    }
    if (strcmp(name, "EXPUNGE") == 0) {
        cairn_dlist_get_atom(record, "UNIQUEID", &key);
        return state_row(c, STMT_MAILBOX_KEPT, ":uniqueid", key, 0, NULL);
    }
    return strcmp(name, "RENAME") == 0;
}

/* --- staging bodies ----------------------------------------------------- */

static int
stage_begin(void *ctx, const char *partition, const char *guid, uint64_t size,
            void **handle)
{
    struct compact *c = ctx;
    struct staged_body *body = NULL;

    *handle = NULL;
    c->keep_current = message_kept(c, guid);
    c->current = NULL;
    if (!c->keep_current)
        return 0;
    if ((body = calloc(1, sizeof(*body))) == NULL)
        return CAIRN_ENOMEM;
    body->offset = c->scratch_end;
    body->size = size;
    c->current = body;
    *handle = body;
    return 0;
}

static int
stage_data(void *ctx, void *handle, const void *bytes, size_t len)
{
    struct compact *c = ctx;
    int rc;

    if (handle == NULL)
        return 0;
    if ((rc = cairn_write_all(c->scratch_fd, bytes, len)) < 0)
        return rc;
    c->scratch_end += len;
    return 0;
}

static int
stage_end(void *ctx, void *handle)
{
    return 0;
}

static void
stage_release(void *ctx, void *handle)
{
    free(handle);
}

static int
read_staged(void *ctx, const struct cairn_dlist *file,
            int (*put)(void *put_ctx, const void *data, size_t len),
            void *put_ctx)
{
    struct compact *c = ctx;
    const char *partition, *guid;
    struct staged_body *body;
    unsigned char buf[65536];
    uint64_t size, at;
    void *handle;
    int rc;

    if (!cairn_dlist_file_info(file, &partition, &guid, &size, &handle) ||
        handle == NULL)
        return CAIRN_EINVAL;
    body = handle;
    for (at = 0; at < body->size;) {
        size_t want = body->size - at > sizeof(buf) ? sizeof(buf)
                                                    : (size_t)(body->size - at);
        ssize_t n = pread(c->scratch_fd, buf, want, (off_t)(body->offset + at));

        if (n <= 0)
            return CAIRN_EIO;
        if ((rc = put(put_ctx, buf, (size_t)n)) < 0)
            return rc;
        at += (uint64_t)n;
    }
    return 0;
}

/* --- filtering lines ---------------------------------------------------- */

/* A MESSAGE line with only the kept bodies; NULL when none is kept. */
static int
filter_message(struct compact *c, const struct cairn_dlist *line,
               struct cairn_dlist **out)
{
    struct cairn_dlist *kept = cairn_dlist_new_list("MESSAGE");
    int rc = 0;

    *out = NULL;
    if (kept == NULL)
        return CAIRN_ENOMEM;
    for (const struct cairn_dlist *file = cairn_dlist_first(line); file;
         file = cairn_dlist_next(file)) {
        const char *partition, *guid;
        uint64_t size;
        void *handle;
        struct staged_body *copy;

        if (!cairn_dlist_file_info(file, &partition, &guid, &size, &handle) ||
            handle == NULL)
            continue;
        /* The new tree owns a copy: the parsed line frees the original. */
        if ((copy = malloc(sizeof(*copy))) == NULL) {
            rc = CAIRN_ENOMEM;
            break;
        }
        *copy = *(struct staged_body *)handle;
        if ((rc = cairn_dlist_add_file(kept, NULL, partition, guid, size, copy,
                                       stage_release, NULL)) < 0) {
            free(copy);
            break;
        }
    }
    if (rc == 0 && cairn_dlist_count(kept) > 0) {
        *out = kept;
        return 0;
    }
    cairn_dlist_free(kept);
    return rc;
}

/*
 * A MAILBOX line with only the records whose latest live state is in this
 * chunk; kept whole-less when none is left unless the mailbox's own latest
 * state is here. Printed and re-parsed, since trees cannot be copied.
 */
static int
filter_mailbox(struct compact *c, const struct cairn_dlist *line,
               struct cairn_dlist **out)
{
    const char *uniqueid = NULL;
    struct cairn_buf text;
    size_t records = 0;
    int rc = 0;

    *out = NULL;
    if (!cairn_dlist_get_atom(line, "UNIQUEID", &uniqueid) || uniqueid == NULL)
        return 0;
    cairn_buf_init(&text, RECORD_LINE_MAX);
    rc = cairn_buf_append_str(&text, "MAILBOX %(");
    for (const struct cairn_dlist *field = cairn_dlist_first(line);
         field && rc == 0; field = cairn_dlist_next(field)) {
        if (field != cairn_dlist_first(line))
            rc = cairn_buf_append_str(&text, " ");
        if (rc == 0 && strcmp(cairn_dlist_name(field), "RECORD") != 0) {
            rc = cairn_dlist_print(field, true, &text, NULL);
            continue;
        }
        if (rc == 0)
            rc = cairn_buf_append_str(&text, "RECORD (");
        for (const struct cairn_dlist *r = cairn_dlist_first(field);
             r && rc == 0; r = cairn_dlist_next(r)) {
            if (!record_kept(c, uniqueid, r))
                continue;
            if (records++ > 0)
                rc = cairn_buf_append_str(&text, " ");
            if (rc == 0)
                rc = cairn_dlist_print(r, false, &text, NULL);
        }
        if (rc == 0)
            rc = cairn_buf_append_str(&text, ")");
    }
    if (rc == 0)
        rc = cairn_buf_append_str(&text, ")");
    if (rc == 0 && (records > 0 || mailbox_kept(c, uniqueid)))
        rc = cairn_dlist_parse(text.data, text.len, CAIRN_DLIST_PARSE_KEY, NULL,
                               NULL, out, NULL, 0);
    cairn_buf_release(&text);
    return rc;
}

static int
copy_line(void *ctx, const struct log_line *line)
{
    struct compact *c = ctx;
    const char *name = cairn_dlist_name(line->record);
    struct cairn_dlist *filtered = NULL;
    const struct cairn_dlist *record = line->record;
    struct cairn_store_bodies bodies = {read_staged, c};
    int rc = 0;

    if (strcmp(line->verb, "APPLY") != 0 || strcmp(name, "RESERVE") == 0)
        goto out;
    c->line_ts = line->ts;
    if (strcmp(name, "MESSAGE") != 0 && strcmp(name, "MAILBOX") != 0 &&
        !other_line_kept(c, line))
        goto out;
    if (strcmp(name, "MESSAGE") == 0) {
        if ((rc = filter_message(c, line->record, &filtered)) < 0 ||
            filtered == NULL)
            goto out;
        record = filtered;
    } else if (strcmp(name, "MAILBOX") == 0) {
        if ((rc = filter_mailbox(c, line->record, &filtered)) < 0 ||
            filtered == NULL)
            goto out;
        record = filtered;
    }
    rc = cairn_store_append(c->fresh, line->ts, record, &bodies);
    /* A line Cyrus's indexer refuses is not worth keeping; an EXPUNGE of
     * a mailbox none of whose lines was kept has nothing left to mark. */
    if (rc == CAIRN_EPROTO || rc == CAIRN_ENOENT)
        rc = 0;
    if (rc == 0 &&
        want_split(c->policy, c->chunk_length, line->offset + line->length))
        rc = cairn_store_commit(c->fresh);
out:
    cairn_dlist_free(filtered);
    /* Staged bodies are only needed until their line is written. */
    if (ftruncate(c->scratch_fd, 0) == 0 &&
        lseek(c->scratch_fd, 0, SEEK_SET) == 0)
        c->scratch_end = 0;
    return rc;
}

/* --- writing and switching ---------------------------------------------- */

/*
 * Gives every kept record the expunge time it had (STMT_RECORDS_EXPUNGED),
 * in one transaction of the new index.
 */
static int
carry_expunged(struct compact *c)
{
    sqlite3_stmt *old = c->old->stmts[STMT_RECORDS_EXPUNGED];
    sqlite3_stmt *update = c->fresh->stmts[STMT_RECORD_SET_EXPUNGED];
    int rc, step;

    if ((rc = sql_bind_int(old, ":since", c->since)) < 0 ||
        (rc = sql_run(c->fresh->stmts[STMT_BEGIN])) < 0)
        goto out;
    while (rc == 0 && (step = sqlite3_step(old)) == SQLITE_ROW) {
        const struct sql_value values[] = {
            SQL_TEXT_VALUE(":uniqueid",
                           (const char *)sqlite3_column_text(old, 0)),
            SQL_TEXT_VALUE(":guid", (const char *)sqlite3_column_text(old, 1)),
            SQL_INT_VALUE(":expunged", sqlite3_column_int64(old, 2)),
        };

        rc = sql_exec(update, values, sizeof(values) / sizeof(values[0]));
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = CAIRN_EDB;
    if (rc == 0)
        rc = sql_run(c->fresh->stmts[STMT_COMMIT]);
    else
        sql_run(c->fresh->stmts[STMT_ROLLBACK]);
out:
    sql_reset(old);
    return rc;
}

static int
copy_chunks(struct compact *c, const struct plan_chunk *keep, size_t count)
{
    struct cairn_dlist_file_sink sink = {stage_begin, stage_data, stage_end,
                                         stage_release, c};
    uint64_t sequence = 0;
    int rc = 0;

    for (size_t i = 0; i < count && rc == 0; i++) {
        const struct plan_chunk *next = i + 1 < count ? &keep[i + 1] : NULL;

        c->chunk_id = keep[i].id;
        c->chunk_length = keep[i].length;
        rc = log_walk_chunk(c->old->fd, keep[i].offset, 0, &sink, copy_line, c,
                            NULL);
        if (rc == 0 && !want_combine(c->policy, keep[i].length, next))
            rc = cairn_store_commit(c->fresh);
    }
    if (rc == 0)
        rc = carry_expunged(c);
    /* cairn-node's last committed sequence goes along */
    if (rc == 0 && cairn_store_get_sequence(c->old, &sequence) == 0) {
        const struct sql_value value = SQL_INT_VALUE(":sequence", sequence);

        rc = sql_exec(c->fresh->stmts[STMT_SEQUENCE_SET], &value, 1);
    }
    if (rc == 0)
        rc = cairn_store_commit(c->fresh);
    return rc;
}

static int
file_size(int fd, uint64_t *size)
{
    struct stat st;

    if (fstat(fd, &st) < 0)
        return CAIRN_EIO;
    *size = (uint64_t)st.st_size;
    return 0;
}

/*
 * Renames the verified new pair over the old one. The marker tells a
 * later open that a switch was under way (store_finish_switch).
 */
static int
switch_pair(const char *data_path, const char *fresh_path)
{
    char *marker = NULL, *fresh_index = NULL, *index = NULL;
    int fd, rc = CAIRN_ENOMEM;

    if (asprintf(&marker, "%s.switching", data_path) < 0 ||
        asprintf(&fresh_index, "%s.index", fresh_path) < 0 ||
        asprintf(&index, "%s.index", data_path) < 0)
        goto out;
    rc = CAIRN_EIO;
    if ((fd = open(marker, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                   cairn_created_file_mode())) < 0)
        goto out;
    close(fd);
    if ((rc = cairn_fsync_parent_dir(marker)) < 0)
        goto out;
    rc = CAIRN_EIO;
    if (rename(fresh_path, data_path) < 0 || rename(fresh_index, index) < 0)
        goto out;
    if ((rc = cairn_fsync_parent_dir(data_path)) < 0)
        goto out;
    unlink(marker);
    rc = cairn_fsync_parent_dir(data_path);
out:
    free(marker);
    free(fresh_index);
    free(index);
    return rc;
}

static int
open_fresh(struct compact *c, const char *fresh_path, const char *scratch)
{
    char *fresh_index = NULL;
    int rc;

    /* We hold the user's lock: anything left here is stale. */
    if (asprintf(&fresh_index, "%s.index", fresh_path) < 0)
        return CAIRN_ENOMEM;
    unlink(fresh_path);
    unlink(fresh_index);
    free(fresh_index);
    c->scratch_fd = open(scratch, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
                         cairn_created_file_mode());
    if (c->scratch_fd < 0)
        return CAIRN_EIO;
    unlink(scratch);
    if ((rc = cairn_store_open(fresh_path, CAIRN_STORE_CREATE, &c->fresh)) < 0)
        return rc;
    c->fresh->defer_sync = true;
    c->fresh->writer.level = c->old->writer.level;
    return 0;
}

/* Writes, syncs and verifies the new pair; fills the "after" figures. */
static int
write_fresh(struct compact *c, const struct plan_chunk *keep, size_t count,
            struct cairn_compact_result *result)
{
    struct plan_chunk *written = NULL;
    size_t written_count = 0;
    int rc;

    if ((rc = copy_chunks(c, keep, count)) < 0)
        return rc;
    if (fsync(c->fresh->fd) < 0)
        return CAIRN_EIO;
    if ((rc = cairn_store_verify(c->fresh, CAIRN_VERIFY_FULL, result->error,
                                 sizeof(result->error))) < 0)
        return rc;
    if ((rc = load_plan(c->fresh, false, 0, &written, &written_count)) < 0)
        return rc;
    free(written);
    result->chunks_after = written_count;
    return file_size(c->fresh->fd, &result->bytes_after);
}

int
cairn_store_compact(struct cairn_store *store,
                    const struct cairn_compact_policy *policy,
                    struct cairn_compact_result *result)
{
    struct compact c = {.old = store, .policy = policy, .scratch_fd = -1};
    struct plan_chunk *all = NULL, *keep = NULL;
    size_t all_count = 0, keep_count = 0;
    char *fresh_path = NULL, *scratch = NULL;
    int rc;

    memset(result, 0, sizeof(*result));
    if (store->in_chunk || store->failed)
        return CAIRN_ESTATE;
    c.since = policy->retention_seconds > 0
                  ? policy->now - policy->retention_seconds
                  : -1;
    if ((rc = load_plan(store, false, 0, &all, &all_count)) < 0 ||
        (rc = load_plan(store, true, c.since, &keep, &keep_count)) < 0 ||
        (rc = file_size(store->fd, &result->bytes_before)) < 0)
        goto out;
    result->chunks_before = result->chunks_after = all_count;
    result->bytes_after = result->bytes_before;
    if (!compaction_needed(policy, all, all_count, keep, keep_count))
        goto out; /* nothing to do is success */
    rc = CAIRN_ENOMEM;
    if (asprintf(&fresh_path, "%s.compact", store->data_path) < 0 ||
        asprintf(&scratch, "%s.scratch", store->data_path) < 0)
        goto out;
    if ((rc = open_fresh(&c, fresh_path, scratch)) < 0 ||
        (rc = write_fresh(&c, keep, keep_count, result)) < 0)
        goto out;
    cairn_store_close(c.fresh);
    c.fresh = NULL;
    if ((rc = switch_pair(store->data_path, fresh_path)) < 0)
        goto out;
    result->compacted = true;
    rc = store_reopen_data(store);
out:
    if (c.fresh != NULL) {
        cairn_store_close(c.fresh);
        if (fresh_path) {
            char *fresh_index = NULL;

            unlink(fresh_path);
            if (asprintf(&fresh_index, "%s.index", fresh_path) >= 0)
                unlink(fresh_index);
            free(fresh_index);
        }
    }
    if (c.scratch_fd >= 0)
        close(c.scratch_fd);
    free(fresh_path);
    free(scratch);
    free(all);
    free(keep);
    return rc;
}
