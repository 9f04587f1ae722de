/*
 * decode.h — one wal2json format-version 2 message -> struct pgcdc_change, without copying.
 *
 * Every span in a decoded change points into the caller's message buffer and is valid
 * only as long as that buffer. Values are kept as the raw JSON token wal2json sent
 * (a bare number keeps every digit; it is never converted to a double).
 *
 * We ask wal2json for: include-xids, include-timestamp, include-lsn, include-pk,
 * include-type-oids, include-types=0, include-transaction (B/C). So a change looks like
 *   {"action":"I","xid":741,"timestamp":"2026-11-23 17:49:06.1234+00","lsn":"0/16B2F40",
 *    "schema":"public","table":"t","columns":[{"name":"id","typeoid":23,"value":1}],
 *    "pk":[{"name":"id","typeoid":23}]}
 * and a transaction boundary
 *   {"action":"B","xid":741,"timestamp":"...","lsn":"0/16B3000","nextlsn":"0/16B3030"}
 * where lsn is the commit record's LSN and nextlsn the position just after it.
 */
#ifndef PGCDC_DECODE_H
#define PGCDC_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/common.h"
#include "pgcdc/json.h" /* pgcdc_json_unescape */

enum pgcdc_action {
    PGCDC_ACT_BEGIN = 'B',
    PGCDC_ACT_COMMIT = 'C',
    PGCDC_ACT_INSERT = 'I',
    PGCDC_ACT_UPDATE = 'U',
    PGCDC_ACT_DELETE = 'D',
    PGCDC_ACT_TRUNCATE = 'T',
    PGCDC_ACT_MESSAGE = 'M',
};

/* Type OIDs whose JSON form differs from a plain string (pg_type.dat). */
#define PGCDC_OID_BOOL 16
#define PGCDC_OID_BYTEA 17
#define PGCDC_OID_INT8 20
#define PGCDC_OID_INT2 21
#define PGCDC_OID_INT4 23
#define PGCDC_OID_OID 26
#define PGCDC_OID_FLOAT4 700
#define PGCDC_OID_FLOAT8 701
#define PGCDC_OID_NUMERIC 1700

struct pgcdc_col {
    struct pgcdc_span name;  /* raw JSON string, quotes included */
    uint32_t typeoid;
    struct pgcdc_span value; /* raw JSON token; len 0 for pk entries (no value) */
};

struct pgcdc_change {
    enum pgcdc_action action;
    uint32_t xid;
    uint64_t lsn;     /* B/C: commit record LSN; I/U/D/T: the change's LSN */
    uint64_t nextlsn; /* B/C only: end of the commit record */
    int64_t ts_ms;    /* commit time, ms since the Unix epoch; 0 when absent */
    struct pgcdc_span schema; /* raw JSON strings, quotes included */
    struct pgcdc_span table;
    bool has_columns, has_identity;
    struct pgcdc_col *columns; /* new tuple: I, U */
    size_t ncolumns;
    struct pgcdc_col *identity; /* old key or whole old row: U, D */
    size_t nidentity;
    struct pgcdc_col *pk; /* primary-key column names (no values) */
    size_t npk;
};

/* Holds the column arrays; they grow to the widest row seen and are reused. */
struct pgcdc_decoder {
    struct pgcdc_col *cols[3];
    size_t cap[3];
    /* The last commit timestamp parsed (every change of a transaction repeats it). */
    char ts_text[48];
    size_t ts_len; /* 0: none */
    int64_t ts_ms;
};

void pgcdc_decoder_init(struct pgcdc_decoder *d);
void pgcdc_decoder_free(struct pgcdc_decoder *d);

/*
 * Decode one message. Returns 0, or PGCDC_ERR with a message naming the offset of the
 * problem. The change's arrays belong to the decoder and are overwritten by the next call.
 */
int pgcdc_decode(struct pgcdc_decoder *d, const char *msg, size_t len, struct pgcdc_change *out,
                 char *err, size_t errlen);


/*
 * Parse wal2json's commit timestamp ("2026-11-23 17:49:06.123456+00", the ISO form
 * timestamptz_to_str prints, any offset) into ms since the Unix epoch. -1 if malformed.
 */
int pgcdc_parse_pg_timestamp(const char *s, size_t len, int64_t *out_ms);

#endif
