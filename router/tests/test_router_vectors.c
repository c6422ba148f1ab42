/*
 * test_router_vectors.c - the router's command table against recorded traffic
 * between real sync_client 3.6.1 and real backupd (copies of the lab
 * transcripts in data/vectors, format: shared parse_transcript.py). For
 * every GET/APPLY after COMPRESS, the router's decision must match what
 * backupd answered: NO IMAP_PROTOCOL_BAD_PARAMETERS <-> refused as
 * spanning users, NO IMAP_PROTOCOL_ERROR <-> protocol error, anything else
 * <-> forwarded (or accepted and ignored) for a real user.
 */
#include "check.h"
#include "router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CONNECTIONS 16

struct connection {
    struct cairn_buf client; /* what the client sent, inflated */
    struct cairn_buf server; /* what the server sent, inflated */
};

struct totals {
    int forwarded, ignored, protocol_errors, refused_users;
};

static int
read_file(const char *path, struct cairn_buf *out)
{
    char chunk[65536];
    FILE *file = fopen(path, "rb");
    size_t got;
    int rc = 0;

    if (file == NULL)
        return CAIRN_ENOENT;
    while (rc == 0 && (got = fread(chunk, 1, sizeof(chunk), file)) > 0)
        rc = cairn_buf_append(out, chunk, got);
    fclose(file);
    return rc;
}

/* "--- cN C->S +T.s N bytes..." : connection, direction, payload size. */
static bool
parse_header(const char *line, size_t len, unsigned *conn, bool *from_client,
             uint64_t *size)
{
    const char *p = line + 5, *end = line + len, *space, *bytes;
    uint64_t number;

    if (len < 6 || strncmp(line, "--- c", 5) != 0)
        return false;
    space = memchr(p, ' ', (size_t)(end - p));
    if (space == NULL ||
        cairn_parse_u64(p, (size_t)(space - p), 1, MAX_CONNECTIONS, &number))
        return false;
    *conn = (unsigned)number;
    if (end - space > 6 && strncmp(space + 1, "C->S ", 5) == 0)
        *from_client = true;
    else if (end - space > 6 && strncmp(space + 1, "S->C ", 5) == 0)
        *from_client = false;
    else
        return false; /* OPEN/EOF/COMPRESS notes carry no payload */
    bytes = strstr(space, " bytes");
    if (bytes == NULL || bytes > end)
        return false;
    for (p = bytes; p > space && p[-1] != ' '; p--)
        ;
    return cairn_parse_u64(p, (size_t)(bytes - p), 0, 1 << 30, size) == 0;
}

static int
split_transcript(const struct cairn_buf *log, struct connection *connections)
{
    size_t at = 0;

    while (at < log->len) {
        const char *line = log->data + at;
        const char *newline = memchr(line, '\n', log->len - at);
        size_t len = newline ? (size_t)(newline - line) : log->len - at;
        unsigned conn = 0;
        bool from_client = false;
        uint64_t size = 0;

        at += len + 1;
        if (!parse_header(line, len, &conn, &from_client, &size))
            continue;
        if (at + size > log->len)
            return CAIRN_EPARSE;
        cairn_buf_append(from_client ? &connections[conn - 1].client
                                     : &connections[conn - 1].server,
                         log->data + at, (size_t)size);
        at += size + 1;
    }
    return CAIRN_OK;
}

/* Responses after "OK DEFLATE active", one per command after COMPRESS. */
static int
read_responses(const struct cairn_buf *server,
               struct cairn_csync_response *responses, size_t max,
               size_t *count)
{
    const char *start = strstr(server->data, "OK DEFLATE active\r\n");
    struct cairn_csync_response_reader *reader = NULL;
    size_t at, consumed;
    int rc;

    *count = 0;
    if (start == NULL)
        return CAIRN_ENOENT;
    at = (size_t)(start - server->data) + strlen("OK DEFLATE active\r\n");
    if ((rc = cairn_csync_response_reader_new(4096, 100000, NULL, NULL,
                                              &reader)) < 0)
        return rc;
    while (at < server->len && *count < max) {
        memset(&responses[*count], 0, sizeof(responses[*count]));
        rc = cairn_csync_response_reader_feed(reader, server->data + at,
                                              server->len - at, &consumed,
                                              &responses[*count]);
        at += consumed;
        if (rc < 0)
            break;
        (*count)++;
    }
    cairn_csync_response_reader_free(reader);
    return rc == CAIRN_EAGAIN ? CAIRN_OK : rc;
}

static void
check_decision(const char *vector, const struct cairn_csync_command *cmd,
               const struct cairn_router_resolution *resolution,
               const struct cairn_csync_response *response,
               struct totals *totals)
{
    enum cairn_router_action expected = CAIRN_ROUTER_FORWARD;

