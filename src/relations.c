/*
 * relations.c — the relation cache: event names, selection, partition roots, type rules.
 *
 * Catalog questions are asked through catalog.c (the SQL), over a plain connection held
 * here; a failed lookup closes it and asks the stream to reconnect.
 */
#include "pgcdc/relations.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "pgcdc/catalog.h"
#include "pgcdc/event.h"
#include "pgcdc/log.h"
#include "pgcdc/source.h"

/* Partitions can be attached and detached at any time: look the root up again this often. */
#define PARTITION_RECHECK_MS 5000

#define REL_CACHE_MAX 8192

struct pgcdc_relations_type {
    uint32_t oid, rule_oid;
};

void pgcdc_relations_init(struct pgcdc_relations *rs, const struct pgcdc_config *cfg)
{
    memset(rs, 0, sizeof(*rs));
    rs->cfg = cfg;
}

static void rels_clear(struct pgcdc_relations *rs)
{
    for (size_t i = 0; i < rs->nrels; i++) {
        free(rs->rels[i].key);
        pgcdc_buf_free(&rs->rels[i].schema_json);
        pgcdc_buf_free(&rs->rels[i].table_json);
        pgcdc_buf_free(&rs->rels[i].key_names);
        free(rs->rels[i].key_cols);
    }
    rs->nrels = rs->last = 0;
}

/* The plain connection for catalog lookups, opened on first use. */
static int open_catalog(struct pgcdc_relations *rs, char *err, size_t errlen)
{
    if (!rs->catalog) {
        /* Keepalives, timeouts and a statement_timeout: its lookups run inside the
         * replication loop, which must not hang on a dead peer (see source.h). */
        int rc = pgcdc_source_connect(&rs->catalog, rs->cfg->source_dsn, PGCDC_SOURCE_CATALOG,
                                      err, errlen);
        if (rc < 0)
            return rc;
        if (PQstatus(rs->catalog) != CONNECTION_OK) {
            snprintf(err, errlen, "cannot open a catalog connection: %s",
                     PQerrorMessage(rs->catalog));
            err[strcspn(err, "\n")] = '\0';
            PQfinish(rs->catalog);
            rs->catalog = NULL;
            return PGCDC_ERR_RETRY;
        }
    }
    return PGCDC_OK;
}

/* Look oid's rule up in the catalog and remember it; returns its index in rs->types. */
static int learn_type(struct pgcdc_relations *rs, uint32_t oid, size_t *at, char *err,
                      size_t errlen)
{
    uint32_t base = oid;
    int rc = open_catalog(rs, err, errlen);
    if (rc == PGCDC_OK)
        rc = pgcdc_catalog_base_type(rs->catalog, oid, &base, err, errlen);
    if (rc < 0)
        return PGCDC_ERR_RETRY;
    if (rs->ntypes == rs->captypes) {
        size_t cap = rs->captypes ? rs->captypes * 2 : 16;
        struct pgcdc_relations_type *t = realloc(rs->types, cap * sizeof(*t));
        if (!t) {
            snprintf(err, errlen, "out of memory");
            return PGCDC_ERR;
        }
        rs->types = t;
        rs->captypes = cap;
    }
    *at = rs->ntypes;
    rs->types[rs->ntypes++] = (struct pgcdc_relations_type){oid, pgcdc_event_rule_oid(oid, base)};
    return PGCDC_OK;
}

/* The OID whose rules apply to user type oid, looked up once per type. */
static int user_type_rule(struct pgcdc_relations *rs, uint32_t oid, uint32_t *rule, char *err,
                          size_t errlen)
{
    size_t k = 0;
    while (k < rs->ntypes && rs->types[k].oid != oid)
        k++;
    int rc;
    if (k == rs->ntypes && (rc = learn_type(rs, oid, &k, err, errlen)) < 0)
        return rc;
    *rule = rs->types[k].rule_oid;
    return PGCDC_OK;
}

/*
 * wal2json sends a column's own type OID, and quotes a domain over an integer or boolean
 * type like text; the event rules follow the base type. Built-in OIDs need no lookup (the
 * common case, kept inline on the per-change path).
 */
static inline int apply_type_rules(struct pgcdc_relations *rs, struct pgcdc_col *cols, size_t n,
                                   char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t oid = cols[i].typeoid;
        int rc;
        if (oid >= PGCDC_FIRST_USER_OID &&
            (rc = user_type_rule(rs, oid, &cols[i].typeoid, err, errlen)) < 0)
            return rc;
    }
    return PGCDC_OK;
}

