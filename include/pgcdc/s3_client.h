/*
 * s3_client.h — S3 requests on the shared HTTP layer (http.h): SigV4 by libcurl
 * (CURLOPT_AWS_SIGV4), the payload's SHA-256 in x-amz-content-sha256 (which S3 and
 * s3rver require and curl does not add by itself), Content-MD5 on every upload so the store
 * verifies what it stores, and S3's error codes turned into one line with the fix.
 *
 * What an answer means (the HTTP sink's rules, http.h's classifier): 2xx done; 5xx, 429,
 * 408, timeouts and network errors are retried with backoff (Retry-After honoured); every
 * other answer stops with a clear error: 403 (credentials, clock skew, access), NoSuchBucket,
 * a wrong region (AuthorizationHeaderMalformed, PermanentRedirect).
 *
 * A client is used by one thread (the sink's uploader, or the main thread; each has its own).
 * Nothing here logs except pgcdc_s3_call's retry warnings, and no secret enters a message.
 */
#ifndef PGCDC_S3_CLIENT_H
#define PGCDC_S3_CLIENT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pgcdc/http.h"
#include "pgcdc/s3_conf.h"

struct pgcdc_s3 {
    const struct pgcdc_s3_target *t; /* borrowed; outlives the client */
    struct pgcdc_http_client *http;
    struct pgcdc_http_backoff backoff;
    /* Give up waiting (retrying, or a request running) once this is set: the sink stops its
     * uploader with it. NULL: pgcdc_stop_requested does. */
    volatile sig_atomic_t *abort;
};

/* One request. body/fd as in http.h; sha256_hex is the body's (NULL: computed here for a
 * memory body; the empty body's for none); md5_b64 set sends Content-MD5. */
struct pgcdc_s3_req {
    const char *method;
    const char *key;   /* NULL: the bucket */
    const char *query; /* without '?', already escaped; NULL: none */
    const void *body;
    size_t body_len;
    int body_fd; /* >= 0: body_len bytes of this file from offset 0 */
    const char *sha256_hex;
    const char *md5_b64;
    const char *content_type;
    const char *content_encoding;
    size_t keep_body_max; /* how much of the answer to keep (0: 1024) */
};

/* The outcome of pgcdc_s3_call. */
struct pgcdc_s3_result {
    long status;   /* HTTP status, 0 when none */
    char code[64]; /* S3's <Code> (or derived from a bodiless answer), "" when 2xx */
    const struct pgcdc_http_response *resp; /* the last answer (owned by the client) */
};

/* Create a client for t with the given whole-request timeout. Returns 0 or PGCDC_ERR. */
int pgcdc_s3_new(struct pgcdc_s3 *s3, const struct pgcdc_s3_target *t, long timeout_ms, char *err,
                 size_t errlen);
void pgcdc_s3_free(struct pgcdc_s3 *s3);

/*
 * Run one request, retrying what is worth retrying with backoff for up to retry_ms (-1:
 * until aborted; 0: one attempt). Returns 0 when the store answered (any status: see
 * res->status; 2xx and the caller's expected 404s are the caller's to judge), PGCDC_ERR_RETRY
 * when the store could not be reached or kept failing until the time ran out, PGCDC_STOP
 * when aborted. err gets the reason of a failure.
 */
int pgcdc_s3_call(struct pgcdc_s3 *s3, const struct pgcdc_s3_req *rq, int64_t retry_ms,
                  struct pgcdc_s3_result *res, char *err, size_t errlen);

/*
 * The store refused a request on key (NULL: the bucket) for good: one line naming the
 * problem and the fix into err. Returns PGCDC_ERR.
 */
int pgcdc_s3_refused(const struct pgcdc_s3 *s3, const char *what, const char *key,
                     const struct pgcdc_s3_result *res, char *err, size_t errlen);

/* SHA-256 of a memory body as lower-case hex (65 bytes with the NUL). */
void pgcdc_s3_sha256_hex(const void *p, size_t n, char out[65]);
/* MD5 digest (16 bytes) as base64 (25 bytes with the NUL), for Content-MD5. */
void pgcdc_s3_md5_b64(const unsigned char md5[16], char out[25]);
/* A SHA-256 digest (32 bytes) as hex. */
void pgcdc_s3_hex(const unsigned char *d, size_t n, char *out);

#endif
