/*
 * source.h — what every session pgcdc opens on the source shares, built in one place:
 * replication, catalog lookups, the snapshot, and `check`/`slot`.
 *
 * Each session gets TCP keepalives and a connect timeout (a dead peer is noticed in about
 * a minute, not the kernel's two hours), client_encoding UTF8, and the settings that fix
 * how values print, so events never depend on the server's or the database's defaults:
 *   DateStyle=ISO  IntervalStyle=postgres  TimeZone=UTC  extra_float_digits=3
 * They travel in libpq's `options` (a walsender applies them too, and wal2json prints its
 * values with the walsender's settings), after any options the DSN or PGOPTIONS already
 * has, so the user's others are kept and ours win. The catalog session, whose lookups run
 * inside the replication loop, also gets a statement_timeout.
 */
#ifndef PGCDC_SOURCE_H
#define PGCDC_SOURCE_H

#include <stdbool.h>
#include <stddef.h>

struct pg_conn;

enum pgcdc_source_session {
    PGCDC_SOURCE_REPLICATION, /* replication=database: the stream, slot commands, check */
    PGCDC_SOURCE_CATALOG,     /* type and partition lookups during the stream */
    PGCDC_SOURCE_SNAPSHOT,    /* the initial snapshot's reads */
    PGCDC_SOURCE_CHECK,       /* `check` and `slot status|drop`: a short connect timeout */
};

/* How long a catalog lookup may take before it counts as a lost connection: well under
 * wal_sender_timeout (60 s by default), as the loop sends no status while it waits. */
#define PGCDC_SOURCE_CATALOG_TIMEOUT "10s"

#define PGCDC_SOURCE_MAXPARAMS 16

/* keys/vals for PQconnectdbParams(keys, vals, 1); NULL-terminated. */
struct pgcdc_source_params {
    const char *keys[PGCDC_SOURCE_MAXPARAMS];
    const char *vals[PGCDC_SOURCE_MAXPARAMS];
    char options[2048]; /* the merged `options` value vals points at */
};

/*
 * Fill p for a session of the given kind on dsn (borrowed: p points at it, so dsn must
 * outlive p's use). Returns 0, or PGCDC_ERR_CONFIG when the DSN's options are too long
 * to merge (err says so).
 */
int pgcdc_source_params(struct pgcdc_source_params *p, const char *dsn,
                        enum pgcdc_source_session kind, char *err, size_t errlen);

/*
 * PQconnectdbParams with the parameters above, its notices routed (pgcdc_source_notices)
 * from the start of the handshake. Returns 0 with *out set (the caller owns it, PQfinish,
 * and checks PQstatus: it may have failed to connect), or a negative code with err set
 * and *out NULL when no connection could even be attempted or connect_timeout expired
 * (PGCDC_ERR_RETRY).
 */
int pgcdc_source_connect(struct pg_conn **out, const char *dsn, enum pgcdc_source_session kind,
                         char *err, size_t errlen);

/*
 * pgcdc_source_connect that asks stop(arg) every 100 ms while the handshake waits on the
 * server and, once it says so, returns 0 with the session as far as it got (the caller
 * checks its own stop flag, then PQstatus).
 */
int pgcdc_source_connect_until(struct pg_conn **out, const char *dsn,
                               enum pgcdc_source_session kind, bool (*stop)(void *), void *arg,
                               char *err, size_t errlen);

/*
 * The connected server's encoding name (server_encoding, as PostgreSQL spells it, e.g.
 * "UTF8", "LATIN1", "SQL_ASCII"), copied into out; "" when the server does not say.
 */
void pgcdc_source_server_encoding(struct pg_conn *c, char *out, size_t outlen);

/*
 * Route what the server says on c outside a query (notices, the FATAL of a shutdown on an
 * idle connection) to the log at debug level, through the redaction, instead of libpq's
 * default of printing it to stderr. pgcdc_source_connect does this for its connections.
 */
void pgcdc_source_notices(struct pg_conn *c, enum pgcdc_source_session kind);

/* The same for any session, the target's too; session (static) names it in the log. */
void pgcdc_session_notices(struct pg_conn *c, const char *session);

/*
 * A plain session on dsn (a connection string, a URI or a database name), for the target or
 * a command's own short lookups: named appname (static) unless the DSN names it, its notices
 * to the log. As PQconnectdb: the caller checks PQstatus and PQfinishes.
 */
struct pg_conn *pgcdc_session_connect(const char *dsn, const char *appname);

#endif
