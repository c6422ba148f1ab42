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
 * the configured bits; and records data_mode for the explicit modes
 * below. Returns the previous umask.
 */
mode_t cairn_data_mode_apply(mode_t data_mode);
/*
 * The explicit modes the libraries pass to open()/mkdir()/fchmod() for
 * what they create: data_mode and its directory mode once
 * cairn_data_mode_apply() ran, 0600 and 0700 before (tests, tools that
 * read no configuration).
 */
mode_t cairn_created_file_mode(void);
mode_t cairn_created_dir_mode(void);

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
 * Hands the directory path (NULL: nothing to do) to uid:gid, so that the
 * daemon can keep writing there after the switch: it and the parents it
 * is missing are created with data_mode's directory bits and given to
 * uid:gid (existing parents are left alone; path itself, when it exists,
 * gets uid:gid and the directory bits). Only as root.
 */
int cairn_privileges_prepare_dir(const char *path, uid_t uid, gid_t gid,
                                 mode_t data_mode, char *error,
                                 size_t error_size);
/*
 * From now on the calling thread (and the threads it starts) creates and
 * opens files as uid:gid (Linux filesystem ids) while it keeps root for
 * the rest (binding a port below 1024): what a daemon creates while it
 * starts is owned by the service user. cairn_privileges_drop() ends it.
 */
int cairn_privileges_files_as(uid_t uid, gid_t gid, char *error,
                              size_t error_size);
/*
 * Drops to uid/gid for good (supplementary groups of user, then gid,
 * then uid: real, effective, saved and filesystem ids) and checks that
 * root cannot be regained (setuid(0) must fail).
 */
int cairn_privileges_drop(const char *user, uid_t uid, gid_t gid, char *error,
                          size_t error_size);

/*
 * The whole start of a daemon, in the order it must run: before anything
 * is opened, cairn_daemon_start_begin() applies data_mode (umask and
 * created modes), decides the switch (cairn_privileges_check()) and,
 * when switching, hands dirs (dir_count paths, NULL entries skipped) to
 * the user. The daemon reads what only root may read (its CURVE secret
 * key); cairn_daemon_start_files() makes the calling thread create and
 * open files as the user; the daemon binds its sockets and opens its
 * files; cairn_daemon_start_end() switches for good. state is filled by
 * begin and read by the others; user is borrowed and must outlive them.
 */
struct cairn_daemon_start {
    const char *user; /* NULL: no switch */
    bool switch_needed;
    uid_t uid;
    gid_t gid;
};
int cairn_daemon_start_begin(const char *user, bool allow_root,
                             mode_t data_mode, const char *const *dirs,
                             size_t dir_count, struct cairn_daemon_start *state,
                             char *error, size_t error_size);
int cairn_daemon_start_files(const struct cairn_daemon_start *state,
                             char *error, size_t error_size);
/* Back to root's file ids (a -w or pid file written before the switch). */
void cairn_daemon_start_files_done(const struct cairn_daemon_start *state);
int cairn_daemon_start_end(const struct cairn_daemon_start *state, char *error,
                           size_t error_size);

/*
 * Whether a file holding a secret (a password, a CURVE secret key, a TLS
 * key) is readable or writable by its group or others (any of 0077):
 * true, with the mode in *mode, when it is (the caller warns, naming the
 * file).
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
