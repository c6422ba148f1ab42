/*
 * cmd_age.c - `cairnctl age`: users grouped by the time since their last
 * successful backup, per destination, for people and for monitoring
 * (Nagios-style exit codes and a one-line summary first). Reads the same
 * per-user figures as `status -u` (STATS: the newest chunk's end time in
 * each replica's index), walked in pages and merged by user
 * (user_walk.c), so memory does not grow with the number of users; the
 * users listed by -v go through a temporary file for the same reason.
 */
#include "cluster_int.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage[] =
    "usage: cairnctl age [--json] [-v] [-d destination] [--warn duration]\n"
    "                    [--crit duration] [-t timeout] [--now seconds]\n"
    "\n"
    "Groups every user by the time since its last successful backup, per\n"
    "destination (the users its nodes hold): < 1h, < 6h, < 24h, < 7d,\n"
    "older, never. A user's last backup is the newest over its replicas\n"
    "(when replicas disagree, the newest successful backup counts: one\n"
    "good copy is a backup). The first line is a summary for monitoring:\n"
    "  AGE OK - 120 users, oldest 2h13m\n"
    "  AGE WARNING - 3 of 120 users not backed up for 1d, oldest 3d04h\n"
    "then a table; with -v, the users past the lowest threshold given.\n"
    "  --warn, --crit  a duration (30m, 6h, 1d, 2w; a bare number is\n"
    "                  seconds): a user older than it, or never backed up,\n"
    "                  is a warning / critical\n"
    "  -d, --destination  only this destination\n"
    "  -v, --verbose  list the users past the threshold\n"
    "  -t, --timeout  per node and page, e.g. 5s (default 5s)\n"
    "  --now          judge ages as of this time (seconds since the epoch;\n"
    "                 default: now), for replaying a check\n"
    "Exit (Nagios): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (a node did not\n"
    "answer, or the config could not be read); 64 usage.\n";

enum age_status { AGE_OK = 0, AGE_WARNING = 1, AGE_CRITICAL = 2, AGE_UNKNOWN };

static const char *const status_names[] = {"OK", "WARNING", "CRITICAL",
                                           "UNKNOWN"};

/* The buckets' upper bounds in seconds; then older, then never. */
static const int64_t bucket_bounds[] = {3600, 6 * 3600, 24 * 3600,
                                        7 * 24 * 3600};
#define BUCKET_COUNT 6
static const char *const bucket_titles[BUCKET_COUNT] = {
    "<1H", "<6H", "<24H", "<7D", "OLDER", "NEVER"};
static const char *const bucket_keys[BUCKET_COUNT] = {
    "lt_1h", "lt_6h", "lt_24h", "lt_7d", "older", "never"};

struct age_args {
    const char *destination;
    bool verbose;
    uint64_t warn, crit; /* seconds; 0: not set */
    uint64_t timeout_ms;
    int64_t now;
};

struct destination_ages {
    const char *name;
    uint64_t users, buckets[BUCKET_COUNT];
    uint64_t past_warn, past_crit;
    int64_t oldest; /* seconds; -1: none backed up */
    char oldest_user[256];
};

struct age_run {
    struct cairn_ops_context *context;
    const struct cairn_config *config;
    struct age_args args;
    struct destination_ages *ages;
    size_t destination_count;
    FILE *listed; /* -v: the users past the threshold, as printed */
    uint64_t listed_count;
    bool failed; /* a node did not answer */
    char failure[512];
};

static int
parse_duration(const char *text, uint64_t *seconds)
{
    return cairn_parse_duration(text, seconds) < 0 || *seconds == 0
               ? CAIRN_EINVAL
               : 0;
}

