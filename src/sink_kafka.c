/*
 * sink_kafka.c — events to Kafka through librdkafka's idempotent producer.
 *
 * Each record becomes one message on topic <prefix>.<schema>.<table>, key = the primary-key
 * JSON (none when the table has no key), value = the event JSON, and four headers:
 *     pgcdc.lsn         decimal text of the change's LSN
 *     pgcdc.commit_lsn  decimal text of its transaction's commit LSN
 *     pgcdc.txid        decimal text of the transaction id
 *     pgcdc.op          one letter: c u d r t
 * After a 'd' with a key, a tombstone (null value, same key and headers) follows when
 * sink.kafka.tombstones is on.
 *
 * Durability: every produced message is counted in the transaction tracker; its handle
 * travels as the message opaque and comes back exactly once in the delivery report, which
 * librdkafka serves on our thread inside rd_kafka_poll/rd_kafka_flush. Only a report with
 * no error acknowledges it as durable (the brokers' acks=all). A failed report marks the
 * transaction failed — the confirmed LSN stops before it for good — and makes the next
 * sync/poll/flush return PGCDC_ERR so the worker stops (exit 1) and, when restarted,
 * sends everything after the confirmed LSN again.
 *
 * Ordering: the default partitioner hashes the key, so one key stays on one partition;
 * the idempotent producer keeps per-partition order across retries. Settings that would
 * weaken either guarantee are refused by kafka_conf.c.
 *
 * Messages Kafka refuses for good (README, Guarantees; docs/kafka.md): each message is
 * measured before it is produced against its topic's limit: sink.kafka.max_message_bytes
 * when set, else the topic's max.message.bytes as DescribeConfigs reports it (asked once
 * per topic, without waiting: until the answer comes, and on clusters that cannot answer,
 * librdkafka's message.max.bytes alone). One over the limit is refused for good: with
 * sink.kafka.on_permanent_error = stop the sink fails naming table, key, LSN and size;
 * with dead_letter it goes to deadletter.c, durable before write returns, and is not
 * produced. The brokers refuse whole batches, so a delivery report of MSG_SIZE_TOO_LARGE
 * for a message that shared its batch is retried (the stream reconnects and sends again
 * from the confirmed LSN), never dead-lettered; only a message that filled a batch alone
 * is refused for good there.
 *
 * Back-pressure: when librdkafka's local queue is full (brokers slow or down), write
 * returns PGCDC_AGAIN and the caller polls and offers the same record again. With
 * message.timeout.ms=0 nothing times out: a broker outage pauses the worker instead of
 * failing messages.
 */
#include "pgcdc/sink_kafka.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <librdkafka/rdkafka.h>

#include "pgcdc/common.h"
#include "pgcdc/deadletter.h"
#include "pgcdc/kafka_conf.h"
#include "pgcdc/kafka_topics.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/metrics.h"
#include "pgcdc/txn_track.h"

/* A tracker handle travels in the message's opaque pointer. */
_Static_assert(sizeof(uintptr_t) >= sizeof(uint64_t),
               "the Kafka sink passes 64-bit tracker handles through a pointer");

/* librdkafka warnings: the same error code is logged at most once per this interval. */
#define KAFKA_WARN_INTERVAL_MS 10000

/* Bounded wait for outstanding deliveries when closing (the caller has flushed already). */
#define KAFKA_CLOSE_FLUSH_MS 500

/* Room for Kafka's framing of one record: the record batch header (61 bytes), the record's
 * varints and our four headers (under 200 bytes together), rounded up. A message is too
 * large when key + value + this exceed the limit. */
#define KAFKA_FRAMING_BYTES 256

#define KAFKA_RATELIMIT_SLOTS 16

struct kafka_ratelimit {
    char source[48]; /* "": unused */
    int64_t last_ms;
    uint64_t suppressed;
};

struct pgcdc_sink_kafka {
    struct pgcdc_sink base; /* first, so a struct pgcdc_sink * converts back */
    rd_kafka_t *rk;

