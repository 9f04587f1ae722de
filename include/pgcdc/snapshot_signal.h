/*
 * snapshot_signal.h — on-demand snapshots through the signal table pgcdc.signal in the
 * source database. `pgcdc snapshot --table S.T...` inserts a request row; `run` sees the
 * insert in stream order, like any change, and snapshots those tables at a new point.
 * PostgreSQL's privileges on the table decide who may ask (docs/operations.md has the
 * DDL). The table is never captured itself.
 *
 *   CREATE SCHEMA IF NOT EXISTS pgcdc;
 *   CREATE TABLE pgcdc.signal (id bigserial PRIMARY KEY, type text NOT NULL DEFAULT
 *       'snapshot', tables text[] NOT NULL, requested_at timestamptz NOT NULL DEFAULT now(),
 *       requested_by name NOT NULL DEFAULT current_user);
 */
#ifndef PGCDC_SNAPSHOT_SIGNAL_H
#define PGCDC_SNAPSHOT_SIGNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "pgcdc/config.h"
#include "pgcdc/decode.h"

struct pg_conn;

#define PGCDC_SIGNAL_SCHEMA "pgcdc"
#define PGCDC_SIGNAL_TABLE "signal"

#include <string.h>

/* Whether schema.table is the signal table, which is never captured itself. */
static inline bool pgcdc_signal_is(const char *schema, const char *table)
{
    return strcmp(schema, PGCDC_SIGNAL_SCHEMA) == 0 && strcmp(table, PGCDC_SIGNAL_TABLE) == 0;
}

/*
 * `pgcdc snapshot`: check that each of tables (n "schema.table" names) exists and is
 * selected (else PGCDC_ERR_CONFIG naming it), insert the request and put the LSN after its
 * commit in lsn (at least 32 bytes). Returns 0 or a negative code with err set.
 */
int pgcdc_signal_request(const struct pgcdc_config *cfg, const char *const *tables, int n,
                         char *lsn, size_t lsnlen, char *err, size_t errlen);

/* Called with each table a request names, unescaped. A negative return stops. */
typedef int (*pgcdc_signal_table_fn)(void *ctx, const char *schema, const char *table);

/*
 * Whether schema.table (reported names) is the signal table; if ch is an insert of a
 * snapshot request, call fn for each table it names. Returns 1 when it was a request, 0
 * when not the signal table or not a request, negative on a malformed one (err set).
 */
int pgcdc_signal_parse(const char *schema, const char *table, const struct pgcdc_change *ch,
                       pgcdc_signal_table_fn fn, void *ctx, char *err, size_t errlen);

/* Whether the signal table exists (for check): 1 yes, 0 no, -1 could not tell. */
int pgcdc_signal_exists(struct pg_conn *c);

#endif
