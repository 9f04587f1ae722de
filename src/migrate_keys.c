/*
 * migrate_keys.c — `pgcdc migrate` builds a table's primary key and unique indexes right
 * after its snapshot rows are in (replay's table_loaded hook), not with the rest of
 * post-data once every table is loaded: a table's key build then overlaps the load of the
 * next ones, and replay applies later changes to it through its key.
 *
 * The statements are pg_dump's own, from the post-data script of DIR/dump.fc: each of its
 * entries starts with "-- Name: N; Type: T; Schema: S; Owner: O", and "T S N" is also how
 * pg_restore -l names the entry. A key built is recorded by that tag in the target's
 * pgcdc.migrate_keys in the same transaction (DDL is transactional), so the post-data
 * restore leaves out exactly those entries, and a key a kill left unbuilt comes with
 * post-data as before.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "pgcdc/common.h"
#include "pgcdc/errors.h"
#include "pgcdc/log.h"
#include "pgcdc/migrate.h"

#define KEYS_TABLE_SQL "CREATE TABLE IF NOT EXISTS pgcdc.migrate_keys (tag text PRIMARY KEY)"

/* One key statement of the post-data script: its TOC tag, its table as pg_dump names it,
 * and pg_dump's default_tablespace for it as a SET LOCAL ("" for the database's default). */
struct key {
    char *tag, *table, *sql, *tablespace;
};

static struct key *keys; /* the replay child's, read once */
static size_t nkeys;
static bool keys_read;
static PGconn *keys_conn;

static void post_data_path(const struct pgcdc_migrate *m, char *out, size_t n)
{
    snprintf(out, n, "%s/post-data.sql", m->dir_abs);
}

int pgcdc_migrate_keys_prepare(struct pgcdc_migrate *m, char *err, size_t errlen)
{
    char restore[4300], path[4400], *v = NULL;
    pgcdc_migrate_sibling_tool(m, "pg_restore", restore, sizeof(restore));
    post_data_path(m, path, sizeof(path));
    char *argv[] = {restore, "--section=post-data", "-f", path, m->dump, NULL};
    int rc = pgcdc_migrate_tool(NULL, argv, NULL, err, errlen);
    if (rc == PGCDC_OK)
        rc = pgcdc_migrate_query1(m->target, KEYS_TABLE_SQL, NULL, &v, err, errlen);
    free(v);
    return rc;
}

/* The block's statement if it builds a key (a primary key, a unique constraint or index). */
static void key_add(const char *tag, const char *sql, const char *tablespace)
{
    bool constraint = strncmp(tag, "CONSTRAINT ", 11) == 0;
    bool index = strncmp(tag, "INDEX ", 6) == 0;
    const char *t = NULL;
    size_t tl = 0;
    if (constraint && (strstr(sql, " PRIMARY KEY ") || strstr(sql, " UNIQUE ")) &&
        strncmp(sql, "ALTER TABLE ONLY ", 17) == 0) {
        t = sql + 17;
        tl = strcspn(t, "\n ");
    } else if (index && strncmp(sql, "CREATE UNIQUE INDEX ", 20) == 0 &&
               (t = strstr(sql, " ON "))) {
        t += 4;
        if (strncmp(t, "ONLY ", 5) == 0)
            t += 5;
        tl = strcspn(t, " ");
    }
    if (!t || tl == 0)
        return;
    struct key *k = realloc(keys, (nkeys + 1) * sizeof(*k));
    if (!k)
        return; /* left to post-data */
    keys = k;
    keys[nkeys].tag = strdup(tag);
    keys[nkeys].table = strndup(t, tl);
    keys[nkeys].sql = strdup(sql);
    keys[nkeys].tablespace = strdup(tablespace);
    if (keys[nkeys].tag && keys[nkeys].table && keys[nkeys].sql && keys[nkeys].tablespace)
        nkeys++;
}

