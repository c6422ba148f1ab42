/*
 * placement.h - the ring: which storage nodes hold each user's replicas.
 *
 * One ring per destination: nodes (name, integer weight, zone), a replica
 * count R, and a table of 2^k partitions, each holding an ordered list of R
 * distinct nodes. A user is hashed (cairn_ring_hash, below) and its
 * partition is the top k bits of the hash; an override table (user ->
 * replica list), filled by the size-aware planner, takes precedence.
 *
 * Why Swift-style partitions rather than virtual nodes, jump or Maglev
 * hashing: the balance figures asked for (max/mean users per node <= 1.02
 * at 10 nodes, <= 1.03 at 100 nodes with 1M users) leave almost no room
 * above the multinomial noise of the hash itself (about 1.025 at 100
 * nodes). Virtual nodes add 15-22% on top of it at 100-160 vnodes per node;
 * jump hash cannot take weights, zones or a removal from the middle; Maglev
 * moves about 1.125x the optimum. A partition table where every node holds
 * exactly its weighted share of replica slots +-1 adds only 1/(slots per
 * node) of imbalance (0.15% at 100 nodes and 2^16 partitions), lets a
 * change move exactly the slots that must move (taken from the most
 * over-filled holders, so no user moves between two nodes that both stay),
 * makes distinct nodes and zones a per-partition check, and turns a diff of
 * two rings into a comparison of two arrays. Lookup is one hash and one
 * array read. The cost is a table in the ring file (2 bytes per slot,
 * zlib-compressed) and a partition count fixed when the ring is created.
 *
 * Replica rules, enforced on every change and on load: the R nodes of a
 * partition are distinct; each zone holds at most M of them, where M is the
 * smallest number for which the zones can still seat R replicas (M = 1,
 * i.e. all distinct zones, whenever there are at least R zones with nodes).
 *
 * Determinism: the hash is byte-wise, and building and rebalancing use only
 * integer arithmetic (weights are integers, shares are fixed point) with
 * ties broken by node order, so the same inputs give the same table on
 * every machine and build. The table, not the algorithm, is what routers
 * and nodes load, so a future change of the builder cannot move users.
 *
 * Changes are staged and then applied by cairn_ring_rebalance(), so that
 * several changes (add three nodes) move each user at most once. Epochs
 * are the caller's business: cairnctl saves a changed ring with epoch + 1.
 *
 * Routers and nodes hold a ring read-only; every function taking a const
 * ring may run concurrently from many threads. Loading always makes a new
 * ring object, so a reload never disturbs the ring in use.
 *
 * Pure logic: nothing here logs or exits; only cairn_ring_save() and
 * cairn_ring_load() touch files.
 */
#ifndef CAIRN_PLACEMENT_H
#define CAIRN_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CAIRN_RING_FORMAT_VERSION 1
#define CAIRN_RING_MAX_REPLICAS 8
#define CAIRN_RING_MAX_NODES 4096
#define CAIRN_RING_MIN_PARTITION_POWER 4
#define CAIRN_RING_MAX_PARTITION_POWER 20
#define CAIRN_RING_DEFAULT_PARTITION_POWER 16
#define CAIRN_RING_MAX_WEIGHT 1000000
/* Longest node, zone, destination name and userid, in bytes. */
#define CAIRN_RING_MAX_NAME 255
#define CAIRN_RING_MAX_OVERRIDES 10000000
/* Largest ring file cairn_ring_load() accepts. */
#define CAIRN_RING_MAX_FILE_SIZE (256u << 20)
/* Marks an empty slot; never returned by a lookup. */
#define CAIRN_RING_NODE_NONE 0xFFFF

struct cairn_ring;

/* A node as given to cairn_ring_new() and cairn_ring_add_node(). */
struct cairn_ring_node_spec {
    const char *name; /* printable ASCII, no spaces, unique in the ring */
    uint32_t weight;  /* 0..CAIRN_RING_MAX_WEIGHT; 0 holds nothing */
    const char *zone; /* printable ASCII, no spaces */
};

/* A node as the ring holds it; strings are borrowed from the ring. */
struct cairn_ring_node_info {
    const char *name;
    const char *zone;
    uint32_t weight;
    uint64_t slots; /* replica slots (partition, replica) it holds */
    double ideal;   /* the slots its weight entitles it to */
    bool removed;   /* staged for removal by the next rebalance */
};

/* --- hashing --- */

/*
 * The user hash, fixed forever: FNV-1a 64 over the userid bytes (offset
 * 0xcbf29ce484222325, prime 0x100000001b3), then the MurmurHash3 fmix64
 * finaliser (xor-shift 33, * 0xff51afd7ed558ccd, xor-shift 33,
 * * 0xc4ceb9fe1a85ec53, xor-shift 33) so that the top bits, which pick the
 * partition, depend on every byte. The userid includes its domain.
 */
uint64_t cairn_ring_hash(const char *userid, size_t len);

/* --- life cycle --- */

