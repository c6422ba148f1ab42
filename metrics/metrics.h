/*
 * metrics.h - what the daemons count, and the Prometheus /metrics endpoint
 * that shows it (issue 12).
 *
 * A registry holds metric families (a name, a help line, a type, label
 * names) and their series (one per set of label values). The daemon's event
 * loop updates series with atomic operations (C11 stdatomic, relaxed: each
 * value is exact, a scrape may see one counter a moment before another);
 * the HTTP server runs libmicrohttpd on its own thread and renders the
 * registry as Prometheus text exposition (version 0.0.4) at GET /metrics.
 *
 * Threads and locks: the registry's structure (families, series) is
 * guarded by one mutex, taken only to find or create a series and to
 * render into memory - never across network I/O; values are atomics.
 * Collectors (cairn_metrics_add_collector) run on the scraping thread
 * just before a render, one scrape at a time.
 *
 * Adding a metric is one line where the thing happens:
 *
 *     cairn_metrics_count(cairn_metrics_process(),
 *                         "cairn_node_reserve_refusals_total",
 *                         "writes refused below [node] reserve", 1);
 *     cairn_metrics_set(cairn_metrics_process(), "cairn_node_reserve_bytes",
 *                       "free space the node keeps", reserve);
 *
 * (by name, no labels; found or created on first use). With labels, or on
 * a hot path, keep the family and look the series up by label values:
 *
 *     family = cairn_metrics_counter(cairn_metrics_process(),
 *                                    "cairn_router_commands_total",
 *                                    "csync commands", "channel,verb,result");
 *     cairn_metric_add(cairn_metric_get(family, "backup", "APPLY", "ok"), 1);
 *
 * Metrics never fail the work they count: every function here tolerates a
 * NULL registry, family or series (and returns NULL when it cannot
 * allocate), so without metrics_listen (no process registry) they cost a
 * NULL test.
 *
 * Families and series live as long as the registry; pointers to them stay
 * valid until cairn_metrics_free.
 */
#ifndef CAIRN_METRICS_H
#define CAIRN_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct cairn_buf;
struct cairn_metrics;
struct cairn_metric_family;
struct cairn_metric;
struct cairn_metrics_server;

enum cairn_metric_type {
    CAIRN_METRIC_COUNTER,   /* only goes up; name ends in _total */
    CAIRN_METRIC_GAUGE,     /* a value now (signed) */
    CAIRN_METRIC_HISTOGRAM, /* observations in cumulative buckets */
};

/* Most labels a family has, and most buckets of a histogram. */
#define CAIRN_METRICS_MAX_LABELS 4
#define CAIRN_METRICS_MAX_BUCKETS 24

/*
 * The process's registry: what libraries count into (like Prometheus
 * clients' default registry), so a metric is one line anywhere without
 * passing a pointer down. NULL until a daemon's main sets one (metrics
 * off, tests): every call then does nothing. Set it before starting
 * threads that count, and clear it before freeing the registry.
 */
struct cairn_metrics *cairn_metrics_process(void);
void cairn_metrics_set_process(struct cairn_metrics *metrics);

/* A new, empty registry, owned by the caller (cairn_metrics_free). */
int cairn_metrics_new(struct cairn_metrics **metrics);
/* Frees the registry, its families and series (NULL-safe). Stop the
   server reading it first. */
void cairn_metrics_free(struct cairn_metrics *metrics);

/*
 * The family called name, created on first use with help and labels (a
 * comma-separated list of label names, NULL or "" for none); a later call
 * with the same name returns the same family whatever its other
 * arguments. NULL on a bad name, a type clash or no memory. Borrowed from
 * the registry.
 */
struct cairn_metric_family *cairn_metrics_counter(struct cairn_metrics *metrics,
                                                  const char *name,
                                                  const char *help,
                                                  const char *labels);
struct cairn_metric_family *cairn_metrics_gauge(struct cairn_metrics *metrics,
                                                const char *name,
                                                const char *help,
                                                const char *labels);
/*
 * A histogram: bounds[0..count-1] are the buckets' upper bounds, rising,
 * in the unit values are observed in (integers: microseconds, bytes,
 * users); scale turns that unit into the one exposed (1e-6 for
 * microseconds shown as seconds, 1 otherwise). The +Inf bucket is added.
 */
