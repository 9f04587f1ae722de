/*
 * replay_event.h — the events `pgcdc replay` reads: one file-sink line -> struct
 * pgcdc_replay_event (raw JSON tokens, nothing converted), and a JSON token -> the text
 * PostgreSQL's input function of the column reads (pgcdc_replay_token_text). Pure: no
 * server, no files.
 */
#ifndef PGCDC_REPLAY_EVENT_H
#define PGCDC_REPLAY_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgcdc/common.h"

/* One "name": value pair of an event's before/after object; both raw JSON tokens. */
struct pgcdc_replay_col {
    struct pgcdc_span name;  /* JSON string, quotes included */
    struct pgcdc_span value; /* JSON token: string, number, true, false or null */
};

/* One event line. Every span points into the line and lives as long as it does. */
struct pgcdc_replay_event {
    char op;                  /* 'c', 'u', 'd', 'r' or 't' */
    struct pgcdc_span schema; /* JSON strings, quotes included */
    struct pgcdc_span table;
    uint64_t lsn;
    uint64_t commit_lsn;
    bool snapshot; /* source.snapshot is "true" or "last" */
    bool snapshot_last; /* "last": the last row of its table's snapshot */
    bool has_before, has_after;
    struct pgcdc_replay_col *before; /* arrays owned by the parser */
    size_t nbefore;
    struct pgcdc_replay_col *after;
    size_t nafter;
};

/* Holds the column arrays; they grow to the widest row seen and are reused. */
struct pgcdc_replay_parser {
    struct pgcdc_replay_col *cols[2];
    size_t cap[2];
};

void pgcdc_replay_parser_init(struct pgcdc_replay_parser *p);
void pgcdc_replay_parser_free(struct pgcdc_replay_parser *p);

/*
 * Parse one event line (no newline). Returns 0, or PGCDC_ERR with the problem in err.
 * The event's arrays belong to the parser and are overwritten by the next call.
 */
int pgcdc_replay_parse(struct pgcdc_replay_parser *p, const char *line, size_t len,
                       struct pgcdc_replay_event *ev, char *err, size_t errlen);

/*
 * The fast path for the bulk of a migrate: a snapshot row ("op":"r") exactly as pgcdc's own
 * file sink writes it (src/event.c: the key order of docs/events.md, no whitespace), found
 * by a direct scan instead of the general parser. Returns 1 with ev filled as
 * pgcdc_replay_parse would fill it, or 0 when the line is anything else (ev undefined): the
 * caller then parses it in full, which also names what is wrong with it.
 */
int pgcdc_replay_parse_snapshot_row(struct pgcdc_replay_parser *p, const char *line, size_t len,
                                    struct pgcdc_replay_event *ev);

/*
 * The text a JSON token stands for, as PostgreSQL's input function of the column reads it:
 * a string unescaped, a number's digits as they are, true/false as t/f. Appends it and its
 * NUL to out and sets *is_null = false, or appends nothing and sets *is_null for null.
 * Returns 0, PGCDC_ERR for a malformed token or ENOMEM.
 */
int pgcdc_replay_token_text(struct pgcdc_span tok, struct pgcdc_buf *out, bool *is_null);

#endif
