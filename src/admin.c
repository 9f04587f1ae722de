/*
 * admin.c — `pgcdc check` and `pgcdc slot create|drop|status`.
 */
#include "pgcdc/admin.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "pgcdc/catalog.h"
#include "pgcdc/common.h"
#include "pgcdc/encoding.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/repl.h"
#include "pgcdc/snapshot_signal.h"
#include "pgcdc/sink_http.h"
#include "pgcdc/s3_bucket.h"
#include "pgcdc/slot.h"
#include "pgcdc/source.h"

struct report {
    int fails;
    bool to_log;     /* through pgcdc_log (migrate's preflight), not PASS/FAIL on stdout */
    char first[1200]; /* the first FAIL, "name: message" */
    const char *space_fix; /* what to do when the snapshot does not fit */
};

static void line(struct report *r, const char *status, const char *name, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '\n')
            *p = ' ';
    pgcdc_log_scrub(msg, sizeof(msg)); /* libpq's messages may quote pieces of a password */
    bool fail = strcmp(status, "FAIL") == 0;
    if (fail && r->fails++ == 0)
        snprintf(r->first, sizeof(r->first), "%.100s: %s", name, msg);
    if (r->to_log) {
        char what[128];
        snprintf(what, sizeof(what), "check %s", name);
        pgcdc_log(fail ? PGCDC_LOG_ERROR
                       : strcmp(status, "WARN") == 0 ? PGCDC_LOG_WARN : PGCDC_LOG_DEBUG,
                  what, "result", msg, NULL);
        return;
    }
    printf("%s %s: %s\n", status, name, msg);
    fflush(stdout);
}

/* A plain session with every source session's settings (source.h); NULL with err set. */
static PGconn *plain_connect(const char *dsn, char *err, size_t errlen)
{
    PGconn *c = NULL;
    if (pgcdc_source_connect(&c, dsn, PGCDC_SOURCE_CHECK, err, errlen) < 0)
        return NULL;
    return c;
}

/* 1 when the slot exists, 0 when it does not (or the question fails). */
static int slot_exists(PGconn *c, const char *slot)
{
    const char *params[1] = {slot};
    PGresult *res = PQexecParams(c, "SELECT 1 FROM pg_catalog.pg_replication_slots WHERE "
                                    "slot_name = $1", 1, NULL, params, NULL, NULL, 0);
    int n = PQresultStatus(res) == PGRES_TUPLES_OK ? PQntuples(res) > 0 : 0;
    PQclear(res);
    return n;
}

static void check_slot(struct report *r, PGconn *c, const struct pgcdc_config *cfg)
{
    char *lit = PQescapeLiteral(c, cfg->source_slot, strlen(cfg->source_slot));
    char sql[768];
    snprintf(sql, sizeof(sql),
             "SELECT plugin, active, coalesce(active_pid, 0), coalesce(confirmed_flush_lsn::text, "
             "''), coalesce(wal_status, ''), coalesce(pg_catalog.pg_current_wal_lsn() - "
             "restart_lsn, 0) FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
             lit ? lit : "''");
    PQfreemem(lit);
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        line(r, "FAIL", "slot", "cannot read pg_replication_slots: %s", PQerrorMessage(c));
    } else if (PQntuples(res) == 0) {
        line(r, "PASS", "slot", "\"%s\" does not exist yet; run will create it%s",
             cfg->source_slot, cfg->source_create_slot ? "" : " (but source.create_slot is false: create it with `pgcdc slot create`)");
        if (!cfg->source_create_slot)
            r->fails++;
    } else {
        const char *plugin = PQgetvalue(res, 0, 0), *wal_status = PQgetvalue(res, 0, 4);
        if (strcmp(plugin, "wal2json") != 0)
            line(r, "FAIL", "slot",
                 "\"%s\" uses the plugin %s, not wal2json: choose another source.slot, or drop it "
                 "if unused",
                 cfg->source_slot, plugin);
        else if (strcmp(wal_status, "lost") == 0)
            line(r, "FAIL", "slot",
                 "\"%s\" has lost required WAL (wal_status lost): drop it and start over with a "
                 "new snapshot",
                 cfg->source_slot);
        else if (PQgetvalue(res, 0, 1)[0] == 't')
            line(r, "WARN", "slot", "\"%s\" is active, held by pid %s: only one pgcdc may use it",
                 cfg->source_slot, PQgetvalue(res, 0, 2));
        else
            line(r, "PASS", "slot",
                 "\"%s\" exists: plugin wal2json, confirmed_flush_lsn %s, retained WAL %s bytes, "
                 "wal_status %s",
                 cfg->source_slot, PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 5), wal_status);
    }
    PQclear(res);
}

