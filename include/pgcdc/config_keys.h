/*
 * config_keys.h — the table of configuration keys: for each key its name, its type, where it
 * lives in struct pgcdc_config, the range or names it accepts, its built-in default and what
 * a value must look like. config.c parses against it; setting, the environment mapping, the
 * unknown-key suggestion and the example file's test all read it, so a key added to the
 * table is known everywhere at once.
 *
 * Keys under `kafka.` are not in the table: they pass through to librdkafka.
 * The table and every string it points to are static; nothing here allocates.
 */
#ifndef PGCDC_CONFIG_KEYS_H
#define PGCDC_CONFIG_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum pgcdc_config_key_type {
    PGCDC_KEY_STR,      /* any non-empty string */
    PGCDC_KEY_DSN,      /* source.dsn: empty means unset, the value is secret */
    PGCDC_KEY_SLOT,     /* a replication slot name */
    PGCDC_KEY_TOPIC,    /* a Kafka topic name fragment */
    PGCDC_KEY_PATTERNS, /* comma list of schema.table globs; empty means unset */
    PGCDC_KEY_BOOL,
    PGCDC_KEY_INT,      /* int within [min, max] */
    PGCDC_KEY_U64,      /* uint64_t within [min, max] */
    PGCDC_KEY_ENUM,     /* one of names[], stored as int (the index) */
    PGCDC_KEY_HOSTPORT, /* HOST:PORT; empty means off */
};

struct pgcdc_config_key {
    const char *name;
    enum pgcdc_config_key_type type;
    size_t off;               /* offsetof(struct pgcdc_config, the key's field) */
    uint64_t min, max;        /* PGCDC_KEY_INT and PGCDC_KEY_U64 */
    const char *const *names; /* PGCDC_KEY_ENUM: NULL-terminated, index = stored value */
    const char *def;          /* the built-in default as a file would write it; NULL: unset */
    /*
     * What a value must be, ending "expected ..." in a bad-value message. NULL where the
     * type says it (a number's range, an enum's names) or anything is taken (source.dsn).
     */
    const char *help;
};

extern const struct pgcdc_config_key pgcdc_config_keys[];
extern const size_t pgcdc_config_nkeys;

/* The key named name, or NULL. */
const struct pgcdc_config_key *pgcdc_config_key_find(const char *name);

/* The key whose name is nearest to name (edit distance, stored in *dist), or NULL. */
const struct pgcdc_config_key *pgcdc_config_key_nearest(const char *name, size_t *dist);

/*
 * The key an environment variable sets: PGCDC_ then the name upper-cased with '.' as '_'
 * (PGCDC_SOURCE_DSN -> source.dsn). var is the name alone, without "=value". NULL if none.
 */
const struct pgcdc_config_key *pgcdc_config_key_from_env(const char *var);

/*
 * Whether a key's value is a secret that must never appear in a message or a log line:
 * source.dsn, sink.s3.secret_access_key and sink.s3.session_token, and kafka.* keys naming
 * a password, secret, private key or OAuth config.
 */
bool pgcdc_config_key_is_secret(const char *key);

#endif
