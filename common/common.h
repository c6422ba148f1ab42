/*
 * common.h - what every cairn program shares: error codes and their
 * messages, logging for daemons, checked number parsing, bounded buffers,
 * (The configuration reader has its own header, config.h.)
 *
 * Libraries return these codes and never log; daemons and cairnctl turn
 * them into log lines and exit codes.
 */
#ifndef CAIRN_COMMON_H
#define CAIRN_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/*
 * Error codes: 0 is success, every failure is negative. The table in
 * error.c gives each a message; add new codes at the end of the enum and
 * the table together.
 */
enum cairn_error {
    CAIRN_OK = 0,
    CAIRN_ENOMEM = -1,        /* out of memory */
    CAIRN_EINVAL = -2,        /* invalid argument */
    CAIRN_EIO = -3,           /* I/O error (errno is kept where useful) */
    CAIRN_EPARSE = -4,        /* malformed input */
    CAIRN_ETOOBIG = -5,       /* input exceeds a configured limit */
    CAIRN_ENOENT = -6,        /* no such thing */
    CAIRN_EEXIST = -7,        /* already exists */
    CAIRN_ELOCKED = -8,       /* held by someone else */
    CAIRN_ECORRUPT = -9,      /* stored data fails a check */
    CAIRN_EPROTO = -10,       /* peer broke the protocol */
    CAIRN_EAGAIN = -11,       /* not yet: more input or a retry needed */
    CAIRN_ETIMEOUT = -12,     /* peer too slow */
    CAIRN_EAUTH = -13,        /* authentication failed */
    CAIRN_EDB = -14,          /* SQLite error */
    CAIRN_ECONFIG = -15,      /* bad configuration */
    CAIRN_EUNAVAILABLE = -16, /* a node or service is down */
    CAIRN_ENOSPACE = -17,     /* disk full */
    CAIRN_EBADNAME = -18,     /* user or mailbox name unsafe or malformed */
    CAIRN_EMISMATCH = -19,    /* data does not match its checksum or GUID */
    CAIRN_ENOTSUP = -20,      /* operation not supported */
    CAIRN_ESTATE = -21,       /* call not valid in the current state */
    CAIRN_EOVERFLOW = -22,    /* number out of range */
    CAIRN_EPERM = -23,        /* not allowed (role, scope, privileges) */
    CAIRN_ERROR_MIN = -23,
};

/* A static, never-NULL message for rc (unknown codes get a generic one). */
const char *cairn_strerror(int rc);

/* --- logging (daemons and tools only; libraries never log) --- */

enum cairn_log_level {
    CAIRN_LOG_ERROR = 0,
    CAIRN_LOG_WARN = 1,
    CAIRN_LOG_INFO = 2,
    CAIRN_LOG_DEBUG = 3,
};

/*
 * Sets where log lines go: always stderr (when to_stderr), and syslog under
 * ident (borrowed, must outlive logging) when to_syslog. Lines below level
 * are dropped.
 */
void cairn_log_init(const char *ident, enum cairn_log_level level,
                    bool to_stderr, bool to_syslog);
