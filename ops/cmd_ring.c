/*
 * cmd_ring.c - `cairnctl ring`: the ring builder. Creates a destination's
 * ring file, changes it (add, remove, weigh, zone nodes; pin users by size
 * with the planner), shows it and diffs two of them. Every change prints,
 * before anything is written, the balance and what moves, as Swift's ring
 * builder does; the file is written (epoch + 1) only with --commit (in
 * place) or --output NEW, so the default is a dry run.
 */
#include "ops.h"
#include "placement.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Largest users file read for --users and plan (lines). */
#define MAX_USERS 50000000
#define MAX_USER_LINE 1024
#define MAX_NODE_ARGS 1024

static const char usage[] =
    "usage: cairnctl ring create file [-f] [-p power] (--from-config dest |\n"
    "           -d dest -r replicas -n name:weight[:zone] ...)\n"
    "       cairnctl ring add-node file name:weight[:zone] ... [change-opts]\n"
    "       cairnctl ring remove-node file name ... [change-opts]\n"
    "       cairnctl ring set-weight file name weight [change-opts]\n"
    "       cairnctl ring set-zone file name zone [change-opts]\n"
    "       cairnctl ring plan file -u users [-t tolerance] [change-opts]\n"
    "       cairnctl ring show [--json] file\n"
    "       cairnctl ring diff old new [-u users [-l]]\n"
    "\n"
    "change-opts: [--commit | -o new-file] [-u users]\n"
    "  a change is a dry run: it prints the balance (largest slots per unit\n"
    "  of weight over the mean) and the partitions and users that move;\n"
    "  --commit rewrites file with epoch + 1, -o writes new-file instead.\n"
    "-u users: a file of lines 'userid [bytes]': counts exactly which users\n"
    "  move and their balance; plan pins the heaviest users (bytes) so that\n"
    "  bytes per node are balanced within -t (default 0.01).\n"
    "-l: list every moving user as 'userid old-nodes -> new-nodes'.\n";

struct ring_args {
    bool commit;
    bool force;
    bool list;
    const char *output;
    const char *users_path;
    const char *destination;
    const char *from_config;
    uint64_t replicas;
    uint64_t power;
    double tolerance;
    const char *nodes[MAX_NODE_ARGS];
    size_t node_count;
    int first; /* argv index of the first positional argument */
};

/* The users file: userids and sizes, all owned here. */
struct user_list {
    struct cairn_ring_user *users;
    size_t count;
    size_t cap;
};

static void
user_list_release(struct user_list *list)
{
    for (size_t i = 0; i < list->count; i++)
        free((char *)list->users[i].userid);
    free(list->users);
    memset(list, 0, sizeof(*list));
}

static int
fail(struct cairn_ops_context *context, int status, const char *what,
     const char *detail)
{
    fprintf(context->err, "cairnctl ring: %s%s%s\n", what, detail ? ": " : "",
            detail ? detail : "");
    return status;
}

/* Exit status for a library error code. */
static int
status_of(int rc)
{
    switch (rc) {
    case CAIRN_ENOENT:
        return CAIRN_EXIT_NOINPUT;
    case CAIRN_EIO:
    case CAIRN_ENOSPACE:
        return CAIRN_EXIT_IOERR;
    case CAIRN_ENOMEM:
        return CAIRN_EXIT_SOFTWARE;
    default:
        return CAIRN_EXIT_PROBLEM;
    }
}

static int
parse_tolerance(const char *text, double *out)
{
    char *end = NULL;
    double value;

    errno = 0;
    value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(value > 0.0) ||
        value > 1.0)
        return CAIRN_EPARSE;
    *out = value;
    return CAIRN_OK;
}

