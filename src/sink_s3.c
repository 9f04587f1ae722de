/*
 * sink_s3.c — events to an S3-compatible store, one object per table per flush.
 *
 * Two stages (s3_stage.h) take turns. The main thread fills one with the events of whole
 * transactions; when a flush is due (sink.s3.flush_bytes staged, sink.s3.flush_ms since its
 * first event, many transactions waiting, or a shutdown), at a transaction boundary and
 * only while the uploader is idle, it seals that stage, gives it the next flush number and
 * hands it to the uploader thread, then fills the other. The uploader:
 *   1. (once after start or after an abandoned flush) deletes every object whose flush
 *      number is above position.json's: a crashed flush's leftovers (s3_bucket.h);
 *   2. stores the slot record's copy when state.dir/slot changed;
 *   3. builds and PUTs one object per table, one at a time (compressed into a temporary
 *      file, so its length, Content-MD5 and SHA-256 are known before the upload);
 *   4. PUTs position.json {seq, end_lsn}.
 * Only then does the main thread acknowledge the flush's transactions to the tracker. A
 * crash anywhere before step 4 leaves objects above position.json's seq; the next start
 * deletes them (after START_REPLICATION: the `started` hook) before uploading anything,
 * and the server sends those transactions again, since nothing past position.json was
 * confirmed. Readers who glob the table folders therefore see every change once.
 *
 * The uploader retries what the store may fix (5xx, 429, network) with backoff for as
 * long as it takes; a refusal (403, NoSuchBucket, wrong region) stops the run (exit 1).
 * Each transaction counts one tracker message, acknowledged with its flush.
 */
#include "pgcdc/sink_s3.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pgcdc/common.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/s3_bucket.h"
#include "pgcdc/s3_client.h"
#include "pgcdc/s3_conf.h"
#include "pgcdc/s3_layout.h"
#include "pgcdc/s3_stage.h"
#include "pgcdc/txn_track.h"

/* A flush is due with this many transactions waiting: the tracker's ring must not fill. */
#define FLUSH_TXNS 16384
#define MAIN_TIMEOUT_MS 30000    /* position, slot record, clean-up requests */
#define UPLOAD_TIMEOUT_MS 600000 /* one object, however large */
#define SLOT_CHECK_MS 1000       /* how often state.dir/slot is looked at */

struct batch {
    struct pgcdc_s3_stage st;
    uint32_t seq;
    uint64_t first_handle, last_handle; /* tracker handles of its transactions */
    uint64_t end_lsn;                   /* end of its last transaction */
    uint32_t ntxn;                      /* transactions that staged an event */
    int64_t first_ms;                   /* when its first event came (0: none yet) */
    bool clean_first;                   /* the uploader deletes orphans before it */
    struct pgcdc_buf slot_rec;          /* the slot record to store first (len 0: none) */
};

struct s3_sink {
    struct pgcdc_sink base;
    const struct pgcdc_config *cfg;
    struct pgcdc_s3_target tgt;
    struct pgcdc_s3 main_s3; /* the main thread's client */
    bool gzip;

    struct batch b[2];
    int fill; /* the batch being filled; the other is idle or the uploader's */

    bool in_txn, txn_wrote, txn_cut;
    uint64_t txn_handle, txn_commit_lsn;

    struct pgcdc_s3_position pos; /* what position.json says (as far as we know) */
    uint32_t next_seq;
    bool cleaned; /* orphans removed since start or since the last abandoned flush */

    char slot_path[4096];
    struct pgcdc_buf slot_stored; /* the slot record as stored in the bucket */
    int64_t slot_checked_ms;

    /* The uploader. job: the batch it works on (-1: none); done once it finished. */
    pthread_t th;
    bool th_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int job;
    bool done, quit;
    int job_rc;
    char job_err[1024];
    volatile sig_atomic_t abort;
    struct pgcdc_s3 up_s3; /* the uploader's client */
    int obj_fd;
    int failed_rc; /* a flush failed: every later call returns it, with failed_err */
    char failed_err[1024];
};

static struct batch *filling(struct s3_sink *k)
{
    return &k->b[k->fill];
}

/* ---- The uploader thread ---- */

