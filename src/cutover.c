/*
 * cutover.c — `pgcdc cutover`: a client that asks the running `pgcdc migrate` over the
 * unix socket DIR/cutover.sock (mode 0600: only migrate's user may ask; nothing secret is
 * written to disk, the DSNs stay in migrate's memory), and the server side migrate runs
 * once it follows.
 *
 * Protocol: the client sends one line, "cutover keep_slot=0|1 tables=S.T,S.T\n"; the
 * server answers with report lines and a last line "exit N", then closes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pgcdc/admin.h"
#include "pgcdc/catalog.h"
#include "pgcdc/common.h"
#include "pgcdc/cutover.h"
#include "pgcdc/errors.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/migrate.h"
#include "pgcdc/replay_event.h"
#include "pgcdc/migrate_progress.h"
#include "pgcdc/replay_read.h"
#include "pgcdc/verify.h"

struct request {
    bool abort;     /* cutover --abort: give the source its previous setting back */
    bool read_only; /* --read-only-source */
    bool keep_slot;
    int max_lag_ms;
    char tables[4096]; /* comma list, "" for every table */
};

static void say(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(int fd, const char *fmt, ...)
{
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    if (write(fd, line, (size_t)n) < 0)
        pgcdc_log(PGCDC_LOG_WARN, "cutover: the client went away", NULL);
}

/* Wait for a child; its exit code, -1 on signal. SIGTERM to migrate aborts the wait. */
static int wait_child(pid_t pid)
{
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        if (r < 0 && errno != EINTR)
            return -1;
        if (pgcdc_stop_requested) {
            kill(pid, SIGTERM);
            waitpid(pid, &st, 0);
            return -1;
        }
        poll(NULL, 0, 50);
    }
}

/*
 * Every source sequence onto the target: last_value and is_called read on the sequence
 * itself (pg_sequences' last_value hides is_called), set with setval. Missing ones are
 * named. Returns the number set, or a negative code.
 */
static int carry_sequences(struct pgcdc_migrate *m, int fd, char *err, size_t errlen)
{
    PGconn *s = pgcdc_migrate_connect(m->source), *t = pgcdc_migrate_connect(m->target);
    PGresult *list = NULL;
    int rc = 0;
    if (PQstatus(s) != CONNECTION_OK || PQstatus(t) != CONNECTION_OK) {
        snprintf(err, errlen, "cutover: cannot connect to carry the sequences: %s",
                 PQerrorMessage(PQstatus(s) != CONNECTION_OK ? s : t));
        rc = PGCDC_ERR;
        goto out;
    }
    list = PQexec(s, "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences "
                     "WHERE schemaname <> 'pgcdc' ORDER BY 1");
    if (PQresultStatus(list) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "cutover: cannot list the source's sequences: %s",
                 PQresultErrorMessage(list));
        rc = PGCDC_ERR;
        goto out;
    }
    for (int i = 0; i < PQntuples(list); i++) {
        const char *seq = PQgetvalue(list, i, 0);
        char sql[1024];
        snprintf(sql, sizeof(sql), "SELECT last_value, is_called FROM %s", seq);
        PGresult *v = PQexec(s, sql);
        if (PQresultStatus(v) != PGRES_TUPLES_OK || PQntuples(v) != 1) {
            snprintf(err, errlen, "cutover: cannot read sequence %s: %s", seq,
                     PQresultErrorMessage(v));
            PQclear(v);
            rc = PGCDC_ERR;
            goto out;
        }
        const char *p[3] = {seq, PQgetvalue(v, 0, 0), PQgetvalue(v, 0, 1)};
        PGresult *r =
            PQexecParams(t,
                         "SELECT pg_catalog.setval(to_regclass($1), $2::bigint, $3::bool) "
                         "WHERE to_regclass($1) IS NOT NULL",
                         3, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(err, errlen, "cutover: cannot set sequence %s on the target: %s", seq,
                     PQresultErrorMessage(r));
            rc = PGCDC_ERR;
        } else if (PQntuples(r) == 0) {
            say(fd, "MISSING sequence %s on target", seq);
        } else {
            rc++;
        }
        PQclear(r);
        PQclear(v);
        if (rc < 0)
            goto out;
    }
