/*
 * header_csync.c - compiles csync.h on its own, so the header stays
 * self-contained (built with every build, no test to run).
 */
#include "csync.h"

int cairn_proto_header_check_csync(void);

int
cairn_proto_header_check_csync(void)
{
    return 0;
}
