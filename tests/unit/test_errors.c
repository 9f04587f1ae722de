/*
 * test_errors.c — the one error model: every row of the SQLSTATE, errno and connect tables
 * as the README states them, the context exceptions, and what falls through to fatal.
 * Changing a row in src/errors.c without changing it here (and in the README) fails.
 */
#include <errno.h>
#include <libpq-fe.h>
#include <stddef.h>

#include "pgcdc/common.h"
#include "pgcdc/errors.h"
#include "unit.h"

#define RETRY PGCDC_ERR_RETRY
#define BUSY PGCDC_ERR_BUSY
#define CONFIG PGCDC_ERR_CONFIG
#define FATAL PGCDC_ERR

static const struct pgcdc_errors_state_rule want_states[] = {
    {"08", RETRY, RETRY},    {"25006", FATAL, FATAL}, {"25P03", RETRY, RETRY},
    {"28", FATAL, FATAL},    {"3D000", FATAL, FATAL}, {"40001", RETRY, RETRY},
    {"40P01", RETRY, RETRY}, {"42", FATAL, FATAL},    {"53", RETRY, RETRY},
    {"55006", BUSY, FATAL},  {"55P03", RETRY, RETRY}, {"57014", RETRY, RETRY},
    {"57P01", RETRY, RETRY}, {"57P02", RETRY, RETRY}, {"57P03", RETRY, RETRY},
    {"57P05", RETRY, RETRY}, {"58000", RETRY, RETRY}, {"58030", RETRY, RETRY},
    {"58P01", FATAL, FATAL},
};

static const struct pgcdc_errors_errno_rule want_errnos[] = {
    {ENOSPC, RETRY, RETRY},       {EDQUOT, RETRY, RETRY},       {EIO, RETRY, RETRY},
    {EINTR, RETRY, RETRY},        {EAGAIN, RETRY, RETRY},       {ETIMEDOUT, RETRY, RETRY},
    {ECONNRESET, RETRY, RETRY},   {ECONNREFUSED, RETRY, RETRY}, {ECONNABORTED, RETRY, RETRY},
    {EPIPE, RETRY, RETRY},        {ENETDOWN, RETRY, RETRY},     {ENETUNREACH, RETRY, RETRY},
    {EHOSTUNREACH, RETRY, RETRY}, {EACCES, CONFIG, FATAL},      {EPERM, CONFIG, FATAL},
    {EROFS, CONFIG, FATAL},       {ENOENT, CONFIG, FATAL},      {ENOTDIR, CONFIG, FATAL},
    {EISDIR, CONFIG, FATAL},      {ELOOP, CONFIG, FATAL},       {ENAMETOOLONG, CONFIG, FATAL},
};