/*
 * Builds a balanced ring for destination (a name) with replicas copies of
 * each user and 2^partition_power partitions (0 means the default) over
 * count nodes. Epoch starts at 1. *out is owned by the caller
 * (cairn_ring_free). CAIRN_EINVAL if the nodes cannot hold the replicas
 * (fewer nodes of positive weight than replicas) or a name is bad.
 */
int cairn_ring_new(const char *destination, unsigned replicas,
                   unsigned partition_power,
                   const struct cairn_ring_node_spec *nodes, size_t count,
                   struct cairn_ring **out);
/* A deep copy of ring; *out is owned by the caller. */
int cairn_ring_clone(const struct cairn_ring *ring, struct cairn_ring **out);
/* Frees ring and everything it owns; NULL is fine. */
void cairn_ring_free(struct cairn_ring *ring);

/* --- what a ring is --- */

const char *cairn_ring_destination(const struct cairn_ring *ring);
uint64_t cairn_ring_epoch(const struct cairn_ring *ring);
void cairn_ring_set_epoch(struct cairn_ring *ring, uint64_t epoch);
unsigned cairn_ring_replicas(const struct cairn_ring *ring);
unsigned cairn_ring_partition_power(const struct cairn_ring *ring);
size_t cairn_ring_node_count(const struct cairn_ring *ring);
/* Fills *info for node index (0 .. node_count - 1); CAIRN_ENOENT past it. */
int cairn_ring_node_info(const struct cairn_ring *ring, size_t index,
                         struct cairn_ring_node_info *info);
/* The index of the node called name, or CAIRN_ENOENT. */
int cairn_ring_node_find(const struct cairn_ring *ring, const char *name,
                         size_t *index);
/* True when the two rings have the same nodes, table and overrides. */
bool cairn_ring_equal(const struct cairn_ring *a, const struct cairn_ring *b);
/*
 * Swift's balance figure: the largest (slots / weight) of a node of
 * positive weight over the mean (all slots / all weight); 1.0 is perfect.
 */
double cairn_ring_balance(const struct cairn_ring *ring);

/* --- lookup --- */

/* The partition a user hash falls in. */
uint32_t cairn_ring_partition(const struct cairn_ring *ring, uint64_t hash);
/*
 * Copies the R node indices of partition (ordered, first is primary) into
 * nodes, which has room for CAIRN_RING_MAX_REPLICAS.
 */
void cairn_ring_partition_nodes(const struct cairn_ring *ring,
                                uint32_t partition, uint16_t *nodes);
/*
 * The ordered replica list of userid (len bytes): cairn_ring_replicas()
 * distinct node indices written to nodes (room for
 * CAIRN_RING_MAX_REPLICAS). The override table wins over the partition.
 */
void cairn_ring_lookup(const struct cairn_ring *ring, const char *userid,
                       size_t len, uint16_t *nodes);

/* --- staged changes, applied by cairn_ring_rebalance() --- */

/* Adds a node (copies the strings); CAIRN_EEXIST if the name is taken. */
int cairn_ring_add_node(struct cairn_ring *ring,
                        const struct cairn_ring_node_spec *spec);
/* Marks a node for removal; its slots move away at the next rebalance. */
int cairn_ring_remove_node(struct cairn_ring *ring, const char *name);
int cairn_ring_set_weight(struct cairn_ring *ring, const char *name,
                          uint32_t weight);
int cairn_ring_set_zone(struct cairn_ring *ring, const char *name,
                        const char *zone);

struct cairn_ring_rebalance_stats {
    uint64_t slots_moved;        /* replica slots whose node changed */
    uint64_t partitions_changed; /* partitions with any slot moved */
    uint64_t overrides_dropped;  /* overrides no longer valid */
    double balance;              /* cairn_ring_balance() afterwards */
};

/*
 * Applies the staged changes: empties removed nodes and drops them,
 * re-seats slots that break the replica rules, then moves the fewest slots
 * that bring every node within one slot of its share, always from the
 * most over-filled node to the most under-filled one that may take it.
 * Overrides that name a dropped node or break the rules are dropped.
 * stats may be NULL. CAIRN_EINVAL if the remaining nodes cannot hold the
 * replicas (the ring is then unchanged).
 */
int cairn_ring_rebalance(struct cairn_ring *ring,
                         struct cairn_ring_rebalance_stats *stats);

/* --- overrides --- */

size_t cairn_ring_override_count(const struct cairn_ring *ring);
/*
 * Pins userid to the R node indices in nodes (copied), replacing any
 * earlier pin; CAIRN_EINVAL if they break the replica rules.
 */
int cairn_ring_set_override(struct cairn_ring *ring, const char *userid,
                            size_t len, const uint16_t *nodes);
/* Unpins userid; CAIRN_ENOENT if it was not pinned. */
int cairn_ring_clear_override(struct cairn_ring *ring, const char *userid,
                              size_t len);
void cairn_ring_clear_overrides(struct cairn_ring *ring);
/*
 * The index-th override (0 .. count - 1, in no particular order): the
 * userid (NUL-terminated, borrowed) and its R nodes (borrowed). Valid
 * until the ring changes.
 */
