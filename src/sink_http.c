/*
 * sink_http.c — events POSTed to a web service as JSON arrays (sink_http.h; the delivery
 * contract is docs/http.md).
 *
 * Two batches at most are in memory: `flight`, the one being delivered, and `fill`, the
 * one the stream is writing into. Only one request runs at a time, so batches reach the
 * receiver in stream order. When fill is full and flight is still being delivered, write
 * answers PGCDC_AGAIN: the stream stops reading, keeps sending standby status, and polls.
 *
 * A request sends a window [lo, hi) of flight. 2xx acknowledges the window's events to the
 * tracker, so a transaction is confirmed once every window holding its events got a 2xx.
 * 408/429/5xx and transport errors resend the same window (same body, same idempotency
 * key, a fresh signature) after pgcdc_http_backoff's delay; nothing waits in a blocking
 * call, since the transfer runs on curl's multi interface and each sync/poll moves it on.
 * 413 halves the window; a single event refused with 413, and any other status, is
 * permanent: stop (the events are acknowledged as failed, the confirmed LSN stays before
 * them, exit 1) or write them to the dead letters and go on.
 *
 * fill is cut into flight at a transaction boundary when one is in it (whole
 * transactions where they fit); a transaction larger than a batch is cut where the batch
 * is full. A batch is sent when it is full, when its first event is linger_ms old, or on
 * flush/poll (the caller is waiting for it).
 */
#include "pgcdc/sink_http.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "pgcdc/common.h"
#include "pgcdc/deadletter.h"
#include "pgcdc/http.h"
#include "pgcdc/http_batch.h"
#include "pgcdc/log.h"
#include "pgcdc/metrics.h"
#include "pgcdc/txn_track.h"

/* Drive the transfer from write every this many events (a cheap, non-blocking step). */
#define HTTP_PUMP_EVERY 256
#define HTTP_FIXED_HEADERS 3 /* Content-Type, pgcdc-idempotency-key, pgcdc-signature */

struct pgcdc_sink_http {
    struct pgcdc_sink base; /* first, so a struct pgcdc_sink * converts back */
    struct pgcdc_http_client *client;
    char *url;         /* owned */
    char url_log[512]; /* without user info and query */
    char *secret;      /* owned; NULL: no signature */
    char **hdr;        /* owned: the request's header lines, fixed ones first */
    size_t nhdr;
    const char **req; /* owned array (lines borrowed from hdr): one request's headers */
    bool has_ca;      /* sink.http.ca_file is set (the TLS failure's fix differs) */
    size_t max_events, max_bytes;
    int linger_ms;
    int on_error;                /* enum pgcdc_on_permanent_error */
    struct pgcdc_deadletter *dl; /* owned; only with dead_letter */

    struct pgcdc_http_batch fill, flight;
    size_t lo, hi;       /* the window of flight being delivered; lo == flight.n: none */
    bool sending;        /* a request for the window is running */
    int64_t retry_at_ms; /* 0, or when to send the window again */
    int64_t window_ms;   /* the window's first attempt, for the latency histogram */
    uint32_t attempts;   /* of the window */
    struct pgcdc_http_backoff backoff;
    size_t body_at; /* the read position in the window's body */
    unsigned since_pump;

    bool failed;
    char failure[1024];
};

static struct pgcdc_sink_http *http_of(struct pgcdc_sink *s)
{
    return (struct pgcdc_sink_http *)s;
}

static void http_fail(struct pgcdc_sink_http *h, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void http_fail(struct pgcdc_sink_http *h, const char *fmt, ...)
{
    if (h->failed)
        return;
    h->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->failure, sizeof h->failure, fmt, ap);
    va_end(ap);
    pgcdc_log_one_line(h->failure);
}

void pgcdc_sink_http_url_for_log(const char *url, char *out, size_t outlen)
{
    const char *p = strstr(url, "://");
    const char *host = p ? p + 3 : url;
    const char *end = host + strcspn(host, "/?#");
    const char *at = memchr(host, '@', (size_t)(end - host));
    size_t scheme = (size_t)(host - url);
    if (at)
        host = at + 1;
    size_t path = strcspn(host, "?#");
    snprintf(out, outlen, "%.*s%.*s", (int)scheme, url, (int)path, host);
    pgcdc_log_one_line(out);
}

