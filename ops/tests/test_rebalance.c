/*
 * test_rebalance.c - the journal that makes `cairnctl rebalance`
 * resumable: parsing (last line of a user wins, a torn last line is
 * ignored, another ring's journal or a malformed line is refused), durable
 * records read back by a new run, and the states a resumed run acts on.
 */
#include "check.h"
#include "common.h"
#include "rebalance_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct parse_case {
    const char *name;
    const char *text;
    int rc;
    const char *user; /* checked when rc == 0 */
    enum cairn_rebalance_state state;
    int64_t switched_at;
    bool committed;
};

static const struct parse_case parse_cases[] = {
    {"empty", "", 0, "anne", CAIRN_REBALANCE_PENDING, 0, false},
    {"header only", "cairn-rebalance 1 main 2\n", 0, "anne",
     CAIRN_REBALANCE_PENDING, 0, false},
    {"held", "cairn-rebalance 1 main 2\nheld anne\n", 0, "anne",
     CAIRN_REBALANCE_HELD, 0, false},
    {"last line wins",
     "cairn-rebalance 1 main 2\nheld anne\ncopied anne\nswitched anne 1700\n",
     0, "anne", CAIRN_REBALANCE_SWITCHED, 1700, false},
    {"other users untouched",
     "cairn-rebalance 1 main 2\nheld bob\nretired bob\nheld anne\n", 0, "bob",
     CAIRN_REBALANCE_RETIRED, 0, false},
    {"torn last line ignored",
     "cairn-rebalance 1 main 2\nheld anne\nswitched anne 17", 0, "anne",
     CAIRN_REBALANCE_HELD, 0, false},
    {"committed", "cairn-rebalance 1 main 2\nswitched a@b.org 5\ncommitted\n",
     0, "a@b.org", CAIRN_REBALANCE_SWITCHED, 5, true},
    {"another epoch", "cairn-rebalance 1 main 3\nheld anne\n", CAIRN_EINVAL,
     NULL, 0, 0, false},
    {"another destination", "cairn-rebalance 1 offsite 2\n", CAIRN_EINVAL, NULL,
     0, 0, false},
    {"unknown version", "cairn-rebalance 2 main 2\n", CAIRN_EPARSE, NULL, 0, 0,
     false},
    {"no header", "held anne\n", CAIRN_EPARSE, NULL, 0, 0, false},
    {"unknown step", "cairn-rebalance 1 main 2\nmoved anne\n", CAIRN_EPARSE,
     NULL, 0, 0, false},
    {"switched without time", "cairn-rebalance 1 main 2\nswitched anne\n",
     CAIRN_EPARSE, NULL, 0, 0, false},
    {"bad time", "cairn-rebalance 1 main 2\nswitched anne 12x\n", CAIRN_EPARSE,
     NULL, 0, 0, false},
    {"extra word", "cairn-rebalance 1 main 2\nheld anne bob\n", CAIRN_EPARSE,
     NULL, 0, 0, false},
};

static void
test_parse(void)
{
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
        const struct parse_case *c = &parse_cases[i];
        struct cairn_rebalance_journal journal = {.fd = -1, .epoch = 2};
        int64_t when = -1;
        int rc;

        journal.destination = strdup("main");
        rc = cairn_rebalance_journal_parse(&journal, c->text, strlen(c->text));
        if (rc != c->rc)
            fprintf(stderr, "case %s\n", c->name);
        CHECK_INT(rc, c->rc);
        if (rc == 0 && c->user != NULL) {
            CHECK_INT(cairn_rebalance_journal_state(&journal, c->user, &when),
                      c->state);
            CHECK_INT(when, c->switched_at);
            CHECK(journal.committed == c->committed);
        }
        cairn_rebalance_journal_release(&journal);
    }
}

