/*
 * forward_marks.c - the forwarder's repair marks (forward.c says what they
 * mean) and the file that keeps them across a router restart: without it,
 * a replica that missed writes answered OK before a restart would never
 * be asked first again, and would stay behind silently.
 *
 * The file holds one line per mark, "<user> <node name> behind|asked";
 * node names, not indexes, as indexes change with rings and restarts.
 * Saving rewrites the whole file (a temporary file, fsync, rename, fsync
 * of the directory), so a crash leaves the old or the new file, never a
 * mix; a burst of failures during a node outage changes many marks in a
 * second, so saves are at most one per CAIRN_ROUTER_MARKS_SAVE_MS.
 */
#include "common.h"
#include "daemon.h"
#include "forward_int.h"
#include "router.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Longest line read back: a user name, a node name (64) and a word. */
#define MAX_LINE (CAIRN_ROUTER_USERID_MAX + 128)
/* Malformed lines reported one by one at most; the rest are counted. */
#define MAX_LINE_WARNINGS 5
/* Room for the file: every mark with the longest names. */
#define MAX_FILE_BYTES ((size_t)CAIRN_ROUTER_MAX_REPAIR_MARKS * MAX_LINE + 128)

static const char *const mark_words[] = {
    [CAIRN_ROUTER_MARK_BEHIND] = "behind",
    [CAIRN_ROUTER_MARK_ASKED] = "asked",
};

struct cairn_router_marks {
    struct cairn_router_sequences *table; /* (user, node) -> mark */
    struct cairn_loop *loop;
    char *path;   /* NULL: memory only */
    char **names; /* node client index -> node name */
    size_t name_count;
    cairn_router_marks_news_fn news;
    void *news_arg;
    bool changed;      /* since the last save */
    bool save_failed;  /* the last save failed (reported once) */
    uint64_t timer_id; /* the save timer, 0 when none is armed */
    uint64_t last_save_ms;
    uint64_t saves;
};

static void tell(struct cairn_router_marks *marks, bool warning,
                 const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
tell(struct cairn_router_marks *marks, bool warning, const char *fmt, ...)
{
    char message[512];
    va_list args;

    if (marks->news == NULL)
        return;
    va_start(args, fmt);
    vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);
    marks->news(marks->news_arg, warning, message);
}

/* mkdir -p of the directory that holds path. */
static int
make_parent_directories(const char *path)
{
    char *copy = strdup(path);
    int rc = copy == NULL ? CAIRN_ENOMEM : 0;

    for (char *slash = copy ? strchr(copy + 1, '/') : NULL;
         slash != NULL && rc == 0; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (mkdir(copy, cairn_created_dir_mode()) < 0 && errno != EEXIST)
            rc = CAIRN_EIO;
        *slash = '/';
    }
    free(copy);
    return rc;
}

int
cairn_router_marks_new(struct cairn_loop *loop, const char *state_dir,
                       const char *destination, cairn_router_marks_news_fn news,
                       void *news_arg, struct cairn_router_marks **out)
{
    struct cairn_router_marks *marks = calloc(1, sizeof(*marks));
    int rc = CAIRN_ENOMEM;

    *out = NULL;
    if (marks == NULL)
        return CAIRN_ENOMEM;
    marks->loop = loop;
    marks->news = news;
    marks->news_arg = news_arg;
    if ((rc = cairn_router_sequences_new(&marks->table)) < 0 ||
        state_dir == NULL)
        goto out;
    if (asprintf(&marks->path, "%s/repair-marks.%s", state_dir, destination) <
        0) {
        marks->path = NULL;
        rc = CAIRN_ENOMEM;
    } else {
        rc = make_parent_directories(marks->path);
    }
out:
    if (rc < 0) {
        cairn_router_marks_free(marks);
        return rc;
    }
    *out = marks;
    return CAIRN_OK;
}

