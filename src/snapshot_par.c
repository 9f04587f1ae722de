/*
 * snapshot_par.c — parallel readers of one snapshot (see snapshot_par.h). The lock is
 * taken once per chunk handed over and once per job taken, never per row: parsing and
 * encoding run on each worker's own buffers.
 */
#include "pgcdc/snapshot_par.h"

#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgcdc/common.h"
#include "pgcdc/event.h"
#include "pgcdc/log.h"

#define CHUNKS_PER_WORKER 4
#define CHUNK_BYTES_MAX (1u << 20)
#define CHUNK_BYTES_MIN (256u << 10)
#define CHUNKS_BUDGET (32u << 20) /* with the rows in flight, RSS stays under 64 MB */
#define STOPPED_MSG "stopped during the snapshot; the next run takes the unfinished tables again"

/* Records, one after another: a struct rec_hdr, the value, the key. */
struct chunk {
    struct chunk *next;
    struct worker *owner;
    struct pgcdc_buf b;
};

struct rec_hdr {
    size_t vlen, klen; /* klen: the key's length + 1; 0: no key */
};

/* A table, or a block range of one: read by one worker, written in order. */
struct job {
    size_t leaf; /* index into the listing */
    uint64_t from, to;
    struct chunk *head, *tail; /* finished chunks, not yet written */
    bool finished;             /* the worker is done: no chunk comes after the queued ones */
};

struct worker {
    struct pgcdc_snappar *p;
    pthread_t th;
    bool started;
    struct pgcdc_snapreader r;
    struct pgcdc_event_ctx ectx;
    struct chunk chunks[CHUNKS_PER_WORKER];
    struct chunk *free; /* under p->mu */
    struct chunk *cur;  /* being filled: this worker's alone */
    struct job *job;
    char err[512];
};

struct pgcdc_snappar {
    pthread_mutex_t mu;
    pthread_cond_t cv_writer; /* a chunk queued, a job finished, a failure */
    pthread_cond_t cv_free;   /* a chunk given back, or cancel */
    atomic_int cancel;
    const struct pgcdc_snaptables *tl;
    const struct pgcdc_config *cfg;
    struct job *jobs;
    size_t njobs, next_take; /* next_take under mu */
    size_t next_write;       /* the writer's alone */
    struct worker *w;
    int nw;
    size_t chunk_bytes;
    bool numeric_strings;
    uint64_t point;
    char snapname[128];
    int rc; /* the first worker failure, under mu */
    char err[512];
};

/* Record a worker's failure (the first one wins) and stop the others. */
static void fail(struct pgcdc_snappar *p, int rc, const char *err)
{
    pthread_mutex_lock(&p->mu);
    if (p->rc == 0) {
        p->rc = rc;
        snprintf(p->err, sizeof(p->err), "%s", err);
    }
    atomic_store(&p->cancel, 1);
    pthread_cond_broadcast(&p->cv_writer);
    pthread_cond_broadcast(&p->cv_free);
    pthread_mutex_unlock(&p->mu);
}

/* A free chunk of this worker's (waiting for the writer to give one back). */
static int take_chunk(struct worker *w, char *err, size_t errlen)
{
    struct pgcdc_snappar *p = w->p;
    pthread_mutex_lock(&p->mu);
    while (!w->free && !atomic_load(&p->cancel))
        pthread_cond_wait(&p->cv_free, &p->mu);
    w->cur = w->free;
    if (w->cur)
        w->free = w->cur->next;
    pthread_mutex_unlock(&p->mu);
    if (!w->cur) {
        snprintf(err, errlen, STOPPED_MSG);
        return PGCDC_ERR_RETRY;
    }
    pgcdc_buf_reset(&w->cur->b);
    return PGCDC_OK;
}

/* Queue the current chunk on the job (under p->mu). */
static void queue_chunk(struct worker *w)
{
    struct chunk *c = w->cur;
    c->next = NULL;
    if (w->job->tail)
        w->job->tail->next = c;
    else
        w->job->head = c;
    w->job->tail = c;
    w->cur = NULL;
    pthread_cond_signal(&w->p->cv_writer);
}

