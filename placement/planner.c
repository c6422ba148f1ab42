/*
 * planner.c - the size-aware planner: users are very uneven (a few hold
 * most bytes), so hashing balances counts but not bytes. Knowing each
 * user's size, the planner pins users from over-filled nodes to
 * under-filled ones through the ring's override table, heaviest first
 * (first-fit decreasing: big users make big corrections, so few pins).
 */
#include "common.h"
#include "placement_int.h"

#include <stdlib.h>
#include <string.h>

#define DEFAULT_TOLERANCE 0.01

struct plan {
    struct cairn_ring *ring;
    const struct cairn_ring_user *users;
    size_t count;
    struct ring_zones zones;
    uint16_t *rows;  /* count x replicas: where each user lives now */
    bool *moved;     /* users whose row differs from the ring's lookup */
    double *load;    /* per node */
    double *target;  /* per node: its share of the total load */
    size_t *by_size; /* user indices, heaviest first */
    size_t *offsets; /* per node, into members (node_count + 1) */
    size_t *members; /* per node, its users heaviest first */
};

static void
plan_release(struct plan *plan)
{
    ring_zones_release(&plan->zones);
    free(plan->rows);
    free(plan->moved);
    free(plan->load);
    free(plan->target);
    free(plan->by_size);
    free(plan->offsets);
    free(plan->members);
}

static int
heavier_first(const void *a, const void *b, void *context)
{
    const struct cairn_ring_user *users = context;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;

    if (users[x].bytes != users[y].bytes)
        return users[x].bytes > users[y].bytes ? -1 : 1;
    return x < y ? -1 : 1;
}

/* Loads and targets from the rows; returns the max/mean ratio. */
static double
compute_loads(const struct cairn_ring *ring, const uint16_t *rows,
              const struct cairn_ring_user *users, size_t count, double *load,
              double *target)
{
    double total = 0.0, ideal_total = 0.0, worst = 0.0;

    for (size_t i = 0; i < ring->node_count; i++) {
        load[i] = 0.0;
        ideal_total += (double)ring->nodes[i].ideal_fp;
    }
    for (size_t u = 0; u < count; u++) {
        for (unsigned r = 0; r < ring->replicas; r++)
            load[rows[u * ring->replicas + r]] += (double)users[u].bytes;
        total += (double)users[u].bytes * ring->replicas;
    }
    for (size_t i = 0; i < ring->node_count; i++) {
        target[i] = ideal_total > 0.0
                        ? total * (double)ring->nodes[i].ideal_fp / ideal_total
                        : 0.0;
        if (target[i] > 0.0 && load[i] / target[i] > worst)
            worst = load[i] / target[i];
    }
    return worst;
}

static int
compute_rows(const struct cairn_ring *ring, const struct cairn_ring_user *users,
             size_t count, uint16_t *rows)
{
    for (size_t u = 0; u < count; u++) {
        if (users[u].userid == NULL)
            return CAIRN_EINVAL;
        cairn_ring_lookup(ring, users[u].userid, strlen(users[u].userid),
                          rows + u * ring->replicas);
    }
    return CAIRN_OK;
}

