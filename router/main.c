/*
 * main.c - cairn-router: reads cluster.conf, opens one csync listener per
 * channel and runs the session layer (banner, SASL, COMPRESS, command
 * table, user resolution) on the event loop until SIGTERM/SIGINT; SIGHUP
 * reloads the file and applies it only when all of it is valid, without
 * dropping a connection.
 *
 * Each destination has one forward (its ring file, its nodes, its ack
 * policy); a channel's writes go to every destination it names and are
 * answered OK when each met its policy, its GETs to the first one. A
 * destination without a loadable ring answers NO and stores nothing.
 * SIGHUP also reads the ring files again (a higher epoch is taken) and
 * connects new nodes; new destinations need a restart. Replicas that
 * miss an update answered OK are logged "needs repair"; the repair marks
 * are kept in [router] state_dir, saved at shutdown (SIGTERM) and read
 * back at the next start (the count is logged).
 */
#include "config.h"
#include "curve.h"
#include "daemon.h"
#include "loop.h"
#include "metrics.h"
#include "placement.h"
#include "router.h"
#include "service.h"

#include <fnmatch.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Exit codes. */
enum {
    EXIT_OK = 0,
    EXIT_USAGE = 64,  /* bad command line */
    EXIT_CONFIG = 78, /* bad configuration */
    EXIT_RUNTIME = 1, /* could not start or the loop failed */
};

#ifndef CAIRN_VERSION
#define CAIRN_VERSION "unknown"
#endif

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: cairn-router [-n] [--allow-root] [-c cluster.conf]\n"
            "       -c FILE       configuration (default: built-in)\n"
            "       -n            check the configuration and exit\n"
            "       --allow-root  stay root when [security] user is not set\n"
            "       -h, --help    this help\n"
            "       --version     print the version\n"
            "signals: SIGHUP reloads the configuration, SIGTERM/SIGINT stop\n");
}

static void
on_event(void *arg, const struct cairn_router_event *event)
{
    static const enum cairn_log_level levels[] = {
        CAIRN_LOG_ERROR, CAIRN_LOG_WARN, CAIRN_LOG_INFO, CAIRN_LOG_DEBUG};

    if (event->peer != NULL)
        cairn_log(levels[event->level], "[%s %s%s%s] %s", event->channel,
                  event->peer, event->login ? " " : "",
                  event->login ? event->login : "", event->message);
    else
        cairn_log(levels[event->level], "%s", event->message);
}

/* What the ZAP handler refused (an unknown key), a secret key others can
 * read. */
static void
on_curve_event(void *arg, enum cairn_log_level level, const char *message)
{
    (void)arg;
    cairn_log(level, "CURVE: %s", message);
}

/*
 * CURVE on every ZeroMQ link: the router's key, the nodes' public keys
 * and the keys admitted to the control endpoint. Keys that do not exist
 * yet are made (a local cluster's first start).
 */
static int
setup_curve(const struct cairn_config *config)
{
    char error[512] = "";

    cairn_curve_set_event_handler(on_curve_event, NULL);
    if (cairn_curve_setup(config, cairn_config_router(config)->curve_key, true,
                          error, sizeof(error)) < 0) {
        cairn_log_error("CURVE: %s", error);
        return CAIRN_ECONFIG;
    }
    if (cairn_curve_enabled())
        cairn_log_info("CURVE on: router key %s (%s)",
                       cairn_config_router(config)->curve_key,
                       cairn_curve_self_public());
    else
        cairn_log_warn("CURVE off ([security] curve = no): the ZeroMQ links "
                       "to the nodes and the control endpoint are plain "
                       "text and unauthenticated");
    return CAIRN_OK;
}

/* One channel's way to storage: the forward of its destination. */
/* Most destinations one channel writes to. */
#define MAX_CHANNEL_DESTINATIONS 16

/* A destination's forward: one per destination, shared by its channels
 * (one sequence stream per user and node). */
