/*
 * bench_ring.c - prints the placement figures the ring is judged by:
 * balance from hashing alone and after the planner, weight
 * proportionality, users moved by adding and removing a node against the
 * optimum, replica and zone rules, byte balance with heavy-tailed sizes,
 * lookup rate, build and diff time. Exits non-zero only on a correctness
 * violation (replica rules, a user moving between two nodes that stay);
 * times are printed, never asserted.
 */
#include "common.h"
#include "placement.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define USERS 1000000
#define LOOKUPS 20000000

static int violations;

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t
next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);

    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double
uniform(uint64_t *state)
{
    return ((double)(next_random(state) >> 11) + 0.5) / 9007199254740992.0;
}

/* Synthetic userids over a few domains, sizes 1 (counting users). */
static struct cairn_ring_user *
make_users(size_t count, char **storage)
{
    struct cairn_ring_user *users = calloc(count, sizeof(*users));
    char *names = malloc(count * 64);

    if (users == NULL || names == NULL) {
        fprintf(stderr, "bench_ring: out of memory\n");
        exit(2);
    }
    for (size_t i = 0; i < count; i++) {
        char *name = names + i * 64;

        snprintf(name, 64, "user%07zu@example%zu.org", i, i % 7);
        users[i].userid = name;
        users[i].bytes = 1;
    }
    *storage = names;
    return users;
}

static struct cairn_ring *
make_ring(size_t count, unsigned replicas, size_t zones,
          const uint32_t *weights, size_t weight_count)
{
    struct cairn_ring_node_spec *specs = calloc(count, sizeof(*specs));
    char(*names)[32] = calloc(count, sizeof(*names));
    char(*zone_names)[32] = calloc(count, sizeof(*zone_names));
    struct cairn_ring *ring = NULL;
    int rc;

    for (size_t i = 0; i < count; i++) {
        snprintf(names[i], sizeof(names[i]), "node%03zu", i);
        snprintf(zone_names[i], sizeof(zone_names[i]), "zone%zu",
                 zones ? i % zones : i);
        specs[i].name = names[i];
        specs[i].zone = zone_names[i];
        specs[i].weight = weights ? weights[i % weight_count] : 100;
    }
    rc = cairn_ring_new("backup", replicas, 0, specs, count, &ring);
    if (rc < 0) {
        fprintf(stderr, "bench_ring: ring: %s\n", cairn_strerror(rc));
        exit(2);
    }
    free(specs);
    free(names);
    free(zone_names);
    return ring;
}

static double
measure(const struct cairn_ring *ring, const struct cairn_ring_user *users,
        size_t count)
{
    double ratio = 0.0;

    if (cairn_ring_measure(ring, users, count, &ratio, NULL) < 0)
        exit(2);
    return ratio;
}

static void
users_balance(const struct cairn_ring_user *users, size_t nodes)
{
    struct cairn_ring *ring = make_ring(nodes, 1, 0, NULL, 0);
    struct cairn_ring_plan_stats stats;
    struct cairn_ring_plan_options options = {.tolerance = 0.01};
    double plain = measure(ring, users, USERS);

    cairn_ring_plan(ring, users, USERS, &options, &stats);
    printf("users %7d on %3zu equal nodes: max/mean hashing alone %.4f, "
           "after planner %.4f (%zu users pinned, %.3f%%)\n",
           USERS, nodes, plain, stats.after, stats.pinned,
           100.0 * (double)stats.pinned / USERS);
    cairn_ring_free(ring);
}

