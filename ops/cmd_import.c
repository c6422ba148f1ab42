/*
 * cmd_import.c - `cairnctl import`: the command line. One backupd data
 * file, or every one of a partition, adopted into a node's data directory
 * (import_file.c); or a whole backupd server moved into a running cluster
 * (--from-backupd, import_backupd.c).
 */
#include "import_int.h"
#include "node.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage[] =
    "usage: cairnctl import --data-dir dir [--strict] [--json]\n"
    "           (--user user datafile | --all backupdir)\n"
    "       cairnctl [-c cluster.conf] import --from-backupd source\n"
    "           --destination name [--work-dir dir] [--replace] [--strict]\n"
    "           [--jobs n] [--cyr-dbtool path] [--imapd-conf file] [-q]\n"
    "           [--json]\n"
    "\n"
    "Copies a Cyrus backupd data file (and reads datafile.index, if there,\n"
    "for comparison) into dir as <dir>/<hash>/<user>_XXXXXX, rebuilds its\n"
    "index, verifies it fully, reports how cairn's index differs from\n"
    "Cyrus's, and registers the user in dir/catalog.db. The data file is\n"
    "read under a shared lock: a backupd still writing it makes the import\n"
    "fail (retry later) instead of copying half a chunk. Everything Cyrus\n"
    "3.6's tools accept is accepted: the empty chunks of unchanged sync\n"
    "passes and chunks of QUOTA/ACTIVATE_SIEVE lines are kept as chunk rows\n"
    "(as backupd's index has them), an unfinished last line of a chunk is\n"
    "not indexed, a member with no content and a torn last member are\n"
    "dropped; each is reported. A refusal names the chunk, its offset and\n"
    "the rule.\n"
    "  --all      every backup under a Cyrus backups partition: files\n"
    "             named <user>_XXXXXX (backupd's mkstemp names) beside a\n"
    "             .index; the user is the name without its last 7 bytes\n"
    "  --strict   differences from Cyrus's index fail the import (without\n"
    "             it, only chunks of Cyrus's index the rebuilt one lacks do)\n"
    "  --json     one JSON object per user, one per line\n"
    "\n"
    "--from-backupd moves a whole backupd server into a running cluster.\n"
    "source is backupd's imapd.conf (backups.db found by backup_db_path or\n"
    "configdirectory, read with Cyrus's cyr_dbtool), backups.db itself, or\n"
    "a backups partition directory. Each user is verified as above in the\n"
    "work dir, then sent to every replica the destination's ring gives it\n"
    "(each node verifies it again before recording it); the originals are\n"
    "never written. A node that holds the user already with the very same\n"
    "file counts as already present; with a different one the user fails\n"
    "unless --replace. Progress goes to stderr, a line per user and a\n"
    "summary (users/s, MB/s) to stdout. Rerunning resumes from the\n"
    "journal in the work dir.\n"
    "  --destination   the destination of cluster.conf (-c) to fill\n"
    "  --work-dir      verified copies and import.journal (default\n"
    "                  ./cairn-import-<destination>)\n"
    "  --replace       replace a node's different copy of a user\n"
    "  --cyr-dbtool    Cyrus's cyr_dbtool (default\n"
    "                  /usr/lib/cyrus/bin/cyr_dbtool)\n"
    "  --imapd-conf    -C for cyr_dbtool when source is backups.db\n"
    "  --jobs          users in flight at once, 1-64 (default 4)\n"
    "  -q, --quiet     no progress line\n"
    "Exit: 0 imported (or already present), 1 verify failed / user exists /\n"
    "locked / differences with --strict / some user failed, 64 usage, 66 no\n"
    "datafile or no backups, 69 nodes unreachable, 74 I/O, 70 other.\n";

