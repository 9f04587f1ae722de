/*
 * test_event.c — recorded wal2json changes -> the event JSON of docs/events.md and the Kafka key,
 * checked as text: exact digits, quoting per type, absent TOAST columns, op letters, the
 * source block, key JSON and key-change detection.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc/common.h"
#include "pgcdc/decode.h"
#include "pgcdc/event.h"
#include "pgcdc/relations.h"
#include "fixture.h"
#include "unit.h"

static char err[512];

/*
 * A strict RFC 8259 validator (structure, strings, escapes, numbers; UTF-8 is taken as
 * is), so that every encoded event is checked to be one well-formed JSON value.
 */
static const char *json_value(const char *p, int depth);

static const char *json_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static const char *json_string(const char *p)
{
    if (*p++ != '"')
        return NULL;
    while (*p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c == '\0' || c < 0x20)
            return NULL;
        if (c == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", p[i]) || p[i] == '\0')
                        return NULL;
                p += 5;
                continue;
            }
            if (!strchr("\"\\/bfnrt", *p) || *p == '\0')
                return NULL;
        }
        p++;
    }
    return p + 1;
}

static const char *json_number(const char *p)
{
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (*p >= '0' && *p <= '9')
            p++;
    else
        return NULL;
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9'))
            return NULL;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return NULL;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return p;
}

static const char *json_value(const char *p, int depth)
{
    if (depth > 64)
        return NULL;
    p = json_ws(p);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        bool obj = *p == '{';
        p = json_ws(p + 1);
        if (*p == close)
            return p + 1;
        for (;;) {
            if (obj) {
                if ((p = json_string(json_ws(p))) == NULL)
                    return NULL;
                p = json_ws(p);
                if (*p++ != ':')
                    return NULL;
            }
            if ((p = json_value(p, depth + 1)) == NULL)
                return NULL;
            p = json_ws(p);
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p != close)
                return NULL;
            return p + 1;
        }
    }
    if (*p == '"')
        return json_string(p);
    if (strncmp(p, "true", 4) == 0)
        return p + 4;
    if (strncmp(p, "false", 5) == 0)
        return p + 5;
    if (strncmp(p, "null", 4) == 0)
        return p + 4;
    return json_number(p);
}

static bool json_valid(const char *s)
{
    const char *e = json_value(s, 0);
    return e != NULL && *json_ws(e) == '\0';
}

/* Decode line i of a fixture into ch (the decoder owns the arrays). */
static int load(struct pgcdc_decoder *d, struct fixture *f, size_t i, struct pgcdc_change *ch)
{
    int rc = pgcdc_decode(d, f->line[i], f->len[i], ch, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "    decode failed: %s\n", err);
    return rc;
}

static struct pgcdc_event_ctx ctx_for(uint32_t xid)
{
    struct pgcdc_event_ctx ctx = {"\"pgcdc\"", "\"neondb\"",  xid,
                                  553828752,   1795303108774, "false"};
    return ctx;
}

/* Encode ch with its natural op into b (reset first); returns b->data. */
static const char *enc(struct pgcdc_buf *b, const struct pgcdc_change *ch, char op)
{
    struct pgcdc_event_ctx ctx = ctx_for(ch->xid);

    pgcdc_buf_reset(b);
    CHECK_INT_EQ(pgcdc_event_encode(b, &ctx, ch, op, 1795303108790), 0);
    CHECK(json_valid(b->data ? b->data : ""));
    return b->data ? b->data : "";
}

