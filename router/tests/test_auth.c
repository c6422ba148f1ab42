/*
 * test_auth.c - the router's SASL server side against libsasl2's own client
 * side, in memory: SCRAM-SHA-512 (what sync_client picks against backupd)
 * and PLAIN with the password from the config and from a sasldb file made
 * with saslpasswd2, wrong passwords, a valid login that is not the
 * channel's identity, cancellation, and the advertised mechanism list.
 */
#include "check.h"
#include "router_int.h"

#include <sasl/sasl.h>
#include <sasl/saslutil.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SERVERNAME "bak.cairn.test"

struct client_credentials {
    const char *user;
    const char *password;
};

static int
client_simple(void *context, int id, const char **result, unsigned *len)
{
    const struct client_credentials *credentials = context;

    if (id == SASL_CB_USER) {
        *result = ""; /* sync_client asks for no authorization id */
    } else if (id == SASL_CB_AUTHNAME) {
        *result = credentials->user;
    } else {
        return SASL_FAIL;
    }
    if (len != NULL)
        *len = (unsigned)strlen(*result);
    return SASL_OK;
}

static int
client_secret(sasl_conn_t *conn, void *context, int id, sasl_secret_t **secret)
{
    const struct client_credentials *credentials = context;
    static union {
        sasl_secret_t secret;
        char space[sizeof(sasl_secret_t) + 256];
    } storage;
    size_t len = strlen(credentials->password);

    storage.secret.len = len;
    memcpy(storage.secret.data, credentials->password, len + 1);
    *secret = &storage.secret;
    return SASL_OK;
}

/*
 * Runs one whole exchange as sync_client would; returns the final outcome
 * and the NO message. rounds counts "+ " challenges.
 */
static enum cairn_router_auth_outcome
exchange(const struct cairn_router_auth_channel *channel, const char *mech,
         const struct client_credentials *credentials, bool cancel,
         const char **message, int *rounds)
{
    sasl_callback_t callbacks[] = {
        {SASL_CB_USER, CAIRN_SASL_CALLBACK(client_simple), (void *)credentials},
        {SASL_CB_AUTHNAME, CAIRN_SASL_CALLBACK(client_simple),
         (void *)credentials},
        {SASL_CB_PASS, CAIRN_SASL_CALLBACK(client_secret), (void *)credentials},
        {SASL_CB_LIST_END, NULL, NULL},
    };
    struct cairn_router_auth_session session;
    enum cairn_router_auth_outcome outcome = CAIRN_ROUTER_AUTH_FAILED;
    struct cairn_buf challenge;
    sasl_conn_t *client = NULL;
    const char *out = NULL, *chosen = NULL;
    unsigned out_len = 0, len = 0;
    char encoded[CAIRN_ROUTER_SASL_LINE_MAX], decoded[8192];
    int rc;

    *rounds = 0;
    *message = NULL;
    cairn_buf_init(&challenge, CAIRN_ROUTER_SASL_LINE_MAX + 1);
    cairn_router_auth_session_init(&session, channel, "127.0.0.1;2005",
                                   "127.0.0.1;40000");
    CHECK_INT(
        sasl_client_new("csync", SERVERNAME, NULL, NULL, callbacks, 0, &client),
        SASL_OK);
    rc = sasl_client_start(client, mech, NULL, &out, &out_len, &chosen);
    CHECK(rc == SASL_OK || rc == SASL_CONTINUE);
    CHECK_INT(sasl_encode64(out, out_len, encoded, sizeof(encoded), &len),
              SASL_OK);
    CHECK_INT(cairn_router_auth_begin(&session, mech,
                                      out_len > 0 ? encoded : "=", &challenge,
                                      &outcome, message),
              0);
    while (outcome == CAIRN_ROUTER_AUTH_CONTINUE && *rounds < 5) {
        (*rounds)++;
        if (cancel) {
            CHECK_INT(cairn_router_auth_continue(&session, "*", &challenge,
                                                 &outcome, message),
                      0);
            break;
        }
        CHECK_INT(sasl_decode64(challenge.data, (unsigned)challenge.len,
                                decoded, sizeof(decoded), &len),
                  SASL_OK);
        rc = sasl_client_step(client, decoded, len, NULL, &out, &out_len);
        CHECK(rc == SASL_OK || rc == SASL_CONTINUE);
        encoded[0] = '\0';
        if (out_len > 0)
            CHECK_INT(
                sasl_encode64(out, out_len, encoded, sizeof(encoded), &len),
                SASL_OK);
        CHECK_INT(cairn_router_auth_continue(&session, encoded, &challenge,
                                             &outcome, message),
                  0);
    }
    if (outcome == CAIRN_ROUTER_AUTH_SUCCESS)
        CHECK_STR(session.login, channel->user);
    CHECK_INT(session.authenticated, outcome == CAIRN_ROUTER_AUTH_SUCCESS);
    sasl_dispose(&client);
    cairn_router_auth_session_release(&session);
    cairn_buf_release(&challenge);
    return outcome;
}

