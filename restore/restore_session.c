/*
 * restore_session.c - the client end of a csync connection to a Cyrus
 * sync_server, as sync_client opens it (sync-protocol.md §1): TCP, the
 * banner up to its "* OK" line, SASL with libsasl2's client side (no
 * security layer: cairn does not wrap the stream), COMPRESS DEFLATE when
 * offered, then commands and their responses. STARTTLS (OpenSSL) when the
 * banner offers it, the banner read again over TLS, as sync_client does
 * (backend.c's backend_starttls()). Non-blocking socket with a timeout on
 * every wait; every input buffer has a maximum.
 */
#include "restore.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sasl/sasl.h>
#include <sasl/saslutil.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define LINE_MAX_BYTES 65536             /* banner and SASL lines */
#define INPUT_MAX (8u * 1024 * 1024)     /* undelivered response bytes */
#define COMMAND_MAX (512u * 1024 * 1024) /* one command without bodies */
#define RESPONSE_ITEMS_MAX 100000
#define IO_SIZE (64 * 1024)
/* libsasl2's callback slot is int (*)(void); the double cast says so. */
#define RESTORE_SASL_CALLBACK(fn) ((int (*)(void))(void (*)(void))(fn))

struct cairn_restore_session {
    int fd;
    int timeout_ms;
    struct cairn_buf wire;  /* received, not yet inflated */
    struct cairn_buf plain; /* received (inflated), not yet parsed */
    struct cairn_buf deflated;
    struct cairn_compress *compress; /* non-NULL once COMPRESS is on */
    struct cairn_csync_response_reader *reader;
    sasl_conn_t *sasl;
    sasl_secret_t *secret;
    sasl_callback_t callbacks[5];
    const struct cairn_restore_session_options *options; /* open() only */
    char mechs[1024];   /* from "* SASL" lines */
    char caps[256];     /* " COMPRESS SIEVE-MAILBOX STARTTLS " seen */
    char mechanism[64]; /* chosen by libsasl2 */
    bool broken;        /* a write or read failed: no EXIT */
    SSL_CTX *tls_context;
    SSL *tls;          /* non-NULL once STARTTLS succeeded */
    bool tls_verified; /* the certificate passed the ca_file check */
};

static void set_error(char *error, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_error(char *error, size_t size, const char *fmt, ...)
{
    va_list ap;

    if (error == NULL || size == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(error, size, fmt, ap);
    va_end(ap);
}

/* --- socket I/O ------------------------------------------------------------
 */

static int
wait_for(struct cairn_restore_session *s, short events)
{
    struct pollfd pfd = {s->fd, events, 0};
    int n;

    do {
        n = poll(&pfd, 1, s->timeout_ms);
    } while (n < 0 && errno == EINTR);
    if (n == 0)
        return CAIRN_ETIMEOUT;
    return n < 0 ? CAIRN_EIO : 0;
}

/*
 * After an SSL call that did not complete: waits for what SSL wants
 * (0), or CAIRN_EIO / CAIRN_EPROTO (the server closed).
 */
static int
tls_wait(struct cairn_restore_session *s, int ret)
{
    switch (SSL_get_error(s->tls, ret)) {
    case SSL_ERROR_WANT_READ:
        return wait_for(s, POLLIN);
    case SSL_ERROR_WANT_WRITE:
        return wait_for(s, POLLOUT);
    case SSL_ERROR_ZERO_RETURN:
        return CAIRN_EPROTO;
    default:
        ERR_clear_error();
        return CAIRN_EIO;
    }
}

static int
tls_send_all(struct cairn_restore_session *s, const char *at, size_t len)
{
    size_t sent = 0;
    int rc, ret;

    while (len > 0) {
        if ((ret = SSL_write_ex(s->tls, at, len, &sent)) != 1) {
            if ((rc = tls_wait(s, ret)) < 0)
                return rc;
            continue;
        }
        at += sent;
        len -= sent;
    }
    return 0;
}

static int
send_all(struct cairn_restore_session *s, const void *data, size_t len)
{
    const char *at = data;
    int rc;

    if (s->tls != NULL)
        return tls_send_all(s, data, len);
    while (len > 0) {
        ssize_t sent = send(s->fd, at, len, MSG_NOSIGNAL);

        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if ((rc = wait_for(s, POLLOUT)) < 0)
                return rc;
            continue;
        }
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent < 0)
            return CAIRN_EIO;
        at += sent;
        len -= (size_t)sent;
    }
    return 0;
}

