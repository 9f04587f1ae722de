/*
 * snapshot_read.c — a reader session of the snapshot (see snapshot_read.h): import the
 * exported snapshot, list and lock the selected tables, read each with COPY text rows.
 * Every wait on the server wakes up for a stop request, so SIGTERM is never kept waiting.
 */
#include "pgcdc/snapshot_read.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>

#include "pgcdc/catalog.h"
#include "pgcdc/common.h"
#include "pgcdc/encoding.h"
#include "pgcdc/errors.h"
#include "pgcdc/event.h"
#include "pgcdc/json.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/metrics.h"
#include "pgcdc/snapshot_copy.h"
#include "pgcdc/snapshot_signal.h"
#include "pgcdc/source.h"

#define PROGRESS_EVERY_MS 10000
#define STOPPED_MSG "stopped during the snapshot; the next run takes the unfinished tables again"

static bool stopping(const struct pgcdc_snapreader *r)
{
    return (r->stop && *r->stop) || (r->cancel && atomic_load(r->cancel));
}

static int sql_fail(PGconn *c, PGresult *res, const char *what, char *err, size_t errlen)
{
    int rc = pgcdc_errors_pg(c, res, PGCDC_ERRCTX_SOURCE);
    snprintf(err, errlen, "snapshot: %s: %s", what,
             res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res) : PQerrorMessage(c));
    pgcdc_log_one_line(err);
    PQclear(res);
    return rc;
}

/* Ask the server to abandon the running query, so draining its results is quick. */
static void cancel_query(PGconn *c)
{
    PGcancel *cancel = PQgetCancel(c);
    char buf[256];
    if (cancel) {
        PQcancel(cancel, buf, sizeof(buf));
        PQfreeCancel(cancel);
    }
}

/* Wait until the socket is readable or 100 ms pass; then consume what arrived. */
static bool wait_readable(PGconn *c)
{
    int fd = PQsocket(c);
    fd_set rfds;
    FD_ZERO(&rfds);
    FD_SET(fd, &rfds);
    struct timeval tv = {0, 100000};
    if (select(fd + 1, &rfds, NULL, NULL, &tv) < 0 && errno != EINTR)
        return false;
    return PQconsumeInput(c) != 0;
}

/*
 * Wait until a result is ready without blocking past a stop request (then PGCDC_ERR_RETRY:
 * the caller cancels the query and closes the connection, never waiting on a server that
 * may not answer).
 */
static int wait_result(const struct pgcdc_snapreader *r, char *err, size_t errlen)
{
    while (PQisBusy(r->c)) {
        if (stopping(r)) {
            snprintf(err, errlen, STOPPED_MSG);
            return PGCDC_ERR_RETRY;
        }
        if (!wait_readable(r->c))
            break; /* PQgetResult reports the error */
    }
    return PGCDC_OK;
}

/*
 * PQexecParams that a stop request interrupts: NULL with *rc = PGCDC_ERR_RETRY then.
 * Otherwise the last result (the caller checks its status and PQclears it).
 */
static PGresult *query(const struct pgcdc_snapreader *r, const char *sql, int nparams,
                       const char *const *params, int *rc, char *err, size_t errlen)
{
    *rc = PGCDC_OK;
    if (!PQsendQueryParams(r->c, sql, nparams, NULL, params, NULL, NULL, 0))
        return NULL;
    if ((*rc = wait_result(r, err, errlen)) < 0) {
        cancel_query(r->c);
        return NULL;
    }
    PGresult *last = NULL, *res;
    while ((res = PQgetResult(r->c))) {
        PQclear(last);
        last = res;
    }
    return last;
}

static int exec_ok(const struct pgcdc_snapreader *r, const char *sql, char *err, size_t errlen)
{
    int rc;
    PGresult *res = query(r, sql, 0, NULL, &rc, err, errlen);
    if (rc < 0)
        return rc;
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        return sql_fail(r->c, res, sql, err, errlen);
    PQclear(res);
    return PGCDC_OK;
}

/* The stop test for pgcdc_source_connect_until. */
static bool connect_stop(void *r)
{
    return stopping(r);
}

/*
 * Whether wal2json on this server takes numeric-data-types-as-string, asked by peeking at
 * slot (inactive) from consistent, outside any transaction (a refusal would abort it): 1
 * yes, 0 no, -1 could not tell.
 */
