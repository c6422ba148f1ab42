/*
 * record.c - appending one APPLY record: index it (inside a savepoint of
 * the chunk's transaction, as Cyrus's lcb_indexw.c does), then write
 * "<ts> APPLY <dlist>\r\n" to the chunk, streaming message bodies. Either
 * both happen or neither: a failed write rewinds the file to the end of
 * the previous line and rolls the savepoint back.
 */
#include "node_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BIND(call)                                                             \
    if ((rc = (call)) < 0)                                                     \
    goto out

/* Prints a list without its key, or "" when absent (Cyrus's convention). */
static int
print_list(const struct cairn_dlist *list, struct cairn_buf *out)
{
    cairn_buf_reset(out);
    if (list == NULL)
        return cairn_buf_append(out, "", 0);
    return cairn_dlist_print(list, false, out, NULL);
}

/* FLAGS without \Expunged, printed "(a b)"; sets *expunged if it was there. */
static int
print_flags(const struct cairn_dlist *flags, struct cairn_buf *out,
            bool *expunged)
{
    bool first = true;
    int rc = 0;

    cairn_buf_reset(out);
    *expunged = false;
    if (flags == NULL)
        return cairn_buf_append(out, "", 0);
    if ((rc = cairn_buf_append(out, "(", 1)) < 0)
        return rc;
    for (const struct cairn_dlist *flag = cairn_dlist_first(flags); flag;
         flag = cairn_dlist_next(flag)) {
        const char *name = cairn_dlist_value(flag, NULL);

        if (name && strcmp(name, "\\Expunged") == 0) {
            *expunged = true;
            continue;
        }
        if (!first && (rc = cairn_buf_append(out, " ", 1)) < 0)
            return rc;
        if ((rc = cairn_dlist_print(flag, false, out, NULL)) < 0)
            return rc;
        first = false;
    }
    return cairn_buf_append(out, ")", 1);
}

static int64_t
lookup_id(sqlite3_stmt *stmt, const char *name, const char *value)
{
    int64_t id = 0;
    int step;

    if (sql_bind_text(stmt, name, value) < 0) {
        sql_reset(stmt);
        return -1;
    }
    step = sqlite3_step(stmt);
    if (step == SQLITE_ROW)
        id = sqlite3_column_int64(stmt, 0);
    else if (step != SQLITE_DONE)
        id = -1;
    sql_reset(stmt);
    return id;
}

static int
index_record_row(struct cairn_store *store, const struct cairn_dlist *record,
                 int64_t mailbox_id, int64_t ts, struct cairn_buf *scratch)
{
    sqlite3_stmt *stmt = store->stmts[STMT_RECORD_UPSERT];
    uint32_t uid, last_updated, internaldate;
    uint64_t modseq;
    const char *guid;
    int64_t message_id;
    bool expunged;
    int rc;

    if (!cairn_dlist_get_num32(record, "UID", &uid) ||
        !cairn_dlist_get_num64(record, "MODSEQ", &modseq) ||
        !cairn_dlist_get_num32(record, "LAST_UPDATED", &last_updated) ||
        !cairn_dlist_get_num32(record, "INTERNALDATE", &internaldate) ||
        !cairn_dlist_get_atom(record, "GUID", &guid) || guid == NULL)
        return CAIRN_EPROTO;
    message_id = lookup_id(store->stmts[STMT_MESSAGE_ID], ":guid", guid);
    if (message_id < 0)
        return CAIRN_EDB;
    if (message_id == 0)
        return 0; /* no body in this backup: Cyrus skips the record too */
    BIND(print_flags(cairn_dlist_get(record, "FLAGS"), scratch, &expunged));
    BIND(sql_bind_text(stmt, ":flags", scratch->data));
    BIND(print_list(cairn_dlist_get(record, "ANNOTATIONS"), scratch));
    BIND(sql_bind_text(stmt, ":annotations", scratch->data));
    BIND(sql_bind_int(stmt, ":mailbox_id", mailbox_id));
    BIND(sql_bind_int(stmt, ":message_id", message_id));
    BIND(sql_bind_int(stmt, ":last_chunk_id", store->chunk_id));
    BIND(sql_bind_int(stmt, ":uid", uid));
    BIND(sql_bind_int(stmt, ":modseq", (int64_t)modseq));
    BIND(sql_bind_int(stmt, ":last_updated", last_updated));
    BIND(sql_bind_int(stmt, ":internaldate", internaldate));
    if (expunged)
        BIND(sql_bind_int(stmt, ":expunged", ts));
    return sql_run(stmt);
out:
    sql_reset(stmt);
    return rc;
}

