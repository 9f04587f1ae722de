/*
 * replay.c — `pgcdc replay`: a file-sink directory -> a target database. The driver: it
 * reads events (replay_read, replay_event), groups whole source transactions into target
 * transactions, records the position, and retries; the SQL (replay_sql), the session
 * with the target (replay_target) and the multi-row grouping (replay_batch) are apart.
 *
 * Applying. Events of one source transaction are consecutive and share commit_lsn. Whole
 * transactions are grouped into one target transaction of about batch_rows rows:
 *     BEGIN; <one statement per event>...; <upsert pgcdc.replay_position>; COMMIT; Sync
 * all sent through libpq's pipeline mode, so the next statements travel while the server
 * works on the previous ones. When the session may set session_replication_role =
 * replica, a batch's changes go out as multi-row statements (replay_batch.h).
 *
 * Resuming. pgcdc.replay_position holds the commit_lsn of the last applied transaction,
 * written in the same target transaction as its changes, so after a kill at any moment
 * transactions at or before it are skipped and the rest applied: nothing twice, nothing
 * lost. The snapshot (one huge transaction whose rows all share one commit_lsn) is the one
 * transaction applied in pieces: partial_events counts how many of its rows are in.
 *
 * Errors. Any statement error in a pipelined batch aborts the batch (the connection is
 * dropped: the server rolls back). Replay then reconnects and re-applies from the recorded
 * position one source transaction per target transaction, without pipelining, up to the
 * failing transaction, which fails again, now with its event in hand: the message names
 * table, column and LSN, and nothing of that transaction is left applied. An update or
 * delete that matches no row is such an error too (unless replay.missing_rows = warn): a
 * batch waits for the row counts of its updates and deletes before its COMMIT is sent. A
 * lost connection is retried with capped exponential backoff.
 *
 * Snapshot rows with COPY. A run of snapshot rows of one table goes in through COPY
 * (replay_copy.h), out of pipeline mode, in chunks of copy_rows rows (or 256 MB), each one
 * target transaction with the position (commit_lsn, partial_events = the snapshot's events
 * in so far): a kill resumes the table after its last chunk. COPY cannot upsert, so it is
 * chosen only when it cannot meet a row already there: when the run starts (or resumes),
 * the target table must hold exactly the rows of this run already applied (none at its
 * start), counted up to one more than that. A table that holds anything else, and careful
 * mode, keep the upserts.
 *
 * Truncates. A TRUNCATE of several tables is one wal2json message per table, all at one
 * LSN: they are gathered and sent as one statement (foreign keys allow no other way).
 */
#include "pgcdc/replay.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/migrate_progress.h"
#include "pgcdc/replay_batch.h"
#include "pgcdc/replay_copy.h"
#include "pgcdc/replay_event.h"
#include "pgcdc/replay_read.h"
#include "pgcdc/replay_sql.h"
#include "pgcdc/replay_target.h"

#define PROGRESS_EVERY_MS 10000
#define ANNOUNCE_EVERY_MS 1000
#define CAREFUL_RUNS_MAX 1000
/* Chunks end at this many rows or bytes of COPY text: each costs the server more than its
 * rows (100,000-row chunks took ~60% more of its CPU than one 1,000,000-row COPY), and a
 * kill loses at most one. */
#define COPY_ROWS_DEFAULT 1000000
#define COPY_CHUNK_BYTES (256u << 20)

/* How one connection's worth of replay ended; errors travel apart, as PGCDC_ERR* codes. */
enum session_end {
    SESSION_DONE,    /* finished, or stopped by a signal */
    SESSION_CAREFUL, /* a batch failed: start again, one transaction at a time */
    SESSION_FAILED,  /* an error, with its code */
};

struct replay {
    const struct pgcdc_replay_opts *o;
    struct pgcdc_replay_target tg;
    struct pgcdc_replay_batch bq; /* used when grouping */
    struct pgcdc_replay_reader rd;
    struct pgcdc_replay_parser parser;
    struct pgcdc_replay_stmt st;
    bool grouping; /* multi-row statements: pipelined, session_replication_role = replica */

    /* Where this session resumed. */
    struct pgcdc_replay_position pos;
    uint64_t careful_until; /* re-apply one transaction at a time up to this commit LSN */

    /* The source transaction being read. */
    bool in_txn;
    uint64_t txn_commit;
    int64_t txn_events;
    bool txn_skip;
    int64_t txn_skip_n;
    /* The last event read was a snapshot row. Each table's snapshot is its own sink
     * transaction, all at one commit_lsn, so running out of readable lines there does not
     * end the source transaction: more of the point may come. */
    bool txn_snap;

