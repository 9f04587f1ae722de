/*
 * snapshot.c — the initial snapshot: every included table read in the slot's exported
 * snapshot, each row turned into the tokens wal2json would have sent for it, encoded as an
 * 'r' event and written to the sink as one transaction at the slot's consistent point.
 */
#include "pgcdc/snapshot.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <sys/select.h>

#include "pgcdc/catalog.h"
#include "pgcdc/common.h"
#include "pgcdc/encoding.h"
#include "pgcdc/errors.h"
#include "pgcdc/event.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/metrics.h"
#include "pgcdc/repl.h"
#include "pgcdc/sink.h"
#include "pgcdc/slot.h"
#include "pgcdc/source.h"
#include "pgcdc/txn_track.h"

#define PROGRESS_EVERY_MS 10000
#define SNAP_NAME_MAX 256

struct table {
    char *oid, *schema, *name;
    char *report_schema, *report_name; /* the root's, with source.partitions_as_root */
};

static int sql_fail(PGconn *c, PGresult *res, const char *what, char *err, size_t errlen)
{
    int rc = pgcdc_errors_pg(c, res, PGCDC_ERRCTX_SOURCE);
    snprintf(err, errlen, "snapshot: %s: %s", what,
             res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res) : PQerrorMessage(c));
    pgcdc_log_one_line(err);
    PQclear(res);
    return rc;
}

static bool numeric_strings; /* set per run: wal2json 2.6's numeric-data-types-as-string */

/*
 * Set per run. Other sessions read UTF-8 (client_encoding, see source.h), but a SQL_ASCII
 * server sends its bytes as they are stored, which need not be UTF-8.
 */
static struct {
    bool on;
    int policy;          /* source.invalid_utf8 */
    uint64_t lsn;        /* the snapshot's rows' LSN, for the message */
    struct pgcdc_buf fix; /* the repaired text of one value */
} sql_ascii;

/*
 * Make *v (n bytes) UTF-8 on a SQL_ASCII source: an invalid sequence becomes U+FFFD when
 * source.invalid_utf8 = replace (counted and logged), and is an error naming the table and
 * column otherwise. *v and *n then point at the text to use.
 */
static int utf8_text(const struct table *t, const char *column, const char **v, size_t *n,
                     char *err, size_t errlen)
{
    if (!sql_ascii.on || pgcdc_utf8_valid_prefix(*v, *n) == *n)
        return PGCDC_OK;
    size_t nbad = 0;
    pgcdc_buf_reset(&sql_ascii.fix);
    if (pgcdc_utf8_append_repaired(&sql_ascii.fix, *v, *n, &nbad) < 0) {
        snprintf(err, errlen, "snapshot: out of memory");
        return PGCDC_ERR;
    }
    *v = sql_ascii.fix.data;
    *n = sql_ascii.fix.len;
    return pgcdc_encoding_invalid(sql_ascii.policy, "SQL_ASCII", t->report_schema,
                                  t->report_name, column, sql_ascii.lsn, nbad, err, errlen);
}
static volatile sig_atomic_t *stop_flag; /* set per run: the caller's stop request */

