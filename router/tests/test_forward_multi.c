/*
 * test_forward_multi.c - the forwarder with several in-process cairn nodes
 * (node server library on the test's loop): an APPLY MAILBOX of 20,000
 * records (several MB, many node frames) stored on 2 replicas and read
 * back identical from each (the second through the GET fallback once the
 * first is stopped); the ack policies with replicas down; the per (user,
 * node) sequence table; a replica that missed a write marked, asked
 * first by the next GET USER and cleared once it took the resend, also
 * across a restart of the forward (the marks file); a ring file reload
 * with a higher epoch; a channel with two destinations.
 */
#include "forward_int.h"
#include "node_server.h"
#include "placement.h"
#include "session_util.h"

#include <dirent.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>

#define MAX_NODES 3

struct cluster {
    char dir[64];
    char ring_path[128];
    size_t node_count;
    struct cairn_node_server *servers[MAX_NODES];
    char endpoints[MAX_NODES][64];
    struct cairn_router_forward *forward;
    struct fixture fixture;
    enum cairn_router_ack ack;
    uint64_t timeout_ms;
    bool keep_marks; /* set before cluster_start: marks in <dir>/state */
    char state_dir[96];
    char events[4][512]; /* the forward's last events, newest first */
};

static const char *const node_names[MAX_NODES] = {"n1", "n2", "n3"};

static int
save_ring(struct cluster *cluster, size_t replicas, uint64_t epoch)
{
    struct cairn_ring_node_spec specs[MAX_NODES] = {
        {"n1", 1, "z1"}, {"n2", 1, "z2"}, {"n3", 1, "z3"}};
    struct cairn_ring *ring = NULL;
    int rc;

    rc = cairn_ring_new("main", (unsigned)replicas, 0, specs,
                        cluster->node_count, &ring);
    if (rc == 0)
        cairn_ring_set_epoch(ring, epoch);
    if (rc == 0)
        rc = cairn_ring_save(ring, cluster->ring_path);
    cairn_ring_free(ring);
    return rc;
}

static void
keep_event(void *arg, const struct cairn_router_event *event)
{
    struct cluster *cluster = arg;

    memmove(cluster->events[1], cluster->events[0],
            sizeof(cluster->events) - sizeof(cluster->events[0]));
    snprintf(cluster->events[0], sizeof(cluster->events[0]), "%s",
             event->message);
}

/* The forward of the cluster's nodes, installed on the router (as a
 * router start makes it: again after a free is a restart). */
static int
forward_open(struct cluster *cluster)
{
    struct cairn_router_forward_node nodes[MAX_NODES];
    struct cairn_router_forward_settings forward = {
        .destination = "main",
        .ring_file = cluster->ring_path,
        .nodes = nodes,
        .node_count = cluster->node_count,
        .timeout_ms = cluster->timeout_ms,
        .ack = cluster->ack,
        .state_dir = cluster->keep_marks ? cluster->state_dir : NULL,
        .event_fn = keep_event,
        .event_arg = cluster,
    };
    char error[256] = "";
    int rc;

    for (size_t i = 0; i < cluster->node_count; i++)
        nodes[i] = (struct cairn_router_forward_node){node_names[i],
                                                      cluster->endpoints[i]};
    rc = cairn_router_forward_new(cluster->fixture.loop, &forward,
                                  &cluster->forward, error, sizeof(error));
    if (rc == 0)
        cairn_router_set_request_handler(cluster->fixture.router,
                                         cairn_router_forward_request,
                                         cluster->forward);
    if (rc < 0)
        fprintf(stderr, "forward_open: %s %s\n", error, cairn_strerror(rc));
    return rc;
}

/* Starts node_count nodes, a ring of replicas, a router with a spool. */
static int
cluster_start(struct cluster *cluster, size_t node_count, size_t replicas,
              enum cairn_router_ack ack, uint64_t timeout_ms)
{
    char spool[96], error[256] = "";
    int rc;

    snprintf(cluster->dir, sizeof(cluster->dir),
             "/tmp/cairn-test-fwdmulti-XXXXXX");
    if (mkdtemp(cluster->dir) == NULL)
        return CAIRN_EIO;
    cluster->node_count = node_count;
    cluster->ack = ack;
    cluster->timeout_ms = timeout_ms;
    snprintf(cluster->state_dir, sizeof(cluster->state_dir), "%s/state",
             cluster->dir);
    snprintf(cluster->ring_path, sizeof(cluster->ring_path), "%s/main.ring",
             cluster->dir);
    snprintf(spool, sizeof(spool), "%s/spool", cluster->dir);
    if ((rc = fixture_open_spool(&cluster->fixture, 0, 0, 0, spool, 64 << 20)) <
            0 ||
        (rc = save_ring(cluster, replicas, 1)) < 0)
        return rc;
    for (size_t i = 0; i < node_count && rc == 0; i++) {
        char data[96];
        struct cairn_node_server_settings settings = {
            .name = node_names[i],
            .endpoint = "tcp://127.0.0.1:*",
            .data_dir = data,
        };

        snprintf(data, sizeof(data), "%s/%s", cluster->dir, node_names[i]);
        rc = cairn_node_server_new(cluster->fixture.loop, NULL, &settings,
                                   &cluster->servers[i], error, sizeof(error));
        if (rc == 0)
            snprintf(cluster->endpoints[i], sizeof(cluster->endpoints[i]), "%s",
                     cairn_node_server_endpoint(cluster->servers[i]));
    }
    if (rc < 0)
        fprintf(stderr, "cluster_start: %s %s\n", error, cairn_strerror(rc));
    return rc == 0 ? forward_open(cluster) : rc;
}

