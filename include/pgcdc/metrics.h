/*
 * metrics.h — counters the worker updates and an HTTP endpoint (libmicrohttpd, its own
 * thread) that serves them: GET /metrics (Prometheus text) and GET /healthz.
 *
 * The worker thread writes the counters and the HTTP thread reads them, so every field is
 * atomic. Nothing secret is ever stored here.
 */
#ifndef PGCDC_METRICS_H
#define PGCDC_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/common.h"

struct pgcdc_metrics {
    _Atomic uint64_t events_c, events_u, events_d, events_r, events_t;
    _Atomic uint64_t bytes;
    _Atomic uint64_t confirmed_lsn;
    _Atomic uint64_t server_wal_end;
    _Atomic int64_t confirmed_commit_ts_ms; /* commit time of the last confirmed transaction */
    _Atomic uint64_t reconnects;
    _Atomic uint64_t sink_errors;
    _Atomic uint64_t dead_letters; /* events written to state.dir/dead-letter/ */
    _Atomic uint64_t inflight;
    _Atomic uint64_t snapshot_rows;
    _Atomic uint64_t snapshot_tables_remaining; /* tables whose snapshot is still owed */
    _Atomic int snapshot_running;               /* 1 while a snapshot is being read */
    _Atomic int connected;
    _Atomic int64_t last_ok_mono_ms; /* last sign of progress (see pgcdc_metrics_healthy) */
};

extern struct pgcdc_metrics pgcdc_metrics;

/* Count one event of op ('c','u','d','r','t') and its size. */
void pgcdc_metrics_event(char op, size_t bytes);

/* Something moved forward: the confirmed LSN advanced, or the server said it is idle. */
void pgcdc_metrics_progress(void);

/* Connected and streaming (or snapshotting), with progress in the last stall_ms. */
bool pgcdc_metrics_healthy(void);

/* Append the Prometheus text exposition of every metric to out. */
int pgcdc_metrics_render(struct pgcdc_buf *out);

/*
 * Serve /metrics and /healthz on "HOST:PORT" (metrics.listen); /healthz reports a stall
 * after stall_ms without progress (metrics.stall_ms). Returns 0, or PGCDC_ERR_CONFIG with
 * the reason (bad address, port in use) in err.
 */
int pgcdc_metrics_start(const char *listen, int stall_ms, char *err, size_t errlen);
void pgcdc_metrics_stop(void);

#endif
