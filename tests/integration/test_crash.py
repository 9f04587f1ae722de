"""kill -9 of the worker at random moments while writes go on: the files end up holding
every committed change exactly once, in commit order."""

import os
import random
import shutil
import time

import harness as h

KILLS = int(os.environ.get("PGCDC_IT_KILLS", "12"))


def test_sigkill_loop_exactly_once(cluster, make_pgcdc, name, writers):
    seed = int(os.environ.get("PGCDC_IT_SEED", str(int(time.time()))))
    print("seed", seed)
    rng = random.Random(seed)
    h.Writer.create_tables(cluster, name)
    # Small segments so kills also land around rotations.
    p = make_pgcdc(opts={"sink.file.segment_bytes": "16384"})
    p.start()
    cluster.wait_slot_active(name, timeout=30)
    w = h.Writer(cluster, prefix=name, pause=0.002, seed=seed)
    writers.append(w)
    w.start()
    kills = 0
    try:
        while kills < KILLS:
            if not p.alive():
                p.start()
            # Mostly while streaming; sometimes during start-up and recovery.
            if rng.random() < 0.25:
                time.sleep(rng.uniform(0.0, 0.3))
            else:
                cluster.wait_slot_active(name, timeout=30)
                seen = h.count_lines(p.data_dir)
                h.wait_until(lambda: h.count_lines(p.data_dir) > seen, 30,
                             what="new events after restart")
                time.sleep(rng.uniform(0.05, 1.0))
            if not p.alive():
                p.wait(1)
                raise AssertionError("pgcdc exited on its own (%s)\n%s" % (p.returncode, p.describe()))
            rc = p.kill9()
            assert rc == -9, p.describe()
            kills += 1
            errors = p.error_lines()
            assert not errors, "errors before kill %d:\n%s" % (kills, p.describe())
            # Closed segments are complete even after a crash.
            h.check_segment_files(p.data_dir, strict=False)
            cluster.wait_slot_active(name, active=False, timeout=30)
    finally:
        w.stop()
    assert len(w.committed) > 200, "writer committed only %d txns" % len(w.committed)
    rc = p.run(["--end-lsn", h.lsn_format(cluster.current_lsn())], timeout=120)
    assert rc == 0, p.describe()
    segs = h.check_segment_files(p.data_dir, strict=True)
    events = [e for _, evs in segs for e in evs]
    txns = h.verify_writers(events, [w], cluster)
    print("kills=%d txns=%d events=%d segments=%d reconnects=%d" % (
        kills, len(txns), len(events), len(segs), w.reconnects))
    cluster.drop_slot(name)


def test_state_dir_lost_restored_from_position(cluster, make_pgcdc, name, writers):
    """docs/operations.md, "state.dir lost": with sink.file.dir intact, pgcdc refuses to
    start; copying <sink.file.dir>/.pgcdc-position (the plain format) to
    <state.dir>/checkpoint lets it go on exactly once, and the next sync writes the
    two-slot format. Writes continue the whole time."""
    h.Writer.create_tables(cluster, name)
    # Only this test's tables: the module's cluster holds other tests' rows, which an
    # initial snapshot of everything would emit as "r" events.
    p = make_pgcdc(settings={"snapshot.mode": "initial",
                             "source.tables.include": "public.%s_*" % name},
                   opts={"sink.file.segment_bytes": "16384"})
    p.start()
    cluster.wait_slot_active(name, timeout=30)  # the snapshot (of empty tables) is done
    w = h.Writer(cluster, prefix=name, pause=0.003)
    writers.append(w)
    w.start()
    w.wait_txns(100)
    h.wait_until(lambda: h.count_lines(p.data_dir) > 200, 30, what="events in the files")
    assert p.stop(timeout=15) == 0, p.describe()
    assert (p.checkpoint() or {}).get("gen"), "expected the two-slot checkpoint format"

    shutil.rmtree(p.state_dir)
    assert p.run(timeout=30) == 2, p.describe()
    assert any("is missing" in l for l in p.lines), p.describe()

    pos = os.path.join(p.data_dir, ".pgcdc-position")
    with open(pos) as f:
        position = dict(l.strip().split("=", 1) for l in f if "=" in l)
    # The procedure's precondition: the position is at or past what the slot confirmed.
    assert h.lsn_parse(position["lsn"]) >= cluster.confirmed_flush(name)
    os.makedirs(p.state_dir, exist_ok=True)  # the refused run made it again, empty
    shutil.copy(pos, os.path.join(p.state_dir, "checkpoint"))
    p.start()
    w.wait_txns(len(w.committed) + 200)
    h.wait_until(lambda: (p.checkpoint() or {}).get("gen"), 30,
                 what="the restored checkpoint rewritten in the two-slot format")
    w.stop()
    assert p.stop(timeout=15) == 0, p.describe()
    assert not p.error_lines(), p.describe()
    rc = p.run(["--end-lsn", h.lsn_format(cluster.current_lsn())], timeout=120)
    assert rc == 0, p.describe()
    segs = h.check_segment_files(p.data_dir, strict=True)
    events = [e for _, evs in segs for e in evs]
    assert not any(e["op"] == "r" for e in events), "no new snapshot expected"
    h.verify_writers(events, [w], cluster)
    cluster.drop_slot(name)