/*
 * Runs the loop until the forward has no request left (20 s at most): a
 * write answered OK before every replica did is still waiting for them,
 * and freeing the forward would drop it.
 */
static void
await_idle(struct cluster *cluster)
{
    uint64_t deadline = cairn_loop_now_ms() + 20000;

    while (cluster->forward != NULL &&
           cairn_router_forward_in_flight(cluster->forward) > 0 &&
           cairn_loop_now_ms() < deadline)
        cairn_loop_run_once(cluster->fixture.loop, 10);
    if (cluster->forward != NULL)
        CHECK_U64(cairn_router_forward_in_flight(cluster->forward), 0);
}

static void
cluster_stop(struct cluster *cluster)
{
    char command[160];

    await_idle(cluster);
    cairn_router_free(cluster->fixture.router);
    cairn_router_forward_free(cluster->forward);
    for (size_t i = 0; i < cluster->node_count; i++)
        cairn_node_server_free(cluster->servers[i]);
    cairn_loop_free(cluster->fixture.loop);
    snprintf(command, sizeof(command), "rm -rf %s", cluster->dir);
    CHECK_INT(system(command), 0);
}

/* Stops the node that is replica number rank of user on the ring file. */
static void
stop_replica(struct cluster *cluster, const char *user, size_t rank)
{
    struct cairn_ring *ring = NULL;
    uint16_t replicas[CAIRN_RING_MAX_REPLICAS];

    CHECK_INT(cairn_ring_load(cluster->ring_path, &ring), 0);
    cairn_ring_lookup(ring, user, strlen(user), replicas);
    cairn_node_server_free(cluster->servers[replicas[rank]]);
    cluster->servers[replicas[rank]] = NULL;
    cairn_ring_free(ring);
}

/* Writes all of text while the loop runs (the router reads meanwhile). */
static void
send_all(struct cluster *cluster, int fd, const char *text, size_t len)
{
    size_t done = 0;

    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    while (done < len) {
        ssize_t wrote = write(fd, text + done, len - done);

        if (wrote > 0)
            done += (size_t)wrote;
        cairn_loop_run_once(cluster->fixture.loop, 1);
    }
}

/* A whole response into text, within timeout_ms. */
static void
receive_long(struct cluster *cluster, int fd, struct cairn_buf *text,
             uint64_t timeout_ms)
{
    uint64_t deadline = cairn_loop_now_ms() + timeout_ms;
    char wire[65536];

    cairn_buf_reset(text);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    while (cairn_loop_now_ms() < deadline && !response_complete(text)) {
        ssize_t got;

        cairn_loop_run_once(cluster->fixture.loop, 5);
        while ((got = read(fd, wire, sizeof(wire))) > 0)
            CHECK_INT(cairn_buf_append(text, wire, (size_t)got), 0);
        if (got == 0)
            return;
    }
}

static int
exchange(struct cluster *cluster, int fd, const char *command,
         struct cairn_buf *text)
{
    send_all(cluster, fd, command, strlen(command));
    receive_long(cluster, fd, text, 20000);
    return text->data != NULL ? 0 : -1;
}

static int
connect_logged_in(struct cluster *cluster, struct cairn_buf *text)
{
    return login(&cluster->fixture, cluster->fixture.port,
                 "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n", text);
}

/* The body of message uid; returns its length. */
static size_t
body_of(size_t uid, char body[64])
{
    return (size_t)snprintf(body, 64, "message number %zu", uid);
}

/* The GUID (hex SHA-1) of body. */
static const char *
guid_of(const char *body, char guid[41])
{
    unsigned char digest[SHA_DIGEST_LENGTH];

    SHA1((const unsigned char *)body, strlen(body), digest);
    for (size_t i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(guid + 2 * i, 3, "%02x", digest[i]);
    return guid;
}

/* APPLY MESSAGE of the bodies of UIDs first..last. */
static void
message_batch(struct cairn_buf *out, size_t first, size_t last)
{
    char body[64], guid[41];

    cairn_buf_reset(out);
    CHECK_INT(cairn_buf_append_str(out, "APPLY MESSAGE ("), 0);
    for (size_t uid = first; uid <= last; uid++) {
        size_t len = body_of(uid, body);

        CHECK_INT(cairn_buf_printf(out, "%s%%{default %s %zu}\r\n%s",
                                   uid > first ? " " : "", guid_of(body, guid),
                                   len, body),
                  0);
    }
    CHECK_INT(cairn_buf_append_str(out, ")\r\n"), 0);
}

/* APPLY MAILBOX user.anne with the records of UIDs first..count. */
static void
big_mailbox(struct cairn_buf *out, size_t first, size_t count)
{
    char record[256], body[64], guid[41];

    cairn_buf_reset(out);
    CHECK_INT(cairn_buf_printf(
                  out,
                  "APPLY MAILBOX %%(UNIQUEID u1 MBOXNAME user.anne LAST_UID "
                  "%zu HIGHESTMODSEQ %zu RECENTUID 1 RECENTTIME 1795668590 "
                  "LAST_APPENDDATE 1795668590 POP3_LAST_LOGIN 0 "
                  "POP3_SHOW_AFTER 0 UIDVALIDITY 1795668591 PARTITION default "
                  "ACL \"anne\tlrswipkxtecdan\t\" OPTIONS P SYNC_CRC 0 "
                  "SYNC_CRC_ANNOT 0 RECORD (",
                  count, count + 1),
              0);
    for (size_t uid = first; uid <= count; uid++) {
        size_t len = body_of(uid, body);

        snprintf(record, sizeof(record),
                 "%s%%(UID %zu MODSEQ %zu LAST_UPDATED 1795668590 FLAGS () "
                 "INTERNALDATE 1795668590 SIZE %zu GUID %s)",
                 uid > first ? " " : "", uid, uid + 1, len,
                 guid_of(body, guid));
        CHECK_INT(cairn_buf_append_str(out, record), 0);
    }
    CHECK_INT(cairn_buf_append_str(out, "))\r\n"), 0);
}

static size_t
count_of(const char *text, const char *word)
{
    size_t count = 0;

    for (const char *at = text; (at = strstr(at, word)) != NULL; at++)
        count++;
    return count;
}

static double
seconds_since(const struct timespec *start)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) +
           (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* Descriptors this process has open now. */
static size_t
open_files(void)
{
    DIR *dir = opendir("/proc/self/fd");
    size_t count = 0;

    if (dir == NULL)
        return 0;
    while (readdir(dir) != NULL)
        count++;
    closedir(dir);
    return count;
}

/*
 * Sends command (a MAILBOX carrying many staged bodies) with the soft
 * open-files limit 256 above what is open now, and expects OK.
 */
static void
with_few_files(struct cluster *cluster, int fd, const struct cairn_buf *command,
               struct cairn_buf *text)
{
    struct rlimit saved, few;

    CHECK_INT(getrlimit(RLIMIT_NOFILE, &saved), 0);
    few = saved;
    few.rlim_cur = open_files() + 256;
    CHECK(few.rlim_cur < 10000);
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &few), 0);
    send_all(cluster, fd, command->data, command->len);
    receive_long(cluster, fd, text, 120000);
    CHECK_STR(text->data ? text->data : "", "OK Success\r\n");
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &saved), 0);
}

