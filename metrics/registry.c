/*
 * registry.c - the metric registry and the Prometheus text exposition
 * writer (no I/O here but the process figures read from /proc/self).
 * Families and series are linked lists under one mutex, in creation order
 * so a scrape reads the same way every time; values are atomics.
 */
#include "common.h"
#include "metrics.h"

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_COLLECTORS 8

const uint64_t cairn_metrics_latency_us_bounds[] = {
    100,   250,    500,    1000,   2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
const size_t cairn_metrics_latency_us_bound_count =
    sizeof(cairn_metrics_latency_us_bounds) /
    sizeof(cairn_metrics_latency_us_bounds[0]);
const uint64_t cairn_metrics_count_bounds[] = {1,  2,   4,   8,   16,  32,
                                               64, 128, 256, 512, 1024};
const size_t cairn_metrics_count_bound_count =
    sizeof(cairn_metrics_count_bounds) / sizeof(cairn_metrics_count_bounds[0]);

struct cairn_metric {
    struct cairn_metric *next;
    struct cairn_metric_family *family;
    char *values[CAIRN_METRICS_MAX_LABELS];
    _Atomic int64_t value; /* counter, gauge; histogram: count */
    /* histogram: observations per bucket (not cumulative; the last is
     * above every bound) and their sum */
    _Atomic uint64_t buckets[CAIRN_METRICS_MAX_BUCKETS + 1];
    _Atomic uint64_t sum;
};

struct cairn_metric_family {
    struct cairn_metric_family *next;
    struct cairn_metrics *registry;
    enum cairn_metric_type type;
    char *name, *help;
    char *labels[CAIRN_METRICS_MAX_LABELS];
    size_t label_count;
    uint64_t bounds[CAIRN_METRICS_MAX_BUCKETS];
    size_t bound_count;
    double scale;
    struct cairn_metric *series, **series_tail;
};

struct collector {
    cairn_metrics_collector_fn fn;
    void *arg;
};

struct cairn_metrics {
    pthread_mutex_t lock;        /* families, series, collectors */
    pthread_mutex_t scrape_lock; /* one scrape (collectors + render) at once */
    struct cairn_metric_family *families, **families_tail;
    struct collector collectors[MAX_COLLECTORS];
    size_t collector_count;
};

static _Atomic(struct cairn_metrics *) process_registry;

struct cairn_metrics *
cairn_metrics_process(void)
{
    return atomic_load_explicit(&process_registry, memory_order_acquire);
}

void
cairn_metrics_set_process(struct cairn_metrics *metrics)
{
    atomic_store_explicit(&process_registry, metrics, memory_order_release);
}

int
cairn_metrics_new(struct cairn_metrics **metrics)
{
    struct cairn_metrics *registry = calloc(1, sizeof(*registry));

    *metrics = NULL;
    if (registry == NULL)
        return CAIRN_ENOMEM;
    pthread_mutex_init(&registry->lock, NULL);
    pthread_mutex_init(&registry->scrape_lock, NULL);
    registry->families_tail = &registry->families;
    *metrics = registry;
    return 0;
}

static void
series_free(struct cairn_metric *series)
{
    for (size_t i = 0; i < CAIRN_METRICS_MAX_LABELS; i++)
        free(series->values[i]);
    free(series);
}

static void
family_free(struct cairn_metric_family *family)
{
    struct cairn_metric *series, *next;

    if (family == NULL)
        return;
    for (series = family->series; series != NULL; series = next) {
        next = series->next;
        series_free(series);
    }
    for (size_t i = 0; i < family->label_count; i++)
        free(family->labels[i]);
    free(family->name);
    free(family->help);
    free(family);
}

void
cairn_metrics_free(struct cairn_metrics *metrics)
{
    struct cairn_metric_family *family, *next;

    if (metrics == NULL)
        return;
    for (family = metrics->families; family != NULL; family = next) {
        next = family->next;
        family_free(family);
    }
    pthread_mutex_destroy(&metrics->lock);
    pthread_mutex_destroy(&metrics->scrape_lock);
    free(metrics);
}

/* Prometheus names: [a-zA-Z_:][a-zA-Z0-9_:]* (labels: no colon). */
static bool
name_valid(const char *name, size_t len, bool colon)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      c == '_' || (colon && c == ':');

        if (!letter && (i == 0 || c < '0' || c > '9'))
            return false;
    }
    return true;
}

