/*
 * loadgen.h - a csync load generator: many connections, each one a
 * distinct user, that speak to cairn's router (or any csync server) the
 * way Cyrus's sync_client -u does for a user's first backup, then for an
 * unchanged pass - so the server side is measured without sync_client's
 * own cost.
 *
 * Per connection: the banner, AUTHENTICATE PLAIN, then for its user
 *   GET USER u                       (nothing yet)
 *   APPLY RESERVE %(PARTITION default MBOXNAME (user.u) GUID (...))
 *   APPLY MESSAGE (%{default GUID SIZE}\r\n<body> ...)  in batches
 *   APPLY MAILBOX %(UNIQUEID ... MBOXNAME user.u ... RECORD (...))
 * and in the unchanged phase GET USER u again, `rounds` times (it must
 * now report the mailbox with LAST_UID = messages). Bodies are
 * generated text of log-normal sizes (median about 5 KB, as ordinary
 * mail), deterministic per (prefix, connection, message), written
 * straight from the generator: the load generator's memory is one batch.
 *
 * Every connection runs in its own thread; a phase starts for all of
 * them together. Latencies are per command, from the first byte sent to
 * the completion line. Library code: no logging, no exit; errors come
 * back as CAIRN_E* codes with a text in the result.
 */
#ifndef CAIRN_LOADGEN_H
#define CAIRN_LOADGEN_H

#include <stddef.h>
#include <stdint.h>

struct cairn_loadgen_options {
    const char *host;     /* "127.0.0.1" */
    const char *port;     /* the channel's csync port */
    const char *user;     /* SASL authentication identity */
    const char *password; /* its password */
    const char *prefix;   /* user names are <prefix><n> */
    unsigned connections; /* concurrent connections = users */
    unsigned messages;    /* per user */
    unsigned batch;       /* bodies per APPLY MESSAGE (sync_client: 1024) */
    size_t max_size;      /* largest generated body */
    unsigned rounds;      /* GET USER per user in the unchanged phase */
    unsigned seed;
};

/* One connection's figures (seconds, bytes). */
struct cairn_loadgen_connection {
    double ingest_seconds;
    uint64_t raw_bytes;
    double unchanged_seconds;
};

/*
 * The run's figures. latencies_ms are every command's latency of the
 * phase, sorted; connections[] one row per connection. Owned by the
 * result: release with cairn_loadgen_result_release().
 */
struct cairn_loadgen_phase {
    double wall_seconds;
    double *latencies_ms;
    size_t latency_count;
};

struct cairn_loadgen_result {
    struct cairn_loadgen_phase ingest, unchanged;
    struct cairn_loadgen_connection *connections;
    unsigned connection_count;
    uint64_t raw_bytes;
    uint64_t messages;
    char error[256]; /* the first failure: connection, command, reply */
};

/* Defaults for everything but host, port, user and password. */
void cairn_loadgen_options_init(struct cairn_loadgen_options *options);

/*
 * The ingest phase, for every connection at once. Connections stay open
 * for cairn_loadgen_unchanged(). Returns 0, or a negative CAIRN_E* code
 * with result->error naming the connection and the reply.
 */
struct cairn_loadgen;
int cairn_loadgen_new(const struct cairn_loadgen_options *options,
                      struct cairn_loadgen **loadgen);
int cairn_loadgen_ingest(struct cairn_loadgen *loadgen,
                         struct cairn_loadgen_result *result);
/* The unchanged phase (after ingest): GET USER rounds per connection. */
int cairn_loadgen_unchanged(struct cairn_loadgen *loadgen,
                            struct cairn_loadgen_result *result);
/* Closes every connection and frees the generator (NULL-safe). */
void cairn_loadgen_free(struct cairn_loadgen *loadgen);

/* Frees what result holds and zeroes it (NULL-safe). */
void cairn_loadgen_result_release(struct cairn_loadgen_result *result);
/* The q-quantile (0..1) of a sorted phase's latencies; 0 when none. */
double cairn_loadgen_quantile(const struct cairn_loadgen_phase *phase,
                              double q);

#endif /* CAIRN_LOADGEN_H */
