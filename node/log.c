/*
 * log.c - reading the record lines of one chunk: "<ts> <verb> <dlist>\r\n"
 * after the "# cyrus backup: chunk start" header, with the dlist parsed by
 * proto's streaming parser (bodies of file literals go to a caller's sink,
 * never into memory). Used by reindex, verify, message reads and compaction.
 */
#include "node_int.h"

#include <stdlib.h>
#include <string.h>

#define PREFIX_MAX 64

enum walk_state { IN_HEADER, IN_PREFIX, IN_DLIST };

struct walk {
    struct log_line line;
    enum walk_state state;
    char prefix[PREFIX_MAX];
    size_t prefix_len;
    uint64_t position; /* uncompressed offset of the next byte */
    struct cairn_dlist_parser *parser;
    uint64_t nonsync_before; /* the parser's count when the line began */
    log_visit visit;
    void *ctx;
};

/* "<digits> <VERB> " -> ts, verb; CAIRN_EPARSE when malformed. */
static int
parse_prefix(struct walk *walk)
{
    char *space = memchr(walk->prefix, ' ', walk->prefix_len);
    uint64_t ts;
    size_t verb_len;

    if (space == NULL ||
        cairn_parse_u64(walk->prefix, (size_t)(space - walk->prefix), 0,
                        INT64_MAX, &ts) < 0)
        return CAIRN_EPARSE;
    verb_len = walk->prefix_len - (size_t)(space - walk->prefix) - 2;
    if (verb_len == 0 || verb_len >= sizeof(walk->line.verb))
        return CAIRN_EPARSE;
    memcpy(walk->line.verb, space + 1, verb_len);
    walk->line.verb[verb_len] = '\0';
    walk->line.ts = (int64_t)ts;
    return 0;
}

static int
finish_line(struct walk *walk)
{
    int rc;

    walk->line.record = cairn_dlist_parser_take(walk->parser);
    if (walk->line.record == NULL)
        return CAIRN_EPARSE;
    walk->line.length = walk->position - walk->line.offset;
    walk->line.nonsync_literal = cairn_dlist_parser_nonsync_literals(
                                     walk->parser) != walk->nonsync_before;
    rc = walk->visit(walk->ctx, &walk->line);
    cairn_dlist_free(walk->line.record);
    walk->line.record = NULL;
    walk->state = IN_PREFIX;
    walk->prefix_len = 0;
    return rc;
}

/* Consumes a piece of chunk content; > 0 from visit stops the walk. */
static int
walk_bytes(struct walk *walk, const char *data, size_t len)
{
    while (len > 0) {
        size_t used = 1;
        int rc;

        if (walk->state == IN_HEADER) {
            const char *lf = memchr(data, '\n', len);

            used = lf ? (size_t)(lf - data) + 1 : len;
            if (lf)
                walk->state = IN_PREFIX;
        } else if (walk->state == IN_PREFIX) {
            if (walk->prefix_len == 0)
                walk->line.offset = walk->position;
            if (walk->prefix_len == PREFIX_MAX)
                return CAIRN_EPARSE;
            walk->prefix[walk->prefix_len++] = data[0];
            if (data[0] == ' ' &&
                memchr(walk->prefix, ' ', walk->prefix_len - 1) != NULL) {
                if ((rc = parse_prefix(walk)) < 0)
                    return rc;
                walk->nonsync_before =
                    cairn_dlist_parser_nonsync_literals(walk->parser);
                walk->state = IN_DLIST;
            }
        } else {
            rc = cairn_dlist_parser_feed(walk->parser, data, len, &used);
            walk->position += used;
            data += used;
            len -= used;
            if (rc == CAIRN_EAGAIN)
                continue;
            if (rc < 0)
                return rc;
            if ((rc = finish_line(walk)) != 0)
                return rc;
            continue;
        }
        walk->position += used;
        data += used;
        len -= used;
    }
    return 0;
}

int
log_walk_chunk(int fd, uint64_t offset, uint64_t start_at,
               const struct cairn_dlist_file_sink *sink, log_visit visit,
               void *ctx, struct chunk_member *member)
{
    struct chunk_reader reader;
    struct walk walk = {.visit = visit, .ctx = ctx};
    struct cairn_dlist_limits limits;
    char *buf = NULL;
    SHA_CTX sha;
    unsigned char digest[20];
    int rc;

    if ((rc = chunk_reader_open(&reader, fd, offset)) < 0)
        goto out;
    cairn_dlist_limits_default(&limits);
    if ((rc = cairn_dlist_parser_new(
             &limits, sink, CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL,
             &walk.parser)) < 0)
        goto out;
    if ((buf = malloc(CHUNK_IN_SIZE)) == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    SHA1_Init(&sha);
    walk.state = start_at > 0 ? IN_PREFIX : IN_HEADER;
    if (start_at > 0 && (rc = chunk_reader_skip(&reader, start_at)) < 0)
        goto out;
    walk.position = start_at;
    for (;;) {
        size_t got;

        if ((rc = chunk_reader_read(&reader, buf, CHUNK_IN_SIZE, &got)) < 0)
            goto out;
        if (got == 0)
            break;
        SHA1_Update(&sha, buf, got);
        if ((rc = walk_bytes(&walk, buf, got)) != 0)
            goto out;
    }
    if (member) {
        /* An unfinished last line (or header) is left out, as Cyrus does. */
        member->partial_offset = 0;
        member->partial_bytes = 0;
        if (walk.state == IN_DLIST || walk.prefix_len > 0) {
            member->partial_offset = walk.line.offset;
            member->partial_bytes = walk.position - walk.line.offset;
        } else if (walk.state == IN_HEADER) {
            member->partial_bytes = walk.position;
        }
        SHA1_Final(digest, &sha);
        chunk_sha1_hex(digest, member->data_sha1);
        member->length = reader.produced;
        member->end = reader.end;
    }
out:
    cairn_dlist_parser_free(walk.parser);
    free(buf);
    chunk_reader_close(&reader);
    return rc;
}
