/*
 * deadletter.c — refused events as fsync'd JSON lines under <state.dir>/dead-letter/; the
 * file layout and the durability contract are in deadletter.h.
 *
 * Refusals are rare (a message over a topic's size limit), so each entry is written and
 * synced on its own: no batching, and the caller may confirm its transaction as soon as
 * the write returns. The state.dir lock makes this process the only writer.
 */
#include "pgcdc/deadletter.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pgcdc/common.h"
#include "pgcdc/errors.h"

struct pgcdc_deadletter {
    char *dir; /* owned: <state.dir>/dead-letter */
    int dirfd; /* the directory, for openat and the fsync of new names */
    int fd;    /* the day's file, -1 until the first entry */
    char day[16];
    struct pgcdc_buf line; /* reused */
};

const char *pgcdc_deadletter_dir(const struct pgcdc_deadletter *d)
{
    return d->dir;
}

int pgcdc_deadletter_open(struct pgcdc_deadletter **out, const char *state_dir, char *err,
                          size_t errlen)
{
    struct pgcdc_deadletter *d = calloc(1, sizeof(*d));
    size_t n = strlen(state_dir) + sizeof("/dead-letter");

    *out = NULL;
    if (!d)
        goto nomem;
    d->dirfd = d->fd = -1;
    if (!(d->dir = malloc(n)))
        goto nomem;
    snprintf(d->dir, n, "%s/dead-letter", state_dir);
    if ((mkdir(d->dir, 0755) < 0 && errno != EEXIST) ||
        (d->dirfd = open(d->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
        access(d->dir, W_OK) < 0) {
        snprintf(err, errlen,
                 "%s cannot be used for dead letters: %s; fix its permissions or point "
                 "state.dir elsewhere",
                 d->dir, strerror(errno));
        pgcdc_deadletter_close(d);
        return PGCDC_ERR_CONFIG;
    }
    *out = d;
    return PGCDC_OK;
nomem:
    snprintf(err, errlen, "out of memory");
    pgcdc_deadletter_close(d);
    return PGCDC_ERR;
}

/* Cut a line torn by a crash off the end of fd: keep everything up to the last newline. */
static int cut_torn_line(int fd, off_t size)
{
    char buf[4096];
    off_t end = size;

    while (end > 0) {
        off_t from = end > (off_t)sizeof(buf) ? end - (off_t)sizeof(buf) : 0;
        ssize_t got = pread(fd, buf, (size_t)(end - from), from);

        if (got != end - from)
            return -1;
        for (ssize_t i = got; i > 0; i--)
            if (buf[i - 1] == '\n')
                return from + i == size ? 0 : ftruncate(fd, from + i);
        end = from;
    }
    return ftruncate(fd, 0);
}

/* The file for today (UTC), opened on the first entry of the day. */
static int open_day(struct pgcdc_deadletter *d, char *err, size_t errlen)
{
    char day[16], name[32];
    time_t now = time(NULL);
    struct tm tm;
    struct stat st;
    int fd;

    gmtime_r(&now, &tm);
    strftime(day, sizeof(day), "%Y-%m-%d", &tm);
    if (d->fd >= 0 && strcmp(day, d->day) == 0)
        return PGCDC_OK;
    snprintf(name, sizeof(name), "%s.jsonl", day);
    /* O_RDWR: a torn last line is found by reading back. */
    fd = openat(d->dirfd, name, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0 || fstat(fd, &st) < 0 || cut_torn_line(fd, st.st_size) < 0 ||
        fsync(d->dirfd) < 0) { /* the new name survives a crash */
        int e = errno;

        snprintf(err, errlen, "cannot open the dead-letter file %s/%s: %s", d->dir, name,
                 strerror(e));
        if (fd >= 0)
            close(fd);
        return pgcdc_errors_errno(e, PGCDC_ERRFILE_IO);
    }
    if (d->fd >= 0)
        close(d->fd);
    d->fd = fd;
    snprintf(d->day, sizeof(d->day), "%s", day);
    return PGCDC_OK;
}

static int build_line(struct pgcdc_buf *b, const struct pgcdc_deadletter_entry *e)
{
    pgcdc_buf_reset(b);
    if (pgcdc_buf_append_str(b, "{\"reason\":") < 0 ||
        pgcdc_buf_append_json_str(b, e->reason, strlen(e->reason)) < 0 ||
        pgcdc_buf_append_str(b, ",\"topic\":") < 0 ||
        pgcdc_buf_append_json_str(b, e->topic, strlen(e->topic)) < 0 ||
        pgcdc_buf_append_str(b, ",\"key\":") < 0 ||
        (e->key ? pgcdc_buf_append(b, e->key, e->key_len) : pgcdc_buf_append_str(b, "null")) < 0 ||
        pgcdc_buf_append_str(b, ",\"lsn\":") < 0 || pgcdc_buf_append_u64(b, e->lsn) < 0 ||
        pgcdc_buf_append_str(b, ",\"commit_lsn\":") < 0 ||
        pgcdc_buf_append_u64(b, e->commit_lsn) < 0 || pgcdc_buf_append_str(b, ",\"size\":") < 0 ||
        pgcdc_buf_append_u64(b, e->size) < 0 || pgcdc_buf_append_str(b, ",\"event\":") < 0 ||
        (e->event ? pgcdc_buf_append(b, e->event, e->event_len) : pgcdc_buf_append_str(b, "null")) <
            0 ||
        pgcdc_buf_append_str(b, "}\n") < 0)
        return PGCDC_ERR;
    return PGCDC_OK;
}

int pgcdc_deadletter_write(struct pgcdc_deadletter *d, const struct pgcdc_deadletter_entry *e,
                           char *err, size_t errlen)
{
    struct stat st = {.st_size = -1};
    size_t done = 0;
    int rc, en;

    if (build_line(&d->line, e) < 0) {
        snprintf(err, errlen, "out of memory building a dead-letter line");
        return PGCDC_ERR;
    }
    if ((rc = open_day(d, err, errlen)) < 0)
        return rc;
    if (fstat(d->fd, &st) < 0)
        goto io;
    while (done < d->line.len) {
        ssize_t w = write(d->fd, d->line.data + done, d->line.len - done);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            goto io;
        }
        done += (size_t)w;
    }
    if (fdatasync(d->fd) < 0)
        goto io;
    return PGCDC_OK;
io:
    en = errno;
    /* Leave no partial line behind: the entry is written again when retried. */
    if (st.st_size < 0 || ftruncate(d->fd, st.st_size) < 0) {
        close(d->fd);
        d->fd = -1;
    }
    snprintf(err, errlen, "cannot write the dead-letter file %s/%s.jsonl: %s", d->dir, d->day,
             strerror(en));
    return pgcdc_errors_errno(en, PGCDC_ERRFILE_IO);
}

void pgcdc_deadletter_close(struct pgcdc_deadletter *d)
{
    if (!d)
        return;
    if (d->fd >= 0)
        close(d->fd);
    if (d->dirfd >= 0)
        close(d->dirfd);
    pgcdc_buf_free(&d->line);
    free(d->dir);
    free(d);
}
