/*
 * replay_target.c — the target session of `pgcdc replay`: connections, lock and position
 * table, table definitions, the statement cache and the pipeline (see replay_target.h).
 */
#include "pgcdc/replay_target.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgcdc/errors.h"
#include "pgcdc/json.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/source.h"

#define WINDOW 2048                    /* commands in flight in the pipeline, at most */
#define STMT_CACHE_MAX 4096            /* prepared statements per connection, at most */
#define LOCK_KEY "7378745184117325824" /* pg_advisory_lock key: one replay per target */

struct pgcdc_replay_stmt_entry {
    char *sql;
    uint64_t hash;
    int id;
};

/* The server's message for res (primary; detail when there is one), on one line. */
static void result_message(PGconn *c, PGresult *res, char *out, size_t outlen)
{
    const char *prim = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *det = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    if (prim)
        snprintf(out, outlen, "%s%s%s", prim, det ? " (" : "", det ? det : "");
    else
        snprintf(out, outlen, "%s", c ? PQerrorMessage(c) : "no connection");
    if (prim && det && strlen(out) + 2 < outlen)
        strcat(out, ")");
    pgcdc_log_one_line(out);
}

static int fail_conn(struct pgcdc_replay_target *tg, PGconn *c, PGresult *res, const char *what,
                     char *err, size_t errlen)
{
    char m[768];
    int rc = pgcdc_errors_pg(c, res, PGCDC_ERRCTX_TARGET);
    result_message(c, res, m, sizeof(m));
    snprintf(err, errlen, "%s on the target (%s): %s", what, tg->dsn_red, m);
    PQclear(res);
    return rc;
}

static int exec_ok(struct pgcdc_replay_target *tg, PGconn *c, const char *sql, char *err,
                   size_t errlen)
{
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        return fail_conn(tg, c, res, sql, err, errlen);
    PQclear(res);
    return PGCDC_OK;
}

static PGconn *connect_target(struct pgcdc_replay_target *tg, const char *appname, char *err,
                              size_t errlen)
{
    /* Notices to the log: "schema pgcdc already exists" is no stderr line. */
    PGconn *c = pgcdc_session_connect(tg->dsn, appname);
    if (PQstatus(c) != CONNECTION_OK) {
        char m[768];
        snprintf(m, sizeof(m), "%s", c ? PQerrorMessage(c) : "out of memory");
        pgcdc_log_one_line(m);
        snprintf(err, errlen, "cannot connect to the target (%s): %s", tg->dsn_red, m);
        PQfinish(c);
        return NULL;
    }
    return c;
}

static void table_free_cols(struct pgcdc_replay_table *t)
{
    for (size_t c = 0; c < t->ncols; c++) {
        free(t->cols[c].name);
        free(t->cols[c].type);
        free(t->cols[c].cast);
    }
    free(t->cols);
    t->cols = NULL;
    t->ncols = t->npk = 0;
    t->other_unique = t->partitioned = false;
}

void pgcdc_replay_target_close(struct pgcdc_replay_target *tg)
{
    PQfinish(tg->conn);
    PQfinish(tg->meta);
    tg->conn = tg->meta = NULL;
    tg->ring_head = tg->ring_count = 0;
    tg->unflushed = false;
    tg->checks_pending = false;
    /* Prepared statements and table definitions are per connection / may have changed. */
    for (size_t i = 0; i < tg->sc_cap; i++) {
        free(tg->sc[i].sql);
        tg->sc[i].sql = NULL;
    }
    tg->sc_n = 0;
    for (size_t i = 0; i < tg->ntables; i++) {
        struct pgcdc_replay_rtable *t = &tg->tables[i];
        free(t->raw_schema);
        free(t->raw_table);
        free(t->t.schema);
        free(t->t.name);
        table_free_cols(&t->t);
    }
    free(tg->tables);
    tg->tables = NULL;
    tg->ntables = 0;
}

/* ---- prepared statements, by SQL text */

uint64_t pgcdc_replay_target_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

