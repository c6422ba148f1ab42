/*
 * dlist.c - dlist trees: construction, inspection, typed getters and the
 * serialiser that reproduces Cyrus's dlist_print() byte for byte
 * (lib/prot.c prot_printastring/prot_printamap, lib/imparse.c
 * imparse_isnatom).
 */
#include "dlist_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Cyrus's MAXQSTRING: atoms and quoted strings are shorter than this. */
#define MAX_QUOTABLE 1024

struct cairn_dlist *
cairn_dlist_node_new(enum cairn_dlist_type type, const char *name,
                     size_t name_len, const char *value, size_t value_len)
{
    size_t extra = name_len + 1;
    struct cairn_dlist *node;

    if (value != NULL) {
        if (value_len > SIZE_MAX - sizeof(*node) - extra - 1)
            return NULL;
        extra += value_len + 1;
    }
    node = calloc(1, sizeof(*node) + extra);
    if (node == NULL)
        return NULL;
    node->type = type;
    node->name = node->storage;
    if (name_len > 0)
        memcpy(node->name, name, name_len);
    node->name[name_len] = '\0';
    if (value != NULL) {
        node->value = node->storage + name_len + 1;
        if (value_len > 0)
            memcpy(node->value, value, value_len);
        node->value[value_len] = '\0';
        node->len = value_len;
    }
    return node;
}

void
cairn_dlist_node_link(struct cairn_dlist *parent, struct cairn_dlist *child)
{
    child->next = NULL;
    if (parent->tail != NULL)
        parent->tail->next = child;
    else
        parent->head = child;
    parent->tail = child;
    parent->count++;
}

bool
cairn_dlist_is_guid(const char *text, size_t len)
{
    if (text == NULL || len != CAIRN_DLIST_GUID_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                   (c >= 'A' && c <= 'F');
        if (!hex)
            return false;
    }
    return true;
}

static struct cairn_dlist *
new_named(enum cairn_dlist_type type, const char *name)
{
    return cairn_dlist_node_new(type, name, name ? strlen(name) : 0, NULL, 0);
}

struct cairn_dlist *
cairn_dlist_new_kvlist(const char *name)
{
    return new_named(CAIRN_DLIST_KVLIST, name);
}

struct cairn_dlist *
cairn_dlist_new_list(const char *name)
{
    return new_named(CAIRN_DLIST_LIST, name);
}

struct cairn_dlist *
cairn_dlist_new_atom(const char *name, const char *value)
{
    return cairn_dlist_node_new(value ? CAIRN_DLIST_ATOM : CAIRN_DLIST_NIL,
                                name, name ? strlen(name) : 0, value,
                                value ? strlen(value) : 0);
}

static void
free_one(struct cairn_dlist *node)
{
    if (node->file != NULL && node->file->release != NULL)
        node->file->release(node->file->release_ctx, node->file->handle);
    if (node->name_separate)
        free(node->name);
    free(node->file);
    free(node);
}

void
cairn_dlist_free(struct cairn_dlist *node)
{
    struct cairn_dlist *next;

    /* Iterative: children are spliced in front of the remaining siblings,
     * so a deep tree never deepens the C stack. */
    if (node != NULL)
        node->next = NULL;
    while (node != NULL) {
        if (node->head != NULL) {
            node->tail->next = node->next;
            node->next = node->head;
            node->head = node->tail = NULL;
        }
        next = node->next;
        free_one(node);
        node = next;
    }
}

/* --- construction ------------------------------------------------------ */

static bool
is_container(const struct cairn_dlist *node)
{
    return node != NULL &&
           (node->type == CAIRN_DLIST_LIST || node->type == CAIRN_DLIST_KVLIST);
}

/*
 * The key rules of the parent's type: a kvlist's children need a name, a
 * list's children have none. Sets *key to the name the child gets.
 */