static bool stopping(void)
{
    return stop_flag && *stop_flag;
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

/*
 * Wait until a result is ready without blocking past a stop request (then PGCDC_ERR_RETRY:
 * the caller cancels the query and closes the connection, never waiting on a server that
 * may not answer).
 */
static int wait_result(PGconn *c, char *err, size_t errlen)
{
    while (PQisBusy(c)) {
        if (stopping()) {
            snprintf(err, errlen, "stopped during the snapshot; the next run takes it again");
            return PGCDC_ERR_RETRY;
        }
        int fd = PQsocket(c);
        fd_set rfds;
        FD_ZERO(&rfds);
        FD_SET(fd, &rfds);
        struct timeval tv = {0, 100000};
        if (select(fd + 1, &rfds, NULL, NULL, &tv) < 0 && errno != EINTR)
            break;
        if (!PQconsumeInput(c))
            break; /* PQgetResult reports the error */
    }
    return PGCDC_OK;
}

/*
 * PQexecParams that a stop request interrupts: NULL with *rc = PGCDC_ERR_RETRY then.
 * Otherwise the last result (the caller checks its status and PQclears it).
 */
static PGresult *query(PGconn *c, const char *sql, int nparams, const char *const *params,
                       int *rc, char *err, size_t errlen)
{
    *rc = PGCDC_OK;
    if (!PQsendQueryParams(c, sql, nparams, NULL, params, NULL, NULL, 0))
        return NULL;
    if ((*rc = wait_result(c, err, errlen)) < 0) {
        cancel_query(c);
        return NULL;
    }
    PGresult *last = NULL, *res;
    while ((res = PQgetResult(c))) {
        PQclear(last);
        last = res;
    }
    return last;
}

static int exec_ok(PGconn *c, const char *sql, char *err, size_t errlen)
{
    int rc;
    PGresult *res = query(c, sql, 0, NULL, &rc, err, errlen);
    if (rc < 0)
        return rc;
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        return sql_fail(c, res, sql, err, errlen);
    PQclear(res);
    return PGCDC_OK;
}

/*
 * The JSON token wal2json's pg_decode_write_value writes for a text value of type oid:
 * numbers bare (NaN and infinities as null), booleans as true/false, bytea as a string
 * without its "\x", everything else as an escaped string.
 */
static int append_token(struct pgcdc_buf *b, uint32_t oid, const char *v, size_t n)
{
    switch (oid) {
    case PGCDC_OID_INT2:
    case PGCDC_OID_INT4:
    case PGCDC_OID_INT8:
    case PGCDC_OID_OID:
    case PGCDC_OID_FLOAT4:
    case PGCDC_OID_FLOAT8:
    case PGCDC_OID_NUMERIC:
        if (numeric_strings) /* then wal2json quotes every number, NaN included */
            return pgcdc_buf_append_json_str(b, v, n);
        if (strncasecmp(v, "NaN", 3) == 0 || strncasecmp(v, "Infinity", 8) == 0 ||
            strncasecmp(v, "-Infinity", 9) == 0)
            return pgcdc_buf_append_str(b, "null");
        return pgcdc_buf_append(b, v, n);
    case PGCDC_OID_BOOL:
        return pgcdc_buf_append_str(b, strcmp(v, "t") == 0 ? "true" : "false");
    case PGCDC_OID_BYTEA:
        if (n >= 2 && v[0] == '\\' && v[1] == 'x')
            return pgcdc_buf_append_json_str(b, v + 2, n - 2);
        return pgcdc_buf_append_json_str(b, v, n);
    default:
        return pgcdc_buf_append_json_str(b, v, n);
    }
}

static int lock_table(PGconn *c, const struct table *t, char *err, size_t errlen)
{
    char *qs = PQescapeIdentifier(c, t->schema, strlen(t->schema));
    char *qt = PQescapeIdentifier(c, t->name, strlen(t->name));
    int rc = PGCDC_ERR;
    if (qs && qt) {
        char sql[600];
        snprintf(sql, sizeof(sql), "LOCK TABLE ONLY %s.%s IN ACCESS SHARE MODE", qs, qt);
        rc = exec_ok(c, sql, err, errlen);
    } else {
        snprintf(err, errlen, "snapshot: out of memory");
    }
    PQfreemem(qs);
    PQfreemem(qt);
    return rc;
}

/* Stream one table's rows through row(). */
static int copy_table(PGconn *c, const struct table *t, const struct pgcdc_snapshot_req *req,
                      pgcdc_snapshot_row_fn row, void *ctx, struct pgcdc_snapshot_stats *st,
                      char *err, size_t errlen)
{
    char sql[1536];
    /* Column 2: a key column, of the replica identity index under USING INDEX, else of the
     * primary key (as the stream's key, relations.c). Column 3: the type's ultimate base
     * through any domains (see pgcdc_event_rule_oid). */
    snprintf(sql, sizeof(sql),
             "SELECT a.attname, a.atttypid, EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE "
             "i.indrelid = a.attrelid AND a.attnum = ANY (i.indkey) AND CASE WHEN EXISTS "
             "(SELECT 1 FROM pg_catalog.pg_class r JOIN pg_catalog.pg_index x ON x.indrelid = "
             "r.oid WHERE r.oid = a.attrelid AND r.relreplident = 'i' AND x.indisreplident) "
             "THEN i.indisreplident ELSE i.indisprimary END), "
             "(WITH RECURSIVE d(o, depth) AS (SELECT a.atttypid, 0 UNION ALL SELECT "
             "t.typbasetype, d.depth + 1 FROM d JOIN pg_catalog.pg_type t ON t.oid = d.o WHERE "
             "t.typtype = 'd') SELECT o FROM d ORDER BY depth DESC LIMIT 1) "
             "FROM pg_catalog.pg_attribute a WHERE a.attrelid = %s AND a.attnum > 0 AND NOT "
             "a.attisdropped ORDER BY a.attnum",
             t->oid);
    int qrc;
    PGresult *cols = query(c, sql, 0, NULL, &qrc, err, errlen);
    if (qrc < 0)
        return qrc;
    if (PQresultStatus(cols) != PGRES_TUPLES_OK)
        return sql_fail(c, cols, "cannot read columns", err, errlen);
    int ncols = PQntuples(cols);
    int rc = PGCDC_ERR;
    struct pgcdc_buf names = {0}, vals = {0};
    size_t *name_off = calloc((size_t)ncols + 1, sizeof(size_t));
    size_t *val_off = calloc((size_t)ncols + 1, sizeof(size_t));
    uint32_t *oids = calloc((size_t)ncols + 1, sizeof(uint32_t));
    struct pgcdc_col *row_cols = calloc((size_t)ncols + 1, sizeof(*row_cols));
    struct pgcdc_col *pk = calloc((size_t)ncols + 1, sizeof(*pk));
    struct pgcdc_buf schema_json = {0}, table_json = {0};
    char *qs = NULL, *qt = NULL;
    size_t npk = 0;
    if (!name_off || !val_off || !oids || !row_cols || !pk)
        goto oom;
    for (int i = 0; i < ncols; i++) {
        name_off[i] = names.len;
        const char *n = PQgetvalue(cols, i, 0);
        size_t nlen = strlen(n);
        if ((rc = utf8_text(t, n, &n, &nlen, err, errlen)) < 0)
            goto out;
        if (pgcdc_buf_append_json_str(&names, n, nlen) < 0)
            goto oom;
        oids[i] = (uint32_t)strtoul(PQgetvalue(cols, i, 1), NULL, 10);
    }
    name_off[ncols] = names.len;
    for (int i = 0; i < ncols; i++) {
        struct pgcdc_span nm = {names.data + name_off[i], name_off[i + 1] - name_off[i]};
        row_cols[i].name = nm;
        /* Tokens are made from the column's own type (as wal2json does), the event's rules
         * follow its base type. */
        row_cols[i].typeoid =
            pgcdc_event_rule_oid(oids[i], (uint32_t)strtoul(PQgetvalue(cols, i, 3), NULL, 10));
        if (PQgetvalue(cols, i, 2)[0] == 't')
            pk[npk++] = (struct pgcdc_col){.name = nm, .typeoid = oids[i]};
    }
    if (pgcdc_buf_append_json_str(&schema_json, t->report_schema, strlen(t->report_schema)) < 0 ||
        pgcdc_buf_append_json_str(&table_json, t->report_name, strlen(t->report_name)) < 0)
        goto oom;

    qs = PQescapeIdentifier(c, t->schema, strlen(t->schema));
    qt = PQescapeIdentifier(c, t->name, strlen(t->name));
    if (!qs || !qt)
        goto oom;
    /* ONLY: an inheritance parent must not repeat its children's rows. */
    snprintf(sql, sizeof(sql), "SELECT * FROM ONLY %s.%s", qs, qt);
    if (!PQsendQuery(c, sql) || !PQsetSingleRowMode(c)) {
        rc = sql_fail(c, NULL, "cannot read table", err, errlen);
        goto out;
    }
    struct pgcdc_change ch = {
        .action = PGCDC_ACT_INSERT,
        .schema = {schema_json.data, schema_json.len},
        .table = {table_json.data, table_json.len},
        .has_columns = true,
        .columns = row_cols,
        .ncolumns = (size_t)ncols,
        .pk = pk,
        .npk = npk,
    };
    uint64_t nrows = 0;
    int64_t started = pgcdc_mono_ms(), last_log = started;
    PGresult *res;
    rc = PGCDC_OK;
    bool cancelled = false;
    for (;;) {
        if (rc == PGCDC_OK)
            rc = wait_result(c, err, errlen);
        if (rc != PGCDC_OK && !cancelled) {
            cancel_query(c); /* stopping, or a row failed: no need to read the rest */
            cancelled = true;
        }
        /* Stopping: do not wait for a server that may not answer; the caller closes the
         * connection, which ends the query as well. */
        if (rc != PGCDC_OK && stopping())
            break;
        if (!(res = PQgetResult(c)))
            break;
        ExecStatusType status = PQresultStatus(res);
        if (status == PGRES_SINGLE_TUPLE && rc == PGCDC_OK) {
            pgcdc_buf_reset(&vals);
            for (int i = 0; i < ncols; i++) {
                val_off[i] = vals.len;
                int r;
                const char *v = PQgetvalue(res, 0, i);
                size_t vlen = (size_t)PQgetlength(res, 0, i);
                if (PQgetisnull(res, 0, i))
                    r = pgcdc_buf_append_str(&vals, "null");
                else if ((rc = utf8_text(t, PQgetvalue(cols, i, 0), &v, &vlen, err, errlen)) < 0)
                    break; /* the row is not written; the query is cancelled above */
                else
                    r = append_token(&vals, oids[i], v, vlen);
                if (r < 0) {
                    PQclear(res);
                    goto oom;
                }
            }
            val_off[ncols] = vals.len;
            for (int i = 0; i < ncols; i++)
                row_cols[i].value = (struct pgcdc_span){vals.data + val_off[i],
                                                        val_off[i + 1] - val_off[i]};
            if (rc == PGCDC_OK)
                rc = row(ctx, &ch, t->report_schema, t->report_name, err, errlen);
            nrows++;
            st->rows++;
            int64_t now = pgcdc_mono_ms();
            if (now - last_log >= PROGRESS_EVERY_MS) {
                char n[24], rate[24];
                snprintf(n, sizeof(n), "%" PRIu64, nrows);
                snprintf(rate, sizeof(rate), "%.0f", nrows * 1000.0 / (double)(now - started + 1));
                pgcdc_log(PGCDC_LOG_INFO, "snapshot progress", "table", t->name, "rows", n,
                          "rows_per_s", rate, NULL);
                last_log = now;
            }
        } else if (status != PGRES_SINGLE_TUPLE && status != PGRES_TUPLES_OK && rc == PGCDC_OK) {
            rc = sql_fail(c, res, "cannot read table", err, errlen);
            res = NULL;
        }
        PQclear(res);
    }
    if (rc == PGCDC_OK) {
        char n[24], ms[24];
        snprintf(n, sizeof(n), "%" PRIu64, nrows);
        snprintf(ms, sizeof(ms), "%" PRId64, pgcdc_mono_ms() - started);
        pgcdc_log(PGCDC_LOG_INFO, "snapshot table done", "schema", t->schema, "table", t->name,
                  "rows", n, "ms", ms, NULL);
    }
    goto out;
oom:
    snprintf(err, errlen, "snapshot: out of memory");
    rc = PGCDC_ERR;
out:
    PQfreemem(qs);
    PQfreemem(qt);
    PQclear(cols);
    pgcdc_buf_free(&names);
    pgcdc_buf_free(&vals);
    pgcdc_buf_free(&schema_json);
    pgcdc_buf_free(&table_json);
    free(name_off);
    free(val_off);
    free(oids);
    free(row_cols);
    free(pk);
    return rc;
}

/*
 * Does the slot's wal2json accept numeric-data-types-as-string (2.6+)? Peeking with the
 * option up to the consistent point decodes nothing but runs the plugin's option parser.
 * Must run outside the snapshot transaction: an error would abort it.
 */
static int probe_numeric_strings(PGconn *c, const struct pgcdc_snapshot_req *req)
{
    char lsn[32];
    snprintf(lsn, sizeof(lsn), "%X/%X", (unsigned)(req->consistent_lsn >> 32),
             (unsigned)req->consistent_lsn);
    const char *params[2] = {req->slot, lsn};
    char err[256];
    int rc;
    PGresult *res = query(c,
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

/*
 * PQconnectdbParams that a stop request interrupts: a server that stops answering during
 * the handshake must not keep SIGTERM waiting. Returns the connection in whatever state it
 * reached (NULL only on ENOMEM).
 */
static PGconn *connect_interruptible(const char *const *keys, const char *const *vals)
{
    PGconn *c = PQconnectStartParams(keys, vals, 1);
    if (!c || PQstatus(c) == CONNECTION_BAD)
        return c;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED && !stopping()) {
        int fd = PQsocket(c);
        if (fd < 0)
            break;
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(fd, &fds);
        struct timeval tv = {0, 100000};
        int n = st == PGRES_POLLING_READING ? select(fd + 1, &fds, NULL, NULL, &tv)
                                            : select(fd + 1, NULL, &fds, NULL, &tv);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0)
            st = PQconnectPoll(c);
    }
    return c;
}

int pgcdc_snapshot_run(struct pgcdc_snapshot_req *req, const struct pgcdc_config *cfg,
                       pgcdc_snapshot_row_fn row, void *ctx, struct pgcdc_snapshot_stats *stats,
                       char *err, size_t errlen)
{
    struct pgcdc_source_params params;
    memset(stats, 0, sizeof(*stats));
    stop_flag = req->stop;
    int prc = pgcdc_source_params(&params, req->dsn, PGCDC_SOURCE_SNAPSHOT, err, errlen);
    if (prc < 0)
        return prc;
    PGconn *c = connect_interruptible(params.keys, params.vals);
    if (stopping()) {
        PQfinish(c);
        snprintf(err, errlen, "stopped during the snapshot; the next run takes it again");
        return PGCDC_ERR_RETRY;
    }
    if (!c || PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "snapshot: cannot connect: %s", c ? PQerrorMessage(c) : "");
        pgcdc_log_one_line(err);
        int crc = pgcdc_errors_connect(c);
        PQfinish(c);
        return crc;
    }
    int rc;
    PGresult *tables = NULL;
    char sql[256];
    if (req->numeric_strings < 0)
        req->numeric_strings = probe_numeric_strings(c, req);
    if (stopping()) { /* the probe was interrupted: its query is not drained */
        snprintf(err, errlen, "stopped during the snapshot; the next run takes it again");
        rc = PGCDC_ERR_RETRY;
        goto out;
    }
    numeric_strings = req->numeric_strings == 1;
    char encoding[32];
    pgcdc_source_server_encoding(c, encoding, sizeof(encoding));
    sql_ascii.on = strcmp(encoding, "SQL_ASCII") == 0;
    sql_ascii.policy = cfg->source_invalid_utf8;
    sql_ascii.lsn = req->consistent_lsn;
    /* SQL_ASCII to UTF8 is not converted but checked, and a bad byte would fail the
     * query: take the bytes as they are and judge them here (utf8_text). */
    if (sql_ascii.on && (rc = exec_ok(c, "SET client_encoding = 'SQL_ASCII'", err, errlen)) < 0)
        goto out;
    if ((rc = exec_ok(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err, errlen)) < 0)
        goto out;
    snprintf(sql, sizeof(sql), "SET TRANSACTION SNAPSHOT '%s'", req->snapshot_name);
    if ((rc = exec_ok(c, sql, err, errlen)) < 0)
        goto out;
    /* Text output as the walsender prints it (hex bytea); the session's settings (UTF-8,
     * ISO dates in UTC: see source.h) are the stream's. */
    if ((rc = exec_ok(c, "SELECT pg_catalog.set_config('bytea_output', 'hex', true)", err,
                      errlen)) < 0)
        goto out;
    PGresult *x = query(c, "SELECT pg_catalog.txid_snapshot_xmin(pg_catalog.txid_current_snapshot())",
                        0, NULL, &rc, err, errlen);
    if (rc < 0)
        goto out;
    if (PQresultStatus(x) == PGRES_TUPLES_OK)
        stats->xmin = (uint32_t)strtoull(PQgetvalue(x, 0, 0), NULL, 10);
    PQclear(x);
    tables = query(c, pgcdc_catalog_tables_sql, 0, NULL, &rc, err, errlen);
    if (rc < 0)
        goto out;
    if (PQresultStatus(tables) != PGRES_TUPLES_OK) {
        rc = sql_fail(c, tables, "cannot list tables", err, errlen);
        tables = NULL;
        goto out;
    }
    /*
     * Two passes: first lock every selected table, as pg_dump does, so that none can be
     * rewritten (ALTER TABLE ... TYPE, VACUUM FULL: MVCC-unsafe, the snapshot would see it
     * empty) while we read the others; then read them.
     */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < PQntuples(tables); i++) {
            struct table t = {PQgetvalue(tables, i, 0), PQgetvalue(tables, i, 1),
                              PQgetvalue(tables, i, 2), PQgetvalue(tables, i, 1),
                              PQgetvalue(tables, i, 2)};
            if (cfg->source_partitions_as_root) {
                t.report_schema = PQgetvalue(tables, i, 3);
                t.report_name = PQgetvalue(tables, i, 4);
            }
            if (!pgcdc_config_table_selected(cfg, t.report_schema, t.report_name))
                continue;
            if (pass == 0) {
                if ((rc = lock_table(c, &t, err, errlen)) < 0)
                    goto out;
                continue;
            }
            if ((rc = copy_table(c, &t, req, row, ctx, stats, err, errlen)) < 0)
                goto out;
            stats->tables++;
        }
    }
    rc = exec_ok(c, "COMMIT", err, errlen);