struct mailbox_fields {
    const char *uniqueid, *mboxname, *mboxtype, *partition, *acl, *options;
    uint32_t last_uid, recentuid, uidvalidity, sync_crc, sync_crc_annot;
    uint64_t highestmodseq, xconvmodseq;
    int64_t recenttime, last_appenddate, pop3_last_login, pop3_show_after;
    const struct cairn_dlist *records;
};

static int
read_mailbox(const struct cairn_dlist *mb, struct mailbox_fields *f)
{
    memset(f, 0, sizeof(*f));
    if (!cairn_dlist_get_atom(mb, "UNIQUEID", &f->uniqueid) ||
        !cairn_dlist_get_atom(mb, "MBOXNAME", &f->mboxname) ||
        !cairn_dlist_get_num32(mb, "LAST_UID", &f->last_uid) ||
        !cairn_dlist_get_num64(mb, "HIGHESTMODSEQ", &f->highestmodseq) ||
        !cairn_dlist_get_num32(mb, "RECENTUID", &f->recentuid) ||
        !cairn_dlist_get_date(mb, "RECENTTIME", &f->recenttime) ||
        !cairn_dlist_get_date(mb, "LAST_APPENDDATE", &f->last_appenddate) ||
        !cairn_dlist_get_date(mb, "POP3_LAST_LOGIN", &f->pop3_last_login) ||
        !cairn_dlist_get_num32(mb, "UIDVALIDITY", &f->uidvalidity) ||
        !cairn_dlist_get_atom(mb, "PARTITION", &f->partition) ||
        !cairn_dlist_get_atom(mb, "ACL", &f->acl) ||
        !cairn_dlist_get_atom(mb, "OPTIONS", &f->options) ||
        !cairn_dlist_get_list(mb, "RECORD", &f->records))
        return CAIRN_EPROTO;
    if (f->uniqueid == NULL || f->mboxname == NULL)
        return CAIRN_EPROTO;
    cairn_dlist_get_date(mb, "POP3_SHOW_AFTER", &f->pop3_show_after);
    cairn_dlist_get_atom(mb, "MBOXTYPE", &f->mboxtype);
    cairn_dlist_get_num64(mb, "XCONVMODSEQ", &f->xconvmodseq);
    cairn_dlist_get_num32(mb, "SYNC_CRC", &f->sync_crc);
    cairn_dlist_get_num32(mb, "SYNC_CRC_ANNOT", &f->sync_crc_annot);
    return 0;
}

static int
bind_mailbox(sqlite3_stmt *stmt, const struct mailbox_fields *f,
             int64_t chunk_id, const char *annotations)
{
    int rc;

    BIND(sql_bind_int(stmt, ":last_chunk_id", chunk_id));
    BIND(sql_bind_text(stmt, ":uniqueid", f->uniqueid));
    BIND(sql_bind_text(stmt, ":mboxname", f->mboxname));
    BIND(sql_bind_text(stmt, ":mboxtype", f->mboxtype));
    BIND(sql_bind_int(stmt, ":last_uid", f->last_uid));
    BIND(sql_bind_int(stmt, ":highestmodseq", (int64_t)f->highestmodseq));
    BIND(sql_bind_int(stmt, ":recentuid", f->recentuid));
    BIND(sql_bind_int(stmt, ":recenttime", f->recenttime));
    BIND(sql_bind_int(stmt, ":last_appenddate", f->last_appenddate));
    BIND(sql_bind_int(stmt, ":pop3_last_login", f->pop3_last_login));
    BIND(sql_bind_int(stmt, ":pop3_show_after", f->pop3_show_after));
    BIND(sql_bind_int(stmt, ":uidvalidity", f->uidvalidity));
    BIND(sql_bind_text(stmt, ":partition", f->partition));
    BIND(sql_bind_text(stmt, ":acl", f->acl));
    BIND(sql_bind_text(stmt, ":options", f->options));
    BIND(sql_bind_int(stmt, ":sync_crc", f->sync_crc));
    BIND(sql_bind_int(stmt, ":sync_crc_annot", f->sync_crc_annot));
    BIND(sql_bind_int(stmt, ":xconvmodseq", (int64_t)f->xconvmodseq));
    BIND(sql_bind_text(stmt, ":annotations", annotations));
out:
    return rc;
}

