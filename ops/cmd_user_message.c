/*
 * cmd_user_message.c - `cairnctl user dump message USER GUID`: one
 * message's raw RFC 822 bytes on stdout, read from the running cluster
 * (the user's replicas, as `cairnctl restore` reads them) or from a
 * node's data directory, and checked against the GUID (its SHA-1) as
 * they stream: the body is never whole in memory.
 */
#include "cluster_int.h"
#include "config.h"
#include "restore.h"

#include <getopt.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: cairnctl user dump message [-d data-dir | --destination name |\n"
    "           --node name] [-t seconds] user guid > file.eml\n"
    "\n"
    "Writes the raw bytes (RFC 822) of the message with this GUID from the\n"
    "user's backup to stdout: from the first of the user's replicas that\n"
    "answers (another replica continues if it stops mid-body), or from a\n"
    "node's data directory (-d). The bytes are checked against the GUID\n"
    "(SHA-1) as they go out; on a mismatch the exit is 74 and what was\n"
    "written is not the message.\n"
    "Exit: 0 written, 1 no such message in the backup, 64 usage, 66 no such\n"
    "user or data directory, 69 no replica answers, 74 I/O or GUID\n"
    "mismatch, 70 other.\n";

struct message_args {
    const char *data_dir, *destination, *node, *user, *guid;
    uint64_t timeout;
};

static bool
is_guid(const char *text)
{
    if (strlen(text) != 40)
        return false;
    for (size_t i = 0; i < 40; i++)
        if (!((text[i] >= '0' && text[i] <= '9') ||
              (text[i] >= 'a' && text[i] <= 'f')))
            return false;
    return true;
}

static int
parse_message_args(struct cairn_ops_context *context, int argc, char **argv,
                   struct message_args *args)
{
    static const struct option options[] = {
        {"data-dir", required_argument, NULL, 'd'},
        {"destination", required_argument, NULL, 'D'},
        {"node", required_argument, NULL, 'n'},
        {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int option;

    memset(args, 0, sizeof(*args));
    args->timeout = 60;
    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, "d:n:t:h", options, NULL)) != -1) {
        switch (option) {
        case 'd':
            args->data_dir = optarg;
            break;
        case 'D':
            args->destination = optarg;
            break;
        case 'n':
            args->node = optarg;
            break;
        case 't':
            if (cairn_parse_u64_str(optarg, 1, 86400, &args->timeout) < 0)
                goto bad;
            break;
        case 'h':
            fputs(usage, context->out);
            return -1;
        default:
            goto bad;
        }
    }
    if (optind + 2 != argc || !is_guid(argv[optind + 1]) ||
        (args->data_dir != NULL &&
         (args->destination != NULL || args->node != NULL)))
        goto bad;
    args->user = argv[optind];
    args->guid = argv[optind + 1];
    return 0;
bad:
    fprintf(context->err, "cairnctl user dump message: bad arguments (a user"
                          " and a GUID of 40 lowercase hex digits)\n");
    fputs(usage, context->err);
    return CAIRN_EXIT_USAGE;
}

/* The bytes as they go out: written and hashed. */
struct message_out {
    FILE *out;
    EVP_MD_CTX *sha1;
    uint64_t bytes;
};

static int
put_message(void *ctx, const void *data, size_t len)
{
    struct message_out *message = ctx;

    if (EVP_DigestUpdate(message->sha1, data, len) != 1)
        return CAIRN_ENOMEM;
    if (len > 0 && fwrite(data, 1, len, message->out) != len)
        return CAIRN_EIO;
    message->bytes += len;
    return 0;
}

static bool
digest_matches(EVP_MD_CTX *sha1, const char *guid)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    char hex[41];

    if (EVP_DigestFinal_ex(sha1, digest, &len) != 1 || len != 20)
        return false;
    for (unsigned i = 0; i < 20; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    return strcmp(hex, guid) == 0;
}

static void
show_notice(void *ctx, const char *text)
{
    struct cairn_ops_context *context = ctx;

    fprintf(context->err, "cairnctl user dump message: %s\n", text);
}