/* ---- one request ---- */

static size_t body_read(char *buf, size_t cap, void *opaque)
{
    struct pgcdc_sink_http *h = opaque;
    size_t n = pgcdc_http_batch_window_read(&h->flight, h->lo, h->hi, h->body_at, buf, cap);
    h->body_at += n;
    return n;
}

static int body_rewind(void *opaque)
{
    ((struct pgcdc_sink_http *)opaque)->body_at = 0;
    return 0;
}

static int set_line(char **line, const char *name, const char *value)
{
    size_t n = strlen(name) + 2 + strlen(value) + 1;
    char *l = realloc(*line, n);
    if (l == NULL)
        return PGCDC_ERR;
    snprintf(l, n, "%s: %s", name, value);
    *line = l;
    return 0;
}

/* Send the window [lo, hi) of flight (again). */
static int send_window(struct pgcdc_sink_http *h, char *err, size_t errlen)
{
    char idem[PGCDC_HTTP_IDEM_LEN], sig[PGCDC_HTTP_SIG_LEN];
    pgcdc_http_batch_idempotency_key(&h->flight, h->lo, h->hi, idem, sizeof idem);
    if (set_line(&h->hdr[1], "pgcdc-idempotency-key", idem) < 0)
        goto oom;
    size_t k = 0;
    h->req[k++] = h->hdr[0];
    h->req[k++] = h->hdr[1];
    if (h->secret) {
        /* t is taken afresh for each attempt: a receiver may refuse old signatures. */
        if (pgcdc_http_batch_signature(&h->flight, h->lo, h->hi, h->secret, (int64_t)time(NULL),
                                       sig, sizeof sig) < 0) {
            snprintf(err, errlen, "http: OpenSSL could not compute the HMAC-SHA256 signature");
            return PGCDC_ERR;
        }
        if (set_line(&h->hdr[2], "pgcdc-signature", sig) < 0)
            goto oom;
        h->req[k++] = h->hdr[2];
    }
    for (size_t i = HTTP_FIXED_HEADERS; i < h->nhdr; i++)
        h->req[k++] = h->hdr[i];
    struct pgcdc_http_request r = {
        .method = "POST",
        .url = h->url,
        .headers = h->req,
        .nheaders = k,
        .body_len = pgcdc_http_batch_window_len(&h->flight, h->lo, h->hi),
        .read_fn = body_read,
        .rewind_fn = body_rewind,
        .read_opaque = h,
        .keep_body_max = 300,
    };
    h->body_at = 0;
    int rc = pgcdc_http_start(h->client, &r, err, errlen);
    if (rc < 0)
        return rc;
    h->sending = true;
    h->attempts++;
    return 0;
oom:
    snprintf(err, errlen, "http: out of memory building a request");
    return PGCDC_ERR;
}

/* Start delivering the window [0, n) of a new flight batch. */
static int start_flight(struct pgcdc_sink_http *h, char *err, size_t errlen)
{
    h->lo = 0;
    h->hi = h->flight.n;
    h->attempts = 0;
    h->window_ms = pgcdc_mono_ms();
    return send_window(h, err, errlen);
}

static void ack_window(struct pgcdc_sink_http *h, bool ok)
{
    for (size_t i = h->lo; i < h->hi; i++)
        pgcdc_txn_track_ack(h->base.track, h->flight.ev[i].handle, ok);
}

/* The window is done (delivered or dead-lettered): go on with the rest of flight. */
static int next_window(struct pgcdc_sink_http *h, char *err, size_t errlen)
{
    size_t width = h->hi - h->lo;
    h->lo = h->hi;
    pgcdc_http_backoff_reset(&h->backoff);
    if (h->lo >= h->flight.n) {
        pgcdc_http_batch_reset(&h->flight);
        h->lo = h->hi = 0;
        return 0;
    }
    /* After a 413 the rest goes in windows of the size that was accepted. */
    h->hi = h->lo + width < h->flight.n ? h->lo + width : h->flight.n;
    h->attempts = 0;
    h->window_ms = pgcdc_mono_ms();
    return send_window(h, err, errlen);
}

