/*
 * spool.c - where APPLY MESSAGE bodies wait until the router knows whose
 * they are: each file literal is streamed, as it arrives (never held in
 * memory), into its connection's current spool file after the bodies
 * before it, its SHA-1 checked against the GUID as backupd does; a file
 * is removed when the last body in it is released. The spool has a byte
 * budget shared by every connection; a body that does not fit is refused
 * before it is written.
 */
#include "daemon.h"
#include "router_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

struct cairn_router_spool {
    char *dir;
    uint64_t max_bytes;
    uint64_t used_bytes; /* reserved by bodies that exist now */
    uint64_t next_id;
};

/*
 * One file holding a connection's bodies one after the other: a request
 * that carries thousands of bodies then reads them through one descriptor
 * per file, not one per body. The file goes when its last body is
 * released (requests in flight keep reading through their own
 * descriptors); the writer starts a new one past ROTATE_BYTES, so a body
 * held long does not keep the many released after it on disk.
 */
struct spool_shared {
    char path[512];
    int fd;      /* for writing; -1 once closed */
    size_t refs; /* live bodies in it */
    uint64_t size;
    struct cairn_router_spool_writer *writer; /* appending to it, or NULL */
};

struct cairn_router_spool_file {
    struct cairn_router_spool *spool; /* outlives its writer */
    struct spool_shared *shared;
    char guid[CAIRN_DLIST_GUID_LEN + 1];
    uint64_t offset, size, written;
    EVP_MD_CTX *digest;
    bool verified;
};

struct cairn_router_spool_writer {
    struct cairn_router_spool *spool;
    struct spool_shared *current; /* bodies are appended here */
};

/* A new shared file past this size (bodies already in it stay). */
#define ROTATE_BYTES (64u * 1024 * 1024)

/* mkdir -p, every component made with data_mode's directory mode. */
static int
make_directories(char *path)
{
    for (char *slash = strchr(path + 1, '/'); slash != NULL;
         slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (mkdir(path, cairn_created_dir_mode()) < 0 && errno != EEXIST) {
            *slash = '/';
            return CAIRN_EIO;
        }
        *slash = '/';
    }
    if (mkdir(path, cairn_created_dir_mode()) < 0 && errno != EEXIST)
        return CAIRN_EIO;
    return CAIRN_OK;
}

int
cairn_router_spool_new(const char *dir, uint64_t max_bytes,
                       struct cairn_router_spool **out)
{
    struct cairn_router_spool *spool = calloc(1, sizeof(*spool));

    *out = NULL;
    if (spool == NULL)
        return CAIRN_ENOMEM;
    spool->dir = strdup(dir);
    if (spool->dir == NULL) {
        free(spool);
        return CAIRN_ENOMEM;
    }
    if (make_directories(spool->dir) < 0) {
        free(spool->dir);
        free(spool);
        return CAIRN_EIO;
    }
    spool->max_bytes = max_bytes;
    *out = spool;
    return CAIRN_OK;
}

void
cairn_router_spool_free(struct cairn_router_spool *spool)
{
    if (spool == NULL)
        return;
    free(spool->dir);
    free(spool);
}

uint64_t
cairn_router_spool_used(const struct cairn_router_spool *spool)
{
    return spool->used_bytes;
}

/* Closes and removes a shared file nobody appends to or reads from. */
static void
shared_drop(struct spool_shared *shared)
{
    if (shared->fd >= 0)
        close(shared->fd);
    unlink(shared->path);
    free(shared);
}

/* The writer stops appending to its file (gone when nothing is in it). */
static void
writer_retire(struct cairn_router_spool_writer *writer)
{
    struct spool_shared *shared = writer->current;

    writer->current = NULL;
    if (shared == NULL)
        return;
    shared->writer = NULL;
    if (shared->refs == 0)
        shared_drop(shared);
}

static int
shared_new(struct cairn_router_spool_writer *writer)
{
    struct cairn_router_spool *spool = writer->spool;
    struct spool_shared *shared = calloc(1, sizeof(*shared));

    if (shared == NULL)
        return CAIRN_ENOMEM;
    snprintf(shared->path, sizeof(shared->path), "%s/%" PRIu64 "-%d.msg",
             spool->dir, spool->next_id++, (int)getpid());
    shared->fd = open(shared->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                      cairn_created_file_mode());
    if (shared->fd < 0) {
        free(shared);
        return CAIRN_EIO;
    }
    shared->writer = writer;
    writer->current = shared;
    return CAIRN_OK;
}

