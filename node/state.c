/*
 * state.c - the answers backupd gives to GET USER, GET META, GET MAILBOXES
 * and GET FULLMAILBOX, built from the index with the same fields in the
 * same order (backup/lcb_indexr.c: backup_mailbox_to_dlist, backupd.c:
 * backupd_print_*), so sync_client sends only what the backup lacks.
 * Also message lookup by GUID, streaming the body out of its chunk.
 */
#include "node_int.h"

#include <stdlib.h>
#include <string.h>

static const char *
column_text(sqlite3_stmt *stmt, int column)
{
    return (const char *)sqlite3_column_text(stmt, column);
}

/*
 * Appends a list stored as printed text ("(...)") under name; text that
 * does not parse is left out, as Cyrus does; *added says which.
 */
static int
append_stored_list(struct cairn_dlist *parent, const char *name,
                   const char *text, bool *added)
{
    struct cairn_dlist *tree = NULL;
    int rc;

    *added = false;
    if (text == NULL || text[0] == '\0')
        return 0;
    if (cairn_dlist_parse(text, strlen(text), 0, NULL, NULL, &tree, NULL, 0) <
        0)
        return 0;
    if ((rc = cairn_dlist_append(parent, name, tree)) < 0) {
        cairn_dlist_free(tree);
        return rc;
    }
    *added = true;
    return 0;
}

/*
 * FLAGS from the stored text (an empty list when it does not parse: the
 * key is mandatory), with \Expunged put back for expunged records.
 */
static int
add_flags(struct cairn_dlist *record, const char *text, bool expunged)
{
    struct cairn_dlist *flags = NULL;
    int rc;

    if (text == NULL || text[0] == '\0' ||
        cairn_dlist_parse(text, strlen(text), 0, NULL, NULL, &flags, NULL, 0) <
            0)
        flags = cairn_dlist_new_list(NULL);
    if (flags == NULL)
        return CAIRN_ENOMEM;
    if (expunged && (rc = cairn_dlist_add_flag(flags, NULL, "\\Expunged")) < 0)
        goto fail;
    if ((rc = cairn_dlist_append(record, "FLAGS", flags)) < 0)
        goto fail;
    return 0;
fail:
    cairn_dlist_free(flags);
    return rc;
}

static int
add_record(struct cairn_dlist *records, sqlite3_stmt *row)
{
    struct cairn_dlist *record = NULL;
    bool added;
    int rc;

    if ((rc = cairn_dlist_add_kvlist(records, NULL, &record)) < 0 ||
        (rc = cairn_dlist_add_num(
             record, "UID", (uint64_t)sqlite3_column_int64(row, 0))) < 0 ||
        (rc = cairn_dlist_add_num(
             record, "MODSEQ", (uint64_t)sqlite3_column_int64(row, 1))) < 0 ||
        (rc = cairn_dlist_add_num(record, "LAST_UPDATED",
                                  (uint64_t)sqlite3_column_int64(row, 2))) <
            0 ||
        (rc = cairn_dlist_add_num(record, "INTERNALDATE",
                                  (uint64_t)sqlite3_column_int64(row, 4))) <
            0 ||
        (rc = cairn_dlist_add_guid(record, "GUID", column_text(row, 6))) < 0 ||
        (rc = cairn_dlist_add_num(record, "SIZE",
                                  (uint32_t)sqlite3_column_int64(row, 5))) < 0)
        return rc;
    if ((rc = add_flags(record, column_text(row, 3),
                        sqlite3_column_type(row, 8) != SQLITE_NULL)) < 0)
        return rc;
    return append_stored_list(record, "ANNOTATIONS", column_text(row, 7),
                              &added);
}

static int
add_records(struct cairn_store *store, struct cairn_dlist *mailbox,
            int64_t mailbox_id)
{
    sqlite3_stmt *rows = store->stmts[STMT_RECORDS_OF_MAILBOX];
    struct cairn_dlist *records = NULL;
    int rc, step;

    if ((rc = cairn_dlist_add_list(mailbox, "RECORD", &records)) < 0)
        return rc;
    if ((rc = sql_bind_int(rows, ":mailbox_id", mailbox_id)) < 0)
        goto out;
    while ((step = sqlite3_step(rows)) == SQLITE_ROW) {
        if ((rc = add_record(records, rows)) < 0)
            goto out;
    }
    rc = step == SQLITE_DONE ? 0 : CAIRN_EDB;
out:
    sql_reset(rows);
    return rc;
}

