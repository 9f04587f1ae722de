/*
 * kafka_conf.h — librdkafka's configuration for the Kafka sink: pgcdc's producer defaults,
 * the user's kafka.* keys passed through, and the check that refuses settings which would
 * weaken at-least-once delivery or per-key order (docs/kafka.md lists them) unless
 * sink.kafka.allow_weaker_delivery is on.
 */
#ifndef PGCDC_KAFKA_CONF_H
#define PGCDC_KAFKA_CONF_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "pgcdc/config.h"

/* Sizes the sink needs from the finished configuration. */
struct pgcdc_kafka_sizes {
    size_t message_max_bytes; /* librdkafka's message.max.bytes: its own per-message ceiling */
    size_t batch_max_bytes;   /* the most one produce batch holds: min(batch.size, the above) */
};

/*
 * Build *conf, with its default topic configuration attached, from cfg: pgcdc's defaults,
 * then each kafka.* key (a topic property if librdkafka knows it as one, else a global one,
 * as kcat -X does), then batch.size capped at sink.kafka.max_message_bytes when that is
 * set. A bad kafka.* key or value, or a setting that weakens delivery while
 * sink.kafka.allow_weaker_delivery is off, is PGCDC_ERR_CONFIG naming it; a secret's value
 * never appears. On success the caller owns *conf (rd_kafka_new takes it); on failure
 * nothing is left.
 */
int pgcdc_kafka_conf_build(const struct pgcdc_config *cfg, rd_kafka_conf_t **conf,
                           struct pgcdc_kafka_sizes *sizes, char *err, size_t errlen);

/*
 * The settings of conf/tconf that weaken at-least-once delivery or per-key order, each
 * with why, joined by "; " into why (empty when none). Returns how many there are.
 */
int pgcdc_kafka_conf_weaker(const rd_kafka_conf_t *conf, const rd_kafka_topic_conf_t *tconf,
                            char *why, size_t whylen);

#endif
