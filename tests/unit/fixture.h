/*
 * fixture.h — read tests/fixtures/wal2json/NAME.jsonl (recorded wal2json output, see the
 * README there) as lines, and pull fields out of a line without the decoder under test.
 */
#ifndef PGCDC_TEST_FIXTURE_H
#define PGCDC_TEST_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc/common.h"

struct fixture {
    char **line; /* each exactly as recorded, without the newline, in its own allocation */
    size_t *len;
    size_t n;
};

/*
 * Load fixtures/wal2json/<name>.jsonl relative to the tests/ directory (ctest's working
 * directory). Every line gets an allocation of exactly its length (no NUL), so that
 * AddressSanitizer catches a decoder reading past the message. Free with fixture_free.
 */
static inline int fixture_load(struct fixture *f, const char *name)
{
    char path[256];
    FILE *fp;
    char *buf = NULL;
    size_t cap = 0;
    ssize_t got;

    memset(f, 0, sizeof *f);
    snprintf(path, sizeof path, "fixtures/wal2json/%s.jsonl", name);
    fp = fopen(path, "r");
    if (fp == NULL) {
        fprintf(stderr, "cannot open %s (run from tests/)\n", path);
        return -1;
    }
    while ((got = getline(&buf, &cap, fp)) > 0) {
        size_t l = (size_t)got;
        if (buf[l - 1] == '\n')
            l--;
        f->line = realloc(f->line, (f->n + 1) * sizeof *f->line);
        f->len = realloc(f->len, (f->n + 1) * sizeof *f->len);
        f->line[f->n] = malloc(l ? l : 1);
        memcpy(f->line[f->n], buf, l);
        f->len[f->n] = l;
        f->n++;
    }
    free(buf);
    fclose(fp);
    return 0;
}

static inline void fixture_free(struct fixture *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->line[i]);
    free(f->line);
    free(f->len);
    memset(f, 0, sizeof *f);
}

/*
 * The raw text after the first `"key":` at the top level prefix of the line, up to the
 * next ',' or '}' (good for numbers and simple strings like lsn/xid/timestamp), copied
 * into out. Returns out, or "" when absent.
 */
static inline const char *fixture_field(const char *line, size_t len, const char *key, char *out,
                                        size_t outlen)
{
    char pat[64];
    const char *p, *e;
    size_t n;

    snprintf(pat, sizeof pat, "\"%s\":", key);
    out[0] = '\0';
    p = memmem(line, len, pat, strlen(pat));
    if (p == NULL)
        return out;
    p += strlen(pat);
    e = p;
    while (e < line + len && *e != ',' && *e != '}')
        e++;
    n = (size_t)(e - p);
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    return out;
}

/* A span as a C string, for CHECK_STR_EQ (static storage, 4 in rotation). */
static inline const char *S(struct pgcdc_span sp)
{
    static char bufs[4][8192];
    static int k;
    char *b = bufs[k++ % 4];
    size_t n = sp.len < 8191 ? sp.len : 8191;

    memcpy(b, sp.p ? sp.p : "", n);
    b[n] = '\0';
    return b;
}

#endif
