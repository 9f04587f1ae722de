/*
 * replay_sql.c — the SQL replay sends, built from an event and the target's table
 * definition: pure text and parameters, no libpq (see replay_sql.h for what each op
 * becomes).
 */
#include "pgcdc/replay_sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc/json.h"

int pgcdc_replay_quote_ident(struct pgcdc_buf *b, const char *name)
{
    if (pgcdc_buf_append_char(b, '"') < 0)
        return PGCDC_ERR;
    for (const char *p = name; *p; p++) {
        if (*p == '"' && pgcdc_buf_append_char(b, '"') < 0)
            return PGCDC_ERR;
        if (pgcdc_buf_append_char(b, *p) < 0)
            return PGCDC_ERR;
    }
    return pgcdc_buf_append_char(b, '"');
}

void pgcdc_replay_stmt_free(struct pgcdc_replay_stmt *st)
{
    pgcdc_buf_free(&st->sql);
    pgcdc_buf_free(&st->vals);
    free(st->off);
    free(st->params);
    free(st->param_col);
    memset(st, 0, sizeof(*st));
}

/* Index of the target column an event's name (raw JSON string) refers to, or -1. */
static int find_target_col(const struct pgcdc_replay_table *t, struct pgcdc_span name)
{
    char small[256];
    const char *n = name.p + 1;
    size_t len = name.len - 2;
    if (memchr(n, '\\', len)) {
        int u = pgcdc_json_unescape(name, small, sizeof(small));
        if (u < 0)
            return -1;
        n = small;
        len = (size_t)u;
    }
    for (size_t i = 0; i < t->ncols; i++)
        if (strlen(t->cols[i].name) == len && memcmp(t->cols[i].name, n, len) == 0)
            return (int)i;
    return -1;
}

/* Event column's name as text, for messages. */
static void col_name_text(struct pgcdc_span name, char *out, size_t outlen)
{
    if (pgcdc_json_unescape(name, out, outlen) < 0)
        snprintf(out, outlen, "%.*s", (int)(name.len > 2 ? name.len - 2 : 0), name.p + 1);
}

static const struct pgcdc_replay_col *find_event_col(const struct pgcdc_replay_col *cols, size_t n,
                                                     const struct pgcdc_replay_table *t,
                                                     int target_idx)
{
    for (size_t i = 0; i < n; i++)
        if (find_target_col(t, cols[i].name) == target_idx)
            return &cols[i];
    return NULL;
}

static int add_param(struct pgcdc_replay_stmt *st, struct pgcdc_span tok, int col)
{
    if (st->nparams == st->cap) {
        int cap = st->cap ? st->cap * 2 : 32;
        size_t *off = realloc(st->off, (size_t)cap * sizeof(*off));
        if (!off)
            return PGCDC_ERR;
        st->off = off;
        const char **pp = realloc(st->params, (size_t)cap * sizeof(*pp));
        if (!pp)
            return PGCDC_ERR;
        st->params = pp;
        int *pc = realloc(st->param_col, (size_t)cap * sizeof(*pc));
        if (!pc)
            return PGCDC_ERR;
        st->param_col = pc;
        st->cap = cap;
    }
    bool is_null;
    size_t at = st->vals.len;
    if (pgcdc_replay_token_text(tok, &st->vals, &is_null) < 0)
        return PGCDC_ERR;
    st->off[st->nparams] = is_null ? (size_t)-1 : at;
    st->param_col[st->nparams] = col;
    st->nparams++;
    return PGCDC_OK;
}

/* "$n" for the parameter just added. */
static int append_param_ref(struct pgcdc_replay_stmt *st)
{
    return pgcdc_buf_append_char(&st->sql, '$') < 0 ||
                   pgcdc_buf_append_u64(&st->sql, (uint64_t)st->nparams) < 0
               ? PGCDC_ERR
               : PGCDC_OK;
}

