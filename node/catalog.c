/*
 * catalog.c - the node's map of users to their data files, the SQLite
 * equivalent of Cyrus's backups.db (userid -> absolute data path). New
 * files are named as Cyrus names them: <root>/<hash>/<userid>_XXXXXX.
 */
#include "daemon.h"
#include "node_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct cairn_catalog {
    sqlite3 *db;
};

int
cairn_catalog_open(const char *path, struct cairn_catalog **catalog)
{
    struct cairn_catalog *cat = NULL;
    int rc = CAIRN_EDB;

    *catalog = NULL;
    if ((cat = calloc(1, sizeof(*cat))) == NULL)
        return CAIRN_ENOMEM;
    if (sqlite3_open_v2(path, &cat->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        NULL) != SQLITE_OK)
        goto out;
    sqlite3_busy_timeout(cat->db, 20000);
    if (sqlite3_exec(cat->db,
                     "CREATE TABLE IF NOT EXISTS users(userid TEXT PRIMARY KEY"
                     " NOT NULL, data_path TEXT NOT NULL);"
                     /* cairn's own: when each user was last compacted
                      * (Unix milliseconds); Cyrus's tools never read it */
                     "CREATE TABLE IF NOT EXISTS cairn_compactions(userid"
                     " TEXT PRIMARY KEY NOT NULL, compacted_ms INTEGER"
                     " NOT NULL);"
                     /* cairn's own: when the scrub last checked each user,
                      * and what it found wrong (NULL: nothing) */
                     "CREATE TABLE IF NOT EXISTS cairn_scrub(userid"
                     " TEXT PRIMARY KEY NOT NULL, checked_ms INTEGER"
                     " NOT NULL, damage TEXT)",
                     NULL, NULL, NULL) != SQLITE_OK ||
        cairn_catalog_figures_init(cat->db) < 0)
        goto out;
    *catalog = cat;
    cat = NULL;
    rc = 0;
out:
    cairn_catalog_free(cat);
    return rc;
}

sqlite3 *
cairn_catalog_db(struct cairn_catalog *catalog)
{
    return catalog->db;
}

void
cairn_catalog_free(struct cairn_catalog *catalog)
{
    if (catalog == NULL)
        return;
    sqlite3_close(catalog->db);
    free(catalog);
}

int
cairn_catalog_lookup(struct cairn_catalog *catalog, const char *userid,
                     char **data_path)
{
    sqlite3_stmt *stmt = NULL;
    int rc, step;

    *data_path = NULL;
    if ((rc = cairn_node_check_userid(userid)) < 0)
        return rc;
    if (sqlite3_prepare_v2(catalog->db,
                           "SELECT data_path FROM users WHERE userid = ?", -1,
                           &stmt, NULL) != SQLITE_OK)
        return CAIRN_EDB;
    sqlite3_bind_text(stmt, 1, userid, -1, SQLITE_STATIC);
    step = sqlite3_step(stmt);
    if (step == SQLITE_ROW) {
        *data_path = strdup((const char *)sqlite3_column_text(stmt, 0));
        rc = *data_path ? 0 : CAIRN_ENOMEM;
    } else {
        rc = step == SQLITE_DONE ? CAIRN_ENOENT : CAIRN_EDB;
    }
    sqlite3_finalize(stmt);
    return rc;
}

int
cairn_catalog_set(struct cairn_catalog *catalog, const char *userid,
                  const char *data_path)
{
    sqlite3_stmt *stmt = NULL;
    int rc;

    if ((rc = cairn_node_check_userid(userid)) < 0)
        return rc;
    if (sqlite3_prepare_v2(catalog->db,
                           "INSERT OR REPLACE INTO users (userid, data_path)"
                           " VALUES (?, ?)",
                           -1, &stmt, NULL) != SQLITE_OK)
        return CAIRN_EDB;
    sqlite3_bind_text(stmt, 1, userid, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, data_path, -1, SQLITE_STATIC);
    rc = sqlite3_step(stmt) == SQLITE_DONE ? 0 : CAIRN_EDB;
    sqlite3_finalize(stmt);
    return rc;
}

