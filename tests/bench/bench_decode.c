/*
 * bench_decode.c — the decode+encode hot path on its own, for instruction counts under
 * callgrind (scripts/bench.sh) and quick wall-clock comparisons. Not a test.
 *
 *     bench_decode [-n ITERATIONS] [--corpus fixtures|generated|FILE] [--dump]
 *
 * A corpus is a list of wal2json format-version 2 messages, one per line:
 *   fixtures   every line of the .jsonl files in tests/fixtures/wal2json (run from tests/, or set
 *              PGCDC_FIXTURES_DIR), recorded from the real plugin: wide values, 1000-digit
 *              numerics, escapes, TOAST, REPLICA IDENTITY FULL;
 *   generated  (the default) the rows scripts/bench.sh writes: an insert, an update and a
 *              delete of its 7-column `bench` table, as wal2json 2.5 prints them;
 *   FILE       any file of such lines, e.g. pg_recvlogical's output of the benchmark.
 * Only changes (I/U/D/T) are timed; each is decoded and encoded exactly as `pgcdc run`
 * does (pgcdc_decode, pgcdc_event_encode, pgcdc_event_key into reused buffers), ITERATIONS
 * times over. bench_pass is the function to collect (callgrind --toggle-collect).
 *
 * Prints "changes N" (changes processed), "bytes N" (wal2json bytes in), "ns_per_change F";
 * --dump instead writes each encoded event and key, one per line, for byte-exact diffs
 * between two builds.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgcdc/common.h"
#include "pgcdc/decode.h"
#include "pgcdc/event.h"

struct corpus {
    char **line;
    size_t *len;
    size_t n, cap;
    size_t bytes;
};

static int corpus_add(struct corpus *c, const char *p, size_t len)
{
    /* Only changes are timed: B/C/M are per transaction, not per change. */
    static const char *acts[] = {"\"action\":\"I\"", "\"action\":\"U\"", "\"action\":\"D\"",
                                 "\"action\":\"T\""};
    int change = 0;
    for (size_t i = 0; i < 4 && !change; i++)
        change = memmem(p, len, acts[i], strlen(acts[i])) != NULL;
    if (!change)
        return 0;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 256;
        c->line = realloc(c->line, c->cap * sizeof(*c->line));
        c->len = realloc(c->len, c->cap * sizeof(*c->len));
        if (!c->line || !c->len)
            return -1;
    }
    /* Exactly len bytes, no NUL: a sanitizer build catches a read past the message. */
    if (!(c->line[c->n] = malloc(len ? len : 1)))
        return -1;
    memcpy(c->line[c->n], p, len);
    c->len[c->n++] = len;
    c->bytes += len;
    return 0;
}

static int corpus_load_file(struct corpus *c, const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        fprintf(stderr, "bench_decode: cannot open %s\n", path);
        return -1;
    }
    char *buf = NULL;
    size_t cap = 0;
    ssize_t got;
    int rc = 0;
    while (rc == 0 && (got = getline(&buf, &cap, fp)) > 0) {
        size_t l = (size_t)got;
        while (l && (buf[l - 1] == '\n' || buf[l - 1] == '\r'))
            l--;
        if (l)
            rc = corpus_add(c, buf, l);
    }
    free(buf);
    fclose(fp);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int corpus_load_fixtures(struct corpus *c)
{
    const char *dir = getenv("PGCDC_FIXTURES_DIR");
    if (!dir)
        dir = "fixtures/wal2json";
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr,
                "bench_decode: cannot open %s (run from tests/ or set "
                "PGCDC_FIXTURES_DIR)\n",
                dir);
        return -1;
    }
    char *names[256];
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 256) {
        size_t l = strlen(de->d_name);
        if (l > 6 && strcmp(de->d_name + l - 6, ".jsonl") == 0)
            names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_str); /* the same order on every machine */
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (rc == 0)
            rc = corpus_load_file(c, path);
        free(names[i]);
    }
    return rc;
}

/* The rows scripts/bench.sh writes to its `bench` table, as wal2json 2.5 prints them. */
static const char *generated[] = {
    "{\"action\":\"I\",\"xid\":759,\"timestamp\":\"2026-11-24 09:12:40.402211+00\","
    "\"lsn\":\"0/1A2B3C40\",\"schema\":\"public\",\"table\":\"bench\",\"columns\":["
    "{\"name\":\"id\",\"typeoid\":20,\"value\":123457},"
    "{\"name\":\"account\",\"typeoid\":23,\"value\":3457},"
    "{\"name\":\"amount\",\"typeoid\":1700,\"value\":1234.57},"
    "{\"name\":\"status\",\"typeoid\":25,\"value\":\"active\"},"
    "{\"name\":\"note\",\"typeoid\":25,\"value\":\"row 123457 of the benchmark workload\"},"
    "{\"name\":\"created\",\"typeoid\":1184,\"value\":\"2026-11-24 09:12:40.402211+00\"},"
    "{\"name\":\"flag\",\"typeoid\":16,\"value\":true}],"
    "\"pk\":[{\"name\":\"id\",\"typeoid\":20}]}",
    "{\"action\":\"U\",\"xid\":760,\"timestamp\":\"2026-11-24 09:12:43.118402+00\","
    "\"lsn\":\"0/2B3C4D50\",\"schema\":\"public\",\"table\":\"bench\",\"columns\":["
    "{\"name\":\"id\",\"typeoid\":20,\"value\":123457},"
    "{\"name\":\"account\",\"typeoid\":23,\"value\":3457},"
    "{\"name\":\"amount\",\"typeoid\":1700,\"value\":1235.57},"
    "{\"name\":\"status\",\"typeoid\":25,\"value\":\"updated\"},"
    "{\"name\":\"note\",\"typeoid\":25,\"value\":\"row 123457 of the benchmark workload\"},"
    "{\"name\":\"created\",\"typeoid\":1184,\"value\":\"2026-11-24 09:12:40.402211+00\"},"
    "{\"name\":\"flag\",\"typeoid\":16,\"value\":false}],"
    "\"identity\":[{\"name\":\"id\",\"typeoid\":20,\"value\":123457}],"
    "\"pk\":[{\"name\":\"id\",\"typeoid\":20}]}",
    "{\"action\":\"D\",\"xid\":761,\"timestamp\":\"2026-11-24 09:12:44.901337+00\","
    "\"lsn\":\"0/3C4D5E60\",\"schema\":\"public\",\"table\":\"bench\","
    "\"identity\":[{\"name\":\"id\",\"typeoid\":20,\"value\":123457}],"
    "\"pk\":[{\"name\":\"id\",\"typeoid\":20}]}",
};

