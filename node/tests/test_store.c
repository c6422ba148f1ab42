/*
 * test_store.c - unit tests of the node store: names, SYNC_CRC vectors, the
 * byte-exact worked example of cyrus-backups.md §2.7, recorded sync_client
 * traffic appended and answered back byte for byte as backupd did, verify,
 * reindex equality, locking, failed records and group commit, and each
 * message body stored once per user whatever is resent (and a log that
 * holds bodies twice, as backupd writes a resend, reindexed and compacted),
 * and members past the chunk writer's buffer.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "check.h"
#include "node_test_util.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/stat.h>

#define CHUNK_HEADER "# cyrus backup: chunk start\r\n"

static void
test_names(void)
{
    static const struct {
        const char *userid;
        int rc;
    } cases[] = {
        {"alice", 0},
        {"alice@example.com", 0},
        {"anne.smith", 0},
        {"%SHARED", 0},
        {"", CAIRN_EBADNAME},
        {"..", CAIRN_EBADNAME},
        {"a/b", CAIRN_EBADNAME},
        {"../etc", CAIRN_EBADNAME},
        {"a..b", CAIRN_EBADNAME},
        {".hidden", CAIRN_EBADNAME},
        {"tab\there", CAIRN_EBADNAME},
        {"nl\n", CAIRN_EBADNAME},
        {"del\x7f", CAIRN_EBADNAME},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_INT(cairn_node_check_userid(cases[i].userid), cases[i].rc);
    CHECK_INT(cairn_node_check_userid(NULL), CAIRN_EBADNAME);
    CHECK_INT(cairn_node_dir_hash("Alice"), 'a');
    CHECK_INT(cairn_node_dir_hash("%SHARED"), 'q');
    CHECK_INT(cairn_node_dir_hash("9bob"), 'q');
}

static void
test_crc_vectors(void)
{
    static const char *const none[1] = {NULL};
    static const char *const flagged[2] = {"\\Flagged", "$Label1"};
    struct cairn_crc_record three[3] = {
        {1, 2, 1795666893, 1795666893,
         "3a97e2a43a3319e15e5bd1067367a4a489679a20", none, 0, false, 1795666893,
         2, 0, NULL, 0},
        {2, 3, 1795666893, 1795666893,
         "358c4d903696025e4e772746204dbddf2699b679", none, 0, false, 1795666893,
         3, 0, NULL, 0},
        {3, 4, 1795666893, 1795666893,
         "b4642abaefa696d2ff9cec37f98ba4fcaebf0512", none, 0, false, 1795666893,
         4, 0, NULL, 0},
    };
    struct cairn_crc_record one = {1,
                                   2,
                                   1795666893,
                                   1795666893,
                                   "b4642abaefa696d2ff9cec37f98ba4fcaebf0512",
                                   none,
                                   0,
                                   false,
                                   1795666893,
                                   2,
                                   0,
                                   NULL,
                                   0};
    struct cairn_crc_record after[4] = {
        {1, 6, 1795666895, 1795666893,
         "3a97e2a43a3319e15e5bd1067367a4a489679a20", flagged, 2, false,
         1795666893, 2, 0, NULL, 0},
        {2, 3, 1795666893, 1795666893,
         "358c4d903696025e4e772746204dbddf2699b679", none, 0, true, 1795666893,
         3, 0, NULL, 0},
        three[2],
        {4, 5, 1795666894, 1795666894,
         "e1cba4d68ec0df1ef8063a7fbe2b699ed0a8086f", none, 0, false, 1795666894,
         5, 0, NULL, 0},
    };
    uint32_t crc, annot;

    cairn_node_sync_crcs(three, 3, &crc, &annot);
    CHECK_U64(crc, 3965814589u);
    CHECK_U64(annot, 2293456679u);
    cairn_node_sync_crcs(&one, 1, &crc, &annot);
    CHECK_U64(crc, 515426186u);
    CHECK_U64(annot, 3358053881u);
    cairn_node_sync_crcs(after, 4, &crc, &annot);
    CHECK_U64(crc, 3596144459u);
    CHECK_U64(annot, 1409754748u);
    cairn_node_sync_crcs(NULL, 0, &crc, &annot);
    CHECK_U64(crc, 0);
    CHECK_U64(annot, 12345678u);
}

static int
collect_body(void *ctx, const void *data, size_t len)
{
    return cairn_buf_append(ctx, data, len);
}

static int
query_text(const char *index, const char *sql, char *out, size_t size)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int rc = -1;

    out[0] = '\0';
    if (sqlite3_open_v2(index, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
        const unsigned char *text = sqlite3_column_text(stmt, 0);

        snprintf(out, size, "%s", text ? (const char *)text : "NULL");
        rc = 0;
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return rc;
}

/* cyrus-backups.md §2.7: the chunk's content and checksums, exactly. */
static void
test_worked_example(const char *dir)
{
    static const char apply[] =
        "APPLY MESSAGE (%{default 6f89a01803b8215fdb5eea1d3a780d3e456e1be2 "
        "21}\r\nSubject: x\r\n\r\nhello\r\n)\r\n";
    static const char sub[] =
        "APPLY SUB %(USERID alice MBOXNAME user.alice.Lists)\r\n";
    struct cairn_store *store = NULL;
    struct cairn_buf body;
    char path[512], index[600], text[128];
    int appended = 0;

    snprintf(path, sizeof(path), "%s/example", dir);
    snprintf(index, sizeof(index), "%s.index", path);
    CHECK_INT(cairn_store_open(path, CAIRN_STORE_CREATE, &store), 0);
    if (store == NULL)
        return;
    CHECK_INT(cairn_store_commit(store), 0); /* nothing: no empty chunk */
    {
        struct test_apply a1 = {store, 1700000000, 0};
        struct test_apply a2 = {store, 1700000001, 0};

        CHECK_INT(
            test_each_apply(apply, sizeof(apply) - 1, test_apply_one, &a1), 0);
        CHECK_INT(test_each_apply(sub, sizeof(sub) - 1, test_apply_one, &a2),
                  0);
        appended = a1.appended + a2.appended;
    }
    CHECK_INT(appended, 2);
    CHECK_INT(cairn_store_commit(store), 0);
    query_text(index, "SELECT length FROM chunk WHERE id = 1", text,
               sizeof(text));
    CHECK_STR(text, "199");
    query_text(index, "SELECT data_sha1 FROM chunk WHERE id = 1", text,
               sizeof(text));
    CHECK_STR(text, "5a7dcd68ba9214b1bd4387ac4201989b139c4568");
    query_text(index, "SELECT file_sha1 FROM chunk WHERE id = 1", text,
               sizeof(text));
    CHECK_STR(text, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    query_text(index, "SELECT offset || ' ' || size FROM message", text,
               sizeof(text));
    CHECK_STR(text, "29 21");
    query_text(index, "SELECT count(*) FROM chunk", text, sizeof(text));
    CHECK_STR(text, "1");
    cairn_buf_init(&body, 1 << 20);
    CHECK_INT(cairn_store_read_message(
                  store, "6f89a01803b8215fdb5eea1d3a780d3e456e1be2",
                  collect_body, &body),
              0);
    CHECK_MEM(body.data, body.len, "Subject: x\r\n\r\nhello\r\n", 21);
    cairn_buf_release(&body);
    CHECK(cairn_store_has_message(store,
                                  "6f89a01803b8215fdb5eea1d3a780d3e456e1be2"));
    CHECK(!cairn_store_has_message(store,
                                   "0000000000000000000000000000000000000000"));
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    cairn_store_close(store);
}

static int
print_item(void *ctx, const struct cairn_dlist *item)
{
    struct cairn_buf *out = ctx;
    int rc;

    if ((rc = cairn_buf_append_str(out, "* ")) < 0 ||
        (rc = cairn_dlist_print(item, true, out, NULL)) < 0)
        return rc;
    return cairn_buf_append_str(out, "\r\n");
}

/* Our GET USER must equal what backupd answered holding the same data. */
static void
check_get_user(struct cairn_store *store, const char *expected_path)
{
    struct cairn_buf out;
    size_t len = 0;
    char *expected = test_read_file(expected_path, &len);

    cairn_buf_init(&out, 1 << 20);
    CHECK_INT(cairn_store_get_user(store, print_item, &out), 0);
    CHECK(expected != NULL);
    if (expected) {
        CHECK_MEM(out.data, out.len, expected, len);
        if (out.len != len || memcmp(out.data, expected, len) != 0)
            fprintf(stderr, "ours:\n%s\nbackupd (%s):\n%s\n", out.data,
                    expected_path, expected);
    }
    free(expected);
    cairn_buf_release(&out);
}

static const char *const user001_sessions[] = {"01", "02", "03", "04",
                                               "05", "06", "07", "09"};

/* Applies the recorded sessions of user001, one commit each. */
static void
build_user001(struct cairn_store *store, bool check_replies)
{
    for (size_t i = 0; i < 8; i++) {
        char path[64], expected[64];
        int appended = 0;

        snprintf(path, sizeof(path), "data/%s.apply", user001_sessions[i]);
        snprintf(expected, sizeof(expected), "data/%s.get_user",
                 user001_sessions[i]);
        if (check_replies && i > 0 && i < 7)
            check_get_user(store, expected);
        CHECK_INT(test_apply_file(store, path, 1795668600 + (int64_t)i * 10,
                                  &appended),
                  0);
        CHECK(appended > 0);
        CHECK_INT(cairn_store_commit(store), 0);
    }
}

/* GET MAILBOXES and GET META give the matching parts of GET USER. */
static void
check_partial_answers(struct cairn_store *store)
{
    static const char *const names[] = {"user.user001.Work", "user.nobody",
                                        NULL, "user.user001"};
    struct cairn_buf user, some, meta;
    const char *work, *inbox, *lsub;

    cairn_buf_init(&user, 1 << 20);
    cairn_buf_init(&some, 1 << 20);
    cairn_buf_init(&meta, 1 << 20);
    CHECK_INT(cairn_store_get_user(store, print_item, &user), 0);
    CHECK_INT(cairn_store_get_mailboxes(store, names, 4, print_item, &some), 0);
    CHECK_INT(cairn_store_get_meta(store, print_item, &meta), 0);
    work = user.data ? strstr(user.data, "* MAILBOX %(UNIQUEID od1o") : NULL;
    inbox = user.data ? strstr(user.data, "* MAILBOX %(UNIQUEID xpr9") : NULL;
    lsub = user.data ? strstr(user.data, "* LSUB") : NULL;
    CHECK(work && inbox && lsub && some.data && meta.data);
    if (work && inbox && lsub && some.data && meta.data) {
        size_t work_len = (size_t)(strstr(work, "\r\n") + 2 - work);
        size_t inbox_len = (size_t)(strstr(inbox, "\r\n") + 2 - inbox);

        CHECK_INT(some.len, work_len + inbox_len);
        CHECK(memcmp(some.data, work, work_len) == 0);
        CHECK(memcmp(some.data + work_len, inbox, inbox_len) == 0);
        CHECK_STR(meta.data, lsub);
    }
    cairn_buf_release(&user);
    cairn_buf_release(&some);
    cairn_buf_release(&meta);
}

static void
test_recorded_traffic(const char *dir)
{
    struct cairn_store *store = NULL;
    struct cairn_buf full;
    char path[512], index[600], text[128], error[256];
    char *before = NULL, *after = NULL;

    snprintf(path, sizeof(path), "%s/user001", dir);
    snprintf(index, sizeof(index), "%s.index", path);
    CHECK_INT(cairn_store_open(path, CAIRN_STORE_CREATE, &store), 0);
    if (store == NULL)
        return;
    build_user001(store, true);
    query_text(index, "SELECT count(*) FROM chunk", text, sizeof(text));
    CHECK_STR(text, "8");
    query_text(index, "SELECT count(*) FROM message", text, sizeof(text));
    CHECK_STR(text, "4");
    query_text(index,
               "SELECT count(*) FROM mailbox_message WHERE expunged IS NOT "
               "NULL",
               text, sizeof(text));
    CHECK_STR(text, "1");
    query_text(index,
               "SELECT unsubscribed IS NOT NULL FROM subscription"
               " WHERE mboxname = 'user.user001.Work'",
               text, sizeof(text));
    CHECK_STR(text, "1");
    query_text(index, "SELECT filename FROM sieve", text, sizeof(text));
    CHECK_STR(text, "lab.script");
    CHECK_INT(
        cairn_store_verify(store, CAIRN_VERIFY_FULL, error, sizeof(error)), 0);
    if (error[0])
        fprintf(stderr, "verify: %s\n", error);
    cairn_buf_init(&full, 1 << 20);
    CHECK_INT(
        cairn_store_get_fullmailbox(store, "user.user001", print_item, &full),
        0);
    CHECK(full.data && strstr(full.data, "FLAGS (\\Flagged $Label1)") != NULL);
    CHECK(full.data && strstr(full.data, "\\Expunged)") != NULL);
    cairn_buf_release(&full);
    CHECK_INT(cairn_store_get_fullmailbox(store, "user.user001.Nope",
                                          print_item, &full),
              CAIRN_ENOENT);
    check_partial_answers(store);
    before = test_dump_index(index);
    CHECK_INT(cairn_store_reindex(store), 0);
    after = test_dump_index(index);
    CHECK(before && after && strcmp(before, after) == 0);
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    free(before);
    free(after);
    cairn_store_close(store);
}

static int
copy_file(const char *from, const char *to, off_t length)
{
    size_t len = 0;
    char *data = test_read_file(from, &len);
    FILE *f;
    int rc = -1;

    if (data == NULL)
        return -1;
    if (length >= 0 && (size_t)length < len)
        len = (size_t)length;
    if ((f = fopen(to, "wb")) != NULL) {
        rc = fwrite(data, 1, len, f) == len ? 0 : -1;
        fclose(f);
    }
    free(data);
    return rc;
}

/*
 * A crash while the last chunk was being written: every cut of its bytes
 * must reopen to exactly the committed state, with verify passing.
 */
static void
test_torn_tail(const char *dir)
{
    struct cairn_store *store = NULL;
    char path[512], index[600], saved[600], saved_index[600];
    char work[600], work_index[700];
    struct stat committed, full;
    char *expected = NULL;
    int failures = 0;

    snprintf(path, sizeof(path), "%s/torn", dir);
    snprintf(index, sizeof(index), "%s.index", path);
    snprintf(saved, sizeof(saved), "%s/torn.saved", dir);
    snprintf(saved_index, sizeof(saved_index), "%s/torn.saved.index", dir);
    snprintf(work, sizeof(work), "%s/torn.work", dir);
    snprintf(work_index, sizeof(work_index), "%s.index", work);
    CHECK_INT(cairn_store_open(path, CAIRN_STORE_CREATE, &store), 0);
    if (store == NULL)
        return;
    CHECK_INT(test_apply_file(store, "data/01.apply", 1795668600, NULL), 0);
    CHECK_INT(cairn_store_commit(store), 0);
    cairn_store_close(store);
    copy_file(path, saved, -1);
    copy_file(index, saved_index, -1);
    expected = test_dump_index(index);
    stat(path, &committed);
    CHECK_INT(cairn_store_open(path, 0, &store), 0);
    CHECK_INT(test_apply_file(store, "data/02.apply", 1795668610, NULL), 0);
    CHECK_INT(cairn_store_commit(store), 0);
    cairn_store_close(store);
    stat(path, &full);
    CHECK(full.st_size > committed.st_size);
    for (off_t cut = committed.st_size; cut < full.st_size; cut++) {
        struct stat now;
        char *dump;

        copy_file(path, work, cut);
        copy_file(saved_index, work_index, -1);
        if (cairn_store_open(work, 0, &store) != 0) {
            failures++;
            continue;
        }
        /* Full verify of every cut is slow; checksums prove the cut. */
        if (cairn_store_verify(store, CAIRN_VERIFY_ALL_CHECKSUMS, NULL, 0) != 0)
            failures++;
        cairn_store_close(store);
        stat(work, &now);
        dump = test_dump_index(work_index);
        if (now.st_size != committed.st_size || dump == NULL ||
            expected == NULL || strcmp(dump, expected) != 0)
            failures++;
        free(dump);
    }
    CHECK_INT(failures, 0);
    /* Committed data missing from the file is reported, never "fixed". */
    copy_file(path, work, committed.st_size - 1);
    copy_file(saved_index, work_index, -1);
    CHECK_INT(cairn_store_open(work, 0, &store), CAIRN_ECORRUPT);
    /* A lost index is rebuilt from the data file on open. */
    copy_file(saved, work, -1);
    unlink(work_index);
    CHECK_INT(cairn_store_open(work, 0, &store), 0);
    cairn_store_close(store);
    {
        char *rebuilt = test_dump_index(work_index);

        CHECK(rebuilt && expected && strcmp(rebuilt, expected) == 0);
        free(rebuilt);
    }
    free(expected);
}

/*
 * A damaged member between whole ones (a backupd crash, then more
 * sessions): reindex skips it and keeps every later chunk (§6.3-2).
 */
static void
test_damaged_middle(const char *dir)
{
    struct cairn_store *store = NULL;
    char path[512], index[600], text[64];
    uint64_t second = 0, third = 0;
    size_t len = 0;
    char *data;
    FILE *f;

    snprintf(path, sizeof(path), "%s/damaged", dir);
    snprintf(index, sizeof(index), "%s.index", path);
    CHECK_INT(cairn_store_open(path, CAIRN_STORE_CREATE, &store), 0);
    if (store == NULL)
        return;
    CHECK_INT(test_apply_file(store, "data/01.apply", 1795668600, NULL), 0);
    CHECK_INT(cairn_store_commit(store), 0);
    CHECK_INT(test_apply_file(store, "data/02.apply", 1795668610, NULL), 0);
    CHECK_INT(cairn_store_commit(store), 0);
    CHECK_INT(test_apply_file(store, "data/06.apply", 1795668620, NULL), 0);
    CHECK_INT(cairn_store_commit(store), 0);
    cairn_store_close(store);
    query_text(index, "SELECT offset FROM chunk WHERE id = 2", text,
               sizeof(text));
    cairn_parse_u64_str(text, 0, UINT64_MAX, &second);
    query_text(index, "SELECT offset FROM chunk WHERE id = 3", text,
               sizeof(text));
    cairn_parse_u64_str(text, 0, UINT64_MAX, &third);
    data = test_read_file(path, &len);
    CHECK(data != NULL && second > 0 && third > second && len > third);
    if (data == NULL || third <= second || len <= third) {
        free(data);
        return;
    }
    /* Keep the first half of chunk 2 only. */
    f = fopen(path, "wb");
    fwrite(data, 1, second + (third - second) / 2, f);
    fwrite(data + third, 1, len - third, f);
    fclose(f);
    free(data);
    unlink(index);
    CHECK_INT(cairn_store_open(path, 0, &store), 0);
    if (store == NULL)
        return;
    query_text(index, "SELECT count(*) FROM chunk", text, sizeof(text));
    CHECK_STR(text, "2");
    {
        struct cairn_reindex_result result;

        CHECK_INT(cairn_store_rebuild_index(store, &result), 0);
        CHECK_U64(result.chunks, 2);
        CHECK_U64(result.damaged_members, 1);
        CHECK_U64(result.skipped_bytes, (third - second) / 2);
        CHECK_U64(result.cut_bytes, 0);
    }
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    CHECK(cairn_store_has_message(store,
                                  "e9a6894fc65be05aed31b2daa065cd996b9126a6"));
    CHECK(!cairn_store_has_message(store,
                                   "3f92d71a8e4af087089400708ba686ad609f6b88"));
    query_text(index,
               "SELECT unsubscribed IS NOT NULL FROM subscription WHERE"
               " mboxname = 'user.user001.Work'",
               text, sizeof(text));
    CHECK_STR(text, "1"); /* chunk 3, after the damage, was read */
    cairn_store_close(store);
}

static void
test_lock_and_failures(const char *dir)
{
    static const char bad_mailbox[] =
        "APPLY MAILBOX %(UNIQUEID x MBOXNAME user.a.x)\r\n";
    static const char wrong_guid[] =
        "APPLY MESSAGE (%{default 0000000000000000000000000000000000000000 "
        "3}\r\nabc)\r\n";
    static const char sub[] = "APPLY SUB %(USERID a MBOXNAME user.a.x)\r\n";
    struct cairn_store *store = NULL, *second = NULL;
    struct test_apply apply;
    char path[512];
    struct stat before, after;

    snprintf(path, sizeof(path), "%s/locked", dir);
    CHECK_INT(cairn_store_open(path, CAIRN_STORE_CREATE, &store), 0);
    if (store == NULL)
        return;
    CHECK_INT(cairn_store_open(path, 0, &second), CAIRN_ELOCKED);
    CHECK(second == NULL);
    apply = (struct test_apply){store, 100, 0};
    CHECK_INT(test_each_apply(sub, sizeof(sub) - 1, test_apply_one, &apply), 0);
    stat(path, &before);
    CHECK_INT(test_each_apply(bad_mailbox, sizeof(bad_mailbox) - 1,
                              test_apply_one, &apply),
              CAIRN_EPROTO);
    CHECK_INT(test_each_apply(wrong_guid, sizeof(wrong_guid) - 1,
                              test_apply_one, &apply),
              CAIRN_EMISMATCH);
    stat(path, &after);
    CHECK_INT(after.st_size, before.st_size); /* both undone in the file */
    CHECK_INT(cairn_store_commit(store), 0);
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    CHECK(!cairn_store_has_message(store,
                                   "0000000000000000000000000000000000000000"));
    cairn_store_close(store);
}

static void
test_group_commit(const char *dir)
{
    static const char sub[] = "APPLY SUB %(USERID a MBOXNAME user.a.x)\r\n";
    struct cairn_catalog *catalog = NULL;
    struct cairn_store *stores[3] = {NULL, NULL, NULL};
    const char *users[3] = {"alice", "bob", "carol"};
    char catalog_path[512];
    int results[3] = {-1, -1, -1};
    char *path = NULL;

    snprintf(catalog_path, sizeof(catalog_path), "%s/catalog.db", dir);
    CHECK_INT(cairn_catalog_open(catalog_path, &catalog), 0);
    if (catalog == NULL)
        return;
    for (int i = 0; i < 3; i++) {
        CHECK_INT(cairn_store_open_user(catalog, dir, users[i],
                                        CAIRN_STORE_CREATE, &stores[i]),
                  0);
        if (stores[i] && i < 2) {
            struct test_apply apply = {stores[i], 100, 0};

            CHECK_INT(
                test_each_apply(sub, sizeof(sub) - 1, test_apply_one, &apply),
                0);
        }
    }
    CHECK_INT(cairn_store_commit_many(stores, 3, results), 0);
    CHECK_INT(results[0] + results[1] + results[2], 0);
    for (int i = 0; i < 3; i++)
        cairn_store_close(stores[i]);
    CHECK_INT(cairn_catalog_lookup(catalog, "bob", &path), 0);
    CHECK(path && strstr(path, "/b/bob_") != NULL);
    free(path);
    CHECK_INT(cairn_catalog_lookup(catalog, "dave", &path), CAIRN_ENOENT);
    CHECK_INT(cairn_catalog_lookup(catalog, "../x", &path), CAIRN_EBADNAME);
    CHECK_INT(cairn_store_open_user(catalog, dir, "a/b", CAIRN_STORE_CREATE,
                                    &stores[0]),
              CAIRN_EBADNAME);
    cairn_catalog_free(catalog);
}

/* --- one body per user ---------------------------------------------------
 */

/* Bodies A, B, C, and "a": A's GUID over bytes that do not hash to it. */
struct dedupe_bodies {
    struct test_body bodies[4];
    char guids[4][41];
    int reads;
};

static void
make_dedupe_bodies(struct dedupe_bodies *set)
{
    static const size_t sizes[3] = {1500, 4000, 2500};
    uint64_t state = 0x9e3779b97f4a7c15u;

    memset(set, 0, sizeof(*set));
    for (size_t i = 0; i < 3; i++) {
        unsigned char digest[20];

        set->bodies[i].data = malloc(sizes[i]);
        set->bodies[i].len = sizes[i];
        /* random letters: deflate must not hide which bodies were written */
        for (size_t at = 0; set->bodies[i].data && at < sizes[i]; at++) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            set->bodies[i].data[at] = (char)('a' + state % 26);
        }
        if (set->bodies[i].data)
            SHA1((const unsigned char *)set->bodies[i].data, sizes[i], digest);
        for (int d = 0; d < 20; d++)
            snprintf(set->guids[i] + 2 * d, 3, "%02x", digest[d]);
    }
    set->bodies[3].data = malloc(sizes[0]);
    set->bodies[3].len = sizes[0];
    if (set->bodies[3].data && set->bodies[0].data) {
        memcpy(set->bodies[3].data, set->bodies[0].data, sizes[0]);
        set->bodies[3].data[0] ^= 1;
    }
    memcpy(set->guids[3], set->guids[0], sizeof(set->guids[0]));
}

