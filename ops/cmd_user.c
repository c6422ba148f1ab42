/*
 * cmd_user.c - `cairnctl user list|show|dump`: where users live and what
 * their backups hold. list and show ask the nodes (show also reads the
 * user's mailboxes from one replica with the same GET requests the
 * router sends); dump prints a user's log from a node's data directory
 * offline, with message bodies left out, to inspect a backup by eye.
 */
#include "cluster_int.h"
#include "node.h"
#include "node_client.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* Largest printed dlist of one item or log line. */
#define MAX_ITEM_TEXT (64u * 1024 * 1024)
/* "<ts> APPLY " before each log line's dlist, or a "#" comment line. */
#define MAX_LINE_PREFIX 256
#define READ_SIZE 65536

static const char usage[] =
    "usage: cairnctl user list [--json] [-n node] [-t timeout]\n"
    "       cairnctl user show [--json] [-r ring] ... [-t timeout] user\n"
    "       cairnctl user dump -d data-dir user\n"
    "       cairnctl user dump message [-d data-dir] user guid > file.eml\n"
    "       cairnctl user history [-d data-dir] [--mailbox name] user\n"
    "\n"
    "list: every user the nodes hold (-n: one node), with the nodes holding\n"
    "      it, messages, bytes on disk and the last backup (UTC) and age\n"
    "show: where user lives by placement (-r ring files; default: the\n"
    "      destinations' ring files that exist) and on each node, its\n"
    "      figures there, and its mailboxes with message counts (read from\n"
    "      the first replica that answers)\n"
    "dump: print the user's log lines from a node's data directory\n"
    "      (data-dir/catalog.db), message bodies left out; read-only, no\n"
    "      node needed\n"
    "dump message: one message's raw bytes, checked against its GUID (see\n"
    "      cairnctl user dump message --help)\n"
    "history: the points in time the user can be restored to (restore\n"
    "      --as-of) and what changed between them (see user history --help)\n"
    "Exit: 0 found, 1 user not found / damaged log, 69 a node did not\n"
    "answer, 64 usage, 66 no such data directory or user file.\n";

struct user_args {
    const char *node;
    const char *data_dir;
    const char *rings[CAIRN_OPS_MAX_RINGS];
    size_t ring_count;
    uint64_t timeout_ms;
    int first;
};

static int
parse_args(struct cairn_ops_context *context, int argc, char **argv,
           struct user_args *args)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"node", required_argument, NULL, 'n'},
        {"ring", required_argument, NULL, 'r'},
        {"timeout", required_argument, NULL, 't'},
        {"data-dir", required_argument, NULL, 'd'},
        {NULL, 0, NULL, 0},
    };
    int option, rc = 0;

    memset(args, 0, sizeof(*args));
    args->timeout_ms = CAIRN_OPS_STATUS_TIMEOUT_MS;
    optind = 0;
    opterr = 0;
    while (rc == 0 && (option = getopt_long(argc, argv, "n:r:t:d:", options,
                                            NULL)) != -1) {
        switch (option) {
        case 'j':
            context->json = true;
            break;
        case 'n':
            args->node = optarg;
            break;
        case 'd':
            args->data_dir = optarg;
            break;
        case 'r':
            if (args->ring_count == CAIRN_OPS_MAX_RINGS)
                rc = CAIRN_ETOOBIG;
            else
                args->rings[args->ring_count++] = optarg;
            break;
        case 't':
            rc = cairn_ops_parse_timeout(optarg, &args->timeout_ms);
            break;
        default:
            rc = CAIRN_EINVAL;
        }
    }
    if (rc < 0) {
        fprintf(context->err, "cairnctl user: bad option or value\n");
        return cairn_ops_usage(context, &cairn_ops_cmd_user);
    }
    args->first = optind;
    return CAIRN_EXIT_OK;
}

/* STATS from every node (or one), users named in ask (NULL: all). */
static int
ask_nodes(struct cairn_ops_context *context, const struct cairn_config *config,
          const struct user_args *args, const Cairn__UserRequest *ask,
          struct cairn_ops_node_call *calls, size_t *count)
{
    int rc;