static void test_every_change_is_valid_json(void)
{
    static const char *const names[] = {"basic",        "numbers",    "texts",   "toast",
                                        "replica_full", "key_change", "keyless", "partitions",
                                        "names",        "timezone",   "bigtxn",  NULL};
    struct pgcdc_decoder d;
    struct pgcdc_buf b = {0}, k = {0};
    size_t encoded = 0;

    pgcdc_decoder_init(&d);
    for (size_t n = 0; names[n]; n++) {
        struct fixture f;
        fixture_load(&f, names[n]);
        for (size_t i = 0; i < f.n; i++) {
            struct pgcdc_change ch;
            if (load(&d, &f, i, &ch) != 0 || ch.action == PGCDC_ACT_BEGIN ||
                ch.action == PGCDC_ACT_COMMIT || ch.action == PGCDC_ACT_MESSAGE)
                continue;
            struct pgcdc_event_ctx ctx = ctx_for(ch.xid);
            pgcdc_buf_reset(&b);
            CHECK_INT_EQ(pgcdc_event_encode(&b, &ctx, &ch, pgcdc_event_op(&ch), 1), 0);
            if (!json_valid(b.data)) {
                CHECK(!"event is not valid JSON");
                fprintf(stderr, "    %s line %zu: %.400s\n", names[n], i + 1, b.data);
            }
            pgcdc_buf_reset(&k);
            int rc = pgcdc_event_key(&k, &ch, ch.action == PGCDC_ACT_DELETE);
            if (ch.action == PGCDC_ACT_TRUNCATE) {
                encoded++;
                continue;
            }
            CHECK_INT_EQ(rc, ch.npk > 0 ? 1 : 0);
            if (rc == 1 && !json_valid(k.data)) {
                CHECK(!"key is not valid JSON");
                fprintf(stderr, "    %s line %zu: %s\n", names[n], i + 1, k.data);
            }
            encoded++;
        }
        fixture_free(&f);
    }
    CHECK(encoded > 1000);
    pgcdc_buf_free(&b);
    pgcdc_buf_free(&k);
    pgcdc_decoder_free(&d);
}

