/*
 * ring_file.c - the ring file: a text file routers, nodes and cairnctl
 * share. Layout (every line ends in \n; lines starting with # are comments
 * for people and are covered by the checksum too):
 *
 *   # cairn ring file ...               readable summary
 *   cairn-ring 1                        format version
 *   destination NAME
 *   epoch N
 *   replicas R
 *   partition-power K
 *   hash fnv1a64-fmix64                 the user hash, by name
 *   nodes N
 *   node NAME WEIGHT ZONE SLOTS         N lines; SLOTS is checked on load
 *   overrides N
 *   override USERID NODE...             N lines; USERID %XX-escaped
 *   table zlib BYTES                    partition table: 2^K x R node
 *   BASE64...                           indices, big-endian 16-bit,
 *   end                                 partition-major, zlib, base64
 *   sha256 HEX                          SHA-256 of all bytes above
 */
#include "common.h"
#include "placement_int.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define HASH_NAME "fnv1a64-fmix64"
#define BASE64_LINE_BYTES 57 /* 76 characters of base64 per line */
#define MAX_LINE (64 * 1024)

static bool
user_byte_plain(unsigned char byte)
{
    return byte > 0x20 && byte < 0x7f && byte != '%';
}

static int
append_userid(struct cairn_buf *out, const char *userid, size_t len)
{
    int rc = CAIRN_OK;

    for (size_t i = 0; i < len && rc == 0; i++) {
        unsigned char byte = (unsigned char)userid[i];

        if (user_byte_plain(byte))
            rc = cairn_buf_append(out, &userid[i], 1);
        else
            rc = cairn_buf_printf(out, "%%%02X", byte);
    }
    return rc;
}

/* The partition table as zlib-compressed big-endian 16-bit indices. */
static int
pack_table(const struct cairn_ring *ring, unsigned char **packed,
           size_t *packed_len)
{
    size_t count = (size_t)ring->partitions * ring->replicas;
    unsigned char *raw = malloc(count * 2), *zipped = NULL;
    uLongf zipped_len = compressBound(count * 2);
    int rc = CAIRN_OK;

    zipped = malloc(zipped_len);
    if (raw == NULL || zipped == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        raw[2 * i] = (unsigned char)(ring->table[i] >> 8);
        raw[2 * i + 1] = (unsigned char)(ring->table[i] & 0xff);
    }
    /* level 5: level 9 is 30x slower on few-node tables for 10% less */
    if (compress2(zipped, &zipped_len, raw, count * 2, 5) != Z_OK) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    *packed = zipped;
    *packed_len = zipped_len;
    zipped = NULL;
out:
    free(raw);
    free(zipped);
    return rc;
}

static int
append_base64(struct cairn_buf *out, const unsigned char *data, size_t len)
{
    unsigned char line[4 * BASE64_LINE_BYTES / 3 + 4];
    int rc = CAIRN_OK;

    for (size_t at = 0; at < len && rc == 0; at += BASE64_LINE_BYTES) {
        size_t chunk =
            len - at < BASE64_LINE_BYTES ? len - at : BASE64_LINE_BYTES;
        int written = EVP_EncodeBlock(line, data + at, (int)chunk);

        if ((rc = cairn_buf_append(out, line, (size_t)written)) == 0)
            rc = cairn_buf_append(out, "\n", 1);
    }
    return rc;
}

static int
append_header(const struct cairn_ring *ring, struct cairn_buf *out)
{
    int rc;

    rc = cairn_buf_printf(
        out,
        "# cairn ring file: which storage nodes hold each user of a "
        "destination.\n"
        "# Made by 'cairnctl ring'; do not edit, the checksum covers every "
        "line.\n"
        "# %zu nodes, %u replicas, %u partitions, %zu overrides, balance "
        "%.4f\n"
        "cairn-ring %d\ndestination %s\nepoch %llu\nreplicas %u\n"
        "partition-power %u\nhash %s\nnodes %zu\n",
        ring->node_count, ring->replicas, ring->partitions,
        ring->override_count, cairn_ring_balance(ring),
        CAIRN_RING_FORMAT_VERSION, ring->destination,
        (unsigned long long)ring->epoch, ring->replicas, ring->partition_power,
        HASH_NAME, ring->node_count);
    for (size_t i = 0; i < ring->node_count && rc == 0; i++) {
        const struct ring_node *node = &ring->nodes[i];

        rc = cairn_buf_printf(out, "node %s %u %s %llu\n", node->name,
                              node->weight, node->zone,
                              (unsigned long long)node->slots);
    }
    return rc;
}

static int
append_overrides(const struct cairn_ring *ring, struct cairn_buf *out)
{
    int rc = cairn_buf_printf(out, "overrides %zu\n", ring->override_count);

    for (size_t i = 0; i < ring->override_count && rc == 0; i++) {
        const struct ring_override *entry = &ring->overrides[i];

        rc = cairn_buf_append_str(out, "override ");
        if (rc == 0)
            rc = append_userid(out, entry->userid, entry->len);
        for (unsigned r = 0; r < ring->replicas && rc == 0; r++)
            rc =
                cairn_buf_printf(out, " %s", ring->nodes[entry->nodes[r]].name);
        if (rc == 0)
            rc = cairn_buf_append(out, "\n", 1);
    }
    return rc;
}

