/*
 * main.c — the command line: parse, load settings, dispatch to a command, map the
 * result to an exit code. Only this file decides to exit.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "pgcdc/admin.h"
#include "pgcdc/common.h"
#include "pgcdc/config.h"
#include "pgcdc/cutover.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/migrate.h"
#include "pgcdc/replay.h"
#include "pgcdc/snapshot_signal.h"
#include "pgcdc/stream.h"
#include "pgcdc/verify.h"

extern char **environ;

static const char usage_text[] =
    "pgcdc " PGCDC_VERSION " - stream every row change out of PostgreSQL (wal2json)\n"
    "into files, Kafka, a web service (HTTP) or S3-compatible object storage\n"
    "\n"
    "Usage:\n"
    "  pgcdc run     [-c FILE] [-o KEY=VALUE]... [--end-lsn LSN | --once]\n"
    "  pgcdc snapshot --table SCHEMA.TABLE... [-c FILE] [-o KEY=VALUE]...\n"
    "  pgcdc check   [-c FILE] [-o KEY=VALUE]...\n"
    "  pgcdc slot    create|drop|status [-c FILE] [-o KEY=VALUE]...\n"
    "  pgcdc replay  --input DIR --target DSN [--follow] [--end-lsn LSN] [-o KEY=VALUE]...\n"
    "  pgcdc migrate --source DSN --target DSN --dir DIR [-o KEY=VALUE]...\n"
    "  pgcdc cutover --dir DIR [--read-only-source] [--max-lag-ms N] [--table T]...\n"
    "                [--keep-slot] | --abort\n"
    "  pgcdc verify  --source DSN --target DSN [--table SCHEMA.TABLE]...\n"
    "  pgcdc --version | --help | SUBCOMMAND --help\n"
    "\n"
    "Settings, lowest precedence first: built-in defaults, the file given by -c,\n"
    "environment variables PGCDC_<KEY> (e.g. PGCDC_SOURCE_DSN), then -o KEY=VALUE.\n"
    "Every key is listed with its default in config/pgcdc.conf.example.\n"
    "\n"
    "Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.\n";

static const char run_help[] =
    "Usage: pgcdc run [-c FILE] [-o KEY=VALUE]... [--end-lsn LSN | --once]\n"
    "\n"
    "Stream changes from the replication slot source.slot into the sink, confirming each\n"
    "LSN to the server only once its events are durable. Runs until SIGTERM/SIGINT, which\n"
    "makes everything received durable, confirms it and exits 0.\n"
    "\n"
    "  -c, --config FILE    read settings from FILE (key = value lines)\n"
    "  -o KEY=VALUE         set one setting; repeatable; wins over file and environment\n"
    "      --end-lsn LSN    stop (exit 0) once every transaction committed at or before LSN\n"
    "                       (e.g. pg_current_wal_lsn() after the last write) is durable\n"
    "                       and confirmed\n"
    "      --once           stop (exit 0) once everything up to the server's position at\n"
    "                       connect time is durable and confirmed (cron, systemd timers,\n"
    "                       Kubernetes CronJobs); on an idle database within 2 s\n"
    "  -h, --help           this text\n"
    "\n"
    "With source.poll_interval_ms > 0, run closes its source connections once caught up\n"
    "and idle for source.idle_disconnect_ms, so a Neon compute may suspend, and connects\n"
    "again after the interval.\n";

static const char check_help[] =
    "Usage: pgcdc check [-c FILE] [-o KEY=VALUE]...\n"
    "\n"
    "Preflight the source: one PASS/FAIL/WARN line per check (connection and TLS, not a\n"
    "Neon -pooler host, server encoding, server version, wal_level, wal2json loadable and\n"
    "allowed, the REPLICATION attribute, free slots and WAL senders, the slot's state, the\n"
    "listed tables, tables without a key; with sink.type = http, the receiver: TLS,\n"
    "401/403). Every FAIL names its fix. Exits 1 if any check fails.\n";

static const char snapshot_help[] =
    "Usage: pgcdc snapshot --table SCHEMA.TABLE... [-c FILE] [-o KEY=VALUE]...\n"
    "\n"
    "Ask `run` (running now or started later) for a fresh snapshot of these tables: inserts\n"
    "a request row into the signal table pgcdc.signal in the source database (the DDL is in\n"
    "docs/operations.md; PostgreSQL's privileges on it decide who may ask), prints the LSN\n"
    "after the request, and exits 0. `run` sees the request in stream order, snapshots the\n"
    "tables at a new point and resumes; their other changes are not dropped, and rows\n"
    "deleted earlier are not deleted downstream.\n"
    "\n"
    "  -t, --table S.T      a table to snapshot again (repeatable); it must exist and be\n"
    "                       selected by source.tables.include/exclude (else exit 2)\n"
    "  -c, --config FILE    read settings from FILE (key = value lines)\n"
    "  -o KEY=VALUE         set one setting; repeatable\n"
    "  -h, --help           this text\n";

static const char slot_help[] =
    "Usage: pgcdc slot create|drop|status [-c FILE] [-o KEY=VALUE]...\n"
    "\n"
    "  create   create source.slot with wal2json (no snapshot; for snapshot.mode = never)\n"
    "  drop     drop source.slot (refused while a process holds it)\n"
    "  status   one line: plugin, active and by which pid, confirmed_flush_lsn, bytes\n"
    "           behind the server's WAL, retained WAL bytes, wal_status\n";

static const char replay_help[] =
    "Usage: pgcdc replay --input DIR --target DSN [--follow] [--end-lsn LSN] [-o KEY=VALUE]...\n"
    "\n"
    "Apply the file sink's directory DIR to the target database, whose tables must exist\n"
    "(pg_dump --schema-only). Whole source transactions, in commit order, batched into\n"
    "target transactions. The last applied commit LSN is kept in the target's\n"
    "pgcdc.replay_position in the same transaction, so a killed replay resumes exactly.\n"
    "\n"
    "  -i, --input DIR      the directory `pgcdc run` writes (sink.file.dir)\n"
    "  -t, --target DSN     libpq connection string or URI of the target\n"
    "  -f, --follow         keep applying new data as it arrives, until SIGTERM/SIGINT;\n"
    "                       logs \"caught up at LSN ...\" whenever everything is applied\n"
    "      --end-lsn LSN    wait for and apply every transaction committed at or before\n"
    "                       LSN (pg_current_wal_lsn() on the source after writes stopped),\n"
    "                       then exit 0\n"
    "  -o KEY=VALUE         replay.batch_rows (5000 rows per target transaction),\n"
    "                       replay.group_rows (64 rows per multi-row statement; 1: one\n"
    "                       statement per row), replay.copy_rows (1000000 snapshot rows\n"
    "                       per COPY chunk, at most 256 MB; 0: no COPY, upserts), replay.poll_ms (150),\n"
    "                       replay.missing_rows (error, or warn), log.level, log.format\n"
    "  -h, --help           this text\n"
    "\n"
    "Without --follow or --end-lsn: apply what is there and exit 0. A missing table or\n"
    "column, a value the target's type rejects, or an update or delete that matches no\n"
    "row (unless replay.missing_rows = warn) stops replay (exit 1) naming table, column\n"
    "and LSN; nothing of that source transaction is applied. The target session pins\n"
    "DateStyle ISO, IntervalStyle postgres, TimeZone UTC, extra_float_digits 3 and\n"
    "client_encoding UTF8, so a row of a table without a key is found by the text form\n"
    "the source printed, whatever the target's defaults.\n"
    "\n"
    "Snapshot rows go in with COPY, each chunk committed with the position, when the\n"
    "table holds exactly the snapshot's rows already applied (none when its snapshot\n"
    "starts); a table that holds other rows gets upserts.\n";

static const char verify_help[] =
    "Usage: pgcdc verify --source DSN --target DSN [--table SCHEMA.TABLE]...\n"
    "\n"
    "Compare tables of two databases: per table, the row count and an order-independent\n"
    "hash of every row's text form, computed by each database. One line per table:\n"
    "MATCH, DIFF, MISSING (on one side only), or EXTRA (a table only the target has).\n"
    "A partitioned table is compared through all its partitions. Exit 0 only when every\n"
    "table matches and the target has no extra table; exit 2 when a --table exists on\n"
    "neither side.\n"
    "\n"
    "  -s, --source DSN     the database replayed from\n"
    "  -t, --target DSN     the database replayed into\n"
    "      --table S.T      compare only these tables (repeatable); default: every table\n"
    "                       and partitioned root (not its partitions) of either database\n"
    "                       outside the pgcdc schema\n"
    "  -h, --help           this text\n";

/*
 * Hide secrets given on the command line from ps and /proc/PID/cmdline: rewrite the
 * argument in place (the kernel shows argv's memory as it is now).
 */
