/*
 * test_sink_kafka.c — the Kafka sink against librdkafka's in-process mock cluster (real
 * protocol over loopback TCP): configuration errors, message shape (topic, key, headers,
 * tombstones), acknowledgement through the transaction tracker, broker outage,
 * back-pressure, oversized messages rejected locally and by the brokers, settings that
 * weaken delivery, and the dead letters.
 */
#include <dirent.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "pgcdc/common.h"
#include "pgcdc/config.h"
#include "pgcdc/kafka_conf.h"
#include "pgcdc/log.h"
#include "pgcdc/metrics.h"
#include "pgcdc/sink.h"
#include "pgcdc/sink_kafka.h"
#include "pgcdc/txn_track.h"
#include "unit.h"

static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mock;
static const char *bootstrap;

static void mock_start(void)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    rd_kafka_conf_set(conf, "log_level", "2", errstr, sizeof(errstr));
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    mock = rd_kafka_mock_cluster_new(mock_rk, 3);
    bootstrap = rd_kafka_mock_cluster_bootstraps(mock);
}

static void mock_all(int up)
{
    for (int b = 1; b <= 3; b++)
        up ? rd_kafka_mock_broker_set_up(mock, b) : rd_kafka_mock_broker_set_down(mock, b);
}

/* A config with the mock as bootstrap plus NULL-terminated key, value pairs. */
static void cfg_make(struct pgcdc_config *c, const char *prefix, ...)
{
    char err[512];
    va_list ap;
    const char *k, *v;

    pgcdc_config_init(c);
    pgcdc_config_set(c, "kafka.bootstrap.servers", bootstrap, "test", err, sizeof(err));
    pgcdc_config_set(c, "sink.kafka.topic_prefix", prefix, "test", err, sizeof(err));
    va_start(ap, prefix);
    while ((k = va_arg(ap, const char *)) && (v = va_arg(ap, const char *)))
        CHECK_INT_EQ(pgcdc_config_set(c, k, v, "test", err, sizeof(err)), 0);
    va_end(ap);
}

static struct pgcdc_record rec(const char *table, char op, const char *key, const char *value,
                               uint64_t lsn)
{
    return (struct pgcdc_record){.schema = "public",
                                 .table = table,
                                 .op = op,
                                 .key = key,
                                 .key_len = key ? strlen(key) : 0,
                                 .value = value,
                                 .value_len = value ? strlen(value) : 0,
                                 .lsn = lsn,
                                 .commit_lsn = lsn + 100,
                                 .xid = 741};
}

struct got {
    int partition;
    char key[64];
    bool has_key;
    char value[256];
    bool has_value;
    char lsn[24], commit_lsn[24], txid[16], op[4];
};

static void hdr(rd_kafka_message_t *m, const char *name, char *out, size_t len)
{
    rd_kafka_headers_t *h;
    const void *v;
    size_t n;

    out[0] = '\0';
    if (rd_kafka_message_headers(m, &h) == 0 && rd_kafka_header_get_last(h, name, &v, &n) == 0)
        snprintf(out, len, "%.*s", (int)n, (const char *)v);
}

/* Read every message of topic (partitions 0..nparts-1) from the beginning. */
static int consume(const char *topic, int nparts, struct got *out, int max)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(nparts);
    int n = 0, idle = 0;

    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "group.id", "test", errstr, sizeof(errstr));
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    for (int p = 0; p < nparts; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    while (n < max && idle < 20) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);

        if (!m) {
            idle++;
            continue;
        }
        if (!m->err) {
            struct got *g = &out[n++];

            idle = 0;
            memset(g, 0, sizeof(*g));
            g->partition = m->partition;
            g->has_key = m->key != NULL;
            if (m->key)
                snprintf(g->key, sizeof(g->key), "%.*s", (int)m->key_len, (const char *)m->key);
            g->has_value = m->payload != NULL;
            if (m->payload)
                snprintf(g->value, sizeof(g->value), "%.*s", (int)m->len, (const char *)m->payload);
            hdr(m, "pgcdc.lsn", g->lsn, sizeof(g->lsn));
            hdr(m, "pgcdc.commit_lsn", g->commit_lsn, sizeof(g->commit_lsn));
            hdr(m, "pgcdc.txid", g->txid, sizeof(g->txid));
            hdr(m, "pgcdc.op", g->op, sizeof(g->op));
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return n;
}

static struct pgcdc_sink *open_sink(struct pgcdc_config *c, struct pgcdc_txn_track **t)
{
    struct pgcdc_sink *s = NULL;
    char err[512];
    int rc = pgcdc_sink_kafka_open(&s, c, err, sizeof(err));