struct destination_forward {
    char *name;
    struct cairn_router_forward *forward; /* NULL: no ring, answer NO */
};

struct channel_route {
    char *channel;
    char *users;      /* [channel] users: globs, blank/comma separated */
    uint64_t refused; /* requests for users outside them */
    size_t destinations[MAX_CHANNEL_DESTINATIONS]; /* daemon->forwards */
    size_t destination_count;
};

/* What the signal and request handlers need. */
struct daemon {
    const char *config_path; /* NULL: the built-in configuration */
    struct cairn_router *router;
    struct channel_route *routes;
    size_t route_count;
    struct destination_forward *forwards;
    size_t forward_count;
    struct cairn_router_control *control; /* [router] control; rebalance */
};

static int load_config(const char *path, struct cairn_config **config);
static void reload_rings(struct daemon *daemon,
                         const struct cairn_config *config);
static int settings_from_config(const struct cairn_config *config,
                                struct cairn_router_settings *settings,
                                struct cairn_router_channel_settings *channels);
static void release_passwords(const struct cairn_config *config,
                              struct cairn_router_channel_settings *channels);

/* SIGHUP: each channel's [channel] users from the new file. */
static void
reload_scopes(struct daemon *daemon, const struct cairn_config *config)
{
    for (size_t i = 0; i < daemon->route_count; i++) {
        struct channel_route *route = &daemon->routes[i];
        const struct cairn_config_channel *channel =
            cairn_config_find_channel(config, route->channel);
        char *users = NULL;

        if (channel == NULL || (channel->users != NULL &&
                                (users = strdup(channel->users)) == NULL))
            continue;
        free(route->users);
        route->users = users;
    }
}

/* SIGHUP: read the file again; apply it only if all of it is valid. */
static void
reload(struct daemon *daemon)
{
    struct cairn_router_channel_settings *channels = NULL;
    struct cairn_router_settings settings;
    struct cairn_config *config = NULL;
    char error[512] = "";
    int rc;

    if (load_config(daemon->config_path, &config) < 0) {
        cairn_log_error("SIGHUP: configuration not reloaded");
        return;
    }
    channels =
        calloc(cairn_config_channel_count(config) + 1, sizeof(*channels));
    rc = channels == NULL ? CAIRN_ENOMEM
                          : settings_from_config(config, &settings, channels);
    if (rc == 0)
        rc = cairn_router_reload(daemon->router, &settings, error,
                                 sizeof(error));
    if (rc < 0) {
        cairn_log_error("SIGHUP: configuration not reloaded: %s (%s)", error,
                        cairn_strerror(rc));
    } else {
        cairn_log_set_level(cairn_config_router(config)->log_level);
        cairn_log_info("SIGHUP: configuration reloaded, %zu channel(s); open "
                       "connections keep their settings",
                       settings.channel_count);
        reload_rings(daemon, config);
        reload_scopes(daemon, config);
    }
    release_passwords(config, channels);
    free(channels);
    cairn_config_free(config);
}

static void
on_signal(struct cairn_loop *loop, int signo, void *arg)
{
    if (signo == SIGHUP) {
        cairn_service_reloading();
        reload(arg);
        cairn_service_ready(NULL);
        return;
    }
    cairn_log_info("signal %d: shutting down", signo);
    cairn_service_stopping();
    cairn_loop_stop(loop);
}

/*
 * Each channel's sasl_password_file: its first line becomes the channel's
 * password (owned: release_passwords()); a file its group or others may
 * read or write is warned about, naming it.
 */
