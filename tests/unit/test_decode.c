/*
 * test_decode.c — wal2json v2 messages (recorded, tests/fixtures/wal2json) -> struct
 * pgcdc_change: every field, and values kept as the exact tokens wal2json sent.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgcdc/common.h"
#include "pgcdc/decode.h"
#include "pgcdc/lsn.h"
#include "fixture.h"
#include "unit.h"

static const char *const all_fixtures[] = {
    "basic",    "numbers",    "texts", "toast",    "replica_full", "key_change", "keyless",
    "messages", "partitions", "names", "timezone", "bigtxn",       NULL,
};

static char err[512];

/* Column by name (name given without quotes); NULL when absent. */
static const struct pgcdc_col *col(const struct pgcdc_col *cols, size_t n, const char *name)
{
    size_t l = strlen(name);

    for (size_t i = 0; i < n; i++)
        if (cols[i].name.len == l + 2 && memcmp(cols[i].name.p + 1, name, l) == 0)
            return &cols[i];
    return NULL;
}

/* The value token of a new-row column, as a C string; "(absent)" if not there. */
static const char *val(const struct pgcdc_change *ch, const char *name)
{
    const struct pgcdc_col *c = col(ch->columns, ch->ncolumns, name);
    return c ? S(c->value) : "(absent)";
}

static const char *old(const struct pgcdc_change *ch, const char *name)
{
    const struct pgcdc_col *c = col(ch->identity, ch->nidentity, name);
    return c ? S(c->value) : "(absent)";
}

/*
 * ms since the epoch of "\"2026-11-23 17:56:53.930757+00\"" computed without the code under
 * test: sscanf + timegm, offset [+-]HH[:MM].
 */
static int64_t expect_ts_ms(const char *quoted)
{
    struct tm tm = {0};
    char frac[16] = "", sign = '+';
    int oh = 0, om = 0;
    int64_t ms = 0;
    const char *p = quoted + 1;

    sscanf(p, "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
           &tm.tm_sec);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    p += 19;
    if (*p == '.') {
        size_t n = strspn(p + 1, "0123456789");
        memcpy(frac, p + 1, n < 15 ? n : 15);
        p += 1 + n;
        for (int i = 0; i < 3; i++)
            ms = ms * 10 + (frac[i] && i < (int)strlen(frac) ? frac[i] - '0' : 0);
    }
    sign = *p;
    sscanf(p + 1, "%d:%d", &oh, &om);
    int64_t off = (int64_t)(oh * 3600 + om * 60) * (sign == '-' ? -1 : 1);
    return ((int64_t)timegm(&tm) - off) * 1000 + ms;
}

static int decode_line(struct pgcdc_decoder *d, struct fixture *f, size_t i,
                       struct pgcdc_change *ch)
{
    int rc = pgcdc_decode(d, f->line[i], f->len[i], ch, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "    decode failed: %s\n    line: %.*s\n", err,
                (int)(f->len[i] < 300 ? f->len[i] : 300), f->line[i]);
    return rc;
}

