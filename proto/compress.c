/*
 * compress.c - the COMPRESS DEFLATE layer of a csync connection
 * (sync-protocol.md §1.5; Cyrus lib/prot.c prot_setcompress): raw deflate
 * both ways, one endless stream per direction, a sync flush at the end of
 * every command or response, and bounded inflation so a small compressed
 * input cannot balloon in memory.
 */
#include "csync.h"

#include <stdlib.h>
#include <zlib.h>

/* Output is produced in steps of this size. */
#define STEP 16384

struct cairn_compress {
    z_stream deflater;
    z_stream inflater;
    bool deflater_ready;
    bool inflater_ready;
    bool inflate_ended;
};

int
cairn_compress_new(struct cairn_compress **compress)
{
    struct cairn_compress *c;
    int rc = 0;

    *compress = NULL;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return CAIRN_ENOMEM;
    /* Cyrus: default level, raw deflate (-15), memLevel 9. */
    if (deflateInit2(&c->deflater, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 9,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    c->deflater_ready = true;
    if (inflateInit2(&c->inflater, -15) != Z_OK) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    c->inflater_ready = true;
    *compress = c;
    c = NULL;
out:
    cairn_compress_free(c);
    return rc;
}

void
cairn_compress_free(struct cairn_compress *c)
{
    if (c == NULL)
        return;
    if (c->deflater_ready)
        deflateEnd(&c->deflater);
    if (c->inflater_ready)
        inflateEnd(&c->inflater);
    free(c);
}

int
cairn_compress_deflate(struct cairn_compress *c, const void *data, size_t len,
                       bool flush, struct cairn_buf *out)
{
    z_stream *z = &c->deflater;
    int mode = flush ? Z_SYNC_FLUSH : Z_NO_FLUSH;
    int rc;

    if (len > UINT32_MAX)
        return CAIRN_EINVAL;
    z->next_in = (Bytef *)(uintptr_t)data;
    z->avail_in = (uInt)len;
    do {
        if ((rc = cairn_buf_reserve(out, STEP)) < 0)
            return rc;
        z->next_out = (Bytef *)out->data + out->len;
        z->avail_out = STEP;
        rc = deflate(z, mode);
        out->len += STEP - z->avail_out;
        out->data[out->len] = '\0';
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return CAIRN_EINVAL;
        /* A full output step may mean more output is pending. */
    } while (z->avail_in > 0 || z->avail_out == 0);
    return 0;
}

int
cairn_compress_inflate(struct cairn_compress *c, const void *data, size_t len,
                       size_t *consumed, size_t max_output,
                       struct cairn_buf *out)
{
    z_stream *z = &c->inflater;
    size_t produced = 0;
    int rc = 0;

    *consumed = 0;
    if (c->inflate_ended)
        return len > 0 ? CAIRN_EPARSE : 0;
    if (len > UINT32_MAX)
        len = UINT32_MAX;
    z->next_in = (Bytef *)(uintptr_t)data;
    z->avail_in = (uInt)len;
    while (produced < max_output) {
        size_t room = out->max - out->len;
        size_t step = max_output - produced;
        if (step > STEP)
            step = STEP;
        if (step > room)
            step = room;
        if (step == 0 || cairn_buf_reserve(out, step) < 0)
            break;
        z->next_out = (Bytef *)out->data + out->len;
        z->avail_out = (uInt)step;
        rc = inflate(z, Z_SYNC_FLUSH);
        out->len += step - z->avail_out;
        produced += step - z->avail_out;
        out->data[out->len] = '\0';
        if (rc == Z_STREAM_END) {
            c->inflate_ended = true;
            break;
        }
        if (rc == Z_BUF_ERROR || (rc == Z_OK && z->avail_out > 0))
            break; /* input exhausted (or no progress possible) */
        if (rc != Z_OK) {
            *consumed = len - z->avail_in;
            return CAIRN_EPARSE;
        }
    }
    *consumed = len - z->avail_in;
    return 0;
}
