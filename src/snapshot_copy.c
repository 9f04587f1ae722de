/*
 * snapshot_copy.c — COPY text rows -> wal2json's JSON tokens (see snapshot_copy.h). The
 * hot path of the snapshot: one pass per value, unescaping COPY and escaping JSON
 * together, no allocation once the buffers have grown to the widest row.
 */
#include "pgcdc/snapshot_copy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int pgcdc_snapcopy_init(struct pgcdc_snapcopy *sc, size_t ncols, const uint32_t *oids,
                        bool numeric_strings)
{
    memset(sc, 0, sizeof(*sc));
    sc->ncols = ncols;
    sc->oids = oids;
    sc->numeric_strings = numeric_strings;
    sc->off = calloc(ncols + 1, sizeof(*sc->off));
    return sc->off ? PGCDC_OK : PGCDC_ERR;
}

void pgcdc_snapcopy_free(struct pgcdc_snapcopy *sc)
{
    pgcdc_buf_free(&sc->vals);
    free(sc->off);
    sc->off = NULL;
}

static bool is_number(uint32_t oid)
{
    switch (oid) {
    case PGCDC_OID_INT2:
    case PGCDC_OID_INT4:
    case PGCDC_OID_INT8:
    case PGCDC_OID_OID:
    case PGCDC_OID_FLOAT4:
    case PGCDC_OID_FLOAT8:
    case PGCDC_OID_NUMERIC:
        return true;
    default:
        return false;
    }
}

int pgcdc_snapcopy_token(struct pgcdc_buf *b, uint32_t oid, const char *v, size_t n,
                         bool numeric_strings)
{
    if (is_number(oid)) {
        if (numeric_strings) /* then wal2json quotes every number, NaN included */
            return pgcdc_buf_append_json_str(b, v, n);
        if ((n == 3 && strncasecmp(v, "NaN", 3) == 0) ||
            (n == 8 && strncasecmp(v, "Infinity", 8) == 0) ||
            (n == 9 && strncasecmp(v, "-Infinity", 9) == 0))
            return pgcdc_buf_append_str(b, "null");
        return pgcdc_buf_append(b, v, n);
    }
    if (oid == PGCDC_OID_BOOL)
        return pgcdc_buf_append_str(b, n == 1 && v[0] == 't' ? "true" : "false");
    if (oid == PGCDC_OID_BYTEA && n >= 2 && v[0] == '\\' && v[1] == 'x')
        return pgcdc_buf_append_json_str(b, v + 2, n - 2);
    return pgcdc_buf_append_json_str(b, v, n);
}

/* Bytes that COPY's text or JSON's string form writes otherwise: backslash, quote, controls. */
static const unsigned char special[256] = {[0 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1};

/* The byte COPY's text format escapes as backslash + e (\b \f \n \r \t \v; any other e,
 * a backslash or the delimiter, stands for itself). */
static unsigned char copy_unescape(char e)
{
    switch (e) {
    case 'b':
        return '\b';
    case 'f':
        return '\f';
    case 'n':
        return '\n';
    case 'r':
        return '\r';
    case 't':
        return '\t';
    case 'v':
        return '\v';
    default:
        return (unsigned char)e;
    }
}

/*
 * A COPY-escaped string value v (n bytes) as a JSON string: the same bytes
 * pgcdc_buf_append_json_str would write for the unescaped value. Runs of plain bytes are
 * copied whole.
 */
static int copy_json_str(struct pgcdc_buf *b, const char *v, size_t n)
{
    /* At most \u00XX (6 bytes) for each byte, and the quotes. */
    if (pgcdc_buf_reserve(b, n * 6 + 2) < 0)
        return PGCDC_ERR;
    char *o = b->data + b->len;
    *o++ = '"';
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && !special[(unsigned char)v[run]])
            run++;
        memcpy(o, v + i, run - i);
        o += run - i;
        if ((i = run) >= n)
            break;
        unsigned char c = (unsigned char)v[i++];
        if (c == '\\' && i < n)
            c = copy_unescape(v[i++]);
        o = pgcdc_json_escape_byte(o, c);
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
    return PGCDC_OK;
}

/* The unescaped form of a COPY value into tmp (for the rare typed value with a backslash). */
static int unescape(struct pgcdc_buf *tmp, const char *v, size_t n)
{
    pgcdc_buf_reset(tmp);
    if (pgcdc_buf_reserve(tmp, n) < 0)
        return PGCDC_ERR;
    for (size_t i = 0; i < n; i++)
        tmp->data[tmp->len++] = v[i] == '\\' && i + 1 < n ? (char)copy_unescape(v[++i]) : v[i];
    tmp->data[tmp->len] = '\0';
    return PGCDC_OK;
}

/* One COPY value of type oid as its token. */
static int value_token(struct pgcdc_snapcopy *sc, uint32_t oid, const char *v, size_t n)
{
    if (n == 2 && v[0] == '\\' && v[1] == 'N')
        return pgcdc_buf_append_str(&sc->vals, "null");
    if (oid == PGCDC_OID_BYTEA && n >= 3 && v[0] == '\\' && v[1] == '\\' && v[2] == 'x')
        return pgcdc_buf_append_json_str(&sc->vals, v + 3, n - 3); /* hex digits: no escapes */
    bool plain_rule = !is_number(oid) && oid != PGCDC_OID_BOOL && oid != PGCDC_OID_BYTEA;
    if (plain_rule)
        return copy_json_str(&sc->vals, v, n);
    if (!memchr(v, '\\', n))
        return pgcdc_snapcopy_token(&sc->vals, oid, v, n, sc->numeric_strings);
    struct pgcdc_buf tmp = {0};
    int rc = unescape(&tmp, v, n);
    if (rc == PGCDC_OK)
        rc = pgcdc_snapcopy_token(&sc->vals, oid, tmp.data, tmp.len, sc->numeric_strings);
    pgcdc_buf_free(&tmp);
    return rc;
}

int pgcdc_snapcopy_row(struct pgcdc_snapcopy *sc, const char *row, size_t len,
                       struct pgcdc_col *cols, char *err, size_t errlen)
{
    if (len > 0 && row[len - 1] == '\n')
        len--;
    pgcdc_buf_reset(&sc->vals);
    const char *p = row, *end = row + len;
    for (size_t i = 0; i < sc->ncols; i++) {
        const char *tab = i + 1 < sc->ncols ? memchr(p, '\t', (size_t)(end - p)) : end;
        if (!tab || (i + 1 == sc->ncols && memchr(p, '\t', (size_t)(end - p)))) {
            snprintf(err, errlen, "snapshot: a COPY row does not have %zu columns", sc->ncols);
            return PGCDC_ERR;
        }
        sc->off[i] = sc->vals.len;
        if (value_token(sc, sc->oids[i], p, (size_t)(tab - p)) < 0) {
            snprintf(err, errlen, "snapshot: out of memory");
            return PGCDC_ERR;
        }
        p = tab + 1;
    }
    sc->off[sc->ncols] = sc->vals.len;
    for (size_t i = 0; i < sc->ncols; i++)
        cols[i].value =
            (struct pgcdc_span){sc->vals.data + sc->off[i], sc->off[i + 1] - sc->off[i]};
    return PGCDC_OK;
}
