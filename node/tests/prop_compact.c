/*
 * prop_compact.c - the property test of compaction: random histories of
 * what a Cyrus 3.6 sync_client sends for one user (new mail, the same
 * body delivered twice, flag changes, expunges and un-expunges, COPY
 * newest-first into another folder, folder create / rename / delayed
 * delete (RENAME to DELETED.*) / final delete (UNMAILBOX) / re-create
 * under the same name, full and delta (SINCE_MODSEQ) MAILBOX lines,
 * SEEN, SUB / UNSUB, SIEVE / UNSIEVE, APPLY EXPUNGE, the user deleted
 * (UNUSER) and starting again, idle passes) are
 * written through the store, compacted at random moments under random
 * policies, and checked after each compaction:
 *
 *   - cairn's verify at the full level passes;
 *   - the live state (mailboxes, records, bodies read back by GUID, seen,
 *     subscriptions, sieve scripts, and the deletion times of what is
 *     deleted but still inside retention) equals the state before;
 *   - retention is honoured: nothing deleted or expunged before it is
 *     left in the index, and no body that only dead records named;
 *   - the compacted file indexed again from its lines alone (what a
 *     transfer or a rebuild does) gives the same live state.
 *
 * usage: prop_compact [-n HISTORIES] [-s SEED] [-f FIRST] [-k KEEP_DIR [-l]]
 *                     [-v]
 * With -k, every compacted pair is copied to KEEP_DIR as hNNNNNN_C (data)
 * and hNNNNNN_C.index, for Cyrus's ctl_backups verify to judge
 * (test_compact_property.py); with -l only each history's last (C = 0).
 * -v prints every pass (without bodies). The seed is printed; a failure names
 * the history and its seed so that "-n 1 -s SEED" replays it alone.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "node.h"
/* (a separate block, so that sorting keeps node.h first) */
#include "node_test_util.h"

#include <getopt.h>
#include <inttypes.h>
#include <openssl/sha.h>
#include <stdbool.h>
#include <time.h>

#define MAX_MAILBOXES 8
#define MAX_RECORDS 96
#define MAX_BODIES 256
#define DAY 86400

struct body {
    char guid[41];
    char *text;
    size_t len;
    bool uploaded;
};

struct record {
    uint32_t uid;
    uint64_t modseq;
    int64_t last_updated, internaldate;
    int body;
    unsigned flags; /* bit 0 \Seen, 1 \Flagged, 2 $Label1, 3 \Answered */
    bool expunged;
};

struct mailbox {
    char uniqueid[32];
    char name[96];
    uint32_t uidvalidity, last_uid;
    uint64_t highestmodseq, synced_modseq;
    struct record records[MAX_RECORDS];
    int count;
    bool exists, dirty, full;
    char old_name[96]; /* pending RENAME from this name */
};

struct model {
    unsigned seed;
    int history;
    int64_t now;
    struct body bodies[MAX_BODIES];
    int body_count;
    struct mailbox mailboxes[MAX_MAILBOXES];
    int mailbox_count;
    int folder_serial;
    char pending_unmailbox[4][96];
    int unmailbox_count;
    char sub_name[96];
    int sub_change;   /* 0 none, 1 SUB, 2 UNSUB */
    int seen_change;  /* mailbox index + 1 */
    int sieve_change; /* 0 none, 1 upload, 2 delete */
    int sieve_serial;
    char expunge_uniqueid[32], expunge_name[96];
    uint32_t expunge_uid;
    bool unuser; /* delete the user after this pass */
};

static unsigned
next_random(unsigned *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    return *state;
}

static unsigned
pick(struct model *m, unsigned bound)
{
    return bound ? next_random(&m->seed) % bound : 0;
}

/* --- the user's mail, as the source server holds it -------------------- */

static int
new_body(struct model *m)
{
    struct body *b;
    unsigned char digest[20];
    size_t pad = 40 + pick(m, 6) * pick(m, 700);
    char *text;
    int len;

    if (m->body_count == MAX_BODIES)
        return pick(m, (unsigned)m->body_count);
    b = &m->bodies[m->body_count];
    text = malloc(pad + 200);
    if (text == NULL)
        abort();
    len = snprintf(text, 200, "Subject: history %d body %d\r\n\r\nrandom %u ",
                   m->history, m->body_count, next_random(&m->seed));
    for (size_t i = 0; i < pad; i++)
        text[len++] = (char)('a' + pick(m, 26));
    text[len++] = '\r';
    text[len++] = '\n';
    b->text = text;
    b->len = (size_t)len;
    SHA1((const unsigned char *)text, b->len, digest);
    for (int i = 0; i < 20; i++)
        snprintf(b->guid + 2 * i, 3, "%02x", digest[i]);
    b->uploaded = false;
    return m->body_count++;
}

