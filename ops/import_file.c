/*
 * import_file.c - one Cyrus backupd data file adopted into a data
 * directory (cairnctl import, and each user of import --from-backupd).
 * The admin's files are copied, never moved or written; cairn rebuilds
 * the index from the data file alone (trusting the log, not Cyrus's
 * index, cyrus-backups.md A.2), verifies every checksum and GUID,
 * compares its index with Cyrus's row by row, and only then records the
 * user in the catalog.
 *
 * What is accepted is what Cyrus 3.6's tools accept; what the rebuilt
 * index keeps and drops, and why, is struct cairn_reindex_result's list
 * (node.h). A refusal names the chunk, its byte offset and the rule.
 */
#include "daemon.h"
#include "import_int.h"
#include "node.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_SIZE (256 * 1024)

/* Rows compared per table; "@" stands for the schema, cairn or cyrus. */
static const struct {
    const char *table;
    const char *query;
} comparisons[] = {
    {"chunk", "SELECT offset, length, file_sha1, data_sha1 FROM @.chunk"},
    {"message", "SELECT m.guid, m.partition, c.offset, m.offset, m.size"
                " FROM @.message AS m JOIN @.chunk AS c ON c.id = m.chunk_id"},
    {"mailbox",
     "SELECT b.uniqueid, b.mboxname, b.mboxtype, b.last_uid,"
     " b.highestmodseq, b.recentuid, b.recenttime, b.last_appenddate,"
     " b.pop3_last_login, b.pop3_show_after, b.uidvalidity, b.partition,"
     " b.acl, b.options, b.sync_crc, b.sync_crc_annot, b.quotaroot,"
     " b.xconvmodseq, b.annotations, b.deleted, c.offset"
     " FROM @.mailbox AS b JOIN @.chunk AS c ON c.id = b.last_chunk_id"},
    {"mailbox_message",
     "SELECT b.uniqueid, m.guid, c.offset, r.uid, r.modseq, r.last_updated,"
     " r.flags, r.internaldate, r.annotations, r.expunged"
     " FROM @.mailbox_message AS r"
     " JOIN @.mailbox AS b ON b.id = r.mailbox_id"
     " JOIN @.message AS m ON m.id = r.message_id"
     " JOIN @.chunk AS c ON c.id = r.last_chunk_id"},
    {"subscription",
     "SELECT s.mboxname, s.unsubscribed, c.offset FROM @.subscription AS s"
     " JOIN @.chunk AS c ON c.id = s.last_chunk_id"},
    {"seen",
     "SELECT s.uniqueid, s.lastread, s.lastuid, s.lastchange, s.seenuids,"
     " c.offset FROM @.seen AS s"
     " JOIN @.chunk AS c ON c.id = s.last_chunk_id"},
    {"sieve", "SELECT c.offset, s.last_update, s.filename, s.guid, s.offset,"
              " s.deleted FROM @.sieve AS s"
              " JOIN @.chunk AS c ON c.id = s.chunk_id"},
};
#define COMPARISON_COUNT (sizeof(comparisons) / sizeof(comparisons[0]))
_Static_assert(COMPARISON_COUNT == CAIRN_IMPORT_TABLES, "one row per table");

static int
copy_file(const char *from, int to_fd)
{
    char *buffer = NULL;
    int from_fd = -1, rc = CAIRN_ENOMEM;
    ssize_t got;

    if ((buffer = malloc(COPY_SIZE)) == NULL)
        goto out;
    rc = CAIRN_EIO;
    if ((from_fd = open(from, O_RDONLY | O_CLOEXEC)) < 0)
        goto out;
    while ((got = read(from_fd, buffer, COPY_SIZE)) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 || (rc = cairn_write_all(to_fd, buffer, (size_t)got)) < 0) {
            rc = CAIRN_EIO;
            goto out;
        }
    }
    rc = fsync(to_fd) == 0 ? 0 : CAIRN_EIO;
