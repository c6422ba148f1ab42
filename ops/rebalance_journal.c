/*
 * rebalance_journal.c - the journal of `cairnctl rebalance`: an
 * append-only text file, fsynced line by line, from which an interrupted
 * run learns how far each user got. Append-only so that a crash can only
 * tear the last line, which is then ignored (the step it records is redone,
 * and every step is idempotent).
 */
#include "common.h"
#include "daemon.h"
#include "rebalance_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_JOURNAL_BYTES (1024u << 20)
#define MAX_LINE 1024

static const char *const state_names[] = {"pending", "held", "copied",
                                          "switched", "retired"};

const char *
cairn_rebalance_state_name(enum cairn_rebalance_state state)
{
    return (unsigned)state < 5 ? state_names[state] : "?";
}

static long
find_entry(const struct cairn_rebalance_journal *journal, const char *userid,
           size_t *insert_at)
{
    size_t low = 0, high = journal->count;

    while (low < high) {
        size_t mid = (low + high) / 2;
        int cmp = strcmp(journal->entries[mid].userid, userid);

        if (cmp == 0)
            return (long)mid;
        if (cmp < 0)
            low = mid + 1;
        else
            high = mid;
    }
    if (insert_at)
        *insert_at = low;
    return -1;
}

/* Sets the user's state in memory (adding the user when new). */
static int
set_state(struct cairn_rebalance_journal *journal, const char *userid,
          enum cairn_rebalance_state state, int64_t when)
{
    size_t at = 0;
    long found = find_entry(journal, userid, &at);
    struct cairn_rebalance_entry *entry;

    if (found < 0) {
        if (journal->count == journal->cap) {
            size_t cap = journal->cap ? journal->cap * 2 : 64;
            struct cairn_rebalance_entry *grown =
                realloc(journal->entries, cap * sizeof(*grown));

            if (grown == NULL)
                return CAIRN_ENOMEM;
            journal->entries = grown;
            journal->cap = cap;
        }
        memmove(&journal->entries[at + 1], &journal->entries[at],
                (journal->count - at) * sizeof(*journal->entries));
        journal->entries[at] = (struct cairn_rebalance_entry){0};
        if ((journal->entries[at].userid = strdup(userid)) == NULL) {
            memmove(&journal->entries[at], &journal->entries[at + 1],
                    (journal->count - at) * sizeof(*journal->entries));
            return CAIRN_ENOMEM;
        }
        journal->count++;
        found = (long)at;
    }
    entry = &journal->entries[found];
    entry->state = state;
    if (state == CAIRN_REBALANCE_SWITCHED)
        entry->switched_at = when;
    return 0;
}

/* One line without its newline. */
static int
parse_line(struct cairn_rebalance_journal *journal, char *line, bool first)
{
    char *words[5] = {0}, *save = NULL;
    size_t count = 0;
    uint64_t number = 0;

    for (char *word = strtok_r(line, " ", &save); word != NULL && count < 5;
         word = strtok_r(NULL, " ", &save))
        words[count++] = word;
    if (first) {
        if (count != 4 || strcmp(words[0], "cairn-rebalance") != 0 ||
            strcmp(words[1], "1") != 0 ||
            cairn_parse_u64_str(words[3], 1, UINT64_MAX, &number) < 0)
            return CAIRN_EPARSE;
        if (strcmp(words[2], journal->destination) != 0 ||
            number != journal->epoch)
            return CAIRN_EINVAL;
        return 0;
    }
    if (count == 1 && strcmp(words[0], "committed") == 0) {
        journal->committed = true;
        return 0;
    }
    for (int state = CAIRN_REBALANCE_HELD; state <= CAIRN_REBALANCE_RETIRED;
         state++) {
        bool switched = state == CAIRN_REBALANCE_SWITCHED;

        if (count < 2 || strcmp(words[0], state_names[state]) != 0)
            continue;
        if (count != (switched ? 3u : 2u) ||
            (switched &&
             cairn_parse_u64_str(words[2], 0, INT64_MAX, &number) < 0))
            return CAIRN_EPARSE;
        return set_state(journal, words[1], state, (int64_t)number);
    }
    return CAIRN_EPARSE;
}

int
cairn_rebalance_journal_parse(struct cairn_rebalance_journal *journal,
                              const char *text, size_t len)
{
    char line[MAX_LINE];
    size_t start = 0;
    bool first = true;
    int rc = 0;

    while (start < len && rc == 0) {
        const char *newline = memchr(text + start, '\n', len - start);
        size_t line_len;

        if (newline == NULL)
            break; /* torn last line: its step is redone */
        line_len = (size_t)(newline - (text + start));
        if (line_len >= sizeof(line))
            return CAIRN_EPARSE;
        memcpy(line, text + start, line_len);
        line[line_len] = '\0';
        rc = parse_line(journal, line, first);
        first = false;
        start += line_len + 1;
        journal->whole_bytes = start;
    }
    return rc;
}

