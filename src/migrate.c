/*
 * migrate.c — `pgcdc migrate`: schema and data from one moment, bulk load, post-data,
 * ANALYZE, then following until `pgcdc cutover` (docs/cutover.md, "One command").
 *
 * DIR holds: data/ (the file sink), state/ (state.dir), dump.fc (pg_dump -Fc --schema-only
 * in the slot's exported snapshot) and point (the slot's consistent point, written once
 * the dump is complete). The target's pgcdc.migrate row is the marker: written in the
 * same transaction as the pre-data schema, it names the source (system_identifier) and
 * DIR, and records the phase reached, so that a restart resumes there.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pgcdc/admin.h"
#include "pgcdc/catalog.h"
#include "pgcdc/common.h"
#include "pgcdc/errors.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/migrate.h"
#include "pgcdc/migrate_progress.h"
#include "pgcdc/snapshot.h"
#include "pgcdc/snapshot_state.h"
#include "pgcdc/source.h"

extern char **environ;

/* The memory shared with the replay children: caught_up, then bulk_end. */
#define MIGRATE_SHARED_BYTES (2 * sizeof(_Atomic uint64_t))

static struct pgcdc_migrate *hook_m; /* the capture child's, for the snapshot hook */

PGconn *pgcdc_migrate_connect(const char *dsn)
{
    return pgcdc_session_connect(dsn, "pgcdc-migrate");
}

/* One value of one query on a fresh connection (NULL params allowed); *out malloc'd. */
int pgcdc_migrate_query1(const char *dsn, const char *sql, const char *param, char **out, char *err,
                         size_t errlen)
{
    PGconn *c = pgcdc_migrate_connect(dsn);
    int rc = PGCDC_OK;
    *out = NULL;
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect: %s", PQerrorMessage(c));
        rc = pgcdc_errors_connect(c);
        goto out;
    }
    PGresult *res = PQexecParams(c, sql, param ? 1 : 0, NULL, param ? &param : NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(res));
        rc = PGCDC_ERR;
    } else if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0) &&
               !(*out = strdup(PQgetvalue(res, 0, 0)))) {
        rc = PGCDC_ERR;
    }
    PQclear(res);
out:
    pgcdc_log_one_line(err);
    PQfinish(c);
    return rc;
}

int pgcdc_migrate_exec(PGconn *c, const char *sql, int nparams, const char *const *params,
                       char *err, size_t errlen)
{
    PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        pgcdc_log_one_line(err);
    }
    PQclear(r);
    return ok ? 0 : -1;
}

static int write_file(const char *path, const char *text, char *err, size_t errlen)
{
    char tmp[4400];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    size_t n = strlen(text);
    if (fd < 0 || write(fd, text, n) != (ssize_t)n || fsync(fd) < 0 || close(fd) < 0 ||
        rename(tmp, path) < 0) {
        snprintf(err, errlen, "cannot write %.900s: %s", path, strerror(errno));
        return PGCDC_ERR;
    }
    return PGCDC_OK;
}

/* pg_restore beside migrate.pg_dump (or on PATH when that is a bare name). */
void pgcdc_migrate_sibling_tool(const struct pgcdc_migrate *m, const char *name, char *out,
                                size_t n)
{
    const char *slash = strrchr(m->cfg.migrate_pg_dump, '/');
    if (!slash)
        snprintf(out, n, "%s", name);
    else
        snprintf(out, n, "%.*s/%s", (int)(slash - m->cfg.migrate_pg_dump), m->cfg.migrate_pg_dump,
                 name);
}

/*
 * The snapshot hook, in the capture child: pg_dump the schema in the slot's exported
 * snapshot, then record the consistent point. Same table selection as the capture; the
 * source's own pgcdc schema stays out.
 */
