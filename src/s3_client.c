/*
 * s3_client.c — S3 requests on the shared HTTP layer, and S3's refusals in plain words
 * (see s3_client.h).
 */
#include "pgcdc/s3_client.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgcdc/common.h"
#include "pgcdc/log.h"
#include "pgcdc/s3_layout.h"

#define URL_MAX (PGCDC_S3_KEY_MAX * 3 + 1024)
/* SHA-256 of nothing: the payload hash of a request without a body. */
static const char empty_sha256[] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

void pgcdc_s3_hex(const unsigned char *d, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[2 * n] = '\0';
}

void pgcdc_s3_sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char d[32];
    unsigned int dl = 0;
    EVP_Digest(p, n, d, &dl, EVP_sha256(), NULL);
    pgcdc_s3_hex(d, 32, out);
}

void pgcdc_s3_md5_b64(const unsigned char md5[16], char out[25])
{
    EVP_EncodeBlock((unsigned char *)out, md5, 16);
}

int pgcdc_s3_new(struct pgcdc_s3 *s3, const struct pgcdc_s3_target *t, long timeout_ms, char *err,
                 size_t errlen)
{
    memset(s3, 0, sizeof(*s3));
    s3->t = t;
    s3->backoff.initial_ms = 500;
    s3->backoff.max_ms = 30000;
    struct pgcdc_http_opts o = {.timeout_ms = timeout_ms};
    return pgcdc_http_client_new(&s3->http, &o, err, errlen);
}

void pgcdc_s3_free(struct pgcdc_s3 *s3)
{
    pgcdc_http_client_free(s3->http);
    s3->http = NULL;
}

static bool aborted(const struct pgcdc_s3 *s3)
{
    return s3->abort ? *s3->abort != 0 : pgcdc_stop_requested != 0;
}

/* S3's error code: the body's <Code>, or for a bodiless answer (HEAD) what the status says. */
static void error_code(const struct pgcdc_http_response *r, char *code, size_t len)
{
    code[0] = '\0';
    if (r->status >= 200 && r->status < 300)
        return;
    if (r->body.len && pgcdc_s3_layout_xml_tag(r->body.data, r->body.len, "Code", 0, code, len) > 0)
        return;
    const char *c = r->status == 404   ? "NotFound"
                    : r->status == 403 ? "Forbidden"
                    : r->status == 301 ? "PermanentRedirect"
                    : r->status == 400 ? "BadRequest"
                                       : "";
    snprintf(code, len, "%s", c);
}

