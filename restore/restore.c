/*
 * restore.c - sending a restore plan to a Cyrus sync_server: per partition
 * APPLY RESERVE (read * MISSING) and APPLY MESSAGE blocks of the missing
 * bodies streamed out of the source; then one RESTORE (or APPLY) MAILBOX
 * per mailbox; then APPLY SUB / SEEN / SIEVE. Nothing in between may be a
 * RESTART: sync_server drops staged bodies on RESTART and EXIT (§7.4).
 */
#include "restore_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct put_context {
    struct cairn_restore_body_context *body;
    struct cairn_buf *out; /* tests: bodies go into the print buffer */
    uint64_t written;
};

static int
put_body(void *ctx, const void *data, size_t len)
{
    struct put_context *put = ctx;

    put->written += len;
    if (put->body->session == NULL)
        return cairn_buf_append(put->out, data, len);
    return cairn_restore_session_write(put->body->session, data, len);
}

int
cairn_restore_write_body(void *ctx, const struct cairn_dlist *file,
                         struct cairn_buf *out)
{
    struct cairn_restore_body_context *body = ctx;
    struct put_context put = {body, out, 0};
    const char *partition, *guid;
    uint64_t size;
    void *handle;
    int rc;

    if (!cairn_dlist_file_info(file, &partition, &guid, &size, &handle))
        return CAIRN_EINVAL;
    /* What the serialiser holds goes first, then the body straight from
     * the store to the socket: a body is never whole in memory. */
    if (body->session != NULL) {
        if ((rc = cairn_restore_session_write(body->session, out->data,
                                              out->len)) < 0)
            return rc;
        cairn_buf_reset(out);
    }
    if ((rc = body->source->ops->message(body->source->ctx, guid, put_body,
                                         &put)) == 0 &&
        put.written != size)
        rc = CAIRN_EMISMATCH;
    if (rc < 0) {
        snprintf(body->failed_guid, sizeof(body->failed_guid), "%s", guid);
        body->failed_size = size;
        return rc;
    }
    body->bytes += size;
    return 0;
}

