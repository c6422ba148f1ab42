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

static const char *
node_name(const struct cairn_config *config, size_t node)
{
    return cairn_config_node_at(config, node)->origin.name;
}

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
        cairn_ops_json_string(out, node_name(config, row->node));
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
            node_name(config, row->node), before, after, saved,
            row->code == 0 ? row->text : row_text(row));
}

static int
report(struct cairn_ops_context *context, const struct cairn_config *config,
       const struct cairn_ops_job *job)
{
    uint64_t before = 0, after = 0;
    size_t done = 0, failed = 0, down = 0, printed = 0;
    bool unsupported = false;
    int status = CAIRN_EXIT_OK;

    if (context->json)
        fputs("{\"rows\":[", context->out);
    else
        fprintf(context->out, "%-24s %-12s %10s %10s %10s  %s\n", "USER",
                "NODE", "BEFORE", "AFTER", "SAVED", "RESULT");
    for (size_t i = 0; i < job->row_count; i++) {
        const struct cairn_ops_user_row *row = &job->rows[i];

        if (absent(row))
            continue;
        print_row(context, config, job->users.names[row->user], row,
                  printed++ == 0);
        if (row->code == 0) {
            done++;
            before += row->bytes_before;
            after += row->bytes_after;
        } else if (cairn_ops_unreachable(row->code)) {
            down++;
        } else {
            failed++;
            unsupported |= row->code == CAIRN_ENOTSUP;
        }
    }
    if (context->json) {
        fprintf(context->out,
                "],\"summary\":{\"compacted\":%zu,\"failed\":%zu,"
                "\"unreachable\":%zu,\"bytes_before\":%llu,"
                "\"bytes_after\":%llu}}\n",
                done, failed, down, (unsigned long long)before,
                (unsigned long long)after);
    } else {
        char text_before[32], text_after[32];

        cairn_ops_format_bytes(before, text_before, sizeof(text_before));
        cairn_ops_format_bytes(after, text_after, sizeof(text_after));
        fprintf(context->out,
                "compact: %zu replica%s done (%s -> %s), %zu failed, "
                "%zu unreachable\n",
                done, done == 1 ? "" : "s", text_before, text_after, failed,
                down);
    }
    if (unsupported)
        fprintf(context->err, "cairnctl compact: some nodes answered ENOTSUP: "
                              "they do not compact on request\n");
    if (failed > 0)
        status = CAIRN_EXIT_PROBLEM;
    else if (down > 0)
        status = CAIRN_EXIT_UNAVAILABLE;
    for (size_t node = 0; node < cairn_config_node_count(config); node++) {
        if (job->node_status[node] >= 0)
            continue;
        fprintf(context->err, "cairnctl compact: node %s: %s\n",
                node_name(config, node),
                cairn_strerror(job->node_status[node]));
        if (status == CAIRN_EXIT_OK)
            status = CAIRN_EXIT_UNAVAILABLE;
    }
    return status;
}

static int
run_compact(struct cairn_ops_context *context, int argc, char **argv)
{
    struct cairn_ops_job job = {0};
    struct cairn_config *config = NULL;
    struct cairn_ring *rings[CAIRN_OPS_MAX_RINGS] = {0};
    size_t ring_count = 0;
    int status;

    job.kind = CAIRN__KIND__COMPACT_REQUEST;
    status = cairn_ops_job_command(context, &cairn_ops_cmd_compact, argc, argv,
                                   &job, &config, rings, &ring_count);
    if (status == CAIRN_EXIT_OK)
        status = report(context, config, &job);
    cairn_ops_job_release(&job);
    for (size_t i = 0; i < ring_count; i++)
        cairn_ring_free(rings[i]);
    cairn_config_free(config);
    return status;
}

const struct cairn_ops_command cairn_ops_cmd_compact = {
    "compact", run_compact, "compact users' backups on their nodes now", usage};
