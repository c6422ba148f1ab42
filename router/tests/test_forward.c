/*
 * test_forward.c - the router forwarding to a real cairn node (the node
 * server library on the same loop, a one-node ring on disk): an unknown
 * user reads as NONEXISTENT, a message and a mailbox are stored and
 * acknowledged, GET USER then echoes the mailbox, RESERVE reports only
 * the GUID the node lacks, and a node that is down gives a NO that
 * sync_client retries; a command larger than one node frame is stored.
 */
#include "node_server.h"
#include "placement.h"
#include "session_util.h"

#include <stdio.h>

#define MAILBOX                                                                \
    "APPLY MAILBOX %(UNIQUEID u1 MBOXNAME user.anne LAST_UID 1 "               \
    "HIGHESTMODSEQ 2 RECENTUID 1 RECENTTIME 1795668590 LAST_APPENDDATE "       \
    "1795668590 POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY 1795668591 "   \
    "PARTITION default ACL \"anne\tlrswipkxtecdan\t\" OPTIONS P SYNC_CRC 0 "   \
    "SYNC_CRC_ANNOT 0 RECORD (%(UID 1 MODSEQ 2 LAST_UPDATED 1795668590 "       \
    "FLAGS () INTERNALDATE 1795668590 SIZE 5 GUID " HELLO_GUID ")))\r\n"

/* sha1("world"): a second body. */
#define WORLD_GUID "7c211433f02071597741e6ff5a8ea34789abbf43"
/* One user's mailbox whose one record names guid (a 5-byte body). */
#define USER_MAILBOX(user, guid)                                               \
    "APPLY MAILBOX %(UNIQUEID u-" user " MBOXNAME user." user " LAST_UID 1 "   \
    "HIGHESTMODSEQ 2 RECENTUID 1 RECENTTIME 1795668590 LAST_APPENDDATE "       \
    "1795668590 POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY 1795668591 "   \
    "PARTITION default ACL \"" user "\tlrswipkxtecdan\t\" OPTIONS P "          \
    "SYNC_CRC 0 SYNC_CRC_ANNOT 0 RECORD (%(UID 1 MODSEQ 2 LAST_UPDATED "       \
    "1795668590 FLAGS () INTERNALDATE 1795668590 SIZE 5 GUID " guid ")))\r\n"
#define RESERVE_OF(user, guid)                                                 \
    "APPLY RESERVE %(PARTITION default MBOXNAME (user." user ") GUID (" guid   \
    "))\r\n"

struct node_fixture {
    char dir[64];
    char ring_path[128];
    struct cairn_node_server *server;
    struct cairn_router_forward *forward;
};

static int
start_node(struct fixture *fixture, struct node_fixture *node,
           const char *endpoint_override, size_t max_frame)
{
    struct cairn_node_server_settings settings = {
        .name = "node1",
        .endpoint = "tcp://127.0.0.1:*",
        .data_dir = node->dir,
    };
    struct cairn_ring_node_spec spec = {"node1", 1, "zone1"};
    struct cairn_router_forward_node endpoint = {"node1", NULL};
    struct cairn_router_forward_settings forward = {
        .destination = "main",
        .ring_file = node->ring_path,
        .nodes = &endpoint,
        .node_count = 1,
        .timeout_ms = 2000,
        .max_frame = max_frame,
    };
    struct cairn_ring *ring = NULL;
    char error[256] = "";
    int rc;

    snprintf(node->ring_path, sizeof(node->ring_path), "%s/main.ring",
             node->dir);
    if ((rc = cairn_ring_new("main", 1, 0, &spec, 1, &ring)) < 0 ||
        (rc = cairn_ring_save(ring, node->ring_path)) < 0)
        goto out;
    if (endpoint_override == NULL) {
        rc = cairn_node_server_new(fixture->loop, NULL, &settings,
                                   &node->server, error, sizeof(error));
        if (rc < 0)
            goto out;
        endpoint.endpoint = cairn_node_server_endpoint(node->server);
    } else {
        endpoint.endpoint = endpoint_override;
    }
    rc = cairn_router_forward_new(fixture->loop, &forward, &node->forward,
                                  error, sizeof(error));
    if (rc == 0)
        cairn_router_set_request_handler(
            fixture->router, cairn_router_forward_request, node->forward);
out:
    if (rc < 0)
        fprintf(stderr, "start_node: %s %s\n", error, cairn_strerror(rc));
    cairn_ring_free(ring);
    return rc;
}

