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

#endif /* CAIRN_ROUTER_INT_H */
