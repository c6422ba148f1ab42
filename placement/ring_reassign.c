/*
 * ring_reassign.c - building and changing the partition table: weighted
 * shares, the replica rules, filling empty slots and the minimum-move
 * balancing that keeps users on nodes that stay.
 */
#include "common.h"
#include "placement_int.h"

#include <stdlib.h>
#include <string.h>

/* Nodes whose need is within this many slots tie when a ring is built. */
#define BUILD_JITTER_SLOTS 4

void
ring_zones_release(struct ring_zones *zones)
{
    free(zones->zone_of);
    zones->zone_of = NULL;
}

int
ring_zones_init(const struct cairn_ring *ring, struct ring_zones *zones)
{
    size_t *members = NULL;
    int rc = CAIRN_OK;

    memset(zones, 0, sizeof(*zones));
    zones->zone_of = malloc((ring->node_count + 1) * sizeof(*zones->zone_of));
    members = calloc(ring->node_count + 1, sizeof(*members));
    if (zones->zone_of == NULL || members == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < ring->node_count; i++) {
        zones->zone_of[i] = UINT32_MAX;
        if (!ring_node_eligible(&ring->nodes[i]))
            continue;
        zones->eligible++;
        for (size_t j = 0; j < i; j++) {
            if (zones->zone_of[j] != UINT32_MAX &&
                strcmp(ring->nodes[j].zone, ring->nodes[i].zone) == 0) {
                zones->zone_of[i] = zones->zone_of[j];
                break;
            }
        }
        if (zones->zone_of[i] == UINT32_MAX)
            zones->zone_of[i] = (uint32_t)zones->zone_count++;
        members[zones->zone_of[i]]++;
    }
    /* The fewest replicas per zone with which the zones still seat R. */
    zones->max_per_zone = ring->replicas;
    for (unsigned most = 1; most <= ring->replicas; most++) {
        size_t seats = 0;

        for (size_t z = 0; z < zones->zone_count; z++)
            seats += members[z] < most ? members[z] : most;
        if (seats >= ring->replicas) {
            zones->max_per_zone = most;
            break;
        }
    }
out:
    free(members);
    if (rc < 0)
        ring_zones_release(zones);
    return rc;
}

bool
ring_slot_allowed(const struct cairn_ring *ring, const struct ring_zones *zones,
                  const uint16_t *row, unsigned skip, uint16_t node)
{
    unsigned same_zone = 0;
    uint32_t zone;

    if (node >= ring->node_count || zones->zone_of[node] == UINT32_MAX)
        return false;
    zone = zones->zone_of[node];
    for (unsigned r = 0; r < ring->replicas; r++) {
        if (r == skip || row[r] == CAIRN_RING_NODE_NONE)
            continue;
        if (row[r] == node)
            return false;
        if (row[r] < ring->node_count && zones->zone_of[row[r]] == zone)
            same_zone++;
    }
    return same_zone < zones->max_per_zone;
}

bool
ring_row_valid(const struct cairn_ring *ring, const struct ring_zones *zones,
               const uint16_t *row)
{
    for (unsigned r = 0; r < ring->replicas; r++) {
        if (!ring_slot_allowed(ring, zones, row, r, row[r]))
            return false;
    }
    return true;
}

void
ring_count_slots(struct cairn_ring *ring)
{
    size_t table_len = (size_t)ring->partitions * ring->replicas;

    for (size_t i = 0; i < ring->node_count; i++)
        ring->nodes[i].slots = 0;
    for (size_t i = 0; i < table_len; i++) {
        if (ring->table[i] < ring->node_count)
            ring->nodes[ring->table[i]].slots++;
    }
}

/*
 * Water-filling: shares follow weight, but no node may hold more than one
 * slot per partition and no zone more than max_per_zone, so a capped node
 * or zone is fixed at its cap and the rest is shared out again.
 */