static void test_values(void)
{
    struct pgcdc_decoder d;
    struct pgcdc_buf b = {0};
    struct fixture f;
    struct pgcdc_change ch;
    const char *e;

    pgcdc_decoder_init(&d);
    fixture_load(&f, "numbers");
    load(&d, &f, 1, &ch);
    e = enc(&b, &ch, 'c');
    CHECK_CONTAINS(e, "\"before\":null,\"after\":{\"id\":1,");
    CHECK_CONTAINS(e, "\"i2\":-32768,");
    CHECK_CONTAINS(e, "\"i4\":2147483647,");
    CHECK_CONTAINS(e, "\"i8\":9007199254740993,"); /* integers bare, every digit */
    CHECK_CONTAINS(e, "\"o\":4294967295,");
    CHECK_CONTAINS(e, "\"n\":\"12345678901234567890123456789012345678\","); /* numeric: string */
    CHECK_CONTAINS(e, "\"f8\":\"1.5\",");
    CHECK_CONTAINS(e, "\"f4\":\"3.14159\",");
    CHECK_CONTAINS(e, "\"b\":true}");
    load(&d, &f, 2, &ch);
    e = enc(&b, &ch, 'c');
    CHECK_CONTAINS(e, "\"i8\":-9223372036854775808,");
    CHECK_CONTAINS(e, "\"n\":\"-1234567890.123456789012345678901234567890\",");
    CHECK_CONTAINS(e, "\"b\":false}");
    load(&d, &f, 3, &ch);
    e = enc(&b, &ch, 'c');
    CHECK_CONTAINS(e, "\"n\":null,\"f8\":null,\"f4\":null,\"b\":null}");
    load(&d, &f, 5, &ch);
    e = enc(&b, &ch, 'c');
    {
        char want[1100] = "\"n\":\"";
        memset(want + 5, '9', 1000);
        strcpy(want + 1005, "\",");
        CHECK_CONTAINS(e, want);
    }
    CHECK_CONTAINS(e, "\"f8\":\"1e+308\"");
    load(&d, &f, 7, &ch);
    e = enc(&b, &ch, 'c');
    CHECK_CONTAINS(e, "\"n\":\"1.10\","); /* trailing zero kept */
    fixture_free(&f);

    fixture_load(&f, "texts");
    load(&d, &f, 1, &ch);
    e = enc(&b, &ch, 'c');
    CHECK_CONTAINS(e, "\"t\":\"caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x80\xa8 \xc3\xa9\xcc\x81\",");
    CHECK_CONTAINS(e, "\"vc\":null,");
    load(&d, &f, 2, &ch);
    CHECK_CONTAINS(enc(&b, &ch, 'c'), "\"t\":\"say \\\"hi\\\" it's\",");
    load(&d, &f, 3, &ch);
    CHECK_CONTAINS(enc(&b, &ch, 'c'),
                   "\"t\":\"back\\\\slash \\\\\\\\ two \\\\u0041 not-an-escape\"");
    load(&d, &f, 4, &ch);
    CHECK_CONTAINS(enc(&b, &ch, 'c'), "\"t\":\"tab\\there\\nnewline\\r\\nend\",");
    load(&d, &f, 5, &ch);
    CHECK_CONTAINS(enc(&b, &ch, 'c'), "\"t\":\"ctl \\u0001\\u0002\\u001f\x7f end\",");
    load(&d, &f, 6, &ch);
    CHECK_CONTAINS(enc(&b, &ch, 'c'), "\"t\":null,");
    load(&d, &f, 7, &ch);
    CHECK_CONTAINS(enc(&b, &ch, 'c'), "\"t\":\"\",");
    /* bytea regains its "\x": the JSON text is "\\x...". */
    load(&d, &f, 11, &ch);
    e = enc(&b, &ch, 'c');
    CHECK_CONTAINS(e, "\"by\":\"\\\\xdeadbeef00ff\",");
    CHECK_CONTAINS(e, "\"c\":\"ab   \",");
    load(&d, &f, 12, &ch);
    CHECK_CONTAINS(enc(&b, &ch, 'c'), "\"by\":\"\\\\x\",");
    load(&d, &f, 13, &ch);
    CHECK_CONTAINS(enc(&b, &ch, 'c'), "\"by\":null,");
    /* json/jsonb: a string holding the document text. */
    load(&d, &f, 16, &ch);
    e = enc(&b, &ch, 'c');
    CHECK_CONTAINS(e, "\"j\":\"{\\\"a\\\": [1, 2.50, \\\"x\\\\\\\"y\\\"], \\\"b\\\": null,  "
                      "\\\"n\\\": 12345678901234567890.5}\",");
    load(&d, &f, 18, &ch);
    CHECK_CONTAINS(enc(&b, &ch, 'c'), "\"j\":\"12345678901234567890\",");
    /* Arrays and date/time in PostgreSQL's text form. */
    load(&d, &f, 23, &ch);
    e = enc(&b, &ch, 'c');
    CHECK_CONTAINS(e, "\"ia\":\"{1,2,NULL}\",");
    CHECK_CONTAINS(e, "\"ta\":\"{\\\"a\\\\\\\"b\\\",NULL,\\\"c,d\\\",\\\"e\\\\\\\\f\\\",\\\"\\\","
                      "\\\"NULL\\\",\\\" sp \\\"}\",");
    load(&d, &f, 28, &ch);
    e = enc(&b, &ch, 'c');
    CHECK_CONTAINS(e, "\"ts\":\"2026-11-23 17:49:06.123456+00\",");
    CHECK_CONTAINS(e, "\"u\":\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\",");
    CHECK_CONTAINS(e, "\"m\":\"sad \\\"quoted\\\"\"}");
    fixture_free(&f);

    /* pgcdc_event_value on its own. */
    struct pgcdc_col c = {{"\"x\"", 3}, PGCDC_OID_INT8, {"-42", 3}};
    pgcdc_buf_reset(&b);
    CHECK_INT_EQ(pgcdc_event_value(&b, &c), 0);
    CHECK_STR_EQ(b.data, "-42");
    c.typeoid = PGCDC_OID_NUMERIC;
    pgcdc_buf_reset(&b);
    pgcdc_event_value(&b, &c);
    CHECK_STR_EQ(b.data, "\"-42\"");
    c.value = (struct pgcdc_span){"null", 4};
    pgcdc_buf_reset(&b);
    pgcdc_event_value(&b, &c);
    CHECK_STR_EQ(b.data, "null");
    pgcdc_buf_free(&b);
    pgcdc_decoder_free(&d);
}

