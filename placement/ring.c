/*
 * ring.c - the ring object: hashing, life cycle, accessors, lookup, staged
 * node changes and the override table.
 */
#include "common.h"
#include "placement_int.h"

#include <stdlib.h>
#include <string.h>

uint64_t
ring_mix64(uint64_t value)
{
    value ^= value >> 33;
    value *= 0xff51afd7ed558ccdULL;
    value ^= value >> 33;
    value *= 0xc4ceb9fe1a85ec53ULL;
    value ^= value >> 33;
    return value;
}

uint64_t
cairn_ring_hash(const char *userid, size_t len)
{
    const unsigned char *bytes = (const unsigned char *)userid;
    uint64_t hash = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++) {
        hash ^= bytes[i];
        hash *= 0x100000001b3ULL;
    }
    return ring_mix64(hash);
}

bool
ring_name_valid(const char *name)
{
    size_t len;

    if (name == NULL)
        return false;
    len = strlen(name);
    if (len == 0 || len > CAIRN_RING_MAX_NAME)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (name[i] <= 0x20 || name[i] >= 0x7f)
            return false;
    }
    return true;
}

bool
ring_node_eligible(const struct ring_node *node)
{
    return node->weight > 0 && !node->removed;
}

int
ring_alloc(const char *destination, unsigned replicas, unsigned partition_power,
           struct cairn_ring **out)
{
    struct cairn_ring *ring = NULL;
    int rc = CAIRN_OK;

    *out = NULL;
    if (!ring_name_valid(destination) || replicas < 1 ||
        replicas > CAIRN_RING_MAX_REPLICAS ||
        partition_power < CAIRN_RING_MIN_PARTITION_POWER ||
        partition_power > CAIRN_RING_MAX_PARTITION_POWER)
        return CAIRN_EINVAL;
    if ((ring = calloc(1, sizeof(*ring))) == NULL)
        return CAIRN_ENOMEM;
    ring->epoch = 1;
    ring->replicas = replicas;
    ring->partition_power = partition_power;
    ring->partitions = (uint32_t)1 << partition_power;
    ring->destination = strdup(destination);
    ring->table =
        malloc((size_t)ring->partitions * replicas * sizeof(*ring->table));
    if (ring->destination == NULL || ring->table == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < (size_t)ring->partitions * replicas; i++)
        ring->table[i] = CAIRN_RING_NODE_NONE;
    *out = ring;
    ring = NULL;
out:
    cairn_ring_free(ring);
    return rc;
}

int
ring_push_node(struct cairn_ring *ring, const char *name, uint32_t weight,
               const char *zone)
{
    struct ring_node *node;

    if (!ring_name_valid(name) || !ring_name_valid(zone) ||
        weight > CAIRN_RING_MAX_WEIGHT)
        return CAIRN_EINVAL;
    if (ring->node_count >= CAIRN_RING_MAX_NODES)
        return CAIRN_ETOOBIG;
    if (ring->node_count == ring->node_cap) {
        size_t cap = ring->node_cap ? ring->node_cap * 2 : 16;
        struct ring_node *grown =
            realloc(ring->nodes, cap * sizeof(*ring->nodes));

        if (grown == NULL)
            return CAIRN_ENOMEM;
        ring->nodes = grown;
        ring->node_cap = cap;
    }
    node = &ring->nodes[ring->node_count];
    memset(node, 0, sizeof(*node));
    node->name = strdup(name);
    node->zone = strdup(zone);
    node->weight = weight;
    if (node->name == NULL || node->zone == NULL) {
        free(node->name);
        free(node->zone);
        return CAIRN_ENOMEM;
    }
    ring->node_count++;
    return CAIRN_OK;
}

int
cairn_ring_new(const char *destination, unsigned replicas,
               unsigned partition_power,
               const struct cairn_ring_node_spec *nodes, size_t count,
               struct cairn_ring **out)
{
    struct cairn_ring *ring = NULL;
    struct ring_zones zones = {0};
    int rc;

    *out = NULL;
    if (partition_power == 0)
        partition_power = CAIRN_RING_DEFAULT_PARTITION_POWER;
    if ((rc = ring_alloc(destination, replicas, partition_power, &ring)) < 0)
        goto out;
    for (size_t i = 0; i < count; i++) {
        size_t existing;

        if (cairn_ring_node_find(ring, nodes[i].name, &existing) == 0) {
            rc = CAIRN_EEXIST;
            goto out;
        }
        if ((rc = ring_push_node(ring, nodes[i].name, nodes[i].weight,
                                 nodes[i].zone)) < 0)
            goto out;
    }
    if ((rc = ring_zones_init(ring, &zones)) < 0)
        goto out;
    if ((rc = ring_update_shares(ring, &zones)) < 0)
        goto out;
    if ((rc = ring_assign(ring, &zones, true)) < 0)
        goto out;
    *out = ring;
    ring = NULL;
out:
    ring_zones_release(&zones);
    cairn_ring_free(ring);
    return rc;
}

