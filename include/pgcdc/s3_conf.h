/*
 * s3_conf.h — the S3 sink's settings, checked and resolved once: the bucket and prefix of
 * sink.s3.url, the endpoint and addressing style, the region curl signs for, and the
 * credentials (the sink.s3.* keys, else AWS's standard environment variables).
 *
 * Pure: no network. A bad sink.s3.url and missing credentials are PGCDC_ERR_CONFIG (exit
 * 2); no message built here quotes a secret.
 */
#ifndef PGCDC_S3_CONF_H
#define PGCDC_S3_CONF_H

#include <stdbool.h>
#include <stddef.h>

#include "pgcdc/config.h"

struct pgcdc_s3_target {
    char bucket[64];
    char *prefix;    /* without leading or trailing '/'; "" for the bucket's root */
    char *endpoint;  /* scheme://host[:port], no trailing '/' */
    bool path_style; /* ENDPOINT/BUCKET/KEY instead of BUCKET.HOST/KEY */
    char region[64];
    char sigv4[96];          /* CURLOPT_AWS_SIGV4: "aws:amz:REGION:s3" */
    char *userpwd;           /* "ACCESS_KEY_ID:SECRET_ACCESS_KEY" for curl; secret */
    char *token_header;      /* "x-amz-security-token: ..." or NULL; secret */
    char access_key_id[128]; /* not secret: shown in messages about credentials */
    bool creds_from_env;
};

/*
 * Parse "s3://BUCKET[/PREFIX]" into bucket and prefix (prefix malloc'd, owned by the
 * caller). Returns 0, or PGCDC_ERR_CONFIG with the reason in err.
 */
int pgcdc_s3_conf_parse_url(const char *url, char bucket[64], char **prefix, char *err,
                            size_t errlen);

/*
 * Resolve every sink.s3 setting of cfg (environment variables read through getenv) into
 * *t, which the caller releases with pgcdc_s3_conf_free. Returns 0 or PGCDC_ERR_CONFIG.
 */
int pgcdc_s3_conf_resolve(struct pgcdc_s3_target *t, const struct pgcdc_config *cfg, char *err,
                          size_t errlen);
void pgcdc_s3_conf_free(struct pgcdc_s3_target *t);

/*
 * The URL of an object key (NULL key: the bucket itself) with an optional query string
 * (without '?'), into out. Each key byte outside RFC 3986's unreserved set and '/' is
 * percent-encoded, as SigV4's canonical URI wants. Returns 0, or -1 when out is too small.
 */
int pgcdc_s3_conf_url(const struct pgcdc_s3_target *t, const char *key, const char *query,
                      char *out, size_t outlen);

/* Percent-encode s for a query value (everything but unreserved bytes). -1 if too long. */
int pgcdc_s3_conf_query_escape(const char *s, char *out, size_t outlen);

#endif
