/*
 * test_server.c - cairn-node end to end over loopback: the recorded
 * sync_client sessions sent as pipelined APPLYs through the node client
 * (GET USER then equals backupd's recorded replies byte for byte), an
 * unknown user, sequence gaps and replays, RESERVE's MISSING, stats,
 * verify digests equal on two users with the same data, a 50 MB message
 * streamed with the daemon's peak RSS measured, a resent body not
 * growing the user's file, and SIGTERM.
 *
 * usage: test_server CAIRN_NODE_BINARY
 */
#include "check.h"
#include "daemon_test_util.h"
#include "node_server.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <zmq.h>

static const char *node_binary;

/* --- pipelined APPLYs through the asynchronous client --------------------- */

struct batch {
    struct cairn_dlist *records[128];
    struct test_wire wires[128];
    size_t count;
    size_t answered, acked;
    int first_error;
};

static void
on_batch_reply(void *arg, const struct cairn_node_reply *reply)
{
    struct batch *batch = arg;

    batch->answered++;
    if (reply->status == 0)
        batch->acked++;
    else if (batch->first_error == 0) {
        batch->first_error = reply->status;
        fprintf(stderr, "request %llu: %s (%s)\n",
                (unsigned long long)reply->request_id,
                cairn_strerror(reply->status),
                reply->envelope ? reply->envelope->error_text : "-");
    }
}

/*
 * Sends every APPLY of file for user, sequences from *sequence on, all
 * queued at once (the client's windows pipeline them); waits for all.
 */
static int
send_file(const char *endpoint, const char *user, const char *path,
          uint64_t *sequence)
{
    static struct batch batch;
    struct cairn_loop *loop = NULL;
    struct cairn_node_client *client = NULL;
    struct cairn_node_frame frames[128];
    size_t len = 0;
    char *data = test_read_file(path, &len);
    uint64_t deadline = cairn_loop_now_ms() + CALL_TIMEOUT_MS;
    struct cairn_dlist_parser *parser = NULL;
    size_t at = 0;
    int rc = 0;

    memset(&batch, 0, sizeof(batch));
    if (data == NULL)
        return CAIRN_ENOENT;
    /* Records must outlive the send (bodies are borrowed): parse here. */
    if ((rc = cairn_dlist_parser_new(
             NULL, &test_sink, CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL,
             &parser)) < 0)
        goto out;
    while (at < len && rc == 0 && batch.count < 128) {
        size_t used = 0;

        at += 6; /* "APPLY " */
        rc = cairn_dlist_parser_feed(parser, data + at, len - at, &used);
        at += used;
        if (rc < 0)
            break;
        batch.records[batch.count] = cairn_dlist_parser_take(parser);
        rc = test_wire_from_record(&batch.wires[batch.count],
                                   batch.records[batch.count]);
        batch.count++;
    }
    if (rc < 0)
        goto out;
    if ((rc = cairn_loop_new(&loop)) < 0 ||
        (rc = cairn_node_client_new(loop, NULL, NULL, &client)) < 0 ||
        (rc = cairn_node_client_add_node(client, "node1", endpoint, NULL)) < 0)
        goto out;
    for (size_t i = 0; i < batch.count && rc == 0; i++) {
        struct cairn_node_request request = test_apply_request(
            user, (*sequence)++, cairn_dlist_name(batch.records[i]),
            &batch.wires[i], &frames[i]);

        rc = cairn_node_client_send(client, 0, &request, on_batch_reply, &batch,
                                    NULL);
    }
    while (rc == 0 && batch.answered < batch.count &&
           cairn_loop_now_ms() < deadline)
        rc = cairn_loop_run_once(loop, 50);
    if (rc == 0)
        rc = batch.acked == batch.count ? 0
             : batch.first_error        ? batch.first_error
                                        : CAIRN_ETIMEOUT;
out:
    cairn_node_client_free(client);
    cairn_loop_free(loop);
    for (size_t i = 0; i < batch.count; i++) {
        test_wire_release(&batch.wires[i]);
        cairn_dlist_free(batch.records[i]);
    }
    cairn_dlist_parser_free(parser);
    free(data);
    return rc;
}

/* --- blocking calls --------------------------------------------------------
 */

static int
call_get(const char *endpoint, const char *user, const char *dlist,
         struct cairn_node_result *result)
{
    struct cairn_node_request request = {0};
    struct cairn_node_frame frame = {dlist, strlen(dlist)};

    request.kind = CAIRN__KIND__STATE_REQUEST;
    request.user = user;
    request.verb = "GET";
    request.frames = &frame;
    request.frame_count = 1;
    return cairn_node_client_call(endpoint, &request, CALL_TIMEOUT_MS, result);
}