out:
    PQclear(tables);
    PQfinish(c);
    pgcdc_buf_free(&sql_ascii.fix);
    return rc;
}

/*
 * The initial snapshot as one sink transaction. Rows are held back by one, so the final
 * one is encoded saying "last"; the reader's spans last only for its call, so the held
 * row is copied into storage reused from row to row.
 */
struct held_row {
    struct pgcdc_change ch;
    struct pgcdc_buf bytes; /* every span of ch points in here */
    struct pgcdc_col *cols; /* ch.columns, ch.identity, ch.pk, one after another */
    size_t capcols;
    char schema[SNAP_NAME_MAX], table[SNAP_NAME_MAX]; /* reported, unescaped */
    bool pending;
};

struct take {
    const struct pgcdc_snapshot_out *out;
    struct pgcdc_snapshot_stats stats;
    struct pgcdc_txn_meta txn;
    struct pgcdc_event_ctx ectx;
    struct held_row held;
    struct pgcdc_buf value, key;
    uint64_t lsn; /* the slot's consistent point: every row's lsn and commit_lsn */
};

static size_t span_bytes(const struct pgcdc_col *cols, size_t n)
{
    size_t b = 0;
    for (size_t i = 0; i < n; i++)
        b += cols[i].name.len + cols[i].value.len;
    return b;
}

