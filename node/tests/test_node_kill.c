/*
 * test_node_kill.c - SIGKILL the cairn-node daemon at random moments while
 * it ingests APPLY MESSAGE / APPLY MAILBOX streams for several users
 * through the node client, restart it on the same data dir each time and
 * resend what was not acknowledged; at the end every acknowledged update
 * must be in the store (has_message / GET MAILBOXES) and every user must
 * pass cairn_store_verify(FULL).
 *
 * usage: test_node_kill CAIRN_NODE [KILLS]   (CAIRN_KILL_SEED: the seed)
 */
#include "check.h"
#include "daemon_test_util.h"

#include <openssl/evp.h>
#include <zlib.h>

#define USERS 4
#define MAX_UPDATES 20000 /* per user; each is a MESSAGE or a MAILBOX */
#define WINDOW 8          /* requests kept in flight per user */

struct update {
    struct update *next_in_flight;
    unsigned user;
    unsigned index; /* 1-based; odd: MESSAGE k, even: MAILBOX k */
    char *dlist;
    char *body;
    size_t body_len;
    struct cairn_node_body wire_body;
};

struct driver {
    bool acked[USERS][MAX_UPDATES + 1];
    unsigned next[USERS]; /* next update to send */
    unsigned in_flight[USERS];
    struct update *flying;
    struct cairn_node_client *client;
    unsigned long acks, sends, errors;
};

