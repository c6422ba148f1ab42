/*
 * chunk.c - the gzip members ("chunks") of a Cyrus backup data file.
 *
 * The writer produces one gzip member per chunk with a raw deflate stream
 * and a hand-made gzip header and trailer, and can rewind to the start of
 * any record line. A member that fits its bounded buffer is compressed
 * whole by libdeflate when it ends (a rewind just cuts the buffer); a
 * bigger one streams through zlib, every line ending with Z_FULL_FLUSH (as
 * backupd does), which leaves the compressed output byte-aligned and
 * independent of what came before. It keeps a running SHA-1 of every
 * compressed byte of the file, so a chunk's file_sha1 never needs the file
 * to be re-read.
 *
 * The reader inflates one member from a file offset, in bounded pieces.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "node_int.h"

#include <errno.h>
#include <libdeflate.h>
#include <pthread.h>
#include <stdatomic.h>
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

/*
 * Bytes of pending buffers across every writer of the process: the
 * budget keeps the node's memory bounded however many users write at
 * once (a writer that gets no budget streams through zlib).
 */
static atomic_size_t buffered_total;

#define PENDING_FIRST_SIZE (64 * 1024)

/* Spare libdeflate compressors (one is taken per buffered member's end). */
#define SPARE_COMPRESSORS 4
static pthread_mutex_t compressor_lock = PTHREAD_MUTEX_INITIALIZER;
static struct libdeflate_compressor *spare_compressors[SPARE_COMPRESSORS];
static int spare_levels[SPARE_COMPRESSORS];

/* libdeflate's level for a zlib level (-1: zlib's default, 6). */
static int
libdeflate_level(int zlib_level)
{
    if (zlib_level < 0)
        return 6;
    return zlib_level < 1 ? 1 : zlib_level;
}

static struct libdeflate_compressor *
take_compressor(int level)
{
    struct libdeflate_compressor *found = NULL;

    pthread_mutex_lock(&compressor_lock);
    for (int i = 0; i < SPARE_COMPRESSORS && !found; i++) {
        if (spare_compressors[i] && spare_levels[i] == level) {
            found = spare_compressors[i];
            spare_compressors[i] = NULL;
        }
    }
    pthread_mutex_unlock(&compressor_lock);
    return found ? found : libdeflate_alloc_compressor(level);
}

static void
give_back_compressor(struct libdeflate_compressor *compressor, int level)
{
    pthread_mutex_lock(&compressor_lock);
    for (int i = 0; i < SPARE_COMPRESSORS && compressor; i++) {
        if (!spare_compressors[i]) {
            spare_compressors[i] = compressor;
            spare_levels[i] = level;
            compressor = NULL;
        }
    }
    pthread_mutex_unlock(&compressor_lock);
    libdeflate_free_compressor(compressor);
}

/* Grows pending to hold extra more bytes; false when it may not. */
static bool
pending_reserve(struct chunk_writer *writer, size_t extra)
{
    size_t want = writer->pending_len + extra, cap = writer->pending_cap;
    unsigned char *grown;

    if (want <= cap)
        return true;
    if (want > CHUNK_BUFFER_MAX)
        return false;
    if (cap == 0)
        cap = PENDING_FIRST_SIZE;
    while (cap < want)
        cap *= 2;
    if (cap > CHUNK_BUFFER_MAX)
        cap = CHUNK_BUFFER_MAX;
    if (atomic_fetch_add(&buffered_total, cap - writer->pending_cap) +
            (cap - writer->pending_cap) >
        CHUNK_BUFFER_BUDGET) {
        atomic_fetch_sub(&buffered_total, cap - writer->pending_cap);
        return false;
    }
    if ((grown = realloc(writer->pending, cap)) == NULL) {
        atomic_fetch_sub(&buffered_total, cap - writer->pending_cap);
        return false;
    }
    writer->pending = grown;
    writer->pending_cap = cap;
    return true;
}

