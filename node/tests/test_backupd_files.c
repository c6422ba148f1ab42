/*
 * test_backupd_files.c - files that Cyrus 3.6's tools accept and that
 * cairn's reindex and verify must accept too (issue 18): the empty chunk
 * backupd writes for a sync pass that changed nothing, chunks holding only
 * lines Cyrus's indexer ignores (QUOTA, ACTIVATE_SIEVE), a SIEVE script
 * in a literal that Cyrus's re-serialising reindex would print otherwise,
 * a record without FLAGS (Cyrus's index: flags ''), a chunk ending in an
 * unfinished line, and a gzip member with no content at all. Each file is
 * written member by member as backupd's zlib would, then reindexed and
 * fully verified; the rows are checked against what backupd's own index
 * holds for such a file.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "check.h"
#include "node_test_util.h"

#include <openssl/sha.h>

#define HEADER "# cyrus backup: chunk start\r\n"
#define HEADER_LEN 29
/* SHA-1 of the header line alone (cyrus-backups.md §2.6) */
#define EMPTY_SHA1 "2fa91b5b02b66d45cff7d7e968609bcb1142f544"
#define ABC_GUID "a9993e364706816aba3e25717850c26c9cd0d89d" /* "abc" */

static const char message_line[] =
    "1700000000 APPLY MESSAGE (%{default " ABC_GUID " 3}\r\nabc)\r\n";
/* A record with no FLAGS key: Cyrus's indexer stores flags ''. */
static const char mailbox_line[] =
    "1700000000 APPLY MAILBOX %(UNIQUEID u1 MBOXNAME user.a SYNC_CRC 0"
    " SYNC_CRC_ANNOT 0 LAST_UID 1 HIGHESTMODSEQ 3 RECENTUID 0 RECENTTIME 0"
    " LAST_APPENDDATE 0 POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY 7"
    " PARTITION default ACL \"a\tlrswipkxtecdan\t\" OPTIONS P RECORD"
    " (%(UID 1 MODSEQ 3 LAST_UPDATED 1700000000 INTERNALDATE 1700000000"
    " SIZE 3 GUID " ABC_GUID ")))\r\n";
static const char sub_line[] =
    "1700000001 APPLY SUB %(USERID a MBOXNAME user.a)\r\n";
/* "keep;" is an atom: Cyrus re-prints it without the literal. */
static const char sieve_line[] =
    "1700000003 APPLY SIEVE %(USERID a FILENAME s LAST_UPDATE 1700000003"
    " CONTENT {5+}\r\nkeep;)\r\n";
static const char quota_line[] =
    "1700000002 APPLY QUOTA %(ROOT user.a STORAGE 1000)\r\n";
static const char activate_line[] =
    "1700000003 APPLY ACTIVATE_SIEVE %(USERID a FILENAME s)\r\n";
static const char partial_line[] = "1700000004 APPLY SUB %(USERID a MBOXNA";

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

static uint64_t
file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Appends a member holding the header and then the lines given. */
static uint64_t
add_member(const char *path, const char *const *lines, size_t count)
{
    struct cairn_buf text;
    uint64_t offset = file_size(path);

    cairn_buf_init(&text, 1 << 20);
    cairn_buf_append_str(&text, HEADER);
    for (size_t i = 0; i < count; i++)
        cairn_buf_append_str(&text, lines[i]);
    CHECK_INT(test_write_member(path, text.data, text.len), 0);
    cairn_buf_release(&text);
    return offset;
}

struct capture {
    struct cairn_buf text;
};

static int
capture_item(void *ctx, const struct cairn_dlist *item)
{
    struct capture *capture = ctx;

    cairn_buf_append_str(&capture->text, "* ");
    return cairn_dlist_print(item, true, &capture->text, NULL);
}

/*
 * The file of a backup that went through passes that changed nothing
 * (backupd's empty chunks, the first one first in the file), QUOTA and
 * ACTIVATE_SIEVE lines, a sieve literal and a record without FLAGS.
 */
