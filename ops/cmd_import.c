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

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define COPY_SIZE (256 * 1024)

static const char usage[] =
    "usage: cairnctl import --data-dir dir [--strict] [--json]\n"
    "           (--user user datafile | --all backupdir)\n"
    "\n"
    "Copies a Cyrus backupd data file (and reads datafile.index, if there,\n"
    "for comparison) into dir as <dir>/<hash>/<user>_XXXXXX, rebuilds its\n"
    "index, verifies it fully, reports how cairn's index differs from\n"
    "Cyrus's, and registers the user in dir/catalog.db. The data file is\n"
    "read under a shared lock: a backupd still writing it makes the import\n"
    "fail (retry later) instead of copying half a chunk.\n"
    "  --all      every backup under a Cyrus backups partition: files\n"
    "             named <user>_XXXXXX (backupd's mkstemp names) beside a\n"
    "             .index; the user is the name without its last 7 bytes\n"
    "  --strict   differences from Cyrus's index fail the import\n"
    "  --json     one JSON object per user, one per line\n"
    "Exit: 0 imported, 1 verify failed / user exists / locked / differences\n"
    "with --strict, 64 usage, 66 no datafile, 74 I/O, 70 other.\n";

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
    int64_t members, chunks; /* gzip members in the file, chunks indexed */
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

/*
 * Counts the whole gzip members of a data file, inflating each to its
 * trailer (CRC and length checked by zlib). A member that fails its
 * check is CAIRN_ECORRUPT; a member cut short at the end of the file is
 * a torn tail (a backupd crash) and is not counted.
 */
static int
count_members(const char *path, int64_t *members)
{
    unsigned char *in = NULL, *out = NULL;
    z_stream z;
    bool z_ready = false;
    int fd = -1, rc = CAIRN_ENOMEM;
    ssize_t got = 0;

    *members = 0;
    memset(&z, 0, sizeof(z));
    if ((in = malloc(COPY_SIZE)) == NULL || (out = malloc(COPY_SIZE)) == NULL)
        goto out;
    rc = CAIRN_EIO;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 ||
        inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
        goto out;
    z_ready = true;
    for (;;) {
        int zrc;

        if (z.avail_in == 0) {
            if ((got = read(fd, in, COPY_SIZE)) < 0)
                goto out;
            if (got == 0)
                break; /* end of file: done, or a torn last member */
            z.next_in = in;
            z.avail_in = (uInt)got;
        }
        z.next_out = out;
        z.avail_out = COPY_SIZE;
        zrc = inflate(&z, Z_NO_FLUSH);
        if (zrc == Z_STREAM_END) {
            (*members)++;
            inflateReset(&z);
        } else if (zrc != Z_OK && zrc != Z_BUF_ERROR) {
            rc = CAIRN_ECORRUPT;
            goto out;
        }
    }
    rc = 0;
out:
    if (z_ready)
        inflateEnd(&z);
    if (fd >= 0)
        close(fd);
    free(in);
    free(out);
    return rc;
}

