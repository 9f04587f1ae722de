/*
 * snapshot.c — the snapshot driver (see snapshot.h): which tables are owed a snapshot and
 * at which point, and how each table's rows reach the sink: one sink transaction per
 * table, made durable and recorded done in state.dir before the next table starts, so a
 * crash takes back at most the table being written.
 */
#include "pgcdc/snapshot.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgcdc/common.h"
#include "pgcdc/errors.h"
#include "pgcdc/event.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/metrics.h"
#include "pgcdc/repl.h"
#include "pgcdc/sink.h"
#include "pgcdc/slot.h"
#include "pgcdc/snapshot_par.h"
#include "pgcdc/snapshot_signal.h"
#include "pgcdc/txn_track.h"

#define KEEPALIVE_EVERY_ROWS 4096
#define STOPPED_MSG "stopped during the snapshot; the next run takes the unfinished tables again"

/*
 * One table's rows as one sink transaction. Each row is encoded as it arrives and written
 * when the next one arrives, so the final one can still be made to say "last": the two
 * buffers take turns.
 */
struct table_txn {
    const struct pgcdc_snapshot_out *out;
    struct pgcdc_txn_meta txn;
    struct pgcdc_event_ctx ectx;
    struct pgcdc_buf value[2], key[2];
    bool haskey[2];
    int held;                   /* the buffer holding the encoded row not yet written; -1: none */
    const char *schema, *table; /* reported, unescaped */
    uint64_t rows;
};

static void table_txn_free(struct table_txn *t)
{
    for (int i = 0; i < 2; i++) {
        pgcdc_buf_free(&t->value[i]);
        pgcdc_buf_free(&t->key[i]);
    }
}

/* Write the held row; when it is the table's last, its source.snapshot becomes "last". */
static int write_held(struct table_txn *t, bool last, char *err, size_t errlen)
{
    int h = t->held;
    if (h < 0)
        return PGCDC_OK;
    struct pgcdc_buf *v = &t->value[h];
    if (last) {
        /* The source block follows "after", so the last occurrence is its own. "true" and
         * "last" have the same length: the bytes are patched in place. */
        static const char pat[] = "\"snapshot\":\"true\"";
        size_t pl = sizeof(pat) - 1;
        for (size_t i = v->len >= pl ? v->len - pl + 1 : 0; i-- > 0;)
            if (memcmp(v->data + i, pat, pl) == 0) {
                memcpy(v->data + i + 12, "last", 4);
                break;
            }
    }
    struct pgcdc_record r = {
        .schema = t->schema,
        .table = t->table,
        .op = 'r',
        .key = t->haskey[h] ? t->key[h].data : NULL,
        .key_len = t->haskey[h] ? t->key[h].len : 0,
        .value = v->data,
        .value_len = v->len,
        .lsn = t->txn.commit_lsn,
        .commit_lsn = t->txn.commit_lsn,
        .xid = t->txn.xid,
    };
    t->held = -1;
    atomic_fetch_add(&pgcdc_metrics.snapshot_rows, 1);
    return t->out->write(t->out->ctx, &r, err, errlen);
}

/* The row now in buffer i follows the held one, which is written (not the last). */
static int table_next(struct table_txn *t, int i, char *err, size_t errlen)
{
    int rc;
    if ((rc = write_held(t, false, err, errlen)) < 0)
        return rc;
    t->held = i;
    if (++t->rows % KEEPALIVE_EVERY_ROWS == 0) {
        pgcdc_metrics_progress();
        if (t->out->keepalive && (rc = t->out->keepalive(t->out->ctx, err, errlen)) < 0)
            return rc;
    }
    return PGCDC_OK;
}

/* The buffer the next row goes into, free once the held row is written. */
static int next_buffer(struct table_txn *t, char *err, size_t errlen)
{
    if (pgcdc_stop_requested) {
        snprintf(err, errlen, STOPPED_MSG);
        return PGCDC_ERR_RETRY;
    }
    int i = t->held == 0 ? 1 : 0;
    pgcdc_buf_reset(&t->value[i]);
    pgcdc_buf_reset(&t->key[i]);
    return i;
}

