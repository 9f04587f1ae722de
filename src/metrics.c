/*
 * metrics.c — Prometheus text on /metrics, liveness on /healthz, served by libmicrohttpd
 * from its own thread; the counters are atomics the worker updates.
 */
#include "pgcdc/metrics.h"

#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "pgcdc/common.h"

#include <microhttpd.h>

struct pgcdc_metrics pgcdc_metrics;
int (*pgcdc_metrics_extra)(struct pgcdc_buf *out);

/* metrics.stall_ms; set before the HTTP thread starts, read-only after. */
static int64_t stall_ms_ = 120000;

void pgcdc_metrics_event(char op, size_t bytes)
{
    _Atomic uint64_t *c = NULL;
    switch (op) {
    case 'c': c = &pgcdc_metrics.events_c; break;
    case 'u': c = &pgcdc_metrics.events_u; break;
    case 'd': c = &pgcdc_metrics.events_d; break;
    case 'r': c = &pgcdc_metrics.events_r; break;
    case 't': c = &pgcdc_metrics.events_t; break;
    default: break;
    }
    if (c)
        atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pgcdc_metrics.bytes, bytes, memory_order_relaxed);
}

void pgcdc_metrics_progress(void)
{
    atomic_store_explicit(&pgcdc_metrics.last_ok_mono_ms, pgcdc_mono_ms(), memory_order_relaxed);
}

/* source.poll_interval_ms; 0: always connected. Set before the HTTP thread starts. */
static int64_t poll_ms_;

void pgcdc_metrics_catchup(void)
{
    atomic_store_explicit(&pgcdc_metrics.last_catchup_unix_ms, pgcdc_now_ms(),
                          memory_order_relaxed);
    atomic_store_explicit(&pgcdc_metrics.last_catchup_mono_ms, pgcdc_mono_ms(),
                          memory_order_relaxed);
    atomic_store_explicit(&pgcdc_metrics.poll_failed, 0, memory_order_relaxed);
}

void pgcdc_metrics_poll_mode(int interval_ms)
{
    poll_ms_ = interval_ms;
    atomic_store(&pgcdc_metrics.last_catchup_mono_ms, pgcdc_mono_ms());
}

/* Why /healthz is 503, or NULL when it is 200. */
static const char *unhealthy_reason(void)
{
    int64_t now = pgcdc_mono_ms();
    if (poll_ms_ > 0) {
        if (atomic_load(&pgcdc_metrics.poll_failed))
            return "poll failed\n";
        if (now - atomic_load(&pgcdc_metrics.last_catchup_mono_ms) >= 2 * poll_ms_ + stall_ms_)
            return "no catch-up\n";
        if (atomic_load(&pgcdc_metrics.sleeping))
            return NULL;
    }
    if (!atomic_load(&pgcdc_metrics.connected))
        return "disconnected\n";
    if (now - atomic_load(&pgcdc_metrics.last_ok_mono_ms) >= stall_ms_)
        return "stalled\n";
    return NULL;
}

bool pgcdc_metrics_healthy(void)
{
    return unhealthy_reason() == NULL;
}

static int metric(struct pgcdc_buf *b, const char *name, const char *type, const char *help,
                  const char *labels, double value);

static const int64_t http_bounds_ms[PGCDC_METRICS_HTTP_BUCKETS] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000};

void pgcdc_metrics_http_request(long status)
{
    size_t cls = status >= 100 && status <= 599 ? (size_t)(status / 100) : 0;
    atomic_fetch_add_explicit(&pgcdc_metrics.http_requests[cls], 1, memory_order_relaxed);
}