static unsigned long long
mix(unsigned long long x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

/* The body of message k of user u: deterministic, 200 B to 64 KiB. */
static char *
make_body(unsigned user, unsigned k, size_t *len)
{
    size_t size = 200 + mix(user * 1000003ULL + k) % 65000;
    char *body = malloc(size + 1);
    int head;

    if (body == NULL)
        return NULL;
    head = snprintf(body, size, "Subject: kill test %u/%u\r\n\r\n", user, k);
    for (size_t i = (size_t)head; i < size; i++)
        body[i] = (char)('a' + mix(i * 31 + k * 7 + user) % 26);
    *len = size;
    return body;
}

static void
sha1_hex(const void *data, size_t len, char hex[41])
{
    unsigned char sha1[EVP_MAX_MD_SIZE];
    unsigned int sha1_len = 0;

    EVP_Digest(data, len, sha1, &sha1_len, EVP_sha1(), NULL);
    for (unsigned i = 0; i < 20; i++)
        snprintf(hex + 2 * i, 3, "%02x", sha1[i]);
}

/* The GUID and size of message k (for the MAILBOX that holds it). */
static void
message_guid(unsigned user, unsigned k, char guid[41], size_t *len)
{
    char *body = make_body(user, k, len);

    sha1_hex(body, *len, guid);
    free(body);
}

static struct update *
make_update(unsigned user, unsigned index)
{
    struct update *update = calloc(1, sizeof(*update));
    unsigned k = (index + 1) / 2;
    char guid[41];
    size_t len = 0;
    int rc;

    if (update == NULL)
        return NULL;
    update->user = user;
    update->index = index;
    if (index % 2 == 1) {
        update->body = make_body(user, k, &update->body_len);
        sha1_hex(update->body, update->body_len, guid);
        rc = asprintf(&update->dlist, "MESSAGE (%%{default %s %zu}\r\n)", guid,
                      update->body_len);
        update->wire_body.fd = -1;
        update->wire_body.data = update->body;
        update->wire_body.size = update->body_len;
    } else {
        message_guid(user, k, guid, &len);
        rc = asprintf(
            &update->dlist,
            "MAILBOX %%(UNIQUEID kill%uf%u MBOXNAME user.kill%u.f%u "
            "SYNC_CRC 0 SYNC_CRC_ANNOT 0 LAST_UID 1 HIGHESTMODSEQ 2 "
            "RECENTUID 0 RECENTTIME 0 LAST_APPENDDATE 0 POP3_LAST_LOGIN 0 "
            "POP3_SHOW_AFTER 0 UIDVALIDITY 1 PARTITION default ACL \"\" "
            "OPTIONS P QUOTAROOT user.kill%u CREATEDMODSEQ 1 FOLDERMODSEQ 1 "
            "RECORD (%%(UID 1 MODSEQ 2 LAST_UPDATED 1 FLAGS () INTERNALDATE "
            "1 SIZE %zu GUID %s)))",
            user, k, user, k, user, len, guid);
    }
    if (rc < 0) {
        free(update->body);
        free(update);
        return NULL;
    }
    return update;
}

static void
update_free(struct update *update)
{
    free(update->dlist);
    free(update->body);
    free(update);
}

/* The one driver of the process (replies reach it through this). */
static struct driver *kill_driver;

static void drive_user(struct driver *driver, unsigned user);

static int
count_item(void *ctx, const struct cairn_dlist *item)
{
    (void)item;
    (*(size_t *)ctx)++;
    return 0;
}

static void
forget(struct driver *driver, struct update *update)
{
    for (struct update **at = &driver->flying; *at; at = &(*at)->next_in_flight)
        if (*at == update) {
            *at = update->next_in_flight;
            break;
        }
}

static void
on_reply(void *arg, const struct cairn_node_reply *reply)
{
    struct update *update = arg;
    struct driver *driver = kill_driver;

    forget(driver, update);
    driver->in_flight[update->user]--;
    if (reply->status == 0) {
        driver->acked[update->user][update->index] = true;
        driver->acks++;
    } else {
        driver->errors++;
        if (driver->errors < 5)
            fprintf(stderr, "update %u/%u: %s (%s)\n", update->user,
                    update->index, cairn_strerror(reply->status),
                    reply->envelope ? reply->envelope->error_text : "-");
        /* sent again later, from the first one not acknowledged */
        if (driver->next[update->user] > update->index)
            driver->next[update->user] = update->index;
    }
    drive_user(driver, update->user);
    update_free(update);
}

static void
drive_user(struct driver *driver, unsigned user)
{
    char name[32];

    snprintf(name, sizeof(name), "kill%u", user);
    while (driver->in_flight[user] < WINDOW &&
           driver->next[user] <= MAX_UPDATES) {
        unsigned index = driver->next[user];
        struct update *update;
        struct cairn_node_frame frame;
        struct cairn_node_request request = {0};

        if (driver->acked[user][index]) {
            driver->next[user]++;
            continue;
        }
        if ((update = make_update(user, index)) == NULL)
            return;
        frame.data = update->dlist;
        frame.len = strlen(update->dlist);
        request.kind = CAIRN__KIND__APPLY;
        request.user = name;
        request.verb = "APPLY";
        request.key = index % 2 ? "MESSAGE" : "MAILBOX";
        request.sequence = index;
        request.frames = &frame;
        request.frame_count = 1;
        request.bodies = update->body ? &update->wire_body : NULL;
        request.body_count = update->body ? 1 : 0;
        if (cairn_node_client_send(driver->client, 0, &request, on_reply,
                                   update, NULL) < 0) {
            update_free(update);
            return;
        }
        update->next_in_flight = driver->flying;
        driver->flying = update;
        driver->in_flight[user]++;
        driver->next[user]++;
        driver->sends++;
    }
}

/* One life of the daemon: ingest for delay_ms, then SIGKILL. */
static int
one_life(struct driver *driver, const char *binary, const char *dir,
         long delay_ms)
{
    struct test_daemon daemon = {0};
    struct cairn_loop *loop = NULL;
    struct cairn_node_client_settings settings = {0};
    uint64_t deadline;
    int rc;

    if (test_daemon_start(&daemon, binary, dir, true) < 0)
        return -1;
    settings.timeout_ms = 10000;
    if ((rc = cairn_loop_new(&loop)) < 0 ||
        (rc = cairn_node_client_new(loop, NULL, &settings, &driver->client)) <
            0 ||
        (rc = cairn_node_client_add_node(driver->client, "node1",
                                         daemon.endpoint, NULL)) < 0)
        goto out;
    for (unsigned user = 0; user < USERS; user++) {
        /* resend from the first update not acknowledged */
        driver->next[user] = 1;
        while (driver->next[user] <= MAX_UPDATES &&
               driver->acked[user][driver->next[user]])
            driver->next[user]++;
        driver->in_flight[user] = 0;
        drive_user(driver, user);
    }
    deadline = cairn_loop_now_ms() + (uint64_t)delay_ms;
    while (cairn_loop_now_ms() < deadline)
        cairn_loop_run_once(loop, 1);
out:
    test_daemon_stop(&daemon, SIGKILL);
    /* Replies that did not come never count: forget those requests. */
    cairn_node_client_free(driver->client);
    driver->client = NULL;
    while (driver->flying) {
        struct update *update = driver->flying;

        driver->flying = update->next_in_flight;
        update_free(update);
    }
    cairn_loop_free(loop);
    return rc;
}

static bool
any_acknowledged(const struct driver *driver, unsigned user)
{
    for (unsigned index = 1; index <= MAX_UPDATES; index++)
        if (driver->acked[user][index])
            return true;
    return false;
}

static void
check_user(const char *dir, struct cairn_catalog *catalog, unsigned user,
           const struct driver *driver, unsigned long *checked)
{
    struct cairn_store *store = NULL;
    char name[32], error[512] = "";
    int rc;

    snprintf(name, sizeof(name), "kill%u", user);
    rc = cairn_store_open_user(catalog, dir, name, 0, &store);
    /* A user none of whose updates was acknowledged (a slow run killed
     * early every time) may rightly not exist. */
    if (rc == CAIRN_ENOENT && !any_acknowledged(driver, user))
        return;
    CHECK_INT(rc, 0);
    if (store == NULL)
        return;
    CHECK_INT(
        cairn_store_verify(store, CAIRN_VERIFY_FULL, error, sizeof(error)), 0);
    if (error[0])
        fprintf(stderr, "verify %s: %s\n", name, error);
    for (unsigned index = 1; index <= MAX_UPDATES; index++) {
        unsigned k = (index + 1) / 2;

        if (!driver->acked[user][index])
            continue;
        (*checked)++;
        if (index % 2 == 1) {
            char guid[41];
            size_t len;

            message_guid(user, k, guid, &len);
            if (!cairn_store_has_message(store, guid))
                fprintf(stderr, "lost: %s message %u\n", name, k);
            CHECK(cairn_store_has_message(store, guid));
        } else {
            char mboxname[64];
            const char *names[1] = {mboxname};
            size_t found = 0;

            snprintf(mboxname, sizeof(mboxname), "user.kill%u.f%u", user, k);
            CHECK_INT(
                cairn_store_get_mailboxes(store, names, 1, count_item, &found),
                0);
            if (found != 1)
                fprintf(stderr, "lost: %s mailbox %s\n", name, mboxname);
            CHECK_INT(found, 1);
        }
    }
    cairn_store_close(store);
}

/*
 * Counts the user's APPLY MAILBOX records in its data file per mailbox;
 * returns how many mailboxes are there more than once. Mailbox 1 (update
 * 2) is left out: a resend from update 1 restarts the sequence (1 means a
 * new stream), so it may be applied again by design.
 */
static unsigned
count_duplicates(struct cairn_catalog *catalog, unsigned user,
                 const struct driver *driver)
{
    bool mailbox_acked = false;
    static unsigned char seen[MAX_UPDATES / 2 + 1];
    static char line[64 * 1024];
    char name[32], prefix[64], *data_path = NULL;
    unsigned duplicates = 0, records = 0;
    gzFile file;

    memset(seen, 0, sizeof(seen));
    snprintf(name, sizeof(name), "kill%u", user);
    snprintf(prefix, sizeof(prefix), "APPLY MAILBOX %%(UNIQUEID kill%uf", user);
    CHECK_INT(cairn_catalog_lookup(catalog, name, &data_path), 0);
    if (data_path == NULL || (file = gzopen(data_path, "rb")) == NULL) {
        free(data_path);
        CHECK(false);
        return 0;
    }
    while (gzgets(file, line, sizeof(line)) != NULL) {
        const char *at = strstr(line, prefix);
        uint64_t k;
        char *end;

        if (at == NULL)
            continue;
        at += strlen(prefix);
        end = strchr(at, ' ');
        if (end == NULL)
            continue;
        *end = '\0';
        if (cairn_parse_u64_str(at, 1, MAX_UPDATES / 2, &k) < 0)
            continue;
        records++;
        if (k > 1 && seen[k]++ == 1) {
            duplicates++;
            if (duplicates < 5)
                fprintf(stderr, "applied twice: %s mailbox %llu\n", name,
                        (unsigned long long)k);
        }
    }
    gzclose(file);
    free(data_path);
    /* an acknowledged MAILBOX (even updates) must be in the file; a user
     * may see none acknowledged when every life of a loaded machine ends
     * before its first MAILBOX is committed */
    for (unsigned index = 2; index <= MAX_UPDATES; index += 2)
        mailbox_acked = mailbox_acked || driver->acked[user][index];
    CHECK(records > 0 || !mailbox_acked);
    return duplicates;
}

int
main(int argc, char **argv)
{
    char dir[] = "/tmp/cairn-node-kill-XXXXXX", path[600];
    struct cairn_catalog *catalog = NULL;
    static struct driver driver;
    const char *seed_text = getenv("CAIRN_KILL_SEED");
    uint64_t kills = 50, seed = 1;
    unsigned long checked = 0;
    unsigned duplicates = 0;

    if (argc < 2 ||
        (argc > 2 && cairn_parse_u64_str(argv[2], 1, 100000, &kills) < 0)) {
        fprintf(stderr, "usage: test_node_kill CAIRN_NODE [KILLS]\n");
        return 2;
    }
    if (seed_text && cairn_parse_u64_str(seed_text, 0, UINT32_MAX, &seed) < 0)
        return 2;
    srandom((unsigned)seed);
    kill_driver = &driver;
    CHECK(mkdtemp(dir) != NULL);
    for (uint64_t i = 0; i < kills; i++) {
        long delay = 10 + random() % 250;

        CHECK_INT(one_life(&driver, argv[1], dir, delay), 0);
    }
    snprintf(path, sizeof(path), "%s/catalog.db", dir);
    CHECK_INT(cairn_catalog_open(path, &catalog), 0);
    for (unsigned user = 0; catalog && user < USERS; user++) {
        check_user(dir, catalog, user, &driver, &checked);
        duplicates += count_duplicates(catalog, user, &driver);
    }
    cairn_catalog_free(catalog);
    printf("%llu kills, %lu updates sent, %lu acknowledged, %lu errors; "
           "%lu acknowledged updates checked present, %d users verified, "
           "%u mailbox updates applied twice\n",
           (unsigned long long)kills, driver.sends, driver.acks, driver.errors,
           checked, USERS, duplicates);
    CHECK_INT(duplicates, 0);
    CHECK(driver.acks > kills); /* the daemon made progress between kills */
    test_remove_tree(dir);
    return check_exit("test_node_kill");
}