static void scrub_arg(char *arg)
{
    char *eq = strchr(arg, '=');
    char key[128];
    if (!eq || (size_t)(eq - arg) >= sizeof(key))
        return;
    for (size_t i = 0; i < (size_t)(eq - arg); i++)
        key[i] = (char)tolower((unsigned char)arg[i]);
    key[eq - arg] = '\0';
    if (pgcdc_config_key_is_secret(key) && strcmp(key, "source.dsn") != 0)
        memset(eq + 1, '*', strlen(eq + 1));
    else /* source.dsn, or a DSN under a misspelt key: keep host and database visible */
        pgcdc_log_scrub_dsn_arg(eq + 1);
}

static int load_config(struct pgcdc_config *cfg, const char *file, char **overrides, int nover,
                       char *err, size_t errlen)
{
    int rc;
    if ((rc = pgcdc_config_init(cfg)) < 0) {
        snprintf(err, errlen, "out of memory");
        return rc;
    }
    if (file && (rc = pgcdc_config_load_file(cfg, file, err, errlen)) < 0)
        return rc;
    if ((rc = pgcdc_config_load_env(cfg, environ, err, errlen)) < 0)
        return rc;
    for (int i = 0; i < nover; i++)
        if ((rc = pgcdc_config_set_arg(cfg, overrides[i], err, errlen)) < 0)
            return rc;
    return pgcdc_config_validate(cfg, err, errlen);
}

