/*
 * bench_store.c - figures for the store (ctest label "bench"; prints, never
 * asserts on time):
 *  - append MB/s of raw mail (fsynced commits) next to plain zlib deflate
 *    of the same bytes at the same level;
 *  - verify (every level) MB/s next to gunzip + SHA-1 of the same file;
 *  - compaction MB/s;
 *  - peak RSS of appending small messages and one 50 MB message, each in
 *    its own process, to show memory does not grow with message size;
 *  - group commit of 32 users;
 *  - the cost of skipping a resent body the store holds.
 *
 * usage: bench_store [DIR] [TOTAL_MB]   (default /tmp, 24)
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "node_test_util.h"

#include <openssl/sha.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <zlib.h>

#define MESSAGE_SIZE (256 * 1024)
#define BATCH 8
#define PIECE (64 * 1024)

static double
now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Text-like bytes (words and lines) from a seed, piece by piece. */
struct mail_gen {
    uint64_t state;
    uint64_t column;
};

static void
gen_fill(struct mail_gen *gen, char *out, size_t len)
{
    static const char *const words[] = {
        "the ",     "backup ", "message ",   "cyrus ",   "server ",
        "of ",      "a ",      "and ",       "replica ", "mailbox ",
        "to ",      "is ",     "quarterly ", "report ",  "meeting ",
        "please ",  "find ",   "attached ",  "regards ", "thanks ",
        "cluster ", "node ",   "storage ",   "chunk "};
    size_t at = 0;

    while (at < len) {
        const char *word;
        size_t word_len;

        gen->state ^= gen->state << 13;
        gen->state ^= gen->state >> 7;
        gen->state ^= gen->state << 17;
        word = words[gen->state % (sizeof(words) / sizeof(words[0]))];
        word_len = strlen(word);
        if (gen->column > 70) {
            word = "\r\n";
            word_len = 2;
            gen->column = 0;
        }
        if (word_len > len - at)
            word_len = len - at;
        memcpy(out + at, word, word_len);
        at += word_len;
        gen->column += word_len;
    }
}

struct gen_body {
    uint64_t seed;
    uint64_t size;
};

static int
gen_read(void *ctx, const struct cairn_dlist *file,
         int (*put)(void *put_ctx, const void *data, size_t len), void *put_ctx)
{
    const char *partition, *guid;
    uint64_t size;
    void *handle;
    struct gen_body *body;
    struct mail_gen gen;
    char piece[PIECE];
    int rc = 0;

    if (!cairn_dlist_file_info(file, &partition, &guid, &size, &handle))
        return CAIRN_EINVAL;
    body = handle;
    gen = (struct mail_gen){body->seed, 0};
    for (uint64_t at = 0; at < body->size && rc == 0;) {
        size_t len =
            body->size - at > PIECE ? PIECE : (size_t)(body->size - at);

        gen_fill(&gen, piece, len);
        rc = put(put_ctx, piece, len);
        at += len;
    }
    return rc;
}

static void
gen_guid(uint64_t seed, uint64_t size, char guid[41])
{
    struct mail_gen gen = {seed, 0};
    char piece[PIECE];
    unsigned char digest[20];
    SHA_CTX sha;

    SHA1_Init(&sha);
    for (uint64_t at = 0; at < size;) {
        size_t len = size - at > PIECE ? PIECE : (size_t)(size - at);

        gen_fill(&gen, piece, len);
        SHA1_Update(&sha, piece, len);
        at += len;
    }
    SHA1_Final(digest, &sha);
    for (int i = 0; i < 20; i++)
        snprintf(guid + 2 * i, 3, "%02x", digest[i]);
}

static void
free_handle(void *ctx, void *handle)
{
    free(handle);
}

