/*
 * replay_read.c — complete event lines from a file-sink directory, in stream order, up to
 * what .pgcdc-position vouches for in the open segment (see replay_read.h).
 */
#include "pgcdc/replay_read.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_CHUNK (1u << 20)

void pgcdc_replay_reader_init(struct pgcdc_replay_reader *r, const char *dir)
{
    memset(r, 0, sizeof(*r));
    r->dir = dir;
}

void pgcdc_replay_reader_free(struct pgcdc_replay_reader *r)
{
    pgcdc_buf_free(&r->buf);
}

void pgcdc_replay_reader_restart(struct pgcdc_replay_reader *r, uint64_t skip_lsn)
{
    pgcdc_buf_reset(&r->buf);
    r->bpos = 0;
    r->cur[0] = r->prev[0] = '\0';
    r->off = 0;
    r->cur_closed = false;
    r->skip_lsn = skip_lsn;
}

/* Re-read <dir>/.pgcdc-position; absent or unreadable leaves have_pos false. */
static void read_position(struct pgcdc_replay_reader *r)
{
    struct pgcdc_segdir_record rec;
    r->have_pos = pgcdc_segdir_read_position(r->dir, &rec);
    if (!r->have_pos)
        return;
    r->pos_lsn = rec.confirmed > rec.lsn ? rec.confirmed : rec.lsn;
    memcpy(r->pos_seg, rec.seg, sizeof(r->pos_seg));
    r->pos_off = rec.off;
}

/*
 * Move to the segment after cur. Returns 1 when there is one, 0 when none yet, <0 on error.
 * A segment whose successor starts below skip_lsn holds only transactions already applied
 * (commit LSNs never decrease and no transaction spans segments): it is not read. Not "at
 * or below": the snapshot's tables are sink transactions sharing one LSN, a rotation may
 * come between two of them, and a position inside that LSN (partial events) counts the
 * events of every segment holding it.
 */
static int next_segment(struct pgcdc_replay_reader *r, char *err, size_t errlen)
{
    struct pgcdc_segdir_list l;
    int dfd = open(r->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || pgcdc_segdir_list(dfd, &l) < 0) {
        int e = errno;
        if (dfd >= 0)
            close(dfd);
        if (e == ENOMEM)
            snprintf(err, errlen, "out of memory listing %s", r->dir);
        else
            snprintf(err, errlen, "cannot list --input %s: %s", r->dir, strerror(e));
        return PGCDC_ERR;
    }
    close(dfd);
    size_t j = 0;
    int rc = 0;
    while (j < l.n && strcmp(l.e[j].closed, r->cur) <= 0)
        j++;
    while (j + 1 < l.n && r->skip_lsn && l.e[j + 1].first_lsn &&
           l.e[j + 1].first_lsn < r->skip_lsn)
        j++;
    if (j < l.n) {
        memcpy(r->prev, r->cur, sizeof(r->prev));
        snprintf(r->cur, sizeof(r->cur), "%s", l.e[j].closed);
        r->off = 0;
        r->cur_closed = false;
        rc = 1;
    }
    pgcdc_segdir_list_free(&l);
    return rc;
}

/* Open cur under its closed name, else its open name. Returns fd or -1 (errno). */
static int open_current(struct pgcdc_replay_reader *r, bool *closed)
{
    char path[4096], open_name[PGCDC_SEGDIR_NAME_MAX + 8];
    pgcdc_segdir_open_name(r->cur, open_name, sizeof(open_name));
    for (int attempt = 0; attempt < 2; attempt++) {
        snprintf(path, sizeof(path), "%s/%s", r->dir, r->cur);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            *closed = true;
            return fd;
        }
        if (errno != ENOENT)
            return -1;
        snprintf(path, sizeof(path), "%s/%s", r->dir, open_name);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            *closed = false;
            return fd;
        }
        if (errno != ENOENT)
            return -1;
        /* Renamed from open to closed between the two opens: look again. */
    }
    errno = ENOENT;
    return -1;
}

/*
 * How far cur (open as fd) may be read: a closed segment to its size, the open one only
 * to the prefix the position vouches for (whole, durable transactions).
 */
static int read_limit(struct pgcdc_replay_reader *r, int fd, bool closed, uint64_t *limit,
                      char *err, size_t errlen)
{
    *limit = r->off;
    if (closed) {
        struct stat stt;
        if (fstat(fd, &stt) < 0) {
            snprintf(err, errlen, "cannot stat %s/%s: %s", r->dir, r->cur, strerror(errno));
            return PGCDC_ERR;
        }
        r->cur_closed = true;
        r->cur_size = *limit = (uint64_t)stt.st_size;
    } else if (r->have_pos && pgcdc_segdir_is_open_of(r->pos_seg, r->cur)) {
        *limit = r->pos_off > r->off ? r->pos_off : r->off;
    }
    return PGCDC_OK;
}