static int exit_code(int rc)
{
    if (rc == PGCDC_OK)
        return PGCDC_EXIT_OK;
    if (rc == PGCDC_ERR_CONFIG)
        return PGCDC_EXIT_USAGE;
    return PGCDC_EXIT_RUNTIME;
}

static int fail(int rc, const char *msg)
{
    pgcdc_log(PGCDC_LOG_ERROR, msg, NULL);
    return exit_code(rc);
}

/*
 * An option getopt refused, or a stray argument, in err: DSNs in it redacted, the value
 * of a misspelt --option=VALUE too (--targt=postgres://u:secret@h/db).
 */
static int bad_arg(const char *fmt, const char *arg, char *err, size_t errlen)
{
    char shown[512];
    const char *eq = arg[0] == '-' ? strchr(arg, '=') : NULL;
    size_t keep = eq ? (size_t)(eq - arg) + 1 : 0;
    if (keep >= sizeof(shown))
        keep = 0;
    memcpy(shown, arg, keep);
    pgcdc_log_redact_dsn(arg + keep, shown + keep, sizeof(shown) - keep);
    snprintf(err, errlen, fmt, shown);
    return PGCDC_ERR_CONFIG;
}

enum command { CMD_RUN, CMD_CHECK, CMD_SLOT, CMD_SNAPSHOT };

static const char migrate_help[] =
    "Usage: pgcdc migrate --source DSN --target DSN --dir DIR [-o KEY=VALUE]...\n"
    "\n"
    "Move a live database into an empty target in one process (docs/cutover.md): create\n"
    "the slot, pg_dump -Fc --schema-only in its exported snapshot, restore pre-data in one\n"
    "transaction with the marker pgcdc.migrate, capture (snapshot + stream into DIR/data)\n"
    "and replay concurrently, restore post-data with pg_restore -j (migrate.jobs) and ANALYZE\n"
    "beside it, then follow until `pgcdc cutover --dir DIR` has finished (exit 0) or SIGTERM. Run it\n"
    "again with the same DIR to resume. A target that is not empty and holds no marker of\n"
    "this source and DIR is refused (exit 2), naming its tables.\n"
    "\n"
    "  -s, --source DSN     the database to move (on Neon: the direct endpoint)\n"
    "  -t, --target DSN     an empty database to move it into\n"
    "  -d, --dir DIR        captured data, state, the schema dump, the cutover socket\n"
    "  -o KEY=VALUE         any run setting (source.slot, source.tables.include, ...),\n"
    "                       migrate.pg_dump (a pg_dump at least the source's version),\n"
    "                       migrate.jobs, migrate.keep_segments (keep DIR/data's\n"
    "                       applied segments), metrics.listen (replay's lag and rows too)\n"
    "  -h, --help           this text\n"
    "\n"
    "It first runs pgcdc check's checks on the source and checks the target, and refuses\n"
    "(exit 2) when the snapshot would not fit DIR's disk. Progress: a live line when stderr\n"
    "is a terminal, else a log line every 10 s.\n";

