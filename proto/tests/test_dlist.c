/*
 * test_dlist.c - unit tests of the dlist codec: Cyrus's emitter rules at
 * their boundaries, malformed and hostile input (each a clear error code
 * and message), typed getters, file literals through the sink, and input
 * split at every possible point.
 */
#include "check.h"
#include "dlist.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- emitter rules ----------------------------------------------------- */

static char *
repeat(char c, size_t n, size_t at, char other)
{
    char *text = malloc(n + 1);

    memset(text, c, n);
    if (at < n)
        text[at] = other;
    text[n] = '\0';
    return text;
}

static void
expect_print(const char *what, const struct cairn_dlist *node, bool key,
             const char *want, size_t want_len)
{
    struct cairn_buf out;

    cairn_buf_init(&out, 1 << 20);
    CHECK_INT(cairn_dlist_print(node, key, &out, NULL), 0);
    CHECK_MEM(out.data, out.len, want, want_len);
    if (out.len != want_len || memcmp(out.data, want, want_len) != 0)
        fprintf(stderr, "  case %s: got \"%.60s\"\n", what,
                out.data ? out.data : "");
    cairn_buf_release(&out);
}

/* One string printed as the only element of a list: "(" value ")". */
static void
expect_string(const char *what, const char *value, size_t len, const char *want,
              size_t want_len)
{
    struct cairn_dlist *list = cairn_dlist_new_list(NULL);
    struct cairn_buf wrapped;

    cairn_buf_init(&wrapped, 1 << 20);
    cairn_buf_append(&wrapped, "(", 1);
    cairn_buf_append(&wrapped, want, want_len);
    cairn_buf_append(&wrapped, ")", 1);
    if (value != NULL && memchr(value, '\0', len) != NULL)
        CHECK_INT(cairn_dlist_add_buf(list, NULL, value, len), 0);
    else
        CHECK_INT(cairn_dlist_add_string(list, NULL, value, len), 0);
    expect_print(what, list, false, wrapped.data, wrapped.len);
    cairn_buf_release(&wrapped);
    cairn_dlist_free(list);
}

static void
test_emitter_rules(void)
{
    char *a1023 = repeat('a', 1023, SIZE_MAX, 0);
    char *a1024 = repeat('a', 1024, SIZE_MAX, 0);
    char *s1023 = repeat('a', 1023, 5, ' ');
    char *s1024 = repeat('a', 1024, 5, ' ');
    char lit1024[2048];
    int n;
    const struct {
        const char *what;
        const char *value;
        size_t len;
        const char *want;
        size_t want_len;
    } cases[] = {
        {"atom", "user.anne", 9, "user.anne", 9},
        {"atom with @ ! / : $", "a@b!c/d:1,5$", 12, "a@b!c/d:1,5$", 12},
        {"1023-byte atom", a1023, 1023, a1023, 1023},
        {"1023-byte quoted", s1023, 1023, NULL, 0},
        {"0x1f stays an atom", "a\x1f", 2, "a\x1f", 2},
        {"0x1e forces quotes", "a\x1e", 2, "\"a\x1e\"", 4},
        {"0x7f forces quotes", "a\x7f", 2, "\"a\x7f\"", 4},
        {"NIL is quoted", "NIL", 3, "\"NIL\"", 5},
        {"nil is an atom", "nil", 3, "nil", 3},
        {"empty string", "", 0, "\"\"", 2},
        {"NULL is NIL", NULL, 0, "NIL", 3},
        {"TAB in quotes", "anne\tlrs\t", 9, "\"anne\tlrs\t\"", 11},
        {"space quoted", "a b", 3, "\"a b\"", 5},
        {"star quoted", "1:*", 3, "\"1:*\"", 5},
        {"brace quoted", "a{b", 3, "\"a{b\"", 5},
        {"paren quoted", "a(b", 3, "\"a(b\"", 5},
        {"double quote -> literal", "a\"b", 3, "{3+}\r\na\"b", 9},
        {"percent -> literal", "a%b", 3, "{3+}\r\na%b", 9},
        {"backslash -> literal", "a\\b", 3, "{3+}\r\na\\b", 9},
        {"CR -> literal", "a\rb", 3, "{3+}\r\na\rb", 9},
        {"LF -> literal", "a\nb", 3, "{3+}\r\na\nb", 9},
        {"8-bit -> literal", "caf\xc3\xa9", 5, "{5+}\r\ncaf\xc3\xa9", 11},
        {"binary with NUL", "a\0b", 3, "{3+}\r\na\0b", 9},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].want == NULL) {
            char quoted[1030];
            n = snprintf(quoted, sizeof(quoted), "\"%s\"", cases[i].value);
            expect_string(cases[i].what, cases[i].value, cases[i].len, quoted,
                          (size_t)n);
            continue;
        }
        expect_string(cases[i].what, cases[i].value, cases[i].len,
                      cases[i].want, cases[i].want_len);
    }
    /* 1024 bytes: neither atom nor quoted string, a literal. */
    n = snprintf(lit1024, sizeof(lit1024), "{1024+}\r\n%s", a1024);
    expect_string("1024-byte atom chars", a1024, 1024, lit1024, (size_t)n);
    n = snprintf(lit1024, sizeof(lit1024), "{1024+}\r\n%s", s1024);
    expect_string("1024-byte with space", s1024, 1024, lit1024, (size_t)n);
    free(a1023);
    free(a1024);
    free(s1023);
    free(s1024);
}

