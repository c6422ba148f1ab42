/*
 * cmd_repair.c - `cairnctl repair`: brings every lagging replica of a
 * destination's users to its peers' state node to node, instead of
 * waiting for the user's next sync (DESIGN.md "Destinations and
 * replicas"). For each user: the replicas' verify digests (which cover
 * the update stamps, so equal digests are equal facts); when they differ
 * or a replica lacks the user, the good replica is the one the router
 * did not mark behind (its repair marks file, when this host can read
 * it), then the one with the newest update, then the longest log; the
 * router holds the user's writes (retryable NO) while each lagging copy
 * is replaced by a copy of the good one through the transfer path
 * (rebalance_wire.c: the target rebuilds and verifies it before it
 * records it), the new copy's digest is compared, and the user is let go.
 */
#include "ops.h"
#include "placement.h"
#include "rebalance_int.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

/* The router's marks file read at most (65,536 marks of short lines). */
#define MARKS_MAX (32u * 1024 * 1024)

static const char usage[] =
    "usage: cairnctl repair [--json] [-n] -d destination [user ...]\n"
    "\n"
    "Compares the replicas of each user (all users the destination's nodes\n"
    "hold when none is named) and replaces every lagging or missing copy\n"
    "with a verified copy of the good replica: the one the router did not\n"
    "mark behind, else the one with the newest update, else the longest\n"
    "log. The router holds the user's writes meanwhile ([router] control).\n"
    "  -d, --destination  the destination whose replicas are repaired\n"
    "  -n, --dry-run      say what would be copied, change nothing\n"
    "Exit: 0 every replica agrees, 1 a user could not be repaired (the\n"
    "reason is printed), 64 usage, 66 the ring file missing, 69 a node or\n"
    "the router did not answer.\n";

/* One replica of the user being repaired. */
struct replica {
    size_t node; /* config index */
    const char *name;
    bool held;     /* the node has a copy */
    bool behind;   /* the router's repair mark */
    bool unusable; /* its digest could not be read */
    char digest[41];
    int64_t last_time;
    uint64_t raw_bytes;
};

struct repair {
    const struct cairn_config *config;
    const struct cairn_config_destination *destination;
    struct cairn_ring *ring;
    struct cairn_rebalance_link *link;
    const char *control;
    bool dry_run;
    FILE *out, *err;
    Cairn__StatusReply **stats; /* [config node count], NULL: not asked */
    char *marks;                /* the marks file's text, NULL: none */
    size_t agreed, repaired, failed, copies;
};

static const char *
name_of(const struct repair *repair, size_t node)
{
    return cairn_config_node_at(repair->config, node)->origin.name;
}

/* The STATS of node, asked once per run (NULL when it did not answer). */
static const Cairn__StatusReply *
stats_of(struct repair *repair, size_t node)
{
    if (repair->stats[node] == NULL &&
        cairn_rebalance_node_users(repair->link, name_of(repair, node),
                                   &repair->stats[node]) < 0)
        return NULL;
    return repair->stats[node];
}

static const Cairn__UserStats *
user_stats(struct repair *repair, size_t node, const char *userid)
{
    const Cairn__StatusReply *stats = stats_of(repair, node);

    for (size_t i = 0; stats != NULL && i < stats->n_users; i++)
        if (strcmp(stats->users[i]->user, userid) == 0)
            return stats->users[i];
    return NULL;
}

/* Whether the router's marks file says (userid, node) is behind. */
static bool
marked_behind(const struct repair *repair, const char *userid, const char *node)
{
    char line[512];
    size_t user_len = strlen(userid), node_len = strlen(node);

    if (repair->marks == NULL || user_len + node_len + 8 > sizeof(line))
        return false;
    snprintf(line, sizeof(line), "\n%s %s behind\n", userid, node);
    return strstr(repair->marks, line) != NULL;
}

