/*
 * decode.c — wal2json format-version 2 messages -> struct pgcdc_change.
 *
 * A small scanner built for this one producer: it walks the message once, records spans
 * into the caller's buffer, and never converts a value. General-purpose parsers (cJSON)
 * turn numbers into doubles, which corrupts bigints past 2^53 and numerics; here a value
 * is the exact token wal2json wrote.
 */
#include "pgcdc/decode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc/lsn.h"

enum { ARR_COLUMNS = 0, ARR_IDENTITY = 1, ARR_PK = 2 };

struct scan {
    const char *p;
    const char *end;
    const char *start;
    char *err;
    size_t errlen;
};

static int fail(struct scan *s, const char *what)
{
    snprintf(s->err, s->errlen, "malformed wal2json message at byte %ld: %s",
             (long)(s->p - s->start), what);
    return PGCDC_ERR;
}

static void skip_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\t' || *s->p == '\r'))
        s->p++;
}

static int expect(struct scan *s, char c)
{
    skip_ws(s);
    if (s->p >= s->end || *s->p != c) {
        char what[32];
        snprintf(what, sizeof(what), "expected '%c'", c);
        return fail(s, what);
    }
    s->p++;
    return PGCDC_OK;
}

/* A JSON string starting at s->p; out spans it with its quotes. */
static int scan_string(struct scan *s, struct pgcdc_span *out)
{
    skip_ws(s);
    if (s->p >= s->end || *s->p != '"')
        return fail(s, "expected a string");
    const char *b = s->p++;
    for (;;) {
        const char *q = memchr(s->p, '"', (size_t)(s->end - s->p));
        if (!q)
            return fail(s, "unterminated string");
        /* The quote is escaped when preceded by an odd run of backslashes. */
        const char *k = q;
        while (k > s->p && k[-1] == '\\')
            k--;
        s->p = q + 1;
        if (((q - k) & 1) == 0)
            break;
    }
    out->p = b;
    out->len = (size_t)(s->p - b);
    return PGCDC_OK;
}

/* Any JSON value; out spans exactly its bytes. */
static int scan_value(struct scan *s, struct pgcdc_span *out)
{
    skip_ws(s);
    if (s->p >= s->end)
        return fail(s, "expected a value");
    const char *b = s->p;
    char c = *s->p;
    if (c == '"')
        return scan_string(s, out);
    if (c == '{' || c == '[') {
        int depth = 0;
        while (s->p < s->end) {
            c = *s->p;
            if (c == '"') {
                struct pgcdc_span tmp;
                if (scan_string(s, &tmp) < 0)
                    return PGCDC_ERR;
                continue;
            }
            s->p++;
            if (c == '{' || c == '[')
                depth++;
            else if (c == '}' || c == ']') {
                if (--depth == 0)
                    break;
            }
        }
        if (depth != 0)
            return fail(s, "unbalanced brackets");
    } else {
        /* number, true, false, null: up to the next delimiter */
        while (s->p < s->end && *s->p != ',' && *s->p != '}' && *s->p != ']' && *s->p != ' ' &&
               *s->p != '\n')
            s->p++;
        if (s->p == b)
            return fail(s, "empty value");
    }
    out->p = b;
    out->len = (size_t)(s->p - b);
    return PGCDC_OK;
}

static int span_eq(struct pgcdc_span k, const char *lit)
{
    size_t n = strlen(lit);
    return k.len == n + 2 && memcmp(k.p + 1, lit, n) == 0;
}

static int span_u64(struct pgcdc_span v, uint64_t *out)
{
    uint64_t x = 0;
    if (v.len == 0 || v.len > 20)
        return -1;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(v.p[i] - '0');
    }
    *out = x;
    return 0;
}

static int span_lsn(struct pgcdc_span v, uint64_t *out)
{
    if (v.len < 2 || v.p[0] != '"')
        return -1;
    return pgcdc_lsn_parse(v.p + 1, v.len - 2, out);
}

static int grow(struct pgcdc_decoder *d, int which, size_t n)
{
    if (n <= d->cap[which])
        return PGCDC_OK;
    size_t cap = d->cap[which] ? d->cap[which] * 2 : 16;
    while (cap < n)
        cap *= 2;
    struct pgcdc_col *p = realloc(d->cols[which], cap * sizeof(*p));
    if (!p)
        return PGCDC_ERR;
    d->cols[which] = p;
    d->cap[which] = cap;
    return PGCDC_OK;
}

