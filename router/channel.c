/*
 * channel.c - the router's channels: one TCP listener each with its own
 * credentials and session settings, created from settings at start and
 * swapped by cairn_router_reload() (SIGHUP) without dropping connections.
 * A reload prepares every new channel first (credentials checked, new
 * addresses bound, addresses still configured taken over from the running
 * channel), and only then commits; channels are reference-counted so that
 * open sessions keep the settings they started with.
 */
#include "router_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEFAULT_IDLE_TIMEOUT_MS (30ull * 60 * 1000)

static int
open_listener(struct cairn_router_channel *channel, char *error,
              size_t error_size)
{
    struct sockaddr_storage address;
    socklen_t length = 0;
    int one = 1, fd;

    if (cairn_parse_listen_address(channel->listen, &address, &length) < 0) {
        snprintf(error, error_size,
                 "channel %s: bad listen address '%s' (HOST:PORT, *:PORT or "
                 "[IPv6]:PORT)",
                 channel->name, channel->listen);
        return CAIRN_ECONFIG;
    }
    fd = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0)
        goto fail;
    channel->listen_fd = fd;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* [::] means IPv6 alone: "*" is the way to say every IPv4 address. */
    if (address.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&address, length) < 0 ||
        listen(fd, 128) < 0)
        goto fail;
    length = sizeof(address);
    if (getsockname(fd, (struct sockaddr *)&address, &length) < 0)
        goto fail;
    channel->port = address.ss_family == AF_INET6
                        ? ntohs(((struct sockaddr_in6 *)&address)->sin6_port)
                        : ntohs(((struct sockaddr_in *)&address)->sin_port);
    return CAIRN_OK;
fail:
    snprintf(error, error_size, "channel %s: cannot listen on %s: %s",
             channel->name, channel->listen, strerror(errno));
    return CAIRN_EIO;
}

void
cairn_router_channel_close_listener(struct cairn_router_channel *channel)
{
    if (channel->listen_fd < 0)
        return;
    cairn_loop_remove_fd(channel->router->loop, channel->listen_fd);
    close(channel->listen_fd);
    channel->listen_fd = -1;
}

void
cairn_router_channel_unref(struct cairn_router_channel *channel)
{
    if (channel == NULL || --channel->refs > 0)
        return;
    cairn_router_channel_close_listener(channel);
    cairn_router_auth_channel_release(&channel->auth);
    cairn_router_tls_channel_release(channel);
    free(channel->name);
    free(channel->listen);
    free(channel);
}

/* A channel with one reference, not yet listening. */
static int
channel_new(struct cairn_router *router, const char *servername,
            const struct cairn_router_channel_settings *settings,
            struct cairn_router_channel **out, char *error, size_t error_size)
{
    struct cairn_router_channel *channel = calloc(1, sizeof(*channel));
    int rc = CAIRN_ENOMEM;

    *out = NULL;
    if (channel == NULL)
        return CAIRN_ENOMEM;
    channel->router = router;
    channel->refs = 1;
    channel->listen_fd = -1;
    channel->compress = settings->compress;
    channel->idle_timeout_ms = settings->idle_timeout_ms
                                   ? settings->idle_timeout_ms
                                   : DEFAULT_IDLE_TIMEOUT_MS;
    channel->name = strdup(settings->name ? settings->name : "default");
    channel->listen = settings->listen ? strdup(settings->listen) : NULL;
    if (channel->name == NULL)
        goto out;
    if (channel->listen == NULL) {
        snprintf(error, error_size, "channel %s: no listen address",
                 channel->name);
        rc = settings->listen ? CAIRN_ENOMEM : CAIRN_ECONFIG;
        goto out;
    }
    rc = cairn_router_auth_channel_init(&channel->auth, servername, settings,
                                        error, error_size);
    if (rc < 0) {
        /* auth_channel_init cleaned up after itself; don't release twice. */
        memset(&channel->auth, 0, sizeof(channel->auth));
        goto out;
    }
    /* A reload loads the files again: a renewed certificate is taken. */
    rc = cairn_router_tls_channel_init(channel, settings, error, error_size);
out:
    if (rc < 0) {
        cairn_router_channel_unref(channel);
        return rc;
    }
    *out = channel;
    return CAIRN_OK;
}