/* Sleep up to ms, waking early when aborted. */
static void pause_ms(const struct pgcdc_s3 *s3, int64_t ms)
{
    int64_t until = pgcdc_mono_ms() + ms;
    while (!aborted(s3)) {
        int64_t left = until - pgcdc_mono_ms();
        if (left <= 0)
            break;
        struct timespec ts = {0, (long)(left > 100 ? 100 : left) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* One attempt: 0 with the answer in the client, PGCDC_STOP, or PGCDC_ERR (curl). */
static int attempt(struct pgcdc_s3 *s3, const struct pgcdc_s3_req *rq, const char *url,
                   const char *sha, char *err, size_t errlen)
{
    char h_sha[100], h_md5[64], h_type[128], h_enc[128];
    const char *hdrs[6];
    size_t nh = 0;
    snprintf(h_sha, sizeof(h_sha), "x-amz-content-sha256: %s", sha);
    hdrs[nh++] = h_sha;
    if (rq->md5_b64) {
        snprintf(h_md5, sizeof(h_md5), "Content-MD5: %s", rq->md5_b64);
        hdrs[nh++] = h_md5;
    }
    if (rq->content_type) {
        snprintf(h_type, sizeof(h_type), "Content-Type: %s", rq->content_type);
        hdrs[nh++] = h_type;
    }
    if (rq->content_encoding) {
        snprintf(h_enc, sizeof(h_enc), "Content-Encoding: %s", rq->content_encoding);
        hdrs[nh++] = h_enc;
    }
    if (s3->t->token_header)
        hdrs[nh++] = s3->t->token_header;
    struct pgcdc_http_request r = {
        .method = rq->method,
        .url = url,
        .headers = hdrs,
        .nheaders = nh,
        .aws_sigv4 = s3->t->sigv4,
        .userpwd = s3->t->userpwd,
        .keep_body_max = rq->keep_body_max,
    };
    if (rq->body_fd >= 0) {
        r.body_from_fd = true;
        r.body_fd = rq->body_fd;
        r.body_len = rq->body_len;
    } else if (rq->body) {
        r.body = rq->body;
        r.body_len = rq->body_len;
    } else if (strcmp(rq->method, "PUT") == 0) {
        r.body = "";
        r.body_len = 0;
    }
    int rc = pgcdc_http_start(s3->http, &r, err, errlen);
    while (rc == 0) {
        if (aborted(s3)) {
            pgcdc_http_cancel(s3->http);
            snprintf(err, errlen, "stopped while waiting for the S3 store");
            return PGCDC_STOP;
        }
        rc = pgcdc_http_poll(s3->http, 100, err, errlen);
        if (rc == 1)
            return 0;
    }
    pgcdc_http_cancel(s3->http);
    return rc;
}

int pgcdc_s3_call(struct pgcdc_s3 *s3, const struct pgcdc_s3_req *rq, int64_t retry_ms,
                  struct pgcdc_s3_result *res, char *err, size_t errlen)
{
    char url[URL_MAX], sha[65];
    memset(res, 0, sizeof(*res));
    if (pgcdc_s3_conf_url(s3->t, rq->key, rq->query, url, sizeof(url)) < 0) {
        snprintf(err, errlen, "an S3 key is too long: %.200s", rq->key ? rq->key : "");
        return PGCDC_ERR;
    }
    if (rq->sha256_hex)
        snprintf(sha, sizeof(sha), "%s", rq->sha256_hex);
    else if (rq->body && rq->body_fd < 0)
        pgcdc_s3_sha256_hex(rq->body, rq->body_len, sha);
    else
        snprintf(sha, sizeof(sha), "%s", empty_sha256);
    int64_t deadline = retry_ms < 0 ? INT64_MAX : pgcdc_mono_ms() + retry_ms;
    for (;;) {
        int rc = attempt(s3, rq, url, sha, err, errlen);
        if (rc < 0)
            return rc;
        const struct pgcdc_http_response *r = pgcdc_http_result(s3->http);
        res->resp = r;
        res->status = r->status;
        error_code(r, res->code, sizeof(res->code));
        if (r->cls != PGCDC_HTTP_RETRY) {
            pgcdc_http_backoff_reset(&s3->backoff);
            return PGCDC_OK;
        }
        int64_t wait = pgcdc_http_backoff_next(&s3->backoff, r->retry_after_ms);
        snprintf(err, errlen, "S3 %s %s/%s failed: %s", rq->method, s3->t->bucket,
                 rq->key ? rq->key : "", r->reason);
        if (pgcdc_mono_ms() + wait > deadline)
            return PGCDC_ERR_RETRY;
        char w[24];
        snprintf(w, sizeof(w), "%" PRId64 "ms", wait);
        pgcdc_log(PGCDC_LOG_WARN, "S3 request failed; retrying", "error", err, "endpoint",
                  s3->t->endpoint, "backoff", w, NULL);
        pause_ms(s3, wait);
        if (aborted(s3)) {
            snprintf(err, errlen, "stopped while retrying an S3 request");
            return PGCDC_STOP;
        }
    }
}

int pgcdc_s3_refused(const struct pgcdc_s3 *s3, const char *what, const char *key,
                     const struct pgcdc_s3_result *res, char *err, size_t errlen)
{
    const struct pgcdc_s3_target *t = s3->t;
    const char *c = res->code;
    char where[PGCDC_S3_KEY_MAX + 80];
    snprintf(where, sizeof(where), "s3://%s/%s", t->bucket, key ? key : "");
    char region[64] = "";
    if (res->resp) {
        if (pgcdc_http_response_header(res->resp, "x-amz-bucket-region", region, sizeof(region)) <
                0 &&
            res->resp->body.len)
            pgcdc_s3_layout_xml_tag(res->resp->body.data, res->resp->body.len, "Region", 0, region,
                                    sizeof(region));
    }
    if (strcmp(c, "NoSuchBucket") == 0 || (!key && res->status == 404))
        snprintf(err, errlen,
                 "S3 bucket \"%s\" does not exist at %s: create it, or fix sink.s3.url "
                 "(and sink.s3.endpoint / sink.s3.region)",
                 t->bucket, t->endpoint);
    else if (strcmp(c, "RequestTimeTooSkewed") == 0)
        snprintf(err, errlen,
                 "S3 refused %s on %s: this machine's clock is too far from the store's "
                 "(RequestTimeTooSkewed): synchronise the clock (NTP)",
                 what, where);
    else if (strcmp(c, "InvalidAccessKeyId") == 0 || strcmp(c, "SignatureDoesNotMatch") == 0 ||
             strcmp(c, "InvalidToken") == 0 || strcmp(c, "ExpiredToken") == 0 ||
             strcmp(c, "TokenRefreshRequired") == 0)
        snprintf(err, errlen,
                 "S3 refused the credentials of access key id %s (%s) for %s on %s: check "
                 "sink.s3.access_key_id, sink.s3.secret_access_key and sink.s3.session_token%s",
                 t->access_key_id, c, what, where,
                 t->creds_from_env ? " (here taken from AWS_* environment variables)" : "");
    else if (strcmp(c, "AuthorizationHeaderMalformed") == 0 ||
             strcmp(c, "PermanentRedirect") == 0 ||
             strcmp(c, "IllegalLocationConstraintException") == 0 || res->status == 301 ||
             (res->status == 400 && region[0]))
        snprintf(err, errlen,
                 "S3 bucket \"%s\" is not in region %s (%s%s%s): set sink.s3.region%s%s", t->bucket,
                 t->region, c, region[0] ? ", it is in " : "", region,
                 region[0] ? " = " : " to the bucket's region", region);
    else if (res->status == 403)
        snprintf(err, errlen,
                 "S3 denied %s on %s (HTTP 403%s%s): check the credentials (access key id %s), "
                 "and that they may list, read, write and delete under the prefix",
                 what, where, c[0] ? " " : "", c, t->access_key_id);
    else
        snprintf(err, errlen, "S3 refused %s on %s: %s", what, where,
                 res->resp ? res->resp->reason : "no answer");
    return PGCDC_ERR;
}