void
cairn_ring_free(struct cairn_ring *ring)
{
    if (ring == NULL)
        return;
    for (size_t i = 0; i < ring->node_count; i++) {
        free(ring->nodes[i].name);
        free(ring->nodes[i].zone);
    }
    for (size_t i = 0; i < ring->override_count; i++)
        free(ring->overrides[i].userid);
    free(ring->nodes);
    free(ring->overrides);
    free(ring->override_index);
    free(ring->table);
    free(ring->destination);
    free(ring);
}

int
cairn_ring_clone(const struct cairn_ring *ring, struct cairn_ring **out)
{
    struct cairn_ring *copy = NULL;
    size_t table_len = (size_t)ring->partitions * ring->replicas;
    int rc;

    *out = NULL;
    if ((rc = ring_alloc(ring->destination, ring->replicas,
                         ring->partition_power, &copy)) < 0)
        goto out;
    copy->epoch = ring->epoch;
    memcpy(copy->table, ring->table, table_len * sizeof(*ring->table));
    for (size_t i = 0; i < ring->node_count; i++) {
        const struct ring_node *node = &ring->nodes[i];

        if ((rc = ring_push_node(copy, node->name, node->weight, node->zone)) <
            0)
            goto out;
        copy->nodes[i].removed = node->removed;
        copy->nodes[i].slots = node->slots;
        copy->nodes[i].ideal_fp = node->ideal_fp;
    }
    for (size_t i = 0; i < ring->override_count; i++) {
        const struct ring_override *entry = &ring->overrides[i];

        if ((rc = ring_override_put(copy, entry->userid, entry->len,
                                    entry->nodes)) < 0)
            goto out;
    }
    *out = copy;
    copy = NULL;
out:
    cairn_ring_free(copy);
    return rc;
}

const char *
cairn_ring_destination(const struct cairn_ring *ring)
{
    return ring->destination;
}

uint64_t
cairn_ring_epoch(const struct cairn_ring *ring)
{
    return ring->epoch;
}

void
cairn_ring_set_epoch(struct cairn_ring *ring, uint64_t epoch)
{
    ring->epoch = epoch;
}

unsigned
cairn_ring_replicas(const struct cairn_ring *ring)
{
    return ring->replicas;
}

unsigned
cairn_ring_partition_power(const struct cairn_ring *ring)
{
    return ring->partition_power;
}

size_t
cairn_ring_node_count(const struct cairn_ring *ring)
{
    return ring->node_count;
}

int
cairn_ring_node_info(const struct cairn_ring *ring, size_t index,
                     struct cairn_ring_node_info *info)
{
    const struct ring_node *node;

    if (index >= ring->node_count)
        return CAIRN_ENOENT;
    node = &ring->nodes[index];
    info->name = node->name;
    info->zone = node->zone;
    info->weight = node->weight;
    info->slots = node->slots;
    info->ideal = (double)node->ideal_fp / (double)SHARE_ONE;
    info->removed = node->removed;
    return CAIRN_OK;
}

int
cairn_ring_node_find(const struct cairn_ring *ring, const char *name,
                     size_t *index)
{
    for (size_t i = 0; i < ring->node_count; i++) {
        if (strcmp(ring->nodes[i].name, name) == 0) {
            *index = i;
            return CAIRN_OK;
        }
    }
    return CAIRN_ENOENT;
}

double
cairn_ring_balance(const struct cairn_ring *ring)
{
    uint64_t total_slots = 0, total_weight = 0;
    double worst = 0.0, mean;

    for (size_t i = 0; i < ring->node_count; i++) {
        if (!ring_node_eligible(&ring->nodes[i]))
            continue;
        total_slots += ring->nodes[i].slots;
        total_weight += ring->nodes[i].weight;
    }
    if (total_slots == 0 || total_weight == 0)
        return 0.0;
    mean = (double)total_slots / (double)total_weight;
    for (size_t i = 0; i < ring->node_count; i++) {
        const struct ring_node *node = &ring->nodes[i];
        double per_weight;

        if (!ring_node_eligible(node))
            continue;
        per_weight = (double)node->slots / (double)node->weight;
        if (per_weight / mean > worst)
            worst = per_weight / mean;
    }
    return worst;
}

static bool
overrides_equal(const struct cairn_ring *a, const struct cairn_ring *b)
{
    if (a->override_count != b->override_count)
        return false;
    for (size_t i = 0; i < a->override_count; i++) {
        const struct ring_override *entry = &a->overrides[i];
        const struct ring_override *other =
            ring_override_find(b, entry->hash, entry->userid, entry->len);

        if (other == NULL || memcmp(entry->nodes, other->nodes,
                                    a->replicas * sizeof(entry->nodes[0])) != 0)
            return false;
    }
    return true;
}

