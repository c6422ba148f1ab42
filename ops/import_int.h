/*
 * import_int.h - what `cairnctl import` is made of: one backupd data file
 * adopted into a data directory (import_file.c), used by the single-user
 * and --all forms (cmd_import.c) and by the whole-partition migration into
 * a running cluster (import_backupd.c). Internal to cairn_ops; tests
 * include it.
 */
#ifndef CAIRN_OPS_IMPORT_INT_H
#define CAIRN_OPS_IMPORT_INT_H

#include "ops.h"

#include <stdbool.h>
#include <stdint.h>

#define CAIRN_IMPORT_TABLES 7 /* Cyrus's tables, compared row by row */

/* What importing one user found. Release with cairn_import_report_release. */
struct cairn_import_report {
    char *data_path;  /* the copy in the data directory, owned */
    bool cyrus_index; /* there was one to compare with */
    int64_t rows[CAIRN_IMPORT_TABLES];
    int64_t only_cairn[CAIRN_IMPORT_TABLES], only_cyrus[CAIRN_IMPORT_TABLES];
    int64_t differences;
    uint64_t data_bytes; /* of the copy, after any torn tail was cut */
    /* what the rebuild kept and dropped (see node.h) */
    uint64_t chunks, line_chunks, empty_members, partial_lines, cut_bytes;
    uint64_t first_partial_chunk, first_partial_line, first_empty, cut_at;
    char verify_error[512]; /* why it was refused: chunk, offset, rule */
};

void cairn_import_report_release(struct cairn_import_report *report);

/*
 * Copies source (a backupd data file; source + ".index" is read for the
 * comparison when there) into data_dir as <data_dir>/<hash>/<user>_XXXXXX,
 * rebuilds and fully verifies its index, compares it with Cyrus's, and
 * records userid in data_dir/catalog.db. The source is read under a
 * shared lock (CAIRN_ELOCKED while backupd writes it). A user the catalog
 * holds already is CAIRN_EEXIST. With strict, any difference from Cyrus's
 * index refuses the file; without, only chunks of Cyrus's index that the
 * rebuilt one lacks do (nothing backupd indexed may be lost). *outcome
 * (static text) says how far it got; report is filled either way.
 */
int cairn_import_user(const char *data_dir, const char *userid,
                      const char *source, bool strict,
                      struct cairn_import_report *report, const char **outcome);

/* The report as text lines (or one JSON object with context->json). */
void cairn_import_print_report(struct cairn_ops_context *context,
                               const char *userid,
                               const struct cairn_import_report *report,
                               const char *outcome);

/* The exit code for a cairn_import_user result. */
int cairn_import_exit_code(int rc);

/* --- import --from-backupd (import_backupd.c) ---------------------------- */

struct cairn_import_backupd_options {
    const char *from;        /* backupd's imapd.conf, its backups.db, or a
                                partition directory */
    const char *destination; /* of the config (-c) */
    const char *work_dir;    /* verified copies and the journal */
    const char *cyr_dbtool;  /* Cyrus's tool that reads backups.db */
    const char *dbtool_conf; /* -C for cyr_dbtool with a bare backups.db */
    bool replace;            /* a different copy on a node is replaced */
    bool strict;             /* any difference from Cyrus's index refuses */
    bool quiet;              /* no progress lines */
    unsigned jobs;           /* users in flight at once (1..64) */
};

/*
 * Moves every backup of a backupd server into the destination's nodes
 * (see import_backupd.c); prints a line per user and a summary. Returns a
 * cairnctl exit code: 0 when every user is imported or already present.
 */
int cairn_import_from_backupd(struct cairn_ops_context *context,
                              const struct cairn_import_backupd_options *opts);

#endif /* CAIRN_OPS_IMPORT_INT_H */
