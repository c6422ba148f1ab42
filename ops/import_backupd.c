/*
 * import_backupd.c - `cairnctl import --from-backupd`: a whole Cyrus
 * backupd server moved into a running cluster.
 *
 * The user list and file paths come from backupd's backups.db (a cyrusdb,
 * twoskip by default, read through Cyrus's own cyr_dbtool: there is no
 * reader of it outside Cyrus), named by backupd's imapd.conf or given
 * directly, or from a partition directory walked for backupd's
 * <user>_XXXXXX files. For each user, in name order:
 *   1. the data file is copied (under a shared lock; the original is never
 *      written) into the work directory, its index rebuilt, verified and
 *      compared with backupd's (import_file.c): a file cairn would not
 *      accept stops here, with the chunk, offset and rule;
 *   2. the verified copy is sent to every replica the destination's ring
 *      gives the user, with the node TRANSFER requests rebalance uses
 *      (node/transfer.c): each node rebuilds and verifies it again before
 *      it enters its catalog. A node that holds the user already is asked
 *      for its file's size and SHA-1: equal is "already present", anything
 *      else is refused unless --replace (which removes that copy first);
 *   3. the replicas' state digests must agree; then "done USER" is
 *      appended (fsynced) to the journal, and the work copy is removed.
 * Rerunning resumes: users the journal names are skipped; a user cut off
 * midway is redone (the work copy is remade, a node that got the whole
 * file reports it present and equal).
 */
#include "common.h"
#include "config.h"
#include "daemon.h"
#include "import_int.h"
#include "node.h"
#include "placement.h"
#include "progress.h"
#include "rebalance_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CYR_DBTOOL "/usr/lib/cyrus/bin/cyr_dbtool"
#define PIECE_MAX (4u << 20)
#define LIST_MAX_BYTES (256u << 20) /* cyr_dbtool's output, at most */

struct backupd_user {
    char *userid, *path;
    uint64_t size; /* of the data file when listed */
};

struct migration {
    struct cairn_ops_context *context;
    const struct cairn_import_backupd_options *options;
    struct cairn_config *config;
    const struct cairn_config_destination *destination;
    struct cairn_ring *ring;
    pthread_mutex_t lock; /* what follows, the output and the journal */
    size_t next;          /* the next user a worker takes */
    struct backupd_user *users;
    size_t user_count, user_cap;
    char **done; /* sorted userids the journal names */
    size_t done_count, done_cap;
    int journal_fd;
    uint64_t total_bytes, bytes_done, bytes_sent;
    uint64_t bytes_worked; /* of the users this run took (not the journal) */
    size_t imported, skipped, failed, resumed, users_done;
    double started;
    struct cairn_ops_progress progress; /* under lock */
};

static double
now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
add_user(struct migration *m, const char *userid, size_t userid_len,
         const char *path)
{
    if (m->user_count == m->user_cap) {
        size_t cap = m->user_cap ? m->user_cap * 2 : 64;
        struct backupd_user *grown = realloc(m->users, cap * sizeof(*grown));

        if (grown == NULL)
            return CAIRN_ENOMEM;
        m->users = grown;
        m->user_cap = cap;
    }
    m->users[m->user_count].userid = strndup(userid, userid_len);
    m->users[m->user_count].path = strdup(path);
    if (m->users[m->user_count].userid == NULL ||
        m->users[m->user_count].path == NULL) {
        free(m->users[m->user_count].userid);
        free(m->users[m->user_count].path);
        return CAIRN_ENOMEM;
    }
    m->user_count++;
    return 0;
}

static int
by_userid(const void *a, const void *b)
{
    return strcmp(((const struct backupd_user *)a)->userid,
                  ((const struct backupd_user *)b)->userid);
}

/* --- the user list -------------------------------------------------------- */