static void
share_out(struct cairn_ring *ring, const struct ring_zones *zones, bool *fixed)
{
    uint64_t node_cap = (uint64_t)ring->partitions << 16;
    uint64_t zone_cap = node_cap * zones->max_per_zone;
    uint64_t total = node_cap * ring->replicas;

    for (size_t round = 0; round <= ring->node_count; round++) {
        uint64_t given = 0, weight = 0;
        bool changed = false;

        for (size_t i = 0; i < ring->node_count; i++) {
            if (fixed[i])
                given += ring->nodes[i].ideal_fp;
            else
                weight += ring->nodes[i].weight;
        }
        for (size_t i = 0; i < ring->node_count && weight > 0; i++) {
            if (!fixed[i])
                ring->nodes[i].ideal_fp =
                    (total - given) * ring->nodes[i].weight / weight;
        }
        for (size_t i = 0; i < ring->node_count; i++) {
            if (!fixed[i] && ring->nodes[i].ideal_fp > node_cap) {
                ring->nodes[i].ideal_fp = node_cap;
                fixed[i] = changed = true;
            }
        }
        for (size_t z = 0; z < zones->zone_count && !changed; z++) {
            uint64_t zone_total = 0, zone_fixed = 0, zone_weight = 0;

            for (size_t i = 0; i < ring->node_count; i++) {
                if (zones->zone_of[i] != z)
                    continue;
                zone_total += ring->nodes[i].ideal_fp;
                if (fixed[i])
                    zone_fixed += ring->nodes[i].ideal_fp;
                else
                    zone_weight += ring->nodes[i].weight;
            }
            if (zone_total <= zone_cap || zone_weight == 0)
                continue;
            for (size_t i = 0; i < ring->node_count; i++) {
                if (zones->zone_of[i] != z || fixed[i])
                    continue;
                ring->nodes[i].ideal_fp = (zone_cap - zone_fixed) *
                                          ring->nodes[i].weight / zone_weight;
                fixed[i] = changed = true;
            }
        }
        if (!changed)
            break;
    }
}

int
ring_update_shares(struct cairn_ring *ring, const struct ring_zones *zones)
{
    bool *fixed = calloc(ring->node_count + 1, sizeof(*fixed));

    if (fixed == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < ring->node_count; i++) {
        ring->nodes[i].ideal_fp = 0;
        fixed[i] = !ring_node_eligible(&ring->nodes[i]);
    }
    share_out(ring, zones, fixed);
    ring_count_slots(ring);
    free(fixed);
    return CAIRN_OK;
}

static int64_t
excess_of(const struct ring_node *node)
{
    return (int64_t)(node->slots << 16) - (int64_t)node->ideal_fp;
}

static uint64_t
floor_of(const struct ring_node *node)
{
    return node->ideal_fp >> 16;
}

static uint64_t
ceil_of(const struct ring_node *node)
{
    return (node->ideal_fp + (uint64_t)SHARE_ONE - 1) >> 16;
}

/*
 * The node that most needs a slot in row, among those the rules allow.
 * When building (done = slots filled so far), need is measured against
 * progress: a node should hold done/total of its share at this point, so
 * every node's slots spread evenly over the partitions and over the
 * replica positions, and a fixed pseudo-random jitter of a few slots
 * varies the replica sets so a failed node's partitions have peers
 * everywhere. Otherwise need is simply the share not yet held.
 */
static uint16_t
best_receiver(const struct cairn_ring *ring, const struct ring_zones *zones,
              const uint16_t *row, unsigned slot, uint32_t partition,
              const uint64_t *done)
{
    uint64_t total = (uint64_t)ring->partitions * ring->replicas;
    uint16_t best = CAIRN_RING_NODE_NONE;
    int64_t best_need = 0;

    for (size_t i = 0; i < ring->node_count; i++) {
        const struct ring_node *node = &ring->nodes[i];
        int64_t need;

        if (!ring_slot_allowed(ring, zones, row, slot, (uint16_t)i))
            continue;
        if (done == NULL) {
            need = -excess_of(node);
        } else {
            need = (int64_t)(node->ideal_fp * (*done + 1) / total) -
                   (int64_t)(node->slots << 16);
            need += (int64_t)(ring_mix64(((uint64_t)partition << 16) ^ i) %
                              (BUILD_JITTER_SLOTS * SHARE_ONE));
        }
        if (best == CAIRN_RING_NODE_NONE || need > best_need) {
            best = (uint16_t)i;
            best_need = need;
        }
    }
    return best;
}