static int probe_numeric(struct pgcdc_snapreader *r, const char *slot, uint64_t consistent)
{
    char lsn[PGCDC_LSN_BUFLEN];
    const char *params[2] = {slot, pgcdc_lsn_format(consistent, lsn)};
    char err[256];
    int rc;
    PGresult *res = query(r,
                          "SELECT count(*) FROM pg_catalog.pg_logical_slot_peek_changes("
                          "$1, $2::pg_lsn, NULL, 'format-version', '2', "
                          "'numeric-data-types-as-string', '1')",
                          2, params, &rc, err, sizeof(err));
    if (rc < 0)
        return -1;
    int ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    const char *msg = res ? PQresultErrorMessage(res) : "";
    int known = ok || strstr(msg, "numeric-data-types-as-string") != NULL;
    PQclear(res);
    return known ? ok : -1;
}

int pgcdc_snapreader_open(struct pgcdc_snapreader *r, const struct pgcdc_snapreader_opts *o,
                          char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    r->stop = o->stop;
    r->cancel = o->cancel;
    r->invalid_utf8 = o->invalid_utf8;
    r->point = o->point;
    /* A server that stops answering during the handshake must not keep SIGTERM waiting. */
    int rc = pgcdc_source_connect_until(&r->c, o->dsn, PGCDC_SOURCE_SNAPSHOT, connect_stop, r,
                                        err, errlen);
    if (rc < 0)
        return rc;
    if (stopping(r)) {
        snprintf(err, errlen, STOPPED_MSG);
        rc = PGCDC_ERR_RETRY;
        goto fail;
    }
    if (!r->c || PQstatus(r->c) != CONNECTION_OK) {
        snprintf(err, errlen, "snapshot: cannot connect: %s", r->c ? PQerrorMessage(r->c) : "");
        pgcdc_log_one_line(err);
        rc = pgcdc_errors_connect(r->c);
        goto fail;
    }
    char sql[256];
    if (*o->numeric_strings < 0 && o->probe_slot)
        *o->numeric_strings = probe_numeric(r, o->probe_slot, o->probe_lsn);
    if (stopping(r)) { /* the probe was interrupted: its query is not drained */
        snprintf(err, errlen, STOPPED_MSG);
        rc = PGCDC_ERR_RETRY;
        goto fail;
    }
    r->numeric_strings = *o->numeric_strings == 1;
    char encoding[32];
    pgcdc_source_server_encoding(r->c, encoding, sizeof(encoding));
    r->sql_ascii = strcmp(encoding, "SQL_ASCII") == 0;
    /* SQL_ASCII to UTF8 is not converted but checked, and a bad byte would fail the
     * query: take the bytes as they are and judge them here (utf8_row). */
    if (r->sql_ascii && (rc = exec_ok(r, "SET client_encoding = 'SQL_ASCII'", err, errlen)) < 0)
        goto fail;
    if ((rc = exec_ok(r, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err, errlen)) < 0)
        goto fail;
    snprintf(sql, sizeof(sql), "SET TRANSACTION SNAPSHOT '%s'", o->snapshot_name);
    if ((rc = exec_ok(r, sql, err, errlen)) < 0)
        goto fail;
    /* Text output as the walsender prints it (hex bytea); the session's settings (UTF-8,
     * ISO dates in UTC: see source.h) are the stream's. */
    if ((rc = exec_ok(r, "SELECT pg_catalog.set_config('bytea_output', 'hex', true)", err,
                      errlen)) < 0)
        goto fail;
    PGresult *x =
        query(r, "SELECT pg_catalog.txid_snapshot_xmin(pg_catalog.txid_current_snapshot())", 0,
              NULL, &rc, err, errlen);
    if (rc < 0)
        goto fail;
    if (PQresultStatus(x) == PGRES_TUPLES_OK)
        r->xmin = (uint32_t)strtoull(PQgetvalue(x, 0, 0), NULL, 10);
    PQclear(x);
    return PGCDC_OK;
fail:
    PQfinish(r->c);
    r->c = NULL;
    return rc;
}

void pgcdc_snapreader_close(struct pgcdc_snapreader *r)
{
    pgcdc_buf_free(&r->fix);
    if (!r->c)
        return;
    /* Read only: ending the connection ends the transaction, nothing to commit. */
    PQfinish(r->c);
    r->c = NULL;
}

