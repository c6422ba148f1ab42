/*
 * loadgen.c - the csync load generator of loadgen.h: one thread per
 * connection, each replaying a sync_client -u session for its own user
 * with generated bodies, timing every command.
 */
#include "loadgen.h"

#include "common.h"
#include "csync.h"
#include "dlist.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REPLY_MAX_LINE (1u << 20)
#define REPLY_MAX_ITEMS 100000
#define READ_BLOCK 65536
#define GUID_HEX 41
#define UPDATE_TIME 1700000000LL

struct message {
    char guid[GUID_HEX];
    size_t size;
    bool missing; /* named in the RESERVE's MISSING */
};

struct connection {
    struct cairn_loadgen *loadgen;
    unsigned index;
    int fd;
    char user[96];
    struct message *messages;
    struct cairn_csync_response_reader *reader;
    struct cairn_buf input;
    struct cairn_buf output;
    char *body;
    double *latencies;
    size_t latency_count, latency_cap;
    struct cairn_loadgen_connection figures;
    double phase_start, phase_end; /* this connection's part of a phase */
    int rc;
    char error[200];
};

struct cairn_loadgen {
    struct cairn_loadgen_options options;
    struct connection *connections;
    /* the start gate of a phase: every thread ready, then all go */
    pthread_mutex_t gate_lock;
    pthread_cond_t gate_changed;
    unsigned gate_ready;
    bool gate_open;
};

static void wait_at_gate(struct cairn_loadgen *g);

static const char *const words[] = {
    "backup",  "replication", "mailbox", "server",  "report",   "meeting",
    "budget",  "invoice",     "release", "the",     "a",        "of",
    "and",     "to",          "in",      "for",     "schedule", "deadline",
    "review",  "draft",       "please",  "regards", "thanks",   "attached",
    "figures", "quarter",     "monday",  "with",    "is",       "that",
    "this",    "we"};

static double
now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t
next_random(uint64_t *state)
{
    /* xorshift64*: deterministic and fast enough to write bodies */
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 2685821657736338717ULL;
}

static uint64_t
message_seed(const struct connection *c, unsigned message)
{
    uint64_t state = 0x9e3779b97f4a7c15ULL ^ c->loadgen->options.seed;

    for (const char *p = c->user; *p; p++)
        state = (state ^ (uint8_t)*p) * 1099511628211ULL;
    state ^= (uint64_t)message * 0xbf58476d1ce4e5b9ULL;
    return state ? state : 1;
}

/* A log-normal size: median 5,000 bytes, sigma 1.3, within [600, max]. */
static size_t
message_size(uint64_t *state, size_t max)
{
    double u1 = ((double)(next_random(state) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double)(next_random(state) >> 11) / 9007199254740992.0;
    double z = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
    double size = exp(log(5000.0) + 1.3 * z);

    if (size < 600)
        size = 600;
    if (size > (double)max)
        size = (double)max;
    return (size_t)size;
}

/* Writes message number's body into c->body; returns its size. */
static size_t
make_body(struct connection *c, unsigned message)
{
    uint64_t state = message_seed(c, message);
    size_t size = message_size(&state, c->loadgen->options.max_size);
    int n = snprintf(c->body, size,
                     "From: Load <load@loadgen.example>\r\n"
                     "To: %s@loadgen.example\r\n"
                     "Subject: loadgen message %u\r\n"
                     "Message-ID: <%s.%u@loadgen.example>\r\n"
                     "Content-Type: text/plain\r\n\r\n",
                     c->user, message, c->user, message);
    size_t at = n > 0 && (size_t)n < size ? (size_t)n : 0;
    unsigned column = 0;

    while (at + 2 < size) {
        const char *word = words[next_random(&state) % 32];
        size_t len = strlen(word);

        if (at + len + 3 >= size || column > 70) {
            c->body[at++] = '\r';
            c->body[at++] = '\n';
            column = 0;
            continue;
        }
        memcpy(c->body + at, word, len);
        at += len;
        c->body[at++] = ' ';
        column += (unsigned)len + 1;
    }
    for (; at < size; at++)
        c->body[at] = at + 1 == size ? '\n' : '\r';
    return size;
}

static int
fail(struct connection *c, int rc, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(c->error, sizeof(c->error),
                     "connection %u (%s): ", c->index, c->user);

    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(c->error))
        vsnprintf(c->error + n, sizeof(c->error) - (size_t)n, fmt, ap);
    va_end(ap);
    c->rc = rc;
    return rc;
}

