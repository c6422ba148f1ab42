/*
 * session.c - one sync_client session as backupd runs it (backup/backupd.c
 * cmdloop(), sync-protocol.md §1): the banner, the command table with its
 * before-login rules and arity errors, STARTTLS (the handshake is
 * tls.c's), SASL exchanges, COMPRESS, NOOP,
 * RESTART, EXIT, the IMAP probe, and GET/APPLY requests resolved to one
 * user and handed to the request handler. Every reply goes through
 * reply_line() / the cairn_router_reply API and is flushed at its end.
 */
#include "router_int.h"
#include "router_metrics_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* What the banner's last line shows after "Cyrus backup server". */
#define CAIRN_BANNER_VERSION "cairn-0.1.0"

/* The NO for requests while forwarding to nodes does not exist yet. */
#define NOT_FORWARDED                                                          \
    "cairn router: not yet forwarded to storage, nothing stored"

enum {
    PRE_AUTH = 1 << 0, /* allowed before authentication */
    DLIST = 1 << 1,    /* takes one "KEY value" dlist argument */
};

/* A dlist command without its dlist is missing one argument. */
#define DLIST_ARGUMENT(entry) (((entry)->flags & DLIST) ? 1 : 0)

struct session_command {
    enum cairn_csync_verb verb;
    const char *name; /* as backupd capitalises it in error texts */
    int min_args, max_args;
    unsigned flags;
    int (*handler)(struct cairn_router_conn *conn,
                   struct cairn_csync_command *cmd);
};

/*
 * One request's answer. Lives on the heap: a handler may keep it and
 * complete it later (CAIRN_EAGAIN); the command (and its spooled bodies)
 * then stays with it, and the connection reads nothing more until then.
 * conn becomes NULL if the connection closes first.
 */
struct cairn_router_reply {
    struct cairn_router_conn *conn;
    bool completed;
    bool pending;
    struct cairn_csync_command cmd; /* owned while pending */
    struct cairn_dlist *message;    /* staged bodies sent with it, owned */
    struct cairn_router_stage *orphaned_stage; /* its connection's, owned */
};

static int
reply_line(struct cairn_router_conn *conn, enum cairn_csync_status status,
           enum cairn_csync_code code, const char *text)
{
    int rc = cairn_csync_write_response(&conn->reply, status, code, "%s", text);

    if (rc < 0)
        return rc;
    cairn_router_metric_command(conn->channel->name, conn->command, status,
                                code);
    return cairn_router_conn_flush_reply(conn);
}

/* A protocol violation: answer, then end the session. */
static int
reply_and_close(struct cairn_router_conn *conn, const char *text)
{
    conn->closing = true;
    return reply_line(conn, CAIRN_CSYNC_BAD, CAIRN_CSYNC_CODE_NONE, text);
}

/*
 * With require_tls nothing but STARTTLS (and NOOP, EXIT) is of use before
 * the handshake: no SASL line, so that a 3.6 sync_client, which does
 * STARTTLS only when it has no mechanism (backend.c's
 * backend_authenticate()), does it; no COMPRESS, which would make STARTTLS
 * impossible.
 */
static bool
waiting_for_tls(const struct cairn_router_conn *conn)
{
    return conn->channel->require_tls && !conn->tls_active;
}

/* Whether STARTTLS is a command on this connection now. */
static bool
starttls_offered(const struct cairn_router_conn *conn)
{
    const struct cairn_router_channel *channel = conn->channel;

    return channel->tls_context != NULL && !channel->implicit_tls &&
           conn->tls == NULL;
}

int
cairn_router_session_start(struct cairn_router_conn *conn)
{
    const struct cairn_router_channel *channel = conn->channel;
    int rc = CAIRN_OK;

    if (channel->auth.mechanisms[0] != '\0' && !waiting_for_tls(conn) &&
        !conn->tls_client_refused)
        rc = cairn_buf_printf(&conn->reply, "* SASL %s\r\n",
                              channel->auth.mechanisms);
    if (rc == 0 && starttls_offered(conn))
        rc = cairn_buf_append_str(&conn->reply, "* STARTTLS\r\n");
    if (rc == 0 && channel->compress && !waiting_for_tls(conn))
        rc = cairn_buf_append_str(&conn->reply, "* COMPRESS DEFLATE\r\n");
    if (rc == 0)
        rc = cairn_buf_printf(
            &conn->reply,
            "* OK %s Cyrus backup server " CAIRN_BANNER_VERSION "\r\n",
            conn->router->servername);
    if (rc == 0)
        rc = cairn_router_conn_flush_reply(conn);
    return rc;
}

