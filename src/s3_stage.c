/*
 * s3_stage.c — a flush staged on disk, built into one object per table (see s3_stage.h).
 *
 * The index file is a sequence of extents, each 16 bytes in host byte order (the file is
 * private to this process and unlinked):
 *     u64 offset in the data file | u32 length | u32 table id
 * The run being extended is not in it yet: it is appended when another table's event
 * comes, at commit, and before a cut.
 */
#include "pgcdc/s3_stage.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "pgcdc/errors.h"

#define DATA_CHUNK (1u << 20) /* write(2) the data once this much is buffered */
#define IDX_CHUNK (64u << 10)
#define READ_CHUNK (256u << 10)
#define OUT_CHUNK (64u << 10)

struct extent {
    uint64_t off;
    uint32_t len;
    uint32_t table;
};

static int sys_fail(char *err, size_t errlen, const char *what)
{
    int e = errno;
    snprintf(err, errlen, "S3 staging: cannot %s: %s%s", what, strerror(e),
             (e == ENOSPC || e == EDQUOT) ? "; free space in the staging directory (pgcdc retries)"
                                          : "");
    return pgcdc_errors_errno(e, PGCDC_ERRFILE_IO);
}

int pgcdc_s3_stage_tmpfile(const char *dir, char *err, size_t errlen)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    char path[4096];
    snprintf(path, sizeof(path), "%s/pgcdc-s3-XXXXXX", dir);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen,
                 "cannot create a staging file in %s: %s; point TMPDIR at a writable directory",
                 dir, strerror(e));
        return -1;
    }
    unlink(path);
    return fd;
}

int pgcdc_s3_stage_init(struct pgcdc_s3_stage *st, const char *dir, char *err, size_t errlen)
{
    memset(st, 0, sizeof(*st));
    st->data_fd = st->idx_fd = -1;
    if ((st->data_fd = pgcdc_s3_stage_tmpfile(dir, err, errlen)) < 0 ||
        (st->idx_fd = pgcdc_s3_stage_tmpfile(dir, err, errlen)) < 0)
        return PGCDC_ERR_CONFIG;
    return PGCDC_OK;
}

static void forget_tables(struct pgcdc_s3_stage *st)
{
    for (uint32_t i = 0; i < st->ntables; i++) {
        free(st->tables[i].schema);
        free(st->tables[i].table);
    }
    st->ntables = 0;
    st->last = 0;
    st->ntouched = 0;
    if (st->slots)
        memset(st->slots, 0, st->nslots * sizeof(*st->slots));
}

void pgcdc_s3_stage_free(struct pgcdc_s3_stage *st)
{
    forget_tables(st);
    free(st->tables);
    free(st->slots);
    free(st->touched);
    pgcdc_buf_free(&st->dbuf);
    pgcdc_buf_free(&st->ibuf);
    if (st->data_fd >= 0)
        close(st->data_fd);
    if (st->idx_fd >= 0)
        close(st->idx_fd);
    st->data_fd = st->idx_fd = -1;
}

int pgcdc_s3_stage_reset(struct pgcdc_s3_stage *st, char *err, size_t errlen)
{
    forget_tables(st);
    pgcdc_buf_reset(&st->dbuf);
    pgcdc_buf_reset(&st->ibuf);
    st->data_len = st->idx_len = st->commit_data_len = st->commit_idx_len = 0;
    st->run_len = 0;
    if (ftruncate(st->data_fd, 0) < 0 || ftruncate(st->idx_fd, 0) < 0)
        return sys_fail(err, errlen, "empty a staging file");
    return PGCDC_OK;
}

static int write_all(int fd, const char *p, size_t n, off_t at)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, at);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        at += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Write buf out at the file's logical end minus what is buffered. */
static int drain(int fd, struct pgcdc_buf *b, uint64_t logical_len, char *err, size_t errlen)
{
    if (b->len == 0)
        return PGCDC_OK;
    if (write_all(fd, b->data, b->len, (off_t)(logical_len - b->len)) < 0)
        return sys_fail(err, errlen, "write a staging file");
    pgcdc_buf_reset(b);
    return PGCDC_OK;
}

