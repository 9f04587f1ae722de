/*
 * test_config.c — the configuration keys: defaults, the file format, the environment,
 * -o, precedence, validation, and that no message ever shows a secret.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgcdc/common.h"
#include "pgcdc/config.h"
#include "pgcdc/config_keys.h"
#include "pgcdc/log.h"
#include "unit.h"

/* Every documented key, written out here so that a key dropped from the table by mistake
 * fails the test instead of vanishing from the example too. */
static const char *const documented_keys[] = {
    "source.dsn",
    "source.slot",
    "source.create_slot",
    "source.tables.include",
    "source.tables.exclude",
    "source.partitions_as_root",
    "source.slot_busy_timeout_ms",
    "snapshot.mode",
    "sink.type",
    "sink.file.dir",
    "sink.file.segment_bytes",
    "sink.kafka.topic_prefix",
    "sink.kafka.tombstones",
    "sink.kafka.on_permanent_error",
    "sink.kafka.allow_weaker_delivery",
    "sink.kafka.max_message_bytes",
    "sink.http.url",
    "sink.http.batch_max_events",
    "sink.http.batch_max_bytes",
    "sink.http.linger_ms",
    "sink.http.timeout_ms",
    "sink.http.ca_file",
    "sink.http.signing_secret",
    "sink.http.on_permanent_error",
    "state.dir",
    "status.interval_ms",
    "metrics.listen",
    "metrics.stall_ms",
    "log.level",
    "log.format",
    NULL,
};

static char err[1024];
static char tmpdir[] = "/tmp/pgcdc-test-config.XXXXXX";
static int nfiles;

/* Write text to a fresh file under tmpdir; returns its path (static storage, 8 deep). */
static const char *write_file(const char *text)
{
    static char paths[8][256];
    char *path = paths[nfiles % 8];
    FILE *f;

    snprintf(path, 256, "%s/c%d.conf", tmpdir, nfiles++);
    f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static const char *kafka_get(const struct pgcdc_config *c, const char *key)
{
    for (size_t i = 0; i < c->nkafka; i++)
        if (strcmp(c->kafka[i].key, key) == 0)
            return c->kafka[i].value;
    return NULL;
}

static void test_defaults(void)
{
    struct pgcdc_config c;

    CHECK_INT_EQ(pgcdc_config_init(&c), 0);
    CHECK(c.source_dsn == NULL);
    CHECK_STR_EQ(c.source_slot, "pgcdc");
    CHECK(c.source_create_slot == true);
    CHECK(c.source_tables_include == NULL);
    CHECK(c.source_tables_exclude == NULL);
    CHECK(c.source_partitions_as_root == false);
    CHECK_INT_EQ(c.snapshot_mode, PGCDC_SNAPSHOT_INITIAL);
    CHECK_INT_EQ(c.sink_type, PGCDC_SINK_FILE);
    CHECK_STR_EQ(c.sink_file_dir, "./pgcdc-data");
    CHECK_U64_EQ(c.sink_file_segment_bytes, 67108864);
    CHECK_STR_EQ(c.sink_kafka_topic_prefix, "pgcdc");
    CHECK(c.sink_kafka_tombstones == true);
    CHECK_INT_EQ(c.sink_kafka_on_permanent_error, PGCDC_ON_ERROR_STOP);
    CHECK(c.sink_kafka_allow_weaker_delivery == false);
    CHECK_U64_EQ(c.sink_kafka_max_message_bytes, 0);
    CHECK_INT_EQ(c.nkafka, 0);
    CHECK_STR_EQ(c.state_dir, "./pgcdc-state");
    CHECK_INT_EQ(c.status_interval_ms, 1000);
    CHECK(c.metrics_listen == NULL);
    CHECK_INT_EQ(c.metrics_stall_ms, 120000);
    CHECK_INT_EQ(c.log_level, PGCDC_LOG_INFO);
    CHECK_INT_EQ(c.log_format, PGCDC_LOG_TEXT);
    pgcdc_config_free(&c);
    pgcdc_config_free(&c); /* freeing twice is harmless: free zeroes the struct */
}

static void test_set_every_key(void)
{
    struct pgcdc_config c;
    static const char *const pairs[][2] = {
        {"source.dsn", "host=h dbname=d"},
        {"source.slot", "my_slot_2"},
        {"source.create_slot", "off"},
        {"source.tables.include", "public.*, sales.orders"},
        {"source.tables.exclude", "public.tmp_*"},
        {"source.partitions_as_root", "yes"},
        {"snapshot.mode", "initial_only"},
        {"sink.type", "kafka"},
        {"sink.file.dir", "/var/lib/pgcdc/data"},
        {"sink.file.segment_bytes", "4096"},
        {"sink.kafka.topic_prefix", "cdc.prod-1"},
        {"sink.kafka.tombstones", "0"},
        {"sink.kafka.on_permanent_error", "dead_letter"},
        {"sink.kafka.allow_weaker_delivery", "true"},
        {"sink.kafka.max_message_bytes", "1048576"},
        {"state.dir", "/var/lib/pgcdc/state"},
        {"status.interval_ms", "600000"},
        {"metrics.listen", "0.0.0.0:9187"},
        {"metrics.stall_ms", "1000"},
        {"log.level", "debug"},
        {"log.format", "json"},
    };

    pgcdc_config_init(&c);
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        int rc = pgcdc_config_set(&c, pairs[i][0], pairs[i][1], "test", err, sizeof err);
        CHECK_INT_EQ(rc, 0);
        if (rc != 0)
            fprintf(stderr, "    %s: %s\n", pairs[i][0], err);
    }
    CHECK_STR_EQ(c.source_dsn, "host=h dbname=d");
    CHECK_STR_EQ(c.source_slot, "my_slot_2");
    CHECK(c.source_create_slot == false);
    CHECK_STR_EQ(c.source_tables_include, "public.*, sales.orders");
    CHECK_STR_EQ(c.source_tables_exclude, "public.tmp_*");
    CHECK(c.source_partitions_as_root == true);
    CHECK_INT_EQ(c.snapshot_mode, PGCDC_SNAPSHOT_INITIAL_ONLY);
    CHECK_INT_EQ(c.sink_type, PGCDC_SINK_KAFKA);
    CHECK_STR_EQ(c.sink_file_dir, "/var/lib/pgcdc/data");
    CHECK_U64_EQ(c.sink_file_segment_bytes, 4096);
    CHECK_STR_EQ(c.sink_kafka_topic_prefix, "cdc.prod-1");
    CHECK(c.sink_kafka_tombstones == false);
    CHECK_INT_EQ(c.sink_kafka_on_permanent_error, PGCDC_ON_ERROR_DEAD_LETTER);
    CHECK(c.sink_kafka_allow_weaker_delivery == true);
    CHECK_U64_EQ(c.sink_kafka_max_message_bytes, 1048576);
    CHECK_STR_EQ(c.state_dir, "/var/lib/pgcdc/state");
    CHECK_INT_EQ(c.status_interval_ms, 600000);
    CHECK_STR_EQ(c.metrics_listen, "0.0.0.0:9187");
    CHECK_INT_EQ(c.metrics_stall_ms, 1000);
    CHECK_INT_EQ(c.log_level, PGCDC_LOG_DEBUG);
    CHECK_INT_EQ(c.log_format, PGCDC_LOG_JSON);

    /* Every spelling of a boolean, any case. */
    static const char *const yes[] = {"true", "TRUE", "on", "On", "1", "yes", "YES"};
    static const char *const no[] = {"false", "False", "off", "OFF", "0", "no", "No"};
    for (size_t i = 0; i < 7; i++) {
        CHECK_INT_EQ(pgcdc_config_set(&c, "source.create_slot", yes[i], "t", err, sizeof err), 0);
        CHECK(c.source_create_slot == true);
        CHECK_INT_EQ(pgcdc_config_set(&c, "source.create_slot", no[i], "t", err, sizeof err), 0);
        CHECK(c.source_create_slot == false);
    }
    /* The other enum values. */
    CHECK_INT_EQ(pgcdc_config_set(&c, "snapshot.mode", "never", "t", err, sizeof err), 0);
    CHECK_INT_EQ(c.snapshot_mode, PGCDC_SNAPSHOT_NEVER);
    CHECK_INT_EQ(pgcdc_config_set(&c, "snapshot.mode", "initial", "t", err, sizeof err), 0);
    CHECK_INT_EQ(c.snapshot_mode, PGCDC_SNAPSHOT_INITIAL);
    CHECK_INT_EQ(pgcdc_config_set(&c, "sink.type", "file", "t", err, sizeof err), 0);
    CHECK_INT_EQ(c.sink_type, PGCDC_SINK_FILE);
    CHECK_INT_EQ(pgcdc_config_set(&c, "log.level", "error", "t", err, sizeof err), 0);
    CHECK_INT_EQ(c.log_level, PGCDC_LOG_ERROR);
    CHECK_INT_EQ(pgcdc_config_set(&c, "log.level", "warn", "t", err, sizeof err), 0);
    CHECK_INT_EQ(c.log_level, PGCDC_LOG_WARN);
    CHECK_INT_EQ(pgcdc_config_set(&c, "log.level", "info", "t", err, sizeof err), 0);
    CHECK_INT_EQ(c.log_level, PGCDC_LOG_INFO);
    CHECK_INT_EQ(pgcdc_config_set(&c, "log.format", "text", "t", err, sizeof err), 0);
    CHECK_INT_EQ(c.log_format, PGCDC_LOG_TEXT);
    /* Range edges and other accepted forms. */
    CHECK_INT_EQ(pgcdc_config_set(&c, "status.interval_ms", "10", "t", err, sizeof err), 0);
    CHECK_INT_EQ(c.status_interval_ms, 10);
    CHECK_INT_EQ(
        pgcdc_config_set(&c, "sink.file.segment_bytes", "1099511627776", "t", err, sizeof err), 0);
    CHECK_U64_EQ(c.sink_file_segment_bytes, 1099511627776ULL);
    CHECK_INT_EQ(pgcdc_config_set(&c, "metrics.listen", "[::1]:9187", "t", err, sizeof err), 0);
    CHECK_INT_EQ(pgcdc_config_set(&c, "metrics.listen", "localhost:1", "t", err, sizeof err), 0);
    CHECK_INT_EQ(pgcdc_config_set(&c, "metrics.listen", "", "t", err, sizeof err), 0);
    CHECK(c.metrics_listen == NULL); /* empty: off */
    CHECK_INT_EQ(pgcdc_config_set(&c, "source.tables.include", "", "t", err, sizeof err), 0);
    CHECK(c.source_tables_include == NULL); /* empty: all tables */
    pgcdc_config_free(&c);
}

