/*
 * sink_s3.h — events to an S3-compatible object store: one object per table per flush,
 * PREFIX/<schema>.<table>/<seq>-<first commit LSN>.jsonl.gz, then PREFIX/_pgcdc/position.json.
 * A transaction is acknowledged (and so confirmable) only once every object of its flush
 * and the position after it are stored (2xx, with Content-MD5 checked by the store).
 */
#ifndef PGCDC_SINK_S3_H
#define PGCDC_SINK_S3_H

#include <stddef.h>

#include "pgcdc/config.h"
#include "pgcdc/sink.h"

/*
 * Resolve the sink.s3.* settings (PGCDC_ERR_CONFIG: a bad URL, no credentials), read
 * position.json (retrying an unreachable store until stopped; PGCDC_ERR when the store
 * refuses: no bucket, bad credentials), restore state.dir/slot from the bucket's copy when
 * state.dir has none, and start the uploader thread. The caller owns *out and releases it
 * with (*out)->ops->close.
 */
int pgcdc_sink_s3_open(struct pgcdc_sink **out, const struct pgcdc_config *cfg, char *err,
                       size_t errlen);

#endif
