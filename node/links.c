/*
 * links.c - the verify levels that read chunk content: every message row
 * must name a MESSAGE line holding its GUID (and, for MESSAGE_GUIDS, a
 * body whose SHA-1 is that GUID); every mailbox and record row must match
 * an APPLY MAILBOX line in the chunk it names (lcb_verify.c).
 */
#include "node_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct expect_message {
    char guid[41];
    int64_t offset;
    bool found;
};

struct expect_mailbox {
    char *text[6]; /* uniqueid mboxname partition acl options */
    int64_t num[9];
    bool found;
};

struct expect_record {
    char uniqueid[64];
    char guid[41];
    int64_t uid, modseq, last_updated, internaldate, size;
    bool found;
};

struct seen_body {
    char guid[41];
    bool sha_ok;
};

struct links {
    unsigned levels;
    struct expect_message *messages;
    size_t message_count;
    struct expect_mailbox *mailboxes;
    size_t mailbox_count;
    struct expect_record *records;
    size_t record_count;
    struct seen_body *bodies; /* of the line being parsed */
    size_t body_count, body_cap;
    SHA_CTX sha;
    char current_guid[41];
    /* Cyrus's backup reader stops at a "{N+}" literal: the mailbox lines
     * from there to the end of the chunk are not there for its verify. */
    bool past_nonsync_literal;
};