/* Events are UTF-8: say what that takes for the source's encoding. */
static void check_encoding(struct report *r, PGconn *c, const struct pgcdc_config *cfg)
{
    char enc[32], err[256];
    struct pgcdc_encoding e = {0};
    pgcdc_source_server_encoding(c, enc, sizeof(enc));
    if (pgcdc_encoding_open(&e, enc, err, sizeof(err)) < 0)
        line(r, "FAIL", "server_encoding", "%s", err);
    else if (e.kind == PGCDC_ENC_UTF8)
        line(r, "PASS", "server_encoding", "%s", *enc ? enc : "not reported (taken as UTF8)");
    else if (e.kind == PGCDC_ENC_SQL_ASCII)
        line(r, "WARN", "server_encoding",
             "SQL_ASCII: the server stores text unchecked; a value that is not valid UTF-8 %s",
             cfg->source_invalid_utf8 == PGCDC_INVALID_UTF8_REPLACE
                 ? "is written with U+FFFD (source.invalid_utf8 = replace)"
                 : "stops pgcdc (source.invalid_utf8 = error; replace writes U+FFFD instead)");
    else
        line(r, "PASS", "server_encoding", "%s (events are converted to UTF-8)", enc);
    pgcdc_encoding_close(&e);
}

/* The nearest existing directory at or above path, for statvfs before it is created. */
static int free_bytes(const char *path, uint64_t *out)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s", path);
    for (;;) {
        struct statvfs st;
        if (statvfs(p, &st) == 0) {
            *out = (uint64_t)st.f_bavail * st.f_frsize;
            return 0;
        }
        char *slash = strrchr(p, '/');
        if (!slash)
            return statvfs(".", &st) == 0 ? (*out = (uint64_t)st.f_bavail * st.f_frsize, 0) : -1;
        if (slash == p)
            slash[1] = '\0';
        else
            *slash = '\0';
        if (slash == p && p[1] == '\0' && statvfs(p, &st) < 0)
            return -1;
    }
}

static void human(uint64_t n, char *out, size_t len)
{
    if (n >= 10ULL << 30)
        snprintf(out, len, "%" PRIu64 " bytes (%.1f GB)", n, (double)n / (1 << 30));
    else
        snprintf(out, len, "%" PRIu64 " bytes (%.1f MB)", n, (double)n / (1 << 20));
}

int pgcdc_admin_space(struct pg_conn *c, const struct pgcdc_config *cfg, const char *dir,
                      const char *fix, char *msg, size_t msglen)
{
    /* Heap and TOAST, no indexes, of every selected table (a partition by its own name or
     * its root's), summed in C since the selection is ours. */
    PGresult *res = PQexec(c, "SELECT n.nspname, c.relname, rn.nspname, rc.relname, "
                              "pg_catalog.pg_table_size(c.oid) FROM pg_catalog.pg_class c "
                              "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                              "JOIN pg_catalog.pg_class rc ON rc.oid = "
                              "coalesce(pg_catalog.pg_partition_root(c.oid), c.oid) "
                              "JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace "
                              "WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND n.nspname "
                              "NOT IN ('pg_catalog', 'information_schema', 'pgcdc') "
                              "AND n.nspname NOT LIKE 'pg\\_%'");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(msg, msglen,
                 "cannot read the tables' sizes: %s (run it again once the source answers)",
                 PQresultErrorMessage(res));
        PQclear(res);
        return PGCDC_ERR;
    }
    uint64_t heap = 0, avail = 0;
    for (int i = 0; i < PQntuples(res); i++)
        if (pgcdc_config_table_selected(cfg, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1)) ||
            pgcdc_config_table_selected(cfg, PQgetvalue(res, i, 2), PQgetvalue(res, i, 3)))
            heap += strtoull(PQgetvalue(res, i, 4), NULL, 10);
    PQclear(res);
    /*
     * The snapshot's events in JSON take about 3.8 times the table's heap: measured on
     * 200,000 rows of (bigint key, int, 25-character text, numeric(12,2), timestamptz,
     * boolean, uuid), 21.9 MB of heap written as 83.9 MB of segments. Rounded up to 4.
     */
    uint64_t need = heap * 4;
    if (free_bytes(dir, &avail) < 0) {
        snprintf(msg, msglen, "cannot read the free space of %s: %s (create the directory, or set "
                 "sink.file.dir to one pgcdc may use)",
                 dir, strerror(errno));
        return PGCDC_ERR;
    }
    char n[64], h[64], f[64];
    human(need, n, sizeof(n));
    human(heap, h, sizeof(h));
    human(avail, f, sizeof(f));
    snprintf(msg, msglen,
             "the snapshot needs about %s in %s (the selected tables' %s x 4, the JSON-to-heap "
             "ratio), %s free%s%s",
             n, dir, h, f, need > avail / 10 * 7 ? ": " : "", need > avail / 10 * 7 ? fix : "");
    return need > avail ? 2 : need > avail / 10 * 7 ? 1 : 0;
}

