/*
 * test_loop.c - unit tests for the event loop: fd readiness and interest
 * changes, removal from inside a callback, timers (order, repetition,
 * cancellation), signals as flags, and ZeroMQ sockets.
 */
#include "check.h"
#include "common.h"
#include "loop.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#include <zmq.h>

struct fd_probe {
    int calls;
    unsigned last_events;
    int remove_fd; /* an fd this callback removes, or -1 */
};

static void
on_fd(struct cairn_loop *loop, int fd, unsigned events, void *arg)
{
    struct fd_probe *probe = arg;
    char byte;

    probe->calls++;
    probe->last_events = events;
    if (events & CAIRN_LOOP_READ) {
        ssize_t got = read(fd, &byte, 1);
        (void)got;
    }
    if (probe->remove_fd >= 0)
        cairn_loop_remove_fd(loop, probe->remove_fd);
}

static void
test_fd_read_and_interest(void)
{
    struct cairn_loop *loop = NULL;
    struct fd_probe probe = {.remove_fd = -1};
    int fds[2];

    CHECK_INT(pipe(fds), 0);
    CHECK_INT(cairn_loop_new(&loop), 0);
    CHECK_INT(cairn_loop_add_fd(loop, fds[0], CAIRN_LOOP_READ, on_fd, &probe),
              0);
    CHECK_INT(cairn_loop_add_fd(loop, fds[0], CAIRN_LOOP_READ, on_fd, &probe),
              CAIRN_EEXIST);

    /* Nothing to read: the pass times out without a call. */
    CHECK_INT(cairn_loop_run_once(loop, 10), 0);
    CHECK_INT(probe.calls, 0);

    CHECK_INT(write(fds[1], "x", 1), 1);
    CHECK_INT(cairn_loop_run_once(loop, 1000), 0);
    CHECK_INT(probe.calls, 1);
    CHECK_INT(probe.last_events, CAIRN_LOOP_READ);

    /* With interest cleared, pending data does not call back. */
    CHECK_INT(write(fds[1], "y", 1), 1);
    CHECK_INT(cairn_loop_set_fd_events(loop, fds[0], 0), 0);
    CHECK_INT(cairn_loop_run_once(loop, 10), 0);
    CHECK_INT(probe.calls, 1);
    CHECK_INT(cairn_loop_set_fd_events(loop, fds[0], CAIRN_LOOP_READ), 0);
    CHECK_INT(cairn_loop_run_once(loop, 1000), 0);
    CHECK_INT(probe.calls, 2);

    /* Write interest on the write end fires at once. */
    struct fd_probe writer = {.remove_fd = -1};
    CHECK_INT(cairn_loop_add_fd(loop, fds[1], CAIRN_LOOP_WRITE, on_fd, &writer),
              0);
    CHECK_INT(cairn_loop_run_once(loop, 1000), 0);
    CHECK_INT(writer.calls, 1);
    CHECK_INT(writer.last_events, CAIRN_LOOP_WRITE);

    CHECK_INT(cairn_loop_remove_fd(loop, fds[1]), 0);
    CHECK_INT(cairn_loop_remove_fd(loop, fds[1]), CAIRN_ENOENT);
    CHECK_INT(cairn_loop_set_fd_events(loop, 12345, 0), CAIRN_ENOENT);
    cairn_loop_free(loop);
    close(fds[0]);
    close(fds[1]);
}

/* Two ready fds; the first callback removes the second, which must not run. */
static void
test_remove_during_dispatch(void)
{
    struct cairn_loop *loop = NULL;
    int a[2], b[2];
    struct fd_probe first = {0}, second = {.remove_fd = -1};

    CHECK_INT(pipe(a), 0);
    CHECK_INT(pipe(b), 0);
    CHECK_INT(cairn_loop_new(&loop), 0);
    first.remove_fd = b[0];
    CHECK_INT(cairn_loop_add_fd(loop, a[0], CAIRN_LOOP_READ, on_fd, &first), 0);
    CHECK_INT(cairn_loop_add_fd(loop, b[0], CAIRN_LOOP_READ, on_fd, &second),
              0);
    CHECK_INT(write(a[1], "x", 1), 1);
    CHECK_INT(write(b[1], "x", 1), 1);
    CHECK_INT(cairn_loop_run_once(loop, 1000), 0);
    CHECK_INT(first.calls, 1);
    CHECK_INT(second.calls, 0);
    /* Removed and re-added in a later pass, it runs again. */
    first.remove_fd = -1;
    CHECK_INT(cairn_loop_add_fd(loop, b[0], CAIRN_LOOP_READ, on_fd, &second),
              0);
    CHECK_INT(cairn_loop_run_once(loop, 1000), 0);
    CHECK_INT(second.calls, 1);
    cairn_loop_free(loop);
    close(a[0]);
    close(a[1]);
    close(b[0]);
    close(b[1]);
}

struct timer_log {
    char order[16];
    int count;
    uint64_t cancel_after_id;
    int cancel_after_calls;
};

static void
on_timer(struct cairn_loop *loop, uint64_t timer_id, void *arg)
{
    struct timer_log *log = arg;

    if (log->count < (int)sizeof(log->order) - 1)
        log->order[log->count] = (char)('0' + timer_id);
    log->count++;
    if (timer_id == log->cancel_after_id && --log->cancel_after_calls == 0) {
        CHECK_INT(cairn_loop_cancel_timer(loop, timer_id), 0);
        cairn_loop_stop(loop);
    }
}