static void
test_empty_and_ignored_chunks(const char *dir)
{
    const char *first[] = {message_line, mailbox_line, sub_line};
    const char *quota[] = {quota_line};
    const char *sieve[] = {sieve_line, activate_line};
    struct cairn_reindex_result result;
    struct cairn_store *store = NULL;
    struct capture capture;
    char path[512], index[600], text[256], sql[256], *content = NULL;
    uint64_t empty0, lines, empty1, quota_at, sieve_at, empty2;
    size_t len = 0;

    snprintf(path, sizeof(path), "%s/emptychunks", dir);
    snprintf(index, sizeof(index), "%s.index", path);
    empty0 = add_member(path, NULL, 0);
    lines = add_member(path, first, 3);
    empty1 = add_member(path, NULL, 0);
    quota_at = add_member(path, quota, 1);
    sieve_at = add_member(path, sieve, 2);
    empty2 = add_member(path, NULL, 0);
    CHECK(empty0 == 0 && lines > empty0 && empty2 > sieve_at);

    CHECK_INT(cairn_store_open(path, 0, &store), 0);
    if (store == NULL)
        return;
    CHECK_INT(cairn_store_rebuild_index(store, &result), 0);
    CHECK_U64(result.chunks, 6); /* every member is a chunk, as backupd's */
    CHECK_U64(result.line_chunks, 3);
    CHECK_U64(result.empty_members, 0);
    CHECK_U64(result.damaged_members, 0);
    CHECK_U64(result.partial_lines, 0);
    CHECK_U64(result.cut_bytes, 0);
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, text, sizeof(text)),
              0);
    if (text[0])
        fprintf(stderr, "verify: %s\n", text);

    /* backupd's rows for the empty chunks: the header alone */
    query_text(index,
               "SELECT group_concat(offset || ':' || length || ':' ||"
               " data_sha1, ' ') FROM (SELECT * FROM chunk WHERE length = 29"
               " ORDER BY id)",
               text, sizeof(text));
    {
        char expected[256];

        snprintf(expected, sizeof(expected),
                 "%llu:29:" EMPTY_SHA1 " %llu:29:" EMPTY_SHA1
                 " %llu:29:" EMPTY_SHA1,
                 (unsigned long long)empty0, (unsigned long long)empty1,
                 (unsigned long long)empty2);
        CHECK_STR(text, expected);
    }
    /* an empty chunk takes the last line time before it (none: 0) */
    query_text(index,
               "SELECT group_concat(ts_start || '-' || ts_end, ' ') FROM"
               " (SELECT * FROM chunk ORDER BY id)",
               text, sizeof(text));
    CHECK_STR(text, "0-0 1700000000-1700000001 1700000001-1700000001 "
                    "1700000002-1700000002 1700000003-1700000003 "
                    "1700000003-1700000003");
    /* the QUOTA-only chunk is a chunk; nothing of it is indexed */
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM chunk WHERE offset = %llu",
             (unsigned long long)quota_at);
    query_text(index, sql, text, sizeof(text));
    CHECK_STR(text, "1");

    /* FLAGS absent: '' in the index (as Cyrus's), FLAGS () when asked */
    query_text(index, "SELECT quote(flags) FROM mailbox_message", text,
               sizeof(text));
    CHECK_STR(text, "''");
    cairn_buf_init(&capture.text, 1 << 20);
    CHECK_INT(
        cairn_store_get_fullmailbox(store, "user.a", capture_item, &capture),
        0);
    CHECK(capture.text.data &&
          strstr(capture.text.data, "GUID " ABC_GUID) != NULL &&
          strstr(capture.text.data, "FLAGS ()") != NULL);
    cairn_buf_release(&capture.text);

    /* the sieve literal: the offset of its line as written, the script
     * read back exactly */
    query_text(index, "SELECT offset || ':' || guid FROM sieve", text,
               sizeof(text));
    {
        unsigned char digest[20];
        char hex[41], expected[128];

        SHA1((const unsigned char *)"keep;", 5, digest);
        for (int i = 0; i < 20; i++)
            snprintf(hex + 2 * i, 3, "%02x", digest[i]);
        snprintf(expected, sizeof(expected), "%d:%s", HEADER_LEN, hex);
        CHECK_STR(text, expected);
    }
    CHECK_INT(cairn_store_read_sieve(store, "s", &content, &len), 0);
    CHECK_MEM(content, len, "keep;", 5);
    free(content);
    CHECK(cairn_store_has_message(store, ABC_GUID));

    /* a later write goes after the last empty chunk, and verifies */
    {
        static const char unsub[] =
            "APPLY UNSUB %(USERID a MBOXNAME user.a)\r\n";
        struct test_apply apply = {store, 1700000010, 0};

        CHECK_INT(
            test_each_apply(unsub, sizeof(unsub) - 1, test_apply_one, &apply),
            0);
        CHECK_INT(cairn_store_commit(store), 0);
        CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
        query_text(index, "SELECT count(*) FROM chunk", text, sizeof(text));
        CHECK_STR(text, "7");
    }
    cairn_store_close(store);
}

