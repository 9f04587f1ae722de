/*
 * test_sink_file.c — the file sink's checkpoint on a real directory: synced transactions
 * survive a reopen; a sync rewrites the checkpoint in place (same inode, two slots); a
 * torn newest slot falls back to the previous checkpoint and cuts the segment back to it;
 * two torn slots are refused; a failed checkpoint write acknowledges nothing and is
 * written again; the older plain format is read and then replaced; a rotation whose close,
 * rename or directory fsync fails (faultfs.c, linked in) keeps its segment in the checkpoint
 * until it is retried, so a restart neither removes nor repeats a confirmed event.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pgcdc/common.h"
#include "faultfs.h"
#include "pgcdc/config.h"
#include "pgcdc/segdir.h"
#include "pgcdc/sink_file.h"
#include "pgcdc/txn_track.h"
#include "unit.h"

#define SLOT 512

struct env {
    char root[64];
    char state[96];
    char data[96];
    char ckpt[128];
    struct pgcdc_config cfg;
};

static void env_init(struct env *e)
{
    snprintf(e->root, sizeof(e->root), "/tmp/pgcdc-unit-XXXXXX");
    CHECK(mkdtemp(e->root) != NULL);
    snprintf(e->state, sizeof(e->state), "%s/state", e->root);
    snprintf(e->data, sizeof(e->data), "%s/data", e->root);
    snprintf(e->ckpt, sizeof(e->ckpt), "%s/checkpoint", e->state);
    CHECK(mkdir(e->state, 0755) == 0);
    char err[256];
    CHECK_INT_EQ(pgcdc_config_init(&e->cfg), PGCDC_OK);
    CHECK_INT_EQ(pgcdc_config_set(&e->cfg, "state.dir", e->state, "test", err, sizeof(err)), 0);
    CHECK_INT_EQ(pgcdc_config_set(&e->cfg, "sink.file.dir", e->data, "test", err, sizeof(err)),
                 0);
}

static void env_free(struct env *e)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", e->root);
    CHECK(system(cmd) == 0);
    pgcdc_config_free(&e->cfg);
}

static struct pgcdc_sink *sink_open(struct env *e, struct pgcdc_txn_track **t, char *err,
                                    size_t errlen)
{
    struct pgcdc_sink *s = NULL;
    if (pgcdc_sink_file_open(&s, &e->cfg, err, errlen) < 0)
        return NULL;
    *t = pgcdc_txn_track_new(16, s->ops->resume_lsn(s));
    s->track = *t;
    return s;
}

static void sink_close(struct pgcdc_sink *s, struct pgcdc_txn_track *t)
{
    s->ops->close(s);
    pgcdc_txn_track_free(t);
}

/* One transaction of `rows` events ending at end_lsn, written and committed (not synced).
 * Returns what commit returned (a rotation may fail there). */
static int txn_rc(struct pgcdc_sink *s, struct pgcdc_txn_track *t, uint64_t end_lsn, int rows)
{
    char err[256], value[64];
    struct pgcdc_txn_meta m = {.xid = (uint32_t)end_lsn, .commit_lsn = end_lsn - 8,
                               .end_lsn = end_lsn};
    CHECK_INT_EQ(pgcdc_txn_track_begin(t, end_lsn), PGCDC_OK);
    CHECK_INT_EQ(s->ops->begin(s, &m, err, sizeof(err)), PGCDC_OK);
    for (int i = 0; i < rows; i++) {
        int n = snprintf(value, sizeof(value), "{\"end\":%" PRIu64 ",\"row\":%d}", end_lsn, i);
        struct pgcdc_record r = {.schema = "public", .table = "t", .op = 'c', .value = value,
                                 .value_len = (size_t)n, .lsn = end_lsn - 16 + (uint64_t)i,
                                 .commit_lsn = m.commit_lsn, .xid = m.xid};
        CHECK_INT_EQ(s->ops->write(s, &r, err, sizeof(err)), PGCDC_OK);
    }
    int rc = s->ops->commit(s, &m, err, sizeof(err));
    if (rc == PGCDC_OK)
        pgcdc_txn_track_commit(t);
    return rc;
}

