/* test_encoding.c — wal2json messages in a non-UTF-8 server encoding become UTF-8, and
 * what is not valid is found, located and decided on. */
#include <string.h>

#include "pgcdc/config.h"
#include "pgcdc/decode.h"
#include "pgcdc/encoding.h"
#include "pgcdc/metrics.h"
#include "unit.h"

#define MSG(v)                                                                                     \
    "{\"action\":\"I\",\"xid\":7,\"lsn\":\"0/16B2F40\",\"schema\":\"public\",\"table\":\"t\","     \
    "\"columns\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1},{\"name\":\"note\",\"typeoid\":25," \
    "\"value\":\"" v "\"}]}"

static char err[512];

/* Convert msg, decode it, return the change's note value (NUL-terminated copy). */
static const char *note_of(struct pgcdc_encoding *e, const char *msg, struct pgcdc_change *ch)
{
    static struct pgcdc_decoder d;
    static char out[64];
    const char *p = msg;
    size_t n = strlen(msg);
    if (pgcdc_encoding_to_utf8(e, &p, &n, err, sizeof err) < 0 ||
        pgcdc_decode(&d, p, n, ch, err, sizeof err) < 0)
        return "(failed)";
    snprintf(out, sizeof out, "%.*s", (int)ch->columns[1].value.len, ch->columns[1].value.p);
    return out;
}

static void test_iconv(void)
{
    struct pgcdc_encoding e = {0};
    struct pgcdc_change ch;
    CHECK_INT_EQ(pgcdc_encoding_open(&e, "LATIN1", err, sizeof err), 0);
    CHECK_INT_EQ(e.kind, PGCDC_ENC_ICONV);
    CHECK_STR_EQ(note_of(&e, MSG("caf\xe9 \xdf"), &ch), "\"caf\xc3\xa9 \xc3\x9f\"");
    CHECK_INT_EQ(e.nbad, 0);
    const char *ascii = MSG("plain");
    const char *p = ascii;
    size_t n = strlen(ascii);
    CHECK_INT_EQ(pgcdc_encoding_to_utf8(&e, &p, &n, err, sizeof err), 0);
    CHECK(p == ascii); /* all ASCII: used as it is */
    CHECK_INT_EQ(pgcdc_encoding_open(&e, "WIN1252", err, sizeof err), 0);
    CHECK_STR_EQ(note_of(&e, MSG("\x80"), &ch), "\"\xe2\x82\xac\"");
    /* 0x81 is undefined in WIN1252: U+FFFD, counted, located. */
    CHECK_STR_EQ(note_of(&e, MSG("a\x81"), &ch), "\"a\xef\xbf\xbd\"");
    CHECK_INT_EQ(e.nbad, 1);
    CHECK_INT_EQ(pgcdc_encoding_check_change(&e, &ch, "public", "t", PGCDC_INVALID_UTF8_ERROR, err,
                                             sizeof err),
                 PGCDC_ERR);
    CHECK(strstr(err, "table public.t column note at LSN 0/16B2F40") != NULL);
    CHECK(strstr(err, "server_encoding WIN1252") != NULL);
    pgcdc_encoding_close(&e);
    CHECK_INT_EQ(pgcdc_encoding_open(&e, "MULE_INTERNAL", err, sizeof err), PGCDC_ERR);
    CHECK(strstr(err, "MULE_INTERNAL") != NULL);
    pgcdc_encoding_close(&e);
}

static void test_sql_ascii(void)
{
    struct pgcdc_encoding e = {0};
    struct pgcdc_change ch;
    CHECK_INT_EQ(pgcdc_encoding_open(&e, "SQL_ASCII", err, sizeof err), 0);
    const char *good = MSG("caf\xc3\xa9");
    const char *p = good;
    size_t n = strlen(good);
    CHECK_INT_EQ(pgcdc_encoding_to_utf8(&e, &p, &n, err, sizeof err), 0);
    CHECK(p == good && e.nbad == 0); /* valid UTF-8: no copy */
    CHECK_STR_EQ(note_of(&e, MSG("caf\xe9\xe9 \xc3"), &ch),
                 "\"caf\xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\"");
    CHECK_INT_EQ(e.nbad, 3);
    uint64_t before = atomic_load(&pgcdc_metrics.invalid_utf8_replaced);
    CHECK_INT_EQ(pgcdc_encoding_check_change(&e, &ch, "public", "t", PGCDC_INVALID_UTF8_REPLACE,
                                             err, sizeof err),
                 0);
    CHECK_INT_EQ(atomic_load(&pgcdc_metrics.invalid_utf8_replaced) - before, 3);
    pgcdc_encoding_close(&e);
}

static void test_utf8(void)
{
    CHECK_INT_EQ(pgcdc_utf8_valid_prefix("ab\xc3\xa9", 4), 4);
    CHECK_INT_EQ(pgcdc_utf8_valid_prefix("ab\xc0\xaf", 4), 2);       /* overlong '/' */
    CHECK_INT_EQ(pgcdc_utf8_valid_prefix("\xed\xa0\x80", 3), 0);     /* a surrogate */
    CHECK_INT_EQ(pgcdc_utf8_valid_prefix("\xf4\x90\x80\x80", 4), 0); /* past U+10FFFF */
    CHECK_INT_EQ(pgcdc_utf8_valid_prefix("\xe2\x82", 2), 0);         /* cut short */
}

int main(void)
{
    test_iconv();
    test_sql_ascii();
    test_utf8();
    return UNIT_DONE();
}
