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
    "-d destination\n"
    "           new-ring\n"
    "\n"
    "Moves every user whose replica set differs between the destination's\n"
    "ring (-o, default its ring_file) and new-ring: the router holds the\n"
    "user's writes (retryable NO), the new replicas get a verified copy of\n"
    "the user from a current holder, the router switches the user to the\n"
    "new ring. Then the new ring is saved as the destination's ring_file\n"
    "and committed at the router; old copies are removed once the grace\n"
    "(-g, default 7d; 0 = at once) has passed since the user's switch, by\n"
    "this run or a later one. new-ring.journal records the progress: an\n"
    "interrupted run resumes, a finished one is not repeated.\n"
    "  -d, --destination  the destination whose ring changes\n"
    "  -g, --grace        keep old copies this long (30s, 2h, 7d)\n"
    "  -n, --dry-run      print the users that move, change nothing\n"
    "  -o, --old          the current ring file\n"
    "  -q, --quiet        no progress lines on stderr\n"
    "Exit: 0 done, 1 a user failed to move (the rest moved; run again),\n"
    "64 usage, 66 a ring file missing, 69 a node or the router did not\n"
    "answer, 74 the journal or ring file could not be written.\n";

struct arguments {
    struct cairn_rebalance_options options;
    bool quiet;
};

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
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    int option;

    args->options.grace_seconds = 7 * 24 * 3600;
    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, "d:g:no:q", options, NULL)) !=
           -1) {
        if (option == 'd') {
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
                "\"bytes_copied\":%llu,\"committed\":%s,\"seconds\":%.3f}\n",
                (unsigned long long)report->users_moving,
                (unsigned long long)report->users_switched,
                (unsigned long long)report->users_retired,
                (unsigned long long)report->users_failed,
                (unsigned long long)report->users_waiting,
                (unsigned long long)report->copies,
                (unsigned long long)report->bytes_copied,
                report->committed ? "true" : "false", report->seconds);
        return;
    }
    fprintf(out,
            "users moving %llu, switched %llu, failed %llu; copies %llu "
            "(%llu bytes, %.2f MiB/s); old copies removed %llu, kept for "
            "the grace %llu; ring %s; %.2f s\n",
            (unsigned long long)report->users_moving,
            (unsigned long long)report->users_switched,
            (unsigned long long)report->users_failed,
            (unsigned long long)report->copies,
            (unsigned long long)report->bytes_copied, rate,
            (unsigned long long)report->users_retired,
            (unsigned long long)report->users_waiting,
            report->committed ? "committed" : "not committed", report->seconds);
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
