/*
 * cutover.h — the client side of `pgcdc cutover`: main.c parses the command line into
 * struct pgcdc_cutover_opts, and pgcdc_cutover_ask sends the request to the migrate
 * following with DIR (over DIR/cutover.sock) and prints its report. The server side is
 * pgcdc_cutover_serve (migrate.h).
 */
#ifndef PGCDC_CUTOVER_H
#define PGCDC_CUTOVER_H

#include <stdbool.h>
#include <stddef.h>

/* The request line's size, at most ("cutover tables=S.T,... keep_slot=.. read_only=..
 * max_lag_ms=..\n"): main.c refuses --table lists that would not fit. */
#define PGCDC_CUTOVER_REQUEST_MAX 8192
/* What the request needs besides its tables: the "cutover" word and the flags after them. */
#define PGCDC_CUTOVER_REQUEST_SLACK 32

struct pgcdc_cutover_opts {
    const char *dir;     /* --dir, borrowed */
    bool read_only;      /* --read-only-source */
    bool keep_slot;      /* --keep-slot */
    bool abort;          /* --abort: only give the source its previous setting back */
    int max_lag_ms;      /* --max-lag-ms, > 0 (1000) */
    const char **tables; /* --table values (no comma, space or newline in one), borrowed */
    int ntables;
};

/*
 * Ask the migrate following with o->dir, print its report lines on stdout. PGCDC_OK when
 * the cutover (or abort) succeeded; PGCDC_ERR_CONFIG when no migrate listens or migrate
 * refused the request; PGCDC_ERR otherwise. err says why, in one line.
 */
int pgcdc_cutover_ask(const struct pgcdc_cutover_opts *o, char *err, size_t errlen);

#endif