/* The partition root of r's table, over the catalog connection. */
static int partition_root(struct pgcdc_relations *rs, struct pgcdc_relation *r, char *err,
                          size_t errlen)
{
    int rc = open_catalog(rs, err, errlen);
    if (rc < 0)
        return rc;
    char leaf_schema[PGCDC_RELATIONS_NAME_MAX], leaf_table[PGCDC_RELATIONS_NAME_MAX];
    memcpy(leaf_schema, r->schema, sizeof(leaf_schema));
    memcpy(leaf_table, r->table, sizeof(leaf_table));
    rc = pgcdc_catalog_partition_root(rs->catalog, leaf_schema, leaf_table, r->schema,
                                      sizeof(r->schema), r->table, sizeof(r->table), err, errlen);
    if (rc < 0) {
        PQfinish(rs->catalog);
        rs->catalog = NULL;
        return PGCDC_ERR_RETRY;
    }
    return PGCDC_OK;
}

/*
 * The key columns of r when its replica identity is an index other than the primary key
 * (deletes then carry only that index's columns), asked of the catalog by the leaf's own
 * name: its identity is its own, whatever its partition root's.
 */
static int learn_key(struct pgcdc_relations *rs, struct pgcdc_relation *r,
                     const struct pgcdc_change *ch, char *err, size_t errlen)
{
    char schema[PGCDC_RELATIONS_NAME_MAX], table[PGCDC_RELATIONS_NAME_MAX];
    size_t ends[PGCDC_RELATIONS_KEY_MAX];
    if (pgcdc_json_unescape(ch->schema, schema, sizeof(schema)) < 0 ||
        pgcdc_json_unescape(ch->table, table, sizeof(table)) < 0) {
        snprintf(err, errlen, "wal2json sent an unreadable table name");
        return PGCDC_ERR;
    }
    int rc = open_catalog(rs, err, errlen);
    if (rc < 0)
        return rc;
    pgcdc_buf_reset(&r->key_names);
    int n = pgcdc_catalog_identity_key(rs->catalog, schema, table, &r->key_names, ends,
                                       PGCDC_RELATIONS_KEY_MAX, err, errlen);
    if (n < 0) {
        PQfinish(rs->catalog);
        rs->catalog = NULL;
        return n;
    }
    if (n == 0)
        return PGCDC_OK;
    if (!(r->key_cols = calloc((size_t)n, sizeof(*r->key_cols)))) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    /* The spans point into key_names, complete now: it is not appended to again. */
    for (int k = 0; k < n; k++) {
        size_t from = k ? ends[k - 1] : 0;
        r->key_cols[k] = (struct pgcdc_col){.name = {r->key_names.data + from, ends[k] - from}};
    }
    r->nkey = (size_t)n;
    return PGCDC_OK;
}

/* Decide what events call r (the change's table) and whether it is selected. */
static int name_rel(struct pgcdc_relations *rs, struct pgcdc_relation *r,
                    const struct pgcdc_change *ch, char *err, size_t errlen)
{
    int rc = PGCDC_OK;
    if (pgcdc_json_unescape(ch->schema, r->schema, sizeof(r->schema)) < 0 ||
        pgcdc_json_unescape(ch->table, r->table, sizeof(r->table)) < 0) {
        snprintf(err, errlen, "wal2json sent an unreadable table name");
        return PGCDC_ERR;
    }
    if (rs->cfg->source_partitions_as_root) {
        if ((rc = partition_root(rs, r, err, errlen)) < 0)
            return rc;
        r->resolved_ms = pgcdc_mono_ms();
    }
    pgcdc_buf_reset(&r->schema_json);
    pgcdc_buf_reset(&r->table_json);
    if (pgcdc_buf_append_json_str(&r->schema_json, r->schema, strlen(r->schema)) < 0 ||
        pgcdc_buf_append_json_str(&r->table_json, r->table, strlen(r->table)) < 0) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    r->selected = pgcdc_config_table_selected(rs->cfg, r->schema, r->table);
    return PGCDC_OK;
}

