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

/* Upper bounds of the HTTP batch latency histogram, in ms (metrics.c). */
#define PGCDC_METRICS_HTTP_BUCKETS 12

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
    _Atomic uint64_t invalid_utf8_replaced; /* source.invalid_utf8 = replace: sequences */
    _Atomic int connected;
    _Atomic int64_t last_ok_mono_ms; /* last sign of progress (see pgcdc_metrics_healthy) */
    /* Poll mode (source.poll_interval_ms > 0) and `run --once`: see pgcdc_metrics_catchup. */
    _Atomic int sleeping;                 /* disconnected on purpose until the next poll */
    _Atomic int poll_failed;              /* the last poll failed; cleared by a catch-up */
    _Atomic int64_t last_catchup_unix_ms; /* wall time of the last catch-up; 0 none yet */
    _Atomic int64_t last_catchup_mono_ms;
    _Atomic int64_t poll_duration_ms; /* the last poll, connect to disconnect */
    /* The HTTP sink: requests by status class (1xx..5xx, [0] no answer), retries, and the
     * latency of a batch from its first attempt to its 2xx. */
    _Atomic uint64_t http_requests[6];
    _Atomic uint64_t http_retries;
    _Atomic uint64_t http_batch_le[PGCDC_METRICS_HTTP_BUCKETS + 1]; /* +Inf last */
    _Atomic uint64_t http_batch_sum_ms;
};

extern struct pgcdc_metrics pgcdc_metrics;

/* Count one event of op ('c','u','d','r','t') and its size. */
void pgcdc_metrics_event(char op, size_t bytes);

/* Something moved forward: the confirmed LSN advanced, or the server said it is idle. */
void pgcdc_metrics_progress(void);

/*
 * Caught up with the server's position at connect time, and everything durable and
 * confirmed: the last catch-up is now, and a failed poll is behind us.
 */
void pgcdc_metrics_catchup(void);

/*
 * Poll mode with this interval (call before pgcdc_metrics_start): /healthz then stays 200
 * while disconnected on purpose, and is 503 when the last poll failed or the last catch-up
 * is older than 2 x interval_ms + metrics.stall_ms. The first poll gets that long from now.
 */
void pgcdc_metrics_poll_mode(int interval_ms);

/*
 * Connected and streaming (or snapshotting), with progress in the last stall_ms; in poll
 * mode also asleep between polls (see pgcdc_metrics_poll_mode).
 */
bool pgcdc_metrics_healthy(void);

/* The HTTP sink: one finished request (status 0: no HTTP answer), one delivered batch. */
void pgcdc_metrics_http_request(long status);
void pgcdc_metrics_http_batch(int64_t ms);

/* More series appended by render (NULL: none); `pgcdc migrate`'s capture child sets it to
 * serve replay's counters (migrate_progress.h). Set before pgcdc_metrics_start. */
extern int (*pgcdc_metrics_extra)(struct pgcdc_buf *out);

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
