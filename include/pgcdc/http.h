/*
 * http.h — the one HTTP layer the HTTP and S3 sinks share, on libcurl.
 *
 * A client talks to one destination. It keeps one curl easy handle for its whole life, so
 * the connection (and its TLS session) is reused between requests, and runs one request at
 * a time through curl's multi interface: pgcdc_http_start hands the request over and
 * returns at once, pgcdc_http_poll moves it forward for at most the time it is given. The
 * replication loop therefore never blocks on the network, even while a destination hangs.
 *
 * What a finished request means is decided here, once, for both sinks
 * (pgcdc_http_classify): 2xx is delivered; 408, 429, 5xx, timeouts and connection errors
 * are worth retrying; 413 is its own class (the caller splits the body); a certificate
 * that fails verification is permanent, with the reason; any other status is permanent.
 * Retries wait by pgcdc_http_backoff: capped exponential with jitter, never shorter than
 * the server's Retry-After (seconds or an HTTP date).
 *
 * Nothing here logs, and no header value is ever copied into a message (an Authorization
 * header or a SigV4 secret must not reach a log).
 *
 * Single-threaded: a client is used by one thread, the one that calls pgcdc_http_poll.
 */
#ifndef PGCDC_HTTP_H
#define PGCDC_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "pgcdc/common.h"

/* What a finished request means for the caller. */
enum pgcdc_http_class {
    PGCDC_HTTP_OK = 0,        /* 2xx: delivered (any response body is ignored) */
    PGCDC_HTTP_RETRY = 1,     /* 408, 429, 5xx, timeout, connection error: back off, retry */
    PGCDC_HTTP_TOO_LARGE = 2, /* 413: the body is too large; send less */
    PGCDC_HTTP_PERMANENT = 3, /* any other status (1xx/3xx/4xx): the same request fails again */
    PGCDC_HTTP_TLS = 4,       /* the server's certificate failed verification: permanent */
};

/* Settings of one client, fixed for its life. Strings are copied. */
struct pgcdc_http_opts {
    const char *ca_file;     /* PEM bundle to verify servers with; NULL: the system's */
    long timeout_ms;         /* whole request, connect included; 0: 10000 */
    long connect_timeout_ms; /* 0: the smaller of timeout_ms and 10000 */
    const char *user_agent;  /* NULL: "pgcdc/<version>" */
};

/* A body read from somewhere else than memory: called until it returns 0 (the end).
 * Returns the bytes written into buf (at most cap), or (size_t)-1 to abort the request. */
typedef size_t (*pgcdc_http_read_fn)(char *buf, size_t cap, void *opaque);
/* Go back to the start of the body (curl resends it on a redirect or an auth challenge).
 * Returns 0, or -1 when it cannot (the request then fails). */
typedef int (*pgcdc_http_rewind_fn)(void *opaque);

/*
 * One request. Everything is borrowed: headers are copied by pgcdc_http_start, the body
 * (memory, file or callback) must stay valid until the request finished or was cancelled.
 * At most one body source: body != NULL, body_from_fd, or read_fn != NULL.
 */
struct pgcdc_http_request {
    const char *method;         /* "GET" "HEAD" "OPTIONS" "POST" "PUT" "DELETE"; NULL: POST with a
                                 * body, GET without */
    const char *url;            /* absolute http:// or https:// URL */
    const char *const *headers; /* "Name: value" lines; curl adds Host, Content-Length */
    size_t nheaders;

    const void *body;  /* from memory: body_len bytes */
    size_t body_len;   /* also the length of a file or callback body; -1 (SIZE_MAX) with
                        * read_fn: unknown, sent chunked */
    bool body_from_fd; /* from a file: body_len bytes of body_fd from body_offset (pread, so
                        * the fd's offset is untouched and a retry re-reads) */
    int body_fd;
    off_t body_offset;
    pgcdc_http_read_fn read_fn;     /* from a stream */
    pgcdc_http_rewind_fn rewind_fn; /* optional */
    void *read_opaque;

    const char *aws_sigv4; /* CURLOPT_AWS_SIGV4, e.g. "aws:amz:us-east-1:s3"; NULL: none */
    const char *userpwd;   /* CURLOPT_USERPWD ("ACCESS_KEY:SECRET" with aws_sigv4); secret */

    size_t keep_body_max; /* keep at most this much of the response body; 0: 1024 */
};

/* A request's outcome; owned by the client, valid until the next pgcdc_http_start. */
struct pgcdc_http_response {
    enum pgcdc_http_class cls;
    long status;              /* HTTP status, 0 when none arrived */
    int curl_code;            /* CURLcode of the transfer (0 = CURLE_OK) */
    int64_t retry_after_ms;   /* from Retry-After, -1 when absent or unreadable */
    int64_t elapsed_ms;       /* from start to finish */
    struct pgcdc_buf body;    /* the start of the response body (keep_body_max) */
    struct pgcdc_buf headers; /* the raw response header lines of the last response */
    char reason[512];         /* one line: "HTTP 500: <start of body>", or curl's error */
};

