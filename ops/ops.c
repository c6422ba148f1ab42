/*
 * ops.c - cairnctl's front: global options, the subcommand table, usage,
 * and the helpers every subcommand shares (loading the config, JSON).
 */
#include "ops.h"

#include "curve.h"
#include "daemon.h"

#include <getopt.h>
#include <string.h>

#ifndef CAIRN_VERSION
#define CAIRN_VERSION "unknown"
#endif

#define CAIRN_OPS_TABLE_ENTRY(name) &cairn_ops_cmd_##name,
const struct cairn_ops_command *const cairn_ops_commands[] = {
    CAIRN_OPS_COMMAND_LIST(CAIRN_OPS_TABLE_ENTRY) NULL};

static const char main_usage[] =
    "usage: cairnctl [-h] [--json] [--version] [-c file] command [arg ...]\n"
    "       cairnctl help [--commands | command]\n"
    "       cairnctl command -h | --help\n";

static const char exit_codes[] =
    "exit status: 0 ok, 1 the operation found a problem, 64 usage error,\n"
    "66 input file missing, 69 service unavailable, 70 internal error,\n"
    "74 I/O error\n";

const struct cairn_ops_command *
cairn_ops_find_command(const char *name)
{
    for (size_t i = 0; cairn_ops_commands[i] != NULL; i++) {
        if (strcmp(cairn_ops_commands[i]->name, name) == 0)
            return cairn_ops_commands[i];
    }
    return NULL;
}

int
cairn_ops_usage(struct cairn_ops_context *context,
                const struct cairn_ops_command *command)
{
    fputs(command != NULL ? command->usage : main_usage, context->err);
    return CAIRN_EXIT_USAGE;
}

/* `cairnctl help` and -h: the usage, the commands, the exit codes. */
static int
print_help(FILE *out)
{
    fputs(main_usage, out);
    fputs("\noptions:\n"
          "  -c, --config file  cluster configuration (default: the built-in\n"
          "                     cluster.example.conf)\n"
          "      --json         machine-readable output\n"
          "  -h, --help         this help\n"
          "      --version      print the version\n"
          "\ncommands:\n",
          out);
    fprintf(out, "  %-10s %s\n", "help", "list the commands");
    for (size_t i = 0; cairn_ops_commands[i] != NULL; i++)
        fprintf(out, "  %-10s %s\n", cairn_ops_commands[i]->name,
                cairn_ops_commands[i]->summary);
    fputs("\n", out);
    fputs(exit_codes, out);
    return CAIRN_EXIT_OK;
}

