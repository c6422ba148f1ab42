/*
 * test_router_lifecycle.c - the router's life around its sessions: two
 * channels with their own credentials, reload without dropping
 * connections, and answers that a request handler gives later.
 */
#include "session_util.h"

/*
 * Two channels with their own credentials in one router: each accepts only
 * its own identity (the in-process password store is per connection).
 */
static void
test_two_channels(void)
{
    static const char *const plain[] = {"PLAIN"};
    struct cairn_router_channel_settings channels[2] = {
        {.name = "backup",
         .listen = "127.0.0.1:0",
         .sasl_user = "repluser",
         .sasl_password = "replpass",
         .mechanisms = plain,
         .mechanism_count = 1},
        {.name = "offsite",
         .listen = "127.0.0.1:0",
         .sasl_user = "offsite",
         .sasl_password = "offpass",
         .mechanisms = plain,
         .mechanism_count = 1},
    };
    struct cairn_router_settings settings = {.servername = SERVERNAME,
                                             .channels = channels,
                                             .channel_count = 2,
                                             .failed_login_pause_ms = 1};
    /* \0offsite\0offpass */
    static const char offsite_login[] =
        "AUTHENTICATE PLAIN AG9mZnNpdGUAb2ZmcGFzcw==\r\n";
    struct fixture fixture = {0};
    struct cairn_buf text;
    bool closed = false;
    char error[256] = "";
    int backup, offsite;

    CHECK_INT(cairn_loop_new(&fixture.loop), 0);
    CHECK_INT(cairn_router_new(fixture.loop, &settings, &fixture.router, error,
                               sizeof(error)),
              0);
    CHECK(cairn_router_port(fixture.router, 0) !=
          cairn_router_port(fixture.router, 1));
    CHECK_INT(cairn_router_port(fixture.router, 2), 0);
    cairn_buf_init(&text, 1 << 16);
    backup = client_connect(cairn_router_port(fixture.router, 0));
    offsite = client_connect(cairn_router_port(fixture.router, 1));
    receive(&fixture, backup, NULL, &text, &closed);
    CHECK(strncmp(text.data, "* SASL PLAIN\r\n", 14) == 0);
    receive(&fixture, offsite, NULL, &text, &closed);
    /* libsasl2's words, as backupd sends them: "NO user not found". */
    send_text(backup, NULL, offsite_login);
    receive(&fixture, backup, NULL, &text, &closed);
    CHECK_STR(text.data, "NO user not found\r\n");
    send_text(offsite, NULL, "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n");
    receive(&fixture, offsite, NULL, &text, &closed);
    CHECK_STR(text.data, "NO user not found\r\n");
    send_text(offsite, NULL, offsite_login);
    receive(&fixture, offsite, NULL, &text, &closed);
    CHECK_STR(text.data, "OK Success (no protection)\r\n");
    send_text(backup, NULL, "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n");
    receive(&fixture, backup, NULL, &text, &closed);
    CHECK_STR(text.data, "OK Success (no protection)\r\n");
    close(backup);
    close(offsite);
    cairn_buf_release(&text);
    fixture_close(&fixture);
}

/*
 * Listen addresses: a malformed one is refused at start with the channel,
 * the address and the forms that work. ("*", names and IPv6 "[addr]:port"
 * go through the same getaddrinfo(); tests bind nothing but 127.0.0.1.)
 */
static void
test_listen_addresses(void)
{
    static const struct {
        const char *listen;
        bool ok;
    } cases[] = {
        {"127.0.0.1:0", true},      {"[::1", false},
        {"[::1]", false},           {"[]:0", false},
        {"[zz::1]:0", false},       {"127.0.0.1", false},
        {"127.0.0.1:65536", false}, {":0", false},
        {"256.1.1.1:0", false},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cairn_router_channel_settings channel = {
            .name = "backup",
            .listen = cases[i].listen,
            .sasl_user = "repluser",
            .sasl_password = "replpass",
        };
        struct cairn_router_settings settings = {
            .servername = SERVERNAME, .channels = &channel, .channel_count = 1};
        struct cairn_loop *loop = NULL;
        struct cairn_router *router = NULL;
        char error[256] = "";
        int rc;

        CHECK_INT(cairn_loop_new(&loop), 0);
        rc = cairn_router_new(loop, &settings, &router, error, sizeof(error));
        CHECK_INT(rc == 0, cases[i].ok);
        if (!cases[i].ok) {
            CHECK(strstr(error, "bad listen address") != NULL);
            CHECK(strstr(error, cases[i].listen) != NULL);
        } else if (router != NULL) {
            CHECK(cairn_router_port(router, 0) != 0);
        }
        if ((rc == 0) != cases[i].ok)
            fprintf(stderr, "  listen '%s': %s\n", cases[i].listen, error);
        cairn_router_free(router);
        cairn_loop_free(loop);
    }
}