static struct mailbox *
live_mailbox(struct model *m)
{
    int live[MAX_MAILBOXES], count = 0;

    for (int i = 0; i < m->mailbox_count; i++)
        if (m->mailboxes[i].exists &&
            strncmp(m->mailboxes[i].name, "DELETED.", 8) != 0)
            live[count++] = i;
    return count ? &m->mailboxes[live[pick(m, (unsigned)count)]] : NULL;
}

static struct mailbox *
create_mailbox(struct model *m, const char *name)
{
    struct mailbox *mb;

    if (m->mailbox_count == MAX_MAILBOXES)
        return NULL;
    mb = &m->mailboxes[m->mailbox_count++];
    memset(mb, 0, sizeof(*mb));
    snprintf(mb->uniqueid, sizeof(mb->uniqueid), "u%08x%04d",
             next_random(&m->seed), m->mailbox_count);
    snprintf(mb->name, sizeof(mb->name), "%s", name);
    mb->uidvalidity = (uint32_t)(m->now & 0x7fffffff);
    mb->highestmodseq = 1;
    mb->exists = mb->dirty = mb->full = true;
    return mb;
}

static struct record *
append_record(struct model *m, struct mailbox *mb, int body)
{
    struct record *r;

    if (mb->count == MAX_RECORDS)
        return NULL;
    r = &mb->records[mb->count++];
    memset(r, 0, sizeof(*r));
    r->uid = ++mb->last_uid;
    r->modseq = ++mb->highestmodseq;
    r->last_updated = m->now;
    r->internaldate = m->now - (int64_t)pick(m, DAY);
    r->body = body;
    mb->dirty = true;
    return r;
}

static struct record *
some_record(struct model *m, struct mailbox *mb, bool expunged)
{
    int found[MAX_RECORDS], count = 0;

    for (int i = 0; mb && i < mb->count; i++)
        if (mb->records[i].expunged == expunged)
            found[count++] = i;
    return count ? &mb->records[found[pick(m, (unsigned)count)]] : NULL;
}

static void
touch(struct model *m, struct mailbox *mb, struct record *r)
{
    r->modseq = ++mb->highestmodseq;
    r->last_updated = m->now;
    mb->dirty = true;
}

static bool
name_in_use(const struct model *m, const char *name)
{
    for (int i = 0; i < m->mailbox_count; i++)
        if (m->mailboxes[i].exists && strcmp(m->mailboxes[i].name, name) == 0)
            return true;
    return false;
}

/* One change a user or the server makes between two sync passes. */
static void
change(struct model *m)
{
    struct mailbox *mb = live_mailbox(m), *to;
    struct record *r;
    char name[96];

    if (pick(m, 200) == 0) { /* the user is deleted (APPLY UNUSER) */
        m->unuser = true;
        return;
    }
    switch (pick(m, 16)) {
    case 0:
    case 1:
    case 2: /* new mail */
        if (mb)
            append_record(m, mb, new_body(m));
        break;
    case 3: /* the same message delivered again: one GUID, two UIDs */
        if (mb && (r = some_record(m, mb, false)) != NULL)
            append_record(m, mb, r->body);
        break;
    case 4: /* flags */
        if ((r = some_record(m, mb, false)) != NULL) {
            r->flags ^= 1u << pick(m, 4);
            touch(m, mb, r);
        }
        break;
    case 5: /* expunge */
        if ((r = some_record(m, mb, false)) != NULL) {
            r->expunged = true;
            touch(m, mb, r);
        }
        break;
    case 6: /* unexpunge: the body comes back under a new UID */
        if ((r = some_record(m, mb, true)) != NULL)
            append_record(m, mb, r->body);
        break;
    case 7: /* COPY newest-first into another folder */
        to = live_mailbox(m);
        for (int i = mb ? mb->count - 1 : -1; to && to != mb && i >= 0; i--)
            if (!mb->records[i].expunged && pick(m, 2))
                append_record(m, to, mb->records[i].body);
        break;
    case 8: /* create a folder */
        snprintf(name, sizeof(name), "user.h.f%d", ++m->folder_serial);
        create_mailbox(m, name);
        break;
    case 9: /* rename: same uniqueid, new name */
        if (mb && strcmp(mb->name, "user.h") != 0 && !mb->old_name[0]) {
            snprintf(mb->old_name, sizeof(mb->old_name), "%s", mb->name);
            snprintf(mb->name, sizeof(mb->name), "user.h.r%d",
                     ++m->folder_serial);
            mb->dirty = mb->full = true;
        }
        break;
    case 10: /* delayed delete (Cyrus's delete_mode = delayed) */
        if (mb && strcmp(mb->name, "user.h") != 0 && !mb->old_name[0]) {
            snprintf(mb->old_name, sizeof(mb->old_name), "%s", mb->name);
            snprintf(mb->name, sizeof(mb->name), "DELETED.%.60s.%X",
                     mb->old_name, (unsigned)m->now);
            mb->dirty = mb->full = true;
        }
        break;
    case 11: /* final delete (cyr_expire, or immediate mode) */
        for (int i = 0; i < m->mailbox_count; i++) {
            struct mailbox *gone = &m->mailboxes[i];

            if (gone->exists && strcmp(gone->name, "user.h") != 0 &&
                !gone->old_name[0] && !gone->dirty && m->unmailbox_count < 4 &&
                pick(m, 2)) {
                gone->exists = false;
                snprintf(m->pending_unmailbox[m->unmailbox_count++], 96, "%s",
                         gone->name);
                break;
            }
        }
        break;
    case 12: /* re-create a folder under a name it had (and no one has) */
        for (int i = 0; i < m->mailbox_count; i++)
            if (!m->mailboxes[i].exists && m->unmailbox_count == 0 &&
                !name_in_use(m, m->mailboxes[i].name)) {
                snprintf(name, sizeof(name), "%s", m->mailboxes[i].name);
                if ((to = create_mailbox(m, name)) != NULL)
                    append_record(m, to, new_body(m));
                break;
            }
        break;
    case 13: /* subscriptions */
        if (mb) {
            snprintf(m->sub_name, sizeof(m->sub_name), "%s", mb->name);
            m->sub_change = 1 + (int)pick(m, 2);
        }
        break;
    case 14: /* seen state, sieve */
        if (pick(m, 2) && mb)
            m->seen_change = (int)(mb - m->mailboxes) + 1;
        else
            m->sieve_change = 1 + (pick(m, 3) == 0);
        break;
    case 15: /* cleanup of expunged records, or an APPLY EXPUNGE */
        if (mb && pick(m, 4) == 0 && (r = some_record(m, mb, true)) != NULL) {
            /* sync_client sends APPLY EXPUNGE for records the source has
             * cleaned out (sync_support.c: older than deletedmodseq): it
             * never lists them again */
            snprintf(m->expunge_uniqueid, 32, "%s", mb->uniqueid);
            snprintf(m->expunge_name, 96, "%s", mb->name);
            m->expunge_uid = r->uid;
            *r = mb->records[--mb->count];
        } else if (mb) {
            int kept = 0;

            for (int i = 0; i < mb->count; i++)
                if (!mb->records[i].expunged || pick(m, 2))
                    mb->records[kept++] = mb->records[i];
            mb->count = kept;
            mb->full = mb->dirty = true;
        }
        break;
    }
}