    CHECK_INT_EQ(rc, 0);
    if (rc)
        fprintf(stderr, "open: %s\n", err);
    *t = pgcdc_txn_track_new(64, 1000);
    if (s) {
        s->track = *t;
        CHECK(s->split_key_changes);
        CHECK_U64_EQ(s->ops->resume_lsn(s), 0);
    }
    return s;
}

static void test_config_errors(void)
{
    struct pgcdc_config c;
    struct pgcdc_sink *s = NULL;
    char err[512];

    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_sink_kafka_open(&s, &c, err, sizeof(err)), PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "kafka.bootstrap.servers");
    pgcdc_config_free(&c);

    cfg_make(&c, "p", "kafka.no.such.property", "1", NULL);
    CHECK_INT_EQ(pgcdc_sink_kafka_open(&s, &c, err, sizeof(err)), PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "kafka.no.such.property");
    pgcdc_config_free(&c);

    cfg_make(&c, "p", "kafka.compression.codec", "bogus-codec", NULL);
    CHECK_INT_EQ(pgcdc_sink_kafka_open(&s, &c, err, sizeof(err)), PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "kafka.compression.codec");
    pgcdc_config_free(&c);

    /* A secret's value never appears, even when librdkafka would quote it. */
    cfg_make(&c, "p", "kafka.sasl.password", "hunter2-secret-value", "kafka.ssl.key.password",
             "hunter3", "kafka.enable.ssl.certificate.verification", "hunter4", NULL);
    CHECK_INT_EQ(pgcdc_sink_kafka_open(&s, &c, err, sizeof(err)), PGCDC_ERR_CONFIG);
    CHECK_NOT_CONTAINS(err, "hunter2");
    CHECK_NOT_CONTAINS(err, "hunter3");
    pgcdc_config_free(&c);

    /* Conflicts found when the producer is built are configuration errors too. */
    cfg_make(&c, "p", "kafka.max.in.flight.requests.per.connection", "6", NULL);
    CHECK_INT_EQ(pgcdc_sink_kafka_open(&s, &c, err, sizeof(err)), PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "max.in.flight");
    pgcdc_config_free(&c);
}

/* Open with the NULL-terminated key, value pairs and expect exit 2 naming `needle`, then
 * the same with sink.kafka.allow_weaker_delivery = true and expect a producer. */
static void expect_weaker(const char *needle, ...)
{
    struct pgcdc_config c;
    struct pgcdc_sink *s = NULL;
    char err[1024];
    const char *k, *v;
    va_list ap;

    for (int allow = 0; allow <= 1; allow++) {
        cfg_make(&c, "p", NULL);
        va_start(ap, needle);
        while ((k = va_arg(ap, const char *)) && (v = va_arg(ap, const char *)))
            CHECK_INT_EQ(pgcdc_config_set(&c, k, v, "test", err, sizeof(err)), 0);
        va_end(ap);
        if (allow)
            pgcdc_config_set(&c, "sink.kafka.allow_weaker_delivery", "true", "test", err,
                             sizeof(err));
        err[0] = '\0';
        int rc = pgcdc_sink_kafka_open(&s, &c, err, sizeof(err));
        CHECK_INT_EQ(rc, allow ? 0 : PGCDC_ERR_CONFIG);
        if (!allow) {
            CHECK_CONTAINS(err, needle);
            CHECK_CONTAINS(err, "sink.kafka.allow_weaker_delivery = true");
            if (!strstr(err, needle))
                fprintf(stderr, "    %s\n", err);
        }
        if (rc == 0 && s)
            s->ops->close(s);
        s = NULL;
        pgcdc_config_free(&c);
    }
}