/* Sets result->error (the first cause only). */
static void fail(struct cairn_restore_result *result, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
fail(struct cairn_restore_result *result, const char *fmt, ...)
{
    va_list ap;

    if (result->error[0] != '\0')
        return;
    va_start(ap, fmt);
    vsnprintf(result->error, sizeof(result->error), fmt, ap);
    va_end(ap);
}

/* What a failed exchange with the server means, in words. */
static const char *
session_failure(int rc)
{
    switch (rc) {
    case CAIRN_ETIMEOUT:
        return "the server did not answer within --timeout";
    case CAIRN_EPROTO:
        return "the server closed the connection or answered out of protocol";
    case CAIRN_EIO:
        return "the connection to the server failed";
    case CAIRN_ETOOBIG:
        return "the server's answer is over the client's limit";
    default:
        return cairn_strerror(rc);
    }
}

static void
report(void (*progress)(void *, const struct cairn_restore_progress *),
       void *ctx, const char *step, const char *name, uint64_t done,
       uint64_t total, uint64_t bytes)
{
    struct cairn_restore_progress p = {step, name, done, total, bytes};

    if (progress != NULL)
        progress(ctx, &p);
}

static void
keep_text(struct cairn_restore_result *result, const char *name,
          const struct cairn_csync_response *response)
{
    snprintf(result->failed_mailbox, sizeof(result->failed_mailbox), "%s",
             name);
    snprintf(result->server_text, sizeof(result->server_text), "%s %s",
             response->status == CAIRN_CSYNC_NO    ? "NO"
             : response->status == CAIRN_CSYNC_BAD ? "BAD"
                                                   : "BYE",
             response->text ? response->text : "");
}

/* RESERVE the partition's GUIDs block by block; collect what is MISSING. */
static int
reserve(struct cairn_restore_session *session,
        const struct cairn_restore_plan *plan, size_t partition,
        char ***missing, size_t *missing_count,
        struct cairn_restore_result *result)
{
    const struct cairn_restore_partition *part = &plan->partitions[partition];
    size_t block = plan->options.reserve_block;
    struct cairn_csync_response response = {0};
    struct cairn_dlist *request = NULL;
    int rc = 0;

    for (size_t first = 0; first < part->guid_count && rc == 0;
         first += block) {
        size_t count =
            part->guid_count - first < block ? part->guid_count - first : block;
        const struct cairn_dlist *list = NULL;

        if ((rc = cairn_restore_reserve_request(plan, partition, first, count,
                                                &request)) < 0)
            break;
        if ((rc = cairn_restore_session_command(session, "APPLY", request, NULL,
                                                &response)) < 0) {
            fail(result, "APPLY RESERVE (partition %s): %s", part->name,
                 session_failure(rc));
            break;
        }
        if (response.status != CAIRN_CSYNC_OK) {
            keep_text(result, part->name, &response);
            fail(result, "the server refused APPLY RESERVE (partition %s): %s",
                 part->name, result->server_text);
            rc = CAIRN_EPROTO;
            break;
        }
        if (response.item_count > 0) {
            list = response.items[0];
            if (strcmp(cairn_dlist_name(list), "MISSING") != 0)
                rc = CAIRN_EPROTO;
        }
        for (const struct cairn_dlist *g = list ? cairn_dlist_first(list)
                                                : NULL;
             g != NULL && rc == 0; g = cairn_dlist_next(g)) {
            const char *guid = NULL;
            char **grown;

            rc = CAIRN_EPROTO;
            if (!cairn_dlist_as_guid(g, &guid))
                break;
            rc = CAIRN_ENOMEM;
            if ((grown = realloc(*missing, (*missing_count + 1) *
                                               sizeof(*grown))) == NULL)
                break;
            *missing = grown;
            if ((grown[*missing_count] = strdup(guid)) == NULL)
                break;
            (*missing_count)++;
            rc = 0;
        }
        result->messages_present += count;
        cairn_csync_response_release(&response);
        cairn_dlist_free(request);
        request = NULL;
    }
    result->messages_present -= *missing_count;
    cairn_csync_response_release(&response);
    cairn_dlist_free(request);
    return rc;
}

/* Why an APPLY MESSAGE failed: a body the source could not give, or the
 * connection. */
static void
upload_failed(struct cairn_restore_source *source,
              const struct cairn_restore_body_context *body,
              const char *partition, int rc,
              struct cairn_restore_result *result)
{
    const char *why = NULL;

    if (body->failed_guid[0] == '\0') {
        fail(result, "APPLY MESSAGE (partition %s): %s", partition,
             session_failure(rc));
        return;
    }
    if (source->ops->error != NULL)
        why = source->ops->error(source->ctx);
    fail(result, "reading body %s (%llu bytes) from the backup: %s",
         body->failed_guid, (unsigned long long)body->failed_size,
         why != NULL ? why : cairn_strerror(rc));
}

/* APPLY MESSAGE in blocks of the plan's size, bodies streamed. */
static int
upload(struct cairn_restore_session *session,
       struct cairn_restore_source *source,
       const struct cairn_restore_plan *plan, size_t partition,
       char *const *missing, size_t missing_count,
       void (*progress)(void *, const struct cairn_restore_progress *),
       void *progress_ctx, struct cairn_restore_result *result)
{
    struct cairn_restore_body_context body = {session, source, 0, "", 0};
    const struct cairn_dlist_body_writer writer = {cairn_restore_write_body,
                                                   &body};
    const char *name = plan->partitions[partition].name;
    struct cairn_csync_response response = {0};
    size_t block = plan->options.message_block;
    int rc = 0;

    for (size_t first = 0; first < missing_count && rc == 0; first += block) {
        size_t count =
            missing_count - first < block ? missing_count - first : block;
        struct cairn_dlist *request = NULL;

        if ((rc = cairn_restore_message_request(
                 plan, partition, (const char *const *)missing + first, count,
                 &request)) == 0)
            rc = cairn_restore_session_command(session, "APPLY", request,
                                               &writer, &response);
        cairn_dlist_free(request);
        if (rc < 0)
            upload_failed(source, &body, name, rc, result);
        if (rc == 0 && response.status != CAIRN_CSYNC_OK) {
            keep_text(result, name, &response);
            fail(result, "the server refused APPLY MESSAGE (partition %s): %s",
                 name, result->server_text);
            rc = CAIRN_EPROTO;
        }
        cairn_csync_response_release(&response);
        if (rc == 0) {
            result->messages_uploaded += count;
            result->bytes_uploaded = body.bytes;
            report(progress, progress_ctx, "upload", name, first + count,
                   missing_count, body.bytes);
        }
    }
    return rc;
}

static int
send_bodies(struct cairn_restore_session *session,
            struct cairn_restore_source *source,
            const struct cairn_restore_plan *plan,
            void (*progress)(void *, const struct cairn_restore_progress *),
            void *progress_ctx, struct cairn_restore_result *result)
{
    int rc = 0;

    for (size_t p = 0; p < plan->partition_count && rc == 0; p++) {
        char **missing = NULL;
        size_t missing_count = 0;

        if (plan->partitions[p].guid_count == 0)
            continue;
        report(progress, progress_ctx, "reserve", plan->partitions[p].name, 0,
               plan->partitions[p].guid_count, 0);
        if ((rc = reserve(session, plan, p, &missing, &missing_count,
                          result)) == 0 &&
            source->ops->order != NULL)
            rc = source->ops->order(source->ctx, missing, missing_count);
        if (rc == 0)
            rc = upload(session, source, plan, p, missing, missing_count,
                        progress, progress_ctx, result);
        for (size_t i = 0; i < missing_count; i++)
            free(missing[i]);
        free(missing);
    }
    return rc;
}

/*
 * Asks the target which of the plan's mailboxes it holds already
 * (GET MAILBOXES): APPLY MAILBOX is only right for a mailbox that is new
 * there or is the same mailbox (same uniqueid). *existing is owned.
 */
static int
ask_target(struct cairn_restore_session *session,
           const struct cairn_restore_plan *plan,
           struct cairn_csync_response *existing,
           struct cairn_restore_result *result)
{
    struct cairn_dlist *names = cairn_dlist_new_list("MAILBOXES");
    int rc = 0;

    if (names == NULL)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < plan->mailbox_count && rc == 0; i++) {
        const char *name = NULL;

        (void)cairn_dlist_get_atom(plan->mailboxes[i], "MBOXNAME", &name);
        rc = cairn_dlist_add_atom(names, NULL, name);
    }
    if (rc == 0 && (rc = cairn_restore_session_command(session, "GET", names,
                                                       NULL, existing)) < 0)
        fail(result, "GET MAILBOXES: %s", session_failure(rc));
    if (rc == 0 && existing->status != CAIRN_CSYNC_OK) {
        keep_text(result, "GET MAILBOXES", existing);
        fail(result, "the server refused GET MAILBOXES: %s",
             result->server_text);
        rc = CAIRN_EPROTO;
    }
    cairn_dlist_free(names);
    return rc;
}