/* Expect PGCDC_ERR_CONFIG and a message holding every one of the NULL-ended needles. */
static void expect_bad(const char *key, const char *value, ...)
{
    struct pgcdc_config c;
    va_list ap;
    const char *needle;
    int rc;

    pgcdc_config_init(&c);
    err[0] = '\0';
    rc = pgcdc_config_set(&c, key, value, "/etc/pgcdc.conf:7", err, sizeof err);
    CHECK_INT_EQ(rc, PGCDC_ERR_CONFIG);
    if (rc != PGCDC_ERR_CONFIG)
        fprintf(stderr, "    accepted %s = \"%s\"\n", key, value);
    CHECK_CONTAINS(err, key);
    CHECK_CONTAINS(err, "/etc/pgcdc.conf:7");
    CHECK(strchr(err, '\n') == NULL);
    va_start(ap, value);
    while ((needle = va_arg(ap, const char *)) != NULL)
        CHECK_CONTAINS(err, needle);
    va_end(ap);
    pgcdc_config_free(&c);
}

static void test_bad_values(void)
{
    static const char *const bools[] = {"source.create_slot", "sink.kafka.tombstones",
                                        "source.partitions_as_root"};
    for (size_t i = 0; i < 3; i++) {
        expect_bad(bools[i], "maybe", "\"maybe\"", "true or false", NULL);
        expect_bad(bools[i], "", "\"\"", "true or false", NULL);
        expect_bad(bools[i], "2", "\"2\"", NULL);
        expect_bad(bools[i], "tru", NULL);
    }
    static const char *const ms_bad[] = {"9",
                                         "600001",
                                         "0",
                                         "-5",
                                         "1.5",
                                         "10ms",
                                         "",
                                         " 100",
                                         "+100",
                                         "0x10",
                                         "99999999999999999999999",
                                         NULL};
    for (size_t i = 0; ms_bad[i]; i++)
        expect_bad("status.interval_ms", ms_bad[i], "whole number from 10 to 600000", NULL);
    expect_bad("status.interval_ms", "10ms", "\"10ms\"", NULL);
    expect_bad("metrics.stall_ms", "999", "whole number from 1000 to 86400000", NULL);
    expect_bad("metrics.stall_ms", "2min", "whole number from 1000 to 86400000", NULL);
    expect_bad("sink.kafka.on_permanent_error", "skip", "\"skip\"", "stop or dead_letter", NULL);
    expect_bad("sink.kafka.allow_weaker_delivery", "maybe", "true or false", NULL);
    expect_bad("sink.kafka.max_message_bytes", "1MB", "whole number from 0 to 1000000000", NULL);
    static const char *const seg_bad[] = {
        "4095", "0", "-1", "64MB", "1e9", "", "1099511627777", "18446744073709551616", NULL};
    for (size_t i = 0; seg_bad[i]; i++)
        expect_bad("sink.file.segment_bytes", seg_bad[i], "whole number from 4096", NULL);
    expect_bad("snapshot.mode", "always", "\"always\"", "initial, never or initial_only", NULL);
    expect_bad("snapshot.mode", "INITIAL", NULL); /* enums are exactly as listed */
    expect_bad("sink.type", "nats", "\"nats\"", "file, kafka, http or s3", NULL);
    expect_bad("log.level", "trace", "\"trace\"", "error, warn, info or debug", NULL);
    expect_bad("log.level", "warning", NULL);
    expect_bad("log.format", "logfmt", "\"logfmt\"", "text or json", NULL);
    static const char *const listen_bad[] = {"9187",       ":9187",     "host:",    "host:0",
                                             "host:65536", "host:port", "::1:9187", "a b:80",
                                             "[::1]9187",  NULL};
    for (size_t i = 0; listen_bad[i]; i++)
        expect_bad("metrics.listen", listen_bad[i], "HOST:PORT", NULL);
    expect_bad("source.slot", "My-Slot", "\"My-Slot\"", "slot name", NULL);
    expect_bad("source.slot", "", NULL);
    expect_bad("source.slot", "a234567890123456789012345678901234567890123456789012345678901234",
               NULL);
    expect_bad("sink.kafka.topic_prefix", "has space", NULL);
    expect_bad("sink.kafka.topic_prefix", "", NULL);
    expect_bad("sink.file.dir", "", NULL);
    expect_bad("state.dir", "", NULL);
    expect_bad("source.tables.include", "users", "\"users\"", "schema.table", NULL);
    expect_bad("source.tables.include", "public.a,,public.b", NULL);
    expect_bad("source.tables.exclude", "public.a, ", NULL);
}

