/*
 * test_csync.c - unit tests of csync framing: the command reader on input
 * split in every way, resynchronisation after malformed commands (also
 * across literals), the response writer, the client-side response reader
 * with sync_client's NO-code mapping, line taking, and the COMPRESS
 * DEFLATE stream (round trip, interoperability with plain zlib, bounded
 * inflation, corrupt input).
 */
#include "check.h"
#include "csync.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define GUID1 "335fe3294fa28c24ac051ee43c7ed87301b5c044"

/* One command as a comparable line: "VERB|key|value" or "VERB|args". */
static void
describe(const struct cairn_csync_command *cmd, char *out, size_t size)
{
    struct cairn_buf text;
    struct cairn_dlist_body_writer writer = memory_body_writer();

    cairn_buf_init(&text, 4096);
    cairn_buf_printf(&text, "%s/%s", cairn_csync_verb_name(cmd->verb),
                     cmd->word ? cmd->word : "(null)");
    if (cmd->value != NULL) {
        cairn_buf_append(&text, "|", 1);
        cairn_dlist_print(cmd->value, true, &text, &writer);
    }
    for (int i = 0; i < cmd->argc; i++)
        cairn_buf_printf(&text, "|%s", cmd->args[i]);
    snprintf(out, size, "%s", text.data ? text.data : "");
    cairn_buf_release(&text);
}

struct session_result {
    char lines[16][256];
    int count;
    int errors;
    char first_error[256];
};

/*
 * Feeds input in chunks of chunk bytes (0: whole), collecting commands and
 * errors. After an AUTHENTICATE the next line is read raw, as a router
 * does during a SASL exchange.
 */
static void
run_session(const char *input, size_t len, size_t chunk, size_t max_line,
            const struct cairn_dlist_limits *limits,
            struct session_result *result)
{
    struct memory_sink_stats stats = {0};
    struct cairn_dlist_file_sink sink = memory_sink(&stats);
    struct cairn_csync_reader *reader = NULL;
    size_t at = 0;

    memset(result, 0, sizeof(*result));
    CHECK_INT(cairn_csync_reader_new(max_line, limits, &sink, &reader), 0);
    while (reader != NULL && at < len) {
        struct cairn_csync_command cmd;
        size_t piece = chunk == 0 || chunk > len - at ? len - at : chunk;
        size_t used = 0;
        int rc =
            cairn_csync_reader_feed(reader, input + at, piece, &used, &cmd);
        at += used;
        if (rc == CAIRN_EAGAIN)
            continue;
        if (rc < 0) {
            if (result->errors++ == 0)
                snprintf(result->first_error, sizeof(result->first_error),
                         "%d %s", rc, cairn_csync_reader_error(reader));
            if (result->count < 16)
                snprintf(result->lines[result->count++], 256, "ERROR");
            continue;
        }
        if (result->count < 16)
            describe(&cmd, result->lines[result->count++], 256);
        if (cmd.verb == CAIRN_CSYNC_AUTHENTICATE)
            cairn_csync_reader_expect_line(reader);
        cairn_csync_command_release(&cmd);
    }
    cairn_csync_reader_free(reader);
    CHECK_INT(stats.released, stats.begun);
}

static const char session[] =
    "AUTHENTICATE SCRAM-SHA-512 biwsbj1yZXBs\r\n"
    "Yz1iaXdzLHI9\r\n"
    "COMPRESS DEFLATE\r\n"
    "GET USER anne\r\n"
    "apply MESSAGE (%{default " GUID1 " 7}\r\nab\r\ncd\r NIL)\r\n"
    "Apply MAILBOX %(UNIQUEID x1 ACL \"anne\tlrs\t\" LIT {2}\r\nab)\r\n"
    "C01 CAPABILITY\r\n"
    "\r\n"
    "NOOP\n"
    "EXIT\r\n";