static int
fill_empty(struct cairn_ring *ring, const struct ring_zones *zones, bool jitter)
{
    uint64_t done = 0;

    for (uint32_t p = 0; p < ring->partitions; p++) {
        uint16_t *row = ring->table + (size_t)p * ring->replicas;

        for (unsigned r = 0; r < ring->replicas; r++) {
            uint16_t node;

            if (row[r] != CAIRN_RING_NODE_NONE)
                continue;
            node = best_receiver(ring, zones, row, r, p, jitter ? &done : NULL);
            if (node == CAIRN_RING_NODE_NONE)
                return CAIRN_EINVAL;
            row[r] = node;
            ring->nodes[node].slots++;
            done++;
        }
    }
    return CAIRN_OK;
}

/* Partitions are visited in a scattered order so moves spread evenly. */
static uint32_t
scan_partition(const struct cairn_ring *ring, uint64_t step)
{
    uint64_t stride = 0x9E3779B97F4A7C15ULL | 1;

    return (uint32_t)((step * stride) & (ring->partitions - 1));
}

/* The zones of row other than slot skip, as bits (zones <= 64 only). */
static uint64_t
row_zone_bits(const struct cairn_ring *ring, const struct ring_zones *zones,
              const uint16_t *row, unsigned skip)
{
    uint64_t bits = 0;

    for (unsigned r = 0; r < ring->replicas; r++) {
        if (r != skip && row[r] < ring->node_count &&
            zones->zone_of[row[r]] < 64)
            bits |= (uint64_t)1 << zones->zone_of[row[r]];
    }
    return bits;
}

/*
 * Moves one slot of donor, from the first partition (in scan order from
 * the donor's cursor) where one of receivers (best first) may take it.
 * With one replica per zone, a row whose zones cover every receiver's
 * zone is skipped at once: that keeps scans that find nothing cheap.
 */
static bool
move_from(struct cairn_ring *ring, const struct ring_zones *zones,
          uint64_t *cursor, uint16_t donor, const uint16_t *receivers,
          size_t receiver_count)
{
    bool by_bits = zones->max_per_zone == 1 && zones->zone_count <= 64;
    uint64_t wanted_zones = 0;

    for (size_t k = 0; by_bits && k < receiver_count; k++)
        wanted_zones |= (uint64_t)1 << zones->zone_of[receivers[k]];
    for (uint32_t tried = 0; tried < ring->partitions; tried++) {
        uint32_t p = scan_partition(ring, cursor[donor] + tried);
        uint16_t *row = ring->table + (size_t)p * ring->replicas;

        for (unsigned r = 0; r < ring->replicas; r++) {
            if (row[r] != donor ||
                (by_bits &&
                 (wanted_zones & ~row_zone_bits(ring, zones, row, r)) == 0))
                continue;
            for (size_t k = 0; k < receiver_count; k++) {
                if (!ring_slot_allowed(ring, zones, row, r, receivers[k]))
                    continue;
                row[r] = receivers[k];
                ring->nodes[donor].slots--;
                ring->nodes[receivers[k]].slots++;
                cursor[donor] += tried + 1;
                return true;
            }
        }
    }
    return false;
}

/* Where a node can hand one of its slots to a receiver. */
struct handoff {
    uint32_t partition;
    unsigned slot;
    uint16_t receiver;
    bool found;
};

