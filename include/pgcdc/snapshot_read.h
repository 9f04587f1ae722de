/*
 * snapshot_read.h — one reader session of the snapshot: a normal connection that imports
 * an exported snapshot (SET TRANSACTION SNAPSHOT) in a REPEATABLE READ READ ONLY
 * transaction, lists the selected tables as that snapshot sees them, locks them, and reads
 * each with COPY ... TO STDOUT, turning every row into the change wal2json would have sent
 * for it (snapshot_copy.h).
 *
 * Once imported, the snapshot belongs to this transaction: the connection that exported it
 * may go on, or close, without affecting what is read here.
 */
#ifndef PGCDC_SNAPSHOT_READ_H
#define PGCDC_SNAPSHOT_READ_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/common.h"
#include "pgcdc/config.h"
#include "pgcdc/decode.h"

struct pg_conn;
struct pg_result;

struct pgcdc_snapreader {
    struct pg_conn *c;
    volatile sig_atomic_t *stop; /* non-zero: end early with PGCDC_ERR_RETRY */
    const atomic_int *cancel;    /* the same, set by another thread (NULL: none) */
    bool numeric_strings;        /* wal2json's numeric-data-types-as-string is in use */
    uint32_t xmin;               /* the snapshot's xmin: the txId of its rows */
    /* A SQL_ASCII server sends its bytes as they are stored, which need not be UTF-8:
     * each row is checked and source.invalid_utf8 applied (other servers' text arrives
     * as UTF-8, see source.h). */
    bool sql_ascii;
    int invalid_utf8; /* source.invalid_utf8 */
    uint64_t point;   /* the rows' LSN, for those messages */
    struct pgcdc_buf fix; /* a repaired row */
};

/* One selected table, as the snapshot sees it; the strings live in the listing. */
struct pgcdc_snaptable {
    const char *oid, *schema, *name;
    const char *report_schema, *report_name; /* the root's with source.partitions_as_root */
    double reltuples;                        /* the planner's estimate; < 0 unknown */
};

struct pgcdc_snaptables {
    struct pgcdc_snaptable *t;
    size_t n;
    struct pg_result *res; /* owns the strings */
};

/*
 * Called once per row: ch's spans (and schema/table) are valid for the call only. A
 * negative return ends the table's read with that code.
 */
typedef int (*pgcdc_snapreader_row_fn)(void *ctx, const struct pgcdc_change *ch, char *err,
                                       size_t errlen);

struct pgcdc_snapreader_opts {
    const char *dsn;
    const char *snapshot_name; /* exported by CREATE_REPLICATION_SLOT */
    /* In: -1 unknown, 0/1 known. Out: whether wal2json takes numeric-data-types-as-string,
     * probed (when unknown) by peeking at probe_slot, inactive, from probe_lsn, which
     * changes how NaN is written. */
    int *numeric_strings;
    const char *probe_slot;
    uint64_t probe_lsn;
    volatile sig_atomic_t *stop;
    const atomic_int *cancel; /* a parallel reader's: set when the snapshot is abandoned */
    int invalid_utf8; /* source.invalid_utf8 */
    uint64_t point;   /* the snapshot's point, named in messages about invalid text */
};

/*
 * Connect and import the snapshot. Returns 0, or a negative code with err set (classified
 * by errors.c; PGCDC_ERR_RETRY when *stop was set). r->c is NULL on failure.
 */
int pgcdc_snapreader_open(struct pgcdc_snapreader *r, const struct pgcdc_snapreader_opts *o,
                          char *err, size_t errlen);

/* Every table selected by cfg, in name order, into *out (pgcdc_snapreader_tables_free). */
int pgcdc_snapreader_tables(struct pgcdc_snapreader *r, const struct pgcdc_config *cfg,
                            struct pgcdc_snaptables *out, char *err, size_t errlen);
void pgcdc_snapreader_tables_free(struct pgcdc_snaptables *tl);

/*
 * LOCK TABLE ONLY ... IN ACCESS SHARE MODE, as pg_dump does, so that no table can be
 * rewritten (ALTER TABLE ... TYPE, VACUUM FULL: MVCC-unsafe) while the others are read.
 */
int pgcdc_snapreader_lock(struct pgcdc_snapreader *r, const struct pgcdc_snaptable *t, char *err,
                          size_t errlen);

/*
 * The same without waiting, for a parallel reader (as pg_dump's workers do): the first
 * reader holds the lock, so an exclusive lock requested since (ALTER TABLE) waits behind
 * it, and a wait behind that one would never end. Fails with 55P03 (retried) instead.
 */
int pgcdc_snapreader_lock_nowait(struct pgcdc_snapreader *r, const struct pgcdc_snaptable *t,
                                 char *err, size_t errlen);

/* Read table t with COPY, calling row() for each row; *rows counts them as they go. */
int pgcdc_snapreader_copy(struct pgcdc_snapreader *r, const struct pgcdc_snaptable *t,
                          pgcdc_snapreader_row_fn row, void *ctx, uint64_t *rows, char *err,
                          size_t errlen);

/*
 * Read the blocks [from, to) of table t (to = PGCDC_SNAP_ALL_BLOCKS: to its end) with
 * COPY (SELECT * FROM ONLY t WHERE ctid ...), a TID Range Scan on PostgreSQL 14+; from 0
 * to the end is the whole table, read as pgcdc_snapreader_copy does.
 */
#define PGCDC_SNAP_ALL_BLOCKS UINT64_MAX
int pgcdc_snapreader_copy_range(struct pgcdc_snapreader *r, const struct pgcdc_snaptable *t,
                                uint64_t from, uint64_t to, pgcdc_snapreader_row_fn row, void *ctx,
                                uint64_t *rows, char *err, size_t errlen);

/*
 * Export the reader's snapshot (pg_export_snapshot) for other readers to import; valid
 * while this reader's transaction lasts. The name into name.
 */
int pgcdc_snapreader_export(struct pgcdc_snapreader *r, char *name, size_t namelen, char *err,
                            size_t errlen);

/* The table's size in blocks as the server has it now (never less than the snapshot's). */
int pgcdc_snapreader_blocks(struct pgcdc_snapreader *r, const struct pgcdc_snaptable *t,
                            uint64_t *blocks, char *err, size_t errlen);

/* End the transaction and close the connection (safe on a closed reader). */
void pgcdc_snapreader_close(struct pgcdc_snapreader *r);

#endif