int
cairn_router_session_tls_ready(struct cairn_router_conn *conn)
{
    /* sync_client reads capabilities again up to "* OK" and sends
     * nothing before (backend.c's backend_starttls()). */
    return cairn_router_session_start(conn);
}

static int
cmd_starttls(struct cairn_router_conn *conn, struct cairn_csync_command *cmd)
{
    int rc;

    if (conn->auth.authenticated)
        return reply_line(conn, CAIRN_CSYNC_BAD, CAIRN_CSYNC_CODE_NONE,
                          "Can't Starttls after authentication");
    if (conn->compress != NULL)
        return reply_line(conn, CAIRN_CSYNC_BAD, CAIRN_CSYNC_CODE_NONE,
                          "Can't Starttls after COMPRESS");
    rc = reply_line(conn, CAIRN_CSYNC_OK, CAIRN_CSYNC_CODE_NONE,
                    "Begin TLS negotiation now");
    if (rc == 0)
        rc = cairn_router_conn_start_tls(conn);
    return rc;
}

/* --- SASL -------------------------------------------------------------- */

static int
sasl_outcome(struct cairn_router_conn *conn,
             enum cairn_router_auth_outcome outcome, const char *message,
             const struct cairn_buf *challenge)
{
    const char *mech = conn->auth.mechanism;
    int rc;

    conn->in_sasl = false;
    switch (outcome) {
    case CAIRN_ROUTER_AUTH_CONTINUE:
        conn->in_sasl = true;
        cairn_csync_reader_expect_line(conn->reader);
        rc = cairn_buf_printf(&conn->reply, "+ %s\r\n",
                              challenge->len ? challenge->data : "");
        return rc < 0 ? rc : cairn_router_conn_flush_reply(conn);
    case CAIRN_ROUTER_AUTH_SUCCESS:
        cairn_router_event(conn->router, conn, CAIRN_ROUTER_EVENT_INFO,
                           "login: %s %s", conn->auth.login, mech);
        return reply_line(conn, CAIRN_CSYNC_OK, CAIRN_CSYNC_CODE_NONE,
                          "Success (no protection)");
    case CAIRN_ROUTER_AUTH_CANCELLED:
        return reply_line(conn, CAIRN_CSYNC_BAD, CAIRN_CSYNC_CODE_NONE,
                          "Client canceled authentication");
    case CAIRN_ROUTER_AUTH_FAILED:
        break;
    }
    cairn_router_event(conn->router, conn, CAIRN_ROUTER_EVENT_WARN,
                       "badlogin: %s: %s", mech, message);
    /* Cyrus waits failedloginpause before the NO; we hold the reply on a
     * timer instead of sleeping, so other connections go on. */
    rc = cairn_csync_write_response(&conn->reply, CAIRN_CSYNC_NO,
                                    CAIRN_CSYNC_CODE_NONE, "%s", message);
    if (rc < 0)
        return rc;
    return cairn_router_conn_hold_reply(conn,
                                        conn->router->failed_login_pause_ms);
}