static const char *const session_expected[] = {
    "AUTHENTICATE/AUTHENTICATE|SCRAM-SHA-512|biwsbj1yZXBs",
    "(line)/|Yz1iaXdzLHI9",
    "COMPRESS/COMPRESS|DEFLATE",
    "GET/GET|USER anne",
    "APPLY/apply|MESSAGE (%{default " GUID1 " 7}\r\nab\r\ncd\r NIL)",
    "APPLY/Apply|MAILBOX %(UNIQUEID x1 ACL \"anne\tlrs\t\" LIT ab)",
    "(unknown)/C01|CAPABILITY",
    "(unknown)/",
    "NOOP/NOOP",
    "EXIT/EXIT",
};

static void
test_reader_split(void)
{
    size_t expected = sizeof(session_expected) / sizeof(session_expected[0]);
    size_t chunks[] = {0, 1, 2, 3, 7, 64};
    struct session_result result;

    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        run_session(session, sizeof(session) - 1, chunks[c], 1024, NULL,
                    &result);
        CHECK_INT(result.errors, 0);
        CHECK_INT(result.count, (int)expected);
        for (size_t i = 0; i < expected && i < (size_t)result.count; i++)
            CHECK_STR(result.lines[i], session_expected[i]);
    }
}

struct resync_case {
    const char *what;
    const char *input;
    size_t max_line;
    uint64_t max_literal; /* 0: default */
    int rc;
    const char *message;
    const char *next; /* the command read after the bad one */
};

static void
test_resync(void)
{
    const struct resync_case cases[] = {
        {"extra paren", "APPLY X (a b))\r\nNOOP\r\n", 1024, 0, CAIRN_EPARSE,
         "Failed to parse APPLY line: expected end of line", "NOOP/NOOP"},
        {"missing argument", "GET\r\nNOOP\r\n", 1024, 0, CAIRN_EPARSE,
         "Missing required argument to Get", "NOOP/NOOP"},
        {"missing value", "APPLY UNUSER\r\nNOOP\r\n", 1024, 0, CAIRN_EPARSE,
         "missing value after key", "NOOP/NOOP"},
        {"CR in quoted, literal after",
         "APPLY M %(A \"bad\rq\" B {6+}\r\nNOOP\r\n)\r\nEXIT\r\n", 1024, 0,
         CAIRN_EPARSE, "CR inside a quoted string", "EXIT/EXIT"},
        {"file literal after error",
         "APPLY MESSAGE (\"x\ry\" %{default " GUID1
         " 6}\r\nNOOP\r\n)\r\nEXIT\r\n",
         1024, 0, CAIRN_EPARSE, "CR inside", "EXIT/EXIT"},
        {"literal above limit", "APPLY X {6+}\r\nabcdef\r\nNOOP\r\n", 1024, 4,
         CAIRN_ETOOBIG, "literal length 6 exceeds limit 4", "NOOP/NOOP"},
        {"bad literal length", "APPLY X {6x}\r\nNOOP\r\n", 1024, 0,
         CAIRN_EPARSE, "bad literal length", "NOOP/NOOP"},
        {"line too long",
         "NOOP aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
         "EXIT\r\n",
         32, 0, CAIRN_ETOOBIG, "command line longer than 32", "EXIT/EXIT"},
        {"word too long",
         "NOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOP\r\nEXIT\r\n", 16, 0,
         CAIRN_ETOOBIG, "command word longer than 16", "EXIT/EXIT"},
        {"too many arguments", "NOOP a b c d e f g h i\r\nEXIT\r\n", 1024, 0,
         CAIRN_EPARSE, "Unexpected extra arguments to Noop", "EXIT/EXIT"},
        {"binary garbage", "\x01\x02((\x7f\r\nNOOP\r\n", 1024, 0, 0, NULL,
         "(unknown)/\x01\x02((\x7f"},
    };
    struct cairn_dlist_limits limits;
    struct session_result result;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct resync_case *c = &cases[i];
        for (size_t chunk = 0; chunk < 2; chunk++) {
            cairn_dlist_limits_default(&limits);
            if (c->max_literal)
                limits.max_literal = c->max_literal;
            run_session(c->input, strlen(c->input), chunk, c->max_line, &limits,
                        &result);
            if (c->message == NULL) {
                CHECK_INT(result.errors, 0);
                CHECK(result.count >= 1);
                CHECK_STR(result.lines[0], c->next);
                continue;
            }
            CHECK_INT(result.errors, 1);
            CHECK_INT(result.count, 2);
            CHECK(strstr(result.first_error, c->message) != NULL);
            if (strstr(result.first_error, c->message) == NULL)
                fprintf(stderr, "  case %s: \"%s\"\n", c->what,
                        result.first_error);
            CHECK_INT(atoi(result.first_error), c->rc);
            CHECK_STR(result.lines[1], c->next);
        }
    }
}