void
cairn_router_marks_free(struct cairn_router_marks *marks)
{
    if (marks == NULL)
        return;
    cairn_router_marks_flush(marks);
    if (marks->timer_id != 0)
        cairn_loop_cancel_timer(marks->loop, marks->timer_id);
    for (size_t i = 0; i < marks->name_count; i++)
        free(marks->names[i]);
    free(marks->names);
    free(marks->path);
    cairn_router_sequences_free(marks->table);
    free(marks);
}

int
cairn_router_marks_name_node(struct cairn_router_marks *marks, size_t node,
                             const char *name)
{
    char *copy = strdup(name);

    if (copy == NULL)
        return CAIRN_ENOMEM;
    if (node >= marks->name_count) {
        char **names = realloc(marks->names, (node + 1) * sizeof(*names));

        if (names == NULL) {
            free(copy);
            return CAIRN_ENOMEM;
        }
        for (size_t i = marks->name_count; i <= node; i++)
            names[i] = NULL;
        marks->names = names;
        marks->name_count = node + 1;
    }
    free(marks->names[node]);
    marks->names[node] = copy;
    return CAIRN_OK;
}

/* The node client index named name; false when none is. */
static bool
find_node(const struct cairn_router_marks *marks, const char *name,
          size_t *node)
{
    for (size_t i = 0; i < marks->name_count; i++)
        if (marks->names[i] != NULL && strcmp(marks->names[i], name) == 0) {
            *node = i;
            return true;
        }
    return false;
}

/* A user name the file can hold: no blank, no control byte. */
static bool
user_storable(const char *user)
{
    if (user[0] == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)user; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return false;
    return true;
}

/* What reading the file found, for the warnings. */
struct load_counts {
    size_t malformed, unknown_node, over_limit;
    struct cairn_router_sequences *users; /* (user, 0): users loaded */
    char unknown_name[65];
};

/* Takes one line (without its newline) of the file into the set. */
static int
load_line(struct cairn_router_marks *marks, char *line, unsigned number,
          struct load_counts *counts)
{
    char *save = NULL, *user, *name, *word, *extra;
    size_t node = 0;
    enum cairn_router_mark mark;
    int rc;

    if (line[0] == '#' || line[0] == '\0')
        return 0;
    user = strtok_r(line, " ", &save);
    name = strtok_r(NULL, " ", &save);
    word = strtok_r(NULL, " ", &save);
    extra = strtok_r(NULL, " ", &save);
    if (word != NULL && strcmp(word, "behind") == 0)
        mark = CAIRN_ROUTER_MARK_BEHIND;
    else if (word != NULL && strcmp(word, "asked") == 0)
        mark = CAIRN_ROUTER_MARK_ASKED;
    else
        mark = 0;
    if (mark == 0 || extra != NULL || !user_storable(user) ||
        strlen(user) >= CAIRN_ROUTER_USERID_MAX) {
        if (counts->malformed++ < MAX_LINE_WARNINGS)
            tell(marks, true, "repair marks %s:%u: malformed line skipped",
                 marks->path, number);
        return 0;
    }
    if (!find_node(marks, name, &node)) {
        if (counts->unknown_node++ == 0)
            snprintf(counts->unknown_name, sizeof(counts->unknown_name), "%s",
                     name);
        return 0;
    }
    if (cairn_router_sequences_count(marks->table) >=
        CAIRN_ROUTER_MAX_REPAIR_MARKS) {
        counts->over_limit++;
        return 0;
    }
    if ((rc = cairn_router_sequences_set(marks->table, user, node, mark)) == 0)
        rc = cairn_router_sequences_set(counts->users, user, 0, 1);
    return rc;
}

/* Reads the lines of file; a line too long is one malformed line. */
static int
load_lines(struct cairn_router_marks *marks, FILE *file,
           struct load_counts *counts)
{
    char line[MAX_LINE + 2];
    unsigned number = 0;
    int rc = 0;

