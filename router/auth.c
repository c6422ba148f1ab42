/*
 * auth.c - SASL authentication of sync_client with libsasl2's server side,
 * the way backupd does it (service "csync", no security layer, base64
 * "+ " continuations, success data sent as one more challenge).
 *
 * Credentials come from one of two places per channel:
 *  - a sasldb file the administrator maintains with saslpasswd2: libsasl2's
 *    own "sasldb" auxprop plugin reads it (sasldb_path per connection);
 *  - a password in cluster.conf: a tiny in-process auxprop plugin ("cairn")
 *    hands libsasl2 the channel's userPassword. This keeps the secret out
 *    of any file the router would otherwise have to write (a private sasldb
 *    made with sasl_setpass would put a password equivalent on disk and need
 *    cleanup), and SCRAM, PLAIN and CRAM-MD5 all work from a cleartext
 *    userPassword. The plugin finds the channel through the connection's
 *    getopt callback, so one process serves channels with different
 *    credentials.
 * Authorization: the authenticated identity must be the channel's user;
 * anything else fails the exchange (proxy-policy callback).
 */
#include "router_int.h"

#include <sasl/saslplug.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AUXPROP_NAME "cairn"

static int global_users;

/* libsasl2 would log to syslog by default; a library must not log. */
static int
drop_log(void *context, int level, const char *message)
{
    return SASL_OK;
}

static const sasl_callback_t global_callbacks[] = {
    {SASL_CB_LOG, CAIRN_SASL_CALLBACK(drop_log), NULL},
    {SASL_CB_LIST_END, NULL, NULL},
};

/* Strips "@realm" when realm is the server's own name. */
static void
local_name(const char *user, unsigned len, const char *servername, char *out,
           size_t out_size)
{
    const char *at = memchr(user, '@', len);

    if (at != NULL && strlen(servername) == (size_t)(user + len - at - 1) &&
        memcmp(at + 1, servername, strlen(servername)) == 0)
        len = (unsigned)(at - user);
    if (len >= out_size)
        len = (unsigned)out_size - 1;
    memcpy(out, user, len);
    out[len] = '\0';
}

static int
auxprop_lookup(void *glob_context, sasl_server_params_t *sparams,
               unsigned flags, const char *user, unsigned ulen)
{
    const char *channel_user = NULL, *password = NULL;
    char name[CAIRN_ROUTER_USERID_MAX];
    const struct propval *wanted;

    if (flags & SASL_AUXPROP_AUTHZID)
        return SASL_OK; /* nothing is stored about authorization ids */
    sparams->utils->getopt(sparams->utils->getopt_context, AUXPROP_NAME,
                           "cairn_user", &channel_user, NULL);
    sparams->utils->getopt(sparams->utils->getopt_context, AUXPROP_NAME,
                           "cairn_password", &password, NULL);
    if (channel_user == NULL || password == NULL)
        return SASL_NOUSER;
    local_name(user, ulen, sparams->serverFQDN, name, sizeof(name));
    if (strcmp(name, channel_user) != 0)
        return SASL_NOUSER;
    for (wanted = sparams->utils->prop_get(sparams->propctx);
         wanted != NULL && wanted->name != NULL; wanted++) {
        if (strcmp(wanted->name, "*" SASL_AUX_PASSWORD_PROP) != 0)
            continue;
        if (wanted->values != NULL && !(flags & SASL_AUXPROP_OVERRIDE))
            continue;
        if (wanted->values != NULL)
            sparams->utils->prop_erase(sparams->propctx, wanted->name);
        sparams->utils->prop_set(sparams->propctx, wanted->name, password,
                                 (int)strlen(password));
    }
    return SASL_OK;
}

static sasl_auxprop_plug_t auxprop_plugin = {
    .auxprop_lookup = auxprop_lookup,
    .name = AUXPROP_NAME,
};

static int
auxprop_init(const sasl_utils_t *utils, int max_version, int *out_version,
             sasl_auxprop_plug_t **plug, const char *plugname)
{
    if (max_version < SASL_AUXPROP_PLUG_VERSION)
        return SASL_BADVERS;
    *out_version = SASL_AUXPROP_PLUG_VERSION;
    *plug = &auxprop_plugin;
    return SASL_OK;
}

int
cairn_router_auth_global_init(void)
{
    if (global_users++ > 0)
        return CAIRN_OK;
    if (sasl_server_init(global_callbacks, "cairn-router") != SASL_OK ||
        sasl_auxprop_add_plugin(AUXPROP_NAME, auxprop_init) != SASL_OK) {
        global_users = 0;
        return CAIRN_EAUTH;
    }
    return CAIRN_OK;
}