    struct pgcdc_kafka_topics topics; /* owned; set up once rk exists */
    bool tombstones;
    struct pgcdc_kafka_sizes sizes;
    size_t user_max; /* sink.kafka.max_message_bytes; 0: the topic's, from the brokers */
    int on_error;    /* enum pgcdc_on_permanent_error */
    struct pgcdc_deadletter *dl; /* owned; only with on_error dead_letter */

    /* The brokers refused a batch that mixed messages: resend from the confirmed LSN. */
    bool retry;
    char retry_why[512];

    /* The record whose event was produced but whose tombstone met a full queue. */
    bool tombstone_pending;
    uint64_t pending_lsn;

    /* The first failure (fatal producer error or failed delivery); stops the worker. */
    bool failed;
    char failure[1024];
    uint64_t failed_deliveries;

    bool closing; /* the tracker may be gone: delivery reports no longer touch it */

    struct kafka_ratelimit rl[KAFKA_RATELIMIT_SLOTS];
};

static struct pgcdc_sink_kafka *kafka_of(struct pgcdc_sink *s)
{
    return (struct pgcdc_sink_kafka *)s;
}

/* Record the first failure; later ones only count. */
static void kafka_fail(struct pgcdc_sink_kafka *k, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void kafka_fail(struct pgcdc_sink_kafka *k, const char *fmt, ...)
{
    va_list ap;

    if (k->failed)
        return;
    k->failed = true;
    va_start(ap, fmt);
    vsnprintf(k->failure, sizeof(k->failure), fmt, ap);
    va_end(ap);
}

/* ---- callbacks, all served on our thread inside rd_kafka_poll/rd_kafka_flush ---- */

/* Read a header's value as a NUL-terminated string into buf ("?" when absent). */
static void kafka_header(const rd_kafka_message_t *m, const char *name, char *buf, size_t len)
{
    rd_kafka_headers_t *hdrs;
    const void *val;
    size_t vlen;

    snprintf(buf, len, "?");
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    if (rd_kafka_header_get_last(hdrs, name, &val, &vlen) != RD_KAFKA_RESP_ERR_NO_ERROR || !val)
        return;
    snprintf(buf, len, "%.*s", (int)vlen, (const char *)val);
}

static const char *kafka_delivery_hint(rd_kafka_resp_err_t e)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
        return "; grant the producer's principal WRITE (and DESCRIBE) on the topic";
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
        /* Without idempotence, one request in flight is what keeps each key's order. */
        return "; grant IDEMPOTENT_WRITE on the cluster, or set kafka.enable.idempotence=false "
               "together with kafka.max.in.flight.requests.per.connection=1";
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
        return "; create the topic (or enable auto.create.topics.enable on the brokers)";
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
        return "; the topic name is not valid on the brokers: change sink.kafka.topic_prefix";
    default:
        return "";
    }
}

/* Record a fatal producer error (the producer cannot go on). */
static void kafka_fail_fatal(struct pgcdc_sink_kafka *k)
{
    char reason[256];
    rd_kafka_resp_err_t ferr = rd_kafka_fatal_error(k->rk, reason, sizeof(reason));
    const char *hint = kafka_delivery_hint(ferr);

    kafka_fail(k, "kafka: fatal producer error %s: %s%s", rd_kafka_err2name(ferr), reason,
               *hint ? hint : "; restart pgcdc (it sends again from the confirmed LSN)");
}

static int kafka_check(struct pgcdc_sink_kafka *k, char *err, size_t errlen)
{
    /* A fatal error may be raised before its error_cb has been served. */
    if (!k->failed && rd_kafka_fatal_error(k->rk, NULL, 0))
        kafka_fail_fatal(k);
    if (k->failed) {
        snprintf(err, errlen, "%s", k->failure);
        return PGCDC_ERR;
    }
    if (k->retry) {
        snprintf(err, errlen, "%s", k->retry_why);
        return PGCDC_ERR_RETRY;
    }
    return PGCDC_OK;
}

/* ---- messages refused for good ---- */

