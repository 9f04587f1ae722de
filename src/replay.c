/*
 * replay.c — `pgcdc replay`: a file-sink directory -> a target database.
 *
 * Reading. Segments are taken in name order: a closed "*.jsonl" entirely, the open
 * "*.jsonl.open" only up to the offset <dir>/.pgcdc-position gives for it (that prefix holds
 * whole, durable transactions). So every stretch of input ends at a transaction boundary.
 *
 * Applying. Events of one source transaction are consecutive and share commit_lsn. Whole
 * transactions are grouped into one target transaction of about batch_rows rows:
 *     BEGIN; <one statement per event>...; <upsert pgcdc.replay_position>; COMMIT; Sync
 * all sent through libpq's pipeline mode, so the next statements travel while the server
 * works on the previous ones (a bounded window of commands is in flight). Values travel
 * as text parameters with unspecified types: the target column's input function parses
 * the exact text the source printed. Statements are prepared once per distinct SQL text.
 * When the session may set session_replication_role = replica (no triggers, no foreign-key
 * checks, as PostgreSQL's own apply worker), a batch's changes wait in per-table queues and
 * go out table by table as multi-row statements: the order of tables inside one target
 * transaction cannot be observed, and within a table source order is kept (see
 * flush_queues for what may share a statement).
 *
 * Resuming. pgcdc.replay_position holds the commit_lsn of the last applied transaction,
 * written in the same target transaction as its changes, so after a kill at any moment
 * transactions at or before it are skipped and the rest applied: nothing twice, nothing
 * lost. The snapshot (one huge transaction whose rows all share one commit_lsn) is the one
 * transaction applied in pieces: partial_events counts how many of its rows are in.
 *
 * Errors. Any statement error in a pipelined batch aborts the batch (the connection is
 * dropped: the server rolls back). Replay then reconnects and re-applies from the recorded
 * position one source transaction per target transaction, without pipelining, up to the
 * failing transaction, which fails again, now with its event in hand: the message names
 * table, column and LSN, and nothing of that transaction is left applied. A lost
 * connection is retried with capped exponential backoff.
 */
#include "pgcdc/replay.h"

#include "pgcdc/json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pgcdc/config.h"
#include "pgcdc/decode.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"

/* ------------------------------------------------------------------------------------ */
/* Event lines, read with the raw-token scanner of json.h: values stay raw tokens. */

/* A row object {"a":1,...} into p->cols[which], or null. */
static int scan_row(struct pgcdc_json_scan *s, struct pgcdc_replay_parser *p, int which, bool *present,
                    size_t *count)
{
    pgcdc_json_skip_ws(s);
    if (s->end - s->p >= 4 && memcmp(s->p, "null", 4) == 0) {
        s->p += 4;
        *present = false;
        *count = 0;
        return PGCDC_OK;
    }
    if (pgcdc_json_expect(s, '{') < 0)
        return PGCDC_ERR;
    size_t n = 0;
    if (!pgcdc_json_accept(s, '}')) {
        for (;;) {
            if (n == p->cap[which]) {
                size_t cap = p->cap[which] ? p->cap[which] * 2 : 16;
                struct pgcdc_replay_col *c = realloc(p->cols[which], cap * sizeof(*c));
                if (!c)
                    return pgcdc_json_fail(s, "out of memory");
                p->cols[which] = c;
                p->cap[which] = cap;
            }
            struct pgcdc_replay_col *c = &p->cols[which][n];
            if (pgcdc_json_string(s, &c->name) < 0 || pgcdc_json_expect(s, ':') < 0 || pgcdc_json_value(s, &c->value) < 0)
                return PGCDC_ERR;
            n++;
            if (pgcdc_json_accept(s, ','))
                continue;
            if (pgcdc_json_expect(s, '}') < 0)
                return PGCDC_ERR;
            break;
        }
    }
    *present = true;
    *count = n;
    return PGCDC_OK;
}

static int scan_source(struct pgcdc_json_scan *s, struct pgcdc_replay_event *ev, bool *have_commit)
{
    if (pgcdc_json_expect(s, '{') < 0)
        return PGCDC_ERR;
    if (pgcdc_json_accept(s, '}'))
        return PGCDC_OK;
    for (;;) {
        struct pgcdc_span k = {0}, v = {0};
        if (pgcdc_json_string(s, &k) < 0 || pgcdc_json_expect(s, ':') < 0 || pgcdc_json_value(s, &v) < 0)
            return PGCDC_ERR;
        if (pgcdc_json_key_is(k, "schema"))
            ev->schema = v;
        else if (pgcdc_json_key_is(k, "table"))
            ev->table = v;
        else if (pgcdc_json_key_is(k, "lsn")) {
            if (pgcdc_json_u64(v, &ev->lsn) < 0)
                return pgcdc_json_fail(s, "source.lsn is not an integer");
        } else if (pgcdc_json_key_is(k, "commit_lsn")) {
            if (pgcdc_json_u64(v, &ev->commit_lsn) < 0)
                return pgcdc_json_fail(s, "source.commit_lsn is not an integer");
            *have_commit = true;
        } else if (pgcdc_json_key_is(k, "snapshot")) {
            ev->snapshot = pgcdc_json_tok_is(v, "\"true\"") || pgcdc_json_tok_is(v, "\"last\"");
        }
        if (pgcdc_json_accept(s, ','))
            continue;
        return pgcdc_json_expect(s, '}');
    }
}

void pgcdc_replay_parser_init(struct pgcdc_replay_parser *p)
{
    memset(p, 0, sizeof(*p));
}

void pgcdc_replay_parser_free(struct pgcdc_replay_parser *p)
{
    free(p->cols[0]);
    free(p->cols[1]);
    memset(p, 0, sizeof(*p));
}

