/*
 * diff.c - what moves between two rings: partitions and users whose node
 * set changes, matched by node name since indices differ between rings.
 */
#include "common.h"
#include "placement_int.h"

#include <stdlib.h>
#include <string.h>

/* renumber[old index] = index of the same name in new_ring, or NONE. */
static int
map_nodes(const struct cairn_ring *old_ring, const struct cairn_ring *new_ring,
          uint16_t **renumber)
{
    uint16_t *map = malloc((old_ring->node_count + 1) * sizeof(*map));

    if (map == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < old_ring->node_count; i++) {
        size_t index;

        map[i] = CAIRN_RING_NODE_NONE;
        if (cairn_ring_node_find(new_ring, old_ring->nodes[i].name, &index) ==
            0)
            map[i] = (uint16_t)index;
    }
    *renumber = map;
    return CAIRN_OK;
}

/* How many nodes of to (in new numbering) are not among from (old). */
static unsigned
nodes_added(const uint16_t *renumber, const uint16_t *from, unsigned from_count,
            const uint16_t *to, unsigned to_count)
{
    unsigned added = 0;

    for (unsigned t = 0; t < to_count; t++) {
        bool found = false;

        for (unsigned f = 0; f < from_count && !found; f++)
            found =
                from[f] < CAIRN_RING_MAX_NODES && renumber[from[f]] == to[t];
        added += !found;
    }
    return added;
}

static bool
sets_differ(const uint16_t *renumber, const uint16_t *from, unsigned from_count,
            const uint16_t *to, unsigned to_count)
{
    return from_count != to_count ||
           nodes_added(renumber, from, from_count, to, to_count) > 0;
}

int
cairn_ring_diff_partitions(const struct cairn_ring *old_ring,
                           const struct cairn_ring *new_ring,
                           struct cairn_ring_diff_stats *stats)
{
    uint16_t *renumber = NULL;
    int rc;

    memset(stats, 0, sizeof(*stats));
    if (old_ring->partition_power != new_ring->partition_power)
        return CAIRN_EINVAL;
    if ((rc = map_nodes(old_ring, new_ring, &renumber)) < 0)
        return rc;
    stats->partitions = old_ring->partitions;
    for (uint32_t p = 0; p < old_ring->partitions; p++) {
        const uint16_t *from = old_ring->table + (size_t)p * old_ring->replicas;
        const uint16_t *to = new_ring->table + (size_t)p * new_ring->replicas;
        unsigned added = nodes_added(renumber, from, old_ring->replicas, to,
                                     new_ring->replicas);

        stats->slots_moved += added;
        stats->partitions_changed +=
            added > 0 || old_ring->replicas != new_ring->replicas;
    }
    free(renumber);
    return CAIRN_OK;
}

/* Per partition: 0 unchanged, else 1 + the number of new copies. */
static int
changed_partitions(const struct cairn_ring *old_ring,
                   const struct cairn_ring *new_ring, const uint16_t *renumber,
                   uint8_t **changed)
{
    uint8_t *marks = malloc(old_ring->partitions);

    if (marks == NULL)
        return CAIRN_ENOMEM;
    for (uint32_t p = 0; p < old_ring->partitions; p++) {
        const uint16_t *from = old_ring->table + (size_t)p * old_ring->replicas;
        const uint16_t *to = new_ring->table + (size_t)p * new_ring->replicas;

        marks[p] =
            sets_differ(renumber, from, old_ring->replicas, to,
                        new_ring->replicas)
                ? (uint8_t)(1 + nodes_added(renumber, from, old_ring->replicas,
                                            to, new_ring->replicas))
                : 0;
    }
    *changed = marks;
    return CAIRN_OK;
}

static void
user_rows(const struct cairn_ring *ring, uint64_t hash, const char *userid,
          size_t len, uint16_t *nodes)
{
    const struct ring_override *entry =
        ring->override_count > 0 ? ring_override_find(ring, hash, userid, len)
                                 : NULL;

    if (entry != NULL)
        memcpy(nodes, entry->nodes, ring->replicas * sizeof(*nodes));
    else
        cairn_ring_partition_nodes(ring, cairn_ring_partition(ring, hash),
                                   nodes);
}

