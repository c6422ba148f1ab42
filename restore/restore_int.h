/*
 * restore_int.h - helpers shared by the restore files (not public).
 */
#ifndef CAIRN_RESTORE_INT_H
#define CAIRN_RESTORE_INT_H

#include "restore.h"

/*
 * Appends a deep copy of node (a tree's node; FILE nodes are refused) to
 * parent under name (node's own name when NULL). Borrows node.
 */
int restore_dlist_copy(struct cairn_dlist *parent, const char *name,
                       const struct cairn_dlist *node);
/* A deep copy of a whole tree as a new root. Owned by the caller. */
int restore_dlist_clone(const struct cairn_dlist *node,
                        struct cairn_dlist **copy);

#endif /* CAIRN_RESTORE_INT_H */
