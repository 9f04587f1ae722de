/*
 * replay_target.h — `pgcdc replay`'s session with the target database: the connections,
 * the advisory lock and pgcdc.replay_position, the target's table definitions, prepared
 * statements cached by SQL text, and the pipeline of commands in flight.
 *
 * Commands go out in libpq's pipeline mode (a bounded window in flight; drain reads the
 * results) or, in careful mode (tg->pipelined false), one at a time, so that a failure
 * names its table, column and LSN. Values travel as text parameters with unspecified
 * types: the target column's input function parses the exact text the source printed.
 * Whether a failure is worth a reconnect is decided here, in one place (transient).
 */
#ifndef PGCDC_REPLAY_TARGET_H
#define PGCDC_REPLAY_TARGET_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/replay_event.h"
#include "pgcdc/replay_sql.h"

enum pgcdc_replay_cmd_kind {
    PGCDC_REPLAY_BEGIN,
    PGCDC_REPLAY_PREPARE,
    PGCDC_REPLAY_STMT,
    PGCDC_REPLAY_POSITION,
    PGCDC_REPLAY_COMMIT,
    PGCDC_REPLAY_SYNC,
};

/* What a command in flight was for: enough to name it when it fails. */
struct pgcdc_replay_cmd {
    enum pgcdc_replay_cmd_kind kind;
    char op;
    int table; /* index into the target's tables, -1 none */
    uint64_t lsn, commit_lsn;
    int expect; /* PGCDC_REPLAY_STMT updates: rows it should change */
    /* PGCDC_REPLAY_COMMIT: the position it records */
    uint64_t pos_commit;
    int64_t pos_partial;
    uint64_t rows, txns;
};

/* A table the events name, with its definition on the target (loaded once a connection). */
struct pgcdc_replay_rtable {
    char *raw_schema, *raw_table; /* the JSON strings as events carry them */
    size_t raw_schema_len, raw_table_len;
    struct pgcdc_replay_table t;
};

/* Where the target stands: the last applied commit LSN, and the rows of it applied. */
struct pgcdc_replay_position {
    uint64_t commit;
    int64_t partial; /* the snapshot, applied in pieces: how many of its rows are in */
};

/* Records the position ($1 commit LSN, $2 partial events) in the transaction it commits. */
#define PGCDC_REPLAY_POSITION_SQL                                                                  \
    "INSERT INTO pgcdc.replay_position (id, commit_lsn, partial_events, applied_at) "              \
    "VALUES (1, $1::pg_catalog.pg_lsn, $2::bigint, now()) ON CONFLICT (id) DO UPDATE SET "         \
    "commit_lsn = EXCLUDED.commit_lsn, partial_events = EXCLUDED.partial_events, "                 \
    "applied_at = EXCLUDED.applied_at"

struct pgcdc_replay_stmt_entry;

struct pgcdc_replay_target {
    const char *dsn; /* borrowed; never logged as is */
    char dsn_red[1024];
    PGconn *conn, *meta;
    bool pipelined;
    bool ever_connected;

    struct pgcdc_replay_stmt_entry *sc; /* prepared statements by SQL text */
    size_t sc_cap, sc_n;
    int sc_next_id;

    struct pgcdc_replay_rtable *tables; /* indexes are stable until the connection closes */
    size_t ntables;

    struct pgcdc_replay_cmd *ring; /* commands in flight */
    size_t ring_head, ring_count;
    bool unflushed;
    bool failed; /* a statement failed (fail_msg), in the transaction fail_commit */
    char fail_msg[2048];
    uint64_t fail_commit;

    struct pgcdc_replay_position done; /* what the target holds, committed */
    uint64_t rows_total, txns_total;

    /* An update or delete that matches no row: an error, or (missing_rows_warn, the
     * setting replay.missing_rows = warn) a warning counted in row_misses. */
    bool missing_rows_warn;
    bool checks_pending; /* updates/deletes in flight whose row counts are not yet read */
    uint64_t row_misses;
};