int
cairn_ring_measure(const struct cairn_ring *ring,
                   const struct cairn_ring_user *users, size_t count,
                   double *max_over_mean, uint64_t *loads)
{
    uint16_t *rows = malloc((count + 1) * ring->replicas * sizeof(*rows));
    double *load = malloc((ring->node_count + 1) * sizeof(*load));
    double *target = malloc((ring->node_count + 1) * sizeof(*target));
    int rc = CAIRN_OK;

    if (rows == NULL || load == NULL || target == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    if ((rc = compute_rows(ring, users, count, rows)) < 0)
        goto out;
    *max_over_mean = compute_loads(ring, rows, users, count, load, target);
    for (size_t i = 0; loads != NULL && i < ring->node_count; i++)
        loads[i] = (uint64_t)load[i];
out:
    free(rows);
    free(load);
    free(target);
    return rc;
}

/* Per node, the users holding a replica there, heaviest first. */
static int
index_members(struct plan *plan)
{
    size_t replicas = plan->ring->replicas, nodes = plan->ring->node_count;
    size_t *fill = calloc(nodes + 1, sizeof(*fill));

    plan->offsets = calloc(nodes + 1, sizeof(*plan->offsets));
    plan->members =
        malloc((plan->count * replicas + 1) * sizeof(*plan->members));
    if (fill == NULL || plan->offsets == NULL || plan->members == NULL) {
        free(fill);
        return CAIRN_ENOMEM;
    }
    for (size_t i = 0; i < plan->count * replicas; i++)
        plan->offsets[plan->rows[i] + 1]++;
    for (size_t n = 0; n < nodes; n++)
        plan->offsets[n + 1] += plan->offsets[n];
    for (size_t k = 0; k < plan->count; k++) {
        size_t u = plan->by_size[k];

        for (size_t r = 0; r < replicas; r++) {
            uint16_t node = plan->rows[u * replicas + r];

            plan->members[plan->offsets[node] + fill[node]++] = u;
        }
    }
    free(fill);
    return CAIRN_OK;
}

/* The node with the most room left under its limit that may take u. */
static uint16_t
pick_receiver(const struct plan *plan, const uint16_t *row, unsigned slot,
              double bytes, double tolerance)
{
    uint16_t best = CAIRN_RING_NODE_NONE;
    double best_room = 0.0;

    for (size_t i = 0; i < plan->ring->node_count; i++) {
        double room = plan->target[i] * (1.0 + tolerance) - plan->load[i];

        if (room < bytes || room <= best_room ||
            !ring_slot_allowed(plan->ring, &plan->zones, row, slot,
                               (uint16_t)i))
            continue;
        best = (uint16_t)i;
        best_room = room;
    }
    return best;
}

/* Sheds load from donor until it is under its limit; counts new pins. */
static void
relieve(struct plan *plan, uint16_t donor, double tolerance, size_t limit,
        size_t *pinned)
{
    unsigned replicas = plan->ring->replicas;
    double ceiling = plan->target[donor] * (1.0 + tolerance);

    for (size_t k = plan->offsets[donor]; k < plan->offsets[donor + 1]; k++) {
        size_t u = plan->members[k];
        uint16_t *row = plan->rows + u * replicas;
        double bytes = (double)plan->users[u].bytes;
        double excess = plan->load[donor] - plan->target[donor];
        unsigned slot = replicas;
        uint16_t receiver;

        if (plan->load[donor] <= ceiling || *pinned >= limit)
            return;
        for (unsigned r = 0; r < replicas; r++)
            slot = row[r] == donor ? r : slot;
        if (slot == replicas || bytes == 0.0 ||
            bytes > excess + tolerance * plan->target[donor])
            continue;
        receiver = pick_receiver(plan, row, slot, bytes, tolerance);
        if (receiver == CAIRN_RING_NODE_NONE)
            continue;
        row[slot] = receiver;
        plan->load[donor] -= bytes;
        plan->load[receiver] += bytes;
        if (!plan->moved[u])
            (*pinned)++;
        plan->moved[u] = true;
    }
}

static int
by_overload(const void *a, const void *b, void *context)
{
    const struct plan *plan = context;
    uint16_t x = *(const uint16_t *)a, y = *(const uint16_t *)b;
    double rx = plan->target[x] > 0 ? plan->load[x] / plan->target[x] : 0;
    double ry = plan->target[y] > 0 ? plan->load[y] / plan->target[y] : 0;

    if (rx != ry)
        return rx > ry ? -1 : 1;
    return x < y ? -1 : 1;
}

static int
prepare(struct plan *plan)
{
    size_t count = plan->count, replicas = plan->ring->replicas;
    size_t nodes = plan->ring->node_count;
    int rc;

    if ((rc = ring_zones_init(plan->ring, &plan->zones)) < 0)
        return rc;
    plan->rows = malloc((count + 1) * replicas * sizeof(*plan->rows));
    plan->moved = calloc(count + 1, sizeof(*plan->moved));
    plan->load = malloc((nodes + 1) * sizeof(*plan->load));
    plan->target = malloc((nodes + 1) * sizeof(*plan->target));
    plan->by_size = malloc((count + 1) * sizeof(*plan->by_size));
    if (plan->rows == NULL || plan->moved == NULL || plan->load == NULL ||
        plan->target == NULL || plan->by_size == NULL)
        return CAIRN_ENOMEM;
    if ((rc = compute_rows(plan->ring, plan->users, count, plan->rows)) < 0)
        return rc;
    for (size_t u = 0; u < count; u++) {
        const char *userid = plan->users[u].userid;
        size_t len = strlen(userid);

        /* users pinned already count as pinned (keep_existing) */
        plan->moved[u] =
            plan->ring->override_count > 0 &&
            ring_override_find(plan->ring, cairn_ring_hash(userid, len), userid,
                               len) != NULL;
        plan->by_size[u] = u;
    }
    qsort_r(plan->by_size, count, sizeof(*plan->by_size), heavier_first,
            (void *)plan->users);
    return index_members(plan);
}

/* Writes the moved users' rows into the override table. */
static int
commit_pins(struct plan *plan)
{
    unsigned replicas = plan->ring->replicas;
    int rc = CAIRN_OK;

    for (size_t u = 0; u < plan->count && rc == 0; u++) {
        const char *userid = plan->users[u].userid;
        uint16_t hashed[CAIRN_RING_MAX_REPLICAS];
        size_t len = strlen(userid);
        uint64_t hash = cairn_ring_hash(userid, len);

        if (!plan->moved[u])
            continue;
        cairn_ring_partition_nodes(
            plan->ring, cairn_ring_partition(plan->ring, hash), hashed);
        if (memcmp(hashed, plan->rows + u * replicas,
                   replicas * sizeof(*hashed)) == 0) {
            if (ring_override_find(plan->ring, hash, userid, len) != NULL)
                rc = cairn_ring_clear_override(plan->ring, userid, len);
            continue;
        }
        rc = ring_override_put(plan->ring, userid, len,
                               plan->rows + u * replicas);
    }
    return rc;
}

int
cairn_ring_plan(struct cairn_ring *ring, const struct cairn_ring_user *users,
                size_t count, const struct cairn_ring_plan_options *options,
                struct cairn_ring_plan_stats *stats)
{
    struct plan plan = {.ring = ring, .users = users, .count = count};
    struct cairn_ring_plan_stats local = {0};
    double tolerance = DEFAULT_TOLERANCE, largest = 0.0, widest = 0.0;
    size_t limit = CAIRN_RING_MAX_OVERRIDES, pinned = 0;
    uint16_t *order = NULL;
    int rc;

    if (options != NULL && options->tolerance > 0.0)
        tolerance = options->tolerance;
    if (options != NULL && options->max_overrides > 0)
        limit = options->max_overrides;
    if (options == NULL || !options->keep_existing)
        cairn_ring_clear_overrides(ring);
    if ((rc = prepare(&plan)) < 0)
        goto out;
    local.before =
        compute_loads(ring, plan.rows, users, count, plan.load, plan.target);
    if ((order = malloc((ring->node_count + 1) * sizeof(*order))) == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < ring->node_count; i++)
        order[i] = (uint16_t)i;
    qsort_r(order, ring->node_count, sizeof(*order), by_overload, &plan);
    pinned = ring->override_count;
    for (size_t i = 0; i < ring->node_count; i++)
        relieve(&plan, order[i], tolerance, limit, &pinned);
    if ((rc = commit_pins(&plan)) < 0)
        goto out;
    local.after =
        compute_loads(ring, plan.rows, users, count, plan.load, plan.target);
    for (size_t i = 0; i < ring->node_count; i++)
        widest = plan.target[i] > widest ? plan.target[i] : widest;
    if (count > 0)
        largest = (double)users[plan.by_size[0]].bytes;
    local.lower_bound =
        widest > 0.0 && largest / widest > 1.0 ? largest / widest : 1.0;
    local.pinned = ring->override_count;
    if (stats != NULL)
        *stats = local;
out:
    free(order);
    plan_release(&plan);
    return rc;
}
