/*
 * replay_batch.c — per-table queues of changes and the multi-row statements they go out as
 * (see replay_batch.h).
 */
#include "pgcdc/replay_batch.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_MAX_ROWS 8192         /* send queued changes once this many wait */
#define QUEUE_MAX_BYTES (16u << 20) /* ... or their values take this much memory */

/* One form of statement for a table: the single-row SQL and what its parameters are. */
struct shape {
    char *sql;
    int *param_col;
    int nparams, nset;
    char op;
    bool groupable;
};

/* A change waiting in its table's queue: its shape and parameters (in b->voff). */
struct item {
    int shape;
    size_t v0;
    uint64_t keyhash;
    uint64_t lsn, commit_lsn;
};

struct pgcdc_replay_queue {
    struct shape *shapes;
    size_t nshapes;
    int last_shape;
    struct item *q; /* changes of the open batch not yet sent, in source order */
    size_t qn, qcap;
    bool queued; /* listed in b->order */
};

void pgcdc_replay_batch_init(struct pgcdc_replay_batch *b, int group_rows)
{
    memset(b, 0, sizeof(*b));
    b->group_rows = group_rows;
}

void pgcdc_replay_batch_reset(struct pgcdc_replay_batch *b)
{
    for (size_t i = 0; i < b->nq; i++) {
        struct pgcdc_replay_queue *rq = &b->q[i];
        for (size_t k = 0; k < rq->nshapes; k++) {
            free(rq->shapes[k].sql);
            free(rq->shapes[k].param_col);
        }
        free(rq->shapes);
        free(rq->q);
    }
    free(b->q);
    b->q = NULL;
    b->nq = 0;
    b->norder = 0;
    b->pending = 0;
    b->nvoff = 0;
    pgcdc_buf_reset(&b->arena);
}

void pgcdc_replay_batch_free(struct pgcdc_replay_batch *b)
{
    pgcdc_replay_batch_reset(b);
    pgcdc_buf_free(&b->arena);
    pgcdc_buf_free(&b->gsql);
    free(b->voff);
    free(b->order);
    free(b->gparams);
    memset(b, 0, sizeof(*b));
}

static int grow_array(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return PGCDC_OK;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return PGCDC_ERR;
    *p = q;
    *cap = n;
    return PGCDC_OK;
}

/* The queue of table ti, created (empty) the first time. NULL: out of memory. */
static struct pgcdc_replay_queue *queue_of(struct pgcdc_replay_batch *b, int ti)
{
    if ((size_t)ti >= b->nq) {
        size_t n = (size_t)ti + 1;
        struct pgcdc_replay_queue *nq = realloc(b->q, n * sizeof(*nq));
        if (!nq)
            return NULL;
        memset(nq + b->nq, 0, (n - b->nq) * sizeof(*nq));
        b->q = nq;
        b->nq = n;
    }
    return &b->q[ti];
}

/* The shape of st in queue rq (registered the first time it is seen). */
static int shape_of(struct pgcdc_replay_queue *rq, const struct pgcdc_replay_stmt *st)
{
    if (rq->nshapes && strcmp(rq->shapes[rq->last_shape].sql, st->sql.data) == 0)
        return rq->last_shape;
    for (size_t i = 0; i < rq->nshapes; i++)
        if (strcmp(rq->shapes[i].sql, st->sql.data) == 0)
            return rq->last_shape = (int)i;
    struct shape *ns = realloc(rq->shapes, (rq->nshapes + 1) * sizeof(*ns));
    if (!ns)
        return PGCDC_ERR;
    rq->shapes = ns;
    struct shape *sh = &rq->shapes[rq->nshapes];
    memset(sh, 0, sizeof(*sh));
    sh->sql = strdup(st->sql.data);
    sh->param_col = malloc(((size_t)st->nparams + 1) * sizeof(int));
    if (!sh->sql || !sh->param_col) {
        free(sh->sql);
        free(sh->param_col);
        return PGCDC_ERR;
    }
    if (st->nparams > 0) /* a statement without parameters (TRUNCATE) has no array */
        memcpy(sh->param_col, st->param_col, (size_t)st->nparams * sizeof(int));
    sh->nparams = st->nparams;
    sh->nset = st->nset;
    sh->op = st->op;
    sh->groupable = st->groupable;
    return rq->last_shape = (int)rq->nshapes++;
}

