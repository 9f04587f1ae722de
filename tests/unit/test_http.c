/*
 * test_http.c — the pure parts of the shared HTTP layer: the response classifier,
 * Retry-After in both forms, the backoff's bounds, URL and header-name checks, and
 * response header lookup.
 */
#include <curl/curl.h>
#include <stdint.h>
#include <time.h>

#include "pgcdc/http.h"
#include "unit.h"

static void test_classify(void)
{
    CHECK_INT_EQ(pgcdc_http_classify(200, CURLE_OK), PGCDC_HTTP_OK);
    CHECK_INT_EQ(pgcdc_http_classify(204, CURLE_OK), PGCDC_HTTP_OK);
    CHECK_INT_EQ(pgcdc_http_classify(299, CURLE_OK), PGCDC_HTTP_OK);
    CHECK_INT_EQ(pgcdc_http_classify(408, CURLE_OK), PGCDC_HTTP_RETRY);
    CHECK_INT_EQ(pgcdc_http_classify(429, CURLE_OK), PGCDC_HTTP_RETRY);
    CHECK_INT_EQ(pgcdc_http_classify(500, CURLE_OK), PGCDC_HTTP_RETRY);
    CHECK_INT_EQ(pgcdc_http_classify(503, CURLE_OK), PGCDC_HTTP_RETRY);
    CHECK_INT_EQ(pgcdc_http_classify(599, CURLE_OK), PGCDC_HTTP_RETRY);
    CHECK_INT_EQ(pgcdc_http_classify(413, CURLE_OK), PGCDC_HTTP_TOO_LARGE);
    CHECK_INT_EQ(pgcdc_http_classify(400, CURLE_OK), PGCDC_HTTP_PERMANENT);
    CHECK_INT_EQ(pgcdc_http_classify(401, CURLE_OK), PGCDC_HTTP_PERMANENT);
    CHECK_INT_EQ(pgcdc_http_classify(404, CURLE_OK), PGCDC_HTTP_PERMANENT);
    CHECK_INT_EQ(pgcdc_http_classify(301, CURLE_OK), PGCDC_HTTP_PERMANENT);
    CHECK_INT_EQ(pgcdc_http_classify(600, CURLE_OK), PGCDC_HTTP_PERMANENT);
    /* The transport decides before any status. */
    CHECK_INT_EQ(pgcdc_http_classify(0, CURLE_OPERATION_TIMEDOUT), PGCDC_HTTP_RETRY);
    CHECK_INT_EQ(pgcdc_http_classify(0, CURLE_COULDNT_CONNECT), PGCDC_HTTP_RETRY);
    CHECK_INT_EQ(pgcdc_http_classify(0, CURLE_RECV_ERROR), PGCDC_HTTP_RETRY);
    CHECK_INT_EQ(pgcdc_http_classify(0, CURLE_SEND_ERROR), PGCDC_HTTP_RETRY);
    CHECK_INT_EQ(pgcdc_http_classify(0, CURLE_GOT_NOTHING), PGCDC_HTTP_RETRY);
    CHECK_INT_EQ(pgcdc_http_classify(0, CURLE_COULDNT_RESOLVE_HOST), PGCDC_HTTP_RETRY);
    CHECK_INT_EQ(pgcdc_http_classify(200, CURLE_PARTIAL_FILE), PGCDC_HTTP_RETRY);
    CHECK_INT_EQ(pgcdc_http_classify(0, CURLE_PEER_FAILED_VERIFICATION), PGCDC_HTTP_TLS);
    CHECK_INT_EQ(pgcdc_http_classify(0, CURLE_SSL_CACERT_BADFILE), PGCDC_HTTP_TLS);
    CHECK_INT_EQ(pgcdc_http_classify(0, CURLE_UNSUPPORTED_PROTOCOL), PGCDC_HTTP_PERMANENT);
    CHECK_STR_EQ(pgcdc_http_class_name(PGCDC_HTTP_TOO_LARGE), "too_large");
    CHECK_STR_EQ(pgcdc_http_class_name(PGCDC_HTTP_TLS), "tls");
}

static void test_retry_after(void)
{
    /* 2015-10-21 07:28:00 UTC = 1445412480 */
    time_t now = 1445412480;
    CHECK_INT_EQ(pgcdc_http_parse_retry_after("120", now), 120000);
    CHECK_INT_EQ(pgcdc_http_parse_retry_after(" 0 ", now), 0);
    CHECK_INT_EQ(pgcdc_http_parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), 30000);
    CHECK_INT_EQ(pgcdc_http_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), 0);
    CHECK_INT_EQ(pgcdc_http_parse_retry_after("Tue, 20 Oct 2015 07:28:00 GMT", now), 0);
    CHECK_INT_EQ(pgcdc_http_parse_retry_after("Thu, 22 Oct 2015 07:28:00 GMT", now), 86400000);
    CHECK_INT_EQ(pgcdc_http_parse_retry_after("-5", now), -1);
    CHECK_INT_EQ(pgcdc_http_parse_retry_after("1.5", now), -1);
    CHECK_INT_EQ(pgcdc_http_parse_retry_after("soon", now), -1);
    CHECK_INT_EQ(pgcdc_http_parse_retry_after("", now), -1);
    CHECK_INT_EQ(pgcdc_http_parse_retry_after("Wed, 21 Foo 2015 07:28:30 GMT", now), -1);
    CHECK_INT_EQ(pgcdc_http_parse_retry_after("Wed, 21 Oct 2015 07:28:30 PST", now), -1);
    CHECK_INT_EQ(pgcdc_http_parse_retry_after(NULL, now), -1);
    CHECK_INT_EQ(pgcdc_http_parse_retry_after("99999999999999999999", now), -1);
}