bool
cairn_ring_equal(const struct cairn_ring *a, const struct cairn_ring *b)
{
    if (strcmp(a->destination, b->destination) != 0 || a->epoch != b->epoch ||
        a->replicas != b->replicas ||
        a->partition_power != b->partition_power ||
        a->node_count != b->node_count)
        return false;
    for (size_t i = 0; i < a->node_count; i++) {
        const struct ring_node *x = &a->nodes[i], *y = &b->nodes[i];

        if (strcmp(x->name, y->name) != 0 || strcmp(x->zone, y->zone) != 0 ||
            x->weight != y->weight || x->removed != y->removed)
            return false;
    }
    if (memcmp(a->table, b->table,
               (size_t)a->partitions * a->replicas * sizeof(*a->table)) != 0)
        return false;
    return overrides_equal(a, b);
}

uint32_t
cairn_ring_partition(const struct cairn_ring *ring, uint64_t hash)
{
    return (uint32_t)(hash >> (64 - ring->partition_power));
}

void
cairn_ring_partition_nodes(const struct cairn_ring *ring, uint32_t partition,
                           uint16_t *nodes)
{
    memcpy(nodes, ring->table + (size_t)partition * ring->replicas,
           ring->replicas * sizeof(*nodes));
}

void
cairn_ring_lookup(const struct cairn_ring *ring, const char *userid, size_t len,
                  uint16_t *nodes)
{
    uint64_t hash = cairn_ring_hash(userid, len);

    if (ring->override_count > 0) {
        const struct ring_override *entry =
            ring_override_find(ring, hash, userid, len);

        if (entry != NULL) {
            memcpy(nodes, entry->nodes, ring->replicas * sizeof(*nodes));
            return;
        }
    }
    cairn_ring_partition_nodes(ring, cairn_ring_partition(ring, hash), nodes);
}

/* --- staged changes --- */

int
cairn_ring_add_node(struct cairn_ring *ring,
                    const struct cairn_ring_node_spec *spec)
{
    size_t existing;

    if (cairn_ring_node_find(ring, spec->name, &existing) == 0)
        return CAIRN_EEXIST;
    return ring_push_node(ring, spec->name, spec->weight, spec->zone);
}

int
cairn_ring_remove_node(struct cairn_ring *ring, const char *name)
{
    size_t index;
    int rc;

    if ((rc = cairn_ring_node_find(ring, name, &index)) < 0)
        return rc;
    ring->nodes[index].removed = true;
    return CAIRN_OK;
}

int
cairn_ring_set_weight(struct cairn_ring *ring, const char *name,
                      uint32_t weight)
{
    size_t index;
    int rc;

    if (weight > CAIRN_RING_MAX_WEIGHT)
        return CAIRN_EINVAL;
    if ((rc = cairn_ring_node_find(ring, name, &index)) < 0)
        return rc;
    ring->nodes[index].weight = weight;
    return CAIRN_OK;
}

int
cairn_ring_set_zone(struct cairn_ring *ring, const char *name, const char *zone)
{
    size_t index;
    char *copy;
    int rc;

    if (!ring_name_valid(zone))
        return CAIRN_EINVAL;
    if ((rc = cairn_ring_node_find(ring, name, &index)) < 0)
        return rc;
    if ((copy = strdup(zone)) == NULL)
        return CAIRN_ENOMEM;
    free(ring->nodes[index].zone);
    ring->nodes[index].zone = copy;
    return CAIRN_OK;
}

/* --- overrides --- */

size_t
cairn_ring_override_count(const struct cairn_ring *ring)
{
    return ring->override_count;
}

const struct ring_override *
ring_override_find(const struct cairn_ring *ring, uint64_t hash,
                   const char *userid, size_t len)
{
    size_t mask = ring->override_index_size - 1;

    if (ring->override_index_size == 0)
        return NULL;
    for (size_t at = (size_t)hash & mask;; at = (at + 1) & mask) {
        const struct ring_index_slot *slot = &ring->override_index[at];
        const struct ring_override *entry;

        if (slot->entry == 0)
            return NULL;
        if (slot->tag != (uint32_t)(hash >> 32))
            continue;
        entry = &ring->overrides[slot->entry - 1];
        if (entry->hash == hash && entry->len == len &&
            memcmp(entry->userid, userid, len) == 0)
            return entry;
    }
}

static void
index_insert(struct cairn_ring *ring, size_t entry_index)
{
    size_t mask = ring->override_index_size - 1;
    uint64_t hash = ring->overrides[entry_index].hash;
    size_t at = (size_t)hash & mask;

    while (ring->override_index[at].entry != 0)
        at = (at + 1) & mask;
    ring->override_index[at].entry = (uint32_t)(entry_index + 1);
    ring->override_index[at].tag = (uint32_t)(hash >> 32);
}