/* A message the brokers cannot take, as the error and the dead letter name it. */
struct kafka_refused {
    const char *table; /* schema.table, or NULL when only the topic is known */
    const char *topic;
    const char *key; /* JSON or NULL */
    size_t key_len;
    const char *value; /* the event JSON, or NULL for a tombstone */
    size_t value_len;
    uint64_t lsn, commit_lsn;
    const char *why; /* "over the limit of N bytes (kafka.message.max.bytes)", ... */
};

/*
 * Stop on a refused message (on_permanent_error = stop: the sink fails, PGCDC_ERR), or
 * write it to the dead letters and go on (PGCDC_OK once it is durable; a failed write
 * returns its class, and the message counts as not written).
 */
static int kafka_refuse(struct pgcdc_sink_kafka *k, const struct kafka_refused *x, char *err,
                        size_t errlen)
{
    char text[PGCDC_LSN_BUFLEN], where[320], reason[512];
    size_t size = x->value_len + (x->key ? x->key_len : 0);
    int kl = x->key ? (int)(x->key_len > 200 ? 200 : x->key_len) : 4;
    int rc;

    pgcdc_lsn_format(x->lsn, text);
    if (x->table)
        snprintf(where, sizeof(where), "table %s (topic %s)", x->table, x->topic);
    else
        snprintf(where, sizeof(where), "topic %s", x->topic);
    snprintf(reason, sizeof(reason), "%zu bytes (key + value), %s", size, x->why);
    if (k->on_error == PGCDC_ON_ERROR_STOP) {
        kafka_fail(k,
                   "kafka: message for %s at LSN %s (%" PRIu64 "), key %.*s, is %s; raise the "
                   "limit (the topic's max.message.bytes, kafka.message.max.bytes, "
                   "sink.kafka.max_message_bytes), exclude the table with source.tables.exclude, "
                   "or set sink.kafka.on_permanent_error = dead_letter",
                   where, text, x->lsn, kl, x->key ? x->key : "null", reason);
        snprintf(err, errlen, "%s", k->failure);
        return PGCDC_ERR;
    }
    struct pgcdc_deadletter_entry e = {
        .reason = reason,
        .topic = x->topic,
        .key = x->key,
        .key_len = x->key_len,
        .event = x->value,
        .event_len = x->value_len,
        .lsn = x->lsn,
        .commit_lsn = x->commit_lsn,
        .size = size,
    };
    if ((rc = pgcdc_deadletter_write(k->dl, &e, err, errlen)) < 0)
        return rc;
    atomic_fetch_add(&pgcdc_metrics.dead_letters, 1);
    pgcdc_log(PGCDC_LOG_WARN, "kafka: message refused for good, written to the dead letters",
              "topic", x->topic, "lsn", text, "reason", reason, "dir", pgcdc_deadletter_dir(k->dl),
              NULL);
    return PGCDC_OK;
}

/*
 * The brokers refused a message as too large. They judge whole batches: a message that
 * shared its batch is sent again (the stream reconnects and resends from the confirmed
 * LSN), and stays unacknowledged meanwhile so nothing after it is confirmed. Only a
 * message too large to share a batch (at least batch_max_bytes) was refused on its own,
 * for good. Returns whether it was handled for good (true: acknowledge it as `*ok`).
 */