static int
parse_args(struct cairn_ops_context *context, int argc, char **argv,
           struct age_args *args)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"verbose", no_argument, NULL, 'v'},
        {"destination", required_argument, NULL, 'd'},
        {"warn", required_argument, NULL, 'W'},
        {"crit", required_argument, NULL, 'C'},
        {"timeout", required_argument, NULL, 't'},
        {"now", required_argument, NULL, 'N'},
        {NULL, 0, NULL, 0},
    };
    uint64_t now;
    int option, rc = 0;

    memset(args, 0, sizeof(*args));
    args->timeout_ms = CAIRN_OPS_STATUS_TIMEOUT_MS;
    args->now = (int64_t)time(NULL);
    optind = 0;
    opterr = 0;
    while (rc == 0 &&
           (option = getopt_long(argc, argv, "vd:t:", options, NULL)) != -1) {
        switch (option) {
        case 'j':
            context->json = true;
            break;
        case 'v':
            args->verbose = true;
            break;
        case 'd':
            args->destination = optarg;
            break;
        case 'W':
            rc = parse_duration(optarg, &args->warn);
            break;
        case 'C':
            rc = parse_duration(optarg, &args->crit);
            break;
        case 't':
            rc = cairn_ops_parse_timeout(optarg, &args->timeout_ms);
            break;
        case 'N':
            rc = cairn_parse_u64_str(optarg, 1, INT64_MAX, &now);
            args->now = (int64_t)now;
            break;
        default:
            rc = CAIRN_EINVAL;
        }
    }
    if (rc < 0 || optind < argc) {
        fprintf(context->err, "cairnctl age: bad option or argument\n");
        return cairn_ops_usage(context, &cairn_ops_cmd_age);
    }
    return CAIRN_EXIT_OK;
}

/* The lowest threshold given (what -v lists past), 0 when none. */
static uint64_t
list_threshold(const struct age_args *args)
{
    if (args->warn && args->crit)
        return args->warn < args->crit ? args->warn : args->crit;
    return args->warn ? args->warn : args->crit;
}

static bool
past(uint64_t threshold, int64_t newest, int64_t age)
{
    return threshold > 0 && (newest <= 0 || age > (int64_t)threshold);
}

static void
list_user(struct age_run *run, const struct destination_ages *ages,
          const char *user, int64_t newest, int64_t age)
{
    char when[32], text[32] = "-";

    cairn_ops_format_time(newest, when, sizeof(when));
    if (newest > 0)
        cairn_ops_format_age(age, text, sizeof(text));
    if (run->context->json) {
        fputs(run->listed_count ? ",{\"destination\":" : "{\"destination\":",
              run->listed);
        cairn_ops_json_string(run->listed, ages->name);
        fputs(",\"user\":", run->listed);
        cairn_ops_json_string(run->listed, user);
        fprintf(run->listed, ",\"last_backup_time\":%lld,\"age_seconds\":",
                (long long)newest);
        if (newest > 0)
            fprintf(run->listed, "%lld}", (long long)age);
        else
            fputs("null}", run->listed);
    } else {
        fprintf(run->listed, "%-16s %-32s %-20s %s\n", ages->name, user, when,
                text);
    }
    run->listed_count++;
}

/* One user of a destination: its newest backup over the replicas. */
static void
count_user(struct age_run *run, struct destination_ages *ages, const char *user,
           const Cairn__UserStats *const *rows, size_t count)
{
    int64_t newest = 0, age;
    size_t bucket = 0;

    for (size_t i = 0; i < count; i++)
        if (rows[i] != NULL && rows[i]->last_backup_time > newest)
            newest = rows[i]->last_backup_time;
    age = run->args.now - newest;
    if (age < 0)
        age = 0; /* a clock behind the node's */
    if (newest <= 0)
        bucket = BUCKET_COUNT - 1;
    else
        while (bucket < 4 && age >= bucket_bounds[bucket])
            bucket++;
    ages->users++;
    ages->buckets[bucket]++;
    if (newest > 0 && age > ages->oldest) {
        ages->oldest = age;
        snprintf(ages->oldest_user, sizeof(ages->oldest_user), "%s", user);
    }
    ages->past_warn += past(run->args.warn, newest, age);
    ages->past_crit += past(run->args.crit, newest, age);
    if (run->listed != NULL && past(list_threshold(&run->args), newest, age))
        list_user(run, ages, user, newest, age);
}

static void
note_failure(struct age_run *run, const char *node, const char *error)
{
    size_t len = strlen(run->failure);

    run->failed = true;
    snprintf(run->failure + len, sizeof(run->failure) - len, "%s%s: %s",
             len ? "; " : "", node, error);
}

/* Walks the users on the nodes of destination. */
static int
walk_destination(struct age_run *run,
                 const struct cairn_config_destination *destination,
                 struct destination_ages *ages)
{
    struct cairn_ops_user_walk *walk = NULL;
    const Cairn__UserStats *const *rows;
    size_t *nodes = NULL, count = 0;
    const char *user, *error;
    int rc;