static void
test_typed_printing(void)
{
    struct cairn_dlist *kv = cairn_dlist_new_kvlist("MAILBOX");
    struct cairn_dlist *flags = NULL, *record = NULL, *empty = NULL;
    const unsigned char sha1[20] = {0xde, 0xad, 0xbe, 0xef, 0x01};
    const char *want =
        "MAILBOX %(UID 18446744073709551615 THRID 000000000000001f "
        "GUID 0123456789abcdef0123456789abcdef01234567 "
        "G2 deadbeef01000000000000000000000000000000 "
        "FLAGS (\\Seen $Label1) QUOTAROOT NIL RECORD (%(X \"\")) E %())";

    CHECK_INT(cairn_dlist_add_num(kv, "UID", UINT64_MAX), 0);
    CHECK_INT(cairn_dlist_add_hex64(kv, "THRID", 0x1f), 0);
    CHECK_INT(cairn_dlist_add_guid(kv, "GUID",
                                   "0123456789ABCDEF0123456789abcdef01234567"),
              0);
    CHECK_INT(cairn_dlist_add_guid_bytes(kv, "G2", sha1), 0);
    CHECK_INT(cairn_dlist_add_list(kv, "FLAGS", &flags), 0);
    CHECK_INT(cairn_dlist_add_flag(flags, NULL, "\\Seen"), 0);
    CHECK_INT(cairn_dlist_add_flag(flags, NULL, "$Label1"), 0);
    CHECK_INT(cairn_dlist_add_nil(kv, "QUOTAROOT"), 0);
    CHECK_INT(cairn_dlist_add_list(kv, "RECORD", &record), 0);
    CHECK_INT(cairn_dlist_add_kvlist(record, NULL, &empty), 0);
    CHECK_INT(cairn_dlist_add_atom(empty, "X", ""), 0);
    CHECK_INT(cairn_dlist_add_kvlist(kv, "E", &empty), 0);
    expect_print("typed kvlist", kv, true, want, strlen(want));
    expect_print("without key", kv, false, want + 8, strlen(want) - 8);
    cairn_dlist_free(kv);
}