static int dump_in_snapshot(const char *snapname, uint64_t point, char *err, size_t errlen)
{
    struct pgcdc_migrate *m = hook_m;
    char snaparg[200], tmp[4400], lsn[PGCDC_LSN_BUFLEN];
    char *argv[64];
    int n = 0;
    snprintf(snaparg, sizeof(snaparg), "--snapshot=%s", snapname);
    snprintf(tmp, sizeof(tmp), "%s.tmp", m->dump);
    argv[n++] = m->cfg.migrate_pg_dump;
    argv[n++] = "-Fc";
    argv[n++] = "--schema-only";
    argv[n++] = snaparg;
    argv[n++] = "-N";
    argv[n++] = "pgcdc";
    argv[n++] = "-f";
    argv[n++] = tmp;
    char *inc = m->cfg.source_tables_include ? strdup(m->cfg.source_tables_include) : NULL;
    char *exc = m->cfg.source_tables_exclude ? strdup(m->cfg.source_tables_exclude) : NULL;
    for (int pass = 0; pass < 2; pass++) {
        char *list = pass ? exc : inc, *save = NULL;
        for (char *t = list ? strtok_r(list, ", ", &save) : NULL; t && n < 60;
             t = strtok_r(NULL, ", ", &save)) {
            argv[n++] = pass ? "-T" : "-t";
            argv[n++] = t;
        }
    }
    argv[n] = NULL;
    pgcdc_log(PGCDC_LOG_INFO, "migrate: dumping the schema in the slot's snapshot", "snapshot",
              snapname, NULL);
    /*
     * pg_dump runs beside the snapshot's reader, not before it: the reader holds ACCESS
     * SHARE on every table until its rows are written, so a TRUNCATE queued behind it would
     * block pg_dump's own lock, and a reader waiting for pg_dump would never let go. pg_dump
     * only has to import the snapshot while the slot still exports it (until the snapshot
     * ends), so this waits for the import, and a child of ours waits for pg_dump: it
     * renames the dump and writes DIR/point, or DIR/dump.failed.
     */
    char appname[64];
    snprintf(appname, sizeof(appname), "pgcdc-dump-%d", (int)getpid());
    fflush(NULL);
    pid_t waiter = fork();
    if (waiter == 0) {
        char e[1024] = "", path[4300];
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        setenv("PGAPPNAME", appname, 1);
        int rc = pgcdc_migrate_tool(m->source, argv, NULL, e, sizeof(e));
        if (rc == 0 && rename(tmp, m->dump) < 0) {
            snprintf(e, sizeof(e), "cannot rename %.900s: %s", tmp, strerror(errno));
            rc = PGCDC_ERR;
        }
        snprintf(path, sizeof(path), "%s/%s", m->dir_abs, rc == 0 ? "point" : "dump.failed");
        if (write_file(path, rc == 0 ? pgcdc_lsn_format(point, lsn) : e, e, sizeof(e)) < 0)
            _exit(1);
        _exit(rc == 0 ? 0 : 1);
    }
    free(inc);
    free(exc);
    if (waiter < 0) {
        snprintf(err, errlen, "cannot fork: %s", strerror(errno));
        return PGCDC_ERR;
    }
    /* The import is done once pg_dump's session has a transaction with a snapshot. */
    for (;;) {
        char *v = NULL;
        int st;
        if (waitpid(waiter, &st, WNOHANG) == waiter)
            return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? PGCDC_OK : PGCDC_ERR;
        int rc = pgcdc_migrate_query1(m->source,
                                      "SELECT 1 FROM pg_stat_activity WHERE application_name = "
                                      "$1 AND xact_start IS NOT NULL AND backend_xmin IS NOT NULL",
                                      appname, &v, err, errlen);
        bool imported = v != NULL;
        free(v);
        if (rc < 0 || imported)
            return rc;
        if (pgcdc_stop_requested) {
            snprintf(err, errlen, "stopped while pg_dump started");
            return PGCDC_ERR;
        }
        poll(NULL, 0, 20);
    }
}

static int capture_main(struct pgcdc_migrate *m)
{
    hook_m = m;
    pgcdc_snapshot_exported_hook = dump_in_snapshot;
    pgcdc_migrate_progress_serve(m->progress);
    return pgcdc_migrate_capture_main(m);
}

