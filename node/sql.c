/*
 * sql.c - every SQL statement of the per-user index, in one place.
 *
 * The seven tables are Cyrus 3.6's backup index (backup/lcb_sqlconsts.c)
 * with user_version 3, so Cyrus's tools read cairn's files. cairn's own
 * bookkeeping lives in tables prefixed cairn_, which Cyrus ignores and
 * drops when it reindexes or compacts; everything in them can be rebuilt
 * from the data file.
 */
#include "node_int.h"

#include <string.h>

static const char schema_sql[] =
    "CREATE TABLE chunk(id INTEGER PRIMARY KEY ASC, ts_start INTEGER,"
    " ts_end INTEGER, offset INTEGER unique, length INTEGER,"
    " file_sha1 TEXT, data_sha1 TEXT);"
    "CREATE TABLE message(id INTEGER PRIMARY KEY ASC,"
    " guid CHAR UNIQUE NOT NULL, partition CHAR,"
    " chunk_id INTEGER REFERENCES chunk(id), offset INTEGER, size INTEGER);"
    "CREATE INDEX IF NOT EXISTS idx_msg_guid ON message(guid);"
    "CREATE TABLE mailbox(id INTEGER PRIMARY KEY ASC,"
    " last_chunk_id INTEGER NOT NULL REFERENCES chunk(id),"
    " uniqueid CHAR UNIQUE NOT NULL, mboxname CHAR NOT NULL, mboxtype CHAR,"
    " last_uid INTEGER, highestmodseq INTEGER, recentuid INTEGER,"
    " recenttime INTEGER, last_appenddate INTEGER, pop3_last_login INTEGER,"
    " pop3_show_after INTEGER, uidvalidity INTEGER, partition CHAR,"
    " acl CHAR, options CHAR, sync_crc INTEGER, sync_crc_annot INTEGER,"
    " quotaroot CHAR, xconvmodseq INTEGER, annotations CHAR,"
    " deleted INTEGER);"
    "CREATE INDEX IF NOT EXISTS idx_bmb_uid ON mailbox(uniqueid);"
    "CREATE TABLE mailbox_message(id INTEGER PRIMARY KEY ASC,"
    " mailbox_id INTEGER NOT NULL REFERENCES mailbox(id),"
    " message_id INTEGER NOT NULL REFERENCES message(id),"
    " last_chunk_id INTEGER NOT NULL REFERENCES chunk(id),"
    " uid INTEGER NOT NULL, modseq INTEGER, last_updated INTEGER,"
    " flags CHAR, internaldate INTEGER, annotations CHAR, expunged INTEGER,"
    " UNIQUE (mailbox_id, message_id));"
    "CREATE INDEX IF NOT EXISTS idx_mbr_uid ON mailbox_message(uid);"
    "CREATE TABLE subscription(id INTEGER PRIMARY KEY ASC,"
    " last_chunk_id INTEGER NOT NULL REFERENCES chunk(id),"
    " mboxname CHAR UNIQUE NOT NULL, unsubscribed INTEGER);"
    "CREATE INDEX IF NOT EXISTS idx_sub_mbx ON subscription(mboxname);"
    "CREATE TABLE seen(id INTEGER PRIMARY KEY ASC,"
    " last_chunk_id INTEGER NOT NULL REFERENCES chunk(id),"
    " uniqueid CHAR UNIQUE NOT NULL, lastread INTEGER, lastuid INTEGER,"
    " lastchange INTEGER, seenuids CHAR);"
    "CREATE INDEX IF NOT EXISTS idx_seen_unq ON seen(uniqueid);"
    "CREATE TABLE sieve(id INTEGER PRIMARY KEY ASC,"
    " chunk_id INTEGER NOT NULL REFERENCES chunk(id), last_update INTEGER,"
    " filename CHAR NOT NULL, guid CHAR NOT NULL, offset INTEGER,"
    " deleted INTEGER);"
    "CREATE INDEX IF NOT EXISTS idx_siv_fn ON sieve(filename);"
    "PRAGMA user_version = 3;";

