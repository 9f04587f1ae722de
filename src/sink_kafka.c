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
 * the idempotent producer keeps per-partition order across retries.
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
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/txn_track.h"

/* A tracker handle travels in the message's opaque pointer. */
_Static_assert(sizeof(uintptr_t) >= sizeof(uint64_t),
               "the Kafka sink passes 64-bit tracker handles through a pointer");

/* Kafka's legal topic length. */
#define KAFKA_TOPIC_MAX 249

/* Room for a PostgreSQL name (at most 63 bytes) in the last-table cache. */
#define KAFKA_NAME_CACHE 128

/* librdkafka warnings: the same error code is logged at most once per this interval. */
#define KAFKA_WARN_INTERVAL_MS 10000

/* Bounded wait for outstanding deliveries when closing (the caller has flushed already). */
#define KAFKA_CLOSE_FLUSH_MS 500

/* The producer defaults we set before the user's kafka.* keys; see docs/kafka.md. */
struct kafka_default {
    const char *key;
    const char *value;
    bool topic; /* a topic-level property */
};

static const struct kafka_default kafka_defaults[] = {
    {"client.id", "pgcdc", false},
    /* No duplicates from retries, and per-partition order kept with 5 requests in flight. */
    {"enable.idempotence", "true", false},
    {"acks", "all", true},
    /* Never fail a message for taking long: a broker outage becomes back-pressure. */
    {"message.timeout.ms", "0", true},
    /* Small batching delay: throughput without adding visible latency. */
    {"linger.ms", "10", false},
    /* Event JSON compresses well; lz4 is cheap and every broker version reads it. */
    {"compression.codec", "lz4", false},
    /* Bound memory under an outage or a burst: at most 20,000 messages or 32 MiB queued
     * locally, then back-pressure. Peak RSS stays well under 64 MB (docs/benchmarks.md);
     * fewer queued messages cost no measurable throughput. */
    {"queue.buffering.max.messages", "20000", false},
    {"queue.buffering.max.kbytes", "32768", false},
};

#define KAFKA_RATELIMIT_SLOTS 16

struct kafka_ratelimit {
    char source[48]; /* "": unused */
    int64_t last_ms;
    uint64_t suppressed;
};

/* One cached topic handle; the table is open-addressed on the topic name. */
struct kafka_topic_slot {
    char *name; /* owned; NULL: empty slot */
    rd_kafka_topic_t *rkt;
};

struct pgcdc_sink_kafka {
    struct pgcdc_sink base; /* first, so a struct pgcdc_sink * converts back */
    rd_kafka_t *rk;

    struct kafka_topic_slot *topics;
    size_t ntopics, topics_cap; /* cap is a power of two */
    struct pgcdc_buf topic;     /* reused: the topic name of the current record */
    /* The last record's table and its handle: consecutive rows mostly share a table. */
    char last_schema[KAFKA_NAME_CACHE], last_table[KAFKA_NAME_CACHE];
    rd_kafka_topic_t *last_rkt;
    char *prefix;
    bool tombstones;
    size_t max_bytes; /* the producer's message.max.bytes, for error messages */

    /* The record whose event was produced but whose tombstone met a full queue. */
    bool tombstone_pending;
    uint64_t pending_lsn;

    /* The first failure (fatal producer error or failed delivery); stops the worker. */
    bool failed;
    char failure[512];
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
        return "; grant IDEMPOTENT_WRITE on the cluster, or set kafka.enable.idempotence=false";
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
    if (!k->failed)
        return PGCDC_OK;
    snprintf(err, errlen, "%s", k->failure);
    return PGCDC_ERR;
}

static void kafka_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct pgcdc_sink_kafka *k = opaque;
    uint64_t h = (uint64_t)(uintptr_t)m->_private;
    char lsn[32], clsn[32];
    bool ok = m->err == RD_KAFKA_RESP_ERR_NO_ERROR;

    (void)rk;
    if (!k->closing && k->base.track)
        pgcdc_txn_track_ack(k->base.track, h, ok);
    if (ok || k->closing)
        return;

    k->failed_deliveries++;
    kafka_header(m, "pgcdc.lsn", lsn, sizeof(lsn));
    kafka_header(m, "pgcdc.commit_lsn", clsn, sizeof(clsn));
    {
        uint64_t v = strtoull(lsn, NULL, 10);
        char text[PGCDC_LSN_BUFLEN];
        const char *topic = m->rkt ? rd_kafka_topic_name(m->rkt) : "?";

        pgcdc_lsn_format(v, text);
        if (m->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ||
            m->err == RD_KAFKA_RESP_ERR_INVALID_RECORD) {
            kafka_fail(k,
                       "kafka: the brokers rejected a message of topic %s at LSN %s (%s) as too "
                       "large: %zu bytes (%s); raise the topic's max.message.bytes, or exclude "
                       "the table with source.tables.exclude",
                       topic, text, lsn, m->len + m->key_len, rd_kafka_err2str(m->err));
        } else {
            kafka_fail(k, "kafka: delivery to topic %s failed at LSN %s (%s, commit_lsn %s): %s%s",
                       topic, text, lsn, clsn, rd_kafka_err2str(m->err),
                       kafka_delivery_hint(m->err));
        }
    }
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

