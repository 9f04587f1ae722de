/*
 * errors.c — one error model: SQLSTATE, libpq connect failures and errno to retry / busy /
 * config / fatal, from tables kept here with the reason for every row.
 */
#include "pgcdc/errors.h"

#include <errno.h>
#include <libpq-fe.h>
#include <string.h>

#include "pgcdc/common.h"

#define RETRY PGCDC_ERR_RETRY
#define BUSY PGCDC_ERR_BUSY
#define CONFIG PGCDC_ERR_CONFIG
#define FATAL PGCDC_ERR

/*
 * SQLSTATE -> answer, on the source and on replay's target. A full code wins over its
 * class; a code in neither is fatal. Retrying is safe on both sides because nothing is
 * confirmed before it is durable: the source resumes from the slot's confirmed position,
 * the target from the position replay records in the same transaction as the rows.
 */
static const struct pgcdc_errors_state_rule state_rules[] = {
    /* connection_exception: the session broke; a new one resumes. */
    {"08", RETRY, RETRY},
    /* read_only_sql_transaction: a hot standby, or default_transaction_read_only. It stays
     * so until a person promotes the server or changes the setting, so retrying would spin;
     * the fix is to point at the primary (target_session_attrs=read-write). */
    {"25006", FATAL, FATAL},
    /* idle_in_transaction_session_timeout: the server ended an idle session (FATAL); the
     * next session starts a fresh transaction. */
    {"25P03", RETRY, RETRY},
    /* invalid_authorization_specification: wrong password, unknown role, pg_hba.conf. */
    {"28", FATAL, FATAL},
    /* invalid_catalog_name: no such database. */
    {"3D000", FATAL, FATAL},
    /*
     * serialization_failure and deadlock_detected, the two rollbacks a retry is meant for.
     * On the target, replay re-applies the whole source transaction from its recorded
     * position, so a rolled-back one is applied exactly once. On the source pgcdc writes
     * nothing: 40001 there is a recovery conflict on a standby source ("canceling statement
     * due to conflict with recovery"), 40P01 a snapshot reader, holding ACCESS SHARE, picked
     * as a deadlock victim against concurrent DDL; a new session reads again from the
     * confirmed position. The rest of class 40 is fatal on both sides: 40002 is a deferred
     * constraint failing at COMMIT, which fails the same way every time.
     */
    {"40001", RETRY, RETRY},
    {"40P01", RETRY, RETRY},
    /* syntax_error_or_access_rule_violation: a missing privilege or object; the fix is the
     * user's (GRANT, a schema on the target), not time's. */
    {"42", FATAL, FATAL},
    /* insufficient_resources: disk full, out of memory, too many connections, all slots in
     * use. Others free them; every retry logs the server's message, with its hint. */
    {"53", RETRY, RETRY},
    /*
     * object_in_use. On the source it is the slot, active in another process: busy, retried
     * for source.slot_busy_timeout_ms. On the target replay holds nothing another process
     * could want; 55006 there comes from its own session (TRUNCATE of a table it is
     * using), which a retry repeats.
     */
    {"55006", BUSY, FATAL},
    /* lock_not_available: lock_timeout ran out behind another session's lock; it moves on. */
    {"55P03", RETRY, RETRY},
    /*
     * query_canceled. pgcdc cancels its own queries only when stopping (the snapshot, on
     * SIGTERM), and the run loop turns a retryable failure into a clean stop (exit 0) when
     * a stop was requested, where a fatal one would exit 1. Anyone else's cancel
     * (pg_cancel_backend, a statement_timeout) is survived by the next attempt, as
     * pg_terminate_backend (57P01) is. Replay sets statement_timeout = 0 on its session.
     */
    {"57014", RETRY, RETRY},
    /* admin_shutdown, crash_shutdown, cannot_connect_now: the server restarts. */
    {"57P01", RETRY, RETRY},
    {"57P02", RETRY, RETRY},
    {"57P03", RETRY, RETRY},
    /* idle_session_timeout (PostgreSQL 14): the server ended an idle session. The rest of
     * class 57 is fatal: 57000 operator_intervention, 57P04 database_dropped. */
    {"57P05", RETRY, RETRY},
    /* system_error, io_error: the server's operating system failed; it may recover. */
    {"58000", RETRY, RETRY},
    {"58030", RETRY, RETRY},
    /* undefined_file: a library is missing, in practice wal2json: install it. */
    {"58P01", FATAL, FATAL},
};

/*
 * errno -> answer, opening a configured path and doing I/O on pgcdc's own files. A full
 * disk or a failing one is retried like a lost connection: nothing past the checkpoint
 * is confirmed, and the open segment is cut back to the checkpoint before writing again.
 * A path that cannot be used at start-up is a configuration error (exit 2); the same
 * errno later means the directory changed under a running pgcdc (exit 1).
 */