static void
free_dedupe_bodies(struct dedupe_bodies *set)
{
    for (size_t i = 0; i < 4; i++)
        free(set->bodies[i].data);
}

static size_t
body_index(char name)
{
    return name == 'a' ? 3 : (size_t)(name - 'A');
}

static int
read_counted(void *ctx, const struct cairn_dlist *file,
             int (*put)(void *put_ctx, const void *data, size_t len),
             void *put_ctx)
{
    struct dedupe_bodies *set = ctx;

    set->reads++;
    return test_read_body(NULL, file, put, put_ctx);
}

/* Appends a MESSAGE of the bodies named in files ("ABa"; N: a NIL). */
static int
append_files(struct cairn_store *store, struct dedupe_bodies *set,
             const char *files, int64_t ts)
{
    struct cairn_store_bodies bodies = {read_counted, set};
    struct cairn_dlist *record = cairn_dlist_new_list("MESSAGE");
    int rc = record ? 0 : CAIRN_ENOMEM;

    for (const char *name = files; *name && rc == 0; name++) {
        size_t i = body_index(*name);

        if (*name == 'N')
            rc = cairn_dlist_add_nil(record, NULL);
        else
            rc = cairn_dlist_add_file(record, NULL, "default", set->guids[i],
                                      set->bodies[i].len, &set->bodies[i], NULL,
                                      NULL);
    }
    if (rc == 0)
        rc = cairn_store_append(store, ts, record, &bodies);
    cairn_dlist_free(record);
    return rc;
}

