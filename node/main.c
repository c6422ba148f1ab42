/*
 * main.c - cairn-node: reads cluster.conf, takes the [node NAME] section,
 * and runs the node daemon (node_server.h) on the event loop until
 * SIGTERM/SIGINT, which end the current group commit, acknowledge it and
 * close every store. SIGHUP reloads the configuration (only if valid).
 * SIGUSR1 starts a scrub round now (every user checked again).
 */
#include "config.h"
#include "curve.h"
#include "daemon.h"
#include "loop.h"
#include "metrics.h"
#include "node_metrics.h"
#include "node_server.h"
#include "service.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Exit codes. */
enum {
    EXIT_OK = 0,
    EXIT_USAGE = 64,  /* bad command line */
    EXIT_CONFIG = 78, /* bad configuration */
    EXIT_RUNTIME = 1, /* could not start or the loop failed */
};

struct options {
    const char *config_path;   /* NULL: built-in default */
    const char *name;          /* [node NAME] */
    const char *endpoint;      /* overrides the section's endpoint */
    const char *data_dir;      /* overrides the section's data_dir */
    const char *endpoint_file; /* the bound endpoint is written here */
    bool foreground;
    bool check_only;
    bool allow_root; /* --allow-root: stay root without [security] user */
};

/* The other nodes of this node's destinations, at most this many. */
#define PEERS_MAX 256

struct daemon_state {
    const struct options *options;
    struct cairn_config *config;
    struct cairn_node_server *server;
    struct cairn_daemon_start start;         /* the switch to [security] user */
    struct cairn_node_peer peers[PEERS_MAX]; /* strings of config */
    uint64_t scrub_signal_timer;
};

/* SIGUSR1 arrived: the loop's timer starts a scrub round. */
static volatile sig_atomic_t scrub_signalled;

#ifndef CAIRN_VERSION
#define CAIRN_VERSION "unknown"
#endif

