"""`pgcdc replay`'s COPY path for snapshot rows: values stay byte-exact through COPY's
text format for every type class, a stored generated column is left to the target, a
table that already holds other rows gets upserts instead, and a kill -9 in the middle of
a table's bulk load resumes after the last committed chunk, never from zero and never
twice. `pgcdc run` captures one database of the module's cluster; replay applies to
another, whose schema comes from pg_dump --schema-only.
"""

import os
import signal
import time

import cutover_harness as ch
import harness
from harness import wait_until
from test_replay_apply import _snapshot_pending, captured_up_to_now, replay


dbs = ch.dbs_fixture("c")


TYPES = r"""
CREATE TABLE vals (
  id bigint PRIMARY KEY, n numeric, i8 bigint, t text, b bytea, j json, jb jsonb,
  arr text[], ia int[], ts timestamptz, tsn timestamp, f8 float8, ok boolean,
  g numeric GENERATED ALWAYS AS (n * 2) STORED);
CREATE TABLE pre (id int PRIMARY KEY, v text);
INSERT INTO vals (id, n, i8, t, b, j, jb, arr, ia, ts, tsn, f8, ok) VALUES
  (1, 12345678901234567890.123456789012345678, 9223372036854775807,
   E'back\\slash\ttab\nnew\rline "q" \\N end', '\x00ff5c0a09'::bytea,
   '{"a": "x\\ty", "n": 1.50}', '{"k": [1, "two\\\\", null]}',
   ARRAY['a,b', 'c"d', E'e\\f', NULL, ''], ARRAY[1, NULL, -3],
   '2024-02-29 12:34:56.789012+00', '1999-12-31 23:59:59.5', 0.1, true),
  (2, -0.000000000000000000000000000000000001, -9223372036854775808,
   E'unicod\u00e9 \u20ac \U0001F600 \\t literal \x01\x1f\x01x \u2028 \x01' || chr(10) || chr(1), '\x'::bytea, 'null', '[]',
   '{}', '{}', '-infinity', 'infinity', -2.5e-300, false),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (4, 1e-30, 0, '', '\x5c'::bytea, '"\u0001"', '{"\"": "\\n"}', ARRAY[E'\t'],
   ARRAY[2147483647], 'epoch', '0001-01-01 00:00:00', 1e308, NULL);
INSERT INTO pre SELECT g, 'src' || g FROM generate_series(1, 50) g;
"""


def test_values_are_byte_exact_through_copy(cluster, dbs, make_pgcdc, workdir):
    """Every type class round-trips exactly (float and numeric NaN are left out: wal2json
    sends them as null, docs/events.md) (the source and target text forms are equal
    row by row, and verify matches); the generated column is recomputed by the target. A
    table the target already holds a row of is upserted, not copied (COPY would fail on
    the key)."""
    src, tgt = dbs
    cluster.sql(TYPES, dbname=src)
    ch.copy_schema(cluster, src, tgt)
    cluster.sql("INSERT INTO pre VALUES (7, 'stale')", dbname=tgt)
    run = ch.start_capture(make_pgcdc, cluster, src)
    captured_up_to_now(cluster, run)
    run.stop()

    p, rc = replay(workdir, cluster, tgt, run, "replay")
    assert rc == 0, p.describe()
    assert p.error_lines() == [], p.describe()
    logs = "\n".join(p.lines_at("info"))
    assert "loading the table's snapshot rows with COPY" in logs and "table=vals" in logs, logs
    assert "the table holds other rows; its snapshot rows are upserted" in logs, logs
    q = "SELECT id, vals::text FROM vals ORDER BY id"
    assert cluster.sql(q, dbname=tgt) == cluster.sql(q, dbname=src)
    rc, lines, err = ch.verify(cluster, src, tgt)
    assert rc == 0, (lines, err)
    assert cluster.scalar("SELECT v FROM pre WHERE id = 7", dbname=tgt) == "src7"