static void txn(struct pgcdc_sink *s, struct pgcdc_txn_track *t, uint64_t end_lsn, int rows)
{
    CHECK_INT_EQ(txn_rc(s, t, end_lsn, rows), PGCDC_OK);
}

static void sync_ok(struct pgcdc_sink *s)
{
    char err[256];
    CHECK_INT_EQ(s->ops->sync(s, err, sizeof(err)), PGCDC_OK);
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

static ino_t file_ino(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_ino : 0;
}

/* The size of the one open segment in the data directory. */
static off_t open_segment_size(struct env *e)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/0000000001-%016" PRIX64 ".jsonl.open", e->data,
             (uint64_t)(1000 - 8));
    return file_size(path);
}

/* Which slot (0 or 1) holds "gen=<gen>\n", or -1. */
static int slot_of(const char *ckpt, uint64_t gen)
{
    char buf[2 * SLOT + 1], want[32];
    int fd = open(ckpt, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n != 2 * SLOT)
        return -1;
    buf[n] = '\0';
    snprintf(want, sizeof(want), "\ngen=%" PRIu64 "\n", gen);
    char *p = strstr(buf, want);
    return p ? (int)((p - buf) / SLOT) : -1;
}

static void flip_byte(const char *path, off_t at)
{
    int fd = open(path, O_RDWR);
    char c;
    CHECK(pread(fd, &c, 1, at) == 1);
    c ^= 0x01;
    CHECK(pwrite(fd, &c, 1, at) == 1);
    close(fd);
}

static void test_reopen_and_in_place(void)
{
    struct env e;
    struct pgcdc_txn_track *t;
    char err[256];
    env_init(&e);

    struct pgcdc_sink *s = sink_open(&e, &t, err, sizeof(err));
    CHECK(s != NULL);
    CHECK_U64_EQ(s->ops->resume_lsn(s), 0);
    CHECK_INT_EQ(file_size(e.ckpt), 2 * SLOT); /* "nothing yet", recorded at once */
    ino_t ino = file_ino(e.ckpt);

    txn(s, t, 1000, 3);
    sync_ok(s);
    off_t after_first = open_segment_size(&e);
    CHECK(after_first > 0);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 1000);
    txn(s, t, 2000, 2);
    sync_ok(s);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 2000);
    /* Rewritten in place: the same file, the same size, gen 2 and 3 in opposite slots. */
    CHECK(file_ino(e.ckpt) == ino);
    CHECK_INT_EQ(file_size(e.ckpt), 2 * SLOT);
    CHECK(slot_of(e.ckpt, 2) >= 0 && slot_of(e.ckpt, 3) >= 0);
    CHECK(slot_of(e.ckpt, 2) != slot_of(e.ckpt, 3));
    off_t after_second = open_segment_size(&e);
    CHECK(after_second > after_first);

    /* Written but not synced: not in the checkpoint, cut away on reopen. */
    txn(s, t, 3000, 4);
    sink_close(s, t);
    s = sink_open(&e, &t, err, sizeof(err));
    CHECK(s != NULL);
    CHECK_U64_EQ(s->ops->resume_lsn(s), 2000);
    CHECK_INT_EQ(open_segment_size(&e), after_second);

    /* The newest slot torn: the previous checkpoint counts, the segment is cut to it. */
    sink_close(s, t);
    flip_byte(e.ckpt, (off_t)slot_of(e.ckpt, 3) * SLOT + 100);
    s = sink_open(&e, &t, err, sizeof(err));
    CHECK(s != NULL);
    CHECK_U64_EQ(s->ops->resume_lsn(s), 1000);
    CHECK_INT_EQ(open_segment_size(&e), after_first);
    /* Going on overwrites the torn slot, never the one still counted. */
    int kept = slot_of(e.ckpt, 2);
    txn(s, t, 2500, 1);
    sync_ok(s);
    CHECK_INT_EQ(slot_of(e.ckpt, 2), kept);
    CHECK_INT_EQ(slot_of(e.ckpt, 3), 1 - kept);
    sink_close(s, t);
    s = sink_open(&e, &t, err, sizeof(err));
    CHECK(s != NULL);
    CHECK_U64_EQ(s->ops->resume_lsn(s), 2500);
    sink_close(s, t);

    /* Both slots torn: refused, with the fix, and nothing is removed. */
    flip_byte(e.ckpt, 100);
    flip_byte(e.ckpt, SLOT + 100);
    off_t seg = open_segment_size(&e);
    s = sink_open(&e, &t, err, sizeof(err));
    CHECK(s == NULL);
    CHECK_CONTAINS(err, "is damaged");
    CHECK_CONTAINS(err, "restore it");
    CHECK_INT_EQ(open_segment_size(&e), seg);
    env_free(&e);
}

