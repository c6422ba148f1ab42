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

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

static int
index_record_row(struct cairn_store *store, const struct cairn_dlist *record,
                 int64_t mailbox_id, int64_t ts, struct cairn_buf *flags,
                 struct cairn_buf *annotations)
{
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
    if ((rc = print_flags(cairn_dlist_get(record, "FLAGS"), flags, &expunged)) <
            0 ||
        (rc = print_list(cairn_dlist_get(record, "ANNOTATIONS"), annotations)) <
            0)
        return rc;
    {
        const struct sql_value values[] = {
            SQL_TEXT_VALUE(":flags", flags->data),
            SQL_TEXT_VALUE(":annotations", annotations->data),
            SQL_INT_VALUE(":mailbox_id", mailbox_id),
            SQL_INT_VALUE(":message_id", message_id),
            SQL_INT_VALUE(":last_chunk_id", store->chunk_id),
            SQL_INT_VALUE(":uid", uid),
            SQL_INT_VALUE(":modseq", modseq),
            SQL_INT_VALUE(":last_updated", last_updated),
            SQL_INT_VALUE(":internaldate", internaldate),
            expunged ? (struct sql_value)SQL_INT_VALUE(":expunged", ts)
                     : (struct sql_value)SQL_NULL_VALUE(":expunged"),
        };

        return sql_exec(store->stmts[STMT_RECORD_UPSERT], values,
                        COUNT(values));
    }
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
upsert_mailbox(struct cairn_store *store, const struct mailbox_fields *f,
               const char *annotations)
{
    const struct sql_value values[] = {
        SQL_INT_VALUE(":last_chunk_id", store->chunk_id),
        SQL_TEXT_VALUE(":uniqueid", f->uniqueid),
        SQL_TEXT_VALUE(":mboxname", f->mboxname),
        SQL_TEXT_VALUE(":mboxtype", f->mboxtype),
        SQL_INT_VALUE(":last_uid", f->last_uid),
        SQL_INT_VALUE(":highestmodseq", f->highestmodseq),
        SQL_INT_VALUE(":recentuid", f->recentuid),
        SQL_INT_VALUE(":recenttime", f->recenttime),
        SQL_INT_VALUE(":last_appenddate", f->last_appenddate),
        SQL_INT_VALUE(":pop3_last_login", f->pop3_last_login),
        SQL_INT_VALUE(":pop3_show_after", f->pop3_show_after),
        SQL_INT_VALUE(":uidvalidity", f->uidvalidity),
        SQL_TEXT_VALUE(":partition", f->partition),
        SQL_TEXT_VALUE(":acl", f->acl),
        SQL_TEXT_VALUE(":options", f->options),
        SQL_INT_VALUE(":sync_crc", f->sync_crc),
        SQL_INT_VALUE(":sync_crc_annot", f->sync_crc_annot),
        SQL_INT_VALUE(":xconvmodseq", f->xconvmodseq),
        SQL_TEXT_VALUE(":annotations", annotations),
    };

    return sql_exec(store->stmts[STMT_MAILBOX_UPSERT], values, COUNT(values));
}

static int
index_mailbox(struct cairn_store *store, const struct cairn_dlist *mb,
              int64_t ts)
{
    struct mailbox_fields fields;
    struct cairn_buf first, second;
    int64_t mailbox_id;
    int rc;

    cairn_buf_init(&first, RECORD_LINE_MAX);
    cairn_buf_init(&second, RECORD_LINE_MAX);
    if ((rc = read_mailbox(mb, &fields)) < 0 ||
        (rc = print_list(cairn_dlist_get(mb, "ANNOTATIONS"), &first)) < 0 ||
        (rc = upsert_mailbox(store, &fields, first.data)) < 0)
        goto out;
    mailbox_id =
        lookup_id(store->stmts[STMT_MAILBOX_ID], ":uniqueid", fields.uniqueid);
    if (mailbox_id <= 0) {
        rc = CAIRN_EDB;
        goto out;
    }
    for (const struct cairn_dlist *record = cairn_dlist_first(fields.records);
         record && rc == 0; record = cairn_dlist_next(record))
        rc = index_record_row(store, record, mailbox_id, ts, &first, &second);
out:
    cairn_buf_release(&first);
    cairn_buf_release(&second);
    return rc;
}

static int
index_message(struct cairn_store *store, const struct cairn_dlist *list,
              uint64_t offset)
{
    int rc = 0;

    for (const struct cairn_dlist *file = cairn_dlist_first(list);
         file && rc == 0; file = cairn_dlist_next(file)) {
        const char *partition, *guid;
        uint64_t size;

        if (!cairn_dlist_file_info(file, &partition, &guid, &size, NULL))
            continue;
        {
            const struct sql_value values[] = {
                SQL_TEXT_VALUE(":guid", guid),
                SQL_TEXT_VALUE(":partition", partition),
                SQL_INT_VALUE(":chunk_id", store->chunk_id),
                SQL_INT_VALUE(":offset", offset),
                SQL_INT_VALUE(":size", size),
            };

            rc = sql_exec(store->stmts[STMT_MESSAGE_UPSERT], values,
                          COUNT(values));
        }
    }
    return rc;
}

/*
 * Deletions change rows without moving their chunk ids, so Cyrus's
 * live-chunk query forgets the chunk that holds them and compaction would
 * undo them (§6.3-7); cairn_tombstone keeps such chunks live.
 */
static int
add_tombstone(struct cairn_store *store)
{
    const struct sql_value values[] = {
        SQL_INT_VALUE(":chunk_id", store->chunk_id),
    };

    return sql_exec(store->stmts[STMT_TOMBSTONE_ADD], values, COUNT(values));
}

static int
index_unmailbox(struct cairn_store *store, const struct cairn_dlist *record,
                int64_t ts)
{
    const char *name = NULL;
    int rc;

    if (!cairn_dlist_as_atom(record, &name) || name == NULL)
        return CAIRN_EPROTO;
    {
        const struct sql_value values[] = {
            SQL_TEXT_VALUE(":mboxname", name),
            SQL_INT_VALUE(":deleted", ts),
        };

        rc = sql_exec(store->stmts[STMT_MAILBOX_DELETE], values, COUNT(values));
    }
    return rc < 0 ? rc : add_tombstone(store);
}

static int
index_rename(struct cairn_store *store, const struct cairn_dlist *record)
{
    const char *old_name, *new_name, *partition;
    uint32_t uidvalidity;
    int rc;

    if (!cairn_dlist_get_atom(record, "OLDMBOXNAME", &old_name) ||
        !cairn_dlist_get_atom(record, "NEWMBOXNAME", &new_name) ||
        !cairn_dlist_get_atom(record, "PARTITION", &partition) ||
        !cairn_dlist_get_num32(record, "UIDVALIDITY", &uidvalidity) ||
        old_name == NULL || new_name == NULL)
        return CAIRN_EPROTO;
    {
        const struct sql_value values[] = {
            SQL_TEXT_VALUE(":oldmboxname", old_name),
            SQL_TEXT_VALUE(":newmboxname", new_name),
            SQL_TEXT_VALUE(":partition", partition),
            SQL_INT_VALUE(":uidvalidity", uidvalidity),
        };

        rc = sql_exec(store->stmts[STMT_MAILBOX_RENAME], values, COUNT(values));
    }
    return rc < 0 ? rc : add_tombstone(store);
}

static int
index_seen(struct cairn_store *store, const struct cairn_dlist *record)
{
    const char *uniqueid, *seenuids;
    int64_t lastread, lastchange;
    uint32_t lastuid;

    if (!cairn_dlist_get_atom(record, "UNIQUEID", &uniqueid) ||
        !cairn_dlist_get_date(record, "LASTREAD", &lastread) ||
        !cairn_dlist_get_num32(record, "LASTUID", &lastuid) ||
        !cairn_dlist_get_date(record, "LASTCHANGE", &lastchange) ||
        !cairn_dlist_get_atom(record, "SEENUIDS", &seenuids) ||
        uniqueid == NULL)
        return CAIRN_EPROTO;
    {
        const struct sql_value values[] = {
            SQL_INT_VALUE(":last_chunk_id", store->chunk_id),
            SQL_TEXT_VALUE(":uniqueid", uniqueid),
            SQL_INT_VALUE(":lastread", lastread),
            SQL_INT_VALUE(":lastuid", lastuid),
            SQL_INT_VALUE(":lastchange", lastchange),
            SQL_TEXT_VALUE(":seenuids", seenuids),
        };

        return sql_exec(store->stmts[STMT_SEEN_UPSERT], values, COUNT(values));
    }
}

static int
index_sub(struct cairn_store *store, const struct cairn_dlist *record,
          int64_t ts, bool unsubscribe)
{
    const char *name;

    if (!cairn_dlist_get_atom(record, "MBOXNAME", &name) || name == NULL)
        return CAIRN_EPROTO;
    {
        const struct sql_value values[] = {
            SQL_INT_VALUE(":last_chunk_id", store->chunk_id),
            SQL_TEXT_VALUE(":mboxname", name),
            unsubscribe ? (struct sql_value)SQL_INT_VALUE(":unsubscribed", ts)
                        : (struct sql_value)SQL_NULL_VALUE(":unsubscribed"),
        };

        return sql_exec(store->stmts[STMT_SUB_UPSERT], values, COUNT(values));
    }
}

static int
index_sieve(struct cairn_store *store, const struct cairn_dlist *record,
            int64_t ts, uint64_t offset, bool upload)
{
    const char *filename, *content = NULL;
    size_t content_len = 0;
    int64_t last_update = 0;
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
    {
        const struct sql_value values[] = {
            SQL_TEXT_VALUE(":filename", filename),
            SQL_INT_VALUE(":deleted", ts),
        };

        rc = sql_exec(store->stmts[STMT_SIEVE_DELETE], values, COUNT(values));
    }
    if (rc < 0 || !upload)
        return rc < 0 ? rc : add_tombstone(store);
    SHA1((const unsigned char *)content, content_len, digest);
    chunk_sha1_hex(digest, guid);
    {
        const struct sql_value values[] = {
            SQL_INT_VALUE(":chunk_id", store->chunk_id),
            SQL_INT_VALUE(":last_update", last_update),
            SQL_TEXT_VALUE(":filename", filename),
            SQL_TEXT_VALUE(":guid", guid),
            SQL_INT_VALUE(":offset", offset),
        };

        return sql_exec(store->stmts[STMT_SIEVE_INSERT], values, COUNT(values));
    }
}

static int
index_expunge(struct cairn_store *store, const struct cairn_dlist *record,
              int64_t ts)
{
    const struct cairn_dlist *uids;
    const char *uniqueid, *name;
    int64_t mailbox_id;
    int rc = 0;

    if (!cairn_dlist_get_atom(record, "MBOXNAME", &name) ||
        !cairn_dlist_get_atom(record, "UNIQUEID", &uniqueid) ||
        !cairn_dlist_get_list(record, "UID", &uids) || uniqueid == NULL)
        return CAIRN_EPROTO;
    mailbox_id =
        lookup_id(store->stmts[STMT_MAILBOX_ID], ":uniqueid", uniqueid);
    if (mailbox_id <= 0)
        return mailbox_id == 0 ? CAIRN_ENOENT : CAIRN_EDB;
    for (const struct cairn_dlist *uid = cairn_dlist_first(uids);
         uid && rc == 0; uid = cairn_dlist_next(uid)) {
        uint64_t value;

        if (!cairn_dlist_as_num64(uid, &value))
            return CAIRN_EPROTO;
        {
            const struct sql_value values[] = {
                SQL_INT_VALUE(":mailbox_id", mailbox_id),
                SQL_INT_VALUE(":uid", value),
                SQL_INT_VALUE(":expunged", ts),
            };

            rc = sql_exec(store->stmts[STMT_RECORD_EXPUNGE], values,
                          COUNT(values));
        }
    }
    return rc < 0 ? rc : add_tombstone(store);
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