/* "host:0" asks for any free port: such a listener is never shared. */
static bool
ephemeral(const char *listen)
{
    size_t len = strlen(listen);

    return len >= 2 && strcmp(listen + len - 2, ":0") == 0;
}

/* The running channel listening on the same configured address. */
static struct cairn_router_channel *
running_channel(const struct cairn_router *router, const char *listen)
{
    if (ephemeral(listen))
        return NULL;
    for (size_t i = 0; i < router->channel_count; i++)
        if (strcmp(router->channels[i]->listen, listen) == 0 &&
            router->channels[i]->listen_fd >= 0)
            return router->channels[i];
    return NULL;
}

/* Builds every new channel; binds new addresses. Nothing is committed. */
static int
prepare_channels(struct cairn_router *router,
                 const struct cairn_router_settings *settings,
                 struct cairn_router_channel **fresh, char *error,
                 size_t error_size)
{
    const char *servername =
        settings->servername ? settings->servername : "localhost";
    int rc = CAIRN_OK;

    for (size_t i = 0; i < settings->channel_count && rc == 0; i++) {
        const struct cairn_router_channel *running;

        rc = channel_new(router, servername, &settings->channels[i], &fresh[i],
                         error, error_size);
        if (rc < 0)
            break;
        running = running_channel(router, fresh[i]->listen);
        for (size_t j = 0; j < i && rc == 0 && !ephemeral(fresh[i]->listen);
             j++)
            if (strcmp(fresh[j]->listen, fresh[i]->listen) == 0) {
                snprintf(error, error_size,
                         "channels %s and %s both listen "
                         "on %s",
                         fresh[j]->name, fresh[i]->name, fresh[i]->listen);
                rc = CAIRN_ECONFIG;
            }
        if (rc == 0 && running == NULL)
            rc = open_listener(fresh[i], error, error_size);
        else if (rc == 0)
            fresh[i]->port = running->port; /* fd taken over at commit */
    }
    return rc;
}

/* Hands listeners over, closes the dropped ones, starts accepting. */
static int
commit_channels(struct cairn_router *router,
                struct cairn_router_channel **fresh, size_t count)
{
    int rc = CAIRN_OK;

    for (size_t i = 0; i < count; i++) {
        struct cairn_router_channel *running =
            fresh[i]->listen_fd < 0 ? running_channel(router, fresh[i]->listen)
                                    : NULL;

        if (running != NULL) {
            cairn_loop_remove_fd(router->loop, running->listen_fd);
            fresh[i]->listen_fd = running->listen_fd;
            running->listen_fd = -1;
        }
    }
    for (size_t i = 0; i < router->channel_count; i++) {
        cairn_router_channel_close_listener(router->channels[i]);
        cairn_router_channel_unref(router->channels[i]);
    }
    free(router->channels);
    router->channels = fresh;
    router->channel_count = count;
    for (size_t i = 0; i < count && rc == 0; i++)
        rc = cairn_loop_add_fd(router->loop, fresh[i]->listen_fd,
                               CAIRN_LOOP_READ, cairn_router_accept, fresh[i]);
    return rc;
}

int
cairn_router_reload(struct cairn_router *router,
                    const struct cairn_router_settings *settings, char *error,
                    size_t error_size)
{
    struct cairn_router_channel **fresh = NULL;
    char ignored[8];
    int rc;

    if (error == NULL) {
        error = ignored;
        error_size = sizeof(ignored);
    }
    error[0] = '\0';
    fresh = calloc(settings->channel_count + 1, sizeof(*fresh));
    if (fresh == NULL)
        return CAIRN_ENOMEM;
    rc = prepare_channels(router, settings, fresh, error, error_size);
    if (rc < 0) {
        for (size_t i = 0; i < settings->channel_count; i++)
            cairn_router_channel_unref(fresh[i]);
        free(fresh);
        return rc;
    }
    if ((rc = cairn_router_copy_settings(router, settings)) < 0) {
        snprintf(error, error_size, "out of memory copying settings");
        for (size_t i = 0; i < settings->channel_count; i++)
            cairn_router_channel_unref(fresh[i]);
        free(fresh);
        return rc;
    }
    if ((rc = commit_channels(router, fresh, settings->channel_count)) < 0)
        snprintf(error, error_size, "cannot watch a listener");
    return rc;
}
