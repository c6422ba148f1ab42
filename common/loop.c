/*
 * loop.c - the event loop over zmq_poll (see loop.h). Registrations live in
 * flat arrays that are rebuilt into a zmq_pollitem_t array every pass; this
 * is O(registrations) per pass, which is cheap next to the system call for
 * the few hundred connections a router holds, and keeps removal during a
 * callback trivially safe (entries are only marked dead during a pass and
 * compacted after it).
 */
#include "loop.h"

#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

struct watch {
    int fd;       /* -1 for a ZeroMQ socket */
    void *socket; /* NULL for an fd */
    unsigned events;
    cairn_loop_fd_fn fd_fn;
    cairn_loop_socket_fn socket_fn;
    void *arg;
    bool dead;
};

struct timer {
    uint64_t id;
    uint64_t due_ms;
    uint64_t interval_ms;
    cairn_loop_timer_fn fn;
    void *arg;
    bool dead;
};

struct cairn_loop {
    struct watch *watches;
    size_t watch_count, watch_cap;
    struct timer *timers;
    size_t timer_count, timer_cap;
    uint64_t next_timer_id;
    zmq_pollitem_t *items;
    size_t *item_watch; /* items[i] belongs to watches[item_watch[i]] */
    size_t item_cap;
    bool stop;
    bool in_pass;
    cairn_loop_signal_fn signal_fn;
    void *signal_arg;
    int wake_pipe[2];
    struct sigaction saved[4];
};

/* The signals the loop turns into callbacks, and SIGPIPE, which it ignores. */
static const int watched_signals[] = {SIGTERM, SIGINT, SIGHUP};
#define WATCHED_SIGNAL_COUNT 3

/*
 * What the handlers may touch: flags, and one write to a pipe so that a
 * signal arriving just before zmq_poll still wakes it (a flag alone would
 * wait for the next timeout). Both are async-signal-safe.
 */
static volatile sig_atomic_t signal_pending[WATCHED_SIGNAL_COUNT];
static volatile sig_atomic_t signal_wake_fd = -1;
static struct cairn_loop *signal_owner;

static void
on_signal(int signo)
{
    int saved_errno = errno;

    for (int i = 0; i < WATCHED_SIGNAL_COUNT; i++)
        if (watched_signals[i] == signo)
            signal_pending[i] = 1;
    if (signal_wake_fd >= 0) {
        char byte = 0;
        ssize_t ignored = write(signal_wake_fd, &byte, 1);
        (void)ignored;
    }
    errno = saved_errno;
}

uint64_t
cairn_loop_now_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

int
cairn_loop_new(struct cairn_loop **loop)
{
    struct cairn_loop *created = calloc(1, sizeof(*created));

    *loop = NULL;
    if (created == NULL)
        return CAIRN_ENOMEM;
    created->next_timer_id = 1;
    created->wake_pipe[0] = -1;
    created->wake_pipe[1] = -1;
    *loop = created;
    return CAIRN_OK;
}

void
cairn_loop_free(struct cairn_loop *loop)
{
    if (loop == NULL)
        return;
    if (signal_owner == loop) {
        for (int i = 0; i < WATCHED_SIGNAL_COUNT; i++)
            sigaction(watched_signals[i], &loop->saved[i], NULL);
        sigaction(SIGPIPE, &loop->saved[WATCHED_SIGNAL_COUNT], NULL);
        signal_wake_fd = -1;
        signal_owner = NULL;
    }
    if (loop->wake_pipe[0] >= 0)
        close(loop->wake_pipe[0]);
    if (loop->wake_pipe[1] >= 0)
        close(loop->wake_pipe[1]);
    free(loop->watches);
    free(loop->timers);
    free(loop->items);
    free(loop->item_watch);
    free(loop);
}

static struct watch *
find_watch(struct cairn_loop *loop, int fd, void *socket)
{
    for (size_t i = 0; i < loop->watch_count; i++) {
        struct watch *watch = &loop->watches[i];

        if (!watch->dead && watch->fd == fd && watch->socket == socket)
            return watch;
    }
    return NULL;
}