static int table_row(void *ctx, const struct pgcdc_change *ch, char *err, size_t errlen)
{
    struct table_txn *t = ctx;
    int i = next_buffer(t, err, errlen), haskey;
    if (i < 0)
        return i;
    struct pgcdc_change row = *ch;
    row.lsn = t->txn.commit_lsn;
    if (pgcdc_event_encode(&t->value[i], &t->ectx, &row, 'r', pgcdc_now_ms()) < 0 ||
        (haskey = pgcdc_event_key(&t->key[i], &row, 0)) < 0) {
        snprintf(err, errlen, "out of memory encoding a snapshot row");
        return PGCDC_ERR;
    }
    t->haskey[i] = haskey > 0;
    return table_next(t, i, err, errlen);
}

/* A row a parallel worker encoded (snapshot_par.h). */
static int table_record(void *ctx, const char *value, size_t vlen, const char *key, size_t klen,
                        char *err, size_t errlen)
{
    struct table_txn *t = ctx;
    int i = next_buffer(t, err, errlen);
    if (i < 0)
        return i;
    if (pgcdc_buf_append(&t->value[i], value, vlen) < 0 ||
        (key && pgcdc_buf_append(&t->key[i], key, klen) < 0)) {
        snprintf(err, errlen, "out of memory writing a snapshot row");
        return PGCDC_ERR;
    }
    t->haskey[i] = key != NULL;
    return table_next(t, i, err, errlen);
}

static int table_idle(void *ctx, char *err, size_t errlen)
{
    struct table_txn *t = ctx;
    return t->out->keepalive ? t->out->keepalive(t->out->ctx, err, errlen) : PGCDC_OK;
}

/* Make everything written durable: under a broker outage, wait like the stream does. */
static int make_durable(const struct pgcdc_snapshot_out *out, char *err, size_t errlen)
{
    int rc;
    while ((rc = out->sink->ops->flush(out->sink, 1000, err, errlen)) == PGCDC_AGAIN &&
           !pgcdc_stop_requested)
        if (out->keepalive && (rc = out->keepalive(out->ctx, err, errlen)) < 0)
            return rc;
    if (rc == PGCDC_AGAIN) {
        snprintf(err, errlen, STOPPED_MSG);
        return PGCDC_ERR_RETRY;
    }
    return rc;
}

/* Open the table's transaction in the tracker (waiting for room) and in the sink. */
static int table_begin(struct table_txn *t, char *err, size_t errlen)
{
    struct pgcdc_sink *sink = t->out->sink;
    int rc;
    while ((rc = pgcdc_txn_track_begin(t->out->track, t->txn.end_lsn)) == PGCDC_AGAIN)
        if (pgcdc_stop_requested || (rc = sink->ops->poll(sink, 100, err, errlen)) < 0)
            return rc;
    return sink->ops->begin(sink, &t->txn, err, errlen);
}

/* What one unit (a reported table: its leaves) needs to be written. */
struct unit {
    const struct pgcdc_snaptable *leaves;
    size_t n;
    uint64_t point;
    struct pgcdc_snappar *par; /* the parallel readers; NULL: r reads */
    size_t first;              /* the leaves' index in the listing */
    int64_t ts_ms;             /* the workers' commit time; 0: now */
};

/* The leaves at tl->t[i] sharing its reported name: how many. */
static size_t unit_len(const struct pgcdc_snaptables *tl, size_t i)
{
    size_t n = 1;
    while (i + n < tl->n && strcmp(tl->t[i + n].report_schema, tl->t[i].report_schema) == 0 &&
           strcmp(tl->t[i + n].report_name, tl->t[i].report_name) == 0)
        n++;
    return n;
}

static void log_table_done(const struct unit *u, uint64_t rows, int64_t started)
{
    char n[24], ms[24], p[PGCDC_LSN_BUFLEN];
    snprintf(n, sizeof(n), "%" PRIu64, rows);
    snprintf(ms, sizeof(ms), "%" PRId64, pgcdc_mono_ms() - started);
    pgcdc_log(PGCDC_LOG_INFO, "snapshot table done", "schema", u->leaves[0].report_schema, "table",
              u->leaves[0].report_name, "rows", n, "ms", ms, "point", pgcdc_lsn_format(u->point, p),
              NULL);
}

/*
 * Write one unit as one sink transaction at its point: everything before it made durable
 * first (so the file sink's checkpoint, recorded as the table's mark, moves only with this
 * table), then its rows, then durable again, then recorded done.
 */
