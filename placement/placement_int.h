/*
 * placement_int.h - the ring's insides, shared by the placement sources
 * (ring.c, ring_reassign.c, planner.c, diff.c, ring_file.c) and nobody else.
 */
#ifndef CAIRN_PLACEMENT_INT_H
#define CAIRN_PLACEMENT_INT_H

#include "placement.h"

/* Shares are fixed point with 16 fraction bits, so builds are exact. */
#define SHARE_ONE ((int64_t)1 << 16)

struct ring_node {
    char *name;
    char *zone;
    uint32_t weight;
    bool removed;
    uint64_t slots;    /* replica slots held, kept by rebalance and load */
    uint64_t ideal_fp; /* weighted share of slots, fixed point */
};

struct ring_override {
    char *userid; /* owned, NUL-terminated */
    size_t len;
    uint64_t hash;
    uint16_t nodes[CAIRN_RING_MAX_REPLICAS];
};

struct ring_index_slot {
    uint32_t entry; /* index into overrides + 1; 0 is empty */
    uint32_t tag;   /* the top half of the user's hash */
};

struct cairn_ring {
    char *destination;
    uint64_t epoch;
    unsigned replicas;
    unsigned partition_power;
    uint32_t partitions;
    struct ring_node *nodes;
    size_t node_count;
    size_t node_cap;
    uint16_t *table; /* partitions x replicas, partition-major */
    struct ring_override *overrides;
    size_t override_count;
    size_t override_cap;
    /* open addressing over overrides; a miss reads only the index */
    struct ring_index_slot *override_index;
    size_t override_index_size; /* a power of two, or 0 */
};

/* Zones of the nodes that can hold slots, for the replica rules. */
struct ring_zones {
    uint32_t *zone_of; /* per node; UINT32_MAX for nodes that hold nothing */
    size_t zone_count;
    unsigned max_per_zone;
    size_t eligible; /* nodes of positive weight not being removed */
};

bool ring_name_valid(const char *name);
bool ring_node_eligible(const struct ring_node *node);
/* Fills zones for ring (allocates zone_of; ring_zones_release frees). */
int ring_zones_init(const struct cairn_ring *ring, struct ring_zones *zones);
void ring_zones_release(struct ring_zones *zones);
/*
 * True when node may take replica slot skip of the R nodes in row (skip ==
 * replicas: a new slot), given the other nodes of the row.
 */
bool ring_slot_allowed(const struct cairn_ring *ring,
                       const struct ring_zones *zones, const uint16_t *row,
                       unsigned skip, uint16_t node);
/* True when all R nodes of row obey the replica rules. */
bool ring_row_valid(const struct cairn_ring *ring,
                    const struct ring_zones *zones, const uint16_t *row);
/* Recomputes every node's slots and ideal_fp from the table and weights. */
int ring_update_shares(struct cairn_ring *ring, const struct ring_zones *zones);
/* Recounts node slots from the table. */
void ring_count_slots(struct cairn_ring *ring);
/* Fills every empty slot, then balances; jitter only when building. */
int ring_assign(struct cairn_ring *ring, const struct ring_zones *zones,
                bool jitter);
/* Pins userid to nodes without checking the replica rules. */
int ring_override_put(struct cairn_ring *ring, const char *userid, size_t len,
                      const uint16_t *nodes);
/* Rebuilds the override hash index from the overrides array. */
int ring_override_reindex(struct cairn_ring *ring);
const struct ring_override *ring_override_find(const struct cairn_ring *ring,
                                               uint64_t hash,
                                               const char *userid, size_t len);
/* An empty ring shell (no nodes, no table); owned by the caller. */
int ring_alloc(const char *destination, unsigned replicas,
               unsigned partition_power, struct cairn_ring **out);
/* Appends a node (copies strings) without any check beyond names. */
int ring_push_node(struct cairn_ring *ring, const char *name, uint32_t weight,
                   const char *zone);
uint64_t ring_mix64(uint64_t value);

#endif /* CAIRN_PLACEMENT_INT_H */
