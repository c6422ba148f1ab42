/*
 * test_commands.c - the GET/APPLY table: what the router does with every
 * key sync_client 3.6 sends and which user each one names, following
 * backupd (sync-protocol.md §5.1-§5.4), table-driven over real command
 * text parsed with the project's dlist parser.
 */
#include "check.h"
#include "router.h"

#include <string.h>

struct resolve_case {
    enum cairn_csync_verb verb;
    const char *text; /* "KEY value" as after the verb on the wire */
    const char *current_user;
    enum cairn_router_action action;
    const char *userid; /* expected owner when FORWARD */
};

#define GET CAIRN_CSYNC_GET
#define APPLY CAIRN_CSYNC_APPLY
#define FORWARD CAIRN_ROUTER_FORWARD
#define IGNORE CAIRN_ROUTER_IGNORE
#define PROTOCOL CAIRN_ROUTER_PROTOCOL_ERROR
#define BAD CAIRN_ROUTER_BAD_PARAMETERS

static const struct resolve_case cases[] = {
    {GET, "USER anne", NULL, FORWARD, "anne"},
    {GET, "user anne", NULL, FORWARD, "anne"},
    {GET, "USER anne@example.com", NULL, FORWARD, "anne"},
    {GET, "USER anne@example.org", NULL, FORWARD, "anne@example.org"},
    {GET, "USER NIL", NULL, BAD, NULL},
    {GET, "USER ../../etc", NULL, BAD, NULL},
    {GET, "USER {7+}\r\nan\x01ne\"x", NULL, BAD, NULL},
    {GET, "META anne", NULL, FORWARD, "anne"},
    {GET, "MAILBOXES (user.anne user.anne.Sent)", NULL, FORWARD, "anne"},
    {GET, "MAILBOXES (user.anne)", NULL, FORWARD, "anne"},
    {GET, "MAILBOXES (user.anne user.bob)", NULL, BAD, NULL},
    {GET, "MAILBOXES (user.anne user.anne.Sent user.bob.Sent)", NULL, BAD,
     NULL},
    {GET, "MAILBOXES (shared.x user.anne)", NULL, FORWARD, "anne"},
    {GET, "MAILBOXES (user.anne shared.x)", NULL, BAD, NULL},
    {GET, "MAILBOXES (shared.a shared.b)", NULL, FORWARD,
     CAIRN_ROUTER_SHARED_USER},
    {GET, "MAILBOXES (NIL user.anne NIL)", NULL, FORWARD, "anne"},
    {GET, "MAILBOXES ()", NULL, IGNORE, NULL},
    {GET, "MAILBOXES (NIL)", NULL, IGNORE, NULL},
    {GET, "MAILBOXES (other.org!user.anne user.anne)", NULL, BAD, NULL},
    {GET, "MAILBOXES (example.com!user.anne user.anne)", NULL, FORWARD, "anne"},
    {GET, "MAILBOXES (user.anne^smith user.anne)", NULL, BAD, NULL},
    {GET, "MAILBOXES (user.anne user..x)", NULL, BAD, NULL},
    {GET, "FULLMAILBOX user.anne.Sent", NULL, FORWARD, "anne"},
    {GET, "FULLMAILBOX DELETED.user.anne.Sent.6B07B3D0", NULL, FORWARD, "anne"},
    {GET, "UNIQUEIDS (x y)", NULL, IGNORE, NULL},
    {GET, "ANNOTATION user.anne", NULL, PROTOCOL, NULL},
    {GET,
     "FETCH %(MBOXNAME user.anne PARTITION default UNIQUEID x GUID "
     "0123456789012345678901234567890123456789 UID 1)",
     NULL, PROTOCOL, NULL},
    {GET, "QUOTA user.anne", NULL, PROTOCOL, NULL},
    {GET, "NONSENSE x", NULL, PROTOCOL, NULL},
    {APPLY,
     "MAILBOX %(UNIQUEID abc MBOXNAME user.anne.Sent LAST_UID 3 RECORD ())",
     NULL, FORWARD, "anne"},
    {APPLY, "MAILBOX %(UNIQUEID abc)", NULL, BAD, NULL},
    {APPLY, "mailbox %(UNIQUEID abc MBOXNAME user.anne)", NULL, PROTOCOL, NULL},
    {APPLY, "UNMAILBOX user.anne.Old", NULL, FORWARD, "anne"},
    {APPLY, "UNMAILBOX shared.old", NULL, FORWARD, CAIRN_ROUTER_SHARED_USER},
    {APPLY,
     "RENAME %(OLDMBOXNAME user.anne.A NEWMBOXNAME user.anne.B PARTITION "
     "default UIDVALIDITY 1)",
     NULL, FORWARD, "anne"},
    /* To another user, or a user rename: refused (backupd's dead check). */
    {APPLY,
     "RENAME %(OLDMBOXNAME user.anne.A NEWMBOXNAME user.bob.B PARTITION "
     "default UIDVALIDITY 1)",
     NULL, BAD, NULL},
    {APPLY,
     "RENAME %(OLDMBOXNAME user.anne NEWMBOXNAME user.bob PARTITION "
     "default UIDVALIDITY 1)",
     NULL, BAD, NULL},
    {APPLY,
     "RENAME %(OLDMBOXNAME user.anne.A NEWMBOXNAME shared.A PARTITION "
     "default UIDVALIDITY 1)",
     NULL, BAD, NULL},
    {APPLY, "RENAME %(OLDMBOXNAME user.anne.A PARTITION default)", NULL, BAD,
     NULL},
    {APPLY,
     "RENAME %(OLDMBOXNAME shared.A NEWMBOXNAME shared.B PARTITION "
     "default UIDVALIDITY 1)",
     NULL, FORWARD, CAIRN_ROUTER_SHARED_USER},
    {APPLY,
     "RESERVE %(PARTITION default MBOXNAME (user.anne user.anne.Sent) "
     "GUID (0123456789012345678901234567890123456789))",
     NULL, FORWARD, "anne"},
    {APPLY,
     "RESERVE %(PARTITION default MBOXNAME (user.anne user.bob) GUID "
     "(0123456789012345678901234567890123456789))",
     NULL, BAD, NULL},
    {APPLY,
     "RESERVE %(PARTITION default MBOXNAME (user.anne shared.x) GUID "
     "(0123456789012345678901234567890123456789))",
     NULL, BAD, NULL},
    {APPLY,
     "RESERVE %(PARTITION default MBOXNAME (shared.x shared.y) GUID "
     "(0123456789012345678901234567890123456789))",
     NULL, FORWARD, CAIRN_ROUTER_SHARED_USER},
    {APPLY, "RESERVE %(PARTITION default GUID ())", NULL, BAD, NULL},
    {APPLY, "MESSAGE (NIL)", "anne", FORWARD, "anne"},
    {APPLY, "MESSAGE (NIL)", NULL, PROTOCOL, NULL},
    {APPLY, "SEEN %(USERID anne UNIQUEID abc LASTREAD 1 LASTUID 2)", NULL,
     FORWARD, "anne"},
    {APPLY, "SEEN %(UNIQUEID abc)", NULL, BAD, NULL},
    {APPLY, "SUB %(USERID anne MBOXNAME user.anne.x)", NULL, FORWARD, "anne"},
    {APPLY, "UNSUB %(USERID bob MBOXNAME user.anne.x)", NULL, FORWARD, "bob"},
    {APPLY, "SIEVE %(USERID anne FILENAME x.script LAST_UPDATE 1 CONTENT x)",
     NULL, FORWARD, "anne"},
    {APPLY, "UNSIEVE %(USERID anne FILENAME x.script)", NULL, FORWARD, "anne"},
    {APPLY, "QUOTA %(ROOT user.anne STORAGE 100)", NULL, IGNORE, NULL},
    {APPLY, "ACTIVATE_SIEVE %(USERID anne FILENAME x)", NULL, IGNORE, NULL},
    {APPLY, "UNACTIVATE_SIEVE %(USERID anne)", NULL, IGNORE, NULL},
    {APPLY, "UNUSER anne", NULL, IGNORE, NULL},
    {APPLY, "EXPUNGE %(MBOXNAME user.anne UNIQUEID x UID (1))", NULL, PROTOCOL,
     NULL},
    {APPLY, "ANNOTATION %(MBOXNAME user.anne ENTRY /x USERID anne VALUE y)",
     NULL, PROTOCOL, NULL},
    {APPLY, "UNQUOTA user.anne", NULL, PROTOCOL, NULL},
    {APPLY, "LOCAL_MAILBOX %(MBOXNAME user.anne)", NULL, PROTOCOL, NULL},
    {APPLY, "CAPABILITIES (SIEVE-MAILBOX)", NULL, PROTOCOL, NULL},
    {APPLY, "FORCE %()", NULL, PROTOCOL, NULL},
};

