/*
 * test_server_compact.c - scheduled compaction in the node daemon, in
 * process (the config's interval cannot go below a minute): a user with
 * many one-update chunks is compacted by the schedule (interval 1 s)
 * while another user's APPLYs keep being ACKed (their latency printed),
 * the compacted user's own APPLYs are queued, not refused, and the store
 * verifies afterwards with fewer chunks; the last compaction time is
 * recorded in the catalog. A user being exported (rebalance) is left
 * alone by the schedule and refused by COMPACT.
 */
#include "check.h"
#include "node.h"
#include "node_client.h"
#include "node_server.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MANY_UPDATES 120

static const char seen_dlist[] =
    "SEEN %(USERID many MBOXNAME user.many UNIQUEID abc LASTREAD 1 LASTUID "
    "1 LASTCHANGE 1 SEENUIDS 1)";

struct watch {
    int compactions; /* of user "many", compacted */
    unsigned long long chunks_before, chunks_after, bytes_before, bytes_after,
        elapsed_ms;
    /* ACKs */
    unsigned sent[2], acked[2], refused[2];
    uint64_t sent_at[4096];
    uint64_t worst_ms, total_ms;
};

static struct watch watch;
static uint64_t many_sequence;
static int held_compactions; /* of user "held", which is being exported */

static void
on_event(void *arg, const struct cairn_node_server_event *event)
{
    (void)arg;
    if (strncmp(event->message, "compaction of held", 18) == 0)
        held_compactions++;
    if (sscanf(event->message,
               "compaction of many: compacted, chunks %llu -> %llu, bytes "
               "%llu -> %llu, %llu ms",
               &watch.chunks_before, &watch.chunks_after, &watch.bytes_before,
               &watch.bytes_after, &watch.elapsed_ms) == 5)
        watch.compactions++;
}

/* arg: 0 for "other" (latency measured), 1 for "many". */
static void
on_reply(void *arg, const struct cairn_node_reply *reply)
{
    int who = (int)(intptr_t)arg;

    if (reply->status != 0) {
        watch.refused[who]++;
        return;
    }
    watch.acked[who]++;
    if (who == 0) {
        uint64_t latency =
            cairn_loop_now_ms() - watch.sent_at[reply->request_id % 4096];

        watch.total_ms += latency;
        if (latency > watch.worst_ms)
            watch.worst_ms = latency;
    }
}

static int
send_seen(struct cairn_node_client *client, const char *user, int who)
{
    struct cairn_node_frame frame = {seen_dlist, strlen(seen_dlist)};
    struct cairn_node_request request = {0};
    uint64_t id = 0;
    int rc;

    request.kind = CAIRN__KIND__APPLY;
    request.user = user;
    request.verb = "APPLY";
    request.key = "SEEN";
    request.frames = &frame;
    request.frame_count = 1;
    if (strcmp(user, "many") == 0) /* sequenced: recorded in the index */
        request.sequence = ++many_sequence;
    rc = cairn_node_client_send(client, 0, &request, on_reply,
                                (void *)(intptr_t)who, &id);
    if (rc == 0) {
        watch.sent[who]++;
        watch.sent_at[id % 4096] = cairn_loop_now_ms();
    }
    return rc;
}

static void
run_until_acked(struct cairn_loop *loop, int who, uint64_t deadline)
{
    while (watch.acked[who] + watch.refused[who] < watch.sent[who] &&
           cairn_loop_now_ms() < deadline)
        cairn_loop_run_once(loop, 2);
}

struct verify_watch {
    bool answered;
    int status;
    size_t results, passed;
    unsigned other_acked_before; /* other's ACKs seen before the reply */
};

static struct verify_watch verify_watch;