/* Every recorded line decodes, and its header fields match the text of the line. */
static void test_every_line(void)
{
    struct pgcdc_decoder d;
    char buf[64];

    pgcdc_decoder_init(&d);
    for (size_t k = 0; all_fixtures[k]; k++) {
        struct fixture f;
        CHECK_INT_EQ(fixture_load(&f, all_fixtures[k]), 0);
        CHECK(f.n > 0);
        for (size_t i = 0; i < f.n; i++) {
            struct pgcdc_change ch;
            const char *line = f.line[i];
            size_t len = f.len[i];
            uint64_t lsn = 0;

            if (decode_line(&d, &f, i, &ch) != 0) {
                CHECK(!"decode failed");
                fprintf(stderr, "    in %s.jsonl line %zu\n", all_fixtures[k], i + 1);
                continue;
            }
            CHECK_INT_EQ(ch.action, fixture_field(line, len, "action", buf, sizeof buf)[1]);
            fixture_field(line, len, "xid", buf, sizeof buf);
            CHECK_U64_EQ(ch.xid, strcmp(buf, "null") == 0 ? 0 : strtoull(buf, NULL, 10));
            fixture_field(line, len, "lsn", buf, sizeof buf);
            buf[strlen(buf) - 1] = '\0';
            CHECK_INT_EQ(pgcdc_lsn_parse_str(buf + 1, &lsn), 0);
            CHECK_U64_EQ(ch.lsn, lsn);
            fixture_field(line, len, "nextlsn", buf, sizeof buf);
            if (buf[0]) {
                buf[strlen(buf) - 1] = '\0';
                CHECK_INT_EQ(pgcdc_lsn_parse_str(buf + 1, &lsn), 0);
                CHECK_U64_EQ(ch.nextlsn, lsn);
                CHECK(ch.nextlsn > ch.lsn);
            }
            fixture_field(line, len, "timestamp", buf, sizeof buf);
            if (buf[0] == '"')
                CHECK_INT_EQ(ch.ts_ms, expect_ts_ms(buf));
            else
                CHECK_INT_EQ(ch.ts_ms, 0); /* "timestamp":null: absent */
            if (ch.action == PGCDC_ACT_INSERT || ch.action == PGCDC_ACT_UPDATE ||
                ch.action == PGCDC_ACT_DELETE || ch.action == PGCDC_ACT_TRUNCATE) {
                CHECK(ch.schema.len >= 2 && ch.schema.p[0] == '"');
                CHECK(ch.table.len >= 2 && ch.table.p[0] == '"');
            }
            CHECK(ch.has_columns == (memmem(line, len, "\"columns\":", 10) != NULL));
            CHECK(ch.has_identity == (memmem(line, len, "\"identity\":", 11) != NULL));
        }
        fixture_free(&f);
    }
    pgcdc_decoder_free(&d);
}

