/*
 * config_man.c - cluster.conf(5), generated from the key table
 * (config_keys.c) at build time: the page lists exactly the keys the
 * parser accepts, with their types, defaults and ranges.
 */
#include "config_int.h"

#include <string.h>

/* The type as the page names it (the value types of cluster.example.conf). */
static const char *
type_name(enum config_type type)
{
    switch (type) {
    case CONFIG_STRING:
        return "string";
    case CONFIG_PATH:
        return "path";
    case CONFIG_ENDPOINT:
        return "endpoint";
    case CONFIG_ADDRESS:
        return "address";
    case CONFIG_INTEGER:
        return "integer";
    case CONFIG_SIZE:
        return "size";
    case CONFIG_DURATION:
        return "duration";
    case CONFIG_BOOL:
        return "bool";
    case CONFIG_ENUM:
        return "choice";
    case CONFIG_MODE:
        return "mode";
    case CONFIG_LIST:
        return "list";
    }
    return "value";
}

/* The range of a number key, "min..max" in the key's units. */
static int
append_range(struct cairn_buf *out, const struct config_key *key)
{
    if (key->type == CONFIG_INTEGER && key->min != key->max)
        return cairn_buf_printf(out, "; %llu to %llu",
                                (unsigned long long)key->min,
                                (unsigned long long)key->max);
    if (key->type == CONFIG_LIST)
        return cairn_buf_printf(out, "; %llu to %llu names",
                                (unsigned long long)key->min,
                                (unsigned long long)key->max);
    if (key->type == CONFIG_ENUM) {
        int rc = cairn_buf_append_str(out, "; one of");

        for (size_t i = 0; key->choices[i] != NULL && rc == CAIRN_OK; i++)
            rc = cairn_buf_printf(out, "%s %s", i == 0 ? "" : ",",
                                  key->choices[i]);
        return rc;
    }
    return CAIRN_OK;
}

static int
append_key(struct cairn_buf *out, const struct config_key *key)
{
    int rc = cairn_buf_append_str(out, ".TP\n\\fB");

    if (rc == CAIRN_OK)
        rc = cairn_buf_append_roff(out, key->name);
    if (rc == CAIRN_OK)
        rc = cairn_buf_printf(out, "\\fR = \\fI%s\\fR\n", type_name(key->type));
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_roff(out, key->doc);
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_str(out, ".\n(");
    if (rc == CAIRN_OK && (key->flags & CONFIG_UNSUPPORTED))
        rc = cairn_buf_append_str(out, "Not supported: refused when set");
    else if (rc == CAIRN_OK && (key->flags & CONFIG_REQUIRED))
        rc = cairn_buf_append_str(out, "Required");
    else if (rc == CAIRN_OK && key->default_value != NULL) {
        rc = cairn_buf_append_str(out, "Default ");
        if (rc == CAIRN_OK)
            rc = cairn_buf_append_roff(out, key->default_value);
    } else if (rc == CAIRN_OK)
        rc = cairn_buf_append_str(out, "Unset by default");
    if (rc == CAIRN_OK)
        rc = append_range(out, key);
    if (rc == CAIRN_OK && (key->flags & CONFIG_SECRET))
        rc = cairn_buf_append_str(out, "; never printed back");
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_str(out, ".)\n");
    return rc;
}

static const char header[] =
    ".SH NAME\n"
    "cluster.conf \\- configuration of a cairn backup cluster\n"
    ".SH SYNOPSIS\n"
    ".I /etc/cairn/cluster.conf\n"
    ".SH DESCRIPTION\n"
    "One file describes the whole cluster: the router, its csync channels,\n"
    "the destinations and their storage nodes; every program of the cluster\n"
    "(\\fBcairn\\-router\\fR(8), \\fBcairn\\-node\\fR(8),\n"
    "\\fBcairnctl\\fR(8)) reads the same file.\n"
    "The whole file is checked before a daemon starts or reloads it\n"
    "(SIGHUP); an error names the file and line.\n"
    "Check a file with \\fBcairnctl config check\\fR \\fIfile\\fR and print\n"
    "every key's effective value with \\fBcairnctl config show\\fR "
    "\\fIfile\\fR.\n"
    ".PP\n"
    "The file holds \\fB[section]\\fR or \\fB[section\\ \\fINAME\\fB]\\fR\n"
    "headers followed by \\fIkey\\fR\\ =\\ \\fIvalue\\fR lines.\n"
    "A line starting with \\(aq#\\(aq or \\(aq;\\(aq is a comment.\n"
    "An empty value means the key's default.\n"
    "A key the table below does not list is an error.\n"
    ".SH VALUE TYPES\n"
    ".TP\n.I size\n"
    "bytes, with an optional K, M, G or T suffix (powers of 1024).\n"
    ".TP\n.I duration\n"
    "a number with a unit ms, s, m, h, d or w (7d); a bare number is\n"
    "seconds.\n"
    ".TP\n.I bool\n"
    "yes/no, true/false, on/off, 1/0.\n"
    ".TP\n.I list\n"
    "names separated by commas and/or blanks.\n"
    ".TP\n.I endpoint\n"
    "a ZeroMQ endpoint, tcp://HOST:PORT.\n"
    ".TP\n.I address\n"
    "HOST:PORT (\\(aq*\\(aq listens everywhere; IPv6 as [::1]).\n"
    ".TP\n.I path\n"
    "a relative path is relative to the directory of the file.\n"
    ".TP\n.I mode\n"
    "octal permission bits, e.g. 0600.\n"
    ".TP\n.I choice\n"
    "one of the words listed with the key.\n"
    ".PP\n"
    "Names of channels, destinations and nodes use letters, digits, "
    "\\(aq.\\(aq,\n"
    "\\(aq_\\(aq and \\(aq\\-\\(aq (at most 64 bytes).\n"
    ".SH SECTIONS AND KEYS\n";

static const char footer[] =
    ".SH FILES\n"
    ".TP\n.I /etc/cairn/cluster.conf\n"
    "the file the systemd units pass with \\fB\\-c\\fR.\n"
    ".TP\n.I /usr/share/doc/cairn/cluster.example.conf\n"
    "an example with every key explained; it is also the built\\-in\n"
    "default of programs started without \\fB\\-c\\fR.\n"
    ".SH SEE ALSO\n"
    "\\fBcairn\\-router\\fR(8), \\fBcairn\\-node\\fR(8), "
    "\\fBcairnctl\\fR(8)\n";

int
cairn_config_format_man(const char *version, struct cairn_buf *out)
{
    int rc = cairn_buf_printf(out,
                              ".TH CLUSTER.CONF 5 \"\" \"cairn %s\" "
                              "\"cairn manual\"\n",
                              version);

    if (rc == CAIRN_OK)
        rc = cairn_buf_append_str(out, header);
    for (size_t k = 0; k < config_kind_count && rc == CAIRN_OK; k++) {
        const struct config_kind *kind = &config_kinds[k];

        rc = cairn_buf_printf(out, ".SS [%s%s]\n", kind->name,
                              kind->named ? " \\fINAME\\fR" : "");
        if (rc == CAIRN_OK && kind->named)
            rc =
                cairn_buf_printf(out, "Repeatable, one per %s (at most %zu).\n",
                                 kind->name, kind->max_count);
        for (size_t i = 0; i < kind->key_count && rc == CAIRN_OK; i++)
            rc = append_key(out, &kind->keys[i]);
    }
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_str(out, footer);
    return rc;
}
