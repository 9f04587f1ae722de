/*
 * lsn.c — LSN text form, as PostgreSQL's pg_lsn_in/pg_lsn_out read and print it.
 *
 * An LSN is a 64-bit WAL position printed as two 32-bit halves in upper-case hex without
 * leading zeros: "16/B374D848". pg_lsn_in accepts 1-8 hex digits on each side of the '/'
 * and nothing else, so we do the same: a stray sign, space or "0x" is not an LSN.
 */
#include <stdio.h>
#include <string.h>

#include "pgcdc/lsn.h"
#include "pgcdc/common.h"

/* Read 1-8 hex digits from s[*i..len) into *half; leaves *i after the last digit. */
static int parse_half(const char *s, size_t len, size_t *i, uint32_t *half)
{
    uint32_t v = 0;
    size_t start = *i;

    while (*i < len && pgcdc_hex_digit(s[*i]) >= 0) {
        if (*i - start == 8)
            return -1;
        v = (v << 4) | (uint32_t)pgcdc_hex_digit(s[*i]);
        (*i)++;
    }
    if (*i == start)
        return -1;
    *half = v;
    return 0;
}

int pgcdc_lsn_parse(const char *s, size_t len, uint64_t *out)
{
    size_t i = 0;
    uint32_t hi, lo;

    if (s == NULL || out == NULL)
        return -1;
    if (parse_half(s, len, &i, &hi) < 0)
        return -1;
    if (i >= len || s[i] != '/')
        return -1;
    i++;
    if (parse_half(s, len, &i, &lo) < 0)
        return -1;
    if (i != len)
        return -1;
    *out = ((uint64_t)hi << 32) | lo;
    return 0;
}

int pgcdc_lsn_parse_str(const char *s, uint64_t *out)
{
    if (s == NULL)
        return -1;
    return pgcdc_lsn_parse(s, strlen(s), out);
}

char *pgcdc_lsn_format(uint64_t lsn, char buf[PGCDC_LSN_BUFLEN])
{
    snprintf(buf, PGCDC_LSN_BUFLEN, "%X/%X", (unsigned)(lsn >> 32), (unsigned)(uint32_t)lsn);
    return buf;
}