static void test_backoff(void)
{
    struct pgcdc_http_backoff b = {.initial_ms = 100, .max_ms = 1000, .rng = 42};
    int64_t lo[] = {50, 100, 200, 400, 500, 500, 500};
    int64_t hi[] = {100, 200, 400, 800, 1000, 1000, 1000};
    for (int i = 0; i < 7; i++) {
        int64_t d = pgcdc_http_backoff_next(&b, -1);
        CHECK(d >= lo[i] && d <= hi[i]);
    }
    /* Retry-After wins when it asks for longer, and is capped. */
    CHECK_INT_EQ(pgcdc_http_backoff_next(&b, 5000), 5000);
    CHECK_INT_EQ(pgcdc_http_backoff_next(&b, INT64_MAX), PGCDC_HTTP_RETRY_AFTER_MAX_MS);
    int64_t d = pgcdc_http_backoff_next(&b, 0);
    CHECK(d >= 500 && d <= 1000);
    pgcdc_http_backoff_reset(&b);
    d = pgcdc_http_backoff_next(&b, -1);
    CHECK(d >= 50 && d <= 100);
    /* Jitter: two clients do not wait in lockstep. */
    struct pgcdc_http_backoff x = {.initial_ms = 1000, .max_ms = 1000, .rng = 1};
    struct pgcdc_http_backoff y = {.initial_ms = 1000, .max_ms = 1000, .rng = 2};
    int same = 0;
    for (int i = 0; i < 10; i++)
        same += pgcdc_http_backoff_next(&x, -1) == pgcdc_http_backoff_next(&y, -1);
    CHECK(same < 10);
    /* Many attempts do not overflow. */
    struct pgcdc_http_backoff z = {.attempt = UINT32_MAX - 1};
    d = pgcdc_http_backoff_next(&z, -1);
    CHECK(d >= 15000 && d <= 30000);
}

static void test_url_and_token(void)
{
    char err[200];
    CHECK(pgcdc_http_url_ok("http://127.0.0.1:8080/hook", err, sizeof err));
    CHECK(pgcdc_http_url_ok("https://example.com/x?y=1", err, sizeof err));
    CHECK(pgcdc_http_url_ok("HTTPS://example.com", err, sizeof err));
    CHECK(!pgcdc_http_url_ok("ftp://example.com/", err, sizeof err));
    CHECK_CONTAINS(err, "http:// or https://");
    CHECK(!pgcdc_http_url_ok("example.com/hook", err, sizeof err));
    CHECK(!pgcdc_http_url_ok("http:///hook", err, sizeof err));
    CHECK_CONTAINS(err, "no host");
    CHECK(!pgcdc_http_url_ok("http://a b/", err, sizeof err));
    CHECK(!pgcdc_http_url_ok("", err, sizeof err));
    CHECK(pgcdc_http_token_ok("Authorization"));
    CHECK(pgcdc_http_token_ok("X-Api-Key"));
    CHECK(pgcdc_http_token_ok("x_!#$%&'*+-.^`|~9"));
    CHECK(!pgcdc_http_token_ok(""));
    CHECK(!pgcdc_http_token_ok("X Api"));
    CHECK(!pgcdc_http_token_ok("X:Api"));
    CHECK(!pgcdc_http_token_ok("X-Api\r\n"));
    CHECK(!pgcdc_http_token_ok("Ä"));
}

static void test_response_header(void)
{
    struct pgcdc_http_response r = {0};
    pgcdc_buf_append_str(&r.headers, "HTTP/1.1 503 Service Unavailable\r\n"
                                     "Content-Type: text/plain\r\n"
                                     "retry-after:  7 \r\n"
                                     "ETag: \"abc\"\r\n\r\n");
    char v[64];
    CHECK_INT_EQ(pgcdc_http_response_header(&r, "Retry-After", v, sizeof v), 1);
    CHECK_STR_EQ(v, "7");
    CHECK_INT_EQ(pgcdc_http_response_header(&r, "etag", v, sizeof v), 5);
    CHECK_STR_EQ(v, "\"abc\"");
    CHECK_INT_EQ(pgcdc_http_response_header(&r, "Missing", v, sizeof v), -1);
    CHECK_INT_EQ(pgcdc_http_response_header(&r, "ETag", v, 3), -1);
    CHECK_INT_EQ(pgcdc_http_response_header(&r, "Content", v, sizeof v), -1);
    pgcdc_buf_free(&r.headers);
}

int main(void)
{
    test_classify();
    test_retry_after();
    test_backoff();
    test_url_and_token();
    test_response_header();
    return UNIT_DONE();
}