/* cairn's private tables; created on every open, rebuilt when missing. */
static const char private_sql[] =
    "CREATE TABLE IF NOT EXISTS cairn_tail(id INTEGER PRIMARY KEY"
    " CHECK (id = 1), chunk_id INTEGER, end_offset INTEGER,"
    " last_ts INTEGER, file_sha BLOB);"
    "CREATE TABLE IF NOT EXISTS cairn_tombstone(chunk_id INTEGER"
    " PRIMARY KEY);"
    /* the last sequenced APPLY committed (node daemon), so a resend after
     * a restart is re-acknowledged, not applied again */
    "CREATE TABLE IF NOT EXISTS cairn_sequence(id INTEGER PRIMARY KEY"
    " CHECK (id = 1), last_sequence INTEGER NOT NULL);";

#define CHUNK_FIELDS                                                           \
    "id, ts_start, ts_end, offset, length, file_sha1, data_sha1"

static const char *const stmt_sql[STMT_COUNT] = {
    [STMT_BEGIN] = "BEGIN IMMEDIATE",
    [STMT_COMMIT] = "COMMIT",
    [STMT_ROLLBACK] = "ROLLBACK",
    [STMT_SAVEPOINT] = "SAVEPOINT record",
    [STMT_RELEASE] = "RELEASE record",
    [STMT_ROLLBACK_TO] = "ROLLBACK TO record",
    [STMT_CHUNK_INSERT] = "INSERT INTO chunk (ts_start, offset, file_sha1)"
                          " VALUES (:ts_start, :offset, :file_sha1)",
    [STMT_CHUNK_END] = "UPDATE chunk SET ts_end = :ts_end, length = :length,"
                       " data_sha1 = :data_sha1 WHERE id = :id",
    [STMT_CHUNK_LATEST] = "SELECT " CHUNK_FIELDS " FROM chunk"
                          " WHERE id = (SELECT MAX(id) FROM chunk)",
    [STMT_CHUNK_ALL] = "SELECT " CHUNK_FIELDS " FROM chunk ORDER BY id",
    [STMT_CHUNK_BY_ID] = "SELECT " CHUNK_FIELDS " FROM chunk WHERE id = :id",
    [STMT_TAIL_GET] = "SELECT chunk_id, end_offset, last_ts, file_sha"
                      " FROM cairn_tail WHERE id = 1",
    [STMT_TAIL_SET] =
        "INSERT OR REPLACE INTO cairn_tail (id, chunk_id, end_offset,"
        " last_ts, file_sha) VALUES (1, :chunk_id, :end_offset, :last_ts,"
        " :file_sha)",
    [STMT_MESSAGE_UPSERT] =
        "INSERT INTO message (guid, partition, chunk_id, offset, size)"
        " VALUES (:guid, :partition, :chunk_id, :offset, :size)"
        " ON CONFLICT(guid) DO UPDATE SET partition = excluded.partition,"
        " chunk_id = excluded.chunk_id, offset = excluded.offset,"
        " size = excluded.size",
    [STMT_MESSAGE_ID] = "SELECT id FROM message WHERE guid = :guid",
    [STMT_MESSAGE_FIND] =
        "SELECT m.partition, m.offset, m.size, c.offset, m.chunk_id"
        " FROM message AS m JOIN chunk AS c ON c.id = m.chunk_id"
        " WHERE m.guid = :guid",
    [STMT_MESSAGE_BY_CHUNK] =
        "SELECT guid, offset, size FROM message WHERE chunk_id = :chunk_id"
        " ORDER BY offset, id",
    [STMT_MAILBOX_UPSERT] =
        "INSERT INTO mailbox (last_chunk_id, uniqueid, mboxname, mboxtype,"
        " last_uid, highestmodseq, recentuid, recenttime, last_appenddate,"
        " pop3_last_login, pop3_show_after, uidvalidity, partition, acl,"
        " options, sync_crc, sync_crc_annot, quotaroot, xconvmodseq,"
        " annotations, deleted) VALUES (:last_chunk_id, :uniqueid,"
        " :mboxname, :mboxtype, :last_uid, :highestmodseq, :recentuid,"
        " :recenttime, :last_appenddate, :pop3_last_login,"
        " :pop3_show_after, :uidvalidity, :partition, :acl, :options,"
        " :sync_crc, :sync_crc_annot, NULL, :xconvmodseq, :annotations,"
        " NULL) ON CONFLICT(uniqueid) DO UPDATE SET"
        " last_chunk_id = excluded.last_chunk_id,"
        " mboxname = excluded.mboxname, mboxtype = excluded.mboxtype,"
        " last_uid = excluded.last_uid,"
        " highestmodseq = excluded.highestmodseq,"
        " recentuid = excluded.recentuid, recenttime = excluded.recenttime,"
        " last_appenddate = excluded.last_appenddate,"
        " pop3_last_login = excluded.pop3_last_login,"
        " pop3_show_after = excluded.pop3_show_after,"
        " uidvalidity = excluded.uidvalidity,"
        " partition = excluded.partition, acl = excluded.acl,"
        " options = excluded.options, sync_crc = excluded.sync_crc,"
        " sync_crc_annot = excluded.sync_crc_annot, quotaroot = NULL,"
        " xconvmodseq = excluded.xconvmodseq,"
        " annotations = excluded.annotations, deleted = NULL",
    [STMT_MAILBOX_ID] = "SELECT id FROM mailbox WHERE uniqueid = :uniqueid",
    [STMT_MAILBOX_BY_NAME] =
        "SELECT id, uniqueid, deleted FROM mailbox WHERE mboxname = :mboxname"
        " ORDER BY deleted IS NOT NULL, id DESC",
    [STMT_MAILBOX_RENAME] =
        "UPDATE mailbox SET mboxname = :newmboxname, partition = :partition,"
        " uidvalidity = :uidvalidity WHERE mboxname = :oldmboxname"
        /* Cyrus renames a deleted namesake too, whose last MAILBOX line
         * then no longer matches its row: its verify fails until retention
         * drops it. Only the live mailbox has the name on the source. */
        " AND deleted IS NULL",
    [STMT_MAILBOX_DELETE] =
        "UPDATE mailbox SET deleted = :deleted WHERE mboxname = :mboxname"
        " AND deleted IS NULL",
    [STMT_MAILBOX_LIVE] =
        "SELECT id, uniqueid, mboxname, mboxtype, last_uid, highestmodseq,"
        " recentuid, recenttime, last_appenddate, pop3_last_login,"
        " pop3_show_after, uidvalidity, partition, acl, options, sync_crc,"
        " sync_crc_annot, quotaroot, xconvmodseq, annotations, deleted,"
        " last_chunk_id FROM mailbox"
        " WHERE (:all OR deleted IS NULL)"
        " AND (:mboxname IS NULL OR mboxname = :mboxname) ORDER BY id",
    [STMT_MAILBOX_BY_CHUNK] =
        "SELECT uniqueid, mboxname, last_uid, highestmodseq, recentuid,"
        " recenttime, last_appenddate, uidvalidity, partition, acl, options,"
        " xconvmodseq, sync_crc, sync_crc_annot FROM mailbox"
        " WHERE last_chunk_id = :chunk_id",
    [STMT_RECORD_UPSERT] =
        "INSERT INTO mailbox_message (mailbox_id, message_id, last_chunk_id,"
        " uid, modseq, last_updated, flags, internaldate, annotations,"
        " expunged) VALUES (:mailbox_id, :message_id, :last_chunk_id, :uid,"
        " :modseq, :last_updated, :flags, :internaldate, :annotations,"
        " :expunged) ON CONFLICT(mailbox_id, message_id) DO UPDATE SET"
        " last_chunk_id = excluded.last_chunk_id, uid = excluded.uid,"
        " modseq = excluded.modseq, last_updated = excluded.last_updated,"
        " flags = excluded.flags, internaldate = excluded.internaldate,"
        " annotations = excluded.annotations,"
        /* Un-expunging clears the mark (Cyrus keeps it forever, §6.3-8). */
        " expunged = CASE WHEN excluded.expunged IS NULL THEN NULL"
        " ELSE COALESCE(mailbox_message.expunged, excluded.expunged) END"
        /*
         * The index holds one row per (mailbox, GUID). When the same body
         * sits under two UIDs (delivered twice, copied within a folder)
         * and one is expunged, Cyrus's row takes the expunged one and the
         * live copy is lost to restore and compaction. A live UID of the
         * body wins over another UID's expunge.
         */
        " WHERE NOT (excluded.expunged IS NOT NULL"
        " AND mailbox_message.expunged IS NULL"
        " AND mailbox_message.uid <> excluded.uid)",
    [STMT_RECORD_EXPUNGE] = "UPDATE mailbox_message SET expunged = :expunged"
                            " WHERE mailbox_id = :mailbox_id AND uid = :uid",
    [STMT_RECORDS_OF_MAILBOX] =
        "SELECT r.uid, r.modseq, r.last_updated, r.flags, r.internaldate,"
        " m.size, m.guid, r.annotations, r.expunged FROM mailbox_message AS r"
        " JOIN message AS m ON m.id = r.message_id"
        " WHERE r.mailbox_id = :mailbox_id ORDER BY r.uid, r.id",
    [STMT_RECORDS_BY_CHUNK] =
        "SELECT mb.uniqueid, r.uid, r.modseq, r.last_updated, r.internaldate,"
        " m.size, m.guid FROM mailbox_message AS r"
        " JOIN mailbox AS mb ON mb.id = r.mailbox_id"
        " JOIN message AS m ON m.id = r.message_id"
        " WHERE r.last_chunk_id = :chunk_id",
    [STMT_SUB_UPSERT] =
        "INSERT INTO subscription (last_chunk_id, mboxname, unsubscribed)"
        " VALUES (:last_chunk_id, :mboxname, :unsubscribed)"
        " ON CONFLICT(mboxname) DO UPDATE SET"
        " last_chunk_id = excluded.last_chunk_id,"
        " unsubscribed = excluded.unsubscribed",
    [STMT_SUB_LIVE] = "SELECT mboxname FROM subscription"
                      " WHERE unsubscribed IS NULL ORDER BY id",
    [STMT_SEEN_UPSERT] =
        "INSERT INTO seen (last_chunk_id, uniqueid, lastread, lastuid,"
        " lastchange, seenuids) VALUES (:last_chunk_id, :uniqueid,"
        " :lastread, :lastuid, :lastchange, :seenuids)"
        " ON CONFLICT(uniqueid) DO UPDATE SET"
        " last_chunk_id = excluded.last_chunk_id,"
        " lastread = excluded.lastread, lastuid = excluded.lastuid,"
        " lastchange = excluded.lastchange, seenuids = excluded.seenuids",
    [STMT_SEEN_ALL] = "SELECT uniqueid, lastread, lastuid, lastchange,"
                      " seenuids FROM seen ORDER BY id",
    [STMT_SIEVE_DELETE] = "UPDATE sieve SET deleted = :deleted"
                          " WHERE filename = :filename AND deleted IS NULL",
    [STMT_SIEVE_INSERT] =
        "INSERT INTO sieve (chunk_id, last_update, filename, guid, offset)"
        " VALUES (:chunk_id, :last_update, :filename, :guid, :offset)",
    [STMT_SIEVE_LIVE] = "SELECT filename, last_update, guid FROM sieve"
                        " WHERE deleted IS NULL ORDER BY id",
    [STMT_SEQUENCE_SET] = "INSERT OR REPLACE INTO cairn_sequence"
                          " (id, last_sequence) VALUES (1, :sequence)",
    [STMT_SEQUENCE_GET] = "SELECT last_sequence FROM cairn_sequence"
                          " WHERE id = 1",
    [STMT_TOMBSTONE_ADD] =
        "INSERT OR IGNORE INTO cairn_tombstone (chunk_id) VALUES (:chunk_id)",
    /*
     * Cyrus's live-chunk query (backup_index_chunk_select_live_sql) plus
     * the chunks that hold deletions, so that compaction keeps them.
     */
    [STMT_CHUNK_LIVE] =
        "SELECT " CHUNK_FIELDS " FROM chunk WHERE id IN ("
        " SELECT last_chunk_id FROM mailbox"
        "  WHERE deleted IS NULL OR deleted > :since"
        " UNION SELECT last_chunk_id FROM mailbox_message"
        "  WHERE expunged IS NULL OR expunged > :since"
        " UNION SELECT chunk_id FROM message AS m JOIN mailbox_message AS mm"
        "  ON m.id = mm.message_id"
        "  AND (mm.expunged IS NULL OR mm.expunged > :since)"
        " UNION SELECT last_chunk_id FROM subscription"
        "  WHERE unsubscribed IS NULL OR unsubscribed > :since"
        " UNION SELECT last_chunk_id FROM seen"
        " UNION SELECT chunk_id FROM sieve"
        "  WHERE deleted IS NULL OR deleted > :since"
        " UNION SELECT chunk_id FROM cairn_tombstone"
        /* the chunk whose line first flagged a kept record expunged (its
         * time; compact.c keeps that RECORD so a reindex gives it back) */
        " UNION SELECT c.id FROM chunk AS c JOIN mailbox_message AS r"
        "  ON r.expunged BETWEEN c.ts_start AND c.ts_end"
        "  WHERE r.expunged > :since) ORDER BY id",
    /* Compaction: is this chunk's copy of a body still referenced? */
    [STMT_MESSAGE_LIVE] =
        "SELECT 1 FROM message AS m"
        " JOIN mailbox_message AS mm ON mm.message_id = m.id"
        " JOIN mailbox AS mb ON mb.id = mm.mailbox_id"
        " WHERE m.guid = :guid AND m.chunk_id = :chunk_id"
        " AND (mm.expunged IS NULL OR mm.expunged > :since)"
        " AND (mb.deleted IS NULL OR mb.deleted > :since) LIMIT 1",
    /* Compaction: the live row whose latest state this chunk holds. */
    [STMT_RECORD_STATE] =
        "SELECT r.uid, r.modseq, r.last_updated, r.internaldate"
        " FROM mailbox_message AS r JOIN mailbox AS mb ON mb.id = r.mailbox_id"
        " JOIN message AS m ON m.id = r.message_id"
        " WHERE mb.uniqueid = :uniqueid AND m.guid = :guid"
        " AND r.last_chunk_id = :chunk_id"
        " AND (r.expunged IS NULL OR r.expunged > :since)"
        " AND (mb.deleted IS NULL OR mb.deleted > :since)",
    [STMT_MAILBOX_STATE] = "SELECT 1 FROM mailbox WHERE uniqueid = :uniqueid"
                           " AND last_chunk_id = :chunk_id"
                           " AND (deleted IS NULL OR deleted > :since)",
    /* Compaction: is the mailbox an EXPUNGE names still kept? */
    [STMT_MAILBOX_KEPT] = "SELECT 1 FROM mailbox WHERE uniqueid = :uniqueid"
                          " AND (deleted IS NULL OR deleted > :since)",
    /* Compaction: does an UNMAILBOX still stand for a kept mailbox? */
    [STMT_MAILBOX_DELETION] = "SELECT 1 FROM mailbox"
                              " WHERE mboxname = :mboxname"
                              " AND deleted > :since",
    [STMT_SUB_STATE] = "SELECT 1 FROM subscription WHERE mboxname = :mboxname"
                       " AND last_chunk_id = :chunk_id"
                       " AND (unsubscribed IS NULL OR unsubscribed > :since)",
    [STMT_SEEN_STATE] = "SELECT 1 FROM seen WHERE uniqueid = :uniqueid"
                        " AND last_chunk_id = :chunk_id",
    [STMT_SIEVE_STATE] = "SELECT 1 FROM sieve WHERE filename = :filename"
                         " AND chunk_id = :chunk_id AND offset = :offset"
                         " AND (deleted IS NULL OR deleted > :since)",
    [STMT_SIEVE_DELETION] = "SELECT 1 FROM sieve WHERE filename = :filename"
                            " AND deleted > :since",
    /* Compaction: a live row first flagged \Expunged at :ts. */
    [STMT_RECORD_EXPUNGED_AT] =
        "SELECT 1 FROM mailbox_message AS r"
        " JOIN mailbox AS mb ON mb.id = r.mailbox_id"
        " JOIN message AS m ON m.id = r.message_id"
        " WHERE mb.uniqueid = :uniqueid AND m.guid = :guid"
        " AND r.expunged = :ts AND r.expunged > :since"
        " AND (mb.deleted IS NULL OR mb.deleted > :since)",
    /*
     * Compaction: when each kept record was expunged. A record's row is
     * rebuilt from its latest line, but it was expunged when it was first
     * flagged (or by an APPLY EXPUNGE): the old time is carried over.
     */
    [STMT_RECORDS_EXPUNGED] =
        "SELECT mb.uniqueid, m.guid, r.expunged"
        " FROM mailbox_message AS r JOIN mailbox AS mb ON mb.id = r.mailbox_id"
        " JOIN message AS m ON m.id = r.message_id"
        " WHERE r.expunged > :since"
        " AND (mb.deleted IS NULL OR mb.deleted > :since)",
    [STMT_RECORD_SET_EXPUNGED] =
        "UPDATE mailbox_message SET expunged = :expunged"
        " WHERE mailbox_id = (SELECT id FROM mailbox"
        "  WHERE uniqueid = :uniqueid)"
        " AND message_id = (SELECT id FROM message WHERE guid = :guid)",
};