static void test_ops_and_source(void)
{
    struct pgcdc_decoder d;
    struct pgcdc_buf b = {0};
    struct fixture f;
    struct pgcdc_change ch;
    const char *e;
    char want[256];

    pgcdc_decoder_init(&d);
    fixture_load(&f, "basic");
    load(&d, &f, 1, &ch);
    CHECK_INT_EQ(pgcdc_event_op(&ch), 'c');
    e = enc(&b, &ch, 'c');
    snprintf(want, sizeof want,
             ",\"source\":{\"connector\":\"pgcdc\",\"version\":\"%s\",\"name\":\"pgcdc\","
             "\"db\":\"neondb\",\"schema\":\"public\",\"table\":\"basic\",\"txId\":%u,"
             "\"lsn\":%llu,\"commit_lsn\":553828752,\"ts_ms\":1795303108774,"
             "\"snapshot\":\"false\"},\"op\":\"c\",\"ts_ms\":1795303108790}",
             PGCDC_VERSION, ch.xid, (unsigned long long)ch.lsn);
    CHECK_CONTAINS(e, want);
    CHECK_PREFIX(e, "{\"before\":null,\"after\":{\"id\":1,\"name\":\"one\",\"qty\":10}");

    /* Snapshot rows: op r, no before. */
    struct pgcdc_event_ctx ctx = ctx_for(ch.xid);
    ctx.snapshot = "last";
    pgcdc_buf_reset(&b);
    CHECK_INT_EQ(pgcdc_event_encode(&b, &ctx, &ch, 'r', 5), 0);
    CHECK_CONTAINS(b.data, "\"before\":null,\"after\":{\"id\":1,");
    CHECK_CONTAINS(b.data, "\"snapshot\":\"last\"},\"op\":\"r\",\"ts_ms\":5}");

    load(&d, &f, 6, &ch); /* update */
    CHECK_INT_EQ(pgcdc_event_op(&ch), 'u');
    e = enc(&b, &ch, 'u');
    CHECK_PREFIX(e, "{\"before\":{\"id\":2},\"after\":{\"id\":2,\"name\":\"two\",\"qty\":21},");
    CHECK_CONTAINS(e, "\"op\":\"u\"");

    load(&d, &f, 12, &ch); /* delete */
    CHECK_INT_EQ(pgcdc_event_op(&ch), 'd');
    e = enc(&b, &ch, 'd');
    CHECK_PREFIX(e, "{\"before\":{\"id\":3},\"after\":null,");
    CHECK_CONTAINS(e, "\"op\":\"d\"");

    load(&d, &f, 15, &ch); /* truncate */
    CHECK_INT_EQ(pgcdc_event_op(&ch), 't');
    e = enc(&b, &ch, 't');
    CHECK_PREFIX(e, "{\"before\":null,\"after\":null,");
    CHECK_CONTAINS(e, "\"table\":\"basic\"");
    CHECK_CONTAINS(e, "\"op\":\"t\"");
    fixture_free(&f);

    /* Quoted names stay escaped and valid. */
    fixture_load(&f, "names");
    load(&d, &f, 1, &ch);
    e = enc(&b, &ch, 'c');
    CHECK_CONTAINS(e, "\"after\":{\"Id\":1,\"va lue\":\"v\",\"caf\xc3\xa9\":2}");
    CHECK_CONTAINS(e, "\"schema\":\"My Schema\",\"table\":\"Tab\\\"le\"");
    fixture_free(&f);

    /* TOAST: the unchanged column is absent from after, not null. */
    fixture_load(&f, "toast");
    load(&d, &f, 4, &ch);
    e = enc(&b, &ch, 'u');
    CHECK_CONTAINS(e, "\"after\":{\"id\":1,\"n\":2}");
    CHECK_NOT_CONTAINS(e, "\"big\"");
    fixture_free(&f);

    /* REPLICA IDENTITY FULL: before is the whole old row. */
    fixture_load(&f, "replica_full");
    load(&d, &f, 5, &ch);
    e = enc(&b, &ch, 'u');
    CHECK_CONTAINS(e, "{\"before\":{\"id\":1,\"name\":\"widget\",\"price\":\"9.99\",\"note\":null},"
                      "\"after\":{\"id\":1,\"name\":\"widget\",\"price\":\"10.50\",\"note\":null}");
    load(&d, &f, 8, &ch);
    e = enc(&b, &ch, 'd');
    CHECK_CONTAINS(e,
                   "{\"before\":{\"id\":2,\"name\":\"gadget\",\"price\":\"19.90\",\"note\":\"x\"},"
                   "\"after\":null");
    fixture_free(&f);

    /* A key change split in two: delete of the old key, create of the new row. */
    fixture_load(&f, "key_change");
    load(&d, &f, 4, &ch);
    e = enc(&b, &ch, 'd');
    CHECK_PREFIX(e, "{\"before\":{\"id\":1},\"after\":null,");
    CHECK_CONTAINS(e, "\"op\":\"d\"");
    e = enc(&b, &ch, 'c');
    CHECK_PREFIX(e, "{\"before\":null,\"after\":{\"id\":100,\"v\":\"a\"},");
    CHECK_CONTAINS(e, "\"op\":\"c\"");
    fixture_free(&f);

    /* Appending: encode adds to what is in the buffer. */
    pgcdc_buf_reset(&b);
    pgcdc_buf_append_str(&b, "prefix");
    struct pgcdc_event_ctx c2 = ctx_for(1);
    fixture_load(&f, "basic");
    load(&d, &f, 1, &ch);
    CHECK_INT_EQ(pgcdc_event_encode(&b, &c2, &ch, 'c', 1), 0);
    CHECK_PREFIX(b.data, "prefix{\"before\":null");
    fixture_free(&f);
    pgcdc_buf_free(&b);
    pgcdc_decoder_free(&d);
}