/* Whether a child exited; a capture that stops is fatal to migrate. */
static int check_children(struct pgcdc_migrate *m, char *err, size_t errlen)
{
    int st;
    if (m->capture > 0 && waitpid(m->capture, &st, WNOHANG) == m->capture) {
        m->capture = 0;
        snprintf(err, errlen, "migrate: capture stopped (%s %d); run migrate again to resume",
                 WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        return PGCDC_ERR;
    }
    if (m->replay > 0 && waitpid(m->replay, &st, WNOHANG) == m->replay) {
        m->replay = 0;
        m->replay_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    if (m->ops > 0 && waitpid(m->ops, &st, WNOHANG) == m->ops) {
        m->ops = 0; /* reaped; capture and replay go on without it */
        pgcdc_log(PGCDC_LOG_WARN,
                  "migrate: the progress child stopped: no progress is shown and no applied "
                  "segment is deleted until migrate is restarted (with the same --dir)",
                  NULL);
    }
    return PGCDC_OK;
}

/* Sleep a little, watching children and SIGTERM. */
static int tick(struct pgcdc_migrate *m, char *err, size_t errlen)
{
    poll(NULL, 0, 100);
    if (pgcdc_stop_requested) {
        snprintf(err, errlen, "stopped");
        return PGCDC_ERR_RETRY;
    }
    return check_children(m, err, errlen);
}

static int set_phase(struct pgcdc_migrate *m, const char *phase, char *err, size_t errlen)
{
    char *v = NULL;
    int rc = pgcdc_migrate_query1(m->target, "UPDATE pgcdc.migrate SET phase = $1", phase, &v, err,
                                  errlen);
    free(v);
    if (rc == PGCDC_OK) {
        snprintf(m->phase, sizeof(m->phase), "%s", phase);
        pgcdc_log(PGCDC_LOG_INFO, "migrate: phase reached", "phase", phase, NULL);
    }
    return rc;
}

/*
 * The target must hold our marker (this source, this DIR), or nothing at all: a table of
 * anything else is named and refused (exit 2).
 */
static int check_target(struct pgcdc_migrate *m, char *err, size_t errlen)
{
    char *v = NULL;
    int rc = pgcdc_migrate_check_target(m, err, errlen);
    if (rc < 0 || (rc = pgcdc_migrate_query1(m->target,
                                             "SELECT to_regclass('pgcdc.migrate') IS NOT NULL",
                                             NULL, &v, err, errlen)) < 0)
        return rc;
    bool marked = v && strcmp(v, "t") == 0;
    free(v);
    v = NULL;
    if (marked) {
        rc = pgcdc_migrate_query1(
            m->target, "SELECT source_sysid || ' ' || phase || ' ' || dir FROM pgcdc.migrate", NULL,
            &v, err, errlen);
        if (rc < 0)
            return rc;
        char sys[64] = "", dir[4096] = "", phase[32] = "";
        if (v)
            sscanf(v, "%63s %31s %4095[^\n]", sys, phase, dir); /* dir last: it may hold spaces */
        free(v);
        if (strcmp(sys, m->sysid) != 0 || strcmp(dir, m->dir_abs) != 0) {
            snprintf(err, errlen,
                     "the target holds another migration (source %s, dir %s): use that DIR, or "
                     "an empty target database",
                     sys, dir);
            return PGCDC_ERR_CONFIG;
        }
        snprintf(m->phase, sizeof(m->phase), "%s", phase);
        return PGCDC_OK;
    }
    rc = pgcdc_migrate_query1(
        m->target,
        "SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ' ORDER BY 1) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', "
        "'information_schema', 'pgcdc') AND n.nspname NOT LIKE 'pg\\_%'",
        NULL, &v, err, errlen);
    if (rc < 0)
        return rc;
    if (v) {
        snprintf(err, errlen,
                 "the target is not empty and holds no migration of this source: %.1500s; "
                 "migrate into an empty database",
                 v);
        free(v);
        return PGCDC_ERR_CONFIG;
    }
    return PGCDC_OK;
}

/*
 * What migrate cannot carry: unlogged tables (not in the WAL, so not captured) unless the
 * selection leaves them out, and large objects. Exit 2 naming them.
 */
static int check_source(struct pgcdc_migrate *m, char *err, size_t errlen)
{
    PGconn *c = pgcdc_migrate_connect(m->source);
    PGresult *res = NULL;
    int rc = PGCDC_OK;
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to the source: %s", PQerrorMessage(c));
        pgcdc_log_one_line(err);
        rc = pgcdc_errors_connect(c);
        goto out;
    }
    res = PQexec(c, "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                    "c.relnamespace WHERE c.relpersistence = 'u' AND c.relkind IN ('r', 'p') "
                    "ORDER BY 1, 2");
    struct pgcdc_buf names = {0};
    for (int i = 0; PQresultStatus(res) == PGRES_TUPLES_OK && i < PQntuples(res); i++) {
        if (!pgcdc_config_table_selected(&m->cfg, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1)))
            continue;
        if (names.len)
            pgcdc_buf_append_str(&names, ", ");
        pgcdc_buf_append_str(&names, PQgetvalue(res, i, 0));
        pgcdc_buf_append_char(&names, '.');
        pgcdc_buf_append_str(&names, PQgetvalue(res, i, 1));
    }
    PQclear(res);
    if (names.len) {
        snprintf(err, errlen,
                 "unlogged tables are not in the WAL, so not captured: %.1500s; leave them out "
                 "with -o source.tables.exclude=... (and copy them yourself), or make them "
                 "logged (ALTER TABLE ... SET LOGGED)",
                 names.data);
        pgcdc_buf_free(&names);
        rc = PGCDC_ERR_CONFIG;
        goto out;
    }
    pgcdc_buf_free(&names);
    char count[32];
    if ((rc = pgcdc_catalog_value(c, "SELECT count(*) FROM pg_largeobject_metadata", count,
                                  sizeof(count), err, errlen)) < 0)
        goto out;
    if (strcmp(count, "0") != 0) {
        snprintf(err, errlen,
                 "the source holds %s large objects (pg_largeobject), which neither logical "
                 "decoding nor migrate carries: move them into bytea columns, or remove them",
                 count);
        rc = PGCDC_ERR_CONFIG;
    }
    /* Then everything `pgcdc check` checks, the room DIR needs for the snapshot included. */
    if (rc == PGCDC_OK)
        rc = pgcdc_admin_check_source(&m->cfg, err, errlen);
out:
    PQfinish(c);
    return rc;
}