    *count = 0;
    for (size_t i = 0; i < cairn_config_node_count(config); i++) {
        if (args->node != NULL &&
            strcmp(cairn_ops_node_name(config, i), args->node) != 0)
            continue;
        calls[*count].node = i;
        calls[*count].kind = CAIRN__KIND__STATS_REQUEST;
        calls[*count].ask = ask;
        (*count)++;
    }
    if (*count == 0) {
        fprintf(context->err, "cairnctl user: no node called %s\n", args->node);
        return CAIRN_ENOENT;
    }
    if ((rc = cairn_ops_call_nodes(config, calls, *count, args->timeout_ms)) <
        0)
        return rc;
    for (size_t c = 0; c < *count; c++)
        if (calls[c].status < 0)
            fprintf(context->err, "cairnctl user: node %s: %s\n",
                    cairn_ops_node_name(config, calls[c].node),
                    calls[c].error_text);
    return 0;
}

/* --- list -------------------------------------------------------------------
 */

/* One user over all nodes. */
struct user_summary {
    const char *user;
    char nodes[512];
    uint64_t messages, bytes;
    int64_t last_backup;
};

static void
print_summary(struct cairn_ops_context *context,
              const struct user_summary *summary, bool first)
{
    char bytes[32], when[32], age[32] = "-";

    cairn_ops_format_time(summary->last_backup, when, sizeof(when));
    if (context->json) {
        fputs(first ? "{\"user\":" : ",{\"user\":", context->out);
        cairn_ops_json_string(context->out, summary->user);
        fputs(",\"nodes\":", context->out);
        cairn_ops_json_string(context->out, summary->nodes);
        fprintf(context->out,
                ",\"messages\":%llu,\"bytes_on_disk\":%llu,"
                "\"last_backup_time\":%lld}",
                (unsigned long long)summary->messages,
                (unsigned long long)summary->bytes,
                (long long)summary->last_backup);
        return;
    }
    if (summary->last_backup > 0)
        cairn_ops_format_age((int64_t)time(NULL) - summary->last_backup, age,
                             sizeof(age));
    cairn_ops_format_bytes(summary->bytes, bytes, sizeof(bytes));
    fprintf(context->out, "%-24s %-24s %8llu %10s  %-20s %s\n", summary->user,
            summary->nodes, (unsigned long long)summary->messages, bytes, when,
            age);
}

/* One user's rows over the nodes folded into its summary. */
static void
summarise(const struct cairn_config *config,
          const struct cairn_ops_user_walk *walk, size_t count,
          const char *user, const Cairn__UserStats *const *rows,
          struct user_summary *summary)
{
    memset(summary, 0, sizeof(*summary));
    summary->user = user;
    for (size_t c = 0; c < count; c++) {
        size_t len = strlen(summary->nodes);

        if (rows[c] == NULL)
            continue;
        snprintf(
            summary->nodes + len, sizeof(summary->nodes) - len, "%s%s",
            len ? "," : "",
            cairn_ops_node_name(config, cairn_ops_user_walk_node(walk, c)));
        if (rows[c]->messages > summary->messages)
            summary->messages = rows[c]->messages;
        if (rows[c]->bytes_on_disk > summary->bytes)
            summary->bytes = rows[c]->bytes_on_disk;
        if (rows[c]->last_backup_time > summary->last_backup)
            summary->last_backup = rows[c]->last_backup_time;
    }
}

/*
 * Every user the nodes hold (or -n's), read in pages and printed as they
 * come (user_walk.c): memory stays a page per node however many users.
 */
