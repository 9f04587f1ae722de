/*
 * repl.c — the streaming replication protocol over libpq, after pg_recvlogical.c.
 */
#include "pgcdc/repl.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>

#include "pgcdc/common.h"
#include "pgcdc/errors.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/source.h"

/* Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 UTC). */
#define PG_EPOCH_OFFSET_US INT64_C(946684800000000)

struct pgcdc_repl {
    PGconn *conn;
    char *copybuf;     /* last buffer from PQgetCopyData, freed on the next read */
    char encoding[32]; /* server_encoding: wal2json's output comes in it, unconverted */
};

static void conn_error(PGconn *c, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: %s", what, c ? PQerrorMessage(c) : "out of memory");
    pgcdc_log_one_line(err);
}

static uint64_t get_u64(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | u[i];
    return v;
}

static void put_u64(char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (char)(v & 0xff);
        v >>= 8;
    }
}

int pgcdc_repl_connect(struct pgcdc_repl **out, const char *dsn, char *err, size_t errlen)
{
    PGconn *c = NULL;
    int prc = pgcdc_source_connect(&c, dsn, PGCDC_SOURCE_REPLICATION, err, errlen);
    if (prc < 0)
        return prc;
    if (!c || PQstatus(c) != CONNECTION_OK) {
        const char *m = c ? PQerrorMessage(c) : "";
        int rc = pgcdc_errors_connect(c);
        conn_error(c, "cannot connect to the source", err, errlen);
        if (strstr(m, "password authentication failed") || strstr(m, "no password supplied"))
            strncat(err, " (fix the password in source.dsn; pgcdc does not retry this)",
                    errlen - strlen(err) - 1);
        else if (strstr(m, "replication role")) {
            char fix[160];
            snprintf(fix, sizeof(fix), " (grant it: ALTER ROLE \"%s\" WITH REPLICATION)",
                     c && PQuser(c) ? PQuser(c) : "<user>");
            strncat(err, fix, errlen - strlen(err) - 1);
        }
        PQfinish(c);
        return rc;
    }
    struct pgcdc_repl *r = calloc(1, sizeof(*r));
    if (!r) {
        PQfinish(c);
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    r->conn = c;
    pgcdc_source_server_encoding(c, r->encoding, sizeof(r->encoding));
    *out = r;
    return PGCDC_OK;
}

const char *pgcdc_repl_server_encoding(const struct pgcdc_repl *r)
{
    return r->encoding;
}

const char *pgcdc_repl_dbname(const struct pgcdc_repl *r)
{
    return PQdb(r->conn);
}

struct pg_conn *pgcdc_repl_conn(struct pgcdc_repl *r)
{
    return r->conn;
}

/*
 * A failed command: its message in err, its class from errors.c (a slot active elsewhere
 * is busy, a lost connection or a restarting server is retried). The wording stays here.
 */
static int result_error(PGresult *res, PGconn *c, const char *what, char *err, size_t errlen)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(c);
    snprintf(err, errlen, "%s: %s", what, msg && *msg ? msg : PQerrorMessage(c));
    pgcdc_log_one_line(err);
    if (state && strcmp(state, "58P01") == 0 && msg && strstr(msg, "wal2json"))
        strncat(err,
                " (the wal2json output plugin is not installed on the server: install "
                "postgresql-<version>-wal2json, or use a server that ships it, as Neon does)",
                errlen - strlen(err) - 1);
    return pgcdc_errors_pg(c, res, PGCDC_ERRCTX_SOURCE);
}

/* Run a command that returns tuples (or nothing); caller PQclears the result. */
static PGresult *run(struct pgcdc_repl *r, const char *sql, ExecStatusType want, const char *what,
                     int *rc, char *err, size_t errlen)
{
    PGresult *res = PQexec(r->conn, sql);
    if (!res || PQresultStatus(res) != want) {
        *rc = result_error(res, r->conn, what, err, errlen);
        PQclear(res);
        return NULL;
    }
    *rc = PGCDC_OK;
    return res;
}