/* Every check of `pgcdc check` on the source, reported to r. */
static int run_checks(struct report *r, const struct pgcdc_config *cfg);

int pgcdc_admin_check(const struct pgcdc_config *cfg)
{
    struct report r = {0};
    return run_checks(&r, cfg);
}

int pgcdc_admin_check_source(const struct pgcdc_config *cfg, char *err, size_t errlen)
{
    struct report r = {.to_log = true,
                       .space_fix = "free space there or point --dir at a bigger disk (the "
                                    "whole snapshot is on disk at once; later, applied "
                                    "segments are deleted unless migrate.keep_segments = true)"};
    int rc = run_checks(&r, cfg);
    if (r.fails == 0)
        return rc;
    snprintf(err, errlen, "the source fails a check (%d in all, each logged above with its fix): "
             "%s", r.fails, r.first);
    return PGCDC_ERR_CONFIG;
}

static int run_checks(struct report *r, const struct pgcdc_config *cfg)
{
    char v[256], v2[256], err[1024];
    if (cfg->sink_type == PGCDC_SINK_S3) {
        int n = pgcdc_s3_bucket_check(cfg);
        if (n < 0)
            return n;
        r->fails += n;
    }
    /* pgcdc_config_validate already refused a -pooler host (exit 2) before we got here. */
    line(r, "PASS", "pooler", "the host is not a Neon pooler endpoint");
    /* Neon removes a slot no client has used for about 40 hours: leave room for a failed poll. */
    if (cfg->source_poll_interval_ms > 12 * 3600 * 1000)
        line(r, "WARN", "poll_interval",
             "source.poll_interval_ms = %d is over 12 h: Neon removes a slot no client has used "
             "for about 40 hours, so two missed polls could lose it; poll more often",
             cfg->source_poll_interval_ms);
    if (cfg->sink_type == PGCDC_SINK_HTTP) {
        /* The receiver first: it is what a new setup most often gets wrong. */
        int hrc = pgcdc_sink_http_check(cfg, err, sizeof(err));
        line(r, hrc < 0 ? "FAIL" : "PASS", "http", "%s", err);
    }

    PGconn *c = plain_connect(cfg->source_dsn, err, sizeof(err));
    if (PQstatus(c) != CONNECTION_OK) {
        line(r, "FAIL", "connect", "%s", c ? PQerrorMessage(c) : err);
        PQfinish(c);
        return PGCDC_ERR;
    }
    line(r, "PASS", "connect", "%s:%s db=%s user=%s tls=%s", PQhost(c), PQport(c), PQdb(c),
         PQuser(c), PQsslInUse(c) ? "on" : "off");

    check_encoding(r, c, cfg);

    int ver = PQserverVersion(c);
    if (ver < 120000)
        line(r, "FAIL", "server_version", "%d.%d: pgcdc needs PostgreSQL 12 or later", ver / 10000,
             ver % 10000);
    else
        line(r, "PASS", "server_version", "%s",
             pgcdc_catalog_show(c, "server_version", v, sizeof(v), err, sizeof(err)) ? "?" : v);

    if (pgcdc_catalog_show(c, "wal_level", v, sizeof(v), err, sizeof(err)) < 0)
        line(r, "FAIL", "wal_level", "cannot read it: %s", err);
    else if (strcmp(v, "logical") != 0)
        line(r, "FAIL", "wal_level",
             "\"%s\", logical decoding needs \"logical\": fix: ALTER SYSTEM SET wal_level = "
             "logical; then restart PostgreSQL (on Neon: enable logical replication in the "
             "project settings)",
             v);
    else
        line(r, "PASS", "wal_level", "logical");

    bool plugin_blocked = false;
    if (!pgcdc_catalog_value(
            c, "SELECT setting FROM pg_catalog.pg_settings WHERE name = 'output_plugin_libraries'",
            v, sizeof(v), err, sizeof(err))) {
        plugin_blocked = !strstr(v, "wal2json");
        if (plugin_blocked)
            line(r, "FAIL", "wal2json",
                 "not allowed by output_plugin_libraries = '%s': fix: ALTER SYSTEM SET "
                 "output_plugin_libraries = %s%swal2json; SELECT pg_reload_conf();",
                 v, v, *v ? ", " : "");
        else
            line(r, "PASS", "output_plugin_libraries", "%s", v);
    }

    /* The replication connection proves the REPLICATION attribute and loads wal2json in a
     * temporary slot (dropped when we disconnect). */
    struct pgcdc_repl *repl = NULL;
    int rc = pgcdc_repl_connect(&repl, cfg->source_dsn, err, sizeof(err));
    if (rc < 0) {
        line(r, "FAIL", "replication_role", "%s", err);
    } else if (plugin_blocked) {
        /* The FAIL above already says why wal2json cannot load: no slot test. */
        line(r, "PASS", "replication_role", "%s may open a replication connection", PQuser(c));
        pgcdc_repl_close(repl);
    } else {
        line(r, "PASS", "replication_role", "%s may open a replication connection", PQuser(c));
        char sql[128];
        snprintf(sql, sizeof(sql), "pgcdc_check_%d", (int)getpid());
        PGconn *rc_conn = (PGconn *)pgcdc_repl_conn(repl);
        /* Creating a slot waits for running transactions: never hang a preflight on it. */
        PQclear(PQexec(rc_conn, "SET statement_timeout = '10s'"));
        char cmd[256];
        snprintf(cmd, sizeof(cmd),
                 "CREATE_REPLICATION_SLOT %s TEMPORARY LOGICAL wal2json NOEXPORT_SNAPSHOT", sql);
        PGresult *res = PQexec(rc_conn, cmd);
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            line(r, "PASS", "wal2json", "the plugin loads (a temporary slot was created)");
        } else {
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            const char *msg = PQresultErrorMessage(res);
            if (state && strcmp(state, "58P01") == 0)
                line(r, "FAIL", "wal2json",
                     "%s: fix: install the wal2json output plugin on the server "
                     "(postgresql-<version>-wal2json; Neon ships it)",
                     msg);
            else if (state && strcmp(state, "53400") == 0)
                line(r, "FAIL", "wal2json",
                     "cannot test it: %s (no free replication slot)", msg);
            else
                line(r, "WARN", "wal2json", "could not verify that the plugin loads: %s", msg);
        }
        PQclear(res);
        pgcdc_repl_close(repl);
    }

    /* The probe's temporary slot may outlive our disconnect for a moment: not counted. */
    char count_sql[256];
    snprintf(count_sql, sizeof(count_sql),
             "SELECT current_setting('max_replication_slots')::int - count(*) FROM "
             "pg_catalog.pg_replication_slots WHERE slot_name <> 'pgcdc_check_%d'",
             (int)getpid());
    if (!pgcdc_catalog_value(c, count_sql, v, sizeof(v), err, sizeof(err)) &&
        !pgcdc_catalog_show(c, "max_replication_slots", v2, sizeof(v2), err, sizeof(err))) {
        if (atoi(v) <= 0)
            line(r, "FAIL", "slots",
                 "0 of %s free: fix: drop an unused slot or raise max_replication_slots", v2);
        else if (atoi(v) < 2 - slot_exists(c, cfg->source_slot))
            line(r, "WARN", "slots",
                 "%s of %s free: a snapshot taken after the first (a table added later, or "
                 "the rest of one a crash cut short) needs a temporary slot besides pgcdc's "
                 "own: drop an unused slot or raise max_replication_slots",
                 v, v2);
        else
            line(r, "PASS", "slots", "%s of %s free", v, v2);
    }
    if (!pgcdc_catalog_value(c, "SELECT current_setting('max_wal_senders')::int - count(*) FROM "
                                "pg_catalog.pg_stat_replication",
                             v, sizeof(v), err, sizeof(err)) &&
        !pgcdc_catalog_show(c, "max_wal_senders", v2, sizeof(v2), err, sizeof(err))) {
        if (atoi(v) <= 0)
            line(r, "FAIL", "wal_senders", "0 of %s free: fix: raise max_wal_senders", v2);
        else if (atoi(v) < 2)
            line(r, "WARN", "wal_senders",
                 "%s of %s free: pgcdc's stream takes one and a later snapshot's temporary "
                 "slot another: raise max_wal_senders, or stop what holds the others",
                 v, v2);
        else
            line(r, "PASS", "wal_senders", "%s of %s free", v, v2);
    }

    /* Plain sessions (walsenders have their own slots): the catalog one, the snapshot's
     * main reader and its workers (snapshot_par.c). This check's own session goes away. */
    int need = cfg->snapshot_workers + 2;
    if (!pgcdc_catalog_value(
            c, "SELECT current_setting('max_connections')::int - "
               "current_setting('superuser_reserved_connections')::int - "
               "coalesce(current_setting('reserved_connections', true)::int, 0) - (SELECT count(*) "
               "FROM pg_catalog.pg_stat_activity WHERE backend_type = 'client backend' AND pid <> "
               "pg_catalog.pg_backend_pid())",
            v, sizeof(v), err, sizeof(err))) {
        if (atoi(v) < need)
            line(r, "WARN", "connections",
                 "%s free, and pgcdc may need %d (a snapshot with snapshot.workers = %d opens %d "
                 "readers, besides the catalog session): lower snapshot.workers or raise "
                 "max_connections",
                 v, need, cfg->snapshot_workers, cfg->snapshot_workers + 1);
        else
            line(r, "PASS", "connections", "%s free, pgcdc may need %d", v, need);
    }
    check_slot(r, c, cfg);
    int sig = pgcdc_signal_exists(c);
    if (sig == 1)
        line(r, "PASS", "signal", "pgcdc.signal exists: `pgcdc snapshot` can ask for snapshots");
    else if (sig == 0) /* optional: no signal table, no on-demand snapshots */
        line(r, "PASS", "signal",
             "pgcdc.signal does not exist, so `pgcdc snapshot` cannot ask for snapshots "
             "(optional; the DDL is in docs/operations.md, \"On-demand snapshots\")");

    char missing[512];
    rc = pgcdc_catalog_missing_included(c, cfg, missing, sizeof(missing), err, sizeof(err));
    if (rc < 0)
        line(r, "FAIL", "tables", "%s", err);
    else if (rc == 1)
        line(r, "FAIL", "tables",
             "source.tables.include names %s, which does not exist: create it or fix the name",
             missing);
    else
        line(r, "PASS", "tables", "every listed table exists");

    struct pgcdc_buf names = {0};
    rc = pgcdc_catalog_keyless(c, cfg, &names, err, sizeof(err));
    if (rc < 0) {
        line(r, "FAIL", "keyless", "%s", err);
    } else if (rc > 0) {
        char *save = NULL;
        for (char *t = strtok_r(names.data, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            while (*t == ' ')
                t++;
            line(r, "WARN", "keyless",
                 "%s has no primary key or replica identity: its updates and deletes cannot be "
                 "captured; fix: ALTER TABLE %s REPLICA IDENTITY FULL (or add a primary key)",
                 t, t);
        }
    } else {
        line(r, "PASS", "keyless", "every selected table has a primary key or replica identity");
    }
    pgcdc_buf_free(&names);
    if (cfg->snapshot_mode != PGCDC_SNAPSHOT_NEVER && cfg->sink_type == PGCDC_SINK_FILE) {
        char msg[1024];
        int k = pgcdc_admin_space(c, cfg, cfg->sink_file_dir,
                                  r->space_fix ? r->space_fix
                                               : "point sink.file.dir at a bigger disk",
                                  msg, sizeof(msg));
        /* With the slot there, its snapshot may be behind us: an estimate, no verdict. */
        if (k > 0 && slot_exists(c, cfg->source_slot))
            line(r, "PASS", "space", "%s (the slot exists: its snapshot may be taken already)",
                 msg);
        else
            line(r, k < 0 || k == 2 ? "FAIL" : k == 1 ? "WARN" : "PASS", "space", "%s", msg);
    }
    PQfinish(c);
    return r->fails ? PGCDC_ERR : PGCDC_OK;
}

