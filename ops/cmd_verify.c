/*
 * cmd_verify.c - `cairnctl verify`: has every node holding a user check
 * that user's backup (checksums, links, with --full message GUIDs) and
 * compares the digests of the user's state that the replicas return, so
 * the admin sees both a damaged replica and replicas that disagree.
 */
#include "cluster_int.h"

#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: cairnctl verify [--json] [-fq] [-n node] [-r ring] ... [-t "
    "timeout]\n"
    "           [user ...]\n"
    "\n"
    "Has the nodes verify the users named (default: every user they hold)\n"
    "and checks that all replicas of each user agree (same state digest).\n"
    "Without -r every node is asked; with -r ring-file (once per\n"
    "destination) only the user's replicas by placement, and a replica\n"
    "that lacks the user is a failure.\n"
    "  -f, --full     also check every message body against its GUID\n"
    "  -n, --node     only this node\n"
    "  -q, --quiet    no progress lines on stderr\n"
    "  -t, --timeout  per request of up to 32 users (default 10m)\n"
    "Verdicts: ok, FAILED (a replica failed or is missing), DIFFER (the\n"
    "replicas' digests differ), NOT-FOUND (no node holds the user),\n"
    "UNCHECKED (a replica did not answer; the others are fine).\n"
    "Exit: 0 all ok, 1 a user FAILED, DIFFER or NOT-FOUND, 69 a node did\n"
    "not answer (and nothing failed), 64 usage, 66 ring file missing.\n";

enum verdict {
    VERDICT_OK,
    VERDICT_UNCHECKED,
    VERDICT_DIFFER,
    VERDICT_FAILED,
    VERDICT_NOT_FOUND,
};

static const char *const verdict_names[] = {"ok", "UNCHECKED", "DIFFER",
                                            "FAILED", "NOT-FOUND"};

/* How one replica stands. */
enum replica_state { REPLICA_OK, REPLICA_ABSENT, REPLICA_DOWN, REPLICA_BAD };

static enum replica_state
replica_state(const struct cairn_ops_user_row *row)
{
    if (row->code == 0)
        return REPLICA_OK;
    /* Asked only because we did not know where the user lives. */
    if (row->code == CAIRN_ENOENT && !row->expected)
        return REPLICA_ABSENT;
    if (cairn_ops_unreachable(row->code))
        return REPLICA_DOWN;
    return REPLICA_BAD;
}

static enum verdict
judge(const struct cairn_ops_user_row *rows, size_t count)
{
    const char *digest = NULL;
    size_t ok = 0, down = 0, bad = 0;
    bool differ = false;

    for (size_t i = 0; i < count; i++) {
        switch (replica_state(&rows[i])) {
        case REPLICA_OK:
            ok++;
            if (digest != NULL && strcmp(digest, rows[i].digest) != 0)
                differ = true;
            digest = rows[i].digest;
            break;
        case REPLICA_DOWN:
            down++;
            break;
        case REPLICA_BAD:
            bad++;
            break;
        case REPLICA_ABSENT:
            break;
        }
    }
    if (bad > 0)
        return VERDICT_FAILED;
    if (differ)
        return VERDICT_DIFFER;
    if (down > 0)
        return VERDICT_UNCHECKED;
    return ok > 0 ? VERDICT_OK : VERDICT_NOT_FOUND;
}

static void
print_text(FILE *out, const struct cairn_config *config, const char *user,
           enum verdict verdict, const struct cairn_ops_user_row *rows,
           size_t count)
{
    bool first = true;

    fprintf(out, "%-24s %-9s", user, verdict_names[verdict]);
    for (size_t i = 0; i < count; i++) {
        const struct cairn_ops_user_row *row = &rows[i];
        enum replica_state state = replica_state(row);

        if (state == REPLICA_ABSENT)
            continue;
        fprintf(out, "%s%s ", first ? " " : ", ",
                cairn_ops_node_name(config, row->node));
        first = false;
        if (state == REPLICA_OK)
            fprintf(out, "%.12s", row->digest);
        else if (row->code == CAIRN_ENOENT)
            fputs("missing (placement puts the user here)", out);
        else
            fprintf(out, "%s",
                    row->text[0] ? row->text : cairn_strerror(row->code));
    }
    fputc('\n', out);
}

