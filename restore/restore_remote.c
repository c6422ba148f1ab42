/*
 * restore_remote.c - reading a backup for restore from the running
 * cluster instead of a node's local files, so `cairnctl restore` works
 * from an admin host: the user's replicas come from the destination's
 * ring, the first that answers serves every read over the node client
 * (GET USER, GET FULLMAILBOX, BODY_REQUEST, SIEVE_REQUEST; see
 * node/node_client.h). Nodes that are down cost one short PING timeout,
 * not a request timeout, before the next replica is tried.
 *
 * Small bodies come in batches (BODY_REQUEST "ORDER" and "BATCH",
 * node/server_restore.c): restore hands the GUIDs of a partition to
 * order(), the node sorts them into file order, and each message() that
 * misses the batch in hand asks for the next batch from that GUID on, so
 * a folder of 20,000 messages in one chunk costs a few passes of the
 * chunk instead of one per body. Bodies too big for a batch, and any body
 * after a batch failed, are read range by range with failover.
 */
#include "config.h"
#include "node_client.h"
#include "placement.h"
#include "restore_int.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_PING_TIMEOUT_MS 5000
#define DEFAULT_TIMEOUT_MS 60000
/* A state answer (GET FULLMAILBOX of a big folder) is parsed whole. */
#define STATE_ITEM_MAX (256u * 1024 * 1024)
/* The node never sends a longer script (node/server_restore.c). */
#define SIEVE_MAX (4u * 1024 * 1024)
/* Body bytes asked for per BODY_REQUEST, and ranges in flight at once. */
#define RANGE_BYTES (4u * 1024 * 1024)
#define RANGE_WINDOW 2
/* GUIDs per ORDER or BATCH request (the node takes at most 8192). */
#define BATCH_GUIDS 4096

/* A body of the batch in hand: its bytes, or "read it by ranges". */
struct batch_body {
    char guid[41];
    char *data; /* owned; NULL for a ranges body */
    size_t len;
    bool ranges;
};

/* The GUIDs in file order (from order()) and the batch read last. */
struct body_batches {
    char **planned; /* owned copies, file order */
    size_t planned_count, planned_next;
    struct batch_body *bodies; /* owned */
    size_t body_count, body_cap, body_next;
    bool failed; /* a batch failed: ranges from now on */
};

/* A node that may serve: a replica of the user, or the forced node. */
struct remote_replica {
    char *name, *endpoint;
};

struct remote_source {
    struct cairn_loop *loop;
    struct cairn_node_client *client;
    size_t node; /* the serving replica, in the client */
    char node_name[128];
    char *userid;
    struct remote_replica replicas[CAIRN_RING_MAX_REPLICAS];
    size_t replica_count;
    size_t serving; /* in replicas */
    uint64_t ping_timeout_ms;
    char error[1024]; /* why the last operation failed */
    void (*notice)(void *ctx, const char *text); /* options' */
    void *notice_ctx;
    struct body_batches batches;
};

static const struct cairn_restore_source_ops remote_ops;

/* One request while its reply is awaited; frames go to on_frame. */
struct call_state {
    bool done;
    int status;
    int (*on_frame)(void *ctx, const void *data, size_t len);
    void *frame_ctx;
    char error_text[256];
};

static void
on_reply(void *arg, const struct cairn_node_reply *reply)
{
    struct call_state *state = arg;

    state->done = true;
    state->status = reply->status;
    if (reply->status < 0 && reply->envelope != NULL &&
        reply->envelope->error_text != NULL)
        snprintf(state->error_text, sizeof(state->error_text), "%s",
                 reply->envelope->error_text);
    for (size_t i = 0; state->status == 0 && i < reply->frame_count; i++)
        state->status = state->on_frame(state->frame_ctx, reply->frames[i].data,
                                        reply->frames[i].len);
}

/* Sends request to the serving replica and waits for its reply. */
static int
remote_send_wait(struct remote_source *remote,
                 const struct cairn_node_request *request,
                 int (*on_frame)(void *ctx, const void *data, size_t len),
                 void *frame_ctx)
{
    struct call_state state = {false, 0, on_frame, frame_ctx, ""};
    int rc;

    remote->error[0] = '\0';
    rc = cairn_node_client_send(remote->client, remote->node, request, on_reply,
                                &state, NULL);
    /* the client times requests out itself: this ends */
    while (rc == 0 && !state.done)
        rc = cairn_loop_run_once(remote->loop, 100);
    if (rc == 0)
        rc = state.status;
    if (rc < 0)
        snprintf(remote->error, sizeof(remote->error), "node %s: %s",
                 remote->node_name,
                 state.error_text[0] ? state.error_text : cairn_strerror(rc));
    return rc;
}

/* One request of kind (and verb) with one frame, to the serving replica. */
static int
remote_call_verb(struct remote_source *remote, Cairn__Kind kind,
                 const char *verb, const char *key, const void *frame_data,
                 size_t frame_len,
                 int (*on_frame)(void *ctx, const void *data, size_t len),
                 void *frame_ctx)
{
    struct cairn_node_frame frame = {frame_data, frame_len};
    struct cairn_node_request request = {0};

    request.kind = kind;
    request.user = remote->userid;
    request.destination = ""; /* the client copies it: never NULL */
    request.verb = verb;
    request.key = key != NULL ? key : "";
    request.frames = &frame;
    request.frame_count = 1;
    return remote_send_wait(remote, &request, on_frame, frame_ctx);
}