/* --- what sync_client sends for it ------------------------------------- */

static void
print_record(struct cairn_buf *out, const struct model *m,
             const struct record *r)
{
    static const char *const names[4] = {"\\Seen", "\\Flagged", "$Label1",
                                         "\\Answered"};
    const struct body *b = &m->bodies[r->body];
    bool first = true;

    cairn_buf_printf(
        out, "%%(UID %u MODSEQ %" PRIu64 " LAST_UPDATED %" PRId64 " FLAGS (",
        r->uid, r->modseq, r->last_updated);
    for (int i = 0; i < 4; i++)
        if (r->flags & (1u << i)) {
            cairn_buf_printf(out, "%s%s", first ? "" : " ", names[i]);
            first = false;
        }
    if (r->expunged)
        cairn_buf_printf(out, "%s\\Deleted \\Expunged", first ? "" : " ");
    cairn_buf_printf(out,
                     ") INTERNALDATE %" PRId64 " SIZE %zu GUID %s"
                     " ANNOTATIONS (%%(ENTRY /vendor/cmu/cyrus-imapd/savedate"
                     " USERID \"\" MODSEQ 0 VALUE %" PRId64 ")))",
                     r->internaldate, b->len, b->guid, r->internaldate);
}

static void
print_mailbox(struct cairn_buf *out, const struct model *m,
              const struct mailbox *mb, bool full)
{
    bool first = true;

    cairn_buf_printf(
        out,
        "APPLY MAILBOX %%(UNIQUEID %s MBOXNAME %s SYNC_CRC %u"
        " SYNC_CRC_ANNOT %u LAST_UID %u HIGHESTMODSEQ %" PRIu64
        " RECENTUID %u RECENTTIME %" PRId64 " LAST_APPENDDATE %" PRId64
        " POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY %u PARTITION default"
        " ACL \"h\tlrswipkxtecdan\t\" OPTIONS P QUOTAROOT user.h"
        " CREATEDMODSEQ 1 FOLDERMODSEQ %" PRIu64,
        mb->uniqueid, mb->name, (unsigned)(mb->highestmodseq * 2654435761u),
        (unsigned)(mb->count * 40503u), mb->last_uid, mb->highestmodseq,
        mb->last_uid, m->now, m->now, mb->uidvalidity, mb->highestmodseq);
    if (!full)
        cairn_buf_printf(out,
                         " SINCE_MODSEQ %" PRIu64 " SINCE_CRC 1 SINCE_CRC_ANNOT"
                         " 2",
                         mb->synced_modseq);
    cairn_buf_append_str(out, " RECORD (");
    for (int i = 0; i < mb->count; i++) {
        const struct record *r = &mb->records[i];

        if (!full && r->modseq <= mb->synced_modseq)
            continue;
        cairn_buf_append_str(out, first ? "" : " ");
        print_record(out, m, r);
        first = false;
    }
    cairn_buf_append_str(out, "))\r\n");
}

