/*
 * cmd_restore.c - `cairnctl restore`: put a user's backup back into a
 * real Cyrus server through its sync_server (restore.h does the work).
 * The password is read from a file (or the environment), never from the
 * command line, where every user of the machine could read it.
 */
#include "daemon.h"
#include "ops.h"
#include "progress.h"
#include "restore.h"

#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAILBOXES_MAX 1024
#define PASSWORD_MAX 1024

static const char usage[] =
    "usage: cairnctl restore [--data-dir dir | --file datafile |\n"
    "           --destination name | --node name] --user user\n"
    "           [--server host:port --authname name\n"
    "            (--password-file file | env CAIRN_RESTORE_PASSWORD)]\n"
    "           [--realm realm] [--mechanism mech] [--no-compress]\n"
    "           [--starttls] [--ca-file file]\n"
    "           [--timeout seconds] [--mailbox name ...] [--into name]\n"
    "           [--partition part] [--new-uids] [--include-deleted]\n"
    "           [--keep-deleted-prefix] [--skip-expunged] [--no-meta]\n"
    "           [--activate-sieve script] [--mode restore|apply]\n"
    "           [--message guid | --mailbox name --uid uid] [--as-of time]\n"
    "           [--dry-run] [-q | --quiet] [--json]\n"
    "\n"
    "Restores the user's backup into the Cyrus sync_server at host:port,\n"
    "authenticating as a Cyrus admin. The backup is read from the running\n"
    "cluster (cairnctl -c config): the first of the user's replicas on the\n"
    "destination's ring that answers serves it; or from a node's data\n"
    "directory, or one data file + .index, when given. By default every\n"
    "live mailbox is restored with its uniqueid, UIDVALIDITY, UIDs, MODSEQs,\n"
    "UIDNEXT kept (where it is new on the target), plus subscriptions, seen\n"
    "state and sieve scripts (whole-user restores only).\n"
    "  --destination  the destination whose ring places the user (default:\n"
    "                 the config's only one)\n"
    "  --node         read from this node only\n"
    "  --mailbox      only this mailbox (internal name, or INBOX, Work, ...)\n"
    "  --into         restore the one --mailbox under this name (new ids)\n"
    "  --message      only the message with this GUID (40 hex digits), in\n"
    "                 every chosen mailbox that held it: it joins the live\n"
    "                 mailbox as a new message (new UID), even if expunged\n"
    "  --uid          only the message with this UID of the one --mailbox,\n"
    "                 as --message does\n"
    "  --as-of        the backup as it stood at this time (ISO 8601 such as\n"
    "                 2026-12-07T21:00:00Z, UTC without a zone; \"2 days\n"
    "                 ago\"; @epoch): the user's log is copied (from the\n"
    "                 serving node, or --data-dir) into $TMPDIR and indexed\n"
    "                 up to that time; before the log's first line is an\n"
    "                 error naming the oldest restorable time (see\n"
    "                 cairnctl user history)\n"
    "  --new-uids     let the server assign uniqueid, UIDVALIDITY and UIDs\n"
    "  --include-deleted  DELETED.* mailboxes too, under their old names\n"
    "                 unless --keep-deleted-prefix\n"
    "  --activate-sieve  make this script active (backups do not say which\n"
    "                 one was)\n"
    "  --mode apply   (the default unless --new-uids or --into) APPLY\n"
    "                 MAILBOX as sync_client: exact state incl. UIDNEXT,\n"
    "                 checked by the server's SYNC_CRC; RESTORE MAILBOX for\n"
    "                 mailboxes the target already holds otherwise\n"
    "  --mode restore RESTORE MAILBOX as Cyrus's restore: appends (a second\n"
    "                 run duplicates); UIDNEXT becomes last record + 1\n"
    "                 (UIDs of purged messages may be reused)\n"
    "  --timeout      seconds to wait for the server at each step (600)\n"
    "  --starttls     refuse a server that does not offer STARTTLS (it is\n"
    "                 used whenever offered, before authenticating)\n"
    "  --ca-file      PEM CA certificate(s): the server's TLS certificate\n"
    "                 must chain to one and name the --server host (without\n"
    "                 it TLS encrypts but does not authenticate the server)\n"
    "  --dry-run      show what would be sent, connect to nothing\n"
    "Exit: 0 done, 1 the server refused something, authentication failed\n"
    "or the user stayed locked for --timeout,\n"
    "64 usage, 66 no such backup, 69 server or every replica unreachable,\n"
    "74 I/O, 70 other.\n";

