/*
 * dlist_parse.c - the incremental dlist parser. It follows Cyrus's
 * dlist_parse() and getxstring() (imap/dlist.c, imap/imapparse.c) as a
 * byte-driven state machine with an explicit stack, so input may be split
 * anywhere and hostile nesting cannot exhaust the C stack. Every string,
 * the node count, the bytes held and the depth have a limit; file literal
 * bodies are passed to the caller's sink and never held.
 */
#include "dlist_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Cyrus reads literal lengths with getint32() and file sizes with
 * getuint32(): nothing larger ever travels. */
#define MAX_LITERAL_WIRE ((uint64_t)INT32_MAX)
#define MAX_FILE_WIRE ((uint64_t)UINT32_MAX)

enum state {
    ST_KEY_START,      /* first byte of a key */
    ST_AFTER_KEY,      /* blanks between key and value */
    ST_VALUE_START,    /* first byte of a value */
    ST_PERCENT,        /* after '%': '(' or '{' */
    ST_ATOM,           /* inside an atom */
    ST_QUOTED,         /* inside "..." */
    ST_QUOTED_ESCAPE,  /* after '\' inside "..." */
    ST_LITERAL_LENGTH, /* after '{': digits, '+', '}' */
    ST_LITERAL_CLOSE,  /* after '+': '}' */
    ST_LITERAL_CR,     /* after '}' */
    ST_LITERAL_LF,
    ST_LITERAL_BODY,
    ST_FILE_PART_START, /* after "%{" */
    ST_FILE_SEPARATOR,  /* the space after partition / guid */
    ST_FILE_GUID_START, /* first byte of the guid */
    ST_FILE_SIZE,       /* digits until '}' */
    ST_FILE_CR,         /* optional CR after '}' */
    ST_FILE_LF,
    ST_FILE_BODY,
    ST_IN_CONTAINER, /* between elements: blanks, ')' or the next one */
    ST_EOL_CR,       /* after the top-level value with PARSE_EOL */
    ST_EOL_LF,
    ST_DONE,
    ST_FAILED,
};

/* Whose string the current token is. */
enum target {
    TARGET_KEY,
    TARGET_VALUE,
    TARGET_FILE_PART,
    TARGET_FILE_GUID,
};

enum token_kind {
    TOKEN_ATOM,
    TOKEN_QUOTED,
    TOKEN_LITERAL,
};

struct cairn_dlist_parser {
    struct cairn_dlist_limits limits;
    struct cairn_dlist_file_sink sink;
    bool has_sink;
    unsigned flags;

    enum state state;
    enum target target;
    enum token_kind token_kind;
    bool value_is_flag;
    int failed_rc;

    struct cairn_dlist *root;
    struct cairn_dlist **stack;
    size_t depth;
    size_t stack_cap;

    struct cairn_buf key;
    struct cairn_buf token;
    size_t token_limit;
    uint64_t number; /* literal length or file size being read */
    bool have_digits;
    uint64_t remaining;        /* literal or file body bytes still to come */
    uint64_t nonsync_literals; /* "{N+}" literals read so far */

    char *file_partition;
    char file_guid[CAIRN_DLIST_GUID_LEN + 1];
    struct cairn_dlist *file_node;

    size_t nodes;
    size_t bytes;
    uint64_t offset;   /* bytes consumed before the current feed */
    uint64_t position; /* offset of the byte being looked at */
    char error[256];
};

void
cairn_dlist_limits_default(struct cairn_dlist_limits *limits)
{
    limits->max_depth = 64;
    limits->max_atom = 128 * 1024;
    limits->max_quoted = 128 * 1024;
    limits->max_literal = 64 * 1024 * 1024;
    limits->max_file = MAX_FILE_WIRE;
    limits->max_nodes = 4000000;
    limits->max_bytes = 256 * 1024 * 1024;
}

static bool
is_blank(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' ||
           c == '\r';
}

static bool
ends_atom(unsigned char c)
{
    return is_blank(c) || c == '(' || c == ')' || c == '"';
}

static int __attribute__((format(printf, 3, 4)))
fail(struct cairn_dlist_parser *p, int rc, const char *fmt, ...)
{
    va_list ap;
    int len;

    va_start(ap, fmt);
    len = vsnprintf(p->error, sizeof(p->error), fmt, ap);
    va_end(ap);
    if (len >= 0 && (size_t)len < sizeof(p->error))
        snprintf(p->error + len, sizeof(p->error) - (size_t)len,
                 " at byte %" PRIu64, p->position);
    p->state = ST_FAILED;
    p->failed_rc = rc;
    return rc;
}

