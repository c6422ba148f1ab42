/*
 * test_server_scrub.c - the node's scrub, in process (the config's
 * interval cannot go below a minute): two users written, one byte of
 * "bad"'s data file flipped, the scrub turned on; it must find exactly
 * "bad" (the event is awaited, not a time), record it in the catalog,
 * and quarantine it: bad's APPLY and GET get a retryable NO naming the
 * damage while "good" is served as before; the quarantine survives a
 * restart; a user whose index was deleted is rebuilt from its data file
 * when the scrub opens it, and found clean.
 */
#include "check.h"
#include "node.h"
#include "node_client.h"
#include "node_server.h"
#include "node_test_util.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define UPDATES 12

struct events {
    int damaged_bad, damaged_other, clean;
};

static struct events events;

static void
on_event(void *arg, const struct cairn_node_server_event *event)
{
    (void)arg;
    if (strncmp(event->message, "scrub: bad is damaged", 21) == 0)
        events.damaged_bad++;
    else if (strstr(event->message, "is damaged") != NULL)
        events.damaged_other++;
    if (strncmp(event->message, "scrub of ", 9) == 0 &&
        strstr(event->message, ": ok,") != NULL)
        events.clean++;
}

struct call {
    bool answered;
    int status;
    char text[512];
};

static void
on_reply(void *arg, const struct cairn_node_reply *reply)
{
    struct call *call = arg;

    call->answered = true;
    call->status = reply->status;
    snprintf(call->text, sizeof(call->text), "%s",
             reply->envelope && reply->envelope->error_text
                 ? reply->envelope->error_text
                 : "");
}

static void
call_user(struct cairn_loop *loop, struct cairn_node_client *client,
          const char *user, bool get, struct call *call)
{
    static const char seen[] =
        "SEEN %(USERID u MBOXNAME user.u UNIQUEID abc LASTREAD 1 LASTUID 1"
        " LASTCHANGE 1 SEENUIDS 1)";
    static const char meta[] = "META u";
    struct cairn_node_frame frame = {get ? meta : seen,
                                     strlen(get ? meta : seen)};
    struct cairn_node_request request = {0};
    uint64_t deadline = cairn_loop_now_ms() + 60000;

    memset(call, 0, sizeof(*call));
    request.kind = get ? CAIRN__KIND__STATE_REQUEST : CAIRN__KIND__APPLY;
    request.user = user;
    request.verb = get ? "GET" : "APPLY";
    request.key = get ? "META" : "SEEN";
    request.frames = &frame;
    request.frame_count = 1;
    CHECK_INT(cairn_node_client_send(client, 0, &request, on_reply, call, NULL),
              0);
    while (!call->answered && cairn_loop_now_ms() < deadline)
        cairn_loop_run_once(loop, 5);
    CHECK(call->answered);
}

/* Flips one byte in the middle of the data file (a rotting disk). */
static void
flip_byte(const char *data_path)
{
    struct stat st;
    unsigned char byte;
    int fd = open(data_path, O_RDWR);

    CHECK(fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 64);
    if (fd < 0)
        return;
    CHECK(pread(fd, &byte, 1, st.st_size / 2) == 1);
    byte ^= 0x5a;
    CHECK(pwrite(fd, &byte, 1, st.st_size / 2) == 1);
    close(fd);
}

static void
check_catalog(const char *dir)
{
    struct cairn_catalog *catalog = NULL;
    char path[600], *damage = NULL;
    int64_t checked_ms = 0;

    snprintf(path, sizeof(path), "%s/catalog.db", dir);
    CHECK_INT(cairn_catalog_open(path, &catalog), 0);
    if (catalog == NULL)
        return;
    CHECK_INT(cairn_catalog_get_scrubbed(catalog, "bad", &checked_ms, &damage),
              0);
    CHECK(checked_ms > 0 && damage != NULL);
    printf("catalog: bad damaged: %s\n", damage ? damage : "(none)");
    free(damage);
    damage = NULL;
    CHECK_INT(cairn_catalog_get_scrubbed(catalog, "good", &checked_ms, &damage),
              0);
    CHECK(checked_ms > 0 && damage == NULL);
    free(damage);
    cairn_catalog_free(catalog);
}

struct daemon {
    struct cairn_loop *loop;
    struct cairn_node_server *server;
    struct cairn_node_client *client;
};