    while (rc == 0 && fgets(line, sizeof(line), file) != NULL) {
        size_t len = strlen(line);

        number++;
        if (len > 0 && line[len - 1] == '\n') {
            line[len - 1] = '\0';
        } else if (!feof(file)) {
            int c;

            while ((c = fgetc(file)) != EOF && c != '\n')
                ;
            snprintf(line, sizeof(line), "(too long)"); /* one field */
        }
        rc = load_line(marks, line, number, counts);
    }
    if (rc == 0 && ferror(file))
        rc = CAIRN_EIO;
    return rc;
}

const char *
cairn_router_marks_path(const struct cairn_router_marks *marks)
{
    return marks->path;
}

int
cairn_router_marks_load(struct cairn_router_marks *marks)
{
    struct load_counts counts = {0};
    FILE *file;
    int rc;

    if (marks->path == NULL)
        return CAIRN_OK;
    if ((file = fopen(marks->path, "re")) == NULL && errno == ENOENT)
        return CAIRN_OK;
    if (file == NULL) {
        tell(marks, true,
             "cannot read repair marks %s: %s; the last run's marks "
             "are lost",
             marks->path, strerror(errno));
        return CAIRN_EIO;
    }
    if ((rc = cairn_router_sequences_new(&counts.users)) == 0)
        rc = load_lines(marks, file, &counts);
    fclose(file);
    if (counts.malformed > MAX_LINE_WARNINGS)
        tell(marks, true, "repair marks %s: %zu more malformed lines skipped",
             marks->path, counts.malformed - MAX_LINE_WARNINGS);
    if (counts.unknown_node > 0)
        tell(marks, true,
             "repair marks %s: %zu marks for nodes not in the configuration "
             "dropped (e.g. node %s)",
             marks->path, counts.unknown_node, counts.unknown_name);
    if (counts.over_limit > 0)
        tell(marks, true,
             "repair marks %s: %zu marks past the limit of %u dropped",
             marks->path, counts.over_limit, CAIRN_ROUTER_MAX_REPAIR_MARKS);
    /* What was dropped goes from the file at the next save. */
    marks->changed =
        counts.malformed + counts.unknown_node + counts.over_limit > 0;
    if (cairn_router_marks_count(marks) > 0)
        tell(marks, false,
             "%zu users marked for repair from the last run (%zu user/node "
             "marks in %s): the next GET of each asks its lagging replica "
             "first",
             cairn_router_sequences_count(counts.users),
             cairn_router_marks_count(marks), marks->path);
    cairn_router_sequences_free(counts.users);
    return rc;
}

bool
cairn_router_marks_get(const struct cairn_router_marks *marks, const char *user,
                       size_t node, enum cairn_router_mark *mark)
{
    uint64_t value = 0;

    if (!cairn_router_sequences_get(marks->table, user, node, &value))
        return false;
    *mark = (enum cairn_router_mark)value;
    return true;
}

static void on_save_timer(struct cairn_loop *loop, uint64_t timer_id,
                          void *arg);

/* Arms the save timer: due a second after the last save, or now. */
static void
schedule_save(struct cairn_router_marks *marks)
{
    uint64_t now = cairn_loop_now_ms(), delay = 0;

    marks->changed = true;
    if (marks->path == NULL || marks->timer_id != 0)
        return;
    if (marks->last_save_ms != 0 &&
        now < marks->last_save_ms + CAIRN_ROUTER_MARKS_SAVE_MS)
        delay = marks->last_save_ms + CAIRN_ROUTER_MARKS_SAVE_MS - now;
    /* Without a timer the file is still written by flush and free. */
    if (cairn_loop_add_timer(marks->loop, delay, 0, on_save_timer, marks,
                             &marks->timer_id) < 0)
        marks->timer_id = 0;
}

static void
on_save_timer(struct cairn_loop *loop, uint64_t timer_id, void *arg)
{
    struct cairn_router_marks *marks = arg;

    (void)loop;
    (void)timer_id;
    marks->timer_id = 0;
    if (cairn_router_marks_flush(marks) < 0)
        schedule_save(marks); /* try again in a second */
}

