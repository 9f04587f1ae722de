"""The S3 sink under kill -9 at random moments, mid-flush included, with state.dir wiped at
every restart (a pod without a volume): after the last restart, every table folder, read
whole, folds per key to exactly that table's content, with no event twice."""

import os
import random
import re
import shutil
import time

import pytest

import harness as h
import s3_harness as s3h

KILLS = int(os.environ.get("PGCDC_IT_S3_KILLS", "8"))


@pytest.fixture
def s3():
    s = s3h.S3rver().start()
    yield s
    s.stop()


def test_s3_kill9_folds_exactly(cluster, make_pgcdc, name, s3):
    seed = int(os.environ.get("PGCDC_IT_SEED", str(int(time.time()))))
    print("seed", seed)
    rng = random.Random(seed)
    h.Writer.create_tables(cluster, name)
    # Rows before the slot exists: the initial snapshot carries them.
    cluster.sql("INSERT INTO %s_a (id, txn, val) SELECT g, 0, 'seed' FROM generate_series(1, 50) g"
                % name)
    proxy = s3h.SlowProxy(s3.endpoint, delay=0.1)
    p = make_pgcdc(settings=s3.settings(name, **{"snapshot.mode": "initial",
                                                 "sink.s3.endpoint": proxy.endpoint}),
                   env=s3h.CREDS)
    p.start()
    cluster.wait_slot_active(name, timeout=30)
    w = h.Writer(cluster, prefix=name, pause=0.002, seed=seed)
    w.start()
    kills, orphans, wiped = 0, 0, 0
    try:
        while kills < KILLS:
            if not p.alive():
                if rng.random() < 0.7:
                    shutil.rmtree(p.state_dir, ignore_errors=True)  # the pod's disk is gone
                    wiped += 1
                # Another compression changes the object names: a leftover of a cut flush
                # is then not overwritten by chance when the flush is redone.
                p.settings["sink.s3.compression"] = rng.choice(["gzip", "none"])
                p.start()
            cluster.wait_slot_active(name, timeout=30)
            seen = (s3.position(name) or {}).get("seq", 0)
            h.wait_until(lambda: (s3.position(name) or {}).get("seq", 0) > seen, 30,
                         what="a flush after the restart")
            # Most flushes take a few ms of uploads: land some kills inside one.
            time.sleep(rng.uniform(0.0, 0.6))
            p.assert_alive("before kill %d" % (kills + 1))
            assert p.kill9() == -9, p.describe()
            kills += 1
            assert not p.error_lines(), p.describe()
            for l in p.lines:
                m = re.search(r"orphans_deleted=(\d+)", l)
                if m:
                    orphans += int(m.group(1))
            cluster.wait_slot_active(name, active=False, timeout=30)
    finally:
        w.stop()
        proxy.stop()
    assert len(w.committed) > 100, "writer committed only %d txns" % len(w.committed)
    shutil.rmtree(p.state_dir, ignore_errors=True)
    p.settings["sink.s3.endpoint"] = s3.endpoint
    end = h.lsn_format(cluster.current_lsn())
    rc = p.run(["--end-lsn", end], timeout=120)
    assert rc == 0, p.describe()
    for l in p.lines:
        m = re.search(r"orphans_deleted=(\d+)", l)
        if m:
            orphans += int(m.group(1))
    pos = s3.position(name)
    assert pos and pos["end_lsn_int"] >= h.lsn_parse(end) - 1000000, pos
    for t in ("%s_a" % name, "%s_b" % name):
        rows = s3h.fold(s3.table_events(name, "public." + t))
        want = {r[0]: {"id": r[0], "txn": r[1], "val": r[2]}
                for r in cluster.sql("SELECT id, txn, val FROM %s" % t)}
        assert rows == want, "%s: %d rows folded, %d in the table; missing %s; extra %s" % (
            t, len(rows), len(want), sorted(set(want) - set(rows))[:10],
            sorted(set(rows) - set(want))[:10])
    # Nothing above position.json is left behind.
    for k in s3.keys(name + "/"):
        if "/_pgcdc/" not in k:
            assert int(k.rsplit("/", 1)[1][:10]) <= pos["seq"], k
    # The kills did land inside flushes, and their leftovers were deleted.
    assert orphans > 0, "no kill landed mid-flush (seed %d)" % seed
    print("kills=%d wiped=%d txns=%d orphans_deleted=%d seq=%d" % (
        kills, wiped, len(w.committed), orphans, pos["seq"]))