/* [{"name":..,"typeoid":..,"value":..}, ...] into d->cols[which]. */
static int scan_columns(struct scan *s, struct pgcdc_decoder *d, int which, size_t *count)
{
    size_t n = 0;
    if (expect(s, '[') < 0)
        return PGCDC_ERR;
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        *count = 0;
        return PGCDC_OK;
    }
    for (;;) {
        if (grow(d, which, n + 1) < 0)
            return fail(s, "out of memory");
        struct pgcdc_col *c = &d->cols[which][n];
        memset(c, 0, sizeof(*c));
        if (expect(s, '{') < 0)
            return PGCDC_ERR;
        for (;;) {
            struct pgcdc_span key, val;
            if (scan_string(s, &key) < 0 || expect(s, ':') < 0 || scan_value(s, &val) < 0)
                return PGCDC_ERR;
            if (span_eq(key, "name"))
                c->name = val;
            else if (span_eq(key, "value"))
                c->value = val;
            else if (span_eq(key, "typeoid")) {
                uint64_t oid;
                if (span_u64(val, &oid) < 0 || oid > UINT32_MAX)
                    return fail(s, "bad typeoid");
                c->typeoid = (uint32_t)oid;
            }
            skip_ws(s);
            if (s->p < s->end && *s->p == ',') {
                s->p++;
                continue;
            }
            if (expect(s, '}') < 0)
                return PGCDC_ERR;
            break;
        }
        if (c->name.len == 0)
            return fail(s, "column without a name");
        n++;
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (expect(s, ']') < 0)
            return PGCDC_ERR;
        break;
    }
    *count = n;
    return PGCDC_OK;
}

void pgcdc_decoder_init(struct pgcdc_decoder *d)
{
    memset(d, 0, sizeof(*d));
}

void pgcdc_decoder_free(struct pgcdc_decoder *d)
{
    for (int i = 0; i < 3; i++)
        free(d->cols[i]);
    memset(d, 0, sizeof(*d));
}

int pgcdc_decode(struct pgcdc_decoder *d, const char *msg, size_t len, struct pgcdc_change *out,
                 char *err, size_t errlen)
{
    struct scan s = {msg, msg + len, msg, err, errlen};
    memset(out, 0, sizeof(*out));
    if (expect(&s, '{') < 0)
        return PGCDC_ERR;
    for (;;) {
        struct pgcdc_span key, val;
        if (scan_string(&s, &key) < 0 || expect(&s, ':') < 0)
            return PGCDC_ERR;
        if (span_eq(key, "columns")) {
            if (scan_columns(&s, d, ARR_COLUMNS, &out->ncolumns) < 0)
                return PGCDC_ERR;
            out->has_columns = true;
        } else if (span_eq(key, "identity")) {
            if (scan_columns(&s, d, ARR_IDENTITY, &out->nidentity) < 0)
                return PGCDC_ERR;
            out->has_identity = true;
        } else if (span_eq(key, "pk")) {
            if (scan_columns(&s, d, ARR_PK, &out->npk) < 0)
                return PGCDC_ERR;
        } else {
            if (scan_value(&s, &val) < 0)
                return PGCDC_ERR;
            /* Non-transactional messages carry "xid":null and "timestamp":null. */
            if (val.len == 4 && memcmp(val.p, "null", 4) == 0) {
                /* absent */
            } else if (span_eq(key, "action")) {
                if (val.len != 3 || val.p[0] != '"')
                    return fail(&s, "bad action");
                out->action = (enum pgcdc_action)val.p[1];
            } else if (span_eq(key, "xid")) {
                uint64_t x;
                if (span_u64(val, &x) < 0 || x > UINT32_MAX)
                    return fail(&s, "bad xid");
                out->xid = (uint32_t)x;
            } else if (span_eq(key, "lsn")) {
                if (span_lsn(val, &out->lsn) < 0)
                    return fail(&s, "bad lsn");
            } else if (span_eq(key, "nextlsn")) {
                if (span_lsn(val, &out->nextlsn) < 0)
                    return fail(&s, "bad nextlsn");
            } else if (span_eq(key, "timestamp")) {
                if (val.len < 2 || pgcdc_parse_pg_timestamp(val.p + 1, val.len - 2, &out->ts_ms) < 0)
                    return fail(&s, "bad timestamp");
            } else if (span_eq(key, "schema")) {
                out->schema = val;
            } else if (span_eq(key, "table")) {
                out->table = val;
            }
        }
        skip_ws(&s);
        if (s.p < s.end && *s.p == ',') {
            s.p++;
            continue;
        }
        if (expect(&s, '}') < 0)
            return PGCDC_ERR;
        break;
    }
    switch (out->action) {
    case PGCDC_ACT_BEGIN:
    case PGCDC_ACT_COMMIT:
    case PGCDC_ACT_MESSAGE:
        break;
    case PGCDC_ACT_INSERT:
    case PGCDC_ACT_UPDATE:
    case PGCDC_ACT_DELETE:
    case PGCDC_ACT_TRUNCATE:
        if (out->schema.len < 2 || out->table.len < 2)
            return fail(&s, "change without schema or table");
        break;
    default:
        return fail(&s, "unknown action");
    }
    out->columns = d->cols[ARR_COLUMNS];
    out->identity = d->cols[ARR_IDENTITY];
    out->pk = d->cols[ARR_PK];
    return PGCDC_OK;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int pgcdc_json_unescape(struct pgcdc_span sp, char *dst, size_t dstlen)
{
    if (sp.len < 2 || sp.p[0] != '"' || sp.p[sp.len - 1] != '"' || dstlen == 0)
        return -1;
    size_t o = 0;
    const char *p = sp.p + 1, *e = sp.p + sp.len - 1;
    while (p < e) {
        char c = *p++;
        if (c == '\\') {
            if (p >= e)
                return -1;
            char x = *p++;
            switch (x) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': {
                if (e - p < 4)
                    return -1;
                unsigned cp = 0;
                for (int i = 0; i < 4; i++) {
                    int h = hexval(p[i]);
                    if (h < 0)
                        return -1;
                    cp = cp * 16 + (unsigned)h;
                }
                p += 4;
                /* Surrogate pair: wal2json only escapes control characters, but be exact. */
                if (cp >= 0xD800 && cp <= 0xDBFF && e - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                    unsigned lo = 0;
                    for (int i = 0; i < 4; i++) {
                        int h = hexval(p[2 + i]);
                        if (h < 0)
                            return -1;
                        lo = lo * 16 + (unsigned)h;
                    }
                    p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                char u[4];
                int n;
                if (cp < 0x80) {
                    u[0] = (char)cp;
                    n = 1;
                } else if (cp < 0x800) {
                    u[0] = (char)(0xC0 | (cp >> 6));
                    u[1] = (char)(0x80 | (cp & 0x3F));
                    n = 2;
                } else if (cp < 0x10000) {
                    u[0] = (char)(0xE0 | (cp >> 12));
                    u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    u[2] = (char)(0x80 | (cp & 0x3F));
                    n = 3;
                } else {
                    u[0] = (char)(0xF0 | (cp >> 18));
                    u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    u[3] = (char)(0x80 | (cp & 0x3F));
                    n = 4;
                }
                if (o + (size_t)n >= dstlen)
                    return -1;
                memcpy(dst + o, u, (size_t)n);
                o += (size_t)n;
                continue;
            }
            default: c = x; break; /* \" \\ \/ */
            }
        }
        if (o + 1 >= dstlen)
            return -1;
        dst[o++] = c;
    }
    dst[o] = '\0';
    return (int)o;
}