/*
 * Set up tg for dsn (borrowed); missing_rows_warn: replay.missing_rows = warn. Returns 0
 * or PGCDC_ERR (out of memory, in err).
 */
int pgcdc_replay_target_init(struct pgcdc_replay_target *tg, const char *dsn,
                             bool missing_rows_warn, char *err, size_t errlen);
/* Close the connections and release everything tg holds. */
void pgcdc_replay_target_free(struct pgcdc_replay_target *tg);

/*
 * Connect, take the one-replay-per-target lock, make sure pgcdc.replay_position exists and
 * read it into *pos (and tg->done). *replica: session_replication_role = replica is set
 * (no triggers, no foreign-key checks); warn_replica says in the log what it means when
 * it cannot be. Not yet in pipeline mode. Returns 0, PGCDC_ERR_RETRY (worth a reconnect)
 * or PGCDC_ERR.
 */
int pgcdc_replay_target_open(struct pgcdc_replay_target *tg, bool warn_replica, bool *replica,
                             struct pgcdc_replay_position *pos, char *err, size_t errlen);
/* Drop the connections (the server rolls back what is open), their statements and tables. */
void pgcdc_replay_target_close(struct pgcdc_replay_target *tg);

/* Send the commands from now on through the pipeline. */
int pgcdc_replay_target_enter_pipeline(struct pgcdc_replay_target *tg, char *err, size_t errlen);

/*
 * The index of the table ev is for, its definition loaded the first time. Returns the
 * index, or an error (the catalog could not be read).
 */
int pgcdc_replay_target_table(struct pgcdc_replay_target *tg, const struct pgcdc_replay_event *ev,
                              char *err, size_t errlen);

/*
 * Load table ti's definition again (its keys were just built). Returns 0 or an error.
 */
int pgcdc_replay_target_reload(struct pgcdc_replay_target *tg, int ti, char *err, size_t errlen);

/* Leave pipeline mode once everything sent is read (for a COPY). Returns 0 or an error. */
int pgcdc_replay_target_leave_pipeline(struct pgcdc_replay_target *tg, char *err, size_t errlen);

/* Send a command without parameters (BEGIN, COMMIT), described by proto. */
int pgcdc_replay_target_send_sql(struct pgcdc_replay_target *tg,
                                 const struct pgcdc_replay_cmd *proto, const char *sql, char *err,
                                 size_t errlen);
/*
 * Send sql with st's parameters as a prepared statement (prepared the first time). t is
 * the table st was built for, or NULL: in careful mode a failure then names the column.
 */
int pgcdc_replay_target_send_stmt(struct pgcdc_replay_target *tg,
                                  const struct pgcdc_replay_cmd *proto, const char *sql,
                                  const struct pgcdc_replay_stmt *st,
                                  const struct pgcdc_replay_table *t, char *err, size_t errlen);

/*
 * Read results until at most keep commands are in flight. A failed statement, or an
 * update or delete that matched no row (unless missing_rows_warn), marks tg failed (with
 * the message) and returns PGCDC_ERR: the caller drops the connection (the
 * server rolls the batch back) and starts careful mode. PGCDC_ERR_RETRY: the connection.
 */
int pgcdc_replay_target_drain(struct pgcdc_replay_target *tg, size_t keep, char *err,
                              size_t errlen);

/*
 * Before a COMMIT goes into the pipeline: read the results of the updates and deletes in
 * flight (only when an update or delete that matches no row is an error), so that one
 * which matched nothing fails (PGCDC_ERR, tg failed) before its transaction can commit.
 */
int pgcdc_replay_target_settle(struct pgcdc_replay_target *tg, char *err, size_t errlen);

/* Everything sent is committed: wait for it all, leave the pipeline, and make it durable. */
int pgcdc_replay_target_finish(struct pgcdc_replay_target *tg, char *err, size_t errlen);

/* FNV-1a of n bytes: the statement cache's hash, also for keys in replay_batch. */
uint64_t pgcdc_replay_target_hash(const char *s, size_t n);

#endif