/* Splits "a,b,c" into family->labels. */
static int
set_labels(struct cairn_metric_family *family, const char *labels)
{
    const char *at = labels;

    while (at != NULL && *at != '\0') {
        const char *comma = strchr(at, ',');
        size_t len = comma ? (size_t)(comma - at) : strlen(at);

        if (family->label_count == CAIRN_METRICS_MAX_LABELS ||
            !name_valid(at, len, false))
            return CAIRN_EINVAL;
        if ((family->labels[family->label_count] = strndup(at, len)) == NULL)
            return CAIRN_ENOMEM;
        family->label_count++;
        at = comma ? comma + 1 : NULL;
    }
    return 0;
}

static struct cairn_metric *new_series(struct cairn_metric_family *family,
                                       const char *const *values);

static struct cairn_metric_family *
family_find(struct cairn_metrics *metrics, const char *name)
{
    for (struct cairn_metric_family *family = metrics->families; family != NULL;
         family = family->next)
        if (strcmp(family->name, name) == 0)
            return family;
    return NULL;
}

/* Builds a family (not yet linked); NULL when invalid or out of memory. */
static struct cairn_metric_family *
family_new(struct cairn_metrics *metrics, enum cairn_metric_type type,
           const char *name, const char *help, const char *labels,
           const uint64_t *bounds, size_t bound_count, double scale)
{
    struct cairn_metric_family *family = NULL;

    if (!name_valid(name, strlen(name), true) ||
        bound_count > CAIRN_METRICS_MAX_BUCKETS ||
        (family = calloc(1, sizeof(*family))) == NULL)
        return NULL;
    family->registry = metrics;
    family->type = type;
    family->series_tail = &family->series;
    family->scale = scale;
    family->bound_count = bound_count;
    for (size_t i = 0; i < bound_count; i++) {
        family->bounds[i] = bounds[i];
        if (i > 0 && bounds[i] <= bounds[i - 1])
            goto fail;
    }
    if ((family->name = strdup(name)) == NULL ||
        (family->help = strdup(help ? help : "")) == NULL ||
        set_labels(family, labels) < 0)
        goto fail;
    /* A family without labels has its one series from the start, so a
     * scrape shows 0 rather than nothing. */
    if (family->label_count == 0 && new_series(family, NULL) == NULL)
        goto fail;
    return family;
fail:
    family_free(family);
    return NULL;
}

static struct cairn_metric_family *
family_get(struct cairn_metrics *metrics, enum cairn_metric_type type,
           const char *name, const char *help, const char *labels,
           const uint64_t *bounds, size_t bound_count, double scale)
{
    struct cairn_metric_family *family;

    if (metrics == NULL || name == NULL)
        return NULL;
    pthread_mutex_lock(&metrics->lock);
    family = family_find(metrics, name);
    if (family == NULL) {
        family = family_new(metrics, type, name, help, labels, bounds,
                            bound_count, scale);
        if (family != NULL) {
            *metrics->families_tail = family;
            metrics->families_tail = &family->next;
        }
    } else if (family->type != type) {
        family = NULL;
    }
    pthread_mutex_unlock(&metrics->lock);
    return family;
}

struct cairn_metric_family *
cairn_metrics_counter(struct cairn_metrics *metrics, const char *name,
                      const char *help, const char *labels)
{
    return family_get(metrics, CAIRN_METRIC_COUNTER, name, help, labels, NULL,
                      0, 1);
}

struct cairn_metric_family *
cairn_metrics_gauge(struct cairn_metrics *metrics, const char *name,
                    const char *help, const char *labels)
{
    return family_get(metrics, CAIRN_METRIC_GAUGE, name, help, labels, NULL, 0,
                      1);
}

struct cairn_metric_family *
cairn_metrics_histogram(struct cairn_metrics *metrics, const char *name,
                        const char *help, const char *labels,
                        const uint64_t *bounds, size_t count, double scale)
{
    return family_get(metrics, CAIRN_METRIC_HISTOGRAM, name, help, labels,
                      bounds, count, scale);
}

/* Appends a series with these values to family (lock held). */
static struct cairn_metric *
new_series(struct cairn_metric_family *family, const char *const *values)
{
    struct cairn_metric *series = calloc(1, sizeof(*series));

    if (series == NULL)
        return NULL;
    series->family = family;
    for (size_t i = 0; i < family->label_count; i++)
        if ((series->values[i] = strdup(values[i] ? values[i] : "")) == NULL) {
            series_free(series);
            return NULL;
        }
    *family->series_tail = series;
    family->series_tail = &series->next;
    return series;
}