static void keys_read_script(const struct pgcdc_migrate *m)
{
    char path[4400], line[8192], tag[2048] = "", tablespace[600] = "", block_ts[600] = "";
    struct pgcdc_buf sql = {0};
    keys_read = true;
    post_data_path(m, path, sizeof(path));
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    for (;;) {
        bool eof = !fgets(line, sizeof(line), f);
        char name[1024], type[128], schema[512];
        if (eof || sscanf(line, "-- Name: %1023[^;]; Type: %127[^;]; Schema: %511[^;];", name, type,
                          schema) == 3) {
            if (tag[0] && sql.len)
                key_add(tag, sql.data, block_ts);
            pgcdc_buf_reset(&sql);
            tag[0] = '\0';
            if (eof)
                break;
            snprintf(tag, sizeof(tag), "%s %s %s", type, schema, name);
            memcpy(block_ts, tablespace, sizeof(block_ts));
            continue;
        }
        /* pg_dump sets it, when it changes, just before an entry's header: the entries
         * from there on are in it. A key built early keeps its own. */
        if (strncmp(line, "SET default_tablespace = ", 25) == 0) {
            /* The line ends "...;": a quoted name may hold a ';' itself. */
            size_t n = strcspn(line, "\n");
            if (n > 25 && line[n - 1] == ';')
                n--;
            line[n] = '\0'; /* a name is at most 63 bytes, 130 quoted */
            snprintf(tablespace, sizeof(tablespace), "SET LOCAL %.580s", line + 4);
        }
        if (line[0] != '-' && line[0] != '\n' && strncmp(line, "SET ", 4) != 0 &&
            strncmp(line, "SELECT pg_catalog.set_config", 28) != 0 && line[0] != '\\')
            pgcdc_buf_append_str(&sql, line);
    }
    fclose(f);
    pgcdc_buf_free(&sql);
}

/* One statement on the hook's connection; 0 or a negative code (errors.c decides). */
static int keys_exec(const char *sql, int n, const char *const *p, char *err, size_t errlen)
{
    PGresult *res = PQexecParams(keys_conn, sql, n, NULL, p, NULL, NULL, 0);
    int rc = PGCDC_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = pgcdc_errors_pg(keys_conn, res, PGCDC_ERRCTX_TARGET);
        snprintf(err, errlen,
                 "migrate: building a key failed: %s (fix what it names on the target, "
                 "then run migrate again: it resumes)",
                 PQresultErrorMessage(res));
        pgcdc_log_one_line(err);
    }
    PQclear(res);
    return rc;
}