static int
read_password_files(const struct cairn_config *config,
                    struct cairn_router_channel_settings *channels)
{
    for (size_t i = 0; i < cairn_config_channel_count(config); i++) {
        const struct cairn_config_channel *channel =
            cairn_config_channel_at(config, i);
        char error[512] = "", *password = NULL;
        mode_t mode;
        int rc;

        if (channel->sasl_password_file == NULL)
            continue;
        if ((rc = cairn_secret_file_read(channel->sasl_password_file, &password,
                                         error, sizeof(error))) < 0) {
            cairn_log_error("channel %s: sasl_password_file: %s",
                            channel->origin.name, error);
            return rc;
        }
        channels[i].sasl_password = password;
        if (cairn_secret_file_exposed(channel->sasl_password_file, &mode))
            cairn_log_warn("channel %s: %s holds a password and its group or "
                           "others may read or write it (mode %04o): chmod "
                           "600 it",
                           channel->origin.name, channel->sasl_password_file,
                           (unsigned)mode);
    }
    return CAIRN_OK;
}

/* Frees (and clears) what read_password_files() read. */
static void
release_passwords(const struct cairn_config *config,
                  struct cairn_router_channel_settings *channels)
{
    for (size_t i = 0; channels && i < cairn_config_channel_count(config);
         i++) {
        char *password = (char *)channels[i].sasl_password;

        if (cairn_config_channel_at(config, i)->sasl_password_file == NULL ||
            password == NULL)
            continue;
        explicit_bzero(password, strlen(password));
        free(password);
        channels[i].sasl_password = NULL;
    }
}

/* Router settings that borrow from config (valid while config lives). */
/* The [limits] that bound what one command may make the router hold. */
static struct cairn_dlist_limits dlist_limits;

static int
settings_from_config(const struct cairn_config *config,
                     struct cairn_router_settings *settings,
                     struct cairn_router_channel_settings *channels)
{
    const struct cairn_config_router *router = cairn_config_router(config);
    const struct cairn_config_limits *limits = cairn_config_limits(config);
    size_t count = cairn_config_channel_count(config);

    memset(settings, 0, sizeof(*settings));
    settings->servername = router->servername;
    settings->max_connections = (size_t)router->max_connections;
    settings->max_line = (size_t)limits->max_line;
    settings->spool_dir = router->spool_dir;
    settings->spool_max = router->spool_max;
    cairn_dlist_limits_default(&dlist_limits);
    dlist_limits.max_literal = limits->max_literal;
    dlist_limits.max_file = limits->max_message;
    dlist_limits.max_depth = (size_t)limits->max_nesting;
    settings->limits = &dlist_limits;
    settings->channels = channels;
    settings->channel_count = count;
    for (size_t i = 0; i < count; i++) {
        const struct cairn_config_channel *channel =
            cairn_config_channel_at(config, i);

        channels[i] = (struct cairn_router_channel_settings){
            .name = channel->origin.name,
            .listen = channel->listen,
            .sasl_user = channel->sasl_user,
            .sasl_password = channel->sasl_password, /* or the file's */
            .sasl_db = channel->sasl_db,
            .mechanisms = (const char *const *)channel->sasl_mechanisms.items,
            .mechanism_count = channel->sasl_mechanisms.count,
            .compress = channel->compress,
            .idle_timeout_ms = channel->idle_timeout_ms,
            .tls_cert = channel->tls_cert,
            .tls_key = channel->tls_key,
            .require_tls = channel->require_tls,
            .implicit_tls = channel->tls_mode == CAIRN_CONFIG_TLS_IMPLICIT,
            .tls_client_ca = channel->tls_client_ca,
            .tls_client_subject = channel->tls_client_subject,
        };
    }
    return read_password_files(config, channels);
}

static int
load_config(const char *path, struct cairn_config **config)
{
    struct cairn_config_error error;
    int rc = path != NULL ? cairn_config_load(path, config, &error)
                          : cairn_config_load_default(config, &error);

    if (rc < 0) {
        if (error.line > 0)
            cairn_log_error("%s:%u: %s", error.file, error.line, error.message);
        else
            cairn_log_error("%s: %s", error.file, error.message);
    }
    return rc;
}

/* Whether userid matches one of the blank- or comma-separated globs of
 * users (NULL: every user). */
