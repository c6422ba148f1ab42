/*
 * test_import_backupd.c - `cairnctl import --from-backupd` against three
 * real cairn-node processes (no Cyrus needed: the source is a backups
 * partition directory). The partition holds backupd's files from the repo
 * (alice, bob: with the empty chunks of unchanged passes) under backupd's
 * names, and dave, a copy of bob with a byte flipped in its second chunk.
 * The run imports alice and bob onto their ring replicas and refuses
 * dave naming the member's offset and the rule (exit 1); the rerun
 * resumes from the journal; a run without the journal finds alice and bob
 * present and equal; a node holding a different alice fails her unless
 * --replace. Bad command lines: usage errors (64), a missing source (66),
 * --help answers.
 *
 * usage: test_import_backupd CAIRN_NODE_BINARY   (run from ops/tests)
 */
#include "check.h"
#include "node.h"
#include "node_process_util.h"
#include "ops.h"
#include "placement.h"

#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TESTDATA "../../node/tests/data/backupd"
#define NODES 3

static const char *node_binary;
static char temp_dir[] = "/tmp/cairn-test-import-backupd-XXXXXX";
static char config_path[512];
static char endpoints[NODES][256];
static pid_t pids[NODES];
static struct cairn_ring *ring;
static char config_extra[700]; /* the [destination main] ring_file line */

static int
cairnctl(const char *line, char **out, char **err)
{
    return run_cairnctl(config_path, line, out, err);
}

static void
copy(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    char buf[65536];
    size_t got;

    CHECK(in != NULL && out != NULL);
    while (in && out && (got = fread(buf, 1, sizeof(buf), in)) > 0)
        CHECK(fwrite(buf, 1, got, out) == got);
    if (in)
        fclose(in);
    if (out)
        CHECK(fclose(out) == 0);
}

/* The partition: <dir>/<hash>/<user>_XXXXXX and .index, as backupd. */
static void
make_partition(void)
{
    static const char *const users[][3] = {
        {"a", "alice", "alice_Ab3xYz"},
        {"b", "bob", "bob_Qw9Zz1"},
        {"d", "bob", "dave_Zz0Yy1"},
    };
    char from[512], to[512];

    for (size_t i = 0; i < 3; i++) {
        snprintf(to, sizeof(to), "%s/partition/%s", temp_dir, users[i][0]);
        CHECK(mkdir(to, 0700) == 0);
        snprintf(from, sizeof(from), "%s/%s", TESTDATA, users[i][1]);
        snprintf(to, sizeof(to), "%s/partition/%s/%s", temp_dir, users[i][0],
                 users[i][2]);
        copy(from, to);
        snprintf(from, sizeof(from), "%s/%s.index", TESTDATA, users[i][1]);
        snprintf(to, sizeof(to), "%s/partition/%s/%s.index", temp_dir,
                 users[i][0], users[i][2]);
        copy(from, to);
    }
    /* dave: one byte flipped inside bob's second chunk (offset 1755) */
    snprintf(to, sizeof(to), "%s/partition/d/dave_Zz0Yy1", temp_dir);
    {
        FILE *file = fopen(to, "r+b");
        int byte;

        CHECK(file != NULL);
        if (file == NULL)
            return;
        fseek(file, 2200, SEEK_SET);
        byte = fgetc(file);
        fseek(file, 2200, SEEK_SET);
        fputc(byte ^ 0x55, file);
        fclose(file);
    }
}

/* Whether node i's catalog lists user. */
static bool
node_holds(int i, const char *user)
{
    struct cairn_catalog *catalog = NULL;
    char path[512], *data = NULL;
    bool held;

    snprintf(path, sizeof(path), "%s/n%d/catalog.db", temp_dir, i + 1);
    if (cairn_catalog_open(path, &catalog) < 0)
        return false;
    held = cairn_catalog_lookup(catalog, user, &data) == 0;
    free(data);
    cairn_catalog_free(catalog);
    return held;
}

/* Each user is on exactly the nodes the ring gives it. */
static void
check_placement(const char *user)
{
    uint16_t replicas[CAIRN_RING_MAX_REPLICAS];
    bool want[NODES] = {false};

    cairn_ring_lookup(ring, user, strlen(user), replicas);
    for (unsigned r = 0; r < cairn_ring_replicas(ring); r++) {
        struct cairn_ring_node_info info;

        if (cairn_ring_node_info(ring, replicas[r], &info) == 0)
            want[info.name[4] - '1'] = true;
    }
    for (int i = 0; i < NODES; i++) {
        if (node_holds(i, user) != want[i])
            fprintf(stderr, "%s on node%d: %d, ring says %d\n", user, i + 1,
                    node_holds(i, user), want[i]);
        CHECK(node_holds(i, user) == want[i]);
    }
}