int pgcdc_migrate_keys_build(void *ctx, const char *schema, const char *table, char *err,
                             size_t errlen)
{
    struct pgcdc_migrate *m = ctx;
    if (!keys_read)
        keys_read_script(m);
    if (nkeys == 0)
        return PGCDC_OK;
    if (!keys_conn) {
        keys_conn = pgcdc_migrate_connect(m->target);
        if (PQstatus(keys_conn) != CONNECTION_OK) {
            snprintf(err, errlen, "migrate: cannot connect to the target: %s",
                     PQerrorMessage(keys_conn));
            pgcdc_log_one_line(err);
            int rc = pgcdc_errors_connect(keys_conn);
            PQfinish(keys_conn);
            keys_conn = NULL;
            return rc;
        }
    }
    /* pg_dump names the table as format('%I.%I') does. A partitioned table's key (with
     * source.partitions_as_root) is left to post-data: ALTER TABLE ONLY on the parent
     * alone would leave an invalid index that no ON CONFLICT can use. */
    const char *p[2] = {schema, table};
    PGresult *res = PQexecParams(
        keys_conn,
        "SELECT format('%I.%I', $1::text, $2::text), EXISTS (SELECT 1 FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND "
        "c.relname = $2 AND c.relkind = 'p')",
        2, NULL, p, NULL, NULL, 0);
    char qt[2048] = "";
    bool partitioned = false;
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        snprintf(qt, sizeof(qt), "%s", PQgetvalue(res, 0, 0));
        partitioned = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    }
    PQclear(res);
    if (partitioned)
        return PGCDC_OK;
    int rc = PGCDC_OK, built = 0;
    for (size_t i = 0; i < nkeys && rc == PGCDC_OK; i++) {
        if (strcmp(keys[i].table, qt) != 0)
            continue;
        const char *tp[1] = {keys[i].tag};
        /* Recorded with the key itself: a key built is never built twice. */
        if ((rc = keys_exec("BEGIN", 0, NULL, err, errlen)) < 0)
            break;
        res = PQexecParams(keys_conn,
                           "INSERT INTO pgcdc.migrate_keys VALUES ($1) ON CONFLICT DO NOTHING", 1,
                           NULL, tp, NULL, NULL, 0);
        bool fresh = PQresultStatus(res) == PGRES_COMMAND_OK && strcmp(PQcmdTuples(res), "1") == 0;
        PQclear(res);
        if (!fresh) {
            rc = keys_exec("ROLLBACK", 0, NULL, err, errlen);
            continue;
        }
        if (keys[i].tablespace[0])
            rc = keys_exec(keys[i].tablespace, 0, NULL, err, errlen);
        if (rc == PGCDC_OK)
            rc = keys_exec(keys[i].sql, 0, NULL, err, errlen);
        if (rc == PGCDC_OK)
            rc = keys_exec("COMMIT", 0, NULL, err, errlen);
        built += rc == PGCDC_OK;
    }
    if (rc < 0)
        PQclear(PQexec(keys_conn, "ROLLBACK"));
    if (built) {
        char n[16];
        snprintf(n, sizeof(n), "%d", built);
        pgcdc_log(PGCDC_LOG_INFO, "migrate: the table's keys are built", "table", qt, "keys", n,
                  NULL);
    }
    return rc;
}

int pgcdc_migrate_keys_filter(struct pgcdc_migrate *m, const char *list, char *err, size_t errlen)
{
    PGconn *c = pgcdc_migrate_connect(m->target);
    PGresult *res = NULL;
    struct pgcdc_buf out = {0};
    char line[8192];
    int rc = PGCDC_OK;
    FILE *f = NULL;
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "migrate: cannot connect to the target: %s", PQerrorMessage(c));
        pgcdc_log_one_line(err);
        rc = pgcdc_errors_connect(c);
        goto out;
    }
    res = PQexec(c, "SELECT tag FROM pgcdc.migrate_keys");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) == 0)
        goto out; /* none built (or an older target without the table): restore them all */
    if (!(f = fopen(list, "r"))) {
        snprintf(err, errlen, "cannot read %s: %s", list, strerror(errno));
        rc = PGCDC_ERR;
        goto out;
    }
    while (rc == PGCDC_OK && fgets(line, sizeof(line), f)) {
        bool built = false;
        for (int i = 0; line[0] != ';' && !built && i < PQntuples(res); i++) {
            const char *tag = PQgetvalue(res, i, 0);
            const char *at = strstr(line, tag);
            size_t n = strlen(tag);
            built = at && at > line && at[-1] == ' ' && at[n] == ' ';
        }
        if ((built && pgcdc_buf_append_char(&out, ';') < 0) ||
            pgcdc_buf_append_str(&out, line) < 0) {
            snprintf(err, errlen, "out of memory");
            rc = PGCDC_ERR;
        }
    }
    fclose(f);
    f = NULL;
    if (rc == PGCDC_OK && (!(f = fopen(list, "w")) || fwrite(out.data, 1, out.len, f) != out.len)) {
        snprintf(err, errlen, "cannot write %s: %s", list, strerror(errno));
        rc = PGCDC_ERR;
    }
    if (f && fclose(f) != 0 && rc == PGCDC_OK) {
        snprintf(err, errlen, "cannot write %s: %s", list, strerror(errno));
        rc = PGCDC_ERR;
    }
out:
    PQclear(res);
    PQfinish(c);
    pgcdc_buf_free(&out);
    return rc;
}
