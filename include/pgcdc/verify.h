/*
 * verify.h — `pgcdc verify`: are two databases' tables equal?
 *
 * Per table, each database computes (in SQL, without sending rows) the row count and an
 * order-independent hash: the sum over rows of the first 60 bits of md5 of the row's text
 * form. Both connections pin the settings the text form depends on (DateStyle,
 * IntervalStyle, TimeZone, extra_float_digits, bytea_output), and the row is built from
 * the source's column list by name, so column order on the target does not matter. Each
 * side reads all tables in one REPEATABLE READ snapshot; both sides run concurrently.
 */
#ifndef PGCDC_VERIFY_H
#define PGCDC_VERIFY_H

#include <stddef.h>

/* "schema.table" -> "SCHEMA"."TABLE" split; the part before the first dot is the schema
 * (no dot: public). Returns 0, or -1 when a part is empty. out_* are malloc'd. */
int pgcdc_verify_split_name(const char *arg, char **schema, char **table);

/*
 * The query computing "count, hash" for one table given its columns (NULL-terminated list
 * of unquoted names). Appends a NUL-terminated query to *out (malloc'd; caller frees).
 */
int pgcdc_verify_query(const char *schema, const char *table, const char *const *cols, char **out);

struct pgcdc_verify_opts {
    const char *source, *target; /* libpq DSNs; never logged as is */
    const char *const *tables;   /* "schema.table" names to compare; none: every table */
    int ntables;
};

/*
 * Run `pgcdc verify` (arguments parsed in main.c): one line per table on stdout (MATCH,
 * DIFF, MISSING). Returns PGCDC_OK when every table matches, PGCDC_ERR otherwise or on a
 * failure (err says which). o and its strings are borrowed.
 */
int pgcdc_verify_run(const struct pgcdc_verify_opts *o, char *err, size_t errlen);

#endif