/* Whether a user moves, and how many new copies, from hash alone. */
static unsigned
user_change(const struct cairn_ring *old_ring,
            const struct cairn_ring *new_ring, const uint16_t *renumber,
            const uint8_t *changed, uint64_t hash, const char *userid,
            size_t len, struct cairn_ring_move *move)
{
    bool pinned = (old_ring->override_count > 0 &&
                   ring_override_find(old_ring, hash, userid, len) != NULL) ||
                  (new_ring->override_count > 0 &&
                   ring_override_find(new_ring, hash, userid, len) != NULL);

    if (!pinned && changed != NULL &&
        changed[cairn_ring_partition(old_ring, hash)] == 0)
        return 0;
    user_rows(old_ring, hash, userid, len, move->from);
    user_rows(new_ring, hash, userid, len, move->to);
    if (!pinned && changed != NULL)
        return changed[cairn_ring_partition(old_ring, hash)];
    if (!sets_differ(renumber, move->from, old_ring->replicas, move->to,
                     new_ring->replicas))
        return 0;
    return 1 + nodes_added(renumber, move->from, old_ring->replicas, move->to,
                           new_ring->replicas);
}

int
cairn_ring_diff_users(const struct cairn_ring *old_ring,
                      const struct cairn_ring *new_ring,
                      const struct cairn_ring_user *users, size_t count,
                      cairn_ring_move_fn on_move, void *context,
                      struct cairn_ring_diff_stats *stats)
{
    struct cairn_ring_diff_stats local = {0};
    uint16_t *renumber = NULL;
    uint8_t *changed = NULL;
    int rc;

    if ((rc = map_nodes(old_ring, new_ring, &renumber)) < 0)
        goto out;
    if (old_ring->partition_power == new_ring->partition_power &&
        (rc = changed_partitions(old_ring, new_ring, renumber, &changed)) < 0)
        goto out;
    local.users = count;
    for (size_t i = 0; i < count; i++) {
        struct cairn_ring_move move;
        size_t len = strlen(users[i].userid);
        uint64_t hash = cairn_ring_hash(users[i].userid, len);
        unsigned change = user_change(old_ring, new_ring, renumber, changed,
                                      hash, users[i].userid, len, &move);

        if (change == 0)
            continue;
        local.users_changed++;
        local.replicas_moved += change - 1;
        move.user = i;
        if (on_move != NULL && (rc = on_move(context, &move)) < 0)
            goto out;
    }
    if (changed != NULL) {
        struct cairn_ring_diff_stats partitions;

        if ((rc = cairn_ring_diff_partitions(old_ring, new_ring, &partitions)) <
            0)
            goto out;
        local.partitions = partitions.partitions;
        local.partitions_changed = partitions.partitions_changed;
        local.slots_moved = partitions.slots_moved;
    }
    if (stats != NULL)
        *stats = local;
out:
    free(renumber);
    free(changed);
    return rc;
}

bool
cairn_ring_user_moves(const struct cairn_ring *old_ring,
                      const struct cairn_ring *new_ring, const char *userid,
                      size_t len)
{
    uint16_t from[CAIRN_RING_MAX_REPLICAS], to[CAIRN_RING_MAX_REPLICAS];

    cairn_ring_lookup(old_ring, userid, len, from);
    cairn_ring_lookup(new_ring, userid, len, to);
    for (unsigned t = 0; t < new_ring->replicas; t++) {
        bool found = false;

        for (unsigned f = 0; f < old_ring->replicas && !found; f++)
            found = strcmp(old_ring->nodes[from[f]].name,
                           new_ring->nodes[to[t]].name) == 0;
        if (!found)
            return true;
    }
    return old_ring->replicas != new_ring->replicas;
}
