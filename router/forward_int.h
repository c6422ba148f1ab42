/*
 * forward_int.h - internals of the forwarder (forward*.c): the per (user,
 * node) sequence numbers of the node wire contract. Not installed; tests
 * may include it.
 */
#ifndef CAIRN_ROUTER_FORWARD_INT_H
#define CAIRN_ROUTER_FORWARD_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The last sequence number sent per (user, node): the next request gets
 * last + 1; a stream that lost track (a timeout, a node error) is reset
 * and restarts at 1, which a node always accepts as a new stream.
 */
struct cairn_router_sequences;

/* Creates an empty table; the caller owns *table. */
int cairn_router_sequences_new(struct cairn_router_sequences **table);
void cairn_router_sequences_free(struct cairn_router_sequences *table);
/* The number for the next request of user to node (1, 2, 3, ...). */
int cairn_router_sequences_next(struct cairn_router_sequences *table,
                                const char *user, size_t node,
                                uint64_t *sequence);
/* The next request of user to node starts a new stream (sequence 1). */
void cairn_router_sequences_reset(struct cairn_router_sequences *table,
                                  const char *user, size_t node);
/*
 * The table's value for (user, node): false when it has none. The
 * forwarder keeps its repair marks in a second table of this kind.
 */
bool cairn_router_sequences_get(const struct cairn_router_sequences *table,
                                const char *user, size_t node, uint64_t *value);
/* Sets the value for (user, node), adding the entry when it is new. */
int cairn_router_sequences_set(struct cairn_router_sequences *table,
                               const char *user, size_t node, uint64_t value);
/* Streams the table knows (one per user and node). */
size_t cairn_router_sequences_count(const struct cairn_router_sequences *table);

#endif /* CAIRN_ROUTER_FORWARD_INT_H */