static const char cutover_help[] =
    "Usage: pgcdc cutover --dir DIR [--read-only-source] [--max-lag-ms N]\n"
    "                     [--table SCHEMA.TABLE]... [--keep-slot] | --abort\n"
    "\n"
    "Ask the `pgcdc migrate` following with DIR to finish: wait until the lag is under\n"
    "--max-lag-ms, optionally make the source read-only, take the source's current LSN as\n"
    "END, apply everything up to END, set every sequence on the target from the source,\n"
    "verify every table (or those given), restore what was held back while following\n"
    "(foreign keys, triggers, identity columns), drop the slot, and print a report with\n"
    "the write pause. Exit 0 only when every verified table matches; exit 2 when no\n"
    "migrate runs for DIR. On failure the source's previous setting is put back.\n"
    "\n"
    "  -d, --dir DIR            the DIR of the running migrate\n"
    "      --read-only-source   set default_transaction_read_only on the source (the\n"
    "                           previous value recorded in DIR) and end client sessions\n"
    "      --max-lag-ms N       wait until replay is this close to the source (1000)\n"
    "  -t, --table S.T          verify only these tables (repeatable)\n"
    "      --keep-slot          leave the replication slot on the source\n"
    "      --abort              put the source's previous read-only setting back\n"
    "  -h, --help               this text\n";

/* Options every command shares, then the command itself. */
static int command(enum command cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"end-lsn", required_argument, NULL, 'e'},
        {"once", no_argument, NULL, '1'},
        {"table", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *help = cmd == CMD_RUN        ? run_help
                       : cmd == CMD_CHECK    ? check_help
                       : cmd == CMD_SNAPSHOT ? snapshot_help
                                             : slot_help;
    const char *tables[argc + 1]; /* --table values, borrowed from argv */
    int ntables = 0;
    const char *file = NULL, *end = NULL, *action = NULL;
    char **over = calloc((size_t)argc + 1, sizeof(char *));
    int nover = 0, c, rc;
    bool once = false;
    char err[2048] = "";
    if (!over)
        return fail(PGCDC_ERR, "out of memory");
    optind = 1;
    opterr = 0; /* getopt would echo the option, value and all: bad_arg redacts it */
    while ((c = getopt_long(argc, argv, cmd == CMD_SNAPSHOT ? "c:o:t:h" : "c:o:h", longopts,
                            NULL)) != -1) {
        switch (c) {
        case 'c': file = optarg; break;
        case 'o': over[nover++] = optarg; break;
        case 't':
            if (cmd == CMD_SNAPSHOT) {
                tables[ntables++] = optarg;
                break;
            }
            /* fallthrough */
        case 'e':
        case '1':
            if (cmd == CMD_RUN) {
                if (c == 'e')
                    end = optarg;
                else
                    once = true;
                break;
            }
            /* fallthrough */
        default:
            free(over);
            bad_arg(cmd == CMD_RUN     ? "unknown or incomplete option \"%s\": see pgcdc run --help"
                    : cmd == CMD_CHECK ? "unknown or incomplete option \"%s\": see pgcdc check --help"
                    : cmd == CMD_SNAPSHOT
                        ? "unknown or incomplete option \"%s\": see pgcdc snapshot --help"
                        : "unknown or incomplete option \"%s\": see pgcdc slot --help",
                    argv[optind - 1], err, sizeof(err));
            return fail(PGCDC_ERR_CONFIG, err);
        case 'h': fputs(help, stdout); free(over); return PGCDC_EXIT_OK;
        }
    }
    if (cmd == CMD_SLOT && optind < argc)
        action = argv[optind++];
    if (optind < argc || (cmd == CMD_SLOT && !action) || (once && end)) {
        if (once && end)
            snprintf(err, sizeof(err),
                     "--once and --end-lsn both say when to stop: give one of them");
        else if (cmd == CMD_SLOT && !action)
            snprintf(err, sizeof(err), "pgcdc slot needs an action: create, drop or status");
        else {
            char shown[512]; /* it may be a misplaced DSN */
            pgcdc_log_redact_dsn(argv[optind], shown, sizeof(shown));
            snprintf(err, sizeof(err), "unexpected argument \"%s\": settings go in -o KEY=VALUE",
                     shown);
        }
        free(over);
        return fail(PGCDC_ERR_CONFIG, err);
    }
    struct pgcdc_config cfg;
    rc = load_config(&cfg, file, over, nover, err, sizeof(err));
    pgcdc_log_add_secrets(cfg.source_dsn); /* libpq's messages may quote pieces of it */
    /* The overrides were copied into cfg: now hide any secret among them from ps. */
    for (int i = 0; i < nover; i++)
        scrub_arg(over[i]);
    free(over);
    if (rc == PGCDC_OK)
        pgcdc_log_setup(cfg.log_level, cfg.log_format);
    uint64_t end_lsn = 0;
    if (rc == PGCDC_OK && end && pgcdc_lsn_parse_str(end, &end_lsn) < 0) {
        snprintf(err, sizeof(err),
                 "--end-lsn \"%s\" is not an LSN: give it as pg_current_wal_lsn() prints it, "
                 "e.g. 0/16B3748", end);
        rc = PGCDC_ERR_CONFIG;
    }
    if (rc == PGCDC_OK) {
        switch (cmd) {
        case CMD_RUN:
            pgcdc_install_stop_signals();
            rc = pgcdc_stream_run(&cfg, end_lsn, once, err, sizeof(err));
            break;
        case CMD_CHECK:
            rc = pgcdc_admin_check(&cfg);
            if (rc < 0)
                snprintf(err, sizeof(err), "check failed: fix the FAIL lines above");
            break;
        case CMD_SLOT:
            rc = pgcdc_admin_slot(&cfg, action, err, sizeof(err));
            break;
        case CMD_SNAPSHOT: {
            char lsn[64];
            if (ntables == 0) {
                snprintf(err, sizeof(err), "pgcdc snapshot needs --table SCHEMA.TABLE (repeatable)");
                rc = PGCDC_ERR_CONFIG;
            } else if ((rc = pgcdc_signal_request(&cfg, tables, ntables, lsn, sizeof(lsn), err,
                                                  sizeof(err))) == PGCDC_OK) {
                printf("%s\n", lsn);
            }
            break;
        }
        }
    }
    pgcdc_config_free(&cfg);
    if (rc < 0)
        return fail(rc, err);
    return PGCDC_EXIT_OK;
}

