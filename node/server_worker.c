/*
 * server_worker.c - one background thread for the append of a big message
 * body (compressing and checksumming 50 MB takes over a second), so the
 * loop keeps serving other users meanwhile. While it runs, that user's
 * store belongs to the thread: the user's queue waits, the store is in no
 * commit round and is never closed; the loop learns of the end through a
 * pipe and finishes the request (ACK after the next group commit).
 *
 * The same thread runs a user's scheduled compaction (server_compact.c):
 * that user's requests are queued meanwhile and run after the switch to
 * the compacted files; every other user is served as usual.
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
    struct node_request *request; /* the append's, NULL for a compaction */
    struct node_user *user;
    struct cairn_dlist *record; /* owned */
    int64_t ts;
    int rc;
    struct cairn_compact_policy policy;
    struct cairn_compact_result result;
    uint64_t started_ms;
    node_job_fn job; /* a job of server_admin.c, with job_arg */
    node_job_done_fn done;
    void *job_arg;
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

    if (work->job)
        work->rc = work->job(work->job_arg, work->user->store);
    else if (work->request)
        work->rc = cairn_store_append(work->user->store, work->ts, work->record,
                                      &bodies);
    else
        work->rc = cairn_store_compact(work->user->store, &work->policy,
                                       &work->result);
    /* The loop may be asleep in zmq_poll: wake it. */
    while (write(server->wake_fds[1], "x", 1) < 0)
        ;
    return NULL;
}

/*
 * Hands work (owned; freed on failure) to the worker thread: its user's
 * store is the thread's until node_background_finish().
 */
static int
launch(struct cairn_node_server *server, struct node_background *work)
{
    server->background = work;
    work->user->appending = true;
    server->worker_running = true;
    if (pthread_create(&server->worker_thread, NULL, run_append, server) == 0)
        return 0;
    server->background = NULL;
    work->user->appending = false;
    server->worker_running = false;
    free(work);
    return CAIRN_EIO;
}

int
node_background_start(struct cairn_node_server *server,
                      struct node_request *request, struct cairn_dlist *record)
{
    struct node_background *work = calloc(1, sizeof(*work));

    if (work == NULL)
        return CAIRN_ENOMEM;
    work->request = request;
    work->user = request->user;
    work->record = record;
    work->ts = node_update_time(request);
    /* On failure the record still belongs to the caller. */
    return launch(server, work);
}

int
node_job_start(struct cairn_node_server *server, struct node_user *user,
               node_job_fn job, node_job_done_fn done, void *arg)
{
    struct node_background *work;

    if (server->worker_running || server->wake_fds[1] < 0)
        return CAIRN_EAGAIN;
    if ((work = calloc(1, sizeof(*work))) == NULL)
        return CAIRN_ENOMEM;
    work->user = user;
    work->job = job;
    work->done = done;
    work->job_arg = arg;
    return launch(server, work);
}

int
node_compact_start(struct cairn_node_server *server, struct node_user *user,
                   const struct cairn_compact_policy *policy)
{
    struct node_background *work;

    if (server->worker_running || server->wake_fds[1] < 0)
        return CAIRN_EAGAIN;
    if ((work = calloc(1, sizeof(*work))) == NULL)
        return CAIRN_ENOMEM;
    work->user = user;
    work->policy = *policy;
    work->started_ms = cairn_loop_now_ms();
    return launch(server, work);
}

void
node_background_finish(struct cairn_node_server *server)
{
    struct node_background *work = server->background;
    struct node_user *user;

    if (!server->worker_running)
        return;
    pthread_join(server->worker_thread, NULL);
    server->worker_running = false;
    server->background = NULL;
    user = work->user;
    user->appending = false;
    if (work->job)
        work->done(server, user, work->job_arg, work->rc);
    else if (work->request)
        node_apply_finished(server, work->request, work->rc);
    else
        node_compact_finished(server, user, work->rc, &work->result,
                              cairn_loop_now_ms() - work->started_ms);
    cairn_dlist_free(work->record);
    free(work);
    node_user_progress(server, user);
    node_commit_round(server);
    node_admin_progress(server); /* the next user of a VERIFY / COMPACT */
}