static void test_unknown_key(void)
{
    struct pgcdc_config c;

    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_set(&c, "sink.fiel.dir", "x", "/etc/pgcdc.conf:3", err, sizeof err),
                 PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "unknown configuration key \"sink.fiel.dir\" (at /etc/pgcdc.conf:3)");
    CHECK_CONTAINS(err, "did you mean \"sink.file.dir\"");
    CHECK_CONTAINS(err, "config/pgcdc.conf.example");

    CHECK_INT_EQ(pgcdc_config_set(&c, "completely.different", "x", "-o", err, sizeof err),
                 PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "unknown configuration key \"completely.different\" (at -o)");
    CHECK_NOT_CONTAINS(err, "did you mean");

    CHECK_INT_EQ(pgcdc_config_set(&c, "log.levle", "x", "-o", err, sizeof err), PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "did you mean \"log.level\"");
    CHECK_INT_EQ(pgcdc_config_set(&c, "source_dsn", "x", "-o", err, sizeof err), PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "did you mean \"source.dsn\"");
    CHECK_INT_EQ(pgcdc_config_set(&c, "", "x", "-o", err, sizeof err), PGCDC_ERR_CONFIG);
    CHECK_INT_EQ(pgcdc_config_set(&c, "kafka.", "x", "-o", err, sizeof err), PGCDC_ERR_CONFIG);
    CHECK_INT_EQ(pgcdc_config_set(&c, "kafka", "x", "-o", err, sizeof err), PGCDC_ERR_CONFIG);
    /* Keys are case-sensitive, like the table. */
    CHECK_INT_EQ(pgcdc_config_set(&c, "Sink.Type", "file", "-o", err, sizeof err),
                 PGCDC_ERR_CONFIG);
    pgcdc_config_free(&c);
}

static void test_file(void)
{
    struct pgcdc_config c;
    const char *path;

    path = write_file("# a comment\n"
                      "\n"
                      "   \t\n"
                      "  # indented comment\n"
                      "source.dsn=host=h password=pw#1 dbname=d\n"
                      "  source.slot   =   s1   \n"
                      "sink.type = kafka # trailing comment\n"
                      "kafka.bootstrap.servers=b1:9092\r\n"
                      "sink.file.dir = \"/data/with # hash \"\n"
                      "log.level = debug\n"
                      "log.level = warn\n"
                      "kafka.client.id = a=b=c\n"
                      "status.interval_ms = 250");
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_file(&c, path, err, sizeof err), 0);
    CHECK_STR_EQ(c.source_dsn, "host=h password=pw#1 dbname=d"); /* '#' not after a space */
    CHECK_STR_EQ(c.source_slot, "s1");
    CHECK_INT_EQ(c.sink_type, PGCDC_SINK_KAFKA);
    CHECK_STR_EQ(kafka_get(&c, "bootstrap.servers"), "b1:9092"); /* CRLF trimmed */
    CHECK_STR_EQ(c.sink_file_dir, "/data/with # hash ");         /* quoted: literal */
    CHECK_INT_EQ(c.log_level, PGCDC_LOG_WARN);                   /* later line wins */
    CHECK_STR_EQ(kafka_get(&c, "client.id"), "a=b=c");           /* split at the first '=' */
    CHECK_INT_EQ(c.status_interval_ms, 250);                     /* no final newline */
    pgcdc_config_free(&c);

    /* state.dir = "" is an empty path: an error, at line 1. */
    path = write_file("state.dir=\"\"\n");
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_file(&c, path, err, sizeof err), PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, ":1)");
    pgcdc_config_free(&c);

    /* Errors name file:line. */
    char want[300];
    path = write_file("# header\n\nsink.type = file\nsink.fiel.dir = /x\n");
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_file(&c, path, err, sizeof err), PGCDC_ERR_CONFIG);
    snprintf(want, sizeof want, "unknown configuration key \"sink.fiel.dir\" (at %s:4)", path);
    CHECK_CONTAINS(err, want);
    pgcdc_config_free(&c);

    path = write_file("sink.type = file\n\n\nstatus.interval_ms = 5\n");
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_file(&c, path, err, sizeof err), PGCDC_ERR_CONFIG);
    snprintf(want, sizeof want, "%s:4", path);
    CHECK_CONTAINS(err, want);
    CHECK_CONTAINS(err, "status.interval_ms");
    CHECK_CONTAINS(err, "\"5\"");
    pgcdc_config_free(&c);

    path = write_file("sink.type = file\njust some words\n");
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_file(&c, path, err, sizeof err), PGCDC_ERR_CONFIG);
    snprintf(want, sizeof want, "%s:2", path);
    CHECK_CONTAINS(err, want);
    CHECK_CONTAINS(err, "key = value");
    CHECK_NOT_CONTAINS(err, "words");
    pgcdc_config_free(&c);

    path = write_file(" = value\n");
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_file(&c, path, err, sizeof err), PGCDC_ERR_CONFIG);
    pgcdc_config_free(&c);

    path = write_file("sink.file.dir = \"unclosed\n");
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_file(&c, path, err, sizeof err), PGCDC_ERR_CONFIG);
    pgcdc_config_free(&c);

    path = write_file("sink.file.dir = \"a\" b\n");
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_file(&c, path, err, sizeof err), PGCDC_ERR_CONFIG);
    pgcdc_config_free(&c);

    /* A quote in a trailing comment is the comment's, not the quoted value's end. */
    path = write_file("source.slot = \"abc\"  # it's \"mine\"\n"
                      "source.dsn = \"host=h password=a\"b\" # the \"b\" is the password's\n"
                      "sink.file.dir = \"/d\"#\"x\"\n"
                      "state.dir = /s  # it's \"mine\"\n");
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_file(&c, path, err, sizeof err), 0);
    CHECK_STR_EQ(c.source_slot, "abc");
    CHECK_STR_EQ(c.source_dsn, "host=h password=a\"b"); /* a '"' inside stays */
    CHECK_STR_EQ(c.sink_file_dir, "/d");
    CHECK_STR_EQ(c.state_dir, "/s");
    pgcdc_config_free(&c);

    /* Text after the closing quote, with a quote further on: still an error. */
    path = write_file("sink.file.dir = \"a\" b \"c\" d\n");
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_file(&c, path, err, sizeof err), PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "text after the closing");
    pgcdc_config_free(&c);

    /* A missing file is a configuration error naming the file. */
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_file(&c, "/nonexistent/pgcdc.conf", err, sizeof err),
                 PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "/nonexistent/pgcdc.conf");
    pgcdc_config_free(&c);

    /* An empty file is fine. */
    path = write_file("");
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_file(&c, path, err, sizeof err), 0);
    pgcdc_config_free(&c);

    /* A long line is read whole. */
    char *big = malloc(20000);
    strcpy(big, "kafka.client.id = ");
    memset(big + 18, 'x', 19000);
    strcpy(big + 19018, "\n");
    path = write_file(big);
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_file(&c, path, err, sizeof err), 0);
    CHECK_INT_EQ(strlen(kafka_get(&c, "client.id") ? kafka_get(&c, "client.id") : ""), 19000);
    pgcdc_config_free(&c);
    free(big);
}