/* The bodies the pass's MAILBOX lines name that were never sent. */
static void
print_messages(struct cairn_buf *out, struct model *m)
{
    bool any = false;

    for (int i = 0; i < m->mailbox_count; i++) {
        struct mailbox *mb = &m->mailboxes[i];

        for (int j = 0; mb->exists && mb->dirty && j < mb->count; j++) {
            struct body *b = &m->bodies[mb->records[j].body];

            if (b->uploaded)
                continue;
            cairn_buf_append_str(out, any ? " " : "APPLY MESSAGE (");
            cairn_buf_printf(out, "%%{default %s %zu}\r\n", b->guid, b->len);
            cairn_buf_append(out, b->text, b->len);
            b->uploaded = any = true;
        }
    }
    if (any)
        cairn_buf_append_str(out, ")\r\n");
}

static void
print_meta(struct cairn_buf *out, struct model *m)
{
    if (m->sub_change)
        cairn_buf_printf(out, "APPLY %s %%(USERID h MBOXNAME %s)\r\n",
                         m->sub_change == 1 ? "SUB" : "UNSUB", m->sub_name);
    if (m->seen_change) {
        const struct mailbox *mb = &m->mailboxes[m->seen_change - 1];

        cairn_buf_printf(out,
                         "APPLY SEEN %%(USERID other UNIQUEID %s LASTREAD"
                         " %" PRId64 " LASTUID %u LASTCHANGE %" PRId64
                         " SEENUIDS 1:%u)\r\n",
                         mb->uniqueid, m->now, mb->last_uid, m->now,
                         mb->last_uid ? mb->last_uid : 1);
    }
    if (m->sieve_change == 1) {
        char script[64];
        int len = snprintf(script, sizeof(script), "# %d\r\nkeep;\r\n",
                           ++m->sieve_serial);

        cairn_buf_printf(out,
                         "APPLY SIEVE %%(USERID h FILENAME s%d.script"
                         " LAST_UPDATE %" PRId64 " CONTENT {%d+}\r\n%s)\r\n",
                         m->sieve_serial % 3, m->now, len, script);
    } else if (m->sieve_change == 2) {
        cairn_buf_printf(out,
                         "APPLY UNSIEVE %%(USERID h FILENAME s%d.script)\r\n",
                         m->sieve_serial % 3);
    }
    if (m->expunge_uid)
        cairn_buf_printf(out,
                         "APPLY EXPUNGE %%(MBOXNAME %s UNIQUEID %s UID (%u))"
                         "\r\n",
                         m->expunge_name, m->expunge_uniqueid, m->expunge_uid);
    m->sub_change = m->seen_change = m->sieve_change = 0;
    m->expunge_uid = 0;
}

/* One sync pass: everything that changed since the last, in Cyrus's order. */
static void
print_pass(struct cairn_buf *out, struct model *m)
{
    for (int i = 0; i < m->mailbox_count; i++) {
        struct mailbox *mb = &m->mailboxes[i];

        if (mb->old_name[0])
            cairn_buf_printf(out,
                             "APPLY RENAME %%(OLDMBOXNAME %s NEWMBOXNAME %s"
                             " PARTITION default UIDVALIDITY %u)\r\n",
                             mb->old_name, mb->name, mb->uidvalidity);
        mb->old_name[0] = '\0';
    }
    for (int i = 0; i < m->unmailbox_count; i++)
        cairn_buf_printf(out, "APPLY UNMAILBOX %s\r\n",
                         m->pending_unmailbox[i]);
    m->unmailbox_count = 0;
    print_messages(out, m);
    for (int i = 0; i < m->mailbox_count; i++) {
        struct mailbox *mb = &m->mailboxes[i];

        if (!mb->exists || !mb->dirty)
            continue;
        print_mailbox(out, m, mb, mb->full || pick(m, 5) == 0);
        mb->synced_modseq = mb->highestmodseq;
        mb->dirty = mb->full = false;
    }
    print_meta(out, m);
}

/* --- the checks ---------------------------------------------------------- */