    /* Snapshot rows: the table of the current run of them in this transaction, how many
     * of its rows the run has had (skipped ones included), and whether it goes by COPY
     * (-1: not decided yet). */
    struct pgcdc_replay_copy cp;
    int copy_rows; /* rows per COPY chunk; 0: never COPY */
    bool copy_failed;
    int run_table;
    int64_t run_n;
    int run_copy;

    /* A source TRUNCATE: the target tables of its events (consecutive, one lsn), sent as
     * one statement once the next event is another (tables linked by foreign keys can
     * only be truncated together). */
    int *trunc;
    const struct pgcdc_replay_table **trunc_tabs;
    size_t ntrunc, trunc_cap;
    uint64_t trunc_lsn;
    struct pgcdc_buf trunc_sql;

    /* The target transaction being built. */
    bool batch_open;
    int64_t batch_rows, batch_txns;
    bool beyond_end;
    uint64_t end_lsn; /* o->end_lsn, or o->end_later's once published; 0: none (yet) */
    bool hold;        /* a line waits for the end to be published (read again later) */
    bool abandon;     /* stopped while waiting for capture to vouch: roll back, no error */

    /* Progress. */
    uint64_t announced_rows, announced_txns;
    bool announced;
    int64_t announced_ms;
    int64_t last_progress_ms;
    uint64_t progress_rows;
    uint64_t progress_lines;
};

static int begin_batch(struct replay *r, char *err, size_t errlen)
{
    struct pgcdc_replay_cmd c = {
        .kind = PGCDC_REPLAY_BEGIN, .table = -1, .commit_lsn = r->txn_commit};
    int rc = pgcdc_replay_target_send_sql(&r->tg, &c, "BEGIN", err, errlen);
    if (rc < 0)
        return rc;
    r->batch_open = true;
    r->batch_rows = r->batch_txns = 0;
    return PGCDC_OK;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* a signal cuts it short */
}

/*
 * Reading ahead (migrate's bulk load): nothing is committed before capture vouches for
 * every line taken, so a capture crash, which takes back what it had not made durable,
 * never leaves on the target rows the files no longer hold. Waits; a stop request while
 * waiting abandons the transaction (r->abandon, PGCDC_ERR: the session rolls back).
 */
static int wait_vouched(struct replay *r, char *err, size_t errlen)
{
    for (;;) {
        int v = pgcdc_replay_reader_vouched(&r->rd, err, errlen);
        if (v != 0)
            return v < 0 ? v : PGCDC_OK;
        if (pgcdc_stop_requested) {
            r->abandon = true;
            snprintf(err, errlen, "stopped before capture made the rows read ahead durable");
            return PGCDC_ERR;
        }
        sleep_ms(2);
    }
}

/* Record (commit, partial) in the target and commit the batch. */
static int commit_batch(struct replay *r, uint64_t commit, int64_t partial, char *err,
                        size_t errlen)
{
    char lsn[PGCDC_LSN_BUFLEN], part[32];
    struct pgcdc_replay_stmt pst = {0};
    const char *pv[2] = {pgcdc_lsn_format(commit, lsn), part};
    int pc[2] = {-1, -1};
    int rc;
    if ((rc = wait_vouched(r, err, errlen)) < 0)
        return rc;
    if (r->bq.pending && (rc = pgcdc_replay_batch_flush(&r->bq, &r->tg, err, errlen)) < 0)
        return rc;
    /* An update or delete that matched no row must stop the batch before its COMMIT. */
    if ((rc = pgcdc_replay_target_settle(&r->tg, err, errlen)) < 0)
        return rc;
    snprintf(part, sizeof(part), "%" PRId64, partial);
    pst.params = pv;
    pst.param_col = pc;
    pst.nparams = 2;
    struct pgcdc_replay_cmd c = {.kind = PGCDC_REPLAY_POSITION, .table = -1, .pos_commit = commit};
    rc = pgcdc_replay_target_send_stmt(&r->tg, &c, PGCDC_REPLAY_POSITION_SQL, &pst, NULL, err, errlen);
    if (rc < 0)
        return rc;
    c.kind = PGCDC_REPLAY_COMMIT;
    c.pos_partial = partial;
    c.rows = (uint64_t)r->batch_rows;
    c.txns = (uint64_t)r->batch_txns;
    r->batch_open = false;
    r->batch_rows = r->batch_txns = 0;
    return pgcdc_replay_target_send_sql(&r->tg, &c, "COMMIT", err, errlen);
}

static int copy_finish(struct replay *r, int64_t partial, char *err, size_t errlen);