/* Settings that weaken at-least-once or per-key order are exit 2 unless allowed. */
static void test_weaker_delivery(void)
{
    struct pgcdc_config c;
    struct pgcdc_sink *s = NULL;
    char err[1024];

    /* With idempotence off, which librdkafka alone would accept. */
    expect_weaker("kafka.acks=1", "kafka.acks", "1", "kafka.enable.idempotence", "false",
                  "kafka.max.in.flight", "1", NULL);
    expect_weaker("kafka.acks=0", "kafka.request.required.acks", "0", "kafka.enable.idempotence",
                  "false", "kafka.max.in.flight", "1", NULL);
    expect_weaker("kafka.enable.idempotence=false with 1000000 requests in flight",
                  "kafka.enable.idempotence", "false", NULL);
    expect_weaker("kafka.enable.idempotence=false with 2 requests in flight",
                  "kafka.enable.idempotence", "false", "kafka.max.in.flight", "2", NULL);
    expect_weaker("kafka.message.timeout.ms=60000", "kafka.message.timeout.ms", "60000", NULL);
    expect_weaker("kafka.message.timeout.ms=300000", "kafka.delivery.timeout.ms", "300000", NULL);
    expect_weaker("kafka.retries=0", "kafka.enable.idempotence", "false", "kafka.max.in.flight",
                  "1", "kafka.retries", "0", NULL);
    expect_weaker("kafka.queuing.strategy=lifo", "kafka.enable.idempotence", "false",
                  "kafka.max.in.flight", "1", "kafka.queuing.strategy", "lifo", NULL);
    expect_weaker("kafka.partitioner=random", "kafka.partitioner", "random", NULL);

    /* What the hints suggest is safe: idempotence off with one request in flight, and
     * other partitioners. Compression and batching are fine. */
    cfg_make(&c, "p", "kafka.enable.idempotence", "false",
             "kafka.max.in.flight.requests.per.connection", "1", "kafka.partitioner",
             "murmur2_random", "kafka.compression.codec", "zstd", "kafka.linger.ms", "50", NULL);
    CHECK_INT_EQ(pgcdc_sink_kafka_open(&s, &c, err, sizeof(err)), 0);
    if (s)
        s->ops->close(s);
    pgcdc_config_free(&c);
}

/* sink.kafka.max_message_bytes caps librdkafka's batch.size: a batch never exceeds it. */
static void test_conf_sizes(void)
{
    struct pgcdc_config c;
    struct pgcdc_kafka_sizes sz;
    rd_kafka_conf_t *conf;
    char err[512], val[32];
    size_t n = sizeof(val);

    cfg_make(&c, "p", NULL);
    CHECK_INT_EQ(pgcdc_kafka_conf_build(&c, &conf, &sz, err, sizeof(err)), 0);
    CHECK_U64_EQ(sz.message_max_bytes, 1000000);
    CHECK_U64_EQ(sz.batch_max_bytes, 1000000);
    rd_kafka_conf_destroy(conf);
    pgcdc_config_free(&c);

    cfg_make(&c, "p", "sink.kafka.max_message_bytes", "5000", NULL);
    CHECK_INT_EQ(pgcdc_kafka_conf_build(&c, &conf, &sz, err, sizeof(err)), 0);
    CHECK_U64_EQ(sz.batch_max_bytes, 5000);
    CHECK_INT_EQ(rd_kafka_conf_get(conf, "batch.size", val, &n), RD_KAFKA_CONF_OK);
    CHECK_STR_EQ(val, "5000");
    rd_kafka_conf_destroy(conf);
    pgcdc_config_free(&c);
}

