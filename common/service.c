/*
 * service.c - the standard options of cairn's programs and their
 * notifications to systemd (sd_notify(3) from libsystemd).
 */
#include "service.h"

#include <inttypes.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

bool
cairn_service_standard_options(int argc, char **argv, const char *program,
                               const char *version, void (*usage)(FILE *out),
                               int *status)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            usage(stdout);
        else if (strcmp(argv[i], "--version") == 0)
            printf("%s %s\n", program, version);
        else
            continue;
        *status = fflush(stdout) == 0 ? 0 : 74; /* 74: EX_IOERR */
        return true;
    }
    return false;
}

void
cairn_service_ready(const char *status)
{
    /* A failed notification is not the daemon's failure: systemd, if it
     * listens, times the start out and says so. */
    if (status != NULL)
        sd_notifyf(0, "READY=1\nSTATUS=%s", status);
    else
        sd_notify(0, "READY=1");
}

void
cairn_service_reloading(void)
{
    struct timespec now;
    uint64_t usec = 0;

    if (clock_gettime(CLOCK_MONOTONIC, &now) == 0)
        usec = (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, usec);
}

void
cairn_service_stopping(void)
{
    sd_notify(0, "STOPPING=1");
}
