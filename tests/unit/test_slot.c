/*
 * test_slot.c — the slot decision (pgcdc_slot_decide) for every pairing of state.dir's
 * record with the server's slot, state.dir/slot written and read back, and the flush
 * position reported at start-up. No server: the slot's row and system_identifier are given.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgcdc/common.h"
#include "pgcdc/config.h"
#include "pgcdc/repl.h"
#include "pgcdc/slot.h"
#include "unit.h"

#define SYSID "7312345678901234567"

static char err[1024];

static struct pgcdc_config cfg_with(const char *mode)
{
    struct pgcdc_config c;
    pgcdc_config_init(&c);
    pgcdc_config_set(&c, "source.slot", "s1", "test", err, sizeof(err));
    pgcdc_config_set(&c, "state.dir", "/var/lib/pgcdc", "test", err, sizeof(err));
    pgcdc_config_set(&c, "snapshot.mode", mode, "test", err, sizeof(err));
    return c;
}

static struct pgcdc_slot_record rec_of(enum pgcdc_slot_state st, uint64_t created)
{
    struct pgcdc_slot_record r = {.present = true, .created_lsn = created, .state = st};
    snprintf(r.slot, sizeof(r.slot), "s1");
    snprintf(r.sysid, sizeof(r.sysid), SYSID);
    return r;
}

static struct pgcdc_slot_info slot_at(uint64_t confirmed)
{
    struct pgcdc_slot_info i = {.exists = true, .confirmed_flush = confirmed};
    snprintf(i.plugin, sizeof(i.plugin), "wal2json");
    return i;
}

static int decide(const struct pgcdc_config *c, const struct pgcdc_slot_record *r,
                  const struct pgcdc_slot_info *i, uint64_t resume, enum pgcdc_slot_action *act)
{
    err[0] = '\0';
    return pgcdc_slot_decide(c, r, i, SYSID, resume, act, err, sizeof(err));
}

/* The case: state.dir lost, the slot still there. Never dropped: exit 2, three ways out. */
static void test_slot_without_record_is_never_dropped(void)
{
    struct pgcdc_config c = cfg_with("initial");
    struct pgcdc_slot_record none = {0};
    struct pgcdc_slot_info i = slot_at(5000);
    enum pgcdc_slot_action act = 0;
    CHECK_INT_EQ(decide(&c, &none, &i, 0, &act), PGCDC_ERR_CONFIG);
    CHECK(act != PGCDC_SLOT_RECREATE);
    CHECK_CONTAINS(err, "\"s1\"");
    CHECK_CONTAINS(err, "no record");
    CHECK_CONTAINS(err, "restore state.dir");
    CHECK_CONTAINS(err, "snapshot.mode = never");
    CHECK_CONTAINS(err, "pgcdc slot drop");
    /* Also when held by someone: still the configuration's question, not a busy retry. */
    i.active = true;
    CHECK_INT_EQ(decide(&c, &none, &i, 0, &act), PGCDC_ERR_CONFIG);
    /* initial_only too. */
    struct pgcdc_config o = cfg_with("initial_only");
    i.active = false;
    CHECK_INT_EQ(decide(&o, &none, &i, 0, &act), PGCDC_ERR_CONFIG);
    pgcdc_config_free(&c);
    pgcdc_config_free(&o);
}

/* The ways out: snapshot.mode = never continues from the slot; so does a sink at or past it. */
static void test_slot_without_record_ways_out(void)
{
    struct pgcdc_config n = cfg_with("never"), c = cfg_with("initial");
    struct pgcdc_slot_record none = {0};
    struct pgcdc_slot_info i = slot_at(5000);
    enum pgcdc_slot_action act = 0;
    CHECK_INT_EQ(decide(&n, &none, &i, 0, &act), PGCDC_OK);
    CHECK_INT_EQ(act, PGCDC_SLOT_USE);
    CHECK_INT_EQ(decide(&c, &none, &i, 5000, &act), PGCDC_OK); /* checkpoint restored */
    CHECK_INT_EQ(act, PGCDC_SLOT_USE);
    CHECK_INT_EQ(decide(&c, &none, &i, 4999, &act), PGCDC_ERR_CONFIG); /* behind: a gap */
    /* No slot, no record: a new installation. */
    struct pgcdc_slot_info gone = {0};
    CHECK_INT_EQ(decide(&c, &none, &gone, 0, &act), PGCDC_OK);
    CHECK_INT_EQ(act, PGCDC_SLOT_CREATE);
    pgcdc_config_free(&n);
    pgcdc_config_free(&c);
}