void
cairn_router_auth_global_done(void)
{
    if (global_users > 0 && --global_users == 0)
        sasl_server_done();
}

/* Per-connection options: which store holds the password, and where. */
static int
channel_getopt(void *context, const char *plugin_name, const char *option,
               const char **result, unsigned *len)
{
    const struct cairn_router_auth_channel *channel = context;
    const char *value = NULL;

    if (strcmp(option, "auxprop_plugin") == 0)
        value = channel->password != NULL ? AUXPROP_NAME : "sasldb";
    else if (strcmp(option, "sasldb_path") == 0)
        value = channel->sasl_db;
    else if (strcmp(option, "pwcheck_method") == 0)
        value = "auxprop";
    else if (plugin_name != NULL && strcmp(plugin_name, AUXPROP_NAME) == 0 &&
             strcmp(option, "cairn_user") == 0)
        value = channel->user;
    else if (plugin_name != NULL && strcmp(plugin_name, AUXPROP_NAME) == 0 &&
             strcmp(option, "cairn_password") == 0)
        value = channel->password;
    if (value == NULL)
        return SASL_FAIL;
    *result = value;
    if (len != NULL)
        *len = (unsigned)strlen(value);
    return SASL_OK;
}

/* Only the channel's own identity may log in, and only as itself. */
static int
channel_authorize(sasl_conn_t *conn, void *context, const char *requested,
                  unsigned requested_len, const char *identity,
                  unsigned identity_len, const char *realm, unsigned realm_len,
                  struct propctx *propctx)
{
    const struct cairn_router_auth_channel *channel = context;
    char name[CAIRN_ROUTER_USERID_MAX];

    local_name(identity, identity_len, channel->servername, name, sizeof(name));
    if (strcmp(name, channel->user) != 0) {
        sasl_seterror(conn, SASL_NOLOG, "not the channel's identity");
        return SASL_NOAUTHZ;
    }
    if (requested_len > 0 && (requested_len != identity_len ||
                              memcmp(requested, identity, identity_len) != 0)) {
        sasl_seterror(conn, SASL_NOLOG, "proxy authorization refused");
        return SASL_NOAUTHZ;
    }
    return SASL_OK;
}

static char *
copy_or_null(const char *text)
{
    return text != NULL ? strdup(text) : NULL;
}

static bool
word_in_list(const char *list, const char *word)
{
    size_t len = strlen(word);

    for (const char *p = list; (p = strstr(p, word)) != NULL; p += len) {
        bool starts = p == list || p[-1] == ' ';
        bool ends = p[len] == '\0' || p[len] == ' ';

        if (starts && ends)
            return true;
    }
    return false;
}

/* The mechanisms advertised when the channel names none: the SCRAM family
 * (what sync_client picks against backupd) and PLAIN. No mechanism that can
 * negotiate a security layer: we do not implement one. */
static const char *const default_mechanisms[] = {
    "SCRAM-SHA-512", "SCRAM-SHA-384", "SCRAM-SHA-256",
    "SCRAM-SHA-224", "SCRAM-SHA-1",   "PLAIN",
};

static int
available_mechanisms(struct cairn_router_auth_channel *channel, char *list,
                     size_t list_size)
{
    sasl_conn_t *conn = NULL;
    const char *result = NULL;
    int rc = CAIRN_EAUTH;

    if (sasl_server_new("csync", channel->servername, NULL, NULL, NULL,
                        channel->callbacks, 0, &conn) != SASL_OK)
        goto out;
    if (sasl_listmech(conn, NULL, "", " ", "", &result, NULL, NULL) != SASL_OK)
        goto out;
    snprintf(list, list_size, "%s", result);
    rc = CAIRN_OK;
out:
    sasl_dispose(&conn);
    return rc;
}