out:
    pgcdc_log_one_line(err);
    PQclear(list);
    PQfinish(s);
    PQfinish(t);
    return rc;
}

/* verify in a child whose stdout is DIR/verify.out; its exit code. */
static int run_verify(struct pgcdc_migrate *m, const struct request *q, const char *out)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        char err[2048] = "", buf[4096];
        const char *tables[256];
        int n = 0;
        int ofd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (ofd < 0 || dup2(ofd, 1) < 0)
            _exit(1);
        snprintf(buf, sizeof(buf), "%s", q->tables);
        char *save = NULL;
        for (char *t = strtok_r(buf, ",", &save); t && n < 256; t = strtok_r(NULL, ",", &save))
            tables[n++] = t;
        struct pgcdc_verify_opts o = {
            .source = m->source, .target = m->target, .tables = tables, .ntables = n};
        int rc = pgcdc_verify_run(&o, err, sizeof(err));
        fflush(stdout);
        if (rc < 0)
            pgcdc_log(PGCDC_LOG_ERROR, err, NULL);
        _exit(rc < 0 ? (rc == PGCDC_ERR_CONFIG ? 2 : 1) : 0);
    }
    return wait_child(pid);
}

/*
 * --read-only-source: the role must own the database (or be a superuser); the database's
 * own default_transaction_read_only (none: "-") is recorded in DIR/read-only.prev before
 * it is set, then client sessions are ended one pid at a time, skipping superusers and
 * pgcdc's own (application_name pgcdc-*). Returns 0 or -1 (err says why).
 */
static int make_read_only(struct pgcdc_migrate *m, int fd, char *err, size_t errlen)
{
    PGconn *s = pgcdc_migrate_connect(m->source);
    PGresult *r = NULL;
    int rc = -1, ended = 0;
    char prev_path[4400];
    snprintf(prev_path, sizeof(prev_path), "%s/read-only.prev", m->dir_abs);
    if (PQstatus(s) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to the source: %s", PQerrorMessage(s));
        pgcdc_log_one_line(err);
        goto out;
    }
    r = PQexec(s, "SELECT (d.datdba = r.oid OR r.rolsuper), quote_ident(d.datname), "
                  "COALESCE((SELECT substr(c, 31) FROM pg_db_role_setting st, "
                  "unnest(st.setconfig) c WHERE st.setdatabase = d.oid AND st.setrole = 0 AND "
                  "c LIKE 'default\\_transaction\\_read\\_only=%'), '-') FROM pg_database d, "
                  "pg_roles r WHERE d.datname = current_database() AND r.rolname = "
                  "current_user");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        goto out;
    }
    if (PQgetvalue(r, 0, 0)[0] != 't') {
        snprintf(err, errlen,
                 "--read-only-source needs a role that owns the source database; "
                 "stop writes yourself and run cutover without it");
        goto out;
    }
    char db[256], sql[512];
    snprintf(db, sizeof(db), "%s", PQgetvalue(r, 0, 1));
    /* A file already there holds the setting from before an earlier cutover: keep it. */
    if (access(prev_path, F_OK) != 0) {
        FILE *f = fopen(prev_path, "w");
        bool ok = f && fprintf(f, "%s\n", PQgetvalue(r, 0, 2)) >= 0 && fflush(f) == 0 &&
                  fsync(fileno(f)) == 0;
        if (f && fclose(f) != 0)
            ok = false;
        if (!ok) {
            snprintf(err, errlen, "cannot record the source's setting in %.1500s: %s", prev_path,
                     strerror(errno));
            goto out;
        }
    }
    snprintf(sql, sizeof(sql), "ALTER DATABASE %s SET default_transaction_read_only = on", db);
    if (pgcdc_migrate_exec(s, sql, 0, NULL, err, errlen) < 0)
        goto out;
    PQclear(r);
    r = PQexec(s, "SELECT a.pid FROM pg_stat_activity a LEFT JOIN pg_roles o ON o.oid = "
                  "a.usesysid WHERE a.datname = current_database() AND a.backend_type = 'client "
                  "backend' AND a.pid <> pg_backend_pid() AND NOT COALESCE(o.rolsuper, false) AND "
                  "a.application_name NOT LIKE 'pgcdc%'");
    for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++) {
        const char *p[1] = {PQgetvalue(r, i, 0)};
        if (pgcdc_migrate_exec(s, "SELECT pg_terminate_backend($1::int, 5000)", 1, p, err,
                               errlen) == 0)
            ended++;
    }
    say(fd, "READ-ONLY source: default_transaction_read_only = on; %d sessions ended", ended);
    rc = 0;
