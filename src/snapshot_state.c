/*
 * snapshot_state.c — state.dir/snapshot (see snapshot_state.h). One key=value a line:
 *   patterns=1                  the lines below are the captured patterns
 *   include=public.*            absent: all tables
 *   exclude=public.tmp_*        absent: none
 *   table=done,0/16B2F40,0/16B2F40,public,users
 *   table=pending,0/1A00028,0/16B2F40,public,orders
 *   table=again,0/0,0/0,public,users
 * A table line: state (done, pending, or again: pending, asked for again while captured),
 * point, first point, schema, name; the names %-encoded (bytes up to
 * space, '%', ',', DEL).
 */
#include "pgcdc/snapshot_state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pgcdc/common.h"
#include "pgcdc/errors.h"
#include "pgcdc/lsn.h"
#include "pgcdc/segdir.h"
#include "pgcdc/slot.h"

static void encode(FILE *fp, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= ' ' || c == '%' || c == ',' || c == 0x7f)
            fprintf(fp, "%%%02X", c);
        else
            fputc(c, fp);
    }
}

/* Decode the %-encoded field [s, end) into out. */
static void decode(const char *s, const char *end, char *out, size_t outlen)
{
    size_t o = 0;
    while (s < end && o + 1 < outlen) {
        if (*s == '%' && end - s >= 3 && pgcdc_hex_digit(s[1]) >= 0 && pgcdc_hex_digit(s[2]) >= 0) {
            out[o++] = (char)(pgcdc_hex_digit(s[1]) * 16 + pgcdc_hex_digit(s[2]));
            s += 3;
        } else {
            out[o++] = *s++;
        }
    }
    out[o] = '\0';
}

void pgcdc_snapstate_free(struct pgcdc_snapstate *st)
{
    free(st->include);
    free(st->exclude);
    free(st->t);
    st->include = st->exclude = NULL;
    st->t = NULL;
    st->n = st->cap = 0;
}

struct pgcdc_snapstate_table *pgcdc_snapstate_find(struct pgcdc_snapstate *st, const char *schema,
                                                   const char *name)
{
    for (size_t i = 0; i < st->n; i++)
        if (strcmp(st->t[i].schema, schema) == 0 && strcmp(st->t[i].name, name) == 0)
            return &st->t[i];
    return NULL;
}

struct pgcdc_snapstate_table *pgcdc_snapstate_add(struct pgcdc_snapstate *st, const char *schema,
                                                  const char *name, uint64_t point)
{
    struct pgcdc_snapstate_table *t = pgcdc_snapstate_find(st, schema, name);
    if (t)
        return t;
    if (st->n == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 16;
        struct pgcdc_snapstate_table *n = realloc(st->t, cap * sizeof(*n));
        if (!n)
            return NULL;
        st->t = n;
        st->cap = cap;
    }
    t = &st->t[st->n++];
    memset(t, 0, sizeof(*t));
    snprintf(t->schema, sizeof(t->schema), "%s", schema);
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->point = point;
    return t;
}

size_t pgcdc_snapstate_pending(const struct pgcdc_snapstate *st)
{
    size_t n = 0;
    for (size_t i = 0; i < st->n; i++)
        n += !st->t[i].done;
    return n;
}

static int dup_or_null(char **dst, const char *src)
{
    free(*dst);
    *dst = NULL;
    if (src && !(*dst = strdup(src)))
        return PGCDC_ERR;
    return PGCDC_OK;
}

int pgcdc_snapstate_set_patterns(struct pgcdc_snapstate *st, const struct pgcdc_config *cfg)
{
    st->have_patterns = true;
    if (dup_or_null(&st->include, cfg->source_tables_include) < 0 ||
        dup_or_null(&st->exclude, cfg->source_tables_exclude) < 0)
        return PGCDC_ERR;
    return PGCDC_OK;
}

bool pgcdc_snapstate_was_selected(const struct pgcdc_snapstate *st, const struct pgcdc_config *cfg,
                                  const char *schema, const char *name)
{
    if (!st->have_patterns)
        return true;
    struct pgcdc_config then = *cfg; /* the same matcher, the patterns of that run */
    then.source_tables_include = st->include;
    then.source_tables_exclude = st->exclude;
    return pgcdc_config_table_selected(&then, schema, name);
}

/* One table= line's fields, after "table=". */
static bool parse_table(struct pgcdc_snapstate *st, char *v)
{
    char *f[5];
    int n = 0;
    for (char *p = v; n < 5; n++) {
        f[n] = p;
        char *comma = strchr(p, ',');
        if (n < 4) {
            if (!comma)
                return false;
            *comma = '\0';
            p = comma + 1;
        }
    }
    char schema[PGCDC_SNAPSTATE_NAME_MAX], name[PGCDC_SNAPSTATE_NAME_MAX];
    decode(f[3], f[3] + strlen(f[3]), schema, sizeof(schema));
    decode(f[4], f[4] + strlen(f[4]), name, sizeof(name));
    uint64_t point, first;
    if (pgcdc_lsn_parse_str(f[1], &point) < 0 || pgcdc_lsn_parse_str(f[2], &first) < 0)
        return false;
    struct pgcdc_snapstate_table *t = pgcdc_snapstate_add(st, schema, name, point);
    if (!t)
        return false;
    t->point = point;
    t->first = first;
    t->done = strcmp(f[0], "done") == 0;
    t->again = strcmp(f[0], "again") == 0;
    return true;
}