struct dedupe_step {
    const char *files;   /* the MESSAGE record */
    const char *written; /* the bodies it must add to the log */
    bool commit;
    int rc;
};

/* Rows of table in the index at path (UINT64_MAX when unreadable). */
static uint64_t
query_count(const char *index, const char *table)
{
    char sql[64], text[32];
    uint64_t count = UINT64_MAX;

    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
    if (query_text(index, sql, text, sizeof(text)) == 0)
        cairn_parse_u64_str(text, 0, UINT64_MAX, &count);
    return count;
}

/* Checks what the committed steps since the last commit added. */
static void
check_growth(const char *path, const struct dedupe_bodies *set,
             const char *written, size_t lines, struct test_log_figures *last)
{
    struct test_log_figures now;
    uint64_t bytes = 0, grew;

    CHECK_INT(test_read_log(path, &now), 0);
    for (const char *name = written; *name; name++)
        bytes += set->bodies[body_index(*name)].len;
    grew = now.length - last->length;
    CHECK_U64(now.literals - last->literals, strlen(written));
    if (bytes == 0) {
        CHECK_U64(grew, 0);
        CHECK_U64(now.file_size, last->file_size);
    } else {
        /* the bodies plus their "%{...}" and lines (and a chunk header) */
        CHECK(grew >= bytes);
        CHECK(grew < bytes + 80 * strlen(written) + 64 * lines + 32);
    }
    *last = now;
}

