/*
 * header_dlist.c - compiles dlist.h on its own, so the header stays
 * self-contained (built with every build, no test to run).
 */
#include "dlist.h"

int cairn_proto_header_check_dlist(void);

int
cairn_proto_header_check_dlist(void)
{
    return 0;
}