static bool kafka_dr_too_large(struct pgcdc_sink_kafka *k, const rd_kafka_message_t *m, bool *ok)
{
    char lsn[32], clsn[32], why[160], err[512], text[PGCDC_LSN_BUFLEN];
    const char *topic = m->rkt ? rd_kafka_topic_name(m->rkt) : "?";
    size_t size = m->len + m->key_len;
    int rc;

    kafka_header(m, "pgcdc.lsn", lsn, sizeof(lsn));
    kafka_header(m, "pgcdc.commit_lsn", clsn, sizeof(clsn));
    if (size < k->sizes.batch_max_bytes) {
        if (!k->retry) {
            pgcdc_lsn_format(strtoull(lsn, NULL, 10), text);
            k->retry = true;
            snprintf(k->retry_why, sizeof(k->retry_why),
                     "kafka: the brokers refused a batch of topic %s as too large (it held the "
                     "%zu-byte message at LSN %s); sending again from the confirmed LSN. If it "
                     "repeats, set sink.kafka.max_message_bytes to the topic's max.message.bytes "
                     "so that batches stay under it",
                     topic, size, text);
        }
        return false;
    }
    snprintf(why, sizeof(why), "refused by the brokers as too large (%s)",
             rd_kafka_err2str(m->err));
    struct kafka_refused x = {
        .topic = topic,
        .key = m->key,
        .key_len = m->key_len,
        .value = m->payload,
        .value_len = m->len,
        .lsn = strtoull(lsn, NULL, 10),
        .commit_lsn = strtoull(clsn, NULL, 10),
        .why = why,
    };
    rc = kafka_refuse(k, &x, err, sizeof(err));
    if (rc == PGCDC_ERR_RETRY && !k->retry) {
        /* The dead letter could not be written (a full disk): later, from the start. */
        k->retry = true;
        snprintf(k->retry_why, sizeof(k->retry_why), "%s", err);
        return false;
    }
    if (rc < 0)
        kafka_fail(k, "%s", err);
    *ok = rc == PGCDC_OK;
    return true;
}

static void kafka_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct pgcdc_sink_kafka *k = opaque;
    uint64_t h = (uint64_t)(uintptr_t)m->_private;
    char lsn[32], clsn[32], text[PGCDC_LSN_BUFLEN];
    bool ok = m->err == RD_KAFKA_RESP_ERR_NO_ERROR;

    (void)rk;
    if (k->closing || !k->base.track)
        return; /* the tracker may be gone; nothing after close is confirmed anyway */
    if (!ok && m->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) {
        if (kafka_dr_too_large(k, m, &ok))
            pgcdc_txn_track_ack(k->base.track, h, ok);
        return;
    }
    pgcdc_txn_track_ack(k->base.track, h, ok);
    if (ok)
        return;

    k->failed_deliveries++;
    kafka_header(m, "pgcdc.lsn", lsn, sizeof(lsn));
    kafka_header(m, "pgcdc.commit_lsn", clsn, sizeof(clsn));
    pgcdc_lsn_format(strtoull(lsn, NULL, 10), text);
    kafka_fail(k, "kafka: delivery to topic %s failed at LSN %s (%s, commit_lsn %s): %s%s",
               m->rkt ? rd_kafka_topic_name(m->rkt) : "?", text, lsn, clsn,
               rd_kafka_err2str(m->err), kafka_delivery_hint(m->err));
}

/*
 * At most one warning per distinct source (an error code or a librdkafka log facility)
 * per KAFKA_WARN_INTERVAL_MS; a broker outage would otherwise log on every retry.
 * Returns whether to log now; *suppressed gets how many were skipped since the last one.
 */
static bool kafka_warn_allowed(struct pgcdc_sink_kafka *k, const char *source, uint64_t *suppressed)
{
    int64_t now = pgcdc_mono_ms();
    struct kafka_ratelimit *rl = NULL, *oldest = &k->rl[0];

    for (size_t i = 0; i < KAFKA_RATELIMIT_SLOTS; i++) {
        if (strcmp(k->rl[i].source, source) == 0) {
            rl = &k->rl[i];
            break;
        }
        if (k->rl[i].last_ms < oldest->last_ms)
            oldest = &k->rl[i];
    }
    if (rl && now - rl->last_ms < KAFKA_WARN_INTERVAL_MS) {
        rl->suppressed++;
        return false;
    }
    if (!rl) {
        rl = oldest;
        snprintf(rl->source, sizeof(rl->source), "%s", source);
        rl->suppressed = 0;
    }
    *suppressed = rl->suppressed;
    rl->suppressed = 0;
    rl->last_ms = now;
    return true;
}

static void kafka_warn(struct pgcdc_sink_kafka *k, rd_kafka_resp_err_t e, const char *reason)
{
    uint64_t n;
    char sup[24];

    if (!kafka_warn_allowed(k, rd_kafka_err2name(e), &n))
        return;
    snprintf(sup, sizeof(sup), "%" PRIu64, n);
    pgcdc_log(PGCDC_LOG_WARN, "kafka broker error", "error", rd_kafka_err2name(e), "reason", reason,
              "suppressed", sup, NULL);
}

