/*
 * segdir.h — the file sink's directory contract, shared by the writer (sink_file.c) and
 * the reader (`pgcdc replay`): segment names, the checkpoint and .pgcdc-position formats,
 * and the listing of segments in stream order. No other file spells a suffix or parses a
 * segment name.
 *
 * Names: "<seq:10 digits>-<first commit LSN:16 hex>.jsonl" is a closed segment; the one
 * segment being written carries ".jsonl.open" and is renamed to its closed name when it
 * closes, at a transaction boundary. A transaction larger than segment_bytes goes on in new
 * segments: its first one stays open, each later one closed before the commit is renamed
 * to ".jsonl.part", and at the commit, once durable, they are renamed to their closed
 * names, the first last: no crash takes back anything in a closed segment. Readers read a
 * part segment, and the open one past the checkpoint, only to read ahead (migrate's bulk
 * load), under the rewind counter below. The lexical order of names is the stream order
 * (open and part names sort by their closed names).
 *
 * Rewind counter (.pgcdc-epoch), a sequence lock: the writer makes it odd, in place,
 * before it takes back any byte past its checkpoint (recovery at start, a rewind after a
 * failure), and even again once that is done, before it writes anything new. A reader
 * reads past the checkpoint (migrate's bulk load) only while the counter is even, and
 * holds what it read only while the counter stays what it was when it began
 * (replay_read.h). Not fsync'd: a machine crash ends every reader too.
 *
 * Position record (the plain format, and the text inside each checkpoint slot), one
 * "key=value" per line, unknown lines ignored:
 *     lsn=X/X        end LSN of the last complete transaction (required)
 *     segment=NAME   the open segment, or empty when none is open
 *     offset=N       that segment's length at lsn
 *     confirmed=X/X  (.pgcdc-position only) no change at or before it is missing
 *     gen=N          (checkpoint slots only) the slot's generation
 *
 * Checkpoint file: two PGCDC_SEGDIR_CKPT_SLOT-byte text slots, each
 *     CKPT_MAGIC line, gen=, lsn=, segment=, offset=, "crc=%08x" (CRC-32 of all before
 *     it), then spaces up to the slot's last byte, a newline.
 * The intact slot with the higher generation counts. A file without the magic is read as
 * one plain record (the older format).
 */
#ifndef PGCDC_SEGDIR_H
#define PGCDC_SEGDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGCDC_SEGDIR_CLOSED_SUFFIX ".jsonl"
#define PGCDC_SEGDIR_OPEN_SUFFIX ".jsonl.open"
#define PGCDC_SEGDIR_PART_SUFFIX ".jsonl.part"
#define PGCDC_SEGDIR_POSITION_FILE ".pgcdc-position"
#define PGCDC_SEGDIR_POSITION_TMP ".pgcdc-position.tmp"
/* The rewind counter: PGCDC_SEGDIR_EPOCH_LEN digits and a newline, written in place. */
#define PGCDC_SEGDIR_EPOCH_FILE ".pgcdc-epoch"
#define PGCDC_SEGDIR_EPOCH_LEN 20
/* Any directory entry's name and its NUL (Linux NAME_MAX is 255). */
#define PGCDC_SEGDIR_NAME_MAX 256
#define PGCDC_SEGDIR_CKPT_SLOT 512
/* The position file as the sink writes it is under 320 bytes; this leaves room. */
#define PGCDC_SEGDIR_POSITION_MAX 4096

/* What one position record or checkpoint slot says. */
struct pgcdc_segdir_record {
    uint64_t gen; /* 0 when absent (the plain format) */
    uint64_t lsn;
    char seg[PGCDC_SEGDIR_NAME_MAX]; /* "" when absent or too long */
    uint64_t off;
    uint64_t confirmed; /* 0 when absent or malformed */
};

