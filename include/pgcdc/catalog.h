/*
 * catalog.h — questions about the source's tables that `check`, `run` and the snapshot
 * all ask, answered with SQL over any connection (plain or replication=database).
 */
#ifndef PGCDC_CATALOG_H
#define PGCDC_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "pgcdc/common.h"
#include "pgcdc/config.h"

struct pg_conn;

/*
 * The selected tables whose updates and deletes wal2json cannot emit: no primary key and
 * no usable replica identity. Appends "schema.table" names separated by ", " to names and
 * returns how many (>= 0), or a negative code with err set.
 */
int pgcdc_catalog_keyless(struct pg_conn *c, const struct pgcdc_config *cfg,
                          struct pgcdc_buf *names, char *err, size_t errlen);

/*
 * Find an entry of source.tables.include without a wildcard that names no permanent table.
 * Returns 1 and copies it to missing when there is one, 0 when all exist, <0 on error.
 */
int pgcdc_catalog_missing_included(struct pg_conn *c, const struct pgcdc_config *cfg,
                                   char *missing, size_t missinglen, char *err, size_t errlen);

/*
 * The top of schema.table's partition tree (the table itself when it is not a partition, or
 * no longer exists), copied into root_schema/root_table.
 */
int pgcdc_catalog_partition_root(struct pg_conn *c, const char *schema, const char *table,
                                 char *root_schema, size_t rslen, char *root_table, size_t rtlen,
                                 char *err, size_t errlen);

/* The ultimate base type of oid through any domains (oid itself when not a domain). */
int pgcdc_catalog_base_type(struct pg_conn *c, uint32_t oid, uint32_t *base, char *err,
                            size_t errlen);

/*
 * The Kafka key's columns of schema.table when REPLICA IDENTITY USING INDEX names an index
 * other than the primary key (deletes then carry only that index's columns): appended to
 * names as JSON strings, quotes included, in column order, ends[k] the offset just after
 * the k-th. Returns how many (at most maxcols; 0: the key is the primary key, as wal2json's
 * "pk" lists it), or a negative code with err set.
 */
int pgcdc_catalog_identity_key(struct pg_conn *c, const char *schema, const char *table,
                               struct pgcdc_buf *names, size_t *ends, size_t maxcols, char *err,
                               size_t errlen);

/*
 * The first column of sql's first row, copied into out. Returns 0, or a negative code
 * (pgcdc_errors_pg's class; PGCDC_ERR when there is no row) with err set. Plain and
 * replication=database connections both answer it.
 */
int pgcdc_catalog_value(struct pg_conn *c, const char *sql, char *out, size_t outlen, char *err,
                        size_t errlen);

/* SHOW name (a setting's name, written by pgcdc, never user input) into out, as above. */
int pgcdc_catalog_show(struct pg_conn *c, const char *name, char *out, size_t outlen, char *err,
                       size_t errlen);

/* The SQL selecting permanent user tables: columns oid, schema, table, root schema, root
 * table (see catalog.c). */
extern const char pgcdc_catalog_tables_sql[];

#endif