static int write_unit(struct pgcdc_snapreader *r, const struct unit *u, struct pgcdc_snapstate *st,
                      const struct pgcdc_config *cfg, bool exact_sink,
                      const struct pgcdc_snapshot_out *out, char *err, size_t errlen)
{
    const char *schema = u->leaves[0].report_schema, *table = u->leaves[0].report_name;
    struct pgcdc_snapstate_table *e = pgcdc_snapstate_add(st, schema, table, u->point);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    int rc = make_durable(out, err, errlen);
    if (rc < 0)
        return rc;
    if (!e->first)
        e->first = u->point;
    e->point = u->point;
    if ((rc = pgcdc_snapstate_save(st, err, errlen)) < 0)
        return rc;
    struct table_txn t = {.out = out, .held = -1, .schema = schema, .table = table};
    t.txn = (struct pgcdc_txn_meta){.xid = r->xmin,
                                    .commit_lsn = u->point,
                                    .end_lsn = u->point,
                                    .commit_ts_ms = u->ts_ms ? u->ts_ms : pgcdc_now_ms()};
    t.ectx = (struct pgcdc_event_ctx){.name_json = out->name_json,
                                      .db_json = out->db_json,
                                      .xid = r->xmin,
                                      .commit_lsn = u->point,
                                      .commit_ts_ms = t.txn.commit_ts_ms,
                                      .snapshot = "true"};
    int64_t started = pgcdc_mono_ms();
    if ((rc = table_begin(&t, err, errlen)) < 0)
        goto out;
    if (u->par)
        rc = pgcdc_snappar_unit(u->par, u->first, u->n, table_record, table_idle, &t, err, errlen);
    for (size_t i = 0; !u->par && i < u->n && rc == PGCDC_OK; i++) {
        uint64_t rows = 0;
        rc = pgcdc_snapreader_copy(r, &u->leaves[i], table_row, &t, &rows, err, errlen);
    }
    if (rc == PGCDC_OK)
        rc = write_held(&t, true, err, errlen);
    if (rc == PGCDC_OK)
        rc = out->sink->ops->commit(out->sink, &t.txn, err, errlen);
    if (rc < 0)
        goto out;
    pgcdc_txn_track_commit(out->track);
    if ((rc = make_durable(out, err, errlen)) < 0)
        goto out;
    e = pgcdc_snapstate_find(st, schema, table);
    e->done = true;
    if ((rc = pgcdc_snapstate_save(st, err, errlen)) < 0)
        goto out;
    if (atomic_load(&pgcdc_metrics.snapshot_tables_remaining) > 0)
        atomic_fetch_sub(&pgcdc_metrics.snapshot_tables_remaining, 1);
    log_table_done(u, t.rows, started);
out:
    table_txn_free(&t);
    return rc;
}

/* Write every unit of tl at point, in order. */
static int write_all(struct pgcdc_snapreader *r, const struct pgcdc_snaptables *tl, uint64_t point,
                     struct pgcdc_snapstate *st, const struct pgcdc_config *cfg, bool exact_sink,
                     const struct pgcdc_snapshot_out *out, char *err, size_t errlen)
{
    int rc = PGCDC_OK;
    struct pgcdc_snappar *par = NULL;
    int64_t ts = 0;
    if (cfg->snapshot_workers > 1 && tl->n > 0) {
        struct pgcdc_snappar_opts po = {.main = r,
                                        .tl = tl,
                                        .cfg = cfg,
                                        .name_json = out->name_json,
                                        .db_json = out->db_json,
                                        .point = point,
                                        .ts_ms = ts = pgcdc_now_ms()};
        if ((rc = pgcdc_snappar_start(&par, &po, err, errlen)) < 0)
            return rc;
    }
    atomic_store(&pgcdc_metrics.snapshot_running, 1);
    for (size_t i = 0; i < tl->n && rc == PGCDC_OK;) {
        struct unit u = {&tl->t[i], unit_len(tl, i), point, par, i, ts};
        rc = write_unit(r, &u, st, cfg, exact_sink, out, err, errlen);
        i += u.n;
    }
    atomic_store(&pgcdc_metrics.snapshot_running, 0);
    pgcdc_snappar_stop(par);
    return rc;
}

/* Lock every leaf of tl (all before any is read, as pg_dump does). */
static int lock_all(struct pgcdc_snapreader *r, const struct pgcdc_snaptables *tl, char *err,
                    size_t errlen)
{
    for (size_t i = 0; i < tl->n; i++) {
        int rc = pgcdc_snapreader_lock(r, &tl->t[i], err, errlen);
        if (rc < 0)
            return rc;
    }
    return PGCDC_OK;
}

