/*
 * snapshot_par.h — a snapshot read by snapshot.workers threads, each on its own connection
 * that imports the same snapshot (exported by the reader holding the locks). Workers read
 * and encode tables, or ctid block ranges of large tables on PostgreSQL 14+, into chunks
 * of finished events; the one writer (the thread running the stream, the only one that
 * touches the sink and the tracker) takes the chunks in table order and range order, so
 * the output is the same ordered stream a single reader gives.
 *
 * Memory stays bounded: each worker owns a few chunks and waits when all are queued. The
 * writer always waits for the lowest job not written, whose worker's chunks it frees, so
 * the pool cannot deadlock.
 */
#ifndef PGCDC_SNAPSHOT_PAR_H
#define PGCDC_SNAPSHOT_PAR_H

#include <stddef.h>
#include <stdint.h>

#include "pgcdc/config.h"
#include "pgcdc/snapshot_read.h"

struct pgcdc_snappar;

struct pgcdc_snappar_opts {
    struct pgcdc_snapreader *main;     /* holds the snapshot and the locks, idle meanwhile */
    const struct pgcdc_snaptables *tl; /* borrowed until pgcdc_snappar_stop */
    const struct pgcdc_config *cfg;
    const char *name_json, *db_json; /* the events' source block */
    uint64_t point;
    int64_t ts_ms; /* the units' commit time, source.ts_ms */
};

/*
 * Plan the jobs (a table, or its block ranges), export the main reader's snapshot and
 * start the workers. Returns 0 or a negative code (nothing left running).
 */
int pgcdc_snappar_start(struct pgcdc_snappar **out, const struct pgcdc_snappar_opts *o, char *err,
                        size_t errlen);

/* One encoded event; key NULL when the table has no key. Valid for the call only. */
typedef int (*pgcdc_snappar_rec_fn)(void *ctx, const char *value, size_t vlen, const char *key,
                                    size_t klen, char *err, size_t errlen);

/*
 * Give rec() every row of the leaves [first, first + n) of the listing, in order (units
 * are asked for in listing order). idle() runs every 100 ms spent waiting for workers
 * (keep the replication connection alive; NULL: nothing). Returns 0 or a negative code.
 */
int pgcdc_snappar_unit(struct pgcdc_snappar *p, size_t first, size_t n, pgcdc_snappar_rec_fn rec,
                       int (*idle)(void *ctx, char *err, size_t errlen), void *ctx, char *err,
                       size_t errlen);

/* Cancel the workers (their queries too), wait for them, close their connections, free. */
void pgcdc_snappar_stop(struct pgcdc_snappar *p);

#endif