struct cairn_metric *
cairn_metric_get(struct cairn_metric_family *family, ...)
{
    const char *values[CAIRN_METRICS_MAX_LABELS] = {NULL};
    struct cairn_metric *series;
    va_list args;

    if (family == NULL)
        return NULL;
    va_start(args, family);
    for (size_t i = 0; i < family->label_count; i++)
        values[i] = va_arg(args, const char *);
    va_end(args);
    pthread_mutex_lock(&family->registry->lock);
    for (series = family->series; series != NULL; series = series->next) {
        size_t i = 0;

        while (i < family->label_count &&
               strcmp(series->values[i], values[i] ? values[i] : "") == 0)
            i++;
        if (i == family->label_count)
            break;
    }
    if (series == NULL)
        series = new_series(family, values);
    pthread_mutex_unlock(&family->registry->lock);
    return series;
}

void
cairn_metric_add(struct cairn_metric *metric, int64_t delta)
{
    if (metric != NULL)
        atomic_fetch_add_explicit(&metric->value, delta, memory_order_relaxed);
}

void
cairn_metric_set(struct cairn_metric *metric, int64_t value)
{
    if (metric != NULL)
        atomic_store_explicit(&metric->value, value, memory_order_relaxed);
}

void
cairn_metric_observe(struct cairn_metric *metric, uint64_t value)
{
    size_t at = 0;

    if (metric == NULL || metric->family->type != CAIRN_METRIC_HISTOGRAM)
        return;
    while (at < metric->family->bound_count &&
           value > metric->family->bounds[at])
        at++;
    atomic_fetch_add_explicit(&metric->buckets[at], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&metric->sum, value, memory_order_relaxed);
    atomic_fetch_add_explicit(&metric->value, 1, memory_order_relaxed);
}

int64_t
cairn_metric_value(const struct cairn_metric *metric)
{
    return metric != NULL
               ? atomic_load_explicit(&metric->value, memory_order_relaxed)
               : 0;
}

void
cairn_metrics_count(struct cairn_metrics *metrics, const char *name,
                    const char *help, uint64_t delta)
{
    cairn_metric_add(
        cairn_metric_get(cairn_metrics_counter(metrics, name, help, NULL)),
        (int64_t)delta);
}

void
cairn_metrics_set(struct cairn_metrics *metrics, const char *name,
                  const char *help, int64_t value)
{
    cairn_metric_set(
        cairn_metric_get(cairn_metrics_gauge(metrics, name, help, NULL)),
        value);
}

int
cairn_metrics_add_collector(struct cairn_metrics *metrics,
                            cairn_metrics_collector_fn fn, void *arg)
{
    int rc = CAIRN_ETOOBIG;

    if (metrics == NULL)
        return 0;
    pthread_mutex_lock(&metrics->lock);
    if (metrics->collector_count < MAX_COLLECTORS) {
        metrics->collectors[metrics->collector_count].fn = fn;
        metrics->collectors[metrics->collector_count].arg = arg;
        metrics->collector_count++;
        rc = 0;
    }
    pthread_mutex_unlock(&metrics->lock);
    return rc;
}

/* --- process figures ---------------------------------------------------- */

static void
collect_process(void *arg, struct cairn_metrics *metrics)
{
    unsigned long long size = 0, resident = 0;
    int64_t fds = -1;
    FILE *statm = fopen("/proc/self/statm", "r");
    DIR *dir = opendir("/proc/self/fd");

    (void)arg;
    if (statm != NULL && fscanf(statm, "%llu %llu", &size, &resident) == 2)
        cairn_metrics_set(
            metrics, "process_resident_memory_bytes",
            "resident memory of the process (/proc/self/statm)",
            (int64_t)(resident * (unsigned long long)sysconf(_SC_PAGESIZE)));
    if (statm != NULL)
        fclose(statm);
    if (dir != NULL) {
        struct dirent *entry;

        while ((entry = readdir(dir)) != NULL)
            if (entry->d_name[0] != '.')
                fds++; /* less the one reading the directory */
        closedir(dir);
        cairn_metrics_set(metrics, "process_open_fds",
                          "open file descriptors (/proc/self/fd)", fds);
    }
}

int
cairn_metrics_add_process_collector(struct cairn_metrics *metrics)
{
    return cairn_metrics_add_collector(metrics, collect_process, NULL);
}

/* --- exposition --------------------------------------------------------- */

/* Appends text with \ and newline escaped, and " too when quote. */
static int
append_escaped(struct cairn_buf *out, const char *text, bool quote)
{
    int rc = 0;

    for (; *text != '\0' && rc == 0; text++) {
        if (*text == '\\')
            rc = cairn_buf_append(out, "\\\\", 2);
        else if (*text == '\n')
            rc = cairn_buf_append(out, "\\n", 2);
        else if (*text == '"' && quote)
            rc = cairn_buf_append(out, "\\\"", 2);
        else
            rc = cairn_buf_append(out, text, 1);
    }
    return rc;
}