static int
list_users(struct cairn_ops_context *context, const struct cairn_config *config,
           const struct user_args *args)
{
    struct cairn_ops_user_walk *walk = NULL;
    const Cairn__UserStats *const *rows;
    size_t *nodes = NULL, count = 0, listed = 0;
    const char *user, *error;
    int status = CAIRN_EXIT_OK, rc;

    if ((nodes = calloc(cairn_config_node_count(config) + 1, sizeof(*nodes))) ==
        NULL)
        return CAIRN_EXIT_SOFTWARE;
    for (size_t i = 0; i < cairn_config_node_count(config); i++)
        if (args->node == NULL ||
            strcmp(cairn_ops_node_name(config, i), args->node) == 0)
            nodes[count++] = i;
    if (count == 0) {
        fprintf(context->err, "cairnctl user: no node called %s\n", args->node);
        free(nodes);
        return CAIRN_EXIT_USAGE;
    }
    if (cairn_ops_user_walk_new(config, nodes, count, args->timeout_ms, &walk) <
        0) {
        free(nodes);
        return CAIRN_EXIT_SOFTWARE;
    }
    if (context->json)
        fputs("{\"users\":[", context->out);
    else
        fprintf(context->out, "%-24s %-24s %8s %10s  %-20s %s\n", "USER",
                "NODES", "MESSAGES", "DISK", "LAST BACKUP (UTC)", "AGE");
    while ((rc = cairn_ops_user_walk_next(walk, &user, &rows)) > 0) {
        struct user_summary summary;

        summarise(config, walk, count, user, rows, &summary);
        print_summary(context, &summary, listed++ == 0);
    }
    if (context->json)
        fprintf(context->out, "],\"count\":%zu}\n", listed);
    else
        fprintf(context->out, "%zu user%s\n", listed, listed == 1 ? "" : "s");
    if (rc < 0)
        status = CAIRN_EXIT_SOFTWARE;
    for (size_t c = 0; c < count; c++) {
        int node_status = cairn_ops_user_walk_status(walk, c, &error);

        if (node_status == 0)
            continue;
        fprintf(context->err, "cairnctl user: node %s: %s\n",
                cairn_ops_node_name(config, nodes[c]), error);
        if (cairn_ops_unreachable(node_status))
            status = CAIRN_EXIT_UNAVAILABLE;
        else if (status == CAIRN_EXIT_OK)
            status = CAIRN_EXIT_PROBLEM;
    }
    cairn_ops_user_walk_free(walk);
    free(nodes);
    return status;
}

/* --- show -------------------------------------------------------------------
 */

/*
 * One GET to the node at endpoint; the reply's frames are the items.
 * *result is owned by the caller (cairn_node_result_release).
 */
static int
get_state(const char *endpoint, const char *user, const char *key,
          const struct cairn_dlist *what, uint64_t timeout_ms,
          struct cairn_node_result *result)
{
    struct cairn_node_request request = {0};
    struct cairn_node_frame frame;
    struct cairn_buf text;
    int rc;

    cairn_buf_init(&text, MAX_ITEM_TEXT);
    if ((rc = cairn_dlist_print(what, true, &text, NULL)) < 0)
        goto out;
    frame.data = text.data;
    frame.len = text.len;
    request.kind = CAIRN__KIND__STATE_REQUEST;
    request.user = user;
    request.destination = ""; /* see cluster.c: NULL crashes the client */
    request.verb = "GET";
    request.key = key;
    request.frames = &frame;
    request.frame_count = 1;
    rc = cairn_node_client_call(endpoint, &request, timeout_ms, result);
out:
    cairn_buf_release(&text);
    return rc;
}

/* Records of a FULLMAILBOX item that are not expunged, and their bytes. */
static void
count_records(const struct cairn_dlist *mailbox, uint64_t *messages,
              uint64_t *bytes)
{
    const struct cairn_dlist *records = NULL;

    *messages = *bytes = 0;
    if (!cairn_dlist_get_list(mailbox, "RECORD", &records) || records == NULL)
        return;
    for (const struct cairn_dlist *record = cairn_dlist_first(records);
         record != NULL; record = cairn_dlist_next(record)) {
        const struct cairn_dlist *flags = NULL;
        uint64_t size = 0;
        bool expunged = false;

        if (cairn_dlist_get_list(record, "FLAGS", &flags) && flags != NULL)
            for (const struct cairn_dlist *flag = cairn_dlist_first(flags);
                 flag != NULL; flag = cairn_dlist_next(flag)) {
                const char *name = NULL;

                expunged |= cairn_dlist_as_atom(flag, &name) && name &&
                            strcmp(name, "\\Expunged") == 0;
            }
        if (expunged)
            continue;
        (*messages)++;
        if (cairn_dlist_get_num64(record, "SIZE", &size))
            *bytes += size;
    }
}

