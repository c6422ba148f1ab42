/*
 * forward_seq.c - per (user, node) sequence numbers for the forwarder: a
 * chained hash table that doubles as it fills. A reset stream is dropped
 * from the table, so only users with a live stream take memory.
 */
#include "common.h"
#include "forward_int.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct stream {
    struct stream *next;
    size_t node;
    uint64_t last;
    char user[]; /* NUL-terminated */
};

struct cairn_router_sequences {
    struct stream **buckets;
    size_t bucket_count; /* a power of two */
    size_t count;
    uint64_t issued_max; /* the highest number next() gave */
};

static size_t
stream_hash(const char *user, size_t node)
{
    uint64_t hash = 1469598103934665603ull; /* FNV-1a */

    for (const unsigned char *p = (const unsigned char *)user; *p; p++)
        hash = (hash ^ *p) * 1099511628211ull;
    hash = (hash ^ (uint64_t)node) * 1099511628211ull;
    return (size_t)(hash ^ (hash >> 29));
}

int
cairn_router_sequences_new(struct cairn_router_sequences **table)
{
    struct cairn_router_sequences *created = calloc(1, sizeof(*created));

    *table = NULL;
    if (created == NULL)
        return CAIRN_ENOMEM;
    created->bucket_count = 64;
    created->buckets = calloc(created->bucket_count, sizeof(*created->buckets));
    if (created->buckets == NULL) {
        free(created);
        return CAIRN_ENOMEM;
    }
    *table = created;
    return CAIRN_OK;
}

void
cairn_router_sequences_free(struct cairn_router_sequences *table)
{
    if (table == NULL)
        return;
    for (size_t i = 0; i < table->bucket_count; i++) {
        struct stream *stream = table->buckets[i], *next;

        for (; stream != NULL; stream = next) {
            next = stream->next;
            free(stream);
        }
    }
    free(table->buckets);
    free(table);
}

static struct stream **
find_slot(struct cairn_router_sequences *table, const char *user, size_t node)
{
    struct stream **slot =
        &table->buckets[stream_hash(user, node) & (table->bucket_count - 1)];

    while (*slot != NULL &&
           ((*slot)->node != node || strcmp((*slot)->user, user) != 0))
        slot = &(*slot)->next;
    return slot;
}

/* Doubles the buckets; on allocation failure the table stays as it is. */
static void
grow(struct cairn_router_sequences *table)
{
    size_t count = table->bucket_count * 2;
    struct stream **buckets = calloc(count, sizeof(*buckets));

    if (buckets == NULL)
        return;
    for (size_t i = 0; i < table->bucket_count; i++) {
        struct stream *stream = table->buckets[i], *next;

        for (; stream != NULL; stream = next) {
            size_t at = stream_hash(stream->user, stream->node) & (count - 1);

            next = stream->next;
            stream->next = buckets[at];
            buckets[at] = stream;
        }
    }
    free(table->buckets);
    table->buckets = buckets;
    table->bucket_count = count;
}

/* The entry of (user, node), added with value 0 when it is new. */
static int
find_or_add(struct cairn_router_sequences *table, const char *user, size_t node,
            struct stream **found)
{
    struct stream **slot = find_slot(table, user, node);
    size_t len = strlen(user);

    if (*slot == NULL) {
        struct stream *stream = calloc(1, sizeof(*stream) + len + 1);

        if (stream == NULL)
            return CAIRN_ENOMEM;
        stream->node = node;
        memcpy(stream->user, user, len + 1);
        *slot = stream;
        if (++table->count > table->bucket_count)
            grow(table);
        slot = find_slot(table, user, node);
    }
    *found = *slot;
    return CAIRN_OK;
}

/*
 * The first number of a new stream: wall-clock milliseconds << 20 (a
 * restarted router starts above what it sent before, unless the clock went
 * back) and above everything this table issued (two streams started in
 * one millisecond).
 */
static uint64_t
stream_base(const struct cairn_router_sequences *table)
{
    struct timespec now;
    uint64_t base = 1;

    if (clock_gettime(CLOCK_REALTIME, &now) == 0)
        base = ((uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000)
               << 20;
    return base > table->issued_max ? base : table->issued_max + 1;
}

int
cairn_router_sequences_next(struct cairn_router_sequences *table,
                            const char *user, size_t node, uint64_t *sequence,
                            bool *stream_start)
{
    struct stream *stream = NULL;
    int rc = find_or_add(table, user, node, &stream);

    if (rc < 0)
        return rc;
    *stream_start = stream->last == 0;
    stream->last = *stream_start ? stream_base(table) : stream->last + 1;
    if (stream->last > table->issued_max)
        table->issued_max = stream->last;
    *sequence = stream->last;
    return CAIRN_OK;
}

bool
cairn_router_sequences_get(const struct cairn_router_sequences *table,
                           const char *user, size_t node, uint64_t *value)
{
    /* find_slot only reads the table. */
    struct stream *stream =
        *find_slot((struct cairn_router_sequences *)table, user, node);

    if (stream != NULL)
        *value = stream->last;
    return stream != NULL;
}

int
cairn_router_sequences_set(struct cairn_router_sequences *table,
                           const char *user, size_t node, uint64_t value)
{
    struct stream *stream = NULL;
    int rc = find_or_add(table, user, node, &stream);

    if (rc == 0)
        stream->last = value;
    return rc;
}

void
cairn_router_sequences_reset(struct cairn_router_sequences *table,
                             const char *user, size_t node)
{
    struct stream **slot = find_slot(table, user, node);
    struct stream *stream = *slot;

    if (stream == NULL)
        return;
    *slot = stream->next;
    free(stream);
    table->count--;
}

size_t
cairn_router_sequences_count(const struct cairn_router_sequences *table)
{
    return table->count;
}

int
cairn_router_sequences_each(const struct cairn_router_sequences *table,
                            cairn_router_sequences_fn fn, void *arg)
{
    int rc = 0;

    for (size_t i = 0; i < table->bucket_count && rc == 0; i++)
        for (const struct stream *stream = table->buckets[i];
             stream != NULL && rc == 0; stream = stream->next)
            rc = fn(arg, stream->user, stream->node, stream->last);
    return rc;
}
