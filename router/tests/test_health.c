/*
 * test_health.c - the router's node health state machine (health.c), as
 * tables: each case is a script of events at given times (the clock is
 * the test's, never the wall's) with the state, the actions and the
 * change each step must give.
 */
#include "check.h"
#include "health_int.h"

#include <stdio.h>
#include <string.h>

#define UP CAIRN_ROUTER_NODE_UP
#define SLOW CAIRN_ROUTER_NODE_SLOW
#define DOWN CAIRN_ROUTER_NODE_DOWN
#define PROBE CAIRN_ROUTER_HEALTH_PROBE
#define CONFIRM CAIRN_ROUTER_HEALTH_CONFIRM
#define ABANDON CAIRN_ROUTER_HEALTH_ABANDON
#define RESET CAIRN_ROUTER_HEALTH_RESET

/* A = 1000 ms, backoff 100 ms doubling to 400 ms. */
static const struct cairn_router_health_settings settings = {
    .answer_ms = 1000,
    .backoff_min_ms = 100,
    .backoff_max_ms = 400,
};

struct step_case {
    enum cairn_router_health_event event;
    uint64_t now_ms;
    size_t waiting;
    uint64_t oldest_ms;
    enum cairn_router_node_state state; /* after the step */
    unsigned actions;
    bool changed;
    const char *reason; /* a part of the reason after the step; NULL: any */
};

#define MAX_STEPS 12
struct script {
    const char *name;
    struct step_case steps[MAX_STEPS];
    size_t count;
};

#define TICK CAIRN_ROUTER_HEALTH_TICK
#define ANSWERED CAIRN_ROUTER_HEALTH_ANSWERED
#define PONG CAIRN_ROUTER_HEALTH_PONG
#define PROBE_FAILED CAIRN_ROUTER_HEALTH_PROBE_FAILED
#define REQUEST_FAILED CAIRN_ROUTER_HEALTH_REQUEST_FAILED
#define DISCONNECTED CAIRN_ROUTER_HEALTH_DISCONNECTED
#define CONFIRMED CAIRN_ROUTER_HEALTH_CONFIRMED
#define CONFIRM_FAILED CAIRN_ROUTER_HEALTH_CONFIRM_FAILED

static const struct script scripts[] = {
    {"idle node: nothing to do",
     {{TICK, 100, 0, 0, UP, 0, false, NULL},
      {TICK, 60000, 0, 0, UP, 0, false, NULL}},
     2},
    {"busy node answering: no probe, never slow",
     {{ANSWERED, 400, 1, 300, UP, 0, false, NULL},
      {TICK, 800, 1, 700, UP, 0, false, NULL},
      {ANSWERED, 1100, 1, 1000, UP, 0, false, NULL},
      {TICK, 1500, 1, 1000, UP, 0, false, NULL}},
     4},
    {"silent node: probed at A/2, down when the PING misses A",
     {{TICK, 100, 1, 100, UP, 0, false, NULL},
      {TICK, 599, 1, 100, UP, 0, false, NULL},
      {TICK, 600, 1, 100, UP, PROBE, false, NULL},
      {TICK, 1200, 1, 100, UP, 0, false, NULL},
      {TICK, 1600, 1, 100, DOWN, ABANDON | RESET, true,
       "no answer to PING within 1s"},
      /* down: probed again after the backoff, not before */
      {TICK, 1699, 0, 0, DOWN, 0, false, NULL},
      {TICK, 1700, 0, 0, DOWN, PROBE, false, NULL}},
     7},
    {"slow node: answers PING while its request waits past A",
     {{TICK, 500, 1, 0, UP, PROBE, false, NULL},
      {PONG, 550, 1, 0, UP, 0, false, NULL},
      {TICK, 1000, 1, 0, SLOW, 0, true, "a request has waited 1s"},
      {TICK, 1050, 1, 0, SLOW, PROBE, false, NULL},
      {PONG, 1100, 1, 0, SLOW, 0, false, NULL},
      {TICK, 2000, 1, 0, SLOW, PROBE, false, NULL},
      /* the big request is answered: up again */
      {ANSWERED, 2100, 0, 0, UP, 0, true, "caught up after 1.1s slow"}},
     7},
    {"slow node whose PING then misses: down",
     {{TICK, 500, 1, 0, UP, PROBE, false, NULL},
      {PONG, 600, 1, 0, UP, 0, false, NULL},
      {TICK, 1100, 1, 0, SLOW, PROBE, true, NULL},
      {TICK, 2100, 1, 0, DOWN, ABANDON | RESET, true, "PING"}},
     4},
    {"a request failing for want of an answer: down at once",
     {{REQUEST_FAILED, 30000, 2, 0, DOWN, ABANDON | RESET, true,
       "GET USER of anne: no answer"},
      /* further failures of requests given up change nothing */
      {REQUEST_FAILED, 30001, 1, 0, DOWN, 0, false, NULL}},
     2},
    {"connection closed: down at once; a late PONG is not enough",
     {{DISCONNECTED, 10, 0, 0, DOWN, ABANDON | RESET, true, "closed"},
      {TICK, 110, 0, 0, DOWN, PROBE, false, NULL},
      {PONG, 120, 0, 0, DOWN, CONFIRM, false, NULL},
      /* the request link's PING decides */
      {TICK, 2000, 0, 0, DOWN, 0, false, NULL},
      {CONFIRMED, 2100, 0, 0, UP, 0, true, "answers again after 2.1s down"}},
     5},
    {"down: the backoff doubles to its maximum, probes on new connections",
     {{DISCONNECTED, 0, 0, 0, DOWN, ABANDON | RESET, true, NULL},
      {TICK, 100, 0, 0, DOWN, PROBE, false, NULL},
      {TICK, 1100, 0, 0, DOWN, RESET, false, NULL},
      {TICK, 1299, 0, 0, DOWN, 0, false, NULL},
      {TICK, 1300, 0, 0, DOWN, PROBE, false, NULL},
      {TICK, 2300, 0, 0, DOWN, RESET, false, NULL},
      {TICK, 2700, 0, 0, DOWN, PROBE, false, NULL},
      {PROBE_FAILED, 2701, 0, 0, DOWN, RESET, false, NULL},
      {TICK, 3100, 0, 0, DOWN, 0, false, NULL},
      {TICK, 3101, 0, 0, DOWN, PROBE, false, NULL}},
     10},
    {"down: a confirm that fails backs off again",
     {{DISCONNECTED, 0, 0, 0, DOWN, ABANDON | RESET, true, NULL},
      {TICK, 100, 0, 0, DOWN, PROBE, false, NULL},
      {PONG, 150, 0, 0, DOWN, CONFIRM, false, NULL},
      {CONFIRM_FAILED, 30150, 0, 0, DOWN, RESET, false, NULL},
      {TICK, 30349, 0, 0, DOWN, 0, false, NULL},
      {TICK, 30350, 0, 0, DOWN, PROBE, false, NULL}},
     6},
    {"up node whose probe cannot be sent: down",
     {{TICK, 500, 1, 0, UP, PROBE, false, NULL},
      {PROBE_FAILED, 501, 1, 0, DOWN, ABANDON | RESET, true,
       "PING not sent: Resource temporarily unavailable"}},
     2},
};