/* A sink failing inside a message body: the rest of the body is skipped. */
static void
test_resync_sink_failure(void)
{
    static const char input[] =
        "APPLY MESSAGE (%{default " GUID1 " 8}\r\nNOOP\r\nXY)\r\nEXIT\r\n";
    struct memory_sink_stats stats = {0};
    struct cairn_dlist_file_sink sink = memory_sink(&stats);
    struct cairn_csync_reader *reader = NULL;
    struct cairn_csync_command cmd;
    size_t at = 0, used = 0;
    int rc;

    sink.data = refusing_data;
    CHECK_INT(cairn_csync_reader_new(1024, NULL, &sink, &reader), 0);
    if (reader == NULL)
        return;
    rc = cairn_csync_reader_feed(reader, input, sizeof(input) - 1, &used, &cmd);
    CHECK_INT(rc, CAIRN_ENOSPACE);
    CHECK(strstr(cairn_csync_reader_error(reader), "file sink failed") != NULL);
    CHECK(cairn_csync_reader_skipping(reader));
    at = used;
    rc = cairn_csync_reader_feed(reader, input + at, sizeof(input) - 1 - at,
                                 &used, &cmd);
    CHECK_INT(rc, 0);
    CHECK_INT(cmd.verb, CAIRN_CSYNC_EXIT);
    CHECK_U64(at + used, sizeof(input) - 1);
    cairn_csync_command_release(&cmd);
    cairn_csync_reader_free(reader);
    CHECK_INT(stats.begun, 1);
    CHECK_INT(stats.released, 1);
}

/* --- responses --------------------------------------------------------- */

static void
test_response_writer(void)
{
    struct cairn_dlist *item = cairn_dlist_new_kvlist("MAILBOX");
    struct cairn_buf out;

    cairn_dlist_add_atom(item, "UNIQUEID", "x1");
    cairn_dlist_add_num(item, "LAST_UID", 3);
    cairn_buf_init(&out, 4096);
    CHECK_INT(cairn_csync_write_untagged(&out, item, NULL), 0);
    CHECK_INT(cairn_csync_write_response(&out, CAIRN_CSYNC_OK,
                                         CAIRN_CSYNC_CODE_NONE, NULL),
              0);
    CHECK_INT(cairn_csync_write_response(&out, CAIRN_CSYNC_NO,
                                         CAIRN_CSYNC_CODE_MAILBOX_LOCKED, NULL),
              0);
    CHECK_INT(
        cairn_csync_write_response(&out, CAIRN_CSYNC_NO,
                                   CAIRN_CSYNC_CODE_PROTOCOL_BAD_PARAMETERS,
                                   "user %s and %s", "anne", "bob"),
        0);
    CHECK_INT(cairn_csync_write_response(&out, CAIRN_CSYNC_BAD,
                                         CAIRN_CSYNC_CODE_NONE, "bad\r\nline"),
              0);
    CHECK_INT(cairn_csync_write_response(&out, CAIRN_CSYNC_BYE,
                                         CAIRN_CSYNC_CODE_NONE, NULL),
              0);
    CHECK_INT(cairn_csync_write_response(&out, CAIRN_CSYNC_CONTINUE,
                                         CAIRN_CSYNC_CODE_NONE, "%s",
                                         "Y2hhbGxlbmdl"),
              0);
    CHECK_STR(out.data, "* MAILBOX %(UNIQUEID x1 LAST_UID 3)\r\n"
                        "OK Success\r\n"
                        "NO IMAP_MAILBOX_LOCKED Mailbox locked\r\n"
                        "NO IMAP_PROTOCOL_BAD_PARAMETERS user anne and bob\r\n"
                        "BAD bad  line\r\n"
                        "BYE shutting down\r\n"
                        "+ Y2hhbGxlbmdl\r\n");
    cairn_buf_reset(&out);
    CHECK_INT(cairn_csync_write_command(&out, "GET", item, NULL), 0);
    CHECK_STR(out.data, "GET MAILBOX %(UNIQUEID x1 LAST_UID 3)\r\n");
    cairn_buf_release(&out);
    cairn_dlist_free(item);
}