static void test_env_expansion(void)
{
    struct pgcdc_config c;

    setenv("PGCDC_TEST_PW", "s3cr3t", 1);
    setenv("PGCDC_TEST_HOST", "db.example.com", 1);
    setenv("PGCDC_TEST_EMPTY", "", 1);
    unsetenv("PGCDC_TEST_UNSET");
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_set(&c, "source.dsn",
                                  "postgres://u:${PGCDC_TEST_PW}@${PGCDC_TEST_HOST}/db", "t", err,
                                  sizeof err),
                 0);
    CHECK_STR_EQ(c.source_dsn, "postgres://u:s3cr3t@db.example.com/db");
    CHECK_INT_EQ(
        pgcdc_config_set(&c, "kafka.sasl.password", "${PGCDC_TEST_PW}", "t", err, sizeof err), 0);
    CHECK_STR_EQ(kafka_get(&c, "sasl.password"), "s3cr3t");
    CHECK_INT_EQ(
        pgcdc_config_set(&c, "sink.file.dir", "/d/${PGCDC_TEST_EMPTY}x", "t", err, sizeof err), 0);
    CHECK_STR_EQ(c.sink_file_dir, "/d/x");
    /* "$" alone, "$NAME" and "$${" are literal. */
    CHECK_INT_EQ(pgcdc_config_set(&c, "sink.file.dir", "/a$b/$/$${X}/$$", "t", err, sizeof err), 0);
    CHECK_STR_EQ(c.sink_file_dir, "/a$b/$/${X}/$$");
    /* An expanded value is not expanded again. */
    setenv("PGCDC_TEST_NESTED", "${PGCDC_TEST_PW}", 1);
    CHECK_INT_EQ(
        pgcdc_config_set(&c, "sink.file.dir", "${PGCDC_TEST_NESTED}", "t", err, sizeof err), 0);
    CHECK_STR_EQ(c.sink_file_dir, "${PGCDC_TEST_PW}");
    /* Expansion happens before the type check. */
    setenv("PGCDC_TEST_MS", "1500", 1);
    CHECK_INT_EQ(
        pgcdc_config_set(&c, "status.interval_ms", "${PGCDC_TEST_MS}", "t", err, sizeof err), 0);
    CHECK_INT_EQ(c.status_interval_ms, 1500);

    /* Unset NAME: an error naming NAME, the key and the origin, not the value. */
    CHECK_INT_EQ(pgcdc_config_set(&c, "source.dsn", "postgres://u:hunter2@h/${PGCDC_TEST_UNSET}",
                                  "/etc/pgcdc.conf:2", err, sizeof err),
                 PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "PGCDC_TEST_UNSET");
    CHECK_CONTAINS(err, "source.dsn");
    CHECK_CONTAINS(err, "/etc/pgcdc.conf:2");
    CHECK_NOT_CONTAINS(err, "hunter2");
    CHECK_STR_EQ(c.source_dsn, "postgres://u:s3cr3t@db.example.com/db"); /* unchanged */

    CHECK_INT_EQ(pgcdc_config_set(&c, "source.dsn", "postgres://u:hunter2@h/${UNCLOSED", "t", err,
                                  sizeof err),
                 PGCDC_ERR_CONFIG);
    CHECK_NOT_CONTAINS(err, "hunter2");
    CHECK_INT_EQ(pgcdc_config_set(&c, "sink.file.dir", "${}", "t", err, sizeof err),
                 PGCDC_ERR_CONFIG);
    CHECK_INT_EQ(pgcdc_config_set(&c, "sink.file.dir", "${1X}", "t", err, sizeof err),
                 PGCDC_ERR_CONFIG);
    CHECK_INT_EQ(pgcdc_config_set(&c, "sink.file.dir", "${A-B}", "t", err, sizeof err),
                 PGCDC_ERR_CONFIG);

    /* In a file too. */
    const char *path = write_file("kafka.sasl.password = ${PGCDC_TEST_PW}\n"
                                  "kafka.sasl.username = ${PGCDC_TEST_UNSET}\n");
    CHECK_INT_EQ(pgcdc_config_load_file(&c, path, err, sizeof err), PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "PGCDC_TEST_UNSET");
    CHECK_CONTAINS(err, ":2");
    pgcdc_config_free(&c);
    unsetenv("PGCDC_TEST_NESTED");
    unsetenv("PGCDC_TEST_MS");
}

