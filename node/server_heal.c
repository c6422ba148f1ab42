/*
 * server_heal.c - self-heal: after the scrub has checked a user, the
 * node compares its replica with the user's other replicas (a DIGEST
 * request to every other node of its destinations: a digest from each
 * index, no data file read), and rebuilds its own copy node to node when
 * it is damaged, or verifies but is older than a peer's.
 *
 * A heal never turns one good copy into two bad ones: the source is a
 * peer that holds the newest good digest (the newest update stamp wins;
 * among equals the most replicas), and that peer first verifies its copy
 * in full (VERIFY_REQUEST, full) and must answer the same digest. The
 * copy is pulled (node_pull_user: the current files are set aside as
 * <data file>.replaced-<time>), verified in full here and compared with
 * the source's digest; only then the quarantine is lifted and the files
 * set aside are deleted. When no replica is good nothing is deleted: the
 * user stays quarantined, is reported (log, NodeStats damaged_users,
 * cairnctl status) and the heal is tried again an interval later.
 * Verified replicas that differ with the same newest stamp cannot be
 * ordered: "diverged", reported, neither overwritten.
 *
 * A copy that verifies but is older is only replaced when the difference
 * holds still (SETTLE_MS later, neither the peer's digest nor this data
 * file changed): a write the router is sending to both replicas right now
 * is not damage.
 */
#include "common.h"
#include "node_client.h"
#include "server_int.h"

#include <dirent.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEAL_TICK_MS 250
/* A peer's digest or verify; a full verify of a big user takes long. */
#define DIGEST_TIMEOUT_MS (60u * 1000)
#define VERIFY_TIMEOUT_MS (30u * 60 * 1000)
/* An older copy is replaced only if the difference holds this long. */
#define SETTLE_MS 3000
/* A heal that found no source (or failed) is tried again after this, or
 * the scrub interval when shorter. */
#define RETRY_MS (3600ull * 1000)

enum heal_phase {
    PHASE_DIGESTS, /* asking every peer for its digest */
    PHASE_PEERS,   /* peers that differ verify themselves in full */
    PHASE_SETTLE,  /* an older copy: asking again after SETTLE_MS */
    PHASE_VERIFY,  /* a candidate source verifies itself in full */
    PHASE_PULL,    /* waiting for the worker, then pulling */
    PHASE_CHECK,   /* verifying the pulled copy here */
    PHASE_WAIT,    /* no source or failed: retry at retry_ms */
};

struct peer_answer {
    bool answered, held;
    int code; /* 0: digest valid */
    char digest[41];
    int64_t newest;
    char text[200];
};

struct heal_case {
    struct heal_case *next;
    char *userid;
    enum heal_phase phase;
    bool damaged;     /* this copy failed its check */
    bool quarantined; /* by this heal (an older copy) */
    char own_digest[41];
    int64_t own_newest;
    struct stat own_file;        /* the data file when compared (settle) */
    struct peer_answer *answers; /* one per peer */
    bool *bad;                   /* per peer: failed its full verify */
    bool peers_checked;          /* PHASE_PEERS done */
    char first_digests[8][41];   /* PHASE_SETTLE: the first answers */
    size_t waiting;
    char want[41];    /* the good digest */
    size_t candidate; /* the peer verifying or pulled from */
    uint64_t detected_ms, retry_ms;
    char old_path[1024]; /* the data file before the pull, "" if none */
    struct node_pull_result pull;
    char check_digest[41];
    char check_error[256];
    char state[1600]; /* for status: what the heal is doing or found */
};

struct node_heal {
    struct cairn_node_peer *peers; /* strings owned */
    size_t peer_count;
    struct cairn_node_client *client;        /* on the server's loop, lazily */
    struct cairn_node_client *verify_client; /* the same, long timeout */
    uint64_t resume_ms; /* next walk of the users marked damaged */
    struct heal_case *cases;
    uint64_t timer;
    uint64_t ok, failed, no_source, diverged;
};

struct peer_call {
    struct cairn_node_server *server;
    char *userid;
    size_t peer;
    bool verify;
};

static void advance(struct cairn_node_server *server, struct heal_case *c);
static void decide(struct cairn_node_server *server, struct heal_case *c);

static struct heal_case *
find_case(struct node_heal *heal, const char *userid)
{
    for (struct heal_case *c = heal->cases; c != NULL; c = c->next)
        if (strcmp(c->userid, userid) == 0)
            return c;
    return NULL;
}

