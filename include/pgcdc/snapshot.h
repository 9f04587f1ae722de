/*
 * snapshot.h — the snapshots of `run`: every selected table read in an exported snapshot
 * and written as 'r' events, one sink transaction per table at that table's point, so that
 * snapshot rows and the stream meet with no gap and no overlap, table by table.
 *
 * - The initial snapshot (pgcdc_snapshot_take): a new slot exports its snapshot; every
 *   table is read at the slot's consistent point before streaming starts.
 * - Owed snapshots (pgcdc_snapshot_prepare / _due / _drops / _run_owed): tables whose
 *   snapshot a crash cut short, and tables the patterns select anew, are read at a new
 *   point P' exported by a temporary slot. The stream carries every table up to P',
 *   dropping only those tables' changes committed before P' (they are in the snapshot,
 *   the rule a new slot applies at its consistent point); then their rows are written,
 *   and streaming resumes.
 * state.dir/snapshot records which tables are done (snapshot_state.h).
 *
 * Rows are produced as struct pgcdc_change (action INSERT) whose values are the raw JSON
 * tokens wal2json would send, so the one event encoder serves both.
 */
#ifndef PGCDC_SNAPSHOT_H
#define PGCDC_SNAPSHOT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/config.h"
#include "pgcdc/snapshot_read.h"
#include "pgcdc/snapshot_state.h"

struct pgcdc_record;
struct pgcdc_repl;
struct pgcdc_sink;
struct pgcdc_slot;
struct pgcdc_txn_track;

/* Where snapshots write: the stream's sink and tracker, borrowed. */
struct pgcdc_snapshot_out {
    struct pgcdc_sink *sink;
    struct pgcdc_txn_track *track;
    const char *name_json, *db_json; /* the events' source block, as in pgcdc_event_ctx */
    /* Offer one record until the sink takes it (the caller handles back-pressure). */
    int (*write)(void *ctx, const struct pgcdc_record *r, char *err, size_t errlen);
    /* Called between tables and every few thousand rows: keep the replication connection
     * alive while a snapshot is read mid-stream (NULL: nothing to do). */
    int (*keepalive)(void *ctx, char *err, size_t errlen);
    void *ctx;
};

/*
 * Create the slot exporting its snapshot (recorded in state.dir as snapshotting before any
 * row is read), record every selected table as owed at the slot's consistent point, then
 * read each as its own sink transaction, durable and recorded done before the next. The
 * last row of each table says source.snapshot "last". *durable_lsn is set to the
 * consistent point once every table is durable. Returns 0 or a negative code.
 */
/*
 * Called by pgcdc_snapshot_take while the new slot's snapshot is still exported (its
 * tables locked, no row read yet), so that another program can import it: `pgcdc
 * migrate` runs pg_dump --snapshot here. NULL (the default): nothing to do. A negative
 * return fails the snapshot.
 */
extern int (*pgcdc_snapshot_exported_hook)(const char *snapshot_name, uint64_t point, char *err,
                                           size_t errlen);

int pgcdc_snapshot_take(struct pgcdc_slot *slot, struct pgcdc_repl *repl,
                        const struct pgcdc_snapshot_out *out, uint64_t *durable_lsn, char *err,
                        size_t errlen);

/* Snapshots owed at one new point, between pgcdc_snapshot_prepare and _run_owed. */
struct pgcdc_snapshot_owed {
    bool active;    /* tables are owed at point */
    bool requested; /* a request (pgcdc.signal) recorded tables owed: prepare again */
    uint64_t point;
    bool exact_sink; /* the sink takes back a cut table (file): drop changes before point */
    struct pgcdc_snapstate st;
    struct pgcdc_snapreader reader;
    struct pgcdc_snaptables tables; /* the leaves owed, grouped by reported name */
};

/*
 * Before streaming from an existing slot: find the tables owed a snapshot (cut short by a
 * crash, or selected now and not by the previous run's patterns). If any, create a
 * temporary slot on a second replication connection, import its snapshot into a reader
 * session, lock those tables, close the temporary slot, and record their new point in
 * state.dir. o->active says whether anything is owed. Returns 0 or a negative code.
 */
int pgcdc_snapshot_prepare(struct pgcdc_snapshot_owed *o, struct pgcdc_slot *slot,
                           const struct pgcdc_snapshot_out *out, char *err, size_t errlen);

/*
 * Ready source.slot for streaming, once pgcdc_slot_find has decided: when fresh, create it
 * (with the initial snapshot, *durable_lsn its consistent point once durable; without one
 * under snapshot.mode = never); otherwise prepare the owed snapshots. With initial_only,
 * finish the snapshot (the rest of one cut short at a new point), drop the slot and set
 * *done. Returns 0 or a negative code.
 */
int pgcdc_snapshot_prepare_slot(struct pgcdc_snapshot_owed *o, struct pgcdc_slot *slot,
                                struct pgcdc_repl *repl, const struct pgcdc_snapshot_out *out,
                                bool fresh, bool *done, uint64_t *durable_lsn, char *err,
                                size_t errlen);

/* Whether the stream has reached the owed tables' point (pos: a commit or walEnd). */
bool pgcdc_snapshot_due(const struct pgcdc_snapshot_owed *o, uint64_t pos);

/*
 * The boundary rule: whether a change of schema.table (reported names) in a transaction
 * committed at commit_lsn must be dropped, being part of the owed snapshot.
 */
bool pgcdc_snapshot_drops(const struct pgcdc_snapshot_owed *o, const char *schema,
                          const char *table, uint64_t commit_lsn);

/*
 * Write every owed table at its point, each durable and recorded done before the next;
 * then release the reader. Returns 0 or a negative code (the next prepare resumes).
 */
int pgcdc_snapshot_run_owed(struct pgcdc_snapshot_owed *o, const struct pgcdc_config *cfg,
                            const struct pgcdc_snapshot_out *out, char *err, size_t errlen);

/*
 * A change of schema.table (reported names) in a transaction committed at commit_lsn that
 * is not captured: when it is a snapshot request inserted into pgcdc.signal, record the
 * tables it names as owed in state.dir (a table owed already is merged; one captured
 * already keeps its changes flowing, its rows come again on top of them) and set
 * o->requested. A malformed request is logged and ignored. Returns 0 or a negative code.
 */
int pgcdc_snapshot_signal(struct pgcdc_snapshot_owed *o, const struct pgcdc_config *cfg,
                          const char *schema, const char *table, const struct pgcdc_change *ch,
                          uint64_t commit_lsn, char *err, size_t errlen);

/* Release what prepare holds (the reader, the listing); safe to call twice. */
void pgcdc_snapshot_owed_free(struct pgcdc_snapshot_owed *o);

#endif
