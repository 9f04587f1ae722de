/*
 * http_batch.c — the HTTP sink's batches: events as a JSON array body, windows of it,
 * the idempotency key and the signature (http_batch.h).
 */
#include "pgcdc/http_batch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/sha.h>

size_t pgcdc_http_batch_cost(const struct pgcdc_http_batch *b, size_t value_len)
{
    (void)b;
    return value_len + 1; /* "[" before the first event, "," before the others */
}

static int grow(struct pgcdc_http_batch *b, size_t need)
{
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap * 2 : 256;
    while (cap < need)
        cap *= 2;
    struct pgcdc_http_event *ev = realloc(b->ev, cap * sizeof *ev);
    if (ev == NULL)
        return PGCDC_ERR;
    b->ev = ev;
    b->cap = cap;
    return 0;
}

int pgcdc_http_batch_add(struct pgcdc_http_batch *b, const struct pgcdc_http_event_in *e,
                         int64_t now_ms)
{
    size_t body0 = b->body.len, ids0 = b->ids.len;
    if (grow(b, b->n + 1) < 0)
        return PGCDC_ERR;
    if (pgcdc_buf_append_char(&b->body, b->n == 0 ? '[' : ',') < 0)
        goto fail;
    size_t off = b->body.len;
    if (pgcdc_buf_append(&b->body, e->value, e->value_len) < 0 ||
        pgcdc_buf_append_str(&b->ids, e->schema) < 0 || pgcdc_buf_append_char(&b->ids, '.') < 0 ||
        pgcdc_buf_append_str(&b->ids, e->table) < 0)
        goto fail;
    size_t table_len = b->ids.len - ids0;
    if (e->key && pgcdc_buf_append(&b->ids, e->key, e->key_len) < 0)
        goto fail;
    b->ev[b->n] = (struct pgcdc_http_event){
        .off = off,
        .len = e->value_len,
        .id_off = ids0,
        .table_len = table_len,
        .key_len = e->key ? e->key_len : 0,
        .lsn = e->lsn,
        .commit_lsn = e->commit_lsn,
        .handle = e->handle,
    };
    if (b->n == 0)
        b->first_ms = now_ms;
    b->n++;
    return 0;
fail:
    b->body.len = body0;
    b->ids.len = ids0;
    return PGCDC_ERR;
}

int pgcdc_http_batch_take(struct pgcdc_http_batch *to, struct pgcdc_http_batch *from, size_t count,
                          int64_t now_ms)
{
    if (count == 0)
        return 0;
    if (count >= from->n) {
        /* The whole batch: swap, no copy. */
        struct pgcdc_http_batch t = *to;
        *to = *from;
        *from = t;
        pgcdc_http_batch_reset(from);
        return 0;
    }
    /* Copy the tail [count, n) into `to`, then swap, so the head stays where it is. */
    size_t tail_body = from->ev[count].off - 1; /* its "," becomes the "[" */
    size_t tail_ids = from->ev[count].id_off;
    size_t ntail = from->n - count;
    pgcdc_http_batch_reset(to);
    if (grow(to, ntail) < 0 ||
        pgcdc_buf_append(&to->body, from->body.data + tail_body, from->body.len - tail_body) < 0 ||
        pgcdc_buf_append(&to->ids, from->ids.data + tail_ids, from->ids.len - tail_ids) < 0) {
        pgcdc_http_batch_reset(to);
        return PGCDC_ERR;
    }
    to->body.data[0] = '[';
    for (size_t i = 0; i < ntail; i++) {
        to->ev[i] = from->ev[count + i];
        to->ev[i].off -= tail_body;
        to->ev[i].id_off -= tail_ids;
    }
    to->n = ntail;
    to->committed = from->committed > count ? from->committed - count : 0;
    to->first_ms = now_ms;
    pgcdc_http_batch_truncate(from, count);
    from->committed = count;
    struct pgcdc_http_batch t = *to;
    *to = *from;
    *from = t;
    return 0;
}

void pgcdc_http_batch_truncate(struct pgcdc_http_batch *b, size_t keep)
{
    if (keep >= b->n)
        return;
    if (keep == 0) {
        pgcdc_http_batch_reset(b);
        return;
    }
    b->body.len = b->ev[keep].off - 1;
    b->body.data[b->body.len] = '\0';
    b->ids.len = b->ev[keep].id_off;
    b->n = keep;
    if (b->committed > keep)
        b->committed = keep;
}

void pgcdc_http_batch_reset(struct pgcdc_http_batch *b)
{
    pgcdc_buf_reset(&b->body);
    pgcdc_buf_reset(&b->ids);
    b->n = 0;
    b->committed = 0;
    b->first_ms = 0;
}