/* Record every unit of tl as owed at point (keeping a table's first point). */
static int record_owed(struct pgcdc_snapstate *st, const struct pgcdc_snaptables *tl,
                       uint64_t point, char *err, size_t errlen)
{
    size_t units = 0;
    for (size_t i = 0; i < tl->n; i += unit_len(tl, i), units++) {
        struct pgcdc_snapstate_table *e =
            pgcdc_snapstate_add(st, tl->t[i].report_schema, tl->t[i].report_name, point);
        if (!e) {
            snprintf(err, errlen, "out of memory");
            return PGCDC_ERR;
        }
        e->done = false;
        e->point = point;
    }
    atomic_store(&pgcdc_metrics.snapshot_tables_remaining, units);
    return pgcdc_snapstate_save(st, err, errlen);
}

int (*pgcdc_snapshot_exported_hook)(const char *, uint64_t, char *, size_t);

int pgcdc_snapshot_take(struct pgcdc_slot *slot, struct pgcdc_repl *repl,
                        const struct pgcdc_snapshot_out *out, uint64_t *durable_lsn, char *err,
                        size_t errlen)
{
    const struct pgcdc_config *cfg = slot->cfg;
    struct pgcdc_snapstate st = {0};
    struct pgcdc_snapreader r = {0};
    struct pgcdc_snaptables tl = {0};
    char snapname[128];
    uint64_t consistent = 0;
    /* A new slot starts a new record: an older one (of a slot since dropped) goes first,
     * so that a crash before the new one is written cannot be read as this slot's. */
    snprintf(st.path, sizeof(st.path), "%s/snapshot", cfg->state_dir);
    if (unlink(st.path) < 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove %s: %s", st.path, strerror(errno));
        return pgcdc_errors_errno(errno, PGCDC_ERRFILE_IO);
    }
    /* Recorded in state.dir before any row is read: a crash mid-snapshot finds it ours. */
    int rc = pgcdc_slot_create(slot, repl, snapname, sizeof(snapname), PGCDC_SLOT_SNAPSHOTTING,
                               &consistent, err, errlen);
    if (rc < 0)
        return rc;
    char l[PGCDC_LSN_BUFLEN];
    pgcdc_log(PGCDC_LOG_INFO, "created replication slot; taking the initial snapshot", "slot",
              cfg->source_slot, "consistent_point", pgcdc_lsn_format(consistent, l), "snapshot",
              snapname, NULL);
    atomic_store(&pgcdc_metrics.connected, 1);
    pgcdc_metrics_progress();
    int numeric = slot->numeric_strings;
    struct pgcdc_snapreader_opts ro = {.dsn = cfg->source_dsn,
                                       .snapshot_name = snapname,
                                       .numeric_strings = &numeric,
                                       .probe_slot = cfg->source_slot,
                                       .probe_lsn = consistent,
                                       .stop = &pgcdc_stop_requested,
                                       .invalid_utf8 = cfg->source_invalid_utf8,
                                       .point = consistent};
    int64_t started = pgcdc_mono_ms();
    rc = pgcdc_snapreader_open(&r, &ro, err, errlen);
    if (numeric >= 0)
        pgcdc_slot_note_numeric_strings(slot, numeric == 1);
    if (rc < 0 || (rc = pgcdc_snapreader_tables(&r, cfg, &tl, err, errlen)) < 0 ||
        (rc = lock_all(&r, &tl, err, errlen)) < 0)
        goto out;
    if (pgcdc_snapshot_exported_hook &&
        (rc = pgcdc_snapshot_exported_hook(snapname, consistent, err, errlen)) < 0)
        goto out;
    if (pgcdc_snapstate_set_patterns(&st, cfg) < 0) {
        snprintf(err, errlen, "out of memory");
        rc = PGCDC_ERR;
        goto out;
    }
    if ((rc = record_owed(&st, &tl, consistent, err, errlen)) < 0 ||
        (rc = write_all(&r, &tl, consistent, &st, cfg, cfg->sink_type == PGCDC_SINK_FILE, out, err,
                        errlen)) < 0)
        goto out;
    if (pgcdc_txn_track_confirmed(out->track) < consistent) {
        snprintf(err, errlen, "the sink did not acknowledge every snapshot row; not streaming");
        rc = PGCDC_ERR;
        goto out;
    }
    *durable_lsn = consistent;
    char tables[24], ms[24];
    snprintf(tables, sizeof(tables), "%zu", st.n);
    snprintf(ms, sizeof(ms), "%" PRId64, pgcdc_mono_ms() - started);
    pgcdc_log(PGCDC_LOG_INFO, "snapshot complete", "tables", tables, "ms", ms, NULL);
    rc = pgcdc_slot_mark_streamed(slot, err, errlen);
out:
    pgcdc_snapreader_tables_free(&tl);
    pgcdc_snapreader_close(&r);
    pgcdc_snapstate_free(&st);
    return rc;
}

