/*
 * test_header.c - placement.h compiles on its own, with nothing included
 * before it (linked into test_placement, which calls the function).
 */
#include "placement.h"

int placement_header_replicas(void);

int
placement_header_replicas(void)
{
    return CAIRN_RING_MAX_REPLICAS;
}