struct exchange_case {
    const char *mech;
    const char *user;
    const char *password;
    bool cancel;
    enum cairn_router_auth_outcome outcome;
    int rounds; /* -1: don't care */
    const char *message;
};

static const struct exchange_case cases[] = {
    /* SCRAM: client-first, server-first, client-final, server-final sent
     * as a second challenge answered by an empty line (the lab shows it). */
    {"SCRAM-SHA-512", "repluser", "replpass", false, CAIRN_ROUTER_AUTH_SUCCESS,
     2, NULL},
    {"SCRAM-SHA-256", "repluser", "replpass", false, CAIRN_ROUTER_AUTH_SUCCESS,
     2, NULL},
    {"PLAIN", "repluser", "replpass", false, CAIRN_ROUTER_AUTH_SUCCESS, 0,
     NULL},
    {"SCRAM-SHA-512", "repluser", "wrong", false, CAIRN_ROUTER_AUTH_FAILED, -1,
     NULL},
    {"PLAIN", "repluser", "wrong", false, CAIRN_ROUTER_AUTH_FAILED, 0,
     "authentication failure"},
    {"PLAIN", "nobody", "replpass", false, CAIRN_ROUTER_AUTH_FAILED, 0, NULL},
    {"SCRAM-SHA-512", "repluser", "replpass", true, CAIRN_ROUTER_AUTH_CANCELLED,
     1, NULL},
};

static void
run_cases(const struct cairn_router_auth_channel *channel)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct exchange_case *c = &cases[i];
        struct client_credentials credentials = {c->user, c->password};
        const char *message = NULL;
        int rounds = 0;
        enum cairn_router_auth_outcome outcome = exchange(
            channel, c->mech, &credentials, c->cancel, &message, &rounds);

        CHECK_INT(outcome, c->outcome);
        if (outcome != c->outcome)
            fprintf(stderr, "  case %zu (%s %s/%s): %s\n", i, c->mech, c->user,
                    c->password, message ? message : "");
        if (c->rounds >= 0)
            CHECK_INT(rounds, c->rounds);
        if (c->message != NULL)
            CHECK_STR(message, c->message);
        if (outcome == CAIRN_ROUTER_AUTH_FAILED)
            CHECK(message != NULL && message[0] != '\0');
    }
}

static void
test_password_from_config(void)
{
    static const char *const mechanisms[] = {"SCRAM-SHA-512", "SCRAM-SHA-256",
                                             "PLAIN", "NO-SUCH-MECH"};
    struct cairn_router_channel_settings settings = {
        .name = "backup",
        .sasl_user = "repluser",
        .sasl_password = "replpass",
        .mechanisms = mechanisms,
        .mechanism_count = 4,
    };
    struct cairn_router_auth_channel channel;
    char error[256] = "";

    CHECK_INT(cairn_router_auth_channel_init(&channel, SERVERNAME, &settings,
                                             error, sizeof(error)),
              0);
    CHECK_STR(channel.mechanisms, "SCRAM-SHA-512 SCRAM-SHA-256 PLAIN");
    run_cases(&channel);
    cairn_router_auth_channel_release(&channel);
}

/* A sasldb with the channel's user and a second valid user who is not. */
static bool
make_sasldb(const char *path)
{
    char command[1024];

    snprintf(
        command, sizeof(command),
        "echo replpass | saslpasswd2 -p -c -f %s -u " SERVERNAME
        " repluser && echo otherpass | saslpasswd2 -p -c -f %s -u " SERVERNAME
        " other",
        path, path);
    return system(command) == 0;
}