void pgcdc_snapshot_owed_free(struct pgcdc_snapshot_owed *o)
{
    pgcdc_snapreader_tables_free(&o->tables);
    pgcdc_snapreader_close(&o->reader);
    pgcdc_snapstate_free(&o->st);
    o->active = false;
}

static bool same_pattern(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/*
 * A pending table whose last row ends the file sink: its rows became durable just before a
 * crash that came before "done" was recorded. Returns whether any changed.
 */
static bool settle_durable(struct pgcdc_snapstate *st, const struct pgcdc_config *cfg)
{
    for (size_t i = 0; i < st->n; i++) {
        struct pgcdc_snapstate_table *e = &st->t[i];
        if (!e->done && e->first &&
            pgcdc_snapstate_sink_ends_with(cfg->sink_file_dir, e->schema, e->name, e->point)) {
            e->done = true;
            return true; /* only the last table written can end the sink */
        }
    }
    return false;
}

/*
 * Keep in o->tables only the leaves owed a snapshot: their table is pending in the record,
 * or selected now and not by the recorded patterns. Pending tables no longer listed (gone,
 * or no longer selected) are owed nothing.
 */
static void keep_owed(struct pgcdc_snapshot_owed *o, const struct pgcdc_config *cfg)
{
    struct pgcdc_snaptables *tl = &o->tables;
    size_t kept = 0;
    bool *listed = calloc(o->st.n + 1, sizeof(bool));
    for (size_t i = 0; i < tl->n; i++) {
        const struct pgcdc_snaptable *t = &tl->t[i];
        struct pgcdc_snapstate_table *e =
            pgcdc_snapstate_find(&o->st, t->report_schema, t->report_name);
        if (e && listed)
            listed[e - o->st.t] = true;
        if ((e && !e->done) ||
            !pgcdc_snapstate_was_selected(&o->st, cfg, t->report_schema, t->report_name))
            tl->t[kept++] = *t;
    }
    tl->n = kept;
    for (size_t i = 0; listed && i < o->st.n; i++)
        if (!listed[i])
            o->st.t[i].done = true;
    free(listed);
}

/*
 * CREATE_REPLICATION_SLOT ... TEMPORARY ... EXPORT_SNAPSHOT on tmp: it waits for the
 * transactions open at that moment to end, at most snapshot.slot_timeout_ms, keeping the
 * stream's connection alive meanwhile. The point into o->point, the snapshot's name into
 * snapname.
 */
static int create_temporary_slot(struct pgcdc_snapshot_owed *o, struct pgcdc_repl *tmp,
                                 const struct pgcdc_config *cfg,
                                 const struct pgcdc_snapshot_out *out, char *snapname,
                                 size_t snaplen, char *err, size_t errlen)
{
    PGconn *c = (PGconn *)pgcdc_repl_conn(tmp);
    char sql[160];
    /* Unique per process, within NAMEDATALEN; the server drops it with the connection. The
     * pre-15 spelling of the snapshot option, so PostgreSQL 12-14 accept it too. */
    snprintf(sql, sizeof(sql),
             "CREATE_REPLICATION_SLOT \"pgcdc_snap_%d\" TEMPORARY LOGICAL wal2json "
             "EXPORT_SNAPSHOT",
             (int)getpid());
    int64_t deadline = pgcdc_mono_ms() + cfg->snapshot_slot_timeout_ms;
    int rc = PGCDC_OK;
    if (!PQsendQuery(c, sql))
        goto fail;
    while (PQisBusy(c) && rc == PGCDC_OK) {
        if (pgcdc_stop_requested) {
            snprintf(err, errlen, STOPPED_MSG);
            rc = PGCDC_ERR_RETRY;
        } else if (pgcdc_mono_ms() > deadline) {
            snprintf(err, errlen,
                     "the temporary slot for a snapshot waited %d ms for transactions open "
                     "on the source to end (snapshot.slot_timeout_ms); retrying: end or "
                     "commit them, or raise snapshot.slot_timeout_ms",
                     cfg->snapshot_slot_timeout_ms);
            rc = PGCDC_ERR_RETRY;
        } else if (out->keepalive && (rc = out->keepalive(out->ctx, err, errlen)) < 0) {
            break;
        } else if (pgcdc_repl_wait(tmp, 100) < 0 || !PQconsumeInput(c)) {
            goto fail;
        }
    }
    if (rc < 0)
        return rc; /* the caller closes the connection, which ends the command */
    PGresult *res = PQgetResult(c);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1 ||
        pgcdc_lsn_parse_str(PQgetvalue(res, 0, 1), &o->point) < 0) {
        rc = pgcdc_errors_pg(c, res, PGCDC_ERRCTX_SOURCE);
        snprintf(err, errlen, "cannot create a temporary slot for a snapshot: %s",
                 res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res) : PQerrorMessage(c));
        pgcdc_log_one_line(err);
        PQclear(res);
        return rc < 0 ? rc : PGCDC_ERR;
    }
    snprintf(snapname, snaplen, "%s", PQgetvalue(res, 0, 2));
    PQclear(res);
    while ((res = PQgetResult(c)))
        PQclear(res);
    return PGCDC_OK;
