/*
 * restore_plan.c - what a restore will send, worked out from a source
 * before anything touches the network: which mailboxes under which names,
 * their records in ascending UID order (sync_server keeps a record's UID
 * only while UIDs ascend; Cyrus's own restore sends index row order and
 * loses UIDs, lab pitfall 10), the GUIDs to reserve per partition, and the
 * subscriptions, seen state and sieve scripts of the user.
 */
#include "restore_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Cyrus's default deletedprefix. */
#define DELETED_PREFIX "DELETED."
#define NAME_MAX_LEN 1024

void
cairn_restore_options_default(struct cairn_restore_options *options)
{
    memset(options, 0, sizeof(*options));
    options->mode = CAIRN_RESTORE_MODE_RESTORE;
    options->message_block = 1024;
    options->reserve_block = 8192;
}

/* One body the plan needs, before de-duplication. */
struct wanted {
    size_t partition;
    const char *guid; /* borrowed from the plan's mailbox trees */
    uint64_t size;
};

struct builder {
    struct cairn_restore_source *source;
    const struct cairn_restore_options *options;
    struct cairn_restore_plan *plan;
    char **names; /* live mailbox names in the backup */
    size_t name_count;
    struct cairn_dlist **items; /* SEEN, LSUB, SIEVE items (copies) */
    size_t item_count;
    struct wanted *wanted;
    size_t wanted_count, wanted_cap;
};

static int
push(void ***array, size_t *count, void *item)
{
    void **grown = realloc(*array, (*count + 1) * sizeof(**array));

    if (grown == NULL)
        return CAIRN_ENOMEM;
    grown[(*count)++] = item;
    *array = grown;
    return 0;
}

/* Collects GET USER's answer: mailbox names, and copies of the rest. */
static int
collect_user_item(void *ctx, const struct cairn_dlist *item)
{
    struct builder *builder = ctx;
    struct cairn_dlist *copy = NULL;
    const char *name = NULL;
    char *dup;
    int rc;

    if (strcmp(cairn_dlist_name(item), "MAILBOX") == 0) {
        if (!cairn_dlist_get_atom(item, "MBOXNAME", &name) || name == NULL)
            return CAIRN_ECORRUPT;
        if ((dup = strdup(name)) == NULL)
            return CAIRN_ENOMEM;
        if ((rc = push((void ***)&builder->names, &builder->name_count, dup)) <
            0)
            free(dup);
        return rc;
    }
    if ((rc = restore_dlist_clone(item, &copy)) < 0)
        return rc;
    if ((rc = push((void ***)&builder->items, &builder->item_count, copy)) < 0)
        cairn_dlist_free(copy);
    return rc;
}

/*
 * The internal name for what an administrator typed: an internal name as
 * is, "INBOX" for the user's INBOX, anything else below it ("Work",
 * "Work/2025" or "Work.2025"). Userids with a dot are "^" inside names,
 * "user@domain" lives under "domain!".
 */
static int
internal_name(const char *userid, const char *typed, char *name, size_t size)
{
    char user[NAME_MAX_LEN], folder[NAME_MAX_LEN];
    const char *at = strchr(userid, '@');
    size_t user_len = at ? (size_t)(at - userid) : strlen(userid);
    int written;

    if (strncmp(typed, "user.", 5) == 0 || strchr(typed, '!') != NULL ||
        strncmp(typed, DELETED_PREFIX, strlen(DELETED_PREFIX)) == 0) {
        written = snprintf(name, size, "%s", typed);
        return written >= 0 && (size_t)written < size ? 0 : CAIRN_ETOOBIG;
    }
    if (user_len >= sizeof(user) || strlen(typed) >= sizeof(folder))
        return CAIRN_ETOOBIG;
    for (size_t i = 0; i < user_len; i++)
        user[i] = userid[i] == '.' ? '^' : userid[i];
    user[user_len] = '\0';
    for (size_t i = 0; i <= strlen(typed); i++)
        folder[i] = typed[i] == '/' ? '.' : typed[i];
    if (strcmp(typed, "INBOX") == 0)
        written = snprintf(name, size, "%s%s%suser.%s", at ? at + 1 : "",
                           at ? "!" : "", "", user);
    else
        written = snprintf(name, size, "%s%suser.%s.%s", at ? at + 1 : "",
                           at ? "!" : "", user, folder);
    return written >= 0 && (size_t)written < size ? 0 : CAIRN_ETOOBIG;
}