static void test_keys(void)
{
    struct pgcdc_decoder d;
    struct pgcdc_buf b = {0};
    struct fixture f;
    struct pgcdc_change ch;

    pgcdc_decoder_init(&d);
    fixture_load(&f, "basic");
    load(&d, &f, 1, &ch);
    CHECK_INT_EQ(pgcdc_event_key(&b, &ch, 0), 1);
    CHECK_STR_EQ(b.data, "{\"id\":1}");
    CHECK_INT_EQ(pgcdc_event_key_changed(&ch), 0);
    load(&d, &f, 6, &ch); /* update, key unchanged */
    CHECK_INT_EQ(pgcdc_event_key_changed(&ch), 0);
    load(&d, &f, 12, &ch); /* delete: key from the old row */
    pgcdc_buf_reset(&b);
    CHECK_INT_EQ(pgcdc_event_key(&b, &ch, 1), 1);
    CHECK_STR_EQ(b.data, "{\"id\":3}");
    fixture_free(&f);

    fixture_load(&f, "key_change");
    load(&d, &f, 4, &ch); /* id 1 -> 100 */
    CHECK_INT_EQ(pgcdc_event_key_changed(&ch), 1);
    pgcdc_buf_reset(&b);
    CHECK_INT_EQ(pgcdc_event_key(&b, &ch, 1), 1);
    CHECK_STR_EQ(b.data, "{\"id\":1}");
    pgcdc_buf_reset(&b);
    CHECK_INT_EQ(pgcdc_event_key(&b, &ch, 0), 1);
    CHECK_STR_EQ(b.data, "{\"id\":100}");
    load(&d, &f, 7, &ch); /* v changes, key stays 100 */
    CHECK_INT_EQ(pgcdc_event_key_changed(&ch), 0);
    load(&d, &f, 10, &ch); /* composite key insert */
    pgcdc_buf_reset(&b);
    CHECK_INT_EQ(pgcdc_event_key(&b, &ch, 0), 1);
    CHECK_STR_EQ(b.data, "{\"a\":1,\"b\":\"x\"}");
    load(&d, &f, 13, &ch); /* (1,'x') -> (1,'y') */
    CHECK_INT_EQ(pgcdc_event_key_changed(&ch), 1);
    pgcdc_buf_reset(&b);
    pgcdc_event_key(&b, &ch, 1);
    CHECK_STR_EQ(b.data, "{\"a\":1,\"b\":\"x\"}");
    pgcdc_buf_reset(&b);
    pgcdc_event_key(&b, &ch, 0);
    CHECK_STR_EQ(b.data, "{\"a\":1,\"b\":\"y\"}");
    load(&d, &f, 16, &ch); /* composite delete */
    pgcdc_buf_reset(&b);
    pgcdc_event_key(&b, &ch, 1);
    CHECK_STR_EQ(b.data, "{\"a\":1,\"b\":\"y\"}");
    fixture_free(&f);

    /* FULL identity: the key comes from the pk columns only. */
    fixture_load(&f, "replica_full");
    load(&d, &f, 5, &ch);
    CHECK_INT_EQ(pgcdc_event_key_changed(&ch), 0);
    pgcdc_buf_reset(&b);
    pgcdc_event_key(&b, &ch, 1);
    CHECK_STR_EQ(b.data, "{\"id\":1}");
    fixture_free(&f);

    /* TOAST update: the key is still there. */
    fixture_load(&f, "toast");
    load(&d, &f, 4, &ch);
    pgcdc_buf_reset(&b);
    CHECK_INT_EQ(pgcdc_event_key(&b, &ch, 0), 1);
    CHECK_STR_EQ(b.data, "{\"id\":1}");
    fixture_free(&f);

    /* No primary key: 0 and nothing written (the key is null). */
    fixture_load(&f, "keyless");
    load(&d, &f, 1, &ch);
    pgcdc_buf_reset(&b);
    CHECK_INT_EQ(pgcdc_event_key(&b, &ch, 0), 0);
    CHECK_INT_EQ(b.len, 0);
    CHECK_INT_EQ(pgcdc_event_key_changed(&ch), 0);
    fixture_free(&f);

    /* Partition move: delete from one leaf, insert into another, keys by pk. */
    fixture_load(&f, "partitions");
    load(&d, &f, 5, &ch);
    CHECK_INT_EQ(ch.action, PGCDC_ACT_DELETE);
    pgcdc_buf_reset(&b);
    pgcdc_event_key(&b, &ch, 1);
    CHECK_STR_EQ(b.data, "{\"id\":1,\"region\":\"eu\"}");
    fixture_free(&f);
    pgcdc_buf_free(&b);
    pgcdc_decoder_free(&d);
}

