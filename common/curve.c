/*
 * curve.c - CURVE keys, the process's CURVE setup and the ZAP handler
 * (curve.h).
 */
#include "curve.h"

#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_DOMAIN "cairn"
#define MAX_LOGGED 256 /* refused keys remembered, so each is logged once */

struct known_key {
    char public_key[CAIRN_CURVE_KEY_TEXT];
    enum cairn_curve_role role;
};

struct server_key {
    char *endpoint;
    char public_key[CAIRN_CURVE_KEY_TEXT];
};

/* The process-wide setup (curve.h: set from main, read-only after). */
static struct {
    bool enabled;
    char broken[512]; /* set up failed: why every client connect fails */
    char self_public[CAIRN_CURVE_KEY_TEXT];
    char self_secret[CAIRN_CURVE_KEY_TEXT];
    struct known_key *keys;
    size_t key_count;
    struct server_key *servers;
    size_t server_count;
    cairn_curve_event_fn event_fn;
    void *event_arg;
    char logged[MAX_LOGGED][CAIRN_CURVE_KEY_TEXT];
    size_t logged_count;
} setup;

struct cairn_zap {
    struct cairn_loop *loop;
    void *context;
    void *handler; /* REP at ZAP_ENDPOINT */
    struct zap_watch *watches;
};

struct zap_watch {
    struct zap_watch *next;
    struct cairn_zap *zap;
    void *monitor; /* PAIR of the socket's monitor */
    char *name;
    unsigned long failures;
};