/* A crash mid-snapshot: the one case a slot is recreated, and only while it is ours. */
static void test_snapshot_cut_short_is_recreated(void)
{
    struct pgcdc_config c = cfg_with("initial");
    struct pgcdc_slot_record r = rec_of(PGCDC_SLOT_SNAPSHOTTING, 4000);
    struct pgcdc_slot_info i = slot_at(4000);
    enum pgcdc_slot_action act = 0;
    CHECK_INT_EQ(decide(&c, &r, &i, 0, &act), PGCDC_OK);
    CHECK_INT_EQ(act, PGCDC_SLOT_RECREATE);
    /* The snapshot became durable just before the crash: stream on. */
    CHECK_INT_EQ(decide(&c, &r, &i, 4000, &act), PGCDC_OK);
    CHECK_INT_EQ(act, PGCDC_SLOT_USE);
    /* Held by a process (our own walsender still ending): retried as busy. */
    i.active = true;
    i.active_pid = 4242;
    CHECK_INT_EQ(decide(&c, &r, &i, 0, &act), PGCDC_ERR_BUSY);
    CHECK_CONTAINS(err, "4242");
    /* Gone: take it again. */
    struct pgcdc_slot_info gone = {0};
    CHECK_INT_EQ(decide(&c, &r, &gone, 0, &act), PGCDC_OK);
    CHECK_INT_EQ(act, PGCDC_SLOT_CREATE);
    pgcdc_config_free(&c);
}

/* A recorded slot that streamed: used as it is; gone means changes are lost (exit 1). */
static void test_streaming_slot(void)
{
    struct pgcdc_config c = cfg_with("initial");
    struct pgcdc_slot_record r = rec_of(PGCDC_SLOT_STREAMING, 4000);
    struct pgcdc_slot_info i = slot_at(9000);
    enum pgcdc_slot_action act = 0;
    CHECK_INT_EQ(decide(&c, &r, &i, 0, &act), PGCDC_OK);
    CHECK_INT_EQ(act, PGCDC_SLOT_USE);
    struct pgcdc_slot_info gone = {0};
    CHECK_INT_EQ(decide(&c, &r, &gone, 0, &act), PGCDC_ERR);
    CHECK_CONTAINS(err, "no longer exists");
    /* An older pgcdc's record (the slot line alone): no server or position to check. */
    struct pgcdc_slot_record legacy = rec_of(PGCDC_SLOT_STREAMING, 0);
    legacy.sysid[0] = '\0';
    CHECK_INT_EQ(decide(&c, &legacy, &i, 0, &act), PGCDC_OK);
    CHECK_INT_EQ(act, PGCDC_SLOT_USE);
    pgcdc_config_free(&c);
}

/* Someone else's slot of the same name, another server, another slot: never ours. */
static void test_not_our_slot(void)
{
    struct pgcdc_config c = cfg_with("initial"), n = cfg_with("never");
    enum pgcdc_slot_action act = 0;
    struct pgcdc_slot_record r = rec_of(PGCDC_SLOT_SNAPSHOTTING, 4000);
    struct pgcdc_slot_info older = slot_at(3999); /* began before ours did */
    CHECK_INT_EQ(decide(&c, &r, &older, 0, &act), PGCDC_ERR_CONFIG);
    CHECK(act != PGCDC_SLOT_RECREATE);
    CHECK_CONTAINS(err, "not the one");
    CHECK_INT_EQ(decide(&n, &r, &older, 0, &act), PGCDC_ERR_CONFIG);

    struct pgcdc_slot_info i = slot_at(4000);
    err[0] = '\0';
    CHECK_INT_EQ(pgcdc_slot_decide(&c, &r, &i, "6999999999999999999", 0, &act, err, sizeof(err)),
                 PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "system_identifier");
    CHECK(act != PGCDC_SLOT_RECREATE);

    struct pgcdc_slot_record other = rec_of(PGCDC_SLOT_STREAMING, 4000);
    snprintf(other.slot, sizeof(other.slot), "s0");
    CHECK_INT_EQ(decide(&c, &other, &i, 0, &act), PGCDC_ERR_CONFIG);
    CHECK_CONTAINS(err, "\"s0\"");
    pgcdc_config_free(&c);
    pgcdc_config_free(&n);
}

/* `pgcdc slot create`'s slot: streamed from under never; initial is told the way out. */
static void test_slot_made_by_slot_create(void)
{
    struct pgcdc_config c = cfg_with("initial"), n = cfg_with("never");
    struct pgcdc_slot_record r = rec_of(PGCDC_SLOT_CREATED, 4000);
    struct pgcdc_slot_info i = slot_at(4000);
    enum pgcdc_slot_action act = 0;
    CHECK_INT_EQ(decide(&n, &r, &i, 0, &act), PGCDC_OK);
    CHECK_INT_EQ(act, PGCDC_SLOT_USE);
    CHECK_INT_EQ(decide(&c, &r, &i, 0, &act), PGCDC_ERR_CONFIG);
    CHECK(act != PGCDC_SLOT_RECREATE);
    CHECK_CONTAINS(err, "snapshot.mode = never");
    CHECK_CONTAINS(err, "pgcdc slot drop");
    pgcdc_config_free(&c);
    pgcdc_config_free(&n);
}