static void
stop_node(struct fixture *fixture, struct node_fixture *node)
{
    char command[160];

    /* The router first (it uses the forward), the loop last. */
    cairn_router_free(fixture->router);
    cairn_router_forward_free(node->forward);
    cairn_node_server_free(node->server);
    cairn_loop_free(fixture->loop);
    snprintf(command, sizeof(command), "rm -rf %s", node->dir);
    CHECK_INT(system(command), 0);
}

/*
 * A router with a spool in front of one node (node->dir made here), and a
 * client connected to it past the banner; the caller owns the rest.
 */
static int
connect_to_node(struct fixture *fixture, struct node_fixture *node,
                struct cairn_buf *text)
{
    char spool[96];
    bool closed = false;
    int fd;

    CHECK(mkdtemp(node->dir) != NULL);
    snprintf(spool, sizeof(spool), "%s/spool", node->dir);
    CHECK_INT(fixture_open_spool(fixture, 0, 0, 0, spool, 1 << 20), 0);
    CHECK_INT(start_node(fixture, node, NULL, 0), 0);
    cairn_buf_init(text, 1 << 16);
    fd = client_connect(fixture->port);
    receive(fixture, fd, NULL, text, &closed);
    return fd;
}

static void
test_store_and_read_back(void)
{
    static const struct exchange_case exchanges[] = {
        {"APPLY RESERVE %(PARTITION default MBOXNAME (user.anne) GUID "
         "(" HELLO_GUID "))\r\n",
         "* MISSING (" HELLO_GUID ")\r\nOK Success\r\n"},
        {"APPLY MESSAGE (%{default " HELLO_GUID " 5}\r\nhello)\r\n",
         "OK Success\r\n"},
        {MAILBOX, "OK Success\r\n"},
        {"APPLY RESERVE %(PARTITION default MBOXNAME (user.anne) GUID "
         "(" HELLO_GUID " " WRONG_GUID "))\r\n",
         "* MISSING (" WRONG_GUID ")\r\nOK Success\r\n"},
    };
    struct node_fixture node = {.dir = "/tmp/cairn-test-forward-XXXXXX"};
    struct fixture fixture;
    struct cairn_buf text;
    bool closed = false;
    int fd = connect_to_node(&fixture, &node, &text);
    /* Unknown so far: what backupd answers for a user it has no backup of. */
    send_text(fd, NULL, "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n");
    receive(&fixture, fd, NULL, &text, &closed);
    send_text(fd, NULL, "GET USER anne\r\n");
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK(strncmp(text.data, "NO IMAP_MAILBOX_NONEXISTENT ", 28) == 0);
    run_exchanges(&fixture, fd, NULL, exchanges,
                  sizeof(exchanges) / sizeof(exchanges[0]));
    send_text(fd, NULL, "GET USER anne\r\n");
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK(strncmp(text.data, "* MAILBOX %(UNIQUEID u1 MBOXNAME user.anne ",
                  43) == 0);
    CHECK(strstr(text.data, "\r\nOK Success\r\n") != NULL);
    close(fd);
    cairn_buf_release(&text);
    stop_node(&fixture, &node);
}

/*
 * Never mix users: a body uploaded after anne's MAILBOX belongs to bob's
 * next MAILBOX (sync_client uploads a mailbox's bodies right before it),
 * so it must reach bob's backup and not anne's (backupd writes it into
 * every backup open on the connection). The node's RESERVE answers say
 * who holds what.
 */
