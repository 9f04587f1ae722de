"""Poll mode (source.poll_interval_ms) and `run --once`: pgcdc lets go of every source
connection between polls so a Neon compute can suspend, picks up what was written
meanwhile, stays exactly-once through kill -9 and server restarts, and `--once` stops at the
server's position at connect time (docs/operations.md, "Neon: let the compute sleep")."""

import os
import random
import threading
import time

import harness as h
import ops_harness as oh

POLL = {"source.poll_interval_ms": "300", "source.idle_disconnect_ms": "200"}
# Poll cycles of the kill -9 test; raise it for a soak (PGCDC_IT_POLLS=1000).
CYCLES = int(os.environ.get("PGCDC_IT_POLLS", "30"))


class BurstWriter(h.Writer):
    """A Writer that commits only while `go` is set: bursts of writes, then quiet spells
    long enough for poll mode to disconnect."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.go = threading.Event()

    def _plan(self, k):
        while not self.go.wait(0.05) and not self._halt.is_set():
            pass
        return super()._plan(k)


def _only(name):
    return {"source.tables.include": "public.%s_*" % name}


def _pgcdc_sessions(cluster):
    """Every session of pgcdc the server has: walsenders and plain connections."""
    return cluster.sql(
        "SELECT pid, application_name, backend_type FROM pg_stat_activity "
        "WHERE application_name LIKE 'pgcdc%%' "
        "UNION ALL SELECT pid, application_name, 'walsender' FROM pg_stat_replication "
        "WHERE application_name LIKE 'pgcdc%%'", dbname="postgres")


def _polls(p):
    return sum(1 for line in p.lines if 'msg="poll done"' in line)


def test_poll_disconnects_between_polls_and_picks_up_writes(cluster, make_pgcdc, name):
    h.Writer.create_tables(cluster, name)
    ep = oh.new_metrics_endpoint()
    settings = dict(_only(name), **{"source.poll_interval_ms": "3000",
                                    "source.idle_disconnect_ms": "1500",
                                    "source.partitions_as_root": "true",
                                    "metrics.listen": ep.listen})
    p = make_pgcdc(settings=settings)
    p.start()
    cluster.wait_slot_active(name, timeout=30)
    # A first change makes pgcdc open its catalog connection too (partition roots).
    cluster.sql("INSERT INTO %s_a (id, txn, val) VALUES (1, 1, 'first')" % name)
    h.wait_until(lambda: len(p.events(tolerate_partial=True)) == 1, 30, what="the first event")
    apps = {r[1] for r in _pgcdc_sessions(cluster)}
    assert {"pgcdc", "pgcdc-catalog"} <= apps, "connected: both sessions are there (%s)" % apps
    # Caught up and idle: every connection to the source closes; the sink's stay.
    p.wait_log(r'msg="poll done"', timeout=30)
    h.wait_until(lambda: not _pgcdc_sessions(cluster), 5, what="no pgcdc session on the server")
    assert not cluster.slot(name)["active"]
    m = ep.scrape()
    assert m.get("pgcdc_connected") == 0
    assert m.get("pgcdc_last_catchup_timestamp_seconds") > time.time() - 60
    assert m.get("pgcdc_poll_duration_seconds") > 0
    assert ep.health() == 200, "asleep on purpose is healthy"
    # Still nothing between polls, a second later.
    time.sleep(1.0)
    assert not _pgcdc_sessions(cluster)

    # Written while pgcdc is away: it arrives at the next poll.
    cluster.sql("INSERT INTO %s_b (id, txn, val) VALUES (2, 2, 'while away')" % name)
    lsn = cluster.current_lsn()
    h.wait_until(lambda: len(p.events(tolerate_partial=True)) == 2, 30,
                 what="the write made between polls")
    cluster.wait_confirmed(name, lsn, timeout=30)
    h.wait_until(lambda: _polls(p) >= 2, 30, what="the second poll's line")
    line = [ln for ln in p.lines if 'msg="poll done"' in ln][-1]
    f = h.parse_logfmt(line)
    assert f["events"] == "1" and int(f["lag_at_connect_bytes"]) > 0, line
    assert int(f["duration_ms"]) >= 1500, line
    p.assert_alive()
    assert p.stop(timeout=10) == 0, p.describe()
    assert not p.error_lines(), p.describe()
    cluster.drop_slot(name)


def test_poll_failure_is_reported_and_retried(make_pgcdc, name):
    """A poll that cannot connect turns /healthz 503 and is retried with backoff."""
    c = h.PgCluster("pollfail")
    try:
        c.start()
        c.sql("CREATE TABLE t (id int PRIMARY KEY)")
        ep = oh.new_metrics_endpoint()
        p = make_pgcdc(cluster_=c, settings={"source.poll_interval_ms": "1000",
                                             "source.idle_disconnect_ms": "100",
                                             "metrics.listen": ep.listen})
        p.start()
        p.wait_log(r'msg="poll done"', timeout=30)
        assert ep.health() == 200
        c.stop()
        ep.wait_health(503, 15, proc=p)
        assert "poll failed" in oh.http_get(ep.base + "/healthz")[1]
        p.wait_log(r"retrying", timeout=15)
        c.start()
        c.sql("INSERT INTO t VALUES (7)")
        h.wait_until(lambda: len(p.events(tolerate_partial=True)) == 1, 60,
                     what="the write after the server came back")
        ep.wait_health(200, 30, proc=p)
        assert p.stop(timeout=10) == 0, p.describe()
    finally:
        c.kill_now()


def test_poll_cycles_with_kill9_exactly_once(cluster, make_pgcdc, name, writers):
    seed = int(os.environ.get("PGCDC_IT_SEED", str(int(time.time()))))
    print("seed", seed)
    rng = random.Random(seed)
    h.Writer.create_tables(cluster, name)
    p = make_pgcdc(settings=dict(_only(name), **POLL), opts={"sink.file.segment_bytes": "8192"})
    p.start()
    cluster.wait_slot_active(name, timeout=30)
    w = BurstWriter(cluster, prefix=name, pause=0.002, seed=seed)
    writers.append(w)
    w.start()
    polls = kills = 0
    t0 = time.monotonic()
    try:
        while polls + _polls(p) < CYCLES:
            w.go.set()
            time.sleep(rng.uniform(0.02, 0.2))
            w.go.clear()
            if rng.random() < 0.35:
                time.sleep(rng.uniform(0.0, 0.8))  # streaming, idle, asleep or connecting
                polls += _polls(p)
                assert p.kill9() == -9, p.describe()
                kills += 1
                assert not p.error_lines(), p.describe()
                p.start()
            else:
                n = _polls(p)
                h.wait_until(lambda: _polls(p) > n or not p.alive(), 30, what="a poll to end")
                p.assert_alive()
    finally:
        w.stop()
    polls += _polls(p)
    print("polls=%d kills=%d txns=%d in %.1fs" % (polls, kills, len(w.committed),
                                                 time.monotonic() - t0))
    assert kills >= 3 and len(w.committed) > 30
    assert p.stop(timeout=10) == 0, p.describe()
    # --once picks up the rest: every writer transaction committed before it connected.
    assert p.run(["--once"], timeout=60) == 0, p.describe()
    segs = h.check_segment_files(p.data_dir, strict=True)
    h.verify_writers([e for _, evs in segs for e in evs], [w], cluster)
    cluster.drop_slot(name)


def test_once_under_writes_stops_at_the_connect_position(cluster, make_pgcdc, name, writers):
    h.Writer.create_tables(cluster, name)
    cluster.sql("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", (name,))
    p = make_pgcdc(settings=_only(name))
    w = h.Writer(cluster, prefix=name, pause=0.002)
    writers.append(w)
    w.start()
    for rnd in range(2):
        w.wait_txns(len(w.committed) + 50)
        before = len(w.committed)
        assert p.run(["--once"], timeout=60) == 0, p.describe()
        assert p.lines_at("info") and any('msg="poll done"' in ln for ln in p.lines)
        got = {e["after"]["txn"] for e in p.events() if e["after"]}
        missing = [k for k, ops in w.committed[:before]
                   if any(op == "c" for _, op, _ in ops) and k not in got]
        assert not missing, "round %d: txns before --once started are missing: %s" % (
            rnd, missing[:10])
    w.stop()
    assert p.run(["--once"], timeout=60) == 0, p.describe()
    segs = h.check_segment_files(p.data_dir, strict=True)
    h.verify_writers([e for _, evs in segs for e in evs], [w], cluster)
    cluster.drop_slot(name)


def test_once_on_an_idle_database_exits_fast_and_moves_the_slot(cluster, make_pgcdc, name):
    cluster.sql("CREATE TABLE %s_in (id int PRIMARY KEY); CREATE TABLE %s_out (id int PRIMARY KEY)"
                % (name, name))
    cluster.sql("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", (name,))
    # WAL the slot has not confirmed, none of it for the captured table.
    cluster.sql("INSERT INTO %s_out SELECT generate_series(1, 1000)" % name)
    target = cluster.current_lsn()
    assert cluster.confirmed_flush(name) < target
    p = make_pgcdc(settings={"source.tables.include": "public.%s_in" % name})
    t = time.monotonic()
    assert p.run(["--once"], timeout=30) == 0, p.describe()
    took = time.monotonic() - t
    assert took < 2.5, "--once on an idle database took %.2fs\n%s" % (took, p.describe())
    assert cluster.confirmed_flush(name) >= target, "the slot did not move up to the server"
    assert p.events() == []
    # --once with --end-lsn is a usage error.
    assert p.run(["--once", "--end-lsn", "0/1"], timeout=30) == 2
    assert "--once" in p.stderr()
    cluster.drop_slot(name)


def test_poll_across_server_restarts_exactly_once(cluster, make_pgcdc, name, writers):
    """PostgreSQL 15 writes a slot's confirmed position to disk only at checkpoints, so a
    server that stops (a compute suspending) may send the tail again: the files stay
    exactly-once."""
    h.Writer.create_tables(cluster, name)
    p = make_pgcdc(settings=dict(_only(name), **POLL))
    p.start()
    cluster.wait_slot_active(name, timeout=30)
    w = BurstWriter(cluster, prefix=name, pause=0.002)
    writers.append(w)
    w.start()
    try:
        for asleep in (True, False, True):
            w.go.set()
            time.sleep(0.3)
            w.go.clear()
            n = _polls(p)
            if asleep:  # between polls
                h.wait_until(lambda: _polls(p) > n, 15, what="a poll to end")
            else:  # while it streams
                w.go.set()
            cluster.restart(mode="fast")
            w.go.clear()
            p.assert_alive("after pg_ctl restart -m fast")
            h.wait_until(lambda: _polls(p) > n, 60, what="a poll after the restart")
    finally:
        w.stop()
    assert w.reconnects >= 1
    assert p.stop(timeout=10) == 0, p.describe()
    assert p.run(["--once"], timeout=60) == 0, p.describe()
    segs = h.check_segment_files(p.data_dir, strict=True)
    h.verify_writers([e for _, evs in segs for e in evs], [w], cluster)
    cluster.drop_slot(name)


def test_bad_intervals_and_the_check_warning(make_pgcdc, name):
    for bad in ("-1", "abc", "86400001", "1.5"):
        p = make_pgcdc(settings={"source.poll_interval_ms": bad}, sub="bad")
        assert p.run(timeout=30) == 2, p.describe()
        (err,) = p.error_lines()
        assert "source.poll_interval_ms" in err and "40 hours" in err, err
    p = make_pgcdc(settings={"source.idle_disconnect_ms": "-5"}, sub="bad")
    assert p.run(timeout=30) == 2 and "source.idle_disconnect_ms" in p.stderr(), p.describe()
    _, res, c = oh.run_check(make_pgcdc,
                             settings={"source.poll_interval_ms": str(13 * 3600 * 1000)})
    assert oh.check_lines_of(res, "WARN", "poll_interval"), oh.describe_check(c)
    _, res, c = oh.run_check(make_pgcdc,
                             settings={"source.poll_interval_ms": str(12 * 3600 * 1000)},
                             sub="check12")
    assert not oh.check_lines_of(res, name="poll_interval"), oh.describe_check(c)
