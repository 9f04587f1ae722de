/*
 * migrate_check.c — what `pgcdc migrate` checks on the target before it starts: that it
 * can be reached, that pgcdc's schema can be made there, that its version can take the
 * source's dump; and whether session_replication_role can be set (reported: without it,
 * what would change rows behind replay's back is held back until cutover). The source gets
 * `pgcdc check`'s own checks (admin.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "pgcdc/catalog.h"
#include "pgcdc/common.h"
#include "pgcdc/errors.h"
#include "pgcdc/log.h"
#include "pgcdc/migrate.h"

int pgcdc_migrate_check_target(struct pgcdc_migrate *m, char *err, size_t errlen)
{
    char v[256];
    char *src = NULL;
    int rc = pgcdc_migrate_query1(m->source, "SELECT current_setting('server_version_num')", NULL,
                                  &src, err, errlen);
    if (rc < 0)
        return rc;
    int source_ver = src ? atoi(src) : 0;
    free(src);
    PGconn *c = pgcdc_migrate_connect(m->target);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to the target: %s", PQerrorMessage(c));
        pgcdc_log_one_line(err);
        rc = pgcdc_errors_connect(c);
        goto out;
    }
    /* pg_dump's output loads into its own version or newer, not reliably into older. */
    int ver = PQserverVersion(c);
    if (ver < 120000 || ver / 10000 < source_ver / 10000) {
        snprintf(err, errlen,
                 "the target is PostgreSQL %d, older than %s %d: a dump loads reliably only "
                 "into its own major version or a newer one; migrate into PostgreSQL %d or "
                 "later",
                 ver / 10000, ver < 120000 ? "pgcdc's minimum," : "the source,",
                 ver < 120000 ? 12 : source_ver / 10000, ver < 120000 ? 12 : source_ver / 10000);
        rc = PGCDC_ERR_CONFIG;
        goto out;
    }
    if (pgcdc_catalog_value(c,
                            "SELECT CASE WHEN to_regnamespace('pgcdc') IS NULL THEN "
                            "has_database_privilege(current_database(), 'CREATE') ELSE "
                            "has_schema_privilege('pgcdc', 'CREATE') END",
                            v, sizeof(v), err, errlen) < 0 ||
        strcmp(v, "t") != 0) {
        snprintf(err, errlen,
                 "the target role %s may not create the schema pgcdc (or tables in it), where "
                 "migrate records its marker and replay's position: GRANT CREATE ON DATABASE "
                 "%s TO %s, or use the database's owner",
                 PQuser(c), PQdb(c), PQuser(c));
        rc = PGCDC_ERR_CONFIG;
        goto out;
    }
    PQclear(PQexec(c, "BEGIN"));
    bool replica = pgcdc_migrate_exec(c, "SET LOCAL session_replication_role = replica", 0, NULL, v,
                                      sizeof(v)) == 0;
    PQclear(PQexec(c, "ROLLBACK"));
    pgcdc_log(PGCDC_LOG_INFO,
              replica ? "migrate: the target role may set session_replication_role"
                      : "migrate: the target role cannot set session_replication_role (as on "
                        "Neon): foreign keys, triggers and GENERATED ALWAYS columns are held "
                        "back until cutover",
              "target_version", PQparameterStatus(c, "server_version"), NULL);
out:
    PQfinish(c);
    return rc;
}
