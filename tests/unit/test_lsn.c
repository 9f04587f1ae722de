/* test_lsn.c — LSN text form: what pg_lsn_in accepts and pg_lsn_out prints. */
#include <stdint.h>
#include <string.h>

#include "pgcdc/lsn.h"
#include "unit.h"

static void test_parse_ok(void)
{
    uint64_t v = 1;

    CHECK_INT_EQ(pgcdc_lsn_parse_str("0/0", &v), 0);
    CHECK_U64_EQ(v, 0);
    CHECK_INT_EQ(pgcdc_lsn_parse_str("0/16B2F40", &v), 0);
    CHECK_U64_EQ(v, 0x16B2F40);
    CHECK_INT_EQ(pgcdc_lsn_parse_str("16/B374D848", &v), 0);
    CHECK_U64_EQ(v, 0x16B374D848ULL);
    CHECK_INT_EQ(pgcdc_lsn_parse_str("16/b374d848", &v), 0);
    CHECK_U64_EQ(v, 0x16B374D848ULL);
    CHECK_INT_EQ(pgcdc_lsn_parse_str("FFFFFFFF/FFFFFFFF", &v), 0);
    CHECK_U64_EQ(v, UINT64_MAX);
    CHECK_INT_EQ(pgcdc_lsn_parse_str("00000001/00000002", &v), 0);
    CHECK_U64_EQ(v, 0x100000002ULL);
    CHECK_INT_EQ(pgcdc_lsn_parse_str("aB/Cd", &v), 0);
    CHECK_U64_EQ(v, 0xAB000000CDULL);
}

static void test_parse_span(void)
{
    const char *json = "\"lsn\":\"0/153F040\",\"next\"";
    const char *p = strchr(json + 6, '0');
    uint64_t v = 0;

    /* Only the span counts: the closing quote after it is not read. */
    CHECK_INT_EQ(pgcdc_lsn_parse(p, 9, &v), 0);
    CHECK_U64_EQ(v, 0x153F040);
    CHECK_INT_EQ(pgcdc_lsn_parse(p, 10, &v), -1);
    CHECK_INT_EQ(pgcdc_lsn_parse(p, 2, &v), -1);
    CHECK_INT_EQ(pgcdc_lsn_parse(p, 0, &v), -1);
}

static void test_parse_bad(void)
{
    static const char *const bad[] = {
        "",      "/",           "0/",          "/0",    "0",    "00",    "0//0", "0/0/0", "G/0",
        "0/G",   " 0/0",        "0/0 ",        "0 /0",  "0/ 0", "+1/0",  "-1/0", "1/-0",  "0x1/0",
        "1/0x0", "123456789/0", "0/123456789", "0/0\n", "１/0", "0.5/0", "0/0;", NULL,
    };
    uint64_t v = 42;

    for (size_t i = 0; bad[i]; i++) {
        int rc = pgcdc_lsn_parse_str(bad[i], &v);
        CHECK_INT_EQ(rc, -1);
        if (rc != -1)
            fprintf(stderr, "    accepted \"%s\"\n", bad[i]);
    }
    CHECK_U64_EQ(v, 42); /* untouched on failure */
    CHECK_INT_EQ(pgcdc_lsn_parse_str(NULL, &v), -1);
    /* An embedded NUL ends a string but not a span. */
    CHECK_INT_EQ(pgcdc_lsn_parse("0/1\0"
                                 "2",
                                 5, &v),
                 -1);
}

static void test_format(void)
{
    char buf[PGCDC_LSN_BUFLEN];

    CHECK_STR_EQ(pgcdc_lsn_format(0, buf), "0/0");
    CHECK_STR_EQ(pgcdc_lsn_format(0x16B2F40, buf), "0/16B2F40");
    CHECK_STR_EQ(pgcdc_lsn_format(0x16B374D848ULL, buf), "16/B374D848");
    CHECK_STR_EQ(pgcdc_lsn_format(UINT64_MAX, buf), "FFFFFFFF/FFFFFFFF");
    CHECK_STR_EQ(pgcdc_lsn_format(0x100000000ULL, buf), "1/0");
    CHECK(pgcdc_lsn_format(1, buf) == buf);
}

static void test_roundtrip(void)
{
    static const uint64_t vals[] = {
        0, 1, 0xF, 0x10, 0xFFFFFFFF, 0x100000000ULL, 0xDEADBEEFCAFEBABEULL, UINT64_MAX - 1};
    char buf[PGCDC_LSN_BUFLEN];

    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        uint64_t v = 0;
        CHECK_INT_EQ(pgcdc_lsn_parse_str(pgcdc_lsn_format(vals[i], buf), &v), 0);
        CHECK_U64_EQ(v, vals[i]);
    }
}

int main(void)
{
    test_parse_ok();
    test_parse_span();
    test_parse_bad();
    test_format();
    test_roundtrip();
    return UNIT_DONE();
}