/* Close the run: its extent goes to the index. */
static int end_run(struct pgcdc_s3_stage *st, char *err, size_t errlen)
{
    if (st->run_len == 0)
        return PGCDC_OK;
    struct extent x = {.off = st->run_off, .len = st->run_len, .table = st->run_table};
    if (pgcdc_buf_append(&st->ibuf, &x, sizeof(x)) < 0) {
        snprintf(err, errlen, "out of memory staging an S3 flush");
        return PGCDC_ERR;
    }
    st->idx_len += sizeof(x);
    st->run_len = 0;
    if (st->ibuf.len >= IDX_CHUNK)
        return drain(st->idx_fd, &st->ibuf, st->idx_len, err, errlen);
    return PGCDC_OK;
}

static uint32_t name_hash(const char *schema, const char *table)
{
    uint32_t h = 2166136261u;
    for (const char *p = schema; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ 0xff) * 16777619u;
    for (const char *p = table; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

static int grow_slots(struct pgcdc_s3_stage *st)
{
    uint32_t n = st->nslots ? st->nslots * 2 : 64;
    uint32_t *s = calloc(n, sizeof(*s));
    if (!s)
        return -1;
    for (uint32_t i = 0; i < st->ntables; i++) {
        uint32_t h = name_hash(st->tables[i].schema, st->tables[i].table) & (n - 1);
        while (s[h])
            h = (h + 1) & (n - 1);
        s[h] = i + 1;
    }
    free(st->slots);
    st->slots = s;
    st->nslots = n;
    return 0;
}

/* The id of schema.table, added when new. -1 on ENOMEM. */
static int64_t table_id(struct pgcdc_s3_stage *st, const char *schema, const char *table)
{
    if (st->last) {
        const struct pgcdc_s3_stage_table *t = &st->tables[st->last - 1];
        if (strcmp(t->table, table) == 0 && strcmp(t->schema, schema) == 0)
            return st->last - 1;
    }
    if ((st->ntables + 1) * 2 > st->nslots && grow_slots(st) < 0)
        return -1;
    uint32_t h = name_hash(schema, table) & (st->nslots - 1);
    while (st->slots[h]) {
        const struct pgcdc_s3_stage_table *t = &st->tables[st->slots[h] - 1];
        if (strcmp(t->table, table) == 0 && strcmp(t->schema, schema) == 0)
            return st->last = st->slots[h], st->slots[h] - 1;
        h = (h + 1) & (st->nslots - 1);
    }
    if (st->ntables == st->tables_cap) {
        uint32_t cap = st->tables_cap ? st->tables_cap * 2 : 16;
        void *p = realloc(st->tables, cap * sizeof(*st->tables));
        if (!p)
            return -1;
        st->tables = p;
        st->tables_cap = cap;
    }
    struct pgcdc_s3_stage_table *t = &st->tables[st->ntables];
    *t = (struct pgcdc_s3_stage_table){.schema = strdup(schema), .table = strdup(table)};
    if (!t->schema || !t->table) {
        free(t->schema);
        free(t->table);
        return -1;
    }
    st->slots[h] = ++st->ntables;
    st->last = st->ntables;
    return st->ntables - 1;
}

static int touch(struct pgcdc_s3_stage *st, uint32_t id)
{
    if (st->tables[id].touched)
        return 0;
    if (st->ntouched == st->touched_cap) {
        uint32_t cap = st->touched_cap ? st->touched_cap * 2 : 16;
        void *p = realloc(st->touched, cap * sizeof(*st->touched));
        if (!p)
            return -1;
        st->touched = p;
        st->touched_cap = cap;
    }
    st->touched[st->ntouched++] = id;
    st->tables[id].touched = true;
    return 0;
}

int pgcdc_s3_stage_append(struct pgcdc_s3_stage *st, const char *schema, const char *table,
                          uint64_t commit_lsn, const char *value, size_t len, char *err,
                          size_t errlen)
{
    int rc;
    int64_t id = table_id(st, schema, table);
    if (id < 0 || touch(st, (uint32_t)id) < 0) {
        snprintf(err, errlen, "out of memory staging an S3 flush");
        return PGCDC_ERR;
    }
    struct pgcdc_s3_stage_table *t = &st->tables[id];
    size_t n = len + 1;
    if (st->run_len && (st->run_table != (uint32_t)id || (uint64_t)st->run_len + n > UINT32_MAX) &&
        (rc = end_run(st, err, errlen)) < 0)
        return rc;
    if (st->run_len == 0) {
        st->run_off = st->data_len;
        st->run_table = (uint32_t)id;
    }
    if (t->bytes == 0)
        t->first_commit_lsn = commit_lsn;
    if (n > DATA_CHUNK) {
        /* A large event goes straight to the file, after what is buffered. */
        if ((rc = drain(st->data_fd, &st->dbuf, st->data_len, err, errlen)) < 0)
            return rc;
        if (write_all(st->data_fd, value, len, (off_t)st->data_len) < 0 ||
            write_all(st->data_fd, "\n", 1, (off_t)(st->data_len + len)) < 0)
            return sys_fail(err, errlen, "write a staging file");
    } else {
        if (pgcdc_buf_reserve(&st->dbuf, n) < 0) {
            snprintf(err, errlen, "out of memory staging an S3 flush");
            return PGCDC_ERR;
        }
        memcpy(st->dbuf.data + st->dbuf.len, value, len);
        st->dbuf.data[st->dbuf.len + len] = '\n';
        st->dbuf.len += n;
    }
    st->data_len += n;
    st->run_len += (uint32_t)n;
    t->bytes += n;
    if (st->dbuf.len >= DATA_CHUNK)
        return drain(st->data_fd, &st->dbuf, st->data_len, err, errlen);
    return PGCDC_OK;
}

/* The open transaction ended: the tables it touched keep (commit) or drop (cut) its bytes. */
static void settle_touched(struct pgcdc_s3_stage *st, bool keep)
{
    for (uint32_t i = 0; i < st->ntouched; i++) {
        struct pgcdc_s3_stage_table *t = &st->tables[st->touched[i]];
        if (keep)
            t->bytes_committed = t->bytes;
        else
            t->bytes = t->bytes_committed;
        t->touched = false;
    }
    st->ntouched = 0;
}

void pgcdc_s3_stage_commit(struct pgcdc_s3_stage *st)
{
    char err[128];
    /* end_run fails only on ENOMEM for 16 bytes; the run then stays open and is
     * appended by the next end_run, before any seal reads the index. */
    if (end_run(st, err, sizeof(err)) == PGCDC_OK)
        st->commit_idx_len = st->idx_len;
    st->commit_data_len = st->data_len;
    settle_touched(st, true);
}

int pgcdc_s3_stage_cut(struct pgcdc_s3_stage *st, char *err, size_t errlen)
{
    int rc;
    /* Write out what is buffered, then truncate both files back to the commit. */
    if ((rc = drain(st->data_fd, &st->dbuf, st->data_len, err, errlen)) < 0 ||
        (rc = drain(st->idx_fd, &st->ibuf, st->idx_len, err, errlen)) < 0)
        return rc;
    st->run_len = 0;
    if (ftruncate(st->data_fd, (off_t)st->commit_data_len) < 0 ||
        ftruncate(st->idx_fd, (off_t)st->commit_idx_len) < 0)
        return sys_fail(err, errlen, "truncate a staging file");
    st->data_len = st->commit_data_len;
    st->idx_len = st->commit_idx_len;
    settle_touched(st, false);
    return PGCDC_OK;
}

int pgcdc_s3_stage_seal(struct pgcdc_s3_stage *st, char *err, size_t errlen)
{
    int rc;
    if ((rc = drain(st->data_fd, &st->dbuf, st->data_len, err, errlen)) < 0 ||
        (rc = drain(st->idx_fd, &st->ibuf, st->idx_len, err, errlen)) < 0)
        return rc;
    return PGCDC_OK;
}

/* The object's output: compressed (or not) into out_fd, hashed on the way. */
struct out {
    int fd;
    uint64_t len;
    EVP_MD_CTX *md5, *sha;
    z_stream z;
    bool gzip;
    unsigned char buf[OUT_CHUNK];
};

static int out_write(struct out *o, const void *p, size_t n, char *err, size_t errlen)
{
    if (n == 0)
        return PGCDC_OK;
    if (write_all(o->fd, p, n, (off_t)o->len) < 0)
        return sys_fail(err, errlen, "write an object file");
    EVP_DigestUpdate(o->md5, p, n);
    EVP_DigestUpdate(o->sha, p, n);
    o->len += n;
    return PGCDC_OK;
}

static int out_feed(struct out *o, const char *p, size_t n, bool finish, char *err, size_t errlen)
{
    if (!o->gzip)
        return out_write(o, p, n, err, errlen);
    o->z.next_in = (Bytef *)p;
    o->z.avail_in = (uInt)n;
    for (;;) {
        o->z.next_out = o->buf;
        o->z.avail_out = sizeof(o->buf);
        int zr = deflate(&o->z, finish ? Z_FINISH : Z_NO_FLUSH);
        if (zr == Z_STREAM_ERROR) {
            snprintf(err, errlen, "zlib failed compressing an object");
            return PGCDC_ERR;
        }
        int rc = out_write(o, o->buf, sizeof(o->buf) - o->z.avail_out, err, errlen);
        if (rc < 0)
            return rc;
        if (finish ? zr == Z_STREAM_END : (o->z.avail_in == 0 && o->z.avail_out != 0))
            return PGCDC_OK;
    }
}

static int read_at(int fd, void *p, size_t n, uint64_t at)
{
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)at);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = EIO; /* shorter than the index says */
            return -1;
        }
        p = (char *)p + r;
        at += (uint64_t)r;
        n -= (size_t)r;
    }
    return 0;
}

