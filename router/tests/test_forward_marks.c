/*
 * test_forward_marks.c - the repair marks file (forward_marks.c): marks
 * saved and read back by node name; what a damaged file loses (the bad
 * lines, marks of nodes gone) and what it keeps; users that cannot be
 * written; a failing save reported once and retried; a burst of changes
 * saved at most once a second; and the size and save time of 10,000 marks.
 */
#include "check.h"
#include "common.h"
#include "forward_int.h"
#include "loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* What the marks told, newest last. */
struct news {
    size_t warnings, infos;
    char last[512];
    char all[4096];
};

static void
on_news(void *arg, bool warning, const char *message)
{
    struct news *news = arg;
    size_t used = strlen(news->all);

    if (warning)
        news->warnings++;
    else
        news->infos++;
    snprintf(news->last, sizeof(news->last), "%s", message);
    snprintf(news->all + used, sizeof(news->all) - used, "%s\n", message);
}

static char temp_dir[64];

static void
make_temp_dir(void)
{
    snprintf(temp_dir, sizeof(temp_dir), "/tmp/cairn-test-marks-XXXXXX");
    CHECK(mkdtemp(temp_dir) != NULL);
}

static void
remove_temp_dir(void)
{
    char command[128];

    snprintf(command, sizeof(command), "rm -rf %s", temp_dir);
    CHECK_INT(system(command), 0);
}

/* Marks on state_dir with nodes n1 (index 0) and n2 (index 1). */
static struct cairn_router_marks *
open_marks(struct cairn_loop *loop, const char *state_dir, struct news *news)
{
    struct cairn_router_marks *marks = NULL;

    CHECK_INT(
        cairn_router_marks_new(loop, state_dir, "main", on_news, news, &marks),
        0);
    if (marks == NULL)
        return NULL;
    CHECK_INT(cairn_router_marks_name_node(marks, 0, "n1"), 0);
    CHECK_INT(cairn_router_marks_name_node(marks, 1, "n2"), 0);
    return marks;
}

/* The whole file as text (owned by the caller), NULL when missing. */
static char *
read_text(const char *path)
{
    FILE *file = fopen(path, "r");
    char *text = NULL;
    size_t size = 0;

    if (file == NULL)
        return NULL;
    fseek(file, 0, SEEK_END);
    size = (size_t)ftell(file);
    rewind(file);
    text = calloc(1, size + 1);
    if (text != NULL && fread(text, 1, size, file) != size) {
        free(text);
        text = NULL;
    }
    fclose(file);
    return text;
}

static bool
has_mark(const struct cairn_router_marks *marks, const char *user, size_t node,
         enum cairn_router_mark expected)
{
    enum cairn_router_mark mark = 0;

    return cairn_router_marks_get(marks, user, node, &mark) && mark == expected;
}

/* Saved by name, read back in another set; the directory is made. */
static void
test_round_trip(struct cairn_loop *loop)
{
    struct news news = {0};
    char state_dir[128], path[160];
    struct cairn_router_marks *marks;
    char *text;

    snprintf(state_dir, sizeof(state_dir), "%s/made/state", temp_dir);
    snprintf(path, sizeof(path), "%s/repair-marks.main", state_dir);
    marks = open_marks(loop, state_dir, &news);
    if (marks == NULL)
        return;
    CHECK_INT(cairn_router_marks_load(marks), 0); /* no file: empty */
    CHECK_U64(cairn_router_marks_count(marks), 0);
    CHECK_U64(news.infos + news.warnings, 0);
    CHECK_STR(cairn_router_marks_path(marks), path);
    CHECK_INT(
        cairn_router_marks_set(marks, "anne", 1, CAIRN_ROUTER_MARK_BEHIND), 0);
    CHECK_INT(cairn_router_marks_set(marks, "bob", 0, CAIRN_ROUTER_MARK_ASKED),
              0);
    CHECK_INT(cairn_router_marks_set(marks, "bob", 1, CAIRN_ROUTER_MARK_ASKED),
              0);
    cairn_router_marks_clear(marks, "bob", 1);
    cairn_router_marks_free(marks); /* saves */
    text = read_text(path);
    CHECK(text != NULL && strstr(text, "\nanne n2 behind\n") != NULL);
    CHECK(text != NULL && strstr(text, "\nbob n1 asked\n") != NULL);
    CHECK(text != NULL && strstr(text, "bob n2") == NULL);
    free(text);
    /* Another run, nodes named in another order: by name, not index. */
    CHECK_INT(
        cairn_router_marks_new(loop, state_dir, "main", on_news, &news, &marks),
        0);
    if (marks == NULL)
        return;
    CHECK_INT(cairn_router_marks_name_node(marks, 0, "n2"), 0);
    CHECK_INT(cairn_router_marks_name_node(marks, 1, "n1"), 0);
    CHECK_INT(cairn_router_marks_load(marks), 0);
    CHECK_U64(cairn_router_marks_count(marks), 2);
    CHECK(has_mark(marks, "anne", 0, CAIRN_ROUTER_MARK_BEHIND));
    CHECK(has_mark(marks, "bob", 1, CAIRN_ROUTER_MARK_ASKED));
    CHECK_U64(news.infos, 1);
    CHECK(strstr(news.last, "2 users marked for repair from the last run") !=
          NULL);
    /* Nothing changed: no save at free. */
    cairn_router_marks_free(marks);
}

