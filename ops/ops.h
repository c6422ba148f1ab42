/*
 * ops.h - cairnctl, the administrator's tool, as a library (cairn_ops) so
 * that tests call exactly what the program runs. The program ops/cairnctl.c
 * is only main() over cairn_ops_main().
 *
 * cairnctl is a table of subcommands, one file per subcommand:
 *
 *     cairnctl [-h] [--json] [--version] [-c file] command [arg ...]
 *
 * Adding a subcommand NAME:
 *   1. write ops/cmd_NAME.c defining
 *          const struct cairn_ops_command cairn_ops_cmd_NAME = {
 *              "NAME", run_NAME, "one-line summary",
 *              "usage: cairnctl NAME [-x] arg\n"};
 *      where run_NAME parses its own options with getopt_long (set
 *      optind = 0 first: the library may run many commands in one process)
 *      and returns one of the exit codes below;
 *   2. add X(NAME) to CAIRN_OPS_COMMAND_LIST below (the one line that
 *      registers it; `cairnctl help` lists commands in this order);
 *   3. add cmd_NAME.c to cairn_ops's sources in ops/CMakeLists.txt.
 *
 * Output goes to the context's out (results) and err (diagnostics)
 * streams, never straight to stdout/stderr, so tests can capture it.
 */
#ifndef CAIRN_OPS_H
#define CAIRN_OPS_H

#include "config.h"

#include <stdbool.h>
#include <stdio.h>

/*
 * Exit codes of cairnctl (the sysexits.h values where one fits). Every
 * subcommand returns one of these.
 */
enum cairn_ops_exit {
    CAIRN_EXIT_OK = 0,           /* done, nothing wrong */
    CAIRN_EXIT_PROBLEM = 1,      /* the operation found a problem, e.g. an
                                    invalid config or replicas that differ */
    CAIRN_EXIT_USAGE = 64,       /* EX_USAGE: bad command line */
    CAIRN_EXIT_NOINPUT = 66,     /* EX_NOINPUT: an input file is missing */
    CAIRN_EXIT_UNAVAILABLE = 69, /* EX_UNAVAILABLE: router/node unreachable */
    CAIRN_EXIT_SOFTWARE = 70,    /* EX_SOFTWARE: internal error (e.g. memory) */
    CAIRN_EXIT_IOERR = 74,       /* EX_IOERR: reading or writing failed */
};

/* What the global options set up for a subcommand. Borrowed throughout. */
struct cairn_ops_context {
    const char *config_path; /* -c FILE; NULL: the built-in default */
    bool json;               /* --json: machine-readable output on out */
    FILE *out;               /* results */
    FILE *err;               /* diagnostics and usage */
    bool no_curve;           /* loading the config sets up no CURVE keys */
};

/*
 * A verb of a subcommand ("ring create", "user dump message"): name is
 * its words after the subcommand, blank separated. own_help: the verb
 * prints its own usage for -h/--help (the front passes them on).
 */
struct cairn_ops_verb {
    const char *name;
    bool own_help;
};

/*
 * A subcommand. run gets argv[0] == name and returns an exit code; usage
 * is the full usage text (style(9): "usage: cairnctl name [-f] file\n").
 * verbs: its verbs, ended by a {NULL} entry, or NULL when it has none;
 * `cairnctl help --commands`, the --help test and the man page list them.
 * -h/--help after the subcommand or a verb print usage to out (exit 0)
 * before run is called, so a subcommand need not parse them.
 */
struct cairn_ops_command {
    const char *name;
    int (*run)(struct cairn_ops_context *context, int argc, char **argv);
    const char *summary;
    const char *usage;
    const struct cairn_ops_verb *verbs;
};

/* The subcommands; add one line per subcommand (see the top). */
#define CAIRN_OPS_COMMAND_LIST(X)                                              \
    X(config)                                                                  \
    X(ring)                                                                    \
    X(repair)                                                                  \
    X(restore)                                                                 \
    X(import) X(status) X(age) X(verify) X(compact) X(user) X(rebalance) X(keys)

#define CAIRN_OPS_DECLARE_COMMAND(name)                                        \
    extern const struct cairn_ops_command cairn_ops_cmd_##name;
CAIRN_OPS_COMMAND_LIST(CAIRN_OPS_DECLARE_COMMAND)

/* The table, in CAIRN_OPS_COMMAND_LIST order, NULL-terminated. */
extern const struct cairn_ops_command *const cairn_ops_commands[];

/*
 * The whole of cairnctl: parses the global options in argv, runs the
 * subcommand, writes to out and err, returns the exit code. argv is
 * permuted by getopt_long but nothing is kept after it returns.
 */
int cairn_ops_main(int argc, char **argv, FILE *out, FILE *err);

/*
 * Appends cairnctl(8), the manual page, in roff to out: the synopsis,
 * global options, every subcommand of the table with its summary, verbs
 * and usage text, and the exit codes, so the page lists exactly what the
 * program runs. version goes in the footer. CAIRN_ETOOBIG when full.
 */
int cairn_ops_format_man(const char *version, struct cairn_buf *out);

/* The subcommand called name, or NULL. */
const struct cairn_ops_command *cairn_ops_find_command(const char *name);

/* Prints command's usage (or cairnctl's, when NULL) to err; returns 64. */
int cairn_ops_usage(struct cairn_ops_context *context,
                    const struct cairn_ops_command *command);

/*
 * Loads the configuration from path, else context->config_path, else the
 * built-in default. On failure prints "FILE:LINE: reason" on err (or, with
 * --json, a JSON object on out) and returns the exit code to use (1 for an
 * invalid file, 66 for a missing one, 74, 70); on success returns 0 and
 * *config is owned by the caller (cairn_config_free).
 */
int cairn_ops_load_config(struct cairn_ops_context *context, const char *path,
                          struct cairn_config **config);

/* Writes text as a JSON string (quoted, escaped) to out. */
void cairn_ops_json_string(FILE *out, const char *text);

#endif /* CAIRN_OPS_H */
