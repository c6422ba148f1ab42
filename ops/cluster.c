/*
 * cluster.c - cairnctl talking to every cairn-node of the config at once:
 * one node client on a private loop, every request queued before the
 * loop runs, one deadline for all, so a dead node costs one timeout
 * whatever the cluster's size. Also the per-user jobs (VERIFY, COMPACT)
 * in batches, so that a long job shows progress and a node that stops
 * answering is given up on after one timeout, not one per batch.
 */
#include "cluster_int.h"
#include "node.h"
#include "node_client.h"
#include "progress.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Slack over the client's own timeout before the loop gives up. */
#define DEADLINE_SLACK_MS 1000
#define LOOP_PASS_MS 100
/* Largest UserRequest body a node accepts in one frame. */
#define MAX_ASK_BYTES (1024u * 1024)

bool
cairn_ops_unreachable(int status)
{
    return status == CAIRN_EUNAVAILABLE || status == CAIRN_ETIMEOUT;
}

/* --- many nodes at once ----------------------------------------------------
 */

struct call_waiter {
    struct cairn_ops_node_call *call;
    size_t *answered;
};

static void
unpack_body(struct cairn_ops_node_call *call, const struct cairn_node_reply *r)
{
    const uint8_t *data;
    size_t len;

    if (r->frame_count < 1 || r->envelope == NULL || !r->envelope->has_body) {
        call->status = CAIRN_EPROTO;
        snprintf(call->error_text, sizeof(call->error_text),
                 "reply without a body");
        return;
    }
    data = r->frames[0].data;
    len = r->frames[0].len;
    if (call->kind == CAIRN__KIND__STATUS_REQUEST ||
        call->kind == CAIRN__KIND__STATS_REQUEST)
        call->status_reply = cairn__status_reply__unpack(NULL, len, data);
    else
        call->results = cairn__user_results__unpack(NULL, len, data);
    call->paged = call->status_reply != NULL &&
                  call->status_reply->node != NULL &&
                  call->status_reply->node->paged;
    if (call->status_reply == NULL && call->results == NULL) {
        call->status = CAIRN_EPROTO;
        snprintf(call->error_text, sizeof(call->error_text),
                 "malformed reply body");
    }
}

static void
on_reply(void *arg, const struct cairn_node_reply *reply)
{
    struct call_waiter *waiter = arg;
    struct cairn_ops_node_call *call = waiter->call;

    call->answered = true;
    (*waiter->answered)++;
    call->status = reply->status;
    if (reply->status == 0) {
        if (call->kind != CAIRN__KIND__PING)
            unpack_body(call, reply);
        return;
    }
    if (reply->envelope == NULL && reply->status == CAIRN_EUNAVAILABLE)
        snprintf(call->error_text, sizeof(call->error_text),
                 "no connection (node not running or unreachable)");
    else if (reply->envelope == NULL && reply->status == CAIRN_ETIMEOUT)
        snprintf(call->error_text, sizeof(call->error_text),
                 "no answer within the timeout");
    else if (reply->envelope != NULL && reply->envelope->error_text != NULL &&
             reply->envelope->error_text[0] != '\0')
        snprintf(call->error_text, sizeof(call->error_text), "%s",
                 reply->envelope->error_text);
    else
        snprintf(call->error_text, sizeof(call->error_text), "%s",
                 cairn_strerror(reply->status));
}

/* Queues call's request on client; the node is added on first use. */
static int
queue_call(const struct cairn_config *config, struct cairn_node_client *client,
           struct call_waiter *waiter)
{
    const struct cairn_config_node *node =
        cairn_config_node_at(config, waiter->call->node);
    static const Cairn__UserRequest everyone = CAIRN__USER_REQUEST__INIT;
    const Cairn__UserRequest *ask = &everyone;
    struct cairn_node_request request = {0};
    struct cairn_node_frame frame = {NULL, 0};
    uint8_t *packed = NULL;
    size_t index;
    int rc;