int pgcdc_snapreader_tables(struct pgcdc_snapreader *r, const struct pgcdc_config *cfg,
                            struct pgcdc_snaptables *out, char *err, size_t errlen)
{
    char sql[2048];
    int rc;
    memset(out, 0, sizeof(*out));
    snprintf(sql, sizeof(sql),
             "SELECT q.*, c.reltuples FROM (%s) q(oid, s, n, rs, rn) JOIN pg_catalog.pg_class "
             "c ON c.oid = q.oid ORDER BY 4, 5, 2, 3",
             pgcdc_catalog_tables_sql);
    PGresult *res = query(r, sql, 0, NULL, &rc, err, errlen);
    if (rc < 0)
        return rc;
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return sql_fail(r->c, res, "cannot list tables", err, errlen);
    out->res = res;
    out->t = calloc((size_t)PQntuples(res) + 1, sizeof(*out->t));
    if (!out->t) {
        pgcdc_snapreader_tables_free(out);
        snprintf(err, errlen, "snapshot: out of memory");
        return PGCDC_ERR;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        struct pgcdc_snaptable t = {PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                                    PQgetvalue(res, i, 2), PQgetvalue(res, i, 1),
                                    PQgetvalue(res, i, 2), strtod(PQgetvalue(res, i, 5), NULL)};
        if (cfg->source_partitions_as_root) {
            t.report_schema = PQgetvalue(res, i, 3);
            t.report_name = PQgetvalue(res, i, 4);
        }
        if (pgcdc_config_table_selected(cfg, t.report_schema, t.report_name) &&
            !pgcdc_signal_is(t.report_schema, t.report_name))
            out->t[out->n++] = t;
    }
    return PGCDC_OK;
}

void pgcdc_snapreader_tables_free(struct pgcdc_snaptables *tl)
{
    PQclear(tl->res);
    free(tl->t);
    memset(tl, 0, sizeof(*tl));
}

/* "schema"."table", quoted for SQL, into out. */
static int qualified(PGconn *c, const struct pgcdc_snaptable *t, char *out, size_t outlen)
{
    char *qs = PQescapeIdentifier(c, t->schema, strlen(t->schema));
    char *qt = PQescapeIdentifier(c, t->name, strlen(t->name));
    int ok = qs && qt && snprintf(out, outlen, "%s.%s", qs, qt) < (int)outlen;
    PQfreemem(qs);
    PQfreemem(qt);
    return ok ? PGCDC_OK : PGCDC_ERR;
}

static int lock_table(struct pgcdc_snapreader *r, const struct pgcdc_snaptable *t, bool nowait,
                      char *err, size_t errlen)
{
    char q[1100], sql[1200];
    if (qualified(r->c, t, q, sizeof(q)) < 0) {
        snprintf(err, errlen, "snapshot: out of memory");
        return PGCDC_ERR;
    }
    snprintf(sql, sizeof(sql), "LOCK TABLE ONLY %s IN ACCESS SHARE MODE%s", q,
             nowait ? " NOWAIT" : "");
    return exec_ok(r, sql, err, errlen);
}

int pgcdc_snapreader_lock(struct pgcdc_snapreader *r, const struct pgcdc_snaptable *t, char *err,
                          size_t errlen)
{
    return lock_table(r, t, false, err, errlen);
}

int pgcdc_snapreader_lock_nowait(struct pgcdc_snapreader *r, const struct pgcdc_snaptable *t,
                                 char *err, size_t errlen)
{
    return lock_table(r, t, true, err, errlen);
}

/* One table's columns as the rows need them; every array has ncols + 1 entries. */
struct columns {
    int ncols;
    bool generated; /* some column is generated: COPY of the table would leave it out */
    struct pgcdc_buf names;
    uint32_t *oids;
    struct pgcdc_col *cols, *pk;
    size_t npk;
};

static void columns_free(struct columns *k)
{
    pgcdc_buf_free(&k->names);
    free(k->oids);
    free(k->cols);
    free(k->pk);
}

/*
 * The table's columns: column 3 says whether it belongs to the key (the replica identity
 * index under USING INDEX, else the primary key, as the stream's key, relations.c); column 4
 * is the type's ultimate base through any domains (see pgcdc_event_rule_oid).
 */
