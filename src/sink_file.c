/*
 * sink_file.c — events as JSON lines in segment files, exactly once across crashes.
 *
 * State on disk, and the order it changes in (a crash between any two steps is safe):
 *   1. events are appended to "<seq>-<lsn>.jsonl.open" (buffered, written in large chunks)
 *   2. sync: write the buffer, fdatasync the segment (and the directory when the segment
 *      is new), then record in <state.dir>/checkpoint: lsn = end of the last complete
 *      transaction, segment, offset = the segment's length at that transaction's end
 *      (see "The checkpoint file" below)
 *   3. only now are the transactions acknowledged to the tracker (and so confirmable)
 *   4. rotation, at a transaction boundary: sync (the checkpoint names the segment at its
 *      full length), close, rename .jsonl.open -> .jsonl, fsync dir, and only then a
 *      checkpoint with no open segment. Until that last step the checkpoint keeps naming
 *      the segment, so recovery finds it under either name (reopened, or already closed)
 *      and never removes it. A failed close, rename or directory fsync is retried like a
 *      failed write (finish_rotation, from the step that failed; the rename may already
 *      have happened), and no new segment is opened before it succeeds.
 *   5. a transaction that fills segment_bytes on its own is split at an event boundary
 *      (split_segment): a sync (checkpointing the transactions before it), then its first
 *      segment is left as it is, still open (readers read it only up to the checkpoint);
 *      each later one closed before the commit is renamed .jsonl.open -> .jsonl.part,
 *      which no reader reads. No checkpoint is written until the commit, which syncs at
 *      once: the checkpoint names the last segment, and then (finish_split) the
 *      transaction's earlier segments are renamed to .jsonl, the last first (see
 *      close_before_checkpointed), and the directory fsync'd. So no reader sees a part of
 *      it that a crash could take back: recovery (and a rewind) closes every open or part
 *      segment that sorts before the checkpointed one (their bytes were fdatasync'd before
 *      that checkpoint) and removes every one after it.
 * After each checkpoint the same three facts are also published as
 * <sink.file.dir>/.pgcdc-position (replaced atomically, not fsync'd: it is a hint for
 * readers such as `pgcdc replay --follow`, which may apply the open segment up to that
 * offset: every transaction before it is complete and durable), with a fourth,
 * confirmed = the LSN the tracker may confirm: no change at or before it is missing from
 * the files. It passes lsn when the included tables are idle (a keepalive's walEnd), which
 * is how a reader knows that nothing more will come before a given LSN.
 * Recovery cuts the checkpointed segment back to its offset and removes any segment the
 * checkpoint does not know (all of it lies after the checkpoint LSN); transactions ending
 * at or before the checkpoint LSN are then skipped by the caller (resume_lsn).
 *
 * The checkpoint file is two 512-byte text slots, each a complete checkpoint with a
 * generation number and a CRC-32 of its text. A sync overwrites, in place, the slot that
 * does not hold the newest generation (pwrite + fdatasync: no rename, no directory
 * fsync, no new blocks, so a full disk cannot fail it); a crash mid-write leaves at worst
 * that slot torn, and recovery takes the intact slot with the higher generation, which
 * is the previous checkpoint. The file is created (and re-created after a failed write)
 * whole, as tmp + fsync + rename + directory fsync. A checkpoint in the older plain
 * format (lsn=/segment=/offset= lines, as in .pgcdc-position) is read too, and replaced
 * by the slot format at the next sync.
 */
#include "pgcdc/sink_file.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pgcdc/common.h"
#include "pgcdc/errors.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/segdir.h"
#include "pgcdc/txn_track.h"

#define WRITE_CHUNK (1u << 20) /* write(2) once this much is buffered */
#define SEG_NAME_MAX PGCDC_SEGDIR_NAME_MAX
#define CKPT_SLOT PGCDC_SEGDIR_CKPT_SLOT

struct file_sink {
    struct pgcdc_sink base;
    char *dir;
    char *ckpt_path;
    char *ckpt_tmp;
    int dirfd;
    int statefd;
    int ckfd; /* the slot-format checkpoint, open for in-place writes; -1: create it anew */
    int epochfd; /* .pgcdc-epoch, bumped before any rewind (segdir.h) */
    uint64_t segment_bytes;

