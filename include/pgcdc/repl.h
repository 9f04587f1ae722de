/*
 * repl.h — the streaming replication protocol over libpq (replication=database mode).
 *
 * Modelled on pg_recvlogical.c/streamutil.c, with its gaps closed: we resume from the
 * flushed (durable) position, send a final status before CopyDone, and let the caller
 * back off with jitter instead of a fixed sleep.
 *
 * Messages inside CopyBoth, all integers big-endian:
 *   'w' XLogData:        'w' | dataStart u64 | walEnd u64 | sendTime i64 | payload
 *   'k' keepalive:       'k' | walEnd u64 | sendTime i64 | replyRequested u8
 *   'r' standby status:  'r' | write u64 | flush u64 | apply u64 | sendTime i64 | reply u8
 * sendTime is microseconds since 2000-01-01 00:00:00 UTC.
 */
#ifndef PGCDC_REPL_H
#define PGCDC_REPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pgcdc_repl;

struct pgcdc_slot_info {
    bool exists;
    char plugin[64];
    bool active;
    int active_pid;
    uint64_t confirmed_flush;
    uint64_t restart_lsn;
    char wal_status[16];
};

enum pgcdc_repl_msg_type { PGCDC_REPL_DATA = 1, PGCDC_REPL_KEEPALIVE = 2 };

struct pgcdc_repl_msg {
    enum pgcdc_repl_msg_type type;
    uint64_t data_start; /* DATA: LSN of the message */
    uint64_t wal_end;    /* KEEPALIVE: the sender's position */
    bool reply_requested;
    const char *data; /* DATA: the plugin's bytes; valid until the next pgcdc_repl_read */
    size_t len;
};

/*
 * Connect in replication=database mode. `dsn` is a libpq URI or key=value string.
 * Returns 0; PGCDC_ERR for errors retrying cannot fix (authentication, unknown database or
 * role, missing REPLICATION attribute) with the fix in err; PGCDC_ERR_RETRY otherwise.
 * The caller owns *out (pgcdc_repl_close). err never contains the password.
 */
int pgcdc_repl_connect(struct pgcdc_repl **out, const char *dsn, char *err, size_t errlen);

/* The database name the connection is for (PQdb). */
const char *pgcdc_repl_dbname(const struct pgcdc_repl *r);

/* The server's encoding (server_encoding, e.g. "UTF8", "LATIN1"), in which wal2json's
 * messages arrive; "" when the server did not say. */
const char *pgcdc_repl_server_encoding(const struct pgcdc_repl *r);

/*
 * Server-side preconditions that no retry can fix, each with its fix in err (PGCDC_ERR):
 * wal_level is logical, wal2json is allowed by output_plugin_libraries where the server has
 * that setting, the role may replicate.
 */
int pgcdc_repl_preflight(struct pgcdc_repl *r, char *err, size_t errlen);

int pgcdc_repl_slot_info(struct pgcdc_repl *r, const char *slot, struct pgcdc_slot_info *info,
                         char *err, size_t errlen);

/*
 * CREATE_REPLICATION_SLOT slot LOGICAL wal2json. With snapshot_name non-NULL the slot's
 * snapshot is exported and its name copied there: it stays usable (SET TRANSACTION
 * SNAPSHOT on another connection) until the next command on this connection. *consistent_lsn
 * receives the slot's consistent point.
 */
int pgcdc_repl_create_slot(struct pgcdc_repl *r, const char *slot, char *snapshot_name,
                           size_t snaplen, uint64_t *consistent_lsn, char *err, size_t errlen);

int pgcdc_repl_drop_slot(struct pgcdc_repl *r, const char *slot, char *err, size_t errlen);

/*
 * START_REPLICATION SLOT slot LOGICAL startpos (options). `opts` is a NULL-terminated
 * array of name, value pairs. startpos 0 means the slot's confirmed_flush_lsn.
 */
int pgcdc_repl_start(struct pgcdc_repl *r, const char *slot, uint64_t startpos,
                     const char *const *opts, char *err, size_t errlen);

/*
 * Read one message without blocking. Returns 1 with *msg filled, 0 when nothing is
 * available now (wait on the socket), PGCDC_ERR_RETRY when the connection was lost,
 * PGCDC_ERR for a server error no retry fixes (slot dropped), message in err.
 */
int pgcdc_repl_read(struct pgcdc_repl *r, struct pgcdc_repl_msg *msg, char *err, size_t errlen);

/* Wait until the socket is readable or timeout_ms passes. Returns 0, or <0 on error. */
int pgcdc_repl_wait(struct pgcdc_repl *r, int timeout_ms);

/* Send a standby status update: write = received, flush = apply = durable. */
int pgcdc_repl_send_status(struct pgcdc_repl *r, uint64_t written, uint64_t flushed,
                           bool reply_requested, char *err, size_t errlen);

/* Final status with `flushed`, then CopyDone, and drain the server's reply. */
int pgcdc_repl_finish(struct pgcdc_repl *r, uint64_t flushed, char *err, size_t errlen);

void pgcdc_repl_close(struct pgcdc_repl *r);

/* The libpq connection, for the modules that run SQL over it (check, slot status). */
struct pg_conn *pgcdc_repl_conn(struct pgcdc_repl *r);

#endif
