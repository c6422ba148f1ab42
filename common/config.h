/*
 * config.h - the cluster.conf reader shared by the router, the nodes and
 * cairnctl.
 *
 * cluster.conf is an INI-style file; cluster.example.conf at the top of the
 * repository documents every key, and its text is also the built-in default
 * configuration. The whole file is parsed and cross-checked before a
 * config object exists, so a program that holds a struct cairn_config can
 * trust every value in it: ranges are checked, every channel's destinations
 * and every destination's nodes exist, required keys are present, relative
 * paths are resolved and defaults are filled in.
 *
 * Syntax: "[router]", "[channel NAME]", "[destination NAME]", "[node NAME]",
 * "[compaction]", "[security]", "[limits]" headers, then "key = value"
 * lines. A line whose first non-blank character is '#' or ';' is a comment
 * (only whole lines, so passwords may contain those characters). Values are
 * taken verbatim after trimming the blanks around them; an empty value
 * ("key =") means the key's default.
 *
 * The parser is pure: it does no I/O and never logs. Only
 * cairn_config_load() reads a file. Errors come back as a negative CAIRN_E*
 * code plus a struct cairn_config_error saying file, line and reason.
 *
 * Ownership: a struct cairn_config and everything reachable from it belongs
 * to the config object; every pointer a getter returns is borrowed and
 * lives until cairn_config_free().
 */
#ifndef CAIRN_CONFIG_H
#define CAIRN_CONFIG_H

#include "common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bounds on the input, so a hostile or broken file cannot exhaust memory. */
#define CAIRN_CONFIG_MAX_FILE (1024 * 1024) /* bytes in cluster.conf */
#define CAIRN_CONFIG_MAX_LINE 65536 /* bytes in one line (long node lists) */
#define CAIRN_CONFIG_MAX_NAME 64    /* section and list names */
#define CAIRN_CONFIG_MAX_KEYS 16    /* keys a section kind may have */

/* Why loading failed: filled in by every function that takes one. */
struct cairn_config_error {
    char file[512];    /* the name given to the parser, or the path */
    unsigned line;     /* 1-based; 0 when the error is about the file */
    char message[512]; /* the reason, e.g. "unknown key 'bogus' in [node]" */
};

/* A list of names ("node1, node2, node3" in the file). */
struct cairn_config_list {
    size_t count;
    char **items;
};

/*
 * Where a section came from. It is the first member of every section struct
 * so that the parser can handle all sections alike.
 */
struct cairn_config_origin {
    char *name;    /* NAME of [channel NAME] etc.; NULL for single sections */
    unsigned line; /* line of the section header; 0 = absent, all defaults */
    /* Internal: line that set each key (key-table order), 0 = default. */
    unsigned key_lines[CAIRN_CONFIG_MAX_KEYS];
};

/*
 * Durations are in milliseconds, sizes in bytes. Strings and paths that
 * are not set are NULL. Relative paths have been resolved against the
 * directory of the config file (cairn_config_load) or the base_dir given to
 * cairn_config_parse.
 */
struct cairn_config_router {
    struct cairn_config_origin origin;
    char *control;                   /* zmq endpoint cairnctl connects to */
    char *spool_dir;                 /* bodies staged until the user is known */
    uint64_t spool_max;              /* bytes the spool may hold */
    char *servername;                /* shown in the csync banner */
    uint64_t node_timeout_ms;        /* a node request fails after this */
    uint64_t node_answer_timeout_ms; /* silent this long: node down */
    uint64_t node_window;            /* requests in flight per node */
    uint64_t user_window;            /* requests in flight per user */
    uint64_t max_connections;        /* csync connections, all channels */
    enum cairn_log_level log_level;  /* lines below this are dropped */
    char *pid_file;                  /* NULL: none written */
    char *ring_dir;                  /* default home of the ring files */
    char *state_dir;                 /* repair marks kept across restarts */
    char *curve_key;                 /* its CURVE key's name */
    char *metrics_listen;            /* HTTP /metrics address; NULL: off */
};

/* How a channel's listener starts TLS (with tls_cert set). */
enum cairn_config_tls_mode {
    CAIRN_CONFIG_TLS_STARTTLS = 0, /* plain banner, STARTTLS offered */
    CAIRN_CONFIG_TLS_IMPLICIT = 1, /* handshake at connect (host:port/tls) */
};

/* Write acknowledgement policy of a destination. */
enum cairn_config_ack {
    CAIRN_CONFIG_ACK_ALL = 0,    /* every replica has it durably */
    CAIRN_CONFIG_ACK_QUORUM = 1, /* a majority of the replicas */
    CAIRN_CONFIG_ACK_ONE = 2,    /* the first replica */
};