static void test_basic(void)
{
    struct pgcdc_decoder d;
    struct fixture f;
    struct pgcdc_change ch;

    pgcdc_decoder_init(&d);
    fixture_load(&f, "basic");
    /* B: commit LSN and the end of the commit record. */
    CHECK_INT_EQ(decode_line(&d, &f, 0, &ch), 0);
    CHECK_INT_EQ(ch.action, PGCDC_ACT_BEGIN);
    CHECK(ch.nextlsn > ch.lsn);
    CHECK(!ch.has_columns && !ch.has_identity && ch.npk == 0);
    uint64_t commit_lsn = ch.lsn, xid = ch.xid;

    CHECK_INT_EQ(decode_line(&d, &f, 1, &ch), 0);
    CHECK_INT_EQ(ch.action, PGCDC_ACT_INSERT);
    CHECK_U64_EQ(ch.xid, xid);
    CHECK(ch.lsn < commit_lsn); /* a change's own LSN precedes its commit */
    CHECK_STR_EQ(S(ch.schema), "\"public\"");
    CHECK_STR_EQ(S(ch.table), "\"basic\"");
    CHECK_INT_EQ(ch.ncolumns, 3);
    CHECK_STR_EQ(S(ch.columns[0].name), "\"id\"");
    CHECK_INT_EQ(ch.columns[0].typeoid, PGCDC_OID_INT4);
    CHECK_STR_EQ(S(ch.columns[0].value), "1");
    CHECK_STR_EQ(S(ch.columns[1].name), "\"name\"");
    CHECK_INT_EQ(ch.columns[1].typeoid, 25);
    CHECK_STR_EQ(S(ch.columns[1].value), "\"one\"");
    CHECK_STR_EQ(val(&ch, "qty"), "10");
    CHECK_INT_EQ(ch.npk, 1);
    CHECK_STR_EQ(S(ch.pk[0].name), "\"id\"");
    CHECK_INT_EQ(ch.pk[0].typeoid, PGCDC_OID_INT4);
    CHECK_INT_EQ(ch.pk[0].value.len, 0);
    CHECK(!ch.has_identity);

    CHECK_INT_EQ(decode_line(&d, &f, 2, &ch), 0);
    CHECK_INT_EQ(ch.action, PGCDC_ACT_COMMIT);
    CHECK_U64_EQ(ch.lsn, commit_lsn);

    /* U: new row and the old key. */
    CHECK_INT_EQ(decode_line(&d, &f, 6, &ch), 0);
    CHECK_INT_EQ(ch.action, PGCDC_ACT_UPDATE);
    CHECK_STR_EQ(val(&ch, "qty"), "21");
    CHECK(ch.has_identity);
    CHECK_INT_EQ(ch.nidentity, 1);
    CHECK_STR_EQ(old(&ch, "id"), "2");

    /* An update to NULL: the token null, not absent. */
    CHECK_INT_EQ(decode_line(&d, &f, 9, &ch), 0);
    CHECK_STR_EQ(val(&ch, "qty"), "null");
    CHECK_STR_EQ(val(&ch, "name"), "\"uno\"");

    /* D: only the old key. */
    CHECK_INT_EQ(decode_line(&d, &f, 12, &ch), 0);
    CHECK_INT_EQ(ch.action, PGCDC_ACT_DELETE);
    CHECK(!ch.has_columns);
    CHECK_INT_EQ(ch.ncolumns, 0);
    CHECK_STR_EQ(old(&ch, "id"), "3");

    /* T: schema and table, no rows. */
    CHECK_INT_EQ(decode_line(&d, &f, 15, &ch), 0);
    CHECK_INT_EQ(ch.action, PGCDC_ACT_TRUNCATE);
    CHECK_STR_EQ(S(ch.table), "\"basic\"");
    CHECK(!ch.has_columns && !ch.has_identity);
    fixture_free(&f);
    pgcdc_decoder_free(&d);
}

static void test_numbers(void)
{
    struct pgcdc_decoder d;
    struct fixture f;
    struct pgcdc_change ch;
    char nines[1001];

    pgcdc_decoder_init(&d);
    fixture_load(&f, "numbers");
    CHECK_INT_EQ(decode_line(&d, &f, 1, &ch), 0);
    CHECK_STR_EQ(val(&ch, "i2"), "-32768");
    CHECK_STR_EQ(val(&ch, "i4"), "2147483647");
    CHECK_STR_EQ(val(&ch, "i8"), "9007199254740993"); /* 2^53 + 1: not through a double */
    CHECK_STR_EQ(val(&ch, "o"), "4294967295");
    CHECK_STR_EQ(val(&ch, "n"), "12345678901234567890123456789012345678");
    CHECK_STR_EQ(val(&ch, "f8"), "1.5");
    CHECK_STR_EQ(val(&ch, "f4"), "3.14159");
    CHECK_STR_EQ(val(&ch, "b"), "true");
    CHECK_INT_EQ(col(ch.columns, ch.ncolumns, "i8")->typeoid, PGCDC_OID_INT8);
    CHECK_INT_EQ(col(ch.columns, ch.ncolumns, "n")->typeoid, PGCDC_OID_NUMERIC);
    CHECK_INT_EQ(col(ch.columns, ch.ncolumns, "b")->typeoid, PGCDC_OID_BOOL);

    CHECK_INT_EQ(decode_line(&d, &f, 2, &ch), 0);
    CHECK_STR_EQ(val(&ch, "i8"), "-9223372036854775808");
    CHECK_STR_EQ(val(&ch, "n"), "-1234567890.123456789012345678901234567890");
    CHECK_STR_EQ(val(&ch, "b"), "false");

    CHECK_INT_EQ(decode_line(&d, &f, 3, &ch), 0);
    CHECK_STR_EQ(val(&ch, "i8"), "9223372036854775807");
    CHECK_STR_EQ(val(&ch, "n"), "null"); /* NaN: wal2json sends null */

    CHECK_INT_EQ(decode_line(&d, &f, 5, &ch), 0);
    memset(nines, '9', 1000);
    nines[1000] = '\0';
    CHECK_INT_EQ(col(ch.columns, ch.ncolumns, "n")->value.len, 1000);
    CHECK_STR_EQ(val(&ch, "n"), nines);
    CHECK_STR_EQ(val(&ch, "f8"), "1e+308");

    CHECK_INT_EQ(decode_line(&d, &f, 6, &ch), 0);
    CHECK_STR_EQ(val(&ch, "n"), "0.000000000000000000000000000000000000001");
    CHECK_STR_EQ(val(&ch, "f8"), "5e-324");

    CHECK_INT_EQ(decode_line(&d, &f, 7, &ch), 0);
    CHECK_STR_EQ(val(&ch, "n"), "1.10"); /* trailing zero kept */
    fixture_free(&f);
    pgcdc_decoder_free(&d);
}