static void
test_construction_errors(void)
{
    struct cairn_dlist *kv = cairn_dlist_new_kvlist(NULL);
    struct cairn_dlist *atom = cairn_dlist_new_atom("USER", "anne");
    struct cairn_dlist *list = NULL, *deep = NULL;
    struct cairn_buf small;

    CHECK_INT(cairn_dlist_add_atom(atom, "X", "y"), CAIRN_EINVAL);
    CHECK_INT(cairn_dlist_add_atom(kv, NULL, "y"), CAIRN_EINVAL);
    CHECK_INT(cairn_dlist_add_guid(kv, "G", "1234"), CAIRN_EINVAL);
    CHECK_INT(cairn_dlist_add_string(kv, "S", "a\0b", 3), CAIRN_EINVAL);
    CHECK_INT(
        cairn_dlist_add_file(kv, "F", "default", "xyz", 1, NULL, NULL, NULL),
        CAIRN_EINVAL);
    CHECK_INT(cairn_dlist_add_file(kv, "F", "default",
                                   "0123456789abcdef0123456789abcdef01234567",
                                   5, NULL, NULL, NULL),
              0);
    cairn_buf_init(&small, 1 << 10);
    /* A FILE node cannot be printed without a body writer. */
    CHECK_INT(cairn_dlist_print(kv, false, &small, NULL), CAIRN_EINVAL);
    cairn_buf_release(&small);
    cairn_buf_init(&small, 9);
    CHECK_INT(cairn_dlist_print(atom, true, &small, NULL), 0);
    CHECK_STR(small.data, "USER anne");
    CHECK_INT(cairn_dlist_print(atom, true, &small, NULL), CAIRN_ETOOBIG);
    cairn_buf_release(&small);
    /* Appending a root, then a 10,000-deep built tree freed iteratively. */
    CHECK_INT(cairn_dlist_append(kv, "USER2", atom), 0);
    CHECK_STR(cairn_dlist_name(cairn_dlist_get(kv, "USER2")), "USER2");
    list = cairn_dlist_new_list(NULL);
    deep = list;
    for (int i = 0; i < 10000 && deep != NULL; i++) {
        struct cairn_dlist *child = NULL;
        CHECK_INT(cairn_dlist_add_list(deep, NULL, &child), 0);
        deep = child;
    }
    cairn_dlist_free(list);
    cairn_dlist_free(kv);
}

/* --- malformed input --------------------------------------------------- */

struct bad_case {
    const char *what;
    const char *input;
    size_t len; /* 0: strlen(input) */
    unsigned flags;
    uint64_t max_literal; /* 0: default */
    int rc;
    const char *message; /* substring of the error */
};

/* Feeds one byte at a time, then finishes; returns the first error. */
static int
parse_bytewise(const char *data, size_t len, unsigned flags,
               const struct cairn_dlist_limits *limits, char *error,
               size_t error_size)
{
    struct cairn_dlist_parser *parser = NULL;
    size_t at = 0, used = 0;
    int rc;

    if ((rc = cairn_dlist_parser_new(limits, NULL, flags, &parser)) < 0)
        return rc;
    rc = CAIRN_EAGAIN;
    while (at < len && rc == CAIRN_EAGAIN) {
        rc = cairn_dlist_parser_feed(parser, data + at, 1, &used);
        at += used;
    }
    if (rc == CAIRN_EAGAIN)
        rc = cairn_dlist_parser_finish(parser);
    snprintf(error, error_size, "%s", cairn_dlist_parser_error(parser));
    cairn_dlist_free(cairn_dlist_parser_take(parser));
    cairn_dlist_parser_free(parser);
    return rc;
}

