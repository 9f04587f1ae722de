/*
 * poll.c — when the stream connects and lets go: backoff, poll mode, `run --once`.
 *
 * Neon does not suspend a compute while pg_stat_replication shows a walsender, so an
 * always-open replication connection bills the compute around the clock. In poll mode the
 * stream closes every source connection once it has caught up and no data has come for
 * source.idle_disconnect_ms, and connects again after source.poll_interval_ms (README,
 * "Neon: let the compute sleep" in docs/operations.md).
 */
#include "pgcdc/poll.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "pgcdc/common.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/metrics.h"

#define BACKOFF_BASE_MS 500
#define BACKOFF_CAP_MS 30000
#define CATCHUP_MARK_MS 1000 /* the catch-up metric moves at most this often */

void pgcdc_poll_init(struct pgcdc_poll *p, const struct pgcdc_config *cfg, bool once)
{
    *p = (struct pgcdc_poll){.interval_ms = once ? 0 : cfg->source_poll_interval_ms,
                             .idle_ms = cfg->source_idle_disconnect_ms};
    if (p->interval_ms > 0)
        pgcdc_metrics_poll_mode(p->interval_ms);
}

void pgcdc_poll_begin(struct pgcdc_poll *p, int64_t connect_ms, uint64_t target, uint64_t confirmed,
                      uint64_t events, uint64_t txns)
{
    p->connect_ms = connect_ms;
    p->target = target;
    p->lag_at_connect = target > confirmed ? target - confirmed : 0;
    p->events0 = events;
    p->txns0 = txns;
    p->quiet_since_ms = pgcdc_mono_ms();
    p->marked_ms = 0;
}

bool pgcdc_poll_idle(struct pgcdc_poll *p, uint64_t pos, uint64_t n_data, int64_t now)
{
    if (pos < p->target)
        return false; /* what the server had at connect is not all here yet */
    if (!p->marked_ms || now - p->marked_ms >= CATCHUP_MARK_MS) {
        pgcdc_metrics_catchup();
        p->marked_ms = now;
    }
    if (p->interval_ms <= 0)
        return false;
    if (n_data != p->seen_data) {
        p->seen_data = n_data;
        p->quiet_since_ms = now;
    }
    return now - p->quiet_since_ms >= p->idle_ms;
}

void pgcdc_poll_end(struct pgcdc_poll *p, uint64_t events, uint64_t txns, uint64_t confirmed)
{
    int64_t ms = pgcdc_mono_ms() - p->connect_ms;
    atomic_store(&pgcdc_metrics.poll_duration_ms, ms);
    char ev[24], tx[24], dur[24], lag[24], c[PGCDC_LSN_BUFLEN], next[24];
    snprintf(ev, sizeof(ev), "%" PRIu64, events - p->events0);
    snprintf(tx, sizeof(tx), "%" PRIu64, txns - p->txns0);
    snprintf(dur, sizeof(dur), "%" PRId64, ms);
    snprintf(lag, sizeof(lag), "%" PRIu64, p->lag_at_connect);
    snprintf(next, sizeof(next), "%d", p->interval_ms);
    pgcdc_log(PGCDC_LOG_INFO, "poll done", "events", ev, "txns", tx, "duration_ms", dur,
              "lag_at_connect_bytes", lag, "confirmed", pgcdc_lsn_format(confirmed, c),
              "next_poll_in_ms", next, NULL);
}

void pgcdc_poll_nap(int ms)
{
    int64_t until = pgcdc_mono_ms() + ms;
    while (!pgcdc_stop_requested) {
        int64_t left = until - pgcdc_mono_ms();
        if (left <= 0)
            break;
        struct timespec ts = {0, (long)(left > 100 ? 100 : left) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

void pgcdc_poll_sleep(const struct pgcdc_poll *p)
{
    atomic_store(&pgcdc_metrics.sleeping, 1);
    pgcdc_poll_nap(p->interval_ms);
    atomic_store(&pgcdc_metrics.sleeping, 0);
}

int pgcdc_poll_backoff_ms(int attempt)
{
    int64_t cap = BACKOFF_BASE_MS;
    for (int i = 0; i < attempt && cap < BACKOFF_CAP_MS; i++)
        cap *= 2;
    if (cap > BACKOFF_CAP_MS)
        cap = BACKOFF_CAP_MS;
    /* "Equal jitter": half fixed, half random, so reconnect storms spread out. */
    return (int)(cap / 2 + (int64_t)(random() % (cap / 2 + 1)));
}