static void
case_free(struct heal_case *c)
{
    if (c == NULL)
        return;
    free(c->userid);
    free(c->answers);
    free(c->bad);
    free(c);
}

static void
drop_case(struct node_heal *heal, struct heal_case *gone)
{
    for (struct heal_case **p = &heal->cases; *p != NULL; p = &(*p)->next)
        if (*p == gone) {
            *p = gone->next;
            case_free(gone);
            return;
        }
}

static const char *
peer_name(struct cairn_node_server *server, size_t peer)
{
    return server->heal->peers[peer].name;
}

static int
ensure_client(struct cairn_node_server *server)
{
    struct node_heal *heal = server->heal;
    struct cairn_node_client_settings settings = {0};
    int rc;

    if (heal->client != NULL)
        return 0;
    /* one client per timeout: a digest is quick, a full verify is not */
    settings.timeout_ms = DIGEST_TIMEOUT_MS;
    settings.max_frame = server->settings.max_frame;
    if ((rc = cairn_node_client_new(server->loop, server->zmq_context,
                                    &settings, &heal->client)) < 0)
        return rc;
    settings.timeout_ms = VERIFY_TIMEOUT_MS;
    rc = cairn_node_client_new(server->loop, server->zmq_context, &settings,
                               &heal->verify_client);
    for (size_t i = 0; i < heal->peer_count && rc == 0; i++)
        if ((rc = cairn_node_client_add_node(heal->client, heal->peers[i].name,
                                             heal->peers[i].endpoint, NULL)) ==
            0)
            rc = cairn_node_client_add_node(heal->verify_client,
                                            heal->peers[i].name,
                                            heal->peers[i].endpoint, NULL);
    if (rc < 0) {
        cairn_node_client_free(heal->client);
        cairn_node_client_free(heal->verify_client);
        heal->client = heal->verify_client = NULL;
    }
    return rc;
}

/* --- asking the peers ------------------------------------------------- */

static void
on_digest(void *arg, const struct cairn_node_reply *reply)
{
    struct peer_call *call = arg;
    struct cairn_node_server *server = call->server;
    struct heal_case *c = find_case(server->heal, call->userid);
    Cairn__StatusReply *status = NULL;

    if (c != NULL && c->answers != NULL && !c->answers[call->peer].answered) {
        struct peer_answer *answer = &c->answers[call->peer];

        answer->answered = true;
        answer->code = reply->status;
        if (reply->status == 0 && reply->frame_count > 0)
            status = cairn__status_reply__unpack(
                NULL, reply->frames[0].len,
                (const uint8_t *)reply->frames[0].data);
        if (reply->status != 0)
            snprintf(answer->text, sizeof(answer->text), "%s%s%s",
                     cairn_strerror(reply->status),
                     reply->envelope && reply->envelope->error_text ? ": " : "",
                     reply->envelope && reply->envelope->error_text
                         ? reply->envelope->error_text
                         : "");
        else if (status == NULL)
            answer->code = CAIRN_EPROTO;
        for (size_t i = 0; status != NULL && i < status->n_users; i++) {
            const Cairn__UserStats *one = status->users[i];

            if (one->user == NULL || strcmp(one->user, c->userid) != 0)
                continue;
            answer->held = true;
            answer->code = one->digest_code;
            answer->newest = one->last_backup_time;
            snprintf(answer->digest, sizeof(answer->digest), "%s",
                     one->digest ? one->digest : "");
            snprintf(answer->text, sizeof(answer->text), "%s",
                     one->digest_text ? one->digest_text : "");
            if (answer->code == 0 && strlen(answer->digest) != 40)
                answer->code = CAIRN_EPROTO;
        }
        if (status != NULL && !answer->held)
            snprintf(answer->text, sizeof(answer->text), "does not hold it");
        if (answer->held && c->bad[call->peer]) {
            answer->code = CAIRN_ECORRUPT;
            snprintf(answer->text, sizeof(answer->text),
                     "its full verify failed");
        }
        if (status)
            cairn__status_reply__free_unpacked(status, NULL);
        if (c->waiting > 0 && --c->waiting == 0)
            advance(server, c);
    }
    free(call->userid);
    free(call);
}