struct cairn_config_destination;
struct cairn_config_node;

struct cairn_config_channel {
    struct cairn_config_origin origin; /* origin.name is the channel name */
    char *listen;                      /* host:port of the csync listener */
    char *sasl_user;                   /* identity sync_client logs in as */
    char *sasl_password;               /* its password, or NULL... */
    char *sasl_password_file;          /* ...a file holding it, or... */
    char *sasl_db;                     /* ...a sasldb holding it */
    struct cairn_config_list sasl_mechanisms; /* advertised, in order */
    bool require_tls;         /* refuse AUTHENTICATE before TLS */
    char *tls_cert;           /* PEM; STARTTLS offered when set */
    char *tls_key;            /* PEM private key for tls_cert */
    int tls_mode;             /* enum cairn_config_tls_mode */
    char *tls_client_ca;      /* PEM CAs client certificates must chain to */
    char *tls_client_subject; /* CN or RFC 2253 DN a client cert must have */
    bool compress;            /* allow the COMPRESS command */
    struct cairn_config_list destinations; /* names, at least one */
    uint64_t idle_timeout_ms;              /* an idle connection is closed */
    char *users; /* globs of the users it may touch; NULL: all */
    /* destinations.items resolved, same order and count. */
    const struct cairn_config_destination **destination_refs;
};

struct cairn_config_destination {
    struct cairn_config_origin origin; /* origin.name is the destination */
    struct cairn_config_list nodes;    /* node names, at least one */
    uint64_t replicas;                 /* copies of each user, <= nodes */
    char *ring_file;                   /* default: ring_dir/NAME.ring */
    enum cairn_config_ack ack;         /* when the router may answer OK */
    /* nodes.items resolved, same order and count. */
    const struct cairn_config_node **node_refs;
};

struct cairn_config_node {
    struct cairn_config_origin origin; /* origin.name is the node name */
    char *endpoint;                    /* zmq endpoint the node binds */
    char *control;                     /* optional zmq control endpoint */
    char *data_dir;                    /* per-user logs and indexes */
    uint64_t weight;                   /* share of users on the ring */
    char *zone;                        /* failure domain for replicas */
    uint64_t group_commit_ms;          /* fsync batching window */
    uint64_t max_frame;                /* bytes; [limits] max_frame if unset */
    uint64_t reserve;                  /* refuse writes below this free space */
    enum cairn_log_level log_level;
    char *curve_key;      /* its CURVE key's name; the node's name if unset */
    char *metrics_listen; /* HTTP /metrics address; NULL: off */
};

struct cairn_config_compaction {
    struct cairn_config_origin origin;
    bool enabled;
    uint64_t interval_ms;    /* how often each user is considered */
    uint64_t retention_ms;   /* keep deleted/expunged data; 0 = forever */
    uint64_t min_chunk;      /* merge smaller chunks; 0 = off */
    uint64_t max_chunk;      /* split larger chunks; 0 = off */
    uint64_t work_threshold; /* percent reclaimable before compacting */
    uint64_t parallel_users; /* users compacted at once per node */
};

/* How a scrub checks a user (node/server_scrub.c). */
enum cairn_scrub_level {
    CAIRN_SCRUB_LIGHT, /* every chunk's checksums */
    CAIRN_SCRUB_FULL,  /* Cyrus's full level: bodies, mailbox links */
};

struct cairn_config_scrub {
    struct cairn_config_origin origin;
    bool enabled;
    uint64_t interval_ms; /* every user checked once per interval */
    uint64_t rate;        /* bytes read per second on average; 0 = any */
    int level;            /* enum cairn_scrub_level */
    bool heal;            /* rebuild a damaged replica from a good peer */
};

struct cairn_config_security {
    struct cairn_config_origin origin;
    bool curve;          /* CURVE on every ZeroMQ link */
    char *curve_key_dir; /* NAME.public / NAME.secret key files */
    uint64_t data_mode;  /* permission bits of data files */
    char *user;          /* run as this user; NULL: don't switch */
    struct cairn_config_list writer_keys; /* role writer: the router(s) */
    struct cairn_config_list admin_keys;  /* role admin: cairnctl */
    struct cairn_config_list peer_keys;   /* role peer; empty: every node */
};

struct cairn_config_limits {
    struct cairn_config_origin origin;
    uint64_t max_line;    /* csync command line, literals excluded */
    uint64_t max_literal; /* an in-line {N} literal */
    uint64_t max_message; /* a message body (%{...} file literal) */
    uint64_t max_nesting; /* dlist nesting depth */
    uint64_t max_frame;   /* a ZeroMQ payload frame */
};

