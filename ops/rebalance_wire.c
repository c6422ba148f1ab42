/*
 * rebalance_wire.c - the requests `cairnctl rebalance` (and repair and
 * import) make: to nodes over the node client (STATS for who holds what,
 * VERIFY for digests, PULL to have a node copy a user from another node
 * itself (node/pull.c), the TRANSFER verbs of node/transfer.c to push a
 * local file), and to the router's control endpoint over a REQ socket
 * (router/control.c).
 */
#include "common.h"
#include "curve.h"
#include "node_client.h"
#include "rebalance_int.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

/*
 * One node client for the whole run: a connection per node made once
 * (cairn_node_client_call makes a socket per request, which costs a
 * connect and a handshake on every piece of a copy).
 */
struct cairn_rebalance_link {
    const struct cairn_config *config;
    struct cairn_loop *loop;
    struct cairn_node_client *client;
    /* PULL requests are answered when the copy is done: their own
     * client, with a deadline for a copy, not for one exchange */
    struct cairn_node_client *pull_client;
};

int
cairn_rebalance_link_new(const struct cairn_config *config,
                         struct cairn_rebalance_link **out)
{
    struct cairn_node_client_settings settings = {
        .timeout_ms = CAIRN_REBALANCE_CALL_TIMEOUT_MS};
    struct cairn_node_client_settings pull_settings = {
        .timeout_ms = CAIRN_REBALANCE_PULL_TIMEOUT_MS, .user_window = 1};
    struct cairn_rebalance_link *link = calloc(1, sizeof(*link));
    int rc = CAIRN_ENOMEM;

    *out = NULL;
    if (link == NULL)
        return rc;
    link->config = config;
    if ((rc = cairn_loop_new(&link->loop)) < 0 ||
        (rc = cairn_node_client_new(link->loop, NULL, &settings,
                                    &link->client)) < 0 ||
        (rc = cairn_node_client_new(link->loop, NULL, &pull_settings,
                                    &link->pull_client)) < 0)
        goto out;
    for (size_t i = 0; i < cairn_config_node_count(config) && rc == 0; i++) {
        const struct cairn_config_node *node = cairn_config_node_at(config, i);

        rc = cairn_node_client_add_node(link->client, node->origin.name,
                                        node->endpoint, NULL);
        if (rc == 0)
            rc = cairn_node_client_add_node(
                link->pull_client, node->origin.name, node->endpoint, NULL);
    }
out:
    if (rc < 0) {
        cairn_rebalance_link_free(link);
        return rc;
    }
    *out = link;
    return 0;
}

void
cairn_rebalance_link_free(struct cairn_rebalance_link *link)
{
    if (link == NULL)
        return;
    cairn_node_client_free(link->client);
    cairn_node_client_free(link->pull_client);
    cairn_loop_free(link->loop);
    cairn_rebalance_router_close();
    free(link);
}

struct call_state {
    bool done;
    int status;
    struct cairn_node_result *result;
};

/* Keeps a copy of the reply (the client's is borrowed for the call). */
static void
on_reply(void *arg, const struct cairn_node_reply *reply)
{
    struct call_state *state = arg;
    struct cairn_node_result *result = state->result;
    size_t size;
    uint8_t *packed;

    state->done = true;
    state->status = reply->status;
    if (reply->envelope == NULL)
        return;
    size = cairn__envelope__get_packed_size(reply->envelope);
    if ((packed = malloc(size + 1)) == NULL) {
        state->status = CAIRN_ENOMEM;
        return;
    }
    cairn__envelope__pack(reply->envelope, packed);
    result->envelope = cairn__envelope__unpack(NULL, size, packed);
    free(packed);
    result->frames = calloc(reply->frame_count + 1, sizeof(*result->frames));
    if (result->frames == NULL) {
        state->status = CAIRN_ENOMEM;
        return;
    }
    for (size_t i = 0; i < reply->frame_count; i++) {
        char *copy = malloc(reply->frames[i].len + 1);

        if (copy == NULL) {
            state->status = CAIRN_ENOMEM;
            return;
        }
        memcpy(copy, reply->frames[i].data, reply->frames[i].len);
        copy[reply->frames[i].len] = '\0';
        result->frames[i] =
            (struct cairn_node_frame){copy, reply->frames[i].len};
        result->frame_count++;
    }
}

