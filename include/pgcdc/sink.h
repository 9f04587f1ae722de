/*
 * sink.h — the one small interface every sink implements.
 *
 * The caller (stream.c) drives a transaction as:
 *     pgcdc_txn_track_begin; sink->begin; sink->write ...; sink->commit; pgcdc_txn_track_commit
 * A sink counts each written message with pgcdc_txn_track_add and acknowledges it with
 * pgcdc_txn_track_ack (or _ack_all) once it is durable, so the tracker knows which LSN
 * may be confirmed. A sink never talks to libpq.
 *
 * write may return PGCDC_AGAIN (back-pressure): the caller stops reading from PostgreSQL,
 * calls poll, and offers the same record again. Nothing is ever dropped.
 */
#ifndef PGCDC_SINK_H
#define PGCDC_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pgcdc_txn_track;

struct pgcdc_txn_meta {
    uint32_t xid;
    uint64_t commit_lsn; /* the commit record's LSN (source.commit_lsn) */
    uint64_t end_lsn;    /* just past the commit record: what is confirmed to the server */
    int64_t commit_ts_ms;
};

/* One message. All pointers are borrowed for the duration of the call. */
struct pgcdc_record {
    const char *schema; /* unescaped, NUL-terminated */
    const char *table;
    char op;            /* 'c' 'u' 'd' 'r' 't' */
    const char *key;    /* Kafka key JSON; NULL when the table has no primary key */
    size_t key_len;
    const char *value;  /* the event JSON, no trailing newline */
    size_t value_len;
    uint64_t lsn;
    uint64_t commit_lsn;
    uint32_t xid;
};

struct pgcdc_sink;

struct pgcdc_sink_ops {
    const char *name;
    int (*begin)(struct pgcdc_sink *s, const struct pgcdc_txn_meta *txn, char *err, size_t errlen);
    int (*write)(struct pgcdc_sink *s, const struct pgcdc_record *r, char *err, size_t errlen);
    int (*commit)(struct pgcdc_sink *s, const struct pgcdc_txn_meta *txn, char *err, size_t errlen);
    /* Make durable, without blocking on the network, what was written (file: write+fsync+
     * checkpoint; Kafka: serve delivery reports). Called at least every status interval. */
    int (*sync)(struct pgcdc_sink *s, char *err, size_t errlen);
    /* Wait up to timeout_ms for acknowledgements (under back-pressure). */
    int (*poll)(struct pgcdc_sink *s, int timeout_ms, char *err, size_t errlen);
    /* Make everything written durable, waiting up to timeout_ms (shutdown, reconnect).
     * PGCDC_AGAIN when the time ran out first (nothing failed; it is just not durable). */
    int (*flush)(struct pgcdc_sink *s, int timeout_ms, char *err, size_t errlen);
    /* Drop the part of an uncommitted transaction that was written (the connection was
     * lost mid-transaction; the server will send it again). */
    int (*rewind)(struct pgcdc_sink *s, char *err, size_t errlen);
    /* The commit end LSN up to which the sink already holds every transaction (file:
     * its checkpoint), or 0 when it cannot tell (Kafka). Transactions ending at or before
     * it are skipped when the server sends them again. */
    uint64_t (*resume_lsn)(struct pgcdc_sink *s);
    /* Optional (NULL: nothing to do). START_REPLICATION succeeded, so the slot is ours and
     * no other pgcdc streams from it: the S3 sink re-reads its position and deletes what a
     * crashed flush left. resume_lsn is asked again afterwards. */
    int (*started)(struct pgcdc_sink *s, char *err, size_t errlen);
    void (*close)(struct pgcdc_sink *s);
};

struct pgcdc_sink {
    const struct pgcdc_sink_ops *ops;
    struct pgcdc_txn_track *track; /* not owned; set by the caller before the first begin */
    bool split_key_changes; /* encode a key-changing update as delete(old) + create(new) */
};

#endif
