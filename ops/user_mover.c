/*
 * user_mover.c - the executor of `cairnctl rebalance`: moves every user
 * whose replica set differs between the destination's current ring and a
 * new one, without losing a write.
 *
 * Design:
 *   1. Who holds what: every node of either ring is asked (STATS) for the
 *      users it holds; the rings are diffed over exactly those users
 *      (cairn_ring_diff_users), so the plan follows the data, not a guess.
 *   2. The router (its [router] control endpoint, router/control.c) gets
 *      the new ring (RING_PREPARE) and keeps both rings.
 *   3. Per moving user, --parallel users at once (struct move below):
 *      each new replica that is not an old one pulls the user from a
 *      current holder, node to node (node/pull.c; cairnctl sends one
 *      PULL and gets the outcome), while the user keeps writing there;
 *      then USER_HOLD at the router (its writes and state requests get
 *      "NO IMAP_MAILBOX_LOCKED user is being moved", which sync_client
 *      retries; the router answers the hold only when the user's requests
 *      already at the nodes are answered) -> each new replica pulls again:
 *      only what was appended since its copy (the source checks that the
 *      copy is a prefix of its file; a copy that is not, a stale one from
 *      an interrupted run, is replaced by a whole copy), verifies it and
 *      compares its state digest with the one the source took when it
 *      fixed the range -> USER_SWITCH (the router routes the user with the
 *      new ring from now on and releases it). The hold lasts for the tail
 *      only, whatever the user's size; the longest is reported. A user
 *      that fails is released on its old ring (USER_SWITCH epoch 0) and
 *      counted; the run goes on. --rate limits the bulk copies: one at a
 *      time per source node, read at that rate.
 *   4. When every moving user is switched: the new ring is saved as the
 *      destination's ring file (what a restarted router loads) and
 *      RING_COMMIT makes it everybody's ring. Until then RING_FILE.rebalance
 *      names the new ring, so that a router restarted in the middle reads
 *      the journal and keeps switched users on the new ring and held users
 *      held (it would otherwise send their writes to the old replicas).
 *   5. Old copies (holders outside the new replica set) are removed once
 *      --grace has passed since the user's switch: in the same run when
 *      the grace is 0, else by a later run (the journal keeps the times).
 *
 * The journal (rebalance_journal.c, RING.journal next to the new ring
 * file) records each user's step (held, copied, switched TIME, retired)
 * and the commit, fsynced before the next step. A resumed run skips what
 * is done, re-sends RING_PREPARE and the switches it recorded (the router
 * persists nothing and may have restarted), and moves users that were
 * held again: their copies are brought up to the source by digest, so
 * writes that reached the old replicas after a router restart are not
 * lost. A run after a finished
 * one finds nothing to move and nothing due, and changes nothing.
 */
#include "common.h"
#include "placement.h"
#include "progress.h"
#include "rebalance_int.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A user some node holds, and which nodes (config indices). */
struct held_user {
    char *userid;
    uint64_t bytes;
    bool *holders; /* [config node count] */
    bool moving;
    size_t next; /* 1 + index of the next user in its hash bucket, 0: end */
};

/* Users by name: a fixed table of chains (indices survive realloc). */
#define USER_BUCKETS 65536

struct run {
    const struct cairn_config *config;
    const struct cairn_rebalance_options *options;
    struct cairn_rebalance_report *report;
    FILE *err;
    const char *control; /* the router's control endpoint */
    const struct cairn_config_destination *destination;
    struct cairn_ring *old_ring, *new_ring;
    char *new_ring_text;
    size_t new_ring_len;
    size_t node_count; /* config nodes */
    bool *asked;       /* config nodes of either ring */
    struct held_user *users;
    size_t user_count, user_cap;
    size_t *buckets; /* [USER_BUCKETS]: 1 + index of the first user, 0 */
    struct cairn_rebalance_journal journal;
    struct cairn_rebalance_link *link; /* to every node */
    /* the moves under way (--parallel) */
    struct move *moves;
    size_t move_count, active;
    size_t *source_busy; /* [node]: bulk copies reading from it */
    size_t *target_busy; /* [node]: moves pulling into it */
    /* progress */
    uint64_t users_total, users_done, bytes_total, bytes_done;
    uint64_t started_ms;
    struct cairn_ops_progress progress; /* started with the first line */
    bool progress_started;
};

