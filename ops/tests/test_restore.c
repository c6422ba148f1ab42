/*
 * test_restore.c - restore's plan and session without a real Cyrus: plans
 * built from real backupd files (node/tests/data/backupd, copied to a
 * temp dir first: opening a store may write its index) and from a
 * scripted source whose records come out of UID order; then a whole run
 * against a scripted sync_server on loopback (banner, SASL PLAIN,
 * COMPRESS, RESERVE/MISSING, bodies checked against their GUIDs, block
 * sizes, EXIT).
 */
#include "check.h"
#include "restore.h"
#include "restore_test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static char temp_dir[] = "/tmp/cairn-test-restore-XXXXXX";

/* A copy of the committed backupd files of user, opened as a source. */
static struct cairn_restore_source *
open_testdata(const char *user)
{
    struct cairn_restore_source *source = NULL;
    char from[512], to[512];

    snprintf(from, sizeof(from), "%s/%s", TESTDATA, user);
    snprintf(to, sizeof(to), "%s/%s", temp_dir, user);
    copy_file(from, to);
    snprintf(from, sizeof(from), "%s/%s.index", TESTDATA, user);
    snprintf(to, sizeof(to), "%s/%s.index", temp_dir, user);
    copy_file(from, to);
    snprintf(to, sizeof(to), "%s/%s", temp_dir, user);
    CHECK_INT(cairn_restore_source_open_file(to, user, &source), 0);
    return source;
}

static const char *
atom(const struct cairn_dlist *kvlist, const char *key)
{
    const char *value = NULL;

    return cairn_dlist_get_atom(kvlist, key, &value) ? value : "(missing)";
}

static const char *
mailbox_name(const struct cairn_restore_plan *plan, size_t i)
{
    return i < plan->mailbox_count ? atom(plan->mailboxes[i], "MBOXNAME")
                                   : "(none)";
}

/* Whether every mailbox's records ascend by UID; counts them. */
static bool
records_ascend(const struct cairn_restore_plan *plan, size_t *count)
{
    *count = 0;
    for (size_t i = 0; i < plan->mailbox_count; i++) {
        const struct cairn_dlist *records = NULL;
        uint32_t last = 0, uid;

        if (!cairn_dlist_get_list(plan->mailboxes[i], "RECORD", &records))
            return false;
        for (const struct cairn_dlist *r = cairn_dlist_first(records); r;
             r = cairn_dlist_next(r), (*count)++) {
            if (!cairn_dlist_get_num32(r, "UID", &uid) || uid <= last)
                return false;
            last = uid;
        }
    }
    return true;
}

static void
sha1_hex(const void *data, size_t len, char hex[41])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;

    EVP_Digest(data, len, digest, &digest_len, EVP_sha1(), NULL);
    for (unsigned i = 0; i < digest_len && i < 20; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}

/* --- plans from real backupd files ------------------------------------- */

static void
test_plan_alice(void)
{
    struct cairn_restore_source *source = open_testdata("alice");
    struct cairn_restore_options options;
    struct cairn_restore_plan *plan = NULL;
    struct cairn_dlist *reserve = NULL;
    struct cairn_buf printed;
    size_t records = 0;

    cairn_restore_options_default(&options);
    if (source == NULL)
        return;
    CHECK_INT(cairn_restore_plan_build(source, &options, &plan), 0);
    if (plan == NULL)
        goto out;
    /* manifest.json: INBOX uids 1-6 (4 expunged), Archive 1, Work 1 */
    CHECK_INT(plan->mailbox_count, 3);
    CHECK_STR(mailbox_name(plan, 0), "user.alice");
    CHECK_STR(mailbox_name(plan, 1), "user.alice.Archive");
    CHECK_STR(mailbox_name(plan, 2), "user.alice.Work");
    CHECK_STR(atom(plan->mailboxes[0], "UNIQUEID"), "sfi6lmmq9ahy2rhg29ae2csz");
    CHECK(records_ascend(plan, &records));
    CHECK_INT(records, 8);
    CHECK_U64(plan->record_count, 8);
    CHECK_INT(plan->partition_count, 1);
    CHECK_STR(plan->partitions[0].name, "default");
    CHECK_INT(plan->partitions[0].guid_count, 6); /* copies share GUIDs */
    CHECK_U64(plan->message_count, 6);
    /* 3 subscriptions (INBOX, Work, Archive) and the sieve script */
    CHECK_INT(plan->meta_count, 4);
    for (size_t i = 0; i < plan->meta_count; i++) {
        const char *kind = cairn_dlist_name(plan->meta[i]);

        CHECK_STR(atom(plan->meta[i], "USERID"), "alice");
        if (strcmp(kind, "SIEVE") == 0) {
            const char *content = NULL;
            size_t len = 0;

            CHECK(
                cairn_dlist_get_map(plan->meta[i], "CONTENT", &content, &len));
            CHECK(content != NULL && strncmp(content, "require", 7) == 0);
            CHECK_STR(atom(plan->meta[i], "FILENAME"), "cairn.script");
        } else {
            CHECK_STR(kind, "SUB");
        }
    }
    /* RESERVE names every mailbox restored and every GUID once */
    CHECK_INT(cairn_restore_reserve_request(plan, 0, 0, 6, &reserve), 0);
    cairn_buf_init(&printed, 1 << 20);
    CHECK_INT(cairn_dlist_print(reserve, true, &printed, NULL), 0);
    const char *prefix = "RESERVE %(PARTITION default MBOXNAME (user.alice "
                         "user.alice.Archive user.alice.Work) GUID (";

    CHECK(strncmp(printed.data, prefix, strlen(prefix)) == 0);
    /* 6 GUIDs of 40 digits, 5 blanks between them, "))" */
    CHECK_INT(printed.len, strlen(prefix) + 6 * 40 + 5 + 2);
    cairn_dlist_free(reserve);
    CHECK_INT(cairn_restore_reserve_request(plan, 0, 4, 3, &reserve),
              CAIRN_EINVAL);
    cairn_buf_release(&printed);
    cairn_dlist_free(reserve);
out:
    cairn_restore_plan_free(plan);
    cairn_restore_source_free(source);
}