/* Unescape a new-row column's string value. */
static const char *unesc(const struct pgcdc_change *ch, const char *name)
{
    static char buf[4096];
    const struct pgcdc_col *c = col(ch->columns, ch->ncolumns, name);

    if (c == NULL || pgcdc_json_unescape(c->value, buf, sizeof buf) < 0)
        return "(unescape failed)";
    return buf;
}

static void test_texts(void)
{
    struct pgcdc_decoder d;
    struct fixture f;
    struct pgcdc_change ch;

    pgcdc_decoder_init(&d);
    fixture_load(&f, "texts");
    CHECK_INT_EQ(decode_line(&d, &f, 1, &ch), 0);
    CHECK_INT_EQ(ch.ncolumns, 16);
    CHECK_STR_EQ(unesc(&ch, "t"), "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x80\xa8 \xc3\xa9\xcc\x81");
    CHECK_INT_EQ(decode_line(&d, &f, 2, &ch), 0);
    CHECK_STR_EQ(val(&ch, "t"), "\"say \\\"hi\\\" it's\"");
    CHECK_STR_EQ(unesc(&ch, "t"), "say \"hi\" it's");
    CHECK_INT_EQ(decode_line(&d, &f, 3, &ch), 0);
    CHECK_STR_EQ(unesc(&ch, "t"), "back\\slash \\\\ two \\u0041 not-an-escape");
    CHECK_INT_EQ(decode_line(&d, &f, 4, &ch), 0);
    CHECK_STR_EQ(unesc(&ch, "t"), "tab\there\nnewline\r\nend");
    CHECK_INT_EQ(decode_line(&d, &f, 5, &ch), 0);
    CHECK_STR_EQ(unesc(&ch, "t"), "ctl \x01\x02\x1f\x7f end");
    CHECK_INT_EQ(decode_line(&d, &f, 6, &ch), 0);
    CHECK_STR_EQ(val(&ch, "t"), "null"); /* NULL */
    CHECK_INT_EQ(decode_line(&d, &f, 7, &ch), 0);
    CHECK_STR_EQ(val(&ch, "t"), "\"\""); /* empty string, not NULL */
    CHECK_STR_EQ(unesc(&ch, "t"), "");
    CHECK_INT_EQ(decode_line(&d, &f, 8, &ch), 0);
    CHECK_STR_EQ(unesc(&ch, "t"), "</script> & <b> \\\" \xc3\xbf");

    /* bytea: hex digits without "\x"; char(n) keeps its padding. */
    CHECK_INT_EQ(decode_line(&d, &f, 11, &ch), 0);
    CHECK_STR_EQ(val(&ch, "by"), "\"deadbeef00ff\"");
    CHECK_INT_EQ(col(ch.columns, ch.ncolumns, "by")->typeoid, PGCDC_OID_BYTEA);
    CHECK_STR_EQ(val(&ch, "c"), "\"ab   \"");
    CHECK_INT_EQ(decode_line(&d, &f, 12, &ch), 0);
    CHECK_STR_EQ(val(&ch, "by"), "\"\"");

    /* json/jsonb arrive as strings holding the document. */
    CHECK_INT_EQ(decode_line(&d, &f, 16, &ch), 0);
    CHECK_STR_EQ(unesc(&ch, "j"),
                 "{\"a\": [1, 2.50, \"x\\\"y\"], \"b\": null,  \"n\": 12345678901234567890.5}");
    CHECK_STR_EQ(unesc(&ch, "jb"), "{\"a\": [1, 2.50], \"b\": 1, \"s\": \"caf\xc3\xa9\"}");
    CHECK_INT_EQ(decode_line(&d, &f, 18, &ch), 0);
    CHECK_STR_EQ(val(&ch, "j"), "\"12345678901234567890\"");

    /* Arrays in their text form. */
    CHECK_INT_EQ(decode_line(&d, &f, 23, &ch), 0);
    CHECK_STR_EQ(unesc(&ch, "ia"), "{1,2,NULL}");
    CHECK_STR_EQ(unesc(&ch, "ta"), "{\"a\\\"b\",NULL,\"c,d\",\"e\\\\f\",\"\",\"NULL\",\" sp \"}");

    /* Date/time and friends. */
    CHECK_INT_EQ(decode_line(&d, &f, 28, &ch), 0);
    CHECK_STR_EQ(val(&ch, "ts"), "\"2026-11-23 17:49:06.123456+00\"");
    CHECK_STR_EQ(val(&ch, "iv"), "\"1 year 2 mons 3 days 04:05:06.789\"");
    CHECK_STR_EQ(unesc(&ch, "m"), "sad \"quoted\"");
    fixture_free(&f);
    pgcdc_decoder_free(&d);
}

