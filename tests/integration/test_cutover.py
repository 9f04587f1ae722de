"""The cutover: `pgcdc run` (snapshot + stream into files) -> `pgcdc replay` into a second
database -> `pgcdc verify`. Source and target are two databases on the module's cluster;
the target's schema comes from pg_dump --schema-only, as in docs/cutover.md.
"""

import os
import random
import time

import pytest

import cutover_harness as ch
import harness
from harness import lsn_format, wait_until


dbs = ch.dbs_fixture()


@pytest.fixture
def make_replay(cluster, workdir, pgcdc_bin):
    """Factory: make_replay(target_db, data_dir, sub, args=(), opts=None, password=None) ->
    a harness.Pgcdc for `pgcdc replay` (not started). All are killed at teardown."""
    made = []

    def make(tgt, data_dir, sub, args=(), opts=None, password=None):
        p = ch.replay_proc(os.path.join(workdir, sub), cluster, tgt, data_dir, args,
                           opts=opts, binary=pgcdc_bin, password=password)
        made.append(p)
        return p

    yield make
    for p in made:
        p.kill_now()


def start_run(make_pgcdc, cluster, src, **settings):
    return ch.start_capture(make_pgcdc, cluster, src,
                            **dict({"sink.file.segment_bytes": "262144"}, **settings))


def assert_all_match(cluster, src, tgt, tables=ch.TABLES):
    rc, lines, err = ch.verify(cluster, src, tgt)
    assert rc == 0, "verify failed (%d):\n%s\n%s" % (rc, "\n".join(lines), err)
    got = sorted(l.split()[1] for l in lines)
    assert got == sorted(tables), lines
    assert all(l.startswith("MATCH ") for l in lines), lines
    return lines


def finish_replay(make_replay, tgt, run, end, timeout=180):
    fin = make_replay(tgt, run.data_dir, "replay-end", ["--end-lsn", lsn_format(end)])
    rc = fin.run(timeout=timeout)
    assert rc == 0, fin.describe()
    assert fin.error_lines() == [], fin.describe()
    assert any("caught up at LSN" in l for l in fin.lines), fin.describe()
    return fin


def test_end_to_end(cluster, dbs, make_pgcdc, make_replay, writers):
    src, tgt = dbs
    ch.load_initial(cluster, src)
    ch.copy_schema(cluster, src, tgt)
    w = ch.CutoverWriter(cluster, src, seed=11, pause=0.002)
    writers.append(w)
    w.start()
    run = start_run(make_pgcdc, cluster, src)

    secret = "pw-%s" % random.randrange(10 ** 9)
    follow = make_replay(tgt, run.data_dir, "replay", ["--follow"], password=secret)
    follow.start()
    follow.wait_log(r"caught up at LSN", timeout=90)
    with open("/proc/%d/cmdline" % follow.pid, "rb") as f:
        assert secret.encode() not in f.read()  # ps shows the DSN redacted
    # The application keeps writing while replay follows (rotating segments as it goes).
    # Halfway, the target drops replay's connections: it reconnects and goes on.
    t0 = time.monotonic()
    dropped = False
    while time.monotonic() - t0 < 5:
        follow.assert_alive("while following")
        if not dropped and time.monotonic() - t0 > 2:
            n = cluster.scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE application_name LIKE 'pgcdc-replay%%'", dbname=tgt)
            assert n == 2, n
            dropped = True
        time.sleep(0.2)
    follow.wait_log(r"reconnecting", timeout=10)
    w.stop()
    # WAL that is no transaction (a checkpoint record) lies between the last commit and the
    # LSN the operator notes: replay learns from the sink's confirmed position that nothing
    # more is coming before it.
    cluster.sql("CHECKPOINT", dbname=src)
    end = cluster.current_lsn()
    ups = [l for l in follow.lines if "caught up at LSN" in l]
    assert len(ups) >= 2, follow.describe()  # it caught up again and again while following
    assert follow.stop(timeout=15) == 0, follow.describe()
    assert follow.error_lines() == [], follow.describe()
    assert secret not in follow.stderr() and "password=****" in follow.stderr()
    # No update or delete missed its row (replay warns when one does).
    warns = [l for l in follow.lines_at("warn") if "reconnecting" not in l]
    assert warns == [], follow.describe()

    finish_replay(make_replay, tgt, run, end)
    assert run.stop() == 0, run.describe()

    # The workload did exercise what it is meant to.
    evs = run.events()
    ops = {}
    for e in evs:
        ops.setdefault((e["source"]["table"], e["op"]), 0)
        ops[(e["source"]["table"], e["op"])] += 1
    toast_updates = sum(1 for e in evs if e["source"]["table"] == "docs" and e["op"] == "u"
                        and "body" not in e["after"])
    assert toast_updates >= 20, ops
    for k in [("accounts", "r"), ("history", "c"), ("types", "u"), ("types", "d"),
              ("fullrow", "u"), ("fullrow", "d"), ("scratch", "c")]:
        assert ops.get(k, 0) > 0, (k, ops)
    assert len(harness.list_segments(run.data_dir)) > 2

    assert_all_match(cluster, src, tgt)
    # Byte-identical text forms of every special value, row by row.
    assert ch.rows_text(cluster, src, "types") == ch.rows_text(cluster, tgt, "types")
    big = cluster.scalar("SELECT count(*) FROM types WHERE i8 = 9007199254740993 AND "
                         "num::text = %s", (ch.BIG_DIGITS,), dbname=tgt)
    assert big > 0