static void
test_timers(void)
{
    struct cairn_loop *loop = NULL;
    struct timer_log log = {0};
    uint64_t late = 0, early = 0, repeating = 0, cancelled = 0;
    uint64_t started, elapsed;

    CHECK_INT(cairn_loop_new(&loop), 0);
    CHECK_INT(cairn_loop_add_timer(loop, 60, 0, on_timer, &log, &late), 0);
    CHECK_INT(cairn_loop_add_timer(loop, 20, 0, on_timer, &log, &early), 0);
    CHECK_INT(cairn_loop_add_timer(loop, 5, 0, on_timer, &log, &cancelled), 0);
    CHECK_INT(cairn_loop_cancel_timer(loop, cancelled), 0);
    CHECK_INT(cairn_loop_cancel_timer(loop, cancelled), CAIRN_ENOENT);
    CHECK_INT(cairn_loop_add_timer(loop, 10, 30, on_timer, &log, &repeating),
              0);
    CHECK(early != late && repeating != 0);
    /* The repeating timer stops the loop on its 4th tick (10+3*30 ms). */
    log.cancel_after_id = repeating;
    log.cancel_after_calls = 4;
    started = cairn_loop_now_ms();
    CHECK_INT(cairn_loop_run(loop), 0);
    elapsed = cairn_loop_now_ms() - started;
    CHECK(elapsed >= 100);
    /* ids late=1, early=2, repeating=4: 4@10 2@20 4@40 1@60 4@70 4@100 */
    CHECK_STR(log.order, "424144");
    CHECK_INT(log.count, 6);
    /* The one-shots ran and are gone. */
    CHECK_INT(cairn_loop_cancel_timer(loop, late), CAIRN_ENOENT);
    cairn_loop_free(loop);
}

struct signal_log {
    int hangups;
    int terms;
};

static void
on_signal_flag(struct cairn_loop *loop, int signo, void *arg)
{
    struct signal_log *log = arg;

    if (signo == SIGHUP)
        log->hangups++;
    if (signo == SIGTERM) {
        log->terms++;
        cairn_loop_stop(loop);
    }
}

static void
test_signals(void)
{
    struct cairn_loop *loop = NULL, *other = NULL;
    struct signal_log log = {0};

    CHECK_INT(cairn_loop_new(&loop), 0);
    CHECK_INT(cairn_loop_new(&other), 0);
    CHECK_INT(cairn_loop_watch_signals(loop, on_signal_flag, &log), 0);
    CHECK_INT(cairn_loop_watch_signals(other, on_signal_flag, &log),
              CAIRN_EEXIST);
    raise(SIGHUP);
    CHECK_INT(log.hangups, 0); /* the handler only set a flag */
    CHECK_INT(cairn_loop_run_once(loop, 1000), 0);
    CHECK_INT(log.hangups, 1);
    raise(SIGTERM);
    CHECK_INT(cairn_loop_run(loop), 0); /* returns: SIGTERM stopped it */
    CHECK_INT(log.terms, 1);
    CHECK_INT(log.hangups, 1);
    cairn_loop_free(loop);
    cairn_loop_free(other);
}

struct socket_probe {
    int calls;
    char received[16];
};

static void
on_socket(struct cairn_loop *loop, void *socket, unsigned events, void *arg)
{
    struct socket_probe *probe = arg;
    int got = zmq_recv(socket, probe->received, sizeof(probe->received) - 1,
                       ZMQ_DONTWAIT);

    if (got >= 0)
        probe->received[got] = '\0';
    probe->calls++;
    cairn_loop_stop(loop);
}

static void
test_zmq_socket(void)
{
    struct cairn_loop *loop = NULL;
    struct socket_probe probe = {0};
    void *context = zmq_ctx_new();
    void *reader = zmq_socket(context, ZMQ_PAIR);
    void *writer = zmq_socket(context, ZMQ_PAIR);

    CHECK_INT(zmq_bind(reader, "inproc://test-loop"), 0);
    CHECK_INT(zmq_connect(writer, "inproc://test-loop"), 0);
    CHECK_INT(cairn_loop_new(&loop), 0);
    CHECK_INT(
        cairn_loop_add_socket(loop, reader, CAIRN_LOOP_READ, on_socket, &probe),
        0);
    CHECK_INT(cairn_loop_run_once(loop, 10), 0);
    CHECK_INT(probe.calls, 0);
    CHECK_INT(zmq_send(writer, "hello", 5, 0), 5);
    CHECK_INT(cairn_loop_run(loop), 0);
    CHECK_INT(probe.calls, 1);
    CHECK_STR(probe.received, "hello");
    CHECK_INT(cairn_loop_remove_socket(loop, reader), 0);
    CHECK_INT(cairn_loop_remove_socket(loop, reader), CAIRN_ENOENT);
    cairn_loop_free(loop);
    zmq_close(reader);
    zmq_close(writer);
    zmq_ctx_term(context);
}

int
main(void)
{
    test_fd_read_and_interest();
    test_remove_during_dispatch();
    test_timers();
    test_signals();
    test_zmq_socket();
    return check_exit("test_loop");
}