/* Records survive a new open, as a resumed run reads them. */
static void
test_record_and_resume(void)
{
    char dir[] = "/tmp/test_rebalance_XXXXXX", path[256];
    struct cairn_rebalance_journal journal, again;
    int64_t when = 0;
    FILE *file;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/new.ring.journal", dir);
    CHECK_INT(cairn_rebalance_journal_open(path, "main", 7, &journal), 0);
    CHECK(access(path, F_OK) != 0); /* nothing written before a step */
    CHECK_INT(cairn_rebalance_journal_record(&journal, "anne",
                                             CAIRN_REBALANCE_HELD, 0),
              0);
    CHECK_INT(cairn_rebalance_journal_record(&journal, "bob",
                                             CAIRN_REBALANCE_HELD, 0),
              0);
    CHECK_INT(cairn_rebalance_journal_record(&journal, "anne",
                                             CAIRN_REBALANCE_SWITCHED, 1234),
              0);
    /* Names that would break the line format are refused. */
    CHECK_INT(cairn_rebalance_journal_record(&journal, "a b",
                                             CAIRN_REBALANCE_HELD, 0),
              CAIRN_EINVAL);
    CHECK_INT(cairn_rebalance_journal_record(&journal, "x",
                                             CAIRN_REBALANCE_PENDING, 0),
              CAIRN_EINVAL);
    cairn_rebalance_journal_release(&journal);

    /* A crash in the middle of a line: the torn line is ignored. */
    file = fopen(path, "a");
    CHECK(file != NULL);
    if (file) {
        fputs("retired bo", file);
        fclose(file);
    }
    CHECK_INT(cairn_rebalance_journal_open(path, "main", 7, &again), 0);
    CHECK_INT(cairn_rebalance_journal_state(&again, "anne", &when),
              CAIRN_REBALANCE_SWITCHED);
    CHECK_INT(when, 1234);
    CHECK_INT(cairn_rebalance_journal_state(&again, "bob", NULL),
              CAIRN_REBALANCE_HELD);
    CHECK_INT(cairn_rebalance_journal_state(&again, "carol", NULL),
              CAIRN_REBALANCE_PENDING);
    CHECK(!again.committed);
    cairn_rebalance_journal_release(&again);

    /* The journal of another ring is not resumed. */
    CHECK_INT(cairn_rebalance_journal_open(path, "main", 8, &again),
              CAIRN_EINVAL);
    unlink(path);
    rmdir(dir);
}

/* After the torn line a new record starts a line of its own. */
static void
test_commit_after_torn_line(void)
{
    char dir[] = "/tmp/test_rebalance_XXXXXX", path[256];
    struct cairn_rebalance_journal journal;
    FILE *file;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/j", dir);
    file = fopen(path, "w");
    CHECK(file != NULL);
    if (file) {
        fputs("cairn-rebalance 1 main 3\nswitched anne 9\nretired an", file);
        fclose(file);
    }
    CHECK_INT(cairn_rebalance_journal_open(path, "main", 3, &journal), 0);
    CHECK_INT(cairn_rebalance_journal_state(&journal, "anne", NULL),
              CAIRN_REBALANCE_SWITCHED);
    CHECK_INT(cairn_rebalance_journal_commit(&journal), 0);
    CHECK_INT(cairn_rebalance_journal_record(&journal, "anne",
                                             CAIRN_REBALANCE_RETIRED, 0),
              0);
    cairn_rebalance_journal_release(&journal);
    CHECK_INT(cairn_rebalance_journal_open(path, "main", 3, &journal), 0);
    CHECK(journal.committed);
    CHECK_INT(cairn_rebalance_journal_state(&journal, "anne", NULL),
              CAIRN_REBALANCE_RETIRED);
    cairn_rebalance_journal_release(&journal);
    unlink(path);
    rmdir(dir);
}

int
main(void)
{
    test_parse();
    test_record_and_resume();
    test_commit_after_torn_line();
    CHECK_STR(cairn_rebalance_state_name(CAIRN_REBALANCE_COPIED), "copied");
    return check_exit("test_rebalance");
}
