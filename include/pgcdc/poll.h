/*
 * poll.h — when `run` holds its source connections and when it lets go: the backoff after
 * a failure, poll mode (source.poll_interval_ms > 0: disconnect once caught up and idle,
 * so a Neon compute may suspend, and come back after the interval) and `run --once`'s
 * target (the server's position at connect time).
 *
 * A poll is one connection's life: from connecting to disconnecting. Its target is
 * IDENTIFY_SYSTEM's xlogpos at connect; it has caught up once a keepalive's walEnd at or
 * past the target is confirmed with nothing open, unsynced or unacknowledged. Everything
 * here is called from the stream's thread; the metrics it sets are read by /healthz.
 */
#ifndef PGCDC_POLL_H
#define PGCDC_POLL_H

#include <stdbool.h>
#include <stdint.h>

#include "pgcdc/config.h"

struct pgcdc_poll {
    int interval_ms;         /* source.poll_interval_ms; 0: stay connected */
    int idle_ms;             /* source.idle_disconnect_ms */
    int64_t connect_ms;      /* when this poll began connecting (monotonic) */
    uint64_t target;         /* the server's position at connect */
    uint64_t lag_at_connect; /* bytes from what was confirmed then to target */
    uint64_t events0, txns0; /* the stream's counters when the poll began */
    uint64_t seen_data;      /* data messages counted when the quiet spell began */
    int64_t quiet_since_ms;  /* no data message since (monotonic) */
    int64_t marked_ms;       /* when the catch-up metric was last set */
};

/*
 * Poll mode off or on from cfg (off for `run --once`, a single poll); tells the metrics
 * (call before pgcdc_metrics_start).
 */
void pgcdc_poll_init(struct pgcdc_poll *p, const struct pgcdc_config *cfg, bool once);

/*
 * The stream is up: target is the server's position at connect (0 unknown), confirmed
 * what was confirmed then, events and txns the stream's counters, connect_ms when
 * connecting began.
 */
void pgcdc_poll_begin(struct pgcdc_poll *p, int64_t connect_ms, uint64_t target, uint64_t confirmed,
                      uint64_t events, uint64_t txns);

/*
 * Everything up to pos is durable and confirmed, nothing open (called at most once a
 * message, when idle). n_data counts the data messages received so far: keepalives do not
 * count, since Neon writes WAL of its own. Returns true when poll mode should disconnect
 * now: caught up with the target, and no data message for idle_ms.
 */
bool pgcdc_poll_idle(struct pgcdc_poll *p, uint64_t pos, uint64_t n_data, int64_t now);

/* The poll is over: its one log line (changes, duration, lag at connect) and metrics. */
void pgcdc_poll_end(struct pgcdc_poll *p, uint64_t events, uint64_t txns, uint64_t confirmed);

/* Sleep up to ms, waking early when a stop is requested. */
void pgcdc_poll_nap(int ms);

/* Sleep until the next poll (interval_ms), as a healthy, intentional disconnect. */
void pgcdc_poll_sleep(const struct pgcdc_poll *p);

/* The delay before reconnection attempt number `attempt` (0 first): capped, jittered. */
int pgcdc_poll_backoff_ms(int attempt);

#endif