/*
 * Empties pending; frees it unless it is the first size, kept for the
 * next member (a node keeps hundreds of stores open: an idle one holds at
 * most 64 KiB of the budget).
 */
static void
pending_trim(struct chunk_writer *writer, bool keep_small)
{
    writer->pending_len = 0;
    writer->line_start = 0;
    if (keep_small && writer->pending_cap <= PENDING_FIRST_SIZE)
        return;
    free(writer->pending);
    atomic_fetch_sub(&buffered_total, writer->pending_cap);
    writer->pending = NULL;
    writer->pending_cap = 0;
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
    pending_trim(writer, false);
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

/* Feeds bytes to the streaming member: hashes, CRC, deflate. */
static int
stream_bytes(struct chunk_writer *writer, const unsigned char *at, size_t len,
             int flush)
{
    SHA1_Update(&writer->data_sha, at, len);
    /* zlib takes at most 4 GiB per call. */
    do {
        size_t piece = len > (1u << 30) ? (1u << 30) : len;
        int rc;

        writer->crc = crc32(writer->crc, at, (uInt)piece);
        if ((rc = deflate_some(writer, at, piece,
                               piece == len ? flush : Z_NO_FLUSH)) < 0)
            return rc;
        at += piece;
        len -= piece;
    } while (len > 0);
    return 0;
}

/*
 * The buffered member outgrew its buffer: the gzip header and every whole
 * line so far go out through zlib with a full flush (the rewind point a
 * mark at the current line's start needs), then the current line's start.
 */
static int
switch_to_streaming(struct chunk_writer *writer)
{
    int rc;

    if (!writer->z_ready) {
        if (deflateInit2(&writer->z, writer->level, Z_DEFLATED, -15, 8,
                         Z_DEFAULT_STRATEGY) != Z_OK)
            return CAIRN_ENOMEM;
        writer->z_ready = true;
    } else if (deflateReset(&writer->z) != Z_OK) {
        return CAIRN_EIO;
    }
    writer->streaming = true;
    writer->crc = crc32(0L, Z_NULL, 0);
    SHA1_Init(&writer->data_sha);
    if ((rc = put_raw(writer, gzip_header, sizeof(gzip_header))) < 0 ||
        (rc = stream_bytes(writer, writer->pending, writer->line_start,
                           Z_FULL_FLUSH)) < 0 ||
        (rc = drain(writer)) < 0)
        return rc;
    writer->switch_mark = (struct chunk_mark){
        .file_end = writer->file_end,
        .length = writer->line_start,
        .member_start = writer->member_start,
        .open = true,
        .crc = writer->crc,
        .data_sha = writer->data_sha,
        .file_sha = writer->file_sha,
    };
    if ((rc = stream_bytes(writer, writer->pending + writer->line_start,
                           writer->pending_len - writer->line_start,
                           Z_NO_FLUSH)) < 0)
        return rc;
    pending_trim(writer, true);
    return 0;
}

int
chunk_writer_begin(struct chunk_writer *writer)
{
    int rc;

    if (writer->out == NULL && (writer->out = malloc(CHUNK_OUT_SIZE)) == NULL)
        return CAIRN_ENOMEM;
    chunk_sha1_state_hex(&writer->file_sha, writer->file_sha1);
    writer->member_start = writer->file_end;
    writer->length = 0;
    writer->streaming = false;
    writer->pending_len = 0;
    writer->line_start = 0;
    writer->open = true;
    if ((rc = chunk_writer_write(writer, CHUNK_HEADER_LINE, CHUNK_HEADER_LEN)) <
        0)
        return rc;
    return chunk_writer_end_line(writer);
}

int
chunk_writer_write(struct chunk_writer *writer, const void *data, size_t len)
{
    int rc;

    writer->length += len;
    if (!writer->streaming) {
        if (pending_reserve(writer, len)) {
            memcpy(writer->pending + writer->pending_len, data, len);
            writer->pending_len += len;
            return 0;
        }
        if ((rc = switch_to_streaming(writer)) < 0)
            return rc;
    }
    return len ? stream_bytes(writer, data, len, Z_NO_FLUSH) : 0;
}

int
chunk_writer_end_line(struct chunk_writer *writer)
{
    int rc;

    if (!writer->streaming) {
        writer->line_start = writer->pending_len;
        return 0;
    }
    if ((rc = deflate_some(writer, NULL, 0, Z_FULL_FLUSH)) < 0)
        return rc;
    return drain(writer);
}

void
chunk_writer_mark(const struct chunk_writer *writer, struct chunk_mark *mark)
{
    mark->file_end = writer->file_end;
    mark->length = writer->length;
    mark->member_start = writer->member_start;
    mark->open = writer->open;
    mark->buffered = writer->open && !writer->streaming;
    mark->crc = writer->crc;
    mark->data_sha = writer->data_sha;
    mark->file_sha = writer->file_sha;
}

int
chunk_writer_rewind(struct chunk_writer *writer, const struct chunk_mark *mark)
{
    bool same_member = mark->open && mark->member_start == writer->member_start;

    if (same_member && mark->buffered && !writer->streaming) {
        /* nothing of the member is in the file yet */
        writer->pending_len = (size_t)mark->length;
        writer->line_start = writer->pending_len;
        writer->length = mark->length;
        return 0;
    }
    if (same_member && mark->buffered) {
        /* marked before the switch: only its line start can be undone */
        if (mark->length != writer->switch_mark.length)
            return CAIRN_EIO;
        mark = &writer->switch_mark;
    }
    writer->out_len = 0;
    if (!same_member) {
        pending_trim(writer, true);
        writer->streaming = false;
    }
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

/* Ends a buffered member: one libdeflate pass, header, data, trailer. */
static int
finish_buffered(struct chunk_writer *writer, unsigned char digest[20])
{
    int level = libdeflate_level(writer->level);
    struct libdeflate_compressor *compressor = take_compressor(level);
    size_t bound, packed;
    unsigned char *member = NULL;
    int rc = CAIRN_ENOMEM;

    if (!compressor)
        return CAIRN_ENOMEM;
    bound = libdeflate_deflate_compress_bound(compressor, writer->pending_len);
    if ((member = malloc(sizeof(gzip_header) + bound + 8)) == NULL)
        goto out;
    writer->crc =
        (uint32_t)libdeflate_crc32(0, writer->pending, writer->pending_len);
    SHA1(writer->pending, writer->pending_len, digest);
    packed = libdeflate_deflate_compress(compressor, writer->pending,
                                         writer->pending_len,
                                         member + sizeof(gzip_header), bound);
    if (packed == 0) {
        rc = CAIRN_EIO;
        goto out;
    }
    memcpy(member, gzip_header, sizeof(gzip_header));
    for (int i = 0; i < 4; i++) {
        member[sizeof(gzip_header) + packed + i] =
            (unsigned char)(writer->crc >> (8 * i));
        member[sizeof(gzip_header) + packed + 4 + i] =
            (unsigned char)((uint32_t)writer->length >> (8 * i));
    }
    packed += sizeof(gzip_header) + 8;
    if ((rc = cairn_write_all(writer->fd, member, packed)) < 0)
        goto out;
    SHA1_Update(&writer->file_sha, member, packed);
    writer->file_end += packed;
    pending_trim(writer, true);
out:
    free(member);
    give_back_compressor(compressor, level);
    return rc;
}

int
chunk_writer_finish(struct chunk_writer *writer, char data_sha1[41])
{
    unsigned char trailer[8];
    unsigned char digest[20];
    uint32_t size = (uint32_t)writer->length;
    int rc;

    if (!writer->streaming) {
        if ((rc = finish_buffered(writer, digest)) < 0)
            return rc;
        chunk_sha1_hex(digest, data_sha1);
        writer->open = false;
        return 0;
    }
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
    writer->streaming = false;
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