/* Many node frames in, 2 replicas, read back identical from each. */
static void
test_big_mailbox(void)
{
    enum { RECORDS = 20000 };
    struct cluster cluster = {0};
    struct cairn_buf command, text, first;
    struct timespec start;
    int fd;

    /* node_timeout bounds one whole request: the 10,000-record MAILBOX
     * took over 8 s on ASan nodes under load ("no answer within
     * node_timeout"). Only the hang guards below bound the test. */
    CHECK_INT(cluster_start(&cluster, 2, 2, CAIRN_ROUTER_ACK_ALL, 60000), 0);
    cairn_buf_init(&command, 64 << 20);
    cairn_buf_init(&text, 64 << 20);
    cairn_buf_init(&first, 64 << 20);
    fd = connect_logged_in(&cluster, &text);
    CHECK_INT(exchange(&cluster, fd,
                       "APPLY RESERVE %(PARTITION default MBOXNAME "
                       "(user.anne) GUID (" HELLO_GUID "))\r\n",
                       &text),
              0);
    CHECK_INT(exchange(&cluster, fd,
                       "APPLY MESSAGE (%{default " HELLO_GUID
                       " 5}\r\nhello)\r\n",
                       &text),
              0);
    /* The bodies first, in batches as sync_client sends them: each
     * MESSAGE waits for the MAILBOX naming its bodies. */
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (size_t first_uid = 1; first_uid <= RECORDS / 2; first_uid += 500) {
        message_batch(&command, first_uid, first_uid + 499);
        send_all(&cluster, fd, command.data, command.len);
        receive_long(&cluster, fd, &text, 20000);
        CHECK_STR(text.data ? text.data : "", "OK Success\r\n");
        big_mailbox(&command, first_uid, first_uid + 499);
        send_all(&cluster, fd, command.data, command.len);
        receive_long(&cluster, fd, &text, 20000);
        CHECK_STR(text.data ? text.data : "", "OK Success\r\n");
    }
    /* The other half staged whole, then one MAILBOX naming its 10,000
     * bodies, under an open-files limit far below that: they share the
     * connection's spool file, read through one descriptor. */
    for (size_t first_uid = RECORDS / 2 + 1; first_uid <= RECORDS;
         first_uid += 500) {
        message_batch(&command, first_uid, first_uid + 499);
        send_all(&cluster, fd, command.data, command.len);
        receive_long(&cluster, fd, &text, 20000);
        CHECK_STR(text.data ? text.data : "", "OK Success\r\n");
    }
    big_mailbox(&command, RECORDS / 2 + 1, RECORDS);
    with_few_files(&cluster, fd, &command, &text);
    printf("big mailbox: %d bodies stored on 2 replicas in %.2f s\n", RECORDS,
           seconds_since(&start));
    /* Every body went with its batch: this one carries none. */
    big_mailbox(&command, 1, RECORDS);
    CHECK(command.len > 2 * (1 << 20)); /* 3 frames of 1 MiB */
    clock_gettime(CLOCK_MONOTONIC, &start);
    send_all(&cluster, fd, command.data, command.len);
    receive_long(&cluster, fd, &text, 120000);
    CHECK_STR(text.data ? text.data : "", "OK Success\r\n");
    printf("big mailbox: %d records, %zu bytes, stored on 2 replicas in "
           "%.2f s\n",
           RECORDS, command.len, seconds_since(&start));
    CHECK_INT(exchange(&cluster, fd, "GET FULLMAILBOX user.anne\r\n", &first),
              0);
    CHECK_U64(count_of(first.data, " GUID "), RECORDS);
    CHECK(strstr(first.data, "\r\nOK Success\r\n") != NULL);
    /* The first replica goes away: the GET goes on to the second. */
    stop_replica(&cluster, "anne", 0);
    CHECK_INT(exchange(&cluster, fd, "GET FULLMAILBOX user.anne\r\n", &text),
              0);
    CHECK_STR(text.data, first.data);
    close(fd);
    cairn_buf_release(&command);
    cairn_buf_release(&text);
    cairn_buf_release(&first);
    cluster_stop(&cluster);
}

