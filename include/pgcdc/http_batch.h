/*
 * http_batch.h — the HTTP sink's batches (the pure part of sink_http.c, unit-tested).
 *
 * A batch is a run of events in stream order, kept as the bytes of a JSON array's body:
 *     [e0,e1,...,en-1
 * (each event byte for byte the event the file sink writes, without the newline). A request
 * sends a window [lo, hi) of it as "[" e_lo "," ... e_hi-1 "]", so a window is sent straight
 * from the batch's memory, and halving a window (413) costs no copy.
 *
 * Each event keeps its identity, (commit_lsn, lsn, schema.table, key) — docs/http.md —
 * and its tracker handle. `committed` counts the events whose transaction's commit was
 * seen: a batch is cut there, so it holds whole transactions where they fit.
 */
#ifndef PGCDC_HTTP_BATCH_H
#define PGCDC_HTTP_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/common.h"

struct pgcdc_http_event {
    size_t off, len;  /* the event JSON in body */
    size_t id_off;    /* schema.table then key in ids */
    size_t table_len; /* "schema.table" */
    size_t key_len;   /* the key JSON; 0: none (no primary key, or a TRUNCATE) */
    uint64_t lsn, commit_lsn;
    uint64_t handle; /* pgcdc_txn_track_add's handle */
};

struct pgcdc_http_batch {
    struct pgcdc_buf body; /* "[" e0 "," e1 ... (no closing bracket) */
    struct pgcdc_buf ids;
    struct pgcdc_http_event *ev;
    size_t n, cap;
    size_t committed; /* events [0, committed) belong to transactions whose commit was seen */
    int64_t first_ms; /* monotonic time of the first event (linger) */
};

/* An event being added: all pointers borrowed for the call. */
struct pgcdc_http_event_in {
    const char *schema, *table;
    const char *key; /* NULL: none */
    size_t key_len;
    const char *value;
    size_t value_len;
    uint64_t lsn, commit_lsn, handle;
};

/* Append one event. Returns 0, or PGCDC_ERR on ENOMEM (the batch is unchanged). */
int pgcdc_http_batch_add(struct pgcdc_http_batch *b, const struct pgcdc_http_event_in *e,
                         int64_t now_ms);

/* The body bytes one more event of value_len would add (its separator included). */
size_t pgcdc_http_batch_cost(const struct pgcdc_http_batch *b, size_t value_len);

/*
 * Move the events [0, count) of from into to (which must be empty), keeping the rest, in
 * order, in from. Returns 0, or PGCDC_ERR on ENOMEM (both unchanged).
 */
int pgcdc_http_batch_take(struct pgcdc_http_batch *to, struct pgcdc_http_batch *from, size_t count,
                          int64_t now_ms);

/* Drop events [keep, n). */
void pgcdc_http_batch_truncate(struct pgcdc_http_batch *b, size_t keep);
void pgcdc_http_batch_reset(struct pgcdc_http_batch *b);
void pgcdc_http_batch_free(struct pgcdc_http_batch *b);

/* The request body of window [lo, hi): its length, and its bytes from offset `at`
 * (copies at most cap; returns how many). */
size_t pgcdc_http_batch_window_len(const struct pgcdc_http_batch *b, size_t lo, size_t hi);
size_t pgcdc_http_batch_window_read(const struct pgcdc_http_batch *b, size_t lo, size_t hi,
                                    size_t at, char *out, size_t cap);

/*
 * The pgcdc-idempotency-key of window [lo, hi), into out (at least PGCDC_HTTP_IDEM_LEN):
 *     <first commit_lsn>.<first lsn>.<h1>-<last commit_lsn>.<last lsn>.<h2>-<count>
 * LSNs in decimal as in the events' source block; h = the first 16 hex digits of the
 * SHA-256 of "schema.table" NUL key (the key JSON, or "null"). The same window always
 * gets the same key, so a retry carries the same key.
 */
#define PGCDC_HTTP_IDEM_LEN 128
void pgcdc_http_batch_idempotency_key(const struct pgcdc_http_batch *b, size_t lo, size_t hi,
                                      char *out, size_t outlen);

/*
 * The pgcdc-signature value of a body for Unix time t:
 *     t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
 * The body is window [lo, hi) of b. Returns 0, or PGCDC_ERR (OpenSSL failed).
 */
#define PGCDC_HTTP_SIG_LEN 96
int pgcdc_http_batch_signature(const struct pgcdc_http_batch *b, size_t lo, size_t hi,
                               const char *secret, int64_t t, char *out, size_t outlen);

/* The same over plain bytes (for tests and docs: what a receiver computes). */
int pgcdc_http_sign(const char *secret, int64_t t, const void *body, size_t len, char *out,
                    size_t outlen);

#endif
