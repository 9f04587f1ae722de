/*
 * replay_copy.h — `pgcdc replay`'s COPY path for snapshot rows: a run of snapshot rows of
 * one table goes to the target as `COPY schema.table (cols) FROM STDIN` in text format,
 * built straight from the events' JSON tokens (never through a double), in chunks. Each
 * chunk is one target transaction that also records replay's position, so a kill resumes
 * the table after the last committed chunk.
 *
 * libpq runs no COPY in pipeline mode: the caller leaves it before pgcdc_replay_copy_begin
 * and one connection runs one COPY at a time.
 */
#ifndef PGCDC_REPLAY_COPY_H
#define PGCDC_REPLAY_COPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/common.h"
#include "pgcdc/replay_event.h"
#include "pgcdc/replay_target.h"

/* The COPY in progress, and its reused buffers. Zero-initialised; _free releases it. */
struct pgcdc_replay_copy {
    bool active;            /* BEGIN and COPY ... FROM STDIN sent: rows may follow */
    int table;              /* the target table index, when active */
    int64_t rows;           /* rows in the open chunk */
    uint64_t bytes;         /* COPY text of the open chunk */
    struct pgcdc_buf data;  /* COPY text not yet handed to libpq */
    struct pgcdc_buf sql;   /* the COPY statement */
    struct pgcdc_buf names; /* the open COPY's layout: the event's column names, raw */
    size_t *name_off;       /* ncols + 1 offsets into names */
    bool *skip;             /* per event column: left out (a stored generated column) */
    size_t ncols, cap;
};

void pgcdc_replay_copy_free(struct pgcdc_replay_copy *cp);

/*
 * Append the COPY text line of ev's "after" row to out: columns with skip[i] set are left
 * out; null -> \N, a string unescaped then escaped for COPY's text format, a number as it
 * is, true/false -> t/f. Returns 0 or PGCDC_ERR (a malformed token, or ENOMEM).
 */
int pgcdc_replay_copy_line(struct pgcdc_buf *out, const struct pgcdc_replay_event *ev,
                           const bool *skip);

/* Whether ev's columns are those of the open COPY, in the same order. */
bool pgcdc_replay_copy_same_layout(const struct pgcdc_replay_copy *cp,
                                   const struct pgcdc_replay_event *ev);

/*
 * Open a transaction and a COPY into table ti for rows laid out as ev's. The connection must
 * be out of pipeline mode. Returns 0, PGCDC_ERR (err names the table and column when the
 * event names a column the target lacks), or PGCDC_ERR_RETRY (the connection).
 */
int pgcdc_replay_copy_begin(struct pgcdc_replay_copy *cp, struct pgcdc_replay_target *tg, int ti,
                            const struct pgcdc_replay_event *ev, char *err, size_t errlen);

/* Add ev's row to the open COPY (sent to libpq in large pieces). Returns 0 or an error. */
int pgcdc_replay_copy_row(struct pgcdc_replay_copy *cp, struct pgcdc_replay_target *tg,
                          const struct pgcdc_replay_event *ev, char *err, size_t errlen);

/*
 * End the COPY and commit it together with the position (commit, partial), as
 * commit_batch does; tg->done and the counters follow. Returns 0, PGCDC_ERR (the data was
 * refused: tg->failed, fail_commit = commit) or PGCDC_ERR_RETRY.
 */
int pgcdc_replay_copy_end(struct pgcdc_replay_copy *cp, struct pgcdc_replay_target *tg,
                          uint64_t commit, int64_t partial, char *err, size_t errlen);

/*
 * How many rows table ti holds, counting at most limit + 1 (so an empty-table check
 * reads one row). Returns the count, or a negative error code.
 */
int64_t pgcdc_replay_copy_count(struct pgcdc_replay_target *tg, int ti, int64_t limit, char *err,
                                size_t errlen);

#endif