static uint64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *
endpoint_of(const struct run *run, size_t node)
{
    return cairn_config_node_at(run->config, node)->endpoint;
}

static const char *
name_of(const struct run *run, size_t node)
{
    return cairn_config_node_at(run->config, node)->origin.name;
}

/* The config index of every node of ring, marked in run->asked. */
static int
mark_ring_nodes(struct run *run, const struct cairn_ring *ring)
{
    for (size_t i = 0; i < cairn_ring_node_count(ring); i++) {
        struct cairn_ring_node_info info;
        bool found = false;

        cairn_ring_node_info(ring, i, &info);
        for (size_t n = 0; n < run->node_count; n++)
            if (strcmp(name_of(run, n), info.name) == 0) {
                run->asked[n] = true;
                found = true;
            }
        if (!found) {
            fprintf(run->err, "rebalance: ring node %s is not in the config\n",
                    info.name);
            return CAIRN_ECONFIG;
        }
    }
    return 0;
}

/* The config indices of userid's replicas on ring. */
static void
replicas_of(const struct run *run, const struct cairn_ring *ring,
            const char *userid, size_t *nodes, size_t *count)
{
    uint16_t indices[CAIRN_RING_MAX_REPLICAS];

    cairn_ring_lookup(ring, userid, strlen(userid), indices);
    *count = cairn_ring_replicas(ring);
    for (size_t i = 0; i < *count; i++) {
        struct cairn_ring_node_info info;

        cairn_ring_node_info(ring, indices[i], &info);
        for (size_t n = 0; n < run->node_count; n++)
            if (strcmp(name_of(run, n), info.name) == 0)
                nodes[i] = n;
    }
}

static size_t
bucket_of(const char *userid)
{
    return (size_t)(cairn_ring_hash(userid, strlen(userid)) % USER_BUCKETS);
}

static struct held_user *
find_user(struct run *run, const char *userid)
{
    for (size_t at = run->buckets[bucket_of(userid)]; at != 0;
         at = run->users[at - 1].next)
        if (strcmp(run->users[at - 1].userid, userid) == 0)
            return &run->users[at - 1];
    return NULL;
}

static int
add_holder(struct run *run, const char *userid, uint64_t bytes, size_t node)
{
    struct held_user *user = find_user(run, userid);

    if (user == NULL) {
        if (run->user_count == run->user_cap) {
            size_t cap = run->user_cap ? run->user_cap * 2 : 64;
            struct held_user *grown = realloc(run->users, cap * sizeof(*grown));

            if (grown == NULL)
                return CAIRN_ENOMEM;
            run->users = grown;
            run->user_cap = cap;
        }
        user = &run->users[run->user_count];
        *user = (struct held_user){0};
        user->userid = strdup(userid);
        user->holders = calloc(run->node_count + 1, sizeof(bool));
        if (user->userid == NULL || user->holders == NULL) {
            free(user->userid);
            free(user->holders);
            return CAIRN_ENOMEM;
        }
        user->next = run->buckets[bucket_of(userid)];
        run->buckets[bucket_of(userid)] = ++run->user_count;
    }
    user->holders[node] = true;
    if (bytes > user->bytes)
        user->bytes = bytes;
    return 0;
}

/* Asks every node of either ring which users it holds. */
static int
gather_users(struct run *run)
{
    int rc = 0;

    for (size_t n = 0; n < run->node_count && rc == 0; n++) {
        Cairn__StatusReply *reply = NULL;

        if (!run->asked[n])
            continue;
        rc = cairn_rebalance_node_users(run->link, name_of(run, n), &reply);
        if (rc < 0) {
            fprintf(run->err, "rebalance: node %s (%s): %s\n", name_of(run, n),
                    endpoint_of(run, n), cairn_strerror(rc));
            break;
        }
        for (size_t i = 0; i < reply->n_users && rc == 0; i++)
            rc = add_holder(run, reply->users[i]->user,
                            reply->users[i]->bytes_on_disk, n);
        cairn__status_reply__free_unpacked(reply, NULL);
    }
    return rc;
}