static void lsn_range(struct pgcdc_sink_http *h, char *out, size_t outlen)
{
    const struct pgcdc_http_event *f = &h->flight.ev[h->lo], *l = &h->flight.ev[h->hi - 1];
    snprintf(out, outlen,
             "%zu events, commit_lsn %" PRIu64 " lsn %" PRIu64 " to commit_lsn %" PRIu64
             " lsn %" PRIu64,
             h->hi - h->lo, f->commit_lsn, f->lsn, l->commit_lsn, l->lsn);
}

/* The receiver refused the window for good: stop, or dead-letter it and go on. */
static int refused(struct pgcdc_sink_http *h, const struct pgcdc_http_response *resp, char *err,
                   size_t errlen)
{
    char range[256];
    lsn_range(h, range, sizeof range);
    if (h->on_error == PGCDC_ON_ERROR_STOP) {
        ack_window(h, false);
        http_fail(h,
                  "http: %s refused a batch (%s) for good: %s; fix the receiver (or the "
                  "sink.http.header.* it needs), or set sink.http.on_permanent_error = dead_letter",
                  h->url_log, range, resp->reason);
        snprintf(err, errlen, "%s", h->failure);
        return PGCDC_ERR;
    }
    for (size_t i = h->lo; i < h->hi; i++) {
        const struct pgcdc_http_event *e = &h->flight.ev[i];
        struct pgcdc_deadletter_entry d = {
            .reason = resp->reason,
            .topic = h->url_log,
            .key = e->key_len ? h->flight.ids.data + e->id_off + e->table_len : NULL,
            .key_len = e->key_len,
            .event = h->flight.body.data + e->off,
            .event_len = e->len,
            .lsn = e->lsn,
            .commit_lsn = e->commit_lsn,
            .size = e->len,
        };
        int rc = pgcdc_deadletter_write(h->dl, &d, err, errlen);
        if (rc < 0) {
            ack_window(h, false);
            http_fail(h, "http: cannot write the dead letter in %s: %s",
                      pgcdc_deadletter_dir(h->dl), err);
            snprintf(err, errlen, "%s", h->failure);
            return PGCDC_ERR;
        }
        atomic_fetch_add(&pgcdc_metrics.dead_letters, 1);
    }
    pgcdc_log(PGCDC_LOG_WARN, "http: batch refused for good; written to the dead letters", "url",
              h->url_log, "batch", range, "reason", resp->reason, NULL);
    ack_window(h, true); /* durable in the dead letters */
    return next_window(h, err, errlen);
}

static int on_done(struct pgcdc_sink_http *h, const struct pgcdc_http_response *resp, char *err,
                   size_t errlen)
{
    h->sending = false;
    pgcdc_metrics_http_request(resp->status);
    switch (resp->cls) {
    case PGCDC_HTTP_OK:
        pgcdc_metrics_http_batch(pgcdc_mono_ms() - h->window_ms);
        ack_window(h, true);
        return next_window(h, err, errlen);
    case PGCDC_HTTP_RETRY: {
        int64_t delay = pgcdc_http_backoff_next(&h->backoff, resp->retry_after_ms);
        h->retry_at_ms = pgcdc_mono_ms() + (delay > 0 ? delay : 1);
        atomic_fetch_add(&pgcdc_metrics.http_retries, 1);
        char d[24], n[16];
        snprintf(d, sizeof d, "%" PRId64 "ms", delay);
        snprintf(n, sizeof n, "%u", h->attempts);
        pgcdc_log(PGCDC_LOG_WARN, "http: request failed; retrying", "url", h->url_log, "reason",
                  resp->reason, "attempt", n, "backoff", d, NULL);
        return 0;
    }
    case PGCDC_HTTP_TOO_LARGE:
        if (h->hi - h->lo > 1) {
            h->hi = h->lo + (h->hi - h->lo) / 2;
            return send_window(h, err, errlen);
        }
        {
            struct pgcdc_http_response one = *resp;
            snprintf(one.reason, sizeof one.reason,
                     "%.300s (a single event of %zu bytes; raise the receiver's body limit)",
                     resp->reason, h->flight.ev[h->lo].len);
            return refused(h, &one, err, errlen);
        }
    case PGCDC_HTTP_TLS:
        ack_window(h, false);
        http_fail(h, "http: TLS certificate verification failed for %s: %s; %s", h->url_log,
                  resp->reason,
                  h->has_ca ? "check that sink.http.ca_file holds the CA certificate that "
                              "signed the receiver's certificate, and that the URL's host is "
                              "a name the certificate covers"
                            : "if the receiver's certificate comes from a private CA or is "
                              "self-signed, give that CA certificate (PEM) with "
                              "sink.http.ca_file");
        snprintf(err, errlen, "%s", h->failure);
        return PGCDC_ERR;
    case PGCDC_HTTP_PERMANENT:
        break;
    }
    return refused(h, resp, err, errlen);
}

