/*
 * config.h — settings from built-in defaults, a `key = value` file, PGCDC_<KEY> environment
 * variables and `-o KEY=VALUE`, in that order of precedence (later wins).
 *
 * Every string in struct pgcdc_config is owned by the config and released by
 * pgcdc_config_free. Keys under `kafka.` are not interpreted: they are kept in order in
 * `kafka` for the Kafka sink to hand to librdkafka.
 */
#ifndef PGCDC_CONFIG_H
#define PGCDC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/config_keys.h" /* the key table; pgcdc_config_key_is_secret */

enum pgcdc_snapshot_mode { PGCDC_SNAPSHOT_INITIAL = 0, PGCDC_SNAPSHOT_NEVER, PGCDC_SNAPSHOT_INITIAL_ONLY };
enum pgcdc_sink_type { PGCDC_SINK_FILE = 0, PGCDC_SINK_KAFKA, PGCDC_SINK_HTTP, PGCDC_SINK_S3 };
/* sink.s3.compression */
enum pgcdc_s3_compression { PGCDC_S3_GZIP = 0, PGCDC_S3_NONE };
/* replay.missing_rows: what an update or delete that matches no row in replay is. */
enum pgcdc_missing_rows { PGCDC_MISSING_ROWS_ERROR = 0, PGCDC_MISSING_ROWS_WARN };
/* What a sink does with an event its destination refuses for good. */
enum pgcdc_on_permanent_error { PGCDC_ON_ERROR_STOP = 0, PGCDC_ON_ERROR_DEAD_LETTER };
/* source.invalid_utf8: what a value that is not valid UTF-8 (a SQL_ASCII source) does. */
enum pgcdc_invalid_utf8 { PGCDC_INVALID_UTF8_ERROR = 0, PGCDC_INVALID_UTF8_REPLACE };

struct pgcdc_kv {
    char *key;   /* without the "kafka." prefix, e.g. "bootstrap.servers" */
    char *value;
};

/* The prefix of the one-key-per-header family: sink.http.header.<Name> = value. */
#define PGCDC_HTTP_HEADER_KEY "sink.http.header."

/* Set key to value in a kv array (copies both; a key set again is replaced in place).
 * Returns 0, or PGCDC_ERR on ENOMEM with the reason in err. */
int pgcdc_config_kv_set(struct pgcdc_kv **kv, size_t *n, const char *key, const char *value,
                        char *err, size_t errlen);
void pgcdc_config_kv_free(struct pgcdc_kv *kv, size_t n);