/*
 * Reload: credentials change for new connections, an open session goes on,
 * a new channel starts listening, a bad reload changes nothing, and a
 * dropped channel stops accepting while its session stays up.
 */
static void
test_reload(void)
{
    static const char *const plain[] = {"PLAIN"};
    static const char *const bogus[] = {"NO-SUCH-MECH"};
    /* \0newuser\0newpass */
    static const char new_login[] =
        "AUTHENTICATE PLAIN AG5ld3VzZXIAbmV3cGFzcw==\r\n";
    static const char old_login[] = "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n";
    char listen[32], error[256] = "";
    struct cairn_router_channel_settings channels[2] = {
        {.name = "backup",
         .listen = listen,
         .sasl_user = "repluser",
         .sasl_password = "replpass",
         .mechanisms = plain,
         .mechanism_count = 1},
        {.name = "offsite",
         .listen = "127.0.0.1:0",
         .sasl_user = "newuser",
         .sasl_password = "newpass",
         .mechanisms = plain,
         .mechanism_count = 1},
    };
    struct cairn_router_settings settings = {.servername = SERVERNAME,
                                             .channels = channels,
                                             .channel_count = 1,
                                             .failed_login_pause_ms = 1};
    struct fixture fixture = {0};
    struct cairn_buf text;
    bool closed = false;
    uint16_t port;
    int first, fd;

    snprintf(listen, sizeof(listen), "127.0.0.1:%u", (unsigned)free_port());
    cairn_buf_init(&text, 1 << 16);
    CHECK_INT(cairn_loop_new(&fixture.loop), 0);
    CHECK_INT(cairn_router_new(fixture.loop, &settings, &fixture.router, error,
                               sizeof(error)),
              0);
    port = cairn_router_port(fixture.router, 0);
    first = login(&fixture, port, old_login, &text);
    CHECK_STR(text.data, "OK Success (no protection)\r\n");

    /* New credentials on the same address, and a second channel. */
    channels[0].sasl_user = "newuser";
    channels[0].sasl_password = "newpass";
    settings.channel_count = 2;
    CHECK_INT(
        cairn_router_reload(fixture.router, &settings, error, sizeof(error)),
        0);
    CHECK_INT(cairn_router_port(fixture.router, 0), port);
    CHECK(cairn_router_port(fixture.router, 1) != 0);
    send_text(first, NULL, "NOOP\r\n");
    receive(&fixture, first, NULL, &text, &closed);
    CHECK_STR(text.data, "OK Noop completed\r\n");
    fd = login(&fixture, port, old_login, &text);
    CHECK_STR(text.data, "NO user not found\r\n");
    close(fd);
    fd = login(&fixture, port, new_login, &text);
    CHECK_STR(text.data, "OK Success (no protection)\r\n");
    close(fd);
    fd =
        login(&fixture, cairn_router_port(fixture.router, 1), new_login, &text);
    CHECK_STR(text.data, "OK Success (no protection)\r\n");
    close(fd);

    /* A reload that cannot work changes nothing. */
    channels[0].mechanisms = bogus;
    CHECK_INT(
        cairn_router_reload(fixture.router, &settings, error, sizeof(error)),
        CAIRN_ECONFIG);
    CHECK(error[0] != '\0');
    fd = login(&fixture, port, new_login, &text);
    CHECK_STR(text.data, "OK Success (no protection)\r\n");
    close(fd);

    /* Dropping the channel closes its listener, not its sessions. */
    channels[0] = channels[1];
    settings.channel_count = 1;
    CHECK_INT(
        cairn_router_reload(fixture.router, &settings, error, sizeof(error)),
        0);
    cairn_loop_run_once(fixture.loop, 10);
    CHECK_INT(client_connect(port), -1);
    send_text(first, NULL, "NOOP\r\n");
    receive(&fixture, first, NULL, &text, &closed);
    CHECK_STR(text.data, "OK Noop completed\r\n");
    CHECK_INT(cairn_router_connection_count(fixture.router), 1);
    close(first);
    cairn_buf_release(&text);
    fixture_close(&fixture);
}

