/*
 * test_compact.c - compaction by policy, and the cases where Cyrus's
 * compaction goes wrong (cyrus-backups.md §6.3): deletions must survive,
 * an un-expunged message stays live, a stale temporary does not block,
 * nothing to do is success; retention drops expunged bodies only once
 * they are old enough; answers are unchanged by compaction.
 */
/* node.h first: the public header must compile on its own. */
#include "node.h"
/* (a separate block, so that sorting keeps node.h first) */
#include "check.h"
#include "node_test_util.h"

#include <sys/stat.h>

/* SHA-1 of "abc" and of "xyz". */
#define GUID_ABC "a9993e364706816aba3e25717850c26c9cd0d89d"
#define GUID_XYZ "66b27417d37e024c46526c2f6d358a754fc552f3"

static int
apply_text(struct cairn_store *store, int64_t ts, const char *text)
{
    struct test_apply apply = {store, ts, 0};
    int rc = test_each_apply(text, strlen(text), test_apply_one, &apply);

    if (rc == 0)
        rc = cairn_store_commit(store);
    return rc;
}

static char *
mailbox_line(const char *uniqueid, const char *name, const char *records)
{
    char *line = NULL;

    if (asprintf(&line,
                 "APPLY MAILBOX %%(UNIQUEID %s MBOXNAME %s LAST_UID 2"
                 " HIGHESTMODSEQ 5 RECENTUID 0 RECENTTIME 0 LAST_APPENDDATE 0"
                 " POP3_LAST_LOGIN 0 UIDVALIDITY 7 PARTITION default ACL \"\""
                 " OPTIONS P RECORD (%s))\r\n",
                 uniqueid, name, records) < 0)
        return NULL;
    return line;
}

static char *
record(int uid, const char *guid, const char *flags)
{
    char *text = NULL;

    if (asprintf(&text,
                 "%%(UID %d MODSEQ %d LAST_UPDATED 1 FLAGS (%s)"
                 " INTERNALDATE 1 SIZE 3 GUID %s)",
                 uid, uid + 1, flags, guid) < 0)
        return NULL;
    return text;
}

