/*
 * test_user_map.c - mailbox name and userid to owner, table-driven, with
 * the cases of sync-protocol.md §5.2 and the unsafe names a router must
 * refuse before they reach a node.
 */
#include "check.h"
#include "router.h"

#include <string.h>

struct mailbox_case {
    const char *name;
    const char *default_domain;
    int rc;
    bool shared;
    const char *userid;
};

static const struct mailbox_case mailbox_cases[] = {
    {"user.anne", NULL, 0, false, "anne"},
    {"user.anne.Sent", NULL, 0, false, "anne"},
    {"user.anne.Sent.2024.Q1", NULL, 0, false, "anne"},
    {"user.anne^smith", NULL, 0, false, "anne.smith"},
    {"user.anne^smith.Drafts", NULL, 0, false, "anne.smith"},
    {"example.com!user.anne.Sent", NULL, 0, false, "anne@example.com"},
    {"example.com!user.anne.Sent", "example.com", 0, false, "anne"},
    {"example.org!user.anne", "example.com", 0, false, "anne@example.org"},
    {"DELETED.user.anne.Old.6B07B3D0", NULL, 0, false, "anne"},
    {"DELETED.user.anne.6B07B3D0", NULL, 0, false, "anne"},
    {"example.com!DELETED.user.anne.X.5F1E2D3C", NULL, 0, false,
     "anne@example.com"},
    /* Too short to be a deleted mailbox: plain shared name. */
    {"DELETED.user", NULL, 0, true, CAIRN_ROUTER_SHARED_USER},
    {"DELETED.shared.x.5F1E2D3C", NULL, 0, true, CAIRN_ROUTER_SHARED_USER},
    {"shared.folder", NULL, 0, true, CAIRN_ROUTER_SHARED_USER},
    {"user", NULL, 0, true, CAIRN_ROUTER_SHARED_USER},
    {"example.com!shared", NULL, 0, true, CAIRN_ROUTER_SHARED_USER},
    {"User.anne", NULL, 0, true, CAIRN_ROUTER_SHARED_USER},
    /* '/' is not a separator in internal names: one component, shared. */
    {"user/anne/Sent", NULL, 0, true, CAIRN_ROUTER_SHARED_USER},
    /* Unsafe userids never come out. */
    {"user.", NULL, CAIRN_EBADNAME, false, NULL},
    {"user..Sent", NULL, CAIRN_EBADNAME, false, NULL},
    {"user.^^", NULL, CAIRN_EBADNAME, false, NULL},
    {"user.^anne", NULL, CAIRN_EBADNAME, false, NULL},
    {"user.an/ne", NULL, CAIRN_EBADNAME, false, NULL},
    {"user.an\x01ne", NULL, CAIRN_EBADNAME, false, NULL},
    {"user.an ne", NULL, CAIRN_EBADNAME, false, NULL},
    {"ex/ample!user.anne", NULL, CAIRN_EBADNAME, false, NULL},
    {"..!user.anne", NULL, CAIRN_EBADNAME, false, NULL},
    {"!user.anne", NULL, 0, false, "anne"},
};

static void
test_mailbox_owner(void)
{
    for (size_t i = 0; i < sizeof(mailbox_cases) / sizeof(mailbox_cases[0]);
         i++) {
        const struct mailbox_case *c = &mailbox_cases[i];
        struct cairn_router_namespace names = {.default_domain =
                                                   c->default_domain};
        struct cairn_router_owner owner;
        int rc = cairn_router_mailbox_owner(c->name, &names, &owner);

        CHECK_INT(rc, c->rc);
        if (rc != 0 || c->rc != 0) {
            if (rc != c->rc)
                fprintf(stderr, "  name: %s\n", c->name);
            continue;
        }
        CHECK_INT(owner.shared, c->shared);
        CHECK_STR(owner.userid, c->userid);
    }
}

static void
test_deleted_prefix(void)
{
    struct cairn_router_namespace names = {.deleted_prefix = "Trash"};
    struct cairn_router_owner owner;

    CHECK_INT(
        cairn_router_mailbox_owner("Trash.user.bob.X.5F1E2D3C", &names, &owner),
        0);
    CHECK_STR(owner.userid, "bob");
    CHECK_INT(cairn_router_mailbox_owner("DELETED.user.bob.X.5F1E2D3C", &names,
                                         &owner),
              0);
    CHECK(owner.shared);
}

struct userid_case {
    const char *userid;
    const char *default_domain;
    int rc;
    const char *owner;
};

static const struct userid_case userid_cases[] = {
    {"anne", NULL, 0, "anne"},
    {"anne.smith", NULL, 0, "anne.smith"},
    {"anne@example.com", NULL, 0, "anne@example.com"},
    {"anne@example.com", "example.com", 0, "anne"},
    {"a@b@example.com", NULL, CAIRN_EBADNAME, NULL},
    {"anne@", NULL, CAIRN_EBADNAME, NULL},
    {"", NULL, CAIRN_EBADNAME, NULL},
    {"../etc", NULL, CAIRN_EBADNAME, NULL},
    {".hidden", NULL, CAIRN_EBADNAME, NULL},
    {"an/ne", NULL, CAIRN_EBADNAME, NULL},
    {"an\\ne", NULL, CAIRN_EBADNAME, NULL},
    {"an\nne", NULL, CAIRN_EBADNAME, NULL},
    {"an\x7fne", NULL, CAIRN_EBADNAME, NULL},
    {"anne^smith", NULL, CAIRN_EBADNAME, NULL},
    {"%SHARED", NULL, CAIRN_EBADNAME, NULL},
    {"x!anne", NULL, CAIRN_EBADNAME, NULL},
};

static void
test_userid_owner(void)
{
    for (size_t i = 0; i < sizeof(userid_cases) / sizeof(userid_cases[0]);
         i++) {
        const struct userid_case *c = &userid_cases[i];
        struct cairn_router_namespace names = {.default_domain =
                                                   c->default_domain};
        struct cairn_router_owner owner;
        int rc = cairn_router_userid_owner(c->userid, &names, &owner);

        CHECK_INT(rc, c->rc);
        if (rc != c->rc)
            fprintf(stderr, "  userid: %s\n", c->userid);
        if (rc == 0 && c->rc == 0) {
            CHECK(!owner.shared);
            CHECK_STR(owner.userid, c->owner);
        }
    }
}

static void
test_length_limits(void)
{
    char name[600], userid[300];
    struct cairn_router_owner owner;

    memset(userid, 'a', 256);
    userid[256] = '\0';
    CHECK(!cairn_router_userid_safe(userid));
    userid[255] = '\0';
    CHECK(cairn_router_userid_safe(userid));
    snprintf(name, sizeof(name), "user.%s", userid);
    CHECK_INT(cairn_router_mailbox_owner(name, NULL, &owner), 0);
    CHECK_STR(owner.userid, userid);
    snprintf(name, sizeof(name), "example.com!user.%s", userid);
    CHECK_INT(cairn_router_mailbox_owner(name, NULL, &owner), CAIRN_EBADNAME);
}

int
main(void)
{
    test_mailbox_owner();
    test_deleted_prefix();
    test_userid_owner();
    test_length_limits();
    return check_exit("test_user_map");
}