/* The id of sql's prepared statement; *fresh when it must be prepared first. -1: none. */
static int stmt_lookup(struct pgcdc_replay_target *tg, const char *sql, size_t len, bool *fresh)
{
    uint64_t h = pgcdc_replay_target_hash(sql, len);
    *fresh = false;
    if (tg->sc_cap == 0 || (tg->sc_n + 1) * 2 > tg->sc_cap) {
        if (tg->sc_n >= STMT_CACHE_MAX)
            goto lookup_only;
        size_t ncap = tg->sc_cap ? tg->sc_cap * 2 : 256;
        struct pgcdc_replay_stmt_entry *ne = calloc(ncap, sizeof(*ne));
        if (!ne)
            goto lookup_only;
        for (size_t i = 0; i < tg->sc_cap; i++) {
            if (!tg->sc[i].sql)
                continue;
            size_t k = tg->sc[i].hash & (ncap - 1);
            while (ne[k].sql)
                k = (k + 1) & (ncap - 1);
            ne[k] = tg->sc[i];
        }
        free(tg->sc);
        tg->sc = ne;
        tg->sc_cap = ncap;
    }
lookup_only:
    if (tg->sc_cap == 0)
        return -1;
    size_t k = h & (tg->sc_cap - 1);
    while (tg->sc[k].sql) {
        if (tg->sc[k].hash == h && strcmp(tg->sc[k].sql, sql) == 0)
            return tg->sc[k].id;
        k = (k + 1) & (tg->sc_cap - 1);
    }
    if (tg->sc_n >= STMT_CACHE_MAX || (tg->sc_n + 1) * 2 > tg->sc_cap)
        return -1;
    if (!(tg->sc[k].sql = strndup(sql, len)))
        return -1;
    tg->sc[k].hash = h;
    tg->sc[k].id = ++tg->sc_next_id;
    tg->sc_n++;
    *fresh = true;
    return tg->sc[k].id;
}

/* ---- the target's tables */

