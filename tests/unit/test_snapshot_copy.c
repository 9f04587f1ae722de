/* test_snapshot_copy.c — COPY text rows -> the JSON tokens wal2json sends for the values. */
#include <string.h>

#include "pgcdc/snapshot_copy.h"
#include "unit.h"

/* Token of column i, as a C string (tokens are at most a few dozen bytes here). */
static const char *tok(const struct pgcdc_col *cols, int i)
{
    static char buf[8][256];
    snprintf(buf[i], sizeof(buf[i]), "%.*s", (int)cols[i].value.len, cols[i].value.p);
    return buf[i];
}

static void test_types(void)
{
    static const uint32_t oids[] = {PGCDC_OID_INT8,  PGCDC_OID_NUMERIC, PGCDC_OID_FLOAT8,
                                    PGCDC_OID_BOOL,  PGCDC_OID_BYTEA,   25,
                                    PGCDC_OID_INT4,  1184};
    struct pgcdc_snapcopy sc;
    struct pgcdc_col cols[8] = {0};
    char err[128];
    CHECK_INT_EQ(pgcdc_snapcopy_init(&sc, 8, oids, false), 0);
    const char row[] = "9007199254740993\t-12.50\tNaN\tt\t\\\\x00ff\ta\\tb\\\\c\"d\\nE\x01\t\\N\t"
                       "2024-02-29 12:34:56.789+00\n";
    CHECK_INT_EQ(pgcdc_snapcopy_row(&sc, row, strlen(row), cols, err, sizeof(err)), 0);
    CHECK_STR_EQ(tok(cols, 0), "9007199254740993");
    CHECK_STR_EQ(tok(cols, 1), "-12.50");
    CHECK_STR_EQ(tok(cols, 2), "null"); /* wal2json before 2.6 */
    CHECK_STR_EQ(tok(cols, 3), "true");
    CHECK_STR_EQ(tok(cols, 4), "\"00ff\"");
    CHECK_STR_EQ(tok(cols, 5), "\"a\\tb\\\\c\\\"d\\nE\\u0001\"");
    CHECK_STR_EQ(tok(cols, 6), "null");
    CHECK_STR_EQ(tok(cols, 7), "\"2024-02-29 12:34:56.789+00\"");
    pgcdc_snapcopy_free(&sc);
}

static void test_same_as_json_str(void)
{
    /* Every byte 1..255 through COPY's escaping must give pgcdc_buf_append_json_str's bytes. */
    static const uint32_t oids[] = {25};
    char raw[256], copy[600];
    size_t n = 0, o = 0;
    for (int c = 1; c < 256; c++)
        raw[n++] = (char)c;
    for (size_t i = 0; i < n; i++) {
        switch (raw[i]) {
        case '\b': copy[o++] = '\\'; copy[o++] = 'b'; break;
        case '\f': copy[o++] = '\\'; copy[o++] = 'f'; break;
        case '\n': copy[o++] = '\\'; copy[o++] = 'n'; break;
        case '\r': copy[o++] = '\\'; copy[o++] = 'r'; break;
        case '\t': copy[o++] = '\\'; copy[o++] = 't'; break;
        case '\v': copy[o++] = '\\'; copy[o++] = 'v'; break;
        case '\\': copy[o++] = '\\'; copy[o++] = '\\'; break;
        default: copy[o++] = raw[i];
        }
    }
    struct pgcdc_snapcopy sc;
    struct pgcdc_col cols[1] = {0};
    struct pgcdc_buf want = {0};
    char err[128];
    CHECK_INT_EQ(pgcdc_snapcopy_init(&sc, 1, oids, false), 0);
    CHECK_INT_EQ(pgcdc_snapcopy_row(&sc, copy, o, cols, err, sizeof(err)), 0);
    CHECK_INT_EQ(pgcdc_buf_append_json_str(&want, raw, n), 0);
    CHECK(cols[0].value.len == want.len && memcmp(cols[0].value.p, want.data, want.len) == 0);
    pgcdc_buf_free(&want);
    pgcdc_snapcopy_free(&sc);
}

static void test_numeric_strings_and_bad_rows(void)
{
    static const uint32_t oids[] = {PGCDC_OID_FLOAT8, PGCDC_OID_INT4};
    struct pgcdc_snapcopy sc;
    struct pgcdc_col cols[2] = {0};
    char err[128];
    CHECK_INT_EQ(pgcdc_snapcopy_init(&sc, 2, oids, true), 0);
    CHECK_INT_EQ(pgcdc_snapcopy_row(&sc, "-Infinity\t7\n", 12, cols, err, sizeof(err)), 0);
    CHECK_STR_EQ(tok(cols, 0), "\"-Infinity\"");
    CHECK_STR_EQ(tok(cols, 1), "\"7\"");
    CHECK_INT_EQ(pgcdc_snapcopy_row(&sc, "1\n", 2, cols, err, sizeof(err)), PGCDC_ERR);
    CHECK_INT_EQ(pgcdc_snapcopy_row(&sc, "1\t2\t3\n", 6, cols, err, sizeof(err)), PGCDC_ERR);
    pgcdc_snapcopy_free(&sc);
}

int main(void)
{
    test_types();
    test_same_as_json_str();
    test_numeric_strings_and_bad_rows();
    return UNIT_DONE();
}