/* One segment of a listing. */
struct pgcdc_segdir_entry {
    char *name;         /* as found in the directory (malloc'd, with closed after it) */
    const char *closed; /* the closed name, also for the open segment; inside name's block */
    bool open;          /* found under its open name */
    bool part;          /* found under its part name (pgcdc_segdir_list_all only) */
    uint32_t seq;       /* the leading number, as strtoul reads it */
    uint64_t first_lsn; /* the 16 hex digits after the first '-'; 0 when not there */
};

struct pgcdc_segdir_list {
    struct pgcdc_segdir_entry *e; /* in stream order */
    size_t n;
};

/*
 * Whether name is a segment's (closed or open); if so, what it says, into *e with e->name
 * and e->closed left NULL. *closed_len is the length of its closed name.
 */
bool pgcdc_segdir_parse_name(const char *name, struct pgcdc_segdir_entry *e, size_t *closed_len);

/* The part name of the segment whose closed name is closed_name. Returns as snprintf. */
int pgcdc_segdir_part_name(const char *closed_name, char *out, size_t outlen);

/* "<seq>-<lsn>.jsonl[.open]" into out. Returns the length snprintf reports. */
int pgcdc_segdir_name(char *out, size_t outlen, uint32_t seq, uint64_t first_lsn, bool open);

/* The closed name of a segment given by either name. */
void pgcdc_segdir_closed_name(const char *name, char *out, size_t outlen);

/* The open name of the segment whose closed name is closed_name. Returns as snprintf. */
int pgcdc_segdir_open_name(const char *closed_name, char *out, size_t outlen);

/* Whether open_name is the open name of the segment whose closed name is closed_name. */
bool pgcdc_segdir_is_open_of(const char *open_name, const char *closed_name);

/*
 * The segments in the directory dirfd (not closed, not moved), in stream order. Returns 0
 * or -1 with errno (the listing or memory failed). The caller frees with
 * pgcdc_segdir_list_free.
 */
int pgcdc_segdir_list(int dirfd, struct pgcdc_segdir_list *out);
/* The same, with the part segments too (for the writer's recovery). */
int pgcdc_segdir_list_all(int dirfd, struct pgcdc_segdir_list *out);
void pgcdc_segdir_list_free(struct pgcdc_segdir_list *l);

/*
 * The lines of one record, in place (text is cut into lines). Later lines win. Returns
 * whether there was a valid lsn= line (the last one).
 */
bool pgcdc_segdir_parse_record(char *text, struct pgcdc_segdir_record *rec);

/* The .pgcdc-position text into buf (at least 320 bytes). Returns its length. */
int pgcdc_segdir_format_position(char *buf, size_t buflen, uint64_t lsn, const char *seg,
                                 uint64_t off, uint64_t confirmed);

/*
 * Read <dir>/.pgcdc-position. Returns whether it exists, is readable and has a valid lsn=;
 * *rec holds what it says.
 */
bool pgcdc_segdir_read_position(const char *dir, struct pgcdc_segdir_record *rec);

/* <dir>/.pgcdc-epoch's counter into *epoch. Returns whether the file is there, whole. */
bool pgcdc_segdir_read_epoch(const char *dir, uint64_t *epoch);

/*
 * Move the counter in fd (.pgcdc-epoch, open for reading and writing) on, in place: to the
 * next odd value as a rewind begins (rewinding), to the next even one once it is done. In
 * place, so no new block on most filesystems. Returns 0 or -1 with errno.
 */
int pgcdc_segdir_epoch_mark(int fd, bool rewinding);

/* One checkpoint slot: the record as text with its CRC, space-padded to the slot size. */
void pgcdc_segdir_format_slot(char slot[PGCDC_SEGDIR_CKPT_SLOT], uint64_t gen, uint64_t lsn,
                              const char *seg, uint64_t off);

/*
 * The n bytes of a checkpoint file (buf[n] must be writable, for a NUL): the newest intact
 * slot, or the plain record. *two_slots: it is a complete two-slot file (written in place
 * from now on). Returns false when no intact record is there.
 */
bool pgcdc_segdir_parse_checkpoint(char *buf, size_t n, struct pgcdc_segdir_record *rec,
                                   bool *two_slots);

#endif
