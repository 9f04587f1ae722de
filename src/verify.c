/*
 * verify.c — `pgcdc verify`: per table, row count and an order-independent hash of every
 * row's text form, computed by each database, compared.
 *
 * The hash of a table is sum(first 60 bits of md5(ROW(columns)::text)) as numeric: a sum
 * is independent of row order and of the plan, and numeric never overflows. A changed
 * value changes one row's md5; a missing or extra row changes the count.
 */
#include "pgcdc/verify.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc/common.h"
#include "pgcdc/log.h"
#include "pgcdc/replay_sql.h"
#include "pgcdc/source.h"

/*
 * Text forms must not depend on either server's defaults. search_path is empty so that
 * reg* values (regclass, regtype, ...) print schema-qualified alike on both sides.
 */
static const char pin_settings[] =
    "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET TimeZone = 'UTC'; "
    "SET extra_float_digits = 3; SET bytea_output = 'hex'; SET lc_monetary = 'C'; "
    "SET client_encoding = 'UTF8'; SET search_path = ''; SET statement_timeout = 0; "
    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/*
 * Every table to compare when none is named: plain tables and partitioned roots, never a
 * partition (its rows are read through its root, so a leaf layout that differs between the
 * two databases does not matter, and no row is counted twice).
 */
static const char tables_sql[] =
    "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgcdc') "
    "AND n.nspname !~ '^pg_(toast|temp_)' "
    "AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = "
    "'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'e') "
    "ORDER BY 1, 2";

static const char cols_sql[] =
    "SELECT a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = "
    "a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 "
    "AND c.relname = $2 AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped "
    "ORDER BY a.attnum";

static const char relkind_sql[] =
    "SELECT c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
    "ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 "
    "AND c.relkind IN ('r', 'p')";

int pgcdc_verify_split_name(const char *arg, char **schema, char **table)
{
    const char *dot = strchr(arg, '.');
    *schema = *table = NULL;
    if (dot) {
        if (dot == arg || dot[1] == '\0')
            return -1;
        *schema = strndup(arg, (size_t)(dot - arg));
        *table = strdup(dot + 1);
    } else {
        if (arg[0] == '\0')
            return -1;
        *schema = strdup("public");
        *table = strdup(arg);
    }
    if (!*schema || !*table) {
        free(*schema);
        free(*table);
        *schema = *table = NULL;
        return -1;
    }
    return 0;
}

int pgcdc_verify_query(const char *schema, const char *table, const char *const *cols,
                       bool partitioned, char **out)
{
    struct pgcdc_buf b = {0};
    *out = NULL;
    if (pgcdc_buf_append_str(&b, "SELECT count(*), coalesce(sum(('x' || "
                                 "substr(md5(ROW(") < 0)
        goto oom;
    for (size_t i = 0; cols[i]; i++) {
        if ((i && pgcdc_buf_append_str(&b, ", ") < 0) || pgcdc_buf_append_str(&b, "t.") < 0 ||
            pgcdc_replay_quote_ident(&b, cols[i]) < 0)
            goto oom;
    }
    /* ONLY: an inheritance child is a table of its own; but a partitioned table holds its
     * rows in its partitions, so ONLY would read nothing there. */
    if (pgcdc_buf_append_str(&b, ")::text), 1, 15))::bit(60)::bigint::numeric), 0) FROM ") < 0 ||
        (!partitioned && pgcdc_buf_append_str(&b, "ONLY ") < 0) ||
        pgcdc_replay_quote_ident(&b, schema) < 0 || pgcdc_buf_append_char(&b, '.') < 0 ||
        pgcdc_replay_quote_ident(&b, table) < 0 || pgcdc_buf_append_str(&b, " t") < 0)
        goto oom;
    *out = b.data;
    return PGCDC_OK;
oom:
    pgcdc_buf_free(&b);
    return PGCDC_ERR;
}

struct side {
    const char *label; /* "source" / "target" */
    char red[1024];    /* redacted DSN, for messages */
    PGconn *c;
};

static int side_fail(struct side *s, PGresult *res, const char *what, char *err, size_t errlen)
{
    char m[768];
    const char *prim = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    snprintf(m, sizeof(m), "%s", prim ? prim : PQerrorMessage(s->c));
    pgcdc_log_one_line(m);
    snprintf(err, errlen, "%s on the %s (%s): %s", what, s->label, s->red, m);
    PQclear(res);
    return PGCDC_ERR;
}

static int side_open(struct side *s, const char *dsn, char *err, size_t errlen)
{
    pgcdc_log_redact_dsn(dsn, s->red, sizeof(s->red));
    s->c = pgcdc_session_connect(dsn, "pgcdc-verify");
    if (PQstatus(s->c) != CONNECTION_OK)
        return side_fail(s, NULL, "cannot connect", err, errlen);
    PGresult *res = PQexec(s->c, pin_settings);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return side_fail(s, res, "cannot set up the session", err, errlen);
    PQclear(res);
    return PGCDC_OK;
}

