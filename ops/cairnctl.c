/*
 * cairnctl.c - the administrator's tool. Everything it does lives in the
 * cairn_ops library (ops.h) so that tests run the same code; see
 * `cairnctl help` for the commands and exit codes.
 */
#include "ops.h"

#include <stdio.h>

int
main(int argc, char **argv)
{
    int status = cairn_ops_main(argc, argv, stdout, stderr);

    if (fflush(stdout) != 0 && status == CAIRN_EXIT_OK)
        status = CAIRN_EXIT_IOERR;
    return status;
}