/* Learn a table the cache has not seen (or has forgotten). */
static int learn_rel(struct pgcdc_relations *rs, const struct pgcdc_change *ch,
                     struct pgcdc_relation **out, char *err, size_t errlen)
{
    size_t keylen = ch->schema.len + 1 + ch->table.len;
    if (rs->nrels == REL_CACHE_MAX)
        rels_clear(rs); /* a schema churning through this many tables: start over */
    if (!rs->rels && !(rs->rels = calloc(REL_CACHE_MAX, sizeof(*rs->rels)))) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    struct pgcdc_relation *r = &rs->rels[rs->nrels];
    memset(r, 0, sizeof(*r));
    if (!(r->key = malloc(keylen))) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    memcpy(r->key, ch->schema.p, ch->schema.len);
    r->key[ch->schema.len] = '.';
    memcpy(r->key + ch->schema.len + 1, ch->table.p, ch->table.len);
    r->keylen = keylen;
    int rc = name_rel(rs, r, ch, err, errlen);
    if (rc == PGCDC_OK && r->selected)
        rc = learn_key(rs, r, ch, err, errlen);
    if (rc < 0) {
        free(r->key);
        pgcdc_buf_free(&r->schema_json);
        pgcdc_buf_free(&r->table_json);
        pgcdc_buf_free(&r->key_names);
        free(r->key_cols);
        return rc;
    }
    rs->last = rs->nrels++;
    *out = r;
    return PGCDC_OK;
}

/*
 * Look up (or learn) how events name the change's table and whether it is selected.
 * Consecutive changes mostly hit the same table: check that one first.
 */
static int lookup(struct pgcdc_relations *rs, const struct pgcdc_change *ch,
                  struct pgcdc_relation **out, char *err, size_t errlen)
{
    size_t keylen = ch->schema.len + 1 + ch->table.len;
    for (size_t k = 0; k < rs->nrels; k++) {
        size_t i = (rs->last + k) % rs->nrels;
        struct pgcdc_relation *r = &rs->rels[i];
        if (r->keylen == keylen && memcmp(r->key, ch->schema.p, ch->schema.len) == 0 &&
            memcmp(r->key + ch->schema.len + 1, ch->table.p, ch->table.len) == 0) {
            rs->last = i;
            *out = r;
            if (rs->cfg->source_partitions_as_root &&
                pgcdc_mono_ms() - r->resolved_ms >= PARTITION_RECHECK_MS)
                return name_rel(rs, r, ch, err, errlen);
            return PGCDC_OK;
        }
    }
    return learn_rel(rs, ch, out, err, errlen);
}

int pgcdc_relations_resolve(struct pgcdc_relations *rs, const struct pgcdc_change *ch,
                            const struct pgcdc_relation **out, char *err, size_t errlen)
{
    struct pgcdc_relation *r;
    int rc = lookup(rs, ch, &r, err, errlen);
    if (rc < 0)
        return rc;
    *out = r;
    if (!r->selected)
        return PGCDC_OK;
    if ((rc = apply_type_rules(rs, ch->columns, ch->ncolumns, err, errlen)) < 0)
        return rc;
    return apply_type_rules(rs, ch->identity, ch->nidentity, err, errlen);
}

void pgcdc_relations_reset(struct pgcdc_relations *rs)
{
    rels_clear(rs);
    rs->ntypes = 0;
    PQfinish(rs->catalog);
    rs->catalog = NULL;
}

void pgcdc_relations_free(struct pgcdc_relations *rs)
{
    pgcdc_relations_reset(rs);
    free(rs->rels);
    free(rs->types);
    rs->rels = NULL;
    rs->types = NULL;
    rs->captypes = 0;
}

int pgcdc_relations_check(struct pg_conn *c, const struct pgcdc_config *cfg, char *err,
                          size_t errlen)
{
    char missing[512];
    int rc = pgcdc_catalog_missing_included(c, cfg, missing, sizeof(missing), err, errlen);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        snprintf(err, errlen,
                 "source.tables.include names %s, which does not exist (or is not a permanent "
                 "table): create it, or fix the name (schema.table)",
                 missing);
        return PGCDC_ERR_CONFIG;
    }
    struct pgcdc_buf names = {0};
    rc = pgcdc_catalog_keyless(c, cfg, &names, err, errlen);
    if (rc > 0)
        pgcdc_log(PGCDC_LOG_WARN,
                  "tables without a primary key or replica identity: their updates and deletes "
                  "cannot be captured (fix: ALTER TABLE ... REPLICA IDENTITY FULL, or add a "
                  "primary key)",
                  "tables", names.data, NULL);
    pgcdc_buf_free(&names);
    return rc < 0 ? rc : PGCDC_OK;
}
