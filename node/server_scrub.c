/*
 * server_scrub.c - the node checks its own users, so that damage is found
 * before the day a backup is needed: a timer hands the user checked
 * longest ago (never checked first) to the background thread, which runs
 * the store's verify (checksums, or Cyrus's full level) while every other
 * user is served; when each user was checked and what was found is kept
 * in a cairn-private catalog table, so a restart resumes the round.
 *
 * The read rate is bounded on average: after a user of N bytes the next
 * starts no sooner than N / rate seconds later.
 *
 * A user that fails is quarantined: its writes and state requests get a
 * retryable NO naming the damage (the router marks the replica for repair
 * and reads from the next replica), so nothing is appended to a damaged
 * file. The damaged files are left as they are; a transfer of a good copy
 * (repair, rebalance) lifts the quarantine once the new files verify.
 */
#include "common.h"
#include "csync.h"
#include "server_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define SCRUB_TICK_MS 500
#define DEFAULT_SCRUB_INTERVAL_MS (7ull * 24 * 3600 * 1000)
/*
 * Users never checked (a new node, an import) wait until the daemon has
 * run this long, or an interval when that is shorter: a node that starts
 * reads its disk for its users' writes first, not for a scrub.
 */
#define FIRST_ROUND_DELAY_MS (3600ull * 1000)

enum { QUARANTINE_UNKNOWN, QUARANTINE_CLEAN, QUARANTINE_ON };

struct scrub_job {
    unsigned levels;
    const char *userid; /* the user's, borrowed */
    uint64_t bytes;     /* of the data file */
    uint64_t started_ms;
    char error[256];
    char digest[41]; /* of a copy that verified (self-heal compares it) */
};

/*
 * Whether mboxname is one of userid's mailboxes as Cyrus names them
 * internally: user.LOCAL[.…], or DOMAIN!user.LOCAL[.…] for LOCAL@DOMAIN,
 * a '.' of LOCAL written '^', either under DELETED. (delayed delete).
 */
static bool
mailbox_of_user(const char *userid, const char *mboxname)
{
    const char *at = strchr(userid, '@');
    size_t local_len = at ? (size_t)(at - userid) : strlen(userid);
    const char *p = mboxname;

    if (at != NULL) {
        size_t domain_len = strlen(at + 1);

        if (strncmp(p, at + 1, domain_len) != 0 || p[domain_len] != '!')
            return false;
        p += domain_len + 1;
    }
    if (strncmp(p, "DELETED.", 8) == 0)
        p += 8; /* a mailbox deleted with Cyrus's delayed delete */
    if (strncmp(p, "user.", 5) != 0)
        return false;
    p += 5;
    for (size_t i = 0; i < local_len; i++, p++)
        if (*p != (userid[i] == '.' ? '^' : userid[i]))
            return false;
    return *p == '\0' || *p == '.';
}

struct owner_check {
    const char *userid;
    char foreign[200]; /* the first mailbox of someone else */
};

static int
check_owner(void *ctx, const struct cairn_dlist *item)
{
    struct owner_check *check = ctx;
    const char *mboxname = NULL;

    if (strcmp(cairn_dlist_name(item), "MAILBOX") == 0 &&
        cairn_dlist_get_atom(item, "MBOXNAME", &mboxname) && mboxname &&
        !mailbox_of_user(check->userid, mboxname) && !check->foreign[0])
        snprintf(check->foreign, sizeof(check->foreign), "%s", mboxname);
    return 0;
}

static int64_t
wall_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

uint64_t
node_scrub_interval_ms(const struct cairn_node_server *server)
{
    return server->settings.scrub_interval_ms
               ? server->settings.scrub_interval_ms
               : DEFAULT_SCRUB_INTERVAL_MS;
}

int
node_check_owner(struct cairn_store *store, const char *userid, char *error,
                 size_t error_size)
{
    struct owner_check owner = {userid, ""};
    int rc;

    if ((rc = cairn_store_get_user(store, check_owner, &owner)) < 0)
        return rc;
    if (owner.foreign[0]) {
        /* a file of another user put in this one's place */
        snprintf(error, error_size, "holds mailbox %s, not one of %s's",
                 owner.foreign, userid);
        return CAIRN_ECORRUPT;
    }
    return 0;
}