/* Rebuilds the index with room for at least wanted entries. */
static int
index_resize(struct cairn_ring *ring, size_t wanted)
{
    size_t size = 16;
    struct ring_index_slot *index;

    while (size < wanted * 2)
        size *= 2;
    if ((index = calloc(size, sizeof(*index))) == NULL)
        return CAIRN_ENOMEM;
    free(ring->override_index);
    ring->override_index = index;
    ring->override_index_size = size;
    for (size_t i = 0; i < ring->override_count; i++)
        index_insert(ring, i);
    return CAIRN_OK;
}

int
ring_override_reindex(struct cairn_ring *ring)
{
    return index_resize(ring, ring->override_count);
}

static bool
override_nodes_valid(const struct cairn_ring *ring, const uint16_t *nodes)
{
    struct ring_zones zones = {0};
    bool valid;

    for (unsigned r = 0; r < ring->replicas; r++) {
        if (nodes[r] >= ring->node_count ||
            !ring_node_eligible(&ring->nodes[nodes[r]]))
            return false;
    }
    if (ring_zones_init(ring, &zones) < 0)
        return false;
    valid = ring_row_valid(ring, &zones, nodes);
    ring_zones_release(&zones);
    return valid;
}

static int
override_grow(struct cairn_ring *ring)
{
    if (ring->override_count >= CAIRN_RING_MAX_OVERRIDES)
        return CAIRN_ETOOBIG;
    if (ring->override_count == ring->override_cap) {
        size_t cap = ring->override_cap ? ring->override_cap * 2 : 64;
        struct ring_override *grown =
            realloc(ring->overrides, cap * sizeof(*ring->overrides));

        if (grown == NULL)
            return CAIRN_ENOMEM;
        ring->overrides = grown;
        ring->override_cap = cap;
    }
    if ((ring->override_count + 1) * 2 > ring->override_index_size)
        return index_resize(ring, ring->override_count + 1);
    return CAIRN_OK;
}

int
ring_override_put(struct cairn_ring *ring, const char *userid, size_t len,
                  const uint16_t *nodes)
{
    uint64_t hash = cairn_ring_hash(userid, len);
    struct ring_override *entry;
    int rc;

    if (len == 0 || len > CAIRN_RING_MAX_NAME ||
        memchr(userid, '\0', len) != NULL)
        return CAIRN_EINVAL;
    entry = (struct ring_override *)ring_override_find(ring, hash, userid, len);
    if (entry == NULL) {
        char *copy;

        if ((rc = override_grow(ring)) < 0)
            return rc;
        if ((copy = malloc(len + 1)) == NULL)
            return CAIRN_ENOMEM;
        memcpy(copy, userid, len);
        copy[len] = '\0';
        entry = &ring->overrides[ring->override_count];
        memset(entry, 0, sizeof(*entry));
        entry->userid = copy;
        entry->len = len;
        entry->hash = hash;
        ring->override_count++;
        index_insert(ring, ring->override_count - 1);
    }
    memcpy(entry->nodes, nodes, ring->replicas * sizeof(*nodes));
    return CAIRN_OK;
}

int
cairn_ring_set_override(struct cairn_ring *ring, const char *userid, size_t len,
                        const uint16_t *nodes)
{
    if (!override_nodes_valid(ring, nodes))
        return CAIRN_EINVAL;
    return ring_override_put(ring, userid, len, nodes);
}

int
cairn_ring_clear_override(struct cairn_ring *ring, const char *userid,
                          size_t len)
{
    const struct ring_override *found =
        ring_override_find(ring, cairn_ring_hash(userid, len), userid, len);
    size_t at;

    if (found == NULL)
        return CAIRN_ENOENT;
    at = (size_t)(found - ring->overrides);
    free(ring->overrides[at].userid);
    ring->overrides[at] = ring->overrides[ring->override_count - 1];
    ring->override_count--;
    return ring_override_reindex(ring);
}

void
cairn_ring_clear_overrides(struct cairn_ring *ring)
{
    for (size_t i = 0; i < ring->override_count; i++)
        free(ring->overrides[i].userid);
    ring->override_count = 0;
    if (ring->override_index != NULL)
        memset(ring->override_index, 0,
               ring->override_index_size * sizeof(*ring->override_index));
}

int
cairn_ring_override_at(const struct cairn_ring *ring, size_t index,
                       const char **userid, const uint16_t **nodes)
{
    if (index >= ring->override_count)
        return CAIRN_ENOENT;
    *userid = ring->overrides[index].userid;
    *nodes = ring->overrides[index].nodes;
    return CAIRN_OK;
}
