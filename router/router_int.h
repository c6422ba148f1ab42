/*
 * router_int.h - internals shared by the router's source files: SASL
 * authentication (auth.c), the connection layer (listener.c) and the
 * session (session.c). Not installed; tests may include it.
 */
#ifndef CAIRN_ROUTER_INT_H
#define CAIRN_ROUTER_INT_H

#include "router.h"

#include <sasl/sasl.h>
#include <sasl/saslutil.h>

/* --- auth.c: libsasl2 server side ---------------------------------------- */

/*
 * libsasl2 stores every callback as int (*)(void); going through
 * void (*)(void) is the cast compilers accept without a warning.
 */
#define CAIRN_SASL_CALLBACK(fn) ((int (*)(void))(void (*)(void))(fn))

/* Longest base64 SASL line we accept, as Cyrus's saslserver() does. */
#define CAIRN_ROUTER_SASL_LINE_MAX 21848

/* A channel's credentials and the mechanisms it advertises. Owned strings. */
struct cairn_router_auth_channel {
    char *servername; /* SASL service FQDN and default realm */
    char *user;       /* the only identity allowed in */
    char *password;   /* checked in-process, or NULL and ... */
    char *sasl_db;    /* ... the sasldb file libsasl2 reads */
    char *mechanisms; /* advertised, space-separated; "" = none */
    /* Per-connection libsasl2 callbacks (context: this struct, which must
     * therefore not move while connections use it). */
    sasl_callback_t callbacks[3];
};

enum cairn_router_auth_outcome {
    CAIRN_ROUTER_AUTH_CONTINUE = 0, /* send "+ " challenge, read a line */
    CAIRN_ROUTER_AUTH_SUCCESS,      /* "OK Success (no protection)" */
    CAIRN_ROUTER_AUTH_FAILED,       /* "NO <message>" */
    CAIRN_ROUTER_AUTH_CANCELLED,    /* "BAD Client canceled authentication" */
};

/* One connection's authentication state. */
struct cairn_router_auth_session {
    const struct cairn_router_auth_channel *channel; /* borrowed */
    sasl_conn_t *conn;
    char local[64], remote[64]; /* "a.b.c.d;port" for libsasl2 */
    char mechanism[64];         /* of the exchange in progress or done */
    char login[CAIRN_ROUTER_USERID_MAX];
    bool authenticated;
};

/* libsasl2 is process-global: reference-counted init and teardown. */
int cairn_router_auth_global_init(void);
void cairn_router_auth_global_done(void);

/*
 * Fills channel from settings: copies the credentials and computes the
 * advertised list (the configured mechanisms libsasl2 can serve, or a
 * default of SCRAM-SHA-* and PLAIN). CAIRN_ECONFIG with a reason in error
 * when no credential source is set or no mechanism is usable.
 */
int cairn_router_auth_channel_init(
    struct cairn_router_auth_channel *channel, const char *servername,
    const struct cairn_router_channel_settings *settings, char *error,
    size_t error_size);
void
cairn_router_auth_channel_release(struct cairn_router_auth_channel *channel);

/* local and remote are "ip;port" strings (may be NULL). */
void
cairn_router_auth_session_init(struct cairn_router_auth_session *session,
                               const struct cairn_router_auth_channel *channel,
                               const char *local, const char *remote);
void
cairn_router_auth_session_release(struct cairn_router_auth_session *session);

/*
 * AUTHENTICATE mech [initial]: initial is the base64 initial response,
 * "=" for an empty one, or NULL when absent. On CONTINUE, challenge holds
 * the base64 text to send after "+ "; on FAILED, *message the NO text
 * (static). Returns 0 or CAIRN_ENOMEM/ETOOBIG.
 */
int cairn_router_auth_begin(struct cairn_router_auth_session *session,
                            const char *mech, const char *initial,
                            struct cairn_buf *challenge,
                            enum cairn_router_auth_outcome *outcome,
                            const char **message);
/* The client's next line (base64, empty, or "*" to cancel). */
int cairn_router_auth_continue(struct cairn_router_auth_session *session,
                               const char *line, struct cairn_buf *challenge,
                               enum cairn_router_auth_outcome *outcome,
                               const char **message);

/* --- spool.c: message bodies on disk ------------------------------------ */

struct cairn_router_spool;

/* Opens (creating it, mode 0700) the spool directory dir with a budget. */
int cairn_router_spool_new(const char *dir, uint64_t max_bytes,
                           struct cairn_router_spool **spool);
/* Frees the spool; every file must have been released first. */
void cairn_router_spool_free(struct cairn_router_spool *spool);
/* Bytes reserved by bodies that are spooled now. */
uint64_t cairn_router_spool_used(const struct cairn_router_spool *spool);
/*
 * One connection's way into the spool: its bodies go one after the other
 * into a shared file (spool.c). The caller owns *writer; freeing it
 * leaves bodies still held alive until they are released.
 */