/* pg_dump must be at least the source's major version. */
static int check_pg_dump(struct pgcdc_migrate *m, char *err, size_t errlen)
{
    char *v = NULL, out[4300];
    int rc = pgcdc_migrate_query1(m->source, "SELECT current_setting('server_version_num')", NULL,
                                  &v, err, errlen);
    if (rc < 0)
        return rc;
    int server = v ? atoi(v) / 10000 : 0;
    free(v);
    snprintf(out, sizeof(out), "%s/pg_dump.version", m->dir_abs);
    char *argv[] = {m->cfg.migrate_pg_dump, "--version", NULL};
    if ((rc = pgcdc_migrate_tool(NULL, argv, out, err, errlen)) < 0)
        return PGCDC_ERR_CONFIG;
    char line[256] = "";
    FILE *f = fopen(out, "r");
    if (f) {
        if (!fgets(line, sizeof(line), f))
            line[0] = '\0';
        fclose(f);
    }
    unlink(out);
    const char *p = strpbrk(line, "0123456789");
    int mine = p ? atoi(p) : 0;
    if (mine < server) {
        snprintf(err, errlen,
                 "%s is version %d, older than the source (%d): install pg_dump %d or later "
                 "and set migrate.pg_dump = PATH",
                 m->cfg.migrate_pg_dump, mine, server, server);
        return PGCDC_ERR_CONFIG;
    }
    return PGCDC_OK;
}

/*
 * Pre-data as one target transaction with the marker: pg_restore writes the script, header
 * settings the target does not know are left out (a newer pg_dump's), psql -1 runs it.
 */
