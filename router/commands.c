/*
 * commands.c - the GET/APPLY command table: for every key sync_client 3.6
 * sends to a backup target, what backupd does with it (forward to the
 * user's backup, accept and ignore, or refuse) and where the user is named
 * (sync-protocol.md §5.1, §5.2, §5.4; backup/backupd.c cmd_get/cmd_apply).
 * Pure logic over a parsed dlist.
 */
#include "router.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

struct command_entry {
    enum cairn_csync_verb verb;
    const char *key;
    enum cairn_router_action action;
    enum cairn_router_user_rule rule;
    const char *user_key; /* for the KEY_* rules */
};

/*
 * backupd upper-cases GET keys but compares APPLY keys as sent; the client
 * always sends upper case. Keys not listed are a protocol error, as in
 * backupd (GET ANNOTATION/FETCH/FETCH_SIEVE/QUOTA, APPLY EXPUNGE,
 * ANNOTATION, UNANNOTATION, UNQUOTA, LOCAL_*, CAPABILITIES, FORCE).
 */
static const struct command_entry command_table[] = {
    {CAIRN_CSYNC_GET, "USER", CAIRN_ROUTER_FORWARD, CAIRN_ROUTER_USER_VALUE,
     NULL},
    {CAIRN_CSYNC_GET, "META", CAIRN_ROUTER_FORWARD, CAIRN_ROUTER_USER_VALUE,
     NULL},
    {CAIRN_CSYNC_GET, "MAILBOXES", CAIRN_ROUTER_FORWARD,
     CAIRN_ROUTER_USER_MAILBOXES, NULL},
    {CAIRN_CSYNC_GET, "FULLMAILBOX", CAIRN_ROUTER_FORWARD,
     CAIRN_ROUTER_USER_MAILBOX, NULL},
    {CAIRN_CSYNC_GET, "UNIQUEIDS", CAIRN_ROUTER_IGNORE, CAIRN_ROUTER_USER_NONE,
     NULL},
    {CAIRN_CSYNC_APPLY, "MAILBOX", CAIRN_ROUTER_FORWARD,
     CAIRN_ROUTER_USER_KEY_MBOX, "MBOXNAME"},
    {CAIRN_CSYNC_APPLY, "UNMAILBOX", CAIRN_ROUTER_FORWARD,
     CAIRN_ROUTER_USER_MAILBOX, NULL},
    {CAIRN_CSYNC_APPLY, "MESSAGE", CAIRN_ROUTER_FORWARD,
     CAIRN_ROUTER_USER_CURRENT, NULL},
    /*
     * backupd means to refuse a rename to another user but builds the
     * check from the old name only (§5.7), and files the mailbox under
     * the old user. cairn refuses it: sync_client then replicates both
     * users alone (the old user's copy goes, the new one's is uploaded).
     * It sends one only when its replication cache spares the GETs.
     */
    {CAIRN_CSYNC_APPLY, "RENAME", CAIRN_ROUTER_FORWARD,
     CAIRN_ROUTER_USER_KEY_MBOX, "OLDMBOXNAME"},
    {CAIRN_CSYNC_APPLY, "RESERVE", CAIRN_ROUTER_FORWARD,
     CAIRN_ROUTER_USER_KEY_MBOXES, "MBOXNAME"},
    {CAIRN_CSYNC_APPLY, "SEEN", CAIRN_ROUTER_FORWARD,
     CAIRN_ROUTER_USER_KEY_USERID, "USERID"},
    {CAIRN_CSYNC_APPLY, "SUB", CAIRN_ROUTER_FORWARD,
     CAIRN_ROUTER_USER_KEY_USERID, "USERID"},
    {CAIRN_CSYNC_APPLY, "UNSUB", CAIRN_ROUTER_FORWARD,
     CAIRN_ROUTER_USER_KEY_USERID, "USERID"},
    {CAIRN_CSYNC_APPLY, "SIEVE", CAIRN_ROUTER_FORWARD,
     CAIRN_ROUTER_USER_KEY_USERID, "USERID"},
    {CAIRN_CSYNC_APPLY, "UNSIEVE", CAIRN_ROUTER_FORWARD,
     CAIRN_ROUTER_USER_KEY_USERID, "USERID"},
    {CAIRN_CSYNC_APPLY, "QUOTA", CAIRN_ROUTER_IGNORE, CAIRN_ROUTER_USER_NONE,
     NULL},
    {CAIRN_CSYNC_APPLY, "ACTIVATE_SIEVE", CAIRN_ROUTER_IGNORE,
     CAIRN_ROUTER_USER_NONE, NULL},
    {CAIRN_CSYNC_APPLY, "UNACTIVATE_SIEVE", CAIRN_ROUTER_IGNORE,
     CAIRN_ROUTER_USER_NONE, NULL},
    {CAIRN_CSYNC_APPLY, "UNUSER", CAIRN_ROUTER_IGNORE, CAIRN_ROUTER_USER_NONE,
     NULL},
};

