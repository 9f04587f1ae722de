/*
 * replay_read.h — `pgcdc replay` reading a file-sink directory: complete event lines, in
 * stream order, never past what the writer vouches for.
 *
 * Segments are taken in name order (segdir.h): a closed one entirely, the open one only up
 * to the offset <dir>/.pgcdc-position gives for it (that prefix holds whole, durable
 * transactions). So every stretch of input ends at a transaction boundary.
 *
 * Reading ahead (read_ahead, for `pgcdc migrate`'s bulk load only): the open and part
 * segments are also read as far as the writer has written them, so a large table's rows
 * can be loaded while capture is still writing them. Each line then says whether it lies
 * past what the writer vouches for (line_ahead); the caller applies such lines without
 * committing them, and commits only once pgcdc_replay_reader_vouched says the writer has
 * made everything it has read durable (a crash of the writer takes back what it had not).
 * The writer's rewind counter must stay what it was when reading began: any change (a
 * rewind, which may take back bytes read ahead and write others in their place) is
 * PGCDC_ERR_RETRY with taken_back set, and the caller rolls back and reads again from its
 * last commit. A writer without the counter is not read ahead of.
 */
#ifndef PGCDC_REPLAY_READ_H
#define PGCDC_REPLAY_READ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/common.h"
#include "pgcdc/segdir.h"

struct pgcdc_replay_reader {
    const char *dir;                  /* borrowed: the --input directory */
    char cur[PGCDC_SEGDIR_NAME_MAX];  /* closed name of the segment being read; "" at first */
    char prev[PGCDC_SEGDIR_NAME_MAX]; /* the one before it, read to its end */
    uint64_t prev_size;               /* the bytes read of it */
    bool cur_closed;                  /* cur has its final name: read it to its end */
    uint64_t cur_size;                /* its size, when closed */
    uint64_t off;                     /* bytes of cur read into buf */
    struct pgcdc_buf buf;             /* bytes read and not yet handed out as lines */
    size_t bpos;
    /* .pgcdc-position as last read */
    bool have_pos;
    uint64_t pos_lsn; /* lsn=, or confirmed= when that is further: nothing before it is
                       * missing from the files up to segment/offset */
    char pos_seg[PGCDC_SEGDIR_NAME_MAX]; /* as written: the open name, or "" */
    uint64_t pos_off;
    uint64_t skip_lsn; /* whole segments below this commit LSN may be passed over */
    bool read_ahead;   /* set by the caller: read past what the writer vouches for */
    bool ahead_ok;     /* read ahead: the writer keeps a rewind counter (segdir.h) */
    uint64_t epoch;    /* read ahead: the counter when this reading began */
    bool taken_back;   /* the last PGCDC_ERR_RETRY: the writer rewound (read again) */
    uint64_t vouch_off; /* read ahead: bytes of cur the writer vouches for, as last looked */
    bool line_ahead;    /* read ahead: the line last returned lies past vouch_off */
};

/* Read dir (borrowed; it must outlive r). pgcdc_replay_reader_free releases the buffer. */
void pgcdc_replay_reader_init(struct pgcdc_replay_reader *r, const char *dir);
void pgcdc_replay_reader_free(struct pgcdc_replay_reader *r);

/* Start again from the first segment; whole segments before skip_lsn are passed over. */
void pgcdc_replay_reader_restart(struct pgcdc_replay_reader *r, uint64_t skip_lsn);

/*
 * The next complete line (without its newline), valid until the next call. Returns 1 for
 * a line, 0 when none is available now, PGCDC_ERR with err set.
 */
int pgcdc_replay_reader_next(struct pgcdc_replay_reader *r, const char **line, size_t *len,
                             char *err, size_t errlen);

/* Give back the line of len bytes just returned: the next call returns it again. */
void pgcdc_replay_reader_unread(struct pgcdc_replay_reader *r, size_t len);

/* The byte offset in r->cur of the line of len bytes just returned (for messages). */
uint64_t pgcdc_replay_reader_line_offset(const struct pgcdc_replay_reader *r, size_t len);

/*
 * Whether everything up to the position file's LSN (r->pos_lsn) has been read: the
 * position names no open segment (all of it is in closed segments, which we have read: the
 * directory was listed after the position was read), or we are at or past its offset.
 */
bool pgcdc_replay_reader_at_position(const struct pgcdc_replay_reader *r);

/*
 * Reading ahead: whether the writer now vouches for every line handed out so far (and not
 * given back): 1 yes, 0 not yet, PGCDC_ERR_RETRY with err set when the writer took back
 * bytes already read (it crashed and recovered: what was read ahead must be rolled back).
 * Also refreshes line_ahead. Always 1 without read_ahead.
 */
int pgcdc_replay_reader_vouched(struct pgcdc_replay_reader *r, char *err, size_t errlen);

#endif
