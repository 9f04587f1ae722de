/*
 * s3_bucket.h — what the S3 sink asks of its bucket besides objects: read and write
 * PREFIX/_pgcdc/position.json, delete the objects of flushes position.json does not
 * cover (orphans of a crash mid-flush), keep the slot record in PREFIX/_pgcdc/slot, and
 * `check`'s round trip (HEAD, LIST, PUT, DELETE).
 *
 * Each call blocks on its client until the store answers (retrying what is worth
 * retrying, see s3_client.h): the uploader thread calls them with its own client, the main
 * thread only where waiting is expected (start-up, after START_REPLICATION, check).
 */
#ifndef PGCDC_S3_BUCKET_H
#define PGCDC_S3_BUCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/common.h"
#include "pgcdc/config.h"
#include "pgcdc/s3_client.h"
#include "pgcdc/s3_layout.h"

/*
 * Read position.json into *pos ({0, 0} when there is none yet). retry_ms as in
 * pgcdc_s3_call. Returns 0, PGCDC_ERR (the store refused: no bucket, credentials...; or
 * the file is damaged), PGCDC_ERR_RETRY or PGCDC_STOP.
 */
int pgcdc_s3_bucket_read_position(struct pgcdc_s3 *s3, struct pgcdc_s3_position *pos,
                                  int64_t retry_ms, char *err, size_t errlen);

/* Write position.json (after every object of flush pos->seq is stored). */
int pgcdc_s3_bucket_write_position(struct pgcdc_s3 *s3, const struct pgcdc_s3_position *pos,
                                   int64_t retry_ms, char *err, size_t errlen);

/*
 * Delete every object of ours whose flush number is above seq, in every table folder under
 * the prefix. *deleted counts them. Same returns as above.
 */
int pgcdc_s3_bucket_delete_after(struct pgcdc_s3 *s3, uint32_t seq, int64_t retry_ms,
                                 unsigned *deleted, char *err, size_t errlen);

/* GET (into out; *found false on 404) or PUT a small object under PREFIX/_pgcdc/. */
int pgcdc_s3_bucket_get_meta(struct pgcdc_s3 *s3, const char *name, struct pgcdc_buf *out,
                             bool *found, int64_t retry_ms, char *err, size_t errlen);
int pgcdc_s3_bucket_put_meta(struct pgcdc_s3 *s3, const char *name, const void *body, size_t len,
                             int64_t retry_ms, char *err, size_t errlen);

/*
 * `pgcdc check` for sink.type = s3: one "PASS|FAIL s3_...: ..." line per step on stdout
 * (HEAD on the bucket, a LIST, a PUT and a DELETE of a probe under PREFIX/_pgcdc/), each
 * FAIL with its fix. Returns the number of FAIL lines, or PGCDC_ERR_CONFIG when the
 * settings themselves are wrong (also printed as a FAIL line).
 */
int pgcdc_s3_bucket_check(const struct pgcdc_config *cfg);

#endif