static void
on_verify_reply(void *arg, const struct cairn_node_reply *reply)
{
    Cairn__UserResults *results = NULL;

    (void)arg;
    verify_watch.answered = true;
    verify_watch.status = reply->status;
    verify_watch.other_acked_before = watch.acked[0];
    if (reply->frame_count == 1)
        results = cairn__user_results__unpack(NULL, reply->frames[0].len,
                                              reply->frames[0].data);
    if (results == NULL)
        return;
    verify_watch.results = results->n_results;
    for (size_t i = 0; i < results->n_results; i++)
        if (results->results[i]->code == 0 &&
            strlen(results->results[i]->digest) == 40)
            verify_watch.passed++;
        else if (i == 0)
            fprintf(stderr, "verify %s: %d %s [%s]\n",
                    results->results[i]->user, results->results[i]->code,
                    results->results[i]->text, results->results[i]->digest);
    cairn__user_results__free_unpacked(results, NULL);
}

/*
 * A VERIFY of every user (USERS of them) runs user by user on the worker:
 * another user's APPLYs sent after it are ACKed before its reply.
 */
static void
test_verify_alongside(struct cairn_loop *loop, struct cairn_node_client *client,
                      size_t users)
{
    struct cairn_node_request verify = {0};
    uint64_t start, deadline, next_send;
    char name[32];

    /* Generous limits that only stop a hung run: creating the users
     * takes seconds under ASan on a busy machine, so the VERIFY gets its
     * own limit once they exist. */
    deadline = cairn_loop_now_ms() + 180000;
    for (size_t i = 0; i < users; i++) {
        snprintf(name, sizeof(name), "user%zu", i);
        CHECK_INT(send_seen(client, name, 1), 0);
        if (i % 64 == 63)
            run_until_acked(loop, 1, deadline);
    }
    run_until_acked(loop, 1, deadline);
    deadline = cairn_loop_now_ms() + 300000;
    memset(&watch, 0, sizeof(watch));
    verify.kind = CAIRN__KIND__VERIFY_REQUEST; /* no frame: every user */
    CHECK_INT(
        cairn_node_client_send(client, 0, &verify, on_verify_reply, NULL, NULL),
        0);
    start = next_send = cairn_loop_now_ms();
    while (!verify_watch.answered && cairn_loop_now_ms() < deadline) {
        if (cairn_loop_now_ms() >= next_send) {
            send_seen(client, "other", 0);
            next_send += 5;
        }
        cairn_loop_run_once(loop, 1);
    }
    run_until_acked(loop, 0, deadline);
    printf("VERIFY of %zu users: %llu ms, %zu passed; meanwhile %u updates "
           "of another user, %u ACKed before the VERIFY reply, ACK latency "
           "mean %.2f ms, worst %llu ms\n",
           verify_watch.results,
           (unsigned long long)(cairn_loop_now_ms() - start),
           verify_watch.passed, watch.sent[0], verify_watch.other_acked_before,
           watch.acked[0] ? (double)watch.total_ms / watch.acked[0] : 0.0,
           (unsigned long long)watch.worst_ms);
    CHECK(verify_watch.answered);
    CHECK_INT(verify_watch.status, 0);
    CHECK(verify_watch.results >= users);
    CHECK_INT(verify_watch.passed, verify_watch.results);
    CHECK(verify_watch.other_acked_before > 0);
    CHECK_INT(watch.acked[0], watch.sent[0]);
}

/* A reply's status and first frame, for the calls made one at a time. */
struct call {
    bool answered;
    int status;
    Cairn__UserResults *results; /* COMPACT: owned */
};

static void
on_call_reply(void *arg, const struct cairn_node_reply *reply)
{
    struct call *call = arg;

    call->answered = true;
    call->status = reply->status;
    if (reply->status == 0 && reply->frame_count == 1 &&
        reply->envelope->kind == CAIRN__KIND__COMPACT_REPLY)
        call->results = cairn__user_results__unpack(NULL, reply->frames[0].len,
                                                    reply->frames[0].data);
}

static void
call_node(struct cairn_loop *loop, struct cairn_node_client *client,
          struct cairn_node_request *request, struct call *call)
{
    uint64_t deadline = cairn_loop_now_ms() + 300000;

    memset(call, 0, sizeof(*call));
    CHECK_INT(
        cairn_node_client_send(client, 0, request, on_call_reply, call, NULL),
        0);
    while (!call->answered && cairn_loop_now_ms() < deadline)
        cairn_loop_run_once(loop, 5);
    CHECK(call->answered);
}

