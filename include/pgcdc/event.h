/*
 * event.h — a decoded change -> the event JSON of docs/events.md (Debezium's PostgreSQL
 * change event with schemas disabled) and the Kafka key, written into a caller's reusable
 * buffer.
 *
 * Value rules: integers (int2/int4/int8/oid) keep wal2json's bare digits; numeric and
 * floats become a JSON string holding the same digits; bytea gains its "\x" prefix
 * (wal2json strips it); booleans, null and strings are copied byte for byte. A column
 * wal2json did not send (an unchanged TOASTed value) stays absent.
 */
#ifndef PGCDC_EVENT_H
#define PGCDC_EVENT_H

#include <stdint.h>

#include "pgcdc/common.h"
#include "pgcdc/decode.h"

/* What the event's "source" block says about the transaction and the stream. */
struct pgcdc_event_ctx {
    const char *name_json; /* topic prefix as a JSON string literal, quotes included */
    const char *db_json;   /* database name as a JSON string literal */
    uint32_t xid;
    uint64_t commit_lsn; /* the commit record's LSN */
    int64_t commit_ts_ms;
    const char *snapshot; /* "true", "last" or "false" */
};

/*
 * Op letter for a change: 'c', 'u', 'd', 't'; snapshot rows use 'r'. `op` may be given
 * explicitly to encode an update as a delete of the old key ('d': before = identity,
 * after = null) or a create of the new one ('c': before = null, after = columns).
 */
char pgcdc_event_op(const struct pgcdc_change *ch);

/*
 * Append the event JSON for ch (no trailing newline) to out. now_ms is the top-level
 * ts_ms. Returns 0 or PGCDC_ERR (ENOMEM).
 */
int pgcdc_event_encode(struct pgcdc_buf *out, const struct pgcdc_event_ctx *ctx,
                       const struct pgcdc_change *ch, char op, int64_t now_ms);

/*
 * Append the Kafka key: the primary-key columns as a JSON object, {"id":42}. Values come
 * from `identity` when use_old is set (deletes, the old key of a key change), otherwise
 * from `columns`. Returns 1 when a key was written, 0 when the table has no primary key
 * (the key is null), PGCDC_ERR on ENOMEM.
 */
int pgcdc_event_key(struct pgcdc_buf *out, const struct pgcdc_change *ch, int use_old);

/* Whether an update changed its primary key (old key values differ from the new). */
int pgcdc_event_key_changed(const struct pgcdc_change *ch);

/*
 * The type the value rules apply to for a column of type typeoid whose ultimate base type
 * (through any domains) is base_oid: a domain over an integer or boolean type is treated as
 * that type (wal2json quotes it, since it only knows the built-in OIDs); any other type keeps
 * its own OID (a domain over numeric or bytea is already sent in its final form).
 */
uint32_t pgcdc_event_rule_oid(uint32_t typeoid, uint32_t base_oid);

/* Types below this OID are built in; only user types (domains among them) need a lookup. */
#define PGCDC_FIRST_USER_OID 16384

/* Append one column value in event form (the rules above). */
int pgcdc_event_value(struct pgcdc_buf *out, const struct pgcdc_col *col);

#endif