static void
test_malformed(void)
{
    static char deep[10001];
    static const char guid_bad[] =
        "(%{default 0123456789abcdef0123456789abcdef0123456z 5}\r\nhello)";
    struct bad_case cases[] = {
        {"truncated literal", "{10+}\r\nabc", 0, 0, 0, CAIRN_EPARSE,
         "unexpected end of input"},
        {"bad literal length", "{12x}\r\nabcdefghijkl", 0, 0, 0, CAIRN_EPARSE,
         "bad literal length"},
        {"literal without length", "{}\r\n", 0, 0, 0, CAIRN_EPARSE,
         "literal without a length"},
        {"literal header without CRLF", "{3+}abc", 0, 0, 0, CAIRN_EPARSE,
         "not followed by CRLF"},
        {"unbalanced open", "(a (b c)", 0, 0, 0, CAIRN_EPARSE,
         "unexpected end of input"},
        {"unbalanced close", "KEY (a b))\r\n", 0,
         CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL, 0, CAIRN_EPARSE,
         "expected end of line"},
        {"stray close", ")", 0, 0, 0, CAIRN_EPARSE, "unexpected ')'"},
        {"nesting 10,000 deep", deep, 0, 0, 0, CAIRN_ETOOBIG,
         "nesting deeper than 64"},
        {"2^63 literal", "{9223372036854775808+}\r\n", 0, 0, 0, CAIRN_ETOOBIG,
         "literal length 9223372036854775808 exceeds limit 67108864"},
        {"2^64 literal", "{18446744073709551616}\r\n", 0, 0, 0, CAIRN_EOVERFLOW,
         "does not fit in 64 bits"},
        {"literal above maximum", "{17+}\r\n01234567890123456", 0, 0, 16,
         CAIRN_ETOOBIG, "literal length 17 exceeds limit 16"},
        {"file guid not hex", guid_bad, 0, 0, 0, CAIRN_EPARSE,
         "is not 40 hex digits"},
        {"file size 2^32",
         "%{p 0123456789abcdef0123456789abcdef01234567 "
         "4294967296}\r\n",
         0, 0, 0, CAIRN_EOVERFLOW, "exceeds 4294967295"},
        {"unknown percent", "%[", 0, 0, 0, CAIRN_EPARSE, "unknown % type"},
        {"CR in quoted", "\"ab\rc\"", 0, 0, 0, CAIRN_EPARSE,
         "CR inside a quoted string"},
        {"LF in quoted", "(\"ab\nc\")", 0, 0, 0, CAIRN_EPARSE,
         "LF inside a quoted string"},
        {"missing CRLF", "USER anne", 0,
         CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL, 0, CAIRN_EPARSE,
         "unexpected end of input"},
        {"junk before CRLF", "USER \"anne\"x\r\n", 0,
         CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL, 0, CAIRN_EPARSE,
         "expected end of line"},
        {"missing value", "USER\r\n", 0,
         CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL, 0, CAIRN_EPARSE,
         "missing value after key"},
        {"NUL in literal key", "{3+}\r\na\0b x", 11, CAIRN_DLIST_PARSE_KEY, 0,
         CAIRN_EPARSE, "NUL byte"},
        {"empty input", "", 0, 0, 0, CAIRN_EPARSE, "unexpected end of input"},
    };
    struct cairn_dlist_limits limits;
    char error[256];

    memset(deep, '(', sizeof(deep) - 1);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct bad_case *c = &cases[i];
        struct cairn_dlist *tree = NULL;
        size_t len = c->len ? c->len : strlen(c->input);
        int rc;

        cairn_dlist_limits_default(&limits);
        if (c->max_literal)
            limits.max_literal = c->max_literal;
        rc = cairn_dlist_parse(c->input, len, c->flags, &limits, NULL, &tree,
                               error, sizeof(error));
        CHECK_INT(rc, c->rc);
        CHECK(tree == NULL);
        CHECK(strstr(error, c->message) != NULL);
        if (rc != c->rc || strstr(error, c->message) == NULL)
            fprintf(stderr, "  case %s: rc %d \"%s\"\n", c->what, rc, error);
        cairn_dlist_free(tree);
        rc = parse_bytewise(c->input, len, c->flags, &limits, error,
                            sizeof(error));
        CHECK_INT(rc, c->rc);
        CHECK(strstr(error, c->message) != NULL);
        if (rc != c->rc || strstr(error, c->message) == NULL)
            fprintf(stderr, "  bytewise %s: rc %d \"%s\"\n", c->what, rc,
                    error);
    }
}

