/*
 * server.c - GET /metrics over HTTP with libmicrohttpd, on the library's
 * own polling thread: each request renders the registry into a fresh
 * buffer (registry lock held only while rendering) that libmicrohttpd
 * then sends and frees. Anything but GET /metrics gets 404 or 405.
 */
#include "common.h"
#include "metrics.h"

#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Largest exposition one scrape renders (a hard bound, like every buffer). */
#define MAX_EXPOSITION_BYTES (64u * 1024 * 1024)
#define CONNECTION_LIMIT 16
#define CONNECTION_TIMEOUT_S 10
#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct cairn_metrics_server {
    struct MHD_Daemon *daemon;
    struct cairn_metrics *metrics;
    unsigned port;
};

static enum MHD_Result
reply_text(struct MHD_Connection *connection, unsigned status, const char *text)
{
    struct MHD_Response *response = MHD_create_response_from_buffer(
        strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result result;

    if (response == NULL)
        return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain");
    result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *connection, const char *url,
           const char *method, const char *version, const char *upload_data,
           size_t *upload_data_size, void **request_state)
{
    struct cairn_metrics_server *server = cls;
    struct MHD_Response *response;
    struct cairn_buf body;
    enum MHD_Result result;
    char *data = NULL;
    size_t len = 0;

    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)request_state;
    if (strcmp(url, "/metrics") != 0)
        return reply_text(connection, MHD_HTTP_NOT_FOUND,
                          "not found: cairn serves /metrics\n");
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply_text(connection, MHD_HTTP_METHOD_NOT_ALLOWED,
                          "only GET /metrics\n");
    cairn_buf_init(&body, MAX_EXPOSITION_BYTES);
    if (cairn_metrics_render(server->metrics, &body) < 0 ||
        cairn_buf_detach(&body, &data, &len) < 0) {
        cairn_buf_release(&body);
        return reply_text(connection, MHD_HTTP_INTERNAL_SERVER_ERROR,
                          "metrics could not be rendered (too big or no "
                          "memory)\n");
    }
    /* libmicrohttpd frees data with free() once sent */
    response =
        MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (response == NULL) {
        free(data);
        return MHD_NO;
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                            CONTENT_TYPE);
    result = MHD_queue_response(connection, MHD_HTTP_OK, response);
    MHD_destroy_response(response);
    return result;
}

/* A listening socket on address; *port is the one bound. */
static int
open_socket(const char *address, int *fd, unsigned *port, char *error,
            size_t error_size)
{
    struct sockaddr_storage where;
    socklen_t length = 0;
    int one = 1;

    *fd = -1;
    if (cairn_parse_listen_address(address, &where, &length) < 0) {
        snprintf(error, error_size,
                 "bad metrics address '%s' (HOST:PORT, *:PORT or [IPv6]:PORT)",
                 address);
        return CAIRN_ECONFIG;
    }
    if ((*fd = socket(where.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        goto fail;
    setsockopt(*fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (where.ss_family == AF_INET6)
        setsockopt(*fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(*fd, (struct sockaddr *)&where, length) < 0 || listen(*fd, 32) < 0)
        goto fail;
    length = sizeof(where);
    if (getsockname(*fd, (struct sockaddr *)&where, &length) < 0)
        goto fail;
    *port = where.ss_family == AF_INET6
                ? ntohs(((struct sockaddr_in6 *)&where)->sin6_port)
                : ntohs(((struct sockaddr_in *)&where)->sin_port);
    return 0;
fail:
    snprintf(error, error_size, "cannot listen for metrics on %s: %s", address,
             strerror(errno));
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
    return CAIRN_EIO;
}

int
cairn_metrics_serve(struct cairn_metrics *metrics, const char *address,
                    struct cairn_metrics_server **out, char *error,
                    size_t error_size)
{
    struct cairn_metrics_server *server = NULL;
    int fd = -1, rc;

    *out = NULL;
    if ((server = calloc(1, sizeof(*server))) == NULL)
        return CAIRN_ENOMEM;
    server->metrics = metrics;
    if ((rc = open_socket(address, &fd, &server->port, error, error_size)) < 0)
        goto fail;
    /* the daemon owns fd from here, closing it when stopped */
    server->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL, NULL,
        on_request, server, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONNECTION_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S,
        MHD_OPTION_END);
    if (server->daemon == NULL) {
        close(fd);
        snprintf(error, error_size,
                 "cannot start the metrics HTTP server on %s", address);
        rc = CAIRN_EIO;
        goto fail;
    }
    *out = server;
    return 0;
fail:
    free(server);
    return rc;
}

unsigned
cairn_metrics_server_port(const struct cairn_metrics_server *server)
{
    return server != NULL ? server->port : 0;
}

void
cairn_metrics_server_free(struct cairn_metrics_server *server)
{
    if (server == NULL)
        return;
    MHD_stop_daemon(server->daemon);
    free(server);
}

int
cairn_metrics_start(const char *address, struct cairn_metrics_server **server,
                    char *error, size_t error_size)
{
    struct cairn_metrics *metrics = NULL;
    int rc;

    *server = NULL;
    if ((rc = cairn_metrics_new(&metrics)) < 0 ||
        (rc = cairn_metrics_add_process_collector(metrics)) < 0 ||
        (rc = cairn_metrics_serve(metrics, address, server, error,
                                  error_size)) < 0) {
        if (rc == CAIRN_ENOMEM)
            snprintf(error, error_size, "metrics: out of memory");
        cairn_metrics_free(metrics);
        return rc;
    }
    cairn_metrics_set_process(metrics);
    return 0;
}

void
cairn_metrics_stop(struct cairn_metrics_server *server)
{
    struct cairn_metrics *metrics;

    if (server == NULL)
        return;
    metrics = server->metrics;
    if (cairn_metrics_process() == metrics)
        cairn_metrics_set_process(NULL);
    cairn_metrics_server_free(server);
    cairn_metrics_free(metrics);
}
