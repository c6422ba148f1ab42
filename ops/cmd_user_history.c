/*
 * cmd_user_history.c - `cairnctl user history USER`: the points in time
 * a user's backup can be restored to (restore --as-of) and what changed
 * at each. A point is a chunk of the log (one sync pass): its last line
 * time. The log is copied into a scratch directory (from the serving
 * node, or a data directory) and read line by line, message bodies
 * skipped, so memory stays bounded.
 */
#include "cluster_int.h"
#include "restore.h"

#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define HEAD_MAX 4096 /* the start of each line kept, to name its mailbox */
#define TAIL_MAX 256  /* the end of each segment, to find a literal */
#define CHANGES_MAX 2048

static const char usage[] =
    "usage: cairnctl user history [-d data-dir | --destination name |\n"
    "           --node name] [--mailbox name] [--json] [-t seconds] user\n"
    "\n"
    "Lists the points in time the user's backup can be restored to with\n"
    "cairnctl restore --as-of (one per chunk of the log, i.e. per sync pass:\n"
    "its last line's time, UTC) and what changed at each: mailboxes written\n"
    "(MAILBOX name), deleted (UNMAILBOX), renamed, messages expunged, bodies\n"
    "added, seen state, subscriptions, sieve. --mailbox: only changes of\n"
    "that mailbox (internal name, or INBOX, Work, ...). The log is copied\n"
    "from the first replica that answers (or -d) into $TMPDIR.\n"
    "Exit: 0 listed, 64 usage, 66 no such user, 69 no replica answers,\n"
    "74 I/O, 70 other.\n";

struct history_args {
    const char *data_dir, *destination, *node, *mailbox, *user;
    uint64_t timeout;
};

static int
parse_history_args(struct cairn_ops_context *context, int argc, char **argv,
                   struct history_args *args)
{
    static const struct option options[] = {
        {"data-dir", required_argument, NULL, 'd'},
        {"destination", required_argument, NULL, 'D'},
        {"node", required_argument, NULL, 'n'},
        {"mailbox", required_argument, NULL, 'm'},
        {"timeout", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int option;

    memset(args, 0, sizeof(*args));
    args->timeout = 60;
    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, "d:n:m:t:jh", options, NULL)) !=
           -1) {
        switch (option) {
        case 'd':
            args->data_dir = optarg;
            break;
        case 'D':
            args->destination = optarg;
            break;
        case 'n':
            args->node = optarg;
            break;
        case 'm':
            args->mailbox = optarg;
            break;
        case 'j':
            context->json = true;
            break;
        case 't':
            if (cairn_parse_u64_str(optarg, 1, 86400, &args->timeout) < 0)
                goto bad;
            break;
        case 'h':
            fputs(usage, context->out);
            return -1;
        default:
            goto bad;
        }
    }
    if (optind + 1 != argc)
        goto bad;
    args->user = argv[optind];
    return 0;
bad:
    fprintf(context->err, "cairnctl user history: bad arguments\n");
    fputs(usage, context->err);
    return CAIRN_EXIT_USAGE;
}

/* --- the chunks: restorable points ----------------------------------------
 */

struct point {
    int64_t ts_start, ts_end;
    int64_t offset, length; /* the gzip member in the data file */
    char changes[CHANGES_MAX];
    size_t lines;
};