out:
    if (from_fd >= 0)
        close(from_fd);
    free(buffer);
    return rc;
}

/* Copies source to dir/<hash>/<user>_XXXXXX; the path is owned. */
static int
copy_in(const char *data_dir, const char *userid, const char *source,
        char **data_path)
{
    char *path = NULL;
    int fd = -1, rc = CAIRN_ENOMEM;

    *data_path = NULL;
    if (asprintf(&path, "%s/%c", data_dir, cairn_node_dir_hash(userid)) < 0)
        return CAIRN_ENOMEM;
    if ((mkdir(data_dir, cairn_created_dir_mode()) < 0 && errno != EEXIST) ||
        (mkdir(path, cairn_created_dir_mode()) < 0 && errno != EEXIST)) {
        rc = CAIRN_EIO;
        goto out;
    }
    free(path);
    if (asprintf(&path, "%s/%c/%s_XXXXXX", data_dir,
                 cairn_node_dir_hash(userid), userid) < 0) {
        path = NULL;
        goto out;
    }
    rc = CAIRN_EIO;
    if ((fd = mkostemp(path, O_CLOEXEC)) < 0)
        goto out;
    if ((rc = copy_file(source, fd)) < 0 ||
        (rc = cairn_fsync_parent_dir(path)) < 0) {
        unlink(path);
        goto out;
    }
    *data_path = path;
    path = NULL;
out:
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

static int64_t
count_rows(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    int64_t count = -1;

    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        count = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return count;
}

void
cairn_import_report_release(struct cairn_import_report *report)
{
    free(report->data_path);
    report->data_path = NULL;
}

static void
refuse(struct cairn_import_report *report, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(report->verify_error, sizeof(report->verify_error), fmt, ap);
    va_end(ap);
}

/*
 * Rebuilds the index of the copy (kept and dropped as node.h lists) and
 * verifies it at every level. A member that does not inflate between
 * whole ones is refused: Cyrus's own reader gives up there, and what
 * follows it could not be trusted to be whole.
 */
static int
rebuild_and_verify(struct cairn_import_report *report)
{
    struct cairn_reindex_result result;
    struct cairn_store *store = NULL;
    char error[400] = "";
    uint64_t copied = 0;
    struct stat st;
    int rc;

    /* Opening cuts a torn last member already: what was copied counts. */
    if (stat(report->data_path, &st) == 0)
        copied = (uint64_t)st.st_size;
    if ((rc = cairn_store_open(report->data_path, CAIRN_STORE_BLOCK, &store)) <
            0 ||
        (!cairn_store_opened_rebuilt(store, &result) &&
         (rc = cairn_store_rebuild_index(store, &result)) < 0)) {
        refuse(report, "index rebuild failed: %s", cairn_strerror(rc));
        goto out;
    }
    report->chunks = result.chunks;
    report->line_chunks = result.line_chunks;
    report->empty_members = result.empty_members;
    report->first_empty = result.first_empty;
    report->partial_lines = result.partial_lines;
    report->first_partial_chunk = result.first_partial_chunk;
    report->first_partial_line = result.first_partial_line;
    if (stat(report->data_path, &st) == 0)
        report->data_bytes = report->cut_at = (uint64_t)st.st_size;
    report->cut_bytes =
        copied > report->data_bytes ? copied - report->data_bytes : 0;
    if (result.damaged_members > 0) {
        refuse(report,
               "gzip member at offset %llu does not inflate (%llu damaged"
               " bytes before the next whole member); rule: every member"
               " before the last must be whole",
               (unsigned long long)result.first_damaged,
               (unsigned long long)result.skipped_bytes);
        rc = CAIRN_ECORRUPT;
        goto out;
    }
    if ((rc = cairn_store_verify(store, CAIRN_VERIFY_FULL, error,
                                 sizeof(error))) < 0)
        refuse(report,
               "%s; rule: Cyrus's full verify (checksums, message"
               " links and GUIDs, mailbox links)",
               error[0] ? error : cairn_strerror(rc));
out:
    cairn_store_close(store);
    return rc;
}

/* The first chunk of Cyrus's index that the rebuilt one lacks, if any. */
static int
check_cyrus_chunks(sqlite3 *db, struct cairn_import_report *report)
{
    static const char sql[] =
        "SELECT id, offset, length FROM cyrus.chunk WHERE (offset, length,"
        " file_sha1, data_sha1) NOT IN (SELECT offset, length, file_sha1,"
        " data_sha1 FROM cairn.chunk) ORDER BY id LIMIT 1";
    sqlite3_stmt *stmt = NULL;
    int rc = CAIRN_EDB, step;

    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
        goto out;
    step = sqlite3_step(stmt);
    if (step == SQLITE_ROW) {
        refuse(report,
               "chunk %lld of Cyrus's index (offset %lld, %lld bytes) is not"
               " in the rebuilt index; rule: nothing backupd indexed may be"
               " lost",
               (long long)sqlite3_column_int64(stmt, 0),
               (long long)sqlite3_column_int64(stmt, 1),
               (long long)sqlite3_column_int64(stmt, 2));
        rc = CAIRN_EMISMATCH;
    } else if (step == SQLITE_DONE) {
        rc = 0;
    }
out:
    sqlite3_finalize(stmt);
    return rc;
}
static char *
with_schema(const char *query, const char *schema)
{
    sqlite3_str *text = sqlite3_str_new(NULL);

    for (const char *at = query; *at; at++) {
        if (*at == '@')
            sqlite3_str_appendall(text, schema);
        else
            sqlite3_str_appendchar(text, 1, *at);
    }
    return sqlite3_str_finish(text);
}

/* Both indexes attached read-only to an empty database, table by table. */
static int
compare_indexes(const char *cyrus_index, struct cairn_import_report *report)
{
    sqlite3 *db = NULL;
    char *sql = NULL, *cairn_q = NULL, *cyrus_q = NULL;
    int rc = CAIRN_EDB;

    if (sqlite3_open_v2(":memory:", &db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI,
                        NULL) != SQLITE_OK)
        goto out;
    /* immutable: the admin's index is never locked or written */
    sql = sqlite3_mprintf("ATTACH 'file:%q.index?mode=ro' AS cairn;"
                          " ATTACH 'file:%q?mode=ro&immutable=1' AS cyrus",
                          report->data_path, cyrus_index);
    if (sql == NULL || sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        goto out;
    for (size_t i = 0; i < COMPARISON_COUNT; i++) {
        sqlite3_free(cairn_q);
        sqlite3_free(cyrus_q);
        sqlite3_free(sql);
        cairn_q = with_schema(comparisons[i].query, "cairn");
        cyrus_q = with_schema(comparisons[i].query, "cyrus");
        sql = sqlite3_mprintf("SELECT count(*) FROM (%s)", cairn_q);
        if (cairn_q == NULL || cyrus_q == NULL || sql == NULL)
            goto out;
        report->rows[i] = count_rows(db, sql);
        sqlite3_free(sql);
        sql = sqlite3_mprintf("SELECT count(*) FROM (%s EXCEPT %s)", cairn_q,
                              cyrus_q);
        report->only_cairn[i] = sql ? count_rows(db, sql) : -1;
        sqlite3_free(sql);
        sql = sqlite3_mprintf("SELECT count(*) FROM (%s EXCEPT %s)", cyrus_q,
                              cairn_q);
        report->only_cyrus[i] = sql ? count_rows(db, sql) : -1;
        if (report->rows[i] < 0 || report->only_cairn[i] < 0 ||
            report->only_cyrus[i] < 0)
            goto out;
        report->differences += report->only_cairn[i] + report->only_cyrus[i];
    }
    report->cyrus_index = true;
    rc = check_cyrus_chunks(db, report);
out:
    sqlite3_free(cairn_q);
    sqlite3_free(cyrus_q);
    sqlite3_free(sql);
    sqlite3_close(db);
    return rc;
}

/* What the rebuild kept or dropped that Cyrus's index may not show. */
static void
print_notes(FILE *out, const struct cairn_import_report *report)
{
    if (report->chunks > report->line_chunks)
        fprintf(out,
                "  kept: %llu chunks with no indexed line (unchanged sync"
                " passes, or only QUOTA/ACTIVATE_SIEVE lines) as chunk"
                " rows, as backupd's index has them\n",
                (unsigned long long)(report->chunks - report->line_chunks));
    if (report->partial_lines > 0)
        fprintf(out,
                "  kept: %llu chunks ending in an unfinished line (first:"
                " chunk at offset %llu, line at %llu), not indexed, as"
                " Cyrus's reader ignores it\n",
                (unsigned long long)report->partial_lines,
                (unsigned long long)report->first_partial_chunk,
                (unsigned long long)report->first_partial_line);
    if (report->empty_members > 0)
        fprintf(out,
                "  dropped: %llu gzip members with no content (first at"
                " offset %llu): no chunk row, as backupd made none\n",
                (unsigned long long)report->empty_members,
                (unsigned long long)report->first_empty);
    if (report->cut_bytes > 0)
        fprintf(out,
                "  dropped: a torn last member (%llu bytes at offset %llu,"
                " a backupd crash): cut from the copy\n",
                (unsigned long long)report->cut_bytes,
                (unsigned long long)report->cut_at);
}

void
cairn_import_print_report(struct cairn_ops_context *context, const char *userid,
                          const struct cairn_import_report *report,
                          const char *outcome)
{
    if (context->json) {
        fputs("{\"user\":", context->out);
        cairn_ops_json_string(context->out, userid);
        fputs(",\"outcome\":", context->out);
        cairn_ops_json_string(context->out, outcome);
        fputs(",\"data_path\":", context->out);
        cairn_ops_json_string(context->out,
                              report->data_path ? report->data_path : "");
        fputs(",\"verify_error\":", context->out);
        cairn_ops_json_string(context->out, report->verify_error);
        fprintf(context->out,
                ",\"compared\":%s,\"differences\":%lld,\"chunks\":%llu,"
                "\"chunks_without_lines\":%llu,\"partial_lines\":%llu,"
                "\"empty_members\":%llu,\"cut_bytes\":%llu",
                report->cyrus_index ? "true" : "false",
                (long long)report->differences,
                (unsigned long long)report->chunks,
                (unsigned long long)(report->chunks - report->line_chunks),
                (unsigned long long)report->partial_lines,
                (unsigned long long)report->empty_members,
                (unsigned long long)report->cut_bytes);
        fputs(",\"tables\":{", context->out);
        for (size_t i = 0; i < COMPARISON_COUNT && report->cyrus_index; i++)
            fprintf(context->out,
                    "%s\"%s\":{\"rows\":%lld,\"only_cairn\":%lld,"
                    "\"only_cyrus\":%lld}",
                    i ? "," : "", comparisons[i].table,
                    (long long)report->rows[i],
                    (long long)report->only_cairn[i],
                    (long long)report->only_cyrus[i]);
        fputs("}}\n", context->out);
        return;
    }
    fprintf(context->out, "import %s: %s%s%s\n", userid, outcome,
            report->data_path ? " -> " : "",
            report->data_path ? report->data_path : "");
    if (report->verify_error[0] != '\0')
        fprintf(context->out, "  refused: %s\n", report->verify_error);
    print_notes(context->out, report);
    for (size_t i = 0; i < COMPARISON_COUNT && report->cyrus_index; i++)
        fprintf(context->out,
                "  %-16s %6lld rows, %lld only in cairn's index, %lld only"
                " in Cyrus's\n",
                comparisons[i].table, (long long)report->rows[i],
                (long long)report->only_cairn[i],
                (long long)report->only_cyrus[i]);
    if (!report->cyrus_index && report->data_path != NULL)
        fprintf(context->out, "  no Cyrus index to compare with\n");
}

/*
 * A shared open-file-description lock on the admin's data file, which
 * conflicts with the exclusive lock backupd and Cyrus's tools hold while
 * they have the backup open. *fd keeps it until closed.
 */
static int
lock_shared(const char *path, int *fd)
{
    struct flock lock = {0};

    lock.l_type = F_RDLCK;
    lock.l_whence = SEEK_SET;
    if ((*fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return CAIRN_EIO;
    if (fcntl(*fd, F_OFD_SETLK, &lock) < 0)
        return errno == EAGAIN || errno == EACCES ? CAIRN_ELOCKED : CAIRN_EIO;
    return 0;
}

int
cairn_import_user(const char *data_dir, const char *userid, const char *source,
                  bool strict, struct cairn_import_report *report,
                  const char **outcome)
{
    struct cairn_catalog *catalog = NULL;
    char *catalog_path = NULL, *existing = NULL, *cyrus_index = NULL;
    int rc = CAIRN_ENOMEM, source_fd = -1;

    *outcome = "failed";
    if (asprintf(&catalog_path, "%s/catalog.db", data_dir) < 0 ||
        asprintf(&cyrus_index, "%s.index", source) < 0)
        goto out;
    rc = CAIRN_EIO;
    if ((mkdir(data_dir, cairn_created_dir_mode()) < 0 && errno != EEXIST) ||
        (rc = cairn_catalog_open(catalog_path, &catalog)) < 0)
        goto out;
    if ((rc = lock_shared(source, &source_fd)) < 0) {
        *outcome = rc == CAIRN_ELOCKED ? "locked by another process (backupd"
                                         " writing?), retry later"
                                       : "failed";
        goto out;
    }
    if ((rc = cairn_catalog_lookup(catalog, userid, &existing)) !=
        CAIRN_ENOENT) {
        *outcome = "user already has a backup here";
        rc = rc == 0 ? CAIRN_EEXIST : rc;
        goto out;
    }
    if ((rc = copy_in(data_dir, userid, source, &report->data_path)) < 0)
        goto out;
    if ((rc = rebuild_and_verify(report)) < 0) {
        *outcome = "verify failed";
        goto out;
    }
    if (access(cyrus_index, R_OK) == 0 &&
        (rc = compare_indexes(cyrus_index, report)) < 0) {
        if (rc == CAIRN_EMISMATCH)
            *outcome = "chunks of Cyrus's index missing";
        goto out;
    }
    if (strict && report->differences > 0) {
        *outcome = "index differs from Cyrus's";
        rc = CAIRN_EMISMATCH;
        goto out;
    }
    if ((rc = cairn_catalog_set(catalog, userid, report->data_path)) < 0)
        goto out;
    *outcome =
        report->differences > 0 ? "imported (index differs)" : "imported";
out:
    if (rc < 0 && report->data_path != NULL) {
        char *index = NULL;

        /* Only our own copy is removed; the admin's files stay. */
        unlink(report->data_path);
        if (asprintf(&index, "%s.index", report->data_path) >= 0) {
            unlink(index);
            free(index);
        }
        free(report->data_path);
        report->data_path = NULL;
    }
    if (source_fd >= 0)
        close(source_fd); /* drops the lock */
    cairn_catalog_free(catalog);
    free(catalog_path);
    free(existing);
    free(cyrus_index);
    return rc;
}

int
cairn_import_exit_code(int rc)
{
    switch (rc) {
    case 0:
        return CAIRN_EXIT_OK;
    case CAIRN_EEXIST:
    case CAIRN_ECORRUPT:
    case CAIRN_EMISMATCH:
    case CAIRN_ELOCKED:
    case CAIRN_EBADNAME:
        return CAIRN_EXIT_PROBLEM;
    case CAIRN_EIO:
    case CAIRN_EDB:
        return CAIRN_EXIT_IOERR;
    default:
        return CAIRN_EXIT_SOFTWARE;
    }
}