static int digits(const char **p, const char *e, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (*p >= e || **p < '0' || **p > '9')
            return -1;
        v = v * 10 + (*(*p)++ - '0');
    }
    *out = v;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int pgcdc_parse_pg_timestamp(const char *s, size_t len, int64_t *out_ms)
{
    const char *p = s, *e = s + len;
    int Y, M, D, h, mi, sec, ms = 0;
    if (digits(&p, e, 4, &Y) || p >= e || *p++ != '-' || digits(&p, e, 2, &M) || p >= e ||
        *p++ != '-' || digits(&p, e, 2, &D) || p >= e || (*p != ' ' && *p != 'T'))
        return -1;
    p++;
    if (digits(&p, e, 2, &h) || p >= e || *p++ != ':' || digits(&p, e, 2, &mi) || p >= e ||
        *p++ != ':' || digits(&p, e, 2, &sec))
        return -1;
    if (p < e && *p == '.') {
        p++;
        int n = 0;
        while (p < e && *p >= '0' && *p <= '9') {
            if (n < 3)
                ms = ms * 10 + (*p - '0');
            n++;
            p++;
        }
        if (n == 0)
            return -1;
        for (; n < 3; n++)
            ms *= 10;
    }
    int64_t off = 0;
    if (p < e && (*p == '+' || *p == '-')) {
        int sign = *p++ == '-' ? -1 : 1, oh, om = 0, os = 0;
        if (digits(&p, e, 2, &oh))
            return -1;
        if (p < e && *p == ':') {
            p++;
            if (digits(&p, e, 2, &om))
                return -1;
            if (p < e && *p == ':') {
                p++;
                if (digits(&p, e, 2, &os))
                    return -1;
            }
        }
        off = sign * (oh * 3600 + om * 60 + os);
    }
    if (p != e || M < 1 || M > 12 || D < 1 || D > 31 || h > 24 || mi > 59 || sec > 60)
        return -1;
    int64_t secs = days_from_civil(Y, M, D) * 86400 + h * 3600 + mi * 60 + sec - off;
    *out_ms = secs * 1000 + ms;
    return 0;
}