/* Bodies streamed through the body writer are the stored messages. */
static void
test_message_bodies(void)
{
    struct cairn_restore_source *source = open_testdata("alice");
    struct cairn_restore_options options;
    struct cairn_restore_plan *plan = NULL;
    struct cairn_dlist *request = NULL;
    struct cairn_restore_body_context body = {NULL, source, 0, "", 0};
    const struct cairn_dlist_body_writer writer = {cairn_restore_write_body,
                                                   &body};
    struct cairn_buf printed;
    const char *at;
    int bodies = 0;

    cairn_restore_options_default(&options);
    cairn_buf_init(&printed, 1 << 20);
    if (source == NULL || cairn_restore_plan_build(source, &options, &plan) < 0)
        goto out;
    CHECK_INT(cairn_restore_message_request(
                  plan, 0, (const char *const *)plan->partitions[0].guids,
                  plan->partitions[0].guid_count, &request),
              0);
    CHECK_INT(cairn_dlist_print(request, true, &printed, &writer), 0);
    CHECK_U64(body.bytes, plan->message_bytes);
    /* each %{default GUID SIZE}\r\n is followed by a body with that SHA-1 */
    for (at = strstr(printed.data, "%{"); at != NULL;
         at = strstr(at + 1, "%{")) {
        char guid[41] = "", hex[41] = "";
        uint64_t size = 0;
        const char *start;

        CHECK(sscanf(at, "%%{default %40s %lu}", guid, &size) == 2);
        start = strstr(at, "}\r\n") + 3;
        sha1_hex(start, size, hex);
        CHECK_STR(hex, guid);
        bodies++;
    }
    CHECK_INT(bodies, 6);
    const char *unknown = "0000000000000000000000000000000000000000";
    cairn_dlist_free(request);
    request = NULL;
    CHECK_INT(cairn_restore_message_request(plan, 0, &unknown, 1, &request),
              CAIRN_ENOENT);
out:
    cairn_buf_release(&printed);
    cairn_dlist_free(request);
    cairn_restore_plan_free(plan);
    cairn_restore_source_free(source);
}

struct collected {
    struct cairn_buf bytes;
};

static int
collect(void *ctx, const void *data, size_t len)
{
    return cairn_buf_append(&((struct collected *)ctx)->bytes, data, len);
}

/*
 * Bodies read in file order (one pass, later bodies of a line served from
 * what the parser already passed), in reverse, and twice over: each is
 * the body its GUID names.
 */
static void
test_body_order(void)
{
    struct cairn_restore_source *source = open_testdata("alice");
    struct cairn_restore_options options;
    struct cairn_restore_plan *plan = NULL;
    char *guids[16], hex[41];
    size_t count = 0;

    cairn_restore_options_default(&options);
    if (source == NULL ||
        cairn_restore_plan_build(source, &options, &plan) < 0) {
        CHECK(false);
        goto out;
    }
    count = plan->partitions[0].guid_count;
    for (size_t i = 0; i < count && i < 8; i++)
        guids[i] = guids[2 * count - 1 - i] = plan->partitions[0].guids[i];
    CHECK_INT(source->ops->order(source->ctx, guids, count), 0);
    for (size_t i = 0; i < count; i++) /* then the same, backwards */
        guids[2 * count - 1 - i] = guids[i];
    for (size_t i = 0; i < 2 * count; i++) {
        struct collected got;

        cairn_buf_init(&got.bytes, 1 << 20);
        CHECK_INT(source->ops->message(source->ctx, guids[i], collect, &got),
                  0);
        sha1_hex(got.bytes.data, got.bytes.len, hex);
        CHECK_STR(hex, guids[i]);
        cairn_buf_release(&got.bytes);
    }
    const char *unknown = "0123456789012345678901234567890123456789";
    struct collected none;
    cairn_buf_init(&none.bytes, 16);
    CHECK_INT(source->ops->message(source->ctx, unknown, collect, &none),
              CAIRN_ENOENT);
    cairn_buf_release(&none.bytes);
out:
    cairn_restore_plan_free(plan);
    cairn_restore_source_free(source);
}