int
cairn_catalog_remove(struct cairn_catalog *catalog, const char *userid)
{
    sqlite3_stmt *stmt = NULL;
    int rc;

    if (sqlite3_prepare_v2(catalog->db, "DELETE FROM users WHERE userid = ?",
                           -1, &stmt, NULL) != SQLITE_OK)
        return CAIRN_EDB;
    sqlite3_bind_text(stmt, 1, userid, -1, SQLITE_STATIC);
    rc = sqlite3_step(stmt) == SQLITE_DONE ? 0 : CAIRN_EDB;
    if (rc == 0 && sqlite3_changes(catalog->db) == 0)
        rc = CAIRN_ENOENT;
    sqlite3_finalize(stmt);
    return rc;
}

int
cairn_catalog_foreach(struct cairn_catalog *catalog,
                      int (*visit)(void *ctx, const char *userid,
                                   const char *data_path),
                      void *ctx)
{
    sqlite3_stmt *stmt = NULL;
    int rc = 0, step;

    if (sqlite3_prepare_v2(
            catalog->db, "SELECT userid, data_path FROM users ORDER BY userid",
            -1, &stmt, NULL) != SQLITE_OK)
        return CAIRN_EDB;
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        rc = visit(ctx, (const char *)sqlite3_column_text(stmt, 0),
                   (const char *)sqlite3_column_text(stmt, 1));
        if (rc != 0)
            break;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = CAIRN_EDB;
    sqlite3_finalize(stmt);
    return rc;
}

int
cairn_catalog_create(struct cairn_catalog *catalog, const char *root,
                     const char *userid, char **data_path)
{
    char dir[PATH_MAX], path[PATH_MAX], absolute[PATH_MAX];
    char *existing = NULL;
    int fd = -1, rc;

    *data_path = NULL;
    rc = cairn_catalog_lookup(catalog, userid, &existing);
    free(existing);
    if (rc == 0)
        return CAIRN_EEXIST;
    if (rc != CAIRN_ENOENT)
        return rc;
    if (snprintf(dir, sizeof(dir), "%s/%c", root,
                 cairn_node_dir_hash(userid)) >= (int)sizeof(dir) ||
        snprintf(path, sizeof(path), "%s/%s_XXXXXX", dir, userid) >=
            (int)sizeof(path))
        return CAIRN_ETOOBIG;
    if (mkdir(dir, cairn_created_dir_mode()) < 0 && errno != EEXIST)
        return CAIRN_EIO;
    /* The catalog holds absolute paths, as backups.db does. */
    if (realpath(dir, absolute) == NULL)
        return CAIRN_EIO;
    if (snprintf(path, sizeof(path), "%s/%s_XXXXXX", absolute, userid) >=
        (int)sizeof(path))
        return CAIRN_ETOOBIG;
    if ((fd = mkstemp(path)) < 0)
        return CAIRN_EIO;
    /* mkstemp() makes 0600: the data file gets data_mode like the rest. */
    rc = fchmod(fd, cairn_created_file_mode()) < 0 ? CAIRN_EIO : 0;
    close(fd);
    if (rc < 0) {
        unlink(path);
        return rc;
    }
    if ((rc = cairn_fsync_parent_dir(path)) < 0 ||
        (rc = cairn_catalog_set(catalog, userid, path)) < 0) {
        unlink(path);
        return rc;
    }
    if ((*data_path = strdup(path)) == NULL)
        return CAIRN_ENOMEM;
    return 0;
}

