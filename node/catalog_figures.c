/*
 * catalog_figures.c - the catalog's cache of each user's figures (node.h:
 * struct cairn_user_figures), so that status, age and user list over a
 * million users read one catalog page and stat two files per user instead
 * of opening every index. A cached row is trusted only while the data
 * file and the index keep the size, modification time and inode it was
 * read with; otherwise the index is read again and the row replaced.
 */
#include "node_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int
cairn_catalog_figures_init(sqlite3 *db)
{
    return sqlite3_exec(db,
                        "CREATE TABLE IF NOT EXISTS cairn_user_figures("
                        "userid TEXT PRIMARY KEY NOT NULL,"
                        " bytes_on_disk INTEGER, raw_bytes INTEGER,"
                        " chunks INTEGER, messages INTEGER,"
                        " mailboxes INTEGER, last_backup_time INTEGER,"
                        " data_size INTEGER, data_mtime_ns INTEGER,"
                        " data_ino INTEGER, index_size INTEGER,"
                        " index_mtime_ns INTEGER, index_ino INTEGER)",
                        NULL, NULL, NULL) == SQLITE_OK
               ? 0
               : CAIRN_EDB;
}

/* size, mtime and inode of path; false when it cannot be read */
static bool
identity(const char *path, uint64_t *size, int64_t *mtime_ns, uint64_t *ino)
{
    struct stat st;

    if (stat(path, &st) < 0)
        return false;
    *size = (uint64_t)st.st_size;
    *mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    *ino = (uint64_t)st.st_ino;
    return true;
}

static bool
files_identity(const char *data_path, struct cairn_user_figures *figures)
{
    char index_path[4096];

    if (snprintf(index_path, sizeof(index_path), "%s.index", data_path) >=
        (int)sizeof(index_path))
        return false;
    return identity(data_path, &figures->data_size, &figures->data_mtime_ns,
                    &figures->data_ino) &&
           identity(index_path, &figures->index_size, &figures->index_mtime_ns,
                    &figures->index_ino);
}

static uint64_t
query_u64(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    uint64_t value = 0;

    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        value = (uint64_t)sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return value;
}

int
cairn_user_figures_read(const char *data_path,
                        struct cairn_user_figures *figures)
{
    char index_path[4096];
    sqlite3 *db = NULL;
    int rc = 0;

    memset(figures, 0, sizeof(*figures));
    if (snprintf(index_path, sizeof(index_path), "%s.index", data_path) >=
        (int)sizeof(index_path))
        return CAIRN_ETOOBIG;
    /* the identity first: a commit after it makes the row stale, never a
     * stale row look fresh */
    if (!files_identity(data_path, figures))
        return CAIRN_ENOENT;
    figures->bytes_on_disk = figures->data_size + figures->index_size;
    if (sqlite3_open_v2(index_path, &db, SQLITE_OPEN_READONLY, NULL) !=
        SQLITE_OK) {
        rc = CAIRN_EDB;
        goto out;
    }
    figures->chunks = query_u64(db, "SELECT count(*) FROM chunk");
    figures->last_backup_time =
        (int64_t)query_u64(db, "SELECT coalesce(max(ts_end),0) FROM chunk");
    figures->messages = query_u64(db, "SELECT count(*) FROM message");
    /* chunk.length is the uncompressed size of each gzip member of the
     * log (its header line included), so this is the log uncompressed */
    figures->raw_bytes =
        query_u64(db, "SELECT coalesce(sum(length),0) FROM chunk");
    figures->mailboxes = query_u64(
        db, "SELECT count(*) FROM mailbox WHERE coalesce(deleted,0)=0");
out:
    sqlite3_close(db);
    return rc;
}

static void
column_figures(sqlite3_stmt *stmt, int first, struct cairn_user_figures *f)
{
    f->bytes_on_disk = (uint64_t)sqlite3_column_int64(stmt, first);
    f->raw_bytes = (uint64_t)sqlite3_column_int64(stmt, first + 1);
    f->chunks = (uint64_t)sqlite3_column_int64(stmt, first + 2);
    f->messages = (uint64_t)sqlite3_column_int64(stmt, first + 3);
    f->mailboxes = (uint64_t)sqlite3_column_int64(stmt, first + 4);
    f->last_backup_time = sqlite3_column_int64(stmt, first + 5);
    f->data_size = (uint64_t)sqlite3_column_int64(stmt, first + 6);
    f->data_mtime_ns = sqlite3_column_int64(stmt, first + 7);
    f->data_ino = (uint64_t)sqlite3_column_int64(stmt, first + 8);
    f->index_size = (uint64_t)sqlite3_column_int64(stmt, first + 9);
    f->index_mtime_ns = sqlite3_column_int64(stmt, first + 10);
    f->index_ino = (uint64_t)sqlite3_column_int64(stmt, first + 11);
}