/* ---- replay, verify and cutover: their own options, then one entry point each */

static int replay_setting(struct pgcdc_replay_opts *o, const char *arg, char *err, size_t errlen)
{
    const char *eq = strchr(arg, '=');
    if (!eq)
        goto bad;
    char *end;
    long v = strtol(eq + 1, &end, 10);
    if (strncmp(arg, "replay.batch_rows=", 18) == 0) {
        if (*end || end == eq + 1 || v < 1 || v > 10000000)
            goto badval;
        o->batch_rows = (int)v;
        return PGCDC_OK;
    }
    if (strncmp(arg, "replay.group_rows=", 18) == 0) {
        if (*end || end == eq + 1 || v < 1 || v > 1024)
            goto badval;
        o->group_rows = (int)v;
        return PGCDC_OK;
    }
    if (strncmp(arg, "replay.copy_rows=", 17) == 0) {
        if (*end || end == eq + 1 || v < 0 || v > 10000000)
            goto badval;
        o->copy_rows = v == 0 ? -1 : (int)v; /* 0 here: never COPY */
        return PGCDC_OK;
    }
    if (strncmp(arg, "replay.poll_ms=", 15) == 0) {
        if (*end || end == eq + 1 || v < 10 || v > 60000)
            goto badval;
        o->poll_ms = (int)v;
        return PGCDC_OK;
    }
bad:
    snprintf(err, errlen,
             "unknown replay setting \"%.*s\": replay takes replay.batch_rows, "
             "replay.group_rows, replay.copy_rows, replay.poll_ms, replay.missing_rows, "
             "log.level and log.format",
             (int)(eq ? eq - arg : (ptrdiff_t)strlen(arg)), arg);
    return PGCDC_ERR_CONFIG;
badval:
    snprintf(err, errlen,
             "bad value \"%s\" for %.*s: replay.batch_rows takes 1..10000000, "
             "replay.group_rows 1..1024, replay.copy_rows 0..10000000, replay.poll_ms "
             "10..60000",
             eq + 1, (int)(eq - arg), arg);
    return PGCDC_ERR_CONFIG;
}