/* Prints one mailbox with its message count, from GET FULLMAILBOX. */
static int
show_mailbox(struct cairn_ops_context *context, const char *endpoint,
             const char *user, const char *mboxname, uint64_t timeout_ms,
             bool first)
{
    struct cairn_node_result result = {0};
    struct cairn_dlist *what = NULL, *item = NULL;
    uint64_t messages = 0, bytes = 0;
    char size[32];
    int rc;

    if ((what = cairn_dlist_new_atom("FULLMAILBOX", mboxname)) == NULL)
        return CAIRN_ENOMEM;
    if ((rc = get_state(endpoint, user, "FULLMAILBOX", what, timeout_ms,
                        &result)) < 0)
        goto out;
    if (result.frame_count > 0 &&
        (rc = cairn_dlist_parse(result.frames[0].data, result.frames[0].len,
                                CAIRN_DLIST_PARSE_KEY, NULL, NULL, &item, NULL,
                                0)) < 0)
        goto out;
    if (item != NULL)
        count_records(item, &messages, &bytes);
    if (context->json) {
        fputs(first ? "{\"name\":" : ",{\"name\":", context->out);
        cairn_ops_json_string(context->out, mboxname);
        fprintf(context->out, ",\"messages\":%llu,\"bytes\":%llu}",
                (unsigned long long)messages, (unsigned long long)bytes);
    } else {
        cairn_ops_format_bytes(bytes, size, sizeof(size));
        fprintf(context->out, "  %-40s %8llu %10s\n", mboxname,
                (unsigned long long)messages, size);
    }
out:
    cairn_dlist_free(item);
    cairn_dlist_free(what);
    cairn_node_result_release(&result);
    return rc;
}

/*
 * The user's mailboxes, from a GET USER reply of the node at endpoint,
 * each with its messages (one GET FULLMAILBOX each).
 */
static int
show_mailboxes(struct cairn_ops_context *context, const char *endpoint,
               const char *user, const struct cairn_node_result *reply,
               uint64_t timeout_ms)
{
    size_t shown = 0;
    int rc = 0;

    for (size_t i = 0; i < reply->frame_count && rc == 0; i++) {
        struct cairn_dlist *item = NULL;
        const char *mboxname = NULL;

        if (cairn_dlist_parse(reply->frames[i].data, reply->frames[i].len,
                              CAIRN_DLIST_PARSE_KEY, NULL, NULL, &item, NULL,
                              0) == 0 &&
            strcmp(cairn_dlist_name(item), "MAILBOX") == 0 &&
            cairn_dlist_get_atom(item, "MBOXNAME", &mboxname) && mboxname)
            rc = show_mailbox(context, endpoint, user, mboxname, timeout_ms,
                              shown++ == 0);
        cairn_dlist_free(item);
    }
    return rc;
}

/*
 * Mailboxes from the first of the holders (config indices) that answers
 * GET USER, so one damaged or silent replica does not hide them.
 */
static int
show_holder_mailboxes(struct cairn_ops_context *context,
                      const struct cairn_config *config, const char *user,
                      const size_t *holders, size_t holder_count,
                      uint64_t timeout_ms)
{
    struct cairn_dlist *what = NULL;
    int rc = CAIRN_ENOENT;

    if ((what = cairn_dlist_new_atom("USER", user)) == NULL)
        return CAIRN_ENOMEM;
    for (size_t h = 0; h < holder_count && rc < 0; h++) {
        const char *endpoint =
            cairn_config_node_at(config, holders[h])->endpoint;
        struct cairn_node_result reply = {0};

        rc = get_state(endpoint, user, "USER", what, timeout_ms, &reply);
        if (rc < 0) {
            fprintf(context->err, "cairnctl user: mailboxes from %s: %s\n",
                    cairn_ops_node_name(config, holders[h]),
                    cairn_strerror(rc));
        } else {
            if (!context->json)
                fprintf(context->out, "mailboxes (from %s):\n",
                        cairn_ops_node_name(config, holders[h]));
            rc = show_mailboxes(context, endpoint, user, &reply, timeout_ms);
        }
        cairn_node_result_release(&reply);
    }
    cairn_dlist_free(what);
    return rc;
}