static void
run_dedupe_case(const char *path, struct dedupe_bodies *set,
                const struct dedupe_step *steps, size_t step_count,
                uint64_t messages, uint64_t chunks)
{
    struct cairn_store *store = NULL;
    struct test_log_figures last = {0, 0, 0};
    char written[16] = "", index[600];
    char *before = NULL, *after = NULL;
    size_t lines = 0;

    snprintf(index, sizeof(index), "%s.index", path);
    CHECK_INT(cairn_store_open(path, CAIRN_STORE_CREATE, &store), 0);
    if (store == NULL)
        return;
    for (size_t i = 0; i < step_count && steps[i].files; i++) {
        set->reads = 0;
        CHECK_INT(append_files(store, set, steps[i].files, 1700000000 + i),
                  steps[i].rc);
        if (steps[i].rc == 0) {
            CHECK_INT(set->reads, strlen(steps[i].written));
            strncat(written, steps[i].written,
                    sizeof(written) - strlen(written) - 1);
            lines++;
        }
        if (!steps[i].commit)
            continue;
        CHECK_INT(cairn_store_commit(store), 0);
        check_growth(path, set, written, lines, &last);
        written[0] = '\0';
        lines = 0;
    }
    CHECK_U64(query_count(index, "message"), messages);
    CHECK_U64(query_count(index, "chunk"), chunks);
    CHECK_U64(last.literals, messages); /* each body once in the log */
    for (size_t i = 0; i < 3; i++) {
        struct cairn_buf body;

        if (!cairn_store_has_message(store, set->guids[i]))
            continue;
        cairn_buf_init(&body, 1 << 20);
        CHECK_INT(
            cairn_store_read_message(store, set->guids[i], collect_body, &body),
            0);
        CHECK_MEM(body.data, body.len, set->bodies[i].data, set->bodies[i].len);
        cairn_buf_release(&body);
    }
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    before = test_dump_index(index);
    CHECK_INT(cairn_store_reindex(store), 0);
    after = test_dump_index(index);
    CHECK(before && after && strcmp(before, after) == 0);
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    free(before);
    free(after);
    cairn_store_close(store);
}