static bool
user_in_scope(const char *users, const char *userid)
{
    char pattern[256];

    if (users == NULL)
        return true;
    for (const char *at = users + strspn(users, ", \t"); *at != '\0';
         at += strspn(at, ", \t")) {
        size_t len = strcspn(at, ", \t");

        snprintf(pattern, sizeof(pattern), "%.*s", (int)len, at);
        if (fnmatch(pattern, userid, 0) == 0)
            return true;
        at += len;
    }
    return false;
}

/* Sends each request to the forwards of its channel's destinations. */
static int
route_request(void *arg, const struct cairn_router_request *request,
              struct cairn_router_reply *reply)
{
    struct daemon *daemon = arg;
    struct cairn_router_forward *forwards[MAX_CHANNEL_DESTINATIONS];
    char text[256];

    for (size_t i = 0; i < daemon->route_count; i++) {
        struct channel_route *route = &daemon->routes[i];
        const struct cairn_router_resolution *resolution = request->resolution;

        if (strcmp(route->channel, request->channel) != 0)
            continue;
        if (resolution != NULL && resolution->has_owner &&
            !user_in_scope(route->users, resolution->owner.userid)) {
            /* Confined channel: nothing is forwarded, stored or read. */
            route->refused++;
            cairn_log_warn("[%s %s] %s %s for %s refused: outside the "
                           "channel's users (%s); %llu refused so far",
                           route->channel, request->peer ? request->peer : "-",
                           cairn_csync_verb_name(request->verb),
                           resolution->key, resolution->owner.userid,
                           route->users, (unsigned long long)route->refused);
            return cairn_router_reply_complete(
                reply, CAIRN_CSYNC_NO, CAIRN_CSYNC_CODE_NONE,
                "cairn router: user not allowed on this channel, nothing "
                "stored");
        }
        for (size_t j = 0; j < route->destination_count; j++) {
            const struct destination_forward *destination =
                &daemon->forwards[route->destinations[j]];

            forwards[j] = destination->forward;
            if (forwards[j] != NULL)
                continue;
            snprintf(text, sizeof(text),
                     "cairn router: destination %s has no ring, nothing "
                     "stored",
                     destination->name);
            return cairn_router_reply_complete(reply, CAIRN_CSYNC_NO,
                                               CAIRN_CSYNC_CODE_NONE, text);
        }
        return cairn_router_forward_request_all(
            forwards, route->destination_count, request, reply);
    }
    return cairn_router_reply_complete(
        reply, CAIRN_CSYNC_NO, CAIRN_CSYNC_CODE_NONE,
        "cairn router: channel has no destination (restart after adding "
        "one), nothing stored");
}

/* A replica that missed an update answered OK, the repair marks of the
 * last run, a node's change of state (down, slow, up): the admin's log
 * line; what happened to each request at debug level. */
static void
on_forward_event(void *arg, const struct cairn_router_event *event)
{
    if (event->level == CAIRN_ROUTER_EVENT_WARN ||
        event->level == CAIRN_ROUTER_EVENT_ERROR)
        cairn_log_warn("destination %s: %s", event->channel, event->message);
    else if (event->level == CAIRN_ROUTER_EVENT_DEBUG)
        cairn_log_debug("destination %s: %s", event->channel, event->message);
    else
        cairn_log_info("destination %s: %s", event->channel, event->message);
}

static const enum cairn_router_ack ack_policies[] = {
    [CAIRN_CONFIG_ACK_ALL] = CAIRN_ROUTER_ACK_ALL,
    [CAIRN_CONFIG_ACK_QUORUM] = CAIRN_ROUTER_ACK_QUORUM,
    [CAIRN_CONFIG_ACK_ONE] = CAIRN_ROUTER_ACK_ONE,
};