    ages->name = destination->origin.name;
    ages->oldest = -1;
    if ((nodes = calloc(destination->nodes.count + 1, sizeof(*nodes))) == NULL)
        return CAIRN_ENOMEM;
    for (size_t n = 0; n < destination->nodes.count; n++)
        for (size_t i = 0; i < cairn_config_node_count(run->config); i++)
            if (strcmp(cairn_config_node_at(run->config, i)->origin.name,
                       destination->nodes.items[n]) == 0)
                nodes[count++] = i;
    if ((rc = cairn_ops_user_walk_new(run->config, nodes, count,
                                      run->args.timeout_ms, &walk)) < 0)
        goto out;
    while ((rc = cairn_ops_user_walk_next(walk, &user, &rows)) > 0)
        count_user(run, ages, user, rows, count);
    for (size_t i = 0; rc == 0 && i < count; i++)
        if (cairn_ops_user_walk_status(walk, i, &error) != 0)
            note_failure(run,
                         cairn_ops_node_name(run->config,
                                             cairn_ops_user_walk_node(walk, i)),
                         error);
out:
    cairn_ops_user_walk_free(walk);
    free(nodes);
    return rc;
}

static enum age_status
judge(const struct age_run *run, uint64_t *users, uint64_t *past_warn,
      uint64_t *past_crit, int64_t *oldest)
{
    *users = *past_warn = *past_crit = 0;
    *oldest = -1;
    for (size_t d = 0; d < run->destination_count; d++) {
        *users += run->ages[d].users;
        *past_warn += run->ages[d].past_warn;
        *past_crit += run->ages[d].past_crit;
        if (run->ages[d].oldest > *oldest)
            *oldest = run->ages[d].oldest;
    }
    if (run->failed)
        return AGE_UNKNOWN;
    if (*past_crit > 0)
        return AGE_CRITICAL;
    return *past_warn > 0 ? AGE_WARNING : AGE_OK;
}

static void
format_summary(const struct age_run *run, enum age_status status, char *text,
               size_t size)
{
    uint64_t users, past_warn, past_crit, threshold;
    int64_t oldest;
    char oldest_text[32] = "none backed up", limit[32];
    size_t len;

    (void)judge(run, &users, &past_warn, &past_crit, &oldest);
    if (oldest >= 0)
        cairn_ops_format_age(oldest, oldest_text, sizeof(oldest_text));
    len = (size_t)snprintf(text, size, "AGE %s - ", status_names[status]);
    if (len >= size)
        return;
    if (status == AGE_UNKNOWN) {
        snprintf(text + len, size - len, "%s", run->failure);
        return;
    }
    threshold = status == AGE_CRITICAL ? run->args.crit : run->args.warn;
    cairn_ops_format_age((int64_t)threshold, limit, sizeof(limit));
    if (status == AGE_OK)
        snprintf(text + len, size - len, "%llu user%s, oldest %s",
                 (unsigned long long)users, users == 1 ? "" : "s", oldest_text);
    else
        snprintf(text + len, size - len,
                 "%llu of %llu users not backed up for %s, oldest %s",
                 (unsigned long long)(status == AGE_CRITICAL ? past_crit
                                                             : past_warn),
                 (unsigned long long)users, limit, oldest_text);
}

static void
copy_listed(struct age_run *run)
{
    char buffer[8192];
    size_t got;

    rewind(run->listed);
    while ((got = fread(buffer, 1, sizeof(buffer), run->listed)) > 0)
        fwrite(buffer, 1, got, run->context->out);
}

static void
print_text(struct age_run *run, const char *summary)
{
    FILE *out = run->context->out;

    fprintf(out, "%s\n", summary);
    fprintf(out, "%-16s %8s", "DESTINATION", "USERS");
    for (size_t b = 0; b < BUCKET_COUNT; b++)
        fprintf(out, " %7s", bucket_titles[b]);
    fprintf(out, "  %s\n", "OLDEST");
    for (size_t d = 0; d < run->destination_count; d++) {
        const struct destination_ages *ages = &run->ages[d];
        char oldest[32] = "-";

        if (ages->oldest >= 0)
            cairn_ops_format_age(ages->oldest, oldest, sizeof(oldest));
        fprintf(out, "%-16s %8llu", ages->name,
                (unsigned long long)ages->users);
        for (size_t b = 0; b < BUCKET_COUNT; b++)
            fprintf(out, " %7llu", (unsigned long long)ages->buckets[b]);
        fprintf(out, "  %s%s%s%s\n", oldest, ages->oldest >= 0 ? " (" : "",
                ages->oldest >= 0 ? ages->oldest_user : "",
                ages->oldest >= 0 ? ")" : "");
    }
    if (run->listed == NULL)
        return;
    if (list_threshold(&run->args) == 0) {
        fputs("\n(-v lists users past --warn or --crit: none given)\n", out);
        return;
    }
    fprintf(out, "\n%llu user%s past the threshold:\n%-16s %-32s %-20s %s\n",
            (unsigned long long)run->listed_count,
            run->listed_count == 1 ? "" : "s", "DESTINATION", "USER",
            "LAST BACKUP (UTC)", "AGE");
    copy_listed(run);
}