/*
 * A resent body (held, earlier in the record, or earlier in the open
 * round) is neither read nor written; the rest is, in order.
 */
static void
test_dedupe(const char *dir)
{
    static const struct {
        const char *name;
        struct dedupe_step steps[3];
        uint64_t messages, chunks;
    } cases[] = {
        {"one of two resent",
         {{"AB", "AB", true, 0}, {"BC", "C", true, 0}},
         3,
         2},
        {"twice in one record", {{"AA", "A", true, 0}}, 1, 1},
        {"held body resent alone",
         {{"A", "A", true, 0}, {"A", "", true, 0}},
         1,
         1},
        {"held in the open round",
         {{"AB", "AB", false, 0}, {"BCA", "C", true, 0}},
         3,
         1},
        {"all held, reordered",
         {{"ABC", "ABC", true, 0}, {"CBAC", "", true, 0}},
         3,
         1},
        {"NIL entries", {{"NAN", "A", true, 0}, {"NBA", "B", true, 0}}, 2, 2},
        {"nothing but NIL", {{"N", "", true, 0}}, 0, 0},
        /* a held GUID's body is not read, so not checked (intended) */
        {"held body not read again",
         {{"A", "A", true, 0}, {"aC", "C", true, 0}},
         2,
         2},
        {"new body still checked",
         {{"aC", "", true, CAIRN_EMISMATCH}, {"C", "C", true, 0}},
         1,
         1},
    };
    struct dedupe_bodies set;

    make_dedupe_bodies(&set);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char path[512];
        int failures = check_failures;

        snprintf(path, sizeof(path), "%s/dedupe%zu", dir, i);
        run_dedupe_case(path, &set, cases[i].steps, 3, cases[i].messages,
                        cases[i].chunks);
        if (check_failures != failures)
            fprintf(stderr, "dedupe case: %s\n", cases[i].name);
    }
    free_dedupe_bodies(&set);
}

