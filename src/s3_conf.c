/*
 * s3_conf.c — sink.s3.* settings resolved into one target: bucket, prefix, endpoint,
 * addressing style, signing region, credentials (see s3_conf.h).
 */
#include "pgcdc/s3_conf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc/common.h"

#define URL_HELP "expected s3://BUCKET or s3://BUCKET/PREFIX (e.g. s3://analytics/cdc)"

/* Bucket names as S3 takes them (3-63 of [a-z0-9.-]); '_' too, for GCS and MinIO. */
static bool bucket_ok(const char *b, size_t n)
{
    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'))
            return false;
    }
    return true;
}

int pgcdc_s3_conf_parse_url(const char *url, char bucket[64], char **prefix, char *err,
                            size_t errlen)
{
    *prefix = NULL;
    if (!url) {
        snprintf(err, errlen, "sink.s3.url is not set, and sink.type = s3 needs it: " URL_HELP);
        return PGCDC_ERR_CONFIG;
    }
    if (strncmp(url, "s3://", 5) != 0) {
        snprintf(err, errlen, "sink.s3.url \"%.200s\" is not an S3 URL: " URL_HELP, url);
        return PGCDC_ERR_CONFIG;
    }
    const char *b = url + 5;
    size_t n = strcspn(b, "/?#");
    if (b[n] == '?' || b[n] == '#' || strchr(b, '?') || strchr(b, '#')) {
        snprintf(err, errlen, "sink.s3.url \"%.200s\" has a query or fragment: " URL_HELP, url);
        return PGCDC_ERR_CONFIG;
    }
    if (!bucket_ok(b, n)) {
        snprintf(err, errlen,
                 "sink.s3.url \"%.200s\": \"%.*s\" is not a bucket name (3-63 lower-case "
                 "letters, digits, '.', '-'): " URL_HELP,
                 url, (int)(n > 80 ? 80 : n), b);
        return PGCDC_ERR_CONFIG;
    }
    memcpy(bucket, b, n);
    bucket[n] = '\0';
    const char *p = b + n;
    while (*p == '/')
        p++;
    size_t plen = strlen(p);
    while (plen > 0 && p[plen - 1] == '/')
        plen--;
    for (size_t i = 0; i + 1 < plen; i++)
        if (p[i] == '/' && p[i + 1] == '/') {
            snprintf(err, errlen, "sink.s3.url \"%.200s\" has an empty path segment: " URL_HELP,
                     url);
            return PGCDC_ERR_CONFIG;
        }
    if (plen > 512) {
        snprintf(err, errlen, "sink.s3.url: the prefix is longer than 512 bytes: " URL_HELP);
        return PGCDC_ERR_CONFIG;
    }
    *prefix = strndup(p, plen);
    if (!*prefix) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    return PGCDC_OK;
}

/* The setting when given, else the environment variable (NULL when neither). */
static const char *setting_or_env(const char *set, const char *var, bool *from_env)
{
    if (set && *set)
        return set;
    const char *v = getenv(var);
    if (v && *v) {
        *from_env = true;
        return v;
    }
    return NULL;
}

