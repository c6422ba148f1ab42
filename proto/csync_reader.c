/*
 * csync_reader.c - the server side of csync framing: turns the bytes a
 * sync_client sends into one command at a time (sync-protocol.md §2.1),
 * and skips the rest of a malformed command line the way Cyrus's eatline()
 * does, so the server can answer BAD and carry on.
 */
#include "csync_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* --- line scanner ------------------------------------------------------ */

enum scanner_state {
    SC_TEXT,
    SC_HEADER,      /* between '{' and '}' */
    SC_AFTER_BRACE, /* after '}': CR or LF starts a literal */
    SC_AFTER_CR,
    SC_BODY, /* inside a literal body */
};

void
cairn_line_scanner_reset(struct cairn_line_scanner *scanner)
{
    memset(scanner, 0, sizeof(*scanner));
    scanner->state = SC_TEXT;
}

/*
 * The literal length announced by the header just closed: "N" or "N+" for
 * a literal, "part guid N" for a file literal. false if it is neither.
 */
static bool
header_length(const struct cairn_line_scanner *scanner, uint64_t *length)
{
    const char *text = scanner->header;
    size_t len = scanner->header_len;
    const char *space;

    if (scanner->header_is_file) {
        space = memrchr(text, ' ', len);
        if (space == NULL)
            return false;
        len -= (size_t)(space + 1 - text);
        text = space + 1;
    } else if (len > 0 && text[len - 1] == '+') {
        len--;
    }
    return cairn_parse_u64(text, len, 0, UINT64_MAX, length) == 0;
}

/* Returns true when the LF just seen ends the line (no literal follows). */
static bool
start_body(struct cairn_line_scanner *scanner)
{
    uint64_t length;

    if (!header_length(scanner, &length))
        return true;
    scanner->remaining = length;
    scanner->state = length > 0 ? SC_BODY : SC_TEXT;
    return false;
}

bool
cairn_line_scanner_scan(struct cairn_line_scanner *scanner,
                        const unsigned char *data, size_t len, size_t *used)
{
    size_t at = 0;

    while (at < len) {
        unsigned char c = data[at];
        switch (scanner->state) {
        case SC_BODY: {
            size_t n = len - at;
            if (n > scanner->remaining)
                n = (size_t)scanner->remaining;
            scanner->remaining -= n;
            at += n;
            if (scanner->remaining == 0)
                scanner->state = SC_TEXT;
            continue;
        }
        case SC_TEXT:
            at++;
            if (c == '\n')
                goto line_end;
            if (c == '{') {
                scanner->header_len = 0;
                scanner->header_is_file = scanner->after_percent;
                scanner->state = SC_HEADER;
            }
            scanner->after_percent = (c == '%');
            continue;
        case SC_HEADER:
            at++;
            if (c == '\n')
                goto line_end;
            if (c == '}')
                scanner->state = SC_AFTER_BRACE;
            else if (scanner->header_len < sizeof(scanner->header))
                scanner->header[scanner->header_len++] = (char)c;
            else
                scanner->state = SC_TEXT;
            continue;
        case SC_AFTER_BRACE:
        case SC_AFTER_CR:
            if (c == '\r' && scanner->state == SC_AFTER_BRACE) {
                scanner->state = SC_AFTER_CR;
                at++;
            } else if (c == '\n') {
                at++;
                if (start_body(scanner))
                    goto line_end;
            } else {
                scanner->state = SC_TEXT; /* look at c again as text */
            }
            continue;
        }
    }
    *used = at;
    return false;
line_end:
    cairn_line_scanner_reset(scanner);
    *used = at;
    return true;
}

/* --- verbs ------------------------------------------------------------- */

static const struct {
    const char *name;
    enum cairn_csync_verb verb;
} verbs[] = {
    {"GET", CAIRN_CSYNC_GET},
    {"APPLY", CAIRN_CSYNC_APPLY},
    {"RESTORE", CAIRN_CSYNC_RESTORE},
    {"AUTHENTICATE", CAIRN_CSYNC_AUTHENTICATE},
    {"STARTTLS", CAIRN_CSYNC_STARTTLS},
    {"COMPRESS", CAIRN_CSYNC_COMPRESS},
    {"NOOP", CAIRN_CSYNC_NOOP},
    {"RESTART", CAIRN_CSYNC_RESTART},
    {"EXIT", CAIRN_CSYNC_EXIT},
};

const char *
cairn_csync_verb_name(enum cairn_csync_verb verb)
{
    if (verb == CAIRN_CSYNC_LINE)
        return "(line)";
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        if (verbs[i].verb == verb)
            return verbs[i].name;
    }
    return "(unknown)";
}

enum cairn_csync_verb
cairn_csync_verb_lookup(const char *word, size_t len)
{
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        if (strlen(verbs[i].name) == len &&
            strncasecmp(verbs[i].name, word, len) == 0)
            return verbs[i].verb;
    }
    return CAIRN_CSYNC_UNKNOWN;
}

static bool
is_dlist_verb(enum cairn_csync_verb verb)
{
    return verb == CAIRN_CSYNC_GET || verb == CAIRN_CSYNC_APPLY ||
           verb == CAIRN_CSYNC_RESTORE;
}