/* ---- topics ---- */

static uint64_t kafka_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int kafka_topics_grow(struct pgcdc_sink_kafka *k)
{
    size_t ncap = k->topics_cap ? k->topics_cap * 2 : 64;
    struct kafka_topic_slot *nt = calloc(ncap, sizeof(*nt));

    if (!nt)
        return PGCDC_ERR;
    for (size_t i = 0; i < k->topics_cap; i++) {
        struct kafka_topic_slot *o = &k->topics[i];
        size_t j;

        if (!o->name)
            continue;
        j = kafka_hash(o->name, strlen(o->name)) & (ncap - 1);
        while (nt[j].name)
            j = (j + 1) & (ncap - 1);
        nt[j] = *o;
    }
    free(k->topics);
    k->topics = nt;
    k->topics_cap = ncap;
    return PGCDC_OK;
}

/*
 * Build <prefix>.<schema>.<table> into k->topic. Characters Kafka does not allow in a topic
 * name (anything but [A-Za-z0-9._-]) become '_', as Debezium does.
 */
static int kafka_topic_name(struct pgcdc_sink_kafka *k, const char *schema, const char *table,
                            char *err, size_t errlen)
{
    size_t start;

    pgcdc_buf_reset(&k->topic);
    if (pgcdc_buf_append_str(&k->topic, k->prefix) < 0 || pgcdc_buf_append_char(&k->topic, '.') < 0)
        goto nomem;
    start = k->topic.len;
    if (pgcdc_buf_append_str(&k->topic, schema) < 0 || pgcdc_buf_append_char(&k->topic, '.') < 0 ||
        pgcdc_buf_append_str(&k->topic, table) < 0)
        goto nomem;
    for (size_t i = start; i < k->topic.len; i++) {
        char c = k->topic.data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            k->topic.data[i] = '_';
    }
    if (k->topic.len > KAFKA_TOPIC_MAX) {
        snprintf(err, errlen,
                 "kafka: topic name for table %s.%s is %zu characters, over Kafka's limit of %d; "
                 "shorten sink.kafka.topic_prefix",
                 schema, table, k->topic.len, KAFKA_TOPIC_MAX);
        return PGCDC_ERR;
    }
    return PGCDC_OK;
nomem:
    snprintf(err, errlen, "kafka: out of memory building a topic name");
    return PGCDC_ERR;
}

/* The cached handle for the topic named in k->topic, created on first use. */
static rd_kafka_topic_t *kafka_topic(struct pgcdc_sink_kafka *k, char *err, size_t errlen)
{
    const char *name = k->topic.data;
    size_t j;

    if (k->topics_cap) {
        j = kafka_hash(name, k->topic.len) & (k->topics_cap - 1);
        for (; k->topics[j].name; j = (j + 1) & (k->topics_cap - 1))
            if (strcmp(k->topics[j].name, name) == 0)
                return k->topics[j].rkt;
    }
    if ((k->ntopics + 1) * 2 > k->topics_cap && kafka_topics_grow(k) < 0)
        goto nomem;
    j = kafka_hash(name, k->topic.len) & (k->topics_cap - 1);
    while (k->topics[j].name)
        j = (j + 1) & (k->topics_cap - 1);
    /* NULL conf: the handle takes the default topic conf given at rd_kafka_new. */
    k->topics[j].rkt = rd_kafka_topic_new(k->rk, name, NULL);
    if (!k->topics[j].rkt) {
        snprintf(err, errlen, "kafka: cannot create a handle for topic %s: %s", name,
                 rd_kafka_err2str(rd_kafka_last_error()));
        return NULL;
    }
    if (!(k->topics[j].name = strdup(name))) {
        rd_kafka_topic_destroy(k->topics[j].rkt);
        k->topics[j].rkt = NULL;
        goto nomem;
    }
    k->ntopics++;
    return k->topics[j].rkt;
nomem:
    snprintf(err, errlen, "kafka: out of memory caching topic %s", name);
    return NULL;
}

