/*
 * json.c — the cold half of the raw-token JSON scanner (see json.h).
 */
#include "pgcdc/json.h"

#include <stdio.h>

int pgcdc_json_fail(struct pgcdc_json_scan *s, const char *why)
{
    snprintf(s->err, s->errlen, "malformed %s at byte %ld: %s", s->what ? s->what : "JSON",
             (long)(s->p - s->start), why);
    return PGCDC_ERR;
}

int pgcdc_json_expect_slow(struct pgcdc_json_scan *s, char c)
{
    pgcdc_json_skip_ws(s);
    if (s->p >= s->end || *s->p != c) {
        char why[32];
        snprintf(why, sizeof(why), "expected '%c'", c);
        return pgcdc_json_fail(s, why);
    }
    s->p++;
    return PGCDC_OK;
}

int pgcdc_json_value(struct pgcdc_json_scan *s, struct pgcdc_span *out)
{
    pgcdc_json_skip_ws(s);
    if (s->p >= s->end)
        return pgcdc_json_fail(s, "expected a value");
    const char *b = s->p;
    char c = *s->p;
    if (c == '"')
        return pgcdc_json_string(s, out);
    if (c == '{' || c == '[') {
        int depth = 0;
        while (s->p < s->end) {
            c = *s->p;
            if (c == '"') {
                struct pgcdc_span tmp;
                if (pgcdc_json_string(s, &tmp) < 0)
                    return PGCDC_ERR;
                continue;
            }
            s->p++;
            if (c == '{' || c == '[')
                depth++;
            else if ((c == '}' || c == ']') && --depth == 0)
                break;
        }
        if (depth != 0)
            return pgcdc_json_fail(s, "unbalanced brackets");
    } else {
        /* number, true, false, null: up to the next delimiter */
        static const bool delim[256] = {[','] = true, ['}'] = true,  [']'] = true,
                                        [' '] = true, ['\n'] = true, ['\t'] = true,
                                        ['\r'] = true};
        while (s->p < s->end && !delim[(unsigned char)*s->p])
            s->p++;
        if (s->p == b)
            return pgcdc_json_fail(s, "empty value");
    }
    out->p = b;
    out->len = (size_t)(s->p - b);
    return PGCDC_OK;
}

/* Four hex digits at p into *out. Returns 0, or -1 when one is not a hex digit. */
static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = pgcdc_hex_digit(p[i]);
        if (h < 0)
            return -1;
        v = v * 16 + (unsigned)h;
    }
    *out = v;
    return 0;
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
                unsigned cp, lo;
                if (e - p < 4 || hex4(p, &cp) < 0)
                    return -1;
                p += 4;
                /* UTF-16 surrogates (RFC 8259 section 7): a high one, D800-DBFF, stands only
                 * with a low one, DC00-DFFF, as the very next escape; either alone is no
                 * character, and UTF-8 has no encoding for it (RFC 3629). */
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return -1;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) < 0 ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return -1;
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