void cairn_log_set_level(enum cairn_log_level level);
/* Parses "error", "warn", "info", "debug". */
int cairn_log_level_parse(const char *name, enum cairn_log_level *level);
void cairn_log(enum cairn_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void cairn_vlog(enum cairn_log_level level, const char *fmt, va_list ap);
#define cairn_log_error(...) cairn_log(CAIRN_LOG_ERROR, __VA_ARGS__)
#define cairn_log_warn(...) cairn_log(CAIRN_LOG_WARN, __VA_ARGS__)
#define cairn_log_info(...) cairn_log(CAIRN_LOG_INFO, __VA_ARGS__)
#define cairn_log_debug(...) cairn_log(CAIRN_LOG_DEBUG, __VA_ARGS__)

/* --- checked number parsing (never atoi) --- */

/*
 * Parses all of the len bytes at text as an unsigned decimal number in
 * [min, max]. No sign, no spaces, no trailing bytes. Returns CAIRN_EPARSE
 * for a non-number and CAIRN_EOVERFLOW when out of range.
 */
int cairn_parse_u64(const char *text, size_t len, uint64_t min, uint64_t max,
                    uint64_t *out);
/* Same for a NUL-terminated string. */
int cairn_parse_u64_str(const char *text, uint64_t min, uint64_t max,
                        uint64_t *out);
/*
 * A listen address of cluster.conf: "host:port" (a name resolves to its
 * first address), "*:port" (every IPv4 address) or "[ipv6]:port"; port 0
 * lets the kernel choose. CAIRN_ECONFIG when it is none of these.
 */
int cairn_parse_listen_address(const char *listen,
                               struct sockaddr_storage *address,
                               socklen_t *length);
/*
 * Parses a size with an optional unit suffix K, M, G, T (powers of 1024,
 * case-insensitive, optional trailing "B"): "64M", "1G", "4096".
 */
int cairn_parse_size(const char *text, uint64_t *out);
/*
 * Parses a duration with a unit suffix s, m, h, d, w ("30s", "7d"); a bare
 * number is seconds.
 */
int cairn_parse_duration(const char *text, uint64_t *seconds);
/* Parses yes/no/true/false/on/off/1/0. */
int cairn_parse_bool(const char *text, bool *out);

/* --- bounded growable byte buffer --- */

/*
 * A buffer whose size can never exceed the maximum given at init: every
 * buffer that grows from network or disk input has one. data is always
 * NUL-terminated (not counted in len) so text can be used as a C string.
 */
struct cairn_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
};

/* Initialises an empty buffer (no allocation yet) with a hard maximum. */
void cairn_buf_init(struct cairn_buf *buf, size_t max);
/* Frees the storage; the buffer may be reused after cairn_buf_init. */
void cairn_buf_release(struct cairn_buf *buf);
/* Empties the buffer, keeping its storage. */
void cairn_buf_reset(struct cairn_buf *buf);
/* Appends; CAIRN_ETOOBIG when the result would pass max. */
int cairn_buf_append(struct cairn_buf *buf, const void *data, size_t len);
int cairn_buf_append_str(struct cairn_buf *buf, const char *text);
int cairn_buf_printf(struct cairn_buf *buf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/*
 * Appends text for a roff (man(7)) page: '\\' as \e, '-' as \- (a
 * minus: options stay searchable), and a line that would start with '.'
 * or '\'' (a request) guarded by \&. Newlines are kept (common/roff.c).
 */
int cairn_buf_append_roff(struct cairn_buf *buf, const char *text);
/* Makes room for at least extra more bytes. */
int cairn_buf_reserve(struct cairn_buf *buf, size_t extra);
/* Removes the first n bytes (n <= len). */
void cairn_buf_consume(struct cairn_buf *buf, size_t n);
/*
 * Hands the storage to the caller (who frees it with free()) and leaves the
 * buffer empty. Never NULL on success: an empty buffer gives "".
 */
int cairn_buf_detach(struct cairn_buf *buf, char **data, size_t *len);

/* --- small file helpers --- */

/* write(2) all of len bytes, retrying on EINTR and short writes. */
int cairn_write_all(int fd, const void *data, size_t len);
/*
 * Raises the soft limit of open files to the hard limit (daemons hold
 * descriptors per connection, request in flight and open backup); *limit
 * is the soft limit after the call.
 */
int cairn_raise_open_files_limit(uint64_t *limit);
/* fsync the directory that holds path, so a rename or create is durable. */
int cairn_fsync_parent_dir(const char *path);
/*
 * The hex SHA-1 (hex: 41 bytes, NUL-terminated) and size of the file at
 * path, read in 64 KiB blocks. CAIRN_EIO when it cannot be read.
 */
int cairn_file_sha1(const char *path, char hex[41], uint64_t *size);

#endif /* CAIRN_COMMON_H */