static int
read_response(const char *input, size_t chunk, size_t max_items,
              struct cairn_csync_response *response, size_t *consumed)
{
    struct cairn_csync_response_reader *reader = NULL;
    size_t len = strlen(input), at = 0, used = 0;
    int rc;

    memset(response, 0, sizeof(*response));
    if ((rc = cairn_csync_response_reader_new(1024, max_items, NULL, NULL,
                                              &reader)) < 0)
        return rc;
    rc = CAIRN_EAGAIN;
    while (at < len && rc == CAIRN_EAGAIN) {
        size_t piece = chunk == 0 || chunk > len - at ? len - at : chunk;
        rc = cairn_csync_response_reader_feed(reader, input + at, piece, &used,
                                              response);
        at += used;
    }
    *consumed = at;
    cairn_csync_response_reader_free(reader);
    return rc;
}

static void
test_response_reader(void)
{
    const struct {
        const char *input;
        int rc;
        enum cairn_csync_status status;
        enum cairn_csync_code code;
        size_t items;
    } cases[] = {
        {"* MAILBOX %(A 1)\r\n* LSUB (user.anne {3+}\r\nx\ry)\r\nOK "
         "Success\r\n",
         0, CAIRN_CSYNC_OK, CAIRN_CSYNC_CODE_NONE, 2},
        {"OK success\r\n", 0, CAIRN_CSYNC_OK, CAIRN_CSYNC_CODE_NONE, 0},
        {"NO IMAP_INVALID_USER No Such User\r\n", 0, CAIRN_CSYNC_NO,
         CAIRN_CSYNC_CODE_INVALID_USER, 0},
        {"NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox\r\n", 0, CAIRN_CSYNC_NO,
         CAIRN_CSYNC_CODE_MAILBOX_NONEXISTENT, 0},
        {"NO IMAP_MAILBOX_LOCKED Mailbox locked\r\n", 0, CAIRN_CSYNC_NO,
         CAIRN_CSYNC_CODE_MAILBOX_LOCKED, 0},
        {"NO IMAP_MAILBOX_MOVED x\r\n", 0, CAIRN_CSYNC_NO,
         CAIRN_CSYNC_CODE_MAILBOX_MOVED, 0},
        {"NO IMAP_MAILBOX_NOTSUPPORTED x\r\n", 0, CAIRN_CSYNC_NO,
         CAIRN_CSYNC_CODE_MAILBOX_NOTSUPPORTED, 0},
        {"NO IMAP_SYNC_CHECKSUM Checksum Failure\r\n", 0, CAIRN_CSYNC_NO,
         CAIRN_CSYNC_CODE_SYNC_CHECKSUM, 0},
        {"NO IMAP_SYNC_CHANGED x\r\n", 0, CAIRN_CSYNC_NO,
         CAIRN_CSYNC_CODE_SYNC_CHANGED, 0},
        {"NO IMAP_SYNC_BADSIEVE x\r\n", 0, CAIRN_CSYNC_NO,
         CAIRN_CSYNC_CODE_SYNC_BADSIEVE, 0},
        {"NO IMAP_PROTOCOL_ERROR Protocol error\r\n", 0, CAIRN_CSYNC_NO,
         CAIRN_CSYNC_CODE_PROTOCOL_ERROR, 0},
        {"NO IMAP_PROTOCOL_BAD_PARAMETERS Bad parameters\r\n", 0,
         CAIRN_CSYNC_NO, CAIRN_CSYNC_CODE_PROTOCOL_BAD_PARAMETERS, 0},
        /* No text after the code: sync_client does not match it. */
        {"NO IMAP_PROTOCOL_BAD_PARAMETERS\r\n", 0, CAIRN_CSYNC_NO,
         CAIRN_CSYNC_CODE_REMOTE_DENIED, 0},
        {"NO Unknown error\r\n", 0, CAIRN_CSYNC_NO,
         CAIRN_CSYNC_CODE_REMOTE_DENIED, 0},
        {"BYE shutting down\r\n", 0, CAIRN_CSYNC_BYE,
         CAIRN_CSYNC_CODE_BYE_LOGOUT, 0},
        {"BAD IMAP_PROTOCOL_ERROR Unrecognized command\r\n", 0, CAIRN_CSYNC_BAD,
         CAIRN_CSYNC_CODE_PROTOCOL_ERROR, 0},
        {"+ Y2hhbGxlbmdl\r\n", 0, CAIRN_CSYNC_CONTINUE, CAIRN_CSYNC_CODE_NONE,
         0},
        {"OK\r\n", CAIRN_EPROTO, 0, 0, 0},
        {"* FOO %(A 1) x\r\nOK y\r\n", CAIRN_EPARSE, 0, 0, 0},
        {"* A 1\r\n* B 2\r\n* C 3\r\nOK y\r\n", CAIRN_ETOOBIG, 0, 0, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (size_t chunk = 0; chunk < 2; chunk++) {
            struct cairn_csync_response response;
            size_t consumed = 0;
            int rc =
                read_response(cases[i].input, chunk, 2, &response, &consumed);
            CHECK_INT(rc, cases[i].rc);
            if (rc != cases[i].rc)
                fprintf(stderr, "  case %zu: rc %d\n", i, rc);
            if (rc == 0) {
                CHECK_U64(consumed, strlen(cases[i].input));
                CHECK_INT(response.status, cases[i].status);
                CHECK_INT(response.code, cases[i].code);
                CHECK_U64(response.item_count, cases[i].items);
                CHECK(response.text != NULL);
            }
            cairn_csync_response_release(&response);
        }
    }
}

static void
test_take_line(void)
{
    struct cairn_buf input;
    char *line = NULL;
    size_t len = 0;

    cairn_buf_init(&input, 1024);
    cairn_buf_append_str(&input, "* SASL PLAIN\r\n* OK x\nrest");
    CHECK_INT(cairn_csync_take_line(&input, 64, &line, &len), 0);
    CHECK_STR(line, "* SASL PLAIN");
    CHECK_U64(len, 12);
    free(line);
    CHECK_INT(cairn_csync_take_line(&input, 64, &line, &len), 0);
    CHECK_STR(line, "* OK x");
    free(line);
    CHECK_INT(cairn_csync_take_line(&input, 64, &line, &len), CAIRN_EAGAIN);
    CHECK_INT(cairn_csync_take_line(&input, 4, &line, &len), CAIRN_ETOOBIG);
    CHECK_STR(input.data, "rest");
    cairn_buf_release(&input);
}

/* --- COMPRESS ---------------------------------------------------------- */

static void
test_compress_round_trip(void)
{
    const char *messages[] = {"GET USER anne\r\n", "OK Success\r\n",
                              "APPLY MAILBOX %(A 1 B 2 C 3 D 4)\r\n"};
    struct cairn_compress *sender = NULL, *receiver = NULL;
    struct cairn_buf wire, plain, expected;

    CHECK_INT(cairn_compress_new(&sender), 0);
    CHECK_INT(cairn_compress_new(&receiver), 0);
    cairn_buf_init(&wire, 1 << 20);
    cairn_buf_init(&plain, 1 << 20);
    cairn_buf_init(&expected, 1 << 20);
    for (size_t i = 0; i < 3 && sender && receiver; i++) {
        size_t before = wire.len, at;
        CHECK_INT(cairn_compress_deflate(sender, messages[i],
                                         strlen(messages[i]), true, &wire),
                  0);
        /* Each sync flush ends in an empty stored block: 00 00 ff ff. */
        CHECK(wire.len >= before + 4 &&
              memcmp(wire.data + wire.len - 4, "\0\0\xff\xff", 4) == 0);
        cairn_buf_append_str(&expected, messages[i]);
        /* Inflate what is new, at most 5 output bytes per call. */
        at = before;
        while (at < wire.len) {
            size_t used = 0, had = plain.len;
            CHECK_INT(cairn_compress_inflate(receiver, wire.data + at,
                                             wire.len - at, &used, 5, &plain),
                      0);
            CHECK(plain.len - had <= 5);
            at += used;
            if (used == 0 && plain.len == had)
                break;
        }
        CHECK_U64(at, wire.len);
        CHECK_MEM(plain.data, plain.len, expected.data, expected.len);
    }
    cairn_compress_free(sender);
    cairn_compress_free(receiver);
    cairn_buf_release(&wire);
    cairn_buf_release(&plain);
    cairn_buf_release(&expected);
}

/* Our deflate output is plain RFC 1951: zlib's raw inflate reads it. */
static void
test_compress_interop(void)
{
    static char zeros[1 << 20];
    struct cairn_compress *compress = NULL;
    struct cairn_buf wire, plain;
    unsigned char out[64];
    z_stream z;
    size_t used = 0, total = 0;
    int calls = 0;

    memset(&z, 0, sizeof(z));
    CHECK_INT(cairn_compress_new(&compress), 0);
    cairn_buf_init(&wire, 1 << 20);
    CHECK_INT(cairn_compress_deflate(compress, "hello", 5, true, &wire), 0);
    CHECK_INT(inflateInit2(&z, -15), Z_OK);
    z.next_in = (Bytef *)wire.data;
    z.avail_in = (uInt)wire.len;
    z.next_out = out;
    z.avail_out = sizeof(out);
    CHECK_INT(inflate(&z, Z_SYNC_FLUSH), Z_OK);
    CHECK_MEM(out, sizeof(out) - z.avail_out, "hello", 5);
    inflateEnd(&z);
    /* 1 MiB of zeros is ~1 KiB on the wire; inflation stays bounded. */
    cairn_compress_free(compress);
    compress = NULL;
    CHECK_INT(cairn_compress_new(&compress), 0);
    cairn_buf_reset(&wire);
    CHECK_INT(
        cairn_compress_deflate(compress, zeros, sizeof(zeros), true, &wire), 0);
    CHECK(wire.len < 8192);
    cairn_buf_init(&plain, 4096);
    for (size_t at = 0; at < wire.len || used > 0; at += used) {
        cairn_buf_reset(&plain);
        CHECK_INT(cairn_compress_inflate(compress, wire.data + at,
                                         wire.len - at, &used, 4096, &plain),
                  0);
        CHECK(plain.len <= 4096);
        total += plain.len;
        if (++calls > 1000 || (used == 0 && plain.len == 0))
            break;
    }
    CHECK_U64(total, sizeof(zeros));
    CHECK(calls >= 256);
    /* Garbage is a corrupt stream. */
    cairn_buf_reset(&plain);
    CHECK_INT(cairn_compress_inflate(compress, "\xff\xff\xff\xff", 4, &used,
                                     4096, &plain),
              CAIRN_EPARSE);
    cairn_compress_free(compress);
    cairn_buf_release(&wire);
    cairn_buf_release(&plain);
}

int
main(void)
{
    test_reader_split();
    test_resync();
    test_resync_sink_failure();
    test_response_writer();
    test_response_reader();
    test_take_line();
    test_compress_round_trip();
    test_compress_interop();
    return check_exit("test_csync");
}