static void
daemon_start(struct daemon *d, struct cairn_node_server_settings *settings)
{
    memset(d, 0, sizeof(*d));
    CHECK_INT(cairn_loop_new(&d->loop), 0);
    CHECK_INT(
        cairn_node_server_new(d->loop, NULL, settings, &d->server, NULL, 0), 0);
    if (d->server == NULL)
        return;
    cairn_node_server_set_event_handler(d->server, on_event, NULL);
    CHECK_INT(cairn_node_client_new(d->loop, NULL, NULL, &d->client), 0);
    CHECK_INT(cairn_node_client_add_node(
                  d->client, "n", cairn_node_server_endpoint(d->server), NULL),
              0);
}

static void
daemon_stop(struct daemon *d)
{
    cairn_node_client_free(d->client);
    cairn_node_server_free(d->server);
    cairn_loop_free(d->loop);
}

static void
wait_for(struct daemon *d, const int *counter, int want)
{
    uint64_t deadline = cairn_loop_now_ms() + 60000;

    while (*counter < want && cairn_loop_now_ms() < deadline)
        cairn_loop_run_once(d->loop, 5);
}

int
main(void)
{
    char dir[] = "/tmp/cairn-test-scrub-XXXXXX", command[700];
    struct cairn_node_server_settings settings = {0};
    struct daemon d;
    struct call call;
    char *bad_path = NULL, *lost_path = NULL, *index_path = NULL;

    CHECK(mkdtemp(dir) != NULL);
    settings.name = "scrubbed";
    settings.endpoint = "tcp://127.0.0.1:*";
    settings.data_dir = dir;
    /* every user checked again each second, the first round a second
     * after the start (users checked again are counted as clean again) */
    settings.scrub_interval_ms = 1000;
    settings.scrub_full = true;
    daemon_start(&d, &settings);
    if (d.server == NULL)
        return check_exit("test_server_scrub");
    for (int i = 0; i < UPDATES; i++) {
        call_user(d.loop, d.client, "good", false, &call);
        CHECK_INT(call.status, 0);
        call_user(d.loop, d.client, "bad", false, &call);
        CHECK_INT(call.status, 0);
        call_user(d.loop, d.client, "lost", false, &call);
        CHECK_INT(call.status, 0);
    }
    daemon_stop(&d);
    bad_path = test_catalog_data_path(dir, "bad");
    lost_path = test_catalog_data_path(dir, "lost");
    CHECK(bad_path != NULL && lost_path != NULL);
    if (bad_path)
        flip_byte(bad_path);
    if (lost_path && asprintf(&index_path, "%s.index", lost_path) >= 0)
        CHECK_INT(unlink(index_path), 0);

    /* The scrub finds bad, and only bad; good and lost are clean. */
    settings.scrub_enabled = true;
    daemon_start(&d, &settings);
    wait_for(&d, &events.damaged_bad, 1);
    wait_for(&d, &events.clean, 2);
    CHECK_INT(events.damaged_bad, 1);
    CHECK_INT(events.damaged_other, 0);
    CHECK(events.clean >= 2);
    call_user(d.loop, d.client, "bad", false, &call);
    CHECK_INT(call.status, CAIRN_EUNAVAILABLE);
    CHECK(strstr(call.text, "quarantined") != NULL);
    printf("bad's APPLY: %s\n", call.text);
    call_user(d.loop, d.client, "bad", true, &call);
    CHECK_INT(call.status, CAIRN_EUNAVAILABLE);
    call_user(d.loop, d.client, "good", false, &call);
    CHECK_INT(call.status, 0);
    call_user(d.loop, d.client, "lost", true, &call);
    CHECK_INT(call.status, 0);
    daemon_stop(&d);
    check_catalog(dir);

    /* A restart keeps the quarantine (bad is not checked again). */
    events.damaged_bad = 0;
    daemon_start(&d, &settings);
    call_user(d.loop, d.client, "bad", false, &call);
    CHECK_INT(call.status, CAIRN_EUNAVAILABLE);
    call_user(d.loop, d.client, "good", false, &call);
    CHECK_INT(call.status, 0);
    CHECK_INT(events.damaged_bad, 0);
    daemon_stop(&d);

    free(bad_path);
    free(lost_path);
    free(index_path);
    snprintf(command, sizeof(command), "rm -rf '%s'", dir);
    CHECK_INT(system(command), 0);
    return check_exit("test_server_scrub");
}