static void kafka_error_cb(rd_kafka_t *rk, int e, const char *reason, void *opaque)
{
    struct pgcdc_sink_kafka *k = opaque;

    (void)rk;
    if (e == RD_KAFKA_RESP_ERR__FATAL) {
        kafka_fail_fatal(k);
        return;
    }
    if (e == RD_KAFKA_RESP_ERR__AUTHENTICATION) {
        /* Wrong credentials do not fix themselves: stop instead of retrying for ever. */
        kafka_fail(k,
                   "kafka: authentication failed: %s; check kafka.sasl.mechanism, "
                   "kafka.sasl.username and kafka.sasl.password",
                   reason);
        return;
    }
    kafka_warn(k, (rd_kafka_resp_err_t)e, reason);
}

/* librdkafka's own log lines, forwarded to our queue by log.queue=true. */
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    struct pgcdc_sink_kafka *k = rd_kafka_opaque(rk);
    uint64_t n = 0;
    char sup[24];

    if (level == LOG_DEBUG) {
        /* Only emitted when the user set kafka.debug: show them. */
        pgcdc_log(PGCDC_LOG_INFO, "librdkafka", "fac", fac, "detail", buf, NULL);
        return;
    }
    if (level > LOG_WARNING) {
        /* Notices ("Disconnected" after an idle close, ...) are routine. */
        pgcdc_log(PGCDC_LOG_DEBUG, "librdkafka", "fac", fac, "detail", buf, NULL);
        return;
    }
    /* Broker failures (FAIL) and fatal errors (FATAL) also arrive through error_cb, which
     * reports them. */
    if (strcmp(fac, "FAIL") == 0 || strcmp(fac, "FATAL") == 0)
        return;
    /* Warn, not error: what stops the worker comes from error_cb and delivery reports. */
    if (k && !kafka_warn_allowed(k, fac, &n))
        return;
    snprintf(sup, sizeof(sup), "%" PRIu64, n);
    pgcdc_log(PGCDC_LOG_WARN, "librdkafka", "fac", fac, "detail", buf, "suppressed", sup, NULL);
}

/* ---- producing ---- */

/*
 * Whether a message of `size` bytes (key + value) is over t's limit; if so, *why says
 * which limit. The tightest known limit counts: sink.kafka.max_message_bytes when set, else
 * the topic's max.message.bytes when the brokers told it, and librdkafka's
 * message.max.bytes, which it enforces itself when the message is produced.
 */
static bool kafka_too_large(struct pgcdc_sink_kafka *k, const struct pgcdc_kafka_topic *t,
                            size_t size, char *why, size_t whylen)
{
    size_t limit = k->sizes.message_max_bytes;
    const char *name = "kafka.message.max.bytes";

    if (k->user_max && k->user_max <= limit) {
        limit = k->user_max;
        name = "sink.kafka.max_message_bytes";
    } else if (!k->user_max && t->limit && t->limit <= limit) {
        limit = t->limit;
        name = "the topic's max.message.bytes";
    }
    if (size + KAFKA_FRAMING_BYTES <= limit)
        return false;
    snprintf(why, whylen, "over the limit of %zu bytes (%s) with Kafka's framing", limit, name);
    return true;
}

/*
 * Produce one message (value NULL: a tombstone). Returns 0, PGCDC_AGAIN when the local
 * queue is full (nothing was produced, nothing stays counted), PGCDC_ERR otherwise. A
 * message over its topic's limit is never produced: kafka_refuse decides (stop, or the
 * dead letters and 0).
 */