def test_kill_resume(cluster, dbs, make_pgcdc, make_replay, writers):
    """SIGKILL replay at random moments while it applies (the first during the snapshot),
    restart it each time; the target ends equal, with no transaction applied twice (history
    has no key: a row applied twice would show in its count)."""
    src, tgt = dbs
    seed = int(os.environ.get("PGCDC_IT_SEED", random.randrange(1 << 30)))
    kills_wanted = int(os.environ.get("PGCDC_IT_KILLS", "12"))
    print("seed", seed)
    rng = random.Random(seed)
    ch.load_initial(cluster, src, accounts=3000, history=60000, docs=10, types=20)
    ch.copy_schema(cluster, src, tgt)
    w = ch.CutoverWriter(cluster, src, seed=seed, pause=0.001)
    writers.append(w)
    w.start()
    run = start_run(make_pgcdc, cluster, src, **{"sink.file.segment_bytes": "1048576"})
    time.sleep(1.5)  # a backlog of streamed transactions behind the snapshot

    def replay(group_rows):
        # Small batches: many commits to be killed between. Multi-row statements or not.
        return make_replay(tgt, run.data_dir, "replay", ["--follow"],
                           opts={"replay.batch_rows": "300", "replay.group_rows": group_rows})

    rp = replay("64")
    rp.start()
    # First kill: in the middle of the snapshot, which is committed in pieces.
    wait_until(lambda: (ch.replay_position(cluster, tgt) or (0, 0))[1] > 0, 90, interval=0.01,
               what="the snapshot partly applied")
    rp.kill9()
    assert rp.returncode == -9
    after_first = ch.replay_position(cluster, tgt)
    assert after_first[1] > 0, after_first  # killed with the snapshot partly in
    kills = 1
    positions = [after_first]
    while kills < kills_wanted:
        time.sleep(rng.uniform(0, 0.3))  # the backlog grows while replay is down
        rp = replay(rng.choice(["1", "64"]))
        rp.start()
        time.sleep(rng.uniform(0.05, 0.7))
        rp.assert_alive("before kill %d" % (kills + 1))
        rp.kill9()
        assert rp.returncode == -9
        kills += 1
        positions.append(ch.replay_position(cluster, tgt))
    print("kills", kills, "positions", [(lsn_format(p[0]), p[1]) for p in positions if p])
    assert positions[-1] > positions[0], positions  # it got on between kills

    w.stop()
    end = cluster.current_lsn()
    finish_replay(make_replay, tgt, run, end)
    assert run.stop() == 0, run.describe()
    assert_all_match(cluster, src, tgt)