static const char *
token_text(const struct cairn_dlist_parser *p)
{
    return p->token.data != NULL ? p->token.data : "";
}

static enum state
initial_state(const struct cairn_dlist_parser *p)
{
    return (p->flags & CAIRN_DLIST_PARSE_KEY) ? ST_KEY_START : ST_VALUE_START;
}

static void
release_file_partition(struct cairn_dlist_parser *p)
{
    free(p->file_partition);
    p->file_partition = NULL;
}

static void
release_file_header(struct cairn_dlist_parser *p)
{
    release_file_partition(p);
    p->file_guid[0] = '\0';
    p->file_node = NULL;
}

void
cairn_dlist_parser_reset(struct cairn_dlist_parser *p)
{
    cairn_dlist_free(p->root);
    p->root = NULL;
    p->depth = 0;
    release_file_header(p);
    cairn_buf_reset(&p->key);
    cairn_buf_reset(&p->token);
    p->state = initial_state(p);
    p->failed_rc = 0;
    p->nodes = 0;
    p->bytes = 0;
    p->offset = 0;
    p->position = 0;
    p->error[0] = '\0';
}

int
cairn_dlist_parser_new(const struct cairn_dlist_limits *limits,
                       const struct cairn_dlist_file_sink *sink, unsigned flags,
                       struct cairn_dlist_parser **parser)
{
    struct cairn_dlist_parser *p;
    size_t token_max;

    *parser = NULL;
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return CAIRN_ENOMEM;
    if (limits != NULL)
        p->limits = *limits;
    else
        cairn_dlist_limits_default(&p->limits);
    if (p->limits.max_depth == 0 || p->limits.max_atom == 0 ||
        p->limits.max_quoted == 0 || p->limits.max_nodes == 0 ||
        p->limits.max_bytes == 0) {
        free(p);
        return CAIRN_EINVAL;
    }
    if (sink != NULL) {
        p->sink = *sink;
        p->has_sink = true;
    }
    p->flags = flags;
    /* The per-kind limits are checked before every append; the buffers'
     * own maximum is only a backstop. */
    token_max = p->limits.max_bytes;
    cairn_buf_init(&p->key, token_max);
    cairn_buf_init(&p->token, token_max);
    cairn_dlist_parser_reset(p);
    *parser = p;
    return 0;
}

void
cairn_dlist_parser_free(struct cairn_dlist_parser *p)
{
    if (p == NULL)
        return;
    cairn_dlist_parser_reset(p);
    cairn_buf_release(&p->key);
    cairn_buf_release(&p->token);
    free(p->stack);
    free(p);
}

/* --- tree building ----------------------------------------------------- */

static struct cairn_dlist *
top(const struct cairn_dlist_parser *p)
{
    return p->depth > 0 ? p->stack[p->depth - 1] : NULL;
}

static bool
wants_key(const struct cairn_dlist_parser *p)
{
    struct cairn_dlist *parent = top(p);

    if (parent == NULL)
        return (p->flags & CAIRN_DLIST_PARSE_KEY) != 0;
    return parent->type == CAIRN_DLIST_KVLIST;
}

/* Counts nodes (0 or 1) and string bytes against the limits. */
static int
account(struct cairn_dlist_parser *p, size_t nodes, size_t bytes)
{
    if (nodes > 0 && p->nodes >= p->limits.max_nodes)
        return fail(p, CAIRN_ETOOBIG, "more than %zu nodes",
                    p->limits.max_nodes);
    if (bytes > p->limits.max_bytes - p->bytes)
        return fail(p, CAIRN_ETOOBIG, "more than %zu bytes in one value",
                    p->limits.max_bytes);
    p->nodes += nodes;
    p->bytes += bytes;
    return 0;
}

/*
 * Creates a node named by the pending key, holding value (NULL for none),
 * and links it into the tree.
 */