static int append_table(struct pgcdc_buf *b, const struct pgcdc_replay_table *t)
{
    if (pgcdc_replay_quote_ident(b, t->schema) < 0 || pgcdc_buf_append_char(b, '.') < 0)
        return PGCDC_ERR;
    return pgcdc_replay_quote_ident(b, t->name);
}

#define SQL(lit) pgcdc_buf_append(&st->sql, (lit), sizeof(lit) - 1)

/*
 * Every event column must exist on the target: a value with nowhere to go is lost data.
 * Returns the first missing one's index in *bad, or -1.
 */
static void check_cols(const struct pgcdc_replay_table *t, const struct pgcdc_replay_col *cols,
                       size_t n, int *map, ptrdiff_t *bad)
{
    *bad = -1;
    for (size_t i = 0; i < n; i++) {
        map[i] = find_target_col(t, cols[i].name);
        if (map[i] < 0 && *bad < 0)
            *bad = (ptrdiff_t)i;
    }
}

/*
 * INSERT of nrows rows into the columns cols[0..ncols) (target column indexes), parameters
 * row after row; on a table with a primary key an upsert that sets the other columns.
 */
static int insert_sql(struct pgcdc_buf *b, const struct pgcdc_replay_table *t, const int *cols,
                      int ncols, int nrows)
{
#define B(lit) pgcdc_buf_append(b, (lit), sizeof(lit) - 1)
    if (B("INSERT INTO ") < 0 || append_table(b, t) < 0)
        return PGCDC_ERR;
    if (ncols == 0)
        return B(" DEFAULT VALUES");
    for (int i = 0; i < ncols; i++)
        if (pgcdc_buf_append_str(b, i ? ", " : " (") < 0 ||
            pgcdc_replay_quote_ident(b, t->cols[cols[i]].name) < 0)
            return PGCDC_ERR;
    /* Identity columns GENERATED ALWAYS take the source's values too. */
    if (B(") OVERRIDING SYSTEM VALUE VALUES ") < 0)
        return PGCDC_ERR;
    int n = 0;
    for (int r = 0; r < nrows; r++) {
        if (pgcdc_buf_append_str(b, r ? ", (" : "(") < 0)
            return PGCDC_ERR;
        for (int i = 0; i < ncols; i++)
            if ((i && B(", ") < 0) || pgcdc_buf_append_char(b, '$') < 0 ||
                pgcdc_buf_append_u64(b, (uint64_t)++n) < 0)
                return PGCDC_ERR;
        if (pgcdc_buf_append_char(b, ')') < 0)
            return PGCDC_ERR;
    }
    if (t->npk == 0)
        return PGCDC_OK;
    if (B(" ON CONFLICT (") < 0)
        return PGCDC_ERR;
    int k = 0;
    for (size_t c = 0; c < t->ncols; c++) {
        if (!t->cols[c].pk)
            continue;
        if ((k++ && B(", ") < 0) || pgcdc_replay_quote_ident(b, t->cols[c].name) < 0)
            return PGCDC_ERR;
    }
    int set = 0;
    for (int i = 0; i < ncols; i++) {
        const struct pgcdc_replay_column *c = &t->cols[cols[i]];
        if (c->pk)
            continue;
        if (pgcdc_buf_append_str(b, set++ ? ", " : ") DO UPDATE SET ") < 0 ||
            pgcdc_replay_quote_ident(b, c->name) < 0 || B(" = EXCLUDED.") < 0 ||
            pgcdc_replay_quote_ident(b, c->name) < 0)
            return PGCDC_ERR;
    }
    return set ? PGCDC_OK : B(") DO NOTHING");
#undef B
}

static int build_insert(struct pgcdc_replay_stmt *st, const struct pgcdc_replay_table *t,
                        const struct pgcdc_replay_event *ev, const int *map)
{
    for (size_t i = 0; i < ev->nafter; i++)
        if (!t->cols[map[i]].generated && add_param(st, ev->after[i].value, map[i]) < 0)
            return PGCDC_ERR;
    st->nset = st->nparams;
    st->groupable = st->nparams > 0;
    return insert_sql(&st->sql, t, st->param_col, st->nparams, 1);
}

