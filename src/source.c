/*
 * source.c — the connection parameters every source session shares (see source.h).
 */
#include "pgcdc/source.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void pgcdc_source_notices(struct pg_conn *c, enum pgcdc_source_session kind)
{
    static const char *const names[] = {[PGCDC_SOURCE_REPLICATION] = "replication",
                                        [PGCDC_SOURCE_CATALOG] = "catalog",
                                        [PGCDC_SOURCE_SNAPSHOT] = "snapshot",
                                        [PGCDC_SOURCE_CHECK] = "check"};
    if (c)
        PQsetNoticeProcessor(c, session_notice, (void *)names[kind]);
}

int pgcdc_source_connect(struct pg_conn **out, const char *dsn, enum pgcdc_source_session kind,
                         char *err, size_t errlen)
{
    struct pgcdc_source_params p;
    int rc = pgcdc_source_params(&p, dsn, kind, err, errlen);
    if (rc < 0)
        return rc;
    if (!(*out = PQconnectdbParams(p.keys, p.vals, 1))) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    pgcdc_source_notices(*out, kind);
    return PGCDC_OK;
}

void pgcdc_source_server_encoding(struct pg_conn *c, char *out, size_t outlen)
{
    const char *enc = PQparameterStatus(c, "server_encoding");
    if (enc) {
        snprintf(out, outlen, "%s", enc);
        return;
    }
    /* Servers report it at start-up; ask only if this one did not. */
    PGresult *res = PQexec(c, "SHOW server_encoding");
    snprintf(out, outlen, "%s",
             PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 ? PQgetvalue(res, 0, 0)
                                                                           : "");
    PQclear(res);
}
