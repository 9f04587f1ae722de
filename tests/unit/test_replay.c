/*
 * test_replay.c — the pure parts of `pgcdc replay`: event line -> columns and raw tokens,
 * token -> the text PostgreSQL's input functions read, event + target table -> SQL and
 * parameters; and recorded wal2json output carried through decode -> event -> replay with
 * every digit and byte intact.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc/common.h"
#include "pgcdc/decode.h"
#include "pgcdc/event.h"
#include "pgcdc/replay_event.h"
#include "pgcdc/replay_sql.h"
#include "fixture.h"
#include "unit.h"

static char err[1024];

/* token -> text, as a C string ("(null)" for SQL NULL, "(error)" when rejected). */
static const char *T(const char *tok)
{
    static struct pgcdc_buf b;
    bool is_null;
    pgcdc_buf_reset(&b);
    struct pgcdc_span sp = {tok, strlen(tok)};
    if (pgcdc_replay_token_text(sp, &b, &is_null) < 0)
        return "(error)";
    return is_null ? "(null)" : b.data;
}

static void test_parse(void)
{
    struct pgcdc_replay_parser p;
    struct pgcdc_replay_event ev;
    pgcdc_replay_parser_init(&p);
    const char *line =
        "{\"before\":{\"id\":41},\"after\":{\"id\":42,\"n\":\"1234.50\",\"t\":\"a\\\"b\","
        "\"z\":null,\"ok\":true},\"source\":{\"connector\":\"pgcdc\",\"version\":\"0.1.0\","
        "\"name\":\"pgcdc\",\"db\":\"d\",\"schema\":\"public\",\"table\":\"acc\",\"txId\":7,"
        "\"lsn\":553827248,\"commit_lsn\":553828752,\"ts_ms\":1,\"snapshot\":\"false\"},"
        "\"op\":\"u\",\"ts_ms\":2}";
    CHECK_INT_EQ(pgcdc_replay_parse(&p, line, strlen(line), &ev, err, sizeof(err)), 0);
    CHECK_INT_EQ(ev.op, 'u');
    CHECK_STR_EQ(S(ev.schema), "\"public\"");
    CHECK_STR_EQ(S(ev.table), "\"acc\"");
    CHECK_U64_EQ(ev.lsn, 553827248);
    CHECK_U64_EQ(ev.commit_lsn, 553828752);
    CHECK(!ev.snapshot);
    CHECK(ev.has_before && ev.has_after);
    CHECK_INT_EQ(ev.nbefore, 1);
    CHECK_INT_EQ(ev.nafter, 5);
    CHECK_STR_EQ(S(ev.before[0].value), "41");
    CHECK_STR_EQ(S(ev.after[1].name), "\"n\"");
    CHECK_STR_EQ(S(ev.after[2].value), "\"a\\\"b\"");
    CHECK_STR_EQ(S(ev.after[3].value), "null");
    CHECK_STR_EQ(S(ev.after[4].value), "true");

    const char *snap = "{\"before\":null,\"after\":{\"id\":9007199254740993},\"source\":{"
                       "\"schema\":\"s\",\"table\":\"t\",\"lsn\":5,\"commit_lsn\":5,"
                       "\"snapshot\":\"last\"},\"op\":\"r\",\"ts_ms\":2}";
    CHECK_INT_EQ(pgcdc_replay_parse(&p, snap, strlen(snap), &ev, err, sizeof(err)), 0);
    CHECK_INT_EQ(ev.op, 'r');
    CHECK(ev.snapshot);
    CHECK(!ev.has_before);
    CHECK_STR_EQ(S(ev.after[0].value), "9007199254740993");

    const char *trunc = "{\"before\":null,\"after\":null,\"source\":{\"schema\":\"s\",\"table\":"
                        "\"t\",\"lsn\":5,\"commit_lsn\":6},\"op\":\"t\"}";
    CHECK_INT_EQ(pgcdc_replay_parse(&p, trunc, strlen(trunc), &ev, err, sizeof(err)), 0);
    CHECK_INT_EQ(ev.op, 't');

    /* Broken lines are errors with a reason, never a crash. */
    const char *bad[] = {
        "",
        "{",
        "{\"op\":\"c\"}",
        "{\"op\":\"x\",\"source\":{\"schema\":\"s\",\"table\":\"t\",\"commit_lsn\":1}}",
        "{\"after\":{\"a\":1},\"source\":{\"schema\":\"s\",\"table\":\"t\",\"commit_lsn\":-1},"
        "\"op\":\"c\"}",
        "{\"after\":null,\"source\":{\"schema\":\"s\",\"table\":\"t\",\"commit_lsn\":1},"
        "\"op\":\"c\"}",
        "{\"after\":{\"a\":\"unterminated},\"op\":\"c\"}",
        NULL,
    };
    for (int i = 0; bad[i]; i++) {
        err[0] = '\0';
        CHECK_INT_EQ(pgcdc_replay_parse(&p, bad[i], strlen(bad[i]), &ev, err, sizeof(err)),
                     PGCDC_ERR);
        CHECK(err[0] != '\0');
    }
    pgcdc_replay_parser_free(&p);
}

