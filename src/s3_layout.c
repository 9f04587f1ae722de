/*
 * s3_layout.c — object names, position.json and the little XML S3 answers with (see
 * s3_layout.h for the layout itself).
 */
#include "pgcdc/s3_layout.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "pgcdc/common.h"
#include "pgcdc/json.h"
#include "pgcdc/lsn.h"

int pgcdc_s3_layout_key(char *out, size_t outlen, const char *prefix, const char *rest)
{
    int n = snprintf(out, outlen, "%s%s%s", prefix, *prefix ? "/" : "", rest);
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}

int pgcdc_s3_layout_folder(char *out, size_t outlen, const char *schema, const char *table)
{
    int n = snprintf(out, outlen, "%s.%s", schema, table);
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}

int pgcdc_s3_layout_object(char *out, size_t outlen, const char *prefix, const char *folder,
                           uint32_t seq, uint64_t first_commit_lsn, bool gzip)
{
    int n = snprintf(out, outlen, "%s%s%s/%010" PRIu32 "-%016" PRIX64 ".jsonl%s", prefix,
                     *prefix ? "/" : "", folder, seq, first_commit_lsn, gzip ? ".gz" : "");
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}

bool pgcdc_s3_layout_parse_object(const char *name, uint32_t *seq)
{
    /* 0000000012-0000000001A2B3C4.jsonl or .jsonl.gz */
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    if (name[10] != '-' || v > UINT32_MAX)
        return false;
    for (int i = 11; i < 27; i++)
        if (pgcdc_hex_digit(name[i]) < 0)
            return false;
    if (strcmp(name + 27, ".jsonl") != 0 && strcmp(name + 27, ".jsonl.gz") != 0)
        return false;
    *seq = (uint32_t)v;
    return true;
}

int pgcdc_s3_layout_format_position(char *out, size_t outlen, const struct pgcdc_s3_position *p,
                                    int64_t ts_ms)
{
    char l[PGCDC_LSN_BUFLEN];
    int n = snprintf(out, outlen,
                     "{\"seq\":%" PRIu32 ",\"end_lsn\":\"%s\",\"end_lsn_int\":%" PRIu64
                     ",\"ts_ms\":%" PRId64 "}\n",
                     p->seq, pgcdc_lsn_format(p->end_lsn, l), p->end_lsn, ts_ms);
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}

int pgcdc_s3_layout_parse_position(const char *body, size_t len, struct pgcdc_s3_position *p,
                                   char *err, size_t errlen)
{
    struct pgcdc_json_scan s = {.p = body,
                                .end = body + len,
                                .start = body,
                                .what = "position.json",
                                .err = err,
                                .errlen = errlen};
    bool have_seq = false, have_lsn = false;
    uint64_t seq = 0;
    *p = (struct pgcdc_s3_position){0};
    if (pgcdc_json_expect_slow(&s, '{') < 0)
        return -1;
    pgcdc_json_skip_ws(&s);
    if (pgcdc_json_accept(&s, '}'))
        goto done;
    for (;;) {
        struct pgcdc_span k = {0}, v = {0};
        if (pgcdc_json_string(&s, &k) < 0 || pgcdc_json_expect_slow(&s, ':') < 0)
            return -1;
        pgcdc_json_skip_ws(&s);
        if (pgcdc_json_value(&s, &v) < 0)
            return -1;
        if (pgcdc_json_key_is(k, "seq")) {
            if (pgcdc_json_u64(v, &seq) < 0 || seq > UINT32_MAX)
                return pgcdc_json_fail(&s, "seq is not a sequence number");
            have_seq = true;
        } else if (pgcdc_json_key_is(k, "end_lsn_int")) {
            if (pgcdc_json_u64(v, &p->end_lsn) < 0)
                return pgcdc_json_fail(&s, "end_lsn_int is not an LSN");
            have_lsn = true;
        }
        pgcdc_json_skip_ws(&s);
        if (pgcdc_json_accept(&s, ','))
            continue;
        if (pgcdc_json_expect_slow(&s, '}') < 0)
            return -1;
        break;
    }
done:
    if (!have_seq || !have_lsn)
        return pgcdc_json_fail(&s, "seq or end_lsn_int is missing");
    p->seq = (uint32_t)seq;
    return 0;
}

int pgcdc_s3_layout_xml_tag(const char *xml, size_t len, const char *tag, size_t n, char *out,
                            size_t outlen)
{
    char open[80], close[80];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    size_t ol = strlen(open), cl = strlen(close);
    const char *p = xml, *end = xml + len;
    for (;;) {
        const char *b = memmem(p, (size_t)(end - p), open, ol);
        if (!b)
            return -1;
        b += ol;
        const char *e = memmem(b, (size_t)(end - b), close, cl);
        if (!e)
            return -1;
        if (n-- > 0) {
            p = e + cl;
            continue;
        }
        static const struct {
            const char *ent;
            char c;
        } ents[] = {
            {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
        size_t o = 0;
        for (const char *q = b; q < e;) {
            char c = *q++;
            if (c == '&')
                for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
                    size_t el = strlen(ents[i].ent);
                    if ((size_t)(e - q + 1) >= el && memcmp(q - 1, ents[i].ent, el) == 0) {
                        c = ents[i].c;
                        q += el - 1;
                        break;
                    }
                }
            if (o + 1 >= outlen)
                return -1;
            out[o++] = c;
        }
        out[o] = '\0';
        return (int)o;
    }
}
