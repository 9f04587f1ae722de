/*
 * migrate_defer.c — post-data for `pgcdc migrate`, and what the target holds back until
 * `pgcdc cutover`. Neon does not let neondb_owner set session_replication_role, so replay
 * may apply with triggers and foreign keys active: an ON DELETE CASCADE or an audit trigger
 * on the target would then change rows behind replay's back. So, while following:
 * foreign keys are absent (added NOT VALID at cutover, validated after it), user triggers
 * are disabled, and GENERATED ALWAYS columns that are not keys are BY DEFAULT (replay
 * writes every column an update carries, which ALWAYS refuses).
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

/* Roles the filter has asked the target about: whether the target role may use each. */
struct role_cache {
    char name[16][128];
    bool ok[16];
    int n;
};

/* 1 when the target has role and the session's role may act as it, 0 when not, or negative. */
static int role_usable(PGconn *t, struct role_cache *rc, const char *role, char *err, size_t errlen)
{
    for (int i = 0; i < rc->n; i++)
        if (strcmp(rc->name[i], role) == 0)
            return rc->ok[i];
    const char *p[1] = {role};
    PGresult *res = PQexecParams(t,
                                 "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1), "
                                 "EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1 AND "
                                 "pg_has_role(current_user, oid, 'MEMBER'))",
                                 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "migrate: %s", PQresultErrorMessage(res));
        pgcdc_log_one_line(err);
        PQclear(res);
        return PGCDC_ERR;
    }
    bool exists = PQgetvalue(res, 0, 0)[0] == 't', ok = PQgetvalue(res, 0, 1)[0] == 't';
    PQclear(res);
    if (!ok)
        pgcdc_log(PGCDC_LOG_WARN,
                  exists ? "migrate: the target role may not act as this role; its owners and "
                           "grants are left out (objects owned by the target role)"
                         : "migrate: this role is missing on the target; its owners and grants "
                           "are left out (objects owned by the target role)",
                  "role", role, NULL);
    if (rc->n < 16) {
        snprintf(rc->name[rc->n], sizeof(rc->name[0]), "%s", role);
        rc->ok[rc->n++] = ok;
    }
    return ok;
}

/* The role a line of pg_dump's names as owner or grantee, or NULL: "... OWNER TO r;",
 * "GRANT ... TO r;", "REVOKE ... FROM r;". Quotes are dropped; r points into buf. */
static const char *line_role(const char *line, char *buf, size_t n)
{
    const char *k = strstr(line, " OWNER TO ");
    size_t skip = 10;
    if (!k && (strncmp(line, "GRANT ", 6) == 0 || strncmp(line, "REVOKE ", 7) == 0)) {
        k = strncmp(line, "GRANT ", 6) == 0 ? strstr(line, " TO ") : strstr(line, " FROM ");
        skip = line[0] == 'G' ? 4 : 6;
    }
    if (!k)
        return NULL;
    k += skip;
    size_t len = strcspn(k, "; \n");
    if (len == 0 || len >= n)
        return NULL;
    if (k[0] == '"' && len >= 2 && k[len - 1] == '"') {
        k++;
        len -= 2;
    }
    memcpy(buf, k, len);
    buf[len] = '\0';
    return strcmp(buf, "PUBLIC") == 0 ? NULL : buf;
}

int pgcdc_migrate_filter_sql(struct pgcdc_migrate *m, const char *inp, const char *outp, char *err,
                             size_t errlen)
{
    FILE *in = fopen(inp, "r"), *out = fopen(outp, "w");
    PGconn *t = pgcdc_migrate_connect(m->target);
    struct role_cache roles = {0};
    char line[8192];
    int rc = PGCDC_OK;
    if (!in || !out) {
        snprintf(err, errlen, "cannot write %s: %s", outp, strerror(errno));
        rc = PGCDC_ERR;
        goto out;
    }
    if (PQstatus(t) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to the target: %s", PQerrorMessage(t));
        pgcdc_log_one_line(err);
        rc = pgcdc_errors_connect(t);
        goto out;
    }
    while (fgets(line, sizeof(line), in)) {
        char name[128];
        const char *role = line_role(line, name, sizeof(name));
        if (role) {
            int ok = role_usable(t, &roles, role, err, errlen);
            if (ok < 0) {
                rc = ok;
                goto out;
            }
            if (!ok)
                continue;
        } else if (sscanf(line, "SET %127[a-z_.] =", name) == 1) {
            const char *p[1] = {name};
            PGresult *res = PQexecParams(t, "SELECT 1 FROM pg_settings WHERE name = $1", 1, NULL, p,
                                         NULL, NULL, 0);
            int known = PQresultStatus(res) == PGRES_TUPLES_OK ? PQntuples(res) : 1;
            PQclear(res);
            if (!known) {
                pgcdc_log(PGCDC_LOG_INFO,
                          "migrate: the target does not know a dump setting; "
                          "skipped",
                          "setting", name, NULL);
                continue;
            }
        }
        fputs(line, out);
    }
out:
    PQfinish(t);
    if (in)
        fclose(in);
    if (out && fclose(out) != 0 && rc == PGCDC_OK) {
        snprintf(err, errlen, "cannot write %s: %s", outp, strerror(errno));
        rc = PGCDC_ERR;
    }
    return rc;
}