static int
append_generated(struct cairn_store *store, uint64_t seed, uint64_t size,
                 char guid[41])
{
    struct cairn_store_bodies bodies = {gen_read, NULL};
    struct gen_body *body = malloc(sizeof(*body));
    struct cairn_dlist *line = cairn_dlist_new_list("MESSAGE");
    int rc;

    if (body == NULL || line == NULL) {
        free(body);
        cairn_dlist_free(line);
        return CAIRN_ENOMEM;
    }
    *body = (struct gen_body){seed, size};
    gen_guid(seed, size, guid);
    rc = cairn_dlist_add_file(line, NULL, "default", guid, size, body,
                              free_handle, NULL);
    if (rc < 0)
        free(body); /* the tree owns it only on success */
    else
        rc = cairn_store_append(store, 1800000000 + (int64_t)seed, line,
                                &bodies);
    cairn_dlist_free(line);
    return rc;
}

/* A mailbox holding the batch's messages, so that compaction keeps them. */
static int
append_mailbox(struct cairn_store *store, uint64_t batch, char guids[BATCH][41])
{
    struct test_apply apply = {store, 1800000000 + (int64_t)batch, 0};
    struct cairn_buf text;
    int rc;

    cairn_buf_init(&text, 1 << 20);
    rc = cairn_buf_printf(&text,
                          "APPLY MAILBOX %%(UNIQUEID bench%llu MBOXNAME"
                          " user.bench.f%llu LAST_UID %d HIGHESTMODSEQ %d"
                          " RECENTUID 0 RECENTTIME 0 LAST_APPENDDATE 0"
                          " POP3_LAST_LOGIN 0 UIDVALIDITY 1 PARTITION default"
                          " ACL \"\" OPTIONS P RECORD (",
                          (unsigned long long)batch, (unsigned long long)batch,
                          BATCH, BATCH);
    for (int i = 0; i < BATCH && rc == 0; i++)
        rc = cairn_buf_printf(&text,
                              "%s%%(UID %d MODSEQ %d LAST_UPDATED 1 FLAGS ()"
                              " INTERNALDATE 1 SIZE %d GUID %s)",
                              i ? " " : "", i + 1, i + 1, MESSAGE_SIZE,
                              guids[i]);
    if (rc == 0)
        rc = cairn_buf_append_str(&text, "))\r\n");
    if (rc == 0)
        rc = test_each_apply(text.data, text.len, test_apply_one, &apply);
    cairn_buf_release(&text);
    return rc;
}