/* Sends through compression when on; flush ends a command. */
static int
send_bytes(struct cairn_restore_session *s, const void *data, size_t len,
           bool flush)
{
    const char *at = data;
    int rc = 0;

    if (s->compress == NULL)
        return len > 0 ? send_all(s, data, len) : 0;
    do {
        size_t piece = len < IO_SIZE ? len : IO_SIZE;

        cairn_buf_reset(&s->deflated);
        if ((rc = cairn_compress_deflate(s->compress, at, piece,
                                         flush && piece == len, &s->deflated)) <
                0 ||
            (rc = send_all(s, s->deflated.data, s->deflated.len)) < 0)
            return rc;
        at += piece;
        len -= piece;
    } while (len > 0);
    return 0;
}

int
cairn_restore_session_write(struct cairn_restore_session *session,
                            const void *data, size_t len)
{
    int rc = send_bytes(session, data, len, false);

    if (rc < 0)
        session->broken = true;
    return rc;
}

/* Moves more received bytes into plain (reading the socket if needed). */
static int
receive_more(struct cairn_restore_session *s)
{
    char chunk[IO_SIZE];
    ssize_t got;
    int rc;

    if (s->compress != NULL && s->wire.len > 0) {
        size_t consumed = 0, before = s->plain.len;

        if ((rc = cairn_compress_inflate(s->compress, s->wire.data, s->wire.len,
                                         &consumed, s->plain.max - s->plain.len,
                                         &s->plain)) < 0)
            return rc;
        cairn_buf_consume(&s->wire, consumed);
        if (s->plain.len > before)
            return 0;
        if (consumed == 0 && s->plain.len == s->plain.max)
            return CAIRN_ETOOBIG;
    }
    if (s->tls != NULL) {
        size_t read_bytes = 0;
        int ret;

        while ((ret = SSL_read_ex(s->tls, chunk, sizeof(chunk), &read_bytes)) !=
               1)
            if ((rc = tls_wait(s, ret)) < 0)
                return rc;
        return cairn_buf_append(s->compress ? &s->wire : &s->plain, chunk,
                                read_bytes);
    }
    for (;;) {
        got = recv(s->fd, chunk, sizeof(chunk), 0);
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if ((rc = wait_for(s, POLLIN)) < 0)
                return rc;
            continue;
        }
        if (got < 0 && errno == EINTR)
            continue;
        break;
    }
    if (got < 0)
        return CAIRN_EIO;
    if (got == 0)
        return CAIRN_EPROTO; /* the server closed the connection */
    return cairn_buf_append(s->compress ? &s->wire : &s->plain, chunk,
                            (size_t)got);
}

/* One line (banner, SASL); owned by the caller (free()). */
static int
read_line(struct cairn_restore_session *s, char **line)
{
    size_t len;
    int rc;

    while ((rc = cairn_csync_take_line(&s->plain, LINE_MAX_BYTES, line,
                                       &len)) == CAIRN_EAGAIN) {
        if ((rc = receive_more(s)) < 0)
            return rc;
    }
    return rc;
}

static int
read_response(struct cairn_restore_session *s,
              struct cairn_csync_response *response)
{
    size_t consumed;
    int rc;

    for (;;) {
        consumed = 0;
        rc = cairn_csync_response_reader_feed(
            s->reader, s->plain.data, s->plain.len, &consumed, response);
        if (rc == 0) {
            cairn_buf_consume(&s->plain, consumed);
            return 0;
        }
        if (rc != CAIRN_EAGAIN)
            return CAIRN_EPROTO;
        cairn_buf_reset(&s->plain);
        if ((rc = receive_more(s)) < 0)
            return rc;
    }
}

