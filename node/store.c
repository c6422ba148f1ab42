/*
 * store.c - opening a user's backup (lock, index, recovery), and the chunk
 * lifecycle: begin on the first append, commit (end member, fsync data,
 * commit index) or abort (truncate, roll back).
 */
#include "daemon.h"
#include "node_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Cyrus's lock: exclusive fcntl write lock over the whole data file. */
static int
lock_file(int fd, bool block)
{
    struct flock lock = {.l_type = F_WRLCK, .l_whence = SEEK_SET};

    for (;;) {
        if (fcntl(fd, block ? F_OFD_SETLKW : F_OFD_SETLK, &lock) == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EACCES)
            return CAIRN_ELOCKED;
        return CAIRN_EIO;
    }
}

/* Opens and locks, retrying when compaction replaced the file meanwhile. */
static int
open_locked(const char *path, unsigned flags, int *fd_out)
{
    int rc = 0;

    for (;;) {
        struct stat opened, current;
        int open_flags = O_RDWR | O_APPEND | O_CLOEXEC;
        int fd;

        if (flags & CAIRN_STORE_CREATE)
            open_flags |= O_CREAT;
        if ((fd = open(path, open_flags, cairn_created_file_mode())) < 0)
            return errno == ENOENT ? CAIRN_ENOENT : CAIRN_EIO;
        if ((rc = lock_file(fd, flags & CAIRN_STORE_BLOCK)) < 0) {
            close(fd);
            return rc;
        }
        if (fstat(fd, &opened) == 0 && stat(path, &current) == 0 &&
            opened.st_ino == current.st_ino) {
            /* A file we may just have created must survive a crash. */
            if (opened.st_size == 0 && (flags & CAIRN_STORE_CREATE) &&
                (rc = cairn_fsync_parent_dir(path)) < 0) {
                close(fd);
                return rc;
            }
            *fd_out = fd;
            return 0;
        }
        close(fd);
    }
}

int
store_save_tail(struct cairn_store *store, int64_t chunk_id)
{
    sqlite3_stmt *stmt = store->stmts[STMT_TAIL_SET];
    int rc;

    if ((rc = sql_bind_int(stmt, ":chunk_id", chunk_id)) < 0 ||
        (rc = sql_bind_int(stmt, ":end_offset",
                           (int64_t)store->writer.file_end)) < 0 ||
        (rc = sql_bind_int(stmt, ":last_ts", store->last_ts)) < 0 ||
        (rc = sql_bind_blob(stmt, ":file_sha", &store->writer.file_sha,
                            sizeof(SHA_CTX))) < 0) {
        sql_reset(stmt);
        return rc;
    }
    return sql_run(stmt);
}

int
store_hash_prefix(struct cairn_store *store, uint64_t length)
{
    unsigned char *buf = malloc(CHUNK_IN_SIZE);
    uint64_t at = 0;
    int rc = 0;

    if (buf == NULL)
        return CAIRN_ENOMEM;
    SHA1_Init(&store->writer.file_sha);
    while (at < length) {
        size_t want =
            length - at > CHUNK_IN_SIZE ? CHUNK_IN_SIZE : (size_t)(length - at);
        ssize_t n = pread(store->fd, buf, want, (off_t)at);

        if (n <= 0) {
            rc = n == 0 ? CAIRN_ECORRUPT : CAIRN_EIO;
            break;
        }
        SHA1_Update(&store->writer.file_sha, buf, (size_t)n);
        at += (uint64_t)n;
    }
    free(buf);
    return rc;
}

/*
 * Works out where the committed data ends and the file SHA-1 state there:
 * from cairn_tail when it describes the newest chunk, else (a file last
 * written by Cyrus, or an index Cyrus rebuilt) by inflating the newest
 * chunk and hashing the file once, and saving the result.
 */