static void
file_free(struct cairn_router_spool_file *f)
{
    struct spool_shared *shared = f->shared;

    EVP_MD_CTX_free(f->digest);
    f->spool->used_bytes -= f->size;
    free(f);
    if (shared == NULL || --shared->refs > 0)
        return;
    /* Empty: its writer starts a new file with its next body. */
    if (shared->writer != NULL)
        shared->writer->current = NULL;
    shared_drop(shared);
}

static int
spool_begin(void *ctx, const char *partition, const char *guid, uint64_t size,
            void **handle)
{
    struct cairn_router_spool_writer *writer = ctx;
    struct cairn_router_spool *spool = writer->spool;
    struct cairn_router_spool_file *f;
    int rc;

    *handle = NULL;
    if (size > spool->max_bytes - spool->used_bytes)
        return CAIRN_ENOSPACE;
    if (writer->current != NULL && writer->current->size >= ROTATE_BYTES)
        writer_retire(writer);
    if (writer->current == NULL && (rc = shared_new(writer)) < 0)
        return rc;
    if ((f = calloc(1, sizeof(*f))) == NULL)
        return CAIRN_ENOMEM;
    f->spool = spool;
    f->size = size;
    spool->used_bytes += size;
    f->shared = writer->current;
    f->shared->refs++;
    f->offset = f->shared->size;
    /* The body's room is taken now: the next body goes after it. */
    f->shared->size += size;
    snprintf(f->guid, sizeof(f->guid), "%s", guid);
    f->digest = EVP_MD_CTX_new();
    if (f->digest == NULL ||
        EVP_DigestInit_ex(f->digest, EVP_sha1(), NULL) != 1) {
        file_free(f);
        return CAIRN_EIO;
    }
    *handle = f;
    return CAIRN_OK;
}

static int
spool_data(void *ctx, void *handle, const void *bytes, size_t len)
{
    struct cairn_router_spool_file *f = handle;
    const char *at = bytes;

    if (len > f->size - f->written)
        return CAIRN_EPROTO;
    if (EVP_DigestUpdate(f->digest, bytes, len) != 1)
        return CAIRN_EIO;
    while (len > 0) {
        ssize_t n =
            pwrite(f->shared->fd, at, len, (off_t)(f->offset + f->written));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == ENOSPC ? CAIRN_ENOSPACE : CAIRN_EIO;
        f->written += (uint64_t)n;
        at += n;
        len -= (size_t)n;
    }
    return CAIRN_OK;
}

static int
spool_end(void *ctx, void *handle)
{
    struct cairn_router_spool_file *f = handle;
    unsigned char sha1[EVP_MAX_MD_SIZE];
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    unsigned int len = 0;

    if (EVP_DigestFinal_ex(f->digest, sha1, &len) != 1)
        return CAIRN_EIO;
    for (unsigned int i = 0; i < len; i++)
        snprintf(hex + 2 * i, 3, "%02x", sha1[i]);
    /* A mismatch is answered as backupd does, not a parse failure. */
    f->verified = f->written == f->size && strcasecmp(hex, f->guid) == 0;
    return CAIRN_OK;
}

/* ctx (the writer) may be gone: a pending reply's stage outlives it. */
static void
spool_release(void *ctx, void *handle)
{
    (void)ctx;
    if (handle != NULL)
        file_free(handle);
}

int
cairn_router_spool_writer_new(struct cairn_router_spool *spool,
                              struct cairn_router_spool_writer **out)
{
    *out = calloc(1, sizeof(**out));
    if (*out == NULL)
        return CAIRN_ENOMEM;
    (*out)->spool = spool;
    return CAIRN_OK;
}

void
cairn_router_spool_writer_free(struct cairn_router_spool_writer *writer)
{
    if (writer == NULL)
        return;
    writer_retire(writer);
    free(writer);
}

void
cairn_router_spool_writer_sink(struct cairn_router_spool_writer *writer,
                               struct cairn_dlist_file_sink *sink)
{
    sink->begin = spool_begin;
    sink->data = spool_data;
    sink->end = spool_end;
    sink->release = spool_release;
    sink->ctx = writer;
}

const char *
cairn_router_spool_file_path(const void *handle)
{
    return handle != NULL
               ? ((const struct cairn_router_spool_file *)handle)->shared->path
               : NULL;
}

uint64_t
cairn_router_spool_file_offset(const void *handle)
{
    return handle != NULL
               ? ((const struct cairn_router_spool_file *)handle)->offset
               : 0;
}

bool
cairn_router_spool_file_verified(const void *handle)
{
    return handle != NULL &&
           ((const struct cairn_router_spool_file *)handle)->verified;
}