static int
on_move(void *context, const struct cairn_ring_move *move)
{
    struct run *run = context;

    run->users[move->user].moving = true;
    return 0;
}

/* Marks the users whose replica set changes (and those the journal has). */
static int
find_moving(struct run *run)
{
    struct cairn_ring_user *list = calloc(run->user_count + 1, sizeof(*list));
    int rc;

    if (list == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < run->user_count; i++)
        list[i] =
            (struct cairn_ring_user){run->users[i].userid, run->users[i].bytes};
    rc = cairn_ring_diff_users(run->old_ring, run->new_ring, list,
                               run->user_count, on_move, run, NULL);
    free(list);
    for (size_t i = 0; i < run->user_count; i++) {
        enum cairn_rebalance_state state = cairn_rebalance_journal_state(
            &run->journal, run->users[i].userid, NULL);

        /* Interrupted or waiting for its grace: not done yet. */
        if (state != CAIRN_REBALANCE_PENDING &&
            state != CAIRN_REBALANCE_RETIRED)
            run->users[i].moving = true;
        if (run->users[i].moving && state < CAIRN_REBALANCE_SWITCHED) {
            run->users_total++;
            run->bytes_total += run->users[i].bytes;
        }
        if (run->users[i].moving)
            run->report->users_moving++;
    }
    return rc;
}

static void
show_progress(struct run *run, bool force)
{
    char detail[160];

    if (!run->progress_started) {
        /* The ETA by users: their bytes (as the nodes report them, index
         * included) only estimate what is copied, and small users cost
         * round trips. */
        cairn_ops_progress_start(&run->progress, run->options->progress, false,
                                 "rebalance", "users", run->users_total, 0);
        run->progress_started = true;
    }
    snprintf(detail, sizeof(detail),
             "about %.1f MiB to move, %zu moving, longest hold %llu ms",
             (double)run->bytes_total / 1048576.0, run->active,
             (unsigned long long)run->report->longest_hold_ms);
    if (force && run->users_done == run->users_total)
        cairn_ops_progress_end(&run->progress, run->users_done,
                               run->bytes_done);
    else
        cairn_ops_progress_update(&run->progress, run->users_done,
                                  run->bytes_done, detail);
}

static int
router(struct run *run, Cairn__Kind kind, const char *userid, uint64_t epoch,
       const void *frame, size_t frame_len)
{
    char text[256] = "";
    int rc = cairn_rebalance_router_call(
        run->control, kind, run->options->destination, userid, epoch, frame,
        frame_len, NULL, text, sizeof(text));

    if (rc < 0)
        fprintf(run->err, "rebalance: router %s%s%s: %s\n",
                userid ? "user " : "", userid ? userid : "",
                userid ? "" : run->control,
                text[0] ? text : cairn_strerror(rc));
    return rc;
}

/* The node to copy from: an old replica that holds the user, else any. */
static int
pick_source(const struct run *run, const struct held_user *user, size_t *node)
{
    size_t old[CAIRN_RING_MAX_REPLICAS], count = 0;

    replicas_of(run, run->old_ring, user->userid, old, &count);
    for (size_t i = 0; i < count; i++)
        if (user->holders[old[i]]) {
            *node = old[i];
            return 0;
        }
    for (size_t n = 0; n < run->node_count; n++)
        if (user->holders[n]) {
            *node = n;
            return 0;
        }
    return CAIRN_ENOENT;
}