static void test_env_mapping(void)
{
    struct pgcdc_config c;
    char *envp[] = {
        "PATH=/usr/bin",
        "PGCDC_SOURCE_DSN=host=envhost",
        "PGCDC_SINK_FILE_SEGMENT_BYTES=1048576",
        "PGCDC_SOURCE_TABLES_INCLUDE=public.*",
        "PGCDC_SOURCE_CREATE_SLOT=false",
        "PGCDC_SOURCE_PARTITIONS_AS_ROOT=true",
        "PGCDC_STATUS_INTERVAL_MS=50",
        "PGCDC_LOG_FORMAT=json",
        "PGCDC_KAFKA_BOOTSTRAP_SERVERS=k1:9092,k2:9092",
        "PGCDC_KAFKA_SASL_PASSWORD=pw",
        "PGCDC_KAFKA_Security_Protocol=SASL_SSL",
        "PGCDC_BIN=/usr/local/bin/pgcdc", /* not a key: ignored, other tools set PGCDC_* */
        "PGCDC_=x",
        "PGCDC_KAFKA_=x",
        "pgcdc_sink_type=kafka", /* lower case is not ours */
        "NOEQUALS",
        NULL,
    };

    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_env(&c, envp, err, sizeof err), 0);
    CHECK_STR_EQ(c.source_dsn, "host=envhost");
    CHECK_U64_EQ(c.sink_file_segment_bytes, 1048576);
    CHECK_STR_EQ(c.source_tables_include, "public.*");
    CHECK(c.source_create_slot == false);
    CHECK(c.source_partitions_as_root == true);
    CHECK_INT_EQ(c.status_interval_ms, 50);
    CHECK_INT_EQ(c.log_format, PGCDC_LOG_JSON);
    CHECK_INT_EQ(c.sink_type, PGCDC_SINK_FILE);
    CHECK_STR_EQ(kafka_get(&c, "bootstrap.servers"), "k1:9092,k2:9092");
    CHECK_STR_EQ(kafka_get(&c, "sasl.password"), "pw");
    CHECK_STR_EQ(kafka_get(&c, "security.protocol"), "SASL_SSL");
    CHECK_INT_EQ(c.nkafka, 3);
    CHECK_INT_EQ(pgcdc_config_load_env(&c, NULL, err, sizeof err), 0);
    pgcdc_config_free(&c);

    /* Every key of the table has its variable. */
    for (size_t i = 0; documented_keys[i]; i++) {
        char var[128];
        size_t j;
        snprintf(var, sizeof var, "PGCDC_");
        for (j = 0; documented_keys[i][j]; j++)
            var[6 + j] = documented_keys[i][j] == '.' ? '_' : (char)toupper(documented_keys[i][j]);
        var[6 + j] = '\0';
        /* A bad value proves the variable was read and mapped to this key. */
        char entry[160];
        const char *badval = "???";
        if (strcmp(documented_keys[i], "source.dsn") == 0)
            badval = "${PGCDC_TEST_UNSET}";
        else if (pgcdc_config_key_find(documented_keys[i])->type == PGCDC_KEY_STR)
            badval = ""; /* any string but the empty one is good */
        snprintf(entry, sizeof entry, "%s=%s", var, badval);
        char *one[] = {entry, NULL};
        pgcdc_config_init(&c);
        int rc = pgcdc_config_load_env(&c, one, err, sizeof err);
        CHECK_INT_EQ(rc, PGCDC_ERR_CONFIG);
        CHECK_CONTAINS(err, var);
        CHECK_CONTAINS(err, documented_keys[i]);
        if (rc != PGCDC_ERR_CONFIG)
            fprintf(stderr, "    %s not read\n", var);
        pgcdc_config_free(&c);
    }

    /* A bad value names the variable. */
    char *bad[] = {"PGCDC_SINK_TYPE=nats", NULL};
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_env(&c, bad, err, sizeof err), PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "PGCDC_SINK_TYPE");
    CHECK_CONTAINS(err, "\"nats\"");
    CHECK_CONTAINS(err, "file, kafka, http or s3");
    pgcdc_config_free(&c);
}

static void test_set_arg(void)
{
    struct pgcdc_config c;

    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_set_arg(&c, "sink.type=kafka", err, sizeof err), 0);
    CHECK_INT_EQ(c.sink_type, PGCDC_SINK_KAFKA);
    CHECK_INT_EQ(pgcdc_config_set_arg(&c, " source.slot = s2 ", err, sizeof err), 0);
    CHECK_STR_EQ(c.source_slot, "s2");
    CHECK_INT_EQ(pgcdc_config_set_arg(&c, "source.dsn=host=h port=5432", err, sizeof err), 0);
    CHECK_STR_EQ(c.source_dsn, "host=h port=5432");
    CHECK_INT_EQ(pgcdc_config_set_arg(&c, "kafka.linger.ms=5", err, sizeof err), 0);
    CHECK_STR_EQ(kafka_get(&c, "linger.ms"), "5");
    CHECK_INT_EQ(pgcdc_config_set_arg(&c, "sink.type", err, sizeof err), PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "KEY=VALUE");
    CHECK_INT_EQ(pgcdc_config_set_arg(&c, "sink.typo=file", err, sizeof err), PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "\"sink.typo\" (at -o)");
    pgcdc_config_free(&c);
}

static void test_precedence(void)
{
    struct pgcdc_config c;
    const char *path = write_file("source.slot = from_file\n"
                                  "sink.file.dir = /file\n"
                                  "state.dir = /file_state\n"
                                  "kafka.acks = 1\n"
                                  "kafka.linger.ms = 100\n"
                                  "kafka.client.id = file\n");
    char *envp[] = {"PGCDC_SINK_FILE_DIR=/env", "PGCDC_STATE_DIR=/env_state",
                    "PGCDC_KAFKA_LINGER_MS=10", "PGCDC_KAFKA_CLIENT_ID=env", NULL};

    /* main's order: defaults, file, environment, -o. */
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_file(&c, path, err, sizeof err), 0);
    CHECK_INT_EQ(pgcdc_config_load_env(&c, envp, err, sizeof err), 0);
    CHECK_INT_EQ(pgcdc_config_set_arg(&c, "state.dir=/arg_state", err, sizeof err), 0);
    CHECK_INT_EQ(pgcdc_config_set_arg(&c, "kafka.client.id=arg", err, sizeof err), 0);
    CHECK_STR_EQ(c.sink_kafka_topic_prefix, "pgcdc"); /* default */
    CHECK_STR_EQ(c.source_slot, "from_file");         /* file over default */
    CHECK_STR_EQ(c.sink_file_dir, "/env");            /* env over file */
    CHECK_STR_EQ(c.state_dir, "/arg_state");          /* -o over env */
    /* kafka keys: the later set replaces the value and keeps the first position. */
    CHECK_INT_EQ(c.nkafka, 3);
    CHECK_STR_EQ(c.kafka[0].key, "acks");
    CHECK_STR_EQ(c.kafka[0].value, "1");
    CHECK_STR_EQ(c.kafka[1].key, "linger.ms");
    CHECK_STR_EQ(c.kafka[1].value, "10");
    CHECK_STR_EQ(c.kafka[2].key, "client.id");
    CHECK_STR_EQ(c.kafka[2].value, "arg");
    pgcdc_config_free(&c);
}

