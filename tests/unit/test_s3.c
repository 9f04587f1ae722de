/*
 * test_s3.c — the S3 sink's pure parts: sink.s3.url, URLs of keys, object names and
 * position.json, the XML bits, and a staged flush built into per-table objects (gzip
 * round trip, a cut transaction dropped).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "pgcdc/s3_conf.h"
#include "pgcdc/s3_layout.h"
#include "pgcdc/s3_stage.h"
#include "unit.h"

static char err[1024];

static void test_url(void)
{
    char bucket[64];
    char *prefix;
    CHECK_INT_EQ(pgcdc_s3_conf_parse_url("s3://cdc-data/a/b/", bucket, &prefix, err, sizeof err),
                 0);
    CHECK_STR_EQ(bucket, "cdc-data");
    CHECK_STR_EQ(prefix, "a/b");
    free(prefix);
    CHECK_INT_EQ(pgcdc_s3_conf_parse_url("s3://cdc", bucket, &prefix, err, sizeof err), 0);
    CHECK_STR_EQ(prefix, "");
    free(prefix);
    const char *bad[] = {"https://cdc/x", "s3://",        "s3://ab", "s3://Bad!/x",
                         "s3://cdc/a//b", "s3://cdc/x?y", NULL};
    for (int i = 0; bad[i]; i++) {
        CHECK_INT_EQ(pgcdc_s3_conf_parse_url(bad[i], bucket, &prefix, err, sizeof err), -3);
        CHECK_CONTAINS(err, "s3://BUCKET");
        free(prefix);
    }
}

static void test_urls_and_names(void)
{
    struct pgcdc_s3_target t = {.bucket = "cdc", .prefix = "p", .endpoint = "https://s3.x.com"};
    char url[512], key[PGCDC_S3_KEY_MAX];
    CHECK_INT_EQ(pgcdc_s3_conf_url(&t, "p/public.my table/x", "a=1", url, sizeof url), 0);
    CHECK_STR_EQ(url, "https://cdc.s3.x.com/p/public.my%20table/x?a=1");
    t.path_style = true;
    CHECK_INT_EQ(pgcdc_s3_conf_url(&t, NULL, NULL, url, sizeof url), 0);
    CHECK_STR_EQ(url, "https://s3.x.com/cdc/");
    CHECK(pgcdc_s3_layout_object(key, sizeof key, "p", "public.t", 12, 0x1A2B3C4, true) > 0);
    CHECK_STR_EQ(key, "p/public.t/0000000012-0000000001A2B3C4.jsonl.gz");
    uint32_t seq = 0;
    CHECK(pgcdc_s3_layout_parse_object("0000000012-0000000001A2B3C4.jsonl.gz", &seq));
    CHECK_INT_EQ(seq, 12);
    CHECK(pgcdc_s3_layout_parse_object("0000000013-0000000001A2B3C4.jsonl", &seq));
    CHECK(!pgcdc_s3_layout_parse_object("notes.txt", &seq));
    CHECK(!pgcdc_s3_layout_parse_object("0000000012-0000000001A2B3C4.jsonl.bak", &seq));
    CHECK(pgcdc_s3_layout_object(key, sizeof key, "", "s.t", 1, 1, false) > 0);
    CHECK_STR_EQ(key, "s.t/0000000001-0000000000000001.jsonl");
}

static void test_position_and_xml(void)
{
    char body[256];
    struct pgcdc_s3_position p = {.seq = 17, .end_lsn = 27439044}, q;
    int n = pgcdc_s3_layout_format_position(body, sizeof body, &p, 123);
    CHECK_CONTAINS(body, "\"end_lsn\":\"0/1A2AFC4\"");
    CHECK_INT_EQ(pgcdc_s3_layout_parse_position(body, (size_t)n, &q, err, sizeof err), 0);
    CHECK_INT_EQ(q.seq, 17);
    CHECK_U64_EQ(q.end_lsn, 27439044);
    CHECK(pgcdc_s3_layout_parse_position("{\"seq\":1}", 9, &q, err, sizeof err) < 0);
    CHECK(pgcdc_s3_layout_parse_position("junk", 4, &q, err, sizeof err) < 0);
    const char *xml = "<Error><Code>NoSuchBucket</Code><Key>a&amp;b</Key><Key>c</Key></Error>";
    char out[64];
    CHECK_INT_EQ(pgcdc_s3_layout_xml_tag(xml, strlen(xml), "Code", 0, out, sizeof out), 12);
    CHECK_STR_EQ(out, "NoSuchBucket");
    CHECK(pgcdc_s3_layout_xml_tag(xml, strlen(xml), "Key", 0, out, sizeof out) > 0);
    CHECK_STR_EQ(out, "a&b");
    CHECK(pgcdc_s3_layout_xml_tag(xml, strlen(xml), "Key", 1, out, sizeof out) > 0);
    CHECK_STR_EQ(out, "c");
    CHECK_INT_EQ(pgcdc_s3_layout_xml_tag(xml, strlen(xml), "Key", 2, out, sizeof out), -1);
}

/* Build table id's object and return it gunzip'd (malloc'd). */
static char *object_text(struct pgcdc_s3_stage *st, uint32_t id, int fd)
{
    struct pgcdc_s3_object o;
    volatile sig_atomic_t stop = 0;
    CHECK_INT_EQ(pgcdc_s3_stage_build(st, id, true, fd, &o, &stop, err, sizeof err), 0);
    unsigned char *gz = malloc(o.len);
    CHECK(pread(fd, gz, o.len, 0) == (ssize_t)o.len);
    static char out[1 << 16];
    z_stream z = {0};
    inflateInit2(&z, 15 + 16);
    z.next_in = gz;
    z.avail_in = (uInt)o.len;
    z.next_out = (Bytef *)out;
    z.avail_out = sizeof(out) - 1;
    CHECK_INT_EQ(inflate(&z, Z_FINISH), Z_STREAM_END);
    out[z.total_out] = '\0';
    inflateEnd(&z);
    free(gz);
    return strdup(out);
}