/* Reads <state_dir>/repair-marks.<destination>, when this host has it. */
static void
load_marks(struct repair *repair)
{
    const char *state_dir = cairn_config_router(repair->config)->state_dir;
    char *path = NULL, *text = NULL;
    FILE *file = NULL;
    size_t len;

    if (state_dir == NULL || asprintf(&path, "%s/repair-marks.%s", state_dir,
                                      repair->destination->origin.name) < 0)
        return;
    if ((file = fopen(path, "r")) != NULL &&
        (text = calloc(1, MARKS_MAX + 1)) != NULL) {
        len = fread(text, 1, MARKS_MAX, file);
        text[len] = '\0';
        if (asprintf(&repair->marks, "\n%s\n", text) < 0)
            repair->marks = NULL;
    }
    if (file != NULL)
        fclose(file);
    free(text);
    free(path);
}

/* The user's replicas on the ring, with what each node says of it. */
static void
read_replicas(struct repair *repair, const char *userid,
              struct replica *replicas, size_t *count)
{
    uint16_t indices[CAIRN_RING_MAX_REPLICAS];

    cairn_ring_lookup(repair->ring, userid, strlen(userid), indices);
    *count = 0;
    for (size_t i = 0; i < cairn_ring_replicas(repair->ring); i++) {
        struct cairn_ring_node_info info;
        struct replica *replica = &replicas[*count];
        const Cairn__UserStats *stats;
        char text[256] = "";
        int rc;

        cairn_ring_node_info(repair->ring, indices[i], &info);
        memset(replica, 0, sizeof(*replica));
        for (size_t n = 0; n < cairn_config_node_count(repair->config); n++)
            if (strcmp(name_of(repair, n), info.name) == 0) {
                replica->node = n;
                replica->name = name_of(repair, n);
            }
        if (replica->name == NULL)
            continue; /* not in the config: cairnctl ring says so */
        (*count)++;
        replica->behind = marked_behind(repair, userid, replica->name);
        rc = cairn_rebalance_node_digest(repair->link, replica->name, userid,
                                         replica->digest, text, sizeof(text));
        replica->held = rc == 0;
        replica->unusable = rc < 0 && rc != CAIRN_ENOENT;
        if (replica->unusable)
            fprintf(repair->err, "repair: %s on %s: %s\n", userid,
                    replica->name, text[0] ? text : cairn_strerror(rc));
        if (replica->held &&
            (stats = user_stats(repair, replica->node, userid)) != NULL) {
            replica->last_time = stats->last_backup_time;
            replica->raw_bytes = stats->raw_bytes;
        }
    }
}

/* Whether a is a better source than b (see the header). */
static bool
better(const struct replica *a, const struct replica *b)
{
    if (a->behind != b->behind)
        return !a->behind;
    if (a->last_time != b->last_time)
        return a->last_time > b->last_time;
    return a->raw_bytes > b->raw_bytes;
}

/* The good replica, NULL when none holds the user or two tie. */
static const struct replica *
pick_good(const struct replica *replicas, size_t count, bool *tie)
{
    const struct replica *good = NULL;

    *tie = false;
    for (size_t i = 0; i < count; i++) {
        const struct replica *r = &replicas[i];

        if (!r->held)
            continue;
        if (good == NULL || better(r, good)) {
            good = r;
            *tie = false;
        } else if (!better(good, r) && strcmp(good->digest, r->digest) != 0) {
            *tie = true;
        }
    }
    return good;
}

/*
 * Replaces target's copy of userid with a copy of source's: target pulls
 * it from source (node to node), verifies it and compares digests before
 * its own copy is replaced.
 */
static int
copy_over(struct repair *repair, const char *userid,
          const struct replica *source, const struct replica *target)
{
    struct cairn_rebalance_pull_outcome pulled;
    int rc;

    rc = cairn_rebalance_pull(repair->link, target->name, source->name, userid,
                              0, true, &pulled);
    if (rc == 0 && strcmp(pulled.digest, source->digest) != 0) {
        snprintf(pulled.text, sizeof(pulled.text),
                 "digest %.12s differs from %.12s's %.12s", pulled.digest,
                 source->name, source->digest);
        rc = CAIRN_EMISMATCH;
    }
    if (rc < 0) {
        fprintf(repair->err, "repair: %s: copy %s -> %s: %s\n", userid,
                source->name, target->name,
                pulled.text[0] ? pulled.text : cairn_strerror(rc));
        return rc;
    }
    repair->copies++;
    fprintf(repair->out, "%s: %s <- %s (%llu bytes)\n", userid, target->name,
            source->name, (unsigned long long)pulled.bytes);
    return 0;
}