/* Where placement puts user, per ring. */
static void
show_placement(struct cairn_ops_context *context, const char *user,
               struct cairn_ring *const *rings, size_t ring_count)
{
    if (context->json)
        fputs(",\"placement\":[", context->out);
    for (size_t r = 0; r < ring_count; r++) {
        uint16_t replicas[CAIRN_RING_MAX_REPLICAS];
        unsigned count = cairn_ring_replicas(rings[r]);

        cairn_ring_lookup(rings[r], user, strlen(user), replicas);
        if (context->json) {
            fputs(r ? ",{\"destination\":" : "{\"destination\":", context->out);
            cairn_ops_json_string(context->out,
                                  cairn_ring_destination(rings[r]));
            fprintf(context->out, ",\"epoch\":%llu,\"nodes\":[",
                    (unsigned long long)cairn_ring_epoch(rings[r]));
        } else {
            fprintf(context->out,
                    "placement: destination %s (ring epoch %llu):",
                    cairn_ring_destination(rings[r]),
                    (unsigned long long)cairn_ring_epoch(rings[r]));
        }
        for (unsigned i = 0; i < count; i++) {
            struct cairn_ring_node_info info;

            if (cairn_ring_node_info(rings[r], replicas[i], &info) < 0)
                continue;
            if (context->json) {
                if (i > 0)
                    fputc(',', context->out);
                cairn_ops_json_string(context->out, info.name);
            } else {
                fprintf(context->out, " %s", info.name);
            }
        }
        fputs(context->json ? "]}" : "\n", context->out);
    }
    if (context->json)
        fputs("]", context->out);
    else if (ring_count == 0)
        fputs("placement: no ring file\n", context->out);
}

/* Rows per node; the nodes holding the user go to holders, in order. */
static void
show_replicas(struct cairn_ops_context *context,
              const struct cairn_config *config,
              const struct cairn_ops_node_call *calls, size_t count,
              size_t *holders, size_t *holder_count)
{
    size_t shown = 0;

    if (context->json)
        fputs(",\"replicas\":[", context->out);
    else
        fprintf(context->out, "%-12s %-10s %10s %10s %6s %9s %8s  %s\n", "NODE",
                "STATE", "DISK", "RAW", "CHUNKS", "MAILBOXES", "MESSAGES",
                "LAST BACKUP (UTC)");
    for (size_t c = 0; c < count; c++) {
        const Cairn__UserStats *stats =
            calls[c].status == 0 && calls[c].status_reply->n_users == 1
                ? calls[c].status_reply->users[0]
                : NULL;
        const char *state = calls[c].status < 0                 ? "down"
                            : stats && stats->bytes_on_disk > 0 ? "holds"
                                                                : "absent";
        char disk[32] = "-", raw[32] = "-", when[32] = "-";

        if (strcmp(state, "holds") == 0) {
            holders[(*holder_count)++] = calls[c].node;
            cairn_ops_format_bytes(stats->bytes_on_disk, disk, sizeof(disk));
            cairn_ops_format_bytes(stats->raw_bytes, raw, sizeof(raw));
            cairn_ops_format_time(stats->last_backup_time, when, sizeof(when));
        } else if (!context->json && strcmp(state, "absent") == 0) {
            continue;
        }
        if (context->json) {
            fputs(shown++ ? ",{\"node\":" : "{\"node\":", context->out);
            cairn_ops_json_string(context->out,
                                  cairn_ops_node_name(config, calls[c].node));
            fputs(",\"state\":", context->out);
            cairn_ops_json_string(context->out, state);
            if (stats != NULL)
                cairn_ops_json_user_stats(context->out, stats);
            fputs("}", context->out);
            continue;
        }
        if (stats == NULL)
            fprintf(context->out, "%-12s down: %s\n",
                    cairn_ops_node_name(config, calls[c].node),
                    calls[c].error_text);
        else
            fprintf(context->out,
                    "%-12s %-10s %10s %10s %6llu %9llu %8llu  %s\n",
                    cairn_ops_node_name(config, calls[c].node), state, disk,
                    raw, (unsigned long long)stats->chunks,
                    (unsigned long long)stats->mailboxes,
                    (unsigned long long)stats->messages, when);
    }
    if (context->json)
        fputs("]", context->out);
}

