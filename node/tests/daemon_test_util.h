/*
 * daemon_test_util.h - what the cairn-node daemon tests share: starting
 * the daemon on a free loopback port with a temp data dir (readiness by
 * the endpoint file it writes), stopping it by pid, reading its peak RSS
 * and a user's data file size, and turning a parsed APPLY record into the
 * wire form of node_client.h (frame 1 with bodies left out, then the
 * bodies in FILE-node order).
 */
#ifndef CAIRN_DAEMON_TEST_UTIL_H
#define CAIRN_DAEMON_TEST_UTIL_H

#include "node_client.h"
#include "node_test_util.h"

#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct test_daemon {
    pid_t pid;
    char endpoint[256];
    char endpoint_file[512];
};

static inline void
test_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/*
 * Starts binary on data_dir, bound to a free 127.0.0.1 port, group commit
 * interval group_commit (a duration string). 0 once its endpoint file
 * appeared (at most 10 s), -1 otherwise.
 */
static inline int
test_daemon_start(struct test_daemon *daemon, const char *binary,
                  const char *data_dir, bool quiet)
{
    char config_path[600];
    FILE *config;

    snprintf(daemon->endpoint_file, sizeof(daemon->endpoint_file),
             "%s.endpoint", data_dir);
    unlink(daemon->endpoint_file);
    /* These tests speak to the node in plain text (CURVE is on by default;
     * ops/tests/test_curve.c covers it): a config of their own says so,
     * with the built-in default's other settings. */
    snprintf(config_path, sizeof(config_path), "%s.conf", data_dir);
    if ((config = fopen(config_path, "w")) == NULL)
        return -1;
    fprintf(config,
            "[router]\n[channel c]\nlisten = 127.0.0.1:1\nsasl_user = u\n"
            "sasl_password = p\ndestinations = d\n[destination d]\n"
            "nodes = node1\nreplicas = 1\n[node node1]\n"
            "endpoint = tcp://127.0.0.1:1\ndata_dir = %s\n"
            "[security]\ncurve = no\n",
            data_dir);
    if (fclose(config) != 0)
        return -1;
    daemon->pid = fork();
    if (daemon->pid < 0)
        return -1;
    if (daemon->pid == 0) {
        /* Never outlive a test that crashed. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* ASan keeps freed blocks in a 256 MB quarantine, which would
         * show as RSS; a small one keeps the memory figures meaningful. */
        setenv("ASAN_OPTIONS", "quarantine_size_mb=8", 0);
        if (quiet) {
            FILE *null = freopen("/dev/null", "w", stderr);

            (void)null;
        }
        execl(binary, binary, "-f", "-c", config_path, "-n", "node1", "-d",
              data_dir, "-e", "tcp://127.0.0.1:*", "-w", daemon->endpoint_file,
              "--allow-root", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 2000; i++) {
        FILE *file = fopen(daemon->endpoint_file, "r");
        int status;

        if (file != NULL) {
            bool ok =
                fgets(daemon->endpoint, sizeof(daemon->endpoint), file) != NULL;

            fclose(file);
            daemon->endpoint[strcspn(daemon->endpoint, "\n")] = '\0';
            return ok ? 0 : -1;
        }
        if (waitpid(daemon->pid, &status, WNOHANG) == daemon->pid) {
            daemon->pid = 0;
            return -1;
        }
        test_sleep_ms(5);
    }
    return -1;
}

static inline int
test_remove_entry(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes a temp directory and everything in it. */
static inline void
test_remove_tree(const char *dir)
{
    nftw(dir, test_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Sends signo to the daemon and reaps it; returns its wait status. */
static inline int
test_daemon_stop(struct test_daemon *daemon, int signo)
{
    int status = -1;

    if (daemon->pid <= 0)
        return -1;
    kill(daemon->pid, signo);
    waitpid(daemon->pid, &status, 0);
    daemon->pid = 0;
    return status;
}

/* A /proc/PID/status figure in KiB ("VmHWM", "VmRSS"), 0 if unknown. */
static inline unsigned long
test_proc_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    unsigned long value = 0;
    size_t field_len = strlen(field);
    FILE *file;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if ((file = fopen(path, "r")) == NULL)
        return 0;
    while (fgets(line, sizeof(line), file))
        if (strncmp(line, field, field_len) == 0 && line[field_len] == ':')
            value = strtoul(line + field_len + 1, NULL, 10);
    fclose(file);
    return value;
}

/* Size of userid's data file under the daemon's data_dir (0: none). */
static inline uint64_t
test_data_file_size(const char *dir, const char *userid)
{
    size_t len = strlen(userid);
    struct dirent *entry;
    uint64_t size = 0;
    char path[600];
    DIR *folder;

    snprintf(path, sizeof(path), "%s/%c", dir, cairn_node_dir_hash(userid));
    if ((folder = opendir(path)) == NULL)
        return 0;
    while ((entry = readdir(folder)) != NULL) {
        char file[900];
        struct stat st;

        /* <userid>_XXXXXX, not its .index */
        if (strncmp(entry->d_name, userid, len) != 0 ||
            entry->d_name[len] != '_' || strchr(entry->d_name + len, '.'))
            continue;
        snprintf(file, sizeof(file), "%s/%s", path, entry->d_name);
        if (stat(file, &st) == 0)
            size = (uint64_t)st.st_size;
    }
    closedir(folder);
    return size;
}

/* --- the wire form of an APPLY ------------------------------------------- */

struct test_wire {
    struct cairn_buf dlist;
    struct cairn_node_body bodies[1100];
    size_t body_count;
};

static inline int
test_wire_skip_body(void *ctx, const struct cairn_dlist *file,
                    struct cairn_buf *out)
{
    (void)ctx;
    (void)file;
    (void)out;
    return 0;
}

/* Bodies captured by test_sink, in FILE-node order. */
static inline void
test_wire_collect(struct test_wire *wire, const struct cairn_dlist *node)
{
    const char *partition, *guid;
    uint64_t size;
    void *handle;

    if (cairn_dlist_file_info(node, &partition, &guid, &size, &handle)) {
        struct test_body *body = handle;

        if (wire->body_count < 1100 && body != NULL) {
            struct cairn_node_body *out = &wire->bodies[wire->body_count++];

            out->fd = -1;
            out->data = body->data;
            out->size = body->len;
        }
        return;
    }
    for (const struct cairn_dlist *child = cairn_dlist_first(node); child;
         child = cairn_dlist_next(child))
        test_wire_collect(wire, child);
}

/* Fills wire from record (bodies borrowed from the record's handles). */
static inline int
test_wire_from_record(struct test_wire *wire, const struct cairn_dlist *record)
{
    const struct cairn_dlist_body_writer skip = {test_wire_skip_body, NULL};

    cairn_buf_init(&wire->dlist, 64 * 1024 * 1024);
    wire->body_count = 0;
    test_wire_collect(wire, record);
    return cairn_dlist_print(record, true, &wire->dlist, &skip);
}

static inline void
test_wire_release(struct test_wire *wire)
{
    cairn_buf_release(&wire->dlist);
}

/*
 * One update time for the whole test process, as a router gives every
 * replica of a write the same stamp: users fed the same sessions then
 * hold the same times (and digests), whenever the clock ticks between.
 */
static inline int64_t
test_update_time(void)
{
    static int64_t stamp;

    if (stamp == 0)
        stamp = (int64_t)time(NULL);
    return stamp;
}

/* An APPLY request for wire (borrowing it and frame). */
static inline struct cairn_node_request
test_apply_request(const char *user, uint64_t sequence, const char *key,
                   struct test_wire *wire, struct cairn_node_frame *frame)
{
    struct cairn_node_request request = {0};

    frame->data = wire->dlist.data;
    frame->len = wire->dlist.len;
    request.kind = CAIRN__KIND__APPLY;
    request.user = user;
    request.verb = "APPLY";
    request.key = key;
    request.sequence = sequence;
    request.update_time = test_update_time();
    request.frames = frame;
    request.frame_count = 1;
    request.bodies = wire->bodies;
    request.body_count = wire->body_count;
    return request;
}

/* How long a test waits for one request to a daemon. */
#define CALL_TIMEOUT_MS 60000

/* Parses dlist ("KEY value") and sends it as user's APPLY; result owned. */
static inline int
call_apply_text(const char *endpoint, const char *user, uint64_t sequence,
                const char *dlist, struct cairn_node_result *result)
{
    struct cairn_dlist *record = NULL;
    struct test_wire wire;
    struct cairn_node_frame frame;
    struct cairn_node_request request;
    int rc;

    if ((rc = cairn_dlist_parse(dlist, strlen(dlist), CAIRN_DLIST_PARSE_KEY,
                                NULL, &test_sink, &record, NULL, 0)) < 0)
        return rc;
    test_wire_from_record(&wire, record);
    request = test_apply_request(user, sequence, cairn_dlist_name(record),
                                 &wire, &frame);
    rc = cairn_node_client_call(endpoint, &request, CALL_TIMEOUT_MS, result);
    test_wire_release(&wire);
    cairn_dlist_free(record);
    return rc;
}

/* A VERIFY or COMPACT of every user; the unpacked reply, owned, or NULL. */
static inline Cairn__UserResults *
call_users(const char *endpoint, Cairn__Kind kind, bool full)
{
    struct cairn_node_request request = {0};
    struct cairn_node_result result;
    Cairn__UserRequest asked = CAIRN__USER_REQUEST__INIT;
    unsigned char packed[64];
    struct cairn_node_frame frame = {packed, 0};
    Cairn__UserResults *reply = NULL;

    asked.full = full;
    frame.len = cairn__user_request__pack(&asked, packed);
    request.kind = kind;
    request.frames = &frame;
    request.frame_count = 1;
    if (cairn_node_client_call(endpoint, &request, CALL_TIMEOUT_MS, &result) ==
            0 &&
        result.frame_count == 1)
        reply = cairn__user_results__unpack(NULL, result.frames[0].len,
                                            result.frames[0].data);
    cairn_node_result_release(&result);
    return reply;
}

#endif /* CAIRN_DAEMON_TEST_UTIL_H */