int pgcdc_replay_parse(struct pgcdc_replay_parser *p, const char *line, size_t len,
                       struct pgcdc_replay_event *ev, char *err, size_t errlen)
{
    struct pgcdc_json_scan s = {line, line + len, line, "event", err, errlen};
    bool have_commit = false, have_source = false;
    memset(ev, 0, sizeof(*ev));
    if (pgcdc_json_expect(&s, '{') < 0)
        return PGCDC_ERR;
    if (!pgcdc_json_accept(&s, '}')) {
        for (;;) {
            struct pgcdc_span k = {0}, v = {0};
            if (pgcdc_json_string(&s, &k) < 0 || pgcdc_json_expect(&s, ':') < 0)
                return PGCDC_ERR;
            if (pgcdc_json_key_is(k, "before")) {
                if (scan_row(&s, p, 0, &ev->has_before, &ev->nbefore) < 0)
                    return PGCDC_ERR;
            } else if (pgcdc_json_key_is(k, "after")) {
                if (scan_row(&s, p, 1, &ev->has_after, &ev->nafter) < 0)
                    return PGCDC_ERR;
            } else if (pgcdc_json_key_is(k, "source")) {
                if (scan_source(&s, ev, &have_commit) < 0)
                    return PGCDC_ERR;
                have_source = true;
            } else {
                if (pgcdc_json_value(&s, &v) < 0)
                    return PGCDC_ERR;
                if (pgcdc_json_key_is(k, "op")) {
                    if (v.len != 3 || v.p[0] != '"' || !strchr("cudrt", v.p[1]))
                        return pgcdc_json_fail(&s, "op is not one of c, u, d, r, t");
                    ev->op = v.p[1];
                }
            }
            if (pgcdc_json_accept(&s, ','))
                continue;
            if (pgcdc_json_expect(&s, '}') < 0)
                return PGCDC_ERR;
            break;
        }
    }
    ev->before = p->cols[0];
    ev->after = p->cols[1];
    if (!ev->op)
        return pgcdc_json_fail(&s, "no op");
    if (!have_source || !have_commit || ev->schema.len < 2 || ev->table.len < 2 ||
        ev->schema.p[0] != '"' || ev->table.p[0] != '"')
        return pgcdc_json_fail(&s, "no source.schema, source.table or source.commit_lsn");
    if ((ev->op == 'c' || ev->op == 'r' || ev->op == 'u') && !ev->has_after)
        return pgcdc_json_fail(&s, "insert or update without \"after\"");
    if (ev->op == 'd' && !ev->has_before)
        return pgcdc_json_fail(&s, "delete without \"before\"");
    return PGCDC_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Values and statements */

int pgcdc_replay_token_text(struct pgcdc_span tok, struct pgcdc_buf *out, bool *is_null)
{
    *is_null = false;
    if (tok.len == 0)
        return PGCDC_ERR;
    switch (tok.p[0]) {
    case '"': {
        /* Unescaping never lengthens: \uXXXX (6 bytes) is at most 3 bytes of UTF-8. */
        if (pgcdc_buf_reserve(out, tok.len + 1) < 0)
            return PGCDC_ERR;
        int n = pgcdc_json_unescape(tok, out->data + out->len, tok.len + 1);
        if (n < 0)
            return PGCDC_ERR;
        out->len += (size_t)n + 1; /* keep the NUL: the value is a C string in place */
        out->data[out->len] = '\0';
        return PGCDC_OK;
    }
    case 'n':
        if (!pgcdc_json_tok_is(tok, "null"))
            return PGCDC_ERR;
        *is_null = true;
        return PGCDC_OK;
    case 't':
        if (!pgcdc_json_tok_is(tok, "true"))
            return PGCDC_ERR;
        return pgcdc_buf_append(out, "t", 2);
    case 'f':
        if (!pgcdc_json_tok_is(tok, "false"))
            return PGCDC_ERR;
        return pgcdc_buf_append(out, "f", 2);
    default:
        /* A number: its digits, exactly as written. (Objects and arrays never occur:
         * json values travel as strings; pass them through as their text.) */
        if (pgcdc_buf_append(out, tok.p, tok.len) < 0)
            return PGCDC_ERR;
        return pgcdc_buf_append_char(out, '\0') < 0 ? PGCDC_ERR : PGCDC_OK;
    }
}

int pgcdc_replay_quote_ident(struct pgcdc_buf *b, const char *name)
{
    if (pgcdc_buf_append_char(b, '"') < 0)
        return PGCDC_ERR;
    for (const char *p = name; *p; p++) {
        if (*p == '"' && pgcdc_buf_append_char(b, '"') < 0)
            return PGCDC_ERR;
        if (pgcdc_buf_append_char(b, *p) < 0)
            return PGCDC_ERR;
    }
    return pgcdc_buf_append_char(b, '"');
}

void pgcdc_replay_stmt_free(struct pgcdc_replay_stmt *st)
{
    pgcdc_buf_free(&st->sql);
    pgcdc_buf_free(&st->vals);
    free(st->off);
    free(st->params);
    free(st->param_col);
    memset(st, 0, sizeof(*st));
}

/* Index of the target column an event's name (raw JSON string) refers to, or -1. */
static int find_target_col(const struct pgcdc_replay_table *t, struct pgcdc_span name)
{
    char small[256];
    const char *n = name.p + 1;
    size_t len = name.len - 2;
    if (memchr(n, '\\', len)) {
        int u = pgcdc_json_unescape(name, small, sizeof(small));
        if (u < 0)
            return -1;
        n = small;
        len = (size_t)u;
    }
    for (size_t i = 0; i < t->ncols; i++)
        if (strlen(t->cols[i].name) == len && memcmp(t->cols[i].name, n, len) == 0)
            return (int)i;
    return -1;
}

/* Event column's name as text, for messages. */
static void col_name_text(struct pgcdc_span name, char *out, size_t outlen)
{
    if (pgcdc_json_unescape(name, out, outlen) < 0)
        snprintf(out, outlen, "%.*s", (int)(name.len > 2 ? name.len - 2 : 0), name.p + 1);
}

static const struct pgcdc_replay_col *find_event_col(const struct pgcdc_replay_col *cols, size_t n,
                                                     const struct pgcdc_replay_table *t,
                                                     int target_idx)
{
    for (size_t i = 0; i < n; i++)
        if (find_target_col(t, cols[i].name) == target_idx)
            return &cols[i];
    return NULL;
}

static int add_param(struct pgcdc_replay_stmt *st, struct pgcdc_span tok, int col)
{
    if (st->nparams == st->cap) {
        int cap = st->cap ? st->cap * 2 : 32;
        size_t *off = realloc(st->off, (size_t)cap * sizeof(*off));
        if (!off)
            return PGCDC_ERR;
        st->off = off;
        const char **pp = realloc(st->params, (size_t)cap * sizeof(*pp));
        if (!pp)
            return PGCDC_ERR;
        st->params = pp;
        int *pc = realloc(st->param_col, (size_t)cap * sizeof(*pc));
        if (!pc)
            return PGCDC_ERR;
        st->param_col = pc;
        st->cap = cap;
    }
    bool is_null;
    size_t at = st->vals.len;
    if (pgcdc_replay_token_text(tok, &st->vals, &is_null) < 0)
        return PGCDC_ERR;
    st->off[st->nparams] = is_null ? (size_t)-1 : at;
    st->param_col[st->nparams] = col;
    st->nparams++;
    return PGCDC_OK;
}

/* "$n" for the parameter just added. */
static int append_param_ref(struct pgcdc_replay_stmt *st)
{
    return pgcdc_buf_append_char(&st->sql, '$') < 0 ||
                   pgcdc_buf_append_u64(&st->sql, (uint64_t)st->nparams) < 0
               ? PGCDC_ERR
               : PGCDC_OK;
}

static int append_table(struct pgcdc_buf *b, const struct pgcdc_replay_table *t)
{
    if (pgcdc_replay_quote_ident(b, t->schema) < 0 || pgcdc_buf_append_char(b, '.') < 0)
        return PGCDC_ERR;
    return pgcdc_replay_quote_ident(b, t->name);
}

#define SQL(lit) pgcdc_buf_append(&st->sql, (lit), sizeof(lit) - 1)

/*
 * Every event column must exist on the target: a value with nowhere to go is lost data.
 * Returns the first missing one's index in *bad, or -1.
 */
static void check_cols(const struct pgcdc_replay_table *t, const struct pgcdc_replay_col *cols,
                       size_t n, int *map, ptrdiff_t *bad)
{
    *bad = -1;
    for (size_t i = 0; i < n; i++) {
        map[i] = find_target_col(t, cols[i].name);
        if (map[i] < 0 && *bad < 0)
            *bad = (ptrdiff_t)i;
    }
}

/*
 * INSERT of nrows rows into the columns cols[0..ncols) (target column indexes), parameters
 * row after row; on a table with a primary key an upsert that sets the other columns.
 */
static int insert_sql(struct pgcdc_buf *b, const struct pgcdc_replay_table *t, const int *cols,
                      int ncols, int nrows)
{
#define B(lit) pgcdc_buf_append(b, (lit), sizeof(lit) - 1)
    if (B("INSERT INTO ") < 0 || append_table(b, t) < 0)
        return PGCDC_ERR;
    if (ncols == 0)
        return B(" DEFAULT VALUES");
    for (int i = 0; i < ncols; i++)
        if (pgcdc_buf_append_str(b, i ? ", " : " (") < 0 ||
            pgcdc_replay_quote_ident(b, t->cols[cols[i]].name) < 0)
            return PGCDC_ERR;
    /* Identity columns GENERATED ALWAYS take the source's values too. */
    if (B(") OVERRIDING SYSTEM VALUE VALUES ") < 0)
        return PGCDC_ERR;
    int n = 0;
    for (int r = 0; r < nrows; r++) {
        if (pgcdc_buf_append_str(b, r ? ", (" : "(") < 0)
            return PGCDC_ERR;
        for (int i = 0; i < ncols; i++)
            if ((i && B(", ") < 0) || pgcdc_buf_append_char(b, '$') < 0 ||
                pgcdc_buf_append_u64(b, (uint64_t)++n) < 0)
                return PGCDC_ERR;
        if (pgcdc_buf_append_char(b, ')') < 0)
            return PGCDC_ERR;
    }
    if (t->npk == 0)
        return PGCDC_OK;
    if (B(" ON CONFLICT (") < 0)
        return PGCDC_ERR;
    int k = 0;
    for (size_t c = 0; c < t->ncols; c++) {
        if (!t->cols[c].pk)
            continue;
        if ((k++ && B(", ") < 0) || pgcdc_replay_quote_ident(b, t->cols[c].name) < 0)
            return PGCDC_ERR;
    }
    int set = 0;
    for (int i = 0; i < ncols; i++) {
        const struct pgcdc_replay_column *c = &t->cols[cols[i]];
        if (c->pk)
            continue;
        if (pgcdc_buf_append_str(b, set++ ? ", " : ") DO UPDATE SET ") < 0 ||
            pgcdc_replay_quote_ident(b, c->name) < 0 || B(" = EXCLUDED.") < 0 ||
            pgcdc_replay_quote_ident(b, c->name) < 0)
            return PGCDC_ERR;
    }
    return set ? PGCDC_OK : B(") DO NOTHING");
#undef B
}

static int build_insert(struct pgcdc_replay_stmt *st, const struct pgcdc_replay_table *t,
                        const struct pgcdc_replay_event *ev, const int *map)
{
    for (size_t i = 0; i < ev->nafter; i++)
        if (!t->cols[map[i]].generated && add_param(st, ev->after[i].value, map[i]) < 0)
            return PGCDC_ERR;
    st->nset = st->nparams;
    st->groupable = st->nparams > 0;
    return insert_sql(&st->sql, t, st->param_col, st->nparams, 1);
}

/*
 * WHERE for updates and deletes. With a primary key: each key column equal to its value
 * in "before", else in "after". Without: one row whose every "before" column has the same
 * text form (IS NOT DISTINCT FROM, so NULLs match), addressed by ctid.
 */
static int build_where(struct pgcdc_replay_stmt *st, const struct pgcdc_replay_table *t,
                       const struct pgcdc_replay_event *ev, const int *bmap,
                       const struct pgcdc_replay_col **keyv, char *err, size_t errlen)
{
    if (t->npk > 0) {
        int k = 0;
        for (size_t c = 0; c < t->ncols; c++) {
            if (!t->cols[c].pk)
                continue;
            if (pgcdc_buf_append_str(&st->sql, k++ ? " AND " : " WHERE ") < 0 ||
                pgcdc_replay_quote_ident(&st->sql, t->cols[c].name) < 0 || SQL(" = ") < 0 ||
                add_param(st, keyv[c]->value, (int)c) < 0 || append_param_ref(st) < 0)
                return PGCDC_ERR;
        }
        return PGCDC_OK;
    }
    if (!ev->has_before || ev->nbefore == 0) {
        snprintf(err, errlen,
                 "target table %s.%s has no primary key and the %s event carries no old row to "
                 "find it by: give the target table the source's primary key, or set REPLICA "
                 "IDENTITY FULL on the source table",
                 t->schema, t->name, ev->op == 'u' ? "update" : "delete");
        return PGCDC_ERR;
    }
    if (SQL(" WHERE ctid = (SELECT ctid FROM ONLY ") < 0 || append_table(&st->sql, t) < 0)
        return PGCDC_ERR;
    for (size_t i = 0; i < ev->nbefore; i++) {
        if (pgcdc_buf_append_str(&st->sql, i ? " AND " : " WHERE ") < 0 ||
            pgcdc_replay_quote_ident(&st->sql, t->cols[bmap[i]].name) < 0 ||
            SQL("::text IS NOT DISTINCT FROM ") < 0 ||
            add_param(st, ev->before[i].value, bmap[i]) < 0 || append_param_ref(st) < 0)
            return PGCDC_ERR;
    }
    return SQL(" LIMIT 1)");
}

/* Key values: from "before" (the old key), else "after". NULL in keyv[c] when absent. */
static int key_values(const struct pgcdc_replay_table *t, const struct pgcdc_replay_event *ev,
                      const struct pgcdc_replay_col **keyv, char *err, size_t errlen)
{
    for (size_t c = 0; c < t->ncols; c++) {
        keyv[c] = NULL;
        if (!t->cols[c].pk)
            continue;
        if (ev->has_before)
            keyv[c] = find_event_col(ev->before, ev->nbefore, t, (int)c);
        if (!keyv[c] && ev->has_after)
            keyv[c] = find_event_col(ev->after, ev->nafter, t, (int)c);
        if (!keyv[c] || pgcdc_json_tok_is(keyv[c]->value, "null")) {
            snprintf(err, errlen,
                     "the %s event for %s.%s carries no value for the target's primary-key "
                     "column \"%s\": the target's primary key must be the source's",
                     ev->op == 'u'   ? "update"
                     : ev->op == 'd' ? "delete"
                                     : "insert",
                     t->schema, t->name, t->cols[c].name);
            return PGCDC_ERR;
        }
    }
    return PGCDC_OK;
}

int pgcdc_replay_build(struct pgcdc_replay_stmt *st, const struct pgcdc_replay_table *t,
                       const struct pgcdc_replay_event *ev, char *err, size_t errlen)
{
    int rc = PGCDC_ERR;
    size_t nmap = (ev->nafter > ev->nbefore ? ev->nafter : ev->nbefore) + 1;
    int *amap = calloc(nmap, sizeof(int)), *bmap = calloc(nmap, sizeof(int));
    const struct pgcdc_replay_col **keyv = calloc(t->ncols + 1, sizeof(*keyv));
    ptrdiff_t bad;
    char cname[256];

    if (errlen)
        err[0] = '\0';
    pgcdc_buf_reset(&st->sql);
    pgcdc_buf_reset(&st->vals);
    st->nparams = 0;
    st->nset = 0;
    st->op = ev->op;
    st->skip = false;
    st->groupable = false;
    if (!amap || !bmap || !keyv) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (ev->has_after) {
        check_cols(t, ev->after, ev->nafter, amap, &bad);
        if (bad >= 0) {
            col_name_text(ev->after[bad].name, cname, sizeof(cname));
            snprintf(err, errlen, "target table %s.%s has no column \"%s\"", t->schema, t->name,
                     cname);
            goto out;
        }
    }
    if (ev->has_before) {
        check_cols(t, ev->before, ev->nbefore, bmap, &bad);
        if (bad >= 0) {
            col_name_text(ev->before[bad].name, cname, sizeof(cname));
            snprintf(err, errlen, "target table %s.%s has no column \"%s\"", t->schema, t->name,
                     cname);
            goto out;
        }
    }
    switch (ev->op) {
    case 'c':
    case 'r':
        if (t->npk > 0 && key_values(t, ev, keyv, err, errlen) < 0)
            goto out;
        if (build_insert(st, t, ev, amap) < 0)
            goto oom;
        break;
    case 'u': {
        bool key_change = false;
        if (t->npk > 0 && key_values(t, ev, keyv, err, errlen) < 0)
            goto out;
        if (SQL("UPDATE ") < 0 || append_table(&st->sql, t) < 0)
            goto oom;
        int set = 0;
        for (size_t i = 0; i < ev->nafter; i++) {
            const struct pgcdc_replay_column *c = &t->cols[amap[i]];
            if (c->generated)
                continue;
            /* A key column keeps its value unless the key changed: nothing to write. */
            if (c->pk && keyv[amap[i]] == &ev->after[i])
                continue;
            if (c->pk && keyv[amap[i]]->value.len == ev->after[i].value.len &&
                memcmp(keyv[amap[i]]->value.p, ev->after[i].value.p, ev->after[i].value.len) == 0)
                continue;
            if (c->pk)
                key_change = true;
            if (pgcdc_buf_append_str(&st->sql, set++ ? ", " : " SET ") < 0 ||
                pgcdc_replay_quote_ident(&st->sql, c->name) < 0 || SQL(" = ") < 0 ||
                add_param(st, ev->after[i].value, amap[i]) < 0 || append_param_ref(st) < 0)
                goto oom;
        }
        if (set == 0) {
            st->skip = true; /* only unchanged TOASTed or generated columns: nothing to do */
            break;
        }
        st->nset = st->nparams;
        if (build_where(st, t, ev, bmap, keyv, err, errlen) < 0)
            goto out_or_oom;
        /* Rows of one multi-row UPDATE change in no set order: safe only when no other
         * unique index can see an intermediate state, and the key itself stays put. */
        st->groupable = t->npk > 0 && !t->other_unique && !key_change;
        break;
    }
    case 'd':
        if (t->npk > 0 && key_values(t, ev, keyv, err, errlen) < 0)
            goto out;
        if (SQL("DELETE FROM ") < 0 || append_table(&st->sql, t) < 0)
            goto oom;
        if (build_where(st, t, ev, bmap, keyv, err, errlen) < 0)
            goto out_or_oom;
        st->groupable = t->npk > 0;
        break;
    case 't':
        if (SQL("TRUNCATE ") < 0 || append_table(&st->sql, t) < 0)
            goto oom;
        break;
    default:
        snprintf(err, errlen, "unknown op '%c'", ev->op);
        goto out;
    }
    for (int i = 0; i < st->nparams; i++)
        st->params[i] = st->off[i] == (size_t)-1 ? NULL : st->vals.data + st->off[i];
    rc = PGCDC_OK;
    goto out;
out_or_oom:
    if (err[0])
        goto out;
oom:
    snprintf(err, errlen, "cannot build the statement: out of memory or a malformed value");
out:
    free(amap);
    free(bmap);
    free(keyv);
    return rc;
}

int pgcdc_replay_build_group(struct pgcdc_buf *b, const struct pgcdc_replay_table *t,
                             const struct pgcdc_replay_stmt *single, int nrows)
{
#define B(lit) pgcdc_buf_append(b, (lit), sizeof(lit) - 1)
    int np = single->nparams, n = 0;
    pgcdc_buf_reset(b);
    switch (single->op) {
    case 'c':
    case 'r':
        return insert_sql(b, t, single->param_col, np, nrows);
    case 'u':
        /* UPDATE t AS pgcdc_t SET a = pgcdc_v.c1 FROM (VALUES ($1::type, ...), ...)
         * AS pgcdc_v (c1, ...) WHERE pgcdc_t.key = pgcdc_v.cK. The casts name the type
         * without typmod: the assignment to the column applies it, as for one row. */
        if (B("UPDATE ") < 0 || append_table(b, t) < 0 || B(" AS pgcdc_t") < 0)
            return PGCDC_ERR;
        for (int i = 0; i < single->nset; i++)
            if (pgcdc_buf_append_str(b, i ? ", " : " SET ") < 0 ||
                pgcdc_replay_quote_ident(b, t->cols[single->param_col[i]].name) < 0 ||
                B(" = pgcdc_v.c") < 0 || pgcdc_buf_append_u64(b, (uint64_t)i + 1) < 0)
                return PGCDC_ERR;
        if (B(" FROM (VALUES ") < 0)
            return PGCDC_ERR;
        for (int r = 0; r < nrows; r++) {
            if (pgcdc_buf_append_str(b, r ? ", (" : "(") < 0)
                return PGCDC_ERR;
            for (int i = 0; i < np; i++)
                if ((i && B(", ") < 0) || pgcdc_buf_append_char(b, '$') < 0 ||
                    pgcdc_buf_append_u64(b, (uint64_t)++n) < 0 || B("::") < 0 ||
                    pgcdc_buf_append_str(b, t->cols[single->param_col[i]].cast) < 0)
                    return PGCDC_ERR;
            if (pgcdc_buf_append_char(b, ')') < 0)
                return PGCDC_ERR;
        }
        if (B(") AS pgcdc_v (") < 0)
            return PGCDC_ERR;
        for (int i = 0; i < np; i++)
            if ((i && B(", ") < 0) || pgcdc_buf_append_char(b, 'c') < 0 ||
                pgcdc_buf_append_u64(b, (uint64_t)i + 1) < 0)
                return PGCDC_ERR;
        if (pgcdc_buf_append_char(b, ')') < 0)
            return PGCDC_ERR;
        for (int i = single->nset; i < np; i++)
            if (pgcdc_buf_append_str(b, i > single->nset ? " AND pgcdc_t." : " WHERE pgcdc_t.") <
                    0 ||
                pgcdc_replay_quote_ident(b, t->cols[single->param_col[i]].name) < 0 ||
                B(" = pgcdc_v.c") < 0 || pgcdc_buf_append_u64(b, (uint64_t)i + 1) < 0)
                return PGCDC_ERR;
        return PGCDC_OK;
    case 'd':
        if (B("DELETE FROM ") < 0 || append_table(b, t) < 0 || B(" WHERE ") < 0)
            return PGCDC_ERR;
        if (np > 1 && pgcdc_buf_append_char(b, '(') < 0)
            return PGCDC_ERR;
        for (int i = 0; i < np; i++)
            if ((i && B(", ") < 0) ||
                pgcdc_replay_quote_ident(b, t->cols[single->param_col[i]].name) < 0)
                return PGCDC_ERR;
        if (pgcdc_buf_append_str(b, np > 1 ? ") IN (" : " IN (") < 0)
            return PGCDC_ERR;
        for (int r = 0; r < nrows; r++) {
            if (r && B(", ") < 0)
                return PGCDC_ERR;
            if (np > 1 && pgcdc_buf_append_char(b, '(') < 0)
                return PGCDC_ERR;
            for (int i = 0; i < np; i++)
                if ((i && B(", ") < 0) || pgcdc_buf_append_char(b, '$') < 0 ||
                    pgcdc_buf_append_u64(b, (uint64_t)++n) < 0)
                    return PGCDC_ERR;
            if (np > 1 && pgcdc_buf_append_char(b, ')') < 0)
                return PGCDC_ERR;
        }
        return pgcdc_buf_append_char(b, ')');
    default:
        return PGCDC_ERR;
    }
#undef B
}

#undef SQL

/* ------------------------------------------------------------------------------------ */
/* Reading the directory */

#define POSITION_FILE ".pgcdc-position"
#define OPEN_SUFFIX ".open"
#define READ_CHUNK (1u << 20)
#define SEG_NAME_MAX 256

struct reader {
    const char *dir;
    char cur[SEG_NAME_MAX];  /* closed name ("….jsonl") of the segment being read; "" at first */
    char prev[SEG_NAME_MAX]; /* the one before it, read to its end */
    bool cur_closed;         /* cur has its final name: read it to its end */
    uint64_t cur_size;       /* its size, when closed */
    uint64_t off;            /* bytes of cur read into buf */
    struct pgcdc_buf buf;    /* bytes read and not yet handed out as lines */
    size_t bpos;
    /* .pgcdc-position as last read */
    bool have_pos;
    uint64_t pos_lsn;           /* lsn=, or confirmed= when that is further: nothing before it is
                                 * missing from the files up to segment/offset */
    char pos_seg[SEG_NAME_MAX]; /* as written: the open name, or "" */
    uint64_t pos_off;
    uint64_t skip_lsn; /* whole segments below this commit LSN may be passed over */
};

/* Re-read <dir>/.pgcdc-position; absent or unreadable leaves have_pos false. */
static void read_position(struct reader *r)
{
    char path[4096], line[512];
    snprintf(path, sizeof(path), "%s/" POSITION_FILE, r->dir);
    FILE *f = fopen(path, "r");
    r->have_pos = false;
    if (!f)
        return;
    bool lsn_ok = false;
    uint64_t confirmed = 0;
    r->pos_seg[0] = '\0';
    r->pos_off = 0;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strncmp(line, "lsn=", 4) == 0)
            lsn_ok = pgcdc_lsn_parse_str(line + 4, &r->pos_lsn) == 0;
        else if (strncmp(line, "segment=", 8) == 0 && strlen(line + 8) < sizeof(r->pos_seg))
            memcpy(r->pos_seg, line + 8, strlen(line + 8) + 1);
        else if (strncmp(line, "offset=", 7) == 0)
            r->pos_off = strtoull(line + 7, NULL, 10);
        else if (strncmp(line, "confirmed=", 10) == 0 &&
                 pgcdc_lsn_parse_str(line + 10, &confirmed) < 0)
            confirmed = 0;
    }
    fclose(f);
    if (lsn_ok && confirmed > r->pos_lsn)
        r->pos_lsn = confirmed;
    r->have_pos = lsn_ok;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* First commit LSN from "<seq>-<16 hex>.jsonl"; 0 when the name has another shape. */