/* The rings of -r, else each destination's ring file that loads. */
static int
load_show_rings(struct cairn_ops_context *context,
                const struct cairn_config *config, const struct user_args *args,
                struct cairn_ring **rings, size_t *ring_count)
{
    int rc;

    *ring_count = 0;
    if (args->ring_count > 0) {
        rc = cairn_ops_load_rings(context->err, args->rings, args->ring_count,
                                  rings);
        while (*ring_count < args->ring_count && rings[*ring_count] != NULL)
            (*ring_count)++;
        return rc;
    }
    for (size_t d = 0; d < cairn_config_destination_count(config) &&
                       *ring_count < CAIRN_OPS_MAX_RINGS;
         d++) {
        const struct cairn_config_destination *destination =
            cairn_config_destination_at(config, d);

        if (destination->ring_file != NULL &&
            cairn_ring_load(destination->ring_file, &rings[*ring_count]) == 0)
            (*ring_count)++;
    }
    return 0;
}

static int
show_user(struct cairn_ops_context *context, const struct cairn_config *config,
          const struct user_args *args, const char *user,
          struct cairn_ops_node_call *calls, size_t *count)
{
    Cairn__UserRequest ask = CAIRN__USER_REQUEST__INIT;
    struct cairn_ring *rings[CAIRN_OPS_MAX_RINGS] = {0};
    char *names[1] = {(char *)user};
    size_t ring_count = 0, holder_count = 0, *holders = NULL;
    int status = CAIRN_EXIT_OK, rc;

    if (cairn_node_check_userid(user) < 0) {
        fprintf(context->err, "cairnctl user: bad user name '%s'\n", user);
        return CAIRN_EXIT_USAGE;
    }
    if ((rc = load_show_rings(context, config, args, rings, &ring_count)) < 0) {
        status = rc == CAIRN_ENOENT ? CAIRN_EXIT_NOINPUT : CAIRN_EXIT_PROBLEM;
        goto out;
    }
    ask.users = names;
    ask.n_users = 1;
    if ((holders = calloc(cairn_config_node_count(config) + 1,
                          sizeof(*holders))) == NULL) {
        status = CAIRN_EXIT_SOFTWARE;
        goto out;
    }
    if (ask_nodes(context, config, args, &ask, calls, count) < 0) {
        status = CAIRN_EXIT_SOFTWARE;
        goto out;
    }
    if (context->json) {
        fputs("{\"user\":", context->out);
        cairn_ops_json_string(context->out, user);
    } else {
        fprintf(context->out, "user %s\n", user);
    }
    show_placement(context, user, rings, ring_count);
    show_replicas(context, config, calls, *count, holders, &holder_count);
    if (context->json)
        fputs(",\"mailboxes\":[", context->out);
    if (holder_count == 0) {
        fprintf(context->err, "cairnctl user: %s: not found on any node\n",
                user);
        status = CAIRN_EXIT_PROBLEM;
    } else if ((rc = show_holder_mailboxes(context, config, user, holders,
                                           holder_count, args->timeout_ms)) <
               0) {
        status = cairn_ops_unreachable(rc) ? CAIRN_EXIT_UNAVAILABLE
                                           : CAIRN_EXIT_PROBLEM;
    }
    if (context->json)
        fputs("]}\n", context->out);
    for (size_t c = 0; c < *count; c++)
        if (status == CAIRN_EXIT_OK && calls[c].status < 0)
            status = CAIRN_EXIT_UNAVAILABLE;
out:
    free(holders);
    for (size_t i = 0; i < ring_count; i++)
        cairn_ring_free(rings[i]);
    return status;
}