/* The forward settings of destination; nodes has room for its nodes. */
static void
forward_settings(const struct cairn_config *config,
                 const struct cairn_config_destination *destination,
                 struct cairn_router_forward_node *nodes,
                 struct cairn_router_forward_settings *settings)
{
    const struct cairn_config_router *router = cairn_config_router(config);

    for (size_t j = 0; j < destination->nodes.count; j++)
        nodes[j] = (struct cairn_router_forward_node){
            destination->node_refs[j]->origin.name,
            destination->node_refs[j]->endpoint};
    *settings = (struct cairn_router_forward_settings){
        .destination = destination->origin.name,
        .ring_file = destination->ring_file,
        .nodes = nodes,
        .node_count = destination->nodes.count,
        .timeout_ms = router->node_timeout_ms,
        .answer_timeout_ms = router->node_answer_timeout_ms,
        .node_window = (size_t)router->node_window,
        .user_window = (size_t)router->user_window,
        .max_frame = (size_t)cairn_config_limits(config)->max_frame,
        .ack = ack_policies[destination->ack],
        .state_dir = router->state_dir,
        .event_fn = on_forward_event,
    };
}

/*
 * A forward per destination. A destination whose ring file cannot be
 * loaded is logged and answered NO.
 */
static int
open_forwards(struct cairn_loop *loop, const struct cairn_config *config,
              struct daemon *daemon)
{
    size_t count = cairn_config_destination_count(config);
    const struct cairn_config_router *router = cairn_config_router(config);

    if (router->node_answer_timeout_ms > router->node_timeout_ms)
        cairn_log_warn("node_answer_timeout (%llums) is above node_timeout "
                       "(%llums): a node is found down after %llums",
                       (unsigned long long)router->node_answer_timeout_ms,
                       (unsigned long long)router->node_timeout_ms,
                       (unsigned long long)router->node_timeout_ms);
    daemon->forwards = calloc(count + 1, sizeof(*daemon->forwards));
    if (daemon->forwards == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < count; i++) {
        const struct cairn_config_destination *destination =
            cairn_config_destination_at(config, i);
        struct destination_forward *forward = &daemon->forwards[i];
        struct cairn_router_forward_node *nodes =
            calloc(destination->nodes.count + 1, sizeof(*nodes));
        struct cairn_router_forward_settings settings;
        char error[512] = "";

        daemon->forward_count++;
        forward->name = strdup(destination->origin.name);
        if (nodes == NULL || forward->name == NULL) {
            free(nodes);
            return CAIRN_ENOMEM;
        }
        forward_settings(config, destination, nodes, &settings);
        if (cairn_router_forward_new(loop, &settings, &forward->forward, error,
                                     sizeof(error)) < 0)
            cairn_log_error("destination %s: %s; its requests are answered "
                            "NO",
                            forward->name, error);
        free(nodes);
    }
    return CAIRN_OK;
}

/* Each channel to the forwards of its destinations (all of them). */
/* A node name both rings hold, or NULL. */
static const char *
shared_node(const struct cairn_ring *first, const struct cairn_ring *second)
{
    for (size_t i = 0; first && second && i < cairn_ring_node_count(first);
         i++) {
        struct cairn_ring_node_info one, other;

        cairn_ring_node_info(first, i, &one);
        for (size_t j = 0; j < cairn_ring_node_count(second); j++) {
            cairn_ring_node_info(second, j, &other);
            if (strcmp(one.name, other.name) == 0)
                return one.name;
        }
    }
    return NULL;
}

/*
 * Two destinations whose rings share a node write the same user twice into
 * one store with two sequence streams, which the node refuses as gaps: a
 * destination is a separate copy, on nodes of its own. Said at start.
 */