static const char *const live_queries[] = {
    "SELECT uniqueid, mboxname, mboxtype, last_uid, highestmodseq, recentuid,"
    " recenttime, last_appenddate, pop3_last_login, pop3_show_after,"
    " uidvalidity, partition, acl, options, sync_crc, sync_crc_annot,"
    " xconvmodseq, annotations, deleted FROM mailbox"
    " WHERE deleted IS NULL OR deleted > :since ORDER BY uniqueid",
    "SELECT mb.uniqueid, m.guid, r.uid, r.modseq, r.last_updated, r.flags,"
    " r.internaldate, r.annotations, r.expunged, m.size, m.partition"
    " FROM mailbox_message AS r JOIN mailbox AS mb ON mb.id = r.mailbox_id"
    " JOIN message AS m ON m.id = r.message_id"
    " WHERE (r.expunged IS NULL OR r.expunged > :since)"
    " AND (mb.deleted IS NULL OR mb.deleted > :since) ORDER BY 1, 2",
    "SELECT uniqueid, lastread, lastuid, lastchange, seenuids FROM seen"
    " ORDER BY uniqueid",
    "SELECT mboxname, unsubscribed FROM subscription"
    " WHERE unsubscribed IS NULL OR unsubscribed > :since ORDER BY mboxname",
    "SELECT filename, last_update, guid, deleted FROM sieve"
    " WHERE deleted IS NULL OR deleted > :since ORDER BY 1, 2, 3, 4",
};
/*
 * The same, with expunge times reduced to "expunged": a record's first
 * expunge can come from an APPLY EXPUNGE naming another UID of the same
 * body (a twin) whose line compaction dropped; indexed again from the
 * lines, such a record gets the later time of its last line.
 */
static const char *const loose_queries[] = {
    "SELECT uniqueid, mboxname, mboxtype, last_uid, highestmodseq, recentuid,"
    " recenttime, last_appenddate, pop3_last_login, pop3_show_after,"
    " uidvalidity, partition, acl, options, sync_crc, sync_crc_annot,"
    " xconvmodseq, annotations, deleted FROM mailbox"
    " WHERE deleted IS NULL OR deleted > :since ORDER BY uniqueid",
    "SELECT mb.uniqueid, m.guid, r.uid, r.modseq, r.last_updated, r.flags,"
    " r.internaldate, r.annotations, r.expunged IS NOT NULL, m.size, "
    "m.partition"
    " FROM mailbox_message AS r JOIN mailbox AS mb ON mb.id = r.mailbox_id"
    " JOIN message AS m ON m.id = r.message_id"
    " WHERE (r.expunged IS NULL OR r.expunged > :since)"
    " AND (mb.deleted IS NULL OR mb.deleted > :since) ORDER BY 1, 2",
    "SELECT uniqueid, lastread, lastuid, lastchange, seenuids FROM seen"
    " ORDER BY uniqueid",
    "SELECT mboxname, unsubscribed FROM subscription"
    " WHERE unsubscribed IS NULL OR unsubscribed > :since ORDER BY mboxname",
    "SELECT filename, last_update, guid, deleted FROM sieve"
    " WHERE deleted IS NULL OR deleted > :since ORDER BY 1, 2, 3, 4",
};

/* Rows retention must have removed. */
static const char *const dead_queries[] = {
    "SELECT 'mailbox ' || mboxname FROM mailbox WHERE deleted <= :since",
    "SELECT 'record ' || mb.uniqueid || ':' || r.uid FROM mailbox_message AS r"
    " JOIN mailbox AS mb ON mb.id = r.mailbox_id"
    " WHERE r.expunged <= :since OR mb.deleted <= :since",
    "SELECT 'body ' || guid FROM message WHERE id NOT IN ("
    " SELECT r.message_id FROM mailbox_message AS r"
    " JOIN mailbox AS mb ON mb.id = r.mailbox_id"
    " WHERE (r.expunged IS NULL OR r.expunged > :since)"
    " AND (mb.deleted IS NULL OR mb.deleted > :since))",
    "SELECT 'subscription ' || mboxname FROM subscription"
    " WHERE unsubscribed <= :since",
    "SELECT 'sieve ' || filename FROM sieve WHERE deleted <= :since",
};

static int
run_queries(const char *index_path, const char *const *queries, size_t count,
            int64_t since, struct cairn_buf *out)
{
    sqlite3 *db = NULL;
    int rc = 0;

    if (sqlite3_open_v2(index_path, &db, SQLITE_OPEN_READONLY, NULL) !=
        SQLITE_OK) {
        sqlite3_close(db);
        return CAIRN_EDB;
    }
    for (size_t q = 0; q < count && rc == 0; q++) {
        sqlite3_stmt *stmt = NULL;
        int index;

        if (sqlite3_prepare_v2(db, queries[q], -1, &stmt, NULL) != SQLITE_OK) {
            rc = CAIRN_EDB;
            break;
        }
        if ((index = sqlite3_bind_parameter_index(stmt, ":since")) > 0)
            sqlite3_bind_int64(stmt, index, since);
        cairn_buf_printf(out, "[%zu]\n", q);
        while (sqlite3_step(stmt) == SQLITE_ROW) {
            for (int c = 0; c < sqlite3_column_count(stmt); c++) {
                const unsigned char *v = sqlite3_column_text(stmt, c);

                cairn_buf_printf(out, "%s|", v ? (const char *)v : "NULL");
            }
            cairn_buf_append_str(out, "\n");
        }
        sqlite3_finalize(stmt);
    }
    sqlite3_close(db);
    return rc;
}

static int
count_bytes(void *ctx, const void *data, size_t len)
{
    *(uint64_t *)ctx += len;
    return 0;
}