/*
 * A user being exported (cairnctl rebalance reads its data file) is not
 * compacted under the reader: EXPORT holds it; an explicit COMPACT says
 * so per user.
 */
static void
start_export(struct cairn_loop *loop, struct cairn_node_client *client)
{
    struct cairn_node_request export = {
        .kind = CAIRN__KIND__TRANSFER_BEGIN, .user = "held", .verb = "EXPORT"};
    struct call call;

    call_node(loop, client, &export, &call);
    CHECK_INT(call.status, 0);
}

static void
check_export_held(struct cairn_loop *loop, struct cairn_node_client *client)
{
    static const char *const users[] = {"held"};
    Cairn__UserRequest asked = CAIRN__USER_REQUEST__INIT;
    struct cairn_node_request compact = {.kind = CAIRN__KIND__COMPACT_REQUEST};
    unsigned char packed[64];
    struct cairn_node_frame frame = {packed, 0};
    uint64_t until = cairn_loop_now_ms() + 2500;
    struct call call;

    /* Two more schedule ticks with "held" due: still not compacted. */
    while (cairn_loop_now_ms() < until)
        cairn_loop_run_once(loop, 5);
    CHECK_INT(held_compactions, 0);
    asked.users = (char **)users;
    asked.n_users = 1;
    frame.len = cairn__user_request__pack(&asked, packed);
    compact.frames = &frame;
    compact.frame_count = 1;
    call_node(loop, client, &compact, &call);
    CHECK_INT(call.status, 0);
    CHECK(call.results != NULL && call.results->n_results == 1);
    if (call.results != NULL && call.results->n_results == 1) {
        CHECK_INT(call.results->results[0]->code, CAIRN_ELOCKED);
        CHECK_STR(call.results->results[0]->text, "being exported (rebalance)");
    }
    printf("user held while exported: %d compactions by the schedule "
           "(expected 0), COMPACT answered \"%s\"\n",
           held_compactions,
           call.results != NULL && call.results->n_results == 1
               ? call.results->results[0]->text
               : "?");
    cairn__user_results__free_unpacked(call.results, NULL);
}

static void
check_store(const char *data_dir)
{
    struct cairn_catalog *catalog = NULL;
    struct cairn_store *store = NULL;
    char path[600], error[256] = "";
    int64_t compacted_ms = 0;
    uint64_t sequence = 0;

    snprintf(path, sizeof(path), "%s/catalog.db", data_dir);
    CHECK_INT(cairn_catalog_open(path, &catalog), 0);
    if (catalog == NULL)
        return;
    CHECK_INT(cairn_catalog_get_compacted(catalog, "many", &compacted_ms), 0);
    CHECK(compacted_ms > 0);
    CHECK_INT(cairn_store_open_user(catalog, data_dir, "many", 0, &store), 0);
    if (store) {
        CHECK_INT(
            cairn_store_verify(store, CAIRN_VERIFY_FULL, error, sizeof(error)),
            0);
        /* the last sequence survives the compaction (and the restart) */
        CHECK_INT(cairn_store_get_sequence(store, &sequence), 0);
        CHECK_U64(sequence, many_sequence);
        cairn_store_close(store);
    }
    cairn_catalog_free(catalog);
}

