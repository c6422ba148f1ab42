/*
 * csync.h - framing of the Cyrus replication protocol (sync-protocol.md
 * §1.5, §2.1, §2.4, §2.7) for both ends:
 *
 *  - server side (the router): an incremental command reader that turns
 *    bytes into one command at a time (GET/APPLY/RESTORE + dlist, or a
 *    simple command), resynchronises after a malformed command, and one
 *    response writer (untagged "* KEY value" lines and OK/NO/BAD/BYE/+);
 *  - client side (restore, benchmarks, tests): a command writer and a
 *    response reader that collects untagged items up to the completion line
 *    and maps NO texts to codes as sync_client does;
 *  - the COMPRESS DEFLATE stream (raw deflate, one stream per direction).
 *
 * Pure logic over memory buffers: the caller does the socket I/O. No
 * logging. One object per connection; not thread-safe per object.
 */
#ifndef CAIRN_CSYNC_H
#define CAIRN_CSYNC_H

#include "common.h"
#include "dlist.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- commands (server side) -------------------------------------------- */

enum cairn_csync_verb {
    CAIRN_CSYNC_UNKNOWN = 0, /* any other word; args hold the line's words */
    CAIRN_CSYNC_GET,         /* dlist commands: value holds key + value */
    CAIRN_CSYNC_APPLY,
    CAIRN_CSYNC_RESTORE,
    CAIRN_CSYNC_AUTHENTICATE, /* args: mechanism [initial-response] */
    CAIRN_CSYNC_STARTTLS,
    CAIRN_CSYNC_COMPRESS, /* args: algorithm ("DEFLATE") */
    CAIRN_CSYNC_NOOP,
    CAIRN_CSYNC_RESTART,
    CAIRN_CSYNC_EXIT,
    CAIRN_CSYNC_LINE, /* a raw line asked for with expect_line (SASL) */
};

/* Most words a simple command line is split into (more is an error). */
#define CAIRN_CSYNC_MAX_ARGS 8

/*
 * One command. For GET/APPLY/RESTORE, value is the parsed tree: its name is
 * the key exactly as sent (e.g. "MAILBOX"; compare case-insensitively), its
 * value the command's argument, file literals already handed to the sink.
 * For other verbs, args[0..argc-1] are the words after the verb (for
 * CAIRN_CSYNC_LINE, args[0] is the whole line without CRLF, argc 1). word is
 * the verb as sent ("Apply", "C01", "" for an empty line). All strings and
 * the tree are owned by the command: release with
 * cairn_csync_command_release().
 */
struct cairn_csync_command {
    enum cairn_csync_verb verb;
    char *word;
    struct cairn_dlist *value;
    int argc;
    char *args[CAIRN_CSYNC_MAX_ARGS];
};

/* Frees what cmd holds and zeroes it (NULL-safe, safe on a zeroed cmd). */
void cairn_csync_command_release(struct cairn_csync_command *cmd);
/* "GET", "APPLY", ... for a verb (static string). */
const char *cairn_csync_verb_name(enum cairn_csync_verb verb);
/* Verb of a command word, case-insensitive; CAIRN_CSYNC_UNKNOWN if none. */
enum cairn_csync_verb cairn_csync_verb_lookup(const char *word, size_t len);

struct cairn_csync_reader;

/*
 * Allocates a command reader. max_line bounds a simple command line and the
 * verb word (e.g. 65536 for SASL initial responses); limits (copied, NULL
 * for defaults) and sink (copied, may be NULL) govern dlist values. Returns
 * 0 and the owned reader in *reader, or CAIRN_ENOMEM / CAIRN_EINVAL.
 */
int cairn_csync_reader_new(size_t max_line,
                           const struct cairn_dlist_limits *limits,
                           const struct cairn_dlist_file_sink *sink,
                           struct cairn_csync_reader **reader);
void cairn_csync_reader_free(struct cairn_csync_reader *reader);