static void test_token_text(void)
{
    CHECK_STR_EQ(T("9007199254740993"), "9007199254740993");
    CHECK_STR_EQ(T("-9223372036854775808"), "-9223372036854775808");
    CHECK_STR_EQ(T("1.1754944e-38"), "1.1754944e-38");
    CHECK_STR_EQ(T("\"12345678901234567890.000000000000000000001\""),
                 "12345678901234567890.000000000000000000001");
    CHECK_STR_EQ(T("true"), "t");
    CHECK_STR_EQ(T("false"), "f");
    CHECK_STR_EQ(T("null"), "(null)");
    CHECK_STR_EQ(T("\"\""), "");
    CHECK_STR_EQ(T("\"a\\nb\\tc\\\"d\\\\e\\/f\""), "a\nb\tc\"d\\e/f");
    CHECK_STR_EQ(T("\"\\u0001\\u001f\""), "\x01\x1f");
    CHECK_STR_EQ(T("\"caf\\u00e9 \\ud83d\\ude00\""), "caf\xc3\xa9 \xf0\x9f\x98\x80");
    CHECK_STR_EQ(T("\"café 😀\""), "café 😀");
    CHECK_STR_EQ(T("\"\\\\x00ff\""), "\\x00ff");
    CHECK_STR_EQ(T("\"{\\\"a \\\\\\\"b\\\",NULL}\""), "{\"a \\\"b\",NULL}");
    CHECK_STR_EQ(T("nul"), "(error)");
    CHECK_STR_EQ(T("\"\\u12\""), "(error)");
}

/* ---- statements */

static struct pgcdc_replay_column cols_acc[] = {
    {"id", "bigint", "\"pg_catalog\".\"int8\"", true, false},
    {"balance", "numeric(14,2)", "\"pg_catalog\".\"numeric\"", false, false},
    {"note", "text", "\"pg_catalog\".\"text\"", false, false},
    {"big", "text", "\"pg_catalog\".\"text\"", false, false},
    {"len", "integer", "\"pg_catalog\".\"int4\"", false, true},
};
static struct pgcdc_replay_table acc = {"public", "acc", true, cols_acc, 5, 1, false, false};

static struct pgcdc_replay_column cols_log[] = {
    {"k", "integer", "\"pg_catalog\".\"int4\"", false, false},
    {"v", "text", "\"pg_catalog\".\"text\"", false, false},
};
static struct pgcdc_replay_table nopk = {"public", "log", true, cols_log, 2, 0, false, false};
/* The same columns in a partitioned table. */
static struct pgcdc_replay_table nopk_parted = {"public", "plog", true,  cols_log,
                                                2,        0,      false, true};

static struct pgcdc_replay_column cols_pair[] = {
    {"a", "integer", "\"pg_catalog\".\"int4\"", true, false},
    {"b", "text", "\"pg_catalog\".\"text\"", true, false},
};
static struct pgcdc_replay_table pair = {
    "odd \"schema\"", "pair", true, cols_pair, 2, 2, false, false};

static struct pgcdc_replay_parser parser;
static struct pgcdc_replay_stmt st;

static int build(const struct pgcdc_replay_table *t, const char *line)
{
    static struct pgcdc_replay_event ev;
    static char copy[4096];
    snprintf(copy, sizeof(copy), "%s", line);
    if (pgcdc_replay_parse(&parser, copy, strlen(copy), &ev, err, sizeof(err)) < 0) {
        fprintf(stderr, "parse: %s\n", err);
        return -99;
    }
    err[0] = '\0';
    return pgcdc_replay_build(&st, t, &ev, err, sizeof(err));
}