static int kafka_produce(struct pgcdc_sink_kafka *k, struct pgcdc_kafka_topic *t,
                         const struct pgcdc_record *r, const char *value, size_t value_len,
                         char *err, size_t errlen)
{
    char lsn[PGCDC_U64_BUFLEN], clsn[PGCDC_U64_BUFLEN], xid[PGCDC_U64_BUFLEN];
    char op[2] = {r->op, '\0'}, why[160], table[PGCDC_KAFKA_NAME_CACHE * 2 + 2];
    size_t size = value_len + (r->key ? r->key_len : 0);
    rd_kafka_headers_t *hdrs;
    rd_kafka_resp_err_t e;
    uint64_t h;

    if (kafka_too_large(k, t, size, why, sizeof(why))) {
        snprintf(table, sizeof(table), "%s.%s", r->schema, r->table);
        struct kafka_refused x = {
            .table = table,
            .topic = t->name,
            .key = r->key,
            .key_len = r->key_len,
            .value = value,
            .value_len = value_len,
            .lsn = r->lsn,
            .commit_lsn = r->commit_lsn,
            .why = why,
        };
        int rc = kafka_refuse(k, &x, err, errlen);

        /* Stopped on it: its transaction must never be confirmed, whatever comes next. A
         * dead letter that could not be written yet is retried instead (a full disk). */
        if (rc < 0 && rc != PGCDC_ERR_RETRY)
            pgcdc_txn_track_ack(k->base.track, pgcdc_txn_track_add(k->base.track), false);
        return rc;
    }

    size_t lsn_len = pgcdc_u64_str(r->lsn, lsn);
    size_t clsn_len = pgcdc_u64_str(r->commit_lsn, clsn);
    size_t xid_len = pgcdc_u64_str(r->xid, xid);
    hdrs = rd_kafka_headers_new(4);
    if (!hdrs || rd_kafka_header_add(hdrs, "pgcdc.lsn", 9, lsn, (ssize_t)lsn_len) ||
        rd_kafka_header_add(hdrs, "pgcdc.commit_lsn", 16, clsn, (ssize_t)clsn_len) ||
        rd_kafka_header_add(hdrs, "pgcdc.txid", 10, xid, (ssize_t)xid_len) ||
        rd_kafka_header_add(hdrs, "pgcdc.op", 8, op, 1)) {
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        snprintf(err, errlen, "kafka: out of memory building message headers");
        return PGCDC_ERR;
    }

    h = pgcdc_txn_track_add(k->base.track);
    /* F_COPY: our buffers are reused for the next row. On success librdkafka owns hdrs. */
    e = rd_kafka_producev(
        k->rk, RD_KAFKA_V_RKT(t->rkt), RD_KAFKA_V_PARTITION(RD_KAFKA_PARTITION_UA),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_VALUE((void *)value, value_len),
        RD_KAFKA_V_KEY((const void *)r->key, r->key ? r->key_len : 0), RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_OPAQUE((void *)(uintptr_t)h), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        return PGCDC_OK;
    rd_kafka_headers_destroy(hdrs);

    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        /* Not produced: cancel the count; the caller polls and offers the record again. */
        pgcdc_txn_track_ack(k->base.track, h, true);
        snprintf(err, errlen, "kafka: local queue full (%d messages waiting)",
                 rd_kafka_outq_len(k->rk));
        return PGCDC_AGAIN;
    }

    /* Never produced and never will be: the transaction cannot be confirmed. */
    pgcdc_txn_track_ack(k->base.track, h, false);
    {
        char text[PGCDC_LSN_BUFLEN];

        pgcdc_lsn_format(r->lsn, text);
        snprintf(err, errlen, "kafka: cannot produce to topic %s at LSN %s (%" PRIu64 "): %s",
                 t->name, text, r->lsn, rd_kafka_err2str(e));
    }
    kafka_fail(k, "%s", err);
    return PGCDC_ERR;
}

static int kafka_begin(struct pgcdc_sink *s, const struct pgcdc_txn_meta *txn, char *err,
                       size_t errlen)
{
    (void)txn;
    return kafka_check(kafka_of(s), err, errlen);
}