/* Make the sink's descriptor of path read-only behind its back: its next write fails. */
static void break_fd_of(const char *path)
{
    char link[64], target[256];
    for (int fd = 3; fd < 1024; fd++) {
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        if (n < 0)
            continue;
        target[n] = '\0';
        if (strcmp(target, path) == 0) {
            int ro = open(path, O_RDONLY);
            CHECK(dup2(ro, fd) == fd);
            close(ro);
            return;
        }
    }
    CHECK(!"no descriptor open on the checkpoint");
}

static void test_checkpoint_write_fails(void)
{
    struct env e;
    struct pgcdc_txn_track *t;
    char err[256];
    env_init(&e);

    struct pgcdc_sink *s = sink_open(&e, &t, err, sizeof(err));
    CHECK(s != NULL);
    txn(s, t, 1000, 2);
    sync_ok(s);
    txn(s, t, 2000, 3);
    ino_t ino = file_ino(e.ckpt);
    break_fd_of(e.ckpt);
    CHECK(s->ops->sync(s, err, sizeof(err)) < 0);
    CHECK_CONTAINS(err, "cannot write checkpoint");
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 1000); /* not acknowledged */
    /* The segment was fdatasync'd before the checkpoint, which may have reached the disk:
     * a rewind keeps those bytes and the transactions in them. */
    off_t synced = open_segment_size(&e);
    CHECK_INT_EQ(s->ops->rewind(s, err, sizeof(err)), PGCDC_OK);
    CHECK_INT_EQ(open_segment_size(&e), synced);
    CHECK_U64_EQ(s->ops->resume_lsn(s), 2000);
    /* The next sync writes that checkpoint again, as a new file, and only then acks. */
    sync_ok(s);
    CHECK(file_ino(e.ckpt) != ino);
    CHECK_U64_EQ(pgcdc_txn_track_confirmed(t), 2000);
    txn(s, t, 3000, 1);
    sync_ok(s);
    CHECK(slot_of(e.ckpt, 5) >= 0); /* 1: created, 2: txn 1000, 3: failed, 4: again, 5 */
    sink_close(s, t);
    s = sink_open(&e, &t, err, sizeof(err));
    CHECK(s != NULL);
    CHECK_U64_EQ(s->ops->resume_lsn(s), 3000);
    sink_close(s, t);
    env_free(&e);
}

static void test_plain_format(void)
{
    struct env e;
    struct pgcdc_txn_track *t;
    char err[256];
    env_init(&e);

    struct pgcdc_sink *s = sink_open(&e, &t, err, sizeof(err));
    CHECK(s != NULL);
    txn(s, t, 1000, 2);
    sync_ok(s);
    off_t first = open_segment_size(&e);
    txn(s, t, 2000, 2);
    sync_ok(s);
    sink_close(s, t);

    /* As restored from .pgcdc-position (its confirmed= line is ignored). */
    char seg[128];
    snprintf(seg, sizeof(seg), "0000000001-%016" PRIX64 ".jsonl.open", (uint64_t)(1000 - 8));
    FILE *fp = fopen(e.ckpt, "w");
    fprintf(fp, "# pgcdc file sink position, for readers; do not edit\nlsn=0/3E8\nsegment=%s\n"
                "offset=%lld\nconfirmed=0/3E8\n", seg, (long long)first);
    fclose(fp);
    s = sink_open(&e, &t, err, sizeof(err));
    CHECK(s != NULL);
    CHECK_U64_EQ(s->ops->resume_lsn(s), 1000);
    CHECK_INT_EQ(open_segment_size(&e), first);
    txn(s, t, 2000, 2);
    sync_ok(s);
    CHECK_INT_EQ(file_size(e.ckpt), 2 * SLOT); /* the slot format from now on */
    sink_close(s, t);
    s = sink_open(&e, &t, err, sizeof(err));
    CHECK(s != NULL);
    CHECK_U64_EQ(s->ops->resume_lsn(s), 2000);
    sink_close(s, t);
    env_free(&e);
}

