/*
 * config_keys.c — every configuration key pgcdc knows, with its default and what it
 * accepts, the lookups by name, by nearest name and by environment variable, and which keys
 * hold secrets.
 *
 * config/pgcdc.conf.example documents the same keys for people; test_config checks that it
 * names every key here and shows each default as this table has it.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "pgcdc/common.h"
#include "pgcdc/config.h"
#include "pgcdc/config_keys.h"

static const char *const snapshot_names[] = {"initial", "never", "initial_only", NULL};
static const char *const sink_names[] = {"file", "kafka", "http", "s3", NULL};
static const char *const invalid_utf8_names[] = {"error", "replace", NULL};
/* In the order of enum pgcdc_s3_compression. */
static const char *const s3_compression_names[] = {"gzip", "none", NULL};
/* In the order of enum pgcdc_log_level and enum pgcdc_log_format. */
static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const format_names[] = {"text", "json", NULL};
/* In the order of enum pgcdc_missing_rows. */
static const char *const missing_rows_names[] = {"error", "warn", NULL};
/* In the order of enum pgcdc_on_permanent_error. */
static const char *const on_error_names[] = {"stop", "dead_letter", NULL};

#define HELP_BOOL "true or false (also on/off, yes/no, 1/0)"
#define HELP_PATH "a non-empty path"
#define HELP_PATTERNS                                                                              \
    "a comma list of schema.table, '*' matches any run of characters "                             \
    "(e.g. public.*,sales.orders)"

#define OFF(f) offsetof(struct pgcdc_config, f)