int
sql_init_schema(sqlite3 *db)
{
    sqlite3_stmt *stmt = NULL;
    int64_t version = -1;
    int rc = CAIRN_EDB;

    /*
     * Cyrus's pragmas, plus synchronous = EXTRA: in the default rollback
     * journal mode only EXTRA fsyncs the directory after the journal is
     * deleted, without which a power cut can roll a commit back.
     */
    if (sqlite3_exec(db,
                     "PRAGMA foreign_keys = ON; PRAGMA secure_delete = OFF;"
                     " PRAGMA temp_store = 2; PRAGMA synchronous = EXTRA;",
                     NULL, NULL, NULL) != SQLITE_OK)
        goto out;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, NULL) !=
            SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_ROW)
        goto out;
    version = sqlite3_column_int64(stmt, 0);
    if (version == 0) {
        if (sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL) != SQLITE_OK)
            goto out;
        if (sqlite3_exec(db, schema_sql, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            goto out;
        }
    } else if (version != 3 && version != 4) {
        rc = CAIRN_ECORRUPT;
        goto out;
    }
    if (sqlite3_exec(db, private_sql, NULL, NULL, NULL) != SQLITE_OK)
        goto out;
    rc = 0;
out:
    sqlite3_finalize(stmt);
    return rc;
}

