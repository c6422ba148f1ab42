/*
 * csync_response.c - csync responses (sync-protocol.md §2.7): the one
 * writer for untagged items and completion lines, the client-side command
 * writer, and the client-side response reader that maps NO texts to codes
 * exactly as sync_client's sync_parse_response() does.
 */
#include "csync_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    enum cairn_csync_code code;
    const char *name;
    const char *text; /* the text sync_server puts after the code */
} codes[] = {
    {CAIRN_CSYNC_CODE_INVALID_USER, "IMAP_INVALID_USER", "No Such User"},
    {CAIRN_CSYNC_CODE_MAILBOX_NONEXISTENT, "IMAP_MAILBOX_NONEXISTENT",
     "No Such Mailbox"},
    {CAIRN_CSYNC_CODE_MAILBOX_LOCKED, "IMAP_MAILBOX_LOCKED", "Mailbox locked"},
    {CAIRN_CSYNC_CODE_MAILBOX_MOVED, "IMAP_MAILBOX_MOVED",
     "Mailbox exists with another name or uniqueid"},
    {CAIRN_CSYNC_CODE_MAILBOX_NOTSUPPORTED, "IMAP_MAILBOX_NOTSUPPORTED",
     "Operation is not supported on mailbox"},
    {CAIRN_CSYNC_CODE_SYNC_CHECKSUM, "IMAP_SYNC_CHECKSUM", "Checksum Failure"},
    {CAIRN_CSYNC_CODE_SYNC_CHANGED, "IMAP_SYNC_CHANGED",
     "Changed since last sync"},
    {CAIRN_CSYNC_CODE_SYNC_BADSIEVE, "IMAP_SYNC_BADSIEVE",
     "Sieve script compilation failure"},
    {CAIRN_CSYNC_CODE_PROTOCOL_ERROR, "IMAP_PROTOCOL_ERROR", "Protocol error"},
    {CAIRN_CSYNC_CODE_PROTOCOL_BAD_PARAMETERS, "IMAP_PROTOCOL_BAD_PARAMETERS",
     "Bad parameters"},
    {CAIRN_CSYNC_CODE_REMOTE_DENIED, "IMAP_REMOTE_DENIED", "Unknown error"},
    {CAIRN_CSYNC_CODE_BYE_LOGOUT, "IMAP_BYE_LOGOUT", "shutting down"},
};

#define CODE_COUNT (sizeof(codes) / sizeof(codes[0]))

const char *
cairn_csync_code_name(enum cairn_csync_code code)
{
    for (size_t i = 0; i < CODE_COUNT; i++) {
        if (codes[i].code == code)
            return codes[i].name;
    }
    return "";
}

enum cairn_csync_code
cairn_csync_code_from_text(const char *text)
{
    /* Only the codes sync_client knows; the word must be followed by a
     * space (a bare code does not match). */
    for (size_t i = 0; i < CODE_COUNT; i++) {
        size_t len = strlen(codes[i].name);
        if (codes[i].code == CAIRN_CSYNC_CODE_REMOTE_DENIED ||
            codes[i].code == CAIRN_CSYNC_CODE_BYE_LOGOUT)
            continue;
        if (strncmp(text, codes[i].name, len) == 0 && text[len] == ' ')
            return codes[i].code;
    }
    return CAIRN_CSYNC_CODE_REMOTE_DENIED;
}

/* --- writers ----------------------------------------------------------- */

int
cairn_csync_write_untagged(struct cairn_buf *out,
                           const struct cairn_dlist *item,
                           const struct cairn_dlist_body_writer *body)
{
    int rc;

    if ((rc = cairn_buf_append(out, "* ", 2)) < 0 ||
        (rc = cairn_dlist_print(item, true, out, body)) < 0)
        return rc;
    return cairn_buf_append(out, "\r\n", 2);
}

int
cairn_csync_write_command(struct cairn_buf *out, const char *verb,
                          const struct cairn_dlist *value,
                          const struct cairn_dlist_body_writer *body)
{
    int rc;

    if (verb == NULL || value == NULL)
        return CAIRN_EINVAL;
    if ((rc = cairn_buf_append_str(out, verb)) < 0 ||
        (rc = cairn_buf_append(out, " ", 1)) < 0 ||
        (rc = cairn_dlist_print(value, true, out, body)) < 0)
        return rc;
    return cairn_buf_append(out, "\r\n", 2);
}

static const char *
default_text(enum cairn_csync_status status, enum cairn_csync_code code)
{
    if (status == CAIRN_CSYNC_OK)
        return "Success";
    if (status == CAIRN_CSYNC_NO && code != CAIRN_CSYNC_CODE_NONE) {
        for (size_t i = 0; i < CODE_COUNT; i++) {
            if (codes[i].code == code)
                return codes[i].text;
        }
    }
    if (status == CAIRN_CSYNC_BYE)
        return "shutting down";
    if (status == CAIRN_CSYNC_CONTINUE)
        return "";
    return "Unknown error";
}

