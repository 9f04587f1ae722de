/*
 * test_deadletter.c — the dead-letter file: one JSON line per entry, appended to the day's
 * file and synced; a line torn by a crash is cut off when the file is next opened; an
 * unusable directory is a configuration error.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pgcdc/common.h"
#include "pgcdc/deadletter.h"
#include "unit.h"

/* The path of the one file in dir into path; 0, or -1 when there is not exactly one. */
static int only_file(const char *dir, char *path, size_t len)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    if (!d)
        return -1;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.' && ++n == 1)
            snprintf(path, len, "%.200s/%.200s", dir, de->d_name);
    closedir(d);
    return n == 1 ? 0 : -1;
}

static void slurp(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, len - 1, f) : 0;

    buf[n] = '\0';
    if (f)
        fclose(f);
}

int main(void)
{
    char state[] = "/tmp/pgcdc-unit-dlw-XXXXXX", dir[128], path[512], buf[2048], err[512];
    struct pgcdc_deadletter *d = NULL;
    struct pgcdc_deadletter_entry e = {
        .reason = "too \"large\"",
        .topic = "p.public.t",
        .key = "{\"id\":1}",
        .key_len = 8,
        .event = "{\"op\":\"c\"}",
        .event_len = 10,
        .lsn = 23801664,
        .commit_lsn = 23801764,
        .size = 18,
    };
    FILE *f;

    CHECK(mkdtemp(state) != NULL);
    snprintf(dir, sizeof(dir), "%s/dead-letter", state);
    CHECK_INT_EQ(pgcdc_deadletter_open(&d, state, err, sizeof(err)), 0);
    CHECK_STR_EQ(pgcdc_deadletter_dir(d), dir);
    CHECK_INT_EQ(pgcdc_deadletter_write(d, &e, err, sizeof(err)), 0);
    e.key = NULL;
    e.event = NULL; /* a tombstone */
    CHECK_INT_EQ(pgcdc_deadletter_write(d, &e, err, sizeof(err)), 0);
    CHECK_INT_EQ(only_file(dir, path, sizeof(path)), 0);
    CHECK(strlen(strrchr(path, '/') + 1) == strlen("2026-01-01.jsonl"));
    slurp(path, buf, sizeof(buf));
    CHECK_STR_EQ(buf,
                 "{\"reason\":\"too \\\"large\\\"\",\"topic\":\"p.public.t\",\"key\":{\"id\":1},"
                 "\"lsn\":23801664,\"commit_lsn\":23801764,\"size\":18,\"event\":{\"op\":\"c\"}}\n"
                 "{\"reason\":\"too \\\"large\\\"\",\"topic\":\"p.public.t\",\"key\":null,"
                 "\"lsn\":23801664,\"commit_lsn\":23801764,\"size\":18,\"event\":null}\n");
    pgcdc_deadletter_close(d);

    /* A crash mid-line: the torn line goes when the file is opened again. */
    f = fopen(path, "a");
    fputs("{\"reason\":\"tor", f);
    fclose(f);
    CHECK_INT_EQ(pgcdc_deadletter_open(&d, state, err, sizeof(err)), 0);
    e.size = 7;
    CHECK_INT_EQ(pgcdc_deadletter_write(d, &e, err, sizeof(err)), 0);
    pgcdc_deadletter_close(d);
    slurp(path, buf, sizeof(buf));
    CHECK_NOT_CONTAINS(buf, "tor");
    CHECK_CONTAINS(buf, "\"event\":null}\n{\"reason\":\"too \\\"large\\\"\"");
    CHECK_CONTAINS(buf, "\"size\":7,\"event\":null}\n");

    /* state.dir unusable: exit 2 naming the directory. */
    d = NULL;
    CHECK_INT_EQ(pgcdc_deadletter_open(&d, "/proc/no-such-dir", err, sizeof(err)),
                 PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "/proc/no-such-dir/dead-letter");
    CHECK(d == NULL);

    unlink(path);
    rmdir(dir);
    rmdir(state);
    return UNIT_DONE();
}