/*
 * One user on the move (--parallel of them at once), in phases:
 *   LIVE  each new replica pulls the user from the source while the user
 *         keeps writing there (the bulk of the bytes; users under
 *         LIVE_COPY_MIN_BYTES skip it: their whole copy is the tail);
 *   TAIL  the router holds the user's writes; each new replica pulls what
 *         was appended since (its copy is a prefix of the source's file)
 *         and compares its digest with the source's;
 *   then the router switches the user and releases it. A replica that
 *   stays (in both rings) is left alone: it took the user's writes all
 *   along, and one that missed some is the router's repair mark's to
 *   catch up, as before the move.
 */
enum move_phase { MOVE_IDLE = 0, MOVE_LIVE, MOVE_TAIL };

/* Users at least this big (data file and index, as the nodes report them)
 * are copied while live first; smaller ones only under the hold. */
#define LIVE_COPY_MIN_BYTES (4u * 1024 * 1024)

struct move {
    struct run *run;
    struct held_user *user;
    enum move_phase phase;
    size_t source;
    size_t targets[CAIRN_RING_MAX_REPLICAS], target_count;
    bool staying[CAIRN_RING_MAX_REPLICAS]; /* an old replica holding it */
    size_t pending;                        /* pulls not answered */
    bool failed, held, source_busy;
    char digest[41]; /* the source's, from a tail pull */
    uint64_t hold_started_ms;
};

static void
move_failed(struct move *move, const char *target, const char *why)
{
    fprintf(move->run->err, "rebalance: %s: %s%s%s\n", move->user->userid,
            target ? "copy to " : "", target ? target : "", why);
    move->failed = true;
}

static void move_advance(struct move *move);

static void
on_pulled(void *arg, const struct cairn_rebalance_pull_outcome *outcome)
{
    struct move *move = arg;
    struct run *run = move->run;

    move->pending--;
    if (outcome->rc < 0) {
        char why[300];

        snprintf(why, sizeof(why), ": %s", outcome->text);
        move_failed(move, NULL, why);
    } else {
        run->bytes_done += outcome->bytes;
        run->report->bytes_copied += outcome->bytes;
        /* a copy per replica: the bulk, or the whole one of a user
         * copied under the hold at once (a tail is not another copy) */
        if (move->phase == MOVE_LIVE || !outcome->resumed)
            run->report->copies++;
        snprintf(move->digest, sizeof(move->digest), "%s", outcome->digest);
    }
    if (move->pending == 0)
        move_advance(move);
}

/* Starts a pull into every new replica that is not an old one. */
static void
start_pulls(struct move *move, uint64_t rate)
{
    struct run *run = move->run;

    for (size_t i = 0; i < move->target_count && !move->failed; i++) {
        int rc;

        if (move->staying[i])
            continue;
        rc = cairn_rebalance_pull_start(
            run->link, name_of(run, move->targets[i]),
            name_of(run, move->source), move->user->userid, rate, false,
            on_pulled, move);
        if (rc < 0)
            move_failed(move, name_of(run, move->targets[i]),
                        cairn_strerror(rc));
        else
            move->pending++;
    }
}

static void
move_finish(struct move *move)
{
    struct run *run = move->run;
    struct held_user *user = move->user;
    int rc = move->failed ? CAIRN_ESTATE : 0;

    if (rc == 0)
        rc = router(run, CAIRN__KIND__USER_SWITCH, user->userid,
                    cairn_ring_epoch(run->new_ring), NULL, 0);
    if (rc == 0)
        rc = cairn_rebalance_journal_record(&run->journal, user->userid,
                                            CAIRN_REBALANCE_SWITCHED,
                                            (int64_t)time(NULL));
    if (rc < 0 && move->held) /* back on its old ring, writable again */
        router(run, CAIRN__KIND__USER_SWITCH, user->userid, 0, NULL, 0);
    if (move->held) {
        uint64_t held = now_ms() - move->hold_started_ms;

        if (held > run->report->longest_hold_ms) {
            run->report->longest_hold_ms = held;
            snprintf(run->report->longest_hold_user,
                     sizeof(run->report->longest_hold_user), "%s",
                     user->userid);
        }
    }
    for (size_t i = 0; i < move->target_count; i++)
        if (!move->failed && !move->staying[i])
            user->holders[move->targets[i]] = true;
    if (rc == 0)
        run->report->users_switched++;
    else
        run->report->users_failed++;
    if (move->source_busy)
        run->source_busy[move->source]--;
    for (size_t i = 0; i < move->target_count; i++)
        if (!move->staying[i])
            run->target_busy[move->targets[i]]--;
    run->users_done++;
    run->active--;
    move->phase = MOVE_IDLE;
    move->user = NULL;
    show_progress(run, true);
}

