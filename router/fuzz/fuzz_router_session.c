/*
 * fuzz_router_session.c - libFuzzer target for the csync command reader
 * with a whole router session behind it: one router runs in this process
 * (a spool directory of its own, removed at exit; no compression, so the
 * fuzzer's bytes are what the reader reads), and each input is one
 * connection: AUTHENTICATE PLAIN with the channel's credentials, then the
 * input bytes as sent by a client, then the client's half-close; the
 * loop runs until the router closes the connection. Requests the router
 * would forward are answered OK at once by a stub handler that checks
 * each resolved owner is a safe storage key. The property checked: no
 * input crashes the router, trips ASan/UBSan or leaks, and every
 * connection ends. Seeds: router/fuzz/corpus (recorded sync_client
 * commands). Build with -DCAIRN_FUZZ=ON and clang.
 */
#include "router.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* \0repluser\0replpass */
#define LOGIN "AUTHENTICATE PLAIN AHJlcGx1c2VyAHJlcGxwYXNz\r\n"

static struct {
    struct cairn_loop *loop;
    struct cairn_router *router;
    uint16_t port;
} fuzz;

static char dir[] = "/tmp/cairn-fuzz-router-XXXXXX";

static void
remove_spool(void)
{
    char command[sizeof(dir) + 16];

    cairn_router_free(fuzz.router);
    cairn_loop_free(fuzz.loop);
    snprintf(command, sizeof(command), "rm -rf %s", dir);
    if (system(command) != 0)
        fprintf(stderr, "fuzz_router_session: could not remove %s\n", dir);
}

/* Answers every request OK; a resolved owner must be a safe key. */
static int
answer_ok(void *arg, const struct cairn_router_request *request,
          struct cairn_router_reply *reply)
{
    (void)arg;
    if (request->resolution != NULL && !request->resolution->owner.shared &&
        !cairn_router_userid_safe(request->resolution->owner.userid))
        abort();
    return cairn_router_reply_complete(reply, CAIRN_CSYNC_OK,
                                       CAIRN_CSYNC_CODE_NONE, "Success");
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct cairn_router_channel_settings channel = {
        .name = "fuzz",
        .listen = "127.0.0.1:0",
        .sasl_user = "repluser",
        .sasl_password = "replpass",
        .compress = false,
        .idle_timeout_ms = 2000,
    };
    struct cairn_router_settings settings = {
        .servername = "fuzz.cairn",
        .channels = &channel,
        .channel_count = 1,
        .max_output = 1 << 20,
        .max_line = 1 << 20,
        .spool_max = 64 << 20,
        .failed_login_pause_ms = 1,
    };
    char spool[sizeof(dir) + 8], error[256] = "";

    (void)argc;
    (void)argv;
    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(spool, sizeof(spool), "%s/spool", dir);
    settings.spool_dir = spool;
    if (cairn_loop_new(&fuzz.loop) < 0 ||
        cairn_router_new(fuzz.loop, &settings, &fuzz.router, error,
                         sizeof(error)) < 0) {
        fprintf(stderr, "fuzz_router_session: %s\n", error);
        abort();
    }
    cairn_router_set_request_handler(fuzz.router, answer_ok, NULL);
    fuzz.port = cairn_router_port(fuzz.router, 0);
    atexit(remove_spool);
    return 0;
}

static int
connect_router(void)
{
    struct sockaddr_in address = {.sin_family = AF_INET,
                                  .sin_port = htons(fuzz.port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof(address)) < 0)
        abort();
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char sink[65536];
    size_t sent = 0, total = strlen(LOGIN) + size;
    unsigned char *input = malloc(total ? total : 1);
    bool closed = false, half_closed = false;
    int fd = connect_router();

    if (input == NULL)
        abort();
    memcpy(input, LOGIN, strlen(LOGIN));
    memcpy(input + strlen(LOGIN), data, size);
    /* Until the router closes: the idle timeout bounds a stalled one. */
    for (int round = 0; !closed && round < 100000; round++) {
        ssize_t n;

        if (sent < total && (n = write(fd, input + sent, total - sent)) > 0)
            sent += (size_t)n;
        if (sent == total && !half_closed) {
            shutdown(fd, SHUT_WR);
            half_closed = true;
        }
        cairn_loop_run_once(fuzz.loop, 1);
        while ((n = read(fd, sink, sizeof(sink))) > 0)
            ;
        closed = n == 0;
    }
    if (!closed)
        abort(); /* the session never ended */
    close(fd);
    free(input);
    return 0;
}