/*
 * Keep a copy of the DSN in arg in *slot (malloc'd, replacing the one there), then hide
 * its password in argv from ps and /proc/PID/cmdline.
 */
static int take_dsn(char **slot, char *arg)
{
    free(*slot);
    if (!(*slot = strdup(arg)))
        return PGCDC_ERR;
    pgcdc_log_add_secrets(arg); /* libpq's messages may quote pieces of it */
    pgcdc_log_scrub_dsn_arg(arg);
    return PGCDC_OK;
}

/*
 * replay's options into o, cfg (-o for log.*), *target (a malloc'd copy, the caller
 * frees; argv's is scrubbed) and *end (borrowed from argv).
 */
static int replay_options(int argc, char **argv, struct pgcdc_replay_opts *o,
                          struct pgcdc_config *cfg, char **target, const char **end, char *err,
                          size_t errlen)
{
    static const struct option longopts[] = {
        {"input", required_argument, NULL, 'i'},
        {"target", required_argument, NULL, 't'},
        {"follow", no_argument, NULL, 'f'},
        {"end-lsn", required_argument, NULL, 'e'},
        {NULL, 0, NULL, 0},
    };
    int c, rc;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "i:t:fo:", longopts, NULL)) != -1) {
        switch (c) {
        case 'i':
            o->input = optarg;
            break;
        case 't':
            if (take_dsn(target, optarg) < 0)
                return PGCDC_ERR;
            break;
        case 'f':
            o->follow = true;
            break;
        case 'e':
            *end = optarg;
            break;
        case 'o':
            /* replay.missing_rows is a key of the table (config_keys.c); the other
             * replay.* settings are replay's own. */
            rc = strncmp(optarg, "replay.", 7) == 0 &&
                         strncmp(optarg, "replay.missing_rows=", 20) != 0
                     ? replay_setting(o, optarg, err, errlen)
                     : pgcdc_config_set_arg(cfg, optarg, err, errlen);
            if (rc < 0)
                return rc;
            break;
        default:
            return bad_arg("unknown or incomplete option \"%s\": see pgcdc replay --help",
                           argv[optind - 1], err, errlen);
        }
    }
    return PGCDC_OK;
}

/* What replay needs before it starts: its arguments whole and its input a directory. */
static int replay_check(int argc, char **argv, struct pgcdc_replay_opts *o, const char *target,
                        const char *end, char *err, size_t errlen)
{
    if (optind < argc)
        return bad_arg("unexpected argument \"%s\": see pgcdc replay --help", argv[optind], err,
                       errlen);
    if (!o->input || !target) {
        snprintf(err, errlen,
                 "pgcdc replay needs --input DIR (the file sink's sink.file.dir) and "
                 "--target DSN (the database to apply to)");
        return PGCDC_ERR_CONFIG;
    }
    if (end && pgcdc_lsn_parse_str(end, &o->end_lsn) < 0) {
        snprintf(err, errlen,
                 "--end-lsn \"%s\" is not an LSN: give it as pg_current_wal_lsn() prints it, "
                 "e.g. 0/16B3748",
                 end);
        return PGCDC_ERR_CONFIG;
    }
    struct stat stt;
    errno = 0;
    if (stat(o->input, &stt) < 0 || !S_ISDIR(stt.st_mode)) {
        snprintf(err, errlen, "--input %s is not a readable directory%s%s", o->input,
                 errno ? ": " : "", errno ? strerror(errno) : "");
        return PGCDC_ERR_CONFIG;
    }
    return pgcdc_config_check_dsn("--target", target, err, errlen);
}

/*
 * `pgcdc replay` (argv[0] is "replay"). The target DSN in argv is overwritten with its
 * redacted form (ps shows no password).
 */