static void
test_command_line(void)
{
    char line[1024], *out = NULL, *err = NULL;

    CHECK_INT(cairnctl("import --help", &out, &err), CAIRN_EXIT_OK);
    CHECK(out && strstr(out, "--from-backupd") && strstr(out, "--replace") &&
          strstr(out, "--jobs"));
    free(out);
    free(err);
    CHECK_INT(cairnctl("import --from-backupd /x", &out, &err),
              CAIRN_EXIT_USAGE);
    CHECK(err && strstr(err, "--from-backupd takes --destination"));
    free(out);
    free(err);
    snprintf(line, sizeof(line),
             "import --from-backupd /x --destination main --jobs 0");
    CHECK_INT(cairnctl(line, &out, &err), CAIRN_EXIT_USAGE);
    CHECK(err && strstr(err, "--jobs takes 1 to 64, not '0'"));
    free(out);
    free(err);
    CHECK_INT(
        cairnctl("import --data-dir /x --user a /y --replace", &out, &err),
        CAIRN_EXIT_USAGE);
    free(out);
    free(err);
    snprintf(line, sizeof(line),
             "import --from-backupd %s/none --destination main", temp_dir);
    CHECK_INT(cairnctl(line, &out, &err), CAIRN_EXIT_NOINPUT);
    free(out);
    free(err);
    snprintf(line, sizeof(line),
             "import --from-backupd %s/partition --destination other",
             temp_dir);
    CHECK_INT(cairnctl(line, &out, &err), CAIRN_EXIT_PROBLEM);
    CHECK(err && strstr(err, "no destination other in the config"));
    free(out);
    free(err);
}

static void
test_migration(void)
{
    char line[1024], *out = NULL, *err = NULL;

    snprintf(line, sizeof(line),
             "import --from-backupd %s/partition --destination main"
             " --work-dir %s/journal-dir --jobs 2",
             temp_dir, temp_dir);
    CHECK_INT(cairnctl(line, &out, &err), CAIRN_EXIT_PROBLEM);
    CHECK(out && strstr(out, "imported alice: verified on"));
    CHECK(out && strstr(out, "imported bob: verified on"));
    CHECK(out && strstr(out, "5 chunks (2 without lines)"));
    CHECK(out && strstr(out, "failed dave: ") &&
          strstr(out, "verify failed: gzip member at offset 1755 does not"
                      " inflate") &&
          strstr(out, "rule: every member before the last must be whole"));
    CHECK(out && strstr(out, "import: 3 users: 2 imported, 0 skipped (0 by"
                             " the journal), 1 failed"));
    /* err is a file, not a terminal: no progress line (progress.h) */
    CHECK(err == NULL || !strstr(err, "import: 3/3 users"));
    if (out && !strstr(out, "failed dave"))
        fprintf(stderr, "%s%s", out, err ? err : "");
    free(out);
    free(err);
    check_placement("alice");
    check_placement("bob");
    CHECK(!node_holds(0, "dave") && !node_holds(1, "dave") &&
          !node_holds(2, "dave"));

    /* resumed: the journal skips alice and bob, dave fails again; a torn
     * last line (a crash while writing it) is cut off */
    {
        char journal[600];
        FILE *file;

        snprintf(journal, sizeof(journal), "%s/journal-dir/import.journal",
                 temp_dir);
        file = fopen(journal, "a");
        CHECK(file != NULL);
        if (file) {
            fputs("done da", file);
            fclose(file);
        }
    }
    CHECK_INT(cairnctl(line, &out, &err), CAIRN_EXIT_PROBLEM);
    CHECK(out && strstr(out, "skipped alice: done by an earlier run"));
    CHECK(out && strstr(out, "2 skipped (2 by the journal), 1 failed"));
    free(out);
    free(err);
    /* the journal belongs to its destination */
    snprintf(line, sizeof(line), "%s/journal-dir/import.journal", temp_dir);
    {
        char *text = NULL;
        size_t len = 0;
        FILE *file = fopen(line, "r");

        if (file) {
            text = calloc(1, 4096);
            len = text ? fread(text, 1, 4095, file) : 0;
            fclose(file);
        }
        CHECK(text && strncmp(text, "cairn-import 1 main\ndone ", 25) == 0 &&
              strstr(text, "done da") == NULL && len > 0 &&
              text[len - 1] == '\n');
        free(text);
    }
    {
        char extra[1600];

        snprintf(extra, sizeof(extra),
                 "%s[destination second]\nnodes = node1, node2, node3\n"
                 "replicas = 2\n%s",
                 config_extra, config_extra);
        write_cluster_config(config_path, temp_dir, endpoints, NODES, extra);
    }
    snprintf(line, sizeof(line),
             "import --from-backupd %s/partition --destination second"
             " --work-dir %s/journal-dir",
             temp_dir, temp_dir);
    CHECK_INT(cairnctl(line, &out, &err), CAIRN_EXIT_PROBLEM);
    free(out);
    free(err);
    write_cluster_config(config_path, temp_dir, endpoints, NODES, config_extra);

    /* without the journal: present and equal on every replica */
    snprintf(line, sizeof(line),
             "--json import --from-backupd %s/partition/a --destination main"
             " --work-dir %s/work2 --quiet",
             temp_dir, temp_dir);
    CHECK_INT(cairnctl(line, &out, &err), CAIRN_EXIT_OK);
    CHECK(out && strstr(out, "{\"user\":\"alice\",\"outcome\":\"skipped\","
                             "\"detail\":\"already present and equal"));
    CHECK(out && strstr(out, "\"imported\":0,\"skipped\":1,\"resumed\":0"));
    CHECK(err && strstr(err, "import: ") == NULL); /* --quiet */
    free(out);
    free(err);
}