static int
child_key(const struct cairn_dlist *parent, const char *name, const char **key)
{
    if (!is_container(parent))
        return CAIRN_EINVAL;
    if (parent->type == CAIRN_DLIST_KVLIST && name == NULL)
        return CAIRN_EINVAL;
    *key = parent->type == CAIRN_DLIST_LIST ? NULL : name;
    return 0;
}

/*
 * Creates a child of parent with the key rules of the parent's type.
 * Returns the child (still owned by the caller until linked) in *child.
 */
static int
make_child(struct cairn_dlist *parent, const char *name,
           enum cairn_dlist_type type, struct cairn_dlist **child)
{
    int rc;

    if ((rc = child_key(parent, name, &name)) < 0)
        return rc;
    *child = new_named(type, name);
    return *child != NULL ? 0 : CAIRN_ENOMEM;
}

static int
add_value(struct cairn_dlist *parent, const char *name,
          enum cairn_dlist_type type, const char *value, size_t len)
{
    struct cairn_dlist *child;
    int rc;

    if ((rc = child_key(parent, name, &name)) < 0)
        return rc;
    child = cairn_dlist_node_new(type, name, name ? strlen(name) : 0,
                                 type == CAIRN_DLIST_NIL ? NULL : value, len);
    if (child == NULL)
        return CAIRN_ENOMEM;
    cairn_dlist_node_link(parent, child);
    return 0;
}

int
cairn_dlist_add_atom(struct cairn_dlist *parent, const char *name,
                     const char *value)
{
    if (value == NULL)
        return add_value(parent, name, CAIRN_DLIST_NIL, NULL, 0);
    return add_value(parent, name, CAIRN_DLIST_ATOM, value, strlen(value));
}

int
cairn_dlist_add_string(struct cairn_dlist *parent, const char *name,
                       const char *value, size_t len)
{
    if (value == NULL)
        return add_value(parent, name, CAIRN_DLIST_NIL, NULL, 0);
    if (memchr(value, '\0', len) != NULL)
        return CAIRN_EINVAL;
    return add_value(parent, name, CAIRN_DLIST_ATOM, value, len);
}

int
cairn_dlist_add_num(struct cairn_dlist *parent, const char *name,
                    uint64_t value)
{
    char text[24];
    int len = snprintf(text, sizeof(text), "%" PRIu64, value);

    return add_value(parent, name, CAIRN_DLIST_ATOM, text, (size_t)len);
}

int
cairn_dlist_add_hex64(struct cairn_dlist *parent, const char *name,
                      uint64_t value)
{
    char text[24];
    int len = snprintf(text, sizeof(text), "%016" PRIx64, value);

    return add_value(parent, name, CAIRN_DLIST_ATOM, text, (size_t)len);
}

int
cairn_dlist_add_guid(struct cairn_dlist *parent, const char *name,
                     const char *guid)
{
    char lower[CAIRN_DLIST_GUID_LEN + 1];

    if (guid == NULL || !cairn_dlist_is_guid(guid, strlen(guid)))
        return CAIRN_EINVAL;
    for (size_t i = 0; i < CAIRN_DLIST_GUID_LEN; i++) {
        char c = guid[i];
        lower[i] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
    }
    return add_value(parent, name, CAIRN_DLIST_ATOM, lower,
                     CAIRN_DLIST_GUID_LEN);
}

int
cairn_dlist_add_guid_bytes(struct cairn_dlist *parent, const char *name,
                           const unsigned char sha1[20])
{
    static const char digits[] = "0123456789abcdef";
    char text[CAIRN_DLIST_GUID_LEN + 1];

    for (size_t i = 0; i < 20; i++) {
        text[2 * i] = digits[sha1[i] >> 4];
        text[2 * i + 1] = digits[sha1[i] & 0x0f];
    }
    text[CAIRN_DLIST_GUID_LEN] = '\0';
    return cairn_dlist_add_guid(parent, name, text);
}

int
cairn_dlist_add_flag(struct cairn_dlist *parent, const char *name,
                     const char *flag)
{
    if (flag == NULL)
        return CAIRN_EINVAL;
    return add_value(parent, name, CAIRN_DLIST_FLAG, flag, strlen(flag));
}