static int
index_mailbox(struct cairn_store *store, const struct cairn_dlist *mb,
              int64_t ts)
{
    sqlite3_stmt *upsert = store->stmts[STMT_MAILBOX_UPSERT];
    struct mailbox_fields fields;
    struct cairn_buf scratch;
    int64_t mailbox_id;
    int rc;

    cairn_buf_init(&scratch, RECORD_LINE_MAX);
    if ((rc = read_mailbox(mb, &fields)) < 0)
        goto out;
    if ((rc = print_list(cairn_dlist_get(mb, "ANNOTATIONS"), &scratch)) < 0)
        goto out;
    if ((rc = bind_mailbox(upsert, &fields, store->chunk_id, scratch.data)) <
        0) {
        sql_reset(upsert);
        goto out;
    }
    if ((rc = sql_run(upsert)) < 0)
        goto out;
    mailbox_id =
        lookup_id(store->stmts[STMT_MAILBOX_ID], ":uniqueid", fields.uniqueid);
    if (mailbox_id <= 0) {
        rc = CAIRN_EDB;
        goto out;
    }
    for (const struct cairn_dlist *record = cairn_dlist_first(fields.records);
         record; record = cairn_dlist_next(record)) {
        if ((rc = index_record_row(store, record, mailbox_id, ts, &scratch)) <
            0)
            goto out;
    }
out:
    cairn_buf_release(&scratch);
    return rc;
}

static int
index_message(struct cairn_store *store, const struct cairn_dlist *list,
              uint64_t offset)
{
    sqlite3_stmt *stmt = store->stmts[STMT_MESSAGE_UPSERT];
    int rc = 0;

    for (const struct cairn_dlist *file = cairn_dlist_first(list); file;
         file = cairn_dlist_next(file)) {
        const char *partition, *guid;
        uint64_t size;

        if (!cairn_dlist_file_info(file, &partition, &guid, &size, NULL))
            continue;
        BIND(sql_bind_text(stmt, ":guid", guid));
        BIND(sql_bind_text(stmt, ":partition", partition));
        BIND(sql_bind_int(stmt, ":chunk_id", store->chunk_id));
        BIND(sql_bind_int(stmt, ":offset", (int64_t)offset));
        BIND(sql_bind_int(stmt, ":size", (int64_t)size));
        if ((rc = sql_run(stmt)) < 0)
            return rc;
    }
    return 0;
out:
    sql_reset(stmt);
    return rc;
}

static int
add_tombstone(struct cairn_store *store)
{
    sqlite3_stmt *stmt = store->stmts[STMT_TOMBSTONE_ADD];
    int rc;

    if ((rc = sql_bind_int(stmt, ":chunk_id", store->chunk_id)) < 0) {
        sql_reset(stmt);
        return rc;
    }
    return sql_run(stmt);
}

static int
index_unmailbox(struct cairn_store *store, const struct cairn_dlist *record,
                int64_t ts)
{
    sqlite3_stmt *stmt = store->stmts[STMT_MAILBOX_DELETE];
    const char *name = NULL;
    int rc;

    if (!cairn_dlist_as_atom(record, &name) || name == NULL)
        return CAIRN_EPROTO;
    BIND(sql_bind_text(stmt, ":mboxname", name));
    BIND(sql_bind_int(stmt, ":deleted", ts));
    if ((rc = sql_run(stmt)) < 0)
        return rc;
    return add_tombstone(store);
out:
    sql_reset(stmt);
    return rc;
}