/* "<ts> APPLY MESSAGE (...)\r\n" of the bodies named in files. */
static void
print_message_line(struct cairn_buf *text, const struct dedupe_bodies *set,
                   int64_t ts, const char *files)
{
    cairn_buf_printf(text, "%lld APPLY MESSAGE (", (long long)ts);
    for (const char *name = files; *name; name++) {
        const struct test_body *body = &set->bodies[body_index(*name)];

        cairn_buf_printf(text, "%s%%{default %s %zu}\r\n",
                         name == files ? "" : " ",
                         set->guids[body_index(*name)], body->len);
        cairn_buf_append(text, body->data, body->len);
    }
    cairn_buf_append_str(text, ")\r\n");
}

/*
 * A log that holds bodies more than once, as backupd writes a resend:
 * reindex points each GUID at its last copy (as Cyrus's index does),
 * verify passes, a resend adds nothing, and compaction keeps one copy.
 */
static void
test_log_with_duplicates(const char *dir)
{
    struct cairn_compact_policy policy = {0, 1u << 30, 0, 1, 1900000000, 0};
    struct cairn_compact_result result;
    struct cairn_store *store = NULL;
    struct dedupe_bodies set;
    struct test_log_figures figures;
    struct cairn_buf text;
    char path[512], index[600], sql[160], chunk_id[32];

    snprintf(path, sizeof(path), "%s/duplicates", dir);
    snprintf(index, sizeof(index), "%s.index", path);
    make_dedupe_bodies(&set);
    cairn_buf_init(&text, 1 << 20);
    cairn_buf_append_str(&text, CHUNK_HEADER);
    print_message_line(&text, &set, 1700000000, "A");
    CHECK_INT(test_write_member(path, text.data, text.len), 0);
    cairn_buf_reset(&text);
    cairn_buf_append_str(&text, CHUNK_HEADER);
    print_message_line(&text, &set, 1700000100, "ABCC");
    cairn_buf_printf(&text,
                     "1700000100 APPLY MAILBOX %%(UNIQUEID dup1 MBOXNAME "
                     "user.dup LAST_UID 3 HIGHESTMODSEQ 3 RECENTUID 0 "
                     "RECENTTIME 0 LAST_APPENDDATE 0 POP3_LAST_LOGIN 0 "
                     "UIDVALIDITY 1 PARTITION default ACL \"\" OPTIONS P "
                     "RECORD (");
    for (int i = 0; i < 3; i++)
        cairn_buf_printf(&text,
                         "%s%%(UID %d MODSEQ %d LAST_UPDATED 1 FLAGS () "
                         "INTERNALDATE 1 SIZE %zu GUID %s)",
                         i ? " " : "", i + 1, i + 1, set.bodies[i].len,
                         set.guids[i]);
    cairn_buf_append_str(&text, "))\r\n");
    CHECK_INT(test_write_member(path, text.data, text.len), 0);
    cairn_buf_release(&text);
    /* no index: open rebuilds it from the log */
    CHECK_INT(cairn_store_open(path, 0, &store), 0);
    if (store == NULL)
        goto out;
    CHECK_U64(query_count(index, "message"), 3);
    snprintf(sql, sizeof(sql), "SELECT chunk_id FROM message WHERE guid = '%s'",
             set.guids[0]);
    query_text(index, sql, chunk_id, sizeof(chunk_id));
    CHECK_STR(chunk_id, "2");
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    CHECK_INT(test_read_log(path, &figures), 0);
    CHECK_U64(figures.literals, 5);
    set.reads = 0;
    CHECK_INT(append_files(store, &set, "CBA", 1700000200), 0);
    CHECK_INT(set.reads, 0);
    CHECK_INT(cairn_store_commit(store), 0);
    CHECK_U64(query_count(index, "chunk"), 2);
    CHECK_INT(cairn_store_compact(store, &policy, &result), 0);
    CHECK(result.compacted);
    CHECK_INT(test_read_log(path, &figures), 0);
    CHECK_U64(figures.literals, 3); /* one copy of each */
    CHECK_U64(query_count(index, "message"), 3);
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    cairn_store_close(store);
out:
    free_dedupe_bodies(&set);
}

