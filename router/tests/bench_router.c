/*
 * bench_router.c - figures for the session layer over loopback TCP: NOOP
 * round trips per second, and APPLY MESSAGE throughput into the spool
 * (1 MiB bodies, SHA-1 checked) without and with COMPRESS DEFLATE, with the
 * process's peak RSS to show bodies are streamed, not held. The router
 * runs on the main thread's loop; the client is a second thread with
 * blocking sockets. Prints figures; never asserts on time.
 */
#include "check.h"
#include "router_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BODY_SIZE (1 << 20)
#define BODIES 64
#define NOOPS 20000

struct client {
    uint16_t port;
    atomic_bool done;
    double noops_per_second;
    double plain_mib_per_second;
    double compressed_mib_per_second;
    int failures;
};

static double
seconds_now(void)
{
    return (double)cairn_loop_now_ms() / 1000.0;
}

/* Reads until the reply ends with CRLF (the bench's replies are single). */
static int
read_reply(int fd, struct cairn_compress *compress, struct cairn_buf *text)
{
    char wire[65536];

    cairn_buf_reset(text);
    while (text->len < 2 || memcmp(text->data + text->len - 2, "\r\n", 2)) {
        ssize_t got = read(fd, wire, sizeof(wire));
        size_t consumed = 0;

        if (got <= 0)
            return CAIRN_EIO;
        if (compress == NULL) {
            if (cairn_buf_append(text, wire, (size_t)got) < 0)
                return CAIRN_ETOOBIG;
        } else if (cairn_compress_inflate(compress, wire, (size_t)got,
                                          &consumed, 1 << 20, text) < 0) {
            return CAIRN_EPARSE;
        }
    }
    return text->data[0] == 'O' ? CAIRN_OK : CAIRN_EPROTO;
}

static int
send_all(int fd, struct cairn_compress *compress, const void *data, size_t len,
         bool flush, struct cairn_buf *wire)
{
    cairn_buf_reset(wire);
    if (compress == NULL)
        return cairn_write_all(fd, data, len);
    if (cairn_compress_deflate(compress, data, len, flush, wire) < 0)
        return CAIRN_EIO;
    return cairn_write_all(fd, wire->data, wire->len);
}

static double
send_messages(int fd, struct cairn_compress *compress, const char *body,
              const char *guid, struct cairn_buf *text, struct cairn_buf *wire,
              int *failures)
{
    char header[128], mailbox[256];
    double started = seconds_now();

    for (int i = 0; i < BODIES; i++) {
        int n =
            snprintf(header, sizeof(header),
                     "APPLY MESSAGE (%%{default %s %d}\r\n", guid, BODY_SIZE);
        /* The MAILBOX naming the body takes it from the stage. */
        int m = snprintf(mailbox, sizeof(mailbox),
                         "APPLY MAILBOX %%(UNIQUEID u1 MBOXNAME user.anne "
                         "RECORD (%%(UID %d GUID %s)))\r\n",
                         i + 1, guid);

        if (send_all(fd, compress, header, (size_t)n, false, wire) < 0 ||
            send_all(fd, compress, body, BODY_SIZE, false, wire) < 0 ||
            send_all(fd, compress, ")\r\n", 3, true, wire) < 0 ||
            read_reply(fd, compress, text) < 0 ||
            send_all(fd, compress, mailbox, (size_t)m, true, wire) < 0 ||
            read_reply(fd, compress, text) < 0)
            (*failures)++;
    }
    return BODIES * (double)BODY_SIZE / (1 << 20) / (seconds_now() - started);
}