/* Whether name (after any "domain!") starts with the deleted prefix. */
static bool
is_deleted_name(const char *name)
{
    const char *bang = strchr(name, '!');

    if (bang != NULL)
        name = bang + 1;
    return strncmp(name, DELETED_PREFIX, strlen(DELETED_PREFIX)) == 0;
}

/*
 * DELETED.user.x.F.5F3A0C1D -> user.x.F, as Cyrus's restore trims it
 * (prefix and the last component, the hex time of deletion).
 */
static int
trim_deleted(const char *name, char *out, size_t size)
{
    const char *bang = strchr(name, '!');
    size_t domain_len = bang ? (size_t)(bang - name) + 1 : 0;
    const char *rest = name + domain_len + strlen(DELETED_PREFIX);
    const char *last_dot = strrchr(rest, '.');
    size_t rest_len = last_dot ? (size_t)(last_dot - rest) : strlen(rest);

    if (domain_len + rest_len + 1 > size)
        return CAIRN_ETOOBIG;
    memcpy(out, name, domain_len);
    memcpy(out + domain_len, rest, rest_len);
    out[domain_len + rest_len] = '\0';
    return 0;
}

static bool
record_expunged(const struct cairn_dlist *record)
{
    const struct cairn_dlist *flags = NULL;
    const char *flag;

    if (!cairn_dlist_get_list(record, "FLAGS", &flags))
        return false;
    for (const struct cairn_dlist *f = cairn_dlist_first(flags); f;
         f = cairn_dlist_next(f)) {
        flag = cairn_dlist_value(f, NULL);
        if (flag != NULL && strcasecmp(flag, "\\Expunged") == 0)
            return true;
    }
    return false;
}

static uint32_t
record_uid(const struct cairn_dlist *record)
{
    uint32_t uid = 0;

    (void)cairn_dlist_get_num32(record, "UID", &uid);
    return uid;
}

static int
compare_records(const void *a, const void *b)
{
    uint32_t left = record_uid(*(const struct cairn_dlist *const *)a);
    uint32_t right = record_uid(*(const struct cairn_dlist *const *)b);

    return left < right ? -1 : left > right;
}

static int
partition_index(struct cairn_restore_plan *plan, const char *name,
                size_t *index)
{
    struct cairn_restore_partition *grown;

    for (size_t i = 0; i < plan->partition_count; i++) {
        if (strcmp(plan->partitions[i].name, name) == 0) {
            *index = i;
            return 0;
        }
    }
    grown =
        realloc(plan->partitions, (plan->partition_count + 1) * sizeof(*grown));
    if (grown == NULL)
        return CAIRN_ENOMEM;
    plan->partitions = grown;
    memset(&grown[plan->partition_count], 0, sizeof(*grown));
    if ((grown[plan->partition_count].name = strdup(name)) == NULL)
        return CAIRN_ENOMEM;
    *index = plan->partition_count++;
    return 0;
}

static int
want(struct builder *builder, size_t partition,
     const struct cairn_dlist *record)
{
    const char *guid = NULL;
    uint64_t size = 0;

    if (!cairn_dlist_get_guid(record, "GUID", &guid) ||
        !cairn_dlist_get_num64(record, "SIZE", &size))
        return CAIRN_ECORRUPT;
    if (builder->wanted_count == builder->wanted_cap) {
        size_t cap = builder->wanted_cap ? builder->wanted_cap * 2 : 256;
        struct wanted *grown = realloc(builder->wanted, cap * sizeof(*grown));

        if (grown == NULL)
            return CAIRN_ENOMEM;
        builder->wanted = grown;
        builder->wanted_cap = cap;
    }
    builder->wanted[builder->wanted_count++] =
        (struct wanted){partition, guid, size};
    return 0;
}

