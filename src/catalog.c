/*
 * catalog.c — table questions answered from pg_catalog.
 */
#include "pgcdc/catalog.h"
#include "pgcdc/errors.h"
#include "pgcdc/log.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Logical decoding sees permanent tables only; partitions are ordinary tables ('r').
 * Columns: oid, schema, table, and the schema and table of the partition tree's root
 * (the table itself when it is not a partition).
 */
static int query_fail(PGconn *c, PGresult *res, const char *what, char *err, size_t errlen);

const char pgcdc_catalog_tables_sql[] =
    "SELECT c.oid, n.nspname, c.relname, rn.nspname, r.relname FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_catalog.pg_class r ON r.oid = coalesce(pg_catalog.pg_partition_root(c.oid), c.oid) "
    "JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace "
    "WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND n.nspname NOT IN ('pg_catalog', "
    "'information_schema') AND n.nspname !~ '^pg_(toast|temp)' ORDER BY 2, 3";

/* sql about one table, its schema and name as $1 and $2. */
static PGresult *exec_on_table(PGconn *c, const char *sql, const char *schema, const char *table)
{
    const char *params[2] = {schema, table};
    return PQexecParams(c, sql, 2, NULL, params, NULL, NULL, 0);
}

int pgcdc_catalog_partition_root(struct pg_conn *c, const char *schema, const char *table,
                                 char *root_schema, size_t rslen, char *root_table, size_t rtlen,
                                 char *err, size_t errlen)
{
    PGresult *res = exec_on_table(
        c,
        "SELECT rn.nspname, r.relname FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace rn "
        "ON rn.oid = r.relnamespace, pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON "
        "n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND r.oid = "
        "coalesce(pg_catalog.pg_partition_root(c.oid), c.oid)",
        schema, table);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return query_fail(c, res, "cannot look up the partition root", err, errlen);
    int found = PQntuples(res) == 1;
    snprintf(root_schema, rslen, "%s", found ? PQgetvalue(res, 0, 0) : schema);
    snprintf(root_table, rtlen, "%s", found ? PQgetvalue(res, 0, 1) : table);
    PQclear(res);
    if (!found)
        pgcdc_log(PGCDC_LOG_WARN,
                  "a changed table no longer exists, so its partition root is unknown: its "
                  "changes are reported under its own name (and selected by it)",
                  "schema", schema, "table", table, NULL);
    return PGCDC_OK;
}

static int query_fail(PGconn *c, PGresult *res, const char *what, char *err, size_t errlen)
{
    int rc = pgcdc_errors_pg(c, res, PGCDC_ERRCTX_SOURCE);
    snprintf(err, errlen, "%s: %s", what,
             res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res) : PQerrorMessage(c));
    err[strcspn(err, "\n")] = '\0';
    PQclear(res);
    return rc;
}

int pgcdc_catalog_keyless(struct pg_conn *c, const struct pgcdc_config *cfg,
                          struct pgcdc_buf *names, char *err, size_t errlen)
{
    /* REPLICA IDENTITY DEFAULT needs a primary key, USING INDEX needs that index, NOTHING
     * never works; FULL always does. */
    PGresult *res = PQexec(
        c, "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
           "ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND "
           "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ "
           "'^pg_(toast|temp)' AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS "
           "(SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)) "
           "OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE "
           "i.indrelid = c.oid AND i.indisreplident))) ORDER BY 1, 2");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return query_fail(c, res, "cannot list tables without a key", err, errlen);
    int n = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *schema = PQgetvalue(res, i, 0), *table = PQgetvalue(res, i, 1);
        if (!pgcdc_config_table_selected(cfg, schema, table))
            continue;
        if ((n && pgcdc_buf_append_str(names, ", ") < 0) ||
            pgcdc_buf_append_str(names, schema) < 0 || pgcdc_buf_append_char(names, '.') < 0 ||
            pgcdc_buf_append_str(names, table) < 0) {
            PQclear(res);
            snprintf(err, errlen, "out of memory");
            return PGCDC_ERR;
        }
        n++;
    }
    PQclear(res);
    return n;
}