static const struct pgcdc_errors_errno_rule errno_rules[] = {
    {ENOSPC, RETRY, RETRY},
    {EDQUOT, RETRY, RETRY},
    {EIO, RETRY, RETRY},
    /* Interrupted or would block: try again (EWOULDBLOCK is EAGAIN on Linux). */
    {EINTR, RETRY, RETRY},
    {EAGAIN, RETRY, RETRY},
    /* The network: a peer or a route that went away comes back. */
    {ETIMEDOUT, RETRY, RETRY},
    {ECONNRESET, RETRY, RETRY},
    {ECONNREFUSED, RETRY, RETRY},
    {ECONNABORTED, RETRY, RETRY},
    {EPIPE, RETRY, RETRY},
    {ENETDOWN, RETRY, RETRY},
    {ENETUNREACH, RETRY, RETRY},
    {EHOSTUNREACH, RETRY, RETRY},
    /* Permissions and the shape of the path: the user's to fix. */
    {EACCES, CONFIG, FATAL},
    {EPERM, CONFIG, FATAL},
    {EROFS, CONFIG, FATAL},
    {ENOENT, CONFIG, FATAL},
    {ENOTDIR, CONFIG, FATAL},
    {EISDIR, CONFIG, FATAL},
    {ELOOP, CONFIG, FATAL},
    {ENAMETOOLONG, CONFIG, FATAL},
};

/*
 * A refused connection carries no SQLSTATE in libpq, only its message, so these are
 * fragments of it (the server's in English, libpq's own); anything else is retried. The
 * server's equivalent SQLSTATE is beside each.
 */
static const struct pgcdc_errors_connect_rule connect_rules[] = {
    {"password authentication failed", FATAL}, /* 28P01 */
    {"no password supplied", FATAL},           /* libpq */
    {"does not exist", FATAL},                 /* 28000 role, 3D000 database */
    {"no pg_hba.conf entry", FATAL},           /* 28000 */
    {"replication role", FATAL},               /* 42501: needs REPLICATION */
    {"permission denied", FATAL},              /* 42501 */
    {"invalid connection option", FATAL},      /* libpq: the DSN */
    {"invalid URI", FATAL},                    /* libpq: the DSN */
    {"missing \"=\"", FATAL},                  /* libpq: the DSN */
    {"SSL is not enabled", FATAL},             /* sslmode=require, the server has none */
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static bool valid_state(const char *s)
{
    if (!s)
        return false;
    for (int i = 0; i < 5; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
            return false;
    return s[5] == '\0';
}

int pgcdc_errors_sqlstate(const char *state, bool conn_lost, enum pgcdc_errctx ctx)
{
    if (!valid_state(state))
        return conn_lost ? RETRY : FATAL;
    const struct pgcdc_errors_state_rule *class_rule = NULL;
    for (size_t i = 0; i < NELEM(state_rules); i++) {
        const struct pgcdc_errors_state_rule *r = &state_rules[i];
        if (r->code[2] == '\0') {
            if (memcmp(r->code, state, 2) == 0)
                class_rule = r;
        } else if (strcmp(r->code, state) == 0) {
            return ctx == PGCDC_ERRCTX_TARGET ? r->target : r->source;
        }
    }
    if (class_rule)
        return ctx == PGCDC_ERRCTX_TARGET ? class_rule->target : class_rule->source;
    return FATAL;
}

int pgcdc_errors_pg(const struct pg_conn *c, const struct pg_result *res, enum pgcdc_errctx ctx)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    bool lost = !res || !c || PQstatus(c) == CONNECTION_BAD;
    return pgcdc_errors_sqlstate(state, lost, ctx);
}

int pgcdc_errors_connect_msg(const char *msg)
{
    if (!msg)
        return FATAL;
    for (size_t i = 0; i < NELEM(connect_rules); i++)
        if (strstr(msg, connect_rules[i].fragment))
            return connect_rules[i].rc;
    return RETRY;
}

int pgcdc_errors_connect(const struct pg_conn *c)
{
    return c ? pgcdc_errors_connect_msg(PQerrorMessage(c)) : FATAL;
}

int pgcdc_errors_errno(int e, enum pgcdc_errfile what)
{
    for (size_t i = 0; i < NELEM(errno_rules); i++)
        if (errno_rules[i].e == e)
            return what == PGCDC_ERRFILE_OPEN ? errno_rules[i].open : errno_rules[i].io;
    return FATAL;
}

const struct pgcdc_errors_state_rule *pgcdc_errors_state_rules(size_t *n)
{
    *n = NELEM(state_rules);
    return state_rules;
}

const struct pgcdc_errors_errno_rule *pgcdc_errors_errno_rules(size_t *n)
{
    *n = NELEM(errno_rules);
    return errno_rules;
}

const struct pgcdc_errors_connect_rule *pgcdc_errors_connect_rules(size_t *n)
{
    *n = NELEM(connect_rules);
    return connect_rules;
}