static int
parse_args(struct cairn_ops_context *context, int argc, char **argv,
           struct ring_args *args)
{
    static const struct option options[] = {
        {"commit", no_argument, NULL, 'C'},
        {"output", required_argument, NULL, 'o'},
        {"users", required_argument, NULL, 'u'},
        {"list", no_argument, NULL, 'l'},
        {"force", no_argument, NULL, 'f'},
        {"destination", required_argument, NULL, 'd'},
        {"from-config", required_argument, NULL, 'F'},
        {"replicas", required_argument, NULL, 'r'},
        {"partition-power", required_argument, NULL, 'p'},
        {"node", required_argument, NULL, 'n'},
        {"tolerance", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    int option, rc = CAIRN_OK;

    memset(args, 0, sizeof(*args));
    args->tolerance = 0.01;
    optind = 0;
    opterr = 0;
    while (rc == 0 && (option = getopt_long(argc, argv, "o:u:lfd:r:p:n:t:",
                                            options, NULL)) != -1) {
        switch (option) {
        case 'C':
            args->commit = true;
            break;
        case 'o':
            args->output = optarg;
            break;
        case 'u':
            args->users_path = optarg;
            break;
        case 'l':
            args->list = true;
            break;
        case 'f':
            args->force = true;
            break;
        case 'd':
            args->destination = optarg;
            break;
        case 'F':
            args->from_config = optarg;
            break;
        case 'j':
            context->json = true;
            break;
        case 'r':
            rc = cairn_parse_u64_str(optarg, 1, CAIRN_RING_MAX_REPLICAS,
                                     &args->replicas);
            break;
        case 'p':
            rc = cairn_parse_u64_str(optarg, CAIRN_RING_MIN_PARTITION_POWER,
                                     CAIRN_RING_MAX_PARTITION_POWER,
                                     &args->power);
            break;
        case 't':
            rc = parse_tolerance(optarg, &args->tolerance);
            break;
        case 'n':
            if (args->node_count == MAX_NODE_ARGS)
                rc = CAIRN_ETOOBIG;
            else
                args->nodes[args->node_count++] = optarg;
            break;
        default:
            rc = CAIRN_EINVAL;
        }
    }
    if (rc < 0 || (args->commit && args->output != NULL)) {
        fprintf(context->err, "cairnctl ring: bad option or value\n");
        return cairn_ops_usage(context, &cairn_ops_cmd_ring);
    }
    args->first = optind;
    return CAIRN_EXIT_OK;
}

/* "name:weight[:zone]" into spec; the strings point into text (edited). */
static int
parse_node(char *text, struct cairn_ring_node_spec *spec)
{
    char *weight = strchr(text, ':'), *zone;
    uint64_t value;

    if (weight == NULL)
        return CAIRN_EPARSE;
    *weight++ = '\0';
    zone = strchr(weight, ':');
    if (zone != NULL)
        *zone++ = '\0';
    if (cairn_parse_u64_str(weight, 0, CAIRN_RING_MAX_WEIGHT, &value) < 0)
        return CAIRN_EPARSE;
    spec->name = text;
    spec->weight = (uint32_t)value;
    spec->zone = zone != NULL && *zone != '\0' ? zone : text;
    return CAIRN_OK;
}

/* One line "userid [bytes]": bytes is the last field when it is a number. */
static int
add_user(struct user_list *list, char *line)
{
    char *space = strrchr(line, ' ');
    uint64_t bytes = 1;
    char *userid;

    if (space == NULL)
        space = strrchr(line, '\t');
    if (space != NULL &&
        cairn_parse_u64_str(space + 1, 0, UINT64_MAX, &bytes) == 0)
        *space = '\0';
    else
        bytes = 1;
    if (*line == '\0')
        return CAIRN_OK;
    if (list->count == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 1024;
        struct cairn_ring_user *grown;

        if (list->count >= MAX_USERS)
            return CAIRN_ETOOBIG;
        grown = realloc(list->users, cap * sizeof(*grown));
        if (grown == NULL)
            return CAIRN_ENOMEM;
        list->users = grown;
        list->cap = cap;
    }
    if ((userid = strdup(line)) == NULL)
        return CAIRN_ENOMEM;
    list->users[list->count].userid = userid;
    list->users[list->count].bytes = bytes;
    list->count++;
    return CAIRN_OK;
}

static int
read_users(struct cairn_ops_context *context, const char *path,
           struct user_list *list)
{
    char line[MAX_USER_LINE + 2];
    FILE *file = fopen(path, "r");
    unsigned long number = 0;
    int rc = CAIRN_OK;

    if (file == NULL)
        return fail(context,
                    errno == ENOENT ? CAIRN_EXIT_NOINPUT : CAIRN_EXIT_IOERR,
                    path, strerror(errno));
    while (rc == 0 && fgets(line, sizeof(line), file) != NULL) {
        size_t len = strlen(line);

        number++;
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        else if (!feof(file))
            rc = CAIRN_ETOOBIG;
        if (rc == 0)
            rc = add_user(list, line);
    }
    if (rc == 0 && ferror(file))
        rc = CAIRN_EIO;
    fclose(file);
    if (rc < 0) {
        fprintf(context->err, "cairnctl ring: %s:%lu: %s\n", path, number,
                cairn_strerror(rc));
        return status_of(rc);
    }
    return CAIRN_EXIT_OK;
}

static int
load_ring(struct cairn_ops_context *context, const char *path,
          struct cairn_ring **ring)
{
    int rc = cairn_ring_load(path, ring);

    if (rc < 0)
        return fail(context, status_of(rc), path, cairn_strerror(rc));
    return CAIRN_EXIT_OK;
}

static void
print_nodes(struct cairn_ops_context *context, const struct cairn_ring *ring,
            const struct cairn_ring *before)
{
    fprintf(context->out, "  %-20s %-12s %8s %10s %10s %8s\n", "node", "zone",
            "weight", "slots", "ideal", "change");
    for (size_t i = 0; i < cairn_ring_node_count(ring); i++) {
        struct cairn_ring_node_info info, old;
        size_t index;
        long long change = 0;

        cairn_ring_node_info(ring, i, &info);
        if (before != NULL &&
            cairn_ring_node_find(before, info.name, &index) == 0 &&
            cairn_ring_node_info(before, index, &old) == 0)
            change = (long long)info.slots - (long long)old.slots;
        else if (before != NULL)
            change = (long long)info.slots;
        fprintf(context->out, "  %-20s %-12s %8u %10llu %10.1f %+8lld\n",
                info.name, info.zone, info.weight,
                (unsigned long long)info.slots, info.ideal, change);
    }
}

/*
 * The balance the ring could have at best: zones that may hold only one
 * replica of a partition cap their nodes' shares below their weight.
 */
static double
best_balance(const struct cairn_ring *ring)
{
    double ideal = 0.0, weight = 0.0, worst = 0.0;

    for (size_t i = 0; i < cairn_ring_node_count(ring); i++) {
        struct cairn_ring_node_info info;

        cairn_ring_node_info(ring, i, &info);
        ideal += info.ideal;
        weight += info.weight;
    }
    for (size_t i = 0; i < cairn_ring_node_count(ring) && ideal > 0.0; i++) {
        struct cairn_ring_node_info info;
        double ratio;

        cairn_ring_node_info(ring, i, &info);
        if (info.weight == 0)
            continue;
        ratio = info.ideal / info.weight / (ideal / weight);
        worst = ratio > worst ? ratio : worst;
    }
    return worst;
}

static void
print_summary(struct cairn_ops_context *context, const struct cairn_ring *ring)
{
    fprintf(
        context->out,
        "ring %s: epoch %llu, %zu nodes, %u replicas, 2^%u = %u "
        "partitions, %zu overrides, balance %.4f (best the zones "
        "allow %.4f)\n",
        cairn_ring_destination(ring),
        (unsigned long long)cairn_ring_epoch(ring), cairn_ring_node_count(ring),
        cairn_ring_replicas(ring), cairn_ring_partition_power(ring),
        1u << cairn_ring_partition_power(ring), cairn_ring_override_count(ring),
        cairn_ring_balance(ring), best_balance(ring));
}

struct list_context {
    struct cairn_ops_context *context;
    const struct cairn_ring *old_ring;
    const struct cairn_ring *new_ring;
    const struct user_list *users;
};

static void
print_row(FILE *out, const struct cairn_ring *ring, const uint16_t *nodes)
{
    for (unsigned r = 0; r < cairn_ring_replicas(ring); r++) {
        struct cairn_ring_node_info info;

        cairn_ring_node_info(ring, nodes[r], &info);
        fprintf(out, "%s%s", r ? "," : "", info.name);
    }
}

static int
list_move(void *context, const struct cairn_ring_move *move)
{
    struct list_context *list = context;
    FILE *out = list->context->out;

    fprintf(out, "  %s ", list->users->users[move->user].userid);
    print_row(out, list->old_ring, move->from);
    fputs(" -> ", out);
    print_row(out, list->new_ring, move->to);
    fputc('\n', out);
    return 0;
}

/* What moves from old_ring to new_ring, by partitions and, given, users. */
static int
report_moves(struct cairn_ops_context *context,
             const struct cairn_ring *old_ring,
             const struct cairn_ring *new_ring, const struct user_list *users,
             bool list)
{
    struct list_context listing = {context, old_ring, new_ring, users};
    struct cairn_ring_diff_stats stats;
    uint64_t slots = (uint64_t)cairn_ring_replicas(new_ring)
                     << cairn_ring_partition_power(new_ring);
    int rc;

    if ((rc = cairn_ring_diff_partitions(old_ring, new_ring, &stats)) < 0)
        return fail(context, status_of(rc), "diff", cairn_strerror(rc));
    fprintf(context->out,
            "balance %.4f -> %.4f (largest slots per unit of weight over "
            "the mean)\n"
            "partitions changed %llu of %llu (%.2f%%), replica slots moved "
            "%llu of %llu (%.2f%%)\n",
            cairn_ring_balance(old_ring), cairn_ring_balance(new_ring),
            (unsigned long long)stats.partitions_changed,
            (unsigned long long)stats.partitions,
            100.0 * (double)stats.partitions_changed / (double)stats.partitions,
            (unsigned long long)stats.slots_moved, (unsigned long long)slots,
            100.0 * (double)stats.slots_moved / (double)slots);
    if (users->count == 0) {
        fprintf(context->out,
                "users moving: about %.2f%% of all users (give -u users to "
                "count them)\n",
                100.0 * (double)stats.partitions_changed /
                    (double)stats.partitions);
        return CAIRN_EXIT_OK;
    }
    if ((rc = cairn_ring_diff_users(old_ring, new_ring, users->users,
                                    users->count, list ? list_move : NULL,
                                    &listing, &stats)) < 0)
        return fail(context, status_of(rc), "diff", cairn_strerror(rc));
    {
        double before = 0.0, after = 0.0;

        cairn_ring_measure(old_ring, users->users, users->count, &before, NULL);
        cairn_ring_measure(new_ring, users->users, users->count, &after, NULL);
        fprintf(context->out,
                "users moving %llu of %llu (%.2f%%), new replica copies "
                "%llu; load max/mean per weight %.4f -> %.4f\n",
                (unsigned long long)stats.users_changed,
                (unsigned long long)stats.users,
                100.0 * (double)stats.users_changed / (double)stats.users,
                (unsigned long long)stats.replicas_moved, before, after);
    }
    return CAIRN_EXIT_OK;
}

/* Reports a change, then writes it (epoch + 1) if asked to. */
static int
finish_change(struct cairn_ops_context *context, const struct ring_args *args,
              const char *path, const struct cairn_ring *old_ring,
              struct cairn_ring *new_ring, const struct user_list *users)
{
    const char *target = args->commit ? path : args->output;
    int status, rc;

    cairn_ring_set_epoch(new_ring, cairn_ring_epoch(old_ring) + 1);
    print_summary(context, new_ring);
    if ((status =
             report_moves(context, old_ring, new_ring, users, args->list)) != 0)
        return status;
    print_nodes(context, new_ring, old_ring);
    if (target == NULL) {
        fprintf(context->out,
                "dry run: nothing written (--commit rewrites %s, -o file "
                "writes a new one)\n",
                path);
        return CAIRN_EXIT_OK;
    }
    if ((rc = cairn_ring_save(new_ring, target)) < 0)
        return fail(context, status_of(rc), target, cairn_strerror(rc));
    fprintf(context->out, "wrote %s (epoch %llu)\n", target,
            (unsigned long long)cairn_ring_epoch(new_ring));
    return CAIRN_EXIT_OK;
}

/* Node specs from the config's destination (zones default to names). */
static int
create_from_config(struct cairn_ops_context *context,
                   const struct ring_args *args, const char *path)
{
    struct cairn_ring_node_spec specs[MAX_NODE_ARGS];
    const struct cairn_config_destination *destination;
    struct cairn_config *config = NULL;
    struct cairn_ring *ring = NULL;
    size_t count;
    int status, rc;

    if ((status = cairn_ops_load_config(context, NULL, &config)) != 0)
        return status;
    destination = cairn_config_find_destination(config, args->from_config);
    if (destination == NULL) {
        status = fail(context, CAIRN_EXIT_PROBLEM, args->from_config,
                      "no such destination in the configuration");
        goto out;
    }
    count = destination->nodes.count;
    for (size_t i = 0; i < count && i < MAX_NODE_ARGS; i++) {
        const struct cairn_config_node *node = destination->node_refs[i];

        specs[i].name = node->origin.name;
        specs[i].weight = (uint32_t)node->weight;
        specs[i].zone = node->zone != NULL && node->zone[0] != '\0'
                            ? node->zone
                            : node->origin.name;
    }
    rc = cairn_ring_new(args->from_config, (unsigned)destination->replicas,
                        (unsigned)args->power, specs,
                        count < MAX_NODE_ARGS ? count : MAX_NODE_ARGS, &ring);
    if (rc == 0 && (rc = cairn_ring_save(ring, path)) == 0) {
        print_summary(context, ring);
        print_nodes(context, ring, NULL);
        fprintf(context->out, "wrote %s (epoch 1)\n", path);
    }
    status = rc < 0 ? fail(context, status_of(rc), path, cairn_strerror(rc))
                    : CAIRN_EXIT_OK;
out:
    cairn_ring_free(ring);
    cairn_config_free(config);
    return status;
}

static int
ring_create(struct cairn_ops_context *context, struct ring_args *args, int argc,
            char **argv)
{
    struct cairn_ring_node_spec specs[MAX_NODE_ARGS];
    struct cairn_ring *ring = NULL;
    const char *path;
    int rc;

    if (argc - args->first != 1 ||
        (args->from_config == NULL &&
         (args->destination == NULL || args->replicas == 0 ||
          args->node_count == 0)))
        return cairn_ops_usage(context, &cairn_ops_cmd_ring);
    path = argv[args->first];
    if (!args->force && access(path, F_OK) == 0)
        return fail(context, CAIRN_EXIT_PROBLEM, path,
                    "exists (use -f to replace it)");
    if (args->from_config != NULL)
        return create_from_config(context, args, path);
    for (size_t i = 0; i < args->node_count; i++) {
        if (parse_node((char *)args->nodes[i], &specs[i]) < 0)
            return fail(context, CAIRN_EXIT_USAGE, args->nodes[i],
                        "expected name:weight[:zone]");
    }
    rc = cairn_ring_new(args->destination, (unsigned)args->replicas,
                        (unsigned)args->power, specs, args->node_count, &ring);
    if (rc == 0 && (rc = cairn_ring_save(ring, path)) == 0) {
        print_summary(context, ring);
        print_nodes(context, ring, NULL);
        fprintf(context->out, "wrote %s (epoch 1)\n", path);
    }
    cairn_ring_free(ring);
    if (rc < 0)
        return fail(context, status_of(rc), path, cairn_strerror(rc));
    return CAIRN_EXIT_OK;
}

/* One staged change to ring from the positional arguments after file. */
static int
apply_change(const char *verb, struct cairn_ring *ring, char **words, int count)
{
    struct cairn_ring_node_spec spec;
    uint64_t weight;
    int rc = CAIRN_OK;

    if (strcmp(verb, "add-node") == 0) {
        for (int i = 0; i < count && rc == 0; i++) {
            if ((rc = parse_node(words[i], &spec)) == 0)
                rc = cairn_ring_add_node(ring, &spec);
        }
        return count > 0 ? rc : CAIRN_EINVAL;
    }
    if (strcmp(verb, "remove-node") == 0) {
        for (int i = 0; i < count && rc == 0; i++)
            rc = cairn_ring_remove_node(ring, words[i]);
        return count > 0 ? rc : CAIRN_EINVAL;
    }
    if (count != 2)
        return CAIRN_EINVAL;
    if (strcmp(verb, "set-weight") == 0) {
        if ((rc = cairn_parse_u64_str(words[1], 0, CAIRN_RING_MAX_WEIGHT,
                                      &weight)) < 0)
            return rc;
        return cairn_ring_set_weight(ring, words[0], (uint32_t)weight);
    }
    return cairn_ring_set_zone(ring, words[0], words[1]);
}

static int
ring_change(struct cairn_ops_context *context, struct ring_args *args, int argc,
            char **argv)
{
    struct cairn_ring *old_ring = NULL, *new_ring = NULL;
    struct cairn_ring_rebalance_stats stats;
    struct user_list users = {0};
    const char *verb = argv[0], *path;
    int status, rc;

    if (argc - args->first < 1)
        return cairn_ops_usage(context, &cairn_ops_cmd_ring);
    path = argv[args->first];
    if ((status = load_ring(context, path, &old_ring)) != 0)
        goto out;
    if (args->users_path != NULL &&
        (status = read_users(context, args->users_path, &users)) != 0)
        goto out;
    if ((rc = cairn_ring_clone(old_ring, &new_ring)) < 0 ||
        (rc = apply_change(verb, new_ring, argv + args->first + 1,
                           argc - args->first - 1)) < 0 ||
        (rc = cairn_ring_rebalance(new_ring, &stats)) < 0) {
        status = rc == CAIRN_EINVAL && argc - args->first - 1 == 0
                     ? cairn_ops_usage(context, &cairn_ops_cmd_ring)
                 : rc == CAIRN_ENOENT
                     ? fail(context, CAIRN_EXIT_PROBLEM, verb, "no such node")
                     : fail(context, status_of(rc), verb, cairn_strerror(rc));
        goto out;
    }
    if (stats.overrides_dropped > 0)
        fprintf(context->out, "overrides dropped: %llu\n",
                (unsigned long long)stats.overrides_dropped);
    status = finish_change(context, args, path, old_ring, new_ring, &users);
out:
    user_list_release(&users);
    cairn_ring_free(old_ring);
    cairn_ring_free(new_ring);
    return status;
}

static int
ring_plan(struct cairn_ops_context *context, struct ring_args *args, int argc,
          char **argv)
{
    struct cairn_ring_plan_options options = {.tolerance = args->tolerance};
    struct cairn_ring *old_ring = NULL, *new_ring = NULL;
    struct cairn_ring_plan_stats stats;
    struct user_list users = {0};
    const char *path;
    int status, rc;

    if (argc - args->first != 1 || args->users_path == NULL)
        return cairn_ops_usage(context, &cairn_ops_cmd_ring);
    path = argv[args->first];
    if ((status = load_ring(context, path, &old_ring)) != 0 ||
        (status = read_users(context, args->users_path, &users)) != 0)
        goto out;
    if ((rc = cairn_ring_clone(old_ring, &new_ring)) < 0 ||
        (rc = cairn_ring_plan(new_ring, users.users, users.count, &options,
                              &stats)) < 0) {
        status = fail(context, status_of(rc), "plan", cairn_strerror(rc));
        goto out;
    }
    fprintf(context->out,
            "plan: load max/mean per weight %.4f by hashing alone, %.4f "
            "with %zu users pinned (no placement can beat %.4f)\n",
            stats.before, stats.after, stats.pinned, stats.lower_bound);
    status = finish_change(context, args, path, old_ring, new_ring, &users);
out:
    user_list_release(&users);
    cairn_ring_free(old_ring);
    cairn_ring_free(new_ring);
    return status;
}

static void
show_json(struct cairn_ops_context *context, const struct cairn_ring *ring)
{
    FILE *out = context->out;

    fputs("{\"destination\":", out);
    cairn_ops_json_string(out, cairn_ring_destination(ring));
    fprintf(out,
            ",\"epoch\":%llu,\"replicas\":%u,\"partition_power\":%u,"
            "\"overrides\":%zu,\"balance\":%.6f,\"nodes\":[",
            (unsigned long long)cairn_ring_epoch(ring),
            cairn_ring_replicas(ring), cairn_ring_partition_power(ring),
            cairn_ring_override_count(ring), cairn_ring_balance(ring));
    for (size_t i = 0; i < cairn_ring_node_count(ring); i++) {
        struct cairn_ring_node_info info;

        cairn_ring_node_info(ring, i, &info);
        fputs(i ? ",{\"name\":" : "{\"name\":", out);
        cairn_ops_json_string(out, info.name);
        fputs(",\"zone\":", out);
        cairn_ops_json_string(out, info.zone);
        fprintf(out, ",\"weight\":%u,\"slots\":%llu,\"ideal\":%.2f}",
                info.weight, (unsigned long long)info.slots, info.ideal);
    }
    fputs("]}\n", out);
}

static int
ring_show(struct cairn_ops_context *context, struct ring_args *args, int argc,
          char **argv)
{
    struct cairn_ring *ring = NULL;
    int status;

    if (argc - args->first != 1)
        return cairn_ops_usage(context, &cairn_ops_cmd_ring);
    if ((status = load_ring(context, argv[args->first], &ring)) != 0)
        return status;
    if (context->json) {
        show_json(context, ring);
    } else {
        print_summary(context, ring);
        print_nodes(context, ring, NULL);
    }
    cairn_ring_free(ring);
    return CAIRN_EXIT_OK;
}

static int
ring_diff(struct cairn_ops_context *context, struct ring_args *args, int argc,
          char **argv)
{
    struct cairn_ring *old_ring = NULL, *new_ring = NULL;
    struct user_list users = {0};
    int status;

    if (argc - args->first != 2)
        return cairn_ops_usage(context, &cairn_ops_cmd_ring);
    if ((status = load_ring(context, argv[args->first], &old_ring)) != 0 ||
        (status = load_ring(context, argv[args->first + 1], &new_ring)) != 0)
        goto out;
    if (args->users_path != NULL &&
        (status = read_users(context, args->users_path, &users)) != 0)
        goto out;
    fputs("old: ", context->out);
    print_summary(context, old_ring);
    fputs("new: ", context->out);
    print_summary(context, new_ring);
    status = report_moves(context, old_ring, new_ring, &users, args->list);
    if (status == 0)
        print_nodes(context, new_ring, old_ring);
out:
    user_list_release(&users);
    cairn_ring_free(old_ring);
    cairn_ring_free(new_ring);
    return status;
}

static const struct {
    const char *verb;
    int (*run)(struct cairn_ops_context *context, struct ring_args *args,
               int argc, char **argv);
} verbs[] = {
    {"create", ring_create},      {"add-node", ring_change},
    {"remove-node", ring_change}, {"set-weight", ring_change},
    {"set-zone", ring_change},    {"plan", ring_plan},
    {"show", ring_show},          {"diff", ring_diff},
};

/* argv[0] is "ring", argv[1] the verb; the verb sees argv from itself. */
static int
run_ring(struct cairn_ops_context *context, int argc, char **argv)
{
    struct ring_args args;
    int status;

    if (argc < 2)
        return cairn_ops_usage(context, &cairn_ops_cmd_ring);
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        if (strcmp(argv[1], verbs[i].verb) != 0)
            continue;
        if ((status = parse_args(context, argc - 1, argv + 1, &args)) != 0)
            return status;
        /* The plans and diffs are reports for people; refuse rather
         * than print text where JSON was asked for. */
        if (context->json && strcmp(verbs[i].verb, "show") != 0) {
            fprintf(context->err,
                    "cairnctl ring %s: no JSON form (only ring show has "
                    "one)\n",
                    verbs[i].verb);
            return CAIRN_EXIT_USAGE;
        }
        return verbs[i].run(context, &args, argc - 1, argv + 1);
    }
    fprintf(context->err, "cairnctl ring: unknown verb '%s'\n", argv[1]);
    return cairn_ops_usage(context, &cairn_ops_cmd_ring);
}

/* The verbs' names for the front (help, man page), in the order above. */
static const struct cairn_ops_verb verb_names[] = {
    {"create", false},     {"add-node", false}, {"remove-node", false},
    {"set-weight", false}, {"set-zone", false}, {"plan", false},
    {"show", false},       {"diff", false},     {NULL, false}};
_Static_assert(sizeof(verb_names) / sizeof(verb_names[0]) ==
                   sizeof(verbs) / sizeof(verbs[0]) + 1,
               "every ring verb is named for the front");

const struct cairn_ops_command cairn_ops_cmd_ring = {
    "ring", run_ring, "create, change, show and diff ring files", usage,
    verb_names};
