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
    r->vouch_off = 0;
    r->line_ahead = false;
    r->ahead_ok = false;
    r->taken_back = false;
}

/* The writer took back what was read ahead (what it did to the directory, or to cur):
 * PGCDC_ERR_RETRY, to read again from the last commit (taken_back). */
static int taken_back(struct pgcdc_replay_reader *r, const char *did, bool to_cur, char *err,
                      size_t errlen)
{
    r->taken_back = true;
    snprintf(err, errlen,
             "capture %s %s%s%s while replay read ahead: reading again from the last commit", did,
             r->dir, to_cur ? "/" : "", to_cur ? r->cur : "");
    return PGCDC_ERR_RETRY;
}

/*
 * Reading ahead: the writer's rewind counter, after the position (a rewind makes it odd
 * before it cuts a byte, even once done, and publishes a position only after). Reading
 * ahead begins at an even value; while it is odd (a rewind runs) nothing past the position
 * is read; any change once reading ahead is PGCDC_ERR_RETRY (taken_back).
 */
static int check_epoch(struct pgcdc_replay_reader *r, char *err, size_t errlen)
{
    uint64_t e = 0;
    bool have = pgcdc_segdir_read_epoch(r->dir, &e);
    if (r->ahead_ok && (!have || e != r->epoch))
        return taken_back(r, "rewound (after a failure or a restart)", false, err, errlen);
    r->ahead_ok = have && e % 2 == 0;
    r->epoch = e;
    return PGCDC_OK;
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

/* The directory's segments in stream order; reading ahead, the part ones too. */
static int list_segments(struct pgcdc_replay_reader *r, struct pgcdc_segdir_list *l, char *err,
                         size_t errlen)
{
    int dfd = open(r->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int listed = dfd < 0       ? -1
                 : r->ahead_ok ? pgcdc_segdir_list_all(dfd, l)
                               : pgcdc_segdir_list(dfd, l);
    int e = errno;
    if (dfd >= 0)
        close(dfd);
    if (listed < 0 && e == ENOMEM)
        snprintf(err, errlen, "out of memory listing %s", r->dir);
    else if (listed < 0)
        snprintf(err, errlen, "cannot list --input %s: %s", r->dir, strerror(e));
    return listed < 0 ? PGCDC_ERR : PGCDC_OK;
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
    if (list_segments(r, &l, err, errlen) < 0)
        return PGCDC_ERR;
    size_t j = 0;
    int rc = 0;
    while (j < l.n && strcmp(l.e[j].closed, r->cur) <= 0)
        j++;
    while (j + 1 < l.n && r->skip_lsn && l.e[j + 1].first_lsn && l.e[j + 1].first_lsn < r->skip_lsn)
        j++;
    if (j < l.n) {
        /* Reading ahead, prev is the segment that ends the lines handed out: not an empty
         * one after it. */
        if (!r->ahead_ok || r->off > 0 || !r->prev[0]) {
            memcpy(r->prev, r->cur, sizeof(r->prev));
            r->prev_size = r->off;
        }
        snprintf(r->cur, sizeof(r->cur), "%s", l.e[j].closed);
        r->off = 0;
        r->cur_closed = false;
        rc = 1;
    }
    pgcdc_segdir_list_free(&l);
    return rc;
}

/* Reading ahead: whether a segment sorting after cur is in the directory. 1, 0, or <0. */
static int later_segment(struct pgcdc_replay_reader *r, char *err, size_t errlen)
{
    struct pgcdc_segdir_list l;
    if (list_segments(r, &l, err, errlen) < 0)
        return PGCDC_ERR;
    int later = l.n > 0 && strcmp(l.e[l.n - 1].closed, r->cur) > 0;
    pgcdc_segdir_list_free(&l);
    return later;
}

/*
 * Reading ahead: how many bytes of cur the writer vouches for now. All of a closed
 * segment, and of one sorting before the segment the position names (its bytes were
 * synced before that checkpoint, and recovery closes it); of the segment the position
 * names, its offset; of any other, none.
 */
static uint64_t vouch_for(struct pgcdc_replay_reader *r, const char *seg)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", r->dir, seg);
    if (stat(path, &st) == 0)
        return UINT64_MAX; /* renamed closed since it was opened */
    if (!r->have_pos || r->pos_seg[0] == '\0')
        return 0;
    char pos_closed[PGCDC_SEGDIR_NAME_MAX];
    pgcdc_segdir_closed_name(r->pos_seg, pos_closed, sizeof(pos_closed));
    int c = strcmp(seg, pos_closed);
    return c < 0 ? UINT64_MAX : c == 0 ? r->pos_off : 0;
}

/* Open cur under its closed name, else its open name (or, reading ahead, its part name).
 * Returns fd or -1 (errno). */
static int open_current(struct pgcdc_replay_reader *r, bool *closed)
{
    char path[4096], open_name[PGCDC_SEGDIR_NAME_MAX + 8], part_name[PGCDC_SEGDIR_NAME_MAX + 8];
    pgcdc_segdir_open_name(r->cur, open_name, sizeof(open_name));
    pgcdc_segdir_part_name(r->cur, part_name, sizeof(part_name));
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
        if (r->ahead_ok) {
            snprintf(path, sizeof(path), "%s/%s", r->dir, part_name);
            if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
                *closed = false;
                return fd;
            }
            if (errno != ENOENT)
                return -1;
        }
        /* Renamed from open (or part) to closed between the opens: look again. */
    }
    errno = ENOENT;
    return -1;
}