/* Up to want bytes of cur (fd) from r->off onto buf. Returns the bytes read, or <0. */
static ssize_t read_chunk(struct pgcdc_replay_reader *r, int fd, size_t want, char *err,
                          size_t errlen)
{
    /* Drop the lines already handed out before growing the buffer. */
    if (r->bpos > 0) {
        memmove(r->buf.data, r->buf.data + r->bpos, r->buf.len - r->bpos);
        r->buf.len -= r->bpos;
        r->bpos = 0;
    }
    if (pgcdc_buf_reserve(&r->buf, want) < 0) {
        snprintf(err, errlen, "out of memory reading %s/%s", r->dir, r->cur);
        return PGCDC_ERR;
    }
    ssize_t got = pread(fd, r->buf.data + r->buf.len, want, (off_t)r->off);
    if (got < 0) {
        snprintf(err, errlen, "cannot read %s/%s: %s", r->dir, r->cur, strerror(errno));
        return PGCDC_ERR;
    }
    r->buf.len += (size_t)got;
    r->buf.data[r->buf.len] = '\0';
    r->off += (uint64_t)got;
    return got;
}

/*
 * Read more complete data into buf. Returns 1 when bytes were added, 0 when no more
 * complete data is available now, <0 on error.
 */
static int reader_fill(struct pgcdc_replay_reader *r, char *err, size_t errlen)
{
    read_position(r);
    for (;;) {
        if (r->cur[0] == '\0' || (r->cur_closed && r->off >= r->cur_size)) {
            if (r->cur[0] && r->bpos < r->buf.len) {
                snprintf(err, errlen, "segment %s/%s ends in the middle of a line", r->dir, r->cur);
                return PGCDC_ERR;
            }
            int rc = next_segment(r, err, errlen);
            if (rc <= 0)
                return rc;
        }
        bool closed;
        int fd = open_current(r, &closed);
        if (fd < 0 && errno == ENOENT && r->off == 0) {
            /* An open segment no checkpoint had vouched for yet, removed by `pgcdc run`'s
             * recovery after a crash: its transactions come again, in a new segment. */
            memcpy(r->cur, r->prev, sizeof(r->cur));
            r->cur_closed = true;
            r->off = r->cur_size = 0;
            return 0;
        }
        if (fd < 0) {
            snprintf(err, errlen, "cannot open segment %s/%s: %s", r->dir, r->cur, strerror(errno));
            return PGCDC_ERR;
        }
        uint64_t limit;
        ssize_t got = read_limit(r, fd, closed, &limit, err, errlen);
        if (got == PGCDC_OK && r->off < limit) {
            size_t want = limit - r->off > READ_CHUNK ? READ_CHUNK : (size_t)(limit - r->off);
            got = read_chunk(r, fd, want, err, errlen);
        }
        close(fd);
        if (got < 0)
            return PGCDC_ERR;
        if (got > 0)
            return 1;
        if (!closed)
            return 0;
        if (r->off < limit)
            r->cur_size = r->off; /* shorter than it was: treat what we read as all */
        /* read to its end: on to the next segment */
    }
}

/* The next complete line (without its newline). 1: a line; 0: none available now; <0. */
int pgcdc_replay_reader_next(struct pgcdc_replay_reader *r, const char **line, size_t *len,
                             char *err, size_t errlen)
{
    for (;;) {
        if (r->bpos < r->buf.len) {
            char *s = r->buf.data + r->bpos;
            char *nl = memchr(s, '\n', r->buf.len - r->bpos);
            if (nl) {
                *line = s;
                *len = (size_t)(nl - s);
                r->bpos += *len + 1;
                return 1;
            }
        }
        int rc = reader_fill(r, err, errlen);
        if (rc <= 0)
            return rc;
    }
}

bool pgcdc_replay_reader_at_position(const struct pgcdc_replay_reader *r)
{
    if (!r->have_pos)
        return false;
    if (r->pos_seg[0] == '\0')
        return true;
    if (pgcdc_segdir_is_open_of(r->pos_seg, r->cur))
        return r->off >= r->pos_off && r->bpos >= r->buf.len;
    return strcmp(r->pos_seg, r->cur) < 0 && r->cur[0] != '\0';
}

void pgcdc_replay_reader_unread(struct pgcdc_replay_reader *r, size_t len)
{
    r->bpos -= len + 1; /* the buffer has not moved since: only a fill moves it */
}

uint64_t pgcdc_replay_reader_line_offset(const struct pgcdc_replay_reader *r, size_t len)
{
    return r->off - (r->buf.len - r->bpos) - len - 1;
}