int pgcdc_repl_preflight(struct pgcdc_repl *r, char *err, size_t errlen)
{
    int rc;
    PGresult *res = run(r, "SHOW wal_level", PGRES_TUPLES_OK, "cannot read wal_level", &rc, err,
                        errlen);
    if (!res)
        return rc;
    char level[32];
    snprintf(level, sizeof(level), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    if (strcmp(level, "logical") != 0) {
        snprintf(err, errlen,
                 "wal_level is \"%s\" on the source, logical decoding needs \"logical\": run "
                 "ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL (on Neon: enable "
                 "logical replication in the project settings)",
                 level);
        return PGCDC_ERR;
    }
    /* Some servers (Neon among them) only load output plugins named in this setting. */
    res = run(r,
              "SELECT setting FROM pg_catalog.pg_settings WHERE name = 'output_plugin_libraries'",
              PGRES_TUPLES_OK, "cannot read output_plugin_libraries", &rc, err, errlen);
    if (!res)
        return rc;
    if (PQntuples(res) == 1) {
        const char *list = PQgetvalue(res, 0, 0);
        bool found = false;
        char buf[1024];
        snprintf(buf, sizeof(buf), "%s", list);
        for (char *save = NULL, *tok = strtok_r(buf, ", \"", &save); tok;
             tok = strtok_r(NULL, ", \"", &save))
            if (strcmp(tok, "wal2json") == 0)
                found = true;
        if (!found) {
            snprintf(err, errlen,
                     "the source does not allow the wal2json output plugin (output_plugin_libraries "
                     "= '%s'): run ALTER SYSTEM SET output_plugin_libraries = %s%swal2json; then "
                     "SELECT pg_reload_conf();",
                     list, list, *list ? ", " : "");
            PQclear(res);
            return PGCDC_ERR;
        }
    }
    PQclear(res);
    return PGCDC_OK;
}

int pgcdc_repl_slot_info(struct pgcdc_repl *r, const char *slot, struct pgcdc_slot_info *info,
                         char *err, size_t errlen)
{
    memset(info, 0, sizeof(*info));
    char *lit = PQescapeLiteral(r->conn, slot, strlen(slot));
    if (!lit) {
        conn_error(r->conn, "cannot quote slot name", err, errlen);
        return PGCDC_ERR;
    }
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT plugin, active, coalesce(active_pid, 0), coalesce(confirmed_flush_lsn, "
             "'0/0'), coalesce(restart_lsn, '0/0'), coalesce(wal_status, '') FROM "
             "pg_catalog.pg_replication_slots WHERE slot_name = %s",
             lit);
    PQfreemem(lit);
    int rc;
    PGresult *res = run(r, sql, PGRES_TUPLES_OK, "cannot read pg_replication_slots", &rc, err,
                        errlen);
    if (!res)
        return rc;
    if (PQntuples(res) == 1) {
        info->exists = true;
        snprintf(info->plugin, sizeof(info->plugin), "%s", PQgetvalue(res, 0, 0));
        info->active = PQgetvalue(res, 0, 1)[0] == 't';
        info->active_pid = atoi(PQgetvalue(res, 0, 2));
        pgcdc_lsn_parse_str(PQgetvalue(res, 0, 3), &info->confirmed_flush);
        pgcdc_lsn_parse_str(PQgetvalue(res, 0, 4), &info->restart_lsn);
        snprintf(info->wal_status, sizeof(info->wal_status), "%s", PQgetvalue(res, 0, 5));
    }
    PQclear(res);
    return PGCDC_OK;
}

int pgcdc_repl_create_slot(struct pgcdc_repl *r, const char *slot, char *snapshot_name,
                           size_t snaplen, uint64_t *consistent_lsn, char *err, size_t errlen)
{
    char sql[256];
    /* The pre-15 spelling of the snapshot option, so PostgreSQL 12-14 accept it too. */
    snprintf(sql, sizeof(sql), "CREATE_REPLICATION_SLOT \"%s\" LOGICAL wal2json %s", slot,
             snapshot_name ? "EXPORT_SNAPSHOT" : "NOEXPORT_SNAPSHOT");
    int rc;
    PGresult *res = run(r, sql, PGRES_TUPLES_OK, "cannot create replication slot", &rc, err,
                        errlen);
    if (!res)
        return rc;
    if (consistent_lsn && pgcdc_lsn_parse_str(PQgetvalue(res, 0, 1), consistent_lsn) < 0)
        *consistent_lsn = 0;
    if (snapshot_name)
        snprintf(snapshot_name, snaplen, "%s", PQgetvalue(res, 0, 2));
    PQclear(res);
    return PGCDC_OK;
}

int pgcdc_repl_drop_slot(struct pgcdc_repl *r, const char *slot, char *err, size_t errlen)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP_REPLICATION_SLOT \"%s\"", slot);
    int rc;
    PGresult *res = run(r, sql, PGRES_COMMAND_OK, "cannot drop replication slot", &rc, err,
                        errlen);
    if (!res)
        return rc;
    PQclear(res);
    return PGCDC_OK;
}

