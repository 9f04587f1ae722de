/*
 * snapshot_state.h — state.dir/snapshot: which tables' snapshots are done, which are still
 * owed and at which point, and the table patterns the last run captured (so a table that
 * a later run selects anew gets its snapshot).
 *
 * A table (by the name its events carry) is owed a snapshot from the moment it is
 * recorded "pending" until its rows are durable in the sink and it is recorded "done".
 * Each write is tmp + fsync + rename + directory fsync.
 */
#ifndef PGCDC_SNAPSHOT_STATE_H
#define PGCDC_SNAPSHOT_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/config.h"

#define PGCDC_SNAPSTATE_NAME_MAX 256

struct pgcdc_snapstate_table {
    char schema[PGCDC_SNAPSTATE_NAME_MAX], name[PGCDC_SNAPSTATE_NAME_MAX]; /* reported */
    bool done;
    /* Asked for again (`pgcdc snapshot`) while captured: its changes keep flowing, and the
     * new rows come on top of them (nothing is dropped for it). */
    bool again;
    uint64_t point; /* the snapshot point its rows are (or will be) read at */
    /* The first point this table's rows began to be written at (0: none yet). A sink
     * that cannot take back a cut snapshot (Kafka) keeps the table's changes from there
     * on, so that a row deleted since still gets its tombstone. */
    uint64_t first;
};

struct pgcdc_snapstate {
    char path[4096];
    bool present;            /* the file existed */
    bool have_patterns;      /* it records the patterns of the run that wrote it */
    char *include, *exclude; /* those patterns (NULL: all / none) */
    struct pgcdc_snapstate_table *t;
    size_t n, cap;
};

/* Read state_dir/snapshot (absent: st->present false). Returns 0 or PGCDC_ERR_CONFIG. */
int pgcdc_snapstate_load(struct pgcdc_snapstate *st, const char *state_dir, char *err,
                         size_t errlen);
int pgcdc_snapstate_save(struct pgcdc_snapstate *st, char *err, size_t errlen);
void pgcdc_snapstate_free(struct pgcdc_snapstate *st);

/* The table's entry, or NULL. */
struct pgcdc_snapstate_table *pgcdc_snapstate_find(struct pgcdc_snapstate *st, const char *schema,
                                                   const char *name);
/* The table's entry, added (pending, at point) when absent. NULL on ENOMEM. */
struct pgcdc_snapstate_table *pgcdc_snapstate_add(struct pgcdc_snapstate *st, const char *schema,
                                                  const char *name, uint64_t point);
/* Record cfg's patterns as the captured ones. Returns 0 or PGCDC_ERR (ENOMEM). */
int pgcdc_snapstate_set_patterns(struct pgcdc_snapstate *st, const struct pgcdc_config *cfg);
/* Whether the recorded patterns selected schema.name (true when none are recorded). */
bool pgcdc_snapstate_was_selected(const struct pgcdc_snapstate *st, const struct pgcdc_config *cfg,
                                  const char *schema, const char *name);
/* Tables recorded pending. */
size_t pgcdc_snapstate_pending(const struct pgcdc_snapstate *st);

/*
 * Whether the file sink's last event (in dir, recovered) is the last snapshot row of
 * schema.table at point: the table's rows became durable just before a crash that came
 * before "done" was recorded (nothing is written between the two).
 */
bool pgcdc_snapstate_sink_ends_with(const char *dir, const char *schema, const char *table,
                                    uint64_t point);

#endif