static void
print_json(struct age_run *run, enum age_status status, const char *summary)
{
    FILE *out = run->context->out;

    fprintf(out,
            "{\"status\":\"%s\",\"exit\":%d,\"summary\":", status_names[status],
            (int)status);
    cairn_ops_json_string(out, summary);
    fprintf(out, ",\"now\":%lld,\"warn_seconds\":%llu,\"crit_seconds\":%llu",
            (long long)run->args.now, (unsigned long long)run->args.warn,
            (unsigned long long)run->args.crit);
    fputs(",\"destinations\":[", out);
    for (size_t d = 0; d < run->destination_count; d++) {
        const struct destination_ages *ages = &run->ages[d];

        fputs(d ? ",{\"name\":" : "{\"name\":", out);
        cairn_ops_json_string(out, ages->name);
        fprintf(out, ",\"users\":%llu,\"buckets\":{",
                (unsigned long long)ages->users);
        for (size_t b = 0; b < BUCKET_COUNT; b++)
            fprintf(out, "%s\"%s\":%llu", b ? "," : "", bucket_keys[b],
                    (unsigned long long)ages->buckets[b]);
        fprintf(out,
                "},\"past_warn\":%llu,\"past_crit\":%llu,"
                "\"oldest_seconds\":",
                (unsigned long long)ages->past_warn,
                (unsigned long long)ages->past_crit);
        if (ages->oldest >= 0) {
            fprintf(out, "%lld,\"oldest_user\":", (long long)ages->oldest);
            cairn_ops_json_string(out, ages->oldest_user);
        } else {
            fputs("null,\"oldest_user\":null", out);
        }
        fputs("}", out);
    }
    fputs("]", out);
    if (run->listed != NULL) {
        fputs(",\"past_threshold\":[", out);
        copy_listed(run);
        fputs("]", out);
    }
    fputs("}\n", out);
}

static int
run_age(struct cairn_ops_context *context, int argc, char **argv)
{
    struct cairn_config *config = NULL;
    struct age_run run = {context, NULL, {0}, NULL, 0, NULL, 0, false, ""};
    enum age_status status = AGE_UNKNOWN;
    char summary[768];
    int rc;

    if ((rc = parse_args(context, argc, argv, &run.args)) != 0)
        return rc;
    if (cairn_ops_load_config(context, NULL, &config) != 0) {
        fprintf(context->out, "AGE UNKNOWN - the configuration could not be "
                              "read\n");
        return AGE_UNKNOWN;
    }
    run.config = config;
    if ((run.ages = calloc(cairn_config_destination_count(config) + 1,
                           sizeof(*run.ages))) == NULL ||
        (run.args.verbose && (run.listed = tmpfile()) == NULL)) {
        fprintf(context->out, "AGE UNKNOWN - out of memory or no temporary "
                              "file\n");
        goto out;
    }
    for (size_t d = 0; d < cairn_config_destination_count(config); d++) {
        const struct cairn_config_destination *destination =
            cairn_config_destination_at(config, d);

        if (run.args.destination != NULL &&
            strcmp(run.args.destination, destination->origin.name) != 0)
            continue;
        if ((rc = walk_destination(&run, destination,
                                   &run.ages[run.destination_count++])) < 0) {
            fprintf(context->out, "AGE UNKNOWN - %s\n", cairn_strerror(rc));
            goto out;
        }
    }
    if (run.destination_count == 0) {
        fprintf(context->err, "cairnctl age: no destination called %s\n",
                run.args.destination);
        status = (enum age_status)CAIRN_EXIT_USAGE;
        goto out;
    }
    {
        uint64_t users, past_warn, past_crit;
        int64_t oldest;

        status = judge(&run, &users, &past_warn, &past_crit, &oldest);
    }
    format_summary(&run, status, summary, sizeof(summary));
    if (context->json)
        print_json(&run, status, summary);
    else
        print_text(&run, summary);
out:
    if (run.listed != NULL)
        fclose(run.listed);
    free(run.ages);
    cairn_config_free(config);
    return (int)status;
}

const struct cairn_ops_command cairn_ops_cmd_age = {
    "age", run_age, "users by time since their last backup (Nagios check)",
    usage};
