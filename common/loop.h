/*
 * loop.h - the one event loop every cairn daemon runs on, over zmq_poll:
 * file descriptors (read/write interest), ZeroMQ sockets, one-shot and
 * repeating timers on the monotonic clock, and SIGTERM/SIGINT/SIGHUP
 * delivered as flags that the loop turns into ordinary callbacks.
 *
 * Single-threaded. Callbacks run on the loop's thread, must not block, and
 * may add or remove any registration (their own included) while they run:
 * a registration removed during a pass is never called again, even later
 * in the same pass.
 *
 * Ownership: the loop never owns the fds or sockets it watches (it does not
 * close them); the caller removes a registration before closing its fd.
 */
#ifndef CAIRN_LOOP_H
#define CAIRN_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct cairn_loop;

/* Interest and readiness bits. ERROR is only ever reported, never asked. */
#define CAIRN_LOOP_READ 0x1u
#define CAIRN_LOOP_WRITE 0x2u
#define CAIRN_LOOP_ERROR 0x4u

/* events: which of CAIRN_LOOP_READ/WRITE/ERROR are ready. */
typedef void (*cairn_loop_fd_fn)(struct cairn_loop *loop, int fd,
                                 unsigned events, void *arg);
typedef void (*cairn_loop_socket_fn)(struct cairn_loop *loop, void *socket,
                                     unsigned events, void *arg);
typedef void (*cairn_loop_timer_fn)(struct cairn_loop *loop, uint64_t timer_id,
                                    void *arg);
typedef void (*cairn_loop_signal_fn)(struct cairn_loop *loop, int signo,
                                     void *arg);

/* Allocates a loop; the caller frees it with cairn_loop_free(). */
int cairn_loop_new(struct cairn_loop **loop);
/*
 * Frees the loop (NULL-safe). Restores the signal dispositions changed by
 * cairn_loop_watch_signals(). Registered fds and sockets are not closed.
 */
void cairn_loop_free(struct cairn_loop *loop);

/*
 * Watches fd for events (CAIRN_LOOP_READ and/or WRITE; 0 keeps the fd
 * registered but idle). fn gets arg back. CAIRN_EEXIST if fd is already
 * registered.
 */
int cairn_loop_add_fd(struct cairn_loop *loop, int fd, unsigned events,
                      cairn_loop_fd_fn fn, void *arg);
/* Changes the interest of a registered fd; CAIRN_ENOENT if unknown. */
int cairn_loop_set_fd_events(struct cairn_loop *loop, int fd, unsigned events);
/* Stops watching fd; CAIRN_ENOENT if unknown. Does not close it. */
int cairn_loop_remove_fd(struct cairn_loop *loop, int fd);

/* The same for ZeroMQ sockets (borrowed; the caller closes them). */
int cairn_loop_add_socket(struct cairn_loop *loop, void *socket,
                          unsigned events, cairn_loop_socket_fn fn, void *arg);
int cairn_loop_set_socket_events(struct cairn_loop *loop, void *socket,
                                 unsigned events);
int cairn_loop_remove_socket(struct cairn_loop *loop, void *socket);

/*
 * Calls fn once delay_ms from now, then every interval_ms if interval_ms is
 * not 0 (a repeating timer runs until cancelled). *timer_id (never 0) names
 * the timer for cairn_loop_cancel_timer(); timer_id may be NULL.
 */
int cairn_loop_add_timer(struct cairn_loop *loop, uint64_t delay_ms,
                         uint64_t interval_ms, cairn_loop_timer_fn fn,
                         void *arg, uint64_t *timer_id);
/* Cancels a timer; CAIRN_ENOENT if it is unknown or a one-shot that ran. */
int cairn_loop_cancel_timer(struct cairn_loop *loop, uint64_t timer_id);

/*
 * Installs handlers for SIGTERM, SIGINT and SIGHUP that only record the
 * signal; the loop then calls fn(loop, signo, arg) from its own pass. Only
 * one loop per process may watch signals (CAIRN_EEXIST otherwise). SIGPIPE
 * is set to ignored as well, so a closed peer shows up as EPIPE.
 */
int cairn_loop_watch_signals(struct cairn_loop *loop, cairn_loop_signal_fn fn,
                             void *arg);

/* Makes cairn_loop_run() return after the current pass. */
void cairn_loop_stop(struct cairn_loop *loop);
/* True once cairn_loop_stop() was called (cleared by cairn_loop_run()). */
bool cairn_loop_stopping(const struct cairn_loop *loop);

/*
 * Runs passes until cairn_loop_stop(). Returns 0, or CAIRN_EIO if zmq_poll
 * fails for a reason other than a signal.
 */
int cairn_loop_run(struct cairn_loop *loop);
/*
 * One pass: waits up to timeout_ms (-1 = until something happens, capped by
 * the next timer) and dispatches what is ready and what is due.
 */
int cairn_loop_run_once(struct cairn_loop *loop, int timeout_ms);

/* Monotonic clock in milliseconds, the one the timers use. */
uint64_t cairn_loop_now_ms(void);

#endif /* CAIRN_LOOP_H */