static const struct command_entry *
find_entry(enum cairn_csync_verb verb, const char *key)
{
    for (size_t i = 0; i < sizeof(command_table) / sizeof(command_table[0]);
         i++) {
        const struct command_entry *entry = &command_table[i];

        if (entry->verb != verb)
            continue;
        if (verb == CAIRN_CSYNC_GET ? strcasecmp(entry->key, key) == 0
                                    : strcmp(entry->key, key) == 0)
            return entry;
    }
    return NULL;
}

/* One name or userid to its owner; false when missing or unsafe. */
static bool
owner_of(const struct cairn_dlist *node, bool is_userid,
         const struct cairn_router_namespace *names,
         struct cairn_router_owner *owner)
{
    const char *text = NULL;

    if (node == NULL || !cairn_dlist_as_atom(node, &text) || text == NULL)
        return false;
    if (is_userid)
        return cairn_router_userid_owner(text, names, owner) == 0;
    return cairn_router_mailbox_owner(text, names, owner) == 0;
}

/*
 * GET MAILBOXES: backupd's is_mailboxes_single_user(): NIL entries are
 * skipped; a shared first name is replaced by the next one's user, but a
 * shared name after a user name differs from it and refuses the request.
 */
static enum cairn_router_action
mailboxes_owner(const struct cairn_dlist *list,
                const struct cairn_router_namespace *names,
                struct cairn_router_resolution *resolution)
{
    struct cairn_router_owner owner;

    for (const struct cairn_dlist *item = cairn_dlist_first(list); item != NULL;
         item = cairn_dlist_next(item)) {
        const char *text = NULL;

        if (!cairn_dlist_as_atom(item, &text) || text == NULL)
            continue;
        if (cairn_router_mailbox_owner(text, names, &owner) < 0)
            return CAIRN_ROUTER_BAD_PARAMETERS;
        if (!resolution->has_owner || resolution->owner.shared) {
            resolution->owner = owner;
            resolution->has_owner = true;
        } else if (owner.shared ||
                   strcmp(owner.userid, resolution->owner.userid) != 0) {
            return CAIRN_ROUTER_BAD_PARAMETERS;
        }
    }
    /* No name at all (empty list, only NILs): backupd answers a bare OK. */
    return resolution->has_owner ? CAIRN_ROUTER_FORWARD : CAIRN_ROUTER_IGNORE;
}

/*
 * APPLY RESERVE: one user per request. backupd reserves in the backup of
 * every user named; cairn refuses a RESERVE naming several, as it refuses
 * such a GET MAILBOXES, and sync_client then replicates each user alone
 * (do_mailboxes() promotes the mailboxes to USER). Only a rolling batch
 * whose names all hit sync_client's replication cache sends one.
 */
static enum cairn_router_action
reserve_owner(const struct cairn_dlist *list,
              const struct cairn_router_namespace *names,
              struct cairn_router_resolution *resolution)
{
    struct cairn_router_owner owner;

