/*
 * server_worker.c - one background thread for the append of a big message
 * body (compressing and checksumming 50 MB takes over a second), so the
 * loop keeps serving other users meanwhile. While it runs, that user's
 * store belongs to the thread: the user's queue waits, the store is in no
 * commit round and is never closed; the loop learns of the end through a
 * pipe and finishes the request (ACK after the next group commit).
 */
#include "common.h"
#include "server_int.h"

#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Bodies at least this big are appended in the background. */
#define BACKGROUND_MIN_BYTES (4u * 1024 * 1024)

struct node_background {
    struct node_request *request;
    struct cairn_dlist *record; /* owned */
    int64_t ts;
    int rc;
};

static void
on_wake(struct cairn_loop *loop, int fd, unsigned events, void *arg)
{
    char byte;

    (void)loop;
    (void)events;
    while (read(fd, &byte, 1) == 1)
        ;
    node_background_finish(arg);
}

int
node_worker_init(struct cairn_node_server *server)
{
    if (pipe2(server->wake_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        server->wake_fds[0] = server->wake_fds[1] = -1;
        return CAIRN_EIO;
    }
    return cairn_loop_add_fd(server->loop, server->wake_fds[0], CAIRN_LOOP_READ,
                             on_wake, server);
}

void
node_worker_release(struct cairn_node_server *server)
{
    if (server->worker_running)
        node_background_finish(server);
    if (server->wake_fds[0] >= 0) {
        cairn_loop_remove_fd(server->loop, server->wake_fds[0]);
        close(server->wake_fds[0]);
        close(server->wake_fds[1]);
        server->wake_fds[0] = server->wake_fds[1] = -1;
    }
}

bool
node_background_wanted(const struct cairn_node_server *server,
                       const struct node_request *request)
{
    return !server->worker_running && server->wake_fds[1] >= 0 &&
           request->spool_fd >= 0 && request->spooled >= BACKGROUND_MIN_BYTES;
}

static void *
run_append(void *arg)
{
    struct cairn_node_server *server = arg;
    struct node_background *work = server->background;
    const struct cairn_store_bodies bodies = {node_read_spooled_body,
                                              work->request};

    work->rc = cairn_store_append(work->request->user->store, work->ts,
                                  work->record, &bodies);
    /* The loop may be asleep in zmq_poll: wake it. */
    while (write(server->wake_fds[1], "x", 1) < 0)
        ;
    return NULL;
}

int
node_background_start(struct cairn_node_server *server,
                      struct node_request *request, struct cairn_dlist *record)
{
    struct node_background *work = calloc(1, sizeof(*work));

    if (work == NULL)
        return CAIRN_ENOMEM;
    work->request = request;
    work->record = record;
    work->ts = time(NULL);
    server->background = work;
    request->user->appending = true;
    server->worker_running = true;
    if (pthread_create(&server->worker_thread, NULL, run_append, server) != 0) {
        server->background = NULL;
        request->user->appending = false;
        server->worker_running = false;
        free(work);
        return CAIRN_EIO; /* record still belongs to the caller */
    }
    return 0;
}

void
node_background_finish(struct cairn_node_server *server)
{
    struct node_background *work = server->background;
    struct node_request *request;
    struct node_user *user;

    if (!server->worker_running)
        return;
    pthread_join(server->worker_thread, NULL);
    server->worker_running = false;
    server->background = NULL;
    request = work->request;
    user = request->user;
    user->appending = false;
    node_apply_finished(server, request, work->rc);
    cairn_dlist_free(work->record);
    free(work);
    node_user_progress(server, user);
    node_commit_round(server);
}