/* Options against bob's backup (a DELETED.* mailbox) and alice's. */
static void
test_plan_options(void)
{
    static const struct {
        const char *user;
        const char *mailbox; /* --mailbox, or NULL */
        const char *into;    /* --into */
        bool new_identity, include_deleted, keep_prefix, skip_expunged;
        enum cairn_restore_mode mode;
        int rc;
        size_t mailboxes;
        const char *first, *last; /* target names */
        uint64_t records;
        size_t meta;
    } cases[] = {
        {"bob", NULL, NULL, false, false, false, false,
         CAIRN_RESTORE_MODE_RESTORE, 0, 1, "user.bob", "user.bob", 3, 3},
        {"bob", NULL, NULL, false, true, false, false,
         CAIRN_RESTORE_MODE_RESTORE, 0, 2, "user.bob", "user.bob.Tmp", 4, 3},
        {"bob", NULL, NULL, false, true, true, false,
         CAIRN_RESTORE_MODE_RESTORE, 0, 2, "DELETED.user.bob.Tmp.", "user.bob",
         4, 3},
        {"alice", NULL, NULL, false, false, false, true,
         CAIRN_RESTORE_MODE_RESTORE, 0, 3, "user.alice", "user.alice.Work", 7,
         4},
        {"alice", "Work", NULL, false, false, false, false,
         CAIRN_RESTORE_MODE_RESTORE, 0, 1, "user.alice.Work", "user.alice.Work",
         1, 0},
        {"alice", "user.alice.Archive", "Restored", false, false, false, false,
         CAIRN_RESTORE_MODE_RESTORE, 0, 1, "user.alice.Restored",
         "user.alice.Restored", 1, 0},
        {"alice", "INBOX", NULL, true, false, false, false,
         CAIRN_RESTORE_MODE_RESTORE, 0, 1, "user.alice", "user.alice", 6, 0},
        {"alice", "Nope", NULL, false, false, false, false,
         CAIRN_RESTORE_MODE_RESTORE, CAIRN_ENOENT, 0, NULL, NULL, 0, 0},
        {"alice", NULL, "Restored", false, false, false, false,
         CAIRN_RESTORE_MODE_RESTORE, CAIRN_EINVAL, 0, NULL, NULL, 0, 0},
        {"alice", NULL, NULL, true, false, false, false,
         CAIRN_RESTORE_MODE_APPLY, CAIRN_EINVAL, 0, NULL, NULL, 0, 0},
        {"alice", NULL, NULL, false, false, false, false,
         CAIRN_RESTORE_MODE_APPLY, 0, 3, "user.alice", "user.alice.Work", 8, 4},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cairn_restore_source *source = open_testdata(cases[i].user);
        struct cairn_restore_options options;
        struct cairn_restore_plan *plan = NULL;
        const char *chosen[1] = {cases[i].mailbox};
        size_t records = 0;
        int rc;

        if (source == NULL)
            continue;
        cairn_restore_options_default(&options);
        options.mailboxes = chosen;
        options.mailbox_count = cases[i].mailbox ? 1 : 0;
        options.into = cases[i].into;
        options.new_identity = cases[i].new_identity;
        options.include_deleted = cases[i].include_deleted;
        options.keep_deleted_prefix = cases[i].keep_prefix;
        options.skip_expunged = cases[i].skip_expunged;
        options.mode = cases[i].mode;
        rc = cairn_restore_plan_build(source, &options, &plan);
        if (rc != cases[i].rc)
            fprintf(stderr, "case %zu\n", i);
        CHECK_INT(rc, cases[i].rc);
        if (plan != NULL) {
            const char *last = mailbox_name(plan, plan->mailbox_count - 1);

            CHECK_INT(plan->mailbox_count, cases[i].mailboxes);
            CHECK(strncmp(mailbox_name(plan, 0), cases[i].first,
                          strlen(cases[i].first)) == 0);
            CHECK_STR(last, cases[i].last);
            CHECK(records_ascend(plan, &records));
            CHECK_U64(plan->record_count, cases[i].records);
            CHECK_INT(plan->meta_count, cases[i].meta);
            for (size_t m = 0; m < plan->mailbox_count; m++) {
                const struct cairn_dlist *mb = plan->mailboxes[m];
                bool fresh = cases[i].new_identity || cases[i].into;
                uint64_t uidvalidity = 0;
                bool filtered; /* alice's INBOX has an expunged uid 4 */

                CHECK(cairn_dlist_get_num64(mb, "UIDVALIDITY", &uidvalidity));
                CHECK(fresh ? uidvalidity == 0 : uidvalidity != 0);
                if (fresh)
                    CHECK_STR(atom(mb, "UNIQUEID"), NULL);
                else
                    CHECK(atom(mb, "UNIQUEID") != NULL &&
                          strlen(atom(mb, "UNIQUEID")) == 24);
                /* the CRCs go only where they still describe the records */
                filtered = cases[i].skip_expunged &&
                           strcmp(atom(mb, "MBOXNAME"), "user.alice") == 0;
                CHECK((cairn_dlist_get(mb, "SYNC_CRC_ANNOT") != NULL) ==
                      !(fresh || filtered));
            }
        }
        cairn_restore_plan_free(plan);
        cairn_restore_source_free(source);
    }
}