/* Whether parameter i of a shape is part of the row's key (for duplicates in a group). */
static bool key_param(const struct pgcdc_replay_table *t, const struct shape *sh, int i)
{
    switch (sh->op) {
    case 'u':
        return i >= sh->nset;
    case 'd':
        return true;
    default:
        return t->cols[sh->param_col[i]].pk;
    }
}

static const char *qval(const struct pgcdc_replay_batch *b, size_t v)
{
    return b->voff[v] == SIZE_MAX ? NULL : b->arena.data + b->voff[v];
}

static bool same_key(const struct pgcdc_replay_batch *b, const struct pgcdc_replay_table *t,
                     const struct shape *sh, const struct item *x, const struct item *y)
{
    if (x->keyhash != y->keyhash)
        return false;
    for (int i = 0; i < sh->nparams; i++) {
        if (!key_param(t, sh, i))
            continue;
        const char *u = qval(b, x->v0 + (size_t)i), *v = qval(b, y->v0 + (size_t)i);
        if ((u == NULL) != (v == NULL) || (u && strcmp(u, v) != 0))
            return false;
    }
    return true;
}

/* Send nrows members (queue indexes) of one shape of table ti as one statement. */
static int send_group(struct pgcdc_replay_batch *b, struct pgcdc_replay_target *tg, int ti,
                      const struct shape *sh, const size_t *members, int nrows, uint64_t max_commit,
                      char *err, size_t errlen)
{
    const struct pgcdc_replay_queue *rq = &b->q[ti];
    size_t np = (size_t)sh->nparams * (size_t)nrows;
    if (grow_array((void **)&b->gparams, &b->gcap, np + 1, sizeof(*b->gparams)) < 0) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    for (int m = 0; m < nrows; m++)
        for (int i = 0; i < sh->nparams; i++)
            b->gparams[(size_t)m * (size_t)sh->nparams + (size_t)i] =
                qval(b, rq->q[members[m]].v0 + (size_t)i);
    struct pgcdc_replay_stmt view = {.params = b->gparams,
                                     .param_col = sh->param_col,
                                     .nparams = (int)np,
                                     .op = sh->op,
                                     .nset = sh->nset};
    const char *sql = sh->sql;
    if (nrows > 1) {
        view.nparams = sh->nparams;
        if (pgcdc_replay_build_group(&b->gsql, &tg->tables[ti].t, &view, nrows) < 0) {
            snprintf(err, errlen, "out of memory");
            return PGCDC_ERR;
        }
        view.nparams = (int)np;
        sql = b->gsql.data;
    }
    struct pgcdc_replay_cmd c = {.kind = PGCDC_REPLAY_STMT,
                                 .op = sh->op,
                                 .table = ti,
                                 .lsn = rq->q[members[0]].lsn,
                                 .commit_lsn = max_commit,
                                 .expect = sh->op == 'u' || sh->op == 'd' ? nrows : 0};
    return pgcdc_replay_target_send_stmt(tg, &c, sql, &view, NULL, err, errlen);
}

/*
 * The run of changes of one shape starting at queue index i, as members (queue indexes)
 * of at most lim distinct keys. Returns the number of members; *next is the first index
 * after the run, *maxc the run's highest commit LSN.
 */
static int collect_run(const struct pgcdc_replay_batch *b, const struct pgcdc_replay_table *t,
                       const struct pgcdc_replay_queue *rq, size_t i, int lim, size_t *members,
                       size_t *next, uint64_t *maxc)
{
    const struct shape *sh = &rq->shapes[rq->q[i].shape];
    /* Rows of a table without a key never clash: plain multi-row inserts. */
    bool keyed = !(sh->op == 'c' || sh->op == 'r') || t->npk > 0;
    int m = 0;
    *maxc = rq->q[i].commit_lsn;
    members[m++] = i;
    size_t j = i + 1;
    while (j < rq->qn && m < lim && rq->q[j].shape == rq->q[i].shape) {
        int dup = -1;
        for (int k = 0; keyed && k < m && dup < 0; k++)
            if (same_key(b, t, sh, &rq->q[members[k]], &rq->q[j]))
                dup = k;
        if (dup >= 0 && sh->op == 'u')
            members[dup] = j; /* the later values win */
        else if (dup >= 0 && sh->op != 'd')
            break; /* an insert cannot touch one row twice: a new statement */
        else if (dup < 0)
            members[m++] = j;
        if (rq->q[j].commit_lsn > *maxc)
            *maxc = rq->q[j].commit_lsn;
        j++;
    }
    *next = j;
    return m;
}