static void
weights_balance(const struct cairn_ring_user *users, size_t nodes)
{
    static const uint32_t weights[] = {100, 200, 400};
    struct cairn_ring *ring = make_ring(nodes, 1, 0, weights, 3);
    uint64_t *loads = calloc(nodes, sizeof(*loads));
    double worst = 0.0, ratio;
    double per_class[3] = {0};

    cairn_ring_measure(ring, users, USERS, &ratio, loads);
    for (size_t i = 0; i < nodes; i++) {
        double share =
            (double)USERS * weights[i % 3] / (700.0 * (double)nodes / 3.0);
        double error = fabs((double)loads[i] / share - 1.0);

        per_class[i % 3] += (double)loads[i];
        worst = error > worst ? error : worst;
    }
    printf("weights 1:2:4 on %3zu nodes: users per weight class %.0f : "
           "%.0f : %.0f = 1 : %.4f : %.4f; worst node off its share "
           "by %.2f%% hashing alone",
           nodes, per_class[0], per_class[1], per_class[2],
           per_class[1] / per_class[0], per_class[2] / per_class[0],
           100.0 * worst);
    {
        struct cairn_ring_plan_options options = {.tolerance = 0.01};
        struct cairn_ring_plan_stats stats;

        cairn_ring_plan(ring, users, USERS, &options, &stats);
        printf(", max/mean per weight %.4f -> %.4f after planner (%zu "
               "pinned)\n",
               stats.before, stats.after, stats.pinned);
    }
    free(loads);
    cairn_ring_free(ring);
}

struct move_check {
    const struct cairn_ring *old_ring;
    const struct cairn_ring *new_ring;
    const char *changed; /* the node added or removed */
    bool removal;
    uint64_t bad;
};

static bool
in_names(const struct cairn_ring *ring, const uint16_t *nodes, const char *name)
{
    struct cairn_ring_node_info info;

    for (unsigned r = 0; r < cairn_ring_replicas(ring); r++) {
        cairn_ring_node_info(ring, nodes[r], &info);
        if (strcmp(info.name, name) == 0)
            return true;
    }
    return false;
}

/* Every node gained by a user must be the one added (or, on removal, the
 * user must have lived on the node removed). */
static int
check_move(void *context, const struct cairn_ring_move *move)
{
    struct move_check *check = context;
    struct cairn_ring_node_info info;

    if (check->removal) {
        check->bad += !in_names(check->old_ring, move->from, check->changed);
        return 0;
    }
    for (unsigned r = 0; r < cairn_ring_replicas(check->new_ring); r++) {
        cairn_ring_node_info(check->new_ring, move->to[r], &info);
        if (strcmp(info.name, check->changed) != 0 &&
            !in_names(check->old_ring, move->from, info.name))
            check->bad++;
    }
    return 0;
}

static void
moves(const struct cairn_ring_user *users, size_t nodes, unsigned replicas)
{
    struct cairn_ring *old_ring = make_ring(nodes, replicas, 0, NULL, 0);
    struct cairn_ring *grown = NULL, *shrunk = NULL;
    struct cairn_ring_node_spec spec = {"added", 100, "zone-added"};
    struct cairn_ring_diff_stats diff;
    struct move_check check = {old_ring, NULL, "added", false, 0};
    struct cairn_ring_node_info info;
    double optimum = 1.0 / (double)(nodes + 1), started;

    cairn_ring_clone(old_ring, &grown);
    cairn_ring_add_node(grown, &spec);
    cairn_ring_rebalance(grown, NULL);
    check.new_ring = grown;
    started = now();
    cairn_ring_diff_users(old_ring, grown, users, USERS, check_move, &check,
                          &diff);
    printf("add node %zu -> %zu (R=%u): users moved %.4f%% (optimum "
           "%.4f%%) = %.4f x optimum; partitions changed %llu/%llu; moves "
           "between staying nodes: %llu; diff of %d users took %.3f s\n",
           nodes, nodes + 1, replicas,
           100.0 * (double)diff.replicas_moved / USERS / replicas,
           100.0 * optimum,
           (double)diff.replicas_moved / USERS / replicas / optimum,
           (unsigned long long)diff.partitions_changed,
           (unsigned long long)diff.partitions, (unsigned long long)check.bad,
           USERS, now() - started);
    violations += check.bad > 0;

    cairn_ring_node_info(old_ring, nodes / 2, &info);
    cairn_ring_clone(old_ring, &shrunk);
    cairn_ring_remove_node(shrunk, info.name);
    cairn_ring_rebalance(shrunk, NULL);
    check = (struct move_check){old_ring, shrunk, info.name, true, 0};
    cairn_ring_diff_users(old_ring, shrunk, users, USERS, check_move, &check,
                          &diff);
    printf("remove a node %zu -> %zu (R=%u): users moved %.4f%% (the "
           "node's share %.4f%%); users moved that were not on it: %llu\n",
           nodes, nodes - 1, replicas,
           100.0 * (double)diff.users_changed / USERS,
           100.0 * (double)info.slots /
               (double)(1u << cairn_ring_partition_power(old_ring)),
           (unsigned long long)check.bad);
    violations += check.bad > 0;
    cairn_ring_free(old_ring);
    cairn_ring_free(grown);
    cairn_ring_free(shrunk);
}