static void
on_verify(void *arg, const struct cairn_node_reply *reply)
{
    struct peer_call *call = arg;
    struct cairn_node_server *server = call->server;
    struct heal_case *c = find_case(server->heal, call->userid);
    Cairn__UserResults *results = NULL;

    if (reply->status == 0 && reply->frame_count > 0)
        results = cairn__user_results__unpack(
            NULL, reply->frames[0].len, (const uint8_t *)reply->frames[0].data);

    if (c != NULL && c->phase == PHASE_PEERS) {
        struct peer_answer *answer = &c->answers[call->peer];

        for (size_t i = 0; results != NULL && i < results->n_results; i++) {
            const Cairn__UserResult *one = results->results[i];

            if (one->user == NULL || strcmp(one->user, c->userid) != 0 ||
                one->code == 0)
                continue;
            c->bad[call->peer] = true;
            answer->code = CAIRN_ECORRUPT;
            snprintf(answer->text, sizeof(answer->text),
                     "its full verify: %s: %s", cairn_strerror(one->code),
                     one->text ? one->text : "");
        }
        if (results == NULL)
            answer->code = reply->status ? reply->status : CAIRN_EPROTO;
        if (c->waiting > 0 && --c->waiting == 0) {
            c->phase = PHASE_DIGESTS;
            decide(server, c);
        }
    } else if (c != NULL && c->phase == PHASE_VERIFY &&
               c->candidate == call->peer) {
        struct peer_answer *answer = &c->answers[call->peer];
        bool good = false;

        for (size_t i = 0; results != NULL && i < results->n_results; i++) {
            const Cairn__UserResult *one = results->results[i];

            if (one->user == NULL || strcmp(one->user, c->userid) != 0)
                continue;
            good = one->code == 0 && one->digest != NULL &&
                   strcmp(one->digest, c->want) == 0;
            if (!good)
                snprintf(answer->text, sizeof(answer->text),
                         "its full verify: %s%s%s",
                         one->code ? cairn_strerror(one->code) : "digest ",
                         one->code ? ": " : "",
                         one->code ? (one->text ? one->text : "")
                                   : (one->digest ? one->digest : "none"));
        }
        if (results == NULL)
            snprintf(
                answer->text, sizeof(answer->text), "its full verify: %s",
                cairn_strerror(reply->status ? reply->status : CAIRN_EPROTO));
        if (!good) {
            answer->code = CAIRN_ECORRUPT;
            c->candidate++;
        }
        c->phase = good ? PHASE_PULL : PHASE_VERIFY;
        advance(server, c);
    }
    free(call->userid);
    free(call);
    if (results)
        cairn__user_results__free_unpacked(results, NULL);
}

static int
ask_peer(struct cairn_node_server *server, struct heal_case *c, size_t peer,
         bool verify)
{
    Cairn__UserRequest ask = CAIRN__USER_REQUEST__INIT;
    struct cairn_node_request request = {0};
    struct cairn_node_frame frame;
    struct peer_call *call = calloc(1, sizeof(*call));
    char *users[1] = {c->userid};
    uint8_t packed[1024];
    int rc;

    if (call == NULL || (call->userid = strdup(c->userid)) == NULL) {
        free(call);
        return CAIRN_ENOMEM;
    }
    call->server = server;
    call->peer = peer;
    call->verify = verify;
    ask.users = users;
    ask.n_users = 1;
    ask.full = verify;
    if (cairn__user_request__get_packed_size(&ask) > sizeof(packed)) {
        rc = CAIRN_ETOOBIG;
        goto out;
    }
    frame.data = packed;
    frame.len = cairn__user_request__pack(&ask, packed);
    request.kind =
        verify ? CAIRN__KIND__VERIFY_REQUEST : CAIRN__KIND__DIGEST_REQUEST;
    request.frames = &frame;
    request.frame_count = 1;
    rc = cairn_node_client_send(
        verify ? server->heal->verify_client : server->heal->client, peer,
        &request, verify ? on_verify : on_digest, call, NULL);
out:
    if (rc < 0) {
        free(call->userid);
        free(call);
    }
    return rc;
}

/* Asks every peer for its digest of the user (PHASE_DIGESTS/SETTLE). */
static void
ask_digests(struct cairn_node_server *server, struct heal_case *c)
{
    struct node_heal *heal = server->heal;

    memset(c->answers, 0, heal->peer_count * sizeof(*c->answers));
    c->waiting = heal->peer_count;
    for (size_t i = 0; i < heal->peer_count; i++)
        if (ask_peer(server, c, i, false) < 0) {
            c->answers[i].answered = true;
            c->answers[i].code = CAIRN_EUNAVAILABLE;
            snprintf(c->answers[i].text, sizeof(c->answers[i].text),
                     "cannot be asked");
            c->waiting--;
        }
    if (c->waiting == 0)
        advance(server, c);
}

