/*
 * cmd_compact.c - `cairnctl compact`: has the nodes compact users now,
 * with each node's own [compaction] policy, and shows the bytes of each
 * user's data file before and after on every node.
 */
#include "cluster_int.h"

#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: cairnctl compact [--json] [-q] [-n node] [-r ring] ... "
    "[-t timeout]\n"
    "           [user ...]\n"
    "\n"
    "Has the nodes compact the users named (default: every user they hold)\n"
    "under their [compaction] policy and prints, per user and node, the data\n"
    "file's bytes before and after. Without -r every node is asked for\n"
    "named users (nodes that lack one are skipped); with -r ring-file only\n"
    "the user's replicas by placement.\n"
    "  -n, --node     only this node\n"
    "  -q, --quiet    no progress lines on stderr\n"
    "  -t, --timeout  per request of up to 32 users (default 10m)\n"
    "Exit: 0 done, 1 a user failed (busy, damaged, missing, or a node\n"
    "that does not compact on request), 69 a node did not answer, 64 usage.\n";

/* Whether the row is a node saying "I don't hold that user" when asked
   blindly: nothing to report. */
static bool
absent(const struct cairn_ops_user_row *row)
{
    return row->code == CAIRN_ENOENT && !row->expected;
}

static const char *
row_text(const struct cairn_ops_user_row *row)
{
    if (row->code == CAIRN_ENOTSUP)
        return "this node does not compact on request (ENOTSUP)";
    if (row->code == CAIRN_ENOENT)
        return "missing (placement puts the user here)";
    if (row->text[0] != '\0')
        return row->text;
    return row->code < 0 ? cairn_strerror(row->code) : "";
}

static void
print_row(struct cairn_ops_context *context, const struct cairn_config *config,
          const char *user, const struct cairn_ops_user_row *row, bool first)
{
    FILE *out = context->out;
    char before[32] = "-", after[32] = "-", saved[32] = "-";

    if (context->json) {
        fputs(first ? "{\"user\":" : ",{\"user\":", out);
        cairn_ops_json_string(out, user);
        fputs(",\"node\":", out);
        cairn_ops_json_string(out, cairn_ops_node_name(config, row->node));
        fprintf(out,
                ",\"ok\":%s,\"code\":%d,\"bytes_before\":%llu,"
                "\"bytes_after\":%llu,\"text\":",
                row->code == 0 ? "true" : "false", row->code,
                (unsigned long long)row->bytes_before,
                (unsigned long long)row->bytes_after);
        cairn_ops_json_string(out, row_text(row));
        fputs("}", out);
        return;
    }
    if (row->code == 0) {
        cairn_ops_format_bytes(row->bytes_before, before, sizeof(before));
        cairn_ops_format_bytes(row->bytes_after, after, sizeof(after));
        if (row->bytes_before >= row->bytes_after)
            cairn_ops_format_bytes(row->bytes_before - row->bytes_after, saved,
                                   sizeof(saved));
    }
    fprintf(out, "%-24s %-12s %10s %10s %10s  %s\n", user,
            cairn_ops_node_name(config, row->node), before, after, saved,
            row->code == 0 ? row->text : row_text(row));
}

/* What the batches add up to. */
struct compact_report {
    struct cairn_ops_context *context;
    uint64_t before, after;
    size_t done, failed, down, printed;
    bool unsupported;
    bool opened; /* the header or the JSON array is out */
};

static void
open_report(struct compact_report *report)
{
    if (report->opened)
        return;
    report->opened = true;
    if (report->context->json)
        fputs("{\"rows\":[", report->context->out);
    else
        fprintf(report->context->out, "%-24s %-12s %10s %10s %10s  %s\n",
                "USER", "NODE", "BEFORE", "AFTER", "SAVED", "RESULT");
}

/* One batch: a row per user and node, printed as it comes. */
static int
report_batch(void *ctx, const struct cairn_ops_job *job, size_t first,
             size_t end)
{
    struct compact_report *report = ctx;

    (void)first;
    (void)end;
    open_report(report);
    for (size_t i = 0; i < job->row_count; i++) {
        const struct cairn_ops_user_row *row = &job->rows[i];

        if (absent(row))
            continue;
        print_row(report->context, job->config, job->users.names[row->user],
                  row, report->printed++ == 0);
        if (row->code == 0) {
            report->done++;
            report->before += row->bytes_before;
            report->after += row->bytes_after;
        } else if (cairn_ops_unreachable(row->code)) {
            report->down++;
        } else {
            report->failed++;
            report->unsupported |= row->code == CAIRN_ENOTSUP;
        }
    }
    return 0;
}

/* The summary line and the exit code. */
static int
finish(const struct cairn_ops_job *job)
{
    struct compact_report *report = job->report_ctx;
    struct cairn_ops_context *context = report->context;
    int status = CAIRN_EXIT_OK;

    open_report(report);
    if (context->json) {
        fprintf(context->out,
                "],\"summary\":{\"compacted\":%zu,\"failed\":%zu,"
                "\"unreachable\":%zu,\"bytes_before\":%llu,"
                "\"bytes_after\":%llu}}\n",
                report->done, report->failed, report->down,
                (unsigned long long)report->before,
                (unsigned long long)report->after);
    } else {
        char before[32], after[32];

        cairn_ops_format_bytes(report->before, before, sizeof(before));
        cairn_ops_format_bytes(report->after, after, sizeof(after));
        fprintf(context->out,
                "compact: %zu replica%s done (%s -> %s), %zu failed, "
                "%zu unreachable\n",
                report->done, report->done == 1 ? "" : "s", before, after,
                report->failed, report->down);
    }
    if (report->unsupported)
        fprintf(context->err, "cairnctl compact: some nodes answered ENOTSUP: "
                              "they do not compact on request\n");
    if (report->failed > 0)
        status = CAIRN_EXIT_PROBLEM;
    else if (report->down > 0)
        status = CAIRN_EXIT_UNAVAILABLE;
    return cairn_ops_job_node_failures(context->err, "compact", job, status);
}

static int
run_compact(struct cairn_ops_context *context, int argc, char **argv)
{
    struct cairn_ops_job job = {0};
    struct compact_report report = {0};

    report.context = context;
    job.kind = CAIRN__KIND__COMPACT_REQUEST;
    job.report = report_batch;
    job.report_ctx = &report;
    return cairn_ops_job_main(context, &cairn_ops_cmd_compact, argc, argv, &job,
                              finish);
}

const struct cairn_ops_command cairn_ops_cmd_compact = {
    "compact", run_compact, "compact users' backups on their nodes now", usage};