static int
choose_mechanisms(struct cairn_router_auth_channel *channel,
                  const struct cairn_router_channel_settings *settings,
                  char *error, size_t error_size)
{
    const char *const *wanted = settings->mechanisms;
    size_t count = settings->mechanism_count;
    char available[1024];
    struct cairn_buf list;
    size_t length = 0;
    int rc;

    if (wanted == NULL || count == 0) {
        wanted = default_mechanisms;
        count = sizeof(default_mechanisms) / sizeof(default_mechanisms[0]);
    }
    if ((rc = available_mechanisms(channel, available, sizeof(available))) <
        0) {
        snprintf(error, error_size, "libsasl2 lists no mechanisms");
        return rc;
    }
    cairn_buf_init(&list, 1024);
    for (size_t i = 0; i < count && rc == 0; i++) {
        if (!word_in_list(available, wanted[i]))
            continue;
        if (list.len > 0)
            rc = cairn_buf_append_str(&list, " ");
        if (rc == 0)
            rc = cairn_buf_append_str(&list, wanted[i]);
    }
    if (rc == 0 && list.len == 0) {
        snprintf(error, error_size,
                 "none of the mechanisms is available (libsasl2 has: %s)",
                 available);
        rc = CAIRN_ECONFIG;
    }
    if (rc == 0)
        rc = cairn_buf_detach(&list, &channel->mechanisms, &length);
    cairn_buf_release(&list);
    return rc;
}

int
cairn_router_auth_channel_init(
    struct cairn_router_auth_channel *channel, const char *servername,
    const struct cairn_router_channel_settings *settings, char *error,
    size_t error_size)
{
    int rc = CAIRN_ENOMEM;

    memset(channel, 0, sizeof(*channel));
    if (settings->sasl_user == NULL ||
        (settings->sasl_password == NULL) == (settings->sasl_db == NULL)) {
        snprintf(error, error_size,
                 "channel needs sasl_user and exactly one of sasl_password "
                 "and sasl_db");
        return CAIRN_ECONFIG;
    }
    channel->servername = strdup(servername);
    channel->user = strdup(settings->sasl_user);
    channel->password = copy_or_null(settings->sasl_password);
    channel->sasl_db = copy_or_null(settings->sasl_db);
    if (channel->servername == NULL || channel->user == NULL ||
        (settings->sasl_password != NULL && channel->password == NULL) ||
        (settings->sasl_db != NULL && channel->sasl_db == NULL))
        goto out;
    channel->callbacks[0] = (sasl_callback_t){
        SASL_CB_GETOPT, CAIRN_SASL_CALLBACK(channel_getopt), channel};
    channel->callbacks[1] = (sasl_callback_t){
        SASL_CB_PROXY_POLICY, CAIRN_SASL_CALLBACK(channel_authorize), channel};
    channel->callbacks[2] = (sasl_callback_t){SASL_CB_LIST_END, NULL, NULL};
    rc = choose_mechanisms(channel, settings, error, error_size);
out:
    if (rc < 0)
        cairn_router_auth_channel_release(channel);
    return rc;
}

void
cairn_router_auth_channel_release(struct cairn_router_auth_channel *channel)
{
    free(channel->servername);
    free(channel->user);
    free(channel->password);
    free(channel->sasl_db);
    free(channel->mechanisms);
    memset(channel, 0, sizeof(*channel));
}

void
cairn_router_auth_session_init(struct cairn_router_auth_session *session,
                               const struct cairn_router_auth_channel *channel,
                               const char *local, const char *remote)
{
    memset(session, 0, sizeof(*session));
    session->channel = channel;
    snprintf(session->local, sizeof(session->local), "%s", local ? local : "");
    snprintf(session->remote, sizeof(session->remote), "%s",
             remote ? remote : "");
}

void
cairn_router_auth_session_release(struct cairn_router_auth_session *session)
{
    sasl_dispose(&session->conn);
}

/* A fresh sasl_conn_t for every AUTHENTICATE, as backupd resets its own. */
static int
new_conn(struct cairn_router_auth_session *session)
{
    static const sasl_security_properties_t secprops = {
        .min_ssf = 0,
        .max_ssf = 0, /* no security layer: we could not unwrap it */
        .maxbufsize = 0,
        .security_flags = SASL_SEC_NOANONYMOUS,
    };
    const struct cairn_router_auth_channel *channel = session->channel;

    sasl_dispose(&session->conn);
    if (sasl_server_new("csync", channel->servername, NULL,
                        session->local[0] ? session->local : NULL,
                        session->remote[0] ? session->remote : NULL,
                        channel->callbacks, 0, &session->conn) != SASL_OK)
        return CAIRN_EAUTH;
    if (sasl_setprop(session->conn, SASL_SEC_PROPS, &secprops) != SASL_OK)
        return CAIRN_EAUTH;
    return CAIRN_OK;
}