static int slot_status(PGconn *c, const struct pgcdc_config *cfg, char *err, size_t errlen)
{
    const char *params[1] = {cfg->source_slot};
    PGresult *res = PQexecParams(
        c,
        "SELECT plugin, active, coalesce(active_pid, 0), coalesce(confirmed_flush_lsn::text, '0/0'), "
        "coalesce(pg_catalog.pg_current_wal_lsn() - confirmed_flush_lsn, 0), "
        "coalesce(pg_catalog.pg_current_wal_lsn() - restart_lsn, 0), coalesce(wal_status, '') "
        "FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
        1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "cannot read pg_replication_slots: %s", PQerrorMessage(c));
        PQclear(res);
        return PGCDC_ERR;
    }
    if (PQntuples(res) == 0)
        printf("slot=%s exists=false\n", cfg->source_slot);
    else
        printf("slot=%s exists=true plugin=%s active=%s active_pid=%s confirmed_flush_lsn=%s "
               "behind_bytes=%s retained_wal_bytes=%s wal_status=%s\n",
               cfg->source_slot, PQgetvalue(res, 0, 0),
               PQgetvalue(res, 0, 1)[0] == 't' ? "true" : "false", PQgetvalue(res, 0, 2),
               PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 4), PQgetvalue(res, 0, 5),
               *PQgetvalue(res, 0, 6) ? PQgetvalue(res, 0, 6) : "unknown");
    PQclear(res);
    return PGCDC_OK;
}