static int
attach(struct cairn_dlist_parser *p, enum cairn_dlist_type type,
       const char *value, size_t value_len, struct cairn_dlist **node)
{
    const char *name = "";
    size_t name_len = 0;
    int rc;

    if (wants_key(p)) {
        name = p->key.data != NULL ? p->key.data : "";
        name_len = p->key.len;
    }
    if ((rc = account(p, 1, name_len + 1)) < 0)
        return rc;
    *node = cairn_dlist_node_new(type, name, name_len, value, value_len);
    if (*node == NULL)
        return fail(p, CAIRN_ENOMEM, "out of memory");
    if (p->depth == 0)
        p->root = *node;
    else
        cairn_dlist_node_link(top(p), *node);
    cairn_buf_reset(&p->key);
    return 0;
}

static void
value_done(struct cairn_dlist_parser *p)
{
    if (p->depth > 0)
        p->state = ST_IN_CONTAINER;
    else if (p->flags & CAIRN_DLIST_PARSE_EOL)
        p->state = ST_EOL_CR;
    else
        p->state = ST_DONE;
}

static int
open_container(struct cairn_dlist_parser *p, enum cairn_dlist_type type)
{
    struct cairn_dlist *node = NULL;
    int rc;

    if (p->depth >= p->limits.max_depth)
        return fail(p, CAIRN_ETOOBIG, "nesting deeper than %zu",
                    p->limits.max_depth);
    if (p->depth == p->stack_cap) {
        size_t cap = p->stack_cap ? p->stack_cap * 2 : 8;
        struct cairn_dlist **grown;
        if (cap > p->limits.max_depth)
            cap = p->limits.max_depth;
        grown = realloc(p->stack, cap * sizeof(*grown));
        if (grown == NULL)
            return fail(p, CAIRN_ENOMEM, "out of memory");
        p->stack = grown;
        p->stack_cap = cap;
    }
    if ((rc = attach(p, type, NULL, 0, &node)) < 0)
        return rc;
    p->stack[p->depth++] = node;
    p->state = ST_IN_CONTAINER;
    return 0;
}

/* --- tokens ------------------------------------------------------------ */

static int
begin_token(struct cairn_dlist_parser *p, enum target target, unsigned char c,
            size_t *used)
{
    p->target = target;
    p->value_is_flag = false;
    cairn_buf_reset(&p->token);
    switch (c) {
    case ' ':
    case '(':
    case ')':
    case '\r':
    case '\n':
        return fail(p, CAIRN_EPARSE, "unexpected %s",
                    c == ')'   ? "')'"
                    : c == '(' ? "'('"
                    : c == ' ' ? "space"
                               : "end of line");
    case '"':
        p->token_kind = TOKEN_QUOTED;
        p->token_limit = p->limits.max_quoted;
        p->state = ST_QUOTED;
        *used = 1;
        return 0;
    case '{':
        p->token_kind = TOKEN_LITERAL;
        p->number = 0;
        p->have_digits = false;
        p->state = ST_LITERAL_LENGTH;
        *used = 1;
        return 0;
    default:
        p->token_kind = TOKEN_ATOM;
        p->token_limit = p->limits.max_atom;
        p->value_is_flag = (c == '\\');
        p->state = ST_ATOM;
        return 0;
    }
}

static int
append_token(struct cairn_dlist_parser *p, const void *data, size_t len)
{
    int rc;

    if (len > p->token_limit - p->token.len) {
        const char *what = p->token_kind == TOKEN_ATOM     ? "atom"
                           : p->token_kind == TOKEN_QUOTED ? "quoted string"
                                                           : "literal";
        return fail(p, CAIRN_ETOOBIG, "%s longer than %zu bytes", what,
                    p->token_limit);
    }
    if ((rc = cairn_buf_append(&p->token, data, len)) < 0)
        return fail(p, rc, "%s",
                    rc == CAIRN_ENOMEM ? "out of memory" : "value too large");
    return 0;
}

static int
finish_value(struct cairn_dlist_parser *p)
{
    struct cairn_dlist *node = NULL;
    enum cairn_dlist_type type = CAIRN_DLIST_ATOM;
    int rc;

    if (p->token_kind == TOKEN_LITERAL)
        type = CAIRN_DLIST_BUF;
    else if (p->token_kind == TOKEN_ATOM && p->token.len == 3 &&
             memcmp(p->token.data, "NIL", 3) == 0)
        type = CAIRN_DLIST_NIL;
    else if (p->token_kind == TOKEN_ATOM && p->value_is_flag)
        type = CAIRN_DLIST_FLAG;
    if ((rc = account(p, 0, p->token.len)) < 0)
        return rc;
    if ((rc = attach(p, type, type == CAIRN_DLIST_NIL ? NULL : token_text(p),
                     p->token.len, &node)) < 0)
        return rc;
    value_done(p);
    return 0;
}