/* Turns one libsasl2 result into the outcome and what to send. */
static int
settle(struct cairn_router_auth_session *session, int result,
       const char *server_out, unsigned server_out_len,
       struct cairn_buf *challenge, enum cairn_router_auth_outcome *outcome,
       const char **message)
{
    const void *login = NULL;
    unsigned encoded_len = 0;
    int rc;

    cairn_buf_reset(challenge);
    *message = NULL;
    if (result == SASL_CONTINUE) {
        /* An empty challenge is "+ " alone. */
        if ((rc = cairn_buf_reserve(challenge, CAIRN_ROUTER_SASL_LINE_MAX)) < 0)
            return rc;
        if (server_out_len > 0 &&
            sasl_encode64(server_out, server_out_len, challenge->data,
                          CAIRN_ROUTER_SASL_LINE_MAX, &encoded_len) != SASL_OK)
            return CAIRN_ETOOBIG;
        challenge->len = encoded_len;
        challenge->data[encoded_len] = '\0';
        *outcome = CAIRN_ROUTER_AUTH_CONTINUE;
        return CAIRN_OK;
    }
    if (result == SASL_OK &&
        sasl_getprop(session->conn, SASL_USERNAME, &login) == SASL_OK &&
        login != NULL) {
        snprintf(session->login, sizeof(session->login), "%s",
                 (const char *)login);
        session->authenticated = true;
        *outcome = CAIRN_ROUTER_AUTH_SUCCESS;
        return CAIRN_OK;
    }
    /* backupd answers "NO <sasl_errstring>" (e.g. "authentication
     * failure"), else "NO Error authenticating". */
    *message =
        sasl_errstring(result == SASL_OK ? SASL_FAIL : result, NULL, NULL);
    if (*message == NULL)
        *message = "Error authenticating";
    *outcome = CAIRN_ROUTER_AUTH_FAILED;
    sasl_dispose(&session->conn);
    return CAIRN_OK;
}

int
cairn_router_auth_begin(struct cairn_router_auth_session *session,
                        const char *mech, const char *initial,
                        struct cairn_buf *challenge,
                        enum cairn_router_auth_outcome *outcome,
                        const char **message)
{
    const char *server_out = NULL;
    unsigned server_out_len = 0, client_len = 0;
    char *client = NULL;
    int result, rc;

    snprintf(session->mechanism, sizeof(session->mechanism), "%s", mech);
    if ((rc = new_conn(session)) < 0)
        return rc;
    if (!word_in_list(session->channel->mechanisms, mech))
        return settle(session, SASL_NOMECH, NULL, 0, challenge, outcome,
                      message);
    if (initial != NULL) {
        size_t len = strlen(initial);

        if (len > CAIRN_ROUTER_SASL_LINE_MAX)
            return settle(session, SASL_BADPROT, NULL, 0, challenge, outcome,
                          message);
        if ((client = malloc(len + 1)) == NULL)
            return CAIRN_ENOMEM;
        result = strcmp(initial, "=") == 0
                     ? SASL_OK
                     : sasl_decode64(initial, (unsigned)len, client,
                                     (unsigned)len + 1, &client_len);
        if (result != SASL_OK) {
            free(client);
            return settle(session, result, NULL, 0, challenge, outcome,
                          message);
        }
    }
    result = sasl_server_start(session->conn, mech, client, client_len,
                               &server_out, &server_out_len);
    free(client);
    return settle(session, result, server_out, server_out_len, challenge,
                  outcome, message);
}

int
cairn_router_auth_continue(struct cairn_router_auth_session *session,
                           const char *line, struct cairn_buf *challenge,
                           enum cairn_router_auth_outcome *outcome,
                           const char **message)
{
    const char *server_out = NULL;
    unsigned server_out_len = 0, client_len = 0;
    size_t len = strlen(line);
    char *client = NULL;
    int result;

    if (session->conn == NULL)
        return CAIRN_ESTATE;
    if (line[0] == '*') {
        sasl_dispose(&session->conn);
        *message = NULL;
        *outcome = CAIRN_ROUTER_AUTH_CANCELLED;
        return CAIRN_OK;
    }
    if (len > CAIRN_ROUTER_SASL_LINE_MAX)
        return settle(session, SASL_BADPROT, NULL, 0, challenge, outcome,
                      message);
    if ((client = malloc(len + 1)) == NULL)
        return CAIRN_ENOMEM;
    result = sasl_decode64(line, (unsigned)len, client, (unsigned)len + 1,
                           &client_len);
    if (result == SASL_OK)
        result = sasl_server_step(session->conn, client, client_len,
                                  &server_out, &server_out_len);
    free(client);
    return settle(session, result, server_out, server_out_len, challenge,
                  outcome, message);
}