struct cairn_router_spool_writer;
int cairn_router_spool_writer_new(struct cairn_router_spool *spool,
                                  struct cairn_router_spool_writer **writer);
void cairn_router_spool_writer_free(struct cairn_router_spool_writer *writer);
/* A dlist file sink writing through writer (ctx is the writer). */
void cairn_router_spool_writer_sink(struct cairn_router_spool_writer *writer,
                                    struct cairn_dlist_file_sink *sink);

/* --- stage.c: bodies waiting for the MAILBOX that names them ---------- */

struct cairn_router_stage;

/* Creates an empty stage; the caller owns *stage. */
int cairn_router_stage_new(struct cairn_router_stage **stage);
/* Frees the stage and every command it keeps (NULL-safe). */
void cairn_router_stage_free(struct cairn_router_stage *stage);
/*
 * Keeps an APPLY MESSAGE command: takes ownership of what *cmd holds (its
 * tree and spooled bodies) and zeroes *cmd; *added is its body count.
 */
int cairn_router_stage_add(struct cairn_router_stage *stage,
                           struct cairn_csync_command *cmd, size_t *added);
/*
 * The staged bodies the RECORD list of mailbox (an APPLY MAILBOX tree)
 * names, each once, as a new "MESSAGE" list whose FILE nodes borrow the
 * stage's spooled files (valid until they are released). *message is NULL
 * when none is staged; otherwise the caller owns it. *count: its bodies.
 */
int cairn_router_stage_collect(struct cairn_router_stage *stage,
                               const struct cairn_dlist *mailbox,
                               struct cairn_dlist **message, size_t *count);
/*
 * The MAILBOX the last collect served was answered: when stored, its
 * bodies are delivered, and commands all of whose bodies are go (their
 * spool files with them; requests in flight read through descriptors of
 * their own). When not, the bodies stay for sync_client's retry.
 */
void cairn_router_stage_settle(struct cairn_router_stage *stage, bool stored);
/* Drops every kept command (a new batch, RESTART, the end). */
void cairn_router_stage_clear(struct cairn_router_stage *stage);
/* Bodies kept now. */
size_t cairn_router_stage_body_count(const struct cairn_router_stage *stage);

/* --- listener.c / session.c -------------------------------------------- */

/*
 * One listening channel. Reference-counted: the router holds one reference
 * while the channel is configured, every connection accepted on it one
 * more, so a reload that drops or changes a channel never pulls settings
 * from under a running session.
 */
struct cairn_router_channel {
    struct cairn_router *router;
    int refs;
    char *name;
    char *listen; /* as configured: a reload keeps a listener it still has */
    int listen_fd;
    uint16_t port;
    bool compress;
    uint64_t idle_timeout_ms;
    struct cairn_router_auth_channel auth;
    /* tls.c: NULL when the channel has no tls_cert. */
    struct ssl_ctx_st *tls_context;
    bool require_tls;         /* no login before STARTTLS */
    bool implicit_tls;        /* TLS from the first byte (host:port/tls) */
    char *tls_client_subject; /* CN, or DN with '=' (RFC 2253); or NULL */
};

/* One sync_client connection. */
struct cairn_router_conn {
    struct cairn_router *router;
    struct cairn_router_channel *channel;
    struct cairn_router_conn *prev, *next;
    int fd;
    char peer[64];
    struct cairn_buf input;   /* plain bytes not yet fed to the reader */
    struct cairn_buf wire_in; /* compressed bytes not yet inflated */
    struct cairn_buf reply;   /* the response being built (plain) */
    struct cairn_buf output;  /* wire bytes waiting for the socket */
    struct cairn_csync_reader *reader;
    struct cairn_compress *compress; /* NULL until COMPRESS DEFLATE */
    struct cairn_router_auth_session auth;
    bool in_sasl;        /* the next line answers a SASL challenge */
    uint64_t hold_timer; /* a reply held back (failed login), or 0 */
    struct cairn_router_reply *pending_reply; /* a handler answers later */
    bool closing;                             /* close once output is written */
    bool read_closed;                         /* the peer sent EOF */
    uint64_t last_activity_ms;
    char current_user[CAIRN_ROUTER_USERID_MAX]; /* "" until one is named */
    char command[64]; /* "APPLY MESSAGE": what the next answer counts as */
    struct cairn_router_stage *stage; /* APPLY MESSAGE bodies (stage.c) */
    struct cairn_router_spool_writer *spool_writer; /* NULL: no spool */
    struct ssl_st *tls;      /* NULL until STARTTLS or an implicit accept */
    struct cairn_buf tls_in; /* ciphertext read, on its way into tls */
    bool tls_active;         /* the handshake is done */
    bool tls_client_refused; /* certificate subject not the channel's */
};