static void
test_limits(void)
{
    struct cairn_dlist_limits limits;
    struct cairn_dlist *tree = NULL;
    char error[256];

    cairn_dlist_limits_default(&limits);
    limits.max_nodes = 3;
    CHECK_INT(cairn_dlist_parse("(a b c)", 7, 0, &limits, NULL, &tree, error,
                                sizeof(error)),
              CAIRN_ETOOBIG);
    CHECK(strstr(error, "more than 3 nodes") != NULL);
    CHECK_INT(cairn_dlist_parse("(a b)", 5, 0, &limits, NULL, &tree, error,
                                sizeof(error)),
              0);
    cairn_dlist_free(tree);
    cairn_dlist_limits_default(&limits);
    limits.max_atom = 4;
    CHECK_INT(cairn_dlist_parse("(abcde)", 7, 0, &limits, NULL, &tree, error,
                                sizeof(error)),
              CAIRN_ETOOBIG);
    CHECK(strstr(error, "atom longer than 4 bytes") != NULL);
    cairn_dlist_limits_default(&limits);
    limits.max_quoted = 2;
    CHECK_INT(cairn_dlist_parse("\"abc\"", 5, 0, &limits, NULL, &tree, error,
                                sizeof(error)),
              CAIRN_ETOOBIG);
    cairn_dlist_limits_default(&limits);
    limits.max_bytes = 10;
    CHECK_INT(cairn_dlist_parse("(abcdef ghijkl)", 15, 0, &limits, NULL, &tree,
                                error, sizeof(error)),
              CAIRN_ETOOBIG);
    cairn_dlist_limits_default(&limits);
    limits.max_file = 4;
    CHECK_INT(cairn_dlist_parse("%{p 0123456789abcdef0123456789abcdef01234567"
                                " 5}\r\nhello",
                                49, 0, &limits, NULL, &tree, error,
                                sizeof(error)),
              CAIRN_ETOOBIG);
    CHECK(strstr(error, "file literal size 5 exceeds limit 4") != NULL);
}

/* --- parsing and getters ----------------------------------------------- */