/*
 * WHERE for updates and deletes. With a primary key: each key column equal to its value
 * in "before", else in "after". Without: one row whose every "before" column has the same
 * text form (IS NOT DISTINCT FROM, so NULLs match; the session pins the settings text forms
 * depend on), addressed by (tableoid, ctid): a ctid is unique only within one relation,
 * and a partitioned table's rows live in several (its partitions, hence no ONLY there).
 */
static int build_where(struct pgcdc_replay_stmt *st, const struct pgcdc_replay_table *t,
                       const struct pgcdc_replay_event *ev, const int *bmap,
                       const struct pgcdc_replay_col **keyv, char *err, size_t errlen)
{
    if (t->npk > 0) {
        int k = 0;
        for (size_t c = 0; c < t->ncols; c++) {
            if (!t->cols[c].pk)
                continue;
            if (pgcdc_buf_append_str(&st->sql, k++ ? " AND " : " WHERE ") < 0 ||
                pgcdc_replay_quote_ident(&st->sql, t->cols[c].name) < 0 || SQL(" = ") < 0 ||
                add_param(st, keyv[c]->value, (int)c) < 0 || append_param_ref(st) < 0)
                return PGCDC_ERR;
        }
        return PGCDC_OK;
    }
    if (!ev->has_before || ev->nbefore == 0) {
        snprintf(err, errlen,
                 "target table %s.%s has no primary key and the %s event carries no old row to "
                 "find it by: give the target table the source's primary key, or set REPLICA "
                 "IDENTITY FULL on the source table",
                 t->schema, t->name, ev->op == 'u' ? "update" : "delete");
        return PGCDC_ERR;
    }
    if (SQL(" WHERE (tableoid, ctid) = (SELECT tableoid, ctid FROM ") < 0 ||
        (!t->partitioned && SQL("ONLY ") < 0) || append_table(&st->sql, t) < 0)
        return PGCDC_ERR;
    for (size_t i = 0; i < ev->nbefore; i++) {
        if (pgcdc_buf_append_str(&st->sql, i ? " AND " : " WHERE ") < 0 ||
            pgcdc_replay_quote_ident(&st->sql, t->cols[bmap[i]].name) < 0 ||
            SQL("::text IS NOT DISTINCT FROM ") < 0 ||
            add_param(st, ev->before[i].value, bmap[i]) < 0 || append_param_ref(st) < 0)
            return PGCDC_ERR;
    }
    return SQL(" LIMIT 1)");
}

/* Key values: from "before" (the old key), else "after". NULL in keyv[c] when absent. */
static int key_values(const struct pgcdc_replay_table *t, const struct pgcdc_replay_event *ev,
                      const struct pgcdc_replay_col **keyv, char *err, size_t errlen)
{
    for (size_t c = 0; c < t->ncols; c++) {
        keyv[c] = NULL;
        if (!t->cols[c].pk)
            continue;
        if (ev->has_before)
            keyv[c] = find_event_col(ev->before, ev->nbefore, t, (int)c);
        if (!keyv[c] && ev->has_after)
            keyv[c] = find_event_col(ev->after, ev->nafter, t, (int)c);
        if (!keyv[c] || pgcdc_json_tok_is(keyv[c]->value, "null")) {
            snprintf(err, errlen,
                     "the %s event for %s.%s carries no value for the target's primary-key "
                     "column \"%s\": the target's primary key must be the source's",
                     ev->op == 'u'   ? "update"
                     : ev->op == 'd' ? "delete"
                                     : "insert",
                     t->schema, t->name, t->cols[c].name);
            return PGCDC_ERR;
        }
    }
    return PGCDC_OK;
}