/* Copy s's bytes into b, which has room for them. */
static struct pgcdc_span keep_span(struct pgcdc_buf *b, struct pgcdc_span s)
{
    if (!s.len)
        return (struct pgcdc_span){NULL, 0};
    struct pgcdc_span kept = {b->data + b->len, s.len};
    memcpy(b->data + b->len, s.p, s.len);
    b->len += s.len;
    return kept;
}

static struct pgcdc_col *keep_cols(struct pgcdc_buf *b, struct pgcdc_col *dst,
                                   const struct pgcdc_col *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (struct pgcdc_col){keep_span(b, src[i].name), src[i].typeoid,
                                    keep_span(b, src[i].value)};
    return dst;
}

static int hold(struct held_row *h, const struct pgcdc_change *ch, uint64_t lsn, const char *schema,
                const char *table)
{
    size_t ncols = ch->ncolumns + ch->nidentity + ch->npk;
    if (ncols + 1 > h->capcols) {
        struct pgcdc_col *c = realloc(h->cols, (ncols + 1) * sizeof(*c));
        if (!c)
            return PGCDC_ERR;
        h->cols = c;
        h->capcols = ncols + 1;
    }
    pgcdc_buf_reset(&h->bytes);
    if (pgcdc_buf_reserve(&h->bytes, ch->schema.len + ch->table.len +
                                         span_bytes(ch->columns, ch->ncolumns) +
                                         span_bytes(ch->identity, ch->nidentity) +
                                         span_bytes(ch->pk, ch->npk)) < 0)
        return PGCDC_ERR;
    h->ch = *ch;
    h->ch.lsn = lsn;
    h->ch.schema = keep_span(&h->bytes, ch->schema);
    h->ch.table = keep_span(&h->bytes, ch->table);
    h->ch.columns = keep_cols(&h->bytes, h->cols, ch->columns, ch->ncolumns);
    h->ch.identity =
        keep_cols(&h->bytes, h->ch.columns + ch->ncolumns, ch->identity, ch->nidentity);
    h->ch.pk = keep_cols(&h->bytes, h->ch.identity + ch->nidentity, ch->pk, ch->npk);
    snprintf(h->schema, sizeof(h->schema), "%s", schema);
    snprintf(h->table, sizeof(h->table), "%s", table);
    h->pending = true;
    return PGCDC_OK;
}