int
cairn_restore_session_command(struct cairn_restore_session *session,
                              const char *verb, const struct cairn_dlist *value,
                              const struct cairn_dlist_body_writer *body,
                              struct cairn_csync_response *response)
{
    struct cairn_buf command;
    int rc;

    memset(response, 0, sizeof(*response));
    if (session->broken)
        return CAIRN_ESTATE;
    cairn_buf_init(&command, COMMAND_MAX);
    if ((rc = cairn_csync_write_command(&command, verb, value, body)) < 0 ||
        (rc = send_bytes(session, command.data, command.len, true)) < 0 ||
        (rc = read_response(session, response)) < 0)
        session->broken = true; /* a command may be half sent */
    cairn_buf_release(&command);
    return rc;
}

/* --- banner and SASL -------------------------------------------------------
 */

/* "* SASL a b", "* COMPRESS DEFLATE", ... until "* OK". */
static int
read_banner(struct cairn_restore_session *s, char *error, size_t error_size)
{
    char *line = NULL;
    int rc;

    for (;;) {
        if ((rc = read_line(s, &line)) < 0) {
            set_error(error, error_size, "reading the banner: %s",
                      cairn_strerror(rc));
            return rc;
        }
        if (strncasecmp(line, "* OK", 4) == 0)
            break;
        if (strncasecmp(line, "* SASL ", 7) == 0) {
            size_t used = strlen(s->mechs);

            snprintf(s->mechs + used, sizeof(s->mechs) - used, "%s%s",
                     used ? " " : "", line + 7);
        } else if (strncasecmp(line, "* ", 2) == 0) {
            size_t used = strlen(s->caps);

            /* "COMPRESS DEFLATE" is kept as "COMPRESS=DEFLATE" */
            for (char *at = line + 2; *at; at++)
                if (*at == ' ')
                    *at = '=';
            snprintf(s->caps + used, sizeof(s->caps) - used, " %s ", line + 2);
        } else {
            set_error(error, error_size, "not a csync banner: %.80s", line);
            free(line);
            return CAIRN_EPROTO;
        }
        free(line);
    }
    free(line);
    return 0;
}

static int
sasl_simple(void *context, int id, const char **result, unsigned *len)
{
    const struct cairn_restore_session *s = context;

    switch (id) {
    case SASL_CB_AUTHNAME:
        *result = s->options->authname;
        break;
    case SASL_CB_USER:
        *result = ""; /* no proxy authorisation, as sync_client */
        break;
    default:
        return SASL_BADPARAM;
    }
    if (len != NULL)
        *len = (unsigned)strlen(*result);
    return SASL_OK;
}

static int
sasl_password(sasl_conn_t *conn, void *context, int id, sasl_secret_t **secret)
{
    const struct cairn_restore_session *s = context;

    (void)conn;
    if (id != SASL_CB_PASS || s->secret == NULL)
        return SASL_BADPARAM;
    *secret = s->secret;
    return SASL_OK;
}

static int
sasl_realm(void *context, int id, const char **available, const char **result)
{
    const struct cairn_restore_session *s = context;

    (void)available;
    if (id != SASL_CB_GETREALM)
        return SASL_BADPARAM;
    *result = s->options->realm;
    return SASL_OK;
}

