/*
 * replay_batch.h — `pgcdc replay`'s per-table queues and multi-row statements.
 *
 * When the target session runs with session_replication_role = replica (no triggers, no
 * foreign-key checks, as PostgreSQL's own apply worker), a target transaction's changes
 * wait in per-table queues and go out table by table as multi-row statements: the order of
 * tables inside one target transaction cannot be observed, and within a table source order
 * is kept (see pgcdc_replay_batch_flush for what may share a statement).
 */
#ifndef PGCDC_REPLAY_BATCH_H
#define PGCDC_REPLAY_BATCH_H

#include <stddef.h>

#include "pgcdc/common.h"
#include "pgcdc/replay_event.h"
#include "pgcdc/replay_sql.h"
#include "pgcdc/replay_target.h"

struct pgcdc_replay_queue; /* one table's queue and statement shapes (replay_batch.c) */

struct pgcdc_replay_batch {
    int group_rows;               /* rows per multi-row statement, at most */
    struct pgcdc_replay_queue *q; /* by the target's table index */
    size_t nq;
    struct pgcdc_buf arena; /* parameter values of queued changes, NUL-terminated */
    size_t *voff;           /* offsets into arena; SIZE_MAX for NULL */
    size_t nvoff, capvoff;
    int *order; /* tables with queued changes, in the order they got one */
    size_t norder, caporder;
    size_t pending;       /* changes queued */
    const char **gparams; /* the parameters of one multi-row statement */
    size_t gcap;
    struct pgcdc_buf gsql;
};

void pgcdc_replay_batch_init(struct pgcdc_replay_batch *b, int group_rows);
void pgcdc_replay_batch_free(struct pgcdc_replay_batch *b);

/* Forget every queue and shape: the target's tables are gone with its connection. */
void pgcdc_replay_batch_reset(struct pgcdc_replay_batch *b);

/*
 * Queue the change st (built from ev for the target's table ti). Sends everything queued
 * once enough waits. Returns 0 or an error of the target's.
 */
int pgcdc_replay_batch_add(struct pgcdc_replay_batch *b, struct pgcdc_replay_target *tg, int ti,
                           const struct pgcdc_replay_stmt *st, const struct pgcdc_replay_event *ev,
                           char *err, size_t errlen);

/*
 * Send every queued change. Table by table; within a table in source order, runs of the
 * same shape as multi-row statements of up to group_rows distinct keys, in power-of-two
 * sizes (few distinct SQL texts to prepare). A later update of a key already in the run
 * replaces the earlier one.
 */
int pgcdc_replay_batch_flush(struct pgcdc_replay_batch *b, struct pgcdc_replay_target *tg,
                             char *err, size_t errlen);

#endif