#define SRC "\"source\":{\"schema\":\"public\",\"table\":\"acc\",\"lsn\":10,\"commit_lsn\":20}"

static const char *P(int i)
{
    return i < st.nparams ? (st.params[i] ? st.params[i] : "(null)") : "(none)";
}

static void test_build(void)
{
    /* Insert: an upsert on the key; the generated column is never written. */
    CHECK_INT_EQ(build(&acc,
                       "{\"before\":null,\"after\":{\"id\":9007199254740993,\"balance\":"
                       "\"0.10\",\"note\":null,\"big\":\"x\",\"len\":1}," SRC ",\"op\":\"c\"}"),
                 0);
    CHECK_STR_EQ(st.sql.data,
                 "INSERT INTO \"public\".\"acc\" (\"id\", \"balance\", \"note\", \"big\") "
                 "OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4) ON CONFLICT (\"id\") DO UPDATE "
                 "SET \"balance\" = EXCLUDED.\"balance\", \"note\" = EXCLUDED.\"note\", \"big\" "
                 "= EXCLUDED.\"big\"");
    CHECK_INT_EQ(st.nparams, 4);
    CHECK_STR_EQ(P(0), "9007199254740993");
    CHECK_STR_EQ(P(1), "0.10");
    CHECK_STR_EQ(P(2), "(null)");
    CHECK_STR_EQ(P(3), "x");
    CHECK_INT_EQ(st.param_col[3], 3);

    /* Snapshot rows are upserts too. */
    CHECK_INT_EQ(build(&acc, "{\"after\":{\"id\":1,\"note\":\"\"}," SRC ",\"op\":\"r\"}"), 0);
    CHECK_STR_EQ(st.sql.data, "INSERT INTO \"public\".\"acc\" (\"id\", \"note\") OVERRIDING SYSTEM "
                              "VALUE VALUES ($1, $2) ON CONFLICT (\"id\") DO UPDATE SET \"note\" "
                              "= EXCLUDED.\"note\"");
    CHECK_STR_EQ(P(1), "");

    /* Every column is key: nothing to update on conflict. */
    CHECK_INT_EQ(build(&pair, "{\"after\":{\"a\":1,\"b\":\"q\"}," SRC ",\"op\":\"c\"}"), 0);
    CHECK_STR_EQ(st.sql.data, "INSERT INTO \"odd \"\"schema\"\"\".\"pair\" (\"a\", \"b\") "
                              "OVERRIDING SYSTEM VALUE VALUES ($1, $2) ON CONFLICT (\"a\", \"b\") "
                              "DO NOTHING");

    /* No primary key on the target: a plain insert. */
    CHECK_INT_EQ(build(&nopk, "{\"after\":{\"k\":1,\"v\":\"a\"}," SRC ",\"op\":\"c\"}"), 0);
    CHECK_STR_EQ(st.sql.data, "INSERT INTO \"public\".\"log\" (\"k\", \"v\") OVERRIDING SYSTEM "
                              "VALUE VALUES ($1, $2)");

    /* Update with an unchanged TOASTed column absent: only what is present is set. */
    CHECK_INT_EQ(
        build(&acc, "{\"before\":null,\"after\":{\"id\":7,\"note\":\"n\"}," SRC ",\"op\":\"u\"}"),
        0);
    CHECK_STR_EQ(st.sql.data, "UPDATE \"public\".\"acc\" SET \"note\" = $1 WHERE \"id\" = $2");
    CHECK_STR_EQ(P(0), "n");
    CHECK_STR_EQ(P(1), "7");

    /* The old key in before (same value): the key is not rewritten. */
    CHECK_INT_EQ(build(&acc, "{\"before\":{\"id\":7},\"after\":{\"id\":7,\"balance\":\"1\"}," SRC
                             ",\"op\":\"u\"}"),
                 0);
    CHECK_STR_EQ(st.sql.data, "UPDATE \"public\".\"acc\" SET \"balance\" = $1 WHERE \"id\" = $2");

    /* A key change: found by the old key, the new one written. */
    CHECK_INT_EQ(build(&acc, "{\"before\":{\"id\":7},\"after\":{\"id\":8,\"balance\":\"1\"}," SRC
                             ",\"op\":\"u\"}"),
                 0);
    CHECK_STR_EQ(st.sql.data,
                 "UPDATE \"public\".\"acc\" SET \"id\" = $1, \"balance\" = $2 WHERE \"id\" = $3");
    CHECK_STR_EQ(P(0), "8");
    CHECK_STR_EQ(P(2), "7");

    /* Nothing but the key and a generated column: nothing to do. */
    CHECK_INT_EQ(build(&acc, "{\"after\":{\"id\":7,\"len\":3}," SRC ",\"op\":\"u\"}"), 0);
    CHECK(st.skip);

    /* Delete by the old key. */
    CHECK_INT_EQ(build(&acc, "{\"before\":{\"id\":7},\"after\":null," SRC ",\"op\":\"d\"}"), 0);
    CHECK_STR_EQ(st.sql.data, "DELETE FROM \"public\".\"acc\" WHERE \"id\" = $1");
    CHECK_STR_EQ(P(0), "7");

    /* No primary key: one row matching the whole old row (REPLICA IDENTITY FULL). */
    CHECK_INT_EQ(
        build(&nopk, "{\"before\":{\"k\":1,\"v\":null},\"after\":null," SRC ",\"op\":\"d\"}"), 0);
    CHECK_STR_EQ(st.sql.data,
                 "DELETE FROM \"public\".\"log\" WHERE (tableoid, ctid) = (SELECT "
                 "tableoid, ctid FROM ONLY \"public\".\"log\" WHERE \"k\"::text IS "
                 "NOT DISTINCT FROM $1 AND \"v\"::text IS NOT DISTINCT FROM $2 LIMIT 1)");
    CHECK_STR_EQ(P(1), "(null)");
    CHECK_INT_EQ(build(&nopk,
                       "{\"before\":{\"k\":1,\"v\":\"a\"},\"after\":{\"k\":1,\"v\":\"b\"}," SRC
                       ",\"op\":\"u\"}"),
                 0);
    CHECK_STR_EQ(st.sql.data,
                 "UPDATE \"public\".\"log\" SET \"k\" = $1, \"v\" = $2 WHERE (tableoid, ctid) = "
                 "(SELECT tableoid, ctid FROM ONLY \"public\".\"log\" WHERE \"k\"::text IS NOT "
                 "DISTINCT FROM $3 AND \"v\"::text IS NOT DISTINCT FROM $4 LIMIT 1)");
    /* A partitioned table: the row is looked for in every partition, and told apart from a
     * row at the same ctid in another partition by its tableoid. */
    CHECK_INT_EQ(build(&nopk_parted,
                       "{\"before\":{\"k\":1,\"v\":\"a\"},\"after\":null," SRC ",\"op\":\"d\"}"),
                 0);
    CHECK_STR_EQ(st.sql.data, "DELETE FROM \"public\".\"plog\" WHERE (tableoid, ctid) = (SELECT "
                              "tableoid, ctid FROM \"public\".\"plog\" WHERE \"k\"::text IS NOT "
                              "DISTINCT FROM $1 AND \"v\"::text IS NOT DISTINCT FROM $2 LIMIT 1)");

    /* ... and without the old row there is no way to find it: a clear error. */
    CHECK_INT_EQ(
        build(&nopk, "{\"before\":null,\"after\":{\"k\":1,\"v\":\"b\"}," SRC ",\"op\":\"u\"}"),
        PGCDC_ERR);
    CHECK_CONTAINS(err, "public.log has no primary key");
    CHECK_CONTAINS(err, "REPLICA IDENTITY FULL");

    /* A column the target lacks: named. */
    CHECK_INT_EQ(build(&acc, "{\"after\":{\"id\":1,\"extra\\u00e9\":2}," SRC ",\"op\":\"c\"}"),
                 PGCDC_ERR);
    CHECK_STR_EQ(err, "target table public.acc has no column \"extra\xc3\xa9\"");

    /* An escaped name that does exist is found. */
    CHECK_INT_EQ(build(&acc, "{\"after\":{\"\\u0069d\":1}," SRC ",\"op\":\"c\"}"), 0);

    /* A key value missing entirely. */
    CHECK_INT_EQ(build(&acc, "{\"before\":{\"note\":\"x\"},\"after\":null," SRC ",\"op\":\"d\"}"),
                 PGCDC_ERR);
    CHECK_CONTAINS(err, "primary-key column \"id\"");

    CHECK_INT_EQ(build(&pair, "{\"before\":null,\"after\":null," SRC ",\"op\":\"t\"}"), 0);
    CHECK_STR_EQ(st.sql.data, "TRUNCATE \"odd \"\"schema\"\"\".\"pair\"");
    CHECK_INT_EQ(st.nparams, 0);

    /* One source TRUNCATE of several tables: one statement, each table named once. */
    struct pgcdc_buf b = {0};
    const struct pgcdc_replay_table *tabs[] = {&acc, &pair, &acc, &nopk};
    CHECK_INT_EQ(pgcdc_replay_build_truncate(&b, tabs, 4), 0);
    CHECK_STR_EQ(b.data, "TRUNCATE \"public\".\"acc\", \"odd \"\"schema\"\"\".\"pair\", "
                         "\"public\".\"log\"");
    pgcdc_buf_free(&b);
}

