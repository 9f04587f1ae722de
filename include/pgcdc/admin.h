/*
 * admin.h — the operator's commands: `pgcdc check` (preflight) and `pgcdc slot ...`.
 * They print to stdout and return PGCDC_OK, PGCDC_ERR (exit 1) or PGCDC_ERR_CONFIG.
 */
#ifndef PGCDC_ADMIN_H
#define PGCDC_ADMIN_H

#include "pgcdc/config.h"

/*
 * One PASS/FAIL/WARN line per check, each FAIL with its fix. Never retries. Returns
 * PGCDC_ERR when any check failed.
 */
int pgcdc_admin_check(const struct pgcdc_config *cfg);

/*
 * The same checks for `pgcdc migrate`, reported through pgcdc_log (FAIL as an error with
 * its fix, WARN as a warning). Returns PGCDC_ERR_CONFIG with the first failure in err
 * when any check failed, else PGCDC_OK (or PGCDC_ERR: the source cannot be reached).
 */
int pgcdc_admin_check_source(const struct pgcdc_config *cfg, char *err, size_t errlen);

struct pg_conn;

/*
 * The room the snapshot's events need in dir (the selected tables' heap on c, times the
 * measured JSON-to-heap ratio) against dir's free space (statvfs, of its nearest existing
 * parent). msg: the estimate, and fix when it is short or close. Returns 0 when it fits,
 * 1 when close (over 70% of the free space), 2 when it does not fit, <0 with msg set.
 */
int pgcdc_admin_space(struct pg_conn *c, const struct pgcdc_config *cfg, const char *dir,
                      const char *fix, char *msg, size_t msglen);

/* action: "create", "drop" or "status". */
int pgcdc_admin_slot(const struct pgcdc_config *cfg, const char *action, char *err,
                     size_t errlen);

#endif