struct restore_args {
    const char *data_dir, *file, *destination, *node, *user, *server, *authname,
        *password_file;
    const char *realm, *mechanism, *into, *partition, *mode, *ca_file;
    const char *activate_sieve, *message, *as_of;
    uint32_t uid;
    const char *mailboxes[MAILBOXES_MAX];
    size_t mailbox_count;
    uint64_t timeout;
    bool no_compress, new_uids, include_deleted, keep_deleted_prefix;
    bool skip_expunged, no_meta, dry_run, quiet, starttls;
};

/* The options: each stores a string or sets a flag in restore_args. */
enum option_kind { TEXT, FLAG, MAILBOX, TIMEOUT, JSON, UID, HELP };

static const struct {
    struct option option;
    enum option_kind kind;
    size_t offset;
} option_table[] = {
#define TEXT_OPTION(name, field)                                               \
    {                                                                          \
        {name, required_argument, NULL, 0}, TEXT,                              \
            offsetof(struct restore_args, field)                               \
    }
#define FLAG_OPTION(name, field)                                               \
    {                                                                          \
        {name, no_argument, NULL, 0}, FLAG,                                    \
            offsetof(struct restore_args, field)                               \
    }
    TEXT_OPTION("data-dir", data_dir),
    TEXT_OPTION("file", file),
    TEXT_OPTION("destination", destination),
    TEXT_OPTION("node", node),
    TEXT_OPTION("user", user),
    TEXT_OPTION("server", server),
    TEXT_OPTION("authname", authname),
    TEXT_OPTION("password-file", password_file),
    TEXT_OPTION("realm", realm),
    TEXT_OPTION("mechanism", mechanism),
    TEXT_OPTION("into", into),
    TEXT_OPTION("partition", partition),
    TEXT_OPTION("mode", mode),
    TEXT_OPTION("activate-sieve", activate_sieve),
    TEXT_OPTION("message", message),
    TEXT_OPTION("as-of", as_of),
    TEXT_OPTION("ca-file", ca_file),
    FLAG_OPTION("starttls", starttls),
    FLAG_OPTION("no-compress", no_compress),
    FLAG_OPTION("new-uids", new_uids),
    FLAG_OPTION("include-deleted", include_deleted),
    FLAG_OPTION("keep-deleted-prefix", keep_deleted_prefix),
    FLAG_OPTION("skip-expunged", skip_expunged),
    FLAG_OPTION("no-meta", no_meta),
    FLAG_OPTION("dry-run", dry_run),
    FLAG_OPTION("quiet", quiet),
    {{"mailbox", required_argument, NULL, 0}, MAILBOX, 0},
    {{"timeout", required_argument, NULL, 0}, TIMEOUT, 0},
    {{"json", no_argument, NULL, 0}, JSON, 0},
    {{"uid", required_argument, NULL, 0}, UID, 0},
    {{"help", no_argument, NULL, 0}, HELP, 0},
#undef TEXT_OPTION
#undef FLAG_OPTION
};
#define OPTION_COUNT (sizeof(option_table) / sizeof(option_table[0]))