/* The next phase once the pulls of this one are answered. */
static void
move_advance(struct move *move)
{
    struct run *run = move->run;
    struct held_user *user = move->user;

    if (move->failed || move->phase == MOVE_TAIL) {
        if (!move->failed && move->phase == MOVE_TAIL && !move->held)
            move_failed(move, NULL, "not held");
        move_finish(move);
        return;
    }
    /* MOVE_LIVE done (or skipped): hold and copy the tail. */
    if (move->source_busy) {
        run->source_busy[move->source]--;
        move->source_busy = false;
    }
    if (router(run, CAIRN__KIND__USER_HOLD, user->userid, 0, NULL, 0) < 0) {
        move_failed(move, NULL, "the router did not hold the user");
        move_finish(move);
        return;
    }
    move->held = true;
    move->hold_started_ms = now_ms();
    move->phase = MOVE_TAIL;
    if (cairn_rebalance_journal_record(&run->journal, user->userid,
                                       CAIRN_REBALANCE_HELD, 0) < 0)
        move_failed(move, NULL, "cannot write the journal");
    if (move->failed) {
        move_finish(move);
        return;
    }
    start_pulls(move, 0); /* the tail: small, and the user waits */
    if (move->pending == 0)
        move_finish(move);
}

/* Starts moving user in move (LIVE), unless its source is busy. */
static bool
move_start(struct run *run, struct move *move, struct held_user *user)
{
    size_t source = 0;

    if (pick_source(run, user, &source) < 0) {
        fprintf(run->err, "rebalance: %s: no node holds it\n", user->userid);
        run->report->users_failed++;
        run->users_done++;
        return true;
    }
    /* --rate: one bulk copy per source node at a time, at that rate */
    if (run->options->rate > 0 && run->source_busy[source] > 0)
        return false;
    *move = (struct move){
        .run = run, .user = user, .phase = MOVE_LIVE, .source = source};
    replicas_of(run, run->new_ring, user->userid, move->targets,
                &move->target_count);
    for (size_t i = 0; i < move->target_count; i++) {
        size_t old[CAIRN_RING_MAX_REPLICAS], old_count = 0;

        replicas_of(run, run->old_ring, user->userid, old, &old_count);
        for (size_t k = 0; k < old_count; k++)
            move->staying[i] |=
                old[k] == move->targets[i] && user->holders[old[k]];
        move->staying[i] |= move->targets[i] == source;
    }
    for (size_t i = 0; i < move->target_count; i++)
        if (!move->staying[i] &&
            run->target_busy[move->targets[i]] >= CAIRN_REBALANCE_NODE_PULLS) {
            move->user = NULL;
            move->phase = MOVE_IDLE;
            return false; /* that node pulls as many as it takes already */
        }
    for (size_t i = 0; i < move->target_count; i++)
        if (!move->staying[i])
            run->target_busy[move->targets[i]]++;
    run->active++;
    run->source_busy[source]++;
    move->source_busy = true;
    /* A small user is copied whole under the hold at once: a copy while
     * live would cost more than it saves. */
    if (user->bytes >= LIVE_COPY_MIN_BYTES)
        start_pulls(move, run->options->rate);
    if (move->pending == 0)
        move_advance(move);
    return true;
}