/* The STATE_REPLY as backupd's untagged lines ("* item\r\n" each). */
static char *
reply_as_lines(const struct cairn_node_result *result, size_t *len)
{
    struct cairn_buf out;
    char *text = NULL;

    cairn_buf_init(&out, 1 << 24);
    for (size_t i = 0; i < result->frame_count; i++) {
        cairn_buf_append_str(&out, "* ");
        cairn_buf_append(&out, result->frames[i].data, result->frames[i].len);
        cairn_buf_append_str(&out, "\r\n");
    }
    cairn_buf_detach(&out, &text, len);
    return text;
}

/* --- the cases ----------------------------------------------------------- */

static const char *const sessions[] = {"01", "02", "03", "04",
                                       "05", "06", "07", "09"};

/* Each session's GET USER before it equals backupd's recorded answer. */
static void
test_recorded_sessions(const char *endpoint, const char *user,
                       bool check_replies)
{
    uint64_t sequence = 1;

    for (size_t i = 0; i < 8; i++) {
        char path[64], expected_path[64];
        struct cairn_node_result result;

        snprintf(path, sizeof(path), "data/%s.apply", sessions[i]);
        snprintf(expected_path, sizeof(expected_path), "data/%s.get_user",
                 sessions[i]);
        if (check_replies && i > 0 && i < 7) {
            size_t expected_len = 0, got_len = 0;
            char *expected = test_read_file(expected_path, &expected_len);
            char *got = NULL;

            CHECK_INT(call_get(endpoint, user, "USER user001", &result), 0);
            got = reply_as_lines(&result, &got_len);
            CHECK(expected != NULL && got != NULL);
            if (expected && got)
                CHECK_MEM(got, got_len, expected, expected_len);
            free(expected);
            free(got);
            cairn_node_result_release(&result);
        }
        CHECK_INT(send_file(endpoint, user, path, &sequence), 0);
    }
}

/* A GET whose dlist is larger than a frame (cut by the client). */
static void
test_big_dlist(const char *endpoint)
{
    struct cairn_buf dlist;
    struct cairn_node_result result;

    cairn_buf_init(&dlist, 4 << 20);
    cairn_buf_append_str(&dlist, "MAILBOXES (user.user001");
    for (unsigned i = 0; i < 80000; i++)
        cairn_buf_printf(&dlist, " user.user001.none%05u", i);
    cairn_buf_append_str(&dlist, ")");
    CHECK(dlist.len > 1024 * 1024);
    CHECK_INT(call_get(endpoint, "replay-a", dlist.data, &result), 0);
    CHECK_INT(result.frame_count, 1);
    if (result.frame_count == 1)
        CHECK(strncmp(result.frames[0].data,
                      "MAILBOX %(UNIQUEID xpr9f2uq5k0a8ncarqh7q8cy MBOXNAME "
                      "user.user001 ",
                      64) == 0);
    cairn_node_result_release(&result);
    cairn_buf_release(&dlist);
}

static void
test_unknown_user(const char *endpoint)
{
    struct cairn_node_result result;

    CHECK_INT(call_get(endpoint, "nobody", "USER nobody", &result),
              CAIRN_ENOENT);
    CHECK(result.envelope != NULL);
    if (result.envelope) {
        CHECK_INT(result.envelope->kind, CAIRN__KIND__ERROR);
        CHECK_INT(result.envelope->csync_code, 2 /* MAILBOX_NONEXISTENT */);
    }
    cairn_node_result_release(&result);
    CHECK_INT(call_get(endpoint, "../etc", "USER x", &result), CAIRN_EBADNAME);
    cairn_node_result_release(&result);
}

static const char seen_dlist[] =
    "SEEN %(USERID order MBOXNAME user.order UNIQUEID abc LASTREAD 1 LASTUID "
    "1 LASTCHANGE 1 SEENUIDS 1)";

static void
test_ordering(const char *endpoint)
{
    struct cairn_node_result result;
    static const struct {
        uint64_t sequence;
        int expected;
    } steps[] = {
        {5, 0},            /* the first sequence seen is taken as it is */
        {6, 0},            /* next in line */
        {6, 0},            /* replay of the last: re-ACKed, not applied */
        {8, CAIRN_EPROTO}, /* gap */
        {4, CAIRN_EPROTO}, /* old */
        {7, 0},            /* the gap did not move the stream */
        {1, 0},            /* a new stream (the router restarted) */
        {0, 0},            /* unordered */
    };

    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        int rc = call_apply_text(endpoint, "order", steps[i].sequence,
                                 seen_dlist, &result);

        if (rc != steps[i].expected)
            fprintf(stderr, "ordering step %zu\n", i);
        CHECK_INT(rc, steps[i].expected);
        cairn_node_result_release(&result);
    }
    /* an unknown key and a malformed dlist are refused */
    CHECK_INT(call_apply_text(endpoint, "order", 0, "BOGUS %(A 1)", &result),
              CAIRN_EPROTO);
    if (result.envelope)
        CHECK_INT(result.envelope->csync_code, 9 /* PROTOCOL_ERROR */);
    cairn_node_result_release(&result);
}