/* Only a rebalanced ring may be written: staged changes are refused. */
static int
check_writable(const struct cairn_ring *ring)
{
    struct ring_zones zones = {0};
    int rc;

    for (size_t i = 0; i < ring->node_count; i++) {
        if (ring->nodes[i].removed)
            return CAIRN_ESTATE;
    }
    if ((rc = ring_zones_init(ring, &zones)) < 0)
        return rc;
    for (uint32_t p = 0; p < ring->partitions && rc == 0; p++) {
        if (!ring_row_valid(ring, &zones,
                            ring->table + (size_t)p * ring->replicas))
            rc = CAIRN_ESTATE;
    }
    ring_zones_release(&zones);
    return rc;
}

int
cairn_ring_format(const struct cairn_ring *ring, char **text, size_t *len)
{
    struct cairn_buf out;
    unsigned char *packed = NULL;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    size_t packed_len = 0;
    int rc;

    cairn_buf_init(&out, CAIRN_RING_MAX_FILE_SIZE);
    if ((rc = check_writable(ring)) < 0)
        goto out;
    if ((rc = append_header(ring, &out)) < 0 ||
        (rc = append_overrides(ring, &out)) < 0)
        goto out;
    if ((rc = pack_table(ring, &packed, &packed_len)) < 0)
        goto out;
    if ((rc = cairn_buf_printf(&out, "table zlib %zu\n", packed_len)) < 0 ||
        (rc = append_base64(&out, packed, packed_len)) < 0 ||
        (rc = cairn_buf_append_str(&out, "end\n")) < 0)
        goto out;
    SHA256((const unsigned char *)out.data, out.len, digest);
    if ((rc = cairn_buf_append_str(&out, "sha256 ")) < 0)
        goto out;
    for (size_t i = 0; i < sizeof(digest) && rc == 0; i++)
        rc = cairn_buf_printf(&out, "%02x", digest[i]);
    if (rc == 0)
        rc = cairn_buf_append(&out, "\n", 1);
    if (rc == 0)
        rc = cairn_buf_detach(&out, text, len);
out:
    free(packed);
    cairn_buf_release(&out);
    return rc;
}

int
cairn_ring_save(const struct cairn_ring *ring, const char *path)
{
    char *text = NULL, *temp = NULL;
    size_t len = 0;
    int fd = -1, rc;

    if ((rc = cairn_ring_format(ring, &text, &len)) < 0)
        goto out;
    if (asprintf(&temp, "%s.tmp.%ld", path, (long)getpid()) < 0) {
        temp = NULL;
        rc = CAIRN_ENOMEM;
        goto out;
    }
    fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    /* 0644 whatever the umask (data_mode): the ring names nodes, no user,
     * and the daemons' service user must read what root's cairnctl made. */
    if (fd < 0 || fchmod(fd, 0644) < 0) {
        rc = CAIRN_EIO;
        goto out;
    }
    if ((rc = cairn_write_all(fd, text, len)) < 0)
        goto out;
    if (fsync(fd) < 0 || close(fd) < 0) {
        fd = -1;
        rc = CAIRN_EIO;
        goto out;
    }
    fd = -1;
    if (rename(temp, path) < 0) {
        rc = CAIRN_EIO;
        goto out;
    }
    rc = cairn_fsync_parent_dir(path);
out:
    if (fd >= 0)
        close(fd);
    if (rc < 0 && temp != NULL)
        unlink(temp);
    free(temp);
    free(text);
    return rc;
}

int
cairn_ring_load(const char *path, struct cairn_ring **out)
{
    struct cairn_buf text;
    struct stat info;
    int fd = -1, rc = CAIRN_OK;

    *out = NULL;
    cairn_buf_init(&text, CAIRN_RING_MAX_FILE_SIZE);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        rc = errno == ENOENT ? CAIRN_ENOENT : CAIRN_EIO;
        goto out;
    }
    if (fstat(fd, &info) < 0) {
        rc = CAIRN_EIO;
        goto out;
    }
    if (info.st_size > (off_t)CAIRN_RING_MAX_FILE_SIZE) {
        rc = CAIRN_ETOOBIG;
        goto out;
    }
    for (;;) {
        size_t room = text.max - text.len < 65536 ? text.max - text.len : 65536;
        ssize_t got;

        if (room == 0) {
            rc = CAIRN_ETOOBIG;
            goto out;
        }
        if ((rc = cairn_buf_reserve(&text, room)) < 0)
            goto out;
        got = read(fd, text.data + text.len, room);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = CAIRN_EIO;
            goto out;
        }
        if (got == 0)
            break;
        text.len += (size_t)got;
        text.data[text.len] = '\0';
    }
    rc = cairn_ring_parse(text.data ? text.data : "", text.len, out);
out:
    if (fd >= 0)
        close(fd);
    cairn_buf_release(&text);
    return rc;
}