static void
test_getters(void)
{
    static const char input[] =
        "MAILBOX %(UID 4294967297 BIG 18446744073709551615 NEG -1 JUNK 12a "
        "NAME \"a b\" LIT {3}\r\nabc BIN {3+}\r\na\0c FLAGS (\\Seen $x) "
        "QR NIL QS \"NIL\" GUID 0123456789abcdef0123456789abcdef01234567 "
        "SHORT 0123456789abcdef0123456789abcdef0123456 HEX 00000000000001ff "
        "DATE 1748858580 SUB %(A 1) A first A second ESC \"q\\\"b\\\\s\")";
    struct cairn_dlist *tree = NULL;
    const struct cairn_dlist *list = NULL, *first;
    const char *text = NULL;
    size_t len = 0;
    uint32_t n32 = 0;
    uint64_t n64 = 0;
    int64_t date = 0;
    char error[256];

    CHECK_INT(cairn_dlist_parse(input, sizeof(input) - 1, CAIRN_DLIST_PARSE_KEY,
                                NULL, NULL, &tree, error, sizeof(error)),
              0);
    if (tree == NULL) {
        fprintf(stderr, "  getters: %s\n", error);
        return;
    }
    CHECK_STR(cairn_dlist_name(tree), "MAILBOX");
    CHECK_INT(cairn_dlist_type(tree), CAIRN_DLIST_KVLIST);
    CHECK(cairn_dlist_get_num32(tree, "UID", &n32));
    CHECK_U64(n32, 1); /* truncated to 32 bits as Cyrus does */
    CHECK(cairn_dlist_get_num64(tree, "BIG", &n64));
    CHECK_U64(n64, UINT64_MAX);
    CHECK(!cairn_dlist_get_num64(tree, "NEG", &n64));
    CHECK(!cairn_dlist_get_num64(tree, "JUNK", &n64));
    CHECK(!cairn_dlist_get_num64(tree, "uid", &n64)); /* case-sensitive */
    CHECK(cairn_dlist_get_atom(tree, "NAME", &text));
    CHECK_STR(text, "a b");
    CHECK(cairn_dlist_get_atom(tree, "LIT", &text));
    CHECK_STR(text, "abc");
    CHECK(!cairn_dlist_get_atom(tree, "BIN", &text));
    CHECK(cairn_dlist_get_map(tree, "BIN", &text, &len));
    CHECK_MEM(text, len, "a\0c", 3);
    CHECK(cairn_dlist_get_list(tree, "FLAGS", &list));
    CHECK_U64(cairn_dlist_count(list), 2);
    first = cairn_dlist_first(list);
    CHECK_INT(cairn_dlist_type(first), CAIRN_DLIST_FLAG);
    CHECK_INT(cairn_dlist_type(cairn_dlist_next(first)), CAIRN_DLIST_ATOM);
    CHECK(cairn_dlist_get_atom(tree, "QR", &text));
    CHECK(text == NULL);
    CHECK(cairn_dlist_get_atom(tree, "QS", &text));
    CHECK_STR(text, "NIL");
    CHECK(cairn_dlist_get_guid(tree, "GUID", &text));
    CHECK(!cairn_dlist_get_guid(tree, "SHORT", &text));
    CHECK(cairn_dlist_get_hex64(tree, "HEX", &n64));
    CHECK_U64(n64, 0x1ff);
    CHECK(!cairn_dlist_get_hex64(tree, "NAME", &n64));
    CHECK(cairn_dlist_get_date(tree, "DATE", &date));
    CHECK_INT(date, 1748858580);
    CHECK(cairn_dlist_get_list(tree, "SUB", &list));
    CHECK(!cairn_dlist_get_list(tree, "NAME", &list));
    CHECK(cairn_dlist_get_atom(tree, "A", &text));
    CHECK_STR(text, "first");
    CHECK(cairn_dlist_get_atom(tree, "ESC", &text));
    CHECK_STR(text, "q\"b\\s");
    CHECK(!cairn_dlist_get_atom(tree, "MISSING", &text));
    CHECK(!cairn_dlist_get_file(tree, "NAME", &list));
    cairn_dlist_free(tree);
}

static void
test_whitespace(void)
{
    struct cairn_dlist *tree = NULL;
    char error[256];
    const char input[] = "( a\r\n b\t\"c\"  %( K  v )\r\n)";

    CHECK_INT(cairn_dlist_parse(input, sizeof(input) - 1, 0, NULL, NULL, &tree,
                                error, sizeof(error)),
              0);
    CHECK_U64(cairn_dlist_count(tree), 4);
    expect_print("whitespace normalised", tree, false, "(a b c %(K v))", 14);
    cairn_dlist_free(tree);
}

/* --- file literals and split input ------------------------------------- */

static const char file_input[] =
    "APPLY %(MESSAGE (%{default 335fe3294fa28c24ac051ee43c7ed87301b5c044 "
    "13}\r\nHi\r\nthere\r\n\r\n %{p2 5e156b2440e525f29c76e1b55abce31764c34b86 "
    "0}\r\n NIL) X {5+}\r\na\r\n)b F (\\Seen))\r\n";