static void
warn_shared_nodes(const struct daemon *daemon)
{
    for (size_t a = 0; a < daemon->forward_count; a++) {
        for (size_t b = a + 1; b < daemon->forward_count; b++) {
            const char *name = shared_node(
                cairn_router_forward_ring(daemon->forwards[a].forward),
                cairn_router_forward_ring(daemon->forwards[b].forward));

            if (name != NULL)
                cairn_log_warn("node %s is in the rings of destinations %s "
                               "and %s: give each destination nodes of its "
                               "own",
                               name, daemon->forwards[a].name,
                               daemon->forwards[b].name);
        }
    }
}

static int
open_routes(struct cairn_loop *loop, const struct cairn_config *config,
            struct daemon *daemon)
{
    size_t count = cairn_config_channel_count(config);
    int rc;

    if ((rc = open_forwards(loop, config, daemon)) < 0)
        return rc;
    warn_shared_nodes(daemon);
    daemon->routes = calloc(count + 1, sizeof(*daemon->routes));
    if (daemon->routes == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < count; i++) {
        const struct cairn_config_channel *channel =
            cairn_config_channel_at(config, i);
        struct channel_route *route = &daemon->routes[i];

        daemon->route_count++;
        if ((route->channel = strdup(channel->origin.name)) == NULL)
            return CAIRN_ENOMEM;
        if (channel->users != NULL &&
            (route->users = strdup(channel->users)) == NULL)
            return CAIRN_ENOMEM;
        if (channel->users != NULL)
            cairn_log_info("channel %s: confined to users %s", route->channel,
                           channel->users);
        if (channel->destinations.count > MAX_CHANNEL_DESTINATIONS) {
            cairn_log_error("channel %s: more than %d destinations",
                            route->channel, MAX_CHANNEL_DESTINATIONS);
            return CAIRN_ECONFIG;
        }
        for (size_t j = 0; j < channel->destinations.count; j++) {
            for (size_t k = 0; k < daemon->forward_count; k++)
                if (strcmp(daemon->forwards[k].name,
                           channel->destination_refs[j]->origin.name) == 0)
                    route->destinations[route->destination_count++] = k;
            cairn_log_info("channel %s: writing to destination %s",
                           route->channel,
                           channel->destination_refs[j]->origin.name);
        }
    }
    return CAIRN_OK;
}

static void
close_routes(struct daemon *daemon)
{
    for (size_t i = 0; i < daemon->route_count; i++) {
        free(daemon->routes[i].channel);
        free(daemon->routes[i].users);
    }
    free(daemon->routes);
    for (size_t i = 0; i < daemon->forward_count; i++) {
        cairn_router_forward_free(daemon->forwards[i].forward);
        free(daemon->forwards[i].name);
    }
    free(daemon->forwards);
}

/*
 * SIGHUP, rings and nodes: each destination's ring file is read again; a
 * higher epoch routes new requests (those in flight finish on the old
 * ring), new node endpoints are connected. A file that does not load is
 * refused with a log line and the ring in use stays. New destinations or
 * channel-to-destination changes need a restart.
 */
static void
reload_rings(struct daemon *daemon, const struct cairn_config *config)
{
    for (size_t i = 0; i < daemon->forward_count; i++) {
        const struct destination_forward *forward = &daemon->forwards[i];
        const struct cairn_config_destination *destination =
            cairn_config_find_destination(config, forward->name);
        struct cairn_router_forward_node *nodes;
        struct cairn_router_forward_settings settings;
        char error[512] = "";
        bool replaced = false;

        if (forward->forward == NULL || destination == NULL)
            continue;
        nodes = calloc(destination->nodes.count + 1, sizeof(*nodes));
        if (nodes == NULL)
            continue;
        forward_settings(config, destination, nodes, &settings);
        if (cairn_router_forward_reload(forward->forward, &settings, &replaced,
                                        error, sizeof(error)) < 0)
            cairn_log_error("SIGHUP: destination %s: %s; ring in use kept",
                            forward->name, error);
        else if (replaced)
            cairn_log_info("SIGHUP: destination %s: ring epoch %llu loaded",
                           forward->name,
                           (unsigned long long)cairn_ring_epoch(
                               cairn_router_forward_ring(forward->forward)));
        free(nodes);
    }
}

