/*
 * migrate_progress.c — the shared counters of `pgcdc migrate` (migrate_progress.h): what
 * replay writes, the capture child's metrics of them, and the ops child that draws
 * progress on stderr and deletes applied segments (migrate_prune.c).
 */
#include "pgcdc/migrate_progress.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/metrics.h"
#include "pgcdc/migrate.h"
#include "pgcdc/replay_event.h"
#include "pgcdc/source.h"

#define TTY_EVERY_MS 1000
#define LOG_EVERY_MS 10000
#define PRUNE_EVERY_MS 2000

struct pgcdc_migrate_progress *pgcdc_migrate_progress_map(char *err, size_t errlen)
{
    void *p = mmap(NULL, sizeof(struct pgcdc_migrate_progress), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "cannot map shared memory: %s", strerror(errno));
        return NULL;
    }
    struct pgcdc_migrate_progress *pr = p; /* MAP_ANONYMOUS: zeroed */
    atomic_store(&pr->table_est, -1);
    return pr;
}

void pgcdc_migrate_progress_unmap(struct pgcdc_migrate_progress *p)
{
    if (p)
        munmap(p, sizeof(*p));
}

/* ---- replay's side */

/* The table this replay process last published (its own copy, to compare cheaply). */
static char cur_table[PGCDC_PROGRESS_TABLE_MAX];
static uint64_t rows_seen; /* this process's rows_total already added to p->rows */

/* "schema"."table" from the event's JSON strings, quotes dropped (display only). */
static void table_name(const struct pgcdc_replay_event *ev, char *out, size_t n)
{
    snprintf(out, n, "%.*s.%.*s", ev->schema.len >= 2 ? (int)ev->schema.len - 2 : 0,
             ev->schema.p + 1, ev->table.len >= 2 ? (int)ev->table.len - 2 : 0, ev->table.p + 1);
}

void pgcdc_migrate_progress_event(struct pgcdc_migrate_progress *p,
                                  const struct pgcdc_replay_event *ev)
{
    if (!p || !ev->snapshot)
        return;
    char name[PGCDC_PROGRESS_TABLE_MAX];
    table_name(ev, name, sizeof(name));
    if (strcmp(name, cur_table) != 0) {
        memcpy(cur_table, name, sizeof(cur_table));
        uint32_t s = atomic_load(&p->table_seq);
        atomic_store(&p->table_seq, s + 1); /* odd: being written */
        memcpy(p->table, name, sizeof(p->table));
        atomic_store(&p->table_rows, 0);
        atomic_store(&p->table_est, -1);
        atomic_store(&p->table_start_ms, pgcdc_mono_ms());
        atomic_store(&p->table_seq, s + 2);
    }
    atomic_fetch_add_explicit(&p->table_rows, 1, memory_order_relaxed);
}

void pgcdc_migrate_progress_applied(struct pgcdc_migrate_progress *p, uint64_t commit,
                                    uint64_t rows_total)
{
    if (!p)
        return;
    if (rows_total > rows_seen)
        atomic_fetch_add_explicit(&p->rows, rows_total - rows_seen, memory_order_relaxed);
    rows_seen = rows_total;
    if (commit > atomic_load(&p->applied_lsn))
        atomic_store(&p->applied_lsn, commit);
}

void pgcdc_migrate_progress_caught_up(struct pgcdc_migrate_progress *p, uint64_t at)
{
    if (!p)
        return;
    if (at > atomic_load(&p->caught_up_lsn))
        atomic_store(&p->caught_up_lsn, at);
    atomic_store(&p->caught_up_unix_ms, pgcdc_now_ms());
}

/* The table name, consistent with its sequence number. */
static void read_table(const struct pgcdc_migrate_progress *p, char *out, size_t n)
{
    for (int tries = 0; tries < 100; tries++) {
        uint32_t s = atomic_load(&p->table_seq);
        if (s & 1)
            continue;
        snprintf(out, n, "%.*s", (int)sizeof(p->table) - 1, p->table);
        if (atomic_load(&p->table_seq) == s)
            return;
    }
    out[0] = '\0';
}

/* ---- metrics, in the capture child */

static struct pgcdc_migrate_progress *served;

void pgcdc_migrate_progress_lag(const struct pgcdc_migrate_progress *p, uint64_t wal_end,
                                uint64_t *bytes, double *seconds)
{
    uint64_t at = atomic_load(&p->caught_up_lsn), applied = atomic_load(&p->applied_lsn);
    if (applied > at)
        at = applied;
    *bytes = wal_end > at ? wal_end - at : 0;
    /* Caught up means no lag; behind, the lag is how long since replay last was. */
    int64_t since = atomic_load(&p->caught_up_unix_ms);
    *seconds = *bytes == 0 || since == 0 ? 0.0 : (double)(pgcdc_now_ms() - since) / 1000.0;
    if (*seconds < 0)
        *seconds = 0;
}