static void
test_table(void)
{
    struct cairn_router_namespace names = {.default_domain = "example.com"};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct resolve_case *c = &cases[i];
        struct cairn_router_resolution resolution;
        struct cairn_dlist *tree = NULL;
        char error[128] = "";
        int rc =
            cairn_dlist_parse(c->text, strlen(c->text), CAIRN_DLIST_PARSE_KEY,
                              NULL, NULL, &tree, error, sizeof(error));

        CHECK_INT(rc, 0);
        if (rc != 0) {
            fprintf(stderr, "  parse '%s': %s\n", c->text, error);
            continue;
        }
        CHECK_INT(cairn_router_resolve(c->verb, tree, &names, c->current_user,
                                       &resolution),
                  0);
        CHECK_INT(resolution.action, c->action);
        if (resolution.action != c->action)
            fprintf(stderr, "  case %zu: %s\n", i, c->text);
        CHECK_INT(resolution.has_owner, c->userid != NULL);
        if (c->userid != NULL && resolution.has_owner) {
            CHECK_STR(resolution.owner.userid, c->userid);
            CHECK_INT(resolution.owner.shared,
                      strcmp(c->userid, CAIRN_ROUTER_SHARED_USER) == 0);
        }
        cairn_dlist_free(tree);
    }
}

static void
test_other_verbs(void)
{
    struct cairn_router_resolution resolution;
    struct cairn_dlist *tree = cairn_dlist_new_atom("MAILBOX", "user.anne");

    CHECK(tree != NULL);
    CHECK_INT(cairn_router_resolve(CAIRN_CSYNC_RESTORE, tree, NULL, NULL,
                                   &resolution),
              CAIRN_EINVAL);
    CHECK_INT(
        cairn_router_resolve(CAIRN_CSYNC_NOOP, tree, NULL, NULL, &resolution),
        CAIRN_EINVAL);
    cairn_dlist_free(tree);
}

int
main(void)
{
    test_table();
    test_other_verbs();
    return check_exit("test_commands");
}