/* A handler that answers later: it keeps the reply and says EAGAIN. */
struct deferred {
    struct cairn_router_reply *reply;
    char path[512];
};

static int
on_deferred_request(void *arg, const struct cairn_router_request *request,
                    struct cairn_router_reply *reply)
{
    struct deferred *deferred = arg;
    const struct cairn_dlist *item = cairn_dlist_first(request->message);
    void *handle = NULL;

    deferred->reply = reply;
    if (cairn_dlist_file_info(item, NULL, NULL, NULL, &handle))
        snprintf(deferred->path, sizeof(deferred->path), "%s",
                 cairn_router_spool_file_path(handle));
    return CAIRN_EAGAIN;
}

/*
 * A deferred answer: commands pipelined behind it wait, then both answers
 * arrive in order; a connection that closes while its answer is pending
 * keeps the staged body its MAILBOX carries until the handler completes,
 * then frees it.
 */
static void
test_deferred_reply(void)
{
    char dir[] = "/tmp/cairn-test-deferred-XXXXXX";
    struct deferred deferred = {0};
    struct cairn_dlist *lsub = cairn_dlist_new_list("LSUB");
    struct fixture fixture;
    struct cairn_buf text;
    bool closed = false;
    int fd;

    CHECK(mkdtemp(dir) != NULL);
    CHECK_INT(fixture_open_spool(&fixture, 0, 0, 0, dir, 1 << 20), 0);
    cairn_router_set_request_handler(fixture.router, on_deferred_request,
                                     &deferred);
    cairn_buf_init(&text, 1 << 16);
    fd = login(&fixture, fixture.port, "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n",
               &text);
    send_text(fd, NULL, "GET USER anne\r\nNOOP\r\n");
    CHECK(quiet(&fixture, fd, 100));
    CHECK(deferred.reply != NULL);
    cairn_dlist_add_atom(lsub, NULL, "user.anne.Sent");
    CHECK_INT(cairn_router_reply_untagged(deferred.reply, lsub), 0);
    CHECK_INT(cairn_router_reply_complete(deferred.reply, CAIRN_CSYNC_OK,
                                          CAIRN_CSYNC_CODE_NONE, "Success"),
              0);
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK_STR(text.data, "* LSUB (user.anne.Sent)\r\nOK Success\r\n");
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK_STR(text.data, "OK Noop completed\r\n");

    deferred.reply = NULL;
    send_text(fd, NULL,
              "APPLY MESSAGE (%{default " HELLO_GUID " 5}\r\nhello)\r\n");
    receive(&fixture, fd, NULL, &text, &closed);
    CHECK_STR(text.data, "OK Success\r\n"); /* staged */
    CHECK(deferred.reply == NULL);
    send_text(fd, NULL, MAILBOX_NAMING("user.anne", HELLO_GUID));
    CHECK(quiet(&fixture, fd, 50));
    CHECK(deferred.reply != NULL);
    CHECK(deferred.path[0] != '\0'); /* the body came with the MAILBOX */
    close(fd);
    for (int i = 0; i < 100 && cairn_router_connection_count(fixture.router);
         i++)
        cairn_loop_run_once(fixture.loop, 5);
    CHECK_INT(cairn_router_connection_count(fixture.router), 0);
    CHECK(access(deferred.path, F_OK) == 0); /* still needed by the handler */
    CHECK_INT(cairn_router_reply_untagged(deferred.reply, lsub), CAIRN_EIO);
    CHECK_INT(cairn_router_reply_complete(deferred.reply, CAIRN_CSYNC_OK,
                                          CAIRN_CSYNC_CODE_NONE, "Success"),
              0);
    CHECK(access(deferred.path, F_OK) != 0);
    CHECK_U64(cairn_router_spool_used(fixture.router->spool), 0);
    cairn_dlist_free(lsub);
    cairn_buf_release(&text);
    fixture_close(&fixture);
    CHECK_INT(rmdir(dir), 0);
}

static void
timed(const char *name, void (*test)(void))
{
    uint64_t started = cairn_loop_now_ms();

    test();
    printf("%s: %llu ms\n", name,
           (unsigned long long)(cairn_loop_now_ms() - started));
}

int
main(void)
{
    timed("two_channels", test_two_channels);
    timed("listen_addresses", test_listen_addresses);
    timed("reload", test_reload);
    timed("deferred_reply", test_deferred_reply);
    return check_exit("test_router_lifecycle");
}