int
cairn_catalog_set_compacted(struct cairn_catalog *catalog, const char *userid,
                            int64_t compacted_ms)
{
    sqlite3_stmt *stmt = NULL;
    int rc;

    if (sqlite3_prepare_v2(catalog->db,
                           "INSERT OR REPLACE INTO cairn_compactions"
                           " (userid, compacted_ms) VALUES (?, ?)",
                           -1, &stmt, NULL) != SQLITE_OK)
        return CAIRN_EDB;
    sqlite3_bind_text(stmt, 1, userid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 2, compacted_ms);
    rc = sqlite3_step(stmt) == SQLITE_DONE ? 0 : CAIRN_EDB;
    sqlite3_finalize(stmt);
    return rc;
}

int
cairn_catalog_get_compacted(struct cairn_catalog *catalog, const char *userid,
                            int64_t *compacted_ms)
{
    sqlite3_stmt *stmt = NULL;
    int rc, step;

    *compacted_ms = 0;
    if (sqlite3_prepare_v2(catalog->db,
                           "SELECT compacted_ms FROM cairn_compactions"
                           " WHERE userid = ?",
                           -1, &stmt, NULL) != SQLITE_OK)
        return CAIRN_EDB;
    sqlite3_bind_text(stmt, 1, userid, -1, SQLITE_STATIC);
    step = sqlite3_step(stmt);
    if (step == SQLITE_ROW) {
        *compacted_ms = sqlite3_column_int64(stmt, 0);
        rc = 0;
    } else {
        rc = step == SQLITE_DONE ? CAIRN_ENOENT : CAIRN_EDB;
    }
    sqlite3_finalize(stmt);
    return rc;
}

/* Calls visit with column 0 of each row of stmt, then finalizes it. */
static int
visit_users(sqlite3_stmt *stmt, int (*visit)(void *ctx, const char *userid),
            void *ctx)
{
    int rc = 0, step;

    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        rc = visit(ctx, (const char *)sqlite3_column_text(stmt, 0));
        if (rc != 0)
            break;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = CAIRN_EDB;
    sqlite3_finalize(stmt);
    return rc;
}

int
cairn_catalog_foreach_due(struct cairn_catalog *catalog, int64_t before_ms,
                          bool include_never,
                          int (*visit)(void *ctx, const char *userid),
                          void *ctx)
{
    sqlite3_stmt *stmt = NULL;

    if (sqlite3_prepare_v2(catalog->db,
                           "SELECT u.userid FROM users u LEFT JOIN"
                           " cairn_compactions c ON c.userid = u.userid"
                           " WHERE (c.compacted_ms IS NULL AND ?) OR"
                           " c.compacted_ms <= ?"
                           " ORDER BY IFNULL(c.compacted_ms, 0), u.userid",
                           -1, &stmt, NULL) != SQLITE_OK)
        return CAIRN_EDB;
    sqlite3_bind_int(stmt, 1, include_never ? 1 : 0);
    sqlite3_bind_int64(stmt, 2, before_ms);
    return visit_users(stmt, visit, ctx);
}