/*
 * How far cur (open as fd) may be read: a closed segment to its size, the open one only
 * to the prefix the position vouches for (whole, durable transactions); reading ahead, an
 * open or part segment as far as it is written.
 */
static int read_limit(struct pgcdc_replay_reader *r, int fd, bool closed, uint64_t *limit,
                      char *err, size_t errlen)
{
    *limit = r->off;
    if (r->ahead_ok && !closed) {
        struct stat stt;
        if (fstat(fd, &stt) < 0) {
            snprintf(err, errlen, "cannot stat %s/%s: %s", r->dir, r->cur, strerror(errno));
            return PGCDC_ERR;
        }
        if ((uint64_t)stt.st_size < r->off)
            return taken_back(r, "cut back", true, err, errlen);
        r->vouch_off = vouch_for(r, r->cur);
        *limit = (uint64_t)stt.st_size;
        if (r->cur_closed) /* final (the writer went on): read to this size, then move on */
            r->cur_size = *limit;
        return PGCDC_OK;
    }
    r->vouch_off = UINT64_MAX;
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
    int rc;
    if (r->read_ahead && (rc = check_epoch(r, err, errlen)) < 0)
        return rc;
    for (;;) {
        if (r->cur[0] == '\0' || (r->cur_closed && r->off >= r->cur_size)) {
            if (r->cur[0] && r->bpos < r->buf.len) {
                snprintf(err, errlen, "segment %s/%s ends in the middle of a line", r->dir, r->cur);
                return PGCDC_ERR;
            }
            if ((rc = next_segment(r, err, errlen)) <= 0)
                return rc;
        }
        bool closed;
        int fd = open_current(r, &closed);
        if (fd < 0 && errno == ENOENT && r->ahead_ok)
            return taken_back(r, "removed", true, err, errlen);
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
        if (!closed && !r->cur_closed) {
            /* Reading ahead, a segment the writer left for a later one is final: it synced
             * it before opening the next. Read it to its size once more, then move on. */
            int later = r->ahead_ok ? later_segment(r, err, errlen) : 0;
            if (later <= 0)
                return later;
            r->cur_closed = true;
            r->cur_size = UINT64_MAX;
            continue;
        }
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
                if (r->ahead_ok)
                    r->line_ahead = r->off - (r->buf.len - r->bpos) > r->vouch_off;
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

int pgcdc_replay_reader_vouched(struct pgcdc_replay_reader *r, char *err, size_t errlen)
{
    if (!r->ahead_ok || r->cur[0] == '\0') {
        r->line_ahead = false;
        return 1;
    }
    read_position(r);
    uint64_t used = r->off - (r->buf.len - r->bpos);
    r->vouch_off = vouch_for(r, r->cur);
    bool ahead = used > r->vouch_off;
    /* Nothing of cur taken yet: the lines handed out end the segment before it. (A later
     * byte vouched for vouches for every earlier one: see vouch_for.) */
    if (used == 0 && r->prev[0] && r->prev_size > vouch_for(r, r->prev))
        ahead = true;
    /* Last: a rewind bumps the counter before it cuts a byte, and publishes a position
     * only after. An unchanged counter, read after the position, means that what was read
     * is what the position vouches for. */
    int rc = check_epoch(r, err, errlen);
    if (rc < 0)
        return rc;
    r->line_ahead = ahead;
    return !ahead;
}