/* A whole file, NUL-terminated, owned; CAIRN_ENOENT when missing. */
static int
read_whole(const char *path, size_t max, char **text, size_t *len)
{
    struct cairn_buf buf;
    char piece[65536];
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;
    ssize_t got;

    *text = NULL;
    *len = 0;
    if (fd < 0)
        return errno == ENOENT ? CAIRN_ENOENT : CAIRN_EIO;
    cairn_buf_init(&buf, max + 1);
    while (rc == 0 && (got = read(fd, piece, sizeof(piece))) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        rc = got < 0 ? CAIRN_EIO : cairn_buf_append(&buf, piece, (size_t)got);
    }
    close(fd);
    if (rc == 0 && (rc = cairn_buf_append(&buf, "", 1)) == 0 &&
        (rc = cairn_buf_detach(&buf, text, len)) == 0)
        (*len)--;
    cairn_buf_release(&buf);
    return rc;
}

/* backupd's data file name: <user>_XXXXXX, not an index, not hidden. */
static bool
is_backup_name(const char *name)
{
    size_t len = strlen(name);

    return len > 7 && name[0] != '.' && name[len - 7] == '_' &&
           strchr(name + len - 6, '.') == NULL;
}

/* Every <user>_XXXXXX with an .index beside it under dir (3 levels). */
static int
walk_partition(struct migration *m, const char *dir, int depth)
{
    struct dirent **entries = NULL;
    int count = scandir(dir, &entries, NULL, alphasort), rc = 0;

    if (count < 0)
        return CAIRN_EIO;
    for (int i = 0; i < count; i++) {
        const char *name = entries[i]->d_name;
        char path[4096], index[4200];
        struct stat st;

        if (rc == 0 && name[0] != '.' &&
            snprintf(path, sizeof(path), "%s/%s", dir, name) <
                (int)sizeof(path) &&
            stat(path, &st) == 0) {
            snprintf(index, sizeof(index), "%s.index", path);
            if (S_ISDIR(st.st_mode) && depth < 3)
                rc = walk_partition(m, path, depth + 1);
            else if (S_ISREG(st.st_mode) && is_backup_name(name) &&
                     access(index, R_OK) == 0)
                rc = add_user(m, name, strlen(name) - 7, path);
        }
        free(entries[i]);
    }
    free(entries);
    return rc;
}

/*
 * Runs cyr_dbtool [-C conf] db backend show; *text gets its standard
 * output (owned, NUL-terminated). A failure names the command.
 */