static void *
run_client(void *arg)
{
    struct client *client = arg;
    struct sockaddr_in address = {.sin_family = AF_INET,
                                  .sin_port = htons(client->port)};
    struct cairn_compress *compress = NULL;
    struct cairn_buf text, wire;
    unsigned char sha1[EVP_MAX_MD_SIZE];
    unsigned int sha1_len = 0;
    char guid[41], *body = malloc(BODY_SIZE);
    double started;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    cairn_buf_init(&text, 1 << 20);
    cairn_buf_init(&wire, 4 << 20);
    /* Incompressible bytes: the worst case for COMPRESS. */
    for (size_t i = 0; i < BODY_SIZE; i++)
        body[i] = (char)(rand() & 0xff);
    EVP_Digest(body, BODY_SIZE, sha1, &sha1_len, EVP_sha1(), NULL);
    for (unsigned int i = 0; i < sha1_len; i++)
        snprintf(guid + 2 * i, 3, "%02x", sha1[i]);
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (connect(fd, (struct sockaddr *)&address, sizeof(address)) < 0)
        client->failures++;
    cairn_buf_reset(&text);
    /* Banner (three lines, ends in CRLF), login, a user to own bodies. */
    while (strstr(text.data ? text.data : "", "* OK ") == NULL) {
        char chunk[1024];
        ssize_t got = read(fd, chunk, sizeof(chunk));

        if (got <= 0)
            break;
        cairn_buf_append(&text, chunk, (size_t)got);
    }
    cairn_write_all(fd, "AUTHENTICATE PLAIN AHJlcGx1c2VyAHJlcGxwYXNz\r\n", 45);
    client->failures += read_reply(fd, NULL, &text) < 0;
    cairn_write_all(fd, "GET USER anne\r\n", 15);
    client->failures += read_reply(fd, NULL, &text) < 0;

    started = seconds_now();
    for (int i = 0; i < NOOPS; i++) {
        cairn_write_all(fd, "NOOP\r\n", 6);
        client->failures += read_reply(fd, NULL, &text) < 0;
    }
    client->noops_per_second = NOOPS / (seconds_now() - started);
    client->plain_mib_per_second =
        send_messages(fd, NULL, body, guid, &text, &wire, &client->failures);

    cairn_write_all(fd, "COMPRESS DEFLATE\r\n", 18);
    client->failures += read_reply(fd, NULL, &text) < 0;
    cairn_compress_new(&compress);
    client->compressed_mib_per_second = send_messages(
        fd, compress, body, guid, &text, &wire, &client->failures);
    cairn_compress_free(compress);
    close(fd);
    free(body);
    cairn_buf_release(&text);
    cairn_buf_release(&wire);
    atomic_store(&client->done, true);
    return NULL;
}

/* What the handler saw of the bodies: staged, then sent with a MAILBOX. */
struct delivered {
    int verified, unverified;
};

static int
accept_all(void *arg, const struct cairn_router_request *request,
           struct cairn_router_reply *reply)
{
    struct delivered *delivered = arg;

    for (const struct cairn_dlist *item = cairn_dlist_first(request->message);
         item != NULL; item = cairn_dlist_next(item)) {
        void *handle = NULL;

        if (!cairn_dlist_file_info(item, NULL, NULL, NULL, &handle))
            continue;
        if (cairn_router_spool_file_verified(handle))
            delivered->verified++;
        else
            delivered->unverified++;
    }
    return cairn_router_reply_complete(reply, CAIRN_CSYNC_OK,
                                       CAIRN_CSYNC_CODE_NONE, "Success");
}

int
main(void)
{
    char dir[] = "/tmp/cairn-bench-spool-XXXXXX";
    struct cairn_router_channel_settings channel = {
        .name = "backup",
        .listen = "127.0.0.1:0",
        .sasl_user = "repluser",
        .sasl_password = "replpass",
        .compress = true,
    };
    struct cairn_router_settings settings = {
        .servername = "bench.cairn",
        .channels = &channel,
        .channel_count = 1,
        .spool_dir = dir,
    };
    struct cairn_loop *loop = NULL;
    struct cairn_router *router = NULL;
    struct client client = {0};
    struct rusage usage;
    pthread_t thread;
    char error[256] = "";
    struct delivered delivered = {0};

    CHECK(mkdtemp(dir) != NULL);
    CHECK_INT(cairn_loop_new(&loop), 0);
    CHECK_INT(cairn_router_new(loop, &settings, &router, error, sizeof(error)),
              0);
    cairn_router_set_request_handler(router, accept_all, &delivered);
    client.port = cairn_router_port(router, 0);
    pthread_create(&thread, NULL, run_client, &client);
    while (!atomic_load(&client.done))
        cairn_loop_run_once(loop, 10);
    pthread_join(thread, NULL);
    getrusage(RUSAGE_SELF, &usage);
    printf("NOOP round trips: %.0f/s (%d sequential)\n",
           client.noops_per_second, NOOPS);
    printf("APPLY MESSAGE into the spool (SHA-1 checked, staged) and out "
           "with its APPLY MAILBOX, %d x 1 MiB: "
           "%.0f MiB/s plain, %.0f MiB/s with COMPRESS DEFLATE "
           "(incompressible bodies)\n",
           BODIES, client.plain_mib_per_second,
           client.compressed_mib_per_second);
    printf("peak RSS of router + client: %ld MiB (bodies sent: %d MiB)\n",
           usage.ru_maxrss / 1024, 2 * BODIES);
    CHECK_INT(client.failures, 0);
    CHECK_INT(delivered.verified, 2 * BODIES);
    CHECK_INT(delivered.unverified, 0);
    CHECK_U64(cairn_router_spool_used(router->spool), 0);
    cairn_router_free(router);
    cairn_loop_free(loop);
    CHECK_INT(rmdir(dir), 0);
    return check_exit("bench_router");
}
