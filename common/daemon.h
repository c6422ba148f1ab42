/*
 * daemon.h - what a cairn daemon does to itself at start (library
 * cairn_common): its pid file, the permission bits of what it creates,
 * the switch from root to the service user, and the check that files
 * holding secrets are not readable by others.
 *
 * These functions act on the calling process (umask, uid, files); they
 * never log: failures come back as a negative CAIRN_E* code and a reason
 * in error (error_size bytes, may be NULL), warnings through the
 * caller's buffer. Call them from main(), before any thread starts.
 */
#ifndef CAIRN_DAEMON_H
#define CAIRN_DAEMON_H

#include "common.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/*
 * Writes the calling process's pid and a newline to path (a temporary
 * file renamed into place, mode 0644). CAIRN_EIO with the reason.
 */
int cairn_pid_file_write(const char *path, char *error, size_t error_size);
/* Removes path if it still holds the calling process's pid. */
void cairn_pid_file_remove(const char *path);

/*
 * The directory mode that goes with data_mode: the file bits plus an
 * execute bit for each class that may read (0600 -> 0700, 0640 -> 0750).
 */
mode_t cairn_data_dir_mode(mode_t data_mode);
/*
 * Sets the process umask so that files created 0666 get data_mode and
 * directories created 0777 get cairn_data_dir_mode(data_mode): every file
 * and directory the daemon (or SQLite, or a library) makes afterwards has
 * the configured bits. Returns the previous umask.
 */
mode_t cairn_data_mode_apply(mode_t data_mode);

/*
 * Switching away from root. cairn_privileges_check() decides, before
 * anything is opened, what will happen: as root with user set, the
 * switch is prepared (*uid, *gid of user; CAIRN_ENOENT when user does
 * not exist); as root without user, CAIRN_EPERM unless allow_root; not
 * root, with user set to another account, CAIRN_EPERM (cannot switch).
 * *switch_needed says whether cairn_privileges_drop() must run.
 */
int cairn_privileges_check(const char *user, bool allow_root,
                           bool *switch_needed, uid_t *uid, gid_t *gid,
                           char *error, size_t error_size);
/*
 * Hands each path (NULL entries skipped; created with data_mode's
 * directory bits when missing) to uid:gid, so that the daemon can keep
 * writing there after the switch. Only as root.
 */
int cairn_privileges_prepare_dir(const char *path, uid_t uid, gid_t gid,
                                 mode_t data_mode, char *error,
                                 size_t error_size);
/*
 * Drops to uid/gid for good (supplementary groups of user, then gid,
 * then uid) and checks that root cannot be regained.
 */
int cairn_privileges_drop(const char *user, uid_t uid, gid_t gid, char *error,
                          size_t error_size);

/*
 * Whether a file holding a secret (a password, a CURVE secret key, a TLS
 * key) is readable or writable by others than its owner and group:
 * true, with the mode in *mode, when it is (the caller warns).
 */
bool cairn_secret_file_exposed(const char *path, mode_t *mode);

/*
 * Reads a secret from path: the first line, without its newline, at most
 * 4096 bytes. *secret is owned by the caller (free it after clearing it).
 * CAIRN_ENOENT / CAIRN_EIO with the reason; CAIRN_EINVAL for an empty
 * file.
 */
int cairn_secret_file_read(const char *path, char **secret, char *error,
                           size_t error_size);

#endif /* CAIRN_DAEMON_H */