static int kafka_write(struct pgcdc_sink *s, const struct pgcdc_record *r, char *err, size_t errlen)
{
    struct pgcdc_sink_kafka *k = kafka_of(s);
    struct pgcdc_kafka_topic *t;
    int rc;

    if ((rc = kafka_check(k, err, errlen)) < 0)
        return rc;
    pgcdc_kafka_topics_poll(&k->topics);
    if (!(t = pgcdc_kafka_topics_get(&k->topics, r->schema, r->table, err, errlen)))
        return PGCDC_ERR;

    /* The same record offered again after its tombstone met a full queue: the event itself
     * is already produced; only the tombstone is left. */
    if (!(k->tombstone_pending && k->pending_lsn == r->lsn && r->op == 'd')) {
        k->tombstone_pending = false;
        if ((rc = kafka_produce(k, t, r, r->value, r->value_len, err, errlen)) < 0)
            return rc;
    }
    if (r->op == 'd' && k->tombstones && r->key) {
        rc = kafka_produce(k, t, r, NULL, 0, err, errlen);
        if (rc == PGCDC_AGAIN) {
            k->tombstone_pending = true;
            k->pending_lsn = r->lsn;
            return rc;
        }
        if (rc < 0)
            return rc;
    }
    k->tombstone_pending = false;
    return PGCDC_OK;
}

static int kafka_commit(struct pgcdc_sink *s, const struct pgcdc_txn_meta *txn, char *err,
                        size_t errlen)
{
    (void)txn;
    return kafka_check(kafka_of(s), err, errlen);
}

static int kafka_sync(struct pgcdc_sink *s, char *err, size_t errlen)
{
    struct pgcdc_sink_kafka *k = kafka_of(s);

    rd_kafka_poll(k->rk, 0);
    pgcdc_kafka_topics_poll(&k->topics);
    return kafka_check(k, err, errlen);
}

static int kafka_poll(struct pgcdc_sink *s, int timeout_ms, char *err, size_t errlen)
{
    struct pgcdc_sink_kafka *k = kafka_of(s);

    rd_kafka_poll(k->rk, timeout_ms);
    pgcdc_kafka_topics_poll(&k->topics);
    return kafka_check(k, err, errlen);
}

static int kafka_flush(struct pgcdc_sink *s, int timeout_ms, char *err, size_t errlen)
{
    struct pgcdc_sink_kafka *k = kafka_of(s);
    rd_kafka_resp_err_t e;
    int rc;

    e = rd_kafka_flush(k->rk, timeout_ms);
    rd_kafka_poll(k->rk, 0);
    if ((rc = kafka_check(k, err, errlen)) < 0)
        return rc;
    if (e == RD_KAFKA_RESP_ERR__TIMED_OUT) {
        snprintf(err, errlen,
                 "kafka: %d messages not yet acknowledged after %d ms (brokers unreachable?); "
                 "the confirmed LSN stays before them",
                 rd_kafka_outq_len(k->rk), timeout_ms);
        return PGCDC_AGAIN;
    }
    return PGCDC_OK;
}

static int kafka_rewind(struct pgcdc_sink *s, char *err, size_t errlen)
{
    struct pgcdc_sink_kafka *k = kafka_of(s);

    (void)err;
    (void)errlen;
    /* Messages already produced stay produced: they may appear twice, with identical
     * (commit_lsn, lsn), which at-least-once allows. A refused batch is sent again from
     * the confirmed LSN, which is what the caller does next. */
    k->tombstone_pending = false;
    k->retry = false;
    return PGCDC_OK;
}

static uint64_t kafka_resume_lsn(struct pgcdc_sink *s)
{
    (void)s;
    return 0;
}

static void kafka_free(struct pgcdc_sink_kafka *k)
{
    /* Topic handles go before the producer they belong to. */
    pgcdc_kafka_topics_free(&k->topics);
    if (k->rk)
        rd_kafka_destroy(k->rk);
    pgcdc_deadletter_close(k->dl);
    free(k);
}

/*
 * Wait a bounded time for outstanding deliveries, then drop whatever is left (not
 * confirmed, so the server sends it again after a restart) and destroy the producer.
 * The caller may have freed the tracker already, so reports no longer reach it.
 */