static int
hold(struct repair *repair, const char *userid, bool on)
{
    char text[256] = "";
    int rc;

    if (repair->control == NULL)
        return 0;
    rc = cairn_rebalance_router_call(
        repair->control, on ? CAIRN__KIND__USER_HOLD : CAIRN__KIND__USER_SWITCH,
        repair->destination->origin.name, userid, 0, NULL, 0, NULL, text,
        sizeof(text));
    if (rc < 0)
        fprintf(repair->err, "repair: %s: router %s: %s\n", userid,
                repair->control, text[0] ? text : cairn_strerror(rc));
    return rc;
}

/* Whether every replica holds the user with one digest. */
static bool
agree(const struct replica *replicas, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (!replicas[i].held ||
            strcmp(replicas[i].digest, replicas[0].digest) != 0)
            return false;
    return true;
}

/* Reads the replicas again under the hold, copies over the lagging ones. */
static int
repair_held(struct repair *repair, const char *userid)
{
    struct replica replicas[CAIRN_RING_MAX_REPLICAS];
    const struct replica *good;
    size_t count = 0;
    bool tie = false;
    int rc = 0;

    read_replicas(repair, userid, replicas, &count);
    if (agree(replicas, count))
        return 0;
    if ((good = pick_good(replicas, count, &tie)) == NULL || tie) {
        fprintf(repair->err, "repair: %s: %s; nothing copied\n", userid,
                good == NULL ? "no replica holds the user"
                             : "replicas disagree and none is newer or "
                               "unmarked");
        return CAIRN_ESTATE;
    }
    for (size_t i = 0; i < count; i++) {
        const struct replica *r = &replicas[i];

        if (r == good || r->unusable ||
            (r->held && strcmp(r->digest, good->digest) == 0))
            continue;
        if (repair->dry_run)
            fprintf(repair->out, "%s: %s would get %s's copy\n", userid,
                    r->name, good->name);
        else if (copy_over(repair, userid, good, r) < 0)
            rc = CAIRN_ESTATE;
    }
    return rc;
}

static void
repair_user(struct repair *repair, const char *userid)
{
    struct replica replicas[CAIRN_RING_MAX_REPLICAS];
    size_t count = 0;
    int rc;

    read_replicas(repair, userid, replicas, &count);
    if (agree(replicas, count)) {
        repair->agreed++;
        return;
    }
    if (repair->dry_run)
        rc = repair_held(repair, userid);
    else if ((rc = hold(repair, userid, true)) == 0) {
        rc = repair_held(repair, userid);
        if (hold(repair, userid, false) < 0 && rc == 0)
            rc = CAIRN_EUNAVAILABLE;
    }
    if (rc == 0)
        repair->repaired++;
    else
        repair->failed++;
}

/* Every user any ring node holds, into a sorted list without repeats. */
static int
all_users(struct repair *repair, char ***users, size_t *count)
{
    size_t cap = 0;

    *users = NULL;
    *count = 0;
    for (size_t i = 0; i < cairn_ring_node_count(repair->ring); i++) {
        struct cairn_ring_node_info info;
        const Cairn__StatusReply *stats = NULL;

        cairn_ring_node_info(repair->ring, i, &info);
        for (size_t n = 0; n < cairn_config_node_count(repair->config); n++)
            if (strcmp(name_of(repair, n), info.name) == 0 &&
                (stats = stats_of(repair, n)) == NULL) {
                fprintf(repair->err, "repair: node %s did not list its users\n",
                        info.name);
                return CAIRN_EUNAVAILABLE;
            }
        for (size_t u = 0; stats != NULL && u < stats->n_users; u++) {
            if (*count == cap) {
                char **grown =
                    realloc(*users, (cap = cap * 2 + 64) * sizeof(**users));
                if (grown == NULL)
                    return CAIRN_ENOMEM;
                *users = grown;
            }
            (*users)[(*count)++] = stats->users[u]->user; /* borrowed */
        }
    }
    return 0;
}

static int
compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
run_users(struct repair *repair, char **named, size_t named_count)
{
    char **users = named;
    size_t count = named_count;
    int rc = 0;

    if (named_count == 0) {
        if ((rc = all_users(repair, &users, &count)) < 0)
            goto out;
        qsort(users, count, sizeof(*users), compare_names);
    }
    for (size_t i = 0; i < count; i++)
        if (i == 0 || strcmp(users[i], users[i - 1]) != 0)
            repair_user(repair, users[i]);
out:
    if (users != named)
        free(users);
    return rc;
}