void pgcdc_http_batch_free(struct pgcdc_http_batch *b)
{
    pgcdc_buf_free(&b->body);
    pgcdc_buf_free(&b->ids);
    free(b->ev);
    memset(b, 0, sizeof *b);
}

size_t pgcdc_http_batch_window_len(const struct pgcdc_http_batch *b, size_t lo, size_t hi)
{
    if (lo >= hi)
        return 2; /* "[]" */
    const struct pgcdc_http_event *last = &b->ev[hi - 1];
    return 1 + (last->off + last->len - b->ev[lo].off) + 1;
}

size_t pgcdc_http_batch_window_read(const struct pgcdc_http_batch *b, size_t lo, size_t hi,
                                    size_t at, char *out, size_t cap)
{
    size_t total = pgcdc_http_batch_window_len(b, lo, hi), w = 0;
    size_t inner = total - 2;
    const char *src = lo < hi ? b->body.data + b->ev[lo].off : "";
    while (w < cap && at < total) {
        if (at == 0) {
            out[w++] = '[';
            at++;
        } else if (at == total - 1) {
            out[w++] = ']';
            at++;
        } else {
            size_t n = inner - (at - 1);
            if (n > cap - w)
                n = cap - w;
            memcpy(out + w, src + (at - 1), n);
            w += n;
            at += n;
        }
    }
    return w;
}

static void id_hash(const struct pgcdc_http_batch *b, const struct pgcdc_http_event *e, char *hex)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    const char *ids = b->ids.data + e->id_off;
    bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
              EVP_DigestUpdate(ctx, ids, e->table_len) == 1 && EVP_DigestUpdate(ctx, "", 1) == 1 &&
              (e->key_len ? EVP_DigestUpdate(ctx, ids + e->table_len, e->key_len)
                          : EVP_DigestUpdate(ctx, "null", 4)) == 1 &&
              EVP_DigestFinal_ex(ctx, md, NULL) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        memset(md, 0, sizeof md); /* the LSNs and count still name the batch */
    for (int i = 0; i < 8; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

void pgcdc_http_batch_idempotency_key(const struct pgcdc_http_batch *b, size_t lo, size_t hi,
                                      char *out, size_t outlen)
{
    if (lo >= hi) {
        snprintf(out, outlen, "empty");
        return;
    }
    const struct pgcdc_http_event *f = &b->ev[lo], *l = &b->ev[hi - 1];
    char h1[17], h2[17];
    id_hash(b, f, h1);
    id_hash(b, l, h2);
    snprintf(out, outlen, "%" PRIu64 ".%" PRIu64 ".%s-%" PRIu64 ".%" PRIu64 ".%s-%zu",
             f->commit_lsn, f->lsn, h1, l->commit_lsn, l->lsn, h2, hi - lo);
}

/* HMAC-SHA256 over "<t>." then each of the parts. */
static int sign_parts(const char *secret, int64_t t, const void *const *parts, const size_t *lens,
                      int nparts, char *out, size_t outlen)
{
    char ts[24];
    int tl = snprintf(ts, sizeof ts, "%" PRId64 ".", t);
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    int rc = PGCDC_ERR;
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (ctx == NULL ||
        EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret), params) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)ts, (size_t)tl) != 1)
        goto done;
    for (int i = 0; i < nparts; i++)
        if (lens[i] && EVP_MAC_update(ctx, parts[i], lens[i]) != 1)
            goto done;
    if (EVP_MAC_final(ctx, mac, &maclen, sizeof mac) != 1)
        goto done;
    int n = snprintf(out, outlen, "t=%" PRId64 ",v1=", t);
    for (size_t i = 0; i < maclen && n > 0 && (size_t)n + 2 < outlen; i++, n += 2)
        snprintf(out + n, 3, "%02x", mac[i]);
    rc = 0;
done:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
    return rc;
}

int pgcdc_http_sign(const char *secret, int64_t t, const void *body, size_t len, char *out,
                    size_t outlen)
{
    const void *parts[] = {body};
    size_t lens[] = {len};
    return sign_parts(secret, t, parts, lens, 1, out, outlen);
}

int pgcdc_http_batch_signature(const struct pgcdc_http_batch *b, size_t lo, size_t hi,
                               const char *secret, int64_t t, char *out, size_t outlen)
{
    size_t inner = pgcdc_http_batch_window_len(b, lo, hi) - 2;
    const void *parts[] = {"[", lo < hi ? b->body.data + b->ev[lo].off : "", "]"};
    size_t lens[] = {1, inner, 1};
    return sign_parts(secret, t, parts, lens, 3, out, outlen);
}