static int worker_row(void *ctx, const struct pgcdc_change *ch, char *err, size_t errlen)
{
    struct worker *w = ctx;
    struct pgcdc_snappar *p = w->p;
    if (atomic_load_explicit(&p->cancel, memory_order_relaxed)) {
        snprintf(err, errlen, STOPPED_MSG);
        return PGCDC_ERR_RETRY;
    }
    struct pgcdc_buf *b = &w->cur->b;
    struct rec_hdr h = {0, 0};
    size_t at = b->len;
    struct pgcdc_change row = *ch;
    row.lsn = p->point;
    if (pgcdc_buf_append(b, &h, sizeof(h)) < 0 ||
        pgcdc_event_encode(b, &w->ectx, &row, 'r', pgcdc_now_ms()) < 0)
        goto oom;
    h.vlen = b->len - at - sizeof(h);
    int haskey = pgcdc_event_key(b, &row, 0);
    if (haskey < 0)
        goto oom;
    h.klen = haskey ? b->len - at - sizeof(h) - h.vlen + 1 : 0;
    memcpy(b->data + at, &h, sizeof(h));
    if (b->len < p->chunk_bytes)
        return PGCDC_OK;
    pthread_mutex_lock(&p->mu);
    queue_chunk(w);
    pthread_mutex_unlock(&p->mu);
    return take_chunk(w, err, errlen);
oom:
    snprintf(err, errlen, "out of memory encoding a snapshot row");
    return PGCDC_ERR;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct pgcdc_snappar *p = w->p;
    int numeric = p->numeric_strings ? 1 : 0;
    struct pgcdc_snapreader_opts ro = {.dsn = p->cfg->source_dsn,
                                       .snapshot_name = p->snapname,
                                       .numeric_strings = &numeric,
                                       .cancel = &p->cancel,
                                       .invalid_utf8 = p->cfg->source_invalid_utf8,
                                       .point = p->point};
    int rc = pgcdc_snapreader_open(&w->r, &ro, w->err, sizeof(w->err));
    while (rc == PGCDC_OK) {
        pthread_mutex_lock(&p->mu);
        w->job =
            atomic_load(&p->cancel) || p->next_take >= p->njobs ? NULL : &p->jobs[p->next_take++];
        pthread_mutex_unlock(&p->mu);
        if (!w->job)
            break;
        if (!w->cur && (rc = take_chunk(w, w->err, sizeof(w->err))) < 0)
            break;
        uint64_t rows = 0;
        const struct pgcdc_snaptable *t = &p->tl->t[w->job->leaf];
        rc = pgcdc_snapreader_lock_nowait(&w->r, t, w->err, sizeof(w->err));
        if (rc == PGCDC_OK)
            rc = pgcdc_snapreader_copy_range(&w->r, t, w->job->from, w->job->to, worker_row, w,
                                             &rows, w->err, sizeof(w->err));
        pthread_mutex_lock(&p->mu);
        if (rc == PGCDC_OK && w->cur && w->cur->b.len > 0)
            queue_chunk(w);
        w->job->finished = rc == PGCDC_OK;
        pthread_cond_signal(&p->cv_writer);
        pthread_mutex_unlock(&p->mu);
    }
    if (rc < 0)
        fail(p, rc, w->err);
    pgcdc_snapreader_close(&w->r);
    return NULL;
}

/* The jobs: each leaf whole, or (PostgreSQL 14+: TID Range Scan) in block ranges. */
static int plan(struct pgcdc_snappar *p, struct pgcdc_snapreader *main, char *err, size_t errlen)
{
    uint64_t cp = p->cfg->snapshot_chunk_pages;
    bool ranges = p->nw > 1 && PQserverVersion(main->c) >= 140000;
    size_t cap = p->tl->n + 1, n = 0;
    p->jobs = calloc(cap, sizeof(*p->jobs));
    if (!p->jobs)
        goto oom;
    for (size_t i = 0; i < p->tl->n; i++) {
        uint64_t blocks = 0, parts = 1;
        int rc;
        if (ranges && (rc = pgcdc_snapreader_blocks(main, &p->tl->t[i], &blocks, err, errlen)) < 0)
            return rc;
        if (blocks > cp)
            parts = (blocks + cp - 1) / cp;
        if (n + parts > cap) {
            size_t ncap = (n + parts) * 2;
            struct job *nj = realloc(p->jobs, ncap * sizeof(*nj));
            if (!nj)
                goto oom;
            p->jobs = nj;
            cap = ncap;
        }
        for (uint64_t k = 0; k < parts; k++) /* the last range is open: rows added since */
            p->jobs[n++] =
                (struct job){.leaf = i,
                             .from = k * cp,
                             .to = k + 1 == parts ? PGCDC_SNAP_ALL_BLOCKS : (k + 1) * cp};
    }
    p->njobs = n;
    return PGCDC_OK;
oom:
    snprintf(err, errlen, "out of memory");
    return PGCDC_ERR;
}