def test_kill9_mid_table_resumes_after_the_last_chunk(cluster, dbs, make_pgcdc, workdir):
    """A 60,000-row table loaded in chunks of 5,000: the test holds the table's lock once a
    chunk is in (the next chunk's COPY waits for it), reads what the target holds, and
    kills replay -9. The target held some but not all rows, exactly the chunks recorded in
    pgcdc.replay_position; the next replay starts from there (its log says how many rows
    were in) and the result equals the source."""
    src, tgt = dbs
    total = 60000
    cluster.sql("CREATE TABLE big (id int PRIMARY KEY, pad text); "
                "INSERT INTO big SELECT g, repeat('x', 50) || g FROM generate_series(1, %d) g"
                % total, dbname=src)
    ch.copy_schema(cluster, src, tgt)
    run = ch.start_capture(make_pgcdc, cluster, src)
    captured_up_to_now(cluster, run)
    run.stop()

    opts = {"replay.copy_rows": "5000"}
    p = ch.replay_proc(os.path.join(workdir, "r1"), cluster, tgt, run.data_dir, opts=opts,
                       binary=harness.pgcdc_bin())
    p.start()
    wait_until(lambda: cluster.scalar("SELECT count(*) FROM big", dbname=tgt) > 0, 30,
               interval=0.005, what="a first chunk in")
    conn = cluster.connect(dbname=tgt, autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute("LOCK TABLE big IN ACCESS EXCLUSIVE MODE")
        cur.execute("SELECT count(*) FROM big")
        held = cur.fetchone()[0]
        cur.execute("SELECT partial_events FROM pgcdc.replay_position")
        partial = cur.fetchone()[0]
        p.kill9()
    finally:
        conn.rollback()
        conn.close()
    assert 0 < held < total and held % 5000 == 0, held
    assert partial == held, (partial, held)

    p2, rc = replay(workdir, cluster, tgt, run, "r2", opts=opts)
    assert rc == 0, p2.describe()
    logs = "\n".join(p2.lines_at("info"))
    assert "rows_before=%d" % held in logs, logs
    assert cluster.scalar("SELECT count(*) FROM big", dbname=tgt) == total
    rc, lines, err = ch.verify(cluster, src, tgt)
    assert rc == 0, (lines, err)



def _capture_pid(migrate_pid):
    """migrate's capture child: its first-started child running pgcdc."""
    kids = []
    with open("/proc/%d/task/%d/children" % (migrate_pid, migrate_pid)) as f:
        for pid in map(int, f.read().split()):
            try:
                if os.readlink("/proc/%d/exe" % pid) == os.readlink("/proc/%d/exe" % migrate_pid):
                    with open("/proc/%d/stat" % pid) as st:
                        kids.append((int(st.read().rsplit(")", 1)[1].split()[19]), pid))
            except OSError:
                pass
    assert kids, "no capture child of %d" % migrate_pid
    return min(kids)[1]


def test_migrate_loads_a_table_while_the_snapshot_reads_the_next(cluster, dbs, workdir, name):
    """`pgcdc migrate`'s bulk load starts once pre-data is restored: a table whose snapshot
    rows are durable goes in while capture still reads the next one (tables are read in
    name order), not after the whole snapshot. The test stops capture (SIGSTOP) once the
    first table is done: its rows still reach the target. The result matches."""
    from test_migrate import migrate_proc

    src, tgt = dbs
    cluster.sql("CREATE TABLE a_first (id int PRIMARY KEY, v text); "
                "INSERT INTO a_first SELECT g, 'a' || g FROM generate_series(1, 100) g; "
                "CREATE TABLE z_big (id int PRIMARY KEY, pad text); "
                "INSERT INTO z_big SELECT g, repeat('z', 100) || g "
                "FROM generate_series(1, 400000) g", dbname=src)
    m = migrate_proc(cluster, workdir, src, tgt, harness.pgcdc_bin(), name,
                     {"sink.file.segment_bytes": str(16 << 20), "snapshot.workers": "1"})
    m.start()
    try:
        wait_until(lambda: any("snapshot table done" in l and "table=a_first" in l
                               for l in m.lines), 60, interval=0.002, what="a_first read")
        capture = _capture_pid(m.proc.pid)
        os.kill(capture, signal.SIGSTOP)
        try:
            assert not any("snapshot table done" in l and "table=z_big" in l for l in m.lines)
            wait_until(lambda: cluster.scalar("SELECT count(*) FROM pg_tables WHERE "
                                              "tablename = 'a_first'", dbname=tgt) and
                       cluster.scalar("SELECT count(*) FROM a_first", dbname=tgt) == 100,
                       60, what="a_first loaded while capture is stopped")
        finally:
            os.kill(capture, signal.SIGCONT)
        m.wait_log("migrate: following", timeout=120)
        for t in ("a_first", "z_big"):
            q = "SELECT count(*), sum(hashtext(t::text)) FROM %s t" % t
            assert cluster.sql(q, dbname=tgt) == cluster.sql(q, dbname=src), t
    finally:
        m.kill_now()



def test_follow_waits_between_two_tables_of_one_snapshot(cluster, dbs, make_pgcdc, workdir):
    """Every table's snapshot is its own sink transaction, all at the slot's point, so
    `replay --follow` can run out of readable rows between two of them. What it records
    there must be how many of the point's rows are in, and the next table's rows must count
    on from there: the test resumes a replay after the first table (position: the point,
    100 rows), lets it wait while capture is stopped, then lets capture write the second
    table. None of the second table's rows may be skipped or applied twice, and a
    kill -9 and restart afterwards changes nothing."""
    src, tgt = dbs
    n = 50000
    ddl = ("CREATE TABLE a_first (id int PRIMARY KEY, v text); "
           "CREATE TABLE z_big (id int PRIMARY KEY, pad text);")
    cluster.sql(ddl, dbname=tgt)
    cluster.sql(ddl + "INSERT INTO a_first SELECT g, 'a' || g FROM generate_series(1, 100) g; "
                "INSERT INTO z_big SELECT g, repeat('z', 100) || g "
                "FROM generate_series(1, %d) g" % n, dbname=src)
    run = make_pgcdc(settings={"source.dsn": cluster.dsn(dbname=src), "snapshot.mode": "initial",
                               "snapshot.workers": "1"})
    run.start()
    wait_until(lambda: any("snapshot table done" in l and "table=a_first" in l
                           for l in run.lines), 60, interval=0.002, what="a_first read")
    os.kill(run.proc.pid, signal.SIGSTOP)
    try:
        assert not any("table=z_big" in l for l in run.lines if "snapshot table done" in l)
        wait_until(lambda: os.path.exists(os.path.join(run.data_dir, ".pgcdc-position")), 30,
                   what="a_first durable")
        first, rc = replay(workdir, cluster, tgt, run, "r1")
        assert rc == 0, first.describe()
        assert cluster.scalar("SELECT count(*) FROM a_first", dbname=tgt) == 100
        assert ch.replay_position(cluster, tgt)[1] == 100, ch.replay_position(cluster, tgt)
        # Resumed inside the point, with nothing more to read yet: it waits.
        follow = ch.replay_proc(os.path.join(workdir, "r2"), cluster, tgt, run.data_dir,
                                args=["--follow"], opts={"replay.copy_rows": "20000"},
                                binary=harness.pgcdc_bin())
        follow.start()
        follow.wait_log("caught up", timeout=30)
    finally:
        os.kill(run.proc.pid, signal.SIGCONT)
    wait_until(lambda: any("table=z_big" in l for l in run.lines if "snapshot table done" in l)
               and not _snapshot_pending(run), 60, what="z_big durable")
    q = "SELECT count(*), sum(hashtext(t::text)) FROM z_big t"
    want = cluster.sql(q, dbname=src)
    wait_until(lambda: cluster.scalar("SELECT count(*) FROM z_big", dbname=tgt) >= n - 100, 60,
               what="z_big applied")
    time.sleep(0.5)
    follow.kill9()
    again, rc = replay(workdir, cluster, tgt, run, "r3")
    assert rc == 0, again.describe()
    assert cluster.sql(q, dbname=tgt) == want, (cluster.sql(q, dbname=tgt), want,
                                                 ch.replay_position(cluster, tgt))
    run.stop()
