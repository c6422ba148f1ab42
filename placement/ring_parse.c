/*
 * ring_parse.c - reading the ring file (format in ring_file.c). The
 * checksum is verified before anything else is believed, every count and
 * name is bounded, and the table must obey the replica rules, so a ring
 * that loads is a ring that lookups can trust.
 */
#include "common.h"
#include "placement_int.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define MAX_TOKENS (CAIRN_RING_MAX_REPLICAS + 2)

struct reader {
    const char *at;
    const char *end;
};

struct token {
    const char *text;
    size_t len;
};

/* The next non-comment line (without its \n); CAIRN_EPARSE at the end. */
static int
next_line(struct reader *reader, const char **line, size_t *len)
{
    while (reader->at < reader->end) {
        const char *start = reader->at;
        const char *newline = memchr(start, '\n', reader->end - start);

        if (newline == NULL)
            return CAIRN_EPARSE;
        reader->at = newline + 1;
        if (*start == '#')
            continue;
        *line = start;
        *len = (size_t)(newline - start);
        return CAIRN_OK;
    }
    return CAIRN_EPARSE;
}

/* Splits line at single spaces; CAIRN_EPARSE unless exactly want tokens. */
static int
split(const char *line, size_t len, struct token *tokens, size_t want)
{
    size_t count = 0, start = 0;

    for (size_t i = 0; i <= len; i++) {
        if (i < len && line[i] != ' ')
            continue;
        if (i == start || count == want)
            return CAIRN_EPARSE;
        tokens[count].text = line + start;
        tokens[count].len = i - start;
        count++;
        start = i + 1;
    }
    return count == want ? CAIRN_OK : CAIRN_EPARSE;
}

static bool
token_is(const struct token *token, const char *word)
{
    return token->len == strlen(word) &&
           memcmp(token->text, word, token->len) == 0;
}

/* Copies a token into a NUL-terminated name buffer of MAX_NAME + 1. */
static int
token_name(const struct token *token, char *name)
{
    if (token->len == 0 || token->len > CAIRN_RING_MAX_NAME)
        return CAIRN_EPARSE;
    memcpy(name, token->text, token->len);
    name[token->len] = '\0';
    return ring_name_valid(name) ? CAIRN_OK : CAIRN_EPARSE;
}

/* A "keyword VALUE" line: the value's token in *value. */
static int
keyword_line(struct reader *reader, const char *keyword, struct token *value)
{
    struct token tokens[2];
    const char *line;
    size_t len;
    int rc;

    if ((rc = next_line(reader, &line, &len)) < 0 ||
        (rc = split(line, len, tokens, 2)) < 0)
        return rc;
    if (!token_is(&tokens[0], keyword))
        return CAIRN_EPARSE;
    *value = tokens[1];
    return 0;
}

/* A "keyword NUMBER" line with the number in [min, max]. */
static int
keyword_number(struct reader *reader, const char *keyword, uint64_t min,
               uint64_t max, uint64_t *value)
{
    struct token token;
    int rc;

    if ((rc = keyword_line(reader, keyword, &token)) < 0)
        return rc;
    rc = cairn_parse_u64(token.text, token.len, min, max, value);
    return rc == CAIRN_EOVERFLOW ? CAIRN_EPARSE : rc;
}

static int
keyword_word(struct reader *reader, const char *keyword, char *word)
{
    struct token token;
    int rc;

    if ((rc = keyword_line(reader, keyword, &token)) < 0)
        return rc;
    return token_name(&token, word);
}

static int
hex_value(char digit)
{
    if (digit >= '0' && digit <= '9')
        return digit - '0';
    if (digit >= 'a' && digit <= 'f')
        return digit - 'a' + 10;
    return -1;
}

/* Checks the final "sha256 HEX" line; *body_len is what it covers. */
static int
verify_checksum(const char *text, size_t len, size_t *body_len)
{
    static const char prefix[] = "sha256 ";
    size_t line_len = sizeof(prefix) - 1 + 2 * SHA256_DIGEST_LENGTH + 1;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    const char *line;

    if (len < line_len || text[len - 1] != '\n')
        return CAIRN_ECORRUPT;
    line = text + len - line_len;
    if ((line != text && line[-1] != '\n') ||
        memcmp(line, prefix, sizeof(prefix) - 1) != 0)
        return CAIRN_ECORRUPT;
    SHA256((const unsigned char *)text, (size_t)(line - text), digest);
    line += sizeof(prefix) - 1;
    for (size_t i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        int high = hex_value(line[2 * i]), low = hex_value(line[2 * i + 1]);

        if (high < 0 || low < 0 || (unsigned)(high * 16 + low) != digest[i])
            return CAIRN_ECORRUPT;
    }
    *body_len = len - line_len;
    return CAIRN_OK;
}

