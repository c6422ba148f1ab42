/*
 * bench_proto.c - throughput of the dlist printer and parser, the csync
 * command reader and the COMPRESS stream on a Cyrus-shaped APPLY MAILBOX
 * with many records. Prints figures; asserts only correctness, never time.
 */
#include "check.h"
#include "csync.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define RECORDS 20000
#define ROUNDS 5

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct cairn_dlist *
build_mailbox(void)
{
    struct cairn_dlist *mailbox = cairn_dlist_new_kvlist("MAILBOX");
    struct cairn_dlist *records = NULL;
    unsigned char sha1[20] = {0};

    cairn_dlist_add_atom(mailbox, "UNIQUEID", "k7qz3m0x9d2w5r8t1v4b6n0c");
    cairn_dlist_add_atom(mailbox, "MBOXNAME", "user.anne");
    cairn_dlist_add_num(mailbox, "SYNC_CRC", 4108617793u);
    cairn_dlist_add_atom(mailbox, "ACL", "anne\tlrswipkxtecdan\t");
    cairn_dlist_add_list(mailbox, "RECORD", &records);
    for (unsigned uid = 1; uid <= RECORDS; uid++) {
        struct cairn_dlist *record = NULL, *flags = NULL, *annots = NULL,
                           *annot = NULL;
        memcpy(sha1, &uid, sizeof(uid));
        cairn_dlist_add_kvlist(records, NULL, &record);
        cairn_dlist_add_num(record, "UID", uid);
        cairn_dlist_add_num(record, "MODSEQ", uid + 3);
        cairn_dlist_add_num(record, "LAST_UPDATED", 1748858580);
        cairn_dlist_add_list(record, "FLAGS", &flags);
        cairn_dlist_add_flag(flags, NULL, "\\Seen");
        cairn_dlist_add_num(record, "INTERNALDATE", 1748858460);
        cairn_dlist_add_num(record, "SIZE", 148);
        cairn_dlist_add_guid_bytes(record, "GUID", sha1);
        cairn_dlist_add_list(record, "ANNOTATIONS", &annots);
        cairn_dlist_add_kvlist(annots, NULL, &annot);
        cairn_dlist_add_atom(annot, "ENTRY",
                             "/vendor/cmu/cyrus-imapd/savedate");
        cairn_dlist_add_atom(annot, "USERID", "");
        cairn_dlist_add_num(annot, "MODSEQ", 0);
        cairn_dlist_add_num(annot, "VALUE", 1748858460);
    }
    return mailbox;
}

int
main(void)
{
    struct cairn_dlist *mailbox = build_mailbox();
    struct cairn_csync_reader *reader = NULL;
    struct cairn_compress *sender = NULL, *receiver = NULL;
    struct cairn_buf wire, compressed, inflated;
    double start, print_s = 0, parse_s = 0, read_s = 0, deflate_s = 0,
                  inflate_s = 0;
    size_t commands = 0;

    cairn_buf_init(&wire, 256u << 20);
    cairn_buf_init(&compressed, 256u << 20);
    cairn_buf_init(&inflated, 256u << 20);
    for (int round = 0; round < ROUNDS; round++) {
        cairn_buf_reset(&wire);
        start = now();
        CHECK_INT(cairn_csync_write_command(&wire, "APPLY", mailbox, NULL), 0);
        print_s += now() - start;
    }
    for (int round = 0; round < ROUNDS; round++) {
        struct cairn_dlist *tree = NULL;
        start = now();
        CHECK_INT(
            cairn_dlist_parse(wire.data + 6, wire.len - 6,
                              CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL,
                              NULL, NULL, &tree, NULL, 0),
            0);
        parse_s += now() - start;
        cairn_dlist_free(tree);
    }
    CHECK_INT(cairn_csync_reader_new(65536, NULL, NULL, &reader), 0);
    for (int round = 0; round < ROUNDS && reader != NULL; round++) {
        struct cairn_csync_command cmd;
        size_t at = 0, used = 0;
        int rc = CAIRN_EAGAIN;
        start = now();
        while (at < wire.len && rc == CAIRN_EAGAIN) {
            size_t piece = wire.len - at < 4096 ? wire.len - at : 4096;
            rc = cairn_csync_reader_feed(reader, wire.data + at, piece, &used,
                                         &cmd);
            at += used;
        }
        read_s += now() - start;
        CHECK_INT(rc, 0);
        commands += rc == 0;
        cairn_csync_command_release(&cmd);
    }
    CHECK_INT(cairn_compress_new(&sender), 0);
    CHECK_INT(cairn_compress_new(&receiver), 0);
    start = now();
    for (size_t at = 0; sender && at < wire.len; at += 65536) {
        size_t piece = wire.len - at < 65536 ? wire.len - at : 65536;
        CHECK_INT(cairn_compress_deflate(sender, wire.data + at, piece, true,
                                         &compressed),
                  0);
    }
    deflate_s = now() - start;
    start = now();
    for (size_t at = 0, used = 1; receiver && at < compressed.len && used;
         at += used)
        CHECK_INT(cairn_compress_inflate(receiver, compressed.data + at,
                                         compressed.len - at, &used, 1 << 20,
                                         &inflated),
                  0);
    inflate_s = now() - start;
    CHECK_MEM(inflated.data, inflated.len, wire.data, wire.len);

    double mb = (double)wire.len / 1e6;
    printf("APPLY MAILBOX with %d records: %.2f MB on the wire\n", RECORDS, mb);
    printf("  print          %8.1f MB/s\n", mb * ROUNDS / print_s);
    printf("  parse (whole)  %8.1f MB/s\n", mb * ROUNDS / parse_s);
    printf("  command reader %8.1f MB/s (4 KiB pieces, %zu commands)\n",
           mb * ROUNDS / read_s, commands);
    printf(
        "  deflate        %8.1f MB/s, %.1f%% of input (sync flush / 64 KiB)\n",
        mb / deflate_s, 100.0 * (double)compressed.len / (double)wire.len);
    printf("  inflate        %8.1f MB/s (output)\n", mb / inflate_s);
    cairn_compress_free(sender);
    cairn_compress_free(receiver);
    cairn_csync_reader_free(reader);
    cairn_dlist_free(mailbox);
    cairn_buf_release(&wire);
    cairn_buf_release(&compressed);
    cairn_buf_release(&inflated);
    return check_exit("bench_proto");
}