/* One request; on an ERROR reply text gets the node's words. */
static int
call(struct cairn_rebalance_link *link, const char *node,
     struct cairn_node_request *request, struct cairn_node_result *result,
     char *text, size_t text_size)
{
    struct call_state state = {false, 0, result};
    size_t index = 0;
    int rc;

    memset(result, 0, sizeof(*result));
    rc = cairn_node_client_find_node(link->client, node, &index);
    if (rc == 0)
        rc = cairn_node_client_send(link->client, index, request, on_reply,
                                    &state, NULL);
    /* The client times requests out itself: this ends. */
    while (rc == 0 && !state.done)
        rc = cairn_loop_run_once(link->loop, 100);
    if (rc == 0)
        rc = state.status;
    if (rc < 0 && text != NULL && text_size > 0) {
        const char *why = result->envelope && result->envelope->error_text &&
                                  result->envelope->error_text[0]
                              ? result->envelope->error_text
                              : cairn_strerror(rc);

        snprintf(text, text_size, "%s", why);
    }
    return rc;
}

int
cairn_rebalance_node_users(struct cairn_rebalance_link *link, const char *node,
                           Cairn__StatusReply **reply)
{
    struct cairn_node_request request = {.kind = CAIRN__KIND__STATS_REQUEST};
    struct cairn_node_result result = {0};
    int rc;

    *reply = NULL;
    if ((rc = call(link, node, &request, &result, NULL, 0)) < 0)
        goto out;
    rc = CAIRN_EPROTO;
    if (result.frame_count < 1)
        goto out;
    *reply = cairn__status_reply__unpack(NULL, result.frames[0].len,
                                         result.frames[0].data);
    rc = *reply != NULL ? 0 : CAIRN_EPROTO;
out:
    cairn_node_result_release(&result);
    return rc;
}

int
cairn_rebalance_node_digest(struct cairn_rebalance_link *link, const char *node,
                            const char *userid, char digest[41], char *text,
                            size_t text_size)
{
    Cairn__UserRequest ask = CAIRN__USER_REQUEST__INIT;
    Cairn__UserResults *results = NULL;
    char *users[1] = {(char *)userid};
    uint8_t packed[512];
    struct cairn_node_frame frame = {packed, 0};
    struct cairn_node_request request = {.kind = CAIRN__KIND__VERIFY_REQUEST,
                                         .frames = &frame,
                                         .frame_count = 1};
    struct cairn_node_result result = {0};
    int rc = CAIRN_EINVAL;

    digest[0] = '\0';
    ask.users = users;
    ask.n_users = 1;
    if (cairn__user_request__get_packed_size(&ask) > sizeof(packed))
        goto out;
    frame.len = cairn__user_request__pack(&ask, packed);
    if ((rc = call(link, node, &request, &result, text, text_size)) < 0)
        goto out;
    rc = CAIRN_EPROTO;
    if (result.frame_count < 1 ||
        (results = cairn__user_results__unpack(
             NULL, result.frames[0].len, result.frames[0].data)) == NULL ||
        results->n_results != 1)
        goto out;
    rc = results->results[0]->code;
    if (rc < 0)
        snprintf(text, text_size, "%s",
                 results->results[0]->text && results->results[0]->text[0]
                     ? results->results[0]->text
                     : cairn_strerror(rc));
    else
        snprintf(digest, 41, "%s",
                 results->results[0]->digest ? results->results[0]->digest
                                             : "");
out:
    if (results)
        cairn__user_results__free_unpacked(results, NULL);
    cairn_node_result_release(&result);
    return rc;
}