/* Removes the copies outside the new replica set once the grace is over. */
static int
retire_user(struct run *run, struct held_user *user)
{
    size_t keep[CAIRN_RING_MAX_REPLICAS], count = 0;
    int rc = 0;

    replicas_of(run, run->new_ring, user->userid, keep, &count);
    for (size_t n = 0; n < run->node_count && rc == 0; n++) {
        bool kept = false;

        for (size_t i = 0; i < count; i++)
            kept |= keep[i] == n;
        if (kept || !user->holders[n])
            continue;
        rc = cairn_rebalance_remove_user(run->link, name_of(run, n),
                                         user->userid);
        if (rc == CAIRN_ENOENT)
            rc = 0;
        if (rc < 0)
            fprintf(run->err, "rebalance: %s: remove from %s: %s\n",
                    user->userid, name_of(run, n), cairn_strerror(rc));
        else
            user->holders[n] = false;
    }
    if (rc == 0)
        rc = cairn_rebalance_journal_record(&run->journal, user->userid,
                                            CAIRN_REBALANCE_RETIRED, 0);
    if (rc == 0)
        run->report->users_retired++;
    return rc;
}

static void
print_plan(struct run *run, const struct held_user *user)
{
    size_t old[CAIRN_RING_MAX_REPLICAS], new[CAIRN_RING_MAX_REPLICAS];
    size_t old_count = 0, new_count = 0;
    FILE *out = run->options->out;

    replicas_of(run, run->old_ring, user->userid, old, &old_count);
    replicas_of(run, run->new_ring, user->userid, new, &new_count);
    fprintf(out, "%s (%s):", user->userid,
            cairn_rebalance_state_name(cairn_rebalance_journal_state(
                &run->journal, user->userid, NULL)));
    for (size_t i = 0; i < old_count; i++)
        fprintf(out, "%s%s", i ? "," : " ", name_of(run, old[i]));
    fputs(" ->", out);
    for (size_t i = 0; i < new_count; i++)
        fprintf(out, "%s%s", i ? "," : " ", name_of(run, new[i]));
    fputc('\n', out);
}

/*
 * RING_FILE.rebalance names the new ring while a rebalance is under way:
 * a router that restarts reads it and this run's journal, and keeps
 * routing switched users with the new ring and holding held ones
 * (router/control.c). Written atomically before the first switch.
 */
static int
write_marker(struct run *run, bool present)
{
    char *marker = NULL, *temp = NULL, *absolute = NULL;
    FILE *file = NULL;
    int rc = CAIRN_ENOMEM;

    if (asprintf(&marker, "%s.rebalance", run->destination->ring_file) < 0 ||
        asprintf(&temp, "%s.tmp", marker) < 0) {
        marker = temp = NULL;
        goto out;
    }
    rc = CAIRN_EIO;
    if (!present) {
        if (unlink(marker) < 0 && errno != ENOENT)
            goto out;
        rc = cairn_fsync_parent_dir(marker);
        goto out;
    }
    if ((absolute = realpath(run->options->new_ring_path, NULL)) == NULL ||
        (file = fopen(temp, "we")) == NULL)
        goto out;
    if (fprintf(file, "%s\n", absolute) < 0 || fflush(file) != 0 ||
        fsync(fileno(file)) != 0)
        goto out;
    if (fclose(file) != 0) {
        file = NULL;
        goto out;
    }
    file = NULL;
    if (rename(temp, marker) < 0)
        goto out;
    rc = cairn_fsync_parent_dir(marker);
out:
    if (file != NULL)
        fclose(file);
    if (rc < 0)
        fprintf(run->err, "rebalance: cannot %s %s\n",
                present ? "write" : "remove", marker ? marker : "marker");
    free(absolute);
    free(temp);
    free(marker);
    return rc;
}

/* Re-sends what the router may have forgotten by restarting. */
static int
replay_router(struct run *run)
{
    uint64_t epoch = cairn_ring_epoch(run->new_ring);
    int rc;

    if (run->journal.committed)
        return 0;
    if ((rc = write_marker(run, true)) < 0 ||
        (rc = router(run, CAIRN__KIND__RING_PREPARE, NULL, epoch,
                     run->new_ring_text, run->new_ring_len)) < 0)
        return rc;
    for (size_t i = 0; i < run->journal.count && rc == 0; i++)
        if (run->journal.entries[i].state >= CAIRN_REBALANCE_SWITCHED)
            rc = router(run, CAIRN__KIND__USER_SWITCH,
                        run->journal.entries[i].userid, epoch, NULL, 0);
    return rc;
}