/*
 * REPLICA IDENTITY USING INDEX on a unique index other than the primary key: wal2json's
 * "pk" still names the primary key, but deletes (and the old row of an update changing the
 * index) carry only the index's columns. Keyed by "pk", every delete's key was {"id":null};
 * with the relation's identity columns in place of "pk" (pgcdc_relations_name) the key is
 * the index's columns on every operation.
 */
static void test_keys_using_index(void)
{
    static const char *msgs[] = {
        "{\"action\":\"I\",\"xid\":7,\"lsn\":\"0/10\",\"schema\":\"public\",\"table\":\"u\","
        "\"columns\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1},{\"name\":\"email\","
        "\"typeoid\":25,\"value\":\"a@x\"},{\"name\":\"v\",\"typeoid\":23,\"value\":5}],"
        "\"pk\":[{\"name\":\"id\",\"typeoid\":23}]}",
        "{\"action\":\"U\",\"xid\":7,\"lsn\":\"0/20\",\"schema\":\"public\",\"table\":\"u\","
        "\"columns\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1},{\"name\":\"email\","
        "\"typeoid\":25,\"value\":\"b@x\"},{\"name\":\"v\",\"typeoid\":23,\"value\":5}],"
        "\"identity\":[{\"name\":\"email\",\"typeoid\":25,\"value\":\"a@x\"}],"
        "\"pk\":[{\"name\":\"id\",\"typeoid\":23}]}",
        "{\"action\":\"D\",\"xid\":7,\"lsn\":\"0/30\",\"schema\":\"public\",\"table\":\"u\","
        "\"identity\":[{\"name\":\"email\",\"typeoid\":25,\"value\":\"b@x\"}],"
        "\"pk\":[{\"name\":\"id\",\"typeoid\":23}]}",
    };
    struct pgcdc_decoder d;
    struct pgcdc_buf b = {0}, v1 = {0}, v2 = {0};
    struct pgcdc_change ch;
    struct pgcdc_relation rel;
    memset(&rel, 0, sizeof(rel));
    pgcdc_buf_append_str(&rel.schema_json, "\"public\"");
    pgcdc_buf_append_str(&rel.table_json, "\"u\"");
    struct pgcdc_col email = {.name = {"\"email\"", 7}};
    pgcdc_decoder_init(&d);

    /* The delete as wal2json sends it: keyed by "pk", the key would be null. */
    CHECK_INT_EQ(pgcdc_decode(&d, msgs[2], strlen(msgs[2]), &ch, err, sizeof err), 0);
    CHECK_INT_EQ(pgcdc_event_key(&b, &ch, 1), 1);
    CHECK_STR_EQ(b.data, "{\"id\":null}");

    /* A table without identity columns of its own keeps wal2json's "pk", bytes unchanged. */
    CHECK_INT_EQ(pgcdc_decode(&d, msgs[0], strlen(msgs[0]), &ch, err, sizeof err), 0);
    struct pgcdc_change named = pgcdc_relations_name(&rel, &ch);
    CHECK(named.pk == ch.pk && named.npk == 1);
    CHECK_STR_EQ(enc(&v1, &ch, 'c'), enc(&v2, &named, 'c'));

    rel.key_cols = &email;
    rel.nkey = 1;
    named = pgcdc_relations_name(&rel, &ch);
    pgcdc_buf_reset(&b);
    CHECK_INT_EQ(pgcdc_event_key(&b, &named, 0), 1);
    CHECK_STR_EQ(b.data, "{\"email\":\"a@x\"}");
    CHECK_STR_EQ(enc(&v1, &ch, 'c'), enc(&v2, &named, 'c')); /* the value is the same */

    /* The index changed: a key change, old and new key by the index. */
    CHECK_INT_EQ(pgcdc_decode(&d, msgs[1], strlen(msgs[1]), &ch, err, sizeof err), 0);
    named = pgcdc_relations_name(&rel, &ch);
    CHECK_INT_EQ(pgcdc_event_key_changed(&named), 1);
    pgcdc_buf_reset(&b);
    pgcdc_event_key(&b, &named, 1);
    CHECK_STR_EQ(b.data, "{\"email\":\"a@x\"}");
    pgcdc_buf_reset(&b);
    pgcdc_event_key(&b, &named, 0);
    CHECK_STR_EQ(b.data, "{\"email\":\"b@x\"}");

    /* The delete: its key, never null (the index columns are NOT NULL and always sent). */
    CHECK_INT_EQ(pgcdc_decode(&d, msgs[2], strlen(msgs[2]), &ch, err, sizeof err), 0);
    named = pgcdc_relations_name(&rel, &ch);
    pgcdc_buf_reset(&b);
    CHECK_INT_EQ(pgcdc_event_key(&b, &named, 1), 1);
    CHECK_STR_EQ(b.data, "{\"email\":\"b@x\"}");

    pgcdc_buf_free(&b);
    pgcdc_buf_free(&v1);
    pgcdc_buf_free(&v2);
    pgcdc_buf_free(&rel.schema_json);
    pgcdc_buf_free(&rel.table_json);
    pgcdc_decoder_free(&d);
}

int main(void)
{
    CHECK(json_valid("{\"a\":[1,-2.5e+3,\"x\\u00e9\",true,false,null,{}]}"));
    CHECK(!json_valid("{\"a\":01}"));
    CHECK(!json_valid("{\"a\":\"\x01\"}"));
    CHECK(!json_valid("{\"a\":1,}"));
    test_every_change_is_valid_json();
    test_values();
    test_ops_and_source();
    test_keys();
    test_keys_using_index();
    return UNIT_DONE();
}
