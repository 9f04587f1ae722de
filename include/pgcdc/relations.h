/*
 * relations.h — what events call each table wal2json names, and whether it is selected.
 *
 * The stream asks once per change. A cache keyed by wal2json's raw schema and table bytes
 * answers without a lookup; with source.partitions_as_root a leaf partition is reported
 * (and selected) under its root's name, asked of the catalog over a plain connection this
 * module opens on first use. User types (domains over integers or booleans) are resolved
 * to the type whose event rules apply, once each.
 */
#ifndef PGCDC_RELATIONS_H
#define PGCDC_RELATIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/common.h"
#include "pgcdc/config.h"
#include "pgcdc/decode.h"

#define PGCDC_RELATIONS_NAME_MAX 256
#define PGCDC_RELATIONS_KEY_MAX 32 /* PostgreSQL's INDEX_MAX_KEYS */

struct pg_conn;

/* A table as wal2json names it, and what events call it. */
struct pgcdc_relation {
    char *key; /* raw JSON bytes: schema span, '.', table span */
    size_t keylen;
    char schema[PGCDC_RELATIONS_NAME_MAX], table[PGCDC_RELATIONS_NAME_MAX]; /* reported */
    struct pgcdc_buf schema_json, table_json; /* reported, as JSON strings */
    bool selected;
    int64_t resolved_ms; /* when the partition root was last looked up */
    /* REPLICA IDENTITY USING INDEX on an index other than the primary key: that index's
     * columns make the Kafka key on every operation (names in key_names, as JSON strings);
     * nkey 0: the key is wal2json's "pk". Looked up once, when the table is learnt. */
    struct pgcdc_col *key_cols; /* nkey entries (malloc'd, owned), NULL when nkey is 0 */
    size_t nkey;
    struct pgcdc_buf key_names;
};

struct pgcdc_relations_type;

/* The cache; zero it, then pgcdc_relations_init. */
struct pgcdc_relations {
    const struct pgcdc_config *cfg;
    struct pgcdc_relation *rels; /* REL_CACHE_MAX entries once the first is learnt */
    size_t nrels, last;          /* last: the entry the previous change hit */
    struct pg_conn *catalog;     /* plain connection for catalog lookups, opened when needed */
    struct pgcdc_relations_type *types; /* user type OID -> the OID whose rules apply */
    size_t ntypes, captypes;
};

void pgcdc_relations_init(struct pgcdc_relations *rs, const struct pgcdc_config *cfg);

/*
 * Name ch's table as events report it and say whether it is selected (*out, owned by the
 * cache, valid until the next call here). For a selected table the type OIDs of ch's
 * columns and identity are rewritten to the ones the event rules apply to, and the key
 * columns are known (pgcdc_relations_key). Returns 0,
 * PGCDC_ERR_RETRY when the catalog could not be asked, PGCDC_ERR otherwise.
 */
int pgcdc_relations_resolve(struct pgcdc_relations *rs, const struct pgcdc_change *ch,
                            const struct pgcdc_relation **out, char *err, size_t errlen);

/*
 * The change as events report it: ch with rel's names, and with the key columns of
 * REPLICA IDENTITY USING INDEX in place of wal2json's primary key when rel has them.
 * The result borrows from ch and rel.
 */
static inline struct pgcdc_change pgcdc_relations_name(const struct pgcdc_relation *rel,
                                                       const struct pgcdc_change *ch)
{
    struct pgcdc_change named = *ch;
    named.schema = (struct pgcdc_span){rel->schema_json.data, rel->schema_json.len};
    named.table = (struct pgcdc_span){rel->table_json.data, rel->table_json.len};
    if (rel->nkey) {
        named.pk = rel->key_cols;
        named.npk = rel->nkey;
    }
    return named;
}

/*
 * Forget every name and type and close the catalog connection: after a reconnect, tables
 * may have been renamed or repartitioned meanwhile.
 */
void pgcdc_relations_reset(struct pgcdc_relations *rs);

/* Free everything the cache holds. */
void pgcdc_relations_free(struct pgcdc_relations *rs);

/*
 * Check the selection against the source over c: a listed table that does not exist is a
 * configuration error (PGCDC_ERR_CONFIG naming it); a selected table whose updates and
 * deletes cannot be captured is named in a warning. Returns 0 or a negative code.
 */
int pgcdc_relations_check(struct pg_conn *c, const struct pgcdc_config *cfg, char *err,
                          size_t errlen);

#endif