static int
finish_token(struct cairn_dlist_parser *p)
{
    if (p->token_kind == TOKEN_LITERAL && p->target != TARGET_VALUE &&
        memchr(token_text(p), '\0', p->token.len) != NULL)
        return fail(p, CAIRN_EPARSE, "NUL byte in a literal key or name");
    switch (p->target) {
    case TARGET_KEY:
        cairn_buf_reset(&p->key);
        if (cairn_buf_append(&p->key, token_text(p), p->token.len) < 0)
            return fail(p, CAIRN_ENOMEM, "out of memory");
        p->state = ST_AFTER_KEY;
        return 0;
    case TARGET_VALUE:
        return finish_value(p);
    case TARGET_FILE_PART:
        p->file_partition = strdup(token_text(p));
        if (p->file_partition == NULL)
            return fail(p, CAIRN_ENOMEM, "out of memory");
        p->state = ST_FILE_SEPARATOR;
        return 0;
    case TARGET_FILE_GUID:
        if (!cairn_dlist_is_guid(token_text(p), p->token.len))
            return fail(p, CAIRN_EPARSE,
                        "file literal GUID \"%.48s\" is not 40 hex digits",
                        token_text(p));
        memcpy(p->file_guid, p->token.data, CAIRN_DLIST_GUID_LEN + 1);
        p->number = 0;
        p->have_digits = false;
        p->state = ST_FILE_SEPARATOR;
        return 0;
    }
    return fail(p, CAIRN_EINVAL, "internal error");
}

/* --- states ------------------------------------------------------------ */

static int
step_atom(struct cairn_dlist_parser *p, const unsigned char *data, size_t len,
          size_t *used)
{
    size_t n = 0;
    int rc;

    while (n < len && !ends_atom(data[n]))
        n++;
    if ((rc = append_token(p, data, n)) < 0)
        return rc;
    *used = n;
    if (n < len)
        return finish_token(p); /* the delimiter is left for the next state */
    return 0;
}

static int
step_quoted(struct cairn_dlist_parser *p, const unsigned char *data, size_t len,
            size_t *used)
{
    size_t n = 0;
    int rc;

    while (n < len && data[n] != '"' && data[n] != '\\' && data[n] != '\r' &&
           data[n] != '\n')
        n++;
    if ((rc = append_token(p, data, n)) < 0)
        return rc;
    *used = n;
    if (n == len)
        return 0;
    p->position += n;
    if (data[n] == '\r' || data[n] == '\n')
        return fail(p, CAIRN_EPARSE, "%s inside a quoted string",
                    data[n] == '\r' ? "CR" : "LF");
    *used = n + 1;
    if (data[n] == '\\') {
        p->state = ST_QUOTED_ESCAPE;
        return 0;
    }
    return finish_token(p);
}

/* Adds one decimal digit to p->number, refusing more than 2^64 - 1. */
static bool
add_digit(struct cairn_dlist_parser *p, unsigned char c)
{
    uint64_t digit = (uint64_t)(c - '0');

    if (p->number > (UINT64_MAX - digit) / 10)
        return false;
    p->number = p->number * 10 + digit;
    p->have_digits = true;
    return true;
}

static int
check_literal_length(struct cairn_dlist_parser *p)
{
    uint64_t limit = p->limits.max_literal;

    if (!p->have_digits)
        return fail(p, CAIRN_EPARSE, "literal without a length");
    if (p->target != TARGET_VALUE)
        limit = p->limits.max_atom;
    if (limit > MAX_LITERAL_WIRE)
        limit = MAX_LITERAL_WIRE;
    if (p->number > limit)
        return fail(p, CAIRN_ETOOBIG,
                    "literal length %" PRIu64 " exceeds limit %" PRIu64,
                    p->number, limit);
    p->token_limit = (size_t)p->number;
    return 0;
}