int cairn_ring_override_at(const struct cairn_ring *ring, size_t index,
                           const char **userid, const uint16_t **nodes);

/* --- the size-aware planner --- */

/* A user with its size as the nodes report it (bytes, or 1 to count). */
struct cairn_ring_user {
    const char *userid; /* NUL-terminated, borrowed */
    uint64_t bytes;
};

struct cairn_ring_plan_options {
    /* Aim for every node's load <= (1 + tolerance) x its share. */
    double tolerance;
    /* Pin at most this many users (0: no limit but the ring's). */
    size_t max_overrides;
    /* Start from the current overrides instead of from hashing alone. */
    bool keep_existing;
};

struct cairn_ring_plan_stats {
    double before;      /* max/mean load per weight before planning */
    double after;       /* the same afterwards */
    double lower_bound; /* what no placement can beat (largest user) */
    size_t pinned;      /* overrides in the ring afterwards */
};

/*
 * Balances load (sum of bytes of the users a node holds a replica of, per
 * unit of its share) by pinning users from over-filled nodes to
 * under-filled ones, heaviest first, keeping the replica rules. The users
 * array is borrowed; userids must be distinct. Replaces the override table
 * (or extends it, with keep_existing). options and stats may be NULL.
 */
int cairn_ring_plan(struct cairn_ring *ring,
                    const struct cairn_ring_user *users, size_t count,
                    const struct cairn_ring_plan_options *options,
                    struct cairn_ring_plan_stats *stats);
/*
 * Measures the load per node of users on ring (as the planner counts it):
 * *max_over_mean is the largest node load per unit of share over the
 * mean. loads (may be NULL) receives node_count totals.
 */
int cairn_ring_measure(const struct cairn_ring *ring,
                       const struct cairn_ring_user *users, size_t count,
                       double *max_over_mean, uint64_t *loads);

/* --- diff: what moves between two rings --- */

struct cairn_ring_diff_stats {
    uint64_t partitions;         /* partitions compared */
    uint64_t partitions_changed; /* partitions whose node set changed */
    uint64_t slots_moved;        /* new replica copies partitions need */
    uint64_t users;              /* users compared (user diffs only) */
    uint64_t users_changed;      /* users whose node set changed */
    uint64_t replicas_moved;     /* new replica copies users need */
};

/*
 * One user whose node set differs: from[] are node indices in the old
 * ring, to[] in the new one (compare nodes by name: indices may differ).
 */
struct cairn_ring_move {
    size_t user; /* index into the users array given to the diff */
    uint16_t from[CAIRN_RING_MAX_REPLICAS];
    uint16_t to[CAIRN_RING_MAX_REPLICAS];
};

/* Called for each move; a negative return stops the diff with that code. */
typedef int (*cairn_ring_move_fn)(void *context,
                                  const struct cairn_ring_move *move);

/*
 * Compares the partition tables of two rings of the same partition power
 * (nodes matched by name). CAIRN_EINVAL if the powers differ.
 */
int cairn_ring_diff_partitions(const struct cairn_ring *old_ring,
                               const struct cairn_ring *new_ring,
                               struct cairn_ring_diff_stats *stats);
/*
 * Compares where each of count users lives in the two rings (overrides
 * included) and calls on_move (may be NULL) for each user whose node set
 * changes: what a rebalance executor copies from where to where.
 */
int cairn_ring_diff_users(const struct cairn_ring *old_ring,
                          const struct cairn_ring *new_ring,
                          const struct cairn_ring_user *users, size_t count,
                          cairn_ring_move_fn on_move, void *context,
                          struct cairn_ring_diff_stats *stats);
/*
 * True when userid's node set differs between the rings: a router moving
 * to a new epoch keeps such users on the old ring until their transfer is
 * done, and switches all others at once.
 */
bool cairn_ring_user_moves(const struct cairn_ring *old_ring,
                           const struct cairn_ring *new_ring,
                           const char *userid, size_t len);

/* --- the ring file --- */

/*
 * Serialises ring into the ring file text (see ring_file.c for the
 * format); *text is owned by the caller (free()).
 */
int cairn_ring_format(const struct cairn_ring *ring, char **text, size_t *len);
/*
 * Parses ring file text into a new ring owned by the caller. Checks the
 * version, the SHA-256 checksum and every replica rule: CAIRN_ECORRUPT for
 * a bad checksum or truncation, CAIRN_EPARSE for malformed content,
 * CAIRN_ENOTSUP for an unknown format version.
 */
int cairn_ring_parse(const char *text, size_t len, struct cairn_ring **out);
/* Writes ring to path atomically (temp file, fsync, rename, fsync dir). */
int cairn_ring_save(const struct cairn_ring *ring, const char *path);
/* Reads and parses path into a new ring owned by the caller. */
int cairn_ring_load(const char *path, struct cairn_ring **out);

#endif /* CAIRN_PLACEMENT_H */