/* --- deciding ---------------------------------------------------------- */

/* The peers' answers as one line for the log ("node2: ..., node3: ..."). */
static void
describe_answers(struct cairn_node_server *server, const struct heal_case *c,
                 char *out, size_t size)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < server->heal->peer_count && used + 1 < size; i++) {
        const struct peer_answer *a = &c->answers[i];
        int n;

        if (a->answered && !a->held && a->code == 0)
            continue;
        n = snprintf(out + used, size - used, "%s%s: %s", used ? "; " : "",
                     peer_name(server, i),
                     !a->answered   ? "no answer"
                     : a->code != 0 ? (a->text[0] ? a->text : "failed")
                     : a->digest[0] ? a->digest
                                    : "does not hold it");
        if (n > 0)
            used += (size_t)n;
    }
    if (used == 0)
        snprintf(out, size, "no other node holds it");
}

/*
 * The good digest among the peers' answers (and this copy's when it
 * verified): the newest update stamp wins, then the most copies. Returns
 * 1 with it in want, 0 when no good copy is known, -1 when good copies
 * with the same newest stamp differ (diverged).
 */
static int
choose_good(struct cairn_node_server *server, const struct heal_case *c,
            char want[41])
{
    int64_t newest = INT64_MIN;
    size_t best_count = 0;
    bool tie = false;

    want[0] = '\0';
    if (!c->damaged)
        newest = c->own_newest;
    for (size_t i = 0; i < server->heal->peer_count; i++) {
        const struct peer_answer *a = &c->answers[i];

        if (a->held && a->code == 0 && a->newest > newest)
            newest = a->newest;
    }
    if (newest == INT64_MIN)
        return 0;
    /* each digest with the newest stamp, counted */
    for (size_t i = 0; i <= server->heal->peer_count; i++) {
        const char *digest;
        size_t count = 0;

        if (i == server->heal->peer_count) {
            if (c->damaged || c->own_newest != newest)
                continue;
            digest = c->own_digest;
        } else {
            const struct peer_answer *a = &c->answers[i];

            if (!a->held || a->code != 0 || a->newest != newest)
                continue;
            digest = a->digest;
        }
        if (!c->damaged && c->own_newest == newest &&
            strcmp(c->own_digest, digest) == 0)
            count++;
        for (size_t j = 0; j < server->heal->peer_count; j++) {
            const struct peer_answer *a = &c->answers[j];

            if (a->held && a->code == 0 && a->newest == newest &&
                strcmp(a->digest, digest) == 0)
                count++;
        }
        if (count > best_count) {
            best_count = count;
            tie = false;
            snprintf(want, 41, "%s", digest);
        } else if (count == best_count && strcmp(want, digest) != 0) {
            tie = true;
        }
    }
    return tie ? -1 : 1;
}

static void
quarantine_for_heal(struct cairn_node_server *server, struct heal_case *c,
                    const char *why)
{
    struct node_user *user = NULL;

    if (c->damaged || node_user_get(server, c->userid, &user) < 0)
        return;
    node_scrub_quarantine(server, user, why);
    c->quarantined = true;
}

static void
wait_retry(struct cairn_node_server *server, struct heal_case *c)
{
    uint64_t interval = node_scrub_interval_ms(server);

    c->phase = PHASE_WAIT;
    c->retry_ms =
        cairn_loop_now_ms() + (interval < RETRY_MS ? interval : RETRY_MS);
}