static int
remote_call(struct remote_source *remote, Cairn__Kind kind, const char *key,
            const void *frame_data, size_t frame_len,
            int (*on_frame)(void *ctx, const void *data, size_t len),
            void *frame_ctx)
{
    return remote_call_verb(remote, kind,
                            kind == CAIRN__KIND__STATE_REQUEST ? "GET" : "",
                            key, frame_data, frame_len, on_frame, frame_ctx);
}

/* --- state answers ---------------------------------------------------------
 */

static int
parse_item(const void *data, size_t len, struct cairn_dlist **item)
{
    struct cairn_dlist_limits limits;

    cairn_dlist_limits_default(&limits);
    limits.max_bytes = STATE_ITEM_MAX;
    limits.max_literal = STATE_ITEM_MAX;
    return cairn_dlist_parse(data, len, CAIRN_DLIST_PARSE_KEY, &limits, NULL,
                             item, NULL, 0);
}

/* GET key what: each item of the reply goes to emit. */
static int
remote_get(struct remote_source *remote, const char *key, const char *what,
           int (*on_frame)(void *ctx, const void *data, size_t len),
           void *frame_ctx)
{
    struct cairn_dlist *request = cairn_dlist_new_atom(key, what);
    struct cairn_buf text;
    int rc;

    cairn_buf_init(&text, 64 * 1024);
    if (request == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    if ((rc = cairn_dlist_print(request, true, &text, NULL)) < 0)
        goto out;
    rc = remote_call(remote, CAIRN__KIND__STATE_REQUEST, key, text.data,
                     text.len, on_frame, frame_ctx);
out:
    cairn_dlist_free(request);
    cairn_buf_release(&text);
    return rc;
}

struct emit_items {
    cairn_store_emit emit;
    void *emit_ctx;
};

static int
emit_frame(void *ctx, const void *data, size_t len)
{
    struct emit_items *items = ctx;
    struct cairn_dlist *item = NULL;
    int rc;

    if ((rc = parse_item(data, len, &item)) < 0)
        return CAIRN_EPROTO;
    rc = items->emit(items->emit_ctx, item);
    cairn_dlist_free(item);
    return rc;
}

static int
remote_user(void *ctx, cairn_store_emit emit, void *emit_ctx)
{
    struct remote_source *remote = ctx;
    struct emit_items items = {emit, emit_ctx};

    return remote_get(remote, "USER", remote->userid, emit_frame, &items);
}

/* Keeps the first MAILBOX item of the reply (owned by *ctx). */
static int
keep_mailbox(void *ctx, const void *data, size_t len)
{
    struct cairn_dlist **mailbox = ctx;
    struct cairn_dlist *item = NULL;

    if (*mailbox != NULL)
        return 0;
    if (parse_item(data, len, &item) < 0)
        return CAIRN_EPROTO;
    *mailbox = item;
    return 0;
}

static int
remote_mailbox(void *ctx, const char *mboxname, struct cairn_dlist **mailbox)
{
    struct remote_source *remote = ctx;
    int rc;

    *mailbox = NULL;
    rc = remote_get(remote, "FULLMAILBOX", mboxname, keep_mailbox, mailbox);
    if (rc == 0 && *mailbox == NULL)
        rc = CAIRN_ENOENT;
    if (rc < 0) {
        cairn_dlist_free(*mailbox);
        *mailbox = NULL;
    }
    return rc;
}

/* --- bodies and sieve scripts ----------------------------------------------
 */

/*
 * A body as it arrives, range by range (BODY_REQUEST "GUID OFFSET
 * LENGTH", node/node_client.h): each range is passed on as it comes and
 * hashed, so the body is never whole in memory; the GUID is checked after
 * the last byte. At most RANGE_WINDOW ranges are in flight.
 */
struct body_fetch {
    struct remote_source *remote;
    const char *guid;
    EVP_MD_CTX *sha1;
    int (*put)(void *put_ctx, const void *data, size_t len);
    void *put_ctx;
    uint64_t total; /* from the first reply */
    bool total_known;
    uint64_t passed; /* bytes passed on: the next range expected */
    uint64_t asked;  /* the next range to ask for */
    size_t in_flight;
    int failure; /* first failure of the ranges in flight */
    char failure_text[256];
};

/* One range in flight. */
struct range_call {
    struct body_fetch *fetch;
    uint64_t offset;
};

static int
take_range(struct body_fetch *fetch, uint64_t offset,
           const struct cairn_node_reply *reply)
{
    uint64_t total = 0, bytes = 0;
    char text[32];
    int rc;

    if (reply->frame_count < 1 || reply->frames[0].len == 0 ||
        reply->frames[0].len >= sizeof(text))
        return CAIRN_EPROTO;
    memcpy(text, reply->frames[0].data, reply->frames[0].len);
    text[reply->frames[0].len] = '\0';
    if (cairn_parse_u64_str(text, 0, UINT64_MAX, &total) < 0 ||
        (fetch->total_known && total != fetch->total) ||
        offset != fetch->passed)
        return CAIRN_EPROTO;
    fetch->total = total;
    fetch->total_known = true;
    for (size_t i = 1; i < reply->frame_count; i++)
        bytes += reply->frames[i].len;
    /* a short range before the end would leave a hole */
    if (offset + bytes > total ||
        (offset + bytes < total && bytes != RANGE_BYTES))
        return CAIRN_EPROTO;
    for (size_t i = 1; i < reply->frame_count; i++) {
        if (EVP_DigestUpdate(fetch->sha1, reply->frames[i].data,
                             reply->frames[i].len) != 1)
            return CAIRN_ENOMEM;
        if ((rc = fetch->put(fetch->put_ctx, reply->frames[i].data,
                             reply->frames[i].len)) < 0) {
            snprintf(fetch->failure_text, sizeof(fetch->failure_text),
                     "passing the body on: %s", cairn_strerror(rc));
            return rc;
        }
        fetch->passed += reply->frames[i].len;
    }
    return 0;
}

static void
on_range(void *arg, const struct cairn_node_reply *reply)
{
    struct range_call *call = arg;
    struct body_fetch *fetch = call->fetch;
    int rc = reply->status;

    fetch->in_flight--;
    if (fetch->failure == 0 && rc == 0)
        rc = take_range(fetch, call->offset, reply);
    if (fetch->failure == 0 && rc < 0) {
        fetch->failure = rc;
        if (fetch->failure_text[0] == '\0')
            snprintf(fetch->failure_text, sizeof(fetch->failure_text), "%s",
                     reply->envelope != NULL && reply->envelope->error_text &&
                             reply->envelope->error_text[0]
                         ? reply->envelope->error_text
                         : cairn_strerror(rc));
    }
    free(call);
}

static int
ask_range(struct body_fetch *fetch)
{
    struct remote_source *remote = fetch->remote;
    struct range_call *call = malloc(sizeof(*call));
    struct cairn_node_request request = {0};
    struct cairn_node_frame frame;
    char text[96];
    int rc;

    if (call == NULL)
        return CAIRN_ENOMEM;
    call->fetch = fetch;
    call->offset = fetch->asked;
    frame.data = text;
    frame.len = (size_t)snprintf(text, sizeof(text), "%s %llu %u", fetch->guid,
                                 (unsigned long long)fetch->asked, RANGE_BYTES);
    request.kind = CAIRN__KIND__BODY_REQUEST;
    request.user = remote->userid;
    request.destination = "";
    request.verb = "";
    request.key = "";
    request.frames = &frame;
    request.frame_count = 1;
    if ((rc = cairn_node_client_send(remote->client, remote->node, &request,
                                     on_range, call, NULL)) < 0) {
        free(call);
        return rc;
    }
    fetch->in_flight++;
    fetch->asked += RANGE_BYTES;
    return 0;
}

/* Asks the serving node for the rest of the body, window by window. */
static int
fetch_from_node(struct body_fetch *fetch)
{
    int rc = 0;

    fetch->asked = fetch->passed;
    fetch->failure = 0;
    fetch->failure_text[0] = '\0';
    for (;;) {
        /* the size is known from the first reply: until then one range */
        while (fetch->failure == 0 && fetch->in_flight < RANGE_WINDOW &&
               (fetch->total_known ? fetch->asked < fetch->total
                                   : fetch->in_flight == 0) &&
               (rc = ask_range(fetch)) == 0)
            ;
        if (rc < 0 && fetch->failure == 0)
            fetch->failure = rc;
        if (fetch->in_flight == 0)
            break;
        /* the client times requests out itself: this ends */
        if ((rc = cairn_loop_run_once(fetch->remote->loop, 100)) < 0 &&
            fetch->failure == 0)
            fetch->failure = rc;
        rc = 0;
    }
    if (fetch->failure == 0 &&
        !(fetch->total_known && fetch->passed == fetch->total))
        fetch->failure = CAIRN_EPROTO;
    return fetch->failure;
}

static bool node_alive(const char *endpoint, uint64_t timeout_ms);

/*
 * The serving node went away in the middle of the restore: the next
 * replica that answers a PING serves from now on. Bodies are named by
 * their SHA-1, so any replica's copy is the same bytes.
 */
static int
next_replica(struct remote_source *remote)
{
    for (size_t step = 1; step < remote->replica_count; step++) {
        size_t at = (remote->serving + step) % remote->replica_count;
        const struct remote_replica *replica = &remote->replicas[at];
        size_t node = 0;
        int rc;

        if (!node_alive(replica->endpoint, remote->ping_timeout_ms))
            continue;
        if (cairn_node_client_find_node(remote->client, replica->name, &node) <
                0 &&
            (rc = cairn_node_client_add_node(remote->client, replica->name,
                                             replica->endpoint, &node)) < 0)
            return rc;
        remote->serving = at;
        remote->node = node;
        snprintf(remote->node_name, sizeof(remote->node_name), "%s",
                 replica->name);
        return 0;
    }
    return CAIRN_EUNAVAILABLE;
}

/* Adds "node: what" to the source's error ("; " between nodes). */
static void add_error(struct remote_source *remote, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
add_error(struct remote_source *remote, const char *fmt, ...)
{
    size_t used = strlen(remote->error);
    va_list ap;

    if (used + 3 >= sizeof(remote->error))
        return;
    if (used > 0) {
        memcpy(remote->error + used, "; ", 3);
        used += 2;
    }
    va_start(ap, fmt);
    vsnprintf(remote->error + used, sizeof(remote->error) - used, fmt, ap);
    va_end(ap);
}

static int
check_digest(EVP_MD_CTX *sha1, const char *guid)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    char hex[41];

    if (EVP_DigestFinal_ex(sha1, digest, &digest_len) != 1 || digest_len != 20)
        return CAIRN_ENOMEM;
    for (unsigned i = 0; i < 20; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    return strcmp(hex, guid) == 0 ? 0 : CAIRN_EMISMATCH;
}

/* --- batches of small bodies ----------------------------------------------
 */

static void
batch_bodies_release(struct body_batches *batches)
{
    for (size_t i = 0; i < batches->body_count; i++)
        free(batches->bodies[i].data);
    batches->body_count = batches->body_next = 0;
}

static void
batches_release(struct body_batches *batches)
{
    batch_bodies_release(batches);
    free(batches->bodies);
    for (size_t i = 0; i < batches->planned_count; i++)
        free(batches->planned[i]);
    free(batches->planned);
    memset(batches, 0, sizeof(*batches));
}

/* GUIDs [first, first + count) as one frame, one per line. */
static int
guid_lines(char **guids, size_t count, struct cairn_buf *text)
{
    int rc = 0;

    for (size_t i = 0; i < count && rc == 0; i++)
        if ((rc = cairn_buf_append(text, guids[i], strlen(guids[i]))) == 0)
            rc = cairn_buf_append(text, "\n", 1);
    return rc;
}

static int
collect_text(void *ctx, const void *data, size_t len)
{
    return cairn_buf_append(ctx, data, len);
}

static int
compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Puts block (count GUIDs of the caller's) into the order of the node's
 * ORDER answer (text), which must name exactly the same GUIDs.
 */
static int
apply_order(char **block, size_t count, const struct cairn_buf *text)
{
    char **sorted = malloc((count ? count : 1) * sizeof(*sorted));
    size_t at = 0;
    int rc = 0;

    if (sorted == NULL)
        return CAIRN_ENOMEM;
    memcpy(sorted, block, count * sizeof(*sorted));
    qsort(sorted, count, sizeof(*sorted), compare_strings);
    for (size_t pos = 0; pos + 41 <= text->len && rc == 0; pos += 41) {
        char guid[41], *key = guid, **found;

        memcpy(guid, text->data + pos, 40);
        guid[40] = '\0';
        found = bsearch(&key, sorted, count, sizeof(*sorted), compare_strings);
        if (found == NULL || at == count || text->data[pos + 40] != '\n')
            rc = CAIRN_EPROTO;
        else
            block[at++] = *found;
    }
    if (rc == 0 && (at != count || text->len != count * 41))
        rc = CAIRN_EPROTO;
    free(sorted);
    return rc;
}

/*
 * order(): the node sorts the GUIDs into file order, block by block, and
 * the plan keeps a copy for the batches. An older node or a failure only
 * costs speed: the bodies are then read one by one.
 */
static int
remote_order(void *ctx, char **guids, size_t count)
{
    struct remote_source *remote = ctx;
    struct body_batches *batches = &remote->batches;
    struct cairn_buf text;
    int rc = 0;

    batches_release(batches);
    for (size_t first = 0; first < count && rc == 0; first += BATCH_GUIDS) {
        size_t block =
            count - first < BATCH_GUIDS ? count - first : BATCH_GUIDS;

        cairn_buf_init(&text, (size_t)BATCH_GUIDS * 41);
        if ((rc = guid_lines(guids + first, block, &text)) == 0) {
            struct cairn_buf answer;

            cairn_buf_init(&answer, (size_t)BATCH_GUIDS * 41);
            rc =
                remote_call_verb(remote, CAIRN__KIND__BODY_REQUEST, "ORDER", "",
                                 text.data, text.len, collect_text, &answer);
            if (rc == 0)
                rc = apply_order(guids + first, block, &answer);
            cairn_buf_release(&answer);
        }
        cairn_buf_release(&text);
    }
    if (rc < 0) {
        batches->failed = true;
        return 0;
    }
    if ((batches->planned =
             calloc(count ? count : 1, sizeof(*batches->planned))) == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < count; i++) {
        if ((batches->planned[i] = strdup(guids[i])) == NULL)
            return CAIRN_ENOMEM;
        batches->planned_count++;
    }
    return 0;
}

/* A BATCH answer as it is read: a header frame, then the body's bytes. */
struct batch_read {
    struct body_batches *batches;
    struct batch_body *current; /* still taking bytes */
    size_t remaining;           /* of current's */
};

static int
batch_frame(void *ctx, const void *data, size_t len)
{
    struct batch_read *read = ctx;
    struct body_batches *batches = read->batches;
    struct batch_body *body;
    char header[96], *words[3], *save = NULL;
    size_t count = 0;
    uint64_t size = 0;

    if (read->current != NULL) {
        body = read->current;
        if (len > read->remaining)
            return CAIRN_EPROTO;
        memcpy(body->data + body->len, data, len);
        body->len += len;
        read->remaining -= len;
        if (read->remaining == 0)
            read->current = NULL;
        return 0;
    }
    if (len == 0 || len >= sizeof(header))
        return CAIRN_EPROTO;
    memcpy(header, data, len);
    header[len] = '\0';
    for (char *w = strtok_r(header, " ", &save); w != NULL && count < 3;
         w = strtok_r(NULL, " ", &save))
        words[count++] = w;
    if (count < 2 || strlen(words[0]) != 40 ||
        cairn_parse_u64_str(words[1], 0, SIZE_MAX / 2, &size) < 0 ||
        (count == 3 && strcmp(words[2], "ranges") != 0))
        return CAIRN_EPROTO;
    if (batches->body_count == batches->body_cap) {
        size_t cap = batches->body_cap ? batches->body_cap * 2 : 64;
        struct batch_body *grown =
            realloc(batches->bodies, cap * sizeof(*grown));

        if (grown == NULL)
            return CAIRN_ENOMEM;
        batches->bodies = grown;
        batches->body_cap = cap;
    }
    body = &batches->bodies[batches->body_count++];
    memset(body, 0, sizeof(*body));
    memcpy(body->guid, words[0], 41);
    body->ranges = count == 3;
    if (body->ranges || size == 0)
        return 0;
    /* the frames that follow are exactly size bytes */
    if ((body->data = malloc((size_t)size)) == NULL)
        return CAIRN_ENOMEM;
    read->current = body;
    read->remaining = (size_t)size;
    return 0;
}

/*
 * Asks for the batch that starts at guid (which must be planned); the
 * bodies it brings replace the batch in hand.
 */
static int
fetch_batch(struct remote_source *remote, size_t first)
{
    struct body_batches *batches = &remote->batches;
    size_t count = batches->planned_count - first < BATCH_GUIDS
                       ? batches->planned_count - first
                       : BATCH_GUIDS;
    struct batch_read read = {batches, NULL, 0};
    struct cairn_buf text;
    int rc;

    batch_bodies_release(batches);
    cairn_buf_init(&text, (size_t)BATCH_GUIDS * 41);
    if ((rc = guid_lines(batches->planned + first, count, &text)) == 0)
        rc = remote_call_verb(remote, CAIRN__KIND__BODY_REQUEST, "BATCH", "",
                              text.data, text.len, batch_frame, &read);
    cairn_buf_release(&text);
    /* a body cut short, or no progress (never ask the same again) */
    if (rc == 0 && (read.current != NULL || batches->body_count == 0))
        rc = CAIRN_EPROTO;
    batches->planned_next = first + batches->body_count;
    return rc;
}

/*
 * Passes guid's body from the batch in hand, fetching the batch that
 * starts at it when it is planned but not in hand. *served is false when
 * the body must be read by ranges instead.
 */
static int
batch_message(struct remote_source *remote, const char *guid,
              int (*put)(void *put_ctx, const void *data, size_t len),
              void *put_ctx, bool *served)
{
    struct body_batches *batches = &remote->batches;
    struct batch_body *body;
    EVP_MD_CTX *sha1 = NULL;
    int rc;

    *served = false;
    if (batches->failed)
        return 0;
    if (batches->body_next == batches->body_count ||
        strcmp(batches->bodies[batches->body_next].guid, guid) != 0) {
        size_t at = batches->planned_next;

        /* asked in plan order: the search starts where the last ended */
        while (at < batches->planned_count &&
               strcmp(batches->planned[at], guid) != 0)
            at++;
        if (at == batches->planned_count)
            for (at = 0; at < batches->planned_count &&
                         strcmp(batches->planned[at], guid) != 0;
                 at++)
                ;
        if (at == batches->planned_count)
            return 0; /* not planned: by ranges */
        rc = fetch_batch(remote, at);
        /* a replica that went away: the next one serves the batch */
        for (size_t tries = 1;
             (rc == CAIRN_ETIMEOUT || rc == CAIRN_EUNAVAILABLE) &&
             tries < remote->replica_count && next_replica(remote) == 0;
             tries++)
            rc = fetch_batch(remote, at);
        if (rc < 0) {
            if (remote->notice != NULL) {
                char text[1280];

                snprintf(text, sizeof(text),
                         "reading bodies one by one from now on: %s",
                         remote->error);
                remote->notice(remote->notice_ctx, text);
            }
            batches->failed = true;
            batch_bodies_release(batches);
            return 0;
        }
        if (strcmp(batches->bodies[0].guid, guid) != 0)
            return 0;
    }
    body = &batches->bodies[batches->body_next++];
    if (body->ranges)
        return 0;
    *served = true;
    if ((sha1 = EVP_MD_CTX_new()) == NULL ||
        EVP_DigestInit_ex(sha1, EVP_sha1(), NULL) != 1 ||
        EVP_DigestUpdate(sha1, body->data, body->len) != 1) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    if ((rc = check_digest(sha1, guid)) < 0) {
        add_error(remote, "body %s from node %s fails its GUID (SHA-1)", guid,
                  remote->node_name);
        goto out;
    }
    rc = put(put_ctx, body->data, body->len);
out:
    free(body->data);
    body->data = NULL;
    EVP_MD_CTX_free(sha1);
    return rc;
}

static int
remote_message(void *ctx, const char *guid,
               int (*put)(void *put_ctx, const void *data, size_t len),
               void *put_ctx)
{
    struct remote_source *remote = ctx;
    struct body_fetch fetch = {0};
    bool served = false;
    int rc;

    remote->error[0] = '\0';
    if ((rc = batch_message(remote, guid, put, put_ctx, &served)) < 0 || served)
        return rc;
    rc = CAIRN_ENOMEM;
    fetch.remote = remote;
    fetch.guid = guid;
    fetch.put = put;
    fetch.put_ctx = put_ctx;
    if ((fetch.sha1 = EVP_MD_CTX_new()) == NULL ||
        EVP_DigestInit_ex(fetch.sha1, EVP_sha1(), NULL) != 1)
        goto out;
    /* a node that stops answering mid-body: the next replica continues
     * from the first byte not passed on yet */
    for (size_t tries = 0;; tries++) {
        if ((rc = fetch_from_node(&fetch)) == 0)
            break;
        add_error(remote, "node %s: %s (body %s, at byte %llu of %llu)",
                  remote->node_name, fetch.failure_text, guid,
                  (unsigned long long)fetch.passed,
                  (unsigned long long)fetch.total);
        if ((rc != CAIRN_EUNAVAILABLE && rc != CAIRN_ETIMEOUT) ||
            tries + 1 >= remote->replica_count)
            goto out;
        if (next_replica(remote) < 0) {
            add_error(remote, "no other replica answers a PING");
            goto out;
        }
        if (remote->notice != NULL) {
            char text[256];

            snprintf(text, sizeof(text),
                     "continuing body %s at byte %llu from node %s", guid,
                     (unsigned long long)fetch.passed, remote->node_name);
            remote->notice(remote->notice_ctx, text);
        }
    }
    if ((rc = check_digest(fetch.sha1, guid)) < 0)
        add_error(remote, "body %s from node %s fails its GUID (SHA-1)", guid,
                  remote->node_name);
out:
    EVP_MD_CTX_free(fetch.sha1);
    return rc;
}

static int
sieve_frame(void *ctx, const void *data, size_t len)
{
    return cairn_buf_append(ctx, data, len);
}

static int
remote_sieve(void *ctx, const char *filename, char **content, size_t *len)
{
    struct remote_source *remote = ctx;
    struct cairn_buf text;
    int rc;

    *content = NULL;
    *len = 0;
    cairn_buf_init(&text, SIEVE_MAX);
    if ((rc = remote_call(remote, CAIRN__KIND__SIEVE_REQUEST, NULL, filename,
                          strlen(filename), sieve_frame, &text)) == 0)
        rc = cairn_buf_detach(&text, content, len);
    cairn_buf_release(&text);
    return rc;
}

/* --- the whole log, for a point in time -----------------------------------
 */

struct log_copy {
    int fd;
    EVP_MD_CTX *sha1;
    uint64_t bytes;
    struct cairn_buf begin; /* the EXPORT reply */
};

static int
keep_begin(void *ctx, const void *data, size_t len)
{
    return cairn_buf_append(&((struct log_copy *)ctx)->begin, data, len);
}

static int
write_piece(void *ctx, const void *data, size_t len)
{
    struct log_copy *copy = ctx;

    if (EVP_DigestUpdate(copy->sha1, data, len) != 1)
        return CAIRN_ENOMEM;
    copy->bytes += len;
    return cairn_write_all(copy->fd, data, len);
}

static int
copy_pieces(struct remote_source *remote, struct log_copy *copy, uint64_t total)
{
    struct cairn_node_request read = {.kind = CAIRN__KIND__TRANSFER_CHUNK,
                                      .user = remote->userid,
                                      .destination = "",
                                      .verb = "READ"};
    char key[32];
    int rc = 0;

    read.key = key;
    while (rc == 0 && copy->bytes < total) {
        uint64_t before = copy->bytes;

        snprintf(key, sizeof(key), "%llu", (unsigned long long)copy->bytes);
        if ((rc = remote_send_wait(remote, &read, write_piece, copy)) == 0 &&
            copy->bytes == before)
            rc = CAIRN_EPROTO;
    }
    return rc;
}

int
cairn_restore_source_fetch_log(struct cairn_restore_source *source, int fd,
                               char *error, size_t error_size)
{
    struct remote_source *remote =
        source->ops == &remote_ops ? source->ctx : NULL;
    struct cairn_node_request export = {.kind = CAIRN__KIND__TRANSFER_BEGIN,
                                        .user = remote->userid,
                                        .destination = "",
                                        .verb = "EXPORT"};
    struct log_copy copy = {fd, NULL, 0, {0}};
    Cairn__TransferBegin *begin = NULL;
    int rc = CAIRN_ENOMEM;

    cairn_buf_init(&copy.begin, 64 * 1024);
    if (remote == NULL) {
        snprintf(error, error_size, "not a source on the cluster");
        return CAIRN_EINVAL;
    }
    if ((copy.sha1 = EVP_MD_CTX_new()) == NULL ||
        EVP_DigestInit_ex(copy.sha1, EVP_sha1(), NULL) != 1)
        goto out;
    if ((rc = remote_send_wait(remote, &export, keep_begin, &copy)) < 0)
        goto out;
    rc = CAIRN_EPROTO;
    if ((begin = cairn__transfer_begin__unpack(
             NULL, copy.begin.len, (const uint8_t *)copy.begin.data)) == NULL)
        goto out;
    if ((rc = copy_pieces(remote, &copy, begin->total_bytes)) < 0)
        goto out;
    if ((rc = check_digest(copy.sha1,
                           begin->data_sha1 ? begin->data_sha1 : "")) < 0)
        snprintf(remote->error, sizeof(remote->error),
                 "node %s: the copy of the log fails its SHA-1",
                 remote->node_name);
out:
    if (rc < 0)
        snprintf(error, error_size, "%s",
                 remote->error[0] ? remote->error : cairn_strerror(rc));
    if (begin != NULL)
        cairn__transfer_begin__free_unpacked(begin, NULL);
    EVP_MD_CTX_free(copy.sha1);
    cairn_buf_release(&copy.begin);
    return rc;
}

static void
remote_close(void *ctx)
{
    struct remote_source *remote = ctx;

    if (remote == NULL)
        return;
    batches_release(&remote->batches);
    cairn_node_client_free(remote->client);
    cairn_loop_free(remote->loop);
    for (size_t i = 0; i < remote->replica_count; i++) {
        free(remote->replicas[i].name);
        free(remote->replicas[i].endpoint);
    }
    free(remote->userid);
    free(remote);
}

static const char *
remote_error(void *ctx)
{
    struct remote_source *remote = ctx;

    return remote->error[0] ? remote->error : NULL;
}

static const struct cairn_restore_source_ops remote_ops = {
    remote_user,  remote_mailbox, remote_message, remote_sieve,
    remote_close, remote_order,   remote_error,
};

/* --- choosing the replica --------------------------------------------------
 */

static int
count_items(void *ctx, const void *data, size_t len)
{
    (void)data;
    (void)len;
    (*(size_t *)ctx)++;
    return 0;
}

/* The destination named, or the config's only one. */
static int
find_destination(const struct cairn_restore_remote_options *options,
                 const struct cairn_config_destination **destination,
                 char *error, size_t error_size)
{
    size_t count = cairn_config_destination_count(options->config);

    if (options->destination != NULL) {
        *destination = cairn_config_find_destination(options->config,
                                                     options->destination);
        if (*destination != NULL)
            return 0;
        snprintf(error, error_size, "no destination '%s' in the config",
                 options->destination);
        return CAIRN_ECONFIG;
    }
    if (count != 1) {
        snprintf(error, error_size,
                 "the config has %zu destinations: name one (--destination)",
                 count);
        return CAIRN_ECONFIG;
    }
    *destination = cairn_config_destination_at(options->config, 0);
    return 0;
}

/* The nodes to ask, in order: the forced one, or the user's replicas. */
static int
candidate_nodes(const struct cairn_restore_remote_options *options,
                const char *userid, const struct cairn_config_node **nodes,
                size_t *count, char *error, size_t error_size)
{
    const struct cairn_config_destination *destination = NULL;
    uint16_t replicas[CAIRN_RING_MAX_REPLICAS];
    struct cairn_ring *ring = NULL;
    int rc;

    *count = 0;
    if (options->node != NULL) {
        if ((nodes[0] = cairn_config_find_node(options->config,
                                               options->node)) == NULL) {
            snprintf(error, error_size, "no node '%s' in the config",
                     options->node);
            return CAIRN_ECONFIG;
        }
        *count = 1;
        return 0;
    }
    if ((rc = find_destination(options, &destination, error, error_size)) < 0)
        return rc;
    if ((rc = cairn_ring_load(destination->ring_file, &ring)) < 0) {
        snprintf(error, error_size, "ring file %s: %s", destination->ring_file,
                 cairn_strerror(rc));
        return CAIRN_ECONFIG;
    }
    cairn_ring_lookup(ring, userid, strlen(userid), replicas);
    for (unsigned r = 0; r < cairn_ring_replicas(ring) && rc == 0; r++) {
        struct cairn_ring_node_info info;

        if ((rc = cairn_ring_node_info(ring, replicas[r], &info)) < 0)
            break;
        if ((nodes[*count] =
                 cairn_config_find_node(options->config, info.name)) == NULL) {
            snprintf(error, error_size,
                     "the ring names node '%s', which the"
                     " config lacks",
                     info.name);
            rc = CAIRN_ECONFIG;
            break;
        }
        (*count)++;
    }
    cairn_ring_free(ring);
    return rc;
}

/* Whether the node at endpoint answers a PING within the short timeout. */
static bool
node_alive(const char *endpoint, uint64_t timeout_ms)
{
    struct cairn_node_request ping = {.kind = CAIRN__KIND__PING,
                                      .destination = ""};
    struct cairn_node_result result = {0};
    int rc = cairn_node_client_call(endpoint, &ping, timeout_ms, &result);

    cairn_node_result_release(&result);
    return rc == 0;
}

/*
 * Asks candidates in order: the first that is up and holds the user
 * serves. Each failure is added to error ("node2: down; ...").
 */
static int
choose_replica(struct remote_source *remote,
               const struct cairn_restore_remote_options *options,
               const struct cairn_config_node *const *nodes, size_t count,
               char *error, size_t error_size)
{
    bool unreachable = false;
    size_t used = 0;
    int rc = CAIRN_ENOENT;

    error[0] = '\0';
    remote->ping_timeout_ms = options->ping_timeout_ms;
    for (size_t i = 0; i < count; i++) {
        struct remote_replica *replica = &remote->replicas[i];

        replica->name = strdup(nodes[i]->origin.name);
        replica->endpoint = strdup(nodes[i]->endpoint);
        remote->replica_count++; /* freed at close, also when NULL */
        if (replica->name == NULL || replica->endpoint == NULL)
            return CAIRN_ENOMEM;
    }
    for (size_t i = 0; i < count; i++) {
        size_t items = 0;
        const char *why;

        if (!node_alive(nodes[i]->endpoint, options->ping_timeout_ms)) {
            unreachable = true;
            why = "not answering";
        } else if ((rc = cairn_node_client_add_node(
                        remote->client, nodes[i]->origin.name,
                        nodes[i]->endpoint, &remote->node)) < 0) {
            return rc;
        } else if ((rc = remote_get(remote, "USER", remote->userid, count_items,
                                    &items)) == 0) {
            snprintf(remote->node_name, sizeof(remote->node_name), "%s",
                     nodes[i]->origin.name);
            remote->serving = i;
            return 0;
        } else {
            unreachable |= rc == CAIRN_EUNAVAILABLE || rc == CAIRN_ETIMEOUT;
            why = rc == CAIRN_ENOENT ? "does not hold the user"
                                     : cairn_strerror(rc);
        }
        used += (size_t)snprintf(error + used, error_size - used, "%s%s: %s",
                                 used ? "; " : "", nodes[i]->origin.name, why);
        if (used >= error_size)
            used = error_size - 1;
    }
    return unreachable ? CAIRN_EUNAVAILABLE : CAIRN_ENOENT;
}

int
cairn_restore_source_open_remote(
    const struct cairn_restore_remote_options *options, const char *userid,
    struct cairn_restore_source **source, char *error, size_t error_size)
{
    const struct cairn_config_node *nodes[CAIRN_RING_MAX_REPLICAS];
    struct cairn_restore_remote_options settings = *options;
    struct cairn_node_client_settings client_settings = {0};
    struct cairn_restore_source *result = NULL;
    struct remote_source *remote = NULL;
    char scratch[8];
    size_t count = 0;
    int rc;

    *source = NULL;
    if (error == NULL || error_size == 0) {
        error = scratch;
        error_size = sizeof(scratch);
    }
    error[0] = '\0';
    if (settings.ping_timeout_ms == 0)
        settings.ping_timeout_ms = DEFAULT_PING_TIMEOUT_MS;
    if (settings.timeout_ms == 0)
        settings.timeout_ms = DEFAULT_TIMEOUT_MS;
    client_settings.timeout_ms = settings.timeout_ms;
    if ((rc = cairn_node_check_userid(userid)) < 0 ||
        strlen(userid) >= sizeof(result->userid))
        return CAIRN_EBADNAME;
    if ((rc = candidate_nodes(&settings, userid, nodes, &count, error,
                              error_size)) < 0)
        return rc;
    rc = CAIRN_ENOMEM;
    if ((result = calloc(1, sizeof(*result))) == NULL ||
        (remote = calloc(1, sizeof(*remote))) == NULL ||
        (remote->userid = strdup(userid)) == NULL)
        goto out;
    if ((rc = cairn_loop_new(&remote->loop)) < 0 ||
        (rc = cairn_node_client_new(remote->loop, NULL, &client_settings,
                                    &remote->client)) < 0 ||
        (rc = choose_replica(remote, &settings, nodes, count, error,
                             error_size)) < 0)
        goto out;
    snprintf(result->userid, sizeof(result->userid), "%s", userid);
    remote->notice = options->notice;
    remote->notice_ctx = options->notice_ctx;
    result->ops = &remote_ops;
    result->ctx = remote;
    remote = NULL;
    *source = result;
    result = NULL;
out:
    remote_close(remote);
    free(result);
    return rc;
}

const char *
cairn_restore_source_node(const struct cairn_restore_source *source)
{
    if (source == NULL || source->ops != &remote_ops)
        return NULL;
    return ((const struct remote_source *)source->ctx)->node_name;
}
