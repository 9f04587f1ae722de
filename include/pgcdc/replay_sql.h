/*
 * replay_sql.h — the SQL `pgcdc replay` applies: event + target table -> one statement
 * with text parameters, and the multi-row form of a run of such statements. Pure text:
 * no libpq, so unit tests reach it without a server.
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
 * The TRUNCATE events of one source statement (several tables, one LSN) go out as one
 * statement (pgcdc_replay_build_truncate): tables linked by foreign keys can only be
 * truncated together.
 */
#ifndef PGCDC_REPLAY_SQL_H
#define PGCDC_REPLAY_SQL_H

#include <stdbool.h>
#include <stddef.h>

#include "pgcdc/common.h"
#include "pgcdc/replay_event.h"

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
    bool partitioned;  /* a partitioned table: its rows are in its partitions */
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

/*
 * TRUNCATE of the n tables (n >= 1; a table named twice is named once) into *sql (reset
 * first). Returns 0 or PGCDC_ERR (ENOMEM).
 */
int pgcdc_replay_build_truncate(struct pgcdc_buf *sql, const struct pgcdc_replay_table *const *t,
                                size_t n);

/* Append name as a quoted SQL identifier ("a""b"). */
int pgcdc_replay_quote_ident(struct pgcdc_buf *b, const char *name);

#endif