/* Whether fill should be cut into flight now. */
static bool fill_due(struct pgcdc_sink_http *h, bool force)
{
    if (h->fill.committed == 0)
        return false;
    return force || h->fill.n >= h->max_events || h->fill.body.len + 1 >= h->max_bytes ||
           pgcdc_mono_ms() - h->fill.first_ms >= h->linger_ms;
}

/* Cut the first `count` events of fill into flight and start sending them. */
static int cut(struct pgcdc_sink_http *h, size_t count, char *err, size_t errlen)
{
    if (pgcdc_http_batch_take(&h->flight, &h->fill, count, pgcdc_mono_ms()) < 0) {
        snprintf(err, errlen, "http: out of memory cutting a batch");
        return PGCDC_ERR;
    }
    return start_flight(h, err, errlen);
}

/*
 * Move delivery forward, waiting for the network at most wait_ms. force: send what is
 * committed in fill without waiting for linger_ms.
 */
static int pump(struct pgcdc_sink_http *h, int wait_ms, bool force, char *err, size_t errlen)
{
    int rc;
    h->since_pump = 0;
    if (h->failed) {
        snprintf(err, errlen, "%s", h->failure);
        return PGCDC_ERR;
    }
    if (h->sending) {
        rc = pgcdc_http_poll(h->client, wait_ms, err, errlen);
        if (rc < 0)
            return rc;
        if (rc == 1 && (rc = on_done(h, pgcdc_http_result(h->client), err, errlen)) < 0)
            return rc;
    }
    if (!h->sending && h->retry_at_ms && pgcdc_mono_ms() >= h->retry_at_ms) {
        h->retry_at_ms = 0;
        if ((rc = send_window(h, err, errlen)) < 0)
            return rc;
    }
    if (!h->sending && !h->retry_at_ms && h->flight.n == 0 && fill_due(h, force))
        return cut(h, h->fill.committed, err, errlen);
    return 0;
}

/* ---- the sink interface ---- */

static int http_begin(struct pgcdc_sink *s, const struct pgcdc_txn_meta *txn, char *err,
                      size_t errlen)
{
    (void)txn;
    struct pgcdc_sink_http *h = http_of(s);
    if (h->failed) {
        snprintf(err, errlen, "%s", h->failure);
        return PGCDC_ERR;
    }
    return 0;
}

static int http_write(struct pgcdc_sink *s, const struct pgcdc_record *r, char *err, size_t errlen)
{
    struct pgcdc_sink_http *h = http_of(s);
    int rc;
    if (++h->since_pump >= HTTP_PUMP_EVERY && (rc = pump(h, 0, false, err, errlen)) < 0)
        return rc;
    if (h->failed) {
        snprintf(err, errlen, "%s", h->failure);
        return PGCDC_ERR;
    }
    size_t cost = pgcdc_http_batch_cost(&h->fill, r->value_len);
    if (h->fill.n > 0 &&
        (h->fill.n >= h->max_events || h->fill.body.len + cost + 1 > h->max_bytes)) {
        /* fill is full: it must go to flight first, which must be free. */
        if (h->flight.n > 0) {
            if ((rc = pump(h, 0, false, err, errlen)) < 0)
                return rc;
            if (h->flight.n > 0)
                return PGCDC_AGAIN;
        }
        /* Whole transactions where they fit; a larger one is cut here. */
        size_t count = h->fill.committed ? h->fill.committed : h->fill.n;
        if ((rc = cut(h, count, err, errlen)) < 0)
            return rc;
        if (h->fill.n >= h->max_events || h->fill.body.len + cost + 1 > h->max_bytes)
            return PGCDC_AGAIN; /* the rest of an open transaction still fills it */
    }
    struct pgcdc_http_event_in e = {
        .schema = r->schema,
        .table = r->table,
        .key = r->key,
        .key_len = r->key_len,
        .value = r->value,
        .value_len = r->value_len,
        .lsn = r->lsn,
        .commit_lsn = r->commit_lsn,
    };
    size_t n0 = h->fill.n;
    if (pgcdc_http_batch_add(&h->fill, &e, pgcdc_mono_ms()) < 0) {
        snprintf(err, errlen, "http: out of memory adding an event to a batch");
        return PGCDC_ERR;
    }
    h->fill.ev[n0].handle = pgcdc_txn_track_add(h->base.track);
    return 0;
}