struct pgcdc_http_client;

/*
 * Create a client. The caller owns *out and frees it with pgcdc_http_client_free.
 * Returns 0, PGCDC_ERR_CONFIG (a ca_file that cannot be read), or PGCDC_ERR (curl).
 */
int pgcdc_http_client_new(struct pgcdc_http_client **out, const struct pgcdc_http_opts *o,
                          char *err, size_t errlen);
/* Cancels a request still running. NULL is fine. */
void pgcdc_http_client_free(struct pgcdc_http_client *c);

/*
 * Hand a request over; it runs while pgcdc_http_poll is called. One at a time: PGCDC_ERR
 * when one is still running. Returns 0, or PGCDC_ERR with the reason (curl refused it).
 */
int pgcdc_http_start(struct pgcdc_http_client *c, const struct pgcdc_http_request *r, char *err,
                     size_t errlen);

/*
 * Move the running request forward, waiting for the network at most timeout_ms (0: do what
 * can be done now). Returns 1 when it finished (see pgcdc_http_result), 0 when it is still
 * running or none is, PGCDC_ERR when curl itself failed (reason in err).
 */
int pgcdc_http_poll(struct pgcdc_http_client *c, int timeout_ms, char *err, size_t errlen);

/* Whether a request is running. */
bool pgcdc_http_busy(const struct pgcdc_http_client *c);

/* The outcome of the last finished request (owned by c). */
const struct pgcdc_http_response *pgcdc_http_result(const struct pgcdc_http_client *c);

/* Abandon the running request (its connection is closed). No-op when none is. */
void pgcdc_http_cancel(struct pgcdc_http_client *c);

/*
 * Start a request and poll it to its end, giving up when pgcdc_stop_requested is set
 * (PGCDC_STOP). For what may block: `check`, a shutdown's last attempt. Returns 0 with the
 * outcome in pgcdc_http_result, or the error of start/poll.
 */
int pgcdc_http_perform(struct pgcdc_http_client *c, const struct pgcdc_http_request *r, char *err,
                       size_t errlen);

/* The value of response header `name` (case-insensitive), trimmed, into out. Returns its
 * length, or -1 when absent (or longer than outlen-1). */
int pgcdc_http_response_header(const struct pgcdc_http_response *resp, const char *name, char *out,
                               size_t outlen);

/* ---- Pure parts (no network), unit-tested. ---- */

/* The class of a finished transfer: curl_code (CURLcode) first, then the HTTP status. */
enum pgcdc_http_class pgcdc_http_classify(long status, int curl_code);
/* "ok" "retry" "too_large" "permanent" "tls" */
const char *pgcdc_http_class_name(enum pgcdc_http_class cls);

/* Retry-After in ms from `now`: delay-seconds ("120") or an HTTP date
 * ("Wed, 21 Oct 2015 07:28:00 GMT"); a date in the past is 0. -1 when unreadable. */
int64_t pgcdc_http_parse_retry_after(const char *value, time_t now);

/* Whether url is an absolute http:// or https:// URL with a host. On false, err says why. */
bool pgcdc_http_url_ok(const char *url, char *err, size_t errlen);

/* Whether name is an HTTP token (RFC 9110 tchar+), as a header name must be. */
bool pgcdc_http_token_ok(const char *name);

/*
 * Capped exponential backoff with jitter. attempt counts the failures since the last
 * success. The delay of attempt n (1-based) is drawn from [base/2, base] with
 * base = min(max_ms, initial_ms * 2^(n-1)), and is raised to Retry-After when the server
 * asked for longer (up to PGCDC_HTTP_RETRY_AFTER_MAX_MS).
 */
#define PGCDC_HTTP_RETRY_AFTER_MAX_MS (10 * 60 * 1000)
struct pgcdc_http_backoff {
    uint32_t initial_ms; /* 0: 100 */
    uint32_t max_ms;     /* 0: 30000 */
    uint32_t attempt;
    uint64_t rng; /* jitter state; 0 seeds from the clock on first use */
};
/* Count one more failure and return how long to wait before the next attempt. */
int64_t pgcdc_http_backoff_next(struct pgcdc_http_backoff *b, int64_t retry_after_ms);
/* A success: the next failure starts again at initial_ms. */
void pgcdc_http_backoff_reset(struct pgcdc_http_backoff *b);

/* Milliseconds on the monotonic clock, for deadlines. */
int64_t pgcdc_http_now_ms(void);

#endif
