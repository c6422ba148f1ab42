/*
 * test_cluster_cmds.c - cairnctl status, verify, compact and user against
 * three real cairn-node processes on 127.0.0.1 (ports chosen by the nodes,
 * data in a temp dir). The users are Cyrus backupd files from the repo,
 * imported with `cairnctl import` before the nodes start: alice where a
 * ring puts her, bob on node1 and node3, and "carol" made of alice's file
 * on one node and bob's on another, so that her replicas disagree. Then a
 * corrupted replica must fail verify (exit 1, naming user and node) and a
 * stopped node must show as down within the timeout (exit 69), and 34
 * more users make verify work in batches with progress on stderr.
 *
 * usage: test_cluster_cmds CAIRN_NODE_BINARY   (run from ops/tests)
 */
#include "check.h"
#include "node.h"
#include "node_process_util.h"
#include "ops.h"
#include "placement.h"

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TESTDATA "../../node/tests/data/backupd"
#define NODES 3

static const char *node_binary;
static char temp_dir[] = "/tmp/cairn-test-cluster-XXXXXX";
static char config_path[512];
static char ring_path[512];
static char endpoints[NODES][256];
static pid_t pids[NODES];

/* The config cairnctl and the nodes read, with the endpoints known now. */
static void
write_config(void)
{
    write_cluster_config(config_path, temp_dir, endpoints, NODES, "");
}

/*
 * Runs cairnctl -c config with the words of line; *out owned (free()).
 * stderr goes to *err_out when not NULL (owned), else to our stderr.
 */
static int
cairnctl_err(const char *line, char **out, char **err_out)
{
    return run_cairnctl(config_path, line, out, err_out);
}

static int
cairnctl(const char *line, char **out)
{
    return cairnctl_err(line, out, NULL);
}

static void
import_user(int node, const char *user, const char *file)
{
    char line[1024], *out = NULL;

    snprintf(line, sizeof(line), "import --data-dir %s/n%d --user %s %s/%s",
             temp_dir, node + 1, user, TESTDATA, file);
    CHECK_INT(cairnctl(line, &out), 0);
    free(out);
}

/* Starts node i on a port of its choosing; waits until it has bound. */
static void
start_node(int i)
{
    CHECK_INT(node_process_start(node_binary, config_path, temp_dir, i,
                                 &pids[i], endpoints[i], sizeof(endpoints[i])),
              0);
    write_config();
}

/* SIGTERM to a node this test started, and reaps it. */
static void
stop_node(int i)
{
    node_process_stop(&pids[i]);
}

static int
count(const char *text, const char *needle)
{
    int found = 0;

    for (const char *at = text; (at = strstr(at, needle)) != NULL; at++)
        found++;
    return found;
}

/* The line of text that mentions word first, copied into line. */
static void
line_of(const char *text, const char *word, char *line, size_t size)
{
    const char *at = strstr(text, word), *start = at, *end;

    line[0] = '\0';
    if (at == NULL)
        return;
    while (start > text && start[-1] != '\n')
        start--;
    end = strchr(at, '\n');
    snprintf(line, size, "%.*s", (int)(end ? end - start : (long)strlen(start)),
             start);
}

/* Whether every "key": in text is followed by a number other than 0. */
static bool
all_positive(const char *text, const char *key)
{
    int seen = 0;

    for (const char *at = text; (at = strstr(at, key)) != NULL; at++) {
        const char *value = at + strlen(key);

        seen++;
        if (*value < '1' || *value > '9')
            return false;
    }
    return seen > 0;
}