/* Stores one parsed option; CAIRN_EXIT_OK or a usage exit code. */
static int
store_option(struct cairn_ops_context *context, struct restore_args *args,
             size_t index, char *value)
{
    char *field = (char *)args + option_table[index].offset;

    switch (option_table[index].kind) {
    case TEXT:
        *(const char **)(void *)field = value;
        return CAIRN_EXIT_OK;
    case FLAG:
        *(bool *)(void *)field = true;
        return CAIRN_EXIT_OK;
    case JSON:
        context->json = true;
        return CAIRN_EXIT_OK;
    case HELP:
        fputs(usage, context->out);
        return -1;
    case MAILBOX:
        if (args->mailbox_count == MAILBOXES_MAX) {
            fprintf(context->err, "cairnctl restore: too many --mailbox\n");
            return CAIRN_EXIT_USAGE;
        }
        args->mailboxes[args->mailbox_count++] = value;
        return CAIRN_EXIT_OK;
    case TIMEOUT:
        if (cairn_parse_u64_str(value, 1, 86400, &args->timeout) == 0)
            return CAIRN_EXIT_OK;
        fprintf(context->err, "cairnctl restore: bad --timeout\n");
        return CAIRN_EXIT_USAGE;
    case UID: {
        uint64_t uid = 0;

        if (cairn_parse_u64_str(value, 1, UINT32_MAX, &uid) == 0) {
            args->uid = (uint32_t)uid;
            return CAIRN_EXIT_OK;
        }
        fprintf(context->err, "cairnctl restore: bad --uid '%s'\n", value);
        return CAIRN_EXIT_USAGE;
    }
    }
    return CAIRN_EXIT_USAGE;
}

static int
parse_arguments(struct cairn_ops_context *context, int argc, char **argv,
                struct restore_args *args)
{
    struct option options[OPTION_COUNT + 1];
    int option, index = 0, status;

    for (size_t i = 0; i < OPTION_COUNT; i++)
        options[i] = option_table[i].option;
    memset(&options[OPTION_COUNT], 0, sizeof(options[OPTION_COUNT]));
    memset(args, 0, sizeof(*args));
    /* a big mailbox takes the server a while: sync_client waits 30 min */
    args->timeout = 600;
    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, "q", options, &index)) != -1) {
        if (option == 'q') { /* -q: --quiet */
            args->quiet = true;
            continue;
        }
        if (option != 0) {
            fprintf(context->err, "cairnctl restore: bad option '%s'\n",
                    argv[optind - 1]);
            return cairn_ops_usage(context, &cairn_ops_cmd_restore);
        }
        if ((status = store_option(context, args, (size_t)index, optarg)) < 0)
            return status; /* --help: done */
        if (status != CAIRN_EXIT_OK)
            return cairn_ops_usage(context, &cairn_ops_cmd_restore);
    }
    if (optind != argc || args->user == NULL ||
        (args->data_dir != NULL) + (args->file != NULL) > 1 ||
        ((args->data_dir != NULL || args->file != NULL) &&
         (args->destination != NULL || args->node != NULL)) ||
        (args->mode != NULL && strcmp(args->mode, "restore") != 0 &&
         strcmp(args->mode, "apply") != 0) ||
        ((args->message != NULL || args->uid != 0) && args->mode != NULL &&
         strcmp(args->mode, "apply") == 0) ||
        (args->uid != 0 && args->mailbox_count != 1) ||
        (args->as_of != NULL && args->file != NULL) ||
        (!args->dry_run && (args->server == NULL || args->authname == NULL))) {
        fprintf(context->err, "cairnctl restore: missing or bad arguments\n");
        return cairn_ops_usage(context, &cairn_ops_cmd_restore);
    }
    return CAIRN_EXIT_OK;
}

/* The password: first line of the file, or CAIRN_RESTORE_PASSWORD. */
static int
read_password(struct cairn_ops_context *context, const char *path,
              char *password, size_t size)
{
    const char *env = getenv("CAIRN_RESTORE_PASSWORD");
    FILE *file;
    size_t len;
    mode_t mode;

    if (path == NULL) {
        if (env == NULL || strlen(env) >= size) {
            fprintf(context->err, "cairnctl restore: no --password-file and"
                                  " no CAIRN_RESTORE_PASSWORD\n");
            return CAIRN_EXIT_USAGE;
        }
        snprintf(password, size, "%s", env);
        return CAIRN_EXIT_OK;
    }
    if ((file = fopen(path, "r")) == NULL) {
        fprintf(context->err, "cairnctl restore: %s: cannot open\n", path);
        return CAIRN_EXIT_NOINPUT;
    }
    if (cairn_secret_file_exposed(path, &mode))
        fprintf(context->err,
                "cairnctl restore: warning: %s holds a password and its "
                "group or others may read or write it (mode %04o): chmod "
                "600 it\n",
                path, (unsigned)mode);
    if (fgets(password, (int)size, file) == NULL)
        password[0] = '\0';
    fclose(file);
    len = strcspn(password, "\r\n");
    password[len] = '\0';
    return CAIRN_EXIT_OK;
}

