/*
 * test_restore_import.c - `cairnctl import` run in-process on copies of
 * the committed backupd files: a clean import equals Cyrus's index, a
 * second import of the user is refused, a damaged data file is refused
 * and leaves nothing behind, a file backupd holds locked is not copied,
 * --all finds backupd's <user>_XXXXXX names, and the imported user is
 * then restorable (a dry run plans its mailboxes). backupd's empty chunks
 * (unchanged sync passes) are kept as chunk rows; a torn last member is
 * cut and said so; a refusal names the chunk, its offset and the rule.
 */
#include "check.h"
#include "ops.h"
#include "restore_test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char temp_dir[] = "/tmp/cairn-test-import-XXXXXX";

/* Runs cairnctl with the words of line; output in out (caller frees). */
static int
cairnctl(const char *line, char **out)
{
    char *copy = strdup(line), *argv[32], *save = NULL;
    int argc = 0, status;
    size_t size = 0;
    FILE *stream = open_memstream(out, &size);
    FILE *err = fopen("/dev/null", "w");

    argv[argc++] = "cairnctl";
    for (char *word = strtok_r(copy, " ", &save); word && argc < 31;
         word = strtok_r(NULL, " ", &save))
        argv[argc++] = word;
    argv[argc] = NULL;
    status = cairn_ops_main(argc, argv, stream, err);
    fclose(stream);
    fclose(err);
    free(copy);
    return status;
}

/* Files under dir/sub (0 when it does not exist). */
static int
count_files(const char *sub)
{
    char path[512];
    DIR *dir;
    struct dirent *entry;
    int count = 0;

    snprintf(path, sizeof(path), "%s/data/%s", temp_dir, sub);
    if ((dir = opendir(path)) == NULL)
        return 0;
    while ((entry = readdir(dir)) != NULL)
        count += entry->d_name[0] != '.';
    closedir(dir);
    return count;
}

static void
test_import_one(void)
{
    char line[1024], from[512], *out = NULL;

    snprintf(from, sizeof(from), "%s/cyrus/alice_Ab3xYz", temp_dir);
    snprintf(line, sizeof(line),
             "--json import --strict --data-dir %s/data --user alice %s",
             temp_dir, from);
    CHECK_INT(cairnctl(line, &out), CAIRN_EXIT_OK);
    CHECK(out && strstr(out, "\"outcome\":\"imported\"") != NULL);
    CHECK(out && strstr(out, "\"compared\":true,\"differences\":0") != NULL);
    /* backupd's two empty chunks (unchanged passes) are chunk rows */
    CHECK(out &&
          strstr(out, "\"chunks\":5,\"chunks_without_lines\":2,") != NULL);
    CHECK(out && strstr(out, "\"mailbox_message\":{\"rows\":8,") != NULL);
    free(out);
    CHECK_INT(count_files("a"), 2); /* data file + rebuilt index */
    CHECK_INT(cairnctl(line, &out), CAIRN_EXIT_PROBLEM);
    CHECK(out && strstr(out, "already has a backup") != NULL);
    free(out);
    /* the admin's original is untouched */
    snprintf(line, sizeof(line), "cmp -s %s %s/alice", from, TESTDATA);
    CHECK_INT(system(line), 0);

    snprintf(line, sizeof(line),
             "restore --dry-run --data-dir %s/data --user alice", temp_dir);
    CHECK_INT(cairnctl(line, &out), CAIRN_EXIT_OK);
    CHECK(out && strstr(out, "mailbox user.alice.Work uniqueid") != NULL);
    free(out);
    /* a node holding alice's lock: restore waits --timeout, then exit 1 */
    char path[512];
    struct flock lock = {0};
    DIR *dir;
    struct dirent *entry;
    int fd = -1;

    snprintf(path, sizeof(path), "%s/data/a", temp_dir);
    if ((dir = opendir(path)) != NULL) {
        while ((entry = readdir(dir)) != NULL)
            if (strncmp(entry->d_name, "alice_", 6) == 0 &&
                strchr(entry->d_name, '.') == NULL)
                snprintf(path, sizeof(path), "%s/data/a/%s", temp_dir,
                         entry->d_name);
        closedir(dir);
    }
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    fd = open(path, O_RDWR);
    CHECK(fd >= 0 && fcntl(fd, F_OFD_SETLK, &lock) == 0);
    snprintf(line, sizeof(line),
             "restore --dry-run --timeout 1 --data-dir %s/data --user alice",
             temp_dir);
    CHECK_INT(cairnctl(line, &out), CAIRN_EXIT_PROBLEM);
    free(out);
    if (fd >= 0)
        close(fd);
    CHECK_INT(cairnctl(line, &out), CAIRN_EXIT_OK); /* released */
    free(out);
    snprintf(line, sizeof(line),
             "restore --dry-run --data-dir %s/data --user nobody", temp_dir);
    CHECK_INT(cairnctl(line, &out), CAIRN_EXIT_NOINPUT);
    free(out);
    snprintf(line, sizeof(line), "restore --data-dir %s/data --user alice",
             temp_dir);
    CHECK_INT(cairnctl(line, &out), CAIRN_EXIT_USAGE); /* no --server */
    free(out);
    /* nothing listens on port 1 of the loopback */
    setenv("CAIRN_RESTORE_PASSWORD", "pw", 1);
    snprintf(line, sizeof(line),
             "restore --data-dir %s/data --user alice --server 127.0.0.1:1"
             " --authname repl --timeout 5",
             temp_dir);
    CHECK_INT(cairnctl(line, &out), CAIRN_EXIT_UNAVAILABLE);
    free(out);
    unsetenv("CAIRN_RESTORE_PASSWORD");
    CHECK_INT(cairnctl(line, &out), CAIRN_EXIT_USAGE); /* no password */
    free(out);
}