static void test_group(void)
{
    struct pgcdc_buf g = {0};
    /* Inserts: more VALUES rows, the same conflict clause. */
    CHECK_INT_EQ(build(&acc, "{\"after\":{\"id\":1,\"note\":\"a\"}," SRC ",\"op\":\"c\"}"), 0);
    CHECK(st.groupable);
    CHECK_INT_EQ(pgcdc_replay_build_group(&g, &acc, &st, 3), 0);
    CHECK_STR_EQ(g.data,
                 "INSERT INTO \"public\".\"acc\" (\"id\", \"note\") OVERRIDING SYSTEM VALUE "
                 "VALUES ($1, $2), ($3, $4), ($5, $6) ON CONFLICT (\"id\") DO UPDATE SET "
                 "\"note\" = EXCLUDED.\"note\"");
    CHECK_INT_EQ(build(&nopk, "{\"after\":{\"k\":1,\"v\":\"a\"}," SRC ",\"op\":\"c\"}"), 0);
    CHECK_INT_EQ(pgcdc_replay_build_group(&g, &nopk, &st, 2), 0);
    CHECK_STR_EQ(g.data, "INSERT INTO \"public\".\"log\" (\"k\", \"v\") OVERRIDING SYSTEM VALUE "
                         "VALUES ($1, $2), ($3, $4)");

    /* Updates: a join on the key with typed VALUES (types without typmod). */
    CHECK_INT_EQ(
        build(&acc, "{\"after\":{\"id\":7,\"balance\":\"1\",\"note\":\"n\"}," SRC ",\"op\":\"u\"}"),
        0);
    CHECK(st.groupable);
    CHECK_INT_EQ(st.nset, 2);
    CHECK_INT_EQ(pgcdc_replay_build_group(&g, &acc, &st, 2), 0);
    CHECK_STR_EQ(
        g.data,
        "UPDATE \"public\".\"acc\" AS pgcdc_t SET \"balance\" = pgcdc_v.c1, \"note\" = "
        "pgcdc_v.c2 FROM (VALUES ($1::\"pg_catalog\".\"numeric\", $2::\"pg_catalog\".\"text\", "
        "$3::\"pg_catalog\".\"int8\"), ($4::\"pg_catalog\".\"numeric\", "
        "$5::\"pg_catalog\".\"text\", $6::\"pg_catalog\".\"int8\")) AS pgcdc_v (c1, c2, c3) "
        "WHERE pgcdc_t.\"id\" = pgcdc_v.c3");
    /* A key change is applied alone; so is an update of a table with another unique index. */
    CHECK_INT_EQ(build(&acc, "{\"before\":{\"id\":7},\"after\":{\"id\":8}," SRC ",\"op\":\"u\"}"),
                 0);
    CHECK(!st.groupable);
    acc.other_unique = true;
    CHECK_INT_EQ(build(&acc, "{\"after\":{\"id\":7,\"note\":\"n\"}," SRC ",\"op\":\"u\"}"), 0);
    CHECK(!st.groupable);
    acc.other_unique = false;
    CHECK_INT_EQ(build(&nopk,
                       "{\"before\":{\"k\":1,\"v\":\"a\"},\"after\":{\"k\":1,\"v\":\"b\"}," SRC
                       ",\"op\":\"u\"}"),
                 0);
    CHECK(!st.groupable);

    /* Deletes: IN lists, composite keys as row constructors. */
    CHECK_INT_EQ(build(&acc, "{\"before\":{\"id\":7},\"after\":null," SRC ",\"op\":\"d\"}"), 0);
    CHECK(st.groupable);
    CHECK_INT_EQ(pgcdc_replay_build_group(&g, &acc, &st, 3), 0);
    CHECK_STR_EQ(g.data, "DELETE FROM \"public\".\"acc\" WHERE \"id\" IN ($1, $2, $3)");
    CHECK_INT_EQ(
        build(&pair, "{\"before\":{\"a\":1,\"b\":\"x\"},\"after\":null," SRC ",\"op\":\"d\"}"), 0);
    CHECK_INT_EQ(pgcdc_replay_build_group(&g, &pair, &st, 2), 0);
    CHECK_STR_EQ(g.data,
                 "DELETE FROM \"odd \"\"schema\"\"\".\"pair\" WHERE (\"a\", \"b\") IN (($1, "
                 "$2), ($3, $4))");
    CHECK_INT_EQ(
        build(&nopk, "{\"before\":{\"k\":1,\"v\":null},\"after\":null," SRC ",\"op\":\"d\"}"), 0);
    CHECK(!st.groupable);
    CHECK_INT_EQ(build(&pair, "{\"before\":null,\"after\":null," SRC ",\"op\":\"t\"}"), 0);
    CHECK(!st.groupable);
    pgcdc_buf_free(&g);
}