int
main(void)
{
    char dir[] = "/tmp/cairn-test-compact-XXXXXX", command[600];
    struct cairn_node_server_settings settings = {0};
    struct cairn_node_client_settings client_settings = {0};
    struct cairn_loop *loop = NULL;
    struct cairn_node_server *server = NULL;
    struct cairn_node_client *client = NULL;
    uint64_t start, deadline, next_send;

    CHECK(mkdtemp(dir) != NULL);
    settings.name = "compact";
    settings.endpoint = "tcp://127.0.0.1:*";
    settings.data_dir = dir;
    settings.group_commit_ms = 0; /* a commit, so a chunk, per update */
    settings.min_chunk = 1024 * 1024;
    settings.work_threshold = 1;
    settings.compaction_enabled = false; /* until its chunks are written */
    settings.compaction_interval_ms = 1000;
    CHECK_INT(cairn_loop_new(&loop), 0);
    CHECK_INT(cairn_node_server_new(loop, NULL, &settings, &server, NULL, 0),
              0);
    if (server == NULL)
        return check_exit("test_server_compact");
    cairn_node_server_set_event_handler(server, on_event, NULL);
    /* requests may wait minutes under ASan on a loaded machine (a VERIFY
     * of every user timed out at the default 30 s): the test's own
     * deadlines are the hang guards */
    client_settings.timeout_ms = 600000;
    CHECK_INT(cairn_node_client_new(loop, NULL, &client_settings, &client), 0);
    CHECK_INT(cairn_node_client_add_node(
                  client, "n", cairn_node_server_endpoint(server), NULL),
              0);
    /* One update at a time: each its own commit, so its own chunk. */
    deadline = cairn_loop_now_ms() + 120000;
    for (int i = 0; i < MANY_UPDATES; i++) {
        CHECK_INT(send_seen(client, "many", 1), 0);
        run_until_acked(loop, 1, deadline);
    }
    CHECK_INT(watch.acked[1], MANY_UPDATES);
    /* "held": a few chunks of its own, then exported (cairnctl's first
     * step of a move), so due but never compacted below. */
    for (int i = 0; i < 8; i++) {
        CHECK_INT(send_seen(client, "held", 0), 0);
        run_until_acked(loop, 0, deadline);
    }
    memset(watch.sent, 0, sizeof(watch.sent[0]));
    memset(watch.acked, 0, sizeof(watch.acked[0]));
    watch.total_ms = watch.worst_ms = 0;
    start_export(loop, client);
    settings.compaction_enabled = true;
    CHECK_INT(cairn_node_server_reload(server, &settings), 0);
    /* Then other's updates every 5 ms and many's every 50 ms until the
     * schedule has compacted many (never compacted: due once the server
     * has run for an interval). */
    start = next_send = cairn_loop_now_ms();
    deadline = start + 10000;
    while (watch.compactions == 0 && cairn_loop_now_ms() < deadline) {
        if (cairn_loop_now_ms() >= next_send) {
            send_seen(client, "other", 0);
            if (watch.sent[0] % 10 == 0)
                send_seen(client, "many", 1);
            next_send += 5;
        }
        cairn_loop_run_once(loop, 1);
    }
    run_until_acked(loop, 0, deadline + 5000);
    run_until_acked(loop, 1, deadline + 5000);
    printf("scheduled compaction of many after %llu ms: chunks %llu -> %llu,"
           " bytes %llu -> %llu in %llu ms;"
           " meanwhile %u updates of another user, %u acked, ACK latency "
           "mean %.2f ms, worst %llu ms; many's own updates %u sent, %u "
           "acked\n",
           (unsigned long long)(cairn_loop_now_ms() - start),
           watch.chunks_before, watch.chunks_after, watch.bytes_before,
           watch.bytes_after, watch.elapsed_ms, watch.sent[0], watch.acked[0],
           watch.acked[0] ? (double)watch.total_ms / watch.acked[0] : 0.0,
           (unsigned long long)watch.worst_ms, watch.sent[1], watch.acked[1]);
    CHECK_INT(watch.compactions, 1);
    CHECK(watch.chunks_before >= MANY_UPDATES);
    CHECK(watch.chunks_after < watch.chunks_before / 10);
    CHECK(watch.sent[0] > 0);
    CHECK_INT(watch.acked[0], watch.sent[0]);
    CHECK_INT(watch.acked[1], watch.sent[1]);
    CHECK_INT(watch.refused[0] + watch.refused[1], 0);
    check_export_held(loop, client);
    settings.compaction_enabled = false;
    settings.group_commit_ms = 20;
    CHECK_INT(cairn_node_server_reload(server, &settings), 0);
    test_verify_alongside(loop, client, 400);
    cairn_node_client_free(client);
    cairn_node_server_free(server);
    cairn_loop_free(loop);
    check_store(dir);
    snprintf(command, sizeof(command), "rm -rf '%s'", dir);
    CHECK_INT(system(command), 0);
    return check_exit("test_server_compact");
}