static void
test_import_damaged(void)
{
    char line[1024], path[512], *out = NULL;
    unsigned char byte;
    FILE *file;

    /* one flipped byte in the middle of bob's second chunk */
    snprintf(path, sizeof(path), "%s/cyrus/bob_Qw9Zz1", temp_dir);
    file = fopen(path, "r+b");
    CHECK(file != NULL);
    if (file == NULL)
        return;
    fseek(file, 2200, SEEK_SET);
    CHECK(fread(&byte, 1, 1, file) == 1);
    byte ^= 0x55;
    fseek(file, 2200, SEEK_SET);
    CHECK(fwrite(&byte, 1, 1, file) == 1);
    fclose(file);
    snprintf(line, sizeof(line), "import --data-dir %s/data --user bob %s",
             temp_dir, path);
    CHECK(cairnctl(line, &out) != CAIRN_EXIT_OK);
    /* the refusal names the user, the member's offset and the rule */
    CHECK(out && strstr(out, "import bob: verify failed") != NULL);
    CHECK(out && strstr(out, "refused: gzip member at offset 1755 does not"
                             " inflate") != NULL);
    CHECK(out && strstr(out, "rule: every member before the last") != NULL);
    free(out);
    CHECK_INT(count_files("b"), 0); /* our copy was removed */
    snprintf(line, sizeof(line),
             "restore --dry-run --data-dir %s/data --user bob", temp_dir);
    CHECK_INT(cairnctl(line, &out), CAIRN_EXIT_NOINPUT); /* not registered */
    free(out);
    /* put bob back for --all below */
    snprintf(line, sizeof(line), "%s/bob", TESTDATA);
    copy_file(line, path);
}

/* Appends len bytes to the file at path, then cuts cut bytes off. */
static void
reshape(const char *path, const char *append, size_t len, long cut)
{
    FILE *file = fopen(path, "ab");
    struct stat st;

    CHECK(file != NULL);
    if (file == NULL)
        return;
    if (append)
        CHECK(fwrite(append, 1, len, file) == len);
    fclose(file);
    if (cut > 0 && stat(path, &st) == 0)
        CHECK(truncate(path, st.st_size - cut) == 0);
}

/*
 * A torn last member (a backupd crash) is cut from the copy and said so;
 * a chunk of Cyrus's index the file no longer holds refuses the import,
 * naming the chunk, its offset and the rule.
 */