/* Send the pending TRUNCATE, if any, as one statement for all its tables. */
static int truncate_flush(struct replay *r, char *err, size_t errlen)
{
    int rc;
    if (r->ntrunc == 0)
        return PGCDC_OK;
    /* Indexes, not pointers, were kept: loading a table may move tg->tables. */
    for (size_t i = 0; i < r->ntrunc; i++)
        r->trunc_tabs[i] = &r->tg.tables[r->trunc[i]].t;
    if (pgcdc_replay_build_truncate(&r->trunc_sql, r->trunc_tabs, r->ntrunc) < 0) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    if (!r->batch_open && (rc = begin_batch(r, err, errlen)) < 0)
        return rc;
    r->batch_rows += (int64_t)r->ntrunc;
    /* It empties several tables at once: every change queued before it goes first. */
    if (r->bq.pending && (rc = pgcdc_replay_batch_flush(&r->bq, &r->tg, err, errlen)) < 0)
        return rc;
    struct pgcdc_replay_stmt none = {.op = 't'};
    struct pgcdc_replay_cmd c = {.kind = PGCDC_REPLAY_STMT,
                                 .op = 't',
                                 .table = r->trunc[0],
                                 .lsn = r->trunc_lsn,
                                 .commit_lsn = r->txn_commit};
    r->ntrunc = 0;
    return pgcdc_replay_target_send_stmt(&r->tg, &c, r->trunc_sql.data, &none, NULL, err, errlen);
}

/* A truncate event of table ti: joins the pending TRUNCATE of the same source statement. */
static int truncate_add(struct replay *r, int ti, const struct pgcdc_replay_event *ev, char *err,
                        size_t errlen)
{
    int rc;
    if (r->ntrunc && ev->lsn != r->trunc_lsn && (rc = truncate_flush(r, err, errlen)) < 0)
        return rc;
    if (r->ntrunc == r->trunc_cap) {
        size_t cap = r->trunc_cap ? r->trunc_cap * 2 : 8;
        int *t = realloc(r->trunc, cap * sizeof(*t));
        if (t)
            r->trunc = t;
        const struct pgcdc_replay_table **p = realloc(r->trunc_tabs, cap * sizeof(*p));
        if (p)
            r->trunc_tabs = p;
        if (!t || !p) {
            snprintf(err, errlen, "out of memory");
            return PGCDC_ERR;
        }
        r->trunc_cap = cap;
    }
    r->trunc[r->ntrunc++] = ti;
    r->trunc_lsn = ev->lsn;
    return PGCDC_OK;
}

/* The current source transaction is complete. */
static int txn_end(struct replay *r, char *err, size_t errlen)
{
    int rc;
    if ((rc = truncate_flush(r, err, errlen)) < 0)
        return rc;
    if (r->cp.active && (rc = copy_finish(r, 0, err, errlen)) < 0)
        return rc;
    r->in_txn = false;
    if (!r->batch_open)
        return PGCDC_OK;
    r->batch_txns++;
    if (!r->tg.pipelined || r->batch_rows >= r->o->batch_rows)
        return commit_batch(r, r->txn_commit, 0, err, errlen);
    return PGCDC_OK;
}

static int txn_start(struct replay *r, uint64_t commit, char *err, size_t errlen)
{
    r->in_txn = true;
    r->txn_commit = commit;
    r->txn_events = 0;
    r->txn_skip = commit < r->pos.commit || (commit == r->pos.commit && r->pos.partial == 0);
    r->txn_skip_n = commit == r->pos.commit ? r->pos.partial : 0;
    r->run_table = -1;
    r->run_n = 0;
    if (!r->tg.pipelined && !r->batch_open && commit > r->careful_until) {
        /* Past the transaction that failed: back to batches and pipelining. */
        int rc = pgcdc_replay_target_enter_pipeline(&r->tg, err, errlen);
        if (rc < 0)
            return rc;
        r->careful_until = 0;
    }
    return PGCDC_OK;
}

/* A COPY call's failure: a refused chunk is looked into in careful mode, as a batch. */
static int copy_rc(struct replay *r, int rc)
{
    if (rc == PGCDC_ERR && r->tg.failed)
        r->copy_failed = true;
    return rc;
}

/* End the open COPY chunk, recording partial events of the transaction as applied. */
static int copy_finish(struct replay *r, int64_t partial, char *err, size_t errlen)
{
    int rc = wait_vouched(r, err, errlen);
    if (rc < 0)
        return rc;
    return copy_rc(r, pgcdc_replay_copy_end(&r->cp, &r->tg, r->txn_commit, partial, err, errlen));
}

