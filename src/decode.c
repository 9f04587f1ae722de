/*
 * decode.c — wal2json format-version 2 messages -> struct pgcdc_change.
 *
 * A small scanner built for this one producer: it walks the message once, records spans
 * into the caller's buffer, and never converts a value. General-purpose parsers (cJSON)
 * turn numbers into doubles, which corrupts bigints past 2^53 and numerics; here a value
 * is the exact token wal2json wrote.
 */
#include "pgcdc/decode.h"

#include "pgcdc/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


enum { ARR_COLUMNS = 0, ARR_IDENTITY = 1, ARR_PK = 2 };

/*
 * A quoted LSN, "16/B374D848": what pgcdc_lsn_parse accepts (1-8 hex digits, '/', 1-8 hex
 * digits, nothing else), parsed in place; it comes three times per transaction and once
 * per change.
 */
static int span_lsn(struct pgcdc_span v, uint64_t *out)
{
    if (v.len < 2 || v.p[0] != '"')
        return -1;
    const char *p = v.p + 1, *e = v.p + v.len - 1;
    uint64_t half[2] = {0, 0};
    for (int h = 0; h < 2; h++) {
        const char *start = p;
        int x;
        while (p < e && (x = pgcdc_hex_digit(*p)) >= 0) {
            if (p - start == 8)
                return -1;
            half[h] = (half[h] << 4) | (uint64_t)x;
            p++;
        }
        if (p == start)
            return -1;
        if (h == 0) {
            if (p >= e || *p != '/')
                return -1;
            p++;
        }
    }
    if (p != e)
        return -1;
    *out = (half[0] << 32) | half[1];
    return 0;
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

/*
 * One column in the exact layout wal2json prints, {"name":"a","typeoid":23,"value":1} (pk
 * entries without ",value"), with no whitespace. Returns 1 when it matched, 0 when the
 * caller must read this column the general way (from the same start), PGCDC_ERR on an
 * error the general way would report too.
 */
static int scan_column_fast(struct pgcdc_json_scan *s, struct pgcdc_col *c)
{
    if (!PGCDC_JSON_AT_LIT(s, "{\"name\":"))
        return 0;
    s->p += sizeof("{\"name\":") - 1;
    if (s->p >= s->end || *s->p != '"')
        return 0; /* not a string: the general way decides */
    if (pgcdc_json_string(s, &c->name) < 0)
        return PGCDC_ERR;
    if (!PGCDC_JSON_AT_LIT(s, ",\"typeoid\":"))
        return 0;
    s->p += sizeof(",\"typeoid\":") - 1;
    uint64_t oid = 0;
    const char *d0 = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9' && s->p - d0 < 10)
        oid = oid * 10 + (uint64_t)(*s->p++ - '0');
    if (s->p == d0 || oid > UINT32_MAX || s->p >= s->end || (*s->p != ',' && *s->p != '}'))
        return 0;
    c->typeoid = (uint32_t)oid;
    c->value = (struct pgcdc_span){NULL, 0};
    if (*s->p == ',') {
        if (!PGCDC_JSON_AT_LIT(s, ",\"value\":"))
            return 0;
        s->p += sizeof(",\"value\":") - 1;
        if (pgcdc_json_value(s, &c->value) < 0)
            return PGCDC_ERR;
        if (s->p >= s->end || *s->p != '}')
            return 0;
    }
    s->p++; /* '}' */
    return 1;
}

/* [{"name":..,"typeoid":..,"value":..}, ...] into d->cols[which]. */
static int scan_columns(struct pgcdc_json_scan *s, struct pgcdc_decoder *d, int which, size_t *count)
{
    size_t n = 0;
    if (pgcdc_json_expect(s, '[') < 0)
        return PGCDC_ERR;
    pgcdc_json_skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        *count = 0;
        return PGCDC_OK;
    }
    for (;;) {
        if (n >= d->cap[which] && grow(d, which, n + 1) < 0)
            return pgcdc_json_fail(s, "out of memory");
        struct pgcdc_col *c = &d->cols[which][n];
        const char *start = s->p;
        int fast = scan_column_fast(s, c);
        if (fast < 0)
            return PGCDC_ERR;
        if (fast == 0) {
            s->p = start;
            memset(c, 0, sizeof(*c));
            if (pgcdc_json_expect(s, '{') < 0)
                return PGCDC_ERR;
            for (;;) {
                struct pgcdc_span key = {0}, val = {0};
                if (pgcdc_json_string(s, &key) < 0 || pgcdc_json_expect(s, ':') < 0 || pgcdc_json_value(s, &val) < 0)
                    return PGCDC_ERR;
                if (pgcdc_json_key_is(key, "name"))
                    c->name = val;
                else if (pgcdc_json_key_is(key, "value"))
                    c->value = val;
                else if (pgcdc_json_key_is(key, "typeoid")) {
                    uint64_t oid;
                    if (pgcdc_json_u64(val, &oid) < 0 || oid > UINT32_MAX)
                        return pgcdc_json_fail(s, "bad typeoid");
                    c->typeoid = (uint32_t)oid;
                }
                pgcdc_json_skip_ws(s);
                if (s->p < s->end && *s->p == ',') {
                    s->p++;
                    continue;
                }
                if (pgcdc_json_expect(s, '}') < 0)
                    return PGCDC_ERR;
                break;
            }
        }
        if (c->name.len == 0)
            return pgcdc_json_fail(s, "column without a name");
        n++;
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        pgcdc_json_skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (pgcdc_json_expect(s, ']') < 0)
            return PGCDC_ERR;
        break;
    }
    *count = n;
    return PGCDC_OK;
}