/* schema.table's relkind on one side: 'r', 'p', or 0 when there is no such table. */
static int side_relkind(struct side *s, const char *schema, const char *table, char *kind,
                        char *err, size_t errlen)
{
    const char *p[2] = {schema, table};
    PGresult *res = PQexecParams(s->c, relkind_sql, 2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return side_fail(s, res, "cannot read the catalog", err, errlen);
    *kind = PQntuples(res) == 1 ? PQgetvalue(res, 0, 0)[0] : 0;
    PQclear(res);
    return PGCDC_OK;
}

/* The columns of schema.table on one side (NULL-terminated, malloc'd). */
static int side_columns(struct side *s, const char *schema, const char *table, char ***cols, int *n,
                        char *err, size_t errlen)
{
    const char *p[2] = {schema, table};
    PGresult *res = PQexecParams(s->c, cols_sql, 2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return side_fail(s, res, "cannot read the catalog", err, errlen);
    int k = PQntuples(res);
    *cols = calloc((size_t)k + 1, sizeof(char *));
    if (!*cols) {
        PQclear(res);
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    for (int i = 0; i < k; i++)
        if (!((*cols)[i] = strdup(PQgetvalue(res, i, 0)))) {
            PQclear(res);
            snprintf(err, errlen, "out of memory");
            return PGCDC_ERR;
        }
    PQclear(res);
    *n = k;
    return PGCDC_OK;
}

static void free_list(char **l)
{
    if (!l)
        return;
    for (size_t i = 0; l[i]; i++)
        free(l[i]);
    free(l);
}

/* Collect the one-row result of a query sent on s: count and hash as text. */
static int side_collect(struct side *s, char *count, size_t clen, char *hash, size_t hlen,
                        char *err, size_t errlen)
{
    PGresult *res, *keep = NULL;
    int rc = PGCDC_OK;
    while ((res = PQgetResult(s->c))) {
        if (!keep)
            keep = res;
        else
            PQclear(res);
    }
    if (PQresultStatus(keep) != PGRES_TUPLES_OK || PQntuples(keep) != 1)
        return side_fail(s, keep, "cannot compute the table's hash", err, errlen);
    snprintf(count, clen, "%s", PQgetvalue(keep, 0, 0));
    snprintf(hash, hlen, "%s", PQgetvalue(keep, 0, 1));
    PQclear(keep);
    return rc;
}

/* Compare one table. Returns 1 when it matches, 0 when not, <0 on failure. */
static int verify_table(struct side *src, struct side *tgt, const char *schema, const char *table,
                        char *err, size_t errlen)
{
    char **scols = NULL, **tcols = NULL, *qs = NULL, *qt = NULL, sk, tk;
    int ns, nt, rc;
    if ((rc = side_relkind(src, schema, table, &sk, err, errlen)) < 0 ||
        (rc = side_relkind(tgt, schema, table, &tk, err, errlen)) < 0)
        goto out;
    rc = 0;
    if (!sk || !tk) {
        printf("MISSING %s.%s on %s\n", schema, table, !sk ? "source" : "target");
        goto out;
    }
    if ((rc = side_columns(src, schema, table, &scols, &ns, err, errlen)) < 0 ||
        (rc = side_columns(tgt, schema, table, &tcols, &nt, err, errlen)) < 0)
        goto out;
    rc = 0;
    for (int i = 0; i < ns; i++) {
        bool found = false;
        for (int j = 0; j < nt && !found; j++)
            found = strcmp(scols[i], tcols[j]) == 0;
        if (!found) {
            printf("DIFF %s.%s column \"%s\" is missing on target\n", schema, table, scols[i]);
            goto out;
        }
    }
    /* Each side reads the table as its own kind requires (partitioned or not). */
    if (pgcdc_verify_query(schema, table, (const char *const *)scols, sk == 'p', &qs) < 0 ||
        pgcdc_verify_query(schema, table, (const char *const *)scols, tk == 'p', &qt) < 0) {
        snprintf(err, errlen, "out of memory");
        rc = PGCDC_ERR;
        goto out;
    }
    /* Both databases work at once. */
    if (!PQsendQuery(src->c, qs)) {
        rc = side_fail(src, NULL, "cannot send", err, errlen);
        goto out;
    }
    if (!PQsendQuery(tgt->c, qt)) {
        rc = side_fail(tgt, NULL, "cannot send", err, errlen);
        goto out;
    }
    char sc[32], sh[64], tc[32], th[64];
    if ((rc = side_collect(src, sc, sizeof(sc), sh, sizeof(sh), err, errlen)) < 0 ||
        (rc = side_collect(tgt, tc, sizeof(tc), th, sizeof(th), err, errlen)) < 0)
        goto out;
    if (strcmp(sc, tc) == 0 && strcmp(sh, th) == 0) {
        printf("MATCH %s.%s rows=%s hash=%s\n", schema, table, sc, sh);
        rc = 1;
    } else {
        printf("DIFF %s.%s source rows=%s hash=%s target rows=%s hash=%s\n", schema, table, sc, sh,
               tc, th);
        rc = 0;
    }
out:
    fflush(stdout);
    free_list(scols);
    free_list(tcols);
    free(qs);
    free(qt);
    return rc;
}

/* Every --table must exist on at least one side: a name on neither is a typo (exit 2). */
static int check_named(struct side *src, struct side *tgt, const struct pgcdc_verify_opts *o,
                       char *err, size_t errlen)
{
    for (int i = 0; i < o->ntables; i++) {
        char *s = NULL, *t = NULL, sk = 0, tk = 0;
        int rc = pgcdc_verify_split_name(o->tables[i], &s, &t) < 0 ? PGCDC_ERR_CONFIG : PGCDC_OK;
        if (rc == PGCDC_OK && (rc = side_relkind(src, s, t, &sk, err, errlen)) == PGCDC_OK &&
            (rc = side_relkind(tgt, s, t, &tk, err, errlen)) == PGCDC_OK && !sk && !tk) {
            snprintf(err, errlen,
                     "--table %s: no table %s.%s on the source or the target: check the name "
                     "(SCHEMA.TABLE; without a schema it is public)",
                     o->tables[i], s, t);
            rc = PGCDC_ERR_CONFIG;
        } else if (rc == PGCDC_ERR_CONFIG) {
            snprintf(err, errlen, "--table \"%s\" is not SCHEMA.TABLE", o->tables[i]);
        }
        free(s);
        free(t);
        if (rc < 0)
            return rc;
    }
    return PGCDC_OK;
}

static PGresult *list_tables(struct side *s, char *err, size_t errlen)
{
    PGresult *list = PQexec(s->c, tables_sql);
    if (PQresultStatus(list) == PGRES_TUPLES_OK)
        return list;
    side_fail(s, list, "cannot list tables", err, errlen);
    return NULL;
}

/* Tables the target has and the source lacks: one EXTRA line each. Returns their number. */
static int report_extra(PGresult *slist, PGresult *tlist)
{
    int extra = 0;
    for (int i = 0; i < PQntuples(tlist); i++) {
        const char *ts = PQgetvalue(tlist, i, 0), *tt = PQgetvalue(tlist, i, 1);
        bool found = false;
        for (int j = 0; j < PQntuples(slist) && !found; j++)
            found = strcmp(ts, PQgetvalue(slist, j, 0)) == 0 &&
                    strcmp(tt, PQgetvalue(slist, j, 1)) == 0;
        if (!found) {
            printf("EXTRA %s.%s on target\n", ts, tt);
            extra++;
        }
    }
    fflush(stdout);
    return extra;
}

int pgcdc_verify_run(const struct pgcdc_verify_opts *o, char *err, size_t errlen)
{
    int rc = PGCDC_ERR;
    struct side src = {.label = "source"}, tgt = {.label = "target"};
    PGresult *list = NULL, *tlist = NULL;
    if (side_open(&src, o->source, err, errlen) < 0 || side_open(&tgt, o->target, err, errlen) < 0)
        goto out;
    int ntables = o->ntables, matched = 0, extra = 0;
    if (o->ntables && (rc = check_named(&src, &tgt, o, err, errlen)) < 0)
        goto out;
    rc = PGCDC_ERR;
    if (o->ntables == 0) {
        if (!(list = list_tables(&src, err, errlen)) || !(tlist = list_tables(&tgt, err, errlen)))
            goto out;
        ntables = PQntuples(list);
    }
    for (int i = 0; i < ntables; i++) {
        char *s = NULL, *t = NULL;
        if (o->ntables) {
            pgcdc_verify_split_name(o->tables[i], &s, &t);
        } else {
            s = strdup(PQgetvalue(list, i, 0));
            t = strdup(PQgetvalue(list, i, 1));
        }
        int m = s && t ? verify_table(&src, &tgt, s, t, err, errlen) : PGCDC_ERR;
        if (!s || !t)
            snprintf(err, errlen, "out of memory");
        free(s);
        free(t);
        if (m < 0)
            goto out;
        matched += m;
    }
    if (tlist)
        extra = report_extra(list, tlist);
    char nt[16], nm[16];
    snprintf(nt, sizeof(nt), "%d", ntables);
    snprintf(nm, sizeof(nm), "%d", matched);
    if (matched == ntables && extra == 0) {
        pgcdc_log(PGCDC_LOG_INFO, "verify: every table matches", "tables", nt, NULL);
        rc = PGCDC_OK;
    } else if (extra) {
        snprintf(err, errlen,
                 "verify: %d of %d tables differ and %d are only on the target (see the "
                 "DIFF/MISSING/EXTRA lines)",
                 ntables - matched, ntables, extra);
    } else {
        snprintf(err, errlen, "verify: %d of %d tables differ (see the DIFF/MISSING lines)",
                 ntables - matched, ntables);
    }
out:
    PQclear(list);
    PQclear(tlist);
    PQfinish(src.c);
    PQfinish(tgt.c);
    return rc;
}