#define SMALL_MAILBOX                                                          \
    "APPLY MAILBOX %(UNIQUEID u1 MBOXNAME user.anne LAST_UID 0 "               \
    "HIGHESTMODSEQ 1 RECENTUID 0 RECENTTIME 0 LAST_APPENDDATE 0 "              \
    "POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY 1795668591 "              \
    "PARTITION default ACL \"anne\tlrswipkxtecdan\t\" OPTIONS P SYNC_CRC 0 "   \
    "SYNC_CRC_ANNOT 0 RECORD ())\r\n"

/* 3 replicas, some stopped: OK exactly when the policy is met. */
static void
test_ack_policies(void)
{
    static const struct {
        enum cairn_router_ack ack;
        size_t down;
        bool ok;
        uint64_t repairs;
    } cases[] = {
        {CAIRN_ROUTER_ACK_ALL, 0, true, 0},
        {CAIRN_ROUTER_ACK_ALL, 1, false, 0},
        {CAIRN_ROUTER_ACK_QUORUM, 1, true, 1},
        {CAIRN_ROUTER_ACK_QUORUM, 2, false, 0},
        {CAIRN_ROUTER_ACK_ONE, 2, true, 2},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cluster cluster = {0};
        struct cairn_buf text;
        uint64_t deadline;
        int fd;

        CHECK_INT(cluster_start(&cluster, 3, 3, cases[i].ack, 2000), 0);
        cairn_buf_init(&text, 1 << 20);
        fd = connect_logged_in(&cluster, &text);
        /* The last replicas go down, the first stays up. */
        for (size_t d = 0; d < cases[i].down; d++)
            stop_replica(&cluster, "anne", 2 - d);
        CHECK_INT(exchange(&cluster, fd, SMALL_MAILBOX, &text), 0);
        if (cases[i].ok)
            CHECK_STR(text.data, "OK Success\r\n");
        else
            CHECK(strncmp(text.data, "NO IMAP_MAILBOX_LOCKED ", 23) == 0);
        /* The stopped replicas' answers come after the OK. */
        deadline = cairn_loop_now_ms() + 5000;
        while (cairn_router_forward_repairs(cluster.forward) <
                   cases[i].repairs &&
               cairn_loop_now_ms() < deadline)
            cairn_loop_run_once(cluster.fixture.loop, 10);
        CHECK_U64(cairn_router_forward_repairs(cluster.forward),
                  cases[i].repairs);
        /* The replica that stayed up has the mailbox. */
        CHECK_INT(exchange(&cluster, fd, "GET USER anne\r\n", &text), 0);
        if (cases[i].ok)
            CHECK(strstr(text.data, "* MAILBOX %(UNIQUEID u1 ") != NULL);
        close(fd);
        cairn_buf_release(&text);
        cluster_stop(&cluster);
    }
}

/* SMALL_MAILBOX one modseq later: the change the lagging replica misses. */
#define SMALL_MAILBOX_CHANGED                                                  \
    "APPLY MAILBOX %(UNIQUEID u1 MBOXNAME user.anne LAST_UID 0 "               \
    "HIGHESTMODSEQ 7 RECENTUID 0 RECENTTIME 0 LAST_APPENDDATE 0 "              \
    "POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY 1795668591 "              \
    "PARTITION default ACL \"anne\tlrswipkxtecdan\t\" OPTIONS P SYNC_CRC 0 "   \
    "SYNC_CRC_ANNOT 0 RECORD ())\r\n"

/* Starts node index again on its old endpoint and data directory. */
static int
restart_node(struct cluster *cluster, size_t index)
{
    char data[96], error[256] = "";
    struct cairn_node_server_settings settings = {
        .name = node_names[index],
        .endpoint = cluster->endpoints[index],
        .data_dir = data,
    };
    int rc;

    snprintf(data, sizeof(data), "%s/%s", cluster->dir, node_names[index]);
    rc = cairn_node_server_new(cluster->fixture.loop, NULL, &settings,
                               &cluster->servers[index], error, sizeof(error));
    if (rc < 0)
        fprintf(stderr, "restart_node: %s %s\n", error, cairn_strerror(rc));
    return rc;
}

/* Runs the loop until the forward holds marks repair marks (20 s at most:
 * a failed write is marked when its node timeout expires). */
static void
await_marks(struct cluster *cluster, size_t marks)
{
    uint64_t deadline = cairn_loop_now_ms() + 20000;

    while (cairn_router_forward_repair_marks(cluster->forward) != marks &&
           cairn_loop_now_ms() < deadline)
        cairn_loop_run_once(cluster->fixture.loop, 10);
    CHECK_U64(cairn_router_forward_repair_marks(cluster->forward), marks);
}

/*
 * SMALL_MAILBOX once, OK: every replica's stream of anne holds one
 * number. One on purpose: the router's next stream (after the failure, or
 * a restart) must start with a number the node has not seen, marked
 * stream_start. When streams restarted at 1, a node whose last number
 * was 1 took the resend for a replay, ACKed it and did not apply it.
 */
