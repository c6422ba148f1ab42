/*
 * cmd_status.c - `cairnctl status`: asks every node of the config (or one)
 * for its figures at once, with a timeout, and prints one row per node -
 * a node that does not answer is shown as down with the reason, never
 * waited on beyond the timeout - then totals; with --users, one row per
 * user and node: the "when was anne last backed up, and where" view.
 * Beside each node's own answer, the router's view of it (asked of
 * [router] control at the same time, status_router.c): up, slow or down
 * with the reason, and the router's counters per node.
 */
#include "cluster_int.h"
#include "loop.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage[] =
    "usage: cairnctl status [--json] [-n node] [-t timeout] [-u [user ...]]\n"
    "\n"
    "Asks every node of the config (-n: only that one) for its status and\n"
    "prints node, endpoint, zone, weight, users, bytes on disk, disk free,\n"
    "ring epoch, uptime, the router's view (ROUTER: up, slow, down; - when\n"
    "the router does not answer) and the node's own state (up; down:\n"
    "reason when it does not answer; error: reason when it answers with an\n"
    "error), then totals, then the router's view per destination: state,\n"
    "time in it, requests waiting, changes, requests refused while down,\n"
    "abandoned when it went down, failed for want of an answer, reason.\n"
    "  -u, --users    also one row per user and node holding it (only the\n"
    "                 users named, when any): bytes on disk, raw bytes,\n"
    "                 chunks, mailboxes, messages, last backup (UTC) and age\n"
    "  -t, --timeout  per node, e.g. 500ms, 5s (default 5s)\n"
    "Exit: 0 every node answered, 69 a node is down (unreachable or timed\n"
    "out), 1 a node answered with an error, 64 usage, 66/1 config.\n";

struct status_args {
    const char *node;
    bool users;
    uint64_t timeout_ms;
    int first; /* argv index of the first user */
};

/* One user on one node, for sorting the --users rows. */
struct user_row {
    const Cairn__UserStats *stats;
    size_t node;
};

static int
parse_args(struct cairn_ops_context *context, int argc, char **argv,
           struct status_args *args)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"node", required_argument, NULL, 'n'},
        {"users", no_argument, NULL, 'u'},
        {"timeout", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    int option, rc = 0;

    memset(args, 0, sizeof(*args));
    args->timeout_ms = CAIRN_OPS_STATUS_TIMEOUT_MS;
    optind = 0;
    opterr = 0;
    while (rc == 0 &&
           (option = getopt_long(argc, argv, "n:ut:", options, NULL)) != -1) {
        switch (option) {
        case 'j':
            context->json = true;
            break;
        case 'n':
            args->node = optarg;
            break;
        case 'u':
            args->users = true;
            break;
        case 't':
            rc = cairn_ops_parse_timeout(optarg, &args->timeout_ms);
            break;
        default:
            rc = CAIRN_EINVAL;
        }
    }
    if (rc < 0 || (!args->users && optind < argc)) {
        fprintf(context->err, "cairnctl status: bad option or argument\n");
        return cairn_ops_usage(context, &cairn_ops_cmd_status);
    }
    args->first = optind;
    return CAIRN_EXIT_OK;
}

static const char *
zone_of(const struct cairn_config_node *node)
{
    return node->zone != NULL ? node->zone : node->origin.name;
}