struct cairn_config;

/*
 * Parses len bytes of text. name is used in error messages and kept as the
 * config's name; base_dir (may be NULL: leave relative paths relative)
 * resolves relative paths. On success *config is a new object the caller
 * owns (free with cairn_config_free). On failure returns CAIRN_ECONFIG
 * (or CAIRN_ENOMEM) and fills *error when error is not NULL.
 */
int cairn_config_parse(const char *text, size_t len, const char *name,
                       const char *base_dir, struct cairn_config **config,
                       struct cairn_config_error *error);

/*
 * Reads and parses the file at path; relative paths in it are relative to
 * the file's directory. Returns CAIRN_ENOENT when the file does not exist,
 * CAIRN_EIO when it cannot be read, CAIRN_ETOOBIG when it is larger than
 * CAIRN_CONFIG_MAX_FILE, else as cairn_config_parse. *config is owned by
 * the caller.
 */
int cairn_config_load(const char *path, struct cairn_config **config,
                      struct cairn_config_error *error);

/*
 * Parses the built-in default (the text of cluster.example.conf, embedded
 * at build time); relative paths stay relative to the working directory.
 * *config is owned by the caller.
 */
int cairn_config_load_default(struct cairn_config **config,
                              struct cairn_config_error *error);

/* The built-in default text (static, NUL-terminated) and its name. */
const char *cairn_config_default_text(void);
extern const char cairn_config_default_name[];

/* Frees everything; NULL-safe. */
void cairn_config_free(struct cairn_config *config);

/* The name given at parse time (the path for cairn_config_load). */
const char *cairn_config_name(const struct cairn_config *config);

const struct cairn_config_router *
cairn_config_router(const struct cairn_config *config);
const struct cairn_config_compaction *
cairn_config_compaction(const struct cairn_config *config);
const struct cairn_config_scrub *
cairn_config_scrub(const struct cairn_config *config);
const struct cairn_config_security *
cairn_config_security(const struct cairn_config *config);
const struct cairn_config_limits *
cairn_config_limits(const struct cairn_config *config);

/* Named sections in file order; index < count, else NULL. */
size_t cairn_config_channel_count(const struct cairn_config *config);
const struct cairn_config_channel *
cairn_config_channel_at(const struct cairn_config *config, size_t index);
size_t cairn_config_destination_count(const struct cairn_config *config);
const struct cairn_config_destination *
cairn_config_destination_at(const struct cairn_config *config, size_t index);
size_t cairn_config_node_count(const struct cairn_config *config);
const struct cairn_config_node *
cairn_config_node_at(const struct cairn_config *config, size_t index);

/* Look a named section up by name; NULL when there is none. */
const struct cairn_config_channel *
cairn_config_find_channel(const struct cairn_config *config, const char *name);
const struct cairn_config_destination *
cairn_config_find_destination(const struct cairn_config *config,
                              const char *name);
const struct cairn_config_node *
cairn_config_find_node(const struct cairn_config *config, const char *name);

/*
 * Appends the effective configuration to out as cluster.conf text: every
 * section and every key with defaults filled in and paths resolved, each
 * key preceded by its one-line description (ending in "(default)" when
 * the file did not set the key). Passwords are printed as "********". The text
 * parses back to the same configuration (except the password). out keeps
 * its own maximum: CAIRN_ETOOBIG when the text does not fit.
 */
int cairn_config_format(const struct cairn_config *config,
                        struct cairn_buf *out);

/*
 * Appends the effective configuration to out as one JSON object (and a
 * newline): {"file": NAME, "router": {...}, "channels": [{"name": ...,
 * ...}], "destinations": [...], "nodes": [...], "compaction": {...},
 * "security": {...}, "limits": {...}}. Keys are the file's; sizes and
 * integers are numbers, durations are numbers of milliseconds under
 * KEY_ms, modes are octal strings, unset strings are null, passwords
 * "********". CAIRN_ETOOBIG when it does not fit in out's maximum.
 */
int cairn_config_format_json(const struct cairn_config *config,
                             struct cairn_buf *out);

/*
 * Appends cluster.conf(5), the manual page of the file, in roff (man(7))
 * to out: every section kind and every key of the same table the parser
 * checks against (type, default, range, required, unsupported, its
 * description), so the page and `cairnctl config check` never disagree.
 * version goes in the page's footer. CAIRN_ETOOBIG when out is full.
 */
int cairn_config_format_man(const char *version, struct cairn_buf *out);

#endif /* CAIRN_CONFIG_H */