/*
 * Feeds len bytes; call again with the unconsumed rest after each command.
 * Returns:
 *  - 0: one command complete in *cmd (owned by the caller); *consumed
 *    bytes were used;
 *  - CAIRN_EAGAIN: all bytes used, need more;
 *  - a negative CAIRN_E* code: the command is malformed or too big;
 *    cairn_csync_reader_error() explains, *consumed bytes were used. The
 *    caller may reply BAD and keep feeding: the reader then skips to the
 *    end of the bad command line (stepping over {N} / {N+} literals that
 *    follow their header on that line) before reading the next command.
 *    Feeding after an error returns CAIRN_EAGAIN while it skips.
 */
int cairn_csync_reader_feed(struct cairn_csync_reader *reader, const void *data,
                            size_t len, size_t *consumed,
                            struct cairn_csync_command *cmd);
/*
 * The next line will be returned whole as CAIRN_CSYNC_LINE (SASL client
 * responses, which are bare base64 or "*").
 */
void cairn_csync_reader_expect_line(struct cairn_csync_reader *reader);
/* Why the last feed failed; "" if it did not. Borrowed. */
const char *cairn_csync_reader_error(const struct cairn_csync_reader *reader);
/* True while the reader is skipping the rest of a malformed command. */
bool cairn_csync_reader_skipping(const struct cairn_csync_reader *reader);

/* --- responses --------------------------------------------------------- */

enum cairn_csync_status {
    CAIRN_CSYNC_OK = 0,
    CAIRN_CSYNC_NO,
    CAIRN_CSYNC_BAD,
    CAIRN_CSYNC_BYE,
    CAIRN_CSYNC_CONTINUE, /* "+ text": SASL challenge */
};

/*
 * Error codes carried in NO texts ("NO IMAP_MAILBOX_LOCKED Mailbox
 * locked") and what sync_client maps them to (§2.7).
 */
enum cairn_csync_code {
    CAIRN_CSYNC_CODE_NONE = 0, /* success, or no code in the text */
    CAIRN_CSYNC_CODE_INVALID_USER,
    CAIRN_CSYNC_CODE_MAILBOX_NONEXISTENT,
    CAIRN_CSYNC_CODE_MAILBOX_LOCKED,
    CAIRN_CSYNC_CODE_MAILBOX_MOVED,
    CAIRN_CSYNC_CODE_MAILBOX_NOTSUPPORTED,
    CAIRN_CSYNC_CODE_SYNC_CHECKSUM,
    CAIRN_CSYNC_CODE_SYNC_CHANGED,
    CAIRN_CSYNC_CODE_SYNC_BADSIEVE,
    CAIRN_CSYNC_CODE_PROTOCOL_ERROR,
    CAIRN_CSYNC_CODE_PROTOCOL_BAD_PARAMETERS,
    CAIRN_CSYNC_CODE_REMOTE_DENIED, /* any other NO text */
    CAIRN_CSYNC_CODE_BYE_LOGOUT,    /* a BYE completion */
};

/* "IMAP_MAILBOX_LOCKED" etc. (static; "" for NONE). */
const char *cairn_csync_code_name(enum cairn_csync_code code);
/*
 * Maps the text after "NO " as sync_client does: a known code word
 * followed by a space, else CAIRN_CSYNC_CODE_REMOTE_DENIED.
 */
enum cairn_csync_code cairn_csync_code_from_text(const char *text);

/*
 * Appends one untagged line "* KEY value\r\n" for item (its name is the
 * key). FILE nodes need body_writer (see dlist.h). Returns 0 or an error.
 */
int cairn_csync_write_untagged(struct cairn_buf *out,
                               const struct cairn_dlist *item,
                               const struct cairn_dlist_body_writer *body);
/*
 * Appends a completion or continuation line: "OK text", "NO CODE text",
 * "BAD text", "BYE text" or "+ text", then CRLF. code is used with NO only
 * (CAIRN_CSYNC_CODE_NONE for no code word). An empty text becomes a default
 * ("Success", the code's usual text, ...) because sync_client rejects a
 * completion without text. CR/LF inside text are replaced by spaces.
 */