struct cairn_metric_family *
cairn_metrics_histogram(struct cairn_metrics *metrics, const char *name,
                        const char *help, const char *labels,
                        const uint64_t *bounds, size_t count, double scale);

/*
 * The family's series with these label values (one const char * per
 * label name, in order), created on first use. Borrowed; NULL when family
 * is NULL or memory runs out.
 */
struct cairn_metric *cairn_metric_get(struct cairn_metric_family *family, ...);

/* Counter: adds delta. Gauge: adds (signed) delta too. */
void cairn_metric_add(struct cairn_metric *metric, int64_t delta);
/* Gauge: sets the value. */
void cairn_metric_set(struct cairn_metric *metric, int64_t value);
/* Histogram: one observation of value (in the family's unit). */
void cairn_metric_observe(struct cairn_metric *metric, uint64_t value);
/* The current value of a counter or gauge (a histogram's count). */
int64_t cairn_metric_value(const struct cairn_metric *metric);

/* One-line forms for a metric without labels (see the top). */
void cairn_metrics_count(struct cairn_metrics *metrics, const char *name,
                         const char *help, uint64_t delta);
void cairn_metrics_set(struct cairn_metrics *metrics, const char *name,
                       const char *help, int64_t value);

/*
 * fn(arg, metrics) runs on the scraping thread before each render, to set
 * gauges that are read rather than counted (free space, a catalog count).
 * It must only touch what is safe from that thread (its own SQLite
 * connection, syscalls, the registry). At most 8; add them before serving.
 */
typedef void (*cairn_metrics_collector_fn)(void *arg,
                                           struct cairn_metrics *metrics);
int cairn_metrics_add_collector(struct cairn_metrics *metrics,
                                cairn_metrics_collector_fn fn, void *arg);
/* The conventional process_resident_memory_bytes, process_open_fds and
   process_start_time_seconds, read from /proc/self at each scrape. */
int cairn_metrics_add_process_collector(struct cairn_metrics *metrics);

/*
 * Runs the collectors and appends the whole registry to out as Prometheus
 * text exposition: "# HELP", "# TYPE", then each series, label values and
 * help escaped; histograms as cumulative _bucket{le=...} lines ending in
 * le="+Inf", then _sum and _count. Returns 0 or CAIRN_ETOOBIG/ENOMEM.
 */
int cairn_metrics_render(struct cairn_metrics *metrics, struct cairn_buf *out);

/*
 * Serves GET /metrics from metrics on address ("host:port", "*:port",
 * "[ipv6]:port"; port 0 picks a free one) on libmicrohttpd's own thread.
 * On failure error says why (the address, the system's reason). *server
 * is owned by the caller (cairn_metrics_server_free); metrics is borrowed
 * and must outlive it.
 */
int cairn_metrics_serve(struct cairn_metrics *metrics, const char *address,
                        struct cairn_metrics_server **server, char *error,
                        size_t error_size);
/* The port the server listens on. */
unsigned cairn_metrics_server_port(const struct cairn_metrics_server *server);
/* Stops the thread, closes the socket, frees (NULL-safe). */
void cairn_metrics_server_free(struct cairn_metrics_server *server);

/*
 * A daemon's metrics in one call: a registry made the process registry,
 * the process collector added, served on address. *server is owned by
 * the caller: cairn_metrics_stop() clears the process registry, stops the
 * server and frees both (NULL-safe). On failure error says why.
 */
int cairn_metrics_start(const char *address,
                        struct cairn_metrics_server **server, char *error,
                        size_t error_size);
void cairn_metrics_stop(struct cairn_metrics_server *server);

/* Bounds shared by the daemons: latencies in microseconds (100 µs to
   10 s) and counts (1 to 1024). */
extern const uint64_t cairn_metrics_latency_us_bounds[];
extern const size_t cairn_metrics_latency_us_bound_count;
extern const uint64_t cairn_metrics_count_bounds[];
extern const size_t cairn_metrics_count_bound_count;

#endif /* CAIRN_METRICS_H */
