/*
 * kafka_topics.h — the Kafka sink's topics: the name of each table's topic, its librdkafka
 * handle, and its size limit (max.message.bytes) as the brokers report it through
 * DescribeConfigs, asked once per topic without ever blocking the stream.
 *
 * Single-threaded like the sink: answers are read by pgcdc_kafka_topics_poll.
 */
#ifndef PGCDC_KAFKA_TOPICS_H
#define PGCDC_KAFKA_TOPICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "pgcdc/common.h"

/* Room for a PostgreSQL name (at most 63 bytes) in the last-table cache. */
#define PGCDC_KAFKA_NAME_CACHE 128

struct pgcdc_kafka_topic {
    char *name; /* owned: <prefix>.<schema>.<table>, sanitized */
    rd_kafka_topic_t *rkt;
    size_t limit;         /* the topic's max.message.bytes; 0: not known (yet) */
    bool asking;          /* a DescribeConfigs for it is under way */
    int64_t ask_again_ms; /* 0: not again; else ask again from this monotonic time */
};

/* Every field is private to kafka_topics.c; the struct is public to live in the sink. */
struct pgcdc_kafka_topics {
    rd_kafka_t *rk;                   /* not owned */
    char *prefix;                     /* owned */
    struct pgcdc_kafka_topic **slots; /* owned, with each topic; open addressing */
    size_t n, cap;                    /* cap is a power of two */
    struct pgcdc_buf name;            /* reused */
    char last_schema[PGCDC_KAFKA_NAME_CACHE], last_table[PGCDC_KAFKA_NAME_CACHE];
    struct pgcdc_kafka_topic *last; /* consecutive rows mostly share a table */
    rd_kafka_queue_t *adminq;       /* owned: DescribeConfigs answers */
    bool describe;                  /* ask the brokers for each topic's limit */
};

/*
 * Set up an empty table for producer rk. describe: ask the brokers for each topic's
 * max.message.bytes (off when sink.kafka.max_message_bytes decides). Release with
 * pgcdc_kafka_topics_free before rk is destroyed.
 */
int pgcdc_kafka_topics_init(struct pgcdc_kafka_topics *tt, rd_kafka_t *rk, const char *prefix,
                            bool describe, char *err, size_t errlen);

/*
 * The topic of schema.table, created on first use (its limit asked for then). Characters
 * Kafka does not allow in a topic name become '_'. NULL with the reason in err (a name
 * over Kafka's 249 characters, out of memory). The topic is owned by tt. A topic the
 * brokers did not know when asked (created by its first message) is asked again later.
 */
struct pgcdc_kafka_topic *pgcdc_kafka_topics_get(struct pgcdc_kafka_topics *tt, const char *schema,
                                                 const char *table, char *err, size_t errlen);

/* Read the DescribeConfigs answers that arrived; never waits. */
void pgcdc_kafka_topics_poll(struct pgcdc_kafka_topics *tt);

void pgcdc_kafka_topics_free(struct pgcdc_kafka_topics *tt);

#endif
