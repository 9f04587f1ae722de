/*
 * migrate_restart.c — a migrate stopped while pg_dump ran (kill -9, a reboot) leaves DIR
 * with capture state but no complete schema dump: the slot's exported snapshot died with
 * the session that exported it, so no later pg_dump can see the moment the capture
 * started from. Nothing reached the target before the dump was complete (pre-data and
 * the marker are restored only after it), so starting over loses nothing, provided the
 * slot to drop is this migrate's own (state.dir/slot, written by slot.c, records it).
 */
#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pgcdc/common.h"
#include "pgcdc/errors.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/migrate.h"
#include "pgcdc/slot.h"

/* How long the killed run's processes and walsender may take to let go of DIR and slot. */
#define LET_GO_MS 30000

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* Remove path (a file, or a directory and all below it); gone already is fine. */
static int remove_tree(const char *path, char *err, size_t errlen)
{
    if (nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove %.900s: %s", path, strerror(errno));
        return PGCDC_ERR;
    }
    return PGCDC_OK;
}

/* state.dir's lock, waiting for the killed run's capture to have exited. */
static int lock_state(struct pgcdc_migrate *m, int *lockfd, char *err, size_t errlen)
{
    int64_t until = pgcdc_mono_ms() + LET_GO_MS;
    for (;;) {
        int rc = pgcdc_slot_lock_state_dir(m->state_dir, lockfd, err, errlen);
        if (rc != PGCDC_ERR || pgcdc_mono_ms() > until || pgcdc_stop_requested)
            return rc;
        poll(NULL, 0, 100);
    }
}

/*
 * Whether source.slot may be dropped as ours, and drop it. rec is state.dir's record (or
 * absent). Returns 0 (dropped, or there is none), PGCDC_ERR_CONFIG when it is not ours or
 * stays in use (err says so), or another negative code.
 */
static int drop_own_slot(struct pgcdc_migrate *m, const struct pgcdc_slot_record *rec, char *err,
                         size_t errlen)
{
    const char *slot = m->cfg.source_slot;
    char a[PGCDC_LSN_BUFLEN];
    PGconn *c = pgcdc_migrate_connect(m->source);
    PGresult *r = NULL;
    int rc = PGCDC_OK;
    int64_t until = pgcdc_mono_ms() + LET_GO_MS;
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to the source: %s", PQerrorMessage(c));
        pgcdc_log_one_line(err);
        rc = pgcdc_errors_connect(c);
        goto out;
    }
    const char *p[1] = {slot};
    for (;;) {
        PQclear(r);
        r = PQexecParams(c,
                         "SELECT active, active_pid, confirmed_flush_lsn, plugin FROM "
                         "pg_catalog.pg_replication_slots WHERE slot_name = $1",
                         1, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(err, errlen, "cannot read the source's slots: %s", PQresultErrorMessage(r));
            pgcdc_log_one_line(err);
            rc = pgcdc_errors_pg(c, r, PGCDC_ERRCTX_SOURCE);
            goto out;
        }
        if (PQntuples(r) == 0)
            goto out; /* none: nothing to drop */
        uint64_t confirmed = 0;
        pgcdc_lsn_parse_str(PQgetvalue(r, 0, 2), &confirmed);
        /* A slot's confirmed position starts at its consistent point and never goes back:
         * one below the recorded point was made before ours, by someone else. */
        if (!rec->present || strcmp(PQgetvalue(r, 0, 3), "wal2json") != 0 ||
            confirmed < rec->created_lsn) {
            snprintf(err, errlen,
                     "--dir %s has capture state but no complete schema dump (a migrate "
                     "stopped while pg_dump ran), and replication slot \"%s\" on the source is "
                     "not the one %s/slot records (%s): migrate will not drop it; pick another "
                     "source.slot, or drop that slot yourself if it is unused, and start "
                     "with an empty DIR",
                     m->dir, slot, m->state_dir,
                     rec->present ? pgcdc_lsn_format(rec->created_lsn, a) : "no record");
            rc = PGCDC_ERR_CONFIG;
            goto out;
        }
        if (PQgetvalue(r, 0, 0)[0] != 't')
            break;
        if (pgcdc_mono_ms() > until || pgcdc_stop_requested) {
            snprintf(err, errlen,
                     "replication slot \"%s\" of the migrate stopped while pg_dump ran is still "
                     "in use by pid %s: stop that process and run migrate again",
                     slot, PQgetvalue(r, 0, 1));
            rc = PGCDC_ERR_CONFIG;
            goto out;
        }
        poll(NULL, 0, 100);
    }
    PQclear(r);
    r = PQexecParams(c, "SELECT pg_catalog.pg_drop_replication_slot($1)", 1, NULL, p, NULL, NULL,
                     0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "cannot drop replication slot \"%s\": %s", slot,
                 PQresultErrorMessage(r));
        pgcdc_log_one_line(err);
        rc = pgcdc_errors_pg(c, r, PGCDC_ERRCTX_SOURCE);
    }
out:
    PQclear(r);
    PQfinish(c);
    return rc;
}

int pgcdc_migrate_discard_cut_dump(struct pgcdc_migrate *m, char *err, size_t errlen)
{
    if (m->phase[0]) {
        snprintf(err, errlen,
                 "--dir %s has no complete schema dump (no DIR/point), but the target already "
                 "holds this migration's marker (phase %s): restore DIR from a backup, or "
                 "start over with an empty target and an empty DIR (drop the slot with pgcdc "
                 "slot drop)",
                 m->dir, m->phase);
        return PGCDC_ERR_CONFIG;
    }
    int lockfd = -1, rc;
    if ((rc = lock_state(m, &lockfd, err, errlen)) < 0)
        return rc;
    struct pgcdc_slot sl;
    pgcdc_slot_init(&sl, &m->cfg);
    if ((rc = pgcdc_slot_read_record(&sl, err, errlen)) < 0)
        goto out;
    if (sl.rec.present &&
        (strcmp(sl.rec.slot, m->cfg.source_slot) != 0 || strcmp(sl.rec.sysid, m->sysid) != 0)) {
        snprintf(err, errlen,
                 "--dir %s has capture state but no complete schema dump (a migrate stopped "
                 "while pg_dump ran), and it records slot \"%s\" on system_identifier %s, not "
                 "source.slot \"%s\" on this source (%s): run migrate with that slot and "
                 "source, or drop that slot and start with an empty DIR",
                 m->dir, sl.rec.slot, sl.rec.sysid[0] ? sl.rec.sysid : "unknown",
                 m->cfg.source_slot, m->sysid);
        rc = PGCDC_ERR_CONFIG;
        goto out;
    }
    if ((rc = drop_own_slot(m, &sl.rec, err, errlen)) < 0)
        goto out;
    static const char *const gone[] = {"data", "state", "dump.fc", "dump.fc.tmp", "dump.failed"};
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++) {
        char path[4400];
        snprintf(path, sizeof(path), "%s/%s", m->dir_abs, gone[i]);
        if ((rc = remove_tree(path, err, errlen)) < 0)
            goto out;
    }
    pgcdc_log(PGCDC_LOG_WARN,
              "migrate: the last run stopped while pg_dump ran, before anything reached the "
              "target; dropped its slot and DIR's capture state, starting over",
              "slot", m->cfg.source_slot, "dir", m->dir_abs, NULL);
out:
    if (lockfd >= 0)
        close(lockfd);
    return rc;
}