static int say(char *error, size_t size, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
say(char *error, size_t size, int rc, const char *fmt, ...)
{
    va_list ap;

    if (error != NULL && size > 0) {
        va_start(ap, fmt);
        vsnprintf(error, size, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static void report(enum cairn_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
report(enum cairn_log_level level, const char *fmt, ...)
{
    char message[512];
    va_list ap;

    if (setup.event_fn == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    setup.event_fn(setup.event_arg, level, message);
}

const char *
cairn_curve_role_name(enum cairn_curve_role role)
{
    static const char *const names[] = {"none", "writer", "admin", "peer",
                                        "unknown"};

    return role <= CAIRN_CURVE_ROLE_UNKNOWN ? names[role] : "unknown";
}

static bool
key_name_valid(const char *name)
{
    size_t len = strlen(name);

    return len > 0 && len <= 64 && name[0] != '.' &&
           strspn(name, "abcdefghijklmnopqrstuvwxyz"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == len;
}

/* Writes text and a newline to a new file path (O_EXCL) with mode. */
static int
write_new(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    int rc = CAIRN_OK;

    if (fd < 0)
        return errno == EEXIST ? CAIRN_EEXIST : CAIRN_EIO;
    if (fchmod(fd, mode) != 0 || cairn_write_all(fd, text, strlen(text)) < 0 ||
        cairn_write_all(fd, "\n", 1) < 0 || fsync(fd) != 0)
        rc = CAIRN_EIO;
    close(fd);
    return rc;
}

/* mkdir -p dir (0700 for what it makes). */
static int
make_dirs(const char *dir)
{
    char path[4096];
    size_t len = strlen(dir);

    if (len == 0 || len >= sizeof(path))
        return -1;
    memcpy(path, dir, len + 1);
    for (char *at = path + 1; *at != '\0'; at++) {
        if (*at != '/')
            continue;
        *at = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return -1;
        *at = '/';
    }
    return mkdir(path, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

int
cairn_curve_key_create(const char *dir, const char *name,
                       char public_key[CAIRN_CURVE_KEY_TEXT], char *error,
                       size_t error_size)
{
    char public_text[CAIRN_CURVE_KEY_TEXT], secret_text[CAIRN_CURVE_KEY_TEXT];
    char *secret_path = NULL, *public_path = NULL, *temporary = NULL;
    int rc;

    if (!key_name_valid(name))
        return say(error, error_size, CAIRN_EINVAL,
                   "'%s' is not a valid key name (letters, digits, '.', '_', "
                   "'-')",
                   name);
    if (make_dirs(dir) != 0)
        return say(error, error_size, CAIRN_EIO, "cannot create %s: %s", dir,
                   strerror(errno));
    if (zmq_curve_keypair(public_text, secret_text) != 0)
        return say(error, error_size, CAIRN_ENOTSUP,
                   "libzmq cannot make CURVE keys: %s", zmq_strerror(errno));
    if (asprintf(&secret_path, "%s/%s.secret", dir, name) < 0 ||
        asprintf(&public_path, "%s/%s.public", dir, name) < 0 ||
        asprintf(&temporary, "%s/.%s.secret.%ld", dir, name, (long)getpid()) <
            0) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    /* Written aside, then linked into place: two programs making the same
     * key at once leave one whole key, never a mix. */
    unlink(temporary);
    if ((rc = write_new(temporary, secret_text, 0600)) < 0) {
        rc = say(error, error_size, rc, "cannot write %s: %s", temporary,
                 strerror(errno));
        goto out;
    }
    if (link(temporary, secret_path) != 0) {
        rc = errno == EEXIST ? CAIRN_EEXIST : CAIRN_EIO;
        rc = say(error, error_size, rc, "%s: %s", secret_path,
                 rc == CAIRN_EEXIST ? "exists already (not overwritten)"
                                    : strerror(errno));
        goto out;
    }
    unlink(public_path);
    if ((rc = write_new(public_path, public_text, 0644)) < 0 &&
        rc != CAIRN_EEXIST) {
        rc = say(error, error_size, rc, "cannot write %s: %s", public_path,
                 strerror(errno));
        goto out;
    }
    rc = CAIRN_OK;
    if (public_key != NULL)
        memcpy(public_key, public_text, CAIRN_CURVE_KEY_TEXT);
out:
    if (temporary != NULL)
        unlink(temporary);
    explicit_bzero(secret_text, sizeof(secret_text));
    free(temporary);
    free(secret_path);
    free(public_path);
    return rc;
}

/* Reads the one Z85 line of path into key. */
static int
read_key(const char *path, char key[CAIRN_CURVE_KEY_TEXT], char *error,
         size_t error_size)
{
    char line[128];
    FILE *file = fopen(path, "r");
    size_t len;

    if (file == NULL)
        return say(error, error_size,
                   errno == ENOENT ? CAIRN_ENOENT : CAIRN_EIO,
                   "cannot read %s: %s", path, strerror(errno));
    if (fgets(line, sizeof(line), file) == NULL)
        line[0] = '\0';
    fclose(file);
    len = strcspn(line, "\r\n");
    line[len] = '\0';
    if (len != CAIRN_CURVE_KEY_TEXT - 1) {
        explicit_bzero(line, sizeof(line));
        return say(error, error_size, CAIRN_EPARSE,
                   "%s: not a CURVE key (one line of 40 Z85 characters)", path);
    }
    memcpy(key, line, CAIRN_CURVE_KEY_TEXT);
    explicit_bzero(line, sizeof(line));
    return CAIRN_OK;
}

int
cairn_curve_key_load(const char *dir, const char *name,
                     char public_key[CAIRN_CURVE_KEY_TEXT],
                     char secret_key[CAIRN_CURVE_KEY_TEXT], char *error,
                     size_t error_size)
{
    char *public_path = NULL, *secret_path = NULL;
    char secret[CAIRN_CURVE_KEY_TEXT];
    int rc;

    if (!key_name_valid(name))
        return say(error, error_size, CAIRN_EINVAL,
                   "'%s' is not a valid key name", name);
    if (asprintf(&public_path, "%s/%s.public", dir, name) < 0 ||
        asprintf(&secret_path, "%s/%s.secret", dir, name) < 0) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    if (secret_key != NULL) {
        if ((rc = read_key(secret_path, secret_key, error, error_size)) < 0)
            goto out;
        if (zmq_curve_public(public_key, secret_key) != 0)
            rc = say(error, error_size, CAIRN_EPARSE, "%s: not a CURVE key",
                     secret_path);
        goto out;
    }
    rc = read_key(public_path, public_key, error, error_size);
    if (rc == CAIRN_ENOENT &&
        read_key(secret_path, secret, NULL, 0) == CAIRN_OK &&
        zmq_curve_public(public_key, secret) == 0)
        rc = CAIRN_OK; /* the public half is written just after */
out:
    explicit_bzero(secret, sizeof(secret));
    free(public_path);
    free(secret_path);
    return rc;
}

/* --- the process's setup ------------------------------------------------- */

void
cairn_curve_reset(void)
{
    for (size_t i = 0; i < setup.server_count; i++)
        free(setup.servers[i].endpoint);
    free(setup.servers);
    free(setup.keys);
    explicit_bzero(setup.self_secret, sizeof(setup.self_secret));
    setup.servers = NULL;
    setup.keys = NULL;
    setup.server_count = setup.key_count = setup.logged_count = 0;
    setup.enabled = false;
    setup.broken[0] = '\0';
}

void
cairn_curve_fail(const char *reason)
{
    cairn_curve_reset();
    snprintf(setup.broken, sizeof(setup.broken), "%s",
             reason[0] ? reason : "not set up");
}

bool
cairn_curve_enabled(void)
{
    return setup.enabled;
}

const char *
cairn_curve_self_public(void)
{
    return setup.enabled ? setup.self_public : NULL;
}

int
cairn_curve_add_server(const char *endpoint, const char *public_key)
{
    struct server_key *grown;

    for (size_t i = 0; i < setup.server_count; i++)
        if (strcmp(setup.servers[i].endpoint, endpoint) == 0) {
            snprintf(setup.servers[i].public_key, CAIRN_CURVE_KEY_TEXT, "%s",
                     public_key);
            return CAIRN_OK;
        }
    grown = realloc(setup.servers, (setup.server_count + 1) * sizeof(*grown));
    if (grown == NULL)
        return CAIRN_ENOMEM;
    setup.servers = grown;
    if ((grown[setup.server_count].endpoint = strdup(endpoint)) == NULL)
        return CAIRN_ENOMEM;
    snprintf(grown[setup.server_count].public_key, CAIRN_CURVE_KEY_TEXT, "%s",
             public_key);
    setup.server_count++;
    return CAIRN_OK;
}

/* Loads name's public key (making the pair first when allowed). */
static int
load_public(const char *dir, const char *name, bool create_missing,
            char key[CAIRN_CURVE_KEY_TEXT], char *error, size_t error_size)
{
    int rc = cairn_curve_key_load(dir, name, key, NULL, error, error_size);

    if (rc == CAIRN_ENOENT && create_missing) {
        rc = cairn_curve_key_create(dir, name, key, error, error_size);
        if (rc == CAIRN_EEXIST) /* made by another program just now */
            rc = cairn_curve_key_load(dir, name, key, NULL, error, error_size);
    }
    if (rc == CAIRN_ENOENT)
        snprintf(error + strlen(error), error_size - strlen(error),
                 " (make it with: cairnctl keys create %s)", name);
    return rc;
}

static int
add_role(const char *dir, const struct cairn_config_list *names,
         enum cairn_curve_role role, bool create_missing, char *error,
         size_t error_size)
{
    for (size_t i = 0; i < names->count; i++) {
        struct known_key *grown;
        char key[CAIRN_CURVE_KEY_TEXT];
        int rc = load_public(dir, names->items[i], create_missing, key, error,
                             error_size);

        if (rc < 0)
            return rc;
        grown = realloc(setup.keys, (setup.key_count + 1) * sizeof(*grown));
        if (grown == NULL)
            return CAIRN_ENOMEM;
        setup.keys = grown;
        memcpy(grown[setup.key_count].public_key, key, sizeof(key));
        grown[setup.key_count].role = role;
        setup.key_count++;
    }
    return CAIRN_OK;
}

static int
load_roles(const struct cairn_config *config, const char *dir,
           bool create_missing, char *error, size_t error_size)
{
    const struct cairn_config_security *security =
        cairn_config_security(config);
    struct cairn_config_list nodes = {0, NULL};
    int rc;

    if ((rc = add_role(dir, &security->writer_keys, CAIRN_CURVE_ROLE_WRITER,
                       create_missing, error, error_size)) < 0 ||
        (rc = add_role(dir, &security->admin_keys, CAIRN_CURVE_ROLE_ADMIN,
                       create_missing, error, error_size)) < 0)
        return rc;
    if (security->peer_keys.count > 0)
        return add_role(dir, &security->peer_keys, CAIRN_CURVE_ROLE_PEER,
                        create_missing, error, error_size);
    nodes.count = cairn_config_node_count(config);
    if ((nodes.items = calloc(nodes.count + 1, sizeof(char *))) == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < nodes.count; i++)
        nodes.items[i] = cairn_config_node_at(config, i)->curve_key;
    rc = add_role(dir, &nodes, CAIRN_CURVE_ROLE_PEER, create_missing, error,
                  error_size);
    free(nodes.items);
    return rc;
}

static int
load_servers(const struct cairn_config *config, const char *dir,
             bool create_missing, char *error, size_t error_size)
{
    const struct cairn_config_router *router = cairn_config_router(config);
    char key[CAIRN_CURVE_KEY_TEXT];
    int rc;

    for (size_t i = 0; i < cairn_config_node_count(config); i++) {
        const struct cairn_config_node *node = cairn_config_node_at(config, i);

        if ((rc = load_public(dir, node->curve_key, create_missing, key, error,
                              error_size)) < 0 ||
            (rc = cairn_curve_add_server(node->endpoint, key)) < 0)
            return rc;
    }
    if (router->control == NULL)
        return CAIRN_OK;
    if ((rc = load_public(dir, router->curve_key, create_missing, key, error,
                          error_size)) < 0)
        return rc;
    return cairn_curve_add_server(router->control, key);
}

int
cairn_curve_setup(const struct cairn_config *config, const char *self_key,
                  bool create_missing, char *error, size_t error_size)
{
    const struct cairn_config_security *security =
        cairn_config_security(config);
    const char *dir = security->curve_key_dir;
    char public_key[CAIRN_CURVE_KEY_TEXT];
    mode_t mode;
    int rc;

    cairn_curve_reset();
    if (error != NULL && error_size > 0)
        error[0] = '\0';
    if (!security->curve)
        return CAIRN_OK;
    if (!zmq_has("curve"))
        return say(error, error_size, CAIRN_ENOTSUP,
                   "[security] curve = yes but this libzmq has no CURVE");
    if ((rc = load_public(dir, self_key, create_missing, public_key, error,
                          error_size)) < 0 ||
        (rc = cairn_curve_key_load(dir, self_key, setup.self_public,
                                   setup.self_secret, error, error_size)) < 0)
        goto out;
    if ((rc = load_roles(config, dir, create_missing, error, error_size)) < 0 ||
        (rc = load_servers(config, dir, create_missing, error, error_size)) < 0)
        goto out;
    setup.enabled = true;
    {
        char *path = NULL;

        if (asprintf(&path, "%s/%s.secret", dir, self_key) >= 0 &&
            cairn_secret_file_exposed(path, &mode))
            report(CAIRN_LOG_WARN,
                   "%s holds a secret key and its group or others may read "
                   "or write it (mode %04o): chmod 600 it",
                   path, (unsigned)mode);
        free(path);
    }
out:
    if (rc < 0)
        cairn_curve_reset();
    return rc;
}

int
cairn_curve_client(void *socket, const char *endpoint, char *error,
                   size_t error_size)
{
    const char *server = NULL;

    if (setup.broken[0] != '\0')
        return say(error, error_size, CAIRN_EPERM, "CURVE: %s", setup.broken);
    if (!setup.enabled)
        return CAIRN_OK;
    for (size_t i = 0; i < setup.server_count && server == NULL; i++)
        if (strcmp(setup.servers[i].endpoint, endpoint) == 0)
            server = setup.servers[i].public_key;
    if (server == NULL)
        return say(error, error_size, CAIRN_ENOENT,
                   "no CURVE key known for %s (not a node endpoint or the "
                   "router's control in cluster.conf)",
                   endpoint);
    if (zmq_setsockopt(socket, ZMQ_CURVE_SERVERKEY, server, 40) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_PUBLICKEY, setup.self_public, 40) !=
            0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, setup.self_secret, 40) != 0)
        return say(error, error_size, CAIRN_EIO, "CURVE options: %s",
                   zmq_strerror(errno));
    return CAIRN_OK;
}

int
cairn_curve_server(void *socket)
{
    int one = 1;

    if (!setup.enabled)
        return CAIRN_OK;
    if (zmq_setsockopt(socket, ZMQ_CURVE_SERVER, &one, sizeof(one)) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, setup.self_secret, 40) !=
            0 ||
        zmq_setsockopt(socket, ZMQ_ZAP_DOMAIN, ZAP_DOMAIN,
                       strlen(ZAP_DOMAIN)) != 0)
        return CAIRN_EIO;
    return CAIRN_OK;
}

enum cairn_curve_role
cairn_curve_msg_role(void *msg)
{
    const char *user;

    if (!setup.enabled)
        return CAIRN_CURVE_ROLE_NONE;
    if ((user = zmq_msg_gets(msg, "User-Id")) == NULL)
        return CAIRN_CURVE_ROLE_UNKNOWN;
    for (int role = CAIRN_CURVE_ROLE_WRITER; role < CAIRN_CURVE_ROLE_UNKNOWN;
         role++)
        if (strcmp(user, cairn_curve_role_name(role)) == 0)
            return role;
    return CAIRN_CURVE_ROLE_UNKNOWN;
}

void
cairn_curve_set_event_handler(cairn_curve_event_fn fn, void *arg)
{
    setup.event_fn = fn;
    setup.event_arg = arg;
}

/* --- the ZAP handler ------------------------------------------------------ */

static enum cairn_curve_role
role_of(const char *public_key)
{
    for (size_t i = 0; i < setup.key_count; i++)
        if (strcmp(setup.keys[i].public_key, public_key) == 0)
            return setup.keys[i].role;
    return CAIRN_CURVE_ROLE_UNKNOWN;
}

/* True the first time key is refused (it is then logged). */
static bool
first_refusal(const char *key)
{
    for (size_t i = 0; i < setup.logged_count; i++)
        if (strcmp(setup.logged[i], key) == 0)
            return false;
    if (setup.logged_count < MAX_LOGGED)
        snprintf(setup.logged[setup.logged_count++], CAIRN_CURVE_KEY_TEXT, "%s",
                 key);
    return true;
}

static void
send_text(void *socket, const char *text, bool more)
{
    zmq_send(socket, text, strlen(text), more ? ZMQ_SNDMORE : 0);
}

/* One ZAP request: version, id, domain, address, identity, mechanism,
 * credentials (the 32-byte client key). */
static void
answer_zap(struct cairn_zap *zap)
{
    zmq_msg_t parts[8];
    size_t count = 0;
    char key[CAIRN_CURVE_KEY_TEXT] = "", address[64] = "";
    enum cairn_curve_role role = CAIRN_CURVE_ROLE_UNKNOWN;
    bool more = true;

    while (more) {
        zmq_msg_t *part = &parts[count < 8 ? count : 7];

        if (count >= 8)
            zmq_msg_close(part);
        zmq_msg_init(part);
        if (zmq_msg_recv(part, zap->handler, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(part);
            break;
        }
        more = zmq_msg_more(part);
        count++;
    }
    if (count == 0)
        return;
    if (count >= 7 && zmq_msg_size(&parts[5]) == 5 &&
        memcmp(zmq_msg_data(&parts[5]), "CURVE", 5) == 0 &&
        zmq_msg_size(&parts[6]) == 32) {
        zmq_z85_encode(key, zmq_msg_data(&parts[6]), 32);
        role = role_of(key);
        snprintf(address, sizeof(address), "%.*s", (int)zmq_msg_size(&parts[3]),
                 (const char *)zmq_msg_data(&parts[3]));
    }
    send_text(zap->handler, "1.0", true);
    if (count >= 2)
        zmq_send(zap->handler, zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]),
                 ZMQ_SNDMORE);
    else
        send_text(zap->handler, "", true);
    if (role == CAIRN_CURVE_ROLE_UNKNOWN) {
        send_text(zap->handler, "400", true);
        send_text(zap->handler, "unknown key", true);
        send_text(zap->handler, "", true);
        if (first_refusal(key[0] ? key : "(no CURVE key)"))
            report(CAIRN_LOG_WARN,
                   "refused a ZeroMQ peer from %s: key %s is in no role "
                   "([security] writer_keys, admin_keys, peer_keys); "
                   "logged once per key",
                   address[0] ? address : "?", key[0] ? key : "(none)");
    } else {
        send_text(zap->handler, "200", true);
        send_text(zap->handler, "OK", true);
        send_text(zap->handler, cairn_curve_role_name(role), true);
    }
    send_text(zap->handler, "", false);
    for (size_t i = 0; i < count && i < 8; i++)
        zmq_msg_close(&parts[i]);
}

static void
on_zap(struct cairn_loop *loop, void *socket, unsigned events, void *arg)
{
    struct cairn_zap *zap = arg;
    int pending = 0;
    size_t size = sizeof(pending);

    (void)loop;
    (void)socket;
    (void)events;
    while (zmq_getsockopt(zap->handler, ZMQ_EVENTS, &pending, &size) == 0 &&
           (pending & ZMQ_POLLIN))
        answer_zap(zap);
}

int
cairn_zap_new(struct cairn_loop *loop, void *zmq_context,
              struct cairn_zap **out)
{
    struct cairn_zap *zap;
    int linger = 0, rc = CAIRN_EIO;

    *out = NULL;
    if (!setup.enabled)
        return CAIRN_OK;
    if ((zap = calloc(1, sizeof(*zap))) == NULL)
        return CAIRN_ENOMEM;
    zap->loop = loop;
    zap->context = zmq_context;
    if ((zap->handler = zmq_socket(zmq_context, ZMQ_REP)) == NULL)
        goto out;
    zmq_setsockopt(zap->handler, ZMQ_LINGER, &linger, sizeof(linger));
    if (zmq_bind(zap->handler, ZAP_ENDPOINT) != 0)
        goto out;
    rc =
        cairn_loop_add_socket(loop, zap->handler, CAIRN_LOOP_READ, on_zap, zap);
out:
    if (rc < 0) {
        cairn_zap_free(zap);
        return rc;
    }
    *out = zap;
    return CAIRN_OK;
}

static void
on_monitor(struct cairn_loop *loop, void *socket, unsigned events, void *arg)
{
    struct zap_watch *watch = arg;
    int pending = 0;
    size_t size = sizeof(pending);

    (void)loop;
    (void)socket;
    (void)events;
    while (zmq_getsockopt(watch->monitor, ZMQ_EVENTS, &pending, &size) == 0 &&
           (pending & ZMQ_POLLIN)) {
        zmq_msg_t frame;
        uint16_t event = 0;
        bool more;

        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, watch->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&frame);
            break;
        }
        if (zmq_msg_size(&frame) >= 2)
            memcpy(&event, zmq_msg_data(&frame), sizeof(event));
        more = zmq_msg_more(&frame);
        zmq_msg_close(&frame);
        while (more) { /* the endpoint frame */
            zmq_msg_init(&frame);
            if (zmq_msg_recv(&frame, watch->monitor, 0) < 0)
                more = false;
            else
                more = zmq_msg_more(&frame);
            zmq_msg_close(&frame);
        }
        if (event != ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
            event != ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
            continue;
        if (watch->failures++ % 1000 == 0)
            report(CAIRN_LOG_WARN,
                   "%s: a ZeroMQ peer failed the CURVE handshake (no key or "
                   "not speaking CURVE); nothing was read from it (%lu so "
                   "far)",
                   watch->name, watch->failures);
    }
}

int
cairn_zap_watch(struct cairn_zap *zap, void *socket, const char *name)
{
    struct zap_watch *watch;
    char inproc[64];
    int linger = 0;
    static unsigned serial;

    if (zap == NULL)
        return CAIRN_OK;
    if ((watch = calloc(1, sizeof(*watch))) == NULL)
        return CAIRN_ENOMEM;
    watch->zap = zap;
    watch->next = zap->watches;
    zap->watches = watch;
    if ((watch->name = strdup(name)) == NULL)
        return CAIRN_ENOMEM;
    snprintf(inproc, sizeof(inproc), "inproc://cairn-zap-watch-%u-%p", serial++,
             (void *)watch);
    if (zmq_socket_monitor(socket, inproc,
                           ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) != 0 ||
        (watch->monitor = zmq_socket(zap->context, ZMQ_PAIR)) == NULL)
        return CAIRN_EIO;
    zmq_setsockopt(watch->monitor, ZMQ_LINGER, &linger, sizeof(linger));
    if (zmq_connect(watch->monitor, inproc) != 0)
        return CAIRN_EIO;
    return cairn_loop_add_socket(zap->loop, watch->monitor, CAIRN_LOOP_READ,
                                 on_monitor, watch);
}

void
cairn_zap_free(struct cairn_zap *zap)
{
    struct zap_watch *watch, *next;

    if (zap == NULL)
        return;
    for (watch = zap->watches; watch != NULL; watch = next) {
        next = watch->next;
        if (watch->monitor != NULL) {
            cairn_loop_remove_socket(zap->loop, watch->monitor);
            zmq_close(watch->monitor);
        }
        free(watch->name);
        free(watch);
    }
    if (zap->handler != NULL) {
        cairn_loop_remove_socket(zap->loop, zap->handler);
        zmq_close(zap->handler);
    }
    free(zap);
}
