/*
 * snapshot_signal.c — the signal table pgcdc.signal: inserting a snapshot request
 * (`pgcdc snapshot`), and reading one out of the stream (see snapshot_signal.h).
 */
#include "pgcdc/snapshot_signal.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc/common.h"
#include "pgcdc/errors.h"
#include "pgcdc/json.h"
#include "pgcdc/log.h"
#include "pgcdc/source.h"

#define SIGNAL_DDL_HINT                                                                            \
    "create it as docs/operations.md (\"On-demand snapshots\") shows, and grant INSERT on it "     \
    "to the roles that may ask"

int pgcdc_signal_exists(struct pg_conn *c)
{
    PGresult *res = PQexec(c, "SELECT pg_catalog.to_regclass('pgcdc.signal') IS NOT NULL");
    int rc = PQresultStatus(res) == PGRES_TUPLES_OK ? PQgetvalue(res, 0, 0)[0] == 't' : -1;
    PQclear(res);
    return rc;
}

/* Split "schema.table" at its first dot into s and t. */
static bool split_name(const char *name, char *s, size_t slen, char *t, size_t tlen)
{
    const char *dot = strchr(name, '.');
    if (!dot || dot == name || !dot[1] || (size_t)(dot - name) >= slen || strlen(dot + 1) >= tlen)
        return false;
    memcpy(s, name, (size_t)(dot - name));
    s[dot - name] = '\0';
    snprintf(t, tlen, "%s", dot + 1);
    return true;
}

/* The table must exist as a table (or partitioned root) and be selected. */
static int check_table(PGconn *c, const struct pgcdc_config *cfg, const char *name, char *err,
                       size_t errlen)
{
    char s[256], t[256];
    if (!split_name(name, s, sizeof(s), t, sizeof(t))) {
        snprintf(err, errlen, "--table \"%s\" is not SCHEMA.TABLE", name);
        return PGCDC_ERR_CONFIG;
    }
    const char *params[2] = {s, t};
    PGresult *res = PQexecParams(c,
                                 "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace "
                                 "n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = "
                                 "$2 AND c.relkind IN ('r', 'p')",
                                 2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        int rc = pgcdc_errors_pg(c, res, PGCDC_ERRCTX_SOURCE);
        snprintf(err, errlen, "cannot look up %s: %s", name, PQresultErrorMessage(res));
        PQclear(res);
        return rc;
    }
    int found = PQntuples(res);
    PQclear(res);
    if (!found) {
        snprintf(err, errlen, "--table %s: no such table in the source database", name);
        return PGCDC_ERR_CONFIG;
    }
    if (!pgcdc_config_table_selected(cfg, s, t)) {
        snprintf(err, errlen,
                 "--table %s is left out by source.tables.include/exclude: include it first", name);
        return PGCDC_ERR_CONFIG;
    }
    return PGCDC_OK;
}

/* The tables as a text[] literal: {"a.b","c.d"}. */
static int array_literal(struct pgcdc_buf *b, const char *const *tables, int n)
{
    int rc = pgcdc_buf_append_char(b, '{');
    for (int i = 0; i < n && rc == PGCDC_OK; i++) {
        rc = pgcdc_buf_append_str(b, i ? ",\"" : "\"");
        for (const char *p = tables[i]; *p && rc == PGCDC_OK; p++)
            if (*p == '"' || *p == '\\')
                rc = pgcdc_buf_append_char(b, '\\') == 0 ? pgcdc_buf_append_char(b, *p) : -1;
            else
                rc = pgcdc_buf_append_char(b, *p);
        if (rc == PGCDC_OK)
            rc = pgcdc_buf_append_char(b, '"');
    }
    return rc == PGCDC_OK ? pgcdc_buf_append_char(b, '}') : rc;
}