const struct pgcdc_config_key pgcdc_config_keys[] = {
    {"source.dsn", PGCDC_KEY_DSN, OFF(source_dsn), 0, 0, NULL, NULL, NULL},
    {"source.slot", PGCDC_KEY_SLOT, OFF(source_slot), 0, 0, NULL, "pgcdc",
     "1-63 lower-case letters, digits or '_' (a PostgreSQL slot name)"},
    {"source.create_slot", PGCDC_KEY_BOOL, OFF(source_create_slot), 0, 0, NULL, "true", HELP_BOOL},
    {"source.tables.include", PGCDC_KEY_PATTERNS, OFF(source_tables_include), 0, 0, NULL, NULL,
     HELP_PATTERNS},
    {"source.tables.exclude", PGCDC_KEY_PATTERNS, OFF(source_tables_exclude), 0, 0, NULL, NULL,
     HELP_PATTERNS},
    {"source.partitions_as_root", PGCDC_KEY_BOOL, OFF(source_partitions_as_root), 0, 0, NULL,
     "false", HELP_BOOL},
    {"source.slot_busy_timeout_ms", PGCDC_KEY_INT, OFF(source_slot_busy_timeout_ms), 0, 86400000,
     NULL, "60000", NULL},
    {"source.invalid_utf8", PGCDC_KEY_ENUM, OFF(source_invalid_utf8), 0, 0, invalid_utf8_names,
     "error", NULL},
    /* Poll mode (README "Neon: let the compute sleep"): at most 24 h between polls, since
     * Neon removes a slot no client has used for about 40 hours. */
    {"source.poll_interval_ms", PGCDC_KEY_INT, OFF(source_poll_interval_ms), 0, 86400000, NULL, "0",
     "a whole number from 0 (stay connected) to 86400000 (24 h: Neon removes a slot unused for "
     "about 40 hours)"},
    {"source.idle_disconnect_ms", PGCDC_KEY_INT, OFF(source_idle_disconnect_ms), 0, 86400000, NULL,
     "10000", NULL},
    {"snapshot.mode", PGCDC_KEY_ENUM, OFF(snapshot_mode), 0, 0, snapshot_names, "initial", NULL},
    {"snapshot.slot_timeout_ms", PGCDC_KEY_INT, OFF(snapshot_slot_timeout_ms), 1000, 86400000,
     NULL, "300000", NULL},
    {"snapshot.workers", PGCDC_KEY_INT, OFF(snapshot_workers), 1, 32, NULL, "2", NULL},
    /* 32768 pages of 8 KiB: 256 MiB a range; at most 2^31, a block number's range. */
    {"snapshot.chunk_pages", PGCDC_KEY_U64, OFF(snapshot_chunk_pages), 1, 1ULL << 31, NULL,
     "32768", NULL},
    {"sink.type", PGCDC_KEY_ENUM, OFF(sink_type), 0, 0, sink_names, "file", NULL},
    {"sink.file.dir", PGCDC_KEY_STR, OFF(sink_file_dir), 0, 0, NULL, "./pgcdc-data", HELP_PATH},
    /* At least a page; at most 1 TiB, far past any sane segment but safe from overflow. */
    {"sink.file.segment_bytes", PGCDC_KEY_U64, OFF(sink_file_segment_bytes), 4096, 1ULL << 40, NULL,
     "67108864", NULL},
    {"sink.kafka.topic_prefix", PGCDC_KEY_TOPIC, OFF(sink_kafka_topic_prefix), 0, 0, NULL, "pgcdc",
     "1-120 characters of letters, digits, '.', '_' or '-' (a Kafka topic name prefix)"},
    {"sink.kafka.tombstones", PGCDC_KEY_BOOL, OFF(sink_kafka_tombstones), 0, 0, NULL, "true",
     HELP_BOOL},
    {"sink.kafka.on_permanent_error", PGCDC_KEY_ENUM, OFF(sink_kafka_on_permanent_error), 0, 0,
     on_error_names, "stop", NULL},
    {"sink.kafka.allow_weaker_delivery", PGCDC_KEY_BOOL, OFF(sink_kafka_allow_weaker_delivery), 0,
     0, NULL, "false", HELP_BOOL},
    /* 0: the topic's max.message.bytes as the brokers report it. librdkafka's own ceiling for
     * message.max.bytes is 1000000000. */
    {"sink.kafka.max_message_bytes", PGCDC_KEY_U64, OFF(sink_kafka_max_message_bytes), 0,
     1000000000, NULL, "0", NULL},
    {"sink.http.url", PGCDC_KEY_STR, OFF(sink_http_url), 0, 0, NULL, NULL,
     "an http:// or https:// URL"},
    {"sink.http.batch_max_events", PGCDC_KEY_INT, OFF(sink_http_batch_max_events), 1, 1000000,
     NULL, "1000", NULL},
    {"sink.http.batch_max_bytes", PGCDC_KEY_U64, OFF(sink_http_batch_max_bytes), 1024,
     1ULL << 30, NULL, "1048576", NULL},
    {"sink.http.linger_ms", PGCDC_KEY_INT, OFF(sink_http_linger_ms), 0, 60000, NULL, "50", NULL},
    {"sink.http.timeout_ms", PGCDC_KEY_INT, OFF(sink_http_timeout_ms), 100, 600000, NULL, "10000",
     NULL},
    {"sink.http.ca_file", PGCDC_KEY_STR, OFF(sink_http_ca_file), 0, 0, NULL, NULL, HELP_PATH},
    {"sink.http.signing_secret", PGCDC_KEY_STR, OFF(sink_http_signing_secret), 0, 0, NULL, NULL,
     "a non-empty secret"},
    {"sink.http.on_permanent_error", PGCDC_KEY_ENUM, OFF(sink_http_on_permanent_error), 0, 0,
     on_error_names, "stop", NULL},
    {"sink.s3.url", PGCDC_KEY_STR, OFF(sink_s3_url), 0, 0, NULL, NULL,
     "s3://BUCKET or s3://BUCKET/PREFIX"},
    {"sink.s3.endpoint", PGCDC_KEY_STR, OFF(sink_s3_endpoint), 0, 0, NULL, NULL,
     "an http:// or https:// URL (e.g. https://ACCOUNT.r2.cloudflarestorage.com)"},
    {"sink.s3.region", PGCDC_KEY_STR, OFF(sink_s3_region), 0, 0, NULL, "us-east-1",
     "a region name (e.g. eu-west-1, auto for R2)"},
    {"sink.s3.path_style", PGCDC_KEY_BOOL, OFF(sink_s3_path_style), 0, 0, NULL, "false",
     HELP_BOOL},
    {"sink.s3.access_key_id", PGCDC_KEY_STR, OFF(sink_s3_access_key_id), 0, 0, NULL, NULL,
     "an access key id"},
    {"sink.s3.secret_access_key", PGCDC_KEY_STR, OFF(sink_s3_secret_access_key), 0, 0, NULL,
     NULL, "a secret access key"},
    {"sink.s3.session_token", PGCDC_KEY_STR, OFF(sink_s3_session_token), 0, 0, NULL, NULL,
     "a session token"},
    /* At least 100 ms between flushes; at most a day. */
    {"sink.s3.flush_ms", PGCDC_KEY_INT, OFF(sink_s3_flush_ms), 100, 86400000, NULL, "60000",
     NULL},
    /* At least 64 KiB; at most 1 TiB of local staging. */
    {"sink.s3.flush_bytes", PGCDC_KEY_U64, OFF(sink_s3_flush_bytes), 65536, 1ULL << 40, NULL,
     "67108864", NULL},
    {"sink.s3.compression", PGCDC_KEY_ENUM, OFF(sink_s3_compression), 0, 0,
     s3_compression_names, "gzip", NULL},
    {"state.dir", PGCDC_KEY_STR, OFF(state_dir), 0, 0, NULL, "./pgcdc-state", HELP_PATH},
    {"status.interval_ms", PGCDC_KEY_INT, OFF(status_interval_ms), 10, 600000, NULL, "1000", NULL},
    {"metrics.listen", PGCDC_KEY_HOSTPORT, OFF(metrics_listen), 0, 0, NULL, NULL,
     "HOST:PORT with a port of 1-65535 (e.g. 127.0.0.1:9187, 0.0.0.0:9187, [::1]:9187), "
     "or empty for off"},
    {"metrics.stall_ms", PGCDC_KEY_INT, OFF(metrics_stall_ms), 1000, 86400000, NULL, "120000",
     NULL},
    {"migrate.pg_dump", PGCDC_KEY_STR, OFF(migrate_pg_dump), 0, 0, NULL, "pg_dump", NULL},
    {"migrate.jobs", PGCDC_KEY_INT, OFF(migrate_jobs), 1, 64, NULL, "4", NULL},
    {"migrate.keep_segments", PGCDC_KEY_BOOL, OFF(migrate_keep_segments), 0, 0, NULL, "false",
     HELP_BOOL},
    {"replay.missing_rows", PGCDC_KEY_ENUM, OFF(replay_missing_rows), 0, 0, missing_rows_names,
     "error", NULL},
    {"log.level", PGCDC_KEY_ENUM, OFF(log_level), 0, 0, level_names, "info", NULL},
    {"log.format", PGCDC_KEY_ENUM, OFF(log_format), 0, 0, format_names, "text", NULL},
};

