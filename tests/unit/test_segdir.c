/*
 * test_segdir.c — the file sink's directory contract: names made and parsed, the closed
 * and open names of one segment, the listing in stream order (other files ignored), the
 * position record, and checkpoint slots (newest intact one wins, torn ones refused, the
 * plain format read).
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgcdc/segdir.h"
#include "unit.h"

static void test_names(void)
{
    char n[PGCDC_SEGDIR_NAME_MAX], c[PGCDC_SEGDIR_NAME_MAX];
    struct pgcdc_segdir_entry e;
    size_t closed_len;
    pgcdc_segdir_name(n, sizeof(n), 7, 0x16B3748, true);
    CHECK_STR_EQ(n, "0000000007-00000000016B3748.jsonl.open");
    CHECK(pgcdc_segdir_parse_name(n, &e, &closed_len));
    CHECK(e.open);
    CHECK_INT_EQ(e.seq, 7);
    CHECK_U64_EQ(e.first_lsn, 0x16B3748);
    CHECK_INT_EQ(closed_len, strlen("0000000007-00000000016B3748.jsonl"));
    pgcdc_segdir_closed_name(n, c, sizeof(c));
    CHECK_STR_EQ(c, "0000000007-00000000016B3748.jsonl");
    CHECK(pgcdc_segdir_is_open_of(n, c));
    CHECK(!pgcdc_segdir_is_open_of(c, c));
    pgcdc_segdir_closed_name(c, n, sizeof(n));
    CHECK_STR_EQ(n, c);
    pgcdc_segdir_open_name(c, n, sizeof(n));
    CHECK_STR_EQ(n, "0000000007-00000000016B3748.jsonl.open");

    CHECK(pgcdc_segdir_parse_name("0000000002-00000000000000ff.jsonl", &e, &closed_len));
    CHECK(!e.open);
    CHECK_U64_EQ(e.first_lsn, 0xff);
    /* Any *.jsonl is a segment in name order; an LSN only where the shape has one. */
    CHECK(pgcdc_segdir_parse_name("export.jsonl", &e, &closed_len));
    CHECK_U64_EQ(e.first_lsn, 0);
    CHECK(!pgcdc_segdir_parse_name(".jsonl", &e, &closed_len));
    CHECK(!pgcdc_segdir_parse_name("a.jsonl.tmp", &e, &closed_len));
    CHECK(!pgcdc_segdir_parse_name(".pgcdc-position", &e, &closed_len));
}

static void touch(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    close(fd);
}