/* --- dump -------------------------------------------------------------------
 */

/*
 * Leaves the body out: the serialiser has just written "%{p g s}\r\n";
 * the CRLF goes too, so each record stays on one line.
 */
static int
skip_body(void *ctx, const struct cairn_dlist *file, struct cairn_buf *out)
{
    (void)ctx;
    (void)file;
    if (out->len >= 2 && memcmp(out->data + out->len - 2, "\r\n", 2) == 0)
        out->len -= 2;
    out->data[out->len] = '\0';
    return 0;
}

/* What dump reads between records: "<ts> APPLY ". */
struct dump_state {
    FILE *out;
    struct cairn_dlist_parser *parser;
    char prefix[MAX_LINE_PREFIX + 1];
    size_t prefix_len;
    bool in_record;
    uint64_t records;
};

static int
print_record(struct dump_state *state)
{
    static const struct cairn_dlist_body_writer writer = {skip_body, NULL};
    struct cairn_dlist *record = cairn_dlist_parser_take(state->parser);
    struct cairn_buf text;
    int rc;

    cairn_buf_init(&text, MAX_ITEM_TEXT);
    if ((rc = cairn_dlist_print(record, true, &text, &writer)) == 0)
        fprintf(state->out, "%s%s\n", state->prefix, text.data);
    cairn_buf_release(&text);
    cairn_dlist_free(record);
    state->records++;
    return rc;
}

/* Feeds len bytes of the uncompressed log through the line reader. */
static int
dump_bytes(struct dump_state *state, const char *data, size_t len)
{
    while (len > 0) {
        size_t used = 0;
        int rc;

        if (!state->in_record) {
            if (state->prefix_len == MAX_LINE_PREFIX)
                return CAIRN_EPARSE;
            state->prefix[state->prefix_len++] = *data;
            state->prefix[state->prefix_len] = '\0';
            data++;
            len--;
            /* Cyrus starts each chunk with a "# ..." comment line. */
            if (state->prefix[0] == '#') {
                if (*(data - 1) == '\n') {
                    fprintf(state->out, "%.*s\n",
                            (int)strcspn(state->prefix, "\r\n"), state->prefix);
                    state->prefix_len = 0;
                }
                continue;
            }
            /* "<ts> APPLY " ends at its second blank. */
            state->in_record =
                *(data - 1) == ' ' && strchr(state->prefix, ' ') !=
                                          state->prefix + state->prefix_len - 1;
            continue;
        }
        rc = cairn_dlist_parser_feed(state->parser, data, len, &used);
        data += used;
        len -= used;
        if (rc == CAIRN_EAGAIN)
            continue;
        if (rc < 0 || (rc = print_record(state)) < 0)
            return rc;
        state->in_record = false;
        state->prefix_len = 0;
    }
    return 0;
}