static int
step_literal_length(struct cairn_dlist_parser *p, unsigned char c, size_t *used)
{
    int rc;

    *used = 1;
    if (c >= '0' && c <= '9') {
        if (!add_digit(p, c))
            return fail(p, CAIRN_EOVERFLOW,
                        "literal length does not fit in 64 bits");
        return 0;
    }
    if (c == '+' || c == '}') {
        if ((rc = check_literal_length(p)) < 0)
            return rc;
        p->state = c == '+' ? ST_LITERAL_CLOSE : ST_LITERAL_CR;
        p->nonsync_literals += c == '+';
        return 0;
    }
    return fail(p, CAIRN_EPARSE, "bad literal length: unexpected byte 0x%02x",
                c);
}

static int
start_literal_body(struct cairn_dlist_parser *p)
{
    p->remaining = p->number;
    cairn_buf_reset(&p->token);
    p->state = ST_LITERAL_BODY;
    if (p->remaining == 0)
        return finish_token(p);
    return 0;
}

static int
step_literal_body(struct cairn_dlist_parser *p, const unsigned char *data,
                  size_t len, size_t *used)
{
    size_t n = len < p->remaining ? len : (size_t)p->remaining;
    int rc;

    if ((rc = append_token(p, data, n)) < 0)
        return rc;
    *used = n;
    p->remaining -= n;
    if (p->remaining == 0)
        return finish_token(p);
    return 0;
}

static int
step_file_size(struct cairn_dlist_parser *p, unsigned char c, size_t *used)
{
    *used = 1;
    if (c >= '0' && c <= '9') {
        if (!add_digit(p, c))
            return fail(p, CAIRN_EOVERFLOW,
                        "file literal size does not fit in 64 bits");
        return 0;
    }
    if (c != '}' || !p->have_digits)
        return fail(p, CAIRN_EPARSE,
                    "bad file literal size: unexpected byte 0x%02x", c);
    if (p->number > MAX_FILE_WIRE)
        return fail(p, CAIRN_EOVERFLOW,
                    "file literal size %" PRIu64 " exceeds %" PRIu64, p->number,
                    MAX_FILE_WIRE);
    if (p->number > p->limits.max_file)
        return fail(p, CAIRN_ETOOBIG,
                    "file literal size %" PRIu64 " exceeds limit %" PRIu64,
                    p->number, p->limits.max_file);
    p->state = ST_FILE_CR;
    return 0;
}

static int
file_end(struct cairn_dlist_parser *p)
{
    int rc;

    if (p->has_sink && p->sink.end != NULL &&
        (rc = p->sink.end(p->sink.ctx, p->file_node->file->handle)) < 0)
        return fail(p, rc, "file sink failed at end: %s", cairn_strerror(rc));
    release_file_header(p);
    value_done(p);
    return 0;
}

static int
file_begin(struct cairn_dlist_parser *p)
{
    struct cairn_dlist *node = NULL;
    void *handle = NULL;
    int rc;

    if (p->has_sink && p->sink.begin != NULL &&
        (rc = p->sink.begin(p->sink.ctx, p->file_partition, p->file_guid,
                            p->number, &handle)) < 0)
        return fail(p, rc, "file sink refused %s: %s", p->file_guid,
                    cairn_strerror(rc));
    if ((rc = attach(p, CAIRN_DLIST_FILE, NULL, 0, &node)) < 0) {
        if (p->has_sink && p->sink.release != NULL)
            p->sink.release(p->sink.ctx, handle);
        return rc;
    }
    rc = cairn_dlist_node_set_file(
        node, p->file_partition, p->file_guid, p->number, handle,
        p->has_sink ? p->sink.release : NULL, p->sink.ctx);
    if (rc < 0) {
        if (p->has_sink && p->sink.release != NULL)
            p->sink.release(p->sink.ctx, handle);
        return fail(p, rc, "out of memory");
    }
    /* From here the tree owns the handle: freeing it releases. */
    release_file_partition(p);
    p->file_node = node;
    p->remaining = p->number;
    p->state = ST_FILE_BODY;
    if (p->remaining == 0)
        return file_end(p);
    return 0;
}

static int
step_file_body(struct cairn_dlist_parser *p, const unsigned char *data,
               size_t len, size_t *used)
{
    size_t n = len < p->remaining ? len : (size_t)p->remaining;
    int rc;

    if (p->has_sink && p->sink.data != NULL &&
        (rc = p->sink.data(p->sink.ctx, p->file_node->file->handle, data, n)) <
            0)
        return fail(p, rc, "file sink failed: %s", cairn_strerror(rc));
    *used = n;
    p->remaining -= n;
    if (p->remaining == 0)
        return file_end(p);
    return 0;
}

