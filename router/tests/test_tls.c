/*
 * test_tls.c - TLS on the router's channels over real loopback TCP, the
 * router and an OpenSSL client driven from the same thread (so every
 * handshake step must come back to the loop: nothing may block it):
 * require_tls's clear banner and refusals, STARTTLS and the fresh banner,
 * login and COMPRESS inside TLS, implicit TLS, a client certificate of
 * the wrong subject, and a certificate file that does not load. The
 * certificate is made here (self-signed, it is also the client CA).
 */
#include "session_util.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>

enum { CHANNEL_STARTTLS, CHANNEL_IMPLICIT, CHANNEL_STRICT, CHANNEL_COUNT };

struct tls_fixture {
    struct fixture base;
    uint16_t ports[CHANNEL_COUNT];
    char dir[64], cert[128], key[128];
    SSL_CTX *client; /* presents the same certificate */
};

/* A self-signed P-256 certificate with CN=test.cairn in dir. */
static int
make_certificate(struct tls_fixture *f)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    X509_NAME *name;
    FILE *out;
    int rc = -1;

    if (key == NULL || cert == NULL)
        goto out;
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               (const unsigned char *)"test.cairn", -1, -1, 0);
    X509_set_issuer_name(cert, name);
    if (X509_sign(cert, key, EVP_sha256()) == 0)
        goto out;
    if ((out = fopen(f->cert, "w")) == NULL)
        goto out;
    PEM_write_X509(out, cert);
    fclose(out);
    if ((out = fopen(f->key, "w")) == NULL)
        goto out;
    PEM_write_PrivateKey(out, key, NULL, NULL, 0, NULL, NULL);
    fclose(out);
    rc = 0;
out:
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
}

static void
tls_fixture_settings(struct tls_fixture *f,
                     struct cairn_router_channel_settings *channels)
{
    static const char *const names[] = {"starttls", "implicit", "strict"};

    for (size_t i = 0; i < CHANNEL_COUNT; i++)
        channels[i] = (struct cairn_router_channel_settings){
            .name = names[i],
            .listen = "127.0.0.1:0",
            .sasl_user = "repluser",
            .sasl_password = "replpass",
            .compress = true,
            .tls_cert = f->cert,
            .tls_key = f->key,
            .require_tls = i != CHANNEL_IMPLICIT,
            .implicit_tls = i == CHANNEL_IMPLICIT,
        };
    channels[CHANNEL_STARTTLS].tls_client_ca = f->cert;
    channels[CHANNEL_STARTTLS].tls_client_subject = "test.cairn";
    channels[CHANNEL_STRICT].tls_client_ca = f->cert;
    channels[CHANNEL_STRICT].tls_client_subject = "CN=cyrus1,O=Example";
}

static int
tls_fixture_open(struct tls_fixture *f)
{
    struct cairn_router_channel_settings channels[CHANNEL_COUNT];
    struct cairn_router_settings settings = {
        .servername = SERVERNAME,
        .channels = channels,
        .channel_count = CHANNEL_COUNT,
        .failed_login_pause_ms = 150,
    };
    char error[256] = "";
    int rc;

    memset(f, 0, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/cairn-test-tls-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return CAIRN_EIO;
    snprintf(f->cert, sizeof(f->cert), "%s/cert.pem", f->dir);
    snprintf(f->key, sizeof(f->key), "%s/key.pem", f->dir);
    if (make_certificate(f) < 0)
        return CAIRN_EIO;
    tls_fixture_settings(f, channels);
    if ((rc = cairn_loop_new(&f->base.loop)) < 0)
        return rc;
    rc = cairn_router_new(f->base.loop, &settings, &f->base.router, error,
                          sizeof(error));
    if (rc < 0) {
        fprintf(stderr, "router: %s\n", error);
        return rc;
    }
    for (size_t i = 0; i < CHANNEL_COUNT; i++)
        f->ports[i] = cairn_router_port(f->base.router, i);
    f->client = SSL_CTX_new(TLS_client_method());
    if (f->client == NULL ||
        SSL_CTX_use_certificate_file(f->client, f->cert, SSL_FILETYPE_PEM) !=
            1 ||
        SSL_CTX_use_PrivateKey_file(f->client, f->key, SSL_FILETYPE_PEM) != 1)
        return CAIRN_EIO;
    return CAIRN_OK;
}

static void
tls_fixture_close(struct tls_fixture *f)
{
    fixture_close(&f->base);
    SSL_CTX_free(f->client);
    unlink(f->cert);
    unlink(f->key);
    rmdir(f->dir);
}

/* The client's handshake, the router's loop running between its steps. */
static SSL *
client_handshake(struct tls_fixture *f, int fd)
{
    uint64_t deadline = cairn_loop_now_ms() + 3000;
    SSL *ssl = SSL_new(f->client);

    SSL_set_fd(ssl, fd);
    while (cairn_loop_now_ms() < deadline) {
        int ret = SSL_connect(ssl), error;

        if (ret == 1)
            return ssl;
        error = SSL_get_error(ssl, ret);
        if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE)
            break;
        cairn_loop_run_once(f->base.loop, 10);
    }
    ERR_clear_error();
    SSL_free(ssl);
    return NULL;
}