/* Whether the target holds mailbox's name under another uniqueid. */
static bool
held_by_another(const struct cairn_csync_response *existing,
                const struct cairn_dlist *mailbox)
{
    const char *name = NULL, *uniqueid = NULL;

    (void)cairn_dlist_get_atom(mailbox, "MBOXNAME", &name);
    (void)cairn_dlist_get_atom(mailbox, "UNIQUEID", &uniqueid);
    for (size_t i = 0; i < existing->item_count && name != NULL; i++) {
        const char *held = NULL, *held_id = NULL;

        if (cairn_dlist_get_atom(existing->items[i], "MBOXNAME", &held) &&
            held != NULL && strcmp(held, name) == 0)
            return !cairn_dlist_get_atom(existing->items[i], "UNIQUEID",
                                         &held_id) ||
                   held_id == NULL || uniqueid == NULL ||
                   strcmp(held_id, uniqueid) != 0;
    }
    return false;
}

/*
 * One mailbox. In APPLY mode a mailbox the target holds under another
 * uniqueid is sent as RESTORE MAILBOX, which appends (counted as a
 * fallback). Any refusal stops the run: for a new mailbox it means the
 * server did not arrive at the backed-up state (SYNC_CRC).
 */
static int
send_mailbox(struct cairn_restore_session *session,
             const struct cairn_restore_plan *plan,
             const struct cairn_csync_response *existing,
             const struct cairn_dlist *mailbox,
             struct cairn_restore_result *result)
{
    struct cairn_csync_response response = {0};
    const struct cairn_dlist *records = NULL;
    const char *name = NULL;
    bool apply = plan->options.mode == CAIRN_RESTORE_MODE_APPLY;
    int rc;

