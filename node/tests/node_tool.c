/*
 * node_tool.c - a small driver over the store for the scripted tests
 * (Cyrus tool acceptance, SIGKILL recovery):
 *
 *   node_tool apply DATA TS FILE.apply...  append recorded APPLY commands,
 *                                          one commit per file
 *   node_tool verify DATA                  open (recovering) + verify FULL
 *   node_tool reindex DATA                 rebuild DATA.index from DATA
 *   node_tool compact DATA                 coalesce everything kept into
 *                                          as few chunks as possible
 *   node_tool ingest DATA START            append batches forever from
 *                                          START, printing "ack N" after
 *                                          each commit
 *   node_tool check DATA N                 batches 1..N all present
 *
 * Exit status 0 on success, 1 on failure (with a message on stderr).
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "node_test_util.h"

#include <inttypes.h>
#include <openssl/sha.h>

static int
cmd_apply(int argc, char **argv)
{
    struct cairn_store *store = NULL;
    uint64_t ts;
    int rc;

    if (argc < 3 || cairn_parse_u64_str(argv[1], 0, INT64_MAX, &ts) < 0)
        return CAIRN_EINVAL;
    if ((rc = cairn_store_open(argv[0], CAIRN_STORE_CREATE, &store)) < 0)
        return rc;
    for (int i = 2; i < argc && rc == 0; i++) {
        rc = test_apply_file(store, argv[i], (int64_t)ts + i, NULL);
        if (rc == 0)
            rc = cairn_store_commit(store);
    }
    cairn_store_close(store);
    return rc;
}

static int
cmd_verify(int argc, char **argv)
{
    struct cairn_store *store = NULL;
    char error[256] = "";
    int rc;

    if (argc != 1)
        return CAIRN_EINVAL;
    if ((rc = cairn_store_open(argv[0], CAIRN_STORE_BLOCK, &store)) < 0)
        return rc;
    rc = cairn_store_verify(store, CAIRN_VERIFY_FULL, error, sizeof(error));
    if (rc < 0)
        fprintf(stderr, "verify: %s\n", error);
    cairn_store_close(store);
    return rc;
}

static int
cmd_reindex(int argc, char **argv)
{
    struct cairn_store *store = NULL;
    int rc;

    if (argc != 1)
        return CAIRN_EINVAL;
    if ((rc = cairn_store_open(argv[0], CAIRN_STORE_BLOCK, &store)) < 0)
        return rc;
    rc = cairn_store_reindex(store);
    cairn_store_close(store);
    return rc;
}

static int
cmd_compact(int argc, char **argv)
{
    struct cairn_compact_policy policy = {0, 1u << 30, 0, 1, 1900000000, 0};
    struct cairn_compact_result result;
    struct cairn_store *store = NULL;
    int rc;

    if (argc != 1)
        return CAIRN_EINVAL;
    if ((rc = cairn_store_open(argv[0], CAIRN_STORE_BLOCK, &store)) < 0)
        return rc;
    rc = cairn_store_compact(store, &policy, &result);
    if (rc == 0)
        printf("compact: %llu chunks -> %llu, %llu bytes -> %llu\n",
               (unsigned long long)result.chunks_before,
               (unsigned long long)result.chunks_after,
               (unsigned long long)result.bytes_before,
               (unsigned long long)result.bytes_after);
    cairn_store_close(store);
    return rc;
}

/* One batch: a message whose body names the batch, and a subscription. */
static int
append_batch(struct cairn_store *store, uint64_t batch)
{
    char body[256], guid[41], text[512];
    unsigned char digest[20];
    struct test_apply apply = {store, 1800000000 + (int64_t)batch, 0};
    int len, rc;

    len = snprintf(body, sizeof(body),
                   "Subject: batch %" PRIu64 "\r\n\r\nbody of batch %" PRIu64
                   "\r\n",
                   batch, batch);
    SHA1((const unsigned char *)body, (size_t)len, digest);
    for (int i = 0; i < 20; i++)
        snprintf(guid + 2 * i, 3, "%02x", digest[i]);
    len = snprintf(text, sizeof(text),
                   "APPLY MESSAGE (%%{default %s %d}\r\n%s)\r\n"
                   "APPLY SUB %%(USERID k MBOXNAME user.k.b%" PRIu64 ")\r\n",
                   guid, len, body, batch);
    rc = test_each_apply(text, (size_t)len, test_apply_one, &apply);
    return rc;
}

static int
cmd_ingest(int argc, char **argv)
{
    struct cairn_store *store = NULL;
    uint64_t batch;
    int rc;

    if (argc != 2 || cairn_parse_u64_str(argv[1], 1, UINT32_MAX, &batch) < 0)
        return CAIRN_EINVAL;
    if ((rc = cairn_store_open(argv[0], CAIRN_STORE_CREATE, &store)) < 0)
        return rc;
    for (;; batch++) {
        if ((rc = append_batch(store, batch)) < 0 ||
            (rc = cairn_store_commit(store)) < 0)
            break;
        printf("ack %" PRIu64 "\n", batch);
        fflush(stdout);
    }
    cairn_store_close(store);
    return rc;
}

static int
count_sub(void *ctx, const struct cairn_dlist *item)
{
    if (strcmp(cairn_dlist_name(item), "LSUB") == 0)
        *(size_t *)ctx = cairn_dlist_count(item);
    return 0;
}

static int
cmd_check(int argc, char **argv)
{
    struct cairn_store *store = NULL;
    char error[256] = "";
    uint64_t acked;
    size_t subs = 0;
    int rc;

    if (argc != 2 || cairn_parse_u64_str(argv[1], 0, UINT32_MAX, &acked) < 0)
        return CAIRN_EINVAL;
    /* A kill before the first create leaves no file: nothing was acked. */
    if ((rc = cairn_store_open(argv[0], CAIRN_STORE_BLOCK | CAIRN_STORE_CREATE,
                               &store)) < 0)
        return rc;
    if ((rc = cairn_store_verify(store, CAIRN_VERIFY_FULL, error,
                                 sizeof(error))) < 0) {
        fprintf(stderr, "verify: %s\n", error);
        goto out;
    }
    if ((rc = cairn_store_get_meta(store, count_sub, &subs)) < 0)
        goto out;
    /* Batches are numbered from 1 and appended in order. */
    if (subs < acked) {
        fprintf(stderr, "%zu batches stored, %" PRIu64 " acknowledged\n", subs,
                acked);
        rc = CAIRN_ECORRUPT;
    }
out:
    cairn_store_close(store);
    return rc;
}

int
main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(int argc, char **argv);
    } commands[] = {
        {"apply", cmd_apply},     {"verify", cmd_verify},
        {"reindex", cmd_reindex}, {"compact", cmd_compact},
        {"ingest", cmd_ingest},   {"check", cmd_check},
    };

    if (argc < 2)
        goto usage;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            int rc = commands[i].run(argc - 2, argv + 2);

            if (rc < 0)
                fprintf(stderr, "node_tool %s: %s\n", argv[1],
                        cairn_strerror(rc));
            return rc < 0 ? 1 : 0;
        }
    }
usage:
    fprintf(stderr,
            "usage: node_tool apply|verify|reindex|compact|ingest|check ...\n");
    return 2;
}
