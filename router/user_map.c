/*
 * user_map.c - which user a mailbox name or a userid argument belongs to,
 * computed exactly as backupd does it (Cyrus mbname_from_intname() +
 * mbname_userid(), sync-protocol.md §5.2), plus the safety check every
 * userid passes before it can become a key on a node or part of a path.
 *
 * The protocol carries internal mailbox names whatever the sender's
 * unixhierarchysep says: components are separated by '.', and a '.' inside
 * a component (a dotted userid) travels as '^'. A name written with '/'
 * separators is therefore one single component to backupd, i.e. a shared
 * mailbox; we do the same rather than guess.
 */
#include "router.h"

#include <string.h>

/* Longest domain we accept: a DNS name is at most 253 bytes. */
#define DOMAIN_MAX 254

bool
cairn_router_userid_safe(const char *userid)
{
    size_t len = strlen(userid);
    const char *at;

    if (len == 0 || len >= CAIRN_ROUTER_USERID_MAX)
        return false;
    if (userid[0] == '.' || userid[0] == '%' || userid[0] == '@')
        return false;
    if (strstr(userid, "..") != NULL)
        return false;
    for (const unsigned char *p = (const unsigned char *)userid; *p; p++) {
        if (*p < 0x21 || *p == 0x7f || *p == '/' || *p == '\\' || *p == '!')
            return false;
    }
    /* At most one '@', and neither side of it empty. */
    at = strchr(userid, '@');
    if (at != NULL && (strchr(at + 1, '@') != NULL || at[1] == '\0'))
        return false;
    return true;
}

/* Writes local[@domain] into userid, dropping the default domain. */
static int
compose_userid(const char *local, size_t local_len, const char *domain,
               size_t domain_len, const struct cairn_router_namespace *names,
               char userid[CAIRN_ROUTER_USERID_MAX])
{
    size_t len = local_len;

    if (domain_len > 0 && names != NULL && names->default_domain != NULL &&
        strlen(names->default_domain) == domain_len &&
        memcmp(names->default_domain, domain, domain_len) == 0)
        domain_len = 0;
    if (domain_len >= DOMAIN_MAX)
        return CAIRN_EBADNAME;
    if (len + (domain_len ? domain_len + 1 : 0) >= CAIRN_ROUTER_USERID_MAX)
        return CAIRN_EBADNAME;
    memcpy(userid, local, local_len);
    if (domain_len > 0) {
        userid[len++] = '@';
        memcpy(userid + len, domain, domain_len);
        len += domain_len;
    }
    userid[len] = '\0';
    /* Internal names encode a '.' inside a component as '^'. */
    for (size_t i = 0; i < local_len; i++)
        if (userid[i] == '^')
            userid[i] = '.';
    return cairn_router_userid_safe(userid) ? CAIRN_OK : CAIRN_EBADNAME;
}

/* Length of the component starting at name (up to '.' or the end). */
static size_t
component_length(const char *name)
{
    const char *dot = strchr(name, '.');

    return dot != NULL ? (size_t)(dot - name) : strlen(name);
}

static bool
component_is(const char *component, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(component, word, len) == 0;
}

int
cairn_router_mailbox_owner(const char *mboxname,
                           const struct cairn_router_namespace *names,
                           struct cairn_router_owner *owner)
{
    const char *deleted = names != NULL && names->deleted_prefix != NULL
                              ? names->deleted_prefix
                              : "DELETED";
    const char *rest = mboxname, *bang = strchr(mboxname, '!');
    const char *domain = "", *first, *second;
    size_t domain_len = 0, first_len, components = 1;

    owner->shared = true;
    strcpy(owner->userid, CAIRN_ROUTER_SHARED_USER);
    if (bang != NULL) {
        domain = mboxname;
        domain_len = (size_t)(bang - mboxname);
        rest = bang + 1;
    }
    for (const char *p = rest; *p; p++)
        if (*p == '.')
            components++;
    first = rest;
    first_len = component_length(first);
    /* DELETED.user.anne.Old.6B07B3D0: drop the prefix and the timestamp. */
    if (components > 2 && component_is(first, first_len, deleted)) {
        first = rest + first_len + 1;
        first_len = component_length(first);
        components -= 2;
    }
    if (components < 2 || !component_is(first, first_len, "user"))
        return CAIRN_OK;
    second = first + first_len + 1;
    owner->shared = false;
    return compose_userid(second, component_length(second), domain, domain_len,
                          names, owner->userid);
}

int
cairn_router_userid_owner(const char *userid,
                          const struct cairn_router_namespace *names,
                          struct cairn_router_owner *owner)
{
    const char *at = strrchr(userid, '@');
    size_t local_len = at != NULL ? (size_t)(at - userid) : strlen(userid);

    owner->shared = false;
    owner->userid[0] = '\0';
    /* Userids arrive in external form: '.' is literal, no '^' decoding. */
    if (local_len >= CAIRN_ROUTER_USERID_MAX || memchr(userid, '^', local_len))
        return CAIRN_EBADNAME;
    if (at != NULL && at[1] == '\0')
        return CAIRN_EBADNAME;
    return compose_userid(userid, local_len, at != NULL ? at + 1 : "",
                          at != NULL ? strlen(at + 1) : 0, names,
                          owner->userid);
}
