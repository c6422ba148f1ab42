/*
 * chunk.c - the gzip members ("chunks") of a Cyrus backup data file.
 *
 * The writer produces one gzip member per chunk with a raw deflate stream
 * and a hand-made gzip header and trailer, so that it can rewind to the
 * start of any record line: every line ends with Z_FULL_FLUSH (as backupd
 * does), which leaves the compressed output byte-aligned and independent of
 * what came before. It keeps a running SHA-1 of every compressed byte of
 * the file, so a chunk's file_sha1 never needs the file to be re-read.
 *
 * The reader inflates one member from a file offset, in bounded pieces.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "node_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const unsigned char gzip_header[10] = {0x1f, 0x8b, 0x08, 0, 0,
                                              0,    0,    0,    0, 0x03};

void
chunk_sha1_hex(const unsigned char digest[20], char hex[41])
{
    static const char digits[] = "0123456789abcdef";

    for (int i = 0; i < 20; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 15];
    }
    hex[40] = '\0';
}

void
chunk_sha1_state_hex(const SHA_CTX *state, char hex[41])
{
    SHA_CTX copy = *state;
    unsigned char digest[20];

    SHA1_Final(digest, &copy);
    chunk_sha1_hex(digest, hex);
}

void
chunk_writer_init(struct chunk_writer *writer, int fd, int level)
{
    memset(writer, 0, sizeof(*writer));
    writer->fd = fd;
    writer->level = level;
    SHA1_Init(&writer->file_sha);
}

void
chunk_writer_release(struct chunk_writer *writer)
{
    if (writer->z_ready)
        deflateEnd(&writer->z);
    writer->z_ready = false;
    free(writer->out);
    writer->out = NULL;
}

/* Writes the pending compressed bytes to the file and hashes them. */
static int
drain(struct chunk_writer *writer)
{
    int rc;

    if (writer->out_len == 0)
        return 0;
    rc = cairn_write_all(writer->fd, writer->out, writer->out_len);
    if (rc < 0)
        return rc;
    SHA1_Update(&writer->file_sha, writer->out, writer->out_len);
    writer->file_end += writer->out_len;
    writer->out_len = 0;
    return 0;
}

static int
put_raw(struct chunk_writer *writer, const void *data, size_t len)
{
    int rc;

    if (writer->out_len + len > CHUNK_OUT_SIZE && (rc = drain(writer)) < 0)
        return rc;
    memcpy(writer->out + writer->out_len, data, len);
    writer->out_len += len;
    return 0;
}

/* Runs deflate over input with the given flush mode until all is taken. */
static int
deflate_some(struct chunk_writer *writer, const void *data, size_t len,
             int flush)
{
    int rc, zrc;

    writer->z.next_in = (unsigned char *)data;
    writer->z.avail_in = (uInt)len;
    do {
        if (writer->out_len == CHUNK_OUT_SIZE && (rc = drain(writer)) < 0)
            return rc;
        writer->z.next_out = writer->out + writer->out_len;
        writer->z.avail_out = (uInt)(CHUNK_OUT_SIZE - writer->out_len);
        zrc = deflate(&writer->z, flush);
        if (zrc != Z_OK && zrc != Z_BUF_ERROR && zrc != Z_STREAM_END)
            return CAIRN_EIO;
        writer->out_len = CHUNK_OUT_SIZE - writer->z.avail_out;
    } while (writer->z.avail_in > 0 || writer->z.avail_out == 0);
    return 0;
}

int
chunk_writer_begin(struct chunk_writer *writer)
{
    int rc;

    if (writer->out == NULL && (writer->out = malloc(CHUNK_OUT_SIZE)) == NULL)
        return CAIRN_ENOMEM;
    if (!writer->z_ready) {
        if (deflateInit2(&writer->z, writer->level, Z_DEFLATED, -15, 8,
                         Z_DEFAULT_STRATEGY) != Z_OK)
            return CAIRN_ENOMEM;
        writer->z_ready = true;
    } else if (deflateReset(&writer->z) != Z_OK) {
        return CAIRN_EIO;
    }
    chunk_sha1_state_hex(&writer->file_sha, writer->file_sha1);
    writer->member_start = writer->file_end;
    writer->length = 0;
    writer->crc = crc32(0L, Z_NULL, 0);
    SHA1_Init(&writer->data_sha);
    writer->open = true;
    if ((rc = put_raw(writer, gzip_header, sizeof(gzip_header))) < 0)
        return rc;
    if ((rc = chunk_writer_write(writer, CHUNK_HEADER_LINE, CHUNK_HEADER_LEN)) <
        0)
        return rc;
    return chunk_writer_end_line(writer);
}

int
chunk_writer_write(struct chunk_writer *writer, const void *data, size_t len)
{
    const unsigned char *at = data;

    writer->length += len;
    SHA1_Update(&writer->data_sha, data, len);
    /* zlib takes at most 4 GiB per call. */
    while (len > 0) {
        size_t piece = len > (1u << 30) ? (1u << 30) : len;
        int rc;

        writer->crc = crc32(writer->crc, at, (uInt)piece);
        if ((rc = deflate_some(writer, at, piece, Z_NO_FLUSH)) < 0)
            return rc;
        at += piece;
        len -= piece;
    }
    return 0;
}

int
chunk_writer_end_line(struct chunk_writer *writer)
{
    int rc;

    if ((rc = deflate_some(writer, NULL, 0, Z_FULL_FLUSH)) < 0)
        return rc;
    return drain(writer);
}