/*
 * A slot missing on the server while state.dir records one (this slot gone, or another
 * slot): creating it now would hide that from the next run.
 */
static int create_refused(const struct pgcdc_config *cfg, const struct pgcdc_slot *sl, char *err,
                          size_t errlen)
{
    if (!sl->rec.present)
        return PGCDC_OK;
    bool same = strcmp(sl->rec.slot, cfg->source_slot) == 0;
    snprintf(err, errlen, "state.dir \"%s\" records the replication slot \"%s\"%s: %s",
             cfg->state_dir, sl->rec.slot, same ? ", which no longer exists" : "",
             same ? "the changes since its last confirmed LSN are gone; move state.dir (and "
                    "the sink's data) aside before creating it again"
                  : "give source.slot its own state.dir, or move that one aside");
    return PGCDC_ERR_CONFIG;
}

/* `slot create`: create the slot (no snapshot) and record it in state.dir as ours. */
static int slot_create(const struct pgcdc_config *cfg, char *err, size_t errlen)
{
    struct pgcdc_repl *repl = NULL;
    int rc = pgcdc_repl_connect(&repl, cfg->source_dsn, err, errlen);
    if (rc < 0)
        return rc == PGCDC_ERR_RETRY ? PGCDC_ERR : rc;
    struct pgcdc_slot sl;
    pgcdc_slot_init(&sl, cfg);
    struct pgcdc_slot_info info;
    if ((rc = pgcdc_repl_preflight(repl, err, errlen)) < 0 ||
        (rc = pgcdc_repl_slot_info(repl, cfg->source_slot, &info, err, errlen)) < 0)
        goto out;
    if (info.exists && strcmp(info.plugin, "wal2json") == 0) {
        printf("slot %s already exists (plugin wal2json)\n", cfg->source_slot);
    } else if (info.exists) {
        snprintf(err, errlen, "slot \"%s\" exists with the plugin %s, not wal2json",
                 cfg->source_slot, info.plugin);
        rc = PGCDC_ERR;
    } else if ((rc = pgcdc_slot_read_record(&sl, err, errlen)) == PGCDC_OK &&
               (rc = create_refused(cfg, &sl, err, errlen)) == PGCDC_OK &&
               (rc = pgcdc_slot_identify(&sl, repl, err, errlen)) == PGCDC_OK) {
        uint64_t lsn = 0;
        rc = pgcdc_slot_create(&sl, repl, NULL, 0, PGCDC_SLOT_CREATED, &lsn, err, errlen);
        char l[PGCDC_LSN_BUFLEN];
        if (rc == PGCDC_OK)
            printf("created slot %s (plugin wal2json) at %s, recorded in %s\n", cfg->source_slot,
                   pgcdc_lsn_format(lsn, l), sl.statefile);
    }
out:
    pgcdc_repl_close(repl);
    return rc < 0 ? (rc == PGCDC_ERR_CONFIG ? rc : PGCDC_ERR) : PGCDC_OK;
}

