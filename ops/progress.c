/*
 * progress.c - cairnctl's progress line (progress.h): one format for
 * every long job, drawn only on a terminal.
 */
#include "progress.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

#define REDRAW_MS 500

static uint64_t
monotonic_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

/* bytes as "812 B", "1.2 KiB" ... "3.4 TiB". */
static void
format_bytes(char *text, size_t size, double bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    size_t unit = 0;

    while (bytes >= 1024.0 && unit + 1 < sizeof(units) / sizeof(units[0])) {
        bytes /= 1024.0;
        unit++;
    }
    if (unit == 0)
        snprintf(text, size, "%.0f B", bytes);
    else
        snprintf(text, size, "%.1f %s", bytes, units[unit]);
}

/* seconds as "42s", "3m07s", "2h05m". */
static void
format_duration(char *text, size_t size, uint64_t seconds)
{
    if (seconds < 60)
        snprintf(text, size, "%llus", (unsigned long long)seconds);
    else if (seconds < 3600)
        snprintf(text, size, "%llum%02llus", (unsigned long long)seconds / 60,
                 (unsigned long long)seconds % 60);
    else
        snprintf(text, size, "%lluh%02llum", (unsigned long long)seconds / 3600,
                 (unsigned long long)seconds % 3600 / 60);
}

void
cairn_ops_progress_format(char *line, size_t size, const char *label,
                          const char *unit, uint64_t done, uint64_t total,
                          uint64_t bytes, uint64_t total_bytes,
                          uint64_t elapsed_ms, const char *detail)
{
    char amount[32], whole[32], rate[32], eta[32];
    size_t used;
    double seconds = (double)elapsed_ms / 1000.0, left = -1;

    if (total > 0)
        used = (size_t)snprintf(line, size, "%s: %llu/%llu %s (%llu%%)", label,
                                (unsigned long long)done,
                                (unsigned long long)total, unit,
                                (unsigned long long)(done * 100 / total));
    else
        used = (size_t)snprintf(line, size, "%s: %llu %s", label,
                                (unsigned long long)done, unit);
    format_bytes(amount, sizeof(amount), (double)bytes);
    format_bytes(whole, sizeof(whole), (double)total_bytes);
    format_bytes(rate, sizeof(rate), seconds > 0 ? bytes / seconds : 0.0);
    /* a job that counts no bytes (verify, compact) shows none */
    if (used < size && (bytes > 0 || total_bytes > 0))
        used += (size_t)snprintf(line + used, size - used, ", %s%s%s, %s/s",
                                 amount, total_bytes ? " of " : "",
                                 total_bytes ? whole : "", rate);
    /* By bytes when they are known (big users take longer), else by
     * items; nothing before the first of either is done. */
    if (total_bytes > 0 && bytes > 0 && bytes <= total_bytes)
        left = seconds * (double)(total_bytes - bytes) / (double)bytes;
    else if (total > 0 && done > 0 && done <= total)
        left = seconds * (double)(total - done) / (double)done;
    if (left >= 0)
        format_duration(eta, sizeof(eta), (uint64_t)(left + 0.5));
    if (used < size)
        used += (size_t)snprintf(line + used, size - used, ", ETA %s",
                                 left >= 0 ? eta : "?");
    if (detail != NULL && used < size)
        snprintf(line + used, size - used, ", %s", detail);
}

void
cairn_ops_progress_start(struct cairn_ops_progress *progress, FILE *out,
                         bool quiet, const char *label, const char *unit,
                         uint64_t total, uint64_t total_bytes)
{
    memset(progress, 0, sizeof(*progress));
    progress->out =
        !quiet && out != NULL && isatty(fileno(out)) == 1 ? out : NULL;
    progress->label = label;
    progress->unit = unit;
    progress->total = total;
    progress->total_bytes = total_bytes;
    progress->started_ms = monotonic_ms();
}

bool
cairn_ops_progress_shown(const struct cairn_ops_progress *progress)
{
    return progress->out != NULL;
}

void
cairn_ops_progress_set_total(struct cairn_ops_progress *progress,
                             uint64_t total, uint64_t total_bytes)
{
    progress->total = total;
    progress->total_bytes = total_bytes;
}

static void
draw(struct cairn_ops_progress *progress, uint64_t now, uint64_t done,
     uint64_t bytes, const char *detail)
{
    char line[512];
    size_t width;

    cairn_ops_progress_format(line, sizeof(line), progress->label,
                              progress->unit, done, progress->total, bytes,
                              progress->total_bytes, now - progress->started_ms,
                              detail);
    width = strlen(line);
    /* \r and blanks over what is left of a longer line drawn before */
    fprintf(progress->out, "\r%s%*s", line,
            progress->drawn_width > width ? (int)(progress->drawn_width - width)
                                          : 0,
            "");
    fflush(progress->out);
    progress->drawn_width = width;
    progress->drawn_ms = now;
}

void
cairn_ops_progress_update(struct cairn_ops_progress *progress, uint64_t done,
                          uint64_t bytes, const char *detail)
{
    uint64_t now;

    if (progress->out == NULL)
        return;
    now = monotonic_ms();
    if (progress->drawn_ms != 0 && now - progress->drawn_ms < REDRAW_MS)
        return;
    draw(progress, now, done, bytes, detail);
}

void
cairn_ops_progress_end(struct cairn_ops_progress *progress, uint64_t done,
                       uint64_t bytes)
{
    if (progress->out == NULL)
        return;
    draw(progress, monotonic_ms(), done, bytes, NULL);
    fputc('\n', progress->out);
    fflush(progress->out);
    progress->out = NULL; /* ended: later calls draw nothing */
}
