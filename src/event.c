/*
 * event.c — struct pgcdc_change -> the event JSON of docs/events.md and the Kafka key.
 *
 * The output is assembled by appending raw spans of the wal2json message to one reused
 * buffer; no value is parsed or re-printed, so no digit can be lost.
 */
#include "pgcdc/event.h"

#include <string.h>

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

/*
 * The encoder sizes the whole event first, reserves once, then writes through a cursor:
 * one bounds check per event instead of one per token. value_bound and put_value must
 * agree: put_value never writes more than value_bound says.
 */
static inline size_t value_bound(const struct pgcdc_col *col)
{
    return col->value.len + 4; /* "null" for an empty span; at most 3 bytes added */
}

static inline char *put(char *o, const void *p, size_t n)
{
    memcpy(o, p, n);
    return o + n;
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

static inline char *put_value(char *o, const struct pgcdc_col *col)
{
    const struct pgcdc_span v = col->value;
    if (v.len == 0 || v.p[0] == 'n') /* null */
        return PUT_LIT(o, "null");
    switch (col->typeoid) {
    case PGCDC_OID_INT2:
    case PGCDC_OID_INT4:
    case PGCDC_OID_INT8:
    case PGCDC_OID_OID:
        /* wal2json >= 2.6 with numeric-data-types-as-string quotes integers too. */
        if (v.p[0] == '"' && v.len >= 2)
            return put(o, v.p + 1, v.len - 2);
        break;
    case PGCDC_OID_BOOL:
        /* A domain over boolean arrives as the text "t"/"f". */
        if (v.p[0] == '"' && v.len == 3)
            return v.p[1] == 't' ? PUT_LIT(o, "true") : PUT_LIT(o, "false");
        break;
    case PGCDC_OID_NUMERIC:
    case PGCDC_OID_FLOAT4:
    case PGCDC_OID_FLOAT8:
        /* wal2json prints these as bare numbers; the event keeps the digits in a string. */
        if (v.p[0] != '"') {
            *o++ = '"';
            o = put(o, v.p, v.len);
            *o++ = '"';
            return o;
        }
        break;
    case PGCDC_OID_BYTEA:
        /* wal2json strips bytea_output's "\x"; put it back: "\\x" inside a JSON string. */
        if (v.p[0] == '"') {
            o = PUT_LIT(o, "\"\\\\x");
            return put(o, v.p + 1, v.len - 1);
        }
        break;
    default:
        break;
    }
    return put(o, v.p, v.len);
}

static inline char *put_i64(char *o, int64_t v)
{
    if (v < 0) {
        *o++ = '-';
        return pgcdc_put_u64(o, (uint64_t)0 - (uint64_t)v);
    }
    return pgcdc_put_u64(o, (uint64_t)v);
}

uint32_t pgcdc_event_rule_oid(uint32_t typeoid, uint32_t base_oid)
{
    switch (base_oid) {
    case PGCDC_OID_INT2:
    case PGCDC_OID_INT4:
    case PGCDC_OID_INT8:
    case PGCDC_OID_OID:
    case PGCDC_OID_BOOL:
        return base_oid;
    default:
        return typeoid;
    }
}

int pgcdc_event_value(struct pgcdc_buf *out, const struct pgcdc_col *col)
{
    if (pgcdc_buf_reserve(out, value_bound(col)) < 0)
        return PGCDC_ERR;
    char *o = put_value(out->data + out->len, col);
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
    return PGCDC_OK;
}

static size_t row_bound(const struct pgcdc_col *cols, size_t n)
{
    size_t b = 2; /* {} */
    for (size_t i = 0; i < n; i++)
        b += cols[i].name.len + 2 + value_bound(&cols[i]); /* name ':' value ',' */
    return b;
}

static char *put_row(char *o, const struct pgcdc_col *cols, size_t n)
{
    *o++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *o++ = ',';
        o = put(o, cols[i].name.p, cols[i].name.len);
        *o++ = ':';
        o = put_value(o, &cols[i]);
    }
    *o++ = '}';
    return o;
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

    static const char source[] =
        ",\"source\":{\"connector\":\"pgcdc\",\"version\":\"" PGCDC_VERSION "\",\"name\":";
    size_t name_len = strlen(ctx->name_json), db_len = strlen(ctx->db_json);
    size_t snap_len = strlen(ctx->snapshot);
    /* Every literal below, generously, plus five numbers of at most 20 digits and a sign. */
    size_t need = 256 + sizeof(source) + name_len + db_len + snap_len + ch->schema.len +
                  ch->table.len + 5 * 21 + (before ? row_bound(before, nbefore) : 4) +
                  (after ? row_bound(after, nafter) : 4);
    if (pgcdc_buf_reserve(out, need) < 0)
        return PGCDC_ERR;

    char *o = out->data + out->len;
    o = PUT_LIT(o, "{\"before\":");
    o = before ? put_row(o, before, nbefore) : PUT_LIT(o, "null");
    o = PUT_LIT(o, ",\"after\":");
    o = after ? put_row(o, after, nafter) : PUT_LIT(o, "null");
    o = put(o, source, sizeof(source) - 1);
    o = put(o, ctx->name_json, name_len);
    o = PUT_LIT(o, ",\"db\":");
    o = put(o, ctx->db_json, db_len);
    o = PUT_LIT(o, ",\"schema\":");
    o = put(o, ch->schema.p, ch->schema.len);
    o = PUT_LIT(o, ",\"table\":");
    o = put(o, ch->table.p, ch->table.len);
    o = PUT_LIT(o, ",\"txId\":");
    o = pgcdc_put_u64(o, ctx->xid);
    o = PUT_LIT(o, ",\"lsn\":");
    o = pgcdc_put_u64(o, ch->lsn);
    o = PUT_LIT(o, ",\"commit_lsn\":");
    o = pgcdc_put_u64(o, ctx->commit_lsn);
    o = PUT_LIT(o, ",\"ts_ms\":");
    o = put_i64(o, ctx->commit_ts_ms);
    o = PUT_LIT(o, ",\"snapshot\":\"");
    o = put(o, ctx->snapshot, snap_len);
    o = PUT_LIT(o, "\"},\"op\":\"");
    *o++ = op;
    o = PUT_LIT(o, "\",\"ts_ms\":");
    o = put_i64(o, now_ms);
    *o++ = '}';
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
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
    const struct pgcdc_col *found[8];
    size_t need = 2;
    for (size_t i = 0; i < ch->npk; i++) {
        const struct pgcdc_col *c = key_col(ch, ch->pk[i].name, use_old);
        if (i < 8)
            found[i] = c;
        need += ch->pk[i].name.len + 2 + (c ? value_bound(c) : 4);
    }
    if (pgcdc_buf_reserve(out, need) < 0)
        return PGCDC_ERR;
    char *o = out->data + out->len;
    *o++ = '{';
    for (size_t i = 0; i < ch->npk; i++) {
        const struct pgcdc_col *c = i < 8 ? found[i] : key_col(ch, ch->pk[i].name, use_old);
        if (i)
            *o++ = ',';
        o = put(o, ch->pk[i].name.p, ch->pk[i].name.len);
        *o++ = ':';
        o = c ? put_value(o, c) : PUT_LIT(o, "null");
    }
    *o++ = '}';
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
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
        /* An absent value has a NULL span: never hand memcmp a NULL, even for 0 bytes. */
        if (o->value.len != n->value.len ||
            (o->value.len && memcmp(o->value.p, n->value.p, o->value.len) != 0))
            return 1;
    }
    return 0;
}