/* Send table ti's queue, emptying it. */
static int flush_table(struct pgcdc_replay_batch *b, struct pgcdc_replay_target *tg, int ti,
                       char *err, size_t errlen)
{
    size_t members[1024];
    int gmax = b->group_rows < 1024 ? b->group_rows : 1024;
    struct pgcdc_replay_queue *rq = &b->q[ti];
    const struct pgcdc_replay_table *t = &tg->tables[ti].t;
    int rc = PGCDC_OK;
    size_t i = 0;
    while (i < rq->qn && rc == PGCDC_OK) {
        const struct shape *sh = &rq->shapes[rq->q[i].shape];
        int lim = sh->groupable ? gmax : 1;
        /* Bound the parameters of one statement (the protocol allows 65535). */
        while (lim > 1 && (size_t)lim * (size_t)sh->nparams > 16384)
            lim /= 2;
        uint64_t maxc;
        size_t next;
        int m = collect_run(b, t, rq, i, lim, members, &next, &maxc);
        /* Power-of-two pieces: 37 rows go as 32 + 4 + 1. */
        int done = 0;
        while (done < m && rc == PGCDC_OK) {
            int n = 1;
            while (n * 2 <= m - done)
                n *= 2;
            rc = send_group(b, tg, ti, sh, members + done, n, maxc, err, errlen);
            done += n;
        }
        i = next;
    }
    rq->qn = 0;
    rq->queued = false;
    return rc;
}

int pgcdc_replay_batch_flush(struct pgcdc_replay_batch *b, struct pgcdc_replay_target *tg,
                             char *err, size_t errlen)
{
    int rc = PGCDC_OK;
    for (size_t o = 0; o < b->norder && rc == PGCDC_OK; o++)
        rc = flush_table(b, tg, b->order[o], err, errlen);
    b->norder = 0;
    b->pending = 0;
    b->nvoff = 0;
    pgcdc_buf_reset(&b->arena);
    return rc;
}

int pgcdc_replay_batch_add(struct pgcdc_replay_batch *b, struct pgcdc_replay_target *tg, int ti,
                           const struct pgcdc_replay_stmt *st, const struct pgcdc_replay_event *ev,
                           char *err, size_t errlen)
{
    struct pgcdc_replay_queue *rq = queue_of(b, ti);
    const struct pgcdc_replay_table *t = &tg->tables[ti].t;
    int sh = rq ? shape_of(rq, st) : PGCDC_ERR;
    if (sh < 0 || grow_array((void **)&rq->q, &rq->qcap, rq->qn + 1, sizeof(*rq->q)) < 0 ||
        grow_array((void **)&b->voff, &b->capvoff, b->nvoff + (size_t)st->nparams,
                   sizeof(*b->voff)) < 0 ||
        grow_array((void **)&b->order, &b->caporder, b->norder + 1, sizeof(*b->order)) < 0)
        goto oom;
    struct item *it = &rq->q[rq->qn];
    it->shape = sh;
    it->v0 = b->nvoff;
    it->lsn = ev->lsn;
    it->commit_lsn = ev->commit_lsn;
    it->keyhash = 1469598103934665603ULL; /* FNV-1a's offset basis, combined as FNV-1a does */
    for (int i = 0; i < st->nparams; i++) {
        const char *v = st->params[i];
        if (!v) {
            b->voff[b->nvoff++] = SIZE_MAX;
        } else {
            b->voff[b->nvoff++] = b->arena.len;
            if (pgcdc_buf_append(&b->arena, v, strlen(v) + 1) < 0)
                goto oom;
        }
        if (key_param(t, &rq->shapes[sh], i)) {
            uint64_t h = v ? pgcdc_replay_target_hash(v, strlen(v)) : 0x9e3779b97f4a7c15ULL;
            it->keyhash = (it->keyhash ^ h) * 1099511628211ULL;
        }
    }
    rq->qn++;
    if (!rq->queued) {
        b->order[b->norder++] = ti;
        rq->queued = true;
    }
    if (++b->pending >= QUEUE_MAX_ROWS || b->arena.len >= QUEUE_MAX_BYTES)
        return pgcdc_replay_batch_flush(b, tg, err, errlen);
    return PGCDC_OK;
oom:
    snprintf(err, errlen, "out of memory queueing a change");
    return PGCDC_ERR;
}