static int restore_predata(struct pgcdc_migrate *m, char *err, size_t errlen)
{
    char raw[4300], sql[4300], restore[4300], marker[6000], lsn[PGCDC_LSN_BUFLEN];
    snprintf(raw, sizeof(raw), "%s/pre-data.raw.sql", m->dir_abs);
    snprintf(sql, sizeof(sql), "%s/pre-data.sql", m->dir_abs);
    pgcdc_migrate_sibling_tool(m, "pg_restore", restore, sizeof(restore));
    char *rargv[] = {restore, "--section=pre-data", "-f", raw, m->dump, NULL};
    int rc = pgcdc_migrate_tool(NULL, rargv, NULL, err, errlen);
    if (rc < 0)
        return rc;
    if ((rc = pgcdc_migrate_filter_sql(m, raw, sql, err, errlen)) < 0)
        return rc;
    /* dir_abs is a real path; quotes in it are doubled for the literal. */
    char dirq[8300];
    size_t k = 0;
    for (const char *s = m->dir_abs; *s && k + 2 < sizeof(dirq); s++) {
        if (*s == '\'')
            dirq[k++] = '\'';
        dirq[k++] = *s;
    }
    dirq[k] = '\0';
    snprintf(marker, sizeof(marker),
             "CREATE SCHEMA IF NOT EXISTS pgcdc; CREATE TABLE pgcdc.migrate (source_sysid text "
             "NOT NULL, dir text NOT NULL, phase text NOT NULL, point pg_lsn NOT NULL); "
             "INSERT INTO pgcdc.migrate VALUES ('%s', '%.4000s', '%s', '%s')",
             m->sysid, dirq, PGCDC_MIGRATE_PREDATA, pgcdc_lsn_format(m->point, lsn));
    char psql[4300];
    pgcdc_migrate_sibling_tool(m, "psql", psql, sizeof(psql));
    char *pargv[] = {psql, "-X", "-q",   "-v", "ON_ERROR_STOP=1", "-1", "-f",
                     sql,  "-c", marker, NULL};
    if ((rc = pgcdc_migrate_tool(m->target, pargv, "/dev/null", err, errlen)) == PGCDC_OK)
        snprintf(m->phase, sizeof(m->phase), "%s", PGCDC_MIGRATE_PREDATA);
    return rc;
}

/*
 * Whether capture's snapshot is whole: every table recorded done in state.dir/snapshot.
 * A capture killed mid-snapshot takes back the table it cut (replay committed none of
 * it: its sink transaction was not committed) and reads it again at a later point, which
 * then ends the bulk load (*end): the latest table's point.
 */
static int snapshot_done(struct pgcdc_migrate *m, uint64_t *end, char *err, size_t errlen)
{
    struct pgcdc_snapstate st = {0};
    int rc = pgcdc_snapstate_load(&st, m->state_dir, err, errlen);
    if (rc < 0)
        return rc;
    bool done = st.present && st.n > 0 && pgcdc_snapstate_pending(&st) == 0;
    *end = m->point;
    for (size_t i = 0; done && i < st.n; i++)
        if (st.t[i].point > *end)
            *end = st.t[i].point;
    pgcdc_snapstate_free(&st);
    return done ? 1 : 0;
}

/*
 * The bulk load: a replay child started at once loads the snapshot's rows as capture
 * writes them (reading ahead of the sink's commit, one per table, and committing only what
 * capture has made durable: replay_read.h); once the snapshot is whole its end is
 * published (m->bulk_end), and the child applies up to it and exits. 0 when it exited 0.
 */
static int replay_until_done(struct pgcdc_migrate *m, char *err, size_t errlen)
{
    uint64_t end = 0;
    char lsn[PGCDC_LSN_BUFLEN];
    atomic_store(m->bulk_end, 0);
    int rc = pgcdc_migrate_spawn(m, pgcdc_migrate_replay_load_main, &m->replay, err, errlen);
    while (rc == PGCDC_OK && m->replay > 0 && (rc = snapshot_done(m, &end, err, errlen)) == 0)
        rc = tick(m, err, errlen);
    if (rc > 0) {
        m->point = end;
        atomic_store(m->bulk_end, end);
        pgcdc_log(PGCDC_LOG_INFO, "migrate: snapshot whole; the bulk load ends at its end", "lsn",
                  pgcdc_lsn_format(end, lsn), NULL);
        rc = PGCDC_OK;
    }
    while (rc == PGCDC_OK && m->replay > 0)
        rc = tick(m, err, errlen);
    if (rc == PGCDC_OK && m->replay_status != 0) {
        snprintf(err, errlen,
                 "migrate: the bulk load's replay failed (exit %d); run migrate "
                 "again to resume",
                 m->replay_status);
        rc = PGCDC_ERR;
    }
    return rc;
}

static int read_point(struct pgcdc_migrate *m)
{
    char path[4300], buf[64] = "";
    snprintf(path, sizeof(path), "%s/point", m->dir_abs);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return pgcdc_lsn_parse_str(buf, &m->point);
}

