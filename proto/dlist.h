/*
 * dlist.h - the dlist codec: the tree of values that every csync command,
 * csync response and backup log line carries (sync-protocol.md §2).
 *
 * A node has an optional name (its key inside a kvlist, or the key of a
 * command such as "MAILBOX") and one of the types below. Numbers, dates,
 * GUIDs and hex values are ATOMs on the wire; the typed getters convert them
 * when read, as Cyrus does.
 *
 * Three parts:
 *  - construction (cairn_dlist_new_*, cairn_dlist_add_*) for replies and
 *    records;
 *  - a serialiser that follows Cyrus's emitter rules byte for byte, so a
 *    tree parsed from Cyrus output prints back to the same bytes;
 *  - an incremental, bounded parser fed with pieces of input split anywhere;
 *    message bodies in file literals go to a caller's sink and are never
 *    held in memory.
 *
 * Pure logic: no I/O, no logging. Not thread-safe per object; distinct
 * objects may be used from distinct threads.
 */
#ifndef CAIRN_DLIST_H
#define CAIRN_DLIST_H

#include "common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cairn_dlist_type {
    CAIRN_DLIST_NIL = 0, /* NIL on the wire, no value */
    CAIRN_DLIST_ATOM,    /* string: atom, "quoted" or literal when printed */
    CAIRN_DLIST_FLAG,    /* \Seen etc. (also user flags), printed raw */
    CAIRN_DLIST_BUF,     /* bytes, binary allowed (from {N} literals) */
    CAIRN_DLIST_LIST,    /* ( v v ) : unkeyed children */
    CAIRN_DLIST_KVLIST,  /* %( k v k v ) : keyed children */
    CAIRN_DLIST_FILE,    /* %{partition guid size} + size raw bytes */
};

/* A GUID on the wire: 40 lowercase hex digits (SHA-1 of the message). */
#define CAIRN_DLIST_GUID_LEN 40

/* Opaque tree node. A tree is freed through its root. */
struct cairn_dlist;

/* --- construction ------------------------------------------------------ */

/*
 * Allocates a new root node (a kvlist or list) named name (copied; NULL or
 * "" for no name). Returns the owned node, or NULL when out of memory. Free
 * it with cairn_dlist_free().
 */
struct cairn_dlist *cairn_dlist_new_kvlist(const char *name);
struct cairn_dlist *cairn_dlist_new_list(const char *name);
/* A root node holding a single string (e.g. the value of "GET USER anne"). */
struct cairn_dlist *cairn_dlist_new_atom(const char *name, const char *value);

/*
 * Frees node and everything below it (NULL-safe). FILE nodes call their
 * release function on their handle. node must be a root (not a child).
 */
void cairn_dlist_free(struct cairn_dlist *node);

/*
 * The cairn_dlist_add_* functions append a new child to parent (a LIST or
 * KVLIST). name is the key (copied): required for a KVLIST parent, ignored
 * (may be NULL) for a LIST parent. Strings are copied. They return 0,
 * CAIRN_ENOMEM, or CAIRN_EINVAL (parent is not a list, name missing).
 *
 * Strings are stored as ATOM and printed as atom, quoted string or {N+}
 * literal per Cyrus's rules at print time; value NULL adds NIL.
 */
int cairn_dlist_add_atom(struct cairn_dlist *parent, const char *name,
                         const char *value);
/* A string given by pointer and length (no NUL inside: use add_buf). */
int cairn_dlist_add_string(struct cairn_dlist *parent, const char *name,
                           const char *value, size_t len);
/* Unsigned decimal, as Cyrus prints num32/num64/date ("%llu"). */
int cairn_dlist_add_num(struct cairn_dlist *parent, const char *name,
                        uint64_t value);
/* 16 lowercase hex digits, zero padded ("%016llx"), e.g. thrid. */
int cairn_dlist_add_hex64(struct cairn_dlist *parent, const char *name,
                          uint64_t value);
/*
 * A GUID: guid must be 40 hex digits (either case; stored lowercase),
 * CAIRN_EINVAL otherwise. A 20-byte binary SHA-1 goes through
 * cairn_dlist_add_guid_bytes().
 */
int cairn_dlist_add_guid(struct cairn_dlist *parent, const char *name,
                         const char *guid);
int cairn_dlist_add_guid_bytes(struct cairn_dlist *parent, const char *name,
                               const unsigned char sha1[20]);