/* EXPORT at the source: the file's size and SHA-1, owned. */
static int
export_begin(struct cairn_rebalance_link *link, const char *source,
             const char *userid, Cairn__TransferBegin **begin, char *text,
             size_t text_size)
{
    struct cairn_node_request request = {
        .kind = CAIRN__KIND__TRANSFER_BEGIN, .user = userid, .verb = "EXPORT"};
    struct cairn_node_result result = {0};
    int rc;

    *begin = NULL;
    if ((rc = call(link, source, &request, &result, text, text_size)) == 0) {
        *begin = result.frame_count < 1
                     ? NULL
                     : cairn__transfer_begin__unpack(NULL, result.frames[0].len,
                                                     result.frames[0].data);
        rc = *begin != NULL ? 0 : CAIRN_EPROTO;
    }
    cairn_node_result_release(&result);
    return rc;
}

int
cairn_rebalance_node_file(struct cairn_rebalance_link *link, const char *node,
                          const char *userid, uint64_t *size, char sha1[41],
                          char *text, size_t text_size)
{
    Cairn__TransferBegin *begin = NULL;
    int rc = export_begin(link, node, userid, &begin, text, text_size);

    if (rc == 0) {
        *size = begin->total_bytes;
        snprintf(sha1, 41, "%s", begin->data_sha1 ? begin->data_sha1 : "");
        cairn__transfer_begin__free_unpacked(begin, NULL);
    }
    return rc;
}

/* WRITEs the piece of path at offset (up to piece bytes) to target. */
static int
push_piece(struct cairn_rebalance_link *link, const char *target,
           const char *userid, int fd, uint64_t offset, char *buffer,
           size_t piece, uint64_t *moved, char *text, size_t text_size)
{
    char key[32];
    struct cairn_node_frame frame = {buffer, 0};
    struct cairn_node_request write = {.kind = CAIRN__KIND__TRANSFER_CHUNK,
                                       .user = userid,
                                       .verb = "WRITE",
                                       .key = key,
                                       .frames = &frame,
                                       .frame_count = 1};
    struct cairn_node_result written = {0};
    ssize_t got = pread(fd, buffer, piece, (off_t)offset);
    int rc;

    *moved = 0;
    if (got <= 0)
        return CAIRN_EIO;
    frame.len = (size_t)got;
    snprintf(key, sizeof(key), "%" PRIu64, offset);
    rc = call(link, target, &write, &written, text, text_size);
    cairn_node_result_release(&written);
    if (rc == 0)
        *moved = (uint64_t)got;
    return rc;
}

int
cairn_rebalance_push_file(struct cairn_rebalance_link *link, const char *target,
                          const char *userid, const char *path, uint64_t size,
                          const char *sha1, size_t piece,
                          void (*progress)(void *arg, uint64_t bytes),
                          void *arg, char *text, size_t text_size)
{
    Cairn__TransferBegin begin = CAIRN__TRANSFER_BEGIN__INIT;
    struct cairn_node_request request = {
        .kind = CAIRN__KIND__TRANSFER_BEGIN, .user = userid, .verb = "IMPORT"};
    struct cairn_node_result result = {0};
    struct cairn_node_frame frame = {NULL, 0};
    uint8_t *packed = NULL;
    char *buffer = NULL;
    uint64_t offset = 0, moved = 0;
    int fd = -1, rc = CAIRN_ENOMEM;

    if ((buffer = malloc(piece)) == NULL)
        goto out;
    rc = CAIRN_EIO;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        goto out;
    if ((rc = call(link, target, &request, &result, text, text_size)) < 0)
        goto out;
    while (offset < size) {
        rc = push_piece(link, target, userid, fd, offset, buffer,
                        size - offset < piece ? (size_t)(size - offset) : piece,
                        &moved, text, text_size);
        if (rc < 0)
            goto out;
        offset += moved;
        if (progress)
            progress(arg, moved);
    }
    begin.total_bytes = size;
    begin.data_sha1 = (char *)sha1;
    rc = CAIRN_ENOMEM;
    if ((packed = malloc(cairn__transfer_begin__get_packed_size(&begin) + 1)) ==
        NULL)
        goto out;
    frame = (struct cairn_node_frame){
        packed, cairn__transfer_begin__pack(&begin, packed)};
    request.kind = CAIRN__KIND__TRANSFER_END;
    request.frames = &frame;
    request.frame_count = 1;
    cairn_node_result_release(&result);
    rc = call(link, target, &request, &result, text, text_size);
out:
    if (fd >= 0)
        close(fd);
    free(packed);
    free(buffer);
    cairn_node_result_release(&result);
    return rc;
}