static int setup(struct pgcdc_migrate *m, char *err, size_t errlen)
{
    if (mkdir(m->dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create --dir %s: %s", m->dir, strerror(errno));
        return PGCDC_ERR_CONFIG;
    }
    if (!realpath(m->dir, m->dir_abs)) {
        snprintf(err, errlen, "--dir %s: %s", m->dir, strerror(errno));
        return PGCDC_ERR_CONFIG;
    }
    snprintf(m->data_dir, sizeof(m->data_dir), "%s/data", m->dir_abs);
    snprintf(m->state_dir, sizeof(m->state_dir), "%s/state", m->dir_abs);
    snprintf(m->dump, sizeof(m->dump), "%s/dump.fc", m->dir_abs);
    snprintf(m->sock, sizeof(m->sock), "%s/cutover.sock", m->dir_abs);
    struct pgcdc_config *c = &m->cfg;
    int rc;
    /* Shared with the replay children, which outlive no migrate (PR_SET_PDEATHSIG). */
    void *shared =
        mmap(NULL, MIGRATE_SHARED_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) {
        snprintf(err, errlen, "cannot map shared memory: %s", strerror(errno));
        return PGCDC_ERR;
    }
    m->caught_up = shared;
    m->bulk_end = m->caught_up + 1;
    atomic_store(m->caught_up, 0);
    atomic_store(m->bulk_end, 0);
    if ((rc = pgcdc_config_set(c, "source.dsn", m->source, "migrate", err, errlen)) < 0 ||
        (rc = pgcdc_config_set(c, "sink.type", "file", "migrate", err, errlen)) < 0 ||
        (rc = pgcdc_config_set(c, "sink.file.dir", m->data_dir, "migrate", err, errlen)) < 0 ||
        (rc = pgcdc_config_set(c, "state.dir", m->state_dir, "migrate", err, errlen)) < 0 ||
        (rc = pgcdc_config_set(c, "snapshot.mode", "initial", "migrate", err, errlen)) < 0)
        return rc;
    /* The load (replay and the target's COPY) runs beside the snapshot and needs the cores
     * a second reader would take; PGCDC_SNAPSHOT_WORKERS or -o snapshot.workers=N wins. */
    if (!getenv("PGCDC_SNAPSHOT_WORKERS") &&
        (rc = pgcdc_config_set(c, "snapshot.workers", "1", "migrate", err, errlen)) < 0)
        return rc;
    for (int i = 0; i < m->nover; i++)
        if ((rc = pgcdc_config_set_arg(c, m->over[i], err, errlen)) < 0)
            return rc;
    if ((rc = pgcdc_config_validate(c, err, errlen)) < 0)
        return rc;
    m->jobs = c->migrate_jobs;
    pgcdc_log_setup(c->log_level, c->log_format);
    char *v = NULL;
    if ((rc = pgcdc_migrate_query1(m->source,
                                   "SELECT system_identifier::text FROM pg_control_system()", NULL,
                                   &v, err, errlen)) < 0)
        return rc;
    snprintf(m->sysid, sizeof(m->sysid), "%s", v ? v : "");
    free(v);
    v = NULL;
    if ((rc = pgcdc_migrate_query1(m->target, "SELECT current_database()", NULL, &v, err, errlen)) <
        0)
        return rc;
    snprintf(m->target_db, sizeof(m->target_db), "%s", v ? v : "");
    free(v);
    if ((rc = check_target(m, err, errlen)) < 0)
        return rc;
    /* A migrate stopped while pg_dump ran: its snapshot is gone, so start over. */
    if (read_point(m) < 0 && access(m->state_dir, F_OK) == 0 &&
        (rc = pgcdc_migrate_discard_cut_dump(m, err, errlen)) < 0)
        return rc;
    if (m->phase[0])
        return PGCDC_OK;
    if ((rc = check_source(m, err, errlen)) < 0)
        return rc;
    return check_pg_dump(m, err, errlen);
}

/*
 * ANALYZE on a session of its own while post-data is restored: the two wait for each other
 * only on the same table (ANALYZE holds one table at a time, each in its own transaction).
 * analyze_finish then analyzes again the tables with an expression index or extended
 * statistics, which post-data creates: their statistics are gathered only once those
 * exist. With cancel (post-data failed), it cancels ANALYZE rather than waiting for it.
 */
static PGconn *analyze_start(struct pgcdc_migrate *m, char *err, size_t errlen)
{
    PGconn *c = pgcdc_migrate_connect(m->target);
    if (PQstatus(c) != CONNECTION_OK || !PQsendQuery(c, "ANALYZE")) {
        snprintf(err, errlen, "cannot run ANALYZE on the target: %s", PQerrorMessage(c));
        pgcdc_log_one_line(err);
        PQfinish(c);
        return NULL;
    }
    return c;
}

static int analyze_finish(PGconn *c, bool cancel, char *err, size_t errlen)
{
    static const char exprs[] =
        "SELECT 'ANALYZE ' || string_agg(DISTINCT format('%I.%I', n.nspname, r.relname), ', ') "
        "FROM (SELECT indrelid FROM pg_index WHERE indexprs IS NOT NULL UNION "
        "SELECT stxrelid FROM pg_statistic_ext) x(rel) JOIN pg_class r ON r.oid = x.rel "
        "JOIN pg_namespace n ON n.oid = r.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgcdc') HAVING count(*) > 0";
    int rc = PGCDC_OK;
    PGresult *res;
    PGcancel *cn = cancel ? PQgetCancel(c) : NULL;
    char cerr[256];
    if (cn) {
        PQcancel(cn, cerr, sizeof(cerr));
        PQfreeCancel(cn);
        rc = PGCDC_ERR;
        snprintf(err, errlen, "ANALYZE on the target: cancelled");
    }
    while ((res = PQgetResult(c))) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK && rc == PGCDC_OK) {
            snprintf(err, errlen, "ANALYZE on the target: %s", PQresultErrorMessage(res));
            rc = PGCDC_ERR;
        }
        PQclear(res);
    }
    res = rc == PGCDC_OK ? PQexec(c, exprs) : NULL;
    if (res && PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "listing the target's expression indexes: %s",
                 PQresultErrorMessage(res));
        rc = PGCDC_ERR;
    } else if (res && PQntuples(res) == 1) {
        PGresult *a = PQexec(c, PQgetvalue(res, 0, 0));
        if (PQresultStatus(a) != PGRES_COMMAND_OK) {
            snprintf(err, errlen, "ANALYZE on the target: %s", PQresultErrorMessage(a));
            rc = PGCDC_ERR;
        }
        PQclear(a);
    }
    PQclear(res);
    pgcdc_log_one_line(err);
    PQfinish(c);
    return rc;
}

