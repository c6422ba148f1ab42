/*
 * test_client.c - the node client against a fake node (a ROUTER socket
 * in this process): the wire form of a split APPLY (head, then one body
 * frame per continuation message, frames never spanning two bodies),
 * the node and user windows, reply kinds and errors, timeouts, a node
 * that is not there, and refused requests.
 */
#include "check.h"
#include "node_client.h"

#include <stdlib.h>
#include <string.h>
#include <zmq.h>

struct fake_node {
    void *context;
    void *socket;
    char endpoint[256];
};

struct message {
    zmq_msg_t frames[16];
    size_t count;
    Cairn__Envelope *envelope; /* frames[1] unpacked */
};

struct outcome {
    int calls;
    int status;
    size_t frame_count;
};

static void
on_reply(void *arg, const struct cairn_node_reply *reply)
{
    struct outcome *outcome = arg;

    outcome->calls++;
    outcome->status = reply->status;
    outcome->frame_count = reply->frame_count;
}

static void
fake_start(struct fake_node *fake)
{
    size_t size = sizeof(fake->endpoint);

    fake->context = zmq_ctx_new();
    fake->socket = zmq_socket(fake->context, ZMQ_ROUTER);
    CHECK_INT(zmq_bind(fake->socket, "tcp://127.0.0.1:*"), 0);
    zmq_getsockopt(fake->socket, ZMQ_LAST_ENDPOINT, fake->endpoint, &size);
}