static int render(struct pgcdc_buf *b)
{
    uint64_t bytes;
    double secs;
    pgcdc_migrate_progress_lag(served, atomic_load(&pgcdc_metrics.server_wal_end), &bytes, &secs);
    char text[1024];
    int n = snprintf(
        text, sizeof(text),
        "# HELP pgcdc_replay_lag_bytes migrate: the server's WAL end minus the position "
        "replay has applied (or is caught up at).\n# TYPE pgcdc_replay_lag_bytes gauge\n"
        "pgcdc_replay_lag_bytes %" PRIu64 "\n"
        "# HELP pgcdc_replay_lag_seconds migrate: 0 when caught up, else the time since replay "
        "last was.\n# TYPE pgcdc_replay_lag_seconds gauge\npgcdc_replay_lag_seconds %.3f\n"
        "# HELP pgcdc_replay_rows_total migrate: rows replay applied to the target.\n"
        "# TYPE pgcdc_replay_rows_total counter\npgcdc_replay_rows_total %" PRIu64 "\n",
        bytes, secs, (uint64_t)atomic_load(&served->rows));
    return pgcdc_buf_append(b, text, (size_t)n);
}

void pgcdc_migrate_progress_serve(struct pgcdc_migrate_progress *p)
{
    served = p;
    pgcdc_metrics_extra = p ? render : NULL;
}

/* ---- the ops child */

struct ops {
    struct pgcdc_migrate *m;
    struct pgcdc_migrate_progress *p;
    PGconn *src, *tgt;
    bool tty, drawn;
    char table[PGCDC_PROGRESS_TABLE_MAX]; /* whose estimate we hold */
    uint64_t last_rows;                   /* table_rows at the last display */
    int64_t last_ms;
    /* Pruning: a position read with the target's WAL insert LSN then; durable once the
     * target has flushed that far (replay commits with synchronous_commit = off). */
    uint64_t cand_commit, cand_insert;
};

/*
 * c, connected to dsn (again if it dropped); NULL when it cannot be now. The source's
 * session is a pgcdc source session (pgcdc_source_connect): named pgcdc-catalog, so that
 * `cutover --read-only-source` does not end it, with its notices routed to the log.
 */
static PGconn *conn(PGconn **c, const char *dsn, bool source)
{
    if (*c && PQstatus(*c) == CONNECTION_OK)
        return *c;
    PQfinish(*c);
    *c = NULL;
    char err[256];
    if (source)
        pgcdc_source_connect(c, dsn, PGCDC_SOURCE_CATALOG, err, sizeof(err));
    else
        *c = pgcdc_migrate_connect(dsn);
    if (PQstatus(*c) != CONNECTION_OK) {
        PQfinish(*c);
        *c = NULL;
    }
    return *c;
}

/* One row of a query on *c; NULL when it failed (the caller PQclears a result). */
static PGresult *row(struct ops *o, bool source, const char *sql, int n, const char *const *pv)
{
    PGconn **c = source ? &o->src : &o->tgt;
    if (!conn(c, source ? o->m->source : o->m->target, source))
        return NULL;
    PGresult *r = PQexecParams(*c, sql, n, NULL, pv, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1) {
        PQclear(r);
        return NULL;
    }
    return r;
}

static uint64_t lsn_at(PGresult *r, int col)
{
    uint64_t v = 0;
    if (!PQgetisnull(r, 0, col))
        pgcdc_lsn_parse_str(PQgetvalue(r, 0, col), &v);
    return v;
}

/* Delete what the target has durably applied (see pgcdc_migrate_prune_segments). */
static void prune(struct ops *o)
{
    PGresult *r = row(o, false,
                      "SELECT commit_lsn::text, pg_current_wal_insert_lsn()::text, "
                      "pg_current_wal_flush_lsn()::text FROM pgcdc.replay_position",
                      0, NULL);
    if (!r)
        return;
    uint64_t commit = lsn_at(r, 0), insert = lsn_at(r, 1), flush = lsn_at(r, 2);
    PQclear(r);
    uint64_t durable = 0;
    if (o->cand_insert && flush >= o->cand_insert)
        durable = o->cand_commit;
    if (flush >= insert)
        durable = commit;
    o->cand_commit = commit;
    o->cand_insert = insert;
    if (durable == 0 || atomic_load(&o->m->progress->prune_paused))
        return;
    int n = pgcdc_migrate_prune_segments(o->m->data_dir, durable);
    if (n > 0) {
        char k[16], l[PGCDC_LSN_BUFLEN];
        snprintf(k, sizeof(k), "%d", n);
        pgcdc_log(PGCDC_LOG_DEBUG, "migrate: deleted segments the target has applied", "segments",
                  k, "applied_lsn", pgcdc_lsn_format(durable, l), NULL);
    }
}