static int migrate(struct pgcdc_migrate *m, char *err, size_t errlen)
{
    int rc = setup(m, err, errlen);
    if (rc < 0)
        return rc;
    if (!(m->progress = pgcdc_migrate_progress_map(err, errlen)))
        return PGCDC_ERR;
    if ((rc = pgcdc_migrate_spawn(m, capture_main, &m->capture, err, errlen)) < 0 ||
        (rc = pgcdc_migrate_spawn(m, pgcdc_migrate_ops_main, &m->ops, err, errlen)) < 0)
        return rc;
    char failed[4400];
    snprintf(failed, sizeof(failed), "%s/dump.failed", m->dir_abs);
    unlink(failed);
    while (read_point(m) < 0) {
        if (access(failed, F_OK) == 0) {
            snprintf(err, errlen,
                     "migrate: pg_dump failed (see its messages above, and %s); "
                     "fix what it says and run migrate again, which starts over",
                     failed);
            return PGCDC_ERR;
        }
        if ((rc = tick(m, err, errlen)) < 0)
            return rc;
    }
    if (!m->phase[0] && (rc = restore_predata(m, err, errlen)) < 0)
        return rc;
    if (strcmp(m->phase, PGCDC_MIGRATE_PREDATA) == 0) {
        atomic_store(&m->progress->stage, PGCDC_STAGE_BULK);
        pgcdc_log(PGCDC_LOG_INFO,
                  "migrate: bulk load (the snapshot's rows, as capture writes them)", NULL);
        if ((rc = pgcdc_migrate_keys_prepare(m, err, errlen)) < 0 ||
            (rc = replay_until_done(m, err, errlen)) < 0 ||
            (rc = set_phase(m, PGCDC_MIGRATE_BULK, err, errlen)) < 0)
            return rc;
    }
    atomic_store(&m->progress->stage, PGCDC_STAGE_POSTDATA);
    if (strcmp(m->phase, PGCDC_MIGRATE_BULK) == 0) {
        char aerr[1024] = "";
        PGconn *an = analyze_start(m, err, errlen);
        if (!an)
            return PGCDC_ERR;
        rc = pgcdc_migrate_postdata(m, err, errlen);
        int arc = analyze_finish(an, rc < 0, aerr, sizeof(aerr));
        if (rc < 0 || (rc = set_phase(m, PGCDC_MIGRATE_POSTDATA, err, errlen)) < 0)
            return rc;
        if (arc < 0) /* a cancel or a deadlock: once more, below, after post-data */
            pgcdc_log(PGCDC_LOG_WARN, "migrate: ANALYZE beside post-data failed; running it again",
                      "error", aerr, NULL);
        else if ((rc = set_phase(m, PGCDC_MIGRATE_FOLLOWING, err, errlen)) < 0)
            return rc;
    }
    if (strcmp(m->phase, PGCDC_MIGRATE_POSTDATA) == 0) {
        char *v = NULL;
        if ((rc = pgcdc_migrate_query1(m->target, "ANALYZE", NULL, &v, err, errlen)) < 0 ||
            (rc = set_phase(m, PGCDC_MIGRATE_FOLLOWING, err, errlen)) < 0)
            return rc;
    }
    atomic_store(&m->progress->stage, PGCDC_STAGE_FOLLOWING);
    if ((rc = pgcdc_migrate_spawn(m, pgcdc_migrate_replay_follow_main, &m->replay, err, errlen)) <
        0)
        return rc;
    pgcdc_log(PGCDC_LOG_INFO, "migrate: following; run pgcdc cutover --dir DIR to finish", "dir",
              m->dir_abs, NULL);
    return pgcdc_cutover_serve(m, err, errlen);
}