/* A node holding a different alice: refused, then replaced. */
static void
test_replace(void)
{
    char line[1024], *out = NULL, *err = NULL;

    snprintf(line, sizeof(line), "%s/partition/a/alice_Ab3xYz", temp_dir);
    copy(TESTDATA "/bob", line); /* another file for alice */
    snprintf(line, sizeof(line), "%s/partition/a/alice_Ab3xYz.index", temp_dir);
    copy(TESTDATA "/bob.index", line);
    snprintf(line, sizeof(line),
             "import --from-backupd %s/partition/a --destination main"
             " --work-dir %s/work3",
             temp_dir, temp_dir);
    CHECK_INT(cairnctl(line, &out, &err), CAIRN_EXIT_PROBLEM);
    CHECK(out && strstr(out, "failed alice: node node") &&
          strstr(out, "holds a different backup of the user") &&
          strstr(out, "--replace to overwrite it"));
    free(out);
    free(err);
    strcat(line, " --replace");
    CHECK_INT(cairnctl(line, &out, &err), CAIRN_EXIT_OK);
    CHECK(out && strstr(out, "imported alice: verified on"));
    free(out);
    free(err);
    check_placement("alice");
}

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

int
main(int argc, char **argv)
{
    static const struct cairn_ring_node_spec specs[NODES] = {
        {"node1", 100, "node1"},
        {"node2", 100, "node2"},
        {"node3", 100, "node3"}};
    char path[600];

    if (argc != 2) {
        fprintf(stderr, "usage: test_import_backupd CAIRN_NODE_BINARY\n");
        return 64;
    }
    node_binary = argv[1];
    if (mkdtemp(temp_dir) == NULL)
        return 1;
    snprintf(config_path, sizeof(config_path), "%s/cluster.conf", temp_dir);
    snprintf(path, sizeof(path), "%s/main.ring", temp_dir);
    snprintf(config_extra, sizeof(config_extra), "ring_file = %s\n", path);
    CHECK_INT(cairn_ring_new("main", 2, CAIRN_RING_MIN_PARTITION_POWER, specs,
                             NODES, &ring),
              0);
    CHECK_INT(cairn_ring_save(ring, path), 0);
    snprintf(path, sizeof(path), "%s/partition", temp_dir);
    CHECK(mkdir(path, 0700) == 0);
    make_partition();
    write_cluster_config(config_path, temp_dir, endpoints, NODES, config_extra);
    for (int i = 0; i < NODES; i++)
        CHECK_INT(node_process_start(node_binary, config_path, temp_dir, i,
                                     &pids[i], endpoints[i],
                                     sizeof(endpoints[i])),
                  0);
    write_cluster_config(config_path, temp_dir, endpoints, NODES, config_extra);
    test_command_line();
    test_migration();
    test_replace();
    for (int i = 0; i < NODES; i++)
        CHECK_INT(node_process_stop(&pids[i]), 0);
    cairn_ring_free(ring);
    if (check_failures == 0)
        nftw(temp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    else
        fprintf(stderr, "kept %s for inspection\n", temp_dir);
    return check_exit("test_import_backupd");
}