    if (node == NULL)
        return CAIRN_EINVAL;
    if (cairn_node_client_find_node(client, node->origin.name, &index) < 0 &&
        (rc = cairn_node_client_add_node(client, node->origin.name,
                                         node->endpoint, &index)) < 0)
        return rc;
    request.kind = waiter->call->kind;
    request.page_after = waiter->call->page_after;
    request.page_limit = waiter->call->page_limit;
    /*
     * The client frees every envelope string it was given, and a NULL one
     * stays protobuf-c's static "" and crashes that free: give all four.
     */
    request.user = "";
    request.destination = "";
    request.verb = "";
    request.key = "";
    /*
     * Always one frame, empty for "all users": cairn-node refuses a
     * message with no payload frames as malformed.
     */
    if (waiter->call->ask != NULL)
        ask = waiter->call->ask;
    frame.len = cairn__user_request__get_packed_size(ask);
    if (frame.len > MAX_ASK_BYTES)
        return CAIRN_ETOOBIG;
    if ((packed = malloc(frame.len + 1)) == NULL)
        return CAIRN_ENOMEM;
    cairn__user_request__pack(ask, packed);
    frame.data = packed;
    request.frames = &frame;
    request.frame_count = 1;
    /* The client copies the frames, so packed can go at once. */
    rc =
        cairn_node_client_send(client, index, &request, on_reply, waiter, NULL);
    free(packed);
    return rc;
}

