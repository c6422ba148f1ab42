/*
 * pull_int.h - what the two halves of the receiving side of a pull share:
 * pull.c (the copy itself, on any thread) and pull_request.c (cairnctl's
 * PULL request, a thread per pull, answered from the loop).
 */
#ifndef CAIRN_NODE_PULL_INT_H
#define CAIRN_NODE_PULL_INT_H

#include "server_int.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct pull_options {
    const char *userid;
    const char *peer;     /* the source's node name (messages) */
    const char *endpoint; /* the source's endpoint */
    uint64_t rate;        /* bytes per second, 0: any */
    bool whole;           /* never resume */
    bool drop_replaced;   /* delete the copy set aside once installed */
    const atomic_bool *stop;
};

/* What a pull did (PullResult, the admin's answer). */
struct pull_outcome {
    uint64_t bytes, file_bytes, elapsed_ms;
    bool resumed;
    char digest[41];
    char error[256];
};

/*
 * Pulls options->userid from options->endpoint into this node (pull.c's
 * header comment says how); outcome gets the figures and, on failure,
 * the cause. Touches no loop state: any thread.
 */
int node_pull_run(const struct cairn_node_server *server,
                  const struct pull_options *options,
                  struct pull_outcome *outcome);

#endif /* CAIRN_NODE_PULL_INT_H */
