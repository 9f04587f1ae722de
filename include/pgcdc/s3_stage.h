/*
 * s3_stage.h — one flush of the S3 sink, staged on local disk, and its objects built one
 * at a time.
 *
 * Events are appended uncompressed, in arrival order, to an unlinked temporary file (the
 * data file); a second one (the index) lists runs of consecutive events of one table as
 * (offset, length, table) extents. Memory holds only a write buffer for each file and one
 * small entry per table, so RSS does not grow with sink.s3.flush_bytes nor with the number
 * of events; the index is what grows, on disk.
 *
 * An object is built by walking the index for one table and streaming its extents
 * through zlib (gzip) into a third temporary file, hashing the output (MD5 for
 * Content-MD5, SHA-256 for x-amz-content-sha256) on the way, so the upload knows its length
 * and checksums before it starts and can be retried from the file.
 *
 * The stage knows where the last transaction ended: cut drops what the open transaction
 * staged. A stage is filled by one thread and, once sealed, read by another (the sink's
 * uploader); nothing here locks.
 */
#ifndef PGCDC_S3_STAGE_H
#define PGCDC_S3_STAGE_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/common.h"

struct pgcdc_s3_stage_table {
    char *schema, *table;      /* owned */
    uint64_t first_commit_lsn; /* of the first transaction that staged one of its events */
    uint64_t bytes;            /* staged, the open transaction included */
    uint64_t bytes_committed;  /* staged by complete transactions */
    bool touched;              /* in the open transaction's touched list */
};

struct pgcdc_s3_stage {
    int data_fd, idx_fd;
    struct pgcdc_buf dbuf, ibuf; /* bytes not yet written to each file */
    uint64_t data_len;           /* the data file's logical length (buffer included) */
    uint64_t idx_len;            /* same for the index, in bytes */
    /* The run being extended: consecutive events of one table. len 0: none. */
    uint64_t run_off;
    uint32_t run_len, run_table;
    /* Where the last complete transaction ended. */
    uint64_t commit_data_len, commit_idx_len;

    struct pgcdc_s3_stage_table *tables; /* by id (first seen first) */
    uint32_t ntables, tables_cap;
    uint32_t *slots; /* hash of "schema\0table" -> id + 1 (0: empty) */
    uint32_t nslots;
    uint32_t last; /* id + 1 of the last table written (0: none), to skip the lookup */
    uint32_t *touched;
    uint32_t ntouched, touched_cap;
};

/* Create the two unlinked files in dir. Returns 0 or a negative code (errors.c). */
int pgcdc_s3_stage_init(struct pgcdc_s3_stage *st, const char *dir, char *err, size_t errlen);
void pgcdc_s3_stage_free(struct pgcdc_s3_stage *st);

/* Empty it for the next flush (files truncated, tables forgotten). */
int pgcdc_s3_stage_reset(struct pgcdc_s3_stage *st, char *err, size_t errlen);

/* Append one event (its bytes, then '\n') of schema.table in a transaction that commits at
 * commit_lsn. Returns 0 or a negative code. */
int pgcdc_s3_stage_append(struct pgcdc_s3_stage *st, const char *schema, const char *table,
                          uint64_t commit_lsn, const char *value, size_t len, char *err,
                          size_t errlen);

/* The open transaction is complete: what it staged is part of the flush. */
void pgcdc_s3_stage_commit(struct pgcdc_s3_stage *st);

/* Drop what the open transaction staged. Returns 0 or a negative code. */
int pgcdc_s3_stage_cut(struct pgcdc_s3_stage *st, char *err, size_t errlen);

/* Bytes staged by complete transactions. */
static inline uint64_t pgcdc_s3_stage_committed(const struct pgcdc_s3_stage *st)
{
    return st->commit_data_len;
}

/* Write the buffers out; the files then hold everything committed. */
int pgcdc_s3_stage_seal(struct pgcdc_s3_stage *st, char *err, size_t errlen);

/* One built object, in out_fd from offset 0. */
struct pgcdc_s3_object {
    uint64_t len;
    unsigned char md5[16];
    unsigned char sha256[32];
};

/*
 * Build table id's object of a sealed stage into out_fd (truncated first): its committed
 * events, gzip'd when gzip. Gives up (PGCDC_STOP) once *abort is set. Returns 0 or a
 * negative code.
 */
int pgcdc_s3_stage_build(const struct pgcdc_s3_stage *st, uint32_t id, bool gzip, int out_fd,
                         struct pgcdc_s3_object *obj, volatile sig_atomic_t *abort, char *err,
                         size_t errlen);

/* An unlinked temporary file in dir, for out_fd. Returns the fd, or -1 with err set. */
int pgcdc_s3_stage_tmpfile(const char *dir, char *err, size_t errlen);

#endif