/* A whole response over TLS (as receive() does in clear); *closed at
 * the end of the connection or a TLS error. */
static void
tls_receive(struct tls_fixture *f, SSL *ssl, struct cairn_buf *text,
            bool *closed)
{
    uint64_t deadline = cairn_loop_now_ms() + 3000;
    char plain[16384];

    cairn_buf_reset(text);
    *closed = false;
    while (cairn_loop_now_ms() < deadline && !response_complete(text)) {
        size_t got = 0;
        int error;

        cairn_loop_run_once(f->base.loop, 10);
        if (SSL_read_ex(ssl, plain, sizeof(plain), &got) == 1) {
            CHECK_INT(cairn_buf_append(text, plain, got), 0);
            continue;
        }
        error = SSL_get_error(ssl, 0);
        if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
            ERR_clear_error();
            *closed = true;
            return;
        }
    }
}

static void
tls_send(SSL *ssl, const char *text)
{
    size_t written = 0;

    /* A few hundred bytes always fit the socket buffer. */
    CHECK_INT(SSL_write_ex(ssl, text, strlen(text), &written), 1);
    CHECK_INT(written, strlen(text));
}

#define TLS_BANNER                                                             \
    "* SASL SCRAM-SHA-512 SCRAM-SHA-384 SCRAM-SHA-256 SCRAM-SHA-224 "          \
    "SCRAM-SHA-1 PLAIN\r\n"                                                    \
    "* COMPRESS DEFLATE\r\n"                                                   \
    "* OK " SERVERNAME " Cyrus backup server cairn-0.1.0\r\n"
#define CLEAR_BANNER                                                           \
    "* STARTTLS\r\n"                                                           \
    "* OK " SERVERNAME " Cyrus backup server cairn-0.1.0\r\n"
#define REQUIRED "NO TLS required: STARTTLS first (require_tls)\r\n"

static const struct exchange_case before_tls[] = {
    {"AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n", REQUIRED},
    {"COMPRESS DEFLATE\r\n", REQUIRED},
    {"GET USER anne\r\n", "NO Please authenticate first\r\n"},
    {"NOOP\r\n", "OK Noop completed\r\n"},
    {"STARTTLS now\r\n", "BAD Unexpected extra arguments to Starttls\r\n"},
    {"STARTTLS\r\n", "OK Begin TLS negotiation now\r\n"},
};

/* STARTTLS on channel, the handshake; the banner after it in text. */
static SSL *
start_tls(struct tls_fixture *f, size_t channel, int *fd,
          struct cairn_buf *text)
{
    bool closed = false;
    SSL *ssl;

    *fd = client_connect(f->ports[channel]);
    CHECK(*fd >= 0);
    receive(&f->base, *fd, NULL, text, &closed);
    CHECK_STR(text->data, CLEAR_BANNER);
    run_exchanges(&f->base, *fd, NULL, before_tls,
                  sizeof(before_tls) / sizeof(before_tls[0]));
    ssl = client_handshake(f, *fd);
    CHECK(ssl != NULL);
    if (ssl != NULL)
        tls_receive(f, ssl, text, &closed);
    return ssl;
}

static void
test_starttls(struct tls_fixture *f)
{
    struct cairn_buf text;
    bool closed = false;
    int fd = -1;
    SSL *ssl;

    cairn_buf_init(&text, 1 << 16);
    ssl = start_tls(f, CHANNEL_STARTTLS, &fd, &text);
    if (ssl != NULL) {
        CHECK_STR(text.data, TLS_BANNER);
        tls_send(ssl, "STARTTLS\r\n");
        tls_receive(f, ssl, &text, &closed);
        CHECK_STR(text.data,
                  "BAD IMAP_PROTOCOL_ERROR Unrecognized command\r\n");
        tls_send(ssl, "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n");
        tls_receive(f, ssl, &text, &closed);
        CHECK_STR(text.data, "OK Success (no protection)\r\n");
        tls_send(ssl, "COMPRESS DEFLATE\r\n");
        tls_receive(f, ssl, &text, &closed);
        CHECK_STR(text.data, "OK DEFLATE active\r\n");
        SSL_free(ssl);
    }
    close(fd);
    /* The router notices the close; the connection (and its SSL) goes. */
    for (int i = 0; i < 300 && cairn_router_connection_count(f->base.router);
         i++)
        cairn_loop_run_once(f->base.loop, 10);
    CHECK_INT(cairn_router_connection_count(f->base.router), 0);
    cairn_buf_release(&text);
}