static void
test_reserve(const char *endpoint, const char *user)
{
    struct cairn_node_result result;
    /* e9a6... is in session 01; the other is not held */
    const char *reserve =
        "RESERVE %(PARTITION default MBOXNAME (user.user001) GUID "
        "(e9a6894fc65be05aed31b2daa065cd996b9126a6 "
        "1111111111111111111111111111111111111111))";

    CHECK_INT(call_apply_text(endpoint, user, 0, reserve, &result), 0);
    CHECK_INT(result.frame_count, 1);
    if (result.frame_count == 1)
        CHECK_STR((const char *)result.frames[0].data,
                  "MISSING (1111111111111111111111111111111111111111)");
    cairn_node_result_release(&result);
}

static Cairn__StatusReply *
call_status(const char *endpoint, Cairn__Kind kind, const char *user)
{
    struct cairn_node_request request = {0};
    struct cairn_node_result result;
    Cairn__UserRequest asked = CAIRN__USER_REQUEST__INIT;
    char *users[1] = {(char *)user};
    unsigned char packed[256];
    struct cairn_node_frame frame = {packed, 0};
    Cairn__StatusReply *reply = NULL;

    if (user) {
        asked.users = users;
        asked.n_users = 1;
        frame.len = cairn__user_request__pack(&asked, packed);
        request.frames = &frame;
        request.frame_count = 1;
    }
    request.kind = kind;
    if (cairn_node_client_call(endpoint, &request, CALL_TIMEOUT_MS, &result) ==
            0 &&
        result.frame_count == 1)
        reply = cairn__status_reply__unpack(NULL, result.frames[0].len,
                                            result.frames[0].data);
    cairn_node_result_release(&result);
    return reply;
}

/* The uncompressed size of user's log: its chunks' lengths. */
static uint64_t
log_length(const char *dir, const char *user)
{
    struct cairn_catalog *catalog = NULL;
    char path[600], *data_path = NULL;
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    uint64_t length = 0;

    snprintf(path, sizeof(path), "%s/catalog.db", dir);
    if (cairn_catalog_open(path, &catalog) == 0 &&
        cairn_catalog_lookup(catalog, user, &data_path) == 0) {
        snprintf(path, sizeof(path), "%s.index", data_path);
        if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) ==
                SQLITE_OK &&
            sqlite3_prepare_v2(db, "SELECT sum(length) FROM chunk", -1, &stmt,
                               NULL) == SQLITE_OK &&
            sqlite3_step(stmt) == SQLITE_ROW)
            length = (uint64_t)sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    free(data_path);
    cairn_catalog_free(catalog);
    return length;
}

/*
 * A named user the node does not hold is left out; raw_bytes is the log
 * uncompressed; ring_epoch the highest a request carried.
 */
static void
test_stats_fields(const struct test_daemon *daemon, const char *dir)
{
    struct cairn_node_request ping = {0};
    struct cairn_node_result result;
    Cairn__StatusReply *reply;

    ping.kind = CAIRN__KIND__PING;
    ping.ring_epoch = 7;
    CHECK_INT(cairn_node_client_call(daemon->endpoint, &ping, CALL_TIMEOUT_MS,
                                     &result),
              0);
    cairn_node_result_release(&result);
    reply = call_status(daemon->endpoint, CAIRN__KIND__STATS_REQUEST, "nobody");
    CHECK(reply != NULL);
    if (reply) {
        CHECK_U64(reply->n_users, 0);
        CHECK_U64(reply->node->ring_epoch, 7);
        cairn__status_reply__free_unpacked(reply, NULL);
    }
    reply =
        call_status(daemon->endpoint, CAIRN__KIND__STATS_REQUEST, "replay-a");
    CHECK(reply != NULL);
    if (reply) {
        CHECK_U64(reply->n_users, 1);
        if (reply->n_users == 1) {
            CHECK(reply->users[0]->raw_bytes > 0);
            CHECK_U64(reply->users[0]->raw_bytes, log_length(dir, "replay-a"));
        }
        cairn__status_reply__free_unpacked(reply, NULL);
    }
}