static void
take_first_write(struct cluster *cluster, int fd, struct cairn_buf *text)
{
    CHECK_INT(exchange(cluster, fd, SMALL_MAILBOX, text), 0);
    CHECK_STR(text->data, "OK Success\r\n");
    /* Every replica took it, not only those the policy waited for. */
    await_idle(cluster);
}

static void
on_pong(void *arg, const struct cairn_node_reply *reply)
{
    int *status = arg;

    *status = reply->status;
}

/* Runs the loop until the forward's view of node name is up. */
static int
await_node_up(struct cluster *cluster, const char *name, uint64_t deadline)
{
    struct cairn_router_node_health health = {0};
    bool up = false;

    while (!up && cairn_loop_now_ms() < deadline) {
        for (size_t i = 0; cairn_router_forward_node_health(cluster->forward, i,
                                                            &health) == 0;
             i++)
            if (strcmp(health.name, name) == 0)
                up = health.state == CAIRN_ROUTER_NODE_UP;
        if (!up)
            cairn_loop_run_once(cluster->fixture.loop, 10);
    }
    if (!up)
        fprintf(stderr, "await_node_up: node %s still %s: %s\n", name,
                cairn_router_node_state_name(health.state), health.reason);
    return up ? 0 : CAIRN_ETIMEOUT;
}

/*
 * Waits until the forward's own connection reaches node index again (a
 * PING answered through it), 20 s at most: a restarted node is asked only
 * once it is back, however loaded the machine, instead of racing the
 * reconnect against the node timeout.
 */
static void
await_node(struct cluster *cluster, size_t index)
{
    uint64_t deadline = cairn_loop_now_ms() + 20000;
    int status = CAIRN_EUNAVAILABLE;

    while (status != 0 && cairn_loop_now_ms() < deadline) {
        int answer = 1; /* 1: not answered yet */

        if (cairn_router_forward_ping(cluster->forward, node_names[index],
                                      on_pong, &answer) < 0)
            break;
        /* The node client answers every request, by its timeout at the
         * latest. */
        while (answer == 1)
            cairn_loop_run_once(cluster->fixture.loop, 10);
        status = answer;
        for (uint64_t until = cairn_loop_now_ms() + 50;
             status != 0 && cairn_loop_now_ms() < until;)
            cairn_loop_run_once(cluster->fixture.loop, 10);
    }
    if (status != 0)
        fprintf(stderr,
                "await_node: node %s not reachable through the forward "
                "within 20 s (%s)\n",
                node_names[index], cairn_strerror(status));
    CHECK_INT(status, 0);
    /* ... and the forward holds it up again (its probe found it back):
     * until then requests that need it are answered without it. */
    CHECK_INT(await_node_up(cluster, node_names[index], deadline), 0);
}

/* What the router held when the lagging replica did not answer a GET. */
static void
report_lagging(struct cluster *cluster, size_t ack_case, const char *name,
               const struct cairn_buf *text)
{
    struct cairn_router_node_health health = {0};

    for (size_t i = 0;
         cairn_router_forward_node_health(cluster->forward, i, &health) == 0;
         i++)
        if (strcmp(health.name, name) == 0)
            fprintf(stderr,
                    "case %zu: %s is %s (%s), %llu downs, %llu recoveries,"
                    " %llu requests failed; GET USER answered: %.300s\n",
                    ack_case, name, cairn_router_node_state_name(health.state),
                    health.reason, (unsigned long long)health.counters.downs,
                    (unsigned long long)health.counters.recoveries,
                    (unsigned long long)health.counters.requests_failed,
                    text->data);
}

/*
 * A replica misses a write answered NO (ack all): it is marked, the next
 * GET USER is answered from it (its older state, though it is the second
 * replica), the resent write is taken by both, and the GET USER of the
 * next pass clears the mark. Per ack policy: a write answered OK that a
 * replica missed marks it too.
 */
