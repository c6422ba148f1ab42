/*
 * check.h - the tiny assert helper every cairn unit test uses. A failed
 * check prints both sides and the location, counts the failure, and the
 * test goes on; check_exit() turns the count into the exit status.
 */
#ifndef CAIRN_CHECK_H
#define CAIRN_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                            \
    do {                                                                       \
        check_count++;                                                         \
        if (!(cond)) {                                                         \
            check_failures++;                                                  \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
        }                                                                      \
    } while (0)

#define CHECK_INT(actual, expected)                                            \
    do {                                                                       \
        long long check_a = (long long)(actual);                               \
        long long check_e = (long long)(expected);                             \
        check_count++;                                                         \
        if (check_a != check_e) {                                              \
            check_failures++;                                                  \
            fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n",        \
                    __FILE__, __LINE__, #actual, check_a, #expected, check_e); \
        }                                                                      \
    } while (0)

#define CHECK_U64(actual, expected)                                            \
    do {                                                                       \
        uint64_t check_a = (uint64_t)(actual);                                 \
        uint64_t check_e = (uint64_t)(expected);                               \
        check_count++;                                                         \
        if (check_a != check_e) {                                              \
            check_failures++;                                                  \
            fprintf(stderr,                                                    \
                    "%s:%d: %s == %" PRIu64 ", expected %" PRIu64 "\n",        \
                    __FILE__, __LINE__, #actual, check_a, check_e);            \
        }                                                                      \
    } while (0)

#define CHECK_STR(actual, expected)                                            \
    do {                                                                       \
        const char *check_a = (actual);                                        \
        const char *check_e = (expected);                                      \
        check_count++;                                                         \
        if (check_a == NULL || check_e == NULL                                 \
                ? check_a != check_e                                           \
                : strcmp(check_a, check_e) != 0) {                             \
            check_failures++;                                                  \
            fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n",          \
                    __FILE__, __LINE__, #actual, check_a ? check_a : "(null)", \
                    check_e ? check_e : "(null)");                             \
        }                                                                      \
    } while (0)

#define CHECK_MEM(actual, actual_len, expected, expected_len)                  \
    do {                                                                       \
        size_t check_al = (actual_len), check_el = (expected_len);             \
        check_count++;                                                         \
        if (check_al != check_el ||                                            \
            memcmp((actual), (expected), check_al) != 0) {                     \
            check_failures++;                                                  \
            fprintf(stderr, "%s:%d: %s (%zu bytes) != %s (%zu bytes)\n",       \
                    __FILE__, __LINE__, #actual, check_al, #expected,          \
                    check_el);                                                 \
        }                                                                      \
    } while (0)

static inline int
check_exit(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
    return check_failures == 0 ? 0 : 1;
}

#endif /* CAIRN_CHECK_H */