static int
send_all(struct connection *c, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return fail(c, CAIRN_EIO, "send: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int
flush_output(struct connection *c)
{
    int rc = send_all(c, c->output.data, c->output.len);

    cairn_buf_reset(&c->output);
    return rc;
}

/* Reads one whole response into *response (owned by the caller). */
static int
read_response(struct connection *c, struct cairn_csync_response *response)
{
    char block[READ_BLOCK];

    for (;;) {
        size_t consumed = 0;
        int rc = CAIRN_EAGAIN;

        if (c->input.len > 0) {
            rc = cairn_csync_response_reader_feed(
                c->reader, c->input.data, c->input.len, &consumed, response);
            cairn_buf_consume(&c->input, consumed);
        }
        if (rc == 0)
            return 0;
        if (rc != CAIRN_EAGAIN)
            return fail(c, rc, "bad reply: %s",
                        cairn_csync_response_reader_error(c->reader));
        ssize_t n = recv(c->fd, block, sizeof(block), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return fail(c, CAIRN_EIO, "connection closed by the server%s%s",
                        n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
        if ((rc = cairn_buf_append(&c->input, block, (size_t)n)) < 0)
            return fail(c, rc, "reply too long");
    }
}

static int
note_latency(struct connection *c, double seconds)
{
    if (c->latency_count == c->latency_cap) {
        size_t cap = c->latency_cap ? c->latency_cap * 2 : 256;
        double *grown = realloc(c->latencies, cap * sizeof(*grown));

        if (!grown)
            return fail(c, CAIRN_ENOMEM, "out of memory");
        c->latencies = grown;
        c->latency_cap = cap;
    }
    c->latencies[c->latency_count++] = seconds * 1000.0;
    return 0;
}

/*
 * Sends what c->output holds (plus, for APPLY MESSAGE, the bodies written
 * by send_messages) and waits for the completion: OK or a failure naming
 * the command. *response, when not NULL, receives the reply (owned).
 */
static int
finish_command(struct connection *c, const char *what, double started,
               struct cairn_csync_response *response)
{
    struct cairn_csync_response local = {0};
    struct cairn_csync_response *reply = response ? response : &local;
    int rc;

    if ((rc = flush_output(c)) < 0)
        return rc;
    if ((rc = read_response(c, reply)) < 0)
        return rc;
    if ((rc = note_latency(c, now_seconds() - started)) < 0)
        goto out;
    /* sync_client takes it as an empty answer to a GET (a new user) */
    if (reply->status == CAIRN_CSYNC_NO &&
        reply->code == CAIRN_CSYNC_CODE_MAILBOX_NONEXISTENT &&
        strncmp(what, "GET ", 4) == 0)
        goto out;
    if (reply->status != CAIRN_CSYNC_OK)
        rc = fail(c, CAIRN_EPROTO, "%s: %s %s", what,
                  reply->status == CAIRN_CSYNC_NO ? "NO" : "BAD/BYE",
                  reply->text ? reply->text : "");
out:
    cairn_csync_response_release(&local);
    return rc;
}

static int
authenticate(struct connection *c)
{
    const struct cairn_loadgen_options *o = &c->loadgen->options;
    char plain[512], token[700];
    char *line = NULL;
    size_t len, line_len;
    int rc, n;

    /* the banner ends with "* OK ..." */
    for (;;) {
        char block[4096];
        ssize_t got;

        rc = cairn_csync_take_line(&c->input, 4096, &line, &line_len);
        if (rc == 0) {
            bool done = strncmp(line, "* OK", 4) == 0;

            free(line);
            if (done)
                break;
            continue;
        }
        if (rc != CAIRN_EAGAIN)
            return fail(c, rc, "banner line too long");
        got = recv(c->fd, block, sizeof(block), 0);
        if (got <= 0)
            return fail(c, CAIRN_EIO, "no banner");
        if ((rc = cairn_buf_append(&c->input, block, (size_t)got)) < 0)
            return fail(c, rc, "banner too long");
    }
    n = snprintf(plain, sizeof(plain), "%c%s%c%s", 0, o->user, 0, o->password);
    if (n < 0 || (size_t)n >= sizeof(plain))
        return fail(c, CAIRN_EINVAL, "credentials too long");
    len = (size_t)EVP_EncodeBlock((unsigned char *)token,
                                  (const unsigned char *)plain, n);
    token[len] = '\0';
    if ((rc = cairn_buf_printf(&c->output, "AUTHENTICATE PLAIN %s\r\n",
                               token)) < 0)
        return fail(c, rc, "out of memory");
    return finish_command(c, "AUTHENTICATE PLAIN", now_seconds(), NULL);
}

static int
connect_server(struct connection *c)
{
    const struct cairn_loadgen_options *o = &c->loadgen->options;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *found = NULL;
    int rc = getaddrinfo(o->host, o->port, &hints, &found), one = 1;

    if (rc != 0)
        return fail(c, CAIRN_EINVAL, "%s:%s: %s", o->host, o->port,
                    gai_strerror(rc));
    c->fd = socket(found->ai_family, SOCK_STREAM, 0);
    if (c->fd < 0 || connect(c->fd, found->ai_addr, found->ai_addrlen) < 0) {
        freeaddrinfo(found);
        return fail(c, CAIRN_EIO, "connect %s:%s: %s", o->host, o->port,
                    strerror(errno));
    }
    freeaddrinfo(found);
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return authenticate(c);
}

static int
get_user(struct connection *c, struct cairn_csync_response *reply)
{
    double started = now_seconds();
    int rc = cairn_buf_printf(&c->output, "GET USER %s\r\n", c->user);

    if (rc < 0)
        return fail(c, rc, "out of memory");
    return finish_command(c, "GET USER", started, reply);
}

/* The GUIDs and sizes of every message (hashing each generated body). */
static void
plan_messages(struct connection *c)
{
    unsigned char digest[SHA_DIGEST_LENGTH];

    for (unsigned i = 0; i < c->loadgen->options.messages; i++) {
        size_t size = make_body(c, i);

        SHA1((const unsigned char *)c->body, size, digest);
        for (int b = 0; b < SHA_DIGEST_LENGTH; b++)
            snprintf(c->messages[i].guid + 2 * b, 3, "%02x", digest[b]);
        c->messages[i].size = size;
        c->messages[i].missing = false;
    }
}

static int
reserve(struct connection *c)
{
    struct cairn_csync_response reply = {0};
    unsigned count = c->loadgen->options.messages;
    double started = now_seconds();
    int rc = cairn_buf_printf(&c->output,
                              "APPLY RESERVE %%(PARTITION default MBOXNAME "
                              "(user.%s) GUID (",
                              c->user);

    for (unsigned i = 0; rc == 0 && i < count; i++)
        rc = cairn_buf_printf(&c->output, "%s%s", i ? " " : "",
                              c->messages[i].guid);
    if (rc == 0)
        rc = cairn_buf_append_str(&c->output, "))\r\n");
    if (rc < 0)
        return fail(c, rc, "out of memory");
    if ((rc = finish_command(c, "APPLY RESERVE", started, &reply)) < 0)
        goto out;
    for (size_t i = 0; i < reply.item_count; i++) {
        if (strcasecmp(cairn_dlist_name(reply.items[i]), "MISSING") != 0)
            continue;
        for (const struct cairn_dlist *g = cairn_dlist_first(reply.items[i]); g;
             g = cairn_dlist_next(g)) {
            const char *guid = cairn_dlist_value(g, NULL);

            for (unsigned m = 0; guid && m < count; m++)
                if (strcasecmp(guid, c->messages[m].guid) == 0)
                    c->messages[m].missing = true;
        }
    }
out:
    cairn_csync_response_release(&reply);
    return rc;
}

/* APPLY MESSAGE of the missing bodies, `batch` literals a command. */
static int
send_messages(struct connection *c)
{
    const struct cairn_loadgen_options *o = &c->loadgen->options;
    unsigned i = 0;
    int rc = 0;

    while (i < o->messages) {
        double started = 0;
        unsigned in_batch = 0;

        for (; i < o->messages && in_batch < o->batch; i++) {
            size_t size;

            if (!c->messages[i].missing)
                continue;
            if (in_batch == 0) {
                started = now_seconds();
                rc = cairn_buf_append_str(&c->output, "APPLY MESSAGE (");
            } else {
                rc = cairn_buf_append_str(&c->output, " ");
            }
            size = make_body(c, i);
            if (rc == 0)
                rc = cairn_buf_printf(&c->output, "%%{default %s %zu}\r\n",
                                      c->messages[i].guid, size);
            if (rc < 0)
                return fail(c, rc, "out of memory");
            if ((rc = flush_output(c)) < 0 ||
                (rc = send_all(c, c->body, size)) < 0)
                return rc;
            c->figures.raw_bytes += size;
            in_batch++;
        }
        if (in_batch == 0)
            break;
        if ((rc = cairn_buf_append_str(&c->output, ")\r\n")) < 0)
            return fail(c, rc, "out of memory");
        if ((rc = finish_command(c, "APPLY MESSAGE", started, NULL)) < 0)
            return rc;
    }
    return 0;
}

static int
apply_mailbox(struct connection *c)
{
    unsigned count = c->loadgen->options.messages;
    double started = now_seconds();
    long long t = UPDATE_TIME;
    int rc = cairn_buf_printf(
        &c->output,
        "APPLY MAILBOX %%(UNIQUEID lg%08x%014u MBOXNAME user.%s "
        "SYNC_CRC 0 SYNC_CRC_ANNOT 0 LAST_UID %u HIGHESTMODSEQ %u "
        "RECENTUID %u RECENTTIME %lld LAST_APPENDDATE %lld "
        "POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY %lld "
        "PARTITION default ACL \"%s\tlrswipkxtecdan\t\" OPTIONS P "
        "QUOTAROOT user.%s CREATEDMODSEQ 1 FOLDERMODSEQ 1 RECORD (",
        c->loadgen->options.seed, c->index, c->user, count, count + 1, count, t,
        t, t + c->index, c->user, c->user);

    for (unsigned i = 0; rc == 0 && i < count; i++)
        rc = cairn_buf_printf(&c->output,
                              "%s%%(UID %u MODSEQ %u LAST_UPDATED %lld "
                              "FLAGS () INTERNALDATE %lld SIZE %zu GUID %s)",
                              i ? " " : "", i + 1, i + 2, t, t - i,
                              c->messages[i].size, c->messages[i].guid);
    if (rc == 0)
        rc = cairn_buf_append_str(&c->output, "))\r\n");
    if (rc < 0)
        return fail(c, rc, "out of memory");
    return finish_command(c, "APPLY MAILBOX", started, NULL);
}

static int
ingest(struct connection *c)
{
    struct cairn_csync_response reply = {0};
    double started;
    int rc;

    plan_messages(c);
    wait_at_gate(c->loadgen);
    started = now_seconds();
    if ((rc = get_user(c, &reply)) < 0 || (rc = reserve(c)) < 0 ||
        (rc = send_messages(c)) < 0 || (rc = apply_mailbox(c)) < 0)
        goto out;
    c->phase_start = started;
    c->phase_end = now_seconds();
    c->figures.ingest_seconds = c->phase_end - started;
out:
    cairn_csync_response_release(&reply);
    return rc;
}

/* GET USER must now report the mailbox with every message. */
static int
unchanged(struct connection *c)
{
    unsigned rounds = c->loadgen->options.rounds;
    double started;
    int rc = 0;

    wait_at_gate(c->loadgen);
    started = now_seconds();
    for (unsigned r = 0; rc == 0 && r < rounds; r++) {
        struct cairn_csync_response reply = {0};
        uint64_t last_uid = 0;

        if ((rc = get_user(c, &reply)) == 0) {
            for (size_t i = 0; i < reply.item_count; i++)
                if (strcasecmp(cairn_dlist_name(reply.items[i]), "MAILBOX") ==
                    0)
                    cairn_dlist_get_num64(reply.items[i], "LAST_UID",
                                          &last_uid);
            if (last_uid != c->loadgen->options.messages)
                rc = fail(c, CAIRN_EPROTO,
                          "GET USER after the ingest: LAST_UID %llu, "
                          "%u messages sent",
                          (unsigned long long)last_uid,
                          c->loadgen->options.messages);
        }
        cairn_csync_response_release(&reply);
    }
    c->phase_start = started;
    c->phase_end = now_seconds();
    c->figures.unchanged_seconds = c->phase_end - started;
    return rc;
}

/* Says this thread is ready and waits until every one is. */
static void
wait_at_gate(struct cairn_loadgen *g)
{
    pthread_mutex_lock(&g->gate_lock);
    g->gate_ready++;
    pthread_cond_broadcast(&g->gate_changed);
    while (!g->gate_open)
        pthread_cond_wait(&g->gate_changed, &g->gate_lock);
    pthread_mutex_unlock(&g->gate_lock);
}

static void *
ingest_thread(void *arg)
{
    struct connection *c = arg;

    if (c->fd < 0 && connect_server(c) < 0) {
        wait_at_gate(c->loadgen);
        return NULL;
    }
    ingest(c);
    return NULL;
}

static void *
unchanged_thread(void *arg)
{
    struct connection *c = arg;

    unchanged(c);
    return NULL;
}

void
cairn_loadgen_options_init(struct cairn_loadgen_options *options)
{
    memset(options, 0, sizeof(*options));
    options->host = "127.0.0.1";
    options->prefix = "lg";
    options->connections = 4;
    options->messages = 100;
    options->batch = 1024;
    options->max_size = 1024 * 1024;
    options->rounds = 5;
    options->seed = 1;
}

int
cairn_loadgen_new(const struct cairn_loadgen_options *options,
                  struct cairn_loadgen **loadgen)
{
    struct cairn_loadgen *g;
    struct cairn_dlist_limits limits;

    *loadgen = NULL;
    if (!options->port || !options->user || !options->password ||
        options->connections == 0 || options->batch == 0 ||
        options->max_size < 1024)
        return CAIRN_EINVAL;
    if (!(g = calloc(1, sizeof(*g))))
        return CAIRN_ENOMEM;
    g->options = *options;
    pthread_mutex_init(&g->gate_lock, NULL);
    pthread_cond_init(&g->gate_changed, NULL);
    g->connections = calloc(options->connections, sizeof(*g->connections));
    if (!g->connections)
        goto nomem;
    cairn_dlist_limits_default(&limits);
    for (unsigned i = 0; i < options->connections; i++) {
        struct connection *c = &g->connections[i];

        c->loadgen = g;
        c->index = i;
        c->fd = -1;
        snprintf(c->user, sizeof(c->user), "%s%u", options->prefix, i);
        cairn_buf_init(&c->input, REPLY_MAX_LINE + READ_BLOCK);
        cairn_buf_init(&c->output, 256u << 20);
        c->messages = calloc(options->messages + 1, sizeof(*c->messages));
        c->body = malloc(options->max_size + 1);
        if (!c->messages || !c->body ||
            cairn_csync_response_reader_new(REPLY_MAX_LINE, REPLY_MAX_ITEMS,
                                            &limits, NULL, &c->reader) < 0)
            goto nomem;
    }
    *loadgen = g;
    return 0;
nomem:
    cairn_loadgen_free(g);
    return CAIRN_ENOMEM;
}

static int
compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* Runs one phase's thread on every connection; collects its latencies. */
static int
run_phase(struct cairn_loadgen *g, void *(*body)(void *),
          struct cairn_loadgen_phase *phase,
          struct cairn_loadgen_result *result)
{
    unsigned n = g->options.connections;
    pthread_t *threads = calloc(n, sizeof(*threads));
    bool *running = calloc(n, sizeof(*running));
    unsigned created = 0;
    size_t total = 0;
    double started = 0, ended = 0;
    int rc = 0;

    if (!threads || !running) {
        free(threads);
        free(running);
        return CAIRN_ENOMEM;
    }
    pthread_mutex_lock(&g->gate_lock);
    g->gate_ready = 0;
    g->gate_open = false;
    pthread_mutex_unlock(&g->gate_lock);
    for (unsigned i = 0; i < n; i++) {
        struct connection *c = &g->connections[i];

        c->latency_count = 0;
        c->phase_start = c->phase_end = 0;
        if (c->rc < 0)
            continue; /* failed earlier: nothing more to run */
        running[i] = pthread_create(&threads[i], NULL, body, c) == 0;
        if (running[i])
            created++;
        else
            fail(c, CAIRN_ENOMEM, "cannot start its thread");
    }
    /* every thread started is ready: open the gate for all at once */
    pthread_mutex_lock(&g->gate_lock);
    while (g->gate_ready < created)
        pthread_cond_wait(&g->gate_changed, &g->gate_lock);
    g->gate_open = true;
    pthread_cond_broadcast(&g->gate_changed);
    pthread_mutex_unlock(&g->gate_lock);
    for (unsigned i = 0; i < n; i++)
        if (running[i])
            pthread_join(threads[i], NULL);
    /* from the first connection's start to the last one's end (this
       thread may run late after the gate opens on a busy machine) */
    for (unsigned i = 0; i < n; i++) {
        const struct connection *c = &g->connections[i];

        if (c->phase_end <= 0)
            continue;
        if (started == 0 || c->phase_start < started)
            started = c->phase_start;
        if (c->phase_end > ended)
            ended = c->phase_end;
    }
    phase->wall_seconds = ended - started;
    free(threads);
    free(running);

    for (unsigned i = 0; i < n; i++)
        total += g->connections[i].latency_count;
    free(phase->latencies_ms);
    phase->latency_count = 0;
    phase->latencies_ms = calloc(total + 1, sizeof(double));
    if (!phase->latencies_ms)
        return CAIRN_ENOMEM;
    result->connection_count = n;
    if (!result->connections &&
        !(result->connections = calloc(n, sizeof(*result->connections))))
        return CAIRN_ENOMEM;
    result->raw_bytes = 0;
    result->messages = 0;
    for (unsigned i = 0; i < n; i++) {
        struct connection *c = &g->connections[i];

        memcpy(phase->latencies_ms + phase->latency_count, c->latencies,
               c->latency_count * sizeof(double));
        phase->latency_count += c->latency_count;
        result->connections[i] = c->figures;
        result->raw_bytes += c->figures.raw_bytes;
        for (unsigned m = 0; m < g->options.messages; m++)
            result->messages += c->messages[m].missing;
        if (c->rc < 0 && rc == 0) {
            rc = c->rc;
            snprintf(result->error, sizeof(result->error), "%s", c->error);
        }
    }
    qsort(phase->latencies_ms, phase->latency_count, sizeof(double),
          compare_double);
    return rc;
}

int
cairn_loadgen_ingest(struct cairn_loadgen *loadgen,
                     struct cairn_loadgen_result *result)
{
    return run_phase(loadgen, ingest_thread, &result->ingest, result);
}

int
cairn_loadgen_unchanged(struct cairn_loadgen *loadgen,
                        struct cairn_loadgen_result *result)
{
    return run_phase(loadgen, unchanged_thread, &result->unchanged, result);
}

void
cairn_loadgen_free(struct cairn_loadgen *loadgen)
{
    if (!loadgen)
        return;
    for (unsigned i = 0;
         loadgen->connections && i < loadgen->options.connections; i++) {
        struct connection *c = &loadgen->connections[i];

        if (c->fd >= 0)
            close(c->fd);
        cairn_csync_response_reader_free(c->reader);
        cairn_buf_release(&c->input);
        cairn_buf_release(&c->output);
        free(c->messages);
        free(c->body);
        free(c->latencies);
    }
    free(loadgen->connections);
    pthread_mutex_destroy(&loadgen->gate_lock);
    pthread_cond_destroy(&loadgen->gate_changed);
    free(loadgen);
}

void
cairn_loadgen_result_release(struct cairn_loadgen_result *result)
{
    if (!result)
        return;
    free(result->ingest.latencies_ms);
    free(result->unchanged.latencies_ms);
    free(result->connections);
    memset(result, 0, sizeof(*result));
}

double
cairn_loadgen_quantile(const struct cairn_loadgen_phase *phase, double q)
{
    size_t at;

    if (phase->latency_count == 0)
        return 0;
    at = (size_t)(q * (double)(phase->latency_count - 1) + 0.5);
    return phase->latencies_ms[at];
}
