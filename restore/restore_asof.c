/*
 * restore_asof.c - a user's backup as it stood at a point in time
 * (cairnctl restore --as-of, user history). The log is append-only and
 * every line carries its time, so the state at T is what the store's own
 * indexer makes of the lines stamped T or earlier: the user's data file
 * is copied into a scratch directory (from the serving node over TRANSFER
 * EXPORT/READ, SHA-1 checked, or from a data directory), its index is
 * rebuilt once whole (which gives the oldest line: the oldest restorable
 * time) and once up to T (cairn_store_rebuild_index_until), and the copy
 * is then read like any data file (cairn_restore_source_open_file).
 */
#include "daemon.h"
#include "restore_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* --- times ----------------------------------------------------------------
 */

/* "N unit ago": seconds per unit, by the unit's first letters. */
static int64_t
unit_seconds(const char *unit)
{
    static const struct {
        const char *name;
        int64_t seconds;
    } units[] = {
        {"second", 1},  {"sec", 1},   {"s", 1},         {"minute", 60},
        {"min", 60},    {"m", 60},    {"hour", 3600},   {"h", 3600},
        {"day", 86400}, {"d", 86400}, {"week", 604800}, {"w", 604800},
    };
    size_t len = strlen(unit);

    if (len > 1 && unit[len - 1] == 's' && strcmp(unit, "s") != 0)
        len--; /* plural */
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strlen(units[i].name) == len &&
            strncmp(units[i].name, unit, len) == 0)
            return units[i].seconds;
    return 0;
}

static int
parse_ago(const char *text, int64_t now, int64_t *when)
{
    char unit[16] = "", ago[8] = "";
    long long count = 0;
    int used = 0;
    int64_t seconds;

    if (sscanf(text, "%lld %15[a-z] %7s%n", &count, unit, ago, &used) != 3 ||
        text[used] != '\0' || strcmp(ago, "ago") != 0 || count < 0 ||
        (seconds = unit_seconds(unit)) == 0 || count > INT64_MAX / seconds)
        return CAIRN_EINVAL;
    *when = now - (int64_t)count * seconds;
    return 0;
}

/* "YYYY-MM-DD[(T| )HH:MM[:SS]][Z|(+|-)HH[:]MM]"; no zone: UTC. */
static int
parse_iso(const char *text, int64_t *when)
{
    struct tm tm = {0};
    int year, month, day, hour = 0, minute = 0, second = 0, used = 0;
    int zone = 0;
    const char *at;

    if (sscanf(text, "%4d-%2d-%2d%n", &year, &month, &day, &used) != 3)
        return CAIRN_EINVAL;
    at = text + used;
    if ((*at == 'T' || *at == ' ') &&
        sscanf(at + 1, "%2d:%2d%n", &hour, &minute, &used) == 2) {
        at += 1 + used;
        if (*at == ':' && sscanf(at + 1, "%2d%n", &second, &used) == 1)
            at += 1 + used;
    }
    if (*at == 'Z') {
        at++;
    } else if (*at == '+' || *at == '-') {
        int sign = *at == '-' ? -1 : 1, zh = 0, zm = 0, n = 0;

        if (sscanf(at + 1, "%2d%n", &zh, &n) != 1)
            return CAIRN_EINVAL;
        at += 1 + n;
        if (*at == ':')
            at++;
        if (isdigit((unsigned char)*at) && sscanf(at, "%2d%n", &zm, &n) == 1)
            at += n;
        zone = sign * (zh * 3600 + zm * 60);
    }
    if (*at != '\0' || month < 1 || month > 12 || day < 1 || day > 31 ||
        hour > 23 || minute > 59 || second > 60)
        return CAIRN_EINVAL;
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    *when = (int64_t)timegm(&tm) - zone;
    return 0;
}

int
cairn_restore_parse_time(const char *text, int64_t now, int64_t *when)
{
    long long epoch = 0;
    int used = 0;

    if (strcmp(text, "now") == 0) {
        *when = now;
        return 0;
    }
    if (text[0] == '@' && sscanf(text + 1, "%lld%n", &epoch, &used) == 1 &&
        text[1 + used] == '\0') {
        *when = epoch;
        return 0;
    }
    if (parse_ago(text, now, when) == 0)
        return 0;
    return parse_iso(text, when);
}

void
cairn_restore_format_time(int64_t when, char out[32])
{
    time_t t = (time_t)when;
    struct tm tm;

    if (gmtime_r(&t, &tm) == NULL ||
        strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "@%lld", (long long)when);
}

/* --- the scratch copy ------------------------------------------------------
 */