/*
 * The daemon's sequence numbers: one set inside an append commits with it;
 * one set with nothing appended (a resend that stored nothing) commits on
 * its own, so a reopened store still knows it.
 */
static void
test_sequence_alone(const char *dir)
{
    static const char sub[] = "APPLY SUB %(USERID a MBOXNAME user.a.x)\r\n";
    struct cairn_store *store = NULL;
    struct test_apply apply = {NULL, 100, 0};
    char path[512];
    uint64_t sequence = 0;

    snprintf(path, sizeof(path), "%s/sequence", dir);
    CHECK_INT(cairn_store_open(path, CAIRN_STORE_CREATE, &store), 0);
    if (store == NULL)
        return;
    apply.store = store;
    CHECK_INT(test_each_apply(sub, sizeof(sub) - 1, test_apply_one, &apply), 0);
    CHECK_INT(cairn_store_set_sequence(store, 1), 0);
    CHECK_INT(cairn_store_commit(store), 0);
    CHECK_INT(cairn_store_set_sequence(store, 2), 0); /* nothing appended */
    cairn_store_close(store);
    store = NULL;
    CHECK_INT(cairn_store_open(path, 0, &store), 0);
    CHECK_INT(cairn_store_get_sequence(store, &sequence), 0);
    CHECK_U64(sequence, 2);
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    cairn_store_close(store);
}