int
cairn_dlist_add_buf(struct cairn_dlist *parent, const char *name,
                    const void *data, size_t len)
{
    if (data == NULL && len > 0)
        return CAIRN_EINVAL;
    return add_value(parent, name, CAIRN_DLIST_BUF, data ? data : "", len);
}

int
cairn_dlist_add_nil(struct cairn_dlist *parent, const char *name)
{
    return add_value(parent, name, CAIRN_DLIST_NIL, NULL, 0);
}

static int
add_container(struct cairn_dlist *parent, const char *name,
              enum cairn_dlist_type type, struct cairn_dlist **child)
{
    int rc;

    *child = NULL;
    if ((rc = make_child(parent, name, type, child)) < 0)
        return rc;
    cairn_dlist_node_link(parent, *child);
    return 0;
}

int
cairn_dlist_add_list(struct cairn_dlist *parent, const char *name,
                     struct cairn_dlist **child)
{
    return add_container(parent, name, CAIRN_DLIST_LIST, child);
}

int
cairn_dlist_add_kvlist(struct cairn_dlist *parent, const char *name,
                       struct cairn_dlist **child)
{
    return add_container(parent, name, CAIRN_DLIST_KVLIST, child);
}

int
cairn_dlist_node_set_file(struct cairn_dlist *node, const char *partition,
                          const char *guid, uint64_t size, void *handle,
                          void (*release)(void *release_ctx, void *handle),
                          void *release_ctx)
{
    size_t partition_len;
    struct cairn_dlist_file_ref *file;

    if (partition == NULL || guid == NULL ||
        !cairn_dlist_is_guid(guid, strlen(guid)))
        return CAIRN_EINVAL;
    partition_len = strlen(partition);
    file = calloc(1, sizeof(*file) + partition_len + 1);
    if (file == NULL)
        return CAIRN_ENOMEM;
    memcpy(file->partition, partition, partition_len + 1);
    for (size_t i = 0; i < CAIRN_DLIST_GUID_LEN; i++) {
        char c = guid[i];
        file->guid[i] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
    }
    file->size = size;
    file->handle = handle;
    file->release = release;
    file->release_ctx = release_ctx;
    free(node->file);
    node->file = file;
    node->type = CAIRN_DLIST_FILE;
    return 0;
}

int
cairn_dlist_add_file(struct cairn_dlist *parent, const char *name,
                     const char *partition, const char *guid, uint64_t size,
                     void *handle,
                     void (*release)(void *release_ctx, void *handle),
                     void *release_ctx)
{
    struct cairn_dlist *child = NULL;
    int rc;

    if ((rc = make_child(parent, name, CAIRN_DLIST_FILE, &child)) < 0)
        goto out;
    if ((rc = cairn_dlist_node_set_file(child, partition, guid, size, handle,
                                        release, release_ctx)) < 0)
        goto out;
    cairn_dlist_node_link(parent, child);
    child = NULL;
out:
    cairn_dlist_free(child); /* holds no file reference on failure */
    return rc;
}

int
cairn_dlist_append(struct cairn_dlist *parent, const char *name,
                   struct cairn_dlist *child)
{
    char *copy = NULL;

    if (!is_container(parent) || child == NULL)
        return CAIRN_EINVAL;
    if (name == NULL && parent->type == CAIRN_DLIST_KVLIST &&
        child->name[0] == '\0')
        return CAIRN_EINVAL;
    if (name != NULL || parent->type == CAIRN_DLIST_LIST) {
        copy = strdup(parent->type == CAIRN_DLIST_LIST ? "" : name);
        if (copy == NULL)
            return CAIRN_ENOMEM;
        if (child->name_separate)
            free(child->name);
        child->name = copy;
        child->name_separate = true;
    }
    cairn_dlist_node_link(parent, child);
    return 0;
}

/* --- inspection -------------------------------------------------------- */

enum cairn_dlist_type
cairn_dlist_type(const struct cairn_dlist *node)
{
    return node->type;
}

