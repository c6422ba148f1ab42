/*
 * tls.c - TLS on the router's csync connections (OpenSSL 3): a channel's
 * server context (certificate, key, optional client-certificate CA), and
 * per connection one SSL object between two memory BIOs. Ciphertext read
 * from the socket is written into the read BIO, what SSL writes comes out
 * of the write BIO into the connection's output buffer, so the handshake
 * and every record move with the event loop like any other bytes: SSL
 * never touches the socket and never blocks (its WANT_READ means "wait
 * for the socket to be readable again"; a memory BIO never wants to
 * write). TLS sits below COMPRESS: plain -> deflate -> TLS -> socket.
 */
#include "router_int.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The newest OpenSSL error as text (the queue is emptied). */
static void
openssl_reason(char *text, size_t size)
{
    unsigned long code = ERR_get_error();
    unsigned long next;

    /* The first error is the cause; later ones repeat it from above. */
    while ((next = ERR_get_error()) != 0)
        ;
    if (code == 0)
        snprintf(text, size, "unknown OpenSSL error");
    else
        ERR_error_string_n(code, text, size);
}

static int
context_fail(SSL_CTX *context, const char *channel, const char *key,
             const char *path, char *error, size_t error_size)
{
    char reason[256];

    openssl_reason(reason, sizeof(reason));
    snprintf(error, error_size, "channel %s: %s %s: cannot load: %s", channel,
             key, path, reason);
    SSL_CTX_free(context);
    return CAIRN_ECONFIG;
}