static bool
is_atom(const char *text)
{
    if (text[0] == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        if (*p <= ' ' || *p >= 0x7f || strchr("(){%*\"\\", *p) != NULL)
            return false;
    return true;
}

static int
cmd_authenticate(struct cairn_router_conn *conn,
                 struct cairn_csync_command *cmd)
{
    enum cairn_router_auth_outcome outcome;
    const char *message = NULL;
    struct cairn_buf challenge;
    int rc;

    if (!is_atom(cmd->args[0]))
        return reply_line(conn, CAIRN_CSYNC_BAD, CAIRN_CSYNC_CODE_NONE,
                          "Invalid mechanism");
    if (conn->auth.authenticated)
        return reply_line(conn, CAIRN_CSYNC_BAD, CAIRN_CSYNC_CODE_NONE,
                          "Already authenticated");
    if (waiting_for_tls(conn)) {
        cairn_router_event(conn->router, conn, CAIRN_ROUTER_EVENT_WARN,
                           "badlogin: AUTHENTICATE before STARTTLS refused "
                           "(require_tls)");
        return reply_line(conn, CAIRN_CSYNC_NO, CAIRN_CSYNC_CODE_NONE,
                          "TLS required: STARTTLS first (require_tls)");
    }
    if (conn->tls_client_refused)
        return reply_line(conn, CAIRN_CSYNC_NO, CAIRN_CSYNC_CODE_NONE,
                          "Client certificate not allowed on this channel");
    cairn_buf_init(&challenge, CAIRN_ROUTER_SASL_LINE_MAX + 1);
    rc = cairn_router_auth_begin(&conn->auth, cmd->args[0],
                                 cmd->argc > 1 ? cmd->args[1] : NULL,
                                 &challenge, &outcome, &message);
    if (rc == 0)
        rc = sasl_outcome(conn, outcome, message, &challenge);
    cairn_buf_release(&challenge);
    return rc;
}

static int
sasl_continue(struct cairn_router_conn *conn, const char *line)
{
    enum cairn_router_auth_outcome outcome;
    const char *message = NULL;
    struct cairn_buf challenge;
    int rc;

    cairn_buf_init(&challenge, CAIRN_ROUTER_SASL_LINE_MAX + 1);
    rc = cairn_router_auth_continue(&conn->auth, line, &challenge, &outcome,
                                    &message);
    if (rc == 0)
        rc = sasl_outcome(conn, outcome, message, &challenge);
    cairn_buf_release(&challenge);
    return rc;
}

/* --- simple commands --------------------------------------------------- */

static int
cmd_compress(struct cairn_router_conn *conn, struct cairn_csync_command *cmd)
{
    char text[128];
    int rc;

    if (waiting_for_tls(conn))
        return reply_line(conn, CAIRN_CSYNC_NO, CAIRN_CSYNC_CODE_NONE,
                          "TLS required: STARTTLS first (require_tls)");
    if (conn->compress != NULL) {
        snprintf(text, sizeof(text), "Compression already active: %s",
                 cmd->args[0]);
        return reply_line(conn, CAIRN_CSYNC_NO, CAIRN_CSYNC_CODE_NONE, text);
    }
    if (strcasecmp(cmd->args[0], "DEFLATE") != 0) {
        snprintf(text, sizeof(text), "Unknown compression algorithm: %s",
                 cmd->args[0]);
        return reply_line(conn, CAIRN_CSYNC_NO, CAIRN_CSYNC_CODE_NONE, text);
    }
    /* The OK goes out uncompressed; everything after it is deflated. */
    snprintf(text, sizeof(text), "%s active", cmd->args[0]);
    if ((rc = reply_line(conn, CAIRN_CSYNC_OK, CAIRN_CSYNC_CODE_NONE, text)) <
        0)
        return rc;
    cairn_router_event(conn->router, conn, CAIRN_ROUTER_EVENT_DEBUG,
                       "COMPRESS DEFLATE active");
    return cairn_router_conn_start_compress(conn);
}

static int
cmd_noop(struct cairn_router_conn *conn, struct cairn_csync_command *cmd)
{
    return reply_line(conn, CAIRN_CSYNC_OK, CAIRN_CSYNC_CODE_NONE,
                      "Noop completed");
}

static int
cmd_restart(struct cairn_router_conn *conn, struct cairn_csync_command *cmd)
{
    /* backupd closes every backup it opened; we forget the current user
     * and the bodies of the batch. */
    conn->current_user[0] = '\0';
    cairn_router_stage_clear(conn->stage);
    return reply_line(conn, CAIRN_CSYNC_OK, CAIRN_CSYNC_CODE_NONE,
                      "Restarting");
}

static int
cmd_exit(struct cairn_router_conn *conn, struct cairn_csync_command *cmd)
{
    conn->closing = true;
    return reply_line(conn, CAIRN_CSYNC_OK, CAIRN_CSYNC_CODE_NONE, "Finished");
}

/* --- GET / APPLY ------------------------------------------------------- */

int
cairn_router_reply_untagged(struct cairn_router_reply *reply,
                            const struct cairn_dlist *item)
{
    if (reply->completed)
        return CAIRN_ESTATE;
    if (reply->conn == NULL)
        return CAIRN_EIO; /* the connection is gone */
    return cairn_csync_write_untagged(&reply->conn->reply, item, NULL);
}

/*
 * The connection closed while a handler held its reply: the reply keeps
 * the stage, whose bodies its request's message borrows, until completed.
 */
void
cairn_router_reply_detach(struct cairn_router_reply *reply)
{
    reply->orphaned_stage = reply->conn->stage;
    reply->conn->stage = NULL;
    reply->conn = NULL;
}

int
cairn_router_reply_complete(struct cairn_router_reply *reply,
                            enum cairn_csync_status status,
                            enum cairn_csync_code code, const char *text)
{
    struct cairn_router_conn *conn = reply->conn;
    int rc = CAIRN_OK;

    if (reply->completed)
        return CAIRN_ESTATE;
    reply->completed = true;
    if (conn != NULL && reply->message != NULL)
        cairn_router_stage_settle(conn->stage, status == CAIRN_CSYNC_OK);
    if (conn != NULL) {
        cairn_router_metric_command(conn->channel->name, conn->command, status,
                                    code);
        rc = cairn_csync_write_response(&conn->reply, status, code, "%s",
                                        text != NULL ? text : "");
        if (rc == 0)
            rc = cairn_router_conn_flush_reply(conn);
    }
    if (!reply->pending)
        return rc;
    /* A deferred answer: free the request, let the session go on. */
    cairn_csync_command_release(&reply->cmd);
    cairn_dlist_free(reply->message);
    cairn_router_stage_free(reply->orphaned_stage);
    free(reply);
    if (conn != NULL) {
        conn->pending_reply = NULL;
        if (rc < 0)
            conn->closing = true;
        rc = cairn_router_conn_hold_reply(conn, 0);
    }
    return rc;
}

/*
 * Hands the request to the handler; message (staged bodies for an APPLY
 * MAILBOX, or NULL) is taken over whatever happens.
 */
static int
forward(struct cairn_router_conn *conn, struct cairn_csync_command *cmd,
        const struct cairn_router_resolution *resolution,
        struct cairn_dlist *message)
{
    struct cairn_router_request request = {
        .channel = conn->channel->name,
        .peer = conn->peer,
        .verb = cmd->verb,
        .resolution = resolution,
        .value = cmd->value,
        .message = message,
    };
    struct cairn_router *router = conn->router;
    struct cairn_router_reply *reply;
    int rc;

    snprintf(conn->current_user, sizeof(conn->current_user), "%s",
             resolution->owner.userid);
    if (message != NULL)
        cairn_router_event(router, conn, CAIRN_ROUTER_EVENT_DEBUG,
                           "%s %s user=%s with %zu staged bodies",
                           cairn_csync_verb_name(cmd->verb), resolution->key,
                           resolution->owner.userid,
                           cairn_dlist_count(message));
    else
        cairn_router_event(router, conn, CAIRN_ROUTER_EVENT_DEBUG,
                           "%s %s user=%s", cairn_csync_verb_name(cmd->verb),
                           resolution->key, resolution->owner.userid);
    if (router->request_fn == NULL) {
        cairn_dlist_free(message);
        return reply_line(conn, CAIRN_CSYNC_NO, CAIRN_CSYNC_CODE_NONE,
                          NOT_FORWARDED);
    }
    if ((reply = calloc(1, sizeof(*reply))) == NULL) {
        cairn_dlist_free(message);
        return CAIRN_ENOMEM;
    }
    reply->conn = conn;
    reply->message = message;
    rc = router->request_fn(router->request_arg, &request, reply);
    if (!reply->completed && rc == CAIRN_EAGAIN) {
        /* The handler answers later: the command goes with the reply. */
        reply->pending = true;
        reply->cmd = *cmd;
        memset(cmd, 0, sizeof(*cmd));
        conn->pending_reply = reply;
        return CAIRN_OK;
    }
    if (!reply->completed) {
        /* Drop any half-written items; backupd's catch-all answer. */
        cairn_buf_reset(&conn->reply);
        cairn_router_reply_complete(reply, CAIRN_CSYNC_NO,
                                    CAIRN_CSYNC_CODE_NONE, "Unknown error");
    }
    cairn_dlist_free(reply->message);
    free(reply);
    return rc < 0 && rc != CAIRN_ENOMEM ? CAIRN_OK : rc;
}

/*
 * APPLY MESSAGE: the bodies wait in the stage for the APPLY MAILBOX whose
 * records name them (stage.c), so each reaches only its own user's
 * backup. OK now is what backupd and sync_server answer too: nothing is
 * durable before the MAILBOX, whose OK waits for the nodes.
 */
static int
stage_message(struct cairn_router_conn *conn, struct cairn_csync_command *cmd)
{
    size_t added = 0;
    int rc = cairn_router_stage_add(conn->stage, cmd, &added);

    if (rc < 0)
        return rc;
    cairn_router_event(conn->router, conn, CAIRN_ROUTER_EVENT_DEBUG,
                       "APPLY MESSAGE user=%s: %zu bodies staged (%zu kept)",
                       conn->current_user, added,
                       cairn_router_stage_body_count(conn->stage));
    return reply_line(conn, CAIRN_CSYNC_OK, CAIRN_CSYNC_CODE_NONE, "Success");
}

/* A resolved APPLY or GET for one user: stage, collect, forward. */
static int
user_request(struct cairn_router_conn *conn, struct cairn_csync_command *cmd,
             const struct cairn_router_resolution *resolution)
{
    struct cairn_dlist *message = NULL;
    size_t count = 0;
    int rc;

    if (cmd->verb != CAIRN_CSYNC_APPLY)
        return forward(conn, cmd, resolution, NULL);
    if (strcmp(resolution->key, "MESSAGE") == 0)
        return stage_message(conn, cmd);
    /* A RESERVE starts sync_client's next batch, which uploads again
     * whatever it still needs. */
    if (strcmp(resolution->key, "RESERVE") == 0)
        cairn_router_stage_clear(conn->stage);
    if (strcmp(resolution->key, "MAILBOX") == 0 &&
        (rc = cairn_router_stage_collect(conn->stage, cmd->value, &message,
                                         &count)) < 0)
        return rc;
    return forward(conn, cmd, resolution, message);
}

/*
 * backupd's checks on APPLY MESSAGE: at least one file literal (NIL
 * entries, sent for unreadable spool files, are skipped) and every body's
 * SHA-1 equal to its GUID; otherwise the whole command is a protocol error.
 */
static bool
message_files_valid(const struct cairn_router_conn *conn,
                    const struct cairn_dlist *value)
{
    size_t files = 0;

    for (const struct cairn_dlist *item = cairn_dlist_first(value);
         item != NULL; item = cairn_dlist_next(item)) {
        void *handle = NULL;

        if (!cairn_dlist_file_info(item, NULL, NULL, NULL, &handle))
            continue;
        files++;
        if (conn->router->spool != NULL &&
            !cairn_router_spool_file_verified(handle))
            return false;
    }
    return files > 0;
}

static int
cmd_request(struct cairn_router_conn *conn, struct cairn_csync_command *cmd)
{
    struct cairn_router_resolution resolution;
    int rc;

    rc = cairn_router_resolve(cmd->verb, cmd->value, &conn->router->names,
                              conn->current_user, &resolution);
    if (rc < 0)
        return rc;
    if (resolution.action == CAIRN_ROUTER_FORWARD &&
        resolution.rule == CAIRN_ROUTER_USER_CURRENT &&
        !message_files_valid(conn, cmd->value))
        resolution.action = CAIRN_ROUTER_PROTOCOL_ERROR;
    switch (resolution.action) {
    case CAIRN_ROUTER_FORWARD:
        return user_request(conn, cmd, &resolution);
    case CAIRN_ROUTER_IGNORE:
        return reply_line(conn, CAIRN_CSYNC_OK, CAIRN_CSYNC_CODE_NONE,
                          "Success");
    case CAIRN_ROUTER_PROTOCOL_ERROR:
        return reply_line(conn, CAIRN_CSYNC_NO, CAIRN_CSYNC_CODE_PROTOCOL_ERROR,
                          "Protocol error");
    case CAIRN_ROUTER_BAD_PARAMETERS:
        break;
    }
    cairn_router_event(conn->router, conn, CAIRN_ROUTER_EVENT_INFO,
                       "%s %s refused: names several users or an unsafe name",
                       cairn_csync_verb_name(cmd->verb), resolution.key);
    return reply_line(conn, CAIRN_CSYNC_NO,
                      CAIRN_CSYNC_CODE_PROTOCOL_BAD_PARAMETERS,
                      "Bad parameters");
}

/* --- dispatch ---------------------------------------------------------- */

static const struct session_command session_commands[] = {
    {CAIRN_CSYNC_AUTHENTICATE, "Authenticate", 1, 2, PRE_AUTH,
     cmd_authenticate},
    {CAIRN_CSYNC_COMPRESS, "Compress", 1, 1, PRE_AUTH, cmd_compress},
    {CAIRN_CSYNC_STARTTLS, "Starttls", 0, 0, PRE_AUTH, cmd_starttls},
    {CAIRN_CSYNC_NOOP, "Noop", 0, 0, PRE_AUTH, cmd_noop},
    {CAIRN_CSYNC_RESTART, "Restart", 0, 0, PRE_AUTH, cmd_restart},
    {CAIRN_CSYNC_EXIT, "Exit", 0, 0, PRE_AUTH, cmd_exit},
    {CAIRN_CSYNC_GET, "Get", 0, 0, DLIST, cmd_request},
    {CAIRN_CSYNC_APPLY, "Apply", 0, 0, DLIST, cmd_request},
};

static const struct session_command *
find_command(const struct cairn_router_conn *conn, enum cairn_csync_verb verb)
{
    for (size_t i = 0;
         i < sizeof(session_commands) / sizeof(session_commands[0]); i++) {
        const struct session_command *entry = &session_commands[i];

        if (entry->verb != verb)
            continue;
        /* Without compression on offer, COMPRESS is not a command here. */
        if (verb == CAIRN_CSYNC_COMPRESS && !conn->channel->compress)
            return NULL;
        /* Without TLS (or with it on already), STARTTLS is unknown, as
         * in sync_server. */
        if (verb == CAIRN_CSYNC_STARTTLS && !starttls_offered(conn))
            return NULL;
        return entry;
    }
    return NULL;
}

/*
 * sync_client's IMAP probe (sync_try_imap) sends "C01 CAPABILITY" and waits
 * 10 s for a "C01 " reply; closing at once makes it fall back to csync.
 */
static bool
is_imap_probe(const struct cairn_csync_command *cmd)
{
    return cmd->verb == CAIRN_CSYNC_UNKNOWN && cmd->word != NULL &&
           strcasecmp(cmd->word, "C01") == 0 && cmd->argc >= 1 &&
           strcasecmp(cmd->args[0], "CAPABILITY") == 0;
}

static int
dispatch(struct cairn_router_conn *conn, struct cairn_csync_command *cmd)
{
    const struct session_command *entry;
    const char *key;
    char text[160];

    if (conn->in_sasl && cmd->verb == CAIRN_CSYNC_LINE)
        return sasl_continue(conn, cmd->args[0]);
    /* what the answer is counted as (router_metrics.c): "APPLY MESSAGE" */
    key = cmd->value != NULL ? cairn_dlist_name(cmd->value) : NULL;
    snprintf(conn->command, sizeof(conn->command), "%s%s%s",
             cairn_csync_verb_name(cmd->verb), key != NULL ? " " : "",
             key != NULL ? key : "");
    if (is_imap_probe(cmd)) {
        cairn_router_event(conn->router, conn, CAIRN_ROUTER_EVENT_DEBUG,
                           "IMAP probe: closing so sync_client uses csync");
        conn->closing = true;
        return CAIRN_OK;
    }
    if (cmd->word == NULL || cmd->word[0] == '\0')
        return reply_line(conn, CAIRN_CSYNC_BAD, CAIRN_CSYNC_CODE_NONE,
                          "Null command");
    entry = find_command(conn, cmd->verb);
    /* backupd checks the login before the name for words in A and G. */
    if (entry == NULL && !conn->auth.authenticated &&
        strchr("AaGg", cmd->word[0]) != NULL)
        return reply_line(conn, CAIRN_CSYNC_NO, CAIRN_CSYNC_CODE_NONE,
                          "Please authenticate first");
    if (entry == NULL)
        return reply_line(conn, CAIRN_CSYNC_BAD, CAIRN_CSYNC_CODE_NONE,
                          "IMAP_PROTOCOL_ERROR Unrecognized command");
    if (!(entry->flags & PRE_AUTH) && !conn->auth.authenticated)
        return reply_line(conn, CAIRN_CSYNC_NO, CAIRN_CSYNC_CODE_NONE,
                          "Please authenticate first");
    if (cmd->value == NULL &&
        cmd->argc < entry->min_args + DLIST_ARGUMENT(entry)) {
        snprintf(text, sizeof(text), "Missing required argument to %s",
                 entry->name);
        return reply_line(conn, CAIRN_CSYNC_BAD, CAIRN_CSYNC_CODE_NONE, text);
    }
    if (cmd->value == NULL && cmd->argc > entry->max_args) {
        snprintf(text, sizeof(text), "Unexpected extra arguments to %s",
                 entry->name);
        return reply_line(conn, CAIRN_CSYNC_BAD, CAIRN_CSYNC_CODE_NONE, text);
    }
    return entry->handler(conn, cmd);
}

/* A command the reader could not parse: BAD, and close if it was too big. */
static int
malformed(struct cairn_router_conn *conn, int rc)
{
    char text[256];

    /* The reader words its errors as backupd does ("Missing required
     * argument to Get", "Unexpected extra arguments to Apply"). */
    snprintf(text, sizeof(text), "%s", cairn_csync_reader_error(conn->reader));
    cairn_router_event(conn->router, conn, CAIRN_ROUTER_EVENT_WARN,
                       "malformed command: %s", text);
    conn->in_sasl = false;
    /* A full spool is temporary: a NO that sync_client retries later. */
    if (rc == CAIRN_ENOSPACE)
        return reply_line(conn, CAIRN_CSYNC_NO, CAIRN_CSYNC_CODE_MAILBOX_LOCKED,
                          "message spool full, try again later");
    if (rc == CAIRN_ETOOBIG || rc == CAIRN_EOVERFLOW || rc == CAIRN_ENOMEM)
        return reply_and_close(conn, text);
    return reply_line(conn, CAIRN_CSYNC_BAD, CAIRN_CSYNC_CODE_NONE, text);
}

int
cairn_router_session_process(struct cairn_router_conn *conn)
{
    int rc = CAIRN_OK;

    while (conn->input.len > 0 && !conn->closing && conn->hold_timer == 0 &&
           conn->pending_reply == NULL &&
           !cairn_router_conn_output_full(conn)) {
        struct cairn_csync_command cmd;
        size_t consumed = 0;
        bool was_compressed = conn->compress != NULL;
        bool had_tls = conn->tls != NULL;

        memset(&cmd, 0, sizeof(cmd));
        rc = cairn_csync_reader_feed(conn->reader, conn->input.data,
                                     conn->input.len, &consumed, &cmd);
        cairn_buf_consume(&conn->input, consumed);
        if (rc == CAIRN_EAGAIN) {
            rc = CAIRN_OK;
            break;
        }
        if (rc < 0)
            rc = malformed(conn, rc);
        else
            rc = dispatch(conn, &cmd);
        cairn_csync_command_release(&cmd);
        if (rc < 0)
            break;
        /* After COMPRESS the rest of input moved to the inflater; after
         * STARTTLS it was dropped and the handshake comes first. */
        if ((!was_compressed && conn->compress != NULL) ||
            (!had_tls && conn->tls != NULL))
            break;
    }
    return rc;
}