static void
test_status(void)
{
    char *out = NULL;

    CHECK_INT(cairnctl("status", &out), 0);
    CHECK_INT(count(out, " up\n"), 3);
    CHECK(strstr(out, "total: 3 nodes, 3 up, 0 down; 6 user replicas") != NULL);
    free(out);
    CHECK_INT(cairnctl("status --json", &out), 0);
    CHECK_INT(count(out, "\"up\":true"), 3);
    CHECK(strstr(out, "\"total\":{\"nodes\":3,\"up\":3,\"down\":0,"
                      "\"users\":6,") != NULL);
    CHECK(all_positive(out, "\"bytes\":"));
    CHECK(all_positive(out, "\"disk_free\":"));
    free(out);
    CHECK_INT(cairnctl("status --json --users alice", &out), 0);
    CHECK_INT(count(out, "{\"user\":\"alice\""), 2);
    CHECK_INT(count(out, "{\"user\":\"bob\""), 0);
    CHECK(all_positive(out, "\"bytes_on_disk\":"));
    CHECK(all_positive(out, "\"raw_bytes\":"));
    CHECK(all_positive(out, "\"last_backup_time\":"));
    free(out);
    CHECK_INT(cairnctl("status -u", &out), 0);
    CHECK(strstr(out, "LAST BACKUP (UTC)") != NULL);
    CHECK_INT(count(out, "\nbob "), 2);
    free(out);
    CHECK_INT(cairnctl("status -n node9", &out), 64);
    free(out);
}

static void
test_user(const char *alice_nodes)
{
    char *out = NULL, line[1024], expect[256];

    CHECK_INT(cairnctl("user list --json", &out), 0);
    CHECK(strstr(out, "\"count\":3}") != NULL);
    snprintf(expect, sizeof(expect), "{\"user\":\"alice\",\"nodes\":\"%s\"",
             alice_nodes);
    CHECK(strstr(out, expect) != NULL);
    CHECK(strstr(out, "{\"user\":\"bob\",\"nodes\":\"node1,node3\"") != NULL);
    free(out);
    snprintf(line, sizeof(line), "--json user show -r %s alice", ring_path);
    CHECK_INT(cairnctl(line, &out), 0);
    CHECK_INT(count(out, "\"state\":\"holds\""), 2);
    CHECK_INT(count(out, "\"state\":\"absent\""), 1);
    CHECK(strstr(out, "\"destination\":\"main\",\"epoch\":1") != NULL);
    CHECK(all_positive(out, "{\"name\":\"user.alice\",\"messages\":"));
    CHECK(all_positive(out, "\"state\":\"holds\",\"bytes_on_disk\":"));
    free(out);
    CHECK_INT(cairnctl("user show nobody", &out), 1);
    free(out);
    snprintf(line, sizeof(line), "user dump -d %s/n1 bob", temp_dir);
    CHECK_INT(cairnctl(line, &out), 0);
    CHECK(count(out, "# cyrus backup: chunk start\n") >= 1);
    CHECK(strstr(out, " APPLY MAILBOX %(UNIQUEID ") != NULL);
    CHECK(strstr(out, "MBOXNAME user.bob ") != NULL);
    CHECK(strstr(out, "Return-Path") == NULL); /* bodies left out */
    free(out);
    snprintf(line, sizeof(line), "user dump -d %s/n1 nobody", temp_dir);
    CHECK_INT(cairnctl(line, &out), 1);
    free(out);
}

static void
test_verify_and_compact(bool bob_where_ring_says)
{
    char *out = NULL, line[1024];

    CHECK_INT(cairnctl("verify alice bob", &out), 0);
    line_of(out, "alice", line, sizeof(line));
    CHECK(strstr(line, " ok ") != NULL);
    CHECK_INT(count(line, ", "), 1); /* two replicas */
    CHECK(strstr(out, "2 ok, 0 failed") != NULL);
    free(out);
    /* Every user: carol's replicas hold different data. */
    CHECK_INT(cairnctl("verify --full", &out), 1);
    line_of(out, "carol", line, sizeof(line));
    CHECK(strstr(line, "DIFFER") != NULL);
    CHECK(strstr(out, "3 users: 2 ok, 0 failed, 1 differ") != NULL);
    free(out);
    CHECK_INT(cairnctl("verify --json carol", &out), 1);
    CHECK(strstr(out, "\"verdict\":\"DIFFER\"") != NULL);
    free(out);
    snprintf(line, sizeof(line), "verify --json -r %s alice", ring_path);
    CHECK_INT(cairnctl(line, &out), 0);
    CHECK_INT(count(out, "\"ok\":true,\"code\":0,\"expected\":true"), 2);
    CHECK(strstr(out, "\"verdict\":\"ok\"") != NULL);
    free(out);
    snprintf(line, sizeof(line), "verify -r %s bob", ring_path);
    CHECK_INT(cairnctl(line, &out), bob_where_ring_says ? 0 : 1);
    if (!bob_where_ring_says)
        CHECK(strstr(out, "missing") != NULL);
    free(out);
    CHECK_INT(cairnctl("verify ../etc", &out), 64);
    free(out);
    CHECK_INT(cairnctl("compact --json", &out), 0);
    CHECK_INT(count(out, "\"ok\":true"), 6);
    CHECK(all_positive(out, "\"bytes_before\":"));
    CHECK(all_positive(out, "\"bytes_after\":"));
    free(out);
    CHECK_INT(cairnctl("verify", &out), 1); /* still only carol */
    CHECK(strstr(out, "2 ok, 0 failed, 1 differ") != NULL);
    free(out);
}

