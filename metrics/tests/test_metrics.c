/*
 * test_metrics.c - the exposition writer (HELP/TYPE lines, label and help
 * escaping, cumulative histogram buckets ending in +Inf with _sum and
 * _count), the registry's find-or-create rules, and GET /metrics served
 * by libmicrohttpd on a free port, read with a plain socket.
 */
#include "check.h"
#include "common.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char *
render(struct cairn_metrics *metrics)
{
    struct cairn_buf out;
    char *text = NULL;
    size_t len = 0;

    cairn_buf_init(&out, 1u << 20);
    CHECK_INT(cairn_metrics_render(metrics, &out), 0);
    CHECK_INT(cairn_buf_detach(&out, &text, &len), 0);
    return text;
}

static void
check_contains(const char *text, const char *line)
{
    check_count++;
    if (strstr(text, line) == NULL) {
        check_failures++;
        fprintf(stderr, "missing:\n%s\nin:\n%s\n", line, text);
    }
}

static void
test_counter_and_escaping(void)
{
    struct cairn_metrics *metrics = NULL;
    struct cairn_metric_family *family;
    char *text;

    CHECK_INT(cairn_metrics_new(&metrics), 0);
    family = cairn_metrics_counter(metrics, "cairn_test_commands_total",
                                   "commands \\ by \"verb\"\nand result",
                                   "channel,verb");
    CHECK(family != NULL);
    cairn_metric_add(cairn_metric_get(family, "a\"b\\c\nd", "APPLY"), 2);
    cairn_metric_add(cairn_metric_get(family, "a\"b\\c\nd", "APPLY"), 3);
    cairn_metric_add(cairn_metric_get(family, "plain", "GET"), 1);
    /* the same name again is the same family, whatever the other args */
    CHECK(cairn_metrics_counter(metrics, "cairn_test_commands_total", "x",
                                NULL) == family);
    /* a type clash and a bad name give NULL, and NULL is harmless */
    CHECK(cairn_metrics_gauge(metrics, "cairn_test_commands_total", "", NULL) ==
          NULL);
    CHECK(cairn_metrics_gauge(metrics, "9bad", "", NULL) == NULL);
    CHECK(cairn_metrics_gauge(metrics, "bad-name", "", NULL) == NULL);
    CHECK(cairn_metrics_counter(metrics, "ok_total", "", "bad-label") == NULL);
    cairn_metric_add(cairn_metric_get(NULL, "x"), 1);
    cairn_metrics_count(metrics, "cairn_test_events_total", "events", 4);
    cairn_metrics_count(metrics, "cairn_test_events_total", "events", 1);
    cairn_metrics_set(metrics, "cairn_test_level", "a level", -7);
    cairn_metrics_gauge(metrics, "cairn_test_empty", "no series yet", "node");
    text = render(metrics);
    check_contains(text,
                   "# HELP cairn_test_commands_total commands \\\\ by "
                   "\"verb\"\\nand result\n"
                   "# TYPE cairn_test_commands_total counter\n"
                   "cairn_test_commands_total{channel=\"a\\\"b\\\\c\\nd\","
                   "verb=\"APPLY\"} 5\n"
                   "cairn_test_commands_total{channel=\"plain\","
                   "verb=\"GET\"} 1\n");
    check_contains(text, "# TYPE cairn_test_events_total counter\n"
                         "cairn_test_events_total 5\n");
    check_contains(text,
                   "# TYPE cairn_test_level gauge\ncairn_test_level -7\n");
    check_contains(text, "# HELP cairn_test_empty no series yet\n"
                         "# TYPE cairn_test_empty gauge\n");
    free(text);
    cairn_metrics_free(metrics);
}

