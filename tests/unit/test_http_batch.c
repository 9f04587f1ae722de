/*
 * test_http_batch.c — the HTTP sink's batches: the JSON array a window sends, cutting at
 * a transaction boundary (take), truncation, the idempotency key and the signature
 * (checked against a value computed independently with `openssl dgst -hmac`).
 */
#include <stdlib.h>
#include <string.h>

#include "pgcdc/http_batch.h"
#include "unit.h"

static void add(struct pgcdc_http_batch *b, const char *table, const char *key, const char *v,
                uint64_t commit, uint64_t lsn)
{
    struct pgcdc_http_event_in e = {.schema = "public",
                                    .table = table,
                                    .key = key,
                                    .key_len = key ? strlen(key) : 0,
                                    .value = v,
                                    .value_len = strlen(v),
                                    .lsn = lsn,
                                    .commit_lsn = commit,
                                    .handle = lsn};
    CHECK_INT_EQ(pgcdc_http_batch_add(b, &e, 1), 0);
}

/* The body of window [lo, hi), read in pieces of `step` bytes. */
static char *window(const struct pgcdc_http_batch *b, size_t lo, size_t hi, size_t step)
{
    size_t len = pgcdc_http_batch_window_len(b, lo, hi), at = 0;
    char *out = calloc(1, len + 1);
    while (at < len) {
        size_t n = pgcdc_http_batch_window_read(b, lo, hi, at, out + at, step);
        if (n == 0)
            break;
        at += n;
    }
    CHECK_INT_EQ(at, len);
    return out;
}

static void test_windows(void)
{
    struct pgcdc_http_batch b = {0};
    add(&b, "t", "{\"id\":1}", "{\"a\":1}", 100, 90);
    add(&b, "t", "{\"id\":2}", "{\"a\":2}", 100, 95);
    add(&b, "u", NULL, "{\"a\":3}", 200, 150);
    char *w = window(&b, 0, 3, 1000);
    CHECK_STR_EQ(w, "[{\"a\":1},{\"a\":2},{\"a\":3}]");
    free(w);
    w = window(&b, 0, 3, 1); /* byte by byte, as a small curl buffer would read it */
    CHECK_STR_EQ(w, "[{\"a\":1},{\"a\":2},{\"a\":3}]");
    free(w);
    w = window(&b, 1, 2, 3);
    CHECK_STR_EQ(w, "[{\"a\":2}]");
    free(w);
    w = window(&b, 1, 3, 1000);
    CHECK_STR_EQ(w, "[{\"a\":2},{\"a\":3}]");
    free(w);
    pgcdc_http_batch_free(&b);
}

static void test_take_and_truncate(void)
{
    struct pgcdc_http_batch fill = {0}, flight = {0};
    add(&fill, "t", "{\"id\":1}", "{\"a\":1}", 100, 90);
    add(&fill, "t", "{\"id\":2}", "{\"a\":2}", 100, 95);
    fill.committed = 2; /* transaction 100 is whole */
    add(&fill, "t", "{\"id\":3}", "{\"a\":3}", 200, 150);
    /* Cut at the boundary: the open transaction stays behind, intact. */
    CHECK_INT_EQ(pgcdc_http_batch_take(&flight, &fill, fill.committed, 7), 0);
    CHECK_INT_EQ(flight.n, 2);
    CHECK_INT_EQ(fill.n, 1);
    CHECK_INT_EQ(fill.committed, 0);
    char *w = window(&flight, 0, flight.n, 1000);
    CHECK_STR_EQ(w, "[{\"a\":1},{\"a\":2}]");
    free(w);
    w = window(&fill, 0, fill.n, 1000);
    CHECK_STR_EQ(w, "[{\"a\":3}]");
    free(w);
    CHECK_U64_EQ(fill.ev[0].handle, 150);
    CHECK_INT_EQ(fill.first_ms, 7);
    /* The moved event keeps its identity (key and table for the dead letter). */
    CHECK(memcmp(fill.ids.data + fill.ev[0].id_off, "public.t{\"id\":3}", 16) == 0);
    CHECK_INT_EQ(fill.ev[0].table_len, 8);
    /* More events after the cut append after the kept one. */
    add(&fill, "t", NULL, "{\"a\":4}", 200, 160);
    w = window(&fill, 0, fill.n, 1000);
    CHECK_STR_EQ(w, "[{\"a\":3},{\"a\":4}]");
    free(w);
    /* Taking everything (one transaction larger than a batch) swaps without copying. */
    pgcdc_http_batch_reset(&flight);
    const char *before = fill.body.data;
    CHECK_INT_EQ(pgcdc_http_batch_take(&flight, &fill, fill.n, 8), 0);
    CHECK(flight.body.data == before);
    CHECK_INT_EQ(flight.n, 2);
    CHECK_INT_EQ(fill.n, 0);
    /* Truncate drops the uncommitted tail (a rewind). */
    pgcdc_http_batch_truncate(&flight, 1);
    w = window(&flight, 0, flight.n, 1000);
    CHECK_STR_EQ(w, "[{\"a\":3}]");
    free(w);
    pgcdc_http_batch_free(&fill);
    pgcdc_http_batch_free(&flight);
}