    int fd;                      /* open segment, -1 when none */
    char seg[SEG_NAME_MAX];      /* its name (the open one) */
    uint32_t seq;                /* sequence number of the last segment created */
    bool seg_new;                /* created since the last directory fsync */
    /* seg is complete and synced (fd may be closed): its close, rename or directory fsync
     * has yet to succeed. The checkpoint keeps naming it meanwhile. */
    bool closing;
    uint64_t written;            /* bytes of the segment on disk (write(2) done) */
    struct pgcdc_buf wbuf;       /* bytes not yet written */
    bool unsynced;               /* written since the last fdatasync */
    /* A write or fsync failed: what the file holds past the checkpoint is unknown (a
     * partial write; pages an fsync error already marked clean, which a second fsync
     * would report as durable). Nothing more is synced until file_rewind cuts it back. */
    bool poisoned;

    uint64_t commit_off;         /* segment length at the end of the last transaction */
    uint64_t commit_end;         /* end LSN of the last transaction seen */
    struct pgcdc_txn_meta txn;   /* the transaction being written */
    bool in_txn;                 /* between begin and commit */
    uint64_t split_at;           /* split the segment mid-transaction at this length */
    /* The transaction has been split across segments: its earlier ones are not yet
     * renamed to their closed names (see step 5 in the file comment). */
    bool split;

    /* What the checkpoint on disk says, or may say: the last one written, which is known
     * durable only with ck_durable. A failed write may still have reached the disk, so
     * the segment is never cut below it (its bytes were fdatasync'd before), while the
     * transactions it covers are acknowledged only once a write of it succeeds. */
    bool ck_durable;
    uint64_t ck_gen; /* its generation (0: none, or the plain format) */
    uint64_t ck_lsn;
    uint64_t pub_confirmed; /* confirmed= as last published in .pgcdc-position */
    char ck_seg[SEG_NAME_MAX];
    uint64_t ck_off;
};

