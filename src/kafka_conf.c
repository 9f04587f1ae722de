/*
 * kafka_conf.c — the Kafka sink's librdkafka configuration: defaults, the kafka.* keys,
 * and the refusal of settings that weaken delivery (see kafka_conf.h, docs/kafka.md).
 */
#include "pgcdc/kafka_conf.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc/common.h"
#include "pgcdc/log.h"

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

/*
 * Set key=value the way kcat's -X does: a topic property if librdkafka knows it as one,
 * otherwise a global one. librdkafka's message names the key; for a secret key it is
 * replaced so the value can never leak.
 */
static int conf_set(rd_kafka_conf_t *conf, rd_kafka_topic_conf_t *tconf, const char *key,
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

/* A property's effective value (topic level first); "" when librdkafka has none. */
static const char *conf_get(const rd_kafka_conf_t *conf, const rd_kafka_topic_conf_t *tconf,
                            const char *key, char *buf, size_t len)
{
    size_t n = len;

    if (rd_kafka_topic_conf_get(tconf, key, buf, &n) == RD_KAFKA_CONF_OK)
        return buf;
    n = len;
    if (rd_kafka_conf_get(conf, key, buf, &n) == RD_KAFKA_CONF_OK)
        return buf;
    buf[0] = '\0';
    return buf;
}

/* A value of `key` that weakens delivery: equal to `value` (eq), or anything but it. */
struct weak_rule {
    const char *key;
    const char *value;
    bool eq;
    const char *why; /* %s: the value set */
};

static const struct weak_rule weak_rules[] = {
    /* librdkafka reports "all" as -1. */
    {"acks", "-1", false,
     "kafka.acks=%s lets a broker acknowledge a message before every in-sync replica has it, "
     "so losing that broker loses changes pgcdc confirmed (use all)"},
    {"message.timeout.ms", "0", false,
     "kafka.message.timeout.ms=%s fails the messages of a broker outage longer than that, and "
     "their resend lands behind later changes of the same key (use 0: never, pgcdc's default)"},
    {"retries", "0", true,
     "kafka.retries=%s fails a message on the first transient broker error, and its resend "
     "lands behind later changes of the same key"},
    {"queuing.strategy", "lifo", true,
     "kafka.queuing.strategy=%s sends newer messages first, reordering each key's changes"},
    {"partitioner", "random", true,
     "kafka.partitioner=%s spreads one key's changes over partitions, so their order is lost "
     "(use consistent_random, murmur2_random or fnv1a_random)"},
};

static void add_reason(char *why, size_t whylen, int *n, const char *fmt, const char *value)
{
    size_t used = strlen(why);

    if (used + 3 >= whylen)
        return;
    if (*n > 0) {
        snprintf(why + used, whylen - used, "; ");
        used += 2;
    }
    snprintf(why + used, whylen - used, fmt, value);
    (*n)++;
}

int pgcdc_kafka_conf_weaker(const rd_kafka_conf_t *conf, const rd_kafka_topic_conf_t *tconf,
                            char *why, size_t whylen)
{
    char val[64], inflight[32];
    int n = 0;

    why[0] = '\0';
    for (size_t i = 0; i < sizeof(weak_rules) / sizeof(weak_rules[0]); i++) {
        const struct weak_rule *r = &weak_rules[i];

        if ((strcmp(conf_get(conf, tconf, r->key, val, sizeof(val)), r->value) == 0) == r->eq)
            add_reason(why, whylen, &n, r->why, val);
    }
    /* librdkafka lowers the in-flight default to 5 only with idempotence on. */
    conf_get(conf, tconf, "max.in.flight.requests.per.connection", inflight, sizeof(inflight));
    if (strcmp(conf_get(conf, tconf, "enable.idempotence", val, sizeof(val)), "false") == 0 &&
        strtol(inflight, NULL, 10) > 1)
        add_reason(why, whylen, &n,
                   "kafka.enable.idempotence=false with %s requests in flight lets a retried "
                   "request land after a later one, reordering a key's changes (keep idempotence "
                   "on, or set kafka.max.in.flight.requests.per.connection=1)",
                   inflight);
    return n;
}

/* batch.size no larger than sink.kafka.max_message_bytes: the brokers refuse a whole batch
 * over the topic's limit, and librdkafka does not split it. */
static int cap_batch(const struct pgcdc_config *cfg, rd_kafka_conf_t *conf,
                     rd_kafka_topic_conf_t *tconf, struct pgcdc_kafka_sizes *sizes, char *err,
                     size_t errlen)
{
    char val[32], why[256];
    size_t batch;

    batch = (size_t)strtoull(conf_get(conf, tconf, "batch.size", val, sizeof(val)), NULL, 10);
    if (cfg->sink_kafka_max_message_bytes && batch > cfg->sink_kafka_max_message_bytes) {
        batch = (size_t)cfg->sink_kafka_max_message_bytes;
        snprintf(val, sizeof(val), "%zu", batch);
        if (rd_kafka_conf_set(conf, "batch.size", val, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
            snprintf(err, errlen, "sink.kafka.max_message_bytes: batch.size=%s rejected: %s", val,
                     why);
            return PGCDC_ERR_CONFIG;
        }
    }
    sizes->message_max_bytes =
        (size_t)strtoull(conf_get(conf, tconf, "message.max.bytes", val, sizeof(val)), NULL, 10);
    sizes->batch_max_bytes = batch < sizes->message_max_bytes ? batch : sizes->message_max_bytes;
    return PGCDC_OK;
}

int pgcdc_kafka_conf_build(const struct pgcdc_config *cfg, rd_kafka_conf_t **confp,
                           struct pgcdc_kafka_sizes *sizes, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_conf_t *tconf = rd_kafka_topic_conf_new();
    char why[1536];
    int rc = PGCDC_ERR;

    *confp = NULL;
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
    for (size_t i = 0; i < cfg->nkafka; i++)
        if ((rc = conf_set(conf, tconf, cfg->kafka[i].key, cfg->kafka[i].value, err, errlen)) < 0)
            goto fail;
    if (pgcdc_kafka_conf_weaker(conf, tconf, why, sizeof(why)) > 0) {
        if (!cfg->sink_kafka_allow_weaker_delivery) {
            snprintf(err, errlen,
                     "kafka settings weaken pgcdc's delivery guarantee: %s; change them, or set "
                     "sink.kafka.allow_weaker_delivery = true to accept the weaker guarantee",
                     why);
            rc = PGCDC_ERR_CONFIG;
            goto fail;
        }
        pgcdc_log(PGCDC_LOG_WARN,
                  "kafka: weaker delivery accepted (sink.kafka.allow_weaker_delivery = true)",
                  "detail", why, NULL);
    }
    if ((rc = cap_batch(cfg, conf, tconf, sizes, err, errlen)) < 0)
        goto fail;
    /* Takes tconf: every topic handle created with a NULL conf gets a copy. */
    rd_kafka_conf_set_default_topic_conf(conf, tconf);
    *confp = conf;
    return PGCDC_OK;

fail:
    if (tconf)
        rd_kafka_topic_conf_destroy(tconf);
    if (conf)
        rd_kafka_conf_destroy(conf);
    return rc;
}