static int
step_container(struct cairn_dlist_parser *p, unsigned char c, size_t *used)
{
    if (is_blank(c)) {
        *used = 1;
        return 0;
    }
    if (c == ')') {
        *used = 1;
        p->depth--;
        value_done(p);
        return 0;
    }
    p->state =
        top(p)->type == CAIRN_DLIST_KVLIST ? ST_KEY_START : ST_VALUE_START;
    return 0;
}

static int
step_value_start(struct cairn_dlist_parser *p, unsigned char c, size_t *used)
{
    if (c == '(') {
        *used = 1;
        return open_container(p, CAIRN_DLIST_LIST);
    }
    if (c == '%') {
        *used = 1;
        p->state = ST_PERCENT;
        return 0;
    }
    return begin_token(p, TARGET_VALUE, c, used);
}

static int
step_percent(struct cairn_dlist_parser *p, unsigned char c, size_t *used)
{
    *used = 1;
    if (c == '(')
        return open_container(p, CAIRN_DLIST_KVLIST);
    if (c == '{') {
        p->state = ST_FILE_PART_START;
        return 0;
    }
    return fail(p, CAIRN_EPARSE, "unknown %% type 0x%02x", c);
}

static int step_small(struct cairn_dlist_parser *p, unsigned char c,
                      size_t *used);

/*
 * Runs the state machine on data; returns with *used bytes consumed when
 * the input is exhausted, the value is complete or on error.
 */
static int
run(struct cairn_dlist_parser *p, const unsigned char *data, size_t len,
    size_t *consumed)
{
    size_t at = 0;
    int rc = 0;

    while (at < len && p->state != ST_DONE && p->state != ST_FAILED) {
        size_t used = 0;
        p->position = p->offset + at;
        switch (p->state) {
        case ST_ATOM:
            rc = step_atom(p, data + at, len - at, &used);
            break;
        case ST_QUOTED:
            rc = step_quoted(p, data + at, len - at, &used);
            break;
        case ST_LITERAL_BODY:
            rc = step_literal_body(p, data + at, len - at, &used);
            break;
        case ST_FILE_BODY:
            rc = step_file_body(p, data + at, len - at, &used);
            break;
        default:
            rc = step_small(p, data[at], &used);
            break;
        }
        if (rc < 0)
            break;
        at += used;
    }
    *consumed = at;
    return rc;
}

/* The states that look at one byte at a time. */
static int
step_small(struct cairn_dlist_parser *p, unsigned char c, size_t *used)
{
    switch (p->state) {
    case ST_KEY_START:
        return begin_token(p, TARGET_KEY, c, used);
    case ST_AFTER_KEY:
        if (!is_blank(c)) {
            p->state = ST_VALUE_START;
            return 0;
        }
        if (p->depth == 0 && (c == '\r' || c == '\n'))
            return fail(p, CAIRN_EPARSE, "missing value after key");
        *used = 1;
        return 0;
    case ST_VALUE_START:
        return step_value_start(p, c, used);
    case ST_PERCENT:
        return step_percent(p, c, used);
    case ST_QUOTED_ESCAPE:
        *used = 1;
        p->state = ST_QUOTED;
        return append_token(p, &c, 1);
    case ST_LITERAL_LENGTH:
        return step_literal_length(p, c, used);
    case ST_LITERAL_CLOSE:
        *used = 1;
        if (c != '}')
            return fail(p, CAIRN_EPARSE, "bad literal: expected '}'");
        p->state = ST_LITERAL_CR;
        return 0;
    case ST_LITERAL_CR:
    case ST_LITERAL_LF: {
        unsigned char want = p->state == ST_LITERAL_CR ? '\r' : '\n';
        *used = 1;
        if (c != want)
            return fail(p, CAIRN_EPARSE, "literal header not followed by CRLF");
        if (want == '\r') {
            p->state = ST_LITERAL_LF;
            return 0;
        }
        return start_literal_body(p);
    }
    case ST_FILE_PART_START:
        return begin_token(p, TARGET_FILE_PART, c, used);
    case ST_FILE_SEPARATOR:
        *used = 1;
        if (c != ' ')
            return fail(p, CAIRN_EPARSE, "bad file literal header");
        if (p->target == TARGET_FILE_GUID) {
            p->state = ST_FILE_SIZE;
            return 0;
        }
        p->state = ST_FILE_GUID_START;
        return 0;
    case ST_FILE_GUID_START:
        return begin_token(p, TARGET_FILE_GUID, c, used);
    case ST_FILE_SIZE:
        return step_file_size(p, c, used);
    case ST_FILE_CR:
        if (c == '\r')
            *used = 1;
        p->state = ST_FILE_LF;
        return 0;
    case ST_FILE_LF:
        *used = 1;
        if (c != '\n')
            return fail(p, CAIRN_EPARSE,
                        "file literal header not followed by CRLF");
        return file_begin(p);
    case ST_IN_CONTAINER:
        return step_container(p, c, used);
    case ST_EOL_CR:
        *used = 1;
        if (c == '\r') {
            p->state = ST_EOL_LF;
            return 0;
        }
        if (c == '\n') {
            p->state = ST_DONE;
            return 0;
        }
        return fail(p, CAIRN_EPARSE, "expected end of line after the value");
    case ST_EOL_LF:
        *used = 1;
        if (c != '\n')
            return fail(p, CAIRN_EPARSE, "CR not followed by LF");
        p->state = ST_DONE;
        return 0;
    default:
        return fail(p, CAIRN_EINVAL, "internal error: state %d", p->state);
    }
}

