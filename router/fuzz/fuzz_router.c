/*
 * fuzz_router.c - libFuzzer target for the router's pure logic: mailbox
 * names and userids to owners, and whole csync command streams through
 * the command table. The property checked: whatever the input, a request
 * the router would forward names exactly one owner whose userid is safe
 * to use as a storage key (or the shared pseudo-user).
 */
#include "router.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void
require_safe(const struct cairn_router_owner *owner)
{
    if (owner->shared ? strcmp(owner->userid, CAIRN_ROUTER_SHARED_USER) != 0
                      : !cairn_router_userid_safe(owner->userid))
        abort();
}

static void
fuzz_names(const unsigned char *data, size_t size)
{
    struct cairn_router_namespace names = {.default_domain = "example.com"};
    struct cairn_router_owner owner;
    char *text = malloc(size + 1);

    if (text == NULL)
        return;
    memcpy(text, data, size);
    text[size] = '\0';
    if (cairn_router_mailbox_owner(text, &names, &owner) == 0)
        require_safe(&owner);
    if (cairn_router_userid_owner(text, &names, &owner) == 0) {
        if (owner.shared)
            abort();
        require_safe(&owner);
    }
    free(text);
}

static void
fuzz_commands(const unsigned char *data, size_t size)
{
    struct cairn_csync_reader *reader = NULL;
    char current[CAIRN_ROUTER_USERID_MAX] = "";
    size_t at = 0;

    if (cairn_csync_reader_new(4096, NULL, NULL, &reader) < 0)
        return;
    while (at < size) {
        struct cairn_csync_command cmd;
        struct cairn_router_resolution resolution;
        size_t consumed = 0;
        int rc;

        memset(&cmd, 0, sizeof(cmd));
        rc = cairn_csync_reader_feed(reader, data + at, size - at, &consumed,
                                     &cmd);
        at += consumed;
        if (rc == CAIRN_EAGAIN || (rc < 0 && consumed == 0))
            break;
        if (rc == 0 &&
            (cmd.verb == CAIRN_CSYNC_GET || cmd.verb == CAIRN_CSYNC_APPLY) &&
            cairn_router_resolve(cmd.verb, cmd.value, NULL, current,
                                 &resolution) == 0 &&
            resolution.action == CAIRN_ROUTER_FORWARD) {
            if (!resolution.has_owner)
                abort();
            require_safe(&resolution.owner);
            memcpy(current, resolution.owner.userid, sizeof(current));
        }
        cairn_csync_command_release(&cmd);
    }
    cairn_csync_reader_free(reader);
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] & 1)
        fuzz_names(data + 1, size - 1);
    else
        fuzz_commands(data + 1, size - 1);
    return 0;
}