static void test_kafka_passthrough(void)
{
    struct pgcdc_config c;

    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_set(&c, "kafka.bootstrap.servers", "b:9092", "t", err, sizeof err),
                 0);
    CHECK_INT_EQ(pgcdc_config_set(&c, "kafka.enable.idempotence", "true", "t", err, sizeof err), 0);
    CHECK_INT_EQ(pgcdc_config_set(&c, "kafka.some.future.property", "", "t", err, sizeof err), 0);
    CHECK_INT_EQ(c.nkafka, 3);
    CHECK_STR_EQ(c.kafka[0].key, "bootstrap.servers"); /* "kafka." stripped */
    CHECK_STR_EQ(c.kafka[1].key, "enable.idempotence");
    CHECK_STR_EQ(c.kafka[2].key, "some.future.property");
    CHECK_STR_EQ(c.kafka[2].value, "");
    CHECK_INT_EQ(pgcdc_config_set(&c, "kafka.bootstrap.servers", "c:9092", "t", err, sizeof err),
                 0);
    CHECK_INT_EQ(c.nkafka, 3);
    CHECK_STR_EQ(c.kafka[0].value, "c:9092");
    pgcdc_config_free(&c);
}

static void test_validate(void)
{
    struct pgcdc_config c;

    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_validate(&c, err, sizeof err), PGCDC_ERR_CONFIG);
    CHECK_STR_EQ(err, "source.dsn is not set: give it with -o source.dsn=postgres://... , "
                      "PGCDC_SOURCE_DSN or in the -c file");
    /* An empty value is "not set". */
    CHECK_INT_EQ(pgcdc_config_set(&c, "source.dsn", "", "t", err, sizeof err), 0);
    CHECK_INT_EQ(pgcdc_config_validate(&c, err, sizeof err), PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "source.dsn is not set");

    static const char *const ok[] = {
        "postgres://u:p@ep-cool-name-123456.us-east-2.aws.neon.tech/neondb?sslmode=require",
        "postgresql://localhost/db",
        "host=127.0.0.1 port=5432 dbname=postgres user=postgres",
        "postgres:///db?host=/var/run/postgresql",
        "dbname=pooler-db user=pooler host=h", /* "-pooler" outside the host does not count */
        "postgres://u:my-pooler-pw@ep-x.aws.neon.tech/db",
        "postgres://u@ep-x.aws.neon.tech/my-pooler",
        NULL,
    };
    for (size_t i = 0; ok[i]; i++) {
        CHECK_INT_EQ(pgcdc_config_set(&c, "source.dsn", ok[i], "t", err, sizeof err), 0);
        int rc = pgcdc_config_validate(&c, err, sizeof err);
        CHECK_INT_EQ(rc, 0);
        if (rc != 0)
            fprintf(stderr, "    %s: %s\n", ok[i], err);
    }

    static const char *const pooler[][2] = {
        {"postgres://alex:AbC123dEf@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/"
         "dbname?sslmode=require",
         "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"},
        {"postgresql://ep-x-pooler.us-east-2.aws.neon.tech:5432/db",
         "ep-x-pooler.us-east-2.aws.neon.tech"},
        {"postgres://u:AbC123dEf@other.host,ep-y-POOLER.neon.tech/db", "ep-y-POOLER.neon.tech"},
        {"postgres:///db?user=u&password=AbC123dEf&host=ep-z-pooler.neon.tech",
         "ep-z-pooler.neon.tech"},
        {"host=ep-x-pooler.us-east-2.aws.neon.tech password=AbC123dEf dbname=neondb",
         "ep-x-pooler.us-east-2.aws.neon.tech"},
        {"password='AbC123dEf' host = 'ep-q-pooler.neon.tech' sslmode=require",
         "ep-q-pooler.neon.tech"},
        {"host=a.example.com,ep-m-pooler.neon.tech password=AbC123dEf", "ep-m-pooler.neon.tech"},
    };
    for (size_t i = 0; i < sizeof pooler / sizeof pooler[0]; i++) {
        CHECK_INT_EQ(pgcdc_config_set(&c, "source.dsn", pooler[i][0], "t", err, sizeof err), 0);
        CHECK_INT_EQ(pgcdc_config_validate(&c, err, sizeof err), PGCDC_ERR_CONFIG);
        CHECK_CONTAINS(err, "source.dsn points at a Neon pooler endpoint (");
        CHECK_CONTAINS(err, pooler[i][1]);
        CHECK_CONTAINS(err, "logical replication needs the direct endpoint; remove \"-pooler\" "
                            "from the host name");
        CHECK_NOT_CONTAINS(err, "AbC123dEf");
        CHECK_NOT_CONTAINS(err, "alex");
    }

    /* sink.type = kafka needs brokers. */
    CHECK_INT_EQ(pgcdc_config_set(&c, "source.dsn", "host=h", "t", err, sizeof err), 0);
    CHECK_INT_EQ(pgcdc_config_set(&c, "sink.type", "kafka", "t", err, sizeof err), 0);
    CHECK_INT_EQ(pgcdc_config_validate(&c, err, sizeof err), PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "kafka.bootstrap.servers");
    CHECK_INT_EQ(pgcdc_config_set(&c, "kafka.bootstrap.servers", "b:9092", "t", err, sizeof err),
                 0);
    CHECK_INT_EQ(pgcdc_config_validate(&c, err, sizeof err), 0);
    pgcdc_config_free(&c);
}

