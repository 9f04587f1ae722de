/*
 * deadletter.h — events a sink's destination refused for good, kept on local disk so
 * that nothing is lost and streaming goes on (sink.kafka.on_permanent_error = dead_letter).
 *
 * One directory, <state.dir>/dead-letter/, one file per UTC day, <YYYY-MM-DD>.jsonl, one
 * JSON object per line:
 *     {"reason":"...","topic":"...","key":<key JSON or null>,"lsn":N,"commit_lsn":N,
 *      "size":N,"event":<the event JSON, or null for a tombstone>}
 * lsn and commit_lsn are decimal integers, as in the events' source block. A write returns
 * only once the line is on disk (fsync, and the directory's fsync when the file is new), so
 * the caller may count the event as durable: the transaction holding it can be confirmed.
 * A line torn by a crash is cut off when the file is next opened; its transaction was not
 * confirmed, so the server sends it again and it is written again.
 */
#ifndef PGCDC_DEADLETTER_H
#define PGCDC_DEADLETTER_H

#include <stddef.h>
#include <stdint.h>

struct pgcdc_deadletter;

/* One refused event. All pointers are borrowed for the duration of the call. */
struct pgcdc_deadletter_entry {
    const char *reason; /* one line of text */
    const char *topic;  /* where it was going (topic, URL, ...) */
    const char *key;    /* JSON, or NULL */
    size_t key_len;
    const char *event; /* the event JSON, or NULL (a tombstone) */
    size_t event_len;
    uint64_t lsn;
    uint64_t commit_lsn;
    size_t size; /* the size the destination refused, as the sink counted it */
};

/*
 * Create <state_dir>/dead-letter/ if needed and check that it is writable. The caller owns
 * *out and releases it with pgcdc_deadletter_close. An unusable directory is
 * PGCDC_ERR_CONFIG naming it (the settings point there).
 */
int pgcdc_deadletter_open(struct pgcdc_deadletter **out, const char *state_dir, char *err,
                          size_t errlen);

/*
 * Append one entry and make it durable. Returns 0, or the class of the failure
 * (pgcdc_errors_errno: PGCDC_ERR_RETRY for a full disk, PGCDC_ERR otherwise) with the
 * reason in err. After a failure nothing of the entry counts as written.
 */
int pgcdc_deadletter_write(struct pgcdc_deadletter *d, const struct pgcdc_deadletter_entry *e,
                           char *err, size_t errlen);

/* The directory's path (owned by d). */
const char *pgcdc_deadletter_dir(const struct pgcdc_deadletter *d);

void pgcdc_deadletter_close(struct pgcdc_deadletter *d);

#endif