/* All digests are in: nothing to do, settle, diverged, or heal. */
static void
decide(struct cairn_node_server *server, struct heal_case *c)
{
    struct node_heal *heal = server->heal;
    char answers[1024];
    int good = choose_good(server, c, c->want);

    describe_answers(server, c, answers, sizeof(answers));
    if (!c->damaged && !c->peers_checked) {
        /* a peer that differs may be damaged without knowing it yet (its
         * own scrub has not come to the user): it verifies itself first */
        c->peers_checked = true;
        c->waiting = 0;
        c->phase = PHASE_PEERS;
        for (size_t i = 0; i < heal->peer_count; i++) {
            const struct peer_answer *a = &c->answers[i];

            if (a->held && a->code == 0 &&
                strcmp(a->digest, c->own_digest) != 0 &&
                ask_peer(server, c, i, true) == 0)
                c->waiting++;
        }
        if (c->waiting > 0)
            return; /* on_verify decides again */
        c->phase = PHASE_DIGESTS;
    }
    if (!c->damaged && (good == 0 || strcmp(c->want, c->own_digest) == 0)) {
        node_event(server, CAIRN_LOG_DEBUG, NULL,
                   "heal: %s agrees with its replicas (%s)", c->userid,
                   answers);
        drop_case(heal, c);
        return;
    }
    if (good < 0) {
        heal->diverged++;
        snprintf(c->state, sizeof(c->state),
                 "diverged: verified replicas differ with the same newest "
                 "update (%s)",
                 answers);
        node_event(server, CAIRN_LOG_ERROR, NULL,
                   "heal: %s has DIVERGED: its verified replicas differ and "
                   "carry the same newest update, so none can be called the "
                   "good one; nothing overwritten (cairnctl verify %s; "
                   "cairnctl repair decides): this copy %s, %s",
                   c->userid, c->userid, c->damaged ? "damaged" : c->own_digest,
                   answers);
        if (!c->damaged) {
            drop_case(heal, c);
            return;
        }
        wait_retry(server, c);
        return;
    }
    if (good == 0) {
        heal->no_source++;
        snprintf(c->state, sizeof(c->state), "no good replica (%s)", answers);
        node_event(server, CAIRN_LOG_ERROR, NULL,
                   "heal: %s is DAMAGED on this node and NO GOOD REPLICA is "
                   "left (%s); nothing deleted, it stays quarantined: the "
                   "operator decides",
                   c->userid, answers);
        wait_retry(server, c);
        return;
    }
    if (!c->damaged && c->phase == PHASE_DIGESTS) {
        /* older than a peer: heal only if it holds still */
        for (size_t i = 0; i < heal->peer_count && i < 8; i++)
            snprintf(c->first_digests[i], 41, "%s", c->answers[i].digest);
        c->phase = PHASE_SETTLE;
        c->retry_ms = cairn_loop_now_ms() + SETTLE_MS;
        node_event(server, CAIRN_LOG_INFO, NULL,
                   "heal: %s differs from its replicas (this copy %s, newest "
                   "update %lld; %s); comparing again in %d ms",
                   c->userid, c->own_digest, (long long)c->own_newest, answers,
                   SETTLE_MS);
        return;
    }
    if (!c->damaged) {
        struct stat now;
        char *path = NULL;
        bool moved =
            cairn_catalog_lookup(server->catalog, c->userid, &path) < 0 ||
            stat(path, &now) < 0 || now.st_size != c->own_file.st_size ||
            now.st_mtime != c->own_file.st_mtime;

        free(path);
        for (size_t i = 0; i < heal->peer_count && i < 8; i++)
            moved |= strcmp(c->first_digests[i], c->answers[i].digest) != 0;
        if (moved) {
            node_event(server, CAIRN_LOG_INFO, NULL,
                       "heal: %s: writes under way, the next scrub compares "
                       "again",
                       c->userid);
            drop_case(heal, c);
            return;
        }
        quarantine_for_heal(server, c,
                            "older than its replicas (a peer holds newer "
                            "updates); being healed");
    }
    c->phase = PHASE_VERIFY;
    c->candidate = 0;
    snprintf(c->state, sizeof(c->state), "healing: a source verifies (%s)",
             answers);
    advance(server, c);
}

/* --- pulling and checking --------------------------------------------- */

struct heal_job {
    struct cairn_node_server *server;
    char *userid;
    char peer[128];
    uint64_t rate;
    struct node_pull_result result;
    char digest[41];
    char error[256];
    bool check; /* the check of the pulled copy, not the pull */
};

/* On the worker: the pull (the user's store is closed). */
static int
pull_job(void *arg, struct cairn_store *store)
{
    struct heal_job *job = arg;

    (void)store;
    return node_pull_user(job->server, job->userid, job->peer, job->rate,
                          &job->result);
}

/* On the worker: the pulled copy, verified in full, and its digest. */
static int
check_job(void *arg, struct cairn_store *store)
{
    struct heal_job *job = arg;
    int rc;

    if (store == NULL)
        return CAIRN_ENOENT;
    if ((rc = cairn_store_verify(store, CAIRN_VERIFY_FULL, job->error,
                                 sizeof(job->error))) < 0)
        return rc;
    return node_state_digest(store, job->digest);
}