/* Whether the options choose single messages (--message, --uid). */
static bool
selecting(const struct cairn_restore_options *options)
{
    return options->message_guid != NULL || options->uid != 0;
}

static bool
record_selected(const struct cairn_restore_options *options,
                const struct cairn_dlist *record)
{
    const char *guid = NULL;

    if (options->uid != 0 && record_uid(record) != options->uid)
        return false;
    if (options->message_guid == NULL)
        return true;
    if (!cairn_dlist_get_guid(record, "GUID", &guid))
        (void)cairn_dlist_get_atom(record, "GUID", &guid);
    return guid != NULL && strcasecmp(guid, options->message_guid) == 0;
}

/*
 * A chosen message comes back live: a copy of record without \Expunged
 * (the server gives it a new UID in the live mailbox).
 */
static int
copy_live_record(struct cairn_dlist *list, const struct cairn_dlist *record)
{
    struct cairn_dlist *copy = NULL, *flags = NULL;
    int rc;

    if ((rc = cairn_dlist_add_kvlist(list, cairn_dlist_name(record), &copy)) <
        0)
        return rc;
    for (const struct cairn_dlist *c = cairn_dlist_first(record);
         c != NULL && rc == 0; c = cairn_dlist_next(c)) {
        if (strcmp(cairn_dlist_name(c), "FLAGS") != 0) {
            rc = restore_dlist_copy(copy, NULL, c);
            continue;
        }
        if ((rc = cairn_dlist_add_list(copy, "FLAGS", &flags)) < 0)
            break;
        for (const struct cairn_dlist *f = cairn_dlist_first(c);
             f != NULL && rc == 0; f = cairn_dlist_next(f)) {
            const char *flag = cairn_dlist_value(f, NULL);

            if (flag == NULL || strcasecmp(flag, "\\Expunged") != 0)
                rc = restore_dlist_copy(flags, NULL, f);
        }
    }
    return rc;
}

/* Copies the stored records into RECORD, sorted by UID, filtered. */
static int
copy_records(struct builder *builder, struct cairn_dlist *mailbox,
             const struct cairn_dlist *stored, size_t partition, bool *filtered)
{
    const struct cairn_dlist *records = NULL, **sorted = NULL;
    struct cairn_dlist *list = NULL;
    size_t count = 0;
    int rc;

    *filtered = false;
    if ((rc = cairn_dlist_add_list(mailbox, "RECORD", &list)) < 0)
        return rc;
    if (!cairn_dlist_get_list(stored, "RECORD", &records))
        return 0;
    if ((sorted = calloc(cairn_dlist_count(records) + 1, sizeof(*sorted))) ==
        NULL)
        return CAIRN_ENOMEM;
    for (const struct cairn_dlist *r = cairn_dlist_first(records); r;
         r = cairn_dlist_next(r)) {
        if (builder->options->skip_expunged && record_expunged(r))
            *filtered = true;
        else
            sorted[count++] = r;
    }
    qsort(sorted, count, sizeof(*sorted), compare_records);
    for (size_t i = 0; i < count && rc == 0; i++) {
        if (selecting(builder->options)) {
            *filtered = true;
            if (!record_selected(builder->options, sorted[i]))
                continue;
            rc = copy_live_record(list, sorted[i]);
        } else {
            rc = restore_dlist_copy(list, NULL, sorted[i]);
        }
        if (rc == 0)
            builder->plan->record_count++;
    }
    /* GUIDs point into the copies, which live as long as the plan. */
    for (const struct cairn_dlist *r = cairn_dlist_first(list); r && rc == 0;
         r = cairn_dlist_next(r))
        rc = want(builder, partition, r);
    free(sorted);
    return rc;
}