static void
fake_stop(struct fake_node *fake)
{
    int zero = 0;

    zmq_setsockopt(fake->socket, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_close(fake->socket);
    zmq_ctx_term(fake->context);
}

static void
message_release(struct message *message)
{
    for (size_t i = 0; i < message->count; i++)
        zmq_msg_close(&message->frames[i]);
    if (message->envelope)
        cairn__envelope__free_unpacked(message->envelope, NULL);
    memset(message, 0, sizeof(*message));
}

/* Runs the client's loop until the fake node got a message (2 s max). */
static bool
fake_receive(struct fake_node *fake, struct cairn_loop *loop,
             struct message *message)
{
    uint64_t deadline = cairn_loop_now_ms() + 2000;

    memset(message, 0, sizeof(*message));
    while (cairn_loop_now_ms() < deadline) {
        int more = 1;

        zmq_msg_init(&message->frames[0]);
        if (zmq_msg_recv(&message->frames[0], fake->socket, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&message->frames[0]);
            cairn_loop_run_once(loop, 2);
            continue;
        }
        message->count = 1;
        more = zmq_msg_more(&message->frames[0]);
        while (more && message->count < 16) {
            zmq_msg_init(&message->frames[message->count]);
            zmq_msg_recv(&message->frames[message->count], fake->socket, 0);
            more = zmq_msg_more(&message->frames[message->count]);
            message->count++;
        }
        if (message->count >= 2)
            message->envelope =
                cairn__envelope__unpack(NULL, zmq_msg_size(&message->frames[1]),
                                        zmq_msg_data(&message->frames[1]));
        return message->envelope != NULL;
    }
    return false;
}

/* Replies to message's peer with an envelope of kind (and error code). */
static void
fake_reply(struct fake_node *fake, const struct message *to, Cairn__Kind kind,
           int error_code, const char *frame)
{
    Cairn__Envelope envelope = CAIRN__ENVELOPE__INIT;
    unsigned char packed[256];
    size_t len;

    envelope.kind = kind;
    envelope.request_id = to->envelope->request_id;
    envelope.error_code = error_code;
    envelope.payload_frames = frame ? 1 : 0;
    len = cairn__envelope__pack(&envelope, packed);
    zmq_send(fake->socket, zmq_msg_data((zmq_msg_t *)&to->frames[0]),
             zmq_msg_size((zmq_msg_t *)&to->frames[0]), ZMQ_SNDMORE);
    zmq_send(fake->socket, packed, len, frame ? ZMQ_SNDMORE : 0);
    if (frame)
        zmq_send(fake->socket, frame, strlen(frame), 0);
}

static void
run_until(struct cairn_loop *loop, const struct outcome *outcome, int calls)
{
    uint64_t deadline = cairn_loop_now_ms() + 3000;

    while (outcome->calls < calls && cairn_loop_now_ms() < deadline)
        cairn_loop_run_once(loop, 5);
}

static struct cairn_node_request
apply_request(const char *user, struct cairn_node_frame *frame)
{
    struct cairn_node_request request = {0};

    request.kind = CAIRN__KIND__APPLY;
    request.user = user;
    request.verb = "APPLY";
    request.key = "MESSAGE";
    request.frames = frame;
    request.frame_count = 1;
    return request;
}

/* Bodies of 3000, 0 and 5000 bytes with 4 KiB frames. */
static void
test_split_apply(void)
{
    struct cairn_node_client_settings settings = {0};
    struct cairn_loop *loop = NULL;
    struct cairn_node_client *client = NULL;
    struct fake_node fake;
    static char one[3000], three[5000];
    struct cairn_node_body bodies[3] = {{-1, 0, one, sizeof(one)},
                                        {-1, 0, NULL, 0},
                                        {-1, 0, three, sizeof(three)}};
    struct cairn_node_frame frame = {"MESSAGE (...)", 13};
    struct cairn_node_request request = apply_request("anne", &frame);
    struct outcome outcome = {0};
    struct message head, part;
    static const size_t expected_frames[] = {3000, 4096, 904};

    memset(one, 'a', sizeof(one));
    memset(three, 'c', sizeof(three));
    request.bodies = bodies;
    request.body_count = 3;
    request.sequence = 7;
    settings.max_frame = 4096;
    fake_start(&fake);
    CHECK_INT(cairn_loop_new(&loop), 0);
    CHECK_INT(cairn_node_client_new(loop, NULL, &settings, &client), 0);
    CHECK_INT(cairn_node_client_add_node(client, "n", fake.endpoint, NULL), 0);
    CHECK_INT(
        cairn_node_client_send(client, 0, &request, on_reply, &outcome, NULL),
        0);
    CHECK_INT(outcome.calls, 0); /* never called from inside send */
    CHECK(fake_receive(&fake, loop, &head));
    if (head.envelope) {
        CHECK_INT(head.envelope->kind, CAIRN__KIND__APPLY);
        CHECK_STR(head.envelope->user, "anne");
        CHECK_STR(head.envelope->key, "MESSAGE");
        CHECK_U64(head.envelope->sequence, 7);
        CHECK_INT(head.envelope->payload_frames, 1);
        CHECK(head.envelope->more);
        CHECK_INT(head.count, 3);
        CHECK_MEM(zmq_msg_data(&head.frames[2]), zmq_msg_size(&head.frames[2]),
                  "MESSAGE (...)", 13);
    }
    for (size_t i = 0; i < 3; i++) {
        CHECK(fake_receive(&fake, loop, &part));
        if (part.envelope == NULL)
            break;
        CHECK(part.envelope->continuation);
        CHECK_U64(part.envelope->request_id, head.envelope->request_id);
        CHECK_INT(part.envelope->payload_frames, 1);
        CHECK_INT(part.envelope->more, i < 2);
        CHECK_INT(part.count, 3);
        CHECK_U64(zmq_msg_size(&part.frames[2]), expected_frames[i]);
        CHECK_INT(((char *)zmq_msg_data(&part.frames[2]))[0],
                  i == 0 ? 'a' : 'c');
        message_release(&part);
    }
    fake_reply(&fake, &head, CAIRN__KIND__ACK, 0, NULL);
    run_until(loop, &outcome, 1);
    CHECK_INT(outcome.calls, 1);
    CHECK_INT(outcome.status, 0);
    message_release(&head);
    cairn_node_client_free(client);
    cairn_loop_free(loop);
    fake_stop(&fake);
}

/* A dlist over max_frame is cut into dlist_frames frames. */
static void
test_cut_dlist(void)
{
    struct cairn_node_client_settings settings = {0};
    struct cairn_loop *loop = NULL;
    struct cairn_node_client *client = NULL;
    struct fake_node fake;
    static char dlist[10000];
    struct cairn_node_frame frame = {dlist, sizeof(dlist)};
    struct cairn_node_request request = apply_request("anne", &frame);
    struct outcome outcome = {0};
    struct message head;

    memset(dlist, 'd', sizeof(dlist));
    settings.max_frame = 4096;
    fake_start(&fake);
    CHECK_INT(cairn_loop_new(&loop), 0);
    CHECK_INT(cairn_node_client_new(loop, NULL, &settings, &client), 0);
    CHECK_INT(cairn_node_client_add_node(client, "n", fake.endpoint, NULL), 0);
    CHECK_INT(
        cairn_node_client_send(client, 0, &request, on_reply, &outcome, NULL),
        0);
    CHECK(fake_receive(&fake, loop, &head));
    if (head.envelope) {
        CHECK_INT(head.envelope->dlist_frames, 3);
        CHECK_INT(head.envelope->payload_frames, 3);
        CHECK(!head.envelope->more);
        CHECK_INT(head.count, 5);
        if (head.count == 5) {
            CHECK_U64(zmq_msg_size(&head.frames[2]), 4096);
            CHECK_U64(zmq_msg_size(&head.frames[4]), 10000 - 2 * 4096);
        }
    }
    message_release(&head);
    cairn_node_client_free(client);
    cairn_loop_free(loop);
    fake_stop(&fake);
}

/* user_window 2, node_window 3: five for anne and two for bob. */
static void
test_windows_and_replies(void)
{
    struct cairn_node_client_settings settings = {0};
    struct cairn_loop *loop = NULL;
    struct cairn_node_client *client = NULL;
    struct fake_node fake;
    struct cairn_node_frame frame = {"X", 1};
    struct outcome outcomes[7] = {{0}};
    struct message seen[4];
    size_t anne = 0, bob = 0;

    settings.user_window = 2;
    settings.node_window = 3;
    fake_start(&fake);
    CHECK_INT(cairn_loop_new(&loop), 0);
    CHECK_INT(cairn_node_client_new(loop, NULL, &settings, &client), 0);
    CHECK_INT(cairn_node_client_add_node(client, "n", fake.endpoint, NULL), 0);
    for (int i = 0; i < 7; i++) {
        struct cairn_node_request request =
            apply_request(i < 5 ? "anne" : "bob", &frame);

        CHECK_INT(cairn_node_client_send(client, 0, &request, on_reply,
                                         &outcomes[i], NULL),
                  0);
    }
    for (size_t i = 0; i < 3; i++) {
        CHECK(fake_receive(&fake, loop, &seen[i]));
        if (seen[i].envelope && strcmp(seen[i].envelope->user, "anne") == 0)
            anne++;
        else
            bob++;
    }
    CHECK_INT(anne, 2);
    CHECK_INT(bob, 1);
    CHECK_INT(cairn_node_client_in_flight(client, 0), 3);
    CHECK_INT(cairn_node_client_queued(client, 0), 4);
    /* An ERROR reply gives its code; a wrong kind is a protocol error. */
    fake_reply(&fake, &seen[0], CAIRN__KIND__ERROR, CAIRN_ENOSPACE, NULL);
    fake_reply(&fake, &seen[1], CAIRN__KIND__PONG, 0, NULL);
    fake_reply(&fake, &seen[2], CAIRN__KIND__ACK, 0, "MISSING (x)");
    run_until(loop, &outcomes[0], 1);
    run_until(loop, &outcomes[5], 1);
    CHECK_INT(outcomes[0].status, CAIRN_ENOSPACE);
    CHECK_INT(outcomes[1].status, CAIRN_EPROTO);
    CHECK_INT(outcomes[5].status, 0);
    CHECK_INT(outcomes[5].frame_count, 1);
    /* A window slot opened: the next of anne goes out. */
    CHECK(fake_receive(&fake, loop, &seen[3]));
    if (seen[3].envelope)
        CHECK_STR(seen[3].envelope->user, "anne");
    for (size_t i = 0; i < 4; i++)
        message_release(&seen[i]);
    cairn_node_client_free(client); /* pending callbacks are not called */
    cairn_loop_free(loop);
    fake_stop(&fake);
}

/* Sent and never answered: ETIMEOUT; nobody there: EUNAVAILABLE. */
static void
test_timeouts(void)
{
    struct cairn_node_client_settings settings = {0};
    struct cairn_loop *loop = NULL;
    struct cairn_node_client *client = NULL;
    struct fake_node fake, gone;
    struct cairn_node_request ping = {0};
    struct outcome silent = {0}, absent = {0}, refused = {0};
    struct message message;
    static char big[5000];
    struct cairn_node_frame frames[2] = {{"X", 1}, {big, sizeof(big)}};
    struct cairn_node_request too_big = apply_request("anne", frames);

    too_big.frame_count = 2; /* only the dlist may be cut into frames */
    settings.timeout_ms = 200;
    settings.max_frame = 4096;
    fake_start(&fake);
    fake_start(&gone);
    fake_stop(&gone); /* its port is now closed */
    ping.kind = CAIRN__KIND__PING;
    CHECK_INT(cairn_loop_new(&loop), 0);
    CHECK_INT(cairn_node_client_new(loop, NULL, &settings, &client), 0);
    CHECK_INT(cairn_node_client_add_node(client, "n", fake.endpoint, NULL), 0);
    CHECK_INT(cairn_node_client_add_node(client, "gone", gone.endpoint, NULL),
              0);
    CHECK_INT(cairn_node_client_add_node(client, "n", fake.endpoint, NULL),
              CAIRN_EEXIST);
    CHECK_INT(
        cairn_node_client_send(client, 0, &too_big, on_reply, &refused, NULL),
        CAIRN_ETOOBIG);
    CHECK_INT(
        cairn_node_client_send(client, 9, &ping, on_reply, &refused, NULL),
        CAIRN_EINVAL);
    CHECK_INT(cairn_node_client_send(client, 0, &ping, on_reply, &silent, NULL),
              0);
    CHECK_INT(cairn_node_client_send(client, 1, &ping, on_reply, &absent, NULL),
              0);
    CHECK(fake_receive(&fake, loop, &message));
    message_release(&message);
    run_until(loop, &silent, 1);
    run_until(loop, &absent, 1);
    CHECK_INT(silent.status, CAIRN_ETIMEOUT);
    CHECK_INT(absent.status, CAIRN_EUNAVAILABLE);
    CHECK_INT(refused.calls, 0);
    cairn_node_client_free(client);
    cairn_loop_free(loop);
    fake_stop(&fake);
}

/*
 * NULL user, destination, verb and key mean "": they go out as empty
 * strings, the reply is delivered, and freeing the request (answered, or
 * pending when the client is freed) frees no static string.
 */
static void
test_null_strings(void)
{
    struct cairn_loop *loop = NULL;
    struct cairn_node_client *client = NULL;
    struct fake_node fake;
    struct cairn_node_request bare = {0}, partial = {0};
    struct outcome answered = {0}, pending = {0};
    struct message message;

    bare.kind = CAIRN__KIND__PING;
    partial.kind = CAIRN__KIND__STATUS_REQUEST;
    partial.destination = "d";
    fake_start(&fake);
    CHECK_INT(cairn_loop_new(&loop), 0);
    CHECK_INT(cairn_node_client_new(loop, NULL, NULL, &client), 0);
    CHECK_INT(cairn_node_client_add_node(client, "n", fake.endpoint, NULL), 0);
    CHECK_INT(
        cairn_node_client_send(client, 0, &bare, on_reply, &answered, NULL), 0);
    CHECK(fake_receive(&fake, loop, &message));
    if (message.envelope) {
        CHECK_STR(message.envelope->user, "");
        CHECK_STR(message.envelope->destination, "");
        CHECK_STR(message.envelope->verb, "");
        CHECK_STR(message.envelope->key, "");
        fake_reply(&fake, &message, CAIRN__KIND__PONG, 0, NULL);
    }
    message_release(&message);
    run_until(loop, &answered, 1);
    CHECK_INT(answered.calls, 1);
    CHECK_INT(answered.status, 0);
    CHECK_INT(
        cairn_node_client_send(client, 0, &partial, on_reply, &pending, NULL),
        0);
    CHECK(fake_receive(&fake, loop, &message));
    if (message.envelope) {
        CHECK_STR(message.envelope->destination, "d");
        CHECK_STR(message.envelope->user, "");
    }
    message_release(&message);
    cairn_node_client_free(client); /* frees the unanswered one */
    CHECK_INT(pending.calls, 0);
    cairn_loop_free(loop);
    fake_stop(&fake);
}

int
main(void)
{
    test_null_strings();
    test_split_apply();
    test_cut_dlist();
    test_windows_and_replies();
    test_timeouts();
    return check_exit("test_client");
}
