/*
 * test_server_heal.c - self-heal between two in-process nodes ("a" and
 * "b", peers of each other) for the cases the damage drills
 * (integration_heal_drills) do not make: replicas that both verify.
 *   older: a's copy lacks b's last update (a later stamp): a's scrub
 *          finds the digests differ, has b verify itself, compares again
 *          after the settle time, pulls b's copy; both digests then agree.
 *   split: a and b each took another update with the same stamp: the
 *          newest stamps are equal, so neither can be called the good
 *          one: a reports them diverged and keeps its file as it was.
 * Only a scrubs (interval 1 s); events are awaited, not times.
 */
#include "check.h"
#include "node.h"
#include "node_client.h"
#include "node_server.h"
#include "node_test_util.h"

#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct events {
    int healed_older, diverged_split, other_diverged, failed;
};

static struct events events;

static void
on_event(void *arg, const struct cairn_node_server_event *event)
{
    (void)arg;
    if (strncmp(event->message, "heal: older healed from b", 25) == 0)
        events.healed_older++;
    else if (strncmp(event->message, "heal: split has DIVERGED", 24) == 0)
        events.diverged_split++;
    else if (strstr(event->message, "DIVERGED") != NULL)
        events.other_diverged++;
    if (strstr(event->message, "heal:") != NULL &&
        (strstr(event->message, "failed") != NULL ||
         strstr(event->message, "NO GOOD REPLICA") != NULL))
        events.failed++;
    if (strncmp(event->message, "heal:", 5) == 0)
        printf("event: %s\n", event->message);
}

struct call {
    bool answered;
    int status;
    Cairn__UserResults *results;
};

static void
on_reply(void *arg, const struct cairn_node_reply *reply)
{
    struct call *call = arg;

    call->answered = true;
    call->status = reply->status;
    if (reply->status == 0 && reply->frame_count > 0 &&
        reply->envelope->kind == CAIRN__KIND__VERIFY_REPLY)
        call->results = cairn__user_results__unpack(
            NULL, reply->frames[0].len, (const uint8_t *)reply->frames[0].data);
}

static void
wait_call(struct cairn_loop *loop, struct call *call)
{
    uint64_t deadline = cairn_loop_now_ms() + 60000;

    while (!call->answered && cairn_loop_now_ms() < deadline)
        cairn_loop_run_once(loop, 5);
    CHECK(call->answered);
}

/* APPLY SUB of user.USER.FOLDER for user on node, stamped stamp. */
static void
subscribe(struct cairn_loop *loop, struct cairn_node_client *client,
          size_t node, const char *user, const char *folder, int64_t stamp)
{
    char dlist[256];
    struct cairn_node_frame frame;
    struct cairn_node_request request = {0};
    struct call call = {0};

    snprintf(dlist, sizeof(dlist), "SUB %%(USERID %s MBOXNAME user.%s.%s)",
             user, user, folder);
    frame.data = dlist;
    frame.len = strlen(dlist);
    request.kind = CAIRN__KIND__APPLY;
    request.user = user;
    request.verb = "APPLY";
    request.key = "SUB";
    request.update_time = stamp;
    request.frames = &frame;
    request.frame_count = 1;
    CHECK_INT(
        cairn_node_client_send(client, node, &request, on_reply, &call, NULL),
        0);
    wait_call(loop, &call);
    CHECK_INT(call.status, 0);
}

/* user's digest on node from a full VERIFY (copied into digest). */
static int
verify_digest(struct cairn_loop *loop, struct cairn_node_client *client,
              size_t node, const char *user, char digest[41])
{
    Cairn__UserRequest asked = CAIRN__USER_REQUEST__INIT;
    char *users[1] = {(char *)user};
    unsigned char packed[256];
    struct cairn_node_frame frame = {packed, 0};
    struct cairn_node_request request = {0};
    struct call call = {0};
    int code = CAIRN_EPROTO;

    asked.users = users;
    asked.n_users = 1;
    asked.full = true;
    frame.len = cairn__user_request__pack(&asked, packed);
    request.kind = CAIRN__KIND__VERIFY_REQUEST;
    request.frames = &frame;
    request.frame_count = 1;
    digest[0] = '\0';
    CHECK_INT(
        cairn_node_client_send(client, node, &request, on_reply, &call, NULL),
        0);
    wait_call(loop, &call);
    if (call.results != NULL && call.results->n_results == 1) {
        code = call.results->results[0]->code;
        snprintf(digest, 41, "%s",
                 call.results->results[0]->digest
                     ? call.results->results[0]->digest
                     : "");
    }
    if (call.results)
        cairn__user_results__free_unpacked(call.results, NULL);
    return code;
}

static void
wait_for(struct cairn_loop *loop, const int *counter)
{
    uint64_t deadline = cairn_loop_now_ms() + 60000;

    while (*counter < 1 && cairn_loop_now_ms() < deadline)
        cairn_loop_run_once(loop, 5);
}

/* Hex SHA-1 and size of a file, or "" when it cannot be read. */
static void
file_identity(const char *path, char out[64])
{
    char hex[41] = "";
    uint64_t size = 0;

    out[0] = '\0';
    if (path != NULL && cairn_file_sha1(path, hex, &size) == 0)
        snprintf(out, 64, "%s/%llu", hex, (unsigned long long)size);
}