static int
exit_code(int rc)
{
    switch (rc) {
    case CAIRN_ENOENT:
    case CAIRN_EBADNAME:
        return CAIRN_EXIT_NOINPUT;
    case CAIRN_EUNAVAILABLE:
    case CAIRN_ETIMEOUT:
        return CAIRN_EXIT_UNAVAILABLE;
    case CAIRN_EIO:
    case CAIRN_ECORRUPT:
    case CAIRN_EMISMATCH:
    case CAIRN_EDB:
        return CAIRN_EXIT_IOERR;
    case CAIRN_EAUTH:
    case CAIRN_ECONFIG:
    case CAIRN_EPROTO:
    case CAIRN_ELOCKED:
        return CAIRN_EXIT_PROBLEM;
    default:
        return CAIRN_EXIT_SOFTWARE;
    }
}

/* The run's steps on one progress line: items of the step, bytes
 * uploaded, the mailbox or partition at the end. */
static void
show_progress(void *ctx, const struct cairn_restore_progress *p)
{
    struct cairn_ops_progress *progress = ctx;

    progress->unit = p->step;
    cairn_ops_progress_set_total(progress, p->total, 0);
    cairn_ops_progress_update(progress, p->done, p->bytes, p->name);
}

static void
show_notice(void *ctx, const char *text)
{
    struct cairn_ops_context *context = ctx;

    fprintf(context->err, "restore: %s\n", text);
}

static void
print_plan(struct cairn_ops_context *context,
           const struct cairn_restore_plan *plan)
{
    for (size_t i = 0; i < plan->mailbox_count && !context->json; i++) {
        const struct cairn_dlist *records = NULL;
        const char *name = NULL, *uniqueid = NULL;

        (void)cairn_dlist_get_atom(plan->mailboxes[i], "MBOXNAME", &name);
        (void)cairn_dlist_get_atom(plan->mailboxes[i], "UNIQUEID", &uniqueid);
        (void)cairn_dlist_get_list(plan->mailboxes[i], "RECORD", &records);
        fprintf(context->out, "mailbox %s uniqueid %s records %zu\n",
                name ? name : "?", uniqueid ? uniqueid : "NIL",
                cairn_dlist_count(records));
    }
    for (size_t i = 0; i < plan->meta_count && !context->json; i++)
        fprintf(context->out, "apply %s\n", cairn_dlist_name(plan->meta[i]));
}