/* Builds "MAILBOX %(...)" from a STMT_MAILBOX_LIVE row. Owned result. */
static int
build_mailbox(struct cairn_store *store, sqlite3_stmt *row, bool records,
              struct cairn_dlist **out)
{
    struct cairn_dlist *mb = cairn_dlist_new_kvlist("MAILBOX");
    static const struct {
        const char *key;
        int column;
        bool text;
    } fields[] = {
        {"UNIQUEID", 1, true},
        {"MBOXNAME", 2, true},
        {"MBOXTYPE", 3, true},
        {"LAST_UID", 4, false},
        {"HIGHESTMODSEQ", 5, false},
        {"RECENTUID", 6, false},
        {"RECENTTIME", 7, false},
        {"LAST_APPENDDATE", 8, false},
        {"POP3_LAST_LOGIN", 9, false},
        {"POP3_SHOW_AFTER", 10, false},
        {"UIDVALIDITY", 11, false},
        {"PARTITION", 12, true},
        {"ACL", 13, true},
        {"OPTIONS", 14, true},
        {"SYNC_CRC", 15, false},
        {"SYNC_CRC_ANNOT", 16, false},
        {"QUOTAROOT", 17, true},
        {"XCONVMODSEQ", 18, false},
    };
    bool added;
    int rc = 0;

    *out = NULL;
    if (mb == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]) && rc == 0; i++) {
        int column = fields[i].column;

        if (fields[i].text)
            rc = cairn_dlist_add_atom(mb, fields[i].key,
                                      column_text(row, column));
        else
            rc = cairn_dlist_add_num(
                mb, fields[i].key, (uint64_t)sqlite3_column_int64(row, column));
    }
    if (rc == 0)
        rc =
            append_stored_list(mb, "ANNOTATIONS", column_text(row, 19), &added);
    if (rc == 0 && records)
        rc = add_records(store, mb, sqlite3_column_int64(row, 0));
    if (rc < 0) {
        cairn_dlist_free(mb);
        return rc;
    }
    *out = mb;
    return 0;
}

/* Emits the mailboxes that STMT_MAILBOX_LIVE selects for mboxname. */
static int
emit_mailboxes(struct cairn_store *store, const char *mboxname, bool all,
               bool records, cairn_store_emit emit, void *ctx, int *count)
{
    sqlite3_stmt *rows = store->stmts[STMT_MAILBOX_LIVE];
    int rc, step;

    if ((rc = sql_bind_int(rows, ":all", all)) < 0 ||
        (rc = sql_bind_text(rows, ":mboxname", mboxname)) < 0)
        goto out;
    while ((step = sqlite3_step(rows)) == SQLITE_ROW) {
        struct cairn_dlist *mb = NULL;

        if ((rc = build_mailbox(store, rows, records, &mb)) < 0)
            goto out;
        rc = emit(ctx, mb);
        cairn_dlist_free(mb);
        if (rc != 0)
            goto out;
        if (count)
            (*count)++;
        if (mboxname)
            break; /* one answer per name */
    }
    rc = step == SQLITE_ROW || step == SQLITE_DONE ? 0 : CAIRN_EDB;
out:
    sql_reset(rows);
    return rc;
}

/* Fills one kvlist item from the current row of its statement. */
typedef int (*fill_item)(struct cairn_dlist *item, sqlite3_stmt *row);

/*
 * Emits one kvlist named name per row of rows (SEEN, SIEVE): the loop,
 * the allocation and the statement reset shared by the row-per-item
 * answers.
 */