int
cairn_csync_write_response(struct cairn_buf *out,
                           enum cairn_csync_status status,
                           enum cairn_csync_code code, const char *fmt, ...)
{
    static const char *const words[] = {"OK", "NO", "BAD", "BYE", "+"};
    char text[1024];
    size_t start = out->len;
    va_list ap;
    int rc;

    if ((unsigned)status > CAIRN_CSYNC_CONTINUE)
        return CAIRN_EINVAL;
    text[0] = '\0';
    if (fmt != NULL) {
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
    }
    for (char *c = text; *c != '\0'; c++) {
        if (*c == '\r' || *c == '\n')
            *c = ' ';
    }
    if (text[0] == '\0')
        snprintf(text, sizeof(text), "%s", default_text(status, code));
    rc = cairn_buf_printf(out, "%s ", words[status]);
    if (rc == 0 && status == CAIRN_CSYNC_NO && code != CAIRN_CSYNC_CODE_NONE)
        rc = cairn_buf_printf(out, "%s ", cairn_csync_code_name(code));
    if (rc == 0)
        rc = cairn_buf_printf(out, "%s\r\n", text);
    if (rc < 0 && out->len > start) {
        out->len = start; /* never leave half a line behind */
        out->data[start] = '\0';
    }
    return rc;
}

/* --- line helper ------------------------------------------------------- */

int
cairn_csync_take_line(struct cairn_buf *input, size_t max_line, char **line,
                      size_t *len)
{
    const char *lf;
    size_t n;
    char *copy;

    *line = NULL;
    *len = 0;
    lf = input->len > 0 ? memchr(input->data, '\n', input->len) : NULL;
    if (lf == NULL)
        return input->len >= max_line ? CAIRN_ETOOBIG : CAIRN_EAGAIN;
    n = (size_t)(lf - input->data);
    if (n > max_line)
        return CAIRN_ETOOBIG;
    copy = malloc(n + 1);
    if (copy == NULL)
        return CAIRN_ENOMEM;
    memcpy(copy, input->data, n);
    if (n > 0 && copy[n - 1] == '\r')
        n--;
    copy[n] = '\0';
    cairn_buf_consume(input, (size_t)(lf - input->data) + 1);
    *line = copy;
    *len = n;
    return 0;
}

/* --- response reader --------------------------------------------------- */

enum response_state {
    RR_WORD, /* "*", "OK", "NO", ... */
    RR_ITEM, /* key and value of an untagged item */
    RR_TEXT, /* the rest of the completion line */
};

struct cairn_csync_response_reader {
    size_t max_line;
    size_t max_items;
    struct cairn_dlist_parser *parser;
    enum response_state state;
    struct cairn_buf word;
    struct cairn_buf text;
    struct cairn_dlist **items;
    size_t item_count;
    size_t item_cap;
    bool failed;
    int failed_rc;
    char error[320];
};

void
cairn_csync_response_release(struct cairn_csync_response *response)
{
    if (response == NULL)
        return;
    free(response->text);
    for (size_t i = 0; i < response->item_count; i++)
        cairn_dlist_free(response->items[i]);
    free(response->items);
    memset(response, 0, sizeof(*response));
}

int
cairn_csync_response_reader_new(size_t max_line, size_t max_items,
                                const struct cairn_dlist_limits *limits,
                                const struct cairn_dlist_file_sink *sink,
                                struct cairn_csync_response_reader **reader)
{
    struct cairn_csync_response_reader *r;
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
    r->max_items = max_items;
    cairn_buf_init(&r->word, max_line);
    cairn_buf_init(&r->text, max_line);
    *reader = r;
    return 0;
}

static void
drop_items(struct cairn_csync_response_reader *r)
{
    for (size_t i = 0; i < r->item_count; i++)
        cairn_dlist_free(r->items[i]);
    r->item_count = 0;
}

void
cairn_csync_response_reader_free(struct cairn_csync_response_reader *r)
{
    if (r == NULL)
        return;
    drop_items(r);
    free(r->items);
    cairn_dlist_parser_free(r->parser);
    cairn_buf_release(&r->word);
    cairn_buf_release(&r->text);
    free(r);
}

const char *
cairn_csync_response_reader_error(const struct cairn_csync_response_reader *r)
{
    return r->error;
}

static int __attribute__((format(printf, 3, 4)))
response_fail(struct cairn_csync_response_reader *r, int rc, const char *fmt,
              ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->error, sizeof(r->error), fmt, ap);
    va_end(ap);
    r->failed = true;
    r->failed_rc = rc;
    return rc;
}

static int
push_item(struct cairn_csync_response_reader *r, struct cairn_dlist *item)
{
    if (r->item_count == r->max_items) {
        cairn_dlist_free(item);
        return response_fail(r, CAIRN_ETOOBIG,
                             "more than %zu untagged items in one response",
                             r->max_items);
    }
    if (r->item_count == r->item_cap) {
        size_t cap = r->item_cap ? r->item_cap * 2 : 16;
        struct cairn_dlist **grown = realloc(r->items, cap * sizeof(*grown));
        if (grown == NULL) {
            cairn_dlist_free(item);
            return response_fail(r, CAIRN_ENOMEM, "out of memory");
        }
        r->items = grown;
        r->item_cap = cap;
    }
    r->items[r->item_count++] = item;
    return 0;
}

