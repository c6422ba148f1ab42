/*
 * test_forward_stamp.c - one time per update (DESIGN.md): the router
 * stamps each write once and every replica writes that stamp, whatever
 * its own clock says. Two in-process nodes hold anne (2 replicas, ack
 * all); the forward's clock is the test's: a record expunged at the
 * stamp T+1 (the write "crossing a second boundary"), a subscription
 * dropped while the router's clock went back (its stamp stays at T+1).
 * Both replicas' index times (cairn_store_each_time, what VERIFY's
 * digest covers) are then equal line for line and name the stamps, not
 * the nodes' clocks.
 */
#include "forward_int.h"
#include "node.h"
#include "node_server.h"
#include "placement.h"
#include "session_util.h"

#include <stdio.h>

#define STAMP 1700000000 /* long past: never a node's own clock */

#define ANNE_MAILBOX(flags)                                                    \
    "APPLY MAILBOX %(UNIQUEID u1 MBOXNAME user.anne LAST_UID 1 "               \
    "HIGHESTMODSEQ 3 RECENTUID 1 RECENTTIME 1795668590 LAST_APPENDDATE "       \
    "1795668590 POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY 1795668591 "   \
    "PARTITION default ACL \"anne\tlrswipkxtecdan\t\" OPTIONS P SYNC_CRC 0 "   \
    "SYNC_CRC_ANNOT 0 RECORD (%(UID 1 MODSEQ 3 LAST_UPDATED 1795668590 "       \
    "FLAGS (" flags ") INTERNALDATE 1795668590 SIZE 5 GUID " HELLO_GUID        \
    ")))\r\n"

struct two_nodes {
    char dir[64];
    char ring_path[128];
    char data[2][96];
    struct cairn_node_server *servers[2];
    struct cairn_router_forward *forward;
    struct fixture fixture;
    int64_t clock; /* the forward's clock */
};

static int64_t
test_clock(void *arg)
{
    return ((struct two_nodes *)arg)->clock;
}

static int
two_nodes_start(struct two_nodes *nodes)
{
    static const char *const names[2] = {"n1", "n2"};
    struct cairn_ring_node_spec specs[2] = {{"n1", 1, "z1"}, {"n2", 1, "z2"}};
    struct cairn_router_forward_node endpoints[2];
    struct cairn_router_forward_settings forward = {
        .destination = "main",
        .ring_file = nodes->ring_path,
        .nodes = endpoints,
        .node_count = 2,
        .timeout_ms = 8000,
        .ack = CAIRN_ROUTER_ACK_ALL,
    };
    struct cairn_ring *ring = NULL;
    char spool[96], error[256] = "";
    int rc;

    snprintf(nodes->dir, sizeof(nodes->dir), "/tmp/cairn-test-stamp-XXXXXX");
    if (mkdtemp(nodes->dir) == NULL)
        return CAIRN_EIO;
    snprintf(nodes->ring_path, sizeof(nodes->ring_path), "%s/main.ring",
             nodes->dir);
    snprintf(spool, sizeof(spool), "%s/spool", nodes->dir);
    if ((rc = fixture_open_spool(&nodes->fixture, 0, 0, 0, spool, 1 << 20)) <
            0 ||
        (rc = cairn_ring_new("main", 2, 0, specs, 2, &ring)) < 0 ||
        (rc = cairn_ring_save(ring, nodes->ring_path)) < 0)
        goto out;
    for (size_t i = 0; i < 2 && rc == 0; i++) {
        struct cairn_node_server_settings settings = {
            .name = names[i],
            .endpoint = "tcp://127.0.0.1:*",
            .data_dir = nodes->data[i],
        };

        snprintf(nodes->data[i], sizeof(nodes->data[i]), "%s/%s", nodes->dir,
                 names[i]);
        rc = cairn_node_server_new(nodes->fixture.loop, NULL, &settings,
                                   &nodes->servers[i], error, sizeof(error));
        if (rc == 0)
            endpoints[i] = (struct cairn_router_forward_node){
                names[i], cairn_node_server_endpoint(nodes->servers[i])};
    }
    if (rc == 0)
        rc = cairn_router_forward_new(nodes->fixture.loop, &forward,
                                      &nodes->forward, error, sizeof(error));
    if (rc == 0) {
        cairn_router_forward_set_clock(nodes->forward, test_clock, nodes);
        cairn_router_set_request_handler(nodes->fixture.router,
                                         cairn_router_forward_request,
                                         nodes->forward);
    }
out:
    if (rc < 0)
        fprintf(stderr, "two_nodes_start: %s %s\n", error, cairn_strerror(rc));
    cairn_ring_free(ring);
    return rc;
}