static void
test_stats(const char *endpoint)
{
    Cairn__StatusReply *reply =
        call_status(endpoint, CAIRN__KIND__STATS_REQUEST, NULL);

    CHECK(reply != NULL);
    if (reply == NULL)
        return;
    CHECK_STR(reply->node->node, "node1");
    CHECK_U64(reply->node->users, 3); /* replay-a, replay-b, order */
    CHECK_U64(reply->n_users, 3);
    CHECK(reply->node->disk_free > 0);
    CHECK(reply->node->bytes > 0);
    for (size_t i = 0; i < reply->n_users; i++) {
        Cairn__UserStats *user = reply->users[i];

        printf("stats %s: %llu bytes on disk, %llu log bytes, %llu "
               "chunks, %llu messages, %llu mailboxes, last %lld\n",
               user->user, (unsigned long long)user->bytes_on_disk,
               (unsigned long long)user->raw_bytes,
               (unsigned long long)user->chunks,
               (unsigned long long)user->messages,
               (unsigned long long)user->mailboxes,
               (long long)user->last_backup_time);
        CHECK(user->bytes_on_disk > 0);
        CHECK(user->chunks > 0);
        CHECK(user->last_backup_time > 1700000000);
        if (strcmp(user->user, "replay-a") == 0) {
            CHECK(user->messages >= 4);
            CHECK(user->mailboxes >= 1);
        }
    }
    cairn__status_reply__free_unpacked(reply, NULL);
}

/* Two users fed the same sessions are replicas: equal digests. */
static void
test_verify(const char *endpoint)
{
    Cairn__UserResults *results =
        call_users(endpoint, CAIRN__KIND__VERIFY_REQUEST, true);
    const char *digest_a = NULL, *digest_b = NULL, *digest_order = NULL;

    CHECK(results != NULL);
    if (results == NULL)
        return;
    CHECK_U64(results->n_results, 3);
    for (size_t i = 0; i < results->n_results; i++) {
        Cairn__UserResult *one = results->results[i];

        CHECK_INT(one->code, 0);
        CHECK_INT(strlen(one->digest), 40);
        if (strcmp(one->user, "replay-a") == 0)
            digest_a = one->digest;
        else if (strcmp(one->user, "replay-b") == 0)
            digest_b = one->digest;
        else
            digest_order = one->digest;
    }
    CHECK(digest_a && digest_b && digest_order);
    if (digest_a && digest_b && digest_order) {
        CHECK_STR(digest_a, digest_b);
        CHECK(strcmp(digest_a, digest_order) != 0);
    }
    cairn__user_results__free_unpacked(results, NULL);
}

/* COMPACT answers per user; a PING after SIGHUP (reload) still works. */
static void
test_compact_and_reload(const struct test_daemon *daemon)
{
    Cairn__UserResults *results =
        call_users(daemon->endpoint, CAIRN__KIND__COMPACT_REQUEST, false);
    struct cairn_node_request ping = {0};
    struct cairn_node_result result;

    CHECK(results != NULL);
    if (results) {
        CHECK(results->n_results >= 3);
        for (size_t i = 0; i < results->n_results; i++) {
            CHECK_INT(results->results[i]->code, 0);
            CHECK(results->results[i]->bytes_before > 0);
        }
        cairn__user_results__free_unpacked(results, NULL);
    }
    kill(daemon->pid, SIGHUP);
    ping.kind = CAIRN__KIND__PING;
    CHECK_INT(cairn_node_client_call(daemon->endpoint, &ping, CALL_TIMEOUT_MS,
                                     &result),
              0);
    if (result.envelope)
        CHECK_INT(result.envelope->kind, CAIRN__KIND__PONG);
    cairn_node_result_release(&result);
}

/* UNUSER deletes the user's mailboxes: GET USER lists none after it. */
static void
test_unuser(const char *endpoint)
{
    struct cairn_node_result result;
    size_t mailboxes = 0;

    CHECK_INT(
        call_apply_text(endpoint, "replay-b", 0, "UNUSER user001", &result), 0);
    cairn_node_result_release(&result);
    CHECK_INT(call_get(endpoint, "replay-b", "USER user001", &result), 0);
    for (size_t i = 0; i < result.frame_count; i++)
        if (strncmp(result.frames[i].data, "MAILBOX ", 8) == 0)
            mailboxes++;
    CHECK_INT(mailboxes, 0);
    cairn_node_result_release(&result);
    /* a user the node does not hold has nothing to delete */
    CHECK_INT(call_apply_text(endpoint, "ghost", 0, "UNUSER ghost", &result),
              0);
    cairn_node_result_release(&result);
}