int
cairn_dlist_parser_feed(struct cairn_dlist_parser *p, const void *data,
                        size_t len, size_t *consumed)
{
    int rc;

    *consumed = 0;
    if (p->state == ST_FAILED)
        return p->failed_rc;
    if (p->state == ST_DONE)
        return 0;
    rc = run(p, data, len, consumed);
    p->offset += *consumed;
    if (rc < 0)
        return rc;
    return p->state == ST_DONE ? 0 : CAIRN_EAGAIN;
}

int
cairn_dlist_parser_finish(struct cairn_dlist_parser *p)
{
    int rc;

    if (p->state == ST_FAILED)
        return p->failed_rc;
    p->position = p->offset;
    if (p->state == ST_ATOM && p->depth == 0 && p->target == TARGET_VALUE &&
        (rc = finish_token(p)) < 0)
        return rc;
    if (p->state == ST_DONE)
        return 0;
    return fail(p, CAIRN_EPARSE, "unexpected end of input");
}

struct cairn_dlist *
cairn_dlist_parser_take(struct cairn_dlist_parser *p)
{
    struct cairn_dlist *tree;

    if (p->state != ST_DONE)
        return NULL;
    tree = p->root;
    p->root = NULL;
    cairn_dlist_parser_reset(p);
    return tree;
}

const char *
cairn_dlist_parser_error(const struct cairn_dlist_parser *p)
{
    return p->error;
}

uint64_t
cairn_dlist_parser_offset(const struct cairn_dlist_parser *p)
{
    return p->offset;
}

int
cairn_dlist_parse(const void *data, size_t len, unsigned flags,
                  const struct cairn_dlist_limits *limits,
                  const struct cairn_dlist_file_sink *sink,
                  struct cairn_dlist **tree, char *error, size_t error_size)
{
    struct cairn_dlist_parser *p = NULL;
    size_t consumed = 0;
    int rc;

    *tree = NULL;
    if (error != NULL && error_size > 0)
        error[0] = '\0';
    if ((rc = cairn_dlist_parser_new(limits, sink, flags, &p)) < 0)
        goto out;
    rc = cairn_dlist_parser_feed(p, data, len, &consumed);
    if (rc == CAIRN_EAGAIN)
        rc = cairn_dlist_parser_finish(p);
    if (rc == 0 && consumed < len) {
        p->position = consumed;
        rc = fail(p, CAIRN_EPARSE, "trailing bytes after the value");
    }
    if (rc < 0)
        goto out;
    *tree = cairn_dlist_parser_take(p);
out:
    if (rc < 0 && p != NULL && error != NULL && error_size > 0)
        snprintf(error, error_size, "%s", p->error);
    cairn_dlist_parser_free(p);
    return rc;
}

uint64_t
cairn_dlist_parser_nonsync_literals(const struct cairn_dlist_parser *parser)
{
    return parser->nonsync_literals;
}
