/*
 * cmd_keys.c - `cairnctl keys create|show NAME...`: make a CURVE keypair
 * in [security] curve_key_dir (NAME.secret 0600, NAME.public), or print a
 * key's public half. The router's key is named by [router] curve_key
 * (default "router"), a node's by [node] curve_key (default its name),
 * cairnctl's by the first of [security] admin_keys (default "admin").
 */
#include "curve.h"
#include "ops.h"

#include <string.h>

static const char usage[] =
    "usage: cairnctl keys create [--json] name ...\n"
    "       cairnctl keys show [--json] name ...\n"
    "\n"
    "create: make a CURVE keypair in [security] curve_key_dir for each\n"
    "        name: name.secret (mode 0600) and name.public; an existing\n"
    "        key is never overwritten (exit 1)\n"
    "show:   print each name's public key (Z85)\n";

static int
run_keys(struct cairn_ops_context *context, int argc, char **argv)
{
    struct cairn_config *config = NULL;
    const char *verb = argc > 1 ? argv[1] : NULL, *dir;
    int status;

    if (verb == NULL || argc < 3 ||
        (strcmp(verb, "create") != 0 && strcmp(verb, "show") != 0)) {
        fprintf(context->err, "cairnctl keys: create or show, and names\n");
        return cairn_ops_usage(context, &cairn_ops_cmd_keys);
    }
    context->no_curve = true; /* keys are made here, not used */
    if ((status = cairn_ops_load_config(context, NULL, &config)) != 0)
        return status;
    dir = cairn_config_security(config)->curve_key_dir;
    for (int i = 2; i < argc; i++) /* --json among the names */
        context->json |= strcmp(argv[i], "--json") == 0;
    for (int i = 2; i < argc; i++) {
        char public_key[CAIRN_CURVE_KEY_TEXT], error[512] = "";

        if (strcmp(argv[i], "--json") == 0)
            continue;
        int rc = strcmp(verb, "create") == 0
                     ? cairn_curve_key_create(dir, argv[i], public_key, error,
                                              sizeof(error))
                     : cairn_curve_key_load(dir, argv[i], public_key, NULL,
                                            error, sizeof(error));

        if (rc < 0) {
            fprintf(context->err, "cairnctl keys %s %s: %s\n", verb, argv[i],
                    error[0] ? error : cairn_strerror(rc));
            status =
                rc == CAIRN_ENOENT ? CAIRN_EXIT_NOINPUT : CAIRN_EXIT_PROBLEM;
            continue;
        }
        if (context->json) {
            fputs("{\"name\":", context->out);
            cairn_ops_json_string(context->out, argv[i]);
            fputs(",\"public\":", context->out);
            cairn_ops_json_string(context->out, public_key);
            fputs("}\n", context->out);
        } else {
            fprintf(context->out, "%s %s\n", argv[i], public_key);
        }
    }
    cairn_config_free(config);
    return status;
}

static const struct cairn_ops_verb verbs[] = {
    {"create", false}, {"show", false}, {NULL, false}};

const struct cairn_ops_command cairn_ops_cmd_keys = {
    "keys", run_keys, "make or show CURVE keys", usage, verbs};
