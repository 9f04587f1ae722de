/*
 * slot.h — the replication slot and the session on it: find it, decide whether it must be
 * (re)created, create it, and start streaming from it with wal2json's options.
 *
 * state.dir/slot records that this slot's stream is ours (and any snapshot complete), so a
 * later start can tell a slot dropped under us from a new installation.
 */
#ifndef PGCDC_SLOT_H
#define PGCDC_SLOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/config.h"

struct pgcdc_repl;

struct pgcdc_slot {
    const struct pgcdc_config *cfg;
    char statefile[4096]; /* state.dir/slot */
    /* wal2json >= 2.6 keeps NaN/Infinity with numeric-data-types-as-string: -1 unknown
     * yet, 0 the plugin is older, 1 in use. Snapshot and stream must agree on it. */
    int numeric_strings;
};

void pgcdc_slot_init(struct pgcdc_slot *sl, const struct pgcdc_config *cfg);

/*
 * Find source.slot over repl and decide: *fresh is set when it must be created by the
 * caller (it does not exist, or it exists without the completed snapshot snapshot.mode
 * asks for: then it has been dropped here). sink_resume_lsn is what the sink already holds
 * (0: nothing known). Returns 0, or PGCDC_ERR with the way out in err.
 */
int pgcdc_slot_find(struct pgcdc_slot *sl, struct pgcdc_repl *repl, uint64_t sink_resume_lsn,
                    bool *fresh, char *err, size_t errlen);

/* Create source.slot without exporting a snapshot (snapshot.mode = never). */
int pgcdc_slot_create(struct pgcdc_slot *sl, struct pgcdc_repl *repl, char *err, size_t errlen);

/*
 * START_REPLICATION on source.slot from startpos with wal2json's options: table patterns
 * when they fit its syntax, numeric-data-types-as-string when the plugin takes it (learnt
 * here on first use). Returns 0 or a negative code with err set.
 */
int pgcdc_slot_start(struct pgcdc_slot *sl, struct pgcdc_repl *repl, uint64_t startpos, char *err,
                     size_t errlen);

/* Record in state.dir that this slot's stream is ours (once; later calls do nothing). */
int pgcdc_slot_mark_streamed(struct pgcdc_slot *sl, char *err, size_t errlen);

/* Remember whether wal2json takes numeric-data-types-as-string; warn when it does not. */
void pgcdc_slot_note_numeric_strings(struct pgcdc_slot *sl, bool supported);

#endif