/* The rows queries give on store's index, as text. Owned; NULL on failure. */
static char *
index_text(struct cairn_store *store, const char *const *queries, size_t count,
           int64_t since)
{
    char *index_path = NULL, *text = NULL;
    struct cairn_buf out;
    size_t len;

    cairn_buf_init(&out, 64u << 20);
    if (asprintf(&index_path, "%s.index", cairn_store_data_path(store)) >= 0 &&
        run_queries(index_path, queries, count, since, &out) == 0 &&
        cairn_buf_detach(&out, &text, &len) == 0 && len == 0)
        text[0] = '\0';
    free(index_path);
    cairn_buf_release(&out);
    return text;
}

/*
 * The live state as text (queries: live_queries or loose_queries), bodies
 * read back (and SHA-1 checked) by GUID.
 */
static char *
live_state_of(struct cairn_store *store, int64_t since,
              const char *const *queries)
{
    char *text = index_text(
        store, queries, sizeof(live_queries) / sizeof(live_queries[0]), since);

    /* every body of a live record must read back whole */
    for (const char *at = text ? strstr(text, "[1]\n") : NULL; at;) {
        const char *line = strchr(at, '\n'), *guid, *end;
        char hex[41], *marked = NULL;
        uint64_t bytes = 0;

        if (line == NULL || line[1] == '[' || line[1] == '\0')
            break;
        at = line + 1;
        guid = strchr(at, '|');
        end = guid ? strchr(guid + 1, '|') : NULL;
        if (end == NULL || end - guid - 1 != 40)
            break;
        memcpy(hex, guid + 1, 40);
        hex[40] = '\0';
        if (cairn_store_read_message(store, hex, count_bytes, &bytes) == 0)
            continue;
        if (asprintf(&marked, "%sunreadable body %s\n", text, hex) >= 0) {
            free(text);
            text = marked;
        }
        break;
    }
    return text;
}

static char *
live_state(struct cairn_store *store, int64_t since)
{
    return live_state_of(store, since, live_queries);
}

static char *
dead_rows(struct cairn_store *store, int64_t since)
{
    return index_text(store, dead_queries,
                      sizeof(dead_queries) / sizeof(dead_queries[0]), since);
}

/* --- one history -----------------------------------------------------------
 */

struct run {
    const char *dir;
    const char *keep;
    bool trace;     /* print each pass (bodies left out) */
    bool keep_last; /* keep only each history's last compacted pair */
    unsigned base_seed;
    int failures;
    uint64_t compactions, compacted, passes, lines;
    uint64_t expunge_drift; /* reindexed: a later expunge time, else equal */
};

static void
random_policy(struct model *m, struct cairn_compact_policy *policy)
{
    static const uint64_t mins[] = {0, 512, 4096, 65536, 1u << 20};
    static const uint64_t maxes[] = {0, 0, 1024, 8192, 65536};
    static const int64_t retentions[] = {0, 1, 3600, DAY, 3 * DAY, 7 * DAY};

    memset(policy, 0, sizeof(*policy));
    policy->retention_seconds = retentions[pick(m, 6)];
    policy->min_chunk = mins[pick(m, 5)];
    policy->max_chunk = maxes[pick(m, 5)];
    policy->work_threshold = 1 + pick(m, 3);
    policy->work_percent = pick(m, 3) == 0 ? 10 : 0;
    policy->now = m->now + (int64_t)pick(m, 3) * DAY;
}

static int
keep_copy(struct run *run, int history, int serial, const char *data_path)
{
    char *command = NULL;
    int rc = 0;

    if (run->keep == NULL)
        return 0;
    if (run->keep_last)
        serial = 0;
    if (asprintf(&command,
                 "cp '%s' '%s/h%06d_%d' && cp '%s.index' "
                 "'%s/h%06d_%d.index'",
                 data_path, run->keep, history, serial, data_path, run->keep,
                 history, serial) < 0 ||
        system(command) != 0)
        rc = CAIRN_EIO;
    free(command);
    return rc;
}

/* The mailbox rows, for a failure report. */
static void
print_mailboxes(struct cairn_store *store)
{
    static const char *const query[] = {
        "SELECT id, last_chunk_id, uniqueid, mboxname, deleted FROM mailbox"};
    char *text = index_text(store, query, 1, 0);

    fprintf(stderr, "%s", text ? text : "(index unreadable)\n");
    free(text);
}

/*
 * The live state of a copy of store's data file indexed from its lines
 * alone: what a transfer (rebalance, repair) or a rebuild of the index
 * gives. Owned; NULL on failure.
 */
static char *
reindexed_state(struct cairn_store *store, int64_t since,
                const char *const *queries)
{
    struct cairn_store *copy = NULL;
    char *path = NULL, *index = NULL, *data = NULL, *state = NULL;
    size_t len = 0;
    FILE *out = NULL;

    if (asprintf(&path, "%s.reindexed", cairn_store_data_path(store)) < 0 ||
        asprintf(&index, "%s.index", path) < 0 ||
        (data = test_read_file(cairn_store_data_path(store), &len)) == NULL ||
        (out = fopen(path, "wb")) == NULL || fwrite(data, 1, len, out) != len)
        goto out;
    fclose(out);
    out = NULL;
    unlink(index);
    if (cairn_store_open(path, 0, &copy) == 0)
        state = live_state_of(copy, since, queries);
out:
    if (out)
        fclose(out);
    cairn_store_close(copy);
    if (path)
        unlink(path);
    if (index)
        unlink(index);
    free(path);
    free(index);
    free(data);
    return state;
}