/* Every column of ev must be on t; map them (amap: after, bmap: before). */
static int map_event_cols(const struct pgcdc_replay_table *t, const struct pgcdc_replay_event *ev,
                          int *amap, int *bmap, char *err, size_t errlen)
{
    ptrdiff_t bad = -1;
    const struct pgcdc_replay_col *cols = NULL;
    char cname[256];
    if (ev->has_after) {
        check_cols(t, ev->after, ev->nafter, amap, &bad);
        cols = ev->after;
    }
    if (bad < 0 && ev->has_before) {
        check_cols(t, ev->before, ev->nbefore, bmap, &bad);
        cols = ev->before;
    }
    if (bad < 0)
        return PGCDC_OK;
    col_name_text(cols[bad].name, cname, sizeof(cname));
    snprintf(err, errlen, "target table %s.%s has no column \"%s\"", t->schema, t->name, cname);
    return PGCDC_ERR;
}

/*
 * UPDATE ... SET the columns of "after" that the target holds and that changed, then the
 * WHERE. Returns 0 (st->skip when nothing is to be set), or PGCDC_ERR with err set for a
 * missing key, empty for out of memory.
 */
static int build_update(struct pgcdc_replay_stmt *st, const struct pgcdc_replay_table *t,
                        const struct pgcdc_replay_event *ev, const int *amap, const int *bmap,
                        const struct pgcdc_replay_col **keyv, char *err, size_t errlen)
{
    bool key_change = false;
    if (SQL("UPDATE ") < 0 || append_table(&st->sql, t) < 0)
        return PGCDC_ERR;
    int set = 0;
    for (size_t i = 0; i < ev->nafter; i++) {
        const struct pgcdc_replay_column *c = &t->cols[amap[i]];
        if (c->generated)
            continue;
        /* A key column keeps its value unless the key changed: nothing to write. */
        if (c->pk && keyv[amap[i]] == &ev->after[i])
            continue;
        if (c->pk && keyv[amap[i]]->value.len == ev->after[i].value.len &&
            memcmp(keyv[amap[i]]->value.p, ev->after[i].value.p, ev->after[i].value.len) == 0)
            continue;
        if (c->pk)
            key_change = true;
        if (pgcdc_buf_append_str(&st->sql, set++ ? ", " : " SET ") < 0 ||
            pgcdc_replay_quote_ident(&st->sql, c->name) < 0 || SQL(" = ") < 0 ||
            add_param(st, ev->after[i].value, amap[i]) < 0 || append_param_ref(st) < 0)
            return PGCDC_ERR;
    }
    if (set == 0) {
        st->skip = true; /* only unchanged TOASTed or generated columns: nothing to do */
        return PGCDC_OK;
    }
    st->nset = st->nparams;
    if (build_where(st, t, ev, bmap, keyv, err, errlen) < 0)
        return PGCDC_ERR;
    /* Rows of one multi-row UPDATE change in no set order: safe only when no other
     * unique index can see an intermediate state, and the key itself stays put. */
    st->groupable = t->npk > 0 && !t->other_unique && !key_change;
    return PGCDC_OK;
}

/* The statement for ev's op, once its columns are mapped. Errors as build_update. */
static int build_op(struct pgcdc_replay_stmt *st, const struct pgcdc_replay_table *t,
                    const struct pgcdc_replay_event *ev, const int *amap, const int *bmap,
                    const struct pgcdc_replay_col **keyv, char *err, size_t errlen)
{
    switch (ev->op) {
    case 'c':
    case 'r':
        return build_insert(st, t, ev, amap);
    case 'u':
        return build_update(st, t, ev, amap, bmap, keyv, err, errlen);
    case 'd':
        if (SQL("DELETE FROM ") < 0 || append_table(&st->sql, t) < 0 ||
            build_where(st, t, ev, bmap, keyv, err, errlen) < 0)
            return PGCDC_ERR;
        st->groupable = t->npk > 0;
        return PGCDC_OK;
    default: /* 't': pgcdc_replay_build let no other op through */
        return pgcdc_replay_build_truncate(&st->sql, &t, 1);
    }
}