static int
send_base64(struct cairn_restore_session *s, const char *prefix,
            const char *data, unsigned len)
{
    struct cairn_buf line;
    unsigned encoded_len = 0;
    size_t room = 4 * ((size_t)len / 3 + 1) + 1;
    int rc;

    cairn_buf_init(&line, LINE_MAX_BYTES);
    if ((rc = cairn_buf_append_str(&line, prefix)) < 0 ||
        (rc = cairn_buf_reserve(&line, room + 2)) < 0)
        goto out;
    if (data != NULL && len > 0) {
        if (sasl_encode64(data, len, line.data + line.len, (unsigned)room,
                          &encoded_len) != SASL_OK) {
            rc = CAIRN_EAUTH;
            goto out;
        }
        line.len += encoded_len;
    } else if (data != NULL && prefix[0] != '\0') {
        rc = cairn_buf_append_str(&line, " ="); /* empty initial response */
        if (rc < 0)
            goto out;
    }
    if ((rc = cairn_buf_append(&line, "\r\n", 2)) == 0)
        rc = send_bytes(s, line.data, line.len, true);
out:
    cairn_buf_release(&line);
    return rc;
}

/* Rounds of "+ challenge" / response until OK or NO. */
static int
sasl_exchange(struct cairn_restore_session *s, char *error, size_t error_size)
{
    char *line = NULL, *decoded = NULL;
    const char *out = NULL;
    unsigned out_len = 0, decoded_len = 0;
    int rc;

    for (;;) {
        free(line);
        line = NULL;
        if ((rc = read_line(s, &line)) < 0) {
            set_error(error, error_size, "during SASL: %s", cairn_strerror(rc));
            goto out;
        }
        if (strncmp(line, "OK", 2) == 0) {
            rc = 0;
            goto out;
        }
        if (strncmp(line, "+ ", 2) != 0 && strcmp(line, "+") != 0) {
            set_error(error, error_size, "authentication refused: %.200s",
                      line);
            rc = CAIRN_EAUTH;
            goto out;
        }
        const char *challenge = line[1] != '\0' ? line + 2 : "";

        free(decoded);
        decoded = malloc(strlen(line) + 1);
        rc = CAIRN_EAUTH;
        if (decoded == NULL ||
            sasl_decode64(challenge, (unsigned)strlen(challenge), decoded,
                          (unsigned)strlen(line) + 1,
                          &decoded_len) != SASL_OK) {
            set_error(error, error_size, "bad SASL challenge");
            goto out;
        }
        rc = sasl_client_step(s->sasl, decoded, decoded_len, NULL, &out,
                              &out_len);
        if (rc != SASL_OK && rc != SASL_CONTINUE) {
            set_error(error, error_size, "SASL: %s", sasl_errdetail(s->sasl));
            (void)send_bytes(s, "*\r\n", 3, true);
            rc = CAIRN_EAUTH;
            goto out;
        }
        if ((rc = send_base64(s, "", out, out_len)) < 0)
            goto out;
    }
out:
    free(line);
    free(decoded);
    return rc;
}

/* libsasl2 would log to syslog by default; a library must not log. */
static int
drop_log(void *context, int level, const char *message)
{
    (void)context;
    (void)level;
    (void)message;
    return SASL_OK;
}

