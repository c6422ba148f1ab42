/*
 * fuzz_dlist.c - libFuzzer target for the dlist parser, the csync command
 * reader and the response reader. The first input byte picks the parser
 * flags and how the rest is split into pieces; whatever parses must print
 * and parse again to the very same bytes (round-trip oracle), and all file
 * sink handles must be released. Build with -DCAIRN_FUZZ=ON and clang.
 */
#include "csync.h"
#include "dlist.h"

#include <stdlib.h>
#include <string.h>

struct fuzz_file {
    struct cairn_buf body;
};

static int
fuzz_begin(void *ctx, const char *partition, const char *guid, uint64_t size,
           void **handle)
{
    struct fuzz_file *file = calloc(1, sizeof(*file));

    (void)partition;
    (void)guid;
    if (file == NULL)
        return CAIRN_ENOMEM;
    cairn_buf_init(&file->body, (size_t)size);
    (*(int *)ctx)++;
    *handle = file;
    return 0;
}

static int
fuzz_data(void *ctx, void *handle, const void *bytes, size_t len)
{
    struct fuzz_file *file = handle;

    (void)ctx;
    return cairn_buf_append(&file->body, bytes, len);
}

static int
fuzz_end(void *ctx, void *handle)
{
    (void)ctx;
    (void)handle;
    return 0;
}

static void
fuzz_release(void *ctx, void *handle)
{
    struct fuzz_file *file = handle;

    (*(int *)ctx)--;
    cairn_buf_release(&file->body);
    free(file);
}

static int
fuzz_write_body(void *ctx, const struct cairn_dlist *node,
                struct cairn_buf *out)
{
    void *handle = NULL;
    struct fuzz_file *file;

    (void)ctx;
    cairn_dlist_file_info(node, NULL, NULL, NULL, &handle);
    file = handle;
    return cairn_buf_append(out, file->body.data ? file->body.data : "",
                            file->body.len);
}

static void
small_limits(struct cairn_dlist_limits *limits)
{
    cairn_dlist_limits_default(limits);
    limits->max_literal = 1 << 16;
    limits->max_file = 1 << 16;
    limits->max_bytes = 1 << 20;
    limits->max_nodes = 1 << 14;
}

/* print(tree) parsed again must print to the same bytes. */
static void
check_round_trip(const struct cairn_dlist *tree, unsigned flags,
                 struct cairn_dlist_file_sink *sink)
{
    struct cairn_dlist_body_writer writer = {fuzz_write_body, NULL};
    struct cairn_dlist_limits limits;
    struct cairn_dlist *again = NULL;
    struct cairn_buf first, second;

    cairn_dlist_limits_default(&limits);
    limits.max_depth = 1000;
    cairn_buf_init(&first, 1 << 24);
    cairn_buf_init(&second, 1 << 24);
    if (cairn_dlist_print(tree, flags & CAIRN_DLIST_PARSE_KEY, &first,
                          &writer) < 0)
        abort();
    if (flags & CAIRN_DLIST_PARSE_EOL)
        cairn_buf_append(&first, "\r\n", 2);
    if (cairn_dlist_parse(first.data, first.len, flags, &limits, sink, &again,
                          NULL, 0) < 0)
        abort();
    if (cairn_dlist_print(again, flags & CAIRN_DLIST_PARSE_KEY, &second,
                          &writer) < 0)
        abort();
    if (flags & CAIRN_DLIST_PARSE_EOL)
        cairn_buf_append(&second, "\r\n", 2);
    if (first.len != second.len ||
        memcmp(first.data, second.data, first.len) != 0)
        abort();
    cairn_dlist_free(again);
    cairn_buf_release(&first);
    cairn_buf_release(&second);
}

static void
fuzz_parser(const uint8_t *data, size_t size, unsigned flags, size_t chunk,
            struct cairn_dlist_file_sink *sink)
{
    struct cairn_dlist_limits limits;
    struct cairn_dlist_parser *parser = NULL;
    size_t at = 0, used = 0;
    int rc = CAIRN_EAGAIN;

    small_limits(&limits);
    if (cairn_dlist_parser_new(&limits, sink, flags, &parser) < 0)
        return;
    while (at < size && rc == CAIRN_EAGAIN) {
        size_t piece = size - at < chunk ? size - at : chunk;
        rc = cairn_dlist_parser_feed(parser, data + at, piece, &used);
        at += used;
    }
    if (rc == CAIRN_EAGAIN)
        rc = cairn_dlist_parser_finish(parser);
    if (rc == 0) {
        struct cairn_dlist *tree = cairn_dlist_parser_take(parser);
        check_round_trip(tree, flags, sink);
        cairn_dlist_free(tree);
    }
    cairn_dlist_parser_free(parser);
}

static void
fuzz_reader(const uint8_t *data, size_t size, size_t chunk,
            struct cairn_dlist_file_sink *sink)
{
    struct cairn_dlist_limits limits;
    struct cairn_csync_reader *reader = NULL;
    size_t at = 0;

    small_limits(&limits);
    if (cairn_csync_reader_new(4096, &limits, sink, &reader) < 0)
        return;
    while (at < size) {
        struct cairn_csync_command cmd;
        size_t piece = size - at < chunk ? size - at : chunk, used = 0;
        int rc = cairn_csync_reader_feed(reader, data + at, piece, &used, &cmd);
        at += used;
        if (rc == 0) {
            if (cmd.verb == CAIRN_CSYNC_AUTHENTICATE)
                cairn_csync_reader_expect_line(reader);
            cairn_csync_command_release(&cmd);
        } else if (rc != CAIRN_EAGAIN && used == 0 &&
                   !cairn_csync_reader_skipping(reader)) {
            break; /* no progress possible */
        }
    }
    cairn_csync_reader_free(reader);
}

static void
fuzz_responses(const uint8_t *data, size_t size, size_t chunk,
               struct cairn_dlist_file_sink *sink)
{
    struct cairn_dlist_limits limits;
    struct cairn_csync_response_reader *reader = NULL;
    size_t at = 0;

    small_limits(&limits);
    if (cairn_csync_response_reader_new(4096, 64, &limits, sink, &reader) < 0)
        return;
    while (at < size) {
        struct cairn_csync_response response;
        size_t piece = size - at < chunk ? size - at : chunk, used = 0;
        int rc = cairn_csync_response_reader_feed(reader, data + at, piece,
                                                  &used, &response);
        at += used;
        if (rc == 0)
            cairn_csync_response_release(&response);
        else if (rc != CAIRN_EAGAIN)
            break; /* a client drops the connection */
    }
    cairn_csync_response_reader_free(reader);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t chunks[] = {1, 2, 3, 7, 64, 4096, 1 << 20, 1 << 20};
    int open_handles = 0;
    struct cairn_dlist_file_sink sink = {fuzz_begin, fuzz_data, fuzz_end,
                                         fuzz_release, &open_handles};
    unsigned mode, flags;
    size_t chunk;

    if (size < 1)
        return 0;
    mode = data[0];
    flags = mode & 3;
    chunk = chunks[(mode >> 2) & 7];
    data++;
    size--;
    if (mode & 0x20)
        fuzz_reader(data, size, chunk, &sink);
    else if (mode & 0x40)
        fuzz_responses(data, size, chunk, &sink);
    else
        fuzz_parser(data, size, flags, chunk, &sink);
    if (open_handles != 0)
        abort(); /* a file handle leaked or was released twice */
    return 0;
}