/* Counts partitions and overrides that break the replica rules. */
static uint64_t
rule_breaks(const struct cairn_ring *ring)
{
    unsigned replicas = cairn_ring_replicas(ring);
    size_t nodes = cairn_ring_node_count(ring), zone_count = 0;
    uint32_t partitions = 1u << cairn_ring_partition_power(ring);
    const char *zones[256];
    uint64_t bad = 0;

    for (size_t i = 0; i < nodes; i++) {
        struct cairn_ring_node_info info;
        bool seen = false;

        cairn_ring_node_info(ring, i, &info);
        if (info.weight == 0)
            continue;
        for (size_t z = 0; z < zone_count && !seen; z++)
            seen = strcmp(zones[z], info.zone) == 0;
        if (!seen && zone_count < 256)
            zones[zone_count++] = info.zone;
    }
    for (size_t k = 0; k < partitions + cairn_ring_override_count(ring); k++) {
        uint16_t row[CAIRN_RING_MAX_REPLICAS];
        const uint16_t *pinned;
        const char *userid;

        if (k < partitions) {
            cairn_ring_partition_nodes(ring, (uint32_t)k, row);
        } else {
            cairn_ring_override_at(ring, k - partitions, &userid, &pinned);
            memcpy(row, pinned, replicas * sizeof(*row));
        }
        for (unsigned a = 0; a < replicas; a++) {
            for (unsigned b = a + 1; b < replicas; b++) {
                struct cairn_ring_node_info x, y;

                cairn_ring_node_info(ring, row[a], &x);
                cairn_ring_node_info(ring, row[b], &y);
                bad += row[a] == row[b] ||
                       (zone_count >= replicas && strcmp(x.zone, y.zone) == 0);
            }
        }
    }
    return bad;
}

