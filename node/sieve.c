/*
 * sieve.c - the text of a live sieve script read back from the log:
 * Cyrus's index records only where a SIEVE line is (chunk, offset), so
 * the line is inflated from its chunk and parsed. Restore needs it, on a
 * node's local files (cairnctl) and in the daemon (SIEVE_REQUEST).
 */
#include "node_int.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

/* Longest SIEVE record line read back (Cyrus caps scripts far below). */
#define SIEVE_LINE_MAX (4u * 1024 * 1024)
#define READ_SIZE (64 * 1024)

/* Where the live SIEVE line of filename is, as the index records it. */
static int
find_sieve_line(struct cairn_store *store, const char *filename,
                int64_t *chunk_offset, int64_t *line_offset)
{
    static const char sql[] = "SELECT c.offset, s.offset FROM sieve AS s"
                              " JOIN chunk AS c ON c.id = s.chunk_id"
                              " WHERE s.filename = ?1 AND s.deleted IS NULL"
                              " ORDER BY s.id DESC LIMIT 1";
    sqlite3_stmt *stmt = NULL;
    int rc = CAIRN_EDB, step;

    if (sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 1, filename, -1, SQLITE_STATIC) != SQLITE_OK)
        goto out;
    step = sqlite3_step(stmt);
    if (step == SQLITE_DONE) {
        rc = CAIRN_ENOENT;
    } else if (step == SQLITE_ROW) {
        *chunk_offset = sqlite3_column_int64(stmt, 0);
        *line_offset = sqlite3_column_int64(stmt, 1);
        rc = *chunk_offset >= 0 && *line_offset >= 0 ? 0 : CAIRN_ECORRUPT;
    }
out:
    sqlite3_finalize(stmt);
    return rc;
}

/*
 * Parses the record line at line_offset of the chunk at chunk_offset,
 * from after "<ts> APPLY " until the dlist is complete (literals may hold
 * line ends, so only the parser knows where the line ends). *record is
 * owned by the caller.
 */
static int
read_record(struct cairn_store *store, int64_t chunk_offset,
            int64_t line_offset, struct cairn_dlist **record)
{
    struct cairn_dlist_parser *parser = NULL;
    struct cairn_dlist_limits limits;
    struct chunk_reader reader;
    unsigned char *buffer = NULL;
    int spaces = 0, rc;
    bool complete = false;

    *record = NULL;
    cairn_dlist_limits_default(&limits);
    limits.max_bytes = SIEVE_LINE_MAX;
    limits.max_literal = SIEVE_LINE_MAX;
    if ((rc = chunk_reader_open(&reader, store->fd, (uint64_t)chunk_offset)) <
        0)
        goto out;
    if ((buffer = malloc(READ_SIZE)) == NULL) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    if ((rc = cairn_dlist_parser_new(
             &limits, NULL, CAIRN_DLIST_PARSE_KEY | CAIRN_DLIST_PARSE_EOL,
             &parser)) < 0 ||
        (rc = chunk_reader_skip(&reader, (uint64_t)line_offset)) < 0)
        goto out;
    while (!complete) {
        size_t got = 0, at = 0, consumed = 0;

        if ((rc = chunk_reader_read(&reader, buffer, READ_SIZE, &got)) < 0)
            goto out;
        rc = CAIRN_ECORRUPT;
        if (got == 0)
            goto out; /* the line runs past its member */
        for (; at < got && spaces < 2; at++)
            if (buffer[at] == ' ')
                spaces++;
            else if (buffer[at] == '\n')
                goto out;
        if (at == got)
            continue;
        rc = cairn_dlist_parser_feed(parser, buffer + at, got - at, &consumed);
        if (rc < 0 && rc != CAIRN_EAGAIN)
            goto out;
        complete = rc == 0;
    }
    *record = cairn_dlist_parser_take(parser);
    rc = *record != NULL ? 0 : CAIRN_ECORRUPT;
out:
    cairn_dlist_parser_free(parser);
    chunk_reader_close(&reader);
    free(buffer);
    return rc;
}

int
cairn_store_read_sieve(struct cairn_store *store, const char *filename,
                       char **content, size_t *len)
{
    struct cairn_dlist *record = NULL;
    int64_t chunk_offset = 0, line_offset = 0;
    const char *text;
    size_t text_len;
    int rc;

    *content = NULL;
    *len = 0;
    if ((rc = find_sieve_line(store, filename, &chunk_offset, &line_offset)) <
            0 ||
        (rc = read_record(store, chunk_offset, line_offset, &record)) < 0)
        goto out;
    rc = CAIRN_ECORRUPT;
    if (strcmp(cairn_dlist_name(record), "SIEVE") != 0 ||
        !cairn_dlist_get_map(record, "CONTENT", &text, &text_len))
        goto out;
    rc = CAIRN_ENOMEM;
    if ((*content = malloc(text_len + 1)) == NULL)
        goto out;
    memcpy(*content, text, text_len);
    (*content)[text_len] = '\0';
    *len = text_len;
    rc = CAIRN_OK;
out:
    cairn_dlist_free(record);
    return rc;
}