static uint64_t name_lsn(const char *n)
{
    const char *dash = strchr(n, '-');
    if (!dash || strlen(dash) < 17)
        return 0;
    uint64_t v = 0;
    for (int i = 1; i <= 16; i++) {
        char c = dash[i];
        int h = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (h < 0)
            return 0;
        v = v << 4 | (uint64_t)h;
    }
    return v;
}

/*
 * Move to the segment after cur. Returns 1 when there is one, 0 when none yet, <0 on error.
 * A segment whose successor starts at or below skip_lsn holds only transactions already
 * applied (commit LSNs increase and no transaction spans segments): it is not read.
 */
static int next_segment(struct reader *r, char *err, size_t errlen)
{
    DIR *d = opendir(r->dir);
    if (!d) {
        snprintf(err, errlen, "cannot list --input %s: %s", r->dir, strerror(errno));
        return PGCDC_ERR;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        size_t base = len;
        if (len > 11 && strcmp(de->d_name + len - 11, ".jsonl.open") == 0)
            base = len - 5;
        else if (!(len > 6 && strcmp(de->d_name + len - 6, ".jsonl") == 0))
            continue;
        if (base >= SEG_NAME_MAX)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(names, cap * sizeof(*nn));
            if (!nn) {
                rc = PGCDC_ERR;
                break;
            }
            names = nn;
        }
        if (!(names[n] = strndup(de->d_name, base))) {
            rc = PGCDC_ERR;
            break;
        }
        n++;
    }
    closedir(d);
    if (rc < 0) {
        snprintf(err, errlen, "out of memory listing %s", r->dir);
        goto out;
    }
    qsort(names, n, sizeof(*names), cmp_names);
    size_t j = 0;
    while (j < n && strcmp(names[j], r->cur) <= 0)
        j++;
    while (j + 1 < n && r->skip_lsn && name_lsn(names[j + 1]) &&
           name_lsn(names[j + 1]) <= r->skip_lsn)
        j++;
    if (j < n) {
        memcpy(r->prev, r->cur, sizeof(r->prev));
        snprintf(r->cur, sizeof(r->cur), "%s", names[j]);
        r->off = 0;
        r->cur_closed = false;
        rc = 1;
    }
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* Open cur under its closed name, else its open name. Returns fd or -1 (errno). */
static int open_current(struct reader *r, bool *closed)
{
    char path[4096];
    for (int attempt = 0; attempt < 2; attempt++) {
        snprintf(path, sizeof(path), "%s/%s", r->dir, r->cur);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            *closed = true;
            return fd;
        }
        if (errno != ENOENT)
            return -1;
        snprintf(path, sizeof(path), "%s/%s" OPEN_SUFFIX, r->dir, r->cur);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            *closed = false;
            return fd;
        }
        if (errno != ENOENT)
            return -1;
        /* Renamed from .open to closed between the two opens: look again. */
    }
    errno = ENOENT;
    return -1;
}

/*
 * Read more complete data into buf. Returns 1 when bytes were added, 0 when no more
 * complete data is available now, <0 on error.
 */