/* Whether the run of table ti goes by COPY: the table holds exactly its rows applied. */
static int copy_decide(struct replay *r, int ti, char *err, size_t errlen)
{
    int64_t before = r->run_n - 1;
    int64_t n = pgcdc_replay_copy_count(&r->tg, ti, before, err, errlen);
    if (n < 0)
        return (int)n;
    r->run_copy = n == before;
    char rows[32];
    snprintf(rows, sizeof(rows), "%" PRId64, before);
    const struct pgcdc_replay_table *t = &r->tg.tables[ti].t;
    pgcdc_log(PGCDC_LOG_INFO,
              r->run_copy ? "replay: loading the table's snapshot rows with COPY"
                          : "replay: the table holds other rows; its snapshot rows are upserted",
              "schema", t->schema, "table", t->name, "rows_before", rows, NULL);
    return PGCDC_OK;
}

/*
 * A snapshot row of table ti through COPY. Returns 1 when the row is not for COPY (the
 * caller upserts it), 0 once it is in, or an error.
 */
static int copy_event(struct replay *r, int ti, const struct pgcdc_replay_event *ev, char *err,
                      size_t errlen)
{
    int rc;
    if (r->run_copy < 0 && (rc = copy_decide(r, ti, err, errlen)) < 0)
        return rc;
    if (!r->run_copy) {
        /* Upserted: a COPY still open (a run before without its "last" row) ends first. */
        if (r->cp.active && (rc = copy_finish(r, r->txn_events - 1, err, errlen)) < 0)
            return rc;
        return 1;
    }
    if (r->cp.active && (r->cp.table != ti || !pgcdc_replay_copy_same_layout(&r->cp, ev)) &&
        (rc = copy_finish(r, r->txn_events - 1, err, errlen)) < 0)
        return rc;
    if (!r->cp.active) {
        /* What the pipeline holds commits first, up to the event before this one. */
        if (r->batch_open && (rc = commit_batch(r, r->txn_commit, r->txn_events - 1, err,
                                                errlen)) < 0)
            return rc;
        if ((rc = pgcdc_replay_target_leave_pipeline(&r->tg, err, errlen)) < 0 ||
            (rc = copy_rc(r, pgcdc_replay_copy_begin(&r->cp, &r->tg, ti, ev, err, errlen))) < 0)
            return rc;
    }
    if ((rc = copy_rc(r, pgcdc_replay_copy_row(&r->cp, &r->tg, ev, err, errlen))) < 0)
        return rc;
    /* Read ahead of capture, a chunk goes on until capture vouches for it. */
    if (!ev->snapshot_last)
        return (r->cp.rows >= r->copy_rows || r->cp.bytes >= COPY_CHUNK_BYTES) &&
                       !r->rd.line_ahead
                   ? copy_finish(r, r->txn_events, err, errlen)
                   : PGCDC_OK;
    if ((rc = copy_finish(r, r->txn_events, err, errlen)) < 0)
        return rc;
    /* The table is whole: its keys may be built now, and replay must see them. */
    const struct pgcdc_replay_table *t = &r->tg.tables[ti].t;
    if (r->o->table_loaded &&
        ((rc = r->o->table_loaded(r->o->table_loaded_ctx, t->schema, t->name, err, errlen)) < 0 ||
         (rc = pgcdc_replay_target_reload(&r->tg, ti, err, errlen)) < 0))
        return rc;
    return PGCDC_OK;
}