static int
load_tail(struct cairn_store *store)
{
    sqlite3_stmt *latest = store->stmts[STMT_CHUNK_LATEST];
    sqlite3_stmt *tail = store->stmts[STMT_TAIL_GET];
    int64_t chunk_id = 0, chunk_offset = 0, chunk_length = 0;
    char data_sha1[41] = "";
    struct chunk_member member;
    int rc = 0;

    if (sqlite3_step(latest) == SQLITE_ROW) {
        chunk_id = sqlite3_column_int64(latest, 0);
        store->last_ts = sqlite3_column_int64(latest, 2);
        chunk_offset = sqlite3_column_int64(latest, 3);
        chunk_length = sqlite3_column_int64(latest, 4);
        if (sqlite3_column_text(latest, 6))
            snprintf(data_sha1, sizeof(data_sha1), "%s",
                     (const char *)sqlite3_column_text(latest, 6));
    }
    sql_reset(latest);
    if (chunk_id == 0) {
        store->writer.file_end = 0;
        SHA1_Init(&store->writer.file_sha);
        return 0;
    }
    if (sqlite3_step(tail) == SQLITE_ROW &&
        sqlite3_column_int64(tail, 0) == chunk_id &&
        sqlite3_column_bytes(tail, 3) == (int)sizeof(SHA_CTX)) {
        store->writer.file_end = (uint64_t)sqlite3_column_int64(tail, 1);
        store->last_ts = sqlite3_column_int64(tail, 2);
        memcpy(&store->writer.file_sha, sqlite3_column_blob(tail, 3),
               sizeof(SHA_CTX));
        sql_reset(tail);
        return 0;
    }
    sql_reset(tail);
    if ((rc = chunk_member_scan(store->fd, (uint64_t)chunk_offset, &member)) <
        0)
        return rc;
    if ((int64_t)member.length != chunk_length ||
        strcmp(member.data_sha1, data_sha1) != 0)
        return CAIRN_ECORRUPT;
    store->writer.file_end = member.end;
    if ((rc = store_hash_prefix(store, member.end)) < 0)
        return rc;
    return store_save_tail(store, chunk_id);
}

/* Cuts a torn tail (bytes after the last committed chunk) off the file. */
static int
recover_tail(struct cairn_store *store)
{
    struct stat st;

    if (fstat(store->fd, &st) < 0)
        return CAIRN_EIO;
    if ((uint64_t)st.st_size < store->writer.file_end)
        return CAIRN_ECORRUPT; /* committed data is missing */
    if ((uint64_t)st.st_size == store->writer.file_end)
        return 0;
    if (ftruncate(store->fd, (off_t)store->writer.file_end) < 0 ||
        fsync(store->fd) < 0)
        return CAIRN_EIO;
    return 0;
}

int
store_open_index_at(struct cairn_store *store, const char *path)
{
    int rc;

    if (sqlite3_open_v2(path, &store->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        NULL) != SQLITE_OK)
        return CAIRN_EDB;
    sqlite3_busy_timeout(store->db, 20000);
    if ((rc = sql_init_schema(store->db)) < 0)
        return rc;
    return sql_prepare_all(store->db, store->stmts);
}

void
store_close_index(struct cairn_store *store)
{
    sql_finalize_all(store->stmts);
    sqlite3_close(store->db);
    store->db = NULL;
}

int
store_reopen_index(struct cairn_store *store, bool recover)
{
    int rc;

    store_close_index(store);
    if ((rc = store_open_index_at(store, store->index_path)) < 0 || !recover)
        return rc;
    if ((rc = load_tail(store)) < 0)
        return rc;
    return recover_tail(store);
}

static int
index_missing(const char *index_path, int fd)
{
    struct stat data_st, index_st;

    if (fstat(fd, &data_st) < 0)
        return CAIRN_EIO;
    if (data_st.st_size == 0)
        return 0;
    if (stat(index_path, &index_st) < 0 || index_st.st_size == 0)
        return 1;
    return 0;
}

int
cairn_store_open(const char *data_path, unsigned flags,
                 struct cairn_store **out)
{
    struct cairn_store *store = NULL;
    int rc, missing;