int pgcdc_replay_build_truncate(struct pgcdc_buf *sql, const struct pgcdc_replay_table *const *t,
                                size_t n)
{
    pgcdc_buf_reset(sql);
    if (pgcdc_buf_append_str(sql, "TRUNCATE ") < 0)
        return PGCDC_ERR;
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(t[j]->schema, t[i]->schema) == 0 && strcmp(t[j]->name, t[i]->name) == 0;
        if (seen)
            continue;
        if ((i && pgcdc_buf_append_str(sql, ", ") < 0) || append_table(sql, t[i]) < 0)
            return PGCDC_ERR;
    }
    return PGCDC_OK;
}

static void stmt_reset(struct pgcdc_replay_stmt *st, char op)
{
    pgcdc_buf_reset(&st->sql);
    pgcdc_buf_reset(&st->vals);
    st->nparams = 0;
    st->nset = 0;
    st->op = op;
    st->skip = false;
    st->groupable = false;
}

int pgcdc_replay_build(struct pgcdc_replay_stmt *st, const struct pgcdc_replay_table *t,
                       const struct pgcdc_replay_event *ev, char *err, size_t errlen)
{
    int rc = PGCDC_ERR;
    size_t nmap = (ev->nafter > ev->nbefore ? ev->nafter : ev->nbefore) + 1;
    int *amap = calloc(nmap, sizeof(int)), *bmap = calloc(nmap, sizeof(int));
    const struct pgcdc_replay_col **keyv = calloc(t->ncols + 1, sizeof(*keyv));

    if (errlen)
        err[0] = '\0';
    stmt_reset(st, ev->op);
    if (!amap || !bmap || !keyv) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (map_event_cols(t, ev, amap, bmap, err, errlen) < 0)
        goto out;
    if (!strchr("crudt", ev->op) || ev->op == '\0') {
        snprintf(err, errlen, "unknown op '%c'", ev->op);
        goto out;
    }
    if (ev->op != 't' && t->npk > 0 && key_values(t, ev, keyv, err, errlen) < 0)
        goto out;
    if (build_op(st, t, ev, amap, bmap, keyv, err, errlen) < 0) {
        if (!err[0])
            snprintf(err, errlen, "cannot build the statement: out of memory or a malformed value");
        goto out;
    }
    for (int i = 0; i < st->nparams; i++)
        st->params[i] = st->off[i] == (size_t)-1 ? NULL : st->vals.data + st->off[i];
    rc = PGCDC_OK;
out:
    free(amap);
    free(bmap);
    free(keyv);
    return rc;
}

#define B(lit) pgcdc_buf_append(b, (lit), sizeof(lit) - 1)

/*
 * UPDATE t AS pgcdc_t SET a = pgcdc_v.c1 FROM (VALUES ($1::type, ...), ...) AS pgcdc_v
 * (c1, ...) WHERE pgcdc_t.key = pgcdc_v.cK. The casts name the type without typmod: the
 * assignment to the column applies it, as for one row.
 */