struct pgcdc_config {
    char *source_dsn;
    char *source_slot;
    bool source_create_slot;
    char *source_tables_include; /* NULL: all tables */
    char *source_tables_exclude; /* NULL: none */
    bool source_partitions_as_root; /* publish partitions' changes under their root table */
    enum pgcdc_snapshot_mode snapshot_mode;
    int snapshot_slot_timeout_ms; /* how long a temporary slot may wait for open transactions */
    int snapshot_workers;         /* reader connections and threads of a snapshot */
    uint64_t snapshot_chunk_pages; /* a table larger than this is read in ctid ranges (PG 14+) */
    enum pgcdc_sink_type sink_type;
    char *sink_file_dir;
    uint64_t sink_file_segment_bytes;
    char *sink_kafka_topic_prefix;
    bool sink_kafka_tombstones;
    int sink_kafka_on_permanent_error;      /* enum pgcdc_on_permanent_error */
    bool sink_kafka_allow_weaker_delivery;  /* accept kafka.* settings that weaken delivery */
    uint64_t sink_kafka_max_message_bytes;  /* 0: the topic's max.message.bytes from the brokers */
    struct pgcdc_kv *kafka;
    size_t nkafka;
    char *sink_http_url;
    int sink_http_batch_max_events;
    uint64_t sink_http_batch_max_bytes;
    int sink_http_linger_ms;
    int sink_http_timeout_ms;
    char *sink_http_ca_file;        /* NULL: the system's CA store */
    char *sink_http_signing_secret; /* NULL: requests are not signed */
    int sink_http_on_permanent_error; /* enum pgcdc_on_permanent_error */
    struct pgcdc_kv *http_headers; /* sink.http.header.<Name>: key is the Name, in order */
    size_t nhttp_headers;
    char *sink_s3_url;               /* s3://BUCKET[/PREFIX]; parsed by s3_conf.c */
    char *sink_s3_endpoint;          /* NULL: AWS for sink_s3_region */
    char *sink_s3_region;
    bool sink_s3_path_style;
    char *sink_s3_access_key_id;     /* NULL: AWS_ACCESS_KEY_ID */
    char *sink_s3_secret_access_key; /* secret; NULL: AWS_SECRET_ACCESS_KEY */
    char *sink_s3_session_token;     /* secret; NULL: AWS_SESSION_TOKEN */
    int sink_s3_flush_ms;
    uint64_t sink_s3_flush_bytes;    /* uncompressed bytes staged before a flush */
    int sink_s3_compression;         /* enum pgcdc_s3_compression */
    char *state_dir;
    int status_interval_ms;
    int source_slot_busy_timeout_ms; /* how long a slot held by another process is waited for */
    int source_invalid_utf8;         /* enum pgcdc_invalid_utf8 */
    int source_poll_interval_ms;     /* 0: stay connected; else sleep this long between polls */
    int source_idle_disconnect_ms;   /* poll mode: quiet this long, then disconnect */
    char *metrics_listen; /* NULL: off */
    int metrics_stall_ms; /* /healthz is 503 after this long without progress */
    int replay_missing_rows; /* enum pgcdc_missing_rows */
    char *migrate_pg_dump;   /* pg_dump for `pgcdc migrate`; pg_restore is found beside it */
    int migrate_jobs;        /* pg_restore -j for post-data */
    bool migrate_keep_segments; /* keep DIR/data's segments the target has applied */
    int log_level;        /* enum pgcdc_log_level */
    int log_format;       /* enum pgcdc_log_format */
};

/* Fill in the built-in defaults. Returns 0, or PGCDC_ERR on ENOMEM. */
int pgcdc_config_init(struct pgcdc_config *c);

/*
 * Set one key from `origin` (a file:line, "environment" or "-o", used in messages).
 * Unknown keys and bad values return PGCDC_ERR_CONFIG with a one-line message in err that
 * names the key and what is accepted. `${NAME}` in value is expanded from the environment;
 * an unset NAME is an error.
 */
int pgcdc_config_set(struct pgcdc_config *c, const char *key, const char *value,
                     const char *origin, char *err, size_t errlen);

/* Read a `key = value` file; `#` starts a comment. Errors name file:line. */
int pgcdc_config_load_file(struct pgcdc_config *c, const char *path, char *err, size_t errlen);

/* Apply PGCDC_<KEY> variables from envp (key upper-cased, '.' -> '_'). */
int pgcdc_config_load_env(struct pgcdc_config *c, char **envp, char *err, size_t errlen);

/* Apply "KEY=VALUE" as given to -o. */
int pgcdc_config_set_arg(struct pgcdc_config *c, const char *arg, char *err, size_t errlen);

/*
 * Whether dsn parses as a libpq connection string. If not, PGCDC_ERR_CONFIG with a message
 * naming `what` that never quotes the DSN (libpq's own message may quote the password).
 */
int pgcdc_config_check_dsn(const char *what, const char *dsn, char *err, size_t errlen);

/* Checks that need every key: source.dsn present, not a Neon -pooler host, etc. */
int pgcdc_config_validate(struct pgcdc_config *c, char *err, size_t errlen);

void pgcdc_config_free(struct pgcdc_config *c);

/*
 * Whether schema.table (unescaped names) is selected by source.tables.include/exclude.
 * Patterns are comma-separated "schema.table" globs where '*' matches any run of characters.
 */
bool pgcdc_config_table_selected(const struct pgcdc_config *c, const char *schema,
                                 const char *table);

#endif
