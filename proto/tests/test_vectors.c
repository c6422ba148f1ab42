/*
 * test_vectors.c - round trip of real Cyrus 3.6.1 traffic: every
 * GET/APPLY/RESTORE command and every untagged "* " response line in the
 * lab transcripts (data/vectors, recorded by the lab proxy) is parsed and
 * printed again, and must come back byte for byte. Each stream is run once
 * fed whole and once fed one byte at a time.
 */
#include "check.h"
#include "csync.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STREAMS 64

/*
 * has_commands is false where nothing after the login is readable: in 14
 * DIGEST-MD5 negotiated a SASL privacy layer.
 */
static const struct {
    const char *name;
    bool has_commands;
} vector_files[] = {
    {"01-full-backup-one-user.log", true},
    {"02-incremental-new-mail.log", true},
    {"03-flags-and-expunge.log", true},
    {"04-folder-rename.log", true},
    {"05-folder-delete.log", true},
    {"06-subscription-change.log", true},
    {"07-seen-owner.log", true},
    {"08-seen-nonowner.log", true},
    {"09-sieve-upload.log", true},
    {"10-rolling-multi-user.log", true},
    {"11-restore-to-replica.log", true},
    {"12-full-backup-all-users-A.log", true},
    {"13-sasl-plain-only.log", true},
    {"14-sasl-digest-md5-only.log", false},
    {"15-sync-try-imap-default.log", true},
    {"16-restore-uid-order.log", true},
};

struct stream {
    unsigned conn;
    bool client_to_server;
    struct cairn_buf data;
};

struct totals {
    int commands;
    int items;
    int banner_lines;
    int files;
};

static struct stream *
find_stream(struct stream *streams, size_t *count, unsigned conn, bool c2s)
{
    for (size_t i = 0; i < *count; i++) {
        if (streams[i].conn == conn && streams[i].client_to_server == c2s)
            return &streams[i];
    }
    if (*count == MAX_STREAMS)
        return NULL;
    streams[*count].conn = conn;
    streams[*count].client_to_server = c2s;
    cairn_buf_init(&streams[*count].data, 64 * 1024 * 1024);
    return &streams[(*count)++];
}

/*
 * Splits a transcript into per-connection, per-direction streams. Header
 * "--- cN DIR +T.s N bytes[ (...)] ---\n", then N bytes, then "\n"; other
 * "--- " lines carry no payload.
 */
static int
load_streams(const char *text, size_t len, struct stream *streams,
             size_t *count)
{
    size_t at = 0;

    *count = 0;
    while (at < len) {
        const char *line = text + at;
        const char *lf = memchr(line, '\n', len - at);
        unsigned conn;
        char dir[5];
        size_t n;
        struct stream *stream;

        if (lf == NULL)
            return CAIRN_EPARSE;
        at = (size_t)(lf - text) + 1;
        if (sscanf(line, "--- c%u %4s +%*[0-9.]s %zu bytes", &conn, dir, &n) !=
            3)
            continue;
        if (strcmp(dir, "C->S") != 0 && strcmp(dir, "S->C") != 0)
            continue;
        if (n + 1 > len - at || text[at + n] != '\n')
            return CAIRN_EPARSE;
        stream = find_stream(streams, count, conn, dir[0] == 'C');
        if (stream == NULL || cairn_buf_append(&stream->data, text + at, n))
            return CAIRN_ENOMEM;
        at += n + 1;
    }
    return 0;
}

static bool
is_dlist_verb(enum cairn_csync_verb verb)
{
    return verb == CAIRN_CSYNC_GET || verb == CAIRN_CSYNC_APPLY ||
           verb == CAIRN_CSYNC_RESTORE;
}

/* Re-prints one command and compares it with the bytes it came from. */
static void
compare_command(const char *name, const struct cairn_csync_command *cmd,
                const char *raw, size_t raw_len)
{
    struct cairn_dlist_body_writer writer = memory_body_writer();
    struct cairn_buf out;

    cairn_buf_init(&out, 64 * 1024 * 1024);
    CHECK_INT(cairn_csync_write_command(&out, cmd->word, cmd->value, &writer),
              0);
    CHECK_MEM(out.data, out.len, raw, raw_len);
    if (out.len != raw_len || memcmp(out.data, raw, raw_len) != 0)
        fprintf(stderr, "%s: command differs:\n  got  %.200s\n  want %.*s\n",
                name, out.data, raw_len > 200 ? 200 : (int)raw_len, raw);
    cairn_buf_release(&out);
}

static void
check_commands(const char *name, const struct cairn_buf *stream, bool bytewise,
               struct totals *totals, int *commands)
{
    struct memory_sink_stats stats = {0};
    struct cairn_dlist_file_sink sink = memory_sink(&stats);
    struct cairn_csync_reader *reader = NULL;
    struct cairn_csync_command cmd;
    size_t at = 0, start = 0;

    CHECK_INT(cairn_csync_reader_new(65536, NULL, &sink, &reader), 0);
    while (reader != NULL && at < stream->len) {
        size_t chunk = bytewise ? 1 : stream->len - at, used = 0;
        int rc = cairn_csync_reader_feed(reader, stream->data + at, chunk,
                                         &used, &cmd);
        at += used;
        if (rc == CAIRN_EAGAIN)
            continue;
        CHECK_INT(rc, 0);
        if (rc < 0) {
            fprintf(stderr, "%s: %s\n", name, cairn_csync_reader_error(reader));
            continue;
        }
        if (is_dlist_verb(cmd.verb)) {
            compare_command(name, &cmd, stream->data + start, at - start);
            (*commands)++;
            totals->commands++;
        }
        cairn_csync_command_release(&cmd);
        start = at;
    }
    CHECK_U64(at, stream->len);
    CHECK_INT(stats.begun, stats.ended);
    cairn_csync_reader_free(reader);
    CHECK_INT(stats.released, stats.begun);
}