/* The source's estimate of the current table's rows (all partitions of a root). */
static void estimate(struct ops *o, const char *table)
{
    if (strcmp(table, o->table) == 0)
        return;
    snprintf(o->table, sizeof(o->table), "%s", table);
    const char *pv[1] = {table};
    PGresult *r = row(o, true,
                      "SELECT sum(greatest(c.reltuples, 0))::bigint FROM "
                      "pg_partition_tree(to_regclass($1)) t JOIN pg_class c ON c.oid = t.relid",
                      1, pv);
    int64_t est = r && !PQgetisnull(r, 0, 0) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    atomic_store(&o->p->table_est, est > 0 ? est : -1);
}

static const char *stage_name(int s)
{
    static const char *const names[] = {"snapshot", "bulk", "postdata", "following"};
    return s >= 0 && s <= PGCDC_STAGE_FOLLOWING ? names[s] : "?";
}

/* One progress report: a redrawn line on a terminal, else a log line. */
static void report(struct ops *o)
{
    struct pgcdc_migrate_progress *p = o->p;
    int64_t now = pgcdc_mono_ms();
    int stage = atomic_load(&p->stage);
    char rows[32], line[600];
    snprintf(rows, sizeof(rows), "%" PRIu64, (uint64_t)atomic_load(&p->rows));
    if (stage <= PGCDC_STAGE_BULK) {
        char table[PGCDC_PROGRESS_TABLE_MAX], trows[32], est[32] = "?", rate[32] = "?",
                                                         eta[32] = "?";
        read_table(p, table, sizeof(table));
        if (table[0])
            estimate(o, table);
        uint64_t tr = atomic_load(&p->table_rows);
        int64_t te = atomic_load(&p->table_est), dt = now - o->last_ms;
        double rps = dt > 0 && tr >= o->last_rows ? (double)(tr - o->last_rows) * 1000.0 / dt : 0;
        snprintf(trows, sizeof(trows), "%" PRIu64, tr);
        if (te > 0)
            snprintf(est, sizeof(est), "%" PRId64, te);
        if (o->last_ms)
            snprintf(rate, sizeof(rate), "%.0f", rps);
        if (te > 0 && rps > 0)
            snprintf(eta, sizeof(eta), "%.0f",
                     te > (int64_t)tr ? (double)(te - (int64_t)tr) / rps : 0.0);
        o->last_rows = tr;
        if (o->tty)
            snprintf(line, sizeof(line), "migrate %s: %s %s/%s rows, %s rows/s, ETA %s s",
                     stage_name(stage), table[0] ? table : "(waiting for the snapshot)", trows, est,
                     rate, eta);
        else
            pgcdc_log(PGCDC_LOG_INFO, "migrate progress", "stage", stage_name(stage), "table",
                      table, "table_rows", trows, "table_rows_estimate", est, "rows_per_s", rate,
                      "eta_s", eta, "rows", rows, NULL);
    } else {
        PGresult *r = row(o, true, "SELECT pg_current_wal_lsn()::text", 0, NULL);
        uint64_t end = r ? lsn_at(r, 0) : 0, bytes = 0;
        PQclear(r);
        double secs = 0;
        pgcdc_migrate_progress_lag(p, end, &bytes, &secs);
        char b[32], s[32];
        snprintf(b, sizeof(b), r ? "%" PRIu64 : "?", bytes);
        snprintf(s, sizeof(s), "%.1f", secs);
        if (o->tty)
            snprintf(line, sizeof(line), "migrate %s: lag %s bytes, %s s; %s rows applied",
                     stage_name(stage), b, s, rows);
        else
            pgcdc_log(PGCDC_LOG_INFO, "migrate progress", "stage", stage_name(stage), "lag_bytes",
                      b, "lag_seconds", s, "rows", rows, NULL);
    }
    o->last_ms = now;
    if (o->tty) {
        /* \r and erase-line: the next report draws over this one. */
        dprintf(STDERR_FILENO, "\r\033[K%s", line);
        o->drawn = true;
    }
}

int pgcdc_migrate_ops_main(struct pgcdc_migrate *m)
{
    struct ops o = {.m = m, .p = m->progress, .tty = isatty(STDERR_FILENO) == 1};
    int64_t next_report = pgcdc_mono_ms() + (o.tty ? TTY_EVERY_MS : LOG_EVERY_MS), next_prune = 0;
    while (!pgcdc_stop_requested) {
        int64_t now = pgcdc_mono_ms();
        if (!m->cfg.migrate_keep_segments && now >= next_prune) {
            prune(&o);
            next_prune = now + PRUNE_EVERY_MS;
        }
        if (now >= next_report) {
            report(&o);
            next_report = now + (o.tty ? TTY_EVERY_MS : LOG_EVERY_MS);
        }
        poll(NULL, 0, 200);
    }
    if (o.drawn)
        dprintf(STDERR_FILENO, "\n");
    PQfinish(o.src);
    PQfinish(o.tgt);
    return PGCDC_EXIT_OK;
}