int pgcdc_catalog_missing_included(struct pg_conn *c, const struct pgcdc_config *cfg,
                                   char *missing, size_t missinglen, char *err, size_t errlen)
{
    if (!cfg->source_tables_include)
        return 0;
    PGresult *res = PQexec(c, pgcdc_catalog_tables_sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return query_fail(c, res, "cannot list tables", err, errlen);
    char *list = strdup(cfg->source_tables_include);
    int found_missing = 0;
    if (!list) {
        PQclear(res);
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok && !found_missing;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        char *end = tok + strlen(tok);
        while (end > tok && end[-1] == ' ')
            *--end = '\0';
        if (!*tok || strchr(tok, '*'))
            continue;
        bool found = false;
        /* A leaf table or a partitioned root (reported with source.partitions_as_root). */
        for (int i = 0; i < PQntuples(res) && !found; i++) {
            for (int col = 1; col <= 3 && !found; col += 2) {
                const char *schema = PQgetvalue(res, i, col), *table = PQgetvalue(res, i, col + 1);
                size_t sl = strlen(schema);
                found = strncmp(tok, schema, sl) == 0 && tok[sl] == '.' &&
                        strcmp(tok + sl + 1, table) == 0;
            }
        }
        if (!found) {
            snprintf(missing, missinglen, "%s", tok);
            found_missing = 1;
        }
    }
    free(list);
    PQclear(res);
    return found_missing;
}

int pgcdc_catalog_base_type(struct pg_conn *c, uint32_t oid, uint32_t *base, char *err,
                            size_t errlen)
{
    char text[16];
    snprintf(text, sizeof(text), "%u", oid);
    const char *params[1] = {text};
    /* Follow domains down to the type that is not one. */
    PGresult *res = PQexecParams(
        c,
        "WITH RECURSIVE d(o, depth) AS (SELECT $1::oid, 0 UNION ALL SELECT t.typbasetype, "
        "d.depth + 1 FROM d JOIN pg_catalog.pg_type t ON t.oid = d.o WHERE t.typtype = 'd') "
        "SELECT o FROM d ORDER BY depth DESC LIMIT 1",
        1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return query_fail(c, res, "cannot look up a column type", err, errlen);
    *base = PQntuples(res) == 1 ? (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10) : oid;
    PQclear(res);
    return PGCDC_OK;
}

int pgcdc_catalog_identity_key(struct pg_conn *c, const char *schema, const char *table,
                               struct pgcdc_buf *names, size_t *ends, size_t maxcols, char *err,
                               size_t errlen)
{
    /* Column order, as wal2json lists a primary key's columns and the snapshot reads them. */
    PGresult *res = exec_on_table(
        c,
        "SELECT a.attname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = "
        "c.relnamespace JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisreplident "
        "AND NOT i.indisprimary JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND "
        "a.attnum = ANY (i.indkey) WHERE n.nspname = $1 AND c.relname = $2 AND "
        "c.relreplident = 'i' ORDER BY a.attnum",
        schema, table);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return query_fail(c, res, "cannot look up the replica identity index", err, errlen);
    size_t n = (size_t)PQntuples(res);
    for (size_t i = 0; i < n && i < maxcols; i++) {
        const char *col = PQgetvalue(res, (int)i, 0);
        if (pgcdc_buf_append_json_str(names, col, strlen(col)) < 0) {
            PQclear(res);
            snprintf(err, errlen, "out of memory");
            return PGCDC_ERR;
        }
        ends[i] = names->len;
    }
    PQclear(res);
    return (int)(n < maxcols ? n : maxcols);
}

int pgcdc_catalog_value(struct pg_conn *c, const char *sql, char *out, size_t outlen, char *err,
                        size_t errlen)
{
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return query_fail(c, res, sql, err, errlen);
    int rows = PQntuples(res);
    if (rows > 0)
        snprintf(out, outlen, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    if (rows > 0)
        return PGCDC_OK;
    snprintf(err, errlen, "%s: no row", sql);
    return PGCDC_ERR;
}

int pgcdc_catalog_show(struct pg_conn *c, const char *name, char *out, size_t outlen, char *err,
                       size_t errlen)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SHOW %s", name);
    return pgcdc_catalog_value(c, sql, out, outlen, err, errlen);
}
