/*
 * test_replay_read.c — replay's reader of a file-sink directory, reading ahead of the
 * writer as `pgcdc migrate`'s bulk load does: lines past .pgcdc-position are handed out
 * marked ahead, from the open segment and from part segments, in stream order; the reader
 * says the writer vouches for them only once the position (or a closed name) covers them;
 * and a bump of the writer's rewind counter (.pgcdc-epoch) while it reads is an error to
 * start over on. Without read_ahead it never passes the position.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgcdc/common.h"
#include "pgcdc/replay_read.h"
#include "pgcdc/segdir.h"
#include "unit.h"

#define SEG_A "0000000001-0000000000000100.jsonl"
#define SEG_B "0000000002-0000000000000100.jsonl"

static char dir[] = "/tmp/pgcdc-unit-replay-read-XXXXXX";
static char err[512];

static void put(const char *name, const char *text, bool append)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0644);
    CHECK(fd >= 0);
    CHECK_INT_EQ(write(fd, text, strlen(text)), (long long)strlen(text));
    close(fd);
}

static void move(const char *from, const char *to)
{
    char a[512], b[512];
    snprintf(a, sizeof(a), "%s/%s", dir, from);
    snprintf(b, sizeof(b), "%s/%s", dir, to);
    CHECK_INT_EQ(rename(a, b), 0);
}

static void position(const char *seg, unsigned off)
{
    char text[512];
    snprintf(text, sizeof(text), "lsn=0/100\nsegment=%s\noffset=%u\n", seg, off);
    put(PGCDC_SEGDIR_POSITION_FILE, text, false);
}

/* The writer's rewind counter: odd while a rewind runs, even otherwise. */
static void mark(bool rewinding)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, PGCDC_SEGDIR_EPOCH_FILE);
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    CHECK(fd >= 0);
    CHECK_INT_EQ(pgcdc_segdir_epoch_mark(fd, rewinding), 0);
    close(fd);
}

/* The next line as a string ("" when none is available), and whether it was ahead. */
static const char *next(struct pgcdc_replay_reader *r, bool *ahead)
{
    static char out[256];
    const char *line;
    size_t len;
    int rc = pgcdc_replay_reader_next(r, &line, &len, err, sizeof(err));
    CHECK(rc >= 0);
    out[0] = '\0';
    if (rc == 1)
        snprintf(out, sizeof(out), "%.*s", (int)len, line);
    *ahead = r->line_ahead;
    return out;
}

static void test_reads_ahead_through_a_split_transaction(void)
{
    struct pgcdc_replay_reader r;
    bool ahead;
    mark(false);
    /* One transaction before the table: checkpointed. The table's rows: past it. */
    put(SEG_A ".open", "t1\nr1\nr2\n", false);
    position(SEG_A ".open", 3);

    pgcdc_replay_reader_init(&r, dir);
    r.read_ahead = true;
    CHECK_STR_EQ(next(&r, &ahead), "t1");
    CHECK(!ahead);
    CHECK_INT_EQ(pgcdc_replay_reader_vouched(&r, err, sizeof(err)), 1);
    CHECK_STR_EQ(next(&r, &ahead), "r1");
    CHECK(ahead);
    CHECK_STR_EQ(next(&r, &ahead), "r2");
    CHECK(ahead);
    CHECK_STR_EQ(next(&r, &ahead), ""); /* all written is read; nothing after A yet */
    CHECK_INT_EQ(pgcdc_replay_reader_vouched(&r, err, sizeof(err)), 0);

    /* The writer splits: A stays open, B is written, then renamed part, C goes on. */
    put(SEG_A ".open", "r3\n", true);
    put(SEG_B ".open", "r4\n", false);
    CHECK_STR_EQ(next(&r, &ahead), "r3"); /* A is final once B exists: read to its end */
    CHECK_STR_EQ(next(&r, &ahead), "r4");
    CHECK(ahead);
    move(SEG_B ".open", SEG_B ".part");
    put("0000000003-0000000000000100.jsonl.open", "r5\n", false);
    CHECK_STR_EQ(next(&r, &ahead), "r5");
    CHECK(ahead);
    CHECK_INT_EQ(pgcdc_replay_reader_vouched(&r, err, sizeof(err)), 0);

    /* The commit: the checkpoint names the last segment, then A and B are closed. */
    position("0000000003-0000000000000100.jsonl.open", 3);
    CHECK_INT_EQ(pgcdc_replay_reader_vouched(&r, err, sizeof(err)), 1);
    CHECK(!r.line_ahead);
    move(SEG_B ".part", SEG_B);
    move(SEG_A ".open", SEG_A);
    CHECK_INT_EQ(pgcdc_replay_reader_vouched(&r, err, sizeof(err)), 1);
    pgcdc_replay_reader_free(&r);
}

