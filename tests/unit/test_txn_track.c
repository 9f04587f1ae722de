/*
 * test_txn_track.c — the in-flight ring: the confirmed LSN moves only from the tail over
 * transactions that are committed and fully acknowledged, never past a failure, and to a
 * keepalive's walEnd only when nothing is in flight.
 */
#include <stdbool.h>
#include <stdint.h>

#include "pgcdc/common.h"
#include "pgcdc/txn_track.h"
#include "unit.h"

static void test_fresh(void)
{
    struct pgcdc_txn_track *t = pgcdc_txn_track_new(4, 100);

    CHECK(t != NULL);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 100);
    CHECK_INT_EQ(pgcdc_txn_track_inflight(t), 0);
    CHECK(!pgcdc_txn_track_open(t));
    CHECK(!pgcdc_txn_track_failed(t));
    /* Nothing open: add gives no handle, and acking it changes nothing. */
    CHECK_U64_EQ(pgcdc_txn_track_add(t), 0);
    pgcdc_txn_track_ack(t, 0, true);
    pgcdc_txn_track_ack(t, 12345, false);
    CHECK(!pgcdc_txn_track_failed(t));
    pgcdc_txn_track_commit(t); /* no open transaction: harmless */
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 100);
    pgcdc_txn_track_free(t);
    pgcdc_txn_track_free(NULL);
}

static void test_one_txn(void)
{
    struct pgcdc_txn_track *t = pgcdc_txn_track_new(4, 100);
    uint64_t h1, h2;

    CHECK_INT_EQ(pgcdc_txn_track_begin(t, 200), PGCDC_OK);
    CHECK(pgcdc_txn_track_open(t));
    CHECK_INT_EQ(pgcdc_txn_track_inflight(t), 1);
    h1 = pgcdc_txn_track_add(t);
    h2 = pgcdc_txn_track_add(t);
    CHECK(h1 != 0 && h2 != 0);
    /* Acknowledged before its commit is seen: not confirmable yet. */
    pgcdc_txn_track_ack(t, h1, true);
    pgcdc_txn_track_ack(t, h2, true);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 100);
    pgcdc_txn_track_commit(t);
    CHECK(!pgcdc_txn_track_open(t));
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 200);
    CHECK_INT_EQ(pgcdc_txn_track_inflight(t), 0);

    /* Committed first, then acknowledged one by one. */
    CHECK_INT_EQ(pgcdc_txn_track_begin(t, 300), PGCDC_OK);
    h1 = pgcdc_txn_track_add(t);
    h2 = pgcdc_txn_track_add(t);
    pgcdc_txn_track_commit(t);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 200);
    pgcdc_txn_track_ack(t, h1, true);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 200);
    pgcdc_txn_track_ack(t, h2, true);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 300);

    /* An empty transaction (all its changes filtered out) confirms at its commit. */
    CHECK_INT_EQ(pgcdc_txn_track_begin(t, 400), PGCDC_OK);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 300);
    pgcdc_txn_track_commit(t);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 400);
    pgcdc_txn_track_free(t);
}

static void test_tail_order(void)
{
    struct pgcdc_txn_track *t = pgcdc_txn_track_new(8, 100);
    uint64_t a, b, c;

    pgcdc_txn_track_begin(t, 200);
    a = pgcdc_txn_track_add(t);
    pgcdc_txn_track_commit(t);
    pgcdc_txn_track_begin(t, 300);
    b = pgcdc_txn_track_add(t);
    pgcdc_txn_track_commit(t);
    pgcdc_txn_track_begin(t, 400);
    c = pgcdc_txn_track_add(t);
    pgcdc_txn_track_commit(t);
    CHECK_INT_EQ(pgcdc_txn_track_inflight(t), 3);

    /* Later transactions complete first: the tail still holds the confirmed LSN. */
    pgcdc_txn_track_ack(t, c, true);
    pgcdc_txn_track_ack(t, b, true);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 100);
    CHECK_INT_EQ(pgcdc_txn_track_inflight(t), 3);
    pgcdc_txn_track_ack(t, a, true);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 400);
    CHECK_INT_EQ(pgcdc_txn_track_inflight(t), 0);

    /* An acknowledgement for a retired transaction is ignored, even once its ring slot is
     * reused: it must not count for the newcomer. */
    for (int i = 0; i < 8; i++) {
        pgcdc_txn_track_begin(t, 500 + (uint64_t)i);
        pgcdc_txn_track_commit(t);
    }
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 507);
    pgcdc_txn_track_begin(t, 600);
    uint64_t x = pgcdc_txn_track_add(t);
    pgcdc_txn_track_commit(t);
    pgcdc_txn_track_ack(t, a, true);
    pgcdc_txn_track_ack(t, b, true);
    pgcdc_txn_track_ack(t, c, true);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 507);
    /* Duplicate acknowledgements cannot drive the count below zero. */
    pgcdc_txn_track_ack(t, x, true);
    pgcdc_txn_track_ack(t, x, true);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 600);
    pgcdc_txn_track_free(t);
}