static void test_content(void)
{
    struct pgcdc_config c;
    struct pgcdc_txn_track *t;
    struct pgcdc_sink *s;
    struct pgcdc_txn_meta txn = {.xid = 741, .commit_lsn = 2100, .end_lsn = 2200};
    struct pgcdc_record r;
    struct got g[16];
    char err[512];
    int n;

    cfg_make(&c, "ct", NULL);
    rd_kafka_mock_topic_create(mock, "ct.public.users", 1, 3);
    rd_kafka_mock_topic_create(mock, "ct.public.nokey", 1, 3);
    s = open_sink(&c, &t);
    if (!s)
        return;

    CHECK_INT_EQ(pgcdc_txn_track_begin(t, txn.end_lsn), 0);
    CHECK_INT_EQ(s->ops->begin(s, &txn, err, sizeof(err)), 0);
    r = rec("users", 'c', "{\"id\":1}", "{\"op\":\"c\"}", 2000);
    CHECK_INT_EQ(s->ops->write(s, &r, err, sizeof(err)), 0);
    r = rec("users", 'd', "{\"id\":1}", "{\"op\":\"d\"}", 2010);
    CHECK_INT_EQ(s->ops->write(s, &r, err, sizeof(err)), 0);
    r = rec("nokey", 'd', NULL, "{\"op\":\"d\",\"nokey\":1}", 2020);
    CHECK_INT_EQ(s->ops->write(s, &r, err, sizeof(err)), 0);
    CHECK_INT_EQ(s->ops->commit(s, &txn, err, sizeof(err)), 0);
    pgcdc_txn_track_commit(t);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 1000);
    CHECK_INT_EQ(s->ops->flush(s, 10000, err, sizeof(err)), 0);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 2200);

    n = consume("ct.public.users", 1, g, 16);
    CHECK_INT_EQ(n, 3);
    if (n == 3) {
        CHECK_STR_EQ(g[0].key, "{\"id\":1}");
        CHECK_STR_EQ(g[0].value, "{\"op\":\"c\"}");
        CHECK_STR_EQ(g[0].lsn, "2000");
        CHECK_STR_EQ(g[0].commit_lsn, "2100");
        CHECK_STR_EQ(g[0].txid, "741");
        CHECK_STR_EQ(g[0].op, "c");
        CHECK_STR_EQ(g[1].op, "d");
        CHECK_STR_EQ(g[1].lsn, "2010");
        CHECK(g[1].has_value);
        /* The tombstone: same key and headers, null value. */
        CHECK_STR_EQ(g[2].key, "{\"id\":1}");
        CHECK(!g[2].has_value);
        CHECK_STR_EQ(g[2].op, "d");
        CHECK_STR_EQ(g[2].lsn, "2010");
        CHECK_STR_EQ(g[2].commit_lsn, "2110");
    }
    /* No key: no tombstone (it could never compact anything). */
    n = consume("ct.public.nokey", 1, g, 16);
    CHECK_INT_EQ(n, 1);
    if (n == 1)
        CHECK(!g[0].has_key);

    s->ops->close(s);
    pgcdc_txn_track_free(t);
    pgcdc_config_free(&c);

    /* sink.kafka.tombstones=false: the delete alone. */
    cfg_make(&c, "nt", "sink.kafka.tombstones", "false", NULL);
    rd_kafka_mock_topic_create(mock, "nt.public.users", 1, 3);
    s = open_sink(&c, &t);
    if (!s)
        return;
    pgcdc_txn_track_begin(t, 3000);
    r = rec("users", 'd', "{\"id\":1}", "{\"op\":\"d\"}", 2900);
    CHECK_INT_EQ(s->ops->write(s, &r, err, sizeof(err)), 0);
    pgcdc_txn_track_commit(t);
    CHECK_INT_EQ(s->ops->flush(s, 10000, err, sizeof(err)), 0);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 3000);
    CHECK_INT_EQ(consume("nt.public.users", 1, g, 16), 1);
    s->ops->close(s);
    pgcdc_txn_track_free(t);
    pgcdc_config_free(&c);
}

/* Brokers down: nothing is confirmed; back up: everything is, with back-pressure between. */
static void test_outage_and_backpressure(void)
{
    struct pgcdc_config c;
    struct pgcdc_txn_track *t;
    struct pgcdc_sink *s;
    struct pgcdc_record r;
    struct got g[64];
    char err[512], val[64];
    int again = 0, rc;

    cfg_make(&c, "out", "kafka.queue.buffering.max.messages", "5", NULL);
    rd_kafka_mock_topic_create(mock, "out.public.t", 3, 3);
    s = open_sink(&c, &t);
    if (!s)
        return;
    /* Connect once, so the outage hits a running producer. */
    pgcdc_txn_track_begin(t, 1100);
    r = rec("t", 'c', "{\"id\":0}", "{\"i\":0}", 1050);
    CHECK_INT_EQ(s->ops->write(s, &r, err, sizeof(err)), 0);
    pgcdc_txn_track_commit(t);
    CHECK_INT_EQ(s->ops->flush(s, 10000, err, sizeof(err)), 0);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 1100);

    mock_all(0);
    for (int i = 1; i <= 9; i++) {
        pgcdc_txn_track_begin(t, 1100 + (uint64_t)i * 100);
        snprintf(val, sizeof(val), "{\"i\":%d}", i);
        r = rec("t", 'd', i % 2 ? "{\"id\":1}" : "{\"id\":2}", val, 1050 + (uint64_t)i * 100);
        /* Each delete is two messages: the queue of 5 fills and says so. */
        while ((rc = s->ops->write(s, &r, err, sizeof(err))) == PGCDC_AGAIN) {
            again++;
            CHECK_INT_EQ(s->ops->poll(s, 10, err, sizeof(err)), 0);
            if (again == 20)
                mock_all(1);
        }
        CHECK_INT_EQ(rc, 0);
        pgcdc_txn_track_commit(t);
        if (again < 20)
            CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 1100);
    }
    CHECK(again >= 20);
    CHECK_INT_EQ(s->ops->flush(s, 15000, err, sizeof(err)), 0);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 2000);
    CHECK(!pgcdc_txn_track_failed(t));
    /* Exactly once here: a tombstone that met a full queue did not resend its delete. */
    CHECK_INT_EQ(consume("out.public.t", 3, g, 64), 1 + 9 * 2);
    s->ops->close(s);
    pgcdc_txn_track_free(t);
    pgcdc_config_free(&c);
}

