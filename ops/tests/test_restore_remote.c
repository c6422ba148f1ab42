/*
 * test_restore_remote.c - the restore source that reads a user from the
 * running cluster (restore_remote.c, node/server_restore.c) against three
 * real cairn-node processes on 127.0.0.1: it must give byte for byte what
 * the local store source gives for the same files (GET USER, every
 * mailbox, every body including one of several MiB that spans frames, the
 * sieve script), read a body over the old 64 MiB limit range by range,
 * fall back to the second replica when the first is down (also in the
 * middle of a body: it continues from the byte reached),
 * and `cairnctl restore` without --data-dir must exit 66 for an unknown
 * user and 69 when no replica answers. Alice is Cyrus backupd's own file
 * from the repo, imported onto her two replicas, plus the big body.
 * Carol holds MANY_BODIES small bodies and one over a batch in one chunk:
 * restore's order() and batched reads (BODY ORDER / BATCH) must give
 * every body right, in a few passes of the chunk (the node's log counts
 * the batches), and the time against one request per body is printed.
 *
 * usage: test_restore_remote CAIRN_NODE_BINARY [bench]   (from ops/tests)
 * bench: only the BODY throughput of a 20 MiB body and the node's memory.
 */
#include "check.h"
#include "config.h"
#include "node.h"
#include "node_process_util.h"
#include "ops.h"
#include "placement.h"
#include "restore.h"

#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TESTDATA "../../node/tests/data/backupd"
#define NODES 3
#define BIG_BODY_BYTES (3u * 1024 * 1024 + 17) /* 4 frames of 1 MiB */
#define BENCH_BODY_BYTES (20u * 1024 * 1024)
#define MID_BODY_BYTES (9u * 1024 * 1024 + 5)   /* three 4 MiB ranges */
#define HUGE_BODY_BYTES (64u * 1024 * 1024 + 1) /* over the old limit */
#define SNAPSHOT_MAX (64u * 1024 * 1024)
#define MANY_BODIES 3000
#define SINGLE_BODIES 200
#define LINE_BODIES 50 /* bodies per MESSAGE line (sync_client: 1,024) */
#define OVER_BATCH_BYTES (17u * 1024 * 1024) /* over a batch (4 MiB) */

static const char *node_binary;
static char temp_dir[] = "/tmp/cairn-test-remote-XXXXXX";
static char config_path[512];
static char endpoints[NODES][256];
static pid_t pids[NODES];

static void
write_config(void)
{
    char extra[600];

    /* restore is tested here, not CURVE (test_curve): links in clear */
    snprintf(extra, sizeof(extra),
             "ring_file = %s/main.ring\n[security]\ncurve = no\n", temp_dir);
    write_cluster_config(config_path, temp_dir, endpoints, NODES, extra);
}

