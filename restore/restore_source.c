/*
 * restore_source.c - reading a backup for restore from a node's local
 * files through the store (node.h): state answers, message bodies and
 * sieve scripts. Also the dlist copy helpers restore needs, because state
 * answers lend their trees only for the length of a call.
 */
#include "restore_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct store_source {
    struct cairn_store *store;
    char *index_path;
    struct cairn_body_reader *reader; /* opened on the first body */
};

/* --- dlist copies ---------------------------------------------------------
 */

int
restore_dlist_copy(struct cairn_dlist *parent, const char *name,
                   const struct cairn_dlist *node)
{
    struct cairn_dlist *child = NULL;
    const char *value;
    size_t len;
    int rc;

    if (name == NULL)
        name = cairn_dlist_name(node);
    switch (cairn_dlist_type(node)) {
    case CAIRN_DLIST_NIL:
        return cairn_dlist_add_nil(parent, name);
    case CAIRN_DLIST_ATOM:
        value = cairn_dlist_value(node, &len);
        return cairn_dlist_add_string(parent, name, value, len);
    case CAIRN_DLIST_FLAG:
        return cairn_dlist_add_flag(parent, name,
                                    cairn_dlist_value(node, NULL));
    case CAIRN_DLIST_BUF:
        value = cairn_dlist_value(node, &len);
        return cairn_dlist_add_buf(parent, name, value, len);
    case CAIRN_DLIST_LIST:
        rc = cairn_dlist_add_list(parent, name, &child);
        break;
    case CAIRN_DLIST_KVLIST:
        rc = cairn_dlist_add_kvlist(parent, name, &child);
        break;
    default:
        return CAIRN_ENOTSUP;
    }
    for (const struct cairn_dlist *c = cairn_dlist_first(node);
         rc == 0 && c != NULL; c = cairn_dlist_next(c))
        rc = restore_dlist_copy(child, NULL, c);
    return rc;
}

int
restore_dlist_clone(const struct cairn_dlist *node, struct cairn_dlist **copy)
{
    struct cairn_dlist *root = NULL;
    int rc = 0;

    *copy = NULL;
    if (cairn_dlist_type(node) == CAIRN_DLIST_KVLIST)
        root = cairn_dlist_new_kvlist(cairn_dlist_name(node));
    else if (cairn_dlist_type(node) == CAIRN_DLIST_LIST)
        root = cairn_dlist_new_list(cairn_dlist_name(node));
    else
        return CAIRN_EINVAL;
    if (root == NULL)
        return CAIRN_ENOMEM;
    for (const struct cairn_dlist *c = cairn_dlist_first(node);
         rc == 0 && c != NULL; c = cairn_dlist_next(c))
        rc = restore_dlist_copy(root, NULL, c);
    if (rc < 0) {
        cairn_dlist_free(root);
        return rc;
    }
    *copy = root;
    return 0;
}

/* --- the store source -----------------------------------------------------
 */

static int
store_user(void *ctx, cairn_store_emit emit, void *emit_ctx)
{
    struct store_source *source = ctx;

    return cairn_store_get_user(source->store, emit, emit_ctx);
}

static int
keep_clone(void *ctx, const struct cairn_dlist *item)
{
    struct cairn_dlist **copy = ctx;

    if (*copy != NULL)
        return 0;
    return restore_dlist_clone(item, copy);
}

static int
store_mailbox(void *ctx, const char *mboxname, struct cairn_dlist **mailbox)
{
    struct store_source *source = ctx;
    int rc;

    *mailbox = NULL;
    rc = cairn_store_get_fullmailbox(source->store, mboxname, keep_clone,
                                     mailbox);
    if (rc < 0) {
        cairn_dlist_free(*mailbox);
        *mailbox = NULL;
    } else if (*mailbox == NULL) {
        rc = CAIRN_ENOENT;
    }
    return rc;
}

static int
open_reader(struct store_source *source)
{
    if (source->reader != NULL)
        return 0;
    return cairn_body_reader_open(cairn_store_data_path(source->store),
                                  source->index_path, &source->reader);
}

static int
store_message(void *ctx, const char *guid,
              int (*put)(void *put_ctx, const void *data, size_t len),
              void *put_ctx)
{
    struct store_source *source = ctx;
    int rc;

    if ((rc = open_reader(source)) < 0)
        return rc;
    return cairn_body_reader_read(source->reader, guid, put, put_ctx);
}

static int
store_order(void *ctx, char **guids, size_t count)
{
    struct store_source *source = ctx;
    int rc;

    if ((rc = open_reader(source)) < 0)
        return rc;
    return cairn_body_reader_order(source->reader, guids, count);
}

static int
store_sieve(void *ctx, const char *filename, char **content, size_t *len)
{
    struct store_source *source = ctx;

    return cairn_store_read_sieve(source->store, filename, content, len);
}

static void
store_close(void *ctx)
{
    struct store_source *source = ctx;

    if (source == NULL)
        return;
    cairn_body_reader_free(source->reader);
    cairn_store_close(source->store);
    free(source->index_path);
    free(source);
}

static const struct cairn_restore_source_ops store_ops = {
    store_user,  store_mailbox, store_message, store_sieve,
    store_close, store_order,   NULL,
};

int
cairn_restore_source_open_file(const char *data_path, const char *userid,
                               struct cairn_restore_source **source)
{
    struct cairn_restore_source *result = NULL;
    struct store_source *store = NULL;
    int rc = CAIRN_ENOMEM;

    *source = NULL;
    if (strlen(userid) >= sizeof(result->userid))
        return CAIRN_EBADNAME;
    if ((result = calloc(1, sizeof(*result))) == NULL ||
        (store = calloc(1, sizeof(*store))) == NULL ||
        asprintf(&store->index_path, "%s.index", data_path) < 0) {
        if (store != NULL)
            store->index_path = NULL;
        goto out;
    }
    /* never wait here: a running node keeps a busy user's lock; the
     * caller decides how long to retry */
    if ((rc = cairn_store_open(data_path, 0, &store->store)) < 0)
        goto out;
    snprintf(result->userid, sizeof(result->userid), "%s", userid);
    result->ops = &store_ops;
    result->ctx = store;
    store = NULL;
    *source = result;
    result = NULL;
out:
    store_close(store);
    free(result);
    return rc;
}

int
cairn_restore_source_open_store(const char *data_dir, const char *userid,
                                struct cairn_restore_source **source)
{
    struct cairn_catalog *catalog = NULL;
    char *catalog_path = NULL, *data_path = NULL;
    int rc;

    *source = NULL;
    if ((rc = cairn_node_check_userid(userid)) < 0)
        return rc;
    if (asprintf(&catalog_path, "%s/catalog.db", data_dir) < 0)
        return CAIRN_ENOMEM;
    if (access(catalog_path, F_OK) != 0) {
        rc = CAIRN_ENOENT; /* never create a catalog while reading */
        goto out;
    }
    if ((rc = cairn_catalog_open(catalog_path, &catalog)) < 0 ||
        (rc = cairn_catalog_lookup(catalog, userid, &data_path)) < 0)
        goto out;
    rc = cairn_restore_source_open_file(data_path, userid, source);
out:
    cairn_catalog_free(catalog);
    free(catalog_path);
    free(data_path);
    return rc;
}

void
cairn_restore_source_free(struct cairn_restore_source *source)
{
    if (source == NULL)
        return;
    if (source->ops != NULL && source->ops->close != NULL)
        source->ops->close(source->ctx);
    free(source);
}