/* name{a="x",b="y"[,le="..."]} (no braces when there is nothing). */
static int
append_series_name(struct cairn_buf *out, const struct cairn_metric *series,
                   const char *suffix, const char *le)
{
    const struct cairn_metric_family *family = series->family;
    int rc = cairn_buf_printf(out, "%s%s", family->name, suffix);

    if (rc < 0 || (family->label_count == 0 && le == NULL))
        return rc;
    rc = cairn_buf_append(out, "{", 1);
    for (size_t i = 0; i < family->label_count && rc == 0; i++) {
        if ((rc = cairn_buf_printf(out, "%s%s=\"", i ? "," : "",
                                   family->labels[i])) == 0 &&
            (rc = append_escaped(out, series->values[i], true)) == 0)
            rc = cairn_buf_append(out, "\"", 1);
    }
    if (rc == 0 && le != NULL)
        rc = cairn_buf_printf(out, "%sle=\"%s\"",
                              family->label_count ? "," : "", le);
    return rc == 0 ? cairn_buf_append(out, "}", 1) : rc;
}

static int
render_histogram(struct cairn_buf *out, const struct cairn_metric *series)
{
    const struct cairn_metric_family *family = series->family;
    uint64_t cumulative = 0;
    char le[64];
    int rc = 0;

    for (size_t i = 0; i <= family->bound_count && rc == 0; i++) {
        cumulative +=
            atomic_load_explicit(&series->buckets[i], memory_order_relaxed);
        if (i < family->bound_count)
            snprintf(le, sizeof(le), "%.9g",
                     (double)family->bounds[i] * family->scale);
        else
            snprintf(le, sizeof(le), "+Inf");
        if ((rc = append_series_name(out, series, "_bucket", le)) == 0)
            rc = cairn_buf_printf(out, " %llu\n",
                                  (unsigned long long)cumulative);
    }
    if (rc == 0 && (rc = append_series_name(out, series, "_sum", NULL)) == 0)
        rc = cairn_buf_printf(
            out, " %.15g\n",
            (double)atomic_load_explicit(&series->sum, memory_order_relaxed) *
                family->scale);
    /* _count is the +Inf bucket, so the two always agree */
    if (rc == 0 && (rc = append_series_name(out, series, "_count", NULL)) == 0)
        rc = cairn_buf_printf(out, " %llu\n", (unsigned long long)cumulative);
    return rc;
}

static int
render_family(struct cairn_buf *out, const struct cairn_metric_family *family)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    int rc;

    if ((rc = cairn_buf_printf(out, "# HELP %s ", family->name)) < 0 ||
        (rc = append_escaped(out, family->help, false)) < 0 ||
        (rc = cairn_buf_printf(out, "\n# TYPE %s %s\n", family->name,
                               types[family->type])) < 0)
        return rc;
    for (const struct cairn_metric *series = family->series;
         series != NULL && rc == 0; series = series->next) {
        if (family->type == CAIRN_METRIC_HISTOGRAM)
            rc = render_histogram(out, series);
        else if ((rc = append_series_name(out, series, "", NULL)) == 0)
            rc = cairn_buf_printf(out, " %lld\n",
                                  (long long)atomic_load_explicit(
                                      &series->value, memory_order_relaxed));
    }
    return rc;
}

int
cairn_metrics_render(struct cairn_metrics *metrics, struct cairn_buf *out)
{
    struct collector collectors[MAX_COLLECTORS];
    size_t collector_count;
    int rc = 0;

    if (metrics == NULL)
        return 0;
    pthread_mutex_lock(&metrics->scrape_lock);
    pthread_mutex_lock(&metrics->lock);
    collector_count = metrics->collector_count;
    memcpy(collectors, metrics->collectors, sizeof(collectors));
    pthread_mutex_unlock(&metrics->lock);
    /* collectors take the registry lock themselves (setting gauges) */
    for (size_t i = 0; i < collector_count; i++)
        collectors[i].fn(collectors[i].arg, metrics);
    pthread_mutex_lock(&metrics->lock);
    for (const struct cairn_metric_family *family = metrics->families;
         family != NULL && rc == 0; family = family->next)
        rc = render_family(out, family);
    pthread_mutex_unlock(&metrics->lock);
    pthread_mutex_unlock(&metrics->scrape_lock);
    return rc;
}