/* Deletes the files the pull set aside: <old data file>.replaced-*. */
static void
remove_set_aside(struct cairn_node_server *server, struct heal_case *c)
{
    char dir_copy[1024], base_copy[1024], prefix[1100];
    struct dirent *entry;
    DIR *dir;

    if (c->old_path[0] == '\0')
        return;
    snprintf(dir_copy, sizeof(dir_copy), "%s", c->old_path);
    snprintf(base_copy, sizeof(base_copy), "%s", c->old_path);
    snprintf(prefix, sizeof(prefix), "%s.replaced-", basename(base_copy));
    if ((dir = opendir(dirname(dir_copy))) == NULL)
        return;
    while ((entry = readdir(dir)) != NULL) {
        char path[2300];

        if (strncmp(entry->d_name, prefix, strlen(prefix)) != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir_copy, entry->d_name);
        if (unlink(path) == 0)
            node_event(server, CAIRN_LOG_INFO, NULL,
                       "heal: %s: removed %s (set aside by the heal)",
                       c->userid, path);
    }
    closedir(dir);
}

static void
heal_failed(struct cairn_node_server *server, struct heal_case *c,
            const char *what)
{
    server->heal->failed++;
    snprintf(c->state, sizeof(c->state), "heal failed: %s", what);
    node_event(server, CAIRN_LOG_ERROR, NULL,
               "heal: %s from %s failed: %s; it stays quarantined, the files "
               "set aside are kept, tried again later",
               c->userid, peer_name(server, c->candidate), what);
    wait_retry(server, c);
}

static void
check_done(struct cairn_node_server *server, struct node_user *user, void *arg,
           int rc)
{
    struct heal_job *job = arg;
    struct heal_case *c = find_case(server->heal, job->userid);
    char what[400];

    (void)user;
    if (c != NULL && rc < 0) {
        snprintf(what, sizeof(what), "the pulled copy fails its verify: %s%s%s",
                 cairn_strerror(rc), job->error[0] ? ": " : "", job->error);
        heal_failed(server, c, what);
    } else if (c != NULL) {
        uint64_t took = cairn_loop_now_ms() - c->detected_ms;

        node_scrub_lift(server, c->userid);
        remove_set_aside(server, c);
        server->heal->ok++;
        node_event(server, CAIRN_LOG_INFO, NULL,
                   "heal: %s healed from %s: %llu bytes, verified in full, "
                   "digest %s%s; %llu ms after it was found",
                   c->userid, peer_name(server, c->candidate),
                   (unsigned long long)job->result.bytes, job->digest,
                   strcmp(job->digest, c->want) == 0
                       ? " (the source's)"
                       : " (the source took writes meanwhile)",
                   (unsigned long long)took);
        drop_case(server->heal, c);
    }
    free(job->userid);
    free(job);
}

static void
pull_done(struct cairn_node_server *server, struct node_user *user, void *arg,
          int rc)
{
    struct heal_job *job = arg;
    struct heal_case *c = find_case(server->heal, job->userid);
    char what[400];

    if (c == NULL) {
        free(job->userid);
        free(job);
        return;
    }
    if (rc < 0) {
        snprintf(what, sizeof(what), "pull: %s%s%s", cairn_strerror(rc),
                 job->result.error[0] ? ": " : "", job->result.error);
        heal_failed(server, c, what);
        free(job->userid);
        free(job);
        return;
    }
    c->pull = job->result;
    c->phase = PHASE_CHECK;
    job->check = true;
    node_user_close(server, user); /* reopened on the new files */
    if ((rc = node_user_open(server, user, false)) < 0 ||
        (rc = node_job_start(server, user, check_job, check_done, job)) < 0) {
        snprintf(what, sizeof(what), "cannot open the pulled copy: %s",
                 cairn_strerror(rc));
        heal_failed(server, c, what);
        free(job->userid);
        free(job);
    }
}

/* Starts the pull on the worker when it and the user are idle. */
static void
start_pull(struct cairn_node_server *server, struct heal_case *c)
{
    struct node_user *user = NULL;
    struct heal_job *job;
    char *path = NULL;
    int rc;

    if (server->worker_running || node_user_get(server, c->userid, &user) < 0 ||
        user->in_round || user->applied != NULL || user->appending ||
        node_transfer_exporting(user))
        return; /* the next tick tries again */
    if ((job = calloc(1, sizeof(*job))) == NULL ||
        (job->userid = strdup(c->userid)) == NULL) {
        free(job);
        return;
    }
    job->server = server;
    snprintf(job->peer, sizeof(job->peer), "%s",
             peer_name(server, c->candidate));
    job->rate = server->settings.scrub_rate;
    c->old_path[0] = '\0';
    if (cairn_catalog_lookup(server->catalog, c->userid, &path) == 0)
        snprintf(c->old_path, sizeof(c->old_path), "%s", path);
    free(path);
    node_user_close(server, user);
    if ((rc = node_job_start(server, user, pull_job, pull_done, job)) < 0) {
        free(job->userid);
        free(job);
        return;
    }
    snprintf(c->state, sizeof(c->state), "healing: pulling from %s", job->peer);
    node_event(server, CAIRN_LOG_INFO, NULL,
               "heal: %s: pulling it from %s (its copy verified in full, "
               "digest %s)",
               c->userid, job->peer, c->want);
}

