/*
 * name.c - user names: what may become a path on the node, and Cyrus's
 * hash directory letter for a user's files.
 */
#include "node_int.h"

#include <string.h>

int
cairn_node_check_userid(const char *userid)
{
    size_t len;

    if (userid == NULL)
        return CAIRN_EBADNAME;
    len = strlen(userid);
    if (len == 0 || len > 255 || userid[0] == '.')
        return CAIRN_EBADNAME;
    if (strstr(userid, "..") != NULL || strchr(userid, '/') != NULL)
        return CAIRN_EBADNAME;
    for (size_t i = 0; i < len; i++) {
        unsigned char byte = (unsigned char)userid[i];

        if (byte < 0x20 || byte == 0x7f)
            return CAIRN_EBADNAME;
    }
    return 0;
}

char
cairn_node_dir_hash(const char *userid)
{
    char first = userid[0];

    if (first >= 'A' && first <= 'Z')
        first = (char)(first - 'A' + 'a');
    return first >= 'a' && first <= 'z' ? first : 'q';
}