int
cairn_router_marks_set(struct cairn_router_marks *marks, const char *user,
                       size_t node, enum cairn_router_mark mark)
{
    enum cairn_router_mark old;
    int rc;

    if (cairn_router_marks_get(marks, user, node, &old) && old == mark)
        return CAIRN_OK;
    rc = cairn_router_sequences_set(marks->table, user, node, mark);
    if (rc == 0)
        schedule_save(marks);
    return rc;
}

void
cairn_router_marks_clear(struct cairn_router_marks *marks, const char *user,
                         size_t node)
{
    enum cairn_router_mark old;

    if (!cairn_router_marks_get(marks, user, node, &old))
        return;
    cairn_router_sequences_reset(marks->table, user, node);
    schedule_save(marks);
}

size_t
cairn_router_marks_count(const struct cairn_router_marks *marks)
{
    return cairn_router_sequences_count(marks->table);
}

uint64_t
cairn_router_marks_saves(const struct cairn_router_marks *marks)
{
    return marks->saves;
}

/* What printing the marks needs. */
struct print_state {
    const struct cairn_router_marks *marks;
    struct cairn_buf *text;
    size_t unstorable;
};

static int
print_mark(void *arg, const char *user, size_t node, uint64_t value)
{
    struct print_state *state = arg;
    const struct cairn_router_marks *marks = state->marks;

    if (!user_storable(user) || node >= marks->name_count ||
        marks->names[node] == NULL ||
        (value != CAIRN_ROUTER_MARK_BEHIND &&
         value != CAIRN_ROUTER_MARK_ASKED)) {
        state->unstorable++;
        return 0;
    }
    return cairn_buf_printf(state->text, "%s %s %s\n", user, marks->names[node],
                            mark_words[value]);
}

/* Writes text to path through a temporary file, durably. */
static int
replace_file(const char *path, const struct cairn_buf *text)
{
    char temporary[4096];
    int fd = -1, rc = 0;

    if ((size_t)snprintf(temporary, sizeof(temporary), "%s.tmp", path) >=
        sizeof(temporary))
        return CAIRN_ETOOBIG;
    fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
              cairn_created_file_mode());
    if (fd < 0)
        return errno == ENOSPC ? CAIRN_ENOSPACE : CAIRN_EIO;
    if (text->len > 0)
        rc = cairn_write_all(fd, text->data, text->len);
    if (rc == 0 && fsync(fd) < 0)
        rc = errno == ENOSPC ? CAIRN_ENOSPACE : CAIRN_EIO;
    if (close(fd) < 0 && rc == 0)
        rc = CAIRN_EIO;
    if (rc == 0 && rename(temporary, path) < 0)
        rc = CAIRN_EIO;
    if (rc == 0)
        rc = cairn_fsync_parent_dir(path);
    if (rc < 0)
        unlink(temporary);
    return rc;
}

int
cairn_router_marks_flush(struct cairn_router_marks *marks)
{
    struct cairn_buf text;
    struct print_state state = {.marks = marks, .text = &text};
    int rc;

    if (marks->path == NULL || !marks->changed)
        return CAIRN_OK;
    cairn_buf_init(&text, MAX_FILE_BYTES);
    rc = cairn_buf_append_str(&text, "# cairn-router repair marks: user, "
                                     "node, behind|asked (forward.c)\n");
    if (rc == 0)
        rc = cairn_router_sequences_each(marks->table, print_mark, &state);
    if (rc == 0)
        rc = replace_file(marks->path, &text);
    cairn_buf_release(&text);
    marks->last_save_ms = cairn_loop_now_ms();
    if (rc < 0) {
        if (!marks->save_failed)
            tell(marks, true, "cannot save repair marks to %s: %s (retrying)",
                 marks->path, cairn_strerror(rc));
        marks->save_failed = true;
        return rc;
    }
    if (state.unstorable > 0)
        tell(marks, true,
             "%zu repair marks not saved: user or node cannot be "
             "written",
             state.unstorable);
    if (marks->save_failed)
        tell(marks, false, "repair marks saved to %s again", marks->path);
    marks->save_failed = false;
    marks->changed = false;
    marks->saves++;
    return CAIRN_OK;
}
