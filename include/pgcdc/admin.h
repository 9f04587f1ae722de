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

/* action: "create", "drop" or "status". */
int pgcdc_admin_slot(const struct pgcdc_config *cfg, const char *action, char *err,
                     size_t errlen);

#endif