static void test_a_rewind_while_reading_ahead_is_an_error(void)
{
    struct pgcdc_replay_reader r;
    bool ahead;
    pgcdc_replay_reader_init(&r, dir);
    r.read_ahead = true;
    move("0000000003-0000000000000100.jsonl.open", "0000000003-0000000000000100.jsonl");
    put("0000000004-0000000000000200.jsonl.open", "x1\nx2\n", false);
    position("0000000004-0000000000000200.jsonl.open", 0);
    /* Everything before: closed and read. Then the open segment, ahead. */
    const char *l;
    do
        l = next(&r, &ahead);
    while (strcmp(l, "x1") != 0 && l[0]);
    CHECK_STR_EQ(l, "x1");
    CHECK(ahead);
    /* The writer rewinds: the counter first (odd), then it cuts the segment. */
    mark(true);
    CHECK_INT_EQ(pgcdc_replay_reader_vouched(&r, err, sizeof(err)), PGCDC_ERR_RETRY);
    CHECK(r.taken_back);
    CHECK(strstr(err, "rewound") != NULL);
    put("0000000004-0000000000000200.jsonl.open", "", false);
    /* Started again while the rewind runs: nothing past the position is read. */
    pgcdc_replay_reader_restart(&r, 0);
    do
        l = next(&r, &ahead);
    while (l[0]);
    CHECK(!r.ahead_ok);
    /* The rewind writes other rows, and is done (even) before the next position. */
    put("0000000004-0000000000000200.jsonl.open", "y1\ny2\ny3\n", false);
    mark(false);
    CHECK_STR_EQ(next(&r, &ahead), "y1"); /* read ahead again, from the new counter */
    CHECK(ahead);
    CHECK_INT_EQ(pgcdc_replay_reader_vouched(&r, err, sizeof(err)), 0);
    position("0000000004-0000000000000200.jsonl.open", 9);
    CHECK_INT_EQ(pgcdc_replay_reader_vouched(&r, err, sizeof(err)), 1);
    pgcdc_replay_reader_free(&r);
}

static void test_without_read_ahead_nothing_past_the_position(void)
{
    struct pgcdc_replay_reader r;
    bool ahead;
    move("0000000004-0000000000000200.jsonl.open", "0000000004-0000000000000200.jsonl");
    put("0000000005-0000000000000300.jsonl.open", "z1\nz2\n", false);
    position("0000000005-0000000000000300.jsonl.open", 3);
    pgcdc_replay_reader_init(&r, dir);
    const char *l;
    int n = 0;
    do {
        l = next(&r, &ahead);
        CHECK(!ahead);
        n += l[0] != '\0';
    } while (strcmp(l, "z1") != 0 && l[0]);
    CHECK_STR_EQ(l, "z1");
    CHECK_STR_EQ(next(&r, &ahead), "");
    CHECK_INT_EQ(n, 10); /* t1, r1-r5 (closed now), y1-y3, z1 */
    pgcdc_replay_reader_free(&r);
}

int main(void)
{
    CHECK(mkdtemp(dir) != NULL);
    test_reads_ahead_through_a_split_transaction();
    test_a_rewind_while_reading_ahead_is_an_error();
    test_without_read_ahead_nothing_past_the_position();
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK_INT_EQ(system(cmd), 0);
    return UNIT_DONE();
}