    for (const struct cairn_dlist *item = cairn_dlist_first(list); item != NULL;
         item = cairn_dlist_next(item)) {
        if (!owner_of(item, false, names, &owner))
            return CAIRN_ROUTER_BAD_PARAMETERS;
        if (!resolution->has_owner) {
            resolution->owner = owner;
            resolution->has_owner = true;
        } else if (owner.shared != resolution->owner.shared ||
                   strcmp(owner.userid, resolution->owner.userid) != 0) {
            return CAIRN_ROUTER_BAD_PARAMETERS;
        }
    }
    return resolution->has_owner ? CAIRN_ROUTER_FORWARD
                                 : CAIRN_ROUTER_BAD_PARAMETERS;
}

static enum cairn_router_action
find_owner(const struct command_entry *entry, const struct cairn_dlist *value,
           const struct cairn_router_namespace *names, const char *current_user,
           struct cairn_router_resolution *resolution)
{
    const struct cairn_dlist *list = NULL;

    switch (entry->rule) {
    case CAIRN_ROUTER_USER_NONE:
        return entry->action;
    case CAIRN_ROUTER_USER_VALUE:
    case CAIRN_ROUTER_USER_MAILBOX:
        resolution->has_owner =
            owner_of(value, entry->rule == CAIRN_ROUTER_USER_VALUE, names,
                     &resolution->owner);
        break;
    case CAIRN_ROUTER_USER_KEY_MBOX:
    case CAIRN_ROUTER_USER_KEY_USERID:
        resolution->has_owner =
            owner_of(cairn_dlist_get(value, entry->user_key),
                     entry->rule == CAIRN_ROUTER_USER_KEY_USERID, names,
                     &resolution->owner);
        break;
    case CAIRN_ROUTER_USER_MAILBOXES:
        return mailboxes_owner(value, names, resolution);
    case CAIRN_ROUTER_USER_KEY_MBOXES:
        if (!cairn_dlist_get_list(value, entry->user_key, &list))
            return CAIRN_ROUTER_BAD_PARAMETERS;
        return reserve_owner(list, names, resolution);
    case CAIRN_ROUTER_USER_CURRENT:
        /* backupd: a MESSAGE with no backup open is a protocol error. */
        if (current_user == NULL || current_user[0] == '\0')
            return CAIRN_ROUTER_PROTOCOL_ERROR;
        resolution->has_owner = true;
        resolution->owner.shared =
            strcmp(current_user, CAIRN_ROUTER_SHARED_USER) == 0;
        snprintf(resolution->owner.userid, sizeof(resolution->owner.userid),
                 "%s", current_user);
        break;
    }
    /* RENAME: the new name must be the same user's (see the table). */
    if (resolution->has_owner && strcmp(entry->key, "RENAME") == 0) {
        struct cairn_router_owner other;

        if (!owner_of(cairn_dlist_get(value, "NEWMBOXNAME"), false, names,
                      &other) ||
            other.shared != resolution->owner.shared ||
            strcmp(other.userid, resolution->owner.userid) != 0)
            return CAIRN_ROUTER_BAD_PARAMETERS;
    }
    return resolution->has_owner ? entry->action : CAIRN_ROUTER_BAD_PARAMETERS;
}

int
cairn_router_resolve(enum cairn_csync_verb verb,
                     const struct cairn_dlist *value,
                     const struct cairn_router_namespace *names,
                     const char *current_user,
                     struct cairn_router_resolution *resolution)
{
    const struct command_entry *entry;

    memset(resolution, 0, sizeof(*resolution));
    if (verb != CAIRN_CSYNC_GET && verb != CAIRN_CSYNC_APPLY)
        return CAIRN_EINVAL;
    resolution->key = cairn_dlist_name(value);
    entry = find_entry(verb, resolution->key);
    if (entry == NULL) {
        resolution->action = CAIRN_ROUTER_PROTOCOL_ERROR;
        return CAIRN_OK;
    }
    resolution->key = entry->key;
    resolution->rule = entry->rule;
    resolution->action =
        find_owner(entry, value, names, current_user, resolution);
    if (resolution->action != CAIRN_ROUTER_FORWARD)
        resolution->has_owner = false;
    return CAIRN_OK;
}