static int
apply_mailbox(struct cairn_store *store, int64_t ts, const char *uniqueid,
              const char *name, const char *records)
{
    char *line = mailbox_line(uniqueid, name, records);
    int rc = line ? apply_text(store, ts, line) : CAIRN_ENOMEM;

    free(line);
    return rc;
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

static int
compare_lines(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * GET USER plus FULLMAILBOX of each name, items sorted (compaction may
 * renumber rows, and sync_client matches mailboxes by name). Owned.
 */
static char *
answers(struct cairn_store *store, const char *const *names, size_t count)
{
    struct cairn_buf out, sorted;
    char *lines[256], *text = NULL, *save = NULL;
    size_t len, used = 0;

    cairn_buf_init(&out, 1 << 20);
    cairn_buf_init(&sorted, 1 << 20);
    cairn_store_get_user(store, print_item, &out);
    for (size_t i = 0; i < count; i++)
        cairn_store_get_fullmailbox(store, names[i], print_item, &out);
    for (char *line = out.data ? strtok_r(out.data, "\n", &save) : NULL;
         line && used < 256; line = strtok_r(NULL, "\n", &save))
        lines[used++] = line;
    qsort(lines, used, sizeof(lines[0]), compare_lines);
    for (size_t i = 0; i < used; i++)
        cairn_buf_printf(&sorted, "%s\n", lines[i]);
    /* common's detach leaves a never-written buffer unterminated. */
    if (cairn_buf_detach(&sorted, &text, &len) == 0 && len == 0)
        text[0] = '\0';
    cairn_buf_release(&out);
    cairn_buf_release(&sorted);
    return text;
}

static const struct cairn_compact_policy keep_forever = {0, 0,          0,
                                                         1, 1900000000, 0};
/* Coalesces everything into as few chunks as possible. */
static const struct cairn_compact_policy coalesce = {0, 1 << 20,    0,
                                                     1, 1900000000, 0};

/* Recorded traffic: compaction keeps every answer and verifies. */
static void
test_recorded(const char *dir)
{
    static const char *const sessions[] = {"01", "02", "03", "04",
                                           "05", "06", "07", "09"};
    static const char *const names[] = {"user.user001", "user.user001.Work"};
    struct cairn_store *store = NULL;
    struct cairn_compact_result result;
    char path[512];
    char *before, *after;

    snprintf(path, sizeof(path), "%s/recorded", dir);
    CHECK_INT(cairn_store_open(path, CAIRN_STORE_CREATE, &store), 0);
    if (store == NULL)
        return;
    for (size_t i = 0; i < 8; i++) {
        char file[64];

        snprintf(file, sizeof(file), "data/%s.apply", sessions[i]);
        CHECK_INT(test_apply_file(store, file, 1795668600 + (int64_t)i, NULL),
                  0);
        CHECK_INT(cairn_store_commit(store), 0);
    }
    before = answers(store, names, 2);
    /* Every chunk holds some latest state: nothing dead to drop. */
    CHECK_INT(cairn_store_compact(store, &keep_forever, &result), 0);
    CHECK(!result.compacted);
    CHECK_INT(cairn_store_compact(store, &coalesce, &result), 0);
    CHECK(result.compacted);
    CHECK_U64(result.chunks_before, 8);
    CHECK_U64(result.chunks_after, 1);
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    after = answers(store, names, 2);
    CHECK(before && after && strcmp(before, after) == 0);
    if (before && after && strcmp(before, after) != 0)
        fprintf(stderr, "before:\n%s\nafter:\n%s\n", before, after);
    CHECK(cairn_store_has_message(store,
                                  "e9a6894fc65be05aed31b2daa065cd996b9126a6"));
    /* One chunk left: a second run has nothing to do. */
    CHECK_INT(cairn_store_compact(store, &coalesce, &result), 0);
    CHECK(!result.compacted);
    free(before);
    free(after);
    cairn_store_close(store);
    /* The switched pair opens cleanly in a new process's view too. */
    CHECK_INT(cairn_store_open(path, 0, &store), 0);
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    cairn_store_close(store);
}

/* UNMAILBOX, RENAME, UNSIEVE must survive compaction (§6.3-7). */
static void
test_deletions_survive(const char *dir)
{
    static const char message[] =
        "APPLY MESSAGE (%{default " GUID_ABC " 3}\r\nabc)\r\n";
    static const char sieve[] =
        "APPLY SIEVE %(USERID a FILENAME s.script LAST_UPDATE 5 CONTENT"
        " {4+}\r\nkeep)\r\n";
    static const char *const names[] = {"user.a", "user.a.Old", "user.a.New"};
    struct cairn_store *store = NULL;
    struct cairn_compact_result result;
    char path[512];
    char *rec = record(1, GUID_ABC, "");
    char *before, *after;

    snprintf(path, sizeof(path), "%s/deletions", dir);
    CHECK_INT(cairn_store_open(path, CAIRN_STORE_CREATE, &store), 0);
    if (store == NULL || rec == NULL)
        return;
    CHECK_INT(apply_text(store, 100, message), 0);
    CHECK_INT(apply_mailbox(store, 101, "u1", "user.a", rec), 0);
    CHECK_INT(apply_mailbox(store, 102, "u2", "user.a.Gone", rec), 0);
    CHECK_INT(apply_mailbox(store, 103, "u3", "user.a.Old", rec), 0);
    CHECK_INT(apply_text(store, 104, sieve), 0);
    CHECK_INT(apply_text(store, 110, "APPLY UNMAILBOX user.a.Gone\r\n"), 0);
    CHECK_INT(apply_text(store, 111,
                         "APPLY RENAME %(OLDMBOXNAME user.a.Old NEWMBOXNAME"
                         " user.a.New PARTITION default UIDVALIDITY 7)\r\n"),
              0);
    /* sync_client follows a RENAME with the mailbox's new state. */
    CHECK_INT(apply_mailbox(store, 111, "u3", "user.a.New", rec), 0);
    CHECK_INT(apply_text(store, 112,
                         "APPLY UNSIEVE %(USERID a FILENAME s.script)\r\n"),
              0);
    before = answers(store, names, 3);
    CHECK(before && strstr(before, "user.a.Gone") == NULL);
    CHECK(before && strstr(before, "SIEVE") == NULL);
    CHECK_INT(cairn_store_compact(store, &coalesce, &result), 0);
    CHECK(result.compacted);
    {
        char error[256] = "";

        CHECK_INT(
            cairn_store_verify(store, CAIRN_VERIFY_FULL, error, sizeof(error)),
            0);
        if (error[0])
            fprintf(stderr, "verify: %s\n", error);
    }
    after = answers(store, names, 3);
    CHECK(before && after && strcmp(before, after) == 0);
    CHECK(after && strstr(after, "user.a.Gone") == NULL);
    CHECK(after && strstr(after, "MBOXNAME user.a.New") != NULL);
    CHECK(after && strstr(after, "SIEVE") == NULL);
    free(before);
    free(after);
    free(rec);
    cairn_store_close(store);
}

/* Expunged bodies go once retention passes; un-expunged ones stay. */
static void
test_retention(const char *dir)
{
    static const char messages[] =
        "APPLY MESSAGE (%{default " GUID_ABC " 3}\r\nabc %{default " GUID_XYZ
        " 3}\r\nxyz)\r\n";
    struct cairn_store *store = NULL;
    struct cairn_compact_result result;
    struct cairn_compact_policy policy = {86400, 0, 0, 1, 0, 0};
    char path[512], stale[600], records[512];
    char *live_abc = record(1, GUID_ABC, "");
    char *gone_xyz = record(2, GUID_XYZ, "\\Expunged");
    char *back_abc = record(1, GUID_ABC, "\\Seen");

    snprintf(path, sizeof(path), "%s/retention", dir);
    CHECK_INT(cairn_store_open(path, CAIRN_STORE_CREATE, &store), 0);
    if (store == NULL || !live_abc || !gone_xyz || !back_abc)
        return;
    CHECK_INT(apply_text(store, 1000, messages), 0);
    snprintf(records, sizeof(records), "%s %s", live_abc, gone_xyz);
    CHECK_INT(apply_mailbox(store, 1001, "u1", "user.a", records), 0);
    /* abc expunged, then back (un-expunged) in a later state. */
    free(live_abc);
    live_abc = record(1, GUID_ABC, "\\Expunged");
    CHECK_INT(apply_mailbox(store, 1002, "u1", "user.a", live_abc), 0);
    CHECK_INT(apply_mailbox(store, 1003, "u1", "user.a", back_abc), 0);
    /* A stale temporary from a crashed compaction must not block. */
    snprintf(stale, sizeof(stale), "%s.compact", path);
    fclose(fopen(stale, "w"));
    /* Within retention: both bodies kept. */
    policy.now = 1000 + 3600;
    CHECK_INT(cairn_store_compact(store, &policy, &result), 0);
    CHECK(cairn_store_has_message(store, GUID_XYZ));
    CHECK(cairn_store_has_message(store, GUID_ABC));
    /* Past retention: the expunged body goes, the un-expunged one stays. */
    policy.now = 1000 + 2 * 86400;
    CHECK_INT(cairn_store_compact(store, &policy, &result), 0);
    CHECK(result.compacted);
    CHECK(!cairn_store_has_message(store, GUID_XYZ));
    CHECK(cairn_store_has_message(store, GUID_ABC));
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    free(live_abc);
    free(gone_xyz);
    free(back_abc);
    cairn_store_close(store);
}

/* Small chunks coalesce under min_chunk; nothing to do is success. */
static void
test_sizes(const char *dir)
{
    struct cairn_store *store = NULL;
    struct cairn_compact_result result;
    struct cairn_compact_policy policy = {0, 4096, 0, 1, 1900000000, 0};
    char path[512];

    snprintf(path, sizeof(path), "%s/sizes", dir);
    CHECK_INT(cairn_store_open(path, CAIRN_STORE_CREATE, &store), 0);
    if (store == NULL)
        return;
    CHECK_INT(cairn_store_compact(store, &policy, &result), 0);
    CHECK(!result.compacted);
    for (int i = 0; i < 5; i++) {
        char line[128];

        snprintf(line, sizeof(line),
                 "APPLY SUB %%(USERID a MBOXNAME user.a.f%d)\r\n", i);
        CHECK_INT(apply_text(store, 100 + i, line), 0);
    }
    CHECK_INT(cairn_store_compact(store, &policy, &result), 0);
    CHECK(result.compacted);
    CHECK_U64(result.chunks_before, 5);
    CHECK_U64(result.chunks_after, 1);
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    cairn_store_close(store);
}

/*
 * work_percent (cluster.conf's work_threshold): one small chunk that would
 * be merged into a big one is not worth rewriting the log for at 50 %,
 * and is at 1 %.
 */
static void
test_work_percent(const char *dir)
{
    struct cairn_store *store = NULL;
    struct cairn_compact_result result;
    struct cairn_compact_policy policy = {0, 1024, 0, 1, 1900000000, 50};
    struct cairn_buf big;
    char path[512];

    snprintf(path, sizeof(path), "%s/percent", dir);
    CHECK_INT(cairn_store_open(path, CAIRN_STORE_CREATE, &store), 0);
    if (store == NULL)
        return;
    CHECK_INT(apply_text(store, 100,
                         "APPLY SUB %(USERID a MBOXNAME user.a.small)\r\n"),
              0);
    /*
     * One commit of many lines: a chunk well past min_chunk even when
     * compressed whole (names that do not repeat).
     */
    cairn_buf_init(&big, 1 << 20);
    for (unsigned i = 0, x = 1; i < 60; i++) {
        cairn_buf_printf(&big, "APPLY SUB %%(USERID a MBOXNAME user.a.f%u-", i);
        for (int part = 0; part < 6; part++)
            cairn_buf_printf(&big, "%08x", x = x * 1103515245u + 12345u);
        cairn_buf_append_str(&big, ")\r\n");
    }
    CHECK_INT(apply_text(store, 101, big.data), 0);
    cairn_buf_release(&big);
    CHECK_INT(cairn_store_compact(store, &policy, &result), 0);
    CHECK(!result.compacted);
    CHECK_U64(result.chunks_after, 2);
    CHECK(result.bytes_before > 1024); /* the small chunk is a few % */
    policy.work_percent = 1;
    CHECK_INT(cairn_store_compact(store, &policy, &result), 0);
    CHECK(result.compacted);
    CHECK_U64(result.chunks_after, 1);
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    cairn_store_close(store);
}

static int
count_report(void *ctx, const char *userid, int rc,
             const struct cairn_compact_result *result)
{
    int *counts = ctx;

    counts[rc == 0 ? 0 : 1]++;
    return 0;
}

/* UNUSER: everything becomes deleted data, gone once retention passes. */
static void
test_unuser(const char *dir)
{
    static const char message[] =
        "APPLY MESSAGE (%{default " GUID_ABC " 3}\r\nabc)\r\n";
    static const char sub[] = "APPLY SUB %(USERID a MBOXNAME user.a)\r\n";
    struct cairn_catalog *catalog = NULL;
    struct cairn_store *store = NULL, *other = NULL;
    struct cairn_compact_policy policy = {86400, 0, 0, 1, 5000, 0};
    char catalog_path[512];
    char *rec = record(1, GUID_ABC, "");
    char *left;
    int counts[2] = {0, 0};

    snprintf(catalog_path, sizeof(catalog_path), "%s/catalog.db", dir);
    CHECK_INT(cairn_catalog_open(catalog_path, &catalog), 0);
    if (catalog == NULL || rec == NULL)
        return;
    CHECK_INT(
        cairn_store_open_user(catalog, dir, "a", CAIRN_STORE_CREATE, &store),
        0);
    CHECK_INT(
        cairn_store_open_user(catalog, dir, "b", CAIRN_STORE_CREATE, &other),
        0);
    if (store == NULL || other == NULL)
        return;
    CHECK_INT(apply_text(store, 1000, message), 0);
    CHECK_INT(apply_mailbox(store, 1001, "u1", "user.a", rec), 0);
    CHECK_INT(apply_text(store, 1002, sub), 0);
    CHECK_INT(cairn_store_unuser(store, "a", 2000), 0);
    CHECK_INT(cairn_store_commit(store), 0);
    left = answers(store, NULL, 0);
    CHECK_STR(left, "");
    free(left);
    cairn_store_close(store);
    /* b is busy (locked by us): skipped, not waited for. */
    policy.now = 2000 + 2 * 86400;
    CHECK_INT(cairn_node_compact_all(catalog, &policy, count_report, counts),
              0);
    CHECK_INT(counts[0], 1);
    CHECK_INT(counts[1], 1);
    cairn_store_close(other);
    CHECK_INT(cairn_store_open_user(catalog, dir, "a", 0, &store), 0);
    if (store) {
        CHECK(!cairn_store_has_message(store, GUID_ABC));
        CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
        cairn_store_close(store);
    }
    free(rec);
    cairn_catalog_free(catalog);
}

/*
 * One body under two UIDs of a folder (delivered twice), then one UID
 * expunged: the index's one row per (mailbox, GUID) must stay with the
 * live UID, and compaction past retention must keep that body.
 */
static void
test_twin_bodies(const char *dir)
{
    static const char message[] =
        "APPLY MESSAGE (%{default " GUID_ABC " 3}\r\nabc)\r\n";
    static const char *const names[] = {"user.a"};
    struct cairn_store *store = NULL;
    struct cairn_compact_result result;
    struct cairn_compact_policy policy = {60, 1 << 20, 0, 1, 100000, 0};
    char *first = record(1, GUID_ABC, ""), *second = record(2, GUID_ABC, "");
    char *expunged = record(1, GUID_ABC, "\\Deleted \\Expunged");
    char *both = NULL, *state = NULL, path[512];

    snprintf(path, sizeof(path), "%s/twins", dir);
    CHECK_INT(cairn_store_open(path, CAIRN_STORE_CREATE, &store), 0);
    if (store == NULL || first == NULL || second == NULL || expunged == NULL ||
        asprintf(&both, "%s %s", first, second) < 0)
        goto out;
    CHECK_INT(apply_text(store, 1000, message), 0);
    CHECK_INT(apply_mailbox(store, 1001, "u1", "user.a", both), 0);
    CHECK_INT(apply_mailbox(store, 1002, "u1", "user.a", expunged), 0);
    state = answers(store, names, 1);
    CHECK(state && strstr(state, "UID 2 ") != NULL);
    CHECK(state && strstr(state, "Expunged") == NULL);
    CHECK_INT(cairn_store_compact(store, &policy, &result), 0);
    CHECK(result.compacted);
    CHECK(cairn_store_has_message(store, GUID_ABC));
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0), 0);
    free(state);
    state = answers(store, names, 1);
    CHECK(state && strstr(state, "UID 2 ") != NULL);
out:
    cairn_store_close(store);
    free(first);
    free(second);
    free(expunged);
    free(both);
    free(state);
}

