/*
 * source.c — the connection parameters every source session shares (see source.h).
 */
#include "pgcdc/source.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgcdc/catalog.h"
#include "pgcdc/common.h"
#include "pgcdc/log.h"

/* The settings that fix how values print; see README "Events" and docs/events.md. */
#define PINNED_OPTIONS                                                                             \
    "-c DateStyle=ISO -c IntervalStyle=postgres -c TimeZone=UTC -c extra_float_digits=3"

/* The options the DSN gives, or else PGOPTIONS (libpq's own default, which an explicit
 * options parameter would otherwise silence). NULL when neither does. The caller frees
 * *parsed with PQconninfoFree. */
static const char *user_options(const char *dsn, PQconninfoOption **parsed)
{
    char *perr = NULL;
    *parsed = PQconninfoParse(dsn, &perr);
    PQfreemem(perr); /* a bare database name is no conninfo: it has no options */
    for (PQconninfoOption *o = *parsed; o && o->keyword; o++)
        if (strcmp(o->keyword, "options") == 0 && o->val && *o->val)
            return o->val;
    const char *env = getenv("PGOPTIONS");
    return env && *env ? env : NULL;
}

int pgcdc_source_params(struct pgcdc_source_params *p, const char *dsn,
                        enum pgcdc_source_session kind, char *err, size_t errlen)
{
    PQconninfoOption *parsed = NULL;
    const char *mine = user_options(dsn, &parsed);
    int n = snprintf(
        p->options, sizeof(p->options), "%s%s%s%s", mine ? mine : "", mine ? " " : "",
        PINNED_OPTIONS,
        kind == PGCDC_SOURCE_CATALOG ? " -c statement_timeout=" PGCDC_SOURCE_CATALOG_TIMEOUT : "");
    PQconninfoFree(parsed);
    if (n < 0 || (size_t)n >= sizeof(p->options)) {
        snprintf(err, errlen,
                 "the options in source.dsn are too long (%d bytes) to add pgcdc's settings: "
                 "shorten them",
                 n);
        return PGCDC_ERR_CONFIG;
    }
    /*
     * Later entries override earlier ones, the expanded DSN included: keepalives and the
     * connect timeout are defaults the DSN may change; the options (merged above), the
     * encoding and replication mode come after it and always apply.
     */
    int k = 0;
#define PARAM(key, val) (p->keys[k] = (key), p->vals[k++] = (val))
    PARAM("keepalives", "1");
    PARAM("keepalives_idle", "30");
    PARAM("keepalives_interval", "10");
    PARAM("keepalives_count", "3");
    PARAM("connect_timeout", kind == PGCDC_SOURCE_CHECK ? "10" : "30");
    PARAM("dbname", dsn);
    PARAM("options", p->options);
    PARAM("client_encoding", "UTF8");
    if (kind == PGCDC_SOURCE_REPLICATION)
        PARAM("replication", "database");
    PARAM("fallback_application_name", kind == PGCDC_SOURCE_CATALOG    ? "pgcdc-catalog"
                                       : kind == PGCDC_SOURCE_SNAPSHOT ? "pgcdc-snapshot"
                                       : kind == PGCDC_SOURCE_CHECK    ? "pgcdc-check"
                                                                       : "pgcdc");
    PARAM(NULL, NULL);
#undef PARAM
    return PGCDC_OK;
}

/*
 * libpq prints what arrives on an idle connection (the server's FATAL when it shuts down)
 * and the server's notices to stderr by default: keep stderr to log lines, which pass
 * through the redaction.
 */
static void session_notice(void *arg, const char *msg)
{
    char line[512];
    snprintf(line, sizeof(line), "%s", msg);
    line[strcspn(line, "\n")] = '\0';
    pgcdc_log(PGCDC_LOG_DEBUG, "server notice", "session", (const char *)arg, "detail", line,
              NULL);
}

void pgcdc_session_notices(struct pg_conn *c, const char *session)
{
    if (c)
        PQsetNoticeProcessor(c, session_notice, (void *)session);
}