/* Flush with the brokers down returns back-pressure, not success, and confirms nothing. */
static void test_flush_timeout(void)
{
    struct pgcdc_config c;
    struct pgcdc_txn_track *t;
    struct pgcdc_sink *s;
    struct pgcdc_record r;
    char err[512];

    cfg_make(&c, "ft", NULL);
    s = open_sink(&c, &t);
    if (!s)
        return;
    mock_all(0);
    pgcdc_txn_track_begin(t, 1100);
    r = rec("t", 'c', "{\"id\":0}", "{}", 1050);
    CHECK_INT_EQ(s->ops->write(s, &r, err, sizeof(err)), 0);
    pgcdc_txn_track_commit(t);
    CHECK_INT_EQ(s->ops->flush(s, 500, err, sizeof(err)), PGCDC_AGAIN);
    CHECK_CONTAINS(err, "not yet acknowledged");
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 1000);
    s->ops->close(s); /* bounded, even with the brokers down */
    mock_all(1);
    pgcdc_txn_track_free(t);
    pgcdc_config_free(&c);
}

static void test_oversized_local(void)
{
    struct pgcdc_config c;
    struct pgcdc_txn_track *t;
    struct pgcdc_sink *s;
    struct pgcdc_record r;
    char err[512], *big = malloc(5001);

    memset(big, 'x', 5000);
    big[5000] = '\0';
    cfg_make(&c, "big", "kafka.message.max.bytes", "2000", NULL);
    s = open_sink(&c, &t);
    if (!s)
        return;
    pgcdc_txn_track_begin(t, 1100);
    r = rec("wide", 'c', "{\"id\":7}", big, 0x16B2F40);
    CHECK_INT_EQ(s->ops->write(s, &r, err, sizeof(err)), PGCDC_ERR);
    CHECK_CONTAINS(err, "public.wide");
    CHECK_CONTAINS(err, "big.public.wide");
    CHECK_CONTAINS(err, "0/16B2F40");
    CHECK_CONTAINS(err, "5008 bytes");
    CHECK_CONTAINS(err, "key {\"id\":7}");
    CHECK_CONTAINS(err, "kafka.message.max.bytes");
    pgcdc_txn_track_commit(t);
    CHECK(pgcdc_txn_track_failed(t));
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 1000);
    /* The sink stays failed: nothing after it can be confirmed either. */
    CHECK_INT_EQ(s->ops->sync(s, err, sizeof(err)), PGCDC_ERR);
    s->ops->close(s);
    pgcdc_txn_track_free(t);
    pgcdc_config_free(&c);
    free(big);
}

/* A sink whose brokers refuse the one record it was given. */
struct refusal {
    struct pgcdc_config c;
    struct pgcdc_txn_track *t;
    struct pgcdc_sink *s;
    char topic[64], err[1024];
};

/*
 * Opens a sink on topic <prefix>.public.t with the NULL-terminated key, value pairs of
 * settings (may be NULL), has the brokers fail its next Produce request with code, and
 * writes {"id":<id>} = value at lsn in transaction 1100. Returns false when the sink did
 * not open. refusal_close frees it either way.
 */
static bool refusal_write(struct refusal *x, const char *prefix, const char *const *settings,
                          rd_kafka_resp_err_t code, int id, const char *value, uint64_t lsn)
{
    struct pgcdc_record r;
    char key[32];

    memset(x, 0, sizeof(*x));
    snprintf(x->topic, sizeof(x->topic), "%s.public.t", prefix);
    snprintf(key, sizeof(key), "{\"id\":%d}", id);
    cfg_make(&x->c, prefix, NULL);
    for (size_t i = 0; settings && settings[i]; i += 2)
        CHECK_INT_EQ(
            pgcdc_config_set(&x->c, settings[i], settings[i + 1], "test", x->err, sizeof(x->err)),
            0);
    rd_kafka_mock_topic_create(mock, x->topic, 1, 3);
    x->s = open_sink(&x->c, &x->t);
    if (!x->s)
        return false;
    rd_kafka_mock_push_request_errors(mock, 0 /* Produce */, 1, code);
    pgcdc_txn_track_begin(x->t, 1100);
    r = rec("t", 'c', key, value, lsn);
    CHECK_INT_EQ(x->s->ops->write(x->s, &r, x->err, sizeof(x->err)), 0);
    pgcdc_txn_track_commit(x->t);
    return true;
}