/* Feeds the parser whole or byte by byte; returns the feed's result. */
static int
feed_parser(struct cairn_dlist_parser *parser, const char *data, size_t len,
            bool bytewise, size_t *consumed)
{
    size_t at = 0, used;
    int rc = CAIRN_EAGAIN;

    while (at < len && rc == CAIRN_EAGAIN) {
        rc = cairn_dlist_parser_feed(parser, data + at, bytewise ? 1 : len - at,
                                     &used);
        at += used;
    }
    *consumed = at;
    return rc;
}

static bool
is_banner_key(const char *line, size_t len)
{
    static const char *const keys[] = {"* SASL ", "* STARTTLS",
                                       "* SIEVE-MAILBOX", "* OK "};

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (len >= strlen(keys[i]) &&
            memcmp(line, keys[i], strlen(keys[i])) == 0)
            return true;
    }
    return false;
}

/* Round trip of one untagged line starting at data[at]; returns its end. */
static size_t
check_untagged(const char *name, const struct cairn_buf *stream, size_t at,
               struct cairn_dlist_parser *parser, bool bytewise,
               struct totals *totals)
{
    struct cairn_dlist_body_writer writer = memory_body_writer();
    const char *line = stream->data + at;
    const char *lf = memchr(line, '\n', stream->len - at);
    size_t line_end = lf ? (size_t)(lf - stream->data) + 1 : stream->len;
    struct cairn_buf out;
    struct cairn_dlist *item;
    size_t used;
    int rc;

    rc = feed_parser(parser, line + 2, stream->len - at - 2, bytewise, &used);
    if (rc != 0) {
        CHECK(is_banner_key(line, line_end - at));
        if (!is_banner_key(line, line_end - at))
            fprintf(stderr, "%s: untagged line fails: %s\n", name,
                    cairn_dlist_parser_error(parser));
        totals->banner_lines++;
        cairn_dlist_parser_reset(parser);
        return line_end;
    }
    item = cairn_dlist_parser_take(parser);
    cairn_buf_init(&out, 64 * 1024 * 1024);
    CHECK_INT(cairn_buf_append(&out, "* ", 2), 0);
    CHECK_INT(cairn_dlist_print(item, true, &out, &writer), 0);
    CHECK_INT(cairn_buf_append(&out, "\r\n", 2), 0);
    CHECK_MEM(out.data, out.len, line, used + 2);
    cairn_buf_release(&out);
    cairn_dlist_free(item);
    totals->items++;
    return at + 2 + used;
}

static void
check_responses(const char *name, const struct cairn_buf *stream, bool bytewise,
                struct totals *totals)
{
    struct memory_sink_stats stats = {0};
    struct cairn_dlist_file_sink sink = memory_sink(&stats);
    struct cairn_dlist_parser *parser = NULL;
    size_t at = 0;

    CHECK_INT(cairn_dlist_parser_new(
                  NULL, &sink, CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL,
                  &parser),
              0);
    while (parser != NULL && at < stream->len) {
        const char *line = stream->data + at;
        const char *lf;
        if (stream->len - at > 2 && line[0] == '*' && line[1] == ' ') {
            at = check_untagged(name, stream, at, parser, bytewise, totals);
            continue;
        }
        lf = memchr(line, '\n', stream->len - at);
        at = lf ? (size_t)(lf - stream->data) + 1 : stream->len;
    }
    cairn_dlist_parser_free(parser);
    CHECK_INT(stats.released, stats.begun);
}

static void
check_file(const char *file, bool has_commands, struct totals *totals)
{
    struct stream streams[MAX_STREAMS];
    size_t count = 0, len = 0;
    char path[256];
    char *text;
    int commands = 0;

    snprintf(path, sizeof(path), "data/vectors/%s", file);
    text = read_whole_file(path, &len);
    CHECK(text != NULL);
    if (text == NULL)
        return;
    CHECK_INT(load_streams(text, len, streams, &count), 0);
    CHECK(count > 0);
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < count; i++) {
            if (streams[i].client_to_server)
                check_commands(file, &streams[i].data, pass == 1, totals,
                               &commands);
            else
                check_responses(file, &streams[i].data, pass == 1, totals);
        }
    }
    CHECK(has_commands ? commands > 0 : commands == 0);
    printf("  %-34s %zu streams, %d commands per pass\n", file, count,
           commands / 2);
    for (size_t i = 0; i < count; i++)
        cairn_buf_release(&streams[i].data);
    free(text);
    totals->files++;
}

int
main(void)
{
    struct totals totals = {0};

    for (size_t i = 0; i < sizeof(vector_files) / sizeof(vector_files[0]); i++)
        check_file(vector_files[i].name, vector_files[i].has_commands, &totals);
    printf("vectors: %d files, %d commands and %d untagged items "
           "round-tripped (both passes), %d banner lines skipped\n",
           totals.files, totals.commands, totals.items, totals.banner_lines);
    CHECK_INT(totals.files, 16);
    CHECK(totals.items > 0);
    return check_exit("test_vectors");
}