/* A damaged file: its good lines load, the rest is skipped and reported. */
static void
test_damaged_file(struct cairn_loop *loop)
{
    static const struct {
        const char *line;
        const char *user; /* loaded as: NULL = skipped */
        size_t node;
        enum cairn_router_mark mark;
    } lines[] = {
        {"# a comment", NULL, 0, 0},
        {"anne n1 behind", "anne", 0, CAIRN_ROUTER_MARK_BEHIND},
        {"bob n2 asked", "bob", 1, CAIRN_ROUTER_MARK_ASKED},
        {"carl n9 behind", NULL, 0, 0}, /* node gone */
        {"dave n1", NULL, 0, 0},
        {"eve n1 sideways", NULL, 0, 0},
        {"fred n1 behind extra", NULL, 0, 0},
        {"", NULL, 0, 0},
        {"gina n2 behind\r", NULL, 0, 0}, /* CRLF: malformed */
        {"jack", NULL, 0, 0},
        {"hugo  n1 behind", "hugo", 0, CAIRN_ROUTER_MARK_BEHIND}, /* blanks */
        {"ivan n2 behind", "ivan", 1, CAIRN_ROUTER_MARK_BEHIND},  /* no LF */
    };
    char state_dir[128], path[160], long_line[3000];
    struct news news = {0};
    struct cairn_router_marks *marks;
    FILE *file;
    char *text;

    snprintf(state_dir, sizeof(state_dir), "%s/damaged", temp_dir);
    snprintf(path, sizeof(path), "%s/repair-marks.main", state_dir);
    CHECK_INT(mkdir(state_dir, 0700), 0);
    file = fopen(path, "w");
    CHECK(file != NULL);
    if (file == NULL)
        return;
    memset(long_line, 'x', sizeof(long_line) - 1);
    long_line[sizeof(long_line) - 1] = '\0';
    fprintf(file, "%s\n", long_line);
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        fprintf(file, "%s%s", lines[i].line,
                i + 1 < sizeof(lines) / sizeof(lines[0]) ? "\n" : "");
    fclose(file);
    if ((marks = open_marks(loop, state_dir, &news)) == NULL)
        return;
    CHECK_INT(cairn_router_marks_load(marks), 0);
    CHECK_U64(cairn_router_marks_count(marks), 4);
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        if (lines[i].user != NULL)
            CHECK(has_mark(marks, lines[i].user, lines[i].node, lines[i].mark));
    CHECK(!has_mark(marks, "gina", 1, CAIRN_ROUTER_MARK_BEHIND));
    /* 5 malformed lines one by one (the long one first), 1 more counted,
     * the node gone: 7 warnings; the count at last. */
    CHECK_U64(news.warnings, 7);
    CHECK(strstr(news.all, "repair-marks.main:1: malformed line") != NULL);
    CHECK(strstr(news.all, "1 more malformed lines skipped") != NULL);
    CHECK(strstr(news.all, "1 marks for nodes not in the configuration "
                           "dropped (e.g. node n9)") != NULL);
    CHECK(strstr(news.last, "4 users marked for repair") != NULL);
    /* What was dropped leaves the file at the next save. */
    CHECK_INT(cairn_router_marks_flush(marks), 0);
    CHECK_U64(cairn_router_marks_saves(marks), 1);
    text = read_text(path);
    CHECK(text != NULL && strstr(text, "carl") == NULL &&
          strstr(text, "sideways") == NULL &&
          strstr(text, "\nivan n2 behind\n") != NULL);
    free(text);
    cairn_router_marks_free(marks);
}