/* After `slot drop`: state.dir's record of that slot refers to nothing now. */
static void forget_dropped(const struct pgcdc_config *cfg)
{
    struct pgcdc_slot sl;
    char e[512];
    pgcdc_slot_init(&sl, cfg);
    if (pgcdc_slot_read_record(&sl, e, sizeof(e)) < 0 || !sl.rec.present ||
        strcmp(sl.rec.slot, cfg->source_slot) != 0) {
        printf("dropped slot %s\n", cfg->source_slot);
        return;
    }
    if (pgcdc_slot_forget(&sl, e, sizeof(e)) < 0)
        printf("dropped slot %s; %s: remove it before the next run\n", cfg->source_slot, e);
    else
        printf("dropped slot %s and its record in %s: the next run starts over\n", cfg->source_slot,
               cfg->state_dir);
}

int pgcdc_admin_slot(const struct pgcdc_config *cfg, const char *action, char *err,
                     size_t errlen)
{
    int rc = PGCDC_OK;
    if (strcmp(action, "create") == 0)
        return slot_create(cfg, err, errlen);
    PGconn *c = plain_connect(cfg->source_dsn, err, errlen);
    if (!c)
        return PGCDC_ERR;
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to the source: %s", PQerrorMessage(c));
        err[strcspn(err, "\n")] = ' ';
        PQfinish(c);
        return PGCDC_ERR;
    }
    if (strcmp(action, "status") == 0) {
        rc = slot_status(c, cfg, err, errlen);
    } else if (strcmp(action, "drop") == 0) {
        const char *params[1] = {cfg->source_slot};
        PGresult *res = PQexecParams(c,
                                     "SELECT active_pid FROM pg_catalog.pg_replication_slots "
                                     "WHERE slot_name = $1",
                                     1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 0) {
            printf("slot %s does not exist\n", cfg->source_slot);
        } else if (PQresultStatus(res) == PGRES_TUPLES_OK && !PQgetisnull(res, 0, 0)) {
            snprintf(err, errlen,
                     "slot \"%s\" is active, held by pid %s: stop that process first",
                     cfg->source_slot, PQgetvalue(res, 0, 0));
            rc = PGCDC_ERR;
        } else {
            PQclear(res);
            res = PQexecParams(c, "SELECT pg_catalog.pg_drop_replication_slot($1)", 1, NULL,
                               params, NULL, NULL, 0);
            if (PQresultStatus(res) != PGRES_TUPLES_OK) {
                snprintf(err, errlen, "cannot drop slot \"%s\": %s", cfg->source_slot,
                         PQerrorMessage(c));
                rc = PGCDC_ERR;
            } else {
                forget_dropped(cfg);
            }
        }
        PQclear(res);
    } else {
        snprintf(err, errlen, "unknown slot action \"%s\": use create, drop or status", action);
        rc = PGCDC_ERR_CONFIG;
    }
    for (char *p = err; *p; p++)
        if (*p == '\n')
            *p = ' ';
    PQfinish(c);
    return rc;
}