static int put_object(struct s3_sink *k, struct batch *b, uint32_t id, char *err, size_t errlen)
{
    const struct pgcdc_s3_stage_table *t = &b->st.tables[id];
    char folder[1024], key[PGCDC_S3_KEY_MAX], sha[65], md5[25];
    struct pgcdc_s3_object obj;
    if (pgcdc_s3_layout_folder(folder, sizeof(folder), t->schema, t->table) < 0 ||
        pgcdc_s3_layout_object(key, sizeof(key), k->tgt.prefix, folder, b->seq, t->first_commit_lsn,
                               k->gzip) < 0) {
        snprintf(err, errlen, "the S3 key for table %s.%s is too long", t->schema, t->table);
        return PGCDC_ERR;
    }
    int rc = pgcdc_s3_stage_build(&b->st, id, k->gzip, k->obj_fd, &obj, &k->abort, err, errlen);
    if (rc < 0)
        return rc;
    pgcdc_s3_hex(obj.sha256, 32, sha);
    pgcdc_s3_md5_b64(obj.md5, md5);
    struct pgcdc_s3_req rq = {
        .method = "PUT",
        .key = key,
        .body_fd = k->obj_fd,
        .body_len = (size_t)obj.len,
        .sha256_hex = sha,
        .md5_b64 = md5,
        .content_type = k->gzip ? "application/gzip" : "application/x-ndjson",
    };
    struct pgcdc_s3_result res;
    if ((rc = pgcdc_s3_call(&k->up_s3, &rq, -1, &res, err, errlen)) < 0)
        return rc;
    if (res.status / 100 != 2)
        return pgcdc_s3_refused(&k->up_s3, "PUT", key, &res, err, errlen);
    return PGCDC_OK;
}

static int upload(struct s3_sink *k, struct batch *b, char *err, size_t errlen)
{
    int rc;
    if (b->clean_first) {
        unsigned n = 0;
        if ((rc = pgcdc_s3_bucket_delete_after(&k->up_s3, k->pos.seq, -1, &n, err, errlen)) < 0)
            return rc;
    }
    if (b->slot_rec.len && (rc = pgcdc_s3_bucket_put_meta(&k->up_s3, "slot", b->slot_rec.data,
                                                          b->slot_rec.len, -1, err, errlen)) < 0)
        return rc;
    for (uint32_t id = 0; id < b->st.ntables; id++)
        if (b->st.tables[id].bytes_committed > 0 && (rc = put_object(k, b, id, err, errlen)) < 0)
            return rc;
    struct pgcdc_s3_position p = {.seq = b->seq, .end_lsn = b->end_lsn};
    return pgcdc_s3_bucket_write_position(&k->up_s3, &p, -1, err, errlen);
}