static int
authenticate(struct cairn_restore_session *s, char *error, size_t error_size)
{
    static bool sasl_ready;
    const sasl_callback_t callbacks[] = {
        {SASL_CB_AUTHNAME, RESTORE_SASL_CALLBACK(sasl_simple), s},
        {SASL_CB_USER, RESTORE_SASL_CALLBACK(sasl_simple), s},
        {SASL_CB_PASS, RESTORE_SASL_CALLBACK(sasl_password), s},
        /* without a realm libsasl2 uses the server's */
        {s->options->realm ? SASL_CB_GETREALM : SASL_CB_LIST_END,
         RESTORE_SASL_CALLBACK(sasl_realm), s},
        {SASL_CB_LIST_END, NULL, NULL},
    };
    sasl_security_properties_t props = {0, 0, 65536, 0, NULL, NULL};
    const char *out = NULL, *mech = NULL;
    const char *mechs = s->options->mechs ? s->options->mechs : s->mechs;
    unsigned out_len = 0;
    char prefix[96];
    size_t password_len = strlen(s->options->password);
    int rc;

    static const sasl_callback_t global_callbacks[] = {
        {SASL_CB_LOG, RESTORE_SASL_CALLBACK(drop_log), NULL},
        {SASL_CB_LIST_END, NULL, NULL},
    };

    if (!sasl_ready && sasl_client_init(global_callbacks) != SASL_OK) {
        set_error(error, error_size, "libsasl2 client failed to start");
        return CAIRN_EAUTH;
    }
    sasl_ready = true;
    if ((s->secret = calloc(1, sizeof(*s->secret) + password_len)) == NULL)
        return CAIRN_ENOMEM;
    s->secret->len = password_len;
    memcpy(s->secret->data, s->options->password, password_len);
    /* libsasl2 keeps the callbacks for the connection's lifetime */
    memcpy(s->callbacks, callbacks, sizeof(callbacks));
    /* max_ssf 0: no security layer, the stream is never wrapped. */
    if (sasl_client_new("csync", s->options->host, NULL, NULL, s->callbacks, 0,
                        &s->sasl) != SASL_OK ||
        sasl_setprop(s->sasl, SASL_SEC_PROPS, &props) != SASL_OK) {
        set_error(error, error_size, "libsasl2 client failed to start");
        return CAIRN_EAUTH;
    }
    rc = sasl_client_start(s->sasl, mechs, NULL, &out, &out_len, &mech);
    if (rc != SASL_OK && rc != SASL_CONTINUE) {
        set_error(error, error_size, "no usable SASL mechanism in '%s': %s",
                  mechs, sasl_errdetail(s->sasl));
        return CAIRN_EAUTH;
    }
    snprintf(s->mechanism, sizeof(s->mechanism), "%s", mech);
    snprintf(prefix, sizeof(prefix), "AUTHENTICATE %s%s", mech,
             out != NULL ? " " : "");
    if (out != NULL && out_len == 0)
        prefix[strlen(prefix) - 1] = '\0'; /* send_base64 adds " =" */
    if ((rc = send_base64(s, prefix, out, out_len)) < 0)
        return rc;
    return sasl_exchange(s, error, error_size);
}

/* --- open and close --------------------------------------------------------
 */

static int
connect_to(struct cairn_restore_session *s, const char *host, const char *port,
           char *error, size_t error_size)
{
    struct addrinfo hints = {0}, *addresses = NULL;
    int rc = CAIRN_EUNAVAILABLE, gai;

    hints.ai_socktype = SOCK_STREAM;
    if ((gai = getaddrinfo(host, port, &hints, &addresses)) != 0) {
        set_error(error, error_size, "%s:%s: %s", host, port,
                  gai_strerror(gai));
        return CAIRN_EUNAVAILABLE;
    }
    for (struct addrinfo *a = addresses; a != NULL; a = a->ai_next) {
        int fd =
            socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                   a->ai_protocol);
        int so_error = 0;
        socklen_t so_len = sizeof(so_error);

        if (fd < 0)
            continue;
        s->fd = fd;
        if ((connect(fd, a->ai_addr, a->ai_addrlen) == 0 ||
             (errno == EINPROGRESS && wait_for(s, POLLOUT) == 0 &&
              getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &so_len) == 0 &&
              so_error == 0))) {
            rc = 0;
            break;
        }
        set_error(error, error_size, "%s:%s: %s", host, port,
                  strerror(so_error ? so_error : errno));
        close(fd);
        s->fd = -1;
    }
    freeaddrinfo(addresses);
    return rc;
}

/* The client context: the server is checked only against ca_file. */
static int
tls_context_new(struct cairn_restore_session *s, char *error, size_t error_size)
{
    const char *ca_file = s->options->ca_file;
    char reason[256];

    if ((s->tls_context = SSL_CTX_new(TLS_client_method())) == NULL)
        return CAIRN_ENOMEM;
    SSL_CTX_set_min_proto_version(s->tls_context, TLS1_2_VERSION);
    if (ca_file == NULL)
        return 0;
    if (SSL_CTX_load_verify_locations(s->tls_context, ca_file, NULL) != 1) {
        ERR_error_string_n(ERR_get_error(), reason, sizeof(reason));
        ERR_clear_error();
        set_error(error, error_size, "--ca-file %s: cannot load: %s", ca_file,
                  reason);
        return CAIRN_EINVAL;
    }
    SSL_CTX_set_verify(s->tls_context, SSL_VERIFY_PEER, NULL);
    return 0;
}