static int sys_fail(char *err, size_t errlen, const char *what, const char *path)
{
    int e = errno;
    snprintf(err, errlen, "%s %s: %s%s", what, path, strerror(e),
             (e == ENOSPC || e == EDQUOT) ? "; free space on that disk (pgcdc retries)" : "");
    return pgcdc_errors_errno(e, PGCDC_ERRFILE_IO);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int drain_buffer(struct file_sink *f, char *err, size_t errlen)
{
    if (f->wbuf.len == 0)
        return PGCDC_OK;
    if (write_all(f->fd, f->wbuf.data, f->wbuf.len) < 0) {
        f->poisoned = true;
        return sys_fail(err, errlen, "cannot write segment", f->seg);
    }
    f->written += f->wbuf.len;
    f->unsynced = true;
    pgcdc_buf_reset(&f->wbuf);
    return PGCDC_OK;
}

/* Publish the checkpoint (and the confirmed LSN) for followers; a failure loses nothing. */
static void publish_position(struct file_sink *f)
{
    char body[PGCDC_SEGDIR_NAME_MAX + 256];
    uint64_t confirmed = pgcdc_txn_track_confirmed(f->base.track);
    if (confirmed < f->ck_lsn)
        confirmed = f->ck_lsn;
    int n = pgcdc_segdir_format_position(body, sizeof(body), f->ck_lsn, f->ck_seg, f->ck_off,
                                         confirmed);
    int pfd = openat(f->dirfd, PGCDC_SEGDIR_POSITION_TMP,
                     O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (pfd >= 0) {
        bool ok = write_all(pfd, body, (size_t)n) == 0;
        close(pfd);
        if (ok && renameat(f->dirfd, PGCDC_SEGDIR_POSITION_TMP, f->dirfd,
                           PGCDC_SEGDIR_POSITION_FILE) == 0)
            f->pub_confirmed = confirmed;
    }
}

/* Write the whole two-slot file anew (tmp, fsync, rename, fsync dir) and keep it open. */
static int create_checkpoint(struct file_sink *f, const char *slot, uint64_t gen, char *err,
                             size_t errlen)
{
    char image[2 * CKPT_SLOT];
    memset(image, ' ', sizeof(image));
    image[CKPT_SLOT - 1] = image[2 * CKPT_SLOT - 1] = '\n';
    memcpy(image + (gen % 2) * CKPT_SLOT, slot, CKPT_SLOT);
    int fd = open(f->ckpt_tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return sys_fail(err, errlen, "cannot write checkpoint", f->ckpt_tmp);
    if (write_all(fd, image, sizeof(image)) < 0 || fsync(fd) < 0) {
        int rc = sys_fail(err, errlen, "cannot write checkpoint", f->ckpt_tmp);
        close(fd);
        return rc;
    }
    if (rename(f->ckpt_tmp, f->ckpt_path) < 0) {
        int rc = sys_fail(err, errlen, "cannot replace checkpoint", f->ckpt_path);
        close(fd);
        return rc;
    }
    if (fsync(f->statefd) < 0) {
        int rc = sys_fail(err, errlen, "cannot fsync state directory for", f->ckpt_path);
        close(fd);
        return rc;
    }
    f->ckfd = fd; /* the renamed file itself */
    return PGCDC_OK;
}

/* Whether the checkpoint names seg: it is open, or its rotation is unfinished. */
static bool seg_in_checkpoint(const struct file_sink *f)
{
    return f->fd >= 0 || f->closing;
}

/*
 * Record the checkpoint durably: overwrite the older slot in place, or create the file
 * when there is none yet (or the last write failed, leaving that slot unknown).
 */
static int write_checkpoint_at(struct file_sink *f, uint64_t lsn, const char *seg, uint64_t off,
                               char *err, size_t errlen)
{
    uint64_t gen = f->ck_gen + 1;
    char slot[CKPT_SLOT];
    pgcdc_segdir_format_slot(slot, gen, lsn, seg, off);
    f->ck_durable = false;
    f->ck_gen = gen;
    f->ck_lsn = lsn;
    if (seg != f->ck_seg)
        snprintf(f->ck_seg, sizeof(f->ck_seg), "%s", seg);
    f->ck_off = off;
    errno = 0;
    if (f->ckfd < 0) {
        int rc = create_checkpoint(f, slot, gen, err, errlen);
        if (rc < 0)
            return rc;
    } else if (pwrite(f->ckfd, slot, CKPT_SLOT, (off_t)((gen % 2) * CKPT_SLOT)) != CKPT_SLOT ||
               fdatasync(f->ckfd) < 0) {
        /* The other slot still holds the last checkpoint; start the file over next time. */
        if (errno == 0)
            errno = EIO; /* a short write */
        int rc = sys_fail(err, errlen, "cannot write checkpoint", f->ckpt_path);
        close(f->ckfd);
        f->ckfd = -1;
        return rc;
    }
    f->ck_durable = true;
    return PGCDC_OK;
}

static int write_checkpoint(struct file_sink *f, char *err, size_t errlen)
{
    return write_checkpoint_at(f, f->commit_end, seg_in_checkpoint(f) ? f->seg : "",
                               seg_in_checkpoint(f) ? f->commit_off : 0, err, errlen);
}

/*
 * Finish closing seg (f->closing): close it, rename it to its closed name, fsync the
 * directory. A retry starts at the step that failed; a rename that happened although it
 * reported an error (now ENOENT, with the closed name there) counts as done. The
 * caller's next checkpoint then names no segment.
 */
static int finish_rotation(struct file_sink *f, char *err, size_t errlen)
{
    char closed[SEG_NAME_MAX];
    pgcdc_segdir_closed_name(f->seg, closed, sizeof(closed));
    if (f->fd >= 0) {
        /* Linux frees the descriptor even when close fails, and the bytes were fdatasync'd
         * before: what is left to do is the rename. */
        int fd = f->fd;
        f->fd = -1;
        if (close(fd) < 0)
            return sys_fail(err, errlen, "cannot close segment", f->seg);
    }
    struct stat st;
    if (renameat(f->dirfd, f->seg, f->dirfd, closed) < 0 &&
        !(errno == ENOENT && fstatat(f->dirfd, closed, &st, 0) == 0)) /* renamed already */
        return sys_fail(err, errlen, "cannot rename segment", f->seg);
    if (fsync(f->dirfd) < 0)
        return sys_fail(err, errlen, "cannot fsync", f->dir);
    f->closing = false;
    pgcdc_log(PGCDC_LOG_DEBUG, "segment closed", "segment", closed, NULL);
    return PGCDC_OK;
}

/*
 * Close (rename to the closed name) every open or part segment sorting before ck_seg,
 * the one the durable checkpoint names, then fsync the directory: each holds bytes
 * fdatasync'd before that checkpoint. With no segment checkpointed, none is closed.
 * Last first: a reader waits at the first, still open, and when it closes the rest are
 * there (`pgcdc replay` moves on to the next listed segment, and would pass a part one).
 */
static int close_before_checkpointed(struct file_sink *f, char *err, size_t errlen)
{
    struct pgcdc_segdir_list segs;
    char ck_closed[SEG_NAME_MAX];
    int rc = PGCDC_OK;
    if (f->ck_seg[0] == '\0')
        return PGCDC_OK;
    pgcdc_segdir_closed_name(f->ck_seg, ck_closed, sizeof(ck_closed));
    if (pgcdc_segdir_list_all(f->dirfd, &segs) < 0)
        return sys_fail(err, errlen, "cannot list", f->dir);
    for (size_t i = segs.n; i-- > 0 && rc == PGCDC_OK;) {
        const struct pgcdc_segdir_entry *e = &segs.e[i];
        if ((e->open || e->part) && strcmp(e->closed, ck_closed) < 0 &&
            renameat(f->dirfd, e->name, f->dirfd, e->closed) < 0)
            rc = sys_fail(err, errlen, "cannot rename segment", e->name);
    }
    pgcdc_segdir_list_free(&segs);
    if (rc == PGCDC_OK && fsync(f->dirfd) < 0)
        rc = sys_fail(err, errlen, "cannot fsync", f->dir);
    return rc;
}

/* The split transaction is checkpointed: make its segments visible (step 5). */
static int finish_split(struct file_sink *f, char *err, size_t errlen)
{
    int rc = close_before_checkpointed(f, err, errlen);
    if (rc == PGCDC_OK) {
        f->split = false;
        pgcdc_log(PGCDC_LOG_DEBUG, "split transaction's segments closed", "segment", f->seg, NULL);
    }
    return rc;
}

static int file_sync(struct pgcdc_sink *s, char *err, size_t errlen)
{
    struct file_sink *f = (struct file_sink *)s;
    int rc;
    if (f->poisoned) {
        snprintf(err, errlen, "segment %s failed a write or fsync: cutting it back to the "
                 "checkpoint before going on", f->seg);
        return PGCDC_ERR_RETRY;
    }
    if (f->closing && (rc = finish_rotation(f, err, errlen)) < 0)
        return rc;
    if (f->fd >= 0) {
        if ((rc = drain_buffer(f, err, errlen)) < 0)
            return rc;
        if (f->unsynced) {
            if (fdatasync(f->fd) < 0) {
                f->poisoned = true;
                return sys_fail(err, errlen, "cannot fsync segment", f->seg);
            }
            f->unsynced = false;
        }
        if (f->seg_new) {
            if (fsync(f->dirfd) < 0)
                return sys_fail(err, errlen, "cannot fsync", f->dir);
            f->seg_new = false;
        }
    }
    if (f->split && f->in_txn)
        return PGCDC_OK; /* the checkpoint keeps naming the transaction's first segment */
    const char *seg = seg_in_checkpoint(f) ? f->seg : "";
    uint64_t off = seg_in_checkpoint(f) ? f->commit_off : 0;
    bool changed = f->commit_end != f->ck_lsn || off != f->ck_off ||
                   strcmp(seg, f->ck_seg) != 0 || !f->ck_durable;
    if (changed && (rc = write_checkpoint(f, err, errlen)) < 0)
        return rc;
    /* A split transaction's position goes out before its renames: a crash between them
     * leaves some of its segments closed, and the one that ends it must be vouched for. */
    if (changed && f->split)
        publish_position(f);
    if (f->split && (rc = finish_split(f, err, errlen)) < 0)
        return rc;
    pgcdc_txn_track_ack_all(s->track);
    /* After the acknowledgement: confirmed may now pass what was just checkpointed. */
    if (changed || pgcdc_txn_track_confirmed(s->track) > f->pub_confirmed)
        publish_position(f);
    return PGCDC_OK;
}

static int open_segment(struct file_sink *f, char *err, size_t errlen)
{
    int rc;
    if (f->closing && (rc = finish_rotation(f, err, errlen)) < 0)
        return rc; /* one open segment at a time, in stream order */
    f->seq++;
    pgcdc_segdir_name(f->seg, sizeof(f->seg), f->seq, f->txn.commit_lsn, true);
    /* O_APPEND: after a rewind truncates, the next write lands at the new end. */
    f->fd = openat(f->dirfd, f->seg, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0)
        return sys_fail(err, errlen, "cannot create segment in", f->dir);
    f->written = 0;
    f->commit_off = 0;
    f->seg_new = true;
    f->unsynced = false;
    return PGCDC_OK;
}

/*
 * Close the open segment: a sync checkpoints it at its full length; the second one
 * finishes the rotation and records that no segment is open (see the file comment).
 */
static int rotate(struct file_sink *f, char *err, size_t errlen)
{
    int rc = file_sync(&f->base, err, errlen);
    if (rc < 0)
        return rc;
    f->closing = true;
    return file_sync(&f->base, err, errlen);
}

/*
 * Go on with the transaction in a new segment (step 5 in the file comment): the first
 * segment it splits stays open, a later one becomes a part segment.
 */
static int split_segment(struct file_sink *f, char *err, size_t errlen)
{
    int rc = file_sync(&f->base, err, errlen);
    if (rc < 0)
        return rc;
    int fd = f->fd;
    f->fd = -1;
    bool first = !f->split;
    f->split = true; /* from here on a rewind recovers from the directory */
    if (close(fd) < 0)
        return sys_fail(err, errlen, "cannot close segment", f->seg);
    if (!first) {
        char closed[SEG_NAME_MAX], part[SEG_NAME_MAX];
        pgcdc_segdir_closed_name(f->seg, closed, sizeof(closed));
        pgcdc_segdir_part_name(closed, part, sizeof(part));
        if (renameat(f->dirfd, f->seg, f->dirfd, part) < 0)
            return sys_fail(err, errlen, "cannot rename segment", f->seg);
    }
    if ((rc = open_segment(f, err, errlen)) < 0)
        return rc;
    f->split_at = f->segment_bytes;
    return PGCDC_OK;
}

static int file_begin(struct pgcdc_sink *s, const struct pgcdc_txn_meta *txn, char *err,
                      size_t errlen)
{
    struct file_sink *f = (struct file_sink *)s;
    f->txn = *txn;
    f->in_txn = true;
    /* Split once the transaction alone has filled a segment: the one it starts in is
     * below segment_bytes (a commit past it rotates). */
    f->split_at = (f->fd >= 0 ? f->written + f->wbuf.len : 0) + f->segment_bytes;
    return PGCDC_OK;
}

static int file_write(struct pgcdc_sink *s, const struct pgcdc_record *r, char *err,
                      size_t errlen)
{
    struct file_sink *f = (struct file_sink *)s;
    int rc;
    if (f->poisoned) {
        snprintf(err, errlen, "segment %s failed a write or fsync earlier", f->seg);
        return PGCDC_ERR_RETRY;
    }
    if (f->fd < 0 && (rc = open_segment(f, err, errlen)) < 0)
        return rc;
    /* Before the event: the new segment starts with one, and carries its commit LSN. */
    if (f->written + f->wbuf.len >= f->split_at && (rc = split_segment(f, err, errlen)) < 0)
        return rc;
    if (pgcdc_buf_reserve(&f->wbuf, r->value_len + 1) < 0) {
        snprintf(err, errlen, "out of memory buffering an event of %zu bytes", r->value_len);
        return PGCDC_ERR;
    }
    memcpy(f->wbuf.data + f->wbuf.len, r->value, r->value_len);
    f->wbuf.len += r->value_len;
    f->wbuf.data[f->wbuf.len++] = '\n';
    pgcdc_txn_track_add(s->track);
    if (f->wbuf.len >= WRITE_CHUNK)
        return drain_buffer(f, err, errlen);
    return PGCDC_OK;
}

static int file_commit(struct pgcdc_sink *s, const struct pgcdc_txn_meta *txn, char *err,
                       size_t errlen)
{
    struct file_sink *f = (struct file_sink *)s;
    f->commit_end = txn->end_lsn;
    f->in_txn = false;
    if (f->fd < 0)
        return PGCDC_OK;
    f->commit_off = f->written + f->wbuf.len;
    if (f->commit_off >= f->segment_bytes)
        return rotate(f, err, errlen);
    if (f->split)
        return file_sync(s, err, errlen); /* now, before another transaction begins */
    return PGCDC_OK;
}

static int file_poll(struct pgcdc_sink *s, int timeout_ms, char *err, size_t errlen)
{
    return PGCDC_OK; /* writes never wait on anyone */
}

static int file_flush(struct pgcdc_sink *s, int timeout_ms, char *err, size_t errlen)
{
    return file_sync(s, err, errlen);
}

static int recover(struct file_sink *f, bool have_ckpt, char *err, size_t errlen);

/*
 * Rewind a split transaction: its segments are recovered from the directory as after a
 * crash. A checkpoint whose write failed may be on disk or not: it is written again
 * first, as recovery closes the segments before the one it names.
 */
static int rewind_split(struct file_sink *f, char *err, size_t errlen)
{
    int rc;
    if (!f->ck_durable &&
        (rc = write_checkpoint_at(f, f->ck_lsn, f->ck_seg, f->ck_off, err, errlen)) < 0)
        return rc;
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    f->closing = f->seg_new = f->unsynced = false;
    f->seq = 0; /* recover() finds it again */
    if ((rc = recover(f, true, err, errlen)) < 0)
        return rc;
    f->split = false;
    return PGCDC_OK;
}

/*
 * Go back to what the checkpoint says: drop buffered bytes, cut the checkpointed
 * segment to its offset, delete a segment created after it.
 */
static int file_rewind(struct pgcdc_sink *s, char *err, size_t errlen)
{
    struct file_sink *f = (struct file_sink *)s;
    int rc;
    /* Nothing is written until the rewind is done; a failed one is done again. */
    f->poisoned = true;
    /* First: a reader reading ahead must learn that what it read may be taken back. */
    if (pgcdc_segdir_epoch_mark(f->epochfd, true) < 0)
        return sys_fail(err, errlen, "cannot update", PGCDC_SEGDIR_EPOCH_FILE);
    pgcdc_buf_reset(&f->wbuf);
    f->in_txn = false;
    if (f->split) {
        if ((rc = rewind_split(f, err, errlen)) < 0)
            return rc;
    } else if (f->fd >= 0) {
        if (strcmp(f->seg, f->ck_seg) == 0) {
            /* A fresh descriptor: no writeback error of the old one carries over. */
            close(f->fd);
            f->fd = openat(f->dirfd, f->seg, O_WRONLY | O_APPEND | O_CLOEXEC);
            if (f->fd < 0 || ftruncate(f->fd, (off_t)f->ck_off) < 0 || fdatasync(f->fd) < 0)
                return sys_fail(err, errlen, "cannot truncate segment", f->seg);
            f->written = f->commit_off = f->ck_off;
            f->unsynced = false;
        } else {
            close(f->fd);
            f->fd = -1;
            if (unlinkat(f->dirfd, f->seg, 0) < 0 && errno != ENOENT)
                return sys_fail(err, errlen, "cannot remove segment", f->seg);
            f->seq--;
        }
    }
    f->commit_end = f->ck_lsn;
    if (pgcdc_segdir_epoch_mark(f->epochfd, false) < 0)
        return sys_fail(err, errlen, "cannot update", PGCDC_SEGDIR_EPOCH_FILE);
    f->poisoned = false;
    return PGCDC_OK;
}

static uint64_t file_resume_lsn(struct pgcdc_sink *s)
{
    return ((struct file_sink *)s)->ck_lsn;
}

static void file_close(struct pgcdc_sink *s)
{
    struct file_sink *f = (struct file_sink *)s;
    if (!f)
        return;
    if (f->fd >= 0)
        close(f->fd);
    if (f->dirfd >= 0)
        close(f->dirfd);
    if (f->statefd >= 0)
        close(f->statefd);
    if (f->ckfd >= 0)
        close(f->ckfd);
    if (f->epochfd >= 0)
        close(f->epochfd);
    pgcdc_buf_free(&f->wbuf);
    free(f->dir);
    free(f->ckpt_path);
    free(f->ckpt_tmp);
    free(f);
}

static const struct pgcdc_sink_ops file_ops = {
    .name = "file",
    .begin = file_begin,
    .write = file_write,
    .commit = file_commit,
    .sync = file_sync,
    .poll = file_poll,
    .flush = file_flush,
    .rewind = file_rewind,
    .resume_lsn = file_resume_lsn,
    .close = file_close,
};

static int mkdir_p(const char *path)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Read "<state>/checkpoint". Returns 1 when found, 0 when absent, <0 on error. */
static int read_checkpoint(struct file_sink *f, char *err, size_t errlen)
{
    int fd = open(f->ckpt_path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        return sys_fail(err, errlen, "cannot read checkpoint", f->ckpt_path);
    }
    char buf[4 * CKPT_SLOT + 1];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n < 0) {
        int rc = sys_fail(err, errlen, "cannot read checkpoint", f->ckpt_path);
        close(fd);
        return rc;
    }
    struct pgcdc_segdir_record c;
    bool two_slots;
    bool ok = pgcdc_segdir_parse_checkpoint(buf, (size_t)n, &c, &two_slots);
    if (two_slots)
        f->ckfd = fd; /* written in place from now on */
    else
        close(fd);
    if (!ok) {
        snprintf(err, errlen,
                 "checkpoint %s is damaged (no intact lsn= record): restore it, or start over "
                 "with an empty state.dir and sink.file.dir and a new slot",
                 f->ckpt_path);
        return PGCDC_ERR;
    }
    f->ck_durable = true;
    f->ck_gen = c.gen;
    f->ck_lsn = c.lsn;
    memcpy(f->ck_seg, c.seg, sizeof(f->ck_seg));
    f->ck_off = c.off;
    return 1;
}

/* Reopen the checkpointed open segment n and cut it back to the checkpoint's offset. */
static int reopen_checkpointed(struct file_sink *f, const char *n, char *err, size_t errlen)
{
    f->fd = openat(f->dirfd, n, O_WRONLY | O_APPEND | O_CLOEXEC);
    struct stat st;
    if (f->fd >= 0 && fstat(f->fd, &st) == 0 && (uint64_t)st.st_size < f->ck_off) {
        /* ftruncate would pad with zeros and call it data. */
        snprintf(err, errlen,
                 "segment %s is %lld bytes, shorter than the %" PRIu64 " its checkpoint "
                 "records: the disk lost data pgcdc had fsync'd; restore the segment, "
                 "or start over with a new slot",
                 n, (long long)st.st_size, f->ck_off);
        return PGCDC_ERR;
    }
    if (f->fd < 0 || ftruncate(f->fd, (off_t)f->ck_off) < 0 || fsync(f->fd) < 0)
        return sys_fail(err, errlen, "cannot recover segment", n);
    memcpy(f->seg, f->ck_seg, sizeof(f->seg)); /* n equals ck_seg, which fits */
    f->written = f->commit_off = f->ck_off;
    return PGCDC_OK;
}

/* Bring sink.file.dir back to what the checkpoint says (see the file comment). */
static int recover(struct file_sink *f, bool have_ckpt, char *err, size_t errlen)
{
    struct pgcdc_segdir_list segs;
    char ck_closed[SEG_NAME_MAX];
    pgcdc_segdir_closed_name(f->ck_seg, ck_closed, sizeof(ck_closed));
    if (pgcdc_segdir_list_all(f->dirfd, &segs) < 0)
        return sys_fail(err, errlen, "cannot list", f->dir);
    size_t nsegs = segs.n;
    int rc = PGCDC_OK;
    for (size_t i = 0; i < segs.n && rc == PGCDC_OK; i++) {
        const struct pgcdc_segdir_entry *e = &segs.e[i];
        if ((!e->open && !e->part) || !have_ckpt) {
            if (e->seq > f->seq)
                f->seq = e->seq;
            continue;
        }
        /* No segment checkpointed: every open or part one came after the checkpoint. */
        int pos = ck_closed[0] ? strcmp(e->closed, ck_closed) : 1;
        if (pos < 0) {
            /* A split transaction's segment, checkpointed complete: closed below. */
            if (e->seq > f->seq)
                f->seq = e->seq;
        } else if (pos == 0) {
            if (e->part && renameat(f->dirfd, e->name, f->dirfd, f->ck_seg) < 0)
                rc = sys_fail(err, errlen, "cannot rename segment", e->name);
            else if ((rc = reopen_checkpointed(f, f->ck_seg, err, errlen)) == PGCDC_OK &&
                     e->seq > f->seq)
                f->seq = e->seq;
        } else if (unlinkat(f->dirfd, e->name, 0) < 0) {
            rc = sys_fail(err, errlen, "cannot remove unconfirmed segment", e->name);
        } else {
            /* Begun after the last checkpoint: every byte of it will be sent again, and
             * its number is free again (segment numbers stay consecutive). */
            pgcdc_log(PGCDC_LOG_INFO, "removed segment written after the checkpoint", "segment",
                      e->name, NULL);
        }
    }
    pgcdc_segdir_list_free(&segs);
    if (rc < 0)
        return rc;
    if (!have_ckpt && nsegs > 0) {
        snprintf(err, errlen,
                 "sink.file.dir %s holds segments but %s is missing, so pgcdc cannot tell "
                 "where they end: restore the checkpoint, or move the segments away and "
                 "start over",
                 f->dir, f->ckpt_path);
        return PGCDC_ERR_CONFIG;
    }
    if (have_ckpt && (rc = close_before_checkpointed(f, err, errlen)) < 0)
        return rc;
    if (f->fd < 0)
        f->ck_seg[0] = '\0'; /* the checkpointed segment was already closed */
    if (fsync(f->dirfd) < 0)
        return sys_fail(err, errlen, "cannot fsync", f->dir);
    return PGCDC_OK;
}

int pgcdc_sink_file_open(struct pgcdc_sink **out, const struct pgcdc_config *cfg, char *err,
                         size_t errlen)
{
    int rc = PGCDC_ERR;
    struct file_sink *f = calloc(1, sizeof(*f));
    if (!f) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    f->base.ops = &file_ops;
    f->fd = f->dirfd = f->statefd = f->ckfd = f->epochfd = -1;
    f->segment_bytes = cfg->sink_file_segment_bytes;
    f->dir = strdup(cfg->sink_file_dir);
    if (!f->dir || asprintf(&f->ckpt_path, "%s/checkpoint", cfg->state_dir) < 0 ||
        asprintf(&f->ckpt_tmp, "%s/checkpoint.tmp", cfg->state_dir) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }

    if (mkdir_p(f->dir) < 0 ||
        (f->dirfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        snprintf(err, errlen,
                 "sink.file.dir \"%s\" cannot be used: %s; create it writable for this user or "
                 "point sink.file.dir elsewhere",
                 f->dir, strerror(errno));
        rc = PGCDC_ERR_CONFIG;
        goto fail;
    }
    /* Prove we can create files there now, not at the first change hours later. */
    int probe = openat(f->dirfd, ".pgcdc-probe", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (probe < 0) {
        snprintf(err, errlen,
                 "sink.file.dir \"%s\" is not writable: %s; fix its permissions or point "
                 "sink.file.dir elsewhere",
                 f->dir, strerror(errno));
        rc = PGCDC_ERR_CONFIG;
        goto fail;
    }
    close(probe);
    unlinkat(f->dirfd, ".pgcdc-probe", 0);
    /* Recovery below may take back bytes a reader read ahead: tell it first (segdir.h). */
    f->epochfd = openat(f->dirfd, PGCDC_SEGDIR_EPOCH_FILE, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f->epochfd < 0 || pgcdc_segdir_epoch_mark(f->epochfd, true) < 0) {
        rc = sys_fail(err, errlen, "cannot write", PGCDC_SEGDIR_EPOCH_FILE);
        goto fail;
    }

    f->statefd = open(cfg->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (f->statefd < 0) {
        snprintf(err, errlen, "state.dir \"%s\" cannot be opened: %s", cfg->state_dir,
                 strerror(errno));
        rc = PGCDC_ERR_CONFIG;
        goto fail;
    }
    int have = read_checkpoint(f, err, errlen);
    if (have < 0) {
        rc = have;
        goto fail;
    }
    if ((rc = recover(f, have == 1, err, errlen)) < 0)
        goto fail;
    if (pgcdc_segdir_epoch_mark(f->epochfd, false) < 0) {
        rc = sys_fail(err, errlen, "cannot write", PGCDC_SEGDIR_EPOCH_FILE);
        goto fail;
    }
    f->commit_end = f->ck_lsn;
    /*
     * A new sink records "nothing yet" before its first segment exists. Then a crash
     * before the first real checkpoint (say, during the initial snapshot) leaves segments
     * the checkpoint does not name, which recovery removes; while segments with no
     * checkpoint at all still mean a lost state.dir, which recover() refuses.
     */
    if (have == 0 && (rc = write_checkpoint(f, err, errlen)) < 0)
        goto fail;
    *out = &f->base;
    return PGCDC_OK;
fail:
    file_close(&f->base);
    return rc;
}
