/*
 * replay_event.c — one event line of a file-sink segment -> struct pgcdc_replay_event, read
 * with the raw-token scanner of json.h: values stay the raw tokens wal2json sent, and are
 * turned into PostgreSQL's text input form only when a statement takes them.
 */
#include "pgcdc/replay_event.h"

#include <stddef.h>
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
/* Snapshot rows as pgcdc writes them */

/* Whether the literal lit is at *p (within end); moves past it. */
#define FAST_LIT(p, end, lit)                                                                      \
    ((size_t)((end) - (p)) >= sizeof(lit) - 1 && memcmp((p), (lit), sizeof(lit) - 1) == 0          \
         ? ((p) += sizeof(lit) - 1, true)                                                          \
         : false)

/* Past the JSON string at p, or NULL when there is none. A quote ends it unless an odd
 * number of backslashes stands before it. */
static const char *fast_string(const char *p, const char *end)
{
    if (p >= end || *p != '"')
        return NULL;
    const char *q = p + 1;
    for (;;) {
        q = q < end ? memchr(q, '"', (size_t)(end - q)) : NULL;
        if (!q)
            return NULL;
        size_t bs = 0;
        while (q - bs > p + 1 && q[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        if (bs % 2 == 0)
            return q + 1;
        q++;
    }
}

/* Past the bare token (number, true, false, null) at p: up to ',' or '}'. */
static const char *fast_bare(const char *p, const char *end)
{
    const char *q = p;
    while (q < end && *q != ',' && *q != '}')
        q++;
    return q > p ? q : NULL;
}

/* An unsigned integer at *p, then moves past it. */
static bool fast_u64(const char **p, const char *end, uint64_t *out)
{
    const char *q = fast_bare(*p, end);
    struct pgcdc_span v = {*p, q ? (size_t)(q - *p) : 0};
    if (!q || pgcdc_json_u64(v, out) < 0)
        return false;
    *p = q;
    return true;
}

/* The "after" object's pairs from p (past its '{') into p->cols[1]; returns past its '}'. */
static const char *fast_row(struct pgcdc_replay_parser *ps, const char *p, const char *end,
                            size_t *count)
{
    size_t n = 0;
    if (p < end && *p == '}') {
        *count = 0;
        return p + 1;
    }
    for (;;) {
        if (n == ps->cap[1]) {
            size_t cap = ps->cap[1] ? ps->cap[1] * 2 : 16;
            struct pgcdc_replay_col *c = realloc(ps->cols[1], cap * sizeof(*c));
            if (!c)
                return NULL;
            ps->cols[1] = c;
            ps->cap[1] = cap;
        }
        struct pgcdc_replay_col *c = &ps->cols[1][n++];
        const char *q;
        if (!(q = fast_string(p, end)) || q >= end || *q != ':')
            return NULL;
        c->name.p = p;
        c->name.len = (size_t)(q - p);
        p = q + 1;
        if (p >= end || *p == '{' || *p == '[')
            return NULL;
        q = *p == '"' ? fast_string(p, end) : fast_bare(p, end);
        if (!q || q >= end)
            return NULL;
        c->value.p = p;
        c->value.len = (size_t)(q - p);
        p = q + 1;
        if (*q == '}') {
            *count = n;
            return p;
        }
        if (*q != ',')
            return NULL;
    }
}

int pgcdc_replay_parse_snapshot_row(struct pgcdc_replay_parser *ps, const char *line, size_t len,
                                    struct pgcdc_replay_event *ev)
{
    const char *p = line, *end = line + len, *q;
    memset(ev, 0, sizeof(*ev));
    if (!FAST_LIT(p, end, "{\"before\":null,\"after\":{") ||
        !(p = fast_row(ps, p, end, &ev->nafter)) ||
        !FAST_LIT(p, end, ",\"source\":{\"connector\":\"pgcdc\",\"version\":") ||
        !(p = fast_string(p, end)) || !FAST_LIT(p, end, ",\"name\":") ||
        !(p = fast_string(p, end)) || !FAST_LIT(p, end, ",\"db\":") || !(p = fast_string(p, end)) ||
        !FAST_LIT(p, end, ",\"schema\":") || !(q = fast_string(p, end)))
        return 0;
    ev->schema = (struct pgcdc_span){p, (size_t)(q - p)};
    p = q;
    if (!FAST_LIT(p, end, ",\"table\":") || !(q = fast_string(p, end)))
        return 0;
    ev->table = (struct pgcdc_span){p, (size_t)(q - p)};
    p = q;
    uint64_t xid;
    if (!FAST_LIT(p, end, ",\"txId\":") || !fast_u64(&p, end, &xid) ||
        !FAST_LIT(p, end, ",\"lsn\":") || !fast_u64(&p, end, &ev->lsn) ||
        !FAST_LIT(p, end, ",\"commit_lsn\":") || !fast_u64(&p, end, &ev->commit_lsn) ||
        !FAST_LIT(p, end, ",\"ts_ms\":") || !(p = fast_bare(p, end)) ||
        !FAST_LIT(p, end, ",\"snapshot\":\""))
        return 0;
    if (FAST_LIT(p, end, "last\""))
        ev->snapshot_last = true;
    else if (!FAST_LIT(p, end, "true\""))
        return 0;
    if (!FAST_LIT(p, end, "},\"op\":\"r\",\"ts_ms\":") || !(p = fast_bare(p, end)) ||
        p + 1 != end || *p != '}')
        return 0;
    ev->op = 'r';
    ev->snapshot = true;
    ev->has_after = true;
    ev->before = ps->cols[0];
    ev->after = ps->cols[1];
    return 1;
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