static int
step_word(struct cairn_csync_response_reader *r, const unsigned char *data,
          size_t len, size_t *used)
{
    size_t n = 0;

    while (n < len && data[n] != ' ' && data[n] != '\r' && data[n] != '\n')
        n++;
    *used = n;
    if (cairn_buf_append(&r->word, data, n) < 0)
        return response_fail(r, CAIRN_ETOOBIG,
                             "response word longer than %zu bytes",
                             r->max_line);
    if (n == len)
        return 0;
    /* sync_client: the first word must be followed by a space. */
    if (data[n] != ' ')
        return response_fail(r, CAIRN_EPROTO, "bad response \"%.40s\"",
                             r->word.data ? r->word.data : "");
    *used = n + 1;
    r->state = r->word.len == 1 && r->word.data[0] == '*' ? RR_ITEM : RR_TEXT;
    return 0;
}

static int
complete_response(struct cairn_csync_response_reader *r,
                  struct cairn_csync_response *response)
{
    const char *word = r->word.data != NULL ? r->word.data : "";
    char *text = r->text.data;
    size_t text_len;

    if (r->text.len > 0 && text[r->text.len - 1] == '\r')
        text[--r->text.len] = '\0';
    if (strcmp(word, "OK") == 0) {
        response->status = CAIRN_CSYNC_OK;
    } else if (strcmp(word, "NO") == 0) {
        response->status = CAIRN_CSYNC_NO;
        response->code = cairn_csync_code_from_text(text ? text : "");
    } else if (strcmp(word, "+") == 0) {
        response->status = CAIRN_CSYNC_CONTINUE;
    } else if (strcmp(word, "BYE") == 0) {
        response->status = CAIRN_CSYNC_BYE;
        response->code = CAIRN_CSYNC_CODE_BYE_LOGOUT;
    } else {
        response->status = CAIRN_CSYNC_BAD;
        response->code = CAIRN_CSYNC_CODE_PROTOCOL_ERROR;
    }
    /* The buffer's storage moves to the response. */
    if (cairn_buf_detach(&r->text, &response->text, &text_len) < 0)
        return response_fail(r, CAIRN_ENOMEM, "out of memory");
    response->items = r->items;
    response->item_count = r->item_count;
    r->items = NULL;
    r->item_count = r->item_cap = 0;
    cairn_buf_reset(&r->word);
    cairn_buf_reset(&r->text);
    r->state = RR_WORD;
    return 0;
}

static int
step_text(struct cairn_csync_response_reader *r, const unsigned char *data,
          size_t len, size_t *used, bool *complete)
{
    const unsigned char *lf = memchr(data, '\n', len);
    size_t n = lf != NULL ? (size_t)(lf - data) : len;

    *used = n;
    if (cairn_buf_append(&r->text, data, n) < 0)
        return response_fail(r, CAIRN_ETOOBIG,
                             "response line longer than %zu bytes",
                             r->max_line);
    if (lf != NULL) {
        *used = n + 1;
        *complete = true;
    }
    return 0;
}

static int
step_item(struct cairn_csync_response_reader *r, const unsigned char *data,
          size_t len, size_t *used)
{
    int rc = cairn_dlist_parser_feed(r->parser, data, len, used);

    if (rc == CAIRN_EAGAIN)
        return 0;
    if (rc < 0)
        return response_fail(r, rc, "bad untagged response: %s",
                             cairn_dlist_parser_error(r->parser));
    cairn_buf_reset(&r->word);
    r->state = RR_WORD;
    return push_item(r, cairn_dlist_parser_take(r->parser));
}

int
cairn_csync_response_reader_feed(struct cairn_csync_response_reader *r,
                                 const void *data, size_t len, size_t *consumed,
                                 struct cairn_csync_response *response)
{
    const unsigned char *bytes = data;
    bool complete = false;
    size_t at = 0;
    int rc = 0;

    memset(response, 0, sizeof(*response));
    *consumed = 0;
    if (r->failed)
        return r->failed_rc;
    while (at < len && rc == 0 && !complete) {
        size_t used = 0;
        if (r->state == RR_WORD)
            rc = step_word(r, bytes + at, len - at, &used);
        else if (r->state == RR_ITEM)
            rc = step_item(r, bytes + at, len - at, &used);
        else
            rc = step_text(r, bytes + at, len - at, &used, &complete);
        at += used;
    }
    *consumed = at;
    if (rc < 0) {
        drop_items(r);
        return rc;
    }
    if (!complete)
        return CAIRN_EAGAIN;
    if ((rc = complete_response(r, response)) < 0) {
        drop_items(r);
        cairn_csync_response_release(response);
    }
    return rc;
}