/* Whether cached still describes data_path's files as they are now. */
static bool
still_valid(const char *data_path, const struct cairn_user_figures *cached)
{
    struct cairn_user_figures now;

    return files_identity(data_path, &now) &&
           now.data_size == cached->data_size &&
           now.data_mtime_ns == cached->data_mtime_ns &&
           now.data_ino == cached->data_ino &&
           now.index_size == cached->index_size &&
           now.index_mtime_ns == cached->index_mtime_ns &&
           now.index_ino == cached->index_ino;
}

int
cairn_catalog_figures_page(
    struct cairn_catalog *catalog, const char *after, size_t limit,
    int (*visit)(void *ctx, const char *userid, const char *data_path,
                 const struct cairn_user_figures *cached),
    void *ctx)
{
    sqlite3_stmt *stmt = NULL;
    int rc = 0, step;

    if (sqlite3_prepare_v2(
            cairn_catalog_db(catalog),
            "SELECT u.userid, u.data_path, f.userid IS NOT NULL,"
            " f.bytes_on_disk, f.raw_bytes, f.chunks, f.messages,"
            " f.mailboxes, f.last_backup_time, f.data_size,"
            " f.data_mtime_ns, f.data_ino, f.index_size, f.index_mtime_ns,"
            " f.index_ino FROM users u LEFT JOIN cairn_user_figures f"
            " ON f.userid = u.userid WHERE u.userid > ?"
            " ORDER BY u.userid LIMIT ?",
            -1, &stmt, NULL) != SQLITE_OK)
        return CAIRN_EDB;
    sqlite3_bind_text(stmt, 1, after ? after : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 2, (sqlite3_int64)limit);
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *data_path = (const char *)sqlite3_column_text(stmt, 1);
        struct cairn_user_figures cached;
        bool have = sqlite3_column_int(stmt, 2) != 0;

        if (have) {
            column_figures(stmt, 3, &cached);
            have = still_valid(data_path, &cached);
        }
        rc = visit(ctx, (const char *)sqlite3_column_text(stmt, 0), data_path,
                   have ? &cached : NULL);
        if (rc != 0)
            break;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = CAIRN_EDB;
    sqlite3_finalize(stmt);
    return rc;
}

int
cairn_catalog_figures_put(struct cairn_catalog *catalog, const char *userid,
                          const struct cairn_user_figures *f)
{
    sqlite3_stmt *stmt = NULL;
    int rc;

    if (sqlite3_prepare_v2(cairn_catalog_db(catalog),
                           "INSERT OR REPLACE INTO cairn_user_figures VALUES"
                           "(?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           -1, &stmt, NULL) != SQLITE_OK)
        return CAIRN_EDB;
    sqlite3_bind_text(stmt, 1, userid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 2, (sqlite3_int64)f->bytes_on_disk);
    sqlite3_bind_int64(stmt, 3, (sqlite3_int64)f->raw_bytes);
    sqlite3_bind_int64(stmt, 4, (sqlite3_int64)f->chunks);
    sqlite3_bind_int64(stmt, 5, (sqlite3_int64)f->messages);
    sqlite3_bind_int64(stmt, 6, (sqlite3_int64)f->mailboxes);
    sqlite3_bind_int64(stmt, 7, f->last_backup_time);
    sqlite3_bind_int64(stmt, 8, (sqlite3_int64)f->data_size);
    sqlite3_bind_int64(stmt, 9, f->data_mtime_ns);
    sqlite3_bind_int64(stmt, 10, (sqlite3_int64)f->data_ino);
    sqlite3_bind_int64(stmt, 11, (sqlite3_int64)f->index_size);
    sqlite3_bind_int64(stmt, 12, f->index_mtime_ns);
    sqlite3_bind_int64(stmt, 13, (sqlite3_int64)f->index_ino);
    rc = sqlite3_step(stmt) == SQLITE_DONE ? 0 : CAIRN_EDB;
    sqlite3_finalize(stmt);
    return rc;
}

int
cairn_catalog_figures_begin(struct cairn_catalog *catalog)
{
    return sqlite3_exec(cairn_catalog_db(catalog), "BEGIN", NULL, NULL, NULL) ==
                   SQLITE_OK
               ? 0
               : CAIRN_EDB;
}

int
cairn_catalog_figures_end(struct cairn_catalog *catalog)
{
    return sqlite3_exec(cairn_catalog_db(catalog), "COMMIT", NULL, NULL,
                        NULL) == SQLITE_OK
               ? 0
               : CAIRN_EDB;
}