int pgcdc_snapstate_load(struct pgcdc_snapstate *st, const char *state_dir, char *err,
                         size_t errlen)
{
    memset(st, 0, sizeof(*st));
    snprintf(st->path, sizeof(st->path), "%s/snapshot", state_dir);
    FILE *fp = fopen(st->path, "r");
    if (!fp) {
        if (errno == ENOENT)
            return PGCDC_OK;
        snprintf(err, errlen, "cannot read %s: %s; fix its permissions", st->path, strerror(errno));
        return PGCDC_ERR_CONFIG;
    }
    st->present = true;
    char line[8192];
    bool bad = false;
    while (!bad && fgets(line, sizeof(line), fp)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *v = strchr(line, '=');
        if (!v)
            continue;
        *v++ = '\0';
        if (strcmp(line, "patterns") == 0)
            st->have_patterns = true;
        else if (strcmp(line, "include") == 0)
            bad = dup_or_null(&st->include, v) < 0;
        else if (strcmp(line, "exclude") == 0)
            bad = dup_or_null(&st->exclude, v) < 0;
        else if (strcmp(line, "table") == 0)
            bad = !parse_table(st, v);
    }
    fclose(fp);
    if (bad) {
        snprintf(err, errlen,
                 "%s is unreadable: restore it from a backup, or remove it (every table then "
                 "counts as done, and tables selected later get no snapshot)",
                 st->path);
        pgcdc_snapstate_free(st);
        return PGCDC_ERR_CONFIG;
    }
    return PGCDC_OK;
}

int pgcdc_snapstate_save(struct pgcdc_snapstate *st, char *err, size_t errlen)
{
    char tmp[4200], a[PGCDC_LSN_BUFLEN], b[PGCDC_LSN_BUFLEN];
    snprintf(tmp, sizeof(tmp), "%s.tmp", st->path);
    FILE *fp = fopen(tmp, "w");
    if (!fp)
        goto fail;
    if (st->have_patterns) {
        fprintf(fp, "patterns=1\n");
        if (st->include)
            fprintf(fp, "include=%s\n", st->include);
        if (st->exclude)
            fprintf(fp, "exclude=%s\n", st->exclude);
    }
    for (size_t i = 0; i < st->n; i++) {
        const struct pgcdc_snapstate_table *t = &st->t[i];
        fprintf(fp, "table=%s,%s,%s,",
                t->done    ? "done"
                : t->again ? "again"
                           : "pending",
                pgcdc_lsn_format(t->point, a), pgcdc_lsn_format(t->first, b));
        encode(fp, t->schema);
        fputc(',', fp);
        encode(fp, t->name);
        fputc('\n', fp);
    }
    if (pgcdc_slot_replace_file(fp, true, tmp, st->path) < 0)
        goto fail;
    st->present = true;
    return PGCDC_OK;
fail:
    snprintf(err, errlen, "cannot write %s: %s", st->path, strerror(errno));
    return pgcdc_errors_errno(errno, PGCDC_ERRFILE_IO);
}

/* The last line of the file at path (without its newline) into b. */
static bool last_line(const char *path, struct pgcdc_buf *b)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    bool ok = false;
    if (fd < 0)
        return false;
    if (fstat(fd, &sb) < 0 || sb.st_size == 0)
        goto out;
    /* Read a tail twice as long each time until it holds the line before the last. */
    for (off_t want = 65536; want < ((off_t)1 << 31); want *= 2) {
        off_t from = sb.st_size > want ? sb.st_size - want : 0;
        size_t n = (size_t)(sb.st_size - from);
        pgcdc_buf_reset(b);
        if (pgcdc_buf_reserve(b, n) < 0 || pread(fd, b->data, n, from) != (ssize_t)n)
            goto out;
        b->len = n;
        if (b->data[b->len - 1] == '\n')
            b->len--;
        char *nl = memrchr(b->data, '\n', b->len);
        if (nl || from == 0) {
            size_t skip = nl ? (size_t)(nl + 1 - b->data) : 0;
            memmove(b->data, b->data + skip, b->len - skip);
            b->len -= skip;
            ok = b->len > 0;
            goto out;
        }
    }
out:
    close(fd);
    return ok;
}

bool pgcdc_snapstate_sink_ends_with(const char *dir, const char *schema, const char *table,
                                    uint64_t point)
{
    struct pgcdc_segdir_list l = {0};
    struct pgcdc_buf line = {0}, want = {0};
    bool yes = false;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return false;
    if (pgcdc_segdir_list(dfd, &l) == 0 && l.n > 0) {
        char path[4096 + PGCDC_SEGDIR_NAME_MAX], tail[96];
        snprintf(path, sizeof(path), "%s/%s", dir, l.e[l.n - 1].name);
        snprintf(tail, sizeof(tail), ",\"commit_lsn\":%llu,", (unsigned long long)point);
        /* The source block as event.c writes it: "schema":..,"table":..,"txId". */
        if (pgcdc_buf_append_str(&want, "\"schema\":") == 0 &&
            pgcdc_buf_append_json_str(&want, schema, strlen(schema)) == 0 &&
            pgcdc_buf_append_str(&want, ",\"table\":") == 0 &&
            pgcdc_buf_append_json_str(&want, table, strlen(table)) == 0 &&
            pgcdc_buf_append_str(&want, ",\"txId\":") == 0 && last_line(path, &line)) {
            const char *src = memmem(line.data, line.len, "\"source\":", 9);
            size_t rest = src ? line.len - (size_t)(src - line.data) : 0;
            yes = src && memmem(src, rest, want.data, want.len) &&
                  memmem(src, rest, tail, strlen(tail)) &&
                  memmem(src, rest, "\"snapshot\":\"last\"}", 18);
        }
    }
    pgcdc_segdir_list_free(&l);
    close(dfd);
    pgcdc_buf_free(&line);
    pgcdc_buf_free(&want);
    return yes;
}
