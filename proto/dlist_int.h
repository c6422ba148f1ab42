/*
 * dlist_int.h - the dlist node layout shared by the tree/printer (dlist.c)
 * and the parser (dlist_parse.c). Not part of the public API.
 */
#ifndef CAIRN_DLIST_INT_H
#define CAIRN_DLIST_INT_H

#include "dlist.h"

/* What a FILE node refers to; kept apart so other nodes stay small. */
struct cairn_dlist_file_ref {
    char guid[CAIRN_DLIST_GUID_LEN + 1]; /* lowercase */
    uint64_t size;
    void *handle;
    void (*release)(void *release_ctx, void *handle);
    void *release_ctx;
    char partition[];
};

struct cairn_dlist {
    enum cairn_dlist_type type;
    /* name and value live in storage, allocated with the node (one malloc
     * per node); only a name changed by cairn_dlist_append is separate. */
    bool name_separate;
    char *name;  /* never NULL ("" for no name) */
    char *value; /* ATOM, FLAG, BUF: NUL-terminated; NULL otherwise */
    size_t len;  /* bytes in value, without the NUL */
    struct cairn_dlist *head, *tail, *next;
    size_t count;
    struct cairn_dlist_file_ref *file; /* FILE nodes only */
    char storage[];
};

/*
 * Allocates a detached node of type named name (copied; NULL means "") with
 * value (value_len bytes, copied and NUL-terminated) unless value is NULL.
 * Returns the owned node or NULL when out of memory.
 */
struct cairn_dlist *cairn_dlist_node_new(enum cairn_dlist_type type,
                                         const char *name, size_t name_len,
                                         const char *value, size_t value_len);
/* Links child (consumed) as the last child of parent. */
void cairn_dlist_node_link(struct cairn_dlist *parent,
                           struct cairn_dlist *child);
/*
 * Makes node a FILE reference (partition copied, guid must be 40 hex
 * digits and is stored lowercase). On success the node owns handle and
 * will call release on it; on failure nothing is taken.
 */
int cairn_dlist_node_set_file(struct cairn_dlist *node, const char *partition,
                              const char *guid, uint64_t size, void *handle,
                              void (*release)(void *release_ctx, void *handle),
                              void *release_ctx);
/* True for 40 hex digits exactly. */
bool cairn_dlist_is_guid(const char *text, size_t len);

#endif /* CAIRN_DLIST_INT_H */
