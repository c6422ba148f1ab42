/*
 * crc.c - SYNC_CRC and SYNC_CRC_ANNOT of a mailbox, as Cyrus 3.6 computes
 * them (imap/mailbox.c: crc_basic, crc_annot; sync-protocol.md §6). A
 * backup target echoes what the client sent; these are for checking.
 */
#include "node_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#define CRC_INIT_ANNOT 12345678u

static uint32_t
crc_text(const char *text, size_t len)
{
    return (uint32_t)crc32(0L, (const unsigned char *)text, (uInt)len);
}

static uint32_t
flag_crc(const char *flag)
{
    char lower[256];
    size_t len = strlen(flag);

    if (len >= sizeof(lower))
        len = sizeof(lower) - 1;
    for (size_t i = 0; i < len; i++) {
        char c = flag[i];
        lower[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    return crc_text(lower, len);
}

static uint32_t
crc_annot(uint32_t uid, const char *entry, const char *userid,
          const char *value)
{
    char head[1024];
    int len =
        snprintf(head, sizeof(head), "%" PRIu32 " %s %s ", uid, entry, userid);
    uint32_t crc;

    if (len < 0 || (size_t)len >= sizeof(head))
        len = (int)sizeof(head) - 1;
    crc = (uint32_t)crc32(0L, (const unsigned char *)head, (uInt)len);
    return (uint32_t)crc32(crc, (const unsigned char *)value,
                           (uInt)strlen(value));
}

static uint32_t
crc_basic(const struct cairn_crc_record *record)
{
    char text[256];
    uint32_t flags = 0;
    int len;

    for (size_t i = 0; i < record->flag_count; i++)
        flags ^= flag_crc(record->flags[i]);
    len = snprintf(text, sizeof(text),
                   "%" PRIu32 " %" PRIu64 " %" PRId64 " (%" PRIu32 ") %" PRId64
                   " %s",
                   record->uid, record->modseq, record->last_updated, flags,
                   record->internaldate, record->guid);
    if (len < 0 || (size_t)len >= sizeof(text))
        len = (int)sizeof(text) - 1;
    return crc_text(text, (size_t)len);
}

static uint32_t
record_annot_crc(const struct cairn_crc_record *record)
{
    char value[32];
    uint32_t crc = 0;

    if (record->thrid != 0) {
        snprintf(value, sizeof(value), "%" PRIx64, record->thrid);
        crc ^=
            crc_annot(record->uid, "/vendor/cmu/cyrus-imapd/thrid", "", value);
    }
    if (record->savedate != 0) {
        snprintf(value, sizeof(value), "%" PRId64, record->savedate);
        crc ^= crc_annot(record->uid, "/vendor/cmu/cyrus-imapd/savedate", "",
                         value);
    }
    if (record->createdmodseq != 0) {
        snprintf(value, sizeof(value), "%" PRIu64, record->createdmodseq);
        crc ^= crc_annot(record->uid, "/vendor/cmu/cyrus-imapd/createdmodseq",
                         "", value);
    }
    for (size_t i = 0; i < record->annotation_count; i++)
        crc ^= crc_annot(record->uid, record->annotations[i][0],
                         record->annotations[i][1], record->annotations[i][2]);
    return crc;
}

void
cairn_node_sync_crcs(const struct cairn_crc_record *records, size_t count,
                     uint32_t *crc, uint32_t *crc_annot_out)
{
    uint32_t basic = 0, annot = CRC_INIT_ANNOT;

    for (size_t i = 0; i < count; i++) {
        if (records[i].expunged)
            continue;
        basic ^= crc_basic(&records[i]);
        annot ^= record_annot_crc(&records[i]);
    }
    *crc = basic;
    *crc_annot_out = annot;
}
