/*
 * dlist_int.h - the dlist node layout shared by the tree/printer (dlist.c)
 * and the parser (dlist_parse.c). Not part of the public API.
 */
#ifndef CAIRN_DLIST_INT_H
#define CAIRN_DLIST_INT_H

#include "dlist.h"

struct cairn_dlist {
    enum cairn_dlist_type type;
    char *name;  /* never NULL ("" for no name) */
    char *value; /* ATOM, FLAG, BUF: NUL-terminated copy; NULL otherwise */
    size_t len;  /* bytes in value, without the NUL */
    struct cairn_dlist *head, *tail, *next;
    size_t count;
    /* FILE nodes */
    char *partition;
    char guid[CAIRN_DLIST_GUID_LEN + 1];
    uint64_t size;
    void *handle;
    void (*release)(void *release_ctx, void *handle);
    void *release_ctx;
};

/*
 * Allocates a detached node of type named name (copied; NULL means "").
 * Returns the owned node or NULL when out of memory.
 */
struct cairn_dlist *cairn_dlist_node_new(enum cairn_dlist_type type,
                                         const char *name, size_t name_len);
/* Copies len bytes into node->value (NUL-terminated). */
int cairn_dlist_node_set_value(struct cairn_dlist *node, const char *value,
                               size_t len);
/* Links child (consumed) as the last child of parent. */
void cairn_dlist_node_link(struct cairn_dlist *parent,
                           struct cairn_dlist *child);
/* True for 40 hex digits exactly. */
bool cairn_dlist_is_guid(const char *text, size_t len);

#endif /* CAIRN_DLIST_INT_H */