static int
load_points(const char *data_path, struct point **points, size_t *count)
{
    static const char sql[] =
        "SELECT ts_start, ts_end, offset, length FROM chunk ORDER BY id";
    char index_path[4096];
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int rc = CAIRN_EDB;

    *points = NULL;
    *count = 0;
    snprintf(index_path, sizeof(index_path), "%s.index", data_path);
    if (sqlite3_open_v2(index_path, &db, SQLITE_OPEN_READONLY, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
        goto out;
    while (sqlite3_step(stmt) == SQLITE_ROW) {
        struct point *grown = realloc(*points, (*count + 1) * sizeof(**points));

        if (grown == NULL) {
            rc = CAIRN_ENOMEM;
            goto out;
        }
        *points = grown;
        memset(&grown[*count], 0, sizeof(grown[*count]));
        grown[*count].ts_start = sqlite3_column_int64(stmt, 0);
        grown[*count].ts_end = sqlite3_column_int64(stmt, 1);
        grown[*count].offset = sqlite3_column_int64(stmt, 2);
        grown[*count].length = sqlite3_column_int64(stmt, 3);
        (*count)++;
    }
    rc = 0;
out:
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return rc;
}

/* --- the lines ------------------------------------------------------------
 */

struct line_reader {
    char head[HEAD_MAX + 1];
    size_t head_len;
    char tail[TAIL_MAX + 1]; /* the current segment's end */
    size_t tail_len;
    uint64_t skip; /* literal bytes still to skip */
    size_t literals;
    void (*line)(void *ctx, struct line_reader *reader);
    void *ctx;
};

/* The size of a literal that ends the segment ("{N}", "{N+}", "%{p g N}"). */
static bool
literal_size(const char *tail, size_t len, uint64_t *size)
{
    const char *open;
    char number[32];
    size_t n = 0;
    const char *at;

    if (len < 3 || tail[len - 1] != '}')
        return false;
    if ((open = memrchr(tail, '{', len)) == NULL)
        return false;
    at = tail + len - 2;
    if (*at == '+')
        at--;
    while (at > open && *at >= '0' && *at <= '9' && n < sizeof(number) - 1)
        at--, n++;
    if (n == 0)
        return false;
    memcpy(number, at + 1, n);
    number[n] = '\0';
    return cairn_parse_u64_str(number, 0, UINT64_MAX, size) == 0;
}

static void
feed_byte(struct line_reader *r, char c)
{
    if (r->head_len < HEAD_MAX)
        r->head[r->head_len++] = c;
    if (r->tail_len == TAIL_MAX) {
        memmove(r->tail, r->tail + TAIL_MAX / 2, TAIL_MAX / 2);
        r->tail_len = TAIL_MAX / 2;
    }
    r->tail[r->tail_len++] = c;
    if (c != '\n' || r->tail_len < 2 || r->tail[r->tail_len - 2] != '\r')
        return;
    /* a CRLF: a literal follows, or the line ends */
    if (literal_size(r->tail, r->tail_len - 2, &r->skip)) {
        r->literals++;
        r->tail_len = 0;
        return;
    }
    r->head[r->head_len] = '\0';
    r->line(r->ctx, r);
    r->head_len = r->tail_len = 0;
    r->literals = 0;
}

static void
feed(struct line_reader *reader, const unsigned char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (reader->skip > 0) {
            uint64_t take =
                len - i < reader->skip ? (uint64_t)(len - i) : reader->skip;

            reader->skip -= take;
            i += (size_t)take - 1;
            continue;
        }
        feed_byte(reader, (char)data[i]);
    }
}

/* Feeds the lines of the gzip member at [offset, offset + length). */
static int
read_member(int fd, int64_t offset, int64_t length, struct line_reader *reader)
{
    unsigned char in[65536], out[65536];
    z_stream zs;
    int64_t at = offset;
    int z = Z_OK, rc = 0;

    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
        return CAIRN_ENOMEM;
    while (rc == 0 && z != Z_STREAM_END && at < offset + length) {
        size_t want = (size_t)(offset + length - at) < sizeof(in)
                          ? (size_t)(offset + length - at)
                          : sizeof(in);
        ssize_t got = pread(fd, in, want, (off_t)at);

        if (got <= 0) {
            rc = CAIRN_EIO;
            break;
        }
        at += got;
        zs.next_in = in;
        zs.avail_in = (uInt)got;
        while (zs.avail_in > 0 && z != Z_STREAM_END) {
            zs.next_out = out;
            zs.avail_out = sizeof(out);
            z = inflate(&zs, Z_NO_FLUSH);
            if (z != Z_OK && z != Z_STREAM_END) {
                rc = CAIRN_ECORRUPT;
                break;
            }
            feed(reader, out, sizeof(out) - zs.avail_out);
        }
    }
    inflateEnd(&zs);
    return rc;
}

/* --- what changed ---------------------------------------------------------
 */

struct history {
    struct point *points;
    size_t count, at;
    const char *user, *mailbox; /* mailbox: NULL for all */
};

/* The word after key in text ("MBOXNAME user.anne" -> "user.anne"). */
static void
word_after(const char *text, const char *key, char *out, size_t size)
{
    const char *at = strstr(text, key);
    size_t n = 0;

    out[0] = '\0';
    if (at == NULL)
        return;
    at += strlen(key);
    if (*at == '"')
        at++;
    while (at[n] && at[n] != ' ' && at[n] != ')' && at[n] != '"' &&
           at[n] != '\r' && n + 1 < size)
        n++;
    memcpy(out, at, n);
    out[n] = '\0';
}

static bool
mailbox_matches(const struct history *h, const char *name)
{
    size_t len, name_len = strlen(name);
    char inbox[300];

    if (h->mailbox == NULL)
        return true;
    len = strlen(h->mailbox);
    snprintf(inbox, sizeof(inbox), "user.%s", h->user);
    if (strcmp(name, h->mailbox) == 0 ||
        (strcasecmp(h->mailbox, "INBOX") == 0 && strcmp(name, inbox) == 0))
        return true;
    return name_len > len + 1 && name[name_len - len - 1] == '.' &&
           strcmp(name + name_len - len, h->mailbox) == 0 &&
           strncmp(name, inbox, strlen(inbox)) == 0;
}

static void
add_change(struct point *point, const char *text)
{
    size_t used = strlen(point->changes), len = strlen(text);

    for (const char *at = point->changes; (at = strstr(at, text)) != NULL; at++)
        if ((at == point->changes || at[-1] == ' ') &&
            (at[len] == '\0' || at[len] == ','))
            return; /* once per point */
    snprintf(point->changes + used, sizeof(point->changes) - used, "%s%s",
             used ? ", " : "", text);
}

static void
on_line(void *ctx, struct line_reader *reader)
{
    struct history *h = ctx;
    char verb[32] = "", name[256] = "", change[320];
    long long ts = 0;
    struct point *point;

    if (sscanf(reader->head, "%lld APPLY %31s", &ts, verb) != 2 ||
        strcmp(verb, "RESERVE") == 0) /* reserves change nothing */
        return;
    point = &h->points[h->at];
    if (strcmp(verb, "UNMAILBOX") == 0 || strcmp(verb, "UNSIEVE") == 0 ||
        strcmp(verb, "SUB") == 0 || strcmp(verb, "UNSUB") == 0)
        word_after(reader->head, verb, name, sizeof(name));
    else if (strcmp(verb, "RENAME") == 0)
        word_after(reader->head, "OLDMBOXNAME ", name, sizeof(name));
    else
        word_after(reader->head, "MBOXNAME ", name, sizeof(name));
    while (name[0] == ' ')
        memmove(name, name + 1, strlen(name));
    if (h->mailbox != NULL && (name[0] == '\0' || !mailbox_matches(h, name)))
        return;
    if (strcmp(verb, "MESSAGE") == 0)
        snprintf(change, sizeof(change), "MESSAGE (%zu bodies)",
                 reader->literals);
    else if (name[0] != '\0')
        snprintf(change, sizeof(change), "%s %s", verb, name);
    else
        snprintf(change, sizeof(change), "%s", verb);
    add_change(point, change);
    point->lines++;
}

static void
print_history(struct cairn_ops_context *context, const struct history *h)
{
    bool first = true;

    if (context->json)
        fprintf(context->out, "{\"user\":");
    if (context->json) {
        cairn_ops_json_string(context->out, h->user);
        fprintf(context->out, ",\"points\":[");
    }
    for (size_t i = 0; i < h->count; i++) {
        const struct point *p = &h->points[i];
        char when[32];

        if (h->mailbox != NULL && p->lines == 0)
            continue;
        cairn_restore_format_time(p->ts_end, when);
        if (!context->json) {
            fprintf(context->out, "%s  %s\n", when,
                    p->changes[0] ? p->changes : "(no change stored)");
            continue;
        }
        fprintf(context->out,
                "%s{\"time\":\"%s\",\"ts\":%lld,\"changes\":", first ? "" : ",",
                when, (long long)p->ts_end);
        cairn_ops_json_string(context->out, p->changes);
        fprintf(context->out, "}");
        first = false;
    }
    if (context->json)
        fprintf(context->out, "]}\n");
}

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int
cairn_ops_user_history(struct cairn_ops_context *context, int argc, char **argv)
{
    struct cairn_restore_source *source = NULL;
    struct history_args args;
    struct history history = {0};
    struct line_reader reader = {0};
    char cause[1536] = "", error[1024] = "", *scratch = NULL;
    char *data_path = NULL;
    const char *tmp = getenv("TMPDIR");
    int64_t oldest = 0, newest = 0;
    int rc, status, fd = -1;

    if ((status = parse_history_args(context, argc, argv, &args)) != 0)
        return status < 0 ? CAIRN_EXIT_OK : status;
    history.user = args.user;
    history.mailbox = args.mailbox;
    if (args.data_dir == NULL &&
        (rc = cairn_ops_open_backup(context, NULL, args.destination, args.node,
                                    args.user, args.timeout, &source, cause,
                                    sizeof(cause))) < 0)
        goto out;
    rc = CAIRN_EIO;
    if (asprintf(&scratch, "%s/cairn-history-XXXXXX", tmp ? tmp : "/tmp") < 0 ||
        mkdtemp(scratch) == NULL) {
        snprintf(cause, sizeof(cause), "cannot make a scratch directory");
        goto out;
    }
    if ((rc = cairn_restore_scratch_copy(source, args.data_dir, args.user,
                                         scratch, &data_path, error,
                                         sizeof(error))) < 0 ||
        (rc = cairn_restore_scratch_as_of(data_path, INT64_MAX, &oldest,
                                          &newest, error, sizeof(error))) < 0 ||
        (rc = load_points(data_path, &history.points, &history.count)) < 0) {
        snprintf(cause, sizeof(cause), "history of %s: %s", args.user,
                 error[0] ? error : cairn_strerror(rc));
        goto out;
    }
    reader.line = on_line;
    reader.ctx = &history;
    if ((fd = open(data_path, O_RDONLY | O_CLOEXEC)) < 0) {
        rc = CAIRN_EIO;
        goto out;
    }
    for (history.at = 0; history.at < history.count && rc == 0; history.at++) {
        memset(&reader.head, 0, sizeof(reader.head));
        reader.head_len = reader.tail_len = reader.literals = 0;
        reader.skip = 0;
        rc = read_member(fd, history.points[history.at].offset,
                         history.points[history.at].length, &reader);
    }
    if (rc < 0) {
        snprintf(cause, sizeof(cause), "reading the copy of the log: %s",
                 cairn_strerror(rc));
        goto out;
    }
    print_history(context, &history);
out:
    if (rc < 0)
        fprintf(context->err, "cairnctl user history: %s\n",
                cause[0] ? cause : cairn_strerror(rc));
    if (fd >= 0)
        close(fd);
    if (scratch != NULL)
        nftw(scratch, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(scratch);
    free(data_path);
    free(history.points);
    cairn_restore_source_free(source);
    if (rc == 0)
        return CAIRN_EXIT_OK;
    return rc == CAIRN_ENOENT || rc == CAIRN_EBADNAME ? CAIRN_EXIT_NOINPUT
           : rc == CAIRN_EUNAVAILABLE || rc == CAIRN_ETIMEOUT
               ? CAIRN_EXIT_UNAVAILABLE
           : rc == CAIRN_EIO ? CAIRN_EXIT_IOERR
                             : CAIRN_EXIT_SOFTWARE;
}