static void test_idempotency_key(void)
{
    struct pgcdc_http_batch b = {0};
    char k1[PGCDC_HTTP_IDEM_LEN], k2[PGCDC_HTTP_IDEM_LEN], k3[PGCDC_HTTP_IDEM_LEN];
    /* Snapshot rows share (commit_lsn, lsn): table and key tell them apart. */
    add(&b, "t", "{\"id\":1}", "{}", 500, 500);
    add(&b, "t", "{\"id\":2}", "{}", 500, 500);
    add(&b, "u", "{\"id\":1}", "{}", 500, 500);
    pgcdc_http_batch_idempotency_key(&b, 0, 3, k1, sizeof k1);
    pgcdc_http_batch_idempotency_key(&b, 0, 3, k2, sizeof k2);
    CHECK_STR_EQ(k1, k2); /* the same on a retry */
    CHECK_PREFIX(k1, "500.500.");
    CHECK(strstr(k1, "-3") == k1 + strlen(k1) - 2); /* the count last */
    pgcdc_http_batch_idempotency_key(&b, 0, 2, k2, sizeof k2);
    pgcdc_http_batch_idempotency_key(&b, 1, 3, k3, sizeof k3);
    CHECK(strcmp(k1, k2) != 0);
    CHECK(strcmp(k1, k3) != 0);
    CHECK(strcmp(k2, k3) != 0);
    /* Same LSNs, same count, different last key: different batches. */
    struct pgcdc_http_batch c = {0};
    add(&c, "t", "{\"id\":1}", "{}", 500, 500);
    add(&c, "t", "{\"id\":2}", "{}", 500, 500);
    add(&c, "u", "{\"id\":9}", "{}", 500, 500);
    pgcdc_http_batch_idempotency_key(&c, 0, 3, k3, sizeof k3);
    CHECK(strcmp(k1, k3) != 0);
    /* A header value: no spaces, no control characters. */
    for (const char *p = k1; *p; p++)
        CHECK(*p > ' ' && *p < 0x7f);
    /* The identity hash is SHA-256("public.t\0{\"id\":1}")[0:8]. */
    CHECK_STR_EQ(k2, "500.500.2674e608ac2d4c65-500.500.5d891b3fb110d684-2");
    pgcdc_http_batch_free(&b);
    pgcdc_http_batch_free(&c);
}

static void test_signature(void)
{
    char sig[PGCDC_HTTP_SIG_LEN];
    /* printf '1700000000.[{"a":1}]' | openssl dgst -sha256 -hmac s3cret */
    CHECK_INT_EQ(pgcdc_http_sign("s3cret", 1700000000, "[{\"a\":1}]", 9, sig, sizeof sig), 0);
    CHECK_STR_EQ(sig, "t=1700000000,v1="
                      "716fa740652aadd0b58e3e5afeb9107ea23adfe5275da0f786ead23710e2c7f2");
    /* The window signature signs exactly the body the window sends. */
    struct pgcdc_http_batch b = {0};
    add(&b, "t", NULL, "{\"x\":0}", 1, 1);
    add(&b, "t", NULL, "{\"a\":1}", 2, 2);
    char sig2[PGCDC_HTTP_SIG_LEN];
    CHECK_INT_EQ(pgcdc_http_batch_signature(&b, 1, 2, "s3cret", 1700000000, sig2, sizeof sig2), 0);
    CHECK_STR_EQ(sig2, sig);
    CHECK_INT_EQ(pgcdc_http_batch_signature(&b, 1, 2, "s3cret", 1700000001, sig2, sizeof sig2), 0);
    CHECK(strcmp(sig2, sig) != 0); /* t is signed */
    pgcdc_http_batch_free(&b);
}

int main(void)
{
    test_windows();
    test_take_and_truncate();
    test_idempotency_key();
    test_signature();
    return UNIT_DONE();
}