/* ---- recorded wal2json -> decode -> event JSON -> replay: nothing changes on the way. */

/* A target table shaped like the change's columns (first column the key). */
static struct pgcdc_replay_table table_like(const struct pgcdc_change *ch,
                                            struct pgcdc_replay_column *cols, char names[][64])
{
    struct pgcdc_replay_table t = {"public", "x", true, cols, ch->ncolumns, 1, false, false};
    for (size_t i = 0; i < ch->ncolumns; i++) {
        struct pgcdc_span n = ch->columns[i].name;
        snprintf(names[i], 64, "%.*s", (int)(n.len - 2), n.p + 1);
        cols[i] = (struct pgcdc_replay_column){names[i], "text", "text", i == 0, false};
    }
    return t;
}

/* The value replay sends for column `name` of the first change in fixture f of table tbl. */
static void round_trip(const char *fixture, int nth_change, const char *col, const char *want)
{
    struct fixture f;
    struct pgcdc_decoder d;
    struct pgcdc_change ch;
    struct pgcdc_buf ev = {0};
    pgcdc_decoder_init(&d);
    if (!CHECK(fixture_load(&f, fixture) == 0))
        return;
    int seen = 0;
    for (size_t i = 0; i < f.n; i++) {
        if (pgcdc_decode(&d, f.line[i], f.len[i], &ch, err, sizeof(err)) < 0)
            continue;
        if (ch.action != PGCDC_ACT_INSERT && ch.action != PGCDC_ACT_UPDATE)
            continue;
        if (seen++ != nth_change)
            continue;
        struct pgcdc_event_ctx ctx = {"\"pgcdc\"", "\"db\"", 1, 99, 0, "false"};
        pgcdc_buf_reset(&ev);
        CHECK_INT_EQ(pgcdc_event_encode(&ev, &ctx, &ch, pgcdc_event_op(&ch), 0), 0);
        struct pgcdc_replay_column cols[64];
        char names[64][64];
        if (!CHECK(ch.ncolumns < 64))
            break;
        struct pgcdc_replay_table t = table_like(&ch, cols, names);
        struct pgcdc_replay_event rev;
        CHECK_INT_EQ(pgcdc_replay_parse(&parser, ev.data, ev.len, &rev, err, sizeof(err)), 0);
        CHECK_INT_EQ(pgcdc_replay_build(&st, &t, &rev, err, sizeof(err)), 0);
        const char *got = "(absent)";
        for (int p = 0; p < st.nparams; p++)
            if (st.param_col[p] >= 0 && strcmp(cols[st.param_col[p]].name, col) == 0) {
                got = P(p);
                break;
            }
        if (!CHECK(strcmp(got, want) == 0))
            fprintf(stderr, "    got:  %s\n    want: %s\n", got, want),
                fprintf(stderr, "    fixture %s change %d column %s; sql: %s\n", fixture,
                        nth_change, col, st.sql.data);
        break;
    }
    pgcdc_buf_free(&ev);
    pgcdc_decoder_free(&d);
    fixture_free(&f);
}