/* --- the state machine ------------------------------------------------- */

static void
advance(struct cairn_node_server *server, struct heal_case *c)
{
    struct node_heal *heal = server->heal;

    switch (c->phase) {
    case PHASE_DIGESTS:
    case PHASE_SETTLE:
        if (c->waiting == 0)
            decide(server, c);
        return;
    case PHASE_VERIFY:
        while (c->candidate < heal->peer_count) {
            struct peer_answer *a = &c->answers[c->candidate];

            if (a->held && a->code == 0 && strcmp(a->digest, c->want) == 0 &&
                ask_peer(server, c, c->candidate, true) == 0)
                return; /* on_verify goes on */
            c->candidate++;
        }
        {
            char answers[1024];

            describe_answers(server, c, answers, sizeof(answers));
            heal->no_source++;
            snprintf(c->state, sizeof(c->state),
                     "no good replica: no source verified (%s)", answers);
            node_event(server, CAIRN_LOG_ERROR, NULL,
                       "heal: %s is DAMAGED on this node and NO GOOD REPLICA "
                       "verified (%s); nothing deleted, it stays "
                       "quarantined: the operator decides",
                       c->userid, answers);
            wait_retry(server, c);
        }
        return;
    case PHASE_PULL:
        start_pull(server, c);
        return;
    case PHASE_PEERS: /* on_verify goes on */
    case PHASE_CHECK:
    case PHASE_WAIT:
        return;
    }
}

/* A user marked damaged (before a restart, or heal just turned on). */
static int
resume_damaged(void *ctx, const char *userid)
{
    struct cairn_node_server *server = ctx;

    if (find_case(server->heal, userid) == NULL)
        node_heal_after_scrub(server, userid, CAIRN_ECORRUPT, NULL);
    return 0;
}

static void
on_tick(struct cairn_loop *loop, uint64_t timer_id, void *arg)
{
    struct cairn_node_server *server = arg;
    struct node_heal *heal = server->heal;
    struct heal_case *c, *next;

    (void)loop;
    (void)timer_id;
    if (cairn_loop_now_ms() >= heal->resume_ms && !server->shut_down) {
        uint64_t interval = node_scrub_interval_ms(server);

        /* the users found damaged that no heal holds: tried again */
        heal->resume_ms =
            cairn_loop_now_ms() + (interval < RETRY_MS ? interval : RETRY_MS);
        if (server->settings.scrub_heal && heal->peer_count > 0)
            cairn_catalog_foreach_damaged(server->catalog, resume_damaged,
                                          server);
    }
    for (c = server->heal->cases; c != NULL; c = next) {
        next = c->next;
        if (c->phase == PHASE_PULL && !server->worker_running)
            start_pull(server, c);
        else if ((c->phase == PHASE_SETTLE || c->phase == PHASE_WAIT) &&
                 c->waiting == 0 && cairn_loop_now_ms() >= c->retry_ms) {
            if (c->phase == PHASE_WAIT)
                c->phase = PHASE_DIGESTS;
            ask_digests(server, c);
            return; /* the list may have changed */
        }
    }
}

/* --- entry points ------------------------------------------------------ */