static const char usage_hint[] =
    "pgcdc migrate needs --source DSN --target DSN --dir DIR: see pgcdc migrate --help";

int pgcdc_migrate_command(int argc, char **argv, char *err, size_t errlen)
{
    static const struct option longopts[] = {
        {"source", required_argument, NULL, 's'},
        {"target", required_argument, NULL, 't'},
        {"dir", required_argument, NULL, 'd'},
        {NULL, 0, NULL, 0},
    };
    struct pgcdc_migrate m = {0};
    char **over = calloc((size_t)argc + 1, sizeof(char *));
    int c, rc = PGCDC_OK;
    if (!over || pgcdc_config_init(&m.cfg) < 0) {
        free(over);
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    m.over = over;
    if ((rc = pgcdc_config_load_env(&m.cfg, environ, err, errlen)) < 0)
        goto out;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "s:t:d:o:", longopts, NULL)) != -1) {
        char **slot = c == 's' ? &m.source : c == 't' ? &m.target : NULL;
        if (slot) {
            free(*slot);
            if (!(*slot = strdup(optarg))) {
                rc = PGCDC_ERR;
                goto out;
            }
            pgcdc_log_add_secrets(optarg);
            pgcdc_log_scrub_dsn_arg(optarg);
        } else if (c == 'd') {
            m.dir = optarg;
        } else if (c == 'o') {
            over[m.nover++] = optarg;
        } else {
            snprintf(err, errlen, "unknown or incomplete option: see pgcdc migrate --help");
            rc = PGCDC_ERR_CONFIG;
            goto out;
        }
    }
    if (optind < argc || !m.source || !m.target || !m.dir) {
        snprintf(err, errlen, "%s", usage_hint);
        rc = PGCDC_ERR_CONFIG;
        goto out;
    }
    if ((rc = pgcdc_config_check_dsn("--source", m.source, err, errlen)) < 0 ||
        (rc = pgcdc_config_check_dsn("--target", m.target, err, errlen)) < 0)
        goto out;
    pgcdc_install_stop_signals();
    rc = migrate(&m, err, errlen);
    if (rc == PGCDC_ERR_RETRY && pgcdc_stop_requested)
        rc = PGCDC_OK; /* SIGTERM: the children stop below; a restart resumes */
out:
    if (m.ops > 0)
        pgcdc_migrate_stop(m.ops);
    if (m.replay > 0)
        pgcdc_migrate_stop(m.replay);
    if (m.capture > 0)
        pgcdc_migrate_stop(m.capture);
    if (m.caught_up)
        munmap((void *)m.caught_up, MIGRATE_SHARED_BYTES);
    pgcdc_migrate_progress_unmap(m.progress);
    pgcdc_config_free(&m.cfg);
    free(m.source);
    free(m.target);
    free(over);
    return rc;
}