out:
    PQclear(r);
    PQfinish(s);
    return rc;
}

/* Give the source its setting from before --read-only-source (DIR/read-only.prev):
 * the previous value, or none (RESET) when it had none. 1 restored, 0 nothing to do, -1. */
static int restore_source(struct pgcdc_migrate *m, int fd, char *err, size_t errlen)
{
    char path[4400], prev[256] = "", sql[600];
    snprintf(path, sizeof(path), "%s/read-only.prev", m->dir_abs);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    if (!fgets(prev, sizeof(prev), f))
        prev[0] = '\0';
    fclose(f);
    prev[strcspn(prev, "\n")] = '\0';
    PGconn *s = pgcdc_migrate_connect(m->source);
    int rc = -1;
    if (PQstatus(s) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to the source: %s", PQerrorMessage(s));
        pgcdc_log_one_line(err);
        goto out;
    }
    /* This session too starts read-only now. */
    if (pgcdc_migrate_exec(s, "SET default_transaction_read_only = off", 0, NULL, err, errlen) < 0)
        goto out;
    char db[256] = "";
    if (pgcdc_catalog_value(s, "SELECT quote_ident(current_database())", db, sizeof(db), err,
                            errlen) < 0)
        goto out;
    if (strcmp(prev, "-") == 0 || !prev[0])
        snprintf(sql, sizeof(sql), "ALTER DATABASE %s RESET default_transaction_read_only", db);
    else
        snprintf(sql, sizeof(sql), "ALTER DATABASE %s SET default_transaction_read_only = %s", db,
                 strcmp(prev, "on") == 0 || strcmp(prev, "true") == 0 ? "on" : "off");
    if (pgcdc_migrate_exec(s, sql, 0, NULL, err, errlen) < 0)
        goto out;
    unlink(path);
    say(fd, "RESTORED the source's default_transaction_read_only (%s)",
        strcmp(prev, "-") == 0 ? "not set" : prev);
    rc = 1;
out:
    PQfinish(s);
    return rc;
}

/* A failed cutover: the source back as it was, and the way back in the report. */
static int failed(struct pgcdc_migrate *m, int fd, const char *what, const char *why)
{
    char err[1024] = "";
    say(fd, "FAILED %s%s%s", what, why && why[0] ? ": " : "", why ? why : "");
    if (restore_source(m, fd, err, sizeof(err)) < 0)
        say(fd, "FAILED restoring the source's setting: %s; run pgcdc cutover --dir DIR --abort",
            err);
    say(fd, "ROLLBACK the source is untouched: keep the application on it; migrate goes on "
            "following, so the cutover can be run again");
    return 1;
}

