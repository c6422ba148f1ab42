/*
 * test_util.h - helpers shared by the proto tests: a file sink that keeps
 * file-literal bodies in memory (tests only; the real sinks stream to
 * disk), the matching body writer, and whole-file reading.
 */
#ifndef CAIRN_PROTO_TEST_UTIL_H
#define CAIRN_PROTO_TEST_UTIL_H

#include "common.h"
#include "dlist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct memory_file {
    struct cairn_buf body;
    uint64_t size;
    bool ended;
};

struct memory_sink_stats {
    int begun;
    int ended;
    int released;
};

static inline int
memory_begin(void *ctx, const char *partition, const char *guid, uint64_t size,
             void **handle)
{
    struct memory_sink_stats *stats = ctx;
    struct memory_file *file = calloc(1, sizeof(*file));

    (void)partition;
    (void)guid;
    if (file == NULL)
        return CAIRN_ENOMEM;
    cairn_buf_init(&file->body, (size_t)size);
    file->size = size;
    *handle = file;
    stats->begun++;
    return 0;
}

static inline int
memory_data(void *ctx, void *handle, const void *bytes, size_t len)
{
    struct memory_file *file = handle;

    (void)ctx;
    return cairn_buf_append(&file->body, bytes, len);
}

static inline int
memory_end(void *ctx, void *handle)
{
    struct memory_sink_stats *stats = ctx;
    struct memory_file *file = handle;

    stats->ended++;
    file->ended = true;
    return file->body.len == file->size ? 0 : CAIRN_EMISMATCH;
}

static inline void
memory_release(void *ctx, void *handle)
{
    struct memory_sink_stats *stats = ctx;
    struct memory_file *file = handle;

    stats->released++;
    if (file != NULL)
        cairn_buf_release(&file->body);
    free(file);
}

static inline struct cairn_dlist_file_sink
memory_sink(struct memory_sink_stats *stats)
{
    struct cairn_dlist_file_sink sink = {memory_begin, memory_data, memory_end,
                                         memory_release, stats};
    return sink;
}

/* A sink's data callback that refuses every piece, as a full spool would. */
static inline int
refusing_data(void *ctx, void *handle, const void *bytes, size_t len)
{
    (void)ctx;
    (void)handle;
    (void)bytes;
    (void)len;
    return CAIRN_ENOSPACE;
}

static inline int
memory_write_body(void *ctx, const struct cairn_dlist *file,
                  struct cairn_buf *out)
{
    void *handle = NULL;
    struct memory_file *body;

    (void)ctx;
    if (!cairn_dlist_file_info(file, NULL, NULL, NULL, &handle) ||
        handle == NULL)
        return CAIRN_EINVAL;
    body = handle;
    return cairn_buf_append(out, body->body.data ? body->body.data : "",
                            body->body.len);
}

static inline struct cairn_dlist_body_writer
memory_body_writer(void)
{
    struct cairn_dlist_body_writer writer = {memory_write_body, NULL};
    return writer;
}

/* Reads a whole file into an owned buffer (free()). NULL on failure. */
static inline char *
read_whole_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    long size;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0) {
        data = malloc((size_t)size + 1);
        if (data != NULL && fread(data, 1, (size_t)size, f) != (size_t)size) {
            free(data);
            data = NULL;
        }
        if (data != NULL) {
            data[size] = '\0';
            *len = (size_t)size;
        }
    }
    fclose(f);
    return data;
}

#endif /* CAIRN_PROTO_TEST_UTIL_H */