/* For every node but donor, the first slot a receiver may take over. */
static void
find_handoffs(const struct cairn_ring *ring, const struct ring_zones *zones,
              uint16_t donor, const uint16_t *receivers, size_t receiver_count,
              struct handoff *handoffs)
{
    memset(handoffs, 0, ring->node_count * sizeof(*handoffs));
    for (uint32_t p = 0; p < ring->partitions; p++) {
        const uint16_t *row = ring->table + (size_t)p * ring->replicas;

        for (unsigned r = 0; r < ring->replicas; r++) {
            uint16_t holder = row[r];

            if (holder == donor || holder >= ring->node_count ||
                handoffs[holder].found)
                continue;
            for (size_t k = 0; k < receiver_count; k++) {
                if (receivers[k] == holder ||
                    !ring_slot_allowed(ring, zones, row, r, receivers[k]))
                    continue;
                handoffs[holder] = (struct handoff){p, r, receivers[k], true};
                break;
            }
        }
    }
}

/*
 * When the rules block every direct move of donor's slots (full zones),
 * a chain of two may not be: donor's slot goes to a node m that may hold
 * it, and one of m's slots elsewhere goes to a receiver. m keeps its
 * count; donor and receiver change as a direct move would.
 */
static bool
move_via(struct cairn_ring *ring, const struct ring_zones *zones,
         uint16_t donor, const uint16_t *receivers, size_t receiver_count,
         struct handoff *handoffs)
{
    find_handoffs(ring, zones, donor, receivers, receiver_count, handoffs);
    for (uint32_t p = 0; p < ring->partitions; p++) {
        uint16_t *row = ring->table + (size_t)p * ring->replicas;

        for (unsigned r = 0; r < ring->replicas; r++) {
            if (row[r] != donor)
                continue;
            for (size_t m = 0; m < ring->node_count; m++) {
                const struct handoff *via = &handoffs[m];

                if (!via->found || via->partition == p ||
                    !ring_slot_allowed(ring, zones, row, r, (uint16_t)m))
                    continue;
                row[r] = (uint16_t)m;
                ring->table[(size_t)via->partition * ring->replicas +
                            via->slot] = via->receiver;
                ring->nodes[donor].slots--;
                ring->nodes[via->receiver].slots++;
                return true;
            }
        }
    }
    return false;
}

/*
 * A move helps only if it brings a node that must change (above its
 * ceiling, or below its floor) nearer its share and strictly narrows the
 * spread; so nodes already within one slot of their share never trade.
 */
static bool
move_wanted(const struct cairn_ring *ring, size_t donor, size_t receiver)
{
    const struct ring_node *from = &ring->nodes[donor];
    const struct ring_node *to = &ring->nodes[receiver];

    if (donor == receiver || from->slots == 0 || !ring_node_eligible(to))
        return false;
    if (from->slots <= ceil_of(from) && to->slots >= floor_of(to))
        return false;
    return excess_of(from) - excess_of(to) > SHARE_ONE;
}

static int
by_excess_descending(const void *a, const void *b, void *context)
{
    const struct cairn_ring *ring = context;
    int64_t x = excess_of(&ring->nodes[*(const uint16_t *)a]);
    int64_t y = excess_of(&ring->nodes[*(const uint16_t *)b]);

    if (x != y)
        return x > y ? -1 : 1;
    return *(const uint16_t *)a < *(const uint16_t *)b ? -1 : 1;
}

/* Working state of the balancing loop. */
struct balancer {
    uint16_t *order;     /* nodes, most over-filled first */
    uint16_t *receivers; /* the wanted receivers of one donor, best first */
    uint64_t *cursor;    /* per node: where its next scan starts */
    uint64_t *retry_at;  /* per node: moves done before it is tried again */
    uint8_t *failures;   /* per node: scans in a row that found nothing */
    struct handoff *handoffs; /* per node, for two-move chains */
    uint64_t moves;
};

enum step_kind {
    STEP_DIRECT,     /* direct moves, donors not waiting */
    STEP_DIRECT_ALL, /* direct moves, every donor */
    STEP_VIA,        /* chains of two moves */
};

/*
 * One move from the most over-filled donor that can give, to the most
 * under-filled receiver that may take one of its slots; false: none. A
 * donor whose direct scan finds nothing (full zones can block all its
 * slots) waits twice as many moves before each retry, which keeps the
 * work bounded.
 */