int
sql_prepare_all(sqlite3 *db, sqlite3_stmt **stmts)
{
    for (int i = 0; i < STMT_COUNT; i++) {
        if (sqlite3_prepare_v3(db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                               &stmts[i], NULL) != SQLITE_OK)
            return CAIRN_EDB;
    }
    return 0;
}

void
sql_finalize_all(sqlite3_stmt **stmts)
{
    for (int i = 0; i < STMT_COUNT; i++) {
        sqlite3_finalize(stmts[i]);
        stmts[i] = NULL;
    }
}

void
sql_reset(sqlite3_stmt *stmt)
{
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
}

int
sql_run(sqlite3_stmt *stmt)
{
    int step = sqlite3_step(stmt);

    sql_reset(stmt);
    if (step == SQLITE_DONE || step == SQLITE_ROW)
        return 0;
    if (step == SQLITE_FULL)
        return CAIRN_ENOSPACE;
    if (step == SQLITE_BUSY || step == SQLITE_LOCKED)
        return CAIRN_ELOCKED;
    return CAIRN_EDB;
}

static int
param(sqlite3_stmt *stmt, const char *name)
{
    return sqlite3_bind_parameter_index(stmt, name);
}

int
sql_bind_text(sqlite3_stmt *stmt, const char *name, const char *text)
{
    int index = param(stmt, name);

    if (index == 0)
        return CAIRN_EINVAL;
    if (text == NULL)
        return sqlite3_bind_null(stmt, index) == SQLITE_OK ? 0 : CAIRN_EDB;
    return sqlite3_bind_text(stmt, index, text, -1, SQLITE_TRANSIENT) ==
                   SQLITE_OK
               ? 0
               : CAIRN_EDB;
}

