/*
 * replay_copy.c — snapshot rows into the target with COPY (see replay_copy.h).
 *
 * The text format, per row: the column values separated by a tab, the row ended by a
 * newline; \N is NULL; in a value, backslash, newline, carriage return and tab are written
 * \\, \n, \r, \t. A JSON string already escapes exactly those bytes the same way (JSON
 * forbids raw control characters), so a string is copied run by run: its escapes \\ \n \r
 * \t \b \f pass as they are (COPY reads each of them back as the same byte), \" and \/
 * lose their backslash, and only \uXXXX is decoded (then escaped again if it is one of the
 * four bytes above). snapshot_copy.c does the reverse direction.
 */
#include "pgcdc/replay_copy.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc/errors.h"
#include "pgcdc/json.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/replay_sql.h"

#define PUT_BYTES (1u << 16) /* hand libpq the text in pieces of about this size */

void pgcdc_replay_copy_free(struct pgcdc_replay_copy *cp)
{
    pgcdc_buf_free(&cp->data);
    pgcdc_buf_free(&cp->sql);
    pgcdc_buf_free(&cp->names);
    free(cp->name_off);
    free(cp->skip);
    memset(cp, 0, sizeof(*cp));
}

/* The \uXXXX at p (or two of them: a surrogate pair): its UTF-8 bytes, COPY-escaped; *used:
 * the bytes of p taken. */
static int copy_unicode(struct pgcdc_buf *out, const char *p, const char *end, size_t *used)
{
    char tmp[14], u[8];
    /* A high surrogate (D800-DBFF) stands with the escape after it; any other alone. */
    bool high = end - p >= 4 && (p[2] == 'd' || p[2] == 'D') && p[3] && strchr("89abAB", p[3]);
    size_t n = high ? 12 : 6;
    if ((size_t)(end - p) < n)
        return PGCDC_ERR;
    tmp[0] = '"';
    memcpy(tmp + 1, p, n);
    tmp[n + 1] = '"';
    struct pgcdc_span s = {tmp, n + 2};
    int k = pgcdc_json_unescape(s, u, sizeof(u));
    if (k <= 0)
        return PGCDC_ERR;
    *used = n;
    if (k == 1 && (u[0] == '\\' || u[0] == '\n' || u[0] == '\r' || u[0] == '\t')) {
        char e[2] = {'\\', u[0] == '\\' ? '\\' : u[0] == '\n' ? 'n' : u[0] == '\r' ? 'r' : 't'};
        return pgcdc_buf_append(out, e, 2);
    }
    return pgcdc_buf_append(out, u, (size_t)k);
}

/* A JSON string token (quotes included) as a COPY text value. */
static int copy_string(struct pgcdc_buf *out, struct pgcdc_span tok)
{
    const char *p = tok.p + 1, *end = tok.p + tok.len - 1;
    if (pgcdc_buf_reserve(out, tok.len) < 0)
        return PGCDC_ERR;
    while (p < end) {
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        const char *stop = bs ? bs : end;
        /* Reserved above: the copy never grows the text (escapes shrink or stay). */
        memcpy(out->data + out->len, p, (size_t)(stop - p));
        out->len += (size_t)(stop - p);
        if (!bs)
            break;
        if (bs + 1 >= end)
            return PGCDC_ERR;
        char x = bs[1];
        if (x == 'u') {
            size_t used;
            if (copy_unicode(out, bs, end, &used) < 0)
                return PGCDC_ERR;
            p = bs + used;
            continue;
        }
        if (x == '"' || x == '/') {
            out->data[out->len++] = x;
        } else if (x == '\\' || x == 'n' || x == 'r' || x == 't' || x == 'b' || x == 'f') {
            out->data[out->len++] = '\\';
            out->data[out->len++] = x;
        } else {
            return PGCDC_ERR;
        }
        p = bs + 2;
    }
    out->data[out->len] = '\0';
    return PGCDC_OK;
}

int pgcdc_replay_copy_line(struct pgcdc_buf *out, const struct pgcdc_replay_event *ev,
                           const bool *skip)
{
    bool first = true;
    for (size_t i = 0; i < ev->nafter; i++) {
        if (skip && skip[i])
            continue;
        struct pgcdc_span v = ev->after[i].value;
        if (!first && pgcdc_buf_append_char(out, '\t') < 0)
            return PGCDC_ERR;
        first = false;
        if (v.len == 0)
            return PGCDC_ERR;
        int rc;
        switch (v.p[0]) {
        case '"':
            rc = copy_string(out, v);
            break;
        case 'n':
            rc = pgcdc_buf_append(out, "\\N", 2);
            break;
        case 't':
            rc = pgcdc_buf_append_char(out, 't');
            break;
        case 'f':
            rc = pgcdc_buf_append_char(out, 'f');
            break;
        default: /* a number: its digits as wal2json printed them */
            rc = pgcdc_buf_append(out, v.p, v.len);
            break;
        }
        if (rc < 0)
            return PGCDC_ERR;
    }
    return pgcdc_buf_append_char(out, '\n');
}