struct cairn_router {
    struct cairn_loop *loop;
    struct cairn_router_channel **channels;
    size_t channel_count;
    struct cairn_router_conn *conns;
    size_t conn_count;
    char *servername;
    char *default_domain, *deleted_prefix;
    struct cairn_router_namespace names; /* points at the two above */
    size_t max_connections, max_line, max_output;
    uint64_t failed_login_pause_ms;
    struct cairn_dlist_limits limits;
    cairn_router_event_fn event_fn;
    void *event_arg;
    cairn_router_request_fn request_fn;
    void *request_arg;
    uint64_t sweep_timer;
    bool sasl_initialised;
    struct cairn_router_spool *spool; /* NULL: bodies are skipped */
};

/* Reports an event on conn (may be NULL) if a handler is installed. */
void cairn_router_event(struct cairn_router *router,
                        const struct cairn_router_conn *conn,
                        enum cairn_router_event_level level, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));

/* channel.c */
/* Drops one reference; the last one closes the listener and frees. */
void cairn_router_channel_unref(struct cairn_router_channel *channel);
/* Stops accepting on channel (its connections go on). */
void cairn_router_channel_close_listener(struct cairn_router_channel *channel);

/* listener.c: the accept callback channels register with the loop. */
void cairn_router_accept(struct cairn_loop *loop, int fd, unsigned events,
                         void *arg);
/* Copies the router-wide settings (servername, namespace, limits). */
int cairn_router_copy_settings(struct cairn_router *router,
                               const struct cairn_router_settings *settings);

/* session.c: what the connection layer calls. */
int cairn_router_session_start(struct cairn_router_conn *conn);
/*
 * Feeds conn->input to the command reader and runs complete commands
 * until input is used up, output passes its high-water mark, or the
 * session ends. Returns 0 or an error that closes the connection.
 */
int cairn_router_session_process(struct cairn_router_conn *conn);

/* The connection of a pending reply is closing: forget it (the reply
 * takes over the connection's stage until it is completed). */
void cairn_router_reply_detach(struct cairn_router_reply *reply);

/* listener.c: what the session calls. */
/* Moves conn->reply to the output (compressed and sync-flushed when
 * COMPRESS is on) and starts writing. */
int cairn_router_conn_flush_reply(struct cairn_router_conn *conn);
/*
 * Sends conn->reply only after delay_ms, reading nothing meanwhile, as
 * Cyrus pauses after a failed login (without blocking other connections).
 */
int cairn_router_conn_hold_reply(struct cairn_router_conn *conn,
                                 uint64_t delay_ms);
/* Turns compression on for everything after the reply just flushed. */
int cairn_router_conn_start_compress(struct cairn_router_conn *conn);
/* True when output is past its high-water mark (stop running commands). */
bool cairn_router_conn_output_full(const struct cairn_router_conn *conn);

/* --- tls.c: TLS below the csync stream --------------------------------- */

/*
 * Loads the channel's TLS context from settings (tls_cert, tls_key,
 * tls_client_ca) into channel->tls_context (owned by the channel; none
 * without tls_cert). CAIRN_ECONFIG with error naming the key and the file
 * OpenSSL refused.
 */
int cairn_router_tls_channel_init(
    struct cairn_router_channel *channel,
    const struct cairn_router_channel_settings *settings, char *error,
    size_t error_size);
/* Frees what cairn_router_tls_channel_init made (open SSLs keep theirs). */
void cairn_router_tls_channel_release(struct cairn_router_channel *channel);
/* Gives conn its own SSL (server side, memory BIOs); freed by tls_free. */
int cairn_router_tls_start(struct cairn_router_conn *conn);
void cairn_router_tls_free(struct cairn_router_conn *conn);
/* Hands ciphertext read from the socket to conn's SSL (copied). */
int cairn_router_tls_receive(struct cairn_router_conn *conn, const void *data,
                             size_t len);
/* Ciphertext and decrypted bytes not yet taken out of conn's SSL. */
size_t cairn_router_tls_pending(const struct cairn_router_conn *conn);
/*
 * Runs the handshake on (*handshake_finished: it ended in this call) and
 * decrypts into target until it holds room bytes or SSL needs more
 * input. Handshake records and alerts go to conn->output. A failure is
 * reported as an event and returns CAIRN_EPROTO (close after writing).
 */
int cairn_router_tls_input(struct cairn_router_conn *conn,
                           struct cairn_buf *target, size_t room,
                           bool *handshake_finished);
/*
 * The session ends: queues TLS's close_notify in conn->output, once.
 * CAIRN_ESTATE when there is nothing to send (no TLS, or sent already).
 */
int cairn_router_tls_close_notify(struct cairn_router_conn *conn);
/* Encrypts data into conn->output. */
int cairn_router_tls_output(struct cairn_router_conn *conn, const void *data,
                            size_t len);

/* listener.c: STARTTLS was answered OK: TLS starts with the next byte. */
int cairn_router_conn_start_tls(struct cairn_router_conn *conn);
/* session.c: the handshake is done; send the banner again (or first). */
int cairn_router_session_tls_ready(struct cairn_router_conn *conn);

#endif /* CAIRN_ROUTER_INT_H */