static void
print_summary(struct cairn_ops_context *context, const struct restore_args *a,
              const struct cairn_restore_plan *plan,
              const struct cairn_restore_result *r, int rc, const char *cause,
              double seconds)
{
    if (rc < 0 && cause[0] == '\0')
        cause = cairn_strerror(rc);
    if (context->json) {
        fprintf(context->out, "{\"user\":");
        cairn_ops_json_string(context->out, a->user);
        fprintf(context->out,
                ",\"ok\":%s,\"dry_run\":%s,\"mailboxes\":%zu,"
                "\"records\":%llu,\"messages\":%llu,\"message_bytes\":%llu,"
                "\"mailboxes_restored\":%llu,\"mailboxes_fallback\":%llu,"
                "\"messages_uploaded\":%llu,\"bytes_uploaded\":%llu,"
                "\"messages_present\":%llu,\"meta_sent\":%llu,"
                "\"meta_refused\":%llu,\"seconds\":%.3f,\"error\":",
                rc == 0 ? "true" : "false", a->dry_run ? "true" : "false",
                plan ? plan->mailbox_count : 0,
                (unsigned long long)(plan ? plan->record_count : 0),
                (unsigned long long)(plan ? plan->message_count : 0),
                (unsigned long long)(plan ? plan->message_bytes : 0),
                (unsigned long long)r->mailboxes_restored,
                (unsigned long long)r->mailboxes_fallback,
                (unsigned long long)r->messages_uploaded,
                (unsigned long long)r->bytes_uploaded,
                (unsigned long long)r->messages_present,
                (unsigned long long)r->meta_sent,
                (unsigned long long)r->meta_refused, seconds);
        cairn_ops_json_string(context->out, rc == 0 ? "" : cause);
        fprintf(context->out, ",\"error_code\":");
        cairn_ops_json_string(context->out, rc == 0 ? "" : cairn_strerror(rc));
        fprintf(context->out, ",\"failed_mailbox\":");
        cairn_ops_json_string(context->out, r->failed_mailbox);
        fprintf(context->out, ",\"server_text\":");
        cairn_ops_json_string(context->out, r->server_text);
        fprintf(context->out, "}\n");
        if (rc < 0)
            fprintf(context->err, "cairnctl restore: %s: FAILED: %s\n", a->user,
                    cause);
        return;
    }
    fprintf(context->out,
            "restore %s: %s: %zu mailboxes, %llu records, %llu bodies "
            "(%llu bytes) planned; %llu mailboxes restored (%llu by "
            "fallback), %llu bodies uploaded (%llu bytes), %llu already "
            "there, %llu/%llu meta accepted, %.2f s\n",
            a->user, rc == 0 ? "ok" : "FAILED", plan ? plan->mailbox_count : 0,
            (unsigned long long)(plan ? plan->record_count : 0),
            (unsigned long long)(plan ? plan->message_count : 0),
            (unsigned long long)(plan ? plan->message_bytes : 0),
            (unsigned long long)r->mailboxes_restored,
            (unsigned long long)r->mailboxes_fallback,
            (unsigned long long)r->messages_uploaded,
            (unsigned long long)r->bytes_uploaded,
            (unsigned long long)r->messages_present,
            (unsigned long long)r->meta_sent,
            (unsigned long long)(r->meta_sent + r->meta_refused), seconds);
    if (rc < 0)
        fprintf(context->err, "cairnctl restore: %s: FAILED: %s\n", a->user,
                cause);
}

/* "host:port" or "[v6]:port" into host and port (in buffer). */
static int
split_server(const char *server, char *buffer, size_t size, const char **host,
             const char **port)
{
    char *colon;

    if (snprintf(buffer, size, "%s", server) >= (int)size)
        return CAIRN_EINVAL;
    if ((colon = strrchr(buffer, ':')) == NULL || colon[1] == '\0')
        return CAIRN_EINVAL;
    *colon = '\0';
    *port = colon + 1;
    *host = buffer;
    if (buffer[0] == '[' && colon > buffer && colon[-1] == ']') {
        colon[-1] = '\0';
        *host = buffer + 1;
    }
    return 0;
}

/* Before any work: the server's form and where the password comes from. */
static int
check_connection_arguments(struct cairn_ops_context *context,
                           const struct restore_args *args)
{
    const char *host, *port;
    char server[512];

    if (args->dry_run)
        return CAIRN_EXIT_OK;
    if (split_server(args->server, server, sizeof(server), &host, &port) < 0) {
        fprintf(context->err, "cairnctl restore: bad --server '%s'\n",
                args->server);
        return cairn_ops_usage(context, &cairn_ops_cmd_restore);
    }
    if (args->password_file == NULL &&
        getenv("CAIRN_RESTORE_PASSWORD") == NULL) {
        fprintf(context->err, "cairnctl restore: no --password-file and no"
                              " CAIRN_RESTORE_PASSWORD\n");
        return cairn_ops_usage(context, &cairn_ops_cmd_restore);
    }
    if (args->password_file != NULL && access(args->password_file, R_OK) != 0) {
        fprintf(context->err, "cairnctl restore: %s: cannot read\n",
                args->password_file);
        return CAIRN_EXIT_NOINPUT;
    }
    return CAIRN_EXIT_OK;
}

/* "restore: connected to HOST:PORT (PLAIN, TLSv1.3, certificate verified)" */
static void
show_connection(struct cairn_ops_context *context, const char *server,
                const struct cairn_restore_session *session)
{
    bool verified = false;
    const char *tls = cairn_restore_session_tls(session, &verified);

    fprintf(context->err, "restore: connected to %s (%s%s%s%s%s)\n", server,
            cairn_restore_session_mechanism(session),
            cairn_restore_session_compressed(session) ? ", compressed" : "",
            tls ? ", " : ", no TLS", tls ? tls : "",
            !tls       ? ""
            : verified ? ", certificate verified"
                       : ", certificate NOT verified (no --ca-file)");
}

