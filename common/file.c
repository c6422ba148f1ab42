/* file.c - small durable-write helpers shared by the node and the tools. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
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
