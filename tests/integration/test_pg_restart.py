"""PostgreSQL restarts under the worker (fast shutdown, then a crash) while writes go on:
the worker stays up, reconnects, and loses or repeats nothing."""

import time

import harness as h


def _caught_up(p, w):
    """All the writer's committed transactions are in the files."""
    last = w.committed[-1][0]
    for e in reversed(p.events(tolerate_partial=True)):
        if e["after"] is not None and e["source"]["table"] in (w.a, w.b):
            return e["after"]["txn"] >= last
    return False


def test_postgres_restarts(cluster, make_pgcdc, name, writers):
    h.Writer.create_tables(cluster, name)
    p = make_pgcdc()
    p.start()
    cluster.wait_slot_active(name, timeout=30)
    w = h.Writer(cluster, prefix=name, pause=0.003)
    writers.append(w)
    w.start()
    try:
        for mode in ("fast", "immediate", "fast"):
            n = len(w.committed)
            w.wait_txns(n + 50)
            seen = h.count_lines(p.data_dir)
            h.wait_until(lambda: h.count_lines(p.data_dir) > seen, 30, what="events flowing")
            t = time.monotonic()
            cluster.restart(mode=mode)
            # The worker rides it out and comes back on its own.
            p.assert_alive("after pg_ctl restart -m %s" % mode)
            cluster.wait_slot_active(name, timeout=60)
            n = len(w.committed)
            w.wait_txns(n + 50)
            h.wait_until(lambda: _caught_up(p, w), 60, what="worker to catch up after restart")
            print("restart -m %s: worker caught up in %.1fs" % (mode, time.monotonic() - t))
            p.assert_alive("after catching up")
    finally:
        w.stop()
    assert w.reconnects >= 3, "the writer never saw the restarts (%d)" % w.reconnects
    h.wait_until(lambda: _caught_up(p, w), 60, what="worker to catch up")
    rc = p.stop(timeout=10)
    assert rc == 0, p.describe()
    assert not p.error_lines(), p.describe()
    segs = h.check_segment_files(p.data_dir)
    events = [e for _, evs in segs for e in evs]
    txns = h.verify_writers(events, [w], cluster)
    print("txns=%d events=%d" % (len(txns), len(events)))
    cluster.drop_slot(name)