    if (apply && held_by_another(existing, mailbox)) {
        apply = false;
        result->mailboxes_fallback++;
    }
    (void)cairn_dlist_get_atom(mailbox, "MBOXNAME", &name);
    rc = cairn_restore_session_command(session, apply ? "APPLY" : "RESTORE",
                                       mailbox, NULL, &response);
    if (rc < 0)
        fail(result, "%s MAILBOX %s: %s", apply ? "APPLY" : "RESTORE",
             name ? name : "", session_failure(rc));
    if (rc == 0 && response.status != CAIRN_CSYNC_OK) {
        keep_text(result, name ? name : "", &response);
        fail(result, "the server refused %s MAILBOX %s: %s",
             apply ? "APPLY" : "RESTORE", name ? name : "",
             result->server_text);
        rc = CAIRN_EPROTO;
    }
    if (rc == 0) {
        result->mailboxes_restored++;
        if (cairn_dlist_get_list(mailbox, "RECORD", &records))
            result->records_sent += cairn_dlist_count(records);
    }
    cairn_csync_response_release(&response);
    return rc;
}

int
cairn_restore_run(struct cairn_restore_session *session,
                  struct cairn_restore_source *source,
                  const struct cairn_restore_plan *plan,
                  void (*progress)(void *,
                                   const struct cairn_restore_progress *),
                  void *progress_ctx, struct cairn_restore_result *result)
{
    struct cairn_csync_response response = {0}, existing = {0};
    int rc;

    memset(result, 0, sizeof(*result));
    if ((plan->options.mode == CAIRN_RESTORE_MODE_APPLY &&
         (rc = ask_target(session, plan, &existing, result)) < 0) ||
        (rc = send_bodies(session, source, plan, progress, progress_ctx,
                          result)) < 0)
        goto out;
    for (size_t i = 0; i < plan->mailbox_count; i++) {
        const char *name = NULL;

        (void)cairn_dlist_get_atom(plan->mailboxes[i], "MBOXNAME", &name);
        if ((rc = send_mailbox(session, plan, &existing, plan->mailboxes[i],
                               result)) < 0)
            goto out;
        report(progress, progress_ctx, "mailbox", name, i + 1,
               plan->mailbox_count, result->bytes_uploaded);
    }
    /* As in a user sync, a refused SUB / SEEN / SIEVE does not stop us. */
    for (size_t i = 0; i < plan->meta_count; i++) {
        if ((rc = cairn_restore_session_command(session, "APPLY", plan->meta[i],
                                                NULL, &response)) < 0) {
            fail(result, "APPLY %s: %s", cairn_dlist_name(plan->meta[i]),
                 session_failure(rc));
            goto out;
        }
        if (response.status == CAIRN_CSYNC_OK)
            result->meta_sent++;
        else
            result->meta_refused++;
        cairn_csync_response_release(&response);
        report(progress, progress_ctx, "meta", cairn_dlist_name(plan->meta[i]),
               i + 1, plan->meta_count, result->bytes_uploaded);
    }
out:
    if (rc < 0)
        fail(result, "%s", cairn_strerror(rc));
    cairn_csync_response_release(&existing);
    return rc;
}