static int
parse_header(struct reader *reader, struct cairn_ring **out)
{
    char destination[CAIRN_RING_MAX_NAME + 1], hash[CAIRN_RING_MAX_NAME + 1];
    uint64_t version, epoch, replicas, power;
    int rc;

    if ((rc = keyword_number(reader, "cairn-ring", 0, UINT32_MAX, &version)) <
        0)
        return rc;
    if (version != CAIRN_RING_FORMAT_VERSION)
        return CAIRN_ENOTSUP;
    if ((rc = keyword_word(reader, "destination", destination)) < 0 ||
        (rc = keyword_number(reader, "epoch", 0, UINT64_MAX, &epoch)) < 0 ||
        (rc = keyword_number(reader, "replicas", 1, CAIRN_RING_MAX_REPLICAS,
                             &replicas)) < 0 ||
        (rc = keyword_number(reader, "partition-power",
                             CAIRN_RING_MIN_PARTITION_POWER,
                             CAIRN_RING_MAX_PARTITION_POWER, &power)) < 0 ||
        (rc = keyword_word(reader, "hash", hash)) < 0)
        return rc;
    if (strcmp(hash, "fnv1a64-fmix64") != 0)
        return CAIRN_ENOTSUP;
    if ((rc = ring_alloc(destination, (unsigned)replicas, (unsigned)power,
                         out)) < 0)
        return rc == CAIRN_EINVAL ? CAIRN_EPARSE : rc;
    (*out)->epoch = epoch;
    return CAIRN_OK;
}

static int
parse_nodes(struct reader *reader, struct cairn_ring *ring,
            uint64_t *declared_slots)
{
    uint64_t count;
    int rc;

    if ((rc = keyword_number(reader, "nodes", 0, CAIRN_RING_MAX_NODES,
                             &count)) < 0)
        return rc;
    for (uint64_t i = 0; i < count; i++) {
        char name[CAIRN_RING_MAX_NAME + 1], zone[CAIRN_RING_MAX_NAME + 1];
        struct token tokens[5];
        uint64_t weight;
        size_t existing;
        const char *line;
        size_t len;

        if ((rc = next_line(reader, &line, &len)) < 0 ||
            (rc = split(line, len, tokens, 5)) < 0)
            return rc;
        if (!token_is(&tokens[0], "node") || token_name(&tokens[1], name) < 0 ||
            token_name(&tokens[3], zone) < 0 ||
            cairn_parse_u64(tokens[2].text, tokens[2].len, 0,
                            CAIRN_RING_MAX_WEIGHT, &weight) < 0 ||
            cairn_parse_u64(tokens[4].text, tokens[4].len, 0,
                            (uint64_t)ring->partitions, &declared_slots[i]) < 0)
            return CAIRN_EPARSE;
        if (cairn_ring_node_find(ring, name, &existing) == 0)
            return CAIRN_EPARSE;
        if ((rc = ring_push_node(ring, name, (uint32_t)weight, zone)) < 0)
            return rc;
    }
    return CAIRN_OK;
}

static int
unescape_userid(const struct token *token, char *userid, size_t *len)
{
    size_t out = 0;

    for (size_t i = 0; i < token->len; i++) {
        int high, low;

        if (out >= CAIRN_RING_MAX_NAME)
            return CAIRN_EPARSE;
        if (token->text[i] != '%') {
            userid[out++] = token->text[i];
            continue;
        }
        if (i + 2 >= token->len)
            return CAIRN_EPARSE;
        high = hex_value((char)(token->text[i + 1] | 0x20));
        low = hex_value((char)(token->text[i + 2] | 0x20));
        if (high < 0 || low < 0 || (high == 0 && low == 0))
            return CAIRN_EPARSE;
        userid[out++] = (char)(high * 16 + low);
        i += 2;
    }
    *len = out;
    return out > 0 ? CAIRN_OK : CAIRN_EPARSE;
}

static int
parse_override(struct cairn_ring *ring, const struct ring_zones *zones,
               const char *line, size_t len)
{
    struct token tokens[MAX_TOKENS];
    uint16_t nodes[CAIRN_RING_MAX_REPLICAS];
    char userid[CAIRN_RING_MAX_NAME + 1];
    size_t userid_len;
    int rc;

    if ((rc = split(line, len, tokens, ring->replicas + 2)) < 0)
        return rc;
    if (!token_is(&tokens[0], "override") ||
        unescape_userid(&tokens[1], userid, &userid_len) < 0)
        return CAIRN_EPARSE;
    for (unsigned r = 0; r < ring->replicas; r++) {
        char name[CAIRN_RING_MAX_NAME + 1];
        size_t index;

        if (token_name(&tokens[r + 2], name) < 0 ||
            cairn_ring_node_find(ring, name, &index) < 0)
            return CAIRN_EPARSE;
        nodes[r] = (uint16_t)index;
    }
    if (!ring_row_valid(ring, zones, nodes))
        return CAIRN_EPARSE;
    if (ring_override_find(ring, cairn_ring_hash(userid, userid_len), userid,
                           userid_len) != NULL)
        return CAIRN_EPARSE;
    return ring_override_put(ring, userid, userid_len, nodes);
}