static void test_toast_full_keys(void)
{
    struct pgcdc_decoder d;
    struct fixture f;
    struct pgcdc_change ch;

    pgcdc_decoder_init(&d);
    fixture_load(&f, "toast");
    CHECK_INT_EQ(decode_line(&d, &f, 1, &ch), 0);
    CHECK_INT_EQ(col(ch.columns, ch.ncolumns, "big")->value.len, 10002);
    /* Update of another column: the unchanged TOASTed value is absent, not null. */
    CHECK_INT_EQ(decode_line(&d, &f, 4, &ch), 0);
    CHECK_INT_EQ(ch.action, PGCDC_ACT_UPDATE);
    CHECK_INT_EQ(ch.ncolumns, 2);
    CHECK(col(ch.columns, ch.ncolumns, "big") == NULL);
    CHECK_STR_EQ(val(&ch, "n"), "2");
    CHECK_INT_EQ(decode_line(&d, &f, 7, &ch), 0);
    CHECK_INT_EQ(ch.ncolumns, 3);
    CHECK_INT_EQ(col(ch.columns, ch.ncolumns, "big")->value.len, 10002);
    fixture_free(&f);

    fixture_load(&f, "replica_full");
    CHECK_INT_EQ(decode_line(&d, &f, 5, &ch), 0);
    CHECK_INT_EQ(ch.nidentity, 4);
    CHECK_STR_EQ(old(&ch, "price"), "9.99");
    CHECK_STR_EQ(val(&ch, "price"), "10.50");
    CHECK_STR_EQ(old(&ch, "note"), "null");
    CHECK_INT_EQ(decode_line(&d, &f, 8, &ch), 0);
    CHECK_INT_EQ(ch.action, PGCDC_ACT_DELETE);
    CHECK_INT_EQ(ch.nidentity, 4);
    CHECK_STR_EQ(old(&ch, "name"), "\"gadget\"");
    fixture_free(&f);

    fixture_load(&f, "key_change");
    CHECK_INT_EQ(decode_line(&d, &f, 4, &ch), 0);
    CHECK_STR_EQ(old(&ch, "id"), "1");
    CHECK_STR_EQ(val(&ch, "id"), "100");
    CHECK_INT_EQ(decode_line(&d, &f, 13, &ch), 0);
    CHECK_INT_EQ(ch.npk, 2);
    CHECK_STR_EQ(old(&ch, "b"), "\"x\"");
    CHECK_STR_EQ(val(&ch, "b"), "\"y\"");
    fixture_free(&f);

    fixture_load(&f, "keyless");
    CHECK_INT_EQ(decode_line(&d, &f, 1, &ch), 0);
    CHECK_INT_EQ(ch.npk, 0);
    CHECK_INT_EQ(ch.ncolumns, 2);
    fixture_free(&f);
    pgcdc_decoder_free(&d);
}