static int build_extents(const struct pgcdc_s3_stage *st, uint32_t id, struct out *o, char *rbuf,
                         volatile sig_atomic_t *abort, char *err, size_t errlen)
{
    struct extent xs[IDX_CHUNK / sizeof(struct extent)];
    for (uint64_t at = 0; at < st->commit_idx_len;) {
        size_t want = sizeof(xs);
        if (st->commit_idx_len - at < want)
            want = (size_t)(st->commit_idx_len - at);
        if (read_at(st->idx_fd, xs, want, at) < 0)
            return sys_fail(err, errlen, "read the staging index");
        at += want;
        for (size_t i = 0; i < want / sizeof(struct extent); i++) {
            if (xs[i].table != id)
                continue;
            for (uint64_t done = 0; done < xs[i].len;) {
                if (*abort) {
                    snprintf(err, errlen, "stopped while building an object");
                    return PGCDC_STOP;
                }
                size_t n = xs[i].len - done < READ_CHUNK ? (size_t)(xs[i].len - done) : READ_CHUNK;
                if (read_at(st->data_fd, rbuf, n, xs[i].off + done) < 0)
                    return sys_fail(err, errlen, "read the staging file");
                int rc = out_feed(o, rbuf, n, false, err, errlen);
                if (rc < 0)
                    return rc;
                done += n;
            }
        }
    }
    return PGCDC_OK;
}

