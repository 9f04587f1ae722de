/*
 * migrate_proc.c — the processes `pgcdc migrate` runs: its own children (capture and
 * replay, forked without exec) and the PostgreSQL tools (pg_dump, pg_restore, psql), which
 * get the connection through libpq's PG* environment variables, never in argv.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pgcdc/common.h"
#include "pgcdc/log.h"
#include "pgcdc/migrate.h"
#include "pgcdc/replay.h"
#include "pgcdc/stream.h"

int pgcdc_migrate_dsn_env(const char *dsn, char *err, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &perr);
    if (!opts) {
        snprintf(err, errlen, "cannot parse the connection string: %s",
                 perr ? perr : "out of memory");
        PQfreemem(perr);
        return PGCDC_ERR_CONFIG;
    }
    /* libpq names each parameter's variable; a parameter without one is not passed on. */
    PQconninfoOption *defs = PQconndefaults();
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val)
            continue;
        for (PQconninfoOption *d = defs; d && d->keyword; d++)
            if (strcmp(d->keyword, o->keyword) == 0 && d->envvar)
                setenv(d->envvar, o->val, 1);
    }
    PQconninfoFree(defs);
    PQconninfoFree(opts);
    return PGCDC_OK;
}

int pgcdc_migrate_tool(const char *dsn, char *const argv[], const char *out_path, char *err,
                       size_t errlen)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "cannot start %s: %s", argv[0], strerror(errno));
        return PGCDC_ERR;
    }
    if (pid == 0) {
        char e[512];
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (dsn && pgcdc_migrate_dsn_env(dsn, e, sizeof(e)) < 0)
            _exit(126);
        if (out_path) {
            int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            if (fd < 0 || dup2(fd, 1) < 0)
                _exit(126);
        }
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) {
            snprintf(err, errlen, "waiting for %s: %s", argv[0], strerror(errno));
            return PGCDC_ERR;
        }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return PGCDC_OK;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        snprintf(err, errlen, "%s could not be run: install it, or name it with migrate.pg_dump",
                 argv[0]);
    else
        snprintf(err, errlen, "%s failed (%s %d): see its messages above", argv[0],
                 WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    return PGCDC_ERR;
}

int pgcdc_migrate_spawn(struct pgcdc_migrate *m, int (*fn)(struct pgcdc_migrate *m), pid_t *pid,
                        char *err, size_t errlen)
{
    fflush(NULL);
    pid_t p = fork();
    if (p < 0) {
        snprintf(err, errlen, "cannot fork: %s", strerror(errno));
        return PGCDC_ERR;
    }
    if (p == 0) {
        /* SIGKILL, not SIGTERM: both children are kill -9 safe, and a restarted migrate
         * must find state.dir's lock and the target free at once. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(1);
        pgcdc_stop_requested = 0;
        pgcdc_install_stop_signals();
        _exit(fn(m));
    }
    *pid = p;
    return PGCDC_OK;
}

int pgcdc_migrate_stop(pid_t pid)
{
    int st;
    if (pid <= 0)
        return -1;
    kill(pid, SIGTERM);
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int child_exit(int rc, const char *err)
{
    if (rc < 0) {
        pgcdc_log(PGCDC_LOG_ERROR, err, NULL);
        return rc == PGCDC_ERR_CONFIG ? PGCDC_EXIT_USAGE : PGCDC_EXIT_RUNTIME;
    }
    return PGCDC_EXIT_OK;
}

int pgcdc_migrate_capture_main(struct pgcdc_migrate *m)
{
    char err[2048] = "";
    int rc = pgcdc_stream_run(&m->cfg, 0, false, err, sizeof(err));
    return child_exit(rc, err);
}

/* Following; else up to m->point, or (load) up to the end migrate publishes in bulk_end. */
static int replay_main(struct pgcdc_migrate *m, bool follow, bool load)
{
    struct pgcdc_replay_opts o = {.input = m->data_dir,
                                  .target = m->target,
                                  .follow = follow,
                                  .end_lsn = follow || load ? 0 : m->point,
                                  .end_later = load ? m->bulk_end : NULL,
                                  .batch_rows = 5000,
                                  .group_rows = 64,
                                  /* The bulk load keeps up with capture's writes. */
                                  .poll_ms = load ? 10 : 150,
                                  .read_ahead = load,
                                  .missing_rows_warn =
                                      m->cfg.replay_missing_rows == PGCDC_MISSING_ROWS_WARN,
                                  .caught_up = m->caught_up,
                                  /* Keys right after each table's bulk load. */
                                  .table_loaded = follow ? NULL : pgcdc_migrate_keys_build,
                                  .table_loaded_ctx = m,
                                  .progress = m->progress};
    char err[2048] = "";
    int rc = pgcdc_replay_run(&o, err, sizeof(err));
    return child_exit(rc, err);
}

int pgcdc_migrate_replay_load_main(struct pgcdc_migrate *m)
{
    return replay_main(m, false, true);
}

int pgcdc_migrate_replay_bulk_main(struct pgcdc_migrate *m)
{
    return replay_main(m, false, false);
}

int pgcdc_migrate_replay_follow_main(struct pgcdc_migrate *m)
{
    return replay_main(m, true, false);
}