void
cairn_csync_command_release(struct cairn_csync_command *cmd)
{
    if (cmd == NULL)
        return;
    free(cmd->word);
    cairn_dlist_free(cmd->value);
    for (int i = 0; i < cmd->argc && i < CAIRN_CSYNC_MAX_ARGS; i++)
        free(cmd->args[i]);
    memset(cmd, 0, sizeof(*cmd));
}

/* --- command reader ---------------------------------------------------- */

enum reader_state {
    R_VERB,  /* the first word */
    R_LINE,  /* rest of a simple command line (or a raw line) */
    R_DLIST, /* key and value of GET / APPLY / RESTORE */
    R_SKIP,  /* after an error: up to the end of the command line */
};

struct cairn_csync_reader {
    size_t max_line;
    struct cairn_dlist_parser *parser;
    struct cairn_line_scanner scanner;
    enum reader_state state;
    bool expect_line;
    bool raw_line;
    enum cairn_csync_verb verb;
    struct cairn_buf word;
    struct cairn_buf line;
    char error[320];
};

int
cairn_csync_reader_new(size_t max_line, const struct cairn_dlist_limits *limits,
                       const struct cairn_dlist_file_sink *sink,
                       struct cairn_csync_reader **reader)
{
    struct cairn_csync_reader *r;
    int rc;

    *reader = NULL;
    if (max_line == 0)
        return CAIRN_EINVAL;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return CAIRN_ENOMEM;
    rc = cairn_dlist_parser_new(limits, sink,
                                CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL,
                                &r->parser);
    if (rc < 0) {
        free(r);
        return rc;
    }
    r->max_line = max_line;
    cairn_buf_init(&r->word, max_line);
    cairn_buf_init(&r->line, max_line);
    cairn_line_scanner_reset(&r->scanner);
    r->state = R_VERB;
    *reader = r;
    return 0;
}

void
cairn_csync_reader_free(struct cairn_csync_reader *r)
{
    if (r == NULL)
        return;
    cairn_dlist_parser_free(r->parser);
    cairn_buf_release(&r->word);
    cairn_buf_release(&r->line);
    free(r);
}

void
cairn_csync_reader_expect_line(struct cairn_csync_reader *r)
{
    r->expect_line = true;
}

const char *
cairn_csync_reader_error(const struct cairn_csync_reader *r)
{
    return r->error;
}

bool
cairn_csync_reader_skipping(const struct cairn_csync_reader *r)
{
    return r->state == R_SKIP;
}

static void
start_command(struct cairn_csync_reader *r)
{
    cairn_buf_reset(&r->word);
    cairn_buf_reset(&r->line);
    cairn_line_scanner_reset(&r->scanner);
    r->verb = CAIRN_CSYNC_UNKNOWN;
    r->raw_line = false;
    r->state = R_VERB;
}

/* Records the error and switches to skipping the rest of the line. */
static int __attribute__((format(printf, 4, 5)))
reader_fail(struct cairn_csync_reader *r, int rc, bool line_done,
            const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->error, sizeof(r->error), fmt, ap);
    va_end(ap);
    cairn_dlist_parser_reset(r->parser);
    if (line_done)
        start_command(r);
    else
        r->state = R_SKIP;
    return rc;
}

/* "Apply" as Cyrus spells verbs in its BAD texts. */
static void
capitalised(const char *name, char *out, size_t size)
{
    size_t i;

    for (i = 0; name[i] != '\0' && i + 1 < size; i++)
        out[i] = (char)(i == 0 ? name[i] : (name[i] | 0x20));
    out[i] = '\0';
}

static int
copy_word(struct cairn_csync_command *cmd, const char *word)
{
    cmd->word = strdup(word);
    return cmd->word != NULL ? 0 : CAIRN_ENOMEM;
}

/* Splits the rest of a simple command line into cmd->args. */
static int
split_args(struct cairn_csync_reader *r, struct cairn_csync_command *cmd)
{
    char *text = r->line.data != NULL ? r->line.data : "";
    char *save = NULL;
    char name[16];

    if (r->raw_line) {
        cmd->args[0] = strdup(text);
        if (cmd->args[0] == NULL)
            return CAIRN_ENOMEM;
        cmd->argc = 1;
        return 0;
    }
    for (char *word = strtok_r(text, " \t", &save); word != NULL;
         word = strtok_r(NULL, " \t", &save)) {
        if (cmd->argc == CAIRN_CSYNC_MAX_ARGS) {
            capitalised(cmd->word, name, sizeof(name));
            snprintf(r->error, sizeof(r->error),
                     "Unexpected extra arguments to %s", name);
            return CAIRN_EPARSE;
        }
        cmd->args[cmd->argc] = strdup(word);
        if (cmd->args[cmd->argc] == NULL)
            return CAIRN_ENOMEM;
        cmd->argc++;
    }
    return 0;
}