static int
copy_file(const char *from, int to, char *error, size_t error_size)
{
    char buffer[65536];
    int fd = open(from, O_RDONLY | O_CLOEXEC), rc = 0;
    ssize_t got;

    if (fd < 0) {
        snprintf(error, error_size, "%s: %s", from, strerror(errno));
        return CAIRN_EIO;
    }
    while (rc == 0 && (got = read(fd, buffer, sizeof(buffer))) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        rc = got < 0 ? CAIRN_EIO : cairn_write_all(to, buffer, (size_t)got);
    }
    if (rc < 0)
        snprintf(error, error_size, "copying %s: %s", from, strerror(errno));
    close(fd);
    return rc;
}

/* The data file of user in data_dir (owned), through its catalog. */
static int
local_data_path(const char *data_dir, const char *user, char **path,
                char *error, size_t error_size)
{
    struct cairn_catalog *catalog = NULL;
    char *catalog_path = NULL;
    int rc;

    if (asprintf(&catalog_path, "%s/catalog.db", data_dir) < 0)
        return CAIRN_ENOMEM;
    if ((rc = cairn_catalog_open(catalog_path, &catalog)) < 0 ||
        (rc = cairn_catalog_lookup(catalog, user, path)) < 0)
        snprintf(error, error_size, "%s: %s", catalog_path,
                 rc == CAIRN_ENOENT ? "no such user" : cairn_strerror(rc));
    cairn_catalog_free(catalog);
    free(catalog_path);
    return rc;
}

/* The first and last line times the copy's full index knows. */
static int
line_times(const char *index_path, int64_t *oldest, int64_t *newest)
{
    static const char sql[] = "SELECT MIN(ts_start), MAX(ts_end) FROM chunk";
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int rc = CAIRN_EDB;

    if (sqlite3_open_v2(index_path, &db, SQLITE_OPEN_READONLY, NULL) ==
            SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
        *oldest = sqlite3_column_int64(stmt, 0);
        *newest = sqlite3_column_int64(stmt, 1);
        rc = sqlite3_column_type(stmt, 0) == SQLITE_NULL ? CAIRN_ENOENT : 0;
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return rc;
}

int
cairn_restore_scratch_copy(struct cairn_restore_source *remote,
                           const char *data_dir, const char *user,
                           const char *dir, char **data_path, char *error,
                           size_t error_size)
{
    char *from = NULL, *path = NULL;
    int fd = -1, rc = CAIRN_ENOMEM;

    *data_path = NULL;
    if (asprintf(&path, "%s/%s.log", dir, user) < 0) {
        path = NULL;
        goto out;
    }
    if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                   cairn_created_file_mode())) < 0) {
        snprintf(error, error_size, "%s: %s", path, strerror(errno));
        rc = CAIRN_EIO;
        goto out;
    }
    if (remote != NULL)
        rc = cairn_restore_source_fetch_log(remote, fd, error, error_size);
    else if ((rc = local_data_path(data_dir, user, &from, error, error_size)) ==
             0)
        rc = copy_file(from, fd, error, error_size);
    if (rc == 0 && fsync(fd) < 0)
        rc = CAIRN_EIO;
out:
    if (fd >= 0)
        close(fd);
    free(from);
    if (rc == 0)
        *data_path = path;
    else
        free(path);
    return rc;
}

int
cairn_restore_scratch_as_of(const char *data_path, int64_t as_of,
                            int64_t *oldest, int64_t *newest, char *error,
                            size_t error_size)
{
    struct cairn_reindex_result result;
    struct cairn_store *store = NULL;
    char *index_path = NULL;
    char when[32], first[32];
    int rc;

    if (asprintf(&index_path, "%s.index", data_path) < 0)
        return CAIRN_ENOMEM;
    unlink(index_path);
    /* no index: opening rebuilds it from every line */
    if ((rc = cairn_store_open(data_path, 0, &store)) < 0) {
        snprintf(error, error_size, "indexing the copy of the log: %s",
                 cairn_strerror(rc));
        goto out;
    }
    if ((rc = line_times(index_path, oldest, newest)) < 0) {
        snprintf(error, error_size, "the log holds no line");
        goto out;
    }
    if (as_of < *oldest) {
        cairn_restore_format_time(as_of, when);
        cairn_restore_format_time(*oldest, first);
        snprintf(error, error_size,
                 "%s is before the oldest restorable time %s (the log's"
                 " first line; older states were compacted away or never"
                 " backed up)",
                 when, first);
        rc = CAIRN_ENOENT;
        goto out;
    }
    if ((rc = cairn_store_rebuild_index_until(store, as_of, &result)) < 0)
        snprintf(error, error_size, "indexing the log up to the time: %s",
                 cairn_strerror(rc));
out:
    cairn_store_close(store);
    free(index_path);
    return rc;
}