int pgcdc_s3_conf_resolve(struct pgcdc_s3_target *t, const struct pgcdc_config *cfg, char *err,
                          size_t errlen)
{
    memset(t, 0, sizeof(*t));
    int rc = pgcdc_s3_conf_parse_url(cfg->sink_s3_url, t->bucket, &t->prefix, err, errlen);
    if (rc < 0)
        return rc;
    snprintf(t->region, sizeof(t->region), "%s", cfg->sink_s3_region);
    snprintf(t->sigv4, sizeof(t->sigv4), "aws:amz:%s:s3", t->region);
    t->path_style = cfg->sink_s3_path_style;
    if (cfg->sink_s3_endpoint) {
        const char *e = cfg->sink_s3_endpoint;
        if (strncmp(e, "http://", 7) != 0 && strncmp(e, "https://", 8) != 0) {
            snprintf(err, errlen,
                     "sink.s3.endpoint \"%.200s\" is not an http:// or https:// URL: give the "
                     "store's base URL, e.g. https://ACCOUNT.r2.cloudflarestorage.com",
                     e);
            pgcdc_s3_conf_free(t);
            return PGCDC_ERR_CONFIG;
        }
        size_t n = strlen(e);
        while (n > 0 && e[n - 1] == '/')
            n--;
        t->endpoint = strndup(e, n);
    } else if (asprintf(&t->endpoint, "https://s3.%s.amazonaws.com", t->region) < 0) {
        t->endpoint = NULL;
    }
    /* A dotted bucket name does not match AWS's wildcard certificate as a host name. */
    if (strchr(t->bucket, '.'))
        t->path_style = true;

    bool env = false;
    const char *id = setting_or_env(cfg->sink_s3_access_key_id, "AWS_ACCESS_KEY_ID", &env);
    const char *secret =
        setting_or_env(cfg->sink_s3_secret_access_key, "AWS_SECRET_ACCESS_KEY", &env);
    const char *token = setting_or_env(cfg->sink_s3_session_token, "AWS_SESSION_TOKEN", &env);
    if (!id || !secret) {
        snprintf(err, errlen,
                 "no S3 credentials (%s is missing): set sink.s3.access_key_id and "
                 "sink.s3.secret_access_key (or PGCDC_SINK_S3_ACCESS_KEY_ID and "
                 "PGCDC_SINK_S3_SECRET_ACCESS_KEY), or AWS's environment variables "
                 "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; web identity (IRSA) and instance "
                 "metadata are not read",
                 !id ? "the access key id" : "the secret access key");
        pgcdc_s3_conf_free(t);
        return PGCDC_ERR_CONFIG;
    }
    if (strchr(id, ':') || strlen(id) >= sizeof(t->access_key_id)) {
        snprintf(err, errlen,
                 "the S3 access key id is not one (too long, or holds ':'): check "
                 "sink.s3.access_key_id or AWS_ACCESS_KEY_ID");
        pgcdc_s3_conf_free(t);
        return PGCDC_ERR_CONFIG;
    }
    t->creds_from_env = env;
    snprintf(t->access_key_id, sizeof(t->access_key_id), "%s", id);
    if (asprintf(&t->userpwd, "%s:%s", id, secret) < 0)
        t->userpwd = NULL;
    if (token && asprintf(&t->token_header, "x-amz-security-token: %s", token) < 0)
        t->token_header = NULL;
    if (!t->endpoint || !t->userpwd || (token && !t->token_header)) {
        snprintf(err, errlen, "out of memory");
        pgcdc_s3_conf_free(t);
        return PGCDC_ERR;
    }
    return PGCDC_OK;
}

void pgcdc_s3_conf_free(struct pgcdc_s3_target *t)
{
    free(t->prefix);
    free(t->endpoint);
    if (t->userpwd) {
        memset(t->userpwd, 0, strlen(t->userpwd));
        free(t->userpwd);
    }
    if (t->token_header) {
        memset(t->token_header, 0, strlen(t->token_header));
        free(t->token_header);
    }
    t->prefix = t->endpoint = t->userpwd = t->token_header = NULL;
}

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Append s percent-encoded (keeping '/' when keep_slash) at out[*n]. */
static int escape_into(const char *s, bool keep_slash, char *out, size_t outlen, size_t *n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*n + 4 > outlen)
            return -1;
        if (unreserved(*p) || (keep_slash && *p == '/')) {
            out[(*n)++] = (char)*p;
        } else {
            out[(*n)++] = '%';
            out[(*n)++] = hex[*p >> 4];
            out[(*n)++] = hex[*p & 15];
        }
    }
    out[*n] = '\0';
    return 0;
}

int pgcdc_s3_conf_query_escape(const char *s, char *out, size_t outlen)
{
    size_t n = 0;
    if (outlen == 0)
        return -1;
    out[0] = '\0';
    return escape_into(s, false, out, outlen, &n);
}

int pgcdc_s3_conf_url(const struct pgcdc_s3_target *t, const char *key, const char *query,
                      char *out, size_t outlen)
{
    int w;
    if (t->path_style) {
        w = snprintf(out, outlen, "%s/%s/", t->endpoint, t->bucket);
    } else {
        const char *host = strstr(t->endpoint, "://") + 3;
        w = snprintf(out, outlen, "%.*s%s.%s/", (int)(host - t->endpoint), t->endpoint, t->bucket,
                     host);
    }
    if (w < 0 || (size_t)w >= outlen)
        return -1;
    size_t n = (size_t)w;
    if (key && escape_into(key, true, out, outlen, &n) < 0)
        return -1;
    if (query && *query) {
        w = snprintf(out + n, outlen - n, "?%s", query);
        if (w < 0 || (size_t)w >= outlen - n)
            return -1;
    }
    return 0;
}
