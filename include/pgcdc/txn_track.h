/*
 * txn_track.h — the ring of in-flight transactions and the LSN that may be confirmed.
 *
 * Each transaction knows its commit end LSN and how many of its messages the sink has
 * not yet acknowledged. The confirmed LSN advances only from the tail, over transactions
 * that are closed (commit seen) and fully acknowledged, so it never passes a change that
 * is not durable. A failed acknowledgement marks the transaction failed: the confirmed
 * LSN stops before it for good. When nothing is in flight, a keepalive's walEnd counts as
 * confirmed (the included tables are idle; the slot must not pin WAL).
 *
 * Single-threaded: acknowledgements arrive on the caller's thread (librdkafka delivery
 * reports are served inside rd_kafka_poll, which we call).
 */
#ifndef PGCDC_TXN_TRACK_H
#define PGCDC_TXN_TRACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pgcdc_txn_track;

/* Allocate a ring of `capacity` transactions; confirmed starts at start_lsn. NULL on ENOMEM. */
struct pgcdc_txn_track *pgcdc_txn_track_new(size_t capacity, uint64_t start_lsn);
void pgcdc_txn_track_free(struct pgcdc_txn_track *t);

/* Open a transaction that will commit at end_lsn. PGCDC_AGAIN when the ring is full. */
int pgcdc_txn_track_begin(struct pgcdc_txn_track *t, uint64_t end_lsn);

/* The open transaction's commit time, reported back by pgcdc_txn_track_confirmed_ts. */
void pgcdc_txn_track_set_commit_ts(struct pgcdc_txn_track *t, int64_t commit_ts_ms);

/* Commit time of the last transaction the confirmed LSN passed (0 if none yet). */
int64_t pgcdc_txn_track_confirmed_ts(const struct pgcdc_txn_track *t);

/* Count one more message of the open transaction; returns the handle to acknowledge it. */
uint64_t pgcdc_txn_track_add(struct pgcdc_txn_track *t);

/* The sink acknowledges one message (ok = delivered and durable, or failed). */
void pgcdc_txn_track_ack(struct pgcdc_txn_track *t, uint64_t handle, bool ok);

/* Every committed transaction written so far is durable (the file sink, after fsync and
 * checkpoint). The open transaction is not: the checkpoint ends before it. */
void pgcdc_txn_track_ack_all(struct pgcdc_txn_track *t);

/* The open transaction's commit was received. */
void pgcdc_txn_track_commit(struct pgcdc_txn_track *t);

/*
 * Forget every transaction not yet confirmed: the connection was lost and the server
 * will send them again from the confirmed LSN. They retire without advancing the
 * confirmed LSN, and late acknowledgements for them are ignored.
 */
void pgcdc_txn_track_abort_all(struct pgcdc_txn_track *t);

/* A keepalive or status from the server: walEnd is confirmed if nothing is in flight. */
void pgcdc_txn_track_idle(struct pgcdc_txn_track *t, uint64_t wal_end);

/* Advance over completed transactions and return the LSN that may be confirmed. */
uint64_t pgcdc_txn_track_confirmed(struct pgcdc_txn_track *t);

/* Transactions begun and not yet confirmed (including an open one). */
size_t pgcdc_txn_track_inflight(const struct pgcdc_txn_track *t);

/* Whether a failed acknowledgement was seen. */
bool pgcdc_txn_track_failed(const struct pgcdc_txn_track *t);

/* Whether a transaction is open (begun, commit not yet seen). */
bool pgcdc_txn_track_open(const struct pgcdc_txn_track *t);

#endif
