/*
 * test_placement.c - unit tests of the ring: the fixed hash and placements
 * (so a change of hash or algorithm is caught), replica and zone rules on
 * every small ring, stability on add and remove, balance, overrides and
 * the planner, diffs, and the ring file (round trip, checksum, truncation,
 * version, malformed content).
 */
#include "check.h"
#include "common.h"
#include "placement.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int placement_header_replicas(void);

static const struct cairn_ring_node_spec golden_nodes[] = {
    {"alpha", 100, "a"}, {"bravo", 100, "a"}, {"charlie", 200, "b"},
    {"delta", 100, "b"}, {"echo", 50, "c"},   {"foxtrot", 100, "c"},
};
#define GOLDEN_COUNT (sizeof(golden_nodes) / sizeof(golden_nodes[0]))

static struct cairn_ring *
golden_ring(void)
{
    struct cairn_ring *ring = NULL;

    CHECK_INT(cairn_ring_new("backup", 2, 8, golden_nodes, GOLDEN_COUNT, &ring),
              0);
    return ring;
}

static void
test_hash(void)
{
    static const struct {
        const char *userid;
        uint64_t hash;
    } cases[] = {
        {"", 0xefd01f60ba992926ULL},
        {"a", 0x82a2a958a9bece5bULL},
        {"anne@example.com", 0x14cbd0bf274ea9c0ULL},
        {"bob", 0xf6493629e5654ae0ULL},
        {"user0000001@example1.org", 0x5060fe1ac8200499ULL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_U64(cairn_ring_hash(cases[i].userid, strlen(cases[i].userid)),
                  cases[i].hash);
}

/* Node names of userid's replicas, joined by ','. */
static void
placement_of(const struct cairn_ring *ring, const char *userid, char *out,
             size_t size)
{
    uint16_t nodes[CAIRN_RING_MAX_REPLICAS];
    size_t used = 0;

    cairn_ring_lookup(ring, userid, strlen(userid), nodes);
    out[0] = '\0';
    for (unsigned r = 0; r < cairn_ring_replicas(ring); r++) {
        struct cairn_ring_node_info info;

        cairn_ring_node_info(ring, nodes[r], &info);
        used += (size_t)snprintf(out + used, size - used, "%s%s", r ? "," : "",
                                 info.name);
    }
}

/* Fixed expectations: any change of hash or builder shows up here. */
static void
test_golden_placement(void)
{
    static const struct {
        const char *userid;
        const char *nodes;
    } cases[] = {
        {"anne@example.com", "charlie,bravo"},
        {"bob@example.com", "charlie,alpha"},
        {"carol@example.org", "charlie,alpha"},
        {"dave", "charlie,alpha"},
        {"erin@mail.example.net", "echo,charlie"},
        {"frank@example.com", "bravo,foxtrot"},
        {"grace@example.com", "charlie,alpha"},
        {"heidi@example.org", "charlie,alpha"},
        {"ivan", "bravo,foxtrot"},
        {"judy@example.com", "alpha,foxtrot"},
    };
    struct cairn_ring *ring = golden_ring();
    uint64_t table_hash = 0xcbf29ce484222325ULL;

    for (size_t i = 0; ring && i < sizeof(cases) / sizeof(cases[0]); i++) {
        char got[128];

        placement_of(ring, cases[i].userid, got, sizeof(got));
        CHECK_STR(got, cases[i].nodes);
    }
    for (uint32_t p = 0; ring && p < 256; p++) {
        uint16_t nodes[CAIRN_RING_MAX_REPLICAS];

        cairn_ring_partition_nodes(ring, p, nodes);
        for (unsigned r = 0; r < 2; r++)
            table_hash = (table_hash ^ nodes[r]) * 0x100000001b3ULL;
    }
    CHECK_U64(table_hash, 0x7573f47f69c76e05ULL);
    cairn_ring_free(ring);
}

/* The replica rules, checked independently of the library's own check. */
static int
rule_breaks(const struct cairn_ring *ring, const uint16_t *row)
{
    unsigned replicas = cairn_ring_replicas(ring);
    size_t zone_count = 0;
    const char *zones[64];
    int bad = 0;

    for (size_t i = 0; i < cairn_ring_node_count(ring); i++) {
        struct cairn_ring_node_info info;
        bool seen = false;

        cairn_ring_node_info(ring, i, &info);
        for (size_t z = 0; z < zone_count && !seen; z++)
            seen = strcmp(zones[z], info.zone) == 0;
        if (!seen && info.weight > 0 && zone_count < 64)
            zones[zone_count++] = info.zone;
    }
    for (unsigned a = 0; a < replicas; a++) {
        struct cairn_ring_node_info x, y;

        if (row[a] >= cairn_ring_node_count(ring))
            return 1;
        cairn_ring_node_info(ring, row[a], &x);
        bad += x.weight == 0;
        for (unsigned b = a + 1; b < replicas; b++) {
            cairn_ring_node_info(ring, row[b], &y);
            bad += row[a] == row[b];
            bad += zone_count >= replicas && strcmp(x.zone, y.zone) == 0;
        }
    }
    return bad;
}

static int
ring_breaks(const struct cairn_ring *ring)
{
    int bad = 0;

    for (uint32_t p = 0; p < (1u << cairn_ring_partition_power(ring)); p++) {
        uint16_t row[CAIRN_RING_MAX_REPLICAS];

        cairn_ring_partition_nodes(ring, p, row);
        bad += rule_breaks(ring, row);
    }
    return bad;
}

/* Every node of positive weight holds its share of slots within one. */
static bool
shares_exact(const struct cairn_ring *ring)
{
    for (size_t i = 0; i < cairn_ring_node_count(ring); i++) {
        struct cairn_ring_node_info info;

        cairn_ring_node_info(ring, i, &info);
        if ((double)info.slots > info.ideal + 1.0 ||
            (double)info.slots < info.ideal - 1.0)
            return false;
    }
    return true;
}

/* Every small ring: 1-6 nodes, 1-4 replicas, every zone layout i % z. */
static void
test_rules_exhaustive(void)
{
    static const char *names[] = {"n0", "n1", "n2", "n3", "n4", "n5"};
    static const char *zone_names[] = {"z0", "z1", "z2", "z3"};
    int built = 0;

    for (size_t count = 1; count <= 6; count++) {
        for (unsigned replicas = 1; replicas <= 4; replicas++) {
            for (size_t zones = 1; zones <= 4; zones++) {
                struct cairn_ring_node_spec specs[6];
                struct cairn_ring *ring = NULL;
                int rc;

                for (size_t i = 0; i < count; i++)
                    specs[i] = (struct cairn_ring_node_spec){
                        names[i], (uint32_t)(100 + 50 * (i % 3)),
                        zone_names[i % zones]};
                rc = cairn_ring_new("d", replicas, 6, specs, count, &ring);
                if (count < replicas) {
                    CHECK_INT(rc, CAIRN_EINVAL);
                    continue;
                }
                CHECK_INT(rc, 0);
                if (ring == NULL)
                    continue;
                built++;
                CHECK_INT(ring_breaks(ring), 0);
                cairn_ring_free(ring);
            }
        }
    }
    CHECK_INT(built, 72);
}

/* Random rings changed at random stay valid and balanced. */
static void
test_rules_random(void)
{
    uint64_t state = 1;

    for (int round = 0; round < 200; round++) {
        struct cairn_ring_node_spec specs[24];
        char names[24][24], zones[24][24];
        struct cairn_ring *ring = NULL;
        unsigned replicas;
        size_t count;

        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        replicas = 1 + (unsigned)(state >> 60) % 3;
        count = replicas + (size_t)(state >> 40) % 12;
        for (size_t i = 0; i < count; i++) {
            snprintf(names[i], sizeof(names[i]), "n%zu", i);
            snprintf(zones[i], sizeof(zones[i]), "z%zu",
                     (size_t)(state >> (i % 48)) % 4);
            specs[i] = (struct cairn_ring_node_spec){
                names[i], (uint32_t)(1 + (state >> (i % 40)) % 300), zones[i]};
        }
        CHECK_INT(cairn_ring_new("r", replicas, 8, specs, count, &ring), 0);
        if (ring == NULL)
            continue;
        CHECK_INT(ring_breaks(ring), 0);
        CHECK(shares_exact(ring));
        CHECK(cairn_ring_set_weight(ring, names[0], 500) == 0);
        CHECK(cairn_ring_set_zone(ring, names[count - 1], "z0") == 0);
        CHECK(cairn_ring_add_node(ring, &(struct cairn_ring_node_spec){
                                            "extra", 150, "z9"}) == 0);
        CHECK_INT(cairn_ring_rebalance(ring, NULL), 0);
        CHECK_INT(ring_breaks(ring), 0);
        CHECK(shares_exact(ring));
        cairn_ring_free(ring);
    }
}

static struct cairn_ring *
equal_ring(size_t count, unsigned replicas)
{
    struct cairn_ring_node_spec specs[16];
    char names[16][24];
    struct cairn_ring *ring = NULL;

    for (size_t i = 0; i < count; i++) {
        snprintf(names[i], sizeof(names[i]), "n%zu", i);
        specs[i] = (struct cairn_ring_node_spec){names[i], 100, names[i]};
    }
    CHECK_INT(cairn_ring_new("d", replicas, 10, specs, count, &ring), 0);
    return ring;
}

/* A partition's new nodes come only from allowed, the old ones stay. */
static int
unstable_partitions(const struct cairn_ring *old_ring,
                    const struct cairn_ring *new_ring, const char *allowed,
                    const char *gone)
{
    unsigned replicas = cairn_ring_replicas(old_ring);
    int bad = 0;

    for (uint32_t p = 0; p < (1u << cairn_ring_partition_power(old_ring));
         p++) {
        uint16_t from[CAIRN_RING_MAX_REPLICAS], to[CAIRN_RING_MAX_REPLICAS];

        cairn_ring_partition_nodes(old_ring, p, from);
        cairn_ring_partition_nodes(new_ring, p, to);
        for (unsigned t = 0; t < replicas; t++) {
            struct cairn_ring_node_info info;
            bool kept = false;

            cairn_ring_node_info(new_ring, to[t], &info);
            for (unsigned f = 0; f < replicas; f++) {
                struct cairn_ring_node_info old_info;

                cairn_ring_node_info(old_ring, from[f], &old_info);
                kept = kept || strcmp(old_info.name, info.name) == 0;
                /* a node that stays keeps every slot it had, unless it
                 * gave it to the added node */
            }
            if (!kept && allowed != NULL && strcmp(info.name, allowed) != 0)
                bad++;
        }
        if (gone != NULL) {
            /* only partitions that held the removed node may change */
            bool held = false;

            for (unsigned f = 0; f < replicas; f++) {
                struct cairn_ring_node_info old_info;

                cairn_ring_node_info(old_ring, from[f], &old_info);
                held = held || strcmp(old_info.name, gone) == 0;
            }
            for (unsigned t = 0; t < replicas && !held; t++) {
                struct cairn_ring_node_info a, b;

                cairn_ring_node_info(old_ring, from[t], &a);
                cairn_ring_node_info(new_ring, to[t], &b);
                bad += strcmp(a.name, b.name) != 0;
            }
        }
    }
    return bad;
}

static void
test_stability(void)
{
    for (unsigned replicas = 1; replicas <= 3; replicas++) {
        struct cairn_ring *ring = equal_ring(8, replicas);
        struct cairn_ring *grown = NULL, *shrunk = NULL;
        struct cairn_ring_rebalance_stats stats;
        uint64_t slots = (uint64_t)replicas << 10;

        if (ring == NULL)
            continue;
        CHECK(shares_exact(ring));
        CHECK_INT(cairn_ring_clone(ring, &grown), 0);
        CHECK_INT(cairn_ring_add_node(
                      grown, &(struct cairn_ring_node_spec){"new", 100, "new"}),
                  0);
        CHECK_INT(cairn_ring_add_node(
                      grown, &(struct cairn_ring_node_spec){"n0", 100, "x"}),
                  CAIRN_EEXIST);
        CHECK_INT(cairn_ring_rebalance(grown, &stats), 0);
        /* the optimum: the new node's share, and not one slot more */
        CHECK(stats.slots_moved >= slots / 9 &&
              stats.slots_moved <= slots / 9 + 1);
        CHECK(shares_exact(grown));
        CHECK_INT(unstable_partitions(ring, grown, "new", NULL), 0);

        CHECK_INT(cairn_ring_clone(ring, &shrunk), 0);
        CHECK_INT(cairn_ring_remove_node(shrunk, "n3"), 0);
        CHECK_INT(cairn_ring_remove_node(shrunk, "nope"), CAIRN_ENOENT);
        CHECK_INT(cairn_ring_rebalance(shrunk, &stats), 0);
        CHECK_INT(cairn_ring_node_count(shrunk), 7);
        CHECK(stats.slots_moved >= slots / 8 &&
              stats.slots_moved <= slots / 8 + 1);
        CHECK(shares_exact(shrunk));
        CHECK_INT(unstable_partitions(ring, shrunk, NULL, "n3"), 0);
        CHECK_INT(ring_breaks(shrunk), 0);
        cairn_ring_free(ring);
        cairn_ring_free(grown);
        cairn_ring_free(shrunk);
    }
}

static void
test_weights_and_errors(void)
{
    struct cairn_ring *ring = equal_ring(4, 2);
    struct cairn_ring_node_info info;
    size_t index;

    if (ring == NULL)
        return;
    /* weight 0 drains a node but keeps it in the ring */
    CHECK_INT(cairn_ring_set_weight(ring, "n1", 0), 0);
    CHECK_INT(cairn_ring_rebalance(ring, NULL), 0);
    CHECK_INT(cairn_ring_node_find(ring, "n1", &index), 0);
    CHECK_INT(cairn_ring_node_info(ring, index, &info), 0);
    CHECK_U64(info.slots, 0);
    CHECK_INT(ring_breaks(ring), 0);
    CHECK(shares_exact(ring));
    /* a double weight gets a double share */
    CHECK_INT(cairn_ring_set_weight(ring, "n2", 200), 0);
    CHECK_INT(cairn_ring_rebalance(ring, NULL), 0);
    CHECK_INT(cairn_ring_node_find(ring, "n2", &index), 0);
    CHECK_INT(cairn_ring_node_info(ring, index, &info), 0);
    CHECK_U64(info.slots, 1024); /* capped: one replica per partition */
    CHECK(shares_exact(ring));
    /* too few nodes left for the replicas: refused, ring unchanged */
    CHECK_INT(cairn_ring_remove_node(ring, "n0"), 0);
    CHECK_INT(cairn_ring_remove_node(ring, "n2"), 0);
    CHECK_INT(cairn_ring_rebalance(ring, NULL), CAIRN_EINVAL);
    CHECK_INT(cairn_ring_set_weight(ring, "n0", 2000000), CAIRN_EINVAL);
    CHECK_INT(cairn_ring_set_zone(ring, "n0", "bad zone"), CAIRN_EINVAL);
    CHECK_INT(cairn_ring_node_info(ring, 99, &info), CAIRN_ENOENT);
    cairn_ring_free(ring);

    ring = NULL;
    CHECK_INT(cairn_ring_new("bad name", 1, 8, golden_nodes, 1, &ring),
              CAIRN_EINVAL);
    CHECK_INT(cairn_ring_new("d", 0, 8, golden_nodes, 1, &ring), CAIRN_EINVAL);
    CHECK_INT(cairn_ring_new("d", 1, 30, golden_nodes, 1, &ring), CAIRN_EINVAL);
    CHECK_INT(cairn_ring_new(
                  "d", 1, 8,
                  (struct cairn_ring_node_spec[]){{"x", 1, "a"}, {"x", 1, "b"}},
                  2, &ring),
              CAIRN_EEXIST);
    CHECK(ring == NULL);
}

static void
test_overrides_and_planner(void)
{
    struct cairn_ring *ring = equal_ring(6, 2), *before = NULL;
    struct cairn_ring_user users[600];
    char names[600][24];
    uint16_t nodes[CAIRN_RING_MAX_REPLICAS], hashed[CAIRN_RING_MAX_REPLICAS];
    uint16_t pin[2] = {4, 5}, twice[2] = {3, 3};
    struct cairn_ring_plan_stats stats;
    struct cairn_ring_diff_stats diff;
    const uint16_t *pinned_nodes;
    const char *pinned_user;
    size_t index;
    double ratio;

    if (ring == NULL)
        return;
    cairn_ring_lookup(ring, "anne@example.com", 16, hashed);
    CHECK_INT(cairn_ring_set_override(ring, "anne@example.com", 16, twice),
              CAIRN_EINVAL);
    CHECK_INT(cairn_ring_set_override(ring, "anne@example.com", 16, pin), 0);
    CHECK_INT(cairn_ring_override_count(ring), 1);
    cairn_ring_lookup(ring, "anne@example.com", 16, nodes);
    CHECK_MEM(nodes, sizeof(pin), pin, sizeof(pin));
    CHECK_INT(cairn_ring_override_at(ring, 0, &pinned_user, &pinned_nodes), 0);
    CHECK_STR(pinned_user, "anne@example.com");
    CHECK_INT(cairn_ring_clear_override(ring, "anne@example.com", 16), 0);
    CHECK_INT(cairn_ring_clear_override(ring, "anne@example.com", 16),
              CAIRN_ENOENT);
    cairn_ring_lookup(ring, "anne@example.com", 16, nodes);
    CHECK_MEM(nodes, sizeof(hashed), hashed, sizeof(hashed));

    /* removing a pinned node drops the pin */
    CHECK_INT(cairn_ring_set_override(ring, "anne@example.com", 16, pin), 0);
    CHECK_INT(cairn_ring_clone(ring, &before), 0);
    CHECK(cairn_ring_user_moves(ring, before, "anne@example.com", 16) == false);
    CHECK_INT(cairn_ring_remove_node(ring, "n5"), 0);
    CHECK_INT(cairn_ring_rebalance(ring, NULL), 0);
    CHECK_INT(cairn_ring_override_count(ring), 0);
    cairn_ring_free(before);
    before = NULL;

    /* one user far bigger than the rest: plain hashing is off balance, the
     * planner moves others away from its nodes */
    for (size_t i = 0; i < 600; i++) {
        snprintf(names[i], sizeof(names[i]), "u%zu@example.com", i);
        users[i] = (struct cairn_ring_user){names[i], i == 0 ? 100 : 1};
    }
    CHECK_INT(cairn_ring_clone(ring, &before), 0);
    CHECK_INT(cairn_ring_plan(ring, users, 600, NULL, &stats), 0);
    CHECK(stats.before > 1.2);
    CHECK(stats.after <= 1.011);
    CHECK(stats.after >= stats.lower_bound - 1e-9);
    CHECK(stats.pinned > 0 && stats.pinned < 100);
    CHECK_INT(cairn_ring_override_count(ring), stats.pinned);
    CHECK_INT(cairn_ring_measure(ring, users, 600, &ratio, NULL), 0);
    CHECK(ratio == stats.after);
    for (size_t i = 0; i < cairn_ring_override_count(ring); i++) {
        CHECK_INT(cairn_ring_override_at(ring, i, &pinned_user, &pinned_nodes),
                  0);
        CHECK_INT(rule_breaks(ring, pinned_nodes), 0);
    }
    /* the diff of the plan is exactly the pinned users */
    CHECK_INT(
        cairn_ring_diff_users(before, ring, users, 600, NULL, NULL, &diff), 0);
    CHECK_U64(diff.users_changed, stats.pinned);
    CHECK_U64(diff.partitions_changed, 0);
    /* planning again from the pins changes nothing and counts them once */
    {
        struct cairn_ring_plan_options keep = {.keep_existing = true};
        struct cairn_ring_plan_stats again;
        struct cairn_ring *planned = NULL;

        CHECK_INT(cairn_ring_clone(ring, &planned), 0);
        CHECK_INT(cairn_ring_plan(ring, users, 600, &keep, &again), 0);
        CHECK_INT(again.pinned, stats.pinned);
        CHECK(again.before == stats.after);
        CHECK(planned != NULL && cairn_ring_equal(planned, ring));
        cairn_ring_free(planned);
    }
    CHECK_INT(cairn_ring_node_find(ring, "n0", &index), 0);
    cairn_ring_free(before);
    cairn_ring_free(ring);
}

struct collected {
    const struct cairn_ring *old_ring;
    const struct cairn_ring *new_ring;
    const struct cairn_ring_user *users;
    size_t moves;
    size_t wrong;
};

static int
collect_move(void *context, const struct cairn_ring_move *move)
{
    struct collected *seen = context;
    const char *userid = seen->users[move->user].userid;

    seen->moves++;
    seen->wrong += !cairn_ring_user_moves(seen->old_ring, seen->new_ring,
                                          userid, strlen(userid));
    return seen->moves == 1000 ? CAIRN_EINVAL : 0;
}

static void
test_diff(void)
{
    struct cairn_ring *old_ring = equal_ring(5, 2), *new_ring = NULL;
    struct cairn_ring *other = equal_ring(5, 2);
    struct cairn_ring_user users[2000];
    char names[2000][24];
    struct cairn_ring_diff_stats diff, partitions;
    struct collected seen = {0};
    size_t moving = 0;

    if (old_ring == NULL || other == NULL)
        return;
    CHECK(cairn_ring_equal(old_ring, other)); /* deterministic */
    for (size_t i = 0; i < 2000; i++) {
        snprintf(names[i], sizeof(names[i]), "user%zu@example.org", i);
        users[i] = (struct cairn_ring_user){names[i], 1};
    }
    CHECK_INT(cairn_ring_clone(old_ring, &new_ring), 0);
    CHECK_INT(cairn_ring_add_node(
                  new_ring, &(struct cairn_ring_node_spec){"n5", 100, "n5"}),
              0);
    CHECK_INT(cairn_ring_rebalance(new_ring, NULL), 0);
    CHECK(!cairn_ring_equal(old_ring, new_ring));
    CHECK_INT(cairn_ring_diff_partitions(old_ring, new_ring, &partitions), 0);
    CHECK_U64(partitions.partitions, 1024);
    CHECK(partitions.slots_moved >= 2048 / 6 &&
          partitions.slots_moved <= 2048 / 6 + 1);
    seen = (struct collected){old_ring, new_ring, users, 0, 0};
    CHECK_INT(cairn_ring_diff_users(old_ring, new_ring, users, 2000,
                                    collect_move, &seen, &diff),
              0);
    for (size_t i = 0; i < 2000; i++)
        moving += cairn_ring_user_moves(old_ring, new_ring, names[i],
                                        strlen(names[i]));
    CHECK_U64(diff.users_changed, moving);
    CHECK_U64(seen.moves, moving);
    CHECK_INT(seen.wrong, 0);
    CHECK(moving > 2000 / 6 && moving < 2000 / 2);
    CHECK_U64(diff.slots_moved, partitions.slots_moved);
    /* a callback error stops the diff */
    seen = (struct collected){old_ring, new_ring, users, 999, 0};
    CHECK_INT(cairn_ring_diff_users(old_ring, new_ring, users, 2000,
                                    collect_move, &seen, NULL),
              CAIRN_EINVAL);
    cairn_ring_free(other);
    other = NULL;
    {
        struct cairn_ring_node_spec spec = {"n0", 100, "a"};

        CHECK_INT(cairn_ring_new("d", 1, 9, &spec, 1, &other), 0);
        CHECK_INT(cairn_ring_diff_partitions(old_ring, other, &partitions),
                  CAIRN_EINVAL);
    }
    cairn_ring_free(other);
    cairn_ring_free(old_ring);
    cairn_ring_free(new_ring);
}

/* Replaces the checksum line so that an edited body is accepted as such. */
static char *
reseal(const char *text, const char *find, const char *replace, size_t *len)
{
    const char *at = strstr(text, find), *tail = strstr(text, "sha256 ");
    size_t body = (size_t)(tail - text) - strlen(find) + strlen(replace);
    unsigned char digest[SHA256_DIGEST_LENGTH];
    char *out = malloc(body + 80);

    if (at == NULL || out == NULL || tail == NULL) {
        free(out);
        return NULL;
    }
    memcpy(out, text, (size_t)(at - text));
    memcpy(out + (at - text), replace, strlen(replace));
    memcpy(out + (at - text) + strlen(replace), at + strlen(find),
           (size_t)(tail - at) - strlen(find));
    SHA256((unsigned char *)out, body, digest);
    *len = body;
    *len += (size_t)sprintf(out + body, "sha256 ");
    for (size_t i = 0; i < sizeof(digest); i++)
        *len += (size_t)sprintf(out + *len, "%02x", digest[i]);
    out[(*len)++] = '\n';
    return out;
}

static void
test_file_content_errors(const char *text)
{
    static const struct {
        const char *find;
        const char *replace;
        int rc;
    } cases[] = {
        {"cairn-ring 1\n", "cairn-ring 2\n", CAIRN_ENOTSUP},
        {"cairn-ring 1\n", "cairn-ring one\n", CAIRN_EPARSE},
        {"replicas 2\n", "replicas 9\n", CAIRN_EPARSE},
        {"replicas 2\n", "replicas 3\n", CAIRN_EPARSE},
        {"hash fnv1a64-fmix64\n", "hash md5\n", CAIRN_ENOTSUP},
        {"nodes 5\n", "nodes 6\n", CAIRN_EPARSE},
        {"node n1 100 n1 410\n", "node n1 100 n1 411\n", CAIRN_EPARSE},
        {"node n1 100 n1 410\n", "node n1 100  n1 410\n", CAIRN_EPARSE},
        {"node n1 100 n1 410\n", "node n1 0 n1 410\n", CAIRN_EPARSE},
        {"node n1 100 n1 410\n", "node n0 100 n1 410\n", CAIRN_EPARSE},
        {"node n1 100 n1 410\n", "node n1 100 n0 410\n", CAIRN_EPARSE},
        {"override anne%20smith@example.com n3 n4\n",
         "override anne%20smith@example.com n3 n3\n", CAIRN_EPARSE},
        {"override anne%20smith@example.com n3 n4\n",
         "override anne%2smith@example.com n3 n4\n", CAIRN_EPARSE},
        {"override anne%20smith@example.com n3 n4\n",
         "override anne%20smith@example.com n3 n9\n", CAIRN_EPARSE},
        {"end\n", "", CAIRN_EPARSE},
        {"end\n", "end\nextra\n", CAIRN_EPARSE},
        {"table zlib ", "table gzip ", CAIRN_EPARSE},
        {"# cairn ring file", "# any comment", 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cairn_ring *ring = NULL;
        size_t len = 0;
        char *edited = reseal(text, cases[i].find, cases[i].replace, &len);

        CHECK(edited != NULL);
        if (edited == NULL)
            continue;
        CHECK_INT(cairn_ring_parse(edited, len, &ring), cases[i].rc);
        CHECK((ring != NULL) == (cases[i].rc == 0));
        cairn_ring_free(ring);
        free(edited);
    }
}

static void
test_file(void)
{
    struct cairn_ring *ring = equal_ring(5, 2), *loaded = NULL;
    uint16_t pin[2] = {3, 4}, other[2] = {0, 1};
    char dir[] = "/tmp/test_placement.XXXXXX", path[64];
    char *text = NULL, *copy;
    size_t len = 0;

    if (ring == NULL)
        return;
    cairn_ring_set_epoch(ring, 7);
    CHECK_INT(cairn_ring_set_override(ring, "anne smith@example.com", 22, pin),
              0);
    CHECK_INT(
        cairn_ring_set_override(ring, "100%\xc3\xa9@example.com", 18, other),
        0);
    CHECK_INT(cairn_ring_format(ring, &text, &len), 0);
    if (text == NULL)
        return;
    CHECK(strstr(text, "node n1 100 n1 410\n") != NULL);
    CHECK(strstr(text, "override anne%20smith@example.com n3 n4\n") != NULL);
    CHECK(strstr(text, "override 100%25%C3%A9@example.com n0 n1\n") != NULL);
    CHECK_INT(cairn_ring_parse(text, len, &loaded), 0);
    CHECK(loaded != NULL && cairn_ring_equal(ring, loaded));
    CHECK(loaded != NULL && cairn_ring_epoch(loaded) == 7);
    cairn_ring_free(loaded);
    loaded = NULL;

    /* every truncation and every flipped byte is refused, never a crash */
    for (size_t cut = 0; cut < len; cut++) {
        CHECK_INT(cairn_ring_parse(text, cut, &loaded), CAIRN_ECORRUPT);
        CHECK(loaded == NULL);
    }
    copy = malloc(len);
    for (size_t at = 0; copy != NULL && at < len; at += 7) {
        memcpy(copy, text, len);
        copy[at] ^= 0x01;
        CHECK_INT(cairn_ring_parse(copy, len, &loaded), CAIRN_ECORRUPT);
        CHECK(loaded == NULL);
    }
    free(copy);
    test_file_content_errors(text);

    /* save and load through the file system; a staged change is refused */
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/backup.ring", dir);
    CHECK_INT(cairn_ring_load(path, &loaded), CAIRN_ENOENT);
    CHECK_INT(cairn_ring_save(ring, path), 0);
    CHECK_INT(cairn_ring_load(path, &loaded), 0);
    CHECK(loaded != NULL && cairn_ring_equal(ring, loaded));
    CHECK_INT(cairn_ring_remove_node(ring, "n2"), 0);
    CHECK_INT(cairn_ring_save(ring, path), CAIRN_ESTATE);
    {
        struct cairn_ring *again = NULL;

        CHECK_INT(cairn_ring_load(path, &again), 0);
        CHECK(loaded != NULL && again != NULL &&
              cairn_ring_equal(loaded, again));
        cairn_ring_free(again);
    }
    unlink(path);
    rmdir(dir);
    cairn_ring_free(loaded);
    cairn_ring_free(ring);
    free(text);
}

int
main(void)
{
    CHECK_INT(placement_header_replicas(), CAIRN_RING_MAX_REPLICAS);
    test_hash();
    test_golden_placement();
    test_rules_exhaustive();
    test_rules_random();
    test_stability();
    test_weights_and_errors();
    test_overrides_and_planner();
    test_diff();
    test_file();
    return check_exit("test_placement");
}
