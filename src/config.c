/*
 * config.c — the settings, from built-in defaults, a `-c` file, PGCDC_<KEY> environment
 * variables and -o, as README and config/pgcdc.conf.example describe them.
 *
 * Which keys there are, their types, ranges and defaults is the table in config_keys.c;
 * this file parses and checks values against it.
 *
 * No message built here ever holds the value of a secret key (source.dsn, kafka.*password*
 * and friends): a value is quoted in an error only for keys that are not secret.
 * The file format is small enough (no sections, no continuation lines) that a line reader
 * of our own is shorter than adapting an INI library to report file:line on *our* errors.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pgcdc/common.h"
#include "pgcdc/config.h"
#include "pgcdc/config_keys.h"
#include "pgcdc/http.h"

#include <libpq-fe.h>
#include "pgcdc/log.h"

#define EXAMPLE_HINT "see config/pgcdc.conf.example for the valid keys"

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char **str_field(struct pgcdc_config *c, const struct pgcdc_config_key *k)
{
    return (char **)((char *)c + k->off);
}

/* Replace *slot with a copy of s (NULL clears it). Returns 0 or PGCDC_ERR on ENOMEM. */
static int set_str(char **slot, const char *s)
{
    char *dup = NULL;

    if (s != NULL && (dup = strdup(s)) == NULL)
        return PGCDC_ERR;
    free(*slot);
    *slot = dup;
    return PGCDC_OK;
}

static int set_typed(struct pgcdc_config *c, const struct pgcdc_config_key *k, const char *v,
                     const char *origin, char *err, size_t errlen);

int pgcdc_config_init(struct pgcdc_config *c)
{
    memset(c, 0, sizeof *c);
    /* The defaults are parsed like any other value, so the table holds them as text. */
    for (size_t i = 0; i < pgcdc_config_nkeys; i++) {
        const struct pgcdc_config_key *k = &pgcdc_config_keys[i];
        if (k->def != NULL && set_typed(c, k, k->def, "built-in default", NULL, 0) < 0) {
            pgcdc_config_free(c);
            return PGCDC_ERR;
        }
    }
    return PGCDC_OK;
}

void pgcdc_config_free(struct pgcdc_config *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < pgcdc_config_nkeys; i++) {
        const struct pgcdc_config_key *k = &pgcdc_config_keys[i];
        if (k->type == PGCDC_KEY_STR || k->type == PGCDC_KEY_DSN || k->type == PGCDC_KEY_SLOT ||
            k->type == PGCDC_KEY_TOPIC || k->type == PGCDC_KEY_PATTERNS ||
            k->type == PGCDC_KEY_HOSTPORT)
            free(*str_field(c, k));
    }
    pgcdc_config_kv_free(c->kafka, c->nkafka);
    pgcdc_config_kv_free(c->http_headers, c->nhttp_headers);
    memset(c, 0, sizeof *c);
}