static int reader_fill(struct reader *r, char *err, size_t errlen)
{
    read_position(r);
    for (;;) {
        if (r->cur[0] == '\0' || (r->cur_closed && r->off >= r->cur_size)) {
            if (r->cur[0] && r->bpos < r->buf.len) {
                snprintf(err, errlen, "segment %s/%s ends in the middle of a line", r->dir, r->cur);
                return PGCDC_ERR;
            }
            int rc = next_segment(r, err, errlen);
            if (rc <= 0)
                return rc;
        }
        bool closed;
        int fd = open_current(r, &closed);
        if (fd < 0 && errno == ENOENT && r->off == 0) {
            /* An open segment no checkpoint had vouched for yet, removed by `pgcdc run`'s
             * recovery after a crash: its transactions come again, in a new segment. */
            memcpy(r->cur, r->prev, sizeof(r->cur));
            r->cur_closed = true;
            r->off = r->cur_size = 0;
            return 0;
        }
        if (fd < 0) {
            snprintf(err, errlen, "cannot open segment %s/%s: %s", r->dir, r->cur, strerror(errno));
            return PGCDC_ERR;
        }
        uint64_t limit = r->off;
        if (closed) {
            struct stat stt;
            if (fstat(fd, &stt) < 0) {
                close(fd);
                snprintf(err, errlen, "cannot stat %s/%s: %s", r->dir, r->cur, strerror(errno));
                return PGCDC_ERR;
            }
            r->cur_closed = true;
            r->cur_size = limit = (uint64_t)stt.st_size;
        } else if (r->have_pos && strncmp(r->pos_seg, r->cur, strlen(r->cur)) == 0 &&
                   strcmp(r->pos_seg + strlen(r->cur), OPEN_SUFFIX) == 0) {
            /* Only the prefix the position vouches for: whole, durable transactions. */
            limit = r->pos_off > r->off ? r->pos_off : r->off;
        }
        if (r->off >= limit) {
            close(fd);
            if (closed)
                continue; /* read to its end: on to the next segment */
            return 0;
        }
        size_t want = limit - r->off > READ_CHUNK ? READ_CHUNK : (size_t)(limit - r->off);
        /* Drop the lines already handed out before growing the buffer. */
        if (r->bpos > 0) {
            memmove(r->buf.data, r->buf.data + r->bpos, r->buf.len - r->bpos);
            r->buf.len -= r->bpos;
            r->bpos = 0;
        }
        if (pgcdc_buf_reserve(&r->buf, want) < 0) {
            close(fd);
            snprintf(err, errlen, "out of memory reading %s/%s", r->dir, r->cur);
            return PGCDC_ERR;
        }
        ssize_t got = pread(fd, r->buf.data + r->buf.len, want, (off_t)r->off);
        int e = errno;
        close(fd);
        if (got < 0) {
            snprintf(err, errlen, "cannot read %s/%s: %s", r->dir, r->cur, strerror(e));
            return PGCDC_ERR;
        }
        if (got == 0) {
            if (closed) {
                r->cur_size = r->off; /* shorter than it was: treat what we read as all */
                continue;
            }
            return 0;
        }
        r->buf.len += (size_t)got;
        r->buf.data[r->buf.len] = '\0';
        r->off += (uint64_t)got;
        return 1;
    }
}

/* The next complete line (without its newline). 1: a line; 0: none available now; <0. */
static int reader_next(struct reader *r, const char **line, size_t *len, char *err, size_t errlen)
{
    for (;;) {
        if (r->bpos < r->buf.len) {
            char *s = r->buf.data + r->bpos;
            char *nl = memchr(s, '\n', r->buf.len - r->bpos);
            if (nl) {
                *line = s;
                *len = (size_t)(nl - s);
                r->bpos += *len + 1;
                return 1;
            }
        }
        int rc = reader_fill(r, err, errlen);
        if (rc <= 0)
            return rc;
    }
}

/*
 * Whether everything up to the position file's LSN has been read: the position names no
 * open segment (all of it is in closed segments, which we have read: the directory was
 * listed after the position was read), or we are at or past its offset.
 */
static bool reader_at_position(const struct reader *r)
{
    if (!r->have_pos)
        return false;
    if (r->pos_seg[0] == '\0')
        return true;
    size_t n = strlen(r->cur);
    int c = strncmp(r->pos_seg, r->cur, n);
    if (c == 0 && strcmp(r->pos_seg + n, OPEN_SUFFIX) == 0)
        return r->off >= r->pos_off && r->bpos >= r->buf.len;
    return strcmp(r->pos_seg, r->cur) < 0 && r->cur[0] != '\0';
}

/* ------------------------------------------------------------------------------------ */
/* The target */

#define WINDOW 2048                    /* commands in flight in the pipeline, at most */
#define STMT_CACHE_MAX 4096            /* prepared statements per connection, at most */
#define LOCK_KEY "7378745184117325824" /* pg_advisory_lock key: one replay per target */
#define PROGRESS_EVERY_MS 10000
#define ANNOUNCE_EVERY_MS 1000

enum cmd_kind { CMD_BEGIN, CMD_PREPARE, CMD_STMT, CMD_POSITION, CMD_COMMIT, CMD_SYNC };

/* What a command in flight was for: enough to name it when it fails. */
struct cmd {
    enum cmd_kind kind;
    char op;
    int table; /* index into tables, -1 none */
    uint64_t lsn, commit_lsn;
    int expect; /* CMD_STMT updates: rows it should change */
    /* CMD_COMMIT: the position it records */
    uint64_t pos_commit;
    int64_t pos_partial;
    uint64_t rows, txns;
};

struct stmt_entry {
    char *sql;
    uint64_t hash;
    int id;
};

/* One form of statement for a table: the single-row SQL and what its parameters are. */
struct shape {
    char *sql;
    int *param_col;
    int nparams, nset;
    char op;
    bool groupable;
};

/* A change waiting in its table's queue: its shape and parameters (in r->voff). */
struct item {
    int shape;
    size_t v0;
    uint64_t keyhash;
    uint64_t lsn, commit_lsn;
};

struct rtable {
    char *raw_schema, *raw_table; /* the JSON strings as events carry them */
    size_t raw_schema_len, raw_table_len;
    struct pgcdc_replay_table t;
    struct shape *shapes;
    size_t nshapes;
    int last_shape;
    struct item *q; /* changes of the open batch not yet sent, in source order */
    size_t qn, qcap;
    bool queued; /* listed in r->order */
};

enum { R_DONE = 1, R_CAREFUL = 2 }; /* session outcomes besides errors */


struct replay {
    const struct pgcdc_replay_opts *o;
    char target_red[1024];
    PGconn *conn, *meta;
    bool pipelined;
    bool ever_connected;

    struct stmt_entry *sc;
    size_t sc_cap, sc_n;
    int sc_next_id;

    struct rtable *tables;
    size_t ntables;

    struct reader rd;
    struct pgcdc_replay_parser parser;
    struct pgcdc_replay_stmt st;

    /* Multi-row statements (pipelined, with session_replication_role = replica): changes
     * wait in per-table queues until the batch commits or the queues are full. */
    bool grouping;
    struct pgcdc_buf arena; /* parameter values of queued changes, NUL-terminated */
    size_t *voff;           /* offsets into arena; SIZE_MAX for NULL */
    size_t nvoff, capvoff;
    int *order; /* tables with queued changes, in the order they first got one */
    size_t norder, caporder;
    size_t pending;
    const char **gparams;
    size_t gcap;
    struct pgcdc_buf gsql;

    struct cmd *ring;
    size_t ring_head, ring_count;
    bool unflushed;
    bool failed;
    char fail_msg[2048];
    uint64_t fail_commit;

    /* What the target holds (committed), and where this session resumed. */
    uint64_t done_commit;
    int64_t done_partial;
    uint64_t pos_commit;
    int64_t pos_partial;
    uint64_t careful_until; /* re-apply one transaction at a time up to this commit LSN */

    /* The source transaction being read. */
    bool in_txn;
    uint64_t txn_commit;
    int64_t txn_events;
    bool txn_skip;
    int64_t txn_skip_n;

    /* The target transaction being built. */
    bool batch_open;
    int64_t batch_rows, batch_txns;
    bool beyond_end;

    /* Progress. */
    uint64_t rows_total, txns_total;
    uint64_t announced_rows, announced_txns;
    bool announced;
    int64_t announced_ms;
    int64_t last_progress_ms;
    uint64_t progress_rows;
    uint64_t update_misses;
};

static bool conn_lost(PGconn *c)
{
    return !c || PQstatus(c) == CONNECTION_BAD;
}

/* SQLSTATEs worth retrying after a reconnect: connection, rollbacks, shutdown, resources. */
static bool transient_state(const char *st)
{
    if (!st)
        return false;
    return strncmp(st, "08", 2) == 0 || strncmp(st, "40", 2) == 0 || strncmp(st, "57P", 3) == 0 ||
           strncmp(st, "53", 2) == 0;
}

/* The server's message for res (primary; detail when there is one), on one line. */
static void result_message(PGconn *c, PGresult *res, char *out, size_t outlen)
{
    const char *prim = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *det = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    if (prim)
        snprintf(out, outlen, "%s%s%s", prim, det ? " (" : "", det ? det : "");
    else
        snprintf(out, outlen, "%s", c ? PQerrorMessage(c) : "no connection");
    if (prim && det && strlen(out) + 2 < outlen)
        strcat(out, ")");
    pgcdc_log_one_line(out);
}

static int fail_conn(struct replay *r, PGconn *c, PGresult *res, const char *what, char *err,
                     size_t errlen)
{
    char m[768];
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    result_message(c, res, m, sizeof(m));
    snprintf(err, errlen, "%s on the target (%s): %s", what, r->target_red, m);
    PQclear(res);
    return conn_lost(c) || transient_state(st) ? PGCDC_ERR_RETRY : PGCDC_ERR;
}

static int exec_ok(struct replay *r, PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        return fail_conn(r, c, res, sql, err, errlen);
    PQclear(res);
    return PGCDC_OK;
}

static PGconn *connect_target(struct replay *r, const char *appname, char *err, size_t errlen)
{
    const char *keys[] = {"dbname", "fallback_application_name", NULL};
    const char *vals[] = {r->o->target, appname, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        char m[768];
        snprintf(m, sizeof(m), "%s", c ? PQerrorMessage(c) : "out of memory");
        pgcdc_log_one_line(m);
        snprintf(err, errlen, "cannot connect to the target (%s): %s", r->target_red, m);
        PQfinish(c);
        return NULL;
    }
    return c;
}

static void close_target(struct replay *r)
{
    PQfinish(r->conn);
    PQfinish(r->meta);
    r->conn = r->meta = NULL;
    r->ring_head = r->ring_count = 0;
    r->unflushed = false;
    /* Prepared statements and table definitions are per connection / may have changed. */
    for (size_t i = 0; i < r->sc_cap; i++) {
        free(r->sc[i].sql);
        r->sc[i].sql = NULL;
    }
    r->sc_n = 0;
    for (size_t i = 0; i < r->ntables; i++) {
        struct rtable *t = &r->tables[i];
        free(t->raw_schema);
        free(t->raw_table);
        free(t->t.schema);
        free(t->t.name);
        for (size_t c = 0; c < t->t.ncols; c++) {
            free(t->t.cols[c].name);
            free(t->t.cols[c].type);
            free(t->t.cols[c].cast);
        }
        free(t->t.cols);
        for (size_t k = 0; k < t->nshapes; k++) {
            free(t->shapes[k].sql);
            free(t->shapes[k].param_col);
        }
        free(t->shapes);
        free(t->q);
    }
    free(r->tables);
    r->tables = NULL;
    r->ntables = 0;
    r->norder = 0;
    r->pending = 0;
    r->nvoff = 0;
    pgcdc_buf_reset(&r->arena);
}

/* ---- prepared statements, by SQL text */

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