void pgcdc_metrics_http_batch(int64_t ms)
{
    size_t i = 0;
    while (i < PGCDC_METRICS_HTTP_BUCKETS && ms > http_bounds_ms[i])
        i++;
    atomic_fetch_add_explicit(&pgcdc_metrics.http_batch_le[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pgcdc_metrics.http_batch_sum_ms, (uint64_t)(ms > 0 ? ms : 0),
                              memory_order_relaxed);
}

/* The HTTP sink's series; Prometheus histograms are cumulative. */
static int render_http(struct pgcdc_buf *b)
{
    static const char *const cls[] = {"error", "1xx", "2xx", "3xx", "4xx", "5xx"};
    char line[256];
    int n;
    if (pgcdc_buf_append_str(b, "# HELP pgcdc_http_requests_total HTTP sink requests, by status "
                                "class (error: no HTTP answer).\n"
                                "# TYPE pgcdc_http_requests_total counter\n") < 0)
        return PGCDC_ERR;
    for (size_t i = 0; i < 6; i++) {
        n = snprintf(line, sizeof line, "pgcdc_http_requests_total{class=\"%s\"} %llu\n", cls[i],
                     (unsigned long long)atomic_load(&pgcdc_metrics.http_requests[i]));
        if (pgcdc_buf_append(b, line, (size_t)n) < 0)
            return PGCDC_ERR;
    }
    if (metric(b, "pgcdc_http_retries_total", "counter", "HTTP sink requests retried.", NULL,
               (double)atomic_load(&pgcdc_metrics.http_retries)) < 0 ||
        pgcdc_buf_append_str(b, "# HELP pgcdc_http_batch_seconds HTTP sink batch latency, first "
                                "attempt to 2xx.\n# TYPE pgcdc_http_batch_seconds histogram\n") < 0)
        return PGCDC_ERR;
    uint64_t cum = 0;
    for (size_t i = 0; i <= PGCDC_METRICS_HTTP_BUCKETS; i++) {
        cum += atomic_load(&pgcdc_metrics.http_batch_le[i]);
        if (i < PGCDC_METRICS_HTTP_BUCKETS)
            n = snprintf(line, sizeof line, "pgcdc_http_batch_seconds_bucket{le=\"%g\"} %llu\n",
                         (double)http_bounds_ms[i] / 1000.0, (unsigned long long)cum);
        else
            n = snprintf(line, sizeof line,
                         "pgcdc_http_batch_seconds_bucket{le=\"+Inf\"} %llu\n"
                         "pgcdc_http_batch_seconds_sum %.3f\npgcdc_http_batch_seconds_count %llu\n",
                         (unsigned long long)cum,
                         (double)atomic_load(&pgcdc_metrics.http_batch_sum_ms) / 1000.0,
                         (unsigned long long)cum);
        if (pgcdc_buf_append(b, line, (size_t)n) < 0)
            return PGCDC_ERR;
    }
    return PGCDC_OK;
}

static int metric(struct pgcdc_buf *b, const char *name, const char *type, const char *help,
                  const char *labels, double value)
{
    char line[512];
    int n = snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s %s\n%s%s %.17g\n", name, help,
                     name, type, name, labels ? labels : "", value);
    return pgcdc_buf_append(b, line, (size_t)n);
}

int pgcdc_metrics_render(struct pgcdc_buf *b)
{
    struct pgcdc_metrics *m = &pgcdc_metrics;
    uint64_t confirmed = atomic_load(&m->confirmed_lsn), end = atomic_load(&m->server_wal_end);
    uint64_t lag_bytes = end > confirmed ? end - confirmed : 0;
    int64_t ts = atomic_load(&m->confirmed_commit_ts_ms);
    /* Caught up means no lag, however long ago the last change was committed. */
    double lag_s = (lag_bytes == 0 || ts == 0) ? 0.0 : (double)(pgcdc_now_ms() - ts) / 1000.0;
    if (lag_s < 0)
        lag_s = 0;
    char buf[1024];
    int n = snprintf(buf, sizeof(buf),
                     "# HELP pgcdc_events_total Change events written to the sink, by op.\n"
                     "# TYPE pgcdc_events_total counter\n"
                     "pgcdc_events_total{op=\"c\"} %llu\npgcdc_events_total{op=\"u\"} %llu\n"
                     "pgcdc_events_total{op=\"d\"} %llu\npgcdc_events_total{op=\"r\"} %llu\n"
                     "pgcdc_events_total{op=\"t\"} %llu\n",
                     (unsigned long long)atomic_load(&m->events_c),
                     (unsigned long long)atomic_load(&m->events_u),
                     (unsigned long long)atomic_load(&m->events_d),
                     (unsigned long long)atomic_load(&m->events_r),
                     (unsigned long long)atomic_load(&m->events_t));
    if (pgcdc_buf_append(b, buf, (size_t)n) < 0 ||
        metric(b, "pgcdc_bytes_total", "counter", "Bytes of event JSON written to the sink.", NULL,
               (double)atomic_load(&m->bytes)) < 0 ||
        metric(b, "pgcdc_confirmed_lsn", "gauge",
               "LSN confirmed to the server (everything before it is durable in the sink).",
               NULL, (double)confirmed) < 0 ||
        metric(b, "pgcdc_server_wal_end_lsn", "gauge",
               "The server's WAL position as last reported on the replication stream.", NULL,
               (double)end) < 0 ||
        metric(b, "pgcdc_lag_bytes", "gauge", "Server WAL end minus the confirmed LSN.", NULL,
               (double)lag_bytes) < 0 ||
        metric(b, "pgcdc_lag_seconds", "gauge",
               "Now minus the commit time of the last confirmed transaction (0 when caught up).",
               NULL, lag_s) < 0 ||
        metric(b, "pgcdc_reconnects_total", "counter", "Replication connections re-established.",
               NULL, (double)atomic_load(&m->reconnects)) < 0 ||
        metric(b, "pgcdc_sink_errors_total", "counter", "Sink write or delivery errors.", NULL,
               (double)atomic_load(&m->sink_errors)) < 0 ||
        metric(b, "pgcdc_dead_letters_total", "counter",
               "Events the destination refused for good, written to state.dir/dead-letter/.",
               NULL, (double)atomic_load(&m->dead_letters)) < 0 ||
        metric(b, "pgcdc_inflight_transactions", "gauge",
               "Transactions received and not yet confirmed.", NULL,
               (double)atomic_load(&m->inflight)) < 0 ||
        metric(b, "pgcdc_snapshot_rows_total", "counter", "Rows emitted by snapshots.",
               NULL, (double)atomic_load(&m->snapshot_rows)) < 0 ||
        metric(b, "pgcdc_snapshot_tables_remaining", "gauge",
               "Tables whose snapshot is owed and not yet durable.", NULL,
               (double)atomic_load(&m->snapshot_tables_remaining)) < 0 ||
        metric(b, "pgcdc_snapshot_running", "gauge", "1 while a snapshot is being read.", NULL,
               (double)atomic_load(&m->snapshot_running)) < 0 ||
        metric(b, "pgcdc_invalid_utf8_replaced_total", "counter",
               "Byte sequences that were not valid UTF-8, written as U+FFFD "
               "(source.invalid_utf8 = replace).",
               NULL, (double)atomic_load(&m->invalid_utf8_replaced)) < 0 ||
        metric(b, "pgcdc_connected", "gauge", "1 while connected to the source.", NULL,
               (double)atomic_load(&m->connected)) < 0 ||
        metric(b, "pgcdc_healthy", "gauge", "1 while /healthz answers 200.", NULL,
               pgcdc_metrics_healthy() ? 1.0 : 0.0) < 0 ||
        metric(b, "pgcdc_last_catchup_timestamp_seconds", "gauge",
               "Unix time pgcdc last had everything up to the server's position at connect "
               "durable and confirmed (0: not yet).",
               NULL, (double)atomic_load(&m->last_catchup_unix_ms) / 1000.0) < 0 ||
        metric(b, "pgcdc_poll_duration_seconds", "gauge",
               "How long the last poll stayed connected (poll mode and run --once).", NULL,
               (double)atomic_load(&m->poll_duration_ms) / 1000.0) < 0 ||
        render_http(b) < 0)
        return PGCDC_ERR;
    if (pgcdc_metrics_extra && pgcdc_metrics_extra(b) < 0)
        return PGCDC_ERR;
    return PGCDC_OK;
}

