/*
 * txn_track.c — ring of in-flight transactions (bottledwater's design, without its bugs:
 * a failed delivery never counts as delivered, and nothing leaves a count behind).
 *
 * Sequence numbers only grow, so a late acknowledgement for a transaction that was
 * already retired (or abandoned after a disconnect) is recognised and ignored instead of
 * landing on whichever transaction reused the slot.
 */
#include "pgcdc/txn_track.h"

#include <stdlib.h>

#include "pgcdc/common.h"

struct txn {
    uint64_t seq;
    uint64_t end_lsn;
    int64_t commit_ts_ms;
    uint64_t pending; /* messages written and not yet acknowledged */
    bool closed;      /* commit seen */
    bool failed;      /* some message failed: never confirm past this one */
    bool aborted;     /* connection lost before its commit: retire without confirming */
};

struct pgcdc_txn_track {
    struct txn *ring;
    size_t cap;
    uint64_t head; /* seq of the next transaction */
    uint64_t tail; /* seq of the oldest unretired transaction */
    uint64_t confirmed;
    int64_t confirmed_ts_ms;
    bool failed;
};

struct pgcdc_txn_track *pgcdc_txn_track_new(size_t capacity, uint64_t start_lsn)
{
    struct pgcdc_txn_track *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->ring = calloc(capacity, sizeof(*t->ring));
    if (!t->ring) {
        free(t);
        return NULL;
    }
    t->cap = capacity;
    t->head = t->tail = 1; /* 0 is never a valid handle */
    t->confirmed = start_lsn;
    return t;
}

void pgcdc_txn_track_free(struct pgcdc_txn_track *t)
{
    if (!t)
        return;
    free(t->ring);
    free(t);
}

static struct txn *at(const struct pgcdc_txn_track *t, uint64_t seq)
{
    return &t->ring[seq % t->cap];
}

static struct txn *open_txn(struct pgcdc_txn_track *t)
{
    if (t->head == t->tail)
        return NULL;
    struct txn *x = at(t, t->head - 1);
    return x->closed ? NULL : x;
}

int pgcdc_txn_track_begin(struct pgcdc_txn_track *t, uint64_t end_lsn)
{
    if (t->head - t->tail >= t->cap) {
        pgcdc_txn_track_confirmed(t);
        if (t->head - t->tail >= t->cap)
            return PGCDC_AGAIN;
    }
    struct txn *x = at(t, t->head);
    *x = (struct txn){.seq = t->head, .end_lsn = end_lsn};
    t->head++;
    return PGCDC_OK;
}

void pgcdc_txn_track_set_commit_ts(struct pgcdc_txn_track *t, int64_t commit_ts_ms)
{
    struct txn *x = open_txn(t);
    if (x)
        x->commit_ts_ms = commit_ts_ms;
}

int64_t pgcdc_txn_track_confirmed_ts(const struct pgcdc_txn_track *t)
{
    return t->confirmed_ts_ms;
}

uint64_t pgcdc_txn_track_add(struct pgcdc_txn_track *t)
{
    struct txn *x = open_txn(t);
    if (!x)
        return 0;
    x->pending++;
    /* A handle is the transaction's sequence number. */
    return x->seq;
}

void pgcdc_txn_track_ack(struct pgcdc_txn_track *t, uint64_t handle, bool ok)
{
    if (handle < t->tail || handle >= t->head)
        return; /* retired or abandoned */
    struct txn *x = at(t, handle);
    if (x->seq != handle || x->pending == 0)
        return;
    x->pending--;
    if (!ok && !x->aborted) {
        x->failed = true;
        t->failed = true;
    }
}

void pgcdc_txn_track_ack_all(struct pgcdc_txn_track *t)
{
    /* Closed transactions only: rows of the open one written after this sync would
     * otherwise find it "acknowledged" and be confirmed at its commit without a sync. */
    for (uint64_t s = t->tail; s < t->head; s++)
        if (at(t, s)->closed)
            at(t, s)->pending = 0;
}

void pgcdc_txn_track_commit(struct pgcdc_txn_track *t)
{
    struct txn *x = open_txn(t);
    if (x)
        x->closed = true;
}

void pgcdc_txn_track_abort_all(struct pgcdc_txn_track *t)
{
    pgcdc_txn_track_confirmed(t);
    for (uint64_t s = t->tail; s < t->head; s++) {
        struct txn *x = at(t, s);
        x->closed = true;
        x->aborted = true;
    }
    t->tail = t->head;
}

uint64_t pgcdc_txn_track_confirmed(struct pgcdc_txn_track *t)
{
    while (t->tail < t->head) {
        struct txn *x = at(t, t->tail);
        if (x->aborted) {
            t->tail++;
            continue;
        }
        if (x->failed || !x->closed || x->pending > 0)
            break;
        if (x->end_lsn > t->confirmed)
            t->confirmed = x->end_lsn;
        if (x->commit_ts_ms)
            t->confirmed_ts_ms = x->commit_ts_ms;
        t->tail++;
    }
    return t->confirmed;
}

void pgcdc_txn_track_idle(struct pgcdc_txn_track *t, uint64_t wal_end)
{
    pgcdc_txn_track_confirmed(t);
    if (t->tail == t->head && !t->failed && wal_end > t->confirmed)
        t->confirmed = wal_end;
}

size_t pgcdc_txn_track_inflight(const struct pgcdc_txn_track *t)
{
    return (size_t)(t->head - t->tail);
}

bool pgcdc_txn_track_failed(const struct pgcdc_txn_track *t)
{
    return t->failed;
}

bool pgcdc_txn_track_open(const struct pgcdc_txn_track *t)
{
    return t->head != t->tail && !at(t, t->head - 1)->closed;
}