/* --- a scripted source: records out of UID order, odd user names ------ */

static const char *scripted_mailbox =
    "MAILBOX %(UNIQUEID u1 MBOXNAME example.com!user.john^doe MBOXTYPE NIL"
    " LAST_UID 9 HIGHESTMODSEQ 20 UIDVALIDITY 77 PARTITION p2 ACL NIL"
    " OPTIONS P SYNC_CRC 5 SYNC_CRC_ANNOT 6 RECORD ("
    "%(UID 9 MODSEQ 20 GUID 1111111111111111111111111111111111111111 SIZE 1"
    " FLAGS ())"
    " %(UID 2 MODSEQ 3 GUID 2222222222222222222222222222222222222222 SIZE 2"
    " FLAGS (\\Seen \\Expunged))"
    " %(UID 5 MODSEQ 8 GUID 1111111111111111111111111111111111111111 SIZE 1"
    " FLAGS (\\Flagged))))";

static int
scripted_user(void *ctx, cairn_store_emit emit, void *emit_ctx)
{
    struct cairn_dlist *tree = NULL;
    int rc;

    (void)ctx;
    if ((rc = cairn_dlist_parse(scripted_mailbox, strlen(scripted_mailbox),
                                CAIRN_DLIST_PARSE_KEY, NULL, NULL, &tree, NULL,
                                0)) < 0)
        return rc;
    rc = emit(emit_ctx, tree);
    cairn_dlist_free(tree);
    return rc;
}

static int
scripted_mailbox_read(void *ctx, const char *name, struct cairn_dlist **out)
{
    (void)ctx;
    if (strcmp(name, "example.com!user.john^doe") != 0)
        return CAIRN_ENOENT;
    return cairn_dlist_parse(scripted_mailbox, strlen(scripted_mailbox),
                             CAIRN_DLIST_PARSE_KEY, NULL, NULL, out, NULL, 0);
}

static const struct cairn_restore_source_ops scripted_ops = {
    scripted_user, scripted_mailbox_read, NULL, NULL, NULL, NULL, NULL};

static void
test_uid_order_and_names(void)
{
    static const struct {
        const char *typed; /* --mailbox */
        bool skip_expunged;
        const char *printed; /* the RECORD list as sent */
    } cases[] = {
        {"INBOX", false,
         "RECORD (%(UID 2 MODSEQ 3 GUID "
         "2222222222222222222222222222222222222222 SIZE 2 FLAGS (\\Seen "
         "\\Expunged)) %(UID 5 MODSEQ 8 GUID "
         "1111111111111111111111111111111111111111 SIZE 1 FLAGS (\\Flagged))"
         " %(UID 9 MODSEQ 20 GUID 1111111111111111111111111111111111111111 "
         "SIZE 1 FLAGS ()))"},
        {"example.com!user.john^doe", true,
         "RECORD (%(UID 5 MODSEQ 8 GUID "
         "1111111111111111111111111111111111111111 SIZE 1 FLAGS (\\Flagged))"
         " %(UID 9 MODSEQ 20 GUID 1111111111111111111111111111111111111111 "
         "SIZE 1 FLAGS ()))"},
    };
    struct cairn_restore_source source = {&scripted_ops, NULL,
                                          "john.doe@example.com"};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cairn_restore_options options;
        struct cairn_restore_plan *plan = NULL;
        const char *chosen[1] = {cases[i].typed};
        struct cairn_buf printed;

        cairn_restore_options_default(&options);
        options.mailboxes = chosen;
        options.mailbox_count = 1;
        options.skip_expunged = cases[i].skip_expunged;
        cairn_buf_init(&printed, 1 << 16);
        CHECK_INT(cairn_restore_plan_build(&source, &options, &plan), 0);
        if (plan != NULL && plan->mailbox_count == 1) {
            const struct cairn_dlist *records =
                cairn_dlist_get(plan->mailboxes[0], "RECORD");

            CHECK_INT(cairn_dlist_print(records, true, &printed, NULL), 0);
            CHECK_STR(printed.data, cases[i].printed);
            CHECK_STR(plan->partitions[0].name, "p2");
            /* a shared GUID is reserved and uploaded once */
            CHECK_INT(plan->partitions[0].guid_count,
                      cases[i].skip_expunged ? 1 : 2);
            CHECK_INT(plan->meta_count, 0);
        }
        cairn_buf_release(&printed);
        cairn_restore_plan_free(plan);
    }
}