static bool
is_help_option(const char *arg)
{
    return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

/*
 * How many of argv's words after argv[0] (the command) name one of its
 * verbs, the longest match ("dump message" before "dump"); 0 when none
 * does. *verb is that verb.
 */
static int
match_verb(const struct cairn_ops_command *command, int argc, char **argv,
           const struct cairn_ops_verb **verb)
{
    int best = 0;

    *verb = NULL;
    for (size_t i = 0; command->verbs && command->verbs[i].name; i++) {
        const char *name = command->verbs[i].name;
        int words = 0;

        while (*name != '\0' && words + 1 < argc) {
            size_t len = strcspn(name, " ");

            if (strlen(argv[words + 1]) != len ||
                strncmp(name, argv[words + 1], len) != 0)
                break;
            words++;
            name += len + strspn(name + len, " ");
        }
        if (*name == '\0' && words > best) {
            best = words;
            *verb = &command->verbs[i];
        }
    }
    return best;
}

/*
 * -h/--help right after the command or its verb, or --help anywhere
 * before "--": the usage on out, exit 0. True when it was asked for.
 */
static bool
answer_help(struct cairn_ops_context *context,
            const struct cairn_ops_command *command, int argc, char **argv)
{
    const struct cairn_ops_verb *verb;
    int words = match_verb(command, argc, argv, &verb);
    bool asked = words + 1 < argc && is_help_option(argv[words + 1]);

    for (int i = words + 1; i < argc && !asked; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        asked = strcmp(argv[i], "--help") == 0;
    }
    if (!asked || (verb != NULL && verb->own_help))
        return false;
    fputs(command->usage, context->out);
    return true;
}

/* `cairnctl help --commands`: each command, and each of its verbs. */
static int
print_commands(FILE *out)
{
    for (size_t i = 0; cairn_ops_commands[i] != NULL; i++) {
        const struct cairn_ops_command *command = cairn_ops_commands[i];

        if (command->verbs == NULL)
            fprintf(out, "%s\n", command->name);
        for (size_t j = 0; command->verbs && command->verbs[j].name; j++)
            fprintf(out, "%s %s\n", command->name, command->verbs[j].name);
    }
    return CAIRN_EXIT_OK;
}

/* `cairnctl help [--commands | command]`. */
static int
run_help(struct cairn_ops_context *context, int argc, char **argv)
{
    const struct cairn_ops_command *command;

    if (argc == 1 || (argc == 2 && is_help_option(argv[1])))
        return print_help(context->out);
    if (argc == 2 && strcmp(argv[1], "--commands") == 0)
        return print_commands(context->out);
    if (argc > 2)
        return cairn_ops_usage(context, NULL);
    if ((command = cairn_ops_find_command(argv[1])) == NULL) {
        fprintf(context->err, "cairnctl: unknown command '%s'\n", argv[1]);
        return cairn_ops_usage(context, NULL);
    }
    fputs(command->usage, context->out);
    return CAIRN_EXIT_OK;
}

static const char man_description[] =
    ".SH DESCRIPTION\n"
    "\\fBcairnctl\\fR administers a cairn backup cluster for Cyrus IMAP:\n"
    "it checks the configuration, makes CURVE keys and ring files, shows\n"
    "the nodes and users, verifies, compacts, repairs and moves users'\n"
    "backups, and restores a user into a Cyrus server.\n"
    "It reads the cluster's configuration (\\fBcluster.conf\\fR(5)) and\n"
    "talks to \\fBcairn\\-node\\fR(8) and \\fBcairn\\-router\\fR(8) over\n"
    "ZeroMQ (CURVE with the first of [security] admin_keys).\n"
    "Every subcommand and verb answers \\fB\\-h\\fR and \\fB\\-\\-help\\fR.\n"
    ".SH OPTIONS\n"
    ".TP\n\\fB\\-c\\fR, \\fB\\-\\-config\\fR \\fIfile\\fR\n"
    "the cluster configuration (default: the built\\-in example).\n"
    ".TP\n\\fB\\-\\-json\\fR\n"
    "machine\\-readable output, one JSON object per line or document.\n"
    ".TP\n\\fB\\-h\\fR, \\fB\\-\\-help\\fR\n"
    "the usage and the list of subcommands.\n"
    ".TP\n\\fB\\-\\-version\\fR\n"
    "the version.\n"
    ".SH COMMANDS\n";

/* One subcommand: its summary, its verbs, its usage text as printed. */
static int
format_man_command(const struct cairn_ops_command *command,
                   struct cairn_buf *out)
{
    int rc = cairn_buf_printf(out, ".SS %s\n", command->name);

    if (rc == CAIRN_OK)
        rc = cairn_buf_append_roff(out, command->summary);
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_str(out, ".\n");
    for (size_t i = 0; command->verbs && command->verbs[i].name; i++) {
        if (rc == CAIRN_OK)
            rc =
                cairn_buf_printf(out, "%s\\fB%s\\fR", i == 0 ? "Verbs: " : ", ",
                                 command->verbs[i].name);
    }
    if (rc == CAIRN_OK && command->verbs)
        rc = cairn_buf_append_str(out, ".\n");
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_str(out, ".PP\n.nf\n");
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_roff(out, command->usage);
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_str(out, ".fi\n");
    return rc;
}

int
cairn_ops_format_man(const char *version, struct cairn_buf *out)
{
    int rc = cairn_buf_printf(out,
                              ".TH CAIRNCTL 8 \"\" \"cairn %s\" "
                              "\"cairn manual\"\n"
                              ".SH NAME\n"
                              "cairnctl \\- administer a cairn backup cluster\n"
                              ".SH SYNOPSIS\n.nf\n",
                              version);

    /* The usage without its "usage: " and the matching indent. */
    for (const char *line = main_usage; *line != '\0' && rc == CAIRN_OK;) {
        size_t skip = strncmp(line, "usage: ", 7) == 0   ? 7
                      : strncmp(line, "       ", 7) == 0 ? 7
                                                         : 0;
        const char *end = strchr(line, '\n');
        char text[256];

        end = end != NULL ? end + 1 : line + strlen(line);
        snprintf(text, sizeof(text), "%.*s", (int)(end - line - skip),
                 line + skip);
        rc = cairn_buf_append_roff(out, text);
        line = end;
    }
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_str(out, ".fi\n");
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_str(out, man_description);
    for (size_t i = 0; cairn_ops_commands[i] != NULL && rc == CAIRN_OK; i++)
        rc = format_man_command(cairn_ops_commands[i], out);
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_str(out, ".SH EXIT STATUS\n");
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_roff(out, exit_codes);
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_str(
            out, ".SH SEE ALSO\n"
                 "\\fBcluster.conf\\fR(5), \\fBcairn\\-router\\fR(8), "
                 "\\fBcairn\\-node\\fR(8), \\fBsync_client\\fR(8)\n");
    return rc;
}

int
cairn_ops_main(int argc, char **argv, FILE *out, FILE *err)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"json", no_argument, NULL, 'j'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct cairn_ops_context context = {NULL, false, out, err, false};
    const struct cairn_ops_command *command;
    int option;

    optind = 0; /* a fresh scan, however often we are called */
    opterr = 0;
    /* '+': stop at the command, whose options are its own. */
    while ((option = getopt_long(argc, argv, "+c:h", options, NULL)) != -1) {
        switch (option) {
        case 'c':
            context.config_path = optarg;
            break;
        case 'h':
            return print_help(out);
        case 'j':
            context.json = true;
            break;
        case 'V':
            fprintf(out, "cairnctl %s\n", CAIRN_VERSION);
            return CAIRN_EXIT_OK;
        default:
            fprintf(err, "cairnctl: bad option '%s'\n", argv[optind - 1]);
            return cairn_ops_usage(&context, NULL);
        }
    }
    if (optind >= argc) {
        fprintf(err, "cairnctl: no command given\n");
        return cairn_ops_usage(&context, NULL);
    }
    if (strcmp(argv[optind], "help") == 0)
        return run_help(&context, argc - optind, argv + optind);
    if ((command = cairn_ops_find_command(argv[optind])) == NULL) {
        fprintf(err, "cairnctl: unknown command '%s'\n", argv[optind]);
        return cairn_ops_usage(&context, NULL);
    }
    if (answer_help(&context, command, argc - optind, argv + optind))
        return CAIRN_EXIT_OK;
    return command->run(&context, argc - optind, argv + optind);
}