static void
describe(char *error, size_t size, const char *fmt, ...)
{
    va_list ap;

    if (error == NULL || size == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(error, size, fmt, ap);
    va_end(ap);
}

static int
grow(void **array, size_t *cap, size_t used, size_t item)
{
    void *grown;

    if (used < *cap)
        return 0;
    *cap = *cap ? *cap * 2 : 16;
    if ((grown = realloc(*array, *cap * item)) == NULL)
        return CAIRN_ENOMEM;
    *array = grown;
    return 0;
}

static const char *
text_or_empty(sqlite3_stmt *stmt, int column)
{
    const unsigned char *text = sqlite3_column_text(stmt, column);

    return text ? (const char *)text : "";
}

static int
load_expected(struct cairn_store *store, int64_t chunk_id, struct links *l)
{
    sqlite3_stmt *msg = store->stmts[STMT_MESSAGE_BY_CHUNK];
    sqlite3_stmt *mbx = store->stmts[STMT_MAILBOX_BY_CHUNK];
    sqlite3_stmt *rec = store->stmts[STMT_RECORDS_BY_CHUNK];
    size_t cap_msg = 0, cap_mbx = 0, cap_rec = 0;
    int rc = 0;

    sql_bind_int(msg, ":chunk_id", chunk_id);
    while (rc == 0 && sqlite3_step(msg) == SQLITE_ROW &&
           (rc = grow((void **)&l->messages, &cap_msg, l->message_count,
                      sizeof(*l->messages))) == 0) {
        struct expect_message *m = &l->messages[l->message_count++];

        snprintf(m->guid, sizeof(m->guid), "%s", text_or_empty(msg, 0));
        m->offset = sqlite3_column_int64(msg, 1);
        m->found = false;
    }
    sql_reset(msg);
    sql_bind_int(mbx, ":chunk_id", chunk_id);
    while (rc == 0 && sqlite3_step(mbx) == SQLITE_ROW &&
           (rc = grow((void **)&l->mailboxes, &cap_mbx, l->mailbox_count,
                      sizeof(*l->mailboxes))) == 0) {
        static const int text_columns[6] = {0, 1, 8, 9, 10, -1};
        struct expect_mailbox *m = &l->mailboxes[l->mailbox_count++];
        static const int num_columns[9] = {2, 3, 4, 5, 6, 7, 11, 12, 13};

        memset(m, 0, sizeof(*m));
        for (int i = 0; i < 5; i++)
            if ((m->text[i] = strdup(text_or_empty(mbx, text_columns[i]))) ==
                NULL)
                rc = CAIRN_ENOMEM;
        for (int i = 0; i < 9; i++)
            m->num[i] = sqlite3_column_int64(mbx, num_columns[i]);
    }
    sql_reset(mbx);
    sql_bind_int(rec, ":chunk_id", chunk_id);
    while (rc == 0 && sqlite3_step(rec) == SQLITE_ROW &&
           (rc = grow((void **)&l->records, &cap_rec, l->record_count,
                      sizeof(*l->records))) == 0) {
        struct expect_record *r = &l->records[l->record_count++];

        snprintf(r->uniqueid, sizeof(r->uniqueid), "%s", text_or_empty(rec, 0));
        r->uid = sqlite3_column_int64(rec, 1);
        r->modseq = sqlite3_column_int64(rec, 2);
        r->last_updated = sqlite3_column_int64(rec, 3);
        r->internaldate = sqlite3_column_int64(rec, 4);
        r->size = sqlite3_column_int64(rec, 5);
        snprintf(r->guid, sizeof(r->guid), "%s", text_or_empty(rec, 6));
        r->found = false;
    }
    sql_reset(rec);
    return rc;
}

static int
sink_begin(void *ctx, const char *partition, const char *guid, uint64_t size,
           void **handle)
{
    struct links *l = ctx;

    *handle = NULL;
    snprintf(l->current_guid, sizeof(l->current_guid), "%s", guid);
    SHA1_Init(&l->sha);
    return 0;
}

static int
sink_data(void *ctx, void *handle, const void *bytes, size_t len)
{
    struct links *l = ctx;

    if (l->levels & CAIRN_VERIFY_MESSAGE_GUIDS)
        SHA1_Update(&l->sha, bytes, len);
    return 0;
}

static int
sink_end(void *ctx, void *handle)
{
    struct links *l = ctx;
    unsigned char digest[20];
    char hex[41];
    int rc;

    if ((rc = grow((void **)&l->bodies, &l->body_cap, l->body_count,
                   sizeof(*l->bodies))) < 0)
        return rc;
    SHA1_Final(digest, &l->sha);
    chunk_sha1_hex(digest, hex);
    memcpy(l->bodies[l->body_count].guid, l->current_guid, 41);
    l->bodies[l->body_count].sha_ok = strcasecmp(hex, l->current_guid) == 0;
    l->body_count++;
    return 0;
}

static void
check_message_line(struct links *l, const struct log_line *line)
{
    bool want_sha = l->levels & CAIRN_VERIFY_MESSAGE_GUIDS;

    for (size_t i = 0; i < l->message_count; i++) {
        struct expect_message *m = &l->messages[i];

        if (m->found || m->offset != (int64_t)line->offset)
            continue;
        for (size_t j = 0; j < l->body_count; j++) {
            if (strcasecmp(l->bodies[j].guid, m->guid) == 0 &&
                (!want_sha || l->bodies[j].sha_ok))
                m->found = true;
        }
    }
}

static bool
mailbox_matches(const struct expect_mailbox *m, const struct cairn_dlist *mb)
{
    static const char *const text_keys[5] = {"UNIQUEID", "MBOXNAME",
                                             "PARTITION", "ACL", "OPTIONS"};
    static const char *const num_keys[9] = {
        "LAST_UID",    "HIGHESTMODSEQ",   "RECENTUID",
        "RECENTTIME",  "LAST_APPENDDATE", "UIDVALIDITY",
        "XCONVMODSEQ", "SYNC_CRC",        "SYNC_CRC_ANNOT"};

    for (int i = 0; i < 5; i++) {
        const char *value = NULL;

        if (!cairn_dlist_get_atom(mb, text_keys[i], &value) || value == NULL ||
            strcmp(value, m->text[i]) != 0)
            return false;
    }
    for (int i = 0; i < 9; i++) {
        uint64_t value = 0;

        /* XCONVMODSEQ and the CRCs are optional: absent reads as 0. */
        if (!cairn_dlist_get_num64(mb, num_keys[i], &value) && i < 6)
            return false;
        if ((int64_t)value != m->num[i])
            return false;
    }
    return true;
}

static void
check_records(struct links *l, const char *uniqueid,
              const struct cairn_dlist *records)
{
    for (const struct cairn_dlist *r = cairn_dlist_first(records); r;
         r = cairn_dlist_next(r)) {
        uint64_t uid = 0, modseq = 0, updated = 0, idate = 0, size = 0;
        const char *guid = NULL;

        cairn_dlist_get_num64(r, "UID", &uid);
        cairn_dlist_get_num64(r, "MODSEQ", &modseq);
        cairn_dlist_get_num64(r, "LAST_UPDATED", &updated);
        cairn_dlist_get_num64(r, "INTERNALDATE", &idate);
        cairn_dlist_get_num64(r, "SIZE", &size);
        cairn_dlist_get_atom(r, "GUID", &guid);
        for (size_t i = 0; i < l->record_count; i++) {
            struct expect_record *e = &l->records[i];

            if (e->found || e->uid != (int64_t)uid ||
                strcmp(e->uniqueid, uniqueid) != 0)
                continue;
            e->found = e->modseq == (int64_t)modseq &&
                       e->last_updated == (int64_t)updated &&
                       e->internaldate == (int64_t)idate &&
                       e->size == (int64_t)size && guid &&
                       strcasecmp(e->guid, guid) == 0;
        }
    }
}

static int
links_visit(void *ctx, const struct log_line *line)
{
    struct links *l = ctx;
    const char *name = cairn_dlist_name(line->record);

    if (strcmp(name, "MESSAGE") == 0)
        check_message_line(l, line);
    l->past_nonsync_literal |= line->nonsync_literal;
    if (strcmp(name, "MAILBOX") == 0 && !l->past_nonsync_literal &&
        (l->levels & CAIRN_VERIFY_MAILBOX_LINKS)) {
        const struct cairn_dlist *records = NULL;
        const char *uniqueid = NULL;

        cairn_dlist_get_atom(line->record, "UNIQUEID", &uniqueid);
        for (size_t i = 0; i < l->mailbox_count && uniqueid; i++) {
            if (!l->mailboxes[i].found &&
                strcmp(l->mailboxes[i].text[0], uniqueid) == 0)
                l->mailboxes[i].found =
                    mailbox_matches(&l->mailboxes[i], line->record);
        }
        if (uniqueid && cairn_dlist_get_list(line->record, "RECORD", &records))
            check_records(l, uniqueid, records);
    }
    l->body_count = 0;
    return 0;
}

static int
report_missing(const struct links *l, int64_t chunk_id, char *error,
               size_t size)
{
    bool messages =
        l->levels & (CAIRN_VERIFY_MESSAGE_LINKS | CAIRN_VERIFY_MESSAGE_GUIDS);

    for (size_t i = 0; messages && i < l->message_count; i++) {
        if (!l->messages[i].found) {
            describe(error, size, "chunk %lld: message %s not found",
                     (long long)chunk_id, l->messages[i].guid);
            return CAIRN_ECORRUPT;
        }
    }
    if (!(l->levels & CAIRN_VERIFY_MAILBOX_LINKS))
        return 0;
    for (size_t i = 0; i < l->mailbox_count; i++) {
        if (!l->mailboxes[i].found) {
            describe(error, size, "chunk %lld: mailbox %s does not match",
                     (long long)chunk_id, l->mailboxes[i].text[1]);
            return CAIRN_ECORRUPT;
        }
    }
    for (size_t i = 0; i < l->record_count; i++) {
        if (!l->records[i].found) {
            describe(error, size, "chunk %lld: record %s:%lld does not match",
                     (long long)chunk_id, l->records[i].uniqueid,
                     (long long)l->records[i].uid);
            return CAIRN_ECORRUPT;
        }
    }
    return 0;
}

int
verify_chunk_links(struct cairn_store *store, int64_t chunk_id, uint64_t offset,
                   unsigned levels, struct chunk_member *member, char *error,
                   size_t size)
{
    struct links l = {.levels = levels};
    struct cairn_dlist_file_sink sink = {sink_begin, sink_data, sink_end, NULL,
                                         &l};
    int rc;

    if ((rc = load_expected(store, chunk_id, &l)) < 0)
        goto out;
    if ((rc = log_walk_chunk(store->fd, offset, 0, &sink, links_visit, &l,
                             member)) < 0) {
        describe(error, size, "chunk %lld: unreadable (%s)",
                 (long long)chunk_id, cairn_strerror(rc));
        goto out;
    }
    rc = report_missing(&l, chunk_id, error, size);
out:
    for (size_t i = 0; i < l.mailbox_count; i++)
        for (int j = 0; j < 5; j++)
            free(l.mailboxes[i].text[j]);
    free(l.messages);
    free(l.mailboxes);
    free(l.records);
    free(l.bodies);
    return rc;
}