/* Whether any record would be left out by the options. */
static bool
records_filtered(const struct builder *builder,
                 const struct cairn_dlist *stored)
{
    const struct cairn_dlist *records = NULL;

    if (!builder->options->skip_expunged ||
        !cairn_dlist_get_list(stored, "RECORD", &records))
        return false;
    for (const struct cairn_dlist *r = cairn_dlist_first(records); r;
         r = cairn_dlist_next(r))
        if (record_expunged(r))
            return true;
    return false;
}

/*
 * One key of the mailbox as it will be sent. SYNC_CRC / SYNC_CRC_ANNOT
 * stay: after an APPLY the server checks them, which proves the restored
 * mailbox equal to the backed-up one; they become 0 / absent (no check)
 * when records are left out or the identity is new.
 */
static int
copy_mailbox_key(struct builder *builder, struct cairn_dlist *mailbox,
                 const struct cairn_dlist *key_node,
                 const struct cairn_dlist *stored, const char *target,
                 const char *partition, size_t index, bool new_identity,
                 bool filtered)
{
    const char *key = cairn_dlist_name(key_node);
    bool unused;

    if (strcmp(key, "RECORD") == 0)
        return copy_records(builder, mailbox, stored, index, &unused);
    if (strcmp(key, "MBOXNAME") == 0)
        return cairn_dlist_add_atom(mailbox, key, target);
    if (strcmp(key, "PARTITION") == 0)
        return cairn_dlist_add_atom(mailbox, key, partition);
    if (new_identity && strcmp(key, "UNIQUEID") == 0)
        return cairn_dlist_add_nil(mailbox, key);
    if (new_identity &&
        (strcmp(key, "UIDVALIDITY") == 0 || strcmp(key, "HIGHESTMODSEQ") == 0))
        return cairn_dlist_add_num(mailbox, key, 0);
    if ((filtered || new_identity) && strcmp(key, "SYNC_CRC") == 0)
        return cairn_dlist_add_num(mailbox, key, 0);
    if ((filtered || new_identity) && strcmp(key, "SYNC_CRC_ANNOT") == 0)
        return 0;
    return restore_dlist_copy(mailbox, NULL, key_node);
}

/* The mailbox as it will be sent, from its stored state. */
static int
build_mailbox(struct builder *builder, const struct cairn_dlist *stored,
              const char *target, bool new_identity, struct cairn_dlist **out)
{
    struct cairn_dlist *mailbox = cairn_dlist_new_kvlist("MAILBOX");
    const char *partition = builder->options->partition;
    bool filtered = records_filtered(builder, stored);
    size_t index = 0;
    char *dup = NULL;
    int rc = 0;

    if (mailbox == NULL)
        return CAIRN_ENOMEM;
    if (partition == NULL &&
        (!cairn_dlist_get_atom(stored, "PARTITION", &partition) ||
         partition == NULL))
        partition = "default";
    if ((rc = partition_index(builder->plan, partition, &index)) < 0)
        goto out;
    for (const struct cairn_dlist *c = cairn_dlist_first(stored);
         c != NULL && rc == 0; c = cairn_dlist_next(c))
        rc = copy_mailbox_key(builder, mailbox, c, stored, target, partition,
                              index, new_identity, filtered);
    if (rc == 0 && cairn_dlist_get(mailbox, "RECORD") == NULL)
        rc = copy_records(builder, mailbox, stored, index, &filtered);
    if (rc < 0)
        goto out;
    rc = CAIRN_ENOMEM;
    if ((dup = strdup(target)) == NULL)
        goto out;
    struct cairn_restore_partition *part = &builder->plan->partitions[index];
    if ((rc = push((void ***)&part->mboxnames, &part->mboxname_count, dup)) < 0)
        goto out;
    dup = NULL;
out:
    free(dup);
    if (rc < 0)
        cairn_dlist_free(mailbox);
    else
        *out = mailbox;
    return rc;
}