int
cairn_ops_call_nodes(const struct cairn_config *config,
                     struct cairn_ops_node_call *calls, size_t count,
                     uint64_t timeout_ms)
{
    struct cairn_node_client_settings settings = {0};
    struct cairn_loop *loop = NULL;
    struct cairn_node_client *client = NULL;
    struct call_waiter *waiters = NULL;
    size_t answered = 0;
    uint64_t deadline;
    int rc;

    for (size_t i = 0; i < count; i++) {
        calls[i].status = CAIRN_ETIMEOUT;
        calls[i].error_text[0] = '\0';
        calls[i].answered = false;
    }
    settings.timeout_ms = timeout_ms;
    if ((waiters = calloc(count + 1, sizeof(*waiters))) == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    if ((rc = cairn_loop_new(&loop)) < 0 ||
        (rc = cairn_node_client_new(loop, NULL, &settings, &client)) < 0)
        goto out;
    for (size_t i = 0; i < count; i++) {
        waiters[i].call = &calls[i];
        waiters[i].answered = &answered;
        if ((rc = queue_call(config, client, &waiters[i])) < 0)
            goto out;
    }
    deadline = cairn_loop_now_ms() + timeout_ms + DEADLINE_SLACK_MS;
    while (answered < count && cairn_loop_now_ms() < deadline)
        if ((rc = cairn_loop_run_once(loop, LOOP_PASS_MS)) < 0)
            goto out;
    for (size_t i = 0; i < count; i++)
        if (!calls[i].answered)
            snprintf(calls[i].error_text, sizeof(calls[i].error_text),
                     "no answer within the timeout");
out:
    /* Freeing the client first means no callback runs on freed waiters. */
    cairn_node_client_free(client);
    cairn_loop_free(loop);
    free(waiters);
    return rc;
}

void
cairn_ops_node_call_release(struct cairn_ops_node_call *call)
{
    if (call->status_reply != NULL)
        cairn__status_reply__free_unpacked(call->status_reply, NULL);
    if (call->results != NULL)
        cairn__user_results__free_unpacked(call->results, NULL);
    call->status_reply = NULL;
    call->results = NULL;
}

/* --- sets of names ----------------------------------------------------------
 */

long
cairn_ops_names_find(const struct cairn_ops_names *set, const char *name)
{
    size_t low = 0, high = set->count;

    while (low < high) {
        size_t middle = low + (high - low) / 2;
        int order = strcmp(set->names[middle], name);

        if (order == 0)
            return (long)middle;
        if (order < 0)
            low = middle + 1;
        else
            high = middle;
    }
    return -1;
}

int
cairn_ops_names_add(struct cairn_ops_names *set, const char *name)
{
    size_t low = 0, high = set->count;
    char *copy;

    while (low < high) {
        size_t middle = low + (high - low) / 2;
        int order = strcmp(set->names[middle], name);

        if (order == 0)
            return 0;
        if (order < 0)
            low = middle + 1;
        else
            high = middle;
    }
    if (set->count == set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 64;
        char **names = realloc(set->names, cap * sizeof(*names));

        if (names == NULL)
            return CAIRN_ENOMEM;
        set->names = names;
        set->cap = cap;
    }
    if ((copy = strdup(name)) == NULL)
        return CAIRN_ENOMEM;
    memmove(&set->names[low + 1], &set->names[low],
            (set->count - low) * sizeof(*set->names));
    set->names[low] = copy;
    set->count++;
    return 0;
}

void
cairn_ops_names_release(struct cairn_ops_names *set)
{
    for (size_t i = 0; i < set->count; i++)
        free(set->names[i]);
    free(set->names);
    memset(set, 0, sizeof(*set));
}

/* --- per-user jobs ----------------------------------------------------------
 */

/* Who holds which user, from the nodes' own listings (no ring given). */
struct holder {
    size_t user, node;
};

struct job_state {
    const struct cairn_config *config;
    struct cairn_ops_job *job;
    size_t node_count;
    bool *eligible;                 /* nodes the job may ask */
    size_t **ring_to_config;        /* per ring: ring node index -> config */
    struct cairn_ops_names *listed; /* per node: users it listed */
    bool discovered;
};

static long
config_node_index(const struct cairn_config *config, const char *name)
{
    for (size_t i = 0; i < cairn_config_node_count(config); i++)
        if (strcmp(cairn_config_node_at(config, i)->origin.name, name) == 0)
            return (long)i;
    return -1;
}

static int
map_rings(struct job_state *state, FILE *err)
{
    struct cairn_ops_job *job = state->job;

    if ((state->ring_to_config = calloc(
             job->ring_count + 1, sizeof(*state->ring_to_config))) == NULL)
        return CAIRN_ENOMEM;
    for (size_t r = 0; r < job->ring_count; r++) {
        size_t count = cairn_ring_node_count(job->rings[r]);

        if ((state->ring_to_config[r] = calloc(count + 1, sizeof(size_t))) ==
            NULL)
            return CAIRN_ENOMEM;
        for (size_t i = 0; i < count; i++) {
            struct cairn_ring_node_info info;
            long index;

            if (cairn_ring_node_info(job->rings[r], i, &info) < 0)
                return CAIRN_EINVAL;
            if ((index = config_node_index(state->config, info.name)) < 0) {
                fprintf(err,
                        "cairnctl: ring of destination %s names node %s, "
                        "which the config lacks\n",
                        cairn_ring_destination(job->rings[r]), info.name);
                return CAIRN_ECONFIG;
            }
            state->ring_to_config[r][i] = (size_t)index;
        }
    }
    return 0;
}

/*
 * Pings every eligible node with the short status timeout: a node that is
 * down then costs seconds, not the job's long timeout, and is skipped.
 */
static int
probe_nodes(struct job_state *state)
{
    struct cairn_ops_job *job = state->job;
    struct cairn_ops_node_call *calls = NULL;
    uint64_t timeout_ms = job->timeout_ms < CAIRN_OPS_STATUS_TIMEOUT_MS
                              ? job->timeout_ms
                              : CAIRN_OPS_STATUS_TIMEOUT_MS;
    size_t count = 0;
    int rc;

    if ((calls = calloc(state->node_count + 1, sizeof(*calls))) == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < state->node_count; i++) {
        if (!state->eligible[i])
            continue;
        calls[count].node = i;
        calls[count].kind = CAIRN__KIND__PING;
        count++;
    }
    rc = cairn_ops_call_nodes(state->config, calls, count, timeout_ms);
    for (size_t c = 0; c < count && rc == 0; c++)
        if (cairn_ops_unreachable(calls[c].status))
            job->node_status[calls[c].node] = calls[c].status;
    free(calls);
    return rc;
}

/* Asks every eligible node for its users (STATS) to learn who holds whom. */
static int
discover_users(struct job_state *state)
{
    struct cairn_ops_job *job = state->job;
    struct cairn_ops_node_call *calls = NULL;
    size_t count = 0;
    int rc = 0;

    calls = calloc(state->node_count + 1, sizeof(*calls));
    state->listed = calloc(state->node_count + 1, sizeof(*state->listed));
    if (calls == NULL || state->listed == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < state->node_count; i++) {
        if (!state->eligible[i] || job->node_status[i] < 0)
            continue;
        calls[count].node = i;
        calls[count].kind = CAIRN__KIND__STATS_REQUEST;
        count++;
    }
    if ((rc = cairn_ops_call_nodes(state->config, calls, count,
                                   job->timeout_ms)) < 0)
        goto out;
    for (size_t c = 0; c < count && rc == 0; c++) {
        const Cairn__StatusReply *reply = calls[c].status_reply;

        if (calls[c].status < 0) {
            job->node_status[calls[c].node] = calls[c].status;
            continue;
        }
        for (size_t u = 0; u < reply->n_users && rc == 0; u++) {
            rc = cairn_ops_names_add(&state->listed[calls[c].node],
                                     reply->users[u]->user);
            if (rc == 0)
                rc = cairn_ops_names_add(&job->users, reply->users[u]->user);
        }
    }
    state->discovered = true;
out:
    cairn_ops_node_calls_free(calls, count);
    return rc;
}

static int
add_row(struct cairn_ops_job *job, size_t user, size_t node, bool expected)
{
    struct cairn_ops_user_row *row;

    for (size_t i = job->row_count; i > 0; i--) {
        if (job->rows[i - 1].user != user)
            break;
        if (job->rows[i - 1].node == node) {
            job->rows[i - 1].expected |= expected;
            return 0;
        }
    }
    if (job->row_count == job->row_cap) {
        size_t cap = job->row_cap ? job->row_cap * 2 : 64;
        struct cairn_ops_user_row *rows =
            realloc(job->rows, cap * sizeof(*rows));

        if (rows == NULL)
            return CAIRN_ENOMEM;
        job->rows = rows;
        job->row_cap = cap;
    }
    row = &job->rows[job->row_count++];
    memset(row, 0, sizeof(*row));
    row->user = user;
    row->node = node;
    row->expected = expected;
    row->code = CAIRN_EAGAIN; /* not answered yet */
    return 0;
}

/* The rows (user, node) of one user: where to ask. */
static int
plan_user(struct job_state *state, size_t user)
{
    struct cairn_ops_job *job = state->job;
    const char *name = job->users.names[user];
    int rc = 0;

    if (job->ring_count > 0) {
        for (size_t r = 0; r < job->ring_count && rc == 0; r++) {
            uint16_t replicas[CAIRN_RING_MAX_REPLICAS];
            unsigned count = cairn_ring_replicas(job->rings[r]);

            cairn_ring_lookup(job->rings[r], name, strlen(name), replicas);
            for (unsigned i = 0; i < count && rc == 0; i++) {
                size_t node = state->ring_to_config[r][replicas[i]];

                if (state->eligible[node])
                    rc = add_row(job, user, node, true);
            }
        }
        return rc;
    }
    for (size_t node = 0; node < state->node_count && rc == 0; node++) {
        if (!state->eligible[node])
            continue;
        if (!state->discovered)
            rc = add_row(job, user, node, false);
        else if (cairn_ops_names_find(&state->listed[node], name) >= 0)
            rc = add_row(job, user, node, true);
    }
    return rc;
}

/* Copies a node's answer for one user into its row. */
static void
fill_row(struct cairn_ops_user_row *row, const Cairn__UserResult *result)
{
    row->code = result->code;
    snprintf(row->text, sizeof(row->text), "%s",
             result->text ? result->text : "");
    snprintf(row->digest, sizeof(row->digest), "%s",
             result->digest ? result->digest : "");
    row->bytes_before = result->bytes_before;
    row->bytes_after = result->bytes_after;
}

/* Rows first..last-1 whose node is node get call's outcome. */
static void
collect(struct cairn_ops_job *job, size_t first, size_t last,
        const struct cairn_ops_node_call *call)
{
    for (size_t i = first; i < last; i++) {
        struct cairn_ops_user_row *row = &job->rows[i];
        const char *name = job->users.names[row->user];

        if (row->node != call->node)
            continue;
        if (call->status < 0) {
            row->code = call->status;
            snprintf(row->text, sizeof(row->text), "%s", call->error_text);
            continue;
        }
        row->code = CAIRN_EPROTO;
        snprintf(row->text, sizeof(row->text), "node left this user out");
        for (size_t r = 0; r < call->results->n_results; r++)
            if (strcmp(call->results->results[r]->user, name) == 0) {
                fill_row(row, call->results->results[r]);
                break;
            }
    }
}

/* Sends the rows first..last-1: one request per node. */
static int
run_batch(struct job_state *state, size_t first, size_t last)
{
    struct cairn_ops_job *job = state->job;
    struct cairn_ops_node_call *calls = NULL;
    Cairn__UserRequest *asks = NULL;
    char **names = NULL;
    size_t count = 0, used = 0;
    int rc = 0;

    calls = calloc(state->node_count + 1, sizeof(*calls));
    asks = calloc(state->node_count + 1, sizeof(*asks));
    names = calloc(last - first + 1, sizeof(*names));
    if (calls == NULL || asks == NULL || names == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    for (size_t node = 0; node < state->node_count; node++) {
        Cairn__UserRequest *ask = &asks[count];

        cairn__user_request__init(ask);
        ask->full = job->full;
        ask->users = &names[used];
        for (size_t i = first; i < last; i++) {
            struct cairn_ops_user_row *row = &job->rows[i];

            if (row->node != node)
                continue;
            if (job->node_status[node] < 0) {
                row->code = job->node_status[node];
                snprintf(row->text, sizeof(row->text), "%s",
                         cairn_strerror(row->code));
                continue;
            }
            names[used++] = job->users.names[row->user];
            ask->n_users++;
        }
        if (ask->n_users == 0)
            continue;
        calls[count].node = node;
        calls[count].kind = job->kind;
        calls[count].ask = ask;
        count++;
    }
    if (count > 0 && (rc = cairn_ops_call_nodes(state->config, calls, count,
                                                job->timeout_ms)) < 0)
        goto out;
    for (size_t c = 0; c < count; c++) {
        collect(job, first, last, &calls[c]);
        /* Given up on: later batches do not wait for it again. */
        if (cairn_ops_unreachable(calls[c].status))
            job->node_status[calls[c].node] = calls[c].status;
    }
out:
    cairn_ops_node_calls_free(calls, count);
    free(asks);
    free(names);
    return rc;
}

static int
run_batches(struct job_state *state)
{
    struct cairn_ops_job *job = state->job;
    const char *verb =
        job->kind == CAIRN__KIND__VERIFY_REQUEST ? "verify" : "compact";
    struct cairn_ops_progress progress;
    size_t user = 0;
    int rc = 0;

    cairn_ops_progress_start(&progress, job->progress, false, verb, "users",
                             job->users.count, 0);

    while (user < job->users.count && rc == 0) {
        size_t end = user + CAIRN_OPS_JOB_BATCH;

        if (end > job->users.count)
            end = job->users.count;
        job->row_count = 0;
        for (size_t u = user; u < end && rc == 0; u++)
            rc = plan_user(state, u);
        if (rc == 0)
            rc = run_batch(state, 0, job->row_count);
        if (rc == 0 && job->report != NULL)
            rc = job->report(job->report_ctx, job, user, end);
        user = end;
        cairn_ops_progress_update(&progress, user, 0, NULL);
    }
    cairn_ops_progress_end(&progress, user, 0);
    return rc;
}

int
cairn_ops_job_run(const struct cairn_config *config, FILE *err,
                  struct cairn_ops_job *job)
{
    struct job_state state = {0};
    int rc = 0;

    state.config = config;
    state.job = job;
    job->config = config;
    state.node_count = cairn_config_node_count(config);
    state.eligible = calloc(state.node_count + 1, sizeof(bool));
    job->node_status = calloc(state.node_count + 1, sizeof(int));
    if (state.eligible == NULL || job->node_status == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < state.node_count; i++)
        state.eligible[i] = job->only_node == NULL ||
                            strcmp(cairn_config_node_at(config, i)->origin.name,
                                   job->only_node) == 0;
    if ((rc = map_rings(&state, err)) < 0 || (rc = probe_nodes(&state)) < 0)
        goto out;
    if (job->users.count == 0 && (rc = discover_users(&state)) < 0)
        goto out;
    rc = run_batches(&state);
out:
    for (size_t r = 0; state.ring_to_config && r < job->ring_count; r++)
        free(state.ring_to_config[r]);
    free(state.ring_to_config);
    for (size_t i = 0; state.listed && i < state.node_count; i++)
        cairn_ops_names_release(&state.listed[i]);
    free(state.listed);
    free(state.eligible);
    return rc;
}

void
cairn_ops_job_release(struct cairn_ops_job *job)
{
    cairn_ops_names_release(&job->users);
    free(job->rows);
    free(job->node_status);
    job->rows = NULL;
    job->node_status = NULL;
    job->row_count = job->row_cap = 0;
}

/* --- rings and formatting ----------------------------------------------------
 */

int
cairn_ops_load_rings(FILE *err, const char *const *paths, size_t count,
                     struct cairn_ring **rings)
{
    int rc = 0;

    for (size_t i = 0; i < count && rc == 0; i++)
        if ((rc = cairn_ring_load(paths[i], &rings[i])) < 0)
            fprintf(err, "cairnctl: %s: %s\n", paths[i], cairn_strerror(rc));
    return rc;
}

int
cairn_ops_parse_timeout(const char *text, uint64_t *ms)
{
    size_t len = strlen(text);
    uint64_t seconds;
    int rc;

    if (len > 2 && strcmp(text + len - 2, "ms") == 0)
        return cairn_parse_u64(text, len - 2, 1, UINT64_C(86400000), ms);
    if ((rc = cairn_parse_duration(text, &seconds)) < 0)
        return rc;
    if (seconds == 0 || seconds > 86400)
        return CAIRN_EOVERFLOW;
    *ms = seconds * 1000;
    return 0;
}

void
cairn_ops_format_bytes(uint64_t bytes, char *text, size_t size)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double value = (double)bytes;
    size_t unit = 0;

    while (value >= 1024.0 && unit + 1 < sizeof(units) / sizeof(units[0])) {
        value /= 1024.0;
        unit++;
    }
    if (unit == 0)
        snprintf(text, size, "%llu B", (unsigned long long)bytes);
    else
        snprintf(text, size, "%.1f %s", value, units[unit]);
}

void
cairn_ops_format_age(int64_t seconds, char *text, size_t size)
{
    if (seconds < 0)
        seconds = 0;
    if (seconds < 120)
        snprintf(text, size, "%llds", (long long)seconds);
    else if (seconds < 2 * 3600)
        snprintf(text, size, "%lldm", (long long)(seconds / 60));
    else if (seconds < 2 * 86400)
        snprintf(text, size, "%lldh%02lldm", (long long)(seconds / 3600),
                 (long long)(seconds % 3600 / 60));
    else
        snprintf(text, size, "%lldd%02lldh", (long long)(seconds / 86400),
                 (long long)(seconds % 86400 / 3600));
}

void
cairn_ops_format_time(int64_t when, char *text, size_t size)
{
    time_t seconds = (time_t)when;
    struct tm tm;

    if (when <= 0 || gmtime_r(&seconds, &tm) == NULL) {
        snprintf(text, size, "never");
        return;
    }
    strftime(text, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* --- the front of verify and compact -------------------------------------- */

struct job_args {
    const char *rings[CAIRN_OPS_MAX_RINGS];
    size_t ring_count;
    bool quiet;
    int first;
};

static int
parse_job_args(struct cairn_ops_context *context,
               const struct cairn_ops_command *command, int argc, char **argv,
               struct cairn_ops_job *job, struct job_args *args)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"full", no_argument, NULL, 'f'},
        {"quiet", no_argument, NULL, 'q'},
        {"node", required_argument, NULL, 'n'},
        {"ring", required_argument, NULL, 'r'},
        {"timeout", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    bool verify = job->kind == CAIRN__KIND__VERIFY_REQUEST;
    int option, rc = 0;

    optind = 0;
    opterr = 0;
    while (rc == 0 && (option = getopt_long(argc, argv, "fqn:r:t:", options,
                                            NULL)) != -1) {
        switch (option) {
        case 'j':
            context->json = true;
            break;
        case 'f':
            job->full = true;
            rc = verify ? 0 : CAIRN_EINVAL;
            break;
        case 'q':
            args->quiet = true;
            break;
        case 'n':
            job->only_node = optarg;
            break;
        case 'r':
            if (args->ring_count == CAIRN_OPS_MAX_RINGS)
                rc = CAIRN_ETOOBIG;
            else
                args->rings[args->ring_count++] = optarg;
            break;
        case 't':
            rc = cairn_ops_parse_timeout(optarg, &job->timeout_ms);
            break;
        default:
            rc = CAIRN_EINVAL;
        }
    }
    if (rc < 0 || argc - optind > CAIRN_OPS_MAX_USER_ARGS) {
        fprintf(context->err, "cairnctl %s: bad option or value\n",
                command->name);
        return cairn_ops_usage(context, command);
    }
    args->first = optind;
    return CAIRN_EXIT_OK;
}

/* Parses the arguments, loads the config and the rings and runs job.
   Returns the exit code to use when not 0. *config and
   rings[0..*ring_count-1] are owned by the caller, also on failure. */
static int
job_command(struct cairn_ops_context *context,
            const struct cairn_ops_command *command, int argc, char **argv,
            struct cairn_ops_job *job, struct cairn_config **config,
            struct cairn_ring **rings, size_t *ring_count)
{
    struct job_args args = {0};
    int status, rc = 0;

    *ring_count = 0;
    job->timeout_ms = CAIRN_OPS_JOB_TIMEOUT_MS;
    if ((status = parse_job_args(context, command, argc, argv, job, &args)) !=
        0)
        return status;
    if ((status = cairn_ops_load_config(context, NULL, config)) != 0)
        return status;
    if (job->only_node != NULL &&
        config_node_index(*config, job->only_node) < 0) {
        fprintf(context->err, "cairnctl %s: no node called %s\n", command->name,
                job->only_node);
        return CAIRN_EXIT_USAGE;
    }
    rc = cairn_ops_load_rings(context->err, args.rings, args.ring_count, rings);
    for (size_t i = 0; i < args.ring_count; i++)
        *ring_count += rings[i] != NULL;
    if (rc < 0)
        return rc == CAIRN_ENOENT ? CAIRN_EXIT_NOINPUT : CAIRN_EXIT_PROBLEM;
    job->rings = rings;
    job->ring_count = *ring_count;
    job->progress = args.quiet ? NULL : context->err;
    for (int i = args.first; i < argc && rc == 0; i++) {
        if ((rc = cairn_node_check_userid(argv[i])) < 0)
            fprintf(context->err, "cairnctl %s: bad user name '%s'\n",
                    command->name, argv[i]);
        else
            rc = cairn_ops_names_add(&job->users, argv[i]);
    }
    if (rc < 0)
        return rc == CAIRN_EBADNAME ? CAIRN_EXIT_USAGE : CAIRN_EXIT_SOFTWARE;
    if ((rc = cairn_ops_job_run(*config, context->err, job)) < 0) {
        if (rc != CAIRN_ECONFIG)
            fprintf(context->err, "cairnctl %s: %s\n", command->name,
                    cairn_strerror(rc));
        return rc == CAIRN_ECONFIG ? CAIRN_EXIT_PROBLEM : CAIRN_EXIT_SOFTWARE;
    }
    return CAIRN_EXIT_OK;
}

int
cairn_ops_job_main(struct cairn_ops_context *context,
                   const struct cairn_ops_command *command, int argc,
                   char **argv, struct cairn_ops_job *job,
                   int (*finish)(const struct cairn_ops_job *job))
{
    struct cairn_config *config = NULL;
    struct cairn_ring *rings[CAIRN_OPS_MAX_RINGS] = {0};
    size_t ring_count = 0;
    int status;

    status = job_command(context, command, argc, argv, job, &config, rings,
                         &ring_count);
    if (status == CAIRN_EXIT_OK)
        status = finish(job);
    cairn_ops_job_release(job);
    for (size_t i = 0; i < ring_count; i++)
        cairn_ring_free(rings[i]);
    cairn_config_free(config);
    return status;
}

int
cairn_ops_job_node_failures(FILE *err, const char *command_name,
                            const struct cairn_ops_job *job, int status)
{
    for (size_t node = 0; node < cairn_config_node_count(job->config); node++) {
        if (job->node_status[node] >= 0)
            continue;
        fprintf(err, "cairnctl %s: node %s: %s\n", command_name,
                cairn_ops_node_name(job->config, node),
                cairn_strerror(job->node_status[node]));
        if (status == CAIRN_EXIT_OK)
            status = CAIRN_EXIT_UNAVAILABLE;
    }
    return status;
}

const char *
cairn_ops_node_name(const struct cairn_config *config, size_t node)
{
    return cairn_config_node_at(config, node)->origin.name;
}

void
cairn_ops_node_calls_free(struct cairn_ops_node_call *calls, size_t count)
{
    for (size_t c = 0; calls != NULL && c < count; c++)
        cairn_ops_node_call_release(&calls[c]);
    free(calls);
}

void
cairn_ops_json_user_stats(FILE *out, const Cairn__UserStats *stats)
{
    fprintf(out,
            ",\"bytes_on_disk\":%llu,\"raw_bytes\":%llu,\"chunks\":%llu,"
            "\"mailboxes\":%llu,\"messages\":%llu,\"last_backup_time\":%lld",
            (unsigned long long)stats->bytes_on_disk,
            (unsigned long long)stats->raw_bytes,
            (unsigned long long)stats->chunks,
            (unsigned long long)stats->mailboxes,
            (unsigned long long)stats->messages,
            (long long)stats->last_backup_time);
}