static void
test_import_tail(void)
{
    char line[1024], path[512], *out = NULL;

    snprintf(path, sizeof(path), "%s/cyrus/alice_Torn01", temp_dir);
    snprintf(line, sizeof(line), "%s/alice", TESTDATA);
    copy_file(line, path);
    snprintf(line, sizeof(line), "%s/alice.index", TESTDATA);
    snprintf(path, sizeof(path), "%s/cyrus/alice_Torn01.index", temp_dir);
    copy_file(line, path);
    snprintf(path, sizeof(path), "%s/cyrus/alice_Torn01", temp_dir);
    /* a gzip header and a few deflate bytes: a member cut short */
    reshape(path, "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03RVH", 13, 0);
    snprintf(line, sizeof(line),
             "import --strict --data-dir %s/torn --user alice %s", temp_dir,
             path);
    CHECK_INT(cairnctl(line, &out), CAIRN_EXIT_OK);
    CHECK(out && strstr(out, "import alice: imported") != NULL);
    CHECK(out && strstr(out, "dropped: a torn last member (13 bytes at offset"
                             " 6583") != NULL);
    CHECK(out && strstr(out, "kept: 2 chunks with no indexed line") != NULL);
    free(out);

    /* the last (empty) chunk cut off the file, Cyrus's index kept */
    reshape(path, NULL, 0, 13 + 55);
    snprintf(line, sizeof(line), "import --data-dir %s/cut --user alice %s",
             temp_dir, path);
    CHECK_INT(cairnctl(line, &out), CAIRN_EXIT_PROBLEM);
    CHECK(out &&
          strstr(out, "import alice: chunks of Cyrus's index missing") != NULL);
    CHECK(out && strstr(out, "refused: chunk 5 of Cyrus's index (offset 6528,"
                             " 29 bytes) is not in the rebuilt index; rule:"
                             " nothing backupd indexed may be lost") != NULL);
    if (out && strstr(out, "refused: chunk 5") == NULL)
        fprintf(stderr, "%s", out);
    free(out);
}

static void
test_import_locked(void)
{
    struct flock lock = {0};
    char line[1024], path[512], *out = NULL;
    int fd;

    snprintf(path, sizeof(path), "%s/cyrus/bob_Qw9Zz1", temp_dir);
    lock.l_type = F_WRLCK; /* what backupd holds while a backup is open */
    lock.l_whence = SEEK_SET;
    fd = open(path, O_RDWR);
    CHECK(fd >= 0 && fcntl(fd, F_OFD_SETLK, &lock) == 0);
    snprintf(line, sizeof(line), "import --data-dir %s/data --user bob %s",
             temp_dir, path);
    CHECK_INT(cairnctl(line, &out), CAIRN_EXIT_PROBLEM);
    CHECK(out && strstr(out, "locked") != NULL);
    free(out);
    CHECK_INT(count_files("b"), 0);
    if (fd >= 0)
        close(fd);
}

static void
test_import_all(void)
{
    char line[1024], *out = NULL;

    snprintf(line, sizeof(line), "--json import --data-dir %s/data --all %s",
             temp_dir, temp_dir);
    /* alice is already there (1), bob is new */
    CHECK_INT(cairnctl(line, &out), CAIRN_EXIT_PROBLEM);
    CHECK(out &&
          strstr(out, "{\"user\":\"bob\",\"outcome\":\"imported\"") != NULL);
    CHECK(out && strstr(out, "{\"user\":\"alice\",\"outcome\":\"user "
                             "already") != NULL);
    free(out);
    CHECK_INT(count_files("b"), 2);
    snprintf(line, sizeof(line), "import --data-dir %s/data --all %s/data/a",
             temp_dir, temp_dir); /* cairn's own names count too */
    CHECK_INT(cairnctl(line, &out), CAIRN_EXIT_PROBLEM);
    free(out);
    snprintf(line, sizeof(line), "import --data-dir %s/data --all %s/none",
             temp_dir, temp_dir);
    CHECK_INT(cairnctl(line, &out), CAIRN_EXIT_NOINPUT);
    free(out);
}

int
main(void)
{
    char path[512], from[512];

    if (mkdtemp(temp_dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/cyrus", temp_dir);
    CHECK(mkdir(path, 0700) == 0);
    static const char *const files[][2] = {
        {"alice", "alice_Ab3xYz"},
        {"alice.index", "alice_Ab3xYz.index"},
        {"bob", "bob_Qw9Zz1"},
        {"bob.index", "bob_Qw9Zz1.index"},
    };
    for (size_t i = 0; i < 4; i++) {
        snprintf(from, sizeof(from), "%s/%s", TESTDATA, files[i][0]);
        snprintf(path, sizeof(path), "%s/cyrus/%s", temp_dir, files[i][1]);
        copy_file(from, path);
    }
    test_import_one();
    test_import_damaged();
    test_import_tail();
    test_import_locked();
    test_import_all();
    snprintf(path, sizeof(path), "rm -rf %s", temp_dir);
    if (system(path) != 0)
        fprintf(stderr, "could not remove %s\n", temp_dir);
    return check_exit("test_restore_import");
}