static int
parse_overrides(struct reader *reader, struct cairn_ring *ring,
                const struct ring_zones *zones)
{
    uint64_t count;
    int rc;

    if ((rc = keyword_number(reader, "overrides", 0, CAIRN_RING_MAX_OVERRIDES,
                             &count)) < 0)
        return rc;
    for (uint64_t i = 0; i < count; i++) {
        const char *line;
        size_t len;

        if ((rc = next_line(reader, &line, &len)) < 0 ||
            (rc = parse_override(ring, zones, line, len)) < 0)
            return rc;
    }
    return CAIRN_OK;
}

/* Gathers the base64 lines up to "end" and inflates them into the table. */
static int
parse_table(struct reader *reader, struct cairn_ring *ring)
{
    size_t count = (size_t)ring->partitions * ring->replicas;
    struct cairn_buf encoded;
    struct token tokens[3];
    unsigned char *packed = NULL, *raw = NULL;
    uLongf raw_len = count * 2;
    uint64_t packed_len;
    const char *line;
    size_t len;
    int rc, decoded;

    cairn_buf_init(&encoded, CAIRN_RING_MAX_FILE_SIZE);
    if ((rc = next_line(reader, &line, &len)) < 0 ||
        (rc = split(line, len, tokens, 3)) < 0)
        goto out;
    if (!token_is(&tokens[0], "table") || !token_is(&tokens[1], "zlib") ||
        cairn_parse_u64(tokens[2].text, tokens[2].len, 1,
                        compressBound(count * 2), &packed_len) < 0) {
        rc = CAIRN_EPARSE;
        goto out;
    }
    for (;;) {
        if ((rc = next_line(reader, &line, &len)) < 0)
            goto out;
        if (len == 3 && memcmp(line, "end", 3) == 0)
            break;
        if ((rc = cairn_buf_append(&encoded, line, len)) < 0)
            goto out;
    }
    if (encoded.len % 4 != 0 || encoded.len / 4 * 3 < packed_len ||
        encoded.len / 4 * 3 > packed_len + 2 || encoded.len > INT32_MAX) {
        rc = CAIRN_EPARSE;
        goto out;
    }
    packed = malloc(encoded.len / 4 * 3 + 1);
    raw = malloc(raw_len);
    if (packed == NULL || raw == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    decoded = EVP_DecodeBlock(packed, (const unsigned char *)encoded.data,
                              (int)encoded.len);
    if (decoded < 0 || (uint64_t)decoded < packed_len ||
        uncompress(raw, &raw_len, packed, (uLong)packed_len) != Z_OK ||
        raw_len != count * 2) {
        rc = CAIRN_EPARSE;
        goto out;
    }
    for (size_t i = 0; i < count; i++)
        ring->table[i] = (uint16_t)(raw[2 * i] << 8 | raw[2 * i + 1]);
out:
    cairn_buf_release(&encoded);
    free(packed);
    free(raw);
    return rc;
}

/* Every slot names a node that may hold it, and the counts add up. */
static int
check_table(struct cairn_ring *ring, const struct ring_zones *zones,
            const uint64_t *declared_slots)
{
    for (uint32_t p = 0; p < ring->partitions; p++) {
        if (!ring_row_valid(ring, zones,
                            ring->table + (size_t)p * ring->replicas))
            return CAIRN_EPARSE;
    }
    ring_count_slots(ring);
    for (size_t i = 0; i < ring->node_count; i++) {
        if (ring->nodes[i].slots != declared_slots[i])
            return CAIRN_EPARSE;
    }
    return CAIRN_OK;
}

int
cairn_ring_parse(const char *text, size_t len, struct cairn_ring **out)
{
    struct reader reader = {text, text};
    struct cairn_ring *ring = NULL;
    struct ring_zones zones = {0};
    uint64_t *declared_slots = NULL;
    size_t body_len;
    int rc;

    *out = NULL;
    if ((rc = verify_checksum(text, len, &body_len)) < 0)
        goto out;
    reader.end = text + body_len;
    if ((rc = parse_header(&reader, &ring)) < 0)
        goto out;
    declared_slots = calloc(CAIRN_RING_MAX_NODES, sizeof(*declared_slots));
    if (declared_slots == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    if ((rc = parse_nodes(&reader, ring, declared_slots)) < 0 ||
        (rc = ring_zones_init(ring, &zones)) < 0)
        goto out;
    if (zones.eligible < ring->replicas) {
        rc = CAIRN_EPARSE;
        goto out;
    }
    if ((rc = parse_overrides(&reader, ring, &zones)) < 0 ||
        (rc = parse_table(&reader, ring)) < 0 ||
        (rc = check_table(ring, &zones, declared_slots)) < 0 ||
        (rc = ring_update_shares(ring, &zones)) < 0)
        goto out;
    if (reader.at != reader.end) {
        rc = CAIRN_EPARSE;
        goto out;
    }
    *out = ring;
    ring = NULL;
out:
    free(declared_slots);
    ring_zones_release(&zones);
    cairn_ring_free(ring);
    return rc;
}
