/*
 * migrate.h — `pgcdc migrate` and `pgcdc cutover`: the whole move of a live database in
 * one process, and the command that ends it (docs/cutover.md).
 *
 * migrate supervises two child processes of its own (fork, no exec, so no DSN ever
 * appears in a process title or argument list): capture (`run`'s machinery writing
 * DIR/data through the file sink, state in DIR/state) and replay (applying DIR/data to
 * the target). Each child keeps the crash semantics its command already proves (kill -9
 * safe, resumable), dies with migrate (PR_SET_PDEATHSIG), and a restart with the same
 * DIR resumes from the phase recorded in the target's marker, pgcdc.migrate.
 */
#ifndef PGCDC_MIGRATE_H
#define PGCDC_MIGRATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pgcdc/config.h"

struct pg_conn;
struct pgcdc_migrate_progress;

/* The phases, in order, recorded in pgcdc.migrate.phase. */
#define PGCDC_MIGRATE_PREDATA "predata"     /* schema restored; bulk load under way */
#define PGCDC_MIGRATE_BULK "bulk"           /* every snapshot row applied */
#define PGCDC_MIGRATE_POSTDATA "postdata"   /* indexes, constraints, triggers restored */
#define PGCDC_MIGRATE_FOLLOWING "following" /* ANALYZE done: caught up means following */

struct pgcdc_migrate {
    char *source, *target; /* DSNs, owned */
    const char *dir;       /* DIR, borrowed from argv */
    char dir_abs[4096];    /* DIR's real path, recorded in the marker */
    char data_dir[4200], state_dir[4200], dump[4200], sock[4200];
    char target_db[256];     /* the target's database name, for pg_restore -d */
    char sysid[32];          /* the source's system_identifier */
    char phase[32];          /* from the marker; "" before pre-data */
    uint64_t point;          /* the slot's consistent point (DIR/point) */
    struct pgcdc_config cfg; /* capture's settings: -o overrides on top of env */
    char **over;             /* the -o arguments, borrowed from argv */
    int nover;
    int jobs;                    /* pg_restore -j */
    pid_t capture, replay;       /* children; 0: not running */
    int replay_status;           /* the last replay child's exit status */
    _Atomic uint64_t *caught_up; /* shared with the replay children (mmap): where replay
                                    last caught up, for cutover's lag */
    struct pgcdc_migrate_progress *progress; /* shared too: replay's counters, for the
                                                progress display and metrics */
    pid_t ops; /* the child drawing progress and deleting applied segments; 0: none */
    _Atomic uint64_t *bulk_end;  /* shared likewise: where the bulk load ends, published
                                    once the snapshot is whole (0 until then) */
};

/* `pgcdc migrate` (argv[0] is the command). 0 or a negative code. `pgcdc cutover`'s
 * command line is parsed in main.c (cutover.h). */
int pgcdc_migrate_command(int argc, char **argv, char *err, size_t errlen);

/* ---- migrate_proc.c: children and external tools */

/* Put dsn's parameters into the environment as libpq's PG* variables (in a child, before
 * exec of pg_dump, pg_restore or psql: the secret stays out of argv). */
int pgcdc_migrate_dsn_env(const char *dsn, char *err, size_t errlen);

/* Run argv (argv[0] looked up in PATH) with dsn's parameters in its environment, stdout
 * to out_path (NULL: inherited), wait. 0 when it exits 0; else err names it and its
 * exit status (its own stderr went to ours). */
int pgcdc_migrate_tool(const char *dsn, char *const argv[], const char *out_path, char *err,
                       size_t errlen);

/* Fork a child that dies with us and runs fn(m) as its exit status. *pid set. */
int pgcdc_migrate_spawn(struct pgcdc_migrate *m, int (*fn)(struct pgcdc_migrate *m), pid_t *pid,
                        char *err, size_t errlen);

/* SIGTERM pid and wait for it; its exit code (0..255), or -1. */
int pgcdc_migrate_stop(pid_t pid);

/* The child bodies: capture (run's machinery), replay to m->point, replay following. */
int pgcdc_migrate_capture_main(struct pgcdc_migrate *m);
/* The bulk load's replay: snapshot rows as capture writes them (committed once durable),
 * then up to the end published in m->bulk_end once the snapshot is whole. */
int pgcdc_migrate_replay_load_main(struct pgcdc_migrate *m);
int pgcdc_migrate_replay_bulk_main(struct pgcdc_migrate *m);
int pgcdc_migrate_replay_follow_main(struct pgcdc_migrate *m);