/* "APPLY MESSAGE (%{default GUID N}\r\n<N bytes>)\r\n" of a generated
   body of size bytes; a wrong GUID when bad. */
static void
big_message(struct cairn_buf *text, size_t size, unsigned seed, bool bad,
            struct cairn_buf *body)
{
    unsigned char digest[SHA_DIGEST_LENGTH];
    char hex[41];
    unsigned x = seed;

    cairn_buf_reset(body);
    cairn_buf_reserve(body, size);
    for (size_t i = 0; i < size; i++) {
        x = x * 1103515245u + 12345u;
        body->data[i] = (char)('a' + (x >> 16) % 26);
    }
    body->len = size;
    SHA1((const unsigned char *)body->data, size, digest);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i] ^ (bad && i == 0));
    cairn_buf_reset(text);
    cairn_buf_printf(text, "APPLY MESSAGE (%%{default %s %zu}\r\n", hex, size);
    cairn_buf_append(text, body->data, size);
    cairn_buf_append_str(text, ")\r\n");
}

/*
 * Members past the writer's buffer (4 MiB) stream through zlib from the
 * start of the line that outgrew it: a failed record is undone there
 * whether it failed before or after the switch, the file stays one valid
 * member a chunk, and bodies read back equal.
 */
static void
test_big_members(const char *dir)
{
    static const char sub[] = "APPLY SUB %(USERID a MBOXNAME user.a.x)\r\n";
    struct cairn_store *store = NULL;
    struct test_apply apply;
    struct cairn_buf text, body, back;
    char path[512], guid[41];
    struct stat before, after;

    snprintf(path, sizeof(path), "%s/big", dir);
    CHECK_INT(cairn_store_open(path, CAIRN_STORE_CREATE, &store), 0);
    if (store == NULL)
        return;
    cairn_buf_init(&text, 64u << 20);
    cairn_buf_init(&body, 64u << 20);
    cairn_buf_init(&back, 64u << 20);
    apply = (struct test_apply){store, 100, 0};
    /* a record that outgrows the buffer fails: undone to its line start */
    CHECK_INT(test_each_apply(sub, sizeof(sub) - 1, test_apply_one, &apply), 0);
    big_message(&text, 5u << 20, 1, true, &body);
    CHECK_INT(test_each_apply(text.data, text.len, test_apply_one, &apply),
              CAIRN_EMISMATCH);
    CHECK_INT(test_each_apply(sub, sizeof(sub) - 1, test_apply_one, &apply), 0);
    CHECK_INT(cairn_store_commit(store), 0);
    /* streaming from the big record on; a failed record after it */
    big_message(&text, 6u << 20, 2, false, &body);
    CHECK_INT(test_each_apply(text.data, text.len, test_apply_one, &apply), 0);
    memcpy(guid, strstr(text.data, "default ") + 8, 40);
    guid[40] = '\0';
    stat(path, &before);
    big_message(&text, 1000, 3, true, &back);
    CHECK_INT(test_each_apply(text.data, text.len, test_apply_one, &apply),
              CAIRN_EMISMATCH);
    stat(path, &after);
    CHECK_INT(after.st_size, before.st_size);
    CHECK_INT(test_each_apply(sub, sizeof(sub) - 1, test_apply_one, &apply), 0);
    CHECK_INT(cairn_store_commit(store), 0);
    cairn_buf_reset(&back);
    CHECK_INT(cairn_store_read_message(store, guid, collect_body, &back), 0);
    CHECK_MEM(back.data, back.len, body.data, body.len);
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    cairn_store_close(store);
    store = NULL;
    CHECK_INT(cairn_store_open(path, 0, &store), 0);
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    cairn_store_close(store);
    cairn_buf_release(&text);
    cairn_buf_release(&body);
    cairn_buf_release(&back);
}

int
main(void)
{
    char *dir = test_temp_dir("store");

    CHECK(dir != NULL);
    if (dir == NULL)
        return check_exit("test_store");
    test_names();
    test_crc_vectors();
    test_worked_example(dir);
    test_recorded_traffic(dir);
    test_torn_tail(dir);
    test_damaged_middle(dir);
    test_lock_and_failures(dir);
    test_group_commit(dir);
    test_dedupe(dir);
    test_log_with_duplicates(dir);
    test_sequence_alone(dir);
    test_big_members(dir);
    test_remove_dir(dir);
    free(dir);
    return check_exit("test_store");
}