int
cairn_rebalance_journal_open(const char *path, const char *destination,
                             uint64_t epoch,
                             struct cairn_rebalance_journal *journal)
{
    struct cairn_buf text;
    char block[65536];
    ssize_t got = 0;
    int fd = -1, rc = CAIRN_ENOMEM;

    *journal = (struct cairn_rebalance_journal){.fd = -1, .epoch = epoch};
    cairn_buf_init(&text, MAX_JOURNAL_BYTES);
    if ((journal->path = strdup(path)) == NULL ||
        (journal->destination = strdup(destination)) == NULL)
        goto out;
    rc = 0;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        rc = errno == ENOENT ? 0 : CAIRN_EIO;
        goto out;
    }
    while (rc == 0 && (got = read(fd, block, sizeof(block))) > 0)
        rc = cairn_buf_append(&text, block, (size_t)got);
    if (rc == 0 && got < 0)
        rc = CAIRN_EIO;
    if (rc == 0)
        rc = cairn_rebalance_journal_parse(journal, text.data, text.len);
out:
    if (fd >= 0)
        close(fd);
    cairn_buf_release(&text);
    if (rc < 0)
        cairn_rebalance_journal_release(journal);
    return rc;
}

void
cairn_rebalance_journal_release(struct cairn_rebalance_journal *journal)
{
    for (size_t i = 0; i < journal->count; i++)
        free(journal->entries[i].userid);
    free(journal->entries);
    free(journal->path);
    free(journal->destination);
    if (journal->fd >= 0)
        close(journal->fd);
    *journal = (struct cairn_rebalance_journal){.fd = -1};
}

enum cairn_rebalance_state
cairn_rebalance_journal_state(const struct cairn_rebalance_journal *journal,
                              const char *userid, int64_t *switched_at)
{
    long found = find_entry(journal, userid, NULL);

    if (switched_at)
        *switched_at = found < 0 ? 0 : journal->entries[found].switched_at;
    return found < 0 ? CAIRN_REBALANCE_PENDING : journal->entries[found].state;
}

/* Appends one line and fsyncs; the header first when the file is new. */
static int
append_line(struct cairn_rebalance_journal *journal, const char *line)
{
    char header[512];
    struct stat st;
    int rc;

    if (journal->fd < 0) {
        journal->fd =
            open(journal->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                 cairn_created_file_mode());
        if (journal->fd < 0 || fstat(journal->fd, &st) < 0)
            return CAIRN_EIO;
        /* A torn last line would run into the next one. */
        if ((uint64_t)st.st_size > journal->whole_bytes) {
            if (ftruncate(journal->fd, (off_t)journal->whole_bytes) < 0)
                return CAIRN_EIO;
            st.st_size = (off_t)journal->whole_bytes;
        }
        if (st.st_size == 0) {
            snprintf(header, sizeof(header), "cairn-rebalance 1 %s %llu\n",
                     journal->destination, (unsigned long long)journal->epoch);
            if ((rc = cairn_write_all(journal->fd, header, strlen(header))) <
                    0 ||
                (rc = cairn_fsync_parent_dir(journal->path)) < 0)
                return rc;
        }
    }
    if ((rc = cairn_write_all(journal->fd, line, strlen(line))) < 0)
        return rc;
    return fsync(journal->fd) == 0 ? 0 : CAIRN_EIO;
}

int
cairn_rebalance_journal_record(struct cairn_rebalance_journal *journal,
                               const char *userid,
                               enum cairn_rebalance_state state, int64_t when)
{
    char line[MAX_LINE];
    int rc;

    if (state == CAIRN_REBALANCE_PENDING || strlen(userid) > 300 ||
        strchr(userid, ' ') != NULL || strchr(userid, '\n') != NULL)
        return CAIRN_EINVAL;
    if (state == CAIRN_REBALANCE_SWITCHED)
        snprintf(line, sizeof(line), "switched %s %lld\n", userid,
                 (long long)when);
    else
        snprintf(line, sizeof(line), "%s %s\n", state_names[state], userid);
    if ((rc = append_line(journal, line)) < 0)
        return rc;
    return set_state(journal, userid, state, when);
}

int
cairn_rebalance_journal_commit(struct cairn_rebalance_journal *journal)
{
    int rc = append_line(journal, "committed\n");

    if (rc == 0)
        journal->committed = true;
    return rc;
}