/*
 * state.dir/slot round trips: each case leaves state.dir/slot as `file` says (NULL: no
 * file; otherwise its text), reads it, then with `confirmed` set marks the slot streamed at
 * that position (system_identifier SYSID) and reads the record back.
 */
static const struct record_case {
    const char *what, *file;
    uint64_t confirmed;
    int rc;
    bool present;
    const char *sysid;
    uint64_t created;
    const char *msg;
} record_cases[] = {
    {"no record yet", NULL, 0, PGCDC_OK, false, "", 0, NULL},
    {"adopted", NULL, 0x16B2F40, PGCDC_OK, true, SYSID, 0x16B2F40, NULL},
    {"an older pgcdc's one line", "slot=s1\n", 0, PGCDC_OK, true, "", 0, NULL},
    /* The next start completes it. */
    {"the one line completed", "slot=s1\n", 0x1000, PGCDC_OK, true, SYSID, 0x1000, NULL},
    {"unreadable", "garbage\n", 0, PGCDC_ERR_CONFIG, false, "", 0, "unreadable"},
};

static void test_record_file(void)
{
    char dir[] = "/tmp/pgcdc-test-slot-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    struct pgcdc_config c = cfg_with("initial");
    pgcdc_config_set(&c, "state.dir", dir, "test", err, sizeof(err));
    struct pgcdc_slot sl;
    for (size_t k = 0; k < sizeof(record_cases) / sizeof(record_cases[0]); k++) {
        const struct record_case *tc = &record_cases[k];
        int failed = unit_failed;
        pgcdc_slot_init(&sl, &c);
        unlink(sl.statefile);
        if (tc->file) {
            FILE *fp = fopen(sl.statefile, "w");
            fputs(tc->file, fp);
            fclose(fp);
        }
        int got = pgcdc_slot_read_record(&sl, err, sizeof(err));
        if (tc->confirmed) {
            CHECK_INT_EQ(got, PGCDC_OK);
            snprintf(sl.sysid, sizeof(sl.sysid), SYSID);
            sl.server_confirmed = tc->confirmed;
            CHECK_INT_EQ(pgcdc_slot_mark_streamed(&sl, err, sizeof(err)), PGCDC_OK);
            struct pgcdc_slot back;
            pgcdc_slot_init(&back, &c);
            got = pgcdc_slot_read_record(&back, err, sizeof(err));
            sl.rec = back.rec;
        }
        CHECK_INT_EQ(got, tc->rc);
        if (tc->msg)
            CHECK_CONTAINS(err, tc->msg);
        CHECK(sl.rec.present == tc->present);
        if (tc->present) {
            CHECK_STR_EQ(sl.rec.slot, "s1");
            CHECK_STR_EQ(sl.rec.sysid, tc->sysid);
            CHECK_U64_EQ(sl.rec.created_lsn, tc->created);
            CHECK_INT_EQ(sl.rec.state, PGCDC_SLOT_STREAMING);
        }
        if (unit_failed != failed)
            fprintf(stderr, "    in the record case \"%s\"\n", tc->what);
    }

    CHECK_INT_EQ(pgcdc_slot_forget(&sl, err, sizeof(err)), PGCDC_OK);
    CHECK(access(sl.statefile, F_OK) != 0);
    CHECK_INT_EQ(pgcdc_slot_forget(&sl, err, sizeof(err)), PGCDC_OK);
    rmdir(dir);
    pgcdc_config_free(&c);
}

/* 12(c): before anything is durable the report is the slot's own position, never below it. */
static void test_flush_never_below_the_slot(void)
{
    struct pgcdc_config c = cfg_with("never");
    struct pgcdc_slot sl;
    pgcdc_slot_init(&sl, &c);
    sl.server_confirmed = 9000;                                /* the slot, as found at start-up */
    CHECK_U64_EQ(pgcdc_slot_flush_to_report(&sl, 0), 9000);    /* Kafka: nothing known */
    CHECK_U64_EQ(pgcdc_slot_flush_to_report(&sl, 8000), 9000); /* a checkpoint behind it */
    CHECK_U64_EQ(pgcdc_slot_flush_to_report(&sl, 9500), 9500); /* durable past it */
    sl.server_confirmed = 0;                                   /* a slot created by this run */
    CHECK_U64_EQ(pgcdc_slot_flush_to_report(&sl, 4000), 4000);
    pgcdc_config_free(&c);
}

int main(void)
{
    test_slot_without_record_is_never_dropped();
    test_slot_without_record_ways_out();
    test_snapshot_cut_short_is_recreated();
    test_streaming_slot();
    test_not_our_slot();
    test_slot_made_by_slot_create();
    test_record_file();
    test_flush_never_below_the_slot();
    return UNIT_DONE();
}