static int
connect_and_run(struct cairn_ops_context *context,
                const struct restore_args *args,
                struct cairn_restore_source *source,
                const struct cairn_restore_plan *plan,
                struct cairn_restore_result *result, char *cause,
                size_t cause_size)
{
    struct cairn_restore_session_options session_options = {0};
    struct cairn_restore_session *session = NULL;
    struct cairn_ops_progress progress;
    char password[PASSWORD_MAX], server[512], error[512];
    int status, rc;

    if ((status = read_password(context, args->password_file, password,
                                sizeof(password))) != CAIRN_EXIT_OK) {
        snprintf(cause, cause_size, "no password: %s",
                 args->password_file ? args->password_file
                                     : "CAIRN_RESTORE_PASSWORD");
        return status == CAIRN_EXIT_NOINPUT ? CAIRN_ENOENT : CAIRN_EINVAL;
    }
    if ((rc = split_server(args->server, server, sizeof(server),
                           &session_options.host, &session_options.port)) < 0) {
        snprintf(cause, cause_size, "bad --server '%s'", args->server);
        goto out;
    }
    session_options.authname = args->authname;
    session_options.password = password;
    session_options.realm = args->realm;
    session_options.mechs = args->mechanism;
    session_options.compress = !args->no_compress;
    session_options.timeout_seconds = (int)args->timeout;
    session_options.starttls = args->starttls;
    session_options.ca_file = args->ca_file;
    if ((rc = cairn_restore_session_open(&session_options, &session, error,
                                         sizeof(error))) < 0) {
        snprintf(cause, cause_size, "server %s: %s", args->server,
                 error[0] ? error : cairn_strerror(rc));
        goto out;
    }
    if (!args->quiet)
        show_connection(context, args->server, session);
    cairn_ops_progress_start(&progress, context->err, args->quiet, "restore",
                             "items", 0, 0);
    rc = cairn_restore_run(session, source, plan,
                           cairn_ops_progress_shown(&progress) ? show_progress
                                                               : NULL,
                           &progress, result);
    progress.unit = "messages uploaded"; /* the whole run's figures */
    cairn_ops_progress_set_total(&progress, 0, 0);
    cairn_ops_progress_end(&progress, result->messages_uploaded,
                           result->bytes_uploaded);
    if (rc < 0)
        snprintf(cause, cause_size, "%s", result->error);
out:
    memset(password, 0, sizeof(password));
    cairn_restore_session_close(session);
    return rc;
}

/*
 * Opens the user on the cluster named by the config: the first replica
 * that answers serves (said on stderr). *source is owned by the caller.
 */
static int
open_remote(struct cairn_ops_context *context, const struct restore_args *args,
            struct cairn_restore_source **source, char *cause,
            size_t cause_size)
{
    struct cairn_restore_remote_options options = {0};
    struct cairn_config *config = NULL;
    char error[1024];
    int rc;

    if (cairn_ops_load_config(context, NULL, &config) != 0) {
        snprintf(cause, cause_size, "cannot load the cluster config");
        return CAIRN_ECONFIG;
    }
    options.config = config;
    options.destination = args->destination;
    options.node = args->node;
    /* a node answers in seconds; a dead one costs this before the next
     * replica serves the bodies */
    options.timeout_ms = (args->timeout < 60 ? args->timeout : 60) * 1000;
    /* a replica that is down costs this, not a whole request timeout */
    options.ping_timeout_ms = args->timeout < 5 ? args->timeout * 1000 : 5000;
    options.notice = show_notice;
    options.notice_ctx = context;
    rc = cairn_restore_source_open_remote(&options, args->user, source, error,
                                          sizeof(error));
    if (rc < 0)
        snprintf(cause, cause_size, "backup of %s on the cluster: %s",
                 args->user, error[0] ? error : cairn_strerror(rc));
    else if (rc == 0 && !args->quiet)
        fprintf(context->err, "restore: reading %s from node %s\n", args->user,
                cairn_restore_source_node(*source));
    cairn_config_free(config);
    return rc;
}