/* Random rings, changed at random, checked after every rebalance. */
static void
random_rules(void)
{
    uint64_t state = 42, rings = 0, checked = 0, bad = 0;

    for (int round = 0; round < 60; round++) {
        unsigned replicas = 1 + (unsigned)(next_random(&state) % 4);
        size_t count = replicas + (size_t)(next_random(&state) % 30);
        size_t zones = 1 + (size_t)(next_random(&state) % 6);
        struct cairn_ring_node_spec specs[64];
        char names[64][32], zone_names[64][32];
        struct cairn_ring *ring = NULL;

        for (size_t i = 0; i < count; i++) {
            snprintf(names[i], sizeof(names[i]), "n%zu", i);
            snprintf(zone_names[i], sizeof(zone_names[i]), "z%u",
                     (unsigned)(next_random(&state) % zones));
            specs[i] = (struct cairn_ring_node_spec){
                names[i], 1 + (uint32_t)(next_random(&state) % 1000),
                zone_names[i]};
        }
        if (cairn_ring_new("random", replicas, 10, specs, count, &ring) < 0)
            continue;
        rings++;
        bad += rule_breaks(ring);
        checked++;
        for (int step = 0; step < 6; step++) {
            size_t pick =
                (size_t)(next_random(&state) % cairn_ring_node_count(ring));
            struct cairn_ring_node_info info;
            char name[32], zone[32];

            cairn_ring_node_info(ring, pick, &info);
            snprintf(name, sizeof(name), "m%d_%d", round, step);
            snprintf(zone, sizeof(zone), "z%u",
                     (unsigned)(next_random(&state) % zones));
            switch (next_random(&state) % 4) {
            case 0:
                cairn_ring_add_node(
                    ring, &(struct cairn_ring_node_spec){name, 500, zone});
                break;
            case 1:
                cairn_ring_remove_node(ring, info.name);
                break;
            case 2:
                cairn_ring_set_weight(
                    ring, info.name,
                    1 + (uint32_t)(next_random(&state) % 1000));
                break;
            default:
                cairn_ring_set_zone(ring, info.name, zone);
            }
            if (cairn_ring_rebalance(ring, NULL) == 0) {
                bad += rule_breaks(ring);
                checked++;
            }
        }
        cairn_ring_free(ring);
    }
    printf("replica rules on %llu random rings (R 1-4, 1-6 zones, random "
           "weights), %llu states checked after changes: %llu "
           "violations\n",
           (unsigned long long)rings, (unsigned long long)checked,
           (unsigned long long)bad);
    violations += bad > 0;
}

static void
replica_rules(const struct cairn_ring_user *users)
{
    static const struct {
        size_t nodes;
        unsigned replicas;
        size_t zones;
    } cases[] = {{10, 2, 0}, {10, 3, 0}, {100, 3, 0}, {12, 2, 4},
                 {12, 3, 4}, {12, 3, 3}, {30, 3, 3},  {12, 3, 2}};

    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct cairn_ring *ring = make_ring(cases[c].nodes, cases[c].replicas,
                                            cases[c].zones, NULL, 0);
        struct cairn_ring_plan_options options = {.tolerance = 0.01};
        struct cairn_ring_plan_stats stats;
        uint64_t bad;

        cairn_ring_plan(ring, users, USERS / 10, &options, &stats);
        bad = rule_breaks(ring);
        printf("replicas %u on %3zu nodes in %3zu zones: partitions and %zu "
               "overrides breaking distinct nodes%s: %llu; slot balance "
               "%.4f\n",
               cases[c].replicas, cases[c].nodes,
               cases[c].zones ? cases[c].zones : cases[c].nodes, stats.pinned,
               cases[c].zones == 0 || cases[c].zones >= cases[c].replicas
                   ? "/zones"
                   : "",
               (unsigned long long)bad, cairn_ring_balance(ring));
        violations += bad > 0;
        cairn_ring_free(ring);
    }
    random_rules();
}

static void
byte_case(const char *label, struct cairn_ring_user *users, size_t count)
{
    struct cairn_ring *ring = make_ring(32, 1, 0, NULL, 0);
    struct cairn_ring_plan_options options = {.tolerance = 0.01};
    struct cairn_ring_plan_stats stats;
    double started = now();

    cairn_ring_plan(ring, users, count, &options, &stats);
    printf("bytes %-34s %7zu users, 32 nodes: max/mean plain hashing "
           "%.4f, after planner %.4f (%zu users pinned; no placement can "
           "beat %.4f); plan took %.2f s\n",
           label, count, stats.before, stats.after, stats.pinned,
           stats.lower_bound, now() - started);
    cairn_ring_free(ring);
}

