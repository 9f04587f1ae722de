/*
 * snapshot_copy.h — one row of COPY ... TO STDOUT text format -> the JSON tokens wal2json
 * would have sent for the same values, so a row read by the snapshot and the same row
 * streamed later encode to identical `after` objects (docs/events.md, "Values").
 *
 * COPY's text format (PostgreSQL's CopyAttributeOutText): columns separated by a tab, the
 * row ended by a newline, NULL as \N, and inside a value a backslash escapes \b \f \n \r
 * \t \v, the backslash itself and the delimiter; every other byte is itself. The values are
 * the types' text output, as the walsender prints them for wal2json.
 */
#ifndef PGCDC_SNAPSHOT_COPY_H
#define PGCDC_SNAPSHOT_COPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/common.h"
#include "pgcdc/decode.h"

/* One table's columns; the token buffer is reused from row to row. */
struct pgcdc_snapcopy {
    size_t ncols;
    const uint32_t *oids;  /* each column's own type (not its domain's base): wal2json's rule */
    bool numeric_strings;  /* wal2json 2.6's numeric-data-types-as-string is in use */
    struct pgcdc_buf vals; /* this row's tokens, one after another */
    size_t *off;           /* ncols + 1 offsets into vals (owned) */
};

/* Set up for ncols columns of types oids (borrowed). Returns 0 or PGCDC_ERR (ENOMEM). */
int pgcdc_snapcopy_init(struct pgcdc_snapcopy *sc, size_t ncols, const uint32_t *oids,
                        bool numeric_strings);
void pgcdc_snapcopy_free(struct pgcdc_snapcopy *sc);

/*
 * Turn one COPY text row (len bytes, the trailing newline optional) into tokens, and point
 * cols[i].value at column i's token (valid until the next call). Returns 0, PGCDC_ERR with
 * err set when the row does not have ncols columns, or on ENOMEM.
 */
int pgcdc_snapcopy_row(struct pgcdc_snapcopy *sc, const char *row, size_t len,
                       struct pgcdc_col *cols, char *err, size_t errlen);

/*
 * Append the token wal2json's pg_decode_write_value writes for the unescaped text value v
 * (n bytes) of type oid: numbers bare (NaN and infinities as null, unless numeric_strings,
 * when every number is a string), booleans as true/false, bytea as a string without its
 * "\x", everything else as an escaped string. Returns 0 or PGCDC_ERR (ENOMEM).
 */
int pgcdc_snapcopy_token(struct pgcdc_buf *b, uint32_t oid, const char *v, size_t n,
                         bool numeric_strings);

#endif