int
cairn_rebalance_remove_user(struct cairn_rebalance_link *link, const char *node,
                            const char *userid)
{
    struct cairn_node_request request = {
        .kind = CAIRN__KIND__TRANSFER_END, .user = userid, .verb = "REMOVE"};
    struct cairn_node_result result = {0};
    int rc = call(link, node, &request, &result, NULL, 0);

    cairn_node_result_release(&result);
    return rc;
}

/* --- node to node pulls --------------------------------------------------- */

struct pull_call {
    cairn_rebalance_pull_fn fn;
    void *arg;
    char target[128];
};

static void
on_pulled(void *arg, const struct cairn_node_reply *reply)
{
    struct pull_call *call = arg;
    struct cairn_rebalance_pull_outcome outcome = {.rc = reply->status};
    Cairn__PullResult *result = NULL;

    if (outcome.rc < 0) {
        snprintf(outcome.text, sizeof(outcome.text), "node %s: %s",
                 call->target,
                 reply->envelope && reply->envelope->error_text &&
                         reply->envelope->error_text[0]
                     ? reply->envelope->error_text
                     : cairn_strerror(outcome.rc));
    } else if (reply->frame_count < 1 || (result = cairn__pull_result__unpack(
                                              NULL, reply->frames[0].len,
                                              reply->frames[0].data)) == NULL) {
        outcome.rc = CAIRN_EPROTO;
        snprintf(outcome.text, sizeof(outcome.text),
                 "node %s: unreadable PullResult", call->target);
    } else {
        outcome.bytes = result->bytes;
        outcome.file_bytes = result->file_bytes;
        outcome.elapsed_ms = result->elapsed_ms;
        outcome.resumed = result->resumed;
        snprintf(outcome.digest, sizeof(outcome.digest), "%s",
                 result->digest ? result->digest : "");
        cairn__pull_result__free_unpacked(result, NULL);
    }
    call->fn(call->arg, &outcome);
    free(call);
}

int
cairn_rebalance_pull_start(struct cairn_rebalance_link *link,
                           const char *target, const char *source,
                           const char *userid, uint64_t rate, bool whole,
                           cairn_rebalance_pull_fn fn, void *arg)
{
    const struct cairn_config_node *from =
        cairn_config_find_node(link->config, source);
    Cairn__PullRequest ask = CAIRN__PULL_REQUEST__INIT;
    uint8_t packed[1024];
    struct cairn_node_frame frame = {packed, 0};
    struct cairn_node_request request = {.kind = CAIRN__KIND__TRANSFER_BEGIN,
                                         .user = userid,
                                         .verb = "PULL",
                                         .key = source,
                                         .frames = &frame,
                                         .frame_count = 1};
    struct pull_call *call = NULL;
    size_t index = 0;
    int rc;

    if (from == NULL)
        return CAIRN_ENOENT;
    ask.rate = rate;
    ask.whole = whole;
    ask.source_endpoint = from->endpoint;
    if (cairn__pull_request__get_packed_size(&ask) > sizeof(packed))
        return CAIRN_ETOOBIG;
    frame.len = cairn__pull_request__pack(&ask, packed);
    if ((rc = cairn_node_client_find_node(link->pull_client, target, &index)) <
        0)
        return rc;
    if ((call = calloc(1, sizeof(*call))) == NULL)
        return CAIRN_ENOMEM;
    call->fn = fn;
    call->arg = arg;
    snprintf(call->target, sizeof(call->target), "%s", target);
    if ((rc = cairn_node_client_send(link->pull_client, index, &request,
                                     on_pulled, call, NULL)) < 0)
        free(call);
    return rc;
}