/* Append 'value' as a single-quoted SQL literal. */
static int append_quoted(struct pgcdc_buf *b, const char *v)
{
    if (pgcdc_buf_append_char(b, '\'') < 0)
        return -1;
    for (; *v; v++)
        if ((*v == '\'' && pgcdc_buf_append_char(b, '\'') < 0) || pgcdc_buf_append_char(b, *v) < 0)
            return -1;
    return pgcdc_buf_append_char(b, '\'');
}

int pgcdc_repl_start(struct pgcdc_repl *r, const char *slot, uint64_t startpos,
                     const char *const *opts, char *err, size_t errlen)
{
    struct pgcdc_buf sql = {0};
    char lsn[PGCDC_LSN_BUFLEN];
    int rc = PGCDC_ERR;
    if (pgcdc_buf_append_str(&sql, "START_REPLICATION SLOT \"") < 0 ||
        pgcdc_buf_append_str(&sql, slot) < 0 || pgcdc_buf_append_str(&sql, "\" LOGICAL ") < 0 ||
        pgcdc_buf_append_str(&sql, pgcdc_lsn_format(startpos, lsn)) < 0)
        goto oom;
    for (int i = 0; opts && opts[i]; i += 2) {
        if (pgcdc_buf_append_str(&sql, i ? ", \"" : " (\"") < 0 ||
            pgcdc_buf_append_str(&sql, opts[i]) < 0 || pgcdc_buf_append_str(&sql, "\" ") < 0 ||
            append_quoted(&sql, opts[i + 1]) < 0)
            goto oom;
    }
    if (opts && opts[0] && pgcdc_buf_append_char(&sql, ')') < 0)
        goto oom;
    PGresult *res = run(r, sql.data, PGRES_COPY_BOTH, "cannot start replication", &rc, err, errlen);
    pgcdc_buf_free(&sql);
    if (!res)
        return rc;
    PQclear(res);
    return PGCDC_OK;
oom:
    pgcdc_buf_free(&sql);
    snprintf(err, errlen, "out of memory");
    return PGCDC_ERR;
}

/* The copy stream ended or broke: fetch the server's reason and classify it. */
static int stream_ended(struct pgcdc_repl *r, char *err, size_t errlen)
{
    PGresult *res = PQgetResult(r->conn);
    int rc;
    if (res && PQresultStatus(res) == PGRES_FATAL_ERROR)
        rc = result_error(res, r->conn, "replication stream failed", err, errlen);
    else if (PQstatus(r->conn) == CONNECTION_BAD) {
        conn_error(r->conn, "replication connection lost", err, errlen);
        rc = PGCDC_ERR_RETRY;
    } else {
        snprintf(err, errlen, "the server ended the replication stream");
        rc = PGCDC_ERR_RETRY;
    }
    while (res) {
        PQclear(res);
        res = PQgetResult(r->conn);
    }
    return rc;
}