/* The details a few events carry. */
static const char *
detail_of(enum cairn_router_health_event event)
{
    if (event == REQUEST_FAILED)
        return "GET USER of anne: no answer within node_timeout";
    if (event == PROBE_FAILED)
        return "Resource temporarily unavailable";
    return NULL;
}

static void
run_script(const struct script *script)
{
    struct cairn_router_health health;

    cairn_router_health_init(&health, 0);
    for (size_t i = 0; i < script->count; i++) {
        const struct step_case *c = &script->steps[i];
        struct cairn_router_health_input input = {
            .event = c->event,
            .now_ms = c->now_ms,
            .waiting = c->waiting,
            .oldest_ms = c->oldest_ms,
            .detail = detail_of(c->event),
        };
        struct cairn_router_health_step step;
        int failures = check_failures;

        cairn_router_health_step(&health, &settings, &input, &step);
        CHECK_INT(health.state, c->state);
        CHECK_INT(step.to, c->state);
        CHECK_INT(step.actions, c->actions);
        CHECK_INT(step.changed, c->changed);
        if (c->reason != NULL)
            CHECK(strstr(health.reason, c->reason) != NULL);
        if (check_failures != failures)
            fprintf(stderr, "  in \"%s\", step %zu (reason \"%s\")\n",
                    script->name, i + 1, health.reason);
    }
}

/* The counters over one outage: down once, probes, a recovery. */
static void
test_counters(void)
{
    static const struct step_case steps[] = {
        {TICK, 500, 1, 0, UP, PROBE, false, NULL},
        {TICK, 1500, 1, 0, DOWN, ABANDON | RESET, true, NULL},
        {REQUEST_FAILED, 30000, 0, 0, DOWN, 0, false, NULL},
        {TICK, 30000, 0, 0, DOWN, PROBE, false, NULL},
        {PONG, 30010, 0, 0, DOWN, CONFIRM, false, NULL},
        {CONFIRMED, 30020, 0, 0, UP, 0, true, NULL},
    };
    struct cairn_router_health health;

    cairn_router_health_init(&health, 0);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct cairn_router_health_input input = {
            .event = steps[i].event,
            .now_ms = steps[i].now_ms,
            .waiting = steps[i].waiting,
            .oldest_ms = steps[i].oldest_ms,
        };
        struct cairn_router_health_step step;

        cairn_router_health_step(&health, &settings, &input, &step);
        CHECK_INT(step.actions, steps[i].actions);
    }
    CHECK_U64(health.counters.downs, 1);
    CHECK_U64(health.counters.recoveries, 1);
    CHECK_U64(health.counters.probes, 2);
    CHECK_U64(health.counters.probes_missed, 1);
    CHECK_U64(health.counters.requests_failed, 1);
    CHECK_U64(health.counters.slows, 0);
    CHECK_STR(cairn_router_health_state_name(DOWN), "down");
    CHECK_STR(cairn_router_health_state_name(SLOW), "slow");
    CHECK_STR(cairn_router_health_state_name(UP), "up");
}

int
main(void)
{
    for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++)
        run_script(&scripts[i]);
    test_counters();
    return check_exit("test_health");
}