static void
test_wrong_subject(struct tls_fixture *f)
{
    struct cairn_buf text;
    bool closed = false;
    int fd = -1;
    SSL *ssl;

    cairn_buf_init(&text, 1 << 16);
    ssl = start_tls(f, CHANNEL_STRICT, &fd, &text);
    if (ssl != NULL) {
        /* No mechanism: a sync_client gives up here. */
        CHECK_STR(text.data,
                  "* COMPRESS DEFLATE\r\n"
                  "* OK " SERVERNAME " Cyrus backup server cairn-0.1.0\r\n");
        tls_send(ssl, "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n");
        tls_receive(f, ssl, &text, &closed);
        CHECK_STR(text.data,
                  "NO Client certificate not allowed on this channel\r\n");
        SSL_free(ssl);
    }
    close(fd);
    cairn_buf_release(&text);
}

static void
test_implicit(struct tls_fixture *f)
{
    struct cairn_buf text;
    bool closed = false;
    int fd = client_connect(f->ports[CHANNEL_IMPLICIT]);
    SSL *ssl;

    CHECK(fd >= 0);
    cairn_buf_init(&text, 1 << 16);
    /* Nothing in clear: the banner waits for the handshake. */
    for (int i = 0; i < 5; i++)
        cairn_loop_run_once(f->base.loop, 10);
    CHECK(recv(fd, (char[1]){0}, 1, MSG_DONTWAIT | MSG_PEEK) < 0);
    ssl = client_handshake(f, fd);
    CHECK(ssl != NULL);
    if (ssl != NULL) {
        tls_receive(f, ssl, &text, &closed);
        CHECK_STR(text.data, TLS_BANNER);
        tls_send(ssl, "AUTHENTICATE PLAIN " PLAIN_GOOD "\r\n");
        tls_receive(f, ssl, &text, &closed);
        CHECK_STR(text.data, "OK Success (no protection)\r\n");
        /* EXIT: the answer, then TLS's close_notify before the close. */
        tls_send(ssl, "EXIT\r\n");
        tls_receive(f, ssl, &text, &closed);
        CHECK_STR(text.data, "OK Finished\r\n");
        tls_receive(f, ssl, &text, &closed);
        CHECK(closed);
        CHECK(SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN);
        SSL_free(ssl);
    }
    close(fd);
    cairn_buf_release(&text);
}

/* A key that does not load: the error names the key and the file. */
static void
test_bad_files(struct tls_fixture *f)
{
    struct cairn_router_channel_settings channel = {
        .name = "backup",
        .listen = "127.0.0.1:0",
        .sasl_user = "repluser",
        .sasl_password = "replpass",
        .tls_cert = f->cert,
        .tls_key = "/nonexistent/key.pem",
    };
    struct cairn_router_settings settings = {
        .servername = SERVERNAME,
        .channels = &channel,
        .channel_count = 1,
    };
    struct cairn_router *router = NULL;
    char error[512] = "";

    CHECK_INT(cairn_router_new(f->base.loop, &settings, &router, error,
                               sizeof(error)),
              CAIRN_ECONFIG);
    CHECK(strstr(error, "channel backup: tls_key /nonexistent/key.pem: "
                        "cannot load") != NULL);
    channel.tls_key = f->key;
    channel.tls_client_ca = "/nonexistent/ca.pem";
    CHECK_INT(cairn_router_new(f->base.loop, &settings, &router, error,
                               sizeof(error)),
              CAIRN_ECONFIG);
    CHECK(strstr(error, "tls_client_ca /nonexistent/ca.pem") != NULL);
    channel.tls_cert = channel.tls_key = channel.tls_client_ca = NULL;
    channel.require_tls = true;
    CHECK_INT(cairn_router_new(f->base.loop, &settings, &router, error,
                               sizeof(error)),
              CAIRN_ECONFIG);
    CHECK(strstr(error, "need tls_cert and tls_key") != NULL);
    /* A reload with a bad file keeps the running channels. */
    CHECK_INT(
        cairn_router_reload(f->base.router, &settings, error, sizeof(error)),
        CAIRN_ECONFIG);
    CHECK(cairn_router_port(f->base.router, CHANNEL_IMPLICIT) ==
          f->ports[CHANNEL_IMPLICIT]);
}

int
main(void)
{
    struct tls_fixture fixture;

    CHECK_INT(tls_fixture_open(&fixture), 0);
    test_starttls(&fixture);
    test_wrong_subject(&fixture);
    test_implicit(&fixture);
    test_bad_files(&fixture);
    tls_fixture_close(&fixture);
    return check_exit("test_tls");
}