struct import_args {
    const char *data_dir, *userid, *source, *all;
    bool strict, help;
    struct cairn_import_backupd_options backupd;
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
        {"help", no_argument, NULL, 'h'},
        {"from-backupd", required_argument, NULL, 'f'},
        {"destination", required_argument, NULL, 'D'},
        {"work-dir", required_argument, NULL, 'w'},
        {"replace", no_argument, NULL, 'r'},
        {"cyr-dbtool", required_argument, NULL, 't'},
        {"imapd-conf", required_argument, NULL, 'C'},
        {"quiet", no_argument, NULL, 'q'},
        {"jobs", required_argument, NULL, 'J'},
        {NULL, 0, NULL, 0},
    };
    struct cairn_import_backupd_options *b = &args->backupd;
    uint64_t jobs = 0;
    int option;

    memset(args, 0, sizeof(*args));
    b->cyr_dbtool = "/usr/lib/cyrus/bin/cyr_dbtool";
    b->jobs = 4;
    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, "q", options, NULL)) != -1) {
        switch (option) {
        case 'd':
            args->data_dir = optarg;
            break;
        case 'u':
            args->userid = optarg;
            break;
        case 'a':
            args->all = optarg;
            break;
        case 's':
            args->strict = b->strict = true;
            break;
        case 'j':
            context->json = true;
            break;
        case 'h':
            args->help = true;
            break;
        case 'f':
            b->from = optarg;
            break;
        case 'D':
            b->destination = optarg;
            break;
        case 'w':
            b->work_dir = optarg;
            break;
        case 'r':
            b->replace = true;
            break;
        case 't':
            b->cyr_dbtool = optarg;
            break;
        case 'C':
            b->dbtool_conf = optarg;
            break;
        case 'q':
            b->quiet = true;
            break;
        case 'J':
            if (cairn_parse_u64_str(optarg, 1, 64, &jobs) < 0) {
                fprintf(context->err,
                        "cairnctl import: --jobs takes 1 to 64, not '%s'\n",
                        optarg);
                return cairn_ops_usage(context, &cairn_ops_cmd_import);
            }
            b->jobs = (unsigned)jobs;
            break;
        default:
            fprintf(context->err, "cairnctl import: bad option '%s'\n",
                    argv[optind - 1]);
            return cairn_ops_usage(context, &cairn_ops_cmd_import);
        }
    }
    if (args->help)
        return CAIRN_EXIT_OK;
    if (b->from != NULL) {
        if (b->destination == NULL || args->data_dir || args->userid ||
            args->all || argc != optind) {
            fprintf(context->err,
                    "cairnctl import: --from-backupd takes --destination and"
                    " no --data-dir, --user, --all or file\n");
            return cairn_ops_usage(context, &cairn_ops_cmd_import);
        }
        return CAIRN_EXIT_OK;
    }
    if (b->destination || b->work_dir || b->replace || b->dbtool_conf ||
        b->quiet || jobs) {
        fprintf(context->err, "cairnctl import: --destination, --work-dir,"
                              " --replace, --imapd-conf, --jobs and --quiet"
                              " go with"
                              " --from-backupd\n");
        return cairn_ops_usage(context, &cairn_ops_cmd_import);
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

/* One user: import and print the report. Returns a CAIRN_E* code. */
static int
import_one(struct cairn_ops_context *context, const struct import_args *args,
           const char *userid, const char *source)
{
    const char *outcome = "failed";
    struct cairn_import_report report;
    int rc;

    memset(&report, 0, sizeof(report));
    if ((rc = cairn_node_check_userid(userid)) < 0)
        outcome = "bad user name";
    else
        rc = cairn_import_user(args->data_dir, userid, source, args->strict,
                               &report, &outcome);
    if (rc < 0 && strcmp(outcome, "failed") == 0)
        fprintf(context->err, "cairnctl import: %s: %s\n", userid,
                cairn_strerror(rc));
    cairn_import_print_report(context, userid, &report, outcome);
    cairn_import_report_release(&report);
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
                one = cairn_import_exit_code(
                    import_one(context, args, userid, path));
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
    if (args.help) {
        fputs(usage, context->out);
        return CAIRN_EXIT_OK;
    }
    if (args.backupd.from != NULL) {
        char *work_dir = NULL;

        if (args.backupd.work_dir == NULL) {
            if (asprintf(&work_dir, "cairn-import-%s",
                         args.backupd.destination) < 0)
                return CAIRN_EXIT_SOFTWARE;
            args.backupd.work_dir = work_dir;
        }
        status = cairn_import_from_backupd(context, &args.backupd);
        free(work_dir);
        return status;
    }
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
    return cairn_import_exit_code(
        import_one(context, &args, args.userid, args.source));
}

const struct cairn_ops_command cairn_ops_cmd_import = {
    "import", run_import,
    "adopt a backup made by Cyrus backupd into a node's data directory", usage};