/* What the checkpoint file says now. */
static struct pgcdc_segdir_record ckpt_now(struct env *e)
{
    struct pgcdc_segdir_record rec;
    char buf[2 * SLOT + 1];
    bool two;
    int fd = open(e->ckpt, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
    if (fd >= 0)
        close(fd);
    memset(&rec, 0, sizeof(rec));
    CHECK(n > 0 && pgcdc_segdir_parse_checkpoint(buf, (size_t)n, &rec, &two));
    return rec;
}

/* Lines of every segment in the data directory whose event has "end":end; *opens counts
 * the open segments. */
static int count_end(struct env *e, uint64_t end, int *opens)
{
    char path[512], line[128], want[40];
    int n = 0;
    snprintf(want, sizeof(want), "{\"end\":%" PRIu64 ",", end);
    *opens = 0;
    DIR *d = opendir(e->data);
    CHECK(d != NULL);
    for (struct dirent *de; d && (de = readdir(d));) {
        if (!strstr(de->d_name, ".jsonl"))
            continue;
        *opens += strstr(de->d_name, ".open") != NULL;
        snprintf(path, sizeof(path), "%s/%s", e->data, de->d_name);
        FILE *fp = fopen(path, "r");
        while (fp && fgets(line, sizeof(line), fp))
            n += strncmp(line, want, strlen(want)) == 0;
        if (fp)
            fclose(fp);
    }
    if (d)
        closedir(d);
    return n;
}

/*
 * A rotation fails at one step (ops as PGCDC_FAULT_OPS, on paths ending in suffix; the
 * first `skip` such calls pass, the next two fail, so the first retry fails too). The
 * events of the rotated segment were acknowledged, so the checkpoint must go on naming
 * it; then either the process dies (crash) and a restart finds it, or the failure passes
 * and the retry closes it. Either way each event is in the files once.
 */
static void rotation_fault(const char *ops, const char *suffix, int skip, bool after, bool crash)
{
    struct env e;
    struct pgcdc_txn_track *t;
    char err[256];
    env_init(&e);
    CHECK_INT_EQ(
        pgcdc_config_set(&e.cfg, "sink.file.segment_bytes", "4096", "test", err, sizeof(err)), 0);
    struct pgcdc_sink *s = sink_open(&e, &t, err, sizeof(err));
    CHECK(s != NULL);
    txn(s, t, 1000, 10); /* 210 bytes */
    sync_ok(s);

    char skips[16];
    snprintf(skips, sizeof(skips), "%d", skip);
    setenv("PGCDC_FAULT_SUFFIX", strcmp(suffix, "DATA") == 0 ? e.data : suffix, 1);
    setenv("PGCDC_FAULT_SKIP", skips, 1);
    setenv("PGCDC_FAULT_COUNT", "2", 1);
    setenv("PGCDC_FAULT_AFTER", after ? "1" : "0", 1);
    faultfs_reset();
    setenv("PGCDC_FAULT_OPS", ops, 1);
    /* 178 events, 3984 bytes: the segment passes 4096 and rotates at the commit, while
     * the transaction alone stays below 4096 and is not split. */
    CHECK(txn_rc(s, t, 2000, 178) < 0);
    CHECK(s->ops->sync(s, err, sizeof(err)) < 0); /* the retry fails too */
    unsetenv("PGCDC_FAULT_OPS");

    char seg1[128];
    pgcdc_segdir_name(seg1, sizeof(seg1), 1, 1000 - 8, true);
    struct pgcdc_segdir_record ck = ckpt_now(&e);
    CHECK_STR_EQ(ck.seg, seg1); /* still named, at its full length: a restart skips txn 2000 */
    CHECK_U64_EQ(ck.lsn, 2000);
    CHECK(ck.off > 4096);
    if (crash) {
        sink_close(s, t);
        s = sink_open(&e, &t, err, sizeof(err));
        CHECK(s != NULL);
        CHECK_U64_EQ(s->ops->resume_lsn(s), 2000);
    } else {
        CHECK_INT_EQ(s->ops->rewind(s, err, sizeof(err)), PGCDC_OK);
        sync_ok(s); /* the retry that succeeds: closed, and the checkpoint says so */
        CHECK_STR_EQ(ckpt_now(&e).seg, "");
    }
    txn(s, t, 3000, 1);
    sync_ok(s);
    sink_close(s, t);
    int opens;
    CHECK_INT_EQ(count_end(&e, 1000, &opens), 10);
    CHECK_INT_EQ(count_end(&e, 2000, &opens), 178);
    CHECK_INT_EQ(count_end(&e, 3000, &opens), 1);
    CHECK(opens <= 1); /* none left behind */
    env_free(&e);
}

/* How many entries of the data directory end with suffix. */
static int count_suffix(struct env *e, const char *suffix)
{
    int n = 0;
    DIR *d = opendir(e->data);
    CHECK(d != NULL);
    for (struct dirent *de; d && (de = readdir(d));) {
        size_t l = strlen(de->d_name), k = strlen(suffix);
        n += l > k && strcmp(de->d_name + l - k, suffix) == 0;
    }
    if (d)
        closedir(d);
    return n;
}

/* Begin transaction end_lsn and write rows events of it, without a commit. */
static void txn_open(struct pgcdc_sink *s, struct pgcdc_txn_track *t, uint64_t end_lsn, int rows)
{
    char err[256], value[64];
    struct pgcdc_txn_meta m = {
        .xid = (uint32_t)end_lsn, .commit_lsn = end_lsn - 8, .end_lsn = end_lsn};
    CHECK_INT_EQ(pgcdc_txn_track_begin(t, end_lsn), PGCDC_OK);
    CHECK_INT_EQ(s->ops->begin(s, &m, err, sizeof(err)), PGCDC_OK);
    for (int i = 0; i < rows; i++) {
        int n = snprintf(value, sizeof(value), "{\"end\":%" PRIu64 ",\"row\":%d}", end_lsn, i);
        struct pgcdc_record r = {.schema = "public",
                                 .table = "t",
                                 .op = 'c',
                                 .value = value,
                                 .value_len = (size_t)n,
                                 .lsn = end_lsn - 16 + (uint64_t)i,
                                 .commit_lsn = m.commit_lsn,
                                 .xid = m.xid};
        CHECK_INT_EQ(s->ops->write(s, &r, err, sizeof(err)), PGCDC_OK);
    }
}

/*
 * A transaction of several segment_bytes is split into segments as it is written, but no
 * closed (.jsonl) segment shows any of it before its commit: the ones closed meanwhile
 * are .jsonl.part. The commit renames them all to .jsonl. A crash before the commit
 * (stage 0), or a rewind, removes them and cuts back to the checkpoint; a crash after the
 * commit's checkpoint but before the renames (stage 1: the rename fails) finishes them.
 */
static void test_split_txn(int stage)
{
    struct env e;
    struct pgcdc_txn_track *t;
    char err[256];
    int opens;
    env_init(&e);
    CHECK_INT_EQ(
        pgcdc_config_set(&e.cfg, "sink.file.segment_bytes", "4096", "test", err, sizeof(err)), 0);
    struct pgcdc_sink *s = sink_open(&e, &t, err, sizeof(err));
    CHECK(s != NULL);
    uint64_t epoch0 = 1, epoch1 = 1;
    CHECK(pgcdc_segdir_read_epoch(e.data, &epoch0)); /* even: no rewind runs */
    CHECK_INT_EQ(epoch0 % 2, 0);
    txn(s, t, 1000, 10);
    sync_ok(s);
    txn_open(s, t, 2000, 800); /* about 18 KB: 4 splits */
    sync_ok(s);                /* mid-transaction: data only, the checkpoint stays */
    CHECK(count_suffix(&e, ".jsonl.part") >= 3);
    CHECK_INT_EQ(count_suffix(&e, ".jsonl"), 0);
    CHECK_U64_EQ(ckpt_now(&e).lsn, 1000);
    if (stage == 0) {
        sink_close(s, t); /* a crash before the commit */
    } else if (stage == 1) {
        setenv("PGCDC_FAULT_SUFFIX", ".jsonl.part", 1); /* the first rename, the last part */
        setenv("PGCDC_FAULT_SKIP", "0", 1);
        setenv("PGCDC_FAULT_COUNT", "1", 1);
        setenv("PGCDC_FAULT_AFTER", "0", 1);
        faultfs_reset();
        setenv("PGCDC_FAULT_OPS", "rename", 1);
        struct pgcdc_txn_meta m = {.xid = 2000, .commit_lsn = 2000 - 8, .end_lsn = 2000};
        CHECK(s->ops->commit(s, &m, err, sizeof(err)) < 0); /* checkpointed, not renamed */
        unsetenv("PGCDC_FAULT_OPS");
        CHECK_U64_EQ(ckpt_now(&e).lsn, 2000);
        CHECK_INT_EQ(count_suffix(&e, ".jsonl"), 0);
        sink_close(s, t);
    } else {
        CHECK_INT_EQ(s->ops->rewind(s, err, sizeof(err)), PGCDC_OK);
    }
    if (stage != 2) {
        s = sink_open(&e, &t, err, sizeof(err));
        CHECK(s != NULL);
    }
    /* Recovery and a rewind each moved the rewind counter on (a reader reading ahead
     * starts over), and left it even. */
    CHECK(pgcdc_segdir_read_epoch(e.data, &epoch1));
    CHECK(epoch1 > epoch0);
    CHECK_INT_EQ(epoch1 % 2, 0);
    CHECK_INT_EQ(count_suffix(&e, ".jsonl.part"), 0);
    if (stage == 1) {
        CHECK_U64_EQ(s->ops->resume_lsn(s), 2000);
        CHECK(count_suffix(&e, ".jsonl") >= 4);
        CHECK_INT_EQ(count_end(&e, 2000, &opens), 800);
    } else {
        CHECK_U64_EQ(s->ops->resume_lsn(s), 1000);
        CHECK_INT_EQ(count_suffix(&e, ".jsonl"), 0);
        CHECK_INT_EQ(count_end(&e, 2000, &opens), 0);
        CHECK_INT_EQ(opens, 1);
        CHECK_INT_EQ(open_segment_size(&e), 210); /* cut back to transaction 1000 */
        txn_open(s, t, 2000, 800);
        CHECK(count_suffix(&e, ".jsonl.part") >= 3);
        struct pgcdc_txn_meta m = {.xid = 2000, .commit_lsn = 2000 - 8, .end_lsn = 2000};
        CHECK_INT_EQ(s->ops->commit(s, &m, err, sizeof(err)), PGCDC_OK);
        pgcdc_txn_track_commit(t);
    }
    CHECK_INT_EQ(count_suffix(&e, ".jsonl.part"), 0);
    CHECK(count_suffix(&e, ".jsonl") >= 4);
    CHECK_INT_EQ(count_end(&e, 1000, &opens), 10);
    CHECK_INT_EQ(count_end(&e, 2000, &opens), 800);
    CHECK_INT_EQ(opens, 1);
    struct pgcdc_segdir_record ck = ckpt_now(&e);
    CHECK_U64_EQ(ck.lsn, 2000);
    sink_close(s, t);
    env_free(&e);
}

int main(void)
{
    test_split_txn(0);
    test_split_txn(1);
    test_split_txn(2);
    test_reopen_and_in_place();
    test_checkpoint_write_fails();
    test_plain_format();
    rotation_fault("rename", ".jsonl.open", 0, false, true);
    rotation_fault("rename", ".jsonl.open", 0, true, true); /* it happened, yet failed */
    rotation_fault("close,rename", ".jsonl.open", 0, false, false);
    rotation_fault("fsync", "DATA", 0, false, true); /* the directory, after the rename */
    rotation_fault("fsync", "DATA", 0, false, false);
    return UNIT_DONE();
}