/* Installs the new ring as the destination's ring file and commits it. */
static int
commit(struct run *run)
{
    int rc;

    if (run->journal.committed) /* a crash may have left the marker */
        return write_marker(run, false);
    if ((rc = cairn_ring_save(run->new_ring, run->destination->ring_file)) <
        0) {
        fprintf(run->err, "rebalance: cannot save %s: %s\n",
                run->destination->ring_file, cairn_strerror(rc));
        return rc;
    }
    if ((rc = router(run, CAIRN__KIND__RING_COMMIT, NULL,
                     cairn_ring_epoch(run->new_ring), NULL, 0)) < 0 ||
        (rc = cairn_rebalance_journal_commit(&run->journal)) < 0)
        return rc;
    return write_marker(run, false);
}

static bool
to_move(const struct run *run, const struct held_user *user)
{
    return user->moving &&
           cairn_rebalance_journal_state(&run->journal, user->userid, NULL) <
               CAIRN_REBALANCE_SWITCHED;
}

/* Moves every user not switched yet, --parallel at a time. */
static int
move_users(struct run *run)
{
    size_t next = 0;
    int rc = 0;

    run->move_count = run->options->parallel ? run->options->parallel : 1;
    run->moves = calloc(run->move_count, sizeof(*run->moves));
    run->source_busy = calloc(run->node_count + 1, sizeof(size_t));
    run->target_busy = calloc(run->node_count + 1, sizeof(size_t));
    if (run->moves == NULL || run->source_busy == NULL ||
        run->target_busy == NULL)
        return CAIRN_ENOMEM;
    for (;;) {
        /* fill the free slots, in user order; a user whose source is
         * busy (--rate) waits for it */
        for (size_t m = 0; m < run->move_count; m++) {
            if (run->moves[m].phase != MOVE_IDLE)
                continue;
            while (next < run->user_count && !to_move(run, &run->users[next]))
                next++;
            if (next >= run->user_count ||
                !move_start(run, &run->moves[m], &run->users[next]))
                break;
            next++;
        }
        if (run->active == 0 && next >= run->user_count)
            break;
        if ((rc = cairn_rebalance_link_run(run->link, 100)) < 0)
            break;
        show_progress(run, false);
    }
    show_progress(run, true);
    return rc;
}

/* The moves, the commit and the retirements that are due. */
static int
execute(struct run *run)
{
    int64_t now, switched_at = 0;
    int rc;

    if ((rc = replay_router(run)) < 0 || (rc = move_users(run)) < 0)
        return rc;
    if (run->report->users_failed > 0)
        return CAIRN_ESTATE;
    if ((rc = commit(run)) < 0)
        return rc;
    run->report->committed = true;
    now = (int64_t)time(NULL); /* after the switches made above */
    for (size_t i = 0; i < run->user_count && rc == 0; i++) {
        struct held_user *user = &run->users[i];

        if (cairn_rebalance_journal_state(&run->journal, user->userid,
                                          &switched_at) !=
            CAIRN_REBALANCE_SWITCHED)
            continue;
        if (now >= switched_at &&
            (uint64_t)(now - switched_at) >= run->options->grace_seconds)
            rc = retire_user(run, user);
        else
            run->report->users_waiting++;
    }
    return rc;
}