static int apply_event(struct replay *r, const struct pgcdc_replay_event *ev, char *err,
                       size_t errlen)
{
    char l1[PGCDC_LSN_BUFLEN], l2[PGCDC_LSN_BUFLEN];
    int rc;
    if (r->cp.active && !(ev->op == 'r' && ev->snapshot) &&
        (rc = copy_finish(r, r->txn_events - 1, err, errlen)) < 0)
        return rc;
    /* The snapshot is one transaction of any size: it alone is committed in pieces. */
    if (r->batch_open && ev->snapshot && r->batch_rows >= r->o->batch_rows &&
        (rc = commit_batch(r, r->txn_commit, r->txn_events - 1, err, errlen)) < 0)
        return rc;
    int ti = pgcdc_replay_target_table(&r->tg, ev, err, errlen);
    if (ti < 0)
        return ti;
    const struct pgcdc_replay_table *t = &r->tg.tables[ti].t;
    if (!t->exists) {
        snprintf(err, errlen,
                 "replay stopped: target table %s.%s does not exist (event at LSN %s, "
                 "transaction %s): create it (pg_dump --schema-only) and run replay again",
                 t->schema, t->name, pgcdc_lsn_format(ev->lsn, l1),
                 pgcdc_lsn_format(ev->commit_lsn, l2));
        return PGCDC_ERR;
    }
    if (ev->op == 't')
        return truncate_add(r, ti, ev, err, errlen);
    if (ev->op == 'r' && ev->snapshot && r->copy_rows > 0 && r->careful_until == 0 &&
        ti == r->run_table && (rc = copy_event(r, ti, ev, err, errlen)) <= 0)
        return rc;
    /* Back from a COPY (which leaves the pipeline): statements are pipelined again. */
    if (!r->tg.pipelined && r->careful_until == 0 && !r->batch_open &&
        (rc = pgcdc_replay_target_enter_pipeline(&r->tg, err, errlen)) < 0)
        return rc;
    char berr[512];
    if (pgcdc_replay_build(&r->st, t, ev, berr, sizeof(berr)) < 0) {
        snprintf(err, errlen, "replay stopped: %s (event at LSN %s, transaction %s)", berr,
                 pgcdc_lsn_format(ev->lsn, l1), pgcdc_lsn_format(ev->commit_lsn, l2));
        return PGCDC_ERR;
    }
    if (r->st.skip)
        return PGCDC_OK;
    if (!r->batch_open && (rc = begin_batch(r, err, errlen)) < 0)
        return rc;
    r->batch_rows++;
    if (r->tg.pipelined && r->grouping)
        return pgcdc_replay_batch_add(&r->bq, &r->tg, ti, &r->st, ev, err, errlen);
    struct pgcdc_replay_cmd c = {.kind = PGCDC_REPLAY_STMT,
                                 .op = ev->op,
                                 .table = ti,
                                 .lsn = ev->lsn,
                                 .commit_lsn = ev->commit_lsn};
    return pgcdc_replay_target_send_stmt(&r->tg, &c, r->st.sql.data, &r->st, t, err, errlen);
}

/* Whether the end is known (or there is none to wait for). */
static bool end_known(struct replay *r)
{
    if (!r->end_lsn && r->o->end_later)
        r->end_lsn = atomic_load(r->o->end_later);
    return r->end_lsn || !r->o->end_later;
}

/* One event line. Returns 0 (r->beyond_end: reading must stop, past --end-lsn), or <0. */
static int on_line(struct replay *r, const char *line, size_t len, char *err, size_t errlen)
{
    struct pgcdc_replay_event ev;
    char perr[256];
    /* Snapshot rows, the bulk of a migrate, as our own sink writes them: a direct scan. */
    if (!pgcdc_replay_parse_snapshot_row(&r->parser, line, len, &ev) &&
        pgcdc_replay_parse(&r->parser, line, len, &ev, perr, sizeof(perr)) < 0) {
        snprintf(err, errlen, "replay stopped: %s/%s at byte %" PRIu64 " is not an event: %s",
                 r->rd.dir, r->rd.cur, pgcdc_replay_reader_line_offset(&r->rd, len), perr);
        return PGCDC_ERR;
    }
    pgcdc_migrate_progress_event(r->o->progress, &ev);
    int rc;
    /* Read ahead of what capture vouches for: only snapshot rows go in (uncommitted);
     * anything else waits until capture has made it durable. */
    if (r->rd.line_ahead && !(ev.op == 'r' && ev.snapshot)) {
        pgcdc_replay_reader_unread(&r->rd, len);
        r->hold = true;
        return PGCDC_OK;
    }
    /* Under migrate's bulk load, only snapshot rows go in before the end is known: a
     * streamed change waits (a capture crash re-snapshots tables at a later point). */
    if (!(ev.op == 'r' && ev.snapshot) && !end_known(r) &&
        (!r->in_txn || ev.commit_lsn != r->txn_commit)) {
        pgcdc_replay_reader_unread(&r->rd, len);
        r->hold = true;
        return PGCDC_OK;
    }
    /* A TRUNCATE's events end where an event of another statement begins. */
    if (r->ntrunc && (ev.op != 't' || ev.lsn != r->trunc_lsn || ev.commit_lsn != r->txn_commit) &&
        (rc = truncate_flush(r, err, errlen)) < 0)
        return rc;
    if (!r->in_txn || ev.commit_lsn != r->txn_commit) {
        if (r->in_txn && (rc = txn_end(r, err, errlen)) < 0)
            return rc;
        if (r->end_lsn && ev.commit_lsn > r->end_lsn) {
            r->beyond_end = true;
            return PGCDC_OK;
        }
        if ((rc = txn_start(r, ev.commit_lsn, err, errlen)) < 0)
            return rc;
    }
    r->txn_events++;
    r->txn_snap = ev.op == 'r' && ev.snapshot;
    if (r->txn_skip)
        return PGCDC_OK;
    if (ev.op == 'r' && ev.snapshot && r->copy_rows > 0) {
        /* Runs are counted over skipped rows too: COPY resumes mid-table. */
        int ti = pgcdc_replay_target_table(&r->tg, &ev, err, errlen);
        if (ti < 0)
            return ti;
        if (ti != r->run_table) {
            r->run_table = ti;
            r->run_n = 0;
            r->run_copy = -1;
        }
        r->run_n++;
    }
    if (r->txn_events <= r->txn_skip_n)
        return PGCDC_OK;
    return apply_event(r, &ev, err, errlen);
}