/* Runs cairnctl -c config with the words of line; stderr to *err (owned). */
static int
cairnctl(const char *line, char **err_out)
{
    return run_cairnctl(config_path, line, NULL, err_out);
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

/* SIGTERM to a node this test started: a clean exit (no ASan report). */
static void
stop_node(int i)
{
    CHECK_INT(node_process_stop(&pids[i]), 0);
}

/* --- the user's data ------------------------------------------------------ */

struct body {
    char *data;
    size_t len;
    char guid[41];
};

/* seed 0: one repeated line (cheap to compress, for the limit test) */
static void
make_body(struct body *body, size_t len, unsigned seed)
{
    unsigned char digest[SHA_DIGEST_LENGTH];

    body->data = malloc(len);
    body->len = len;
    CHECK(body->data != NULL);
    if (body->data == NULL)
        return;
    /* text-like but not very compressible, as mail bodies are */
    for (size_t i = 0; i < len; i++) {
        seed = seed == 0 ? 0 : seed * 1103515245u + 12345u;
        body->data[i] = (i % 78 == 77) ? '\n' : (char)(' ' + (seed >> 16) % 90);
    }
    SHA1((const unsigned char *)body->data, len, digest);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(body->guid + 2 * i, 3, "%02x", digest[i]);
}

static int
read_body(void *ctx, const struct cairn_dlist *file,
          int (*put)(void *put_ctx, const void *data, size_t len),
          void *put_ctx)
{
    const struct body *body = ctx;

    (void)file;
    for (size_t at = 0; at < body->len; at += 65536) {
        size_t piece = body->len - at < 65536 ? body->len - at : 65536;
        int rc = put(put_ctx, body->data + at, piece);

        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Appends an APPLY MESSAGE of body to user's backup on node i (stopped). */
static void
append_body(int node, const char *user, const struct body *body)
{
    char catalog_path[700], root[600];
    struct cairn_catalog *catalog = NULL;
    struct cairn_store *store = NULL;
    struct cairn_dlist *record = cairn_dlist_new_list("MESSAGE");
    struct cairn_store_bodies bodies = {read_body, (void *)body};

    snprintf(root, sizeof(root), "%s/n%d", temp_dir, node + 1);
    snprintf(catalog_path, sizeof(catalog_path), "%s/catalog.db", root);
    CHECK(record != NULL);
    CHECK_INT(cairn_catalog_open(catalog_path, &catalog), 0);
    CHECK_INT(cairn_store_open_user(catalog, root, user, 0, &store), 0);
    CHECK_INT(cairn_dlist_add_file(record, NULL, "default", body->guid,
                                   body->len, NULL, NULL, NULL),
              0);
    CHECK_INT(cairn_store_append(store, time(NULL), record, &bodies), 0);
    CHECK_INT(cairn_store_commit(store), 0);
    cairn_store_close(store);
    cairn_catalog_free(catalog);
    cairn_dlist_free(record);
}

/* The bodies of one MESSAGE line, found by the GUID of each FILE. */
struct body_line {
    struct body bodies[LINE_BODIES];
    size_t count;
};

static int
read_line_body(void *ctx, const struct cairn_dlist *file,
               int (*put)(void *put_ctx, const void *data, size_t len),
               void *put_ctx)
{
    const struct body_line *line = ctx;
    const char *guid = NULL;

    if (!cairn_dlist_file_info(file, NULL, &guid, NULL, NULL))
        return CAIRN_EINVAL;
    for (size_t i = 0; i < line->count; i++)
        if (strcmp(line->bodies[i].guid, guid) == 0)
            return read_body((void *)&line->bodies[i], file, put, put_ctx);
    return CAIRN_ENOENT;
}

/*
 * Appends count + 1 bodies to user's backup on node i in ONE chunk, up to
 * LINE_BODIES to a MESSAGE line as sync_client sends them: small ones
 * (seeds from 1000) and, in the middle, over, alone on its line; their
 * GUIDs go to guids (count + 1 entries).
 */
static void
append_many(int node, const char *user, size_t count, const struct body *over,
            char (*guids)[41])
{
    char catalog_path[700], root[600];
    struct cairn_catalog *catalog = NULL;
    struct cairn_store *store = NULL;
    static struct body_line line;
    time_t now = time(NULL);

    snprintf(root, sizeof(root), "%s/n%d", temp_dir, node + 1);
    snprintf(catalog_path, sizeof(catalog_path), "%s/catalog.db", root);
    CHECK_INT(cairn_catalog_open(catalog_path, &catalog), 0);
    CHECK_INT(
        cairn_store_open_user(catalog, root, user, CAIRN_STORE_CREATE, &store),
        0);
    for (size_t i = 0; i <= count && store != NULL;) {
        struct cairn_dlist *record = cairn_dlist_new_list("MESSAGE");
        struct cairn_store_bodies bodies = {read_line_body, &line};
        bool alone = i == count / 2 && over != NULL;

        CHECK(record != NULL);
        line.count = 0;
        for (; i <= count && line.count < (alone ? 1 : LINE_BODIES) &&
               !(!alone && i == count / 2 && over != NULL);
             i++) {
            struct body *body = &line.bodies[line.count++];

            if (alone)
                *body = *over; /* borrowed: not freed below */
            else
                make_body(body, 600 + (i * 7919) % 5000, 1000 + (unsigned)i);
            memcpy(guids[i], body->guid, 41);
            CHECK_INT(cairn_dlist_add_file(record, NULL, "default", body->guid,
                                           body->len, NULL, NULL, NULL),
                      0);
        }
        CHECK_INT(cairn_store_append(store, now, record, &bodies), 0);
        cairn_dlist_free(record);
        for (size_t b = 0; b < line.count && !alone; b++)
            free(line.bodies[b].data);
    }
    CHECK_INT(cairn_store_commit(store), 0);
    cairn_store_close(store);
    cairn_catalog_free(catalog);
}

static void
import_user(int node, const char *user, const char *file)
{
    char line[1024];

    snprintf(line, sizeof(line), "import --data-dir %s/n%d --user %s %s/%s",
             temp_dir, node + 1, user, TESTDATA, file);
    CHECK_INT(cairnctl(line, NULL), 0);
}

/* --- what a source gives, as one text ---------------------------------- */

struct snapshot {
    struct cairn_buf text;
    char mailboxes[32][256];
    size_t mailbox_count;
    char guids[64][41];
    size_t guid_count;
};

static int
print_item(struct snapshot *snapshot, const struct cairn_dlist *item)
{
    int rc = cairn_dlist_print(item, true, &snapshot->text, NULL);

    return rc < 0 ? rc : cairn_buf_append(&snapshot->text, "\n", 1);
}

static int
keep_user_item(void *ctx, const struct cairn_dlist *item)
{
    struct snapshot *snapshot = ctx;
    const char *name = NULL;

    if (strcmp(cairn_dlist_name(item), "MAILBOX") == 0 &&
        cairn_dlist_get_atom(item, "MBOXNAME", &name) && name &&
        snapshot->mailbox_count < 32)
        snprintf(snapshot->mailboxes[snapshot->mailbox_count++], 256, "%s",
                 name);
    return print_item(snapshot, item);
}

static void
add_guid(struct snapshot *snapshot, const char *guid)
{
    for (size_t i = 0; i < snapshot->guid_count; i++)
        if (strcmp(snapshot->guids[i], guid) == 0)
            return;
    if (snapshot->guid_count < 64)
        snprintf(snapshot->guids[snapshot->guid_count++], 41, "%s", guid);
}

static void
note_guids(struct snapshot *snapshot, const struct cairn_dlist *mailbox)
{
    const struct cairn_dlist *records = NULL;
    const char *guid = NULL;

    if (!cairn_dlist_get_list(mailbox, "RECORD", &records) || records == NULL)
        return;
    for (const struct cairn_dlist *r = cairn_dlist_first(records); r != NULL;
         r = cairn_dlist_next(r))
        if (cairn_dlist_get_atom(r, "GUID", &guid) && guid)
            add_guid(snapshot, guid);
}

static int
put_text(void *ctx, const void *data, size_t len)
{
    return cairn_buf_append(ctx, data, len);
}

/* GET USER, each mailbox, each body (and extra_guid's), sieve "cairn". */
static void
take_snapshot(struct cairn_restore_source *source, const char *extra_guid,
              struct snapshot *snapshot)
{
    char *script = NULL;
    size_t script_len = 0;

    memset(snapshot, 0, sizeof(*snapshot));
    cairn_buf_init(&snapshot->text, SNAPSHOT_MAX);
    CHECK_INT(source->ops->user(source->ctx, keep_user_item, snapshot), 0);
    CHECK(snapshot->mailbox_count >= 3);
    for (size_t i = 0; i < snapshot->mailbox_count; i++) {
        struct cairn_dlist *mailbox = NULL;

        CHECK_INT(
            source->ops->mailbox(source->ctx, snapshot->mailboxes[i], &mailbox),
            0);
        if (mailbox == NULL)
            continue;
        CHECK_INT(print_item(snapshot, mailbox), 0);
        note_guids(snapshot, mailbox);
        cairn_dlist_free(mailbox);
    }
    CHECK(snapshot->guid_count >= 4);
    if (extra_guid != NULL)
        add_guid(snapshot, extra_guid);
    for (size_t i = 0; i < snapshot->guid_count; i++) {
        cairn_buf_printf(&snapshot->text, "BODY %s\n", snapshot->guids[i]);
        CHECK_INT(source->ops->message(source->ctx, snapshot->guids[i],
                                       put_text, &snapshot->text),
                  0);
    }
    CHECK_INT(
        source->ops->sieve(source->ctx, "cairn.script", &script, &script_len),
        0);
    CHECK(script_len > 10);
    cairn_buf_printf(&snapshot->text, "SIEVE %zu\n", script_len);
    cairn_buf_append(&snapshot->text, script, script_len);
    free(script);
}

static int
open_remote_user(const char *node, const char *user, uint64_t timeout_ms,
                 struct cairn_restore_source **source, char *error,
                 size_t error_size)
{
    struct cairn_restore_remote_options options = {0};
    struct cairn_config *config = NULL;
    struct cairn_config_error config_error;
    int rc;

    CHECK_INT(cairn_config_load(config_path, &config, &config_error), 0);
    options.config = config;
    options.node = node;
    options.ping_timeout_ms = 2000;
    options.timeout_ms = timeout_ms;
    rc = cairn_restore_source_open_remote(&options, user, source, error,
                                          error_size);
    cairn_config_free(config);
    return rc;
}

static int
open_remote(const char *node, struct cairn_restore_source **source, char *error,
            size_t error_size)
{
    /* short: the failover tests wait for it */
    return open_remote_user(node, "alice", 3000, source, error, error_size);
}

/* --- the tests ----------------------------------------------------------- */

/* A body counted and hashed as it arrives, never held. */
struct counted {
    uint64_t bytes;
    EVP_MD_CTX *sha;
    int kill_node; /* >= 0: stopped once 4 MiB have arrived */
};

static void
counted_init(struct counted *counted, int kill_node)
{
    counted->bytes = 0;
    counted->kill_node = kill_node;
    counted->sha = EVP_MD_CTX_new();
    CHECK(counted->sha != NULL &&
          EVP_DigestInit_ex(counted->sha, EVP_sha1(), NULL) == 1);
}

/* The hex SHA-1 of what arrived; frees the digest. */
static void
counted_hex(struct counted *counted, char hex[41])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;

    CHECK(EVP_DigestFinal_ex(counted->sha, digest, &len) == 1 && len == 20);
    for (unsigned i = 0; i < 20; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    EVP_MD_CTX_free(counted->sha);
    counted->sha = NULL;
}

static int
put_counted(void *ctx, const void *data, size_t len)
{
    struct counted *counted = ctx;

    EVP_DigestUpdate(counted->sha, data, len);
    counted->bytes += len;
    if (counted->kill_node >= 0 && counted->bytes >= 4u * 1024 * 1024) {
        stop_node(counted->kill_node);
        counted->kill_node = -1;
    }
    return 0;
}

static void
test_same_as_local(const struct snapshot *local, const char *first,
                   const char *big_guid, const char *huge_guid)
{
    struct cairn_restore_source *source = NULL;
    struct snapshot remote;
    char error[512] = "";
    char *content = NULL;
    size_t len = 0;

    CHECK_INT(open_remote(NULL, &source, error, sizeof(error)), 0);
    if (source == NULL) {
        fprintf(stderr, "open_remote: %s\n", error);
        return;
    }
    CHECK_STR(cairn_restore_source_node(source), first);
    take_snapshot(source, big_guid, &remote);
    CHECK_U64(remote.text.len, local->text.len);
    CHECK(remote.text.len == local->text.len &&
          memcmp(remote.text.data, local->text.data, local->text.len) == 0);
    /* unknown GUID and script: the node's ENOENT comes through */
    CHECK_INT(source->ops->message(source->ctx,
                                   "0123456789abcdef0123456789abcdef01234567",
                                   put_text, &remote.text),
              CAIRN_ENOENT);
    CHECK_INT(
        source->ops->message(source->ctx, "not-a-guid", put_text, &remote.text),
        CAIRN_EINVAL);
    CHECK_INT(source->ops->sieve(source->ctx, "nosuch", &content, &len),
              CAIRN_ENOENT);
    /* the node's error text comes through, naming the node */
    CHECK(source->ops->error(source->ctx) != NULL &&
          strstr(source->ops->error(source->ctx), first) != NULL &&
          strstr(source->ops->error(source->ctx), "no such") != NULL);
    /* one byte over the old 64 MiB BODY limit: read range by range */
    {
        struct counted counted;
        char hex[41];

        counted_init(&counted, -1);
        CHECK_INT(
            source->ops->message(source->ctx, huge_guid, put_counted, &counted),
            0);
        CHECK_U64(counted.bytes, HUGE_BODY_BYTES);
        counted_hex(&counted, hex);
        CHECK_STR(hex, huge_guid);
    }
    CHECK(content == NULL);
    cairn_buf_release(&remote.text);
    cairn_restore_source_free(source);
}

static void
test_fallback(const struct snapshot *local, int first, const char *second,
              const char *big_guid)
{
    struct cairn_restore_source *source = NULL;
    struct snapshot remote;
    char error[512] = "", line[256];
    char *err = NULL;

    stop_node(first);
    CHECK_INT(open_remote(NULL, &source, error, sizeof(error)), 0);
    CHECK(strstr(error, "not answering") != NULL);
    if (source != NULL) {
        CHECK_STR(cairn_restore_source_node(source), second);
        take_snapshot(source, big_guid, &remote);
        CHECK(remote.text.len == local->text.len &&
              memcmp(remote.text.data, local->text.data, local->text.len) == 0);
        cairn_buf_release(&remote.text);
        cairn_restore_source_free(source);
    }
    /* cairnctl: the plan from the cluster, and which replica served */
    CHECK_INT(cairnctl("restore --user alice --dry-run --timeout 1", &err), 0);
    CHECK(err != NULL && strstr(err, "reading alice from node") != NULL &&
          strstr(err, second) != NULL);
    free(err);
    CHECK_INT(cairnctl("restore --user nobody --dry-run --timeout 1", &err),
              66);
    free(err);
    /* a forced node that is down: no other replica is asked */
    snprintf(line, sizeof(line),
             "restore --user alice --dry-run --timeout 1 --node node%d",
             first + 1);
    CHECK_INT(cairnctl(line, &err), 69);
    free(err);
    CHECK_INT(cairnctl("restore --user alice --dry-run --node node9", &err), 1);
    CHECK(err != NULL && strstr(err, "no node 'node9'") != NULL);
    free(err);
    /* local files and a node to ask do not go together */
    CHECK_INT(cairnctl("restore --user alice --dry-run --data-dir /tmp "
                       "--node node1",
                       &err),
              64);
    free(err);
}

/* The serving node dies between two bodies: the other replica goes on. */
static void
test_failover(int first, const char *first_name, const char *second_name,
              const char *big_guid)
{
    struct cairn_restore_source *source = NULL;
    struct cairn_buf body;
    char error[512] = "";

    cairn_buf_init(&body, 8u * 1024 * 1024);
    start_node(first);
    CHECK_INT(open_remote(NULL, &source, error, sizeof(error)), 0);
    if (source == NULL)
        return;
    CHECK_STR(cairn_restore_source_node(source), first_name);
    CHECK_INT(source->ops->message(source->ctx, big_guid, put_text, &body), 0);
    CHECK_U64(body.len, BIG_BODY_BYTES);
    stop_node(first);
    cairn_buf_reset(&body);
    CHECK_INT(source->ops->message(source->ctx, big_guid, put_text, &body), 0);
    CHECK_U64(body.len, BIG_BODY_BYTES);
    CHECK_STR(cairn_restore_source_node(source), second_name);
    cairn_buf_release(&body);
    cairn_restore_source_free(source);
}

/*
 * The serving node dies in the middle of a body (after its first range
 * arrived): the other replica continues from the byte reached.
 */
static void
test_midbody_failover(int first, const char *first_name,
                      const char *second_name, const struct body *mid)
{
    struct cairn_restore_source *source = NULL;
    struct counted counted;
    char error[512] = "", hex[41];

    start_node(first);
    CHECK_INT(open_remote(NULL, &source, error, sizeof(error)), 0);
    if (source == NULL)
        return;
    CHECK_STR(cairn_restore_source_node(source), first_name);
    counted_init(&counted, first);
    CHECK_INT(
        source->ops->message(source->ctx, mid->guid, put_counted, &counted), 0);
    CHECK(counted.kill_node == -1);
    CHECK_U64(counted.bytes, mid->len);
    counted_hex(&counted, hex);
    CHECK_STR(hex, mid->guid);
    CHECK_STR(cairn_restore_source_node(source), second_name);
    cairn_restore_source_free(source);
}

static void
test_all_down(int second)
{
    char *err = NULL;

    stop_node(second);
    CHECK_INT(cairnctl("restore --user alice --dry-run --timeout 1", &err), 69);
    CHECK(err != NULL && strstr(err, "not answering") != NULL);
    free(err);
}

static long
node_memory_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    long value = -1;
    FILE *file;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if ((file = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof(line), file) != NULL)
        if (strncmp(line, field, strlen(field)) == 0)
            value = strtol(line + strlen(field) + 1, NULL, 10);
    fclose(file);
    return value;
}

static int
count_bytes(void *ctx, const void *data, size_t len)
{
    (void)data;
    *(uint64_t *)ctx += len;
    return 0;
}

/*
 * The same body read in this process, as the baseline of bench_body: the
 * store's own read (what the node runs for BODY) and the local restore
 * source's. Before the nodes start: they would hold the user's lock.
 */
static void
bench_local(int node, const char *guid)
{
    struct cairn_restore_source *local = NULL;
    struct cairn_catalog *catalog = NULL;
    struct cairn_store *store = NULL;
    char root[600], catalog_path[700];
    uint64_t start, bytes = 0;

    snprintf(root, sizeof(root), "%s/n%d", temp_dir, node + 1);
    snprintf(catalog_path, sizeof(catalog_path), "%s/catalog.db", root);
    CHECK_INT(cairn_catalog_open(catalog_path, &catalog), 0);
    CHECK_INT(cairn_store_open_user(catalog, root, "alice", 0, &store), 0);
    start = now_ms();
    CHECK_INT(cairn_store_read_message(store, guid, count_bytes, &bytes), 0);
    printf("bench local cairn_store_read_message 20 MiB: %llu ms, %.1f MB/s\n",
           (unsigned long long)(now_ms() - start),
           (double)bytes / 1e6 / ((double)(now_ms() - start + 1) / 1000.0));
    cairn_store_close(store);
    cairn_catalog_free(catalog);
    CHECK_INT(cairn_restore_source_open_store(root, "alice", &local), 0);
    if (local == NULL)
        return;
    bytes = 0;
    start = now_ms();
    CHECK_INT(local->ops->message(local->ctx, guid, count_bytes, &bytes), 0);
    printf("bench local restore source 20 MiB: %llu ms, %.1f MB/s\n",
           (unsigned long long)(now_ms() - start),
           (double)bytes / 1e6 / ((double)(now_ms() - start + 1) / 1000.0));
    cairn_restore_source_free(local);
}

/* BODY throughput of a 20 MiB body and the node's peak memory: figures. */
static void
bench_body(int node, const char *guid)
{
    struct cairn_restore_source *source = NULL;
    char name[16], error[512] = "";
    long before = node_memory_kib(pids[node], "VmHWM:");
    uint64_t start, bytes = 0;

    snprintf(name, sizeof(name), "node%d", node + 1);
    CHECK_INT(open_remote(name, &source, error, sizeof(error)), 0);
    if (source == NULL)
        return;
    for (int round = 0; round < 3; round++) {
        bytes = 0;
        start = now_ms();
        CHECK_INT(source->ops->message(source->ctx, guid, count_bytes, &bytes),
                  0);
        CHECK_U64(bytes, BENCH_BODY_BYTES);
        printf("bench BODY 20 MiB round %d: %llu ms, %.1f MB/s\n", round + 1,
               (unsigned long long)(now_ms() - start),
               (double)bytes / 1e6 / ((double)(now_ms() - start + 1) / 1000.0));
    }
    printf("bench node VmHWM before %ld KiB, after %ld KiB, VmRSS now %ld "
           "KiB\n",
           before, node_memory_kib(pids[node], "VmHWM:"),
           node_memory_kib(pids[node], "VmRSS:"));
    cairn_restore_source_free(source);
}

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Lines of node i's log that contain text. */
static size_t
count_log_lines(int node, const char *text)
{
    char path[700], line[2048];
    size_t count = 0;
    FILE *log;

    snprintf(path, sizeof(path), "%s/node%d.log", temp_dir, node + 1);
    if ((log = fopen(path, "r")) == NULL)
        return 0;
    while (fgets(line, sizeof(line), log) != NULL)
        if (strstr(line, text) != NULL)
            count++;
    fclose(log);
    return count;
}

/*
 * Reads every one of count GUIDs through the remote source of user from
 * node (first asking order() when ordered) and checks each body's SHA-1;
 * returns the milliseconds it took.
 */
static uint64_t
read_all(const char *node, const char *user, char (*guids)[41], size_t count,
         bool ordered)
{
    struct cairn_restore_source *source = NULL;
    char **list = calloc(count, sizeof(*list)), error[1024] = "";
    struct timespec begin, end;
    size_t good = 0;

    CHECK(list != NULL);
    if (list == NULL)
        return 0;
    /* a shuffled order (7 is prime to count): ORDER must undo it */
    CHECK(count % 7 != 0);
    for (size_t i = 0; i < count; i++)
        list[(i * 7) % count] = guids[i];
    clock_gettime(CLOCK_MONOTONIC, &begin);
    /* a batch of 9 MB on a loaded machine may take seconds */
    CHECK_INT(
        open_remote_user(node, user, 60000, &source, error, sizeof(error)), 0);
    if (source != NULL && ordered)
        CHECK_INT(source->ops->order(source->ctx, list, count), 0);
    for (size_t i = 0; source != NULL && i < count; i++) {
        struct counted counted;
        char hex[41];
        int rc;

        counted_init(&counted, -1);
        rc = source->ops->message(source->ctx, list[i], put_counted, &counted);
        counted_hex(&counted, hex);
        if (rc == 0 && strcmp(hex, list[i]) == 0)
            good++;
        else
            fprintf(stderr, "body %s: rc %d, got %s (%s)\n", list[i], rc, hex,
                    source->ops->error ? source->ops->error(source->ctx) : "");
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    CHECK_INT(good, count);
    cairn_restore_source_free(source);
    free(list);
    return (uint64_t)((int64_t)(end.tv_sec - begin.tv_sec) * 1000 +
                      ((int64_t)end.tv_nsec - (int64_t)begin.tv_nsec) /
                          1000000);
}

/*
 * Carol's small bodies and the one over a batch: ordered and batched, all
 * right in a few BATCH requests; then one request per body, for the time.
 */
static void
test_many_bodies(int node, const char *node_name, char (*guids)[41],
                 size_t count)
{
    size_t batches_before = count_log_lines(node, "BODY BATCH:");
    size_t batches, orders;
    uint64_t batched_ms, single_ms;

    batched_ms = read_all(node_name, "carol", guids, count, true);
    batches = count_log_lines(node, "BODY BATCH:") - batches_before;
    orders = count_log_lines(node, "BODY ORDER:");
    /* 3,001 GUIDs (9.4 MB and one of 17 MiB): one ORDER, and BATCHes of
     * at most 4 MiB (3), one saying "ranges" for the big body, read by
     * ranges in its turn */
    CHECK(orders == 1);
    CHECK(batches >= 3 && batches <= 4);
    if (!(batches >= 3 && batches <= 4))
        fprintf(stderr, "%zu BODY BATCH answers for %zu bodies\n", batches,
                count);
    /* one request per body inflates the chunk from its start each time:
     * only the first SINGLE_BODIES, or this would take minutes */
    single_ms = read_all(node_name, "carol", guids, SINGLE_BODIES, false);
    printf("# carol, %zu bodies in one chunk: %llu ms in %zu batches "
           "(%.2f ms a body); one request per body: %llu ms for the first "
           "%d (%.2f ms a body)\n",
           count, (unsigned long long)batched_ms, batches,
           (double)batched_ms / (double)count, (unsigned long long)single_ms,
           SINGLE_BODIES, (double)single_ms / SINGLE_BODIES);
}

/* alice's replicas in ring order (config indices). */
static void
ring_order(int order[2])
{
    static const struct cairn_ring_node_spec specs[NODES] = {
        {"node1", 100, "node1"},
        {"node2", 100, "node2"},
        {"node3", 100, "node3"}};
    struct cairn_ring *ring = NULL;
    uint16_t replicas[CAIRN_RING_MAX_REPLICAS];
    char ring_path[600];

    snprintf(ring_path, sizeof(ring_path), "%s/main.ring", temp_dir);
    CHECK_INT(cairn_ring_new("main", 2, CAIRN_RING_MIN_PARTITION_POWER, specs,
                             NODES, &ring),
              0);
    CHECK_INT(cairn_ring_save(ring, ring_path), 0);
    cairn_ring_lookup(ring, "alice", 5, replicas);
    for (int r = 0; r < 2; r++) {
        struct cairn_ring_node_info info;

        CHECK_INT(cairn_ring_node_info(ring, replicas[r], &info), 0);
        order[r] = info.name[4] - '1';
    }
    cairn_ring_free(ring);
}

int
main(int argc, char **argv)
{
    struct cairn_restore_source *local = NULL;
    struct snapshot expected = {0};
    struct body big = {0}, huge = {0}, mid = {0}, over = {0};
    static char many[MANY_BODIES + 1][41];
    char data_dir[600], first_name[16], second_name[16];
    int order[2] = {0, 1};
    bool bench = argc == 3 && strcmp(argv[2], "bench") == 0;

    if (argc != 2 && !bench) {
        fprintf(stderr, "usage: test_restore_remote CAIRN_NODE [bench]\n");
        return 64;
    }
    node_binary = argv[1];
    if (mkdtemp(temp_dir) == NULL)
        return 1;
    snprintf(config_path, sizeof(config_path), "%s/cluster.conf", temp_dir);
    write_config();
    ring_order(order);
    make_body(&big, bench ? BENCH_BODY_BYTES : BIG_BODY_BYTES, 7);
    for (int r = 0; r < 2; r++) {
        import_user(order[r], "alice", "alice");
        append_body(order[r], "alice", &big);
    }
    if (!bench) {
        make_body(&huge, HUGE_BODY_BYTES, 0);
        append_body(order[0], "alice", &huge);
        free(huge.data);
        make_body(&mid, MID_BODY_BYTES, 3);
        for (int r = 0; r < 2; r++)
            append_body(order[r], "alice", &mid);
        make_body(&over, OVER_BATCH_BYTES, 11);
        append_many(order[0], "carol", MANY_BODIES, &over, many);
        free(over.data);
    }
    snprintf(first_name, sizeof(first_name), "node%d", order[0] + 1);
    snprintf(second_name, sizeof(second_name), "node%d", order[1] + 1);
    if (!bench) {
        /* the local source, before any node holds alice's lock */
        snprintf(data_dir, sizeof(data_dir), "%s/n%d", temp_dir, order[1] + 1);
        CHECK_INT(cairn_restore_source_open_store(data_dir, "alice", &local),
                  0);
        if (local != NULL)
            take_snapshot(local, big.guid, &expected);
        cairn_restore_source_free(local);
    }
    if (bench)
        bench_local(order[0], big.guid);
    for (int i = 0; i < NODES; i++)
        start_node(i);
    if (bench) {
        bench_body(order[0], big.guid);
    } else {
        test_same_as_local(&expected, first_name, big.guid, huge.guid);
        test_many_bodies(order[0], first_name, many, MANY_BODIES + 1);
        test_fallback(&expected, order[0], second_name, big.guid);
        test_failover(order[0], first_name, second_name, big.guid);
        test_midbody_failover(order[0], first_name, second_name, &mid);
        test_all_down(order[1]);
    }
    for (int i = 0; i < NODES; i++)
        stop_node(i);
    cairn_buf_release(&expected.text);
    free(big.data);
    free(mid.data);
    if (check_failures == 0)
        nftw(temp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    else
        fprintf(stderr, "kept %s for inspection\n", temp_dir);
    return check_exit("test_restore_remote");
}