/* Split pg_restore -l's listing: foreign keys to fk, everything else to rest. */
static int split_toc(const char *toc, const char *fk, const char *rest, int *nfk, char *err,
                     size_t errlen)
{
    FILE *in = fopen(toc, "r"), *f = fopen(fk, "w"), *r = fopen(rest, "w");
    char line[8192];
    int rc = PGCDC_OK;
    *nfk = 0;
    if (!in || !f || !r) {
        snprintf(err, errlen, "cannot split %s: %s", toc, strerror(errno));
        rc = PGCDC_ERR;
    }
    while (rc == PGCDC_OK && fgets(line, sizeof(line), in)) {
        bool is_fk = line[0] != ';' && strstr(line, " FK CONSTRAINT ") != NULL;
        fputs(line, is_fk ? f : r);
        *nfk += is_fk;
    }
    if (in)
        fclose(in);
    if ((f && fclose(f) != 0) || (r && fclose(r) != 0)) {
        snprintf(err, errlen, "cannot split %s: %s", toc, strerror(errno));
        rc = PGCDC_ERR;
    }
    return rc;
}

/*
 * The foreign keys' statements, NOT VALID where PostgreSQL allows it (not on a partitioned
 * table before 18): appended to cut. Each is one "ALTER TABLE [ONLY] t\n ADD CONSTRAINT ..
 * FOREIGN KEY ..;" in pg_dump's output.
 */
static int fk_statements(struct pgcdc_migrate *m, const char *sql, FILE *cut, char *err,
                         size_t errlen)
{
    FILE *in = fopen(sql, "r");
    char line[8192], table[1024] = "";
    int rc = PGCDC_OK;
    if (!in) {
        snprintf(err, errlen, "cannot read %s: %s", sql, strerror(errno));
        return PGCDC_ERR;
    }
    while (fgets(line, sizeof(line), in)) {
        if (sscanf(line, "ALTER TABLE ONLY %1023[^ \n]", table) == 1 ||
            sscanf(line, "ALTER TABLE %1023[^ \n]", table) == 1) {
            fputs(line, cut);
            continue;
        }
        size_t n = strlen(line);
        if (strstr(line, "FOREIGN KEY") && n >= 2 && line[n - 2] == ';') {
            char *kind = NULL;
            if ((rc = pgcdc_migrate_query1(m->target,
                                           "SELECT relkind FROM pg_class WHERE oid = "
                                           "to_regclass($1)",
                                           table, &kind, err, errlen)) < 0)
                break;
            bool partitioned = kind && strcmp(kind, "p") == 0;
            free(kind);
            if (!partitioned) {
                fprintf(cut, "%.*s NOT VALID;\n", (int)(n - 2), line);
                continue;
            }
        }
        if (strncmp(line, "SET ", 4) == 0 ||
            strncmp(line, "SELECT pg_catalog.set_config", 28) == 0 || strncmp(line, "--", 2) == 0 ||
            line[0] == '\\')
            continue; /* the header: cutover.sql has its own */
        fputs(line, cut);
    }
    fclose(in);
    return rc;
}

/*
 * Each row of sql (on c) is (undo, hold): undo goes to both files, hold is run on the target
 * now, in the caller's transaction. Returns 0 or a negative code.
 */
