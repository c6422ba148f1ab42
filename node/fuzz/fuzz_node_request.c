/*
 * fuzz_node_request.c - libFuzzer target for the node's envelope decoder
 * with a whole node request behind it: one node server runs in this
 * process (its data in a temporary directory, kept across inputs, so
 * requests meet the state earlier ones left), and each input is one
 * ZeroMQ message sent to it from a DEALER: frames cut by 16-bit
 * big-endian lengths, the first frame the Envelope (protobuf), the rest
 * its payload (dlists, bodies). The loop then runs until the node has
 * answered or gone quiet. The property checked: no input crashes the
 * node, trips ASan/UBSan or leaks; the node keeps answering PING.
 *
 * The data directory is removed at exit.
 * Seeds (node/fuzz/corpus): run with CAIRN_FUZZ_WRITE_SEEDS=DIR and no
 * corpus to write a PING, a GET USER, an APPLY MAILBOX, an APPLY MESSAGE
 * with a body and a STATUS request in the input format. Build with
 * -DCAIRN_FUZZ=ON and clang.
 */
#include "cluster.pb-c.h"
#include "loop.h"
#include "node_server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAX_FRAMES 16

static struct {
    void *context, *dealer;
    struct cairn_loop *loop;
    struct cairn_node_server *server;
    uint64_t ping_id;
    uint64_t inputs;
} fuzz;

/* Reads every reply waiting; whether one came. */
static bool
drain_replies(void)
{
    bool got = false;
    zmq_msg_t part;

    zmq_msg_init(&part);
    while (zmq_msg_recv(&part, fuzz.dealer, ZMQ_DONTWAIT) >= 0)
        got = true;
    zmq_msg_close(&part);
    return got;
}

/* Runs the node until it answered (or a few rounds found nothing). */
static bool
run_until_answer(int rounds)
{
    for (int i = 0; i < rounds; i++) {
        cairn_loop_run_once(fuzz.loop, i < 4 ? 0 : 1);
        if (drain_replies())
            return true;
    }
    return false;
}

/* Sends one message made of frame_count frames. */
static void
send_frames(const unsigned char *const *frames, const size_t *lens,
            size_t frame_count)
{
    for (size_t i = 0; i < frame_count; i++)
        zmq_send(fuzz.dealer, frames[i], lens[i],
                 ZMQ_DONTWAIT | (i + 1 < frame_count ? ZMQ_SNDMORE : 0));
}

/* Appends frame to out in the input format (16-bit length, bytes). */
static size_t
put_frame(unsigned char *out, const void *frame, size_t len)
{
    out[0] = (unsigned char)(len >> 8);
    out[1] = (unsigned char)len;
    memcpy(out + 2, frame, len);
    return len + 2;
}

static void
write_seed(const char *dir, const char *name, Cairn__Envelope *envelope,
           const char *const *payload, size_t payload_count)
{
    unsigned char input[8192], packed[1024];
    size_t len = cairn__envelope__pack(envelope, packed), at = 0;
    char path[512];
    FILE *file;

    at += put_frame(input + at, packed, len);
    for (size_t i = 0; i < payload_count; i++)
        at += put_frame(input + at, payload[i], strlen(payload[i]));
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if ((file = fopen(path, "wb")) != NULL) {
        fwrite(input, 1, at, file);
        fclose(file);
    }
}