/* Encode the held row, saying "last" when it is the snapshot's final one, and write it. */
static int flush_held(struct take *t, bool last, char *err, size_t errlen)
{
    struct held_row *h = &t->held;
    if (!h->pending)
        return PGCDC_OK;
    t->ectx.snapshot = last ? "last" : "true";
    pgcdc_buf_reset(&t->value);
    pgcdc_buf_reset(&t->key);
    int haskey;
    if (pgcdc_event_encode(&t->value, &t->ectx, &h->ch, 'r', pgcdc_now_ms()) < 0 ||
        (haskey = pgcdc_event_key(&t->key, &h->ch, 0)) < 0) {
        snprintf(err, errlen, "out of memory encoding a snapshot row");
        return PGCDC_ERR;
    }
    struct pgcdc_record r = {
        .schema = h->schema,
        .table = h->table,
        .op = 'r',
        .key = haskey ? t->key.data : NULL,
        .key_len = haskey ? t->key.len : 0,
        .value = t->value.data,
        .value_len = t->value.len,
        .lsn = t->lsn,
        .commit_lsn = t->lsn,
        .xid = t->txn.xid,
    };
    h->pending = false;
    atomic_fetch_add(&pgcdc_metrics.snapshot_rows, 1);
    pgcdc_metrics_progress();
    return t->out->write(t->out->ctx, &r, err, errlen);
}