int
cairn_ops_open_backup(struct cairn_ops_context *context, const char *data_dir,
                      const char *destination, const char *node,
                      const char *user, uint64_t timeout_s,
                      struct cairn_restore_source **source, char *cause,
                      size_t cause_size)
{
    struct cairn_restore_remote_options options = {0};
    struct cairn_config *config = NULL;
    char error[1024] = "";
    int rc;

    if (data_dir != NULL) {
        rc = cairn_restore_source_open_store(data_dir, user, source);
        if (rc < 0)
            snprintf(cause, cause_size, "backup of %s in %s: %s%s", user,
                     data_dir, cairn_strerror(rc),
                     rc == CAIRN_ELOCKED
                         ? " (a cairn-node holds the user: read it from the"
                           " cluster instead)"
                         : "");
        return rc;
    }
    if (cairn_ops_load_config(context, NULL, &config) != 0) {
        snprintf(cause, cause_size, "cannot load the cluster config");
        return CAIRN_ECONFIG;
    }
    options.config = config;
    options.destination = destination;
    options.node = node;
    options.timeout_ms = (timeout_s < 60 ? timeout_s : 60) * 1000;
    options.ping_timeout_ms = timeout_s < 5 ? timeout_s * 1000 : 5000;
    options.notice = show_notice;
    options.notice_ctx = context;
    rc = cairn_restore_source_open_remote(&options, user, source, error,
                                          sizeof(error));
    if (rc < 0)
        snprintf(cause, cause_size, "backup of %s on the cluster: %s", user,
                 error[0] ? error : cairn_strerror(rc));
    cairn_config_free(config);
    return rc;
}

static int
exit_for(int rc)
{
    switch (rc) {
    case CAIRN_ENOENT:
        return CAIRN_EXIT_PROBLEM;
    case CAIRN_EBADNAME:
        return CAIRN_EXIT_NOINPUT;
    case CAIRN_EUNAVAILABLE:
    case CAIRN_ETIMEOUT:
        return CAIRN_EXIT_UNAVAILABLE;
    case CAIRN_EIO:
    case CAIRN_EMISMATCH:
    case CAIRN_ECORRUPT:
        return CAIRN_EXIT_IOERR;
    default:
        return CAIRN_EXIT_SOFTWARE;
    }
}

int
cairn_ops_user_dump_message(struct cairn_ops_context *context, int argc,
                            char **argv)
{
    struct cairn_restore_source *source = NULL;
    struct message_out message = {context->out, NULL, 0};
    struct message_args args;
    char cause[1536] = "";
    const char *why;
    int rc, status;

    if ((status = parse_message_args(context, argc, argv, &args)) != 0)
        return status < 0 ? CAIRN_EXIT_OK : status;
    if ((message.sha1 = EVP_MD_CTX_new()) == NULL ||
        EVP_DigestInit_ex(message.sha1, EVP_sha1(), NULL) != 1) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    if ((rc = cairn_ops_open_backup(context, args.data_dir, args.destination,
                                    args.node, args.user, args.timeout, &source,
                                    cause, sizeof(cause))) < 0) {
        if (rc == CAIRN_ENOENT)
            rc = CAIRN_EBADNAME; /* no such user: exit 66 */
        goto out;
    }
    rc = source->ops->message(source->ctx, args.guid, put_message, &message);
    if (rc == 0 && fflush(context->out) != 0)
        rc = CAIRN_EIO;
    if (rc == 0 && !digest_matches(message.sha1, args.guid))
        rc = CAIRN_EMISMATCH;
    if (rc < 0) {
        why = source->ops->error ? source->ops->error(source->ctx) : NULL;
        snprintf(cause, sizeof(cause), "message %s of %s: %s%s", args.guid,
                 args.user, why ? why : cairn_strerror(rc),
                 rc == CAIRN_EMISMATCH ? " (the bytes written fail the GUID)"
                 : rc == CAIRN_EIO     ? " (writing stdout failed?)"
                                       : "");
    }
out:
    if (rc < 0)
        fprintf(context->err, "cairnctl user dump message: %s\n",
                cause[0] ? cause : cairn_strerror(rc));
    cairn_restore_source_free(source);
    EVP_MD_CTX_free(message.sha1);
    return rc == 0 ? CAIRN_EXIT_OK : exit_for(rc);
}