static void log_progress(struct replay *r, const char *msg)
{
    char lsn[PGCDC_LSN_BUFLEN], rows[32], txns[32];
    snprintf(rows, sizeof(rows), "%" PRIu64, r->tg.rows_total);
    snprintf(txns, sizeof(txns), "%" PRIu64, r->tg.txns_total);
    pgcdc_log(PGCDC_LOG_INFO, msg, "applied_lsn", pgcdc_lsn_format(r->tg.done.commit, lsn), "rows",
              rows, "txns", txns, NULL);
}

/* Everything available is applied and committed: say so, and decide whether to stop. */
static bool at_end(struct replay *r)
{
    bool upto = pgcdc_replay_reader_at_position(&r->rd);
    uint64_t at = r->tg.done.commit;
    if (upto && r->rd.pos_lsn > at)
        at = r->rd.pos_lsn;
    if (upto && r->o->caught_up)
        atomic_store(r->o->caught_up, at);
    pgcdc_migrate_progress_applied(r->o->progress, r->tg.done.commit, r->tg.rows_total);
    if (upto)
        pgcdc_migrate_progress_caught_up(r->o->progress, at);
    bool done = !r->o->follow;
    if (!end_known(r))
        done = false; /* migrate's bulk load, before its end is published */
    else if (r->end_lsn)
        done = r->beyond_end || (upto && r->rd.pos_lsn >= r->end_lsn) ||
               r->tg.done.commit > r->end_lsn;
    /* Once per stretch of progress, at most once a second while data keeps coming. */
    int64_t now = pgcdc_mono_ms();
    bool moved = r->tg.rows_total != r->announced_rows || r->tg.txns_total != r->announced_txns;
    if (!r->announced || (moved && (done || now - r->announced_ms >= ANNOUNCE_EVERY_MS))) {
        char msg[64], lsn[PGCDC_LSN_BUFLEN], al[PGCDC_LSN_BUFLEN], rows[32], txns[32];
        snprintf(msg, sizeof(msg), "caught up at LSN %s", pgcdc_lsn_format(at, lsn));
        snprintf(rows, sizeof(rows), "%" PRIu64, r->tg.rows_total);
        snprintf(txns, sizeof(txns), "%" PRIu64, r->tg.txns_total);
        pgcdc_log(PGCDC_LOG_INFO, msg, "lsn", lsn, "applied_lsn",
                  pgcdc_lsn_format(r->tg.done.commit, al), "rows", rows, "txns", txns, NULL);
        r->announced = true;
        r->announced_rows = r->tg.rows_total;
        r->announced_txns = r->tg.txns_total;
        r->announced_ms = now;
    }
    return done;
}

/* Connect, prepare the target, find where it stands. */
static int session_start(struct replay *r, char *err, size_t errlen)
{
    bool replica = false;
    int rc = pgcdc_replay_target_open(&r->tg, !r->announced, &replica, &r->pos, err, errlen);
    if (rc < 0)
        return rc;
    r->grouping = replica && r->o->group_rows > 1;
    if (r->careful_until == 0 || r->pos.commit >= r->careful_until) {
        r->careful_until = 0;
        if ((rc = pgcdc_replay_target_enter_pipeline(&r->tg, err, errlen)) < 0)
            return rc;
    }
    /* Read from the first segment again; whole segments before the position are passed. */
    pgcdc_replay_reader_restart(&r->rd, r->pos.commit);
    r->in_txn = r->batch_open = r->beyond_end = false;
    r->batch_rows = r->batch_txns = 0;
    r->ntrunc = 0; /* a TRUNCATE pending when the last session ended is read again */
    r->cp.active = r->copy_failed = false;
    char lsn[PGCDC_LSN_BUFLEN], part[32];
    snprintf(part, sizeof(part), "%" PRId64, r->pos.partial);
    pgcdc_log(PGCDC_LOG_INFO,
              r->tg.pipelined ? "replay started" : "replay re-applying one transaction at a time",
              "target", r->tg.dsn_red, "resume_after", pgcdc_lsn_format(r->pos.commit, lsn),
              "partial_events", part, NULL);
    return PGCDC_OK;
}