static void
test_users_kept_apart(void)
{
    static const struct exchange_case exchanges[] = {
        {RESERVE_OF("anne", HELLO_GUID),
         "* MISSING (" HELLO_GUID ")\r\nOK Success\r\n"},
        {"APPLY MESSAGE (%{default " HELLO_GUID " 5}\r\nhello)\r\n",
         "OK Success\r\n"},
        {USER_MAILBOX("anne", HELLO_GUID), "OK Success\r\n"},
        /* bob's body arrives while anne is the last user named */
        {"APPLY MESSAGE (%{default " WORLD_GUID " 5}\r\nworld)\r\n",
         "OK Success\r\n"},
        {USER_MAILBOX("bob", WORLD_GUID), "OK Success\r\n"},
        {RESERVE_OF("anne", HELLO_GUID " " WORLD_GUID),
         "* MISSING (" WORLD_GUID ")\r\nOK Success\r\n"},
        {RESERVE_OF("bob", HELLO_GUID " " WORLD_GUID),
         "* MISSING (" HELLO_GUID ")\r\nOK Success\r\n"},
        /* A body no MAILBOX names is stored nowhere. */
        {"APPLY MESSAGE (%{default " HELLO_GUID " 5}\r\nhello)\r\n",
         "OK Success\r\n"},
        {"APPLY SUB %(USERID bob MBOXNAME user.bob)\r\n", "OK Success\r\n"},
        {RESERVE_OF("bob", HELLO_GUID),
         "* MISSING (" HELLO_GUID ")\r\nOK Success\r\n"},
    };
    struct node_fixture node = {.dir = "/tmp/cairn-test-forward-XXXXXX"};
    struct fixture fixture;
    struct cairn_buf text;
    bool closed = false;
    int fd = connect_to_node(&fixture, &node, &text);
    send_text(fd, NULL, "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n");
    receive(&fixture, fd, NULL, &text, &closed);
    run_exchanges(&fixture, fd, NULL, exchanges,
                  sizeof(exchanges) / sizeof(exchanges[0]));
    close(fd);
    cairn_buf_release(&text);
    stop_node(&fixture, &node);
}

static void
test_node_down(void)
{
    struct node_fixture node = {.dir = "/tmp/cairn-test-forward-XXXXXX"};
    char spool[96], endpoint[64];
    struct fixture fixture;
    struct cairn_buf text;
    bool closed = false;
    int fd;

    CHECK(mkdtemp(node.dir) != NULL);
    snprintf(spool, sizeof(spool), "%s/spool", node.dir);
    snprintf(endpoint, sizeof(endpoint), "tcp://127.0.0.1:%u",
             (unsigned)free_port());
    CHECK_INT(fixture_open_spool(&fixture, 0, 0, 0, spool, 1 << 20), 0);
    CHECK_INT(start_node(&fixture, &node, endpoint, 0), 0);
    cairn_buf_init(&text, 1 << 16);
    fd = login(&fixture, fixture.port, "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n",
               &text);
    send_text(fd, NULL, "GET USER anne\r\n");
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK(strncmp(text.data ? text.data : "", "NO IMAP_MAILBOX_LOCKED ", 23) ==
          0);
    close(fd);
    cairn_buf_release(&text);
    stop_node(&fixture, &node);
}

/* A command larger than one frame travels cut in several and is stored. */
static void
test_too_big(void)
{
    struct node_fixture node = {.dir = "/tmp/cairn-test-forward-XXXXXX"};
    char spool[96];
    struct fixture fixture;
    struct cairn_buf text;
    bool closed = false;
    int fd;

    CHECK(mkdtemp(node.dir) != NULL);
    snprintf(spool, sizeof(spool), "%s/spool", node.dir);
    CHECK_INT(fixture_open_spool(&fixture, 0, 0, 0, spool, 1 << 20), 0);
    CHECK_INT(start_node(&fixture, &node, NULL, 128), 0);
    cairn_buf_init(&text, 1 << 16);
    fd = login(&fixture, fixture.port, "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n",
               &text);
    send_text(fd, NULL, MAILBOX);
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK_STR(text.data, "OK Success\r\n");
    send_text(fd, NULL, "GET USER anne\r\n");
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK(strncmp(text.data, "* MAILBOX %(UNIQUEID u1 MBOXNAME user.anne ",
                  43) == 0);
    close(fd);
    cairn_buf_release(&text);
    stop_node(&fixture, &node);
}

int
main(void)
{
    test_store_and_read_back();
    test_users_kept_apart();
    test_node_down();
    test_too_big();
    return check_exit("test_forward");
}
