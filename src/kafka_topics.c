/*
 * kafka_topics.c — the Kafka sink's topic table and each topic's size limit; the contract
 * is in kafka_topics.h.
 *
 * The limit comes from DescribeConfigs, asked when a topic is first used. Its answer
 * arrives on a queue of our own, read without waiting: until it comes (and on clusters
 * that cannot answer, such as librdkafka's mock brokers, whose DescribeConfigs waits for a
 * controller that never comes), the sink measures messages against librdkafka's
 * message.max.bytes, and the brokers' own refusal is still handled on delivery.
 */
#include "pgcdc/kafka_topics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc/log.h"

/* Kafka's legal topic length. */
#define KAFKA_TOPIC_MAX 249

/* How long the brokers get to answer a DescribeConfigs; it never blocks the stream. */
#define KAFKA_DESCRIBE_TIMEOUT_MS 10000

/* A topic the brokers did not know yet (auto-created on first produce) is asked again. */
#define KAFKA_DESCRIBE_AGAIN_MS 10000

static uint64_t topic_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

int pgcdc_kafka_topics_init(struct pgcdc_kafka_topics *tt, rd_kafka_t *rk, const char *prefix,
                            bool describe, char *err, size_t errlen)
{
    memset(tt, 0, sizeof(*tt));
    tt->rk = rk;
    tt->describe = describe;
    if (!(tt->prefix = strdup(prefix)) || !(tt->adminq = rd_kafka_queue_new(rk))) {
        snprintf(err, errlen, "kafka: out of memory");
        pgcdc_kafka_topics_free(tt);
        return PGCDC_ERR;
    }
    return PGCDC_OK;
}

static int topics_grow(struct pgcdc_kafka_topics *tt)
{
    size_t ncap = tt->cap ? tt->cap * 2 : 64;
    struct pgcdc_kafka_topic **nt = calloc(ncap, sizeof(*nt));

    if (!nt)
        return PGCDC_ERR;
    for (size_t i = 0; i < tt->cap; i++) {
        struct pgcdc_kafka_topic *o = tt->slots[i];
        size_t j;

        if (!o)
            continue;
        j = topic_hash(o->name, strlen(o->name)) & (ncap - 1);
        while (nt[j])
            j = (j + 1) & (ncap - 1);
        nt[j] = o;
    }
    free(tt->slots);
    tt->slots = nt;
    tt->cap = ncap;
    return PGCDC_OK;
}

/*
 * Build <prefix>.<schema>.<table> into tt->name. Characters Kafka does not allow in a topic
 * name (anything but [A-Za-z0-9._-]) become '_', as Debezium does.
 */
static int topic_name(struct pgcdc_kafka_topics *tt, const char *schema, const char *table,
                      char *err, size_t errlen)
{
    struct pgcdc_buf *b = &tt->name;
    size_t start;

    pgcdc_buf_reset(b);
    if (pgcdc_buf_append_str(b, tt->prefix) < 0 || pgcdc_buf_append_char(b, '.') < 0)
        goto nomem;
    start = b->len;
    if (pgcdc_buf_append_str(b, schema) < 0 || pgcdc_buf_append_char(b, '.') < 0 ||
        pgcdc_buf_append_str(b, table) < 0)
        goto nomem;
    for (size_t i = start; i < b->len; i++) {
        char c = b->data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            b->data[i] = '_';
    }
    if (b->len > KAFKA_TOPIC_MAX) {
        snprintf(err, errlen,
                 "kafka: topic name for table %s.%s is %zu characters, over Kafka's limit of %d; "
                 "shorten sink.kafka.topic_prefix",
                 schema, table, b->len, KAFKA_TOPIC_MAX);
        return PGCDC_ERR;
    }
    return PGCDC_OK;
nomem:
    snprintf(err, errlen, "kafka: out of memory building a topic name");
    return PGCDC_ERR;
}

/* Ask the brokers for t's max.message.bytes; the AdminOptions' opaque carries t. */
static void topic_describe(struct pgcdc_kafka_topics *tt, struct pgcdc_kafka_topic *t)
{
    rd_kafka_ConfigResource_t *res;
    rd_kafka_AdminOptions_t *opts;
    char why[256];

    if (!tt->describe || t->asking)
        return;
    t->ask_again_ms = 0;
    res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, t->name);
    opts = rd_kafka_AdminOptions_new(tt->rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    if (res && opts &&
        rd_kafka_AdminOptions_set_request_timeout(opts, KAFKA_DESCRIBE_TIMEOUT_MS, why,
                                                  sizeof(why)) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_AdminOptions_set_opaque(opts, t);
        /* librdkafka copies the resource and the options. */
        rd_kafka_DescribeConfigs(tt->rk, &res, 1, opts, tt->adminq);
        t->asking = true;
    }
    if (res)
        rd_kafka_ConfigResource_destroy(res);
    if (opts)
        rd_kafka_AdminOptions_destroy(opts);
}