/* A flag such as "\\Seen" or "$Label1", printed raw (never quoted). */
int cairn_dlist_add_flag(struct cairn_dlist *parent, const char *name,
                         const char *flag);
/* Bytes, binary allowed; printed as a literal when it holds a NUL. */
int cairn_dlist_add_buf(struct cairn_dlist *parent, const char *name,
                        const void *data, size_t len);
int cairn_dlist_add_nil(struct cairn_dlist *parent, const char *name);
/*
 * Append an empty child list / kvlist and return it (borrowed: it belongs
 * to parent) through *child, to be filled in afterwards.
 */
int cairn_dlist_add_list(struct cairn_dlist *parent, const char *name,
                         struct cairn_dlist **child);
int cairn_dlist_add_kvlist(struct cairn_dlist *parent, const char *name,
                           struct cairn_dlist **child);
/*
 * Appends a file reference: %{partition guid size} then size body bytes
 * when printed (the body comes from the print callback). handle is the
 * caller's (e.g. a path or an open store object) and is returned by
 * cairn_dlist_file_info(); release, when not NULL, is called as
 * release(release_ctx, handle) when the tree is freed - the tree takes
 * ownership of handle on success only (on error the caller still owns it).
 */
int cairn_dlist_add_file(struct cairn_dlist *parent, const char *name,
                         const char *partition, const char *guid, uint64_t size,
                         void *handle,
                         void (*release)(void *release_ctx, void *handle),
                         void *release_ctx);
/*
 * Appends child (a root made with cairn_dlist_new_* or taken from a parser)
 * to parent, renaming it to name when name is not NULL. Consumes child on
 * success; on error the caller still owns it.
 */
int cairn_dlist_append(struct cairn_dlist *parent, const char *name,
                       struct cairn_dlist *child);

/* --- inspection -------------------------------------------------------- */

enum cairn_dlist_type cairn_dlist_type(const struct cairn_dlist *node);
/* The node's name (key), "" when it has none. Borrowed. */
const char *cairn_dlist_name(const struct cairn_dlist *node);
/*
 * The string value of an ATOM, FLAG or BUF node (NUL-terminated, len
 * excludes the NUL; a BUF may hold NULs), NULL for other types. Borrowed.
 */
const char *cairn_dlist_value(const struct cairn_dlist *node, size_t *len);
/* Children of a LIST or KVLIST in order; NULL at the end / for leaves. */
const struct cairn_dlist *cairn_dlist_first(const struct cairn_dlist *node);
const struct cairn_dlist *cairn_dlist_next(const struct cairn_dlist *node);
size_t cairn_dlist_count(const struct cairn_dlist *node);
/*
 * For a FILE node: partition and guid (borrowed strings), size and the
 * caller's or the sink's handle. Returns false for other types.
 */
bool cairn_dlist_file_info(const struct cairn_dlist *node,
                           const char **partition, const char **guid,
                           uint64_t *size, void **handle);

/* --- typed getters (sync-protocol.md §2.3) ----------------------------- */

/*
 * Each getter looks key up among the children of kvlist (case-sensitive,
 * first match) and converts the value; it returns false when the key is
 * missing or the value does not convert (which counts as missing). Strings
 * returned are borrowed from the tree.
 */
const struct cairn_dlist *cairn_dlist_get(const struct cairn_dlist *kvlist,
                                          const char *key);
/* ATOM, or BUF without NUL; NIL gives *value == NULL and true. */
bool cairn_dlist_get_atom(const struct cairn_dlist *kvlist, const char *key,
                          const char **value);
/* Decimal digits only; getnum32 truncates to 32 bits like Cyrus. */
bool cairn_dlist_get_num32(const struct cairn_dlist *kvlist, const char *key,
                           uint32_t *value);
bool cairn_dlist_get_num64(const struct cairn_dlist *kvlist, const char *key,
                           uint64_t *value);
/* Seconds since the epoch, read like num64. */
bool cairn_dlist_get_date(const struct cairn_dlist *kvlist, const char *key,
                          int64_t *value);
bool cairn_dlist_get_hex64(const struct cairn_dlist *kvlist, const char *key,
                           uint64_t *value);
/* Exactly 40 hex digits. */
bool cairn_dlist_get_guid(const struct cairn_dlist *kvlist, const char *key,
                          const char **guid);