/* The rebalance control endpoint over every forward, when configured. */
static int
open_control(struct cairn_loop *loop, const struct cairn_config *config,
             struct daemon *daemon)
{
    const char *endpoint = cairn_config_router(config)->control;
    char error[512] = "";
    int rc = 0;

    if (endpoint == NULL)
        return 0;
    rc = cairn_router_control_new(loop, endpoint, &daemon->control, error,
                                  sizeof(error));
    for (size_t i = 0; i < daemon->forward_count && rc == 0; i++)
        if (daemon->forwards[i].forward != NULL)
            rc = cairn_router_control_add_forward(daemon->control,
                                                  daemon->forwards[i].forward);
    /* A rebalance under way (cairnctl rebalance): its state, from its
     * journal. */
    for (size_t i = 0; i < cairn_config_destination_count(config) && rc == 0;
         i++) {
        const struct cairn_config_destination *destination =
            cairn_config_destination_at(config, i);

        rc = cairn_router_control_resume(
            daemon->control, destination->origin.name, destination->ring_file,
            error, sizeof(error));
        if (rc == CAIRN_ENOENT) /* no forward: nothing routed there */
            rc = 0;
    }
    if (rc < 0)
        cairn_log_error("control %s: %s (%s)", endpoint, error,
                        cairn_strerror(rc));
    else
        cairn_log_info("control: listening on %s",
                       cairn_router_control_endpoint(daemon->control));
    return rc;
}

/* [router] metrics_listen: Prometheus /metrics on its own thread. */
static int
open_metrics(const struct cairn_config *config,
             struct cairn_metrics_server **server)
{
    const struct cairn_config_router *router = cairn_config_router(config);
    char error[512] = "";
    int rc;

    *server = NULL;
    if (router->metrics_listen == NULL)
        return 0;
    if ((rc = cairn_metrics_start(router->metrics_listen, server, error,
                                  sizeof(error))) < 0)
        cairn_log_error("cannot start: %s", error);
    else
        cairn_log_info("metrics: serving /metrics on %s (port %u)",
                       router->metrics_listen,
                       cairn_metrics_server_port(*server));
    return rc;
}

static int
serve(const char *config_path, const struct cairn_config *config,
      const struct cairn_router_settings *settings,
      const struct cairn_daemon_start *start)
{
    struct daemon daemon = {.config_path = config_path};
    const char *pid_file = cairn_config_router(config)->pid_file;
    struct cairn_loop *loop = NULL;
    struct cairn_router *router = NULL;
    struct cairn_metrics_server *metrics = NULL;
    char error[512] = "";
    uint64_t open_files = 0;
    int rc;

    /* Every connection holds a socket and a spool file, every request in
     * flight a descriptor per spool file it reads: many sync_client
     * connections need more than the usual 1024. */
    if (cairn_raise_open_files_limit(&open_files) == 0 && open_files < 4096)
        cairn_log_warn("only %llu open files allowed (ulimit -n): fewer "
                       "connections fit; raise the limit",
                       (unsigned long long)open_files);
    if ((rc = cairn_loop_new(&loop)) < 0 ||
        (rc = cairn_loop_watch_signals(loop, on_signal, &daemon)) < 0)
        goto out;
    if (pid_file != NULL &&
        (rc = cairn_pid_file_write(pid_file, error, sizeof(error))) < 0) {
        cairn_log_error("%s", error);
        pid_file = NULL;
        goto out;
    }
    /* Listeners bound with root's rights, files created as the user. */
    if ((rc = cairn_daemon_start_files(start, error, sizeof(error))) < 0 ||
        (rc = cairn_router_new(loop, settings, &router, error, sizeof(error))) <
            0) {
        cairn_log_error("cannot start: %s (%s)", error, cairn_strerror(rc));
        goto out;
    }
    daemon.router = router;
    cairn_router_set_event_handler(router, on_event, NULL);
    for (size_t i = 0; i < settings->channel_count; i++)
        cairn_log_info("channel %s: listening on port %u",
                       settings->channels[i].name,
                       (unsigned)cairn_router_port(router, i));
    if ((rc = open_routes(loop, config, &daemon)) < 0 ||
        (rc = open_control(loop, config, &daemon)) < 0 ||
        (rc = open_metrics(config, &metrics)) < 0)
        goto out;
    if ((rc = cairn_daemon_start_end(start, error, sizeof(error))) < 0) {
        cairn_log_error("%s", error);
        goto out;
    }
    if (start->switch_needed)
        cairn_log_info("running as %s (uid %ld, gid %ld)", start->user,
                       (long)start->uid, (long)start->gid);
    cairn_router_set_request_handler(router, route_request, &daemon);
    cairn_service_ready("serving");
    rc = cairn_loop_run(loop);
out:
    /* The router first: pending answers refer to the forwards. */
    cairn_router_free(router);
    cairn_router_control_free(daemon.control); /* before the forwards */
    close_routes(&daemon);
    cairn_loop_free(loop);
    cairn_metrics_stop(metrics); /* nothing counts any more */
    if (pid_file != NULL)
        cairn_pid_file_remove(pid_file);
    return rc;
}