int
cairn_rebalance_link_run(struct cairn_rebalance_link *link, uint64_t wait_ms)
{
    return cairn_loop_run_once(link->loop, (int)wait_ms);
}

struct pull_wait {
    bool done;
    struct cairn_rebalance_pull_outcome *outcome;
};

static void
on_pull_waited(void *arg, const struct cairn_rebalance_pull_outcome *outcome)
{
    struct pull_wait *wait = arg;

    *wait->outcome = *outcome;
    wait->done = true;
}

int
cairn_rebalance_pull(struct cairn_rebalance_link *link, const char *target,
                     const char *source, const char *userid, uint64_t rate,
                     bool whole, struct cairn_rebalance_pull_outcome *outcome)
{
    struct pull_wait wait = {false, outcome};
    int rc;

    memset(outcome, 0, sizeof(*outcome));
    rc = cairn_rebalance_pull_start(link, target, source, userid, rate, whole,
                                    on_pull_waited, &wait);
    while (rc == 0 && !wait.done)
        rc = cairn_rebalance_link_run(link, 100);
    if (rc == 0)
        rc = outcome->rc;
    else if (outcome->text[0] == '\0')
        snprintf(outcome->text, sizeof(outcome->text), "node %s: %s", target,
                 cairn_strerror(rc));
    return rc;
}

/* --- the router's control endpoint --------------------------------------- */

/*
 * One REQ connection to the router's control endpoint for the process
 * (cairnctl is single-threaded): a move asks the router twice per user,
 * and a context, a connection and a CURVE handshake per request cost
 * more than the request.
 */
static struct {
    void *context, *socket;
    char *endpoint;
} router_link;

void
cairn_rebalance_router_close(void)
{
    if (router_link.socket)
        zmq_close(router_link.socket);
    if (router_link.context)
        zmq_ctx_term(router_link.context);
    free(router_link.endpoint);
    memset(&router_link, 0, sizeof(router_link));
}

