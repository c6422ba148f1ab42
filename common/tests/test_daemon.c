/*
 * test_daemon.c - daemon.h's pure parts and files: the directory mode of a
 * data_mode, the modes libraries are given once data_mode is applied (and
 * what the umask makes of a file created 0666 and a directory created
 * 0777, as SQLite does), secret files (first line, newline stripped,
 * empty refused, exposed when group or others have a bit), and the
 * decision to switch users (root without user refused unless allowed, an
 * unknown user refused).
 */
#include "../daemon.h"
#include "check.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/cairn-test-daemon-XXXXXX";

static void
write_file(const char *path, const char *text, mode_t mode)
{
    FILE *file = fopen(path, "w");

    CHECK(file != NULL);
    if (file == NULL)
        return;
    fputs(text, file);
    fclose(file);
    CHECK(chmod(path, mode) == 0);
}

static mode_t
mode_of(const char *path)
{
    struct stat info;

    return stat(path, &info) == 0 ? info.st_mode & 07777 : 0;
}

static void
test_modes(void)
{
    char file[600], sub[600];
    int fd;

    CHECK_U64(cairn_data_dir_mode(0600), 0700);
    CHECK_U64(cairn_data_dir_mode(0640), 0750);
    CHECK_U64(cairn_data_dir_mode(0644), 0755);
    CHECK_U64(cairn_created_file_mode(), 0600); /* before any config */
    CHECK_U64(cairn_created_dir_mode(), 0700);
    cairn_data_mode_apply(0640);
    CHECK_U64(cairn_created_file_mode(), 0640);
    CHECK_U64(cairn_created_dir_mode(), 0750);
    /* what SQLite and fopen() get: 0666 & ~umask, 0777 & ~umask */
    snprintf(file, sizeof(file), "%s/made", dir);
    fd = open(file, O_WRONLY | O_CREAT | O_EXCL, 0666);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    CHECK_U64(mode_of(file), 0640);
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    CHECK(mkdir(sub, 0777) == 0);
    CHECK_U64(mode_of(sub), 0750);
    cairn_data_mode_apply(0600);
    unlink(file);
    rmdir(sub);
}

static void
test_secret_files(void)
{
    char path[600], error[256], *secret = NULL;
    mode_t mode = 0;

    snprintf(path, sizeof(path), "%s/password", dir);
    write_file(path, "s3cret\n", 0600);
    CHECK_INT(cairn_secret_file_read(path, &secret, error, sizeof(error)), 0);
    CHECK_STR(secret, "s3cret");
    free(secret);
    CHECK(!cairn_secret_file_exposed(path, &mode));
    write_file(path, "with crlf\r\nsecond line\n", 0640);
    CHECK_INT(cairn_secret_file_read(path, &secret, error, sizeof(error)), 0);
    CHECK_STR(secret, "with crlf");
    free(secret);
    CHECK(cairn_secret_file_exposed(path, &mode));
    CHECK_U64(mode, 0640);
    write_file(path, "x", 0604);
    CHECK(cairn_secret_file_exposed(path, &mode));
    write_file(path, "\n", 0600);
    CHECK_INT(cairn_secret_file_read(path, &secret, error, sizeof(error)),
              CAIRN_EINVAL);
    CHECK(secret == NULL && strstr(error, "empty") != NULL);
    unlink(path);
    CHECK_INT(cairn_secret_file_read(path, &secret, error, sizeof(error)),
              CAIRN_ENOENT);
    CHECK(strstr(error, path) != NULL);
}

static void
test_privileges_check(void)
{
    char error[256] = "";
    bool needed = true;
    uid_t uid = 0;
    gid_t gid = 0;

    if (geteuid() == 0) {
        CHECK_INT(cairn_privileges_check(NULL, false, &needed, &uid, &gid,
                                         error, sizeof(error)),
                  CAIRN_EPERM);
        CHECK_STR(error, "refusing to run as root without [security] user "
                         "(set user, or pass --allow-root)");
        CHECK_INT(cairn_privileges_check(NULL, true, &needed, &uid, &gid, error,
                                         sizeof(error)),
                  0);
        CHECK(!needed);
        CHECK_INT(cairn_privileges_check("root", false, &needed, &uid, &gid,
                                         error, sizeof(error)),
                  0);
        CHECK(!needed); /* root as the user: nothing to switch */
    } else {
        CHECK_INT(cairn_privileges_check(NULL, false, &needed, &uid, &gid,
                                         error, sizeof(error)),
                  0);
        CHECK_INT(cairn_privileges_check("root", false, &needed, &uid, &gid,
                                         error, sizeof(error)),
                  CAIRN_EPERM);
    }
    CHECK_INT(cairn_privileges_check("no-such-cairn-user", false, &needed, &uid,
                                     &gid, error, sizeof(error)),
              CAIRN_ENOENT);
    CHECK(strstr(error, "no-such-cairn-user") != NULL);
}

int
main(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    test_modes();
    test_secret_files();
    test_privileges_check();
    rmdir(dir);
    return check_exit("test_daemon");
}