static int snap_row(void *ctx, const struct pgcdc_change *ch, const char *schema, const char *table,
                    char *err, size_t errlen)
{
    struct take *t = ctx;
    if (pgcdc_stop_requested) {
        snprintf(err, errlen, "stopped during the snapshot; the next run takes it again");
        return PGCDC_ERR_RETRY;
    }
    int rc = flush_held(t, false, err, errlen);
    if (rc < 0)
        return rc;
    t->ectx.xid = t->txn.xid = t->stats.xmin;
    if (hold(&t->held, ch, t->lsn, schema, table) < 0) {
        snprintf(err, errlen, "out of memory encoding a snapshot row");
        return PGCDC_ERR;
    }
    return PGCDC_OK;
}

/* Open the snapshot's transaction in the tracker (waiting for room) and in the sink. */
static int take_begin(struct take *t, char *err, size_t errlen)
{
    struct pgcdc_sink *sink = t->out->sink;
    int rc;
    while ((rc = pgcdc_txn_track_begin(t->out->track, t->lsn)) == PGCDC_AGAIN)
        if (pgcdc_stop_requested || (rc = sink->ops->poll(sink, 100, err, errlen)) < 0)
            return rc;
    return sink->ops->begin(sink, &t->txn, err, errlen);
}

/* Read every selected table through snap_row, then commit the snapshot's transaction. */
static int take_rows(struct take *t, struct pgcdc_slot *slot, const char *snapname, char *err,
                     size_t errlen)
{
    const struct pgcdc_config *cfg = slot->cfg;
    struct pgcdc_sink *sink = t->out->sink;
    struct pgcdc_snapshot_req req = {
        .dsn = cfg->source_dsn,
        .snapshot_name = snapname,
        .slot = cfg->source_slot,
        .consistent_lsn = t->lsn,
        .numeric_strings = slot->numeric_strings,
        .stop = &pgcdc_stop_requested,
    };
    int rc = pgcdc_snapshot_run(&req, cfg, snap_row, t, &t->stats, err, errlen);
    if (req.numeric_strings >= 0)
        pgcdc_slot_note_numeric_strings(slot, req.numeric_strings == 1);
    if (rc == PGCDC_OK)
        rc = flush_held(t, true, err, errlen);
    if (rc == PGCDC_OK)
        rc = sink->ops->commit(sink, &t->txn, err, errlen);
    if (rc == PGCDC_OK)
        pgcdc_txn_track_commit(t->out->track);
    return rc;
}