static void test_round_trip(void)
{
    round_trip("numbers", 0, "i8", "9007199254740993");
    round_trip("numbers", 0, "n", "12345678901234567890123456789012345678");
    round_trip("numbers", 0, "b", "t");
    round_trip("numbers", 1, "i8", "-9223372036854775808");
    round_trip("numbers", 1, "n", "-1234567890.123456789012345678901234567890");
    round_trip("numbers", 1, "f4", "1.1754944e-38");
    round_trip("numbers", 1, "b", "f");
    round_trip("texts", 0, "t", "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x80\xa8 \xc3\xa9\xcc\x81");
    round_trip("texts", 0, "by", "(null)");
    round_trip("texts", 1, "t", "say \"hi\" it's");
    /* An update that left the TOASTed column alone does not mention it. */
    round_trip("toast", 1, "big", "(absent)");
}

/* Bytea gets its \x back from event.c; replay passes it on as bytea's text input. */
static void test_bytea_round_trip(void)
{
    struct fixture f;
    struct pgcdc_decoder d;
    struct pgcdc_change ch;
    pgcdc_decoder_init(&d);
    if (!CHECK(fixture_load(&f, "texts") == 0))
        return;
    int checked = 0;
    for (size_t i = 0; i < f.n; i++) {
        if (pgcdc_decode(&d, f.line[i], f.len[i], &ch, err, sizeof(err)) < 0 ||
            ch.action != PGCDC_ACT_INSERT)
            continue;
        for (size_t c = 0; c < ch.ncolumns; c++) {
            if (ch.columns[c].typeoid != PGCDC_OID_BYTEA || ch.columns[c].value.p[0] != '"')
                continue;
            struct pgcdc_buf ev = {0}, raw = {0};
            struct pgcdc_col one = ch.columns[c];
            bool is_null;
            CHECK_INT_EQ(pgcdc_event_value(&ev, &one), 0);
            struct pgcdc_span sp = {ev.data, ev.len};
            CHECK_INT_EQ(pgcdc_replay_token_text(sp, &raw, &is_null), 0);
            CHECK_PREFIX(raw.data, "\\x");
            CHECK_INT_EQ(strlen(raw.data), one.value.len - 2 + 2);
            checked++;
            pgcdc_buf_free(&ev);
            pgcdc_buf_free(&raw);
        }
    }
    CHECK(checked > 0);
    pgcdc_decoder_free(&d);
    fixture_free(&f);
}

