/*
 * service.h - what a cairn daemon says to whoever started it (library
 * cairn_common): the options every program answers the same way (-h,
 * --help, --version), and the state changes it reports to systemd with
 * sd_notify(3) (READY, RELOADING, STOPPING) when it runs as a
 * Type=notify unit. Outside systemd (no NOTIFY_SOCKET) the notifications
 * do nothing, so tests and hand-started daemons need no special case.
 */
#ifndef CAIRN_SERVICE_H
#define CAIRN_SERVICE_H

#include <stdbool.h>
#include <stdio.h>

/*
 * Answers -h/--help (usage(out) on stdout) and --version ("PROGRAM
 * VERSION" on stdout) when argv holds one of them before "--", before
 * the program's own option parsing. Returns true when it answered: the
 * program then exits with *status (0, or 74 if stdout could not be
 * written). usage is called with the stream to write to.
 */
bool cairn_service_standard_options(int argc, char **argv, const char *program,
                                    const char *version,
                                    void (*usage)(FILE *out), int *status);

/*
 * The daemon listens and serves: READY=1 with a one-line STATUS=
 * (status may be NULL). Call once, after every socket is bound.
 */
void cairn_service_ready(const char *status);
/*
 * SIGHUP: RELOADING=1 (with MONOTONIC_USEC, as systemd asks) before the
 * configuration is read again; cairn_service_ready() once it is applied
 * or refused.
 */
void cairn_service_reloading(void);
/* SIGTERM/SIGINT: STOPPING=1 as the daemon starts to shut down. */
void cairn_service_stopping(void);

#endif /* CAIRN_SERVICE_H */
