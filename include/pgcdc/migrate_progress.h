/*
 * migrate_progress.h — what `pgcdc migrate` shows while it runs, and its housekeeping.
 *
 * One small struct in shared memory (mmap, MAP_SHARED, made before any fork) ties the
 * processes together: the replay children write their counters into it, the capture child
 * serves them on metrics.listen next to its own (pgcdc_replay_lag_bytes,
 * pgcdc_replay_lag_seconds, pgcdc_replay_rows_total), and migrate's "ops" child reads
 * it to draw progress on stderr (a live line when stderr is a terminal, else one log line
 * every 10 s) and to delete DIR/data segments the target has durably applied (unless
 * migrate.keep_segments).
 *
 * Every field is written by one process at a time and read by others: atomics, and the
 * table name under a sequence counter (odd while it is being written).
 */
#ifndef PGCDC_MIGRATE_PROGRESS_H
#define PGCDC_MIGRATE_PROGRESS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/common.h"

struct pgcdc_migrate;
struct pgcdc_replay_event;

/* migrate's stage, for the display (the target's marker keeps the real phase). */
enum pgcdc_migrate_stage {
    PGCDC_STAGE_SNAPSHOT = 0, /* dump, pre-data, capture's snapshot */
    PGCDC_STAGE_BULK,         /* replay applying the snapshot's rows */
    PGCDC_STAGE_POSTDATA,     /* pg_restore post-data, ANALYZE */
    PGCDC_STAGE_FOLLOWING,
};

#define PGCDC_PROGRESS_TABLE_MAX 256

struct pgcdc_migrate_progress {
    _Atomic int stage;                 /* enum pgcdc_migrate_stage, set by migrate */
    _Atomic uint64_t rows;             /* rows applied by every replay child of this run */
    _Atomic uint64_t applied_lsn;      /* commit LSN of the last committed replay batch */
    _Atomic int64_t caught_up_unix_ms; /* when replay last had everything available applied */
    _Atomic uint64_t caught_up_lsn;    /* where it was then (the file sink's position) */
    /* The snapshot table replay is reading: name, its rows read so far (a resumed table
     * counts the rows applied before the restart too), and the source's estimate. */
    _Atomic uint32_t table_seq; /* odd while table[] is being written */
    char table[PGCDC_PROGRESS_TABLE_MAX];
    _Atomic uint64_t table_rows;
    _Atomic int64_t table_est; /* reltuples on the source; -1 unknown (read by the ops child) */
    _Atomic int64_t table_start_ms; /* monotonic ms when replay began this table */
    _Atomic int prune_paused; /* set by cutover while it runs: no segment is deleted (its
                                 after-END check reads them; pgcdc_migrate_prune_segments) */
};

/* Map the shared struct (zeroed). NULL with err set. Unmap with _unmap. */
struct pgcdc_migrate_progress *pgcdc_migrate_progress_map(char *err, size_t errlen);
void pgcdc_migrate_progress_unmap(struct pgcdc_migrate_progress *p);

/* ---- replay's side (p may be NULL: a plain `pgcdc replay`) */

/* One event read (applied or skipped as already applied): a snapshot row moves the table. */
void pgcdc_migrate_progress_event(struct pgcdc_migrate_progress *p,
                                  const struct pgcdc_replay_event *ev);
/* Committed up to commit; rows_total is this process's running total of rows applied. */
void pgcdc_migrate_progress_applied(struct pgcdc_migrate_progress *p, uint64_t commit,
                                    uint64_t rows_total);
/* Everything available is applied; at is the position that means. */
void pgcdc_migrate_progress_caught_up(struct pgcdc_migrate_progress *p, uint64_t at);

/* ---- the capture child's metrics (a pgcdc_metrics_extra hook) */

/* Serve p's series on metrics.listen from this process (the capture child). */
void pgcdc_migrate_progress_serve(struct pgcdc_migrate_progress *p);

/* The replay lag against wal_end: bytes, and seconds since replay was last caught up. */
void pgcdc_migrate_progress_lag(const struct pgcdc_migrate_progress *p, uint64_t wal_end,
                                uint64_t *bytes, double *seconds);

/* ---- migrate's ops child: progress on stderr, applied segments deleted */

int pgcdc_migrate_ops_main(struct pgcdc_migrate *m);

/*
 * Delete the closed segments of dir that the target has durably applied up to commit:
 * a segment whose successor is a closed segment starting below commit (so every event of
 * it commits before commit, none inside a partly applied snapshot). The newest closed
 * segment and everything after it stay: the sink numbers its next segment from them, and
 * readers resume there. Returns how many were deleted, or -1 (errno).
 */
int pgcdc_migrate_prune_segments(const char *dir, uint64_t commit);

#endif