int
cairn_router_tls_channel_init(
    struct cairn_router_channel *channel,
    const struct cairn_router_channel_settings *settings, char *error,
    size_t error_size)
{
    SSL_CTX *context;
    STACK_OF(X509_NAME) * names;

    channel->require_tls = settings->require_tls;
    channel->implicit_tls = settings->implicit_tls;
    /* Without a certificate these would lock every client out. */
    if (settings->tls_cert == NULL &&
        (settings->require_tls || settings->implicit_tls ||
         settings->tls_client_ca != NULL)) {
        snprintf(error, error_size,
                 "channel %s: require_tls, implicit TLS and tls_client_ca "
                 "need tls_cert and tls_key",
                 channel->name);
        return CAIRN_ECONFIG;
    }
    if (settings->tls_cert == NULL)
        return CAIRN_OK;
    if (settings->tls_key == NULL) {
        snprintf(error, error_size, "channel %s: tls_cert %s needs tls_key",
                 channel->name, settings->tls_cert);
        return CAIRN_ECONFIG;
    }
    if ((context = SSL_CTX_new(TLS_server_method())) == NULL)
        return context_fail(NULL, channel->name, "tls_cert", settings->tls_cert,
                            error, error_size);
    SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION);
    /* TLS compression would sit under our own COMPRESS: never. */
    SSL_CTX_set_options(context,
                        SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(context, SSL_MODE_ENABLE_PARTIAL_WRITE);
    if (SSL_CTX_use_certificate_chain_file(context, settings->tls_cert) != 1)
        return context_fail(context, channel->name, "tls_cert",
                            settings->tls_cert, error, error_size);
    if (SSL_CTX_use_PrivateKey_file(context, settings->tls_key,
                                    SSL_FILETYPE_PEM) != 1)
        return context_fail(context, channel->name, "tls_key",
                            settings->tls_key, error, error_size);
    if (SSL_CTX_check_private_key(context) != 1)
        return context_fail(context, channel->name, "tls_key",
                            settings->tls_key, error, error_size);
    if (settings->tls_client_ca != NULL) {
        if (SSL_CTX_load_verify_locations(context, settings->tls_client_ca,
                                          NULL) != 1 ||
            (names = SSL_load_client_CA_file(settings->tls_client_ca)) == NULL)
            return context_fail(context, channel->name, "tls_client_ca",
                                settings->tls_client_ca, error, error_size);
        SSL_CTX_set_client_CA_list(context, names);
        SSL_CTX_set_verify(
            context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        SSL_CTX_set_verify_depth(context, 5);
    }
    if (settings->tls_client_subject != NULL &&
        (channel->tls_client_subject = strdup(settings->tls_client_subject)) ==
            NULL) {
        SSL_CTX_free(context);
        return CAIRN_ENOMEM;
    }
    channel->tls_context = context;
    return CAIRN_OK;
}

void
cairn_router_tls_channel_release(struct cairn_router_channel *channel)
{
    SSL_CTX_free(channel->tls_context); /* connections hold their own ref */
    channel->tls_context = NULL;
    free(channel->tls_client_subject);
    channel->tls_client_subject = NULL;
}

int
cairn_router_tls_start(struct cairn_router_conn *conn)
{
    BIO *in = NULL, *out = NULL;

    if (conn->channel->tls_context == NULL)
        return CAIRN_ESTATE;
    if ((conn->tls = SSL_new(conn->channel->tls_context)) == NULL)
        return CAIRN_ENOMEM;
    in = BIO_new(BIO_s_mem());
    out = BIO_new(BIO_s_mem());
    if (in == NULL || out == NULL) {
        BIO_free(in);
        BIO_free(out);
        return CAIRN_ENOMEM;
    }
    /* An empty read BIO says "retry", not end of file. */
    BIO_set_mem_eof_return(in, -1);
    SSL_set_bio(conn->tls, in, out); /* the SSL owns both now */
    SSL_set_accept_state(conn->tls);
    return CAIRN_OK;
}

void
cairn_router_tls_free(struct cairn_router_conn *conn)
{
    SSL_free(conn->tls);
    conn->tls = NULL;
}

int
cairn_router_tls_receive(struct cairn_router_conn *conn, const void *data,
                         size_t len)
{
    if (len == 0)
        return CAIRN_OK;
    if (BIO_write(SSL_get_rbio(conn->tls), data, (int)len) != (int)len)
        return CAIRN_ENOMEM;
    return CAIRN_OK;
}

size_t
cairn_router_tls_pending(const struct cairn_router_conn *conn)
{
    if (conn->tls == NULL)
        return 0;
    return BIO_ctrl_pending(SSL_get_rbio(conn->tls)) +
           (size_t)SSL_pending(conn->tls);
}

/* Moves what SSL wrote (records, alerts, handshake) to the output. */
static int
drain_records(struct cairn_router_conn *conn)
{
    BIO *out = SSL_get_wbio(conn->tls);
    size_t waiting;
    int rc, got;

    while ((waiting = BIO_ctrl_pending(out)) > 0) {
        if ((rc = cairn_buf_reserve(&conn->output, waiting)) < 0)
            return rc;
        got = BIO_read(out, conn->output.data + conn->output.len, (int)waiting);
        if (got <= 0)
            return CAIRN_EIO;
        conn->output.len += (size_t)got;
    }
    return CAIRN_OK;
}

/* Subject of the peer's certificate: CN and the RFC 2253 DN. */
static void
peer_subject(X509 *peer, char *cn, size_t cn_size, char *dn, size_t dn_size)
{
    X509_NAME *name = X509_get_subject_name(peer);
    BIO *text = BIO_new(BIO_s_mem());
    int len;

    cn[0] = dn[0] = '\0';
    if (X509_NAME_get_text_by_NID(name, NID_commonName, cn, (int)cn_size) < 0)
        cn[0] = '\0';
    if (text == NULL)
        return;
    if (X509_NAME_print_ex(text, name, 0, XN_FLAG_RFC2253) >= 0 &&
        (len = BIO_read(text, dn, (int)dn_size - 1)) > 0)
        dn[len] = '\0';
    BIO_free(text);
}

/*
 * The handshake is done: note the protocol and the client certificate,
 * and whether its subject is the one the channel allows.
 */
static void
handshake_done(struct cairn_router_conn *conn)
{
    const char *wanted = conn->channel->tls_client_subject;
    X509 *peer = SSL_get1_peer_certificate(conn->tls);
    char cn[256] = "", dn[512] = "";

    conn->tls_active = true;
    if (peer != NULL)
        peer_subject(peer, cn, sizeof(cn), dn, sizeof(dn));
    X509_free(peer);
    if (wanted != NULL)
        conn->tls_client_refused =
            strcmp(wanted, strchr(wanted, '=') != NULL ? dn : cn) != 0;
    cairn_router_event(conn->router, conn, CAIRN_ROUTER_EVENT_INFO,
                       "TLS established: %s %s%s%s", SSL_get_version(conn->tls),
                       SSL_get_cipher_name(conn->tls),
                       dn[0] ? ", client certificate " : "", dn);
    if (conn->tls_client_refused)
        cairn_router_event(conn->router, conn, CAIRN_ROUTER_EVENT_WARN,
                           "client certificate '%s' is not the channel's "
                           "tls_client_subject '%s': login refused",
                           dn[0] ? dn : "(none)", wanted);
}

/* SSL's verdict on a call that returned ret: 0 to wait, or an error. */
static int
ssl_outcome(struct cairn_router_conn *conn, int ret, const char *stage)
{
    int error = SSL_get_error(conn->tls, ret);
    char reason[256];
    long verify;

    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE)
        return CAIRN_OK;
    if (error == SSL_ERROR_ZERO_RETURN) {
        conn->read_closed = true; /* close_notify */
        return CAIRN_OK;
    }
    openssl_reason(reason, sizeof(reason));
    verify = SSL_get_verify_result(conn->tls);
    cairn_router_event(
        conn->router, conn, CAIRN_ROUTER_EVENT_WARN, "TLS %s failed: %s%s%s",
        stage, reason, verify != X509_V_OK ? "; client certificate: " : "",
        verify != X509_V_OK ? X509_verify_cert_error_string(verify) : "");
    /* Send the alert SSL may have written, then close. */
    drain_records(conn);
    return CAIRN_EPROTO;
}