static int
finish_line(struct cairn_csync_reader *r, struct cairn_csync_command *cmd)
{
    const char *word = r->word.data != NULL ? r->word.data : "";
    int rc;

    if (r->line.len > 0 && r->line.data[r->line.len - 1] == '\r')
        r->line.data[--r->line.len] = '\0';
    cmd->verb = r->raw_line ? CAIRN_CSYNC_LINE : r->verb;
    if ((rc = copy_word(cmd, r->raw_line ? "" : word)) < 0 ||
        (rc = split_args(r, cmd)) < 0) {
        cairn_csync_command_release(cmd);
        if (rc == CAIRN_ENOMEM)
            snprintf(r->error, sizeof(r->error), "out of memory");
    }
    start_command(r);
    return rc;
}

/*
 * The step functions consume *used bytes and return 0 or an error; they
 * set *complete when cmd holds a finished command.
 */
static int
step_line(struct cairn_csync_reader *r, const unsigned char *data, size_t len,
          size_t *used, struct cairn_csync_command *cmd, bool *complete)
{
    const unsigned char *lf = memchr(data, '\n', len);
    size_t n = lf != NULL ? (size_t)(lf - data) : len;

    *used = n;
    if (r->word.len + r->line.len + n > r->max_line ||
        cairn_buf_append(&r->line, data, n) < 0)
        return reader_fail(r, CAIRN_ETOOBIG, false,
                           "command line longer than %zu bytes", r->max_line);
    if (lf == NULL)
        return 0;
    *used = n + 1;
    *complete = true;
    return finish_line(r, cmd);
}

static int
step_verb(struct cairn_csync_reader *r, const unsigned char *data, size_t len,
          size_t *used)
{
    size_t n = 0;
    char name[16];

    while (n < len && data[n] != ' ' && data[n] != '\t' && data[n] != '\r' &&
           data[n] != '\n')
        n++;
    *used = n;
    if (cairn_buf_append(&r->word, data, n) < 0)
        return reader_fail(r, CAIRN_ETOOBIG, false,
                           "command word longer than %zu bytes", r->max_line);
    if (n == len)
        return 0;
    r->verb =
        cairn_csync_verb_lookup(r->word.data ? r->word.data : "", r->word.len);
    if (data[n] == ' ' || data[n] == '\t') {
        *used = n + 1;
        r->state = is_dlist_verb(r->verb) ? R_DLIST : R_LINE;
        return 0;
    }
    if (is_dlist_verb(r->verb)) {
        capitalised(cairn_csync_verb_name(r->verb), name, sizeof(name));
        return reader_fail(r, CAIRN_EPARSE, false,
                           "Missing required argument to %s", name);
    }
    r->state = R_LINE; /* the CR/LF ends an argument-less command */
    return 0;
}

static int
step_dlist(struct cairn_csync_reader *r, const unsigned char *data, size_t len,
           size_t *used, struct cairn_csync_command *cmd, bool *complete)
{
    int rc = cairn_dlist_parser_feed(r->parser, data, len, used);

    if (rc == CAIRN_EAGAIN)
        return 0;
    if (rc < 0)
        return reader_fail(r, rc, false, "Failed to parse %s line: %s",
                           cairn_csync_verb_name(r->verb),
                           cairn_dlist_parser_error(r->parser));
    *complete = true;
    cmd->verb = r->verb;
    cmd->value = cairn_dlist_parser_take(r->parser);
    if ((rc = copy_word(cmd, r->word.data)) < 0) {
        cairn_csync_command_release(cmd);
        snprintf(r->error, sizeof(r->error), "out of memory");
    }
    start_command(r);
    return rc;
}

static int
step(struct cairn_csync_reader *r, const unsigned char *data, size_t len,
     size_t *used, struct cairn_csync_command *cmd, bool *complete)
{
    if (r->state == R_SKIP) {
        if (cairn_line_scanner_scan(&r->scanner, data, len, used))
            start_command(r);
        return 0;
    }
    if (r->state == R_VERB && r->expect_line && r->word.len == 0) {
        r->expect_line = false;
        r->raw_line = true;
        r->state = R_LINE;
    }
    if (r->state == R_VERB)
        return step_verb(r, data, len, used);
    if (r->state == R_LINE)
        return step_line(r, data, len, used, cmd, complete);
    return step_dlist(r, data, len, used, cmd, complete);
}

int
cairn_csync_reader_feed(struct cairn_csync_reader *r, const void *data,
                        size_t len, size_t *consumed,
                        struct cairn_csync_command *cmd)
{
    const unsigned char *bytes = data;
    bool complete = false;
    size_t at = 0;
    int rc = 0;

    memset(cmd, 0, sizeof(*cmd));
    r->error[0] = '\0';
    while (at < len && rc == 0 && !complete) {
        size_t used = 0, scanned;
        bool was_skipping = r->state == R_SKIP;
        rc = step(r, bytes + at, len - at, &used, cmd, &complete);
        /* The scanner follows every byte of the command line, so that after
         * an error it knows whether it stands inside a literal. */
        if (!was_skipping && !complete)
            cairn_line_scanner_scan(&r->scanner, bytes + at, used, &scanned);
        at += used;
    }
    *consumed = at;
    if (rc < 0)
        return rc;
    return complete ? 0 : CAIRN_EAGAIN;
}
