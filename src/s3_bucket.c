/*
 * s3_bucket.c — position.json, orphan clean-up, the slot record's copy and `check`, on
 * the S3 client (see s3_bucket.h).
 */
#include "pgcdc/s3_bucket.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "pgcdc/log.h"

#define LIST_BODY_MAX (8u << 20) /* a ListObjectsV2 page: 1000 keys, well under this */

static int meta_key(const struct pgcdc_s3 *s3, const char *name, char *out, size_t outlen)
{
    char rest[256];
    snprintf(rest, sizeof(rest), PGCDC_S3_META_DIR "/%s", name);
    return pgcdc_s3_layout_key(out, outlen, s3->t->prefix, rest);
}

int pgcdc_s3_bucket_get_meta(struct pgcdc_s3 *s3, const char *name, struct pgcdc_buf *out,
                             bool *found, int64_t retry_ms, char *err, size_t errlen)
{
    char key[PGCDC_S3_KEY_MAX];
    struct pgcdc_s3_result res;
    *found = false;
    meta_key(s3, name, key, sizeof(key));
    struct pgcdc_s3_req rq = {
        .method = "GET", .key = key, .body_fd = -1, .keep_body_max = 1u << 20};
    int rc = pgcdc_s3_call(s3, &rq, retry_ms, &res, err, errlen);
    if (rc < 0)
        return rc;
    if (res.status == 404 && strcmp(res.code, "NoSuchBucket") != 0)
        return PGCDC_OK;
    if (res.status / 100 != 2)
        return pgcdc_s3_refused(s3, "GET", key, &res, err, errlen);
    pgcdc_buf_reset(out);
    if (pgcdc_buf_append(out, res.resp->body.data ? res.resp->body.data : "", res.resp->body.len) <
        0) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    *found = true;
    return PGCDC_OK;
}

int pgcdc_s3_bucket_put_meta(struct pgcdc_s3 *s3, const char *name, const void *body, size_t len,
                             int64_t retry_ms, char *err, size_t errlen)
{
    char key[PGCDC_S3_KEY_MAX], md5b64[25];
    unsigned char md5[16];
    unsigned int dl;
    struct pgcdc_s3_result res;
    meta_key(s3, name, key, sizeof(key));
    EVP_Digest(body, len, md5, &dl, EVP_md5(), NULL);
    pgcdc_s3_md5_b64(md5, md5b64);
    struct pgcdc_s3_req rq = {.method = "PUT",
                              .key = key,
                              .body = body,
                              .body_len = len,
                              .body_fd = -1,
                              .md5_b64 = md5b64,
                              .content_type = "application/json"};
    int rc = pgcdc_s3_call(s3, &rq, retry_ms, &res, err, errlen);
    if (rc < 0)
        return rc;
    if (res.status / 100 != 2)
        return pgcdc_s3_refused(s3, "PUT", key, &res, err, errlen);
    return PGCDC_OK;
}

int pgcdc_s3_bucket_read_position(struct pgcdc_s3 *s3, struct pgcdc_s3_position *pos,
                                  int64_t retry_ms, char *err, size_t errlen)
{
    struct pgcdc_buf b = {0};
    bool found;
    *pos = (struct pgcdc_s3_position){0};
    int rc = pgcdc_s3_bucket_get_meta(s3, "position.json", &b, &found, retry_ms, err, errlen);
    if (rc == PGCDC_OK && found) {
        char why[256];
        if (pgcdc_s3_layout_parse_position(b.data, b.len, pos, why, sizeof(why)) < 0) {
            snprintf(err, errlen,
                     "s3://%s/%s%s" PGCDC_S3_META_DIR "/position.json is damaged (%s): restore "
                     "it, or start over with an empty prefix and a new slot",
                     s3->t->bucket, s3->t->prefix, *s3->t->prefix ? "/" : "", why);
            rc = PGCDC_ERR;
        }
    }
    pgcdc_buf_free(&b);
    return rc;
}

int pgcdc_s3_bucket_write_position(struct pgcdc_s3 *s3, const struct pgcdc_s3_position *pos,
                                   int64_t retry_ms, char *err, size_t errlen)
{
    char body[256];
    int n = pgcdc_s3_layout_format_position(body, sizeof(body), pos, pgcdc_now_ms());
    return pgcdc_s3_bucket_put_meta(s3, "position.json", body, (size_t)n, retry_ms, err, errlen);
}