/* Plain deflate of count messages at level, in PIECE-sized calls. */
static double
deflate_seconds(uint64_t count, int level)
{
    z_stream z = {0};
    char piece[PIECE];
    unsigned char out[PIECE * 2];
    double start = now_seconds();

    deflateInit2(&z, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
    for (uint64_t m = 0; m < count; m++) {
        struct mail_gen gen = {m + 1, 0};

        for (size_t at = 0; at < MESSAGE_SIZE; at += PIECE) {
            gen_fill(&gen, piece, PIECE);
            z.next_in = (unsigned char *)piece;
            z.avail_in = PIECE;
            do {
                z.next_out = out;
                z.avail_out = sizeof(out);
                deflate(&z, Z_NO_FLUSH);
            } while (z.avail_in > 0);
        }
    }
    do {
        z.next_out = out;
        z.avail_out = sizeof(out);
    } while (deflate(&z, Z_FINISH) == Z_OK);
    deflateEnd(&z);
    return now_seconds() - start;
}

/* Generating the bytes alone, to subtract from both sides. */
static double
generate_seconds(uint64_t count)
{
    char piece[PIECE];
    double start = now_seconds();
    unsigned sink = 0;

    for (uint64_t m = 0; m < count; m++) {
        struct mail_gen gen = {m + 1, 0};

        for (size_t at = 0; at < MESSAGE_SIZE; at += PIECE) {
            gen_fill(&gen, piece, PIECE);
            sink += (unsigned char)piece[at % PIECE];
        }
        /* The store also hashes each body once for its GUID up front. */
    }
    if (sink == 1)
        fputs("", stderr);
    return now_seconds() - start;
}

/* gunzip + SHA-1 of a whole file of concatenated gzip members. */
static double
gunzip_sha1_seconds(const char *path)
{
    size_t len = 0;
    char *data = test_read_file(path, &len);
    unsigned char out[PIECE * 2], digest[20];
    double start = now_seconds();
    z_stream z = {0};
    SHA_CTX sha;
    size_t at = 0;

    SHA1_Init(&sha);
    while (data && at < len) {
        int zrc;

        inflateInit2(&z, 31);
        z.next_in = (unsigned char *)data + at;
        z.avail_in = (uInt)(len - at);
        do {
            z.next_out = out;
            z.avail_out = sizeof(out);
            zrc = inflate(&z, Z_NO_FLUSH);
            SHA1_Update(&sha, out, sizeof(out) - z.avail_out);
        } while (zrc == Z_OK);
        at = len - z.avail_in;
        inflateEnd(&z);
        if (zrc != Z_STREAM_END)
            break;
    }
    SHA1_Final(digest, &sha);
    free(data);
    return now_seconds() - start;
}

/*
 * Group commit: 32 users with one small update each, committed one by
 * one and then all in one cairn_store_commit_many round.
 */
static void
bench_group_commit(const char *dir)
{
    enum { USERS = 32, ROUNDS = 5 };
    struct cairn_store *stores[USERS] = {NULL};
    double single = 0, group = 0;
    int rc = 0;

    for (int u = 0; u < USERS && rc == 0; u++) {
        char path[512];

        snprintf(path, sizeof(path), "%s/group-%d", dir, u);
        rc = cairn_store_open(path, CAIRN_STORE_CREATE, &stores[u]);
    }
    for (int round = 0; round < ROUNDS && rc == 0; round++) {
        for (int pass = 0; pass < 2 && rc == 0; pass++) {
            double start;

            for (int u = 0; u < USERS && rc == 0; u++) {
                char line[128];
                struct test_apply apply = {stores[u], 100 + round, 0};

                snprintf(line, sizeof(line),
                         "APPLY SUB %%(USERID u MBOXNAME user.u.r%dp%d)\r\n",
                         round, pass);
                rc =
                    test_each_apply(line, strlen(line), test_apply_one, &apply);
            }
            start = now_seconds();
            if (pass == 0) {
                for (int u = 0; u < USERS && rc == 0; u++)
                    rc = cairn_store_commit(stores[u]);
                single += now_seconds() - start;
            } else {
                rc = cairn_store_commit_many(stores, USERS, NULL);
                group += now_seconds() - start;
            }
        }
    }
    for (int u = 0; u < USERS; u++)
        cairn_store_close(stores[u]);
    printf("commit %d users: one by one %.1f ms, group commit %.1f ms (%s)\n",
           USERS, 1000.0 * single / ROUNDS, 1000.0 * group / ROUNDS,
           rc == 0 ? "ok" : "FAILED");
}

/* A MESSAGE record of count generated bodies, seeds from first on. */
static struct cairn_dlist *
generated_record(uint64_t first, unsigned count, uint64_t size)
{
    struct cairn_dlist *line = cairn_dlist_new_list("MESSAGE");

    for (unsigned i = 0; line && i < count; i++) {
        struct gen_body *body = malloc(sizeof(*body));
        char guid[41];

        if (body == NULL) {
            cairn_dlist_free(line);
            return NULL;
        }
        *body = (struct gen_body){first + i, size};
        gen_guid(first + i, size, guid);
        if (cairn_dlist_add_file(line, NULL, "default", guid, size, body,
                                 free_handle, NULL) < 0) {
            free(body);
            cairn_dlist_free(line);
            return NULL;
        }
    }
    return line;
}

/*
 * Resending bodies the store holds: what skipping one costs (an index
 * lookup; nothing is read or written), next to appending it the first
 * time. Only the cairn_store_append calls are timed.
 */
static void
bench_resend(const char *dir)
{
    enum { RECORDS = 40, PER_RECORD = 500, SIZE = 200 };
    struct cairn_store_bodies bodies = {gen_read, NULL};
    struct cairn_dlist *records[RECORDS] = {NULL};
    struct cairn_store *store = NULL;
    double seconds[3] = {0, 0, 0};
    struct stat before, after;
    char path[512];
    int rc = 0;

    snprintf(path, sizeof(path), "%s/resend", dir);
    for (unsigned r = 0; r < RECORDS && rc == 0; r++)
        if ((records[r] = generated_record(1 + (uint64_t)r * PER_RECORD,
                                           PER_RECORD, SIZE)) == NULL)
            rc = CAIRN_ENOMEM;
    if (rc == 0)
        rc = cairn_store_open(path, CAIRN_STORE_CREATE, &store);
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        if (pass == 1)
            stat(path, &before);
        for (unsigned r = 0; r < RECORDS && rc == 0; r++) {
            double start = now_seconds();

            rc = cairn_store_append(store, 1800000000, records[r], &bodies);
            seconds[pass] += now_seconds() - start;
            if (rc == 0)
                rc = cairn_store_commit(store);
        }
    }
    stat(path, &after);
    /* the lookup alone, through the public predicate */
    for (unsigned r = 0; r < RECORDS && rc == 0; r++) {
        double start = now_seconds();

        for (const struct cairn_dlist *file = cairn_dlist_first(records[r]);
             file; file = cairn_dlist_next(file)) {
            const char *partition, *guid;
            uint64_t size;

            if (cairn_dlist_file_info(file, &partition, &guid, &size, NULL) &&
                !cairn_store_has_message(store, guid))
                rc = CAIRN_ENOENT;
        }
        seconds[2] += now_seconds() - start;
    }
    printf("resend of %d held bodies (%d per record, %d bytes each): "
           "%.2f us per body skipped (first append %.2f us per body; "
           "cairn_store_has_message alone %.2f us); the file grew %lld "
           "bytes (%s)\n",
           RECORDS * PER_RECORD, PER_RECORD, SIZE,
           1e6 * seconds[1] / (RECORDS * PER_RECORD),
           1e6 * seconds[0] / (RECORDS * PER_RECORD),
           1e6 * seconds[2] / (RECORDS * PER_RECORD),
           (long long)(after.st_size - before.st_size),
           rc == 0 ? "ok" : "FAILED");
    cairn_store_close(store);
    for (unsigned r = 0; r < RECORDS; r++)
        cairn_dlist_free(records[r]);
}