bool pgcdc_replay_copy_same_layout(const struct pgcdc_replay_copy *cp,
                                   const struct pgcdc_replay_event *ev)
{
    if (ev->nafter != cp->ncols)
        return false;
    for (size_t i = 0; i < cp->ncols; i++) {
        struct pgcdc_span n = ev->after[i].name;
        if (n.len != cp->name_off[i + 1] - cp->name_off[i] ||
            memcmp(n.p, cp->names.data + cp->name_off[i], n.len) != 0)
            return false;
    }
    return true;
}

/* A failed COPY or statement: err, and whether to reconnect (errors.c decides). */
static int copy_failed(struct pgcdc_replay_target *tg, PGresult *res, const char *what,
                       uint64_t commit, char *err, size_t errlen)
{
    char m[768];
    int rc = pgcdc_errors_pg(tg->conn, res, PGCDC_ERRCTX_TARGET);
    snprintf(m, sizeof(m), "%s", res ? PQresultErrorMessage(res) : PQerrorMessage(tg->conn));
    pgcdc_log_one_line(m);
    snprintf(err, errlen, "%s on the target (%s): %s", what, tg->dsn_red, m);
    if (rc == PGCDC_ERR) {
        tg->failed = true;
        tg->fail_commit = commit;
        snprintf(tg->fail_msg, sizeof(tg->fail_msg), "%s", err);
    }
    PQclear(res);
    return rc;
}

/* Record the event's column layout, and which columns the target computes itself. */
static int copy_layout(struct pgcdc_replay_copy *cp, const struct pgcdc_replay_table *t,
                       const struct pgcdc_replay_event *ev, char *err, size_t errlen)
{
    if (ev->nafter + 1 > cp->cap) {
        size_t cap = ev->nafter + 16;
        size_t *o = realloc(cp->name_off, cap * sizeof(*o));
        if (o)
            cp->name_off = o;
        bool *s = realloc(cp->skip, cap * sizeof(*s));
        if (s)
            cp->skip = s;
        if (!o || !s)
            goto oom;
        cp->cap = cap;
    }
    pgcdc_buf_reset(&cp->names);
    pgcdc_buf_reset(&cp->sql);
    if (pgcdc_buf_append_str(&cp->sql, "COPY ") < 0 ||
        pgcdc_replay_quote_ident(&cp->sql, t->schema) < 0 ||
        pgcdc_buf_append_char(&cp->sql, '.') < 0 ||
        pgcdc_replay_quote_ident(&cp->sql, t->name) < 0 || pgcdc_buf_append(&cp->sql, " (", 2) < 0)
        goto oom;
    cp->ncols = ev->nafter;
    cp->name_off[0] = 0;
    bool any = false;
    for (size_t i = 0; i < ev->nafter; i++) {
        struct pgcdc_span n = ev->after[i].name;
        char name[256];
        if (pgcdc_buf_append(&cp->names, n.p, n.len) < 0)
            goto oom;
        cp->name_off[i + 1] = cp->names.len;
        if (pgcdc_json_unescape(n, name, sizeof(name)) < 0) {
            snprintf(err, errlen,
                     "replay stopped: a column name of %s.%s is malformed: the segment is "
                     "damaged; capture the table again (pgcdc snapshot --table)",
                     t->schema, t->name);
            return PGCDC_ERR;
        }
        const struct pgcdc_replay_column *c = NULL;
        for (size_t k = 0; k < t->ncols && !c; k++)
            if (strcmp(t->cols[k].name, name) == 0)
                c = &t->cols[k];
        if (!c) {
            snprintf(err, errlen,
                     "replay stopped: target table %s.%s has no column \"%s\" (the snapshot "
                     "has it): add it on the target and run replay again",
                     t->schema, t->name, name);
            return PGCDC_ERR;
        }
        /* A stored generated column is computed by the target from the others. */
        cp->skip[i] = c->generated;
        if (c->generated)
            continue;
        if ((any && pgcdc_buf_append(&cp->sql, ", ", 2) < 0) ||
            pgcdc_replay_quote_ident(&cp->sql, name) < 0)
            goto oom;
        any = true;
    }
    if (pgcdc_buf_append_str(&cp->sql, ") FROM STDIN") < 0)
        goto oom;
    return PGCDC_OK;
oom:
    snprintf(err, errlen, "out of memory");
    return PGCDC_ERR;
}