int cairn_csync_write_response(struct cairn_buf *out,
                               enum cairn_csync_status status,
                               enum cairn_csync_code code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* --- client side ------------------------------------------------------- */

/*
 * Appends "VERB KEY value\r\n" (verb "GET", "APPLY" or "RESTORE"; the key is
 * value's name). FILE nodes need body_writer.
 */
int cairn_csync_write_command(struct cairn_buf *out, const char *verb,
                              const struct cairn_dlist *value,
                              const struct cairn_dlist_body_writer *body);

/*
 * A response as sync_client sees it: untagged items in order (each a tree
 * whose name is the key), then the completion. For NO the code comes from
 * the text per §2.7; BAD and unknown words map to PROTOCOL_ERROR, BYE to
 * BYE_LOGOUT; a "+ " line (SASL challenge) ends a response as CONTINUE.
 * Everything is owned by the response: release with
 * cairn_csync_response_release().
 */
struct cairn_csync_response {
    enum cairn_csync_status status;
    enum cairn_csync_code code;
    char *text; /* completion text after the status word, without CRLF */
    struct cairn_dlist **items;
    size_t item_count;
};

void cairn_csync_response_release(struct cairn_csync_response *response);

struct cairn_csync_response_reader;

/*
 * Allocates a response reader: max_line bounds completion lines, max_items
 * the untagged items of one response; limits and sink as for the command
 * reader (file literals appear in replies to GET FETCH). Returns 0 and the
 * owned reader in *reader, or an error.
 */
int
cairn_csync_response_reader_new(size_t max_line, size_t max_items,
                                const struct cairn_dlist_limits *limits,
                                const struct cairn_dlist_file_sink *sink,
                                struct cairn_csync_response_reader **reader);
void
cairn_csync_response_reader_free(struct cairn_csync_response_reader *reader);
/*
 * Feeds len bytes. 0: *response is complete (owned by the caller), *consumed
 * bytes used; CAIRN_EAGAIN: need more; negative: a malformed response (the
 * connection should be dropped), see cairn_csync_response_reader_error().
 */
int cairn_csync_response_reader_feed(struct cairn_csync_response_reader *reader,
                                     const void *data, size_t len,
                                     size_t *consumed,
                                     struct cairn_csync_response *response);
const char *
cairn_csync_response_reader_error(const struct cairn_csync_response_reader *r);

/*
 * Takes one CRLF- (or LF-) terminated line off the front of input (banner
 * lines, SASL "+ " challenges): 0 and an owned NUL-terminated copy without
 * the line end in *line (free()), CAIRN_EAGAIN when no whole line is there
 * yet, CAIRN_ETOOBIG when input holds max_line bytes without a line end.
 */
int cairn_csync_take_line(struct cairn_buf *input, size_t max_line, char **line,
                          size_t *len);

/* --- COMPRESS DEFLATE -------------------------------------------------- */

/*
 * Both directions of a compressed connection: raw deflate (windowBits
 * -15), default level, memLevel 9, one never-ending stream each way.
 */
struct cairn_compress;

/* Allocates both streams. Returns 0 and the owned object, or an error. */
int cairn_compress_new(struct cairn_compress **compress);
void cairn_compress_free(struct cairn_compress *compress);
/*
 * Compresses len bytes and appends the output to out. flush makes it a
 * Z_SYNC_FLUSH (ends in 00 00 ff ff): do it at the end of every response
 * or command so the peer can act on it. CAIRN_ETOOBIG when out is full.
 */
int cairn_compress_deflate(struct cairn_compress *compress, const void *data,
                           size_t len, bool flush, struct cairn_buf *out);
/*
 * Inflates from data, appending at most max_output bytes to out (and never
 * more than out's maximum allows): *consumed says how much input was used;
 * feed the rest again after the caller drained out. Returns 0, or
 * CAIRN_EPARSE for a corrupt stream (the connection must be dropped).
 */
int cairn_compress_inflate(struct cairn_compress *compress, const void *data,
                           size_t len, size_t *consumed, size_t max_output,
                           struct cairn_buf *out);

#endif /* CAIRN_CSYNC_H */