/* Wait until the sink holds the snapshot durably: under a broker outage, like the stream. */
static int take_durable(struct take *t, char *err, size_t errlen)
{
    struct pgcdc_sink *sink = t->out->sink;
    int rc;
    while ((rc = sink->ops->flush(sink, 1000, err, errlen)) == PGCDC_AGAIN && !pgcdc_stop_requested)
        ;
    if (rc == PGCDC_AGAIN)
        rc = PGCDC_ERR_RETRY; /* stopped: the next run takes the snapshot again */
    if (rc < 0)
        return rc;
    if (pgcdc_txn_track_confirmed(t->out->track) < t->lsn) {
        snprintf(err, errlen, "the sink did not acknowledge every snapshot row; not streaming");
        return PGCDC_ERR;
    }
    return PGCDC_OK;
}

static void log_done(const struct take *t, int64_t started)
{
    char rows[24], tables[24], ms[24];
    snprintf(rows, sizeof(rows), "%" PRIu64, t->stats.rows);
    snprintf(tables, sizeof(tables), "%" PRIu64, t->stats.tables);
    snprintf(ms, sizeof(ms), "%" PRId64, pgcdc_mono_ms() - started);
    pgcdc_log(PGCDC_LOG_INFO, "snapshot complete", "tables", tables, "rows", rows, "ms", ms, NULL);
}