struct alongside {
    int big_status;
    bool big_done;
    unsigned small_sent, small_acked;
    uint64_t sent_at[4096], worst_ms, total_ms;
    unsigned under_100ms;
};

static void
on_big_reply(void *arg, const struct cairn_node_reply *reply)
{
    struct alongside *state = arg;

    state->big_done = true;
    state->big_status = reply->status;
}

static void
on_small_reply(void *arg, const struct cairn_node_reply *reply)
{
    struct alongside *state = arg;
    uint64_t latency =
        cairn_loop_now_ms() - state->sent_at[reply->request_id % 4096];

    if (reply->status == 0)
        state->small_acked++;
    state->total_ms += latency;
    if (latency < 100)
        state->under_100ms++;
    if (latency > state->worst_ms)
        state->worst_ms = latency;
}

/*
 * Sends big and, while it streams, a small update of another user every
 * 20 ms: their ACKs must not wait for the big body (figures printed).
 */
static int
send_alongside(const char *endpoint, const struct cairn_node_request *big)
{
    static struct alongside state;
    struct cairn_loop *loop = NULL;
    struct cairn_node_client *client = NULL;
    struct cairn_node_client_settings settings = {0};
    struct cairn_node_frame frame = {seen_dlist, strlen(seen_dlist)};
    struct cairn_node_request small = {0};
    uint64_t start, next_small, deadline;
    int rc;

    memset(&state, 0, sizeof(state));
    settings.timeout_ms = CALL_TIMEOUT_MS;
    small.kind = CAIRN__KIND__APPLY;
    small.user = "alongside";
    small.verb = "APPLY";
    small.key = "SEEN";
    small.frames = &frame;
    small.frame_count = 1;
    if ((rc = cairn_loop_new(&loop)) < 0 ||
        (rc = cairn_node_client_new(loop, NULL, &settings, &client)) < 0 ||
        (rc = cairn_node_client_add_node(client, "node1", endpoint, NULL)) <
            0 ||
        (rc = cairn_node_client_send(client, 0, big, on_big_reply, &state,
                                     NULL)) < 0)
        goto out;
    start = next_small = cairn_loop_now_ms();
    deadline = start + CALL_TIMEOUT_MS;
    while (!state.big_done && cairn_loop_now_ms() < deadline) {
        uint64_t id = 0;

        if (cairn_loop_now_ms() >= next_small && state.small_sent < 4096 &&
            cairn_node_client_send(client, 0, &small, on_small_reply, &state,
                                   &id) == 0) {
            state.sent_at[id % 4096] = cairn_loop_now_ms();
            state.small_sent++;
            next_small += 20;
        }
        cairn_loop_run_once(loop, 5);
    }
    while (state.small_acked < state.small_sent &&
           cairn_loop_now_ms() < deadline)
        cairn_loop_run_once(loop, 5);
    printf(
        "50 MB message: %llu ms; meanwhile %u small updates of another "
        "user, %u acked, %u of them within 100 ms, ACK latency mean %llu ms, "
        "worst %llu ms\n",
        (unsigned long long)(cairn_loop_now_ms() - start), state.small_sent,
        state.small_acked, state.under_100ms,
        (unsigned long long)(state.small_acked
                                 ? state.total_ms / state.small_acked
                                 : 0),
        (unsigned long long)state.worst_ms);
    CHECK(state.small_sent > 0);
    CHECK_INT(state.small_acked, state.small_sent);
    rc = state.big_done ? state.big_status : CAIRN_ETIMEOUT;
out:
    cairn_node_client_free(client);
    cairn_loop_free(loop);
    return rc;
}