/* Whether name was chosen; with no choice every live, non-deleted one. */
static int
chosen(const struct builder *builder, const char *name, bool *is_chosen)
{
    const struct cairn_restore_options *options = builder->options;
    char wanted_name[NAME_MAX_LEN];
    int rc;

    *is_chosen = false;
    if (options->mailbox_count == 0) {
        *is_chosen = options->include_deleted || !is_deleted_name(name);
        return 0;
    }
    for (size_t i = 0; i < options->mailbox_count; i++) {
        if ((rc = internal_name(builder->source->userid, options->mailboxes[i],
                                wanted_name, sizeof(wanted_name))) < 0)
            return rc;
        if (strcmp(wanted_name, name) == 0)
            *is_chosen = true;
    }
    return 0;
}

/* Every chosen mailbox must exist in the backup. */
static int
check_choices(const struct builder *builder)
{
    const struct cairn_restore_options *options = builder->options;
    char wanted_name[NAME_MAX_LEN];
    bool found;
    int rc;

    for (size_t i = 0; i < options->mailbox_count; i++) {
        if ((rc = internal_name(builder->source->userid, options->mailboxes[i],
                                wanted_name, sizeof(wanted_name))) < 0)
            return rc;
        found = false;
        for (size_t j = 0; j < builder->name_count && !found; j++)
            found = strcmp(builder->names[j], wanted_name) == 0;
        if (!found)
            return CAIRN_ENOENT;
    }
    return 0;
}

static int
compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
compare_target_names(const void *a, const void *b)
{
    const char *left = NULL, *right = NULL;

    (void)cairn_dlist_get_atom(*(struct cairn_dlist *const *)a, "MBOXNAME",
                               &left);
    (void)cairn_dlist_get_atom(*(struct cairn_dlist *const *)b, "MBOXNAME",
                               &right);
    return strcmp(left ? left : "", right ? right : "");
}

static bool
has_records(const struct cairn_dlist *mailbox)
{
    const struct cairn_dlist *records = NULL;

    return cairn_dlist_get_list(mailbox, "RECORD", &records) &&
           cairn_dlist_count(records) > 0;
}

/* Takes back the RESERVE name build_mailbox added for a dropped mailbox. */
static void
drop_mboxname(struct cairn_restore_plan *plan, const char *target)
{
    for (size_t p = 0; p < plan->partition_count; p++) {
        struct cairn_restore_partition *part = &plan->partitions[p];

        if (part->mboxname_count > 0 &&
            strcmp(part->mboxnames[part->mboxname_count - 1], target) == 0) {
            free(part->mboxnames[--part->mboxname_count]);
            return;
        }
    }
}

static int
add_mailbox(struct builder *builder, const char *name)
{
    const struct cairn_restore_options *options = builder->options;
    struct cairn_dlist *stored = NULL, *mailbox = NULL;
    char target[NAME_MAX_LEN];
    bool new_identity = options->new_identity || options->into != NULL;
    int rc;

    if (options->into != NULL)
        rc = internal_name(builder->source->userid, options->into, target,
                           sizeof(target));
    else if (is_deleted_name(name) && !options->keep_deleted_prefix)
        rc = trim_deleted(name, target, sizeof(target));
    else
        rc = snprintf(target, sizeof(target), "%s", name) < (int)sizeof(target)
                 ? 0
                 : CAIRN_ETOOBIG;
    if (rc < 0)
        return rc;
    if ((rc = builder->source->ops->mailbox(builder->source->ctx, name,
                                            &stored)) < 0)
        return rc;
    if ((rc = build_mailbox(builder, stored, target, new_identity, &mailbox)) ==
            0 &&
        selecting(options) && !has_records(mailbox)) {
        cairn_dlist_free(mailbox); /* holds none of the chosen messages */
        drop_mboxname(builder->plan, target);
    } else if (rc == 0 &&
               (rc = push((void ***)&builder->plan->mailboxes,
                          &builder->plan->mailbox_count, mailbox)) < 0) {
        cairn_dlist_free(mailbox);
    }
    cairn_dlist_free(stored);
    return rc;
}