static int
grow(void **array, size_t *cap, size_t count, size_t size)
{
    size_t new_cap;
    void *grown;

    if (count < *cap)
        return CAIRN_OK;
    new_cap = *cap ? *cap * 2 : 16;
    grown = realloc(*array, new_cap * size);
    if (grown == NULL)
        return CAIRN_ENOMEM;
    *array = grown;
    *cap = new_cap;
    return CAIRN_OK;
}

static int
add_watch(struct cairn_loop *loop, struct watch *watch)
{
    int rc;

    if (find_watch(loop, watch->fd, watch->socket) != NULL)
        return CAIRN_EEXIST;
    rc = grow((void **)&loop->watches, &loop->watch_cap, loop->watch_count,
              sizeof(*loop->watches));
    if (rc < 0)
        return rc;
    loop->watches[loop->watch_count++] = *watch;
    return CAIRN_OK;
}

int
cairn_loop_add_fd(struct cairn_loop *loop, int fd, unsigned events,
                  cairn_loop_fd_fn fn, void *arg)
{
    struct watch watch = {.fd = fd, .events = events, .fd_fn = fn, .arg = arg};

    if (fd < 0 || fn == NULL)
        return CAIRN_EINVAL;
    return add_watch(loop, &watch);
}

int
cairn_loop_add_socket(struct cairn_loop *loop, void *socket, unsigned events,
                      cairn_loop_socket_fn fn, void *arg)
{
    struct watch watch = {.fd = -1,
                          .socket = socket,
                          .events = events,
                          .socket_fn = fn,
                          .arg = arg};

    if (socket == NULL || fn == NULL)
        return CAIRN_EINVAL;
    return add_watch(loop, &watch);
}

static int
set_events(struct cairn_loop *loop, int fd, void *socket, unsigned events)
{
    struct watch *watch = find_watch(loop, fd, socket);

    if (watch == NULL)
        return CAIRN_ENOENT;
    watch->events = events;
    return CAIRN_OK;
}

int
cairn_loop_set_fd_events(struct cairn_loop *loop, int fd, unsigned events)
{
    return set_events(loop, fd, NULL, events);
}

int
cairn_loop_set_socket_events(struct cairn_loop *loop, void *socket,
                             unsigned events)
{
    return set_events(loop, -1, socket, events);
}

static int
remove_watch(struct cairn_loop *loop, int fd, void *socket)
{
    struct watch *watch = find_watch(loop, fd, socket);

    if (watch == NULL)
        return CAIRN_ENOENT;
    watch->dead = true;
    return CAIRN_OK;
}

int
cairn_loop_remove_fd(struct cairn_loop *loop, int fd)
{
    return remove_watch(loop, fd, NULL);
}

int
cairn_loop_remove_socket(struct cairn_loop *loop, void *socket)
{
    return remove_watch(loop, -1, socket);
}

int
cairn_loop_add_timer(struct cairn_loop *loop, uint64_t delay_ms,
                     uint64_t interval_ms, cairn_loop_timer_fn fn, void *arg,
                     uint64_t *timer_id)
{
    struct timer *timer;
    int rc;

    if (fn == NULL)
        return CAIRN_EINVAL;
    rc = grow((void **)&loop->timers, &loop->timer_cap, loop->timer_count,
              sizeof(*loop->timers));
    if (rc < 0)
        return rc;
    timer = &loop->timers[loop->timer_count++];
    *timer = (struct timer){.id = loop->next_timer_id++,
                            .due_ms = cairn_loop_now_ms() + delay_ms,
                            .interval_ms = interval_ms,
                            .fn = fn,
                            .arg = arg};
    if (timer_id != NULL)
        *timer_id = timer->id;
    return CAIRN_OK;
}

int
cairn_loop_cancel_timer(struct cairn_loop *loop, uint64_t timer_id)
{
    for (size_t i = 0; i < loop->timer_count; i++) {
        if (loop->timers[i].id == timer_id && !loop->timers[i].dead) {
            loop->timers[i].dead = true;
            return CAIRN_OK;
        }
    }
    return CAIRN_ENOENT;
}