static void *uploader(void *arg)
{
    struct s3_sink *k = arg;
    pthread_mutex_lock(&k->mu);
    for (;;) {
        while (!k->quit && (k->job < 0 || k->done))
            pthread_cond_wait(&k->cv, &k->mu);
        if (k->quit)
            break;
        struct batch *b = &k->b[k->job];
        pthread_mutex_unlock(&k->mu);
        char err[1024] = "";
        int rc = upload(k, b, err, sizeof(err));
        pthread_mutex_lock(&k->mu);
        k->job_rc = rc;
        snprintf(k->job_err, sizeof(k->job_err), "%s", err);
        k->done = true;
        pthread_cond_broadcast(&k->cv);
    }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

/* ---- The main thread's side ---- */

/* Whether the uploader holds a batch (finished or not). */
static bool busy(struct s3_sink *k)
{
    pthread_mutex_lock(&k->mu);
    bool b = k->job >= 0;
    pthread_mutex_unlock(&k->mu);
    return b;
}

static void batch_clear(struct batch *b)
{
    b->seq = 0;
    b->first_handle = b->last_handle = b->end_lsn = 0;
    b->ntxn = 0;
    b->first_ms = 0;
    b->clean_first = false;
    pgcdc_buf_reset(&b->slot_rec);
}

static int fail(struct s3_sink *k, int rc, const char *why, char *err, size_t errlen)
{
    if (k->failed_rc == 0) {
        k->failed_rc = rc;
        snprintf(k->failed_err, sizeof(k->failed_err), "%s", why);
    }
    snprintf(err, errlen, "%s", k->failed_err);
    return k->failed_rc;
}

/* Take a finished flush back: acknowledge its transactions, or keep its failure. */
static int collect(struct s3_sink *k, char *err, size_t errlen)
{
    if (k->failed_rc)
        return fail(k, k->failed_rc, "", err, errlen);
    pthread_mutex_lock(&k->mu);
    int job = k->job, rc = k->job_rc;
    bool done = k->done;
    char why[1024];
    snprintf(why, sizeof(why), "%s", k->job_err);
    if (job >= 0 && done) {
        k->job = -1;
        k->done = false;
    }
    pthread_mutex_unlock(&k->mu);
    if (job < 0 || !done)
        return PGCDC_OK;
    if (rc < 0)
        return fail(k, rc == PGCDC_STOP ? PGCDC_ERR_RETRY : rc, why, err, errlen);
    struct batch *b = &k->b[job];
    for (uint64_t h = b->first_handle; h && h <= b->last_handle; h++)
        pgcdc_txn_track_ack(k->base.track, h, true);
    k->pos = (struct pgcdc_s3_position){.seq = b->seq, .end_lsn = b->end_lsn};
    char l[PGCDC_LSN_BUFLEN], n[24];
    snprintf(n, sizeof(n), "%u", b->seq);
    pgcdc_log(PGCDC_LOG_DEBUG, "S3 flush stored", "seq", n, "end_lsn",
              pgcdc_lsn_format(b->end_lsn, l), NULL);
    batch_clear(b);
    int r = pgcdc_s3_stage_reset(&b->st, err, errlen);
    return r < 0 ? fail(k, r, err, err, errlen) : PGCDC_OK;
}

/* Read state.dir/slot; when it differs from the bucket's copy, note it for the next flush
 * (into b) or, with b NULL, store it now. */
static int mirror_slot(struct s3_sink *k, struct batch *b, char *err, size_t errlen)
{
    char buf[4096];
    int fd = open(k->slot_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return PGCDC_OK; /* no record (yet) */
    ssize_t n = read(fd, buf, sizeof(buf));
    close(fd);
    if (n <= 0 || ((size_t)n == k->slot_stored.len && memcmp(buf, k->slot_stored.data, n) == 0))
        return PGCDC_OK;
    if (b) {
        pgcdc_buf_reset(&b->slot_rec);
        if (pgcdc_buf_append(&b->slot_rec, buf, (size_t)n) < 0)
            return PGCDC_OK; /* the next flush tries again */
    } else {
        int rc = pgcdc_s3_bucket_put_meta(&k->main_s3, "slot", buf, (size_t)n, MAIN_TIMEOUT_MS, err,
                                          errlen);
        if (rc < 0)
            return rc;
    }
    pgcdc_buf_reset(&k->slot_stored);
    pgcdc_buf_append(&k->slot_stored, buf, (size_t)n);
    return PGCDC_OK;
}

/* Hand the filling batch to the uploader when a flush is due (force: whenever it holds
 * anything). Only between transactions, and only while the uploader is idle. */
static int maybe_seal(struct s3_sink *k, bool force, char *err, size_t errlen)
{
    struct batch *b = filling(k);
    if (k->in_txn || b->ntxn == 0 || busy(k))
        return PGCDC_OK;
    bool due = force || pgcdc_s3_stage_committed(&b->st) >= k->cfg->sink_s3_flush_bytes ||
               b->ntxn >= FLUSH_TXNS || pgcdc_mono_ms() - b->first_ms >= k->cfg->sink_s3_flush_ms;
    if (!due)
        return PGCDC_OK;
    int rc = pgcdc_s3_stage_seal(&b->st, err, errlen);
    if (rc < 0)
        return fail(k, rc, err, err, errlen);
    b->seq = k->next_seq++;
    b->clean_first = !k->cleaned;
    k->cleaned = true;
    mirror_slot(k, b, err, errlen);
    pthread_mutex_lock(&k->mu);
    k->job = k->fill;
    k->done = false;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
    k->fill ^= 1;
    return PGCDC_OK;
}

/* Wait up to ms for the uploader to finish its batch. */
static void wait_uploader(struct s3_sink *k, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&k->mu);
    while (k->job >= 0 && !k->done)
        if (pthread_cond_timedwait(&k->cv, &k->mu, &until) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&k->mu);
}

static int s3_begin(struct pgcdc_sink *s, const struct pgcdc_txn_meta *txn, char *err,
                    size_t errlen)
{
    struct s3_sink *k = (struct s3_sink *)s;
    k->in_txn = true;
    k->txn_wrote = k->txn_cut = false;
    k->txn_commit_lsn = txn->commit_lsn;
    k->txn_handle = pgcdc_txn_track_add(s->track);
    int64_t now = pgcdc_mono_ms();
    if (now - k->slot_checked_ms >= SLOT_CHECK_MS) {
        /* A slot record written since (a new slot, before its snapshot) is stored now, so
         * a pod that loses state.dir mid-snapshot still finds it. */
        k->slot_checked_ms = now;
        int rc = mirror_slot(k, NULL, err, errlen);
        if (rc < 0)
            return rc;
    }
    return PGCDC_OK;
}

static int s3_write(struct pgcdc_sink *s, const struct pgcdc_record *r, char *err, size_t errlen)
{
    struct s3_sink *k = (struct s3_sink *)s;
    struct batch *b = filling(k);
    int rc;
    if (k->failed_rc)
        return fail(k, k->failed_rc, "", err, errlen);
    if (k->txn_cut) {
        snprintf(err, errlen, "a transaction was cut short by a flush; receiving it again");
        return PGCDC_ERR_RETRY;
    }
    /* Back-pressure before a transaction's first event, never inside one: a transaction
     * larger than flush_bytes is one flush. */
    if (!k->txn_wrote && b->ntxn > 0 &&
        (pgcdc_s3_stage_committed(&b->st) >= k->cfg->sink_s3_flush_bytes ||
         b->ntxn >= FLUSH_TXNS) &&
        busy(k))
        return PGCDC_AGAIN;
    if ((rc = pgcdc_s3_stage_append(&b->st, r->schema, r->table, k->txn_commit_lsn, r->value,
                                    r->value_len, err, errlen)) < 0)
        return fail(k, rc, err, err, errlen);
    if (!b->first_ms)
        b->first_ms = pgcdc_mono_ms();
    k->txn_wrote = true;
    return PGCDC_OK;
}

static int s3_commit(struct pgcdc_sink *s, const struct pgcdc_txn_meta *txn, char *err,
                     size_t errlen)
{
    struct s3_sink *k = (struct s3_sink *)s;
    struct batch *b = filling(k);
    k->in_txn = false;
    if (k->txn_cut) {
        snprintf(err, errlen, "a transaction was cut short by a flush; receiving it again");
        return PGCDC_ERR_RETRY;
    }
    if (!k->txn_wrote) {
        /* Nothing of it is ours to store: durable as it is. */
        pgcdc_txn_track_ack(s->track, k->txn_handle, true);
        return PGCDC_OK;
    }
    pgcdc_s3_stage_commit(&b->st);
    if (!b->first_handle)
        b->first_handle = k->txn_handle;
    b->last_handle = k->txn_handle;
    b->end_lsn = txn->end_lsn;
    b->ntxn++;
    return maybe_seal(k, false, err, errlen);
}

static int s3_sync(struct pgcdc_sink *s, char *err, size_t errlen)
{
    struct s3_sink *k = (struct s3_sink *)s;
    int rc = collect(k, err, errlen);
    return rc < 0 ? rc : maybe_seal(k, false, err, errlen);
}

static int s3_poll(struct pgcdc_sink *s, int timeout_ms, char *err, size_t errlen)
{
    struct s3_sink *k = (struct s3_sink *)s;
    int rc = collect(k, err, errlen);
    if (rc == PGCDC_OK && busy(k)) {
        wait_uploader(k, timeout_ms);
        rc = collect(k, err, errlen);
    }
    return rc < 0 ? rc : maybe_seal(k, false, err, errlen);
}

/* Store everything committed: seal, wait, seal what came meanwhile, wait. A transaction
 * still open is dropped from the stage (it is received again; see txn_cut). */
static int s3_flush(struct pgcdc_sink *s, int timeout_ms, char *err, size_t errlen)
{
    struct s3_sink *k = (struct s3_sink *)s;
    int rc;
    if (k->in_txn && k->txn_wrote) {
        if ((rc = pgcdc_s3_stage_cut(&filling(k)->st, err, errlen)) < 0)
            return fail(k, rc, err, err, errlen);
        k->txn_cut = true;
    }
    k->in_txn = false;
    int64_t deadline = pgcdc_mono_ms() + timeout_ms;
    for (;;) {
        if ((rc = collect(k, err, errlen)) < 0 || (rc = maybe_seal(k, true, err, errlen)) < 0)
            return rc;
        if (!busy(k) && filling(k)->ntxn == 0)
            return PGCDC_OK;
        int64_t left = deadline - pgcdc_mono_ms();
        if (left <= 0) {
            snprintf(err, errlen, "the S3 store did not store the last flush within %d ms",
                     timeout_ms);
            return PGCDC_AGAIN;
        }
        wait_uploader(k, left > 100 ? 100 : (int)left);
    }
}

/* Stop the uploader's flush, whatever it has done: the next start (or `started`) deletes
 * what it left, and the server sends it all again. */
static void abandon(struct s3_sink *k)
{
    pthread_mutex_lock(&k->mu);
    if (k->job >= 0) {
        k->abort = 1;
        while (!k->done)
            pthread_cond_wait(&k->cv, &k->mu);
        k->abort = 0;
        k->job = -1;
        k->done = false;
    }
    pthread_mutex_unlock(&k->mu);
}

static int s3_rewind(struct pgcdc_sink *s, char *err, size_t errlen)
{
    struct s3_sink *k = (struct s3_sink *)s;
    abandon(k);
    /* Nothing that is not in position.json survives a lost connection: the server sends it
     * again from the confirmed position, which is at most position.json's. */
    for (int i = 0; i < 2; i++) {
        batch_clear(&k->b[i]);
        int rc = pgcdc_s3_stage_reset(&k->b[i].st, err, errlen);
        if (rc < 0)
            return rc;
    }
    k->in_txn = k->txn_cut = k->txn_wrote = false;
    k->next_seq = k->pos.seq + 1;
    k->cleaned = false;
    k->failed_rc = 0;
    k->failed_err[0] = '\0';
    return PGCDC_OK;
}

static uint64_t s3_resume_lsn(struct pgcdc_sink *s)
{
    return ((struct s3_sink *)s)->pos.end_lsn;
}

/* The slot is ours now: learn what an older pgcdc stored last, delete what it left above
 * that, and store the slot record. */
static int s3_started(struct pgcdc_sink *s, char *err, size_t errlen)
{
    struct s3_sink *k = (struct s3_sink *)s;
    if (busy(k) || filling(k)->ntxn > 0)
        return PGCDC_OK; /* staged since (cannot be: only after a rewind or at start) */
    struct pgcdc_s3_position p;
    unsigned n = 0;
    int rc = pgcdc_s3_bucket_read_position(&k->main_s3, &p, MAIN_TIMEOUT_MS, err, errlen);
    if (rc < 0)
        return rc;
    if (p.seq >= k->pos.seq)
        k->pos = p;
    if ((rc = pgcdc_s3_bucket_delete_after(&k->main_s3, k->pos.seq, MAIN_TIMEOUT_MS, &n, err,
                                           errlen)) < 0 ||
        (rc = mirror_slot(k, NULL, err, errlen)) < 0)
        return rc;
    k->next_seq = k->pos.seq + 1;
    k->cleaned = true;
    char l[PGCDC_LSN_BUFLEN], seq[16], del[16];
    snprintf(seq, sizeof(seq), "%u", k->pos.seq);
    snprintf(del, sizeof(del), "%u", n);
    pgcdc_log(PGCDC_LOG_INFO, "S3 position", "seq", seq, "end_lsn",
              pgcdc_lsn_format(k->pos.end_lsn, l), "orphans_deleted", del, NULL);
    return PGCDC_OK;
}

static void s3_close(struct pgcdc_sink *s)
{
    struct s3_sink *k = (struct s3_sink *)s;
    if (!k)
        return;
    if (k->th_started) {
        pthread_mutex_lock(&k->mu);
        k->quit = true;
        k->abort = 1;
        pthread_cond_broadcast(&k->cv);
        pthread_mutex_unlock(&k->mu);
        pthread_join(k->th, NULL);
    }
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    for (int i = 0; i < 2; i++) {
        pgcdc_s3_stage_free(&k->b[i].st);
        pgcdc_buf_free(&k->b[i].slot_rec);
    }
    if (k->obj_fd >= 0)
        close(k->obj_fd);
    pgcdc_buf_free(&k->slot_stored);
    pgcdc_s3_free(&k->up_s3);
    pgcdc_s3_free(&k->main_s3);
    pgcdc_s3_conf_free(&k->tgt);
    free(k);
}

static const struct pgcdc_sink_ops s3_ops = {
    .name = "s3",
    .begin = s3_begin,
    .write = s3_write,
    .commit = s3_commit,
    .sync = s3_sync,
    .poll = s3_poll,
    .flush = s3_flush,
    .rewind = s3_rewind,
    .resume_lsn = s3_resume_lsn,
    .started = s3_started,
    .close = s3_close,
};

/* state.dir lost its slot record (a pod without a volume): take the bucket's copy. */
static int restore_slot(struct s3_sink *k, char *err, size_t errlen)
{
    struct stat st;
    if (stat(k->slot_path, &st) == 0)
        return PGCDC_OK;
    bool found;
    int rc =
        pgcdc_s3_bucket_get_meta(&k->main_s3, "slot", &k->slot_stored, &found, -1, err, errlen);
    if (rc < 0 || !found)
        return rc;
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", k->slot_path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 ||
        write(fd, k->slot_stored.data, k->slot_stored.len) != (ssize_t)k->slot_stored.len ||
        fsync(fd) < 0 || rename(tmp, k->slot_path) < 0) {
        snprintf(err, errlen, "cannot restore %s from the bucket: %s", k->slot_path,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        return PGCDC_ERR_CONFIG;
    }
    close(fd);
    pgcdc_log(PGCDC_LOG_INFO, "restored the slot record from the bucket", "path", k->slot_path,
              NULL);
    return PGCDC_OK;
}

int pgcdc_sink_s3_open(struct pgcdc_sink **out, const struct pgcdc_config *cfg, char *err,
                       size_t errlen)
{
    int rc;
    struct s3_sink *k = calloc(1, sizeof(*k));
    if (!k) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    k->base.ops = &s3_ops;
    k->cfg = cfg;
    k->job = -1;
    k->obj_fd = -1;
    k->b[0].st.data_fd = k->b[0].st.idx_fd = k->b[1].st.data_fd = k->b[1].st.idx_fd = -1;
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    k->gzip = cfg->sink_s3_compression == PGCDC_S3_GZIP;
    snprintf(k->slot_path, sizeof(k->slot_path), "%s/slot", cfg->state_dir);
    const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    if ((rc = pgcdc_s3_conf_resolve(&k->tgt, cfg, err, errlen)) < 0)
        goto fail;
    if ((rc = pgcdc_s3_stage_init(&k->b[0].st, tmp, err, errlen)) < 0 ||
        (rc = pgcdc_s3_stage_init(&k->b[1].st, tmp, err, errlen)) < 0)
        goto fail;
    if ((k->obj_fd = pgcdc_s3_stage_tmpfile(tmp, err, errlen)) < 0) {
        rc = PGCDC_ERR_CONFIG;
        goto fail;
    }
    if ((rc = pgcdc_s3_new(&k->main_s3, &k->tgt, MAIN_TIMEOUT_MS, err, errlen)) < 0 ||
        (rc = pgcdc_s3_new(&k->up_s3, &k->tgt, UPLOAD_TIMEOUT_MS, err, errlen)) < 0)
        goto fail;
    k->up_s3.abort = &k->abort;
    /* Until stopped: an unreachable store is waited for, with a warning per attempt. */
    if ((rc = pgcdc_s3_bucket_read_position(&k->main_s3, &k->pos, -1, err, errlen)) < 0 ||
        (rc = restore_slot(k, err, errlen)) < 0)
        goto fail;
    k->next_seq = k->pos.seq + 1;
    if (pthread_create(&k->th, NULL, uploader, k) != 0) {
        snprintf(err, errlen, "cannot start the S3 uploader thread");
        rc = PGCDC_ERR;
        goto fail;
    }
    k->th_started = true;
    char l[PGCDC_LSN_BUFLEN], seq[16];
    snprintf(seq, sizeof(seq), "%u", k->pos.seq);
    pgcdc_log(PGCDC_LOG_INFO, "S3 sink", "bucket", k->tgt.bucket, "prefix", k->tgt.prefix,
              "endpoint", k->tgt.endpoint, "seq", seq, "end_lsn",
              pgcdc_lsn_format(k->pos.end_lsn, l), NULL);
    *out = &k->base;
    return PGCDC_OK;
fail:
    if (rc == PGCDC_STOP)
        rc = PGCDC_ERR_RETRY;
    s3_close(&k->base);
    return rc;
}