void
chunk_writer_mark(const struct chunk_writer *writer, struct chunk_mark *mark)
{
    mark->file_end = writer->file_end;
    mark->length = writer->length;
    mark->crc = writer->crc;
    mark->data_sha = writer->data_sha;
    mark->file_sha = writer->file_sha;
}

int
chunk_writer_rewind(struct chunk_writer *writer, const struct chunk_mark *mark)
{
    writer->out_len = 0;
    if (ftruncate(writer->fd, (off_t)mark->file_end) < 0)
        return CAIRN_EIO;
    writer->file_end = mark->file_end;
    writer->length = mark->length;
    writer->crc = mark->crc;
    writer->data_sha = mark->data_sha;
    writer->file_sha = mark->file_sha;
    /* After a full flush a fresh raw stream continues the member exactly. */
    if (writer->z_ready && deflateReset(&writer->z) != Z_OK)
        return CAIRN_EIO;
    return 0;
}

int
chunk_writer_finish(struct chunk_writer *writer, char data_sha1[41])
{
    unsigned char trailer[8];
    unsigned char digest[20];
    uint32_t size = (uint32_t)writer->length;
    int rc;

    if ((rc = deflate_some(writer, NULL, 0, Z_FINISH)) < 0)
        return rc;
    for (int i = 0; i < 4; i++) {
        trailer[i] = (unsigned char)(writer->crc >> (8 * i));
        trailer[4 + i] = (unsigned char)(size >> (8 * i));
    }
    if ((rc = put_raw(writer, trailer, sizeof(trailer))) < 0)
        return rc;
    if ((rc = drain(writer)) < 0)
        return rc;
    SHA1_Final(digest, &writer->data_sha);
    chunk_sha1_hex(digest, data_sha1);
    writer->open = false;
    return 0;
}

/* --- reader --- */

int
chunk_reader_open(struct chunk_reader *reader, int fd, uint64_t offset)
{
    memset(reader, 0, sizeof(*reader));
    reader->fd = fd;
    reader->start = offset;
    reader->next_read = offset;
    reader->in = malloc(CHUNK_IN_SIZE);
    if (reader->in == NULL)
        return CAIRN_ENOMEM;
    if (inflateInit2(&reader->z, 15 + 16) != Z_OK) {
        free(reader->in);
        reader->in = NULL;
        return CAIRN_ENOMEM;
    }
    reader->z_ready = true;
    return 0;
}

void
chunk_reader_close(struct chunk_reader *reader)
{
    if (reader->z_ready)
        inflateEnd(&reader->z);
    reader->z_ready = false;
    free(reader->in);
    reader->in = NULL;
}

int
chunk_reader_read(struct chunk_reader *reader, void *buf, size_t len,
                  size_t *got)
{
    *got = 0;
    if (reader->done || len == 0)
        return 0;
    reader->z.next_out = buf;
    reader->z.avail_out = (uInt)(len > (1u << 30) ? (1u << 30) : len);
    while (reader->z.avail_out > 0 && !reader->done) {
        int zrc;

        if (reader->z.avail_in == 0) {
            ssize_t n = pread(reader->fd, reader->in, CHUNK_IN_SIZE,
                              (off_t)reader->next_read);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return CAIRN_EIO;
            if (n == 0)
                return CAIRN_ECORRUPT; /* member cut short */
            reader->next_read += (uint64_t)n;
            reader->z.next_in = reader->in;
            reader->z.avail_in = (uInt)n;
        }
        zrc = inflate(&reader->z, Z_NO_FLUSH);
        if (zrc == Z_STREAM_END) {
            reader->done = true;
            reader->end = reader->next_read - reader->z.avail_in;
        } else if (zrc != Z_OK && zrc != Z_BUF_ERROR) {
            return CAIRN_ECORRUPT;
        }
    }
    *got = (size_t)((unsigned char *)reader->z.next_out - (unsigned char *)buf);
    reader->produced += *got;
    return 0;
}

int
chunk_reader_skip(struct chunk_reader *reader, uint64_t count)
{
    unsigned char scratch[16384];

    while (count > 0) {
        size_t want = count > sizeof(scratch) ? sizeof(scratch) : count;
        size_t got;
        int rc = chunk_reader_read(reader, scratch, want, &got);

        if (rc < 0)
            return rc;
        if (got == 0)
            return CAIRN_ECORRUPT;
        count -= got;
    }
    return 0;
}

int
chunk_member_scan(int fd, uint64_t offset, struct chunk_member *member)
{
    struct chunk_reader reader;
    unsigned char *buf = NULL;
    SHA_CTX sha;
    unsigned char digest[20];
    int rc;

    if ((rc = chunk_reader_open(&reader, fd, offset)) < 0)
        return rc;
    if ((buf = malloc(CHUNK_IN_SIZE)) == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    SHA1_Init(&sha);
    for (;;) {
        size_t got;

        if ((rc = chunk_reader_read(&reader, buf, CHUNK_IN_SIZE, &got)) < 0)
            goto out;
        if (got == 0)
            break;
        SHA1_Update(&sha, buf, got);
    }
    SHA1_Final(digest, &sha);
    chunk_sha1_hex(digest, member->data_sha1);
    member->length = reader.produced;
    member->end = reader.end;
out:
    free(buf);
    chunk_reader_close(&reader);
    return rc;
}
