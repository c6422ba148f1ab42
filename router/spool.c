/*
 * spool.c - where APPLY MESSAGE bodies wait until the router knows whose
 * they are: each file literal is streamed into its own file under the
 * spool directory as it arrives (never held in memory), its SHA-1 checked
 * against the GUID as backupd does, and the file removed when the command
 * that carried it is done. The spool has a byte budget shared by every
 * connection; a body that does not fit is refused before it is written.
 */
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
    uint64_t used_bytes; /* reserved by files that exist now */
    uint64_t next_id;
};

struct cairn_router_spool_file {
    char path[512];
    char guid[CAIRN_DLIST_GUID_LEN + 1];
    int fd;
    uint64_t size, written;
    EVP_MD_CTX *digest;
    bool verified;
};

/* mkdir -p, the last component with mode 0700. */
static int
make_directories(char *path)
{
    for (char *slash = strchr(path + 1, '/'); slash != NULL;
         slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST) {
            *slash = '/';
            return CAIRN_EIO;
        }
        *slash = '/';
    }
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
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

static void
file_free(struct cairn_router_spool *spool, struct cairn_router_spool_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    unlink(f->path);
    EVP_MD_CTX_free(f->digest);
    spool->used_bytes -= f->size;
    free(f);
}

static int
spool_begin(void *ctx, const char *partition, const char *guid, uint64_t size,
            void **handle)
{
    struct cairn_router_spool *spool = ctx;
    struct cairn_router_spool_file *f;

    *handle = NULL;
    if (size > spool->max_bytes - spool->used_bytes)
        return CAIRN_ENOSPACE;
    if ((f = calloc(1, sizeof(*f))) == NULL)
        return CAIRN_ENOMEM;
    f->fd = -1;
    f->size = size;
    spool->used_bytes += size;
    snprintf(f->guid, sizeof(f->guid), "%s", guid);
    snprintf(f->path, sizeof(f->path), "%s/%" PRIu64 "-%d.msg", spool->dir,
             spool->next_id++, (int)getpid());
    f->fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    f->digest = EVP_MD_CTX_new();
    if (f->fd < 0 || f->digest == NULL ||
        EVP_DigestInit_ex(f->digest, EVP_sha1(), NULL) != 1) {
        file_free(spool, f);
        return CAIRN_EIO;
    }
    *handle = f;
    return CAIRN_OK;
}

static int
spool_data(void *ctx, void *handle, const void *bytes, size_t len)
{
    struct cairn_router_spool_file *f = handle;

    if (len > f->size - f->written)
        return CAIRN_EPROTO;
    f->written += len;
    if (EVP_DigestUpdate(f->digest, bytes, len) != 1)
        return CAIRN_EIO;
    return cairn_write_all(f->fd, bytes, len);
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
    if (close(f->fd) < 0) {
        f->fd = -1;
        return CAIRN_EIO;
    }
    f->fd = -1;
    return CAIRN_OK;
}

static void
spool_release(void *ctx, void *handle)
{
    if (handle != NULL)
        file_free(ctx, handle);
}

void
cairn_router_spool_sink(struct cairn_router_spool *spool,
                        struct cairn_dlist_file_sink *sink)
{
    sink->begin = spool_begin;
    sink->data = spool_data;
    sink->end = spool_end;
    sink->release = spool_release;
    sink->ctx = spool;
}

const char *
cairn_router_spool_file_path(const void *handle)
{
    return handle != NULL
               ? ((const struct cairn_router_spool_file *)handle)->path
               : NULL;
}

bool
cairn_router_spool_file_verified(const void *handle)
{
    return handle != NULL &&
           ((const struct cairn_router_spool_file *)handle)->verified;
}
