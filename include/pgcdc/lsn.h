/*
 * lsn.h — PostgreSQL log sequence numbers in their text form "XXXXXXXX/XXXXXXXX".
 */
#ifndef PGCDC_LSN_H
#define PGCDC_LSN_H

#include <stddef.h>
#include <stdint.h>

/* Long enough for "FFFFFFFF/FFFFFFFF" and the NUL. */
#define PGCDC_LSN_BUFLEN 18

/*
 * Parse `len` bytes of "hi/lo" (each 1-8 hex digits, as pg_lsn_out prints them) into *out.
 * The whole span must be consumed. Returns 0, or -1 when the text is not an LSN.
 */
int pgcdc_lsn_parse(const char *s, size_t len, uint64_t *out);

/* Same, for a NUL-terminated string. */
int pgcdc_lsn_parse_str(const char *s, uint64_t *out);

/* Format as pg_lsn_out does ("16/B374D848"); returns buf. */
char *pgcdc_lsn_format(uint64_t lsn, char buf[PGCDC_LSN_BUFLEN]);

#endif