static void
test_lagging_replica(void)
{
    static const struct {
        enum cairn_router_ack ack;
        const char *missed_reply; /* the client's answer to the missed write */
    } cases[] = {
        {CAIRN_ROUTER_ACK_ALL, "NO IMAP_MAILBOX_LOCKED "},
        {CAIRN_ROUTER_ACK_ONE, "OK Success\r\n"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cluster cluster = {0};
        struct cairn_ring *ring = NULL;
        uint16_t replicas[CAIRN_RING_MAX_REPLICAS];
        struct cairn_buf text;
        int fd;

        /* A node timeout no loaded machine's fsync gets near: the nodes
         * run in this process's loop, so a slow fsync of theirs delays
         * the router's health probes too (2 s was seen to mark the
         * restarted replica down again under load). */
        CHECK_INT(cluster_start(&cluster, 2, 2, cases[i].ack, 10000), 0);
        CHECK_INT(cairn_ring_load(cluster.ring_path, &ring), 0);
        cairn_ring_lookup(ring, "anne", 4, replicas);
        cairn_ring_free(ring);
        cairn_buf_init(&text, 1 << 20);
        fd = connect_logged_in(&cluster, &text);
        take_first_write(&cluster, fd, &text);
        await_marks(&cluster, 0);
        /* The second replica misses the change. */
        stop_replica(&cluster, "anne", 1);
        CHECK_INT(exchange(&cluster, fd, SMALL_MAILBOX_CHANGED, &text), 0);
        CHECK(strncmp(text.data, cases[i].missed_reply,
                      strlen(cases[i].missed_reply)) == 0);
        await_marks(&cluster, 1);
        CHECK_INT(restart_node(&cluster, replicas[1]), 0);
        await_node(&cluster, replicas[1]);
        /* Answered by the lagging replica, though it is the second one:
         * sync_client resends what it lacks. */
        CHECK_INT(exchange(&cluster, fd, "GET USER anne\r\n", &text), 0);
        CHECK(strstr(text.data, " HIGHESTMODSEQ 1 ") != NULL);
        if (strstr(text.data, " HIGHESTMODSEQ 1 ") == NULL)
            report_lagging(&cluster, i, node_names[replicas[1]], &text);
        CHECK_INT(exchange(&cluster, fd, SMALL_MAILBOX_CHANGED, &text), 0);
        CHECK_STR(text.data, "OK Success\r\n");
        await_marks(&cluster, 1);
        /* The next pass: both current, the mark cleared. */
        CHECK_INT(exchange(&cluster, fd, "GET USER anne\r\n", &text), 0);
        CHECK(strstr(text.data, " HIGHESTMODSEQ 7 ") != NULL);
        await_marks(&cluster, 0);
        /* The lagging replica alone answers now: it caught up. */
        stop_replica(&cluster, "anne", 0);
        CHECK_INT(exchange(&cluster, fd, "GET USER anne\r\n", &text), 0);
        CHECK(strstr(text.data, " HIGHESTMODSEQ 7 ") != NULL);
        close(fd);
        cairn_buf_release(&text);
        cluster_stop(&cluster);
    }
}

/* Whether the marks file holds line (a whole line). */
static bool
marks_file_has(const struct cluster *cluster, const char *line)
{
    char path[160], text[4096] = "\n", wanted[256];
    size_t got = 0;
    FILE *file;

    snprintf(path, sizeof(path), "%s/repair-marks.main", cluster->state_dir);
    if ((file = fopen(path, "r")) == NULL)
        return false;
    got = fread(text + 1, 1, sizeof(text) - 2, file);
    text[got + 1] = '\0';
    fclose(file);
    snprintf(wanted, sizeof(wanted), "\n%s\n", line);
    return strstr(text, wanted) != NULL;
}

/* Runs the loop until the marks file holds line or not (5 s at most). */
static void
await_marks_file(struct cluster *cluster, const char *line, bool present)
{
    uint64_t deadline = cairn_loop_now_ms() + 5000;

    while (marks_file_has(cluster, line) != present &&
           cairn_loop_now_ms() < deadline)
        cairn_loop_run_once(cluster->fixture.loop, 10);
    if (marks_file_has(cluster, line) != present)
        fprintf(stderr, "marks file: line '%s' %s\n", line,
                present ? "missing" : "still there");
    CHECK(marks_file_has(cluster, line) == present);
}

/*
 * The marks outlive the forward: under ack quorum the third replica
 * misses a write answered OK; the forward is freed and made again from
 * the same state directory (what a router restart does); the next GET
 * USER is answered by the marked replica first, the resend catches it
 * up, and once the mark is cleared the file says so too.
 */
static void
test_marks_survive_restart(void)
{
    struct cluster cluster = {.keep_marks = true};
    struct cairn_ring *ring = NULL;
    uint16_t replicas[CAIRN_RING_MAX_REPLICAS];
    char line[64];
    struct cairn_buf text;
    int fd;

    CHECK_INT(cluster_start(&cluster, 3, 3, CAIRN_ROUTER_ACK_QUORUM, 2000), 0);
    CHECK_INT(cairn_ring_load(cluster.ring_path, &ring), 0);
    cairn_ring_lookup(ring, "anne", 4, replicas);
    cairn_ring_free(ring);
    snprintf(line, sizeof(line), "anne %s behind", node_names[replicas[2]]);
    cairn_buf_init(&text, 1 << 20);
    fd = connect_logged_in(&cluster, &text);
    take_first_write(&cluster, fd, &text);
    stop_replica(&cluster, "anne", 2);
    CHECK_INT(exchange(&cluster, fd, SMALL_MAILBOX_CHANGED, &text), 0);
    CHECK_STR(text.data, "OK Success\r\n");
    await_marks(&cluster, 1);
    /* Saved by the timer, before any shutdown. */
    await_marks_file(&cluster, line, true);
    /* The restart, once the write the replica missed is finished. */
    await_idle(&cluster);
    cairn_router_forward_free(cluster.forward);
    cluster.forward = NULL;
    CHECK_INT(forward_open(&cluster), 0);
    CHECK_U64(cairn_router_forward_repair_marks(cluster.forward), 1);
    CHECK(strstr(cluster.events[0],
                 "1 users marked for repair from the last run") != NULL);
    CHECK_INT(restart_node(&cluster, replicas[2]), 0);
    await_node(&cluster, replicas[2]);
    /* Asked first though it is the third replica: its older state. */
    CHECK_INT(exchange(&cluster, fd, "GET USER anne\r\n", &text), 0);
    CHECK(strstr(text.data, " HIGHESTMODSEQ 1 ") != NULL);
    CHECK_INT(exchange(&cluster, fd, SMALL_MAILBOX_CHANGED, &text), 0);
    CHECK_STR(text.data, "OK Success\r\n");
    snprintf(line, sizeof(line), "anne %s asked", node_names[replicas[2]]);
    await_marks_file(&cluster, line, true);
    /* The next pass clears the mark, in the file too. */
    CHECK_INT(exchange(&cluster, fd, "GET USER anne\r\n", &text), 0);
    CHECK(strstr(text.data, " HIGHESTMODSEQ 7 ") != NULL);
    await_marks(&cluster, 0);
    await_marks_file(&cluster, line, false);
    /* The lagging replica alone answers now: it caught up. */
    stop_replica(&cluster, "anne", 0);
    stop_replica(&cluster, "anne", 1);
    CHECK_INT(exchange(&cluster, fd, "GET USER anne\r\n", &text), 0);
    CHECK(strstr(text.data, " HIGHESTMODSEQ 7 ") != NULL);
    close(fd);
    cairn_buf_release(&text);
    cluster_stop(&cluster);
}

/* Sequence numbers per (user, node); a reset stream starts with a new, marked
 * number. */
static void
test_sequences(void)
{
    /* expect: 0 = a new stream's first number, else first + expect */
    static const struct {
        const char *user;
        size_t node;
        bool reset; /* reset first instead of taking a number */
        uint64_t expect;
    } steps[] = {
        {"anne", 0, false, 0}, {"anne", 0, false, 1}, {"anne", 1, false, 0},
        {"bob", 0, false, 0},  {"anne", 0, false, 2}, {"anne", 0, true, 0},
        {"anne", 0, false, 1}, {"anne", 1, false, 1}, {"bob", 0, true, 0},
    };
    struct cairn_router_sequences *table = NULL;
    uint64_t first[2][2] = {{0}}, issued = 0; /* [anne|bob][node] */

    CHECK_INT(cairn_router_sequences_new(&table), 0);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        size_t who = strcmp(steps[i].user, "bob") == 0;
        uint64_t sequence = 0;
        bool start = false;

        if (steps[i].reset)
            cairn_router_sequences_reset(table, steps[i].user, steps[i].node);
        CHECK_INT(cairn_router_sequences_next(table, steps[i].user,
                                              steps[i].node, &sequence, &start),
                  0);
        CHECK_INT(start, steps[i].expect == 0);
        if (steps[i].expect == 0) {
            /* Never a number issued before: a node cannot take the new
             * stream's first request for a replay. */
            CHECK(sequence > issued);
            CHECK(sequence > (uint64_t)1 << 40); /* wall-clock based */
            first[who][steps[i].node] = sequence;
        } else {
            CHECK_U64(sequence, first[who][steps[i].node] + steps[i].expect);
        }
        if (sequence > issued)
            issued = sequence;
    }
    CHECK_U64(cairn_router_sequences_count(table), 3);
    /* Many users: the table grows and keeps every stream. */
    for (size_t i = 0; i < 5000; i++) {
        char user[32];
        uint64_t sequence = 0, second = 0;
        bool start = false;

        snprintf(user, sizeof(user), "user%zu", i);
        CHECK_INT(
            cairn_router_sequences_next(table, user, 2, &sequence, &start), 0);
        CHECK_INT(cairn_router_sequences_next(table, user, 2, &second, &start),
                  0);
        if (second != sequence + 1 || start)
            CHECK_U64(second, sequence + 1);
    }
    CHECK_U64(cairn_router_sequences_count(table), 5003);
    cairn_router_sequences_free(table);
}