static int replay_command(int argc, char **argv, char *err, size_t errlen)
{
    struct pgcdc_replay_opts o = {.batch_rows = 5000, .group_rows = 64, .poll_ms = 150};
    struct pgcdc_config cfg;
    const char *end = NULL;
    char *target = NULL;
    int rc;
    if (pgcdc_config_init(&cfg) < 0) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    if ((rc = pgcdc_config_load_env(&cfg, environ, err, errlen)) < 0 ||
        (rc = replay_options(argc, argv, &o, &cfg, &target, &end, err, errlen)) < 0)
        goto out;
    pgcdc_log_setup(cfg.log_level, cfg.log_format);
    if ((rc = replay_check(argc, argv, &o, target, end, err, errlen)) < 0)
        goto out;
    o.target = target;
    o.missing_rows_warn = cfg.replay_missing_rows == PGCDC_MISSING_ROWS_WARN;
    rc = pgcdc_replay_run(&o, err, errlen);
out:
    pgcdc_config_free(&cfg);
    free(target);
    return rc;
}

/*
 * verify's options: dsn[0] source, dsn[1] target (malloc'd copies, the caller frees;
 * argv's are scrubbed), only[] the --table names (borrowed from argv).
 */
static int verify_options(int argc, char **argv, char *dsn[2], const char **only, int *nonly,
                          char *err, size_t errlen)
{
    static const struct option longopts[] = {
        {"source", required_argument, NULL, 's'},
        {"target", required_argument, NULL, 't'},
        {"table", required_argument, NULL, 'T'},
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "s:t:", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
        case 't':
            if (take_dsn(&dsn[c == 't'], optarg) < 0)
                return PGCDC_ERR;
            break;
        case 'T':
            only[(*nonly)++] = optarg;
            break;
        default:
            return bad_arg("unknown or incomplete option \"%s\": see pgcdc verify --help",
                           argv[optind - 1], err, errlen);
        }
    }
    if (optind < argc)
        return bad_arg("unexpected argument \"%s\": see pgcdc verify --help", argv[optind], err,
                       errlen);
    return PGCDC_OK;
}

/* verify's arguments, whole and well-formed. */
static int verify_check(char *dsn[2], const char **only, int nonly, char *err, size_t errlen)
{
    if (!dsn[0] || !dsn[1]) {
        snprintf(err, errlen, "pgcdc verify needs --source DSN and --target DSN");
        return PGCDC_ERR_CONFIG;
    }
    for (int i = 0; i < nonly; i++) {
        char *s, *t;
        if (pgcdc_verify_split_name(only[i], &s, &t) < 0) {
            snprintf(err, errlen, "--table \"%s\" is not SCHEMA.TABLE", only[i]);
            return PGCDC_ERR_CONFIG;
        }
        free(s);
        free(t);
    }
    if (pgcdc_config_check_dsn("--source", dsn[0], err, errlen) < 0 ||
        pgcdc_config_check_dsn("--target", dsn[1], err, errlen) < 0)
        return PGCDC_ERR_CONFIG;
    return PGCDC_OK;
}

/* `pgcdc verify` (argv[0] is "verify"). DSNs in argv are overwritten with their redacted form. */
static int verify_command(int argc, char **argv, char *err, size_t errlen)
{
    char *dsn[2] = {NULL, NULL};
    const char **only = calloc((size_t)argc + 1, sizeof(char *));
    int nonly = 0, rc;
    if (!only) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    if ((rc = verify_options(argc, argv, dsn, only, &nonly, err, errlen)) == PGCDC_OK &&
        (rc = verify_check(dsn, only, nonly, err, errlen)) == PGCDC_OK) {
        struct pgcdc_verify_opts o = {
            .source = dsn[0], .target = dsn[1], .tables = only, .ntables = nonly};
        rc = pgcdc_verify_run(&o, err, errlen);
    }
    free(dsn[0]);
    free(dsn[1]);
    free(only);
    return rc;
}

/*
 * cutover's options into o (--table values and --dir borrowed from argv, into only[],
 * which has room for argc entries). Errors as `pgcdc cutover --help` promises.
 */