static void refusal_close(struct refusal *x)
{
    if (x->s)
        x->s->ops->close(x->s);
    pgcdc_txn_track_free(x->t);
    pgcdc_config_free(&x->c);
}

/*
 * The brokers fail the one Produce request for topic <prefix>.public.t with `code` (the
 * sink configured with settings, as refusal_write): the poll returns `want` (PGCDC_ERR: a
 * failed transaction; PGCDC_ERR_RETRY: sent again, not failed) naming the topic and each of
 * `needles`, and nothing is acknowledged. The caller goes on with x, and closes it.
 */
static void check_delivery_fails(struct refusal *x, const char *prefix, const char *const *settings,
                                 rd_kafka_resp_err_t code, int want, const char *value,
                                 uint64_t lsn, const char *const *needles)
{
    int rc = 0;

    if (!refusal_write(x, prefix, settings, code, 1, value, lsn))
        return;
    for (int i = 0; i < 100 && rc == 0; i++)
        rc = x->s->ops->poll(x->s, 100, x->err, sizeof(x->err));
    CHECK_INT_EQ(rc, want);
    CHECK_CONTAINS(x->err, x->topic);
    for (size_t i = 0; needles[i]; i++)
        CHECK_CONTAINS(x->err, needles[i]);
    CHECK(pgcdc_txn_track_failed(x->t) == (want == PGCDC_ERR));
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(x->t), 1000);
}

/* A fresh directory for state.dir; the caller frees the path. */
static char *tmpdir(void)
{
    char *d = strdup("/tmp/pgcdc-unit-dl-XXXXXX");

    if (!mkdtemp(d))
        abort();
    return d;
}

/* The lines of the one dead-letter file under state_dir, NUL-terminated into buf. */
static int dead_letters(const char *state_dir, char *buf, size_t len)
{
    char path[512];
    struct dirent *de;
    DIR *d;
    int files = 0;

    buf[0] = '\0';
    snprintf(path, sizeof(path), "%s/dead-letter", state_dir);
    if (!(d = opendir(path)))
        return -1;
    while ((de = readdir(d))) {
        FILE *f;
        size_t n;

        if (de->d_name[0] == '.')
            continue;
        files++;
        snprintf(path, sizeof(path), "%s/dead-letter/%s", state_dir, de->d_name);
        CHECK(strlen(de->d_name) == strlen("2026-01-01.jsonl"));
        if ((f = fopen(path, "r"))) {
            n = fread(buf, 1, len - 1, f);
            buf[n] = '\0';
            fclose(f);
        }
    }
    closedir(d);
    return files;
}

/*
 * The brokers refuse a batch as too large (their max.message.bytes): the message shared
 * its batch, so it is retried, never acknowledged ok and never dead-lettered. After the
 * stream's reconnect (rewind, the tracker forgets, the record is offered again) it goes.
 */
static void test_refused_batch_is_retried(void)
{
    struct refusal x;
    struct got g[8];
    char dl[256], *state = tmpdir();
    const char *settings[] = {"sink.kafka.on_permanent_error", "dead_letter", "state.dir", state,
                              NULL};
    static const char *const needles[] = {"0/16B2F40", "refused a batch", NULL};
    struct pgcdc_record r = rec("t", 'c', "{\"id\":1}", "{\"a\":1}", 0x16B2F40);

    check_delivery_fails(&x, "rej", settings, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, PGCDC_ERR_RETRY,
                         r.value, r.lsn, needles);
    if (x.s) {
        struct pgcdc_sink *s = x.s;
        char *err = x.err;
        size_t errlen = sizeof(x.err);

        CHECK_INT_EQ(dead_letters(state, dl, sizeof(dl)), 0);
        /* What the stream does on PGCDC_ERR_RETRY: flush, rewind, forget, offer again. */
        CHECK_INT_EQ(s->ops->flush(s, 1000, err, errlen), PGCDC_ERR_RETRY);
        CHECK_INT_EQ(s->ops->rewind(s, err, errlen), 0);
        pgcdc_txn_track_abort_all(x.t);
        pgcdc_txn_track_begin(x.t, 1100);
        CHECK_INT_EQ(s->ops->write(s, &r, err, errlen), 0);
        pgcdc_txn_track_commit(x.t);
        CHECK_INT_EQ(s->ops->flush(s, 10000, err, errlen), 0);
        CHECK_U64_EQ(pgcdc_txn_track_confirmed(x.t), 1100);
        CHECK_INT_EQ(consume("rej.public.t", 1, g, 8), 1);
        CHECK_INT_EQ(dead_letters(state, dl, sizeof(dl)), 0);
    }
    refusal_close(&x);
    free(state);
}

