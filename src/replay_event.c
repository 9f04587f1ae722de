/*
 * replay_event.c — one event line of a file-sink segment -> struct pgcdc_replay_event, read
 * with the raw-token scanner of json.h: values stay the raw tokens wal2json sent, and are
 * turned into PostgreSQL's text input form only when a statement takes them.
 */
#include "pgcdc/replay_event.h"

#include <stdlib.h>
#include <string.h>

#include "pgcdc/json.h"

/* A row object {"a":1,...} into p->cols[which], or null. */
static int scan_row(struct pgcdc_json_scan *s, struct pgcdc_replay_parser *p, int which,
                    bool *present, size_t *count)
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
            if (pgcdc_json_string(s, &c->name) < 0 || pgcdc_json_expect(s, ':') < 0 ||
                pgcdc_json_value(s, &c->value) < 0)
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
        if (pgcdc_json_string(s, &k) < 0 || pgcdc_json_expect(s, ':') < 0 ||
            pgcdc_json_value(s, &v) < 0)
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
            ev->snapshot_last = pgcdc_json_tok_is(v, "\"last\"");
            ev->snapshot = ev->snapshot_last || pgcdc_json_tok_is(v, "\"true\"");
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
/* Values */

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