/* One ListObjectsV2 page of prefix (delimited by '/' when folders), after start_after. */
static int list_page(struct pgcdc_s3 *s3, const char *prefix, bool folders, const char *start_after,
                     const char *token, int64_t retry_ms, struct pgcdc_s3_result *res, char *err,
                     size_t errlen)
{
    char q[PGCDC_S3_KEY_MAX * 10], e1[PGCDC_S3_KEY_MAX * 3], e2[PGCDC_S3_KEY_MAX * 3],
        e3[PGCDC_S3_KEY_MAX * 3];
    /* SigV4 wants the query parameters sorted by name. */
    if (pgcdc_s3_conf_query_escape(token ? token : "", e1, sizeof(e1)) < 0 ||
        pgcdc_s3_conf_query_escape(prefix, e2, sizeof(e2)) < 0 ||
        pgcdc_s3_conf_query_escape(start_after ? start_after : "", e3, sizeof(e3)) < 0) {
        snprintf(err, errlen, "an S3 listing parameter is too long");
        return PGCDC_ERR;
    }
    snprintf(q, sizeof(q), "%s%s%s%slist-type=2&prefix=%s%s%s", token ? "continuation-token=" : "",
             token ? e1 : "", token ? "&" : "", folders ? "delimiter=%2F&" : "", e2,
             start_after ? "&start-after=" : "", start_after ? e3 : "");
    struct pgcdc_s3_req rq = {
        .method = "GET", .query = q, .body_fd = -1, .keep_body_max = LIST_BODY_MAX};
    int rc = pgcdc_s3_call(s3, &rq, retry_ms, res, err, errlen);
    if (rc < 0)
        return rc;
    if (res->status != 200)
        return pgcdc_s3_refused(s3, "LIST", prefix, res, err, errlen);
    return PGCDC_OK;
}

/*
 * The next page of a listing into page (the caller frees it): its body is copied, since the
 * client's is overwritten by the next request. tok: the page's continuation token on entry
 * ("" for the first), the next one on return ("" after the last page).
 */
static int next_page(struct pgcdc_s3 *s3, const char *prefix, bool folders, const char *start_after,
                     char *tok, size_t toklen, int64_t retry_ms, struct pgcdc_buf *page, char *err,
                     size_t errlen)
{
    struct pgcdc_s3_result res;
    char t[16];
    int rc = list_page(s3, prefix, folders, start_after, tok[0] ? tok : NULL, retry_ms, &res, err,
                       errlen);
    if (rc < 0)
        return rc;
    pgcdc_buf_reset(page);
    if (pgcdc_buf_append(page, res.resp->body.data ? res.resp->body.data : "", res.resp->body.len) <
        0) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    tok[0] = '\0';
    if (pgcdc_s3_layout_xml_tag(page->data, page->len, "IsTruncated", 0, t, sizeof(t)) > 0 &&
        strcmp(t, "true") == 0)
        pgcdc_s3_layout_xml_tag(page->data, page->len, "NextContinuationToken", 0, tok, toklen);
    return PGCDC_OK;
}

/* Delete the objects above seq in one table folder (its key prefix, '/' included). */
static int clean_folder(struct pgcdc_s3 *s3, const char *folder, uint32_t seq, int64_t retry_ms,
                        unsigned *deleted, char *err, size_t errlen)
{
    char after[PGCDC_S3_KEY_MAX + 16], tok[1024] = "", key[PGCDC_S3_KEY_MAX];
    /* Our names start with ten digits and '-': "<seq>~" sorts after every name of seq. */
    snprintf(after, sizeof(after), "%s%010" PRIu32 "~", folder, seq);
    size_t flen = strlen(folder);
    do {
        struct pgcdc_buf page = {0};
        int rc =
            next_page(s3, folder, false, after, tok, sizeof(tok), retry_ms, &page, err, errlen);
        for (size_t i = 0; rc == PGCDC_OK && pgcdc_s3_layout_xml_tag(page.data, page.len, "Key", i,
                                                                     key, sizeof(key)) > 0;
             i++) {
            uint32_t s;
            if (strncmp(key, folder, flen) != 0 || !pgcdc_s3_layout_parse_object(key + flen, &s) ||
                s <= seq)
                continue;
            struct pgcdc_s3_req rq = {.method = "DELETE", .key = key, .body_fd = -1};
            struct pgcdc_s3_result dr;
            if ((rc = pgcdc_s3_call(s3, &rq, retry_ms, &dr, err, errlen)) == PGCDC_OK &&
                dr.status / 100 != 2 && dr.status != 404)
                rc = pgcdc_s3_refused(s3, "DELETE", key, &dr, err, errlen);
            if (rc == PGCDC_OK) {
                (*deleted)++;
                pgcdc_log(PGCDC_LOG_INFO,
                          "deleted an object of a flush position.json does not cover", "key", key,
                          NULL);
            }
        }
        pgcdc_buf_free(&page);
        if (rc < 0)
            return rc;
    } while (tok[0]);
    return PGCDC_OK;
}