static int
run_dbtool(struct migration *m, const char *conf, const char *db,
           const char *backend, char **text)
{
    const char *argv[8];
    struct cairn_buf out;
    char piece[65536];
    int pipefd[2] = {-1, -1}, status = 0, argc = 0, rc = CAIRN_EIO;
    ssize_t got;
    pid_t pid;

    cairn_buf_init(&out, LIST_MAX_BYTES);
    argv[argc++] = m->options->cyr_dbtool;
    if (conf) {
        argv[argc++] = "-C";
        argv[argc++] = conf;
    }
    argv[argc++] = db;
    argv[argc++] = backend;
    argv[argc++] = "show";
    argv[argc] = NULL;
    if (pipe(pipefd) < 0 || (pid = fork()) < 0)
        goto out;
    if (pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        close(pipefd[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pipefd[1]);
    pipefd[1] = -1;
    rc = 0;
    while (rc == 0 && (got = read(pipefd[0], piece, sizeof(piece))) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        rc = got < 0 ? CAIRN_EIO : cairn_buf_append(&out, piece, (size_t)got);
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (rc == 0 && (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
        rc = CAIRN_EIO;
    if (rc == 0 && (rc = cairn_buf_append(&out, "", 1)) == 0) {
        size_t len;

        cairn_buf_detach(&out, text, &len);
    }
out:
    if (rc < 0)
        fprintf(m->context->err,
                "cairnctl import: %s %s%s%s %s show failed (exit %d); is"
                " Cyrus installed here (--cyr-dbtool)?\n",
                m->options->cyr_dbtool, conf ? "-C " : "", conf ? conf : "", db,
                backend, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    if (pipefd[0] >= 0)
        close(pipefd[0]);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    cairn_buf_release(&out);
    return rc;
}

/* "key\tvalue\n" lines: userid and data file path. */
static int
parse_dbtool(struct migration *m, const char *text)
{
    int rc = 0;

    for (const char *line = text; rc == 0 && *line;) {
        const char *end = strchr(line, '\n'), *tab;
        char path[4096];

        if (end == NULL)
            end = line + strlen(line);
        tab = memchr(line, '\t', (size_t)(end - line));
        if (tab && tab > line && end - tab - 1 > 0 &&
            (size_t)(end - tab) < sizeof(path)) {
            snprintf(path, sizeof(path), "%.*s", (int)(end - tab - 1), tab + 1);
            rc = add_user(m, line, (size_t)(tab - line), path);
        } else if (end > line) {
            fprintf(m->context->err,
                    "cairnctl import: backups.db: a line without a tab:"
                    " '%.*s'\n",
                    (int)(end - line > 80 ? 80 : end - line), line);
            rc = CAIRN_EPARSE;
        }
        line = *end ? end + 1 : end;
    }
    return rc;
}

/* imapd.conf: "key: value"; *value owned, NULL when the key is absent. */
static int
conf_value(const char *text, const char *key, char **value)
{
    size_t key_len = strlen(key);

    *value = NULL;
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');

        if (end == NULL)
            end = line + strlen(line);
        if ((size_t)(end - line) > key_len &&
            strncmp(line, key, key_len) == 0 && line[key_len] == ':') {
            const char *v = line + key_len + 1;

            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            while (end > v && (end[-1] == ' ' || end[-1] == '\r'))
                end--;
            *value = strndup(v, (size_t)(end - v));
            return *value ? 0 : CAIRN_ENOMEM;
        }
        line = *end ? end + 1 : end;
    }
    return 0;
}

/* The users of backupd's imapd.conf: its backups.db, read by cyr_dbtool. */
static int
users_from_conf(struct migration *m, const char *conf)
{
    char *text = NULL, *configdir = NULL, *db = NULL, *backend = NULL;
    char *list = NULL;
    size_t len = 0;
    int rc = CAIRN_ENOMEM;

    if ((rc = read_whole(conf, 1u << 20, &text, &len)) < 0) {
        fprintf(m->context->err, "cairnctl import: %s: %s\n", conf,
                cairn_strerror(rc));
        return rc;
    }
    if ((rc = conf_value(text, "backup_db_path", &db)) < 0 ||
        (rc = conf_value(text, "backup_db", &backend)) < 0 ||
        (rc = conf_value(text, "configdirectory", &configdir)) < 0)
        goto out;
    if (db == NULL && configdir != NULL &&
        asprintf(&db, "%s/backups.db", configdir) < 0) {
        db = NULL;
        rc = CAIRN_ENOMEM;
        goto out;
    }
    if (db == NULL) {
        fprintf(m->context->err,
                "cairnctl import: %s sets neither backup_db_path nor"
                " configdirectory: where is backups.db?\n",
                conf);
        rc = CAIRN_EINVAL;
        goto out;
    }
    if ((rc = run_dbtool(m, conf, db, backend ? backend : "twoskip", &list)) ==
        0)
        rc = parse_dbtool(m, list);
out:
    free(text);
    free(configdir);
    free(db);
    free(backend);
    free(list);
    return rc;
}

/* Cyrus's twoskip files begin with this magic. */
static bool
is_twoskip(const char *path)
{
    static const char magic[] = "\xa1\x02\x8b\x0dtwoskip file";
    char head[sizeof(magic)];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    bool yes = false;

    if (fd >= 0) {
        yes = read(fd, head, sizeof(magic) - 1) == (ssize_t)sizeof(magic) - 1 &&
              memcmp(head, magic, sizeof(magic) - 1) == 0;
        close(fd);
    }
    return yes;
}

static int
gather_users(struct migration *m)
{
    const char *from = m->options->from;
    struct stat st;
    char *list = NULL;
    int rc;

    if (stat(from, &st) < 0) {
        fprintf(m->context->err, "cairnctl import: %s: %s\n", from,
                strerror(errno));
        return CAIRN_ENOENT;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = walk_partition(m, from, 0);
    } else if (is_twoskip(from)) {
        if ((rc = run_dbtool(m, m->options->dbtool_conf, from, "twoskip",
                             &list)) == 0)
            rc = parse_dbtool(m, list);
        free(list);
    } else {
        rc = users_from_conf(m, from);
    }
    if (rc == 0 && m->user_count == 0) {
        fprintf(m->context->err, "cairnctl import: no backups in %s\n", from);
        rc = CAIRN_ENOENT;
    }
    if (rc == 0)
        qsort(m->users, m->user_count, sizeof(*m->users), by_userid);
    for (size_t i = 0; rc == 0 && i < m->user_count; i++) {
        if (stat(m->users[i].path, &st) == 0)
            m->users[i].size = (uint64_t)st.st_size;
        m->total_bytes += m->users[i].size;
    }
    return rc;
}

/* --- the journal ---------------------------------------------------------- */

static int
by_string(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool
journal_done(const struct migration *m, const char *userid)
{
    return m->done_count > 0 && bsearch(&userid, m->done, m->done_count,
                                        sizeof(char *), by_string) != NULL;
}

/* Remembers userid as done (the list is sorted once read). */
static int
add_done(struct migration *m, const char *userid)
{
    if (m->done_count == m->done_cap) {
        size_t cap = m->done_cap ? m->done_cap * 2 : 64;
        char **grown = realloc(m->done, cap * sizeof(*grown));

        if (grown == NULL)
            return CAIRN_ENOMEM;
        m->done = grown;
        m->done_cap = cap;
    }
    if ((m->done[m->done_count] = strdup(userid)) == NULL)
        return CAIRN_ENOMEM;
    m->done_count++;
    return 0;
}

/*
 * The journal: "cairn-import 1 DESTINATION", then "done USER" lines, each
 * fsynced. A torn last line (no newline) is cut off and its user redone;
 * a journal of another destination is refused.
 */
static int
journal_open(struct migration *m, const char *path)
{
    char *text = NULL, header[300];
    size_t len = 0, whole = 0;
    int rc = read_whole(path, 1u << 30, &text, &len);

    snprintf(header, sizeof(header), "cairn-import 1 %s",
             m->options->destination);
    if (rc == CAIRN_ENOENT)
        rc = 0;
    for (char *line = text; rc == 0 && line && line < text + len;) {
        char *end = memchr(line, '\n', (size_t)(text + len - line));

        if (end == NULL)
            break; /* torn */
        *end = '\0';
        if (line == text && strcmp(line, header) != 0) {
            fprintf(m->context->err,
                    "cairnctl import: journal %s is not for destination %s"
                    " ('%s'): use another --work-dir\n",
                    path, m->options->destination, line);
            rc = CAIRN_EINVAL;
        } else if (strncmp(line, "done ", 5) == 0) {
            rc = add_done(m, line + 5);
        }
        whole = (size_t)(end + 1 - text);
        line = end + 1;
    }
    free(text);
    if (rc == 0 && m->done_count > 0)
        qsort(m->done, m->done_count, sizeof(char *), by_string);
    if (rc == 0 && ((m->journal_fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC,
                                          cairn_created_file_mode())) < 0 ||
                    ftruncate(m->journal_fd, (off_t)whole) < 0 ||
                    lseek(m->journal_fd, 0, SEEK_END) < 0))
        rc = CAIRN_EIO;
    if (rc == 0 && whole == 0) {
        strcat(header, "\n");
        if (cairn_write_all(m->journal_fd, header, strlen(header)) < 0 ||
            fsync(m->journal_fd) < 0)
            rc = CAIRN_EIO;
    }
    if (rc < 0 && rc != CAIRN_EINVAL)
        fprintf(m->context->err, "cairnctl import: journal %s: %s\n", path,
                cairn_strerror(rc));
    return rc;
}

static int
journal_record(struct migration *m, const char *userid)
{
    char line[512];
    int len = snprintf(line, sizeof(line), "done %s\n", userid);

    if (len < 0 || (size_t)len >= sizeof(line) ||
        cairn_write_all(m->journal_fd, line, (size_t)len) < 0 ||
        fsync(m->journal_fd) < 0)
        return CAIRN_EIO;
    return 0;
}

/* --- one user ------------------------------------------------------------- */

/* One worker: its own connections to the nodes. */
struct worker {
    struct migration *m;
    struct cairn_rebalance_link *link;
    int rc; /* the link could not be made */
};

static void
on_piece(void *arg, uint64_t bytes)
{
    struct migration *m = arg;

    pthread_mutex_lock(&m->lock);
    m->bytes_sent += bytes;
    pthread_mutex_unlock(&m->lock);
}

/* The work copy of userid left by an earlier, interrupted run: removed. */
static int
forget_work_copy(const char *work_dir, const char *userid)
{
    struct cairn_catalog *catalog = NULL;
    char *catalog_path = NULL, *data = NULL, *index = NULL;
    int rc = CAIRN_ENOMEM;

    if (asprintf(&catalog_path, "%s/catalog.db", work_dir) < 0)
        return CAIRN_ENOMEM;
    if ((rc = cairn_catalog_open(catalog_path, &catalog)) < 0)
        goto out;
    rc = cairn_catalog_lookup(catalog, userid, &data);
    if (rc == CAIRN_ENOENT) {
        rc = 0;
        goto out;
    }
    if (rc < 0 || asprintf(&index, "%s.index", data) < 0)
        goto out;
    unlink(index);
    unlink(data);
    rc = cairn_catalog_remove(catalog, userid);
out:
    cairn_catalog_free(catalog);
    free(catalog_path);
    free(data);
    free(index);
    return rc;
}

/* The config entry of the ring's node index. */
static const struct cairn_config_node *
ring_node(const struct migration *m, uint16_t index)
{
    struct cairn_ring_node_info info;

    if (cairn_ring_node_info(m->ring, index, &info) < 0)
        return NULL;
    for (size_t n = 0; n < cairn_config_node_count(m->config); n++) {
        const struct cairn_config_node *node =
            cairn_config_node_at(m->config, n);

        if (strcmp(node->origin.name, info.name) == 0)
            return node;
    }
    return NULL;
}

/*
 * One replica: pushed, or found present and equal (*present), or refused
 * as present and different (unless --replace).
 */
static int
place_on(struct worker *w, const struct cairn_config_node *node,
         const char *userid, const char *path, uint64_t size, const char *sha1,
         bool *present, char *why, size_t why_size)
{
    size_t piece = node->max_frame > 0 && node->max_frame < PIECE_MAX
                       ? (size_t)node->max_frame
                       : PIECE_MAX;
    const char *name = node->origin.name;
    char their_sha1[41] = "", text[256] = "";
    struct migration *m = w->m;
    uint64_t their_size = 0;
    int rc;

    *present = false;
    rc = cairn_rebalance_push_file(w->link, name, userid, path, size, sha1,
                                   piece, on_piece, m, text, sizeof(text));
    if (rc != CAIRN_EEXIST)
        goto out;
    rc = cairn_rebalance_node_file(w->link, name, userid, &their_size,
                                   their_sha1, text, sizeof(text));
    if (rc == 0 && their_size == size && strcmp(their_sha1, sha1) == 0) {
        *present = true;
        goto out;
    }
    if (rc == 0 && !m->options->replace) {
        snprintf(why, why_size,
                 "node %s holds a different backup of the user (%llu bytes,"
                 " this one %llu); --replace to overwrite it",
                 name, (unsigned long long)their_size,
                 (unsigned long long)size);
        return CAIRN_EEXIST;
    }
    if (rc == 0 &&
        (rc = cairn_rebalance_remove_user(w->link, name, userid)) == 0)
        rc = cairn_rebalance_push_file(w->link, name, userid, path, size, sha1,
                                       piece, on_piece, m, text, sizeof(text));
out:
    if (rc < 0)
        snprintf(why, why_size, "node %s: %s", name,
                 text[0] ? text : cairn_strerror(rc));
    return rc;
}

/* Every replica's state digest must be the same. */
static int
compare_replicas(struct worker *w, const uint16_t *indices, unsigned count,
                 const char *userid, char *why, size_t why_size)
{
    char first[41] = "", digest[41], text[256];

    for (unsigned i = 0; i < count; i++) {
        const char *name = ring_node(w->m, indices[i])->origin.name;
        int rc = cairn_rebalance_node_digest(w->link, name, userid, digest,
                                             text, sizeof(text));

        if (rc < 0) {
            snprintf(why, why_size, "node %s: verify: %s", name, text);
            return rc;
        }
        if (i == 0)
            memcpy(first, digest, sizeof(first));
        else if (strcmp(first, digest) != 0) {
            snprintf(why, why_size, "replicas disagree after the copy (%s)",
                     name);
            return CAIRN_EMISMATCH;
        }
    }
    return 0;
}

static void
report_user(struct migration *m, const char *userid, const char *outcome,
            const char *detail)
{
    FILE *out = m->context->out;

    if (m->context->json) {
        fputs("{\"user\":", out);
        cairn_ops_json_string(out, userid);
        fputs(",\"outcome\":", out);
        cairn_ops_json_string(out, outcome);
        fputs(",\"detail\":", out);
        cairn_ops_json_string(out, detail);
        fputs("}\n", out);
    } else {
        fprintf(out, "%s %s: %s\n", outcome, userid, detail);
    }
}

/* A progress line on stderr; called with the lock held. */
static void
show_progress(struct migration *m)
{
    char detail[64];

    snprintf(detail, sizeof(detail), "%.1f MB sent",
             (double)m->bytes_sent / 1e6);
    cairn_ops_progress_update(&m->progress, m->users_done, m->bytes_done,
                              detail);
}

/* Copies, verifies and places one user; its line of the report. */
static void
migrate_user(struct worker *w, const struct backupd_user *user)
{
    struct migration *m = w->m;
    uint16_t indices[CAIRN_RING_MAX_REPLICAS];
    unsigned replicas = cairn_ring_replicas(m->ring), present = 0;
    struct cairn_import_report report;
    const char *outcome = "failed";
    char sha1[41] = "", why[640] = "", where[256] = "";
    uint64_t size = 0;
    int rc;

    memset(&report, 0, sizeof(report));
    if (journal_done(m, user->userid)) {
        pthread_mutex_lock(&m->lock);
        m->resumed++;
        m->skipped++;
        m->bytes_done += user->size;
        m->users_done++;
        report_user(m, user->userid, "skipped",
                    "done by an earlier run (journal)");
        pthread_mutex_unlock(&m->lock);
        return;
    }
    if ((rc = cairn_node_check_userid(user->userid)) < 0) {
        snprintf(why, sizeof(why), "bad user name");
        goto out;
    }
    if ((rc = forget_work_copy(m->options->work_dir, user->userid)) < 0 ||
        (rc = cairn_import_user(m->options->work_dir, user->userid, user->path,
                                m->options->strict, &report, &outcome)) < 0) {
        snprintf(why, sizeof(why), "%s: %s", user->path,
                 strcmp(outcome, "failed") == 0 ? cairn_strerror(rc) : outcome);
        if (report.verify_error[0])
            snprintf(why + strlen(why), sizeof(why) - strlen(why), ": %s",
                     report.verify_error);
        outcome = "failed";
        goto out;
    }
    if ((rc = cairn_file_sha1(report.data_path, sha1, &size)) < 0) {
        snprintf(why, sizeof(why), "reading the verified copy: %s",
                 cairn_strerror(rc));
        goto out;
    }
    cairn_ring_lookup(m->ring, user->userid, strlen(user->userid), indices);
    for (unsigned i = 0; i < replicas; i++) {
        const struct cairn_config_node *node = ring_node(m, indices[i]);
        bool here = false;

        if (node == NULL) {
            snprintf(why, sizeof(why), "a ring node is not in the config");
            rc = CAIRN_ECONFIG;
            goto out;
        }
        if ((rc = place_on(w, node, user->userid, report.data_path, size, sha1,
                           &here, why, sizeof(why))) < 0)
            goto out;
        present += here;
        snprintf(where + strlen(where), sizeof(where) - strlen(where), "%s%s%s",
                 i ? " " : "", node->origin.name, here ? "(present)" : "");
    }
    if ((rc = compare_replicas(w, indices, replicas, user->userid, why,
                               sizeof(why))) < 0)
        goto out;
    pthread_mutex_lock(&m->lock);
    rc = journal_record(m, user->userid);
    pthread_mutex_unlock(&m->lock);
    if (rc < 0) {
        snprintf(why, sizeof(why), "journal: %s", cairn_strerror(rc));
        goto out;
    }
    outcome = present == replicas ? "skipped" : "imported";
    snprintf(why, sizeof(why),
             "%s on %s; %llu bytes, %llu chunks (%llu without lines)%s",
             present == replicas ? "already present and equal" : "verified",
             where, (unsigned long long)size, (unsigned long long)report.chunks,
             (unsigned long long)(report.chunks - report.line_chunks),
             report.cut_bytes ? ", torn tail cut" : "");
out:
    if (rc < 0)
        outcome = "failed";
    pthread_mutex_lock(&m->lock);
    if (strcmp(outcome, "imported") == 0)
        m->imported++;
    else if (strcmp(outcome, "skipped") == 0)
        m->skipped++;
    else
        m->failed++;
    m->bytes_done += user->size;
    m->bytes_worked += user->size;
    m->users_done++;
    report_user(m, user->userid, outcome, why);
    show_progress(m);
    pthread_mutex_unlock(&m->lock);
    forget_work_copy(m->options->work_dir, user->userid);
    cairn_import_report_release(&report);
}

/* --- the run -------------------------------------------------------------- */

static int
prepare(struct migration *m)
{
    char *journal = NULL;
    int rc;

    m->destination =
        cairn_config_find_destination(m->config, m->options->destination);
    if (m->destination == NULL) {
        fprintf(m->context->err,
                "cairnctl import: no destination %s in the config\n",
                m->options->destination);
        return CAIRN_ECONFIG;
    }
    if ((rc = cairn_ring_load(m->destination->ring_file, &m->ring)) < 0) {
        fprintf(m->context->err, "cairnctl import: ring %s: %s\n",
                m->destination->ring_file, cairn_strerror(rc));
        return rc;
    }
    if (mkdir(m->options->work_dir, cairn_created_dir_mode()) < 0 &&
        errno != EEXIST) {
        fprintf(m->context->err, "cairnctl import: %s: %s\n",
                m->options->work_dir, strerror(errno));
        return CAIRN_EIO;
    }
    if (asprintf(&journal, "%s/import.journal", m->options->work_dir) < 0)
        return CAIRN_ENOMEM;
    rc = journal_open(m, journal);
    free(journal);
    return rc;
}

/* Takes users one after the other until none is left. */
static void *
work(void *arg)
{
    struct worker *w = arg;
    struct migration *m = w->m;

    for (;;) {
        size_t i;

        pthread_mutex_lock(&m->lock);
        i = m->next++;
        pthread_mutex_unlock(&m->lock);
        if (i >= m->user_count)
            break;
        migrate_user(w, &m->users[i]);
    }
    return NULL;
}

/*
 * options->jobs workers, each with its own connections to the nodes: the
 * work per user is mostly waiting for fsyncs (the copy, its index, each
 * node's copy and index), which overlap across users.
 */
static int
run_workers(struct migration *m)
{
    unsigned jobs = m->options->jobs ? m->options->jobs : 1;
    struct worker *workers = calloc(jobs, sizeof(*workers));
    pthread_t *threads = calloc(jobs, sizeof(*threads));
    unsigned started = 0;
    int rc = CAIRN_ENOMEM;

    if (workers == NULL || threads == NULL)
        goto out;
    if (jobs > m->user_count)
        jobs = m->user_count ? (unsigned)m->user_count : 1;
    rc = 0;
    for (unsigned i = 0; i < jobs && rc == 0; i++) {
        workers[i].m = m;
        rc = cairn_rebalance_link_new(m->config, &workers[i].link);
    }
    for (unsigned i = 0; i < jobs && rc == 0; i++) {
        if (pthread_create(&threads[i], NULL, work, &workers[i]) != 0) {
            rc = CAIRN_ENOMEM;
            break;
        }
        started++;
    }
    if (started == 0 && rc == 0)
        work(&workers[0]);
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
out:
    for (unsigned i = 0; workers && i < jobs; i++)
        cairn_rebalance_link_free(workers[i].link);
    free(workers);
    free(threads);
    return rc;
}

/*
 * The figures are over the users this run worked on: those an earlier
 * run finished (the journal) cost nothing and are left out of the rates.
 */
static void
print_summary(struct migration *m)
{
    double seconds = now_seconds() - m->started;
    double users = (double)(m->imported + m->skipped + m->failed - m->resumed);
    double mb = (double)m->bytes_worked / 1e6;

    if (seconds <= 0)
        seconds = 1e-6;
    if (m->context->json) {
        fprintf(m->context->out,
                "{\"summary\":{\"users\":%zu,\"imported\":%zu,\"skipped\":%zu,"
                "\"resumed\":%zu,\"failed\":%zu,\"bytes\":%llu,"
                "\"bytes_worked\":%llu,\"bytes_sent\":%llu,\"seconds\":%.3f,"
                "\"users_per_second\":%.2f,\"mb_per_second\":%.2f}}\n",
                m->user_count, m->imported, m->skipped, m->resumed, m->failed,
                (unsigned long long)m->total_bytes,
                (unsigned long long)m->bytes_worked,
                (unsigned long long)m->bytes_sent, seconds, users / seconds,
                mb / seconds);
        return;
    }
    fprintf(m->context->out,
            "import: %zu users: %zu imported, %zu skipped (%zu by the"
            " journal), %zu failed; %.2f MB of backupd files worked on"
            " (%.2f MB sent to nodes) in %.2f s: %.1f users/s, %.2f MB/s\n",
            m->user_count, m->imported, m->skipped, m->resumed, m->failed, mb,
            (double)m->bytes_sent / 1e6, seconds, users / seconds,
            mb / seconds);
}

int
cairn_import_from_backupd(struct cairn_ops_context *context,
                          const struct cairn_import_backupd_options *options)
{
    struct migration m = {
        .context = context, .options = options, .journal_fd = -1};
    int status, rc;

    m.started = now_seconds();
    if ((status = cairn_ops_load_config(context, NULL, &m.config)) !=
        CAIRN_EXIT_OK)
        return status;
    if ((rc = gather_users(&m)) < 0) {
        status = rc == CAIRN_ENOENT ? CAIRN_EXIT_NOINPUT : CAIRN_EXIT_PROBLEM;
        goto out;
    }
    if ((rc = prepare(&m)) < 0) {
        status = rc == CAIRN_ECONFIG || rc == CAIRN_EINVAL ? CAIRN_EXIT_PROBLEM
                                                           : CAIRN_EXIT_IOERR;
        goto out;
    }
    if (!options->quiet)
        fprintf(context->err,
                "import: %zu users, %.1f MB, from %s to destination %s"
                " (%u replicas); work dir %s\n",
                m.user_count, (double)m.total_bytes / 1e6, options->from,
                options->destination, cairn_ring_replicas(m.ring),
                options->work_dir);
    cairn_ops_progress_start(&m.progress, context->err, options->quiet,
                             "import", "users", m.user_count, m.total_bytes);
    rc = run_workers(&m);
    cairn_ops_progress_end(&m.progress, m.users_done, m.bytes_done);
    if (rc < 0) {
        fprintf(context->err, "cairnctl import: nodes: %s\n",
                cairn_strerror(rc));
        status = CAIRN_EXIT_UNAVAILABLE;
        goto out;
    }
    print_summary(&m);
    status = m.failed > 0 ? CAIRN_EXIT_PROBLEM : CAIRN_EXIT_OK;
out:
    for (size_t i = 0; i < m.user_count; i++) {
        free(m.users[i].userid);
        free(m.users[i].path);
    }
    free(m.users);
    for (size_t i = 0; i < m.done_count; i++)
        free(m.done[i]);
    free(m.done);
    if (m.journal_fd >= 0)
        close(m.journal_fd);
    pthread_mutex_destroy(&m.lock);
    cairn_ring_free(m.ring);
    cairn_config_free(m.config);
    return status;
}