    *out = NULL;
    if ((store = calloc(1, sizeof(*store))) == NULL)
        return CAIRN_ENOMEM;
    store->fd = -1;
    chunk_writer_init(&store->writer, -1, Z_DEFAULT_COMPRESSION);
    store->data_path = strdup(data_path);
    if (store->data_path == NULL ||
        asprintf(&store->index_path, "%s.index", data_path) < 0) {
        store->index_path = NULL;
        rc = CAIRN_ENOMEM;
        goto out;
    }
    if ((rc = open_locked(data_path, flags, &store->fd)) < 0 ||
        (rc = store_finish_switch(data_path)) < 0)
        goto out;
    store->writer.fd = store->fd;
    if ((missing = index_missing(store->index_path, store->fd)) < 0) {
        rc = missing;
        goto out;
    }
    if (missing) {
        /* Cyrus says "reindex needed"; we can do it under our lock. */
        unlink(store->index_path);
        if ((rc = store_open_index_at(store, store->index_path)) < 0 ||
            (rc = cairn_store_rebuild_index(store, &store->opened_rebuild)) < 0)
            goto out;
        store->opened_rebuilt = true;
    } else if ((rc = store_open_index_at(store, store->index_path)) < 0) {
        goto out;
    }
    if ((rc = load_tail(store)) < 0 || (rc = recover_tail(store)) < 0)
        goto out;
    *out = store;
    store = NULL;
out:
    cairn_store_close(store);
    return rc;
}

bool
cairn_store_opened_rebuilt(const struct cairn_store *store,
                           struct cairn_reindex_result *result)
{
    if (store->opened_rebuilt)
        *result = store->opened_rebuild;
    return store->opened_rebuilt;
}

int
cairn_store_open_user(struct cairn_catalog *catalog, const char *root,
                      const char *userid, unsigned flags,
                      struct cairn_store **store)
{
    char *path = NULL;
    int rc;

    *store = NULL;
    rc = cairn_catalog_lookup(catalog, userid, &path);
    if (rc == CAIRN_ENOENT && (flags & CAIRN_STORE_CREATE))
        rc = cairn_catalog_create(catalog, root, userid, &path);
    if (rc == 0)
        rc = cairn_store_open(path, flags & ~(unsigned)CAIRN_STORE_CREATE,
                              store);
    free(path);
    return rc;
}

void
cairn_store_close(struct cairn_store *store)
{
    if (store == NULL)
        return;
    if (store->in_chunk)
        cairn_store_abort(store);
    store_close_index(store);
    chunk_writer_release(&store->writer);
    if (store->fd >= 0)
        close(store->fd);
    free(store->data_path);
    free(store->index_path);
    free(store);
}

void
cairn_store_set_level(struct cairn_store *store, int level)
{
    if (!store->in_chunk)
        store->writer.level = level;
}

const char *
cairn_store_data_path(const struct cairn_store *store)
{
    return store->data_path;
}

int64_t
store_clamp_ts(struct cairn_store *store, int64_t ts)
{
    return ts < store->last_ts ? store->last_ts : ts;
}

int
store_begin_chunk(struct cairn_store *store, int64_t ts)
{
    sqlite3_stmt *insert = store->stmts[STMT_CHUNK_INSERT];
    int rc;

    if (store->failed)
        return CAIRN_ESTATE;
    if (store->in_chunk)
        return 0;
    chunk_writer_mark(&store->writer, &store->chunk_begin);
    if ((rc = sql_run(store->stmts[STMT_BEGIN])) < 0)
        return rc;
    store->in_chunk = true;
    if ((rc = chunk_writer_begin(&store->writer)) < 0)
        goto fail;
    if ((rc = sql_bind_int(insert, ":ts_start", ts)) < 0 ||
        (rc = sql_bind_int(insert, ":offset",
                           (int64_t)store->writer.member_start)) < 0 ||
        (rc = sql_bind_text(insert, ":file_sha1", store->writer.file_sha1)) <
            0) {
        sql_reset(insert);
        goto fail;
    }
    if ((rc = sql_run(insert)) < 0)
        goto fail;
    store->chunk_id = sqlite3_last_insert_rowid(store->db);
    store->chunk_first_ts = ts;
    store->chunk_last_ts = ts;
    return 0;
fail:
    store_abort_chunk(store);
    return rc;
}

int
store_savepoint(struct cairn_store *store)
{
    return sql_run(store->stmts[STMT_SAVEPOINT]);
}

int
store_release(struct cairn_store *store)
{
    return sql_run(store->stmts[STMT_RELEASE]);
}

void
store_rollback_to(struct cairn_store *store)
{
    sql_run(store->stmts[STMT_ROLLBACK_TO]);
    sql_run(store->stmts[STMT_RELEASE]);
}