static int read_columns(struct pgcdc_snapreader *r, const struct pgcdc_snaptable *t,
                        struct columns *k, char *err, size_t errlen)
{
    static const char sql[] =
        "SELECT a.attname, a.atttypid, EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE "
        "i.indrelid = a.attrelid AND a.attnum = ANY (i.indkey) AND CASE WHEN EXISTS "
        "(SELECT 1 FROM pg_catalog.pg_class r JOIN pg_catalog.pg_index x ON x.indrelid = "
        "r.oid WHERE r.oid = a.attrelid AND r.relreplident = 'i' AND x.indisreplident) "
        "THEN i.indisreplident ELSE i.indisprimary END), "
        "(WITH RECURSIVE d(o, depth) AS (SELECT a.atttypid, 0 UNION ALL SELECT "
        "t.typbasetype, d.depth + 1 FROM d JOIN pg_catalog.pg_type t ON t.oid = d.o WHERE "
        "t.typtype = 'd') SELECT o FROM d ORDER BY depth DESC LIMIT 1), a.attgenerated <> '' "
        "FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT "
        "a.attisdropped ORDER BY a.attnum";
    int rc;
    const char *params[1] = {t->oid};
    PGresult *res = query(r, sql, 1, params, &rc, err, errlen);
    if (rc < 0)
        return rc;
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return sql_fail(r->c, res, "cannot read columns", err, errlen);
    int n = k->ncols = PQntuples(res);
    size_t *name_off = calloc((size_t)n + 1, sizeof(size_t));
    k->oids = calloc((size_t)n + 1, sizeof(uint32_t));
    k->cols = calloc((size_t)n + 1, sizeof(*k->cols));
    k->pk = calloc((size_t)n + 1, sizeof(*k->pk));
    if (!name_off || !k->oids || !k->cols || !k->pk)
        goto oom;
    for (int i = 0; i < n; i++) {
        name_off[i] = k->names.len;
        const char *nm = PQgetvalue(res, i, 0);
        size_t nlen = strlen(nm), nbad = 0;
        if (r->sql_ascii && pgcdc_utf8_valid_prefix(nm, nlen) != nlen) {
            pgcdc_buf_reset(&r->fix);
            if (pgcdc_utf8_append_repaired(&r->fix, nm, nlen, &nbad) < 0)
                goto oom;
            if ((rc = pgcdc_encoding_invalid(r->invalid_utf8, "SQL_ASCII", t->report_schema,
                                             t->report_name, r->fix.data, r->point, nbad, err,
                                             errlen)) < 0)
                goto fail;
            nm = r->fix.data;
            nlen = r->fix.len;
        }
        if (pgcdc_buf_append_json_str(&k->names, nm, nlen) < 0)
            goto oom;
        k->oids[i] = (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10);
        if (PQgetvalue(res, i, 4)[0] == 't')
            k->generated = true;
    }
    name_off[n] = k->names.len;
    for (int i = 0; i < n; i++) {
        struct pgcdc_span nm = {k->names.data + name_off[i], name_off[i + 1] - name_off[i]};
        k->cols[i].name = nm;
        /* Tokens are made from the column's own type (as wal2json does), the event's rules
         * follow its base type. */
        k->cols[i].typeoid =
            pgcdc_event_rule_oid(k->oids[i], (uint32_t)strtoul(PQgetvalue(res, i, 3), NULL, 10));
        if (PQgetvalue(res, i, 2)[0] == 't')
            k->pk[k->npk++] = (struct pgcdc_col){.name = nm, .typeoid = k->oids[i]};
    }
    free(name_off);
    PQclear(res);
    return PGCDC_OK;
oom:
    snprintf(err, errlen, "snapshot: out of memory");
    rc = PGCDC_ERR;
fail:
    free(name_off);
    PQclear(res);
    return rc;
}

/*
 * A row that is not valid UTF-8 from a SQL_ASCII server: repaired (U+FFFD) into r->fix,
 * *row pointing there, when source.invalid_utf8 = replace; an error naming the first bad
 * column otherwise. Tabs and newlines are ASCII, so the row keeps its columns.
 */
static int utf8_row(struct pgcdc_snapreader *r, const struct pgcdc_snaptable *t,
                    const struct columns *k, const char **row, size_t *len, char *err,
                    size_t errlen)
{
    size_t bad = pgcdc_utf8_valid_prefix(*row, *len), col = 0, nbad = 0;
    for (size_t i = 0; i < bad; i++)
        col += (*row)[i] == '\t';
    char name[256] = "?";
    if ((int)col < k->ncols)
        pgcdc_json_unescape(k->cols[col].name, name, sizeof(name));
    pgcdc_buf_reset(&r->fix);
    if (pgcdc_utf8_append_repaired(&r->fix, *row, *len, &nbad) < 0) {
        snprintf(err, errlen, "snapshot: out of memory");
        return PGCDC_ERR;
    }
    *row = r->fix.data;
    *len = r->fix.len;
    return pgcdc_encoding_invalid(r->invalid_utf8, "SQL_ASCII", t->report_schema, t->report_name,
                                  name, r->point, nbad, err, errlen);
}

