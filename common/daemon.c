/*
 * daemon.c - pid file, data mode, the switch from root to the service user
 * and secret files (daemon.h).
 */
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRET_MAX 4096

/* data_mode once cairn_data_mode_apply() ran (created_file_mode()). */
static mode_t created_mode = 0600;

static int
say(char *error, size_t error_size, int rc, const char *fmt, const char *what,
    const char *why)
{
    if (error != NULL && error_size > 0)
        snprintf(error, error_size, fmt, what, why);
    return rc;
}

int
cairn_pid_file_write(const char *path, char *error, size_t error_size)
{
    char *temporary = NULL, line[32];
    int fd = -1, rc = CAIRN_OK, length;

    if (asprintf(&temporary, "%s.tmp", path) < 0)
        return CAIRN_ENOMEM;
    length = snprintf(line, sizeof(line), "%ld\n", (long)getpid());
    fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || cairn_write_all(fd, line, (size_t)length) < 0 ||
        fchmod(fd, 0644) < 0 || rename(temporary, path) != 0)
        rc = say(error, error_size, CAIRN_EIO, "cannot write %s: %s", path,
                 strerror(errno));
    if (fd >= 0)
        close(fd);
    if (rc < 0)
        unlink(temporary);
    free(temporary);
    return rc;
}

void
cairn_pid_file_remove(const char *path)
{
    char line[32] = "";
    FILE *file = fopen(path, "r");
    bool ours;

    if (file == NULL)
        return;
    ours = fgets(line, sizeof(line), file) != NULL &&
           strtol(line, NULL, 10) == (long)getpid();
    fclose(file);
    if (ours)
        unlink(path);
}

mode_t
cairn_data_dir_mode(mode_t data_mode)
{
    mode_t mode = data_mode & 0777;

    if (mode & 0400)
        mode |= 0100;
    if (mode & 0040)
        mode |= 0010;
    if (mode & 0004)
        mode |= 0001;
    return mode;
}

mode_t
cairn_data_mode_apply(mode_t data_mode)
{
    /* Files are created 0666 (no execute bit): the umask leaves exactly
     * data_mode's read/write bits; directories 0777 keep the directory
     * mode. An execute bit in data_mode alone stays off for files. */
    created_mode = data_mode & 0666;
    return umask(0777 & ~cairn_data_dir_mode(data_mode));
}

mode_t
cairn_created_file_mode(void)
{
    return created_mode;
}

mode_t
cairn_created_dir_mode(void)
{
    return cairn_data_dir_mode(created_mode);
}

int
cairn_privileges_check(const char *user, bool allow_root, bool *switch_needed,
                       uid_t *uid, gid_t *gid, char *error, size_t error_size)
{
    struct passwd *entry;

    *switch_needed = false;
    if (user == NULL || user[0] == '\0') {
        if (geteuid() == 0 && !allow_root)
            return say(error, error_size, CAIRN_EPERM,
                       "refusing to run as root without [security] user%s%s "
                       "(set user, or pass --allow-root)",
                       "", "");
        return CAIRN_OK;
    }
    errno = 0;
    if ((entry = getpwnam(user)) == NULL)
        return say(error, error_size, CAIRN_ENOENT, "[security] user %s: %s",
                   user, errno ? strerror(errno) : "no such user");
    *uid = entry->pw_uid;
    *gid = entry->pw_gid;
    if (geteuid() == 0) {
        *switch_needed = entry->pw_uid != 0;
        return CAIRN_OK;
    }
    if (geteuid() != entry->pw_uid)
        return say(error, error_size, CAIRN_EPERM,
                   "[security] user is %s but this process is not root and "
                   "runs as another user%s",
                   user, "");
    return CAIRN_OK;
}

int
cairn_privileges_prepare_dir(const char *path, uid_t uid, gid_t gid,
                             mode_t data_mode, char *error, size_t error_size)
{
    char *copy = NULL;
    int rc = CAIRN_OK;

    if (path == NULL)
        return CAIRN_OK;
    if ((copy = strdup(path)) == NULL)
        return CAIRN_ENOMEM;
    /* mkdir -p: each component made here goes to uid:gid, so the user
     * can reach the last one; parents that exist are not changed. */
    for (char *at = copy;;) {
        char *slash = strchr(at + 1, '/');
        bool last = slash == NULL, made;

        if (!last)
            *slash = '\0';
        made = mkdir(copy, cairn_data_dir_mode(data_mode)) == 0;
        if (!made && errno != EEXIST) {
            rc = say(error, error_size, CAIRN_EIO, "cannot create %s: %s", copy,
                     strerror(errno));
            break;
        }
        /* The daemon's own directory also gets the directory mode when
         * it existed already. */
        if (((made || last) && chown(copy, uid, gid) != 0) ||
            (last && chmod(copy, cairn_data_dir_mode(data_mode)) != 0)) {
            rc = say(error, error_size, CAIRN_EIO,
                     "cannot give %s to the service user: %s", copy,
                     strerror(errno));
            break;
        }
        if (last)
            break;
        *slash = '/';
        at = slash;
    }
    free(copy);
    return rc;
}

