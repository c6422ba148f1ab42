/*
 * test_progress.c - cairnctl's progress line (ops/progress.h): its text,
 * and that it is drawn on a terminal only (a pseudo-terminal here), never
 * on a pipe or with -q.
 */
#include "check.h"
#include "progress.h"

#include <fcntl.h>
#include <pty.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void
test_format(void)
{
    static const struct {
        const char *unit;
        uint64_t done, total, bytes, total_bytes, elapsed_ms;
        const char *detail, *expected;
    } cases[] = {
        /* by bytes: 1 GiB of 4 GiB in 10 s -> 30 s left */
        {"users", 25, 100, 1ull << 30, 4ull << 30, 10000, NULL,
         "job: 25/100 users (25%), 1.0 GiB of 4.0 GiB, 102.4 MiB/s, "
         "ETA 30s"},
        /* by items when no bytes are counted; none shown */
        {"users", 32, 100, 0, 0, 32000, NULL,
         "job: 32/100 users (32%), ETA 1m08s"},
        /* nothing done yet: no ETA */
        {"users", 0, 10, 0, 0, 1000, "3 moving",
         "job: 0/10 users (0%), ETA ?, 3 moving"},
        /* total unknown, bytes known */
        {"upload", 7, 0, 512, 0, 2000, "INBOX",
         "job: 7 upload, 512 B, 256 B/s, ETA ?, INBOX"},
        /* hours */
        {"users", 1, 10000, 0, 0, 1000, NULL,
         "job: 1/10000 users (0%), ETA 2h46m"},
    };
    char line[256];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cairn_ops_progress_format(line, sizeof(line), "job", cases[i].unit,
                                  cases[i].done, cases[i].total, cases[i].bytes,
                                  cases[i].total_bytes, cases[i].elapsed_ms,
                                  cases[i].detail);
        CHECK_STR(line, cases[i].expected);
    }
}

/* Everything readable from fd now (non-blocking), as a string. */
static void
drain(int fd, char *text, size_t size)
{
    size_t used = 0;
    ssize_t got;

    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    while (used + 1 < size &&
           (got = read(fd, text + used, size - used - 1)) > 0)
        used += (size_t)got;
    text[used] = '\0';
}

/* Runs a short job on stream and returns what reached the other end. */
static void
run_job(FILE *stream, bool quiet, int reader, char *text, size_t size)
{
    struct cairn_ops_progress progress;

    cairn_ops_progress_start(&progress, stream, quiet, "verify", "users", 4, 0);
    cairn_ops_progress_update(&progress, 1, 0, NULL);
    cairn_ops_progress_end(&progress, 4, 0);
    cairn_ops_progress_end(&progress, 4, 0); /* once only */
    drain(reader, text, size);
}

static void
test_terminal_only(void)
{
    int master, slave, pipe_fds[2];
    FILE *terminal, *piped;
    char text[1024];

    CHECK(openpty(&master, &slave, NULL, NULL, NULL) == 0);
    CHECK(pipe(pipe_fds) == 0);
    terminal = fdopen(slave, "w");
    piped = fdopen(pipe_fds[1], "w");
    CHECK(terminal != NULL && piped != NULL);

    run_job(terminal, false, master, text, sizeof(text));
    /* the first update and the end, each redrawn from the line start */
    CHECK(strstr(text, "\rverify: 1/4 users (25%)") != NULL);
    CHECK(strstr(text, "\rverify: 4/4 users (100%), ETA 0s") != NULL);
    CHECK(strchr(text, '\n') != NULL &&
          strchr(text, '\n') == strrchr(text, '\n'));

    run_job(terminal, true, master, text, sizeof(text)); /* -q */
    CHECK_STR(text, "");
    run_job(piped, false, pipe_fds[0], text, sizeof(text)); /* piped */
    CHECK_STR(text, "");

    fclose(terminal);
    fclose(piped);
    close(master);
    close(pipe_fds[0]);
}

int
main(void)
{
    test_format();
    test_terminal_only();
    return check_exit("test_progress");
}