static int
router_socket(const char *endpoint, void **socket, char *text, size_t text_size)
{
    int timeout = CAIRN_REBALANCE_CALL_TIMEOUT_MS, linger = 0, rc;

    if (router_link.socket != NULL &&
        strcmp(router_link.endpoint, endpoint) == 0) {
        *socket = router_link.socket;
        return 0;
    }
    cairn_rebalance_router_close();
    if ((router_link.context = zmq_ctx_new()) == NULL ||
        (router_link.socket = zmq_socket(router_link.context, ZMQ_REQ)) ==
            NULL ||
        (router_link.endpoint = strdup(endpoint)) == NULL) {
        cairn_rebalance_router_close();
        return CAIRN_ENOMEM;
    }
    zmq_setsockopt(router_link.socket, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
    zmq_setsockopt(router_link.socket, ZMQ_SNDTIMEO, &timeout, sizeof(timeout));
    zmq_setsockopt(router_link.socket, ZMQ_LINGER, &linger, sizeof(linger));
    if ((rc = cairn_curve_client(router_link.socket, endpoint, text,
                                 text_size)) < 0 ||
        (rc = zmq_connect(router_link.socket, endpoint) != 0
                  ? CAIRN_EUNAVAILABLE
                  : 0) < 0) {
        cairn_rebalance_router_close();
        return rc;
    }
    *socket = router_link.socket;
    return 0;
}

static int
send_request(void *socket, const Cairn__Envelope *envelope, const void *frame,
             size_t frame_len)
{
    size_t size = cairn__envelope__get_packed_size(envelope);
    uint8_t *packed = malloc(size + 1);
    int rc = CAIRN_ENOMEM;

    if (packed == NULL)
        return rc;
    cairn__envelope__pack(envelope, packed);
    rc = zmq_send(socket, packed, size, frame ? ZMQ_SNDMORE : 0) < 0 ||
                 (frame && zmq_send(socket, frame, frame_len, 0) < 0)
             ? CAIRN_EIO
             : 0;
    free(packed);
    return rc;
}

/* Receives the answer: envelope, then the RingStatus frame if any. */
static int
receive_reply(void *socket, Cairn__RingStatus **status, char *text,
              size_t text_size)
{
    zmq_msg_t head, body;
    Cairn__Envelope *envelope = NULL;
    int rc = CAIRN_ETIMEOUT;

    zmq_msg_init(&head);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&head, socket, 0) < 0)
        goto out;
    rc = CAIRN_EPROTO;
    envelope =
        cairn__envelope__unpack(NULL, zmq_msg_size(&head), zmq_msg_data(&head));
    if (envelope == NULL)
        goto out;
    if (envelope->kind == CAIRN__KIND__ERROR) {
        rc = envelope->error_code < 0 ? envelope->error_code : CAIRN_EPROTO;
        snprintf(text, text_size, "%s",
                 envelope->error_text ? envelope->error_text : "");
        goto out;
    }
    if (envelope->kind != CAIRN__KIND__CONTROL_REPLY || !zmq_msg_more(&head) ||
        zmq_msg_recv(&body, socket, 0) < 0)
        goto out;
    rc = 0;
    if (status != NULL) {
        *status = cairn__ring_status__unpack(NULL, zmq_msg_size(&body),
                                             zmq_msg_data(&body));
        rc = *status != NULL ? 0 : CAIRN_EPROTO;
    }
out:
    if (envelope)
        cairn__envelope__free_unpacked(envelope, NULL);
    zmq_msg_close(&head);
    zmq_msg_close(&body);
    return rc;
}

int
cairn_rebalance_router_call(const char *endpoint, Cairn__Kind kind,
                            const char *destination, const char *userid,
                            uint64_t epoch, const void *frame, size_t frame_len,
                            Cairn__RingStatus **status, char *text,
                            size_t text_size)
{
    Cairn__Envelope envelope = CAIRN__ENVELOPE__INIT;
    static uint64_t next_id;
    void *socket = NULL;
    int rc;

    if (status)
        *status = NULL;
    snprintf(text, text_size, "%s", "");
    if ((rc = router_socket(endpoint, &socket, text, text_size)) < 0)
        goto out;
    envelope.request_id = ++next_id;
    envelope.kind = kind;
    envelope.destination = (char *)(destination ? destination : "");
    envelope.user = (char *)(userid ? userid : "");
    envelope.ring_epoch = epoch;
    envelope.payload_frames = frame ? 1 : 0;
    if ((rc = send_request(socket, &envelope, frame, frame_len)) < 0)
        goto out;
    rc = receive_reply(socket, status, text, text_size);
    if (rc == CAIRN_ETIMEOUT && text[0] == '\0')
        snprintf(text, text_size, "router control %s did not answer", endpoint);
out:
    /* A REQ socket that missed its answer cannot ask again; an ERROR
     * answer was a whole exchange, the socket stays. */
    if (rc < 0 && (rc == CAIRN_ETIMEOUT || rc == CAIRN_EIO ||
                   rc == CAIRN_EUNAVAILABLE || rc == CAIRN_ENOMEM))
        cairn_rebalance_router_close();
    return rc;
}