fail:
    snprintf(err, errlen, "cannot create a temporary slot for a snapshot: %s", PQerrorMessage(c));
    pgcdc_log_one_line(err);
    return pgcdc_errors_pg(c, NULL, PGCDC_ERRCTX_SOURCE);
}

/* A second replication connection exports a new point; the reader imports it. */
static int open_at_new_point(struct pgcdc_snapshot_owed *o, struct pgcdc_slot *slot,
                             const struct pgcdc_snapshot_out *out, char *err, size_t errlen)
{
    const struct pgcdc_config *cfg = slot->cfg;
    struct pgcdc_repl *tmp = NULL;
    char snapname[128];
    int rc = pgcdc_repl_connect(&tmp, cfg->source_dsn, err, errlen);
    if (rc == PGCDC_OK)
        rc = create_temporary_slot(o, tmp, cfg, out, snapname, sizeof(snapname), err, errlen);
    if (rc < 0)
        goto out;
    int numeric = slot->numeric_strings;
    struct pgcdc_snapreader_opts ro = {.dsn = cfg->source_dsn,
                                       .snapshot_name = snapname,
                                       .numeric_strings = &numeric,
                                       .probe_slot = cfg->source_slot,
                                       .probe_lsn = slot->server_confirmed,
                                       .stop = &pgcdc_stop_requested,
                                       .invalid_utf8 = cfg->source_invalid_utf8,
                                       .point = o->point};
    rc = pgcdc_snapreader_open(&o->reader, &ro, err, errlen);
    if (numeric >= 0)
        pgcdc_slot_note_numeric_strings(slot, numeric == 1);
    /* Imported: the reader's transaction holds the snapshot from now on. The temporary slot
     * (a replication slot and a WAL sender of the server's few) goes with its connection. */
out:
    if (tmp)
        pgcdc_repl_close(tmp);
    return rc;
}