static int
dump_file(struct cairn_ops_context *context, const char *data_path)
{
    struct dump_state state = {context->out, NULL, "", 0, false, 0};
    gzFile file = NULL;
    char *buffer = NULL;
    int got = 0, rc;

    if ((rc = cairn_dlist_parser_new(
             NULL, NULL, CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL,
             &state.parser)) < 0)
        goto out;
    if ((buffer = malloc(READ_SIZE)) == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    /* zlib reads the concatenated gzip members as one stream. */
    if ((file = gzopen(data_path, "rb")) == NULL) {
        rc = CAIRN_EIO;
        goto out;
    }
    while (rc == 0 && (got = gzread(file, buffer, READ_SIZE)) > 0)
        rc = dump_bytes(&state, buffer, (size_t)got);
    if (rc == 0 && (got < 0 || state.in_record || state.prefix_len > 0))
        rc = CAIRN_ECORRUPT;
out:
    if (rc < 0)
        fprintf(context->err, "cairnctl user dump: %s: %s after %llu records\n",
                data_path, cairn_strerror(rc),
                (unsigned long long)state.records);
    if (file != NULL)
        gzclose(file);
    free(buffer);
    cairn_dlist_parser_free(state.parser);
    return rc;
}

static int
dump_user(struct cairn_ops_context *context, const char *data_dir,
          const char *user)
{
    struct cairn_catalog *catalog = NULL;
    char *catalog_path = NULL, *data_path = NULL;
    int status = CAIRN_EXIT_OK, rc;

    if (asprintf(&catalog_path, "%s/catalog.db", data_dir) < 0)
        return CAIRN_EXIT_SOFTWARE;
    if (access(catalog_path, R_OK) != 0) {
        fprintf(context->err, "cairnctl user dump: no catalog %s\n",
                catalog_path);
        status = CAIRN_EXIT_NOINPUT;
        goto out;
    }
    if ((rc = cairn_catalog_open(catalog_path, &catalog)) < 0 ||
        (rc = cairn_catalog_lookup(catalog, user, &data_path)) < 0) {
        fprintf(context->err, "cairnctl user dump: %s: %s\n", user,
                rc == CAIRN_ENOENT ? "no such user in the catalog"
                                   : cairn_strerror(rc));
        status = rc == CAIRN_ENOENT ? CAIRN_EXIT_PROBLEM : CAIRN_EXIT_IOERR;
        goto out;
    }
    if (dump_file(context, data_path) < 0)
        status = CAIRN_EXIT_PROBLEM;
out:
    cairn_catalog_free(catalog);
    free(catalog_path);
    free(data_path);
    return status;
}

static int
run_user(struct cairn_ops_context *context, int argc, char **argv)
{
    const char *verb = argc > 1 ? argv[1] : "";
    struct cairn_config *config = NULL;
    struct cairn_ops_node_call *calls = NULL;
    struct user_args args;
    size_t count = 0, positional;
    int status;

    if (argc > 2 && strcmp(verb, "dump") == 0 &&
        strcmp(argv[2], "message") == 0)
        return cairn_ops_user_dump_message(context, argc - 2, argv + 2);
    if (strcmp(verb, "history") == 0)
        return cairn_ops_user_history(context, argc - 1, argv + 1);
    if ((status = parse_args(context, argc - 1, argv + 1, &args)) != 0)
        return status;
    positional = (size_t)(argc - 1 - args.first);
    if (strcmp(verb, "dump") == 0 && context->json) {
        fprintf(context->err, "cairnctl user dump: no JSON form (it prints "
                              "the log's own lines)\n");
        return CAIRN_EXIT_USAGE;
    }
    if (strcmp(verb, "dump") == 0 && positional == 1 && args.data_dir)
        return dump_user(context, args.data_dir, argv[1 + args.first]);
    if (!((strcmp(verb, "list") == 0 && positional == 0) ||
          (strcmp(verb, "show") == 0 && positional == 1))) {
        fprintf(context->err, "cairnctl user: list, show user or dump -d "
                              "data-dir user?\n");
        return cairn_ops_usage(context, &cairn_ops_cmd_user);
    }
    if ((status = cairn_ops_load_config(context, NULL, &config)) != 0)
        return status;
    if ((calls = calloc(cairn_config_node_count(config) + 1, sizeof(*calls))) ==
        NULL) {
        status = CAIRN_EXIT_SOFTWARE;
        goto out;
    }
    if (strcmp(verb, "list") == 0)
        status = list_users(context, config, &args);
    else
        status = show_user(context, config, &args, argv[1 + args.first], calls,
                           &count);
out:
    cairn_ops_node_calls_free(calls, count);
    cairn_config_free(config);
    return status;
}

/* dump message and history have usage texts of their own. */
static const struct cairn_ops_verb verbs[] = {
    {"list", false},        {"show", false},   {"dump", false},
    {"dump message", true}, {"history", true}, {NULL, false}};

const struct cairn_ops_command cairn_ops_cmd_user = {
    "user", run_user, "list users, show where one lives, dump its log", usage,
    verbs};
