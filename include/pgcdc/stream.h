/*
 * stream.h — `pgcdc run`: connect, stream, sink, confirm, reconnect; until stopped.
 */
#ifndef PGCDC_STREAM_H
#define PGCDC_STREAM_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/config.h"

/*
 * Run until a stop is requested, or (end_lsn != 0) until every transaction ending at or
 * before end_lsn is durable and confirmed, or (once) until the server's position when
 * pgcdc connected is. With source.poll_interval_ms > 0 the source connections close while
 * idle between polls. Returns PGCDC_OK, PGCDC_ERR (exit 1) or PGCDC_ERR_CONFIG (exit 2)
 * with the reason in err.
 */
int pgcdc_stream_run(const struct pgcdc_config *cfg, uint64_t end_lsn, bool once, char *err,
                     size_t errlen);

#endif
