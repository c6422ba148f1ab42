/* test_common.c - unit tests for error codes, parsing and bounded buffers. */
#include "check.h"
#include "common.h"

#include <stdlib.h>

static void
test_parse_u64(void)
{
    static const struct {
        const char *text;
        uint64_t min, max;
        int rc;
        uint64_t value;
    } cases[] = {
        {"0", 0, 10, CAIRN_OK, 0},
        {"10", 0, 10, CAIRN_OK, 10},
        {"11", 0, 10, CAIRN_EOVERFLOW, 0},
        {"18446744073709551615", 0, UINT64_MAX, CAIRN_OK, UINT64_MAX},
        {"18446744073709551616", 0, UINT64_MAX, CAIRN_EOVERFLOW, 0},
        {"", 0, 10, CAIRN_EPARSE, 0},
        {"-1", 0, 10, CAIRN_EPARSE, 0},
        {"+1", 0, 10, CAIRN_EPARSE, 0},
        {"1 ", 0, 10, CAIRN_EPARSE, 0},
        {"1x", 0, 10, CAIRN_EPARSE, 0},
        {"5", 6, 10, CAIRN_EOVERFLOW, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t value = 0;
        int rc = cairn_parse_u64_str(cases[i].text, cases[i].min, cases[i].max,
                                     &value);
        CHECK_INT(rc, cases[i].rc);
        if (rc == CAIRN_OK)
            CHECK_U64(value, cases[i].value);
    }
}

static void
test_parse_units(void)
{
    uint64_t value = 0;
    bool flag = false;

    CHECK_INT(cairn_parse_size("64M", &value), CAIRN_OK);
    CHECK_U64(value, 64u << 20);
    CHECK_INT(cairn_parse_size("1gb", &value), CAIRN_OK);
    CHECK_U64(value, 1u << 30);
    CHECK_INT(cairn_parse_size("4096", &value), CAIRN_OK);
    CHECK_U64(value, 4096);
    CHECK_INT(cairn_parse_size("4X", &value), CAIRN_EPARSE);
    CHECK_INT(cairn_parse_size("99999999999999999999T", &value),
              CAIRN_EOVERFLOW);
    CHECK_INT(cairn_parse_size("16777216T", &value), CAIRN_EOVERFLOW);
    CHECK_INT(cairn_parse_duration("7d", &value), CAIRN_OK);
    CHECK_U64(value, 7 * 86400);
    CHECK_INT(cairn_parse_duration("30", &value), CAIRN_OK);
    CHECK_U64(value, 30);
    CHECK_INT(cairn_parse_duration("1dd", &value), CAIRN_EPARSE);
    CHECK_INT(cairn_parse_duration("d", &value), CAIRN_EPARSE);
    CHECK_INT(cairn_parse_bool("Yes", &flag), CAIRN_OK);
    CHECK(flag);
    CHECK_INT(cairn_parse_bool("off", &flag), CAIRN_OK);
    CHECK(!flag);
    CHECK_INT(cairn_parse_bool("maybe", &flag), CAIRN_EPARSE);
}

static void
test_buf(void)
{
    struct cairn_buf buf;
    char *data = NULL;
    size_t len = 0;

    cairn_buf_init(&buf, 16);
    CHECK_INT(cairn_buf_append_str(&buf, "hello "), CAIRN_OK);
    CHECK_INT(cairn_buf_printf(&buf, "%d", 12345), CAIRN_OK);
    CHECK_STR(buf.data, "hello 12345");
    CHECK_INT(cairn_buf_append_str(&buf, "world!"), CAIRN_ETOOBIG);
    CHECK_STR(buf.data, "hello 12345");
    CHECK_INT(cairn_buf_append_str(&buf, "world"), CAIRN_OK);
    CHECK_U64(buf.len, 16);
    cairn_buf_consume(&buf, 6);
    CHECK_STR(buf.data, "12345world");
    CHECK_INT(cairn_buf_detach(&buf, &data, &len), CAIRN_OK);
    CHECK_STR(data, "12345world");
    CHECK_U64(len, 10);
    free(data);
    cairn_buf_release(&buf);

    /* A buffer never written still detaches as "". */
    cairn_buf_init(&buf, 16);
    CHECK_INT(cairn_buf_detach(&buf, &data, &len), CAIRN_OK);
    CHECK_STR(data, "");
    CHECK_U64(len, 0);
    free(data);
}

static void
test_strerror(void)
{
    CHECK_STR(cairn_strerror(CAIRN_OK), "success");
    CHECK_STR(cairn_strerror(CAIRN_EOVERFLOW), "number out of range");
    CHECK_STR(cairn_strerror(-1000), "unknown error");
    CHECK_STR(cairn_strerror(5), "unknown error");
}

int
main(void)
{
    test_parse_u64();
    test_parse_units();
    test_buf();
    test_strerror();
    return check_exit("test_common");
}