/* The name the certificate must carry: an IP address or a DNS name. */
static int
expect_host(struct cairn_restore_session *s)
{
    const char *host = s->options->host;
    unsigned char address[16];

    if (inet_pton(AF_INET, host, address) == 1 ||
        inet_pton(AF_INET6, host, address) == 1)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->tls), host) == 1
                   ? 0
                   : CAIRN_EINVAL;
    if (SSL_set_tlsext_host_name(s->tls, host) != 1 ||
        SSL_set1_host(s->tls, host) != 1)
        return CAIRN_EINVAL;
    return 0;
}

/* Why the handshake failed, with the certificate check's verdict. */
static int
handshake_failed(struct cairn_restore_session *s, int rc, char *error,
                 size_t error_size)
{
    long verify = SSL_get_verify_result(s->tls);
    char reason[256] = "";
    unsigned long code = ERR_peek_last_error();

    if (code != 0)
        ERR_error_string_n(code, reason, sizeof(reason));
    ERR_clear_error();
    if (s->options->ca_file != NULL && verify != X509_V_OK) {
        set_error(error, error_size,
                  "TLS: the server's certificate failed the check against "
                  "--ca-file %s: %s",
                  s->options->ca_file, X509_verify_cert_error_string(verify));
        return CAIRN_EAUTH;
    }
    set_error(error, error_size, "TLS handshake failed: %s",
              reason[0] ? reason : cairn_strerror(rc));
    return rc;
}

/*
 * STARTTLS, the handshake, and the banner again: sync_server sends it
 * over TLS with the mechanisms it allows there.
 */
static int
start_tls(struct cairn_restore_session *s, char *error, size_t error_size)
{
    static const char command[] = "STARTTLS\r\n";
    char *line = NULL;
    int rc, ret;

    if ((rc = tls_context_new(s, error, error_size)) < 0)
        return rc;
    if ((rc = send_all(s, command, sizeof(command) - 1)) < 0 ||
        (rc = read_line(s, &line)) < 0) {
        set_error(error, error_size, "STARTTLS: %s", cairn_strerror(rc));
        return rc;
    }
    if (strncasecmp(line, "OK", 2) != 0) {
        set_error(error, error_size, "STARTTLS refused: %.200s", line);
        free(line);
        return CAIRN_EPROTO;
    }
    free(line);
    /* Nothing may follow the OK in clear: it would pass as protected. */
    if (s->plain.len > 0) {
        set_error(error, error_size, "STARTTLS: plain bytes after the OK");
        return CAIRN_EPROTO;
    }
    if ((s->tls = SSL_new(s->tls_context)) == NULL ||
        SSL_set_fd(s->tls, s->fd) != 1 ||
        (s->options->ca_file != NULL && expect_host(s) < 0))
        return CAIRN_ENOMEM;
    while ((ret = SSL_connect(s->tls)) != 1)
        if ((rc = tls_wait(s, ret)) < 0)
            return handshake_failed(s, rc, error, error_size);
    s->tls_verified = s->options->ca_file != NULL;
    s->mechs[0] = s->caps[0] = '\0';
    return read_banner(s, error, error_size);
}

static int
start_compression(struct cairn_restore_session *s, char *error,
                  size_t error_size)
{
    struct cairn_csync_response response = {0};
    static const char command[] = "COMPRESS DEFLATE\r\n";
    int rc;

    if ((rc = send_bytes(s, command, sizeof(command) - 1, true)) < 0 ||
        (rc = read_response(s, &response)) < 0) {
        set_error(error, error_size, "COMPRESS: %s", cairn_strerror(rc));
        return rc;
    }
    /* A NO leaves the session uncompressed, as sync_client carries on. */
    if (response.status == CAIRN_CSYNC_OK)
        rc = cairn_compress_new(&s->compress);
    cairn_csync_response_release(&response);
    return rc;
}

