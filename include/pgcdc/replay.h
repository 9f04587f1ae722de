/*
 * replay.h — `pgcdc replay`: apply a file-sink directory to a target database, in commit
 * order, resumable after a kill with nothing applied twice.
 *
 * The parts: replay_read.h (directory -> lines), replay_event.h (line -> event),
 * replay_sql.h (event -> SQL), replay_target.h (the target session), replay_batch.h
 * (multi-row grouping); replay.c drives them. The command line is parsed in main.c.
 */
#ifndef PGCDC_REPLAY_H
#define PGCDC_REPLAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pgcdc_migrate_progress;

struct pgcdc_replay_opts {
    const char *input;  /* the file sink's directory */
    const char *target; /* libpq DSN of the target; never logged as is */
    bool follow;
    uint64_t end_lsn; /* 0: none */
    int batch_rows;   /* end a target transaction after this many rows (at a txn boundary) */
    int group_rows;   /* rows per multi-row statement, at most (1: one statement per row) */
    int poll_ms;      /* how often --follow looks for new data */
    bool missing_rows_warn; /* replay.missing_rows = warn: an update or delete that matches
                               no row is a warning, not an error */
    _Atomic uint64_t *caught_up; /* NULL, or set to the LSN replay is caught up at each time
                                    everything available is applied (`pgcdc migrate` shares
                                    it with its cutover to measure the lag) */
    /* Snapshot rows go in with COPY, in chunks of this many rows, each committed with the
     * position (0: the default, 1000000; negative: never, always upserts). See replay.c. */
    int copy_rows;
    /* NULL, or called once a table's snapshot rows are all committed through COPY (the
     * row marked "last"), before any later event is applied: `pgcdc migrate` builds the
     * table's keys there. replay then reads the table's definition again. Returns 0 or a
     * negative code with err set (replay stops with it). */
    int (*table_loaded)(void *ctx, const char *schema, const char *table, char *err,
                        size_t errlen);
    void *table_loaded_ctx;
    struct pgcdc_migrate_progress *progress; /* NULL, or `pgcdc migrate`'s shared counters
                                                (migrate_progress.h) */
    /* NULL, or where `pgcdc migrate` publishes the end (0 until it is known): replay then
     * applies snapshot rows as they become readable, waits at anything else until the end
     * is published, and stops there as with end_lsn (which must be 0). */
    _Atomic uint64_t *end_later;
    /* `pgcdc migrate`'s bulk load: snapshot rows are loaded as capture writes them, before
     * it makes them durable, and committed only once it has (replay_read.h). */
    bool read_ahead;
};

/*
 * Apply o->input to o->target until done (see the command's help). Returns PGCDC_OK,
 * PGCDC_ERR (exit 1) with a one-line reason in err. o and its strings are borrowed.
 */
int pgcdc_replay_run(const struct pgcdc_replay_opts *o, char *err, size_t errlen);

#endif