int pgcdc_s3_stage_build(const struct pgcdc_s3_stage *st, uint32_t id, bool gzip, int out_fd,
                         struct pgcdc_s3_object *obj, volatile sig_atomic_t *abort, char *err,
                         size_t errlen)
{
    int rc = PGCDC_ERR;
    struct out *o = calloc(1, sizeof(*o));
    char *rbuf = malloc(READ_CHUNK);
    if (!o || !rbuf) {
        free(o);
        free(rbuf);
        snprintf(err, errlen, "out of memory building an object");
        return PGCDC_ERR;
    }
    o->fd = out_fd;
    o->gzip = gzip;
    o->md5 = EVP_MD_CTX_new();
    o->sha = EVP_MD_CTX_new();
    if (!o->md5 || !o->sha || !EVP_DigestInit_ex(o->md5, EVP_md5(), NULL) ||
        !EVP_DigestInit_ex(o->sha, EVP_sha256(), NULL)) {
        snprintf(err, errlen, "OpenSSL could not start a digest");
        goto done;
    }
    /* windowBits 15 + 16: a gzip wrapper. Level 1: the upload, not the CPU, should be the
     * bottleneck, and JSON lines compress well at any level. */
    if (gzip && deflateInit2(&o->z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        gzip = o->gzip = false;
        snprintf(err, errlen, "zlib could not start");
        goto done;
    }
    if (ftruncate(out_fd, 0) < 0) {
        rc = sys_fail(err, errlen, "empty an object file");
        goto done;
    }
    if ((rc = build_extents(st, id, o, rbuf, abort, err, errlen)) < 0 ||
        (rc = out_feed(o, "", 0, true, err, errlen)) < 0)
        goto done;
    unsigned int dl;
    EVP_DigestFinal_ex(o->md5, obj->md5, &dl);
    EVP_DigestFinal_ex(o->sha, obj->sha256, &dl);
    obj->len = o->len;
    rc = PGCDC_OK;
done:
    if (o->gzip)
        deflateEnd(&o->z);
    EVP_MD_CTX_free(o->md5);
    EVP_MD_CTX_free(o->sha);
    free(o);
    free(rbuf);
    return rc;
}