static int
load_rings(struct run *run)
{
    const char *old_path = run->options->old_ring_path
                               ? run->options->old_ring_path
                               : run->destination->ring_file;
    int rc;

    if ((rc = cairn_ring_load(old_path, &run->old_ring)) < 0 ||
        (rc = cairn_ring_load(run->options->new_ring_path, &run->new_ring)) <
            0 ||
        (rc = cairn_ring_format(run->new_ring, &run->new_ring_text,
                                &run->new_ring_len)) < 0) {
        fprintf(run->err, "rebalance: cannot load %s: %s\n",
                run->old_ring ? run->options->new_ring_path : old_path,
                cairn_strerror(rc));
        return rc;
    }
    if (strcmp(cairn_ring_destination(run->new_ring),
               run->options->destination) != 0 ||
        strcmp(cairn_ring_destination(run->old_ring),
               run->options->destination) != 0 ||
        cairn_ring_epoch(run->new_ring) < cairn_ring_epoch(run->old_ring)) {
        fprintf(run->err,
                "rebalance: the rings must be of destination %s, the new "
                "one of a later epoch (old %llu, new %llu)\n",
                run->options->destination,
                (unsigned long long)cairn_ring_epoch(run->old_ring),
                (unsigned long long)cairn_ring_epoch(run->new_ring));
        return CAIRN_EINVAL;
    }
    return 0;
}

static int
prepare(struct run *run)
{
    char *journal_path = NULL;
    int rc;

    run->destination =
        cairn_config_find_destination(run->config, run->options->destination);
    if (run->destination == NULL) {
        fprintf(run->err, "rebalance: no destination %s in the config\n",
                run->options->destination);
        return CAIRN_ECONFIG;
    }
    run->control = cairn_config_router(run->config)->control;
    if (run->control == NULL && !run->options->dry_run) {
        fprintf(run->err, "rebalance: [router] control is not set: writes "
                          "could not be held\n");
        return CAIRN_ECONFIG;
    }
    run->node_count = cairn_config_node_count(run->config);
    if ((run->asked = calloc(run->node_count + 1, sizeof(bool))) == NULL ||
        (run->buckets = calloc(USER_BUCKETS, sizeof(size_t))) == NULL ||
        asprintf(&journal_path, "%s.journal", run->options->new_ring_path) < 0)
        return CAIRN_ENOMEM;
    if ((rc = load_rings(run)) < 0 ||
        (rc = cairn_rebalance_link_new(run->config, &run->link)) < 0)
        goto out;
    rc = cairn_rebalance_journal_open(journal_path, run->options->destination,
                                      cairn_ring_epoch(run->new_ring),
                                      &run->journal);
    if (rc < 0) {
        fprintf(run->err, "rebalance: journal %s: %s\n", journal_path,
                cairn_strerror(rc));
        goto out;
    }
    if ((rc = mark_ring_nodes(run, run->old_ring)) < 0 ||
        (rc = mark_ring_nodes(run, run->new_ring)) < 0 ||
        (rc = gather_users(run)) < 0)
        goto out;
    rc = find_moving(run);
out:
    free(journal_path);
    return rc;
}

int
cairn_rebalance_run(const struct cairn_config *config,
                    const struct cairn_rebalance_options *options,
                    struct cairn_rebalance_report *report, FILE *err)
{
    struct run run = {.config = config,
                      .options = options,
                      .report = report,
                      .err = err,
                      .journal = {.fd = -1}};
    int rc;

    *report = (struct cairn_rebalance_report){0};
    run.started_ms = now_ms();
    if ((rc = prepare(&run)) < 0)
        goto out;
    if (options->dry_run) {
        for (size_t i = 0; i < run.user_count; i++)
            if (run.users[i].moving)
                print_plan(&run, &run.users[i]);
        goto out;
    }
    rc = execute(&run);
out:
    report->seconds = (double)(now_ms() - run.started_ms) / 1000.0;
    cairn_rebalance_journal_release(&run.journal);
    cairn_rebalance_link_free(run.link);
    for (size_t i = 0; i < run.user_count; i++) {
        free(run.users[i].userid);
        free(run.users[i].holders);
    }
    free(run.users);
    free(run.moves);
    free(run.source_busy);
    free(run.target_busy);
    free(run.buckets);
    free(run.asked);
    free(run.new_ring_text);
    cairn_ring_free(run.old_ring);
    cairn_ring_free(run.new_ring);
    return rc;
}