def test_schema_mismatch(cluster, dbs, make_pgcdc, make_replay):
    """A missing column, then a type that rejects the value, then a missing table: each
    stops replay with one error naming table, column and LSN, exit 1, and leaves nothing
    of the failing transaction applied (the transactions before it are)."""
    src, tgt = dbs
    cluster.sql("CREATE TABLE ok_t (id int PRIMARY KEY, v text); "
                "CREATE TABLE bad_t (id int PRIMARY KEY, a text, b text); "
                "CREATE TABLE gone_t (id int PRIMARY KEY)", dbname=src)
    cluster.sql("CREATE TABLE ok_t (id int PRIMARY KEY, v text); "
                "CREATE TABLE bad_t (id int PRIMARY KEY, a text)", dbname=tgt)
    run = start_run(make_pgcdc, cluster, src)
    run.wait_log(r"streaming", timeout=30)
    cluster.sql("INSERT INTO ok_t VALUES (1, 'one')", dbname=src)
    cluster.sql("BEGIN; INSERT INTO ok_t VALUES (2, 'two'); INSERT INTO bad_t VALUES (1, 'x', "
                "'not a number'); COMMIT", dbname=src)
    cluster.sql("INSERT INTO ok_t VALUES (3, 'three')", dbname=src)
    cluster.sql("BEGIN; INSERT INTO ok_t VALUES (4, 'four'); INSERT INTO gone_t VALUES (1); "
                "COMMIT", dbname=src)
    end = cluster.current_lsn()
    wait_until(lambda: (harness.read_checkpoint(run.state_dir) or {}).get("lsn_int", 0) >= end,
               30, what="the sink to hold everything")
    evs = run.events()
    bad = [e for e in evs if e["source"]["table"] == "bad_t"][0]
    gone = [e for e in evs if e["source"]["table"] == "gone_t"][0]
    first_commit = [e for e in evs if e["source"]["table"] == "ok_t"][0]["source"]["commit_lsn"]

    def replay_once(sub):
        p = make_replay(tgt, run.data_dir, sub, password="Secret-42")
        rc = p.run(timeout=60)
        assert "Secret-42" not in p.stderr() + p.stdout(), p.describe()
        return p, rc

    def ok_ids():
        return [r[0] for r in cluster.sql("SELECT id FROM ok_t ORDER BY id", dbname=tgt)]

    # 1. The target lacks column b.
    p, rc = replay_once("r1")
    assert rc == 1, p.describe()
    errs = p.error_lines()
    assert len(errs) == 1, p.describe()
    msg = harness.parse_logfmt(errs[0])["msg"]
    assert "public.bad_t" in msg and '"b"' in msg, msg
    assert lsn_format(bad["source"]["lsn"]) in msg, msg
    assert ok_ids() == [1], "the failing transaction left changes behind: %r" % ok_ids()
    assert ch.replay_position(cluster, tgt)[0] == first_commit

    # 2. Column b exists but its type rejects the value.
    cluster.sql("ALTER TABLE bad_t ADD COLUMN b integer", dbname=tgt)
    p, rc = replay_once("r2")
    assert rc == 1, p.describe()
    errs = p.error_lines()
    assert len(errs) == 1, p.describe()
    msg = harness.parse_logfmt(errs[0])["msg"]
    assert "public.bad_t column b" in msg, msg
    assert lsn_format(bad["source"]["lsn"]) in msg, msg
    assert "invalid input syntax for type integer" in msg, msg
    assert ok_ids() == [1], ok_ids()
    assert cluster.scalar("SELECT count(*) FROM bad_t", dbname=tgt) == 0

    # 3. Fixed; the next failure is a table the target does not have at all.
    cluster.sql("ALTER TABLE bad_t ALTER COLUMN b TYPE text", dbname=tgt)
    p, rc = replay_once("r3")
    assert rc == 1, p.describe()
    msg = harness.parse_logfmt(p.error_lines()[0])["msg"]
    assert "public.gone_t does not exist" in msg and lsn_format(gone["source"]["lsn"]) in msg, msg
    assert ok_ids() == [1, 2, 3], ok_ids()

    # 4. All fixed: replay completes and the databases are equal.
    cluster.sql("CREATE TABLE gone_t (id int PRIMARY KEY)", dbname=tgt)
    p, rc = replay_once("r4")
    assert rc == 0, p.describe()
    assert ok_ids() == [1, 2, 3, 4]
    run.stop()
    assert_all_match(cluster, src, tgt, ["public.bad_t", "public.gone_t", "public.ok_t"])