int
cairn_router_tls_input(struct cairn_router_conn *conn, struct cairn_buf *target,
                       size_t room, bool *handshake_finished)
{
    int ret, rc;

    *handshake_finished = false;
    if (!conn->tls_active) {
        ret = SSL_do_handshake(conn->tls);
        if (ret != 1) {
            rc = ssl_outcome(conn, ret, "handshake");
            if (rc == 0)
                rc = drain_records(conn);
            return rc;
        }
        if ((rc = drain_records(conn)) < 0)
            return rc;
        handshake_done(conn);
        *handshake_finished = true;
    }
    while (target->len < room && !conn->read_closed) {
        size_t want = room - target->len, got = 0;

        if ((rc = cairn_buf_reserve(target, want)) < 0)
            return rc;
        ret = SSL_read_ex(conn->tls, target->data + target->len, want, &got);
        if (ret != 1) {
            rc = ssl_outcome(conn, ret, "read");
            if (rc == 0)
                rc = drain_records(conn); /* e.g. a TLS 1.3 key update */
            return rc;
        }
        target->len += got;
        target->data[target->len] = '\0';
    }
    return CAIRN_OK;
}

int
cairn_router_tls_close_notify(struct cairn_router_conn *conn)
{
    if (conn->tls == NULL || !conn->tls_active ||
        (SSL_get_shutdown(conn->tls) & SSL_SENT_SHUTDOWN))
        return CAIRN_ESTATE;
    SSL_shutdown(conn->tls); /* queues the alert; we do not wait for theirs */
    return drain_records(conn);
}

int
cairn_router_tls_output(struct cairn_router_conn *conn, const void *data,
                        size_t len)
{
    size_t written = 0;

    while (len > 0) {
        /* A memory BIO takes everything: no WANT_WRITE can come. */
        if (SSL_write_ex(conn->tls, data, len, &written) != 1)
            return ssl_outcome(conn, 0, "write") < 0 ? CAIRN_EPROTO : CAIRN_EIO;
        data = (const char *)data + written;
        len -= written;
    }
    return drain_records(conn);
}
