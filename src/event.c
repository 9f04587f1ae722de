/*
 * event.c — struct pgcdc_change -> the SPEC.md event JSON and the Kafka key.
 *
 * The output is assembled by appending raw spans of the wal2json message to one reused
 * buffer; no value is parsed or re-printed, so no digit can be lost.
 */
#include "pgcdc/event.h"

#include <string.h>

#define APPEND(b, lit) pgcdc_buf_append((b), (lit), sizeof(lit) - 1)

char pgcdc_event_op(const struct pgcdc_change *ch)
{
    switch (ch->action) {
    case PGCDC_ACT_INSERT: return 'c';
    case PGCDC_ACT_UPDATE: return 'u';
    case PGCDC_ACT_DELETE: return 'd';
    case PGCDC_ACT_TRUNCATE: return 't';
    default: return '?';
    }
}

int pgcdc_event_value(struct pgcdc_buf *out, const struct pgcdc_col *col)
{
    const struct pgcdc_span v = col->value;
    if (v.len == 0 || v.p[0] == 'n') /* null */
        return APPEND(out, "null");
    switch (col->typeoid) {
    case PGCDC_OID_INT2:
    case PGCDC_OID_INT4:
    case PGCDC_OID_INT8:
    case PGCDC_OID_OID:
        /* wal2json >= 2.6 with numeric-data-types-as-string quotes integers too. */
        if (v.p[0] == '"' && v.len >= 2)
            return pgcdc_buf_append(out, v.p + 1, v.len - 2);
        break;
    case PGCDC_OID_NUMERIC:
    case PGCDC_OID_FLOAT4:
    case PGCDC_OID_FLOAT8:
        /* wal2json prints these as bare numbers; the event keeps the digits in a string. */
        if (v.p[0] != '"') {
            if (pgcdc_buf_reserve(out, v.len + 2) < 0)
                return PGCDC_ERR;
            out->data[out->len++] = '"';
            memcpy(out->data + out->len, v.p, v.len);
            out->len += v.len;
            out->data[out->len++] = '"';
            out->data[out->len] = '\0';
            return PGCDC_OK;
        }
        break;
    case PGCDC_OID_BYTEA:
        /* wal2json strips bytea_output's "\x"; put it back: "\\x" inside a JSON string. */
        if (v.p[0] == '"') {
            if (APPEND(out, "\"\\\\x") < 0)
                return PGCDC_ERR;
            return pgcdc_buf_append(out, v.p + 1, v.len - 1);
        }
        break;
    default:
        break;
    }
    return pgcdc_buf_append(out, v.p, v.len);
}

static int append_row(struct pgcdc_buf *out, const struct pgcdc_col *cols, size_t n)
{
    if (pgcdc_buf_append_char(out, '{') < 0)
        return PGCDC_ERR;
    for (size_t i = 0; i < n; i++) {
        if (i && pgcdc_buf_append_char(out, ',') < 0)
            return PGCDC_ERR;
        if (pgcdc_buf_append(out, cols[i].name.p, cols[i].name.len) < 0 ||
            pgcdc_buf_append_char(out, ':') < 0 || pgcdc_event_value(out, &cols[i]) < 0)
            return PGCDC_ERR;
    }
    return pgcdc_buf_append_char(out, '}');
}