int pgcdc_signal_request(const struct pgcdc_config *cfg, const char *const *tables, int n,
                         char *lsn, size_t lsnlen, char *err, size_t errlen)
{
    struct pgcdc_buf arr = {0};
    PGresult *res = NULL;
    PGconn *c = NULL;
    int rc = pgcdc_source_connect(&c, cfg->source_dsn, PGCDC_SOURCE_CHECK, err, errlen);
    if (rc < 0)
        return rc;
    if (!c || PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to the source: %s", PQerrorMessage(c));
        rc = pgcdc_errors_connect(c);
        goto out;
    }
    for (int i = 0; i < n; i++)
        if ((rc = check_table(c, cfg, tables[i], err, errlen)) < 0)
            goto out;
    if (pgcdc_signal_exists(c) != 1) {
        snprintf(err, errlen, "the signal table pgcdc.signal does not exist: " SIGNAL_DDL_HINT);
        rc = PGCDC_ERR_CONFIG;
        goto out;
    }
    if (array_literal(&arr, tables, n) < 0) {
        snprintf(err, errlen, "out of memory");
        rc = PGCDC_ERR;
        goto out;
    }
    const char *params[1] = {arr.data};
    res = PQexecParams(c, "INSERT INTO pgcdc.signal (type, tables) VALUES ('snapshot', $1)", 1,
                       NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = pgcdc_errors_pg(c, res, PGCDC_ERRCTX_SOURCE);
        snprintf(err, errlen, "cannot insert the request into pgcdc.signal: %s",
                 PQresultErrorMessage(res));
        goto out;
    }
    PQclear(res);
    /* Committed (autocommit): the position after it, which `run --end-lsn` can wait for. */
    res = PQexec(c, "SELECT pg_catalog.pg_current_wal_lsn()");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = pgcdc_errors_pg(c, res, PGCDC_ERRCTX_SOURCE);
        snprintf(err, errlen, "the request is in, but its LSN is unknown: %s",
                 PQresultErrorMessage(res));
        goto out;
    }
    snprintf(lsn, lsnlen, "%s", PQgetvalue(res, 0, 0));
    rc = PGCDC_OK;
out:
    pgcdc_log_one_line(err);
    PQclear(res);
    PQfinish(c);
    pgcdc_buf_free(&arr);
    return rc;
}

/*
 * The elements of a text[] in its output form ({a.b,"c d.e"}): each into out, unquoted and
 * unescaped, then fn.
 */
static int each_element(const char *v, pgcdc_signal_table_fn fn, void *ctx, char *err,
                        size_t errlen)
{
    char out[600], s[256], t[256];
    if (*v++ != '{')
        goto bad;
    while (*v && *v != '}') {
        size_t o = 0;
        if (*v == '"') {
            for (v++; *v && *v != '"'; v++) {
                if (*v == '\\' && v[1])
                    v++;
                if (o + 1 < sizeof(out))
                    out[o++] = *v;
            }
            if (*v++ != '"')
                goto bad;
        } else {
            for (; *v && *v != ',' && *v != '}'; v++)
                if (o + 1 < sizeof(out))
                    out[o++] = *v;
        }
        out[o] = '\0';
        if (!split_name(out, s, sizeof(s), t, sizeof(t)))
            goto bad;
        int rc = fn(ctx, s, t);
        if (rc < 0)
            return rc;
        if (*v == ',')
            v++;
    }
    return PGCDC_OK;
bad:
    snprintf(err, errlen, "a snapshot request in pgcdc.signal has a malformed tables value");
    return PGCDC_ERR;
}

int pgcdc_signal_parse(const char *schema, const char *table, const struct pgcdc_change *ch,
                       pgcdc_signal_table_fn fn, void *ctx, char *err, size_t errlen)
{
    if (strcmp(schema, PGCDC_SIGNAL_SCHEMA) != 0 || strcmp(table, PGCDC_SIGNAL_TABLE) != 0 ||
        ch->action != PGCDC_ACT_INSERT)
        return 0;
    char type[64] = "", *tables = NULL;
    int rc = 0;
    for (size_t i = 0; i < ch->ncolumns; i++) {
        const struct pgcdc_col *c = &ch->columns[i];
        if (c->name.len == 6 && memcmp(c->name.p, "\"type\"", 6) == 0)
            pgcdc_json_unescape(c->value, type, sizeof(type));
        if (c->name.len == 8 && memcmp(c->name.p, "\"tables\"", 8) == 0 && c->value.len > 1 &&
            (tables = malloc(c->value.len)) &&
            pgcdc_json_unescape(c->value, tables, c->value.len) < 0) {
            free(tables);
            tables = NULL;
        }
    }
    if (strcmp(type, "snapshot") == 0) {
        rc = tables ? each_element(tables, fn, ctx, err, errlen) : PGCDC_ERR;
        if (!tables)
            snprintf(err, errlen, "a snapshot request in pgcdc.signal names no tables");
        if (rc == PGCDC_OK)
            rc = 1;
    }
    free(tables);
    return rc;
}
