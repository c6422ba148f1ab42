/*
 * sync_peer.c - a test-only csync peer for real sync_client runs
 * (test_sync_client.py): the router's session layer on a free loopback
 * port, with a recording request handler instead of storage. It prints
 * "READY <port>", then one line per router event and per request
 * ("REQUEST GET USER user=alice"), flushed, on stdout.
 *
 * Its answers exist only to let sync_client go on and show what it sends:
 * every GET is "NO IMAP_MAILBOX_NONEXISTENT" (an empty backup, which makes
 * the client upload everything) and every APPLY is "OK". It stores nothing
 * and is never installed.
 *
 * usage: sync_peer USER PASSWORD SPOOL_DIR [MECHANISM...]
 */
#include "loop.h"
#include "router.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static void
on_event(void *arg, const struct cairn_router_event *event)
{
    printf("EVENT %s%s%s\n", event->login ? event->login : "",
           event->login ? ": " : "", event->message);
    fflush(stdout);
}

static int
on_request(void *arg, const struct cairn_router_request *request,
           struct cairn_router_reply *reply)
{
    const struct cairn_router_resolution *resolution = request->resolution;
    int files = 0, verified = 0;

    /* APPLY MAILBOX: how many staged bodies came with it, and matched. */
    for (const struct cairn_dlist *item = cairn_dlist_first(request->message);
         item != NULL; item = cairn_dlist_next(item)) {
        void *handle = NULL;

        if (!cairn_dlist_file_info(item, NULL, NULL, NULL, &handle))
            continue;
        files++;
        verified += cairn_router_spool_file_verified(handle);
    }
    printf("REQUEST %s %s user=%s files=%d verified=%d\n",
           cairn_csync_verb_name(request->verb), resolution->key,
           resolution->owner.userid, files, verified);
    fflush(stdout);
    if (request->verb == CAIRN_CSYNC_GET)
        return cairn_router_reply_complete(reply, CAIRN_CSYNC_NO,
                                           CAIRN_CSYNC_CODE_MAILBOX_NONEXISTENT,
                                           "No Such Mailbox");
    return cairn_router_reply_complete(reply, CAIRN_CSYNC_OK,
                                       CAIRN_CSYNC_CODE_NONE, "Success");
}

static void
on_signal(struct cairn_loop *loop, int signo, void *arg)
{
    cairn_loop_stop(loop);
}

int
main(int argc, char **argv)
{
    struct cairn_router_channel_settings channel = {
        .name = "backup",
        .listen = "127.0.0.1:0",
        .compress = true,
        .idle_timeout_ms = 60000,
    };
    struct cairn_router_settings settings = {
        .servername = "cairn.test",
        .channels = &channel,
        .channel_count = 1,
    };
    struct cairn_loop *loop = NULL;
    struct cairn_router *router = NULL;
    char error[256] = "";
    int rc;

    if (argc < 4) {
        fprintf(stderr,
                "usage: sync_peer USER PASSWORD SPOOL_DIR [MECHANISM...]\n");
        return 64;
    }
    channel.sasl_user = argv[1];
    channel.sasl_password = argv[2];
    settings.spool_dir = argv[3];
    channel.mechanisms = (const char *const *)(argv + 4);
    channel.mechanism_count = (size_t)(argc - 4);
    if ((rc = cairn_loop_new(&loop)) == 0)
        rc = cairn_loop_watch_signals(loop, on_signal, NULL);
    if (rc == 0)
        rc = cairn_router_new(loop, &settings, &router, error, sizeof(error));
    if (rc < 0) {
        fprintf(stderr, "sync_peer: %s %s\n", error, cairn_strerror(rc));
        cairn_loop_free(loop);
        return 1;
    }
    cairn_router_set_event_handler(router, on_event, NULL);
    cairn_router_set_request_handler(router, on_request, NULL);
    printf("READY %u\n", (unsigned)cairn_router_port(router, 0));
    fflush(stdout);
    rc = cairn_loop_run(loop);
    cairn_router_free(router);
    cairn_loop_free(loop);
    return rc < 0 ? 1 : 0;
}
