/*
 * errors.h — one error model: which failures a retry can fix.
 *
 * Every module that talks to PostgreSQL or to the disk asks here what a failure means
 * and returns the answer as it is, so that the same SQLSTATE or errno is retried, or
 * not, wherever it happens. The classifier decides the class; the caller still words the
 * message (and adds the fix, where there is one).
 *
 * The answers are the return codes of common.h:
 *   PGCDC_ERR_RETRY   transient: back off, reconnect, resume from the durable position
 *   PGCDC_ERR_BUSY    held by another process (the slot): retry for a bounded time
 *   PGCDC_ERR_CONFIG  a path the configuration names is unusable: exit 2
 *   PGCDC_ERR         anything else: stop, exit 1
 *
 * A server's refusal is never PGCDC_ERR_CONFIG, even when the fix is in the
 * configuration (a wrong password, an unknown database): exit 2 is for what pgcdc can
 * tell from its settings alone, and a wrong password is exit 1 (README, Commands).
 *
 * The tables are in errors.c, one row per SQLSTATE class or code and per errno, each
 * with its reason; tests/unit/test_errors.c pins every row.
 */
#ifndef PGCDC_ERRORS_H
#define PGCDC_ERRORS_H

#include <stdbool.h>
#include <stddef.h>

struct pg_conn;   /* libpq's PGconn */
struct pg_result; /* libpq's PGresult */

/*
 * Which session failed. The same SQLSTATE can mean different things on the two sides:
 * the source is where pgcdc reads (replication, catalog, snapshot, check), replay's
 * target is where it writes, resuming from the position recorded in the target.
 */
enum pgcdc_errctx {
    PGCDC_ERRCTX_SOURCE = 0,
    PGCDC_ERRCTX_TARGET = 1,
};

/* What a failed system call was doing (errno classes). */
enum pgcdc_errfile {
    PGCDC_ERRFILE_OPEN = 0, /* opening or creating a path the configuration names */
    PGCDC_ERRFILE_IO = 1,   /* reading, writing or syncing files pgcdc already set up */
};

/*
 * Classify a failed libpq command. `res` is the failed result, or NULL when libpq gave
 * none; `c` is the connection (NULL counts as gone). Neither is freed. In order:
 *   - a SQLSTATE decides by the table (a full code first, then its class), for `ctx`;
 *   - no result, or the connection is gone: PGCDC_ERR_RETRY;
 *   - a result without a SQLSTATE on a live connection (libpq's own complaint, or a
 *     result of the wrong kind): PGCDC_ERR, since a retry repeats the same steps.
 */
int pgcdc_errors_pg(const struct pg_conn *c, const struct pg_result *res, enum pgcdc_errctx ctx);

/*
 * The same decision from its parts: `state` is the SQLSTATE (NULL or "" when there is
 * none), `conn_lost` whether the connection is gone or libpq gave no result.
 */
int pgcdc_errors_sqlstate(const char *state, bool conn_lost, enum pgcdc_errctx ctx);

/*
 * Classify a connection that PQconnectdb* could not open (c NULL: libpq ran out of
 * memory, PGCDC_ERR). libpq keeps no SQLSTATE for a refused connection, so this reads
 * its message: authentication, unknown role or database, a missing privilege and an
 * unusable DSN are PGCDC_ERR; anything else (refused, timed out, starting up, too many
 * clients) is PGCDC_ERR_RETRY.
 */
int pgcdc_errors_connect(const struct pg_conn *c);
int pgcdc_errors_connect_msg(const char *msg);

/* Classify a failed system call by its errno; read errno before anything else runs. */
int pgcdc_errors_errno(int e, enum pgcdc_errfile what);

/* One row of the SQLSTATE table: a class ("08") or a full code ("57P01"). */
struct pgcdc_errors_state_rule {
    const char *code;
    int source; /* the answer on a source session */
    int target; /* the answer on replay's target */
};

/* One row of the errno table. */
struct pgcdc_errors_errno_rule {
    int e;
    int open; /* PGCDC_ERRFILE_OPEN */
    int io;   /* PGCDC_ERRFILE_IO */
};

/* One row of the connect table: a fragment of libpq's message. */
struct pgcdc_errors_connect_rule {
    const char *fragment;
    int rc;
};

/* The tables themselves, for tests and tools; static storage, never freed. */
const struct pgcdc_errors_state_rule *pgcdc_errors_state_rules(size_t *n);
const struct pgcdc_errors_errno_rule *pgcdc_errors_errno_rules(size_t *n);
const struct pgcdc_errors_connect_rule *pgcdc_errors_connect_rules(size_t *n);

#endif