static int load_table(struct pgcdc_replay_target *tg, struct pgcdc_replay_rtable *rt, char *err,
                      size_t errlen)
{
    static const char sql[] =
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), "
        "pg_catalog.quote_ident(tn.nspname) || '.' || pg_catalog.quote_ident(ty.typname), "
        "coalesce(a.attnum = ANY (i.indkey), false), a.attgenerated <> '', "
        "EXISTS (SELECT 1 FROM pg_catalog.pg_index x WHERE x.indrelid = c.oid AND NOT "
        "x.indisprimary AND (x.indisunique OR x.indisexclusion)), c.relkind = 'p' "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT "
        "a.attisdropped "
        "JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid "
        "JOIN pg_catalog.pg_namespace tn ON tn.oid = ty.typnamespace "
        "LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary AND i.indisvalid "
        "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p') "
        "ORDER BY a.attnum";
    const char *params[2] = {rt->t.schema, rt->t.name};
    PGresult *res = PQexecParams(tg->meta, sql, 2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return fail_conn(tg, tg->meta, res, "cannot read the target's catalog", err, errlen);
    int n = PQntuples(res);
    rt->t.exists = n > 0;
    rt->t.cols = calloc((size_t)n + 1, sizeof(*rt->t.cols));
    if (!rt->t.cols) {
        PQclear(res);
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    for (int i = 0; i < n; i++) {
        struct pgcdc_replay_column *c = &rt->t.cols[i];
        c->name = strdup(PQgetvalue(res, i, 0));
        c->type = strdup(PQgetvalue(res, i, 1));
        c->cast = strdup(PQgetvalue(res, i, 2));
        c->pk = PQgetvalue(res, i, 3)[0] == 't';
        c->generated = PQgetvalue(res, i, 4)[0] == 't';
        rt->t.other_unique = PQgetvalue(res, i, 5)[0] == 't';
        rt->t.partitioned = PQgetvalue(res, i, 6)[0] == 't';
        rt->t.ncols++;
        if (c->pk)
            rt->t.npk++;
        if (!c->name || !c->type || !c->cast) {
            PQclear(res);
            snprintf(err, errlen, "out of memory");
            return PGCDC_ERR;
        }
    }
    PQclear(res);
    return PGCDC_OK;
}

static int unescape_dup(struct pgcdc_span s, char **out)
{
    *out = malloc(s.len + 1);
    if (!*out)
        return PGCDC_ERR;
    if (pgcdc_json_unescape(s, *out, s.len + 1) < 0) {
        free(*out);
        *out = NULL;
        return PGCDC_ERR;
    }
    return PGCDC_OK;
}

/* The table an event is for (index), loading its definition the first time. */
int pgcdc_replay_target_table(struct pgcdc_replay_target *tg, const struct pgcdc_replay_event *ev,
                              char *err, size_t errlen)
{
    for (size_t i = 0; i < tg->ntables; i++) {
        struct pgcdc_replay_rtable *t = &tg->tables[i];
        if (t->raw_schema_len == ev->schema.len && t->raw_table_len == ev->table.len &&
            memcmp(t->raw_table, ev->table.p, ev->table.len) == 0 &&
            memcmp(t->raw_schema, ev->schema.p, ev->schema.len) == 0)
            return (int)i;
    }
    struct pgcdc_replay_rtable *nt = realloc(tg->tables, (tg->ntables + 1) * sizeof(*nt));
    if (!nt) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    tg->tables = nt;
    struct pgcdc_replay_rtable *t = &tg->tables[tg->ntables];
    memset(t, 0, sizeof(*t));
    t->raw_schema = strndup(ev->schema.p, ev->schema.len);
    t->raw_table = strndup(ev->table.p, ev->table.len);
    t->raw_schema_len = ev->schema.len;
    t->raw_table_len = ev->table.len;
    if (!t->raw_schema || !t->raw_table || unescape_dup(ev->schema, &t->t.schema) < 0 ||
        unescape_dup(ev->table, &t->t.name) < 0) {
        free(t->raw_schema);
        free(t->raw_table);
        free(t->t.schema);
        snprintf(err, errlen, "out of memory or a malformed table name");
        return PGCDC_ERR;
    }
    tg->ntables++;
    int rc = load_table(tg, t, err, errlen);
    if (rc < 0)
        return rc;
    return (int)(tg->ntables - 1);
}

int pgcdc_replay_target_reload(struct pgcdc_replay_target *tg, int ti, char *err, size_t errlen)
{
    table_free_cols(&tg->tables[ti].t);
    return load_table(tg, &tg->tables[ti], err, errlen);
}

/* ---- commands: pipelined, or one at a time (careful mode) */

static struct pgcdc_replay_cmd *ring_push(struct pgcdc_replay_target *tg)
{
    struct pgcdc_replay_cmd *c = &tg->ring[(tg->ring_head + tg->ring_count) % (WINDOW + 8)];
    tg->ring_count++;
    memset(c, 0, sizeof(*c));
    c->table = -1;
    return c;
}

static void describe_cmd(struct pgcdc_replay_target *tg, const struct pgcdc_replay_cmd *c,
                         char *out, size_t outlen)
{
    char l1[PGCDC_LSN_BUFLEN], l2[PGCDC_LSN_BUFLEN];
    const char *what = c->op == 'c'   ? "insert into"
                       : c->op == 'r' ? "snapshot row into"
                       : c->op == 'u' ? "update of"
                       : c->op == 'd' ? "delete from"
                       : c->op == 't' ? "truncate of"
                                      : "change to";
    if (c->table >= 0)
        snprintf(out, outlen, "%s %s.%s at LSN %s (transaction %s)", what,
                 tg->tables[c->table].t.schema, tg->tables[c->table].t.name,
                 pgcdc_lsn_format(c->lsn, l1), pgcdc_lsn_format(c->commit_lsn, l2));
    else
        snprintf(out, outlen, "commit of the transactions up to %s",
                 pgcdc_lsn_format(c->pos_commit ? c->pos_commit : c->commit_lsn, l1));
}

static void applied(struct pgcdc_replay_target *tg, const struct pgcdc_replay_cmd *c)
{
    tg->done.commit = c->pos_commit;
    tg->done.partial = c->pos_partial;
    tg->rows_total += c->rows;
    tg->txns_total += c->txns;
}

/*
 * A statement in the pipeline failed: remember it (the first one) and say whether that is
 * the connection (PGCDC_ERR_RETRY) or the change (PGCDC_ERR, careful mode finds it).
 */
static int pipeline_failed(struct pgcdc_replay_target *tg, const struct pgcdc_replay_cmd *c,
                           PGresult *res, char *err, size_t errlen)
{
    char m[512], what[1024];
    result_message(tg->conn, res, m, sizeof(m));
    describe_cmd(tg, c, what, sizeof(what));
    snprintf(tg->fail_msg, sizeof(tg->fail_msg), "%s: %s", what, m);
    tg->failed = true;
    tg->fail_commit = c->kind == PGCDC_REPLAY_COMMIT || c->kind == PGCDC_REPLAY_POSITION
                          ? c->pos_commit
                          : c->commit_lsn;
    bool transient = pgcdc_errors_pg(tg->conn, res, PGCDC_ERRCTX_TARGET) == PGCDC_ERR_RETRY;
    PQclear(res);
    if (transient) {
        snprintf(err, errlen, "lost the connection to the target (%s): %s", tg->dsn_red, m);
        return PGCDC_ERR_RETRY;
    }
    snprintf(err, errlen, "%s", tg->fail_msg);
    return PGCDC_ERR;
}

/*
 * Change c (an update or delete) matched no row on the target. With replay.missing_rows =
 * warn, log it (the first ten; replay counts them all) and go on. Otherwise it is an error
 * naming table and LSN: the target lacks a row the source had, and applying the rest would
 * only hide that. tg is marked failed for the transaction, as for a failed statement.
 */
static int row_missing(struct pgcdc_replay_target *tg, const struct pgcdc_replay_cmd *c, char *err,
                       size_t errlen)
{
    char what[1024];
    describe_cmd(tg, c, what, sizeof(what));
    if (tg->missing_rows_warn) {
        if (tg->row_misses++ < 10)
            pgcdc_log(PGCDC_LOG_WARN, "an update or delete matched no row on the target", "change",
                      what, NULL);
        return PGCDC_OK;
    }
    snprintf(tg->fail_msg, sizeof(tg->fail_msg),
             "replay stopped: the %s matched no row on the target, which lacks a row the "
             "source had; nothing of that transaction was applied: find out why (writes to "
             "the target outside replay, or a target not loaded from this directory's "
             "snapshot), or apply the rest anyway with -o replay.missing_rows=warn",
             what);
    snprintf(err, errlen, "%s", tg->fail_msg);
    tg->failed = true;
    tg->fail_commit = c->commit_lsn;
    return PGCDC_ERR;
}

/* Whether c is a change that must find its row(s), and found fewer (res is its result). */
static bool missed_rows(const struct pgcdc_replay_cmd *c, PGresult *res)
{
    return PQresultStatus(res) == PGRES_COMMAND_OK && c->kind == PGCDC_REPLAY_STMT &&
           (c->op == 'u' || c->op == 'd') && atoi(PQcmdTuples(res)) < (c->expect ? c->expect : 1);
}

/* The result res of command c, other than a pipeline sync. Consumes res. */
static int take_result(struct pgcdc_replay_target *tg, const struct pgcdc_replay_cmd *c,
                       PGresult *res, char *err, size_t errlen)
{
    ExecStatusType s = PQresultStatus(res);
    if (s == PGRES_FATAL_ERROR && !tg->failed)
        return pipeline_failed(tg, c, res, err, errlen);
    if (missed_rows(c, res) && row_missing(tg, c, err, errlen) < 0) {
        PQclear(res);
        return PGCDC_ERR;
    }
    if (s == PGRES_COMMAND_OK && c->kind == PGCDC_REPLAY_COMMIT)
        applied(tg, c);
    PQclear(res);
    if ((res = PQgetResult(tg->conn)) != NULL) {
        PQclear(res);
        snprintf(err, errlen, "unexpected extra result in the pipeline");
        return PGCDC_ERR_RETRY;
    }
    return PGCDC_OK;
}

int pgcdc_replay_target_settle(struct pgcdc_replay_target *tg, char *err, size_t errlen)
{
    if (!tg->pipelined || !tg->checks_pending)
        return PGCDC_OK;
    return pgcdc_replay_target_drain(tg, 0, err, errlen);
}

int pgcdc_replay_target_drain(struct pgcdc_replay_target *tg, size_t keep, char *err, size_t errlen)
{
    if (tg->ring_count > keep && tg->unflushed) {
        if (PQsendFlushRequest(tg->conn) != 1 || PQflush(tg->conn) != 0)
            return fail_conn(tg, tg->conn, NULL, "cannot send", err, errlen);
        tg->unflushed = false;
    }
    while (tg->ring_count > keep) {
        struct pgcdc_replay_cmd *c = &tg->ring[tg->ring_head];
        PGresult *res = PQgetResult(tg->conn);
        if (!res)
            return fail_conn(tg, tg->conn, NULL, "lost the pipeline", err, errlen);
        if (c->kind == PGCDC_REPLAY_SYNC) {
            ExecStatusType s = PQresultStatus(res);
            PQclear(res);
            if (s != PGRES_PIPELINE_SYNC) {
                snprintf(err, errlen, "unexpected result %s where a pipeline sync was due",
                         PQresStatus(s));
                return PGCDC_ERR_RETRY;
            }
        } else {
            int rc = take_result(tg, c, res, err, errlen);
            if (rc < 0)
                return rc;
        }
        tg->ring_head = (tg->ring_head + 1) % (WINDOW + 8);
        tg->ring_count--;
    }
    if (tg->ring_count == 0)
        tg->checks_pending = false;
    return PGCDC_OK;
}

/* Column a failed statement's value does not fit: cast each value to its column's type. */
static const char *guess_column(struct pgcdc_replay_target *tg, const struct pgcdc_replay_table *t,
                                const struct pgcdc_replay_stmt *st, PGresult *res)
{
    const char *col = res ? PQresultErrorField(res, PG_DIAG_COLUMN_NAME) : NULL;
    if (col)
        return col;
    for (int i = 0; i < st->nparams; i++) {
        if (!st->params[i] || st->param_col[i] < 0)
            continue;
        const struct pgcdc_replay_column *c = &t->cols[st->param_col[i]];
        struct pgcdc_buf q = {0};
        if (pgcdc_buf_append_str(&q, "SELECT $1::") < 0 || pgcdc_buf_append_str(&q, c->type) < 0) {
            pgcdc_buf_free(&q);
            return NULL;
        }
        PGresult *x = PQexecParams(tg->meta, q.data, 1, NULL, &st->params[i], NULL, NULL, 0);
        bool bad = PQresultStatus(x) == PGRES_FATAL_ERROR;
        PQclear(x);
        pgcdc_buf_free(&q);
        if (bad)
            return c->name;
    }
    return NULL;
}

/* Queue one command in the pipeline (and keep the window bounded). */
static int send_pipelined(struct pgcdc_replay_target *tg, const struct pgcdc_replay_cmd *proto,
                          const char *sql, const char *name, bool prepared, bool fresh, int np,
                          const char *const *pv, char *err, size_t errlen)
{
    if (fresh) {
        if (PQsendPrepare(tg->conn, name, sql, np, NULL) != 1)
            return fail_conn(tg, tg->conn, NULL, "cannot send", err, errlen);
        struct pgcdc_replay_cmd *c = ring_push(tg);
        *c = *proto;
        c->kind = PGCDC_REPLAY_PREPARE;
    }
    int ok = prepared ? PQsendQueryPrepared(tg->conn, name, np, pv, NULL, NULL, 0)
                      : PQsendQueryParams(tg->conn, sql, np, NULL, pv, NULL, NULL, 0);
    if (ok != 1)
        return fail_conn(tg, tg->conn, NULL, "cannot send", err, errlen);
    struct pgcdc_replay_cmd *c = ring_push(tg);
    *c = *proto;
    tg->unflushed = true;
    if (proto->kind == PGCDC_REPLAY_STMT && (proto->op == 'u' || proto->op == 'd'))
        tg->checks_pending = !tg->missing_rows_warn;
    if (proto->kind == PGCDC_REPLAY_COMMIT) {
        if (PQpipelineSync(tg->conn) != 1)
            return fail_conn(tg, tg->conn, NULL, "cannot send", err, errlen);
        c = ring_push(tg);
        c->kind = PGCDC_REPLAY_SYNC;
        tg->unflushed = false;
    }
    if (tg->ring_count >= WINDOW)
        return pgcdc_replay_target_drain(tg, WINDOW / 2, err, errlen);
    return PGCDC_OK;
}

/*
 * A command failed in careful mode: name table, column and LSN in err (st and t describe
 * it when it is a change) and roll back. Consumes res.
 */
static int careful_failed(struct pgcdc_replay_target *tg, const struct pgcdc_replay_cmd *proto,
                          PGresult *res, const struct pgcdc_replay_stmt *st,
                          const struct pgcdc_replay_table *t, char *err, size_t errlen)
{
    if (pgcdc_errors_pg(tg->conn, res, PGCDC_ERRCTX_TARGET) == PGCDC_ERR_RETRY)
        return fail_conn(tg, tg->conn, res, "lost the connection", err, errlen);
    char m[512], what[1024];
    result_message(tg->conn, res, m, sizeof(m));
    describe_cmd(tg, proto, what, sizeof(what));
    const char *col = t && st ? guess_column(tg, t, st, res) : NULL;
    if (col) {
        /* "... into public.t at LSN": name the column after the table. */
        char *at = strstr(what, " at LSN ");
        char tail[256];
        snprintf(tail, sizeof(tail), "%s", at ? at : "");
        if (at)
            snprintf(at, sizeof(what) - (size_t)(at - what), " column %s%s", col, tail);
    }
    snprintf(err, errlen,
             "replay stopped: cannot apply %s: %s; nothing of that transaction was applied: fix "
             "the target and run replay again",
             what, m);
    PQclear(res);
    PQclear(PQexec(tg->conn, "ROLLBACK"));
    return PGCDC_ERR;
}

/*
 * Send one command: sql prepared as statement stmt_id (> 0; fresh: prepare it first), or
 * as it is (0). Pipelined: queue it. Careful: run it now.
 */
static int send_cmd(struct pgcdc_replay_target *tg, const struct pgcdc_replay_cmd *proto,
                    const char *sql, int stmt_id, bool fresh, const struct pgcdc_replay_stmt *st,
                    const struct pgcdc_replay_table *t, char *err, size_t errlen)
{
    int np = st ? st->nparams : 0;
    const char *const *pv = st ? st->params : NULL;
    char name[32];
    snprintf(name, sizeof(name), "pgcdc_%d", stmt_id);
    if (tg->pipelined)
        return send_pipelined(tg, proto, sql, name, stmt_id > 0, fresh, np, pv, err, errlen);
    PGresult *res;
    if (fresh) {
        res = PQprepare(tg->conn, name, sql, np, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            return careful_failed(tg, proto, res, st, t, err, errlen);
        PQclear(res);
    }
    res = stmt_id > 0 ? PQexecPrepared(tg->conn, name, np, pv, NULL, NULL, 0)
                      : PQexecParams(tg->conn, sql, np, NULL, pv, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        return careful_failed(tg, proto, res, st, t, err, errlen);
    if (missed_rows(proto, res) && row_missing(tg, proto, err, errlen) < 0) {
        PQclear(res);
        PQclear(PQexec(tg->conn, "ROLLBACK"));
        return PGCDC_ERR;
    }
    if (proto->kind == PGCDC_REPLAY_COMMIT)
        applied(tg, proto);
    PQclear(res);
    return PGCDC_OK;
}

int pgcdc_replay_target_send_sql(struct pgcdc_replay_target *tg,
                                 const struct pgcdc_replay_cmd *proto, const char *sql, char *err,
                                 size_t errlen)
{
    return send_cmd(tg, proto, sql, 0, false, NULL, NULL, err, errlen);
}

int pgcdc_replay_target_send_stmt(struct pgcdc_replay_target *tg,
                                  const struct pgcdc_replay_cmd *proto, const char *sql,
                                  const struct pgcdc_replay_stmt *st,
                                  const struct pgcdc_replay_table *t, char *err, size_t errlen)
{
    bool fresh;
    int id = stmt_lookup(tg, sql, strlen(sql), &fresh);
    return send_cmd(tg, proto, sql, id, fresh, st, t, err, errlen);
}

/* ---- the session */

/*
 * The settings text forms depend on, as every source session pgcdc opens pins them
 * (docs/events.md): a keyless table's row is found by comparing each column's text form
 * with the one in the event, so the target must print values as the source did, whatever
 * its own defaults (a TimeZone other than UTC would match no timestamptz). Events are
 * UTF-8, whatever the DSN or PGCLIENTENCODING say.
 */
static const char pin_settings[] =
    "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET TimeZone = 'UTC'; "
    "SET extra_float_digits = 3; SET client_encoding = 'UTF8'";

/* Session settings, and whether session_replication_role = replica could be set. */
static int set_session(struct pgcdc_replay_target *tg, bool warn_replica, bool *replica, char *err,
                       size_t errlen)
{
    int rc = exec_ok(tg, tg->conn,
                     "SET synchronous_commit = off; SET statement_timeout = 0; "
                     "SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0",
                     err, errlen);
    if (rc < 0 || (rc = exec_ok(tg, tg->conn, pin_settings, err, errlen)) < 0 ||
        (rc = exec_ok(tg, tg->meta, pin_settings, err, errlen)) < 0)
        return rc;
    /* As native apply does: no triggers, no foreign-key checks (the snapshot loads tables
     * in any order). Needs superuser or GRANT SET; without it, say what that means. */
    PGresult *res = PQexec(tg->conn, "SET session_replication_role = replica");
    *replica = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!*replica && warn_replica) {
        char m[256];
        result_message(tg->conn, res, m, sizeof(m));
        pgcdc_log(PGCDC_LOG_WARN,
                  "cannot set session_replication_role = replica: target triggers fire and "
                  "foreign keys are checked while replaying (a snapshot loads tables in any "
                  "order), and changes are applied one statement per row",
                  "error", m, NULL);
    }
    PQclear(res);
    return PGCDC_OK;
}

/* One replay per target: wait a while for a killed predecessor's session to end. */
static int take_lock(struct pgcdc_replay_target *tg, char *err, size_t errlen)
{
    int64_t deadline = pgcdc_mono_ms() + 60000;
    bool said = false;
    for (;;) {
        PGresult *res = PQexec(tg->conn, "SELECT pg_catalog.pg_try_advisory_lock(" LOCK_KEY ")");
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            return fail_conn(tg, tg->conn, res, "cannot take the replay lock", err, errlen);
        bool got = PQgetvalue(res, 0, 0)[0] == 't';
        PQclear(res);
        if (got)
            return PGCDC_OK;
        if (pgcdc_mono_ms() > deadline || pgcdc_stop_requested) {
            snprintf(err, errlen,
                     "another pgcdc replay is applying to this target database (it holds "
                     "advisory lock %s): stop it first",
                     LOCK_KEY);
            return PGCDC_ERR;
        }
        if (!said)
            pgcdc_log(PGCDC_LOG_INFO, "waiting for another replay session on the target to end",
                      NULL);
        said = true;
        usleep(200000);
    }
}

/* pgcdc.replay_position, created when missing, into *pos. */
static int read_position(struct pgcdc_replay_target *tg, struct pgcdc_replay_position *pos,
                         char *err, size_t errlen)
{
    int rc;
    PGresult *res =
        PQexec(tg->conn, "SELECT pg_catalog.to_regclass('pgcdc.replay_position') IS NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return fail_conn(tg, tg->conn, res, "cannot look up pgcdc.replay_position", err, errlen);
    bool missing = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (missing && (rc = exec_ok(tg, tg->conn,
                                 "CREATE SCHEMA IF NOT EXISTS pgcdc; "
                                 "CREATE TABLE IF NOT EXISTS pgcdc.replay_position ("
                                 "id int PRIMARY KEY DEFAULT 1 CHECK (id = 1), "
                                 "commit_lsn pg_catalog.pg_lsn NOT NULL, "
                                 "partial_events bigint NOT NULL DEFAULT 0, "
                                 "applied_at timestamptz NOT NULL DEFAULT now())",
                                 err, errlen)) < 0)
        return rc;
    res = PQexec(tg->conn, "SELECT commit_lsn::text, partial_events FROM pgcdc.replay_position "
                           "WHERE id = 1");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return fail_conn(tg, tg->conn, res, "cannot read pgcdc.replay_position", err, errlen);
    pos->commit = 0;
    pos->partial = 0;
    if (PQntuples(res) == 1) {
        pgcdc_lsn_parse_str(PQgetvalue(res, 0, 0), &pos->commit);
        pos->partial = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    }
    PQclear(res);
    return PGCDC_OK;
}

int pgcdc_replay_target_open(struct pgcdc_replay_target *tg, bool warn_replica, bool *replica,
                             struct pgcdc_replay_position *pos, char *err, size_t errlen)
{
    int rc;
    tg->pipelined = false;
    tg->failed = false;
    if (!(tg->conn = connect_target(tg, "pgcdc-replay", err, errlen)) ||
        !(tg->meta = connect_target(tg, "pgcdc-replay-catalog", err, errlen)))
        return tg->ever_connected ? PGCDC_ERR_RETRY : PGCDC_ERR;
    tg->ever_connected = true;
    if ((rc = set_session(tg, warn_replica, replica, err, errlen)) < 0 ||
        (rc = take_lock(tg, err, errlen)) < 0 || (rc = read_position(tg, pos, err, errlen)) < 0)
        return rc;
    tg->done = *pos;
    return PGCDC_OK;
}

int pgcdc_replay_target_enter_pipeline(struct pgcdc_replay_target *tg, char *err, size_t errlen)
{
    if (PQenterPipelineMode(tg->conn) != 1)
        return fail_conn(tg, tg->conn, NULL, "cannot enter pipeline mode", err, errlen);
    tg->pipelined = true;
    return PGCDC_OK;
}

int pgcdc_replay_target_leave_pipeline(struct pgcdc_replay_target *tg, char *err, size_t errlen)
{
    int rc;
    if (!tg->pipelined)
        return PGCDC_OK;
    if ((rc = pgcdc_replay_target_drain(tg, 0, err, errlen)) < 0)
        return rc;
    if (PQexitPipelineMode(tg->conn) != 1)
        return fail_conn(tg, tg->conn, NULL, "cannot leave pipeline mode", err, errlen);
    tg->pipelined = false;
    return PGCDC_OK;
}

int pgcdc_replay_target_finish(struct pgcdc_replay_target *tg, char *err, size_t errlen)
{
    int rc;
    if ((rc = pgcdc_replay_target_leave_pipeline(tg, err, errlen)) < 0)
        return rc;
    /* Commits went out with synchronous_commit = off: one synchronous commit after them
     * waits until all of them are flushed on the target. */
    return exec_ok(tg, tg->conn,
                   "SET synchronous_commit = on; UPDATE pgcdc.replay_position SET applied_at = "
                   "now() WHERE id = 1",
                   err, errlen);
}

int pgcdc_replay_target_init(struct pgcdc_replay_target *tg, const char *dsn,
                             bool missing_rows_warn, char *err, size_t errlen)
{
    memset(tg, 0, sizeof(*tg));
    tg->dsn = dsn;
    tg->missing_rows_warn = missing_rows_warn;
    pgcdc_log_redact_dsn(dsn, tg->dsn_red, sizeof(tg->dsn_red));
    tg->ring = calloc(WINDOW + 8, sizeof(*tg->ring));
    if (!tg->ring) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    return PGCDC_OK;
}

void pgcdc_replay_target_free(struct pgcdc_replay_target *tg)
{
    pgcdc_replay_target_close(tg);
    free(tg->sc);
    free(tg->ring);
    tg->sc = NULL;
    tg->ring = NULL;
}