int pgcdc_s3_bucket_delete_after(struct pgcdc_s3 *s3, uint32_t seq, int64_t retry_ms,
                                 unsigned *deleted, char *err, size_t errlen)
{
    char root[PGCDC_S3_KEY_MAX], meta[PGCDC_S3_KEY_MAX], tok[1024] = "";
    pgcdc_s3_layout_key(root, sizeof(root), s3->t->prefix, "");
    pgcdc_s3_layout_key(meta, sizeof(meta), s3->t->prefix, PGCDC_S3_META_DIR "/");
    *deleted = 0;
    do {
        struct pgcdc_buf page = {0};
        int rc = next_page(s3, root, true, NULL, tok, sizeof(tok), retry_ms, &page, err, errlen);
        /* Folders are the <Prefix> of each <CommonPrefixes> element. */
        const char *p = page.data, *end = page.data + page.len;
        while (rc == PGCDC_OK && p && (p = memmem(p, (size_t)(end - p), "<CommonPrefixes>", 16))) {
            char folder[PGCDC_S3_KEY_MAX];
            if (pgcdc_s3_layout_xml_tag(p, (size_t)(end - p), "Prefix", 0, folder, sizeof(folder)) >
                    0 &&
                strcmp(folder, meta) != 0)
                rc = clean_folder(s3, folder, seq, retry_ms, deleted, err, errlen);
            p += 16;
        }
        pgcdc_buf_free(&page);
        if (rc < 0)
            return rc;
    } while (tok[0]);
    return PGCDC_OK;
}

static int fails;

static void say(const char *status, const char *what, const char *detail)
{
    printf("%s %s: %s\n", status, what, detail);
    fflush(stdout);
    if (strcmp(status, "FAIL") == 0)
        fails++;
}

/* One check step: PASS with ok, else FAIL with the store's answer in words. */
static bool step(struct pgcdc_s3 *s3, const char *name, const char *what, const char *key, int rc,
                 const struct pgcdc_s3_result *res, const char *ok, char *err, size_t errlen)
{
    if (rc == PGCDC_OK && res->status / 100 == 2) {
        say("PASS", name, ok);
        return true;
    }
    if (rc == PGCDC_OK)
        pgcdc_s3_refused(s3, what, key, res, err, errlen);
    else if (rc == PGCDC_ERR_RETRY)
        strncat(err, ": is sink.s3.endpoint right, and the store reachable from here?",
                errlen - strlen(err) - 1);
    say("FAIL", name, err);
    return false;
}

int pgcdc_s3_bucket_check(const struct pgcdc_config *cfg)
{
    struct pgcdc_s3_target t;
    struct pgcdc_s3 s3;
    char err[1024] = "", key[PGCDC_S3_KEY_MAX], ok[PGCDC_S3_KEY_MAX + 256], name[64];
    struct pgcdc_s3_result res;
    fails = 0;
    int rc = pgcdc_s3_conf_resolve(&t, cfg, err, sizeof(err));
    if (rc < 0) {
        say("FAIL", "s3_settings", err);
        return rc;
    }
    if (pgcdc_s3_new(&s3, &t, 10000, err, sizeof(err)) < 0) {
        say("FAIL", "s3_settings", err);
        pgcdc_s3_conf_free(&t);
        return 1;
    }
    /* check fails fast: one retry at most, within a few seconds. */
    struct pgcdc_s3_req head = {.method = "HEAD", .body_fd = -1};
    snprintf(ok, sizeof(ok), "bucket \"%s\" exists at %s (region %s)", t.bucket, t.endpoint,
             t.region);
    rc = pgcdc_s3_call(&s3, &head, 2000, &res, err, sizeof(err));
    if (step(&s3, "s3_bucket", "HEAD", NULL, rc, &res, ok, err, sizeof(err))) {
        char root[PGCDC_S3_KEY_MAX], q[PGCDC_S3_KEY_MAX * 3 + 64], e[PGCDC_S3_KEY_MAX * 3];
        pgcdc_s3_layout_key(root, sizeof(root), t.prefix, "");
        pgcdc_s3_conf_query_escape(root, e, sizeof(e));
        snprintf(q, sizeof(q), "list-type=2&max-keys=1&prefix=%s", e);
        struct pgcdc_s3_req list = {.method = "GET", .query = q, .body_fd = -1};
        snprintf(ok, sizeof(ok), "objects under s3://%s/%s can be listed", t.bucket, root);
        rc = pgcdc_s3_call(&s3, &list, 2000, &res, err, sizeof(err));
        step(&s3, "s3_list", "LIST", root, rc, &res, ok, err, sizeof(err));
        snprintf(name, sizeof(name), "check-%d", (int)getpid());
        meta_key(&s3, name, key, sizeof(key));
        rc = pgcdc_s3_bucket_put_meta(&s3, name, "{}", 2, 2000, err, sizeof(err));
        if (rc == PGCDC_OK)
            say("PASS", "s3_put", "a probe object was written under _pgcdc/");
        else
            say("FAIL", "s3_put", err);
        struct pgcdc_s3_req del = {.method = "DELETE", .key = key, .body_fd = -1};
        snprintf(ok, sizeof(ok), "the probe object was deleted");
        rc = pgcdc_s3_call(&s3, &del, 2000, &res, err, sizeof(err));
        step(&s3, "s3_delete", "DELETE", key, rc, &res, ok, err, sizeof(err));
    }
    pgcdc_s3_free(&s3);
    pgcdc_s3_conf_free(&t);
    return fails;
}