static void note_progress(struct replay *r)
{
    /* Not the clock on every line: at a million rows a second it shows. */
    if (++r->progress_lines % 1024 != 0)
        return;
    int64_t now = pgcdc_mono_ms();
    pgcdc_migrate_progress_applied(r->o->progress, r->tg.done.commit, r->tg.rows_total);
    if (now - r->last_progress_ms >= PROGRESS_EVERY_MS) {
        if (r->last_progress_ms && r->tg.rows_total != r->progress_rows)
            log_progress(r, "replay progress");
        r->progress_rows = r->tg.rows_total;
        r->last_progress_ms = now;
    }
}

/*
 * No more complete data now (or past --end-lsn): every transaction read is whole. Commit
 * what is open and wait for it; *done when replay is over. Returns 0 or an error.
 */
static int on_idle(struct replay *r, bool *done, char *err, size_t errlen)
{
    int rc;
    *done = false;
    /* Read ahead of capture: nothing to commit until it vouches for what was taken. */
    if ((rc = pgcdc_replay_reader_vouched(&r->rd, err, errlen)) <= 0)
        return rc;
    if (r->in_txn && r->txn_snap) {
        /* Inside a snapshot's point: record how many of its events are in (never "whole":
         * the next table's rows share the point), and count on from there. */
        if (r->cp.active && (rc = copy_finish(r, r->txn_events, err, errlen)) < 0)
            return rc;
        if (r->batch_open &&
            (rc = commit_batch(r, r->txn_commit, r->txn_events, err, errlen)) < 0)
            return rc;
    } else if (r->in_txn && (rc = txn_end(r, err, errlen)) < 0) {
        return rc;
    }
    if (r->batch_open && (rc = commit_batch(r, r->txn_commit, 0, err, errlen)) < 0)
        return rc;
    if (r->tg.pipelined && (rc = pgcdc_replay_target_drain(&r->tg, 0, err, errlen)) < 0)
        return rc;
    if (!at_end(r))
        return PGCDC_OK;
    if ((rc = pgcdc_replay_target_finish(&r->tg, err, errlen)) < 0)
        return rc;
    log_progress(r, "replay done");
    *done = true;
    return PGCDC_OK;
}

/*
 * A statement failed (rc): in a pipelined batch, find which change and why by applying one
 * transaction at a time up to it (the earlier ones are committed on the way).
 */
static enum session_end session_failed(struct replay *r, int rc, int *out, char *err)
{
    if (rc == PGCDC_ERR && (r->tg.pipelined || r->copy_failed)) {
        char lsn[PGCDC_LSN_BUFLEN];
        uint64_t upto = r->tg.failed ? r->tg.fail_commit : r->txn_commit;
        pgcdc_log(PGCDC_LOG_INFO,
                  "a batch failed; re-applying one transaction at a time to find the change",
                  "upto", pgcdc_lsn_format(upto, lsn), "error", err, NULL);
        r->careful_until = upto ? upto : 1;
        return SESSION_CAREFUL;
    }
    *out = rc;
    return SESSION_FAILED;
}

/* Stopping inside a transaction: give it up (the session's end rolls it back). */
static enum session_end stopped_in_txn(struct replay *r)
{
    log_progress(r, "replay stopped by signal; the transaction in progress was rolled back");
    return SESSION_DONE;
}