/* Whether the client is still there (it may have given up while the lag was high). */
static bool client_gone(int fd)
{
    char b;
    return recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/*
 * Step 1: the lag is how long replay takes to catch up with the source's current LSN,
 * sampled now; replay is caught up at the file sink's position, which the server's
 * keepalive walEnd moves on, so an idle source gives 0. Repeated until under max_ms.
 */
static int wait_lag(struct pgcdc_migrate *m, const struct request *q, int fd, char *err,
                    size_t errlen)
{
    for (int round = 0;; round++) {
        char *v = NULL;
        uint64_t want = 0;
        int rc =
            pgcdc_migrate_query1(m->source, "SELECT pg_current_wal_lsn()", NULL, &v, err, errlen);
        if (rc < 0 || !v || pgcdc_lsn_parse_str(v, &want) < 0) {
            free(v);
            return rc < 0 ? rc : PGCDC_ERR;
        }
        free(v);
        int64_t t0 = pgcdc_mono_ms();
        while (atomic_load(m->caught_up) < want) {
            if (m->replay > 0 && waitpid(m->replay, NULL, WNOHANG) == m->replay)
                m->replay = 0;
            if (pgcdc_stop_requested || client_gone(fd) || m->replay <= 0) {
                snprintf(err, errlen,
                         "stopped while waiting for the lag (migrate stopping, "
                         "the client gone, or replay stopped)");
                return PGCDC_ERR;
            }
            poll(NULL, 0, 20);
        }
        int64_t lag = pgcdc_mono_ms() - t0;
        if (lag < q->max_lag_ms) {
            say(fd, "LAG %" PRId64 " ms (under %d ms)", lag, q->max_lag_ms);
            return PGCDC_OK;
        }
        if (round % 10 == 0)
            say(fd, "WAITING lag %" PRId64 " ms, not yet under %d ms", lag, q->max_lag_ms);
    }
}

/*
 * Step 3's promise: no change to a migrated table commits after END. Capture goes on
 * writing DIR/data through the cutover, so its files, read from END on, show any change
 * committed since. Each look reads on from where the last one stopped, up to the source's
 * LSN when the look starts, once capture has written everything before that LSN.
 */
struct after_end {
    struct pgcdc_replay_reader rd;
    struct pgcdc_replay_parser parser;
    struct pgcdc_buf name; /* the table found, "schema\0table\0" */
    uint64_t end;
};

/* Whether capture has exited (left for the serve loop to reap and report). */
static bool capture_gone(const struct pgcdc_migrate *m)
{
    siginfo_t si = {0};
    return m->capture <= 0 ||
           waitid(P_PID, (id_t)m->capture, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid != 0;
}

/*
 * One look: 1 when a change (not a snapshot row, not pgcdc's own schema) with a commit
 * LSN beyond END is in capture's files, with "S.T changed at LSN X" in what; 0 when none is, up to
 * the source's LSN now; negative with err set.
 */
static int look_after_end(struct pgcdc_migrate *m, struct after_end *w, int fd, char *what,
                          size_t whatlen, char *err, size_t errlen)
{
    char *v = NULL;
    uint64_t upto = 0;
    int rc = pgcdc_migrate_query1(m->source, "SELECT pg_current_wal_lsn()", NULL, &v, err, errlen);
    if (rc < 0 || !v || pgcdc_lsn_parse_str(v, &upto) < 0) {
        free(v);
        return rc < 0 ? rc : PGCDC_ERR;
    }
    free(v);
    for (;;) {
        const char *line;
        size_t len;
        int k = pgcdc_replay_reader_next(&w->rd, &line, &len, err, errlen);
        if (k < 0)
            return k;
        if (k == 0) {
            if (w->rd.have_pos && w->rd.pos_lsn >= upto && pgcdc_replay_reader_at_position(&w->rd))
                return 0;
            if (pgcdc_stop_requested || client_gone(fd) || capture_gone(m)) {
                snprintf(err, errlen,
                         "stopped while reading capture's files for changes after END "
                         "(migrate stopping, the client gone, or capture stopped)");
                return PGCDC_ERR;
            }
            poll(NULL, 0, 20);
            continue;
        }
        struct pgcdc_replay_event ev;
        char perr[256];
        if (pgcdc_replay_parse(&w->parser, line, len, &ev, perr, sizeof(perr)) < 0) {
            snprintf(err, errlen,
                     "%s/%s holds a line that is not an event: %s (a damaged segment: "
                     "check the disk of --dir)",
                     w->rd.dir, w->rd.cur, perr);
            return PGCDC_ERR;
        }
        static const char own[] = "\"pgcdc\"";
        if (ev.commit_lsn <= w->end || ev.snapshot ||
            (ev.schema.len == sizeof(own) - 1 && memcmp(ev.schema.p, own, ev.schema.len) == 0))
            continue;
        bool null;
        char lsn[PGCDC_LSN_BUFLEN];
        pgcdc_buf_reset(&w->name);
        if (pgcdc_replay_token_text(ev.schema, &w->name, &null) < 0 ||
            pgcdc_replay_token_text(ev.table, &w->name, &null) < 0) {
            snprintf(err, errlen, "out of memory");
            return PGCDC_ERR;
        }
        snprintf(what, whatlen, "%s.%s changed at LSN %s", w->name.data,
                 w->name.data + strlen(w->name.data) + 1, pgcdc_lsn_format(ev.commit_lsn, lsn));
        return 1;
    }
}

/* A look; 0 when nothing came after END, else the client's exit code after failed(). */
static int no_change_after_end(struct pgcdc_migrate *m, struct after_end *w, int fd)
{
    char err[2048] = "", what[1400] = "", lsn[PGCDC_LSN_BUFLEN];
    int rc = look_after_end(m, w, fd, what, sizeof(what) - 64, err, sizeof(err));
    if (rc == 0)
        return 0;
    if (rc < 0)
        return failed(m, fd, "checking for changes after END", err);
    size_t n = strlen(what);
    snprintf(what + n, sizeof(what) - n, ", after END %s", pgcdc_lsn_format(w->end, lsn));
    return failed(m, fd, what,
                  "writes to the source did not stop; stop them (or use --read-only-source) "
                  "and run pgcdc cutover again");
}

/* The cutover's steps, report lines to fd. Returns the client's exit code. */
static int cutover_steps(struct pgcdc_migrate *m, const struct request *q, int fd,
                         struct after_end *w)
{
    char err[2048] = "", lsn[PGCDC_LSN_BUFLEN];
    if (wait_lag(m, q, fd, err, sizeof(err)) < 0)
        return failed(m, fd, "waiting for the lag", err);
    int64_t t0 = pgcdc_mono_ms();
    if (q->read_only && make_read_only(m, fd, err, sizeof(err)) < 0)
        return failed(m, fd, "making the source read-only", err);
    PGconn *s = pgcdc_migrate_connect(m->source);
    bool read = false;
    if (PQstatus(s) != CONNECTION_OK) {
        snprintf(err, sizeof(err), "%s", PQerrorMessage(s));
        pgcdc_log_one_line(err);
    } else if (pgcdc_catalog_value(s, "SELECT pg_current_wal_lsn()", lsn, sizeof(lsn), err,
                                   sizeof(err)) == 0) {
        read = pgcdc_lsn_parse_str(lsn, &m->point) == 0;
        if (!read)
            snprintf(err, sizeof(err), "not an LSN: %s", lsn);
    }
    PQfinish(s);
    if (!read)
        return failed(m, fd, "reading the source's current LSN", err);
    say(fd, "END %s%s", pgcdc_lsn_format(m->point, lsn),
        q->read_only ? "" : " (writes are trusted to have stopped)");
    w->end = m->point;
    pgcdc_replay_reader_restart(&w->rd, w->end);
    /* The follower makes way for a replay that ends at END. */
    pgcdc_migrate_stop(m->replay);
    m->replay = 0;
    pid_t fin;
    if (pgcdc_migrate_spawn(m, pgcdc_migrate_replay_bulk_main, &fin, err, sizeof(err)) < 0 ||
        wait_child(fin) != 0) {
        return failed(m, fd, "replay did not reach END", err);
    }
    int64_t applied = pgcdc_mono_ms();
    int nseq = carry_sequences(m, fd, err, sizeof(err));
    if (nseq < 0)
        return failed(m, fd, "carrying the sequences", err);
    int64_t paused = pgcdc_mono_ms() - t0;
    say(fd, "APPLIED END in %" PRId64 " ms; %d sequences set", applied - t0, nseq);
    int rc = no_change_after_end(m, w, fd);
    if (rc != 0)
        return rc;
    char out[4300];
    snprintf(out, sizeof(out), "%s/verify.out", m->dir_abs);
    int64_t v0 = pgcdc_mono_ms();
    int vrc = run_verify(m, q, out);
    int64_t vms = pgcdc_mono_ms() - v0;
    FILE *f = fopen(out, "r");
    char line[4096];
    while (f && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        say(fd, "%s", line);
    }
    if (f)
        fclose(f);
    /* Again up to the source's LSN now: END's promise holds until verify has run. */
    if ((rc = no_change_after_end(m, w, fd)) != 0)
        return rc;
    if (vrc != 0)
        return failed(m, fd, "verify found differences; the slot is kept", NULL);
    /* What was held back while following: after verify, so that a failed cutover leaves
     * the target as replay needs it to follow again. */
    int64_t f0 = pgcdc_mono_ms();
    int nfk = -1;
    if (pgcdc_migrate_run_script(m, "cutover.sql", err, sizeof(err)) < 0 ||
        (nfk = pgcdc_migrate_validate_fks(m, err, sizeof(err))) < 0) {
        return failed(m, fd, "restoring foreign keys, triggers or identity columns", err);
    }
    say(fd, "RESTORED foreign keys (%d validated), triggers and identity columns in %" PRId64 " ms",
        nfk, pgcdc_mono_ms() - f0);
    /* Capture stops before its slot is dropped (a slot in use cannot be). */
    pgcdc_migrate_stop(m->capture);
    m->capture = 0;
    if (!q->keep_slot) {
        if (pgcdc_admin_slot(&m->cfg, "drop", err, sizeof(err)) < 0) {
            say(fd, "FAILED dropping the slot: %s", err);
            return 1;
        }
        say(fd, "DROPPED slot %s", m->cfg.source_slot);
    } else {
        say(fd, "KEPT slot %s: drop it when you no longer need it (pgcdc slot drop)",
            m->cfg.source_slot);
    }
    say(fd,
        "DONE write pause %" PRId64 " ms (from %s until END was applied and the "
        "sequences set); verify %" PRId64 " ms",
        paused, q->read_only ? "the read-only switch" : "the cutover's start", vms);
    return 0;
}

/* The cutover itself, report lines to fd. Returns the client's exit code. */
static int cutover(struct pgcdc_migrate *m, const struct request *q, int fd)
{
    struct after_end w = {0};
    pgcdc_replay_reader_init(&w.rd, m->data_dir);
    pgcdc_replay_parser_init(&w.parser);
    /* No segment is deleted while cutover runs: its check reads them on from END. */
    atomic_store(&m->progress->prune_paused, 1);
    int code = cutover_steps(m, q, fd, &w);
    atomic_store(&m->progress->prune_paused, 0);
    pgcdc_replay_reader_free(&w.rd);
    pgcdc_replay_parser_free(&w.parser);
    pgcdc_buf_free(&w.name);
    return code;
}

static int read_request(int fd, struct request *q)
{
    char buf[8192];
    size_t n = 0;
    while (n < sizeof(buf) - 1) {
        ssize_t k = read(fd, buf + n, sizeof(buf) - 1 - n);
        if (k <= 0)
            break;
        n += (size_t)k;
        if (memchr(buf, '\n', n))
            break;
    }
    buf[n] = '\0';
    q->abort = strncmp(buf, "abort", 5) == 0;
    if (!q->abort && strncmp(buf, "cutover ", 8) != 0)
        return -1;
    q->read_only = strstr(buf, " read_only=1") != NULL;
    const char *lag = strstr(buf, " max_lag_ms=");
    q->max_lag_ms = lag ? atoi(lag + 12) : 1000;
    q->keep_slot = strstr(buf, " keep_slot=1") != NULL;
    const char *t = strstr(buf, " tables=");
    q->tables[0] = '\0';
    if (t)
        snprintf(q->tables, sizeof(q->tables), "%.*s", (int)strcspn(t + 8, " \n"), t + 8);
    return 0;
}

int pgcdc_cutover_serve(struct pgcdc_migrate *m, char *err, size_t errlen)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(m->sock) >= sizeof(a.sun_path)) {
        snprintf(err, errlen, "--dir is too long for a unix socket path (%s): use a shorter one",
                 m->sock);
        return PGCDC_ERR_CONFIG;
    }
    memcpy(a.sun_path, m->sock, strlen(m->sock) + 1); /* fits: checked above */
    unlink(m->sock);
    int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    mode_t old = umask(0177); /* the socket is born 0600 */
    int b = ls < 0 ? -1 : bind(ls, (struct sockaddr *)&a, sizeof(a));
    umask(old);
    if (b < 0 || listen(ls, 4) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", m->sock, strerror(errno));
        if (ls >= 0)
            close(ls);
        return PGCDC_ERR;
    }
    int rc = PGCDC_OK;
    for (;;) {
        struct pollfd p = {.fd = ls, .events = POLLIN};
        int k = poll(&p, 1, 200);
        if (pgcdc_stop_requested)
            break;
        int st;
        if (m->capture > 0 && waitpid(m->capture, &st, WNOHANG) == m->capture) {
            m->capture = 0;
            snprintf(err, errlen, "migrate: capture stopped; run migrate again to resume");
            rc = PGCDC_ERR;
            break;
        }
        if (m->replay > 0 && waitpid(m->replay, &st, WNOHANG) == m->replay) {
            m->replay = 0;
            snprintf(err, errlen, "migrate: replay stopped (%s %d); run migrate again to resume",
                     WIFEXITED(st) ? "exit" : "signal",
                     WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            rc = PGCDC_ERR;
            break;
        }
        if (k <= 0)
            continue;
        int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        struct request q;
        if (read_request(c, &q) < 0) {
            say(c, "FAILED not a cutover request");
            say(c, "exit 2");
            close(c);
            continue;
        }
        int code;
        if (q.abort) {
            char e[1024] = "";
            int r = restore_source(m, c, e, sizeof(e));
            if (r == 0)
                say(c, "NOTHING to abort: the source's setting was not changed");
            else if (r < 0)
                say(c, "FAILED %s", e);
            say(c, "exit %d", r < 0 ? 1 : 0);
            close(c);
            continue;
        }
        pgcdc_log(PGCDC_LOG_INFO, "cutover: started", NULL);
        code = cutover(m, &q, c);
        say(c, "exit %d", code);
        close(c);
        if (code == 0) {
            pgcdc_log(PGCDC_LOG_INFO, "cutover: done; migrate exits", NULL);
            break;
        }
        /* A failed cutover leaves migrate following again, so it can be retried. */
        if (m->replay == 0 &&
            pgcdc_migrate_spawn(m, pgcdc_migrate_replay_follow_main, &m->replay, err, errlen) < 0) {
            rc = PGCDC_ERR;
            break;
        }
    }
    close(ls);
    unlink(m->sock);
    return rc;
}

int pgcdc_cutover_ask(const struct pgcdc_cutover_opts *o, char *err, size_t errlen)
{
    const char *dir = o->dir;
    char req[PGCDC_CUTOVER_REQUEST_MAX] = "cutover";
    size_t rn = strlen(req);
    for (int i = 0; i < o->ntables && rn < sizeof(req); i++)
        rn += (size_t)snprintf(req + rn, sizeof(req) - rn, "%s%s",
                               i ? "," : " tables=", o->tables[i]);
    if (rn >= sizeof(req) - PGCDC_CUTOVER_REQUEST_SLACK) { /* main.c refuses this first */
        snprintf(err, errlen, "--table: give fewer tables");
        return PGCDC_ERR_CONFIG;
    }
    if (o->abort)
        snprintf(req, sizeof(req), "abort\n");
    else
        snprintf(req + rn, sizeof(req) - rn, " keep_slot=%d read_only=%d max_lag_ms=%d\n",
                 o->keep_slot ? 1 : 0, o->read_only ? 1 : 0, o->max_lag_ms);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (snprintf(a.sun_path, sizeof(a.sun_path), "%s/cutover.sock", dir) >=
        (int)sizeof(a.sun_path)) {
        snprintf(err, errlen, "--dir %s is too long for a unix socket path", dir);
        return PGCDC_ERR_CONFIG;
    }
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
        snprintf(err, errlen,
                 "no pgcdc migrate is following for --dir %s (%s): start it, and wait for its "
                 "\"following\" line",
                 dir, strerror(errno));
        if (s >= 0)
            close(s);
        return PGCDC_ERR_CONFIG;
    }
    if (write(s, req, strlen(req)) < 0) {
        snprintf(err, errlen, "cannot ask migrate: %s", strerror(errno));
        close(s);
        return PGCDC_ERR;
    }
    FILE *f = fdopen(s, "r");
    char line[4096];
    int code = -1;
    while (f && fgets(line, sizeof(line), f)) {
        if (sscanf(line, "exit %d", &code) == 1)
            break;
        fputs(line, stdout);
    }
    if (f)
        fclose(f);
    fflush(stdout);
    if (code == 0)
        return PGCDC_OK;
    snprintf(err, errlen,
             code < 0 ? "migrate closed the connection before the cutover ended: "
                        "see its log"
                      : "cutover failed: see the lines above");
    return code == 2 ? PGCDC_ERR_CONFIG : PGCDC_ERR;
}