/* On the worker thread: touches only the store and the job. */
static int
scrub_store(void *arg, struct cairn_store *store)
{
    struct scrub_job *job = arg;
    struct stat st;

    int rc;

    if (stat(cairn_store_data_path(store), &st) == 0)
        job->bytes = (uint64_t)st.st_size;
    if ((rc = cairn_store_verify(store, job->levels, job->error,
                                 sizeof(job->error))) < 0 ||
        (rc = node_check_owner(store, job->userid, job->error,
                               sizeof(job->error))) < 0)
        return rc;
    /* the state digest replicas are compared by (self-heal) */
    if (node_state_digest(store, job->digest) < 0)
        job->digest[0] = '\0';
    return 0;
}

void
node_scrub_quarantine(struct cairn_node_server *server, struct node_user *user,
                      const char *damage)
{
    free(user->damage);
    user->damage = strdup(damage);
    user->quarantine = QUARANTINE_ON;
    server->scrub_damaged++;
    node_event(server, CAIRN_LOG_ERROR, NULL,
               "scrub: %s is damaged on this node: %s; quarantined (its "
               "writes and reads get a retryable NO) until a good copy is "
               "transferred in (self-heal, or cairnctl repair %s); the "
               "damaged files are kept as they are",
               user->userid, damage, user->userid);
    cairn_catalog_set_scrubbed(server->catalog, user->userid, wall_ms(),
                               damage);
}

static void
scrub_done(struct cairn_node_server *server, struct node_user *user, void *arg,
           int rc)
{
    struct scrub_job *job = arg;
    uint64_t elapsed = cairn_loop_now_ms() - job->started_ms;
    uint64_t pause = 0;
    int record_rc = 0;

    server->scrub_running = false;
    server->scrubbed++;
    server->scrub_bytes += job->bytes;
    if (rc == CAIRN_ENOMEM || rc == CAIRN_ELOCKED) {
        /* not the file's fault: checked again on a later tick */
        node_event(server, CAIRN_LOG_WARN, NULL, "scrub of %s: %s",
                   user->userid, cairn_strerror(rc));
    } else if (rc < 0) {
        char damage[320];

        snprintf(damage, sizeof(damage), "%s%s%s", cairn_strerror(rc),
                 job->error[0] ? ": " : "", job->error);
        record_rc = cairn_catalog_set_scrubbed(server->catalog, user->userid,
                                               wall_ms(), damage);
        node_scrub_quarantine(server, user, damage);
    } else {
        record_rc = cairn_catalog_set_scrubbed(server->catalog, user->userid,
                                               wall_ms(), NULL);
        user->quarantine = QUARANTINE_CLEAN;
        node_event(server, CAIRN_LOG_DEBUG, NULL,
                   "scrub of %s: ok, %llu bytes in %llu ms", user->userid,
                   (unsigned long long)job->bytes, (unsigned long long)elapsed);
    }
    if (record_rc < 0)
        node_event(server, CAIRN_LOG_WARN, NULL,
                   "scrub: cannot record the check of %s: %s", user->userid,
                   cairn_strerror(record_rc));
    if (server->settings.scrub_rate > 0)
        pause = job->bytes * 1000 / server->settings.scrub_rate;
    server->scrub_next_ms = cairn_loop_now_ms() + pause;
    node_heal_after_scrub(server, user->userid, rc,
                          rc == 0 && job->digest[0] ? job->digest : NULL);
    free(job);
}

/* The user's files cannot even be opened (a data file gone): damage. */
static void
scrub_open_failed(struct cairn_node_server *server, struct node_user *user,
                  int rc)
{
    char damage[320];

    snprintf(damage, sizeof(damage), "cannot open its files: %s",
             cairn_strerror(rc));
    server->scrubbed++;
    node_scrub_quarantine(server, user, damage);
    node_heal_after_scrub(server, user->userid, rc, NULL);
}

/* Starts the first due user that is idle; 1 stops the walk. */
static int
try_user(void *ctx, const char *userid)
{
    struct cairn_node_server *server = ctx;
    struct node_user *user = NULL;
    struct scrub_job *job;

    if (node_user_get(server, userid, &user) < 0)
        return 0;
    if (user->in_round || user->applied != NULL || user->queue != NULL ||
        user->appending || user->quarantine == QUARANTINE_ON ||
        node_transfer_exporting(user))
        return 0; /* busy: found again on a later tick */
    {
        int rc = node_user_open(server, user, false);

        if (rc == CAIRN_ENOMEM || rc == CAIRN_ELOCKED)
            return 0;
        if (rc < 0) {
            scrub_open_failed(server, user, rc);
            return 1;
        }
    }
    if ((job = calloc(1, sizeof(*job))) == NULL)
        return 1;
    job->userid = user->userid;
    job->levels = server->settings.scrub_full ? CAIRN_VERIFY_FULL
                                              : CAIRN_VERIFY_ALL_CHECKSUMS;
    job->started_ms = cairn_loop_now_ms();
    if (node_job_start(server, user, scrub_store, scrub_done, job) < 0) {
        free(job);
        return 1;
    }
    server->scrub_running = true;
    return 1;
}