int pgcdc_snappar_start(struct pgcdc_snappar **out, const struct pgcdc_snappar_opts *o, char *err,
                        size_t errlen)
{
    *out = NULL;
    struct pgcdc_snappar *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_writer, NULL);
    pthread_cond_init(&p->cv_free, NULL);
    p->tl = o->tl;
    p->cfg = o->cfg;
    p->nw = o->cfg->snapshot_workers;
    p->point = o->point;
    p->numeric_strings = o->main->numeric_strings;
    size_t cb = CHUNKS_BUDGET / ((size_t)p->nw * CHUNKS_PER_WORKER);
    p->chunk_bytes = cb > CHUNK_BYTES_MAX   ? CHUNK_BYTES_MAX
                     : cb < CHUNK_BYTES_MIN ? CHUNK_BYTES_MIN
                                            : cb;
    int rc;
    if ((rc = plan(p, o->main, err, errlen)) < 0 ||
        (rc = pgcdc_snapreader_export(o->main, p->snapname, sizeof(p->snapname), err, errlen)) < 0)
        goto fail;
    if ((size_t)p->nw > p->njobs) /* no more connections than there are jobs */
        p->nw = p->njobs > 0 ? (int)p->njobs : 1;
    p->w = calloc((size_t)p->nw, sizeof(*p->w));
    if (!p->w) {
        snprintf(err, errlen, "out of memory");
        rc = PGCDC_ERR;
        goto fail;
    }
    /* Signals go to the thread that runs the stream: its handler sets the stop flag, which
     * the writer hands on to the workers. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 0; i < p->nw; i++) {
        struct worker *w = &p->w[i];
        w->p = p;
        w->ectx = (struct pgcdc_event_ctx){.name_json = o->name_json,
                                           .db_json = o->db_json,
                                           .xid = o->main->xmin,
                                           .commit_lsn = o->point,
                                           .commit_ts_ms = o->ts_ms,
                                           .snapshot = "true"};
        for (int k = 0; k < CHUNKS_PER_WORKER; k++) {
            w->chunks[k].owner = w;
            w->chunks[k].next = w->free;
            w->free = &w->chunks[k];
        }
        if ((errno = pthread_create(&w->th, NULL, worker_main, w)) != 0) {
            snprintf(err, errlen, "cannot start a snapshot worker thread: %s", strerror(errno));
            rc = PGCDC_ERR;
            break;
        }
        w->started = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0)
        goto fail;
    char nw[16], nj[24];
    snprintf(nw, sizeof(nw), "%d", p->nw);
    snprintf(nj, sizeof(nj), "%zu", p->njobs);
    pgcdc_log(PGCDC_LOG_INFO, "snapshot readers started", "workers", nw, "jobs", nj, NULL);
    *out = p;
    return PGCDC_OK;
fail:
    pgcdc_snappar_stop(p);
    return rc;
}

/* Give a written chunk back to its worker. */
static void give_back(struct pgcdc_snappar *p, struct chunk *c)
{
    pthread_mutex_lock(&p->mu);
    c->next = c->owner->free;
    c->owner->free = c;
    pthread_cond_broadcast(&p->cv_free);
    pthread_mutex_unlock(&p->mu);
}

static int emit(struct chunk *c, pgcdc_snappar_rec_fn rec, void *ctx, char *err, size_t errlen)
{
    for (size_t at = 0; at < c->b.len;) {
        struct rec_hdr h;
        memcpy(&h, c->b.data + at, sizeof(h));
        const char *v = c->b.data + at + sizeof(h);
        int rc =
            rec(ctx, v, h.vlen, h.klen ? v + h.vlen : NULL, h.klen ? h.klen - 1 : 0, err, errlen);
        if (rc < 0)
            return rc;
        at += sizeof(h) + h.vlen + (h.klen ? h.klen - 1 : 0);
    }
    return PGCDC_OK;
}

/* The next chunk of job j, waiting at most 100 ms; *done once none will come. */
static int next_chunk(struct pgcdc_snappar *p, struct job *j, struct chunk **c, bool *done,
                      char *err, size_t errlen)
{
    pthread_mutex_lock(&p->mu);
    if (!j->head && !j->finished && p->rc == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&p->cv_writer, &p->mu, &ts);
    }
    int rc = p->rc;
    if (rc < 0)
        snprintf(err, errlen, "%s", p->err);
    *c = j->head;
    if (*c && !(j->head = (*c)->next))
        j->tail = NULL;
    *done = !*c && j->finished;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int pgcdc_snappar_unit(struct pgcdc_snappar *p, size_t first, size_t n, pgcdc_snappar_rec_fn rec,
                       int (*idle)(void *ctx, char *err, size_t errlen), void *ctx, char *err,
                       size_t errlen)
{
    int rc = PGCDC_OK;
    while (rc == PGCDC_OK && p->next_write < p->njobs && p->jobs[p->next_write].leaf < first + n) {
        struct job *j = &p->jobs[p->next_write];
        struct chunk *c;
        bool done;
        if ((rc = next_chunk(p, j, &c, &done, err, errlen)) < 0) {
            if (c)
                give_back(p, c);
            break;
        }
        if (pgcdc_stop_requested) {
            snprintf(err, errlen, STOPPED_MSG);
            rc = PGCDC_ERR_RETRY;
        } else if (c) {
            rc = emit(c, rec, ctx, err, errlen);
        } else if (done) {
            p->next_write++;
        } else if (idle) {
            rc = idle(ctx, err, errlen);
        }
        if (c)
            give_back(p, c);
    }
    if (rc < 0)
        atomic_store(&p->cancel, 1);
    return rc;
}

void pgcdc_snappar_stop(struct pgcdc_snappar *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->cancel, 1);
    pthread_cond_broadcast(&p->cv_free);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; p->w && i < p->nw; i++) {
        if (p->w[i].started)
            pthread_join(p->w[i].th, NULL);
        for (int k = 0; k < CHUNKS_PER_WORKER; k++)
            pgcdc_buf_free(&p->w[i].chunks[k].b);
    }
    free(p->w);
    free(p->jobs);
    pthread_cond_destroy(&p->cv_writer);
    pthread_cond_destroy(&p->cv_free);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
