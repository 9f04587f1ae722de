/*
 * slot.h — the replication slot and the session on it: find it, decide whether it must be
 * (re)created, create it, and start streaming from it with wal2json's options.
 *
 * state.dir/slot records the slot pgcdc created (or was told to use): its name, the
 * server's system_identifier and the slot's consistent point, and how far its life has
 * got. pgcdc drops a slot only when that record says pgcdc created it for a snapshot that
 * never became durable; a slot state.dir has no record of is never dropped (README,
 * "Choices").
 */
#ifndef PGCDC_SLOT_H
#define PGCDC_SLOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pgcdc/config.h"

struct pgcdc_repl;
struct pgcdc_slot_info;

/* How far the recorded slot's life has got. */
enum pgcdc_slot_state {
    PGCDC_SLOT_SNAPSHOTTING = 1, /* run created it; its snapshot is not durable yet */
    PGCDC_SLOT_CREATED,          /* `pgcdc slot create` made it; nothing streamed yet */
    PGCDC_SLOT_STREAMING,        /* streamed from (after any snapshot) */
};

/* The content of state.dir/slot. */
struct pgcdc_slot_record {
    bool present;
    char slot[128];
    char sysid[32];       /* the server's system_identifier; "" unknown (an older pgcdc) */
    uint64_t created_lsn; /* consistent point at creation (position when adopted); 0 unknown */
    enum pgcdc_slot_state state;
    /* Not in the file: state.dir/snapshot records the snapshot's tables, so one cut short
     * resumes table by table on this slot instead of recreating it. */
    bool resumable;
};

/* What pgcdc_slot_decide tells the caller to do with source.slot. */
enum pgcdc_slot_action {
    PGCDC_SLOT_USE = 1, /* stream from it */
    PGCDC_SLOT_CREATE,  /* it does not exist: create it (with the snapshot, unless never) */
    PGCDC_SLOT_RECREATE /* ours, its snapshot cut short: drop it, then create it again */
};

struct pgcdc_slot {
    const struct pgcdc_config *cfg;
    char statefile[4096]; /* state.dir/slot */
    struct pgcdc_slot_record rec; /* as read by pgcdc_slot_find, and as written since */
    char sysid[32];               /* the server's, learnt by pgcdc_slot_find */
    uint64_t server_xlogpos;      /* IDENTIFY_SYSTEM's xlogpos then: `run --once`'s target */
    /* The slot's confirmed_flush_lsn when found (0 for a slot created since): the flush
     * position reported to the server never goes below it. */
    uint64_t server_confirmed;
    /* wal2json >= 2.6 keeps NaN/Infinity with numeric-data-types-as-string: -1 unknown
     * yet, 0 the plugin is older, 1 in use. Snapshot and stream must agree on it. */
    int numeric_strings;
};

void pgcdc_slot_init(struct pgcdc_slot *sl, const struct pgcdc_config *cfg);

/*
 * The slot decision, pure: given state.dir's record, the server's slot (info) and
 * system_identifier, and what the sink already holds (sink_resume_lsn, 0: nothing known),
 * say what to do in *act. Returns 0; PGCDC_ERR_CONFIG (exit 2) when the slot and state.dir
 * disagree in a way only the operator can settle (a slot with no record, another server,
 * another slot), PGCDC_ERR (exit 1) when the recorded slot is gone, PGCDC_ERR_BUSY when
 * the slot to recreate is held; err names the ways out.
 */
int pgcdc_slot_decide(const struct pgcdc_config *cfg, const struct pgcdc_slot_record *rec,
                      const struct pgcdc_slot_info *info, const char *sysid,
                      uint64_t sink_resume_lsn, enum pgcdc_slot_action *act, char *err,
                      size_t errlen);

/*
 * Find source.slot over repl, read state.dir's record and decide (pgcdc_slot_decide):
 * *fresh is set when the caller must create it (it does not exist, or it was ours with a
 * snapshot cut short: then it has been dropped here). Returns 0 or a negative code with
 * the way out in err.
 */
int pgcdc_slot_find(struct pgcdc_slot *sl, struct pgcdc_repl *repl, uint64_t sink_resume_lsn,
                    bool *fresh, char *err, size_t errlen);

/*
 * Create source.slot over repl, exporting its snapshot into snapshot_name (snaplen bytes)
 * when that is non-NULL, and record it in state.dir with state before returning, so a
 * crash right after still finds it ours. *consistent gets the slot's consistent point.
 * The exported snapshot stays usable: recording runs no command on repl.
 */
int pgcdc_slot_create(struct pgcdc_slot *sl, struct pgcdc_repl *repl, char *snapshot_name,
                      size_t snaplen, enum pgcdc_slot_state state, uint64_t *consistent, char *err,
                      size_t errlen);

/* Read state.dir/slot into sl->rec (absent: rec.present false). Returns 0 or PGCDC_ERR_CONFIG. */
int pgcdc_slot_read_record(struct pgcdc_slot *sl, char *err, size_t errlen);

/*
 * The server's system_identifier into sl->sysid and its WAL position into
 * sl->server_xlogpos (IDENTIFY_SYSTEM over repl).
 */
int pgcdc_slot_identify(struct pgcdc_slot *sl, struct pgcdc_repl *repl, char *err, size_t errlen);

/* Remove state.dir's record (after the slot it names was dropped on purpose). */
int pgcdc_slot_forget(struct pgcdc_slot *sl, char *err, size_t errlen);

/*
 * The flush position to report to the server: what is durable, but never below the
 * slot's confirmed_flush_lsn when it was found (a file checkpoint may trail an idle
 * confirmation; the server already holds that position, and must not see it go back).
 */
uint64_t pgcdc_slot_flush_to_report(const struct pgcdc_slot *sl, uint64_t durable);

/*
 * START_REPLICATION on source.slot from startpos with wal2json's options: table patterns
 * when they fit its syntax, numeric-data-types-as-string when the plugin takes it (learnt
 * here on first use). Returns 0 or a negative code with err set.
 */
int pgcdc_slot_start(struct pgcdc_slot *sl, struct pgcdc_repl *repl, uint64_t startpos, char *err,
                     size_t errlen);

/* Record in state.dir that this slot is being streamed from (once; later calls do nothing). */
int pgcdc_slot_mark_streamed(struct pgcdc_slot *sl, char *err, size_t errlen);

/* Remember whether wal2json takes numeric-data-types-as-string; warn when it does not. */
void pgcdc_slot_note_numeric_strings(struct pgcdc_slot *sl, bool supported);

/*
 * Create state.dir if needed and take its lock (flock on state.dir/lock, which holds the
 * holder's pid), so two runs never share one state.dir. *lockfd is held until exit. A
 * second pgcdc is PGCDC_ERR naming its pid; an unusable directory PGCDC_ERR_CONFIG.
 */
int pgcdc_slot_lock_state_dir(const char *dir, int *lockfd, char *err, size_t errlen);

/* fsync the directory of path (a state.dir record), so a rename or unlink in it survives a
 * crash. Returns 0, or -1 with errno. */
int pgcdc_slot_sync_dir_of(const char *path);

/*
 * Make fp (open for writing on tmp, `written` false when a write to it already failed)
 * durable and put it in place of path: flush, fsync, close, rename, fsync the directory.
 * Closes fp in every case. Returns 0, or -1 with errno.
 */
int pgcdc_slot_replace_file(FILE *fp, bool written, const char *tmp, const char *path);

#endif
