/*
 * replay.h — `pgcdc replay`: apply a file-sink directory to a target database, in commit
 * order, resumable after a kill with nothing applied twice.
 *
 * The pure parts are public so that unit tests can reach them without a server:
 *   event line -> struct pgcdc_replay_event (raw JSON tokens, nothing converted),
 *   JSON token -> PostgreSQL text input form (pgcdc_replay_token_text),
 *   event + target table -> one SQL statement with text parameters (pgcdc_replay_build).
 *
 * What is applied, per event op:
 *   'c', 'r'  INSERT ... ON CONFLICT (primary key) DO UPDATE SET the other present columns
 *             (a plain INSERT when the target table has no primary key)
 *   'u'       UPDATE ... SET the columns present in "after" (an absent column is an
 *             unchanged TOASTed value: left as it is) WHERE the key from "before", falling
 *             back to "after" (under REPLICA IDENTITY DEFAULT "before" is only there when
 *             the key changed)
 *   'd'       DELETE ... WHERE the key from "before"
 *   't'       TRUNCATE
 * A target table without a primary key matches updates and deletes on every column of
 * "before" (the whole old row, REPLICA IDENTITY FULL on the source), one row at a time.
 */
#ifndef PGCDC_REPLAY_H
#define PGCDC_REPLAY_H

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
 * The text a JSON token stands for, as PostgreSQL's input function of the column reads it:
 * a string unescaped, a number's digits as they are, true/false as t/f. Appends it and its
 * NUL to out and sets *is_null = false, or appends nothing and sets *is_null for null.
 * Returns 0, PGCDC_ERR for a malformed token or ENOMEM.
 */
int pgcdc_replay_token_text(struct pgcdc_span tok, struct pgcdc_buf *out, bool *is_null);

/* The target's view of one column, as its catalog says. */
struct pgcdc_replay_column {
    char *name;
    char *type; /* format_type() with the typmod, for messages and diagnosis */
    char *cast; /* the type without typmod, qualified ("pg_catalog"."bpchar"), for casts */
    bool pk;
    bool generated; /* a generated column: never written */
};

/* A target table; strings owned by whoever built it. exists = false: not on the target. */
struct pgcdc_replay_table {
    char *schema, *name;
    bool exists;
    struct pgcdc_replay_column *cols;
    size_t ncols;
    size_t npk;
    bool other_unique; /* a unique or exclusion index besides the primary key */
};

/*
 * One statement for one event: SQL text and its text parameters. Reused across events;
 * pgcdc_replay_stmt_free releases it. params[i] is NULL for SQL NULL; param_col[i] is the
 * target column index parameter i is written to or compared with.
 */
struct pgcdc_replay_stmt {
    struct pgcdc_buf sql;
    struct pgcdc_buf vals;
    size_t *off;
    const char **params;
    int *param_col;
    int nparams;
    int cap;
    char op;
    int nset;       /* insert: every parameter; update: the SET ones (the key follows) */
    bool groupable; /* may share a multi-row statement with others of the same SQL */
    bool skip;      /* nothing to do (an update that changes nothing the target holds) */
};

void pgcdc_replay_stmt_free(struct pgcdc_replay_stmt *st);

/*
 * Build the statement applying ev to table t (which must exist). Returns 0, or PGCDC_ERR
 * with err naming the table and the column when the event names a column the target does
 * not have, or a key value is missing. The caller adds the LSN to the message.
 */
int pgcdc_replay_build(struct pgcdc_replay_stmt *st, const struct pgcdc_replay_table *t,
                       const struct pgcdc_replay_event *ev, char *err, size_t errlen);

/*
 * The same change for nrows rows at once, for statements `single` (built by
 * pgcdc_replay_build for table t, groupable) whose parameters are concatenated row after
 * row:
 *   insert  INSERT ... VALUES (row 1), (row 2) ... ON CONFLICT ... (as for one row)
 *   update  UPDATE t SET c = v.c ... FROM (VALUES (row 1), ...) v WHERE t.key = v.key
 *   delete  DELETE FROM t WHERE key IN (row 1, ...)
 * The rows must have distinct keys (an update or insert cannot touch a row twice).
 * Writes the SQL into *sql (reset first). Returns 0 or PGCDC_ERR (ENOMEM).
 */
int pgcdc_replay_build_group(struct pgcdc_buf *sql, const struct pgcdc_replay_table *t,
                             const struct pgcdc_replay_stmt *single, int nrows);

/* Append name as a quoted SQL identifier ("a""b"). */
int pgcdc_replay_quote_ident(struct pgcdc_buf *b, const char *name);

struct pgcdc_replay_opts {
    const char *input;  /* the file sink's directory */
    const char *target; /* libpq DSN of the target; never logged as is */
    bool follow;
    uint64_t end_lsn; /* 0: none */
    int batch_rows;   /* end a target transaction after this many rows (at a txn boundary) */
    int group_rows;   /* rows per multi-row statement, at most (1: one statement per row) */
    int poll_ms;      /* how often --follow looks for new data */
};

/*
 * Parse `pgcdc replay` arguments (argv[0] is "replay") and run it. Returns PGCDC_OK,
 * PGCDC_ERR (exit 1) or PGCDC_ERR_CONFIG (exit 2) with a one-line reason in err.
 * The target DSN in argv is overwritten with its redacted form (ps shows no password).
 */
int pgcdc_replay_command(int argc, char **argv, char *err, size_t errlen);

/* Apply o->input to o->target until done (see the command's help). Same returns. */
int pgcdc_replay_run(const struct pgcdc_replay_opts *o, char *err, size_t errlen);

#endif
