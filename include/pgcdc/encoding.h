/*
 * encoding.h — events are UTF-8 whatever the source's server_encoding.
 *
 * The walsender sends wal2json's output in the server encoding, unconverted. For a UTF8
 * server (the common case) nothing here runs. For any other, each message is converted to
 * UTF-8 as a whole before it is decoded: every server encoding is an ASCII superset, so
 * the JSON structure survives, and a message that is all ASCII is used as it is. SQL_ASCII
 * means "any bytes": its bytes are used as they are when they are valid UTF-8.
 *
 * A byte sequence that is not valid (SQL_ASCII bytes that are not UTF-8, or a byte the
 * server encoding leaves undefined) becomes U+FFFD in the converted message; whether that
 * is allowed is source.invalid_utf8's decision, taken once the change's table is known
 * (pgcdc_encoding_check_change): error names table, column and LSN; replace counts it in
 * pgcdc_invalid_utf8_replaced_total and logs it.
 */
#ifndef PGCDC_ENCODING_H
#define PGCDC_ENCODING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/common.h"
#include "pgcdc/decode.h"

enum pgcdc_encoding_kind {
    PGCDC_ENC_UTF8 = 0, /* nothing to do */
    PGCDC_ENC_SQL_ASCII,
    PGCDC_ENC_ICONV,
};

/* A converter for one server encoding; zero it, then pgcdc_encoding_open. */
struct pgcdc_encoding {
    enum pgcdc_encoding_kind kind;
    char name[32];        /* server_encoding as PostgreSQL spells it */
    void *cd;             /* iconv_t, for PGCDC_ENC_ICONV */
    struct pgcdc_buf out; /* the last converted message */
    size_t nbad;          /* invalid sequences in the last message (each now U+FFFD) */
    size_t first_bad;     /* offset in out of the first U+FFFD put there */
};

/*
 * Prepare to convert from server_encoding (as the server reports it). Returns 0, or
 * PGCDC_ERR with err naming an encoding that cannot be converted (MULE_INTERNAL).
 * A converter already open is closed first.
 */
int pgcdc_encoding_open(struct pgcdc_encoding *e, const char *server_encoding, char *err,
                        size_t errlen);
void pgcdc_encoding_close(struct pgcdc_encoding *e);

/*
 * Convert one message to UTF-8: *msg and *len are replaced by the converted bytes (e->out,
 * valid until the next call) unless the message needs nothing. Sets e->nbad. Returns 0,
 * or PGCDC_ERR (out of memory) with err set.
 */
int pgcdc_encoding_to_utf8(struct pgcdc_encoding *e, const char **msg, size_t *len, char *err,
                           size_t errlen);

/*
 * The last message had invalid sequences (e->nbad > 0) and decoded into ch, a change of
 * the selected table schema.table: apply source.invalid_utf8 (policy). Returns 0 (replace:
 * counted and logged) or PGCDC_ERR with err naming table, column and LSN.
 */
int pgcdc_encoding_check_change(const struct pgcdc_encoding *e, const struct pgcdc_change *ch,
                                const char *schema, const char *table, int policy, char *err,
                                size_t errlen);

/*
 * The one decision for an invalid value, shared by the stream and the snapshot: with
 * policy replace, count nbad replaced sequences and log (at most one line every 10 s)
 * naming table, column and LSN, and return 0; with error, return PGCDC_ERR with err
 * naming them and the fix.
 */
int pgcdc_encoding_invalid(int policy, const char *encoding, const char *schema, const char *table,
                           const char *column, uint64_t lsn, size_t nbad, char *err, size_t errlen);

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if none starts there. */
size_t pgcdc_utf8_len(const unsigned char *s, size_t n);

/* Length of the longest prefix of s that is valid UTF-8 (n: all of it). */
size_t pgcdc_utf8_valid_prefix(const char *s, size_t n);

/*
 * Append s to b with every invalid sequence replaced by U+FFFD, adding their number to
 * *nbad. Returns 0, or PGCDC_ERR when out of memory.
 */
int pgcdc_utf8_append_repaired(struct pgcdc_buf *b, const char *s, size_t n, size_t *nbad);

#endif