void
store_abort_chunk(struct cairn_store *store)
{
    if (!store->in_chunk)
        return;
    sql_run(store->stmts[STMT_ROLLBACK]);
    store->writer.open = false;
    if (chunk_writer_rewind(&store->writer, &store->chunk_begin) < 0)
        store->failed = true; /* the next open cuts the tail instead */
    else
        store->failed = false;
    store->in_chunk = false;
    store->chunk_id = 0;
}

void
cairn_store_abort(struct cairn_store *store)
{
    store_abort_chunk(store);
}

/* Phase 1 of a commit: end the member and write it out. */
static int
commit_finish(struct cairn_store *store, char data_sha1[41])
{
    if (store->failed)
        return CAIRN_ESTATE;
    return chunk_writer_finish(&store->writer, data_sha1);
}

/* Phase 3: record the chunk's end and commit the index. */
static int
commit_index(struct cairn_store *store, const char *data_sha1)
{
    sqlite3_stmt *end = store->stmts[STMT_CHUNK_END];
    int rc;

    store->last_ts = store->chunk_last_ts;
    if ((rc = sql_bind_int(end, ":ts_end", store->chunk_last_ts)) < 0 ||
        (rc = sql_bind_int(end, ":length", (int64_t)store->writer.length)) <
            0 ||
        (rc = sql_bind_text(end, ":data_sha1", data_sha1)) < 0 ||
        (rc = sql_bind_int(end, ":id", store->chunk_id)) < 0) {
        sql_reset(end);
        return rc;
    }
    if ((rc = sql_run(end)) < 0 ||
        (rc = store_save_tail(store, store->chunk_id)) < 0)
        return rc;
    if ((rc = sql_run(store->stmts[STMT_COMMIT])) < 0)
        return rc;
    store->in_chunk = false;
    store->chunk_id = 0;
    return 0;
}

/* Most threads one group commit uses to overlap its fsyncs. */
#define COMMIT_THREADS 16

struct commit_job {
    struct cairn_store *store;
    char data_sha1[41];
    int rc;
};

struct commit_share {
    struct commit_job *jobs;
    size_t count, stride, first;
};

/* Data fsync, then index commit: the order one user's durability needs. */
static void *
sync_and_commit(void *arg)
{
    struct commit_share *share = arg;

    for (size_t i = share->first; i < share->count; i += share->stride) {
        struct commit_job *job = &share->jobs[i];

        if (job->rc < 0 || !job->store->in_chunk)
            continue;
        if (!job->store->defer_sync && fdatasync(job->store->fd) < 0)
            job->rc = errno == ENOSPC ? CAIRN_ENOSPACE : CAIRN_EIO;
        else
            job->rc = commit_index(job->store, job->data_sha1);
    }
    return NULL;
}

/*
 * Runs sync_and_commit over the jobs, spread over threads so that the
 * users' fsyncs overlap on the device instead of queueing one by one.
 */
static void
run_commit_jobs(struct commit_job *jobs, size_t count)
{
    struct commit_share shares[COMMIT_THREADS];
    pthread_t threads[COMMIT_THREADS];
    bool started[COMMIT_THREADS] = {false};
    size_t stride = count < COMMIT_THREADS ? count : COMMIT_THREADS;

    for (size_t t = 0; t < stride; t++) {
        shares[t] = (struct commit_share){jobs, count, stride, t};
        /* Thread 0's share runs here; a failed start runs inline too. */
        if (t > 0)
            started[t] = pthread_create(&threads[t], NULL, sync_and_commit,
                                        &shares[t]) == 0;
    }
    for (size_t t = 0; t < stride; t++) {
        if (!started[t])
            sync_and_commit(&shares[t]);
    }
    for (size_t t = 1; t < stride; t++) {
        if (started[t])
            pthread_join(threads[t], NULL);
    }
}