/* The id of sql's prepared statement; *fresh when it must be prepared first. -1: none. */
static int stmt_lookup(struct replay *r, const char *sql, size_t len, bool *fresh)
{
    uint64_t h = fnv1a(sql, len);
    *fresh = false;
    if (r->sc_cap == 0 || (r->sc_n + 1) * 2 > r->sc_cap) {
        if (r->sc_n >= STMT_CACHE_MAX)
            goto lookup_only;
        size_t ncap = r->sc_cap ? r->sc_cap * 2 : 256;
        struct stmt_entry *ne = calloc(ncap, sizeof(*ne));
        if (!ne)
            goto lookup_only;
        for (size_t i = 0; i < r->sc_cap; i++) {
            if (!r->sc[i].sql)
                continue;
            size_t k = r->sc[i].hash & (ncap - 1);
            while (ne[k].sql)
                k = (k + 1) & (ncap - 1);
            ne[k] = r->sc[i];
        }
        free(r->sc);
        r->sc = ne;
        r->sc_cap = ncap;
    }
lookup_only:
    if (r->sc_cap == 0)
        return -1;
    size_t k = h & (r->sc_cap - 1);
    while (r->sc[k].sql) {
        if (r->sc[k].hash == h && strcmp(r->sc[k].sql, sql) == 0)
            return r->sc[k].id;
        k = (k + 1) & (r->sc_cap - 1);
    }
    if (r->sc_n >= STMT_CACHE_MAX || (r->sc_n + 1) * 2 > r->sc_cap)
        return -1;
    if (!(r->sc[k].sql = strndup(sql, len)))
        return -1;
    r->sc[k].hash = h;
    r->sc[k].id = ++r->sc_next_id;
    r->sc_n++;
    *fresh = true;
    return r->sc[k].id;
}

/* ---- the target's tables */

