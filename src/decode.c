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

static inline void skip_ws(struct scan *s)
{
    /* Every JSON whitespace byte is <= ' ': one compare settles the usual case. */
    while (s->p < s->end && (unsigned char)*s->p <= ' ' &&
           (*s->p == ' ' || *s->p == '\n' || *s->p == '\t' || *s->p == '\r'))
        s->p++;
}

static __attribute__((noinline)) int expect_slow(struct scan *s, char c)
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

/* wal2json's format-version 2 has no whitespace between tokens: test the byte first. */
static inline int expect(struct scan *s, char c)
{
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return PGCDC_OK;
    }
    return expect_slow(s, c);
}

/* Whether the next bytes are exactly the literal (no whitespace skipped). */
#define AT_LIT(s, lit)                                                                             \
    ((size_t)((s)->end - (s)->p) >= sizeof(lit) - 1 && memcmp((s)->p, (lit), sizeof(lit) - 1) == 0)

/*
 * SWAR ("SIMD within a register") byte search: a 64-bit word with every byte set to c;
 * a mask whose lowest set bit marks the first zero byte of w (higher bits may be false
 * positives, the lowest one never is); the index of that byte on a little-endian CPU.
 */
#define SWAR_REP(c) (UINT64_C(0x0101010101010101) * (uint8_t)(c))

static inline uint64_t swar_zero(uint64_t w)
{
    return (w - UINT64_C(0x0101010101010101)) & ~w & UINT64_C(0x8080808080808080);
}

static inline size_t swar_first(uint64_t m)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return (size_t)__builtin_ctzll(m) / 8;
#else
    return (size_t)__builtin_clzll(m) / 8;
#endif
}

/* A JSON string starting at s->p; out spans it with its quotes. */
static int scan_string(struct scan *s, struct pgcdc_span *out)
{
    if (s->p >= s->end || *s->p != '"') {
        skip_ws(s);
        if (s->p >= s->end || *s->p != '"')
            return fail(s, "expected a string");
    }
    const char *b = s->p++;
    /* Find the first '"' or '\\' eight bytes at a time. Most strings hold neither escape
     * nor backslash and end there; otherwise the loop below takes over from that byte
     * (no quote lies before it, so memchr may start there). */
    const char *p = s->p;
    while (s->end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t m = swar_zero(w ^ SWAR_REP('"')) | swar_zero(w ^ SWAR_REP('\\'));
        if (m) {
            p += swar_first(m);
            break;
        }
        p += 8;
    }
    while (p < s->end && *p != '"' && *p != '\\')
        p++;
    if (p < s->end && *p == '"') {
        s->p = p + 1;
        out->p = b;
        out->len = (size_t)(s->p - b);
        return PGCDC_OK;
    }
    s->p = p;
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
        static const bool delim[256] = {
            [','] = true, ['}'] = true, [']'] = true, [' '] = true, ['\n'] = true};
        while (s->p < s->end && !delim[(unsigned char)*s->p])
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

/* One hex digit's value, or -1. */
static inline int hexdig(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20; /* 'A'-'F' -> 'a'-'f' */
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

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
        while (p < e && (x = hexdig(*p)) >= 0) {
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
static int scan_column_fast(struct scan *s, struct pgcdc_col *c)
{
    if (!AT_LIT(s, "{\"name\":"))
        return 0;
    s->p += sizeof("{\"name\":") - 1;
    if (s->p >= s->end || *s->p != '"')
        return 0; /* not a string: the general way decides */
    if (scan_string(s, &c->name) < 0)
        return PGCDC_ERR;
    if (!AT_LIT(s, ",\"typeoid\":"))
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
        if (!AT_LIT(s, ",\"value\":"))
            return 0;
        s->p += sizeof(",\"value\":") - 1;
        if (scan_value(s, &c->value) < 0)
            return PGCDC_ERR;
        if (s->p >= s->end || *s->p != '}')
            return 0;
    }
    s->p++; /* '}' */
    return 1;
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
        if (n >= d->cap[which] && grow(d, which, n + 1) < 0)
            return fail(s, "out of memory");
        struct pgcdc_col *c = &d->cols[which][n];
        const char *start = s->p;
        int fast = scan_column_fast(s, c);
        if (fast < 0)
            return PGCDC_ERR;
        if (fast == 0) {
            s->p = start;
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
        }
        if (c->name.len == 0)
            return fail(s, "column without a name");
        n++;
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
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
        return span_eq(k, "pk") ? K_PK : K_OTHER;
    case 5:
        return span_eq(k, "xid") ? K_XID : span_eq(k, "lsn") ? K_LSN : K_OTHER;
    case 7:
        return span_eq(k, "table") ? K_TABLE : K_OTHER;
    case 8:
        return span_eq(k, "action") ? K_ACTION : span_eq(k, "schema") ? K_SCHEMA : K_OTHER;
    case 9:
        return span_eq(k, "columns") ? K_COLUMNS : span_eq(k, "nextlsn") ? K_NEXTLSN : K_OTHER;
    case 10:
        return span_eq(k, "identity") ? K_IDENTITY : K_OTHER;
    case 11:
        return span_eq(k, "timestamp") ? K_TIMESTAMP : K_OTHER;
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
    struct scan s = {msg, msg + len, msg, err, errlen};
    memset(out, 0, sizeof(*out));
    if (expect(&s, '{') < 0)
        return PGCDC_ERR;
    for (;;) {
        struct pgcdc_span key, val;
        if (scan_string(&s, &key) < 0 || expect(&s, ':') < 0)
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
            if (scan_value(&s, &val) < 0)
                return PGCDC_ERR;
            /* Non-transactional messages carry "xid":null and "timestamp":null. */
            if (val.len == 4 && memcmp(val.p, "null", 4) == 0)
                k = K_OTHER; /* absent */
            switch (k) {
            case K_ACTION:
                if (val.len != 3 || val.p[0] != '"')
                    return fail(&s, "bad action");
                out->action = (enum pgcdc_action)val.p[1];
                break;
            case K_XID: {
                uint64_t x;
                if (span_u64(val, &x) < 0 || x > UINT32_MAX)
                    return fail(&s, "bad xid");
                out->xid = (uint32_t)x;
                break;
            }
            case K_LSN:
                if (span_lsn(val, &out->lsn) < 0)
                    return fail(&s, "bad lsn");
                break;
            case K_NEXTLSN:
                if (span_lsn(val, &out->nextlsn) < 0)
                    return fail(&s, "bad nextlsn");
                break;
            case K_TIMESTAMP:
                if (val.len < 2 || timestamp_ms(d, val.p + 1, val.len - 2, &out->ts_ms) < 0)
                    return fail(&s, "bad timestamp");
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
