/*
 * roff.c - text made safe for the man pages that programs generate
 * (cluster.conf(5), cairnctl(8)).
 */
#include "common.h"

#include <string.h>

int
cairn_buf_append_roff(struct cairn_buf *buf, const char *text)
{
    bool line_start = true;
    int rc = CAIRN_OK;

    for (const char *at = text; *at != '\0' && rc == CAIRN_OK; at++) {
        if (line_start && (*at == '.' || *at == '\''))
            rc = cairn_buf_append_str(buf, "\\&");
        if (rc != CAIRN_OK)
            break;
        if (*at == '\\')
            rc = cairn_buf_append_str(buf, "\\e");
        else if (*at == '-')
            rc = cairn_buf_append_str(buf, "\\-");
        else
            rc = cairn_buf_append(buf, at, 1);
        line_start = *at == '\n';
    }
    return rc;
}
