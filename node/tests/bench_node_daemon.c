/*
 * bench_node_daemon.c - cairn-node throughput over loopback through the
 * node client: small APPLY MESSAGEs (4 KiB bodies) for several users with
 * different in-flight windows per user, then one large message. Prints
 * figures; asserts nothing about time (ctest label bench).
 *
 * usage: bench_node_daemon CAIRN_NODE [MESSAGES]
 */
#include "daemon_test_util.h"

#include <openssl/evp.h>

#define USERS 8
#define BODY 4096

struct bench {
    unsigned long answered, failed;
};

struct bench_message {
    char dlist[128];
    char body[BODY];
    struct cairn_node_body wire;
};

static void
on_reply(void *arg, const struct cairn_node_reply *reply)
{
    struct bench *bench = arg;

    bench->answered++;
    if (reply->status != 0)
        bench->failed++;
}

static void
make_message(struct bench_message *message, unsigned long n)
{
    unsigned char sha1[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    char guid[41];

    for (size_t i = 0; i < BODY; i++)
        message->body[i] = (char)('a' + (i * 7 + n * 13) % 26);
    snprintf(message->body, BODY, "Subject: bench %lu\r\n\r\n", n);
    message->body[strlen(message->body)] = 'x';
    EVP_Digest(message->body, BODY, sha1, &len, EVP_sha1(), NULL);
    for (unsigned i = 0; i < 20; i++)
        snprintf(guid + 2 * i, 3, "%02x", sha1[i]);
    snprintf(message->dlist, sizeof(message->dlist),
             "MESSAGE (%%{default %s %d}\r\n)", guid, BODY);
    message->wire = (struct cairn_node_body){-1, 0, message->body, BODY};
}

static void
run_small(const char *endpoint, size_t user_window, unsigned long count,
          unsigned long offset)
{
    struct cairn_node_client_settings settings = {0};
    struct cairn_loop *loop = NULL;
    struct cairn_node_client *client = NULL;
    struct bench_message *messages = calloc(count, sizeof(*messages));
    struct bench bench = {0};
    uint64_t start, elapsed;

    settings.user_window = user_window;
    settings.node_window = 64;
    settings.max_queue = count + 1;
    if (messages == NULL || cairn_loop_new(&loop) < 0 ||
        cairn_node_client_new(loop, NULL, &settings, &client) < 0 ||
        cairn_node_client_add_node(client, "node1", endpoint, NULL) < 0)
        goto out;
    start = cairn_loop_now_ms();
    for (unsigned long i = 0; i < count; i++) {
        char user[32];
        struct cairn_node_frame frame;
        struct cairn_node_request request = {0};

        make_message(&messages[i], offset + i);
        snprintf(user, sizeof(user), "bench%lu", i % USERS);
        frame.data = messages[i].dlist;
        frame.len = strlen(messages[i].dlist);
        request.kind = CAIRN__KIND__APPLY;
        request.user = user;
        request.verb = "APPLY";
        request.key = "MESSAGE";
        request.frames = &frame;
        request.frame_count = 1;
        request.bodies = &messages[i].wire;
        request.body_count = 1;
        cairn_node_client_send(client, 0, &request, on_reply, &bench, NULL);
    }
    while (bench.answered < count)
        cairn_loop_run_once(loop, 10);
    elapsed = cairn_loop_now_ms() - start;
    printf("small: %lu APPLY MESSAGE of %d B, %d users, %zu in flight per "
           "user: %llu ms, %.0f updates/s, %lu failed\n",
           count, BODY, USERS, user_window, (unsigned long long)elapsed,
           elapsed ? count * 1000.0 / (double)elapsed : 0.0, bench.failed);
out:
    cairn_node_client_free(client);
    cairn_loop_free(loop);
    free(messages);
}

int
main(int argc, char **argv)
{
    char dir[] = "/tmp/cairn-bench-node-XXXXXX";
    struct test_daemon daemon = {0};
    uint64_t count = 2000;
    static const size_t windows[] = {1, 4, 16};

    if (argc < 2 ||
        (argc > 2 && cairn_parse_u64_str(argv[2], 1, 1000000, &count) < 0)) {
        fprintf(stderr, "usage: bench_node_daemon CAIRN_NODE [MESSAGES]\n");
        return 2;
    }
    if (mkdtemp(dir) == NULL ||
        test_daemon_start(&daemon, argv[1], dir, true) < 0) {
        fprintf(stderr, "cannot start %s\n", argv[1]);
        return 1;
    }
    for (size_t i = 0; i < sizeof(windows) / sizeof(windows[0]); i++)
        run_small(daemon.endpoint, windows[i], (unsigned long)count,
                  (unsigned long)(i * count));
    printf("daemon peak RSS (VmHWM): %lu KiB\n",
           test_proc_kib(daemon.pid, "VmHWM"));
    test_daemon_stop(&daemon, SIGTERM);
    test_remove_tree(dir);
    return 0;
}
