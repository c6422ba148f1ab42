/*
 * server_pull_stub.c - a stand-in for node_pull_user (node/pull.c, the
 * node-to-node pull another change brings): weak, so the real one wins
 * when both are linked; until then a heal that found its source fails
 * with "not supported" and keeps the user quarantined. Deleted once the
 * pull is in.
 */
#include "common.h"
#include "server_int.h"

#include <stdio.h>

__attribute__((weak)) int
node_pull_user(struct cairn_node_server *server, const char *userid,
               const char *peer_node, uint64_t rate_bytes_per_second,
               struct node_pull_result *result)
{
    (void)server;
    (void)rate_bytes_per_second;
    snprintf(result->error, sizeof(result->error),
             "no node-to-node pull in this build (%s from %s)", userid,
             peer_node);
    return CAIRN_ENOTSUP;
}