static void
print_node_text(FILE *out, const struct cairn_config_node *node,
                const struct cairn_ops_node_call *call,
                const Cairn__NodeHealth *router)
{
    const Cairn__NodeStats *stats =
        call->status == 0 ? call->status_reply->node : NULL;
    char bytes[32] = "-", free_space[32] = "-", uptime[32] = "-";
    char users[32] = "-", epoch[32] = "-";

    if (stats != NULL) {
        cairn_ops_format_bytes(stats->bytes, bytes, sizeof(bytes));
        cairn_ops_format_bytes(stats->disk_free, free_space,
                               sizeof(free_space));
        cairn_ops_format_age(stats->uptime_seconds, uptime, sizeof(uptime));
        snprintf(users, sizeof(users), "%llu",
                 (unsigned long long)stats->users);
        if (stats->ring_epoch != 0)
            snprintf(epoch, sizeof(epoch), "%llu",
                     (unsigned long long)stats->ring_epoch);
    }
    fprintf(out, "%-12s %-24s %-8s %6llu %6s %10s %10s %5s %8s %-6s ",
            node->origin.name, node->endpoint, zone_of(node),
            (unsigned long long)node->weight, users, bytes, free_space, epoch,
            uptime, router != NULL ? router->state : "-");
    if (stats != NULL && stats->scrub_damaged > 0)
        fprintf(out, "up, DAMAGED: %llu user%s quarantined (node log)\n",
                (unsigned long long)stats->scrub_damaged,
                stats->scrub_damaged == 1 ? "" : "s");
    else if (stats != NULL && stats->disk_reserve > 0 &&
             stats->disk_free < stats->disk_reserve)
        fputs("up, disk below reserve: writes refused\n", out);
    else if (stats != NULL)
        fputs("up\n", out);
    else
        fprintf(out, "%s: %s\n",
                cairn_ops_unreachable(call->status) ? "down" : "error",
                call->error_text);
}

static void
print_node_json(FILE *out, const struct cairn_config_node *node,
                const struct cairn_ops_node_call *call,
                const Cairn__NodeHealth *router)
{
    const Cairn__NodeStats *stats =
        call->status == 0 ? call->status_reply->node : NULL;

    fputs("{\"name\":", out);
    cairn_ops_json_string(out, node->origin.name);
    fputs(",\"router_state\":", out);
    if (router != NULL)
        cairn_ops_json_string(out, router->state);
    else
        fputs("null", out);
    fputs(",\"endpoint\":", out);
    cairn_ops_json_string(out, node->endpoint);
    fputs(",\"zone\":", out);
    cairn_ops_json_string(out, zone_of(node));
    fprintf(out, ",\"weight\":%llu,\"up\":%s", (unsigned long long)node->weight,
            stats ? "true" : "false");
    if (stats == NULL) {
        fprintf(out, ",\"state\":\"%s\",\"error_code\":%d,\"error\":",
                cairn_ops_unreachable(call->status) ? "down" : "error",
                call->status);
        cairn_ops_json_string(out, call->error_text);
        fputs("}", out);
        return;
    }
    fprintf(out,
            ",\"users\":%llu,\"bytes\":%llu,\"disk_free\":%llu,"
            "\"disk_reserve\":%llu,"
            "\"ring_epoch\":%llu,\"uptime_seconds\":%lld,\"requests\":%llu,"
            "\"scrub\":{\"checked\":%llu,\"damaged\":%llu,"
            "\"interval_seconds\":%llu},"
            "\"heal\":{\"ok\":%llu,\"failed\":%llu,"
            "\"damaged_no_source\":%llu,\"diverged\":%llu,"
            "\"running\":%llu,\"damaged_users\":[",
            (unsigned long long)stats->users, (unsigned long long)stats->bytes,
            (unsigned long long)stats->disk_free,
            (unsigned long long)stats->disk_reserve,
            (unsigned long long)stats->ring_epoch,
            (long long)stats->uptime_seconds,
            (unsigned long long)stats->requests,
            (unsigned long long)stats->scrub_checked,
            (unsigned long long)stats->scrub_damaged,
            (unsigned long long)stats->scrub_interval_seconds,
            (unsigned long long)stats->heal_ok,
            (unsigned long long)stats->heal_failed,
            (unsigned long long)stats->damaged_no_source,
            (unsigned long long)stats->diverged,
            (unsigned long long)stats->heals_running);
    for (size_t i = 0; i < stats->n_damaged_users; i++) {
        if (i > 0)
            fputc(',', out);
        cairn_ops_json_string(out, stats->damaged_users[i]);
    }
    fputs("]}}", out);
}

static int
compare_rows(const void *a, const void *b)
{
    const struct user_row *left = a, *right = b;
    int order = strcmp(left->stats->user, right->stats->user);

    if (order != 0)
        return order;
    return left->node < right->node ? -1 : left->node > right->node;
}