/* ---- producing ---- */

/*
 * Produce one message (value NULL: a tombstone). Returns 0, PGCDC_AGAIN when the local
 * queue is full (nothing was produced, nothing stays counted), PGCDC_ERR otherwise.
 */
static int kafka_produce(struct pgcdc_sink_kafka *k, rd_kafka_topic_t *rkt,
                         const struct pgcdc_record *r, const char *value, size_t value_len,
                         char *err, size_t errlen)
{
    char lsn[PGCDC_U64_BUFLEN], clsn[PGCDC_U64_BUFLEN], xid[PGCDC_U64_BUFLEN];
    char op[2] = {r->op, '\0'};
    rd_kafka_headers_t *hdrs;
    rd_kafka_resp_err_t e;
    uint64_t h;

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
        k->rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_PARTITION(RD_KAFKA_PARTITION_UA),
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
        if (e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
            snprintf(err, errlen,
                     "kafka: message for table %s.%s (topic %s) at LSN %s (%" PRIu64
                     ") is %zu bytes, over kafka.message.max.bytes (%zu); raise "
                     "kafka.message.max.bytes and the topic's max.message.bytes, or exclude the "
                     "table with source.tables.exclude",
                     r->schema, r->table, rd_kafka_topic_name(rkt), text, r->lsn,
                     value_len + (r->key ? r->key_len : 0), k->max_bytes);
        else
            snprintf(err, errlen, "kafka: cannot produce to topic %s at LSN %s (%" PRIu64 "): %s",
                     rd_kafka_topic_name(rkt), text, r->lsn, rd_kafka_err2str(e));
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
    rd_kafka_topic_t *rkt;
    int rc;

    if ((rc = kafka_check(k, err, errlen)) < 0)
        return rc;
    if (k->last_rkt && strcmp(r->schema, k->last_schema) == 0 &&
        strcmp(r->table, k->last_table) == 0) {
        rkt = k->last_rkt;
    } else {
        if (kafka_topic_name(k, r->schema, r->table, err, errlen) < 0)
            return PGCDC_ERR;
        if (!(rkt = kafka_topic(k, err, errlen)))
            return PGCDC_ERR;
        size_t ls = strlen(r->schema), lt = strlen(r->table);
        k->last_rkt = NULL; /* cached only when both names fit */
        if (ls < KAFKA_NAME_CACHE && lt < KAFKA_NAME_CACHE) {
            memcpy(k->last_schema, r->schema, ls + 1);
            memcpy(k->last_table, r->table, lt + 1);
            k->last_rkt = rkt;
        }
    }

    /* The same record offered again after its tombstone met a full queue: the event itself
     * is already produced; only the tombstone is left. */
    if (!(k->tombstone_pending && k->pending_lsn == r->lsn && r->op == 'd')) {
        k->tombstone_pending = false;
        if ((rc = kafka_produce(k, rkt, r, r->value, r->value_len, err, errlen)) < 0)
            return rc;
    }
    if (r->op == 'd' && k->tombstones && r->key) {
        rc = kafka_produce(k, rkt, r, NULL, 0, err, errlen);
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
    return kafka_check(k, err, errlen);
}

static int kafka_poll(struct pgcdc_sink *s, int timeout_ms, char *err, size_t errlen)
{
    struct pgcdc_sink_kafka *k = kafka_of(s);

    rd_kafka_poll(k->rk, timeout_ms);
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
    (void)err;
    (void)errlen;
    /* Messages already produced stay produced: they may appear twice, with identical
     * (commit_lsn, lsn), which at-least-once allows. */
    kafka_of(s)->tombstone_pending = false;
    return PGCDC_OK;
}

static uint64_t kafka_resume_lsn(struct pgcdc_sink *s)
{
    (void)s;
    return 0;
}

static void kafka_free(struct pgcdc_sink_kafka *k)
{
    for (size_t i = 0; i < k->topics_cap; i++) {
        if (!k->topics[i].name)
            continue;
        rd_kafka_topic_destroy(k->topics[i].rkt);
        free(k->topics[i].name);
    }
    free(k->topics);
    if (k->rk)
        rd_kafka_destroy(k->rk);
    pgcdc_buf_free(&k->topic);
    free(k->prefix);
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

/* ---- configuration ---- */

/*
 * Set key=value the way kcat's -X does: a topic property if librdkafka knows it as one,
 * otherwise a global one. librdkafka's message names the key; for a secret key it is
 * replaced so the value can never leak.
 */
static int kafka_conf_set(rd_kafka_conf_t *conf, rd_kafka_topic_conf_t *tconf, const char *key,
                          const char *value, char *err, size_t errlen)
{
    char why[512], full[256];
    rd_kafka_conf_res_t res;

    res = rd_kafka_topic_conf_set(tconf, key, value, why, sizeof(why));
    if (res == RD_KAFKA_CONF_UNKNOWN)
        res = rd_kafka_conf_set(conf, key, value, why, sizeof(why));
    if (res == RD_KAFKA_CONF_OK)
        return PGCDC_OK;

    snprintf(full, sizeof(full), "kafka.%s", key);
    if (res == RD_KAFKA_CONF_UNKNOWN)
        snprintf(err, errlen,
                 "kafka.%s: not a librdkafka configuration property; see librdkafka's "
                 "CONFIGURATION.md for the names",
                 key);
    else if (pgcdc_config_key_is_secret(full))
        /* librdkafka quotes the value in its message: never for a secret. */
        snprintf(err, errlen, "kafka.%s: invalid value (not shown: the key holds a secret)", key);
    else
        snprintf(err, errlen, "kafka.%s: %s", key, why);
    return PGCDC_ERR_CONFIG;
}

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
    rd_kafka_topic_conf_t *tconf = NULL;
    char why[512], val[64];
    size_t vlen;
    int rc = PGCDC_ERR;

    *out = NULL;
    if (!kafka_user_set(cfg, "bootstrap.servers") && !kafka_user_set(cfg, "metadata.broker.list")) {
        snprintf(err, errlen,
                 "kafka.bootstrap.servers is not set; set it to the brokers' HOST:PORT list "
                 "(e.g. -o kafka.bootstrap.servers=localhost:9092)");
        return PGCDC_ERR_CONFIG;
    }
    if (!(k = calloc(1, sizeof(*k))) || !(k->prefix = strdup(cfg->sink_kafka_topic_prefix))) {
        snprintf(err, errlen, "kafka: out of memory");
        goto fail;
    }
    k->base.ops = &kafka_ops;
    k->base.split_key_changes = true;
    k->tombstones = cfg->sink_kafka_tombstones;

    conf = rd_kafka_conf_new();
    tconf = rd_kafka_topic_conf_new();
    if (!conf || !tconf) {
        snprintf(err, errlen, "kafka: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < sizeof(kafka_defaults) / sizeof(kafka_defaults[0]); i++) {
        const struct kafka_default *d = &kafka_defaults[i];
        rd_kafka_conf_res_t res =
            d->topic ? rd_kafka_topic_conf_set(tconf, d->key, d->value, why, sizeof(why))
                     : rd_kafka_conf_set(conf, d->key, d->value, why, sizeof(why));

        if (res != RD_KAFKA_CONF_OK) {
            snprintf(err, errlen, "kafka: built-in default %s=%s rejected: %s", d->key, d->value,
                     why);
            goto fail;
        }
    }
    for (size_t i = 0; i < cfg->nkafka; i++) {
        if ((rc = kafka_conf_set(conf, tconf, cfg->kafka[i].key, cfg->kafka[i].value, err,
                                 errlen)) < 0)
            goto fail;
    }
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

    vlen = sizeof(val);
    if (rd_kafka_conf_get(conf, "message.max.bytes", val, &vlen) == RD_KAFKA_CONF_OK)
        k->max_bytes = (size_t)strtoull(val, NULL, 10);

    /* rd_kafka_conf_set_default_topic_conf takes tconf; rd_kafka_new takes conf on success. */
    rd_kafka_conf_set_default_topic_conf(conf, tconf);
    tconf = NULL;
    k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!k->rk) {
        snprintf(err, errlen, "kafka: %s", why);
        rc = PGCDC_ERR_CONFIG;
        goto fail;
    }
    conf = NULL;
    /* Forward librdkafka's log lines to the main queue, served by rd_kafka_poll. */
    rd_kafka_set_log_queue(k->rk, NULL);

    *out = &k->base;
    return PGCDC_OK;

fail:
    if (tconf)
        rd_kafka_topic_conf_destroy(tconf);
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (k)
        kafka_free(k);
    return rc;
}