/* --- a scripted sync_server on loopback -------------------------------- */

#define MAX_SEEN 32

struct fake_server {
    int listen_fd;
    int port;
    char auth_line[256];
    char commands[MAX_SEEN][48];
    int command_count;
    int bodies_ok, bodies_bad;
    int errors;
};

struct body_check {
    EVP_MD_CTX *sha;
    char guid[41];
};

static int
sink_begin(void *ctx, const char *partition, const char *guid, uint64_t size,
           void **handle)
{
    struct body_check *check = calloc(1, sizeof(*check));

    (void)ctx;
    (void)partition;
    (void)size;
    if (check == NULL || (check->sha = EVP_MD_CTX_new()) == NULL) {
        free(check);
        return CAIRN_ENOMEM;
    }
    EVP_DigestInit_ex(check->sha, EVP_sha1(), NULL);
    snprintf(check->guid, sizeof(check->guid), "%s", guid);
    *handle = check;
    return 0;
}

static int
sink_data(void *ctx, void *handle, const void *bytes, size_t len)
{
    struct body_check *check = handle;

    (void)ctx;
    EVP_DigestUpdate(check->sha, bytes, len);
    return 0;
}

static int
sink_end(void *ctx, void *handle)
{
    struct fake_server *server = ctx;
    struct body_check *check = handle;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    char hex[41] = "";

    EVP_DigestFinal_ex(check->sha, digest, &len);
    for (unsigned i = 0; i < len && i < 20; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    if (strcmp(hex, check->guid) == 0)
        server->bodies_ok++;
    else
        server->bodies_bad++;
    return 0;
}

static void
sink_release(void *ctx, void *handle)
{
    struct body_check *check = handle;

    (void)ctx;
    EVP_MD_CTX_free(check->sha);
    free(check);
}

static int
read_plain_line(int fd, char *line, size_t size)
{
    size_t len = 0;
    char c;

    while (len + 1 < size && recv(fd, &c, 1, 0) == 1) {
        if (c == '\n') {
            line[len > 0 && line[len - 1] == '\r' ? len - 1 : len] = '\0';
            return 0;
        }
        line[len++] = c;
    }
    return -1;
}

static void
send_compressed(struct fake_server *server, int fd,
                struct cairn_compress *compress, const struct cairn_buf *text)
{
    struct cairn_buf out;

    cairn_buf_init(&out, 1 << 20);
    if (cairn_compress_deflate(compress, text->data, text->len, true, &out) <
            0 ||
        cairn_write_all(fd, out.data, out.len) < 0)
        server->errors++;
    cairn_buf_release(&out);
}

/* Answers one command; *done after EXIT. */
static void
answer(struct fake_server *server, int fd, struct cairn_compress *compress,
       struct cairn_csync_command *cmd, bool *done)
{
    struct cairn_buf reply;
    struct cairn_dlist *missing = cairn_dlist_new_list("MISSING");
    const struct cairn_dlist *guids = NULL;
    const char *key = cmd->value ? cairn_dlist_name(cmd->value) : "";

    cairn_buf_init(&reply, 1 << 20);
    if (server->command_count < MAX_SEEN)
        snprintf(server->commands[server->command_count++], 48, "%s %s",
                 cairn_csync_verb_name(cmd->verb), key);
    if (cmd->verb == CAIRN_CSYNC_APPLY && strcmp(key, "RESERVE") == 0 &&
        cairn_dlist_get_list(cmd->value, "GUID", &guids)) {
        /* the first GUID of each RESERVE is "already here" */
        for (const struct cairn_dlist *g =
                 cairn_dlist_next(cairn_dlist_first(guids));
             g; g = cairn_dlist_next(g))
            cairn_dlist_add_atom(missing, NULL, cairn_dlist_value(g, NULL));
        cairn_csync_write_untagged(&reply, missing, NULL);
    }
    if (cmd->verb == CAIRN_CSYNC_GET && strcmp(key, "MAILBOXES") == 0) {
        /* the target holds a Work of its own (another uniqueid) */
        struct cairn_dlist *held = cairn_dlist_new_kvlist("MAILBOX");

        cairn_dlist_add_atom(held, "UNIQUEID", "someoneelse");
        cairn_dlist_add_atom(held, "MBOXNAME", "user.alice.Work");
        cairn_csync_write_untagged(&reply, held, NULL);
        cairn_dlist_free(held);
    }
    *done = cmd->verb == CAIRN_CSYNC_EXIT;
    cairn_csync_write_response(&reply, CAIRN_CSYNC_OK, CAIRN_CSYNC_CODE_NONE,
                               "%s", *done ? "Finished" : "success");
    send_compressed(server, fd, compress, &reply);
    cairn_dlist_free(missing);
    cairn_buf_release(&reply);
}

static void
serve_commands(struct fake_server *server, int fd)
{
    const struct cairn_dlist_file_sink sink = {sink_begin, sink_data, sink_end,
                                               sink_release, server};
    struct cairn_csync_reader *reader = NULL;
    struct cairn_compress *compress = NULL;
    struct cairn_buf plain;
    char wire[16384];
    bool done = false;

    cairn_buf_init(&plain, 1 << 20);
    if (cairn_compress_new(&compress) < 0 ||
        cairn_csync_reader_new(65536, NULL, &sink, &reader) < 0) {
        server->errors++;
        goto out;
    }
    while (!done) {
        ssize_t got = recv(fd, wire, sizeof(wire), 0);
        size_t used = 0;

        if (got <= 0) {
            server->errors++;
            break;
        }
        while (used < (size_t)got && !done) {
            size_t consumed = 0, fed = 0;
            struct cairn_csync_command cmd = {0};
            int rc;

            if (cairn_compress_inflate(compress, wire + used,
                                       (size_t)got - used, &consumed, 65536,
                                       &plain) < 0) {
                server->errors++;
                goto out;
            }
            used += consumed;
            while (!done && (rc = cairn_csync_reader_feed(
                                 reader, plain.data + fed, plain.len - fed,
                                 &consumed, &cmd)) == 0) {
                fed += consumed;
                answer(server, fd, compress, &cmd, &done);
                cairn_csync_command_release(&cmd);
            }
            if (!done && rc != CAIRN_EAGAIN) {
                server->errors++;
                goto out;
            }
            cairn_buf_reset(&plain);
        }
    }
out:
    cairn_csync_reader_free(reader);
    cairn_compress_free(compress);
    cairn_buf_release(&plain);
}

static void *
fake_server_run(void *arg)
{
    static const char banner[] = "* SASL PLAIN\r\n* COMPRESS DEFLATE\r\n"
                                 "* SIEVE-MAILBOX\r\n* OK fake Cyrus sync "
                                 "server\r\n";
    struct fake_server *server = arg;
    struct timeval timeout = {10, 0};
    char line[256];
    int fd = accept(server->listen_fd, NULL, NULL);

    if (fd < 0) {
        server->errors++;
        return NULL;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    if (cairn_write_all(fd, banner, sizeof(banner) - 1) < 0 ||
        read_plain_line(fd, server->auth_line, sizeof(server->auth_line)) < 0 ||
        cairn_write_all(fd, "OK Success (no protection)\r\n", 28) < 0 ||
        read_plain_line(fd, line, sizeof(line)) < 0 ||
        strcmp(line, "COMPRESS DEFLATE") != 0 ||
        cairn_write_all(fd, "OK DEFLATE active\r\n", 19) < 0)
        server->errors++;
    else
        serve_commands(server, fd);
    close(fd);
    return NULL;
}

static void
test_session_run(enum cairn_restore_mode mode)
{
    static const char *const expected[2][14] = {
        {"APPLY RESERVE", "APPLY RESERVE", "APPLY MESSAGE", "APPLY MESSAGE",
         "RESTORE MAILBOX", "RESTORE MAILBOX", "RESTORE MAILBOX", "APPLY SUB",
         "APPLY SUB", "APPLY SUB", "APPLY SIEVE", "EXIT ", NULL},
        /* APPLY: what the target holds first; its own Work gets RESTORE */
        {"GET MAILBOXES", "APPLY RESERVE", "APPLY RESERVE", "APPLY MESSAGE",
         "APPLY MESSAGE", "APPLY MAILBOX", "APPLY MAILBOX", "RESTORE MAILBOX",
         "APPLY SUB", "APPLY SUB", "APPLY SUB", "APPLY SIEVE", "EXIT ", NULL},
    };
    const char *const *want = expected[mode == CAIRN_RESTORE_MODE_APPLY];
    int want_count = 0;
    struct fake_server server = {0};
    struct sockaddr_in address = {0};
    socklen_t address_len = sizeof(address);
    struct cairn_restore_source *source = open_testdata("alice");
    struct cairn_restore_options options;
    struct cairn_restore_plan *plan = NULL;
    struct cairn_restore_session_options session_options = {0};
    struct cairn_restore_session *session = NULL;
    struct cairn_restore_result result;
    char port[16], error[256];
    pthread_t thread;

    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    server.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(bind(server.listen_fd, (struct sockaddr *)&address,
               sizeof(address)) == 0 &&
          listen(server.listen_fd, 1) == 0 &&
          getsockname(server.listen_fd, (struct sockaddr *)&address,
                      &address_len) == 0);
    snprintf(port, sizeof(port), "%u", ntohs(address.sin_port));
    cairn_restore_options_default(&options);
    options.reserve_block = 4;
    options.message_block = 3;
    options.mode = mode;
    while (want[want_count] != NULL)
        want_count++;
    if (source == NULL ||
        cairn_restore_plan_build(source, &options, &plan) < 0 ||
        pthread_create(&thread, NULL, fake_server_run, &server) != 0) {
        CHECK(false);
        goto out;
    }
    session_options.host = "127.0.0.1";
    session_options.port = port;
    session_options.authname = "repl";
    session_options.password = "pw";
    session_options.compress = true;
    session_options.timeout_seconds = 10;
    CHECK_INT(cairn_restore_session_open(&session_options, &session, error,
                                         sizeof(error)),
              0);
    if (session != NULL) {
        CHECK_STR(cairn_restore_session_mechanism(session), "PLAIN");
        CHECK(cairn_restore_session_compressed(session));
        CHECK(cairn_restore_session_offers(session, "SIEVE-MAILBOX"));
        CHECK_INT(cairn_restore_run(session, source, plan, NULL, NULL, &result),
                  0);
        /* 6 GUIDs in RESERVEs of 4 + 2, the first of each "present" */
        CHECK_U64(result.messages_present, 2);
        CHECK_U64(result.messages_uploaded, 4);
        CHECK_U64(result.mailboxes_restored, 3);
        CHECK_U64(result.records_sent, 8);
        CHECK_U64(result.meta_sent, 4);
        CHECK_U64(result.mailboxes_fallback,
                  mode == CAIRN_RESTORE_MODE_APPLY ? 1 : 0);
    }
    cairn_restore_session_close(session); /* sends EXIT */
    pthread_join(thread, NULL);
    /* PLAIN with an empty authzid, as sync_client: "\0repl\0pw" */
    CHECK_STR(server.auth_line, "AUTHENTICATE PLAIN AHJlcGwAcHc=");
    CHECK_INT(server.errors, 0);
    CHECK_INT(server.bodies_ok, 4);
    CHECK_INT(server.bodies_bad, 0);
    CHECK_INT(server.command_count, want_count);
    for (int i = 0; i < server.command_count && i < want_count; i++)
        CHECK_STR(server.commands[i], want[i]);
out:
    close(server.listen_fd);
    cairn_restore_plan_free(plan);
    cairn_restore_source_free(source);
}

/* Plans alice with one message chosen; NULL guid: by uid of INBOX. */
static struct cairn_restore_plan *
plan_selected(const char *guid, uint32_t uid, const char *mailbox, int want)
{
    struct cairn_restore_source *source = open_testdata("alice");
    struct cairn_restore_options options;
    struct cairn_restore_plan *plan = NULL;
    const char *chosen[1] = {mailbox};

    if (source == NULL)
        return NULL;
    cairn_restore_options_default(&options);
    options.mailboxes = chosen;
    options.mailbox_count = mailbox ? 1 : 0;
    options.message_guid = guid;
    options.uid = uid;
    options.new_identity = true;
    CHECK_INT(cairn_restore_plan_build(source, &options, &plan), want);
    cairn_restore_source_free(source);
    return plan;
}

/* Every record of plan has guid (when given) and no \Expunged flag. */
static void
check_selected(const struct cairn_restore_plan *plan, const char *guid)
{
    for (size_t m = 0; m < plan->mailbox_count; m++) {
        const struct cairn_dlist *records = NULL, *flags = NULL;

        CHECK(cairn_dlist_get_list(plan->mailboxes[m], "RECORD", &records));
        CHECK(cairn_dlist_count(records) > 0);
        for (const struct cairn_dlist *r = cairn_dlist_first(records); r;
             r = cairn_dlist_next(r)) {
            const char *got = NULL;

            if (!cairn_dlist_get_guid(r, "GUID", &got))
                (void)cairn_dlist_get_atom(r, "GUID", &got);
            CHECK(guid == NULL || (got != NULL && strcmp(got, guid) == 0));
            if (!cairn_dlist_get_list(r, "FLAGS", &flags))
                continue;
            for (const struct cairn_dlist *f = cairn_dlist_first(flags); f;
                 f = cairn_dlist_next(f))
                CHECK(strcmp(cairn_dlist_value(f, NULL), "\\Expunged") != 0);
        }
    }
}

/* restore --message / --mailbox --uid: only the chosen records, live. */
static void
test_plan_selection(void)
{
    struct cairn_restore_source *source = open_testdata("alice");
    struct cairn_restore_plan *all = NULL, *plan;
    struct cairn_restore_options options;
    const struct cairn_dlist *records = NULL;
    const char *guid = NULL;
    uint32_t uid = 0;

    /* the whole user, to pick a message: its first INBOX record */
    if (source == NULL)
        return;
    cairn_restore_options_default(&options);
    CHECK_INT(cairn_restore_plan_build(source, &options, &all), 0);
    cairn_restore_source_free(source);
    if (all == NULL)
        return;
    CHECK(cairn_dlist_get_list(all->mailboxes[0], "RECORD", &records));
    if (!cairn_dlist_get_guid(cairn_dlist_first(records), "GUID", &guid))
        (void)cairn_dlist_get_atom(cairn_dlist_first(records), "GUID", &guid);
    (void)cairn_dlist_get_num32(cairn_dlist_first(records), "UID", &uid);
    CHECK(guid != NULL && uid > 0);
    if ((plan = plan_selected(guid, 0, NULL, 0)) != NULL) {
        CHECK(plan->record_count >= 1 && plan->meta_count == 0);
        CHECK_U64(plan->message_count, 1);
        check_selected(plan, guid);
        cairn_restore_plan_free(plan);
    }
    if ((plan = plan_selected(NULL, uid, "INBOX", 0)) != NULL) {
        CHECK_U64(plan->record_count, 1);
        CHECK_INT(plan->mailbox_count, 1);
        check_selected(plan, guid);
        cairn_restore_plan_free(plan);
    }
    plan_selected("0123456789abcdef0123456789abcdef01234567", 0, NULL,
                  CAIRN_ENOENT);
    plan_selected(NULL, uid, NULL, CAIRN_EINVAL); /* a UID needs a mailbox */
    plan_selected(NULL, 999999, "INBOX", CAIRN_ENOENT);
    cairn_restore_plan_free(all);
}

/* restore --as-of: the forms of a time, against a fixed now. */
static void
test_parse_time(void)
{
    static const struct {
        const char *text;
        int rc;
        int64_t when;
    } cases[] = {
        {"2026-12-07T21:00:00Z", 0, 1796677200},
        {"2026-12-07T21:00:00", 0, 1796677200},
        {"2026-12-07 21:00", 0, 1796677200},
        {"2026-12-07T22:00:00+01:00", 0, 1796677200},
        {"2026-12-07T20:30:00-0030", 0, 1796677200},
        {"2026-12-07", 0, 1796601600},
        {"2 days ago", 0, 1796677200 - 2 * 86400},
        {"1 hour ago", 0, 1796677200 - 3600},
        {"90 minutes ago", 0, 1796677200 - 5400},
        {"now", 0, 1796677200},
        {"@1700000000", 0, 1700000000},
        {"yesterday", CAIRN_EINVAL, 0},
        {"2 fortnights ago", CAIRN_EINVAL, 0},
        {"2026-13-01", CAIRN_EINVAL, 0},
        {"2026-12-07T21:00:00Zjunk", CAIRN_EINVAL, 0},
    };
    char text[32];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t when = -1;

        CHECK_INT(cairn_restore_parse_time(cases[i].text, 1796677200, &when),
                  cases[i].rc);
        if (cases[i].rc == 0)
            CHECK(when == cases[i].when);
    }
    cairn_restore_format_time(1796677200, text);
    CHECK_STR(text, "2026-12-07T21:00:00Z");
}

int
main(void)
{
    char command[512];

    if (mkdtemp(temp_dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_plan_alice();
    test_message_bodies();
    test_body_order();
    test_plan_options();
    test_uid_order_and_names();
    test_parse_time();
    test_plan_selection();
    test_session_run(CAIRN_RESTORE_MODE_RESTORE);
    test_session_run(CAIRN_RESTORE_MODE_APPLY);
    snprintf(command, sizeof(command), "rm -rf %s", temp_dir);
    if (system(command) != 0)
        fprintf(stderr, "could not remove %s\n", temp_dir);
    return check_exit("test_restore");
}