static void
print_user_row(struct cairn_ops_context *context,
               const struct cairn_config *config, const struct user_row *row,
               bool first)
{
    const Cairn__UserStats *stats = row->stats;
    const char *node = cairn_ops_node_name(config, row->node);
    char disk[32], raw[32], when[32], age[32] = "-";
    FILE *out = context->out;

    cairn_ops_format_time(stats->last_backup_time, when, sizeof(when));
    if (stats->last_backup_time > 0)
        cairn_ops_format_age((int64_t)time(NULL) - stats->last_backup_time, age,
                             sizeof(age));
    if (context->json) {
        fputs(first ? "{\"user\":" : ",{\"user\":", out);
        cairn_ops_json_string(out, stats->user);
        fputs(",\"node\":", out);
        cairn_ops_json_string(out, node);
        cairn_ops_json_user_stats(out, stats);
        fputs(",\"last_backup\":", out);
        cairn_ops_json_string(out, when);
        fputs("}", out);
        return;
    }
    cairn_ops_format_bytes(stats->bytes_on_disk, disk, sizeof(disk));
    cairn_ops_format_bytes(stats->raw_bytes, raw, sizeof(raw));
    fprintf(out, "%-24s %-12s %10s %10s %6llu %9llu %8llu  %-20s %s\n",
            stats->user, node, disk, raw, (unsigned long long)stats->chunks,
            (unsigned long long)stats->mailboxes,
            (unsigned long long)stats->messages, when, age);
}

/* The --users rows, sorted by user then node; users not held are left out. */
static int
print_users(struct cairn_ops_context *context,
            const struct cairn_config *config,
            const struct cairn_ops_node_call *calls, size_t count)
{
    struct user_row *rows = NULL;
    size_t total = 0, used = 0;

    for (size_t c = 0; c < count; c++)
        if (calls[c].status == 0)
            total += calls[c].status_reply->n_users;
    if ((rows = calloc(total + 1, sizeof(*rows))) == NULL)
        return CAIRN_ENOMEM;
    for (size_t c = 0; c < count; c++) {
        for (size_t u = 0;
             calls[c].status == 0 && u < calls[c].status_reply->n_users; u++) {
            const Cairn__UserStats *stats = calls[c].status_reply->users[u];

            /* A named user the node does not hold comes back empty. */
            if (stats->bytes_on_disk == 0)
                continue;
            rows[used].stats = stats;
            rows[used].node = calls[c].node;
            used++;
        }
    }
    qsort(rows, used, sizeof(*rows), compare_rows);
    if (context->json)
        fputs(",\"user_rows\":[", context->out);
    else
        fprintf(context->out, "\n%-24s %-12s %10s %10s %6s %9s %8s  %-20s %s\n",
                "USER", "NODE", "DISK", "RAW", "CHUNKS", "MAILBOXES",
                "MESSAGES", "LAST BACKUP (UTC)", "AGE");
    for (size_t i = 0; i < used; i++)
        print_user_row(context, config, &rows[i], i == 0);
    if (context->json)
        fputs("]", context->out);
    free(rows);
    return 0;
}

/*
 * Every user's rows, read in pages from the nodes asked and printed as
 * they come (user_walk.c): memory stays a page per node whatever the
 * number of users.
 */
static int
print_users_walk(struct cairn_ops_context *context,
                 const struct cairn_config *config,
                 const struct cairn_ops_node_call *calls, size_t count,
                 uint64_t timeout_ms)
{
    struct cairn_ops_user_walk *walk = NULL;
    const Cairn__UserStats *const *rows;
    size_t *nodes = calloc(count + 1, sizeof(*nodes)), printed = 0;
    const char *user;
    int rc;

    if (nodes == NULL)
        return CAIRN_ENOMEM;
    for (size_t c = 0; c < count; c++)
        nodes[c] = calls[c].node;
    if ((rc = cairn_ops_user_walk_new(config, nodes, count, timeout_ms,
                                      &walk)) < 0)
        goto out;
    if (context->json)
        fputs(",\"user_rows\":[", context->out);
    else
        fprintf(context->out, "\n%-24s %-12s %10s %10s %6s %9s %8s  %-20s %s\n",
                "USER", "NODE", "DISK", "RAW", "CHUNKS", "MAILBOXES",
                "MESSAGES", "LAST BACKUP (UTC)", "AGE");
    while ((rc = cairn_ops_user_walk_next(walk, &user, &rows)) > 0)
        for (size_t c = 0; c < count; c++) {
            struct user_row row = {rows[c], nodes[c]};

            if (rows[c] != NULL)
                print_user_row(context, config, &row, printed++ == 0);
        }
    if (context->json)
        fputs("]", context->out);
out:
    cairn_ops_user_walk_free(walk);
    free(nodes);
    return rc;
}