/* The node sees every write of a stream in order: many APPLYs all OK. */
static void
test_ordered_stream(void)
{
    struct cluster cluster = {0};
    struct cairn_buf text;
    int fd;

    CHECK_INT(cluster_start(&cluster, 2, 2, CAIRN_ROUTER_ACK_ALL, 2000), 0);
    cairn_buf_init(&text, 1 << 20);
    fd = connect_logged_in(&cluster, &text);
    for (int i = 0; i < 20; i++) {
        CHECK_INT(exchange(&cluster, fd, SMALL_MAILBOX, &text), 0);
        CHECK_STR(text.data, "OK Success\r\n");
    }
    /* Every replica gone: a NO that sync_client retries. */
    stop_replica(&cluster, "anne", 0);
    stop_replica(&cluster, "anne", 1);
    CHECK_INT(exchange(&cluster, fd, "GET USER anne\r\n", &text), 0);
    CHECK(strncmp(text.data, "NO IMAP_MAILBOX_LOCKED ", 23) == 0);
    close(fd);
    cairn_buf_release(&text);
    cluster_stop(&cluster);
}

/* A ring with a higher epoch is taken; a broken or older one is not. */
static void
test_ring_reload(void)
{
    struct cluster cluster = {0};
    struct cairn_router_forward_node nodes[MAX_NODES];
    struct cairn_router_forward_settings settings = {
        .destination = "main",
        .ring_file = cluster.ring_path,
        .nodes = nodes,
        .node_count = 2,
    };
    char error[256] = "";
    bool replaced = true;
    FILE *file;

    CHECK_INT(cluster_start(&cluster, 2, 1, CAIRN_ROUTER_ACK_ALL, 2000), 0);
    for (size_t i = 0; i < 2; i++)
        nodes[i] = (struct cairn_router_forward_node){node_names[i],
                                                      cluster.endpoints[i]};
    /* Same epoch: kept. */
    CHECK_INT(cairn_router_forward_reload(cluster.forward, &settings, &replaced,
                                          error, sizeof(error)),
              0);
    CHECK(!replaced);
    CHECK_INT(save_ring(&cluster, 2, 7), 0);
    CHECK_INT(cairn_router_forward_reload(cluster.forward, &settings, &replaced,
                                          error, sizeof(error)),
              0);
    CHECK(replaced);
    CHECK_U64(cairn_ring_epoch(cairn_router_forward_ring(cluster.forward)), 7);
    CHECK_U64(cairn_ring_replicas(cairn_router_forward_ring(cluster.forward)),
              2);
    /* A broken file: refused, the ring in use stays. */
    file = fopen(cluster.ring_path, "w");
    CHECK(file != NULL);
    fputs("not a ring\n", file);
    fclose(file);
    CHECK(cairn_router_forward_reload(cluster.forward, &settings, &replaced,
                                      error, sizeof(error)) < 0);
    CHECK(!replaced);
    CHECK(strstr(error, "cannot load ring") != NULL);
    CHECK_U64(cairn_ring_epoch(cairn_router_forward_ring(cluster.forward)), 7);
    cluster_stop(&cluster);
}

