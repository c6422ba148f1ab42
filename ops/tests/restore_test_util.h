/*
 * restore_test_util.h - what the restore and import tests share: the
 * committed backupd test data (node/tests/data) and copying it into a
 * test's temp dir, so a test never writes to the committed files.
 */
#ifndef CAIRN_OPS_RESTORE_TEST_UTIL_H
#define CAIRN_OPS_RESTORE_TEST_UTIL_H

#include "check.h"

#include <stdio.h>

/* Relative to the test's working directory (ops/tests). */
#define TESTDATA "../../node/tests/data/backupd"

/* Copies the file from to the file to (created or truncated). */
static inline void
copy_file(const char *from, const char *to)
{
    char buffer[65536];
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    size_t got;

    CHECK(in != NULL && out != NULL);
    while (in && out && (got = fread(buffer, 1, sizeof(buffer), in)) > 0)
        CHECK(fwrite(buffer, 1, got, out) == got);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
}

#endif /* CAIRN_OPS_RESTORE_TEST_UTIL_H */