static void
print_totals(struct cairn_ops_context *context,
             const struct cairn_ops_node_call *calls, size_t count)
{
    uint64_t users = 0, bytes = 0, checked = 0, damaged = 0;
    uint64_t healed = 0, heal_failed = 0, no_source = 0, diverged = 0;
    size_t up = 0;

    for (size_t c = 0; c < count; c++) {
        if (calls[c].status != 0)
            continue;
        up++;
        users += calls[c].status_reply->node->users;
        bytes += calls[c].status_reply->node->bytes;
        checked += calls[c].status_reply->node->scrub_checked;
        damaged += calls[c].status_reply->node->scrub_damaged;
        healed += calls[c].status_reply->node->heal_ok;
        heal_failed += calls[c].status_reply->node->heal_failed;
        no_source += calls[c].status_reply->node->damaged_no_source;
        diverged += calls[c].status_reply->node->diverged;
    }
    if (context->json) {
        fprintf(context->out,
                "],\"total\":{\"nodes\":%zu,\"up\":%zu,\"down\":%zu,"
                "\"users\":%llu,\"bytes\":%llu,\"scrub_checked\":%llu,"
                "\"scrub_damaged\":%llu}",
                count, up, count - up, (unsigned long long)users,
                (unsigned long long)bytes, (unsigned long long)checked,
                (unsigned long long)damaged);
        return;
    }
    {
        char text[32];

        cairn_ops_format_bytes(bytes, text, sizeof(text));
        fprintf(context->out,
                "total: %zu node%s, %zu up, %zu down; %llu user replica%s, "
                "%s on disk\n",
                count, count == 1 ? "" : "s", up, count - up,
                (unsigned long long)users, users == 1 ? "" : "s", text);
        fprintf(context->out,
                "scrub: %llu of %llu user replicas checked within the "
                "interval, %llu damaged%s\n",
                (unsigned long long)checked, (unsigned long long)users,
                (unsigned long long)damaged,
                damaged ? " (quarantined; cairnctl repair USER heals)" : "");
        fprintf(context->out,
                "heal: %llu replica%s healed, %llu heal%s failed, %llu found "
                "with no good replica, %llu diverged (since each node "
                "started)\n",
                (unsigned long long)healed, healed == 1 ? "" : "s",
                (unsigned long long)heal_failed, heal_failed == 1 ? "" : "s",
                (unsigned long long)no_source, (unsigned long long)diverged);
        for (size_t c = 0; c < count; c++) {
            const Cairn__NodeStats *node;

            if (calls[c].status != 0)
                continue;
            node = calls[c].status_reply->node;
            for (size_t i = 0; i < node->n_damaged_users; i++)
                fprintf(context->out, "DAMAGED on %s: %s\n", node->node,
                        node->damaged_users[i]);
        }
    }
}

/* Fills the calls (one per node asked); *count of them. */
static int
plan_calls(struct cairn_ops_context *context, const struct cairn_config *config,
           const struct status_args *args, Cairn__UserRequest *ask,
           struct cairn_ops_node_call *calls, size_t *count)
{
    *count = 0;
    for (size_t i = 0; i < cairn_config_node_count(config); i++) {
        const struct cairn_config_node *node = cairn_config_node_at(config, i);

        if (args->node != NULL && strcmp(node->origin.name, args->node) != 0)
            continue;
        calls[*count].node = i;
        /* every user's rows come from the paged walk (print_users_walk) */
        calls[*count].kind = args->users && ask->n_users > 0
                                 ? CAIRN__KIND__STATS_REQUEST
                                 : CAIRN__KIND__STATUS_REQUEST;
        calls[*count].ask = ask->n_users > 0 ? ask : NULL;
        (*count)++;
    }
    if (*count == 0) {
        fprintf(context->err, "cairnctl status: no node called %s\n",
                args->node);
        return CAIRN_ENOENT;
    }
    return 0;
}

