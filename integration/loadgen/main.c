/*
 * main.c - cairn-loadgen: runs the csync load generator (loadgen.h) at
 * one or more connection counts against a router's channel and prints,
 * per count, ingest MB/s, unchanged-pass users/s, command latencies, the
 * slowest and fastest connection, and - for the server processes named
 * with --watch - their CPU per raw MB and the router's peak RSS.
 */
#include "common.h"
#include "loadgen.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_WATCHED 16

static const char usage[] =
    "usage: cairn-loadgen -p port -u user -w password [-H host]\n"
    "           [-c counts] [-m messages] [-b batch] [-M max-size]\n"
    "           [-r rounds] [-s seed] [-P prefix] [-W name=pid] ...\n"
    "\n"
    "Each connection is one user (<prefix><count>c<n>) sending a first\n"
    "backup as sync_client -u does (GET USER, APPLY RESERVE, APPLY\n"
    "MESSAGE, APPLY MAILBOX), then `rounds` unchanged passes (GET USER).\n"
    "  -c, --connections  comma list of concurrent connections (4)\n"
    "  -m, --messages     messages per user (100)\n"
    "  -b, --batch        bodies per APPLY MESSAGE (1024)\n"
    "  -M, --max-size     largest body, log-normal sizes below it (1M)\n"
    "  -r, --rounds       unchanged GET USER passes per user (5)\n"
    "  -W, --watch        a server process to account: name=pid (the one\n"
    "                     named router also gives the RSS column)\n"
    "Exit: 0 every command succeeded, 1 a command failed, 64 usage.\n";

struct watched {
    char name[32];
    int pid;
    double cpu_before;
};