/* A free 127.0.0.1 port: a server bound to "*" tells it, then goes. */
static int
free_port(struct cairn_loop *loop, const char *dir)
{
    struct cairn_node_server_settings settings = {0};
    struct cairn_node_server *server = NULL;
    const char *endpoint, *colon;
    int port = 0;

    settings.name = "probe";
    settings.endpoint = "tcp://127.0.0.1:*";
    settings.data_dir = dir;
    if (cairn_node_server_new(loop, NULL, &settings, &server, NULL, 0) == 0 &&
        (endpoint = cairn_node_server_endpoint(server)) != NULL &&
        (colon = strrchr(endpoint, ':')) != NULL)
        port = atoi(colon + 1);
    cairn_node_server_free(server);
    return port;
}

int
main(void)
{
    char dir[] = "/tmp/cairn-test-heal-XXXXXX", dir_a[600], dir_b[600];
    char probe[600], endpoint_a[64], endpoint_b[64], command[700];
    struct cairn_node_server_settings a = {0}, b = {0};
    struct cairn_node_peer peer_of_a, peer_of_b;
    struct cairn_node_server *server_a = NULL, *server_b = NULL;
    struct cairn_node_client *client = NULL;
    struct cairn_loop *loop = NULL;
    char digest_a[41], digest_b[41], before[64], after[64];
    char *split_path = NULL;
    int64_t stamp = (int64_t)time(NULL) - 100;
    size_t node_a = 0, node_b = 0;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(dir_a, sizeof(dir_a), "%s/a", dir);
    snprintf(dir_b, sizeof(dir_b), "%s/b", dir);
    snprintf(probe, sizeof(probe), "%s/probe", dir);
    CHECK_INT(cairn_loop_new(&loop), 0);
    snprintf(endpoint_a, sizeof(endpoint_a), "tcp://127.0.0.1:%d",
             free_port(loop, probe));
    snprintf(endpoint_b, sizeof(endpoint_b), "tcp://127.0.0.1:%d",
             free_port(loop, probe));
    peer_of_a = (struct cairn_node_peer){"b", endpoint_b};
    peer_of_b = (struct cairn_node_peer){"a", endpoint_a};
    a.name = "a";
    a.endpoint = endpoint_a;
    a.data_dir = dir_a;
    a.scrub_interval_ms = 1000; /* the first round a second after start */
    a.scrub_full = true;
    a.scrub_heal = true;
    a.peers = &peer_of_a;
    a.peer_count = 1;
    b = a;
    b.name = "b";
    b.endpoint = endpoint_b;
    b.data_dir = dir_b;
    b.peers = &peer_of_b;
    b.scrub_enabled = false;
    CHECK_INT(cairn_node_server_new(loop, NULL, &a, &server_a, NULL, 0), 0);
    CHECK_INT(cairn_node_server_new(loop, NULL, &b, &server_b, NULL, 0), 0);
    if (server_a == NULL || server_b == NULL)
        return check_exit("test_server_heal");
    cairn_node_server_set_event_handler(server_a, on_event, NULL);
    CHECK_INT(cairn_node_client_new(loop, NULL, NULL, &client), 0);
    CHECK_INT(cairn_node_client_add_node(client, "a", endpoint_a, &node_a), 0);
    CHECK_INT(cairn_node_client_add_node(client, "b", endpoint_b, &node_b), 0);

    /* older: both replicas took INBOX; b also Later, stamped later */
    subscribe(loop, client, node_a, "older", "INBOX", stamp);
    subscribe(loop, client, node_b, "older", "INBOX", stamp);
    subscribe(loop, client, node_b, "older", "Later", stamp + 10);
    /* split: the same stamp, different updates */
    subscribe(loop, client, node_a, "split", "Left", stamp);
    subscribe(loop, client, node_b, "split", "Right", stamp);
    split_path = test_catalog_data_path(dir_a, "split");
    file_identity(split_path, before);

    CHECK_INT(verify_digest(loop, client, node_a, "older", digest_a), 0);
    CHECK_INT(verify_digest(loop, client, node_b, "older", digest_b), 0);
    CHECK(strcmp(digest_a, digest_b) != 0);

    /* a's scrub: settings taken again with the scrub on */
    a.scrub_enabled = true;
    a.peers = NULL;
    a.peer_count = 0;
    CHECK_INT(cairn_node_server_reload(server_a, &a), 0);
    wait_for(loop, &events.healed_older);
    wait_for(loop, &events.diverged_split);
    CHECK_INT(events.healed_older, 1);
    /* reported again by each scrub of it (interval 1 s here) */
    CHECK(events.diverged_split >= 1);
    CHECK_INT(events.other_diverged, 0);
    CHECK_INT(events.failed, 0);

    CHECK_INT(verify_digest(loop, client, node_a, "older", digest_a), 0);
    CHECK_INT(verify_digest(loop, client, node_b, "older", digest_b), 0);
    CHECK_STR(digest_a, digest_b);
    printf("older: a and b agree after the heal (%s)\n", digest_a);
    file_identity(split_path, after);
    CHECK(before[0] != '\0');
    CHECK_STR(after, before);
    CHECK_INT(verify_digest(loop, client, node_a, "split", digest_a), 0);
    CHECK_INT(verify_digest(loop, client, node_b, "split", digest_b), 0);
    CHECK(strcmp(digest_a, digest_b) != 0);
    printf("split: diverged, a's file as it was (%s)\n", after);

    cairn_node_client_free(client);
    cairn_node_server_free(server_a);
    cairn_node_server_free(server_b);
    cairn_loop_free(loop);
    free(split_path);
    snprintf(command, sizeof(command), "rm -rf '%s'", dir);
    CHECK_INT(system(command), 0);
    return check_exit("test_server_heal");
}