const char *
cairn_dlist_name(const struct cairn_dlist *node)
{
    return node->name;
}

const char *
cairn_dlist_value(const struct cairn_dlist *node, size_t *len)
{
    if (node == NULL || node->value == NULL) {
        if (len != NULL)
            *len = 0;
        return NULL;
    }
    if (len != NULL)
        *len = node->len;
    return node->value;
}

const struct cairn_dlist *
cairn_dlist_first(const struct cairn_dlist *node)
{
    return node != NULL ? node->head : NULL;
}

const struct cairn_dlist *
cairn_dlist_next(const struct cairn_dlist *node)
{
    return node != NULL ? node->next : NULL;
}

size_t
cairn_dlist_count(const struct cairn_dlist *node)
{
    return node != NULL ? node->count : 0;
}

bool
cairn_dlist_file_info(const struct cairn_dlist *node, const char **partition,
                      const char **guid, uint64_t *size, void **handle)
{
    if (node == NULL || node->file == NULL)
        return false;
    if (partition != NULL)
        *partition = node->file->partition;
    if (guid != NULL)
        *guid = node->file->guid;
    if (size != NULL)
        *size = node->file->size;
    if (handle != NULL)
        *handle = node->file->handle;
    return true;
}

/* --- typed getters ----------------------------------------------------- */

const struct cairn_dlist *
cairn_dlist_get(const struct cairn_dlist *kvlist, const char *key)
{
    if (kvlist == NULL || key == NULL)
        return NULL;
    for (const struct cairn_dlist *child = kvlist->head; child != NULL;
         child = child->next) {
        if (strcmp(child->name, key) == 0)
            return child;
    }
    return NULL;
}

static bool
is_string(const struct cairn_dlist *node)
{
    return node != NULL &&
           (node->type == CAIRN_DLIST_ATOM || node->type == CAIRN_DLIST_FLAG ||
            node->type == CAIRN_DLIST_BUF);
}

bool
cairn_dlist_as_atom(const struct cairn_dlist *node, const char **value)
{
    if (node != NULL && node->type == CAIRN_DLIST_NIL) {
        *value = NULL;
        return true;
    }
    if (!is_string(node) || memchr(node->value, '\0', node->len) != NULL)
        return false;
    *value = node->value;
    return true;
}

bool
cairn_dlist_as_num64(const struct cairn_dlist *node, uint64_t *value)
{
    if (!is_string(node))
        return false;
    return cairn_parse_u64(node->value, node->len, 0, UINT64_MAX, value) == 0;
}

bool
cairn_dlist_as_hex64(const struct cairn_dlist *node, uint64_t *value)
{
    uint64_t result = 0;

    if (!is_string(node) || node->len == 0 || node->len > 16)
        return false;
    for (size_t i = 0; i < node->len; i++) {
        char c = node->value[i];
        unsigned digit;
        if (c >= '0' && c <= '9')
            digit = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            digit = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            digit = (unsigned)(c - 'A' + 10);
        else
            return false;
        result = (result << 4) | digit;
    }
    *value = result;
    return true;
}

bool
cairn_dlist_as_guid(const struct cairn_dlist *node, const char **guid)
{
    if (!is_string(node) || !cairn_dlist_is_guid(node->value, node->len))
        return false;
    *guid = node->value;
    return true;
}

bool
cairn_dlist_get_atom(const struct cairn_dlist *kvlist, const char *key,
                     const char **value)
{
    return cairn_dlist_as_atom(cairn_dlist_get(kvlist, key), value);
}

bool
cairn_dlist_get_num32(const struct cairn_dlist *kvlist, const char *key,
                      uint32_t *value)
{
    uint64_t wide;

    if (!cairn_dlist_as_num64(cairn_dlist_get(kvlist, key), &wide))
        return false;
    *value = (uint32_t)wide; /* Cyrus truncates silently */
    return true;
}

bool
cairn_dlist_get_num64(const struct cairn_dlist *kvlist, const char *key,
                      uint64_t *value)
{
    return cairn_dlist_as_num64(cairn_dlist_get(kvlist, key), value);
}