/*
 * Opens the backup, retrying for up to --timeout while the user's lock is
 * held (a running cairn-node closes idle users after a while). *source is
 * owned by the caller.
 */
static int
open_source(struct cairn_ops_context *context, const struct restore_args *args,
            struct cairn_restore_source **source, char *cause,
            size_t cause_size)
{
    const struct timespec pause = {0, 200 * 1000 * 1000};
    uint64_t waited_ms = 0;
    int rc;

    if (args->data_dir == NULL && args->file == NULL)
        return open_remote(context, args, source, cause, cause_size);
    for (;;) {
        rc = args->data_dir != NULL
                 ? cairn_restore_source_open_store(args->data_dir, args->user,
                                                   source)
                 : cairn_restore_source_open_file(args->file, args->user,
                                                  source);
        if (rc < 0 &&
            (rc != CAIRN_ELOCKED || waited_ms >= args->timeout * 1000))
            snprintf(cause, cause_size, "backup of %s in %s: %s%s", args->user,
                     args->data_dir ? args->data_dir : args->file,
                     cairn_strerror(rc),
                     rc == CAIRN_ELOCKED  ? " (still locked after --timeout:"
                                            " a cairn-node holds the user)"
                     : rc == CAIRN_ENOENT ? " (no such user there)"
                                          : "");
        if (rc != CAIRN_ELOCKED || waited_ms >= args->timeout * 1000)
            return rc;
        if (waited_ms == 0 && !args->quiet)
            fprintf(context->err,
                    "restore: %s is locked (a cairn-node "
                    "writing it?), waiting up to %llu s\n",
                    args->user, (unsigned long long)args->timeout);
        nanosleep(&pause, NULL);
        waited_ms += 200;
    }
}

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/*
 * --as-of: *source (the backup now) is replaced by a source over a
 * scratch copy of the user's log in a new directory (*scratch, owned,
 * removed by the caller) indexed up to the time.
 */
static int
open_as_of(struct cairn_ops_context *context, const struct restore_args *args,
           struct cairn_restore_source **source, char **scratch, char *cause,
           size_t cause_size)
{
    const char *tmp = getenv("TMPDIR");
    char error[1024] = "", when[32], first[32], last[32];
    char *data_path = NULL;
    int64_t as_of = 0, oldest = 0, newest = 0;
    int rc;

    if ((rc = cairn_restore_parse_time(args->as_of, (int64_t)time(NULL),
                                       &as_of)) < 0) {
        snprintf(cause, cause_size,
                 "bad --as-of '%s' (ISO 8601, \"N days ago\" or @epoch)",
                 args->as_of);
        return rc;
    }
    if (asprintf(scratch, "%s/cairn-restore-XXXXXX", tmp ? tmp : "/tmp") < 0) {
        *scratch = NULL;
        return CAIRN_ENOMEM;
    }
    if (mkdtemp(*scratch) == NULL) {
        snprintf(cause, cause_size, "%s: %s", *scratch, strerror(errno));
        free(*scratch);
        *scratch = NULL;
        return CAIRN_EIO;
    }
    if ((rc = cairn_restore_scratch_copy(
             args->data_dir ? NULL : *source, args->data_dir, args->user,
             *scratch, &data_path, error, sizeof(error))) < 0 ||
        (rc = cairn_restore_scratch_as_of(data_path, as_of, &oldest, &newest,
                                          error, sizeof(error))) < 0) {
        snprintf(cause, cause_size, "backup of %s as of %s: %s", args->user,
                 args->as_of, error[0] ? error : cairn_strerror(rc));
        goto out;
    }
    cairn_restore_source_free(*source);
    *source = NULL;
    if ((rc = cairn_restore_source_open_file(data_path, args->user, source)) <
        0) {
        snprintf(cause, cause_size, "reading the copy %s: %s", data_path,
                 cairn_strerror(rc));
        goto out;
    }
    cairn_restore_format_time(as_of, when);
    cairn_restore_format_time(oldest, first);
    cairn_restore_format_time(newest, last);
    if (!args->quiet)
        fprintf(context->err, "restore: %s as of %s (the log holds %s to %s)\n",
                args->user, when, first, last);
out:
    free(data_path);
    return rc;
}

