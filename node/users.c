/*
 * users.c - whole-user operations: APPLY UNUSER (which backupd answers OK
 * and ignores, so a deleted user's backup never expires, §6.3-10) written
 * as the deletions it implies, in record types Cyrus's tools understand;
 * and compaction of every user of a catalog, one user at a time.
 */
#include "node_int.h"

#include <stdlib.h>
#include <string.h>

#define NAMES_MAX 100000

struct name_list {
    char **names;
    size_t count, cap;
};

/* Collects column of every row of stmt (then reset). */
static int
collect(struct name_list *list, sqlite3_stmt *stmt, int column)
{
    int rc = 0, step;

    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(stmt, column);

        if (name == NULL)
            continue;
        if (list->count == list->cap) {
            char **grown;

            if (list->cap >= NAMES_MAX) {
                rc = CAIRN_ETOOBIG;
                break;
            }
            list->cap = list->cap ? list->cap * 2 : 16;
            if ((grown = realloc(list->names,
                                 list->cap * sizeof(*list->names))) == NULL) {
                rc = CAIRN_ENOMEM;
                break;
            }
            list->names = grown;
        }
        if ((list->names[list->count] = strdup(name)) == NULL) {
            rc = CAIRN_ENOMEM;
            break;
        }
        list->count++;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = CAIRN_EDB;
    sql_reset(stmt);
    return rc;
}

static void
release(struct name_list *list)
{
    for (size_t i = 0; i < list->count; i++)
        free(list->names[i]);
    free(list->names);
}

/* Appends "verb %(USERID userid key name)" or "UNMAILBOX name". */
static int
append_deletion(struct cairn_store *store, int64_t ts, const char *verb,
                const char *userid, const char *key, const char *name)
{
    struct cairn_dlist *record = NULL;
    int rc;

    if (key == NULL) {
        record = cairn_dlist_new_atom(verb, name);
        rc = record ? 0 : CAIRN_ENOMEM;
    } else if ((record = cairn_dlist_new_kvlist(verb)) == NULL) {
        rc = CAIRN_ENOMEM;
    } else if ((rc = cairn_dlist_add_atom(record, "USERID", userid)) == 0) {
        rc = cairn_dlist_add_atom(record, key, name);
    }
    if (rc == 0)
        rc = cairn_store_append(store, ts, record, NULL);
    cairn_dlist_free(record);
    return rc;
}

int
cairn_store_unuser(struct cairn_store *store, const char *userid, int64_t ts)
{
    struct name_list mailboxes = {0}, subs = {0}, scripts = {0};
    sqlite3_stmt *live = store->stmts[STMT_MAILBOX_LIVE];
    int rc;

    if (sql_bind_int(live, ":all", 0) < 0 ||
        sql_bind_null(live, ":mboxname") < 0) {
        sql_reset(live);
        return CAIRN_EDB;
    }
    /* Names first: the appends change the rows being read. */
    if ((rc = collect(&mailboxes, live, 2)) < 0 ||
        (rc = collect(&subs, store->stmts[STMT_SUB_LIVE], 0)) < 0 ||
        (rc = collect(&scripts, store->stmts[STMT_SIEVE_LIVE], 0)) < 0)
        goto out;
    for (size_t i = 0; i < mailboxes.count && rc == 0; i++)
        rc = append_deletion(store, ts, "UNMAILBOX", userid, NULL,
                             mailboxes.names[i]);
    for (size_t i = 0; i < subs.count && rc == 0; i++)
        rc = append_deletion(store, ts, "UNSUB", userid, "MBOXNAME",
                             subs.names[i]);
    for (size_t i = 0; i < scripts.count && rc == 0; i++)
        rc = append_deletion(store, ts, "UNSIEVE", userid, "FILENAME",
                             scripts.names[i]);
out:
    release(&mailboxes);
    release(&subs);
    release(&scripts);
    return rc;
}

struct compact_all {
    const struct cairn_compact_policy *policy;
    int (*report)(void *ctx, const char *userid, int rc,
                  const struct cairn_compact_result *result);
    void *ctx;
};

static int
compact_one(void *ctx, const char *userid, const char *data_path)
{
    struct compact_all *all = ctx;
    struct cairn_compact_result result = {0};
    struct cairn_store *store = NULL;
    int rc;

    /* Never wait for a user the daemon is writing: skip, try next time. */
    rc = cairn_store_open(data_path, 0, &store);
    if (rc == 0)
        rc = cairn_store_compact(store, all->policy, &result);
    cairn_store_close(store);
    return all->report ? all->report(all->ctx, userid, rc, &result) : 0;
}

int
cairn_node_compact_all(struct cairn_catalog *catalog,
                       const struct cairn_compact_policy *policy,
                       int (*report)(void *ctx, const char *userid, int rc,
                                     const struct cairn_compact_result *result),
                       void *ctx)
{
    struct compact_all all = {policy, report, ctx};

    return cairn_catalog_foreach(catalog, compact_one, &all);
}