static int http_commit(struct pgcdc_sink *s, const struct pgcdc_txn_meta *txn, char *err,
                       size_t errlen)
{
    (void)txn;
    struct pgcdc_sink_http *h = http_of(s);
    h->fill.committed = h->fill.n;
    if (h->failed) {
        snprintf(err, errlen, "%s", h->failure);
        return PGCDC_ERR;
    }
    return 0;
}

static int http_sync(struct pgcdc_sink *s, char *err, size_t errlen)
{
    return pump(http_of(s), 0, false, err, errlen);
}

static int http_poll(struct pgcdc_sink *s, int timeout_ms, char *err, size_t errlen)
{
    struct pgcdc_sink_http *h = http_of(s);
    /* The caller waits on us (back-pressure, a full tracker): no reason to linger. */
    int rc = pump(h, timeout_ms, true, err, errlen);
    if (rc < 0 || h->sending || !h->retry_at_ms)
        return rc;
    int64_t left = h->retry_at_ms - pgcdc_mono_ms();
    if (left > timeout_ms)
        left = timeout_ms;
    if (left > 0) {
        struct timespec ts = {(time_t)(left / 1000), (long)(left % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return pump(h, 0, true, err, errlen);
}

static int http_flush(struct pgcdc_sink *s, int timeout_ms, char *err, size_t errlen)
{
    struct pgcdc_sink_http *h = http_of(s);
    int64_t deadline = pgcdc_mono_ms() + timeout_ms;
    for (;;) {
        int rc = pump(h, 0, true, err, errlen);
        if (rc < 0)
            return rc;
        if (h->flight.n == 0 && h->fill.committed == 0)
            return 0;
        int64_t left = deadline - pgcdc_mono_ms();
        if (left <= 0) {
            snprintf(err, errlen,
                     "http: %zu events not yet delivered to %s after %d ms (%s); the confirmed "
                     "LSN stays before them",
                     (h->flight.n - h->lo) + h->fill.committed, h->url_log, timeout_ms,
                     h->retry_at_ms ? "retrying" : "request running");
            return PGCDC_AGAIN;
        }
        if ((rc = http_poll(s, left < 50 ? (int)left : 50, err, errlen)) < 0)
            return rc;
    }
}

static int http_rewind(struct pgcdc_sink *s, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct pgcdc_sink_http *h = http_of(s);
    /* Everything not acknowledged is sent again by the server from the confirmed LSN, in
     * order; sending our copies too would only put duplicates out of order. */
    pgcdc_http_cancel(h->client);
    h->sending = false;
    h->retry_at_ms = 0;
    pgcdc_http_backoff_reset(&h->backoff);
    pgcdc_http_batch_reset(&h->flight);
    pgcdc_http_batch_reset(&h->fill);
    h->lo = h->hi = 0;
    return 0;
}

static uint64_t http_resume_lsn(struct pgcdc_sink *s)
{
    (void)s;
    return 0;
}

static void http_free(struct pgcdc_sink_http *h)
{
    pgcdc_http_client_free(h->client);
    pgcdc_http_batch_free(&h->fill);
    pgcdc_http_batch_free(&h->flight);
    for (size_t i = 0; i < h->nhdr; i++)
        free(h->hdr[i]);
    free(h->hdr);
    free(h->req);
    free(h->url);
    if (h->secret) {
        memset(h->secret, 0, strlen(h->secret));
        free(h->secret);
    }
    pgcdc_deadletter_close(h->dl);
    free(h);
}

/* What is not delivered is not confirmed: the server sends it again after a restart. */
static void http_close(struct pgcdc_sink *s)
{
    if (s)
        http_free(http_of(s));
}

static const struct pgcdc_sink_ops http_ops = {
    .name = "http",
    .begin = http_begin,
    .write = http_write,
    .commit = http_commit,
    .sync = http_sync,
    .poll = http_poll,
    .flush = http_flush,
    .rewind = http_rewind,
    .resume_lsn = http_resume_lsn,
    .close = http_close,
};

/* Header names pgcdc sets itself (or curl does). */
static bool reserved_header(const char *name)
{
    static const char *const names[] = {
        "content-type",          "content-length",  "host", "transfer-encoding", "expect",
        "pgcdc-idempotency-key", "pgcdc-signature", NULL};
    for (size_t i = 0; names[i]; i++)
        if (strcasecmp(name, names[i]) == 0)
            return true;
    return false;
}

/* Check the sink.http.* settings; build the header lines into *hdr (owned by the caller). */
static int settings(const struct pgcdc_config *cfg, char ***hdr, size_t *nhdr, char *err,
                    size_t errlen)
{
    char why[256];
    *hdr = NULL;
    *nhdr = 0;
    if (cfg->sink_http_url == NULL || cfg->sink_http_url[0] == '\0') {
        snprintf(err, errlen,
                 "sink.type is http but sink.http.url is not set: give it with -o "
                 "sink.http.url=https://HOST/PATH , PGCDC_SINK_HTTP_URL or in the -c file");
        return PGCDC_ERR_CONFIG;
    }
    if (!pgcdc_http_url_ok(cfg->sink_http_url, why, sizeof why)) {
        snprintf(err, errlen, "sink.http.url is not usable: %s; give an http:// or https:// URL",
                 why);
        return PGCDC_ERR_CONFIG;
    }
    for (size_t i = 0; i < cfg->nhttp_headers; i++) {
        const struct pgcdc_kv *kv = &cfg->http_headers[i];
        if (reserved_header(kv->key)) {
            snprintf(err, errlen,
                     "sink.http.header.%s: pgcdc sets this header itself; remove "
                     "the key",
                     kv->key);
            return PGCDC_ERR_CONFIG;
        }
        for (const char *p = kv->value; *p; p++)
            if ((unsigned char)*p < 0x20 && *p != '\t') {
                snprintf(err, errlen,
                         "sink.http.header.%s: the value holds a line break or "
                         "control character; give it on one line",
                         kv->key);
                return PGCDC_ERR_CONFIG;
            }
    }
    *nhdr = HTTP_FIXED_HEADERS + cfg->nhttp_headers;
    if ((*hdr = calloc(*nhdr, sizeof **hdr)) == NULL)
        goto oom;
    if (set_line(&(*hdr)[0], "Content-Type", "application/json") < 0 ||
        set_line(&(*hdr)[1], "pgcdc-idempotency-key", "-") < 0 ||
        set_line(&(*hdr)[2], "pgcdc-signature", "-") < 0)
        goto oom;
    for (size_t i = 0; i < cfg->nhttp_headers; i++)
        if (set_line(&(*hdr)[HTTP_FIXED_HEADERS + i], cfg->http_headers[i].key,
                     cfg->http_headers[i].value) < 0)
            goto oom;
    return 0;
oom:
    snprintf(err, errlen, "http: out of memory");
    return PGCDC_ERR;
}

static int new_client(const struct pgcdc_config *cfg, struct pgcdc_http_client **out, char *err,
                      size_t errlen)
{
    struct pgcdc_http_opts o = {.ca_file = cfg->sink_http_ca_file,
                                .timeout_ms = cfg->sink_http_timeout_ms};
    int rc = pgcdc_http_client_new(out, &o, err, errlen);
    if (rc == PGCDC_ERR_CONFIG) {
        char inner[512];
        snprintf(inner, sizeof inner, "%s", err);
        snprintf(err, errlen, "sink.http.ca_file: %s; point it at a readable PEM file", inner);
    }
    return rc;
}

int pgcdc_sink_http_open(struct pgcdc_sink **out, const struct pgcdc_config *cfg, char *err,
                         size_t errlen)
{
    *out = NULL;
    int rc = PGCDC_ERR;
    struct pgcdc_sink_http *h = calloc(1, sizeof *h);
    if (h == NULL) {
        snprintf(err, errlen, "http: out of memory");
        return PGCDC_ERR;
    }
    h->base.ops = &http_ops;
    /* Like Kafka: a key change is a delete of the old key and a create of the new. */
    h->base.split_key_changes = true;
    if ((rc = settings(cfg, &h->hdr, &h->nhdr, err, errlen)) < 0)
        goto fail;
    rc = PGCDC_ERR;
    h->has_ca = cfg->sink_http_ca_file != NULL;
    if ((h->req = calloc(h->nhdr, sizeof *h->req)) == NULL) {
        snprintf(err, errlen, "http: out of memory");
        goto fail;
    }
    h->max_events = (size_t)cfg->sink_http_batch_max_events;
    h->max_bytes = (size_t)cfg->sink_http_batch_max_bytes;
    h->linger_ms = cfg->sink_http_linger_ms;
    h->on_error = cfg->sink_http_on_permanent_error;
    h->backoff = (struct pgcdc_http_backoff){.initial_ms = 100, .max_ms = 30000};
    pgcdc_sink_http_url_for_log(cfg->sink_http_url, h->url_log, sizeof h->url_log);
    if ((h->url = strdup(cfg->sink_http_url)) == NULL ||
        (cfg->sink_http_signing_secret &&
         (h->secret = strdup(cfg->sink_http_signing_secret)) == NULL)) {
        snprintf(err, errlen, "http: out of memory");
        goto fail;
    }
    if ((rc = new_client(cfg, &h->client, err, errlen)) < 0)
        goto fail;
    if (h->on_error == PGCDC_ON_ERROR_DEAD_LETTER &&
        (rc = pgcdc_deadletter_open(&h->dl, cfg->state_dir, err, errlen)) < 0)
        goto fail;
    *out = &h->base;
    return 0;
fail:
    http_free(h);
    return rc;
}

int pgcdc_sink_http_check(const struct pgcdc_config *cfg, char *msg, size_t msglen)
{
    char **hdr = NULL, log_url[512];
    size_t nhdr = 0;
    struct pgcdc_http_client *c = NULL;
    int rc = settings(cfg, &hdr, &nhdr, msg, msglen);
    if (rc < 0 || (rc = new_client(cfg, &c, msg, msglen)) < 0)
        goto done;
    pgcdc_sink_http_url_for_log(cfg->sink_http_url, log_url, sizeof log_url);
    /* The user's headers (Authorization...) go along, so 401/403 means what it will mean
     * for the batches; the fixed lines (a JSON body's) do not. */
    struct pgcdc_http_request r = {.method = "HEAD",
                                   .url = cfg->sink_http_url,
                                   .headers = (const char *const *)hdr + HTTP_FIXED_HEADERS,
                                   .nheaders = nhdr - HTTP_FIXED_HEADERS};
    if ((rc = pgcdc_http_perform(c, &r, msg, msglen)) < 0)
        goto done;
    const struct pgcdc_http_response *resp = pgcdc_http_result(c);
    if (resp->status == 405 || resp->status == 501) {
        r.method = "OPTIONS";
        if ((rc = pgcdc_http_perform(c, &r, msg, msglen)) < 0)
            goto done;
    }
    rc = PGCDC_ERR;
    if (resp->cls == PGCDC_HTTP_TLS)
        snprintf(msg, msglen,
                 "%s: TLS certificate verification failed: %s; if the receiver's certificate "
                 "comes from a private CA or is self-signed, give that CA certificate (PEM) "
                 "with sink.http.ca_file",
                 log_url, resp->reason);
    else if (resp->status == 401 || resp->status == 403)
        snprintf(msg, msglen,
                 "%s answered %s to %s: the receiver refuses pgcdc's credentials; set the "
                 "header it expects with sink.http.header.<Name> (e.g. Authorization)",
                 log_url, resp->reason, r.method);
    else if (resp->status == 0)
        snprintf(msg, msglen, "%s is not reachable: %s", log_url, resp->reason);
    else {
        snprintf(msg, msglen, "%s answered HTTP %ld to %s: reachable", log_url, resp->status,
                 r.method);
        rc = 0;
    }
done:
    pgcdc_http_client_free(c);
    for (size_t i = 0; i < nhdr; i++)
        free(hdr[i]);
    free(hdr);
    return rc;
}