/* The library's options from the command line's. */
static void
restore_options(const struct restore_args *args,
                struct cairn_restore_options *options)
{
    cairn_restore_options_default(options);
    options->mailboxes = args->mailboxes;
    options->mailbox_count = args->mailbox_count;
    options->into = args->into;
    options->partition = args->partition;
    options->new_identity = args->new_uids;
    options->include_deleted = args->include_deleted;
    options->keep_deleted_prefix = args->keep_deleted_prefix;
    options->skip_expunged = args->skip_expunged;
    options->skip_meta = args->no_meta;
    options->activate_sieve = args->activate_sieve;
    options->message_guid = args->message;
    options->uid = args->uid;
    /* single messages join the live mailbox as new ones: new UIDs */
    if (args->message != NULL || args->uid != 0)
        options->new_identity = true;
    /* APPLY keeps UIDNEXT past purged messages and has the server check
     * the result; it needs the mailbox's own identity. */
    if (args->mode != NULL ? strcmp(args->mode, "apply") == 0
                           : !options->new_identity && args->into == NULL)
        options->mode = CAIRN_RESTORE_MODE_APPLY;
}

static void
plan_failure(struct cairn_restore_source *source, int rc, char *cause,
             size_t cause_size)
{
    const char *why =
        source->ops->error ? source->ops->error(source->ctx) : NULL;

    snprintf(cause, cause_size, "planning: %s%s%s",
             why ? why : cairn_strerror(rc),
             rc == CAIRN_ENOENT && why == NULL
                 ? " (no such mailbox in the backup, or no chosen message"
                   " (--message / --uid) in the chosen mailboxes)"
                 : "",
             rc == CAIRN_EINVAL ? " (--into and --uid need one --mailbox; apply"
                                  " mode keeps identities)"
                                : "");
}

static int
run_restore(struct cairn_ops_context *context, int argc, char **argv)
{
    struct restore_args args;
    struct cairn_restore_options options;
    struct cairn_restore_source *source = NULL;
    struct cairn_restore_plan *plan = NULL;
    struct cairn_restore_result result;
    struct timespec start, end;
    char cause[2048] = "", *scratch = NULL;
    int status, rc;

    memset(&result, 0, sizeof(result));
    clock_gettime(CLOCK_MONOTONIC, &start);
    if ((status = parse_arguments(context, argc, argv, &args)) < 0)
        return CAIRN_EXIT_OK; /* --help */
    if (status != CAIRN_EXIT_OK ||
        (status = check_connection_arguments(context, &args)) != CAIRN_EXIT_OK)
        return status;
    restore_options(&args, &options);
    if ((rc = open_source(context, &args, &source, cause, sizeof(cause))) < 0 ||
        (args.as_of != NULL &&
         (rc = open_as_of(context, &args, &source, &scratch, cause,
                          sizeof(cause))) < 0))
        goto out;
    if ((rc = cairn_restore_plan_build(source, &options, &plan)) < 0) {
        plan_failure(source, rc, cause, sizeof(cause));
        if (rc == CAIRN_EINVAL) {
            fprintf(context->err, "cairnctl restore: %s\n", cause);
            status = CAIRN_EXIT_USAGE;
            goto release;
        }
        goto out;
    }
    if (args.dry_run)
        print_plan(context, plan);
    else
        rc = connect_and_run(context, &args, source, plan, &result, cause,
                             sizeof(cause));
out:
    clock_gettime(CLOCK_MONOTONIC, &end);
    print_summary(context, &args, plan, &result, rc, cause,
                  (double)(end.tv_sec - start.tv_sec) +
                      (double)(end.tv_nsec - start.tv_nsec) / 1e9);
    status = rc == 0 ? CAIRN_EXIT_OK : exit_code(rc);
release:
    cairn_restore_plan_free(plan);
    cairn_restore_source_free(source);
    if (scratch != NULL)
        nftw(scratch, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(scratch);
    return status;
}

const struct cairn_ops_command cairn_ops_cmd_restore = {
    "restore", run_restore,
    "restore a user's backup into a Cyrus server (sync_server)", usage};
