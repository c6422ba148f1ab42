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

/*
 * Bodies in file order (restore_reader.c). new opens data_path and its
 * index (read-only) and returns the owned reader; order sorts guids into
 * the order their bodies lie in the file; read streams guid's body to put,
 * going on from where the last read stopped when it can, SHA-1 checked
 * (CAIRN_EMISMATCH), CAIRN_ENOENT for an unknown GUID.
 */
struct body_reader;
int restore_reader_new(const char *data_path, const char *index_path,
                       struct body_reader **reader);
void restore_reader_free(struct body_reader *reader);
int restore_reader_order(struct body_reader *reader, char **guids,
                         size_t count);
int restore_reader_read(struct body_reader *reader, const char *guid,
                        int (*put)(void *ctx, const void *data, size_t len),
                        void *put_ctx);

#endif /* CAIRN_RESTORE_INT_H */