/* Two destinations behind one channel (the handler fans writes out). */
struct fan {
    struct cairn_router_forward *forwards[2];
    size_t count;
};

static int
fan_request(void *arg, const struct cairn_router_request *request,
            struct cairn_router_reply *reply)
{
    struct fan *fan = arg;

    return cairn_router_forward_request_all(fan->forwards, fan->count, request,
                                            reply);
}

/*
 * Every write reaches both destinations; OK only when both meet policy.
 * The second destination has nodes of its own (s1..s3), as an offsite
 * copy would: a node keeps one stream per user.
 */
static void
test_destinations(void)
{
    static const char *const second_names[MAX_NODES] = {"s1", "s2", "s3"};
    struct cluster cluster = {0};
    struct cairn_node_server *second_servers[MAX_NODES] = {NULL};
    struct cairn_ring_node_spec specs[MAX_NODES] = {
        {"s1", 1, "z1"}, {"s2", 1, "z2"}, {"s3", 1, "z3"}};
    struct cairn_router_forward_node nodes[MAX_NODES];
    struct cairn_router_forward_settings second = {
        .destination = "second",
        .nodes = nodes,
        .node_count = 3,
        .timeout_ms = 2000,
        .ack = CAIRN_ROUTER_ACK_ONE,
    };
    struct cairn_ring *ring = NULL;
    char ring_path[160], error[256] = "";
    struct fan fan = {.count = 2};
    struct cairn_buf text;
    int fd;

    CHECK_INT(cluster_start(&cluster, 3, 1, CAIRN_ROUTER_ACK_ALL, 2000), 0);
    snprintf(ring_path, sizeof(ring_path), "%s/second.ring", cluster.dir);
    CHECK_INT(cairn_ring_new("second", 3, 0, specs, 3, &ring), 0);
    CHECK_INT(cairn_ring_save(ring, ring_path), 0);
    cairn_ring_free(ring);
    for (size_t i = 0; i < 3; i++) {
        char data[128];
        struct cairn_node_server_settings settings = {
            .name = second_names[i],
            .endpoint = "tcp://127.0.0.1:*",
            .data_dir = data,
        };

        snprintf(data, sizeof(data), "%s/%s", cluster.dir, second_names[i]);
        CHECK_INT(cairn_node_server_new(cluster.fixture.loop, NULL, &settings,
                                        &second_servers[i], error,
                                        sizeof(error)),
                  0);
        nodes[i] = (struct cairn_router_forward_node){
            second_names[i], second_servers[i]
                                 ? cairn_node_server_endpoint(second_servers[i])
                                 : "tcp://127.0.0.1:1"};
    }
    second.ring_file = ring_path;
    CHECK_INT(cairn_router_forward_new(cluster.fixture.loop, &second,
                                       &fan.forwards[1], error, sizeof(error)),
              0);
    fan.forwards[0] = cluster.forward;
    cairn_router_set_request_handler(cluster.fixture.router, fan_request, &fan);
    cairn_buf_init(&text, 1 << 20);
    fd = connect_logged_in(&cluster, &text);
    CHECK_INT(exchange(&cluster, fd,
                       "APPLY RESERVE %(PARTITION default MBOXNAME "
                       "(user.anne) GUID (" HELLO_GUID "))\r\n",
                       &text),
              0);
    CHECK_STR(text.data, "* MISSING (" HELLO_GUID ")\r\nOK Success\r\n");
    CHECK_INT(exchange(&cluster, fd, SMALL_MAILBOX, &text), 0);
    CHECK_STR(text.data, "OK Success\r\n");
    /* The second destination has it too: ask it alone. */
    cairn_router_set_request_handler(
        cluster.fixture.router, cairn_router_forward_request, fan.forwards[1]);
    CHECK_INT(exchange(&cluster, fd, "GET USER anne\r\n", &text), 0);
    CHECK(strstr(text.data, "* MAILBOX %(UNIQUEID u1 ") != NULL);
    /* main's only replica stops: second still meets "one", main fails. */
    stop_replica(&cluster, "anne", 0);
    cairn_router_set_request_handler(cluster.fixture.router, fan_request, &fan);
    CHECK_INT(exchange(&cluster, fd, SMALL_MAILBOX, &text), 0);
    CHECK(strncmp(text.data, "NO IMAP_MAILBOX_LOCKED ", 23) == 0);
    /* GET: from the first destination alone. */
    CHECK_INT(exchange(&cluster, fd, "GET USER anne\r\n", &text), 0);
    CHECK(strncmp(text.data, "NO IMAP_MAILBOX_LOCKED ", 23) == 0);
    close(fd);
    cairn_buf_release(&text);
    cairn_router_free(cluster.fixture.router);
    cluster.fixture.router = NULL;
    cairn_router_forward_free(fan.forwards[1]);
    for (size_t i = 0; i < 3; i++)
        cairn_node_server_free(second_servers[i]);
    cluster_stop(&cluster);
}

int
main(void)
{
    test_destinations();
    test_sequences();
    test_ordered_stream();
    test_ack_policies();
    test_lagging_replica();
    test_marks_survive_restart();
    test_ring_reload();
    test_big_mailbox();
    return check_exit("test_forward_multi");
}
