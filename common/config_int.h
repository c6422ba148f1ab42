/*
 * config_int.h - internals of the cluster.conf reader shared by config.c
 * (the parser and checks) and config_keys.c (the key tables and the value
 * types). Not part of cairn_common's public API.
 */
#ifndef CAIRN_CONFIG_INT_H
#define CAIRN_CONFIG_INT_H

#include "config.h"

/* How a value is written in the file and stored in the section struct. */
enum config_type {
    CONFIG_STRING,   /* char *, any text */
    CONFIG_PATH,     /* char *, resolved against the file's directory */
    CONFIG_ENDPOINT, /* char *, tcp://HOST:PORT */
    CONFIG_ADDRESS,  /* char *, HOST:PORT */
    CONFIG_INTEGER,  /* uint64_t in [min, max] */
    CONFIG_SIZE,     /* uint64_t bytes in [min, max], "64M" */
    CONFIG_DURATION, /* uint64_t milliseconds in [min, max], "7d" */
    CONFIG_BOOL,     /* bool */
    CONFIG_ENUM,     /* an int-sized enum: index into choices */
    CONFIG_MODE,     /* uint64_t permission bits, octal "0600" */
    CONFIG_LIST,     /* struct cairn_config_list, [min, max] names */
};

#define CONFIG_REQUIRED 1u /* must be set in the file */
#define CONFIG_SECRET 2u   /* never printed back */
#define CONFIG_ZERO_OK 4u  /* 0 is allowed besides [min, max] */
#define CONFIG_UNIT 8u     /* a duration other than 0 needs its unit */
/* Not implemented by any daemon: a value other than the default is refused
 * ("KEY is not supported"), never accepted and ignored. */
#define CONFIG_UNSUPPORTED 16u
/* Values above max parse but are not implemented: refused as
 * "KEY above MAX is not supported" rather than "out of range". */
#define CONFIG_MAX_SUPPORTED 32u
/* A CONFIG_STRING that must be a valid name (it names a file). */
#define CONFIG_NAME 64u

/* One row of a section's key table. */
struct config_key {
    const char *name;
    enum config_type type;
    size_t offset; /* of the field in the section struct */
    uint64_t min, max;
    const char *default_value; /* as written in the file; NULL: unset */
    unsigned flags;
    const char *const *choices; /* CONFIG_ENUM: NULL-terminated names */
    const char *doc;            /* one line, for `cairnctl config show` */
};

/* One kind of section: [router], [node NAME], ... */
struct config_kind {
    const char *name;
    bool named;                    /* [kind NAME], repeatable */
    const struct config_key *keys; /* key table */
    size_t key_count;
    size_t struct_size;   /* named: size of one section struct */
    size_t config_offset; /* single: of the struct in cairn_config */
    size_t array_offset;  /* named: of the pointer array in cairn_config */
    size_t count_offset;  /* named: of its size_t count */
    size_t max_count;     /* named: most sections of this kind */
    size_t refs_offset;   /* named: of its array of resolved names, or 0 */
};

/* The whole configuration; the public header keeps it opaque. */
struct cairn_config {
    char *name;
    unsigned end_line; /* last line of the text, for "missing" errors */
    struct cairn_config_router router;
    struct cairn_config_compaction compaction;
    struct cairn_config_scrub scrub;
    struct cairn_config_security security;
    struct cairn_config_limits limits;
    struct cairn_config_channel **channels;
    size_t channel_count;
    struct cairn_config_destination **destinations;
    size_t destination_count;
    struct cairn_config_node **nodes;
    size_t node_count;
};

/* The section kinds in the order `config show` prints them. */
extern const struct config_kind config_kinds[];
extern const size_t config_kind_count;
const struct config_kind *config_kind_find(const char *name);
const struct config_key *config_key_find(const struct config_kind *kind,
                                         const char *name, size_t *index);

/* The struct of a single section kind, e.g. &config->router. */
struct cairn_config_origin *
config_single_section(struct cairn_config *config,
                      const struct config_kind *kind);
/* The sections of a named kind, e.g. config->nodes, and their count. */
struct cairn_config_origin **
config_named_sections(const struct cairn_config *config,
                      const struct config_kind *kind, size_t *count);

/* Names of sections and list items: [A-Za-z0-9._-], 1..64 bytes. */
bool config_name_valid(const char *name);

/*
 * Parses text (not empty) as the key's type into the field at section +
 * key->offset, replacing (and freeing) what was there. On a bad value
 * returns CAIRN_ECONFIG with the reason in why; CAIRN_ENOMEM.
 */
int config_value_parse(const struct config_key *key, const char *text,
                       void *section, char *why, size_t why_size);
/* Frees the field's storage (strings, lists) and leaves it unset. */
void config_value_clear(const struct config_key *key, void *section);
/* Appends the field's value as the file would write it. */
int config_value_format(const struct config_key *key, const void *section,
                        struct cairn_buf *out);

/*
 * Whether key is refused when set in a file: CONFIG_UNSUPPORTED. The key
 * table test (tests/test_config_keys.c) holds every other key to proof
 * that a daemon reads it.
 */
bool config_key_supported(const struct config_key *key);

/* The embedded text of cluster.example.conf (generated at build time). */
extern const char config_default_text[];

#endif /* CAIRN_CONFIG_INT_H */