int pgcdc_snapshot_prepare(struct pgcdc_snapshot_owed *o, struct pgcdc_slot *slot,
                           const struct pgcdc_snapshot_out *out, char *err, size_t errlen)
{
    const struct pgcdc_config *cfg = slot->cfg;
    bool exact_sink = cfg->sink_type == PGCDC_SINK_FILE; /* takes back a cut table */
    pgcdc_snapshot_owed_free(o);
    memset(o, 0, sizeof(*o));
    o->exact_sink = exact_sink;
    int rc = pgcdc_snapstate_load(&o->st, cfg->state_dir, err, errlen);
    if (rc < 0)
        return rc;
    bool changed = exact_sink && settle_durable(&o->st, cfg);
    bool owed = pgcdc_snapstate_pending(&o->st) > 0;
    bool new_patterns = !o->st.have_patterns ||
                        !same_pattern(o->st.include, cfg->source_tables_include) ||
                        !same_pattern(o->st.exclude, cfg->source_tables_exclude);
    if (cfg->snapshot_mode == PGCDC_SNAPSHOT_NEVER || !o->st.have_patterns) {
        /* No earlier patterns to compare with (a slot made without a snapshot, or by an
         * older pgcdc), or no snapshots wanted: what is selected now counts as captured. */
        changed = changed || new_patterns;
        new_patterns = false;
        if (pgcdc_snapstate_set_patterns(&o->st, cfg) < 0)
            goto oom;
    }
    if (!owed && !new_patterns) {
        atomic_store(&pgcdc_metrics.snapshot_tables_remaining, 0);
        return changed ? pgcdc_snapstate_save(&o->st, err, errlen) : PGCDC_OK;
    }
    if ((rc = open_at_new_point(o, slot, out, err, errlen)) < 0 ||
        (rc = pgcdc_snapreader_tables(&o->reader, cfg, &o->tables, err, errlen)) < 0)
        goto fail;
    keep_owed(o, cfg);
    if (pgcdc_snapstate_set_patterns(&o->st, cfg) < 0)
        goto oom;
    if ((rc = lock_all(&o->reader, &o->tables, err, errlen)) < 0 ||
        (rc = record_owed(&o->st, &o->tables, o->point, err, errlen)) < 0)
        goto fail;
    if (o->tables.n == 0) {
        pgcdc_snapshot_owed_free(o);
        return PGCDC_OK;
    }
    o->active = true;
    char n[24], p[PGCDC_LSN_BUFLEN];
    snprintf(n, sizeof(n), "%zu", (size_t)atomic_load(&pgcdc_metrics.snapshot_tables_remaining));
    pgcdc_log(PGCDC_LOG_INFO, "tables owed a snapshot; streaming up to their point first", "tables",
              n, "point", pgcdc_lsn_format(o->point, p), NULL);
    return PGCDC_OK;
oom:
    snprintf(err, errlen, "out of memory");
    rc = PGCDC_ERR;
fail:
    pgcdc_snapshot_owed_free(o);
    return rc;
}

bool pgcdc_snapshot_due(const struct pgcdc_snapshot_owed *o, uint64_t pos)
{
    return o->active && pos >= o->point;
}

bool pgcdc_snapshot_drops(const struct pgcdc_snapshot_owed *o, const char *schema,
                          const char *table, uint64_t commit_lsn)
{
    if (!o->active || commit_lsn >= o->point)
        return false;
    struct pgcdc_snapstate_table *e =
        pgcdc_snapstate_find((struct pgcdc_snapstate *)&o->st, schema, table);
    if (!e || e->done || e->again || e->point != o->point)
        return false; /* not owed at this point, or asked for again: changes flow */
    /* A sink that keeps a cut table's rows keeps its changes from their point on. */
    uint64_t from = !o->exact_sink && e->first && e->first < o->point ? e->first : o->point;
    return commit_lsn < from;
}

int pgcdc_snapshot_run_owed(struct pgcdc_snapshot_owed *o, const struct pgcdc_config *cfg,
                            const struct pgcdc_snapshot_out *out, char *err, size_t errlen)
{
    char p[PGCDC_LSN_BUFLEN];
    pgcdc_log(PGCDC_LOG_INFO, "snapshot of the owed tables starts; other changes wait", "point",
              pgcdc_lsn_format(o->point, p), NULL);
    int64_t started = pgcdc_mono_ms();
    int rc =
        write_all(&o->reader, &o->tables, o->point, &o->st, cfg, o->exact_sink, out, err, errlen);
    if (rc == PGCDC_OK) {
        char ms[24];
        snprintf(ms, sizeof(ms), "%" PRId64, pgcdc_mono_ms() - started);
        pgcdc_log(PGCDC_LOG_INFO, "snapshot of the owed tables done; streaming resumes", "ms", ms,
                  NULL);
    }
    pgcdc_snapshot_owed_free(o);
    return rc;
}

/* One table a request names: owed from now on (merged when it is owed already). */
struct request {
    struct pgcdc_snapstate *st;
    const struct pgcdc_snapshot_owed *o;
    const struct pgcdc_config *cfg;
    size_t n;
};