/* The top-level keys we read; one switch on the length instead of a chain of compares. */
enum key {
    K_OTHER,
    K_ACTION,
    K_XID,
    K_LSN,
    K_NEXTLSN,
    K_TIMESTAMP,
    K_SCHEMA,
    K_TABLE,
    K_COLUMNS,
    K_IDENTITY,
    K_PK
};

static enum key key_of(struct pgcdc_span k)
{
    switch (k.len) { /* quotes included */
    case 4:
        return pgcdc_json_key_is(k, "pk") ? K_PK : K_OTHER;
    case 5:
        return pgcdc_json_key_is(k, "xid") ? K_XID : pgcdc_json_key_is(k, "lsn") ? K_LSN : K_OTHER;
    case 7:
        return pgcdc_json_key_is(k, "table") ? K_TABLE : K_OTHER;
    case 8:
        return pgcdc_json_key_is(k, "action") ? K_ACTION : pgcdc_json_key_is(k, "schema") ? K_SCHEMA : K_OTHER;
    case 9:
        return pgcdc_json_key_is(k, "columns") ? K_COLUMNS : pgcdc_json_key_is(k, "nextlsn") ? K_NEXTLSN : K_OTHER;
    case 10:
        return pgcdc_json_key_is(k, "identity") ? K_IDENTITY : K_OTHER;
    case 11:
        return pgcdc_json_key_is(k, "timestamp") ? K_TIMESTAMP : K_OTHER;
    default:
        return K_OTHER;
    }
}

/* Every message of a transaction repeats its commit timestamp: parse it once. */
static int timestamp_ms(struct pgcdc_decoder *d, const char *p, size_t n, int64_t *out)
{
    if (d->ts_len != 0 && n == d->ts_len && memcmp(p, d->ts_text, n) == 0) {
        *out = d->ts_ms;
        return 0;
    }
    if (pgcdc_parse_pg_timestamp(p, n, out) < 0)
        return -1;
    if (n <= sizeof(d->ts_text)) {
        memcpy(d->ts_text, p, n);
        d->ts_len = n;
        d->ts_ms = *out;
    }
    return 0;
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
    struct pgcdc_json_scan s = {msg, msg + len, msg, "wal2json message", err, errlen};
    memset(out, 0, sizeof(*out));
    if (pgcdc_json_expect(&s, '{') < 0)
        return PGCDC_ERR;
    for (;;) {
        struct pgcdc_span key = {0}, val = {0};
        if (pgcdc_json_string(&s, &key) < 0 || pgcdc_json_expect(&s, ':') < 0)
            return PGCDC_ERR;
        enum key k = key_of(key);
        if (k == K_COLUMNS) {
            if (scan_columns(&s, d, ARR_COLUMNS, &out->ncolumns) < 0)
                return PGCDC_ERR;
            out->has_columns = true;
        } else if (k == K_IDENTITY) {
            if (scan_columns(&s, d, ARR_IDENTITY, &out->nidentity) < 0)
                return PGCDC_ERR;
            out->has_identity = true;
        } else if (k == K_PK) {
            if (scan_columns(&s, d, ARR_PK, &out->npk) < 0)
                return PGCDC_ERR;
        } else {
            if (pgcdc_json_value(&s, &val) < 0)
                return PGCDC_ERR;
            /* Non-transactional messages carry "xid":null and "timestamp":null. */
            if (val.len == 4 && memcmp(val.p, "null", 4) == 0)
                k = K_OTHER; /* absent */
            switch (k) {
            case K_ACTION:
                if (val.len != 3 || val.p[0] != '"')
                    return pgcdc_json_fail(&s, "bad action");
                out->action = (enum pgcdc_action)val.p[1];
                break;
            case K_XID: {
                uint64_t x;
                if (pgcdc_json_u64(val, &x) < 0 || x > UINT32_MAX)
                    return pgcdc_json_fail(&s, "bad xid");
                out->xid = (uint32_t)x;
                break;
            }
            case K_LSN:
                if (span_lsn(val, &out->lsn) < 0)
                    return pgcdc_json_fail(&s, "bad lsn");
                break;
            case K_NEXTLSN:
                if (span_lsn(val, &out->nextlsn) < 0)
                    return pgcdc_json_fail(&s, "bad nextlsn");
                break;
            case K_TIMESTAMP:
                if (val.len < 2 || timestamp_ms(d, val.p + 1, val.len - 2, &out->ts_ms) < 0)
                    return pgcdc_json_fail(&s, "bad timestamp");
                break;
            case K_SCHEMA:
                out->schema = val;
                break;
            case K_TABLE:
                out->table = val;
                break;
            default:
                break;
            }
        }
        if (s.p < s.end && *s.p == ',') {
            s.p++;
            continue;
        }
        pgcdc_json_skip_ws(&s);
        if (s.p < s.end && *s.p == ',') {
            s.p++;
            continue;
        }
        if (pgcdc_json_expect(&s, '}') < 0)
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
            return pgcdc_json_fail(&s, "change without schema or table");
        break;
    default:
        return pgcdc_json_fail(&s, "unknown action");
    }
    out->columns = d->cols[ARR_COLUMNS];
    out->identity = d->cols[ARR_IDENTITY];
    out->pk = d->cols[ARR_PK];
    return PGCDC_OK;
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