static void
usage(FILE *out)
{
    fprintf(
        out,
        "usage: cairn-node [-ft] [--allow-root] [-c cluster.conf] [-d dir]\n"
        "                  [-e endpoint] [-w file] -n name\n"
        "       -c FILE      configuration (default: built-in)\n"
        "       -n NAME      the [node NAME] section to run\n"
        "       -f           stay in the foreground\n"
        "       -t, --check  check the configuration and exit\n"
        "       -d DIR       data directory instead of the section's\n"
        "       -e ENDPOINT  endpoint instead of the section's\n"
        "       -w FILE      write the bound endpoint to FILE once ready\n"
        "       --allow-root stay root when [security] user is not set\n"
        "       -h, --help   this help\n"
        "       --version    print the version\n"
        "signals: SIGHUP reloads the configuration, SIGUSR1 starts a scrub\n"
        "round now, SIGTERM/SIGINT stop\n");
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

/* Fills settings from the config; strings are borrowed from it. */
static int
settings_from_config(const struct cairn_config *config,
                     const struct options *options,
                     struct cairn_node_server_settings *settings)
{
    const struct cairn_config_node *node =
        cairn_config_find_node(config, options->name);
    const struct cairn_config_compaction *compaction =
        cairn_config_compaction(config);

    if (node == NULL) {
        cairn_log_error("%s: no [node %s] section", cairn_config_name(config),
                        options->name);
        return CAIRN_ECONFIG;
    }
    memset(settings, 0, sizeof(*settings));
    settings->name = node->origin.name;
    settings->endpoint = options->endpoint ? options->endpoint : node->endpoint;
    settings->data_dir = options->data_dir ? options->data_dir : node->data_dir;
    if (settings->endpoint == NULL || settings->data_dir == NULL) {
        cairn_log_error("[node %s]: endpoint and data_dir are required",
                        options->name);
        return CAIRN_ECONFIG;
    }
    settings->group_commit_ms = node->group_commit_ms;
    settings->max_frame = node->max_frame
                              ? node->max_frame
                              : cairn_config_limits(config)->max_frame;
    settings->reserve = node->reserve;
    settings->retention_seconds = (int64_t)(compaction->retention_ms / 1000);
    settings->min_chunk = compaction->min_chunk;
    settings->max_chunk = compaction->max_chunk;
    settings->work_threshold = 1;
    settings->work_percent = (unsigned)compaction->work_threshold;
    /* parallel_users: the config refuses anything but 1 (one worker). */
    settings->compaction_enabled = compaction->enabled;
    settings->compaction_interval_ms = compaction->interval_ms;
    settings->scrub_enabled = cairn_config_scrub(config)->enabled;
    settings->scrub_interval_ms = cairn_config_scrub(config)->interval_ms;
    settings->scrub_rate = cairn_config_scrub(config)->rate;
    settings->scrub_full =
        cairn_config_scrub(config)->level == CAIRN_SCRUB_FULL;
    settings->scrub_heal = cairn_config_scrub(config)->heal;
    return 0;
}

/*
 * The nodes that may hold this node's users' other replicas: every other
 * node of every destination this node is in (self-heal asks them).
 */
static void
peers_from_config(const struct cairn_config *config, const char *self,
                  struct cairn_node_peer *peers,
                  struct cairn_node_server_settings *settings)
{
    size_t count = 0;

    for (size_t d = 0; d < cairn_config_destination_count(config); d++) {
        const struct cairn_config_destination *destination =
            cairn_config_destination_at(config, d);
        bool member = false;

        for (size_t n = 0; n < destination->nodes.count; n++)
            member |= strcmp(destination->nodes.items[n], self) == 0;
        for (size_t n = 0; member && n < destination->nodes.count; n++) {
            const struct cairn_config_node *node = destination->node_refs[n];
            bool known = strcmp(node->origin.name, self) == 0;

            for (size_t p = 0; p < count && !known; p++)
                known = strcmp(peers[p].name, node->origin.name) == 0;
            if (!known && count < PEERS_MAX && node->endpoint != NULL)
                peers[count++] =
                    (struct cairn_node_peer){node->origin.name, node->endpoint};
        }
    }
    settings->peers = peers;
    settings->peer_count = count;
}

static void
on_event(void *arg, const struct cairn_node_server_event *event)
{
    (void)arg;
    if (event->peer != NULL)
        cairn_log(event->level, "[%s %s #%llu] %s", event->peer,
                  event->user ? event->user : "-",
                  (unsigned long long)event->request_id, event->message);
    else
        cairn_log(event->level, "%s", event->message);
}

static void
on_curve_event(void *arg, enum cairn_log_level level, const char *message)
{
    (void)arg;
    cairn_log(level, "CURVE: %s", message);
}

/*
 * CURVE on the node's endpoint: its key ([node] curve_key, default its
 * name) and the keys it admits with their roles. Keys that do not exist
 * yet are made (a local cluster's first start).
 */
static int
setup_curve(const struct cairn_config *config, const char *name)
{
    const struct cairn_config_node *node = cairn_config_find_node(config, name);
    char error[512] = "";

    cairn_curve_set_event_handler(on_curve_event, NULL);
    if (cairn_curve_setup(config, node->curve_key, true, error, sizeof(error)) <
        0) {
        cairn_log_error("CURVE: %s", error);
        return CAIRN_ECONFIG;
    }
    if (cairn_curve_enabled())
        cairn_log_info("CURVE on: node key %s (%s)", node->curve_key,
                       cairn_curve_self_public());
    else
        cairn_log_warn("CURVE off ([security] curve = no): any process that "
                       "reaches %s can read and change every backup",
                       node->endpoint);
    return CAIRN_OK;
}

static void
reload(struct daemon_state *state)
{
    struct cairn_config *config = NULL;
    struct cairn_node_server_settings settings;

    if (load_config(state->options->config_path, &config) < 0 ||
        settings_from_config(config, state->options, &settings) < 0 ||
        cairn_node_server_reload(state->server, &settings) < 0) {
        cairn_log_warn("SIGHUP: new configuration refused; keeping the "
                       "running one (endpoint and data_dir cannot change)");
        cairn_config_free(config);
        return;
    }
    cairn_config_free(state->config);
    state->config = config;
    cairn_log_info("SIGHUP: configuration reloaded");
}

static void
on_signal(struct cairn_loop *loop, int signo, void *arg)
{
    struct daemon_state *state = arg;

    if (signo == SIGHUP) {
        cairn_service_reloading();
        reload(state);
        cairn_service_ready(NULL);
        return;
    }
    cairn_log_info("signal %d: shutting down", signo);
    cairn_service_stopping();
    cairn_node_server_shutdown(state->server);
    cairn_loop_stop(loop);
}

static void
on_scrub_signal(int signo)
{
    (void)signo;
    scrub_signalled = 1;
}

static void
on_scrub_timer(struct cairn_loop *loop, uint64_t timer_id, void *arg)
{
    struct daemon_state *state = arg;

    (void)loop;
    (void)timer_id;
    if (!scrub_signalled || state->server == NULL)
        return;
    scrub_signalled = 0;
    cairn_log_info("SIGUSR1: scrub round started");
    cairn_node_server_scrub_now(state->server);
}

static int
write_endpoint_file(const char *path, const char *endpoint)
{
    char *temporary = NULL;
    FILE *file;
    int rc = 0;

    if (asprintf(&temporary, "%s.tmp", path) < 0)
        return CAIRN_ENOMEM;
    if ((file = fopen(temporary, "w")) == NULL)
        rc = CAIRN_EIO;
    else if (fprintf(file, "%s\n", endpoint) < 0 || fclose(file) != 0)
        rc = CAIRN_EIO;
    /* Renamed into place so a reader never sees half a line. */
    if (rc == 0 && rename(temporary, path) != 0)
        rc = CAIRN_EIO;
    free(temporary);
    return rc;
}

/*
 * [node] metrics_listen: Prometheus /metrics on its own thread, with the
 * node's figures labelled by the destinations that list it.
 */
static int
open_metrics(const struct daemon_state *state,
             const struct cairn_node_server_settings *settings,
             struct cairn_metrics_server **server,
             struct cairn_node_metrics **figures)
{
    const struct cairn_config_node *node =
        cairn_config_find_node(state->config, state->options->name);
    const char *destinations[64];
    size_t count = 0;
    char error[512] = "";
    int rc;

    if (node == NULL || node->metrics_listen == NULL)
        return 0;
    for (size_t i = 0; i < cairn_config_destination_count(state->config) &&
                       count < sizeof(destinations) / sizeof(destinations[0]);
         i++) {
        const struct cairn_config_destination *destination =
            cairn_config_destination_at(state->config, i);

        for (size_t n = 0; n < destination->nodes.count; n++)
            if (strcmp(destination->nodes.items[n], node->origin.name) == 0)
                destinations[count++] = destination->origin.name;
    }
    if ((rc = cairn_metrics_start(node->metrics_listen, server, error,
                                  sizeof(error))) < 0) {
        cairn_log_error("node %s: %s", settings->name, error);
        return rc;
    }
    if ((rc = cairn_node_metrics_new(settings->data_dir,
                                     settings->scrub_interval_ms, destinations,
                                     count, figures)) < 0) {
        cairn_log_error("node %s: metrics: %s", settings->name,
                        cairn_strerror(rc));
        return rc;
    }
    cairn_log_info("node %s: metrics: serving /metrics on %s (port %u)",
                   settings->name, node->metrics_listen,
                   cairn_metrics_server_port(*server));
    return 0;
}

static int
serve(struct daemon_state *state,
      const struct cairn_node_server_settings *settings)
{
    struct cairn_loop *loop = NULL;
    struct cairn_metrics_server *metrics = NULL;
    struct cairn_node_metrics *node_metrics = NULL;
    char error[512] = "";
    int rc;

    if ((rc = cairn_loop_new(&loop)) < 0 ||
        (rc = cairn_loop_watch_signals(loop, on_signal, state)) < 0)
        goto out;
    /* Bound and opened with root's rights, files created as the user
     * (the switch for good once the -w file is written). */
    if ((rc = cairn_daemon_start_files(&state->start, error, sizeof(error))) <
            0 ||
        (rc = cairn_node_server_new(loop, NULL, settings, &state->server, error,
                                    sizeof(error))) < 0) {
        cairn_log_error("node %s: %s", settings->name,
                        error[0] ? error : cairn_strerror(rc));
        goto out;
    }
    cairn_node_server_set_event_handler(state->server, on_event, NULL);
    {
        struct sigaction action;

        memset(&action, 0, sizeof(action));
        action.sa_handler = on_scrub_signal;
        sigemptyset(&action.sa_mask);
        action.sa_flags = SA_RESTART;
        if (sigaction(SIGUSR1, &action, NULL) < 0 ||
            (rc = cairn_loop_add_timer(loop, 100, 100, on_scrub_timer, state,
                                       &state->scrub_signal_timer)) < 0) {
            rc = rc < 0 ? rc : CAIRN_EIO;
            goto out;
        }
    }
    if ((rc = open_metrics(state, settings, &metrics, &node_metrics)) < 0)
        goto out;
    cairn_log_info("node %s: listening on %s, data in %s", settings->name,
                   cairn_node_server_endpoint(state->server),
                   settings->data_dir);
    /* The -w file, like a pid file, is written with root's rights. */
    cairn_daemon_start_files_done(&state->start);
    if (state->options->endpoint_file &&
        (rc = write_endpoint_file(state->options->endpoint_file,
                                  cairn_node_server_endpoint(state->server))) <
            0) {
        cairn_log_error("cannot write %s", state->options->endpoint_file);
        goto out;
    }
    if ((rc = cairn_daemon_start_end(&state->start, error, sizeof(error))) <
        0) {
        cairn_log_error("node %s: %s", settings->name, error);
        goto out;
    }
    if (state->start.switch_needed)
        cairn_log_info("running as %s (uid %ld, gid %ld)", state->start.user,
                       (long)state->start.uid, (long)state->start.gid);
    cairn_service_ready("serving");
    rc = cairn_loop_run(loop);
out:
    cairn_node_server_free(state->server);
    state->server = NULL;
    cairn_loop_free(loop);
    cairn_metrics_stop(metrics); /* then what its collector reads */
    cairn_node_metrics_free(node_metrics);
    return rc;
}

/*
 * Before anything is opened: data_mode for what the node creates, and the
 * switch to [security] user decided (refused as root without one unless
 * --allow-root); the data directory is handed to the user.
 */
static int
start_daemon(struct daemon_state *state,
             const struct cairn_node_server_settings *settings)
{
    const struct cairn_config_security *security =
        cairn_config_security(state->config);
    const char *dirs[] = {settings->data_dir};
    char error[512] = "";
    int rc;

    if ((rc = cairn_daemon_start_begin(
             security->user, state->options->allow_root,
             (mode_t)security->data_mode, dirs, 1, &state->start, error,
             sizeof(error))) < 0)
        cairn_log_error("node %s: %s", settings->name, error);
    return rc;
}

static int
parse_options(int argc, char **argv, struct options *options)
{
    static const struct option long_options[] = {
        {"check", no_argument, NULL, 't'},
        {"allow-root", no_argument, NULL, 'R'},
        {NULL, 0, NULL, 0}};
    int option;

    while ((option = getopt_long(argc, argv, "c:n:fte:d:w:h", long_options,
                                 NULL)) != -1) {
        switch (option) {
        case 'c':
            options->config_path = optarg;
            break;
        case 'n':
            options->name = optarg;
            break;
        case 'f':
            options->foreground = true;
            break;
        case 't':
            options->check_only = true;
            break;
        case 'e':
            options->endpoint = optarg;
            break;
        case 'd':
            options->data_dir = optarg;
            break;
        case 'w':
            options->endpoint_file = optarg;
            break;
        case 'R':
            options->allow_root = true;
            break;
        default:
            return CAIRN_EINVAL;
        }
    }
    if (optind != argc || options->name == NULL)
        return CAIRN_EINVAL;
    return 0;
}

int
main(int argc, char **argv)
{
    struct options options = {0};
    struct daemon_state state = {0};
    struct cairn_node_server_settings settings;
    int status = EXIT_OK;

    if (cairn_service_standard_options(argc, argv, "cairn-node", CAIRN_VERSION,
                                       usage, &status))
        return status;
    cairn_log_init("cairn-node", CAIRN_LOG_INFO, true, false);
    if (parse_options(argc, argv, &options) < 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    state.options = &options;
    if (load_config(options.config_path, &state.config) < 0)
        return EXIT_CONFIG;
    if (settings_from_config(state.config, &options, &settings) < 0) {
        status = EXIT_CONFIG;

    } else if (options.check_only) {
        printf("%s: configuration ok for node %s\n",
               cairn_config_name(state.config), options.name);
    } else {
        /* Detached, the log goes to syslog instead of stderr. */
        cairn_log_init(
            "cairn-node",
            cairn_config_find_node(state.config, options.name)->log_level,
            options.foreground, !options.foreground);
        peers_from_config(state.config, options.name, state.peers, &settings);
        if (start_daemon(&state, &settings) < 0 ||
            setup_curve(state.config, options.name) < 0) {
            status = EXIT_CONFIG;
        } else if (!options.foreground && daemon(1, 0) != 0) {
            cairn_log_error("cannot detach from the terminal");
            status = EXIT_RUNTIME;
        } else if (serve(&state, &settings) < 0) {
            status = EXIT_RUNTIME;
        }
    }
    cairn_config_free(state.config);
    return status;
}