static void test_list(void)
{
    char dir[] = "/tmp/pgcdc-unit-segdir-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    touch(dir, "0000000003-0000000000000300.jsonl.open");
    touch(dir, "0000000001-0000000000000100.jsonl");
    touch(dir, "0000000002-0000000000000200.jsonl");
    touch(dir, ".pgcdc-position");
    touch(dir, ".pgcdc-position.tmp");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    struct pgcdc_segdir_list l;
    CHECK_INT_EQ(pgcdc_segdir_list(dfd, &l), 0);
    CHECK_INT_EQ(l.n, 3);
    if (l.n == 3) {
        CHECK_STR_EQ(l.e[0].closed, "0000000001-0000000000000100.jsonl");
        CHECK_STR_EQ(l.e[2].name, "0000000003-0000000000000300.jsonl.open");
        CHECK_STR_EQ(l.e[2].closed, "0000000003-0000000000000300.jsonl");
        CHECK(l.e[2].open && !l.e[1].open);
        CHECK_INT_EQ(l.e[1].seq, 2);
        CHECK_U64_EQ(l.e[1].first_lsn, 0x200);
    }
    pgcdc_segdir_list_free(&l);
    /* The same descriptor lists again from the start. */
    CHECK_INT_EQ(pgcdc_segdir_list(dfd, &l), 0);
    CHECK_INT_EQ(l.n, 3);
    pgcdc_segdir_list_free(&l);
    close(dfd);

    char body[512], path[512];
    int n = pgcdc_segdir_format_position(body, sizeof(body), 0x500, "x.jsonl.open", 42, 0x600);
    snprintf(path, sizeof(path), "%s/.pgcdc-position", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fwrite(body, 1, (size_t)n, f);
    fclose(f);
    struct pgcdc_segdir_record rec;
    CHECK(pgcdc_segdir_read_position(dir, &rec));
    CHECK_U64_EQ(rec.lsn, 0x500);
    CHECK_U64_EQ(rec.confirmed, 0x600);
    CHECK_STR_EQ(rec.seg, "x.jsonl.open");
    CHECK_U64_EQ(rec.off, 42);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    CHECK(!pgcdc_segdir_read_position(dir, &rec));
}

static void test_record(void)
{
    struct pgcdc_segdir_record rec;
    char t1[] = "lsn=0/10\r\nsegment=a.jsonl.open\r\noffset=9\r\nconfirmed=junk\r\n";
    CHECK(pgcdc_segdir_parse_record(t1, &rec));
    CHECK_U64_EQ(rec.lsn, 0x10);
    CHECK_STR_EQ(rec.seg, "a.jsonl.open");
    CHECK_U64_EQ(rec.off, 9);
    CHECK_U64_EQ(rec.confirmed, 0);
    char t2[] = "segment=a\noffset=1\n";
    CHECK(!pgcdc_segdir_parse_record(t2, &rec));
    char t3[] = "lsn=0/10\nlsn=bad\n";
    CHECK(!pgcdc_segdir_parse_record(t3, &rec)); /* the last lsn= counts */
}

static void test_checkpoint(void)
{
    char file[2 * PGCDC_SEGDIR_CKPT_SLOT + 1];
    struct pgcdc_segdir_record rec;
    bool two;
    pgcdc_segdir_format_slot(file, 4, 0x40, "s.jsonl.open", 400);
    pgcdc_segdir_format_slot(file + PGCDC_SEGDIR_CKPT_SLOT, 5, 0x50, "", 0);
    char copy[sizeof(file)];
    memcpy(copy, file, sizeof(file));
    CHECK(pgcdc_segdir_parse_checkpoint(copy, 2 * PGCDC_SEGDIR_CKPT_SLOT, &rec, &two));
    CHECK(two);
    CHECK_U64_EQ(rec.gen, 5);
    CHECK_U64_EQ(rec.lsn, 0x50);
    CHECK_STR_EQ(rec.seg, "");
    /* The newest slot torn: the other one counts. */
    memcpy(copy, file, sizeof(file));
    copy[PGCDC_SEGDIR_CKPT_SLOT + 100] ^= 1;
    CHECK(pgcdc_segdir_parse_checkpoint(copy, 2 * PGCDC_SEGDIR_CKPT_SLOT, &rec, &two));
    CHECK_U64_EQ(rec.gen, 4);
    CHECK_STR_EQ(rec.seg, "s.jsonl.open");
    CHECK_U64_EQ(rec.off, 400);
    /* Both torn: nothing. */
    copy[100] ^= 1;
    CHECK(!pgcdc_segdir_parse_checkpoint(copy, 2 * PGCDC_SEGDIR_CKPT_SLOT, &rec, &two));
    /* One slot only: read, but not a file to write in place. */
    memcpy(copy, file, sizeof(file));
    CHECK(pgcdc_segdir_parse_checkpoint(copy, PGCDC_SEGDIR_CKPT_SLOT, &rec, &two));
    CHECK(!two);
    CHECK_U64_EQ(rec.gen, 4);
    /* The plain format: generation 0. */
    char plain[64] = "lsn=0/30\nsegment=p.jsonl.open\noffset=3\ngen=9\n";
    CHECK(pgcdc_segdir_parse_checkpoint(plain, strlen(plain), &rec, &two));
    CHECK(!two);
    CHECK_U64_EQ(rec.gen, 0);
    CHECK_U64_EQ(rec.lsn, 0x30);
}

int main(void)
{
    test_names();
    test_list();
    test_record();
    test_checkpoint();
    return UNIT_DONE();
}