/* Only dotted names of [A-Za-z0-9_-] are echoed back; anything else may be a mangled secret. */
static bool key_is_printable(const char *key)
{
    if (*key == '\0' || strlen(key) > 100)
        return false;
    for (const char *p = key; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
            return false;
    return true;
}

static void unknown_key(const char *key, const char *origin, char *err, size_t errlen)
{
    const struct pgcdc_config_key *best;
    size_t bestd;

    if (!key_is_printable(key)) {
        seterr(err, errlen,
               "invalid configuration key (at %s): keys are dotted names like sink.type; %s",
               origin, EXAMPLE_HINT);
        return;
    }
    best = pgcdc_config_key_nearest(key, &bestd);
    if (best != NULL && bestd <= 3)
        seterr(err, errlen, "unknown configuration key \"%s\" (at %s); did you mean \"%s\"? %s",
               key, origin, best->name, EXAMPLE_HINT);
    else
        seterr(err, errlen, "unknown configuration key \"%s\" (at %s); %s", key, origin,
               EXAMPLE_HINT);
}

/* How a value is shown in a message: quoted, or hidden for secrets. */
static void show_value(const char *key, const char *value, char *buf, size_t len)
{
    if (pgcdc_config_key_is_secret(key)) {
        snprintf(buf, len, "(value hidden)");
        return;
    }
    snprintf(buf, len, "\"%.200s\"", value);
    /* A message is one line: control bytes from -o or the environment become '?'. */
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
}

/*
 * Expand ${NAME} from the environment into a new string the caller frees (*out).
 * "$${" stands for a literal "${", so a value can still hold one. Unset NAME is an error
 * that names NAME; the value itself is not quoted (it may be a secret).
 */
static int expand_env(const char *key, const char *value, const char *origin, char **out, char *err,
                      size_t errlen)
{
    size_t cap = strlen(value) + 1, len = 0;
    char *res = malloc(cap);
    const char *p = value;

    if (res == NULL)
        goto nomem;
    while (*p) {
        const char *add = p;
        size_t addlen = 1;

        if (p[0] == '$' && p[1] == '$' && p[2] == '{') {
            add = "${";
            addlen = 2;
            p += 3;
        } else if (p[0] == '$' && p[1] == '{') {
            const char *close = strchr(p + 2, '}');
            char name[256];
            size_t nlen;

            if (close == NULL) {
                seterr(err, errlen,
                       "%s (at %s): \"${\" without a closing \"}\"; write "
                       "${NAME} to use environment variable NAME, or $${ for a literal ${",
                       key, origin);
                goto fail;
            }
            nlen = (size_t)(close - (p + 2));
            bool ok =
                nlen > 0 && nlen < sizeof name && (isalpha((unsigned char)p[2]) || p[2] == '_');
            for (size_t i = 0; ok && i < nlen; i++)
                ok = isalnum((unsigned char)p[2 + i]) || p[2 + i] == '_';
            if (!ok) {
                seterr(err, errlen,
                       "%s (at %s): bad variable reference in the value; ${NAME} "
                       "takes a name of letters, digits and '_'",
                       key, origin);
                goto fail;
            }
            memcpy(name, p + 2, nlen);
            name[nlen] = '\0';
            add = getenv(name);
            if (add == NULL) {
                seterr(err, errlen, "environment variable %s is not set (used by %s at %s)", name,
                       key, origin);
                goto fail;
            }
            addlen = strlen(add);
            p = close + 1;
        } else {
            p++;
        }
        if (len + addlen + 1 > cap) {
            size_t ncap = (len + addlen + 1) * 2;
            char *nres = realloc(res, ncap);
            if (nres == NULL)
                goto nomem;
            res = nres;
            cap = ncap;
        }
        memcpy(res + len, add, addlen);
        len += addlen;
    }
    res[len] = '\0';
    *out = res;
    return PGCDC_OK;
nomem:
    seterr(err, errlen, "out of memory");
    free(res);
    return PGCDC_ERR;
fail:
    free(res);
    return PGCDC_ERR_CONFIG;
}

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "on", "1", "yes"};
    static const char *const no[] = {"false", "off", "0", "no"};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* A whole positive decimal number in [min, max]: no sign, no suffix, no spaces. */
static int parse_u64(const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t n = 0;

    if (*v == '\0')
        return -1;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        if (n > (UINT64_MAX - 9) / 10)
            return -1;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    if (n < min || n > max)
        return -1;
    *out = n;
    return 0;
}

/* HOST:PORT, HOST may be [v6]; the port 1-65535. */
static int check_hostport(const char *v)
{
    const char *colon = strrchr(v, ':');
    uint64_t port;

    if (colon == NULL || colon == v)
        return -1;
    if (v[0] == '[' && colon[-1] != ']')
        return -1;
    if (v[0] != '[' && memchr(v, ':', (size_t)(colon - v)) != NULL)
        return -1; /* a bare IPv6 address is ambiguous; it needs brackets */
    for (const char *p = v; p < colon; p++)
        if (isspace((unsigned char)*p))
            return -1;
    return parse_u64(colon + 1, 1, 65535, &port);
}

