/*
 * log.c - log lines for daemons and tools, to stderr and/or syslog.
 * Libraries do not call this; they return codes.
 */
#include "common.h"

#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

static struct {
    const char *ident;
    enum cairn_log_level level;
    bool to_stderr;
    bool to_syslog;
} log_state = {"cairn", CAIRN_LOG_INFO, true, false};

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void
cairn_log_init(const char *ident, enum cairn_log_level level, bool to_stderr,
               bool to_syslog)
{
    log_state.ident = ident;
    log_state.level = level;
    log_state.to_stderr = to_stderr;
    log_state.to_syslog = to_syslog;
    if (to_syslog)
        openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void
cairn_log_set_level(enum cairn_log_level level)
{
    log_state.level = level;
}

int
cairn_log_level_parse(const char *name, enum cairn_log_level *level)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *level = (enum cairn_log_level)i;
            return CAIRN_OK;
        }
    }
    return CAIRN_EINVAL;
}

void
cairn_vlog(enum cairn_log_level level, const char *fmt, va_list ap)
{
    static const int syslog_priority[] = {LOG_ERR, LOG_WARNING, LOG_INFO,
                                          LOG_DEBUG};
    char line[2048];

    if (level > log_state.level)
        return;
    vsnprintf(line, sizeof(line), fmt, ap);
    if (log_state.to_stderr) {
        struct timespec now;
        struct tm tm;
        char stamp[32];

        clock_gettime(CLOCK_REALTIME, &now);
        gmtime_r(&now.tv_sec, &tm);
        strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
        fprintf(stderr, "%s.%03ldZ %s %s: %s\n", stamp, now.tv_nsec / 1000000,
                log_state.ident, level_names[level], line);
    }
    if (log_state.to_syslog)
        syslog(syslog_priority[level], "%s", line);
}

void
cairn_log(enum cairn_log_level level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    cairn_vlog(level, fmt, ap);
    va_end(ap);
}