static void test_stage(void)
{
    struct pgcdc_s3_stage st;
    CHECK_INT_EQ(pgcdc_s3_stage_init(&st, "/tmp", err, sizeof err), 0);
    int fd = pgcdc_s3_stage_tmpfile("/tmp", err, sizeof err);
    /* Transaction 1: a, b, a. Transaction 2: b, then cut. Transaction 3: a. */
    pgcdc_s3_stage_append(&st, "public", "a", 100, "{\"a\":1}", 7, err, sizeof err);
    pgcdc_s3_stage_append(&st, "public", "b", 100, "{\"b\":1}", 7, err, sizeof err);
    pgcdc_s3_stage_append(&st, "public", "a", 100, "{\"a\":2}", 7, err, sizeof err);
    pgcdc_s3_stage_commit(&st);
    pgcdc_s3_stage_append(&st, "public", "b", 200, "{\"b\":2}", 7, err, sizeof err);
    pgcdc_s3_stage_append(&st, "public", "c", 200, "{\"c\":1}", 7, err, sizeof err);
    CHECK_INT_EQ(pgcdc_s3_stage_cut(&st, err, sizeof err), 0);
    pgcdc_s3_stage_append(&st, "public", "a", 300, "{\"a\":3}", 7, err, sizeof err);
    pgcdc_s3_stage_commit(&st);
    CHECK_INT_EQ(pgcdc_s3_stage_seal(&st, err, sizeof err), 0);
    CHECK_U64_EQ(pgcdc_s3_stage_committed(&st), 32);
    CHECK_INT_EQ(st.ntables, 3);
    CHECK_U64_EQ(st.tables[0].first_commit_lsn, 100);
    CHECK_U64_EQ(st.tables[2].bytes_committed, 0); /* c: only in the cut transaction */
    char *a = object_text(&st, 0, fd), *b = object_text(&st, 1, fd);
    CHECK_STR_EQ(a, "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
    CHECK_STR_EQ(b, "{\"b\":1}\n");
    free(a);
    free(b);
    CHECK_INT_EQ(pgcdc_s3_stage_reset(&st, err, sizeof err), 0);
    CHECK_INT_EQ(st.ntables, 0);
    close(fd);
    pgcdc_s3_stage_free(&st);
}

int main(void)
{
    test_url();
    test_urls_and_names();
    test_position_and_xml();
    test_stage();
    return UNIT_DONE();
}