static void log_progress(const struct pgcdc_snaptable *t, uint64_t nrows, int64_t started,
                         int64_t now)
{
    char n[24], rate[24], total[24] = "unknown", eta[24] = "unknown";
    double per_s = nrows * 1000.0 / (double)(now - started + 1);
    snprintf(n, sizeof(n), "%" PRIu64, nrows);
    snprintf(rate, sizeof(rate), "%.0f", per_s);
    if (t->reltuples >= 0) { /* -1: never analyzed */
        double est = t->reltuples > (double)nrows ? t->reltuples : (double)nrows;
        snprintf(total, sizeof(total), "%.0f", est);
        if (per_s > 0)
            snprintf(eta, sizeof(eta), "%.0fs", (est - (double)nrows) / per_s);
    }
    pgcdc_log(PGCDC_LOG_INFO, "snapshot progress", "schema", t->schema, "table", t->name, "rows", n,
              "estimated_rows", total, "rows_per_s", rate, "eta", eta, NULL);
}

/*
 * COPY the table's rows out as text. COPY of the table itself is the server's fastest
 * path; a table with generated columns is read through SELECT *, which has them, as
 * wal2json does.
 */
static int start_copy(struct pgcdc_snapreader *r, const struct pgcdc_snaptable *t,
                      const struct columns *k, uint64_t from, uint64_t to, char *err, size_t errlen)
{
    char q[1100], sql[1400];
    if (qualified(r->c, t, q, sizeof(q)) < 0) {
        snprintf(err, errlen, "snapshot: out of memory");
        return PGCDC_ERR;
    }
    if (to != PGCDC_SNAP_ALL_BLOCKS) /* a range: a TID Range Scan on PostgreSQL 14+ */
        snprintf(sql, sizeof(sql),
                 "COPY (SELECT * FROM ONLY %s WHERE ctid >= '(%" PRIu64 ",0)'::pg_catalog.tid "
                 "AND ctid < '(%" PRIu64 ",0)'::pg_catalog.tid) TO STDOUT",
                 q, from, to);
    else if (from > 0)
        snprintf(sql, sizeof(sql),
                 "COPY (SELECT * FROM ONLY %s WHERE ctid >= '(%" PRIu64
                 ",0)'::pg_catalog.tid) TO STDOUT",
                 q, from);
    else if (k->generated) /* ONLY: an inheritance parent must not repeat its children's rows */
        snprintf(sql, sizeof(sql), "COPY (SELECT * FROM ONLY %s) TO STDOUT", q);
    else
        snprintf(sql, sizeof(sql), "COPY %s TO STDOUT", q);
    int rc;
    /* Not query(): a COPY's result repeats until its data is read. */
    if (!PQsendQuery(r->c, sql))
        return sql_fail(r->c, NULL, "cannot read table", err, errlen);
    if ((rc = wait_result(r, err, errlen)) < 0) {
        cancel_query(r->c);
        return rc;
    }
    PGresult *res = PQgetResult(r->c);
    if (PQresultStatus(res) != PGRES_COPY_OUT)
        return sql_fail(r->c, res, "cannot read table", err, errlen);
    PQclear(res);
    return PGCDC_OK;
}

/* After the last row, or to abandon the COPY: collect the final result. */
static int end_copy(struct pgcdc_snapreader *r, int rc, char *err, size_t errlen)
{
    if (rc < 0) {
        cancel_query(r->c); /* stopping, or a row failed: no need to read the rest */
        if (stopping(r))
            return rc; /* the caller closes the connection, which ends the query too */
    }
    PGresult *res;
    while ((res = PQgetResult(r->c))) {
        if (rc == PGCDC_OK && PQresultStatus(res) != PGRES_COMMAND_OK) {
            rc = sql_fail(r->c, res, "cannot read table", err, errlen);
            continue;
        }
        if (PQresultStatus(res) == PGRES_COPY_OUT) { /* drain a cancelled COPY */
            char *buf;
            PQclear(res);
            while (PQgetCopyData(r->c, &buf, 0) > 0)
                PQfreemem(buf);
            continue;
        }
        PQclear(res);
    }
    return rc;
}

int pgcdc_snapreader_copy(struct pgcdc_snapreader *r, const struct pgcdc_snaptable *t,
                          pgcdc_snapreader_row_fn row, void *ctx, uint64_t *rows, char *err,
                          size_t errlen)
{
    return pgcdc_snapreader_copy_range(r, t, 0, PGCDC_SNAP_ALL_BLOCKS, row, ctx, rows, err, errlen);
}