struct state {
    struct pgcdc_decoder dec;
    struct pgcdc_buf value, key;
    struct pgcdc_event_ctx ectx;
    size_t changes;
};

/* One change, as stream.c's handle_change/emit treat it (table selection aside). */
static int one(struct state *st, const char *msg, size_t len, FILE *dump)
{
    char err[256];
    struct pgcdc_change ch;
    if (pgcdc_decode(&st->dec, msg, len, &ch, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench_decode: %s\n", err);
        return -1;
    }
    char op = pgcdc_event_op(&ch);
    pgcdc_buf_reset(&st->value);
    pgcdc_buf_reset(&st->key);
    /* A fixed now_ms keeps the output (and the instruction count) reproducible. */
    if (pgcdc_event_encode(&st->value, &st->ectx, &ch, op, 1795303108790) < 0 ||
        (op != 't' && pgcdc_event_key(&st->key, &ch, ch.action == PGCDC_ACT_DELETE) < 0))
        return -1;
    if (dump)
        fprintf(dump, "%s\n%s\n", st->value.data, st->key.len ? st->key.data : "null");
    st->changes++;
    return 0;
}

/* The collected function: everything per change, nothing of the setup. */
__attribute__((noinline)) int bench_pass(struct state *st, const struct corpus *c, long iters,
                                         FILE *dump);
__attribute__((noinline)) int bench_pass(struct state *st, const struct corpus *c, long iters,
                                         FILE *dump)
{
    for (long it = 0; it < iters; it++)
        for (size_t i = 0; i < c->n; i++)
            if (one(st, c->line[i], c->len[i], dump) < 0)
                return -1;
    return 0;
}

int main(int argc, char **argv)
{
    long iters = 1000;
    const char *which = "generated";
    int dump = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            iters = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--corpus") == 0 && i + 1 < argc)
            which = argv[++i];
        else if (strcmp(argv[i], "--dump") == 0)
            dump = 1;
        else {
            fprintf(stderr, "usage: bench_decode [-n ITERATIONS] "
                            "[--corpus fixtures|generated|FILE] [--dump]\n");
            return 2;
        }
    }
    struct corpus c = {0};
    int rc;
    if (strcmp(which, "generated") == 0) {
        rc = 0;
        for (size_t i = 0; i < sizeof(generated) / sizeof(generated[0]) && rc == 0; i++)
            rc = corpus_add(&c, generated[i], strlen(generated[i]));
    } else if (strcmp(which, "fixtures") == 0) {
        rc = corpus_load_fixtures(&c);
    } else {
        rc = corpus_load_file(&c, which);
    }
    if (rc < 0 || c.n == 0) {
        fprintf(stderr, "bench_decode: no changes in corpus %s\n", which);
        return 1;
    }

    struct state st;
    memset(&st, 0, sizeof(st));
    pgcdc_decoder_init(&st.dec);
    st.ectx = (struct pgcdc_event_ctx){.name_json = "\"pgcdc\"",
                                       .db_json = "\"bench\"",
                                       .xid = 760,
                                       .commit_lsn = 725829760,
                                       .commit_ts_ms = 1795303108774,
                                       .snapshot = "false"};
    if (dump) {
        rc = bench_pass(&st, &c, 1, stdout);
    } else {
        /* Warm the reused buffers to their steady size, outside bench_pass (not collected). */
        rc = 0;
        for (size_t i = 0; i < c.n && rc == 0; i++)
            rc = one(&st, c.line[i], c.len[i], NULL);
        st.changes = 0;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (rc == 0)
            rc = bench_pass(&st, &c, iters, NULL);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
        printf("corpus %s\nchanges %zu\nbytes %zu\nns_per_change %.1f\n", which, st.changes,
               c.bytes * (size_t)iters, st.changes ? ns / (double)st.changes : 0.0);
    }
    pgcdc_decoder_free(&st.dec);
    pgcdc_buf_free(&st.value);
    pgcdc_buf_free(&st.key);
    for (size_t i = 0; i < c.n; i++)
        free(c.line[i]);
    free(c.line);
    free(c.len);
    return rc < 0 ? 1 : 0;
}