static int group_update_sql(struct pgcdc_buf *b, const struct pgcdc_replay_table *t,
                            const struct pgcdc_replay_stmt *single, int nrows)
{
    int np = single->nparams, n = 0;
    if (B("UPDATE ") < 0 || append_table(b, t) < 0 || B(" AS pgcdc_t") < 0)
        return PGCDC_ERR;
    for (int i = 0; i < single->nset; i++)
        if (pgcdc_buf_append_str(b, i ? ", " : " SET ") < 0 ||
            pgcdc_replay_quote_ident(b, t->cols[single->param_col[i]].name) < 0 ||
            B(" = pgcdc_v.c") < 0 || pgcdc_buf_append_u64(b, (uint64_t)i + 1) < 0)
            return PGCDC_ERR;
    if (B(" FROM (VALUES ") < 0)
        return PGCDC_ERR;
    for (int r = 0; r < nrows; r++) {
        if (pgcdc_buf_append_str(b, r ? ", (" : "(") < 0)
            return PGCDC_ERR;
        for (int i = 0; i < np; i++)
            if ((i && B(", ") < 0) || pgcdc_buf_append_char(b, '$') < 0 ||
                pgcdc_buf_append_u64(b, (uint64_t)++n) < 0 || B("::") < 0 ||
                pgcdc_buf_append_str(b, t->cols[single->param_col[i]].cast) < 0)
                return PGCDC_ERR;
        if (pgcdc_buf_append_char(b, ')') < 0)
            return PGCDC_ERR;
    }
    if (B(") AS pgcdc_v (") < 0)
        return PGCDC_ERR;
    for (int i = 0; i < np; i++)
        if ((i && B(", ") < 0) || pgcdc_buf_append_char(b, 'c') < 0 ||
            pgcdc_buf_append_u64(b, (uint64_t)i + 1) < 0)
            return PGCDC_ERR;
    if (pgcdc_buf_append_char(b, ')') < 0)
        return PGCDC_ERR;
    for (int i = single->nset; i < np; i++)
        if (pgcdc_buf_append_str(b, i > single->nset ? " AND pgcdc_t." : " WHERE pgcdc_t.") < 0 ||
            pgcdc_replay_quote_ident(b, t->cols[single->param_col[i]].name) < 0 ||
            B(" = pgcdc_v.c") < 0 || pgcdc_buf_append_u64(b, (uint64_t)i + 1) < 0)
            return PGCDC_ERR;
    return PGCDC_OK;
}

/* DELETE FROM t WHERE key IN ($1, ...), or (k1, k2) IN (($1, $2), ...) for a wider key. */
static int group_delete_sql(struct pgcdc_buf *b, const struct pgcdc_replay_table *t,
                            const struct pgcdc_replay_stmt *single, int nrows)
{
    int np = single->nparams, n = 0;
    if (B("DELETE FROM ") < 0 || append_table(b, t) < 0 || B(" WHERE ") < 0)
        return PGCDC_ERR;
    if (np > 1 && pgcdc_buf_append_char(b, '(') < 0)
        return PGCDC_ERR;
    for (int i = 0; i < np; i++)
        if ((i && B(", ") < 0) ||
            pgcdc_replay_quote_ident(b, t->cols[single->param_col[i]].name) < 0)
            return PGCDC_ERR;
    if (pgcdc_buf_append_str(b, np > 1 ? ") IN (" : " IN (") < 0)
        return PGCDC_ERR;
    for (int r = 0; r < nrows; r++) {
        if (r && B(", ") < 0)
            return PGCDC_ERR;
        if (np > 1 && pgcdc_buf_append_char(b, '(') < 0)
            return PGCDC_ERR;
        for (int i = 0; i < np; i++)
            if ((i && B(", ") < 0) || pgcdc_buf_append_char(b, '$') < 0 ||
                pgcdc_buf_append_u64(b, (uint64_t)++n) < 0)
                return PGCDC_ERR;
        if (np > 1 && pgcdc_buf_append_char(b, ')') < 0)
            return PGCDC_ERR;
    }
    return pgcdc_buf_append_char(b, ')');
}

#undef B

int pgcdc_replay_build_group(struct pgcdc_buf *b, const struct pgcdc_replay_table *t,
                             const struct pgcdc_replay_stmt *single, int nrows)
{
    pgcdc_buf_reset(b);
    switch (single->op) {
    case 'c':
    case 'r':
        return insert_sql(b, t, single->param_col, single->nparams, nrows);
    case 'u':
        return group_update_sql(b, t, single, nrows);
    case 'd':
        return group_delete_sql(b, t, single, nrows);
    default:
        return PGCDC_ERR;
    }
}

#undef SQL