/* One DescribeConfigs answer: t's limit, or why there is none. */
static void topic_described(struct pgcdc_kafka_topics *tt, rd_kafka_event_t *ev)
{
    struct pgcdc_kafka_topic *t = rd_kafka_event_opaque(ev);
    const rd_kafka_DescribeConfigs_result_t *result = rd_kafka_event_DescribeConfigs_result(ev);
    const rd_kafka_ConfigResource_t **res;
    const rd_kafka_ConfigEntry_t **entries;
    size_t nres = 0, nent = 0;
    rd_kafka_resp_err_t e;

    if (!t || !result)
        return;
    t->asking = false;
    if ((e = rd_kafka_event_error(ev)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* The cluster cannot answer (no controller reachable in time, no DescribeConfigs
         * support or permission): do not keep asking for every topic. */
        if (tt->describe)
            pgcdc_log(PGCDC_LOG_WARN,
                      "kafka: cannot read the topics' max.message.bytes from the brokers; "
                      "messages are measured against kafka.message.max.bytes only (set "
                      "sink.kafka.max_message_bytes to the topics' limit)",
                      "error", rd_kafka_err2name(e), "reason", rd_kafka_event_error_string(ev),
                      NULL);
        tt->describe = false;
        return;
    }
    res = rd_kafka_DescribeConfigs_result_resources(result, &nres);
    if (nres < 1)
        return;
    if ((e = rd_kafka_ConfigResource_error(res[0])) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* Most often a topic not created yet: its first message creates it. */
        if (e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            t->ask_again_ms = pgcdc_mono_ms() + KAFKA_DESCRIBE_AGAIN_MS;
        pgcdc_log(PGCDC_LOG_DEBUG, "kafka: no max.message.bytes for topic", "topic", t->name,
                  "error", rd_kafka_err2name(e), NULL);
        return;
    }
    entries = rd_kafka_ConfigResource_configs(res[0], &nent);
    for (size_t i = 0; i < nent; i++) {
        const char *v = rd_kafka_ConfigEntry_value(entries[i]);

        if (strcmp(rd_kafka_ConfigEntry_name(entries[i]), "max.message.bytes") == 0 && v) {
            t->limit = (size_t)strtoull(v, NULL, 10);
            pgcdc_log(PGCDC_LOG_DEBUG, "kafka: topic limit", "topic", t->name, "max.message.bytes",
                      v, NULL);
        }
    }
}

void pgcdc_kafka_topics_poll(struct pgcdc_kafka_topics *tt)
{
    rd_kafka_event_t *ev;

    while ((ev = rd_kafka_queue_poll(tt->adminq, 0))) {
        topic_described(tt, ev);
        rd_kafka_event_destroy(ev);
    }
}

/* The topic named in tt->name, created on first use. */
static struct pgcdc_kafka_topic *topic_find(struct pgcdc_kafka_topics *tt, char *err, size_t errlen)
{
    const char *name = tt->name.data;
    struct pgcdc_kafka_topic *t;
    size_t j;

    if (tt->cap) {
        j = topic_hash(name, tt->name.len) & (tt->cap - 1);
        for (; tt->slots[j]; j = (j + 1) & (tt->cap - 1))
            if (strcmp(tt->slots[j]->name, name) == 0)
                return tt->slots[j];
    }
    if ((tt->n + 1) * 2 > tt->cap && topics_grow(tt) < 0)
        goto nomem;
    if (!(t = calloc(1, sizeof(*t))) || !(t->name = strdup(name))) {
        free(t);
        goto nomem;
    }
    /* NULL conf: the handle takes the default topic conf given at rd_kafka_new. */
    if (!(t->rkt = rd_kafka_topic_new(tt->rk, name, NULL))) {
        snprintf(err, errlen, "kafka: cannot create a handle for topic %s: %s", name,
                 rd_kafka_err2str(rd_kafka_last_error()));
        free(t->name);
        free(t);
        return NULL;
    }
    j = topic_hash(name, tt->name.len) & (tt->cap - 1);
    while (tt->slots[j])
        j = (j + 1) & (tt->cap - 1);
    tt->slots[j] = t;
    tt->n++;
    topic_describe(tt, t);
    return t;
nomem:
    snprintf(err, errlen, "kafka: out of memory caching topic %s", name);
    return NULL;
}

struct pgcdc_kafka_topic *pgcdc_kafka_topics_get(struct pgcdc_kafka_topics *tt, const char *schema,
                                                 const char *table, char *err, size_t errlen)
{
    struct pgcdc_kafka_topic *t;

    if (tt->last && strcmp(schema, tt->last_schema) == 0 && strcmp(table, tt->last_table) == 0) {
        t = tt->last;
    } else {
        size_t ls = strlen(schema), lt = strlen(table);

        if (topic_name(tt, schema, table, err, errlen) < 0 || !(t = topic_find(tt, err, errlen)))
            return NULL;
        tt->last = NULL; /* cached only when both names fit */
        if (ls < PGCDC_KAFKA_NAME_CACHE && lt < PGCDC_KAFKA_NAME_CACHE) {
            memcpy(tt->last_schema, schema, ls + 1);
            memcpy(tt->last_table, table, lt + 1);
            tt->last = t;
        }
    }
    if (t->ask_again_ms && pgcdc_mono_ms() >= t->ask_again_ms)
        topic_describe(tt, t);
    return t;
}

void pgcdc_kafka_topics_free(struct pgcdc_kafka_topics *tt)
{
    /* Requests still under way carry topic pointers: their answers go with the queue. */
    if (tt->adminq)
        rd_kafka_queue_destroy(tt->adminq);
    for (size_t i = 0; i < tt->cap; i++) {
        if (!tt->slots[i])
            continue;
        rd_kafka_topic_destroy(tt->slots[i]->rkt);
        free(tt->slots[i]->name);
        free(tt->slots[i]);
    }
    free(tt->slots);
    pgcdc_buf_free(&tt->name);
    free(tt->prefix);
    memset(tt, 0, sizeof(*tt));
}