/* "APPLY name %(USERID u ...)" values from the stored meta items. */
static int
add_meta(struct builder *builder, const struct cairn_dlist *item)
{
    const char *kind = cairn_dlist_name(item), *filename = NULL;
    const char *userid = builder->source->userid;
    struct cairn_dlist *value = NULL;
    char *content = NULL;
    size_t len = 0;
    int64_t last_update = 0;
    int rc = 0;

    if (strcmp(kind, "LSUB") == 0) {
        for (const struct cairn_dlist *c = cairn_dlist_first(item);
             c != NULL && rc == 0; c = cairn_dlist_next(c)) {
            const char *name = NULL;

            rc = CAIRN_ENOMEM;
            if (!cairn_dlist_as_atom(c, &name) || name == NULL ||
                (value = cairn_dlist_new_kvlist("SUB")) == NULL)
                break;
            if ((rc = cairn_dlist_add_atom(value, "USERID", userid)) < 0 ||
                (rc = cairn_dlist_add_atom(value, "MBOXNAME", name)) < 0 ||
                (rc = push((void ***)&builder->plan->meta,
                           &builder->plan->meta_count, value)) < 0)
                break;
            value = NULL;
        }
        goto out;
    }
    rc = CAIRN_ENOMEM;
    if ((value = cairn_dlist_new_kvlist(kind)) == NULL ||
        (rc = cairn_dlist_add_atom(value, "USERID", userid)) < 0)
        goto out;
    if (strcmp(kind, "SEEN") == 0) {
        for (const struct cairn_dlist *c = cairn_dlist_first(item);
             c != NULL && rc == 0; c = cairn_dlist_next(c))
            rc = restore_dlist_copy(value, NULL, c);
    } else if (strcmp(kind, "SIEVE") == 0) {
        rc = CAIRN_ECORRUPT;
        if (!cairn_dlist_get_atom(item, "FILENAME", &filename) ||
            filename == NULL ||
            !cairn_dlist_get_date(item, "LAST_UPDATE", &last_update))
            goto out;
        if ((rc = builder->source->ops->sieve(builder->source->ctx, filename,
                                              &content, &len)) < 0 ||
            (rc = cairn_dlist_add_atom(value, "FILENAME", filename)) < 0 ||
            (rc = cairn_dlist_add_num(value, "LAST_UPDATE",
                                      (uint64_t)last_update)) < 0 ||
            (rc = cairn_dlist_add_buf(value, "CONTENT", content, len)) < 0)
            goto out;
    } else {
        rc = 0; /* nothing else is restored */
        goto out;
    }
    if (rc == 0 && (rc = push((void ***)&builder->plan->meta,
                              &builder->plan->meta_count, value)) == 0)
        value = NULL;
out:
    free(content);
    cairn_dlist_free(value);
    return rc;
}

/* "APPLY ACTIVATE_SIEVE %(USERID u FILENAME name.bc)" (the bytecode). */
static int
add_activate_sieve(struct builder *builder)
{
    const char *name = builder->options->activate_sieve;
    size_t len = strlen(name);
    struct cairn_dlist *value = NULL;
    char filename[NAME_MAX_LEN];
    int rc = CAIRN_ENOMEM;

    if (len > 7 && strcmp(name + len - 7, ".script") == 0)
        len -= 7;
    if (len == 0 || len + 4 > sizeof(filename))
        return CAIRN_EINVAL;
    snprintf(filename, sizeof(filename), "%.*s.bc", (int)len, name);
    if ((value = cairn_dlist_new_kvlist("ACTIVATE_SIEVE")) == NULL)
        goto out;
    if ((rc = cairn_dlist_add_atom(value, "USERID", builder->source->userid)) <
            0 ||
        (rc = cairn_dlist_add_atom(value, "FILENAME", filename)) < 0 ||
        (rc = push((void ***)&builder->plan->meta, &builder->plan->meta_count,
                   value)) < 0)
        goto out;
    value = NULL;
out:
    cairn_dlist_free(value);
    return rc;
}

static int
compare_wanted(const void *a, const void *b)
{
    const struct wanted *left = a, *right = b;

    if (left->partition != right->partition)
        return left->partition < right->partition ? -1 : 1;
    return strcmp(left->guid, right->guid);
}

/*
 * One entry per (partition, GUID). A body wanted on two partitions counts
 * twice in the totals: it is uploaded to each.
 */
