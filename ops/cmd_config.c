/*
 * cmd_config.c - `cairnctl config check|show [file]`: validate a
 * cluster.conf the way the daemons will before they start, and print the
 * effective configuration with every default filled in.
 */
#include "ops.h"

#include <getopt.h>
#include <string.h>

/* Largest effective configuration `config show` prints. */
#define SHOW_MAX (16 * 1024 * 1024)

static const char usage[] =
    "usage: cairnctl config check [--json] [file]\n"
    "       cairnctl config show [--json] [file]\n"
    "\n"
    "check: validate file (default: -c file, else the built-in\n"
    "       cluster.example.conf); exit 0 if valid, 1 if not, 66 if missing\n"
    "show:  print the effective configuration, defaults filled in\n";

/* [--json] [file] after the verb; *path stays NULL without a file. */
static int
parse_arguments(struct cairn_ops_context *context, int argc, char **argv,
                const char **path)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    int option;

    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (option != 'j') {
            fprintf(context->err, "cairnctl config: bad option '%s'\n",
                    argv[optind - 1]);
            return cairn_ops_usage(context, &cairn_ops_cmd_config);
        }
        context->json = true;
    }
    if (argc - optind > 1) {
        fprintf(context->err, "cairnctl config: too many arguments\n");
        return cairn_ops_usage(context, &cairn_ops_cmd_config);
    }
    *path = optind < argc ? argv[optind] : NULL;
    return CAIRN_EXIT_OK;
}

static int
check(struct cairn_ops_context *context, const char *path)
{
    struct cairn_config *config = NULL;
    int status;
    size_t channels, destinations, nodes;

    if ((status = cairn_ops_load_config(context, path, &config)) != 0)
        return status;
    channels = cairn_config_channel_count(config);
    destinations = cairn_config_destination_count(config);
    nodes = cairn_config_node_count(config);
    if (context->json) {
        fputs("{\"file\":", context->out);
        cairn_ops_json_string(context->out, cairn_config_name(config));
        fprintf(context->out,
                ",\"ok\":true,\"routers\":1,\"channels\":%zu,"
                "\"destinations\":%zu,\"nodes\":%zu}\n",
                channels, destinations, nodes);
    } else {
        fprintf(context->out,
                "%s: OK (1 router, %zu channel%s, %zu destination%s, "
                "%zu node%s)\n",
                cairn_config_name(config), channels, channels == 1 ? "" : "s",
                destinations, destinations == 1 ? "" : "s", nodes,
                nodes == 1 ? "" : "s");
    }
    cairn_config_free(config);
    return CAIRN_EXIT_OK;
}

static int
show(struct cairn_ops_context *context, const char *path)
{
    struct cairn_config *config = NULL;
    struct cairn_buf text;
    int status, rc;

    cairn_buf_init(&text, SHOW_MAX);
    if ((status = cairn_ops_load_config(context, path, &config)) != 0)
        goto out;
    if (context->json)
        rc = cairn_config_format_json(config, &text);
    else
        rc = cairn_config_format(config, &text);
    if (rc < 0) {
        fprintf(context->err, "cairnctl config show: %s\n", cairn_strerror(rc));
        status = CAIRN_EXIT_SOFTWARE;
        goto out;
    }
    if (fwrite(text.data, 1, text.len, context->out) != text.len)
        status = CAIRN_EXIT_IOERR;
out:
    cairn_buf_release(&text);
    cairn_config_free(config);
    return status;
}

static int
run_config(struct cairn_ops_context *context, int argc, char **argv)
{
    const char *verb = argc > 1 ? argv[1] : NULL, *path = NULL;
    int status;

    if (verb == NULL) {
        fprintf(context->err, "cairnctl config: check or show?\n");
        return cairn_ops_usage(context, &cairn_ops_cmd_config);
    }
    if ((status = parse_arguments(context, argc - 1, argv + 1, &path)) != 0)
        return status;
    context->no_curve = true; /* checking a file needs no keys */
    if (strcmp(verb, "check") == 0)
        return check(context, path);
    if (strcmp(verb, "show") == 0)
        return show(context, path);
    fprintf(context->err, "cairnctl config: unknown verb '%s'\n", verb);
    return cairn_ops_usage(context, &cairn_ops_cmd_config);
}

static const struct cairn_ops_verb verbs[] = {
    {"check", false}, {"show", false}, {NULL, false}};

const struct cairn_ops_command cairn_ops_cmd_config = {
    "config", run_config, "check or show a cluster configuration", usage,
    verbs};
