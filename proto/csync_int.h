/*
 * csync_int.h - pieces shared by the csync command reader and response
 * reader. Not part of the public API.
 */
#ifndef CAIRN_CSYNC_INT_H
#define CAIRN_CSYNC_INT_H

#include "csync.h"

/*
 * Finds the end of a protocol line the way Cyrus's eatline() does: it
 * steps over {N} / {N+} literals and %{part guid size} file literals whose
 * header ends a physical line, so their bodies' CRLFs do not end the
 * command. It looks at bytes only (no allocation).
 */
struct cairn_line_scanner {
    int state;
    char header[64]; /* bytes between '{' and '}' */
    size_t header_len;
    bool header_is_file; /* the '{' followed a '%' */
    bool after_percent;
    uint64_t remaining; /* literal body bytes still to skip */
};

void cairn_line_scanner_reset(struct cairn_line_scanner *scanner);
/*
 * Scans len bytes. Returns true when a line end was found, with *used the
 * bytes up to and including its LF; false with *used == len otherwise.
 */
bool cairn_line_scanner_scan(struct cairn_line_scanner *scanner,
                             const unsigned char *data, size_t len,
                             size_t *used);

#endif /* CAIRN_CSYNC_INT_H */
