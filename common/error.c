/* error.c - the one table of cairn error codes and their messages. */
#include "common.h"

static const char *const messages[] = {
    [0] = "success",
    [1] = "out of memory",
    [2] = "invalid argument",
    [3] = "I/O error",
    [4] = "malformed input",
    [5] = "input exceeds a configured limit",
    [6] = "not found",
    [7] = "already exists",
    [8] = "locked by another process",
    [9] = "stored data is corrupt",
    [10] = "protocol error",
    [11] = "try again",
    [12] = "timed out",
    [13] = "authentication failed",
    [14] = "database error",
    [15] = "configuration error",
    [16] = "service unavailable",
    [17] = "no space left on device",
    [18] = "unsafe or malformed name",
    [19] = "data does not match its checksum",
    [20] = "operation not supported",
    [21] = "call not valid in this state",
    [22] = "number out of range",
    [23] = "not allowed",
};

const char *
cairn_strerror(int rc)
{
    if (rc > 0 || rc < CAIRN_ERROR_MIN)
        return "unknown error";
    return messages[-rc];
}