bool
cairn_dlist_get_date(const struct cairn_dlist *kvlist, const char *key,
                     int64_t *value)
{
    uint64_t wide;

    if (!cairn_dlist_as_num64(cairn_dlist_get(kvlist, key), &wide) ||
        wide > INT64_MAX)
        return false;
    *value = (int64_t)wide;
    return true;
}

bool
cairn_dlist_get_hex64(const struct cairn_dlist *kvlist, const char *key,
                      uint64_t *value)
{
    return cairn_dlist_as_hex64(cairn_dlist_get(kvlist, key), value);
}

bool
cairn_dlist_get_guid(const struct cairn_dlist *kvlist, const char *key,
                     const char **guid)
{
    return cairn_dlist_as_guid(cairn_dlist_get(kvlist, key), guid);
}

bool
cairn_dlist_get_map(const struct cairn_dlist *kvlist, const char *key,
                    const char **data, size_t *len)
{
    const struct cairn_dlist *node = cairn_dlist_get(kvlist, key);

    if (!is_string(node))
        return false;
    *data = node->value;
    *len = node->len;
    return true;
}

bool
cairn_dlist_get_list(const struct cairn_dlist *kvlist, const char *key,
                     const struct cairn_dlist **list)
{
    const struct cairn_dlist *node = cairn_dlist_get(kvlist, key);

    if (!is_container(node))
        return false;
    *list = node;
    return true;
}

bool
cairn_dlist_get_file(const struct cairn_dlist *kvlist, const char *key,
                     const struct cairn_dlist **file)
{
    const struct cairn_dlist *node = cairn_dlist_get(kvlist, key);

    if (node == NULL || node->type != CAIRN_DLIST_FILE)
        return false;
    *file = node;
    return true;
}

/* --- serialiser -------------------------------------------------------- */

/* imparse_isnatom(): 1..1023 bytes, none of them special. */
static bool
is_atom(const char *value, size_t len)
{
    if (len == 0 || len >= MAX_QUOTABLE)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c >= 0x80 || c < 0x1f || c == 0x7f || c == ' ' || c == '{' ||
            c == '(' || c == ')' || c == '"' || c == '%' || c == '*' ||
            c == '\\')
            return false;
    }
    return true;
}

/* prot_printamap()'s quoted-string test (isQCHAR and no NUL). */
static bool
is_quotable(const char *value, size_t len)
{
    if (len >= MAX_QUOTABLE)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c == '\0' || c >= 0x80 || c == '\r' || c == '\n' || c == '"' ||
            c == '%' || c == '\\')
            return false;
    }
    return true;
}

/*
 * How a print writes: literals non-synchronising ("{N+}", what both Cyrus
 * ends send on the wire) or synchronising ("{N}", what a backup file
 * needs: Cyrus's backup reader does not parse "{N+}" and stops reading
 * the chunk there, so every line after it goes missing for its verify).
 */
struct print_style {
    bool synchronizing;
    const struct cairn_dlist_body_writer *body_writer;
};

static int
print_literal(struct cairn_buf *out, const char *value, size_t len,
              bool synchronizing)
{
    int rc;

    if ((rc = cairn_buf_printf(out, synchronizing ? "{%zu}\r\n" : "{%zu+}\r\n",
                               len)) < 0)
        return rc;
    return cairn_buf_append(out, value, len);
}

static int
print_astring(struct cairn_buf *out, const char *value, size_t len,
              bool synchronizing)
{
    int rc;

    if (value == NULL)
        return cairn_buf_append(out, "NIL", 3);
    if (len == 0)
        return cairn_buf_append(out, "\"\"", 2);
    if (is_atom(value, len) && !(len == 3 && memcmp(value, "NIL", 3) == 0))
        return cairn_buf_append(out, value, len);
    if (!is_quotable(value, len))
        return print_literal(out, value, len, synchronizing);
    if ((rc = cairn_buf_reserve(out, len + 2)) < 0)
        return rc;
    cairn_buf_append(out, "\"", 1);
    cairn_buf_append(out, value, len);
    return cairn_buf_append(out, "\"", 1);
}