static struct MHD_Daemon *daemon_;

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *ctype,
                             const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", ctype);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply(conn, 405, "text/plain", "method not allowed\n", 19);
    if (strcmp(url, "/metrics") == 0) {
        struct pgcdc_buf b = {0};
        enum MHD_Result ret;
        if (pgcdc_metrics_render(&b) < 0)
            ret = reply(conn, 500, "text/plain", "out of memory\n", 14);
        else
            ret = reply(conn, 200, "text/plain; version=0.0.4", b.data, b.len);
        pgcdc_buf_free(&b);
        return ret;
    }
    if (strcmp(url, "/healthz") == 0) {
        const char *why = unhealthy_reason();
        if (!why)
            return reply(conn, 200, "text/plain", "ok\n", 3);
        return reply(conn, 503, "text/plain", why, strlen(why));
    }
    return reply(conn, 404, "text/plain", "not found: try /metrics or /healthz\n", 36);
}

int pgcdc_metrics_start(const char *listen, int stall_ms, char *err, size_t errlen)
{
    stall_ms_ = stall_ms;
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon || (size_t)(colon - listen) >= sizeof(host)) {
        snprintf(err, errlen, "metrics.listen \"%s\" is not HOST:PORT", listen);
        return PGCDC_ERR_CONFIG;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    /* "[::1]:9187" */
    char *h = host;
    if (h[0] == '[' && h[strlen(h) - 1] == ']') {
        h[strlen(h) - 1] = '\0';
        h++;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    int gai = getaddrinfo(*h ? h : NULL, colon + 1, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "metrics.listen \"%s\": %s", listen, gai_strerror(gai));
        return PGCDC_ERR_CONFIG;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    daemon_ = MHD_start_daemon(flags, 0, NULL, NULL, handle, NULL, MHD_OPTION_SOCK_ADDR,
                               ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT, 32U,
                               MHD_OPTION_CONNECTION_TIMEOUT, 10U, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!daemon_) {
        snprintf(err, errlen,
                 "metrics.listen \"%s\": cannot listen there (address in use or not local?): "
                 "pick another HOST:PORT",
                 listen);
        return PGCDC_ERR_CONFIG;
    }
    return PGCDC_OK;
}

void pgcdc_metrics_stop(void)
{
    if (daemon_)
        MHD_stop_daemon(daemon_);
    daemon_ = NULL;
}