/* Any string or literal, binary allowed (not NIL). */
bool cairn_dlist_get_map(const struct cairn_dlist *kvlist, const char *key,
                         const char **data, size_t *len);
/* Any LIST or KVLIST (type not checked, as in Cyrus). */
bool cairn_dlist_get_list(const struct cairn_dlist *kvlist, const char *key,
                          const struct cairn_dlist **list);
bool cairn_dlist_get_file(const struct cairn_dlist *kvlist, const char *key,
                          const struct cairn_dlist **file);

/*
 * The same conversions on a node itself (for elements of lists such as
 * "MBOXNAME (user.a user.b)" or "GUID (...)").
 */
bool cairn_dlist_as_atom(const struct cairn_dlist *node, const char **value);
bool cairn_dlist_as_num64(const struct cairn_dlist *node, uint64_t *value);
bool cairn_dlist_as_hex64(const struct cairn_dlist *node, uint64_t *value);
bool cairn_dlist_as_guid(const struct cairn_dlist *node, const char **guid);

/* --- serialiser -------------------------------------------------------- */

/*
 * Supplies the body of a FILE node while printing. The serialiser has just
 * appended "%{partition guid size}\r\n" to out; write_body must then deliver
 * exactly size bytes, either by appending them to out or, when it owns the
 * final destination (a socket, a file), by first passing on and emptying
 * everything out holds and then writing the body itself. Returns 0 or a
 * negative CAIRN_E* code, which aborts the print.
 */
struct cairn_dlist_body_writer {
    int (*write_body)(void *ctx, const struct cairn_dlist *file,
                      struct cairn_buf *out);
    void *ctx;
};

/*
 * Appends node to out as Cyrus's dlist_print() would: with "key " in front
 * when print_key, then the value. FILE nodes need body_writer (NULL gives
 * CAIRN_EINVAL when a FILE node is met). Returns 0, CAIRN_ETOOBIG when out
 * reaches its maximum, or the body writer's error; out may then hold a
 * partial value.
 */
int cairn_dlist_print(const struct cairn_dlist *node, bool print_key,
                      struct cairn_buf *out,
                      const struct cairn_dlist_body_writer *body_writer);

/*
 * cairn_dlist_print for a line of a backup file: literals synchronising
 * ("{N}") instead of "{N+}". Cyrus 3.6's backup reader (verify, reindex,
 * restore) does not parse "{N+}" and stops reading the chunk at it.
 */
int cairn_dlist_print_stored(const struct cairn_dlist *node, bool print_key,
                             struct cairn_buf *out,
                             const struct cairn_dlist_body_writer *body_writer);

/*
 * Appends one string with Cyrus's astring rules (prot_printastring /
 * prot_printamap): NULL -> NIL, "" -> "", "NIL" -> "NIL" quoted, atom,
 * quoted string, or {N+} literal.
 */
int cairn_dlist_print_astring(struct cairn_buf *out, const char *value,
                              size_t len);

/* --- parser ------------------------------------------------------------ */

/*
 * Hard limits of one parse. Every one must be non-zero; start from
 * cairn_dlist_limits_default() and tighten.
 */
struct cairn_dlist_limits {
    size_t max_depth;     /* nesting of lists/kvlists (default 64) */
    size_t max_atom;      /* bytes of one atom or key (default 128 KiB) */
    size_t max_quoted;    /* bytes of one quoted string (default 128 KiB) */
    uint64_t max_literal; /* bytes of one {N} literal (default 64 MiB) */
    uint64_t max_file;    /* bytes of one file literal (default 4 GiB - 1) */
    size_t max_nodes;     /* nodes in the tree (default 4,000,000) */
    size_t max_bytes;     /* string bytes held in the tree (default 256 MiB)*/
};

void cairn_dlist_limits_default(struct cairn_dlist_limits *limits);

/*
 * Receives the bodies of file literals as they arrive. begin() is called
 * after the "%{partition guid size}\r\n" header (guid checked to be 40 hex
 * digits, size within max_file) and sets *handle; data() gets the body in
 * pieces (possibly zero of them for size 0); end() follows the last byte.
 * Each returns 0 or a negative CAIRN_E* code that fails the parse.
 * release(), if not NULL, is called exactly once for every handle begin()
 * returned: when the tree holding it is freed, or when the parse fails or is
 * reset before the file node joined a tree. ctx is passed to all four.
 */