static void test_failed_ack(void)
{
    struct pgcdc_txn_track *t = pgcdc_txn_track_new(8, 100);
    uint64_t a1, a2, b;

    pgcdc_txn_track_begin(t, 200);
    a1 = pgcdc_txn_track_add(t);
    pgcdc_txn_track_commit(t);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 100);
    pgcdc_txn_track_ack(t, a1, true);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 200);

    pgcdc_txn_track_begin(t, 300);
    a1 = pgcdc_txn_track_add(t);
    a2 = pgcdc_txn_track_add(t);
    pgcdc_txn_track_commit(t);
    pgcdc_txn_track_begin(t, 400);
    b = pgcdc_txn_track_add(t);
    pgcdc_txn_track_commit(t);

    pgcdc_txn_track_ack(t, a1, false); /* a delivery failed */
    CHECK(pgcdc_txn_track_failed(t));
    pgcdc_txn_track_ack(t, a2, true);
    pgcdc_txn_track_ack(t, b, true);
    /* Everything else is delivered, but the failed transaction is never passed. */
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 200);
    /* Not by an ack_all either, nor by a keepalive. */
    pgcdc_txn_track_ack_all(t);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 200);
    pgcdc_txn_track_idle(t, 10000);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 200);
    pgcdc_txn_track_begin(t, 500);
    pgcdc_txn_track_commit(t);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 200);
    CHECK(pgcdc_txn_track_failed(t));
    pgcdc_txn_track_free(t);
}

static void test_idle(void)
{
    struct pgcdc_txn_track *t = pgcdc_txn_track_new(4, 100);
    uint64_t h;

    /* Nothing in flight: the keepalive's walEnd is confirmed (idle tables must not pin WAL). */
    pgcdc_txn_track_idle(t, 150);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 150);
    /* Never backwards. */
    pgcdc_txn_track_idle(t, 120);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 150);

    /* An open transaction: walEnd does not count. */
    pgcdc_txn_track_begin(t, 300);
    h = pgcdc_txn_track_add(t);
    pgcdc_txn_track_idle(t, 1000);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 150);
    /* Committed but not acknowledged: still in flight. */
    pgcdc_txn_track_commit(t);
    pgcdc_txn_track_idle(t, 1000);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 150);
    /* Acknowledged: the transaction, then walEnd. */
    pgcdc_txn_track_ack(t, h, true);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 300);
    pgcdc_txn_track_idle(t, 1000);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 1000);

    /* An open transaction begun with nothing added yet still blocks walEnd. */
    pgcdc_txn_track_begin(t, 2000);
    pgcdc_txn_track_idle(t, 1500);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 1000);
    pgcdc_txn_track_commit(t);
    pgcdc_txn_track_idle(t, 2500);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 2500);

    /* A transaction whose end is behind the confirmed LSN does not move it back. */
    pgcdc_txn_track_begin(t, 2400);
    pgcdc_txn_track_commit(t);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 2500);
    pgcdc_txn_track_free(t);
}