static void kafka_close(struct pgcdc_sink *s)
{
    struct pgcdc_sink_kafka *k = kafka_of(s);
    int left;

    if (!k)
        return;
    k->closing = true;
    rd_kafka_flush(k->rk, KAFKA_CLOSE_FLUSH_MS);
    if ((left = rd_kafka_outq_len(k->rk)) > 0) {
        char n[16];

        snprintf(n, sizeof(n), "%d", left);
        pgcdc_log(PGCDC_LOG_WARN,
                  "kafka: dropping unacknowledged messages at close; they are "
                  "sent again after restart",
                  "messages", n, NULL);
        rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(k->rk, 0);
    }
    kafka_free(k);
}

static const struct pgcdc_sink_ops kafka_ops = {
    .name = "kafka",
    .begin = kafka_begin,
    .write = kafka_write,
    .commit = kafka_commit,
    .sync = kafka_sync,
    .poll = kafka_poll,
    .flush = kafka_flush,
    .rewind = kafka_rewind,
    .resume_lsn = kafka_resume_lsn,
    .close = kafka_close,
};

static bool kafka_user_set(const struct pgcdc_config *cfg, const char *key)
{
    for (size_t i = 0; i < cfg->nkafka; i++)
        if (strcmp(cfg->kafka[i].key, key) == 0)
            return true;
    return false;
}

int pgcdc_sink_kafka_open(struct pgcdc_sink **out, const struct pgcdc_config *cfg, char *err,
                          size_t errlen)
{
    struct pgcdc_sink_kafka *k;
    rd_kafka_conf_t *conf = NULL;
    char why[512];
    int rc = PGCDC_ERR;

    *out = NULL;
    if (!kafka_user_set(cfg, "bootstrap.servers") && !kafka_user_set(cfg, "metadata.broker.list")) {
        snprintf(err, errlen,
                 "kafka.bootstrap.servers is not set; set it to the brokers' HOST:PORT list "
                 "(e.g. -o kafka.bootstrap.servers=localhost:9092)");
        return PGCDC_ERR_CONFIG;
    }
    if (!(k = calloc(1, sizeof(*k)))) {
        snprintf(err, errlen, "kafka: out of memory");
        goto fail;
    }
    k->base.ops = &kafka_ops;
    k->base.split_key_changes = true;
    k->tombstones = cfg->sink_kafka_tombstones;
    k->user_max = (size_t)cfg->sink_kafka_max_message_bytes;
    k->on_error = cfg->sink_kafka_on_permanent_error;
    if (k->on_error == PGCDC_ON_ERROR_DEAD_LETTER &&
        (rc = pgcdc_deadletter_open(&k->dl, cfg->state_dir, err, errlen)) < 0)
        goto fail;

    if ((rc = pgcdc_kafka_conf_build(cfg, &conf, &k->sizes, err, errlen)) < 0)
        goto fail;
    rc = PGCDC_ERR;

    /* Ours, whatever the user set: reports and logs are served on our thread by
     * rd_kafka_poll, so the tracker and the logger are never touched concurrently. */
    if (rd_kafka_conf_set(conf, "log.queue", "true", why, sizeof(why)) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka: log.queue: %s", why);
        goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, kafka_dr_cb);
    rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    rd_kafka_conf_set_opaque(conf, k);

    /* rd_kafka_new takes conf on success. */
    k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!k->rk) {
        snprintf(err, errlen, "kafka: %s", why);
        rc = PGCDC_ERR_CONFIG;
        goto fail;
    }
    conf = NULL;
    /* Forward librdkafka's log lines to the main queue, served by rd_kafka_poll. */
    rd_kafka_set_log_queue(k->rk, NULL);
    /* sink.kafka.max_message_bytes, when set, decides alone: the brokers are not asked. */
    if (pgcdc_kafka_topics_init(&k->topics, k->rk, cfg->sink_kafka_topic_prefix, !k->user_max, err,
                                errlen) < 0)
        goto fail;

    *out = &k->base;
    return PGCDC_OK;

fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (k)
        kafka_free(k);
    return rc;
}