static const struct pgcdc_errors_connect_rule want_connects[] = {
    {"password authentication failed", FATAL},
    {"no password supplied", FATAL},
    {"does not exist", FATAL},
    {"no pg_hba.conf entry", FATAL},
    {"replication role", FATAL},
    {"permission denied", FATAL},
    {"invalid connection option", FATAL},
    {"invalid URI", FATAL},
    {"missing \"=\"", FATAL},
    {"SSL is not enabled", FATAL},
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* One answer, with the input named when it is wrong. */
static void expect_rc(int got, int want, const char *what, const char *input)
{
    if (!unit_check(got == want, __FILE__, __LINE__, what))
        fprintf(stderr, "    %s: got %d, want %d\n", input, got, want);
}

static int src(const char *state)
{
    return pgcdc_errors_sqlstate(state, false, PGCDC_ERRCTX_SOURCE);
}

static int tgt(const char *state)
{
    return pgcdc_errors_sqlstate(state, false, PGCDC_ERRCTX_TARGET);
}

/* The table is exactly the one the README states, row for row. */
static void test_state_table_pinned(void)
{
    size_t n = 0;
    const struct pgcdc_errors_state_rule *t = pgcdc_errors_state_rules(&n);
    CHECK_INT_EQ(n, NELEM(want_states));
    for (size_t i = 0; i < n && i < NELEM(want_states); i++) {
        CHECK_STR_EQ(t[i].code, want_states[i].code);
        CHECK_INT_EQ(t[i].source, want_states[i].source);
        CHECK_INT_EQ(t[i].target, want_states[i].target);
    }
}

/* Every row answers through the classifier: its own code, and a code of its class. */
static void test_state_rows(void)
{
    for (size_t i = 0; i < NELEM(want_states); i++) {
        const struct pgcdc_errors_state_rule *w = &want_states[i];
        char code[6];
        if (strlen(w->code) == 2)
            snprintf(code, sizeof(code), "%sZZZ", w->code); /* any code of the class */
        else
            snprintf(code, sizeof(code), "%s", w->code);
        expect_rc(src(code), w->source, "source", code);
        expect_rc(tgt(code), w->target, "target", code);
        /* Losing the connection too changes nothing: the server said why. */
        CHECK_INT_EQ(pgcdc_errors_sqlstate(code, true, PGCDC_ERRCTX_SOURCE), w->source);
        CHECK_INT_EQ(pgcdc_errors_sqlstate(code, true, PGCDC_ERRCTX_TARGET), w->target);
    }
}

/* The codes the README names, class rows read through real codes. */
static void test_named_codes(void)
{
    /* connection */
    CHECK_INT_EQ(src("08006"), RETRY);
    CHECK_INT_EQ(src("08P01"), RETRY);
    CHECK_INT_EQ(tgt("08003"), RETRY);
    /* authorization, configuration */
    CHECK_INT_EQ(src("28P01"), FATAL);
    CHECK_INT_EQ(src("28000"), FATAL);
    CHECK_INT_EQ(tgt("28P01"), FATAL);
    CHECK_INT_EQ(src("42501"), FATAL);
    CHECK_INT_EQ(src("42P01"), FATAL);
    CHECK_INT_EQ(src("42601"), FATAL);
    CHECK_INT_EQ(tgt("42703"), FATAL);
    CHECK_INT_EQ(src("3D000"), FATAL);
    /* resources */
    CHECK_INT_EQ(src("53100"), RETRY);
    CHECK_INT_EQ(src("53200"), RETRY);
    CHECK_INT_EQ(src("53300"), RETRY);
    CHECK_INT_EQ(src("53400"), RETRY);
    CHECK_INT_EQ(tgt("53100"), RETRY);
}

/* The rest of a class with exceptions falls to fatal, and so does every other class. */
static void test_fall_through_is_fatal(void)
{
    const char *fatal[] = {"40000", "40002", "40003", "57000", "57P04", "58P02", "55000",
                           "25001", "XX000", "XX001", "23505", "23503", "22P02", "0A000",
                           "P0001", "3F000", "54000", "F0000", "HV000", "72000"};
    for (size_t i = 0; i < NELEM(fatal); i++) {
        expect_rc(src(fatal[i]), FATAL, "source", fatal[i]);
        expect_rc(tgt(fatal[i]), FATAL, "target", fatal[i]);
    }
}

/* Where the source and the target differ, and where they deliberately do not. */
static void test_context_exceptions(void)
{
    CHECK_INT_EQ(src("55006"), BUSY);  /* the slot is active in another process */
    CHECK_INT_EQ(tgt("55006"), FATAL); /* replay's own session: a retry repeats it */
    CHECK_INT_EQ(src("40001"), RETRY);
    CHECK_INT_EQ(tgt("40001"), RETRY);
    CHECK_INT_EQ(src("40P01"), RETRY);
    CHECK_INT_EQ(tgt("40P01"), RETRY);
    CHECK_INT_EQ(tgt("40002"), FATAL); /* replay used to retry all of class 40 */
    CHECK_INT_EQ(tgt("57P04"), FATAL); /* and all of 57P */
    CHECK_INT_EQ(tgt("57014"), RETRY);
    CHECK_INT_EQ(src("25006"), FATAL);
    CHECK_INT_EQ(tgt("25006"), FATAL);
    /* Nothing answers busy on the target: replay knows only retry and fatal. */
    for (size_t i = 0; i < NELEM(want_states); i++)
        CHECK(want_states[i].target != BUSY);
}

/* No SQLSTATE: the connection decides. */
static void test_no_sqlstate(void)
{
    CHECK_INT_EQ(pgcdc_errors_sqlstate(NULL, true, PGCDC_ERRCTX_SOURCE), RETRY);
    CHECK_INT_EQ(pgcdc_errors_sqlstate(NULL, true, PGCDC_ERRCTX_TARGET), RETRY);
    CHECK_INT_EQ(pgcdc_errors_sqlstate(NULL, false, PGCDC_ERRCTX_SOURCE), FATAL);
    CHECK_INT_EQ(pgcdc_errors_sqlstate(NULL, false, PGCDC_ERRCTX_TARGET), FATAL);
    CHECK_INT_EQ(pgcdc_errors_sqlstate("", true, PGCDC_ERRCTX_SOURCE), RETRY);
    CHECK_INT_EQ(pgcdc_errors_sqlstate("", false, PGCDC_ERRCTX_SOURCE), FATAL);
    /* Not a SQLSTATE at all counts as none: a class alone, too short, too long, lower case. */
    const char *bad[] = {"08", "0800", "080000", "08a00", "57p01", "55006 "};
    for (size_t i = 0; i < NELEM(bad); i++) {
        CHECK_INT_EQ(pgcdc_errors_sqlstate(bad[i], false, PGCDC_ERRCTX_SOURCE), FATAL);
        CHECK_INT_EQ(pgcdc_errors_sqlstate(bad[i], true, PGCDC_ERRCTX_SOURCE), RETRY);
    }
}

/* pgcdc_errors_pg on what libpq hands out without a server. */
static void test_pg(void)
{
    /* No connection, no result. */
    CHECK_INT_EQ(pgcdc_errors_pg(NULL, NULL, PGCDC_ERRCTX_SOURCE), RETRY);
    CHECK_INT_EQ(pgcdc_errors_pg(NULL, NULL, PGCDC_ERRCTX_TARGET), RETRY);
    /* A connection that never came up: CONNECTION_BAD. */
    PGconn *c = PQconnectdb("host=/nonexistent-pgcdc-test port=1 connect_timeout=1");
    CHECK(c != NULL && PQstatus(c) == CONNECTION_BAD);
    CHECK_INT_EQ(pgcdc_errors_pg(c, NULL, PGCDC_ERRCTX_SOURCE), RETRY);
    PGresult *res = PQmakeEmptyPGresult(c, PGRES_FATAL_ERROR);
    CHECK(res != NULL);
    CHECK_INT_EQ(pgcdc_errors_pg(c, res, PGCDC_ERRCTX_SOURCE), RETRY);
    CHECK_INT_EQ(pgcdc_errors_pg(NULL, res, PGCDC_ERRCTX_TARGET), RETRY);
    PQclear(res);
    /* The refused connection itself: the server is not there, retry. */
    CHECK_INT_EQ(pgcdc_errors_connect(c), RETRY);
    PQfinish(c);
    /* A DSN libpq refuses before connecting: no retry fixes it. */
    c = PQconnectdb("pgcdc_no_such_option=1");
    CHECK(c != NULL && PQstatus(c) == CONNECTION_BAD);
    CHECK_INT_EQ(pgcdc_errors_connect(c), FATAL);
    PQfinish(c);
    CHECK_INT_EQ(pgcdc_errors_connect(NULL), FATAL);
}

static void test_connect_table_pinned(void)
{
    size_t n = 0;
    const struct pgcdc_errors_connect_rule *t = pgcdc_errors_connect_rules(&n);
    CHECK_INT_EQ(n, NELEM(want_connects));
    for (size_t i = 0; i < n && i < NELEM(want_connects); i++) {
        CHECK_STR_EQ(t[i].fragment, want_connects[i].fragment);
        CHECK_INT_EQ(t[i].rc, want_connects[i].rc);
    }
}

/* libpq's messages, as a user sees them. */
static void test_connect_messages(void)
{
    for (size_t i = 0; i < NELEM(want_connects); i++) {
        char m[256];
        snprintf(m, sizeof(m),
                 "connection to server at \"h\" (10.0.0.1), port 5432 failed: "
                 "FATAL:  %s for user \"app\"\n",
                 want_connects[i].fragment);
        CHECK_INT_EQ(pgcdc_errors_connect_msg(m), want_connects[i].rc);
    }
    CHECK_INT_EQ(pgcdc_errors_connect_msg("connection to server at \"h\" (10.0.0.1), port 5432 "
                                          "failed: FATAL:  database \"nope\" does not exist\n"),
                 FATAL);
    CHECK_INT_EQ(pgcdc_errors_connect_msg("FATAL:  must be superuser or replication role to "
                                          "start walsender\n"),
                 FATAL);
    const char *retry[] = {
        "connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n\tIs the "
        "server running on that host and accepting TCP/IP connections?\n",
        "connection to server on socket \"/tmp/.s.PGSQL.5432\" failed: No such file or "
        "directory\n",
        "connection to server at \"h\", port 5432 failed: FATAL:  the database system is "
        "starting up\n",
        "connection to server at \"h\", port 5432 failed: FATAL:  the database system is "
        "shutting down\n",
        "connection to server at \"h\", port 5432 failed: FATAL:  sorry, too many clients "
        "already\n",
        "connection to server at \"h\", port 5432 failed: timeout expired\n",
        "could not translate host name \"h\" to address: Temporary failure in name resolution\n",
        "",
    };
    for (size_t i = 0; i < NELEM(retry); i++)
        expect_rc(pgcdc_errors_connect_msg(retry[i]), RETRY, "connect", retry[i]);
    CHECK_INT_EQ(pgcdc_errors_connect_msg(NULL), FATAL);
}

static void test_errno_table_pinned(void)
{
    size_t n = 0;
    const struct pgcdc_errors_errno_rule *t = pgcdc_errors_errno_rules(&n);
    CHECK_INT_EQ(n, NELEM(want_errnos));
    for (size_t i = 0; i < n && i < NELEM(want_errnos); i++) {
        CHECK_INT_EQ(t[i].e, want_errnos[i].e);
        CHECK_INT_EQ(t[i].open, want_errnos[i].open);
        CHECK_INT_EQ(t[i].io, want_errnos[i].io);
    }
}

static void test_errno(void)
{
    for (size_t i = 0; i < NELEM(want_errnos); i++) {
        const struct pgcdc_errors_errno_rule *w = &want_errnos[i];
        expect_rc(pgcdc_errors_errno(w->e, PGCDC_ERRFILE_OPEN), w->open, "open", strerror(w->e));
        expect_rc(pgcdc_errors_errno(w->e, PGCDC_ERRFILE_IO), w->io, "io", strerror(w->e));
    }
    /* What sink_file.c did: ENOSPC, EDQUOT, EIO retried, everything else fatal. */
    CHECK_INT_EQ(pgcdc_errors_errno(ENOSPC, PGCDC_ERRFILE_IO), RETRY);
    CHECK_INT_EQ(pgcdc_errors_errno(EDQUOT, PGCDC_ERRFILE_IO), RETRY);
    CHECK_INT_EQ(pgcdc_errors_errno(EIO, PGCDC_ERRFILE_IO), RETRY);
    CHECK_INT_EQ(pgcdc_errors_errno(EWOULDBLOCK, PGCDC_ERRFILE_IO), RETRY);
    CHECK_INT_EQ(pgcdc_errors_errno(EACCES, PGCDC_ERRFILE_IO), FATAL);
    CHECK_INT_EQ(pgcdc_errors_errno(EACCES, PGCDC_ERRFILE_OPEN), CONFIG);
    const int fatal[] = {0, ENOMEM, EBADF, EMFILE, ENFILE, EINVAL, EFBIG, EEXIST, EXDEV};
    for (size_t i = 0; i < NELEM(fatal); i++) {
        CHECK_INT_EQ(pgcdc_errors_errno(fatal[i], PGCDC_ERRFILE_OPEN), FATAL);
        CHECK_INT_EQ(pgcdc_errors_errno(fatal[i], PGCDC_ERRFILE_IO), FATAL);
    }
}

int main(void)
{
    test_state_table_pinned();
    test_state_rows();
    test_named_codes();
    test_fall_through_is_fatal();
    test_context_exceptions();
    test_no_sqlstate();
    test_pg();
    test_connect_table_pinned();
    test_connect_messages();
    test_errno_table_pinned();
    test_errno();
    return UNIT_DONE();
}