int pgcdc_snapshot_take(struct pgcdc_slot *slot, struct pgcdc_repl *repl,
                        const struct pgcdc_snapshot_out *out, uint64_t *durable_lsn, char *err,
                        size_t errlen)
{
    const struct pgcdc_config *cfg = slot->cfg;
    char snapname[128];
    uint64_t consistent = 0;
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
    struct take t = {.out = out, .lsn = consistent};
    t.txn = (struct pgcdc_txn_meta){
        .commit_lsn = consistent, .end_lsn = consistent, .commit_ts_ms = pgcdc_now_ms()};
    t.ectx = (struct pgcdc_event_ctx){.name_json = out->name_json,
                                      .db_json = out->db_json,
                                      .commit_lsn = consistent,
                                      .commit_ts_ms = t.txn.commit_ts_ms,
                                      .snapshot = "true"};
    int64_t started = pgcdc_mono_ms();
    if ((rc = take_begin(&t, err, errlen)) < 0 ||
        (rc = take_rows(&t, slot, snapname, err, errlen)) < 0 ||
        (rc = take_durable(&t, err, errlen)) < 0)
        goto out;
    *durable_lsn = consistent;
    log_done(&t, started);
    rc = pgcdc_slot_mark_streamed(slot, err, errlen);
out:
    pgcdc_buf_free(&t.held.bytes);
    free(t.held.cols);
    pgcdc_buf_free(&t.value);
    pgcdc_buf_free(&t.key);
    return rc;
}