static void
test_histogram(void)
{
    static const uint64_t bounds[] = {1000, 10000, 100000};
    struct cairn_metrics *metrics = NULL;
    struct cairn_metric *series;
    char *text;

    CHECK_INT(cairn_metrics_new(&metrics), 0);
    series = cairn_metric_get(
        cairn_metrics_histogram(metrics, "cairn_test_fsync_seconds",
                                "fsync time", NULL, bounds, 3, 1e-6));
    CHECK(series != NULL);
    cairn_metric_observe(series, 500);     /* <= 0.001 */
    cairn_metric_observe(series, 1000);    /* on the bound: <= 0.001 */
    cairn_metric_observe(series, 5000);    /* <= 0.01 */
    cairn_metric_observe(series, 2000000); /* +Inf only */
    CHECK_INT(cairn_metric_value(series), 4);
    /* bounds must rise */
    CHECK(cairn_metrics_histogram(metrics, "cairn_test_bad", "", NULL,
                                  (const uint64_t[]){5, 5}, 2, 1) == NULL);
    text = render(metrics);
    check_contains(text, "# TYPE cairn_test_fsync_seconds histogram\n"
                         "cairn_test_fsync_seconds_bucket{le=\"0.001\"} 2\n"
                         "cairn_test_fsync_seconds_bucket{le=\"0.01\"} 3\n"
                         "cairn_test_fsync_seconds_bucket{le=\"0.1\"} 3\n"
                         "cairn_test_fsync_seconds_bucket{le=\"+Inf\"} 4\n"
                         "cairn_test_fsync_seconds_sum 2.0065\n"
                         "cairn_test_fsync_seconds_count 4\n");
    free(text);
    /* with labels, le comes last */
    series = cairn_metric_get(
        cairn_metrics_histogram(metrics, "cairn_test_sizes", "sizes", "node",
                                cairn_metrics_count_bounds,
                                cairn_metrics_count_bound_count, 1),
        "n1");
    cairn_metric_observe(series, 3);
    text = render(metrics);
    check_contains(text, "cairn_test_sizes_bucket{node=\"n1\",le=\"2\"} 0\n"
                         "cairn_test_sizes_bucket{node=\"n1\",le=\"4\"} 1\n");
    check_contains(text, "cairn_test_sizes_bucket{node=\"n1\",le=\"+Inf\"} 1\n"
                         "cairn_test_sizes_sum{node=\"n1\"} 3\n"
                         "cairn_test_sizes_count{node=\"n1\"} 1\n");
    free(text);
    cairn_metrics_free(metrics);
}

static void
collect_answer(void *arg, struct cairn_metrics *metrics)
{
    (*(int *)arg)++;
    cairn_metrics_set(metrics, "cairn_test_collected", "set at scrape", 42);
}

/* GET path from the server; returns the whole response (owned). */
static char *
http_get(unsigned port, const char *path)
{
    struct sockaddr_in where = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port)};
    struct cairn_buf reply;
    char request[256], chunk[4096], *text = NULL;
    size_t len = 0;
    ssize_t got;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    where.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cairn_buf_init(&reply, 1u << 20);
    snprintf(request, sizeof(request),
             "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
             path);
    CHECK(fd >= 0);
    CHECK_INT(connect(fd, (struct sockaddr *)&where, sizeof(where)), 0);
    CHECK_INT(cairn_write_all(fd, request, strlen(request)), 0);
    while ((got = read(fd, chunk, sizeof(chunk))) > 0)
        cairn_buf_append(&reply, chunk, (size_t)got);
    close(fd);
    cairn_buf_detach(&reply, &text, &len);
    return text;
}

static void
test_server(void)
{
    struct cairn_metrics *metrics = NULL;
    struct cairn_metrics_server *server = NULL;
    char error[256] = "";
    int scrapes = 0;
    char *text;

    CHECK_INT(cairn_metrics_new(&metrics), 0);
    CHECK_INT(cairn_metrics_add_collector(metrics, collect_answer, &scrapes),
              0);
    CHECK_INT(cairn_metrics_add_process_collector(metrics), 0);
    CHECK_INT(
        cairn_metrics_serve(metrics, "nonsense", &server, error, sizeof(error)),
        CAIRN_ECONFIG);
    check_contains(error, "bad metrics address 'nonsense'");
    CHECK_INT(cairn_metrics_serve(metrics, "127.0.0.1:0", &server, error,
                                  sizeof(error)),
              0);
    CHECK(cairn_metrics_server_port(server) > 0);
    text = http_get(cairn_metrics_server_port(server), "/metrics");
    check_contains(text, "HTTP/1.1 200");
    check_contains(text, "text/plain; version=0.0.4");
    check_contains(text, "cairn_test_collected 42\n");
    check_contains(text, "# TYPE process_resident_memory_bytes gauge\n");
    check_contains(text, "# TYPE process_open_fds gauge\n");
    CHECK_INT(scrapes, 1);
    free(text);
    text = http_get(cairn_metrics_server_port(server), "/other");
    check_contains(text, "HTTP/1.1 404");
    free(text);
    cairn_metrics_server_free(server);
    cairn_metrics_free(metrics);
}

int
main(void)
{
    test_counter_and_escaping();
    test_histogram();
    test_server();
    return check_exit("test_metrics");
}