struct cairn_dlist_file_sink {
    int (*begin)(void *ctx, const char *partition, const char *guid,
                 uint64_t size, void **handle);
    int (*data)(void *ctx, void *handle, const void *bytes, size_t len);
    int (*end)(void *ctx, void *handle);
    void (*release)(void *ctx, void *handle);
    void *ctx;
};

/* Parser flags. */
enum {
    /* Read a key (astring) before the value: "KEY value" (commands, untagged
     * responses, backup log lines after the verb). */
    CAIRN_DLIST_PARSE_KEY = 1 << 0,
    /* After the value require an optional CR and an LF, and consume them. */
    CAIRN_DLIST_PARSE_EOL = 1 << 1,
};

struct cairn_dlist_parser;

/*
 * Allocates a parser. limits (copied) may be NULL for the defaults; sink
 * (copied) may be NULL, in which case file bodies are skipped and FILE
 * nodes get a NULL handle. flags is a mask of CAIRN_DLIST_PARSE_*. Returns
 * 0 and the owned parser in *parser, or CAIRN_ENOMEM / CAIRN_EINVAL.
 */
int cairn_dlist_parser_new(const struct cairn_dlist_limits *limits,
                           const struct cairn_dlist_file_sink *sink,
                           unsigned flags, struct cairn_dlist_parser **parser);
/* Frees the parser and any partial tree (NULL-safe). */
void cairn_dlist_parser_free(struct cairn_dlist_parser *parser);
/* Drops any partial tree and error; ready for a new value. */
void cairn_dlist_parser_reset(struct cairn_dlist_parser *parser);

/*
 * Feeds len bytes. Returns:
 *  - 0: a value is complete; *consumed bytes of data were used (the rest
 *    belongs to whatever follows); take the tree with
 *    cairn_dlist_parser_take();
 *  - CAIRN_EAGAIN: all len bytes were used, more are needed;
 *  - a negative CAIRN_E* code (CAIRN_EPARSE, CAIRN_ETOOBIG, CAIRN_EOVERFLOW,
 *    CAIRN_ENOMEM or the sink's error): the input is malformed or exceeds a
 *    limit; *consumed says how far the parser got (the offending byte is not
 *    counted); cairn_dlist_parser_error() explains. The parser stays failed
 *    until reset.
 * A value that ends only at end of input (a bare top-level atom without
 * PARSE_EOL) needs cairn_dlist_parser_finish().
 */
int cairn_dlist_parser_feed(struct cairn_dlist_parser *parser, const void *data,
                            size_t len, size_t *consumed);
/*
 * Tells the parser the input has ended: 0 if the value is now complete,
 * CAIRN_EPARSE ("unexpected end of input") otherwise.
 */
int cairn_dlist_parser_finish(struct cairn_dlist_parser *parser);
/*
 * After a complete value: returns the tree (owned by the caller, free with
 * cairn_dlist_free) and resets the parser for the next value. NULL if no
 * value is complete.
 */
struct cairn_dlist *cairn_dlist_parser_take(struct cairn_dlist_parser *parser);
/*
 * How many non-synchronising literals ("{N+}") the parser has read since
 * it was made: a line of a backup file holding one is where Cyrus 3.6's
 * backup reader stops reading its chunk.
 */
uint64_t
cairn_dlist_parser_nonsync_literals(const struct cairn_dlist_parser *parser);
/* Why the last feed failed, "" if it did not. Borrowed, valid until reset. */
const char *cairn_dlist_parser_error(const struct cairn_dlist_parser *parser);
/* Bytes consumed since the last reset/take (for error positions). */
uint64_t cairn_dlist_parser_offset(const struct cairn_dlist_parser *parser);

/*
 * Parses exactly one value from a whole buffer (end of data ends it; with
 * PARSE_EOL a trailing CRLF is required). Trailing bytes are an error.
 * Returns 0 and the owned tree in *tree, or an error with a message in
 * error (NUL-terminated, may be NULL) of error_size bytes.
 */
int cairn_dlist_parse(const void *data, size_t len, unsigned flags,
                      const struct cairn_dlist_limits *limits,
                      const struct cairn_dlist_file_sink *sink,
                      struct cairn_dlist **tree, char *error,
                      size_t error_size);

#endif /* CAIRN_DLIST_H */