/*
 * on_permanent_error = dead_letter: a message over sink.kafka.max_message_bytes is never
 * produced; it is in the dead-letter file, durable, before write returns; the metric
 * counts it; the rest of its transaction and the ones after it go to Kafka and are
 * confirmed.
 */
static void test_dead_letter(void)
{
    struct pgcdc_config c;
    struct pgcdc_txn_track *t;
    struct pgcdc_sink *s;
    struct pgcdc_record r;
    struct got g[8];
    char err[512], *big = malloc(5001), *dl = malloc(16384), *state = tmpdir();
    uint64_t before = atomic_load(&pgcdc_metrics.dead_letters);
    int n;

    memset(big, 'x', 5000);
    memcpy(big, "{\"v\":\"", 6);
    memcpy(big + 4998, "\"}", 2);
    big[5000] = '\0';
    cfg_make(&c, "dl", "sink.kafka.on_permanent_error", "dead_letter", "state.dir", state,
             "sink.kafka.max_message_bytes", "3000", NULL);
    rd_kafka_mock_topic_create(mock, "dl.public.t", 1, 3);
    s = open_sink(&c, &t);
    if (!s)
        return;
    pgcdc_txn_track_begin(t, 1100);
    r = rec("t", 'c', "{\"id\":1}", "{\"a\":1}", 1010);
    CHECK_INT_EQ(s->ops->write(s, &r, err, sizeof(err)), 0);
    r = rec("t", 'u', "{\"id\":2}", big, 0x16B2F40);
    CHECK_INT_EQ(s->ops->write(s, &r, err, sizeof(err)), 0);
    /* Durable before write returned. */
    CHECK_INT_EQ(dead_letters(state, dl, 16384), 1);
    CHECK_CONTAINS(dl, "{\"reason\":\"5008 bytes (key + value), over the limit of 3000 bytes "
                       "(sink.kafka.max_message_bytes) with Kafka's framing\",\"topic\":"
                       "\"dl.public.t\",\"key\":{\"id\":2},\"lsn\":23801664,"
                       "\"commit_lsn\":23801764,\"size\":5008,\"event\":{\"v\":\"xxx");
    CHECK_CONTAINS(dl, "xx\"}}\n");
    CHECK_U64_EQ(atomic_load(&pgcdc_metrics.dead_letters), before + 1);
    /* A delete whose event is refused still gets its (small) tombstone. */
    r = rec("t", 'd', "{\"id\":3}", big, 1030);
    CHECK_INT_EQ(s->ops->write(s, &r, err, sizeof(err)), 0);
    pgcdc_txn_track_commit(t);
    pgcdc_txn_track_begin(t, 1200);
    r = rec("t", 'c', "{\"id\":4}", "{\"a\":4}", 1150);
    CHECK_INT_EQ(s->ops->write(s, &r, err, sizeof(err)), 0);
    pgcdc_txn_track_commit(t);
    CHECK_INT_EQ(s->ops->flush(s, 10000, err, sizeof(err)), 0);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 1200);
    CHECK(!pgcdc_txn_track_failed(t));
    n = consume("dl.public.t", 1, g, 8);
    CHECK_INT_EQ(n, 3);
    if (n == 3) {
        CHECK_STR_EQ(g[0].key, "{\"id\":1}");
        CHECK_STR_EQ(g[1].key, "{\"id\":3}");
        CHECK(!g[1].has_value);
        CHECK_STR_EQ(g[2].key, "{\"id\":4}");
    }
    CHECK_INT_EQ(dead_letters(state, dl, 16384), 1);
    CHECK_U64_EQ(atomic_load(&pgcdc_metrics.dead_letters), before + 2);
    s->ops->close(s);
    pgcdc_txn_track_free(t);
    pgcdc_config_free(&c);
    free(big);
    free(dl);
    free(state);
}

/*
 * A message too large to share a batch (kafka.batch.size) that the brokers refuse was
 * refused alone, for good: with dead_letter it goes to the dead letters and is
 * acknowledged; with stop the sink fails naming topic, key, LSN and size.
 */