static void test_names_messages_tz(void)
{
    struct pgcdc_decoder d;
    struct fixture f;
    struct pgcdc_change ch;
    char buf[64];

    pgcdc_decoder_init(&d);
    fixture_load(&f, "names");
    CHECK_INT_EQ(decode_line(&d, &f, 1, &ch), 0);
    CHECK_STR_EQ(S(ch.schema), "\"My Schema\"");
    CHECK_STR_EQ(S(ch.table), "\"Tab\\\"le\"");
    CHECK_INT_EQ(pgcdc_json_unescape(ch.table, buf, sizeof buf), 6);
    CHECK_STR_EQ(buf, "Tab\"le");
    CHECK_STR_EQ(val(&ch, "va lue"), "\"v\"");
    CHECK_STR_EQ(val(&ch, "caf\xc3\xa9"), "2");
    CHECK_STR_EQ(S(ch.pk[0].name), "\"Id\"");
    fixture_free(&f);

    fixture_load(&f, "messages");
    CHECK_INT_EQ(decode_line(&d, &f, 1, &ch), 0);
    CHECK_INT_EQ(ch.action, PGCDC_ACT_MESSAGE);
    /* A non-transactional message: "xid":null,"timestamp":null, outside B/C. */
    CHECK_INT_EQ(decode_line(&d, &f, 4, &ch), 0);
    CHECK_INT_EQ(ch.action, PGCDC_ACT_MESSAGE);
    CHECK_INT_EQ(ch.xid, 0);
    CHECK_INT_EQ(ch.ts_ms, 0);
    fixture_free(&f);

    /* +05:30: the same instant as in UTC. */
    fixture_load(&f, "timezone");
    CHECK_INT_EQ(decode_line(&d, &f, 0, &ch), 0);
    fixture_field(f.line[0], f.len[0], "timestamp", buf, sizeof buf);
    CHECK(strstr(buf, "+05:30") != NULL);
    CHECK_INT_EQ(ch.ts_ms, expect_ts_ms(buf));
    fixture_free(&f);

    /* The decoder's arrays are reused across rows of different widths. */
    fixture_load(&f, "bigtxn");
    for (size_t i = 0; i < f.n; i++)
        CHECK_INT_EQ(pgcdc_decode(&d, f.line[i], f.len[i], &ch, err, sizeof err), 0);
    CHECK_INT_EQ(ch.action, PGCDC_ACT_COMMIT);
    CHECK_INT_EQ(decode_line(&d, &f, 500, &ch), 0);
    CHECK_STR_EQ(val(&ch, "id"), "1499");
    CHECK_STR_EQ(val(&ch, "name"), "\"row 1499\"");
    fixture_free(&f);
    pgcdc_decoder_free(&d);
}