int
cairn_restore_session_open(const struct cairn_restore_session_options *o,
                           struct cairn_restore_session **session, char *error,
                           size_t error_size)
{
    struct cairn_restore_session *s = NULL;
    int rc = CAIRN_ENOMEM;

    *session = NULL;
    set_error(error, error_size, "%s", "");
    if (o->host == NULL || o->port == NULL || o->authname == NULL ||
        o->password == NULL)
        return CAIRN_EINVAL;
    if ((s = calloc(1, sizeof(*s))) == NULL)
        return CAIRN_ENOMEM;
    s->fd = -1;
    s->options = o;
    s->timeout_ms = (o->timeout_seconds > 0 ? o->timeout_seconds : 30) * 1000;
    cairn_buf_init(&s->wire, INPUT_MAX);
    cairn_buf_init(&s->plain, INPUT_MAX);
    cairn_buf_init(&s->deflated, 4 * IO_SIZE);
    if ((rc = cairn_csync_response_reader_new(
             LINE_MAX_BYTES, RESPONSE_ITEMS_MAX, NULL, NULL, &s->reader)) < 0)
        goto out;
    if ((rc = connect_to(s, o->host, o->port, error, error_size)) < 0 ||
        (rc = read_banner(s, error, error_size)) < 0)
        goto out;
    if (o->starttls && !cairn_restore_session_offers(s, "STARTTLS")) {
        set_error(error, error_size, "the server does not offer STARTTLS");
        rc = CAIRN_ENOTSUP;
        goto out;
    }
    if (cairn_restore_session_offers(s, "STARTTLS") &&
        (rc = start_tls(s, error, error_size)) < 0)
        goto out;
    if ((rc = authenticate(s, error, error_size)) < 0)
        goto out;
    if (o->compress && cairn_restore_session_offers(s, "COMPRESS=DEFLATE") &&
        (rc = start_compression(s, error, error_size)) < 0)
        goto out;
    s->options = NULL; /* borrowed for the opening only */
    *session = s;
    s = NULL;
out:
    if (s != NULL) {
        s->broken = true;
        cairn_restore_session_close(s);
    }
    return rc;
}

void
cairn_restore_session_close(struct cairn_restore_session *session)
{
    char *line = NULL;

    if (session == NULL)
        return;
    if (!session->broken && session->fd >= 0 &&
        send_bytes(session, "EXIT\r\n", 6, true) == 0) {
        /* One reply line, whatever it says, as sync_client reads it. */
        session->timeout_ms = 2000;
        if (read_line(session, &line) == 0)
            free(line);
    }
    if (session->tls != NULL && !session->broken)
        SSL_shutdown(session->tls); /* close_notify, best effort */
    SSL_free(session->tls);
    SSL_CTX_free(session->tls_context);
    if (session->fd >= 0)
        close(session->fd);
    if (session->sasl != NULL)
        sasl_dispose(&session->sasl);
    free(session->secret);
    cairn_compress_free(session->compress);
    cairn_csync_response_reader_free(session->reader);
    cairn_buf_release(&session->wire);
    cairn_buf_release(&session->plain);
    cairn_buf_release(&session->deflated);
    free(session);
}

const char *
cairn_restore_session_mechanism(const struct cairn_restore_session *s)
{
    return s->mechanism;
}

bool
cairn_restore_session_compressed(const struct cairn_restore_session *s)
{
    return s->compress != NULL;
}

const char *
cairn_restore_session_tls(const struct cairn_restore_session *s, bool *verified)
{
    *verified = s->tls_verified;
    return s->tls != NULL ? SSL_get_version(s->tls) : NULL;
}

bool
cairn_restore_session_offers(const struct cairn_restore_session *s,
                             const char *capability)
{
    char word[128];

    snprintf(word, sizeof(word), " %s ", capability);
    return strcasestr(s->caps, word) != NULL;
}
