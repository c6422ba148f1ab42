/*
 * test_ops.c - unit tests for the cairnctl library: the command table and
 * cairn_ops_main() run in-process (so the sanitizers see them), with their
 * exit codes and what they print.
 */
#include "check.h"
#include "ops.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Run from ops/tests (ctest's working directory). */
#define EXAMPLE "../../cluster.example.conf"
#define MAX_ARGS 8

static char broken_path[] = "/tmp/test_ops_XXXXXX";
static char broken_option[64]; /* --config=broken_path */

/* Reads all of stream (rewound) into text, NUL-terminated. */
static void
slurp(FILE *stream, char *text, size_t size)
{
    size_t got;

    rewind(stream);
    got = fread(text, 1, size - 1, stream);
    text[got] = '\0';
}

static void
test_commands(void)
{
    static const struct {
        const char *args; /* split on blanks; "@" is the broken file */
        int status;
        const char *out, *err; /* expected substrings, or NULL */
    } cases[] = {
        {"config check " EXAMPLE, 0,
         EXAMPLE ": OK (1 router, 1 channel, 1 destination, 3 nodes)", NULL},
        {"-c " EXAMPLE " config check", 0, EXAMPLE ": OK", NULL},
        {"config check", 0, "(built-in cluster.example.conf): OK", NULL},
        {"--json config check", 0, "\"ok\":true,\"routers\":1", NULL},
        {"config check @", 1, NULL, ":3: unknown key 'bogus' in [router]"},
        {"--json config check @", 1, "\"line\":3,\"error\":\"unknown key",
         NULL},
        {"--config=@ config check", 1, NULL, "unknown key 'bogus'"},
        {"config check /nonexistent/cluster.conf", 66, NULL,
         "/nonexistent/cluster.conf: No such file or directory"},
        {"config show " EXAMPLE, 0, "\n[destination main]\n", NULL},
        {"", 64, NULL, "no command given"},
        {"nosuch", 64, NULL, "unknown command 'nosuch'"},
        {"-x config check", 64, NULL, "bad option '-x'"},
        {"config", 64, NULL, "usage: cairnctl config check"},
        {"config check a b", 64, NULL, "too many arguments"},
        {"config show --json", 0, "\"nodes\":[{\"name\":\"node1\"", NULL},
        {"config shw", 64, NULL, "unknown verb 'shw'"},
        {"help", 0, "config     check or show a cluster configuration", NULL},
        {"help nosuch", 64, NULL, "unknown command"},
        {"--version", 0, "cairnctl ", NULL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char args[256], *argv[MAX_ARGS + 1], out_text[8192], err_text[4096];
        int argc = 0, status;
        FILE *out = tmpfile(), *err = tmpfile();

        CHECK(out != NULL && err != NULL);
        if (out == NULL || err == NULL)
            return;
        snprintf(args, sizeof(args), "%s", cases[i].args);
        argv[argc++] = "cairnctl";
        for (char *word = strtok(args, " "); word && argc < MAX_ARGS;
             word = strtok(NULL, " "))
            argv[argc++] = strcmp(word, "@") == 0            ? broken_path
                           : strcmp(word, "--config=@") == 0 ? broken_option
                                                             : word;
        argv[argc] = NULL;
        status = cairn_ops_main(argc, argv, out, err);
        slurp(out, out_text, sizeof(out_text));
        slurp(err, err_text, sizeof(err_text));
        CHECK_INT(status, cases[i].status);
        if (cases[i].out != NULL && strstr(out_text, cases[i].out) == NULL)
            CHECK_STR(out_text, cases[i].out);
        if (cases[i].err != NULL && strstr(err_text, cases[i].err) == NULL)
            CHECK_STR(err_text, cases[i].err);
        if (status != cases[i].status)
            fprintf(stderr, "  (case '%s')\n", cases[i].args);
        fclose(out);
        fclose(err);
    }
}

static void
test_table(void)
{
    CHECK(cairn_ops_find_command("config") == &cairn_ops_cmd_config);
    CHECK(cairn_ops_find_command("help") == NULL); /* built into main */
    for (size_t i = 0; cairn_ops_commands[i] != NULL; i++) {
        CHECK(cairn_ops_commands[i]->run != NULL);
        CHECK(strncmp(cairn_ops_commands[i]->usage, "usage: cairnctl ", 16) ==
              0);
    }
}

static void
test_json_string(void)
{
    FILE *out = tmpfile();
    char text[64];

    CHECK(out != NULL);
    if (out == NULL)
        return;
    cairn_ops_json_string(out, "a\"b\\c\nd");
    slurp(out, text, sizeof(text));
    CHECK_STR(text, "\"a\\\"b\\\\c\\u000ad\"");
    fclose(out);
}

int
main(void)
{
    static const char broken[] = "# broken\n[router]\nbogus = 1\n";
    int fd = mkstemp(broken_path);

    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, broken, sizeof(broken) - 1) ==
              (ssize_t)(sizeof(broken) - 1));
        close(fd);
    }
    snprintf(broken_option, sizeof(broken_option), "--config=%s", broken_path);
    test_table();
    test_commands();
    test_json_string();
    unlink(broken_path);
    return check_exit("test_ops");
}