static bool
compact_and_check(struct run *run, struct model *m, struct cairn_store *store,
                  int serial)
{
    struct cairn_compact_policy policy;
    struct cairn_compact_result result;
    int64_t since;
    char *before = NULL, *after = NULL, *dead = NULL, *again = NULL;
    char error[256] = "";
    bool drift = false;
    bool ok = false;
    int rc;

    random_policy(m, &policy);
    since = policy.retention_seconds > 0 ? policy.now - policy.retention_seconds
                                         : -1;
    if ((rc = cairn_store_verify(store, CAIRN_VERIFY_FULL, error,
                                 sizeof(error))) < 0) {
        fprintf(stderr, "verify before compaction: %s\n", error);
        print_mailboxes(store);
        goto out;
    }
    before = live_state(store, since);
    rc = cairn_store_compact(store, &policy, &result);
    run->compactions++;
    if (rc < 0) {
        fprintf(stderr, "compact: %s: %s\n", cairn_strerror(rc), result.error);
        goto out;
    }
    run->compacted += result.compacted;
    if ((rc = cairn_store_verify(store, CAIRN_VERIFY_FULL, error,
                                 sizeof(error))) < 0) {
        fprintf(stderr, "verify after compaction: %s\n", error);
        goto out;
    }
    after = live_state(store, since);
    dead = dead_rows(store, since);
    if (before == NULL || after == NULL || strcmp(before, after) != 0) {
        fprintf(stderr, "live state changed:\n--- before\n%s--- after\n%s",
                before ? before : "?", after ? after : "?");
        goto out;
    }
    again = reindexed_state(store, since, live_queries);
    if (again != NULL && strcmp(after, again) != 0) {
        char *loose_after = live_state_of(store, since, loose_queries);
        char *loose_again = reindexed_state(store, since, loose_queries);

        /* only a later expunge time: counted, printed at the end */
        drift =
            loose_after && loose_again && strcmp(loose_after, loose_again) == 0;
        run->expunge_drift += drift;
        free(loose_after);
        free(loose_again);
    }
    if (again == NULL || (strcmp(after, again) != 0 && !drift)) {
        fprintf(stderr,
                "indexed again from its lines, the compacted file differs:\n"
                "--- index\n%s--- reindexed\n%s",
                after, again ? again : "?");
        goto out;
    }
    if (result.compacted && (dead == NULL || strstr(dead, "|") != NULL)) {
        fprintf(stderr, "kept past retention (since %" PRId64 "):\n%s", since,
                dead ? dead : "?");
        goto out;
    }
    ok = !result.compacted ||
         keep_copy(run, m->history, serial, cairn_store_data_path(store)) == 0;
out:
    if (!ok)
        fprintf(stderr,
                "policy: retention %" PRId64 " min %" PRIu64 " max %" PRIu64
                " threshold %u percent %u now %" PRId64 "\n",
                policy.retention_seconds, policy.min_chunk, policy.max_chunk,
                policy.work_threshold, policy.work_percent, policy.now);
    free(before);
    free(after);
    free(dead);
    free(again);
    return ok;
}

static int
apply_pass(struct cairn_store *store, int64_t ts, const struct cairn_buf *text,
           uint64_t *lines)
{
    struct test_apply apply = {store, ts, 0};
    int rc;

    if (text->len == 0)
        return 0;
    rc = test_each_apply(text->data, text->len, test_apply_one, &apply);
    *lines += (uint64_t)apply.appended;
    return rc < 0 ? rc : cairn_store_commit(store);
}

/*
 * APPLY UNUSER (the user deleted on the source, or renamed away): every
 * mailbox, subscription and script becomes deleted data; the user then
 * starts again with a new INBOX, as a re-created account would.
 */
static int
delete_user(struct cairn_store *store, struct model *m)
{
    int rc;

    m->unuser = false;
    m->now++;
    if ((rc = cairn_store_unuser(store, "h", m->now)) < 0 ||
        (rc = cairn_store_commit(store)) < 0)
        return rc;
    for (int i = 0; i < m->mailbox_count; i++) {
        m->mailboxes[i].exists = false;
        m->mailboxes[i].old_name[0] = '\0';
    }
    m->unmailbox_count = 0;
    m->seen_change = 0;
    m->expunge_uid = 0;
    if (m->mailbox_count < MAX_MAILBOXES)
        create_mailbox(m, "user.h");
    return 0;
}