/* The seed inputs, written once by hand (CAIRN_FUZZ_WRITE_SEEDS). */
static void
write_seeds(const char *dir)
{
    Cairn__Envelope envelope = CAIRN__ENVELOPE__INIT;
    const char *mailbox[] = {
        "MAILBOX %(UNIQUEID u1 MBOXNAME user.anne LAST_UID 1 "
        "HIGHESTMODSEQ 3 RECENTUID 0 RECENTTIME 0 LAST_APPENDDATE 0 "
        "POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY 1 PARTITION "
        "default ACL \"anne\tlrswipkxtecdan\t\" OPTIONS P SYNC_CRC 0 "
        "SYNC_CRC_ANNOT 0 RECORD (%(UID 1 MODSEQ 3 LAST_UPDATED 1 FLAGS () "
        "INTERNALDATE 1 SIZE 5 GUID "
        "5d41402abc4b2a76b9719d911017c592ae8d2a9b)))"};
    const char *message[] = {
        "MESSAGE (%{default aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d 5}\r\n"
        ")",
        "hello"};
    const char *get[] = {"USER anne"};

    envelope.kind = CAIRN__KIND__PING;
    envelope.request_id = 1;
    write_seed(dir, "ping", &envelope, NULL, 0);
    envelope.kind = CAIRN__KIND__STATUS_REQUEST;
    write_seed(dir, "status", &envelope, NULL, 0);
    envelope.kind = CAIRN__KIND__STATE_REQUEST;
    envelope.user = "anne";
    envelope.verb = "GET";
    envelope.key = "USER";
    envelope.payload_frames = 1;
    write_seed(dir, "get-user", &envelope, get, 1);
    envelope.kind = CAIRN__KIND__APPLY;
    envelope.verb = "APPLY";
    envelope.key = "MAILBOX";
    envelope.sequence = 1;
    envelope.stream_start = true;
    envelope.update_time = 1700000000;
    write_seed(dir, "apply-mailbox", &envelope, mailbox, 1);
    envelope.key = "MESSAGE";
    envelope.payload_frames = 2;
    envelope.has_body = true;
    write_seed(dir, "apply-message", &envelope, message, 2);
}

static char dir[] = "/tmp/cairn-fuzz-node-XXXXXX";

/* At exit: the node's data goes with the process. */
static void
remove_data(void)
{
    char command[sizeof(dir) + 16];

    snprintf(command, sizeof(command), "rm -rf %s", dir);
    if (system(command) != 0)
        fprintf(stderr, "fuzz_node_request: could not remove %s\n", dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct cairn_node_server_settings settings = {0};
    char data_dir[sizeof(dir) + 8];
    const char *seeds = getenv("CAIRN_FUZZ_WRITE_SEEDS");
    int zero = 0;

    (void)argc;
    (void)argv;
    if (seeds != NULL) {
        write_seeds(seeds);
        exit(0);
    }
    if (mkdtemp(dir) == NULL)
        abort();
    atexit(remove_data);
    snprintf(data_dir, sizeof(data_dir), "%s/node", dir);
    settings.name = "fuzz";
    settings.endpoint = "tcp://127.0.0.1:*";
    settings.data_dir = data_dir;
    settings.group_commit_ms = 0; /* commit before answering */
    settings.stream_timeout_ms = 200;
    fuzz.context = zmq_ctx_new();
    if (cairn_loop_new(&fuzz.loop) < 0 ||
        cairn_node_server_new(fuzz.loop, fuzz.context, &settings, &fuzz.server,
                              NULL, 0) < 0)
        abort();
    fuzz.dealer = zmq_socket(fuzz.context, ZMQ_DEALER);
    zmq_setsockopt(fuzz.dealer, ZMQ_LINGER, &zero, sizeof(zero));
    if (zmq_connect(fuzz.dealer, cairn_node_server_endpoint(fuzz.server)) != 0)
        abort();
    return 0;
}

/* The node still answers a PING (it did not wedge). */
static void
require_alive(void)
{
    Cairn__Envelope envelope = CAIRN__ENVELOPE__INIT;
    unsigned char packed[64];
    const unsigned char *frame = packed;
    size_t len;

    envelope.kind = CAIRN__KIND__PING;
    envelope.request_id = ++fuzz.ping_id;
    len = cairn__envelope__pack(&envelope, packed);
    send_frames(&frame, &len, 1);
    if (!run_until_answer(2000))
        abort();
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const unsigned char *frames[MAX_FRAMES];
    size_t lens[MAX_FRAMES], count = 0, at = 0;

    while (at + 2 <= size && count < MAX_FRAMES) {
        size_t len = ((size_t)data[at] << 8) | data[at + 1];

        at += 2;
        if (len > size - at)
            len = size - at;
        frames[count] = data + at;
        lens[count++] = len;
        at += len;
    }
    if (count == 0)
        return 0;
    send_frames(frames, lens, count);
    run_until_answer(8);
    /* Every 256th input: the node answers PING still. */
    if ((fuzz.inputs++ & 255) == 0)
        require_alive();
    return 0;
}