/*
 * Before anything is opened: data_mode for what the router creates, and
 * the switch to [security] user decided (refused as root without one
 * unless --allow-root); the spool and state directories are handed to
 * the user.
 */
static int
start_daemon(const struct cairn_config *config, bool allow_root,
             struct cairn_daemon_start *start)
{
    const struct cairn_config_security *security =
        cairn_config_security(config);
    const struct cairn_config_router *router = cairn_config_router(config);
    const char *dirs[] = {router->spool_dir, router->state_dir};
    char error[512] = "";
    int rc;

    if ((rc = cairn_daemon_start_begin(security->user, allow_root,
                                       (mode_t)security->data_mode, dirs, 2,
                                       start, error, sizeof(error))) < 0)
        cairn_log_error("%s", error);
    return rc;
}

int
main(int argc, char **argv)
{
    struct cairn_router_channel_settings *channels = NULL;
    struct cairn_router_settings settings;
    struct cairn_config *config = NULL;
    static const struct option long_options[] = {
        {"allow-root", no_argument, NULL, 'R'}, {NULL, 0, NULL, 0}};
    struct cairn_daemon_start start;
    const char *path = NULL;
    bool check_only = false, allow_root = false;
    int option, status = EXIT_OK;

    if (cairn_service_standard_options(argc, argv, "cairn-router",
                                       CAIRN_VERSION, usage, &status))
        return status;
    cairn_log_init("cairn-router", CAIRN_LOG_INFO, true, false);
    while ((option = getopt_long(argc, argv, "c:nh", long_options, NULL)) !=
           -1) {
        switch (option) {
        case 'c':
            path = optarg;
            break;
        case 'n':
            check_only = true;
            break;
        case 'R':
            allow_root = true;
            break;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (load_config(path, &config) < 0)
        return EXIT_CONFIG;
    cairn_log_set_level(cairn_config_router(config)->log_level);
    channels =
        calloc(cairn_config_channel_count(config) + 1, sizeof(*channels));
    if (channels == NULL ||
        settings_from_config(config, &settings, channels) < 0) {
        status = EXIT_CONFIG;
    } else if (check_only) {
        printf("%s: configuration ok\n", cairn_config_name(config));
    } else if (start_daemon(config, allow_root, &start) < 0 ||
               setup_curve(config) < 0) {
        status = EXIT_CONFIG;
    } else if (serve(path, config, &settings, &start) < 0) {
        status = EXIT_RUNTIME;
    }
    release_passwords(config, channels);
    free(channels);
    cairn_config_free(config);
    return status;
}