/* A user the file cannot hold is kept in memory only, and said so. */
static void
test_unstorable_user(struct cairn_loop *loop)
{
    char state_dir[128], path[160];
    struct news news = {0};
    struct cairn_router_marks *marks;
    char *text;

    snprintf(state_dir, sizeof(state_dir), "%s/unstorable", temp_dir);
    snprintf(path, sizeof(path), "%s/repair-marks.main", state_dir);
    if ((marks = open_marks(loop, state_dir, &news)) == NULL)
        return;
    CHECK_INT(cairn_router_marks_set(marks, "a b", 0, CAIRN_ROUTER_MARK_BEHIND),
              0);
    CHECK_INT(
        cairn_router_marks_set(marks, "tab\tuser", 0, CAIRN_ROUTER_MARK_BEHIND),
        0);
    CHECK_INT(cairn_router_marks_set(marks, "ok", 0, CAIRN_ROUTER_MARK_BEHIND),
              0);
    CHECK_INT(cairn_router_marks_flush(marks), 0);
    CHECK_U64(cairn_router_marks_count(marks), 3);
    CHECK(strstr(news.last, "2 repair marks not saved") != NULL);
    text = read_text(path);
    CHECK(text != NULL && strstr(text, "\nok n1 behind\n") != NULL &&
          strstr(text, "tab") == NULL && strstr(text, "a b") == NULL);
    free(text);
    cairn_router_marks_free(marks);
}

/* A save that fails is reported once, retried, and recovers. */
static void
test_failing_save(struct cairn_loop *loop)
{
    char state_dir[128], blocker[160];
    struct news news = {0};
    struct cairn_router_marks *marks;

    snprintf(state_dir, sizeof(state_dir), "%s/failing", temp_dir);
    if ((marks = open_marks(loop, state_dir, &news)) == NULL)
        return;
    /* The file's place is taken by a directory: rename fails. */
    snprintf(blocker, sizeof(blocker), "%s/repair-marks.main", state_dir);
    CHECK_INT(mkdir(blocker, 0700), 0);
    CHECK_INT(
        cairn_router_marks_set(marks, "anne", 0, CAIRN_ROUTER_MARK_BEHIND), 0);
    CHECK(cairn_router_marks_flush(marks) < 0);
    CHECK(cairn_router_marks_flush(marks) < 0);
    CHECK_U64(news.warnings, 1);
    CHECK(strstr(news.last, "cannot save repair marks") != NULL);
    CHECK_INT(rmdir(blocker), 0);
    CHECK_INT(cairn_router_marks_flush(marks), 0);
    CHECK(strstr(news.last, "saved to") != NULL);
    CHECK_U64(cairn_router_marks_saves(marks), 1);
    cairn_router_marks_free(marks);
}