static void
test_password_from_sasldb(void)
{
    char dir[] = "/tmp/cairn-test-auth-XXXXXX", path[256], error[256] = "";
    struct cairn_router_channel_settings settings = {
        .name = "backup", .sasl_user = "repluser", .sasl_db = path};
    struct cairn_router_auth_channel channel;
    struct client_credentials other = {"other", "otherpass"};
    const char *message = NULL;
    int rounds = 0;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/sasldb2", dir);
    CHECK(make_sasldb(path));
    CHECK_INT(cairn_router_auth_channel_init(&channel, SERVERNAME, &settings,
                                             error, sizeof(error)),
              0);
    /* The default list: the SCRAM family and PLAIN. */
    CHECK_STR(channel.mechanisms, "SCRAM-SHA-512 SCRAM-SHA-384 SCRAM-SHA-256 "
                                  "SCRAM-SHA-224 SCRAM-SHA-1 PLAIN");
    run_cases(&channel);
    /* "other" knows its password but is not the channel's identity. */
    CHECK_INT(
        exchange(&channel, "SCRAM-SHA-512", &other, false, &message, &rounds),
        CAIRN_ROUTER_AUTH_FAILED);
    CHECK_INT(exchange(&channel, "PLAIN", &other, false, &message, &rounds),
              CAIRN_ROUTER_AUTH_FAILED);
    cairn_router_auth_channel_release(&channel);
    unlink(path);
    rmdir(dir);
}

static void
test_refusals(void)
{
    static const char *const plain_only[] = {"PLAIN"};
    static const char *const unknown_only[] = {"NO-SUCH-MECH"};
    struct cairn_router_channel_settings settings = {
        .name = "backup",
        .sasl_user = "repluser",
        .sasl_password = "replpass",
        .mechanisms = plain_only,
        .mechanism_count = 1,
    };
    struct cairn_router_auth_channel channel;
    struct cairn_router_auth_session session;
    enum cairn_router_auth_outcome outcome = CAIRN_ROUTER_AUTH_CONTINUE;
    struct cairn_buf challenge;
    const char *message = NULL;
    char error[256] = "";

    cairn_buf_init(&challenge, CAIRN_ROUTER_SASL_LINE_MAX + 1);
    CHECK_INT(cairn_router_auth_channel_init(&channel, SERVERNAME, &settings,
                                             error, sizeof(error)),
              0);
    cairn_router_auth_session_init(&session, &channel, NULL, NULL);
    /* Not advertised, although libsasl2 has it. */
    CHECK_INT(cairn_router_auth_begin(&session, "SCRAM-SHA-512", NULL,
                                      &challenge, &outcome, &message),
              0);
    CHECK_INT(outcome, CAIRN_ROUTER_AUTH_FAILED);
    CHECK(message != NULL);
    /* Broken base64 in the initial response. */
    CHECK_INT(cairn_router_auth_begin(&session, "PLAIN", "!!!!", &challenge,
                                      &outcome, &message),
              0);
    CHECK_INT(outcome, CAIRN_ROUTER_AUTH_FAILED);
    /* PLAIN without an initial response: an empty challenge first. */
    CHECK_INT(cairn_router_auth_begin(&session, "PLAIN", NULL, &challenge,
                                      &outcome, &message),
              0);
    CHECK_INT(outcome, CAIRN_ROUTER_AUTH_CONTINUE);
    CHECK_INT(challenge.len, 0);
    /* \0repluser\0replpass */
    CHECK_INT(cairn_router_auth_continue(&session, "AHJlcGx1c2VyAHJlcGxwYXNz",
                                         &challenge, &outcome, &message),
              0);
    CHECK_INT(outcome, CAIRN_ROUTER_AUTH_SUCCESS);
    cairn_router_auth_session_release(&session);
    cairn_router_auth_channel_release(&channel);

    /* Configuration errors. */
    settings.mechanisms = unknown_only;
    CHECK_INT(cairn_router_auth_channel_init(&channel, SERVERNAME, &settings,
                                             error, sizeof(error)),
              CAIRN_ECONFIG);
    settings.mechanisms = plain_only;
    settings.sasl_db = "/nonexistent";
    CHECK_INT(cairn_router_auth_channel_init(&channel, SERVERNAME, &settings,
                                             error, sizeof(error)),
              CAIRN_ECONFIG);
    cairn_buf_release(&challenge);
}

int
main(void)
{
    CHECK_INT(cairn_router_auth_global_init(), 0);
    CHECK_INT(sasl_client_init(NULL), SASL_OK);
    test_password_from_config();
    test_password_from_sasldb();
    test_refusals();
    cairn_router_auth_global_done();
    sasl_client_done();
    return check_exit("test_auth");
}