static void refused_alone(const char *mode)
{
    struct refusal x;
    char *big = malloc(1501), *dl = malloc(4096), *state = tmpdir(), prefix[16];
    const char *settings[] = {"sink.kafka.on_permanent_error",
                              mode,
                              "state.dir",
                              state,
                              "kafka.batch.size",
                              "1000",
                              NULL};
    bool stop = strcmp(mode, "stop") == 0;

    memset(big, 'y', 1500);
    memcpy(big, "{\"v\":\"", 6);
    memcpy(big + 1498, "\"}", 2);
    big[1500] = '\0';
    snprintf(prefix, sizeof(prefix), "al%s", mode);
    if (refusal_write(&x, prefix, settings, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, 9, big,
                      0x16B2F40)) {
        int rc = x.s->ops->flush(x.s, 10000, x.err, sizeof(x.err));

        if (stop) {
            CHECK_INT_EQ(rc, PGCDC_ERR);
            CHECK_CONTAINS(x.err, "alstop.public.t");
            CHECK_CONTAINS(x.err, "key {\"id\":9}");
            CHECK_CONTAINS(x.err, "0/16B2F40");
            CHECK_CONTAINS(x.err, "1508 bytes");
            CHECK_CONTAINS(x.err, "sink.kafka.on_permanent_error = dead_letter");
            CHECK(pgcdc_txn_track_failed(x.t));
            CHECK_U64_EQ(pgcdc_txn_track_confirmed(x.t), 1000);
        } else {
            CHECK_INT_EQ(rc, 0);
            CHECK_U64_EQ(pgcdc_txn_track_confirmed(x.t), 1100);
            CHECK_INT_EQ(dead_letters(state, dl, 4096), 1);
            CHECK_CONTAINS(dl, "\"topic\":\"aldead_letter.public.t\",\"key\":{\"id\":9}");
            CHECK_CONTAINS(dl, "refused by the brokers as too large");
            CHECK_CONTAINS(dl, "\"size\":1508,\"event\":{\"v\":\"yyy"); /* the value as it was */
        }
    }
    refusal_close(&x);
    free(big);
    free(dl);
    free(state);
}

static void test_refused_alone(void)
{
    refused_alone("stop");
    refused_alone("dead_letter");
}

/* A fatal producer error (here: the cluster refuses the idempotent producer an id) stops
 * the sink with the reason and the fix; nothing is acknowledged. */
static void test_fatal(void)
{
    struct pgcdc_config c;
    struct pgcdc_txn_track *t;
    struct pgcdc_sink *s;
    struct pgcdc_record r;
    char err[512];
    int rc = 0;

    rd_kafka_mock_push_request_errors(mock, 22 /* InitProducerId */, 1,
                                      RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED);
    cfg_make(&c, "fat", NULL);
    s = open_sink(&c, &t);
    if (!s)
        return;
    pgcdc_txn_track_begin(t, 1100);
    r = rec("t", 'c', "{\"id\":1}", "{}", 1050);
    rc = s->ops->write(s, &r, err, sizeof(err));
    pgcdc_txn_track_commit(t);
    for (int i = 0; i < 100 && rc == 0; i++)
        rc = s->ops->poll(s, 100, err, sizeof(err));
    CHECK_INT_EQ(rc, PGCDC_ERR);
    CHECK_CONTAINS(err, "fatal");
    CHECK_CONTAINS(err, "CLUSTER_AUTHORIZATION_FAILED");
    CHECK_CONTAINS(err, "IDEMPOTENT_WRITE");
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 1000);
    CHECK_INT_EQ(s->ops->flush(s, 1000, err, sizeof(err)), PGCDC_ERR);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 1000);
    s->ops->close(s);
    pgcdc_txn_track_free(t);
    pgcdc_config_free(&c);
}

/* A permanent delivery failure (no write permission on the topic). */
static void test_delivery_failure(void)
{
    static const char *const needles[] = {"WRITE", NULL};
    struct refusal x;

    check_delivery_fails(&x, "acl", NULL, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, PGCDC_ERR,
                         "{}", 1050, needles);
    refusal_close(&x);
}

int main(void)
{
    pgcdc_log_setup(PGCDC_LOG_WARN, PGCDC_LOG_TEXT);
    mock_start();
    test_config_errors();
    test_weaker_delivery();
    test_conf_sizes();
    test_content();
    test_outage_and_backpressure();
    test_flush_timeout();
    test_oversized_local();
    test_refused_batch_is_retried();
    test_dead_letter();
    test_refused_alone();
    test_fatal();
    test_delivery_failure();
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
    return UNIT_DONE();
}