static bool
balance_step(struct cairn_ring *ring, const struct ring_zones *zones,
             struct balancer *state, enum step_kind kind)
{
    size_t count = ring->node_count;

    for (size_t i = 0; i < count; i++)
        state->order[i] = (uint16_t)i;
    qsort_r(state->order, count, sizeof(*state->order), by_excess_descending,
            ring);
    for (size_t d = 0; d < count; d++) {
        uint16_t donor = state->order[d];
        size_t receiver_count = 0;
        bool moved;

        if (kind == STEP_DIRECT && state->moves < state->retry_at[donor])
            continue;
        for (size_t u = count; u-- > 0;) {
            if (move_wanted(ring, donor, state->order[u]))
                state->receivers[receiver_count++] = state->order[u];
        }
        if (receiver_count == 0)
            continue;
        moved = kind == STEP_VIA
                    ? move_via(ring, zones, donor, state->receivers,
                               receiver_count, state->handoffs)
                    : move_from(ring, zones, state->cursor, donor,
                                state->receivers, receiver_count);
        if (moved) {
            state->failures[donor] = 0;
            state->moves++;
            return true;
        }
        if (kind == STEP_VIA)
            continue;
        if (state->failures[donor] < 20)
            state->failures[donor]++;
        state->retry_at[donor] =
            state->moves + ((uint64_t)1 << state->failures[donor]);
    }
    return false;
}

int
ring_assign(struct cairn_ring *ring, const struct ring_zones *zones,
            bool jitter)
{
    size_t count = ring->node_count + 1;
    struct balancer state = {0};
    uint64_t swept_at = UINT64_MAX;
    int rc;

    if (zones->eligible < ring->replicas)
        return CAIRN_EINVAL;
    state.order = malloc(count * sizeof(*state.order));
    state.receivers = malloc(count * sizeof(*state.receivers));
    state.cursor = malloc(count * sizeof(*state.cursor));
    state.retry_at = calloc(count, sizeof(*state.retry_at));
    state.failures = calloc(count, sizeof(*state.failures));
    state.handoffs = calloc(count, sizeof(*state.handoffs));
    if (state.order == NULL || state.receivers == NULL ||
        state.cursor == NULL || state.retry_at == NULL ||
        state.failures == NULL || state.handoffs == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < ring->node_count; i++)
        state.cursor[i] = ring_mix64(i + 1);
    if ((rc = fill_empty(ring, zones, jitter)) < 0)
        goto out;
    /* direct moves first; when none is left anywhere, retry every donor
     * once, then try chains of two */
    for (;;) {
        if (balance_step(ring, zones, &state, STEP_DIRECT))
            continue;
        if (swept_at != state.moves) {
            swept_at = state.moves;
            if (balance_step(ring, zones, &state, STEP_DIRECT_ALL))
                continue;
        }
        if (!balance_step(ring, zones, &state, STEP_VIA))
            break;
    }
out:
    free(state.order);
    free(state.receivers);
    free(state.cursor);
    free(state.retry_at);
    free(state.failures);
    free(state.handoffs);
    return rc;
}

/* Empties slots of nodes that may not hold any, and rule-breaking ones. */
static void
clear_invalid_slots(struct cairn_ring *ring, const struct ring_zones *zones)
{
    for (uint32_t p = 0; p < ring->partitions; p++) {
        uint16_t *row = ring->table + (size_t)p * ring->replicas;

        for (unsigned r = 0; r < ring->replicas; r++) {
            uint16_t node = row[r];

            row[r] = CAIRN_RING_NODE_NONE;
            if (node != CAIRN_RING_NODE_NONE &&
                ring_slot_allowed(ring, zones, row, r, node))
                row[r] = node;
        }
    }
    ring_count_slots(ring);
}