static void
test_file_literals(void)
{
    struct memory_sink_stats stats = {0};
    struct cairn_dlist_file_sink sink = memory_sink(&stats);
    struct cairn_dlist_body_writer writer = memory_body_writer();
    struct cairn_dlist *tree = NULL;
    const struct cairn_dlist *messages = NULL, *file;
    const char *partition = NULL, *guid = NULL;
    uint64_t size = 0;
    void *handle = NULL;
    struct cairn_buf out;
    char error[256];

    CHECK_INT(cairn_dlist_parse(file_input, sizeof(file_input) - 1,
                                CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL,
                                NULL, &sink, &tree, error, sizeof(error)),
              0);
    CHECK_INT(stats.begun, 2);
    CHECK_INT(stats.ended, 2);
    CHECK(cairn_dlist_get_list(tree, "MESSAGE", &messages));
    CHECK_U64(cairn_dlist_count(messages), 3);
    file = cairn_dlist_first(messages);
    CHECK(cairn_dlist_file_info(file, &partition, &guid, &size, &handle));
    CHECK_STR(partition, "default");
    CHECK_STR(guid, "335fe3294fa28c24ac051ee43c7ed87301b5c044");
    CHECK_U64(size, 13);
    CHECK(handle != NULL);
    if (handle != NULL) {
        struct memory_file *body = handle;
        CHECK_MEM(body->body.data, body->body.len, "Hi\r\nthere\r\n\r\n", 13);
    }
    CHECK_INT(cairn_dlist_type(cairn_dlist_next(cairn_dlist_next(file))),
              CAIRN_DLIST_NIL);
    cairn_buf_init(&out, 1 << 16);
    CHECK_INT(cairn_dlist_print(tree, true, &out, &writer), 0);
    CHECK_INT(cairn_buf_append(&out, "\r\n", 2), 0);
    CHECK_MEM(out.data, out.len, file_input, sizeof(file_input) - 1);
    cairn_buf_release(&out);
    cairn_dlist_free(tree);
    CHECK_INT(stats.released, 2);
}

/* Every split point of file_input gives the same tree as the whole. */
static void
test_split_anywhere(void)
{
    struct memory_sink_stats stats = {0};
    struct cairn_dlist_file_sink sink = memory_sink(&stats);
    struct cairn_dlist_body_writer writer = memory_body_writer();
    struct cairn_dlist_parser *parser = NULL;
    size_t len = sizeof(file_input) - 1;
    int failures = 0;

    CHECK_INT(cairn_dlist_parser_new(
                  NULL, &sink, CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL,
                  &parser),
              0);
    for (size_t split = 0; parser != NULL && split <= len; split++) {
        size_t used1 = 0, used2 = 0;
        struct cairn_dlist *tree;
        struct cairn_buf out;
        int rc = cairn_dlist_parser_feed(parser, file_input, split, &used1);
        if (rc == CAIRN_EAGAIN)
            rc = cairn_dlist_parser_feed(parser, file_input + used1,
                                         len - used1, &used2);
        tree = cairn_dlist_parser_take(parser);
        cairn_buf_init(&out, 1 << 16);
        if (rc != 0 || used1 + used2 != len || tree == NULL ||
            cairn_dlist_print(tree, true, &out, &writer) < 0 ||
            out.len + 2 != len || memcmp(out.data, file_input, out.len) != 0)
            failures++;
        cairn_buf_release(&out);
        cairn_dlist_free(tree);
    }
    CHECK_INT(failures, 0);
    cairn_dlist_parser_free(parser);
    CHECK_INT(stats.released, stats.begun);
}

/* A failing sink stops the parse and every begun handle is released. */
static void
test_sink_failure(void)
{
    struct memory_sink_stats stats = {0};
    struct cairn_dlist_file_sink sink = memory_sink(&stats);
    struct cairn_dlist *tree = NULL;
    char error[256];

    sink.data = refusing_data;
    CHECK_INT(cairn_dlist_parse(file_input, sizeof(file_input) - 1,
                                CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL,
                                NULL, &sink, &tree, error, sizeof(error)),
              CAIRN_ENOSPACE);
    CHECK(strstr(error, "file sink failed") != NULL);
    CHECK_INT(stats.begun, 1);
    CHECK_INT(stats.released, 1);
    CHECK(tree == NULL);
}

int
main(void)
{
    test_emitter_rules();
    test_typed_printing();
    test_construction_errors();
    test_malformed();
    test_limits();
    test_getters();
    test_whitespace();
    test_file_literals();
    test_split_anywhere();
    test_sink_failure();
    return check_exit("test_dlist");
}