static int
parse_arguments(struct cairn_ops_context *context, int argc, char **argv,
                const char **destination, bool *dry_run)
{
    static const struct option options[] = {
        {"destination", required_argument, NULL, 'd'},
        {"dry-run", no_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    int option;

    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, "d:n", options, NULL)) != -1) {
        if (option == 'd')
            *destination = optarg;
        else if (option == 'n')
            *dry_run = true;
        else if (option == 'j')
            context->json = true;
        else
            return cairn_ops_usage(context, &cairn_ops_cmd_repair);
    }
    if (*destination == NULL) {
        fprintf(context->err, "cairnctl repair: -d destination is needed\n");
        return cairn_ops_usage(context, &cairn_ops_cmd_repair);
    }
    return CAIRN_EXIT_OK;
}

static int
start(struct repair *repair, const char *destination)
{
    int rc;

    repair->destination =
        cairn_config_find_destination(repair->config, destination);
    if (repair->destination == NULL) {
        fprintf(repair->err, "repair: no destination %s in the config\n",
                destination);
        return CAIRN_ECONFIG;
    }
    repair->control = cairn_config_router(repair->config)->control;
    if (repair->control == NULL && !repair->dry_run)
        fprintf(repair->err, "repair: [router] control is not set: writes "
                             "are not held while copies are replaced\n");
    repair->stats = calloc(cairn_config_node_count(repair->config) + 1,
                           sizeof(*repair->stats));
    if (repair->stats == NULL)
        return CAIRN_ENOMEM;
    if ((rc = cairn_ring_load(repair->destination->ring_file, &repair->ring)) <
        0) {
        fprintf(repair->err, "repair: cannot load %s: %s\n",
                repair->destination->ring_file, cairn_strerror(rc));
        return CAIRN_ENOENT;
    }
    load_marks(repair);
    return cairn_rebalance_link_new(repair->config, &repair->link);
}

static void
finish(struct repair *repair)
{
    for (size_t n = 0;
         repair->stats != NULL && n < cairn_config_node_count(repair->config);
         n++)
        if (repair->stats[n] != NULL)
            cairn__status_reply__free_unpacked(repair->stats[n], NULL);
    free(repair->stats);
    free(repair->marks);
    cairn_rebalance_link_free(repair->link);
    cairn_ring_free(repair->ring);
}

static int
run_repair(struct cairn_ops_context *context, int argc, char **argv)
{
    struct repair repair = {.out = context->out, .err = context->err};
    struct cairn_config *config = NULL;
    const char *destination = NULL;
    int status, rc;

    if ((status = parse_arguments(context, argc, argv, &destination,
                                  &repair.dry_run)) != 0)
        return status;
    if ((status = cairn_ops_load_config(context, NULL, &config)) != 0)
        return status;
    repair.config = config;
    if ((rc = start(&repair, destination)) == 0)
        rc = run_users(&repair, argv + optind, (size_t)(argc - optind));
    if (rc == 0 && context->json)
        fprintf(context->out,
                "{\"agreed\":%zu,\"repaired\":%zu,\"failed\":%zu,"
                "\"copies\":%zu}\n",
                repair.agreed, repair.repaired, repair.failed, repair.copies);
    else if (rc == 0)
        fprintf(context->out,
                "users agreeing %zu, repaired %zu, failed %zu; copies %zu\n",
                repair.agreed, repair.repaired, repair.failed, repair.copies);
    finish(&repair);
    cairn_config_free(config);
    if (rc == CAIRN_ENOENT)
        return CAIRN_EXIT_NOINPUT;
    if (rc == CAIRN_EUNAVAILABLE || rc == CAIRN_ETIMEOUT)
        return CAIRN_EXIT_UNAVAILABLE;
    if (rc < 0 || repair.failed > 0)
        return CAIRN_EXIT_PROBLEM;
    return CAIRN_EXIT_OK;
}

const struct cairn_ops_command cairn_ops_cmd_repair = {
    "repair", run_repair, "bring lagging replicas to their peers' state",
    usage};
