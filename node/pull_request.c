/*
 * pull_request.c - cairnctl's PULL request (TRANSFER_BEGIN verb "PULL",
 * admin role): each pull runs on a thread of its own (at most MAX_PULLS
 * at once), the user's store stays closed meanwhile, and the loop answers
 * the request (TRANSFER_END with a PullResult, or ERROR naming the source
 * and the cause) when the thread is done.
 */
#include "common.h"
#include "pull_int.h"
#include "server_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PULLS 8 /* at once on this node */

/* A PULL request of cairnctl while its thread runs. */
struct node_pull_job {
    struct node_pull_job *next;
    struct cairn_node_server *server;
    struct node_request *reply_to; /* routing id and envelope, owned */
    char *userid, *peer, *endpoint;
    struct pull_options options;
    struct pull_outcome outcome;
    int rc;
    pthread_t thread;
    atomic_bool done;
};

struct node_pulls {
    struct node_pull_job *jobs;
    size_t count;
    int wake_fds[2];
    atomic_bool stop;
};

static void
job_free(struct node_pull_job *job)
{
    if (job == NULL)
        return;
    node_request_free(job->reply_to);
    free(job->userid);
    free(job->peer);
    free(job->endpoint);
    free(job);
}

static void *
run_job(void *arg)
{
    struct node_pull_job *job = arg;

    job->rc = node_pull_run(job->server, &job->options, &job->outcome);
    atomic_store(&job->done, true);
    /* The loop may be asleep in zmq_poll: wake it. */
    while (write(job->server->pulls->wake_fds[1], "x", 1) < 0 && errno == EINTR)
        ;
    return NULL;
}

/* Answers a finished job (TRANSFER_END + PullResult, or ERROR). */
static void
answer_job(struct cairn_node_server *server, struct node_pull_job *job)
{
    Cairn__PullResult result = CAIRN__PULL_RESULT__INIT;
    struct node_user *user = NULL;
    struct cairn_buf frame;

    cairn_buf_init(&frame, 4096);
    /* The next request opens the installed file, not the one set aside. */
    if (node_user_get(server, job->userid, &user) == 0) {
        if (user->store != NULL && !user->appending)
            node_user_close(server, user);
        user->pulling = false;
    }
    if (job->rc == 0)
        node_scrub_lift(server, job->userid);
    if (job->rc < 0)
        node_event(server, CAIRN_LOG_WARN, job->reply_to, "pull from %s: %s",
                   job->peer, job->outcome.error);
    else
        node_event(server, CAIRN_LOG_INFO, job->reply_to,
                   "pull from %s: done, %llu bytes in %llu ms%s", job->peer,
                   (unsigned long long)job->outcome.bytes,
                   (unsigned long long)job->outcome.elapsed_ms,
                   job->outcome.resumed ? ", appended to the copy held" : "");
    result.bytes = job->outcome.bytes;
    result.file_bytes = job->outcome.file_bytes;
    result.digest = job->outcome.digest;
    result.resumed = job->outcome.resumed;
    result.elapsed_ms = job->outcome.elapsed_ms;
    if (job->rc < 0 ||
        cairn_buf_reserve(&frame, cairn__pull_result__get_packed_size(&result) +
                                      1) < 0) {
        node_reply_error(server, job->reply_to,
                         job->rc < 0 ? job->rc : CAIRN_ENOMEM, 0,
                         job->outcome.error[0] ? job->outcome.error : NULL);
    } else {
        frame.len = cairn__pull_result__pack(&result, (uint8_t *)frame.data);
        node_reply(server, job->reply_to, CAIRN__KIND__TRANSFER_END, &frame, 1,
                   true);
    }
    cairn_buf_release(&frame);
}

/* Joins and answers every finished job (loop). */
static void
reap_jobs(struct cairn_node_server *server, bool all)
{
    struct node_pulls *pulls = server->pulls;

    for (struct node_pull_job **at = &pulls->jobs; *at;) {
        struct node_pull_job *job = *at;

        if (!all && !atomic_load(&job->done)) {
            at = &job->next;
            continue;
        }
        pthread_join(job->thread, NULL);
        *at = job->next;
        pulls->count--;
        if (!server->shut_down)
            answer_job(server, job);
        job_free(job);
    }
}

static void
on_pull_done(struct cairn_loop *loop, int fd, unsigned events, void *arg)
{
    char byte;

    (void)loop;
    (void)events;
    while (read(fd, &byte, 1) == 1)
        ;
    reap_jobs(arg, false);
}