int
cairn_catalog_set_scrubbed(struct cairn_catalog *catalog, const char *userid,
                           int64_t checked_ms, const char *damage)
{
    sqlite3_stmt *stmt = NULL;
    int rc;

    if (sqlite3_prepare_v2(catalog->db,
                           "INSERT OR REPLACE INTO cairn_scrub"
                           " (userid, checked_ms, damage) VALUES (?, ?, ?)",
                           -1, &stmt, NULL) != SQLITE_OK)
        return CAIRN_EDB;
    sqlite3_bind_text(stmt, 1, userid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 2, checked_ms);
    if (damage != NULL)
        sqlite3_bind_text(stmt, 3, damage, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(stmt, 3);
    rc = sqlite3_step(stmt) == SQLITE_DONE ? 0 : CAIRN_EDB;
    sqlite3_finalize(stmt);
    return rc;
}

int
cairn_catalog_get_scrubbed(struct cairn_catalog *catalog, const char *userid,
                           int64_t *checked_ms, char **damage)
{
    sqlite3_stmt *stmt = NULL;
    int rc = CAIRN_EDB, step;

    *checked_ms = 0;
    *damage = NULL;
    if (sqlite3_prepare_v2(catalog->db,
                           "SELECT checked_ms, damage FROM cairn_scrub"
                           " WHERE userid = ?",
                           -1, &stmt, NULL) != SQLITE_OK)
        return CAIRN_EDB;
    sqlite3_bind_text(stmt, 1, userid, -1, SQLITE_STATIC);
    step = sqlite3_step(stmt);
    if (step == SQLITE_DONE) {
        rc = CAIRN_ENOENT;
    } else if (step == SQLITE_ROW) {
        const unsigned char *text = sqlite3_column_text(stmt, 1);

        *checked_ms = sqlite3_column_int64(stmt, 0);
        rc = 0;
        if (text != NULL && (*damage = strdup((const char *)text)) == NULL)
            rc = CAIRN_ENOMEM;
    }
    sqlite3_finalize(stmt);
    return rc;
}

int
cairn_catalog_foreach_scrub_due(struct cairn_catalog *catalog,
                                int64_t before_ms, bool include_never,
                                int (*visit)(void *ctx, const char *userid),
                                void *ctx)
{
    sqlite3_stmt *stmt = NULL;

    /* Damaged users are left alone: a heal clears their row. */
    if (sqlite3_prepare_v2(catalog->db,
                           "SELECT u.userid FROM users u LEFT JOIN"
                           " cairn_scrub s ON s.userid = u.userid"
                           " WHERE (s.checked_ms IS NULL AND ?) OR"
                           " (s.damage IS NULL AND s.checked_ms <= ?)"
                           " ORDER BY IFNULL(s.checked_ms, 0), u.userid",
                           -1, &stmt, NULL) != SQLITE_OK)
        return CAIRN_EDB;
    sqlite3_bind_int(stmt, 1, include_never ? 1 : 0);
    sqlite3_bind_int64(stmt, 2, before_ms);
    return visit_users(stmt, visit, ctx);
}

int
cairn_catalog_foreach_damaged(struct cairn_catalog *catalog,
                              int (*visit)(void *ctx, const char *userid),
                              void *ctx)
{
    sqlite3_stmt *stmt = NULL;

    if (sqlite3_prepare_v2(catalog->db,
                           "SELECT u.userid FROM users u JOIN cairn_scrub s"
                           " ON s.userid = u.userid"
                           " WHERE s.damage IS NOT NULL ORDER BY u.userid",
                           -1, &stmt, NULL) != SQLITE_OK)
        return CAIRN_EDB;
    return visit_users(stmt, visit, ctx);
}

int
cairn_catalog_scrub_figures(struct cairn_catalog *catalog, int64_t since_ms,
                            uint64_t *users, uint64_t *checked,
                            uint64_t *damaged)
{
    sqlite3_stmt *stmt = NULL;
    int rc = CAIRN_EDB;

    *users = *checked = *damaged = 0;
    if (sqlite3_prepare_v2(catalog->db,
                           "SELECT COUNT(*), SUM(s.checked_ms > ?),"
                           " SUM(s.damage IS NOT NULL) FROM users u"
                           " LEFT JOIN cairn_scrub s ON s.userid = u.userid",
                           -1, &stmt, NULL) != SQLITE_OK)
        return CAIRN_EDB;
    sqlite3_bind_int64(stmt, 1, since_ms);
    if (sqlite3_step(stmt) == SQLITE_ROW) {
        *users = (uint64_t)sqlite3_column_int64(stmt, 0);
        *checked = (uint64_t)sqlite3_column_int64(stmt, 1);
        *damaged = (uint64_t)sqlite3_column_int64(stmt, 2);
        rc = 0;
    }
    sqlite3_finalize(stmt);
    return rc;
}