static int request_table(void *ctx, const char *schema, const char *table)
{
    struct request *q = ctx;
    if (!pgcdc_config_table_selected(q->cfg, schema, table)) {
        pgcdc_log(PGCDC_LOG_WARN, "snapshot request for a table the selection leaves out; skipped",
                  "schema", schema, "table", table, NULL);
        return PGCDC_OK;
    }
    struct pgcdc_snapstate_table *e = pgcdc_snapstate_find(q->st, schema, table);
    if (e && !e->done)
        return PGCDC_OK; /* owed already: it is taken at a point after this request */
    bool captured = e || pgcdc_snapstate_was_selected(q->st, q->cfg, schema, table);
    if (!e && !(e = pgcdc_snapstate_add(q->st, schema, table, 0)))
        return PGCDC_ERR;
    e->done = false;
    e->again = captured;
    e->point = e->first = 0;
    q->n++;
    return PGCDC_OK;
}

int pgcdc_snapshot_signal(struct pgcdc_snapshot_owed *o, const struct pgcdc_config *cfg,
                          const char *schema, const char *table, const struct pgcdc_change *ch,
                          uint64_t commit_lsn, char *err, size_t errlen)
{
    struct pgcdc_snapstate mine = {0}, *st = &o->st;
    if (strcmp(schema, PGCDC_SIGNAL_SCHEMA) != 0 || strcmp(table, PGCDC_SIGNAL_TABLE) != 0)
        return PGCDC_OK;
    int rc;
    if (!o->active && (rc = pgcdc_snapstate_load(st = &mine, cfg->state_dir, err, errlen)) < 0)
        return rc;
    struct request q = {st, o, cfg, 0};
    rc = pgcdc_signal_parse(schema, table, ch, request_table, &q, err, errlen);
    if (rc > 0 && q.n > 0) {
        /* Recorded before the request's transaction can be confirmed: a crash after that
         * still finds the tables owed. */
        if ((rc = pgcdc_snapstate_save(st, err, errlen)) == PGCDC_OK) {
            char n[24], l[PGCDC_LSN_BUFLEN];
            snprintf(n, sizeof(n), "%zu", q.n);
            pgcdc_log(PGCDC_LOG_INFO, "snapshot requested through pgcdc.signal", "tables", n,
                      "request_lsn", pgcdc_lsn_format(commit_lsn, l), NULL);
            o->requested = true;
        }
    }
    if (rc == PGCDC_ERR) /* a malformed request: reported, never retried for ever */
        pgcdc_log(PGCDC_LOG_WARN, "ignored a snapshot request", "error", err, NULL);
    pgcdc_snapstate_free(&mine);
    return rc < 0 && rc != PGCDC_ERR ? rc : PGCDC_OK;
}

int pgcdc_snapshot_prepare_slot(struct pgcdc_snapshot_owed *o, struct pgcdc_slot *slot,
                                struct pgcdc_repl *repl, const struct pgcdc_snapshot_out *out,
                                bool fresh, bool *done, uint64_t *durable_lsn, char *err,
                                size_t errlen)
{
    const struct pgcdc_config *cfg = slot->cfg;
    int rc;
    if (!fresh) {
        bool resumed = slot->rec.state == PGCDC_SLOT_SNAPSHOTTING;
        rc = pgcdc_snapshot_prepare(o, slot, out, err, errlen);
        /* initial_only, its snapshot cut short: the rest at the new point, then done. */
        if (rc < 0 || !resumed || cfg->snapshot_mode != PGCDC_SNAPSHOT_INITIAL_ONLY)
            return rc;
        if (o->active && (rc = pgcdc_snapshot_run_owed(o, cfg, out, err, errlen)) < 0)
            return rc;
        goto one_off;
    }
    if (cfg->snapshot_mode == PGCDC_SNAPSHOT_NEVER) {
        uint64_t consistent;
        return pgcdc_slot_create(slot, repl, NULL, 0, PGCDC_SLOT_STREAMING, &consistent, err,
                                 errlen);
    }
    rc = pgcdc_snapshot_take(slot, repl, out, durable_lsn, err, errlen);
    if (rc == PGCDC_OK && cfg->snapshot_mode == PGCDC_SNAPSHOT_INITIAL_ONLY) {
    one_off: /* A one-off export: leave no slot behind to pin WAL. */
        *done = true;
        rc = pgcdc_repl_drop_slot(repl, cfg->source_slot, err, errlen);
        if (rc == PGCDC_OK)
            pgcdc_log(PGCDC_LOG_INFO, "snapshot.mode is initial_only: dropped the slot, exiting",
                      "slot", cfg->source_slot, NULL);
    }
    return rc;
}