static int
fill_partitions(struct builder *builder)
{
    struct cairn_restore_plan *plan = builder->plan;

    qsort(builder->wanted, builder->wanted_count, sizeof(*builder->wanted),
          compare_wanted);
    for (size_t i = 0; i < builder->wanted_count; i++) {
        struct wanted *w = &builder->wanted[i];
        struct cairn_restore_partition *part = &plan->partitions[w->partition];
        size_t n = part->guid_count;
        char **guids;
        uint64_t *sizes;

        if (i > 0 && builder->wanted[i - 1].partition == w->partition &&
            strcmp(builder->wanted[i - 1].guid, w->guid) == 0)
            continue;
        if ((guids = realloc(part->guids, (n + 1) * sizeof(*guids))) == NULL)
            return CAIRN_ENOMEM;
        part->guids = guids;
        if ((sizes = realloc(part->sizes, (n + 1) * sizeof(*sizes))) == NULL)
            return CAIRN_ENOMEM;
        part->sizes = sizes;
        if ((part->guids[n] = strdup(w->guid)) == NULL)
            return CAIRN_ENOMEM;
        part->sizes[n] = w->size;
        part->guid_count++;
        plan->message_count++;
        plan->message_bytes += w->size;
    }
    return 0;
}

static int
check_options(const struct cairn_restore_options *options)
{
    if (options->into != NULL && options->mailbox_count != 1)
        return CAIRN_EINVAL;
    if (options->uid != 0 && options->mailbox_count != 1)
        return CAIRN_EINVAL; /* a UID names a message in one mailbox */
    if (options->mode == CAIRN_RESTORE_MODE_APPLY &&
        (options->new_identity || options->into != NULL))
        return CAIRN_EINVAL; /* APPLY needs the mailbox's own identity */
    if (options->message_block == 0 || options->message_block > 1024 ||
        options->reserve_block == 0 || options->reserve_block > 8192)
        return CAIRN_EINVAL;
    return 0;
}

int
cairn_restore_plan_build(struct cairn_restore_source *source,
                         const struct cairn_restore_options *options,
                         struct cairn_restore_plan **plan)
{
    struct builder builder = {source, options, NULL, NULL, 0,
                              NULL,   0,       NULL, 0,    0};
    bool is_chosen;
    int rc;