static int
pulls_init(struct cairn_node_server *server)
{
    struct node_pulls *pulls;

    if (server->pulls != NULL)
        return 0;
    if ((pulls = calloc(1, sizeof(*pulls))) == NULL)
        return CAIRN_ENOMEM;
    if (pipe2(pulls->wake_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        free(pulls);
        return CAIRN_EIO;
    }
    if (cairn_loop_add_fd(server->loop, pulls->wake_fds[0], CAIRN_LOOP_READ,
                          on_pull_done, server) < 0) {
        close(pulls->wake_fds[0]);
        close(pulls->wake_fds[1]);
        free(pulls);
        return CAIRN_EIO;
    }
    server->pulls = pulls;
    return 0;
}

void
node_pulls_release(struct cairn_node_server *server)
{
    struct node_pulls *pulls = server->pulls;

    if (pulls == NULL)
        return;
    atomic_store(&pulls->stop, true);
    reap_jobs(server, true);
    cairn_loop_remove_fd(server->loop, pulls->wake_fds[0]);
    close(pulls->wake_fds[0]);
    close(pulls->wake_fds[1]);
    free(pulls);
    server->pulls = NULL;
}

/* The request's PullRequest (frame 1, optional) into job's options. */
static int
read_request(struct cairn_node_server *server, struct node_request *request,
             struct node_pull_job *job, char *error, size_t error_size)
{
    Cairn__PullRequest *asked = NULL;
    const char *endpoint = NULL;
    int rc = 0;

    if (request->dlist != NULL &&
        (asked = cairn__pull_request__unpack(
             NULL, request->dlist_len, (const uint8_t *)request->dlist)) ==
            NULL)
        return CAIRN_EPARSE;
    if (asked != NULL && asked->source_endpoint != NULL &&
        asked->source_endpoint[0] != '\0')
        endpoint = asked->source_endpoint;
    else
        endpoint = node_heal_peer_endpoint(server, request->envelope->key);
    if (endpoint == NULL) {
        snprintf(error, error_size,
                 "node %s is not a peer of this node: name its endpoint",
                 request->envelope->key);
        rc = CAIRN_ENOENT;
        goto out;
    }
    job->userid = strdup(request->envelope->user);
    job->peer = strdup(request->envelope->key);
    job->endpoint = strdup(endpoint);
    if (job->userid == NULL || job->peer == NULL || job->endpoint == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    job->options = (struct pull_options){.userid = job->userid,
                                         .peer = job->peer,
                                         .endpoint = job->endpoint,
                                         .rate = asked ? asked->rate : 0,
                                         .whole = asked ? asked->whole : false,
                                         .drop_replaced = true,
                                         .stop = &server->pulls->stop};
out:
    if (asked)
        cairn__pull_request__free_unpacked(asked, NULL);
    return rc;
}

void
node_pull_request(struct cairn_node_server *server,
                  struct node_request *request)
{
    struct node_pull_job *job = NULL;
    struct node_user *user = NULL;
    char error[256] = "";
    int rc;

    if (request->envelope->key == NULL || request->envelope->key[0] == '\0') {
        rc = CAIRN_EINVAL;
        snprintf(error, sizeof(error), "PULL: no source node in key");
        goto out;
    }
    if ((rc = pulls_init(server)) < 0 ||
        (rc = node_user_get(server, request->envelope->user, &user)) < 0)
        goto out;
    if (server->pulls->count >= MAX_PULLS) {
        rc = CAIRN_EAGAIN;
        snprintf(error, sizeof(error), "%d pulls run on this node already",
                 MAX_PULLS);
        goto out;
    }
    if (user->pulling || user->appending || user->queue != NULL ||
        user->in_round) {
        rc = CAIRN_ELOCKED;
        snprintf(error, sizeof(error), "%s is busy here (%s): try again",
                 user->userid,
                 user->pulling ? "being pulled" : "updates running");
        goto out;
    }
    rc = CAIRN_ENOMEM;
    if ((job = calloc(1, sizeof(*job))) == NULL ||
        (job->reply_to = calloc(1, sizeof(*job->reply_to))) == NULL)
        goto out;
    job->reply_to->spool_fd = -1;
    job->server = server;
    if ((rc = read_request(server, request, job, error, sizeof(error))) < 0)
        goto out;
    memcpy(job->reply_to->routing_id, request->routing_id,
           request->routing_id_len);
    job->reply_to->routing_id_len = request->routing_id_len;
    if (user->store != NULL)
        node_user_close(server, user); /* the thread opens the file itself */
    if (pthread_create(&job->thread, NULL, run_job, job) != 0) {
        rc = CAIRN_EIO;
        goto out;
    }
    job->reply_to->envelope = request->envelope;
    request->envelope = NULL;
    user->pulling = true;
    job->next = server->pulls->jobs;
    server->pulls->jobs = job;
    server->pulls->count++;
    job = NULL;
out:
    job_free(job);
    if (rc < 0)
        node_reply_error(server, request, rc, 0, error[0] ? error : NULL);
}