/*
 * A SIEVE line is stored with a synchronising literal ("{N}"): Cyrus's
 * backup reader stops a chunk at "{N+}". A file that has one before a
 * MAILBOX line in the same chunk (as backupd writes them, merged by a
 * compaction) fails cairn's verify as it fails Cyrus's.
 */
static void
test_stored_literals(const char *dir)
{
    static const char sieve[] = "APPLY SIEVE %(USERID a FILENAME s LAST_UPDATE"
                                " 5 CONTENT {7+}\r\nkeep;\r\n)\r\n";
    static const char nonsync[] =
        "# cyrus backup: chunk start\r\n"
        "5 APPLY SIEVE %(USERID a FILENAME s LAST_UPDATE 5 CONTENT"
        " {7+}\r\nkeep;\r\n)\r\n"
        "6 APPLY MAILBOX %(UNIQUEID u2 MBOXNAME user.a LAST_UID 0"
        " HIGHESTMODSEQ 1 RECENTUID 0 RECENTTIME 0 LAST_APPENDDATE 0"
        " POP3_LAST_LOGIN 0 UIDVALIDITY 7 PARTITION default ACL \"\""
        " OPTIONS P RECORD ())\r\n";
    struct cairn_store *store = NULL;
    struct test_log_figures figures;
    char path[512], *text = NULL;
    size_t len = 0;
    gzFile in;

    snprintf(path, sizeof(path), "%s/literal", dir);
    CHECK_INT(cairn_store_open(path, CAIRN_STORE_CREATE, &store), 0);
    if (store == NULL)
        return;
    CHECK_INT(apply_text(store, 5, sieve), 0);
    cairn_store_close(store);
    CHECK_INT(test_read_log(path, &figures), 0);
    text = calloc(1, 4096);
    if (text && (in = gzopen(path, "rb")) != NULL) {
        int got = gzread(in, text, 4095);

        len = got > 0 ? (size_t)got : 0;
        gzclose(in);
    }
    CHECK(text && memmem(text, len, "CONTENT {7}\r\nkeep;", 17) != NULL);
    free(text);

    snprintf(path, sizeof(path), "%s/nonsync", dir);
    CHECK_INT(test_write_member(path, nonsync, strlen(nonsync)), 0);
    CHECK_INT(cairn_store_open(path, CAIRN_STORE_CREATE, &store), 0);
    if (store == NULL)
        return;
    CHECK_INT(cairn_store_verify(store, CAIRN_VERIFY_FULL, NULL, 0),
              CAIRN_ECORRUPT);
    cairn_store_close(store);
}

int
main(void)
{
    char *dir = test_temp_dir("compact");

    CHECK(dir != NULL);
    if (dir == NULL)
        return check_exit("test_compact");
    test_recorded(dir);
    test_deletions_survive(dir);
    test_retention(dir);
    test_sizes(dir);
    test_work_percent(dir);
    test_unuser(dir);
    test_twin_bodies(dir);
    test_stored_literals(dir);
    test_remove_dir(dir);
    free(dir);
    return check_exit("test_compact");
}