static int cutover_options(int argc, char **argv, struct pgcdc_cutover_opts *o, const char **only,
                           char *err, size_t errlen)
{
    static const struct option longopts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"table", required_argument, NULL, 't'},
        {"keep-slot", no_argument, NULL, 'k'},
        {"max-lag-ms", required_argument, NULL, 'm'},
        {"read-only-source", no_argument, NULL, 'r'},
        {"abort", no_argument, NULL, 'a'},
        {NULL, 0, NULL, 0},
    };
    /* The request line's length so far: "cutover", then " tables=" and ","-joined names. */
    size_t rn = strlen("cutover");
    int c;
    *o = (struct pgcdc_cutover_opts){.max_lag_ms = 1000, .tables = only};
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "d:t:", longopts, NULL)) != -1) {
        switch (c) {
        case 'd':
            o->dir = optarg;
            break;
        case 'k':
            o->keep_slot = true;
            break;
        case 'm':
            o->max_lag_ms = atoi(optarg);
            if (o->max_lag_ms <= 0 || strspn(optarg, "0123456789") != strlen(optarg)) {
                snprintf(err, errlen, "--max-lag-ms %s: give a positive whole number of ms",
                         optarg);
                return PGCDC_ERR_CONFIG;
            }
            break;
        case 't':
            rn += strlen(o->ntables ? "," : " tables=") + strlen(optarg);
            only[o->ntables++] = optarg;
            if (rn >= PGCDC_CUTOVER_REQUEST_MAX - PGCDC_CUTOVER_REQUEST_SLACK ||
                strpbrk(optarg, ", \n")) {
                snprintf(err, errlen, "--table %s: give one SCHEMA.TABLE per --table", optarg);
                return PGCDC_ERR_CONFIG;
            }
            break;
        case 'r':
            o->read_only = true;
            break;
        case 'a':
            o->abort = true;
            break;
        default:
            snprintf(err, errlen, "unknown or incomplete option: see pgcdc cutover --help");
            return PGCDC_ERR_CONFIG;
        }
    }
    if (!o->dir || optind < argc) {
        snprintf(err, errlen, "pgcdc cutover needs --dir DIR (the one pgcdc migrate runs with)");
        return PGCDC_ERR_CONFIG;
    }
    if (o->abort && (o->read_only || o->keep_slot || o->ntables)) {
        snprintf(err, errlen, "--abort takes only --dir");
        return PGCDC_ERR_CONFIG;
    }
    return PGCDC_OK;
}

/* `pgcdc cutover` (argv[0] is "cutover"): the request goes to the migrate following DIR. */
static int cutover_command(int argc, char **argv, char *err, size_t errlen)
{
    struct pgcdc_cutover_opts o;
    const char **only = calloc((size_t)argc + 1, sizeof(char *));
    int rc;
    if (!only) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    if ((rc = cutover_options(argc, argv, &o, only, err, errlen)) == PGCDC_OK)
        rc = pgcdc_cutover_ask(&o, err, errlen);
    free(only);
    return rc;
}

/* replay, verify, migrate and cutover parse their own options; --help is answered here. */
static int tool(int (*fn)(int, char **, char *, size_t), const char *help, int argc,
                char **argv)
{
    char err[2048] = "";
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(help, stdout);
            return PGCDC_EXIT_OK;
        }
    }
    int rc = fn(argc, argv, err, sizeof(err));
    if (rc < 0)
        return fail(rc, err);
    return PGCDC_EXIT_OK;
}

int main(int argc, char **argv)
{
    pgcdc_log_setup(PGCDC_LOG_INFO, PGCDC_LOG_TEXT);
    if (argc < 2) {
        fputs(usage_text, stderr);
        return PGCDC_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
        printf("pgcdc %s\n", PGCDC_VERSION);
        return PGCDC_EXIT_OK;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return PGCDC_EXIT_OK;
    }
    if (strcmp(cmd, "run") == 0)
        return command(CMD_RUN, argc - 1, argv + 1);
    if (strcmp(cmd, "check") == 0)
        return command(CMD_CHECK, argc - 1, argv + 1);
    if (strcmp(cmd, "snapshot") == 0)
        return command(CMD_SNAPSHOT, argc - 1, argv + 1);
    if (strcmp(cmd, "slot") == 0)
        return command(CMD_SLOT, argc - 1, argv + 1);
    if (strcmp(cmd, "replay") == 0)
        return tool(replay_command, replay_help, argc - 1, argv + 1);
    if (strcmp(cmd, "verify") == 0)
        return tool(verify_command, verify_help, argc - 1, argv + 1);
    if (strcmp(cmd, "migrate") == 0)
        return tool(pgcdc_migrate_command, migrate_help, argc - 1, argv + 1);
    if (strcmp(cmd, "cutover") == 0)
        return tool(cutover_command, cutover_help, argc - 1, argv + 1);
    char err[256];
    snprintf(err, sizeof(err), "unknown command \"%s\": see pgcdc --help", cmd);
    return fail(PGCDC_ERR_CONFIG, err);
}