static int
index_rename(struct cairn_store *store, const struct cairn_dlist *record)
{
    sqlite3_stmt *stmt = store->stmts[STMT_MAILBOX_RENAME];
    const char *old_name, *new_name, *partition;
    uint32_t uidvalidity;
    int rc;

    if (!cairn_dlist_get_atom(record, "OLDMBOXNAME", &old_name) ||
        !cairn_dlist_get_atom(record, "NEWMBOXNAME", &new_name) ||
        !cairn_dlist_get_atom(record, "PARTITION", &partition) ||
        !cairn_dlist_get_num32(record, "UIDVALIDITY", &uidvalidity) ||
        old_name == NULL || new_name == NULL)
        return CAIRN_EPROTO;
    BIND(sql_bind_text(stmt, ":oldmboxname", old_name));
    BIND(sql_bind_text(stmt, ":newmboxname", new_name));
    BIND(sql_bind_text(stmt, ":partition", partition));
    BIND(sql_bind_int(stmt, ":uidvalidity", uidvalidity));
    if ((rc = sql_run(stmt)) < 0)
        return rc;
    return add_tombstone(store);
out:
    sql_reset(stmt);
    return rc;
}

static int
index_seen(struct cairn_store *store, const struct cairn_dlist *record)
{
    sqlite3_stmt *stmt = store->stmts[STMT_SEEN_UPSERT];
    const char *uniqueid, *seenuids;
    int64_t lastread, lastchange;
    uint32_t lastuid;
    int rc;

    if (!cairn_dlist_get_atom(record, "UNIQUEID", &uniqueid) ||
        !cairn_dlist_get_date(record, "LASTREAD", &lastread) ||
        !cairn_dlist_get_num32(record, "LASTUID", &lastuid) ||
        !cairn_dlist_get_date(record, "LASTCHANGE", &lastchange) ||
        !cairn_dlist_get_atom(record, "SEENUIDS", &seenuids) ||
        uniqueid == NULL)
        return CAIRN_EPROTO;
    BIND(sql_bind_int(stmt, ":last_chunk_id", store->chunk_id));
    BIND(sql_bind_text(stmt, ":uniqueid", uniqueid));
    BIND(sql_bind_int(stmt, ":lastread", lastread));
    BIND(sql_bind_int(stmt, ":lastuid", lastuid));
    BIND(sql_bind_int(stmt, ":lastchange", lastchange));
    BIND(sql_bind_text(stmt, ":seenuids", seenuids));
    return sql_run(stmt);
out:
    sql_reset(stmt);
    return rc;
}

static int
index_sub(struct cairn_store *store, const struct cairn_dlist *record,
          int64_t ts, bool unsubscribe)
{
    sqlite3_stmt *stmt = store->stmts[STMT_SUB_UPSERT];
    const char *name;
    int rc;

    if (!cairn_dlist_get_atom(record, "MBOXNAME", &name) || name == NULL)
        return CAIRN_EPROTO;
    BIND(sql_bind_int(stmt, ":last_chunk_id", store->chunk_id));
    BIND(sql_bind_text(stmt, ":mboxname", name));
    if (unsubscribe)
        BIND(sql_bind_int(stmt, ":unsubscribed", ts));
    return sql_run(stmt);
out:
    sql_reset(stmt);
    return rc;
}