/* A 50 MB body streamed from a file: the daemon must not hold it. */
static void
test_big_message(const struct test_daemon *daemon, const char *dir)
{
    const size_t size = 50u * 1024 * 1024;
    char path[512], guid[41], dlist[256];
    unsigned char sha1[EVP_MAX_MD_SIZE];
    unsigned int sha1_len = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    char *line = malloc(65536);
    struct cairn_node_body body = {-1, 0, NULL, size};
    struct cairn_node_frame frame;
    struct cairn_node_request request = {0};
    struct cairn_node_result result;
    unsigned long before, after;
    int fd;

    snprintf(path, sizeof(path), "%s/big.eml", dir);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && md != NULL && line != NULL);
    if (fd < 0 || md == NULL || line == NULL)
        goto out;
    EVP_DigestInit_ex(md, EVP_sha1(), NULL);
    for (size_t done = 0; done < size; done += 65536) {
        /* compressible text, different in every block */
        for (size_t i = 0; i < 65536; i += 64)
            snprintf(line + i, 65, "%063zu",
                     (done + i) * 2654435761u % 1000000007u);
        for (size_t i = 63; i < 65536; i += 64)
            line[i] = '\n';
        CHECK_INT(cairn_write_all(fd, line, 65536), 0);
        EVP_DigestUpdate(md, line, 65536);
    }
    EVP_DigestFinal_ex(md, sha1, &sha1_len);
    for (unsigned i = 0; i < 20; i++)
        snprintf(guid + 2 * i, 3, "%02x", sha1[i]);
    snprintf(dlist, sizeof(dlist), "MESSAGE (%%{default %s %zu}\r\n)", guid,
             size);
    body.fd = fd;
    frame.data = dlist;
    frame.len = strlen(dlist);
    request.kind = CAIRN__KIND__APPLY;
    request.user = "big";
    request.verb = "APPLY";
    request.key = "MESSAGE";
    request.frames = &frame;
    request.frame_count = 1;
    request.bodies = &body;
    request.body_count = 1;
    before = test_proc_kib(daemon->pid, "VmHWM");
    CHECK_INT(send_alongside(daemon->endpoint, &request), 0);
    after = test_proc_kib(daemon->pid, "VmHWM");
    printf("50 MB message: daemon VmHWM %lu KiB before, %lu KiB after "
           "(+%lu KiB)\n",
           before, after, after - before);
#ifndef __SANITIZE_ADDRESS__
    /* ASan's quarantine keeps freed memory resident: the bound only means
     * something in a build without it. */
    CHECK(after - before < 20 * 1024);
#endif
    CHECK_INT(call_get(daemon->endpoint, "big", "USER big", &result), 0);
    cairn_node_result_release(&result);
out:
    if (fd >= 0)
        close(fd);
    unlink(path);
    free(line);
    EVP_MD_CTX_free(md);
}

/* "MESSAGE (...)" holding body copies times under its SHA-1. */
static void
message_text(struct cairn_buf *text, const char *body, size_t size, int copies)
{
    unsigned char sha1[EVP_MAX_MD_SIZE];
    unsigned int sha1_len = 0;
    char guid[41];

    EVP_Digest(body, size, sha1, &sha1_len, EVP_sha1(), NULL);
    for (int i = 0; i < 20; i++)
        snprintf(guid + 2 * i, 3, "%02x", sha1[i]);
    cairn_buf_reset(text);
    cairn_buf_append_str(text, "MESSAGE (");
    for (int i = 0; i < copies; i++) {
        cairn_buf_printf(text, "%s%%{default %s %zu}\r\n", i ? " " : "", guid,
                         size);
        cairn_buf_append(text, body, size);
    }
    cairn_buf_append_str(text, ")");
}

/*
 * The same MESSAGE sent again, and its body twice in one record, are
 * ACKed and leave the user's file as it was, on the loop (small body) and
 * on the worker thread (a body of 4 MiB or more is appended there).
 */
static void
test_resend_message(const char *endpoint, const char *dir)
{
    static const struct {
        const char *user;
        size_t size;
    } cases[] = {{"resend-small", 64 * 1024}, {"resend-big", 5u << 20}};
    uint64_t state = 88172645463325252u;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        static const int copies[3] = {1, 1, 2};
        struct cairn_node_result result;
        struct cairn_buf text;
        uint64_t first = 0;
        char *body = malloc(cases[i].size);

        CHECK(body != NULL);
        if (body == NULL)
            return;
        /* random letters: deflate cannot hide a second copy */
        for (size_t at = 0; at < cases[i].size; at++) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            body[at] = (char)('a' + state % 26);
        }
        cairn_buf_init(&text, 16u << 20);
        for (int send = 0; send < 3; send++) {
            message_text(&text, body, cases[i].size, copies[send]);
            CHECK_INT(
                call_apply_text(endpoint, cases[i].user, 0, text.data, &result),
                0);
            cairn_node_result_release(&result);
            if (send == 0)
                first = test_data_file_size(dir, cases[i].user);
            else
                CHECK_U64(test_data_file_size(dir, cases[i].user), first);
        }
        CHECK(first > cases[i].size / 2);
        cairn_buf_release(&text);
        free(body);
    }
}

/* After SIGTERM every store is closed and holds the big message. */
static void
check_after_exit(const char *dir)
{
    struct cairn_catalog *catalog = NULL;
    struct cairn_store *store = NULL;
    char path[512];

    snprintf(path, sizeof(path), "%s/catalog.db", dir);
    CHECK_INT(cairn_catalog_open(path, &catalog), 0);
    if (catalog == NULL)
        return;
    CHECK_INT(cairn_store_open_user(catalog, dir, "replay-a", 0, &store), 0);
    if (store) {
        char error[256] = "";

        CHECK_INT(
            cairn_store_verify(store, CAIRN_VERIFY_FULL, error, sizeof(error)),
            0);
        CHECK(cairn_store_has_message(
            store, "e9a6894fc65be05aed31b2daa065cd996b9126a6"));
        cairn_store_close(store);
    }
    cairn_catalog_free(catalog);
}