PGconn *pgcdc_session_connect(const char *dsn, const char *appname)
{
    const char *keys[] = {"dbname", "fallback_application_name", NULL};
    const char *vals[] = {dsn, appname, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    pgcdc_session_notices(c, appname);
    return c;
}

void pgcdc_source_notices(struct pg_conn *c, enum pgcdc_source_session kind)
{
    static const char *const names[] = {[PGCDC_SOURCE_REPLICATION] = "replication",
                                        [PGCDC_SOURCE_CATALOG] = "catalog",
                                        [PGCDC_SOURCE_SNAPSHOT] = "snapshot",
                                        [PGCDC_SOURCE_CHECK] = "check"};
    pgcdc_session_notices(c, names[kind]);
}

/* connect_timeout as libpq applies it to each attempt: whatever the DSN made it, at least
 * 2 s; 0 for none. */
static int attempt_timeout_ms(PGconn *c)
{
    int s = 0;
    PQconninfoOption *opts = PQconninfo(c);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "connect_timeout") == 0 && o->val)
            s = atoi(o->val);
    PQconninfoFree(opts);
    /* libpq's own floor of 2 s; a day caps it so that the milliseconds fit an int. */
    return s <= 0 ? 0 : (s < 2 ? 2 : s > 86400 ? 86400 : s) * 1000;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int pgcdc_source_connect_until(struct pg_conn **out, const char *dsn,
                               enum pgcdc_source_session kind, bool (*stop)(void *), void *arg,
                               char *err, size_t errlen)
{
    struct pgcdc_source_params p;
    int rc = pgcdc_source_params(&p, dsn, kind, err, errlen);
    if (rc < 0)
        return rc;
    /*
     * Not PQconnectdbParams: a server shutting down right after the handshake sends its
     * FATAL behind ReadyForQuery, and libpq hands it to the notice processor while still
     * connecting, that is to its default one, which prints it raw on stderr. Started by
     * hand, the session has its processor before the first byte arrives.
     */
    PGconn *c = PQconnectStartParams(p.keys, p.vals, 1);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    *out = c;
    pgcdc_source_notices(c, kind);
    int limit = attempt_timeout_ms(c);
    int64_t deadline = now_ms() + limit;
    ConnStatusType last = PQstatus(c);
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (PQstatus(c) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED &&
           !(stop && stop(arg))) {
        /* Each address libpq tries starts with a TCP connect: its own connect_timeout. */
        if (PQstatus(c) == CONNECTION_STARTED && last != CONNECTION_STARTED)
            deadline = now_ms() + limit;
        last = PQstatus(c);
        if (limit && now_ms() >= deadline) {
            snprintf(err, errlen,
                     "cannot connect to the source: timeout expired (connect_timeout, %d s): "
                     "check the host, port and network, or raise connect_timeout in source.dsn",
                     limit / 1000);
            PQfinish(c);
            *out = NULL;
            return PGCDC_ERR_RETRY;
        }
        if (PQsocket(c) < 0)
            break;
        struct pollfd pfd = {.fd = PQsocket(c),
                             .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        int64_t left = limit ? deadline - now_ms() : 1000;
        int n = poll(&pfd, 1, (int)(stop && left > 100 ? 100 : left < 0 ? 0 : left));
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0)
            st = PQconnectPoll(c);
    }
    return PGCDC_OK;
}

int pgcdc_source_connect(struct pg_conn **out, const char *dsn, enum pgcdc_source_session kind,
                         char *err, size_t errlen)
{
    return pgcdc_source_connect_until(out, dsn, kind, NULL, NULL, err, errlen);
}

void pgcdc_source_server_encoding(struct pg_conn *c, char *out, size_t outlen)
{
    const char *enc = PQparameterStatus(c, "server_encoding");
    if (enc) {
        snprintf(out, outlen, "%s", enc);
        return;
    }
    /* Servers report it at start-up; ask only if this one did not. */
    char err[256];
    if (pgcdc_catalog_show(c, "server_encoding", out, outlen, err, sizeof(err)) < 0)
        *out = '\0';
}