static int
index_sieve(struct cairn_store *store, const struct cairn_dlist *record,
            int64_t ts, uint64_t offset, bool upload)
{
    sqlite3_stmt *del = store->stmts[STMT_SIEVE_DELETE];
    sqlite3_stmt *insert = store->stmts[STMT_SIEVE_INSERT];
    const char *filename, *content;
    size_t content_len;
    int64_t last_update;
    unsigned char digest[20];
    char guid[41];
    int rc;

    if (!cairn_dlist_get_atom(record, "FILENAME", &filename) ||
        filename == NULL)
        return CAIRN_EPROTO;
    if (upload &&
        (!cairn_dlist_get_date(record, "LAST_UPDATE", &last_update) ||
         !cairn_dlist_get_map(record, "CONTENT", &content, &content_len)))
        return CAIRN_EPROTO;
    BIND(sql_bind_text(del, ":filename", filename));
    BIND(sql_bind_int(del, ":deleted", ts));
    if ((rc = sql_run(del)) < 0)
        return rc;
    if (!upload)
        return add_tombstone(store);
    SHA1((const unsigned char *)content, content_len, digest);
    chunk_sha1_hex(digest, guid);
    del = insert;
    BIND(sql_bind_int(insert, ":chunk_id", store->chunk_id));
    BIND(sql_bind_int(insert, ":last_update", last_update));
    BIND(sql_bind_text(insert, ":filename", filename));
    BIND(sql_bind_text(insert, ":guid", guid));
    BIND(sql_bind_int(insert, ":offset", (int64_t)offset));
    return sql_run(insert);
out:
    sql_reset(del);
    return rc;
}

static int
index_expunge(struct cairn_store *store, const struct cairn_dlist *record,
              int64_t ts)
{
    sqlite3_stmt *find = store->stmts[STMT_MAILBOX_ID];
    sqlite3_stmt *stmt = store->stmts[STMT_RECORD_EXPUNGE];
    const struct cairn_dlist *uids;
    const char *uniqueid, *name;
    int64_t mailbox_id;
    int rc = 0;

    if (!cairn_dlist_get_atom(record, "MBOXNAME", &name) ||
        !cairn_dlist_get_atom(record, "UNIQUEID", &uniqueid) ||
        !cairn_dlist_get_list(record, "UID", &uids) || uniqueid == NULL)
        return CAIRN_EPROTO;
    if ((mailbox_id = lookup_id(find, ":uniqueid", uniqueid)) <= 0)
        return mailbox_id == 0 ? CAIRN_ENOENT : CAIRN_EDB;
    for (const struct cairn_dlist *uid = cairn_dlist_first(uids); uid;
         uid = cairn_dlist_next(uid)) {
        uint64_t value;

        if (!cairn_dlist_as_num64(uid, &value))
            return CAIRN_EPROTO;
        BIND(sql_bind_int(stmt, ":mailbox_id", mailbox_id));
        BIND(sql_bind_int(stmt, ":uid", (int64_t)value));
        BIND(sql_bind_int(stmt, ":expunged", ts));
        if ((rc = sql_run(stmt)) < 0)
            return rc;
    }
    return 0;
out:
    sql_reset(stmt);
    return rc;
}

int
store_index_record(struct cairn_store *store, const struct cairn_dlist *record,
                   int64_t ts, uint64_t offset)
{
    const char *name = cairn_dlist_name(record);

    if (strcmp(name, "MAILBOX") == 0)
        return index_mailbox(store, record, ts);
    if (strcmp(name, "UNMAILBOX") == 0)
        return index_unmailbox(store, record, ts);
    if (strcmp(name, "MESSAGE") == 0)
        return index_message(store, record, offset);
    if (strcmp(name, "RENAME") == 0)
        return index_rename(store, record);
    if (strcmp(name, "RESERVE") == 0)
        return 0;
    if (strcmp(name, "SEEN") == 0)
        return index_seen(store, record);
    if (strcmp(name, "SUB") == 0 || strcmp(name, "UNSUB") == 0)
        return index_sub(store, record, ts, name[0] == 'U');
    if (strcmp(name, "SIEVE") == 0 || strcmp(name, "UNSIEVE") == 0)
        return index_sieve(store, record, ts, offset, name[0] == 'S');
    if (strcmp(name, "EXPUNGE") == 0)
        return index_expunge(store, record, ts);
    return CAIRN_EPROTO;
}