static void test_timestamp_parse(void)
{
    int64_t ms = -1;
    static const struct {
        const char *s;
        int64_t ms;
    } ok[] = {
        {"1970-01-01 00:00:00+00", 0},
        {"1970-01-01 00:00:00.5+00", 500},
        {"1970-01-01 00:00:00.123456+00", 123},
        {"1970-01-01 00:00:00.9999+00", 999}, /* truncated, never rounded up a second */
        {"2026-11-23 17:49:06.1234+00", 1795456146123},
        {"2026-11-23 23:19:06.1234+05:30", 1795456146123},
        {"2026-11-23 09:49:06.1234-08", 1795456146123},
        {"2000-02-29 12:00:00+00", 951825600000},
        {"1969-12-31 23:59:59+00", -1000},
    };
    static const char *const bad[] = {
        "",
        "2026-11-23",
        "2026-11-23 17:49",
        "2026-13-01 00:00:00+00",
        "2026-11-23 17:49:06.+00",
        "x026-11-23 17:49:06+00",
        "2026-11-23 17:49:06+0",
        "2026-11-23 17:49:06Z!",
        NULL,
    };

    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int rc = pgcdc_parse_pg_timestamp(ok[i].s, strlen(ok[i].s), &ms);
        CHECK_INT_EQ(rc, 0);
        CHECK_INT_EQ(ms, ok[i].ms);
        if (ms != ok[i].ms)
            fprintf(stderr, "    for %s\n", ok[i].s);
    }
    for (size_t i = 0; bad[i]; i++) {
        int rc = pgcdc_parse_pg_timestamp(bad[i], strlen(bad[i]), &ms);
        CHECK_INT_EQ(rc, -1);
        if (rc != -1)
            fprintf(stderr, "    accepted \"%s\"\n", bad[i]);
    }
}

static void test_unescape(void)
{
    char buf[16];
    struct pgcdc_span sp;

    sp = (struct pgcdc_span){"\"a\\u00e9\\n\"", 11};
    CHECK_INT_EQ(pgcdc_json_unescape(sp, buf, sizeof buf), 4);
    CHECK_STR_EQ(buf, "a\xc3\xa9\n");
    sp = (struct pgcdc_span){"\"\\ud83d\\ude00\"", 14};
    CHECK_INT_EQ(pgcdc_json_unescape(sp, buf, sizeof buf), 4);
    CHECK_STR_EQ(buf, "\xf0\x9f\x98\x80");
    sp = (struct pgcdc_span){"\"0123456789abcdef\"", 18}; /* 16 bytes + NUL > 16 */
    CHECK_INT_EQ(pgcdc_json_unescape(sp, buf, sizeof buf), -1);
    sp = (struct pgcdc_span){"\"0123456789abcde\"", 17};
    CHECK_INT_EQ(pgcdc_json_unescape(sp, buf, sizeof buf), 15);
    sp = (struct pgcdc_span){"abc", 3};
    CHECK_INT_EQ(pgcdc_json_unescape(sp, buf, sizeof buf), -1);
    sp = (struct pgcdc_span){"\"\\u12\"", 6};
    CHECK_INT_EQ(pgcdc_json_unescape(sp, buf, sizeof buf), -1);

    /* Surrogates: only a high (D800-DBFF) directly followed by a low (DC00-DFFF) is a
     * character; anything else was encoded as 3 bytes UTF-8 cannot hold, or as garbage. */
    static const char *const bad_surrogates[] = {
        "\"\\ud83d\\u0041\"",  /* high + a non-surrogate */
        "\"\\ud83d\\ud83d\"",  /* high + high */
        "\"\\udbff\\ue000\"",  /* high + just past the low range */
        "\"\\ud800\\udbff\"",  /* high + just before it */
        "\"\\ud83dx\\ude00\"", /* not the very next escape */
        "\"\\ud83d\"",         /* high alone, at the end */
        "\"\\ud83d\\n\"",      /* high + another escape */
        "\"\\ude00\"",         /* low alone */
        "\"a\\udfff\\ud83d\"", /* low, then high */
        "\"\\ud83d\\ude0g\"",  /* a low that is not hex */
    };
    for (size_t i = 0; i < sizeof(bad_surrogates) / sizeof(bad_surrogates[0]); i++) {
        sp = (struct pgcdc_span){bad_surrogates[i], strlen(bad_surrogates[i])};
        CHECK_INT_EQ(pgcdc_json_unescape(sp, buf, sizeof buf), -1);
    }
    sp = (struct pgcdc_span){"\"\\ud800\\udc00\\udbff\\udfff\"", 26}; /* the range's ends */
    CHECK_INT_EQ(pgcdc_json_unescape(sp, buf, sizeof buf), 8);
    CHECK_STR_EQ(buf, "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf");
    sp = (struct pgcdc_span){"\"\\ud7ff\\ue000\"", 14}; /* either side of the surrogates */
    CHECK_INT_EQ(pgcdc_json_unescape(sp, buf, sizeof buf), 6);
    CHECK_STR_EQ(buf, "\xed\x9f\xbf\xee\x80\x80");
    sp = (struct pgcdc_span){"\"", 1};
    CHECK_INT_EQ(pgcdc_json_unescape(sp, buf, sizeof buf), -1);
}

