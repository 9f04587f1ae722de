/*
 * verify.h — `pgcdc verify`: are two databases' tables equal?
 *
 * Per table, each database computes (in SQL, without sending rows) the row count and an
 * order-independent hash: the sum over rows of the first 60 bits of md5 of the row's text
 * form. Both connections pin the settings the text form depends on (DateStyle,
 * IntervalStyle, TimeZone, extra_float_digits, bytea_output, client_encoding, an empty
 * search_path), and the row is built from the source's column list by name, so column
 * order on the target does not matter. Each side reads all tables in one REPEATABLE READ
 * snapshot; both sides run concurrently.
 *
 * Which tables: the named ones, or else every plain table and partitioned root of the
 * source (a partitioned table through all its partitions; partitions are not listed on
 * their own), and the target's tables the source lacks are reported as EXTRA.
 */
#ifndef PGCDC_VERIFY_H
#define PGCDC_VERIFY_H

#include <stdbool.h>
#include <stddef.h>

/* "schema.table" -> "SCHEMA"."TABLE" split; the part before the first dot is the schema
 * (no dot: public). Returns 0, or -1 when a part is empty. out_* are malloc'd. */
int pgcdc_verify_split_name(const char *arg, char **schema, char **table);

/*
 * The query computing "count, hash" for one table given its columns (NULL-terminated list
 * of unquoted names): over the table alone (FROM ONLY), or over all its partitions when it
 * is partitioned. Sets *out to a NUL-terminated query (malloc'd; caller frees).
 */
int pgcdc_verify_query(const char *schema, const char *table, const char *const *cols,
                       bool partitioned, char **out);

struct pgcdc_verify_opts {
    const char *source, *target; /* libpq DSNs; never logged as is */
    const char *const *tables;   /* "schema.table" names to compare; none: every table */
    int ntables;
};

/*
 * Run `pgcdc verify` (arguments parsed in main.c): one line per table on stdout (MATCH,
 * DIFF, MISSING, EXTRA). Returns PGCDC_OK when every table matches and the target has no
 * table the source lacks; PGCDC_ERR_CONFIG when a named table exists on neither side;
 * PGCDC_ERR otherwise or on a failure (err says which). o and its strings are borrowed.
 */
int pgcdc_verify_run(const struct pgcdc_verify_opts *o, char *err, size_t errlen);

#endif