/* Run every failing path we have with secrets in play; none may show them. */
static void test_no_secret_in_messages(void)
{
    struct pgcdc_config c;
    const char *path;
    static const char *const attempts[][2] = {
        {"source.dsn", "postgres://u:hunter2@h/${NOPE_UNSET_VAR}"},
        {"source.dsn", "postgres://u:hunter2@h/${unclosed"},
        {"source.dsn", "postgres://u:hunter2@h/${bad-name}"},
        {"kafka.sasl.password", "hunter2${NOPE_UNSET_VAR}"},
        {"kafka.ssl.key.password", "hunter2${"},
        {"source.dsn:postgres://u:hunter2@h/db", "x"}, /* mangled key */
        {"source.dsn postgres://u:hunter2@h/db", "x"},
        {"kafka.sasl.password hunter2", "x"},
        {"sink.s3.secret_access_key", "hunter2${NOPE_UNSET_VAR}"},
        {"sink.s3.session_token", "hunter2${"},
    };

    unsetenv("NOPE_UNSET_VAR");
    pgcdc_config_init(&c);
    for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
        err[0] = '\0';
        CHECK(pgcdc_config_set(&c, attempts[i][0], attempts[i][1], "t", err, sizeof err) < 0);
        CHECK_NOT_CONTAINS(err, "hunter2");
        CHECK(err[0] != '\0');
    }
    CHECK(pgcdc_config_set_arg(&c, "postgres://u:hunter2@h/db", err, sizeof err) < 0);
    CHECK_NOT_CONTAINS(err, "hunter2");
    CHECK(pgcdc_config_set_arg(&c, "source.dsn:postgres://u:hunter2@h?sslmode=x", err, sizeof err) <
          0);
    CHECK_NOT_CONTAINS(err, "hunter2");

    path = write_file("postgres://u:hunter2@h/db\n");
    CHECK(pgcdc_config_load_file(&c, path, err, sizeof err) < 0);
    CHECK_NOT_CONTAINS(err, "hunter2");
    path = write_file("source.dsn = \"postgres://u:hunter2@h/db\" trailing\n");
    CHECK(pgcdc_config_load_file(&c, path, err, sizeof err) < 0);
    CHECK_NOT_CONTAINS(err, "hunter2");
    path = write_file("source.dsn = \"postgres://u:hunter2@h/db\n");
    CHECK(pgcdc_config_load_file(&c, path, err, sizeof err) < 0);
    CHECK_NOT_CONTAINS(err, "hunter2");

    char *envp[] = {"PGCDC_SOURCE_DSN=postgres://u:hunter2@h/${NOPE_UNSET_VAR}", NULL};
    CHECK(pgcdc_config_load_env(&c, envp, err, sizeof err) < 0);
    CHECK_NOT_CONTAINS(err, "hunter2");

    CHECK(pgcdc_config_key_is_secret("source.dsn"));
    CHECK(pgcdc_config_key_is_secret("kafka.sasl.password"));
    CHECK(pgcdc_config_key_is_secret("sink.http.signing_secret"));
    CHECK(pgcdc_config_key_is_secret("sink.http.header.Authorization"));
    CHECK(pgcdc_config_key_is_secret("sink.http.header.X-Api-Key"));
    CHECK(pgcdc_config_key_is_secret("sink.http.header.Cookie"));
    CHECK(!pgcdc_config_key_is_secret("sink.http.header.X-Source"));
    CHECK(!pgcdc_config_key_is_secret("sink.http.url"));
    CHECK(pgcdc_config_key_is_secret("kafka.ssl.key.password"));
    CHECK(pgcdc_config_key_is_secret("kafka.ssl.keystore.password"));
    CHECK(pgcdc_config_key_is_secret("kafka.sasl.oauthbearer.client.secret"));
    CHECK(pgcdc_config_key_is_secret("kafka.ssl.key.pem"));
    CHECK(!pgcdc_config_key_is_secret("kafka.sasl.username"));
    CHECK(!pgcdc_config_key_is_secret("kafka.bootstrap.servers"));
    CHECK(!pgcdc_config_key_is_secret("sink.type"));
    CHECK(!pgcdc_config_key_is_secret(NULL));
    pgcdc_config_free(&c);
}

static void test_table_selected(void)
{
    struct pgcdc_config c;

    pgcdc_config_init(&c);
    CHECK(pgcdc_config_table_selected(&c, "public", "users")); /* no include: all */
    CHECK(pgcdc_config_table_selected(&c, "any", "thing"));

    pgcdc_config_set(&c, "source.tables.include", "public.*, sales.orders ,app.user_*_v2", "t", err,
                     sizeof err);
    CHECK(pgcdc_config_table_selected(&c, "public", "users"));
    CHECK(pgcdc_config_table_selected(&c, "public", ""));
    CHECK(pgcdc_config_table_selected(&c, "sales", "orders"));
    CHECK(!pgcdc_config_table_selected(&c, "sales", "orders2"));
    CHECK(!pgcdc_config_table_selected(&c, "sales", "order"));
    CHECK(!pgcdc_config_table_selected(&c, "Sales", "orders")); /* names are case-sensitive */
    CHECK(!pgcdc_config_table_selected(&c, "publicx", "users"));
    CHECK(pgcdc_config_table_selected(&c, "app", "user_a_v2"));
    CHECK(pgcdc_config_table_selected(&c, "app", "user__v2"));
    CHECK(pgcdc_config_table_selected(&c, "app", "user_a_b_v2"));
    CHECK(!pgcdc_config_table_selected(&c, "app", "user_a_v3"));

    pgcdc_config_set(&c, "source.tables.exclude", "public.tmp_*,*.audit", "t", err, sizeof err);
    CHECK(pgcdc_config_table_selected(&c, "public", "users"));
    CHECK(!pgcdc_config_table_selected(&c, "public", "tmp_x"));
    CHECK(!pgcdc_config_table_selected(&c, "public", "tmp_"));
    CHECK(!pgcdc_config_table_selected(&c, "public", "audit"));
    CHECK(pgcdc_config_table_selected(&c, "public", "audit_log"));

    /* Exclude alone: everything but the excluded. */
    pgcdc_config_set(&c, "source.tables.include", "", "t", err, sizeof err);
    CHECK(pgcdc_config_table_selected(&c, "other", "t"));
    CHECK(!pgcdc_config_table_selected(&c, "other", "audit"));

    /* '*' spans the dot; other glob characters are literal; names with dots and spaces. */
    pgcdc_config_set(&c, "source.tables.exclude", "", "t", err, sizeof err);
    pgcdc_config_set(&c, "source.tables.include", "*.*,a?b.c,My Schema.Tab\"le,x.**y", "t", err,
                     sizeof err);
    CHECK(pgcdc_config_table_selected(&c, "s", "t"));
    pgcdc_config_set(&c, "source.tables.include", "a?b.c,My Schema.Tab\"le,x.**y,p*.*q", "t", err,
                     sizeof err);
    CHECK(pgcdc_config_table_selected(&c, "a?b", "c"));
    CHECK(!pgcdc_config_table_selected(&c, "axb", "c"));
    CHECK(pgcdc_config_table_selected(&c, "My Schema", "Tab\"le"));
    CHECK(pgcdc_config_table_selected(&c, "x", "y"));
    CHECK(pgcdc_config_table_selected(&c, "x", "aay"));
    CHECK(pgcdc_config_table_selected(&c, "p.s", "q")); /* "p.s.q" */
    CHECK(pgcdc_config_table_selected(&c, "p", "aq"));
    CHECK(!pgcdc_config_table_selected(&c, "p", "qa"));

    /* A name longer than any real one still works. */
    char longname[400];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    pgcdc_config_set(&c, "source.tables.include", "public.n*", "t", err, sizeof err);
    CHECK(pgcdc_config_table_selected(&c, "public", longname));
    CHECK(!pgcdc_config_table_selected(&c, longname, "n"));
    pgcdc_config_free(&c);
}

/*
 * The example file is the documentation of the keys: it must load as shipped, and with every
 * commented-out `# key = value` line switched on it must still load and name every key.
 */