static double
seconds_since(const struct timespec *start)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) +
           (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/*
 * 1,000 failed writes within one second (a node outage): the timer saves
 * at most twice meanwhile; the last changes are saved a second later.
 */
static void
test_burst(struct cairn_loop *loop)
{
    enum { FAILURES = 1000 };
    char state_dir[128], path[160], user[32];
    struct news news = {0};
    struct cairn_router_marks *marks;
    uint64_t start = cairn_loop_now_ms(), saves;
    char *text;

    snprintf(state_dir, sizeof(state_dir), "%s/burst", temp_dir);
    snprintf(path, sizeof(path), "%s/repair-marks.main", state_dir);
    if ((marks = open_marks(loop, state_dir, &news)) == NULL)
        return;
    for (size_t i = 0; i < FAILURES; i++) {
        snprintf(user, sizeof(user), "user%zu", i);
        CHECK_INT(cairn_router_marks_set(marks, user, i % 2,
                                         CAIRN_ROUTER_MARK_BEHIND),
                  0);
        /* Spread over the second, the loop running between. */
        while (cairn_loop_now_ms() < start + (i + 1) * 1000 / FAILURES)
            cairn_loop_run_once(loop, 1);
        cairn_loop_run_once(loop, 0);
    }
    saves = cairn_router_marks_saves(marks);
    printf("marks burst: %d failures in %llu ms, %llu saves\n", FAILURES,
           (unsigned long long)(cairn_loop_now_ms() - start),
           (unsigned long long)saves);
    /* One at once, then one a second: 2 when the burst took a second
     * (a loaded machine may stretch it, and earn more). */
    CHECK(saves >= 1 && saves <= 1 + (cairn_loop_now_ms() - start) /
                                         CAIRN_ROUTER_MARKS_SAVE_MS);
    /* The last changes are saved within a second, without a flush, and
     * by one more save at most. */
    text = NULL;
    while (cairn_loop_now_ms() < start + 5000) {
        free(text);
        text = read_text(path);
        if (text != NULL && strstr(text, "\nuser999 n2 behind\n") != NULL)
            break;
        cairn_loop_run_once(loop, 10);
    }
    CHECK(text != NULL && strstr(text, "\nuser999 n2 behind\n") != NULL);
    CHECK(cairn_router_marks_saves(marks) <= saves + 1);
    free(text);
    cairn_router_marks_free(marks);
}

/* 10,000 marks: the file's size and save time, and all read back. */
static void
test_many_marks(struct cairn_loop *loop)
{
    enum { MARKS = 10000 };
    char state_dir[128], path[160], user[32];
    struct news news = {0};
    struct cairn_router_marks *marks;
    struct timespec start;
    struct stat info;
    double seconds;

    snprintf(state_dir, sizeof(state_dir), "%s/many", temp_dir);
    snprintf(path, sizeof(path), "%s/repair-marks.main", state_dir);
    if ((marks = open_marks(loop, state_dir, &news)) == NULL)
        return;
    for (size_t i = 0; i < MARKS; i++) {
        snprintf(user, sizeof(user), "user%05zu", i);
        CHECK_INT(cairn_router_marks_set(marks, user, i % 2,
                                         CAIRN_ROUTER_MARK_BEHIND),
                  0);
    }
    clock_gettime(CLOCK_MONOTONIC, &start);
    CHECK_INT(cairn_router_marks_flush(marks), 0);
    seconds = seconds_since(&start);
    CHECK_INT(stat(path, &info), 0);
    printf("marks file: %d marks, %lld bytes, saved in %.2f ms\n", MARKS,
           (long long)info.st_size, seconds * 1000);
    cairn_router_marks_free(marks);
    if ((marks = open_marks(loop, state_dir, &news)) == NULL)
        return;
    clock_gettime(CLOCK_MONOTONIC, &start);
    CHECK_INT(cairn_router_marks_load(marks), 0);
    printf("marks file: %d marks read back in %.2f ms\n", MARKS,
           seconds_since(&start) * 1000);
    CHECK_U64(cairn_router_marks_count(marks), MARKS);
    CHECK(has_mark(marks, "user09999", 1, CAIRN_ROUTER_MARK_BEHIND));
    cairn_router_marks_free(marks);
}

/* Without a state directory: marks in memory, no file, no news. */
static void
test_memory_only(struct cairn_loop *loop)
{
    struct news news = {0};
    struct cairn_router_marks *marks = NULL;

    CHECK_INT(
        cairn_router_marks_new(loop, NULL, "main", on_news, &news, &marks), 0);
    if (marks == NULL)
        return;
    CHECK(cairn_router_marks_path(marks) == NULL);
    CHECK_INT(
        cairn_router_marks_set(marks, "anne", 0, CAIRN_ROUTER_MARK_BEHIND), 0);
    CHECK_INT(cairn_router_marks_load(marks), 0);
    CHECK_INT(cairn_router_marks_flush(marks), 0);
    CHECK_U64(cairn_router_marks_saves(marks), 0);
    CHECK_U64(cairn_router_marks_count(marks), 1);
    CHECK_U64(news.infos + news.warnings, 0);
    cairn_router_marks_free(marks);
}

int
main(void)
{
    struct cairn_loop *loop = NULL;

    CHECK_INT(cairn_loop_new(&loop), 0);
    if (loop == NULL)
        return check_exit("test_forward_marks");
    make_temp_dir();
    test_round_trip(loop);
    test_damaged_file(loop);
    test_unstorable_user(loop);
    test_failing_save(loop);
    test_memory_only(loop);
    test_burst(loop);
    test_many_marks(loop);
    remove_temp_dir();
    cairn_loop_free(loop);
    return check_exit("test_forward_marks");
}