/* One connection's worth of replay. *rc: the error, when it ends SESSION_FAILED. */
static enum session_end session(struct replay *r, int *rc, char *err, size_t errlen)
{
    if ((*rc = session_start(r, err, errlen)) < 0)
        return SESSION_FAILED;
    int64_t since_check = 0;
    int e;
    for (;;) {
        /* Nothing uncommitted: stop here (inside a snapshot's point too, between tables). */
        if (pgcdc_stop_requested && (!r->in_txn || (!r->batch_open && !r->cp.active))) {
            if (r->batch_open && (e = commit_batch(r, r->txn_commit, 0, err, errlen)) < 0)
                return session_failed(r, e, rc, err);
            if ((e = pgcdc_replay_target_finish(&r->tg, err, errlen)) < 0)
                return session_failed(r, e, rc, err);
            log_progress(r, "replay stopped by signal");
            return SESSION_DONE;
        }
        if (pgcdc_stop_requested && (r->batch_open || r->cp.active) && ++since_check >= 256)
            return stopped_in_txn(r); /* a long transaction: given up, applied next time */
        const char *line;
        size_t len;
        int got = pgcdc_replay_reader_next(&r->rd, &line, &len, err, errlen);
        if (got < 0) {
            *rc = got;
            return SESSION_FAILED;
        }
        if (got == 1) {
            r->hold = false;
            if ((e = on_line(r, line, len, err, errlen)) < 0)
                return r->abandon ? stopped_in_txn(r) : session_failed(r, e, rc, err);
            if (!r->beyond_end && !r->hold) {
                note_progress(r);
                continue;
            }
        }
        bool done;
        if ((e = on_idle(r, &done, err, errlen)) < 0)
            return r->abandon ? stopped_in_txn(r) : session_failed(r, e, rc, err);
        if (done)
            return SESSION_DONE;
        if (pgcdc_stop_requested)
            continue;
        sleep_ms(r->o->poll_ms);
    }
}

static void replay_free(struct replay *r)
{
    pgcdc_replay_target_free(&r->tg);
    pgcdc_replay_batch_free(&r->bq);
    pgcdc_replay_parser_free(&r->parser);
    pgcdc_replay_stmt_free(&r->st);
    pgcdc_replay_reader_free(&r->rd);
    free(r->trunc);
    free(r->trunc_tabs);
    pgcdc_buf_free(&r->trunc_sql);
    pgcdc_replay_copy_free(&r->cp);
}

int pgcdc_replay_run(const struct pgcdc_replay_opts *o, char *err, size_t errlen)
{
    struct replay r;
    memset(&r, 0, sizeof(r));
    r.o = o;
    r.end_lsn = o->end_lsn;
    r.copy_rows = o->copy_rows == 0 ? COPY_ROWS_DEFAULT : o->copy_rows < 0 ? 0 : o->copy_rows;
    pgcdc_replay_reader_init(&r.rd, o->input);
    r.rd.read_ahead = o->read_ahead;
    pgcdc_replay_parser_init(&r.parser);
    pgcdc_replay_batch_init(&r.bq, o->group_rows);
    if (pgcdc_replay_target_init(&r.tg, o->target, o->missing_rows_warn, err, errlen) < 0) {
        replay_free(&r);
        return PGCDC_ERR;
    }
    pgcdc_install_stop_signals();

    int rc = PGCDC_OK, backoff = 500, careful_runs = 0;
    for (;;) {
        enum session_end end = session(&r, &rc, err, errlen);
        /* Prepared statements and table definitions are per connection / may have changed. */
        pgcdc_replay_target_close(&r.tg);
        pgcdc_replay_batch_reset(&r.bq);
        if (end == SESSION_DONE) {
            rc = PGCDC_OK;
            break;
        }
        if (end == SESSION_CAREFUL) {
            if (++careful_runs < CAREFUL_RUNS_MAX)
                continue;
            /* Batches keep failing although each of their transactions applies on its own:
             * that is no state to report success from. Stop, and say what the batch said. */
            char last[1024];
            snprintf(last, sizeof(last), "%s", err);
            snprintf(err, errlen,
                     "replay stopped after %d batches failed that applied one transaction at "
                     "a time; the last batch said: %s",
                     careful_runs, last);
            rc = PGCDC_ERR;
            break;
        }
        if (rc != PGCDC_ERR_RETRY || pgcdc_stop_requested || !r.tg.ever_connected)
            break;
        bool taken_back = r.rd.taken_back;
        r.rd.taken_back = false; /* a failed reconnect after it backs off as usual */
        if (taken_back) { /* capture rewound under a read ahead: again, at once */
            pgcdc_log(PGCDC_LOG_INFO, "replay rolled back what it read ahead", "reason", err,
                      NULL);
            continue;
        }
        char ms[16];
        snprintf(ms, sizeof(ms), "%d", backoff);
        pgcdc_log(PGCDC_LOG_WARN, "target connection lost; reconnecting", "error", err,
                  "retry_in_ms", ms, NULL);
        sleep_ms(backoff);
        backoff = backoff * 2 > 30000 ? 30000 : backoff * 2;
    }
    if (rc == PGCDC_ERR_RETRY)
        rc = PGCDC_ERR;
    if (r.tg.row_misses > 10) {
        char n[32];
        snprintf(n, sizeof(n), "%" PRIu64, r.tg.row_misses);
        pgcdc_log(PGCDC_LOG_WARN, "updates and deletes that matched no row on the target", "count",
                  n, NULL);
    }
    replay_free(&r);
    return rc;
}