    *plan = NULL;
    if ((rc = check_options(options)) < 0)
        return rc;
    if ((builder.plan = calloc(1, sizeof(*builder.plan))) == NULL ||
        (builder.plan->userid = strdup(source->userid)) == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    builder.plan->options = *options;
    if ((rc = source->ops->user(source->ctx, collect_user_item, &builder)) <
            0 ||
        (rc = check_choices(&builder)) < 0)
        goto out;
    /* Parents before children (INBOX first): sync_server creates missing
     * parents as it goes, and a sorted order is reproducible. */
    qsort(builder.names, builder.name_count, sizeof(*builder.names),
          compare_names);
    for (size_t i = 0; i < builder.name_count; i++) {
        if ((rc = chosen(&builder, builder.names[i], &is_chosen)) < 0)
            goto out;
        if (is_chosen && (rc = add_mailbox(&builder, builder.names[i])) < 0)
            goto out;
    }
    /* By target name: a trimmed DELETED.* name may sort anywhere. */
    if (builder.plan->mailbox_count > 0)
        qsort(builder.plan->mailboxes, builder.plan->mailbox_count,
              sizeof(*builder.plan->mailboxes), compare_target_names);
    /* Subscriptions, seen state and sieve belong to the whole user. */
    if (selecting(options) && builder.plan->record_count == 0) {
        rc = CAIRN_ENOENT; /* no chosen message in the chosen mailboxes */
        goto out;
    }
    for (size_t i = 0; i < builder.item_count && !options->skip_meta &&
                       options->mailbox_count == 0 && !selecting(options);
         i++) {
        if ((rc = add_meta(&builder, builder.items[i])) < 0)
            goto out;
    }
    if (options->activate_sieve != NULL &&
        (rc = add_activate_sieve(&builder)) < 0)
        goto out;
    rc = fill_partitions(&builder);
out:
    for (size_t i = 0; i < builder.name_count; i++)
        free(builder.names[i]);
    for (size_t i = 0; i < builder.item_count; i++)
        cairn_dlist_free(builder.items[i]);
    free(builder.names);
    free(builder.items);
    free(builder.wanted);
    if (rc < 0)
        cairn_restore_plan_free(builder.plan);
    else
        *plan = builder.plan;
    return rc;
}

void
cairn_restore_plan_free(struct cairn_restore_plan *plan)
{
    if (plan == NULL)
        return;
    for (size_t i = 0; i < plan->mailbox_count; i++)
        cairn_dlist_free(plan->mailboxes[i]);
    for (size_t i = 0; i < plan->meta_count; i++)
        cairn_dlist_free(plan->meta[i]);
    for (size_t i = 0; i < plan->partition_count; i++) {
        struct cairn_restore_partition *part = &plan->partitions[i];

        for (size_t j = 0; j < part->guid_count; j++)
            free(part->guids[j]);
        for (size_t j = 0; j < part->mboxname_count; j++)
            free(part->mboxnames[j]);
        free(part->name);
        free(part->guids);
        free(part->sizes);
        free(part->mboxnames);
    }
    free(plan->mailboxes);
    free(plan->meta);
    free(plan->partitions);
    free(plan->userid);
    free(plan);
}

int
cairn_restore_reserve_request(const struct cairn_restore_plan *plan,
                              size_t partition, size_t first, size_t count,
                              struct cairn_dlist **request)
{
    const struct cairn_restore_partition *part;
    struct cairn_dlist *value = NULL, *names = NULL, *guids = NULL;
    int rc = CAIRN_EINVAL;

    *request = NULL;
    if (partition >= plan->partition_count)
        return CAIRN_EINVAL;
    part = &plan->partitions[partition];
    if (first > part->guid_count || count > part->guid_count - first)
        return CAIRN_EINVAL;
    rc = CAIRN_ENOMEM;
    if ((value = cairn_dlist_new_kvlist("RESERVE")) == NULL)
        goto out;
    if ((rc = cairn_dlist_add_atom(value, "PARTITION", part->name)) < 0 ||
        (rc = cairn_dlist_add_list(value, "MBOXNAME", &names)) < 0)
        goto out;
    for (size_t i = 0; i < part->mboxname_count && rc == 0; i++)
        rc = cairn_dlist_add_atom(names, NULL, part->mboxnames[i]);
    if (rc == 0)
        rc = cairn_dlist_add_list(value, "GUID", &guids);
    for (size_t i = first; i < first + count && rc == 0; i++)
        rc = cairn_dlist_add_guid(guids, NULL, part->guids[i]);
out:
    if (rc < 0)
        cairn_dlist_free(value);
    else
        *request = value;
    return rc;
}

int
cairn_restore_message_request(const struct cairn_restore_plan *plan,
                              size_t partition, const char *const *guids,
                              size_t count, struct cairn_dlist **request)
{
    const struct cairn_restore_partition *part;
    struct cairn_dlist *value = NULL;
    int rc = 0;

    *request = NULL;
    if (partition >= plan->partition_count)
        return CAIRN_EINVAL;
    part = &plan->partitions[partition];
    if ((value = cairn_dlist_new_list("MESSAGE")) == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < count && rc == 0; i++) {
        /* the partition's GUIDs are sorted (fill_partitions) */
        char *const *found = bsearch(&guids[i], part->guids, part->guid_count,
                                     sizeof(*part->guids), compare_names);

        rc = found != NULL
                 ? cairn_dlist_add_file(value, NULL, part->name, guids[i],
                                        part->sizes[found - part->guids], NULL,
                                        NULL, NULL)
                 : CAIRN_ENOENT;
    }
    if (rc < 0)
        cairn_dlist_free(value);
    else
        *request = value;
    return rc;
}