def test_verify_detects_differences(cluster, dbs):
    src, tgt = dbs
    ddl = ("CREATE TABLE a (id int PRIMARY KEY, v text, n numeric, ts timestamptz, by bytea); "
           "CREATE TABLE b (k int, v float8); CREATE SCHEMA s2; CREATE TABLE s2.c (x int)")
    data = ("INSERT INTO a SELECT g, 'v' || g, g / 7.0, '2024-01-01 00:00+00'::timestamptz + g * "
            "interval '1 hour', '\\xdeadbeef' FROM generate_series(1, 1000) g; "
            "INSERT INTO b SELECT g % 10, g / 3.0 FROM generate_series(1, 200) g; "
            "INSERT INTO s2.c VALUES (1), (NULL)")
    for db in (src, tgt):
        cluster.sql(ddl, dbname=db)
    cluster.sql(data, dbname=src)
    # Loaded in another order under other session settings: still equal.
    cluster.sql("SET TimeZone = 'Asia/Kolkata'; SET DateStyle = 'SQL, DMY'; "
                "SET extra_float_digits = 0; " + data.replace("generate_series(1, 1000) g",
                                                             "generate_series(1000, 1, -1) g"),
                dbname=tgt)
    all3 = ["public.a", "public.b", "s2.c"]
    rc, lines, err = ch.verify(cluster, src, tgt)
    assert rc == 0, (lines, err)
    assert sorted(l.split()[1] for l in lines) == all3
    assert all(l.startswith("MATCH") for l in lines), lines

    # One changed value.
    cluster.sql("UPDATE a SET v = 'v500 ' WHERE id = 500", dbname=tgt)
    rc, lines, err = ch.verify(cluster, src, tgt)
    assert rc == 1, lines
    diff = [l for l in lines if l.startswith("DIFF")]
    assert len(diff) == 1 and diff[0].split()[1] == "public.a", lines
    assert "source rows=1000" in diff[0] and "target rows=1000" in diff[0], diff
    assert "differ" in err
    cluster.sql("UPDATE a SET v = 'v500' WHERE id = 500", dbname=tgt)

    # One missing row (of two identical ones in a table without a key).
    cluster.sql("DELETE FROM b WHERE ctid = (SELECT ctid FROM b WHERE k = 3 LIMIT 1)",
                dbname=tgt)
    rc, lines, err = ch.verify(cluster, src, tgt)
    assert rc == 1
    diff = [l for l in lines if l.startswith("DIFF")]
    assert len(diff) == 1 and "public.b source rows=200" in diff[0] and \
        "target rows=199" in diff[0], lines

    # --table restricts the comparison; a table the target lacks is MISSING.
    rc, lines, err = ch.verify(cluster, src, tgt, tables=["public.a", "s2.c"])
    assert rc == 0 and len(lines) == 2, lines
    cluster.sql("DROP TABLE s2.c", dbname=tgt)
    rc, lines, err = ch.verify(cluster, src, tgt, tables=["s2.c"])
    assert rc == 1 and lines == ["MISSING s2.c on target"], lines