static int
run_status(struct cairn_ops_context *context, int argc, char **argv)
{
    Cairn__UserRequest ask = CAIRN__USER_REQUEST__INIT;
    struct cairn_config *config = NULL;
    struct cairn_ops_node_call *calls = NULL;
    struct cairn_ops_router_view *router = NULL;
    struct status_args args;
    uint64_t asked_ms, elapsed_ms;
    size_t count = 0;
    int status, rc;

    if ((status = parse_args(context, argc, argv, &args)) != 0)
        return status;
    if ((status = cairn_ops_load_config(context, NULL, &config)) != 0)
        return status;
    ask.users = argv + args.first;
    ask.n_users = (size_t)(argc - args.first);
    if ((calls = calloc(cairn_config_node_count(config) + 1, sizeof(*calls))) ==
        NULL) {
        status = CAIRN_EXIT_SOFTWARE;
        goto out;
    }
    if (plan_calls(context, config, &args, &ask, calls, &count) < 0) {
        status = CAIRN_EXIT_USAGE;
        goto out;
    }
    /* the router's view, asked now and read after the nodes */
    asked_ms = cairn_loop_now_ms();
    (void)cairn_ops_router_view_ask(cairn_config_router(config)->control,
                                    &router);
    if ((rc = cairn_ops_call_nodes(config, calls, count, args.timeout_ms)) <
        0) {
        fprintf(context->err, "cairnctl status: %s\n", cairn_strerror(rc));
        status = CAIRN_EXIT_SOFTWARE;
        goto out;
    }
    elapsed_ms = cairn_loop_now_ms() - asked_ms;
    cairn_ops_router_view_wait(router, elapsed_ms < args.timeout_ms
                                           ? args.timeout_ms - elapsed_ms
                                           : 0);
    if (context->json)
        fputs("{\"nodes\":[", context->out);
    else
        fprintf(context->out,
                "%-12s %-24s %-8s %6s %6s %10s %10s %5s %8s %-6s %s\n", "NODE",
                "ENDPOINT", "ZONE", "WEIGHT", "USERS", "DISK", "FREE", "EPOCH",
                "UPTIME", "ROUTER", "STATE");
    for (size_t c = 0; c < count; c++) {
        const struct cairn_config_node *node =
            cairn_config_node_at(config, calls[c].node);
        const Cairn__NodeHealth *seen =
            cairn_ops_router_view_node(router, node->origin.name);

        if (context->json) {
            if (c > 0)
                fputc(',', context->out);
            print_node_json(context->out, node, &calls[c], seen);
        } else {
            print_node_text(context->out, node, &calls[c], seen);
        }
        if (cairn_ops_unreachable(calls[c].status))
            status = CAIRN_EXIT_UNAVAILABLE;
        else if (calls[c].status != 0 && status == CAIRN_EXIT_OK)
            status = CAIRN_EXIT_PROBLEM;
    }
    print_totals(context, calls, count);
    cairn_ops_router_view_print(context->out, context->json, router);
    if (args.users &&
        (ask.n_users > 0 ? print_users(context, config, calls, count)
                         : print_users_walk(context, config, calls, count,
                                            args.timeout_ms)) < 0)
        status = CAIRN_EXIT_SOFTWARE;
    if (context->json)
        fputs("}\n", context->out);
out:
    cairn_ops_router_view_free(router);
    cairn_ops_node_calls_free(calls, count);
    cairn_config_free(config);
    return status;
}

const struct cairn_ops_command cairn_ops_cmd_status = {
    "status", run_status, "show every node's state and figures", usage};
