/*
 * sink_kafka.h — events to Kafka with librdkafka: topic <prefix>.<schema>.<table>, key the
 * primary key JSON, headers pgcdc.lsn / pgcdc.commit_lsn / pgcdc.txid / pgcdc.op, a
 * tombstone after each delete. Idempotent producer, acks=all by default. A message counts
 * as durable only when its delivery report says so.
 */
#ifndef PGCDC_SINK_KAFKA_H
#define PGCDC_SINK_KAFKA_H

#include <stddef.h>

#include "pgcdc/config.h"
#include "pgcdc/sink.h"

/*
 * Create the producer from cfg (kafka.* keys passed through, topic config first, then
 * global, as kcat does). The caller owns *out and releases it with (*out)->ops->close.
 * A bad kafka.* key or value returns PGCDC_ERR_CONFIG naming it.
 */
int pgcdc_sink_kafka_open(struct pgcdc_sink **out, const struct pgcdc_config *cfg, char *err,
                          size_t errlen);

#endif