void
cairn_ops_json_string(FILE *out, const char *text)
{
    fputc('"', out);
    for (const unsigned char *at = (const unsigned char *)text; *at; at++) {
        if (*at == '"' || *at == '\\')
            fprintf(out, "\\%c", *at);
        else if (*at < 0x20)
            fprintf(out, "\\u%04x", *at);
        else
            fputc(*at, out);
    }
    fputc('"', out);
}

/* The exit code for a failed load, by what went wrong. */
static int
load_exit_code(int rc)
{
    switch (rc) {
    case CAIRN_ECONFIG:
    case CAIRN_ETOOBIG:
        return CAIRN_EXIT_PROBLEM;
    case CAIRN_ENOENT:
        return CAIRN_EXIT_NOINPUT;
    case CAIRN_EIO:
        return CAIRN_EXIT_IOERR;
    default:
        return CAIRN_EXIT_SOFTWARE;
    }
}

static void
on_curve_event(void *arg, enum cairn_log_level level, const char *message)
{
    fprintf(arg, "cairnctl: %s\n", message);
}

/*
 * CURVE with cairnctl's key (the first of [security] admin_keys). Keys
 * are not made here (the daemons or `cairnctl keys create` make them): a
 * missing key is said once, and a command that then talks to the cluster
 * fails with that reason; commands that work on files go on.
 */
static int
setup_curve(struct cairn_ops_context *context,
            const struct cairn_config *config)
{
    const struct cairn_config_security *security =
        cairn_config_security(config);
    char error[512] = "";

    if (context->no_curve || !security->curve)
        return CAIRN_EXIT_OK;
    cairn_curve_set_event_handler(on_curve_event, context->err);
    if (security->admin_keys.count == 0)
        snprintf(error, sizeof(error),
                 "[security] admin_keys is empty: cairnctl has no CURVE key");
    else if (cairn_curve_setup(config, security->admin_keys.items[0], false,
                               error, sizeof(error)) == CAIRN_OK)
        return CAIRN_EXIT_OK;
    cairn_curve_fail(error);
    fprintf(context->err, "cairnctl: CURVE: %s\n", error);
    return CAIRN_EXIT_OK;
}

int
cairn_ops_load_config(struct cairn_ops_context *context, const char *path,
                      struct cairn_config **config)
{
    struct cairn_config_error error;
    int rc;

    if (path == NULL)
        path = context->config_path;
    if (path != NULL)
        rc = cairn_config_load(path, config, &error);
    else
        rc = cairn_config_load_default(config, &error);
    if (rc == CAIRN_OK) {
        /* What cairnctl creates (imports, journals, restore copies) gets
         * data_mode like the daemons' files. */
        cairn_data_mode_apply(
            (mode_t)cairn_config_security(*config)->data_mode);
        return setup_curve(context, *config);
    }
    if (context->json) {
        fputs("{\"file\":", context->out);
        cairn_ops_json_string(context->out, error.file);
        fprintf(context->out,
                ",\"ok\":false,\"line\":%u,\"error\":", error.line);
        cairn_ops_json_string(context->out, error.message);
        fputs("}\n", context->out);
    } else if (error.line != 0) {
        fprintf(context->err, "%s:%u: %s\n", error.file, error.line,
                error.message);
    } else {
        fprintf(context->err, "%s: %s\n", error.file, error.message);
    }
    return load_exit_code(rc);
}