int
sql_bind_int(sqlite3_stmt *stmt, const char *name, int64_t value)
{
    int index = param(stmt, name);

    if (index == 0)
        return CAIRN_EINVAL;
    return sqlite3_bind_int64(stmt, index, value) == SQLITE_OK ? 0 : CAIRN_EDB;
}

int
sql_bind_null(sqlite3_stmt *stmt, const char *name)
{
    int index = param(stmt, name);

    if (index == 0)
        return CAIRN_EINVAL;
    return sqlite3_bind_null(stmt, index) == SQLITE_OK ? 0 : CAIRN_EDB;
}

int
sql_bind_blob(sqlite3_stmt *stmt, const char *name, const void *data,
              size_t len)
{
    int index = param(stmt, name);

    if (index == 0)
        return CAIRN_EINVAL;
    return sqlite3_bind_blob(stmt, index, data, (int)len, SQLITE_TRANSIENT) ==
                   SQLITE_OK
               ? 0
               : CAIRN_EDB;
}

int
sql_exec(sqlite3_stmt *stmt, const struct sql_value *values, size_t count)
{
    int rc = 0;

    for (size_t i = 0; i < count && rc == 0; i++) {
        if (values[i].type == SQL_INT)
            rc = sql_bind_int(stmt, values[i].name, values[i].number);
        else if (values[i].type == SQL_TEXT)
            rc = sql_bind_text(stmt, values[i].name, values[i].text);
        else
            rc = sql_bind_null(stmt, values[i].name);
    }
    if (rc < 0) {
        sql_reset(stmt);
        return rc;
    }
    return sql_run(stmt);
}
