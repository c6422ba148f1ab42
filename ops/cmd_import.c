/*
 * cmd_import.c - `cairnctl import`: adopt a backup made by Cyrus's
 * backupd into a node's data directory. The admin's files are copied,
 * never moved or written; cairn rebuilds the index from the data file
 * alone (trusting the log, not Cyrus's index, cyrus-backups.md A.2),
 * verifies every checksum and GUID, compares its index with Cyrus's row
 * by row, and only then records the user in the catalog.
 */
#include "node.h"
#include "ops.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_SIZE (256 * 1024)

static const char usage[] =
    "usage: cairnctl import --data-dir dir --user user [--strict] [--json]\n"
    "           datafile\n"
    "\n"
    "Copies a Cyrus backupd data file (and reads datafile.index, if there,\n"
    "for comparison) into dir as <dir>/<hash>/<user>_XXXXXX, rebuilds its\n"
    "index, verifies it fully, reports how cairn's index differs from\n"
    "Cyrus's, and registers the user in dir/catalog.db.\n"
    "  --strict   differences from Cyrus's index fail the import\n"
    "Exit: 0 imported, 1 verify failed / user exists / differences with\n"
    "--strict, 64 usage, 66 no datafile, 74 I/O, 70 other.\n";

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

struct import_report {
    char *data_path;
    bool cyrus_index; /* there was one to compare with */
    int64_t rows[COMPARISON_COUNT];
    int64_t only_cairn[COMPARISON_COUNT], only_cyrus[COMPARISON_COUNT];
    int64_t differences;
    char verify_error[512];
};

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
    if ((mkdir(data_dir, 0700) < 0 && errno != EEXIST) ||
        (mkdir(path, 0700) < 0 && errno != EEXIST)) {
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

/* Rebuilds the index (open does it when there is none) and verifies. */
static int
rebuild_and_verify(struct import_report *report)
{
    struct cairn_store *store = NULL;
    int rc;

    if ((rc = cairn_store_open(report->data_path, CAIRN_STORE_BLOCK, &store)) <
        0)
        return rc;
    rc = cairn_store_verify(store, CAIRN_VERIFY_FULL, report->verify_error,
                            sizeof(report->verify_error));
    cairn_store_close(store);
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

/* query with every "@" replaced by schema; sqlite3_free() it. */
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
compare_indexes(const char *cyrus_index, struct import_report *report)
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
    rc = 0;
out:
    sqlite3_free(cairn_q);
    sqlite3_free(cyrus_q);
    sqlite3_free(sql);
    sqlite3_close(db);
    return rc;
}

static void
print_report(struct cairn_ops_context *context, const char *userid,
             const struct import_report *report, const char *outcome)
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
        fprintf(context->out, ",\"compared\":%s,\"differences\":%lld",
                report->cyrus_index ? "true" : "false",
                (long long)report->differences);
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
        fprintf(context->out, "  verify: %s\n", report->verify_error);
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

static int
parse_arguments(struct cairn_ops_context *context, int argc, char **argv,
                const char **data_dir, const char **userid, bool *strict,
                const char **source)
{
    static const struct option options[] = {
        {"data-dir", required_argument, NULL, 'd'},
        {"user", required_argument, NULL, 'u'},
        {"strict", no_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    int option;

    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (option == 'd') {
            *data_dir = optarg;
        } else if (option == 'u') {
            *userid = optarg;
        } else if (option == 's') {
            *strict = true;
        } else if (option == 'j') {
            context->json = true;
        } else {
            fprintf(context->err, "cairnctl import: bad option '%s'\n",
                    argv[optind - 1]);
            return cairn_ops_usage(context, &cairn_ops_cmd_import);
        }
    }
    if (*data_dir == NULL || *userid == NULL || argc - optind != 1) {
        fprintf(context->err, "cairnctl import: missing or bad arguments\n");
        return cairn_ops_usage(context, &cairn_ops_cmd_import);
    }
    *source = argv[optind];
    return CAIRN_EXIT_OK;
}

/* Copies, rebuilds, verifies, compares; *outcome says how far it got. */
static int
import_user(const char *data_dir, const char *userid, const char *source,
            bool strict, struct import_report *report, const char **outcome)
{
    struct cairn_catalog *catalog = NULL;
    char *catalog_path = NULL, *existing = NULL, *cyrus_index = NULL;
    int rc = CAIRN_ENOMEM;

    *outcome = "failed";
    if (asprintf(&catalog_path, "%s/catalog.db", data_dir) < 0 ||
        asprintf(&cyrus_index, "%s.index", source) < 0)
        goto out;
    rc = CAIRN_EIO;
    if ((mkdir(data_dir, 0700) < 0 && errno != EEXIST) ||
        (rc = cairn_catalog_open(catalog_path, &catalog)) < 0)
        goto out;
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
        (rc = compare_indexes(cyrus_index, report)) < 0)
        goto out;
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
    }
    cairn_catalog_free(catalog);
    free(catalog_path);
    free(existing);
    free(cyrus_index);
    return rc;
}

static int
run_import(struct cairn_ops_context *context, int argc, char **argv)
{
    const char *data_dir = NULL, *userid = NULL, *source = NULL;
    const char *outcome = "failed";
    struct import_report report;
    struct stat st;
    bool strict = false;
    int status, rc;

    memset(&report, 0, sizeof(report));
    if ((status = parse_arguments(context, argc, argv, &data_dir, &userid,
                                  &strict, &source)) != CAIRN_EXIT_OK)
        return status;
    if (cairn_node_check_userid(userid) < 0) {
        fprintf(context->err, "cairnctl import: bad user name '%s'\n", userid);
        return CAIRN_EXIT_USAGE;
    }
    if (stat(source, &st) < 0 || !S_ISREG(st.st_mode)) {
        fprintf(context->err, "cairnctl import: %s: no such data file\n",
                source);
        return CAIRN_EXIT_NOINPUT;
    }
    rc = import_user(data_dir, userid, source, strict, &report, &outcome);
    if (rc < 0 && strcmp(outcome, "failed") == 0)
        fprintf(context->err, "cairnctl import: %s: %s\n", userid,
                cairn_strerror(rc));
    print_report(context, userid, &report, outcome);
    free(report.data_path);
    if (rc == 0)
        return CAIRN_EXIT_OK;
    switch (rc) {
    case CAIRN_EEXIST:
    case CAIRN_ECORRUPT:
    case CAIRN_EMISMATCH:
        return CAIRN_EXIT_PROBLEM;
    case CAIRN_EIO:
    case CAIRN_EDB:
        return CAIRN_EXIT_IOERR;
    default:
        return CAIRN_EXIT_SOFTWARE;
    }
}

const struct cairn_ops_command cairn_ops_cmd_import = {
    "import", run_import,
    "adopt a backup made by Cyrus backupd into a node's data directory", usage};