/* Stops the router and the nodes; the data stays until cleanup. */
static void
two_nodes_stop(struct two_nodes *nodes)
{
    uint64_t deadline = cairn_loop_now_ms() + 20000;

    while (cairn_router_forward_in_flight(nodes->forward) > 0 &&
           cairn_loop_now_ms() < deadline)
        cairn_loop_run_once(nodes->fixture.loop, 10);
    cairn_router_free(nodes->fixture.router);
    cairn_router_forward_free(nodes->forward);
    for (size_t i = 0; i < 2; i++)
        cairn_node_server_free(nodes->servers[i]);
    cairn_loop_free(nodes->fixture.loop);
}

static int
keep_line(void *ctx, const char *line)
{
    struct cairn_buf *lines = ctx;

    return cairn_buf_printf(lines, "%s\n", line);
}

/* The index times of anne's backup under data_dir, into lines. */
static void
read_times(const char *data_dir, struct cairn_buf *lines)
{
    struct cairn_catalog *catalog = NULL;
    struct cairn_store *store = NULL;
    char catalog_path[160], *data_path = NULL;

    snprintf(catalog_path, sizeof(catalog_path), "%s/catalog.db", data_dir);
    CHECK_INT(cairn_catalog_open(catalog_path, &catalog), 0);
    CHECK_INT(cairn_catalog_lookup(catalog, "anne", &data_path), 0);
    CHECK_INT(cairn_store_open(data_path, 0, &store), 0);
    CHECK_INT(cairn_store_each_time(store, keep_line, lines), 0);
    cairn_store_close(store);
    cairn_catalog_free(catalog);
    free(data_path);
}

/* Sends command while the clock reads clock; the answer must be OK. */
static void
write_at(struct two_nodes *nodes, int fd, int64_t clock, const char *command)
{
    struct cairn_buf text;
    bool closed = false;

    cairn_buf_init(&text, 1 << 16);
    nodes->clock = clock;
    send_text(fd, NULL, command);
    receive(&nodes->fixture, fd, NULL, &text, &closed);
    if (text.data == NULL || strcmp(text.data, "OK Success\r\n") != 0)
        fprintf(stderr, "for %s", command);
    CHECK_STR(text.data ? text.data : "", "OK Success\r\n");
    cairn_buf_release(&text);
}

static void
test_replicas_write_the_stamp(void)
{
    struct two_nodes nodes = {0};
    struct cairn_buf text, first, second;
    char command[200];
    bool closed = false;
    int fd;

    CHECK_INT(two_nodes_start(&nodes), 0);
    cairn_buf_init(&text, 1 << 16);
    cairn_buf_init(&first, 1 << 16);
    cairn_buf_init(&second, 1 << 16);
    fd = login(&nodes.fixture, nodes.fixture.port,
               "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n", &text);
    CHECK(fd >= 0);
    nodes.clock = STAMP;
    send_text(fd, NULL,
              "APPLY RESERVE %(PARTITION default MBOXNAME (user.anne) GUID "
              "(" HELLO_GUID "))\r\n");
    receive(&nodes.fixture, fd, NULL, &text, &closed);
    CHECK_STR(text.data ? text.data : "",
              "* MISSING (" HELLO_GUID ")\r\nOK Success\r\n");
    write_at(&nodes, fd, STAMP,
             "APPLY MESSAGE (%{default " HELLO_GUID " 5}\r\nhello)\r\n");
    write_at(&nodes, fd, STAMP, ANNE_MAILBOX(""));
    write_at(&nodes, fd, STAMP,
             "APPLY SUB %(USERID anne MBOXNAME user.anne)\r\n");
    /* The next second: the expunge. */
    write_at(&nodes, fd, STAMP + 1, ANNE_MAILBOX("\\Expunged"));
    /* The router's clock went back 10 s: its stamps do not. */
    write_at(&nodes, fd, STAMP - 9,
             "APPLY UNSUB %(USERID anne MBOXNAME user.anne)\r\n");
    close(fd);
    two_nodes_stop(&nodes);

    read_times(nodes.data[0], &first);
    read_times(nodes.data[1], &second);
    CHECK_STR(first.data ? first.data : "", second.data ? second.data : "");
    snprintf(command, sizeof(command),
             "mailbox u1 user.anne -\n"
             "record u1 1 " HELLO_GUID " %d\n"
             "subscription user.anne %d\n",
             STAMP + 1, STAMP + 1);
    CHECK_STR(first.data ? first.data : "", command);

    snprintf(command, sizeof(command), "rm -rf %s", nodes.dir);
    CHECK_INT(system(command), 0);
    cairn_buf_release(&text);
    cairn_buf_release(&first);
    cairn_buf_release(&second);
}

int
main(void)
{
    test_replicas_write_the_stamp();
    return check_exit("test_forward_stamp");
}