/* ---- migrate.c: helpers the other files share */

/*
 * A session of migrate's or cutover's own on dsn (the source or the target): named
 * pgcdc-migrate unless the DSN names it (so `cutover --read-only-source` never ends it),
 * its notices to the log. As PQconnectdb: the caller checks PQstatus and PQfinishes.
 */
struct pg_conn *pgcdc_migrate_connect(const char *dsn);

/* One value of one statement on a fresh connection (param may be NULL); *out malloc'd,
 * NULL when there is no row or the value is NULL. */
int pgcdc_migrate_query1(const char *dsn, const char *sql, const char *param, char **out, char *err,
                         size_t errlen);

/* One statement on c; 0, or -1 with the server's message (one line) in err. */
int pgcdc_migrate_exec(struct pg_conn *c, const char *sql, int nparams, const char *const *params,
                       char *err, size_t errlen);

/* name (pg_restore, psql) from migrate.pg_dump's directory, or PATH. */
void pgcdc_migrate_sibling_tool(const struct pgcdc_migrate *m, const char *name, char *out,
                                size_t n);

/* ---- migrate_restart.c: a restart after a migrate stopped while pg_dump ran */

/*
 * DIR has capture state but no complete dump (no DIR/point): when the target holds no
 * marker and the capture state is this migrate's own slot, drop that slot and remove
 * DIR's data/, state/ and partial dump, so the run starts over (one log line says so).
 * Otherwise PGCDC_ERR_CONFIG, err naming why and the way out. Called by setup() after
 * check_target, with m->cfg, m->sysid and m->phase set.
 */
int pgcdc_migrate_discard_cut_dump(struct pgcdc_migrate *m, char *err, size_t errlen);

/* ---- migrate_check.c */

/* The target: reachable, pgcdc's schema can be made, a version the source's dump loads
 * into (exit 2 with the fix otherwise); whether session_replication_role can be set is
 * logged. */
int pgcdc_migrate_check_target(struct pgcdc_migrate *m, char *err, size_t errlen);

/* ---- migrate_defer.c: what the target holds back until cutover */

/* Copy the SQL script in to out without the header settings (SET x = ...) the target
 * does not know: a newer pg_dump's. */
int pgcdc_migrate_filter_sql(struct pgcdc_migrate *m, const char *in, const char *out, char *err,
                             size_t errlen);

/*
 * Post-data without foreign keys (pg_restore -j, --clean so that a restart redoes it),
 * then hold back what would change rows behind replay's back without
 * session_replication_role: user triggers disabled, GENERATED ALWAYS columns that are not
 * keys made BY DEFAULT. DIR/cutover.sql records how to undo both and adds the foreign keys
 * NOT VALID; DIR/rollback.sql only the undo.
 */
int pgcdc_migrate_postdata(struct pgcdc_migrate *m, char *err, size_t errlen);

/* Run DIR/<file> on the target in one transaction (psql -1). */
int pgcdc_migrate_run_script(struct pgcdc_migrate *m, const char *file, char *err, size_t errlen);

/* VALIDATE every foreign key of the target added NOT VALID; how many, or negative. */
int pgcdc_migrate_validate_fks(struct pgcdc_migrate *m, char *err, size_t errlen);

/* ---- migrate_keys.c: keys right after each table's bulk load */

/* Write DIR/post-data.sql (pg_restore --section=post-data) and create the target's
 * pgcdc.migrate_keys, before the bulk load. */
int pgcdc_migrate_keys_prepare(struct pgcdc_migrate *m, char *err, size_t errlen);

/* replay's table_loaded hook (ctx: the migrate): build the table's primary key and unique
 * constraints and indexes, each recorded in pgcdc.migrate_keys in its transaction. */
int pgcdc_migrate_keys_build(void *ctx, const char *schema, const char *table, char *err,
                             size_t errlen);

/* Comment out of the pg_restore list file the entries pgcdc.migrate_keys records. */
int pgcdc_migrate_keys_filter(struct pgcdc_migrate *m, const char *list, char *err,
                              size_t errlen);

/* ---- cutover.c: the server side, run by migrate once following */

/* Listen on m->sock (mode 0600) and serve cutover until it succeeds (*done) or stop is
 * requested. Returns 0 or a negative code. */
int pgcdc_cutover_serve(struct pgcdc_migrate *m, char *err, size_t errlen);

#endif