int pgcdc_event_encode(struct pgcdc_buf *out, const struct pgcdc_event_ctx *ctx,
                       const struct pgcdc_change *ch, char op, int64_t now_ms)
{
    const struct pgcdc_col *before = NULL, *after = NULL;
    size_t nbefore = 0, nafter = 0;

    switch (op) {
    case 'c':
    case 'r':
        after = ch->columns, nafter = ch->ncolumns;
        break;
    case 'u':
        after = ch->columns, nafter = ch->ncolumns;
        if (ch->has_identity)
            before = ch->identity, nbefore = ch->nidentity;
        break;
    case 'd':
        before = ch->identity, nbefore = ch->nidentity;
        break;
    default: /* 't' */
        break;
    }

    if (APPEND(out, "{\"before\":") < 0 ||
        (before ? append_row(out, before, nbefore) : APPEND(out, "null")) < 0 ||
        APPEND(out, ",\"after\":") < 0 ||
        (after ? append_row(out, after, nafter) : APPEND(out, "null")) < 0 ||
        APPEND(out, ",\"source\":{\"connector\":\"pgcdc\",\"version\":\"" PGCDC_VERSION
                    "\",\"name\":") < 0 ||
        pgcdc_buf_append_str(out, ctx->name_json) < 0 || APPEND(out, ",\"db\":") < 0 ||
        pgcdc_buf_append_str(out, ctx->db_json) < 0 || APPEND(out, ",\"schema\":") < 0 ||
        pgcdc_buf_append(out, ch->schema.p, ch->schema.len) < 0 ||
        APPEND(out, ",\"table\":") < 0 || pgcdc_buf_append(out, ch->table.p, ch->table.len) < 0 ||
        APPEND(out, ",\"txId\":") < 0 || pgcdc_buf_append_u64(out, ctx->xid) < 0 ||
        APPEND(out, ",\"lsn\":") < 0 || pgcdc_buf_append_u64(out, ch->lsn) < 0 ||
        APPEND(out, ",\"commit_lsn\":") < 0 || pgcdc_buf_append_u64(out, ctx->commit_lsn) < 0 ||
        APPEND(out, ",\"ts_ms\":") < 0 || pgcdc_buf_append_i64(out, ctx->commit_ts_ms) < 0 ||
        APPEND(out, ",\"snapshot\":\"") < 0 || pgcdc_buf_append_str(out, ctx->snapshot) < 0 ||
        APPEND(out, "\"},\"op\":\"") < 0 || pgcdc_buf_append_char(out, op) < 0 ||
        APPEND(out, "\",\"ts_ms\":") < 0 || pgcdc_buf_append_i64(out, now_ms) < 0 ||
        pgcdc_buf_append_char(out, '}') < 0)
        return PGCDC_ERR;
    return PGCDC_OK;
}

static const struct pgcdc_col *find_col(const struct pgcdc_col *cols, size_t n,
                                        struct pgcdc_span name)
{
    for (size_t i = 0; i < n; i++)
        if (cols[i].name.len == name.len && memcmp(cols[i].name.p, name.p, name.len) == 0)
            return &cols[i];
    return NULL;
}

/* The pk column's value: from the old row or the new one, falling back to the other. */
static const struct pgcdc_col *key_col(const struct pgcdc_change *ch, struct pgcdc_span name,
                                       int use_old)
{
    const struct pgcdc_col *c = NULL;
    if (use_old && ch->has_identity)
        c = find_col(ch->identity, ch->nidentity, name);
    if (!c && ch->has_columns)
        c = find_col(ch->columns, ch->ncolumns, name);
    if (!c && !use_old && ch->has_identity)
        c = find_col(ch->identity, ch->nidentity, name);
    return c;
}

int pgcdc_event_key(struct pgcdc_buf *out, const struct pgcdc_change *ch, int use_old)
{
    if (ch->npk == 0)
        return 0;
    if (pgcdc_buf_append_char(out, '{') < 0)
        return PGCDC_ERR;
    for (size_t i = 0; i < ch->npk; i++) {
        const struct pgcdc_col *c = key_col(ch, ch->pk[i].name, use_old);
        if (i && pgcdc_buf_append_char(out, ',') < 0)
            return PGCDC_ERR;
        if (pgcdc_buf_append(out, ch->pk[i].name.p, ch->pk[i].name.len) < 0 ||
            pgcdc_buf_append_char(out, ':') < 0 ||
            (c ? pgcdc_event_value(out, c) : APPEND(out, "null")) < 0)
            return PGCDC_ERR;
    }
    if (pgcdc_buf_append_char(out, '}') < 0)
        return PGCDC_ERR;
    return 1;
}

int pgcdc_event_key_changed(const struct pgcdc_change *ch)
{
    if (ch->action != PGCDC_ACT_UPDATE || !ch->has_identity || ch->npk == 0)
        return 0;
    for (size_t i = 0; i < ch->npk; i++) {
        const struct pgcdc_col *o = find_col(ch->identity, ch->nidentity, ch->pk[i].name);
        const struct pgcdc_col *n = find_col(ch->columns, ch->ncolumns, ch->pk[i].name);
        if (!o || !n)
            continue;
        if (o->value.len != n->value.len || memcmp(o->value.p, n->value.p, o->value.len) != 0)
            return 1;
    }
    return 0;
}