const size_t pgcdc_config_nkeys = sizeof pgcdc_config_keys / sizeof pgcdc_config_keys[0];

const struct pgcdc_config_key *pgcdc_config_key_find(const char *name)
{
    for (size_t i = 0; i < pgcdc_config_nkeys; i++)
        if (strcmp(pgcdc_config_keys[i].name, name) == 0)
            return &pgcdc_config_keys[i];
    return NULL;
}

/* Levenshtein distance; (size_t)-1 for a b too long to be a key's name. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[128];

    if (lb >= sizeof row / sizeof row[0])
        return (size_t)-1;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

bool pgcdc_config_key_is_secret(const char *key)
{
    static const char *const secret_words[] = {"password",           "secret",  "ssl.key.pem",
                                               "oauthbearer.config", "ssl_key", NULL};

    if (key == NULL)
        return false;
    if (strcmp(key, "source.dsn") == 0 || strcmp(key, "sink.http.signing_secret") == 0)
        return true;
    if (strcmp(key, "sink.s3.secret_access_key") == 0 || strcmp(key, "sink.s3.session_token") == 0)
        return true;
    if (strncmp(key, PGCDC_HTTP_HEADER_KEY, strlen(PGCDC_HTTP_HEADER_KEY)) == 0) {
        /* A header that carries a credential: Authorization, Cookie, X-Api-Key, ... */
        static const char *const cred[] = {"auth", "cookie", "token", "key",       "secret",
                                           "pass", "sign",   "session", "credential", NULL};
        for (size_t i = 0; cred[i]; i++)
            if (strcasestr(key + strlen(PGCDC_HTTP_HEADER_KEY), cred[i]))
                return true;
        return false;
    }
    if (strncmp(key, "kafka.", 6) != 0)
        return false;
    for (size_t i = 0; secret_words[i]; i++)
        if (strcasestr(key, secret_words[i]))
            return true;
    return false;
}

const struct pgcdc_config_key *pgcdc_config_key_nearest(const char *name, size_t *dist)
{
    const struct pgcdc_config_key *best = NULL;
    size_t bestd = (size_t)-1;

    for (size_t i = 0; i < pgcdc_config_nkeys; i++) {
        size_t d = edit_distance(name, pgcdc_config_keys[i].name);
        if (d < bestd) {
            bestd = d;
            best = &pgcdc_config_keys[i];
        }
    }
    *dist = bestd;
    return best;
}

const struct pgcdc_config_key *pgcdc_config_key_from_env(const char *var)
{
    if (strncmp(var, "PGCDC_", 6) != 0)
        return NULL;
    for (size_t i = 0; i < pgcdc_config_nkeys; i++) {
        const char *k = pgcdc_config_keys[i].name;
        bool match = strlen(var) == 6 + strlen(k);
        for (size_t j = 0; match && k[j]; j++) {
            char want = k[j] == '.' ? '_' : (char)toupper((unsigned char)k[j]);
            match = var[6 + j] == want;
        }
        if (match)
            return &pgcdc_config_keys[i];
    }
    return NULL;
}

int pgcdc_config_kv_set(struct pgcdc_kv **kv, size_t *n, const char *key, const char *value,
                        char *err, size_t errlen)
{
    char *v;

    for (size_t i = 0; i < *n; i++) {
        if (strcmp((*kv)[i].key, key) == 0) {
            /* Same key again (e.g. file, then -o): the later value replaces it in place. */
            if ((v = strdup(value)) == NULL)
                goto nomem;
            free((*kv)[i].value);
            (*kv)[i].value = v;
            return PGCDC_OK;
        }
    }
    struct pgcdc_kv *nkv = realloc(*kv, (*n + 1) * sizeof *nkv);
    if (nkv == NULL)
        goto nomem;
    *kv = nkv;
    nkv[*n].key = strdup(key);
    nkv[*n].value = strdup(value);
    if (nkv[*n].key == NULL || nkv[*n].value == NULL) {
        free(nkv[*n].key);
        free(nkv[*n].value);
        goto nomem;
    }
    (*n)++;
    return PGCDC_OK;
nomem:
    snprintf(err, errlen, "out of memory");
    return PGCDC_ERR;
}

void pgcdc_config_kv_free(struct pgcdc_kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}