/* Sends one message from a raw DEALER: envelope and one frame. */
static void
raw_send(void *socket, const Cairn__Envelope *envelope, const char *frame)
{
    unsigned char packed[512];
    size_t len = cairn__envelope__pack(envelope, packed);

    zmq_send(socket, packed, len, ZMQ_SNDMORE);
    zmq_send(socket, frame, strlen(frame), 0);
}

/* A node server in this process and a DEALER connected to it. */
struct inproc {
    void *context, *dealer;
    struct cairn_loop *loop;
    struct cairn_node_server *server;
};

/*
 * Starts node name on dir/name (group commit 5 ms; stream_timeout_ms 0:
 * the default); false when it did not start (the rest stays NULL).
 */
static bool
inproc_open(struct inproc *node, const char *dir, const char *name,
            uint64_t stream_timeout_ms)
{
    struct cairn_node_server_settings settings = {0};
    char data_dir[600];
    int zero = 0;

    memset(node, 0, sizeof(*node));
    node->context = zmq_ctx_new();
    snprintf(data_dir, sizeof(data_dir), "%s/%s", dir, name);
    settings.name = name;
    settings.endpoint = "tcp://127.0.0.1:*";
    settings.data_dir = data_dir;
    settings.group_commit_ms = 5;
    settings.stream_timeout_ms = stream_timeout_ms;
    CHECK_INT(cairn_loop_new(&node->loop), 0);
    CHECK_INT(cairn_node_server_new(node->loop, node->context, &settings,
                                    &node->server, NULL, 0),
              0);
    if (node->server == NULL)
        return false;
    node->dealer = zmq_socket(node->context, ZMQ_DEALER);
    zmq_setsockopt(node->dealer, ZMQ_LINGER, &zero, sizeof(zero));
    CHECK_INT(
        zmq_connect(node->dealer, cairn_node_server_endpoint(node->server)), 0);
    return true;
}

static void
inproc_close(struct inproc *node)
{
    if (node->dealer)
        zmq_close(node->dealer);
    cairn_node_server_free(node->server);
    cairn_loop_free(node->loop);
    zmq_ctx_term(node->context);
}

/*
 * In process, with a short stream timeout: a split APPLY whose body never
 * comes fails with ETIMEOUT; the next request of that stream is refused
 * (it may need what failed: an APPLY MAILBOX naming the bodies of a
 * failed APPLY MESSAGE), and the user's next stream still runs.
 */
static void
test_stalled_stream(const char *dir)
{
    Cairn__Envelope head = CAIRN__ENVELOPE__INIT;
    Cairn__Envelope next = CAIRN__ENVELOPE__INIT;
    Cairn__Envelope fresh = CAIRN__ENVELOPE__INIT;
    struct inproc node;
    int replies = 0, timeouts = 0, refused = 0, acks = 0;
    uint64_t deadline;

    if (!inproc_open(&node, dir, "inproc", 300))
        goto out;
    head.kind = next.kind = CAIRN__KIND__APPLY;
    head.user = next.user = "stall";
    head.request_id = 1;
    head.sequence = 1;
    head.payload_frames = next.payload_frames = 1;
    head.more = true;
    raw_send(node.dealer, &head,
             "MESSAGE (%{default 1111111111111111111111111111111111111111 "
             "10}\r\n)");
    next.request_id = 2;
    next.sequence = 2;
    raw_send(node.dealer, &next, seen_dlist);
    fresh = next;
    fresh.request_id = 3;
    fresh.sequence = 3;
    fresh.stream_start = true;
    raw_send(node.dealer, &fresh, seen_dlist);
    deadline = cairn_loop_now_ms() + 5000;
    while (replies < 3 && cairn_loop_now_ms() < deadline) {
        zmq_msg_t msg;

        cairn_loop_run_once(node.loop, 20);
        zmq_msg_init(&msg);
        while (zmq_msg_recv(&msg, node.dealer, ZMQ_DONTWAIT) >= 0) {
            Cairn__Envelope *reply = cairn__envelope__unpack(
                NULL, zmq_msg_size(&msg), zmq_msg_data(&msg));

            if (reply) {
                replies++;
                if (reply->request_id == 1 &&
                    reply->error_code == CAIRN_ETIMEOUT)
                    timeouts++;
                if (reply->request_id == 2 && reply->error_code == CAIRN_ESTATE)
                    refused++;
                if (reply->request_id == 3 && reply->kind == CAIRN__KIND__ACK)
                    acks++;
                cairn__envelope__free_unpacked(reply, NULL);
            }
        }
        zmq_msg_close(&msg);
    }
    CHECK_INT(timeouts, 1);
    CHECK_INT(refused, 1);
    CHECK_INT(acks, 1);
out:
    inproc_close(&node);
}

