/*
 * buf.c - a growable byte buffer with a hard maximum, for everything that
 * grows from network or disk input.
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
cairn_buf_init(struct cairn_buf *buf, size_t max)
{
    buf->data = NULL;
    buf->len = 0;
    buf->cap = 0;
    buf->max = max;
}

void
cairn_buf_release(struct cairn_buf *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->len = 0;
    buf->cap = 0;
}

void
cairn_buf_reset(struct cairn_buf *buf)
{
    buf->len = 0;
    if (buf->data != NULL)
        buf->data[0] = '\0';
}

int
cairn_buf_reserve(struct cairn_buf *buf, size_t extra)
{
    size_t need, cap;
    char *grown;

    if (extra > buf->max || buf->len > buf->max - extra)
        return CAIRN_ETOOBIG;
    need = buf->len + extra + 1;
    if (need <= buf->cap)
        return CAIRN_OK;
    cap = buf->cap ? buf->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > buf->max + 1)
        cap = buf->max + 1;
    grown = realloc(buf->data, cap);
    if (grown == NULL)
        return CAIRN_ENOMEM;
    buf->data = grown;
    buf->cap = cap;
    return CAIRN_OK;
}

int
cairn_buf_append(struct cairn_buf *buf, const void *data, size_t len)
{
    int rc;

    if ((rc = cairn_buf_reserve(buf, len)) < 0)
        return rc;
    if (len > 0)
        memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    buf->data[buf->len] = '\0';
    return CAIRN_OK;
}

int
cairn_buf_append_str(struct cairn_buf *buf, const char *text)
{
    return cairn_buf_append(buf, text, strlen(text));
}

int
cairn_buf_printf(struct cairn_buf *buf, const char *fmt, ...)
{
    va_list ap;
    int needed, rc;

    va_start(ap, fmt);
    needed = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (needed < 0)
        return CAIRN_EINVAL;
    if ((rc = cairn_buf_reserve(buf, (size_t)needed)) < 0)
        return rc;
    va_start(ap, fmt);
    vsnprintf(buf->data + buf->len, (size_t)needed + 1, fmt, ap);
    va_end(ap);
    buf->len += (size_t)needed;
    return CAIRN_OK;
}

void
cairn_buf_consume(struct cairn_buf *buf, size_t n)
{
    if (n >= buf->len) {
        cairn_buf_reset(buf);
        return;
    }
    memmove(buf->data, buf->data + n, buf->len - n);
    buf->len -= n;
    buf->data[buf->len] = '\0';
}

int
cairn_buf_detach(struct cairn_buf *buf, char **data, size_t *len)
{
    int rc;

    if ((rc = cairn_buf_reserve(buf, 0)) < 0)
        return rc;
    buf->data[buf->len] = '\0';
    *data = buf->data;
    *len = buf->len;
    buf->data = NULL;
    buf->len = 0;
    buf->cap = 0;
    return CAIRN_OK;
}
