"""Parallel snapshot (snapshot.workers, snapshot.chunk_pages): four workers reading tables
split into one-page ctid ranges give the same events, byte for byte apart from ts_ms and
the point (txId, lsn: each run has its own), as one reader: every row once, in the same order, "last" once per table on its last row.
Out-of-range settings exit 2."""

import json
import os
import re
import time

import harness as h

# What differs between two runs: the times, and the point (each run a new slot).
RUN = re.compile(r'"(ts_ms|txId|lsn|commit_lsn)":\d+')


def _tables(cluster, name):
    """A keyed table spanning dozens of pages with holes (deleted and moved rows), a keyless
    one, an empty one and a one-row one."""
    big, keyless, empty, one = (name + s for s in ("_a", "_b", "_c", "_d"))
    cluster.sql("CREATE TABLE %s (id bigint PRIMARY KEY, v bigint NOT NULL, note text)" % big)
    cluster.sql("INSERT INTO %s SELECT g, g * 7, repeat(md5(g::text), 3) "
                "FROM generate_series(1, 4000) g" % big)
    cluster.sql("DELETE FROM %s WHERE id %% 97 = 0" % big)
    cluster.sql("UPDATE %s SET v = -v WHERE id %% 101 = 0" % big)
    cluster.sql("CREATE TABLE %s (x int, s text)" % keyless)
    cluster.sql("INSERT INTO %s SELECT g %% 7, 'k' || g FROM generate_series(1, 600) g" % keyless)
    cluster.sql("CREATE TABLE %s (id int PRIMARY KEY)" % empty)
    cluster.sql("CREATE TABLE %s (id int PRIMARY KEY, t text)" % one)
    cluster.sql("INSERT INTO %s VALUES (1, E'tab\\there')" % one)
    return big, keyless, empty, one


def _snapshot(make_pgcdc, name, workers, sub):
    p = make_pgcdc(settings={"snapshot.mode": "initial_only",
                             "snapshot.workers": str(workers),
                             "snapshot.chunk_pages": "1",
                             "source.tables.include": "public.%s_*" % name}, sub=sub)
    assert p.run(timeout=120) == 0, p.describe()
    assert not p.error_lines(), p.describe()
    return p


def test_four_workers_match_one(cluster, make_pgcdc, name):
    big, keyless, empty, one = _tables(cluster, name)
    pages = cluster.sql("SELECT pg_relation_size('%s') / 8192" % big)[0][0]
    assert pages > 20, pages
    one_p = _snapshot(make_pgcdc, name, 1, "w1")
    four_p = _snapshot(make_pgcdc, name, 4, "w4")
    started = [l for l in four_p.lines if "snapshot readers started" in l]
    assert started and "workers=4" in started[0], four_p.describe()
    jobs = int(re.search(r"jobs=(\d+)", started[0]).group(1))
    assert jobs >= pages + 3, (jobs, pages)  # the big table read in one-page ranges
    single, parallel = one_p.events(), four_p.events()
    assert len(parallel) == len(single) == (4000 - 4000 // 97) + 600 + 1
    assert [RUN.sub(r'"\1":0', e.raw) for e in parallel] == \
        [RUN.sub(r'"\1":0', e.raw) for e in single]
    assert len({(e["source"]["txId"], e["source"]["lsn"]) for e in parallel}) == 1
    ids = [e["after"]["id"] for e in parallel if e.table == "public." + big]
    want = [r[0] for r in cluster.sql("SELECT id FROM %s ORDER BY ctid" % big)]
    assert ids == want, "rows differ from the table's, in physical order"
    assert sum(1 for e in parallel if e.table == "public." + keyless) == 600
    for t in (big, keyless, one):
        flags = [e["source"]["snapshot"] for e in parallel if e.table == "public." + t]
        assert flags.count("last") == 1 and flags[-1] == "last", (t, flags[-3:])
    assert not [e for e in parallel if e.table == "public." + empty]


def test_out_of_range_settings_exit_2(make_pgcdc, name):
    for i, (key, value) in enumerate((("snapshot.workers", "0"), ("snapshot.workers", "33"),
                                      ("snapshot.chunk_pages", "0"),
                                      ("snapshot.chunk_pages", "2147483649"))):
        p = make_pgcdc(settings={key: value}, sub="bad%d" % i)
        assert p.run(timeout=30) == 2, p.describe()
        assert key in p.stderr(), p.describe()


def test_alter_queued_behind_the_snapshot_does_not_hang_it(cluster, make_pgcdc, name):
    """An ALTER TABLE queued behind the snapshot's locks: a worker that then waited for the
    table would wait for ever (the ALTER waits for the snapshot, the snapshot for the
    worker). The worker's NOWAIT lock fails instead, the snapshot is retried, the ALTER
    goes through, and the table's rows come at a new point."""
    a, b, c = name + "_a", name + "_b", name + "_c"
    for t, n in ((a, 300000), (b, 60000), (c, 10)):
        cluster.sql("CREATE TABLE %s (id bigint PRIMARY KEY, v bigint NOT NULL)" % t)
        cluster.sql("INSERT INTO %s SELECT g, g FROM generate_series(1, %d) g" % (t, n))
    p = make_pgcdc(settings={"snapshot.mode": "initial", "snapshot.workers": "2",
                             "source.tables.include": "public.%s_*" % name})
    p.start()
    # Worker 1 reads a, worker 2 fills its chunks with b and waits for the writer: c is
    # not taken yet.
    p.wait_log("snapshot readers started", timeout=30)
    conn = cluster.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '40s'")
            started = time.monotonic()
            cur.execute("ALTER TABLE %s ADD COLUMN z int DEFAULT 7" % c)
            waited = time.monotonic() - started
    finally:
        conn.close()
    assert waited < 30, "the ALTER waited %.1f s behind the snapshot" % waited
    p.wait_log(r"snapshot table done.*table=%s\b" % c, timeout=60)
    assert p.stop(timeout=15) == 0, p.describe()
    rows = _lines_of(p.data_dir, c)
    assert sorted(e["after"]["id"] for e in rows) == list(range(1, 11))
    assert all(e["after"].get("z") == 7 for e in rows), rows


def _lines_of(d, table):
    """The events of one table, without parsing the others'."""
    needle = ('"table":"%s"' % table).encode()
    out = []
    for root, _, files in os.walk(d):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                out += [json.loads(l) for l in fh if needle in l]
    return out