/* Sends the envelope alone: a request with no payload frame at all. */
static void
raw_send_bare(void *socket, const Cairn__Envelope *envelope)
{
    unsigned char packed[512];
    size_t len = cairn__envelope__pack(envelope, packed);

    zmq_send(socket, packed, len, 0);
}

/*
 * In process: PING, STATUS, STATS, VERIFY and COMPACT sent as the envelope
 * alone (payload_frames = 0; the contract says frame 1 is optional) are
 * answered with their reply kind, not refused as malformed.
 */
static void
test_empty_requests(const char *dir)
{
    static const struct {
        Cairn__Kind request, reply;
    } cases[] = {
        {CAIRN__KIND__PING, CAIRN__KIND__PONG},
        {CAIRN__KIND__STATUS_REQUEST, CAIRN__KIND__STATUS_REPLY},
        {CAIRN__KIND__STATS_REQUEST, CAIRN__KIND__STATS_REPLY},
        {CAIRN__KIND__VERIFY_REQUEST, CAIRN__KIND__VERIFY_REPLY},
        {CAIRN__KIND__COMPACT_REQUEST, CAIRN__KIND__COMPACT_REPLY},
    };
    struct inproc node;

    if (!inproc_open(&node, dir, "empty", 0))
        goto out;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Cairn__Envelope envelope = CAIRN__ENVELOPE__INIT;
        uint64_t deadline = cairn_loop_now_ms() + 5000;
        int kind = -1;

        envelope.kind = cases[i].request;
        envelope.request_id = 100 + i;
        raw_send_bare(node.dealer, &envelope);
        while (kind < 0 && cairn_loop_now_ms() < deadline) {
            zmq_msg_t msg;
            int more = 0;
            size_t more_size = sizeof(more);

            cairn_loop_run_once(node.loop, 20);
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, node.dealer, ZMQ_DONTWAIT) >= 0) {
                Cairn__Envelope *reply = cairn__envelope__unpack(
                    NULL, zmq_msg_size(&msg), zmq_msg_data(&msg));

                if (reply) {
                    kind = reply->kind;
                    CHECK_U64(reply->request_id, 100 + i);
                    cairn__envelope__free_unpacked(reply, NULL);
                }
                zmq_getsockopt(node.dealer, ZMQ_RCVMORE, &more, &more_size);
                while (more) { /* the reply's payload frames */
                    zmq_msg_close(&msg);
                    zmq_msg_init(&msg);
                    zmq_msg_recv(&msg, node.dealer, 0);
                    zmq_getsockopt(node.dealer, ZMQ_RCVMORE, &more, &more_size);
                }
            }
            zmq_msg_close(&msg);
        }
        CHECK_INT(kind, cases[i].reply);
    }
out:
    inproc_close(&node);
}

int
main(int argc, char **argv)
{
    char dir[] = "/tmp/cairn-test-server-XXXXXX";
    struct test_daemon daemon = {0};
    int status;

    if (argc != 2) {
        fprintf(stderr, "usage: test_server CAIRN_NODE\n");
        return 2;
    }
    node_binary = argv[1];
    CHECK(mkdtemp(dir) != NULL);
    CHECK_INT(test_daemon_start(&daemon, node_binary, dir, false), 0);
    if (daemon.pid <= 0)
        return check_exit("test_server");
    test_unknown_user(daemon.endpoint);
    test_recorded_sessions(daemon.endpoint, "replay-a", true);
    test_recorded_sessions(daemon.endpoint, "replay-b", false);
    test_reserve(daemon.endpoint, "replay-a");
    test_big_dlist(daemon.endpoint);
    test_ordering(daemon.endpoint);
    test_stats(daemon.endpoint);
    test_stats_fields(&daemon, dir);
    test_verify(daemon.endpoint);
    test_unuser(daemon.endpoint);
    test_big_message(&daemon, dir);
    test_resend_message(daemon.endpoint, dir);
    test_compact_and_reload(&daemon);
    status = test_daemon_stop(&daemon, SIGTERM);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    check_after_exit(dir);
    test_stalled_stream(dir);
    test_empty_requests(dir);
    test_remove_tree(dir);
    return check_exit("test_server");
}
