/*
 * json.h — the raw-token JSON scanner shared by the wal2json decoder and replay's event
 * reader. It walks a buffer once and records spans into it; it never converts a value,
 * so a number keeps every digit (general-purpose parsers such as cJSON turn numbers into
 * doubles, which corrupts bigints past 2^53 and numerics).
 *
 * The hot functions are static inline: the decoder's fast path depends on it.
 */
#ifndef PGCDC_JSON_H
#define PGCDC_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pgcdc/common.h"

struct pgcdc_json_scan {
    const char *p;     /* next byte */
    const char *end;
    const char *start; /* for offsets in messages */
    const char *what;  /* what is being read, for messages: "wal2json message", "event" */
    char *err;
    size_t errlen;
};

/* Put "malformed <what> at byte N: <why>" in s->err; returns PGCDC_ERR. */
int pgcdc_json_fail(struct pgcdc_json_scan *s, const char *why);

/* Skip whitespace, then consume c or fail. */
int pgcdc_json_expect_slow(struct pgcdc_json_scan *s, char c);

/* Skip any JSON value (nested or not); out spans exactly its bytes. */
int pgcdc_json_value(struct pgcdc_json_scan *s, struct pgcdc_span *out);

/*
 * Unescape a raw JSON string span (quotes included) into dst as a C string.
 * Returns the length, or -1 when it does not fit in dstlen or is not a JSON string (a \u
 * surrogate not in a high D800-DBFF + low DC00-DFFF pair is not one). The one unescape:
 * decoder, relations and replay all use it.
 */
int pgcdc_json_unescape(struct pgcdc_span s, char *dst, size_t dstlen);

static inline void pgcdc_json_skip_ws(struct pgcdc_json_scan *s)
{
    /* Every JSON whitespace byte is <= ' ': one compare settles the usual case. */
    while (s->p < s->end && (unsigned char)*s->p <= ' ' &&
           (*s->p == ' ' || *s->p == '\n' || *s->p == '\t' || *s->p == '\r'))
        s->p++;
}

/* Consume c. wal2json and our events have no whitespace between tokens: test the byte
 * first, and only then skip whitespace. */
static inline int pgcdc_json_expect(struct pgcdc_json_scan *s, char c)
{
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return PGCDC_OK;
    }
    return pgcdc_json_expect_slow(s, c);
}

/* Whether the next non-blank byte is c; consumes it if so. */
static inline bool pgcdc_json_accept(struct pgcdc_json_scan *s, char c)
{
    pgcdc_json_skip_ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return true;
    }
    return false;
}

/* Whether the next bytes are exactly the literal (no whitespace skipped). */
#define PGCDC_JSON_AT_LIT(s, lit)                                                                  \
    ((size_t)((s)->end - (s)->p) >= sizeof(lit) - 1 && memcmp((s)->p, (lit), sizeof(lit) - 1) == 0)

/*
 * SWAR ("SIMD within a register") byte search: a 64-bit word with every byte set to c;
 * a mask whose lowest set bit marks the first zero byte of w (higher bits may be false
 * positives, the lowest one never is); the index of that byte on a little-endian CPU.
 */
#define PGCDC_SWAR_REP(c) (UINT64_C(0x0101010101010101) * (uint8_t)(c))

static inline uint64_t pgcdc_swar_zero(uint64_t w)
{
    return (w - UINT64_C(0x0101010101010101)) & ~w & UINT64_C(0x8080808080808080);
}

static inline size_t pgcdc_swar_first(uint64_t m)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return (size_t)__builtin_ctzll(m) / 8;
#else
    return (size_t)__builtin_clzll(m) / 8;
#endif
}

/* A JSON string starting at s->p (after whitespace); out spans it with its quotes. */
static inline int pgcdc_json_string(struct pgcdc_json_scan *s, struct pgcdc_span *out)
{
    if (s->p >= s->end || *s->p != '"') {
        pgcdc_json_skip_ws(s);
        if (s->p >= s->end || *s->p != '"')
            return pgcdc_json_fail(s, "expected a string");
    }
    const char *b = s->p++;
    /* Find the first '"' or '\\' eight bytes at a time. Most strings hold neither escape
     * nor backslash and end there; otherwise the loop below takes over from that byte
     * (no quote lies before it, so memchr may start there). */
    const char *p = s->p;
    while (s->end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t m = pgcdc_swar_zero(w ^ PGCDC_SWAR_REP('"')) |
                     pgcdc_swar_zero(w ^ PGCDC_SWAR_REP('\\'));
        if (m) {
            p += pgcdc_swar_first(m);
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
            return pgcdc_json_fail(s, "unterminated string");
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

/* Whether a key span (quotes included) is the literal. */
static inline bool pgcdc_json_key_is(struct pgcdc_span k, const char *lit)
{
    size_t n = strlen(lit);
    return k.len == n + 2 && memcmp(k.p + 1, lit, n) == 0;
}

/* Whether a bare token (true, false, null) is the literal. */
static inline bool pgcdc_json_tok_is(struct pgcdc_span v, const char *lit)
{
    size_t n = strlen(lit);
    return v.len == n && memcmp(v.p, lit, n) == 0;
}

/* A bare unsigned integer token; -1 if it is not one or overflows. */
static inline int pgcdc_json_u64(struct pgcdc_span v, uint64_t *out)
{
    uint64_t x = 0;
    if (v.len == 0 || v.len > 20)
        return -1;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(v.p[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    *out = x;
    return 0;
}

#endif