int
cairn_loop_watch_signals(struct cairn_loop *loop, cairn_loop_signal_fn fn,
                         void *arg)
{
    struct sigaction action;

    if (signal_owner != NULL)
        return CAIRN_EEXIST;
    if (pipe2(loop->wake_pipe, O_NONBLOCK | O_CLOEXEC) < 0)
        return CAIRN_EIO;
    loop->signal_fn = fn;
    loop->signal_arg = arg;
    signal_owner = loop;
    signal_wake_fd = loop->wake_pipe[1];
    memset(&action, 0, sizeof(action));
    sigemptyset(&action.sa_mask);
    action.sa_handler = on_signal;
    for (int i = 0; i < WATCHED_SIGNAL_COUNT; i++) {
        signal_pending[i] = 0;
        sigaction(watched_signals[i], &action, &loop->saved[i]);
    }
    action.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &action, &loop->saved[WATCHED_SIGNAL_COUNT]);
    return CAIRN_OK;
}

void
cairn_loop_stop(struct cairn_loop *loop)
{
    loop->stop = true;
}

bool
cairn_loop_stopping(const struct cairn_loop *loop)
{
    return loop->stop;
}

/* Milliseconds until the earliest live timer, capped by limit (-1 = none). */
static long
poll_timeout(const struct cairn_loop *loop, int limit)
{
    uint64_t now = cairn_loop_now_ms();
    long timeout = limit;

    for (size_t i = 0; i < loop->timer_count; i++) {
        const struct timer *timer = &loop->timers[i];
        long wait;

        if (timer->dead)
            continue;
        wait = timer->due_ms <= now ? 0 : (long)(timer->due_ms - now);
        if (timeout < 0 || wait < timeout)
            timeout = wait;
    }
    return timeout;
}

static unsigned
to_zmq_events(unsigned events)
{
    return ((events & CAIRN_LOOP_READ) ? ZMQ_POLLIN : 0) |
           ((events & CAIRN_LOOP_WRITE) ? ZMQ_POLLOUT : 0);
}

static unsigned
from_zmq_events(short revents)
{
    return ((revents & ZMQ_POLLIN) ? CAIRN_LOOP_READ : 0) |
           ((revents & ZMQ_POLLOUT) ? CAIRN_LOOP_WRITE : 0) |
           ((revents & ZMQ_POLLERR) ? CAIRN_LOOP_ERROR : 0);
}

/* Fills loop->items; item 0 is the signal wake pipe when signals are on. */
static int
build_items(struct cairn_loop *loop, size_t *count)
{
    size_t needed = loop->watch_count + 1, n = 0;

    if (needed > loop->item_cap) {
        zmq_pollitem_t *items = realloc(loop->items, needed * sizeof(*items));
        size_t *map;

        if (items == NULL)
            return CAIRN_ENOMEM;
        loop->items = items;
        map = realloc(loop->item_watch, needed * sizeof(*map));
        if (map == NULL)
            return CAIRN_ENOMEM;
        loop->item_watch = map;
        loop->item_cap = needed;
    }
    if (loop->wake_pipe[0] >= 0) {
        loop->items[n] =
            (zmq_pollitem_t){.fd = loop->wake_pipe[0], .events = ZMQ_POLLIN};
        loop->item_watch[n++] = SIZE_MAX;
    }
    for (size_t i = 0; i < loop->watch_count; i++) {
        const struct watch *watch = &loop->watches[i];

        if (watch->dead || watch->events == 0)
            continue;
        loop->items[n] =
            (zmq_pollitem_t){.socket = watch->socket,
                             .fd = watch->fd < 0 ? 0 : watch->fd,
                             .events = (short)to_zmq_events(watch->events)};
        loop->item_watch[n++] = i;
    }
    *count = n;
    return CAIRN_OK;
}

