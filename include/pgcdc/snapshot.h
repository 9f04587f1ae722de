/*
 * snapshot.h — read every included table inside the replication slot's exported snapshot,
 * so that snapshot rows and the stream that follows meet with no gap and no overlap.
 * pgcdc_snapshot_take does the whole initial snapshot for `run`; pgcdc_snapshot_run is
 * the reader under it.
 *
 * Rows are produced as struct pgcdc_change (action INSERT) whose values are the same raw
 * JSON tokens wal2json would send for them, so the one event encoder serves both and a row
 * read here and the same row streamed later give identical `after` objects.
 */
#ifndef PGCDC_SNAPSHOT_H
#define PGCDC_SNAPSHOT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/config.h"
#include "pgcdc/decode.h"

struct pgcdc_record;
struct pgcdc_repl;
struct pgcdc_sink;
struct pgcdc_slot;
struct pgcdc_txn_track;

/*
 * Called once per row. schema and table are unescaped C strings; ch's spans are valid for
 * the duration of the call. A negative return stops the snapshot with that code.
 */
typedef int (*pgcdc_snapshot_row_fn)(void *ctx, const struct pgcdc_change *ch, const char *schema,
                                     const char *table, char *err, size_t errlen);

struct pgcdc_snapshot_stats {
    uint64_t rows;
    uint64_t tables;
    uint32_t xmin; /* the snapshot's xmin, reported as txId of snapshot rows */
};

struct pgcdc_snapshot_req {
    const char *dsn;
    const char *snapshot_name; /* exported by CREATE_REPLICATION_SLOT */
    const char *slot;
    uint64_t consistent_lsn;
    /* In: -1 unknown, 0/1 known. Out: whether wal2json accepted numeric-data-types-as-string
     * (probed on the new slot before the snapshot), which changes how NaN is written. */
    int numeric_strings;
    /* When *stop becomes non-zero the snapshot ends early with PGCDC_ERR_RETRY. */
    volatile sig_atomic_t *stop;
};

/*
 * Open a second (normal) connection to req->dsn, import the snapshot in a REPEATABLE READ READ
 * ONLY transaction and stream every selected table through row(). Memory stays bounded
 * (single-row mode). A listed table that does not exist was already refused by the
 * caller (pgcdc_relations_check). Returns 0 or a negative code with err set.
 */
int pgcdc_snapshot_run(struct pgcdc_snapshot_req *req, const struct pgcdc_config *cfg,
                       pgcdc_snapshot_row_fn row, void *ctx, struct pgcdc_snapshot_stats *stats,
                       char *err, size_t errlen);

/* Where pgcdc_snapshot_take writes: the stream's sink and tracker, borrowed. */
struct pgcdc_snapshot_out {
    struct pgcdc_sink *sink;
    struct pgcdc_txn_track *track;
    const char *name_json, *db_json; /* the events' source block, as in pgcdc_event_ctx */
    /* Offer one record until the sink takes it (the caller handles back-pressure). */
    int (*write)(void *ctx, const struct pgcdc_record *r, char *err, size_t errlen);
    void *ctx;
};

/*
 * Create the slot exporting its snapshot (recorded in state.dir as snapshotting before any
 * row is read, so a crash mid-snapshot finds it ours), read every included table in it as one sink
 * transaction ending at the slot's consistent point, wait until the sink holds it durably,
 * then record the slot as streamed. Streaming then starts at the consistent point: no gap,
 * no overlap. Every row says source.snapshot "true", the final one "last". *durable_lsn is
 * set to the consistent point once the snapshot is durable. Returns 0 or a negative code.
 */
int pgcdc_snapshot_take(struct pgcdc_slot *slot, struct pgcdc_repl *repl,
                        const struct pgcdc_snapshot_out *out, uint64_t *durable_lsn, char *err,
                        size_t errlen);

#endif