int
cairn_privileges_files_as(uid_t uid, gid_t gid, char *error, size_t error_size)
{
    /* setfs[ug]id() return the previous id and cannot fail loudly: a
     * second call tells whether the first took. */
    setfsgid(gid);
    setfsuid(uid);
    if ((uid_t)setfsuid(uid) != uid || (gid_t)setfsgid(gid) != gid)
        return say(error, error_size, CAIRN_EPERM,
                   "cannot create files as the service user%s%s", "", "");
    return CAIRN_OK;
}

int
cairn_privileges_drop(const char *user, uid_t uid, gid_t gid, char *error,
                      size_t error_size)
{
    uid_t real, effective, saved;

    if (initgroups(user, gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
        return say(error, error_size, CAIRN_EPERM, "cannot switch to %s: %s",
                   user, strerror(errno));
    if (getresuid(&real, &effective, &saved) != 0 || real != uid ||
        effective != uid || saved != uid)
        return say(error, error_size, CAIRN_EPERM,
                   "switched to %s but a uid is still another%s", user, "");
    if (uid != 0 && (setuid(0) == 0 || seteuid(0) == 0))
        return say(error, error_size, CAIRN_EPERM,
                   "switched to %s but root could be regained%s", user, "");
    return CAIRN_OK;
}

int
cairn_daemon_start_begin(const char *user, bool allow_root, mode_t data_mode,
                         const char *const *dirs, size_t dir_count,
                         struct cairn_daemon_start *state, char *error,
                         size_t error_size)
{
    int rc;

    memset(state, 0, sizeof(*state));
    state->user = user;
    cairn_data_mode_apply(data_mode);
    if ((rc = cairn_privileges_check(user, allow_root, &state->switch_needed,
                                     &state->uid, &state->gid, error,
                                     error_size)) < 0 ||
        !state->switch_needed)
        return rc;
    for (size_t i = 0; i < dir_count; i++)
        if ((rc = cairn_privileges_prepare_dir(dirs[i], state->uid, state->gid,
                                               data_mode, error, error_size)) <
            0)
            return rc;
    return CAIRN_OK;
}

int
cairn_daemon_start_files(const struct cairn_daemon_start *state, char *error,
                         size_t error_size)
{
    if (!state->switch_needed)
        return CAIRN_OK;
    return cairn_privileges_files_as(state->uid, state->gid, error, error_size);
}

void
cairn_daemon_start_files_done(const struct cairn_daemon_start *state)
{
    if (state->switch_needed)
        cairn_privileges_files_as(0, 0, NULL, 0);
}

int
cairn_daemon_start_end(const struct cairn_daemon_start *state, char *error,
                       size_t error_size)
{
    if (!state->switch_needed)
        return CAIRN_OK;
    return cairn_privileges_drop(state->user, state->uid, state->gid, error,
                                 error_size);
}

bool
cairn_secret_file_exposed(const char *path, mode_t *mode)
{
    struct stat info;

    if (stat(path, &info) != 0)
        return false;
    *mode = info.st_mode & 07777;
    return (info.st_mode & 0077) != 0;
}

int
cairn_secret_file_read(const char *path, char **secret, char *error,
                       size_t error_size)
{
    char buffer[SECRET_MAX + 2];
    size_t length;
    FILE *file;

    *secret = NULL;
    if ((file = fopen(path, "r")) == NULL)
        return say(error, error_size,
                   errno == ENOENT ? CAIRN_ENOENT : CAIRN_EIO,
                   "cannot read %s: %s", path, strerror(errno));
    if (fgets(buffer, sizeof(buffer), file) == NULL)
        buffer[0] = '\0';
    fclose(file);
    length = strcspn(buffer, "\r\n");
    buffer[length] = '\0';
    if (length == 0 || length > SECRET_MAX) {
        explicit_bzero(buffer, sizeof(buffer));
        return say(error, error_size, CAIRN_EINVAL, "%s: %s", path,
                   length == 0 ? "empty (the secret is its first line)"
                               : "first line longer than 4096 bytes");
    }
    *secret = strdup(buffer);
    explicit_bzero(buffer, sizeof(buffer));
    return *secret != NULL ? CAIRN_OK : CAIRN_ENOMEM;
}