    if (response->status == CAIRN_CSYNC_NO &&
        response->code == CAIRN_CSYNC_CODE_PROTOCOL_BAD_PARAMETERS)
        expected = CAIRN_ROUTER_BAD_PARAMETERS;
    else if (response->status == CAIRN_CSYNC_NO &&
             response->code == CAIRN_CSYNC_CODE_PROTOCOL_ERROR)
        expected = CAIRN_ROUTER_PROTOCOL_ERROR;
    if (resolution->action == CAIRN_ROUTER_IGNORE) {
        CHECK_INT(response->status, CAIRN_CSYNC_OK);
        totals->ignored++;
        return;
    }
    CHECK_INT(resolution->action, expected);
    if (resolution->action != expected)
        fprintf(stderr, "  %s: %s %s: backupd said %s\n", vector,
                cairn_csync_verb_name(cmd->verb), resolution->key,
                response->text ? response->text : "");
    if (resolution->action == CAIRN_ROUTER_FORWARD) {
        CHECK(strncmp(resolution->owner.userid, "user0", 5) == 0);
        totals->forwarded++;
    } else if (resolution->action == CAIRN_ROUTER_BAD_PARAMETERS) {
        totals->refused_users++;
    } else {
        totals->protocol_errors++;
    }
}

static void
replay_connection(const char *vector, struct connection *connection,
                  struct totals *totals)
{
    struct cairn_csync_response responses[512];
    struct cairn_csync_reader *reader = NULL;
    char current[CAIRN_ROUTER_USERID_MAX] = "";
    size_t response_count = 0, next = 0, at = 0;
    bool compressed = false;

    if (read_responses(&connection->server, responses, 512, &response_count) <
        0)
        return; /* the IMAP probe connection, or no COMPRESS */
    CHECK_INT(cairn_csync_reader_new(65536, NULL, NULL, &reader), 0);
    while (at < connection->client.len) {
        struct cairn_csync_command cmd;
        struct cairn_router_resolution resolution;
        size_t consumed = 0;
        int rc;

        memset(&cmd, 0, sizeof(cmd));
        rc = cairn_csync_reader_feed(reader, connection->client.data + at,
                                     connection->client.len - at, &consumed,
                                     &cmd);
        at += consumed;
        if (rc == CAIRN_EAGAIN)
            break;
        if (rc == 0 && compressed) {
            CHECK(next < response_count);
            if ((cmd.verb == CAIRN_CSYNC_GET ||
                 cmd.verb == CAIRN_CSYNC_APPLY) &&
                next < response_count) {
                CHECK_INT(cairn_router_resolve(cmd.verb, cmd.value, NULL,
                                               current, &resolution),
                          0);
                check_decision(vector, &cmd, &resolution, &responses[next],
                               totals);
                if (resolution.action == CAIRN_ROUTER_FORWARD)
                    snprintf(current, sizeof(current), "%s",
                             resolution.owner.userid);
            }
            next++;
        }
        if (rc == 0 && cmd.verb == CAIRN_CSYNC_COMPRESS)
            compressed = true;
        cairn_csync_command_release(&cmd);
    }
    CHECK(compressed);
    CHECK_U64(next, response_count);
    cairn_csync_reader_free(reader);
    for (size_t i = 0; i < response_count; i++)
        cairn_csync_response_release(&responses[i]);
}

static void
replay(const char *vector, struct totals *totals)
{
    struct connection connections[MAX_CONNECTIONS];
    struct cairn_buf log;
    char path[256];

    snprintf(path, sizeof(path), "data/vectors/%s.log", vector);
    cairn_buf_init(&log, 16 << 20);
    for (int i = 0; i < MAX_CONNECTIONS; i++) {
        cairn_buf_init(&connections[i].client, 16 << 20);
        cairn_buf_init(&connections[i].server, 16 << 20);
    }
    CHECK_INT(read_file(path, &log), 0);
    CHECK_INT(split_transcript(&log, connections), 0);
    for (int i = 0; i < MAX_CONNECTIONS; i++) {
        if (connections[i].client.len > 0)
            replay_connection(vector, &connections[i], totals);
        cairn_buf_release(&connections[i].client);
        cairn_buf_release(&connections[i].server);
    }
    cairn_buf_release(&log);
}

int
main(void)
{
    static const char *const vectors[] = {
        "01-full-backup-one-user",
        "02-incremental-new-mail",
        "03-flags-and-expunge",
        "04-folder-rename",
        "05-folder-delete",
        "06-subscription-change",
        "07-seen-owner",
        "08-seen-nonowner",
        "09-sieve-upload",
        "10-rolling-multi-user",
        "12-full-backup-all-users-A",
        "13-sasl-plain-only",
        "15-sync-try-imap-default",
    };
    struct totals totals = {0};

    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
        replay(vectors[i], &totals);
    printf("forwarded %d, ignored %d, protocol errors %d, refused as "
           "spanning users %d\n",
           totals.forwarded, totals.ignored, totals.protocol_errors,
           totals.refused_users);
    /* The recordings hold one cross-user GET MAILBOXES (vector 10). */
    CHECK_INT(totals.refused_users, 1);
    CHECK(totals.forwarded > 50);
    return check_exit("test_router_vectors");
}
