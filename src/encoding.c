/*
 * encoding.c — source bytes to UTF-8 (see encoding.h): glibc iconv for the server
 * encodings that need converting, a validator for SQL_ASCII, and the one policy for what
 * is not valid.
 */
#include "pgcdc/encoding.h"

#include <errno.h>
#include <iconv.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "pgcdc/config.h"
#include "pgcdc/json.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/metrics.h"

#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */
#define LOG_EVERY_MS 10000         /* replace: at most one warning this often */

/* PostgreSQL's server encodings (pg_wchar.h) and glibc iconv's names for them. */
static const struct {
    const char *pg, *iconv;
} iconv_names[] = {
    {"LATIN1", "ISO-8859-1"},     {"LATIN2", "ISO-8859-2"},
    {"LATIN3", "ISO-8859-3"},     {"LATIN4", "ISO-8859-4"},
    {"LATIN5", "ISO-8859-9"},     {"LATIN6", "ISO-8859-10"},
    {"LATIN7", "ISO-8859-13"},    {"LATIN8", "ISO-8859-14"},
    {"LATIN9", "ISO-8859-15"},    {"LATIN10", "ISO-8859-16"},
    {"ISO_8859_5", "ISO-8859-5"}, {"ISO_8859_6", "ISO-8859-6"},
    {"ISO_8859_7", "ISO-8859-7"}, {"ISO_8859_8", "ISO-8859-8"},
    {"WIN866", "CP866"},          {"WIN874", "CP874"},
    {"WIN1250", "CP1250"},        {"WIN1251", "CP1251"},
    {"WIN1252", "CP1252"},        {"WIN1253", "CP1253"},
    {"WIN1254", "CP1254"},        {"WIN1255", "CP1255"},
    {"WIN1256", "CP1256"},        {"WIN1257", "CP1257"},
    {"WIN1258", "CP1258"},        {"KOI8R", "KOI8-R"},
    {"KOI8U", "KOI8-U"},          {"EUC_JP", "EUC-JP"},
    {"EUC_CN", "EUC-CN"},         {"EUC_KR", "EUC-KR"},
    {"EUC_TW", "EUC-TW"},         {"EUC_JIS_2004", "EUC-JISX0213"},
};

int pgcdc_encoding_open(struct pgcdc_encoding *e, const char *server_encoding, char *err,
                        size_t errlen)
{
    pgcdc_encoding_close(e);
    snprintf(e->name, sizeof(e->name), "%s", server_encoding);
    /* A server that does not say (none we know of) is taken at its word for UTF-8. */
    if (!*server_encoding || strcmp(server_encoding, "UTF8") == 0) {
        e->kind = PGCDC_ENC_UTF8;
        return PGCDC_OK;
    }
    if (strcmp(server_encoding, "SQL_ASCII") == 0) {
        e->kind = PGCDC_ENC_SQL_ASCII;
        return PGCDC_OK;
    }
    for (size_t i = 0; i < sizeof(iconv_names) / sizeof(iconv_names[0]); i++) {
        if (strcmp(iconv_names[i].pg, server_encoding) != 0)
            continue;
        iconv_t cd = iconv_open("UTF-8", iconv_names[i].iconv);
        if (cd == (iconv_t)-1)
            break;
        e->kind = PGCDC_ENC_ICONV;
        e->cd = cd;
        return PGCDC_OK;
    }
    snprintf(err, errlen,
             "the source's server_encoding %s cannot be converted to UTF-8 by this system: use "
             "a database in UTF8 (or another encoding iconv knows) as the source",
             server_encoding);
    return PGCDC_ERR;
}

void pgcdc_encoding_close(struct pgcdc_encoding *e)
{
    if (e->cd)
        iconv_close((iconv_t)e->cd);
    e->cd = NULL;
    e->kind = PGCDC_ENC_UTF8;
    e->nbad = 0;
    pgcdc_buf_free(&e->out);
}

size_t pgcdc_utf8_len(const unsigned char *s, size_t n)
{
    size_t need;
    unsigned cp;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        need = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        need = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        need = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n < need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    /* Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8. */
    if ((need == 3 && cp < 0x800) || (need == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return need;
}

size_t pgcdc_utf8_valid_prefix(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = pgcdc_utf8_len(u + i, n - i);
        if (k == 0)
            return i;
        i += k;
    }
    return n;
}

int pgcdc_utf8_append_repaired(struct pgcdc_buf *b, const char *s, size_t n, size_t *nbad)
{
    while (n > 0) {
        size_t ok = pgcdc_utf8_valid_prefix(s, n);
        if (pgcdc_buf_append(b, s, ok) < 0)
            return PGCDC_ERR;
        if (ok == n)
            break;
        if (pgcdc_buf_append(b, REPLACEMENT, 3) < 0)
            return PGCDC_ERR;
        (*nbad)++;
        s += ok + 1;
        n -= ok + 1;
    }
    return PGCDC_OK;
}

static bool all_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return false;
    return true;
}