static void
trace_pass(int pass, int64_t now, const struct cairn_buf *text)
{
    printf("--- pass %d at %" PRId64 "\n", pass, now);
    for (size_t at = 0; at < text->len;) {
        const char *end = memchr(text->data + at, '\n', text->len - at);
        size_t len =
            end ? (size_t)(end - (text->data + at)) + 1 : text->len - at;

        if (len > 1 && text->data[at] != ' ' && text->data[at] != 'S' &&
            text->data[at] != 'r' && text->data[at] != '\r')
            printf("%.*s", (int)(len > 600 ? 600 : len), text->data + at);
        at += len;
    }
}

static bool
run_history(struct run *run, int history)
{
    struct model *m = calloc(1, sizeof(*m));
    struct cairn_store *store = NULL;
    struct cairn_buf text;
    char *path = NULL;
    int passes, serial = 0;
    bool ok = false;
    int rc;

    cairn_buf_init(&text, 64u << 20);
    if (m == NULL || asprintf(&path, "%s/h%06d", run->dir, history) < 0 ||
        cairn_store_open(path, CAIRN_STORE_CREATE, &store) < 0)
        goto out;
    m->seed = run->base_seed + (unsigned)history * 2654435761u;
    m->seed = m->seed ? m->seed : 1;
    m->history = history;
    m->now = 1700000000;
    create_mailbox(m, "user.h");
    passes = 4 + (int)pick(m, 36);
    for (int pass = 0; pass < passes; pass++) {
        int changes = (int)pick(m, 5);

        m->now += 1 + (int64_t)pick(m, 4) * (int64_t)pick(m, DAY);
        for (int i = 0; i < changes; i++)
            change(m);
        cairn_buf_reset(&text);
        print_pass(&text, m);
        if ((rc = apply_pass(store, m->now, &text, &run->lines)) < 0) {
            fprintf(stderr, "pass %d: %s\n%.*s\n", pass, cairn_strerror(rc),
                    (int)(text.len > 4000 ? 4000 : text.len), text.data);
            goto out;
        }
        run->passes++;
        if (run->trace)
            trace_pass(pass, m->now, &text);
        if (m->unuser && (rc = delete_user(store, m)) < 0) {
            fprintf(stderr, "pass %d: UNUSER: %s\n", pass, cairn_strerror(rc));
            goto out;
        }
        if ((pick(m, 4) == 0 || pass == passes - 1) &&
            !compact_and_check(run, m, store, serial++))
            goto out;
    }
    ok = true;
out:
    if (!ok)
        fprintf(stderr, "history %d failed: replay with -n 1 -s %u -f %d\n",
                history, run->base_seed, history);
    cairn_store_close(store);
    if (path) {
        char *index = NULL;

        unlink(path);
        if (asprintf(&index, "%s.index", path) >= 0)
            unlink(index);
        free(index);
    }
    for (int i = 0; m && i < m->body_count; i++)
        free(m->bodies[i].text);
    free(m);
    free(path);
    cairn_buf_release(&text);
    return ok;
}

int
main(int argc, char **argv)
{
    struct run run = {0};
    long histories = 200, first = 0;
    int opt;

    run.base_seed = (unsigned)time(NULL);
    while ((opt = getopt(argc, argv, "n:s:f:k:lvh")) != -1) {
        switch (opt) {
        case 'n':
            histories = strtol(optarg, NULL, 10);
            break;
        case 's':
            run.base_seed = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'f':
            first = strtol(optarg, NULL, 10);
            break;
        case 'k':
            run.keep = optarg;
            break;
        case 'l':
            run.keep_last = true;
            break;
        case 'v':
            run.trace = true;
            break;
        default:
            fprintf(opt == 'h' ? stdout : stderr,
                    "usage: prop_compact [-n HISTORIES] [-s SEED] [-f FIRST]"
                    " [-k KEEP_DIR [-l]] [-v]\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    printf("prop_compact: seed %u, histories %ld..%ld\n", run.base_seed, first,
           first + histories - 1);
    fflush(stdout);
    if ((run.dir = test_temp_dir("prop")) == NULL)
        return 1;
    for (long h = first; h < first + histories; h++) {
        if (!run_history(&run, (int)h))
            run.failures++;
        if ((h - first + 1) % 1000 == 0) { /* progress of long soaks */
            printf("prop_compact: %ld histories done, %d failed\n",
                   h - first + 1, run.failures);
            fflush(stdout);
        }
    }
    printf("prop_compact: %ld histories, %" PRIu64 " passes, %" PRIu64
           " lines, %" PRIu64 " compactions (%" PRIu64 " rewrote the file)\n",
           histories, run.passes, run.lines, run.compactions, run.compacted);
    printf("prop_compact: %" PRIu64 " compactions whose file, indexed again"
           " from its lines, gives a record a later expunge time (twin +"
           " APPLY EXPUNGE; everything else equal)\n",
           run.expunge_drift);
    printf("%ld passed, %d failed\n", histories - run.failures, run.failures);
    test_remove_dir(run.dir);
    free((char *)run.dir);
    return run.failures ? 1 : 0;
}