static void test_ring_full(void)
{
    struct pgcdc_txn_track *t = pgcdc_txn_track_new(2, 100);
    uint64_t a, b;

    CHECK_INT_EQ(pgcdc_txn_track_begin(t, 200), PGCDC_OK);
    a = pgcdc_txn_track_add(t);
    pgcdc_txn_track_commit(t);
    CHECK_INT_EQ(pgcdc_txn_track_begin(t, 300), PGCDC_OK);
    b = pgcdc_txn_track_add(t);
    pgcdc_txn_track_commit(t);
    /* Full: back-pressure, and nothing changes. */
    CHECK_INT_EQ(pgcdc_txn_track_begin(t, 400), PGCDC_AGAIN);
    CHECK_INT_EQ(pgcdc_txn_track_begin(t, 400), PGCDC_AGAIN);
    CHECK_INT_EQ(pgcdc_txn_track_inflight(t), 2);
    CHECK(!pgcdc_txn_track_open(t));
    CHECK_U64_EQ(pgcdc_txn_track_add(t), 0);
    /* The later one completing does not free the tail's slot. */
    pgcdc_txn_track_ack(t, b, true);
    CHECK_INT_EQ(pgcdc_txn_track_begin(t, 400), PGCDC_AGAIN);
    /* The tail completing does; begin itself sweeps without a confirmed() call. */
    pgcdc_txn_track_ack(t, a, true);
    CHECK_INT_EQ(pgcdc_txn_track_begin(t, 400), PGCDC_OK);
    CHECK_INT_EQ(pgcdc_txn_track_inflight(t), 1);
    pgcdc_txn_track_commit(t);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 400);
    pgcdc_txn_track_free(t);

    /* A ring of one still works, transaction after transaction. */
    t = pgcdc_txn_track_new(1, 0);
    for (uint64_t i = 1; i <= 100; i++) {
        CHECK_INT_EQ(pgcdc_txn_track_begin(t, i * 10), PGCDC_OK);
        uint64_t h = pgcdc_txn_track_add(t);
        pgcdc_txn_track_commit(t);
        CHECK_INT_EQ(pgcdc_txn_track_begin(t, i * 10 + 5), PGCDC_AGAIN);
        pgcdc_txn_track_ack(t, h, true);
    }
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 1000);
    pgcdc_txn_track_free(t);
}

static void test_ack_all(void)
{
    struct pgcdc_txn_track *t = pgcdc_txn_track_new(4, 100);

    pgcdc_txn_track_begin(t, 200);
    pgcdc_txn_track_add(t);
    pgcdc_txn_track_add(t);
    pgcdc_txn_track_commit(t);
    pgcdc_txn_track_begin(t, 300);
    pgcdc_txn_track_add(t);
    /* The file sink fsyncs: everything added so far is durable. */
    pgcdc_txn_track_ack_all(t);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 200); /* the open one waits for its commit */
    pgcdc_txn_track_add(t);                          /* added after the fsync: not durable */
    pgcdc_txn_track_commit(t);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 200);
    pgcdc_txn_track_ack_all(t);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 300);
    /* A sync lands between a transaction's last row and its commit. The checkpoint then
     * ends before this transaction: its commit must not make it confirmable until the
     * next sync, even though no row was added after the first one. */
    pgcdc_txn_track_begin(t, 400);
    pgcdc_txn_track_add(t);
    pgcdc_txn_track_ack_all(t);
    pgcdc_txn_track_commit(t);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 300);
    pgcdc_txn_track_ack_all(t);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 400);
    pgcdc_txn_track_free(t);
}

static void test_abort_all(void)
{
    struct pgcdc_txn_track *t = pgcdc_txn_track_new(4, 100);
    uint64_t a, b, c;

    /* Complete, unacknowledged, and open: then the connection drops. */
    pgcdc_txn_track_begin(t, 200);
    a = pgcdc_txn_track_add(t);
    pgcdc_txn_track_commit(t);
    pgcdc_txn_track_ack(t, a, true);
    pgcdc_txn_track_begin(t, 300);
    b = pgcdc_txn_track_add(t);
    pgcdc_txn_track_commit(t);
    pgcdc_txn_track_begin(t, 400);
    c = pgcdc_txn_track_add(t);
    CHECK(pgcdc_txn_track_open(t));

    pgcdc_txn_track_abort_all(t);
    CHECK(!pgcdc_txn_track_open(t));
    CHECK_INT_EQ(pgcdc_txn_track_inflight(t), 0);
    /* The durable one is kept; the others are forgotten without confirming them. */
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 200);
    /* Late acknowledgements for forgotten transactions change nothing, failed or not. */
    pgcdc_txn_track_ack(t, b, true);
    pgcdc_txn_track_ack(t, c, false);
    CHECK(!pgcdc_txn_track_failed(t));
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 200);
    /* The server sends them again from 200; they confirm as usual. */
    CHECK_INT_EQ(pgcdc_txn_track_begin(t, 300), PGCDC_OK);
    b = pgcdc_txn_track_add(t);
    pgcdc_txn_track_commit(t);
    pgcdc_txn_track_ack(t, b, true);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 300);
    /* With nothing in flight after the abort, walEnd counts again. */
    pgcdc_txn_track_abort_all(t);
    pgcdc_txn_track_idle(t, 350);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 350);
    pgcdc_txn_track_free(t);
}

int main(void)
{
    test_fresh();
    test_one_txn();
    test_tail_order();
    test_failed_ack();
    test_idle();
    test_ring_full();
    test_ack_all();
    test_abort_all();
    return UNIT_DONE();
}
