/* file.c - small durable-write helpers shared by the node and the tools. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

int
cairn_raise_open_files_limit(uint64_t *limit)
{
    struct rlimit files;

    if (getrlimit(RLIMIT_NOFILE, &files) < 0)
        return CAIRN_EIO;
    if (files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &files) < 0 &&
            getrlimit(RLIMIT_NOFILE, &files) < 0)
            return CAIRN_EIO;
    }
    *limit = (uint64_t)files.rlim_cur;
    return CAIRN_OK;
}

int
cairn_write_all(int fd, const void *data, size_t len)
{
    const char *at = data;

    while (len > 0) {
        ssize_t n = write(fd, at, len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == ENOSPC ? CAIRN_ENOSPACE : CAIRN_EIO;
        }
        at += n;
        len -= (size_t)n;
    }
    return CAIRN_OK;
}

int
cairn_fsync_parent_dir(const char *path)
{
    char *copy = strdup(path);
    int fd = -1, rc = CAIRN_OK;

    if (copy == NULL)
        return CAIRN_ENOMEM;
    fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = CAIRN_EIO;
        goto out;
    }
    if (fsync(fd) < 0)
        rc = CAIRN_EIO;
out:
    if (fd >= 0)
        close(fd);
    free(copy);
    return rc;
}

int
cairn_file_sha1(const char *path, char hex[41], uint64_t *size)
{
    unsigned char digest[EVP_MAX_MD_SIZE], block[65536];
    unsigned digest_len = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t got;
    int rc = CAIRN_EIO;

    *size = 0;
    if (md == NULL || fd < 0 || !EVP_DigestInit_ex(md, EVP_sha1(), NULL))
        goto out;
    while ((got = read(fd, block, sizeof(block))) > 0) {
        EVP_DigestUpdate(md, block, (size_t)got);
        *size += (uint64_t)got;
    }
    if (got < 0 || !EVP_DigestFinal_ex(md, digest, &digest_len))
        goto out;
    for (unsigned i = 0; i < digest_len && i < 20; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    EVP_MD_CTX_free(md);
    return rc;
}