static long
child_peak_rss_kb(int (*run)(const char *dir, uint64_t arg), const char *dir,
                  uint64_t arg)
{
    struct rusage usage;
    int status = 0;
    pid_t pid = fork();

    if (pid == 0)
        _exit(run(dir, arg) == 0 ? 0 : 1);
    if (pid < 0 || wait4(pid, &status, 0, &usage) < 0 || status != 0)
        return -1;
    return usage.ru_maxrss;
}

static int
rss_phase(const char *dir, uint64_t size)
{
    struct cairn_store *store = NULL;
    char path[512];
    int rc;

    snprintf(path, sizeof(path), "%s/rss-%llu", dir, (unsigned long long)size);
    if ((rc = cairn_store_open(path, CAIRN_STORE_CREATE, &store)) < 0)
        return rc;
    for (uint64_t m = 0; m < 4 && rc == 0; m++) {
        char guid[41];

        rc = append_generated(store, 1000 + m, size, guid);
    }
    if (rc == 0)
        rc = cairn_store_commit(store);
    if (rc == 0)
        rc = cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0);
    cairn_store_close(store);
    return rc;
}

int
main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : "/tmp";
    uint64_t total_mb = 24, count;
    struct cairn_store *store = NULL;
    struct cairn_compact_policy policy = {0, 64u << 20, 0, 1, 1900000000, 0};
    struct cairn_compact_result result;
    char path[512], *dir = NULL, guids[BATCH][41];
    double start, append_s, verify_s, compact_s, base_deflate, base_gen,
        base_gunzip, raw_mb;
    struct stat st;
    int rc = 0;

    if (argc > 2 && cairn_parse_u64_str(argv[2], 1, 4096, &total_mb) < 0)
        return 2;
    count = total_mb * 1024 * 1024 / MESSAGE_SIZE;
    raw_mb = (double)(count * MESSAGE_SIZE) / (1024.0 * 1024.0);
    if (asprintf(&dir, "%s/cairn-bench-XXXXXX", base) < 0 || !mkdtemp(dir))
        return 1;
    snprintf(path, sizeof(path), "%s/user", dir);
    if ((rc = cairn_store_open(path, CAIRN_STORE_CREATE, &store)) < 0)
        goto out;
    start = now_seconds();
    for (uint64_t m = 0; m < count && rc == 0; m++) {
        rc = append_generated(store, m + 1, MESSAGE_SIZE, guids[m % BATCH]);
        if (rc == 0 && (m + 1) % BATCH == 0 &&
            (rc = append_mailbox(store, m / BATCH, guids)) == 0)
            rc = cairn_store_commit(store);
    }
    if (rc == 0)
        rc = cairn_store_commit(store);
    append_s = now_seconds() - start;
    if (rc < 0)
        goto out;
    base_gen = generate_seconds(count);
    base_deflate = deflate_seconds(count, Z_DEFAULT_COMPRESSION);
    stat(path, &st);
    printf("corpus: %llu messages of %d KiB = %.1f MB raw, %.1f MB on disk"
           " (level 6, commit every %d messages)\n",
           (unsigned long long)count, MESSAGE_SIZE / 1024, raw_mb,
           (double)st.st_size / 1048576.0, BATCH);
    printf("generating the bytes alone: %.3f s (subtracted below)\n", base_gen);
    /* append generates each body twice (GUID, then write): subtract both */
    printf("append: %.1f MB/s   plain deflate: %.1f MB/s   ratio %.0f%%\n",
           raw_mb / (append_s - 2 * base_gen),
           raw_mb / (base_deflate - base_gen),
           100.0 * (base_deflate - base_gen) / (append_s - 2 * base_gen));
    start = now_seconds();
    rc = cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0);
    verify_s = now_seconds() - start;
    base_gunzip = gunzip_sha1_seconds(path);
    printf("verify (all levels): %.1f MB/s   gunzip+SHA-1: %.1f MB/s"
           "   ratio %.0f%%   (%s)\n",
           raw_mb / verify_s, raw_mb / base_gunzip,
           100.0 * base_gunzip / verify_s, rc == 0 ? "ok" : "FAILED");
    start = now_seconds();
    rc = cairn_store_compact(store, &policy, &result);
    compact_s = now_seconds() - start;
    printf("compact (coalesce %llu chunks into %llu): %.1f MB/s of raw mail"
           " (%s)\n",
           (unsigned long long)result.chunks_before,
           (unsigned long long)result.chunks_after, raw_mb / compact_s,
           rc == 0 ? "ok" : "FAILED");
    cairn_store_close(store);
    store = NULL;
    printf("peak RSS, 4 messages of 1 MB:  %ld KiB\n",
           child_peak_rss_kb(rss_phase, dir, 1u << 20));
    printf("peak RSS, 4 messages of 50 MB: %ld KiB\n",
           child_peak_rss_kb(rss_phase, dir, 50u << 20));
    bench_group_commit(dir);
    bench_resend(dir);
out:
    cairn_store_close(store);
    test_remove_dir(dir);
    free(dir);
    if (rc < 0)
        fprintf(stderr, "bench_store: %s\n", cairn_strerror(rc));
    return rc < 0 ? 1 : 0;
}