/* Flips a byte inside the first chunk of user's data file on node i. */
static void
corrupt(int i, const char *user)
{
    char catalog_path[600];
    struct cairn_catalog *catalog = NULL;
    char *data_path = NULL;
    unsigned char byte;
    int fd;

    snprintf(catalog_path, sizeof(catalog_path), "%s/n%d/catalog.db", temp_dir,
             i + 1);
    CHECK_INT(cairn_catalog_open(catalog_path, &catalog), 0);
    CHECK_INT(cairn_catalog_lookup(catalog, user, &data_path), 0);
    cairn_catalog_free(catalog);
    if (data_path == NULL)
        return;
    fd = open(data_path, O_RDWR);
    CHECK(fd >= 0);
    CHECK(pread(fd, &byte, 1, 40) == 1);
    byte ^= 0x5a;
    CHECK(pwrite(fd, &byte, 1, 40) == 1);
    close(fd);
    free(data_path);
}

static void
test_corrupt_replica(int node)
{
    char *out = NULL, line[1024], name[16];

    snprintf(name, sizeof(name), "node%d", node + 1);
    stop_node(node);
    corrupt(node, "alice");
    start_node(node);
    CHECK_INT(cairnctl("verify alice", &out), 1);
    line_of(out, "alice", line, sizeof(line));
    CHECK(strstr(line, "FAILED") != NULL);
    CHECK(strstr(line, name) != NULL);
    free(out);
}

static void
test_node_down(void)
{
    char *out = NULL, line[1024];
    uint64_t started;

    stop_node(2);
    started = now_ms();
    CHECK_INT(cairnctl("status -t 500ms", &out), 69);
    CHECK(now_ms() - started < 3000);
    line_of(out, "node3", line, sizeof(line));
    CHECK(strstr(line, "down: ") != NULL);
    CHECK_INT(count(out, " up\n"), 2);
    free(out);
    CHECK_INT(cairnctl("--json status -t 500ms", &out), 69);
    CHECK_INT(count(out, "\"up\":false"), 1);
    free(out);
    started = now_ms();
    CHECK_INT(cairnctl("verify -t 1s bob", &out), 69);
    CHECK(now_ms() - started < 4000);
    line_of(out, "bob", line, sizeof(line));
    CHECK(strstr(line, "UNCHECKED") != NULL);
    free(out);
    /* The default 10 minutes per batch: the dead node still costs only
       the 5 s ping that comes first. */
    started = now_ms();
    CHECK_INT(cairnctl("verify bob", &out), 69);
    CHECK(now_ms() - started < 9000);
    free(out);
}

/*
 * 34 more users on node1: verify goes in batches of 32 users per request
 * and answers for every user; its progress line is for a terminal only.
 */