/* PostgreSQL accepts slot names of lower-case letters, digits and '_', at most 63 bytes. */
static int check_slot(const char *v)
{
    size_t n = strlen(v);

    if (n == 0 || n > 63)
        return -1;
    for (const char *p = v; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return -1;
    return 0;
}

/* Kafka topic names are [A-Za-z0-9._-], at most 249 bytes; leave room for schema.table. */
static int check_topic(const char *v)
{
    size_t n = strlen(v);

    if (n == 0 || n > 120)
        return -1;
    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
            return -1;
    return 0;
}

/*
 * Step through a comma-separated list: *entry and *len get the next entry with surrounding
 * blanks trimmed (possibly empty). Returns false once the list is exhausted.
 */
static bool next_entry(const char **cursor, const char **entry, size_t *len)
{
    const char *p = *cursor;
    if (p == NULL)
        return false;
    const char *comma = strchr(p, ',');
    const char *s = p, *e = comma ? comma : p + strlen(p);
    while (s < e && isspace((unsigned char)*s))
        s++;
    while (e > s && isspace((unsigned char)e[-1]))
        e--;
    *entry = s;
    *len = (size_t)(e - s);
    *cursor = comma ? comma + 1 : NULL;
    return true;
}

/* Each comma-separated entry must be non-empty "schema.table" (with '*' allowed). */
static int check_patterns(const char *v)
{
    const char *s;
    size_t n;
    for (const char *cur = v; next_entry(&cur, &s, &n);)
        if (n == 0 || memchr(s, '.', n) == NULL)
            return -1;
    return 0;
}


static void trim(char **s)
{
    char *p = *s, *e;

    while (isspace((unsigned char)*p))
        p++;
    e = p + strlen(p);
    while (e > p && isspace((unsigned char)e[-1]))
        *--e = '\0';
    *s = p;
}

/* Set one typed key from an already expanded value. */
static int set_typed(struct pgcdc_config *c, const struct pgcdc_config_key *k, const char *v,
                     const char *origin, char *err, size_t errlen)
{
    char shown[256];
    bool b;
    uint64_t n;

    switch (k->type) {
    case PGCDC_KEY_DSN:
    case PGCDC_KEY_PATTERNS:
    case PGCDC_KEY_HOSTPORT:
        if (*v == '\0') /* empty: unset (all tables, no exclusions, metrics off) */
            return set_str(str_field(c, k), NULL) < 0 ? PGCDC_ERR : PGCDC_OK;
        if (k->type == PGCDC_KEY_PATTERNS && check_patterns(v) < 0)
            break;
        if (k->type == PGCDC_KEY_HOSTPORT && check_hostport(v) < 0)
            break;
        goto store;
    case PGCDC_KEY_STR:
        if (*v == '\0')
            break;
        goto store;
    case PGCDC_KEY_SLOT:
        if (check_slot(v) < 0)
            break;
        goto store;
    case PGCDC_KEY_TOPIC:
        if (check_topic(v) < 0)
            break;
        goto store;
    case PGCDC_KEY_BOOL:
        if (parse_bool(v, &b) < 0)
            break;
        *(bool *)((char *)c + k->off) = b;
        return PGCDC_OK;
    case PGCDC_KEY_INT:
    case PGCDC_KEY_U64:
        if (parse_u64(v, k->min, k->max, &n) < 0) {
            char range[128];
            snprintf(range, sizeof range, "a whole number from %llu to %llu",
                     (unsigned long long)k->min, (unsigned long long)k->max);
            show_value(k->name, v, shown, sizeof shown);
            seterr(err, errlen, "bad value %s for %s (at %s): expected %s", shown, k->name, origin,
                   k->help ? k->help : range);
            return PGCDC_ERR_CONFIG;
        }
        if (k->type == PGCDC_KEY_INT)
            *(int *)((char *)c + k->off) = (int)n;
        else
            *(uint64_t *)((char *)c + k->off) = n;
        return PGCDC_OK;
    case PGCDC_KEY_ENUM:
        for (int i = 0; k->names[i]; i++) {
            if (strcmp(v, k->names[i]) == 0) {
                /* Every enum field of struct pgcdc_config is int-sized. */
                *(int *)((char *)c + k->off) = i;
                return PGCDC_OK;
            }
        }
        {
            char list[128] = "";
            for (int i = 0; k->names[i]; i++) {
                if (i > 0)
                    strncat(list, k->names[i + 1] ? ", " : " or ", sizeof list - strlen(list) - 1);
                strncat(list, k->names[i], sizeof list - strlen(list) - 1);
            }
            show_value(k->name, v, shown, sizeof shown);
            seterr(err, errlen, "bad value %s for %s (at %s): expected %s", shown, k->name, origin,
                   list);
            return PGCDC_ERR_CONFIG;
        }
    }
    show_value(k->name, v, shown, sizeof shown);
    seterr(err, errlen, "bad value %s for %s (at %s): expected %s", shown, k->name, origin,
           k->help ? k->help : "something else");
    return PGCDC_ERR_CONFIG;
store:
    if (set_str(str_field(c, k), v) < 0) {
        seterr(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    return PGCDC_OK;
}

int pgcdc_config_set(struct pgcdc_config *c, const char *key, const char *value, const char *origin,
                     char *err, size_t errlen)
{
    const struct pgcdc_config_key *k = NULL;
    char *expanded = NULL;
    int rc;

    if (origin == NULL)
        origin = "-o";
    if (key == NULL || value == NULL) {
        seterr(err, errlen, "configuration key or value missing (at %s)", origin);
        return PGCDC_ERR_CONFIG;
    }
    /* Families of keys outside the table: kafka.* and sink.http.header.<Name>. */
    size_t fam = strncmp(key, "kafka.", 6) == 0                ? 6
                 : strncmp(key, PGCDC_HTTP_HEADER_KEY, 17) == 0 ? 17
                                                                : 0;
    if (fam == 17 && !pgcdc_http_token_ok(key + 17)) {
        seterr(err, errlen, "a sink.http.header.<Name> key (at %s) has a header name that is not "
               "an HTTP token: use letters, digits and !#$%%&'*+-.^_`|~ only", origin);
        return PGCDC_ERR_CONFIG;
    }
    if (fam) {
        if (!key_is_printable(key) || key[fam] == '\0' || key[fam] == '.') {
            unknown_key(key, origin, err, errlen);
            return PGCDC_ERR_CONFIG;
        }
    } else if ((k = pgcdc_config_key_find(key)) == NULL) {
        unknown_key(key, origin, err, errlen);
        return PGCDC_ERR_CONFIG;
    }
    rc = expand_env(key, value, origin, &expanded, err, errlen);
    if (rc < 0)
        return rc;
    if (k == NULL && fam == 6)
        rc = pgcdc_config_kv_set(&c->kafka, &c->nkafka, key + 6, expanded, err, errlen);
    else if (k == NULL)
        rc = pgcdc_config_kv_set(&c->http_headers, &c->nhttp_headers, key + 17, expanded, err,
                                 errlen);
    else
        rc = set_typed(c, k, expanded, origin, err, errlen);
    free(expanded);
    return rc;
}

/*
 * Split one file line into key and value, in place. Returns 1 for a pair, 0 for a blank or
 * comment line, -1 for a malformed line (message in err; the line is never quoted, since
 * it might be a stray secret).
 */
static int split_line(char *line, const char *origin, char **key, char **value, char *err,
                      size_t errlen)
{
    char *eq, *v, *hash;

    trim(&line);
    if (*line == '\0' || *line == '#')
        return 0;
    eq = strchr(line, '=');
    if (eq == NULL) {
        seterr(err, errlen, "line has no \"=\" (at %s); expected key = value", origin);
        return -1;
    }
    *eq = '\0';
    *key = line;
    trim(key);
    v = eq + 1;
    trim(&v);
    if (*v == '"') {
        /* "quoted": literal ('#', edge spaces, '"'). It closes at the first '"' followed only
         * by blanks and perhaps a comment, quotes and all: `"abc" # it's "mine"` is abc. */
        char *close = strchr(v + 1, '"'), *rest = close;
        while (close != NULL) {
            for (rest = close + 1; isspace((unsigned char)*rest); rest++)
                ;
            if (*rest == '\0' || *rest == '#')
                break;
            close = strchr(close + 1, '"');
        }
        if (close == NULL) {
            seterr(err, errlen, "%s (at %s): %s", key_is_printable(*key) ? *key : "value", origin,
                   rest == NULL ? "value opens a '\"' quote but does not close it"
                                : "text after the closing '\"' of a quoted value");
            return -1;
        }
        *close = '\0';
        *value = v + 1;
        return 1;
    }
    /*
     * '#' starts a comment at the start of a line or after whitespace; elsewhere it is part
     * of the value, since passwords and DSNs may hold one.
     */
    for (hash = v; (hash = strchr(hash, '#')) != NULL; hash++) {
        if (hash == v || isspace((unsigned char)hash[-1])) {
            *hash = '\0';
            trim(&v);
            break;
        }
    }
    if (**key == '\0') {
        seterr(err, errlen, "line has no key before \"=\" (at %s); expected key = value", origin);
        return -1;
    }
    *value = v;
    return 1;
}

int pgcdc_config_load_file(struct pgcdc_config *c, const char *path, char *err, size_t errlen)
{
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    unsigned long lineno = 0;
    char origin[512];
    ssize_t n;
    int rc = PGCDC_OK;

    f = fopen(path, "r");
    if (f == NULL) {
        seterr(err, errlen, "cannot read configuration file \"%s\": %s", path, strerror(errno));
        return PGCDC_ERR_CONFIG;
    }
    while ((n = getline(&line, &cap, f)) >= 0) {
        char *key, *value;
        int r;

        lineno++;
        snprintf(origin, sizeof origin, "%s:%lu", path, lineno);
        if (strlen(line) != (size_t)n) {
            seterr(err, errlen, "NUL byte in configuration file (at %s)", origin);
            rc = PGCDC_ERR_CONFIG;
            goto out;
        }
        r = split_line(line, origin, &key, &value, err, errlen);
        if (r < 0) {
            rc = PGCDC_ERR_CONFIG;
            goto out;
        }
        if (r == 0)
            continue;
        rc = pgcdc_config_set(c, key, value, origin, err, errlen);
        if (rc < 0)
            goto out;
    }
    if (ferror(f)) {
        seterr(err, errlen, "cannot read configuration file \"%s\": %s", path, strerror(errno));
        rc = PGCDC_ERR_CONFIG;
    }
out:
    free(line);
    fclose(f);
    return rc;
}

/*
 * The environment is shared with unrelated PGCDC_* variables (scripts and test harnesses
 * set their own), so a PGCDC_ name that matches no key is ignored rather than an error.
 */
int pgcdc_config_load_env(struct pgcdc_config *c, char **envp, char *err, size_t errlen)
{
    char name[256];
    char key[256];

    if (envp == NULL)
        return PGCDC_OK;
    for (char **e = envp; *e; e++) {
        const char *eq = strchr(*e, '=');
        const struct pgcdc_config_key *k;
        size_t nlen;
        int rc;

        if (eq == NULL || strncmp(*e, "PGCDC_", 6) != 0)
            continue;
        nlen = (size_t)(eq - *e);
        if (nlen >= sizeof name)
            continue;
        memcpy(name, *e, nlen);
        name[nlen] = '\0';

        key[0] = '\0';
        if ((k = pgcdc_config_key_from_env(name)) != NULL)
            snprintf(key, sizeof key, "%s", k->name);
        if (key[0] == '\0' && strncmp(name, "PGCDC_KAFKA_", 12) == 0 && name[12] != '\0') {
            /* librdkafka property names are dotted lower case: bootstrap.servers. */
            size_t j = 0;
            memcpy(key, "kafka.", 6);
            for (const char *p = name + 12; *p && 6 + j + 1 < sizeof key; p++, j++)
                key[6 + j] = *p == '_' ? '.' : (char)tolower((unsigned char)*p);
            key[6 + j] = '\0';
        }
        if (key[0] == '\0')
            continue;
        rc = pgcdc_config_set(c, key, eq + 1, "environment", err, errlen);
        if (rc < 0) {
            /* Say which variable, since the user set a variable, not a key. */
            char inner[768];
            snprintf(inner, sizeof inner, "%s", err ? err : "");
            seterr(err, errlen, "%s: %s", name, inner);
            return rc;
        }
    }
    return PGCDC_OK;
}

int pgcdc_config_set_arg(struct pgcdc_config *c, const char *arg, char *err, size_t errlen)
{
    char *copy, *key, *value, *eq;
    int rc;

    if (arg == NULL || (eq = strchr(arg, '=')) == NULL) {
        seterr(err, errlen, "-o expects KEY=VALUE (e.g. -o sink.type=kafka)");
        return PGCDC_ERR_CONFIG;
    }
    copy = strdup(arg);
    if (copy == NULL) {
        seterr(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    eq = copy + (eq - arg);
    *eq = '\0';
    key = copy;
    value = eq + 1;
    trim(&key);
    trim(&value);
    rc = pgcdc_config_set(c, key, value, "-o", err, errlen);
    free(copy);
    return rc;
}

/*
 * Copy the host part(s) of a DSN into out ("h1,h2"), for the pooler check. URI:
 * postgres://[userinfo@]hosts[/db][?...&host=...]; key=value: host=... (quoted or not).
 * Never copies user info or a password.
 */
static void dsn_hosts(const char *dsn, char *out, size_t outlen)
{
    size_t o = 0;
    const char *p;

    out[0] = '\0';
#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (o + 1 < outlen) {                                                                      \
            out[o++] = (ch);                                                                       \
            out[o] = '\0';                                                                         \
        }                                                                                          \
    } while (0)
    if (strncmp(dsn, "postgresql://", 13) == 0 || strncmp(dsn, "postgres://", 11) == 0) {
        const char *rest = strstr(dsn, "://") + 3;
        const char *at = rest, *hend, *q;

        /* As libpq reads it: user info runs to the first '@' before any '/' (a '?' in a
         * password belongs to the password). */
        while (*at && *at != '@' && *at != '/')
            at++;
        if (*at == '@')
            rest = at + 1;
        q = strchr(rest, '?');
        hend = rest + strcspn(rest, "/?");
        for (p = rest; p < hend; p++)
            PUT(*p);
        /* host=... in the query string, which libpq also honours. */
        for (p = q; p != NULL && *p; p = strchr(p, '&')) {
            p++;
            if (strncmp(p, "host=", 5) == 0) {
                PUT(',');
                for (p += 5; *p && *p != '&'; p++)
                    PUT(*p);
                if (*p == '\0')
                    break;
            }
        }
        return;
    }
    for (p = dsn; *p;) {
        const char *k;
        size_t klen;
        while (isspace((unsigned char)*p))
            p++;
        k = p;
        while (*p && *p != '=' && !isspace((unsigned char)*p))
            p++;
        klen = (size_t)(p - k);
        while (isspace((unsigned char)*p))
            p++;
        if (*p != '=') {
            if (*p)
                p++;
            continue;
        }
        p++;
        while (isspace((unsigned char)*p))
            p++;
        bool is_host = klen == 4 && strncmp(k, "host", 4) == 0;
        if (is_host && o > 0)
            PUT(',');
        if (*p == '\'') {
            for (p++; *p && *p != '\''; p++) {
                if (*p == '\\' && p[1])
                    p++;
                if (is_host)
                    PUT(*p);
            }
            if (*p)
                p++;
        } else {
            for (; *p && !isspace((unsigned char)*p); p++) {
                if (*p == '\\' && p[1])
                    p++;
                if (is_host)
                    PUT(*p);
            }
        }
    }
#undef PUT
}

int pgcdc_config_check_dsn(const char *what, const char *dsn, char *err, size_t errlen)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &msg);
    /* libpq's message quotes the part it could not read, which may be the password. */
    PQfreemem(msg);
    if (opts == NULL) {
        seterr(err, errlen,
               "%s cannot be parsed as a libpq connection string (not shown: it may hold a "
               "password): check the URI or key=value syntax; in a URI, percent-encode "
               "special characters of the password (%% as %%25, @ as %%40)",
               what);
        return PGCDC_ERR_CONFIG;
    }
    PQconninfoFree(opts);
    return PGCDC_OK;
}

int pgcdc_config_validate(struct pgcdc_config *c, char *err, size_t errlen)
{
    char hosts[512];

    if (c->source_dsn == NULL || c->source_dsn[0] == '\0') {
        seterr(err, errlen,
               "source.dsn is not set: give it with -o source.dsn=postgres://... , "
               "PGCDC_SOURCE_DSN or in the -c file");
        return PGCDC_ERR_CONFIG;
    }
    if (pgcdc_config_check_dsn("source.dsn", c->source_dsn, err, errlen) < 0)
        return PGCDC_ERR_CONFIG;
    dsn_hosts(c->source_dsn, hosts, sizeof hosts);
    for (char *h = hosts; *h;) {
        size_t n = strcspn(h, ",");
        char save = h[n];
        h[n] = '\0';
        /* Drop a :port, then look for Neon's pooler marker in the host name. */
        char *colon = strrchr(h, ':');
        if (colon != NULL && h[0] != '[')
            *colon = '\0';
        if (strcasestr(h, "-pooler") != NULL) {
            seterr(err, errlen,
                   "source.dsn points at a Neon pooler endpoint (%.200s): logical "
                   "replication needs the direct endpoint; remove \"-pooler\" from the host name",
                   h);
            return PGCDC_ERR_CONFIG;
        }
        h[n] = save;
        h += n;
        if (*h == ',')
            h++;
    }
    if (c->sink_type == PGCDC_SINK_KAFKA) {
        bool have = false;
        for (size_t i = 0; i < c->nkafka; i++)
            if ((strcmp(c->kafka[i].key, "bootstrap.servers") == 0 ||
                 strcmp(c->kafka[i].key, "metadata.broker.list") == 0) &&
                c->kafka[i].value[0] != '\0')
                have = true;
        if (!have) {
            seterr(err, errlen,
                   "sink.type is kafka but kafka.bootstrap.servers is not set: give "
                   "it with -o kafka.bootstrap.servers=HOST:9092 , PGCDC_KAFKA_BOOTSTRAP_SERVERS "
                   "or in the -c file");
            return PGCDC_ERR_CONFIG;
        }
    }
    return PGCDC_OK;
}

/* '*' matches any run of characters (including none and including '.'); all else literally. */
static bool glob_match(const char *pat, size_t plen, const char *s)
{
    size_t pi = 0, si = 0, star = (size_t)-1, mark = 0;
    size_t slen = strlen(s);

    while (si < slen) {
        if (pi < plen && pat[pi] == '*') {
            star = pi++;
            mark = si;
        } else if (pi < plen && pat[pi] == s[si]) {
            pi++;
            si++;
        } else if (star != (size_t)-1) {
            pi = star + 1;
            si = ++mark;
        } else {
            return false;
        }
    }
    while (pi < plen && pat[pi] == '*')
        pi++;
    return pi == plen;
}

static bool list_matches(const char *list, const char *name)
{
    const char *s;
    size_t n;
    for (const char *cur = list; next_entry(&cur, &s, &n);)
        if (n > 0 && glob_match(s, n, name))
            return true;
    return false;
}

bool pgcdc_config_table_selected(const struct pgcdc_config *c, const char *schema,
                                 const char *table)
{
    char stackbuf[256];
    char *name = stackbuf;
    size_t need = strlen(schema) + 1 + strlen(table) + 1;
    bool sel;

    if (c->source_tables_include == NULL && c->source_tables_exclude == NULL)
        return true;
    /* PostgreSQL names are at most 63 bytes, so the heap is only for the impossible case. */
    if (need > sizeof stackbuf && (name = malloc(need)) == NULL)
        return true; /* when in doubt, capture: a dropped change cannot be recovered */
    snprintf(name, need, "%s.%s", schema, table);
    sel = c->source_tables_include == NULL || list_matches(c->source_tables_include, name);
    if (sel && c->source_tables_exclude != NULL && list_matches(c->source_tables_exclude, name))
        sel = false;
    if (name != stackbuf)
        free(name);
    return sel;
}