static int load_table(struct replay *r, struct rtable *rt, char *err, size_t errlen)
{
    static const char sql[] =
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), "
        "pg_catalog.quote_ident(tn.nspname) || '.' || pg_catalog.quote_ident(ty.typname), "
        "coalesce(a.attnum = ANY (i.indkey), false), a.attgenerated <> '', "
        "EXISTS (SELECT 1 FROM pg_catalog.pg_index x WHERE x.indrelid = c.oid AND NOT "
        "x.indisprimary AND (x.indisunique OR x.indisexclusion)) "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT "
        "a.attisdropped "
        "JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid "
        "JOIN pg_catalog.pg_namespace tn ON tn.oid = ty.typnamespace "
        "LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary "
        "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p') "
        "ORDER BY a.attnum";
    const char *params[2] = {rt->t.schema, rt->t.name};
    PGresult *res = PQexecParams(r->meta, sql, 2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return fail_conn(r, r->meta, res, "cannot read the target's catalog", err, errlen);
    int n = PQntuples(res);
    rt->t.exists = n > 0;
    rt->t.cols = calloc((size_t)n + 1, sizeof(*rt->t.cols));
    if (!rt->t.cols) {
        PQclear(res);
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    for (int i = 0; i < n; i++) {
        struct pgcdc_replay_column *c = &rt->t.cols[i];
        c->name = strdup(PQgetvalue(res, i, 0));
        c->type = strdup(PQgetvalue(res, i, 1));
        c->cast = strdup(PQgetvalue(res, i, 2));
        c->pk = PQgetvalue(res, i, 3)[0] == 't';
        c->generated = PQgetvalue(res, i, 4)[0] == 't';
        rt->t.other_unique = PQgetvalue(res, i, 5)[0] == 't';
        rt->t.ncols++;
        if (c->pk)
            rt->t.npk++;
        if (!c->name || !c->type || !c->cast) {
            PQclear(res);
            snprintf(err, errlen, "out of memory");
            return PGCDC_ERR;
        }
    }
    PQclear(res);
    return PGCDC_OK;
}

static int unescape_dup(struct pgcdc_span s, char **out)
{
    *out = malloc(s.len + 1);
    if (!*out)
        return PGCDC_ERR;
    if (pgcdc_json_unescape(s, *out, s.len + 1) < 0) {
        free(*out);
        *out = NULL;
        return PGCDC_ERR;
    }
    return PGCDC_OK;
}

/* The table an event is for (index), loading its definition the first time. */
static int find_table(struct replay *r, const struct pgcdc_replay_event *ev, char *err,
                      size_t errlen)
{
    for (size_t i = 0; i < r->ntables; i++) {
        struct rtable *t = &r->tables[i];
        if (t->raw_schema_len == ev->schema.len && t->raw_table_len == ev->table.len &&
            memcmp(t->raw_table, ev->table.p, ev->table.len) == 0 &&
            memcmp(t->raw_schema, ev->schema.p, ev->schema.len) == 0)
            return (int)i;
    }
    struct rtable *nt = realloc(r->tables, (r->ntables + 1) * sizeof(*nt));
    if (!nt) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    r->tables = nt;
    struct rtable *t = &r->tables[r->ntables];
    memset(t, 0, sizeof(*t));
    t->raw_schema = strndup(ev->schema.p, ev->schema.len);
    t->raw_table = strndup(ev->table.p, ev->table.len);
    t->raw_schema_len = ev->schema.len;
    t->raw_table_len = ev->table.len;
    if (!t->raw_schema || !t->raw_table || unescape_dup(ev->schema, &t->t.schema) < 0 ||
        unescape_dup(ev->table, &t->t.name) < 0) {
        free(t->raw_schema);
        free(t->raw_table);
        free(t->t.schema);
        snprintf(err, errlen, "out of memory or a malformed table name");
        return PGCDC_ERR;
    }
    r->ntables++;
    int rc = load_table(r, t, err, errlen);
    if (rc < 0)
        return rc;
    return (int)(r->ntables - 1);
}

/* ---- commands: pipelined, or one at a time (careful mode) */

static struct cmd *ring_push(struct replay *r)
{
    struct cmd *c = &r->ring[(r->ring_head + r->ring_count) % (WINDOW + 8)];
    r->ring_count++;
    memset(c, 0, sizeof(*c));
    c->table = -1;
    return c;
}

static void describe_cmd(struct replay *r, const struct cmd *c, char *out, size_t outlen)
{
    char l1[PGCDC_LSN_BUFLEN], l2[PGCDC_LSN_BUFLEN];
    const char *what = c->op == 'c'   ? "insert into"
                       : c->op == 'r' ? "snapshot row into"
                       : c->op == 'u' ? "update of"
                       : c->op == 'd' ? "delete from"
                       : c->op == 't' ? "truncate of"
                                      : "change to";
    if (c->table >= 0)
        snprintf(out, outlen, "%s %s.%s at LSN %s (transaction %s)", what,
                 r->tables[c->table].t.schema, r->tables[c->table].t.name,
                 pgcdc_lsn_format(c->lsn, l1), pgcdc_lsn_format(c->commit_lsn, l2));
    else
        snprintf(out, outlen, "commit of the transactions up to %s",
                 pgcdc_lsn_format(c->pos_commit ? c->pos_commit : c->commit_lsn, l1));
}

static void applied(struct replay *r, const struct cmd *c)
{
    r->done_commit = c->pos_commit;
    r->done_partial = c->pos_partial;
    r->rows_total += c->rows;
    r->txns_total += c->txns;
}

/*
 * Read results until at most `keep` commands are in flight. A failed statement marks the
 * session failed (r->failed, with the message) and returns PGCDC_ERR: the caller drops the
 * connection (the server rolls the batch back) and starts careful mode.
 */
static int drain(struct replay *r, size_t keep, char *err, size_t errlen)
{
    if (r->ring_count > keep && r->unflushed) {
        if (PQsendFlushRequest(r->conn) != 1 || PQflush(r->conn) != 0)
            return fail_conn(r, r->conn, NULL, "cannot send", err, errlen);
        r->unflushed = false;
    }
    while (r->ring_count > keep) {
        struct cmd *c = &r->ring[r->ring_head];
        PGresult *res = PQgetResult(r->conn);
        if (!res)
            return fail_conn(r, r->conn, NULL, "lost the pipeline", err, errlen);
        ExecStatusType s = PQresultStatus(res);
        if (c->kind == CMD_SYNC) {
            PQclear(res);
            if (s != PGRES_PIPELINE_SYNC) {
                snprintf(err, errlen, "unexpected result %s where a pipeline sync was due",
                         PQresStatus(s));
                return PGCDC_ERR_RETRY;
            }
        } else {
            if (s == PGRES_FATAL_ERROR && !r->failed) {
                char m[512], what[1024];
                const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
                result_message(r->conn, res, m, sizeof(m));
                describe_cmd(r, c, what, sizeof(what));
                snprintf(r->fail_msg, sizeof(r->fail_msg), "%s: %s", what, m);
                r->failed = true;
                r->fail_commit = c->kind == CMD_COMMIT || c->kind == CMD_POSITION ? c->pos_commit
                                                                                  : c->commit_lsn;
                bool transient = conn_lost(r->conn) || transient_state(st);
                PQclear(res);
                if (transient) {
                    snprintf(err, errlen, "lost the connection to the target (%s): %s",
                             r->target_red, m);
                    return PGCDC_ERR_RETRY;
                }
                snprintf(err, errlen, "%s", r->fail_msg);
                return PGCDC_ERR;
            }
            if (s == PGRES_COMMAND_OK && c->kind == CMD_STMT && c->op == 'u' &&
                atoi(PQcmdTuples(res)) < (c->expect ? c->expect : 1)) {
                char what[1024];
                describe_cmd(r, c, what, sizeof(what));
                if (r->update_misses++ < 10)
                    pgcdc_log(PGCDC_LOG_WARN, "update matched no row on the target", "change", what,
                              NULL);
            }
            if (s == PGRES_COMMAND_OK && c->kind == CMD_COMMIT)
                applied(r, c);
            PQclear(res);
            if ((res = PQgetResult(r->conn)) != NULL) {
                PQclear(res);
                snprintf(err, errlen, "unexpected extra result in the pipeline");
                return PGCDC_ERR_RETRY;
            }
        }
        r->ring_head = (r->ring_head + 1) % (WINDOW + 8);
        r->ring_count--;
    }
    return PGCDC_OK;
}

/* Column a failed statement's value does not fit: cast each value to its column's type. */
static const char *guess_column(struct replay *r, const struct pgcdc_replay_table *t,
                                const struct pgcdc_replay_stmt *st, PGresult *res)
{
    const char *col = res ? PQresultErrorField(res, PG_DIAG_COLUMN_NAME) : NULL;
    if (col)
        return col;
    for (int i = 0; i < st->nparams; i++) {
        if (!st->params[i] || st->param_col[i] < 0)
            continue;
        const struct pgcdc_replay_column *c = &t->cols[st->param_col[i]];
        struct pgcdc_buf q = {0};
        if (pgcdc_buf_append_str(&q, "SELECT $1::") < 0 || pgcdc_buf_append_str(&q, c->type) < 0) {
            pgcdc_buf_free(&q);
            return NULL;
        }
        PGresult *x = PQexecParams(r->meta, q.data, 1, NULL, &st->params[i], NULL, NULL, 0);
        bool bad = PQresultStatus(x) == PGRES_FATAL_ERROR;
        PQclear(x);
        pgcdc_buf_free(&q);
        if (bad)
            return c->name;
    }
    return NULL;
}

/*
 * Send one command. Pipelined: queue it (and keep the window bounded). Careful: run it now;
 * on failure name table, column and LSN in err (ev and t describe it when it is a change).
 */
static int send_cmd(struct replay *r, const struct cmd *proto, const char *sql, int stmt_id,
                    bool fresh, const struct pgcdc_replay_stmt *st,
                    const struct pgcdc_replay_table *t, char *err, size_t errlen)
{
    int np = st ? st->nparams : 0;
    const char *const *pv = st ? st->params : NULL;
    char name[32];
    snprintf(name, sizeof(name), "pgcdc_%d", stmt_id);
    if (r->pipelined) {
        if (fresh) {
            if (PQsendPrepare(r->conn, name, sql, np, NULL) != 1)
                return fail_conn(r, r->conn, NULL, "cannot send", err, errlen);
            struct cmd *c = ring_push(r);
            *c = *proto;
            c->kind = CMD_PREPARE;
        }
        int ok = stmt_id > 0 ? PQsendQueryPrepared(r->conn, name, np, pv, NULL, NULL, 0)
                             : PQsendQueryParams(r->conn, sql, np, NULL, pv, NULL, NULL, 0);
        if (ok != 1)
            return fail_conn(r, r->conn, NULL, "cannot send", err, errlen);
        struct cmd *c = ring_push(r);
        *c = *proto;
        r->unflushed = true;
        if (proto->kind == CMD_COMMIT) {
            if (PQpipelineSync(r->conn) != 1)
                return fail_conn(r, r->conn, NULL, "cannot send", err, errlen);
            c = ring_push(r);
            c->kind = CMD_SYNC;
            r->unflushed = false;
        }
        if (r->ring_count >= WINDOW)
            return drain(r, WINDOW / 2, err, errlen);
        return PGCDC_OK;
    }
    PGresult *res;
    if (fresh) {
        res = PQprepare(r->conn, name, sql, np, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            goto failed;
        PQclear(res);
    }
    res = stmt_id > 0 ? PQexecPrepared(r->conn, name, np, pv, NULL, NULL, 0)
                      : PQexecParams(r->conn, sql, np, NULL, pv, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK) {
        if (proto->kind == CMD_COMMIT)
            applied(r, proto);
        PQclear(res);
        return PGCDC_OK;
    }
failed:;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (conn_lost(r->conn) || transient_state(state))
        return fail_conn(r, r->conn, res, "lost the connection", err, errlen);
    char m[512], what[1024];
    result_message(r->conn, res, m, sizeof(m));
    describe_cmd(r, proto, what, sizeof(what));
    const char *col = t && st ? guess_column(r, t, st, res) : NULL;
    if (col) {
        /* "... into public.t at LSN": name the column after the table. */
        char *at = strstr(what, " at LSN ");
        char tail[256];
        snprintf(tail, sizeof(tail), "%s", at ? at : "");
        if (at)
            snprintf(at, sizeof(what) - (size_t)(at - what), " column %s%s", col, tail);
    }
    snprintf(err, errlen,
             "replay stopped: cannot apply %s: %s; nothing of that transaction was applied: fix "
             "the target and run replay again",
             what, m);
    PQclear(res);
    PQclear(PQexec(r->conn, "ROLLBACK"));
    return PGCDC_ERR;
}

/* ---- per-table queues and multi-row statements */

#define QUEUE_MAX_ROWS 8192         /* send queued changes once this many wait */
#define QUEUE_MAX_BYTES (16u << 20) /* ... or their values take this much memory */

static int grow_array(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return PGCDC_OK;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return PGCDC_ERR;
    *p = q;
    *cap = n;
    return PGCDC_OK;
}

/* The shape of st for table rt (registered the first time it is seen). */
static int shape_of(struct rtable *rt, const struct pgcdc_replay_stmt *st)
{
    if (rt->nshapes && strcmp(rt->shapes[rt->last_shape].sql, st->sql.data) == 0)
        return rt->last_shape;
    for (size_t i = 0; i < rt->nshapes; i++)
        if (strcmp(rt->shapes[i].sql, st->sql.data) == 0)
            return rt->last_shape = (int)i;
    struct shape *ns = realloc(rt->shapes, (rt->nshapes + 1) * sizeof(*ns));
    if (!ns)
        return PGCDC_ERR;
    rt->shapes = ns;
    struct shape *sh = &rt->shapes[rt->nshapes];
    memset(sh, 0, sizeof(*sh));
    sh->sql = strdup(st->sql.data);
    sh->param_col = malloc(((size_t)st->nparams + 1) * sizeof(int));
    if (!sh->sql || !sh->param_col) {
        free(sh->sql);
        free(sh->param_col);
        return PGCDC_ERR;
    }
    if (st->nparams > 0) /* a statement without parameters (TRUNCATE) has no array */
        memcpy(sh->param_col, st->param_col, (size_t)st->nparams * sizeof(int));
    sh->nparams = st->nparams;
    sh->nset = st->nset;
    sh->op = st->op;
    sh->groupable = st->groupable;
    return rt->last_shape = (int)rt->nshapes++;
}

/* Whether parameter i of a shape is part of the row's key (for duplicates in a group). */
static bool key_param(const struct rtable *rt, const struct shape *sh, int i)
{
    switch (sh->op) {
    case 'u':
        return i >= sh->nset;
    case 'd':
        return true;
    default:
        return rt->t.cols[sh->param_col[i]].pk;
    }
}

static const char *qval(const struct replay *r, size_t v)
{
    return r->voff[v] == SIZE_MAX ? NULL : r->arena.data + r->voff[v];
}

static bool same_key(const struct replay *r, const struct rtable *rt, const struct shape *sh,
                     const struct item *a, const struct item *b)
{
    if (a->keyhash != b->keyhash)
        return false;
    for (int i = 0; i < sh->nparams; i++) {
        if (!key_param(rt, sh, i))
            continue;
        const char *x = qval(r, a->v0 + (size_t)i), *y = qval(r, b->v0 + (size_t)i);
        if ((x == NULL) != (y == NULL) || (x && strcmp(x, y) != 0))
            return false;
    }
    return true;
}

/* Send nrows members (queue indexes) of one shape as one statement. */
static int send_group(struct replay *r, int ti, const struct shape *sh, const size_t *members,
                      int nrows, uint64_t max_commit, char *err, size_t errlen)
{
    struct rtable *rt = &r->tables[ti];
    size_t np = (size_t)sh->nparams * (size_t)nrows;
    if (grow_array((void **)&r->gparams, &r->gcap, np + 1, sizeof(*r->gparams)) < 0) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    for (int m = 0; m < nrows; m++)
        for (int i = 0; i < sh->nparams; i++)
            r->gparams[(size_t)m * (size_t)sh->nparams + (size_t)i] =
                qval(r, rt->q[members[m]].v0 + (size_t)i);
    struct pgcdc_replay_stmt view = {.params = r->gparams,
                                     .param_col = sh->param_col,
                                     .nparams = (int)np,
                                     .op = sh->op,
                                     .nset = sh->nset};
    const char *sql = sh->sql;
    if (nrows > 1) {
        view.nparams = sh->nparams;
        if (pgcdc_replay_build_group(&r->gsql, &rt->t, &view, nrows) < 0) {
            snprintf(err, errlen, "out of memory");
            return PGCDC_ERR;
        }
        view.nparams = (int)np;
        sql = r->gsql.data;
    }
    bool fresh;
    int id = stmt_lookup(r, sql, strlen(sql), &fresh);
    struct cmd c = {.kind = CMD_STMT,
                    .op = sh->op,
                    .table = ti,
                    .lsn = rt->q[members[0]].lsn,
                    .commit_lsn = max_commit,
                    .expect = sh->op == 'u' ? nrows : 0};
    return send_cmd(r, &c, sql, id, fresh, &view, NULL, err, errlen);
}

/*
 * Send every queued change. Table by table (their relative order does not matter inside
 * one target transaction: session_replication_role = replica turns foreign-key checks and
 * triggers off); within a table in source order, runs of the same shape as multi-row
 * statements of up to group_rows distinct keys, in power-of-two sizes (few distinct SQL
 * texts to prepare). A later update of a key already in the run replaces the earlier one.
 */
static int flush_queues(struct replay *r, char *err, size_t errlen)
{
    size_t members[1024];
    int gmax = r->o->group_rows < 1024 ? r->o->group_rows : 1024;
    int rc = PGCDC_OK;
    for (size_t o = 0; o < r->norder && rc == PGCDC_OK; o++) {
        int ti = r->order[o];
        struct rtable *rt = &r->tables[ti];
        size_t i = 0;
        while (i < rt->qn && rc == PGCDC_OK) {
            const struct shape *sh = &rt->shapes[rt->q[i].shape];
            int lim = sh->groupable ? gmax : 1;
            /* Bound the parameters of one statement (the protocol allows 65535). */
            while (lim > 1 && (size_t)lim * (size_t)sh->nparams > 16384)
                lim /= 2;
            /* Rows of a table without a key never clash: plain multi-row inserts. */
            bool keyed = !(sh->op == 'c' || sh->op == 'r') || rt->t.npk > 0;
            int m = 0;
            uint64_t maxc = rt->q[i].commit_lsn;
            members[m++] = i;
            size_t j = i + 1;
            while (j < rt->qn && m < lim && rt->q[j].shape == rt->q[i].shape) {
                int dup = -1;
                for (int k = 0; keyed && k < m && dup < 0; k++)
                    if (same_key(r, rt, sh, &rt->q[members[k]], &rt->q[j]))
                        dup = k;
                if (dup >= 0 && sh->op == 'u')
                    members[dup] = j; /* the later values win */
                else if (dup >= 0 && sh->op != 'd')
                    break; /* an insert cannot touch one row twice: a new statement */
                else if (dup < 0)
                    members[m++] = j;
                if (rt->q[j].commit_lsn > maxc)
                    maxc = rt->q[j].commit_lsn;
                j++;
            }
            /* Power-of-two pieces: 37 rows go as 32 + 4 + 1. */
            int done = 0;
            while (done < m && rc == PGCDC_OK) {
                int n = 1;
                while (n * 2 <= m - done)
                    n *= 2;
                rc = send_group(r, ti, sh, members + done, n, maxc, err, errlen);
                done += n;
            }
            i = j;
        }
        rt->qn = 0;
        rt->queued = false;
    }
    r->norder = 0;
    r->pending = 0;
    r->nvoff = 0;
    pgcdc_buf_reset(&r->arena);
    return rc;
}

/* Queue the change st (built for table ti) for flush_queues. */
static int enqueue(struct replay *r, int ti, const struct pgcdc_replay_event *ev, char *err,
                   size_t errlen)
{
    struct rtable *rt = &r->tables[ti];
    const struct pgcdc_replay_stmt *st = &r->st;
    int sh = shape_of(rt, st);
    if (sh < 0 || grow_array((void **)&rt->q, &rt->qcap, rt->qn + 1, sizeof(*rt->q)) < 0 ||
        grow_array((void **)&r->voff, &r->capvoff, r->nvoff + (size_t)st->nparams,
                   sizeof(*r->voff)) < 0 ||
        grow_array((void **)&r->order, &r->caporder, r->norder + 1, sizeof(*r->order)) < 0)
        goto oom;
    struct item *it = &rt->q[rt->qn];
    it->shape = sh;
    it->v0 = r->nvoff;
    it->lsn = ev->lsn;
    it->commit_lsn = ev->commit_lsn;
    it->keyhash = 1469598103934665603ULL;
    for (int i = 0; i < st->nparams; i++) {
        const char *v = st->params[i];
        if (!v) {
            r->voff[r->nvoff++] = SIZE_MAX;
        } else {
            r->voff[r->nvoff++] = r->arena.len;
            if (pgcdc_buf_append(&r->arena, v, strlen(v) + 1) < 0)
                goto oom;
        }
        if (key_param(rt, &rt->shapes[sh], i)) {
            uint64_t h = v ? fnv1a(v, strlen(v)) : 0x9e3779b97f4a7c15ULL;
            it->keyhash = (it->keyhash ^ h) * 1099511628211ULL;
        }
    }
    rt->qn++;
    if (!rt->queued) {
        r->order[r->norder++] = ti;
        rt->queued = true;
    }
    if (++r->pending >= QUEUE_MAX_ROWS || r->arena.len >= QUEUE_MAX_BYTES)
        return flush_queues(r, err, errlen);
    return PGCDC_OK;
oom:
    snprintf(err, errlen, "out of memory queueing a change");
    return PGCDC_ERR;
}

static int begin_batch(struct replay *r, char *err, size_t errlen)
{
    struct cmd c = {.kind = CMD_BEGIN, .table = -1, .commit_lsn = r->txn_commit};
    int rc = send_cmd(r, &c, "BEGIN", 0, false, NULL, NULL, err, errlen);
    if (rc < 0)
        return rc;
    r->batch_open = true;
    r->batch_rows = r->batch_txns = 0;
    return PGCDC_OK;
}

/* Record (commit, partial) in the target and commit the batch. */
static int commit_batch(struct replay *r, uint64_t commit, int64_t partial, char *err,
                        size_t errlen)
{
    static const char pos_sql[] =
        "INSERT INTO pgcdc.replay_position (id, commit_lsn, partial_events, applied_at) "
        "VALUES (1, $1::pg_catalog.pg_lsn, $2::bigint, now()) ON CONFLICT (id) DO UPDATE SET "
        "commit_lsn = EXCLUDED.commit_lsn, partial_events = EXCLUDED.partial_events, "
        "applied_at = EXCLUDED.applied_at";
    char lsn[PGCDC_LSN_BUFLEN], part[32];
    struct pgcdc_replay_stmt pst = {0};
    const char *pv[2] = {pgcdc_lsn_format(commit, lsn), part};
    int pc[2] = {-1, -1};
    int rc;
    if (r->pending && (rc = flush_queues(r, err, errlen)) < 0)
        return rc;
    snprintf(part, sizeof(part), "%" PRId64, partial);
    pst.params = pv;
    pst.param_col = pc;
    pst.nparams = 2;
    bool fresh;
    int id = stmt_lookup(r, pos_sql, sizeof(pos_sql) - 1, &fresh);
    struct cmd c = {.kind = CMD_POSITION, .table = -1, .pos_commit = commit};
    rc = send_cmd(r, &c, pos_sql, id, fresh, &pst, NULL, err, errlen);
    if (rc < 0)
        return rc;
    c.kind = CMD_COMMIT;
    c.pos_partial = partial;
    c.rows = (uint64_t)r->batch_rows;
    c.txns = (uint64_t)r->batch_txns;
    r->batch_open = false;
    r->batch_rows = r->batch_txns = 0;
    return send_cmd(r, &c, "COMMIT", 0, false, NULL, NULL, err, errlen);
}

/* The current source transaction is complete. */
static int txn_end(struct replay *r, char *err, size_t errlen)
{
    r->in_txn = false;
    if (!r->batch_open)
        return PGCDC_OK;
    r->batch_txns++;
    if (!r->pipelined || r->batch_rows >= r->o->batch_rows)
        return commit_batch(r, r->txn_commit, 0, err, errlen);
    return PGCDC_OK;
}

static int txn_start(struct replay *r, uint64_t commit, char *err, size_t errlen)
{
    r->in_txn = true;
    r->txn_commit = commit;
    r->txn_events = 0;
    r->txn_skip = commit < r->pos_commit || (commit == r->pos_commit && r->pos_partial == 0);
    r->txn_skip_n = commit == r->pos_commit ? r->pos_partial : 0;
    if (!r->pipelined && !r->batch_open && commit > r->careful_until) {
        /* Past the transaction that failed: back to batches and pipelining. */
        if (PQenterPipelineMode(r->conn) != 1)
            return fail_conn(r, r->conn, NULL, "cannot enter pipeline mode", err, errlen);
        r->pipelined = true;
        r->careful_until = 0;
    }
    return PGCDC_OK;
}

static int apply_event(struct replay *r, const struct pgcdc_replay_event *ev, char *err,
                       size_t errlen)
{
    char l1[PGCDC_LSN_BUFLEN], l2[PGCDC_LSN_BUFLEN];
    /* The snapshot is one transaction of any size: it alone is committed in pieces. */
    if (r->batch_open && ev->snapshot && r->batch_rows >= r->o->batch_rows) {
        int rc = commit_batch(r, r->txn_commit, r->txn_events - 1, err, errlen);
        if (rc < 0)
            return rc;
    }
    int ti = find_table(r, ev, err, errlen);
    if (ti < 0)
        return ti;
    const struct pgcdc_replay_table *t = &r->tables[ti].t;
    if (!t->exists) {
        snprintf(err, errlen,
                 "replay stopped: target table %s.%s does not exist (event at LSN %s, "
                 "transaction %s): create it (pg_dump --schema-only) and run replay again",
                 t->schema, t->name, pgcdc_lsn_format(ev->lsn, l1),
                 pgcdc_lsn_format(ev->commit_lsn, l2));
        return PGCDC_ERR;
    }
    char berr[512];
    if (pgcdc_replay_build(&r->st, t, ev, berr, sizeof(berr)) < 0) {
        snprintf(err, errlen, "replay stopped: %s (event at LSN %s, transaction %s)", berr,
                 pgcdc_lsn_format(ev->lsn, l1), pgcdc_lsn_format(ev->commit_lsn, l2));
        return PGCDC_ERR;
    }
    if (r->st.skip)
        return PGCDC_OK;
    if (!r->batch_open) {
        int rc = begin_batch(r, err, errlen);
        if (rc < 0)
            return rc;
    }
    r->batch_rows++;
    if (r->pipelined && r->grouping)
        return enqueue(r, ti, ev, err, errlen);
    bool fresh;
    int id = stmt_lookup(r, r->st.sql.data, r->st.sql.len, &fresh);
    struct cmd c = {
        .kind = CMD_STMT, .op = ev->op, .table = ti, .lsn = ev->lsn, .commit_lsn = ev->commit_lsn};
    return send_cmd(r, &c, r->st.sql.data, id, fresh, &r->st, t, err, errlen);
}

/* One event line. Returns 0, 1 when reading must stop (past --end-lsn), or <0. */
static int on_line(struct replay *r, const char *line, size_t len, char *err, size_t errlen)
{
    struct pgcdc_replay_event ev;
    char perr[256];
    if (pgcdc_replay_parse(&r->parser, line, len, &ev, perr, sizeof(perr)) < 0) {
        snprintf(err, errlen, "replay stopped: %s/%s at byte %" PRIu64 " is not an event: %s",
                 r->rd.dir, r->rd.cur, r->rd.off - (r->rd.buf.len - r->rd.bpos) - len - 1, perr);
        return PGCDC_ERR;
    }
    int rc;
    if (!r->in_txn || ev.commit_lsn != r->txn_commit) {
        if (r->in_txn && (rc = txn_end(r, err, errlen)) < 0)
            return rc;
        if (r->o->end_lsn && ev.commit_lsn > r->o->end_lsn) {
            r->beyond_end = true;
            return 1;
        }
        if ((rc = txn_start(r, ev.commit_lsn, err, errlen)) < 0)
            return rc;
    }
    r->txn_events++;
    if (r->txn_skip || r->txn_events <= r->txn_skip_n)
        return PGCDC_OK;
    return apply_event(r, &ev, err, errlen);
}

static void log_progress(struct replay *r, const char *msg)
{
    char lsn[PGCDC_LSN_BUFLEN], rows[32], txns[32];
    snprintf(rows, sizeof(rows), "%" PRIu64, r->rows_total);
    snprintf(txns, sizeof(txns), "%" PRIu64, r->txns_total);
    pgcdc_log(PGCDC_LOG_INFO, msg, "applied_lsn", pgcdc_lsn_format(r->done_commit, lsn), "rows",
              rows, "txns", txns, NULL);
}

/* Everything available is applied and committed: say so, and decide whether to stop. */
static bool at_end(struct replay *r)
{
    bool upto = reader_at_position(&r->rd);
    uint64_t at = r->done_commit;
    if (upto && r->rd.pos_lsn > at)
        at = r->rd.pos_lsn;
    bool done = r->o->end_lsn ? r->beyond_end || (upto && r->rd.pos_lsn >= r->o->end_lsn) ||
                                    r->done_commit > r->o->end_lsn
                              : !r->o->follow;
    /* Once per stretch of progress, at most once a second while data keeps coming. */
    int64_t now = pgcdc_mono_ms();
    bool moved = r->rows_total != r->announced_rows || r->txns_total != r->announced_txns;
    if (!r->announced || (moved && (done || now - r->announced_ms >= ANNOUNCE_EVERY_MS))) {
        char msg[64], lsn[PGCDC_LSN_BUFLEN], al[PGCDC_LSN_BUFLEN], rows[32], txns[32];
        snprintf(msg, sizeof(msg), "caught up at LSN %s", pgcdc_lsn_format(at, lsn));
        snprintf(rows, sizeof(rows), "%" PRIu64, r->rows_total);
        snprintf(txns, sizeof(txns), "%" PRIu64, r->txns_total);
        pgcdc_log(PGCDC_LOG_INFO, msg, "lsn", lsn, "applied_lsn",
                  pgcdc_lsn_format(r->done_commit, al), "rows", rows, "txns", txns, NULL);
        r->announced = true;
        r->announced_rows = r->rows_total;
        r->announced_txns = r->txns_total;
        r->announced_ms = now;
    }
    return done;
}

/* Connect, prepare the target, find where it stands. */
static int session_start(struct replay *r, char *err, size_t errlen)
{
    int rc;
    if (!(r->conn = connect_target(r, "pgcdc-replay", err, errlen)) ||
        !(r->meta = connect_target(r, "pgcdc-replay-catalog", err, errlen)))
        return r->ever_connected ? PGCDC_ERR_RETRY : PGCDC_ERR;
    r->ever_connected = true;
    if ((rc = exec_ok(r, r->conn,
                      "SET synchronous_commit = off; SET statement_timeout = 0; "
                      "SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0",
                      err, errlen)) < 0)
        return rc;
    /* As native apply does: no triggers, no foreign-key checks (the snapshot loads tables
     * in any order). Needs superuser or GRANT SET; without it, say what that means. */
    PGresult *res = PQexec(r->conn, "SET session_replication_role = replica");
    r->grouping = PQresultStatus(res) == PGRES_COMMAND_OK && r->o->group_rows > 1;
    if (PQresultStatus(res) != PGRES_COMMAND_OK && !r->announced) {
        char m[256];
        result_message(r->conn, res, m, sizeof(m));
        pgcdc_log(PGCDC_LOG_WARN,
                  "cannot set session_replication_role = replica: target triggers fire and "
                  "foreign keys are checked while replaying (a snapshot loads tables in any "
                  "order), and changes are applied one statement per row",
                  "error", m, NULL);
    }
    PQclear(res);
    /* One replay per target: wait a while for a killed predecessor's session to end. */
    int64_t deadline = pgcdc_mono_ms() + 60000;
    bool said = false;
    for (;;) {
        res = PQexec(r->conn, "SELECT pg_catalog.pg_try_advisory_lock(" LOCK_KEY ")");
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            return fail_conn(r, r->conn, res, "cannot take the replay lock", err, errlen);
        bool got = PQgetvalue(res, 0, 0)[0] == 't';
        PQclear(res);
        if (got)
            break;
        if (pgcdc_mono_ms() > deadline || pgcdc_stop_requested) {
            snprintf(err, errlen,
                     "another pgcdc replay is applying to this target database (it holds "
                     "advisory lock %s): stop it first",
                     LOCK_KEY);
            return PGCDC_ERR;
        }
        if (!said)
            pgcdc_log(PGCDC_LOG_INFO, "waiting for another replay session on the target to end",
                      NULL);
        said = true;
        usleep(200000);
    }
    res = PQexec(r->conn, "SELECT pg_catalog.to_regclass('pgcdc.replay_position') IS NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return fail_conn(r, r->conn, res, "cannot look up pgcdc.replay_position", err, errlen);
    bool missing = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (missing && (rc = exec_ok(r, r->conn,
                                 "CREATE SCHEMA IF NOT EXISTS pgcdc; "
                                 "CREATE TABLE IF NOT EXISTS pgcdc.replay_position ("
                                 "id int PRIMARY KEY DEFAULT 1 CHECK (id = 1), "
                                 "commit_lsn pg_catalog.pg_lsn NOT NULL, "
                                 "partial_events bigint NOT NULL DEFAULT 0, "
                                 "applied_at timestamptz NOT NULL DEFAULT now())",
                                 err, errlen)) < 0)
        return rc;
    res = PQexec(r->conn, "SELECT commit_lsn::text, partial_events FROM pgcdc.replay_position "
                          "WHERE id = 1");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return fail_conn(r, r->conn, res, "cannot read pgcdc.replay_position", err, errlen);
    r->pos_commit = 0;
    r->pos_partial = 0;
    if (PQntuples(res) == 1) {
        pgcdc_lsn_parse_str(PQgetvalue(res, 0, 0), &r->pos_commit);
        r->pos_partial = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    }
    PQclear(res);
    r->done_commit = r->pos_commit;
    r->done_partial = r->pos_partial;
    r->pipelined = r->careful_until == 0 || r->pos_commit >= r->careful_until;
    if (r->pipelined) {
        r->careful_until = 0;
        if (PQenterPipelineMode(r->conn) != 1)
            return fail_conn(r, r->conn, NULL, "cannot enter pipeline mode", err, errlen);
    }
    /* Read from the first segment again; whole segments before the position are passed. */
    pgcdc_buf_reset(&r->rd.buf);
    r->rd.bpos = 0;
    r->rd.cur[0] = r->rd.prev[0] = '\0';
    r->rd.off = 0;
    r->rd.cur_closed = false;
    r->rd.skip_lsn = r->pos_commit;
    r->in_txn = r->batch_open = r->beyond_end = r->failed = false;
    r->batch_rows = r->batch_txns = 0;
    char lsn[PGCDC_LSN_BUFLEN], part[32];
    snprintf(part, sizeof(part), "%" PRId64, r->pos_partial);
    pgcdc_log(PGCDC_LOG_INFO,
              r->pipelined ? "replay started" : "replay re-applying one transaction at a time",
              "target", r->target_red, "resume_after", pgcdc_lsn_format(r->pos_commit, lsn),
              "partial_events", part, NULL);
    return PGCDC_OK;
}

/* Everything sent is committed (or the batch in progress is given up): wait for it all. */
static int finish(struct replay *r, char *err, size_t errlen)
{
    int rc;
    if (r->pipelined) {
        if ((rc = drain(r, 0, err, errlen)) < 0)
            return rc;
        if (PQexitPipelineMode(r->conn) != 1)
            return fail_conn(r, r->conn, NULL, "cannot leave pipeline mode", err, errlen);
        r->pipelined = false;
    }
    /* Commits went out with synchronous_commit = off: one synchronous commit after them
     * waits until all of them are flushed on the target. */
    return exec_ok(r, r->conn,
                   "SET synchronous_commit = on; UPDATE pgcdc.replay_position SET applied_at = "
                   "now() WHERE id = 1",
                   err, errlen);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* a signal cuts it short */
}

/*
 * One connection's worth of replay. Returns R_DONE (finished or stopped), R_CAREFUL (a
 * batch failed: start again one transaction at a time), or an error.
 */
static int session(struct replay *r, char *err, size_t errlen)
{
    int rc = session_start(r, err, errlen);
    if (rc < 0)
        return rc;
    int64_t since_check = 0;
    for (;;) {
        if (pgcdc_stop_requested && !r->in_txn) {
            if (r->batch_open && (rc = commit_batch(r, r->txn_commit, 0, err, errlen)) < 0)
                goto failed;
            if ((rc = finish(r, err, errlen)) < 0)
                goto failed;
            log_progress(r, "replay stopped by signal");
            return R_DONE;
        }
        if (pgcdc_stop_requested && r->batch_open && ++since_check >= 256) {
            /* Stopping inside a long transaction: give it up; it is applied next time. */
            log_progress(r,
                         "replay stopped by signal; the transaction in progress was rolled back");
            return R_DONE;
        }
        const char *line;
        size_t len;
        int got = reader_next(&r->rd, &line, &len, err, errlen);
        if (got < 0)
            return got;
        if (got == 1) {
            rc = on_line(r, line, len, err, errlen);
            if (rc < 0)
                goto failed;
            if (rc == 0) {
                int64_t now = pgcdc_mono_ms();
                if (now - r->last_progress_ms >= PROGRESS_EVERY_MS) {
                    if (r->last_progress_ms && r->rows_total != r->progress_rows)
                        log_progress(r, "replay progress");
                    r->progress_rows = r->rows_total;
                    r->last_progress_ms = now;
                }
                continue;
            }
        }
        /* No more complete data now (or past --end-lsn): every transaction read is whole. */
        if (r->in_txn && (rc = txn_end(r, err, errlen)) < 0)
            goto failed;
        if (r->batch_open && (rc = commit_batch(r, r->txn_commit, 0, err, errlen)) < 0)
            goto failed;
        if (r->pipelined && (rc = drain(r, 0, err, errlen)) < 0)
            goto failed;
        if (at_end(r)) {
            if ((rc = finish(r, err, errlen)) < 0)
                goto failed;
            log_progress(r, "replay done");
            return R_DONE;
        }
        if (pgcdc_stop_requested)
            continue;
        sleep_ms(r->o->poll_ms);
    }
failed:
    if (rc == PGCDC_ERR && r->pipelined) {
        /* Something in the batch failed. Which change, and why, is found by applying one
         * transaction at a time up to it; the earlier ones are committed on the way. */
        char lsn[PGCDC_LSN_BUFLEN];
        uint64_t upto = r->failed ? r->fail_commit : r->txn_commit;
        pgcdc_log(PGCDC_LOG_INFO,
                  "a batch failed; re-applying one transaction at a time to find the change",
                  "upto", pgcdc_lsn_format(upto, lsn), "error", err, NULL);
        r->careful_until = upto ? upto : 1;
        return R_CAREFUL;
    }
    return rc;
}

int pgcdc_replay_run(const struct pgcdc_replay_opts *o, char *err, size_t errlen)
{
    struct replay r;
    memset(&r, 0, sizeof(r));
    r.o = o;
    r.rd.dir = o->input;
    pgcdc_log_redact_dsn(o->target, r.target_red, sizeof(r.target_red));
    pgcdc_replay_parser_init(&r.parser);
    r.ring = calloc(WINDOW + 8, sizeof(*r.ring));
    if (!r.ring) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    pgcdc_install_stop_signals();

    int rc, backoff = 500, careful_runs = 0;
    for (;;) {
        rc = session(&r, err, errlen);
        close_target(&r);
        if (rc == R_DONE) {
            rc = PGCDC_OK;
            break;
        }
        if (rc == R_CAREFUL && ++careful_runs < 1000)
            continue;
        if (rc != PGCDC_ERR_RETRY || pgcdc_stop_requested || !r.ever_connected)
            break;
        char ms[16];
        snprintf(ms, sizeof(ms), "%d", backoff);
        pgcdc_log(PGCDC_LOG_WARN, "target connection lost; reconnecting", "error", err,
                  "retry_in_ms", ms, NULL);
        sleep_ms(backoff);
        backoff = backoff * 2 > 30000 ? 30000 : backoff * 2;
    }
    if (rc == PGCDC_ERR_RETRY)
        rc = PGCDC_ERR;
    if (r.update_misses > 10) {
        char n[32];
        snprintf(n, sizeof(n), "%" PRIu64, r.update_misses);
        pgcdc_log(PGCDC_LOG_WARN, "updates that matched no row on the target", "count", n, NULL);
    }
    pgcdc_replay_parser_free(&r.parser);
    pgcdc_replay_stmt_free(&r.st);
    pgcdc_buf_free(&r.rd.buf);
    pgcdc_buf_free(&r.arena);
    pgcdc_buf_free(&r.gsql);
    free(r.voff);
    free(r.order);
    free(r.gparams);
    free(r.sc);
    free(r.ring);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* The command line */

extern char **environ;

static int replay_setting(struct pgcdc_replay_opts *o, const char *arg, char *err, size_t errlen)
{
    const char *eq = strchr(arg, '=');
    if (!eq)
        goto bad;
    char *end;
    long v = strtol(eq + 1, &end, 10);
    if (strncmp(arg, "replay.batch_rows=", 18) == 0) {
        if (*end || end == eq + 1 || v < 1 || v > 10000000)
            goto badval;
        o->batch_rows = (int)v;
        return PGCDC_OK;
    }
    if (strncmp(arg, "replay.group_rows=", 18) == 0) {
        if (*end || end == eq + 1 || v < 1 || v > 1024)
            goto badval;
        o->group_rows = (int)v;
        return PGCDC_OK;
    }
    if (strncmp(arg, "replay.poll_ms=", 15) == 0) {
        if (*end || end == eq + 1 || v < 10 || v > 60000)
            goto badval;
        o->poll_ms = (int)v;
        return PGCDC_OK;
    }
bad:
    snprintf(err, errlen,
             "unknown replay setting \"%.*s\": replay takes replay.batch_rows, "
             "replay.group_rows, replay.poll_ms, log.level and log.format",
             (int)(eq ? eq - arg : (ptrdiff_t)strlen(arg)), arg);
    return PGCDC_ERR_CONFIG;
badval:
    snprintf(err, errlen,
             "bad value \"%s\" for %.*s: replay.batch_rows takes 1..10000000, "
             "replay.group_rows 1..1024, replay.poll_ms 10..60000",
             eq + 1, (int)(eq - arg), arg);
    return PGCDC_ERR_CONFIG;
}

int pgcdc_replay_command(int argc, char **argv, char *err, size_t errlen)
{
    static const struct option longopts[] = {
        {"input", required_argument, NULL, 'i'},
        {"target", required_argument, NULL, 't'},
        {"follow", no_argument, NULL, 'f'},
        {"end-lsn", required_argument, NULL, 'e'},
        {NULL, 0, NULL, 0},
    };
    struct pgcdc_replay_opts o = {.batch_rows = 5000, .group_rows = 64, .poll_ms = 150};
    struct pgcdc_config cfg;
    const char *end = NULL;
    char *target = NULL;
    int c, rc;
    if (pgcdc_config_init(&cfg) < 0) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    if ((rc = pgcdc_config_load_env(&cfg, environ, err, errlen)) < 0)
        goto out;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "i:t:fo:", longopts, NULL)) != -1) {
        switch (c) {
        case 'i':
            o.input = optarg;
            break;
        case 't':
            free(target);
            if (!(target = strdup(optarg))) {
                rc = PGCDC_ERR;
                goto out;
            }
            pgcdc_log_scrub_dsn_arg(optarg);
            break;
        case 'f':
            o.follow = true;
            break;
        case 'e':
            end = optarg;
            break;
        case 'o':
            rc = strncmp(optarg, "replay.", 7) == 0
                     ? replay_setting(&o, optarg, err, errlen)
                     : pgcdc_config_set_arg(&cfg, optarg, err, errlen);
            if (rc < 0)
                goto out;
            break;
        default: {
            char shown[512]; /* --targt=postgres://u:secret@... must not be echoed */
            pgcdc_log_redact_dsn(argv[optind - 1], shown, sizeof(shown));
            snprintf(err, errlen, "unknown or incomplete option \"%s\": see pgcdc replay --help",
                     shown);
            rc = PGCDC_ERR_CONFIG;
            goto out;
        }
        }
    }
    pgcdc_log_setup(cfg.log_level, cfg.log_format);
    rc = PGCDC_ERR_CONFIG;
    if (optind < argc) {
        char shown[512]; /* it may be a misplaced DSN */
        pgcdc_log_redact_dsn(argv[optind], shown, sizeof(shown));
        snprintf(err, errlen, "unexpected argument \"%s\": see pgcdc replay --help", shown);
        goto out;
    }
    if (!o.input || !target) {
        snprintf(err, errlen,
                 "pgcdc replay needs --input DIR (the file sink's sink.file.dir) and "
                 "--target DSN (the database to apply to)");
        goto out;
    }
    if (end && pgcdc_lsn_parse_str(end, &o.end_lsn) < 0) {
        snprintf(err, errlen,
                 "--end-lsn \"%s\" is not an LSN: give it as pg_current_wal_lsn() prints it, "
                 "e.g. 0/16B3748",
                 end);
        goto out;
    }
    struct stat stt;
    errno = 0;
    if (stat(o.input, &stt) < 0 || !S_ISDIR(stt.st_mode)) {
        snprintf(err, errlen, "--input %s is not a readable directory%s%s", o.input,
                 errno ? ": " : "", errno ? strerror(errno) : "");
        goto out;
    }
    if ((rc = pgcdc_config_check_dsn("--target", target, err, errlen)) < 0)
        goto out;
    o.target = target;
    rc = pgcdc_replay_run(&o, err, errlen);
out:
    pgcdc_config_free(&cfg);
    free(target);
    return rc;
}
