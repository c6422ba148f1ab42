/*
 * curve.h - CURVE on every ZeroMQ link (library cairn_common): key files,
 * the process's CURVE setup taken from cluster.conf, the options a client
 * or server socket needs, and the ZAP handler that admits known keys with
 * their role.
 *
 * Keys: curve_key_dir/NAME.public and NAME.secret, each one line of Z85
 * text (40 characters). The secret file is created 0600. A missing
 * NAME.public is derived from NAME.secret.
 *
 * Roles: every public key a daemon admits has one role, from [security]
 * writer_keys (the router: APPLY, state requests, body reads), admin_keys
 * (cairnctl: everything) and peer_keys (node to node: transfers and
 * reads; default every node's key). A key in no list is refused by the
 * ZAP handler (ZeroMQ closes the connection; nothing is read from it) and
 * logged once with its fingerprint (the Z85 public key).
 *
 * The setup is process-wide (one per program, set from main() before any
 * socket exists): cairn_curve_setup() loads it; sockets made afterwards
 * by the node client, the node server, the router's control endpoint and
 * cairnctl call cairn_curve_client() / cairn_curve_server() before
 * connect / bind, and do nothing when CURVE is off or not set up.
 * Single-threaded: set up before threads start; read-only after.
 */
#ifndef CAIRN_CURVE_H
#define CAIRN_CURVE_H

#include "common.h"
#include "config.h"
#include "loop.h"

#include <stdbool.h>
#include <stddef.h>

#define CAIRN_CURVE_KEY_TEXT 41 /* 40 Z85 characters and a NUL */

enum cairn_curve_role {
    CAIRN_CURVE_ROLE_NONE = 0, /* CURVE off: no roles, everything allowed */
    CAIRN_CURVE_ROLE_WRITER,
    CAIRN_CURVE_ROLE_ADMIN,
    CAIRN_CURVE_ROLE_PEER,
    CAIRN_CURVE_ROLE_UNKNOWN, /* CURVE on and no role: refuse everything */
};

/* "writer", "admin", "peer", "none", "unknown". Static. */
const char *cairn_curve_role_name(enum cairn_curve_role role);

/*
 * Makes a new keypair NAME in dir (created 0700 if missing): NAME.secret
 * (0600) and NAME.public. CAIRN_EEXIST when NAME.secret exists (never
 * overwritten); CAIRN_EINVAL for a bad name. public_key (may be NULL)
 * gets the Z85 public key.
 */
int cairn_curve_key_create(const char *dir, const char *name,
                           char public_key[CAIRN_CURVE_KEY_TEXT], char *error,
                           size_t error_size);
/*
 * Reads NAME's public key (and, when secret_key is not NULL, its secret
 * key) from dir. CAIRN_ENOENT with the reason when a file is missing.
 */
int cairn_curve_key_load(const char *dir, const char *name,
                         char public_key[CAIRN_CURVE_KEY_TEXT],
                         char secret_key[CAIRN_CURVE_KEY_TEXT], char *error,
                         size_t error_size);

/*
 * Sets up this process from config: self_key names this program's key
 * (its secret is loaded), every key the config names is loaded with its
 * role, and the public keys of the endpoints this program may connect to
 * (every node's endpoint, the router's control). With create_missing, a
 * key that has neither file yet is made first (a local cluster's first
 * start). With [security] curve = no, CURVE is off and nothing is read.
 * Returns 0, or a code with the reason (file, key) in error.
 */
int cairn_curve_setup(const struct cairn_config *config, const char *self_key,
                      bool create_missing, char *error, size_t error_size);
/*
 * Marks the setup as failed for reason (copied): every later
 * cairn_curve_client() fails with it instead of connecting in plain text
 * to a CURVE server (cairnctl, whose file commands need no keys).
 */
void cairn_curve_fail(const char *reason);
/* Turns CURVE off again and forgets the keys (tests). */
void cairn_curve_reset(void);
/* Whether CURVE is on in this process. */
bool cairn_curve_enabled(void);
/* The Z85 public key of this process, or NULL when CURVE is off. */
const char *cairn_curve_self_public(void);
/*
 * Overrides the public key expected at endpoint (copied), e.g. a node
 * run on another endpoint (-e) than its section's; also tests.
 */
int cairn_curve_add_server(const char *endpoint, const char *public_key);

/*
 * Client socket options before zmq_connect(socket, endpoint): this
 * process's keypair and the server's public key. CAIRN_ENOENT (with
 * error) when CURVE is on and endpoint's key is unknown. 0 when off.
 */
int cairn_curve_client(void *socket, const char *endpoint, char *error,
                       size_t error_size);
/* Server socket options before zmq_bind (CURVE server, ZAP domain). */
int cairn_curve_server(void *socket);

/*
 * The role of the peer that sent msg (a received frame; its "User-Id"
 * property, set by the ZAP handler). CAIRN_CURVE_ROLE_NONE when CURVE is
 * off.
 */
enum cairn_curve_role cairn_curve_msg_role(void *msg);

/* What the ZAP handler refused: level is a cairn_log_level. */
typedef void (*cairn_curve_event_fn)(void *arg, enum cairn_log_level level,
                                     const char *message);
/* Where refusals are reported (the program logs them). Process-wide. */
void cairn_curve_set_event_handler(cairn_curve_event_fn fn, void *arg);

struct cairn_zap;
/*
 * Starts the ZAP handler of zmq_context (borrowed; one handler per
 * context, before any CURVE server socket of it binds) on loop
 * (borrowed). Does nothing (*zap = NULL) when CURVE is off. The caller
 * owns *zap: cairn_zap_free() (NULL-safe) before the context ends.
 */
int cairn_zap_new(struct cairn_loop *loop, void *zmq_context,
                  struct cairn_zap **zap);
/*
 * Reports handshake failures (a peer without CURVE or a key) on socket,
 * a bound CURVE server socket of the same context, once per endpoint
 * and then every 1000th.
 */
int cairn_zap_watch(struct cairn_zap *zap, void *socket, const char *name);
void cairn_zap_free(struct cairn_zap *zap);

#endif /* CAIRN_CURVE_H */