int pgcdc_replay_copy_begin(struct pgcdc_replay_copy *cp, struct pgcdc_replay_target *tg, int ti,
                            const struct pgcdc_replay_event *ev, char *err, size_t errlen)
{
    int rc = copy_layout(cp, &tg->tables[ti].t, ev, err, errlen);
    if (rc < 0)
        return rc;
    PGresult *res = PQexec(tg->conn, "BEGIN");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return copy_failed(tg, res, "BEGIN", ev->commit_lsn, err, errlen);
    PQclear(res);
    res = PQexec(tg->conn, cp->sql.data);
    if (PQresultStatus(res) != PGRES_COPY_IN)
        return copy_failed(tg, res, cp->sql.data, ev->commit_lsn, err, errlen);
    PQclear(res);
    cp->active = true;
    cp->table = ti;
    cp->rows = 0;
    cp->bytes = 0;
    pgcdc_buf_reset(&cp->data);
    return PGCDC_OK;
}

static int copy_put(struct pgcdc_replay_copy *cp, struct pgcdc_replay_target *tg, uint64_t commit,
                    char *err, size_t errlen)
{
    if (cp->data.len && PQputCopyData(tg->conn, cp->data.data, (int)cp->data.len) != 1)
        return copy_failed(tg, NULL, "COPY", commit, err, errlen);
    pgcdc_buf_reset(&cp->data);
    return PGCDC_OK;
}

int pgcdc_replay_copy_row(struct pgcdc_replay_copy *cp, struct pgcdc_replay_target *tg,
                          const struct pgcdc_replay_event *ev, char *err, size_t errlen)
{
    char l[PGCDC_LSN_BUFLEN];
    size_t before = cp->data.len;
    if (pgcdc_replay_copy_line(&cp->data, ev, cp->skip) < 0) {
        snprintf(err, errlen,
                 "replay stopped: a value of the snapshot row of %s.%s at LSN %s is malformed "
                 "JSON: the segment is damaged; capture the table again (pgcdc snapshot "
                 "--table)",
                 tg->tables[cp->table].t.schema, tg->tables[cp->table].t.name,
                 pgcdc_lsn_format(ev->lsn, l));
        return PGCDC_ERR;
    }
    cp->rows++;
    cp->bytes += cp->data.len - before;
    return cp->data.len >= PUT_BYTES ? copy_put(cp, tg, ev->commit_lsn, err, errlen) : PGCDC_OK;
}

int pgcdc_replay_copy_end(struct pgcdc_replay_copy *cp, struct pgcdc_replay_target *tg,
                          uint64_t commit, int64_t partial, char *err, size_t errlen)
{
    char lsn[PGCDC_LSN_BUFLEN], part[32];
    int rc = copy_put(cp, tg, commit, err, errlen);
    cp->active = false;
    if (rc < 0)
        return rc;
    if (PQputCopyEnd(tg->conn, NULL) != 1)
        return copy_failed(tg, NULL, "COPY", commit, err, errlen);
    PGresult *res = PQgetResult(tg->conn);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        char what[600];
        snprintf(what, sizeof(what), "COPY of snapshot rows into %s.%s",
                 tg->tables[cp->table].t.schema, tg->tables[cp->table].t.name);
        return copy_failed(tg, res, what, commit, err, errlen);
    }
    PQclear(res);
    while ((res = PQgetResult(tg->conn)))
        PQclear(res);
    snprintf(part, sizeof(part), "%" PRId64, partial);
    const char *pv[2] = {pgcdc_lsn_format(commit, lsn), part};
    res = PQexecParams(tg->conn, PGCDC_REPLAY_POSITION_SQL, 2, NULL, pv, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return copy_failed(tg, res, "recording the position", commit, err, errlen);
    PQclear(res);
    res = PQexec(tg->conn, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return copy_failed(tg, res, "COMMIT", commit, err, errlen);
    PQclear(res);
    tg->done.commit = commit;
    tg->done.partial = partial;
    tg->rows_total += (uint64_t)cp->rows;
    cp->rows = 0;
    return PGCDC_OK;
}

int64_t pgcdc_replay_copy_count(struct pgcdc_replay_target *tg, int ti, int64_t limit, char *err,
                                size_t errlen)
{
    struct pgcdc_buf q = {0};
    char lim[32];
    int64_t n = PGCDC_ERR;
    snprintf(lim, sizeof(lim), "%" PRId64, limit + 1);
    const char *pv[1] = {lim};
    if (pgcdc_buf_append_str(&q, "SELECT count(*) FROM (SELECT 1 FROM ") < 0 ||
        pgcdc_replay_quote_ident(&q, tg->tables[ti].t.schema) < 0 ||
        pgcdc_buf_append_char(&q, '.') < 0 ||
        pgcdc_replay_quote_ident(&q, tg->tables[ti].t.name) < 0 ||
        pgcdc_buf_append_str(&q, " LIMIT $1::bigint) s") < 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    PGresult *res = PQexecParams(tg->meta, q.data, 1, NULL, pv, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        n = copy_failed(tg, res, "counting a table's rows", 0, err, errlen);
        tg->failed = false;
        goto out;
    }
    n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
out:
    pgcdc_buf_free(&q);
    return n;
}