int
cairn_store_commit_many(struct cairn_store *const *stores, size_t count,
                        int *results)
{
    struct commit_job *jobs = NULL;
    int first = 0;

    if (count > 0 && (jobs = calloc(count, sizeof(*jobs))) == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < count; i++) {
        jobs[i].store = stores[i];
        if (stores[i]->in_chunk)
            jobs[i].rc = commit_finish(stores[i], jobs[i].data_sha1);
    }
    run_commit_jobs(jobs, count);
    for (size_t i = 0; i < count; i++) {
        if (jobs[i].rc < 0) {
            store_abort_chunk(stores[i]);
            if (first == 0)
                first = jobs[i].rc;
        }
        if (results)
            results[i] = jobs[i].rc;
    }
    free(jobs);
    return first;
}

int
cairn_store_commit(struct cairn_store *store)
{
    struct cairn_store *one[1] = {store};

    if (store->failed) {
        store_abort_chunk(store);
        return CAIRN_ESTATE;
    }
    return cairn_store_commit_many(one, 1, NULL);
}

int
store_reopen_data(struct cairn_store *store)
{
    int rc;

    store_close_index(store);
    close(store->fd);
    store->fd = -1;
    if ((rc = open_locked(store->data_path, CAIRN_STORE_BLOCK, &store->fd)) < 0)
        return rc;
    store->writer.fd = store->fd;
    return store_reopen_index(store, true);
}

int
store_finish_switch(const char *data_path)
{
    char *marker = NULL, *fresh = NULL, *fresh_index = NULL, *index = NULL;
    int rc = CAIRN_ENOMEM;

    if (asprintf(&marker, "%s.switching", data_path) < 0 ||
        asprintf(&fresh, "%s.compact", data_path) < 0 ||
        asprintf(&fresh_index, "%s.compact.index", data_path) < 0 ||
        asprintf(&index, "%s.index", data_path) < 0)
        goto out;
    rc = 0;
    if (access(marker, F_OK) != 0)
        goto out;
    if (access(fresh, F_OK) == 0) {
        /* Crashed before the data rename: the old pair stands. */
        unlink(fresh);
        unlink(fresh_index);
    } else if (access(fresh_index, F_OK) == 0 &&
               rename(fresh_index, index) < 0) {
        /* Crashed between the renames: the new data needs its index. */
        rc = CAIRN_EIO;
        goto out;
    }
    if ((rc = cairn_fsync_parent_dir(data_path)) == 0 && unlink(marker) < 0)
        rc = CAIRN_EIO;
out:
    free(marker);
    free(fresh);
    free(fresh_index);
    free(index);
    return rc;
}

int
store_lookups_begin(struct cairn_store *store)
{
    return store->in_chunk ? CAIRN_OK : sql_run(store->stmts[STMT_BEGIN]);
}

int
store_lookups_end(struct cairn_store *store, int rc)
{
    int ended;

    if (store->in_chunk)
        return rc;
    ended = sql_run(store->stmts[STMT_ROLLBACK]); /* it only read */
    return rc < 0 ? rc : ended;
}

int
cairn_store_set_sequence(struct cairn_store *store, uint64_t sequence)
{
    const struct sql_value value = SQL_INT_VALUE(":sequence", sequence);
    int rc;

    if (store->in_chunk) /* in the transaction of the update it numbers */
        return sql_exec(store->stmts[STMT_SEQUENCE_SET], &value, 1);
    /* An update that stored nothing (a resent body, QUOTA): nothing of the
     * user is pending, so its number commits alone, or a restart would
     * take the next update for a gap. */
    if ((rc = sql_run(store->stmts[STMT_BEGIN])) < 0)
        return rc;
    if ((rc = sql_exec(store->stmts[STMT_SEQUENCE_SET], &value, 1)) < 0 ||
        (rc = sql_run(store->stmts[STMT_COMMIT])) < 0) {
        sql_run(store->stmts[STMT_ROLLBACK]);
        return rc;
    }
    return CAIRN_OK;
}

int
cairn_store_get_sequence(struct cairn_store *store, uint64_t *sequence)
{
    sqlite3_stmt *stmt = store->stmts[STMT_SEQUENCE_GET];
    int step = sqlite3_step(stmt), rc;

    *sequence = 0;
    if (step == SQLITE_ROW) {
        *sequence = (uint64_t)sqlite3_column_int64(stmt, 0);
        rc = 0;
    } else {
        rc = step == SQLITE_DONE ? CAIRN_ENOENT : CAIRN_EDB;
    }
    sqlite3_reset(stmt);
    return rc;
}