static int hold(PGconn *c, PGconn *t, const char *sql, FILE *cut, FILE *back, char *err,
                size_t errlen)
{
    PGresult *res = PQexec(c, sql);
    int rc = PGCDC_OK;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "migrate: %s", PQresultErrorMessage(res));
        rc = PGCDC_ERR;
    }
    for (int i = 0; rc == PGCDC_OK && i < PQntuples(res); i++) {
        fprintf(cut, "%s;\n", PQgetvalue(res, i, 0));
        fprintf(back, "%s;\n", PQgetvalue(res, i, 0));
        PGresult *h = PQexec(t, PQgetvalue(res, i, 1));
        if (PQresultStatus(h) != PGRES_COMMAND_OK) {
            snprintf(err, errlen, "migrate: %s: %s", PQgetvalue(res, i, 1),
                     PQresultErrorMessage(h));
            rc = PGCDC_ERR;
        }
        PQclear(h);
    }
    PQclear(res);
    pgcdc_log_one_line(err);
    return rc;
}

/* Triggers and identity columns: recorded in both files, then held back on the target in
 * one transaction. */
static int hold_back(struct pgcdc_migrate *m, FILE *cut, FILE *back, char *err, size_t errlen)
{
    static const char triggers[] =
        "SELECT format('ALTER TABLE %1$s ENABLE TRIGGER %2$I', t.tgrelid::regclass, t.tgname), "
        "format('ALTER TABLE %1$s DISABLE TRIGGER %2$I', t.tgrelid::regclass, t.tgname) "
        "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid "
        "= c.relnamespace WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND t.tgenabled = 'O' "
        "AND n.nspname <> 'pgcdc' ORDER BY 1";
    /* From the source: the target's columns may already be BY DEFAULT (a restart). */
    static const char identity[] =
        "SELECT format('ALTER TABLE %1$s ALTER COLUMN %2$I SET GENERATED ALWAYS', "
        "a.attrelid::regclass, a.attname), format('ALTER TABLE %1$s ALTER COLUMN %2$I SET "
        "GENERATED BY DEFAULT', a.attrelid::regclass, a.attname) FROM pg_attribute a JOIN "
        "pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
        "a.attidentity = 'a' AND NOT a.attisdropped AND c.relkind IN ('r', 'p') AND NOT "
        "c.relispartition AND n.nspname NOT IN ('pgcdc', 'pg_catalog', 'information_schema') "
        "AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND "
        "i.indisprimary AND a.attnum = ANY (i.indkey)) ORDER BY 1";
    PGconn *t = pgcdc_migrate_connect(m->target), *s = pgcdc_migrate_connect(m->source);
    int rc = PGCDC_OK;
    if (PQstatus(t) != CONNECTION_OK || PQstatus(s) != CONNECTION_OK) {
        snprintf(err, errlen, "migrate: cannot connect: %s",
                 PQerrorMessage(PQstatus(t) != CONNECTION_OK ? t : s));
        pgcdc_log_one_line(err);
        rc = PQstatus(t) != CONNECTION_OK ? pgcdc_errors_connect(t) : pgcdc_errors_connect(s);
        goto out;
    }
    /* An empty search_path: regclass prints schema-qualified. */
    PQclear(PQexec(t, "SET search_path = ''"));
    PQclear(PQexec(s, "SET search_path = ''"));
    PQclear(PQexec(t, "BEGIN"));
    if ((rc = hold(t, t, triggers, cut, back, err, errlen)) < 0 ||
        (rc = hold(s, t, identity, cut, back, err, errlen)) < 0)
        goto out;
    if (pgcdc_migrate_exec(t, "COMMIT", 0, NULL, err, errlen) < 0)
        rc = PGCDC_ERR;
out:
    PQfinish(t);
    PQfinish(s);
    return rc;
}