static void
count_moves(const struct cairn_ring *ring, const uint16_t *before,
            struct cairn_ring_rebalance_stats *stats)
{
    for (uint32_t p = 0; p < ring->partitions; p++) {
        const uint16_t *row = ring->table + (size_t)p * ring->replicas;
        const uint16_t *old = before + (size_t)p * ring->replicas;
        uint64_t moved = 0;

        for (unsigned r = 0; r < ring->replicas; r++) {
            bool kept = false;

            for (unsigned s = 0; s < ring->replicas; s++)
                kept = kept || old[s] == row[r];
            moved += !kept;
        }
        stats->slots_moved += moved;
        stats->partitions_changed += moved > 0;
    }
}

/* Drops removed nodes, renumbering the table and the overrides. */
static void
compact_nodes(struct cairn_ring *ring, uint16_t *renumber)
{
    size_t kept = 0, old_count = ring->node_count;
    size_t table_len = (size_t)ring->partitions * ring->replicas;

    for (size_t i = 0; i < ring->node_count; i++) {
        if (ring->nodes[i].removed) {
            free(ring->nodes[i].name);
            free(ring->nodes[i].zone);
            renumber[i] = CAIRN_RING_NODE_NONE;
            continue;
        }
        renumber[i] = (uint16_t)kept;
        ring->nodes[kept++] = ring->nodes[i];
    }
    ring->node_count = kept;
    for (size_t i = 0; i < table_len; i++) {
        uint16_t node = ring->table[i];

        ring->table[i] =
            node < old_count ? renumber[node] : CAIRN_RING_NODE_NONE;
    }
    for (size_t i = 0; i < ring->override_count; i++) {
        for (unsigned r = 0; r < ring->replicas; r++) {
            uint16_t *node = &ring->overrides[i].nodes[r];

            *node = *node < old_count ? renumber[*node] : CAIRN_RING_NODE_NONE;
        }
    }
}

/* Keeps only overrides whose nodes still exist, may hold data and obey. */
static int
prune_overrides(struct cairn_ring *ring, const struct ring_zones *zones,
                uint64_t *dropped)
{
    size_t kept = 0;

    for (size_t i = 0; i < ring->override_count; i++) {
        struct ring_override *entry = &ring->overrides[i];
        bool valid = true;

        for (unsigned r = 0; r < ring->replicas && valid; r++)
            valid = entry->nodes[r] < ring->node_count;
        if (valid && ring_row_valid(ring, zones, entry->nodes)) {
            ring->overrides[kept++] = *entry;
            continue;
        }
        free(entry->userid);
        (*dropped)++;
    }
    ring->override_count = kept;
    return ring_override_reindex(ring);
}

int
cairn_ring_rebalance(struct cairn_ring *ring,
                     struct cairn_ring_rebalance_stats *stats)
{
    struct cairn_ring_rebalance_stats local = {0};
    struct ring_zones zones = {0};
    uint16_t *before = NULL, *renumber = NULL;
    size_t table_bytes =
        (size_t)ring->partitions * ring->replicas * sizeof(*ring->table);
    int rc;

    if ((rc = ring_zones_init(ring, &zones)) < 0)
        goto out;
    if (zones.eligible < ring->replicas) {
        rc = CAIRN_EINVAL;
        goto out;
    }
    before = malloc(table_bytes);
    renumber = malloc((ring->node_count + 1) * sizeof(*renumber));
    if (before == NULL || renumber == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    memcpy(before, ring->table, table_bytes);
    if ((rc = ring_update_shares(ring, &zones)) < 0)
        goto out;
    clear_invalid_slots(ring, &zones);
    if ((rc = ring_assign(ring, &zones, false)) < 0) {
        memcpy(ring->table, before, table_bytes);
        ring_count_slots(ring);
        goto out;
    }
    count_moves(ring, before, &local);
    compact_nodes(ring, renumber);
    ring_zones_release(&zones);
    if ((rc = ring_zones_init(ring, &zones)) < 0)
        goto out;
    if ((rc = prune_overrides(ring, &zones, &local.overrides_dropped)) < 0)
        goto out;
    local.balance = cairn_ring_balance(ring);
    if (stats != NULL)
        *stats = local;
out:
    ring_zones_release(&zones);
    free(before);
    free(renumber);
    return rc;
}
