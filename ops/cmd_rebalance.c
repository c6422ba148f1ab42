/*
 * cmd_rebalance.c - `cairnctl rebalance`: moves the users of a destination
 * onto a new ring (made with `cairnctl ring ... --commit`) without losing
 * a write; the work is in user_mover.c, this is its command line and its
 * summary.
 */
#include "ops.h"
#include "rebalance_int.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: cairnctl rebalance [--json] [-nq] [-g grace] [-o old-ring] "
    "[-p parallel]\n"
    "           [-r rate] -d destination new-ring\n"
    "\n"
    "Moves every user whose replica set differs between the destination's\n"
    "ring (-o, default its ring_file) and new-ring. Each new replica pulls\n"
    "the user from a current holder, node to node, while the user keeps\n"
    "writing; then the router holds the user's writes (retryable NO), the\n"
    "new replicas pull what was appended since and compare digests, and\n"
    "the router switches the user to the new ring (the longest hold is\n"
    "printed). Then the new ring is saved as the destination's ring_file\n"
    "and committed at the router; old copies are removed once the grace\n"
    "(-g, default 7d; 0 = at once) has passed since the user's switch, by\n"
    "this run or a later one. new-ring.journal records the progress: an\n"
    "interrupted run resumes, a finished one is not repeated.\n"
    "  -d, --destination  the destination whose ring changes\n"
    "  -g, --grace        keep old copies this long (30s, 2h, 7d)\n"
    "  -n, --dry-run      print the users that move, change nothing\n"
    "  -o, --old          the current ring file\n"
    "  -p, --parallel     users moving at once (default: 4 per node of\n"
    "                     the config)\n"
    "  -q, --quiet        no progress lines on stderr\n"
    "  -r, --rate         MiB/s read from one source node for bulk copies\n"
    "                     (one at a time per source; 64K, 2M, 0.5: MiB;\n"
    "                     default: no limit)\n"
    "Exit: 0 done, 1 a user failed to move (the rest moved; run again),\n"
    "64 usage, 66 a ring file missing, 69 a node or the router did not\n"
    "answer, 74 the journal or ring file could not be written.\n";

struct arguments {
    struct cairn_rebalance_options options;
    bool quiet;
};

/*
 * --rate: MiB per second as a number with up to three decimals ("50",
 * "0.5"), or a size per second with its suffix ("512K", "2M").
 */
static int
parse_rate(const char *text, uint64_t *rate)
{
    size_t len = strlen(text), dot = strcspn(text, ".");
    uint64_t whole = 0, fraction = 0, scale = 1;
    char digits[32];

    if (len == 0 || len >= sizeof(digits))
        return CAIRN_EINVAL;
    if (strchr("KkMmGgTt", text[len - 1]) != NULL)
        return cairn_parse_size(text, rate) < 0 || *rate == 0 ? CAIRN_EINVAL
                                                              : 0;
    memcpy(digits, text, dot);
    digits[dot] = '\0';
    if (cairn_parse_u64_str(digits, 0, 1u << 20, &whole) < 0)
        return CAIRN_EINVAL;
    if (dot < len) {
        const char *decimals = text + dot + 1;

        if (strlen(decimals) < 1 || strlen(decimals) > 3 ||
            cairn_parse_u64_str(decimals, 0, 999, &fraction) < 0)
            return CAIRN_EINVAL;
        for (size_t i = 0; i < strlen(decimals); i++)
            scale *= 10;
    }
    *rate = whole * 1048576 + fraction * 1048576 / scale;
    return *rate > 0 ? 0 : CAIRN_EINVAL;
}

static int
parse_arguments(struct cairn_ops_context *context, int argc, char **argv,
                struct arguments *args)
{
    static const struct option options[] = {
        {"destination", required_argument, NULL, 'd'},
        {"grace", required_argument, NULL, 'g'},
        {"dry-run", no_argument, NULL, 'n'},
        {"old", required_argument, NULL, 'o'},
        {"quiet", no_argument, NULL, 'q'},
        {"parallel", required_argument, NULL, 'p'},
        {"rate", required_argument, NULL, 'r'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    int option;

    args->options.grace_seconds = 7 * 24 * 3600;
    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, "d:g:no:p:qr:", options, NULL)) !=
           -1) {
        uint64_t parallel = 0;

        if (option == 'p') {
            if (cairn_parse_u64_str(optarg, 1, 1024, &parallel) < 0) {
                fprintf(context->err,
                        "cairnctl rebalance: bad --parallel %s (1..1024)\n",
                        optarg);
                return cairn_ops_usage(context, &cairn_ops_cmd_rebalance);
            }
            args->options.parallel = (size_t)parallel;
        } else if (option == 'r') {
            if (parse_rate(optarg, &args->options.rate) < 0) {
                fprintf(context->err,
                        "cairnctl rebalance: bad --rate %s (MiB/s, e.g. 50, "
                        "0.5 or 512K)\n",
                        optarg);
                return cairn_ops_usage(context, &cairn_ops_cmd_rebalance);
            }
        } else if (option == 'd') {
            args->options.destination = optarg;
        } else if (option == 'g') {
            if (cairn_parse_duration(optarg, &args->options.grace_seconds) <
                0) {
                fprintf(context->err, "cairnctl rebalance: bad grace %s\n",
                        optarg);
                return cairn_ops_usage(context, &cairn_ops_cmd_rebalance);
            }
        } else if (option == 'n') {
            args->options.dry_run = true;
        } else if (option == 'o') {
            args->options.old_ring_path = optarg;
        } else if (option == 'q') {
            args->quiet = true;
        } else if (option == 'j') {
            context->json = true;
        } else {
            return cairn_ops_usage(context, &cairn_ops_cmd_rebalance);
        }
    }
    if (args->options.destination == NULL || argc - optind != 1) {
        fprintf(context->err, "cairnctl rebalance: missing arguments\n");
        return cairn_ops_usage(context, &cairn_ops_cmd_rebalance);
    }
    args->options.new_ring_path = argv[optind];
    return CAIRN_EXIT_OK;
}