static int
emit_rows(sqlite3_stmt *rows, const char *name, fill_item fill,
          cairn_store_emit emit, void *ctx)
{
    int rc = 0, step;

    while ((step = sqlite3_step(rows)) == SQLITE_ROW) {
        struct cairn_dlist *item = cairn_dlist_new_kvlist(name);

        if (item == NULL) {
            rc = CAIRN_ENOMEM;
            break;
        }
        if ((rc = fill(item, rows)) == 0)
            rc = emit(ctx, item);
        cairn_dlist_free(item);
        if (rc != 0)
            break;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = CAIRN_EDB;
    sql_reset(rows);
    return rc;
}

static int
fill_seen(struct cairn_dlist *seen, sqlite3_stmt *rows)
{
    int rc;

    if ((rc = cairn_dlist_add_atom(seen, "UNIQUEID", column_text(rows, 0))) <
            0 ||
        (rc = cairn_dlist_add_num(
             seen, "LASTREAD", (uint64_t)sqlite3_column_int64(rows, 1))) < 0 ||
        (rc = cairn_dlist_add_num(
             seen, "LASTUID", (uint64_t)sqlite3_column_int64(rows, 2))) < 0 ||
        (rc = cairn_dlist_add_num(seen, "LASTCHANGE",
                                  (uint64_t)sqlite3_column_int64(rows, 3))) < 0)
        return rc;
    return cairn_dlist_add_atom(seen, "SEENUIDS", column_text(rows, 4));
}

static int
fill_sieve(struct cairn_dlist *sieve, sqlite3_stmt *rows)
{
    int rc;

    if ((rc = cairn_dlist_add_atom(sieve, "FILENAME", column_text(rows, 0))) <
            0 ||
        (rc = cairn_dlist_add_num(sieve, "LAST_UPDATE",
                                  (uint64_t)sqlite3_column_int64(rows, 1))) <
            0 ||
        (rc = cairn_dlist_add_atom(sieve, "GUID", column_text(rows, 2))) < 0)
        return rc;
    return cairn_dlist_add_num(sieve, "ISACTIVE", 0);
}

static int
emit_seen(struct cairn_store *store, cairn_store_emit emit, void *ctx)
{
    return emit_rows(store->stmts[STMT_SEEN_ALL], "SEEN", fill_seen, emit, ctx);
}

static int
emit_lsub(struct cairn_store *store, cairn_store_emit emit, void *ctx)
{
    sqlite3_stmt *rows = store->stmts[STMT_SUB_LIVE];
    struct cairn_dlist *lsub = cairn_dlist_new_list("LSUB");
    int rc = 0, step;

    if (lsub == NULL)
        return CAIRN_ENOMEM;
    while ((step = sqlite3_step(rows)) == SQLITE_ROW) {
        if ((rc = cairn_dlist_add_atom(lsub, "MBOXNAME",
                                       column_text(rows, 0))) < 0)
            break;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = CAIRN_EDB;
    sql_reset(rows);
    if (rc == 0 && cairn_dlist_count(lsub) > 0)
        rc = emit(ctx, lsub);
    cairn_dlist_free(lsub);
    return rc;
}

static int
emit_sieve(struct cairn_store *store, cairn_store_emit emit, void *ctx)
{
    return emit_rows(store->stmts[STMT_SIEVE_LIVE], "SIEVE", fill_sieve, emit,
                     ctx);
}

int
cairn_store_get_meta(struct cairn_store *store, cairn_store_emit emit,
                     void *ctx)
{
    int rc;

    if ((rc = emit_seen(store, emit, ctx)) != 0 ||
        (rc = emit_lsub(store, emit, ctx)) != 0)
        return rc;
    return emit_sieve(store, emit, ctx);
}

int
cairn_store_get_user(struct cairn_store *store, cairn_store_emit emit,
                     void *ctx)
{
    int rc;

    if ((rc = emit_mailboxes(store, NULL, false, false, emit, ctx, NULL)) != 0)
        return rc;
    return cairn_store_get_meta(store, emit, ctx);
}

int
cairn_store_get_mailboxes(struct cairn_store *store,
                          const char *const *mboxnames, size_t count,
                          cairn_store_emit emit, void *ctx)
{
    for (size_t i = 0; i < count; i++) {
        int rc;

        if (mboxnames[i] == NULL)
            continue;
        if ((rc = emit_mailboxes(store, mboxnames[i], false, false, emit, ctx,
                                 NULL)) != 0)
            return rc;
    }
    return 0;
}

int
cairn_store_get_fullmailbox(struct cairn_store *store, const char *mboxname,
                            cairn_store_emit emit, void *ctx)
{
    int found = 0;
    int rc;

    if (mboxname == NULL)
        return CAIRN_EINVAL;
    if ((rc = emit_mailboxes(store, mboxname, false, true, emit, ctx,
                             &found)) != 0)
        return rc;
    return found > 0 ? 0 : CAIRN_ENOENT;
}

int
store_message_held(struct cairn_store *store, const char *guid, bool *held)
{
    sqlite3_stmt *stmt = store->stmts[STMT_MESSAGE_ID];
    int rc, step;

    *held = false;
    if ((rc = sql_bind_text(stmt, ":guid", guid)) == 0) {
        step = sqlite3_step(stmt);
        if (step == SQLITE_ROW)
            *held = true;
        else if (step != SQLITE_DONE)
            rc = CAIRN_EDB;
    }
    sql_reset(stmt);
    return rc;
}

bool
cairn_store_has_message(struct cairn_store *store, const char *guid)
{
    bool held = false;

    return store_message_held(store, guid, &held) == 0 && held;
}

int
cairn_store_find_missing(struct cairn_store *store,
                         const struct cairn_dlist *guids,
                         struct cairn_dlist *missing)
{
    int rc = store_lookups_begin(store);

    for (const struct cairn_dlist *item = cairn_dlist_first(guids);
         item != NULL && rc == 0; item = cairn_dlist_next(item)) {
        const char *guid;
        bool held = false;

        if (cairn_dlist_as_guid(item, &guid) &&
            (rc = store_message_held(store, guid, &held)) == 0 && !held)
            rc = cairn_dlist_add_atom(missing, NULL, guid);
    }
    return store_lookups_end(store, rc);
}
