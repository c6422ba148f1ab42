/*
 * health.c - the router's view of one node as a state machine (the model
 * is in health_int.h). Pure: time comes in with each event.
 */
#include "health_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const state_names[] = {
    [CAIRN_ROUTER_NODE_UP] = "up",
    [CAIRN_ROUTER_NODE_SLOW] = "slow",
    [CAIRN_ROUTER_NODE_DOWN] = "down",
};

const char *
cairn_router_health_state_name(enum cairn_router_node_state state)
{
    return state <= CAIRN_ROUTER_NODE_DOWN ? state_names[state] : "?";
}

void
cairn_router_health_init(struct cairn_router_health *health, uint64_t now_ms)
{
    memset(health, 0, sizeof(*health));
    health->state = CAIRN_ROUTER_NODE_UP;
    health->since_ms = now_ms;
    health->last_heard_ms = now_ms;
}

/* Durations in log lines: "750ms", "3s", "2.5s". */
static void
format_ms(uint64_t ms, char *text, size_t size)
{
    if (ms < 1000)
        snprintf(text, size, "%llums", (unsigned long long)ms);
    else if (ms % 1000 == 0)
        snprintf(text, size, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(text, size, "%.1fs", (double)ms / 1000.0);
}

static void enter(struct cairn_router_health *health, uint64_t now_ms,
                  enum cairn_router_node_state state,
                  struct cairn_router_health_step *step, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void
enter(struct cairn_router_health *health, uint64_t now_ms,
      enum cairn_router_node_state state, struct cairn_router_health_step *step,
      const char *fmt, ...)
{
    va_list args;

    va_start(args, fmt);
    vsnprintf(health->reason, sizeof(health->reason), fmt, args);
    va_end(args);
    health->state = state;
    health->since_ms = now_ms;
    step->changed = true;
    step->to = state;
}

/* To down: waiting requests given up, the probe connection reset. */
static void
go_down(struct cairn_router_health *health,
        const struct cairn_router_health_settings *settings, uint64_t now_ms,
        struct cairn_router_health_step *step, const char *why)
{
    enter(health, now_ms, CAIRN_ROUTER_NODE_DOWN, step, "%s", why);
    health->counters.downs++;
    health->probe_sent_ms = 0;
    health->confirming = false;
    health->backoff_ms = settings->backoff_min_ms;
    health->next_probe_ms = now_ms + health->backoff_ms;
    step->actions |= CAIRN_ROUTER_HEALTH_ABANDON | CAIRN_ROUTER_HEALTH_RESET;
}

/* Down and the last probe failed: the next one later, on a new connection. */
static void
back_off(struct cairn_router_health *health,
         const struct cairn_router_health_settings *settings, uint64_t now_ms,
         struct cairn_router_health_step *step)
{
    health->backoff_ms = health->backoff_ms * 2;
    if (health->backoff_ms < settings->backoff_min_ms)
        health->backoff_ms = settings->backoff_min_ms;
    if (health->backoff_ms > settings->backoff_max_ms)
        health->backoff_ms = settings->backoff_max_ms;
    health->next_probe_ms = now_ms + health->backoff_ms;
    step->actions |= CAIRN_ROUTER_HEALTH_RESET;
}

static void
send_probe(struct cairn_router_health *health, uint64_t now_ms,
           struct cairn_router_health_step *step)
{
    /* 0 means none: a clock at 0 (tests) still marks it sent */
    health->probe_sent_ms = now_ms ? now_ms : 1;
    health->counters.probes++;
    step->actions |= CAIRN_ROUTER_HEALTH_PROBE;
}

/* The probe failed (missed its deadline, or could not be sent). */
static void
probe_failed(struct cairn_router_health *health,
             const struct cairn_router_health_settings *settings,
             uint64_t now_ms, struct cairn_router_health_step *step,
             const char *why)
{
    health->probe_sent_ms = 0;
    health->counters.probes_missed++;
    if (health->state == CAIRN_ROUTER_NODE_DOWN)
        back_off(health, settings, now_ms, step);
    else
        go_down(health, settings, now_ms, step, why);
}

/* Time passed: the probe's deadline, the next probe, slow or not. */
static void
tick(struct cairn_router_health *health,
     const struct cairn_router_health_settings *settings,
     const struct cairn_router_health_input *input,
     struct cairn_router_health_step *step)
{
    uint64_t now = input->now_ms, answer = settings->answer_ms;
    uint64_t quiet_since = health->last_heard_ms;
    char limit[32];

    if (health->probe_sent_ms != 0 && now - health->probe_sent_ms >= answer) {
        char why[96];

        format_ms(answer, limit, sizeof(limit));
        snprintf(why, sizeof(why), "no answer to PING within %s", limit);
        probe_failed(health, settings, now, step, why);
    }
    if (health->state == CAIRN_ROUTER_NODE_DOWN) {
        if (!health->confirming && health->probe_sent_ms == 0 &&
            now >= health->next_probe_ms)
            send_probe(health, now, step);
        return;
    }
    if (input->waiting > 0 && input->oldest_ms > quiet_since)
        quiet_since = input->oldest_ms;
    if (input->waiting > 0 && health->probe_sent_ms == 0 &&
        now - quiet_since >= answer / 2)
        send_probe(health, now, step);
}

/* Up or slow: slow while the oldest request waited A or more and the
 * node was heard from since it was sent. */
static void
judge_speed(struct cairn_router_health *health,
            const struct cairn_router_health_settings *settings,
            const struct cairn_router_health_input *input,
            struct cairn_router_health_step *step)
{
    uint64_t now = input->now_ms;
    bool overdue =
        input->waiting > 0 && now - input->oldest_ms >= settings->answer_ms;
    char waited[32];

    if (health->state == CAIRN_ROUTER_NODE_UP && overdue &&
        health->last_heard_ms >= input->oldest_ms) {
        format_ms(now - input->oldest_ms, waited, sizeof(waited));
        enter(health, now, CAIRN_ROUTER_NODE_SLOW, step,
              "a request has waited %s, %zu waiting; it answers PING", waited,
              input->waiting);
        health->counters.slows++;
    } else if (health->state == CAIRN_ROUTER_NODE_SLOW && !overdue) {
        format_ms(now - health->since_ms, waited, sizeof(waited));
        enter(health, now, CAIRN_ROUTER_NODE_UP, step,
              "caught up after %s slow", waited);
    }
}

void
cairn_router_health_step(struct cairn_router_health *health,
                         const struct cairn_router_health_settings *settings,
                         const struct cairn_router_health_input *input,
                         struct cairn_router_health_step *step)
{
    uint64_t now = input->now_ms;
    const char *detail = input->detail ? input->detail : "no answer";
    bool down = health->state == CAIRN_ROUTER_NODE_DOWN;
    char why[160], time[32];

    memset(step, 0, sizeof(*step));
    step->from = step->to = health->state;
    switch (input->event) {
    case CAIRN_ROUTER_HEALTH_TICK:
        tick(health, settings, input, step);
        break;
    case CAIRN_ROUTER_HEALTH_ANSWERED:
        health->last_heard_ms = now;
        break;
    case CAIRN_ROUTER_HEALTH_PONG:
        health->last_heard_ms = now;
        health->probe_sent_ms = 0;
        if (down && !health->confirming) {
            health->confirming = true;
            step->actions |= CAIRN_ROUTER_HEALTH_CONFIRM;
        }
        break;
    case CAIRN_ROUTER_HEALTH_PROBE_FAILED:
        snprintf(why, sizeof(why), "PING not sent: %s", detail);
        probe_failed(health, settings, now, step, why);
        break;
    case CAIRN_ROUTER_HEALTH_REQUEST_FAILED:
        health->counters.requests_failed++;
        if (!down)
            go_down(health, settings, now, step, detail);
        break;
    case CAIRN_ROUTER_HEALTH_DISCONNECTED:
        if (!down)
            go_down(health, settings, now, step, "its connection closed");
        break;
    case CAIRN_ROUTER_HEALTH_CONFIRMED:
        if (down && health->confirming) {
            health->confirming = false;
            health->last_heard_ms = now;
            health->counters.recoveries++;
            format_ms(now - health->since_ms, time, sizeof(time));
            enter(health, now, CAIRN_ROUTER_NODE_UP, step,
                  "answers again after %s down", time);
        }
        break;
    case CAIRN_ROUTER_HEALTH_CONFIRM_FAILED:
        if (down && health->confirming) {
            health->confirming = false;
            back_off(health, settings, now, step);
        }
        break;
    }
    if (health->state != CAIRN_ROUTER_NODE_DOWN)
        judge_speed(health, settings, input, step);
    step->to = health->state;
    step->changed = step->from != step->to;
}
