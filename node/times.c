/*
 * times.c - the times an index holds that no state answer carries: when
 * a mailbox was deleted, a record expunged, a folder unsubscribed, a
 * sieve script deleted. They are the update stamps the router gave
 * (DESIGN.md "One time per update"), equal on replicas that took the same
 * updates, so VERIFY's cross-replica digest covers them too.
 */
#include "node_int.h"

#include <sqlite3.h>
#include <string.h>

/* Longest line given (the text columns are names, GUIDs and numbers). */
#define TIMES_LINE_MAX 4096

/*
 * Rows by their natural keys, never by row or chunk ids (which differ
 * between replicas: chunks close at each node's own commit rounds).
 */
static const char *const times_sql[] = {
    "SELECT 'mailbox', uniqueid, mboxname, deleted FROM mailbox"
    " ORDER BY uniqueid",
    "SELECT 'record', b.uniqueid, r.uid, m.guid, r.expunged"
    " FROM mailbox_message AS r JOIN mailbox AS b ON b.id = r.mailbox_id"
    " JOIN message AS m ON m.id = r.message_id"
    " ORDER BY b.uniqueid, r.uid, m.guid",
    "SELECT 'subscription', mboxname, unsubscribed FROM subscription"
    " ORDER BY mboxname",
    "SELECT 'sieve', filename, guid, last_update, deleted FROM sieve"
    " ORDER BY filename, guid, last_update, deleted",
};

/* "col col ..." of the row, NULL printed "-"; CAIRN_ETOOBIG past max. */
static int
print_row(sqlite3_stmt *stmt, char *line, size_t size)
{
    size_t used = 0;
    int columns = sqlite3_column_count(stmt);

    line[0] = '\0';
    for (int i = 0; i < columns; i++) {
        const unsigned char *text = sqlite3_column_text(stmt, i);
        const char *value = text != NULL ? (const char *)text : "-";
        size_t len = strlen(value);

        if (used + len + 2 > size)
            return CAIRN_ETOOBIG;
        if (i > 0)
            line[used++] = ' ';
        memcpy(line + used, value, len + 1);
        used += len;
    }
    return 0;
}

int
cairn_store_each_time(struct cairn_store *store, cairn_store_line_fn fn,
                      void *ctx)
{
    char line[TIMES_LINE_MAX];
    sqlite3_stmt *stmt = NULL;
    int rc = 0, step;

    for (size_t i = 0; i < sizeof(times_sql) / sizeof(times_sql[0]); i++) {
        if (sqlite3_prepare_v2(store->db, times_sql[i], -1, &stmt, NULL) !=
            SQLITE_OK) {
            rc = CAIRN_EDB;
            goto out;
        }
        while ((step = sqlite3_step(stmt)) == SQLITE_ROW)
            if ((rc = print_row(stmt, line, sizeof(line))) < 0 ||
                (rc = fn(ctx, line)) != 0)
                goto out;
        if (step != SQLITE_DONE) {
            rc = CAIRN_EDB;
            goto out;
        }
        sqlite3_finalize(stmt);
        stmt = NULL;
    }
out:
    sqlite3_finalize(stmt);
    return rc;
}