static void
on_tick(struct cairn_loop *loop, uint64_t timer_id, void *arg)
{
    struct cairn_node_server *server = arg;
    uint64_t interval = node_scrub_interval_ms(server);

    (void)loop;
    (void)timer_id;
    if (!server->settings.scrub_enabled || server->worker_running ||
        server->shut_down || cairn_loop_now_ms() < server->scrub_next_ms)
        return;
    {
        int64_t due_before = wall_ms() - (int64_t)interval;
        bool first_round =
            cairn_loop_now_ms() - server->started_ms >=
            (interval < FIRST_ROUND_DELAY_MS ? interval : FIRST_ROUND_DELAY_MS);

        /* a round asked for now: everyone not checked since is due */
        if (server->scrub_now_ms > due_before) {
            due_before = server->scrub_now_ms;
            first_round = true;
        }
        cairn_catalog_foreach_scrub_due(server->catalog, due_before,
                                        first_round, try_user, server);
    }
}

void
cairn_node_server_scrub_now(struct cairn_node_server *server)
{
    server->scrub_now_ms = wall_ms();
    server->scrub_next_ms = 0;
}

bool
node_user_quarantined(struct cairn_node_server *server, struct node_user *user)
{
    if (user->quarantine == QUARANTINE_UNKNOWN) {
        int64_t checked_ms = 0;
        char *damage = NULL;

        user->quarantine = QUARANTINE_CLEAN;
        if (cairn_catalog_get_scrubbed(server->catalog, user->userid,
                                       &checked_ms, &damage) == 0 &&
            damage != NULL) {
            user->quarantine = QUARANTINE_ON;
            free(user->damage);
            user->damage = damage;
            damage = NULL;
        }
        free(damage);
    }
    return user->quarantine == QUARANTINE_ON;
}

int
node_reply_quarantined(struct cairn_node_server *server,
                       struct node_request *request)
{
    struct node_user *user = request->user;
    char text[512];

    snprintf(text, sizeof(text),
             "%s is quarantined on node %s: %s (a scrub found it damaged; "
             "cairnctl repair %s copies a good replica)",
             user->userid, server->settings.name ? server->settings.name : "",
             user->damage ? user->damage : "damaged", user->userid);
    return node_reply_error(server, request, CAIRN_EUNAVAILABLE,
                            CAIRN_CSYNC_CODE_MAILBOX_LOCKED, text);
}

int
node_scrub_lift(struct cairn_node_server *server, const char *userid)
{
    struct node_user *user = NULL;
    int rc =
        cairn_catalog_set_scrubbed(server->catalog, userid, wall_ms(), NULL);

    if (node_user_get(server, userid, &user) == 0) {
        if (user->quarantine == QUARANTINE_ON)
            node_event(server, CAIRN_LOG_INFO, NULL,
                       "scrub: %s is no longer quarantined (a good copy was "
                       "transferred in and verified)",
                       userid);
        user->quarantine = QUARANTINE_CLEAN;
        free(user->damage);
        user->damage = NULL;
    }
    return rc;
}

int
node_scrub_figures(struct cairn_node_server *server, uint64_t *users,
                   uint64_t *checked, uint64_t *damaged)
{
    return cairn_catalog_scrub_figures(
        server->catalog, wall_ms() - (int64_t)node_scrub_interval_ms(server),
        users, checked, damaged);
}

int
node_scrub_schedule_init(struct cairn_node_server *server)
{
    return cairn_loop_add_timer(server->loop, SCRUB_TICK_MS, SCRUB_TICK_MS,
                                on_tick, server, &server->scrub_timer);
}

void
node_scrub_schedule_release(struct cairn_node_server *server)
{
    if (server->scrub_timer) {
        cairn_loop_cancel_timer(server->loop, server->scrub_timer);
        server->scrub_timer = 0;
    }
}