void
node_heal_after_scrub(struct cairn_node_server *server, const char *userid,
                      int rc, const char *digest)
{
    struct node_heal *heal = server->heal;
    struct heal_case *c;
    Cairn__UserStats own = CAIRN__USER_STATS__INIT;

    if (heal == NULL || !server->settings.scrub_heal || heal->peer_count == 0 ||
        find_case(heal, userid) != NULL || rc == CAIRN_ENOMEM ||
        rc == CAIRN_ELOCKED)
        return;
    if (ensure_client(server) < 0 || (c = calloc(1, sizeof(*c))) == NULL)
        return;
    if ((c->userid = strdup(userid)) == NULL ||
        (c->answers = calloc(heal->peer_count, sizeof(*c->answers))) == NULL ||
        (c->bad = calloc(heal->peer_count, sizeof(*c->bad))) == NULL) {
        case_free(c);
        return;
    }
    c->damaged = rc < 0;
    c->detected_ms = cairn_loop_now_ms();
    snprintf(c->own_digest, sizeof(c->own_digest), "%s", digest ? digest : "");
    if (!c->damaged) {
        char *path = NULL;

        if (node_user_stats(server, userid, &own) == 0)
            c->own_newest = own.last_backup_time;
        if (cairn_catalog_lookup(server->catalog, userid, &path) == 0)
            stat(path, &c->own_file);
        free(path);
    }
    snprintf(c->state, sizeof(c->state), "%s",
             c->damaged ? "healing: asking the replicas" : "comparing");
    c->next = heal->cases;
    heal->cases = c;
    ask_digests(server, c);
}

void
node_heal_figures(struct cairn_node_server *server, Cairn__NodeStats *stats)
{
    struct node_heal *heal = server->heal;
    size_t count = 0;

    if (heal == NULL)
        return;
    stats->heal_ok = heal->ok;
    stats->heal_failed = heal->failed;
    stats->damaged_no_source = heal->no_source;
    stats->diverged = heal->diverged;
    for (struct heal_case *c = heal->cases; c != NULL; c = c->next)
        count++;
    stats->heals_running = 0;
    if ((stats->damaged_users = calloc(count + 1, sizeof(char *))) == NULL)
        return;
    for (struct heal_case *c = heal->cases; c != NULL; c = c->next) {
        struct node_user *user = NULL;
        char *line = NULL;

        if (c->phase != PHASE_WAIT && c->phase != PHASE_DIGESTS)
            stats->heals_running++;
        if (node_user_get(server, c->userid, &user) < 0 ||
            !node_user_quarantined(server, user))
            continue;
        if (asprintf(&line, "%s: %s; %s", c->userid,
                     user->damage ? user->damage : "damaged", c->state) < 0)
            continue;
        stats->damaged_users[stats->n_damaged_users++] = line;
    }
}

void
node_heal_figures_release(Cairn__NodeStats *stats)
{
    for (size_t i = 0; i < stats->n_damaged_users; i++)
        free(stats->damaged_users[i]);
    free(stats->damaged_users);
    stats->damaged_users = NULL;
    stats->n_damaged_users = 0;
}

int
node_heal_init(struct cairn_node_server *server,
               const struct cairn_node_server_settings *settings)
{
    struct node_heal *heal = calloc(1, sizeof(*heal));

    if (heal == NULL)
        return CAIRN_ENOMEM;
    server->heal = heal;
    if (settings->peer_count > 0 &&
        (heal->peers = calloc(settings->peer_count, sizeof(*heal->peers))) ==
            NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < settings->peer_count; i++) {
        heal->peers[i].name = strdup(settings->peers[i].name);
        heal->peers[i].endpoint = strdup(settings->peers[i].endpoint);
        heal->peer_count++;
        if (heal->peers[i].name == NULL || heal->peers[i].endpoint == NULL)
            return CAIRN_ENOMEM;
    }
    return cairn_loop_add_timer(server->loop, HEAL_TICK_MS, HEAL_TICK_MS,
                                on_tick, server, &heal->timer);
}

const char *
node_heal_peer_endpoint(const struct cairn_node_server *server,
                        const char *name)
{
    for (size_t i = 0; server->heal != NULL && i < server->heal->peer_count;
         i++)
        if (strcmp(server->heal->peers[i].name, name) == 0)
            return server->heal->peers[i].endpoint;
    return NULL;
}

void
node_heal_release(struct cairn_node_server *server)
{
    struct node_heal *heal = server->heal;

    if (heal == NULL)
        return;
    if (heal->timer)
        cairn_loop_cancel_timer(server->loop, heal->timer);
    cairn_node_client_free(heal->client);
    cairn_node_client_free(heal->verify_client);
    while (heal->cases != NULL) {
        struct heal_case *c = heal->cases;

        heal->cases = c->next;
        case_free(c);
    }
    for (size_t i = 0; i < heal->peer_count; i++) {
        free((char *)heal->peers[i].name);
        free((char *)heal->peers[i].endpoint);
    }
    free(heal->peers);
    free(heal);
    server->heal = NULL;
}