int
cairn_dlist_print_astring(struct cairn_buf *out, const char *value, size_t len)
{
    return print_astring(out, value, len, false);
}

static int print_node(const struct cairn_dlist *node, bool print_key,
                      struct cairn_buf *out, const struct print_style *style);

static int
print_file(const struct cairn_dlist *node, struct cairn_buf *out,
           const struct print_style *style)
{
    int rc;

    if (node->file == NULL || style->body_writer == NULL ||
        style->body_writer->write_body == NULL)
        return CAIRN_EINVAL;
    if ((rc = cairn_buf_append(out, "%{", 2)) < 0 ||
        (rc = print_astring(out, node->file->partition,
                            strlen(node->file->partition),
                            style->synchronizing)) < 0 ||
        (rc = cairn_buf_printf(out, " %s %" PRIu64 "}\r\n", node->file->guid,
                               node->file->size)) < 0)
        return rc;
    return style->body_writer->write_body(style->body_writer->ctx, node, out);
}

static int
print_children(const struct cairn_dlist *node, bool keys, struct cairn_buf *out,
               const struct print_style *style)
{
    int rc = 0;

    for (const struct cairn_dlist *child = node->head; child != NULL;
         child = child->next) {
        if ((rc = print_node(child, keys, out, style)) < 0)
            return rc;
        if (child->next != NULL && (rc = cairn_buf_append(out, " ", 1)) < 0)
            return rc;
    }
    return cairn_buf_append(out, ")", 1);
}

/*
 * Recursion depth is the tree's depth: parsed trees are bounded by
 * max_depth, built trees by their (shallow) builders.
 */
static int
print_node(const struct cairn_dlist *node, bool print_key,
           struct cairn_buf *out, const struct print_style *style)
{
    int rc;

    if (print_key) {
        if ((rc = print_astring(out, node->name, strlen(node->name),
                                style->synchronizing)) < 0 ||
            (rc = cairn_buf_append(out, " ", 1)) < 0)
            return rc;
    }
    switch (node->type) {
    case CAIRN_DLIST_NIL:
        return cairn_buf_append(out, "NIL", 3);
    case CAIRN_DLIST_ATOM:
        return print_astring(out, node->value, node->len, style->synchronizing);
    case CAIRN_DLIST_FLAG:
        return cairn_buf_append(out, node->value, node->len);
    case CAIRN_DLIST_BUF:
        if (memchr(node->value, '\0', node->len) != NULL)
            return print_literal(out, node->value, node->len,
                                 style->synchronizing);
        return print_astring(out, node->value, node->len, style->synchronizing);
    case CAIRN_DLIST_FILE:
        return print_file(node, out, style);
    case CAIRN_DLIST_LIST:
        if ((rc = cairn_buf_append(out, "(", 1)) < 0)
            return rc;
        return print_children(node, false, out, style);
    case CAIRN_DLIST_KVLIST:
        if ((rc = cairn_buf_append(out, "%(", 2)) < 0)
            return rc;
        return print_children(node, true, out, style);
    }
    return CAIRN_EINVAL;
}

int
cairn_dlist_print(const struct cairn_dlist *node, bool print_key,
                  struct cairn_buf *out,
                  const struct cairn_dlist_body_writer *body_writer)
{
    const struct print_style style = {false, body_writer};

    if (node == NULL || out == NULL)
        return CAIRN_EINVAL;
    return print_node(node, print_key, out, &style);
}

int
cairn_dlist_print_stored(const struct cairn_dlist *node, bool print_key,
                         struct cairn_buf *out,
                         const struct cairn_dlist_body_writer *body_writer)
{
    const struct print_style style = {true, body_writer};

    if (node == NULL || out == NULL)
        return CAIRN_EINVAL;
    return print_node(node, print_key, out, &style);
}