static void test_malformed(void)
{
    struct pgcdc_decoder d;
    struct pgcdc_change ch;
    static const char *const bad[] = {
        "",
        "{",
        "[]",
        "{\"action\":\"I\"}", /* a change without schema/table */
        "{\"action\":\"X\",\"xid\":1}",
        "{\"action\":\"B\",\"xid\":1,\"lsn\":\"0/ZZ\"}",
        "{\"action\":\"B\",\"xid\":-1}",
        "{\"action\":\"B\",\"xid\":1,\"timestamp\":\"yesterday\"}",
        "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"name\":\"a\","
        "\"typeoid\":23,\"value\":1}",
        "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"typeoid\":23}]}",
        "{\"action\":\"I\",\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"name\":\"a\","
        "\"typeoid\":\"x\",\"value\":1}]}",
        "{\"action\":\"I\",\"schema\":\"unterminated",
        NULL,
    };

    pgcdc_decoder_init(&d);
    for (size_t i = 0; bad[i]; i++) {
        size_t n = strlen(bad[i]);
        char *m = malloc(n ? n : 1);
        memcpy(m, bad[i], n);
        err[0] = '\0';
        int rc = pgcdc_decode(&d, m, n, &ch, err, sizeof err);
        CHECK_INT_EQ(rc, PGCDC_ERR);
        if (rc != PGCDC_ERR)
            fprintf(stderr, "    accepted %s\n", bad[i]);
        CHECK(err[0] != '\0');
        free(m);
    }

    /* Every prefix of real messages: an error or a change, never a crash or an overread. */
    struct fixture f;
    static const char *const some[] = {"basic", "texts", "messages", "names", NULL};
    int crashes_would_show_here = 0;
    for (size_t k = 0; some[k]; k++) {
        fixture_load(&f, some[k]);
        for (size_t i = 0; i < f.n; i++) {
            size_t step = f.len[i] > 2000 ? 7 : 1;
            for (size_t n = 0; n < f.len[i]; n += step) {
                char *m = malloc(n ? n : 1);
                memcpy(m, f.line[i], n);
                int rc = pgcdc_decode(&d, m, n, &ch, err, sizeof err);
                if (rc != 0 && rc != PGCDC_ERR)
                    crashes_would_show_here++;
                free(m);
            }
        }
        fixture_free(&f);
    }
    CHECK_INT_EQ(crashes_would_show_here, 0);
    pgcdc_decoder_free(&d);
}

int main(void)
{
    test_every_line();
    test_basic();
    test_numbers();
    test_texts();
    test_toast_full_keys();
    test_names_messages_tz();
    test_timestamp_parse();
    test_unescape();
    test_malformed();
    return UNIT_DONE();
}