/* CPU seconds (utime + stime) of pid from /proc; -1 when unreadable. */
static double
process_cpu(int pid)
{
    char path[64], text[1024];
    unsigned long long utime = 0, stime = 0;
    FILE *f;
    char *close_paren;

    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    if (!(f = fopen(path, "r")))
        return -1;
    if (!fgets(text, sizeof(text), f)) {
        fclose(f);
        return -1;
    }
    fclose(f);
    close_paren = strrchr(text, ')');
    if (!close_paren ||
        sscanf(close_paren + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
               &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* VmHWM of pid in MiB; 0 when unreadable. */
static double
process_peak_mib(int pid)
{
    char path[64], line[256];
    double kib = 0;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    if (!(f = fopen(path, "r")))
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %lf", &kib) == 1)
            break;
    fclose(f);
    return kib / 1024.0;
}

static int
parse_count(const char *text, uint64_t min, uint64_t max, unsigned *out)
{
    uint64_t value;

    if (cairn_parse_u64_str(text, min, max, &value) < 0)
        return -1;
    *out = (unsigned)value;
    return 0;
}

static int
parse_watch(const char *text, struct watched *w)
{
    const char *eq = strchr(text, '=');
    unsigned pid;

    if (!eq || eq == text || (size_t)(eq - text) >= sizeof(w->name) ||
        parse_count(eq + 1, 1, 1u << 30, &pid) < 0)
        return -1;
    memcpy(w->name, text, (size_t)(eq - text));
    w->name[eq - text] = '\0';
    w->pid = (int)pid;
    return 0;
}

static void
print_header(const struct watched *watched, size_t count)
{
    printf("%5s %8s %8s %8s %8s %8s %13s %9s %8s %8s", "conns", "ingest s",
           "MB/s", "msgs/s", "p50 ms", "p99 ms", "conn MB/s", "users/s",
           "unch p50", "unch p99");
    for (size_t i = 0; i < count; i++)
        printf(" %9.9s", watched[i].name);
    if (count)
        printf(" %9s %9s", "srv ms/MB", "rtr RSS");
    printf("\n");
}

static void
print_row(unsigned connections, const struct cairn_loadgen_result *r,
          const struct watched *watched, const double *cpu, size_t count)
{
    double mb = (double)r->raw_bytes / 1e6, slowest = 0, fastest = 0;
    double total_cpu = 0, router_peak = 0;
    unsigned rounds_users = 0;

    for (unsigned i = 0; i < r->connection_count; i++) {
        const struct cairn_loadgen_connection *c = &r->connections[i];
        double rate = c->ingest_seconds > 0
                          ? (double)c->raw_bytes / 1e6 / c->ingest_seconds
                          : 0;

        if (i == 0 || rate < slowest)
            slowest = rate;
        if (rate > fastest)
            fastest = rate;
    }
    rounds_users = (unsigned)r->unchanged.latency_count;
    printf("%5u %8.2f %8.1f %8.0f %8.2f %8.2f %6.2f/%-6.2f %9.0f %8.2f %8.2f",
           connections, r->ingest.wall_seconds,
           r->ingest.wall_seconds > 0 ? mb / r->ingest.wall_seconds : 0,
           r->ingest.wall_seconds > 0
               ? (double)r->messages / r->ingest.wall_seconds
               : 0,
           cairn_loadgen_quantile(&r->ingest, 0.5),
           cairn_loadgen_quantile(&r->ingest, 0.99), slowest, fastest,
           r->unchanged.wall_seconds > 0
               ? rounds_users / r->unchanged.wall_seconds
               : 0,
           cairn_loadgen_quantile(&r->unchanged, 0.5),
           cairn_loadgen_quantile(&r->unchanged, 0.99));
    for (size_t i = 0; i < count; i++) {
        printf(" %9.1f", mb > 0 ? 1000.0 * cpu[i] / mb : 0);
        total_cpu += cpu[i];
        if (strcmp(watched[i].name, "router") == 0)
            router_peak = process_peak_mib(watched[i].pid);
    }
    if (count)
        printf(" %9.1f %9.1f", mb > 0 ? 1000.0 * total_cpu / mb : 0,
               router_peak);
    printf("\n");
    fflush(stdout);
}

/* One connection count: ingest, then unchanged; CPU over the ingest. */
static int
run_level(const struct cairn_loadgen_options *base, unsigned connections,
          struct watched *watched, size_t count)
{
    struct cairn_loadgen_options options = *base;
    struct cairn_loadgen_result result = {0};
    struct cairn_loadgen *loadgen = NULL;
    double cpu[MAX_WATCHED] = {0};
    char prefix[96];
    int rc;

    snprintf(prefix, sizeof(prefix), "%s%uc", base->prefix, connections);
    options.prefix = prefix;
    options.connections = connections;
    if ((rc = cairn_loadgen_new(&options, &loadgen)) < 0)
        goto out;
    for (size_t i = 0; i < count; i++)
        watched[i].cpu_before = process_cpu(watched[i].pid);
    if ((rc = cairn_loadgen_ingest(loadgen, &result)) < 0)
        goto out;
    for (size_t i = 0; i < count; i++)
        cpu[i] = process_cpu(watched[i].pid) - watched[i].cpu_before;
    if ((rc = cairn_loadgen_unchanged(loadgen, &result)) < 0)
        goto out;
    print_row(connections, &result, watched, cpu, count);
out:
    if (rc < 0)
        fprintf(stderr, "cairn-loadgen: %u connections: %s\n", connections,
                result.error[0] ? result.error : cairn_strerror(rc));
    cairn_loadgen_result_release(&result);
    cairn_loadgen_free(loadgen);
    return rc;
}

int
main(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"port", required_argument, NULL, 'p'},
        {"user", required_argument, NULL, 'u'},
        {"password", required_argument, NULL, 'w'},
        {"host", required_argument, NULL, 'H'},
        {"connections", required_argument, NULL, 'c'},
        {"messages", required_argument, NULL, 'm'},
        {"batch", required_argument, NULL, 'b'},
        {"max-size", required_argument, NULL, 'M'},
        {"rounds", required_argument, NULL, 'r'},
        {"seed", required_argument, NULL, 's'},
        {"prefix", required_argument, NULL, 'P'},
        {"watch", required_argument, NULL, 'W'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct cairn_loadgen_options options;
    struct watched watched[MAX_WATCHED];
    size_t watch_count = 0;
    const char *counts = "4";
    char default_prefix[32], *list = NULL, *save = NULL;
    uint64_t size;
    int opt, failed = 0;

    cairn_loadgen_options_init(&options);
    snprintf(default_prefix, sizeof(default_prefix), "lg%lx",
             (unsigned long)time(NULL));
    options.prefix = default_prefix;
    while ((opt = getopt_long(argc, argv, "p:u:w:H:c:m:b:M:r:s:P:W:h",
                              long_options, NULL)) != -1) {
        int bad = 0;

        switch (opt) {
        case 'p':
            options.port = optarg;
            break;
        case 'u':
            options.user = optarg;
            break;
        case 'w':
            options.password = optarg;
            break;
        case 'H':
            options.host = optarg;
            break;
        case 'c':
            counts = optarg;
            break;
        case 'm':
            bad = parse_count(optarg, 1, 8192, &options.messages);
            break;
        case 'b':
            bad = parse_count(optarg, 1, 1024, &options.batch);
            break;
        case 'r':
            bad = parse_count(optarg, 0, 1000000, &options.rounds);
            break;
        case 's':
            bad = parse_count(optarg, 0, 1u << 30, &options.seed);
            break;
        case 'P':
            options.prefix = optarg;
            break;
        case 'M':
            bad = cairn_parse_size(optarg, &size) < 0 || size < 1024 ||
                  size > (1u << 30);
            options.max_size = (size_t)size;
            break;
        case 'W':
            bad = watch_count == MAX_WATCHED ||
                  parse_watch(optarg, &watched[watch_count++]) < 0;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "cairn-loadgen: bad -%c %s\n%s", opt,
                    optarg ? optarg : "", usage);
            return 64;
        }
    }
    if (!options.port || !options.user || !options.password || optind != argc) {
        fputs(usage, stderr);
        return 64;
    }
    printf("# %u messages per user (log-normal, at most %zu bytes), "
           "batches of %u, %u unchanged passes\n",
           options.messages, options.max_size, options.batch, options.rounds);
    print_header(watched, watch_count);
    fflush(stdout);
    if (!(list = strdup(counts)))
        return 1;
    for (char *item = strtok_r(list, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        unsigned connections;

        if (parse_count(item, 1, 4096, &connections) < 0) {
            fprintf(stderr, "cairn-loadgen: bad connection count %s\n", item);
            free(list);
            return 64;
        }
        if (run_level(&options, connections, watched, watch_count) < 0)
            failed = 1;
    }
    free(list);
    printf("(MB/s: raw mail ingested; conn MB/s: slowest/fastest "
           "connection; users/s: unchanged GET USER; per-process columns: "
           "CPU ms per raw MB over the ingest; rtr RSS: router VmHWM MiB)\n");
    return failed;
}