static void
print_json(FILE *out, const struct cairn_config *config, const char *user,
           enum verdict verdict, const struct cairn_ops_user_row *rows,
           size_t count, bool first_user)
{
    bool first = true;

    fputs(first_user ? "{\"user\":" : ",{\"user\":", out);
    cairn_ops_json_string(out, user);
    fputs(",\"verdict\":", out);
    cairn_ops_json_string(out, verdict_names[verdict]);
    fputs(",\"replicas\":[", out);
    for (size_t i = 0; i < count; i++) {
        const struct cairn_ops_user_row *row = &rows[i];

        if (replica_state(row) == REPLICA_ABSENT)
            continue;
        fputs(first ? "{\"node\":" : ",{\"node\":", out);
        first = false;
        cairn_ops_json_string(out, cairn_ops_node_name(config, row->node));
        fprintf(out, ",\"ok\":%s,\"code\":%d,\"expected\":%s,\"text\":",
                row->code == 0 ? "true" : "false", row->code,
                row->expected ? "true" : "false");
        cairn_ops_json_string(out, row->text);
        fputs(",\"digest\":", out);
        if (row->code == 0)
            cairn_ops_json_string(out, row->digest);
        else
            fputs("null", out);
        fputs("}", out);
    }
    fputs("]}", out);
}

/* What the batches add up to. */
struct verify_report {
    struct cairn_ops_context *context;
    size_t counts[VERDICT_NOT_FOUND + 1];
    size_t printed;
    bool opened; /* the JSON array is open */
};

static void
open_report(struct verify_report *report)
{
    if (report->context->json && !report->opened)
        fputs("{\"users\":[", report->context->out);
    report->opened = true;
}

/* One batch: a verdict per user, printed as it comes. */
static int
report_batch(void *ctx, const struct cairn_ops_job *job, size_t first_user,
             size_t end_user)
{
    struct verify_report *report = ctx;
    struct cairn_ops_context *context = report->context;
    size_t row = 0;

    open_report(report);
    for (size_t user = first_user; user < end_user; user++) {
        size_t first = row;
        enum verdict verdict;

        while (row < job->row_count && job->rows[row].user == user)
            row++;
        verdict = judge(&job->rows[first], row - first);
        report->counts[verdict]++;
        if (context->json)
            print_json(context->out, job->config, job->users.names[user],
                       verdict, &job->rows[first], row - first,
                       report->printed == 0);
        else
            print_text(context->out, job->config, job->users.names[user],
                       verdict, &job->rows[first], row - first);
        report->printed++;
    }
    return 0;
}

/* The summary line and the exit code. */
static int
finish(const struct cairn_ops_job *job)
{
    struct verify_report *report = job->report_ctx;
    struct cairn_ops_context *context = report->context;
    const size_t *counts = report->counts;
    size_t problems = counts[VERDICT_FAILED] + counts[VERDICT_DIFFER] +
                      counts[VERDICT_NOT_FOUND];
    int status = CAIRN_EXIT_OK;

    open_report(report);
    if (context->json)
        fprintf(context->out,
                "],\"summary\":{\"users\":%zu,\"ok\":%zu,\"failed\":%zu,"
                "\"differ\":%zu,\"not_found\":%zu,\"unchecked\":%zu}}\n",
                report->printed, counts[VERDICT_OK], counts[VERDICT_FAILED],
                counts[VERDICT_DIFFER], counts[VERDICT_NOT_FOUND],
                counts[VERDICT_UNCHECKED]);
    else
        fprintf(context->out,
                "verify: %zu user%s: %zu ok, %zu failed, %zu differ, "
                "%zu not found, %zu unchecked\n",
                report->printed, report->printed == 1 ? "" : "s",
                counts[VERDICT_OK], counts[VERDICT_FAILED],
                counts[VERDICT_DIFFER], counts[VERDICT_NOT_FOUND],
                counts[VERDICT_UNCHECKED]);
    if (problems > 0)
        status = CAIRN_EXIT_PROBLEM;
    else if (counts[VERDICT_UNCHECKED] > 0)
        status = CAIRN_EXIT_UNAVAILABLE;
    return cairn_ops_job_node_failures(context->err, "verify", job, status);
}

static int
run_verify(struct cairn_ops_context *context, int argc, char **argv)
{
    struct cairn_ops_job job = {0};
    struct verify_report report = {0};

    report.context = context;
    job.kind = CAIRN__KIND__VERIFY_REQUEST;
    job.report = report_batch;
    job.report_ctx = &report;
    return cairn_ops_job_main(context, &cairn_ops_cmd_verify, argc, argv, &job,
                              finish);
}

const struct cairn_ops_command cairn_ops_cmd_verify = {
    "verify", run_verify, "verify users' backups and compare replicas", usage};