/*
 * A chunk ending in an unfinished line (Cyrus's reader stops at EOF and
 * ignores it) and a member with no content at all (backupd's zlib may
 * write one at close; it indexes nothing of it).
 */
static void
test_partial_line_and_empty_member(const char *dir)
{
    const char *with_partial[] = {sub_line, partial_line};
    const char *after[] = {quota_line};
    struct cairn_reindex_result result;
    struct cairn_store *store = NULL;
    char path[512], index[600], text[256], sql[256], error[256];
    uint64_t partial_at, empty_at, after_at;

    snprintf(path, sizeof(path), "%s/partial", dir);
    snprintf(index, sizeof(index), "%s.index", path);
    partial_at = add_member(path, with_partial, 2);
    empty_at = file_size(path);
    CHECK_INT(test_write_member(path, "", 0), 0);
    after_at = add_member(path, after, 1);
    CHECK(after_at > empty_at);

    CHECK_INT(cairn_store_open(path, 0, &store), 0);
    if (store == NULL)
        return;
    CHECK_INT(cairn_store_rebuild_index(store, &result), 0);
    CHECK_U64(result.chunks, 2);
    CHECK_U64(result.partial_lines, 1);
    CHECK_U64(result.first_partial_chunk, partial_at);
    CHECK_U64(result.first_partial_line, HEADER_LEN + strlen(sub_line));
    CHECK_U64(result.empty_members, 1);
    CHECK_U64(result.first_empty, empty_at);
    CHECK_U64(result.damaged_members, 0);
    CHECK_INT(
        cairn_store_verify(store, CAIRN_VERIFY_FULL, error, sizeof(error)), 0);
    /* the row covers every byte of the member, the unfinished line too */
    snprintf(sql, sizeof(sql), "SELECT length FROM chunk WHERE offset = %llu",
             (unsigned long long)partial_at);
    query_text(index, sql, text, sizeof(text));
    {
        char expected[32];

        snprintf(expected, sizeof(expected), "%zu",
                 HEADER_LEN + strlen(sub_line) + strlen(partial_line));
        CHECK_STR(text, expected);
    }
    query_text(index, "SELECT count(*) FROM subscription", text, sizeof(text));
    CHECK_STR(text, "1");
    snprintf(sql, sizeof(sql),
             "SELECT file_sha1 IS NOT NULL FROM chunk WHERE offset = %llu",
             (unsigned long long)after_at);
    query_text(index, sql, text, sizeof(text));
    CHECK_STR(text, "1");
    cairn_store_close(store);
}

int
main(void)
{
    char *dir = test_temp_dir("backupd-files");

    CHECK(dir != NULL);
    if (dir == NULL)
        return check_exit("test_backupd_files");
    test_empty_and_ignored_chunks(dir);
    test_partial_line_and_empty_member(dir);
    test_remove_dir(dir);
    free(dir);
    return check_exit("test_backupd_files");
}
