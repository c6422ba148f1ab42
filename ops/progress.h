/*
 * progress.h - the one progress line of cairnctl's long jobs (verify,
 * compact, rebalance, import, restore): done/total items, bytes, rate and
 * an ETA, redrawn in place on stderr at most twice a second. Shown only
 * when that stream is a terminal and -q was not given: piped or
 * redirected, a job prints no progress at all (its results and summary
 * are unchanged).
 *
 * Not thread-safe: a job with workers calls it under its own lock.
 */
#ifndef CAIRN_OPS_PROGRESS_H
#define CAIRN_OPS_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct cairn_ops_progress {
    FILE *out;            /* NULL: silent */
    const char *label;    /* "verify" (borrowed) */
    const char *unit;     /* "users" (borrowed) */
    uint64_t total;       /* items; 0: unknown */
    uint64_t total_bytes; /* 0: unknown (the ETA is then by items) */
    uint64_t started_ms, drawn_ms;
    size_t drawn_width; /* of the line on screen, to blank its rest */
};

/*
 * Starts a job's progress on out (borrowed; usually the context's err):
 * silent when quiet or when out is not a terminal. label and unit are
 * borrowed for the progress's life.
 */
void cairn_ops_progress_start(struct cairn_ops_progress *progress, FILE *out,
                              bool quiet, const char *label, const char *unit,
                              uint64_t total, uint64_t total_bytes);
/* Whether anything will be drawn (a terminal, not quiet). */
bool cairn_ops_progress_shown(const struct cairn_ops_progress *progress);
/* New totals, when they are known only once the job runs. */
void cairn_ops_progress_set_total(struct cairn_ops_progress *progress,
                                  uint64_t total, uint64_t total_bytes);
/*
 * done items and bytes so far; detail (may be NULL) ends the line
 * ("3 moving"). Redrawn when half a second passed since the last draw.
 */
void cairn_ops_progress_update(struct cairn_ops_progress *progress,
                               uint64_t done, uint64_t bytes,
                               const char *detail);
/* The last line drawn with the final figures, and a newline. */
void cairn_ops_progress_end(struct cairn_ops_progress *progress, uint64_t done,
                            uint64_t bytes);

/*
 * The line itself, without the terminal control: "verify: 32/100 users
 * (32%), 1.2 GiB of 3.4 GiB, 45.0 MiB/s, ETA 1m02s". Pure, for tests.
 */
void cairn_ops_progress_format(char *line, size_t size, const char *label,
                               const char *unit, uint64_t done, uint64_t total,
                               uint64_t bytes, uint64_t total_bytes,
                               uint64_t elapsed_ms, const char *detail);

#endif /* CAIRN_OPS_PROGRESS_H */
