/*
 * s3_layout.h — what the S3 sink writes into the bucket, and how it reads it back (pure,
 * unit-tested; README "Sinks", docs/warehouse.md):
 *
 *   PREFIX/<schema>.<table>/<seq>-<first commit LSN>.jsonl.gz   one object per table a flush
 *                                    touched: its events as JSON lines, gzip'd as a whole
 *   PREFIX/_pgcdc/position.json      after every object of flush <seq> is stored:
 *                                    {"seq":N,"end_lsn":"X/Y","end_lsn_int":E,"ts_ms":T}
 *   PREFIX/_pgcdc/slot               a copy of state.dir/slot (the slot record)
 *
 * <seq> is ten decimal digits and the LSN sixteen hex digits, so names sort in stream
 * order. An object whose <seq> is above position.json's belongs to a flush that never
 * completed: it is deleted at start, before anything is uploaded.
 */
#ifndef PGCDC_S3_LAYOUT_H
#define PGCDC_S3_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGCDC_S3_META_DIR "_pgcdc"
#define PGCDC_S3_KEY_MAX 1200

/* What position.json says. */
struct pgcdc_s3_position {
    uint32_t seq;     /* the last complete flush; 0: none yet */
    uint64_t end_lsn; /* every transaction ending at or before it is stored */
};

/* "PREFIX/" (or "" for the root) + rest, into out. -1 when it does not fit. */
int pgcdc_s3_layout_key(char *out, size_t outlen, const char *prefix, const char *rest);

/* The folder of a table: "<schema>.<table>". */
int pgcdc_s3_layout_folder(char *out, size_t outlen, const char *schema, const char *table);

/* An object's key: PREFIX/<folder>/<seq>-<lsn>.jsonl[.gz]. -1 when it does not fit. */
int pgcdc_s3_layout_object(char *out, size_t outlen, const char *prefix, const char *folder,
                           uint32_t seq, uint64_t first_commit_lsn, bool gzip);

/*
 * The seq of an object name (the part after the folder's '/'), or false when the name is
 * not one of ours (left alone by the clean-up).
 */
bool pgcdc_s3_layout_parse_object(const char *name, uint32_t *seq);

/* position.json's body into out; returns its length (or -1 when out is too small). */
int pgcdc_s3_layout_format_position(char *out, size_t outlen, const struct pgcdc_s3_position *p,
                                    int64_t ts_ms);

/* Parse position.json. Returns 0, or -1 with the reason in err. */
int pgcdc_s3_layout_parse_position(const char *body, size_t len, struct pgcdc_s3_position *p,
                                   char *err, size_t errlen);

/*
 * The text of the n-th (0-based) <tag>...</tag> element in an XML body, entities
 * (&amp; &lt; &gt; &quot; &apos;) decoded, into out. Returns its length, or -1 when absent
 * or too long. S3's answers (ListObjectsV2, errors) are flat enough for this.
 */
int pgcdc_s3_layout_xml_tag(const char *xml, size_t len, const char *tag, size_t n, char *out,
                            size_t outlen);

#endif