/* Rows of cairn's rebuilt chunk table. */
static int
count_chunks(const char *data_path, int64_t *chunks)
{
    sqlite3 *db = NULL;
    char *index = NULL;
    int rc = CAIRN_EDB;

    if (asprintf(&index, "%s.index", data_path) < 0)
        return CAIRN_ENOMEM;
    if (sqlite3_open_v2(index, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        (*chunks = count_rows(db, "SELECT count(*) FROM chunk")) >= 0)
        rc = 0;
    sqlite3_close(db);
    free(index);
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
    /* Verify checks what the index holds; a member the rebuild skipped
     * would be lost without a word, so every member must be indexed. */
    if (rc == 0 &&
        (rc = count_members(report->data_path, &report->members)) == 0 &&
        (rc = count_chunks(report->data_path, &report->chunks)) == 0 &&
        report->members != report->chunks) {
        snprintf(report->verify_error, sizeof(report->verify_error),
                 "%lld gzip members but %lld chunks indexed",
                 (long long)report->members, (long long)report->chunks);
        rc = CAIRN_ECORRUPT;
    }
    if (rc == CAIRN_ECORRUPT && report->verify_error[0] == '\0')
        snprintf(report->verify_error, sizeof(report->verify_error),
                 "a gzip member fails its check");
    return rc;
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

struct import_args {
    const char *data_dir, *userid, *source, *all;
    bool strict;
};

static int
parse_arguments(struct cairn_ops_context *context, int argc, char **argv,
                struct import_args *args)
{
    static const struct option options[] = {
        {"data-dir", required_argument, NULL, 'd'},
        {"user", required_argument, NULL, 'u'},
        {"all", required_argument, NULL, 'a'},
        {"strict", no_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    int option;

    memset(args, 0, sizeof(*args));
    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (option == 'd') {
            args->data_dir = optarg;
        } else if (option == 'u') {
            args->userid = optarg;
        } else if (option == 'a') {
            args->all = optarg;
        } else if (option == 's') {
            args->strict = true;
        } else if (option == 'j') {
            context->json = true;
        } else {
            fprintf(context->err, "cairnctl import: bad option '%s'\n",
                    argv[optind - 1]);
            return cairn_ops_usage(context, &cairn_ops_cmd_import);
        }
    }
    if (args->data_dir == NULL ||
        (args->all != NULL ? args->userid != NULL || argc != optind
                           : args->userid == NULL || argc - optind != 1)) {
        fprintf(context->err, "cairnctl import: missing or bad arguments\n");
        return cairn_ops_usage(context, &cairn_ops_cmd_import);
    }
    args->source = args->all ? NULL : argv[optind];
    return CAIRN_EXIT_OK;
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

/* Copies, rebuilds, verifies, compares; *outcome says how far it got. */
static int
import_user(const char *data_dir, const char *userid, const char *source,
            bool strict, struct import_report *report, const char **outcome)
{
    struct cairn_catalog *catalog = NULL;
    char *catalog_path = NULL, *existing = NULL, *cyrus_index = NULL;
    int rc = CAIRN_ENOMEM, source_fd = -1;

    *outcome = "failed";
    if (asprintf(&catalog_path, "%s/catalog.db", data_dir) < 0 ||
        asprintf(&cyrus_index, "%s.index", source) < 0)
        goto out;
    rc = CAIRN_EIO;
    if ((mkdir(data_dir, 0700) < 0 && errno != EEXIST) ||
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

static int
exit_code(int rc)
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

/* One user: import and print the report. Returns a CAIRN_E* code. */
static int
import_one(struct cairn_ops_context *context, const struct import_args *args,
           const char *userid, const char *source)
{
    const char *outcome = "failed";
    struct import_report report;
    int rc;

    memset(&report, 0, sizeof(report));
    if ((rc = cairn_node_check_userid(userid)) < 0)
        outcome = "bad user name";
    else
        rc = import_user(args->data_dir, userid, source, args->strict, &report,
                         &outcome);
    if (rc < 0 && strcmp(outcome, "failed") == 0)
        fprintf(context->err, "cairnctl import: %s: %s\n", userid,
                cairn_strerror(rc));
    print_report(context, userid, &report, outcome);
    free(report.data_path);
    return rc;
}

/* backupd's data file name: <user>_XXXXXX, not an index, not hidden. */
static bool
is_backup_name(const char *name)
{
    size_t len = strlen(name);

    return len > 7 && name[0] != '.' && name[len - 7] == '_' &&
           strchr(name + len - 6, '.') == NULL;
}

/* Imports every backup found under dir (depth-limited walk). */
static int
import_tree(struct cairn_ops_context *context, const struct import_args *args,
            const char *dir, int depth, int *found, int *worst)
{
    struct dirent **entries = NULL;
    int count = scandir(dir, &entries, NULL, alphasort), rc = 0;

    if (count < 0)
        return CAIRN_EIO;
    for (int i = 0; i < count; i++) {
        const char *name = entries[i]->d_name;
        char path[4096], index[4200], userid[256];
        struct stat st;

        if (rc == 0 && name[0] != '.' &&
            snprintf(path, sizeof(path), "%s/%s", dir, name) <
                (int)sizeof(path) &&
            stat(path, &st) == 0) {
            snprintf(index, sizeof(index), "%s.index", path);
            if (S_ISDIR(st.st_mode) && depth < 3) {
                rc = import_tree(context, args, path, depth + 1, found, worst);
            } else if (S_ISREG(st.st_mode) && is_backup_name(name) &&
                       access(index, R_OK) == 0 &&
                       strlen(name) - 7 < sizeof(userid)) {
                int one;

                snprintf(userid, sizeof(userid), "%.*s",
                         (int)(strlen(name) - 7), name);
                (*found)++;
                one = exit_code(import_one(context, args, userid, path));
                if (one > *worst)
                    *worst = one;
            }
        }
        free(entries[i]);
    }
    free(entries);
    return rc;
}

static int
run_import(struct cairn_ops_context *context, int argc, char **argv)
{
    struct import_args args;
    struct stat st;
    int status, found = 0, worst = CAIRN_EXIT_OK;

    if ((status = parse_arguments(context, argc, argv, &args)) != CAIRN_EXIT_OK)
        return status;
    if (args.all != NULL) {
        if (import_tree(context, &args, args.all, 0, &found, &worst) < 0 ||
            found == 0) {
            fprintf(context->err, "cairnctl import: no backups under %s\n",
                    args.all);
            return CAIRN_EXIT_NOINPUT;
        }
        return worst;
    }
    if (cairn_node_check_userid(args.userid) < 0) {
        fprintf(context->err, "cairnctl import: bad user name '%s'\n",
                args.userid);
        return CAIRN_EXIT_USAGE;
    }
    if (stat(args.source, &st) < 0 || !S_ISREG(st.st_mode)) {
        fprintf(context->err, "cairnctl import: %s: no such data file\n",
                args.source);
        return CAIRN_EXIT_NOINPUT;
    }
    return exit_code(import_one(context, &args, args.userid, args.source));
}

const struct cairn_ops_command cairn_ops_cmd_import = {
    "import", run_import,
    "adopt a backup made by Cyrus backupd into a node's data directory", usage};