static void
dispatch_signals(struct cairn_loop *loop)
{
    char drain[64];

    while (read(loop->wake_pipe[0], drain, sizeof(drain)) > 0)
        ;
    for (int i = 0; i < WATCHED_SIGNAL_COUNT; i++) {
        if (!signal_pending[i])
            continue;
        signal_pending[i] = 0;
        if (loop->signal_fn != NULL)
            loop->signal_fn(loop, watched_signals[i], loop->signal_arg);
    }
}

static void
dispatch_items(struct cairn_loop *loop, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        size_t index = loop->item_watch[i];
        unsigned events = from_zmq_events(loop->items[i].revents);
        struct watch watch;

        if (events == 0)
            continue;
        if (index == SIZE_MAX) {
            dispatch_signals(loop);
            continue;
        }
        /* A copy: the callback may grow (and move) the array. */
        watch = loop->watches[index];
        if (watch.dead)
            continue;
        if (watch.socket != NULL)
            watch.socket_fn(loop, watch.socket, events, watch.arg);
        else
            watch.fd_fn(loop, watch.fd, events, watch.arg);
    }
}

/* The due timer with the earliest deadline among the first count, or NULL. */
static struct timer *
earliest_due(struct cairn_loop *loop, size_t count, uint64_t now)
{
    struct timer *earliest = NULL;

    for (size_t i = 0; i < count; i++) {
        struct timer *timer = &loop->timers[i];

        if (timer->dead || timer->due_ms > now)
            continue;
        if (earliest == NULL || timer->due_ms < earliest->due_ms)
            earliest = timer;
    }
    return earliest;
}

/*
 * Due timers fire in deadline order, so a loop that woke late (a loaded
 * machine) still runs them in the order they fell due, not in the order
 * they were added. Each pass rescans: a callback may add (and so move)
 * timers or cancel them.
 */
static void
dispatch_timers(struct cairn_loop *loop)
{
    uint64_t now = cairn_loop_now_ms();
    size_t count = loop->timer_count; /* timers added now wait a pass */
    struct timer *timer;

    while ((timer = earliest_due(loop, count, now)) != NULL) {
        struct timer copy;

        if (timer->interval_ms == 0) {
            timer->dead = true;
        } else {
            timer->due_ms += timer->interval_ms;
            /* A loop that fell far behind skips missed ticks. */
            if (timer->due_ms <= now)
                timer->due_ms = now + timer->interval_ms;
        }
        copy = *timer;
        copy.fn(loop, copy.id, copy.arg);
    }
}

static void
compact(struct cairn_loop *loop)
{
    size_t kept = 0;

    for (size_t i = 0; i < loop->watch_count; i++)
        if (!loop->watches[i].dead)
            loop->watches[kept++] = loop->watches[i];
    loop->watch_count = kept;
    kept = 0;
    for (size_t i = 0; i < loop->timer_count; i++)
        if (!loop->timers[i].dead)
            loop->timers[kept++] = loop->timers[i];
    loop->timer_count = kept;
}

int
cairn_loop_run_once(struct cairn_loop *loop, int timeout_ms)
{
    size_t count = 0;
    int rc, ready;

    if (loop->in_pass)
        return CAIRN_ESTATE;
    if ((rc = build_items(loop, &count)) < 0)
        return rc;
    ready = zmq_poll(loop->items, (int)count, poll_timeout(loop, timeout_ms));
    if (ready < 0 && errno != EINTR)
        return CAIRN_EIO;
    loop->in_pass = true;
    if (ready > 0)
        dispatch_items(loop, count);
    else if (loop->wake_pipe[0] >= 0)
        dispatch_signals(loop); /* EINTR: the flag may be set already */
    dispatch_timers(loop);
    loop->in_pass = false;
    compact(loop);
    return CAIRN_OK;
}

int
cairn_loop_run(struct cairn_loop *loop)
{
    int rc = CAIRN_OK;

    while (!loop->stop) {
        if ((rc = cairn_loop_run_once(loop, -1)) < 0)
            break;
    }
    loop->stop = false;
    return rc;
}