/* iconv the whole message into e->out; an unconvertible byte becomes U+FFFD. */
static int convert(struct pgcdc_encoding *e, const char *msg, size_t len)
{
    iconv_t cd = (iconv_t)e->cd;
    char *in = (char *)msg; /* iconv's prototype; it does not write through it */
    size_t inleft = len;
    pgcdc_buf_reset(&e->out);
    iconv(cd, NULL, NULL, NULL, NULL); /* initial shift state */
    while (inleft > 0) {
        /* A byte of a server encoding is at most 3 bytes of UTF-8, or 4 for 4-byte input. */
        if (pgcdc_buf_reserve(&e->out, inleft * 3 + 4) < 0)
            return PGCDC_ERR;
        char *out = e->out.data + e->out.len;
        size_t outleft = e->out.cap - e->out.len - 1;
        size_t r = iconv(cd, &in, &inleft, &out, &outleft);
        e->out.len = (size_t)(out - e->out.data);
        if (r != (size_t)-1 || errno == E2BIG)
            continue;
        /* EILSEQ or EINVAL (cut short): a byte the encoding leaves undefined. */
        if (e->nbad++ == 0)
            e->first_bad = e->out.len;
        if (pgcdc_buf_append(&e->out, REPLACEMENT, 3) < 0)
            return PGCDC_ERR;
        in++;
        inleft--;
        iconv(cd, NULL, NULL, NULL, NULL);
    }
    e->out.data[e->out.len] = '\0';
    return PGCDC_OK;
}

int pgcdc_encoding_to_utf8(struct pgcdc_encoding *e, const char **msg, size_t *len, char *err,
                           size_t errlen)
{
    e->nbad = 0;
    int rc = PGCDC_OK;
    if (e->kind == PGCDC_ENC_SQL_ASCII) {
        size_t ok = pgcdc_utf8_valid_prefix(*msg, *len);
        if (ok == *len)
            return PGCDC_OK;
        pgcdc_buf_reset(&e->out);
        e->first_bad = ok;
        if (pgcdc_buf_append(&e->out, *msg, ok) < 0 ||
            pgcdc_utf8_append_repaired(&e->out, *msg + ok, *len - ok, &e->nbad) < 0)
            rc = PGCDC_ERR;
    } else if (e->kind == PGCDC_ENC_ICONV) {
        if (all_ascii(*msg, *len))
            return PGCDC_OK;
        rc = convert(e, *msg, *len);
    } else {
        return PGCDC_OK;
    }
    if (rc < 0) {
        snprintf(err, errlen, "out of memory converting a message from %s to UTF-8", e->name);
        return rc;
    }
    *msg = e->out.data;
    *len = e->out.len;
    return PGCDC_OK;
}

static bool span_has(struct pgcdc_span s, const char *at)
{
    return s.p && at >= s.p && at < s.p + s.len;
}

/* The name of the column whose name or value holds at, or NULL. */
static const struct pgcdc_col *column_at(const struct pgcdc_col *cols, size_t n, const char *at)
{
    for (size_t i = 0; i < n; i++)
        if (span_has(cols[i].name, at) || span_has(cols[i].value, at))
            return &cols[i];
    return NULL;
}

int pgcdc_encoding_check_change(const struct pgcdc_encoding *e, const struct pgcdc_change *ch,
                                const char *schema, const char *table, int policy, char *err,
                                size_t errlen)
{
    const char *at = e->out.data + e->first_bad;
    const struct pgcdc_col *c = column_at(ch->columns, ch->ncolumns, at);
    if (!c)
        c = column_at(ch->identity, ch->nidentity, at);
    char column[256] = "(the table's name)";
    if (c && pgcdc_json_unescape(c->name, column, sizeof(column)) < 0)
        snprintf(column, sizeof(column), "?");
    return pgcdc_encoding_invalid(policy, e->name, schema, table, column, ch->lsn, e->nbad, err,
                                  errlen);
}

int pgcdc_encoding_invalid(int policy, const char *encoding, const char *schema, const char *table,
                           const char *column, uint64_t lsn, size_t nbad, char *err, size_t errlen)
{
    char l[PGCDC_LSN_BUFLEN];
    pgcdc_lsn_format(lsn, l);
    if (policy != PGCDC_INVALID_UTF8_REPLACE) {
        snprintf(err, errlen,
                 "table %s.%s column %s at LSN %s holds bytes that are not valid UTF-8 "
                 "(server_encoding %s): stopped before it, nothing from there on is confirmed; "
                 "fix the value in the source, or set source.invalid_utf8 = replace to write "
                 "U+FFFD instead",
                 schema, table, column, l, encoding);
        return PGCDC_ERR;
    }
    /* Parallel snapshot readers get here from several threads: the counters are atomic,
     * and one thread wins each 10 s window's warning. */
    static _Atomic int64_t last_log_ms;
    static _Atomic uint64_t unlogged;
    atomic_fetch_add(&pgcdc_metrics.invalid_utf8_replaced, nbad);
    atomic_fetch_add(&unlogged, nbad);
    int64_t now = pgcdc_mono_ms(), last = atomic_load(&last_log_ms);
    if ((last && now - last < LOG_EVERY_MS) ||
        !atomic_compare_exchange_strong(&last_log_ms, &last, now))
        return PGCDC_OK;
    char n[24], where[600];
    snprintf(n, sizeof(n), "%" PRIu64, atomic_exchange(&unlogged, 0));
    snprintf(where, sizeof(where), "%s.%s", schema, table);
    pgcdc_log(PGCDC_LOG_WARN,
              "bytes that are not valid UTF-8 were replaced by U+FFFD (source.invalid_utf8 = "
              "replace)",
              "table", where, "column", column, "lsn", l, "server_encoding", encoding,
              "replaced_since_last_warning", n, NULL);
    return PGCDC_OK;
}