static void test_example_config(void)
{
    struct pgcdc_config c;
    const char *example = "../config/pgcdc.conf.example";
    FILE *f = fopen(example, "r");
    char line[1024];
    char *on = calloc(1, 65536);
    bool seen[64] = {false};

    CHECK(f != NULL);
    if (f == NULL) {
        free(on);
        return;
    }
    pgcdc_config_init(&c);
    CHECK_INT_EQ(pgcdc_config_load_file(&c, example, err, sizeof err), 0);
    pgcdc_config_free(&c);

    while (fgets(line, sizeof line, f)) {
        const char *l = line;
        size_t klen;
        /* "# key = value": a dotted lower-case key, then " = ". */
        if (strncmp(l, "# ", 2) == 0 && l[2] >= 'a' && l[2] <= 'z' &&
            (klen = strspn(l + 2, "abcdefghijklmnopqrstuvwxyz_.0123456789")) > 0 &&
            strncmp(l + 2 + klen, " = ", 3) == 0 && memchr(l + 2, '.', klen)) {
            strcat(on, l + 2);
            for (size_t i = 0; documented_keys[i]; i++)
                if (strlen(documented_keys[i]) == klen &&
                    strncmp(documented_keys[i], l + 2, klen) == 0)
                    seen[i] = true;
        }
    }
    fclose(f);
    for (size_t i = 0; documented_keys[i]; i++) {
        CHECK(seen[i]);
        if (!seen[i])
            fprintf(stderr, "    %s is missing from %s\n", documented_keys[i], example);
    }
    CHECK_CONTAINS(on, "kafka.bootstrap.servers = ");
    CHECK_CONTAINS(on, "kafka.security.protocol = SASL_SSL");
    CHECK_CONTAINS(on, "kafka.sasl.mechanisms = PLAIN");
    CHECK_CONTAINS(on, "kafka.sasl.username = ");
    CHECK_CONTAINS(on, "kafka.sasl.password = ${KAFKA_PASSWORD}");

    setenv("KAFKA_PASSWORD", "kpw", 1);
    setenv("SOURCE_PASSWORD", "spw", 1);
    setenv("WEBHOOK_SECRET", "wsec", 1);
    setenv("S3_SECRET_ACCESS_KEY", "s3secret", 1);
    setenv("S3_SESSION_TOKEN", "s3token", 1);
    pgcdc_config_init(&c);
    const char *path = write_file(on);
    int rc = pgcdc_config_load_file(&c, path, err, sizeof err);
    CHECK_INT_EQ(rc, 0);
    if (rc != 0)
        fprintf(stderr, "    %s\n", err);
    /* The values shown for keys with a default are the defaults. */
    CHECK_STR_EQ(c.source_slot, "pgcdc");
    CHECK(c.source_create_slot == true);
    CHECK(c.source_partitions_as_root == false);
    CHECK_INT_EQ(c.source_slot_busy_timeout_ms, 60000);
    CHECK_INT_EQ(c.snapshot_mode, PGCDC_SNAPSHOT_INITIAL);
    CHECK_INT_EQ(c.sink_type, PGCDC_SINK_FILE);
    CHECK_STR_EQ(c.sink_file_dir, "./pgcdc-data");
    CHECK_U64_EQ(c.sink_file_segment_bytes, 67108864);
    CHECK_STR_EQ(c.sink_kafka_topic_prefix, "pgcdc");
    CHECK(c.sink_kafka_tombstones == true);
    CHECK_INT_EQ(c.sink_kafka_on_permanent_error, PGCDC_ON_ERROR_STOP);
    CHECK(c.sink_kafka_allow_weaker_delivery == false);
    CHECK_U64_EQ(c.sink_kafka_max_message_bytes, 0);
    CHECK_STR_EQ(c.state_dir, "./pgcdc-state");
    CHECK_INT_EQ(c.status_interval_ms, 1000);
    CHECK_INT_EQ(c.log_level, PGCDC_LOG_INFO);
    CHECK_INT_EQ(c.log_format, PGCDC_LOG_TEXT);
    CHECK_STR_EQ(kafka_get(&c, "sasl.password"), "kpw");
    CHECK_INT_EQ(c.sink_http_batch_max_events, 1000);
    CHECK_U64_EQ(c.sink_http_batch_max_bytes, 1048576);
    CHECK_INT_EQ(c.sink_http_linger_ms, 50);
    CHECK_INT_EQ(c.sink_http_timeout_ms, 10000);
    CHECK_INT_EQ(c.sink_http_on_permanent_error, PGCDC_ON_ERROR_STOP);
    CHECK_STR_EQ(c.sink_http_signing_secret, "wsec");
    CHECK_STR_EQ(c.sink_s3_region, "us-east-1");
    CHECK(c.sink_s3_path_style == false);
    CHECK_INT_EQ(c.sink_s3_flush_ms, 60000);
    CHECK_U64_EQ(c.sink_s3_flush_bytes, 67108864);
    CHECK_INT_EQ(c.sink_s3_compression, PGCDC_S3_GZIP);
    CHECK_STR_EQ(c.sink_s3_secret_access_key, "s3secret");
    CHECK_INT_EQ(pgcdc_config_validate(&c, err, sizeof err), 0);
    pgcdc_config_free(&c);
    unsetenv("S3_SECRET_ACCESS_KEY");
    unsetenv("S3_SESSION_TOKEN");
    unsetenv("KAFKA_PASSWORD");
    unsetenv("SOURCE_PASSWORD");
    free(on);
}

/*
 * The example file and the key table agree: every key of the table has a `# key = value`
 * line, and for a key with a built-in default the value shown is that default.
 */
static void test_example_matches_table(void)
{
    const char *example = "../config/pgcdc.conf.example";
    FILE *f = fopen(example, "r");
    char *text = calloc(1, 65536);
    size_t n;

    CHECK(f != NULL);
    if (f == NULL) {
        free(text);
        return;
    }
    n = fread(text + 1, 1, 65536 - 2, f);
    fclose(f);
    text[0] = '\n'; /* so that every line, the first included, follows a newline */
    text[n + 1] = '\0';
    for (size_t i = 0; i < pgcdc_config_nkeys; i++) {
        const struct pgcdc_config_key *k = &pgcdc_config_keys[i];
        char want[256];
        const char *line;

        snprintf(want, sizeof want, "\n# %s = ", k->name);
        line = strstr(text, want);
        CHECK(line != NULL);
        if (line == NULL) {
            fprintf(stderr, "    %s is missing from %s\n", k->name, example);
            continue;
        }
        if (k->def != NULL) {
            const char *v = line + strlen(want);
            size_t vlen = strcspn(v, "\n");
            CHECK(vlen == strlen(k->def) && strncmp(v, k->def, vlen) == 0);
            if (vlen != strlen(k->def) || strncmp(v, k->def, vlen) != 0)
                fprintf(stderr, "    %s: %s shows \"%.*s\", the default is \"%s\"\n", k->name,
                        example, (int)vlen, v, k->def);
        }
    }
    free(text);
}

int main(void)
{
    if (mkdtemp(tmpdir) == NULL)
        return 2;
    test_defaults();
    test_set_every_key();
    test_bad_values();
    test_unknown_key();
    test_file();
    test_env_expansion();
    test_env_mapping();
    test_set_arg();
    test_precedence();
    test_kafka_passthrough();
    test_validate();
    test_no_secret_in_messages();
    test_table_selected();
    test_example_config();
    test_example_matches_table();
    for (int i = 0; i < nfiles; i++) {
        char p[300];
        snprintf(p, sizeof p, "%s/c%d.conf", tmpdir, i);
        unlink(p);
    }
    rmdir(tmpdir);
    return UNIT_DONE();
}