/* Whether two parsed events are the same, span by span. */
static bool same_event(const struct pgcdc_replay_event *a, const struct pgcdc_replay_event *b)
{
#define SPAN_EQ(x, y) ((x).len == (y).len && memcmp((x).p, (y).p, (x).len) == 0)
    if (a->op != b->op || !SPAN_EQ(a->schema, b->schema) || !SPAN_EQ(a->table, b->table) ||
        a->lsn != b->lsn || a->commit_lsn != b->commit_lsn || a->snapshot != b->snapshot ||
        a->snapshot_last != b->snapshot_last || a->has_before != b->has_before ||
        a->has_after != b->has_after || a->nafter != b->nafter)
        return false;
    for (size_t i = 0; i < a->nafter; i++)
        if (!SPAN_EQ(a->after[i].name, b->after[i].name) ||
            !SPAN_EQ(a->after[i].value, b->after[i].value))
            return false;
    return true;
#undef SPAN_EQ
}

/* The snapshot-row fast path reads every row of the fixtures as the full parser does, and
 * leaves anything else to it. */
static void test_parse_snapshot_row(void)
{
    static const char *const fixtures[] = {"numbers", "texts", "toast"};
    struct pgcdc_replay_parser fast;
    struct pgcdc_buf line = {0};
    struct pgcdc_change ch;
    int compared = 0;
    pgcdc_replay_parser_init(&fast);
    for (size_t fi = 0; fi < sizeof(fixtures) / sizeof(*fixtures); fi++) {
        struct fixture f;
        struct pgcdc_decoder d;
        pgcdc_decoder_init(&d);
        if (!CHECK(fixture_load(&f, fixtures[fi]) == 0))
            continue;
        for (size_t i = 0; i < f.n; i++) {
            if (pgcdc_decode(&d, f.line[i], f.len[i], &ch, err, sizeof(err)) < 0 ||
                ch.action != PGCDC_ACT_INSERT)
                continue;
            for (int last = 0; last < 2; last++) {
                struct pgcdc_event_ctx ctx = {"\"pg\\\"cdc\"", "\"d,b\"", 7, 99, 5,
                                              last ? "last" : "true"};
                struct pgcdc_replay_event a, b;
                pgcdc_buf_reset(&line);
                CHECK_INT_EQ(pgcdc_event_encode(&line, &ctx, &ch, 'r', 0), 0);
                CHECK_INT_EQ(pgcdc_replay_parse_snapshot_row(&fast, line.data, line.len, &a), 1);
                CHECK_INT_EQ(pgcdc_replay_parse(&parser, line.data, line.len, &b, err,
                                                sizeof(err)),
                             0);
                CHECK(same_event(&a, &b));
                compared++;
                /* The same row as an insert, or cut short: the full parser's business. */
                pgcdc_buf_reset(&line);
                CHECK_INT_EQ(pgcdc_event_encode(&line, &ctx, &ch, 'c', 0), 0);
                CHECK_INT_EQ(pgcdc_replay_parse_snapshot_row(&fast, line.data, line.len, &a), 0);
                CHECK_INT_EQ(pgcdc_replay_parse_snapshot_row(&fast, line.data, line.len - 1, &a),
                             0);
            }
        }
        pgcdc_decoder_free(&d);
        fixture_free(&f);
    }
    CHECK(compared >= 4);
    /* A string ending in an escaped backslash, an escaped quote before a comma, a brace. */
    const char *odd = "{\"before\":null,\"after\":{\"a\":\"x\\\\\",\"b\":\"y\\\",}\",\"c\":null,"
                      "\"d\":-1.5e3},\"source\":{\"connector\":\"pgcdc\",\"version\":\"9\","
                      "\"name\":\"n\",\"db\":\"d\",\"schema\":\"s\",\"table\":\"t\",\"txId\":1,"
                      "\"lsn\":10,\"commit_lsn\":10,\"ts_ms\":-3,\"snapshot\":\"true\"},"
                      "\"op\":\"r\",\"ts_ms\":4}";
    struct pgcdc_replay_event a, b;
    CHECK_INT_EQ(pgcdc_replay_parse_snapshot_row(&fast, odd, strlen(odd), &a), 1);
    CHECK_INT_EQ(pgcdc_replay_parse(&parser, odd, strlen(odd), &b, err, sizeof(err)), 0);
    CHECK(same_event(&a, &b));
    CHECK_INT_EQ(a.nafter, 4);
    /* A table name that is not a string: left to the full parser, which refuses it. */
    const char *bad = "{\"before\":null,\"after\":{\"a\":1},\"source\":{\"connector\":"
                      "\"pgcdc\",\"version\":\"9\",\"name\":\"n\",\"db\":\"d\",\"schema\":"
                      "\"s\",\"table\":null,\"txId\":1,\"lsn\":10,\"commit_lsn\":10,\"ts_ms\":3,"
                      "\"snapshot\":\"true\"},\"op\":\"r\",\"ts_ms\":4}";
    CHECK_INT_EQ(pgcdc_replay_parse_snapshot_row(&fast, bad, strlen(bad), &a), 0);
    CHECK_INT_EQ(pgcdc_replay_parse(&parser, bad, strlen(bad), &b, err, sizeof(err)), PGCDC_ERR);
    pgcdc_buf_free(&line);
    pgcdc_replay_parser_free(&fast);
}

int main(void)
{
    pgcdc_replay_parser_init(&parser);
    test_parse();
    test_token_text();
    test_build();
    test_group();
    test_round_trip();
    test_bytea_round_trip();
    test_parse_snapshot_row();
    pgcdc_replay_parser_free(&parser);
    pgcdc_replay_stmt_free(&st);
    return UNIT_DONE();
}