int pgcdc_snapreader_export(struct pgcdc_snapreader *r, char *name, size_t namelen, char *err,
                            size_t errlen)
{
    int rc;
    PGresult *res = query(r, "SELECT pg_catalog.pg_export_snapshot()", 0, NULL, &rc, err, errlen);
    if (rc < 0)
        return rc;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        return sql_fail(r->c, res, "cannot export the snapshot to parallel readers", err, errlen);
    snprintf(name, namelen, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return PGCDC_OK;
}

int pgcdc_snapreader_blocks(struct pgcdc_snapreader *r, const struct pgcdc_snaptable *t,
                            uint64_t *blocks, char *err, size_t errlen)
{
    int rc;
    const char *params[1] = {t->oid};
    PGresult *res = query(r,
                          "SELECT pg_catalog.pg_relation_size($1::pg_catalog.oid) / "
                          "pg_catalog.current_setting('block_size')::pg_catalog.int8",
                          1, params, &rc, err, errlen);
    if (rc < 0)
        return rc;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        return sql_fail(r->c, res, "cannot read a table's size", err, errlen);
    *blocks = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return PGCDC_OK;
}

int pgcdc_snapreader_copy_range(struct pgcdc_snapreader *r, const struct pgcdc_snaptable *t,
                                uint64_t from, uint64_t to, pgcdc_snapreader_row_fn row, void *ctx,
                                uint64_t *rows, char *err, size_t errlen)
{
    struct columns k = {0};
    struct pgcdc_snapcopy sc = {0};
    struct pgcdc_buf schema_json = {0}, table_json = {0};
    int rc = read_columns(r, t, &k, err, errlen);
    if (rc < 0)
        goto out;
    if (pgcdc_snapcopy_init(&sc, (size_t)k.ncols, k.oids, r->numeric_strings) < 0 ||
        pgcdc_buf_append_json_str(&schema_json, t->report_schema, strlen(t->report_schema)) < 0 ||
        pgcdc_buf_append_json_str(&table_json, t->report_name, strlen(t->report_name)) < 0) {
        snprintf(err, errlen, "snapshot: out of memory");
        rc = PGCDC_ERR;
        goto out;
    }
    if ((rc = start_copy(r, t, &k, from, to, err, errlen)) < 0)
        goto out;
    struct pgcdc_change ch = {
        .action = PGCDC_ACT_INSERT,
        .schema = {schema_json.data, schema_json.len},
        .table = {table_json.data, table_json.len},
        .has_columns = true,
        .columns = k.cols,
        .ncolumns = (size_t)k.ncols,
        .pk = k.pk,
        .npk = k.npk,
    };
    int64_t started = pgcdc_mono_ms(), last_log = started;
    for (;;) {
        char *buf;
        int n = PQgetCopyData(r->c, &buf, 1);
        if (n > 0) {
            const char *row_text = buf;
            size_t row_len = (size_t)n;
            rc = PGCDC_OK;
            if (r->sql_ascii && pgcdc_utf8_valid_prefix(buf, row_len) != row_len)
                rc = utf8_row(r, t, &k, &row_text, &row_len, err, errlen);
            if (rc == PGCDC_OK)
                rc = pgcdc_snapcopy_row(&sc, row_text, row_len, k.cols, err, errlen);
            PQfreemem(buf);
            if (rc == PGCDC_OK)
                rc = row(ctx, &ch, err, errlen);
            if (rc < 0)
                break;
            if ((++*rows & 1023) == 0) {
                int64_t now = pgcdc_mono_ms();
                if (now - last_log >= PROGRESS_EVERY_MS) {
                    log_progress(t, *rows, started, now);
                    last_log = now;
                }
            }
            continue;
        }
        if (n == -1) /* done: the final result follows */
            break;
        if (n == -2) {
            rc = sql_fail(r->c, NULL, "cannot read table", err, errlen);
            break;
        }
        if (stopping(r)) {
            snprintf(err, errlen, STOPPED_MSG);
            rc = PGCDC_ERR_RETRY;
            break;
        }
        if (!wait_readable(r->c)) {
            rc = sql_fail(r->c, NULL, "cannot read table", err, errlen);
            break;
        }
    }
    rc = end_copy(r, rc, err, errlen);
out:
    pgcdc_snapcopy_free(&sc);
    pgcdc_buf_free(&schema_json);
    pgcdc_buf_free(&table_json);
    columns_free(&k);
    return rc;
}
