/*
 * sink_file.h — segment files in sink.file.dir, exactly once across crashes.
 *
 * Layout (names, checkpoint and .pgcdc-position formats: segdir.h): "<seq:10 digits>-<first
 * commit LSN:16 hex>.jsonl" for closed segments; the one being written ends in ".jsonl.open".
 * One event per line. Rotation happens at transaction
 * boundaries once a segment reaches sink.file.segment_bytes.
 *
 * Durability: events are buffered and written; sync writes, fdatasyncs, then records in
 * <state.dir>/checkpoint (end LSN of the last complete transaction, open segment, its
 * length at that transaction's end), overwriting the older of two CRC-checked slots in
 * place. On open, the open segment is cut back to the checkpointed length and later
 * segments are removed, and transactions ending at or before the checkpoint LSN are
 * skipped: each committed change is in the files once.
 */
#ifndef PGCDC_SINK_FILE_H
#define PGCDC_SINK_FILE_H

#include <stddef.h>

#include "pgcdc/config.h"
#include "pgcdc/sink.h"

/*
 * Open (and recover) the file sink. The caller owns *out and releases it with
 * (*out)->ops->close. Errors: PGCDC_ERR_CONFIG for an unusable directory (named, with the
 * fix), PGCDC_ERR otherwise.
 */
int pgcdc_sink_file_open(struct pgcdc_sink **out, const struct pgcdc_config *cfg, char *err,
                         size_t errlen);

#endif