static void
print_report(struct cairn_ops_context *context,
             const struct cairn_rebalance_report *report)
{
    FILE *out = context->out;
    double rate = report->seconds > 0 ? (double)report->bytes_copied /
                                            1048576.0 / report->seconds
                                      : 0.0;

    if (context->json) {
        fprintf(out,
                "{\"users_moving\":%llu,\"users_switched\":%llu,"
                "\"users_retired\":%llu,\"users_failed\":%llu,"
                "\"users_waiting\":%llu,\"copies\":%llu,"
                "\"bytes_copied\":%llu,\"committed\":%s,\"seconds\":%.3f,"
                "\"longest_hold_ms\":%llu}\n",
                (unsigned long long)report->users_moving,
                (unsigned long long)report->users_switched,
                (unsigned long long)report->users_retired,
                (unsigned long long)report->users_failed,
                (unsigned long long)report->users_waiting,
                (unsigned long long)report->copies,
                (unsigned long long)report->bytes_copied,
                report->committed ? "true" : "false", report->seconds,
                (unsigned long long)report->longest_hold_ms);
        return;
    }
    fprintf(out,
            "users moving %llu, switched %llu, failed %llu; copies %llu "
            "(%llu bytes, %.2f MiB/s); old copies removed %llu, kept for "
            "the grace %llu; ring %s; %.2f s; %.1f users/s; longest hold "
            "%llu ms%s%s%s\n",
            (unsigned long long)report->users_moving,
            (unsigned long long)report->users_switched,
            (unsigned long long)report->users_failed,
            (unsigned long long)report->copies,
            (unsigned long long)report->bytes_copied, rate,
            (unsigned long long)report->users_retired,
            (unsigned long long)report->users_waiting,
            report->committed ? "committed" : "not committed", report->seconds,
            report->seconds > 0
                ? (double)report->users_switched / report->seconds
                : 0.0,
            (unsigned long long)report->longest_hold_ms,
            report->longest_hold_user[0] ? " (" : "", report->longest_hold_user,
            report->longest_hold_user[0] ? ")" : "");
}

static int
exit_code(int rc)
{
    switch (rc) {
    case 0:
        return CAIRN_EXIT_OK;
    case CAIRN_ESTATE:
    case CAIRN_EINVAL:
    case CAIRN_ECONFIG:
        return CAIRN_EXIT_PROBLEM;
    case CAIRN_ENOENT:
        return CAIRN_EXIT_NOINPUT;
    case CAIRN_EUNAVAILABLE:
    case CAIRN_ETIMEOUT:
        return CAIRN_EXIT_UNAVAILABLE;
    case CAIRN_EIO:
        return CAIRN_EXIT_IOERR;
    default:
        return CAIRN_EXIT_SOFTWARE;
    }
}

static int
run_rebalance(struct cairn_ops_context *context, int argc, char **argv)
{
    struct arguments args = {0};
    struct cairn_rebalance_report report;
    struct cairn_config *config = NULL;
    int status, rc;

    if ((status = parse_arguments(context, argc, argv, &args)) != 0)
        return status;
    if ((status = cairn_ops_load_config(context, NULL, &config)) != 0)
        return status;
    if (args.options.parallel == 0) /* four per node by default */
        args.options.parallel = 4 * cairn_config_node_count(config);
    args.options.out = context->out;
    args.options.progress = args.quiet ? NULL : context->err;
    rc = cairn_rebalance_run(config, &args.options, &report, context->err);
    if (!args.options.dry_run && (rc == 0 || rc == CAIRN_ESTATE))
        print_report(context, &report);
    cairn_config_free(config);
    return exit_code(rc);
}

const struct cairn_ops_command cairn_ops_cmd_rebalance = {
    "rebalance", run_rebalance, "move users onto a new ring", usage};