int pgcdc_repl_read(struct pgcdc_repl *r, struct pgcdc_repl_msg *msg, char *err, size_t errlen)
{
    if (r->copybuf) {
        PQfreemem(r->copybuf);
        r->copybuf = NULL;
    }
    int n = PQgetCopyData(r->conn, &r->copybuf, 1);
    if (n == 0) {
        /* Nothing buffered: read what the socket has, then try once more. */
        if (PQconsumeInput(r->conn) == 0) {
            conn_error(r->conn, "replication connection lost", err, errlen);
            return PGCDC_ERR_RETRY;
        }
        n = PQgetCopyData(r->conn, &r->copybuf, 1);
        if (n == 0)
            return 0;
    }
    if (n == -1)
        return stream_ended(r, err, errlen);
    if (n < 0) {
        conn_error(r->conn, "replication connection lost", err, errlen);
        return PGCDC_ERR_RETRY;
    }
    const char *b = r->copybuf;
    if (b[0] == 'w' && n >= 25) {
        /* 'w' | dataStart u64 | walEnd u64 | sendTime i64 | payload */
        msg->type = PGCDC_REPL_DATA;
        msg->data_start = get_u64(b + 1);
        msg->wal_end = get_u64(b + 9);
        msg->reply_requested = false;
        msg->data = b + 25;
        msg->len = (size_t)n - 25;
        return 1;
    }
    if (b[0] == 'k' && n >= 18) {
        /* 'k' | walEnd u64 | sendTime i64 | replyRequested u8 */
        msg->type = PGCDC_REPL_KEEPALIVE;
        msg->wal_end = get_u64(b + 1);
        msg->reply_requested = b[17] != 0;
        msg->data = NULL;
        msg->len = 0;
        return 1;
    }
    snprintf(err, errlen, "unexpected replication message type '%c' (%d bytes)", b[0], n);
    return PGCDC_ERR_RETRY;
}

int pgcdc_repl_wait(struct pgcdc_repl *r, int timeout_ms)
{
    int fd = PQsocket(r->conn);
    if (fd < 0)
        return PGCDC_ERR_RETRY;
    fd_set rfds;
    FD_ZERO(&rfds);
    FD_SET(fd, &rfds);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    int n = select(fd + 1, &rfds, NULL, NULL, &tv);
    if (n < 0 && errno != EINTR)
        return PGCDC_ERR_RETRY;
    return PGCDC_OK;
}

int pgcdc_repl_send_status(struct pgcdc_repl *r, uint64_t written, uint64_t flushed,
                           bool reply_requested, char *err, size_t errlen)
{
    /* 'r' | write u64 | flush u64 | apply u64 | sendTime i64 | replyRequested u8 */
    char m[34];
    m[0] = 'r';
    put_u64(m + 1, written);
    put_u64(m + 9, flushed);
    put_u64(m + 17, flushed);
    put_u64(m + 25, (uint64_t)(pgcdc_now_us() - PG_EPOCH_OFFSET_US));
    m[33] = reply_requested ? 1 : 0;
    if (PQputCopyData(r->conn, m, sizeof(m)) <= 0 || PQflush(r->conn) < 0) {
        conn_error(r->conn, "cannot send standby status", err, errlen);
        return PGCDC_ERR_RETRY;
    }
    return PGCDC_OK;
}

int pgcdc_repl_finish(struct pgcdc_repl *r, uint64_t flushed, char *err, size_t errlen)
{
    int rc = pgcdc_repl_send_status(r, flushed, flushed, false, err, errlen);
    if (rc < 0)
        return rc;
    if (PQputCopyEnd(r->conn, NULL) <= 0 || PQflush(r->conn) < 0) {
        conn_error(r->conn, "cannot end the replication stream", err, errlen);
        return PGCDC_ERR_RETRY;
    }
    /* Discard what the server still sends until it acknowledges CopyDone, for up to 3 s. */
    int64_t deadline = pgcdc_mono_ms() + 3000;
    for (;;) {
        char *buf = NULL;
        int n = PQgetCopyData(r->conn, &buf, 1);
        if (buf)
            PQfreemem(buf);
        if (n > 0)
            continue;
        if (n < 0)
            break;
        if (pgcdc_mono_ms() >= deadline)
            return PGCDC_OK;
        pgcdc_repl_wait(r, 100);
        if (PQconsumeInput(r->conn) == 0)
            return PGCDC_OK;
    }
    PGresult *res;
    while ((res = PQgetResult(r->conn)))
        PQclear(res);
    return PGCDC_OK;
}

void pgcdc_repl_close(struct pgcdc_repl *r)
{
    if (!r)
        return;
    if (r->copybuf)
        PQfreemem(r->copybuf);
    PQfinish(r->conn);
    free(r);
}