static void
test_many_users(void)
{
    char *out = NULL, *err = NULL, user[32], line[1024];
    int total;

    stop_node(0);
    for (int i = 0; i < 34; i++) {
        snprintf(user, sizeof(user), "many%02d", i);
        import_user(0, user, "bob");
    }
    start_node(0);
    CHECK_INT(cairnctl("status --json -n node1", &out), 0);
    CHECK(sscanf(strstr(out, "\"users\":"), "\"users\":%d", &total) == 1);
    CHECK(total >= 35);
    free(out);
    /* stderr is no terminal here: no progress line (test_progress draws
     * it on a pseudo-terminal), the result alone on stdout */
    CHECK_INT(cairnctl_err("verify -n node1", &out, &err), 0);
    CHECK(strstr(err, "verify: ") == NULL);
    CHECK_INT(count(out, " ok "), total);
    line_of(out, "many33", line, sizeof(line));
    CHECK(strstr(line, " ok        node1 ") != NULL);
    free(out);
    free(err);
    CHECK_INT(cairnctl_err("verify -q -n node1", &out, &err), 0);
    CHECK_STR(err, "");
    free(out);
    free(err);
}

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Where the ring puts user: "nodeA,nodeB" in config order, and indices. */
static void
ring_nodes(const struct cairn_ring *ring, const char *user, char *names,
           size_t size, bool on[NODES])
{
    uint16_t replicas[CAIRN_RING_MAX_REPLICAS];

    cairn_ring_lookup(ring, user, strlen(user), replicas);
    memset(on, 0, NODES * sizeof(bool));
    for (unsigned r = 0; r < cairn_ring_replicas(ring); r++) {
        struct cairn_ring_node_info info;

        if (cairn_ring_node_info(ring, replicas[r], &info) == 0)
            on[info.name[4] - '1'] = true;
    }
    names[0] = '\0';
    for (int i = 0; i < NODES; i++)
        if (on[i])
            snprintf(names + strlen(names), size - strlen(names), "%snode%d",
                     names[0] ? "," : "", i + 1);
}

int
main(int argc, char **argv)
{
    static const struct cairn_ring_node_spec specs[NODES] = {
        {"node1", 100, "node1"},
        {"node2", 100, "node2"},
        {"node3", 100, "node3"}};
    struct cairn_ring *ring = NULL;
    char alice_nodes[64], bob_nodes[64];
    bool alice_on[NODES], bob_on[NODES];
    int second_alice = -1;

    if (argc != 2) {
        fprintf(stderr, "usage: test_cluster_cmds CAIRN_NODE_BINARY\n");
        return 64;
    }
    node_binary = argv[1];
    if (mkdtemp(temp_dir) == NULL)
        return 1;
    snprintf(config_path, sizeof(config_path), "%s/cluster.conf", temp_dir);
    snprintf(ring_path, sizeof(ring_path), "%s/main.ring", temp_dir);
    write_config();
    CHECK_INT(cairn_ring_new("main", 2, CAIRN_RING_MIN_PARTITION_POWER, specs,
                             NODES, &ring),
              0);
    CHECK_INT(cairn_ring_save(ring, ring_path), 0);
    ring_nodes(ring, "alice", alice_nodes, sizeof(alice_nodes), alice_on);
    ring_nodes(ring, "bob", bob_nodes, sizeof(bob_nodes), bob_on);
    for (int i = 0; i < NODES; i++) {
        if (alice_on[i]) {
            import_user(i, "alice", "alice");
            second_alice = i;
        }
    }
    import_user(0, "bob", "bob");
    import_user(2, "bob", "bob");
    import_user(1, "carol", "alice");
    import_user(2, "carol", "bob");
    for (int i = 0; i < NODES; i++)
        start_node(i);
    test_status();
    test_user(alice_nodes);
    test_verify_and_compact(strcmp(bob_nodes, "node1,node3") == 0);
    if (second_alice >= 0)
        test_corrupt_replica(second_alice);
    test_node_down();
    test_many_users();
    for (int i = 0; i < NODES; i++)
        stop_node(i);
    cairn_ring_free(ring);
    if (check_failures == 0)
        nftw(temp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    else
        fprintf(stderr, "kept %s for inspection\n", temp_dir);
    return check_exit("test_cluster_cmds");
}