static void
byte_balance(struct cairn_ring_user *users)
{
    static const size_t populations[] = {USERS, 32000};
    uint64_t state = 7;

    for (size_t p = 0; p < 2; p++) {
        size_t count = populations[p];

        for (size_t i = 0; i < count; i++) {
            double u1 = uniform(&state), u2 = uniform(&state);
            double normal = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);

            users[i].bytes = (uint64_t)(1e6 * exp(1.5 * normal)) + 1;
        }
        byte_case("lognormal sigma=1.5", users, count);
        for (size_t i = 0; i < count; i++) {
            /* Zipf s=1.1 sampled on 1..1e6 units (inverse CDF of the
             * continuous law): a few users hold most bytes. */
            double k_max = 1e6, s = 1.1, u = uniform(&state);
            double x =
                pow((pow(k_max, 1.0 - s) - 1.0) * u + 1.0, 1.0 / (1.0 - s));

            users[i].bytes = (uint64_t)x * 4096;
        }
        byte_case("Zipf s=1.1 sampled, sizes 1..1e6", users, count);
        for (size_t i = 0; i < count; i++)
            users[i].bytes = (uint64_t)(1e12 / pow((double)(i + 1), 1.1)) + 1;
        byte_case("Zipf s=1.1 by rank (size ~ 1/r^1.1)", users, count);
    }
    for (size_t i = 0; i < USERS; i++)
        users[i].bytes = 1;
}

static void
speed(const struct cairn_ring_user *users)
{
    struct cairn_ring_plan_options options = {.tolerance = 0.01};
    struct cairn_ring *ring = NULL;
    uint16_t nodes[CAIRN_RING_MAX_REPLICAS];
    size_t *lengths = malloc(USERS * sizeof(*lengths));
    uint64_t sum = 0;
    double started;
    char *text = NULL;
    size_t text_len = 0;

    for (unsigned replicas = 1; replicas <= 3; replicas += 2) {
        started = now();
        ring = make_ring(100, replicas, 0, NULL, 0);
        printf("build 100-node ring, R=%u, 2^%u partitions: %.3f s\n", replicas,
               cairn_ring_partition_power(ring), now() - started);
        if (replicas == 1)
            cairn_ring_free(ring);
    }
    for (size_t i = 0; i < USERS; i++)
        lengths[i] = strlen(users[i].userid);
    for (int pass = 0; pass < 2; pass++) {
        started = now();
        for (size_t i = 0; i < LOOKUPS; i++) {
            size_t u = i % USERS;

            cairn_ring_lookup(ring, users[u].userid, lengths[u], nodes);
            sum += nodes[0];
        }
        printf("lookups, R=3, %zu overrides: %.2f million/s on one core "
               "(checksum %llu)\n",
               cairn_ring_override_count(ring),
               LOOKUPS / (now() - started) / 1e6, (unsigned long long)sum);
        cairn_ring_plan(ring, users, USERS, &options, NULL);
    }
    started = now();
    cairn_ring_format(ring, &text, &text_len);
    printf("ring file, 100 nodes, R=3, %zu overrides: %zu bytes, written "
           "in %.3f s",
           cairn_ring_override_count(ring), text_len, now() - started);
    {
        struct cairn_ring *loaded = NULL;
        int rc;

        started = now();
        rc = cairn_ring_parse(text, text_len, &loaded);
        printf(", read back in %.3f s (%s, %s)\n", now() - started,
               cairn_strerror(rc),
               loaded && cairn_ring_equal(ring, loaded) ? "identical"
                                                        : "DIFFERENT");
        violations += loaded == NULL || !cairn_ring_equal(ring, loaded);
        cairn_ring_free(loaded);
    }
    free(text);
    free(lengths);
    cairn_ring_free(ring);
}

int
main(void)
{
    char *storage = NULL;
    struct cairn_ring_user *users = make_users(USERS, &storage);

    setvbuf(stdout, NULL, _IOLBF, 0);
    users_balance(users, 10);
    users_balance(users, 100);
    weights_balance(users, 3);
    weights_balance(users, 30);
    moves(users, 10, 1);
    moves(users, 100, 1);
    moves(users, 100, 3);
    replica_rules(users);
    byte_balance(users);
    speed(users);
    printf("bench_ring: %d correctness violations\n", violations);
    free(users);
    free(storage);
    return violations == 0 ? 0 : 1;
}