int pgcdc_migrate_postdata(struct pgcdc_migrate *m, char *err, size_t errlen)
{
    char restore[4300], jobs[16], toc[4400], fkl[4400], rest[4400], fkraw[4400], fksql[4400];
    char cutp[4400], backp[4400];
    int nfk = 0, rc;
    pgcdc_migrate_sibling_tool(m, "pg_restore", restore, sizeof(restore));
    snprintf(jobs, sizeof(jobs), "-j%d", m->jobs);
    snprintf(toc, sizeof(toc), "%s/toc.list", m->dir_abs);
    snprintf(fkl, sizeof(fkl), "%s/fk.list", m->dir_abs);
    snprintf(rest, sizeof(rest), "%s/post-data.list", m->dir_abs);
    snprintf(fkraw, sizeof(fkraw), "%s/fk.raw.sql", m->dir_abs);
    snprintf(fksql, sizeof(fksql), "%s/fk.sql", m->dir_abs);
    snprintf(cutp, sizeof(cutp), "%s/cutover.sql", m->dir_abs);
    snprintf(backp, sizeof(backp), "%s/rollback.sql", m->dir_abs);
    char *largv[] = {restore, "-l", m->dump, NULL};
    if ((rc = pgcdc_migrate_tool(NULL, largv, toc, err, errlen)) < 0 ||
        (rc = split_toc(toc, fkl, rest, &nfk, err, errlen)) < 0 ||
        (rc = pgcdc_migrate_keys_filter(m, rest, err, errlen)) < 0)
        return rc;
    pgcdc_log(PGCDC_LOG_INFO,
              "migrate: restoring post-data (indexes, constraints, triggers; "
              "foreign keys wait for cutover)",
              NULL);
    char *pargv[] = {
        restore, "--section=post-data", "--clean", "--if-exists", "--no-owner", jobs, "-L", rest,
        "-d",    m->target_db,          m->dump,   NULL};
    if ((rc = pgcdc_migrate_tool(m->target, pargv, NULL, err, errlen)) < 0)
        return rc;
    FILE *cut = fopen(cutp, "w"), *back = fopen(backp, "w");
    if (!cut || !back) {
        snprintf(err, errlen, "cannot write %s: %s", cutp, strerror(errno));
        rc = PGCDC_ERR;
        goto out;
    }
    fputs("SET search_path = '';\n", cut);
    fputs("SET search_path = '';\n", back);
    if (nfk > 0) {
        char *fargv[] = {restore, "-L", fkl, "-f", fkraw, m->dump, NULL};
        if ((rc = pgcdc_migrate_tool(NULL, fargv, NULL, err, errlen)) < 0 ||
            (rc = fk_statements(m, fkraw, cut, err, errlen)) < 0)
            goto out;
    }
    rc = hold_back(m, cut, back, err, errlen);
out:
    if (cut && fclose(cut) != 0 && rc == PGCDC_OK) {
        snprintf(err, errlen, "cannot write %s: %s", cutp, strerror(errno));
        rc = PGCDC_ERR;
    }
    if (back && fclose(back) != 0 && rc == PGCDC_OK) {
        snprintf(err, errlen, "cannot write %s: %s", backp, strerror(errno));
        rc = PGCDC_ERR;
    }
    return rc;
}

int pgcdc_migrate_run_script(struct pgcdc_migrate *m, const char *file, char *err, size_t errlen)
{
    char psql[4300], path[4400];
    pgcdc_migrate_sibling_tool(m, "psql", psql, sizeof(psql));
    snprintf(path, sizeof(path), "%s/%s", m->dir_abs, file);
    char *argv[] = {psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", path, NULL};
    return pgcdc_migrate_tool(m->target, argv, "/dev/null", err, errlen);
}

int pgcdc_migrate_validate_fks(struct pgcdc_migrate *m, char *err, size_t errlen)
{
    PGconn *t = pgcdc_migrate_connect(m->target);
    int rc = 0;
    PGresult *res = NULL;
    if (PQstatus(t) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to the target: %s", PQerrorMessage(t));
        rc = pgcdc_errors_connect(t);
        goto out;
    }
    PQclear(PQexec(t, "SET search_path = ''"));
    res = PQexec(t, "SELECT format('ALTER TABLE %s VALIDATE CONSTRAINT %I', conrelid::regclass, "
                    "conname) FROM pg_constraint WHERE contype = 'f' AND NOT convalidated "
                    "ORDER BY 1");
    for (int i = 0; PQresultStatus(res) == PGRES_TUPLES_OK && i < PQntuples(res); i++) {
        PGresult *v = PQexec(t, PQgetvalue(res, i, 0));
        if (PQresultStatus(v) != PGRES_COMMAND_OK) {
            snprintf(err, errlen, "%s: %s", PQgetvalue(res, i, 0), PQresultErrorMessage(v));
            rc = PGCDC_ERR;
        } else {
            rc++;
        }
        PQclear(v);
        if (rc < 0)
            break;
    }
out:
    pgcdc_log_one_line(err);
    PQclear(res);
    PQfinish(t);
    return rc;
}
